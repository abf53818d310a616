//! Contract: the catalog and precheck queries the capture service sends (copied from
//! services/capture/src/mssql/inspect.rs; CDC queries are covered by the CDC tests) run on the
//! engine and return the column types the service reads.

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::types::{SqlType, Value};

const QUERIES: &[(&str, &str)] = &[
    ("SERVER_INFO_QUERY", "SELECT @@VERSION AS version, CAST(SERVERPROPERTY('ProductVersion') AS nvarchar(128)) AS product_version, CAST(SERVERPROPERTY('Edition') AS nvarchar(128)) AS edition, CAST(SERVERPROPERTY('EngineEdition') AS int) AS engine_edition, CAST(SERVERPROPERTY('ServerName') AS nvarchar(128)) AS server_name"),
    ("LOCAL_SERVER_NAME_QUERY", "SELECT name FROM sys.servers WHERE server_id = 0"),
    ("DATABASES_QUERY", "SELECT name, database_id, is_cdc_enabled, recovery_model_desc, snapshot_isolation_state, is_read_committed_snapshot_on, SUSER_SNAME(owner_sid) AS owner_name, state_desc FROM sys.databases WHERE database_id > 4 ORDER BY name"),
    ("CURRENT_DATABASE_QUERY", "SELECT name, database_id, is_cdc_enabled, recovery_model_desc, snapshot_isolation_state, is_read_committed_snapshot_on, SUSER_SNAME(owner_sid) AS owner_name, state_desc FROM sys.databases WHERE name = DB_NAME()"),
    ("PERMISSIONS_QUERY", "SELECT IS_SRVROLEMEMBER('sysadmin') AS is_sysadmin, IS_ROLEMEMBER('db_owner') AS is_db_owner"),
    ("LAST_LOG_BACKUP_QUERY", "SELECT TOP (1) backup_finish_date FROM msdb.dbo.backupset WHERE database_name = DB_NAME() AND type = 'L' ORDER BY backup_finish_date DESC"),
    ("AGENT_STATUS_QUERY", "SELECT status_desc FROM sys.dm_server_services WHERE servicename LIKE N'SQL Server Agent%'"),
    ("MAX_TEXT_REPL_SIZE_QUERY", "SELECT CAST(value_in_use AS int) AS value_in_use FROM sys.configurations WHERE name = N'max text repl size (B)'"),
    ("TABLES_QUERY", "SELECT t.object_id, s.name AS schema_name, t.name AS table_name, t.is_tracked_by_cdc FROM sys.tables AS t JOIN sys.schemas AS s ON s.schema_id = t.schema_id WHERE t.is_ms_shipped = 0 AND s.name <> N'cdc' ORDER BY s.name, t.name"),
    ("COLUMNS_QUERY", "SELECT c.object_id, c.column_id, c.name, c.system_type_id, c.user_type_id, ut.name AS user_type_name, ut.is_user_defined, ut.is_assembly_type, c.max_length, c.precision, c.scale, c.is_nullable, c.collation_name, c.is_identity, c.is_computed, c.is_sparse, c.is_rowguidcol, c.default_object_id FROM sys.columns AS c JOIN sys.tables AS t ON t.object_id = c.object_id JOIN sys.types AS ut ON ut.user_type_id = c.user_type_id WHERE t.is_ms_shipped = 0 ORDER BY c.object_id, c.column_id"),
    ("TYPES_QUERY", "SELECT user_type_id, name FROM sys.types"),
    ("IDENTITY_COLUMNS_QUERY", "SELECT object_id, column_id, CAST(seed_value AS bigint) AS seed_value, CAST(increment_value AS bigint) AS increment_value, CAST(last_value AS bigint) AS last_value FROM sys.identity_columns"),
    ("DEFAULTS_QUERY", "SELECT object_id, name, definition FROM sys.default_constraints"),
    ("COMPUTED_COLUMNS_QUERY", "SELECT object_id, column_id, definition, is_persisted FROM sys.computed_columns"),
    ("INDEXES_QUERY", "SELECT i.object_id, i.index_id, i.name, i.type, i.is_primary_key, i.is_unique, i.is_unique_constraint, i.is_disabled, i.has_filter, i.filter_definition FROM sys.indexes AS i JOIN sys.tables AS t ON t.object_id = i.object_id WHERE i.type > 0 AND i.is_hypothetical = 0 AND t.is_ms_shipped = 0 ORDER BY i.object_id, i.index_id"),
    ("INDEX_COLUMNS_QUERY", "SELECT ic.object_id, ic.index_id, c.name, ic.key_ordinal, ic.is_descending_key, ic.is_included_column, ic.index_column_id FROM sys.index_columns AS ic JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id ORDER BY ic.object_id, ic.index_id, ic.is_included_column, ic.key_ordinal, ic.index_column_id"),
    ("FOREIGN_KEYS_QUERY", "SELECT fk.object_id, fk.parent_object_id, fk.name, rs.name AS referenced_schema, rt.name AS referenced_table, fk.delete_referential_action_desc, fk.update_referential_action_desc, fk.is_disabled, fk.is_not_trusted FROM sys.foreign_keys AS fk JOIN sys.tables AS rt ON rt.object_id = fk.referenced_object_id JOIN sys.schemas AS rs ON rs.schema_id = rt.schema_id ORDER BY fk.parent_object_id, fk.name"),
    ("FOREIGN_KEY_COLUMNS_QUERY", "SELECT fkc.constraint_object_id, fkc.constraint_column_id, pc.name AS column_name, rc.name AS referenced_column_name FROM sys.foreign_key_columns AS fkc JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id ORDER BY fkc.constraint_object_id, fkc.constraint_column_id"),
    ("CHECKS_QUERY", "SELECT cc.parent_object_id, cc.name, cc.definition, cc.is_disabled FROM sys.check_constraints AS cc ORDER BY cc.parent_object_id, cc.name"),
    ("PARTITIONS_QUERY", "SELECT p.object_id, SUM(p.rows) AS row_count, MAX(p.data_compression_desc) AS data_compression FROM sys.partitions AS p WHERE p.index_id IN (0, 1) GROUP BY p.object_id"),
    ("SEQUENCES_QUERY", "SELECT s.name AS schema_name, sq.name, TYPE_NAME(sq.system_type_id) AS type_name, CAST(sq.start_value AS bigint) AS start_value, CAST(sq.increment AS bigint) AS increment, CAST(sq.minimum_value AS bigint) AS minimum_value, CAST(sq.maximum_value AS bigint) AS maximum_value, CAST(sq.current_value AS bigint) AS current_value, sq.is_cycling, sq.is_exhausted FROM sys.sequences AS sq JOIN sys.schemas AS s ON s.schema_id = sq.schema_id ORDER BY s.name, sq.name"),
    ("LOG_END_LSN_QUERY", "SELECT log_end_lsn FROM sys.dm_db_log_stats(DB_ID())"),
];

