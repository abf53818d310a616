//! `dbsync verify` against the real services: stand-in → capture → apply → PostgreSQL, driven
//! by a real coordinator, with one row corrupted on the target.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dbsync_cli::{follow_verify, render, run_with_output, Cli};
use dbsync_proto::v1 as pb;
use dbsync_testkit::{EnvOptions, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_streams_progress_for_every_table_before_the_report() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(80),
        ..Default::default()
    })
    .await
    .unwrap();
    let task = env
        .run_task(&env.sample_task("cli-verify", true, false))
        .await
        .unwrap();
    env.wait_task_state(&task, pb::TaskState::Completed, Duration::from_secs(180))
        .await
        .unwrap();
    let order: i64 = {
        let pg = env.target().await.unwrap();
        let order: i64 = pg
            .query_one("SELECT min(order_id) FROM sales.orders", &[])
            .await
            .unwrap()
            .get(0);
        pg.batch_execute(&format!("SET session_replication_role = replica; DELETE FROM sales.orders WHERE order_id = {order}"))
            .await
            .unwrap();
        order
    };

    let url = env.coordinator.url();
    let mut client = dbsync_cli::connect(&url, None).await.unwrap();
    let request = pb::VerifyTaskRequest {
        task_id: task.clone(),
        mode: "full".into(),
        ..Default::default()
    };
    let mut events: Vec<pb::VerifyTableProgress> = Vec::new();
    let report = follow_verify(&mut client, request.clone(), |p| events.push(p.clone()))
        .await
        .unwrap();

    assert!(!report.equal);
    assert!(report.tables.len() > 5, "{report:?}");
    // Tables are verified one after the other: each has its own run of events, in order,
    // from counting to done, and the done event carries the table's result.
    let mut next_table = 0;
    let mut last_seen = None;
    for e in &events {
        if last_seen != Some(e.table_index) {
            assert_eq!(e.table_index, next_table, "tables in order, each once");
            assert_eq!(e.phase, "counting", "{e:?}");
            next_table += 1;
            last_seen = Some(e.table_index);
        }
        assert_eq!(e.tables_total as usize, report.tables.len());
    }
    assert_eq!(
        next_table as usize,
        report.tables.len(),
        "progress for every table"
    );
    for (i, t) in report.tables.iter().enumerate() {
        let of_table: Vec<&pb::VerifyTableProgress> = events
            .iter()
            .filter(|e| e.table_index as usize == i)
            .collect();
        let name = t
            .source
            .as_ref()
            .map(|r| format!("{}.{}.{}", r.database, r.schema, r.name))
            .unwrap();
        assert!(
            of_table.iter().all(|e| e.table == name),
            "{name}: {of_table:?}"
        );
        let done = of_table.last().unwrap();
        assert_eq!(done.phase, "done", "{name}: {of_table:?}");
        assert_eq!(done.rows_verified, t.rows_compared, "{name}");
        assert_eq!(done.mismatches, t.differences.len() as u64, "{name}");
        let sums: Vec<&&pb::VerifyTableProgress> = of_table
            .iter()
            .filter(|e| e.phase == "checksumming")
            .collect();
        assert!(
            sums.windows(2)
                .all(|w| w[0].rows_verified <= w[1].rows_verified
                    && w[0].chunks_done <= w[1].chunks_done),
            "{name}: {sums:?}"
        );
        if t.rows_compared > 0 {
            let last = sums.last().unwrap();
            assert_eq!(
                (last.chunks_done, last.rows_verified),
                (last.chunks_total, t.rows_compared),
                "{name}: {sums:?}"
            );
            assert!(
                last.rows_total > 0,
                "{name}: the source's estimate is known"
            );
        }
    }
    let orders = report
        .tables
        .iter()
        .position(|t| t.source.as_ref().is_some_and(|r| r.name == "orders"))
        .expect("orders verified");
    assert_eq!(report.tables[orders].differences.len(), 1);
    assert_eq!(
        report.tables[orders].differences[0].key,
        format!("order_id={order}")
    );
    assert!(events
        .iter()
        .any(|e| e.table_index as usize == orders && e.phase == "narrowing"));

    // The report is the unary rpc's, and `dbsync verify --json` prints it and exits 1.
    let normalized = |mut r: pb::VerifyReport| {
        r.seconds = 0.0;
        r
    };
    let unary = client.verify_task(request).await.unwrap().into_inner();
    assert_eq!(normalized(unary), normalized(report.clone()));
    let mut out = Vec::new();
    let cli =
        Cli::try_parse_from(["dbsync", "--coordinator", &url, "verify", &task, "--json"]).unwrap();
    assert_eq!(
        run_with_output(cli, &mut out).await.unwrap(),
        ExitCode::from(1)
    );
    let mut printed: serde_json::Value =
        serde_json::from_slice(&out).expect("stdout is one JSON document");
    let mut expected = render::verify_json(&report);
    printed["seconds"] = 0.into();
    expected["seconds"] = 0.into();
    assert_eq!(printed, expected);

    // Text output: the table, then the verdict.
    let mut out = Vec::new();
    let cli = Cli::try_parse_from([
        "dbsync",
        "--coordinator",
        &url,
        "verify",
        &task,
        "--table",
        "shop.sales.orders",
    ])
    .unwrap();
    assert_eq!(
        run_with_output(cli, &mut out).await.unwrap(),
        ExitCode::from(1)
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(&format!("missing order_id={order}"))
            && text.contains("source and target DIFFER"),
        "{text}"
    );
}
