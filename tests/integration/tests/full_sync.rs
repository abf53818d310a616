//! Schema + full sync of the sample database, end to end: stand-in over TDS → capture → gRPC →
//! apply → PostgreSQL, driven through the coordinator's gRPC API.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::supported_sample_tables;
use dbsync_testkit::{EnvOptions, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_of_every_type_equals_the_source_with_every_schema_object() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(300),
        ..Default::default()
    })
    .await
    .unwrap();
    let task = env
        .run_task(&env.sample_task("full", true, false))
        .await
        .unwrap();
    env.wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(180))
        .await
        .unwrap();

    let mappings = env.task_mappings(&task).await.unwrap();
    let planned: Vec<String> = mappings
        .iter()
        .map(|m| format!("{}.{}", m.source_schema, m.source_table))
        .collect();
    for (schema, table) in supported_sample_tables() {
        assert!(
            planned.contains(&format!("{schema}.{table}")),
            "{schema}.{table} was not planned: {planned:?}"
        );
    }
    let comparison = env.compare(&mappings).await.unwrap();
    assert!(
        comparison.equal(),
        "target differs from source:\n{}",
        comparison.report()
    );
    assert!(
        comparison.source_rows() > 1000,
        "sample too small: {}",
        comparison.report()
    );

    let pg = env.target().await.unwrap();
    let constraints = |table: &'static str, kind: &'static str| {
        let pg = &pg;
        async move {
            let rows = pg
                .query(
                    "SELECT conname::text, convalidated, pg_get_constraintdef(c.oid) FROM pg_constraint c \
                     WHERE conrelid = $1::text::regclass AND contype = $2::text::\"char\" ORDER BY 1",
                    &[&table, &kind],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, bool>(1),
                        r.get::<_, String>(2),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // Primary keys, including composite ones.
    for table in [
        "sales.customers",
        "sales.orders",
        "sales.order_lines",
        "inventory.stock",
        "sales.payments",
    ] {
        assert_eq!(
            constraints(table, "p").await.len(),
            1,
            "{table} has no primary key"
        );
    }
    let stock_pk = constraints("inventory.stock", "p").await;
    assert!(
        stock_pk[0].2.contains("warehouse_code") && stock_pk[0].2.contains("product_id"),
        "{stock_pk:?}"
    );
    // Unique constraint (or unique index) on customers.email and the unique index of the table without PK.
    let unique_indexes: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_index i WHERE i.indisunique AND NOT i.indisprimary \
             AND i.indrelid IN ('sales.customers'::regclass, 'inventory.supplier_contacts'::regclass, 'inventory.products'::regclass)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(unique_indexes >= 3, "unique keys missing: {unique_indexes}");
    // The filtered index became a partial index; the plain one exists too.
    let order_indexes: Vec<String> = pg
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'sales' AND tablename = 'orders'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        order_indexes
            .iter()
            .any(|d| d.contains("WHERE") && d.contains("status")),
        "no partial index: {order_indexes:?}"
    );
    assert!(
        order_indexes
            .iter()
            .any(|d| d.contains("customer_id") && d.contains("order_date")),
        "no (customer_id, order_date) index: {order_indexes:?}"
    );
    // Every FK exists and was validated after the full sync.
    let fks: Vec<(String, bool)> = pg
        .query(
            "SELECT conname::text, convalidated FROM pg_constraint WHERE contype = 'f' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(fks.len(), 7, "foreign keys: {fks:?}");
    assert!(
        fks.iter().all(|(_, valid)| *valid),
        "FKs not validated: {fks:?}"
    );
    let cascade = constraints("sales.orders", "f").await;
    assert!(
        cascade.iter().any(|c| c.2.contains("ON DELETE CASCADE")),
        "{cascade:?}"
    );
    // CHECK constraints.
    let checks = constraints("sales.orders", "c").await;
    assert!(
        checks
            .iter()
            .any(|c| c.2.contains("new") && c.2.contains("cancelled")),
        "status CHECK missing: {checks:?}"
    );
    // Defaults.
    let defaults: Vec<(String, Option<String>)> = pg
        .query(
            "SELECT column_name::text, column_default::text FROM information_schema.columns \
             WHERE (table_schema, table_name) IN (('sales','orders'), ('sales','customers'))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let default_of = |c: &str| {
        defaults
            .iter()
            .find(|(n, _)| n == c)
            .and_then(|(_, d)| d.clone())
            .unwrap_or_default()
    };
    assert!(
        default_of("status").contains("new"),
        "orders.status default: {defaults:?}"
    );
    assert!(
        !default_of("created_at").is_empty(),
        "customers.created_at default: {defaults:?}"
    );
    // Identity restarted above the source's current value: the next generated key is new.
    for (table, column) in [
        ("sales.customers", "customer_id"),
        ("sales.orders", "order_id"),
    ] {
        let identity: String = pg
            .query_one(
                "SELECT attidentity::text FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2",
                &[&table, &column],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            identity, "d",
            "{table}.{column} is not GENERATED BY DEFAULT AS IDENTITY"
        );
        let max: i64 = pg
            .query_one(&format!("SELECT max({column})::bigint FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        let next: i64 = pg
            .query_one(
                "SELECT nextval(pg_get_serial_sequence($1, $2))",
                &[&table, &column],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            next > max,
            "{table}.{column}: next identity {next} is not above the copied maximum {max}"
        );
    }
    // The sequence came over.
    let sequences: i64 = pg
        .query_one("SELECT count(*) FROM pg_sequences WHERE schemaname = 'sales' AND sequencename = 'invoice_numbers'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sequences, 1, "sequence sales.invoice_numbers missing");
}

/// `sync.verify_after_full`: the coordinator verifies source against target by itself once
/// every table has loaded, and the task's status says the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_after_full_sync_runs_by_itself_and_reports_in_status() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let spec = env.sample_task("verify-after-full", true, false).replace(
        "incremental: false }",
        "incremental: false, verify_after_full: true }",
    );
    assert!(spec.contains("verify_after_full: true"), "{spec}");
    let task = env.run_task(&spec).await.unwrap();
    let message = dbsync_testkit::harness::wait_for(
        "the verification after full sync in the task status",
        Duration::from_secs(180),
        || async {
            let status = env.status(&task).await?;
            Ok(status
                .alerts
                .iter()
                .find(|a| a.starts_with("verification after full sync"))
                .cloned()
                .ok_or_else(|| format!("alerts so far: {:?}", status.alerts)))
        },
    )
    .await
    .unwrap();
    assert!(
        message.starts_with("verification after full sync: equal"),
        "{message}"
    );
    assert!(!message.contains(" 0 rows compared"), "{message}");
}
