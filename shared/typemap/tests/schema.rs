//! Identity clauses and collations, checked against PostgreSQL.

mod support;

use dbsync_proto::v1::{ColumnSchema, Identity};
use dbsync_typemap::*;
use support::*;

fn identity_column(type_name: &str, precision: i32, seed: i64, increment: i64) -> ColumnSchema {
    ColumnSchema {
        identity: Some(Identity {
            seed,
            increment,
            last_value: None,
        }),
        ..column(type_name, 8, precision, 0)
    }
}

#[tokio::test]
async fn identity_columns_start_where_sql_server_starts() {
    let client = client().await;
    for (i, (type_name, precision, seed, increment, expected)) in [
        ("int", 10, 1, 1, [1, 2]),
        ("bigint", 19, 0, 5, [0, 5]),
        ("int", 10, -1, -1, [-1, -2]),
        ("decimal", 18, 100, 10, [100, 110]),
        ("tinyint", 3, 0, 1, [0, 1]),
    ]
    .into_iter()
    .enumerate()
    {
        let col = identity_column(type_name, precision, seed, increment);
        let ty = map_column(&col, &MappingOptions::default()).unwrap();
        let clause = identity_clause(&col, &ty).unwrap().unwrap();
        let table = format!("ident_{i}");
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id {} {clause}, x int); INSERT INTO {table} (x) VALUES (1), (2);", ty.ddl()))
            .await
            .unwrap();
        let ids: Vec<i64> = client
            .query(&format!("SELECT id::int8 FROM {table} ORDER BY x"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            ids, expected,
            "{type_name} IDENTITY({seed},{increment}): {clause}"
        );
        // Explicit ids (COPY, CDC apply) are accepted.
        client
            .batch_execute(&format!("INSERT INTO {table} (id, x) VALUES (42, 3)"))
            .await
            .unwrap();
    }
    let wide = identity_column("decimal", 30, 1, 1);
    let ty = map_column(&wide, &MappingOptions::default()).unwrap();
    assert!(identity_clause(&wide, &ty).is_err());
    assert_eq!(
        identity_setval(&Identity {
            seed: 1,
            increment: 1,
            last_value: None
        }),
        (1, false)
    );
    assert_eq!(
        identity_setval(&Identity {
            seed: 1,
            increment: 1,
            last_value: Some(6)
        }),
        (6, true)
    );
}

#[tokio::test]
async fn case_insensitive_collations_keep_unique_indexes_case_insensitive() {
    assert_eq!(pg_collation("SQL_Latin1_General_CP1_CS_AS"), None);
    assert_eq!(pg_collation("Latin1_General_BIN2"), None);
    assert_eq!(pg_collation(""), None);
    let ci_as = pg_collation("SQL_Latin1_General_CP1_CI_AS").unwrap();
    let ci_ai = pg_collation("Latin1_General_100_CI_AI_SC_UTF8").unwrap();
    assert_ne!(ci_as, ci_ai);
    let client = client().await;
    for collation in [ci_as, ci_ai] {
        client.batch_execute(collation.create_sql).await.unwrap();
        client.batch_execute(collation.create_sql).await.unwrap(); // idempotent
        let table = format!("coll_{}", collation.name);
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (v varchar(20) COLLATE {} UNIQUE); INSERT INTO {table} VALUES ('abc')", collation.name))
            .await
            .unwrap();
        assert!(
            client
                .batch_execute(&format!("INSERT INTO {table} VALUES ('ABC')"))
                .await
                .is_err(),
            "{}",
            collation.name
        );
        let accent = client
            .batch_execute(&format!("INSERT INTO {table} VALUES ('àbc')"))
            .await;
        assert_eq!(
            accent.is_err(),
            collation == ci_ai,
            "accent sensitivity of {}",
            collation.name
        );
    }
}
