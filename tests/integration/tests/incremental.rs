//! Incremental sync (cdc-polling) with the seeded workload running during and after the full
//! sync: interleaved transactions committing out of begin order, primary-key updates, LOB-only
//! updates, large transactions, deletes of rows inserted in the same transaction.

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::harness::workload::{finish_workload, sample_workload, spawn_workload};
use dbsync_testkit::harness::KEYLESS_SAMPLE_TABLES;
use dbsync_testkit::{EnvOptions, TestEnv};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_and_after_full_sync_converge_exactly() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(400),
        ..Default::default()
    })
    .await
    .unwrap();
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
    env.wait_phases(
        &task,
        &[pb::TablePhase::Streaming],
        Duration::from_secs(180),
    )
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
