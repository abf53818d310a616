//! The `cdc` system tables: their DDL (documented column order), row builders and the direct
//! write path into the committed store.

use std::sync::Arc;

use chrono::NaiveDateTime;

use super::instance::CaptureInstance;
use super::{InstanceEntry, LsnTimeRow};
use crate::engine::hooks::Row;
use crate::engine::lsn::Lsn;
use crate::engine::store::{Key, StoredRow, TableData};
use crate::engine::value::{datetime_from_parts, parts_from_naive};
use crate::engine::Engine;
use crate::types::{SqlType, Value};

/// Metadata tables created by `sys.sp_cdc_enable_db`, in the documented column order.
pub const ENABLE_DB_DDL: &[&str] = &[
    "CREATE TABLE cdc.change_tables (object_id int NOT NULL, version int NULL, source_object_id int NULL, \
     capture_instance sysname NOT NULL, start_lsn binary(10) NULL, end_lsn binary(10) NULL, supports_net_changes bit NULL, \
     has_drop_pending bit NULL, role_name sysname NULL, index_name sysname NULL, filegroup_name sysname NULL, \
     create_date datetime NULL, partition_switch bit NOT NULL, \
     CONSTRAINT change_tables_clustered_idx PRIMARY KEY CLUSTERED (object_id))",
    "CREATE TABLE cdc.captured_columns (object_id int NOT NULL, column_name sysname NOT NULL, column_id int NULL, \
     column_type sysname NOT NULL, column_ordinal int NOT NULL, is_computed bit NULL, \
     CONSTRAINT captured_columns_clustered_idx PRIMARY KEY CLUSTERED (object_id, column_ordinal))",
    "CREATE TABLE cdc.index_columns (object_id int NOT NULL, column_name sysname NOT NULL, index_ordinal tinyint NOT NULL, \
     column_id int NOT NULL, CONSTRAINT index_columns_clustered_idx PRIMARY KEY CLUSTERED (object_id, index_ordinal))",
    "CREATE TABLE cdc.ddl_history (source_object_id int NULL, object_id int NOT NULL, required_column_update bit NULL, \
     ddl_command nvarchar(max) NULL, ddl_lsn binary(10) NOT NULL, ddl_time datetime NULL, \
     CONSTRAINT ddl_history_clustered_idx PRIMARY KEY CLUSTERED (object_id, ddl_lsn))",
    "CREATE TABLE cdc.lsn_time_mapping (start_lsn binary(10) NOT NULL, tran_begin_time datetime NULL, \
     tran_end_time datetime NULL, tran_id varbinary(10) NULL, \
     CONSTRAINT lsn_time_mapping_clustered_idx PRIMARY KEY CLUSTERED (start_lsn))",
];

/// Tables dropped by `sys.sp_cdc_disable_db` (after the change tables).
pub const METADATA_TABLES: &[&str] = &[
    "change_tables",
    "captured_columns",
    "index_columns",
    "ddl_history",
    "lsn_time_mapping",
];

/// `msdb.dbo.cdc_jobs`, created on first use.
pub const CDC_JOBS_DDL: &str = "CREATE TABLE dbo.cdc_jobs (database_id int NOT NULL, job_type nvarchar(20) NOT NULL, \
     job_id uniqueidentifier NULL, maxtrans int NULL, maxscans int NULL, continuous bit NULL, pollinginterval bigint NULL, \
     retention bigint NULL, threshold bigint NULL, CONSTRAINT cdc_jobs_clustered_idx PRIMARY KEY CLUSTERED (database_id, job_type))";

