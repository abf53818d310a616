//! Incremental sync (cdc-polling) with the seeded workload running during and after the full
//! sync: interleaved transactions committing out of begin order, primary-key updates, LOB-only
//! updates, large transactions, deletes of rows inserted in the same transaction.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::retention::{customers_and_orders_task, overrun_orders_retention};
use dbsync_testkit::harness::workload::{finish_workload, sample_workload, spawn_workload};
use dbsync_testkit::harness::{wait_for, KEYLESS_SAMPLE_TABLES};
use dbsync_testkit::TestEnv;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_and_after_full_sync_converge_exactly() {
    let env = TestEnv::start_with_sample(Some(400)).await.unwrap();
    let task = env
        .run_task(&env.sample_task_with("incremental", true, true, KEYLESS_SAMPLE_TABLES, "", ""))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    // During the full sync.
    let during = spawn_workload(
        &env.standin,
        sample_workload(&env.standin, 11, 300, Some(150.0)),
        stop.clone(),
    );
    env.wait_streaming(&task, Duration::from_secs(180))
        .await
        .unwrap();
    let during = finish_workload(during, Duration::from_secs(120)).await;
    // After it, as fast as the workload goes.
    let after = finish_workload(
        spawn_workload(
            &env.standin,
            sample_workload(&env.standin, 12, 400, None),
            stop.clone(),
        ),
        Duration::from_secs(180),
    )
    .await;

    let mappings = env.task_mappings(&task).await.unwrap();
    let comparison = env
        .wait_equal(&mappings, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(comparison.source_rows() > 2000);

    // The workload did exercise what this test is about.
    let key_updates = during.key_updates + after.key_updates;
    let lob_updates = during.lob_updates + after.lob_updates;
    let same_txn_deletes = during.insert_then_delete + after.insert_then_delete;
    let out_of_order = during.out_of_order_commits + after.out_of_order_commits;
    assert!(
        key_updates > 0 && lob_updates > 0 && same_txn_deletes > 0 && out_of_order > 0,
        "{during:?}\n{after:?}"
    );
    let status = env.status(&task).await.unwrap();
    let applied: u64 = status.tables.iter().map(|t| t.changes_applied).sum();
    assert!(applied > 0, "no change reported as applied");
}

/// Counts rows of a source query's first result.
fn source_count(env: &TestEnv, sql: &str) -> usize {
    env.standin.engine.run("shop", sql).unwrap()[0].rows.len()
}

/// Hybrid mode: dbsync's DDL trigger, DDL history and heartbeat are installed; DDL during
/// streaming (the workload's ADD/DROP COLUMN on the heap, an added column on a keyed table
/// written right after the DDL) is followed without stopping the task; the heap table
/// without any key gets its updates and deletes; removing the task removes every object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_mode_follows_ddl_and_heap_tables_while_streaming_and_cleans_up() {
    let env = TestEnv::start_with_sample(Some(200)).await.unwrap();
    let spec = env
        .sample_task_with("hybrid", true, true, &[], "", "")
        .replace("mode: cdc-polling", "mode: hybrid");
    assert!(spec.contains("mode: hybrid"), "{spec}");
    let task = env.run_task(&spec).await.unwrap();
    let stop = CancellationToken::new();
    let mut config = sample_workload(&env.standin, 21, 300, Some(150.0));
    config.ddl_every = 15;
    let during = spawn_workload(&env.standin, config, stop.clone());
    env.wait_streaming(&task, Duration::from_secs(180))
        .await
        .unwrap();
    assert_eq!(
        source_count(
            &env,
            "SELECT name FROM sys.triggers WHERE name = 'dbsync_ddl_trigger'"
        ),
        1
    );
    // dbsync's own tables, installed now, are never selected, even when named explicitly.
    let own_only = env.sample_task_with(
        "own-objects",
        false,
        false,
        &[],
        "  include: [\"shop.dbo.dbsync_*\"]\n",
        "",
    );
    let own_task = env.create_task(&own_only).await.unwrap().task_id;
    let mut client = env.client().await.unwrap();
    let report = client
        .precheck_task(pb::PrecheckTaskRequest {
            task_id: own_task.clone(),
            acknowledge: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        report
            .items
            .iter()
            .any(|i| i.id == "objects.selection" && i.status == pb::PrecheckStatus::Fail as i32),
        "{report:?}"
    );
    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: own_task,
            cleanup_source: false,
        })
        .await
        .unwrap();
    // A column added to a keyed table and written at once, before dbsync's new capture
    // instance exists, and again later (sample rows 1, 3 and 5 are never deleted by the
    // workload, so the update always has rows).
    env.standin
        .run_ddl(
            "shop",
            "ALTER TABLE sales.text_samples ADD note nvarchar(40) NULL",
        )
        .await
        .unwrap();
    env.standin
        .run(
            "shop",
            "UPDATE sales.text_samples SET note = N'right after the DDL' WHERE id % 7 = 0 OR id IN (1, 3, 5)",
        )
        .unwrap();
    // The heap without any key: updates and deletes by all values.
    let heap_rows = source_count(&env, "SELECT 1 FROM sales.audit_log");
    env.standin
        .run(
            "shop",
            "UPDATE sales.audit_log SET detail = N'edited' WHERE event_name LIKE '%1%'",
        )
        .unwrap();
    env.standin
        .run(
            "shop",
            "DELETE FROM sales.audit_log WHERE event_name LIKE '%2%'",
        )
        .unwrap();
    assert!(source_count(&env, "SELECT 1 FROM sales.audit_log") < heap_rows);
    let during = finish_workload(during, Duration::from_secs(180)).await;
    env.standin
        .run(
            "shop",
            "UPDATE sales.text_samples SET note = N'later' WHERE id % 11 = 0",
        )
        .unwrap();
    assert!(during.ddl > 0, "{during:?}");

    let mappings = env.task_mappings(&task).await.unwrap();
    let comparison = env
        .wait_equal(&mappings, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(comparison.source_rows() > 1000);
    let target = env.target().await.unwrap();
    let notes: i64 = target
        .query_one(
            "SELECT count(*) FROM sales.text_samples WHERE note = 'right after the DDL'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let expected = source_count(
        &env,
        "SELECT id FROM sales.text_samples WHERE note = N'right after the DDL'",
    );
    assert!(expected > 0);
    assert_eq!(notes as usize, expected);
    let info = env.status(&task).await.unwrap().task.unwrap();
    assert_ne!(info.state, pb::TaskState::Failed as i32, "{info:?}");

    // Deleting the task with the source cleanup removes everything dbsync installed.
    let mut client = env.client().await.unwrap();
    client
        .delete_task(pb::DeleteTaskRequest {
            task_id: task.clone(),
            cleanup_source: true,
        })
        .await
        .unwrap();
    assert_eq!(source_count(&env, "SELECT name FROM sys.triggers"), 0);
    assert_eq!(
        source_count(
            &env,
            "SELECT name FROM sys.tables WHERE name LIKE 'dbsync%'"
        ),
        0
    );
    assert_eq!(
        source_count(&env, "SELECT capture_instance FROM cdc.change_tables"),
        0
    );
    env.standin
        .run(
            "shop",
            "ALTER TABLE sales.text_samples ADD after_cleanup int NULL",
        )
        .unwrap();
}

