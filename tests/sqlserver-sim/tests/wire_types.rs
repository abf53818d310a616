//! Every SqlType goes out through the server and is decoded by tiberius to the exact value:
//! extremes, empty values, NULLs (NBCROW), fixed-length NOT NULL forms and PLP chunking.

mod wire_support;

use std::borrow::Cow;

use dbsync_sqlserver_sim::types::{SqlType, Value};
use tiberius::numeric::Numeric;
use tiberius::time::{Date, DateTime, DateTime2, DateTimeOffset, SmallDateTime, Time};
use tiberius::xml::XmlData;
use tiberius::{ColumnData, ColumnType, Uuid};
use wire_support::*;

struct Case {
    ty: SqlType,
    /// Two non-NULL values (typically the extremes) and what tiberius must decode them to.
    values: [(Value, ColumnData<'static>); 2],
    null: ColumnData<'static>,
}

fn case(
    ty: SqlType,
    a: (Value, ColumnData<'static>),
    b: (Value, ColumnData<'static>),
    null: ColumnData<'static>,
) -> Case {
    Case {
        ty,
        values: [a, b],
        null,
    }
}

fn dt2(days: u32, increments: u64, scale: u8) -> DateTime2 {
    DateTime2::new(Date::new(days), Time::new(increments, scale))
}

fn long_text(n: usize) -> String {
    // Mixed widths: ASCII, Latin-1, a BMP symbol and a surrogate pair.
    let pattern = ['a', 'é', '€', '😀', 'z'];
    (0..n).map(|i| pattern[i % pattern.len()]).collect()
}

fn long_latin1(n: usize) -> String {
    let pattern = ['a', 'é', '€', 'ñ', 'z'];
    (0..n).map(|i| pattern[i % pattern.len()]).collect()
}

fn cases() -> Vec<Case> {
    use ColumnData as C;
    let guid = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    let max38 = 10i128.pow(38) - 1;
    let big_bytes: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let nvarchar_max = long_text(30_000);
    let varchar_max = long_latin1(20_000);
    let text = |s: &str| C::String(Some(Cow::Owned(s.to_string())));
    let bin = |v: &[u8]| C::Binary(Some(Cow::Owned(v.to_vec())));
    vec![
        case(
            SqlType::TinyInt,
            (Value::TinyInt(255), C::U8(Some(255))),
            (Value::TinyInt(0), C::U8(Some(0))),
            C::U8(None),
        ),
        case(
            SqlType::SmallInt,
            (Value::SmallInt(i16::MAX), C::I16(Some(i16::MAX))),
            (Value::SmallInt(i16::MIN), C::I16(Some(i16::MIN))),
            C::I16(None),
        ),
        case(
            SqlType::Int,
            (Value::Int(i32::MAX), C::I32(Some(i32::MAX))),
            (Value::Int(i32::MIN), C::I32(Some(i32::MIN))),
            C::I32(None),
        ),
        case(
            SqlType::BigInt,
            (Value::BigInt(i64::MAX), C::I64(Some(i64::MAX))),
            (Value::BigInt(i64::MIN), C::I64(Some(i64::MIN))),
            C::I64(None),
        ),
        case(
            SqlType::Bit,
            (Value::Bit(true), C::Bit(Some(true))),
            (Value::Bit(false), C::Bit(Some(false))),
            C::Bit(None),
        ),
        case(
            SqlType::Real,
            (Value::Real(f32::MAX), C::F32(Some(f32::MAX))),
            (
                Value::Real(-f32::MIN_POSITIVE),
                C::F32(Some(-f32::MIN_POSITIVE)),
            ),
            C::F32(None),
        ),
        case(
            SqlType::Float,
            (Value::Float(f64::MAX), C::F64(Some(f64::MAX))),
            (Value::Float(-5e-324), C::F64(Some(-5e-324))),
            C::F64(None),
        ),
        case(
            SqlType::Decimal {
                precision: 38,
                scale: 0,
                numeric: false,
            },
            (
                Value::Decimal(max38, 0),
                C::Numeric(Some(Numeric::new_with_scale(max38, 0))),
            ),
            (
                Value::Decimal(-max38, 0),
                C::Numeric(Some(Numeric::new_with_scale(-max38, 0))),
            ),
            C::Numeric(None),
        ),
        case(
            SqlType::Decimal {
                precision: 9,
                scale: 4,
                numeric: false,
            },
            (
                Value::Decimal(999_999_999, 4),
                C::Numeric(Some(Numeric::new_with_scale(999_999_999, 4))),
            ),
            (
                Value::Decimal(-1, 4),
                C::Numeric(Some(Numeric::new_with_scale(-1, 4))),
            ),
            C::Numeric(None),
        ),
        case(
            SqlType::Decimal {
                precision: 19,
                scale: 2,
                numeric: true,
            },
            (
                Value::Decimal(10i128.pow(19) - 1, 2),
                C::Numeric(Some(Numeric::new_with_scale(10i128.pow(19) - 1, 2))),
            ),
            // The engine may hand a value at a smaller scale: the wire carries the column's.
            (
                Value::Decimal(-5, 0),
                C::Numeric(Some(Numeric::new_with_scale(-500, 2))),
            ),
            C::Numeric(None),
        ),
        case(
            SqlType::Decimal {
                precision: 28,
                scale: 10,
                numeric: true,
            },
            (
                Value::Decimal(10i128.pow(28) - 1, 10),
                C::Numeric(Some(Numeric::new_with_scale(10i128.pow(28) - 1, 10))),
            ),
            (
                Value::Decimal(0, 10),
                C::Numeric(Some(Numeric::new_with_scale(0, 10))),
            ),
            C::Numeric(None),
        ),
        case(
            SqlType::Money,
            (Value::Money(-123_456), C::F64(Some(-12.3456))),
            (
                Value::Money(i64::MAX),
                C::F64(Some(i64::MAX as f64 / 10_000.0)),
            ),
            C::F64(None),
        ),
        case(
            SqlType::SmallMoney,
            (Value::SmallMoney(i32::MAX), C::F64(Some(214_748.364_7))),
            (Value::SmallMoney(i32::MIN), C::F64(Some(-214_748.364_8))),
            C::F64(None),
        ),
        case(
            SqlType::Date,
            (Value::Date(0), C::Date(Some(Date::new(0)))),
            (Value::Date(3_652_058), C::Date(Some(Date::new(3_652_058)))),
            C::Date(None),
        ),
        case(
            SqlType::Time { scale: 7 },
            (
                Value::Time(863_999_999_999),
                C::Time(Some(Time::new(863_999_999_999, 7))),
            ),
            (Value::Time(0), C::Time(Some(Time::new(0, 7)))),
            C::Time(None),
        ),
        case(
            SqlType::Time { scale: 0 },
            (
                Value::Time(863_990_000_000),
                C::Time(Some(Time::new(86_399, 0))),
            ),
            (Value::Time(10_000_000), C::Time(Some(Time::new(1, 0)))),
            C::Time(None),
        ),
        case(
            SqlType::Time { scale: 3 },
            (
                Value::Time(863_999_990_000),
                C::Time(Some(Time::new(86_399_999, 3))),
            ),
            (Value::Time(10_000), C::Time(Some(Time::new(1, 3)))),
            C::Time(None),
        ),
        case(
            SqlType::DateTime,
            (
                Value::DateTime {
                    days: -53_690,
                    ticks: 0,
                },
                C::DateTime(Some(DateTime::new(-53_690, 0))),
            ),
            (
                Value::DateTime {
                    days: 2_958_463,
                    ticks: 25_919_999,
                },
                C::DateTime(Some(DateTime::new(2_958_463, 25_919_999))),
            ),
            C::DateTime(None),
        ),
        case(
            SqlType::SmallDateTime,
            (
                Value::SmallDateTime {
                    days: 0,
                    minutes: 0,
                },
                C::SmallDateTime(Some(SmallDateTime::new(0, 0))),
            ),
            (
                Value::SmallDateTime {
                    days: 65_535,
                    minutes: 1_439,
                },
                C::SmallDateTime(Some(SmallDateTime::new(65_535, 1_439))),
            ),
            // tiberius reports every NULL DATETIMN as DateTime(None).
            C::DateTime(None),
        ),
        case(
            SqlType::DateTime2 { scale: 7 },
            (
                Value::DateTime2 {
                    days: 3_652_058,
                    ticks: 863_999_999_999,
                },
                C::DateTime2(Some(dt2(3_652_058, 863_999_999_999, 7))),
            ),
            (
                Value::DateTime2 { days: 0, ticks: 0 },
                C::DateTime2(Some(dt2(0, 0, 7))),
            ),
            C::DateTime2(None),
        ),
        case(
            SqlType::DateTime2 { scale: 0 },
            (
                Value::DateTime2 {
                    days: 738_000,
                    ticks: 120_000_000,
                },
                C::DateTime2(Some(dt2(738_000, 12, 0))),
            ),
            (
                Value::DateTime2 { days: 1, ticks: 0 },
                C::DateTime2(Some(dt2(1, 0, 0))),
            ),
            C::DateTime2(None),
        ),
        case(
            SqlType::DateTime2 { scale: 3 },
            (
                Value::DateTime2 {
                    days: 738_000,
                    ticks: 123_450_000,
                },
                C::DateTime2(Some(dt2(738_000, 12_345, 3))),
            ),
            (
                Value::DateTime2 {
                    days: 2,
                    ticks: 10_000,
                },
                C::DateTime2(Some(dt2(2, 1, 3))),
            ),
            C::DateTime2(None),
        ),
        case(
            SqlType::DateTimeOffset { scale: 7 },
            (
                Value::DateTimeOffset {
                    days: 3_652_058,
                    ticks: 863_999_999_999,
                    offset_minutes: 840,
                },
                C::DateTimeOffset(Some(DateTimeOffset::new(
                    dt2(3_652_058, 863_999_999_999, 7),
                    840,
                ))),
            ),
            (
                Value::DateTimeOffset {
                    days: 0,
                    ticks: 0,
                    offset_minutes: -840,
                },
                C::DateTimeOffset(Some(DateTimeOffset::new(dt2(0, 0, 7), -840))),
            ),
            C::DateTimeOffset(None),
        ),
        case(
            SqlType::Char {
                len: 10,
                collation: LATIN1,
            },
            (s("café"), text("café      ")),
            (s(""), text("          ")),
            C::String(None),
        ),
        case(
            SqlType::VarChar {
                len: Some(50),
                collation: LATIN1,
            },
            (s("€ ñ ü ‰"), text("€ ñ ü ‰")),
            (s(""), text("")),
            C::String(None),
        ),
        case(
            SqlType::VarChar {
                len: None,
                collation: LATIN1,
            },
            (s(&varchar_max), text(&varchar_max)),
            (s(""), text("")),
            C::String(None),
        ),
        case(
            SqlType::NChar {
                len: 5,
                collation: LATIN1,
            },
            (s("ab"), text("ab   ")),
            (s("ŋ😀ü"), text("ŋ😀ü ")), /* 4 UTF-16 units */
            C::String(None),
        ),
        case(
            SqlType::NVarChar {
                len: Some(100),
                collation: LATIN1,
            },
            (s("Grüße 😀"), text("Grüße 😀")),
            (s(""), text("")),
            C::String(None),
        ),
        case(
            SqlType::NVarChar {
                len: None,
                collation: LATIN1,
            },
            (s(&nvarchar_max), text(&nvarchar_max)),
            (s(""), text("")),
            C::String(None),
        ),
        case(
            SqlType::Binary { len: 4 },
            (b(&[1, 2]), bin(&[1, 2, 0, 0])),
            (b(&[0xff; 4]), bin(&[0xff; 4])),
            C::Binary(None),
        ),
        case(
            SqlType::VarBinary { len: Some(10) },
            (b(&[0xff; 10]), bin(&[0xff; 10])),
            (b(&[]), bin(&[])),
            C::Binary(None),
        ),
        case(
            SqlType::VarBinary { len: None },
            (b(&big_bytes), bin(&big_bytes)),
            (b(&[]), bin(&[])),
            C::Binary(None),
        ),
        case(
            SqlType::Text { collation: LATIN1 },
            (s("hello text é"), text("hello text é")),
            (s(""), text("")),
            C::String(None),
        ),
        case(
            SqlType::NText { collation: LATIN1 },
            (s("ŋtext 😀"), text("ŋtext 😀")),
            (s(""), text("")),
            C::String(None),
        ),
        case(
            SqlType::Image,
            (b(&[0, 1, 2, 255]), bin(&[0, 1, 2, 255])),
            (b(&[]), bin(&[])),
            C::Binary(None),
        ),
        case(
            SqlType::UniqueIdentifier,
            (
                Value::Guid(guid),
                C::Guid(Some(
                    Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap(),
                )),
            ),
            (Value::Guid([0; 16]), C::Guid(Some(Uuid::nil()))),
            C::Guid(None),
        ),
        case(
            SqlType::Xml,
            (
                s("<a b=\"ü\">😀</a>"),
                C::Xml(Some(Cow::Owned(XmlData::new("<a b=\"ü\">😀</a>")))),
            ),
            (
                s("<empty/>"),
                C::Xml(Some(Cow::Owned(XmlData::new("<empty/>")))),
            ),
            C::Xml(None),
        ),
        case(
            SqlType::RowVersion,
            (
                b(&[0, 0, 0, 0, 0, 0, 0x07, 0xD1]),
                bin(&[0, 0, 0, 0, 0, 0, 0x07, 0xD1]),
            ),
            (b(&[0xff; 8]), bin(&[0xff; 8])),
            C::Binary(None),
        ),
        case(
            SqlType::SqlVariant,
            (Value::Int(42), C::I32(Some(42))),
            (s("variant ü"), text("variant ü")),
            C::String(None),
        ),
        case(
            SqlType::HierarchyId,
            (b(&[0x58]), bin(&[0x58])),
            (b(&[]), bin(&[])),
            C::Binary(None),
        ),
        case(
            SqlType::Geometry,
            (
                b(&[0, 0, 0, 0, 1, 0x0c, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]),
                bin(&[0, 0, 0, 0, 1, 0x0c, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f]),
            ),
            (b(&[1]), bin(&[1])),
            C::Binary(None),
        ),
        case(
            SqlType::Geography,
            (
                b(&[0xe6, 0x10, 0, 0, 1, 0x0c]),
                bin(&[0xe6, 0x10, 0, 0, 1, 0x0c]),
            ),
            (b(&[2]), bin(&[2])),
            C::Binary(None),
        ),
    ]
}

#[tokio::test]
async fn every_type_round_trips_with_extremes_and_nulls() {
    let (server, canned) = start().await;
    let cases = cases();
    let columns: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| col(&format!("c{i}"), c.ty.clone(), true))
        .collect();
    let mut rows: Vec<Vec<Value>> = (0..2)
        .map(|r| cases.iter().map(|c| c.values[r].0.clone()).collect())
        .collect();
    rows.push(vec![Value::Null; cases.len()]);
    // A row that mixes NULLs and values: NBCROW with a bitmap spanning several bytes.
    rows.push(
        cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i % 3 == 0 {
                    Value::Null
                } else {
                    c.values[0].0.clone()
                }
            })
            .collect(),
    );
    canned.on("SELECT every type", result_set(columns, rows));

    let mut client = connect(server.addr).await;
    let got = client
        .simple_query("SELECT every type")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    for (i, case) in cases.iter().enumerate() {
        let cell = |r: usize| got[r].get_column_data(i).unwrap().clone();
        for r in 0..2 {
            assert_eq!(cell(r), case.values[r].1, "{:?} row {r}", case.ty);
        }
        assert_eq!(cell(2), case.null, "{:?} NULL", case.ty);
        let mixed = if i % 3 == 0 {
            case.null.clone()
        } else {
            case.values[0].1.clone()
        };
        assert_eq!(cell(3), mixed, "{:?} in the mixed NBCROW", case.ty);
    }
    drop(server);
}

#[tokio::test]
async fn not_null_columns_use_the_fixed_length_forms() {
    let (server, canned) = start().await;
    let types = [
        (SqlType::TinyInt, Value::TinyInt(7), ColumnType::Int1),
        (SqlType::SmallInt, Value::SmallInt(-7), ColumnType::Int2),
        (SqlType::Int, Value::Int(-70_000), ColumnType::Int4),
        (SqlType::BigInt, Value::BigInt(1 << 40), ColumnType::Int8),
        (SqlType::Bit, Value::Bit(true), ColumnType::Bit),
        (SqlType::Real, Value::Real(1.5), ColumnType::Float4),
        (SqlType::Float, Value::Float(-2.25), ColumnType::Float8),
        (SqlType::Money, Value::Money(-123_456), ColumnType::Money),
        (
            SqlType::SmallMoney,
            Value::SmallMoney(10_000),
            ColumnType::Money4,
        ),
        (
            SqlType::DateTime,
            Value::DateTime {
                days: 45_000,
                ticks: 300,
            },
            ColumnType::Datetime,
        ),
        (
            SqlType::SmallDateTime,
            Value::SmallDateTime {
                days: 45_000,
                minutes: 61,
            },
            ColumnType::Datetime4,
        ),
        (SqlType::Int, Value::SmallInt(5), ColumnType::Int4),
    ];
    let columns: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, (ty, _, _))| col(&format!("c{i}"), ty.clone(), false))
        .collect();
    let row: Vec<Value> = types.iter().map(|(_, v, _)| v.clone()).collect();
    canned.on("SELECT fixed", result_set(columns, vec![row]));

    let mut client = connect(server.addr).await;
    let rows = client
        .simple_query("SELECT fixed")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let row = &rows[0];
    for (i, (_, _, wire)) in types.iter().enumerate() {
        assert_eq!(row.columns()[i].column_type(), *wire, "column {i}");
    }
    assert_eq!(row.get::<u8, _>(0), Some(7));
    assert_eq!(row.get::<i16, _>(1), Some(-7));
    assert_eq!(row.get::<i32, _>(2), Some(-70_000));
    assert_eq!(row.get::<i64, _>(3), Some(1 << 40));
    assert_eq!(row.get::<bool, _>(4), Some(true));
    assert_eq!(row.get::<f32, _>(5), Some(1.5));
    assert_eq!(row.get::<f64, _>(6), Some(-2.25));
    assert_eq!(row.get::<f64, _>(7), Some(-12.3456));
    assert_eq!(row.get::<f64, _>(8), Some(1.0));
    assert_eq!(
        row.get_column_data(9).unwrap(),
        &ColumnData::DateTime(Some(DateTime::new(45_000, 300)))
    );
    assert_eq!(
        row.get_column_data(10).unwrap(),
        &ColumnData::SmallDateTime(Some(SmallDateTime::new(45_000, 61)))
    );
    assert_eq!(row.get::<i32, _>(11), Some(5));
}

