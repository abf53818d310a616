//! In-process tests of the T-SQL engine through its Session API.

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig, QueryResult};
use dbsync_sqlserver_sim::types::{SqlType, Value};

fn engine() -> Engine {
    Engine::new(EngineConfig::default())
}

fn one(r: &[QueryResult]) -> &QueryResult {
    r.last().expect("a result set")
}

fn s(x: &str) -> Value {
    Value::String(x.into())
}

#[test]
fn create_insert_select() {
    let e = engine();
    let mut s1 = e.session("master").unwrap();
    s1.run("CREATE DATABASE shop").unwrap();
    s1.run("USE shop").unwrap();
    s1.run("CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY CLUSTERED, name nvarchar(50) NULL, amount decimal(10,2) DEFAULT 0)").unwrap();
    s1.run("INSERT INTO dbo.t (id, name, amount) VALUES (2, N'b', 2.5), (1, N'a', 1.25)").unwrap();
    s1.run("INSERT INTO dbo.t (id) VALUES (3)").unwrap();
    let r = s1.run("SELECT id, name, amount FROM dbo.t ORDER BY id").unwrap();
    let r = one(&r);
    assert_eq!(r.rows.len(), 3);
    assert_eq!(r.rows[0], vec![Value::Int(1), s("a"), Value::Decimal(125, 2)]);
    assert_eq!(r.rows[2][2], Value::Decimal(0, 2));
    assert_eq!(r.columns[2].ty, SqlType::Decimal { precision: 10, scale: 2, numeric: false });
    let r = s1.run("SELECT COUNT(*), COUNT_BIG(*), SUM(id), MAX(name) FROM dbo.t").unwrap();
    assert_eq!(one(&r).rows[0][..3], [Value::Int(3), Value::BigInt(3), Value::Int(6)]);
    assert_eq!(one(&r).columns[0].ty, SqlType::Int);
    assert_eq!(one(&r).columns[1].ty, SqlType::BigInt);
    let err = s1.run("INSERT INTO dbo.t (id) VALUES (1)").unwrap_err();
    assert_eq!(err.number, 2627, "{err}");
    let err = s1.run("SELECT nope FROM dbo.t").unwrap_err();
    assert_eq!(err.number, 207);
    let err = s1.run("SELECT * FROM dbo.missing").unwrap_err();
    assert_eq!(err.number, 208);
    let err = s1.run("SELEC 1").unwrap_err();
    assert_eq!(err.number, 102);
}
