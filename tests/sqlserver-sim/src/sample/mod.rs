//! The sample database `shop`: a realistic schema over two schemas (`sales`, `inventory`)
//! that covers every supported SQL Server type, composite keys, foreign keys with cascades,
//! identity, defaults, computed columns, a heap table, a table without primary key but with a
//! unique index, LOB columns and one table with unsupported types — plus deterministic seed
//! data with extreme values.
//!
//! The script is plain T-SQL split into batches (SQL Server wants `CREATE SCHEMA` alone in its
//! batch), so it runs unchanged against the stand-in and against a real SQL Server.

mod data;

pub use data::SampleRng;
pub(crate) use data::{large_text, ORDER_STATUSES};

/// Name of the sample database.
pub const SAMPLE_DATABASE: &str = "shop";

/// The tables of the sample database as `(schema, table)`, parents before children.
pub const SAMPLE_TABLES: &[(&str, &str)] = &[
    ("inventory", "warehouses"),
    ("inventory", "products"),
    ("inventory", "stock"),
    ("inventory", "supplier_contacts"),
    ("inventory", "legacy_items"),
    ("sales", "customers"),
    ("sales", "orders"),
    ("sales", "order_lines"),
    ("sales", "payments"),
    ("sales", "customer_notes"),
    ("sales", "audit_log"),
    ("sales", "numeric_extremes"),
    ("sales", "temporal_extremes"),
    ("sales", "text_samples"),
];

/// Tables whose types dbsync must reject or convert (not captured by default by the demo).
pub const UNSUPPORTED_TYPE_TABLES: &[(&str, &str)] = &[("inventory", "legacy_items")];

/// Warehouse codes the seed data uses (the workload picks from them).
pub const WAREHOUSE_CODES: &[&str] = &["AMS1", "BER1", "CHI1", "NYC1", "SIN1", "SYD1"];

/// The whole script as batches: create the database, its schemas and tables, then the data.
/// `rows_per_table` sizes the ordinary tables (customers, products, orders …); the extreme-value
/// tables always hold their fixed rows. The output is identical for identical input.
pub fn sample_batches(rows_per_table: usize) -> Vec<String> {
    let mut batches = vec![
        format!("IF DB_ID(N'{SAMPLE_DATABASE}') IS NULL CREATE DATABASE {SAMPLE_DATABASE};"),
        format!("USE {SAMPLE_DATABASE};"),
        "CREATE SCHEMA sales;".to_string(),
        "CREATE SCHEMA inventory;".to_string(),
        SCHEMA_DDL.to_string(),
    ];
    batches.extend(data::seed_batches(rows_per_table));
    batches
}

/// The script as one text with `GO` separators (for sqlcmd-style tools and the demo).
pub fn sample_sql(rows_per_table: usize) -> String {
    let mut out = String::new();
    for batch in sample_batches(rows_per_table) {
        out.push_str(&batch);
        out.push_str("\nGO\n");
    }
    out
}

/// Loads the sample into `engine` (creates database `shop` unless it exists), batch by batch
/// in one session.
pub fn load_sample(
    engine: &crate::engine::Engine,
    rows_per_table: usize,
) -> Result<(), crate::api::SqlError> {
    let mut session = engine.session("master")?;
    for batch in sample_batches(rows_per_table) {
        session.run(&batch)?;
    }
    Ok(())
}

/// Tables and constraints. Every type of type-mapping.md §1.3 appears at least once.
const SCHEMA_DDL: &str = r#"
CREATE TABLE inventory.warehouses (
    warehouse_code char(4) NOT NULL CONSTRAINT PK_warehouses PRIMARY KEY,
    name nvarchar(100) NOT NULL,
    city nvarchar(100) NULL,
    opened_on date NOT NULL,
    capacity_m3 decimal(12, 3) NULL
);

CREATE TABLE inventory.products (
    product_id int IDENTITY(1, 1) NOT NULL CONSTRAINT PK_products PRIMARY KEY,
    sku varchar(40) COLLATE Latin1_General_BIN2 NOT NULL,
    name nvarchar(200) NOT NULL,
    description nvarchar(max) NULL,
    price decimal(10, 2) NOT NULL CONSTRAINT CK_products_price CHECK (price >= 0),
    weight_kg real NULL,
    created_at datetime2(3) NOT NULL CONSTRAINT DF_products_created_at DEFAULT (SYSUTCDATETIME()),
    discontinued bit NOT NULL CONSTRAINT DF_products_discontinued DEFAULT (0),
    CONSTRAINT UQ_products_sku UNIQUE (sku)
);

