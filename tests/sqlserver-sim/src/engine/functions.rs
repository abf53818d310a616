//! Built-in scalar functions: binding (argument checks and result types) and evaluation.

use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate, Timelike};
use md5::Digest;

use super::eval::{eval, BExpr, Binder, Bound, Env};
use super::value::{self, err, nvarchar, sysname, varchar, ValueExt};
use crate::api::SqlError;
use crate::types::{SqlType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Version,
    ServerName,
    Spid,
    TranCount,
    RowCount,
    Identity,
    ScopeIdentity,
    IdentCurrent,
    Error,
    LockTimeout,
    DbName,
    DbId,
    SchemaName,
    SchemaId,
    ObjectId,
    ObjectName,
    ObjectSchemaName,
    SuserSname,
    UserName,
    IsSrvRoleMember,
    IsMember,
    HasPermsByName,
    ServerProperty,
    DatabasePropertyEx,
    ColLength,
    TypeName,
    TypeId,
    NewId,
    EventData,
    NextValueFor,
    XactState,
    ErrorNumber,
    ErrorMessage,
    ErrorSeverity,
    ErrorState,
    ErrorLine,
    ErrorProcedure,
    HostName,
    AppName,
    IsNull,
    Coalesce,
    NullIf,
    Iif,
    Len,
    DataLength,
    Upper,
    Lower,
    LTrim,
    RTrim,
    Trim,
    Substring,
    Left,
    Right,
    Replace,
    CharIndex,
    Concat,
    ConcatWs,
    QuoteName,
    Replicate,
    Reverse,
    Stuff,
    Space,
    Char,
    NChar,
    Ascii,
    Unicode,
    GetDate,
    GetUtcDate,
    SysDateTime,
    SysUtcDateTime,
    SysDateTimeOffset,
    DateAdd,
    DateDiff,
    DateDiffBig,
    DatePart,
    Year,
    Month,
    Day,
    DateFromParts,
    ToDateTimeOffset,
    Abs,
    Ceiling,
    Floor,
    Round,
    Power,
    Sqrt,
    Sign,
    Rand,
    HashBytes,
    Checksum,
    BinaryChecksum,
}

pub fn takes_datepart(name: &str) -> bool {
    matches!(
        name,
        "dateadd" | "datediff" | "datediff_big" | "datepart" | "datename"
    )
}

fn need(name: &str, args: &[Bound], min: usize, max: usize) -> Result<(), SqlError> {
    if args.len() < min || args.len() > max {
        if min == max {
            return Err(err(
                174,
                format!("The {name} function requires {min} argument(s)."),
            ));
        }
        return Err(err(
            189,
            format!("The {name} function requires {min} to {max} arguments."),
        ));
    }
    Ok(())
}

