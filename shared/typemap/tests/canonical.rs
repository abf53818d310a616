//! The canonical form of each source value equals the canonical form PostgreSQL computes from
//! the value our encoder stored, and differs when the stored value differs.

mod support;

use dbsync_proto::v1::{value::Kind, ColumnSchema, DateTimeOffset, Value};
use dbsync_typemap::temporal::{days_from_civil, TICKS_PER_DAY, TICKS_PER_SECOND};
use dbsync_typemap::*;
use support::*;

fn canonical(value: &Value, ty: &PgColumnType) -> String {
    let mut out = Vec::new();
    canonical_bytes(value, ty, &mut out);
    String::from_utf8(out).unwrap()
}

async fn assert_canonical_matches(
    table: &str,
    column: ColumnSchema,
    options: MappingOptions,
    values: Vec<Value>,
) {
    let client = client().await;
    // A different session TimeZone must not matter.
    client.batch_execute("SET TimeZone = 'Asia/Kolkata'; SET extra_float_digits = 0; SET bytea_output = 'escape'").await.unwrap();
    let ty = map_column(&column, &options).unwrap();
    copy_into(&client, table, &ty, &values).await;
    let server = select_text(&client, table, &pg_canonical_sql("v", &ty)).await;
    for (i, value) in values.iter().enumerate() {
        assert_eq!(
            server[i].as_deref(),
            Some(canonical(value, &ty).as_str()),
            "{table} row {i}: {value:?}"
        );
    }
}

fn dec(unscaled: i128, scale: u32) -> Value {
    v(Kind::Decimal(decimal_from_parts(unscaled, scale)))
}

