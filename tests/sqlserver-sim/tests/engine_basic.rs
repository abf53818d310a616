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
    s1.run("INSERT INTO dbo.t (id, name, amount) VALUES (2, N'b', 2.5), (1, N'a', 1.25)")
        .unwrap();
    s1.run("INSERT INTO dbo.t (id) VALUES (3)").unwrap();
    let r = s1
        .run("SELECT id, name, amount FROM dbo.t ORDER BY id")
        .unwrap();
    let r = one(&r);
    assert_eq!(r.rows.len(), 3);
    assert_eq!(
        r.rows[0],
        vec![Value::Int(1), s("a"), Value::Decimal(125, 2)]
    );
    assert_eq!(r.rows[2][2], Value::Decimal(0, 2));
    assert_eq!(
        r.columns[2].ty,
        SqlType::Decimal {
            precision: 10,
            scale: 2,
            numeric: false
        }
    );
    let r = s1
        .run("SELECT COUNT(*), COUNT_BIG(*), SUM(id), MAX(name) FROM dbo.t")
        .unwrap();
    assert_eq!(
        one(&r).rows[0][..3],
        [Value::Int(3), Value::BigInt(3), Value::Int(6)]
    );
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

fn setup() -> (Engine, dbsync_sqlserver_sim::engine::EngineSession) {
    let e = engine();
    let mut s = e.session("master").unwrap();
    s.run("CREATE DATABASE app").unwrap();
    s.run("USE app").unwrap();
    (e, s)
}

fn scalar(s: &mut dbsync_sqlserver_sim::engine::EngineSession, sql: &str) -> (Value, SqlType) {
    let r = s.run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let r = r.last().expect("result");
    (r.rows[0][0].clone(), r.columns[0].ty.clone())
}

