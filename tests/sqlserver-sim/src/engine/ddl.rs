//! DDL: databases, schemas, tables, indexes, constraints, sequences, alias types, triggers,
//! procedures, sp_rename, BACKUP. DDL is applied at once (not transactional; see ENGINE.md)
//! and reported to the DDL observers.

use std::sync::Arc;

use super::catalog::*;
use super::hooks::{DdlEvent, DdlEventType, ProcArgs};
use super::parse::{self, AlterAction, ColumnSpec, ConstraintKind, ConstraintSpec, Parsed, Stmt};
use super::session::SessionCore;
use super::store::TableData;
use super::value::{self, err};
use super::ProcContext;
use crate::api::{ResultSink, SqlError};
use crate::types::{SqlType, Value};

fn expr_text(e: &sqlparser::ast::Expr) -> String {
    format!("({e})")
}

impl SessionCore {
    fn db_for(&self, parts: &[String]) -> (String, String, String) {
        let (db, schema, name) = parse::split_name(parts);
        (
            db.unwrap_or_else(|| self.database.clone()),
            schema.unwrap_or_else(|| "dbo".into()),
            name,
        )
    }

    /// Runs `f` on the mutable database definition.
    fn with_db<R>(
        &self,
        db: &str,
        f: impl FnOnce(&mut DatabaseDef) -> Result<R, SqlError>,
    ) -> Result<R, SqlError> {
        let mut cat = self.engine.inner.catalog.write();
        let d = cat.get_mut(&db.to_lowercase()).ok_or_else(|| {
            err(
                911,
                format!(
                    "Database '{db}' does not exist. Make sure that the name is entered correctly."
                ),
            )
        })?;
        f(d)
    }

    fn fire_ddl(
        &mut self,
        event_type: DdlEventType,
        db: &str,
        before: Option<Arc<TableDef>>,
        after: Option<Arc<TableDef>>,
        renamed_column: Option<(String, String)>,
    ) -> Result<(), SqlError> {
        let observers = self.engine.inner.ddl_observers.read().clone();
        let t = after.clone().or_else(|| before.clone()).expect("a table");
        let lsn = self.engine.allocate_lsn(db).unwrap_or_default();
        let event = DdlEvent {
            event_type,
            database_id: t.database_id,
            database: self
                .engine
                .database(db)
                .map(|d| d.name)
                .unwrap_or_else(|| db.to_string()),
            schema: t.schema.clone(),
            object_name: t.name.clone(),
            object_id: t.object_id,
            command_text: self.stmt_text.clone(),
            lsn,
            time: self.engine.clock().now_local(),
            login: self.login.clone(),
            before,
            after,
            renamed_column,
        };
        for o in observers {
            let mut ctx = ProcContext { session: self };
            o.ddl(&mut ctx, &event)?;
        }
        Ok(())
    }

    fn check_no_other_writers(&self, def: &TableDef) -> Result<(), SqlError> {
        let me = self.txn.as_ref().map(|t| t.id).unwrap_or(0);
        if self
            .engine
            .inner
            .store
            .locks
            .table_locked_by_other(def.object_id, me)
        {
            return Err(err(1222, "Lock request time out period exceeded."));
        }
        Ok(())
    }