CREATE TABLE inventory.stock (
    warehouse_code char(4) NOT NULL,
    product_id int NOT NULL,
    quantity int NOT NULL CONSTRAINT DF_stock_quantity DEFAULT (0),
    reserved smallint NOT NULL CONSTRAINT DF_stock_reserved DEFAULT (0),
    updated_at datetime2(7) NULL,
    CONSTRAINT PK_stock PRIMARY KEY (warehouse_code, product_id),
    CONSTRAINT FK_stock_warehouse FOREIGN KEY (warehouse_code)
        REFERENCES inventory.warehouses (warehouse_code) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT FK_stock_product FOREIGN KEY (product_id)
        REFERENCES inventory.products (product_id) ON DELETE CASCADE
);

CREATE TABLE inventory.supplier_contacts (
    supplier_code varchar(20) NOT NULL,
    contact_email nvarchar(320) NOT NULL,
    contact_name nvarchar(200) NULL,
    phone varchar(30) NULL,
    is_primary bit NULL
);
CREATE UNIQUE NONCLUSTERED INDEX UX_supplier_contacts ON inventory.supplier_contacts (supplier_code, contact_email);

CREATE TABLE inventory.legacy_items (
    item_id int NOT NULL CONSTRAINT PK_legacy_items PRIMARY KEY,
    label nvarchar(100) NULL,
    attributes sql_variant NULL,
    tree_node hierarchyid NULL,
    row_ver rowversion NOT NULL
);

CREATE TABLE sales.customers (
    customer_id int IDENTITY(1, 1) NOT NULL CONSTRAINT PK_customers PRIMARY KEY,
    email nvarchar(320) NOT NULL,
    full_name nvarchar(200) NOT NULL,
    country_code char(2) NULL,
    created_at datetime2(7) NOT NULL CONSTRAINT DF_customers_created_at DEFAULT (SYSUTCDATETIME()),
    is_active bit NOT NULL CONSTRAINT DF_customers_is_active DEFAULT (1),
    credit_limit money NULL,
    loyalty_points bigint NOT NULL CONSTRAINT DF_customers_loyalty DEFAULT (0),
    CONSTRAINT UQ_customers_email UNIQUE (email)
);

CREATE TABLE sales.orders (
    order_id bigint IDENTITY(1000, 1) NOT NULL CONSTRAINT PK_orders PRIMARY KEY,
    customer_id int NOT NULL,
    order_date date NOT NULL,
    ordered_at datetimeoffset(7) NOT NULL,
    status varchar(20) NOT NULL CONSTRAINT DF_orders_status DEFAULT ('new'),
    total decimal(19, 4) NOT NULL CONSTRAINT DF_orders_total DEFAULT (0),
    discount smallmoney NULL,
    shipping_weight float NULL,
    CONSTRAINT FK_orders_customer FOREIGN KEY (customer_id)
        REFERENCES sales.customers (customer_id) ON DELETE CASCADE,
    CONSTRAINT CK_orders_status CHECK (status IN ('new', 'paid', 'shipped', 'closed', 'cancelled'))
);
CREATE NONCLUSTERED INDEX IX_orders_open ON sales.orders (status) WHERE status <> 'closed';
CREATE NONCLUSTERED INDEX IX_orders_customer ON sales.orders (customer_id, order_date);

CREATE TABLE sales.order_lines (
    order_id bigint NOT NULL,
    line_no smallint NOT NULL,
    product_id int NOT NULL,
    quantity int NOT NULL,
    unit_price decimal(12, 2) NOT NULL,
    line_total AS (quantity * unit_price),
    CONSTRAINT PK_order_lines PRIMARY KEY (order_id, line_no),
    CONSTRAINT FK_order_lines_order FOREIGN KEY (order_id)
        REFERENCES sales.orders (order_id) ON DELETE CASCADE,
    CONSTRAINT FK_order_lines_product FOREIGN KEY (product_id)
        REFERENCES inventory.products (product_id)
);

CREATE TABLE sales.payments (
    payment_id uniqueidentifier NOT NULL CONSTRAINT PK_payments PRIMARY KEY
        CONSTRAINT DF_payments_id DEFAULT (NEWID()),
    order_id bigint NOT NULL,
    amount money NOT NULL,
    paid_at datetime NOT NULL,
    method nchar(10) NOT NULL,
    reference varbinary(64) NULL,
    CONSTRAINT FK_payments_order FOREIGN KEY (order_id)
        REFERENCES sales.orders (order_id) ON DELETE CASCADE
);

