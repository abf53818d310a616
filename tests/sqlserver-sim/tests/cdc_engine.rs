//! CDC golden tests through the engine in-process, derived from Microsoft's documentation and
//! the team references (sqlserver-cdc.md, tds-standin.md §6). Column layouts:
//! change table `[start_lsn, end_lsn, seqval, operation, update_mask, <captured…>, command_id]`,
//! all-changes TVF `[start_lsn, seqval, operation, update_mask, <captured…>]`.

mod cdc_support;

use std::time::Duration;

use cdc_support::*;
use dbsync_sqlserver_sim::engine::cdc::{CaptureMode, CdcConfig};
use dbsync_sqlserver_sim::types::Value;

const T_COLUMNS: &str = "id int NOT NULL PRIMARY KEY, a int NULL, b nvarchar(20) NULL";

fn ops(rows: &[Vec<Value>], op_column: usize) -> Vec<i64> {
    rows.iter().map(|r| int(&r[op_column])).collect()
}

#[test]
fn enabling_sets_flags_and_fills_the_metadata_tables() {
    let f = fixture();
    let mut s = f.session();
    assert_eq!(
        int(&scalar(
            &mut s,
            &format!("SELECT is_cdc_enabled FROM sys.databases WHERE name = N'{DB}'")
        )),
        1
    );
    f.tracked_table("t", T_COLUMNS);
    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT is_tracked_by_cdc FROM sys.tables WHERE name = N't'"
        )),
        1
    );

    let ct = rows(&mut s, "SELECT * FROM cdc.change_tables");
    assert_eq!(ct.len(), 1);
    let r = &ct[0];
    assert_eq!(r.len(), 13, "documented column count of cdc.change_tables");
    assert_eq!(
        text(&r[3]),
        "dbo_t",
        "default capture instance is schema_table"
    );
    assert_eq!(
        bytes(&r[4]),
        f.min_lsn("dbo_t").to_vec(),
        "start_lsn is fn_cdc_get_min_lsn"
    );
    assert_eq!(r[5], Value::Null, "end_lsn is always NULL");
    assert_eq!(int(&r[6]), 1, "net changes default to 1 with a primary key");
    assert_eq!(
        int(&r[12]),
        1,
        "partition_switch is 1 for non-partitioned tables"
    );
    let ct_object_id = int(&r[0]);
    assert_eq!(
        ct_object_id,
        int(&scalar(
            &mut s,
            "SELECT object_id FROM sys.tables WHERE name = N'dbo_t_CT'"
        ))
    );

    let cols = rows(&mut s, "SELECT column_name, column_ordinal, object_id FROM cdc.captured_columns ORDER BY column_ordinal");
    let names: Vec<String> = cols.iter().map(|r| text(&r[0])).collect();
    assert_eq!(names, ["id", "a", "b"]);
    assert_eq!(ops(&cols, 1), [1, 2, 3]);
    assert!(
        cols.iter().all(|r| int(&r[2]) == ct_object_id),
        "captured_columns.object_id is the change table's id"
    );
    let idx = rows(
        &mut s,
        "SELECT column_name, index_ordinal FROM cdc.index_columns",
    );
    assert_eq!(idx.len(), 1);
    assert_eq!(text(&idx[0][0]), "id");

    let ct_cols = rows(&mut s, "SELECT name FROM sys.columns WHERE object_id = OBJECT_ID(N'cdc.dbo_t_CT') ORDER BY column_id");
    let ct_names: Vec<String> = ct_cols.iter().map(|r| text(&r[0])).collect();
    assert_eq!(
        ct_names,
        [
            "__$start_lsn",
            "__$end_lsn",
            "__$seqval",
            "__$operation",
            "__$update_mask",
            "id",
            "a",
            "b",
            "__$command_id"
        ]
    );

    let help = rows(&mut s, "EXEC sys.sp_cdc_help_change_data_capture");
    assert_eq!(help.len(), 1);
    assert_eq!(text(&help[0][2]), "dbo_t");
    assert_eq!(text(&help[0][14]), "[id], [a], [b]");
}