    pub(crate) fn exec_ddl(
        &mut self,
        p: &Parsed,
        _sink: &mut dyn ResultSink,
    ) -> Result<(), SqlError> {
        match &p.stmt {
            Stmt::CreateDatabase(name) => {
                self.engine.create_database_internal(name)?;
                Ok(())
            }
            Stmt::DropDatabase { names, if_exists } => {
                for n in names {
                    let Some(d) = self.engine.database(n) else {
                        if *if_exists {
                            continue;
                        }
                        return Err(err(3701, format!("Cannot drop the database '{n}', because it does not exist or you do not have permission.")));
                    };
                    if matches!(
                        d.name.to_lowercase().as_str(),
                        "master" | "msdb" | "model" | "tempdb"
                    ) {
                        return Err(err(
                            3708,
                            format!(
                                "Cannot drop the database '{}' because it is a system database.",
                                d.name
                            ),
                        ));
                    }
                    if self.database.eq_ignore_ascii_case(n) {
                        return Err(err(
                            3702,
                            format!(
                                "Cannot drop database \"{}\" because it is currently in use.",
                                d.name
                            ),
                        ));
                    }
                    let ids: Vec<i32> = d.tables.values().map(|t| t.object_id).collect();
                    let _g = self.engine.inner.store.commit_lock.lock();
                    self.engine.inner.store.install(|snap, _| {
                        for id in ids {
                            snap.tables.remove(&id);
                        }
                    });
                    self.engine.inner.catalog.write().remove(&n.to_lowercase());
                }
                Ok(())
            }
            Stmt::AlterDatabase {
                name,
                option,
                value: v,
            } => {
                let db = if name.is_empty() {
                    self.database.clone()
                } else {
                    name.clone()
                };
                let on = v == "ON";
                self.with_db(&db, |d| {
                    match option.as_str() {
                        "RECOVERY" => {
                            d.recovery = match v.as_str() {
                                "FULL" => RecoveryModel::Full,
                                "SIMPLE" => RecoveryModel::Simple,
                                "BULK_LOGGED" => RecoveryModel::BulkLogged,
                                _ => return Err(err(102, format!("Incorrect syntax near '{v}'."))),
                            }
                        }
                        "READ_COMMITTED_SNAPSHOT" => d.read_committed_snapshot = on,
                        "ALLOW_SNAPSHOT_ISOLATION" => d.allow_snapshot_isolation = on,
                        "AUTO_CLOSE"
                        | "AUTO_SHRINK"
                        | "AUTO_UPDATE_STATISTICS"
                        | "AUTO_CREATE_STATISTICS"
                        | "PAGE_VERIFY"
                        | "MULTI_USER"
                        | "SINGLE_USER"
                        | "COMPATIBILITY_LEVEL"
                        | "TRUSTWORTHY"
                        | "ANSI_NULLS"
                        | "QUOTED_IDENTIFIER" => {}
                        other => {
                            return Err(value::unsupported(format!("ALTER DATABASE SET {other}")))
                        }
                    }
                    Ok(())
                })
            }
            Stmt::CreateSchema { name } => {
                let db = self.database.clone();
                let id = self.engine.new_object_id();
                self.with_db(&db, |d| {
                    if d.schema(name).is_some() {
                        return Err(err(
                            2714,
                            format!("There is already an object named '{name}' in the database."),
                        ));
                    }
                    d.schemas.insert(
                        name.to_lowercase(),
                        SchemaDef {
                            schema_id: id,
                            name: name.clone(),
                            principal_id: 1,
                        },
                    );
                    Ok(())
                })
            }
            Stmt::CreateTable {
                name,
                columns,
                constraints,
            } => self.create_table(name, columns, constraints),
            Stmt::AlterTable { table, action } => self.alter_table(table, action),
            Stmt::CreateIndex(spec) => self.create_index(spec),
            Stmt::DropIndex {
                index,
                table,
                if_exists,
            } => {
                let (db, def) = match self.resolve_table(table) {
                    Ok(r) => r,
                    Err(e) => return if *if_exists { Ok(()) } else { Err(e) },
                };
                let Some(pos) = def
                    .indexes
                    .iter()
                    .position(|i| i.name.eq_ignore_ascii_case(index))
                else {
                    if *if_exists {
                        return Ok(());
                    }
                    return Err(err(3701, format!("Cannot drop the index '{}.{}', because it does not exist or you do not have permission.", table.join("."), index)));
                };
                let idx = &def.indexes[pos];
                if idx.is_primary_key || idx.is_unique_constraint {
                    return Err(err(3723, format!("An explicit DROP INDEX is not allowed on index '{}.{}'. It is being used for {} constraint enforcement.", table.join("."), index, if idx.is_primary_key { "PRIMARY KEY" } else { "UNIQUE KEY" })));
                }
                if idx.kind == IndexKind::Clustered {
                    return Err(value::unsupported("dropping a clustered index"));
                }
                let mut nd = (*def).clone();
                let removed = nd.indexes.remove(pos);
                nd.modified = self.engine.clock().now_local();
                let nd = Arc::new(nd);
                self.replace_table(&db, &def, nd.clone(), |d| {
                    d.uniques.remove(&removed.index_id);
                });
                self.fire_ddl(DdlEventType::DropIndex, &db, Some(def), Some(nd), None)
            }
            Stmt::Drop {
                kind,
                names,
                if_exists,
            } => self.drop_objects(kind, names, *if_exists),
            Stmt::Truncate(name) => {
                let (db, def) = self.resolve_table(name)?;
                self.truncate(&def)?;
                self.fire_ddl(
                    DdlEventType::TruncateTable,
                    &db,
                    Some(def.clone()),
                    Some(def),
                    None,
                )
            }
            Stmt::CreateSequence {
                name,
                type_text,
                start,
                increment,
                min,
                max,
                cycle,
                cache,
            } => {
                let (db, schema, n) = self.db_for(name);
                let ty = match type_text {
                    Some(t) => self.resolve_type(t)?,
                    None => SqlType::BigInt,
                };
                let (tmin, tmax): (i128, i128) = match ty {
                    SqlType::TinyInt => (0, 255),
                    SqlType::SmallInt => (i16::MIN as i128, i16::MAX as i128),
                    SqlType::Int => (i32::MIN as i128, i32::MAX as i128),
                    SqlType::BigInt => (i64::MIN as i128, i64::MAX as i128),
                    SqlType::Decimal { precision, .. } => (-(10i128.pow(precision as u32) - 1), 10i128.pow(precision as u32) - 1),
                    _ => return Err(err(11702, "The sequence object data type must be an integer type or decimal/numeric with scale 0.")),
                };
                let increment = increment.unwrap_or(1);
                let minimum = min.unwrap_or(tmin);
                let maximum = max.unwrap_or(tmax);
                let start = start.unwrap_or(if increment > 0 { minimum } else { maximum });
                let id = self.engine.new_object_id();
                let now = self.engine.clock().now_local();
                self.with_db(&db, |d| {
                    let sid = d.schema(&schema).ok_or_else(|| err(2760, format!("The specified schema name \"{schema}\" either does not exist or you do not have permission to use it.")))?.schema_id;
                    let key = object_key(&schema, &n);
                    if d.sequences.contains_key(&key) || d.tables.contains_key(&key) {
                        return Err(err(2714, format!("There is already an object named '{n}' in the database.")));
                    }
                    d.sequences.insert(
                        key,
                        Arc::new(SequenceDef { object_id: id, schema_id: sid, name: n.clone(), ty, start, increment, minimum, maximum, cycle: *cycle, cache_size: *cache, current: Default::default(), created: now }),
                    );
                    Ok(())
                })
            }
            Stmt::CreateType {
                name,
                base,
                nullable,
            } => {
                let (db, schema, n) = self.db_for(name);
                let base = value::parse_type_name(base, 1)?;
                let id = 257 + self.engine.new_object_id() % 100_000;
                self.with_db(&db, |d| {
                    let sid = d.schema(&schema).ok_or_else(|| err(2760, format!("The specified schema name \"{schema}\" either does not exist or you do not have permission to use it.")))?.schema_id;
                    let key = object_key(&schema, &n);
                    if d.alias_types.contains_key(&key) {
                        return Err(err(219, format!("The type '{n}' already exists, or you do not have permission to create it.")));
                    }
                    d.alias_types.insert(key, Arc::new(AliasTypeDef { user_type_id: id, schema_id: sid, name: n.clone(), base, nullable: *nullable }));
                    Ok(())
                })
            }
            Stmt::CreateTrigger { name, events, body } => {
                let n = name.last().cloned().unwrap_or_default();
                let id = self.engine.new_object_id();
                let now = self.engine.clock().now_local();
                let db = self.database.clone();
                let definition = self.stmt_text.clone();
                self.with_db(&db, |d| {
                    if d.ddl_triggers
                        .iter()
                        .any(|t| t.name.eq_ignore_ascii_case(&n))
                    {
                        return Err(err(
                            2714,
                            format!("There is already an object named '{n}' in the database."),
                        ));
                    }
                    d.ddl_triggers.push(Arc::new(DdlTriggerDef {
                        object_id: id,
                        name: n.clone(),
                        events: events.clone(),
                        body: body.clone(),
                        definition,
                        disabled: false,
                        created: now,
                    }));
                    Ok(())
                })
            }
            Stmt::CreateProcedure { name, params, body } => {
                let (db, schema, n) = self.db_for(name);
                let mut ps = Vec::new();
                for (pn, ty, default, out) in params {
                    ps.push((
                        pn.clone(),
                        self.resolve_type(ty)?,
                        default.as_ref().map(|e| e.to_string()),
                        *out,
                    ));
                }
                let id = self.engine.new_object_id();
                let now = self.engine.clock().now_local();
                self.with_db(&db, |d| {
                    let sid = d.schema(&schema).map(|s| s.schema_id).unwrap_or(1);
                    let key = object_key(&schema, &n);
                    if d.procedures.contains_key(&key) {
                        return Err(err(
                            2714,
                            format!("There is already an object named '{n}' in the database."),
                        ));
                    }
                    d.procedures.insert(
                        key,
                        Arc::new(ProcedureDef {
                            object_id: id,
                            schema_id: sid,
                            name: n.clone(),
                            params: ps,
                            body: body.clone(),
                            created: now,
                        }),
                    );
                    Ok(())
                })
            }
            Stmt::CreateView {
                name,
                columns,
                query,
                definition,
                check_option,
                mode,
            } => self.create_view(name, columns, query, definition, *check_option, *mode),
            Stmt::Backup { database, log } => self.backup(database, *log),
            other => Err(value::unsupported(format!(
                "{:?}",
                std::mem::discriminant(other)
            ))),
        }
    }