/// Binds a built-in function call (name lower-case, `@@x` for globals).
pub fn bind_builtin(name: &str, args: Vec<Bound>, _binder: &mut Binder) -> Result<Bound, SqlError> {
    use Func::*;
    let t0 = args.first().map(|a| a.1.clone()).unwrap_or(SqlType::Null);
    let n0 = args.first().map(|a| a.2).unwrap_or(true);
    let str_len_type = |t: &SqlType| -> SqlType {
        if value::is_lob_type(t) {
            SqlType::BigInt
        } else {
            SqlType::Int
        }
    };
    let same_string = |t: &SqlType| -> SqlType {
        match t {
            SqlType::Char { len, collation } => SqlType::VarChar {
                len: Some(*len),
                collation: *collation,
            },
            SqlType::NChar { len, collation } => SqlType::NVarChar {
                len: Some(*len),
                collation: *collation,
            },
            SqlType::Text { .. } => varchar(None),
            SqlType::NText { .. } => nvarchar(None),
            t if value::is_string_type(t) => t.clone(),
            _ => varchar(Some(value::string_len_of(t).unwrap_or(30))),
        }
    };
    let (f, ty, nullable): (Func, SqlType, bool) = match name {
        "@@version" => (Version, nvarchar(Some(300)), false),
        "@@servername" => (ServerName, sysname(), true),
        "@@spid" => (Spid, SqlType::SmallInt, false),
        "@@trancount" => (TranCount, SqlType::Int, false),
        "@@rowcount" => (RowCount, SqlType::Int, false),
        "@@identity" => (Identity, value::decimal(38, 0), true),
        "@@error" => (Error, SqlType::Int, false),
        "@@lock_timeout" => (LockTimeout, SqlType::Int, false),
        "scope_identity" => (ScopeIdentity, value::decimal(38, 0), true),
        "ident_current" => {
            need(name, &args, 1, 1)?;
            (IdentCurrent, value::decimal(38, 0), true)
        }
        "db_name" => {
            need(name, &args, 0, 1)?;
            (DbName, sysname(), true)
        }
        "db_id" => {
            need(name, &args, 0, 1)?;
            (DbId, SqlType::SmallInt, true)
        }
        "schema_name" => (SchemaName, sysname(), true),
        "schema_id" => (SchemaId, SqlType::Int, true),
        "object_id" => {
            need(name, &args, 1, 2)?;
            (ObjectId, SqlType::Int, true)
        }
        "object_name" => {
            need(name, &args, 1, 2)?;
            (ObjectName, sysname(), true)
        }
        "object_schema_name" => {
            need(name, &args, 1, 2)?;
            (ObjectSchemaName, sysname(), true)
        }
        "suser_sname" | "suser_name" | "system_user" | "original_login" => {
            (SuserSname, sysname(), true)
        }
        "user_name" | "current_user" | "session_user" | "user" => (UserName, sysname(), true),
        "is_srvrolemember" => (IsSrvRoleMember, SqlType::Int, true),
        "is_member" | "is_rolemember" => (IsMember, SqlType::Int, true),
        "has_perms_by_name" => (HasPermsByName, SqlType::Int, true),
        "serverproperty" => {
            need(name, &args, 1, 1)?;
            (ServerProperty, SqlType::SqlVariant, true)
        }
        "databasepropertyex" => {
            need(name, &args, 2, 2)?;
            (DatabasePropertyEx, SqlType::SqlVariant, true)
        }
        "col_length" => (ColLength, SqlType::SmallInt, true),
        "type_name" => (TypeName, sysname(), true),
        "type_id" => (TypeId, SqlType::Int, true),
        "newid" | "newsequentialid" => (NewId, SqlType::UniqueIdentifier, false),
        "eventdata" => (EventData, SqlType::Xml, true),
        "__next_value_for" => (NextValueFor, SqlType::BigInt, false),
        "xact_state" => (XactState, SqlType::SmallInt, false),
        "error_number" => (ErrorNumber, SqlType::Int, true),
        "error_message" => (ErrorMessage, nvarchar(Some(4000)), true),
        "error_severity" => (ErrorSeverity, SqlType::Int, true),
        "error_state" => (ErrorState, SqlType::Int, true),
        "error_line" => (ErrorLine, SqlType::Int, true),
        "error_procedure" => (ErrorProcedure, nvarchar(Some(128)), true),
        "host_name" => (HostName, nvarchar(Some(128)), true),
        "app_name" => (AppName, nvarchar(Some(128)), true),
        "isnull" => {
            need(name, &args, 2, 2)?;
            (
                IsNull,
                if matches!(t0, SqlType::Null) {
                    args[1].1.clone()
                } else {
                    t0.clone()
                },
                n0 && args[1].2,
            )
        }
        "coalesce" => {
            if args.len() < 2 {
                return Err(err(174, "The coalesce function requires 2 argument(s)."));
            }
            let ty = args
                .iter()
                .fold(SqlType::Null, |acc, a| value::common_type(&acc, &a.1));
            (Coalesce, ty, args.iter().all(|a| a.2))
        }
        "nullif" => {
            need(name, &args, 2, 2)?;
            (NullIf, t0.clone(), true)
        }
        "iif" => {
            need(name, &args, 3, 3)?;
            (
                Iif,
                value::common_type(&args[1].1, &args[2].1),
                args[1].2 || args[2].2,
            )
        }
        "len" => {
            need(name, &args, 1, 1)?;
            (Len, str_len_type(&t0), n0)
        }
        "datalength" => {
            need(name, &args, 1, 1)?;
            (DataLength, str_len_type(&t0), n0)
        }
        "upper" => (Upper, same_string(&t0), n0),
        "lower" => (Lower, same_string(&t0), n0),
        "ltrim" => (LTrim, same_string(&t0), n0),
        "rtrim" => (RTrim, same_string(&t0), n0),
        "trim" => (Trim, same_string(&t0), n0),
        "substring" => {
            need(name, &args, 3, 3)?;
            let ty = if value::is_binary_type(&t0) {
                SqlType::VarBinary {
                    len: match t0 {
                        SqlType::Binary { len } => Some(len),
                        SqlType::VarBinary { len } => len,
                        _ => None,
                    },
                }
            } else {
                same_string(&t0)
            };
            (Substring, ty, true)
        }
        "left" => (Left, same_string(&t0), true),
        "right" => (Right, same_string(&t0), true),
        "replace" => {
            need(name, &args, 3, 3)?;
            let unicode = args.iter().any(|a| value::is_unicode_type(&a.1));
            let max = value::is_lob_type(&t0);
            (
                Replace,
                if unicode {
                    nvarchar(if max { None } else { Some(4000) })
                } else {
                    varchar(if max { None } else { Some(8000) })
                },
                true,
            )
        }
        "charindex" => {
            need(name, &args, 2, 3)?;
            (
                CharIndex,
                if args.iter().take(2).any(|a| value::is_lob_type(&a.1)) {
                    SqlType::BigInt
                } else {
                    SqlType::Int
                },
                true,
            )
        }
        "concat" | "concat_ws" => {
            if args.len() < 2 {
                return Err(err(
                    189,
                    format!("The {name} function requires 2 to 254 arguments."),
                ));
            }
            let unicode = args.iter().any(|a| value::is_unicode_type(&a.1));
            let total: Option<u32> = args.iter().try_fold(0u32, |acc, a| {
                if value::is_lob_type(&a.1) {
                    None
                } else {
                    Some(acc + value::string_len_of(&a.1).unwrap_or(30) as u32)
                }
            });
            let limit = if unicode { 4000 } else { 8000 };
            let len = total.filter(|t| *t <= limit).map(|t| t.max(1) as u16);
            (
                if name == "concat" { Concat } else { ConcatWs },
                if unicode { nvarchar(len) } else { varchar(len) },
                false,
            )
        }
        "quotename" => (QuoteName, nvarchar(Some(258)), true),
        "replicate" => (
            Replicate,
            if value::is_unicode_type(&t0) {
                nvarchar(Some(4000))
            } else {
                varchar(Some(8000))
            },
            true,
        ),
        "reverse" => (Reverse, same_string(&t0), n0),
        "stuff" => (Stuff, same_string(&t0), true),
        "space" => (Space, varchar(Some(8000)), true),
        "char" => (
            Char,
            SqlType::Char {
                len: 1,
                collation: value::DEFAULT_COLLATION,
            },
            true,
        ),
        "nchar" => (
            NChar,
            SqlType::NChar {
                len: 1,
                collation: value::DEFAULT_COLLATION,
            },
            true,
        ),
        "ascii" => (Ascii, SqlType::Int, true),
        "unicode" => (Unicode, SqlType::Int, true),
        "getdate" | "current_timestamp" => (GetDate, SqlType::DateTime, false),
        "getutcdate" => (GetUtcDate, SqlType::DateTime, false),
        "sysdatetime" => (SysDateTime, SqlType::DateTime2 { scale: 7 }, false),
        "sysutcdatetime" => (SysUtcDateTime, SqlType::DateTime2 { scale: 7 }, false),
        "sysdatetimeoffset" => (
            SysDateTimeOffset,
            SqlType::DateTimeOffset { scale: 7 },
            false,
        ),
        "dateadd" => {
            need(name, &args, 3, 3)?;
            let t = &args[2].1;
            let ty = if value::is_string_type(t) {
                SqlType::DateTime
            } else {
                t.clone()
            };
            (DateAdd, ty, args[2].2 || args[1].2)
        }
        "datediff" => {
            need(name, &args, 3, 3)?;
            (DateDiff, SqlType::Int, true)
        }
        "datediff_big" => {
            need(name, &args, 3, 3)?;
            (DateDiffBig, SqlType::BigInt, true)
        }
        "datepart" => {
            need(name, &args, 2, 2)?;
            (DatePart, SqlType::Int, true)
        }
        "year" => (Year, SqlType::Int, n0),
        "month" => (Month, SqlType::Int, n0),
        "day" => (Day, SqlType::Int, n0),
        "datefromparts" => (DateFromParts, SqlType::Date, true),
        "todatetimeoffset" => {
            need(name, &args, 2, 2)?;
            let scale = match &t0 {
                SqlType::DateTime2 { scale } | SqlType::DateTimeOffset { scale } => *scale,
                SqlType::DateTime => 3,
                _ => 7,
            };
            (ToDateTimeOffset, SqlType::DateTimeOffset { scale }, true)
        }
        "abs" => (Abs, t0.clone(), n0),
        "ceiling" => (Ceiling, round_type(&t0), n0),
        "floor" => (Floor, round_type(&t0), n0),
        "round" => (Round, round_type(&t0), n0),
        "power" => (
            Power,
            match &t0 {
                SqlType::Decimal { scale, .. } => value::decimal(38, *scale),
                SqlType::Real | SqlType::Float => SqlType::Float,
                SqlType::BigInt => SqlType::BigInt,
                SqlType::Money | SqlType::SmallMoney => SqlType::Money,
                _ => SqlType::Int,
            },
            true,
        ),
        "sqrt" => (Sqrt, SqlType::Float, true),
        "sign" => (Sign, round_type(&t0), n0),
        "rand" => (Rand, SqlType::Float, false),
        "hashbytes" => {
            need(name, &args, 2, 2)?;
            (HashBytes, SqlType::VarBinary { len: Some(8000) }, true)
        }
        "checksum" => (Checksum, SqlType::Int, false),
        "binary_checksum" => (BinaryChecksum, SqlType::Int, false),
        other => {
            return Err(err(
                195,
                format!("'{other}' is not a recognized built-in function name."),
            ));
        }
    };
    if matches!(f, Checksum | BinaryChecksum) {
        let exprs = checksum_args(f, args)?;
        return Ok((BExpr::Func(f, exprs, ty.clone()), ty, nullable));
    }
    let mut exprs: Vec<BExpr> = Vec::with_capacity(args.len());
    for (idx, (e, t, _)) in args.into_iter().enumerate() {
        // varchar data is hashed/measured as code-page bytes, nvarchar as UTF-16LE: turn
        // non-Unicode strings into their bytes here, where the type is known.
        let bytes_arg = (f == HashBytes && idx == 1) || f == DataLength;
        if bytes_arg && value::is_string_type(&t) && !value::is_unicode_type(&t) {
            exprs.push(BExpr::Cast {
                expr: Box::new(e),
                ty: SqlType::VarBinary { len: None },
                style: 0,
                try_: false,
                src_scale: None,
            });
        } else {
            exprs.push(e);
        }
    }
    Ok((BExpr::Func(f, exprs, ty.clone()), ty, nullable))
}