/// With `incremental.on_retention_overrun: fail` the task fails naming the table, and the
/// target keeps what it had (no truncate, no reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_overrun_fails_the_task_when_asked_to() {
    let mut env = TestEnv::start_with_sample(Some(300)).await.unwrap();
    let spec = customers_and_orders_task(&env, "overrun-fails", 10_000).replace(
        "poll_interval_ms: 100 }",
        "poll_interval_ms: 100, on_retention_overrun: fail }",
    );
    assert!(spec.contains("on_retention_overrun: fail"), "{spec}");
    let task = env
        .run_until_streaming(&spec, Duration::from_secs(180))
        .await
        .unwrap();
    let target = env.target().await.unwrap();
    let orders_on_target = || async {
        let row = target
            .query_one(
                "SELECT count(*), coalesce(sum(total), 0)::text FROM sales.orders",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    };
    let before = orders_on_target().await;
    assert!(before.0 > 0, "{before:?}");

    overrun_orders_retention(&mut env, 500, &[]).await.unwrap();

    let status = env
        .wait_task_state(&task, pb::TaskState::Failed, Duration::from_secs(60))
        .await
        .unwrap();
    let reason = status.task.unwrap_or_default().last_error;
    assert!(reason.contains("orders"), "{reason}");
    assert!(reason.contains("minimum LSN"), "{reason}");
    assert!(
        reason.contains("on_retention_overrun: resnapshot") && reason.contains("sp_cdc_change_job"),
        "{reason}"
    );
    // Nothing was truncated or reloaded, and no re-snapshot was recorded.
    assert_eq!(orders_on_target().await, before);
    let records = env.resnapshot_records().await.unwrap_or(0);
    assert_eq!(records, 0);
}

