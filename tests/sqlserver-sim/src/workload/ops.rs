//! Planning and running the workload's transactions.
//!
//! Every worker has two lanes (one per connection). A lane owns the sample rows whose key
//! modulo the number of lanes equals its number, and the rows it inserts itself, so two
//! transactions that are open at the same time never touch the same row (they would block
//! each other forever inside one worker).

use std::collections::HashSet;
use std::fmt::Write;

use tiberius::ToSql;

use super::{SampleBounds, SqlClient, WorkloadConfig, WorkloadError, WorkloadStats};
use crate::sample::{large_text, SampleRng, WAREHOUSE_CODES};

/// Rows per multi-row INSERT in a large transaction.
const ROWS_PER_INSERT: usize = 500;
/// `sales.text_samples.v_nvarchar` is nvarchar(50): 50 UTF-16 code units.
const SAMPLE_TEXT_UNITS: usize = 50;
/// Line numbers the workload uses for its own order lines (the sample uses 1..=3).
const FIRST_LINE_NO: i16 = 100;
const LAST_LINE_NO: i16 = 32_000;

/// One statement of a planned transaction.
#[derive(Debug, Clone)]
enum Op {
    InsertLine {
        order: i64,
        line: i16,
        product: i32,
        quantity: i32,
        price_cents: i64,
    },
    UpdateLineQuantity {
        order: i64,
        line: i16,
        quantity: i32,
    },
    /// Changes the primary key (line_no): CDC shows delete + insert.
    UpdateLineKey {
        order: i64,
        line: i16,
        new_line: i16,
    },
    DeleteLine {
        order: i64,
        line: i16,
    },
    InsertLinesBulk {
        rows: Vec<(i64, i16, i32, i32, i64)>,
    },
    UpdateStock {
        warehouse: &'static str,
        product: i32,
        delta: i32,
    },
    /// Assigns only the nvarchar(max) and varbinary(max) columns.
    UpdateNoteLob {
        note: i32,
        body: String,
        attachment: Option<Vec<u8>>,
    },
    UpdateOrderStatus {
        order: i64,
        status: &'static str,
    },
    InsertSample {
        id: i32,
        label: String,
        text: String,
    },
    DeleteSample {
        id: i32,
    },
    InsertAudit {
        event: String,
        detail: Option<String>,
    },
}

impl Op {
    fn count(&self, stats: &mut WorkloadStats) {
        match self {
            Op::InsertLine { .. } | Op::InsertSample { .. } | Op::InsertAudit { .. } => {
                stats.inserts += 1
            }
            Op::InsertLinesBulk { rows } => stats.inserts += rows.len() as u64,
            Op::UpdateLineQuantity { .. }
            | Op::UpdateStock { .. }
            | Op::UpdateOrderStatus { .. } => stats.updates += 1,
            Op::UpdateLineKey { .. } => {
                stats.updates += 1;
                stats.key_updates += 1;
            }
            Op::UpdateNoteLob { .. } => {
                stats.updates += 1;
                stats.lob_updates += 1;
            }
            Op::DeleteLine { .. } | Op::DeleteSample { .. } => stats.deletes += 1,
        }
    }

