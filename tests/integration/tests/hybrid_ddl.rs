//! Hybrid mode following DDL end to end (stand-in over TDS, the real capture, coordinator and
//! applier, PostgreSQL): a second column change while a table already has two capture
//! instances, on a keyed table and a heap; a restart of capture and apply while an old
//! instance's rows after a column change are still to be read. The end state equals the
//! source row by row.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::wait_for;
use dbsync_testkit::{EnvOptions, TestEnv};

const KEYED: &str = "inventory.warehouses";
const HEAP: &str = "sales.audit_log";

/// A hybrid task over `tables` of the sample database, with more top-level lines.
fn hybrid_task(env: &TestEnv, name: &str, tables: &[&str], extra: &str) -> String {
    let include: Vec<String> = tables.iter().map(|t| format!("\"shop.{t}\"")).collect();
    env.sample_task_with(
        name,
        true,
        true,
        &[],
        &format!("  include: [{}]\n", include.join(", ")),
        extra,
    )
    .replace("mode: cdc-polling", "mode: hybrid")
}

/// The capture instances of a source table.
fn instances(env: &TestEnv, table: &str) -> Vec<String> {
    let sql = format!("SELECT capture_instance FROM cdc.change_tables WHERE source_object_id = OBJECT_ID(N'{table}')");
    env.standin.engine.run("shop", &sql).unwrap()[0]
        .rows
        .iter()
        .map(|r| format!("{:?}", r[0]))
        .collect()
}

