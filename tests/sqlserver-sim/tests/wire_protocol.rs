//! Protocol paths through tiberius: login, errors, multi-packet requests and responses,
//! sp_executesql parameter decoding, RPC by name with OUTPUT, transactions, attention,
//! bulk load, disconnects and malformed input.

mod wire_support;

use std::borrow::Cow;

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveTime, TimeZone, Timelike};
use dbsync_sqlserver_sim::api::{RpcProc, StatementKind, TransactionRequest};
use dbsync_sqlserver_sim::types::{SqlType, Value};
use futures_util::TryStreamExt;
use tiberius::numeric::Numeric;
use tiberius::xml::XmlData;
use tiberius::{ColumnData, Command, QueryItem, TokenRow, Uuid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wire_support::*;

#[tokio::test]
async fn login_decodes_credentials_and_wrong_password_gets_18456() {
    let (server, canned) = start().await;
    let client = connect(server.addr).await;
    {
        let recorded = canned.recorded.lock();
        let login = &recorded.logins[0];
        assert_eq!(login.user, USER);
        assert_eq!(login.password, PASSWORD);
        assert_eq!(login.database, DATABASE);
        assert_eq!(login.app_name, "tiberius");
    }
    drop(client);

    let err = connect_with(server.addr, config(server.addr, "wrong"))
        .await
        .map(|_| ())
        .expect_err("login must fail");
    match err {
        tiberius::error::Error::Server(e) => {
            assert_eq!(e.code(), 18456);
            assert_eq!(e.class(), 14);
            assert_eq!(e.state(), 1);
            assert_eq!(e.message(), "Login failed for user 'sa'.");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_before_and_after_rows() {
    let (server, canned) = start().await;
    canned.on("SELECT missing", |sink| {
        sink.error(&dbsync_sqlserver_sim::api::SqlError::new(
            208,
            16,
            1,
            "Invalid object name 'missing'.",
        ))?;
        sink.done(StatementKind::Select, None, false)
    });
    canned.on("SELECT then fail", |sink| {
        sink.columns(&[col("x", SqlType::Int, false)])?;
        sink.row(&[Value::Int(1)])?;
        sink.row(&[Value::Int(2)])?;
        sink.error(&dbsync_sqlserver_sim::api::SqlError::new(
            8134,
            16,
            1,
            "Divide by zero error encountered.",
        ))?;
        sink.done(StatementKind::Select, None, false)
    });
    let mut client = connect(server.addr).await;

    let err = client
        .simple_query("SELECT missing")
        .await
        .map(|_| ())
        .expect_err("error before metadata fails the query");
    assert!(
        matches!(&err, tiberius::error::Error::Server(e) if e.code() == 208),
        "{err:?}"
    );

    let mut stream = client.simple_query("SELECT then fail").await.unwrap();
    let mut values = Vec::new();
    let error = loop {
        match stream.try_next().await {
            Ok(Some(QueryItem::Row(row))) => values.push(row.get::<i32, _>(0).unwrap()),
            Ok(Some(QueryItem::Metadata(_))) => {}
            Ok(None) => panic!("the error was lost"),
            Err(e) => break e,
        }
    };
    drop(stream);
    assert_eq!(values, [1, 2], "rows before the error are delivered");
    assert!(
        matches!(&error, tiberius::error::Error::Server(e) if e.code() == 8134),
        "{error:?}"
    );

    // Same connection, next request.
    canned.on(
        "SELECT ok",
        result_set(
            vec![col("x", SqlType::Int, false)],
            vec![vec![Value::Int(3)]],
        ),
    );
    let row = client
        .simple_query("SELECT ok")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(3));
}

#[tokio::test]
async fn multi_packet_batch_and_parameters_are_reassembled() {
    let (server, canned) = start().await;
    let mut client = connect(server.addr).await;
    let long_batch = format!("SELECT '{}'", "x€😀".repeat(40_000));
    client
        .simple_query(long_batch.as_str())
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(canned.recorded.lock().batches.last().unwrap(), &long_batch);

    let big_text: String = "ÿ😀abc".repeat(50_000);
    let big_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    client
        .execute(
            "UPDATE t SET a = @P1, b = @P2",
            &[&big_text.as_str(), &big_bytes.as_slice()],
        )
        .await
        .unwrap();
    let recorded = canned.recorded.lock();
    let (proc, params) = recorded.rpcs.last().unwrap();
    assert_eq!(proc, &RpcProc::Id(10));
    assert_eq!(
        params[2].ty,
        SqlType::NVarChar {
            len: None,
            collation: params[2].ty_collation()
        }
    );
    assert_eq!(params[2].value, s(&big_text));
    assert_eq!(params[3].ty, SqlType::VarBinary { len: None });
    assert_eq!(params[3].value, b(&big_bytes));
}

trait CollationOf {
    fn ty_collation(&self) -> dbsync_sqlserver_sim::types::Collation;
}

impl CollationOf for dbsync_sqlserver_sim::api::RpcParam {
    fn ty_collation(&self) -> dbsync_sqlserver_sim::types::Collation {
        match &self.ty {
            SqlType::NVarChar { collation, .. } | SqlType::VarChar { collation, .. } => *collation,
            other => panic!("not a string type: {other:?}"),
        }
    }
}

#[tokio::test]
async fn large_results_stream_across_packets_at_the_negotiated_size() {
    let (server, canned) = start().await;
    let rows = 200_000u64;
    canned.on("SELECT many", move |sink| {
        sink.columns(&[
            col("id", SqlType::BigInt, false),
            col(
                "name",
                SqlType::NVarChar {
                    len: Some(50),
                    collation: LATIN1,
                },
                true,
            ),
            col(
                "amount",
                SqlType::Decimal {
                    precision: 18,
                    scale: 2,
                    numeric: false,
                },
                true,
            ),
        ])?;
        let name = s("row name ü");
        for i in 0..rows {
            let amount = if i % 10 == 0 {
                Value::Null
            } else {
                Value::Decimal(i as i128 * 101, 2)
            };
            sink.row(&[Value::BigInt(i as i64), name.clone(), amount])?;
        }
        sink.done(StatementKind::Select, Some(rows), false)
    });
    for packet_size in [4096u32, 32767, 512] {
        let mut config = config(server.addr, PASSWORD);
        config.packet_size(packet_size);
        let mut client = connect_with(server.addr, config).await.unwrap();
        let mut stream = client
            .simple_query("SELECT many")
            .await
            .unwrap()
            .into_row_stream();
        let (mut count, mut id_sum, mut nulls) = (0u64, 0i64, 0u64);
        while let Some(row) = stream.try_next().await.unwrap() {
            id_sum += row.get::<i64, _>(0).unwrap();
            if row.get::<Numeric, _>(2).is_none() {
                nulls += 1;
            }
            count += 1;
        }
        assert_eq!(count, rows, "packet size {packet_size}");
        assert_eq!(id_sum, (rows * (rows - 1) / 2) as i64);
        assert_eq!(nulls, rows / 10);
    }
}

fn days_from_ce(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - 1
}

#[tokio::test]
async fn sp_executesql_parameters_of_every_type_are_decoded() {
    let (server, canned) = start().await;
    let mut client = connect(server.addr).await;
    let guid = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
    let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let time = NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_900).unwrap();
    let datetime = date.and_time(time);
    let offset = FixedOffset::east_opt(2 * 3600).unwrap();
    let dto = offset
        .from_local_datetime(
            &NaiveDate::from_ymd_opt(2024, 1, 1)
                .unwrap()
                .and_hms_opt(1, 30, 0)
                .unwrap(),
        )
        .unwrap();
    let long = "é".repeat(5000);
    let small_bytes = vec![1u8, 2, 3];
    let big_bytes = vec![7u8; 9000];
    let xml = XmlData::new("<r a=\"1\">ü</r>");
    client
        .execute(
            "SELECT params",
            &[
                &1u8,
                &-2i16,
                &i32::MIN,
                &i64::MAX,
                &true,
                &1.5f32,
                &-2.25f64,
                &"short ü😀",
                &long.as_str(),
                &small_bytes,
                &big_bytes,
                &guid,
                &Numeric::new_with_scale(-123_456, 3),
                &date,
                &time,
                &datetime,
                &dto,
                &xml,
                &None::<i32>,
                &None::<&str>,
                &None::<Numeric>,
                &"",
            ],
        )
        .await
        .unwrap();
    let recorded = canned.recorded.lock();
    let (proc, params) = recorded.rpcs.last().unwrap();
    assert_eq!(proc, &RpcProc::Id(10));
    assert_eq!(params[0].name, "stmt");
    assert_eq!(params[0].value, s("SELECT params"));
    assert_eq!(params[1].name, "params");
    let Value::String(declarations) = &params[1].value else {
        panic!("declarations")
    };
    assert!(
        declarations.starts_with("@P1 tinyint,@P2 smallint,@P3 int,@P4 bigint,@P5 bit"),
        "{declarations}"
    );
    let values: Vec<(String, SqlType, Value)> = params[2..]
        .iter()
        .map(|p| (p.name.clone(), p.ty.clone(), p.value.clone()))
        .collect();
    let nvarchar = |len| SqlType::NVarChar {
        len,
        collation: params[9].ty_collation(),
    };
    let expected = vec![
        (SqlType::TinyInt, Value::TinyInt(1)),
        (SqlType::SmallInt, Value::SmallInt(-2)),
        (SqlType::Int, Value::Int(i32::MIN)),
        (SqlType::BigInt, Value::BigInt(i64::MAX)),
        (SqlType::Bit, Value::Bit(true)),
        (SqlType::Real, Value::Real(1.5)),
        (SqlType::Float, Value::Float(-2.25)),
        (nvarchar(Some(4000)), s("short ü😀")),
        (nvarchar(None), s(&long)),
        (SqlType::VarBinary { len: Some(8000) }, b(&small_bytes)),
        (SqlType::VarBinary { len: None }, b(&big_bytes)),
        (SqlType::UniqueIdentifier, Value::Guid(*guid.as_bytes())),
        (
            SqlType::Decimal {
                precision: 6,
                scale: 3,
                numeric: true,
            },
            Value::Decimal(-123_456, 3),
        ),
        (SqlType::Date, Value::Date(days_from_ce(date))),
        (
            SqlType::Time { scale: 7 },
            Value::Time(
                time.num_seconds_from_midnight() as u64 * 10_000_000
                    + time.nanosecond() as u64 / 100,
            ),
        ),
        (
            SqlType::DateTime2 { scale: 7 },
            Value::DateTime2 {
                days: days_from_ce(date),
                ticks: time.num_seconds_from_midnight() as u64 * 10_000_000
                    + time.nanosecond() as u64 / 100,
            },
        ),
        (
            SqlType::DateTimeOffset { scale: 7 },
            // 2024-01-01 01:30 +02:00 is 2023-12-31 23:30 UTC.
            Value::DateTimeOffset {
                days: days_from_ce(NaiveDate::from_ymd_opt(2023, 12, 31).unwrap()),
                ticks: (23 * 3600 + 30 * 60) * 10_000_000,
                offset_minutes: 120,
            },
        ),
        (SqlType::Xml, s("<r a=\"1\">ü</r>")),
        (SqlType::Int, Value::Null),
        (SqlType::Null, Value::Null),
        (SqlType::Null, Value::Null),
        (nvarchar(Some(4000)), s("")),
    ];
    assert_eq!(values.len(), expected.len());
    for (i, ((name, ty, value), (want_ty, want_value))) in values.iter().zip(&expected).enumerate()
    {
        assert_eq!(name, &format!("@P{}", i + 1));
        assert_eq!((ty, value), (want_ty, want_value), "@P{}", i + 1);
    }
}

#[tokio::test]
async fn execute_counts_and_rpc_by_name_with_output_parameters() {
    let (server, canned) = start().await;
    canned.on("UPDATE three", |sink| {
        sink.done(StatementKind::Update, Some(3), true)
    });
    canned.on("dbo.p", |sink| {
        sink.columns(&[col("v", SqlType::Int, false)])?;
        sink.row(&[Value::Int(5)])?;
        sink.done(StatementKind::Select, Some(1), true)?;
        sink.return_status(7)?;
        sink.return_value(
            1,
            "@out",
            &SqlType::NVarChar {
                len: Some(20),
                collation: LATIN1,
            },
            &s("out ü"),
        )
    });
    let mut client = connect(server.addr).await;
    let result = client.execute("UPDATE three", &[]).await.unwrap();
    assert_eq!(result.rows_affected(), &[3]);

    let mut command = Command::new("dbo.p");
    command.bind_param("@in", 1i32);
    command.bind_out_param("@out", "");
    let result = command
        .exec(&mut client)
        .await
        .unwrap()
        .into_command_result()
        .await
        .unwrap();
    assert_eq!(result.return_code(), 7);
    assert_eq!(
        result.try_return_value::<&str>("@out").unwrap(),
        Some("out ü")
    );
    assert_eq!(
        result.to_query_result(0).unwrap()[0].get::<i32, _>(0),
        Some(5)
    );
    let recorded = canned.recorded.lock();
    let (proc, params) = recorded.rpcs.last().unwrap();
    assert_eq!(proc, &RpcProc::Name("dbo.p".into()));
    assert_eq!(
        (params[0].name.as_str(), &params[0].value, params[0].output),
        ("@in", &Value::Int(1), false)
    );
    assert_eq!((params[1].name.as_str(), params[1].output), ("@out", true));
}

#[tokio::test]
async fn transaction_manager_requests_and_descriptor_echo() {
    let (server, canned) = start().await;
    let mut client = connect(server.addr).await;
    client.begin_transaction().await.unwrap();
    client
        .simple_query("SELECT in tx")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client.commit_transaction().await.unwrap();
    client
        .simple_query("SELECT after commit")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client.begin_transaction().await.unwrap();
    client.execute("UPDATE in second tx", &[]).await.unwrap();
    client.rollback_transaction().await.unwrap();
    client
        .simple_query("SELECT after rollback")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();

    let recorded = canned.recorded.lock();
    let kinds: Vec<_> = recorded
        .transactions
        .iter()
        .map(|(r, _)| match r {
            TransactionRequest::Begin { .. } => "begin",
            TransactionRequest::Commit { .. } => "commit",
            TransactionRequest::Rollback { .. } => "rollback",
            TransactionRequest::Save { .. } => "save",
        })
        .collect();
    assert_eq!(kinds, ["begin", "commit", "begin", "rollback"]);
    // begin(0) select(1) commit(1) select(0) begin(0) execute(2) rollback(2) select(0)
    assert_eq!(recorded.descriptors, [0, 1, 1, 0, 0, 2, 2, 0]);
}

#[tokio::test]
async fn attention_cancels_a_running_query_and_the_connection_stays_usable() {
    let (server, canned) = start().await;
    canned.on("SELECT endless", endless(&canned));
    canned.on(
        "SELECT 1",
        result_set(
            vec![col("", SqlType::Int, false)],
            vec![vec![Value::Int(1)]],
        ),
    );
    let mut client = connect(server.addr).await;
    {
        let mut stream = client
            .simple_query("SELECT endless")
            .await
            .unwrap()
            .into_row_stream();
        for _ in 0..1000 {
            stream.try_next().await.unwrap().unwrap();
        }
    }
    client.cancel_query().await.unwrap();
    eventually("the engine saw the cancel", || {
        canned.recorded.lock().cancelled_after_rows.len() == 1
    })
    .await;
    assert!(canned.recorded.lock().cancelled_after_rows[0] >= 1000);
    let row = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(1));

    // An attention that arrives after the response completed is acknowledged too.
    client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    client.cancel_query().await.unwrap();
    let row = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(1));
}

