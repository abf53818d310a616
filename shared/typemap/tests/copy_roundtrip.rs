//! Every mapped type's extreme values, encoded by our binary COPY encoder into a real
//! PostgreSQL table created with the mapped DDL, read back as text and compared.

mod support;

use dbsync_proto::v1::{value::Kind, ColumnSchema, DateTimeOffset, Value};
use dbsync_typemap::temporal::{days_from_civil, TICKS_PER_DAY, TICKS_PER_SECOND};
use dbsync_typemap::*;
use support::*;

/// Ticks since 0001-01-01 for a civil date and time with 100-ns fraction.
fn ticks(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, fraction_7: i64) -> i64 {
    days_from_civil(y, mo, d) * TICKS_PER_DAY
        + (h * 3600 + mi * 60 + s) * TICKS_PER_SECOND
        + fraction_7
}

fn dec(unscaled: i128, scale: u32) -> Value {
    v(Kind::Decimal(decimal_from_parts(unscaled, scale)))
}

async fn check(
    table: &str,
    column: ColumnSchema,
    options: MappingOptions,
    cases: Vec<(Value, Option<&str>)>,
) {
    let client = client().await;
    let ty = map_column(&column, &options).unwrap();
    let (values, expected): (Vec<Value>, Vec<Option<&str>>) = cases.into_iter().unzip();
    copy_into(&client, table, &ty, &values).await;
    let got = select_text(&client, table, "v").await;
    let expected: Vec<Option<String>> = expected
        .into_iter()
        .map(|e| e.map(str::to_string))
        .collect();
    assert_eq!(got, expected, "{table}: {}", ty.ddl());
    // Literals must produce the same stored values, whatever standard_conforming_strings is.
    for (i, value) in values.iter().enumerate() {
        let conforming = if i % 2 == 0 { "on" } else { "off" };
        client
            .batch_execute(&format!("SET standard_conforming_strings = {conforming}"))
            .await
            .unwrap();
        let literal = render_literal(value, &ty).unwrap();
        let row = client
            .query_one(&format!("SELECT (v::text IS NOT DISTINCT FROM CAST({literal} AS {})::text)::text FROM {table} WHERE id = $1", ty.ddl()), &[&(i as i32)])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            "true",
            "{table}: literal {literal} differs from the copied value"
        );
    }
}

#[tokio::test]
async fn integers_and_bits() {
    check(
        "t_bit",
        column("bit", 1, 1, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Bool(true)), Some("true")),
            (v(Kind::Bool(false)), Some("false")),
            (null(), None),
        ],
    )
    .await;
    let bit_as_smallint = MappingOptions {
        bit_as: BitAs::Smallint,
        ..Default::default()
    };
    check(
        "t_bit_int",
        column("bit", 1, 1, 0),
        bit_as_smallint,
        vec![
            (v(Kind::Bool(true)), Some("1")),
            (v(Kind::Bool(false)), Some("0")),
        ],
    )
    .await;
    check(
        "t_tinyint",
        column("tinyint", 1, 3, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Int(0)), Some("0")),
            (v(Kind::Int(255)), Some("255")),
        ],
    )
    .await;
    check(
        "t_smallint",
        column("smallint", 2, 5, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Int(-32768)), Some("-32768")),
            (v(Kind::Int(32767)), Some("32767")),
        ],
    )
    .await;
    check(
        "t_int",
        column("int", 4, 10, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Int(i32::MIN.into())), Some("-2147483648")),
            (v(Kind::Int(i32::MAX.into())), Some("2147483647")),
        ],
    )
    .await;
    check(
        "t_bigint",
        column("bigint", 8, 19, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Int(i64::MIN)), Some("-9223372036854775808")),
            (v(Kind::Int(i64::MAX)), Some("9223372036854775807")),
        ],
    )
    .await;
    let rowversion_as_bigint = MappingOptions {
        rowversion_as: RowversionAs::Bigint,
        ..Default::default()
    };
    check(
        "t_rowversion_big",
        column("timestamp", 8, 0, 0),
        rowversion_as_bigint,
        vec![(
            v(Kind::Binary(vec![0, 0, 0, 0, 0, 0, 0x07, 0xd1])),
            Some("2001"),
        )],
    )
    .await;
    check(
        "t_rowversion",
        column("rowversion", 8, 0, 0),
        MappingOptions::default(),
        vec![(
            v(Kind::Binary(vec![0, 0, 0, 0, 0, 0, 0x07, 0xd1])),
            Some("\\x00000000000007d1"),
        )],
    )
    .await;
}