#[test]
fn enable_table_errors_match_sql_server() {
    let f = fixture_with(CdcConfig::default());
    let mut s = f.session();
    exec(&mut s, &format!("CREATE TABLE dbo.t ({T_COLUMNS})"));
    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL");
    assert_eq!(e.number, 22901, "database not enabled: {e}");
    exec(&mut s, "EXEC sys.sp_cdc_enable_db");

    let e = error(
        &mut s,
        "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't'",
    );
    assert_eq!(e.number, 201, "@role_name must be supplied: {e}");

    exec(&mut s, "CREATE TABLE dbo.heap (a int NULL, b int NULL)");
    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'heap', @role_name = NULL, @supports_net_changes = 1");
    assert_eq!(e.number, 22939, "net changes without a key: {e}");
    // Without net changes a heap is fine.
    exec(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'heap', @role_name = NULL");
    let heap_net = rows(
        &mut s,
        "SELECT supports_net_changes FROM cdc.change_tables WHERE capture_instance = N'dbo_heap'",
    );
    assert_eq!(int(&heap_net[0][0]), 0);

    exec(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL");
    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL");
    assert_eq!(e.number, 22926, "duplicate instance name: {e}");
    exec(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, @capture_instance = N'dbo_t_v2'");
    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, @capture_instance = N'dbo_t_v3'");
    assert_eq!(e.number, 22962, "at most two capture instances: {e}");

    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'nope', @role_name = NULL");
    assert_eq!(e.number, 22931, "missing source table: {e}");
    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, @capture_instance = N'x', @captured_column_list = N'a, b'");
    assert_eq!(e.number, 22943, "the key column must be captured: {e}");
}

/// tds-standin.md §6.2: T1 begins and writes, T2 writes and commits, then T1 commits:
/// start_lsn(T2) < start_lsn(T1) while seqval(T1's first change) < seqval(T2's change).
#[test]
fn interleaved_transactions_order_by_commit_lsn() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut t1 = f.session();
    let mut t2 = f.session();
    exec(
        &mut t1,
        "BEGIN TRANSACTION; INSERT INTO dbo.t (id, a) VALUES (1, 10)",
    );
    exec(
        &mut t2,
        "BEGIN TRANSACTION; INSERT INTO dbo.t (id, a) VALUES (2, 20); COMMIT",
    );
    exec(
        &mut t1,
        "INSERT INTO dbo.t (id, a) VALUES (3, 30); COMMIT TRANSACTION",
    );

    let ct = f.change_rows("dbo_t");
    let ids: Vec<i64> = ct.iter().map(|r| int(&r[5])).collect();
    assert_eq!(ids, [2, 1, 3], "ordered by commit LSN, then seqval");
    let (t2_row, t1_first, t1_second) = (&ct[0], &ct[1], &ct[2]);
    assert!(
        bytes(&t2_row[0]) < bytes(&t1_first[0]),
        "T2 committed first"
    );
    assert_eq!(
        bytes(&t1_first[0]),
        bytes(&t1_second[0]),
        "one transaction shares its commit LSN"
    );
    assert!(
        bytes(&t1_first[2]) < bytes(&t2_row[2]),
        "T1's first change happened before T2's"
    );
    assert!(
        bytes(&t1_first[2]) < bytes(&t1_second[2]),
        "seqval orders changes inside a transaction"
    );
    assert_eq!(int(&t1_first[8]), 1, "command id of T1's first statement");
    assert_eq!(int(&t1_second[8]), 2, "command id of T1's second statement");
    assert!(
        ct.iter().all(|r| r[1] == Value::Null),
        "__$end_lsn is always NULL"
    );

    let mut s = f.session();
    let mapping = rows(
        &mut s,
        "SELECT start_lsn, tran_id FROM cdc.lsn_time_mapping ORDER BY start_lsn",
    );
    assert_eq!(mapping.len(), 2, "one mapping row per captured transaction");
    assert_eq!(bytes(&mapping[0][0]), bytes(&t2_row[0]));
    assert_eq!(bytes(&mapping[1][0]), bytes(&t1_first[0]));
    assert!(
        mapping.iter().all(|r| bytes(&r[1]).iter().any(|b| *b != 0)),
        "real transactions have a non-zero tran_id"
    );
    assert_eq!(
        f.max_lsn().to_vec(),
        bytes(&t1_first[0]),
        "fn_cdc_get_max_lsn is the last captured commit"
    );
}

#[test]
fn rolled_back_transactions_leave_nothing() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(
        &mut s,
        "BEGIN TRANSACTION; INSERT INTO dbo.t (id) VALUES (1); ROLLBACK TRANSACTION",
    );
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (2)");
    let ct = f.change_rows("dbo_t");
    assert_eq!(ct.len(), 1);
    assert_eq!(int(&ct[0][5]), 2);
}

/// A primary-key update is captured as delete (1) + insert (2) with the same start_lsn and
/// seqval, delete first (sqlserver-cdc.md §4.3, pitfalls 3).
#[test]
fn primary_key_update_is_delete_then_insert() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.t (id, a, b) VALUES (1, 10, N'x')");
    exec(&mut s, "UPDATE dbo.t SET id = 100 WHERE id = 1");
    exec(&mut s, "UPDATE dbo.t SET a = 11 WHERE id = 100");

    let all = f.all_changes("dbo_t", "all update old");
    assert_eq!(ops(&all, 2), [2, 1, 2, 3, 4]);
    let (delete, insert) = (&all[1], &all[2]);
    assert_eq!(bytes(&delete[0]), bytes(&insert[0]), "same commit LSN");
    assert_eq!(bytes(&delete[1]), bytes(&insert[1]), "same seqval");
    assert_eq!(int(&delete[4]), 1);
    assert_eq!(int(&insert[4]), 100);
    assert_eq!(text(&insert[6]), "x");
    // 'all' drops the before image of ordinary updates only.
    assert_eq!(ops(&f.all_changes("dbo_t", "all"), 2), [2, 1, 2, 4]);
}

