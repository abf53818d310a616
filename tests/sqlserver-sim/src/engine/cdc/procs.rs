//! The `sys.sp_cdc_*` system procedures (and the stand-in's own control procedures).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::instance::{select_columns, CaptureInstance};
use super::tables::{self, bracket, DirectWrite, TableHandle};
use super::{capture, not_enabled, CaptureMode, Cdc, DbState, Handles, InstanceEntry, JobSettings};
use crate::api::{ResultColumn, ResultSink, SqlError, StatementKind};
use crate::engine::hooks::{ProcArgs, SystemProcedure};
use crate::engine::lsn::Lsn;
use crate::engine::value::{err, sysname};
use crate::engine::{Engine, ProcContext};
use crate::types::{SqlType, Value};

type ProcFn =
    fn(&Cdc, &mut ProcContext<'_>, &ProcArgs, &mut dyn ResultSink) -> Result<i32, SqlError>;

struct CdcProc {
    cdc: Weak<Cdc>,
    f: ProcFn,
}

impl SystemProcedure for CdcProc {
    fn call(
        &self,
        ctx: &mut ProcContext<'_>,
        args: &ProcArgs,
        sink: &mut dyn ResultSink,
    ) -> Result<i32, SqlError> {
        let cdc = self.cdc.upgrade().ok_or_else(super::engine_gone)?;
        (self.f)(&cdc, ctx, args, sink)
    }
}

pub(super) fn register(engine: &Engine, cdc: &Arc<Cdc>) {
    let procs: &[(&'static str, ProcFn)] = &[
        ("sys.sp_cdc_enable_db", enable_db),
        ("sys.sp_cdc_disable_db", disable_db),
        ("sys.sp_cdc_enable_table", enable_table),
        ("sys.sp_cdc_disable_table", disable_table),
        (
            "sys.sp_cdc_help_change_data_capture",
            help_change_data_capture,
        ),
        ("sys.sp_cdc_get_captured_columns", get_captured_columns),
        ("sys.sp_cdc_get_ddl_history", get_ddl_history),
        ("sys.sp_cdc_change_job", change_job),
        ("sys.sp_cdc_start_job", start_job),
        ("sys.sp_cdc_stop_job", stop_job),
        ("sys.sp_cdc_help_jobs", help_jobs),
        ("sys.sp_cdc_scan", scan),
        ("sys.sp_cdc_cleanup_change_table", cleanup_change_table),
        ("sys.sp_standin_cdc_control", standin_control),
    ];
    for (name, f) in procs {
        engine.register_procedure(
            name,
            Arc::new(CdcProc {
                cdc: Arc::downgrade(cdc),
                f: *f,
            }),
        );
    }
}

fn is_system_database(name: &str) -> bool {
    ["master", "tempdb", "model", "msdb"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
}

pub(crate) fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bit(b) => Some(*b),
        Value::TinyInt(i) => Some(*i != 0),
        Value::SmallInt(i) => Some(*i != 0),
        Value::Int(i) => Some(*i != 0),
        Value::BigInt(i) => Some(*i != 0),
        Value::Decimal(m, _) => Some(*m != 0),
        Value::String(s) => match s.trim() {
            "1" => Some(true),
            "0" => Some(false),
            t if t.eq_ignore_ascii_case("true") => Some(true),
            t if t.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Bit(b) => Some(*b as i64),
        Value::TinyInt(i) => Some(*i as i64),
        Value::SmallInt(i) => Some(*i as i64),
        Value::Int(i) => Some(*i as i64),
        Value::BigInt(i) => Some(*i),
        Value::Decimal(m, s) => Some((*m / 10i128.pow(*s as u32)) as i64),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(crate) fn as_lsn(v: &Value) -> Option<Lsn> {
    match v {
        Value::Binary(b) => Lsn::from_bytes(b),
        _ => None,
    }
}

/// Whether the named parameter (or its position) was supplied at all (NULL counts).
fn supplied(args: &ProcArgs, name: &str, position: usize) -> bool {
    args.0.iter().any(|a| a.name.as_deref() == Some(name))
        || args.0.get(position).is_some_and(|a| a.name.is_none())
}

fn check_params(args: &ProcArgs, proc: &str, known: &[&str]) -> Result<(), SqlError> {
    if let Some(bad) = args.unknown_names(known).next() {
        return Err(err(
            8145,
            format!("@{bad} is not a parameter for procedure {proc}."),
        ));
    }
    Ok(())
}

fn emit(
    sink: &mut dyn ResultSink,
    columns: &[ResultColumn],
    rows: &[Vec<Value>],
) -> Result<(), SqlError> {
    let cancelled = || err(3617, "The query was cancelled.");
    sink.columns(columns).map_err(|_| cancelled())?;
    for r in rows {
        sink.row(r).map_err(|_| cancelled())?;
    }
    sink.done(StatementKind::Select, Some(rows.len() as u64), true)
        .map_err(|_| cancelled())?;
    Ok(())
}

fn col(name: &str, ty: SqlType, nullable: bool) -> ResultColumn {
    ResultColumn::expr(name, ty, nullable)
}

fn state_of(cdc: &Cdc, ctx: &ProcContext<'_>) -> Result<Arc<Mutex<DbState>>, SqlError> {
    let db = ctx.database();
    cdc.state_by_name(ctx.engine(), &db)
        .ok_or_else(|| not_enabled(&db))
}

fn require_sysadmin(ctx: &ProcContext<'_>) -> Result<(), SqlError> {
    if ctx.is_sysadmin() {
        Ok(())
    } else {
        Err(err(22902, "Caller is not authorized to initiate the requested action. Sysadmin privileges are required."))
    }
}

fn lookup_handles(engine: &Engine, db: &str) -> Option<Handles> {
    Some(Handles {
        change_tables: TableHandle::lookup(engine, db, "cdc", "change_tables")?,
        lsn_time_mapping: TableHandle::lookup(engine, db, "cdc", "lsn_time_mapping")?,
    })
}

fn enable_db(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_cdc_enable_db", &[])?;
    require_sysadmin(ctx)?;
    let db = ctx.database();
    if is_system_database(&db) {
        return Err(err(22989, format!("Could not enable Change Data Capture for database '{db}'. Change data capture is not supported on system databases, or on a distribution database.")));
    }
    let engine = ctx.engine().clone();
    if cdc.state_by_name(&engine, &db).is_some() {
        return Ok(0);
    }
    let def = engine.database(&db).ok_or_else(|| not_enabled(&db))?;
    if def.schema("cdc").is_some() {
        return Err(err(22906, format!("The database '{db}' cannot be enabled for Change Data Capture because a database user named 'cdc' or a schema named 'cdc' already exists in the current database. These objects are required exclusively by Change Data Capture. Drop or rename the user or schema and retry the operation.")));
    }
    ctx.run("CREATE SCHEMA cdc", &[])?;
    for ddl in tables::ENABLE_DB_DDL {
        ctx.run(ddl, &[])?;
    }
    let handles = lookup_handles(&engine, &db).ok_or_else(|| err(22830, format!("Could not update the metadata that indicates database {db} is enabled for Change Data Capture.")))?;
    engine.set_record_changes(&db, true)?;
    engine.set_cdc_enabled(&db, true)?;
    let mode = cdc.config().mode;
    let state = DbState {
        database: def.name.clone(),
        database_id: def.database_id,
        instances: Vec::new(),
        pending: VecDeque::new(),
        mapping: VecDeque::new(),
        jobs: JobSettings::default(),
        capture_running: true,
        mode,
        mask_cache: HashMap::new(),
        handles,
        jobs_created: false,
    };
    cdc.databases
        .lock()
        .insert(def.database_id, Arc::new(Mutex::new(state)));
    Ok(0)
}

fn disable_db(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_cdc_disable_db", &[])?;
    require_sysadmin(ctx)?;
    let db = ctx.database();
    let engine = ctx.engine().clone();
    let Some(state) = cdc.state_by_name(&engine, &db) else {
        return Ok(0);
    };
    let names: Vec<String> = state
        .lock()
        .instances
        .iter()
        .map(|i| i.def.name.clone())
        .collect();
    for name in names {
        drop_instance(ctx, &state, &name)?;
    }
    let id = state.lock().database_id;
    cdc.databases.lock().remove(&id);
    for t in tables::METADATA_TABLES {
        ctx.run(&format!("DROP TABLE cdc.{t}"), &[])?;
    }
    ctx.run("DROP SCHEMA cdc", &[])?;
    engine.set_record_changes(&db, false)?;
    engine.set_cdc_enabled(&db, false)?;
    delete_job_rows(&engine, id);
    Ok(0)
}

/// Removes one capture instance: state first (so capture stops writing to it), then its
/// change table and metadata rows.
pub(crate) fn drop_instance(
    ctx: &mut ProcContext<'_>,
    state: &Mutex<DbState>,
    name: &str,
) -> Result<(), SqlError> {
    let engine = ctx.engine().clone();
    let (def, db, handles, others_for_source) = {
        let _commit = engine.inner.store.commit_lock.lock();
        let mut s = state.lock();
        let Some(pos) = s
            .instances
            .iter()
            .position(|i| i.def.name.eq_ignore_ascii_case(name))
        else {
            return Ok(());
        };
        let def = s.instances.remove(pos).def;
        s.mask_cache.remove(&def.object_id);
        let others = s
            .instances
            .iter()
            .any(|i| i.def.source_object_id == def.source_object_id);
        (def, s.database.clone(), s.handles.clone(), others)
    };
    ctx.run(
        &format!("DROP TABLE cdc.{}", bracket(&def.ct_table_name())),
        &[],
    )?;
    let ct = def.object_id;
    let mut writes = vec![DirectWrite::Delete {
        table: handles.change_tables.object_id,
        key: handles
            .change_tables
            .key(&tables::change_tables_row(&InstanceEntry {
                def: def.clone(),
                start_lsn: Lsn::ZERO,
            })),
    }];
    for table in ["captured_columns", "index_columns", "ddl_history"] {
        if let Some(h) = TableHandle::lookup(&engine, &db, "cdc", table) {
            // object_id is the first column of captured_columns and index_columns, the
            // second of ddl_history.
            let position = usize::from(table == "ddl_history");
            writes.push(DirectWrite::DeleteWhere {
                table: h.object_id,
                keep: Box::new(move |r: &[Value]| r.get(position) != Some(&Value::Int(ct))),
            });
        }
    }
    tables::install_locked(&engine, writes);
    if !others_for_source {
        // The source may already be gone (DROP TABLE drops its instances).
        let _ = engine.set_tracked_by_cdc(&db, def.source_object_id, false);
    }
    Ok(())
}

fn enable_table(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    const PROC: &str = "sys.sp_cdc_enable_table";
    check_params(
        args,
        PROC,
        &[
            "source_schema",
            "source_name",
            "role_name",
            "capture_instance",
            "supports_net_changes",
            "index_name",
            "captured_column_list",
            "filegroup_name",
            "allow_partition_switch",
        ],
    )?;
    for (name, pos) in [("source_schema", 0), ("source_name", 1), ("role_name", 2)] {
        if !supplied(args, name, pos) {
            return Err(err(201, format!("Procedure or function 'sp_cdc_enable_table' expects parameter '@{name}', which was not supplied.")));
        }
    }
    let db = ctx.database();
    let engine = ctx.engine().clone();
    let state = state_of(cdc, ctx)?;
    let schema = args.get_str("source_schema", 0).ok_or_else(|| {
        err(
            22904,
            "The parameter @source_schema cannot be NULL. Specify the schema of the source table.",
        )
    })?;
    let name = args.get_str("source_name", 1).ok_or_else(|| {
        err(
            22904,
            "The parameter @source_name cannot be NULL. Specify the name of the source table.",
        )
    })?;
    let role = args
        .get_str("role_name", 2)
        .map(|r| r.trim_end().to_string());
    if schema.eq_ignore_ascii_case("cdc") {
        return Err(err(
            22974,
            "Tables contained in the cdc schema cannot be enabled for Change Data Capture.",
        ));
    }
    let table = engine.table(&db, &schema, &name).ok_or_else(|| {
        err(22931, format!("Source table '{schema}.{name}' does not exist in the current database. Ensure that the correct database context is set. Specify a valid schema and table name for the database."))
    })?;
    let instance_name = args
        .get_str("capture_instance", 3)
        .map(|c| c.trim_end().to_string())
        .unwrap_or_else(|| format!("{}_{}", table.schema, table.name));
    if instance_name.is_empty() || instance_name.chars().count() > 100 {
        return Err(err(22927, format!("Capture instance name '{instance_name}' exceeds the length limit of 100 characters. Specify a name that satisfies the length constraint.")));
    }
    let index = match args.get_str("index_name", 5) {
        Some(ix) => {
            let found = table.indexes.iter().find(|i| i.name.eq_ignore_ascii_case(&ix)).ok_or_else(|| {
                err(22928, format!("Index name '{ix}' is not an index for table '{schema}.{name}'. Specify a valid index name for the table."))
            })?;
            if !found.is_unique {
                return Err(err(22929, format!("Index '{ix}' must be either a primary key or a unique index for table '{schema}.{name}'. Specify an index that meets at least one of these requirements.")));
            }
            Some(found.clone())
        }
        None => table.primary_key().cloned(),
    };
    let net = match args
        .get("supports_net_changes", 4)
        .filter(|v| **v != Value::Null)
    {
        Some(v) => as_bool(v).ok_or_else(|| {
            err(
                22844,
                "The 'supports_net_changes' option must be either 1 or 0.",
            )
        })?,
        None => index.is_some(),
    };
    if net && index.is_none() {
        return Err(err(22939, "The parameter @supports_net_changes is set to 1, but the source table does not have a primary key defined and no alternate unique index has been specified."));
    }
    if let Some(fg) = args.get_str("filegroup_name", 7) {
        if !fg.eq_ignore_ascii_case("PRIMARY") {
            return Err(err(22973, format!("The specified filegroup '{fg}' is not a valid filegroup for database '{db}'. Specify a valid existing filegroup or create the named filegroup, and retry the operation.")));
        }
    }
    if args.get("allow_partition_switch", 8).and_then(as_bool) == Some(false) {
        let _ = sink.info(
            22857,
            &format!("Warning: The @allow_partition_switch parameter is set to 0 for non-partitioned source table '{schema}.{name}'. The parameter is ignored for non-partitioned tables."),
        );
    }
    let columns = select_columns(&table, args.get_str("captured_column_list", 6).as_deref())?;
    let index_columns: Vec<(String, i32)> = index
        .as_ref()
        .map(|ix| {
            ix.key_columns()
                .map(|p| (table.columns[p].name.clone(), table.columns[p].column_id))
                .collect()
        })
        .unwrap_or_default();
    for (c, _) in &index_columns {
        if !columns.iter().any(|cc| cc.name.eq_ignore_ascii_case(c)) {
            return Err(err(22943, "Columns used to uniquely identify a row for net change tracking must be included in the list of captured columns. Add either the primary key columns of the source table, or the columns defined for the index specified in the parameter @index_name to the list of captured columns and retry the operation."));
        }
    }
    {
        let s = state.lock();
        if s.instance(&instance_name).is_some() {
            return Err(err(22926, format!("Could not create a capture instance because the capture instance name '{instance_name}' already exists in the current database. Specify an explicit unique name for the parameter @capture_instance.")));
        }
        if s.instances
            .iter()
            .filter(|i| i.def.source_object_id == table.object_id)
            .count()
            >= 2
        {
            return Err(err(22962, format!("Two capture instances already exist for source table '{schema}.{name}'. A table can have at most two capture instances. If you want to alter the configuration of the table, disable capture on one of the instances and then retry the operation.")));
        }
    }
    let mut instance = CaptureInstance {
        name: instance_name.clone(),
        object_id: 0,
        source_object_id: table.object_id,
        source_schema: table.schema.clone(),
        source_name: table.name.clone(),
        columns,
        index_columns,
        index_name: index.as_ref().map(|i| i.name.clone()),
        supports_net_changes: net,
        role_name: role,
        filegroup_name: args.get_str("filegroup_name", 7),
        create_date: ctx.now(),
        ct_storage_key: Vec::new(),
    };
    ctx.run(&tables::change_table_ddl(&instance), &[])?;
    let ct = engine
        .table(&db, "cdc", &instance.ct_table_name())
        .ok_or_else(|| {
            err(
                22830,
                format!(
                    "Could not create the change table for capture instance '{instance_name}'."
                ),
            )
        })?;
    instance.object_id = ct.object_id;
    instance.ct_storage_key = ct.storage_key.clone();
    let def = Arc::new(instance);
    let first_in_db;
    {
        // Under the commit lock: every transaction that commits after this point has a
        // larger commit LSN than start_lsn and is captured by the new instance.
        let _commit = engine.inner.store.commit_lock.lock();
        let mut s = state.lock();
        let start_lsn = engine.allocate_lsn(&db).ok_or_else(|| not_enabled(&db))?;
        first_in_db = s.instances.is_empty() && !s.jobs_created;
        s.jobs_created = true;
        let entry = InstanceEntry {
            def: def.clone(),
            start_lsn,
        };
        let row = tables::change_tables_row(&entry);
        let mut writes = vec![DirectWrite::Put {
            table: s.handles.change_tables.object_id,
            key: s.handles.change_tables.key(&row),
            row: row.into(),
        }];
        for (table_name, rows) in [
            ("captured_columns", tables::captured_column_rows(&def)),
            ("index_columns", tables::index_column_rows(&def)),
        ] {
            if let Some(h) = TableHandle::lookup(&engine, &db, "cdc", table_name) {
                for r in rows {
                    writes.push(DirectWrite::Put {
                        table: h.object_id,
                        key: h.key(&r),
                        row: r.into(),
                    });
                }
            }
        }
        tables::install(&engine, writes);
        s.instances.push(entry);
    }
    engine.set_tracked_by_cdc(&db, table.object_id, true)?;
    if first_in_db {
        let id = state.lock().database_id;
        write_job_rows(&engine, id, &JobSettings::default());
        let _ = sink.info(0, &format!("Job 'cdc.{db}_capture' started successfully."));
        let _ = sink.info(0, &format!("Job 'cdc.{db}_cleanup' started successfully."));
    }
    Ok(0)
}

fn disable_table(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(
        args,
        "sys.sp_cdc_disable_table",
        &["source_schema", "source_name", "capture_instance"],
    )?;
    for (name, pos) in [
        ("source_schema", 0),
        ("source_name", 1),
        ("capture_instance", 2),
    ] {
        if !supplied(args, name, pos) {
            return Err(err(201, format!("Procedure or function 'sp_cdc_disable_table' expects parameter '@{name}', which was not supplied.")));
        }
    }
    let db = ctx.database();
    let state = state_of(cdc, ctx)?;
    let schema = args.get_str("source_schema", 0).unwrap_or_default();
    let name = args.get_str("source_name", 1).unwrap_or_default();
    let which = args.get_str("capture_instance", 2).unwrap_or_default();
    let table = ctx.engine().table(&db, &schema, &name).ok_or_else(|| {
        err(22931, format!("Source table '{schema}.{name}' does not exist in the current database. Ensure that the correct database context is set. Specify a valid schema and table name for the database."))
    })?;
    let names: Vec<String> = state
        .lock()
        .instances
        .iter()
        .filter(|i| i.def.source_object_id == table.object_id)
        .filter(|i| which.eq_ignore_ascii_case("all") || i.def.name.eq_ignore_ascii_case(&which))
        .map(|i| i.def.name.clone())
        .collect();
    if names.is_empty() {
        return Err(err(22960, format!("Change data capture instance '{which}' has not been enabled for the source table '{schema}.{name}'. Use sys.sp_cdc_help_change_data_capture to verify the capture instance name and retry the operation.")));
    }
    for n in names {
        drop_instance(ctx, &state, &n)?;
    }
    Ok(0)
}

fn help_change_data_capture(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(
        args,
        "sys.sp_cdc_help_change_data_capture",
        &["source_schema", "source_name"],
    )?;
    let state = state_of(cdc, ctx)?;
    let schema = args.get_str("source_schema", 0);
    let name = args.get_str("source_name", 1);
    if schema.is_some() != name.is_some() {
        return Err(err(
            22972,
            "When calling stored procedure [sys].sp_cdc_help_change_data capture, if either @source_schema or @source_name is non-null and non-empty, the other parameter must also be non-null and non-empty.",
        ));
    }
    let instances: Vec<InstanceEntry> = state.lock().instances.clone();
    let mut rows = Vec::new();
    for e in instances {
        let d = &e.def;
        if let (Some(s), Some(n)) = (&schema, &name) {
            if !d.source_schema.eq_ignore_ascii_case(s) || !d.source_name.eq_ignore_ascii_case(n) {
                continue;
            }
        }
        rows.push(vec![
            tables::string(&d.source_schema),
            tables::string(&d.source_name),
            tables::string(&d.name),
            Value::Int(d.object_id),
            Value::Int(d.source_object_id),
            tables::lsn_value(e.start_lsn),
            Value::Null,
            Value::Bit(d.supports_net_changes),
            Value::Bit(false),
            tables::opt_string(d.role_name.as_deref()),
            tables::opt_string(d.index_name.as_deref()),
            tables::opt_string(d.filegroup_name.as_deref()),
            tables::datetime_value(d.create_date),
            tables::opt_string(d.index_column_list().as_deref()),
            tables::string(&d.captured_column_list()),
        ]);
    }
    let bin10 = SqlType::Binary { len: 10 };
    let maxn = SqlType::NVarChar {
        len: None,
        collation: crate::types::Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
    };
    let columns = [
        col("source_schema", sysname(), false),
        col("source_table", sysname(), false),
        col("capture_instance", sysname(), false),
        col("object_id", SqlType::Int, false),
        col("source_object_id", SqlType::Int, false),
        col("start_lsn", bin10.clone(), true),
        col("end_lsn", bin10, true),
        col("supports_net_changes", SqlType::Bit, true),
        col("has_drop_pending", SqlType::Bit, true),
        col("role_name", sysname(), true),
        col("index_name", sysname(), true),
        col("filegroup_name", sysname(), true),
        col("create_date", SqlType::DateTime, true),
        col("index_column_list", maxn.clone(), true),
        col("captured_column_list", maxn, true),
    ];
    emit(sink, &columns, &rows)?;
    Ok(0)
}

fn find_instance(state: &Mutex<DbState>, name: &str) -> Result<InstanceEntry, SqlError> {
    state.lock().instance(name).cloned().ok_or_else(|| {
        let database = state.lock().database.clone();
        err(
            22920,
            format!("The named capture instance {name} does not exist for database {database}."),
        )
    })
}

fn get_captured_columns(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(
        args,
        "sys.sp_cdc_get_captured_columns",
        &["capture_instance"],
    )?;
    let state = state_of(cdc, ctx)?;
    let name = args.get_str("capture_instance", 0).unwrap_or_default();
    let e = find_instance(&state, &name)?;
    let d = &e.def;
    let rows: Vec<Vec<Value>> = d
        .columns
        .iter()
        .map(|c| {
            let (max_len, precision, radix, scale, dt_precision) = type_facets(&c.ty);
            vec![
                tables::string(&d.source_schema),
                tables::string(&d.source_name),
                tables::string(&d.name),
                tables::string(&c.name),
                Value::Int(c.column_id),
                Value::Int(c.ordinal as i32),
                tables::string(crate::engine::value::base_type_name(&c.ty)),
                max_len.map_or(Value::Null, Value::Int),
                precision.map_or(Value::Null, Value::TinyInt),
                radix.map_or(Value::Null, Value::SmallInt),
                scale.map_or(Value::Null, Value::Int),
                dt_precision.map_or(Value::Null, Value::SmallInt),
            ]
        })
        .collect();
    let columns = [
        col("source_schema", sysname(), false),
        col("source_table", sysname(), false),
        col("capture_instance", sysname(), false),
        col("column_name", sysname(), false),
        col("column_id", SqlType::Int, true),
        col("ordinal_position", SqlType::Int, false),
        col("data_type", sysname(), false),
        col("character_maximum_length", SqlType::Int, true),
        col("numeric_precision", SqlType::TinyInt, true),
        col("numeric_precision_radix", SqlType::SmallInt, true),
        col("numeric_scale", SqlType::Int, true),
        col("datetime_precision", SqlType::SmallInt, true),
    ];
    emit(sink, &columns, &rows)?;
    Ok(0)
}

/// (character_maximum_length, numeric_precision, radix, numeric_scale, datetime_precision)
/// as INFORMATION_SCHEMA.COLUMNS shows them.
type TypeFacets = (
    Option<i32>,
    Option<u8>,
    Option<i16>,
    Option<i32>,
    Option<i16>,
);

fn type_facets(ty: &SqlType) -> TypeFacets {
    let len = |l: Option<u16>| Some(l.map_or(-1, i32::from));
    match ty {
        SqlType::Char { len: l, .. } | SqlType::Binary { len: l } => {
            (Some(*l as i32), None, None, None, None)
        }
        SqlType::NChar { len: l, .. } => (Some(*l as i32), None, None, None, None),
        SqlType::VarChar { len: l, .. }
        | SqlType::NVarChar { len: l, .. }
        | SqlType::VarBinary { len: l } => (len(*l), None, None, None, None),
        SqlType::Text { .. } | SqlType::Image => (Some(i32::MAX), None, None, None, None),
        SqlType::NText { .. } => (Some(i32::MAX / 2), None, None, None, None),
        SqlType::TinyInt => (None, Some(3), Some(10), Some(0), None),
        SqlType::SmallInt => (None, Some(5), Some(10), Some(0), None),
        SqlType::Int => (None, Some(10), Some(10), Some(0), None),
        SqlType::BigInt => (None, Some(19), Some(10), Some(0), None),
        SqlType::Decimal {
            precision, scale, ..
        } => (None, Some(*precision), Some(10), Some(*scale as i32), None),
        SqlType::Money => (None, Some(19), Some(10), Some(4), None),
        SqlType::SmallMoney => (None, Some(10), Some(10), Some(4), None),
        SqlType::Real => (None, Some(24), Some(2), None, None),
        SqlType::Float => (None, Some(53), Some(2), None, None),
        SqlType::Date => (None, None, None, None, Some(0)),
        SqlType::DateTime => (None, None, None, None, Some(3)),
        SqlType::SmallDateTime => (None, None, None, None, Some(0)),
        SqlType::Time { scale }
        | SqlType::DateTime2 { scale }
        | SqlType::DateTimeOffset { scale } => (None, None, None, None, Some(*scale as i16)),
        _ => (None, None, None, None, None),
    }
}

fn get_ddl_history(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_cdc_get_ddl_history", &["capture_instance"])?;
    let state = state_of(cdc, ctx)?;
    let name = args.get_str("capture_instance", 0).unwrap_or_default();
    let e = find_instance(&state, &name)?;
    let results = ctx.run(
        "SELECT required_column_update, ddl_command, ddl_lsn, ddl_time FROM cdc.ddl_history WHERE object_id = @ct ORDER BY ddl_lsn",
        &[("@ct", Value::Int(e.def.object_id))],
    )?;
    let rows: Vec<Vec<Value>> = results
        .into_iter()
        .next()
        .map(|r| r.rows)
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let mut out = vec![
                tables::string(&e.def.source_schema),
                tables::string(&e.def.source_name),
                tables::string(&e.def.name),
            ];
            out.extend(r);
            out
        })
        .collect();
    let columns = [
        col("source_schema", sysname(), false),
        col("source_table", sysname(), false),
        col("capture_instance", sysname(), false),
        col("required_column_update", SqlType::Bit, true),
        col(
            "ddl_command",
            SqlType::NVarChar {
                len: None,
                collation: crate::types::Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
            },
            true,
        ),
        col("ddl_lsn", SqlType::Binary { len: 10 }, false),
        col("ddl_time", SqlType::DateTime, true),
    ];
    emit(sink, &columns, &rows)?;
    Ok(0)
}

fn job_type(args: &ProcArgs, position: usize) -> Result<&'static str, SqlError> {
    match args.get_str("job_type", position).map(|s| s.trim().to_lowercase()).as_deref() {
        None | Some("capture") => Ok("capture"),
        Some("cleanup") => Ok("cleanup"),
        Some(other) => Err(err(22992, format!("The specified @job_type, {other}, is not supported. The value specified for the parameter @job_type must be N'capture' to indicate a capture job, or N'cleanup' to indicate a cleanup job."))),
    }
}

fn ensure_jobs_table(engine: &Engine) {
    if engine.table("msdb", "dbo", "cdc_jobs").is_none() {
        let _ = engine.run("msdb", tables::CDC_JOBS_DDL);
    }
}

/// Writes the job settings to msdb.dbo.cdc_jobs: the rows are created once (job ids stay the
/// same afterwards, as SQL Server's jobs keep theirs) and updated in place.
fn write_job_rows(engine: &Engine, database_id: i32, jobs: &JobSettings) {
    ensure_jobs_table(engine);
    let sql = format!(
        "UPDATE dbo.cdc_jobs SET maxtrans = {}, maxscans = {}, continuous = {}, pollinginterval = {} \
           WHERE database_id = {id} AND job_type = N'capture'; \
         UPDATE dbo.cdc_jobs SET retention = {}, threshold = {} WHERE database_id = {id} AND job_type = N'cleanup'; \
         IF NOT EXISTS (SELECT 1 FROM dbo.cdc_jobs WHERE database_id = {id}) \
         INSERT INTO dbo.cdc_jobs (database_id, job_type, job_id, maxtrans, maxscans, continuous, pollinginterval, retention, threshold) VALUES \
         ({id}, N'capture', NEWID(), {0}, {1}, {2}, {3}, 0, 0), ({id}, N'cleanup', NEWID(), 0, 0, 0, 0, {4}, {5})",
        jobs.maxtrans,
        jobs.maxscans,
        u8::from(jobs.continuous),
        jobs.pollinginterval,
        jobs.retention,
        jobs.threshold,
        id = database_id
    );
    let _ = engine.run("msdb", &sql);
}

fn delete_job_rows(engine: &Engine, database_id: i32) {
    if engine.table("msdb", "dbo", "cdc_jobs").is_some() {
        let _ = engine.run(
            "msdb",
            &format!("DELETE FROM dbo.cdc_jobs WHERE database_id = {database_id}"),
        );
    }
}

fn change_job(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(
        args,
        "sys.sp_cdc_change_job",
        &[
            "job_type",
            "maxtrans",
            "maxscans",
            "continuous",
            "pollinginterval",
            "retention",
            "threshold",
        ],
    )?;
    let state = state_of(cdc, ctx)?;
    let kind = job_type(args, 0)?;
    let get = |name: &str| args.get(name, usize::MAX).filter(|v| **v != Value::Null);
    if kind == "capture" {
        if let Some(bad) = ["retention", "threshold"]
            .into_iter()
            .find(|&n| get(n).is_some())
        {
            return Err(err(22995, format!("A value for the parameter @{bad} cannot be specified when the job type is 'capture'. Specify NULL for the parameter, or omit the parameter from the statement.")));
        }
    } else if ["maxtrans", "maxscans", "continuous", "pollinginterval"]
        .into_iter()
        .any(|n| get(n).is_some())
    {
        return Err(err(22996, "When adding or modifying the CDC cleanup job, @pollinginterval, @maxtrans, @maxscans, and @continuous may not be assigned non-null values."));
    }
    if !state.lock().jobs_created {
        return Err(err(22997, format!("The Change Data Capture '{kind}' job does not exist in the system table 'msdb.dbo.cdc_jobs'. Use the stored procedure 'sys.sp_cdc_add_job' to add the Change Data Capture job.")));
    }
    let number = |name: &str| -> Result<Option<i64>, SqlError> {
        get(name)
            .map(|v| {
                as_i64(v).ok_or_else(|| {
                    err(
                        8114,
                        format!("Error converting the value of @{name} to bigint."),
                    )
                })
            })
            .transpose()
    };
    let (id, jobs) = {
        let mut s = state.lock();
        let mut jobs = s.jobs.clone();
        if let Some(v) = number("maxtrans")? {
            if v <= 0 {
                return Err(err(
                    22991,
                    "The value specified for the parameter @maxtrans must be greater than 0.",
                ));
            }
            jobs.maxtrans = v;
        }
        if let Some(v) = number("maxscans")? {
            if v <= 0 {
                return Err(err(22970, "The value for parameter @maxscans specified for the Change Data Capture job must be greater than 0."));
            }
            jobs.maxscans = v;
        }
        if let Some(v) = get("continuous") {
            jobs.continuous = as_bool(v).unwrap_or(true);
        }
        if let Some(v) = number("pollinginterval")? {
            if !(0..=86_400).contains(&v) {
                return Err(err(22990, "The value specified for the parameter @pollinginterval cannot exceed 24 hours or be less than 0. Specify a polling interval (in seconds) that is less than or equal to 24 hours (86,400 seconds)."));
            }
            jobs.pollinginterval = v;
        }
        if let Some(v) = number("retention")? {
            if !(1..=52_494_800).contains(&v) {
                return Err(err(22994, "The retention value specified for the Change Data Capture cleanup process must be greater than 0 and less than or equal to 52594800. When creating or modifying the cleanup job, specify a retention value (in minutes) that is within that range."));
            }
            jobs.retention = v;
        }
        if let Some(v) = number("threshold")? {
            if v <= 0 {
                return Err(err(22850, "The threshold value specified for the Change Data Capture cleanup process must be greater than 0. When creating or modifying the cleanup job, specify a positive threshold value."));
            }
            jobs.threshold = v;
        }
        s.jobs = jobs.clone();
        (s.database_id, jobs)
    };
    write_job_rows(ctx.engine(), id, &jobs);
    Ok(0)
}

fn start_job(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_cdc_start_job", &["job_type"])?;
    let _ = state_of(cdc, ctx)?;
    if job_type(args, 0)? == "capture" {
        cdc.set_capture_running(&ctx.database(), true)?;
    }
    Ok(0)
}

fn stop_job(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_cdc_stop_job", &["job_type"])?;
    let _ = state_of(cdc, ctx)?;
    if job_type(args, 0)? == "capture" {
        cdc.set_capture_running(&ctx.database(), false)?;
    }
    Ok(0)
}

fn help_jobs(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_cdc_help_jobs", &[])?;
    let state = state_of(cdc, ctx)?;
    let (db, database_id, created) = {
        let s = state.lock();
        (s.database.clone(), s.database_id, s.jobs_created)
    };
    // The rows of msdb.dbo.cdc_jobs (same job ids); none before the first table is enabled.
    let mut rows = Vec::new();
    if created {
        let result = ctx.engine().run(
            "msdb",
            &format!(
                "SELECT job_id, job_type, maxtrans, maxscans, continuous, pollinginterval, retention, threshold \
                 FROM dbo.cdc_jobs WHERE database_id = {database_id} ORDER BY job_type"
            ),
        )?;
        for r in result.into_iter().flat_map(|q| q.rows) {
            let mut r = r.to_vec();
            let job_type = match &r[1] {
                Value::String(t) => t.to_string(),
                _ => String::new(),
            };
            r.insert(2, tables::string(&format!("cdc.{db}_{job_type}")));
            rows.push(r);
        }
    }
    let columns = [
        col("job_id", SqlType::UniqueIdentifier, true),
        col(
            "job_type",
            SqlType::NVarChar {
                len: Some(20),
                collation: crate::types::Collation::SQL_LATIN1_GENERAL_CP1_CI_AS,
            },
            false,
        ),
        col("job_name", sysname(), false),
        col("maxtrans", SqlType::Int, true),
        col("maxscans", SqlType::Int, true),
        col("continuous", SqlType::Bit, true),
        col("pollinginterval", SqlType::BigInt, true),
        col("retention", SqlType::BigInt, true),
        col("threshold", SqlType::BigInt, true),
    ];
    emit(sink, &columns, &rows)?;
    Ok(0)
}

fn scan(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(
        args,
        "sys.sp_cdc_scan",
        &["maxtrans", "maxscans", "continuous", "pollinginterval"],
    )?;
    let state = state_of(cdc, ctx)?;
    let jobs = state.lock().jobs.clone();
    let maxtrans = args
        .get("maxtrans", 0)
        .and_then(as_i64)
        .unwrap_or(jobs.maxtrans)
        .max(1);
    let maxscans = args
        .get("maxscans", 1)
        .and_then(as_i64)
        .unwrap_or(jobs.maxscans)
        .max(1);
    for _ in 0..maxscans {
        let outcome = capture::scan(ctx.engine(), &state, maxtrans as usize, false);
        if outcome.transactions < maxtrans as usize {
            break;
        }
    }
    Ok(0)
}

fn cleanup_change_table(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    _sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(
        args,
        "sys.sp_cdc_cleanup_change_table",
        &[
            "capture_instance",
            "low_water_mark",
            "threshold",
            "fcleanupfailed",
        ],
    )?;
    let state = state_of(cdc, ctx)?;
    let name = args.get_str("capture_instance", 0).unwrap_or_default();
    let entry = find_instance(&state, &name)?;
    let watermark = match args.get("low_water_mark", 1) {
        None | Some(Value::Null) => state.lock().max_lsn().unwrap_or(entry.start_lsn),
        Some(v) => as_lsn(v).ok_or_else(|| {
            err(
                22964,
                "The value of @low_water_mark must be a binary(10) LSN.",
            )
        })?,
    };
    capture::cleanup_instances(
        ctx.engine(),
        &state,
        Some(entry.def.name.as_str()),
        watermark,
        &cdc.config(),
    )?;
    Ok(0)
}

/// `EXEC sys.sp_standin_cdc_control @action = N'scan' | N'heartbeat' | N'cleanup' | N'pause' |
/// N'resume' | N'mode', @value = …` — the control API for out-of-process tests. Not a SQL
/// Server procedure.
fn standin_control(
    cdc: &Cdc,
    ctx: &mut ProcContext<'_>,
    args: &ProcArgs,
    sink: &mut dyn ResultSink,
) -> Result<i32, SqlError> {
    check_params(args, "sys.sp_standin_cdc_control", &["action", "value"])?;
    let db = ctx.database();
    let action = args.get_str("action", 0).unwrap_or_default().to_lowercase();
    let value = args.get("value", 1).cloned().unwrap_or(Value::Null);
    let lsn: Option<Lsn> = match action.as_str() {
        "scan" => {
            cdc.scan(&db, as_i64(&value).map(|n| n as usize))?;
            None
        }
        "heartbeat" => Some(cdc.heartbeat(&db)?),
        "cleanup" => match &value {
            Value::Null => cdc.cleanup_by_retention(&db)?,
            v => {
                let watermark = as_lsn(v).ok_or_else(|| {
                    err(
                        22964,
                        "@value must be a binary(10) LSN for action 'cleanup'.",
                    )
                })?;
                cdc.cleanup_to_watermark(&db, None, watermark)?;
                Some(watermark)
            }
        },
        "pause" => {
            cdc.set_capture_running(&db, false)?;
            None
        }
        "resume" => {
            cdc.set_capture_running(&db, true)?;
            None
        }
        "mode" => {
            let mode =
                match value {
                    Value::String(s) if s.eq_ignore_ascii_case("synchronous") => {
                        CaptureMode::Synchronous
                    }
                    Value::String(s) if s.eq_ignore_ascii_case("agent") => CaptureMode::Agent,
                    Value::String(s) if s.eq_ignore_ascii_case("manual") => CaptureMode::Manual,
                    _ => return Err(err(
                        50000,
                        "@value must be N'synchronous', N'agent' or N'manual' for action 'mode'.",
                    )),
                };
            cdc.set_mode(&db, mode)?;
            None
        }
        other => {
            return Err(err(
                50000,
                format!(
                "Unknown @action '{other}': use scan, heartbeat, cleanup, pause, resume or mode."
            ),
            ))
        }
    };
    emit(
        sink,
        &[col("lsn", SqlType::Binary { len: 10 }, true)],
        &[vec![tables::opt_lsn_value(lsn)]],
    )?;
    Ok(0)
}