#[test]
fn expression_types_match_sql_server() {
    let (_e, mut s) = setup();
    assert_eq!(scalar(&mut s, "SELECT 1").1, SqlType::Int);
    assert_eq!(
        scalar(&mut s, "SELECT 2147483648").1,
        SqlType::Decimal {
            precision: 10,
            scale: 0,
            numeric: false
        }
    );
    assert_eq!(
        scalar(&mut s, "SELECT 1.50"),
        (
            Value::Decimal(150, 2),
            SqlType::Decimal {
                precision: 3,
                scale: 2,
                numeric: false
            }
        )
    );
    assert_eq!(
        scalar(&mut s, "SELECT 'ab'").1,
        SqlType::VarChar {
            len: Some(2),
            collation: dbsync_sqlserver_sim::types::Collation::SQL_LATIN1_GENERAL_CP1_CI_AS
        }
    );
    assert_eq!(
        scalar(&mut s, "SELECT N'ab'").1,
        SqlType::NVarChar {
            len: Some(2),
            collation: dbsync_sqlserver_sim::types::Collation::SQL_LATIN1_GENERAL_CP1_CI_AS
        }
    );
    assert_eq!(
        scalar(&mut s, "SELECT CAST(1 AS bigint) + 1").1,
        SqlType::BigInt
    );
    // decimal(10,2) * decimal(5,1) = decimal(16,3)
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CAST(1.5 AS decimal(10,2)) * CAST(2 AS decimal(5,1))"
        ),
        (
            Value::Decimal(3000, 3),
            SqlType::Decimal {
                precision: 16,
                scale: 3,
                numeric: false
            }
        )
    );
    assert_eq!(scalar(&mut s, "SELECT 7 / 2").0, Value::Int(3));
    assert_eq!(scalar(&mut s, "SELECT 'a' + 'b'").0, s_("ab"));
    assert_eq!(scalar(&mut s, "SELECT ISNULL(NULL, 5)").0, Value::Int(5));
    assert_eq!(scalar(&mut s, "SELECT COALESCE(NULL, N'x')").0, s_("x"));
    assert_eq!(scalar(&mut s, "SELECT IIF(1 > 2, 'y', 'n')").0, s_("n"));
    assert_eq!(
        scalar(&mut s, "SELECT CASE WHEN 1 = 1 THEN 10 ELSE 20 END").0,
        Value::Int(10)
    );
    assert_eq!(scalar(&mut s, "SELECT LEN('abc  ')").0, Value::Int(3));
    assert_eq!(scalar(&mut s, "SELECT DATALENGTH(N'abc')").0, Value::Int(6));
    assert_eq!(scalar(&mut s, "SELECT DATALENGTH('abc')").0, Value::Int(3));
    assert_eq!(
        scalar(&mut s, "SELECT UPPER('abc') + LOWER('DEF')").0,
        s_("ABCdef")
    );
    assert_eq!(
        scalar(&mut s, "SELECT SUBSTRING('hello', 2, 3)").0,
        s_("ell")
    );
    assert_eq!(
        scalar(&mut s, "SELECT CHARINDEX('l', 'hello')").0,
        Value::Int(3)
    );
    assert_eq!(
        scalar(&mut s, "SELECT REPLACE('hello', 'L', 'x')").0,
        s_("hexxo")
    );
    assert_eq!(scalar(&mut s, "SELECT QUOTENAME('a]b')").0, s_("[a]]b]"));
    assert_eq!(scalar(&mut s, "SELECT CONCAT('a', NULL, 1)").0, s_("a1"));
    assert_eq!(scalar(&mut s, "SELECT LTRIM(RTRIM('  x  '))").0, s_("x"));
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(30), CAST('2024-02-29T10:11:12.123' AS datetime2(3)), 126)"
        )
        .0,
        s_("2024-02-29T10:11:12.123")
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(10), CAST('2024-02-29' AS date), 112)"
        )
        .0,
        s_("20240229")
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(30), CAST('2024-02-29 10:11:12' AS datetime), 120)"
        )
        .0,
        s_("2024-02-29 10:11:12")
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(30), CAST('2024-02-29 10:11:12.5' AS datetime), 121)"
        )
        .0,
        s_("2024-02-29 10:11:12.500")
    );
    assert_eq!(
        scalar(&mut s, "SELECT CONVERT(BINARY(4), '0A0B0C0D', 2)").0,
        Value::Binary(vec![10u8, 11, 12, 13].into())
    );
    assert_eq!(
        scalar(&mut s, "SELECT CONVERT(varchar(20), 0x0A0B, 1)").0,
        s_("0x0A0B")
    );
    assert_eq!(
        scalar(&mut s, "SELECT DATEDIFF(day, '2024-01-01', '2024-03-01')").0,
        Value::Int(60)
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT DATEDIFF_BIG(second, '2024-01-01', '2024-01-02')"
        ),
        (Value::BigInt(86400), SqlType::BigInt)
    );
    assert_eq!(
        scalar(&mut s, "SELECT DATEPART(month, '2024-05-06')").0,
        Value::Int(5)
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(30), DATEADD(day, 1, CAST('2024-02-28' AS date)), 23)"
        )
        .0,
        s_("2024-02-29")
    );
    assert_eq!(scalar(&mut s, "SELECT GETDATE()").1, SqlType::DateTime);
    assert_eq!(
        scalar(&mut s, "SELECT SYSUTCDATETIME()").1,
        SqlType::DateTime2 { scale: 7 }
    );
    // HASHBYTES: varchar hashes code-page bytes, nvarchar UTF-16LE.
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(64), HASHBYTES('MD5', 'abc'), 2)"
        )
        .0,
        s_("900150983CD24FB0D6963F7D28E17F72")
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(64), HASHBYTES('SHA1', 'abc'), 2)"
        )
        .0,
        s_("A9993E364706816ABA3E25717850C26C9CD0D89D")
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CONVERT(varchar(64), HASHBYTES('SHA2_256', N'abc'), 2)"
        )
        .0,
        // SHA-256 of UTF-16LE "abc" (61 00 62 00 63 00)
        s_(&sha256_hex(&[0x61, 0, 0x62, 0, 0x63, 0]))
    );
    assert_eq!(
        scalar(&mut s, "SELECT SERVERPROPERTY('EngineEdition')").0,
        Value::Int(3)
    );
    assert_eq!(
        scalar(
            &mut s,
            "SELECT CAST(SERVERPROPERTY('ProductMajorVersion') AS int)"
        )
        .0,
        Value::Int(16)
    );
    assert_eq!(scalar(&mut s, "SELECT @@SERVERNAME").0, s_("STANDIN"));
    assert_eq!(scalar(&mut s, "SELECT DB_NAME()").0, s_("app"));
    assert_eq!(
        scalar(&mut s, "SELECT IS_SRVROLEMEMBER('sysadmin')").0,
        Value::Int(1)
    );
    assert_eq!(scalar(&mut s, "SELECT SUSER_SNAME()").0, s_("sa"));
    assert_eq!(
        scalar(&mut s, "SELECT 1 WHERE 'ABC' = 'abc '").0,
        Value::Int(1)
    );
    assert_eq!(
        scalar(&mut s, "SELECT 1 WHERE 'abc' LIKE 'A_C'").0,
        Value::Int(1)
    );
    assert_eq!(s.run("SELECT CAST('x' AS int)").unwrap_err().number, 245);
    assert_eq!(s.run("SELECT 1/0").unwrap_err().number, 8134);
}

