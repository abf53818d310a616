//! The engine through the TDS server with tiberius: result types are exactly what tiberius
//! decodes strictly (int vs bigint, decimal scale, strings), errors keep their numbers, and
//! sp_executesql parameters drive key-range queries.

mod wire_support;

use std::net::SocketAddr;
use std::sync::Arc;

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use futures_util::TryStreamExt;
use tiberius::numeric::Numeric;
use wire_support::*;

async fn start() -> (ServerHandle, TestClient) {
    let engine_config = EngineConfig::default();
    let password = engine_config.sa_password.clone();
    let engine = Engine::new(engine_config);
    engine
        .run("master", "CREATE DATABASE typed; USE typed; CREATE TABLE dbo.t (id bigint NOT NULL PRIMARY KEY, qty int NULL, price decimal(12,3) NULL, name nvarchar(40) NULL, code varchar(5) NULL, at datetime2(3) NULL)")
        .expect("schema");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(addr, Arc::new(engine))
        .await
        .expect("server starts");
    let mut cfg = config(server.addr, &password);
    cfg.database("typed");
    let client = connect_with(server.addr, cfg).await.expect("login");
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_types_decode_strictly_in_tiberius() {
    let (_server, mut c) = start().await;
    c.execute(
        "INSERT INTO dbo.t (id, qty, price, name, code, at) VALUES (@P1, @P2, @P3, @P4, @P5, '2024-01-02T03:04:05.678')",
        &[&1i64, &5i32, &Numeric::new_with_scale(12345, 3), &"Zoë", &"ab"],
    )
    .await
    .unwrap();
    c.execute("INSERT INTO dbo.t (id, qty) VALUES (2, 7), (3, NULL)", &[])
        .await
        .unwrap();
    let rows: Vec<tiberius::Row> = c
        .query(
            "SELECT COUNT(*) AS n, COUNT_BIG(*) AS nb, SUM(qty) AS s, SUM(id) AS sb, MAX(price) AS p, MAX(name) AS nm, MIN(code) AS cd, AVG(price) AS av FROM dbo.t",
            &[],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let r = &rows[0];
    assert_eq!(r.get::<i32, _>("n"), Some(3));
    assert_eq!(r.get::<i64, _>("nb"), Some(3));
    assert_eq!(r.get::<i32, _>("s"), Some(12));
    assert_eq!(r.get::<i64, _>("sb"), Some(6));
    assert_eq!(
        r.get::<Numeric, _>("p"),
        Some(Numeric::new_with_scale(12345, 3))
    );
    assert_eq!(r.get::<&str, _>("nm"), Some("Zoë"));
    assert_eq!(r.get::<&str, _>("cd"), Some("ab"));
    assert_eq!(
        r.get::<Numeric, _>("av").map(|n| n.scale()),
        Some(6),
        "AVG(decimal(12,3)) is decimal(38,6)"
    );
    let rows: Vec<tiberius::Row> = c
        .query("SELECT CONVERT(varchar(30), at, 126) AS iso, DATEDIFF_BIG(millisecond, '2024-01-01', at) AS ms FROM dbo.t WHERE id = 1", &[])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(
        rows[0].get::<&str, _>("iso"),
        Some("2024-01-02T03:04:05.678")
    );
    assert_eq!(rows[0].get::<i64, _>("ms"), Some(97_445_678));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_parameterized_key_ranges() {
    let (_server, mut c) = start().await;
    let mut sql = String::from("INSERT INTO dbo.t (id) VALUES ");
    sql.push_str(
        &(1..=100)
            .map(|i| format!("({i})"))
            .collect::<Vec<_>>()
            .join(","),
    );
    c.execute(sql, &[]).await.unwrap();
    let err = c
        .execute("INSERT INTO dbo.t (id) VALUES (1)", &[])
        .await
        .unwrap_err();
    match err {
        tiberius::error::Error::Server(e) => assert_eq!(e.code(), 2627),
        other => panic!("{other}"),
    }
    let err = c.simple_query("SELECT * FROM dbo.nope").await.unwrap_err();
    assert!(
        matches!(err, tiberius::error::Error::Server(ref e) if e.code() == 208),
        "{err}"
    );
    let ids: Vec<i64> = c
        .query("SELECT TOP (@P1) id FROM dbo.t WHERE id > CAST(@P2 AS bigint) AND id <= CAST(@P3 AS bigint) ORDER BY id", &[&5i32, &10i64, &90i64])
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64, _>(0).unwrap())
        .collect();
    assert_eq!(ids, vec![11, 12, 13, 14, 15]);
    let mut stream = c
        .query(
            "SELECT id FROM dbo.t ORDER BY id OFFSET 98 ROWS FETCH NEXT 5 ROWS ONLY",
            &[],
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(item) = stream.try_next().await.unwrap() {
        if let tiberius::QueryItem::Row(r) = item {
            got.push(r.get::<i64, _>(0).unwrap());
        }
    }
    assert_eq!(got, vec![99, 100]);
}