/// Update mask layout (sqlserver-cdc.md §2.6): 10 captured columns give 0x03FF on insert;
/// ordinal 1 is the LSB of the last byte; updates mark the assigned columns.
#[test]
fn update_mask_layout_and_bit_functions() {
    let f = fixture();
    f.tracked_table("w", "c1 int NOT NULL PRIMARY KEY, c2 int, c3 int, c4 int, c5 int, c6 int, c7 int, c8 int, c9 int, c10 int");
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.w (c1) VALUES (1)");
    exec(&mut s, "UPDATE dbo.w SET c9 = 9 WHERE c1 = 1");
    exec(&mut s, "UPDATE dbo.w SET c2 = 2, c10 = 10 WHERE c1 = 1");
    exec(&mut s, "DELETE FROM dbo.w WHERE c1 = 1");
    let all = f.all_changes("dbo_w", "all update old");
    let masks: Vec<Vec<u8>> = all.iter().map(|r| bytes(&r[3])).collect();
    assert_eq!(
        masks,
        [
            vec![0x03, 0xFF],
            vec![0x01, 0x00],
            vec![0x01, 0x00],
            vec![0x02, 0x02],
            vec![0x02, 0x02],
            vec![0x03, 0xFF]
        ]
    );

    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT sys.fn_cdc_get_column_ordinal(N'dbo_w', N'c9')"
        )),
        9
    );
    assert_eq!(
        int(&scalar(&mut s, "SELECT sys.fn_cdc_is_bit_set(9, 0x0100)")),
        1
    );
    assert_eq!(
        int(&scalar(&mut s, "SELECT sys.fn_cdc_is_bit_set(1, 0x0100)")),
        0
    );
    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT sys.fn_cdc_has_column_changed(N'dbo_w', N'c10', 0x0202)"
        )),
        1
    );
    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT sys.fn_cdc_has_column_changed(N'dbo_w', N'c3', 0x0202)"
        )),
        0
    );
}

/// LOB rules (sqlserver-cdc.md §7): in op 3 text/ntext/image are always NULL and (max) types
/// are NULL unless changed (mask bit clear); op 1 carries (max) values but not text/ntext/image.
#[test]
fn lob_columns_follow_the_documented_null_rules() {
    let f = fixture();
    f.tracked_table(
        "docs",
        "id int NOT NULL PRIMARY KEY, n int NULL, body nvarchar(max) NULL, blob varbinary(max) NULL, \
         old_text text NULL, old_ntext ntext NULL, old_image image NULL",
    );
    let mut s = f.session();
    exec(
        &mut s,
        "INSERT INTO dbo.docs VALUES (1, 1, N'long body', 0x0102, 'text', N'ntext', 0x0A0B)",
    );
    exec(&mut s, "UPDATE dbo.docs SET n = 2 WHERE id = 1");
    exec(
        &mut s,
        "UPDATE dbo.docs SET body = N'new body' WHERE id = 1",
    );
    exec(&mut s, "DELETE FROM dbo.docs WHERE id = 1");
    let all = f.all_changes("dbo_docs", "all update old");
    assert_eq!(ops(&all, 2), [2, 3, 4, 3, 4, 1]);
    let col = |r: &Vec<Value>, ordinal: usize| r[3 + ordinal].clone();

    let insert = &all[0];
    assert_eq!(text(&col(insert, 3)), "long body");
    assert_eq!(text(&col(insert, 5)), "text", "op 2 carries text values");

    let (before, after) = (&all[1], &all[2]);
    assert_eq!(bytes(&before[3]), vec![0b0000_0010], "only n changed");
    assert_eq!(
        col(before, 3),
        Value::Null,
        "unchanged nvarchar(max) is NULL in op 3"
    );
    assert_eq!(
        col(before, 4),
        Value::Null,
        "unchanged varbinary(max) is NULL in op 3"
    );
    assert_eq!(col(before, 5), Value::Null, "text is always NULL in op 3");
    assert_eq!(col(before, 6), Value::Null, "ntext is always NULL in op 3");
    assert_eq!(col(before, 7), Value::Null, "image is always NULL in op 3");
    assert_eq!(text(&col(after, 3)), "long body", "op 4 carries the value");

    // A LOB-only update is captured, with only the LOB bit set and its old value in op 3.
    let (before, after) = (&all[3], &all[4]);
    assert_eq!(bytes(&before[3]), vec![0b0000_0100]);
    assert_eq!(
        text(&col(before, 3)),
        "long body",
        "a changed (max) column keeps its value in op 3"
    );
    assert_eq!(text(&col(after, 3)), "new body");
    assert_eq!(
        col(before, 4),
        Value::Null,
        "the other (max) column did not change"
    );

    let delete = &all[5];
    assert_eq!(
        text(&col(delete, 3)),
        "new body",
        "op 1 carries (max) values"
    );
    assert_eq!(bytes(&col(delete, 4)), vec![1, 2]);
    assert_eq!(col(delete, 5), Value::Null, "text is always NULL in op 1");
    assert_eq!(col(delete, 7), Value::Null, "image is always NULL in op 1");
}