#[test]
fn out_of_range_integers_fail_before_the_server() {
    let tiny = map_column(&column("tinyint", 1, 3, 0), &MappingOptions::default()).unwrap();
    assert_eq!(tiny.ddl(), "smallint");
    assert_eq!(tiny.check_sql("\"b\"").unwrap(), "\"b\" BETWEEN 0 AND 255");
    let mut buf = bytes::BytesMut::new();
    for bad in [256, -1] {
        let err = encode_value(&v(Kind::Int(bad)), &tiny, &mut buf).unwrap_err();
        assert!(matches!(err, TypemapError::OutOfRange { .. }), "{err}");
        assert!(err.to_string().contains("col_tinyint"), "{err}");
    }
    let small = map_column(&column("smallint", 2, 5, 0), &MappingOptions::default()).unwrap();
    assert!(encode_value(&v(Kind::Int(32768)), &small, &mut buf).is_err());
    assert!(buf.is_empty(), "failed encodes leave no bytes behind");
}

#[tokio::test]
async fn decimals_and_money() {
    let nines_38 = 10i128.pow(38) - 1;
    check(
        "t_dec_38_0",
        column("decimal", 17, 38, 0),
        MappingOptions::default(),
        vec![
            (
                dec(nines_38, 0),
                Some("99999999999999999999999999999999999999"),
            ),
            (
                dec(-nines_38, 0),
                Some("-99999999999999999999999999999999999999"),
            ),
            (dec(0, 0), Some("0")),
            (
                dec(10i128.pow(37), 0),
                Some("10000000000000000000000000000000000000"),
            ),
            (v(Kind::Int(-42)), Some("-42")),
        ],
    )
    .await;
    check(
        "t_dec_38_38",
        column("decimal", 17, 38, 38),
        MappingOptions::default(),
        vec![
            (
                dec(nines_38, 38),
                Some("0.99999999999999999999999999999999999999"),
            ),
            (
                dec(-1, 38),
                Some("-0.00000000000000000000000000000000000001"),
            ),
            (dec(0, 38), Some("0.00000000000000000000000000000000000000")),
        ],
    )
    .await;
    check(
        "t_dec_12_2",
        column("numeric", 9, 12, 2),
        MappingOptions::default(),
        vec![
            (dec(-12345, 2), Some("-123.45")),
            (dec(1, 0), Some("1.00")), // a smaller scale is rescaled exactly
            (dec(123450, 3), Some("123.45")), // trailing zeros beyond the scale are dropped exactly
            (dec(999_999_999_999, 2), Some("9999999999.99")),
            (dec(10_000, 2), Some("100.00")),
            (dec(-1, 2), Some("-0.01")),
        ],
    )
    .await;
    check(
        "t_money",
        column("money", 8, 19, 4),
        MappingOptions::default(),
        vec![
            (
                v(Kind::Decimal(money_from_sql(i64::MIN))),
                Some("-922337203685477.5808"),
            ),
            (
                v(Kind::Decimal(money_from_sql(i64::MAX))),
                Some("922337203685477.5807"),
            ),
            (v(Kind::Decimal(money_from_sql(125))), Some("0.0125")),
        ],
    )
    .await;
    check(
        "t_smallmoney",
        column("smallmoney", 4, 10, 4),
        MappingOptions::default(),
        vec![
            (
                v(Kind::Decimal(smallmoney_from_sql(i32::MIN))),
                Some("-214748.3648"),
            ),
            (
                v(Kind::Decimal(smallmoney_from_sql(i32::MAX))),
                Some("214748.3647"),
            ),
        ],
    )
    .await;
    // Powers of ten at every scale boundary of the base-10000 groups.
    let mut cases = Vec::new();
    let mut texts = Vec::new();
    for k in 0..28 {
        texts.push(format!("{}{}.{}", "1", "0".repeat(k), "0".repeat(10)));
    }
    for (k, text) in texts.iter().enumerate() {
        cases.push((dec(10i128.pow(k as u32 + 10), 10), Some(text.as_str())));
    }
    check(
        "t_dec_pow10",
        column("decimal", 17, 38, 10),
        MappingOptions::default(),
        cases,
    )
    .await;
}