fn s_(x: &str) -> Value {
    Value::String(x.into())
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02X}"))
        .collect()
}

#[test]
fn constraints_identity_defaults_and_cascades() {
    let (_e, mut s) = setup();
    s.run(
        "CREATE TABLE dbo.parent (id int IDENTITY(10,5) NOT NULL CONSTRAINT pk_parent PRIMARY KEY, code varchar(10) NOT NULL CONSTRAINT uq_code UNIQUE, qty int CHECK (qty >= 0) DEFAULT 1, twice AS (qty * 2));
         CREATE TABLE dbo.child (id int NOT NULL PRIMARY KEY, parent_id int NULL REFERENCES dbo.parent(id) ON DELETE CASCADE, note nvarchar(5) NULL)",
    )
    .unwrap();
    s.run("INSERT INTO dbo.parent (code) VALUES ('a'), ('b')")
        .unwrap();
    let r = s
        .run("SELECT id, qty, twice, SCOPE_IDENTITY() FROM dbo.parent ORDER BY id")
        .unwrap();
    assert_eq!(
        r[0].rows[0][..3],
        [Value::Int(10), Value::Int(1), Value::Int(2)]
    );
    assert_eq!(r[0].rows[1][0], Value::Int(15));
    assert_eq!(r[0].rows[0][3], Value::Decimal(15, 0));
    assert_eq!(
        s.run("INSERT INTO dbo.parent (code) VALUES ('A')")
            .unwrap_err()
            .number,
        2627
    );
    assert_eq!(
        s.run("INSERT INTO dbo.parent (code, qty) VALUES ('c', -1)")
            .unwrap_err()
            .number,
        547
    );
    assert_eq!(
        s.run("INSERT INTO dbo.parent (code) VALUES (NULL)")
            .unwrap_err()
            .number,
        515
    );
    assert_eq!(
        s.run("INSERT INTO dbo.parent (code) VALUES ('this is too long')")
            .unwrap_err()
            .number,
        2628
    );
    assert_eq!(
        s.run("INSERT INTO dbo.parent (id, code) VALUES (1, 'z')")
            .unwrap_err()
            .number,
        544
    );
    s.run("SET IDENTITY_INSERT dbo.parent ON; INSERT INTO dbo.parent (id, code) VALUES (100, 'z'); SET IDENTITY_INSERT dbo.parent OFF").unwrap();
    s.run("INSERT INTO dbo.parent (code) VALUES ('after')")
        .unwrap();
    assert_eq!(
        scalar(&mut s, "SELECT MAX(id) FROM dbo.parent").0,
        Value::Int(105)
    );
    assert_eq!(
        s.run("INSERT INTO dbo.child VALUES (1, 999, NULL)")
            .unwrap_err()
            .number,
        547
    );
    s.run("INSERT INTO dbo.child VALUES (1, 10, N'x'), (2, 10, NULL), (3, 15, NULL)")
        .unwrap();
    s.run("DELETE FROM dbo.parent WHERE id = 10").unwrap();
    assert_eq!(
        scalar(&mut s, "SELECT COUNT(*) FROM dbo.child").0,
        Value::Int(1)
    );
    assert_eq!(
        s.run("UPDATE dbo.parent SET id = 1").unwrap_err().number,
        8102
    );
}