const SCHEMA: &str = "CREATE SCHEMA sales;
CREATE TYPE dbo.code FROM nvarchar(12) NOT NULL;
CREATE TABLE dbo.customers (id int IDENTITY(1,1) NOT NULL CONSTRAINT pk_customers PRIMARY KEY, code dbo.code, name nvarchar(100) NULL, created datetime2(3) NOT NULL DEFAULT SYSUTCDATETIME(), CONSTRAINT uq_customers_code UNIQUE (code));
CREATE TABLE sales.orders (region char(2) NOT NULL, id bigint NOT NULL, customer_id int NULL, total money NULL, qty int NOT NULL CONSTRAINT ck_qty CHECK (qty > 0), doubled AS (qty * 2) PERSISTED, note nvarchar(max) NULL,
  CONSTRAINT pk_orders PRIMARY KEY CLUSTERED (region, id),
  CONSTRAINT fk_orders_customers FOREIGN KEY (customer_id) REFERENCES dbo.customers (id) ON DELETE SET NULL);
CREATE NONCLUSTERED INDEX ix_orders_customer ON sales.orders (customer_id DESC) INCLUDE (total) WHERE customer_id IS NOT NULL;
CREATE TABLE dbo.events (at datetime2(7) NULL, payload varbinary(max) NULL);
CREATE SEQUENCE dbo.order_numbers AS bigint START WITH 1000 INCREMENT BY 10;
INSERT INTO dbo.customers (code, name) VALUES (N'C1', N'Ann'), (N'C2', N'Bob');
INSERT INTO sales.orders (region, id, customer_id, total, qty) VALUES ('EU', 1, 1, 10.5, 1), ('EU', 2, 2, 20, 3), ('US', 1, NULL, NULL, 2);
BACKUP DATABASE shop TO DISK = N'shop.bak';
BACKUP LOG shop TO DISK = N'shop.trn'";