fn error_313_message(e: &dbsync_sqlserver_sim::api::SqlError) {
    assert_eq!((e.number, e.class, e.state), (313, 16, 3), "{e}");
    assert_eq!(e.message, "An insufficient number of arguments were supplied for the procedure or function cdc.fn_cdc_get_all_changes_ ... .");
}

/// Msg 313 cases (sqlserver-cdc.md §3.2).
#[test]
fn out_of_range_queries_raise_313() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (1)");
    let (min, max) = (f.min_lsn("dbo_t"), f.max_lsn());
    let below = dbsync_sqlserver_sim::engine::lsn::Lsn::from_bytes(&min)
        .unwrap()
        .decrement()
        .to_bytes();
    let above = dbsync_sqlserver_sim::engine::lsn::Lsn::from_bytes(&max)
        .unwrap()
        .increment()
        .to_bytes();
    let q = |from: &str, to: &str, filter: &str| {
        format!("SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t({from}, {to}, {filter})")
    };
    for sql in [
        q(&hex(&below), &hex(&max), "N'all'"),
        q(&hex(&min), &hex(&above), "N'all'"),
        q(&hex(&max), &hex(&min), "N'all'"),
        q("NULL", &hex(&max), "N'all'"),
        q(&hex(&min), "NULL", "N'all'"),
        q(&hex(&min), &hex(&max), "N'everything'"),
    ] {
        error_313_message(&error(&mut s, &sql));
    }
    // from need not exist in the mapping: increment_lsn values are accepted.
    let from = hex(&dbsync_sqlserver_sim::engine::lsn::Lsn::from_bytes(&min)
        .unwrap()
        .increment()
        .to_bytes());
    assert_eq!(rows(&mut s, &q(&from, &hex(&max), "N'all'")).len(), 1);
    // Unknown instance: min_lsn is all zeros and the function does not exist.
    assert_eq!(
        bytes(&scalar(&mut s, "SELECT sys.fn_cdc_get_min_lsn(N'nope')")),
        vec![0u8; 10]
    );
    let e = error(
        &mut s,
        &format!(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_nope({}, {}, N'all')",
            hex(&min),
            hex(&max)
        ),
    );
    assert_eq!(e.number, 208, "{e}");
}

#[test]
fn lsn_functions() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    assert_eq!(
        bytes(&scalar(
            &mut s,
            "SELECT sys.fn_cdc_increment_lsn(0x0000002A000001F8FFFF)"
        )),
        [0, 0, 0, 0x2A, 0, 0, 1, 0xF9, 0, 0]
    );
    assert_eq!(
        bytes(&scalar(
            &mut s,
            "SELECT sys.fn_cdc_decrement_lsn(0x0000002A000001F90000)"
        )),
        [0, 0, 0, 0x2A, 0, 0, 1, 0xF8, 0xFF, 0xFF]
    );
    assert_eq!(
        scalar(&mut s, "SELECT sys.fn_cdc_get_max_lsn()"),
        Value::Null,
        "NULL before capture ever ran"
    );

    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (1)");
    let first = f.max_lsn();
    f.clock.advance(chrono::Duration::minutes(10));
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (2)");
    let second = f.max_lsn();
    assert!(first < second);
    let time = |lsn: &[u8]| {
        scalar(
            &mut f.session(),
            &format!("SELECT sys.fn_cdc_map_lsn_to_time({})", hex(lsn)),
        )
    };
    let t1 = time(&first);
    assert_ne!(t1, Value::Null);
    let lsn_at = |op: &str, t: &str| {
        scalar(
            &mut f.session(),
            &format!("SELECT sys.fn_cdc_map_time_to_lsn(N'{op}', '{t}')"),
        )
    };
    assert_eq!(
        bytes(&lsn_at(
            "smallest greater than or equal",
            "2024-03-01T12:00:00"
        )),
        first.to_vec()
    );
    assert_eq!(
        bytes(&lsn_at("smallest greater than", "2024-03-01T12:00:00")),
        second.to_vec()
    );
    assert_eq!(
        bytes(&lsn_at("largest less than or equal", "2024-03-01T12:05:00")),
        first.to_vec()
    );
    assert_eq!(
        lsn_at("largest less than", "2024-03-01T12:00:00"),
        Value::Null
    );
}