fn round_type(t: &SqlType) -> SqlType {
    match t {
        SqlType::Decimal {
            precision,
            scale,
            numeric,
        } => SqlType::Decimal {
            precision: *precision,
            scale: *scale,
            numeric: *numeric,
        },
        SqlType::TinyInt | SqlType::SmallInt | SqlType::Bit => SqlType::Int,
        SqlType::Null => SqlType::Int,
        other => other.clone(),
    }
}

/// Functions that must not evaluate all their arguments up front.
pub fn eval_lazy(
    f: Func,
    args: &[BExpr],
    row: &[Value],
    env: &Env,
) -> Result<Option<Value>, SqlError> {
    Ok(match f {
        Func::Iif => {
            let c = super::eval::eval_cond(&args[0], row, env)?;
            Some(eval(if c { &args[1] } else { &args[2] }, row, env)?)
        }
        Func::Coalesce | Func::IsNull => {
            for a in args {
                let v = eval(a, row, env)?;
                if !v.is_null_value() {
                    return Ok(Some(v));
                }
            }
            Some(Value::Null)
        }
        _ => None,
    })
}

fn s(v: &Value) -> String {
    value::to_display_string(v)
}

fn i(v: &Value) -> Result<i64, SqlError> {
    match value::convert(v, &SqlType::BigInt, 0)? {
        Value::BigInt(x) => Ok(x),
        _ => Ok(0),
    }
}

fn str_val(x: String) -> Value {
    Value::String(Arc::from(x))
}

