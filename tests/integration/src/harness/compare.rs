//! Row-by-row comparison of source tables (read from the stand-in over TDS with tiberius) and
//! target tables (read from PostgreSQL with tokio-postgres).
//!
//! Both sides are turned into the canonical row text of `dbsync_typemap::canonical`: on the
//! source, values decoded here from tiberius's raw forms (independently of the capture
//! service's decoder) and framed with `canonical_bytes`; on the target, PostgreSQL computes the
//! same text with `pg_canonical_sql` from the stored values. The rows of a table are compared
//! as multisets, so a missing, extra, different or duplicated row is a difference.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{anyhow, Context};
use dbsync_proto::v1::{value::Kind, ColumnSchema, Value};
use dbsync_sqlserver_sim::workload::SqlClient;
use dbsync_typemap::{
    canonical_bytes, datetime2_from_sql, datetime_from_sql, datetimeoffset_from_sql,
    decimal_from_parts, map_column, pg_canonical_sql, quote_ident, smalldatetime_from_sql,
    time_from_sql, MappingOptions, PgColumnType,
};
use futures_util::TryStreamExt;
use tiberius::ColumnData;

/// One source table and where its rows live on the target.
#[derive(Clone, Debug)]
pub struct TableMapping {
    pub source_database: String,
    pub source_schema: String,
    pub source_table: String,
    pub target_schema: String,
    pub target_table: String,
    /// Source column → target column; columns not listed follow `column_case`.
    pub column_renames: BTreeMap<String, String>,
    pub column_case: Case,
    /// Source columns that are not synced.
    pub skip_columns: Vec<String>,
    /// Only source rows matching this T-SQL predicate are expected on the target.
    pub source_filter: Option<String>,
}

impl TableMapping {
    /// The default mapping: same schema and table names, lower-cased.
    pub fn lower(database: &str, schema: &str, table: &str) -> TableMapping {
        TableMapping {
            source_database: database.into(),
            source_schema: schema.into(),
            source_table: table.into(),
            target_schema: schema.to_lowercase(),
            target_table: table.to_lowercase(),
            column_renames: BTreeMap::new(),
            column_case: Case::Lower,
            skip_columns: Vec::new(),
            source_filter: None,
        }
    }

    pub fn name(&self) -> String {
        format!(
            "{}.{}.{}",
            self.source_database, self.source_schema, self.source_table
        )
    }
}

/// The capitalization policy of target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Lower,
    Source,
    Upper,
}

impl Case {
    pub fn apply(self, name: &str) -> String {
        match self {
            Case::Lower => name.to_lowercase(),
            Case::Source => name.to_string(),
            Case::Upper => name.to_uppercase(),
        }
    }
}

/// The result of comparing one table.
#[derive(Clone, Debug, Default)]
pub struct TableComparison {
    pub table: String,
    pub source_rows: usize,
    pub target_rows: usize,
    /// Canonical rows present on the source only (up to a few, for messages).
    pub missing: Vec<String>,
    /// Canonical rows present on the target only (up to a few).
    pub extra: Vec<String>,
    pub missing_count: usize,
    pub extra_count: usize,
}

impl TableComparison {
    pub fn equal(&self) -> bool {
        self.missing_count == 0 && self.extra_count == 0
    }
}

impl fmt::Display for TableComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: source {} rows, target {} rows",
            self.table, self.source_rows, self.target_rows
        )?;
        if !self.equal() {
            write!(
                f,
                ", {} rows only on the source, {} only on the target",
                self.missing_count, self.extra_count
            )?;
            for row in &self.missing {
                write!(f, "\n    source only: {}", truncate(row))?;
            }
            for row in &self.extra {
                write!(f, "\n    target only: {}", truncate(row))?;
            }
        }
        Ok(())
    }
}

fn truncate(row: &str) -> String {
    if row.len() > 400 {
        let mut end = 400;
        while !row.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &row[..end])
    } else {
        row.to_string()
    }
}

/// The comparison of a set of tables.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub tables: Vec<TableComparison>,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.tables.iter().all(TableComparison::equal)
    }

    /// A readable report of every table (differences first).
    pub fn report(&self) -> String {
        let mut tables: Vec<&TableComparison> = self.tables.iter().collect();
        tables.sort_by_key(|t| t.equal());
        tables
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn source_rows(&self) -> usize {
        self.tables.iter().map(|t| t.source_rows).sum()
    }
}