    async fn run(&self, client: &mut SqlClient) -> Result<(), tiberius::error::Error> {
        let (sql, params): (String, Vec<&dyn ToSql>) = match self {
            Op::InsertLine { order, line, product, quantity, price_cents } => {
                let price = format!("{}.{:02}", price_cents / 100, price_cents % 100);
                let sql = format!(
                    "INSERT INTO sales.order_lines (order_id, line_no, product_id, quantity, unit_price) VALUES (@P1, @P2, @P3, @P4, {price})"
                );
                (sql, vec![order, line, product, quantity])
            }
            Op::UpdateLineQuantity { order, line, quantity } => (
                "UPDATE sales.order_lines SET quantity = @P3 WHERE order_id = @P1 AND line_no = @P2".into(),
                vec![order, line, quantity],
            ),
            Op::UpdateLineKey { order, line, new_line } => (
                "UPDATE sales.order_lines SET line_no = @P3 WHERE order_id = @P1 AND line_no = @P2".into(),
                vec![order, line, new_line],
            ),
            Op::DeleteLine { order, line } => {
                ("DELETE FROM sales.order_lines WHERE order_id = @P1 AND line_no = @P2".into(), vec![order, line])
            }
            Op::InsertLinesBulk { rows } => {
                for chunk in rows.chunks(ROWS_PER_INSERT) {
                    let mut sql =
                        String::from("INSERT INTO sales.order_lines (order_id, line_no, product_id, quantity, unit_price) VALUES ");
                    for (i, (order, line, product, quantity, cents)) in chunk.iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        let _ = write!(sql, "({order}, {line}, {product}, {quantity}, {}.{:02})", cents / 100, cents % 100);
                    }
                    client.execute(sql, &[]).await?;
                }
                return Ok(());
            }
            Op::UpdateStock { warehouse, product, delta } => (
                "UPDATE inventory.stock SET quantity = quantity + @P3, updated_at = SYSUTCDATETIME() WHERE warehouse_code = @P1 AND product_id = @P2"
                    .into(),
                vec![warehouse, product, delta],
            ),
            Op::UpdateNoteLob { note, body, attachment } => {
                ("UPDATE sales.customer_notes SET body = @P2, attachment = @P3 WHERE note_id = @P1".into(), vec![note, body, attachment])
            }
            Op::UpdateOrderStatus { order, status } => {
                ("UPDATE sales.orders SET status = @P2 WHERE order_id = @P1".into(), vec![order, status])
            }
            Op::InsertSample { id, label, text } => (
                "INSERT INTO sales.text_samples (id, label, v_nvarchar, v_nvarchar_max) VALUES (@P1, @P2, @P3, @P3)".into(),
                vec![id, label, text],
            ),
            Op::DeleteSample { id } => ("DELETE FROM sales.text_samples WHERE id = @P1".into(), vec![id]),
            Op::InsertAudit { event, detail } => (
                "INSERT INTO sales.audit_log (logged_at, event_name, detail) VALUES (GETDATE(), @P1, @P2)".into(),
                vec![event, detail],
            ),
        };
        client.execute(sql, &params).await?;
        Ok(())
    }
}

/// The longest prefix of `text` that fits nvarchar(`units`): SQL Server counts UTF-16 code
/// units, so a character outside the BMP (an emoji) takes two.
fn fit_nvarchar(text: &str, units: usize) -> String {
    let mut used = 0;
    text.chars()
        .take_while(|c| {
            used += c.len_utf16();
            used <= units
        })
        .collect()
}

/// A change to a lane's bookkeeping, undone when the transaction does not commit.
#[derive(Debug, Clone, Copy)]
enum Change {
    AddLine(i64, i16),
    RemoveLine(i64, i16),
}

/// Keys one lane owns.
#[derive(Debug)]
struct Lane {
    number: u64,
    lanes: u64,
    live_lines: Vec<(i64, i16)>,
    live_set: HashSet<(i64, i16)>,
    next_sample_id: i32,
    next_event: u64,
}

impl Lane {
    fn owns(&self, key: i64) -> bool {
        key.rem_euclid(self.lanes as i64) as u64 == self.number
    }