#[tokio::test]
async fn client_disconnect_mid_result_ends_the_session_not_the_server() {
    let (server, canned) = start().await;
    canned.on("SELECT endless", endless(&canned));
    let mut client = connect(server.addr).await;
    client.begin_transaction().await.unwrap();
    {
        let mut stream = client
            .simple_query("SELECT endless")
            .await
            .unwrap()
            .into_row_stream();
        for _ in 0..100 {
            stream.try_next().await.unwrap().unwrap();
        }
    }
    drop(client);
    eventually("the session was disconnected", || {
        canned.recorded.lock().disconnects == 1
    })
    .await;
    assert_eq!(canned.recorded.lock().cancelled_after_rows.len(), 1);

    canned.on(
        "SELECT 1",
        result_set(
            vec![col("", SqlType::Int, false)],
            vec![vec![Value::Int(1)]],
        ),
    );
    let mut client = connect(server.addr).await;
    let row = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(1));
}

#[tokio::test]
async fn malformed_packets_close_only_that_connection() {
    let (server, canned) = start().await;
    // A header whose length is shorter than the header itself.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&[0x12, 0x01, 0x00, 0x03, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        raw.read(&mut buf).await.unwrap(),
        0,
        "the server closes the connection"
    );

    // Garbage after a good login: an RPC whose parameter type byte is unknown.
    let mut client = connect(server.addr).await;
    canned.on(
        "SELECT 1",
        result_set(
            vec![col("", SqlType::Int, false)],
            vec![vec![Value::Int(1)]],
        ),
    );
    client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&[0x01, 0x01, 0x00, 0x0A, 0, 0, 1, 0, 0xDE, 0xAD])
        .await
        .unwrap();
    assert_eq!(
        raw.read(&mut buf).await.unwrap(),
        0,
        "a batch before login closes the connection"
    );

    let row = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.get::<i32, _>(0),
        Some(1),
        "other connections are unaffected"
    );
}

