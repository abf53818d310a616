//! The parser's fast path for constant-only INSERT batches (`src/engine/parse/fast.rs`) must
//! mean exactly what sqlparser's reading means. Every batch here runs twice on fresh engines:
//! as written (fast path, then sqlparser from the first statement it does not read) and
//! behind a leading comment, which sends the whole batch to sqlparser. Everything
//! the client would see (rows, counts, errors with number and line, transaction changes) and
//! the table contents afterwards must be the same.

use dbsync_sqlserver_sim::api::{
    Cancelled, EnvChange, ResultColumn, ResultSink, Session, SqlError, StatementKind,
};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::types::{SqlType, Value};

#[derive(Default)]
struct Recording(Vec<String>);

impl ResultSink for Recording {
    fn columns(&mut self, columns: &[ResultColumn]) -> Result<(), Cancelled> {
        self.0.push(format!("columns {columns:?}"));
        Ok(())
    }
    fn row(&mut self, row: &[Value]) -> Result<(), Cancelled> {
        self.0.push(format!("row {row:?}"));
        Ok(())
    }
    fn done(
        &mut self,
        kind: StatementKind,
        count: Option<u64>,
        in_proc: bool,
    ) -> Result<(), Cancelled> {
        self.0.push(format!("done {kind:?} {count:?} {in_proc}"));
        Ok(())
    }
    fn error(&mut self, e: &SqlError) -> Result<(), Cancelled> {
        self.0.push(format!(
            "error {} class {} line {}: {}",
            e.number, e.class, e.line, e.message
        ));
        Ok(())
    }
    fn info(&mut self, number: i32, message: &str) -> Result<(), Cancelled> {
        self.0.push(format!("info {number} {message}"));
        Ok(())
    }
    fn env_change(&mut self, change: &EnvChange) -> Result<(), Cancelled> {
        // Transaction descriptors differ between engines; the kind of change must not.
        let kind = format!("{change:?}");
        self.0.push(format!(
            "env {}",
            kind.split([' ', '(', '{']).next().unwrap_or("")
        ));
        Ok(())
    }
    fn return_status(&mut self, status: i32) -> Result<(), Cancelled> {
        self.0.push(format!("return {status}"));
        Ok(())
    }
    fn return_value(
        &mut self,
        _: u16,
        name: &str,
        _: &SqlType,
        v: &Value,
    ) -> Result<(), Cancelled> {
        self.0.push(format!("value {name} {v:?}"));
        Ok(())
    }
}

const TABLE: &str = "CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, n nvarchar(5) NULL, \
     v varchar(4) NULL, d decimal(6,2) NOT NULL DEFAULT 1.5, b varbinary(2) NULL, big bigint NULL, \
     ident int IDENTITY(1,1), comp AS (id * 2), f float NULL, dt datetime2(3) NULL, \
     CONSTRAINT CK_t_d CHECK (d < 1000))";

/// What a client sees from `batch`, then the table's contents.
fn outcome(batch: &str) -> Vec<String> {
    let engine = Engine::new(EngineConfig::default());
    engine
        .run("master", "CREATE DATABASE fast")
        .expect("create database");
    engine.run("fast", TABLE).expect("create table");
    let mut session = engine.session("fast").expect("session");
    let mut seen = Recording::default();
    session.execute_batch(batch, &mut seen);
    session.execute_batch("IF @@TRANCOUNT > 0 ROLLBACK", &mut Recording::default());
    session.execute_batch("SELECT * FROM dbo.t ORDER BY id", &mut seen);
    seen.0
}