#[tokio::test]
async fn column_metadata_carries_names_flags_and_nullability() {
    let (server, canned) = start().await;
    let mut id = col("id", SqlType::Int, false);
    id.identity = true;
    let mut name = col(
        "name",
        SqlType::NVarChar {
            len: Some(50),
            collation: LATIN1,
        },
        true,
    );
    name.updateable = true;
    let mut notes = col("notes", SqlType::Text { collation: LATIN1 }, true);
    notes.table_name = Some("dbo.items".into());
    notes.updateable = true;
    let null_literal = col("", SqlType::Null, true);
    canned.on(
        "SELECT meta",
        result_set(
            vec![id, name, notes, null_literal],
            vec![vec![Value::Int(1), s("x"), s("t"), Value::Null]],
        ),
    );
    let mut client = connect(server.addr).await;
    let rows = client
        .simple_query("SELECT meta")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    let columns = rows[0].columns();
    let names: Vec<_> = columns.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["id", "name", "notes", ""]);
    assert_eq!(columns[0].column_type(), ColumnType::Int4);
    assert_eq!(columns[1].column_type(), ColumnType::NVarchar);
    assert_eq!(columns[2].column_type(), ColumnType::Text);
    // SELECT NULL is typed int (INTN 4); tiberius reports INTN by its width.
    assert_eq!(columns[3].column_type(), ColumnType::Int4);
    assert_eq!(rows[0].get::<&str, _>(2), Some("t"));
    assert_eq!(rows[0].get::<i32, _>(3), None);
}

#[tokio::test]
async fn a_value_the_column_cannot_hold_becomes_an_error_not_a_corrupt_stream() {
    let (server, canned) = start().await;
    canned.on("SELECT bad", |sink| {
        sink.columns(&[col("c", SqlType::Int, false)])?;
        sink.row(&[Value::Int(1)])?;
        sink.row(&[Value::String("not an int".into())])?;
        sink.done(
            dbsync_sqlserver_sim::api::StatementKind::Select,
            Some(2),
            false,
        )
    });
    let mut client = connect(server.addr).await;
    let err = client
        .simple_query("SELECT bad")
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap_err();
    match err {
        tiberius::error::Error::Server(e) => assert_eq!(e.code(), 50999, "{e:?}"),
        other => panic!("expected a server error, got {other:?}"),
    }
    // The connection is still usable.
    canned.on(
        "SELECT 1",
        result_set(
            vec![col("", SqlType::Int, false)],
            vec![vec![Value::Int(1)]],
        ),
    );
    let one = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.get::<i32, _>(0), Some(1));
}