#[tokio::test]
async fn bulk_insert_rows_are_decoded() {
    let (server, canned) = start().await;
    let updateable = |name: &str, ty: SqlType, nullable: bool| {
        let mut c = col(name, ty, nullable);
        c.updateable = true;
        c
    };
    let mut id = col("id", SqlType::Int, false);
    id.identity = true;
    let columns = vec![
        id,
        updateable("code", SqlType::Int, false),
        updateable(
            "name",
            SqlType::NVarChar {
                len: Some(50),
                collation: LATIN1,
            },
            true,
        ),
        updateable(
            "amount",
            SqlType::Decimal {
                precision: 10,
                scale: 2,
                numeric: false,
            },
            true,
        ),
        updateable("at", SqlType::DateTime2 { scale: 7 }, true),
        updateable("blob", SqlType::VarBinary { len: None }, true),
        updateable(
            "latin",
            SqlType::VarChar {
                len: Some(20),
                collation: LATIN1,
            },
            true,
        ),
        updateable("flag", SqlType::Bit, true),
    ];
    canned.on(
        "SELECT TOP 0 * FROM dbo.bulk_t",
        result_set(columns, vec![]),
    );
    let mut client = connect(server.addr).await;
    let mut request = client.bulk_insert("dbo.bulk_t").await.unwrap();
    let at = NaiveDate::from_ymd_opt(2024, 5, 6)
        .unwrap()
        .and_hms_opt(7, 8, 9)
        .unwrap();
    for i in 0..3 {
        let mut row = TokenRow::new();
        row.push(ColumnData::I32(Some(i)));
        row.push(ColumnData::String(Some(Cow::Owned(format!("name {i} ü")))));
        row.push(ColumnData::Numeric(if i == 1 {
            None
        } else {
            Some(Numeric::new_with_scale(12_345, 2))
        }));
        row.push(tiberius::IntoSql::into_sql(at));
        row.push(ColumnData::Binary(Some(Cow::Owned(vec![i as u8; 10]))));
        row.push(ColumnData::String(Some(Cow::Borrowed("café"))));
        row.push(ColumnData::Bit(Some(i % 2 == 0)));
        request.send(row).await.unwrap();
    }
    let result = request.finalize().await.unwrap();
    assert_eq!(result.total(), 3);

    let recorded = canned.recorded.lock();
    assert!(
        recorded
            .batches
            .iter()
            .any(|b| b.starts_with("INSERT BULK dbo.bulk_t")),
        "{:?}",
        recorded.batches
    );
    let (bulk_columns, rows) = &recorded.bulk[0];
    let names: Vec<_> = bulk_columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["code", "name", "amount", "at", "blob", "latin", "flag"],
        "identity column is skipped"
    );
    assert_eq!(rows.len(), 3);
    let at_ticks = (7 * 3600 + 8 * 60 + 9) * 10_000_000u64;
    assert_eq!(
        rows[1],
        vec![
            Value::Int(1),
            s("name 1 ü"),
            Value::Null,
            Value::DateTime2 {
                days: days_from_ce(at.date()),
                ticks: at_ticks
            },
            b(&[1; 10]),
            s("café"),
            Value::Bit(false),
        ]
    );
    assert_eq!(rows[0][2], Value::Decimal(12_345, 2));
}