/// Retention cleanup moves min_lsn; a query below it fails with 313; the explicit cleanup
/// procedure refuses a watermark below the current one (22957).
#[test]
fn cleanup_moves_min_lsn_and_old_ranges_fail_with_313() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(
        &mut s,
        "EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = 60",
    );
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (1)");
    let old_min = f.min_lsn("dbo_t");
    let old_max = f.max_lsn();
    f.clock.advance(chrono::Duration::minutes(90));
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (2)");
    let new_commit = f.max_lsn();

    let watermark = f
        .cdc
        .cleanup_by_retention(DB)
        .unwrap()
        .expect("a watermark");
    assert_eq!(
        watermark.to_bytes(),
        new_commit,
        "everything older than 60 minutes before the last commit goes"
    );
    assert_eq!(f.min_lsn("dbo_t"), new_commit);
    assert_eq!(
        bytes(&scalar(&mut s, "SELECT sys.fn_cdc_get_min_lsn(N'dbo_t')")),
        new_commit.to_vec()
    );
    let ct = f.change_rows("dbo_t");
    assert_eq!(ct.len(), 1, "rows below the watermark are deleted");
    assert_eq!(int(&ct[0][5]), 2);
    let e = error(
        &mut s,
        &format!(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t({}, {}, N'all')",
            hex(&old_min),
            hex(&new_commit)
        ),
    );
    error_313_message(&e);
    assert_eq!(
        rows(&mut s, "SELECT COUNT(*) FROM cdc.lsn_time_mapping WHERE start_lsn < sys.fn_cdc_get_min_lsn(N'dbo_t')")[0][0],
        Value::Int(0),
        "the mapping is trimmed below the watermark"
    );
    let e = error(&mut s, &format!("EXEC sys.sp_cdc_cleanup_change_table @capture_instance = N'dbo_t', @low_water_mark = {}, @threshold = 5000", hex(&old_max)));
    assert_eq!(e.number, 22957, "{e}");
}

/// Columns added after enabling are not in the existing instance; a second instance picks
/// them up from its own start_lsn, both are filled side by side, and a third is refused.
#[test]
fn second_capture_instance_after_add_column() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.t (id, a) VALUES (1, 1)");
    exec(&mut s, "ALTER TABLE dbo.t ADD c int NULL");
    exec(&mut s, "INSERT INTO dbo.t (id, a, c) VALUES (2, 2, 2)");
    assert_eq!(
        f.change_rows("dbo_t")[1].len(),
        9,
        "the existing change table keeps its shape"
    );

    exec(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, @capture_instance = N'dbo_t_v2'");
    let v1_start = f.min_lsn("dbo_t");
    let v2_start = f.min_lsn("dbo_t_v2");
    assert!(
        v2_start > v1_start && v2_start > f.max_lsn(),
        "a new instance starts at the current LSN"
    );
    exec(&mut s, "INSERT INTO dbo.t (id, a, c) VALUES (3, 3, 3)");
    let v1 = f.change_rows("dbo_t");
    let v2 = f.change_rows("dbo_t_v2");
    assert_eq!(v1.len(), 3);
    assert_eq!(
        v2.len(),
        1,
        "the new instance has only changes after its start"
    );
    assert_eq!(int(&v2[0][8]), 3, "and captures the new column");
    assert_eq!(
        bytes(&v1[2][0]),
        bytes(&v2[0][0]),
        "same change, same commit LSN in both"
    );

    let discovered = rows(
        &mut s,
        &format!(
            "SELECT capture_instance FROM cdc.change_tables WHERE start_lsn BETWEEN {} AND {}",
            hex(&v1_start),
            hex(&f.max_lsn())
        ),
    );
    assert!(
        discovered.iter().any(|r| text(&r[0]) == "dbo_t_v2"),
        "Debezium discovers the new instance by start_lsn"
    );
    let e = error(&mut s, "EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N't', @role_name = NULL, @capture_instance = N'dbo_t_v3'");
    assert_eq!(e.number, 22962);

    exec(&mut s, "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N't', @capture_instance = N'dbo_t'");
    assert_eq!(
        rows(&mut s, "SELECT capture_instance FROM cdc.change_tables").len(),
        1
    );
    assert_eq!(
        rows(
            &mut s,
            "SELECT name FROM sys.tables WHERE name = N'dbo_t_CT'"
        )
        .len(),
        0,
        "the change table is dropped"
    );
    let e = error(
        &mut s,
        &format!(
            "SELECT * FROM cdc.fn_cdc_get_all_changes_dbo_t({}, {}, N'all')",
            hex(&v1_start),
            hex(&f.max_lsn())
        ),
    );
    assert_eq!(e.number, 208, "a disabled instance's function is gone: {e}");
    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT is_tracked_by_cdc FROM sys.tables WHERE name = N't'"
        )),
        1
    );
    exec(&mut s, "EXEC sys.sp_cdc_disable_table @source_schema = N'dbo', @source_name = N't', @capture_instance = N'all'");
    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT is_tracked_by_cdc FROM sys.tables WHERE name = N't'"
        )),
        0
    );
}

