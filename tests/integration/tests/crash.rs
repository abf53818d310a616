//! Crash tests: capture, apply and the coordinator are killed (their runtimes dropped where
//! they stand, with every connection and stream) at seeded random points, restarted on the
//! same address, and the target must equal the source row by row with no duplicates.
//! Set DBSYNC_CRASH_SEED to replay a run; the seed is printed. 6 + 16 + 8 + 6 crash points per
//! run (8 under the sample workload's key and LOB-only updates, 6 during a re-snapshot after a
//! retention overrun).

use std::time::Duration;

use dbsync_proto::v1 as pb;
use dbsync_testkit::bench::{bench_task, drive_bench_changes, load_source, BENCH_DB};
use dbsync_testkit::harness::retention::{customers_and_orders_task, overrun_orders_retention};
use dbsync_testkit::harness::workload::{finish_workload, sample_workload, spawn_workload};
use dbsync_testkit::harness::{
    describe_tables, wait_for, Service, StandIn, TableMapping, KEYLESS_SAMPLE_TABLES,
};
use dbsync_testkit::{EnvOptions, TestEnv};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

fn seed() -> u64 {
    let seed = std::env::var("DBSYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        });
    eprintln!("crash test seed: DBSYNC_CRASH_SEED={seed}");
    seed
}

#[derive(Clone, Copy, Debug)]
enum Victim {
    Capture,
    Apply,
    Coordinator,
}

/// Kills one service after a random delay, keeps it down briefly, restarts it.
async fn crash_once(rng: &mut StdRng, victim: Victim, service: &mut Service) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
    let down = Duration::from_millis(rng.random_range(0..800));
    eprintln!("kill {victim:?}, down for {down:?}");
    service.kill();
    tokio::time::sleep(down).await;
    service.restart().await.unwrap();
}

/// `n` victims: each service once, then seeded random picks.
fn schedule(rng: &mut StdRng, n: usize) -> Vec<Victim> {
    const ALL: [Victim; 3] = [Victim::Capture, Victim::Apply, Victim::Coordinator];
    (0..n)
        .map(|i| match ALL.get(i) {
            Some(first) => *first,
            None => ALL[rng.random_range(0..ALL.len())],
        })
        .collect()
}

/// The services a crash can hit (the first applier), borrowed apart from the stand-in so that
/// changes can run against it meanwhile.
struct Victims<'a> {
    capture: &'a mut Service,
    apply: &'a mut Service,
    coordinator: &'a mut Service,
}

impl<'a> Victims<'a> {
    fn of(env: &'a mut TestEnv) -> (&'a StandIn, Victims<'a>) {
        let TestEnv {
            standin,
            capture,
            appliers,
            coordinator,
            ..
        } = env;
        let apply = &mut appliers[0];
        (
            standin,
            Victims {
                capture,
                apply,
                coordinator,
            },
        )
    }

    async fn crash(&mut self, rng: &mut StdRng, victim: Victim) {
        let service = match victim {
            Victim::Capture => &mut *self.capture,
            Victim::Apply => &mut *self.apply,
            Victim::Coordinator => &mut *self.coordinator,
        };
        crash_once(rng, victim, service).await;
    }

    /// Crashes the victims of `schedule` one after the other.
    async fn crash_in_turn(&mut self, rng: &mut StdRng, schedule: &[Victim]) {
        for victim in schedule {
            self.crash(rng, *victim).await;
        }
    }
}

fn bench_table() -> Vec<TableMapping> {
    vec![TableMapping::lower(BENCH_DB, "dbo", "bench7")]
}