#[tokio::test]
async fn environment_changes_and_info_messages_are_accepted() {
    let (server, canned) = start().await;
    canned.on("USE other", |sink| {
        sink.env_change(&dbsync_sqlserver_sim::api::EnvChange::Database {
            new: "other".into(),
            old: DATABASE.into(),
        })?;
        sink.info(5701, "Changed database context to 'other'.")?;
        sink.done(StatementKind::Other, None, false)
    });
    canned.on("PRINT then select", |sink| {
        sink.info(0, "hello from PRINT")?;
        sink.columns(&[col("x", SqlType::Int, false)])?;
        sink.row(&[Value::Int(9)])?;
        sink.done(StatementKind::Select, Some(1), false)
    });
    let mut client = connect(server.addr).await;
    client
        .simple_query("USE other")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let row = client
        .simple_query("PRINT then select")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(9));
}

#[tokio::test]
async fn multiple_result_sets_in_one_batch() {
    let (server, canned) = start().await;
    canned.on("two selects", |sink| {
        sink.columns(&[col("a", SqlType::Int, false)])?;
        sink.row(&[Value::Int(1)])?;
        sink.done(StatementKind::Select, Some(1), false)?;
        sink.done(StatementKind::Insert, Some(4), false)?;
        sink.columns(&[col(
            "b",
            SqlType::NVarChar {
                len: Some(5),
                collation: LATIN1,
            },
            true,
        )])?;
        sink.row(&[s("x")])?;
        sink.row(&[Value::Null])?;
        sink.done(StatementKind::Select, Some(2), false)
    });
    let mut client = connect(server.addr).await;
    let results = client
        .simple_query("two selects")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0][0].get::<i32, _>(0), Some(1));
    assert_eq!(results[1].len(), 2);
    assert_eq!(results[1][1].get::<&str, _>(0), None);
    let counts = client.execute("two selects", &[]).await.unwrap();
    assert_eq!(counts.rows_affected(), &[1, 4, 2]);
}