#[test]
fn constant_inserts_mean_the_same_on_both_paths() {
    // (batch, the first error number it must report)
    let batches = [
        ("INSERT INTO dbo.t VALUES (1, N'abc', 'xy', 12.345, 0x0102, 9999999999, 1.5, '2024-01-02T03:04:05.123456')", None),
        ("BEGIN TRANSACTION; INSERT INTO dbo.t (id, d) VALUES (1, DEFAULT), (2, 3); COMMIT TRANSACTION;", None),
        ("BEGIN TRAN;\nINSERT INTO dbo.t (id, d) VALUES (1, 1);\nINSERT INTO dbo.t (id, d) VALUES (1, 2);\nINSERT INTO dbo.t (id, d) VALUES (2, 2);\nCOMMIT", Some(2627)),
        ("insert into [dbo].[t]([id],d,b,n)values(7,2,0xABC,N'é😀'),(8 , 0 , NULL , '')", None),
        ("INSERT INTO t (id, d, v, big, f) VALUES ('12', '3.5', 1234, '42', '1e3')", None),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 1), (1, 2)", Some(2627)),
        ("INSERT INTO dbo.t (id, d, n) VALUES (1, 1, N'toolong')", Some(2628)),
        ("INSERT INTO dbo.t (id, d, v) VALUES (1, 1, 'abcde')", Some(2628)),
        ("INSERT INTO dbo.t (id, d, b) VALUES (1, 1, 0x010203)", Some(2628)),
        ("INSERT INTO dbo.t (id, d) VALUES (1, NULL)", Some(515)),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 1, 1)", Some(110)),
        ("INSERT INTO dbo.t (id, d, n) VALUES (1, 1)", Some(109)),
        ("INSERT INTO dbo.t (id, nope) VALUES (1, 1)", Some(207)),
        ("INSERT INTO dbo.nope VALUES (1)", Some(208)),
        ("INSERT INTO dbo.t (id, d, ident) VALUES (1, 1, 5)", Some(544)),
        ("INSERT INTO dbo.t (id, d, comp) VALUES (1, 1, 5)", Some(271)),
        ("INSERT INTO dbo.t (id, d) VALUES (99999999999, 1)", Some(8115)),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 12345.678)", Some(8115)),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 1000)", Some(547)),
        ("INSERT INTO dbo.t (id, d, dt) VALUES (1, 1, 'not a date')", Some(241)),
        ("INSERT INTO dbo.t (id, d) VALUES (123456789012345678901234567890123456789, 1)", Some(1007)),
        ("COMMIT", Some(3902)),
        ("BEGIN TRAN; INSERT INTO dbo.t (id, d) VALUES (5, 5)", None),
        // Mixed batches: the fast path reads the leading statements, sqlparser the rest.
        ("BEGIN TRANSACTION; INSERT INTO dbo.t (id, d) VALUES (1, 1), (2, 2);\n UPDATE dbo.t SET d = d + 1 WHERE id >= 2; COMMIT;", None),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 1);\nINSERT INTO dbo.t (id, d) VALUES (-2, 2);\nINSERT INTO dbo.t (id, d) VALUES (1, 3)", Some(2627)),
        ("BEGIN TRAN;\nINSERT INTO dbo.t (id, d) VALUES (1, 1);\nIF @@ROWCOUNT = 1\nBEGIN\n  INSERT INTO dbo.t (id, d) VALUES (1, 1)\nEND\nCOMMIT", Some(2627)),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 1);\nSELECT id, d FROM dbo.t;\nSELEC 1", Some(102)),
        ("INSERT INTO dbo.t (id, d) VALUES (1, 1);\nBEGIN TRY\n INSERT INTO dbo.t (id, d) VALUES (1, 1)\nEND TRY\nBEGIN CATCH\n SELECT ERROR_NUMBER(), ERROR_LINE()\nEND CATCH", None),
    ];
    for (batch, error) in batches {
        let fast = outcome(batch);
        let general = outcome(&format!("/* read by sqlparser */ {batch}"));
        assert_eq!(fast, general, "{batch}");
        let first_error = fast
            .iter()
            .find_map(|e| e.strip_prefix("error "))
            .and_then(|e| e.split(' ').next()?.parse::<i32>().ok());
        assert_eq!(first_error, error, "{batch}: {fast:?}");
    }
}
