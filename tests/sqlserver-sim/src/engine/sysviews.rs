//! Catalog views (sys.*, INFORMATION_SCHEMA.*), materialised from the catalog when a query
//! names them. Column names and types follow SQL Server's.

use std::sync::Arc;

use chrono::NaiveDateTime;

use super::catalog::{DatabaseDef, IndexKind, TableDef};
use super::session::SessionCore;
use super::value::{self, nvarchar, sysname, varchar};
use crate::api::{ResultColumn, SqlError};
use crate::types::{SqlType, Value};

pub struct ViewData {
    pub columns: Vec<ResultColumn>,
    pub rows: Vec<Vec<Value>>,
}

struct V {
    columns: Vec<ResultColumn>,
    rows: Vec<Vec<Value>>,
}

impl V {
    fn new(cols: &[(&str, SqlType, bool)]) -> V {
        V {
            columns: cols
                .iter()
                .map(|(n, t, nl)| ResultColumn::expr(*n, t.clone(), *nl))
                .collect(),
            rows: Vec::new(),
        }
    }
    fn push(&mut self, r: Vec<Value>) {
        debug_assert_eq!(r.len(), self.columns.len());
        self.rows.push(r);
    }
    fn done(self) -> Option<ViewData> {
        Some(ViewData {
            columns: self.columns,
            rows: self.rows,
        })
    }
}

fn s(x: &str) -> Value {
    Value::String(Arc::from(x))
}
fn so(x: Option<&str>) -> Value {
    x.map(s).unwrap_or(Value::Null)
}
fn i(x: i32) -> Value {
    Value::Int(x)
}
fn b(x: bool) -> Value {
    Value::Bit(x)
}
fn ti(x: u8) -> Value {
    Value::TinyInt(x)
}
fn si(x: i16) -> Value {
    Value::SmallInt(x)
}
fn dt(x: &NaiveDateTime) -> Value {
    let (d, t) = value::parts_from_naive(x);
    value::datetime_from_parts(d, t, 0, &SqlType::DateTime).unwrap_or(Value::Null)
}
fn dec(x: i128) -> Value {
    Value::Decimal(x, 0)
}

const T: bool = true;
const F: bool = false;

/// Built-in types: (name, user_type_id, type).
pub fn builtin_types() -> Vec<(&'static str, i32, SqlType)> {
    let c = value::DEFAULT_COLLATION;
    vec![
        ("image", 34, SqlType::Image),
        ("text", 35, SqlType::Text { collation: c }),
        ("uniqueidentifier", 36, SqlType::UniqueIdentifier),
        ("date", 40, SqlType::Date),
        ("time", 41, SqlType::Time { scale: 7 }),
        ("datetime2", 42, SqlType::DateTime2 { scale: 7 }),
        ("datetimeoffset", 43, SqlType::DateTimeOffset { scale: 7 }),
        ("tinyint", 48, SqlType::TinyInt),
        ("smallint", 52, SqlType::SmallInt),
        ("int", 56, SqlType::Int),
        ("smalldatetime", 58, SqlType::SmallDateTime),
        ("real", 59, SqlType::Real),
        ("money", 60, SqlType::Money),
        ("datetime", 61, SqlType::DateTime),
        ("float", 62, SqlType::Float),
        ("sql_variant", 98, SqlType::SqlVariant),
        ("ntext", 99, SqlType::NText { collation: c }),
        ("bit", 104, SqlType::Bit),
        ("decimal", 106, value::decimal(18, 0)),
        (
            "numeric",
            108,
            SqlType::Decimal {
                precision: 18,
                scale: 0,
                numeric: true,
            },
        ),
        ("smallmoney", 122, SqlType::SmallMoney),
        ("bigint", 127, SqlType::BigInt),
        ("hierarchyid", 128, SqlType::HierarchyId),
        ("geometry", 129, SqlType::Geometry),
        ("geography", 130, SqlType::Geography),
        ("varbinary", 165, SqlType::VarBinary { len: Some(8000) }),
        ("varchar", 167, varchar(Some(8000))),
        ("binary", 173, SqlType::Binary { len: 8000 }),
        (
            "char",
            175,
            SqlType::Char {
                len: 8000,
                collation: c,
            },
        ),
        ("timestamp", 189, SqlType::RowVersion),
        ("nvarchar", 231, nvarchar(Some(4000))),
        (
            "nchar",
            239,
            SqlType::NChar {
                len: 4000,
                collation: c,
            },
        ),
        ("xml", 241, SqlType::Xml),
        ("sysname", 256, sysname()),
    ]
}

fn user_type_id(db: &DatabaseDef, c: &super::catalog::ColumnDef) -> i32 {
    if let Some((schema, name)) = &c.user_type {
        if let Some(a) = db
            .alias_types
            .get(&super::catalog::object_key(schema, name))
        {
            return a.user_type_id;
        }
    }
    value::system_type_id(&c.ty).1
}

fn collation_of(t: &SqlType) -> Value {
    if value::is_string_type(t) && !matches!(t, SqlType::Xml) {
        s("SQL_Latin1_General_CP1_CI_AS")
    } else {
        Value::Null
    }
}

fn object_cols() -> Vec<(&'static str, SqlType, bool)> {
    vec![
        ("name", sysname(), F),
        ("object_id", SqlType::Int, F),
        ("principal_id", SqlType::Int, T),
        ("schema_id", SqlType::Int, F),
        ("parent_object_id", SqlType::Int, F),
        (
            "type",
            SqlType::Char {
                len: 2,
                collation: value::DEFAULT_COLLATION,
            },
            T,
        ),
        ("type_desc", nvarchar(Some(60)), T),
        ("create_date", SqlType::DateTime, F),
        ("modify_date", SqlType::DateTime, F),
        ("is_ms_shipped", SqlType::Bit, F),
        ("is_published", SqlType::Bit, F),
        ("is_schema_published", SqlType::Bit, F),
    ]
}

#[allow(clippy::too_many_arguments)]
fn object_row(
    name: &str,
    id: i32,
    schema_id: i32,
    parent: i32,
    ty: &str,
    desc: &str,
    created: &NaiveDateTime,
    modified: &NaiveDateTime,
    shipped: bool,
) -> Vec<Value> {
    vec![
        s(name),
        i(id),
        Value::Null,
        i(schema_id),
        i(parent),
        s(ty),
        s(desc),
        dt(created),
        dt(modified),
        b(shipped),
        b(false),
        b(false),
    ]
}