    /// A random key in `lo..=hi` that this lane owns (None if the range holds none).
    fn owned_in(&self, rng: &mut SampleRng, lo: i64, hi: i64) -> Option<i64> {
        if hi < lo {
            return None;
        }
        let first = lo + (self.number as i64 - lo).rem_euclid(self.lanes as i64);
        if first > hi {
            return None;
        }
        let count = (hi - first) / self.lanes as i64 + 1;
        let key = first + rng.range(0, count - 1) * self.lanes as i64;
        debug_assert!(self.owns(key));
        Some(key)
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::AddLine(o, l) => {
                if self.live_set.insert((o, l)) {
                    self.live_lines.push((o, l));
                }
            }
            Change::RemoveLine(o, l) => {
                if self.live_set.remove(&(o, l)) {
                    if let Some(i) = self.live_lines.iter().position(|x| *x == (o, l)) {
                        self.live_lines.swap_remove(i);
                    }
                }
            }
        }
    }

    fn undo(&mut self, changes: &[Change]) {
        for change in changes.iter().rev() {
            self.apply(match *change {
                Change::AddLine(o, l) => Change::RemoveLine(o, l),
                Change::RemoveLine(o, l) => Change::AddLine(o, l),
            });
        }
    }
}

/// A worker's generator and key ownership.
#[derive(Debug)]
pub struct WorkerState {
    worker: usize,
    bounds: SampleBounds,
    rng: SampleRng,
    lanes: [Lane; 2],
    transactions: u64,
    ddl_columns: u64,
}

impl WorkerState {
    pub fn new(worker: usize, workers: usize, bounds: SampleBounds, rng: SampleRng) -> Self {
        let lanes = workers as u64 * 2;
        let lane = |n: u64| Lane {
            number: n,
            lanes,
            live_lines: Vec::new(),
            live_set: HashSet::new(),
            next_sample_id: 1_000_000 * (n as i32 + 1),
            next_event: 0,
        };
        WorkerState {
            worker,
            bounds,
            rng,
            lanes: [lane(worker as u64 * 2), lane(worker as u64 * 2 + 1)],
            transactions: 0,
            ddl_columns: 0,
        }
    }

    fn new_line(&mut self, lane: usize, changes: &mut Vec<Change>) -> Option<(i64, i16)> {
        let b = self.bounds;
        for _ in 0..16 {
            let order = self.lanes[lane].owned_in(&mut self.rng, b.min_order, b.max_order)?;
            let line = self.rng.range(FIRST_LINE_NO as i64, LAST_LINE_NO as i64) as i16;
            if !self.lanes[lane].live_set.contains(&(order, line)) {
                self.lanes[lane].apply(Change::AddLine(order, line));
                changes.push(Change::AddLine(order, line));
                return Some((order, line));
            }
        }
        None
    }

    fn live_line(&mut self, lane: usize) -> Option<(i64, i16)> {
        let lines = &self.lanes[lane].live_lines;
        if lines.is_empty() {
            return None;
        }
        Some(lines[self.rng.below(lines.len() as u64) as usize])
    }

    fn product(&mut self) -> i32 {
        self.rng.range(
            self.bounds.min_product as i64,
            self.bounds.max_product as i64,
        ) as i32
    }