#[tokio::test]
async fn a_client_that_stops_reading_stops_the_engine_bounded_memory() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let (server, canned) = start().await;
    let produced = Arc::new(AtomicU64::new(0));
    let total = 600_000u64;
    let counter = produced.clone();
    canned.on("SELECT huge", move |sink| {
        sink.columns(&[
            col("n", SqlType::BigInt, false),
            col(
                "pad",
                SqlType::NVarChar {
                    len: Some(40),
                    collation: LATIN1,
                },
                false,
            ),
        ])?;
        let pad = s("0123456789012345678901234567890123456789");
        for n in 0..total {
            sink.row(&[Value::BigInt(n as i64), pad.clone()])?;
            counter.store(n + 1, Ordering::Relaxed);
        }
        sink.done(StatementKind::Select, Some(total), false)
    });
    let mut client = connect(server.addr).await;
    let mut stream = client
        .simple_query("SELECT huge")
        .await
        .unwrap()
        .into_row_stream();
    for _ in 0..10 {
        stream.try_next().await.unwrap().unwrap();
    }
    // The client stops reading: the engine must stall once the socket buffers and the small
    // server-side queue are full, long before the 600k rows (~60 MB on the wire) are produced.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = produced.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = produced.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never stalled ({now} rows produced)"
        );
        last = now;
    }
    println!("engine stalled after {last} rows");
    assert!(
        last < total / 4,
        "the engine ran ahead of the client by {last} rows"
    );
    // Reading resumes: everything arrives.
    let mut count = 10u64;
    while stream.try_next().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, total);
}