/// Evaluates a built-in function over evaluated arguments; `ty` is the bound result type.
pub fn call(f: Func, a: &[Value], ty: &SqlType, env: &Env) -> Result<Value, SqlError> {
    use Func::*;
    let core = env.core;
    let engine = &core.engine;
    let cfg = engine.config();
    let null_in = a.iter().any(|v| v.is_null_value());
    let result = match f {
        Version => str_val(format!(
            "Microsoft SQL Server 2022 (RTM-CU15) - {} (X64) \n\tStand-in for tests\n\t{} on Linux (dbsync stand-in)",
            cfg.product_version, cfg.edition
        )),
        ServerName => str_val(cfg.server_name.clone()),
        Spid => Value::SmallInt(core.spid as i16),
        TranCount => Value::Int(core.trancount() as i32),
        RowCount => Value::Int(core.rowcount as i32),
        Identity => core.last_identity.clone().map(|v| value::convert(&v, ty, 0)).transpose()?.unwrap_or(Value::Null),
        ScopeIdentity => core.scope_identity.clone().map(|v| value::convert(&v, ty, 0)).transpose()?.unwrap_or(Value::Null),
        IdentCurrent => {
            let name = s(&a[0]);
            match core.resolve_table_text(&name) {
                Ok(t) => match *t.runtime.identity_last.lock() {
                    Some(v) => Value::Decimal(v, 0),
                    None => t.columns.iter().find_map(|c| c.identity.as_ref()).map(|i| Value::Decimal(i.seed, 0)).unwrap_or(Value::Null),
                },
                Err(_) => Value::Null,
            }
        }
        Error => Value::Int(core.last_error),
        LockTimeout => Value::Int(core.opts.lock_timeout as i32),
        DbName => match a.first() {
            None => str_val(core.database.clone()),
            Some(Value::Null) => Value::Null,
            Some(v) => {
                let id = i(v)? as i32;
                engine.inner.catalog.read().values().find(|d| d.database_id == id).map(|d| str_val(d.name.clone())).unwrap_or(Value::Null)
            }
        },
        DbId => match a.first() {
            None => Value::SmallInt(core.database_id() as i16),
            Some(Value::Null) => Value::Null,
            Some(v) => engine.database_id(&s(v)).map(|id| Value::SmallInt(id as i16)).unwrap_or(Value::Null),
        },
        SchemaName => {
            let db = engine.database(&core.database);
            let id = match a.first() {
                None | Some(Value::Null) if a.is_empty() => 1,
                Some(Value::Null) => return Ok(Value::Null),
                Some(v) => i(v)? as i32,
                None => 1,
            };
            db.and_then(|d| d.schema_by_id(id).map(|s| str_val(s.name.clone()))).unwrap_or(Value::Null)
        }
        SchemaId => {
            let db = engine.database(&core.database);
            let name = a.first().map(s).unwrap_or_else(|| "dbo".into());
            db.and_then(|d| d.schema(&name).map(|s| Value::Int(s.schema_id))).unwrap_or(Value::Null)
        }
        ObjectId => {
            if null_in {
                Value::Null
            } else {
                let kind = a.get(1).map(|v| s(v).trim().to_uppercase());
                core.object_id_of(&s(&a[0]), kind.as_deref()).map(Value::Int).unwrap_or(Value::Null)
            }
        }
        ObjectName | ObjectSchemaName => {
            if null_in {
                Value::Null
            } else {
                let id = i(&a[0])? as i32;
                let db_name = match a.get(1) {
                    Some(v) => {
                        let dbid = i(v)? as i32;
                        engine.inner.catalog.read().values().find(|d| d.database_id == dbid).map(|d| d.name.clone())
                    }
                    None => Some(core.database.clone()),
                };
                match db_name.and_then(|n| core.object_by_id(&n, id)) {
                    Some((schema, name)) => str_val(if f == ObjectName { name } else { schema }),
                    None => Value::Null,
                }
            }
        }
        SuserSname => match a.first() {
            Some(Value::Binary(b)) if b.as_ref() != [1u8] => Value::Null,
            _ => str_val(if a.is_empty() { core.login.clone() } else { "sa".into() }),
        },
        UserName => str_val(if core.sysadmin { "dbo".into() } else { core.login.clone() }),
        IsSrvRoleMember => {
            let role = a.first().map(s).unwrap_or_default().to_lowercase();
            let known = ["sysadmin", "serveradmin", "securityadmin", "processadmin", "setupadmin", "bulkadmin", "diskadmin", "dbcreator", "public"];
            if !known.contains(&role.as_str()) {
                Value::Null
            } else {
                Value::Int((core.sysadmin || role == "public") as i32)
            }
        }
        IsMember => Value::Int(core.sysadmin as i32),
        HasPermsByName => Value::Int(core.sysadmin as i32),
        ServerProperty => {
            let p = a.first().map(s).unwrap_or_default().to_lowercase();
            let major = cfg.product_version.split('.').next().unwrap_or("16").to_string();
            match p.as_str() {
                "servername" | "machinename" => str_val(cfg.server_name.clone()),
                "instancename" => Value::Null,
                "productversion" => str_val(cfg.product_version.clone()),
                "productmajorversion" => str_val(major),
                "productminorversion" => str_val("0".into()),
                "productlevel" => str_val("RTM".into()),
                "productupdatelevel" => str_val("CU15".into()),
                "edition" => str_val(cfg.edition.clone()),
                "engineedition" => Value::Int(cfg.engine_edition),
                "collation" => str_val("SQL_Latin1_General_CP1_CI_AS".into()),
                "ishadrenabled" | "isclustered" | "issingleuser" | "isintegratedsecurityonly" => Value::Int(0),
                "isfulltextinstalled" => Value::Int(0),
                "processid" => Value::Int(std::process::id() as i32),
                _ => Value::Null,
            }
        }
        DatabasePropertyEx => {
            let db = engine.database(&s(&a[0]));
            let p = s(&a[1]).to_lowercase();
            match db {
                None => Value::Null,
                Some(d) => match p.as_str() {
                    "recovery" => str_val(d.recovery.desc().into()),
                    "status" => str_val("ONLINE".into()),
                    "updateability" => str_val("READ_WRITE".into()),
                    "collation" => str_val("SQL_Latin1_General_CP1_CI_AS".into()),
                    "isreadcommittedsnapshoton" => Value::Int(d.read_committed_snapshot as i32),
                    _ => Value::Null,
                },
            }
        }
        ColLength => {
            if null_in {
                Value::Null
            } else {
                match core.resolve_table_text(&s(&a[0])) {
                    Ok(t) => match t.column_index(&s(&a[1])) {
                        Some(c) => Value::SmallInt(value::storage_shape(&t.columns[c].ty).0),
                        None => Value::Null,
                    },
                    Err(_) => Value::Null,
                }
            }
        }
        TypeName => {
            let id = i(&a[0])? as i32;
            super::sysviews::builtin_types().into_iter().find(|(_, uid, _)| *uid == id).map(|(n, _, _)| str_val(n.into())).unwrap_or(Value::Null)
        }
        TypeId => {
            let n = s(&a[0]).to_lowercase();
            super::sysviews::builtin_types().into_iter().find(|(name, _, _)| *name == n).map(|(_, id, _)| Value::Int(id)).unwrap_or(Value::Null)
        }
        NewId => Value::Guid(*uuid::Uuid::new_v4().as_bytes()),
        EventData => core.event_data.clone().map(str_val).unwrap_or(Value::Null),
        NextValueFor => core.next_sequence_value(&s(&a[0]))?,
        XactState => Value::SmallInt(if core.txn.is_some() { 1 } else { 0 }),
        ErrorNumber => core.caught_error.as_ref().map(|e| Value::Int(e.number)).unwrap_or(Value::Null),
        ErrorMessage => core.caught_error.as_ref().map(|e| str_val(e.message.clone())).unwrap_or(Value::Null),
        ErrorSeverity => core.caught_error.as_ref().map(|e| Value::Int(e.class as i32)).unwrap_or(Value::Null),
        ErrorState => core.caught_error.as_ref().map(|e| Value::Int(e.state as i32)).unwrap_or(Value::Null),
        ErrorLine => core.caught_error.as_ref().map(|e| Value::Int(e.line as i32)).unwrap_or(Value::Null),
        ErrorProcedure => core.caught_error.as_ref().map(|e| if e.procedure.is_empty() { Value::Null } else { str_val(e.procedure.clone()) }).unwrap_or(Value::Null),
        HostName => str_val("standin-client".into()),
        AppName => str_val(core.app_name.clone()),
        NullIf => {
            if value::compare(&a[0], &a[1]) == Some(std::cmp::Ordering::Equal) {
                Value::Null
            } else {
                a[0].clone()
            }
        }
        IsNull | Coalesce | Iif => unreachable!("evaluated lazily"),
        _ if null_in && !matches!(f, Concat | ConcatWs | Checksum | BinaryChecksum) => Value::Null,
        Len => {
            let x = s(&a[0]);
            let n = if value::is_binary_type(&value::natural_type(&a[0])) { x.len() } else { x.trim_end_matches(' ').chars().count() };
            int_result(n as i64, ty)
        }
        DataLength => {
            let n = match &a[0] {
                // varchar arguments arrive as bytes (see bind_builtin); strings are nvarchar.
                Value::String(x) => x.encode_utf16().count() * 2,
                Value::Binary(b) => b.len(),
                other => value::storage_shape(&value::natural_type(other)).0.max(0) as usize,
            };
            int_result(n as i64, ty)
        }
        Upper => str_val(s(&a[0]).to_uppercase()),
        Lower => str_val(s(&a[0]).to_lowercase()),
        LTrim => str_val(s(&a[0]).trim_start_matches(' ').to_string()),
        RTrim => str_val(s(&a[0]).trim_end_matches(' ').to_string()),
        Trim => str_val(s(&a[0]).trim_matches(' ').to_string()),
        Substring => {
            let start = i(&a[1])?;
            let len = i(&a[2])?;
            if len < 0 {
                return Err(err(537, "Invalid length parameter passed to the LEFT or SUBSTRING function."));
            }
            let from = start.max(1);
            let to = (start + len).max(from);
            match &a[0] {
                Value::Binary(b) => {
                    let lo = ((from - 1) as usize).min(b.len());
                    let hi = ((to - 1) as usize).min(b.len());
                    Value::Binary(Arc::from(&b[lo..hi]))
                }
                v => str_val(s(v).chars().skip((from - 1) as usize).take((to - from) as usize).collect()),
            }
        }
        Left => {
            let n = i(&a[1])?;
            if n < 0 {
                return Err(err(537, "Invalid length parameter passed to the LEFT or SUBSTRING function."));
            }
            str_val(s(&a[0]).chars().take(n as usize).collect())
        }
        Right => {
            let n = i(&a[1])?.max(0) as usize;
            let x: Vec<char> = s(&a[0]).chars().collect();
            str_val(x[x.len().saturating_sub(n)..].iter().collect())
        }
        Replace => {
            let (x, from, to) = (s(&a[0]), s(&a[1]), s(&a[2]));
            if from.is_empty() {
                str_val(x)
            } else {
                str_val(replace_ci(&x, &from, &to))
            }
        }
        CharIndex => {
            let needle = s(&a[0]).to_lowercase();
            let hay: Vec<char> = s(&a[1]).to_lowercase().chars().collect();
            let start = a.get(2).map(i).transpose()?.unwrap_or(1).max(1) as usize;
            let nd: Vec<char> = needle.chars().collect();
            let mut pos = 0;
            if !nd.is_empty() && hay.len() >= nd.len() {
                for k in (start - 1)..=(hay.len() - nd.len()) {
                    if hay[k..k + nd.len()] == nd[..] {
                        pos = k + 1;
                        break;
                    }
                }
            }
            int_result(pos as i64, ty)
        }
        Concat => str_val(a.iter().map(s).collect::<String>()),
        ConcatWs => {
            let sep = s(&a[0]);
            str_val(a[1..].iter().filter(|v| !v.is_null_value()).map(s).collect::<Vec<_>>().join(&sep))
        }
        QuoteName => {
            let x = s(&a[0]);
            let q = a.get(1).map(s).unwrap_or_else(|| "[".into());
            if x.chars().count() > 128 {
                Value::Null
            } else {
                match q.as_str() {
                    "[" | "]" => str_val(format!("[{}]", x.replace(']', "]]"))),
                    "'" => str_val(format!("'{}'", x.replace('\'', "''"))),
                    "\"" => str_val(format!("\"{}\"", x.replace('"', "\"\""))),
                    _ => Value::Null,
                }
            }
        }
        Replicate => str_val(s(&a[0]).repeat(i(&a[1])?.max(0) as usize)),
        Reverse => str_val(s(&a[0]).chars().rev().collect()),
        Stuff => {
            let x: Vec<char> = s(&a[0]).chars().collect();
            let start = i(&a[1])? as usize;
            let len = i(&a[2])?.max(0) as usize;
            if start == 0 || start > x.len() {
                Value::Null
            } else {
                let mut out: String = x[..start - 1].iter().collect();
                out.push_str(&s(&a[3]));
                out.extend(x[(start - 1 + len).min(x.len())..].iter());
                str_val(out)
            }
        }
        Space => str_val(" ".repeat(i(&a[0])?.max(0) as usize)),
        Char | NChar => {
            let c = i(&a[0])?;
            char::from_u32(c as u32).map(|c| str_val(c.to_string())).unwrap_or(Value::Null)
        }
        Ascii | Unicode => s(&a[0]).chars().next().map(|c| Value::Int(c as i32)).unwrap_or(Value::Null),
        GetDate | SysDateTime | SysDateTimeOffset => {
            let now = cfg.clock.now_local();
            let (d, t) = value::parts_from_naive(&now);
            let offset = (cfg.clock.now_local() - cfg.clock.now_utc()).num_minutes() as i16;
            value::datetime_from_parts(d, t, offset, ty)?
        }
        GetUtcDate | SysUtcDateTime => {
            let (d, t) = value::parts_from_naive(&cfg.clock.now_utc());
            value::datetime_from_parts(d, t, 0, ty)?
        }
        DateAdd => date_add(&s(&a[0]), i(&a[1])?, &a[2], ty)?,
        DateDiff | DateDiffBig => {
            let n = date_diff(&s(&a[0]), &a[1], &a[2])?;
            if f == DateDiff && (n > i32::MAX as i64 || n < i32::MIN as i64) {
                return Err(err(535, "The datediff function resulted in an overflow. The number of dateparts separating two date/time instances is too large. Try to use datediff with a less precise datepart."));
            }
            if f == DateDiff {
                Value::Int(n as i32)
            } else {
                Value::BigInt(n)
            }
        }
        DatePart => Value::Int(date_part(&s(&a[0]), &a[1])? as i32),
        Year => Value::Int(date_part("year", &a[0])? as i32),
        Month => Value::Int(date_part("month", &a[0])? as i32),
        Day => Value::Int(date_part("day", &a[0])? as i32),
        DateFromParts => {
            let d = NaiveDate::from_ymd_opt(i(&a[0])? as i32, i(&a[1])? as u32, i(&a[2])? as u32).ok_or_else(|| err(289, "Cannot construct data type date, some of the arguments have values which are not valid."))?;
            let (days, _) = value::parts_from_naive(&d.and_hms_opt(0, 0, 0).expect("midnight"));
            Value::Date(days)
        }
        ToDateTimeOffset => {
            let (d, t, _) = value::datetime_parts(&value::convert(&a[0], &SqlType::DateTime2 { scale: 7 }, 0)?).ok_or_else(|| err(206, "Operand type clash."))?;
            let off = match &a[1] {
                Value::String(x) => {
                    let x = x.trim();
                    let sign = if x.starts_with('-') { -1 } else { 1 };
                    let body = x.trim_start_matches(['+', '-']);
                    let (h, m) = body.split_once(':').unwrap_or((body, "0"));
                    sign * (h.parse::<i16>().unwrap_or(0) * 60 + m.parse::<i16>().unwrap_or(0))
                }
                other => i(other)? as i16,
            };
            value::datetime_from_parts(d, t, off, ty)?
        }
        Abs => match &a[0] {
            Value::Int(x) => Value::Int(x.checked_abs().ok_or_else(|| err(8115, "Arithmetic overflow error converting expression to data type int."))?),
            Value::BigInt(x) => Value::BigInt(x.checked_abs().ok_or_else(|| err(8115, "Arithmetic overflow error converting expression to data type bigint."))?),
            Value::SmallInt(x) => Value::SmallInt(x.abs()),
            Value::Decimal(m, sc) => Value::Decimal(m.abs(), *sc),
            Value::Float(x) => Value::Float(x.abs()),
            Value::Real(x) => Value::Real(x.abs()),
            Value::Money(x) => Value::Money(x.abs()),
            other => other.clone(),
        },
        Ceiling | Floor | Round | Sign => {
            let digits = if f == Round { i(&a[1])? } else { 0 };
            let truncate = f == Round && a.get(2).map(i).transpose()?.unwrap_or(0) != 0;
            round_value(f, &a[0], digits, truncate, ty)?
        }
        Power => {
            let x = value::num_to_f64(value::to_num(&a[0]).unwrap_or(value::Num::Int(0)));
            let y = value::num_to_f64(value::to_num(&a[1]).unwrap_or(value::Num::Int(0)));
            value::convert(&Value::Float(x.powf(y)), ty, 0)?
        }
        Sqrt => Value::Float(value::num_to_f64(value::to_num(&value::convert(&a[0], &SqlType::Float, 0)?).unwrap_or(value::Num::Int(0))).sqrt()),
        Rand => Value::Float(rand_f64()),
        HashBytes => {
            let alg = s(&a[0]).to_uppercase();
            let bytes = hash_input(&a[1], env);
            let out: Vec<u8> = match alg.as_str() {
                "MD5" => md5::Md5::digest(&bytes).to_vec(),
                "SHA1" | "SHA" => sha1::Sha1::digest(&bytes).to_vec(),
                "SHA2_256" => sha2::Sha256::digest(&bytes).to_vec(),
                "SHA2_512" => sha2::Sha512::digest(&bytes).to_vec(),
                _ => return Ok(Value::Null),
            };
            Value::Binary(Arc::from(out))
        }
        Checksum => Value::Int(checksum(a, true)),
        BinaryChecksum => Value::Int(checksum(a, false)),
    };
    Ok(result)
}