/// `[name]` with `]` doubled.
pub fn bracket(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// DDL of `cdc.<instance>_CT`: metadata columns, captured columns, `__$command_id` last;
/// clustered on (start_lsn, command_id, seqval, operation).
pub fn change_table_ddl(instance: &CaptureInstance) -> String {
    let mut cols = vec![
        "[__$start_lsn] binary(10) NOT NULL".to_string(),
        "[__$end_lsn] binary(10) NULL".to_string(),
        "[__$seqval] binary(10) NOT NULL".to_string(),
        "[__$operation] int NOT NULL".to_string(),
        "[__$update_mask] varbinary(128) NULL".to_string(),
    ];
    for c in &instance.columns {
        cols.push(format!(
            "{} {} NULL",
            bracket(&c.name),
            crate::engine::value::type_name(&c.ct_type())
        ));
    }
    cols.push("[__$command_id] int NOT NULL".to_string());
    format!(
        "CREATE TABLE cdc.{} ({}, CONSTRAINT {} PRIMARY KEY CLUSTERED ([__$start_lsn], [__$command_id], [__$seqval], [__$operation]))",
        bracket(&instance.ct_table_name()),
        cols.join(", "),
        bracket(&format!("{}_CT_clustered_idx", instance.name))
    )
}

pub fn binary(bytes: &[u8]) -> Value {
    Value::Binary(Arc::from(bytes))
}

pub fn lsn_value(lsn: Lsn) -> Value {
    binary(&lsn.to_bytes())
}

pub fn opt_lsn_value(lsn: Option<Lsn>) -> Value {
    lsn.map_or(Value::Null, lsn_value)
}

/// A `datetime` value (1/300 s) of a local time.
pub fn datetime_value(t: NaiveDateTime) -> Value {
    let (days, ticks) = parts_from_naive(&t);
    datetime_from_parts(days, ticks, 0, &SqlType::DateTime).unwrap_or(Value::Null)
}

pub fn string(s: &str) -> Value {
    Value::String(Arc::from(s))
}

pub fn opt_string(s: Option<&str>) -> Value {
    s.map_or(Value::Null, string)
}

pub fn change_tables_row(entry: &InstanceEntry) -> Vec<Value> {
    let d = &entry.def;
    vec![
        Value::Int(d.object_id),
        Value::Int(0),
        Value::Int(d.source_object_id),
        string(&d.name),
        lsn_value(entry.start_lsn),
        Value::Null,
        Value::Bit(d.supports_net_changes),
        Value::Bit(false),
        opt_string(d.role_name.as_deref()),
        opt_string(d.index_name.as_deref()),
        opt_string(d.filegroup_name.as_deref()),
        datetime_value(d.create_date),
        Value::Bit(true),
    ]
}

pub fn captured_column_rows(d: &CaptureInstance) -> Vec<Vec<Value>> {
    d.columns
        .iter()
        .map(|c| {
            vec![
                Value::Int(d.object_id),
                string(&c.name),
                Value::Int(c.column_id),
                string(crate::engine::value::base_type_name(&c.ty)),
                Value::Int(c.ordinal as i32),
                Value::Bit(c.is_computed),
            ]
        })
        .collect()
}

pub fn index_column_rows(d: &CaptureInstance) -> Vec<Vec<Value>> {
    d.index_columns
        .iter()
        .enumerate()
        .map(|(i, (name, id))| {
            vec![
                Value::Int(d.object_id),
                string(name),
                Value::TinyInt(i as u8 + 1),
                Value::Int(*id),
            ]
        })
        .collect()
}

pub fn mapping_row(m: &LsnTimeRow) -> Vec<Value> {
    vec![
        lsn_value(m.start_lsn),
        datetime_value(m.tran_begin_time),
        datetime_value(m.tran_end_time),
        binary(&m.tran_id),
    ]
}

/// Where a table's rows live in the committed store and how its storage key is formed.
#[derive(Debug, Clone)]
pub struct TableHandle {
    pub object_id: i32,
    pub storage_key: Arc<[usize]>,
}

impl TableHandle {
    pub fn lookup(
        engine: &Engine,
        database: &str,
        schema: &str,
        name: &str,
    ) -> Option<TableHandle> {
        let def = engine.table(database, schema, name)?;
        Some(TableHandle {
            object_id: def.object_id,
            storage_key: Arc::from(def.storage_key.as_slice()),
        })
    }

    pub fn key(&self, row: &[Value]) -> Key {
        Key::from_row(row, &self.storage_key)
    }
}

/// Decides per stored row (see [`DirectWrite::DeleteWhere`]).
pub type RowPredicate = Box<dyn Fn(&[Value]) -> bool>;

/// A write applied straight to the committed store (system tables only: no locks, no
/// change recording, no constraint checks beyond the storage key).
pub enum DirectWrite {
    Put {
        table: i32,
        key: Key,
        row: Row,
    },
    Delete {
        table: i32,
        key: Key,
    },
    /// Removes every row whose key sorts before `key` (a prefix of the storage key).
    DeleteBefore {
        table: i32,
        key: Key,
    },
    /// Keeps only the rows for which `keep` returns true.
    DeleteWhere {
        table: i32,
        keep: RowPredicate,
    },
}

/// Installs `writes` as one new committed version. The caller must hold the engine's commit
/// lock (the commit observer runs under it; everyone else takes it first).
pub fn install(engine: &Engine, writes: Vec<DirectWrite>) {
    if writes.is_empty() {
        return;
    }
    engine.inner.store.install(|snap, seq| {
        for w in writes {
            let table = match &w {
                DirectWrite::Put { table, .. }
                | DirectWrite::Delete { table, .. }
                | DirectWrite::DeleteBefore { table, .. }
                | DirectWrite::DeleteWhere { table, .. } => *table,
            };
            if snap.tables.get(&table).is_none() {
                snap.tables.insert(table, TableData::default());
            }
            let data = snap.tables.get_mut(&table).expect("inserted above");
            match w {
                DirectWrite::Put { key, row, .. } => {
                    data.rows.insert(key, StoredRow { row, seq });
                }
                DirectWrite::Delete { key, .. } => {
                    data.rows.remove(&key);
                }
                DirectWrite::DeleteBefore { key, .. } => {
                    let (_, rest) = data.rows.split(&key);
                    data.rows = rest;
                }
                DirectWrite::DeleteWhere { keep, .. } => {
                    let doomed: Vec<Key> = data
                        .rows
                        .iter()
                        .filter(|(_, r)| !keep(&r.row))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        data.rows.remove(&k);
                    }
                }
            }
        }
    });
}

/// Takes the commit lock and installs `writes`.
pub fn install_locked(engine: &Engine, writes: Vec<DirectWrite>) {
    let _commit = engine.inner.store.commit_lock.lock();
    install(engine, writes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted() {
        assert_eq!(bracket("a]b"), "[a]]b]");
    }
}