#[tokio::test]
async fn canonical_forms_match_postgres() {
    let o = MappingOptions::default;
    let t = |s: &str| v(Kind::Text(s.into()));
    assert_canonical_matches(
        "c_bit",
        column("bit", 1, 1, 0),
        o(),
        vec![v(Kind::Bool(true)), v(Kind::Bool(false)), null()],
    )
    .await;
    assert_canonical_matches(
        "c_int",
        column("bigint", 8, 19, 0),
        o(),
        vec![v(Kind::Int(i64::MIN)), v(Kind::Int(0))],
    )
    .await;
    assert_canonical_matches(
        "c_tinyint",
        column("tinyint", 1, 3, 0),
        o(),
        vec![v(Kind::Int(255))],
    )
    .await;
    assert_canonical_matches(
        "c_money",
        column("money", 8, 19, 4),
        o(),
        vec![
            v(Kind::Decimal(money_from_sql(i64::MIN))),
            v(Kind::Decimal(money_from_sql(125))),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_dec",
        column("decimal", 17, 38, 38),
        o(),
        vec![dec(-1, 38), dec(0, 0)],
    )
    .await;
    assert_canonical_matches(
        "c_dec2",
        column("decimal", 9, 12, 2),
        o(),
        vec![dec(5, 0), dec(-12345, 2)],
    )
    .await;
    assert_canonical_matches(
        "c_real",
        column("real", 4, 24, 0),
        o(),
        vec![
            v(Kind::Float32(1.1)),
            v(Kind::Float32(-0.0)),
            v(Kind::Float32(f32::NAN)),
            v(Kind::Float32(f32::NEG_INFINITY)),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_float",
        column("float", 8, 53, 0),
        o(),
        vec![
            v(Kind::Float64(0.1)),
            v(Kind::Float64(-0.0)),
            v(Kind::Float64(f64::NAN)),
            v(Kind::Float64(f64::MAX)),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_date",
        column("date", 3, 10, 0),
        o(),
        vec![
            v(Kind::Date(0)),
            v(Kind::Date(days_from_civil(9999, 12, 31) as i32)),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_time",
        column("time", 5, 16, 7),
        o(),
        vec![
            v(Kind::Time(TICKS_PER_DAY - 1)),
            v(Kind::Time(1_234_565)),
            v(Kind::Time(0)),
        ],
    )
    .await;
    let day = |y, m, d| days_from_civil(y, m, d) * TICKS_PER_DAY;
    assert_canonical_matches(
        "c_dt2",
        column("datetime2", 8, 27, 7),
        o(),
        vec![
            v(Kind::Datetime(0)),
            v(Kind::Datetime(day(2020, 12, 31) + TICKS_PER_DAY - 5)),
            v(Kind::Datetime(day(1999, 12, 31) + 1_234_567)),
            v(Kind::Datetime(day(9999, 12, 31) + TICKS_PER_DAY - 1)),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_datetime",
        column("datetime", 8, 23, 3),
        o(),
        vec![
            v(Kind::Datetime(datetime_from_sql(0, 1))),
            v(Kind::Datetime(datetime_from_sql(0, 2))),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_dto",
        column("datetimeoffset", 10, 34, 7),
        o(),
        vec![
            v(Kind::Datetimeoffset(DateTimeOffset {
                utc_ticks: day(2020, 1, 1),
                offset_minutes: 840,
            })),
            v(Kind::Datetimeoffset(DateTimeOffset {
                utc_ticks: day(2020, 1, 1) + TICKS_PER_DAY - 3,
                offset_minutes: -840,
            })),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_uuid",
        column("uniqueidentifier", 16, 0, 0),
        o(),
        vec![v(Kind::Uuid((0u8..16).collect()))],
    )
    .await;
    assert_canonical_matches(
        "c_bytea",
        column("varbinary", -1, 0, 0),
        o(),
        vec![
            v(Kind::Binary(vec![0, 1, 0xfe, b'\\'])),
            v(Kind::Binary(vec![])),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_char",
        column("char", 6, 0, 0),
        o(),
        vec![t("ab    "), t("ab"), t(""), t("😀")],
    )
    .await;
    assert_canonical_matches(
        "c_varchar",
        column("varchar", 10, 0, 0),
        o(),
        vec![t(""), t("a  "), t("é\\'"), null()],
    )
    .await;
    let strip = MappingOptions {
        on_invalid_text: InvalidTextPolicy::Strip,
        ..Default::default()
    };
    assert_canonical_matches(
        "c_strip",
        column("nvarchar", -1, 0, 0),
        strip,
        vec![t("a\0b")],
    )
    .await;
    assert_canonical_matches(
        "c_xml",
        column("xml", -1, 0, 0),
        o(),
        vec![
            t("<?xml version=\"1.0\" encoding=\"utf-16\"?><a>x</a>"),
            t("<b/>"),
        ],
    )
    .await;
    assert_canonical_matches(
        "c_variant",
        column("sql_variant", 8016, 0, 0),
        o(),
        vec![v(Kind::Int(7)), dec(125, 1), t("s")],
    )
    .await;
}

#[test]
fn canonical_forms_tell_values_apart_exactly_when_they_should() {
    let o = MappingOptions::default();
    let c = |value: Value, col: ColumnSchema| canonical(&value, &map_column(&col, &o).unwrap());
    // money and its numeric(19,4) are the same value.
    assert_eq!(
        c(
            v(Kind::Decimal(money_from_sql(125_000))),
            column("money", 8, 19, 4)
        ),
        c(dec(125, 1), column("decimal", 9, 19, 4))
    );
    // datetime2(7) values that round to the same microsecond are equal; others are not.
    let dt2 = || column("datetime2", 8, 27, 7);
    assert_eq!(
        c(v(Kind::Datetime(1_234_565)), dt2()),
        c(v(Kind::Datetime(1_234_570)), dt2())
    );
    assert_ne!(
        c(v(Kind::Datetime(1_234_564)), dt2()),
        c(v(Kind::Datetime(1_234_565)), dt2())
    );
    // The same instant with different offsets is the same timestamptz.
    let dto = |offset_minutes| {
        v(Kind::Datetimeoffset(DateTimeOffset {
            utc_ticks: 42 * TICKS_PER_SECOND,
            offset_minutes,
        }))
    };
    assert_eq!(
        c(dto(60), column("datetimeoffset", 10, 34, 7)),
        c(dto(-300), column("datetimeoffset", 10, 34, 7))
    );
    // char padding does not count; varchar trailing blanks do; NULL differs from ''.
    assert_eq!(
        c(v(Kind::Text("ab  ".into())), column("char", 4, 0, 0)),
        c(v(Kind::Text("ab".into())), column("char", 4, 0, 0))
    );
    assert_ne!(
        c(v(Kind::Text("ab ".into())), column("varchar", 4, 0, 0)),
        c(v(Kind::Text("ab".into())), column("varchar", 4, 0, 0))
    );
    assert_ne!(
        c(v(Kind::Text("".into())), column("varchar", 4, 0, 0)),
        c(null(), column("varchar", 4, 0, 0))
    );
    // Framing keeps field boundaries: ("ab","c") vs ("a","bc").
    let ty = map_column(&column("varchar", 4, 0, 0), &o).unwrap();
    let row = |a: &str, b: &str| {
        let mut out = Vec::new();
        canonical_bytes(&v(Kind::Text(a.into())), &ty, &mut out);
        canonical_bytes(&v(Kind::Text(b.into())), &ty, &mut out);
        out
    };
    assert_ne!(row("ab", "c"), row("a", "bc"));
    assert_eq!(row("ab", "c"), b"2:ab;1:c;".to_vec());
}