/// An environment without the sample database; the source holds the bench table with `rows`
/// rows.
async fn bench_env(rows: u64, appliers: usize) -> TestEnv {
    let env = TestEnv::start(EnvOptions {
        sample_rows: None,
        appliers,
        ..Default::default()
    })
    .await
    .unwrap();
    load_source(&env.standin, rows).await.unwrap();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_resume_during_full_sync_gives_the_exact_result() {
    let mut rng = StdRng::seed_from_u64(seed());
    let mut env = bench_env(200_000, 1).await;
    let task = env
        .run_task(&bench_task(&env, "crash-full", true, false, 5_000))
        .await
        .unwrap();
    let mut points = 0;
    for victim in [
        Victim::Apply,
        Victim::Capture,
        Victim::Apply,
        Victim::Coordinator,
        Victim::Capture,
        Victim::Apply,
    ] {
        let status = env.status(&task).await;
        if status.is_ok_and(|s| {
            s.task
                .is_some_and(|t| t.state == pb::TaskState::Completed as i32)
        }) {
            break;
        }
        Victims::of(&mut env).1.crash(&mut rng, victim).await;
        points += 1;
    }
    eprintln!("{points} crash points during full sync");
    env.wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(300))
        .await
        .unwrap();
    let comparison = env.compare(&bench_table()).await.unwrap();
    assert!(comparison.equal(), "{}", comparison.report());
    assert!(
        points >= 3,
        "the full sync finished before enough crash points: {points}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_any_service_during_incremental_sync_loses_and_repeats_nothing() {
    let mut rng = StdRng::seed_from_u64(seed());
    let mut env = bench_env(5_000, 1).await;
    env.run_until_streaming(
        &bench_task(&env, "crash-incremental", true, true, 1_000),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let schedule = schedule(&mut rng, 16);
    let (standin, mut victims) = Victims::of(&mut env);
    let driver = drive_bench_changes(
        standin,
        5_000,
        1_000_000,
        20,
        Duration::from_millis(20),
        stop.clone(),
    );
    let crashes = async {
        victims.crash_in_turn(&mut rng, &schedule).await;
        stop.cancel();
    };
    let (changes, ()) = tokio::join!(driver, crashes);
    let changes = changes.unwrap();
    assert!(changes > 1_000, "the driver made only {changes} changes");
    env.wait_equal(&bench_table(), Duration::from_secs(180))
        .await
        .unwrap();
}

/// The sample workload (primary-key updates of order lines delete + insert with one seqval,
/// LOB-only updates of customer notes, out-of-order commits, large transactions, deletes of
/// rows inserted in the same transaction) runs while capture, apply and the coordinator are
/// killed at seeded points; the target must equal the source row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_key_and_lob_only_updates_lose_and_repeat_nothing() {
    let mut rng = StdRng::seed_from_u64(seed());
    let mut env = TestEnv::start_with_sample(Some(200)).await.unwrap();
    let task = env
        .run_until_streaming(
            &env.sample_task_with("crash-sample", true, true, KEYLESS_SAMPLE_TABLES, "", ""),
            Duration::from_secs(180),
        )
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let workload = spawn_workload(
        &env.standin,
        sample_workload(&env.standin, rng.random(), 100_000, Some(120.0)),
        stop.clone(),
    );
    let schedule = schedule(&mut rng, 8);
    Victims::of(&mut env)
        .1
        .crash_in_turn(&mut rng, &schedule)
        .await;
    stop.cancel();
    let stats = finish_workload(workload, Duration::from_secs(60)).await;
    assert!(
        stats.key_updates > 0 && stats.lob_updates > 0,
        "the workload did not exercise key and LOB-only updates: {stats:?}"
    );
    let mappings = env.task_mappings(&task).await.unwrap();
    env.wait_equal(&mappings, Duration::from_secs(180))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_a_dead_applier_move_to_another() {
    let mut env = bench_env(5_000, 2).await;
    let task = env
        .run_task(&bench_task(&env, "failover", true, true, 1_000))
        .await
        .unwrap();
    let status = env
        .wait_streaming(&task, Duration::from_secs(120))
        .await
        .unwrap();
    let owner = status.tables[0].worker_id.clone();
    let index = env
        .appliers
        .iter()
        .position(|a| a.name == owner)
        .unwrap_or_else(|| panic!("owner {owner:?}"));
    let survivor = env.appliers[1 - index].name.clone();
    env.appliers[index].kill();

    let stop = CancellationToken::new();
    let driver = drive_bench_changes(
        &env.standin,
        5_000,
        150,
        20,
        Duration::from_millis(20),
        stop.clone(),
    );
    let moved = wait_for(
        "the table to move to the surviving applier",
        Duration::from_secs(60),
        || async {
            let status = env.status(&task).await?;
            let moved = status.tables.iter().all(|t| t.worker_id == survivor);
            Ok(if moved {
                Ok(())
            } else {
                Err(describe_tables(&status))
            })
        },
    );
    let (changes, moved) = tokio::join!(driver, moved);
    moved.unwrap();
    assert!(changes.unwrap() > 0);
    env.wait_equal(&bench_table(), Duration::from_secs(120))
        .await
        .unwrap();
}

/// Changes both tables of the customers/orders group every 20 ms until stopped; returns how
/// many statements ran.
async fn change_customers_and_orders(
    standin: &StandIn,
    seed: u64,
    stop: CancellationToken,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0;
    while !stop.is_cancelled() {
        let order = 1000 + rng.random_range(0..3300);
        let customer = 1 + rng.random_range(0..100);
        let sql = match n % 4 {
            0 => format!(
                "UPDATE sales.orders SET total = total + 1, status = 'paid' WHERE order_id = {order}"
            ),
            1 => format!(
                "UPDATE sales.customers SET loyalty_points = loyalty_points + 1 WHERE customer_id = {customer}"
            ),
            2 => format!(
                "INSERT INTO sales.orders (customer_id, order_date, ordered_at, status, total) \
                 VALUES ({customer}, '2026-03-01', '2026-03-01T08:00:00+00:00', 'new', {n}.5)"
            ),
            _ => format!("DELETE FROM sales.orders WHERE order_id = {order}"),
        };
        standin.run("shop", &sql).unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

/// Retention overrun under crashes: change data of `sales.orders` is cleaned up while the
/// applier is down, so orders is re-snapshotted while customers keeps streaming; during the
/// reload and the side stream that follows it, both tables change and apply, capture and the
/// coordinator are killed at seeded points. Each restart resumes the re-snapshot from its
/// record (the reload at its first unfinished chunk, the side stream at its checkpoint); the
/// target must end equal to the source row by row and the record must be gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_during_a_resnapshot_lose_and_repeat_nothing() {
    let mut rng = StdRng::seed_from_u64(seed());
    let mut env = TestEnv::start_with_sample(Some(300)).await.unwrap();
    let task = env
        .run_until_streaming(
            &customers_and_orders_task(&env, "crash-resnapshot", 600),
            Duration::from_secs(180),
        )
        .await
        .unwrap();
    overrun_orders_retention(&mut env, 3000, &[]).await.unwrap();
    env.wait_table_phase(
        &task,
        "orders",
        pb::TablePhase::Resnapshot,
        Duration::from_secs(60),
    )
    .await
    .unwrap();

    let stop = CancellationToken::new();
    let schedule = [
        Victim::Apply,
        Victim::Apply,
        Victim::Capture,
        Victim::Apply,
        Victim::Coordinator,
        Victim::Apply,
    ];
    let changer_seed = rng.random();
    let (standin, mut victims) = Victims::of(&mut env);
    let changer = change_customers_and_orders(standin, changer_seed, stop.clone());
    let crashes = async {
        victims.crash_in_turn(&mut rng, &schedule).await;
        stop.cancel();
    };
    let (changes, ()) = tokio::join!(changer, crashes);
    assert!(changes > 50, "only {changes} changes during the crashes");
    let mappings = env.task_mappings(&task).await.unwrap();
    env.wait_equal(&mappings, Duration::from_secs(180))
        .await
        .unwrap();
    env.wait_streaming(&task, Duration::from_secs(60))
        .await
        .unwrap();
    let records = env.resnapshot_records().await.unwrap();
    assert_eq!(records, 0, "the re-snapshot never finished");
}
