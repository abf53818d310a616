//! ETL end to end: column expressions evaluated by apply and a row filter, across full sync and
//! incremental sync, checked against the stand-in evaluating the same T-SQL expressions.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::{wait_for, TableMapping};
use dbsync_testkit::TestEnv;
use futures_util::TryStreamExt;

const FILTER: &str = "is_active = 1";
const NAME_EXPR: &str = "UPPER(full_name) + N' (' + ISNULL(country_code, '--') + ')'";
const POINTS_EXPR: &str = "loyalty_points * 2 + 1";
const EMAIL_EXPR: &str = "REPLACE(email, N'@example.com', N'@example.org')";

type Row = (i32, String, i64, String);

/// What the target should hold: the stand-in evaluates the expressions and the filter.
async fn expected(env: &TestEnv) -> anyhow::Result<Vec<Row>> {
    let mut source = env.standin.connect("shop").await?;
    let sql = format!(
        "SELECT customer_id, {NAME_EXPR}, {POINTS_EXPR}, {EMAIL_EXPR} FROM sales.customers WHERE {FILTER}"
    );
    let mut stream = source.simple_query(sql).await?.into_row_stream();
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await? {
        rows.push((
            row.get::<i32, _>(0).unwrap_or_default(),
            row.get::<&str, _>(1).unwrap_or_default().to_string(),
            row.get::<i64, _>(2).unwrap_or_default(),
            row.get::<&str, _>(3).unwrap_or_default().to_string(),
        ));
    }
    rows.sort();
    Ok(rows)
}

async fn actual(env: &TestEnv) -> anyhow::Result<Vec<Row>> {
    let pg = env.target().await?;
    let mut rows: Vec<Row> = pg
        .query(
            "SELECT customer_id, full_name::text, loyalty_points, email::text FROM sales.customers",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    rows.sort();
    Ok(rows)
}

/// Waits until the transformed columns equal the stand-in's evaluation and the other columns
/// equal the source (filtered).
async fn wait_converged(env: &TestEnv, what: &str) -> Vec<Row> {
    let rows = wait_for(what, Duration::from_secs(120), || async {
        let (want, got) = (expected(env).await?, actual(env).await?);
        if want == got {
            return Ok(Ok(got));
        }
        let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
        let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
        Ok(Err(format!(
            "{} expected, {} on the target; missing {missing:?}; unexpected {extra:?}",
            want.len(),
            got.len()
        )))
    })
    .await
    .unwrap();
    let mut untouched = TableMapping::lower("shop", "sales", "customers");
    untouched.source_filter = Some(FILTER.into());
    for c in ["full_name", "loyalty_points", "email"] {
        untouched.skip_columns.push(c.into());
    }
    let comparison = env.compare(&[untouched]).await.unwrap();
    assert!(comparison.equal(), "{}", comparison.report());
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_expressions_and_row_filter_in_full_and_incremental_sync() {
    let env = TestEnv::start_with_sample(Some(200)).await.unwrap();
    let objects = format!(
        "  include: [\"shop.sales.customers\"]\n\
         \x20 tables:\n\
         \x20   shop.sales.customers:\n\
         \x20     where: \"{FILTER}\"\n\
         \x20     columns:\n\
         \x20       full_name: {{ expression: \"{NAME_EXPR}\" }}\n\
         \x20       loyalty_points: {{ expression: \"{POINTS_EXPR}\" }}\n\
         \x20       email: {{ expression: \"{EMAIL_EXPR}\" }}\n"
    );
    let task = env
        .run_until_streaming(
            &env.sample_task_with("etl", true, true, &[], &objects, ""),
            Duration::from_secs(180),
        )
        .await
        .unwrap();

    // Full sync: every active customer, transformed; inactive ones (every tenth) left out.
    let rows = wait_converged(&env, "the full sync to match the stand-in's evaluation").await;
    assert!(rows.len() >= 150, "{} rows", rows.len());
    assert!(
        !rows.iter().any(|r| r.0 == 10),
        "inactive customer 10 was loaded"
    );
    assert!(rows
        .iter()
        .all(|r| r.3.ends_with("@example.org") && r.2 % 2 == 1));

    // Incremental: an update of transformed inputs, a row leaving the filter, a row entering
    // it, an insert and a delete.
    env.standin
        .run(
            "shop",
            "UPDATE sales.customers SET full_name = N'mixed Case', country_code = 'DE', loyalty_points = 5 WHERE customer_id = 1; \
             UPDATE sales.customers SET is_active = 0 WHERE customer_id = 2; \
             UPDATE sales.customers SET is_active = 1, full_name = N'back Again' WHERE customer_id = 10; \
             INSERT INTO sales.customers (email, full_name, is_active, loyalty_points) VALUES (N'new.one@example.com', N'new One', 1, 7); \
             DELETE FROM sales.customers WHERE customer_id = 4;",
        )
        .unwrap();
    let rows = wait_converged(&env, "the changes to match the stand-in's evaluation").await;
    let by_id = |id: i32| rows.iter().find(|r| r.0 == id).cloned();
    assert_eq!(
        by_id(1),
        Some((
            1,
            "MIXED CASE (DE)".to_string(),
            11,
            "customer1@example.org".to_string()
        ))
    );
    assert_eq!(
        by_id(2),
        None,
        "a row leaving the filter stays on the target"
    );
    assert_eq!(by_id(4), None, "a deleted row stays on the target");
    assert!(
        by_id(10).is_some_and(|r| r.1.starts_with("BACK AGAIN (")),
        "a row entering the filter is missing or untransformed: {:?}",
        by_id(10)
    );
    assert!(rows
        .iter()
        .any(|r| r.1 == "NEW ONE (--)" && r.2 == 15 && r.3 == "new.one@example.org"));

    // Verification compares the columns without expressions (the filter applies) and agrees.
    let mut client = env.client().await.unwrap();
    let report = client
        .verify_task(pb::VerifyTaskRequest {
            task_id: task.clone(),
            mode: "full".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let differences: Vec<_> = report
        .tables
        .iter()
        .flat_map(|t| t.differences.iter().take(3))
        .collect();
    assert!(report.equal, "{differences:?}");

    // The source's email is CI_AS with a unique constraint: the target column has the ICU
    // collation and rejects a case-duplicate like the source would.
    let pg = env.target().await.unwrap();
    let collation: Option<String> = pg
        .query_one(
            "SELECT collation_name::text FROM information_schema.columns \
             WHERE table_schema = 'sales' AND table_name = 'customers' AND column_name = 'email'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(collation.as_deref(), Some("dbsync_ci_as"));
    let err = pg
        .batch_execute(
            "INSERT INTO sales.customers (customer_id, email, full_name, created_at, is_active, loyalty_points) \
             VALUES (-1, 'CUSTOMER1@EXAMPLE.ORG', 'x', now(), true, 0)",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"), "{err:?}");
}
