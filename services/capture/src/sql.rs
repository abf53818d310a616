//! Pure T-SQL text builders: identifiers, select lists, key-range predicates, typed
//! parameters. No I/O, so every builder has golden tests below.
//!
//! Key ranges follow the chunk contract of `capture.proto`: a chunk covers `(lower, upper]` in
//! key order, compared as tuples. `(a, b) > (x, y)` is written
//! `([a] > @P1) OR ([a] = @P1 AND [b] > @P2)`, which SQL Server can answer with index seeks.

use dbsync_proto::v1::{ColumnSchema, TableRef, TableSchema, Value};
use tiberius::ColumnData;

use crate::error::{CaptureError, Result};
use crate::mssql::decode;

/// `[name]`, with `]` doubled.
pub fn quote_ident(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// `N'text'`, with `'` doubled.
pub fn quote_string(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

/// `[schema].[table]` (the connection is already in the table's database).
pub fn table_name(table: &TableRef) -> String {
    format!(
        "{}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    )
}

/// `db.schema.table`, for messages.
pub fn display_name(table: &TableRef) -> String {
    format!("{}.{}.{}", table.database, table.schema, table.name)
}

/// The column's declared type as T-SQL text, e.g. `nvarchar(50)`, `decimal(18,2)`,
/// `datetime2(7)`, `varbinary(max)`.
pub fn column_type_text(column: &ColumnSchema) -> String {
    let t = column.type_name.to_ascii_lowercase();
    let len = |per_char: i32| {
        if column.max_length < 0 {
            "max".to_string()
        } else {
            (column.max_length / per_char).to_string()
        }
    };
    match t.as_str() {
        "varchar" | "char" | "varbinary" | "binary" => format!("{t}({})", len(1)),
        "nvarchar" | "nchar" => format!("{t}({})", len(2)),
        "decimal" | "numeric" => format!("{t}({},{})", column.precision, column.scale),
        "datetime2" | "time" | "datetimeoffset" => format!("{t}({})", column.scale),
        // rowversion values are binary(8) in result sets and change tables
        "timestamp" | "rowversion" => "binary(8)".to_string(),
        _ => t,
    }
}

/// How a column is read so that the value arrives exactly (type-mapping.md §1.3 and §3.1):
/// money as decimal (tiberius gives money as f64), hierarchyid as its text form, spatial types
/// as WKB, CLR user types through `ToString()`. The result keeps the column's name.
pub fn select_expression(name: &str, type_name: &str) -> String {
    let q = quote_ident(name);
    match type_name.to_ascii_lowercase().as_str() {
        "money" => format!("CAST({q} AS decimal(19,4)) AS {q}"),
        "smallmoney" => format!("CAST({q} AS decimal(10,4)) AS {q}"),
        "hierarchyid" => format!("CAST({q} AS nvarchar(4000)) AS {q}"),
        "geometry" | "geography" => format!("{q}.STAsBinary() AS {q}"),
        "clr_udt" => format!("{q}.ToString() AS {q}"),
        _ => q,
    }
}

/// The select list of a table, in column order.
pub fn select_list(columns: &[ColumnSchema]) -> String {
    columns
        .iter()
        .map(|c| select_expression(&c.name, &c.type_name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parameters of one statement, each cast to its column's exact type in the SQL text so that
/// no implicit conversion turns an index seek into a scan (tiberius sends strings as
/// nvarchar and temporal values with scale 7).
#[derive(Default)]
pub struct Params {
    values: Vec<ColumnData<'static>>,
}

impl Params {
    /// Adds a value for `column` and returns its placeholder expression.
    pub fn typed(&mut self, value: &Value, column: &ColumnSchema) -> Result<String> {
        self.values.push(decode::to_param(value)?);
        Ok(format!(
            "CAST(@P{} AS {})",
            self.values.len(),
            column_type_text(column)
        ))
    }

    /// Adds a raw parameter and returns `@Pn`.
    pub fn raw(&mut self, value: ColumnData<'static>) -> String {
        self.values.push(value);
        format!("@P{}", self.values.len())
    }

    pub fn values(&self) -> Vec<&dyn tiberius::ToSql> {
        self.values
            .iter()
            .map(|v| v as &dyn tiberius::ToSql)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The key columns of a table, in key order.
pub fn key_columns(table: &TableSchema) -> Result<Vec<&ColumnSchema>> {
    table
        .key_columns
        .iter()
        .map(|k| {
            table.columns.iter().find(|c| &c.name == k).ok_or_else(|| {
                CaptureError::InvalidRequest(format!(
                    "Key column {k} is not a column of {}",
                    table.table.as_ref().map(display_name).unwrap_or_default()
                ))
            })
        })
        .collect()
}

/// Which side of a bound a predicate selects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// key tuple > bound
    After,
    /// key tuple <= bound
    AtMost,
}

/// The tuple comparison `key (>|<=) bound` as OR-ed prefix equalities.
pub fn key_predicate(
    keys: &[&ColumnSchema],
    bound: &[Value],
    side: Side,
    params: &mut Params,
) -> Result<String> {
    if bound.len() != keys.len() {
        return Err(CaptureError::InvalidRequest(format!(
            "A key bound has {} values but the key has {} columns",
            bound.len(),
            keys.len()
        )));
    }
    let placeholders: Vec<String> = keys
        .iter()
        .zip(bound)
        .map(|(k, v)| params.typed(v, k))
        .collect::<Result<_>>()?;
    let mut branches = Vec::with_capacity(keys.len());
    for i in 0..keys.len() {
        let mut terms: Vec<String> = (0..i)
            .map(|j| format!("{} = {}", quote_ident(&keys[j].name), placeholders[j]))
            .collect();
        let last = i + 1 == keys.len();
        let op = match (side, last) {
            (Side::After, _) => ">",
            (Side::AtMost, false) => "<",
            (Side::AtMost, true) => "<=",
        };
        terms.push(format!(
            "{} {op} {}",
            quote_ident(&keys[i].name),
            placeholders[i]
        ));
        branches.push(if terms.len() == 1 {
            terms.pop().unwrap_or_default()
        } else {
            format!("({})", terms.join(" AND "))
        });
    }
    Ok(if branches.len() == 1 {
        branches.pop().unwrap_or_default()
    } else {
        format!("({})", branches.join(" OR "))
    })
}

/// `ORDER BY [k1], [k2]`, empty without key.
pub fn order_by(keys: &[&ColumnSchema]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    format!(
        " ORDER BY {}",
        keys.iter()
            .map(|k| quote_ident(&k.name))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

fn filter_condition(where_filter: &str) -> Option<String> {
    let f = where_filter.trim();
    (!f.is_empty()).then(|| format!("({f})"))
}

/// The key columns of every (filtered) row in key order: PlanChunks picks every Nth.
pub fn plan_keys_query(table: &TableSchema, where_filter: &str) -> Result<String> {
    let keys = key_columns(table)?;
    let t = table
        .table
        .as_ref()
        .ok_or_else(|| CaptureError::InvalidRequest("Table without name".into()))?;
    let list = keys
        .iter()
        .map(|k| select_expression(&k.name, &k.type_name))
        .collect::<Vec<_>>()
        .join(", ");
    let conditions: Vec<String> = filter_condition(where_filter).into_iter().collect();
    Ok(format!(
        "SELECT {list} FROM {}{}{}",
        table_name(t),
        where_clause(&conditions),
        order_by(&keys)
    ))
}

/// The rows of one chunk `(lower, upper]`, in key order.
pub fn chunk_query(
    table: &TableSchema,
    where_filter: &str,
    lower: Option<&[Value]>,
    upper: Option<&[Value]>,
    params: &mut Params,
) -> Result<String> {
    let keys = key_columns(table)?;
    let t = table
        .table
        .as_ref()
        .ok_or_else(|| CaptureError::InvalidRequest("Table without name".into()))?;
    let mut conditions = Vec::new();
    if let Some(lower) = lower.filter(|l| !l.is_empty()) {
        conditions.push(key_predicate(&keys, lower, Side::After, params)?);
    }
    if let Some(upper) = upper.filter(|u| !u.is_empty()) {
        conditions.push(key_predicate(&keys, upper, Side::AtMost, params)?);
    }
    conditions.extend(filter_condition(where_filter));
    Ok(format!(
        "SELECT {} FROM {}{}{}",
        select_list(&table.columns),
        table_name(t),
        where_clause(&conditions),
        order_by(&keys)
    ))
}

/// Rows whose key equals one of `keys` (each a full key tuple).
pub fn rows_by_keys_query(
    table: &TableSchema,
    keys_values: &[&[Value]],
    params: &mut Params,
) -> Result<String> {
    let keys = key_columns(table)?;
    if keys.is_empty() {
        return Err(CaptureError::InvalidRequest(format!(
            "Table {} has no key: rows cannot be read by key",
            table.table.as_ref().map(display_name).unwrap_or_default()
        )));
    }
    let t = table
        .table
        .as_ref()
        .ok_or_else(|| CaptureError::InvalidRequest("Table without name".into()))?;
    if let ([key], true) = (
        keys.as_slice(),
        keys_values.iter().all(|tuple| tuple.len() == 1),
    ) {
        // One key column: a flat IN list (a chain of ORs nests as deep as it has keys).
        let list = keys_values
            .iter()
            .map(|tuple| params.typed(&tuple[0], key))
            .collect::<Result<Vec<_>>>()?;
        return Ok(format!(
            "SELECT {} FROM {} WHERE {} IN ({}){}",
            select_list(&table.columns),
            table_name(t),
            quote_ident(&key.name),
            list.join(", "),
            order_by(&keys)
        ));
    }
    let mut branches = Vec::with_capacity(keys_values.len());
    for tuple in keys_values {
        if tuple.len() != keys.len() {
            return Err(CaptureError::InvalidRequest(format!(
                "A key has {} values but the key has {} columns",
                tuple.len(),
                keys.len()
            )));
        }
        let terms = keys
            .iter()
            .zip(tuple.iter())
            .map(|(k, v)| {
                Ok(format!(
                    "{} = {}",
                    quote_ident(&k.name),
                    params.typed(v, k)?
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        branches.push(format!("({})", terms.join(" AND ")));
    }
    Ok(format!(
        "SELECT {} FROM {} WHERE {}{}",
        select_list(&table.columns),
        table_name(t),
        branches.join(" OR "),
        order_by(&keys)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mssql::decode::{int, text};

    fn col(name: &str, type_name: &str, max_length: i32) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            type_name: type_name.into(),
            max_length,
            ..Default::default()
        }
    }

    fn table(keys: &[&str]) -> TableSchema {
        TableSchema {
            table: Some(TableRef {
                database: "shop".into(),
                schema: "dbo".into(),
                name: "order lines".into(),
            }),
            columns: vec![
                col("a", "int", 4),
                col("b", "varchar", 20),
                col("c", "nvarchar", -1),
                col("m", "money", 8),
            ],
            key_columns: keys.iter().map(|k| k.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn identifiers_and_strings_are_quoted() {
        assert_eq!(quote_ident("we]ird"), "[we]]ird]");
        assert_eq!(quote_string("it's"), "N'it''s'");
    }

    #[test]
    fn types_render_with_their_lengths() {
        assert_eq!(column_type_text(&col("x", "nvarchar", 100)), "nvarchar(50)");
        assert_eq!(
            column_type_text(&col("x", "varbinary", -1)),
            "varbinary(max)"
        );
        let d = ColumnSchema {
            type_name: "decimal".into(),
            precision: 38,
            scale: 38,
            ..Default::default()
        };
        assert_eq!(column_type_text(&d), "decimal(38,38)");
        let t = ColumnSchema {
            type_name: "datetime2".into(),
            scale: 3,
            ..Default::default()
        };
        assert_eq!(column_type_text(&t), "datetime2(3)");
    }

    #[test]
    fn composite_key_predicates_expand_to_prefix_equalities() {
        let t = table(&["a", "b"]);
        let keys = key_columns(&t).unwrap();
        let mut p = Params::default();
        let after = key_predicate(&keys, &[int(1), text("x")], Side::After, &mut p).unwrap();
        assert_eq!(
            after,
            "([a] > CAST(@P1 AS int) OR ([a] = CAST(@P1 AS int) AND [b] > CAST(@P2 AS varchar(20))))"
        );
        let at_most = key_predicate(&keys, &[int(9), text("y")], Side::AtMost, &mut p).unwrap();
        assert_eq!(
            at_most,
            "([a] < CAST(@P3 AS int) OR ([a] = CAST(@P3 AS int) AND [b] <= CAST(@P4 AS varchar(20))))"
        );
        assert_eq!(p.len(), 4);
        assert!(key_predicate(&keys, &[int(1)], Side::After, &mut p).is_err());
    }

    #[test]
    fn chunk_query_bounds_filters_and_orders() {
        let t = table(&["a"]);
        let mut p = Params::default();
        let q = chunk_query(&t, "b <> 'z'", Some(&[int(10)]), Some(&[int(20)]), &mut p).unwrap();
        assert_eq!(
            q,
            "SELECT [a], [b], [c], CAST([m] AS decimal(19,4)) AS [m] FROM [dbo].[order lines] \
             WHERE [a] > CAST(@P1 AS int) AND [a] <= CAST(@P2 AS int) AND (b <> 'z') ORDER BY [a]"
        );
        let mut p = Params::default();
        let first = chunk_query(&t, "", None, Some(&[int(20)]), &mut p).unwrap();
        assert!(
            first.ends_with("WHERE [a] <= CAST(@P1 AS int) ORDER BY [a]"),
            "{first}"
        );
        let heap = table(&[]);
        let all = chunk_query(&heap, "", None, None, &mut Params::default()).unwrap();
        assert_eq!(
            all,
            "SELECT [a], [b], [c], CAST([m] AS decimal(19,4)) AS [m] FROM [dbo].[order lines]"
        );
    }

    #[test]
    fn plan_query_reads_only_keys_in_key_order() {
        let t = table(&["b", "a"]);
        assert_eq!(
            plan_keys_query(&t, "a > 0").unwrap(),
            "SELECT [b], [a] FROM [dbo].[order lines] WHERE (a > 0) ORDER BY [b], [a]"
        );
        let mut t = table(&["zz"]);
        t.key_columns = vec!["zz".into()];
        assert!(plan_keys_query(&t, "").is_err());
    }

    #[test]
    fn rows_by_keys_or_their_tuples() {
        let t = table(&["a", "b"]);
        let k1 = [int(1), text("x")];
        let k2 = [int(2), text("y")];
        let mut p = Params::default();
        let q = rows_by_keys_query(&t, &[&k1, &k2], &mut p).unwrap();
        assert!(q.contains(
            "WHERE ([a] = CAST(@P1 AS int) AND [b] = CAST(@P2 AS varchar(20))) OR ([a] = CAST(@P3 AS int) AND [b] = CAST(@P4 AS varchar(20))) ORDER BY [a], [b]"
        ), "{q}");
        assert!(rows_by_keys_query(&table(&[]), &[&k1], &mut Params::default()).is_err());
        let single = table(&["a"]);
        let q =
            rows_by_keys_query(&single, &[&[int(1)], &[int(2)]], &mut Params::default()).unwrap();
        assert!(
            q.ends_with("WHERE [a] IN (CAST(@P1 AS int), CAST(@P2 AS int)) ORDER BY [a]"),
            "{q}"
        );
    }
}
