//! Transactions between sessions and the CDC hooks, in-process.

use std::sync::{Arc, Mutex};

use dbsync_sqlserver_sim::engine::hooks::{ChangeOp, CommitObserver, CommittedTransaction};
use dbsync_sqlserver_sim::engine::{Engine, EngineConfig, EngineSession};
use dbsync_sqlserver_sim::types::Value;

fn setup() -> (Engine, EngineSession, EngineSession) {
    let e = Engine::new(EngineConfig {
        locking_read_committed: true,
        ..EngineConfig::default()
    });
    let mut a = e.session("master").unwrap();
    a.run("CREATE DATABASE tx; USE tx; CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, v nvarchar(20) NULL, u int NULL UNIQUE)").unwrap();
    a.run("INSERT INTO dbo.t VALUES (1, N'one', 1), (2, N'two', 2)")
        .unwrap();
    let b = e.session("tx").unwrap();
    (e, a, b)
}

fn count(s: &mut EngineSession, sql: &str) -> Value {
    s.run(sql).unwrap().last().unwrap().rows[0][0].clone()
}

#[test]
fn uncommitted_writes_are_invisible_and_rollback_restores() {
    let (_e, mut a, mut b) = setup();
    a.run("ALTER DATABASE tx SET READ_COMMITTED_SNAPSHOT ON")
        .unwrap();
    a.run("BEGIN TRAN; INSERT INTO dbo.t VALUES (3, N'three', 3); UPDATE dbo.t SET v = N'uno' WHERE id = 1").unwrap();
    assert_eq!(count(&mut a, "SELECT COUNT(*) FROM dbo.t"), Value::Int(3));
    assert_eq!(count(&mut b, "SELECT COUNT(*) FROM dbo.t"), Value::Int(2));
    assert_eq!(
        count(&mut b, "SELECT v FROM dbo.t WHERE id = 1"),
        Value::String("one".into())
    );
    assert_eq!(count(&mut a, "SELECT @@TRANCOUNT"), Value::Int(1));
    a.run("ROLLBACK").unwrap();
    assert_eq!(count(&mut a, "SELECT COUNT(*) FROM dbo.t"), Value::Int(2));
    a.run("BEGIN TRAN; DELETE FROM dbo.t WHERE id = 2; COMMIT")
        .unwrap();
    assert_eq!(count(&mut b, "SELECT COUNT(*) FROM dbo.t"), Value::Int(1));
}

