//! Capture instances: the frozen column set of one `sp_cdc_enable_table` call.

use chrono::NaiveDateTime;

use crate::api::SqlError;
use crate::engine::catalog::TableDef;
use crate::engine::value::{err, type_name};
use crate::types::SqlType;

/// A column of a capture instance (`cdc.captured_columns`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedColumn {
    /// `sys.columns.column_id` in the source table (stable across DDL).
    pub column_id: i32,
    pub name: String,
    /// Type as it was when the instance was created (type changes are propagated).
    pub ty: SqlType,
    /// 1-based position among captured columns: the bit in `__$update_mask`.
    pub ordinal: usize,
    pub is_computed: bool,
}

impl CapturedColumn {
    /// text, ntext and image: NULL in ops 1 and 3.
    pub fn is_legacy_lob(&self) -> bool {
        matches!(
            self.ty,
            SqlType::Text { .. } | SqlType::NText { .. } | SqlType::Image
        )
    }

    /// varchar(max), nvarchar(max), varbinary(max): NULL in op 3 unless changed.
    pub fn is_max_lob(&self) -> bool {
        matches!(
            self.ty,
            SqlType::VarChar { len: None, .. }
                | SqlType::NVarChar { len: None, .. }
                | SqlType::VarBinary { len: None }
        )
    }

    /// The change-table column type (rowversion becomes binary(8)).
    pub fn ct_type(&self) -> SqlType {
        match &self.ty {
            SqlType::RowVersion => SqlType::Binary { len: 8 },
            other => other.clone(),
        }
    }

    pub fn type_name(&self) -> String {
        type_name(&self.ty)
    }
}

/// A capture instance (`cdc.change_tables` row plus its columns).
#[derive(Debug, Clone)]
pub struct CaptureInstance {
    pub name: String,
    /// object_id of `cdc.<name>_CT` (also `cdc.captured_columns.object_id`).
    pub object_id: i32,
    pub source_object_id: i32,
    pub source_schema: String,
    pub source_name: String,
    pub columns: Vec<CapturedColumn>,
    /// The row identifier (primary key or `@index_name`): (column name, column id).
    pub index_columns: Vec<(String, i32)>,
    pub index_name: Option<String>,
    pub supports_net_changes: bool,
    pub role_name: Option<String>,
    pub filegroup_name: Option<String>,
    pub create_date: NaiveDateTime,
    /// Positions of `__$start_lsn, __$command_id, __$seqval, __$operation` … in the change
    /// table's storage key (from its definition).
    pub ct_storage_key: Vec<usize>,
}

impl CaptureInstance {
    pub fn ct_table_name(&self) -> String {
        format!("{}_CT", self.name)
    }

    pub fn column(&self, name: &str) -> Option<&CapturedColumn> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Comma-separated quoted column list (sp_cdc_help_change_data_capture).
    pub fn captured_column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("[{}]", c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn index_column_list(&self) -> Option<String> {
        (!self.index_columns.is_empty()).then(|| {
            self.index_columns
                .iter()
                .map(|(n, _)| format!("[{n}]"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }
}

/// Splits `@captured_column_list`: comma-separated, names optionally quoted with "" or [].
pub fn parse_column_list(list: &str) -> Result<Vec<String>, SqlError> {
    let mut names = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut name = String::new();
        match first {
            '[' | '"' => {
                let close = if first == '[' { ']' } else { '"' };
                chars.next();
                loop {
                    match chars.next() {
                        Some(c) if c == close => {
                            // A doubled closing character is a literal one.
                            if chars.peek() == Some(&close) {
                                chars.next();
                                name.push(close);
                            } else {
                                break;
                            }
                        }
                        Some(c) => name.push(c),
                        None => return Err(bad_list(list)),
                    }
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
                name = name.trim_end().to_string();
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if name.is_empty() {
            return Err(bad_list(list));
        }
        names.push(name);
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(_) => return Err(bad_list(list)),
        }
    }
    if names.is_empty() {
        return Err(bad_list(list));
    }
    Ok(names)
}

fn bad_list(list: &str) -> SqlError {
    err(22942, format!("Columns specified in the captured column list could not be mapped to columns in source table. Verify that the columns specified in the parameter @captured_column_list ('{list}') are delimited properly and match columns in the source table."))
}

/// Columns captured by a new instance: all columns of `table` (in column order) or the named
/// ones (in table order, as SQL Server assigns ordinals by column_id).
pub fn select_columns(
    table: &TableDef,
    list: Option<&str>,
) -> Result<Vec<CapturedColumn>, SqlError> {
    const RESERVED: [&str; 5] = [
        "__$start_lsn",
        "__$end_lsn",
        "__$seqval",
        "__$operation",
        "__$update_mask",
    ];
    let wanted = match list {
        None => None,
        Some(l) => {
            let names = parse_column_list(l)?;
            for n in &names {
                if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(n)) {
                    return Err(err(22975, format!("Source table '{}' contains one of the following reserved column names: __$start_lsn, __$end_lsn, __$seqval, __$operation, and __$update_mask. To enable Change Data Capture for this table, specify a captured column list and ensure that these columns are excluded from the list.", table.name)));
                }
                if table.column_index(n).is_none() {
                    return Err(err(
                        22930,
                        format!("Could not locate '{n}' as a column of source table '{}.{}'. Specify a valid column name.", table.schema, table.name),
                    ));
                }
            }
            Some(names)
        }
    };
    let mut out = Vec::new();
    for c in &table.columns {
        if let Some(names) = &wanted {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&c.name)) {
                continue;
            }
        }
        out.push(CapturedColumn {
            column_id: c.column_id,
            name: c.name.clone(),
            ty: c.ty.clone(),
            ordinal: out.len() + 1,
            is_computed: c.computed.is_some(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_lists_accept_quotes_and_commas_in_names() {
        assert_eq!(
            parse_column_list("a, [b], \"c\"").unwrap(),
            vec!["a", "b", "c"]
        );
        assert_eq!(parse_column_list("[x,y] , z").unwrap(), vec!["x,y", "z"]);
        assert_eq!(parse_column_list("[a]]b]").unwrap(), vec!["a]b"]);
        assert!(parse_column_list("a,,b").is_err());
        assert!(parse_column_list("[a").is_err());
        assert!(parse_column_list("  ").is_err());
    }
}