#[test]
fn batches_variables_control_flow_and_procedures() {
    let (_e, mut s) = setup();
    let r = s
        .run(
            "DECLARE @i int = 0, @acc nvarchar(100) = N'';
             WHILE @i < 3 BEGIN SET @i = @i + 1; SET @acc = @acc + CAST(@i AS nvarchar(10)); END
             IF @i = 3 SELECT @acc AS acc ELSE SELECT N'no' AS acc",
        )
        .unwrap();
    assert_eq!(r[0].rows[0][0], s_("123"));
    assert_eq!(r[0].columns[0].name, "acc");
    let r = s.run("BEGIN TRY SELECT 1/0 END TRY BEGIN CATCH SELECT ERROR_NUMBER(), ERROR_MESSAGE() END CATCH").unwrap();
    assert_eq!(r.last().unwrap().rows[0][0], Value::Int(8134));
    let e = s.run("THROW 50001, 'boom', 1").unwrap_err();
    assert_eq!((e.number, e.message.as_str()), (50001, "boom"));
    let e = s.run("RAISERROR('bad %d', 16, 1, 42)").unwrap_err();
    assert_eq!((e.number, e.message.as_str()), (50000, "bad 42"));
    let r = s
        .run("EXEC sp_executesql N'SELECT @a + @b AS s', N'@a int, @b int', @a = 2, @b = 3")
        .unwrap();
    assert_eq!(r[0].rows[0][0], Value::Int(5));
    s.run("CREATE PROCEDURE dbo.add1 @x int, @y int OUTPUT AS BEGIN SET @y = @x + 1; RETURN 7 END")
        .unwrap();
    let r = s.run("DECLARE @out int, @rc int; EXEC @rc = dbo.add1 @x = 4, @y = @out OUTPUT; SELECT @out, @rc").unwrap();
    assert_eq!(r[0].rows[0], vec![Value::Int(5), Value::Int(7)]);
    s.run("CREATE SEQUENCE dbo.seq AS int START WITH 5 INCREMENT BY 5")
        .unwrap();
    assert_eq!(
        scalar(&mut s, "SELECT NEXT VALUE FOR dbo.seq").0,
        Value::Int(5)
    );
    assert_eq!(
        scalar(&mut s, "SELECT NEXT VALUE FOR dbo.seq").0,
        Value::Int(10)
    );
    let r = s.run("CREATE TABLE dbo.k (a int NOT NULL, b int NOT NULL, CONSTRAINT pk_k PRIMARY KEY (a, b)); INSERT INTO dbo.k VALUES (1,1),(1,2),(2,1),(2,2),(3,1); DECLARE @p1 int = 1, @p2 int = 2; SELECT a, b FROM dbo.k WHERE (a > @p1) OR (a = @p1 AND b > @p2) ORDER BY a, b").unwrap();
    assert_eq!(r.last().unwrap().rows.len(), 3);
    let r = s
        .run("SELECT a, COUNT(*) AS n FROM dbo.k GROUP BY a HAVING COUNT(*) > 1 ORDER BY a DESC")
        .unwrap();
    assert_eq!(
        r[0].rows,
        vec![
            vec![Value::Int(2), Value::Int(2)],
            vec![Value::Int(1), Value::Int(2)]
        ]
    );
    let r = s
        .run("SELECT TOP (2) a FROM dbo.k ORDER BY a DESC, b DESC")
        .unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::Int(3)], vec![Value::Int(2)]]);
    let r = s.run("SELECT DISTINCT a FROM dbo.k WHERE a IN (SELECT a FROM dbo.k WHERE b = 2) AND EXISTS (SELECT 1 FROM dbo.k k2 WHERE k2.a = k.a AND k2.b = 1)").unwrap();
    assert_eq!(r[0].rows.len(), 2);
    let r = s
        .run("SELECT MAX(x) FROM (SELECT TOP (2) a AS x FROM dbo.k ORDER BY a) AS d")
        .unwrap();
    assert_eq!(r[0].rows[0][0], Value::Int(1));
    let r = s
        .run("SELECT a FROM dbo.k ORDER BY a, b OFFSET 3 ROWS FETCH NEXT 1 ROWS ONLY")
        .unwrap();
    assert_eq!(r[0].rows, vec![vec![Value::Int(2)]]);
}

