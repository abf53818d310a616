//! Bad input gets a clear error naming the problem, and nothing is written to the target.

use dbsync_testkit::{EnvOptions, TestEnv};

/// Creates and starts a task that must fail; returns the error text of whichever step failed.
async fn failing_task(env: &TestEnv, spec: &str) -> String {
    let info = match env.create_task(spec).await {
        Ok(info) => info,
        Err(status) => return status.message().to_string(),
    };
    match env.start_task(&info.task_id).await {
        Ok(info) => panic!("task started although its input is bad: {info:?}"),
        Err(status) => status.message().to_string(),
    }
}

async fn assert_nothing_written(env: &TestEnv) {
    let pg = env.target().await.unwrap();
    let tables: Vec<String> = pg
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        tables.is_empty(),
        "bad input wrote to the target: {tables:?}"
    );
}

fn tasks_with(env: &TestEnv, name: &str, replace: (&str, &str), extra: &str) -> String {
    let spec = env
        .sample_task(name, true, false)
        .replace(replace.0, replace.1);
    format!("{spec}{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_error_and_writes_nothing() {
    let env = TestEnv::start(EnvOptions {
        sample_rows: Some(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let password = env.standin.password.clone();

    // An unreachable source: a port nobody listens on.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = tasks_with(
        &env,
        "unreachable",
        (
            &format!("port: {}", env.standin.addr.port()),
            &format!("port: {closed_port}"),
        ),
        "",
    );
    let error = failing_task(&env, &spec).await;
    assert!(
        error.contains(&closed_port.to_string()) || error.to_lowercase().contains("connect"),
        "unreachable source: {error}"
    );
    assert!(
        !error.contains(&password),
        "error leaks the password: {error}"
    );

    // A wrong password.
    let spec = tasks_with(
        &env,
        "wrong-password",
        (
            &format!("password: \"{password}\""),
            "password: \"Wr0ng-Passw0rd\"",
        ),
        "",
    );
    let error = failing_task(&env, &spec).await;
    let lower = error.to_lowercase();
    assert!(
        lower.contains("login") || lower.contains("password") || lower.contains("18456"),
        "wrong password: {error}"
    );
    assert!(
        !error.contains("Wr0ng-Passw0rd"),
        "error leaks the password: {error}"
    );

    // A missing target database.
    let spec = tasks_with(
        &env,
        "missing-target",
        (
            &format!("database: {}", env.target_db),
            "database: no_such_database",
        ),
        "",
    );
    let error = failing_task(&env, &spec).await;
    assert!(
        error.contains("no_such_database"),
        "missing target database: {error}"
    );

    // A malformed task file.
    let error = failing_task(&env, "name: broken\nsource: [unclosed\n").await;
    assert!(!error.is_empty(), "malformed task file accepted");
    let error = failing_task(
        &env,
        &format!("{}colour: blue\n", env.sample_task("typo", true, false)),
    )
    .await;
    assert!(error.contains("colour"), "unknown field not named: {error}");

    // A filter that does not parse.
    let spec = env.sample_task_with(
        "bad-filter",
        true,
        false,
        &[],
        "  tables:\n    shop.sales.orders: { where: \"status = = 'paid' AND\" }\n",
        "",
    );
    let error = failing_task(&env, &spec).await;
    assert!(
        error.contains("orders") && error.to_lowercase().contains("where"),
        "bad filter: {error}"
    );

    assert_nothing_written(&env).await;
}