/// A source column as the comparison needs it.
struct SourceColumn {
    name: String,
    select: String,
    pg: PgColumnType,
}

/// Compares every mapping; `target` is a connection to the target database.
pub async fn compare_tables(
    source: &mut SqlClient,
    target: &tokio_postgres::Client,
    mappings: &[TableMapping],
) -> anyhow::Result<Comparison> {
    let mut out = Comparison::default();
    for mapping in mappings {
        out.tables.push(
            compare_table(source, target, mapping)
                .await
                .with_context(|| format!("compare {}", mapping.name()))?,
        );
    }
    Ok(out)
}

/// Compares one table row by row.
pub async fn compare_table(
    source: &mut SqlClient,
    target: &tokio_postgres::Client,
    mapping: &TableMapping,
) -> anyhow::Result<TableComparison> {
    let columns = source_columns(source, mapping).await?;
    let mut source_rows = read_source_rows(source, mapping, &columns).await?;
    let mut target_rows = read_target_rows(target, mapping, &columns).await?;
    source_rows.sort_unstable();
    target_rows.sort_unstable();
    let mut result = TableComparison {
        table: mapping.name(),
        source_rows: source_rows.len(),
        target_rows: target_rows.len(),
        ..Default::default()
    };
    // Merge the two sorted lists: equal rows pair off, the rest are differences.
    let (mut i, mut j) = (0, 0);
    while i < source_rows.len() || j < target_rows.len() {
        let order = match (source_rows.get(i), target_rows.get(j)) {
            (Some(s), Some(t)) => s.cmp(t),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                result.missing_count += 1;
                if result.missing.len() < 3 {
                    result.missing.push(source_rows[i].clone());
                }
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                result.extra_count += 1;
                if result.extra.len() < 3 {
                    result.extra.push(target_rows[j].clone());
                }
                j += 1;
            }
        }
    }
    Ok(result)
}

async fn source_columns(
    source: &mut SqlClient,
    mapping: &TableMapping,
) -> anyhow::Result<Vec<SourceColumn>> {
    source
        .execute(format!("USE [{}]", mapping.source_database), &[])
        .await?;
    let sql = "SELECT c.name, t.name, CAST(c.max_length AS int), CAST(c.precision AS int), CAST(c.scale AS int) \
               FROM sys.columns c JOIN sys.tables tb ON tb.object_id = c.object_id \
               JOIN sys.schemas s ON s.schema_id = tb.schema_id \
               JOIN sys.types t ON t.user_type_id = c.system_type_id \
               WHERE s.name = @P1 AND tb.name = @P2 ORDER BY c.column_id";
    let rows = source
        .query(
            sql,
            &[
                &mapping.source_schema.as_str(),
                &mapping.source_table.as_str(),
            ],
        )
        .await?
        .into_first_result()
        .await?;
    if rows.is_empty() {
        return Err(anyhow!(
            "source table {} has no columns (does it exist?)",
            mapping.name()
        ));
    }
    let mut columns = Vec::new();
    for row in rows {
        let name: &str = row.get(0).unwrap_or_default();
        if mapping
            .skip_columns
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let type_name: &str = row.get(1).unwrap_or_default();
        let schema = ColumnSchema {
            name: name.to_string(),
            type_name: type_name.to_string(),
            max_length: row.get::<i32, _>(2).unwrap_or_default(),
            precision: row.get::<i32, _>(3).unwrap_or_default(),
            scale: row.get::<i32, _>(4).unwrap_or_default(),
            ..Default::default()
        };
        let pg = map_column(&schema, &MappingOptions::default())
            .map_err(|e| anyhow!("map {}: {e}", name))?;
        let quoted = format!("[{}]", name.replace(']', "]]"));
        // tiberius decodes money as f64, which loses the low digits: read it as its exact decimal.
        let select = match type_name.to_ascii_lowercase().as_str() {
            "money" => format!("CAST({quoted} AS decimal(19, 4))"),
            "smallmoney" => format!("CAST({quoted} AS decimal(10, 4))"),
            _ => quoted,
        };
        columns.push(SourceColumn {
            name: name.to_string(),
            select,
            pg,
        });
    }
    Ok(columns)
}

