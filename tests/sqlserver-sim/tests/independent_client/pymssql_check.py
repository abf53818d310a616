"""Independent-client conformance check: pymssql (FreeTDS) against the stand-in.

tiberius is lenient in places; FreeTDS is a second, independent TDS implementation. Driven by
tests/wire_independent_client.rs, which starts the server and passes:

    SQLSIM_PORT, SQLSIM_USER, SQLSIM_PASSWORD, SQLSIM_DATABASE   connection
    argv[1]                                        "canned", "engine", "sample" or "features"

Exits 0 when every check passes; prints what failed otherwise.
"""
import datetime
import decimal
import os
import sys
import uuid

import pymssql


def connect(password=None, autocommit=True):
    return pymssql.connect(
        server="127.0.0.1",
        port=int(os.environ["SQLSIM_PORT"]),
        user=os.environ["SQLSIM_USER"],
        password=password if password is not None else os.environ["SQLSIM_PASSWORD"],
        database=os.environ["SQLSIM_DATABASE"],
        tds_version="7.4",
        autocommit=autocommit,
        login_timeout=10,
        timeout=30,
    )


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def check_login_failure():
    try:
        connect(password="wrong password").close()
    except pymssql.OperationalError as e:
        check("18456" in str(e), f"login failure names error 18456: {e}")
        return
    raise AssertionError("a wrong password was accepted")


def canned():
    """The wire tests' canned session answers these (see wire_independent_client.rs)."""
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT canned")
    rows = cur.fetchall()
    check([d[0] for d in cur.description] == ["id", "name", "amount", "at", "blob", "flag", "ratio", "guid", "nothing"],
          f"column names {cur.description}")
    check(len(rows) == 3, f"3 rows, got {len(rows)}")
    first = rows[0]
    check(first[0] == 2147483647, f"int {first[0]!r}")
    check(first[1] == "Grüße 😀", f"nvarchar {first[1]!r}")
    check(first[2] == decimal.Decimal("-12345.67"), f"decimal {first[2]!r}")
    check(first[3] == datetime.datetime(2024, 2, 29, 23, 59, 59, 123456), f"datetime2 {first[3]!r}")
    check(first[4] == b"\x00\x01\xff", f"varbinary {first[4]!r}")
    check(first[5] is True, f"bit {first[5]!r}")
    check(first[6] == 0.25, f"float {first[6]!r}")
    check(first[7] == uuid.UUID("00112233-4455-6677-8899-aabbccddeeff"), f"uniqueidentifier {first[7]!r}")
    check(first[8] is None, f"NULL {first[8]!r}")
    check(all(v is None for v in rows[1][1:]), f"NULL row {rows[1]!r}")
    check(rows[2][1] == "x" * 5000, "nvarchar(max) value")

    # Two result sets and a count in one batch (DONE_MORE must be right for FreeTDS).
    cur.execute("SELECT two")
    check(cur.fetchall() == [(1,)], "first result set")
    check(cur.nextset(), "second result set exists")
    check(cur.fetchall() == [("b",)], "second result set")

    # An error after rows surfaces as an exception, and the connection stays usable.
    try:
        cur.execute("SELECT then fail")
        cur.fetchall()
        raise AssertionError("the error after the rows was lost")
    except pymssql.DatabaseError as e:
        check("8134" in str(e) or "Divide by zero" in str(e), f"error 8134: {e}")
    cur.execute("SELECT two")
    check(cur.fetchall() == [(1,)], "connection usable after an error")

    # RPC by name, FreeTDS's encoding of parameters.
    cur.callproc("dbo.p", (7, "ü text", decimal.Decimal("1.50")))
    conn.close()
    check_login_failure()