#[test]
fn capture_catalog_queries_run_with_expected_types() {
    let e = Engine::new(EngineConfig::default());
    let mut s = e.session("master").unwrap();
    s.run("CREATE DATABASE shop").unwrap();
    s.run("USE shop").unwrap();
    s.run(SCHEMA).unwrap();
    s.run("SELECT NEXT VALUE FOR dbo.order_numbers").unwrap();
    for (name, sql) in QUERIES {
        let r = s
            .run(sql)
            .unwrap_or_else(|err| panic!("{name}: {err}\n{sql}"));
        assert_eq!(r.len(), 1, "{name}");
    }
    let get = |s: &mut dbsync_sqlserver_sim::engine::EngineSession, name: &str| {
        let sql = QUERIES.iter().find(|(n, _)| *n == name).unwrap().1;
        s.run(sql).unwrap().remove(0)
    };
    let r = get(&mut s, "SERVER_INFO_QUERY");
    assert_eq!(at(&r, 0, "engine_edition"), Value::Int(3));
    assert_eq!(at(&r, 0, "server_name"), Value::String("STANDIN".into()));
    let r = get(&mut s, "CURRENT_DATABASE_QUERY");
    assert_eq!(at(&r, 0, "owner_name"), Value::String("sa".into()));
    assert_eq!(ty(&r, "snapshot_isolation_state"), SqlType::TinyInt);
    let r = get(&mut s, "LAST_LOG_BACKUP_QUERY");
    assert_eq!(r.rows.len(), 1);
    assert_eq!(ty(&r, "backup_finish_date"), SqlType::DateTime);
    let r = get(&mut s, "TABLES_QUERY");
    assert_eq!(r.rows.len(), 3);
    let r = get(&mut s, "COLUMNS_QUERY");
    let row = (0..r.rows.len())
        .find(|i| at(&r, *i, "name") == Value::String("code".into()))
        .unwrap();
    assert_eq!(
        at(&r, row, "user_type_name"),
        Value::String("code".into()),
        "alias type name"
    );
    assert_eq!(at(&r, row, "is_user_defined"), Value::Bit(true));
    assert_eq!(at(&r, row, "max_length"), Value::SmallInt(24));
    let r = get(&mut s, "IDENTITY_COLUMNS_QUERY");
    assert_eq!(at(&r, 0, "seed_value"), Value::BigInt(1));
    assert_eq!(at(&r, 0, "last_value"), Value::BigInt(2));
    let r = get(&mut s, "INDEXES_QUERY");
    assert_eq!(
        r.rows.len(),
        4,
        "pk_customers, uq_customers_code, pk_orders, ix_orders_customer"
    );
    let r = get(&mut s, "INDEX_COLUMNS_QUERY");
    assert!(
        (0..r.rows.len()).any(|i| at(&r, i, "name") == Value::String("total".into())
            && at(&r, i, "is_included_column") == Value::Bit(true))
    );
    let r = get(&mut s, "FOREIGN_KEYS_QUERY");
    assert_eq!(
        at(&r, 0, "delete_referential_action_desc"),
        Value::String("SET_NULL".into())
    );
    let r = get(&mut s, "FOREIGN_KEY_COLUMNS_QUERY");
    assert_eq!(
        at(&r, 0, "column_name"),
        Value::String("customer_id".into())
    );
    assert_eq!(
        at(&r, 0, "referenced_column_name"),
        Value::String("id".into())
    );
    let r = get(&mut s, "PARTITIONS_QUERY");
    assert_eq!(ty(&r, "row_count"), SqlType::BigInt);
    assert!((0..r.rows.len()).any(|i| at(&r, i, "row_count") == Value::BigInt(3)));
    let r = get(&mut s, "SEQUENCES_QUERY");
    assert_eq!(at(&r, 0, "type_name"), Value::String("bigint".into()));
    assert_eq!(at(&r, 0, "current_value"), Value::BigInt(1000));
    let r = get(&mut s, "MAX_TEXT_REPL_SIZE_QUERY");
    assert_eq!(at(&r, 0, "value_in_use"), Value::Int(65536));
    let r = get(&mut s, "LOG_END_LSN_QUERY");
    assert_eq!(r.rows.len(), 1);
}

fn at(r: &dbsync_sqlserver_sim::engine::QueryResult, row: usize, name: &str) -> Value {
    let i = r
        .columns
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    r.rows[row][i].clone()
}

fn ty(r: &dbsync_sqlserver_sim::engine::QueryResult, name: &str) -> SqlType {
    r.columns
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .ty
        .clone()
}

#[test]
fn chunk_queries_use_key_ranges() {
    let e = Engine::new(EngineConfig::default());
    let mut s = e.session("master").unwrap();
    s.run("CREATE DATABASE shop; USE shop; CREATE TABLE dbo.t (a int NOT NULL, b varchar(20) NOT NULL, m money NULL, CONSTRAINT pk PRIMARY KEY (a, b))").unwrap();
    let mut sql = String::from("INSERT INTO dbo.t VALUES ");
    for i in 0..200 {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("({}, 'k{}', {}.5)", i / 4, i % 4, i));
    }
    s.run(&sql).unwrap();
    let q = "SELECT [a], [b], CAST([m] AS decimal(19,4)) AS [m] FROM [dbo].[t] WHERE ([a] > CAST(@P1 AS int) OR ([a] = CAST(@P1 AS int) AND [b] > CAST(@P2 AS varchar(20)))) AND ([a] < CAST(@P3 AS int) OR ([a] = CAST(@P3 AS int) AND [b] <= CAST(@P4 AS varchar(20)))) ORDER BY [a], [b]";
    let r = s
        .run_with(
            q,
            &[
                ("@P1", Value::Int(10)),
                ("@P2", Value::String("k2".into())),
                ("@P3", Value::Int(12)),
                ("@P4", Value::String("k1".into())),
            ],
        )
        .unwrap();
    let rows = &r[0].rows;
    assert_eq!(rows.len(), 1 + 4 + 2);
    assert_eq!(rows[0][..2], [Value::Int(10), Value::String("k3".into())]);
    assert_eq!(rows[6][..2], [Value::Int(12), Value::String("k1".into())]);
    assert_eq!(
        r[0].columns[2].ty,
        SqlType::Decimal {
            precision: 19,
            scale: 4,
            numeric: false
        }
    );
}
