//! Both clients against the real engine (not canned results): tiberius and pymssql/FreeTDS run
//! a query, a parameterized query and transactions through the full stack.

mod wire_support;

use std::net::SocketAddr;
use std::sync::Arc;

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::{Server, ServerHandle};
use dbsync_sqlserver_sim::types::Value;
use futures_util::TryStreamExt;
use tiberius::numeric::Numeric;
use tiberius::ColumnData;
use wire_support::*;

const CHECK_DATABASE: &str = "conformance";

async fn start_engine() -> (ServerHandle, String) {
    let config = EngineConfig::default();
    let password = config.sa_password.clone();
    let engine = Engine::new(config);
    engine
        .run("master", &format!("CREATE DATABASE {CHECK_DATABASE}"))
        .expect("database created");
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(addr, Arc::new(engine))
        .await
        .expect("server starts");
    (server, password)
}

/// The client for the check: against the in-process engine, or against the server named by
/// `MSSQL_TEST_URL` (an ADO connection string, e.g. `server=tcp:host,1433;user=sa;password=…;
/// database=…;encrypt=DANGER_PLAINTEXT`) to confirm the same behaviour on a real SQL Server.
async fn check_client() -> (Option<ServerHandle>, TestClient) {
    if let Ok(url) = std::env::var("MSSQL_TEST_URL") {
        let config = tiberius::Config::from_ado_string(&url)
            .expect("MSSQL_TEST_URL is an ADO connection string");
        let tcp = tokio::net::TcpStream::connect(config.get_addr())
            .await
            .expect("MSSQL_TEST_URL is reachable");
        tcp.set_nodelay(true).unwrap();
        let client = tiberius::Client::connect(
            config,
            tokio_util::compat::TokioAsyncWriteCompatExt::compat_write(tcp),
        )
        .await
        .expect("login to MSSQL_TEST_URL");
        return (None, client);
    }
    let (server, password) = start_engine().await;
    let mut cfg = config(server.addr, &password);
    cfg.database(CHECK_DATABASE);
    let client = connect_with(server.addr, cfg)
        .await
        .expect("login with the engine's sa password");
    (Some(server), client)
}