def engine():
    """Against the real engine: a query, a parameterized query, transactions, error numbers,
    sp_executesql as RPC and a CDC round trip."""
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT 1 AS one, N'ü' AS text, CAST(12.5 AS decimal(5,2)) AS amount")
    check(cur.fetchall() == [(1, "ü", decimal.Decimal("12.50"))], "simple query")

    cur.execute("IF OBJECT_ID(N'dbo.pymssql_check') IS NOT NULL DROP TABLE dbo.pymssql_check")
    cur.execute("CREATE TABLE dbo.pymssql_check (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL)")
    cur.execute("INSERT INTO dbo.pymssql_check (id, name) VALUES (%d, %s)", (1, "one"))
    cur.execute("SELECT name FROM dbo.pymssql_check WHERE id = %d", (1,))
    check(cur.fetchall() == [("one",)], "parameterized query")
    conn.close()

    # Transactions: pymssql with autocommit off wraps work in BEGIN TRAN ... COMMIT/ROLLBACK.
    conn = connect(autocommit=False)
    cur = conn.cursor()
    cur.execute("INSERT INTO dbo.pymssql_check (id, name) VALUES (%d, %s)", (2, "kept"))
    conn.commit()
    cur.execute("INSERT INTO dbo.pymssql_check (id, name) VALUES (%d, %s)", (3, "rolled back"))
    conn.rollback()
    cur.execute("SELECT id, name FROM dbo.pymssql_check ORDER BY id")
    check(cur.fetchall() == [(1, "one"), (2, "kept")], "commit kept row 2, rollback dropped row 3")
    conn.commit()
    conn.close()

    conn = connect()
    cur = conn.cursor()
    check_error_numbers(cur)
    # sp_executesql as an RPC with FreeTDS's positional parameter encoding.
    cur.callproc("sp_executesql", ("SELECT @a + 1 AS x", "@a int", 41))
    check(cur.fetchall() == [(42,)], "sp_executesql through callproc")
    check_cdc(cur)
    conn.close()
    check_login_failure()


def check_error_numbers(cur):
    """The documented error numbers reach FreeTDS, and the connection survives each."""
    cases = [
        ("SELECT * FROM dbo.no_such_table", 208),
        ("SELEC 1", 102),
        ("SELECT no_such_column FROM dbo.pymssql_check", 207),
        ("INSERT INTO dbo.pymssql_check (id, name) VALUES (1, N'duplicate')", 2627),
    ]
    for sql, number in cases:
        try:
            cur.execute(sql)
            cur.fetchall()
        except pymssql.DatabaseError as e:
            check(e.args[0] == number, f"{sql!r}: error {number}, got {e.args}")
            continue
        raise AssertionError(f"{sql!r} raised no error")


def check_cdc(cur):
    """Enable CDC and read an insert and an update back through the change function."""
    cur.execute("CREATE TABLE dbo.pymssql_cdc (id int NOT NULL PRIMARY KEY, name nvarchar(50) NULL)")
    cur.execute("EXEC sys.sp_cdc_enable_db")
    cur.execute("EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'pymssql_cdc', @role_name = NULL")
    cur.execute("INSERT INTO dbo.pymssql_cdc (id, name) VALUES (10, N'new')")
    cur.execute("UPDATE dbo.pymssql_cdc SET name = N'changed' WHERE id = 10")
    cur.execute(
        "SELECT __$operation, id, name FROM cdc.fn_cdc_get_all_changes_dbo_pymssql_cdc("
        "sys.fn_cdc_get_min_lsn('dbo_pymssql_cdc'), sys.fn_cdc_get_max_lsn(), N'all update old') "
        "ORDER BY __$start_lsn, __$seqval, __$operation"
    )
    check(cur.fetchall() == [(2, 10, "new"), (3, 10, "new"), (4, 10, "changed")], "CDC insert and update images")
    cur.execute("SELECT sys.fn_cdc_get_max_lsn()")
    (lsn,) = cur.fetchone()
    check(isinstance(lsn, bytes) and len(lsn) == 10, f"binary(10) LSN, got {lsn!r}")


def sample():
    """Every table of the sample database decodes in FreeTDS, row counts agree."""
    conn = connect()
    cur = conn.cursor()
    cur.execute(
        "SELECT s.name, t.name FROM sys.tables t JOIN sys.schemas s ON s.schema_id = t.schema_id "
        "WHERE s.name IN (N'sales', N'inventory') ORDER BY s.name, t.name"
    )
    tables = cur.fetchall()
    check(len(tables) >= 10, f"sample tables listed: {tables}")
    for schema, table in tables:
        cur.execute(f"SELECT COUNT_BIG(*) FROM [{schema}].[{table}]")
        (count,) = cur.fetchone()
        cur.execute(f"SELECT * FROM [{schema}].[{table}]")
        rows = cur.fetchall()
        check(len(rows) == count and count > 0, f"{schema}.{table}: {len(rows)} rows, COUNT_BIG says {count}")
    conn.close()


