//! Case-insensitive SQL Server collations become nondeterministic ICU collations on the target:
//! a CI unique column rejects case-duplicates like the source, `=` matches across case, CS and
//! BIN columns keep the default, and the option turns it off.

mod common;

use common::*;
use dbsync_apply::pg::catalog::unique_index_count;
use dbsync_apply::pg::ddl::DdlOptions;
use dbsync_apply::plan::TableTarget;
use dbsync_apply::schema::{create_objects, post_load};
use dbsync_proto::v1::*;

fn people_plan() -> TablePlan {
    let mut email = col("Email", "nvarchar", 200, 0, 0, false);
    email.collation = "SQL_Latin1_General_CP1_CI_AS".into();
    let mut code = col("Code", "varchar", 10, 0, 0, true);
    code.collation = "Latin1_General_CS_AS".into();
    let mut nick = col("Nick", "nvarchar", 100, 0, 0, true);
    nick.collation = "Latin1_General_CI_AI".into();
    let mut plan = table_plan(
        "People",
        vec![col("Id", "int", 4, 10, 0, false), email, code, nick],
        &["Id"],
    );
    let source = plan.source.as_mut().unwrap();
    source.indexes.push(IndexSchema {
        name: "UQ_People_Email".into(),
        is_unique: true,
        is_unique_constraint: true,
        columns: vec![IndexColumn {
            name: "Email".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    // LIKE on a nondeterministic column would fail on PostgreSQL < 18 without the translator's
    // COLLATE "default".
    source.checks.push(CheckSchema {
        name: "CK_People_Email".into(),
        definition: "([Email] like '%@%')".into(),
        disabled: false,
    });
    plan
}

async fn collations(client: &tokio_postgres::Client) -> Vec<(String, Option<String>)> {
    client
        .query(
            "SELECT column_name::text, collation_name::text FROM information_schema.columns \
             WHERE table_schema = 'dbo' AND table_name = 'people' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn create(client: &mut tokio_postgres::Client, opts: DdlOptions) {
    let targets = vec![TableTarget::from_plan(&people_plan()).unwrap()];
    create_objects(client, TASK, "precheck", &targets, &[], &opts, false)
        .await
        .unwrap();
    post_load(client, TASK, &targets, &opts, false)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_columns_get_icu_collations_and_reject_case_duplicates() {
    let (_target, mut client) = fresh_db("collation").await;
    create(&mut client, DdlOptions::default()).await;
    assert_eq!(
        collations(&client).await,
        vec![
            ("id".to_string(), None),
            ("email".to_string(), Some("dbsync_ci_as".to_string())),
            ("code".to_string(), None),
            ("nick".to_string(), Some("dbsync_ci_ai".to_string())),
        ]
    );
    client
        .batch_execute("INSERT INTO dbo.people VALUES (1, 'Ann@Example.com', 'abc', 'Rene')")
        .await
        .unwrap();
    // The source's unique index forbids a case-duplicate; so does the target's.
    let err = client
        .batch_execute("INSERT INTO dbo.people VALUES (2, 'ann@EXAMPLE.com', 'x', NULL)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err:?}");
    // Accents count under CI_AS: not a duplicate.
    client
        .batch_execute("INSERT INTO dbo.people VALUES (3, 'änn@example.com', 'ABC', 'rené')")
        .await
        .unwrap();
    let matches = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        matches("SELECT count(*) FROM dbo.people WHERE email = 'ANN@example.COM'").await,
        1
    );
    // CS column: case matters.
    assert_eq!(
        matches("SELECT count(*) FROM dbo.people WHERE code = 'abc'").await,
        1
    );
    // CI_AI column: neither case nor accents matter.
    assert_eq!(
        matches("SELECT count(*) FROM dbo.people WHERE nick = 'RENE'").await,
        2
    );
    // The CHECK with LIKE exists and works on the CI column.
    let err = client
        .batch_execute("INSERT INTO dbo.people VALUES (4, 'no-at-sign', NULL, NULL)")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23514"), "{err:?}");
    // Values are stored as written (verification compares bytes, unaffected by collations).
    let stored: String = client
        .query_one("SELECT email FROM dbo.people WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "Ann@Example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_insensitive_key_keeps_changes_in_order() {
    let (_target, mut client) = fresh_db("collation_key").await;
    let mut code = col("Code", "nvarchar", 40, 0, 0, false);
    code.collation = "SQL_Latin1_General_CP1_CI_AS".into();
    let ci = table_plan(
        "CiKeyed",
        vec![code, col("Qty", "int", 4, 10, 0, true)],
        &["Code"],
    );
    let plain = table_plan("Plain", vec![col("Id", "int", 4, 10, 0, false)], &["Id"]);
    create_tables(&mut client, &[ci, plain], "precheck").await;
    // 'abc' deleted and 'ABC' inserted are one row under the key's collation: regrouping
    // statements by byte-wise keys would be unsafe, so the table counts as not reorderable.
    assert_eq!(unique_index_count(&client, "dbo.cikeyed").await.unwrap(), 2);
    assert_eq!(unique_index_count(&client, "dbo.plain").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_collations_can_be_turned_off() {
    let (_target, mut client) = fresh_db("collation_off").await;
    create(
        &mut client,
        DdlOptions {
            ci_collations: false,
            ..DdlOptions::default()
        },
    )
    .await;
    assert!(collations(&client).await.iter().all(|(_, c)| c.is_none()));
    client
        .batch_execute(
            "INSERT INTO dbo.people VALUES (1, 'Ann@Example.com', NULL, NULL), (2, 'ann@example.com', NULL, NULL)",
        )
        .await
        .unwrap();
}
