//! Odd, wrong and unsupported statements end in SQL Server errors, never in a panic or hang.

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};

#[test]
fn odd_statements_fail_cleanly() {
    let e = Engine::new(EngineConfig::default());
    let mut s = e.session("master").unwrap();
    s.run("CREATE DATABASE odd; USE odd; CREATE TABLE dbo.t (id int NOT NULL PRIMARY KEY, v varchar(10) NULL, d datetime2(7) NULL); INSERT INTO dbo.t VALUES (1, 'a', '2024-01-01')").unwrap();
    let statements = [
        "SELECT",
        "SELECT * FROM",
        "SELECT 1 +",
        "SELECT * FROM dbo.t WHERE",
        "SELECT DATEADD(year, 100000, d) FROM dbo.t",
        "SELECT DATEADD(day, 2147483647, d) FROM dbo.t",
        "SELECT DATEADD(second, 9223372036854775807, d) FROM dbo.t",
        "SELECT DATEDIFF(nanosecond, '0001-01-01', '9999-12-31')",
        "SELECT CAST('99999999999999999999999999999999999999' AS decimal(38,0)) * 10",
        "SELECT CAST(2147483647 AS int) + 1",
        "SELECT -CAST(-2147483648 AS int)",
        "SELECT ABS(CAST(-2147483648 AS int))",
        "SELECT ROUND(1.5, -40), ROUND(1.5, 40)",
        "SELECT SUBSTRING('abc', -5, 2), SUBSTRING('abc', 10, 1), LEFT('abc', 0)",
        "SELECT SUBSTRING('abc', 1, -1)",
        "SELECT CAST(N'😀' AS varchar(1)), LEN(N'😀'), DATALENGTH(N'😀')",
        "SELECT CONVERT(int, 0x), CONVERT(binary(2), ''), CONVERT(varbinary(4), 'zz', 2)",
        "SELECT CAST('2024-13-45' AS date)",
        "SELECT CAST('nonsense' AS uniqueidentifier)",
        "SELECT 1 WHERE 1 IN (SELECT 1, 2)",
        "SELECT (SELECT id FROM dbo.t UNION ALL SELECT 2)",
        "SELECT id FROM dbo.t GROUP BY v",
        "SELECT COUNT(*) FROM dbo.t WHERE COUNT(*) > 1",
        "SELECT * FROM dbo.t ORDER BY 5",
        "SELECT TOP (-1) * FROM dbo.t",
        "SELECT * FROM dbo.t t1 JOIN dbo.t t2 ON id = id",
        "INSERT INTO dbo.t (id) VALUES (1, 2)",
        "INSERT INTO dbo.t (nope) VALUES (1)",
        "INSERT INTO dbo.t VALUES (2, REPLICATE('x', 50), NULL)",
        "UPDATE dbo.t SET nope = 1",
        "DELETE FROM dbo.nope",
        "CREATE TABLE dbo.t (x int)",
        "CREATE TABLE dbo.bad (a decimal(50,2))",
        "CREATE TABLE dbo.bad2 (a varchar(9000))",
        "CREATE TABLE dbo.bad3 (a int, a int)",
        "ALTER TABLE dbo.t ALTER COLUMN v int",
        "ALTER TABLE dbo.t DROP COLUMN nope",
        "DROP TABLE dbo.nope",
        "EXEC dbo.nope",
        "EXEC sp_executesql N'SELECT @x', N'@x int'",
        "COMMIT",
        "ROLLBACK",
        "SAVE TRANSACTION x",
        "DECLARE @x int; DECLARE @x int",
        "SET @undeclared = 1",
        "SET NOSUCHOPTION ON",
        "WITH c AS (SELECT 1 AS a) SELECT a FROM c",
        "SELECT ROW_NUMBER() OVER (ORDER BY id) FROM dbo.t",
        "MERGE dbo.t AS t USING dbo.t AS s ON t.id = s.id WHEN MATCHED THEN DELETE;",
        "THROW 1, 'x', 1",
        "RAISERROR('%s %d %x', 16, 1)",
        "SELECT NEXT VALUE FOR dbo.noseq",
        "USE nodb",
        "BACKUP DATABASE nodb TO DISK = 'x'",
        "SELECT * FROM sys.nosuchview",
        "SELECT * FROM cdc.fn_cdc_get_all_changes_nope(NULL, NULL, N'all')",
        "SELECT sys.fn_nosuch()",
        "SELECT nosuchfunction(1)",
        "SELECT 'a' + 1",
        "SELECT 1 + 'a'",
        "SELECT CAST(1 AS nosuchtype)",
        "CREATE INDEX ix ON dbo.t (nope)",
        "EXEC sp_rename 'dbo.nope', 'x'",
        "SELECT * FROM dbo.t WITH (NOLOCK, UPDLOCK, READPAST) WHERE id IN (1, NULL)",
        "SELECT CONVERT(varchar(10), d, 999) FROM dbo.t",
        "SELECT v COLLATE Latin1_General_BIN FROM dbo.t",
        "SELECT 0x + 0x00, N'' + '', NULL + 1, NULL + NULL",
        "WAITFOR DELAY '00:00:00.001'",
        "IF 1 = 1 BEGIN SELECT 1 END ELSE BEGIN SELECT 2 END",
        "WHILE 1 = 0 BREAK",
    ];
    for sql in statements {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.run(sql)));
        let r = r.unwrap_or_else(|_| panic!("panicked on: {sql}"));
        if let Err(err) = r {
            assert!(err.number > 0 && !err.message.is_empty(), "{sql}: {err:?}");
        }
        s.run("IF @@TRANCOUNT > 0 ROLLBACK").unwrap();
    }
    // Unsupported features say so with 50999.
    assert_eq!(
        s.run("WITH c (a) AS (SELECT 1 UNION ALL SELECT a + 1 FROM c WHERE a < 3) SELECT a FROM c")
            .unwrap_err()
            .number,
        50999
    );
    assert_eq!(
        s.run("SELECT ROW_NUMBER() OVER (ORDER BY id) FROM dbo.t")
            .unwrap_err()
            .number,
        50999
    );
}
