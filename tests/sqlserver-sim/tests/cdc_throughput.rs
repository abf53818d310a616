//! Row changes per second the engine accepts with CDC on (synchronous capture, the costliest
//! mode: the change rows are written inside each commit). Prints the measured rates; the
//! assertion is a floor that holds in debug builds. Release builds are expected to pass
//! 50k row changes/s on 2 cores (`cargo test --release -p dbsync-sqlserver-sim --test
//! cdc_throughput -- --nocapture`).

mod cdc_support;

use std::fmt::Write;
use std::time::Instant;

use cdc_support::*;

const COLUMNS: &str = "id int NOT NULL PRIMARY KEY, customer int NOT NULL, amount decimal(12,2) NULL, status varchar(20) NULL, \
     note nvarchar(100) NULL, created datetime2(7) NULL, flag bit NULL";

/// Inserts then updates `rows` rows of `dbo.<table>`; returns (inserts/s, updates/s).
fn measure(f: &Fixture, table: &str, rows: usize) -> (f64, f64) {
    let per_statement = 500;
    let per_transaction = 2_000;
    let mut s = f.session();
    let started = Instant::now();
    let mut id = 0usize;
    while id < rows {
        let mut batch = String::from("BEGIN TRANSACTION;");
        for _ in 0..per_transaction / per_statement {
            let _ = write!(batch, "INSERT INTO dbo.{table} VALUES ");
            for i in 0..per_statement {
                if i > 0 {
                    batch.push(',');
                }
                let n = id + i;
                let _ = write!(
                    batch,
                    "({n}, {}, {}.25, 'new', N'note {n}', '2024-01-01T00:00:00.1234567', 1)",
                    n % 977,
                    n % 1000
                );
            }
            batch.push(';');
            id += per_statement;
        }
        batch.push_str("COMMIT;");
        exec(&mut s, &batch);
    }
    let insert_rate = rows as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let chunk = 5_000;
    for lo in (0..rows).step_by(chunk) {
        exec(&mut s, &format!("UPDATE dbo.{table} SET status = 'paid', amount = amount + 1 WHERE id >= {lo} AND id < {}", lo + chunk));
    }
    (insert_rate, rows as f64 / started.elapsed().as_secs_f64())
}

#[test]
fn cdc_throughput() {
    let f = fixture();
    let rows: usize = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    // Tracked first, so that a growing process (allocator, snapshots) does not favour CDC.
    f.tracked_table("orders", COLUMNS);
    let (insert_rate, update_rate) = measure(&f, "orders", rows);
    exec(
        &mut f.session(),
        &format!("CREATE TABLE dbo.plain ({COLUMNS})"),
    );
    let (plain_insert, plain_update) = measure(&f, "plain", rows);

    let ct = int(&scalar(
        &mut f.session(),
        "SELECT COUNT(*) FROM cdc.dbo_orders_CT",
    ));
    assert_eq!(ct as usize, rows * 3, "one row per insert, two per update");
    assert_eq!(
        int(&scalar(
            &mut f.session(),
            "SELECT COUNT(*) FROM cdc.lsn_time_mapping"
        )) as usize,
        rows / 2_000 + rows / 5_000
    );
    // One page of the capture service's TVF query over the whole backlog (the TVF
    // materializes its range, so a page costs O(range)).
    let (min, max) = (hex(&f.min_lsn("dbo_orders")), hex(&f.max_lsn()));
    let started = Instant::now();
    let page = cdc_support::rows(
        &mut f.session(),
        &format!(
            "SELECT TOP (1000) [__$start_lsn], [__$seqval], [__$operation], [__$update_mask], id, status \
             FROM cdc.fn_cdc_get_all_changes_dbo_orders({min}, {max}, N'all update old') ORDER BY [__$start_lsn], [__$seqval], [__$operation]"
        ),
    );
    assert_eq!(page.len(), 1000);
    let page_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "cdc_throughput: one 1000-row TVF page over {} change rows took {page_ms:.0} ms",
        rows * 3
    );
    println!(
        "cdc_throughput: {rows} rows, CDC on: {insert_rate:.0} inserts/s, {update_rate:.0} updates/s; \
         untracked table: {plain_insert:.0} inserts/s, {plain_update:.0} updates/s"
    );
    assert!(
        insert_rate > 5_000.0 && update_rate > 5_000.0,
        "insert {insert_rate:.0}/s, update {update_rate:.0}/s"
    );
}