#[tokio::test]
async fn disconnect_all_closes_sessions_like_a_network_failure_and_keeps_listening() {
    let (server, canned) = start().await;
    canned.on("SELECT endless", endless(&canned));
    canned.on(
        "SELECT 1",
        result_set(
            vec![col("", SqlType::Int, false)],
            vec![vec![Value::Int(1)]],
        ),
    );
    let mut idle = connect(server.addr).await;
    idle.begin_transaction().await.unwrap();
    let mut busy = connect(server.addr).await;
    let mut stream = busy
        .simple_query("SELECT endless")
        .await
        .unwrap()
        .into_row_stream();
    stream.try_next().await.unwrap().unwrap();

    server.disconnect_all();
    eventually("both sessions were disconnected", || {
        canned.recorded.lock().disconnects == 2
    })
    .await;
    assert_eq!(
        canned.recorded.lock().cancelled_after_rows.len(),
        1,
        "the running query was cancelled"
    );
    let mut failed = false;
    while let Some(item) = stream.try_next().await.transpose() {
        if item.is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the busy client sees its connection fail");
    drop(stream);
    assert!(
        idle.simple_query("SELECT 1").await.is_err(),
        "the idle client's connection is gone"
    );

    let mut client = connect(server.addr).await;
    let row = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(1));
}