fn int_result(n: i64, ty: &SqlType) -> Value {
    if matches!(ty, SqlType::BigInt) {
        Value::BigInt(n)
    } else {
        Value::Int(n as i32)
    }
}

fn replace_ci(x: &str, from: &str, to: &str) -> String {
    let lx = x.to_lowercase();
    let lf = from.to_lowercase();
    if lx.len() != x.len() {
        return x.replace(from, to);
    }
    let mut out = String::with_capacity(x.len());
    let mut i = 0;
    while let Some(p) = lx[i..].find(&lf) {
        out.push_str(&x[i..i + p]);
        out.push_str(to);
        i += p + lf.len();
    }
    out.push_str(&x[i..]);
    out
}

fn rand_f64() -> f64 {
    let n = uuid::Uuid::new_v4().as_u128();
    (n >> 75) as f64 / (1u64 << 53) as f64
}

fn round_value(
    f: Func,
    v: &Value,
    digits: i64,
    truncate: bool,
    ty: &SqlType,
) -> Result<Value, SqlError> {
    match v {
        Value::Decimal(m, sc) => {
            let sc = *sc as i64;
            let r = match f {
                Func::Sign => {
                    return Ok(Value::Decimal(m.signum() * 10i128.pow(sc as u32), sc as u8))
                }
                Func::Ceiling | Func::Floor => {
                    let p = 10i128.pow(sc as u32);
                    let q = m.div_euclid(p);
                    let q = if f == Func::Ceiling && m.rem_euclid(p) != 0 {
                        q + 1
                    } else {
                        q
                    };
                    return Ok(Value::Decimal(q * p, sc as u8));
                }
                _ => {
                    if digits >= sc {
                        *m
                    } else {
                        let p = 10i128.pow((sc - digits).min(38) as u32);
                        let q = m / p;
                        let rem = m % p;
                        let q = if !truncate && rem.abs() * 2 >= p {
                            q + m.signum()
                        } else {
                            q
                        };
                        q * p
                    }
                }
            };
            Ok(Value::Decimal(r, sc as u8))
        }
        other => {
            let x =
                value::num_to_f64(value::to_num(other).ok_or_else(|| {
                    err(8117, "Operand data type is invalid for round function.")
                })?);
            let r = match f {
                Func::Ceiling => x.ceil(),
                Func::Floor => x.floor(),
                Func::Sign => x.signum() * if x == 0.0 { 0.0 } else { 1.0 },
                _ => {
                    let p = 10f64.powi(digits as i32);
                    if truncate {
                        (x * p).trunc() / p
                    } else {
                        (x * p).round() / p
                    }
                }
            };
            value::convert(&Value::Float(r), ty, 0)
        }
    }
}