#[test]
fn catalog_views_describe_tables() {
    let (e, mut s) = setup();
    s.run(
        "CREATE SCHEMA sales;
         CREATE TYPE dbo.phone FROM varchar(20) NOT NULL;
         CREATE TABLE sales.orders (id bigint IDENTITY(1,1) NOT NULL, region char(2) NOT NULL, total money NULL, ph dbo.phone, note nvarchar(max) NULL,
            CONSTRAINT pk_orders PRIMARY KEY CLUSTERED (region, id));
         CREATE UNIQUE NONCLUSTERED INDEX ix_orders_ph ON sales.orders (ph DESC) INCLUDE (total) WHERE ph IS NOT NULL;
         CREATE TABLE dbo.heap (a int NULL, b datetime2(3) DEFAULT SYSDATETIME())",
    )
    .unwrap();
    let r = s
        .run(
            "SELECT c.name, t.name AS type_name, c.max_length, c.precision, c.scale, c.is_nullable, c.is_identity
             FROM sys.columns c JOIN sys.types t ON c.user_type_id = t.user_type_id
             WHERE c.object_id = OBJECT_ID('sales.orders') ORDER BY c.column_id",
        )
        .unwrap();
    let rows = &r[0].rows;
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0][..2], [s_("id"), s_("bigint")]);
    assert_eq!(rows[0][6], Value::Bit(true));
    assert_eq!(rows[3][1], s_("phone"));
    assert_eq!(rows[4][2], Value::SmallInt(-1));
    let r = s
        .run(
            "SELECT i.name, i.type_desc, i.is_primary_key, ic.key_ordinal, col.name, ic.is_included_column
             FROM sys.indexes i JOIN sys.index_columns ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
             JOIN sys.columns col ON col.object_id = ic.object_id AND col.column_id = ic.column_id
             WHERE i.object_id = OBJECT_ID('sales.orders') ORDER BY i.index_id, ic.index_column_id",
        )
        .unwrap();
    let rows = &r[0].rows;
    assert_eq!(
        rows[0][..5],
        [
            s_("pk_orders"),
            s_("CLUSTERED"),
            Value::Bit(true),
            Value::TinyInt(1),
            s_("region")
        ]
    );
    assert_eq!(rows[3][5], Value::Bit(true));
    let r = s
        .run("SELECT type_desc FROM sys.indexes WHERE object_id = OBJECT_ID('dbo.heap')")
        .unwrap();
    assert_eq!(r[0].rows, vec![vec![s_("HEAP")]]);
    let r = s.run("SELECT name, recovery_model_desc, is_cdc_enabled, is_read_committed_snapshot_on, snapshot_isolation_state FROM sys.databases WHERE name = 'app'").unwrap();
    assert_eq!(
        r[0].rows[0],
        vec![
            s_("app"),
            s_("FULL"),
            Value::Bit(false),
            Value::Bit(false),
            Value::TinyInt(0)
        ]
    );
    s.run("ALTER DATABASE app SET READ_COMMITTED_SNAPSHOT ON; ALTER DATABASE app SET ALLOW_SNAPSHOT_ISOLATION ON; ALTER DATABASE app SET RECOVERY SIMPLE").unwrap();
    let r = s.run("SELECT recovery_model_desc, is_read_committed_snapshot_on, snapshot_isolation_state_desc FROM sys.databases WHERE database_id = DB_ID()").unwrap();
    assert_eq!(r[0].rows[0], vec![s_("SIMPLE"), Value::Bit(true), s_("ON")]);
    let r = s
        .run("SELECT TABLE_SCHEMA, TABLE_NAME FROM INFORMATION_SCHEMA.TABLES ORDER BY TABLE_NAME")
        .unwrap();
    assert_eq!(r[0].rows.len(), 2);
    let r = s.run("SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'orders' ORDER BY ORDINAL_POSITION").unwrap();
    assert_eq!(r[0].rows[1], vec![s_("region"), s_("char"), Value::Int(2)]);
    assert_eq!(r[0].rows[4][2], Value::Int(-1));
    let r = s.run("SELECT seed_value, increment_value FROM sys.identity_columns WHERE object_id = OBJECT_ID('sales.orders')").unwrap();
    assert_eq!(
        r[0].rows[0],
        vec![Value::Decimal(1, 0), Value::Decimal(1, 0)]
    );
    let r = s.run("SELECT rows, data_compression_desc FROM sys.partitions WHERE object_id = OBJECT_ID('dbo.heap')").unwrap();
    assert_eq!(r[0].rows[0], vec![Value::BigInt(0), s_("NONE")]);
    let r = s
        .run("SELECT name FROM sys.servers WHERE server_id = 0")
        .unwrap();
    assert_eq!(r[0].rows[0][0], s_("STANDIN"));
    s.run("BACKUP DATABASE app TO DISK = 'x.bak'").unwrap();
    assert_eq!(
        s.run("BACKUP LOG app TO DISK = 'x.trn'")
            .unwrap_err()
            .number,
        4208
    );
    let r = s.run("SELECT COUNT(*) FROM msdb.dbo.backupset WHERE database_name = DB_NAME() AND type = 'D'").unwrap();
    assert_eq!(r[0].rows[0][0], Value::Int(1));
    assert!(e.table("app", "sales", "orders").is_some());
}

