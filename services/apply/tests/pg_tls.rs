//! TLS to the target: `sslmode` require / verify-ca / verify-full against a real PostgreSQL
//! with `ssl = on` and certificates made in the test (rcgen), and `require` against a server
//! without TLS failing with an error that names sslmode and never the password.
//!
//! One test function: it sets `PGSSLROOTCERT` for its process.

use std::time::{Duration, Instant};

use dbsync_apply::pg::connect_plain;
use dbsync_pgtest::PgCluster;
use dbsync_proto::v1::TargetConnection;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// Writes `text` into `path` as the server's OS user (the owner PostgreSQL insists on for its
/// key): one COPY row per line.
async fn server_write(client: &tokio_postgres::Client, path: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    client
        .batch_execute(&format!(
            "COPY (SELECT unnest(ARRAY[{}])) TO '{path}'",
            lines
                .iter()
                .map(|l| format!("'{l}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await
        .unwrap();
}

fn target(cluster: &PgCluster, user: &str, password: &str, sslmode: &str) -> TargetConnection {
    TargetConnection {
        host: cluster.host().to_string(),
        port: u32::from(cluster.port()),
        user: user.into(),
        password: password.into(),
        database: "postgres".into(),
        sslmode: sslmode.into(),
    }
}

async fn uses_tls(t: &TargetConnection) -> Result<bool, String> {
    let client = connect_plain(t).await.map_err(|e| e.to_string())?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verify_ca_and_verify_full() {
    const PASSWORD: &str = "Tls-Secret-9731";
    // A server without TLS: require fails and says why, without the password.
    let plain = PgCluster::shared();
    plain
        .create_password_role("tls_user", PASSWORD)
        .await
        .unwrap();
    let err = uses_tls(&target(plain, "tls_user", PASSWORD, "require"))
        .await
        .unwrap_err();
    assert!(err.contains("sslmode") && err.contains("require"), "{err}");
    assert!(!err.contains(PASSWORD), "password in error: {err}");
    assert!(!uses_tls(&target(plain, "tls_user", PASSWORD, "prefer"))
        .await
        .unwrap());
    assert!(!uses_tls(&target(plain, "tls_user", PASSWORD, "disable"))
        .await
        .unwrap());

    // A server with TLS on: a certificate for 127.0.0.1 signed by a test CA.
    let cluster = PgCluster::start().unwrap();
    let (ca_pem, issuer) = ca("dbsync pg test CA");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let admin = cluster.connect("postgres").await.unwrap();
    let data: String = admin
        .query_one("SHOW data_directory", &[])
        .await
        .unwrap()
        .get(0);
    server_write(&admin, &format!("{data}/dbsync_test.crt"), &cert.pem()).await;
    server_write(
        &admin,
        &format!("{data}/dbsync_test.key"),
        &key.serialize_pem(),
    )
    .await;
    // PostgreSQL wants its key private; the test runs as root or as the server's user, so it
    // may tighten the mode of the file the server wrote.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        format!("{data}/dbsync_test.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    // ALTER SYSTEM refuses to run in a multi-statement batch (an implicit transaction).
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{data}/dbsync_test.crt'"),
        format!("ALTER SYSTEM SET ssl_key_file = '{data}/dbsync_test.key'"),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    cluster
        .create_password_role("tls_user", PASSWORD)
        .await
        .unwrap();
    let require = target(&cluster, "tls_user", PASSWORD, "require");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match uses_tls(&require).await {
            Ok(true) => break,
            other if Instant::now() >= deadline => {
                let log: String = admin
                    .query_one(&format!("SELECT pg_read_file('{data}/../server.log')"), &[])
                    .await
                    .map(|r| r.get(0))
                    .unwrap_or_default();
                panic!("the server did not start TLS after reload: {other:?}\nserver log:\n{log}");
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(uses_tls(&target(&cluster, "tls_user", PASSWORD, "prefer"))
        .await
        .unwrap());
    assert!(
        !uses_tls(&target(&cluster, "tls_user", PASSWORD, "disable"))
            .await
            .unwrap()
    );

    // verify-* need the CA.
    let err = uses_tls(&target(&cluster, "tls_user", PASSWORD, "verify-full"))
        .await
        .unwrap_err();
    assert!(err.contains("PGSSLROOTCERT"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let right_ca = dir.path().join("ca.pem");
    std::fs::write(&right_ca, &ca_pem).unwrap();
    let (other_ca_pem, _) = ca("some other CA");
    let wrong_ca = dir.path().join("other.pem");
    std::fs::write(&wrong_ca, other_ca_pem).unwrap();

    // Only this test runs in this binary, so changing the environment races with nothing.
    std::env::set_var("PGSSLROOTCERT", &right_ca);
    assert!(
        uses_tls(&target(&cluster, "tls_user", PASSWORD, "verify-full"))
            .await
            .unwrap()
    );
    assert!(
        uses_tls(&target(&cluster, "tls_user", PASSWORD, "verify-ca"))
            .await
            .unwrap()
    );
    // verify-full checks the name: "localhost" is not in the certificate, verify-ca does not care.
    let mut by_name = target(&cluster, "tls_user", PASSWORD, "verify-full");
    by_name.host = "localhost".into();
    let err = uses_tls(&by_name).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    by_name.sslmode = "verify-ca".into();
    assert!(uses_tls(&by_name).await.unwrap());

    std::env::set_var("PGSSLROOTCERT", &wrong_ca);
    let err = uses_tls(&target(&cluster, "tls_user", PASSWORD, "verify-ca"))
        .await
        .unwrap_err();
    assert!(
        err.contains("sslmode verify-ca") && err.contains("PGSSLROOTCERT"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "password in error: {err}");
    std::env::remove_var("PGSSLROOTCERT");
}
