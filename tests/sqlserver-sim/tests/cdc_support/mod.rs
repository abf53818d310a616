//! Shared fixture of the CDC tests: an in-process engine with a manual clock and CDC.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime};
use dbsync_sqlserver_sim::api::SqlError;
use dbsync_sqlserver_sim::engine::cdc::{Cdc, CdcConfig};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig, EngineSession, ManualClock};
use dbsync_sqlserver_sim::types::Value;

pub const DB: &str = "cdctest";

pub fn start_time() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2024, 3, 1)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
}

pub struct Fixture {
    pub engine: Engine,
    pub clock: Arc<ManualClock>,
    pub cdc: Arc<Cdc>,
}

pub fn fixture_with(config: CdcConfig) -> Fixture {
    let clock = Arc::new(ManualClock::new(start_time()));
    let engine = Engine::new(EngineConfig {
        clock: clock.clone(),
        ..Default::default()
    });
    let cdc = Cdc::install(&engine, config.clone());
    cdc.set_config(config);
    engine
        .run("master", &format!("CREATE DATABASE {DB}"))
        .expect("create database");
    Fixture { engine, clock, cdc }
}

/// A database with CDC enabled (synchronous capture).
pub fn fixture() -> Fixture {
    let f = fixture_with(CdcConfig::default());
    let mut s = f.session();
    exec(&mut s, "EXEC sys.sp_cdc_enable_db");
    f
}

impl Fixture {
    pub fn session(&self) -> EngineSession {
        self.engine.session(DB).expect("session")
    }

    /// Creates `dbo.<table>` with `columns` and enables it with default options.
    pub fn tracked_table(&self, table: &str, columns: &str) {
        let mut s = self.session();
        exec(&mut s, &format!("CREATE TABLE dbo.{table} ({columns})"));
        exec(&mut s, &format!("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'{table}', @role_name = NULL"));
    }

    pub fn min_lsn(&self, instance: &str) -> [u8; 10] {
        self.cdc
            .min_lsn(DB, instance)
            .expect("instance exists")
            .to_bytes()
    }

    pub fn max_lsn(&self) -> [u8; 10] {
        self.cdc.max_lsn(DB).expect("capture has run").to_bytes()
    }

    /// `cdc.fn_cdc_get_all_changes_<instance>(min, max, filter)` rows.
    pub fn all_changes(&self, instance: &str, filter: &str) -> Vec<Vec<Value>> {
        let (from, to) = (hex(&self.min_lsn(instance)), hex(&self.max_lsn()));
        rows(
            &mut self.session(),
            &format!(
                "SELECT * FROM cdc.fn_cdc_get_all_changes_{instance}({from}, {to}, N'{filter}')"
            ),
        )
    }

    /// Rows of `cdc.<instance>_CT` in clustered order.
    pub fn change_rows(&self, instance: &str) -> Vec<Vec<Value>> {
        rows(
            &mut self.session(),
            &format!("SELECT * FROM cdc.[{instance}_CT] ORDER BY __$start_lsn, __$command_id, __$seqval, __$operation"),
        )
    }
}

pub fn exec(s: &mut EngineSession, sql: &str) {
    if let Err(e) = s.run(sql) {
        panic!("{sql}\nfailed: {e}");
    }
}

/// Rows of the last result set.
pub fn rows(s: &mut EngineSession, sql: &str) -> Vec<Vec<Value>> {
    match s.run(sql) {
        Ok(results) => results
            .into_iter()
            .last()
            .map(|r| r.rows)
            .unwrap_or_default(),
        Err(e) => panic!("{sql}\nfailed: {e}"),
    }
}

pub fn scalar(s: &mut EngineSession, sql: &str) -> Value {
    rows(s, sql)
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .unwrap_or(Value::Null)
}

pub fn error(s: &mut EngineSession, sql: &str) -> SqlError {
    match s.run(sql) {
        Ok(r) => panic!("{sql}\nshould fail, returned {r:?}"),
        Err(e) => e,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("0x");
    for b in bytes {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

pub fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::Binary(b) => b.to_vec(),
        other => panic!("expected binary, got {other:?}"),
    }
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::TinyInt(i) => *i as i64,
        Value::SmallInt(i) => *i as i64,
        Value::Int(i) => *i as i64,
        Value::BigInt(i) => *i,
        Value::Bit(b) => *b as i64,
        other => panic!("expected an integer, got {other:?}"),
    }
}

pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}