/// Bytes of a value as HASHBYTES sees them: varchar in its code page, nvarchar as UTF-16LE,
/// other types as their binary conversion.
fn hash_input(v: &Value, _env: &Env) -> Vec<u8> {
    match v {
        // varchar arguments arrive as code-page bytes (see bind_builtin); strings are nvarchar.
        Value::String(x) => value::utf16le_bytes(x),
        Value::Binary(b) => b.to_vec(),
        other => match value::convert(other, &SqlType::VarBinary { len: None }, 0) {
            Ok(Value::Binary(b)) => b.to_vec(),
            _ => Vec::new(),
        },
    }
}

/// How CHECKSUM / BINARY_CHECKSUM hash one argument; decided at bind time from its type and
/// passed to the evaluator as an int constant in front of the argument.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum ChecksumKind {
    /// A NULL literal without type: left out of the hash (SQL Server folds it away).
    Skip = 0,
    /// char/varchar: code-page bytes (BINARY_CHECKSUM) or collation weights (CHECKSUM).
    NonUnicode = 1,
    /// nchar/nvarchar: UTF-16LE bytes (BINARY_CHECKSUM) or weights (CHECKSUM).
    Unicode = 2,
    /// bit, tinyint, smallint, int: the value itself.
    Integer = 3,
    /// bigint: low word xor high word.
    BigInt = 4,
    /// Anything else: the bytes of its binary conversion.
    Bytes = 5,
}

/// CHECKSUM(*) / BINARY_CHECKSUM(...) argument list: `[kind, expr, kind, expr, …]`.
/// BINARY_CHECKSUM ignores noncomparable types (text, ntext, image, xml, CLR types);
/// CHECKSUM rejects them with 8116, as documented.
fn checksum_args(f: Func, args: Vec<(BExpr, SqlType, bool)>) -> Result<Vec<BExpr>, SqlError> {
    let mut out = Vec::with_capacity(args.len() * 2);
    for (idx, (e, t, _)) in args.into_iter().enumerate() {
        let kind = match &t {
            SqlType::Text { .. }
            | SqlType::NText { .. }
            | SqlType::Image
            | SqlType::Xml
            | SqlType::HierarchyId
            | SqlType::Geometry
            | SqlType::Geography => {
                if f == Func::BinaryChecksum {
                    continue;
                }
                return Err(err(
                    8116,
                    format!(
                        "Argument data type {} is invalid for argument {} of checksum function.",
                        value::type_name(&t),
                        idx + 1
                    ),
                ));
            }
            SqlType::Null => ChecksumKind::Skip,
            SqlType::Char { .. } | SqlType::VarChar { .. } => ChecksumKind::NonUnicode,
            SqlType::NChar { .. } | SqlType::NVarChar { .. } => ChecksumKind::Unicode,
            SqlType::Bit | SqlType::TinyInt | SqlType::SmallInt | SqlType::Int => {
                ChecksumKind::Integer
            }
            SqlType::BigInt => ChecksumKind::BigInt,
            _ => ChecksumKind::Bytes,
        };
        out.push(BExpr::Const(Value::Int(kind as i32)));
        out.push(e);
    }
    Ok(out)
}

