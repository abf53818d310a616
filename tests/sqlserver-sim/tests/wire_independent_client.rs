//! A second, independent TDS client (pymssql, which bundles FreeTDS) against the server:
//! catches places where the stand-in only works because tiberius is lenient.
//!
//! Skips with a message when python3 or pip is not installed; installs pymssql with pip when
//! it is missing (a failing install fails the test).

mod wire_support;

use chrono::{Datelike, NaiveDate};
use dbsync_sqlserver_sim::api::{RpcProc, SqlError, StatementKind};
use dbsync_sqlserver_sim::types::{SqlType, Value};
use wire_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymssql_reads_results_errors_and_sends_rpcs() {
    if !pymssql_ready() {
        return;
    }
    let (server, canned) = start().await;
    let latin = |len| SqlType::NVarChar {
        len,
        collation: LATIN1,
    };
    let columns = vec![
        col("id", SqlType::Int, true),
        col("name", latin(None), true),
        col(
            "amount",
            SqlType::Decimal {
                precision: 10,
                scale: 2,
                numeric: false,
            },
            true,
        ),
        col("at", SqlType::DateTime2 { scale: 7 }, true),
        col("blob", SqlType::VarBinary { len: Some(10) }, true),
        col("flag", SqlType::Bit, true),
        col("ratio", SqlType::Float, true),
        col("guid", SqlType::UniqueIdentifier, true),
        col("nothing", SqlType::Int, true),
    ];
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let first = vec![
        Value::Int(i32::MAX),
        s("Grüße 😀"),
        Value::Decimal(-1_234_567, 2),
        Value::DateTime2 {
            days: date.num_days_from_ce() - 1,
            ticks: 86_399 * 10_000_000 + 1_234_560,
        },
        b(&[0, 1, 0xff]),
        Value::Bit(true),
        Value::Float(0.25),
        Value::Guid([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]),
        Value::Null,
    ];
    let mut nulls = vec![Value::Null; 9];
    nulls[0] = Value::Int(2);
    let mut long = vec![Value::Null; 9];
    long[0] = Value::Int(3);
    long[1] = s(&"x".repeat(5000));
    canned.on(
        "SELECT canned",
        result_set(columns, vec![first, nulls, long]),
    );
    canned.on("SELECT two", |sink| {
        sink.columns(&[col("a", SqlType::Int, false)])?;
        sink.row(&[Value::Int(1)])?;
        sink.done(StatementKind::Select, Some(1), false)?;
        sink.columns(&[col(
            "b",
            SqlType::VarChar {
                len: Some(5),
                collation: LATIN1,
            },
            false,
        )])?;
        sink.row(&[s("b")])?;
        sink.done(StatementKind::Select, Some(1), false)
    });
    canned.on("SELECT then fail", |sink| {
        sink.columns(&[col("x", SqlType::Int, false)])?;
        sink.row(&[Value::Int(1)])?;
        sink.error(&SqlError::new(
            8134,
            16,
            1,
            "Divide by zero error encountered.",
        ))?;
        sink.done(StatementKind::Select, None, false)
    });
    canned.on("dbo.p", |sink| sink.return_status(0));

    run_pymssql_check("canned", server.addr.port(), USER, PASSWORD, DATABASE).await;

    let recorded = canned.recorded.lock();
    let (proc, params) = recorded.rpcs.last().expect("the RPC arrived");
    assert_eq!(proc, &RpcProc::Name("dbo.p".into()));
    let values: Vec<_> = params.iter().map(|p| p.value.clone()).collect();
    assert_eq!(values.len(), 3, "{params:?}");
    assert!(
        matches!(
            values[0],
            Value::Int(7) | Value::BigInt(7) | Value::TinyInt(7)
        ),
        "{params:?}"
    );
    assert_eq!(values[1], s("ü text"), "{params:?}");
    assert!(
        matches!(values[2], Value::Decimal(v, sc) if v == 15 * 10i128.pow(sc as u32) / 10),
        "{params:?}"
    );
    assert!(recorded
        .logins
        .iter()
        .any(|l| l.password == "wrong password"));
}