async fn read_source_rows(
    source: &mut SqlClient,
    mapping: &TableMapping,
    columns: &[SourceColumn],
) -> anyhow::Result<Vec<String>> {
    let list: Vec<&str> = columns.iter().map(|c| c.select.as_str()).collect();
    let mut sql = format!(
        "SELECT {} FROM [{}].[{}]",
        list.join(", "),
        mapping.source_schema.replace(']', "]]"),
        mapping.source_table.replace(']', "]]")
    );
    if let Some(filter) = &mapping.source_filter {
        sql.push_str(&format!(" WHERE {filter}"));
    }
    let mut stream = source.simple_query(sql).await?.into_row_stream();
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    while let Some(row) = stream.try_next().await? {
        buf.clear();
        for (data, column) in row.into_iter().zip(columns) {
            let value =
                value_from_tiberius(data).with_context(|| format!("column {}", column.name))?;
            canonical_bytes(&value, &column.pg, &mut buf);
        }
        rows.push(String::from_utf8_lossy(&buf).into_owned());
    }
    Ok(rows)
}

async fn read_target_rows(
    target: &tokio_postgres::Client,
    mapping: &TableMapping,
    columns: &[SourceColumn],
) -> anyhow::Result<Vec<String>> {
    let exprs: Vec<String> = columns
        .iter()
        .map(|c| {
            let target_name = mapping
                .column_renames
                .get(&c.name)
                .cloned()
                .unwrap_or_else(|| mapping.column_case.apply(&c.name));
            pg_canonical_sql(&quote_ident(&target_name), &c.pg)
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {}.{}",
        exprs.join(" || "),
        quote_ident(&mapping.target_schema),
        quote_ident(&mapping.target_table)
    );
    let rows = target.query(&sql, &[]).await.with_context(|| {
        format!(
            "read target {}.{}",
            mapping.target_schema, mapping.target_table
        )
    })?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// tiberius's decoded value → the wire value dbsync's mapping is defined on.
fn value_from_tiberius(data: ColumnData<'static>) -> anyhow::Result<Value> {
    let kind = match data {
        ColumnData::U8(v) => v.map(|v| Kind::Int(i64::from(v))),
        ColumnData::I16(v) => v.map(|v| Kind::Int(i64::from(v))),
        ColumnData::I32(v) => v.map(|v| Kind::Int(i64::from(v))),
        ColumnData::I64(v) => v.map(Kind::Int),
        ColumnData::F32(v) => v.map(Kind::Float32),
        ColumnData::F64(v) => v.map(Kind::Float64),
        ColumnData::Bit(v) => v.map(Kind::Bool),
        ColumnData::String(v) => v.map(|s| Kind::Text(s.into_owned())),
        ColumnData::Guid(v) => v.map(|g| Kind::Uuid(g.as_bytes().to_vec())),
        ColumnData::Binary(v) => v.map(|b| Kind::Binary(b.into_owned())),
        ColumnData::Numeric(v) => {
            v.map(|n| Kind::Decimal(decimal_from_parts(n.value(), u32::from(n.scale()))))
        }
        ColumnData::Xml(v) => v.map(|x| Kind::Text(x.into_owned().into_string())),
        ColumnData::DateTime(v) => {
            v.map(|d| Kind::Datetime(datetime_from_sql(d.days(), d.seconds_fragments())))
        }
        ColumnData::SmallDateTime(v) => {
            v.map(|d| Kind::Datetime(smalldatetime_from_sql(d.days(), d.seconds_fragments())))
        }
        ColumnData::Time(v) => v.map(|t| Kind::Time(time_from_sql(t.increments(), t.scale()))),
        ColumnData::Date(v) => v.map(|d| Kind::Date(d.days() as i32)),
        ColumnData::DateTime2(v) => v.map(|d| {
            Kind::Datetime(datetime2_from_sql(
                d.date().days(),
                d.time().increments(),
                d.time().scale(),
            ))
        }),
        ColumnData::DateTimeOffset(v) => v.map(|d| {
            let dt = d.datetime2();
            Kind::Datetimeoffset(datetimeoffset_from_sql(
                dt.date().days(),
                dt.time().increments(),
                dt.time().scale(),
                d.offset(),
            ))
        }),
    };
    Ok(Value { kind })
}
