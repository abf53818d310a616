//! SQL Server column → PostgreSQL column type (type-mapping reference §1.3).

use dbsync_proto::v1::ColumnSchema;

use crate::text::InvalidTextPolicy;
use crate::TypemapError;

/// Choices the task configuration can make (type-mapping reference §4). Defaults follow the
/// reference's recommendations.
#[derive(Debug, Clone, Default)]
pub struct MappingOptions {
    pub datetime_precision: DatetimePrecision,
    pub bit_as: BitAs,
    pub rowversion_as: RowversionAs,
    pub hierarchyid_as: HierarchyidAs,
    pub spatial_as: SpatialAs,
    pub xml_as: XmlAs,
    /// NUL characters (and, at capture, unpaired surrogates).
    pub on_invalid_text: InvalidTextPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DatetimePrecision {
    /// `timestamp(3)`: what SQL Server displays and compares (.000/.003/.007).
    #[default]
    Milliseconds,
    /// `timestamp(6)`: the 1/300 s ticks to the microsecond (.003333).
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitAs {
    #[default]
    Boolean,
    Smallint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowversionAs {
    #[default]
    Bytea,
    Bigint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HierarchyidAs {
    /// `text` holding `col.ToString()` (e.g. `/1/3/`); capture must read it that way.
    #[default]
    Text,
    /// The raw CLR bytes.
    Bytea,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpatialAs {
    /// `bytea` holding WKB (`col.STAsBinary()`); works without PostGIS.
    #[default]
    ByteaWkb,
    /// PostGIS `geometry`/`geography` holding EWKB (WKB + SRID). Needs the extension.
    Postgis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XmlAs {
    #[default]
    Xml,
    Text,
}

/// How values are laid out in PostgreSQL. Each variant has one binary encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgKind {
    Bool,
    SmallInt,
    Integer,
    BigInt,
    Real,
    Double,
    /// `precision: None` is unconstrained `numeric`.
    Numeric {
        precision: Option<u8>,
        scale: u8,
    },
    Date,
    /// Fractional-second digits 0..=6.
    Time {
        precision: u8,
    },
    Timestamp {
        precision: u8,
    },
    Timestamptz {
        precision: u8,
    },
    Uuid,
    Bytea,
    /// bpchar(n)
    Char {
        length: u32,
    },
    Varchar {
        length: Option<u32>,
    },
    Text,
    Xml,
    Jsonb,
    /// PostGIS types: binary COPY takes EWKB; the OID is per database (resolve by name).
    Geometry,
    Geography,
}

impl PgKind {
    /// `pg_type.typname`.
    pub fn type_name(self) -> &'static str {
        match self {
            PgKind::Bool => "bool",
            PgKind::SmallInt => "int2",
            PgKind::Integer => "int4",
            PgKind::BigInt => "int8",
            PgKind::Real => "float4",
            PgKind::Double => "float8",
            PgKind::Numeric { .. } => "numeric",
            PgKind::Date => "date",
            PgKind::Time { .. } => "time",
            PgKind::Timestamp { .. } => "timestamp",
            PgKind::Timestamptz { .. } => "timestamptz",
            PgKind::Uuid => "uuid",
            PgKind::Bytea => "bytea",
            PgKind::Char { .. } => "bpchar",
            PgKind::Varchar { .. } => "varchar",
            PgKind::Text => "text",
            PgKind::Xml => "xml",
            PgKind::Jsonb => "jsonb",
            PgKind::Geometry => "geometry",
            PgKind::Geography => "geography",
        }
    }

    /// Built-in type OID; 0 for extension types (look them up in the target database).
    pub fn oid(self) -> u32 {
        match self {
            PgKind::Bool => 16,
            PgKind::Bytea => 17,
            PgKind::BigInt => 20,
            PgKind::SmallInt => 21,
            PgKind::Integer => 23,
            PgKind::Text => 25,
            PgKind::Xml => 142,
            PgKind::Real => 700,
            PgKind::Double => 701,
            PgKind::Char { .. } => 1042,
            PgKind::Varchar { .. } => 1043,
            PgKind::Date => 1082,
            PgKind::Time { .. } => 1083,
            PgKind::Timestamp { .. } => 1114,
            PgKind::Timestamptz { .. } => 1184,
            PgKind::Numeric { .. } => 1700,
            PgKind::Uuid => 2950,
            PgKind::Jsonb => 3802,
            PgKind::Geometry | PgKind::Geography => 0,
        }
    }

    /// The column type as written in DDL, e.g. `numeric(12,2)`, `timestamp(3)`.
    pub fn ddl(self) -> String {
        match self {
            PgKind::Bool => "boolean".into(),
            PgKind::SmallInt => "smallint".into(),
            PgKind::Integer => "integer".into(),
            PgKind::BigInt => "bigint".into(),
            PgKind::Real => "real".into(),
            PgKind::Double => "double precision".into(),
            PgKind::Numeric {
                precision: Some(p),
                scale,
            } => format!("numeric({p},{scale})"),
            PgKind::Numeric {
                precision: None, ..
            } => "numeric".into(),
            PgKind::Date => "date".into(),
            PgKind::Time { precision } => format!("time({precision})"),
            PgKind::Timestamp { precision } => format!("timestamp({precision})"),
            PgKind::Timestamptz { precision } => format!("timestamptz({precision})"),
            PgKind::Uuid => "uuid".into(),
            PgKind::Bytea => "bytea".into(),
            PgKind::Char { length } => format!("char({length})"),
            PgKind::Varchar { length: Some(n) } => format!("varchar({n})"),
            PgKind::Varchar { length: None } => "varchar".into(),
            PgKind::Text => "text".into(),
            PgKind::Xml => "xml".into(),
            PgKind::Jsonb => "jsonb".into(),
            PgKind::Geometry => "geometry".into(),
            PgKind::Geography => "geography".into(),
        }
    }

    /// Whether values are text (encoded as UTF-8, subject to the invalid-text policy).
    pub fn is_text(self) -> bool {
        matches!(
            self,
            PgKind::Char { .. }
                | PgKind::Varchar { .. }
                | PgKind::Text
                | PgKind::Xml
                | PgKind::Jsonb
        )
    }
}

/// A CHECK that keeps the source type's domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnCheck {
    /// `col BETWEEN min AND max` (tinyint: 0..255).
    Range { min: i64, max: i64 },
}

/// The PostgreSQL side of one mapped column: everything DDL, COPY and apply need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumnType {
    /// Source column name, used in error messages.
    pub column: String,
    pub kind: PgKind,
    /// SQL Server type as declared, e.g. `datetime2(7)`, for messages and reports.
    pub source_type: String,
    pub check: Option<ColumnCheck>,
    /// Things the user should know (lossy or approximate mappings).
    pub warnings: Vec<String>,
    pub text_policy: InvalidTextPolicy,
    /// sql_variant: any value kind is written as its text form.
    pub any_value_as_text: bool,
}

impl PgColumnType {
    /// A column of `kind` with default policies (for targets not derived from a source column).
    pub fn new(column: impl Into<String>, kind: PgKind) -> PgColumnType {
        PgColumnType {
            column: column.into(),
            kind,
            source_type: String::new(),
            check: None,
            warnings: Vec::new(),
            text_policy: InvalidTextPolicy::Error,
            any_value_as_text: false,
        }
    }

    pub fn ddl(&self) -> String {
        self.kind.ddl()
    }

    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    pub fn oid(&self) -> u32 {
        self.kind.oid()
    }

    /// The CHECK expression for `column_ident` (already quoted), e.g. `"b" BETWEEN 0 AND 255`.
    pub fn check_sql(&self, column_ident: &str) -> Option<String> {
        self.check.map(|ColumnCheck::Range { min, max }| {
            format!("{column_ident} BETWEEN {min} AND {max}")
        })
    }
}

/// Maps a SQL Server column to its PostgreSQL type (reference §1.3).
pub fn map_column(
    column: &ColumnSchema,
    options: &MappingOptions,
) -> Result<PgColumnType, TypemapError> {
    let type_name = column.type_name.trim().to_ascii_lowercase();
    let spec = TypeSpec {
        name: &type_name,
        max_length: column.max_length,
        precision: column.precision,
        scale: column.scale,
        identity: column.identity.is_some(),
    };
    let mut mapped = map_type(&spec, options, &column.name).map_err(|e| {
        if let TypemapError::UnsupportedType {
            column: c,
            type_name: _,
            fix,
        } = e
        {
            // Name the user type, which is what the user declared.
            let declared = if column.user_type_name.is_empty() {
                column.type_name.clone()
            } else {
                column.user_type_name.clone()
            };
            TypemapError::UnsupportedType {
                column: c,
                type_name: declared,
                fix,
            }
        } else {
            e
        }
    })?;
    mapped.text_policy = options.on_invalid_text;
    Ok(mapped)
}

/// A SQL Server type with sys.columns-style parameters.
pub(crate) struct TypeSpec<'a> {
    pub name: &'a str,
    /// Bytes; -1 for (max).
    pub max_length: i32,
    pub precision: i32,
    pub scale: i32,
    pub identity: bool,
}

pub(crate) fn map_type(
    spec: &TypeSpec,
    options: &MappingOptions,
    column: &str,
) -> Result<PgColumnType, TypemapError> {
    let invalid = |detail: String| TypemapError::InvalidTypeParameters {
        column: column.to_string(),
        type_name: spec.name.to_string(),
        detail,
    };
    let unsupported = |fix: &str| TypemapError::UnsupportedType {
        column: column.to_string(),
        type_name: spec.name.to_string(),
        fix: fix.to_string(),
    };
    let fraction_digits = || -> Result<u8, TypemapError> {
        match spec.scale {
            0..=7 => Ok(spec.scale as u8),
            other => Err(invalid(format!(
                "fractional-second precision {other}, expected 0..7"
            ))),
        }
    };
    let char_length = |bytes_per_char: i32| -> Result<Option<u32>, TypemapError> {
        match spec.max_length {
            -1 => Ok(None),
            n if n > 0 => Ok(Some((n / bytes_per_char).max(1) as u32)),
            n => Err(invalid(format!("max_length {n}"))),
        }
    };
    let mut warnings = Vec::new();
    let mut check = None;
    let mut any_value_as_text = false;
    let kind = match spec.name {
        "bit" => match options.bit_as {
            BitAs::Boolean => PgKind::Bool,
            BitAs::Smallint => {
                check = Some(ColumnCheck::Range { min: 0, max: 1 });
                PgKind::SmallInt
            }
        },
        "tinyint" => {
            check = Some(ColumnCheck::Range { min: 0, max: 255 });
            PgKind::SmallInt
        }
        "smallint" => PgKind::SmallInt,
        "int" | "integer" => PgKind::Integer,
        "bigint" => PgKind::BigInt,
        "decimal" | "numeric" => {
            let (precision, scale) = match (spec.precision, spec.scale) {
                (0, 0) => (18, 0), // bare `decimal`
                (p, s) if (1..=38).contains(&p) && (0..=p).contains(&s) => (p, s),
                (p, s) => return Err(invalid(format!("precision {p}, scale {s}; expected 1 ≤ p ≤ 38, 0 ≤ s ≤ p"))),
            };
            if spec.identity && scale == 0 && precision <= 18 {
                // PostgreSQL identity columns must be integers.
                warnings.push(format!("decimal({precision},0) IDENTITY is mapped to bigint"));
                PgKind::BigInt
            } else {
                PgKind::Numeric { precision: Some(precision as u8), scale: scale as u8 }
            }
        }
        "money" => PgKind::Numeric { precision: Some(19), scale: 4 },
        "smallmoney" => PgKind::Numeric { precision: Some(10), scale: 4 },
        "real" => PgKind::Real,
        "float" => {
            if (1..=24).contains(&spec.precision) {
                PgKind::Real
            } else {
                PgKind::Double
            }
        }
        "date" => PgKind::Date,
        "time" => {
            let n = fraction_digits()?;
            if n == 7 {
                warnings.push("time(7) is rounded to microseconds (time(6))".to_string());
            }
            PgKind::Time { precision: n.min(6) }
        }
        "datetime2" => {
            let n = fraction_digits()?;
            if n == 7 {
                warnings.push("datetime2(7) is rounded to microseconds (timestamp(6))".to_string());
            }
            PgKind::Timestamp { precision: n.min(6) }
        }
        "datetimeoffset" => {
            let n = fraction_digits()?;
            warnings.push("datetimeoffset keeps the instant (timestamptz) but not the offset".to_string());
            PgKind::Timestamptz { precision: n.min(6) }
        }
        "datetime" => PgKind::Timestamp {
            precision: match options.datetime_precision {
                DatetimePrecision::Milliseconds => 3,
                DatetimePrecision::Exact => 6,
            },
        },
        "smalldatetime" => PgKind::Timestamp { precision: 0 },
        "char" => PgKind::Char { length: char_length(1)?.unwrap_or(1) },
        "nchar" => PgKind::Char { length: char_length(2)?.unwrap_or(1) },
        "varchar" => match char_length(1)? {
            Some(n) => PgKind::Varchar { length: Some(n) },
            None => PgKind::Text,
        },
        "nvarchar" => match char_length(2)? {
            Some(n) => PgKind::Varchar { length: Some(n) },
            None => PgKind::Text,
        },
        "sysname" => PgKind::Varchar { length: Some(128) },
        "text" | "ntext" => PgKind::Text,
        "binary" | "varbinary" | "image" => PgKind::Bytea,
        "uniqueidentifier" => PgKind::Uuid,
        "xml" => match options.xml_as {
            XmlAs::Xml => PgKind::Xml,
            XmlAs::Text => PgKind::Text,
        },
        "timestamp" | "rowversion" => match options.rowversion_as {
            RowversionAs::Bytea => PgKind::Bytea,
            RowversionAs::Bigint => PgKind::BigInt,
        },
        "sql_variant" => {
            warnings.push("sql_variant is stored as text; the base type of each value is lost".to_string());
            any_value_as_text = true;
            PgKind::Text
        }
        "hierarchyid" => match options.hierarchyid_as {
            HierarchyidAs::Text => PgKind::Text,
            HierarchyidAs::Bytea => {
                warnings.push("hierarchyid is stored as its raw CLR bytes, which PostgreSQL cannot interpret".to_string());
                PgKind::Bytea
            }
        },
        "geometry" | "geography" => match options.spatial_as {
            SpatialAs::ByteaWkb => PgKind::Bytea,
            SpatialAs::Postgis if spec.name == "geometry" => PgKind::Geometry,
            SpatialAs::Postgis => PgKind::Geography,
        },
        "json" => PgKind::Jsonb,
        "cursor" | "table" => {
            return Err(unsupported("it cannot be a table column; exclude the column from the task"));
        }
        "vector" => {
            return Err(unsupported("map it by hand (e.g. pgvector) and exclude it from the task, or select it as text with a column expression"));
        }
        _ => {
            return Err(unsupported(
                "it is a CLR user-defined type without a conversion; add a column expression that converts it on the source (e.g. CAST(col AS nvarchar(max)) or col.ToString()), or exclude the column",
            ))
        }
    };
    Ok(PgColumnType {
        column: column.to_string(),
        kind,
        source_type: describe_source_type(spec),
        check,
        warnings,
        text_policy: options.on_invalid_text,
        any_value_as_text,
    })
}

fn describe_source_type(spec: &TypeSpec) -> String {
    let length = |per_char: i32| match spec.max_length {
        -1 => "max".to_string(),
        n => (n / per_char).to_string(),
    };
    match spec.name {
        "decimal" | "numeric" => format!("{}({},{})", spec.name, spec.precision, spec.scale),
        "time" | "datetime2" | "datetimeoffset" => format!("{}({})", spec.name, spec.scale),
        "char" | "varchar" | "binary" | "varbinary" => format!("{}({})", spec.name, length(1)),
        "nchar" | "nvarchar" => format!("{}({})", spec.name, length(2)),
        other => other.to_string(),
    }
}

/// Parses a T-SQL type as written in expressions (`decimal(10,2)`, `nvarchar(max)`,
/// `datetime2(3)`) into sys.columns-style parameters and maps it.
pub(crate) fn map_type_text(text: &str, options: &MappingOptions) -> Result<PgKind, String> {
    let text = text.trim();
    let (name, args) = match text.find('(') {
        Some(open) if text.ends_with(')') => (&text[..open], Some(&text[open + 1..text.len() - 1])),
        Some(_) => return Err(format!("cannot parse type {text:?}")),
        None => (text, None),
    };
    let name = name
        .trim()
        .trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase();
    let args: Vec<&str> = args
        .map(|a| a.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let number = |s: &str| {
        s.parse::<i32>()
            .map_err(|_| format!("cannot parse type {text:?}"))
    };
    let mut spec = TypeSpec {
        name: &name,
        max_length: 0,
        precision: 0,
        scale: 0,
        identity: false,
    };
    match name.as_str() {
        "decimal" | "numeric" => {
            spec.precision = args.first().map(|a| number(a)).transpose()?.unwrap_or(18);
            spec.scale = args.get(1).map(|a| number(a)).transpose()?.unwrap_or(0);
        }
        "float" => spec.precision = args.first().map(|a| number(a)).transpose()?.unwrap_or(53),
        "time" | "datetime2" | "datetimeoffset" => {
            spec.scale = args.first().map(|a| number(a)).transpose()?.unwrap_or(7)
        }
        "char" | "varchar" | "binary" | "varbinary" | "nchar" | "nvarchar" => {
            let per_char = if name.starts_with('n') { 2 } else { 1 };
            spec.max_length = match args.first() {
                Some(a) if a.eq_ignore_ascii_case("max") => -1,
                Some(a) => number(a)? * per_char,
                None => {
                    per_char
                        * if name.starts_with("var") || name.starts_with("nvar") {
                            30
                        } else {
                            1
                        }
                }
            };
        }
        _ => {}
    }
    map_type(&spec, options, "")
        .map(|t| t.kind)
        .map_err(|e| e.to_string())
}
