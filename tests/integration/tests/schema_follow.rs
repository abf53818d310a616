//! Hybrid mode follows source DDL durably: the new shape of a table survives an applier
//! restart (the target's checkpoint records it, the coordinator plans with it) and the
//! coordinator's verify compares the new columns; a schema change while a table is
//! re-snapshotted after a retention overrun is followed instead of failing the task.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::retention::{
    clean_up_change_data, customers_and_orders_task, insert_orders,
};
use dbsync_testkit::harness::wait_for;
use dbsync_testkit::{EnvOptions, TestEnv};

/// customers + orders (one FK group) in hybrid mode.
fn hybrid_task(env: &TestEnv, name: &str, full_rows_per_second: u32) -> String {
    let spec = customers_and_orders_task(env, name, full_rows_per_second)
        .replace("mode: cdc-polling", "mode: hybrid");
    assert!(spec.contains("mode: hybrid"), "{spec}");
    spec
}

/// The target columns of `schema.table`, in order.
async fn target_columns(target: &tokio_postgres::Client, schema: &str, table: &str) -> Vec<String> {
    target
        .query(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            &[&schema, &table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn verify(env: &TestEnv, task: &str, repair: bool) -> pb::VerifyReport {
    env.client()
        .await
        .unwrap()
        .verify_task(pb::VerifyTaskRequest {
            task_id: task.into(),
            mode: "full".into(),
            repair,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The status columns the coordinator lists for the task's table `name`.
async fn status_columns(env: &TestEnv, task: &str, name: &str) -> Vec<String> {
    env.status(task)
        .await
        .unwrap()
        .tables
        .iter()
        .find(|t| t.source.as_ref().is_some_and(|s| s.name == name))
        .map(|t| t.source_columns.clone())
        .unwrap_or_default()
}

/// ADD COLUMN and RENAME COLUMN on a keyed table while streaming; the applier is killed and
/// restarted (with changes to the new columns while it is down and after), and the
/// coordinator's verify finds the target equal, new columns included: a corrupted value in the
/// added column is found and repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_ddl_survives_an_applier_restart_and_verify_compares_the_new_columns() {
    let mut env = TestEnv::start(EnvOptions {
        sample_rows: Some(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let task = env
        .run_task(&hybrid_task(&env, "follow-restart", 100_000))
        .await
        .unwrap();
    env.wait_phases(
        &task,
        &[pb::TablePhase::Streaming],
        Duration::from_secs(180),
    )
    .await
    .unwrap();
    let target = env.target().await.unwrap();

    for sql in [
        "ALTER TABLE sales.customers ADD nickname nvarchar(40) NULL",
        "UPDATE sales.customers SET nickname = N'nick ' + CAST(customer_id AS nvarchar(10)) WHERE customer_id % 3 = 0",
        "EXEC sp_rename 'sales.customers.full_name', 'display_name', 'COLUMN'",
        "UPDATE sales.customers SET display_name = display_name + N' (renamed)' WHERE customer_id % 5 = 0",
    ] {
        env.standin.run("shop", sql).unwrap();
    }
    wait_for(
        "the target to follow the DDL",
        Duration::from_secs(60),
        || async {
            let columns = target_columns(&target, "sales", "customers").await;
            Ok(
                if columns.iter().any(|c| c == "nickname")
                    && columns.iter().any(|c| c == "display_name")
                {
                    Ok(())
                } else {
                    Err(format!("target columns {columns:?}"))
                },
            )
        },
    )
    .await
    .unwrap();
    let mappings = env.task_mappings(&task).await.unwrap();
    env.wait_equal(&mappings, Duration::from_secs(60))
        .await
        .unwrap();
    wait_for(
        "the coordinator to know the new columns",
        Duration::from_secs(30),
        || async {
            let columns = status_columns(&env, &task, "customers").await;
            Ok(
                if columns.iter().any(|c| c == "nickname")
                    && columns.iter().any(|c| c == "display_name")
                    && !columns.iter().any(|c| c == "full_name")
                {
                    Ok(())
                } else {
                    Err(format!("status columns {columns:?}"))
                },
            )
        },
    )
    .await
    .unwrap();

    // The applier goes away; the new columns change meanwhile and after it is back.
    env.appliers[0].kill();
    env.standin
        .run(
            "shop",
            "UPDATE sales.customers SET nickname = N'while down', display_name = N'Down ' + email WHERE customer_id % 4 = 0",
        )
        .unwrap();
    env.standin
        .run(
            "shop",
            "INSERT INTO sales.customers (email, display_name, country_code, nickname) VALUES (N'new@follow.test', N'New One', 'FR', N'newbie')",
        )
        .unwrap();
    env.appliers[0].restart().await.unwrap();
    env.standin
        .run(
            "shop",
            "UPDATE sales.customers SET nickname = N'after restart' WHERE customer_id % 7 = 0",
        )
        .unwrap();
    insert_orders(&env.standin, 50).unwrap();
    env.wait_equal(&mappings, Duration::from_secs(120))
        .await
        .unwrap();
    let new_row: i64 = target
        .query_one(
            "SELECT count(*) FROM sales.customers WHERE nickname = 'newbie' AND display_name = 'New One'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(new_row, 1);
    let info = env.status(&task).await.unwrap().task.unwrap();
    assert_ne!(info.state, pb::TaskState::Failed as i32, "{info:?}");

    // The coordinator's verify compares the new columns.
    let report = verify(&env, &task, false).await;
    assert!(report.equal, "{report:?}");
    target
        .execute(
            "UPDATE sales.customers SET nickname = 'corrupted' WHERE customer_id = 3",
            &[],
        )
        .await
        .unwrap();
    let report = verify(&env, &task, false).await;
    assert!(
        !report.equal,
        "a changed value in the added column was not found: {report:?}"
    );
    let customers = report
        .tables
        .iter()
        .find(|t| t.source.as_ref().is_some_and(|s| s.name == "customers"))
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(!customers.equal, "{customers:?}");
    assert!(
        customers.differences.iter().any(|d| d.key.contains('3')),
        "{customers:?}"
    );
    verify(&env, &task, true).await;
    let report = verify(&env, &task, false).await;
    assert!(report.equal, "{report:?}");
}

/// A source schema change of a table while it is re-snapshotted after a retention overrun —
/// one committed while the applier was down (before the re-snapshot starts) and one while
/// its side stream runs — is followed: the task keeps running and the target equals the
/// source, new columns included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_during_a_resnapshot_are_followed() {
    let mut env = TestEnv::start(EnvOptions {
        sample_rows: Some(300),
        ..Default::default()
    })
    .await
    .unwrap();
    // A slow full-sync read rate keeps the reload running for seconds.
    let task = env
        .run_task(&hybrid_task(&env, "follow-resnapshot", 1500))
        .await
        .unwrap();
    env.wait_phases(
        &task,
        &[pb::TablePhase::Streaming],
        Duration::from_secs(180),
    )
    .await
    .unwrap();

    env.appliers[0].kill();
    insert_orders(&env.standin, 2000).unwrap();
    env.standin
        .run(
            "shop",
            "ALTER TABLE sales.orders ADD channel varchar(20) NULL",
        )
        .unwrap();
    env.standin
        .run(
            "shop",
            "UPDATE sales.orders SET channel = 'web' WHERE order_id % 2 = 0",
        )
        .unwrap();
    clean_up_change_data(&env.standin, "shop", "sales", "orders").unwrap();
    env.appliers[0].restart().await.unwrap();

    wait_for(
        "orders to be re-snapshotted",
        Duration::from_secs(60),
        || async {
            let status = env.status(&task).await?;
            let phase = status
                .tables
                .iter()
                .find(|t| t.source.as_ref().is_some_and(|s| s.name == "orders"))
                .map_or(0, |t| t.phase);
            Ok(if phase == pb::TablePhase::Resnapshot as i32 {
                Ok(())
            } else {
                Err(format!("orders phase {phase}"))
            })
        },
    )
    .await
    .unwrap();
    // While the table reloads or follows its side stream: another column, and once the
    // target has it, changes to both new columns.
    env.standin
        .run("shop", "ALTER TABLE sales.orders ADD priority int NULL")
        .unwrap();
    let target = env.target().await.unwrap();
    wait_for(
        "the target to follow the DDL",
        Duration::from_secs(180),
        || async {
            let columns = target_columns(&target, "sales", "orders").await;
            Ok(
                if columns.iter().any(|c| c == "channel") && columns.iter().any(|c| c == "priority")
                {
                    Ok(())
                } else {
                    Err(format!("target columns {columns:?}"))
                },
            )
        },
    )
    .await
    .unwrap();
    for sql in [
        "UPDATE sales.orders SET priority = 1, channel = 'shop' WHERE order_id % 5 = 0",
        "INSERT INTO sales.orders (customer_id, order_date, ordered_at, status, total, channel, priority) VALUES (2, '2026-02-01', '2026-02-01T10:00:00+00:00', 'new', 1.5, 'phone', 9)",
    ] {
        env.standin.run("shop", sql).unwrap();
    }
    let mappings = env.task_mappings(&task).await.unwrap();
    env.wait_equal(&mappings, Duration::from_secs(180))
        .await
        .unwrap();
    let info = env.status(&task).await.unwrap().task.unwrap();
    assert_ne!(info.state, pb::TaskState::Failed as i32, "{info:?}");
    wait_for(
        "orders to stream again",
        Duration::from_secs(60),
        || async {
            let status = env.status(&task).await?;
            let phase = status
                .tables
                .iter()
                .find(|t| t.source.as_ref().is_some_and(|s| s.name == "orders"))
                .map_or(0, |t| t.phase);
            Ok(if phase == pb::TablePhase::Streaming as i32 {
                Ok(())
            } else {
                Err(format!("orders phase {phase}"))
            })
        },
    )
    .await
    .unwrap();
    let report = verify(&env, &task, false).await;
    assert!(report.equal, "{report:?}");
}