/// All objects of a database for sys.objects (name, id, schema, parent, type, desc, dates).
fn all_objects(db: &DatabaseDef) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for t in db.tables.values() {
        out.push(object_row(
            &t.name,
            t.object_id,
            t.schema_id,
            0,
            "U",
            "USER_TABLE",
            &t.created,
            &t.modified,
            t.is_ms_shipped,
        ));
        for ix in t
            .indexes
            .iter()
            .filter(|x| x.is_primary_key || x.is_unique_constraint)
        {
            let (ty, desc) = if ix.is_primary_key {
                ("PK", "PRIMARY_KEY_CONSTRAINT")
            } else {
                ("UQ", "UNIQUE_CONSTRAINT")
            };
            out.push(object_row(
                &ix.name,
                ix.constraint_object_id.unwrap_or(0),
                t.schema_id,
                t.object_id,
                ty,
                desc,
                &t.created,
                &t.modified,
                t.is_ms_shipped,
            ));
        }
        for f in &t.foreign_keys {
            out.push(object_row(
                &f.name,
                f.object_id,
                t.schema_id,
                t.object_id,
                "F",
                "FOREIGN_KEY_CONSTRAINT",
                &t.created,
                &t.modified,
                t.is_ms_shipped,
            ));
        }
        for c in &t.checks {
            out.push(object_row(
                &c.name,
                c.object_id,
                t.schema_id,
                t.object_id,
                "C",
                "CHECK_CONSTRAINT",
                &t.created,
                &t.modified,
                t.is_ms_shipped,
            ));
        }
        for c in &t.columns {
            if let Some(d) = &c.default {
                out.push(object_row(
                    &d.name,
                    d.object_id,
                    t.schema_id,
                    t.object_id,
                    "D",
                    "DEFAULT_CONSTRAINT",
                    &t.created,
                    &t.modified,
                    t.is_ms_shipped,
                ));
            }
        }
    }
    for sq in db.sequences.values() {
        out.push(object_row(
            &sq.name,
            sq.object_id,
            sq.schema_id,
            0,
            "SO",
            "SEQUENCE_OBJECT",
            &sq.created,
            &sq.created,
            false,
        ));
    }
    for p in db.procedures.values() {
        out.push(object_row(
            &p.name,
            p.object_id,
            p.schema_id,
            0,
            "P",
            "SQL_STORED_PROCEDURE",
            &p.created,
            &p.created,
            false,
        ));
    }
    for w in db.views.values() {
        out.push(view_object_row(w));
    }
    out
}