#[test]
fn locking_read_committed_readers_wait_for_writers() {
    let (_e, mut a, mut b) = setup();
    a.run("BEGIN TRAN; UPDATE dbo.t SET v = N'new' WHERE id = 1")
        .unwrap();
    // READ_COMMITTED_SNAPSHOT is OFF: the reader waits for the writer's row lock.
    assert_eq!(
        b.run("SET LOCK_TIMEOUT 100; SELECT v FROM dbo.t WHERE id = 1")
            .unwrap_err()
            .number,
        1222
    );
    // Rows nobody locked are read without waiting; NOLOCK never waits.
    assert_eq!(
        count(&mut b, "SELECT v FROM dbo.t WHERE id = 2"),
        Value::String("two".into())
    );
    assert_eq!(
        count(&mut b, "SELECT v FROM dbo.t WITH (NOLOCK) WHERE id = 1"),
        Value::String("one".into())
    );
    let h = std::thread::spawn(move || {
        let v = count(
            &mut b,
            "SET LOCK_TIMEOUT -1; SELECT v FROM dbo.t WHERE id = 1",
        );
        (b, v)
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    a.run("COMMIT").unwrap();
    let (_b, v) = h.join().unwrap();
    assert_eq!(
        v,
        Value::String("new".into()),
        "the reader sees the committed value after waiting"
    );
}

#[test]
fn writers_on_the_same_row_wait_then_time_out() {
    let (_e, mut a, mut b) = setup();
    a.run("BEGIN TRAN; UPDATE dbo.t SET v = N'a' WHERE id = 1")
        .unwrap();
    let err = b
        .run("SET LOCK_TIMEOUT 100; UPDATE dbo.t SET v = N'b' WHERE id = 1")
        .unwrap_err();
    assert_eq!(err.number, 1222);
    // A unique key taken by an uncommitted insert blocks too.
    a.run("INSERT INTO dbo.t VALUES (5, NULL, 50)").unwrap();
    assert_eq!(
        b.run("SET LOCK_TIMEOUT 50; INSERT INTO dbo.t VALUES (6, NULL, 50)")
            .unwrap_err()
            .number,
        1222
    );
    a.run("COMMIT").unwrap();
    assert_eq!(
        b.run("INSERT INTO dbo.t VALUES (6, NULL, 50)")
            .unwrap_err()
            .number,
        2627
    );
    b.run("UPDATE dbo.t SET v = N'b' WHERE id = 1").unwrap();
}

#[test]
fn a_waiting_writer_proceeds_when_the_holder_commits() {
    let (_e, mut a, mut b) = setup();
    a.run("BEGIN TRAN; UPDATE dbo.t SET v = N'a' WHERE id = 1")
        .unwrap();
    let h = std::thread::spawn(move || {
        b.run("UPDATE dbo.t SET v = v + N'+b' WHERE id = 1")
            .unwrap();
        b
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    a.run("COMMIT").unwrap();
    let mut b = h.join().unwrap();
    assert_eq!(
        count(&mut b, "SELECT v FROM dbo.t WHERE id = 1"),
        Value::String("a+b".into())
    );
}

#[test]
fn snapshot_isolation_needs_the_option_and_detects_update_conflicts() {
    let (_e, mut a, mut b) = setup();
    a.run("ALTER DATABASE tx SET READ_COMMITTED_SNAPSHOT ON")
        .unwrap();
    let err = b
        .run("SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRAN; SELECT COUNT(*) FROM dbo.t")
        .unwrap_err();
    assert_eq!(err.number, 3952);
    b.run("IF @@TRANCOUNT > 0 ROLLBACK").unwrap();
    a.run("ALTER DATABASE tx SET ALLOW_SNAPSHOT_ISOLATION ON")
        .unwrap();
    b.run("SET TRANSACTION ISOLATION LEVEL SNAPSHOT; BEGIN TRAN; SELECT COUNT(*) FROM dbo.t")
        .unwrap();
    a.run("UPDATE dbo.t SET v = N'changed' WHERE id = 1; INSERT INTO dbo.t VALUES (9, NULL, NULL)")
        .unwrap();
    // The snapshot still sees the old data.
    assert_eq!(count(&mut b, "SELECT COUNT(*) FROM dbo.t"), Value::Int(2));
    assert_eq!(
        count(&mut b, "SELECT v FROM dbo.t WHERE id = 1"),
        Value::String("one".into())
    );
    assert_eq!(
        b.run("UPDATE dbo.t SET v = N'mine' WHERE id = 1")
            .unwrap_err()
            .number,
        3960
    );
    assert_eq!(count(&mut b, "SELECT @@TRANCOUNT"), Value::Int(0));
}

#[test]
fn a_failing_statement_in_a_transaction_is_undone_alone() {
    let (_e, mut a, mut b) = setup();
    a.run("BEGIN TRAN; INSERT INTO dbo.t VALUES (10, NULL, NULL)")
        .unwrap();
    // The second row violates the PK: the whole statement is undone, the transaction stays.
    assert_eq!(
        a.run("INSERT INTO dbo.t VALUES (11, NULL, NULL), (1, NULL, NULL)")
            .unwrap_err()
            .number,
        2627
    );
    assert_eq!(count(&mut a, "SELECT @@TRANCOUNT"), Value::Int(1));
    a.run("COMMIT").unwrap();
    assert_eq!(
        count(&mut b, "SELECT COUNT(*) FROM dbo.t WHERE id >= 10"),
        Value::Int(1)
    );
}

#[test]
fn deadlocks_pick_a_victim() {
    let (_e, mut a, mut b) = setup();
    a.run("BEGIN TRAN; UPDATE dbo.t SET v = N'a' WHERE id = 1")
        .unwrap();
    b.run("BEGIN TRAN; UPDATE dbo.t SET v = N'b' WHERE id = 2")
        .unwrap();
    let h = std::thread::spawn(move || {
        let r = a.run("UPDATE dbo.t SET v = N'a' WHERE id = 2");
        (a, r)
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    let rb = b.run("UPDATE dbo.t SET v = N'b' WHERE id = 1");
    let (_a, ra) = h.join().unwrap();
    let numbers: Vec<i32> = [ra.err(), rb.err()]
        .into_iter()
        .flatten()
        .map(|e| e.number)
        .collect();
    assert_eq!(numbers, vec![1205]);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<CommittedTransaction>>);

impl CommitObserver for Recorder {
    fn committed(&self, txn: CommittedTransaction) {
        self.0.lock().unwrap().push(txn);
    }
}

#[test]
fn commit_observer_sees_changes_in_commit_order_with_seqvals() {
    let (e, mut a, mut b) = setup();
    let rec = Arc::new(Recorder::default());
    e.set_commit_observer(Some(rec.clone()));
    e.set_record_changes("tx", true).unwrap();
    a.run("BEGIN TRAN; INSERT INTO dbo.t VALUES (20, N'a', 20)")
        .unwrap();
    b.run("BEGIN TRAN; INSERT INTO dbo.t VALUES (21, N'b', 21); UPDATE dbo.t SET v = N'bb' WHERE id = 21; COMMIT").unwrap();
    a.run("UPDATE dbo.t SET id = 22 WHERE id = 20; UPDATE dbo.t SET v = N'x' WHERE id = 1; COMMIT")
        .unwrap();
    a.run("BEGIN TRAN; DELETE FROM dbo.t WHERE id = 2; ROLLBACK")
        .unwrap();
    let txns = rec.0.lock().unwrap();
    assert_eq!(txns.len(), 2, "rollback produces nothing");
    let (tb, ta) = (&txns[0], &txns[1]);
    assert!(tb.commit_lsn < ta.commit_lsn);
    // a began first: its first seqval is lower than b's, but it committed later.
    assert!(ta.changes[0].seqval < tb.changes[0].seqval);
    assert_eq!(
        tb.changes.iter().map(|c| c.op).collect::<Vec<_>>(),
        vec![ChangeOp::Insert, ChangeOp::Update]
    );
    assert_eq!(
        tb.changes.iter().map(|c| c.command_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // PK update: delete + insert with one seqval, then an ordinary update with SET-list mask.
    let ops: Vec<ChangeOp> = ta.changes.iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        vec![
            ChangeOp::Insert,
            ChangeOp::Delete,
            ChangeOp::Insert,
            ChangeOp::Update
        ]
    );
    assert_eq!(ta.changes[1].seqval, ta.changes[2].seqval);
    assert_eq!(
        ta.changes[3].assigned.as_deref(),
        Some(&[false, true, false][..])
    );
    assert_eq!(
        ta.changes[3].before.as_ref().unwrap()[1],
        Value::String("one".into())
    );
    assert_eq!(
        ta.changes[3].after.as_ref().unwrap()[1],
        Value::String("x".into())
    );
    assert!(ta.changes.windows(2).all(|w| w[0].seqval <= w[1].seqval));
}

#[test]
fn savepoints_undo_only_later_work() {
    let (e, mut a, mut b) = setup();
    let rec = Arc::new(Recorder::default());
    e.set_commit_observer(Some(rec.clone()));
    e.set_record_changes("tx", true).unwrap();
    a.run("BEGIN TRAN; INSERT INTO dbo.t VALUES (30, NULL, 30); SAVE TRANSACTION sp1; INSERT INTO dbo.t VALUES (31, NULL, 31); UPDATE dbo.t SET v = N'z' WHERE id = 1").unwrap();
    a.run("ROLLBACK TRANSACTION sp1").unwrap();
    assert_eq!(count(&mut a, "SELECT @@TRANCOUNT"), Value::Int(1));
    a.run("INSERT INTO dbo.t VALUES (32, NULL, 31); COMMIT")
        .unwrap();
    let r = b
        .run("SELECT id FROM dbo.t WHERE id >= 30 ORDER BY id")
        .unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::Int(30)], vec![Value::Int(32)]]);
    assert_eq!(
        count(&mut b, "SELECT v FROM dbo.t WHERE id = 1"),
        Value::String("one".into())
    );
    let txns = rec.0.lock().unwrap();
    assert_eq!(txns.len(), 1);
    assert_eq!(
        txns[0].changes.len(),
        2,
        "only the surviving inserts are recorded"
    );
}