/// CHECKSUM / BINARY_CHECKSUM (ENGINE.md "CHECKSUM and BINARY_CHECKSUM"): each argument is
/// hashed to 32 bits and the list is combined as `h = rotl4(h) ^ item`. Strings hash as a
/// rotate-left-4/xor fold over their bytes (BINARY_CHECKSUM) or over the
/// SQL_Latin1_General_CP1_CI_AS weights of their characters (CHECKSUM); trailing spaces are
/// ignored; integers hash to their value; a typed NULL hashes to 0x7FFFFFFF.
fn checksum(a: &[Value], collation_weights: bool) -> i32 {
    let mut h: u32 = 0;
    for pair in a.chunks(2) {
        let [kind, v] = pair else { continue };
        let kind = match kind {
            Value::Int(k) => *k,
            _ => ChecksumKind::Bytes as i32,
        };
        if kind == ChecksumKind::Skip as i32 {
            continue;
        }
        let item: u32 = match v {
            Value::Null => 0x7FFF_FFFF,
            Value::String(x) => {
                let t = x.trim_end_matches(' ');
                let unicode = kind == ChecksumKind::Unicode as i32;
                match (collation_weights, unicode) {
                    (true, _) => fold_weights(t),
                    (false, false) => fold_bytes(0, &value::varchar_bytes(t)),
                    (false, true) => fold_bytes(0, &value::utf16le_bytes(t)),
                }
            }
            Value::Bit(b) => u32::from(*b),
            Value::TinyInt(x) => u32::from(*x),
            Value::SmallInt(x) => *x as i32 as u32,
            Value::Int(x) => *x as u32,
            Value::BigInt(x) => (*x as u64 as u32) ^ ((*x as u64 >> 32) as u32),
            other => match value::convert(other, &SqlType::VarBinary { len: None }, 0) {
                Ok(Value::Binary(b)) => fold_bytes(0, &b),
                _ => 0,
            },
        };
        h = h.rotate_left(4) ^ item;
    }
    h as i32
}

fn fold_bytes(mut h: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        h = h.rotate_left(4) ^ u32::from(b);
    }
    h
}

/// CHECKSUM over character data: a rotate-left-4/xor fold over the collation weight of each
/// character (upper and lower case share a weight, accents add a secondary part, Æ and ß
/// expand to two weights). Characters outside Windows-1252 use their code point.
fn fold_weights(s: &str) -> u32 {
    let mut h: u32 = 0;
    let mut buf = [0u8; 4];
    for ch in s.chars() {
        let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(ch.encode_utf8(&mut buf));
        let byte = match (unmappable, bytes.first()) {
            (false, Some(&b)) if bytes.len() == 1 => b,
            _ => {
                h = h.rotate_left(4) ^ ch as u32;
                continue;
            }
        };
        let (first, second) = cp1252_weight(byte);
        if let Some(w) = first {
            h = h.rotate_left(4) ^ w;
        }
        if let Some(w) = second {
            h = h.rotate_left(4) ^ w;
        }
    }
    h
}

/// Weights of SQL_Latin1_General_CP1_CI_AS for one Windows-1252 byte, as CHECKSUM uses them.
/// Derived from CHECKSUM values of every two-character string measured on SQL Server
/// (tsql-checksum-javascript, data/pairs.csv); CHAR(0) is ignored.
fn cp1252_weight(b: u8) -> (Option<u32>, Option<u32>) {
    const ACCENTED: [u16; 64] = [
        0x28E, 0x38E, 0x48E, 0x58E, 0x68E, 0x78E, 0, 0x190, 0x292, 0x392, 0x492, 0x592, 0x196,
        0x296, 0x396, 0x496, 0x0A8, 0x19B, 0x19C, 0x29C, 0x39C, 0x49C, 0x59C, 0x082, 0x69C, 0x1A2,
        0x2A2, 0x3A2, 0x4A2, 0x1A6, 0x0A9, 0, 0x28E, 0x38E, 0x48E, 0x58E, 0x68E, 0x78E, 0, 0x190,
        0x292, 0x392, 0x492, 0x592, 0x196, 0x296, 0x396, 0x496, 0x0A8, 0x19B, 0x19C, 0x29C, 0x39C,
        0x49C, 0x59C, 0x083, 0x69C, 0x1A2, 0x2A2, 0x3A2, 0x4A2, 0x1A6, 0x0A9, 0x2A6,
    ];
    let b32 = u32::from(b);
    let w = match b {
        0 => return (None, None),
        1..=47 => b32,
        b'0'..=b'9' => b32 + 84,
        58..=64 => b32 - 10,
        b'A'..=b'Z' => b32 + 77,
        91..=96 => b32 - 36,
        b'a'..=b'z' => b32 + 45,
        123..=191 => b32 - 62,
        // Æ, æ: A then E with a secondary mark; ß: s then s.
        198 | 230 => return (Some(0x8E), Some(0x1192)),
        223 => return (Some(0xA0), Some(0x11A0)),
        192..=255 => u32::from(ACCENTED[usize::from(b - 192)]),
    };
    (Some(w), None)
}

fn part_name(p: &str) -> Result<&'static str, SqlError> {
    Ok(match p.trim().to_lowercase().as_str() {
        "year" | "yy" | "yyyy" => "year",
        "quarter" | "qq" | "q" => "quarter",
        "month" | "mm" | "m" => "month",
        "dayofyear" | "dy" | "y" => "dayofyear",
        "day" | "dd" | "d" => "day",
        "week" | "wk" | "ww" => "week",
        "weekday" | "dw" | "w" => "weekday",
        "hour" | "hh" => "hour",
        "minute" | "mi" | "n" => "minute",
        "second" | "ss" | "s" => "second",
        "millisecond" | "ms" => "millisecond",
        "microsecond" | "mcs" => "microsecond",
        "nanosecond" | "ns" => "nanosecond",
        "tzoffset" | "tz" => "tzoffset",
        "iso_week" | "isowk" | "isoww" => "iso_week",
        other => {
            return Err(err(
                155,
                format!("'{other}' is not a recognized datepart option."),
            ))
        }
    })
}

fn dt_of(v: &Value) -> Result<(i32, u64, i16), SqlError> {
    let v = match v {
        Value::String(_) => value::convert(v, &SqlType::DateTime2 { scale: 7 }, 0)?,
        other => other.clone(),
    };
    value::datetime_parts(&v).ok_or_else(|| {
        err(
            8116,
            "Argument data type is invalid for argument 2 of the date function.",
        )
    })
}

