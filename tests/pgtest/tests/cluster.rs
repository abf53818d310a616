use std::path::Path;
use std::time::{Duration, Instant};

use dbsync_pgtest::PgCluster;

fn process_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn started_cluster_answers_queries() {
    let cluster = PgCluster::start().unwrap();
    let client = cluster.connect("postgres").await.unwrap();
    let row = client
        .query_one(
            "SELECT current_user::text, current_setting('port')::int, current_setting('fsync')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), cluster.superuser());
    assert_eq!(row.get::<_, i32>(1), i32::from(cluster.port()));
    assert_eq!(row.get::<_, String>(2), "off");
    let max: String = client
        .query_one("SHOW max_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, "200");
}

#[tokio::test]
async fn two_clusters_run_side_by_side() {
    let a = PgCluster::start().unwrap();
    let b = PgCluster::start().unwrap();
    assert_ne!(a.port(), b.port());
    let ca = a.connect("postgres").await.unwrap();
    let cb = b.connect("postgres").await.unwrap();
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    assert!(cb.batch_execute("SELECT * FROM only_in_a").await.is_err());
    ca.batch_execute("SELECT * FROM only_in_a").await.unwrap();
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_its_directory() {
    let cluster = PgCluster::start().unwrap();
    let pid = cluster.postmaster_pid().unwrap();
    let root = cluster.root_dir().to_path_buf();
    let port = cluster.port();
    let client = cluster.connect("postgres").await.unwrap();
    assert!(process_alive(pid));
    drop(cluster);
    assert!(!process_alive(pid), "postmaster {pid} still running");
    assert!(!Path::new(&root).exists(), "{root:?} not removed");
    assert!(client.simple_query("SELECT 1").await.is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test]
async fn create_database_and_connect_to_it() {
    let cluster = PgCluster::shared();
    cluster.create_database("Mixed Case-db").await.unwrap();
    let client = cluster.connect("Mixed Case-db").await.unwrap();
    let name: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Mixed Case-db");
}

#[tokio::test]
async fn fresh_databases_are_distinct() {
    let cluster = PgCluster::shared();
    let a = cluster.fresh_database("t").await.unwrap();
    let b = cluster.fresh_database("t").await.unwrap();
    assert_ne!(a, b);
    cluster
        .connect(&a)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE x (i int)")
        .await
        .unwrap();
    cluster
        .connect(&b)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE x (i int)")
        .await
        .unwrap();
}

#[tokio::test]
async fn password_role_needs_its_password() {
    let cluster = PgCluster::shared();
    cluster
        .create_password_role("app_user", "s3cret'pw")
        .await
        .unwrap();
    let good = cluster.connection_string_with_password("postgres", "app_user", "s3cret'pw");
    let (client, connection) = tokio_postgres::connect(&good, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "app_user");
    let admin = cluster.connect("postgres").await.unwrap();
    let stored: String = admin
        .query_one(
            "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'app_user'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "SCRAM-SHA-256");

    let bad = cluster.connection_string_with_password("postgres", "app_user", "wrong");
    let err = tokio_postgres::connect(&bad, tokio_postgres::NoTls)
        .await
        .err()
        .expect("wrong password must fail");
    let code = err.as_db_error().map(|db| db.code().clone());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err:?}"
    );
}

#[test]
fn clusters_start_quickly_from_the_template() {
    PgCluster::start().unwrap(); // builds the template if needed
    let started = Instant::now();
    let cluster = PgCluster::start().unwrap();
    let elapsed = started.elapsed();
    eprintln!("cluster start took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "start took {elapsed:?}");
    drop(cluster);
}

/// Run as a child process by `postmaster_dies_with_a_killed_test_process`.
#[test]
fn orphan_check_child() {
    if std::env::var_os("DBSYNC_PGTEST_ORPHAN_CHILD").is_none() {
        return;
    }
    let cluster = PgCluster::start().unwrap();
    println!("POSTMASTER_PID {}", cluster.postmaster_pid().unwrap());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn postmaster_dies_with_a_killed_test_process() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "orphan_check_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DBSYNC_PGTEST_ORPHAN_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            // libtest prints "test name ... " without a newline before the test's output.
            let (_, pid) = line.split_once("POSTMASTER_PID ")?;
            Some(pid.trim().parse().unwrap())
        })
        .expect("child printed the postmaster pid");
    assert!(process_alive(pid));
    child.kill().unwrap(); // SIGKILL: no destructors, no atexit
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_alive(pid) {
        assert!(
            Instant::now() < deadline,
            "postmaster {pid} outlived its test process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