/// Dropped captured columns come back as NULL; DDL on a tracked table is recorded in
/// cdc.ddl_history.
#[test]
fn drop_column_gives_null_and_ddl_history_rows() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.t (id, a, b) VALUES (1, 1, N'one')");
    exec(&mut s, "ALTER TABLE dbo.t DROP COLUMN b");
    exec(&mut s, "INSERT INTO dbo.t (id, a) VALUES (2, 2)");
    let ct = f.change_rows("dbo_t");
    assert_eq!(text(&ct[0][7]), "one");
    assert_eq!(ct[1][7], Value::Null, "a dropped captured column is NULL");

    exec(&mut s, "ALTER TABLE dbo.t ALTER COLUMN a bigint NULL");
    let history = rows(&mut s, "SELECT source_object_id, object_id, required_column_update, ddl_command, ddl_lsn, ddl_time FROM cdc.ddl_history ORDER BY ddl_lsn");
    assert_eq!(history.len(), 2);
    assert!(text(&history[0][3]).contains("DROP COLUMN b"));
    assert_eq!(int(&history[0][2]), 0);
    assert_eq!(int(&history[1][2]), 1, "a captured column's type changed");
    assert!(bytes(&history[0][4]) < bytes(&history[1][4]));
    let via_proc = rows(
        &mut s,
        "EXEC sys.sp_cdc_get_ddl_history @capture_instance = N'dbo_t'",
    );
    assert_eq!(via_proc.len(), 2);
    exec(&mut s, "INSERT INTO dbo.t (id, a) VALUES (3, 3000000000)");
    assert_eq!(
        int(&f.change_rows("dbo_t")[2][6]),
        3_000_000_000,
        "the change table follows the type change"
    );
}

#[test]
fn dropping_the_source_table_drops_its_instances() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "DROP TABLE dbo.t");
    assert!(rows(&mut s, "SELECT * FROM cdc.change_tables").is_empty());
    assert!(rows(
        &mut s,
        "SELECT name FROM sys.tables WHERE name = N'dbo_t_CT'"
    )
    .is_empty());
    assert!(f.cdc.instances(DB).is_empty());
}

/// Manual mode and stopped jobs: commits wait for a scan; max_lsn reflects capture progress,
/// not commits.
#[test]
fn capture_is_asynchronous_in_manual_mode() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    f.cdc.set_mode(DB, CaptureMode::Manual).unwrap();
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (1)");
    assert_eq!(
        scalar(&mut s, "SELECT sys.fn_cdc_get_max_lsn()"),
        Value::Null
    );
    assert_eq!(f.cdc.pending_transactions(DB), 1);
    exec(&mut s, "EXEC sys.sp_cdc_scan");
    assert_eq!(f.change_rows("dbo_t").len(), 1);

    f.cdc.set_mode(DB, CaptureMode::Synchronous).unwrap();
    exec(&mut s, "EXEC sys.sp_cdc_stop_job @job_type = N'capture'");
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (2)");
    let frozen = f.max_lsn();
    assert_eq!(
        f.change_rows("dbo_t").len(),
        1,
        "a stopped capture job freezes max_lsn"
    );
    exec(&mut s, "EXEC sys.sp_cdc_start_job @job_type = N'capture'");
    assert_eq!(f.change_rows("dbo_t").len(), 2);
    assert!(f.max_lsn() > frozen);
}