#[tokio::test]
async fn shutdown_rolls_back_open_sessions_and_stops_listening() {
    let (server, canned) = start().await;
    let mut client = connect(server.addr).await;
    client.begin_transaction().await.unwrap();
    let addr = server.addr;
    server.shutdown();
    server.stopped().await;
    assert_eq!(canned.recorded.lock().disconnects, 1);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_are_served_independently() {
    let (server, canned) = start().await;
    let rows: Vec<Vec<Value>> = (0..2000)
        .map(|i| vec![Value::Int(i), s("some text")])
        .collect();
    canned.on(
        "SELECT rows",
        result_set(
            vec![
                col("i", SqlType::Int, false),
                col(
                    "t",
                    SqlType::NVarChar {
                        len: Some(20),
                        collation: LATIN1,
                    },
                    false,
                ),
            ],
            rows,
        ),
    );
    let clients = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let addr = server.addr;
        tasks.spawn(async move {
            let mut client = connect(addr).await;
            client.begin_transaction().await.unwrap();
            let mut sum = 0i64;
            for _ in 0..3 {
                let mut stream = client
                    .simple_query("SELECT rows")
                    .await
                    .unwrap()
                    .into_row_stream();
                while let Some(row) = stream.try_next().await.unwrap() {
                    sum += row.get::<i32, _>(0).unwrap() as i64;
                }
            }
            client.execute("UPDATE x SET a = @P1", &[&c]).await.unwrap();
            client.commit_transaction().await.unwrap();
            sum
        });
    }
    let mut finished = 0;
    while let Some(sum) = tasks.join_next().await {
        assert_eq!(sum.unwrap(), 3 * 1999 * 2000 / 2);
        finished += 1;
    }
    assert_eq!(finished, clients);
    let recorded = canned.recorded.lock();
    let mut params: Vec<i32> = recorded
        .rpcs
        .iter()
        .map(|(_, p)| match p[2].value {
            Value::Int(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect();
    params.sort();
    assert_eq!(
        params,
        (0..clients).collect::<Vec<i32>>(),
        "every client's parameter arrived once"
    );
}

#[tokio::test]
async fn an_engine_panic_closes_that_connection_only() {
    let (server, canned) = start().await;
    canned.on("SELECT panic", |sink| {
        sink.columns(&[col("x", SqlType::Int, false)])?;
        panic!("engine bug (expected by this test)");
    });
    canned.on(
        "SELECT 1",
        result_set(
            vec![col("", SqlType::Int, false)],
            vec![vec![Value::Int(1)]],
        ),
    );
    let mut client = connect(server.addr).await;
    let result = async {
        client
            .simple_query("SELECT panic")
            .await?
            .into_results()
            .await
    }
    .await;
    assert!(result.is_err(), "the client sees its connection fail");

    let mut other = connect(server.addr).await;
    let row = other
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(1));
}