#[tokio::test]
async fn decimal_identity_columns_become_bigint() {
    let mut col = column("decimal", 9, 18, 0);
    col.identity = Some(dbsync_proto::v1::Identity {
        seed: 1,
        increment: 1,
        last_value: None,
    });
    assert_eq!(
        map_column(&col, &MappingOptions::default()).unwrap().ddl(),
        "bigint"
    );
    let client = client().await;
    let ty = map_column(&col, &MappingOptions::default()).unwrap();
    let big = 10i128.pow(18) - 1;
    copy_into(&client, "t_dec_identity", &ty, &[dec(big, 0), dec(-5, 0)]).await;
    assert_eq!(
        select_text(&client, "t_dec_identity", "v").await,
        vec![Some(big.to_string()), Some("-5".into())]
    );
    assert_eq!(render_literal(&dec(-5, 0), &ty).unwrap(), "'-5'::bigint");
    assert!(encode_value(&dec(15, 1), &ty, &mut bytes::BytesMut::new()).is_err());
}

#[test]
fn decimals_that_do_not_fit_fail() {
    let ty = map_column(&column("decimal", 9, 5, 2), &MappingOptions::default()).unwrap();
    let mut buf = bytes::BytesMut::new();
    assert!(encode_value(&dec(100_000, 2), &ty, &mut buf).is_err()); // 1000.00 needs p=6
    assert!(encode_value(&dec(12345, 3), &ty, &mut buf).is_err()); // 12.345 would round
    assert!(encode_value(&dec(99_999, 2), &ty, &mut buf).is_ok());
}

#[tokio::test]
async fn floats() {
    check(
        "t_real",
        column("real", 4, 24, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Float32(f32::MAX)), Some("3.4028235e+38")),
            (v(Kind::Float32(f32::MIN)), Some("-3.4028235e+38")),
            (v(Kind::Float32(f32::MIN_POSITIVE)), Some("1.1754944e-38")),
            (v(Kind::Float32(1.5)), Some("1.5")),
            (v(Kind::Float32(f32::NAN)), Some("NaN")),
            (v(Kind::Float32(f32::INFINITY)), Some("Infinity")),
            (v(Kind::Float32(f32::NEG_INFINITY)), Some("-Infinity")),
            (v(Kind::Float64(0.5)), Some("0.5")), // exactly representable as real
        ],
    )
    .await;
    check(
        "t_float",
        column("float", 8, 53, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Float64(f64::MAX)), Some("1.7976931348623157e+308")),
            (v(Kind::Float64(5e-324)), Some("5e-324")),
            (v(Kind::Float64(0.1)), Some("0.1")),
            (v(Kind::Float64(f64::NAN)), Some("NaN")),
            (v(Kind::Float64(f64::NEG_INFINITY)), Some("-Infinity")),
        ],
    )
    .await;
}