#[tokio::test]
async fn tiberius_query_parameters_and_transactions_against_the_engine() {
    let (server, mut client) = check_client().await;
    client
        .simple_query("IF OBJECT_ID(N'dbo.items') IS NOT NULL DROP TABLE dbo.items")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client
        .simple_query("CREATE TABLE dbo.items (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, amount decimal(10,2) NULL)")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    for id in 1..=3i32 {
        let result = client
            .execute(
                "INSERT INTO dbo.items (id, name, amount) VALUES (@P1, @P2, @P3)",
                &[
                    &id,
                    &format!("item {id} ü"),
                    &tiberius::numeric::Numeric::new_with_scale(id as i128 * 150, 2),
                ],
            )
            .await
            .unwrap();
        assert_eq!(result.rows_affected(), &[1]);
    }
    let rows = client
        .query(
            "SELECT id, name, amount FROM dbo.items WHERE id >= @P1 ORDER BY id",
            &[&2i32],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get::<i32, _>(0).unwrap(),
                r.get::<&str, _>(1).unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(2, "item 2 ü".to_string()), (3, "item 3 ü".to_string())]
    );

    client.begin_transaction().await.unwrap();
    client
        .execute("UPDATE dbo.items SET name = N'kept' WHERE id = 1", &[])
        .await
        .unwrap();
    client.commit_transaction().await.unwrap();
    client.begin_transaction().await.unwrap();
    client.execute("DELETE FROM dbo.items", &[]).await.unwrap();
    client.rollback_transaction().await.unwrap();
    let mut stream = client
        .simple_query("SELECT name FROM dbo.items ORDER BY id")
        .await
        .unwrap()
        .into_row_stream();
    let mut names = Vec::new();
    while let Some(row) = stream.try_next().await.unwrap() {
        names.push(row.get::<&str, _>(0).unwrap().to_string());
    }
    drop(stream);
    assert_eq!(names, ["kept", "item 2 ü", "item 3 ü"]);

    client
        .simple_query("DROP TABLE dbo.items")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let Some(server) = server else { return };
    let err = connect_with(server.addr, config(server.addr, "not the password"))
        .await
        .map(|_| ())
        .expect_err("wrong password");
    assert!(
        matches!(&err, tiberius::error::Error::Server(e) if e.code() == 18456),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymssql_query_parameters_and_transactions_against_the_engine() {
    if !pymssql_ready() {
        return;
    }
    let (server, password) = start_engine().await;
    run_pymssql_check(
        "engine",
        server.addr.port(),
        USER,
        &password,
        CHECK_DATABASE,
    )
    .await;
}

/// An engine holding the sample database `shop` (every type the stand-in supports, extreme
/// values, LOBs and the CLR/sql_variant table), served over TDS. Returns the engine too, to
/// compare what tiberius decodes with what the engine holds.
async fn start_sample() -> (ServerHandle, String, Engine) {
    let config = EngineConfig::default();
    let password = config.sa_password.clone();
    let engine = Engine::new(config);
    let mut session = engine.system_session("master");
    for batch in dbsync_sqlserver_sim::sample::sample_batches(20) {
        session.run(&batch).expect("sample batch runs");
    }
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(addr, Arc::new(engine.clone()))
        .await
        .expect("server starts");
    (server, password, engine)
}

/// Whether tiberius decoded `data` to exactly the engine's `value`.
fn same_value(value: &Value, data: &ColumnData<'_>) -> bool {
    use ColumnData as C;
    let pow10 = |scale: u8| 10u64.pow(7 - scale as u32);
    match (value, data) {
        (Value::Null, d) => is_null(d),
        (Value::TinyInt(v), C::U8(Some(d))) => v == d,
        (Value::SmallInt(v), C::I16(Some(d))) => v == d,
        (Value::Int(v), C::I32(Some(d))) => v == d,
        (Value::BigInt(v), C::I64(Some(d))) => v == d,
        (Value::Bit(v), C::Bit(Some(d))) => v == d,
        (Value::Real(v), C::F32(Some(d))) => v.to_bits() == d.to_bits(),
        (Value::Float(v), C::F64(Some(d))) => v.to_bits() == d.to_bits(),
        // tiberius turns money into f64 (lossy above 2^53).
        (Value::Money(v), C::F64(Some(d))) => (*v as f64 / 1e4 - d).abs() <= d.abs() * 1e-15,
        (Value::SmallMoney(v), C::F64(Some(d))) => (*v as f64 / 1e4 - d).abs() <= d.abs() * 1e-15,
        (Value::Decimal(v, scale), C::Numeric(Some(d))) => {
            Numeric::new_with_scale(*v, *scale) == *d
        }
        (Value::String(v), C::String(Some(d))) => v.as_ref() == d.as_ref(),
        (Value::String(v), C::Xml(Some(d))) => v.as_ref() == d.as_ref().to_string(),
        (Value::Binary(v), C::Binary(Some(d))) => v.as_ref() == d.as_ref(),
        (Value::Guid(v), C::Guid(Some(d))) => v == d.as_bytes(),
        (Value::Date(v), C::Date(Some(d))) => *v as u32 == d.days(),
        (Value::Time(v), C::Time(Some(d))) => *v == d.increments() * pow10(d.scale()),
        (Value::DateTime { days, ticks }, C::DateTime(Some(d))) => {
            *days == d.days() && *ticks == d.seconds_fragments()
        }
        (Value::SmallDateTime { days, minutes }, C::SmallDateTime(Some(d))) => {
            *days == d.days() && *minutes == d.seconds_fragments()
        }
        (Value::DateTime2 { days, ticks }, C::DateTime2(Some(d))) => {
            *days as u32 == d.date().days()
                && *ticks == d.time().increments() * pow10(d.time().scale())
        }
        (
            Value::DateTimeOffset {
                days,
                ticks,
                offset_minutes,
            },
            C::DateTimeOffset(Some(d)),
        ) => {
            let dt = d.datetime2();
            *days as u32 == dt.date().days()
                && *ticks == dt.time().increments() * pow10(dt.time().scale())
                && *offset_minutes == d.offset()
        }
        _ => false,
    }
}

fn is_null(data: &ColumnData<'_>) -> bool {
    use ColumnData as C;
    matches!(
        data,
        C::U8(None)
            | C::I16(None)
            | C::I32(None)
            | C::I64(None)
            | C::F32(None)
            | C::F64(None)
            | C::Bit(None)
            | C::String(None)
            | C::Guid(None)
            | C::Binary(None)
            | C::Numeric(None)
            | C::Xml(None)
            | C::DateTime(None)
            | C::SmallDateTime(None)
            | C::Time(None)
            | C::Date(None)
            | C::DateTime2(None)
            | C::DateTimeOffset(None)
    )
}

#[tokio::test]
async fn tiberius_reads_every_sample_table() {
    use dbsync_sqlserver_sim::sample::{SAMPLE_DATABASE, SAMPLE_TABLES};
    let (server, password, engine) = start_sample().await;
    let mut cfg = config(server.addr, &password);
    cfg.database(SAMPLE_DATABASE);
    let mut client = connect_with(server.addr, cfg).await.unwrap();
    let (mut compared_tables, mut non_null_cells) = (0, 0);
    for (schema, table) in SAMPLE_TABLES {
        let count = client
            .simple_query(format!("SELECT COUNT_BIG(*) FROM [{schema}].[{table}]"))
            .await
            .unwrap()
            .into_row()
            .await
            .unwrap()
            .unwrap()
            .get::<i64, _>(0)
            .unwrap();
        let rows = client
            .simple_query(format!("SELECT * FROM [{schema}].[{table}]"))
            .await
            .unwrap()
            .into_first_result()
            .await
            .unwrap_or_else(|e| panic!("{schema}.{table}: {e}"));
        assert_eq!(rows.len() as i64, count, "{schema}.{table}");
        assert!(count > 0, "{schema}.{table} has rows");
        // Cell by cell, tiberius decoded exactly what the engine holds.
        compared_tables += 1;
        let held = engine
            .run(
                SAMPLE_DATABASE,
                &format!("SELECT * FROM [{schema}].[{table}]"),
            )
            .unwrap()
            .remove(0);
        assert_eq!(held.rows.len(), rows.len(), "{schema}.{table}");
        for (held_row, row) in held.rows.iter().zip(&rows) {
            for ((value, (column, data)), meta) in
                held_row.iter().zip(row.cells()).zip(&held.columns)
            {
                non_null_cells += usize::from(*value != Value::Null);
                assert!(
                    same_value(value, data),
                    "{schema}.{table}.{} ({:?}): engine {value:?}, tiberius {data:?}",
                    column.name(),
                    meta.ty
                );
            }
        }
        let columns = rows[0].columns().len();
        assert!(
            rows.iter().all(|r| r.cells().count() == columns),
            "{schema}.{table}"
        );
    }
    assert_eq!(compared_tables, SAMPLE_TABLES.len());
    println!("{non_null_cells} non-NULL cells decoded exactly");
    assert!(
        non_null_cells > 1000,
        "only {non_null_cells} cells compared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymssql_reads_every_sample_table() {
    if !pymssql_ready() {
        return;
    }
    let (server, password, _engine) = start_sample().await;
    run_pymssql_check(
        "sample",
        server.addr.port(),
        USER,
        &password,
        dbsync_sqlserver_sim::sample::SAMPLE_DATABASE,
    )
    .await;
}