CREATE TABLE sales.customer_notes (
    note_id int IDENTITY(1, 1) NOT NULL CONSTRAINT PK_customer_notes PRIMARY KEY,
    customer_id int NOT NULL,
    title nvarchar(200) NULL,
    body nvarchar(max) NULL,
    attachment varbinary(max) NULL,
    legacy_text text NULL,
    legacy_ntext ntext NULL,
    legacy_image image NULL,
    metadata xml NULL,
    CONSTRAINT FK_customer_notes_customer FOREIGN KEY (customer_id)
        REFERENCES sales.customers (customer_id) ON DELETE CASCADE
);

CREATE TABLE sales.audit_log (
    logged_at smalldatetime NOT NULL,
    event_name varchar(100) NOT NULL,
    detail varchar(max) NULL
);

CREATE TABLE sales.numeric_extremes (
    id int NOT NULL CONSTRAINT PK_numeric_extremes PRIMARY KEY,
    label varchar(40) NOT NULL,
    v_bit bit NULL,
    v_tinyint tinyint NULL,
    v_smallint smallint NULL,
    v_int int NULL,
    v_bigint bigint NULL,
    v_decimal_38_0 decimal(38, 0) NULL,
    v_decimal_38_38 decimal(38, 38) NULL,
    v_numeric_18_6 numeric(18, 6) NULL,
    v_money money NULL,
    v_smallmoney smallmoney NULL,
    v_real real NULL,
    v_float float NULL
);

CREATE TABLE sales.temporal_extremes (
    id int NOT NULL CONSTRAINT PK_temporal_extremes PRIMARY KEY,
    label varchar(40) NOT NULL,
    v_date date NULL,
    v_time0 time(0) NULL,
    v_time7 time(7) NULL,
    v_datetime datetime NULL,
    v_smalldatetime smalldatetime NULL,
    v_datetime2_0 datetime2(0) NULL,
    v_datetime2_7 datetime2(7) NULL,
    v_datetimeoffset0 datetimeoffset(0) NULL,
    v_datetimeoffset7 datetimeoffset(7) NULL
);

CREATE TABLE sales.text_samples (
    id int NOT NULL CONSTRAINT PK_text_samples PRIMARY KEY,
    label varchar(40) NOT NULL,
    v_char char(10) NULL,
    v_varchar varchar(50) NULL,
    v_nchar nchar(10) NULL,
    v_nvarchar nvarchar(50) NULL,
    v_varchar_max varchar(max) NULL,
    v_nvarchar_max nvarchar(max) NULL,
    v_binary binary(8) NULL,
    v_varbinary varbinary(50) NULL,
    v_varbinary_max varbinary(max) NULL,
    v_guid uniqueidentifier NULL,
    v_xml xml NULL
);

CREATE SEQUENCE sales.invoice_numbers AS bigint START WITH 100000 INCREMENT BY 1;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_deterministic_and_scales_with_rows() {
        let a = sample_sql(20);
        assert_eq!(a, sample_sql(20));
        assert!(sample_sql(200).len() > a.len());
        for (schema, table) in SAMPLE_TABLES {
            assert!(
                a.contains(&format!("CREATE TABLE {schema}.{table} (")),
                "{schema}.{table} missing"
            );
        }
    }

    #[test]
    fn schema_covers_every_type_of_the_mapping_table() {
        let ddl = SCHEMA_DDL.to_ascii_lowercase();
        for ty in [
            " bit ",
            " tinyint ",
            " smallint ",
            " int ",
            " bigint ",
            "decimal(38, 38)",
            "numeric(",
            " money ",
            " smallmoney ",
            " real ",
            " float ",
            " date ",
            "time(0)",
            "time(7)",
            " datetime ",
            " smalldatetime ",
            "datetime2(0)",
            "datetime2(7)",
            "datetimeoffset(0)",
            "datetimeoffset(7)",
            "char(",
            "varchar(max)",
            "nchar(",
            "nvarchar(max)",
            "binary(8)",
            "varbinary(max)",
            " text ",
            " ntext ",
            " image ",
            "uniqueidentifier",
            " xml ",
            "rowversion",
            "sql_variant",
            "hierarchyid",
        ] {
            assert!(ddl.contains(ty), "type {ty} missing from the sample schema");
        }
    }
}