#[tokio::test]
async fn dates_and_times() {
    let days = |y, m, d| v(Kind::Date(days_from_civil(y, m, d) as i32));
    check(
        "t_date",
        column("date", 3, 10, 0),
        MappingOptions::default(),
        vec![
            (days(1, 1, 1), Some("0001-01-01")),
            (days(9999, 12, 31), Some("9999-12-31")),
            (days(2000, 2, 29), Some("2000-02-29")),
        ],
    )
    .await;
    let time = |ticks: i64| v(Kind::Time(ticks));
    check(
        "t_time7",
        column("time", 5, 16, 7),
        MappingOptions::default(),
        vec![
            (time(0), Some("00:00:00")),
            (time(TICKS_PER_DAY - 1), Some("24:00:00")), // 23:59:59.9999999 rounds up
            (time(TICKS_PER_DAY - 6), Some("23:59:59.999999")),
            (
                time(45_296 * TICKS_PER_SECOND + 1_234_565),
                Some("12:34:56.123457"),
            ), // half up
            (
                time(45_296 * TICKS_PER_SECOND + 1_234_564),
                Some("12:34:56.123456"),
            ),
            (v(Kind::Time(time_from_sql(1234, 3))), Some("00:00:01.234")),
        ],
    )
    .await;
    check(
        "t_time0",
        column("time", 3, 8, 0),
        MappingOptions::default(),
        vec![(
            time(45_296 * TICKS_PER_SECOND + 5_000_000),
            Some("12:34:57"),
        )],
    )
    .await;
    let dt = |t: i64| v(Kind::Datetime(t));
    check(
        "t_datetime2_7",
        column("datetime2", 8, 27, 7),
        MappingOptions::default(),
        vec![
            (dt(0), Some("0001-01-01 00:00:00")),
            (
                dt(ticks(2020, 12, 31, 23, 59, 59, 9_999_995)),
                Some("2021-01-01 00:00:00"),
            ),
            (
                dt(ticks(2020, 12, 31, 23, 59, 59, 9_999_994)),
                Some("2020-12-31 23:59:59.999999"),
            ),
            (
                dt(ticks(1999, 12, 31, 23, 59, 59, 1_234_567)),
                Some("1999-12-31 23:59:59.123457"),
            ),
            (
                dt(ticks(2020, 1, 1, 0, 0, 0, 1_234_567)),
                Some("2020-01-01 00:00:00.123457"),
            ),
            (
                dt(ticks(9999, 12, 31, 23, 59, 59, 9_999_999)),
                Some("10000-01-01 00:00:00"),
            ),
            (
                v(Kind::Datetime(datetime2_from_sql(
                    days_from_civil(2024, 2, 29) as u32,
                    12_345,
                    2,
                ))),
                Some("2024-02-29 00:02:03.45"),
            ),
        ],
    )
    .await;
    check(
        "t_datetime2_3",
        column("datetime2", 7, 23, 3),
        MappingOptions::default(),
        vec![(
            dt(ticks(2020, 1, 1, 0, 0, 0, 1_235_000)),
            Some("2020-01-01 00:00:00.124"),
        )],
    )
    .await;
    let datetime =
        |days_1900: i32, ticks_300: u32| v(Kind::Datetime(datetime_from_sql(days_1900, ticks_300)));
    let jan_1_1753 = -53_690;
    check(
        "t_datetime",
        column("datetime", 8, 23, 3),
        MappingOptions::default(),
        vec![
            (datetime(jan_1_1753, 0), Some("1753-01-01 00:00:00")),
            (datetime(0, 1), Some("1900-01-01 00:00:00.003")),
            (datetime(0, 2), Some("1900-01-01 00:00:00.007")),
            (datetime(0, 299), Some("1900-01-01 00:00:00.997")),
            (
                datetime(2_958_463, 25_919_999),
                Some("9999-12-31 23:59:59.997"),
            ),
        ],
    )
    .await;
    let exact = MappingOptions {
        datetime_precision: DatetimePrecision::Exact,
        ..Default::default()
    };
    check(
        "t_datetime_exact",
        column("datetime", 8, 23, 3),
        exact,
        vec![
            (datetime(0, 1), Some("1900-01-01 00:00:00.003333")),
            (datetime(0, 2), Some("1900-01-01 00:00:00.006667")),
        ],
    )
    .await;
    check(
        "t_smalldatetime",
        column("smalldatetime", 4, 16, 0),
        MappingOptions::default(),
        vec![
            (
                v(Kind::Datetime(smalldatetime_from_sql(0, 0))),
                Some("1900-01-01 00:00:00"),
            ),
            (
                v(Kind::Datetime(smalldatetime_from_sql(65_535, 1439))),
                Some("2079-06-06 23:59:00"),
            ),
        ],
    )
    .await;
    let dto = |utc_ticks: i64, offset_minutes: i32| {
        v(Kind::Datetimeoffset(DateTimeOffset {
            utc_ticks,
            offset_minutes,
        }))
    };
    check(
        "t_dto",
        column("datetimeoffset", 10, 34, 7),
        MappingOptions::default(),
        vec![
            (
                dto(ticks(2020, 1, 1, 0, 0, 0, 0), 14 * 60),
                Some("2020-01-01 00:00:00+00"),
            ),
            (
                dto(ticks(2020, 1, 1, 0, 0, 0, 0), -14 * 60),
                Some("2020-01-01 00:00:00+00"),
            ),
            (
                dto(ticks(2020, 1, 1, 23, 59, 59, 9_999_999), 330),
                Some("2020-01-02 00:00:00+00"),
            ),
            (dto(0, -14 * 60), Some("0001-01-01 00:00:00+00")),
            (
                v(Kind::Datetimeoffset(datetimeoffset_from_sql(
                    days_from_civil(2021, 6, 1) as u32,
                    36_000_000,
                    3,
                    120,
                ))),
                Some("2021-06-01 10:00:00+00"),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn strings() {
    let text = |s: &str| v(Kind::Text(s.to_string()));
    check(
        "t_varchar",
        column("varchar", 10, 0, 0),
        MappingOptions::default(),
        vec![
            (text(""), Some("")),
            (null(), None),
            (text("a  "), Some("a  ")),
            (text("it's \\ ok"), Some("it's \\ ok")),
        ],
    )
    .await;
    check(
        "t_nvarchar",
        column("nvarchar", 20, 0, 0),
        MappingOptions::default(),
        vec![
            (text("😀𝄞é"), Some("😀𝄞é")),
            (text("日本語"), Some("日本語")),
        ],
    )
    .await;
    let long: String = "ab😀".repeat(50_000);
    check(
        "t_nvarchar_max",
        column("nvarchar", -1, 0, 0),
        MappingOptions::default(),
        vec![(text(&long), Some(long.as_str()))],
    )
    .await;

    // char(n): stored padded; text output drops the padding, octet_length keeps it.
    let client = client().await;
    let ty = map_column(&column("nchar", 10, 0, 0), &MappingOptions::default()).unwrap();
    assert_eq!(ty.ddl(), "char(5)");
    copy_into(
        &client,
        "t_nchar",
        &ty,
        &[text("ab   "), text("😀"), text("")],
    )
    .await;
    assert_eq!(
        select_text(&client, "t_nchar", "concat('[', v::text, ']')").await,
        vec![Some("[ab]".into()), Some("[😀]".into()), Some("[]".into())]
    );
    assert_eq!(
        select_text(&client, "t_nchar", "octet_length(v)").await,
        vec![Some("5".into()), Some("8".into()), Some("5".into())]
    );
}

#[tokio::test]
async fn nul_characters_follow_the_policy() {
    let mut ty = map_column(&column("varchar", 10, 0, 0), &MappingOptions::default()).unwrap();
    let err = encode_value(
        &v(Kind::Text("a\0b".into())),
        &ty,
        &mut bytes::BytesMut::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("NUL") && err.to_string().contains("col_varchar"),
        "{err}"
    );
    assert!(render_literal(&v(Kind::Text("a\0b".into())), &ty).is_err());
    let client = client().await;
    ty.text_policy = InvalidTextPolicy::Strip;
    copy_into(
        &client,
        "t_nul_strip",
        &ty,
        &[v(Kind::Text("\0a\0b\0".into()))],
    )
    .await;
    assert_eq!(
        select_text(&client, "t_nul_strip", "v").await,
        vec![Some("ab".into())]
    );
    ty.text_policy = InvalidTextPolicy::Replace;
    copy_into(
        &client,
        "t_nul_replace",
        &ty,
        &[v(Kind::Text("a\0b".into()))],
    )
    .await;
    assert_eq!(
        select_text(&client, "t_nul_replace", "v").await,
        vec![Some("a\u{FFFD}b".into())]
    );
    assert!(text_from_utf16(&[0x61, 0xDC00], InvalidTextPolicy::Error, "c").is_err());
}

#[tokio::test]
async fn binary_uuid_xml_and_others() {
    check(
        "t_uuid",
        column("uniqueidentifier", 16, 0, 0),
        MappingOptions::default(),
        vec![
            (
                v(Kind::Uuid(vec![
                    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
                    0xdd, 0xee, 0xff,
                ])),
                Some("00112233-4455-6677-8899-aabbccddeeff"),
            ),
            (
                v(Kind::Uuid(
                    uuid_from_sql_bytes([
                        0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 0xaa, 0xbb,
                        0xcc, 0xdd, 0xee, 0xff,
                    ])
                    .to_vec(),
                )),
                Some("00112233-4455-6677-8899-aabbccddeeff"),
            ),
        ],
    )
    .await;
    check(
        "t_binary",
        column("varbinary", 10, 0, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Binary(vec![])), Some("\\x")),
            (v(Kind::Binary(vec![0, 0xff, 0x10])), Some("\\x00ff10")),
        ],
    )
    .await;

    // Large bytea, compared byte for byte.
    let client = client().await;
    let ty = map_column(&column("varbinary", -1, 0, 0), &MappingOptions::default()).unwrap();
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    copy_into(&client, "t_big_bytea", &ty, &[v(Kind::Binary(big.clone()))]).await;
    let back: Vec<u8> = client
        .query_one("SELECT v FROM t_big_bytea", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(back, big);

    check(
        "t_xml",
        column("xml", -1, 0, 0),
        MappingOptions::default(),
        vec![
            (
                v(Kind::Text(
                    "<?xml version=\"1.0\" encoding=\"utf-16\"?><a>é😀</a>".into(),
                )),
                Some("<?xml version=\"1.0\"?><a>é😀</a>"),
            ),
            (
                v(Kind::Text("<a/><b>fragment</b>".into())),
                Some("<a/><b>fragment</b>"),
            ),
        ],
    )
    .await;
    check(
        "t_sql_variant",
        column("sql_variant", 8016, 0, 0),
        MappingOptions::default(),
        vec![
            (v(Kind::Int(5)), Some("5")),
            (dec(1250, 2), Some("12.50")),
            (v(Kind::Text("x".into())), Some("x")),
            (
                v(Kind::Datetimeoffset(DateTimeOffset {
                    utc_ticks: ticks(2020, 1, 1, 0, 0, 0, 0),
                    offset_minutes: 330,
                })),
                Some("2020-01-01 05:30:00.000000+05:30"),
            ),
        ],
    )
    .await;
    check(
        "t_hierarchyid",
        column("hierarchyid", 892, 0, 0),
        MappingOptions::default(),
        vec![(v(Kind::Text("/1/3/".into())), Some("/1/3/"))],
    )
    .await;
    check(
        "t_json",
        column("json", -1, 0, 0),
        MappingOptions::default(),
        vec![(
            v(Kind::Text("{\"b\":[1,2],\"a\":null}".into())),
            Some("{\"a\": null, \"b\": [1, 2]}"),
        )],
    )
    .await;
    check(
        "t_geometry",
        column("geometry", -1, 0, 0),
        MappingOptions::default(),
        vec![(v(Kind::Binary(vec![1, 1, 0, 0, 0])), Some("\\x0101000000"))],
    )
    .await;
}

#[test]
fn mapping_table() {
    let o = MappingOptions::default();
    let ddl =
        |t: &str, len: i32, p: i32, s: i32| map_column(&column(t, len, p, s), &o).unwrap().ddl();
    assert_eq!(ddl("decimal", 9, 12, 2), "numeric(12,2)");
    assert_eq!(ddl("money", 8, 19, 4), "numeric(19,4)");
    assert_eq!(ddl("smallmoney", 4, 10, 4), "numeric(10,4)");
    assert_eq!(ddl("datetime", 8, 23, 3), "timestamp(3)");
    assert_eq!(ddl("datetime2", 8, 27, 7), "timestamp(6)");
    assert_eq!(ddl("datetime2", 6, 19, 0), "timestamp(0)");
    assert_eq!(ddl("datetimeoffset", 10, 34, 7), "timestamptz(6)");
    assert_eq!(ddl("time", 5, 16, 7), "time(6)");
    assert_eq!(ddl("smalldatetime", 4, 16, 0), "timestamp(0)");
    assert_eq!(ddl("char", 10, 0, 0), "char(10)");
    assert_eq!(ddl("varchar", 100, 0, 0), "varchar(100)");
    assert_eq!(ddl("nvarchar", 100, 0, 0), "varchar(50)");
    assert_eq!(ddl("nvarchar", -1, 0, 0), "text");
    assert_eq!(ddl("varchar", -1, 0, 0), "text");
    assert_eq!(ddl("text", 16, 0, 0), "text");
    assert_eq!(ddl("ntext", 16, 0, 0), "text");
    assert_eq!(ddl("binary", 16, 0, 0), "bytea");
    assert_eq!(ddl("image", 16, 0, 0), "bytea");
    assert_eq!(ddl("uniqueidentifier", 16, 0, 0), "uuid");
    assert_eq!(ddl("xml", -1, 0, 0), "xml");
    assert_eq!(ddl("rowversion", 8, 0, 0), "bytea");
    assert_eq!(ddl("sql_variant", 8016, 0, 0), "text");
    assert_eq!(ddl("hierarchyid", 892, 0, 0), "text");
    assert_eq!(ddl("geography", -1, 0, 0), "bytea");
    assert_eq!(ddl("sysname", 256, 0, 0), "varchar(128)");
    assert_eq!(ddl("float", 8, 53, 0), "double precision");
    assert_eq!(ddl("float", 4, 24, 0), "real");
    assert_eq!(ddl("bit", 1, 1, 0), "boolean");
    let postgis = MappingOptions {
        spatial_as: SpatialAs::Postgis,
        ..Default::default()
    };
    assert_eq!(
        map_column(&column("geography", -1, 0, 0), &postgis)
            .unwrap()
            .ddl(),
        "geography"
    );
    assert!(!map_column(&column("sql_variant", 8016, 0, 0), &o)
        .unwrap()
        .warnings
        .is_empty());

    let mut udt = column("Point", 22, 0, 0);
    udt.user_type_name = "dbo.Point".into();
    let err = map_column(&udt, &o).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("col_Point")
            && message.contains("dbo.Point")
            && message.contains("column expression"),
        "{message}"
    );
    assert!(map_column(&column("cursor", 0, 0, 0), &o).is_err());
    assert!(map_column(&column("decimal", 17, 39, 0), &o).is_err());
}