#[test]
fn update_and_delete_with_joins() {
    let (_e, mut s) = setup();
    s.run(
        "CREATE TABLE dbo.prices (sku int NOT NULL PRIMARY KEY, price decimal(10,2) NOT NULL);
         CREATE TABLE dbo.changes (sku int NOT NULL PRIMARY KEY, new_price decimal(10,2) NULL, drop_it bit NOT NULL DEFAULT 0);
         INSERT INTO dbo.prices VALUES (1, 10), (2, 20), (3, 30);
         INSERT INTO dbo.changes VALUES (1, 11, 0), (3, NULL, 1)",
    )
    .unwrap();
    s.run("UPDATE p SET price = c.new_price FROM dbo.prices AS p INNER JOIN dbo.changes AS c ON c.sku = p.sku WHERE c.new_price IS NOT NULL").unwrap();
    s.run("DELETE p FROM dbo.prices p JOIN dbo.changes c ON c.sku = p.sku WHERE c.drop_it = 1")
        .unwrap();
    let r = s
        .run("SELECT sku, price FROM dbo.prices ORDER BY sku")
        .unwrap();
    assert_eq!(
        r[0].rows,
        vec![
            vec![Value::Int(1), Value::Decimal(1100, 2)],
            vec![Value::Int(2), Value::Decimal(2000, 2)]
        ]
    );
    let r = s.run("UPDATE dbo.prices SET price = price * 2 FROM dbo.prices JOIN dbo.changes ON changes.sku = prices.sku; SELECT @@ROWCOUNT").unwrap();
    assert_eq!(r[0].rows[0][0], Value::Int(1));
}
