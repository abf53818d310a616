//! Row changes per second the engine accepts with CDC on (synchronous capture, the costliest
//! mode: the change rows are written inside each commit). Prints the measured rates; the
//! assertion is a floor that holds in debug builds. Release builds are expected to pass
//! 50k row changes/s on 2 cores (`cargo test --release -p dbsync-sqlserver-sim --test
//! cdc_throughput -- --nocapture`).

mod cdc_support;

use std::fmt::Write;
use std::time::Instant;

use cdc_support::*;

#[test]
fn cdc_throughput() {
    let f = fixture();
    f.tracked_table(
        "orders",
        "id int NOT NULL PRIMARY KEY, customer int NOT NULL, amount decimal(12,2) NULL, status varchar(20) NULL, \
         note nvarchar(100) NULL, created datetime2(7) NULL, flag bit NULL",
    );
    let rows: usize = if cfg!(debug_assertions) { 20_000 } else { 200_000 };
    let per_statement = 500;
    let per_transaction = 2_000;
    let mut s = f.session();

    let started = Instant::now();
    let mut id = 0usize;
    while id < rows {
        let mut batch = String::from("BEGIN TRANSACTION;");
        for _ in 0..per_transaction / per_statement {
            batch.push_str("INSERT INTO dbo.orders VALUES ");
            for i in 0..per_statement {
                if i > 0 {
                    batch.push(',');
                }
                let n = id + i;
                let _ = write!(batch, "({n}, {}, {}.25, 'new', N'note {n}', '2024-01-01T00:00:00.1234567', 1)", n % 977, n % 1000);
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
        exec(&mut s, &format!("UPDATE dbo.orders SET status = 'paid', amount = amount + 1 WHERE id >= {lo} AND id < {}", lo + chunk));
    }
    let update_rate = rows as f64 / started.elapsed().as_secs_f64();

    let ct = int(&scalar(&mut s, "SELECT COUNT(*) FROM cdc.dbo_orders_CT"));
    assert_eq!(ct as usize, rows * 3, "one row per insert, two per update");
    println!("cdc_throughput: {rows} inserts at {insert_rate:.0} rows/s, {rows} updates at {update_rate:.0} rows/s (CDC synchronous)");
    assert!(insert_rate > 5_000.0 && update_rate > 5_000.0, "insert {insert_rate:.0}/s, update {update_rate:.0}/s");
}