    fn backup(&mut self, database: &str, log: bool) -> Result<(), SqlError> {
        let d = self.engine.database(database).ok_or_else(|| err(911, format!("Database '{database}' does not exist. Make sure that the name is entered correctly.")))?;
        if log && d.recovery == RecoveryModel::Simple {
            return Err(err(4208, "The statement BACKUP LOG is not allowed while the recovery model is SIMPLE. Use BACKUP DATABASE or change the recovery model using ALTER DATABASE."));
        }
        let now = self.engine.clock().now_local();
        let lsn = self.engine.current_lsn(database).unwrap_or_default();
        let lsn_num = Value::Decimal(lsn.0 as i128, 0);
        let sql = "INSERT INTO msdb.dbo.backupset (database_name, type, backup_start_date, backup_finish_date, first_lsn, last_lsn, database_backup_lsn, recovery_model, name, server_name, user_name) \
                   VALUES (@db, @type, @now, @now, @lsn, @lsn, @lsn, @rm, NULL, @srv, @usr)";
        let (dd, tt) = value::parts_from_naive(&now);
        let nowv = value::datetime_from_parts(dd, tt, 0, &SqlType::DateTime)?;
        let params = [
            ("@db", Value::String(Arc::from(d.name.as_str()))),
            (
                "@type",
                Value::String(Arc::from(if log { "L" } else { "D" })),
            ),
            ("@now", nowv),
            ("@lsn", lsn_num),
            ("@rm", Value::String(Arc::from(d.recovery.desc()))),
            (
                "@srv",
                Value::String(Arc::from(self.engine.config().server_name.as_str())),
            ),
            ("@usr", Value::String(Arc::from(self.login.as_str()))),
        ];
        let had_txn = self.txn.is_some();
        self.run_nested(sql, &params)?;
        if !had_txn {
            self.commit()?;
        }
        Ok(())
    }

    /// Installs a new definition of a table (catalog + data transform under the commit lock).
    fn replace_table(
        &self,
        db: &str,
        old: &Arc<TableDef>,
        new: Arc<TableDef>,
        transform: impl FnOnce(&mut TableData),
    ) {
        let _g = self.engine.inner.store.commit_lock.lock();
        self.engine.inner.store.install(|snap, _| {
            if let Some(td) = snap.tables.get_mut(&old.object_id) {
                transform(td);
            }
        });
        let mut cat = self.engine.inner.catalog.write();
        if let Some(d) = cat.get_mut(&db.to_lowercase()) {
            d.tables.remove(&object_key(&old.schema, &old.name));
            d.tables.insert(object_key(&new.schema, &new.name), new);
        }
    }

    fn create_table(
        &mut self,
        name: &[String],
        columns: &[ColumnSpec],
        constraints: &[ConstraintSpec],
    ) -> Result<(), SqlError> {
        let (db, schema, tname) = self.db_for(name);
        if tname.starts_with('#') {
            return Err(value::unsupported("temporary tables"));
        }
        let d = self.engine.database(&db).ok_or_else(|| {
            err(
                911,
                format!(
                    "Database '{db}' does not exist. Make sure that the name is entered correctly."
                ),
            )
        })?;
        let sdef = d.schema(&schema).ok_or_else(|| err(2760, format!("The specified schema name \"{schema}\" either does not exist or you do not have permission to use it.")))?;
        if d.table(&schema, &tname).is_some()
            || d.sequences.contains_key(&object_key(&schema, &tname))
        {
            return Err(err(
                2714,
                format!("There is already an object named '{tname}' in the database."),
            ));
        }
        let now = self.engine.clock().now_local();
        let object_id = self.engine.new_object_id();
        let mut def = TableDef {
            object_id,
            database_id: d.database_id,
            schema_id: sdef.schema_id,
            schema: sdef.name.clone(),
            name: tname.clone(),
            columns: Vec::new(),
            indexes: Vec::new(),
            foreign_keys: Vec::new(),
            checks: Vec::new(),
            created: now,
            modified: now,
            is_tracked_by_cdc: false,
            storage_key: Vec::new(),
            runtime: Arc::new(TableRuntime::default()),
            next_column_id: 1,
            is_ms_shipped: false,
        };
        let mut all_constraints: Vec<ConstraintSpec> = Vec::new();
        for c in columns {
            self.add_column_def(&mut def, c, &d)?;
            all_constraints.extend(c.constraints.iter().cloned());
        }
        all_constraints.extend(constraints.iter().cloned());
        // PK first so it becomes the clustered index (index_id 1) unless NONCLUSTERED.
        all_constraints.sort_by_key(|c| !matches!(c.kind, ConstraintKind::PrimaryKey { .. }));
        for c in &all_constraints {
            self.add_constraint(&mut def, c, &d, true)?;
        }
        finalize_storage(&mut def);
        let def = Arc::new(def);
        {
            let _g = self.engine.inner.store.commit_lock.lock();
            let mut td = TableData::default();
            for i in def.unique_indexes() {
                td.uniques.insert(i.index_id, imbl::OrdMap::new());
            }
            self.engine.inner.store.install(|snap, _| {
                snap.tables.insert(object_id, td);
            });
            self.with_db(&db, |d| {
                d.tables.insert(object_key(&schema, &tname), def.clone());
                Ok(())
            })?;
        }
        self.fire_ddl(DdlEventType::CreateTable, &db, None, Some(def), None)
    }

    fn add_column_def(
        &mut self,
        def: &mut TableDef,
        c: &ColumnSpec,
        d: &DatabaseDef,
    ) -> Result<(), SqlError> {
        if def.column_index(&c.name).is_some() {
            return Err(err(2705, format!("Column names in each table must be unique. Column name '{}' in table '{}' is specified more than once.", c.name, def.name)));
        }
        let (ty, user_type, type_nullable) = match &c.type_text {
            None => (SqlType::Null, None, true),
            Some(t) => match value::parse_type_name(t, 1) {
                Ok(ty) => (ty, None, true),
                Err(e) => {
                    let parts = super::session::split_name_text(t);
                    let (_, s, n) = parse::split_name(&parts);
                    let s = s.unwrap_or_else(|| "dbo".into());
                    match d.alias_types.get(&object_key(&s, &n)) {
                        Some(a) => (
                            a.base.clone(),
                            Some((s.clone(), a.name.clone())),
                            a.nullable,
                        ),
                        None => return Err(e),
                    }
                }
            },
        };
        let identity = match &c.identity {
            Some((seed, inc)) => {
                if !matches!(
                    ty,
                    SqlType::TinyInt
                        | SqlType::SmallInt
                        | SqlType::Int
                        | SqlType::BigInt
                        | SqlType::Decimal { scale: 0, .. }
                ) {
                    return Err(err(2749, format!("Identity column '{}' must be of data type int, bigint, smallint, tinyint, or decimal or numeric with a scale of 0, and constrained to be nonnullable.", c.name)));
                }
                if def.identity_column().is_some() {
                    return Err(err(2744, format!("Multiple identity columns specified for table '{}'. Only one identity column per table is allowed.", def.name)));
                }
                Some(IdentitySpec {
                    seed: seed.parse().unwrap_or(1),
                    increment: inc.parse().unwrap_or(1),
                })
            }
            None => None,
        };
        let is_pk_col = c
            .constraints
            .iter()
            .any(|k| matches!(k.kind, ConstraintKind::PrimaryKey { .. }));
        let nullable = c.nullable.unwrap_or(
            identity.is_none() && !is_pk_col && !matches!(ty, SqlType::RowVersion) && type_nullable,
        );
        let default = c.default.as_ref().map(|(n, e)| DefaultDef {
            object_id: self.engine.new_object_id(),
            name: n.clone().unwrap_or_else(|| {
                format!(
                    "DF__{}__{}__{:08X}",
                    trunc(&def.name, 9),
                    trunc(&c.name, 5),
                    def.object_id as u32 ^ def.next_column_id as u32
                )
            }),
            definition: expr_text(e),
        });
        let computed = c.computed.as_ref().map(|(e, persisted)| ComputedDef {
            definition: expr_text(e),
            persisted: *persisted,
        });
        let ty = if computed.is_some() {
            computed_type(self, def, c.computed.as_ref().map(|x| &x.0))?
        } else {
            ty
        };
        def.columns.push(ColumnDef {
            column_id: def.next_column_id,
            name: c.name.clone(),
            ty,
            user_type,
            nullable: if c.computed.is_some() {
                c.nullable.unwrap_or(true)
            } else {
                nullable
            },
            identity,
            default,
            computed,
            is_rowguidcol: c.rowguidcol,
        });
        def.next_column_id += 1;
        Ok(())
    }