fn run(env: &TestEnv, sql: &str) {
    env.standin
        .run("shop", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn assert_not_failed(env: &TestEnv, task: &str) {
    let info = env.status(task).await.unwrap().task.unwrap();
    assert_ne!(
        info.state,
        pb::TaskState::Failed as i32,
        "{}",
        info.last_error
    );
}

/// Two ADD COLUMNs in quick succession: the second comes after the first's new capture
/// instances exist but before the stream has passed them (the capture job is held, so the
/// max LSN cannot reach them), so the tables have no free instance slot. The stream retires
/// the first instance of the keyed table once it has passed the second and creates the
/// instance for the second change without a restart; meanwhile the keyed table reads the
/// new column by key and the heap (no key to read by) is re-snapshotted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_add_column_while_two_capture_instances_exist_is_followed_without_a_restart() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(30),
        ..Default::default()
    })
    .await
    .unwrap();
    // `fail` on retention overrun: the heap's reload is for added columns, not an overrun,
    // so it must happen anyway and the task keep running.
    let spec = hybrid_task(&env, "second_ddl", &[KEYED, HEAP], "")
        .replace("mode: hybrid,", "mode: hybrid, on_retention_overrun: fail,");
    assert!(spec.contains("on_retention_overrun: fail"), "{spec}");
    let task = env.run_task(&spec).await.unwrap();
    env.wait_caught_up(&task, "shop", Duration::from_secs(180))
        .await
        .unwrap();
    let first_keyed = instances(&env, KEYED);
    assert_eq!(first_keyed.len(), 1, "{first_keyed:?}");

    // Before.
    run(&env, &format!("INSERT INTO {KEYED} (warehouse_code, name, opened_on) VALUES ('B001', N'before', '2026-01-01')"));
    run(&env, &format!("INSERT INTO {HEAP} (logged_at, event_name, detail) VALUES ('2026-01-01', 'before', 'b')"));
    // The first change, captured alone; the capture job stays held afterwards.
    env.standin.cdc.set_capture_running("shop", false).unwrap();
    run(&env, &format!("ALTER TABLE {KEYED} ADD c1 int NULL"));
    run(&env, &format!("ALTER TABLE {HEAP} ADD c1 int NULL"));
    run(
        &env,
        &format!("UPDATE {KEYED} SET c1 = 1 WHERE warehouse_code = 'B001'"),
    );
    env.standin.cdc.scan("shop", None).unwrap();
    wait_for(
        "the new capture instances of the first change",
        Duration::from_secs(60),
        || async {
            let (k, h) = (instances(&env, KEYED), instances(&env, HEAP));
            Ok(if k.len() == 2 && h.len() == 2 {
                Ok(())
            } else {
                Err(format!("{k:?} {h:?}"))
            })
        },
    )
    .await
    .unwrap();
    // Between, the second change, and after it: all behind the held capture job, so the
    // stream cannot have passed the new instances yet.
    run(&env, &format!("INSERT INTO {KEYED} (warehouse_code, name, opened_on, c1) VALUES ('B002', N'between', '2026-01-02', 2)"));
    run(&env, &format!("INSERT INTO {HEAP} (logged_at, event_name, detail, c1) VALUES ('2026-01-02', 'between', 'b', 22)"));
    run(
        &env,
        &format!("ALTER TABLE {KEYED} ADD c2 nvarchar(20) NULL"),
    );
    run(
        &env,
        &format!("ALTER TABLE {HEAP} ADD c2 nvarchar(20) NULL"),
    );
    run(&env, &format!("INSERT INTO {KEYED} (warehouse_code, name, opened_on, c1, c2) VALUES ('B003', N'after', '2026-01-03', 3, N'three')"));
    run(&env, &format!("UPDATE {KEYED} SET c2 = N'one', name = N'before, edited' WHERE warehouse_code = 'B001'"));
    run(&env, &format!("INSERT INTO {HEAP} (logged_at, event_name, detail, c1, c2) VALUES ('2026-01-03', 'after', 'a', 33, 'three')"));
    run(
        &env,
        &format!("UPDATE {HEAP} SET c2 = 'edited' WHERE event_name = 'between'"),
    );
    assert_eq!(instances(&env, KEYED).len(), 2);
    env.standin.cdc.set_capture_running("shop", true).unwrap();

    // The instance for the second change replaces the first one, with no restart of anything.
    wait_for(
        "the keyed table's instance for the second change",
        Duration::from_secs(60),
        || async {
            let k = instances(&env, KEYED);
            Ok(if k.len() == 2 && !k.contains(&first_keyed[0]) {
                Ok(())
            } else {
                Err(format!("{k:?}"))
            })
        },
    )
    .await
    .unwrap();
    run(&env, &format!("INSERT INTO {KEYED} (warehouse_code, name, opened_on, c1, c2) VALUES ('B004', N'late', '2026-01-04', 4, N'four')"));
    run(&env, &format!("INSERT INTO {HEAP} (logged_at, event_name, detail, c1, c2) VALUES ('2026-01-04', 'late', 'l', 44, 'four')"));

    let mappings = env.task_mappings(&task).await.unwrap();
    let comparison = env
        .wait_equal(&mappings, Duration::from_secs(180))
        .await
        .unwrap();
    assert!(comparison.source_rows() > 0);
    assert_not_failed(&env, &task).await;
    let target = env.target().await.unwrap();
    let c2: Vec<String> = target
        .query(
            "SELECT c2 FROM inventory.warehouses WHERE c2 IS NOT NULL ORDER BY c2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(c2, vec!["four", "one", "three"]);
    let heap_c2: i64 = target
        .query_one(
            "SELECT count(*) FROM sales.audit_log WHERE c2 IN ('edited', 'three', 'four')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(heap_c2, 3);
}

/// Capture and apply go down while the old instance still holds rows written after an ADD
/// COLUMN (the applier has committed past the DDL, the new instance does not cover those
/// rows). After the restart the stream works with the table's current schema, not the
/// applier's plan from before the DDL, so those rows keep the added column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_inside_an_old_instance_window_keeps_the_added_columns() {
    let mut env = TestEnv::start(EnvOptions {
        sample_rows: Some(10),
        ..Default::default()
    })
    .await
    .unwrap();
    // A slow stream, so the restart lands while the old instance's rows are being read.
    let spec = hybrid_task(
        &env,
        "restart_window",
        &[KEYED],
        "throttle: { incremental: { rows_per_second: 4 } }\n",
    );
    let task = env.run_task(&spec).await.unwrap();
    env.wait_caught_up(&task, "shop", Duration::from_secs(180))
        .await
        .unwrap();

    // With capture down nothing creates the new instance: every row below is in the old one.
    env.capture.kill();
    run(
        &env,
        &format!("ALTER TABLE {KEYED} ADD note nvarchar(40) NULL"),
    );
    const GAP_ROWS: usize = 16;
    for i in 1..=GAP_ROWS {
        run(&env, &format!(
            "INSERT INTO {KEYED} (warehouse_code, name, opened_on, note) VALUES ('G{i:03}', N'gap', '2026-02-01', N'note {i}')"
        ));
    }
    env.capture.restart().await.unwrap();
    // The applier has committed past the DDL and the second gap row; most are still to come.
    let target = env.target().await.unwrap();
    wait_for("the second gap row on the target", Duration::from_secs(120), || async {
        let rows = target.query("SELECT 1 FROM inventory.warehouses WHERE warehouse_code = 'G002' AND name = 'gap'", &[]).await?;
        Ok(if rows.is_empty() { Err("not yet".to_string()) } else { Ok(()) })
    })
    .await
    .unwrap();
    env.capture.kill();
    env.appliers[0].kill();
    let applied: i64 = target
        .query_one(
            "SELECT count(*) FROM inventory.warehouses WHERE name = 'gap'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        (applied as usize) < GAP_ROWS,
        "the old instance's window was still open at the restart"
    );
    env.capture.restart().await.unwrap();
    env.appliers[0].restart().await.unwrap();

    let mappings = env.task_mappings(&task).await.unwrap();
    env.wait_equal(&mappings, Duration::from_secs(180))
        .await
        .unwrap();
    assert_not_failed(&env, &task).await;
    let target = env.target().await.unwrap();
    let notes: i64 = target
        .query_one(
            "SELECT count(*) FROM inventory.warehouses WHERE note IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes as usize, GAP_ROWS);
}

/// A column dropped on the source while the table's full sync is still reading it: the next
/// chunk read meets error 207 (retried), and the retried load follows the source's current
/// schema (the target column goes too) instead of failing the task. Changes after the drop
/// stream as usual; the end state equals the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_during_the_full_sync_is_followed_by_the_load() {
    const TABLE: &str = "sales.customers";
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(3000),
        ..Default::default()
    })
    .await
    .unwrap();
    // Chunks of 1,000 rows, one at a time, at 1,000 rows/s: the load takes a few seconds.
    let spec = hybrid_task(
        &env,
        "drop_during_full",
        &[TABLE],
        "throttle: { full: { rows_per_second: 1000 } }\n",
    )
    .replace("parallel_chunks: 4", "parallel_chunks: 1");
    assert!(spec.contains("parallel_chunks: 1"), "{spec}");
    let task = env.run_task(&spec).await.unwrap();
    wait_for(
        "the first loaded chunk",
        Duration::from_secs(120),
        || async {
            let status = env.status(&task).await?;
            let t = status.tables.first().cloned().unwrap_or_default();
            Ok(if t.chunks_done >= 1 && t.chunks_done < t.chunks_total {
                Ok(())
            } else {
                Err(format!("chunks {}/{}", t.chunks_done, t.chunks_total))
            })
        },
    )
    .await
    .unwrap();
    run(
        &env,
        &format!("ALTER TABLE {TABLE} DROP COLUMN country_code"),
    );
    run(
        &env,
        &format!("UPDATE {TABLE} SET full_name = N'after the drop' WHERE customer_id % 7 = 0"),
    );

    env.wait_caught_up(&task, "shop", Duration::from_secs(180))
        .await
        .unwrap();
    let mappings = env.task_mappings(&task).await.unwrap();
    let comparison = env
        .wait_equal(&mappings, Duration::from_secs(120))
        .await
        .unwrap();
    assert!(comparison.source_rows() >= 3000);
    assert_not_failed(&env, &task).await;
    let target = env.target().await.unwrap();
    let left: i64 = target
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'sales' AND table_name = 'customers' AND column_name = 'country_code'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the dropped column is gone from the target too");
}