thread_local! {
    /// Set while a view's columns are being derived, so that a view over the catalog views
    /// does not recurse into itself.
    static DERIVING_VIEW_COLUMNS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A view's columns as its SELECT gives them now (in ColumnDef form for the column views);
/// none when the SELECT no longer binds (a dropped table), or while deriving another view's.
fn view_columns(
    core: &SessionCore,
    db: &DatabaseDef,
    w: &super::catalog::ViewDef,
) -> Vec<super::catalog::ColumnDef> {
    if DERIVING_VIEW_COLUMNS.with(|d| d.replace(true)) {
        return Vec::new();
    }
    let sql = format!(
        "SELECT TOP (0) * FROM [{}].[{}]",
        w.schema.replace(']', "]]"),
        w.name.replace(']', "]]")
    );
    let result = core.engine.run(&db.name, &sql);
    DERIVING_VIEW_COLUMNS.with(|d| d.set(false));
    let columns = match result {
        Ok(results) => results
            .into_iter()
            .next()
            .map(|r| r.columns)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    columns
        .into_iter()
        .enumerate()
        .map(|(i, c)| super::catalog::ColumnDef {
            column_id: i as i32 + 1,
            name: c.name,
            ty: c.ty,
            user_type: None,
            nullable: c.nullable,
            identity: None,
            default: None,
            computed: None,
            is_rowguidcol: false,
        })
        .collect()
}

fn view_object_row(w: &super::catalog::ViewDef) -> Vec<Value> {
    object_row(
        &w.name,
        w.object_id,
        w.schema_id,
        0,
        "V",
        "VIEW",
        &w.created,
        &w.created,
        false,
    )
}

fn row_count(core: &SessionCore, t: &TableDef) -> i64 {
    core.read_snapshot()
        .table(t.object_id)
        .map(|d| d.rows.len() as i64)
        .unwrap_or(0)
}

/// The rows of a catalog view, or None if `schema.name` is not one.
pub fn view(
    core: &SessionCore,
    database: &str,
    schema: &str,
    name: &str,
) -> Result<Option<ViewData>, SqlError> {
    let Some(db) = core.engine.database(database) else {
        return Err(value::err(911, format!("Database '{database}' does not exist. Make sure that the name is entered correctly.")));
    };
    let cfg = core.engine.config();
    if schema == "information_schema" {
        return Ok(information_schema(core, &db, name));
    }
    Ok(match name {
        "databases" | "sysdatabases" => {
            let mut v = V::new(&[
                ("name", sysname(), T),
                ("database_id", SqlType::Int, F),
                ("source_database_id", SqlType::Int, T),
                ("owner_sid", SqlType::VarBinary { len: Some(85) }, T),
                ("create_date", SqlType::DateTime, F),
                ("compatibility_level", SqlType::TinyInt, F),
                ("collation_name", sysname(), T),
                ("user_access", SqlType::TinyInt, T),
                ("user_access_desc", nvarchar(Some(60)), T),
                ("is_read_only", SqlType::Bit, T),
                ("state", SqlType::TinyInt, T),
                ("state_desc", nvarchar(Some(60)), T),
                ("snapshot_isolation_state", SqlType::TinyInt, T),
                ("snapshot_isolation_state_desc", nvarchar(Some(60)), T),
                ("is_read_committed_snapshot_on", SqlType::Bit, T),
                ("recovery_model", SqlType::TinyInt, T),
                ("recovery_model_desc", nvarchar(Some(60)), T),
                ("log_reuse_wait", SqlType::TinyInt, T),
                ("log_reuse_wait_desc", nvarchar(Some(60)), T),
                ("is_cdc_enabled", SqlType::Bit, F),
                ("is_encrypted", SqlType::Bit, T),
                ("is_broker_enabled", SqlType::Bit, F),
            ]);
            let mut dbs: Vec<DatabaseDef> =
                core.engine.inner.catalog.read().values().cloned().collect();
            dbs.sort_by_key(|d| d.database_id);
            for d in dbs {
                v.push(vec![
                    s(&d.name),
                    i(d.database_id),
                    Value::Null,
                    Value::Binary(Arc::from(d.owner_sid.clone())),
                    dt(&d.created),
                    ti(160),
                    s("SQL_Latin1_General_CP1_CI_AS"),
                    ti(0),
                    s("MULTI_USER"),
                    b(false),
                    ti(0),
                    s("ONLINE"),
                    ti(d.allow_snapshot_isolation as u8),
                    s(if d.allow_snapshot_isolation {
                        "ON"
                    } else {
                        "OFF"
                    }),
                    b(d.read_committed_snapshot),
                    ti(d.recovery.code()),
                    s(d.recovery.desc()),
                    ti(0),
                    s("NOTHING"),
                    b(d.is_cdc_enabled),
                    b(false),
                    b(false),
                ]);
            }
            v.done()
        }
        "database_recovery_status" => {
            let mut v = V::new(&[
                ("database_id", SqlType::Int, F),
                ("database_guid", SqlType::UniqueIdentifier, T),
                ("last_log_backup_lsn", value::decimal(25, 0), T),
            ]);
            let backups = core
                .engine
                .inner
                .catalog
                .read()
                .get("msdb")
                .and_then(|m| m.table("dbo", "backupset").cloned());
            let dbs: Vec<DatabaseDef> =
                core.engine.inner.catalog.read().values().cloned().collect();
            for d in dbs {
                let mut last = Value::Null;
                if let Some(bt) = &backups {
                    let snap = core.read_snapshot();
                    if let Some(td) = snap.table(bt.object_id) {
                        for r in td.rows.values() {
                            if matches!(&r.row[1], Value::String(n) if n.eq_ignore_ascii_case(&d.name))
                                && matches!(&r.row[2], Value::String(t) if &**t == "L")
                            {
                                last = r.row[6].clone();
                            }
                        }
                    }
                }
                v.push(vec![i(d.database_id), Value::Null, last]);
            }
            v.done()
        }
        "schemas" => {
            let mut v = V::new(&[
                ("name", sysname(), F),
                ("schema_id", SqlType::Int, F),
                ("principal_id", SqlType::Int, T),
            ]);
            let mut list: Vec<_> = db.schemas.values().collect();
            list.sort_by_key(|x| x.schema_id);
            for sc in list {
                v.push(vec![s(&sc.name), i(sc.schema_id), i(sc.principal_id)]);
            }
            v.done()
        }
        "objects" | "all_objects" => {
            let mut v = V::new(&object_cols());
            for r in all_objects(&db) {
                v.push(r);
            }
            v.done()
        }
        "tables" => {
            let mut cols = object_cols();
            cols.extend([
                ("lob_data_space_id", SqlType::Int, F),
                ("is_replicated", SqlType::Bit, T),
                ("has_replication_filter", SqlType::Bit, T),
                ("is_merge_published", SqlType::Bit, T),
                ("is_tracked_by_cdc", SqlType::Bit, T),
                ("temporal_type", SqlType::TinyInt, T),
                ("temporal_type_desc", nvarchar(Some(60)), T),
                ("is_memory_optimized", SqlType::Bit, T),
                ("is_external", SqlType::Bit, F),
                ("is_filetable", SqlType::Bit, T),
            ]);
            let mut v = V::new(&cols);
            for t in db.tables.values() {
                let mut r = object_row(
                    &t.name,
                    t.object_id,
                    t.schema_id,
                    0,
                    "U",
                    "USER_TABLE",
                    &t.created,
                    &t.modified,
                    t.is_ms_shipped,
                );
                let has_lob = t.columns.iter().any(|c| value::is_lob_type(&c.ty));
                r.extend([
                    i(has_lob as i32),
                    b(false),
                    b(false),
                    b(false),
                    b(t.is_tracked_by_cdc),
                    ti(0),
                    s("NON_TEMPORAL_TABLE"),
                    b(false),
                    b(false),
                    b(false),
                ]);
                v.push(r);
            }
            v.done()
        }
        "views" | "all_views" => {
            let mut cols = object_cols();
            cols.extend([
                ("is_replicated", SqlType::Bit, T),
                ("has_replication_filter", SqlType::Bit, T),
                ("has_opaque_metadata", SqlType::Bit, F),
                ("has_unchecked_assembly_data", SqlType::Bit, F),
                ("with_check_option", SqlType::Bit, F),
                ("is_date_correlation_view", SqlType::Bit, F),
                ("is_tracked_by_cdc", SqlType::Bit, T),
                ("has_snapshot", SqlType::Bit, T),
                ("ledger_view_type", SqlType::TinyInt, T),
                ("ledger_view_type_desc", nvarchar(Some(60)), T),
                ("is_dropped_ledger_view", SqlType::Bit, T),
            ]);
            let mut v = V::new(&cols);
            for w in db.views.values() {
                let mut r = view_object_row(w);
                r.extend([
                    b(false),
                    b(false),
                    b(false),
                    b(false),
                    b(w.check_option),
                    b(false),
                    b(false),
                    b(false),
                    ti(0),
                    s("NON_LEDGER_VIEW"),
                    b(false),
                ]);
                v.push(r);
            }
            v.done()
        }
        "columns" | "all_columns" | "computed_columns" | "identity_columns" => {
            let mut cols = vec![
                ("object_id", SqlType::Int, F),
                ("name", sysname(), T),
                ("column_id", SqlType::Int, F),
                ("system_type_id", SqlType::TinyInt, F),
                ("user_type_id", SqlType::Int, F),
                ("max_length", SqlType::SmallInt, F),
                ("precision", SqlType::TinyInt, F),
                ("scale", SqlType::TinyInt, F),
                ("collation_name", sysname(), T),
                ("is_nullable", SqlType::Bit, T),
                ("is_ansi_padded", SqlType::Bit, F),
                ("is_rowguidcol", SqlType::Bit, F),
                ("is_identity", SqlType::Bit, F),
                ("is_computed", SqlType::Bit, F),
                ("is_filestream", SqlType::Bit, F),
                ("is_replicated", SqlType::Bit, T),
                ("is_sparse", SqlType::Bit, T),
                ("is_column_set", SqlType::Bit, T),
                ("default_object_id", SqlType::Int, F),
                ("rule_object_id", SqlType::Int, F),
                ("generated_always_type", SqlType::TinyInt, T),
            ];
            match name {
                "computed_columns" => cols.extend([
                    ("definition", nvarchar(None), T),
                    ("uses_database_collation", SqlType::Bit, T),
                    ("is_persisted", SqlType::Bit, F),
                ]),
                "identity_columns" => cols.extend([
                    ("seed_value", value::decimal(38, 0), T),
                    ("increment_value", value::decimal(38, 0), T),
                    ("last_value", value::decimal(38, 0), T),
                    ("is_not_for_replication", SqlType::Bit, T),
                ]),
                _ => {}
            }
            let mut v = V::new(&cols);
            if matches!(name, "columns" | "all_columns") {
                for w in db.views.values() {
                    for c in view_columns(core, &db, w) {
                        let (sys_id, _) = value::system_type_id(&c.ty);
                        let (len, prec, scale) = value::storage_shape(&c.ty);
                        v.push(vec![
                            i(w.object_id),
                            s(&c.name),
                            i(c.column_id),
                            ti(sys_id),
                            i(user_type_id(&db, &c)),
                            si(len),
                            ti(prec),
                            ti(scale),
                            collation_of(&c.ty),
                            b(c.nullable),
                            b(value::is_string_type(&c.ty) || value::is_binary_type(&c.ty)),
                            b(false),
                            b(false),
                            b(false),
                            b(false),
                            b(false),
                            b(false),
                            b(false),
                            i(0),
                            i(0),
                            ti(0),
                        ]);
                    }
                }
            }
            for t in db.tables.values() {
                for c in &t.columns {
                    if name == "computed_columns" && c.computed.is_none()
                        || name == "identity_columns" && c.identity.is_none()
                    {
                        continue;
                    }
                    let (sys_id, _) = value::system_type_id(&c.ty);
                    let (len, prec, scale) = value::storage_shape(&c.ty);
                    let mut r = vec![
                        i(t.object_id),
                        s(&c.name),
                        i(c.column_id),
                        ti(sys_id),
                        i(user_type_id(&db, c)),
                        si(len),
                        ti(prec),
                        ti(scale),
                        collation_of(&c.ty),
                        b(c.nullable),
                        b(value::is_string_type(&c.ty) || value::is_binary_type(&c.ty)),
                        b(c.is_rowguidcol),
                        b(c.identity.is_some()),
                        b(c.computed.is_some()),
                        b(false),
                        b(false),
                        b(false),
                        b(false),
                        i(c.default.as_ref().map(|d| d.object_id).unwrap_or(0)),
                        i(0),
                        ti(0),
                    ];
                    match name {
                        "computed_columns" => {
                            let cd = c.computed.as_ref().expect("filtered");
                            r.extend([s(&cd.definition), b(true), b(cd.persisted)]);
                        }
                        "identity_columns" => {
                            let spec = c.identity.as_ref().expect("filtered");
                            let last = t
                                .runtime
                                .identity_last
                                .lock()
                                .map(dec)
                                .unwrap_or(Value::Null);
                            r.extend([dec(spec.seed), dec(spec.increment), last, b(false)]);
                        }
                        _ => {}
                    }
                    v.push(r);
                }
            }
            v.done()
        }
        "types" => {
            let mut v = V::new(&[
                ("name", sysname(), F),
                ("system_type_id", SqlType::TinyInt, F),
                ("user_type_id", SqlType::Int, F),
                ("schema_id", SqlType::Int, F),
                ("principal_id", SqlType::Int, T),
                ("max_length", SqlType::SmallInt, F),
                ("precision", SqlType::TinyInt, F),
                ("scale", SqlType::TinyInt, F),
                ("collation_name", sysname(), T),
                ("is_nullable", SqlType::Bit, T),
                ("is_user_defined", SqlType::Bit, F),
                ("is_assembly_type", SqlType::Bit, F),
                ("default_object_id", SqlType::Int, F),
                ("rule_object_id", SqlType::Int, F),
                ("is_table_type", SqlType::Bit, F),
            ]);
            for (n, uid, t) in builtin_types() {
                let (sys_id, _) = value::system_type_id(&t);
                let (len, prec, scale) = value::storage_shape(&t);
                let assembly = matches!(
                    t,
                    SqlType::HierarchyId | SqlType::Geometry | SqlType::Geography
                );
                v.push(vec![
                    s(n),
                    ti(sys_id),
                    i(uid),
                    i(4),
                    Value::Null,
                    si(len),
                    ti(prec),
                    ti(scale),
                    collation_of(&t),
                    b(true),
                    b(assembly),
                    b(assembly),
                    i(0),
                    i(0),
                    b(false),
                ]);
            }
            for a in db.alias_types.values() {
                let (sys_id, _) = value::system_type_id(&a.base);
                let (len, prec, scale) = value::storage_shape(&a.base);
                v.push(vec![
                    s(&a.name),
                    ti(sys_id),
                    i(a.user_type_id),
                    i(a.schema_id),
                    Value::Null,
                    si(len),
                    ti(prec),
                    ti(scale),
                    collation_of(&a.base),
                    b(a.nullable),
                    b(true),
                    b(false),
                    i(0),
                    i(0),
                    b(false),
                ]);
            }
            v.done()
        }
        "indexes" => {
            let mut v = V::new(&[
                ("object_id", SqlType::Int, F),
                ("name", sysname(), T),
                ("index_id", SqlType::Int, F),
                ("type", SqlType::TinyInt, F),
                ("type_desc", nvarchar(Some(60)), T),
                ("is_unique", SqlType::Bit, T),
                ("data_space_id", SqlType::Int, T),
                ("ignore_dup_key", SqlType::Bit, T),
                ("is_primary_key", SqlType::Bit, T),
                ("is_unique_constraint", SqlType::Bit, T),
                ("fill_factor", SqlType::TinyInt, F),
                ("is_padded", SqlType::Bit, T),
                ("is_disabled", SqlType::Bit, T),
                ("is_hypothetical", SqlType::Bit, T),
                ("allow_row_locks", SqlType::Bit, T),
                ("allow_page_locks", SqlType::Bit, T),
                ("has_filter", SqlType::Bit, T),
                ("filter_definition", nvarchar(None), T),
            ]);
            for t in db.tables.values() {
                if t.is_heap()
                    && !t
                        .indexes
                        .first()
                        .is_some_and(|x| x.kind == IndexKind::Clustered)
                {
                    v.push(vec![
                        i(t.object_id),
                        Value::Null,
                        i(0),
                        ti(0),
                        s("HEAP"),
                        b(false),
                        i(1),
                        b(false),
                        b(false),
                        b(false),
                        ti(0),
                        b(false),
                        b(false),
                        b(false),
                        b(true),
                        b(true),
                        b(false),
                        Value::Null,
                    ]);
                }
                for x in &t.indexes {
                    v.push(vec![
                        i(t.object_id),
                        s(&x.name),
                        i(x.index_id),
                        ti(x.kind.type_code()),
                        s(x.kind.type_desc()),
                        b(x.is_unique),
                        i(1),
                        b(false),
                        b(x.is_primary_key),
                        b(x.is_unique_constraint),
                        ti(0),
                        b(false),
                        b(false),
                        b(false),
                        b(true),
                        b(true),
                        b(x.filter.is_some()),
                        so(x.filter.as_deref()),
                    ]);
                }
            }
            v.done()
        }
        "index_columns" => {
            let mut v = V::new(&[
                ("object_id", SqlType::Int, F),
                ("index_id", SqlType::Int, F),
                ("index_column_id", SqlType::Int, F),
                ("column_id", SqlType::Int, F),
                ("key_ordinal", SqlType::TinyInt, F),
                ("partition_ordinal", SqlType::TinyInt, F),
                ("is_descending_key", SqlType::Bit, T),
                ("is_included_column", SqlType::Bit, T),
                ("column_store_order_ordinal", SqlType::TinyInt, F),
            ]);
            for t in db.tables.values() {
                for x in &t.indexes {
                    let mut key_ord = 0u8;
                    for (n, c) in x.columns.iter().enumerate() {
                        if !c.included {
                            key_ord += 1;
                        }
                        v.push(vec![
                            i(t.object_id),
                            i(x.index_id),
                            i(n as i32 + 1),
                            i(t.columns[c.column].column_id),
                            ti(if c.included { 0 } else { key_ord }),
                            ti(0),
                            b(c.descending),
                            b(c.included),
                            ti(0),
                        ]);
                    }
                }
            }
            v.done()
        }
        "key_constraints" => {
            let mut cols = object_cols();
            cols.extend([
                ("unique_index_id", SqlType::Int, T),
                ("is_system_named", SqlType::Bit, F),
                ("is_enforced", SqlType::Bit, T),
            ]);
            let mut v = V::new(&cols);
            for t in db.tables.values() {
                for x in t
                    .indexes
                    .iter()
                    .filter(|x| x.is_primary_key || x.is_unique_constraint)
                {
                    let (ty, desc) = if x.is_primary_key {
                        ("PK", "PRIMARY_KEY_CONSTRAINT")
                    } else {
                        ("UQ", "UNIQUE_CONSTRAINT")
                    };
                    let mut r = object_row(
                        &x.name,
                        x.constraint_object_id.unwrap_or(0),
                        t.schema_id,
                        t.object_id,
                        ty,
                        desc,
                        &t.created,
                        &t.modified,
                        t.is_ms_shipped,
                    );
                    r.extend([i(x.index_id), b(x.name.contains("__")), b(true)]);
                    v.push(r);
                }
            }
            v.done()
        }
        "foreign_keys" => {
            let mut cols = object_cols();
            cols.extend([
                ("referenced_object_id", SqlType::Int, T),
                ("key_index_id", SqlType::Int, T),
                ("is_disabled", SqlType::Bit, F),
                ("is_not_for_replication", SqlType::Bit, F),
                ("is_not_trusted", SqlType::Bit, F),
                ("delete_referential_action", SqlType::TinyInt, T),
                ("delete_referential_action_desc", nvarchar(Some(60)), T),
                ("update_referential_action", SqlType::TinyInt, T),
                ("update_referential_action_desc", nvarchar(Some(60)), T),
                ("is_system_named", SqlType::Bit, F),
            ]);
            let mut v = V::new(&cols);
            for t in db.tables.values() {
                for f in &t.foreign_keys {
                    let mut r = object_row(
                        &f.name,
                        f.object_id,
                        t.schema_id,
                        t.object_id,
                        "F",
                        "FOREIGN_KEY_CONSTRAINT",
                        &t.created,
                        &t.modified,
                        t.is_ms_shipped,
                    );
                    r.extend([
                        i(f.referenced_object_id),
                        i(f.key_index_id),
                        b(false),
                        b(false),
                        b(false),
                        ti(f.on_delete.code()),
                        s(f.on_delete.desc()),
                        ti(f.on_update.code()),
                        s(f.on_update.desc()),
                        b(f.name.starts_with("FK__")),
                    ]);
                    v.push(r);
                }
            }
            v.done()
        }
        "foreign_key_columns" => {
            let mut v = V::new(&[
                ("constraint_object_id", SqlType::Int, F),
                ("constraint_column_id", SqlType::Int, F),
                ("parent_object_id", SqlType::Int, F),
                ("parent_column_id", SqlType::Int, F),
                ("referenced_object_id", SqlType::Int, F),
                ("referenced_column_id", SqlType::Int, F),
            ]);
            for t in db.tables.values() {
                for f in &t.foreign_keys {
                    let parent = db.table_by_id(f.referenced_object_id);
                    for (n, (c, rc)) in f
                        .columns
                        .iter()
                        .zip(f.referenced_columns.iter())
                        .enumerate()
                    {
                        let rcid = parent
                            .and_then(|p| p.columns.get(*rc))
                            .map(|x| x.column_id)
                            .unwrap_or(0);
                        v.push(vec![
                            i(f.object_id),
                            i(n as i32 + 1),
                            i(t.object_id),
                            i(t.columns[*c].column_id),
                            i(f.referenced_object_id),
                            i(rcid),
                        ]);
                    }
                }
            }
            v.done()
        }
        "default_constraints" => {
            let mut cols = object_cols();
            cols.extend([
                ("parent_column_id", SqlType::Int, F),
                ("definition", nvarchar(None), T),
                ("is_system_named", SqlType::Bit, F),
            ]);
            let mut v = V::new(&cols);
            for t in db.tables.values() {
                for c in &t.columns {
                    if let Some(d) = &c.default {
                        let mut r = object_row(
                            &d.name,
                            d.object_id,
                            t.schema_id,
                            t.object_id,
                            "D",
                            "DEFAULT_CONSTRAINT",
                            &t.created,
                            &t.modified,
                            t.is_ms_shipped,
                        );
                        r.extend([
                            i(c.column_id),
                            s(&d.definition),
                            b(d.name.starts_with("DF__")),
                        ]);
                        v.push(r);
                    }
                }
            }
            v.done()
        }
        "check_constraints" => {
            let mut cols = object_cols();
            cols.extend([
                ("is_disabled", SqlType::Bit, F),
                ("is_not_for_replication", SqlType::Bit, F),
                ("is_not_trusted", SqlType::Bit, F),
                ("parent_column_id", SqlType::Int, F),
                ("definition", nvarchar(None), T),
                ("uses_database_collation", SqlType::Bit, T),
                ("is_system_named", SqlType::Bit, F),
            ]);
            let mut v = V::new(&cols);
            for t in db.tables.values() {
                for c in &t.checks {
                    let mut r = object_row(
                        &c.name,
                        c.object_id,
                        t.schema_id,
                        t.object_id,
                        "C",
                        "CHECK_CONSTRAINT",
                        &t.created,
                        &t.modified,
                        t.is_ms_shipped,
                    );
                    r.extend([
                        b(false),
                        b(false),
                        b(false),
                        i(c.column.map(|p| t.columns[p].column_id).unwrap_or(0)),
                        s(&c.definition),
                        b(true),
                        b(c.name.starts_with("CK__")),
                    ]);
                    v.push(r);
                }
            }
            v.done()
        }
        "sequences" => {
            let mut cols = object_cols();
            cols.extend([
                ("start_value", value::decimal(38, 0), F),
                ("increment", value::decimal(38, 0), F),
                ("minimum_value", value::decimal(38, 0), T),
                ("maximum_value", value::decimal(38, 0), T),
                ("is_cycling", SqlType::Bit, T),
                ("is_cached", SqlType::Bit, T),
                ("cache_size", SqlType::Int, T),
                ("system_type_id", SqlType::TinyInt, F),
                ("user_type_id", SqlType::Int, F),
                ("precision", SqlType::TinyInt, F),
                ("scale", SqlType::TinyInt, F),
                ("current_value", value::decimal(38, 0), F),
                ("is_exhausted", SqlType::Bit, F),
            ]);
            let mut v = V::new(&cols);
            for q in db.sequences.values() {
                let mut r = object_row(
                    &q.name,
                    q.object_id,
                    q.schema_id,
                    0,
                    "SO",
                    "SEQUENCE_OBJECT",
                    &q.created,
                    &q.created,
                    false,
                );
                let (sys_id, uid) = value::system_type_id(&q.ty);
                let (_, prec, scale) = value::storage_shape(&q.ty);
                let cur = q.current.lock().unwrap_or(q.start);
                r.extend([
                    dec(q.start),
                    dec(q.increment),
                    dec(q.minimum),
                    dec(q.maximum),
                    b(q.cycle),
                    b(q.cache_size != Some(0)),
                    q.cache_size.map(|c| i(c as i32)).unwrap_or(Value::Null),
                    ti(sys_id),
                    i(uid),
                    ti(prec),
                    ti(scale),
                    dec(cur),
                    b(false),
                ]);
                v.push(r);
            }
            v.done()
        }
        "partitions" => {
            let mut v = V::new(&[
                ("partition_id", SqlType::BigInt, F),
                ("object_id", SqlType::Int, F),
                ("index_id", SqlType::Int, F),
                ("partition_number", SqlType::Int, F),
                ("hobt_id", SqlType::BigInt, F),
                ("rows", SqlType::BigInt, T),
                ("filestream_filegroup_id", SqlType::SmallInt, F),
                ("data_compression", SqlType::TinyInt, F),
                ("data_compression_desc", nvarchar(Some(60)), T),
            ]);
            for t in db.tables.values() {
                let rows = row_count(core, t);
                let mut ids: Vec<(i32, &str)> = t
                    .indexes
                    .iter()
                    .map(|x| (x.index_id, x.data_compression))
                    .collect();
                if !ids.iter().any(|(id, _)| *id <= 1) {
                    ids.insert(0, (0, "NONE"));
                }
                for (id, comp) in ids {
                    let pid = ((t.object_id as i64) << 16) | id as i64;
                    v.push(vec![
                        Value::BigInt(pid),
                        i(t.object_id),
                        i(id),
                        i(1),
                        Value::BigInt(pid),
                        Value::BigInt(rows),
                        si(0),
                        ti(if comp == "NONE" { 0 } else { 1 }),
                        s(comp),
                    ]);
                }
            }
            v.done()
        }
        "servers" | "sysservers" => {
            let mut v = V::new(&[
                ("server_id", SqlType::Int, F),
                ("name", sysname(), F),
                ("product", sysname(), F),
                ("provider", sysname(), F),
                ("data_source", nvarchar(Some(4000)), T),
                ("is_linked", SqlType::Bit, F),
                ("srvid", SqlType::SmallInt, T),
                ("srvname", sysname(), F),
            ]);
            v.push(vec![
                i(0),
                s(&cfg.server_name),
                s("SQL Server"),
                s("SQLOLEDB"),
                s(&cfg.server_name),
                b(false),
                si(0),
                s(&cfg.server_name),
            ]);
            v.done()
        }
        "database_principals" => {
            let mut v = V::new(&[
                ("name", sysname(), F),
                ("principal_id", SqlType::Int, F),
                (
                    "type",
                    SqlType::Char {
                        len: 1,
                        collation: value::DEFAULT_COLLATION,
                    },
                    F,
                ),
                ("type_desc", nvarchar(Some(60)), T),
                ("default_schema_name", sysname(), T),
                ("sid", SqlType::VarBinary { len: Some(85) }, T),
                ("is_fixed_role", SqlType::Bit, F),
            ]);
            for (n, id, t, d, sch, sid, fixed) in [
                ("public", 0, "R", "DATABASE_ROLE", None, None, false),
                (
                    "dbo",
                    1,
                    "S",
                    "SQL_USER",
                    Some("dbo"),
                    Some(vec![1u8]),
                    false,
                ),
                (
                    "guest",
                    2,
                    "S",
                    "SQL_USER",
                    Some("guest"),
                    Some(vec![0u8]),
                    false,
                ),
                ("INFORMATION_SCHEMA", 3, "S", "SQL_USER", None, None, false),
                ("sys", 4, "S", "SQL_USER", None, None, false),
                ("db_owner", 16384, "R", "DATABASE_ROLE", None, None, true),
            ] {
                v.push(vec![
                    s(n),
                    i(id),
                    s(t),
                    s(d),
                    so(sch),
                    sid.map(|x| Value::Binary(Arc::from(x)))
                        .unwrap_or(Value::Null),
                    b(fixed),
                ]);
            }
            v.done()
        }
        "server_principals" | "sql_logins" => {
            let mut v = V::new(&[
                ("name", sysname(), F),
                ("principal_id", SqlType::Int, F),
                ("sid", SqlType::VarBinary { len: Some(85) }, T),
                (
                    "type",
                    SqlType::Char {
                        len: 1,
                        collation: value::DEFAULT_COLLATION,
                    },
                    F,
                ),
                ("type_desc", nvarchar(Some(60)), T),
                ("is_disabled", SqlType::Bit, T),
                ("default_database_name", sysname(), T),
            ]);
            v.push(vec![
                s("sa"),
                i(1),
                Value::Binary(Arc::from(vec![1u8])),
                s("S"),
                s("SQL_LOGIN"),
                b(false),
                s("master"),
            ]);
            v.push(vec![
                s("sysadmin"),
                i(3),
                Value::Binary(Arc::from(vec![3u8])),
                s("R"),
                s("SERVER_ROLE"),
                b(false),
                Value::Null,
            ]);
            for (k, (n, _, _)) in cfg.logins.iter().enumerate() {
                v.push(vec![
                    s(n),
                    i(256 + k as i32),
                    Value::Binary(Arc::from(vec![(k + 10) as u8])),
                    s("S"),
                    s("SQL_LOGIN"),
                    b(false),
                    s("master"),
                ]);
            }
            v.done()
        }
        "triggers" => {
            let mut v = V::new(&[
                ("name", sysname(), F),
                ("object_id", SqlType::Int, F),
                ("parent_class", SqlType::TinyInt, F),
                ("parent_class_desc", nvarchar(Some(60)), T),
                ("parent_id", SqlType::Int, F),
                (
                    "type",
                    SqlType::Char {
                        len: 2,
                        collation: value::DEFAULT_COLLATION,
                    },
                    F,
                ),
                ("type_desc", nvarchar(Some(60)), T),
                ("create_date", SqlType::DateTime, F),
                ("modify_date", SqlType::DateTime, F),
                ("is_ms_shipped", SqlType::Bit, F),
                ("is_disabled", SqlType::Bit, F),
                ("is_not_for_replication", SqlType::Bit, F),
                ("is_instead_of_trigger", SqlType::Bit, F),
            ]);
            for t in &db.ddl_triggers {
                v.push(vec![
                    s(&t.name),
                    i(t.object_id),
                    ti(0),
                    s("DATABASE"),
                    i(0),
                    s("TR"),
                    s("SQL_TRIGGER"),
                    dt(&t.created),
                    dt(&t.created),
                    b(false),
                    b(t.disabled),
                    b(false),
                    b(false),
                ]);
            }
            v.done()
        }
        "trigger_events" => {
            let mut v = V::new(&[
                ("object_id", SqlType::Int, F),
                ("type", SqlType::Int, F),
                ("type_desc", nvarchar(Some(60)), T),
            ]);
            for t in &db.ddl_triggers {
                for e in &t.events {
                    v.push(vec![i(t.object_id), i(0), s(e)]);
                }
            }
            v.done()
        }
        "sql_modules" => {
            let mut v = V::new(&[
                ("object_id", SqlType::Int, F),
                ("definition", nvarchar(None), T),
            ]);
            for t in &db.ddl_triggers {
                v.push(vec![i(t.object_id), s(&t.definition)]);
            }
            for p in db.procedures.values() {
                v.push(vec![i(p.object_id), s(&p.body)]);
            }
            for w in db.views.values() {
                v.push(vec![i(w.object_id), s(&w.definition)]);
            }
            v.done()
        }
        "configurations" => {
            let mut v = V::new(&[
                ("configuration_id", SqlType::Int, F),
                ("name", nvarchar(Some(35)), F),
                ("value", SqlType::SqlVariant, T),
                ("minimum", SqlType::SqlVariant, T),
                ("maximum", SqlType::SqlVariant, T),
                ("value_in_use", SqlType::SqlVariant, T),
                ("description", nvarchar(Some(255)), F),
                ("is_dynamic", SqlType::Bit, F),
                ("is_advanced", SqlType::Bit, F),
            ]);
            for (id, n, val, min, max, desc, adv) in [
                (
                    1536,
                    "max text repl size (B)",
                    65536,
                    -1,
                    2147483647,
                    "Maximum size of a text field in replication.",
                    false,
                ),
                (
                    1544,
                    "max server memory (MB)",
                    2147483647,
                    128,
                    2147483647,
                    "Maximum size of server memory (MB)",
                    true,
                ),
                (
                    518,
                    "show advanced options",
                    0,
                    0,
                    1,
                    "show advanced options",
                    false,
                ),
                (
                    1576,
                    "remote admin connections",
                    0,
                    0,
                    1,
                    "Dedicated Admin Connections are allowed from remote clients",
                    false,
                ),
            ] {
                v.push(vec![
                    i(id),
                    s(n),
                    i(val),
                    i(min),
                    i(max),
                    i(val),
                    s(desc),
                    b(true),
                    b(adv),
                ]);
            }
            v.done()
        }
        "dm_server_services" => {
            let mut v = V::new(&[
                ("servicename", nvarchar(Some(256)), F),
                ("startup_type", SqlType::Int, T),
                ("status", SqlType::Int, T),
                ("status_desc", nvarchar(Some(256)), T),
            ]);
            v.push(vec![
                s("SQL Server (MSSQLSERVER)"),
                i(2),
                i(4),
                s("Running"),
            ]);
            v.push(vec![
                s("SQL Server Agent (MSSQLSERVER)"),
                i(2),
                i(4),
                s("Running"),
            ]);
            v.done()
        }
        _ => None,
    })
}

fn information_schema(core: &SessionCore, db: &DatabaseDef, name: &str) -> Option<ViewData> {
    let _ = core;
    let n128 = nvarchar(Some(128));
    match name {
        "tables" => {
            let mut v = V::new(&[
                ("TABLE_CATALOG", n128.clone(), T),
                ("TABLE_SCHEMA", n128.clone(), T),
                ("TABLE_NAME", sysname(), F),
                ("TABLE_TYPE", varchar(Some(10)), T),
            ]);
            for t in db.tables.values() {
                v.push(vec![s(&db.name), s(&t.schema), s(&t.name), s("BASE TABLE")]);
            }
            for w in db.views.values() {
                v.push(vec![s(&db.name), s(&w.schema), s(&w.name), s("VIEW")]);
            }
            v.done()
        }
        "views" => {
            let mut v = V::new(&[
                ("TABLE_CATALOG", n128.clone(), T),
                ("TABLE_SCHEMA", n128.clone(), T),
                ("TABLE_NAME", sysname(), F),
                ("VIEW_DEFINITION", nvarchar(Some(4000)), T),
                ("CHECK_OPTION", varchar(Some(7)), T),
                ("IS_UPDATABLE", varchar(Some(2)), T),
            ]);
            for w in db.views.values() {
                let check = if w.check_option { "CASCADE" } else { "NONE" };
                let text: String = w.definition.chars().take(4000).collect();
                v.push(vec![
                    s(&db.name),
                    s(&w.schema),
                    s(&w.name),
                    s(&text),
                    s(check),
                    s("NO"),
                ]);
            }
            v.done()
        }
        "columns" => {
            let mut v = V::new(&[
                ("TABLE_CATALOG", n128.clone(), T),
                ("TABLE_SCHEMA", n128.clone(), T),
                ("TABLE_NAME", sysname(), F),
                ("COLUMN_NAME", sysname(), T),
                ("ORDINAL_POSITION", SqlType::Int, T),
                ("COLUMN_DEFAULT", nvarchar(Some(4000)), T),
                ("IS_NULLABLE", varchar(Some(3)), T),
                ("DATA_TYPE", n128.clone(), T),
                ("CHARACTER_MAXIMUM_LENGTH", SqlType::Int, T),
                ("CHARACTER_OCTET_LENGTH", SqlType::Int, T),
                ("NUMERIC_PRECISION", SqlType::TinyInt, T),
                ("NUMERIC_PRECISION_RADIX", SqlType::SmallInt, T),
                ("NUMERIC_SCALE", SqlType::Int, T),
                ("DATETIME_PRECISION", SqlType::SmallInt, T),
                ("CHARACTER_SET_NAME", n128.clone(), T),
                ("COLLATION_NAME", n128.clone(), T),
                ("DOMAIN_SCHEMA", n128.clone(), T),
                ("DOMAIN_NAME", n128.clone(), T),
            ]);
            let views: Vec<(&str, &str, Vec<super::catalog::ColumnDef>)> = db
                .views
                .values()
                .map(|w| {
                    (
                        w.schema.as_str(),
                        w.name.as_str(),
                        view_columns(core, db, w),
                    )
                })
                .collect();
            let relations = db
                .tables
                .values()
                .map(|t| (t.schema.as_str(), t.name.as_str(), t.columns.as_slice()))
                .chain(views.iter().map(|(sc, n, cs)| (*sc, *n, cs.as_slice())));
            for (table_schema, table_name, columns) in relations {
                for (pos, c) in columns.iter().enumerate() {
                    let (len, prec, scale) = value::storage_shape(&c.ty);
                    let is_char = value::is_string_type(&c.ty);
                    let is_bin = value::is_binary_type(&c.ty);
                    let char_len = match &c.ty {
                        SqlType::Text { .. } | SqlType::Image => Value::Int(2147483647),
                        SqlType::NText { .. } => Value::Int(1073741823),
                        SqlType::Xml => Value::Int(-1),
                        t if is_char || is_bin => {
                            let l = if len < 0 {
                                -1
                            } else if value::is_unicode_type(t) {
                                len as i32 / 2
                            } else {
                                len as i32
                            };
                            Value::Int(l)
                        }
                        _ => Value::Null,
                    };
                    let octet = match (&char_len, &c.ty) {
                        (Value::Int(-1), _) => Value::Int(-1),
                        (Value::Int(n), t)
                            if value::is_unicode_type(t) && !matches!(t, SqlType::NText { .. }) =>
                        {
                            Value::Int(n * 2)
                        }
                        (v, _) => v.clone(),
                    };
                    let numeric = value::is_numeric_type(&c.ty) && !matches!(c.ty, SqlType::Bit);
                    let dtp = match &c.ty {
                        SqlType::DateTime => Value::SmallInt(3),
                        SqlType::SmallDateTime | SqlType::Date => Value::SmallInt(0),
                        SqlType::Time { scale }
                        | SqlType::DateTime2 { scale }
                        | SqlType::DateTimeOffset { scale } => Value::SmallInt(*scale as i16),
                        _ => Value::Null,
                    };
                    let (dom_schema, dom_name) = match &c.user_type {
                        Some((sch, n)) => (s(sch), s(n)),
                        None => (Value::Null, Value::Null),
                    };
                    v.push(vec![
                        s(&db.name),
                        s(table_schema),
                        s(table_name),
                        s(&c.name),
                        i(pos as i32 + 1),
                        so(c.default.as_ref().map(|d| d.definition.as_str())),
                        s(if c.nullable { "YES" } else { "NO" }),
                        s(value::base_type_name(&c.ty)),
                        char_len,
                        octet,
                        if numeric { ti(prec) } else { Value::Null },
                        if numeric {
                            si(if matches!(c.ty, SqlType::Real | SqlType::Float) {
                                2
                            } else {
                                10
                            })
                        } else {
                            Value::Null
                        },
                        if numeric && !matches!(c.ty, SqlType::Real | SqlType::Float) {
                            i(scale as i32)
                        } else {
                            Value::Null
                        },
                        dtp,
                        if is_char && !matches!(c.ty, SqlType::Xml) {
                            s(if value::is_unicode_type(&c.ty) {
                                "UNICODE"
                            } else {
                                "iso_1"
                            })
                        } else {
                            Value::Null
                        },
                        collation_of(&c.ty),
                        dom_schema,
                        dom_name,
                    ]);
                }
            }
            v.done()
        }
        "table_constraints" => {
            let mut v = V::new(&[
                ("CONSTRAINT_CATALOG", n128.clone(), T),
                ("CONSTRAINT_SCHEMA", n128.clone(), T),
                ("CONSTRAINT_NAME", sysname(), F),
                ("TABLE_CATALOG", n128.clone(), T),
                ("TABLE_SCHEMA", n128.clone(), T),
                ("TABLE_NAME", sysname(), F),
                ("CONSTRAINT_TYPE", varchar(Some(11)), T),
                ("IS_DEFERRABLE", varchar(Some(2)), F),
                ("INITIALLY_DEFERRED", varchar(Some(2)), F),
            ]);
            for t in db.tables.values() {
                let mut push = |n: &str, ty: &str| {
                    v.push(vec![
                        s(&db.name),
                        s(&t.schema),
                        s(n),
                        s(&db.name),
                        s(&t.schema),
                        s(&t.name),
                        s(ty),
                        s("NO"),
                        s("NO"),
                    ])
                };
                for x in t
                    .indexes
                    .iter()
                    .filter(|x| x.is_primary_key || x.is_unique_constraint)
                {
                    push(
                        &x.name,
                        if x.is_primary_key {
                            "PRIMARY KEY"
                        } else {
                            "UNIQUE"
                        },
                    );
                }
                for f in &t.foreign_keys {
                    push(&f.name, "FOREIGN KEY");
                }
                for c in &t.checks {
                    push(&c.name, "CHECK");
                }
            }
            v.done()
        }
        "key_column_usage" => {
            let mut v = V::new(&[
                ("CONSTRAINT_CATALOG", n128.clone(), T),
                ("CONSTRAINT_SCHEMA", n128.clone(), T),
                ("CONSTRAINT_NAME", sysname(), F),
                ("TABLE_CATALOG", n128.clone(), T),
                ("TABLE_SCHEMA", n128.clone(), T),
                ("TABLE_NAME", sysname(), F),
                ("COLUMN_NAME", sysname(), T),
                ("ORDINAL_POSITION", SqlType::Int, F),
            ]);
            for t in db.tables.values() {
                for x in t
                    .indexes
                    .iter()
                    .filter(|x| x.is_primary_key || x.is_unique_constraint)
                {
                    for (k, c) in x.key_columns().enumerate() {
                        v.push(vec![
                            s(&db.name),
                            s(&t.schema),
                            s(&x.name),
                            s(&db.name),
                            s(&t.schema),
                            s(&t.name),
                            s(&t.columns[c].name),
                            i(k as i32 + 1),
                        ]);
                    }
                }
                for f in &t.foreign_keys {
                    for (k, c) in f.columns.iter().enumerate() {
                        v.push(vec![
                            s(&db.name),
                            s(&t.schema),
                            s(&f.name),
                            s(&db.name),
                            s(&t.schema),
                            s(&t.name),
                            s(&t.columns[*c].name),
                            i(k as i32 + 1),
                        ]);
                    }
                }
            }
            v.done()
        }
        _ => None,
    }
}
