//! Changing a running task's incremental throttle with ModifyTask: the change stream keeps
//! running (the group keeps its generation, the applied-change count never restarts) and the
//! new rate takes effect on the stream that is already running, changes already waiting
//! included. Stand-in, capture, coordinator, applier and PostgreSQL are all real.

use std::time::{Duration, Instant};

use dbsync_proto::v1 as pb;
use dbsync_proto::v1::worker_service_client::WorkerServiceClient;
use dbsync_testkit::{EnvOptions, TestEnv};

/// The generations of the applier's assignments, as the coordinator hands them out.
async fn generations(env: &TestEnv) -> Vec<(String, u64)> {
    let mut workers = WorkerServiceClient::connect(env.coordinator.url())
        .await
        .unwrap();
    let mut gens: Vec<(String, u64)> = workers
        .heartbeat(pb::HeartbeatRequest {
            worker_id: "apply-1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .assignments
        .into_iter()
        .map(|a| (a.group_id, a.generation))
        .collect();
    gens.sort();
    gens
}

async fn applied(env: &TestEnv, task: &str) -> u64 {
    let status = env.status(task).await.unwrap();
    let info = status.task.clone().unwrap_or_default();
    assert_ne!(
        info.state,
        pb::TaskState::Failed as i32,
        "task failed: {}",
        info.last_error
    );
    status.tables.iter().map(|t| t.changes_applied).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_throttle_speeds_up_the_running_stream_without_restarting_it() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(20),
        ..Default::default()
    })
    .await
    .unwrap();
    const ROWS_PER_SECOND: u32 = 4;
    let spec = env.sample_task_with(
        "live_throttle",
        true,
        true,
        &[],
        "  include: [\"shop.inventory.warehouses\"]\n",
        &format!("throttle: {{ incremental: {{ rows_per_second: {ROWS_PER_SECOND} }} }}\n"),
    );
    let task = env.run_task(&spec).await.unwrap();
    env.wait_caught_up(&task, "shop", Duration::from_secs(90))
        .await
        .unwrap();
    let gens_before = generations(&env).await;
    assert!(!gens_before.is_empty());
    let base = applied(&env, &task).await;

    // 60 changes, one transaction each (an applier commits whole source transactions): about
    // 15 s at the throttled rate.
    const CHANGES: u64 = 60;
    for i in 1..=CHANGES {
        env.standin
            .run(
                "shop",
                &format!(
                    "INSERT INTO inventory.warehouses (warehouse_code, name, opened_on) \
                     VALUES ('T{i:03}', N'throttled {i}', '2026-01-01')"
                ),
            )
            .unwrap();
    }
    let written = Instant::now();
    // The stream is moving, at the throttled pace.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = base;
    while last == base {
        assert!(Instant::now() < deadline, "no change applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = applied(&env, &task).await;
    }
    assert!(
        last - base < CHANGES,
        "the throttle of {ROWS_PER_SECOND} rows/s let all {CHANGES} changes through in {:?}",
        written.elapsed()
    );

    let mut client = env.client().await.unwrap();
    client
        .modify_task(pb::ModifyTaskRequest {
            task_id: task.clone(),
            incremental_throttle: Some(pb::Throttle {
                rows_per_second: 100_000.0,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let raised = Instant::now();
    // The rest arrives well before the old rate could have delivered it (it reaches the
    // capture service with its next heartbeat, every 3 s).
    loop {
        let now = applied(&env, &task).await;
        assert!(
            now >= last,
            "the applied count went back: the stream restarted"
        );
        last = now;
        if now - base >= CHANGES {
            break;
        }
        assert!(
            raised.elapsed() < Duration::from_secs(9),
            "still throttled {:?} after raising the limit: {} of {CHANGES} applied",
            raised.elapsed(),
            now - base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        generations(&env).await,
        gens_before,
        "the throttle change restarted the group"
    );
}