/// Retention overrun: while the applier is down, cleanup removes change data of
/// `sales.orders` that the stream still needs. On restart only that table is re-snapshotted
/// (reported as RESNAPSHOT); `sales.customers`, in the same FK group, keeps streaming: a
/// customer inserted during the reload is visible on the target while the reload is still
/// running. Orders changed during the reload arrive through the table's side stream, the
/// table rejoins the group's stream, and the end state equals the source row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_overrun_resnapshots_one_table_while_its_group_keeps_streaming() {
    let mut env = TestEnv::start_with_sample(Some(300)).await.unwrap();
    // A slow full-sync read rate makes the reload take seconds.
    let spec = customers_and_orders_task(&env, "resnapshot", 400);
    let task = env
        .run_until_streaming(&spec, Duration::from_secs(180))
        .await
        .unwrap();
    let status = env.status(&task).await.unwrap();
    assert_eq!(status.tables.len(), 2, "{status:?}");

    // The applier is down while orders change and their change data is cleaned up.
    overrun_orders_retention(
        &mut env,
        3000,
        &["UPDATE sales.customers SET loyalty_points = loyalty_points + 1 WHERE customer_id % 3 = 0"],
    )
    .await
    .unwrap();

    // Reported loudly, for orders only.
    env.wait_table_phase(
        &task,
        "orders",
        pb::TablePhase::Resnapshot,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_ne!(
        env.table_phase(&task, "customers").await.unwrap(),
        pb::TablePhase::Resnapshot as i32
    );

    // During the reload: a new customer, and orders changing (the side stream's part).
    env.standin
        .run(
            "shop",
            "INSERT INTO sales.customers (email, full_name, country_code) VALUES (N'probe@resnapshot.test', N'Probe', 'DE')",
        )
        .unwrap();
    env.standin
        .run(
            "shop",
            "UPDATE sales.orders SET status = 'paid' WHERE order_id % 7 = 0",
        )
        .unwrap();
    env.standin
        .run(
            "shop",
            "INSERT INTO sales.orders (customer_id, order_date, ordered_at, status, total) VALUES (2, '2026-02-01', '2026-02-01T10:00:00+00:00', 'new', 1.5)",
        )
        .unwrap();
    let source_orders = source_count(&env, "SELECT order_id FROM sales.orders");
    let target = env.target().await.unwrap();
    // One snapshot of the target: the customer is there while orders are still loading.
    let loaded_orders = wait_for(
        "the new customer on the target",
        Duration::from_secs(60),
        || async {
            let row = target
                .query_one(
                    "SELECT (SELECT count(*) FROM sales.customers WHERE email = 'probe@resnapshot.test'),
                            (SELECT count(*) FROM sales.orders)",
                    &[],
                )
                .await?;
            let (probe, orders): (i64, i64) = (row.get(0), row.get(1));
            Ok(if probe == 1 {
                Ok(orders as usize)
            } else {
                Err(format!("customer not there yet; {orders} orders loaded"))
            })
        },
    )
    .await
    .unwrap();
    assert!(
        loaded_orders < source_orders,
        "the customer became visible only after the reload ended ({loaded_orders} of {source_orders} orders)"
    );

    let mappings = env.task_mappings(&task).await.unwrap();
    env.wait_equal(&mappings, Duration::from_secs(180))
        .await
        .unwrap();
    env.wait_streaming(&task, Duration::from_secs(60))
        .await
        .unwrap();
    // The table rejoined the group's stream: later changes arrive the normal way.
    assert_eq!(env.resnapshot_records().await.unwrap(), 0);
    env.standin
        .run(
            "shop",
            "UPDATE sales.orders SET status = 'shipped' WHERE order_id % 11 = 0",
        )
        .unwrap();
    env.wait_equal(&mappings, Duration::from_secs(60))
        .await
        .unwrap();
    let info = env.status(&task).await.unwrap().task.unwrap();
    assert_ne!(info.state, pb::TaskState::Failed as i32, "{info:?}");
}