    /// Plans one transaction on `lane`; returns its statements and the bookkeeping changes.
    fn plan(&mut self, lane: usize, config: &WorkloadConfig) -> (Vec<Op>, Vec<Change>) {
        self.transactions += 1;
        let mut ops = Vec::new();
        let mut changes = Vec::new();
        if config.large_transaction_every > 0
            && self
                .transactions
                .is_multiple_of(config.large_transaction_every)
        {
            let mut rows = Vec::with_capacity(config.large_transaction_rows);
            for _ in 0..config.large_transaction_rows {
                let Some((order, line)) = self.new_line(lane, &mut changes) else {
                    break;
                };
                let product = self.product();
                rows.push((
                    order,
                    line,
                    product,
                    self.rng.range(1, 50) as i32,
                    self.rng.range(100, 99_999),
                ));
            }
            if !rows.is_empty() {
                ops.push(Op::InsertLinesBulk { rows });
            }
            return (ops, changes);
        }
        let statements = self.rng.range(1, 5);
        for _ in 0..statements {
            let b = self.bounds;
            match self.rng.below(100) {
                0..=24 => {
                    if let Some((order, line)) = self.new_line(lane, &mut changes) {
                        let product = self.product();
                        let (quantity, price_cents) =
                            (self.rng.range(1, 50) as i32, self.rng.range(100, 99_999));
                        ops.push(Op::InsertLine {
                            order,
                            line,
                            product,
                            quantity,
                            price_cents,
                        });
                    }
                }
                25..=39 => {
                    if let Some((order, line)) = self.live_line(lane) {
                        ops.push(Op::UpdateLineQuantity {
                            order,
                            line,
                            quantity: self.rng.range(1, 99) as i32,
                        });
                    }
                }
                40..=47 => {
                    if let Some((order, line)) = self.live_line(lane) {
                        let new_line =
                            self.rng.range(FIRST_LINE_NO as i64, LAST_LINE_NO as i64) as i16;
                        if !self.lanes[lane].live_set.contains(&(order, new_line)) {
                            for c in [
                                Change::RemoveLine(order, line),
                                Change::AddLine(order, new_line),
                            ] {
                                self.lanes[lane].apply(c);
                                changes.push(c);
                            }
                            ops.push(Op::UpdateLineKey {
                                order,
                                line,
                                new_line,
                            });
                        }
                    }
                }
                48..=55 => {
                    if let Some((order, line)) = self.live_line(lane) {
                        self.lanes[lane].apply(Change::RemoveLine(order, line));
                        changes.push(Change::RemoveLine(order, line));
                        ops.push(Op::DeleteLine { order, line });
                    }
                }
                56..=69 => {
                    if let Some(product) = self.lanes[lane].owned_in(
                        &mut self.rng,
                        b.min_product as i64,
                        b.max_product as i64,
                    ) {
                        // The sample stocks product p in warehouses p % 6 and (p + 1) % 6.
                        let first = product as usize % WAREHOUSE_CODES.len();
                        let warehouse = WAREHOUSE_CODES
                            [(first + self.rng.below(2) as usize) % WAREHOUSE_CODES.len()];
                        ops.push(Op::UpdateStock {
                            warehouse,
                            product: product as i32,
                            delta: self.rng.range(-5, 20) as i32,
                        });
                    }
                }
                70..=77 => {
                    if let Some(note) = self.lanes[lane].owned_in(
                        &mut self.rng,
                        b.min_note as i64,
                        b.max_note as i64,
                    ) {
                        let len = if self.rng.chance(20) {
                            9_000
                        } else {
                            self.rng.range(10, 500) as usize
                        };
                        let body = large_text(&mut self.rng, len, true);
                        let attachment_len = self.rng.range(0, 64);
                        let attachment = self
                            .rng
                            .chance(50)
                            .then(|| (0..attachment_len).map(|i| i as u8).collect());
                        ops.push(Op::UpdateNoteLob {
                            note: note as i32,
                            body,
                            attachment,
                        });
                    }
                }
                78..=85 => {
                    if let Some(order) =
                        self.lanes[lane].owned_in(&mut self.rng, b.min_order, b.max_order)
                    {
                        ops.push(Op::UpdateOrderStatus {
                            order,
                            status: self.rng.pick(crate::sample::ORDER_STATUSES),
                        });
                    }
                }
                86..=93 => {
                    let id = self.lanes[lane].next_sample_id;
                    self.lanes[lane].next_sample_id += 1;
                    let len = self.rng.range(1, 40) as usize;
                    let text = large_text(&mut self.rng, len, true);
                    ops.push(Op::InsertSample {
                        id,
                        label: format!("wl-{}", self.worker),
                        text: fit_nvarchar(&text, SAMPLE_TEXT_UNITS),
                    });
                    // Half of them are deleted again by the same transaction.
                    if self.rng.chance(50) {
                        ops.push(Op::DeleteSample { id });
                    }
                }
                _ => {
                    let lane_state = &mut self.lanes[lane];
                    lane_state.next_event += 1;
                    let event = format!("wl.{}.{}", lane_state.number, lane_state.next_event);
                    let detail = self
                        .rng
                        .chance(70)
                        .then(|| large_text(&mut self.rng, 40, false));
                    ops.push(Op::InsertAudit { event, detail });
                }
            }
        }
        (ops, changes)
    }