    fn add_constraint(
        &self,
        def: &mut TableDef,
        c: &ConstraintSpec,
        d: &DatabaseDef,
        creating: bool,
    ) -> Result<(), SqlError> {
        fn col_of(def: &TableDef, name: &str) -> Result<usize, SqlError> {
            def.column_index(name).ok_or_else(|| {
                err(
                    1911,
                    format!("Column name '{name}' does not exist in the target table or view."),
                )
            })
        }
        let suffix = format!(
            "{:08X}",
            (def.object_id as u32).wrapping_mul(2654435761)
                ^ (def.indexes.len() as u32
                    + def.checks.len() as u32 * 7
                    + def.foreign_keys.len() as u32 * 13)
        );
        match &c.kind {
            ConstraintKind::PrimaryKey { clustered, columns }
            | ConstraintKind::Unique { clustered, columns } => {
                let pk = matches!(c.kind, ConstraintKind::PrimaryKey { .. });
                if pk && def.primary_key().is_some() {
                    return Err(err(
                        8111,
                        format!(
                            "Cannot add multiple PRIMARY KEY constraints to table '{}'.",
                            def.name
                        ),
                    ));
                }
                let mut cols = Vec::new();
                for (n, desc) in columns {
                    let i = col_of(def, n)?;
                    if pk {
                        if !creating && def.columns[i].nullable {
                            return Err(err(8111, format!("Cannot define PRIMARY KEY constraint on nullable column in table '{}'.", def.name)));
                        }
                        def.columns[i].nullable = false;
                    }
                    if value::is_lob_type(&def.columns[i].ty) {
                        return Err(err(1919, format!("Column '{}' in table '{}' is of a type that is invalid for use as a key column in an index.", n, def.name)));
                    }
                    cols.push(IndexColumn {
                        column: i,
                        descending: *desc,
                        included: false,
                    });
                }
                let has_clustered = def.indexes.iter().any(|i| i.kind == IndexKind::Clustered);
                let clustered = clustered.unwrap_or(pk && !has_clustered);
                if clustered && has_clustered {
                    return Err(err(1902, format!("Cannot create more than one clustered index on table '{}'. Drop the existing clustered index before creating another.", def.name)));
                }
                let name = c.name.clone().unwrap_or_else(|| {
                    format!(
                        "{}__{}__{}",
                        if pk { "PK" } else { "UQ" },
                        trunc(&def.name, 8),
                        suffix
                    )
                });
                if d.tables.values().any(|t| {
                    t.indexes.iter().any(|i| {
                        i.name.eq_ignore_ascii_case(&name)
                            && (i.is_primary_key || i.is_unique_constraint)
                    })
                }) || def
                    .indexes
                    .iter()
                    .any(|i| i.name.eq_ignore_ascii_case(&name))
                {
                    return Err(err(
                        2714,
                        format!("There is already an object named '{name}' in the database."),
                    ));
                }
                let idx = IndexDef {
                    index_id: 0,
                    name,
                    kind: if clustered {
                        IndexKind::Clustered
                    } else {
                        IndexKind::NonClustered
                    },
                    is_unique: true,
                    is_primary_key: pk,
                    is_unique_constraint: !pk,
                    constraint_object_id: Some(self.engine.new_object_id()),
                    columns: cols,
                    filter: None,
                    data_compression: "NONE",
                };
                def.indexes.push(idx);
            }
            ConstraintKind::ForeignKey {
                columns,
                ref_table,
                ref_columns,
                on_delete,
                on_update,
            } => {
                let cols = columns
                    .iter()
                    .map(|n| col_of(def, n))
                    .collect::<Result<Vec<_>, _>>()?;
                let (_, rs, rn) = self.db_for(ref_table);
                let parent: Arc<TableDef> =
                    if rn.eq_ignore_ascii_case(&def.name) && rs.eq_ignore_ascii_case(&def.schema) {
                        Arc::new(def.clone())
                    } else {
                        d.table(&rs, &rn).cloned().ok_or_else(|| {
                            err(
                                1767,
                                format!(
                                    "Foreign key '{}' references invalid table '{}'.",
                                    c.name.clone().unwrap_or_default(),
                                    ref_table.join(".")
                                ),
                            )
                        })?
                    };
                let rcols = if ref_columns.is_empty() {
                    parent.primary_key().map(|p| p.key_columns().collect::<Vec<_>>()).ok_or_else(|| err(1773, "Foreign key has implicit reference to object which does not have a primary key defined on it."))?
                } else {
                    ref_columns.iter().map(|n| parent.column_index(n).ok_or_else(|| err(1770, format!("Foreign key references invalid column '{n}' in referenced table '{}'.", parent.name)))).collect::<Result<Vec<_>, _>>()?
                };
                if rcols.len() != cols.len() {
                    return Err(err(
                        8140,
                        "More than one key specified in column level FOREIGN KEY constraint.",
                    ));
                }
                let key_index = parent
                    .indexes
                    .iter()
                    .find(|i| i.is_unique && i.key_columns().collect::<Vec<_>>() == rcols);
                let Some(key_index) = key_index else {
                    return Err(err(1776, format!("There are no primary or candidate keys in the referenced table '{}' that match the referencing column list in the foreign key '{}'.", parent.name, c.name.clone().unwrap_or_default())));
                };
                let action = |s: &str| match s {
                    "CASCADE" => ReferentialAction::Cascade,
                    "SET NULL" => ReferentialAction::SetNull,
                    "SET DEFAULT" => ReferentialAction::SetDefault,
                    _ => ReferentialAction::NoAction,
                };
                let name = c.name.clone().unwrap_or_else(|| {
                    format!(
                        "FK__{}__{}__{}",
                        trunc(&def.name, 8),
                        trunc(&columns[0], 8),
                        suffix
                    )
                });
                def.foreign_keys.push(ForeignKeyDef {
                    object_id: self.engine.new_object_id(),
                    name,
                    columns: cols,
                    referenced_object_id: parent.object_id,
                    referenced_columns: rcols,
                    on_delete: action(on_delete),
                    on_update: action(on_update),
                    key_index_id: key_index.index_id,
                });
            }
            ConstraintKind::Check(e) => {
                let name = c
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("CK__{}__{}", trunc(&def.name, 8), suffix));
                def.checks.push(CheckDef {
                    object_id: self.engine.new_object_id(),
                    name,
                    definition: expr_text(e),
                    column: None,
                });
            }
            ConstraintKind::Default { column, expr } => {
                let i = col_of(def, column)?;
                if def.columns[i].default.is_some() {
                    return Err(err(1781, "Column already has a DEFAULT bound to it."));
                }
                let name = c.name.clone().unwrap_or_else(|| {
                    format!(
                        "DF__{}__{}__{}",
                        trunc(&def.name, 9),
                        trunc(column, 5),
                        suffix
                    )
                });
                def.columns[i].default = Some(DefaultDef {
                    object_id: self.engine.new_object_id(),
                    name,
                    definition: expr_text(expr),
                });
            }
        }
        Ok(())
    }

    fn alter_table(&mut self, table: &[String], action: &AlterAction) -> Result<(), SqlError> {
        let (db, def) = self.resolve_table(table)?;
        self.check_no_other_writers(&def)?;
        let d = self.engine.database(&db).expect("resolved");
        let mut nd = (*def).clone();
        nd.modified = self.engine.clock().now_local();
        let mut transform: Option<RowTransform> = None;
        let mut rebuild_uniques = false;
        match action {
            AlterAction::AddColumns(cols) => {
                let start = nd.columns.len();
                for c in cols {
                    if c.identity.is_some() {
                        return Err(value::unsupported(
                            "adding an IDENTITY column to an existing table",
                        ));
                    }
                    self.add_column_def(&mut nd, c, &d)?;
                    for k in &c.constraints {
                        self.add_constraint(&mut nd, k, &d, false)?;
                    }
                }
                // New columns take their default (WITH VALUES or NOT NULL) or NULL.
                let mut fill = Vec::new();
                for (i, c) in nd.columns.iter().enumerate().skip(start) {
                    let v = match &c.default {
                        Some(df) => {
                            let e = parse::parse_expr_text(&df.definition)?;
                            value::convert(&self.eval_expr(&e)?.0, &c.ty, 0)?
                        }
                        _ => crate::types::Value::Null,
                    };
                    let v = if c.nullable
                        && cols
                            .iter()
                            .find(|s| s.name.eq_ignore_ascii_case(&c.name))
                            .is_some_and(|s| s.default.is_some())
                    {
                        crate::types::Value::Null
                    } else {
                        v
                    };
                    if !c.nullable && v == crate::types::Value::Null && c.computed.is_none() {
                        let has_rows = self
                            .engine
                            .inner
                            .store
                            .snapshot()
                            .table(def.object_id)
                            .is_some_and(|t| !t.rows.is_empty());
                        if has_rows {
                            return Err(err(4901, format!("ALTER TABLE only allows columns to be added that can contain nulls, or have a DEFAULT definition specified, or the column being added is an identity or timestamp column, or alternatively if none of the previous conditions are satisfied the table must be empty to allow addition of this column. Column '{}' cannot be added to non-empty table '{}' because it does not satisfy these conditions.", c.name, def.name)));
                        }
                    }
                    let _ = i;
                    fill.push(v);
                }
                transform = Some(Box::new(move |r: &[crate::types::Value]| {
                    let mut v = r.to_vec();
                    v.extend(fill.iter().cloned());
                    v
                }));
            }
            AlterAction::DropColumns(names, if_exists) => {
                let mut drop = Vec::new();
                for n in names {
                    match nd.column_index(n) {
                        Some(i) => {
                            let used_by = nd.indexes.iter().find(|x| x.columns.iter().any(|c| c.column == i)).map(|x| x.name.clone())
                                .or_else(|| nd.foreign_keys.iter().find(|f| f.columns.contains(&i)).map(|f| f.name.clone()))
                                .or_else(|| nd.columns[i].default.as_ref().map(|df| df.name.clone()))
                                .or_else(|| nd.checks.iter().find(|c| c.definition.to_lowercase().contains(&format!("[{}]", n.to_lowercase())) || c.definition.to_lowercase().contains(&n.to_lowercase())).map(|c| c.name.clone()));
                            if let Some(obj) = used_by {
                                return Err(err(5074, format!("The object '{obj}' is dependent on column '{n}'.")));
                            }
                            drop.push(i);
                        }
                        None if *if_exists => {}
                        None => return Err(err(4924, format!("ALTER TABLE DROP COLUMN failed because column '{n}' does not exist in table '{}'.", def.name))),
                    }
                }
                drop.sort_unstable();
                drop.dedup();
                for &i in drop.iter().rev() {
                    nd.columns.remove(i);
                }
                remap_positions(&mut nd, &drop);
                let keep: Vec<usize> = (0..def.columns.len())
                    .filter(|i| !drop.contains(i))
                    .collect();
                transform = Some(Box::new(move |r: &[crate::types::Value]| {
                    keep.iter().map(|&i| r[i].clone()).collect()
                }));
            }
            AlterAction::AlterColumn {
                name,
                type_text,
                nullable,
            } => {
                let i = nd.column_index(name).ok_or_else(|| err(4902, format!("Cannot find the object \"{}\" because it does not exist or you do not have permissions.", table.join("."))))?;
                let ty = self.resolve_type(type_text)?;
                if nd
                    .indexes
                    .iter()
                    .any(|x| x.columns.iter().any(|c| c.column == i))
                    && ty != nd.columns[i].ty
                {
                    let x = nd
                        .indexes
                        .iter()
                        .find(|x| x.columns.iter().any(|c| c.column == i))
                        .expect("found");
                    return Err(err(
                        5074,
                        format!("The object '{}' is dependent on column '{}'.", x.name, name),
                    ));
                }
                let old_ty = nd.columns[i].ty.clone();
                nd.columns[i].ty = ty.clone();
                nd.columns[i].nullable = nullable.unwrap_or(true);
                let not_null = !nd.columns[i].nullable;
                let tname = format!("{}.{}", def.schema, def.name);
                let cname = name.clone();
                // Validate existing data.
                let snap = self.engine.inner.store.snapshot();
                if let Some(td) = snap.table(def.object_id) {
                    for (_, r) in td.rows.iter() {
                        let v = &r.row[i];
                        if not_null && *v == crate::types::Value::Null {
                            return Err(err(515, format!("Cannot insert the value NULL into column '{cname}', table '{db}.{tname}'; column does not allow nulls. UPDATE fails.")));
                        }
                        value::check_fits(v, &ty, &tname, &cname)?;
                        value::convert(v, &ty, 0)?;
                    }
                }
                let _ = old_ty;
                transform = Some(Box::new(move |r: &[crate::types::Value]| {
                    let mut v = r.to_vec();
                    v[i] = value::convert(&v[i], &ty, 0).unwrap_or(crate::types::Value::Null);
                    v
                }));
            }
            AlterAction::AddConstraints(cs) => {
                for c in cs {
                    self.add_constraint(&mut nd, c, &d, false)?;
                }
                if cs.iter().any(|c| {
                    matches!(
                        c.kind,
                        ConstraintKind::PrimaryKey { .. } | ConstraintKind::Unique { .. }
                    )
                }) {
                    if cs.iter().any(|c| matches!(&c.kind, ConstraintKind::PrimaryKey { clustered, .. } if clustered.unwrap_or(!def.indexes.iter().any(|i| i.kind == IndexKind::Clustered)))) {
                        return Err(value::unsupported("adding a clustered primary key to an existing table"));
                    }
                    rebuild_uniques = true;
                }
                // Validate CHECK and FK constraints against existing rows.
                let new_checks = nd.checks.len() > def.checks.len()
                    || nd.foreign_keys.len() > def.foreign_keys.len();
                if new_checks {
                    let ndarc = Arc::new(nd.clone());
                    let snap = self.engine.inner.store.snapshot();
                    if let Some(td) = snap.table(def.object_id) {
                        let rows: Vec<_> = td.rows.values().map(|s| s.row.clone()).collect();
                        for r in rows {
                            self.validate_constraints(&ndarc, &r)
                                .map_err(|e| SqlError {
                                    message: e
                                        .message
                                        .replace("INSERT statement", "ALTER TABLE statement"),
                                    ..e
                                })?;
                        }
                    }
                }
            }
            AlterAction::DropConstraints(names, if_exists) => {
                for n in names {
                    let mut found = false;
                    if let Some(p) = nd.indexes.iter().position(|i| {
                        (i.is_primary_key || i.is_unique_constraint)
                            && i.name.eq_ignore_ascii_case(n)
                    }) {
                        if nd.indexes[p].kind == IndexKind::Clustered {
                            return Err(value::unsupported("dropping a clustered primary key"));
                        }
                        nd.indexes.remove(p);
                        found = true;
                        rebuild_uniques = true;
                    } else if let Some(p) = nd
                        .foreign_keys
                        .iter()
                        .position(|f| f.name.eq_ignore_ascii_case(n))
                    {
                        nd.foreign_keys.remove(p);
                        found = true;
                    } else if let Some(p) = nd
                        .checks
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(n))
                    {
                        nd.checks.remove(p);
                        found = true;
                    } else if let Some(c) = nd.columns.iter_mut().find(|c| {
                        c.default
                            .as_ref()
                            .is_some_and(|d| d.name.eq_ignore_ascii_case(n))
                    }) {
                        c.default = None;
                        found = true;
                    }
                    if !found && !if_exists {
                        return Err(err(3728, format!("'{n}' is not a constraint.")));
                    }
                }
            }
            AlterAction::NoOp => return Ok(()),
        }
        finalize_storage(&mut nd);
        let nd = Arc::new(nd);
        let uniques: Vec<(i32, Vec<usize>)> = nd
            .unique_indexes()
            .filter(|i| i.kind != IndexKind::Clustered || nd.is_heap())
            .map(|i| (i.index_id, i.key_columns().collect()))
            .collect();
        let storage_key = nd.storage_key.clone();
        let heap = nd.is_heap();
        // Build unique maps for new unique constraints (checking duplicates first).
        let mut new_unique_maps = Vec::new();
        if rebuild_uniques {
            let snap = self.engine.inner.store.snapshot();
            let td = snap.table(def.object_id).cloned().unwrap_or_default();
            for (id, cols) in &uniques {
                if td.uniques.contains_key(id) {
                    continue;
                }
                let mut m = imbl::OrdMap::new();
                for (k, r) in td.rows.iter() {
                    let uk = super::store::Key::from_row(&r.row, cols);
                    if m.insert(uk.clone(), k.clone()).is_some() {
                        let idx = nd
                            .indexes
                            .iter()
                            .find(|i| i.index_id == *id)
                            .expect("index");
                        return Err(err(1505, format!("The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for the object name '{}.{}' and the index name '{}'. The duplicate key value is ({}).", nd.schema, nd.name, idx.name, uk.0.iter().map(value::to_display_string).collect::<Vec<_>>().join(", "))));
                    }
                }
                new_unique_maps.push((*id, m));
            }
        }
        let keep_ids: Vec<i32> = uniques.iter().map(|u| u.0).collect();
        self.replace_table(&db, &def, nd.clone(), move |td| {
            if let Some(f) = &transform {
                let mut rows = imbl::OrdMap::new();
                for (k, r) in td.rows.iter() {
                    let nr: super::hooks::Row = Arc::from(f(&r.row));
                    let nk = if heap {
                        k.clone()
                    } else {
                        super::store::Key::from_row(&nr, &storage_key)
                    };
                    rows.insert(
                        nk,
                        super::store::StoredRow {
                            row: nr,
                            seq: r.seq,
                        },
                    );
                }
                td.rows = rows;
            }
            td.uniques.retain(|id, _| keep_ids.contains(id));
            for (id, m) in new_unique_maps {
                td.uniques.insert(id, m);
            }
        });
        self.fire_ddl(DdlEventType::AlterTable, &db, Some(def), Some(nd), None)
    }

    fn validate_constraints(
        &mut self,
        def: &Arc<TableDef>,
        row: &[crate::types::Value],
    ) -> Result<(), SqlError> {
        let exprs = self.table_exprs(def)?;
        let env = self.top_env();
        for (name, _, e) in &exprs.checks {
            if super::eval::truth(&super::eval::eval(e, row, &env)?) == Some(false) {
                return Err(err(547, format!("The ALTER TABLE statement conflicted with the CHECK constraint \"{name}\". The conflict occurred in database \"{}\", table \"{}.{}\".", self.database, def.schema, def.name)));
            }
        }
        Ok(())
    }

    fn create_index(&mut self, spec: &parse::IndexSpec) -> Result<(), SqlError> {
        let (db, def) = self.resolve_table(&spec.table)?;
        if def
            .indexes
            .iter()
            .any(|i| i.name.eq_ignore_ascii_case(&spec.name))
        {
            return Err(err(1913, format!("The operation failed because an index or statistics with name '{}' already exists on table '{}'.", spec.name, spec.table.join("."))));
        }
        if spec.clustered && def.indexes.iter().any(|i| i.kind == IndexKind::Clustered) {
            return Err(err(1902, format!("Cannot create more than one clustered index on table '{}'. Drop the existing clustered index before creating another.", spec.table.join("."))));
        }
        let mut nd = (*def).clone();
        let mut cols = Vec::new();
        for (n, desc) in &spec.columns {
            let i = nd.column_index(n).ok_or_else(|| {
                err(
                    1911,
                    format!("Column name '{n}' does not exist in the target table or view."),
                )
            })?;
            cols.push(IndexColumn {
                column: i,
                descending: *desc,
                included: false,
            });
        }
        for n in &spec.include {
            let i = nd.column_index(n).ok_or_else(|| {
                err(
                    1911,
                    format!("Column name '{n}' does not exist in the target table or view."),
                )
            })?;
            cols.push(IndexColumn {
                column: i,
                descending: false,
                included: true,
            });
        }
        if spec.clustered {
            let empty = self
                .engine
                .inner
                .store
                .snapshot()
                .table(def.object_id)
                .is_none_or(|t| t.rows.is_empty());
            if !empty {
                return Err(value::unsupported(
                    "creating a clustered index on a non-empty heap",
                ));
            }
        }
        let idx = IndexDef {
            index_id: 0,
            name: spec.name.clone(),
            kind: if spec.clustered {
                IndexKind::Clustered
            } else {
                IndexKind::NonClustered
            },
            is_unique: spec.unique,
            is_primary_key: false,
            is_unique_constraint: false,
            constraint_object_id: None,
            columns: cols,
            filter: spec.filter.as_ref().map(expr_text),
            data_compression: "NONE",
        };
        nd.indexes.push(idx);
        finalize_storage(&mut nd);
        let nd = Arc::new(nd);
        let mut unique_map = None;
        if spec.unique && !(spec.clustered) {
            let id = nd
                .indexes
                .iter()
                .find(|i| i.name == spec.name)
                .expect("added")
                .index_id;
            let cols: Vec<usize> = nd
                .indexes
                .iter()
                .find(|i| i.name == spec.name)
                .expect("added")
                .key_columns()
                .collect();
            let snap = self.engine.inner.store.snapshot();
            let mut m = imbl::OrdMap::new();
            if let Some(td) = snap.table(def.object_id) {
                for (k, r) in td.rows.iter() {
                    let uk = super::store::Key::from_row(&r.row, &cols);
                    if spec.filter.is_some() && uk.0.contains(&crate::types::Value::Null) {
                        continue;
                    }
                    if m.insert(uk.clone(), k.clone()).is_some() {
                        return Err(err(1505, format!("The CREATE UNIQUE INDEX statement terminated because a duplicate key was found for the object name '{}.{}' and the index name '{}'. The duplicate key value is ({}).", def.schema, def.name, spec.name, uk.0.iter().map(value::to_display_string).collect::<Vec<_>>().join(", "))));
                    }
                }
            }
            unique_map = Some((id, m));
        }
        self.replace_table(&db, &def, nd.clone(), move |td| {
            if let Some((id, m)) = unique_map {
                td.uniques.insert(id, m);
            }
        });
        self.fire_ddl(DdlEventType::CreateIndex, &db, Some(def), Some(nd), None)
    }

    /// CREATE [OR ALTER] / ALTER VIEW: the SELECT is planned once here so that a view over
    /// missing objects or columns fails now (208/207), as in SQL Server, then stored as text.
    /// ALTER keeps the view's object_id and create_date.
    fn create_view(
        &mut self,
        name: &[String],
        columns: &[String],
        query: &str,
        definition: &str,
        check_option: bool,
        mode: parse::ViewMode,
    ) -> Result<(), SqlError> {
        let (db, schema, n) = self.db_for(name);
        if !db.eq_ignore_ascii_case(&self.database) {
            return Err(err(
                166,
                "'CREATE VIEW' does not allow specifying the database name as a prefix to the object name.",
            ));
        }
        let q = super::query::parse_view_query(query)?;
        let unordered = q.limit_clause.is_none()
            && q.fetch.is_none()
            && !matches!(q.body.as_ref(), sqlparser::ast::SetExpr::Select(sel) if sel.top.is_some());
        if q.order_by.is_some() && unordered {
            return Err(err(1033, "The ORDER BY clause is invalid in views, inline functions, derived tables, subqueries, and common table expressions, unless TOP, OFFSET or FOR XML is also specified."));
        }
        let plan = {
            let mut b = super::eval::Binder::new(self, super::eval::Scope::default());
            super::query::plan_query(&mut b, &q)?
        };
        if !columns.is_empty() && columns.len() != plan.columns.len() {
            let (num, what) = if columns.len() > plan.columns.len() {
                (8159, "fewer")
            } else {
                (8158, "more")
            };
            return Err(err(
                num,
                format!("'{n}' has {what} columns than were specified in the column list."),
            ));
        }
        if columns.is_empty() {
            if let Some(i) = plan.columns.iter().position(|c| c.name.is_empty()) {
                return Err(err(4511, format!("Create View or Function failed because no column name was specified for column {}.", i + 1)));
            }
        }
        let id = self.engine.new_object_id();
        let now = self.engine.clock().now_local();
        self.with_db(&db, |d| {
            let sid = d.schema(&schema).ok_or_else(|| err(2760, format!("The specified schema name \"{schema}\" either does not exist or you do not have permission to use it.")))?.schema_id;
            let key = object_key(&schema, &n);
            let existing = d.views.get(&key).cloned();
            if existing.is_none() && mode == parse::ViewMode::Alter {
                return Err(err(208, format!("Invalid object name '{n}'.")));
            }
            if (existing.is_some() && mode == parse::ViewMode::Create)
                || d.tables.contains_key(&key)
                || d.procedures.contains_key(&key)
                || d.sequences.contains_key(&key)
            {
                return Err(err(2714, format!("There is already an object named '{n}' in the database.")));
            }
            d.views.insert(
                key,
                Arc::new(ViewDef {
                    object_id: existing.as_ref().map(|v| v.object_id).unwrap_or(id),
                    schema_id: sid,
                    schema: d.schema_by_id(sid).map(|s| s.name.clone()).unwrap_or(schema.clone()),
                    name: n.clone(),
                    columns: columns.to_vec(),
                    query: query.to_string(),
                    check_option,
                    definition: definition.to_string(),
                    created: existing.as_ref().map(|v| v.created).unwrap_or(now),
                }),
            );
            Ok(())
        })
    }

    fn drop_objects(
        &mut self,
        kind: &str,
        names: &[Vec<String>],
        if_exists: bool,
    ) -> Result<(), SqlError> {
        for name in names {
            let (db, schema, n) = self.db_for(name);
            match kind {
                "TABLE" => {
                    let def = match self.resolve_table(name) {
                        Ok((_, d)) => d,
                        Err(e) => {
                            if if_exists {
                                continue;
                            }
                            return Err(err(3701, e.message.replace("Invalid object name", "Cannot drop the table").replace("'.", "', because it does not exist or you do not have permission.")));
                        }
                    };
                    let refs = self
                        .engine
                        .database(&db)
                        .map(|d| {
                            d.tables
                                .values()
                                .filter(|t| t.object_id != def.object_id)
                                .flat_map(|t| {
                                    t.foreign_keys
                                        .iter()
                                        .filter(|f| f.referenced_object_id == def.object_id)
                                        .map(|f| f.name.clone())
                                        .collect::<Vec<_>>()
                                })
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    if let Some(fk) = refs.first() {
                        return Err(err(3726, format!("Could not drop object '{}' because it is referenced by a FOREIGN KEY constraint '{}'.", name.join("."), fk)));
                    }
                    self.check_no_other_writers(&def)?;
                    {
                        let _g = self.engine.inner.store.commit_lock.lock();
                        self.engine.inner.store.install(|snap, _| {
                            snap.tables.remove(&def.object_id);
                        });
                        self.with_db(&db, |d| {
                            d.tables.remove(&object_key(&def.schema, &def.name));
                            Ok(())
                        })?;
                    }
                    if let Some(t) = self.txn.as_mut() {
                        t.writes.remove(&def.object_id);
                    }
                    self.fire_ddl(DdlEventType::DropTable, &db, Some(def), None, None)?;
                }
                "SCHEMA" => {
                    let removed = self.with_db(&db, |d| {
                        if d.tables.values().any(|t| t.schema.eq_ignore_ascii_case(&n)) {
                            return Err(err(3729, format!("Cannot drop schema '{n}' because it is being referenced by object '{}'.", d.tables.values().find(|t| t.schema.eq_ignore_ascii_case(&n)).map(|t| t.name.clone()).unwrap_or_default())));
                        }
                        Ok(d.schemas.remove(&n.to_lowercase()).is_some())
                    })?;
                    if !removed && !if_exists {
                        return Err(err(3701, format!("Cannot drop the schema '{n}', because it does not exist or you do not have permission.")));
                    }
                }
                "SEQUENCE" | "TYPE" | "PROCEDURE" | "TRIGGER" | "VIEW" => {
                    let removed = self.with_db(&db, |d| {
                        let key = object_key(&schema, &n);
                        Ok(match kind {
                            "VIEW" => d.views.remove(&key).is_some(),
                            "SEQUENCE" => d.sequences.remove(&key).is_some(),
                            "TYPE" => d.alias_types.remove(&key).is_some(),
                            "PROCEDURE" => d.procedures.remove(&key).is_some(),
                            _ => {
                                let before = d.ddl_triggers.len();
                                d.ddl_triggers.retain(|t| !t.name.eq_ignore_ascii_case(&n));
                                before != d.ddl_triggers.len()
                            }
                        })
                    })?;
                    if !removed && !if_exists {
                        return Err(err(3701, format!("Cannot drop the {} '{}', because it does not exist or you do not have permission.", kind.to_lowercase(), name.join("."))));
                    }
                }
                other => return Err(value::unsupported(format!("DROP {other}"))),
            }
        }
        Ok(())
    }

    /// sp_rename 'schema.table', 'new' | 'schema.table.col', 'new', 'COLUMN'.
    pub(crate) fn sp_rename(&mut self, args: &ProcArgs) -> Result<(), SqlError> {
        let obj = args.get_str("objname", 0).ok_or_else(|| err(15248, "Either the parameter @objname is ambiguous or the claimed @objtype (object) is wrong."))?;
        let new = args
            .get_str("newname", 1)
            .ok_or_else(|| err(15223, "Error: The new name cannot be NULL."))?;
        let kind = args
            .get_str("objtype", 2)
            .unwrap_or_default()
            .to_uppercase();
        let parts = super::session::split_name_text(&obj);
        if kind == "COLUMN" {
            let (tparts, col) = parts.split_at(parts.len() - 1);
            let (db, def) = self.resolve_table(tparts)?;
            self.check_no_other_writers(&def)?;
            let i = def.column_index(&col[0]).ok_or_else(|| err(15248, "Either the parameter @objname is ambiguous or the claimed @objtype (COLUMN) is wrong."))?;
            if def.column_index(&new).is_some() {
                return Err(err(2705, format!("Column names in each table must be unique. Column name '{new}' in table '{}' is specified more than once.", def.name)));
            }
            let mut nd = (*def).clone();
            let old = std::mem::replace(&mut nd.columns[i].name, new.clone());
            nd.modified = self.engine.clock().now_local();
            let nd = Arc::new(nd);
            self.replace_table(&db, &def, nd.clone(), |_| {});
            return self.fire_ddl(
                DdlEventType::Rename,
                &db,
                Some(def),
                Some(nd),
                Some((old, new)),
            );
        }
        if kind.is_empty() || kind == "OBJECT" {
            if let Ok((db, def)) = self.resolve_table(&parts) {
                self.check_no_other_writers(&def)?;
                if self.engine.table(&db, &def.schema, &new).is_some() {
                    return Err(err(15335, format!("Error: The new name '{new}' is already in use as a object name and would cause a duplicate that is not permitted.")));
                }
                let mut nd = (*def).clone();
                nd.name = new.clone();
                nd.modified = self.engine.clock().now_local();
                let nd = Arc::new(nd);
                self.replace_table(&db, &def, nd.clone(), |_| {});
                return self.fire_ddl(DdlEventType::Rename, &db, Some(def), Some(nd), None);
            }
        }
        if kind == "INDEX" {
            let (tparts, iname) = parts.split_at(parts.len() - 1);
            let (db, def) = self.resolve_table(tparts)?;
            let mut nd = (*def).clone();
            let idx = nd.indexes.iter_mut().find(|i| i.name.eq_ignore_ascii_case(&iname[0])).ok_or_else(|| err(15248, "Either the parameter @objname is ambiguous or the claimed @objtype (INDEX) is wrong."))?;
            idx.name = new;
            let nd = Arc::new(nd);
            self.replace_table(&db, &def, nd, |_| {});
            return Ok(());
        }
        Err(err(
            15248,
            format!(
                "Either the parameter @objname is ambiguous or the claimed @objtype ({}) is wrong.",
                if kind.is_empty() { "object" } else { &kind }
            ),
        ))
    }
}

/// Rewrites a stored row into a new table shape.
type RowTransform = Box<dyn Fn(&[crate::types::Value]) -> Vec<crate::types::Value>>;

fn trunc(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Assigns index ids (clustered = 1, heap = 0, others from 2) and the storage key.
fn finalize_storage(def: &mut TableDef) {
    let clustered = def
        .indexes
        .iter()
        .position(|i| i.kind == IndexKind::Clustered);
    if let Some(p) = clustered {
        let idx = def.indexes.remove(p);
        def.indexes.insert(0, idx);
    }
    let mut next = 2;
    let mut used: Vec<i32> = def
        .indexes
        .iter()
        .map(|i| i.index_id)
        .filter(|i| *i >= 2)
        .collect();
    for (i, idx) in def.indexes.iter_mut().enumerate() {
        if i == 0 && idx.kind == IndexKind::Clustered {
            idx.index_id = 1;
        } else if idx.index_id < 2 {
            while used.contains(&next) {
                next += 1;
            }
            idx.index_id = next;
            used.push(next);
        }
    }
    def.storage_key = match def.indexes.first() {
        Some(i) if i.kind == IndexKind::Clustered => {
            let mut k: Vec<usize> = i.key_columns().collect();
            if !i.is_unique {
                // Non-unique clustered index: SQL Server adds a uniquifier; we append the
                // remaining columns to keep keys distinct (documented in ENGINE.md).
                k.clear();
            }
            k
        }
        _ => Vec::new(),
    };
}

/// Positions in indexes/FKs/checks after dropping columns `dropped` (sorted).
fn remap_positions(def: &mut TableDef, dropped: &[usize]) {
    let map = |p: usize| p - dropped.iter().filter(|d| **d < p).count();
    for i in &mut def.indexes {
        for c in &mut i.columns {
            c.column = map(c.column);
        }
    }
    for f in &mut def.foreign_keys {
        for c in &mut f.columns {
            *c = map(*c);
        }
    }
    for c in &mut def.checks {
        c.column = c.column.map(map);
    }
}

/// The type of a computed column's expression over the table's columns.
fn computed_type(
    core: &mut SessionCore,
    def: &TableDef,
    e: Option<&sqlparser::ast::Expr>,
) -> Result<SqlType, SqlError> {
    let Some(e) = e else { return Ok(SqlType::Int) };
    let scope = super::eval::Scope {
        cols: super::query::table_scope_cols(def, &def.name),
    };
    let mut b = super::eval::Binder::new(core, scope);
    Ok(b.bind(e)?.1)
}