/// Agent mode writes idle lsn_time_mapping rows (tran_id 0x00) that move max_lsn without
/// change rows behind them (sqlserver-cdc.md §8.1).
#[test]
fn agent_mode_writes_heartbeat_rows_when_idle() {
    let f = fixture_with(CdcConfig {
        mode: CaptureMode::Agent,
        agent_poll_override: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let mut s = f.session();
    exec(&mut s, "EXEC sys.sp_cdc_enable_db");
    f.tracked_table("t", T_COLUMNS);
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (1)");
    assert!(
        wait_until(Duration::from_secs(5), || f.change_rows("dbo_t").len() == 1),
        "the agent captures the insert"
    );
    let after_insert = f.max_lsn();
    assert!(
        wait_until(Duration::from_secs(5), || f.max_lsn() > after_insert),
        "idle cycles move max_lsn"
    );
    let idle = rows(
        &mut s,
        "SELECT start_lsn FROM cdc.lsn_time_mapping WHERE tran_id = 0x00",
    );
    assert!(!idle.is_empty());
    let real = rows(
        &mut s,
        "SELECT MAX(start_lsn) FROM cdc.lsn_time_mapping WHERE tran_id <> 0x00",
    );
    assert_eq!(
        bytes(&real[0][0]),
        after_insert.to_vec(),
        "Debezium's transaction-only max skips idle rows"
    );
    assert_eq!(
        f.change_rows("dbo_t").len(),
        1,
        "no change rows behind idle entries"
    );
}

/// Net changes: one row per key with its final state; insert+delete inside the range
/// vanishes; PK changes are delete + insert.
#[test]
fn net_changes_fold_each_row() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(
        &mut s,
        "INSERT INTO dbo.t (id, a) VALUES (1, 1), (2, 2), (3, 3)",
    );
    let from = f.max_lsn();
    let from = hex(&dbsync_sqlserver_sim::engine::lsn::Lsn::from_bytes(&from)
        .unwrap()
        .increment()
        .to_bytes());
    exec(&mut s, "UPDATE dbo.t SET a = 10 WHERE id = 1");
    exec(&mut s, "UPDATE dbo.t SET a = 11 WHERE id = 1");
    exec(&mut s, "DELETE FROM dbo.t WHERE id = 2");
    exec(&mut s, "INSERT INTO dbo.t (id, a) VALUES (4, 4)");
    exec(&mut s, "INSERT INTO dbo.t (id, a) VALUES (5, 5)");
    exec(&mut s, "DELETE FROM dbo.t WHERE id = 5");
    let to = hex(&f.max_lsn());
    let net = rows(
        &mut s,
        &format!("SELECT * FROM cdc.fn_cdc_get_net_changes_dbo_t({from}, {to}, N'all')"),
    );
    let summary: Vec<(i64, i64)> = net.iter().map(|r| (int(&r[3]), int(&r[1]))).collect();
    assert_eq!(summary, [(1, 4), (2, 1), (4, 2)]);
    assert_eq!(int(&net[0][4]), 11, "final state of the row");
    assert_eq!(net[0][2], Value::Null, "'all' has no mask");
    let with_mask = rows(
        &mut s,
        &format!("SELECT * FROM cdc.fn_cdc_get_net_changes_dbo_t({from}, {to}, N'all with mask')"),
    );
    assert_eq!(bytes(&with_mask[0][2]), vec![0b010]);
    let merge = rows(
        &mut s,
        &format!("SELECT * FROM cdc.fn_cdc_get_net_changes_dbo_t({from}, {to}, N'all with merge')"),
    );
    assert_eq!(
        merge.iter().map(|r| int(&r[1])).collect::<Vec<_>>(),
        [5, 1, 5]
    );
    let e = error(
        &mut s,
        &format!("SELECT * FROM cdc.fn_cdc_get_net_changes_dbo_t({to}, {from}, N'all')"),
    );
    assert_eq!(e.number, 313);
}

/// DDL triggers ON DATABASE with EVENTDATA() (the hybrid mode's DDL history).
#[test]
fn ddl_trigger_records_event_data() {
    let f = fixture_with(CdcConfig::default());
    let mut s = f.session();
    exec(
        &mut s,
        "CREATE TABLE dbo.ddl_log (id int IDENTITY(1,1) PRIMARY KEY, event_xml nvarchar(max))",
    );
    exec(&mut s, "CREATE TRIGGER dbsync_ddl_trigger ON DATABASE FOR DDL_TABLE_EVENTS, RENAME AS INSERT INTO dbo.ddl_log (event_xml) VALUES (CAST(EVENTDATA() AS nvarchar(max)))");
    exec(&mut s, "CREATE TABLE dbo.x (id int PRIMARY KEY)");
    exec(&mut s, "ALTER TABLE dbo.x ADD note nvarchar(50) NULL");
    exec(&mut s, "EXEC sp_rename N'dbo.x.note', N'remark', N'COLUMN'");
    exec(&mut s, "DROP TABLE dbo.x");
    let log: Vec<String> = rows(&mut s, "SELECT event_xml FROM dbo.ddl_log ORDER BY id")
        .iter()
        .map(|r| text(&r[0]))
        .collect();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log[0].contains("<EventType>CREATE_TABLE</EventType>")
            && log[0].contains("<SchemaName>dbo</SchemaName>")
            && log[0].contains("<ObjectName>x</ObjectName>")
    );
    assert!(
        log[1].contains("<EventType>ALTER_TABLE</EventType>")
            && log[1].contains(
                "<CommandText>ALTER TABLE dbo.x ADD note nvarchar(50) NULL</CommandText>"
            )
    );
    assert!(log[1].contains("<AlterTableActionList><Create><Columns><Name>note</Name></Columns></Create></AlterTableActionList>"));
    assert!(
        log[2].contains("<EventType>RENAME</EventType>")
            && log[2].contains("<NewObjectName>remark</NewObjectName>")
    );
    assert!(log[3].contains("<EventType>DROP_TABLE</EventType>"));
    exec(&mut s, "DROP TRIGGER dbsync_ddl_trigger ON DATABASE");
    exec(&mut s, "CREATE TABLE dbo.y (id int PRIMARY KEY)");
    assert_eq!(
        rows(&mut s, "SELECT id FROM dbo.ddl_log").len(),
        4,
        "a dropped trigger no longer fires"
    );
}