fn date_part(part: &str, v: &Value) -> Result<i64, SqlError> {
    let part = part_name(part)?;
    let (d, t, off) = dt_of(v)?;
    let dt = value::naive_from_parts(d, t);
    Ok(match part {
        "year" => dt.year() as i64,
        "quarter" => ((dt.month() - 1) / 3 + 1) as i64,
        "month" => dt.month() as i64,
        "dayofyear" => dt.ordinal() as i64,
        "day" => dt.day() as i64,
        "week" => {
            let jan1 = NaiveDate::from_ymd_opt(dt.year(), 1, 1).expect("jan 1");
            ((dt.ordinal() as i64 + jan1.weekday().num_days_from_sunday() as i64 - 1) / 7) + 1
        }
        "weekday" => dt.weekday().num_days_from_sunday() as i64 + 1,
        "hour" => dt.hour() as i64,
        "minute" => dt.minute() as i64,
        "second" => dt.second() as i64,
        "millisecond" => (t % 10_000_000 / 10_000) as i64,
        "microsecond" => (t % 10_000_000 / 10) as i64,
        "nanosecond" => (t % 10_000_000 * 100) as i64,
        "tzoffset" => off as i64,
        _ => dt.iso_week().week() as i64,
    })
}

fn date_add(part: &str, n: i64, v: &Value, ty: &SqlType) -> Result<Value, SqlError> {
    let part = part_name(part)?;
    let (d, t, off) = dt_of(v)?;
    let dt = value::naive_from_parts(d, t);
    let add_months = |months: i64| -> Result<chrono::NaiveDateTime, SqlError> {
        let total = dt.year() as i64 * 12 + dt.month0() as i64 + months;
        let y = total.div_euclid(12) as i32;
        let m = total.rem_euclid(12) as u32 + 1;
        let mut day = dt.day();
        loop {
            if let Some(date) = NaiveDate::from_ymd_opt(y, m, day) {
                return Ok(date.and_time(dt.time()));
            }
            day -= 1;
            if day == 0 {
                return Err(err(
                    517,
                    "Adding a value to a 'datetime' column caused an overflow.",
                ));
            }
        }
    };
    let out = match part {
        "year" => add_months(n * 12)?,
        "quarter" => add_months(n * 3)?,
        "month" => add_months(n)?,
        "dayofyear" | "day" | "weekday" => add_delta(dt, Duration::try_days(n))?,
        "week" => add_delta(dt, n.checked_mul(7).and_then(Duration::try_days))?,
        "hour" => add_delta(dt, Duration::try_hours(n))?,
        "minute" => add_delta(dt, Duration::try_minutes(n))?,
        "second" => add_delta(dt, Duration::try_seconds(n))?,
        "millisecond" => add_delta(dt, Duration::try_milliseconds(n))?,
        "microsecond" => add_delta(dt, Some(Duration::microseconds(n)))?,
        "nanosecond" => add_delta(dt, Some(Duration::nanoseconds(n)))?,
        _ => return Err(err(9810, format!("The datepart {part} is not supported by date function dateadd for data type datetime."))),
    };
    let (d2, t2) = value::parts_from_naive(&out);
    let target = if matches!(ty, SqlType::Null) {
        SqlType::DateTime
    } else {
        ty.clone()
    };
    value::datetime_from_parts(d2, t2, off, &target)
}

fn add_delta(
    dt: chrono::NaiveDateTime,
    d: Option<Duration>,
) -> Result<chrono::NaiveDateTime, SqlError> {
    d.and_then(|d| dt.checked_add_signed(d))
        .filter(|x| x.year() >= 1 && x.year() <= 9999)
        .ok_or_else(|| {
            err(
                517,
                "Adding a value to a 'datetime' column caused an overflow.",
            )
        })
}

fn date_diff(part: &str, a: &Value, b: &Value) -> Result<i64, SqlError> {
    let part = part_name(part)?;
    let (d1, t1, o1) = dt_of(a)?;
    let (d2, t2, o2) = dt_of(b)?;
    // datetimeoffset differences are computed in UTC.
    let abs1 = d1 as i128 * value::TICKS_PER_DAY as i128 + t1 as i128 - o1 as i128 * 600_000_000;
    let abs2 = d2 as i128 * value::TICKS_PER_DAY as i128 + t2 as i128 - o2 as i128 * 600_000_000;
    let x = value::naive_from_parts(d1, t1);
    let y = value::naive_from_parts(d2, t2);
    let floor_div = |v: i128, unit: i128| v.div_euclid(unit);
    Ok(match part {
        "year" => (y.year() - x.year()) as i64,
        "quarter" => {
            ((y.year() * 4 + (y.month0() / 3) as i32) - (x.year() * 4 + (x.month0() / 3) as i32))
                as i64
        }
        "month" => {
            ((y.year() * 12 + y.month0() as i32) - (x.year() * 12 + x.month0() as i32)) as i64
        }
        "dayofyear" | "day" | "weekday" => {
            (floor_div(abs2, value::TICKS_PER_DAY as i128)
                - floor_div(abs1, value::TICKS_PER_DAY as i128)) as i64
        }
        "week" => {
            // Sunday-based week boundaries (0001-01-01 was a Monday).
            let w = |abs: i128| floor_div(floor_div(abs, value::TICKS_PER_DAY as i128) + 1, 7);
            (w(abs2) - w(abs1)) as i64
        }
        "hour" => (floor_div(abs2, 36_000_000_000) - floor_div(abs1, 36_000_000_000)) as i64,
        "minute" => (floor_div(abs2, 600_000_000) - floor_div(abs1, 600_000_000)) as i64,
        "second" => (floor_div(abs2, 10_000_000) - floor_div(abs1, 10_000_000)) as i64,
        "millisecond" => (floor_div(abs2, 10_000) - floor_div(abs1, 10_000)) as i64,
        "microsecond" => (floor_div(abs2, 10) - floor_div(abs1, 10)) as i64,
        "nanosecond" => ((abs2 - abs1) * 100) as i64,
        _ => {
            return Err(err(
                9810,
                format!("The datepart {part} is not supported by date function datediff."),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_and_dates() {
        assert!(super::super::eval::like_match("Hello", "h%o", None));
        assert!(!super::super::eval::like_match("Hello", "h_o", None));
        let a = value::convert(
            &Value::String(Arc::from("2024-01-31 10:00:00")),
            &SqlType::DateTime2 { scale: 7 },
            0,
        )
        .unwrap();
        let b = value::convert(
            &Value::String(Arc::from("2024-03-01 00:00:00")),
            &SqlType::DateTime2 { scale: 7 },
            0,
        )
        .unwrap();
        assert_eq!(date_diff("month", &a, &b).unwrap(), 2);
        assert_eq!(date_diff("day", &a, &b).unwrap(), 30);
        let c = date_add("month", 1, &a, &SqlType::DateTime2 { scale: 7 }).unwrap();
        assert_eq!(value::to_display_string(&c), "2024-02-29 10:00:00.0000000");
    }
}
