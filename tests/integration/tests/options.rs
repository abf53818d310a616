//! Task options change the result as documented: selection, renames, capitalization, WHERE
//! filters, skipped columns and the conflicting-table modes.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::{Case, TableMapping};
use dbsync_testkit::{EnvOptions, TestEnv};

async fn target_tables(env: &TestEnv) -> Vec<String> {
    let pg = env.target().await.unwrap();
    let mut tables: Vec<String> = pg
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \
             AND schemaname NOT LIKE 'dbsync%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables.sort();
    tables
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_renames_capitalization_filter_and_skipped_columns() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let objects = "  include: [\"shop.sales.customers\", \"shop.sales.orders\", \"shop.sales.text_samples\"]\n\
                   \x20 schemas: { shop.sales: crm }\n\
                   \x20 capitalization: upper\n\
                   \x20 tables:\n\
                   \x20   shop.sales.customers: { rename: clients, columns: { email: { rename: mail }, full_name: { skip: true } } }\n\
                   \x20   shop.sales.orders: { where: \"status <> 'closed'\" }\n";
    let task = env
        .run_task(&env.sample_task_with("options", true, false, &[], objects, ""))
        .await
        .unwrap();
    env.wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(120))
        .await
        .unwrap();

    assert_eq!(
        target_tables(&env).await,
        vec!["crm.ORDERS", "crm.TEXT_SAMPLES", "crm.clients"]
    );

    let mut clients = TableMapping::lower("shop", "sales", "customers");
    clients.target_schema = "crm".into();
    clients.target_table = "clients".into();
    clients.column_case = Case::Upper;
    clients.column_renames.insert("email".into(), "mail".into());
    clients.skip_columns.push("full_name".into());
    let mut orders = TableMapping::lower("shop", "sales", "orders");
    orders.target_schema = "crm".into();
    orders.target_table = "ORDERS".into();
    orders.column_case = Case::Upper;
    orders.source_filter = Some("status <> 'closed'".into());
    let mut texts = TableMapping::lower("shop", "sales", "text_samples");
    texts.target_schema = "crm".into();
    texts.target_table = "TEXT_SAMPLES".into();
    texts.column_case = Case::Upper;

    let comparison = env.compare(&[clients, orders, texts]).await.unwrap();
    assert!(comparison.equal(), "{}", comparison.report());

    let pg = env.target().await.unwrap();
    let columns: Vec<String> = pg
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'crm' AND table_name = 'clients' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        columns.contains(&"mail".to_string()) && columns.contains(&"CUSTOMER_ID".to_string()),
        "{columns:?}"
    );
    assert!(
        !columns.iter().any(|c| c.eq_ignore_ascii_case("full_name")),
        "skipped column exists: {columns:?}"
    );
    let closed: i64 = pg
        .query_one(
            "SELECT count(*) FROM crm.\"ORDERS\" WHERE \"STATUS\" = 'closed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(closed, 0, "the WHERE filter let closed orders through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_tables_precheck_fails_before_writing_and_ignore_keeps_target_rows() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let customers = "  include: [\"shop.sales.customers\"]\n";
    // Schema only: the target table now exists, empty; the user puts a row of their own in it.
    let schema = env.sample_task_with("schema-only", false, false, &[], customers, "");
    let task = env.run_task(&schema).await.unwrap();
    env.wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(60))
        .await
        .unwrap();
    let pg = env.target().await.unwrap();
    pg.execute("INSERT INTO sales.customers (customer_id, email, full_name, is_active, loyalty_points, created_at) \
                OVERRIDING SYSTEM VALUE VALUES (1, 'kept@example.com', 'Kept', true, 0, now())", &[])
        .await
        .unwrap();

    // precheck (the default): refused, naming the table; nothing written.
    let info = env
        .create_task(&env.sample_task_with("conflict-precheck", true, false, &[], customers, ""))
        .await
        .unwrap();
    let error = env.start_task(&info.task_id).await.unwrap_err();
    assert!(
        error.message().contains("customers"),
        "precheck failure does not name the table: {}",
        error.message()
    );
    let rows: i64 = pg
        .query_one("SELECT count(*) FROM sales.customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "a refused task wrote rows");

    // ignore: proceeds; the existing target row wins on key conflict, every other row is copied.
    let task = env
        .run_task(&env.sample_task_with(
            "conflict-ignore",
            true,
            false,
            &[],
            customers,
            "conflict_mode: ignore\n",
        ))
        .await
        .unwrap();
    env.wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(120))
        .await
        .unwrap();
    let kept: String = pg
        .query_one(
            "SELECT email FROM sales.customers WHERE customer_id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "kept@example.com");
    let mut others = TableMapping::lower("shop", "sales", "customers");
    others.source_filter = Some("customer_id <> 1".into());
    let source_rows = env.compare(&[others.clone()]).await.unwrap();
    let t = &source_rows.tables[0];
    // The target holds the kept row on top of the source's other rows: exactly one extra row.
    assert_eq!(
        (t.missing_count, t.extra_count),
        (0, 1),
        "{}",
        source_rows.report()
    );
    assert!(
        t.extra[0].contains("kept@example.com"),
        "{}",
        source_rows.report()
    );
}