    fn wants_rollback(&mut self, config: &WorkloadConfig) -> bool {
        self.rng.chance(config.rollback_percent)
    }

    /// The DDL statement due now, if any (worker 0 only).
    fn ddl(&mut self, config: &WorkloadConfig) -> Option<String> {
        if self.worker != 0
            || config.ddl_every == 0
            || !self.transactions.is_multiple_of(config.ddl_every)
        {
            return None;
        }
        self.ddl_columns += 1;
        let n = self.ddl_columns.div_ceil(2);
        Some(if self.ddl_columns % 2 == 1 {
            format!("ALTER TABLE sales.audit_log ADD wl_extra_{n} int NULL")
        } else {
            format!("ALTER TABLE sales.audit_log DROP COLUMN wl_extra_{n}")
        })
    }
}

fn count_committed(ops: &[Op], stats: &mut WorkloadStats) {
    stats.committed += 1;
    for op in ops {
        op.count(stats);
    }
    stats.insert_then_delete +=
        ops.windows(2).filter(|w| matches!((&w[0], &w[1]), (Op::InsertSample { id: a, .. }, Op::DeleteSample { id: b }) if a == b)).count() as u64;
}

async fn run_ops(client: &mut SqlClient, ops: &[Op]) -> Result<(), tiberius::error::Error> {
    for op in ops {
        op.run(client).await?;
    }
    Ok(())
}