def features():
    """Values checked against SQL Server's published results (see conformance_features.rs),
    decoded by FreeTDS: checksums, HASHBYTES, a 38-digit negative decimal, a view, a CTE and a
    REPEATABLE READ lock that makes a writer time out."""
    import hashlib

    conn = connect()
    cur = conn.cursor()
    cur.execute(
        "SELECT BINARY_CHECKSUM('2Volvo Director 20'), BINARY_CHECKSUM('3Volvo Director30'), "
        "CHECKSUM('2Volvo Director 20'), CHECKSUM(CONCAT(CHAR(2), CHAR(198))), CHECKSUM(100)"
    )
    got = cur.fetchall()
    check(got == [(-1356512636, 1257395480, -383039272, 7026, 100)], f"checksums: {got}")
    cur.execute("SELECT HASHBYTES('SHA2_256', 'abc'), HASHBYTES('SHA2_256', N'abc')")
    (varchar, nvarchar) = cur.fetchone()
    check(varchar == hashlib.sha256(b"abc").digest(), f"SHA2_256 over varchar: {varchar!r}")
    check(nvarchar == hashlib.sha256("abc".encode("utf-16-le")).digest(), f"SHA2_256 over nvarchar: {nvarchar!r}")
    cur.execute("SELECT CAST(-1234567890123456789012345678.1234567890 AS decimal(38,10))")
    (big,) = cur.fetchone()
    check(big == decimal.Decimal("-1234567890123456789012345678.1234567890"), f"negative decimal(38,10): {big!r}")

    cur.execute("IF OBJECT_ID(N'dbo.pymssql_view', N'V') IS NOT NULL DROP VIEW dbo.pymssql_view")
    cur.execute("IF OBJECT_ID(N'dbo.pymssql_items') IS NOT NULL DROP TABLE dbo.pymssql_items")
    cur.execute("CREATE TABLE dbo.pymssql_items (id int NOT NULL PRIMARY KEY, v int NOT NULL)")
    cur.execute("INSERT INTO dbo.pymssql_items VALUES (1, 10), (2, 20), (3, 30)")
    cur.execute("CREATE VIEW dbo.pymssql_view AS SELECT id, v * 2 AS doubled FROM dbo.pymssql_items WHERE v > 10")
    cur.execute("SELECT id, doubled FROM dbo.pymssql_view ORDER BY id")
    check(cur.fetchall() == [(2, 40), (3, 60)], "rows through a view")
    cur.execute("WITH s AS (SELECT SUM(v) AS total FROM dbo.pymssql_items) SELECT total FROM s")
    check(cur.fetchall() == [(60,)], "a CTE")

    reader = connect()
    rcur = reader.cursor()
    rcur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; BEGIN TRAN; SELECT v FROM dbo.pymssql_items WHERE id = 1")
    check(rcur.fetchall() == [(10,)], "repeatable read")
    cur.execute("SET LOCK_TIMEOUT 200")
    try:
        cur.execute("UPDATE dbo.pymssql_items SET v = 11 WHERE id = 1")
        raise AssertionError("the update of a row read under REPEATABLE READ did not wait")
    except pymssql.OperationalError as e:
        check("1222" in str(e), f"lock timeout names error 1222: {e}")
    rcur.execute("COMMIT")
    cur.execute("UPDATE dbo.pymssql_items SET v = 11 WHERE id = 1")
    reader.close()
    conn.close()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "engine"
    try:
        {"canned": canned, "engine": engine, "sample": sample, "features": features}[mode]()
    except Exception as e:  # report every failure the same way to the Rust test
        print(f"pymssql check ({mode}) failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"pymssql check ({mode}) passed")
