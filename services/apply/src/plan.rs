//! One assigned table as apply sees it: source columns mapped to target columns, the key,
//! and the options that change how rows are written.

use std::sync::Arc;

use dbsync_proto::v1::{TablePlan, TableRef, TableSchema};

use crate::error::{ApplyError, Result};
use crate::etl::TableEtl;
use crate::pg::types::{capitalize, quote_ident, shorten_identifier};

/// A source column and where it goes.
#[derive(Clone, Debug)]
pub struct TargetColumn {
    pub source_name: String,
    /// Target name (already capitalized and shortened).
    pub name: String,
    /// Not written: skipped by the plan.
    pub skip: bool,
}

#[derive(Clone, Debug)]
pub struct TableTarget {
    pub source: TableSchema,
    /// `database.schema.table` of the source: the key of checkpoints and progress.
    pub source_name: String,
    pub schema: String,
    pub table: String,
    /// `"schema"."table"`.
    pub qualified: String,
    /// One per source column, in source order (`TableSchema.columns`, `RowBatch` order).
    pub columns: Vec<TargetColumn>,
    /// Source column indices of the row key (empty for a table without key).
    pub key: Vec<usize>,
    pub where_filter: String,
    pub sync_inserts: bool,
    pub sync_updates: bool,
    pub sync_deletes: bool,
    pub capitalization: String,
    /// ETL column expressions, compiled; `None` when the table has none.
    pub etl: Option<Arc<TableEtl>>,
}

pub fn source_name(t: &TableRef) -> String {
    format!("{}.{}.{}", t.database, t.schema, t.name)
}

impl TableTarget {
    pub fn from_plan(plan: &TablePlan) -> Result<TableTarget> {
        let source = plan.source.clone().ok_or_else(|| ApplyError::InvalidPlan {
            object: format!("{}.{}", plan.target_schema, plan.target_table),
            detail: "the table plan carries no source schema".into(),
        })?;
        let table_ref = source.table.clone().unwrap_or_default();
        let source_name = source_name(&table_ref);
        let policy = if plan.capitalization.is_empty() {
            "lower"
        } else {
            plan.capitalization.as_str()
        };
        let schema = if plan.target_schema.is_empty() {
            capitalize(&table_ref.schema, policy)
        } else {
            plan.target_schema.clone()
        };
        let table = if plan.target_table.is_empty() {
            capitalize(&table_ref.name, policy)
        } else {
            plan.target_table.clone()
        };
        let (schema, table) = (shorten_identifier(&schema), shorten_identifier(&table));
        let mut columns = Vec::with_capacity(source.columns.len());
        let mut expressions = Vec::new();
        for c in &source.columns {
            let planned = plan.columns.iter().find(|p| p.source_name == c.name);
            if let Some(p) = planned.filter(|p| !p.expression.trim().is_empty() && !p.skip) {
                expressions.push((columns.len(), p.expression.as_str()));
            }
            let name = match planned {
                Some(p) if !p.target_name.is_empty() => p.target_name.clone(),
                _ => capitalize(&c.name, policy),
            };
            columns.push(TargetColumn {
                source_name: c.name.clone(),
                name: shorten_identifier(&name),
                skip: planned.is_some_and(|p| p.skip),
            });
        }
        let mut key = Vec::with_capacity(source.key_columns.len());
        for k in &source.key_columns {
            let idx = source
                .columns
                .iter()
                .position(|c| &c.name == k)
                .ok_or_else(|| ApplyError::InvalidPlan {
                    object: source_name.clone(),
                    detail: format!("key column {k} is not a column of the table"),
                })?;
            if columns[idx].skip {
                return Err(ApplyError::InvalidPlan {
                    object: source_name.clone(),
                    detail: format!("key column {k} cannot be skipped"),
                });
            }
            key.push(idx);
        }
        let etl = TableEtl::compile(&source_name, &source, &expressions)?;
        let target = TableTarget {
            qualified: format!("{}.{}", quote_ident(&schema), quote_ident(&table)),
            source,
            source_name,
            schema,
            table,
            columns,
            key,
            where_filter: plan.where_filter.clone(),
            sync_inserts: plan.sync_inserts,
            sync_updates: plan.sync_updates,
            sync_deletes: plan.sync_deletes,
            capitalization: policy.to_string(),
            etl,
        };
        crate::etl::check_filter(&target)?;
        Ok(target)
    }

    /// True when only rows matching `where_filter` are synced.
    pub fn has_filter(&self) -> bool {
        !self.where_filter.trim().is_empty()
    }

    /// The target name of a source column, if it is written.
    pub fn target_column(&self, source_column: &str) -> Option<&TargetColumn> {
        self.columns
            .iter()
            .find(|c| c.source_name == source_column && !c.skip)
    }

    /// A constraint or index name under this table's capitalization, shortened.
    pub fn object_name(&self, name: &str) -> String {
        shorten_identifier(&capitalize(name, &self.capitalization))
    }
}

/// True when an assignment that sets none of the three flags means "all operations".
pub fn normalize_ops(plan: &mut TablePlan) {
    if !plan.sync_inserts && !plan.sync_updates && !plan.sync_deletes {
        plan.sync_inserts = true;
        plan.sync_updates = true;
        plan.sync_deletes = true;
    }
}