#[test]
fn jobs_are_configurable_and_listed_in_msdb() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(
        &mut s,
        "EXEC sys.sp_cdc_change_job @job_type = N'capture', @pollinginterval = 1, @maxtrans = 100",
    );
    exec(
        &mut s,
        "EXEC sys.sp_cdc_change_job @job_type = N'cleanup', @retention = 2880, @threshold = 1000",
    );
    let e = error(
        &mut s,
        "EXEC sys.sp_cdc_change_job @job_type = N'capture', @retention = 10",
    );
    assert!(
        e.number != 0,
        "a cleanup-only parameter on the capture job fails"
    );
    let jobs = rows(&mut f.engine.session("msdb").unwrap(), "SELECT job_type, maxtrans, pollinginterval, retention, threshold FROM dbo.cdc_jobs ORDER BY job_type");
    assert_eq!(jobs.len(), 2);
    assert_eq!(text(&jobs[0][0]), "capture");
    assert_eq!((int(&jobs[0][1]), int(&jobs[0][2])), (100, 1));
    assert_eq!((int(&jobs[1][3]), int(&jobs[1][4])), (2880, 1000));
    assert_eq!(rows(&mut s, "EXEC sys.sp_cdc_help_jobs").len(), 2);
}

#[test]
fn disable_db_removes_everything() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "EXEC sys.sp_cdc_disable_db");
    assert_eq!(
        int(&scalar(
            &mut s,
            &format!("SELECT is_cdc_enabled FROM sys.databases WHERE name = N'{DB}'")
        )),
        0
    );
    assert!(rows(&mut s, "SELECT name FROM sys.schemas WHERE name = N'cdc'").is_empty());
    assert_eq!(
        int(&scalar(
            &mut s,
            "SELECT is_tracked_by_cdc FROM sys.tables WHERE name = N't'"
        )),
        0
    );
    exec(&mut s, "EXEC sys.sp_cdc_enable_db");
}

/// TRUNCATE TABLE is refused on a tracked table (it would bypass capture).
#[test]
fn truncate_of_a_tracked_table_fails_with_4711() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    exec(&mut s, "INSERT INTO dbo.t (id) VALUES (1)");
    let e = error(&mut s, "TRUNCATE TABLE dbo.t");
    assert_eq!(e.number, 4711, "{e}");
    assert_eq!(int(&scalar(&mut s, "SELECT COUNT(*) FROM dbo.t")), 1);
}

/// Paging through the all-changes TVF (TOP + keyset + ORDER BY in its natural order, as the
/// capture service does) returns the same rows as one full read; other orders still sort.
#[test]
fn paging_the_change_function_matches_a_full_read() {
    let f = fixture();
    f.tracked_table("t", T_COLUMNS);
    let mut s = f.session();
    for i in 0..20 {
        exec(&mut s, &format!("INSERT INTO dbo.t (id, a) VALUES ({i}, {i}); UPDATE dbo.t SET a = a + 1 WHERE id = {i}"));
    }
    let (from, to) = (hex(&f.min_lsn("dbo_t")), hex(&f.max_lsn()));
    let full = f.all_changes("dbo_t", "all update old");
    assert_eq!(full.len(), 60);
    let order = "ORDER BY [__$start_lsn], [__$seqval], [__$operation]";
    let mut paged: Vec<Vec<Value>> = Vec::new();
    loop {
        let keyset = match paged.last() {
            None => String::new(),
            Some(r) => format!(
                " WHERE ([__$start_lsn] > {l} OR ([__$start_lsn] = {l} AND ([__$seqval] > {q} OR ([__$seqval] = {q} AND [__$operation] > {o}))))",
                l = hex(&bytes(&r[0])),
                q = hex(&bytes(&r[1])),
                o = int(&r[2])
            ),
        };
        let page = rows(&mut s, &format!("SELECT TOP (7) * FROM cdc.fn_cdc_get_all_changes_dbo_t({from}, {to}, N'all update old'){keyset} {order}"));
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, full);
    let reversed = rows(&mut s, &format!("SELECT TOP (3) * FROM cdc.fn_cdc_get_all_changes_dbo_t({from}, {to}, N'all update old') ORDER BY [__$start_lsn] DESC, [__$seqval] DESC, [__$operation] DESC"));
    assert_eq!(
        reversed,
        full.iter().rev().take(3).cloned().collect::<Vec<_>>()
    );
}