/// A server error inside a transaction is counted and the transaction rolled back; a broken
/// connection stops the workload.
async fn finish(
    client: &mut SqlClient,
    result: Result<(), tiberius::error::Error>,
    rollback: bool,
    ops: &[Op],
    changes: &[Change],
    lane: &mut Lane,
    stats: &mut WorkloadStats,
) -> Result<bool, WorkloadError> {
    match result {
        Ok(()) if !rollback => {
            client
                .simple_query("COMMIT TRANSACTION")
                .await?
                .into_results()
                .await?;
            count_committed(ops, stats);
            Ok(true)
        }
        Ok(()) => {
            client
                .simple_query("ROLLBACK TRANSACTION")
                .await?
                .into_results()
                .await?;
            lane.undo(changes);
            stats.rolled_back += 1;
            Ok(false)
        }
        Err(tiberius::error::Error::Server(_)) => {
            client
                .simple_query("IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION")
                .await?
                .into_results()
                .await?;
            lane.undo(changes);
            stats.failed += 1;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// T_A begins first and commits last; T_B runs entirely inside it.
pub(super) async fn interleaved_pair(
    a: &mut SqlClient,
    b: &mut SqlClient,
    state: &mut WorkerState,
    config: &WorkloadConfig,
    stats: &mut WorkloadStats,
) -> Result<(), WorkloadError> {
    let (ops_a, changes_a) = state.plan(0, config);
    let rollback_a = state.wants_rollback(config);
    let (ops_b, changes_b) = state.plan(1, config);
    let rollback_b = state.wants_rollback(config);
    let split = ops_a.len().div_ceil(2);

    a.simple_query("BEGIN TRANSACTION")
        .await?
        .into_results()
        .await?;
    let first_a = run_ops(a, &ops_a[..split]).await;
    b.simple_query("BEGIN TRANSACTION")
        .await?
        .into_results()
        .await?;
    let result_b = run_ops(b, &ops_b).await;
    let committed_b = finish(
        b,
        result_b,
        rollback_b,
        &ops_b,
        &changes_b,
        &mut state.lanes[1],
        stats,
    )
    .await?;
    let result_a = match first_a {
        Ok(()) => run_ops(a, &ops_a[split..]).await,
        Err(e) => Err(e),
    };
    let committed_a = finish(
        a,
        result_a,
        rollback_a,
        &ops_a,
        &changes_a,
        &mut state.lanes[0],
        stats,
    )
    .await?;
    if committed_a && committed_b {
        stats.out_of_order_commits += 1;
    }
    if let Some(ddl) = state.ddl(config) {
        // DDL waits for the schema lock that other workers' open transactions hold; a lock
        // timeout is counted, not fatal.
        match run_ddl(a, &ddl).await {
            Ok(()) => stats.ddl += 1,
            Err(tiberius::error::Error::Server(_)) => {
                state.ddl_columns -= 1;
                stats.failed += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn run_ddl(client: &mut SqlClient, ddl: &str) -> Result<(), tiberius::error::Error> {
    client.simple_query(ddl).await?.into_results().await?;
    Ok(())
}

/// One transaction on lane 0 (used for the last odd transaction of a bounded run).
pub(super) async fn single(
    client: &mut SqlClient,
    state: &mut WorkerState,
    config: &WorkloadConfig,
    stats: &mut WorkloadStats,
) -> Result<(), WorkloadError> {
    let (ops, changes) = state.plan(0, config);
    let rollback = state.wants_rollback(config);
    client
        .simple_query("BEGIN TRANSACTION")
        .await?
        .into_results()
        .await?;
    let result = run_ops(client, &ops).await;
    finish(
        client,
        result,
        rollback,
        &ops,
        &changes,
        &mut state.lanes[0],
        stats,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> SampleBounds {
        SampleBounds {
            min_order: 1000,
            max_order: 1099,
            min_product: 1,
            max_product: 100,
            min_note: 1,
            max_note: 25,
        }
    }

    fn plans(seed: u64) -> Vec<String> {
        let config = WorkloadConfig {
            large_transaction_every: 7,
            large_transaction_rows: 20,
            ..Default::default()
        };
        let mut state = WorkerState::new(1, 3, bounds(), SampleRng::new(seed));
        (0..40)
            .map(|i| format!("{:?}", state.plan(i % 2, &config).0))
            .collect()
    }

    #[test]
    fn sample_texts_fit_their_nvarchar_50_column() {
        assert_eq!(fit_nvarchar("ab😀c", 3), "ab");
        assert_eq!(fit_nvarchar("ab😀c", 4), "ab😀");
        let config = WorkloadConfig::default();
        let mut state = WorkerState::new(1, 3, bounds(), SampleRng::new(5));
        let mut samples = 0;
        for i in 0..2_000 {
            for op in state.plan(i % 2, &config).0 {
                if let Op::InsertSample { text, .. } = op {
                    samples += 1;
                    assert!(text.encode_utf16().count() <= SAMPLE_TEXT_UNITS, "{text}");
                }
            }
        }
        assert!(samples > 0, "the plans hold no sample inserts");
    }

    #[test]
    fn plans_are_reproducible_and_lanes_disjoint() {
        assert_eq!(plans(9), plans(9));
        assert_ne!(plans(9), plans(10));
        let config = WorkloadConfig::default();
        let mut state = WorkerState::new(1, 3, bounds(), SampleRng::new(3));
        for i in 0..200 {
            let lane = i % 2;
            let number = state.lanes[lane].number as i64;
            for op in state.plan(lane, &config).0 {
                let key = match op {
                    Op::InsertLine { order, .. }
                    | Op::UpdateLineKey { order, .. }
                    | Op::DeleteLine { order, .. } => order,
                    Op::UpdateStock { product, .. } => product as i64,
                    Op::UpdateNoteLob { note, .. } => note as i64,
                    _ => continue,
                };
                assert_eq!(
                    key.rem_euclid(6),
                    number,
                    "{op:?} crosses into another lane"
                );
            }
        }
    }
}
