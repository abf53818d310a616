//! The exact CDC queries real consumers issue (Debezium, from sqlserver-cdc.md §10; redpanda
//! connect's direct read) run against the stand-in and return what they expect.

mod cdc_support;

use cdc_support::*;
use dbsync_sqlserver_sim::types::Value;

fn setup() -> Fixture {
    let f = fixture();
    f.tracked_table(
        "customers",
        "id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL, notes nvarchar(max) NULL",
    );
    let mut s = f.session();
    exec(
        &mut s,
        "INSERT INTO dbo.customers VALUES (1, N'a', N'x'), (2, N'b', NULL)",
    );
    exec(&mut s, "UPDATE dbo.customers SET name = N'c' WHERE id = 1");
    exec(&mut s, "DELETE FROM dbo.customers WHERE id = 2");
    f.cdc.heartbeat(DB).unwrap();
    f
}

#[test]
fn debezium_metadata_and_position_queries() {
    let f = setup();
    let mut s = f.session();
    assert_eq!(
        text(&scalar(
            &mut s,
            &format!("SELECT name FROM sys.databases WHERE name = N'{DB}'")
        )),
        DB
    );
    let cols = rows(&mut s, &format!("SELECT object_id, column_name FROM [{DB}].cdc.captured_columns ORDER BY object_id, column_id"));
    assert_eq!(cols.len(), 3);
    let max = scalar(&mut s, &format!("SELECT [{DB}].sys.fn_cdc_get_max_lsn()"));
    assert_eq!(
        bytes(&max),
        f.max_lsn().to_vec(),
        "three-part function names resolve in that database"
    );
    let max_tx = scalar(
        &mut s,
        &format!("SELECT MAX(start_lsn) FROM [{DB}].cdc.lsn_time_mapping WHERE tran_id <> 0x00"),
    );
    assert!(
        bytes(&max_tx) < bytes(&max),
        "the idle row is above the last transaction"
    );
    let next = rows(
        &mut s,
        &format!("SELECT MAX(start_lsn) FROM (SELECT TOP (2) start_lsn FROM [{DB}].cdc.lsn_time_mapping WHERE tran_id <> 0x00 ORDER BY start_lsn) as next_lsns"),
    );
    assert_eq!(next.len(), 1);
    let min = scalar(
        &mut s,
        &format!("SELECT [{DB}].sys.fn_cdc_get_min_lsn('dbo_customers')"),
    );
    assert_eq!(bytes(&min), f.min_lsn("dbo_customers").to_vec());
    let inc = scalar(
        &mut s,
        &format!(
            "SELECT [{DB}].sys.fn_cdc_increment_lsn({})",
            hex(&bytes(&min))
        ),
    );
    assert!(bytes(&inc) > bytes(&min));
    let window = rows(
        &mut s,
        &format!(
            "SELECT * FROM [{DB}].cdc.change_tables WHERE start_lsn BETWEEN {} AND {}",
            hex(&bytes(&min)),
            hex(&bytes(&max))
        ),
    );
    assert_eq!(window.len(), 1);
    assert_eq!(
        text(&window[0][3]),
        "dbo_customers",
        "read by position: column 4 is capture_instance"
    );
    assert_eq!(
        rows(
            &mut s,
            &format!("EXEC [{DB}].sys.sp_cdc_help_change_data_capture")
        )
        .len(),
        1
    );
}

#[test]
fn debezium_change_query() {
    let f = setup();
    let mut s = f.session();
    let (from, to) = (hex(&f.min_lsn("dbo_customers")), hex(&f.max_lsn()));
    let changes = rows(
        &mut s,
        &format!(
            "SELECT *, TODATETIMEOFFSET([{DB}].sys.fn_cdc_map_lsn_to_time([__$start_lsn]), DATEPART(TZOFFSET, SYSDATETIMEOFFSET())) \
             FROM [{DB}].cdc.[fn_cdc_get_all_changes_dbo_customers]({from}, {to}, N'all update old') \
             order by [__$start_lsn] ASC, [__$seqval] ASC, [__$operation] ASC"
        ),
    );
    let ops: Vec<i64> = changes.iter().map(|r| int(&r[2])).collect();
    assert_eq!(ops, [2, 2, 3, 4, 1]);
    assert!(
        changes
            .iter()
            .all(|r| matches!(r.last(), Some(Value::DateTimeOffset { .. }))),
        "commit time appended last"
    );
    let skipped = rows(
        &mut s,
        &format!(
            "SELECT * FROM [{DB}].cdc.[fn_cdc_get_all_changes_dbo_customers]({from}, {to}, N'all update old') \
             WHERE __$operation NOT IN (3) order by [__$start_lsn] ASC, [__$seqval] ASC, [__$operation] ASC"
        ),
    );
    assert_eq!(skipped.len(), 4);
}

#[test]
fn direct_change_table_reads() {
    let f = setup();
    let mut s = f.session();
    let (from, to) = (hex(&f.min_lsn("dbo_customers")), hex(&f.max_lsn()));
    // redpanda connect
    let direct = rows(
        &mut s,
        &format!(
            "SELECT * FROM cdc.dbo_customers_CT WITH (NOLOCK) WHERE ({from} IS NULL OR [__$start_lsn] > {from}) AND ({to} IS NULL OR [__$start_lsn] <= {to}) \
             ORDER BY [__$start_lsn] ASC, [__$command_id] ASC, [__$operation] ASC"
        ),
    );
    assert_eq!(direct.len(), 5);
    let listing = rows(
        &mut s,
        "SELECT s.name, t.name, ct.capture_instance, ct.start_lsn FROM sys.tables t JOIN sys.schemas s ON t.schema_id = s.schema_id \
         LEFT JOIN cdc.change_tables ct ON ct.source_object_id = t.object_id WHERE s.name != 'cdc'",
    );
    assert!(listing
        .iter()
        .any(|r| text(&r[1]) == "customers" && text(&r[2]) == "dbo_customers"));
}
