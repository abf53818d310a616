//! PostgreSQL DDL for an assigned table group: pure functions from [`TableTarget`]s to SQL
//! text, golden-tested below.
//!
//! The statements come in the order the data phases need them:
//! 1. [`TableDdl::create_schema`], [`TableDdl::create_table`] (columns, PK, UNIQUE
//!    constraints, tinyint CHECKs, defaults, identity, computed columns) and
//!    [`TableDdl::key_index`] — what full sync and the change apply need to write rows;
//!    a table about to be bulk loaded gets its keys after the load instead
//!    ([`DdlOptions::defer_keys`], [`TableDdl::keys`]);
//! 2. [`foreign_keys`] `NOT VALID` once every table of the group and its keys exist (they
//!    never block the data phases: apply sessions run with `session_replication_role =
//!    replica`);
//! 3. [`TableDdl::post_load`] after the full sync: secondary and partial indexes, CHECKs,
//!    identity restarts, then [`ForeignKeyDdl::validate`].
//!
//! Whatever cannot be translated is left out and explained in [`TableDdl::notes`], never
//! guessed.

use dbsync_proto::v1::{ColumnSchema, IndexSchema, SequenceSchema, TableSchema};

use dbsync_typemap::{identity_clause, identity_setval, pg_collation, PgCollation};

use crate::pg::types::{
    capitalize, expr_context, map_column, map_column_type, quote_ident, quote_literal,
    shorten_identifier, translate_expression, ExprUsage, MappingOptions, PgKind,
};
use crate::plan::TableTarget;

#[derive(Clone, Copy, Debug)]
pub struct DdlOptions {
    /// `server_version_num` of the target (e.g. 150004); decides `NULLS NOT DISTINCT`.
    pub server_version_num: u32,
    /// Character columns with a case-insensitive SQL Server collation (`*_CI_*`) get a
    /// nondeterministic ICU collation ([`pg_collation`]), so unique keys and `=` stay
    /// case-insensitive as on the source. Off: the database default (case-sensitive).
    pub ci_collations: bool,
    /// The table is about to be bulk loaded: its primary key, UNIQUE constraints and key
    /// index are left out of [`TableDdl::create_table`] and come as [`TableDdl::keys`] after
    /// the load. Parallel COPY into a table without indexes and one sorted index build
    /// afterwards costs PostgreSQL about half the CPU of maintaining the B-trees row by row.
    /// Chunks stay exactly-once without a key: each commits with its done flag.
    pub defer_keys: bool,
}

impl Default for DdlOptions {
    fn default() -> Self {
        DdlOptions {
            server_version_num: 150000,
            ci_collations: true,
            defer_keys: false,
        }
    }
}

/// A key constraint or key index built after the load ([`DdlOptions::defer_keys`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyDdl {
    /// The constraint's name, to see whether a resumed post-load already created it; `None`
    /// for the key index, whose statement says `IF NOT EXISTS`.
    pub constraint: Option<String>,
    pub sql: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableDdl {
    pub create_schema: String,
    pub create_table: String,
    /// The unique index that gives the row key when the table has no primary key.
    pub key_index: Option<String>,
    /// With [`DdlOptions::defer_keys`]: the primary key, UNIQUE constraints and key index,
    /// built after the load, before anything else of [`TableDdl::post_load`].
    pub keys: Vec<KeyDdl>,
    /// Secondary indexes, CHECK constraints, identity restarts.
    pub post_load: Vec<String>,
    /// What was not created as on the source, and why.
    pub notes: Vec<String>,
    /// `CREATE COLLATION IF NOT EXISTS` statements the table's columns need, run first.
    pub collations: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForeignKeyDdl {
    pub name: String,
    pub create: String,
    /// `None` when the source constraint is not trusted: it stays NOT VALID.
    pub validate: Option<String>,
}

fn column_list(t: &TableTarget, names: &[String]) -> Result<Vec<String>, String> {
    names
        .iter()
        .map(|n| {
            t.target_column(n)
                .map(|c| quote_ident(&c.name))
                .ok_or_else(|| format!("column {n} is not written"))
        })
        .collect()
}

pub fn table_ddl(t: &TableTarget, opts: &DdlOptions) -> Result<TableDdl, String> {
    let mut ddl = TableDdl {
        create_schema: format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&t.schema)),
        ..Default::default()
    };
    let ctx = expr_context(t, ExprUsage::Default);
    let mut items: Vec<String> = Vec::new();
    for (c, tc) in t.source.columns.iter().zip(&t.columns) {
        if tc.skip {
            continue;
        }
        let mapped = map_column(c, &MappingOptions::default()).map_err(|e| e.to_string())?;
        let mut def = format!("{} {}", quote_ident(&tc.name), mapped.ddl());
        if let Some(collation) = column_collation(c, mapped.kind, opts) {
            def.push_str(" COLLATE ");
            def.push_str(collation.name);
            if !ddl.collations.iter().any(|s| s == collation.create_sql) {
                ddl.collations.push(collation.create_sql.to_string());
            }
        }
        if !c.computed_definition.is_empty() {
            match translate_expression(&c.computed_definition, &ctx.clone().with_target(ExprUsage::Computed, &mapped)) {
                Ok(expr) => def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED")),
                Err(e) => ddl.notes.push(format!(
                    "computed column {} not translated ({e}); created as a plain column filled with the source values",
                    c.name
                )),
            }
        }
        match identity_clause(c, &mapped) {
            Ok(Some(clause)) => {
                def.push(' ');
                def.push_str(&clause);
                if let Some(id) = &c.identity {
                    let (value, is_called) = identity_setval(id);
                    ddl.post_load.push(format!(
                        "SELECT setval(pg_get_serial_sequence({}, {}), {value}, {is_called})",
                        quote_literal(&t.qualified),
                        quote_literal(&tc.name)
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => ddl.notes.push(format!(
                "{e}; the values are copied, no identity is created"
            )),
        }
        if c.identity.is_none()
            && !c.default_definition.is_empty()
            && c.computed_definition.is_empty()
        {
            match translate_expression(
                &c.default_definition,
                &ctx.clone().with_target(ExprUsage::Default, &mapped),
            ) {
                Ok(expr) => def.push_str(&format!(" DEFAULT {expr}")),
                Err(e) => ddl
                    .notes
                    .push(format!("default of column {} not translated: {e}", c.name)),
            }
        }
        if !c.nullable {
            def.push_str(" NOT NULL");
        }
        items.push(def);
        if let Some(check) = mapped.check_sql(&quote_ident(&tc.name)) {
            items.push(format!(
                "CONSTRAINT {} CHECK ({check})",
                quote_ident(&t.object_name(&format!(
                    "{}_{}_{}",
                    t.table,
                    tc.name,
                    c.type_name.to_lowercase()
                )))
            ));
        }
    }
    let key_index_name = t.source.key_source.strip_prefix("unique_index:");
    for ix in &t.source.indexes {
        if ix.disabled {
            ddl.notes.push(format!(
                "index {} is disabled on the source; not created",
                ix.name
            ));
            continue;
        }
        let keys: Vec<String> = ix
            .columns
            .iter()
            .filter(|c| !c.included)
            .map(|c| c.name.clone())
            .collect();
        if ix.is_primary_key || ix.is_unique_constraint {
            let cols = column_list(t, &keys).map_err(|e| {
                format!(
                    "{} {}: {e}",
                    if ix.is_primary_key {
                        "primary key"
                    } else {
                        "unique constraint"
                    },
                    ix.name
                )
            })?;
            let constraint = t.object_name(&ix.name);
            let definition = if ix.is_primary_key {
                format!("PRIMARY KEY ({})", cols.join(", "))
            } else {
                format!(
                    "UNIQUE{} ({})",
                    nulls_not_distinct(t, ix, opts),
                    cols.join(", ")
                )
            };
            let item = format!("CONSTRAINT {} {definition}", quote_ident(&constraint));
            if opts.defer_keys {
                ddl.keys.push(KeyDdl {
                    constraint: Some(constraint),
                    sql: format!("ALTER TABLE {} ADD {item}", t.qualified),
                });
            } else {
                items.push(item);
            }
            continue;
        }
        match index_ddl(t, ix, opts) {
            Ok((sql, note)) => {
                if let Some(n) = note {
                    ddl.notes.push(n);
                }
                if key_index_name == Some(ix.name.as_str()) {
                    if opts.defer_keys {
                        ddl.keys.push(KeyDdl {
                            constraint: None,
                            sql,
                        });
                    } else {
                        ddl.key_index = Some(sql);
                    }
                } else {
                    ddl.post_load.push(sql);
                }
            }
            Err(e) => ddl
                .notes
                .push(format!("index {} not created: {e}", ix.name)),
        }
    }
    for ck in &t.source.checks {
        if ck.disabled {
            ddl.notes.push(format!(
                "CHECK {} is disabled on the source; not created",
                ck.name
            ));
            continue;
        }
        match translate_expression(&ck.definition, &expr_context(t, ExprUsage::Check)) {
            Ok(expr) => ddl.post_load.push(format!(
                "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({expr})",
                t.qualified,
                quote_ident(&t.object_name(&ck.name))
            )),
            Err(e) => ddl.notes.push(format!(
                "CHECK {} ({}) not translated: {e}",
                ck.name, ck.definition
            )),
        }
    }
    ddl.create_table = format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    {}\n)",
        t.qualified,
        items.join(",\n    ")
    );
    Ok(ddl)
}

/// The ICU collation a character column gets (see [`DdlOptions::ci_collations`]).
fn column_collation(c: &ColumnSchema, kind: PgKind, opts: &DdlOptions) -> Option<PgCollation> {
    let character = matches!(
        kind,
        PgKind::Char { .. } | PgKind::Varchar { .. } | PgKind::Text
    );
    pg_collation(&c.collation).filter(|_| opts.ci_collations && character)
}

/// SQL Server's UNIQUE allows one NULL; PostgreSQL 15+ says so with NULLS NOT DISTINCT.
fn nulls_not_distinct(t: &TableTarget, ix: &IndexSchema, opts: &DdlOptions) -> &'static str {
    let nullable = ix.columns.iter().filter(|c| !c.included).any(|ic| {
        t.source
            .columns
            .iter()
            .any(|c| c.name == ic.name && c.nullable)
    });
    if nullable && ix.filter_definition.is_empty() && opts.server_version_num >= 150000 {
        " NULLS NOT DISTINCT"
    } else {
        ""
    }
}

fn index_ddl(
    t: &TableTarget,
    ix: &IndexSchema,
    opts: &DdlOptions,
) -> Result<(String, Option<String>), String> {
    let mut keys = Vec::new();
    let mut included = Vec::new();
    for c in &ix.columns {
        let name = t
            .target_column(&c.name)
            .map(|tc| quote_ident(&tc.name))
            .ok_or_else(|| format!("column {} is not written", c.name))?;
        if c.included {
            included.push(name);
        } else if c.descending {
            keys.push(format!("{name} DESC"));
        } else {
            keys.push(name);
        }
    }
    if keys.is_empty() {
        return Err("no key columns".into());
    }
    // Index names share the schema's relation namespace in PostgreSQL: prefix the table.
    let name = t.object_name(&format!("{}_{}", t.table, ix.name));
    let mut sql = format!(
        "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
        if ix.is_unique { "UNIQUE " } else { "" },
        quote_ident(&name),
        t.qualified,
        keys.join(", ")
    );
    if !included.is_empty() {
        sql.push_str(&format!(" INCLUDE ({})", included.join(", ")));
    }
    if ix.is_unique {
        sql.push_str(nulls_not_distinct(t, ix, opts));
    }
    let mut note = None;
    if !ix.filter_definition.is_empty() {
        match translate_expression(
            &ix.filter_definition,
            &expr_context(t, ExprUsage::IndexPredicate),
        ) {
            Ok(filter) => sql.push_str(&format!(" WHERE {filter}")),
            Err(e) if ix.is_unique => {
                return Err(format!(
                    "filter {} not translated ({e}); without it the index would be stricter",
                    ix.filter_definition
                ))
            }
            Err(e) => {
                note = Some(format!(
                    "filter of index {} ({}) not translated ({e}); created without the filter",
                    ix.name, ix.filter_definition
                ))
            }
        }
    }
    Ok((sql, note))
}

/// Foreign keys of `t` whose referenced table is in the group, created NOT VALID.
pub fn foreign_keys(t: &TableTarget, group: &[TableTarget]) -> (Vec<ForeignKeyDdl>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for fk in &t.source.foreign_keys {
        if fk.disabled {
            notes.push(format!(
                "foreign key {} is disabled on the source; not created",
                fk.name
            ));
            continue;
        }
        let referenced = fk.referenced_table.clone().unwrap_or_default();
        let Some(rt) = group
            .iter()
            .find(|g| g.source.table.as_ref() == Some(&referenced))
        else {
            notes.push(format!(
                "foreign key {} references {}.{}.{}, which is not in this table group; not created",
                fk.name, referenced.database, referenced.schema, referenced.name
            ));
            continue;
        };
        let cols = column_list(t, &fk.columns);
        let rcols = column_list(rt, &fk.referenced_columns);
        let (cols, rcols) = match (cols, rcols) {
            (Ok(c), Ok(r)) => (c, r),
            (Err(e), _) | (_, Err(e)) => {
                notes.push(format!("foreign key {} not created: {e}", fk.name));
                continue;
            }
        };
        let name = t.object_name(&fk.name);
        let create = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON DELETE {} ON UPDATE {} NOT VALID",
            t.qualified,
            quote_ident(&name),
            cols.join(", "),
            rt.qualified,
            rcols.join(", "),
            referential_action(&fk.on_delete),
            referential_action(&fk.on_update)
        );
        let validate = (!fk.not_trusted).then(|| {
            format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                t.qualified,
                quote_ident(&name)
            )
        });
        out.push(ForeignKeyDdl {
            name,
            create,
            validate,
        });
    }
    (out, notes)
}

fn referential_action(action: &str) -> &'static str {
    match action {
        "CASCADE" => "CASCADE",
        "SET_NULL" => "SET NULL",
        "SET_DEFAULT" => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

/// A source sequence with its current value (`is_called`, so the next value is the source's
/// next one).
pub fn sequence_ddl(seq: &SequenceSchema, capitalization: &str) -> Vec<String> {
    let schema = shorten_identifier(&capitalize(&seq.schema, capitalization));
    let name = format!(
        "{}.{}",
        quote_ident(&schema),
        quote_ident(&shorten_identifier(&capitalize(&seq.name, capitalization)))
    );
    let ty = match seq.type_name.to_ascii_lowercase().as_str() {
        "tinyint" | "smallint" => "smallint",
        "int" => "integer",
        _ => "bigint",
    };
    let increment = if seq.increment == 0 { 1 } else { seq.increment };
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&schema)),
        format!(
            "CREATE SEQUENCE IF NOT EXISTS {name} AS {ty} INCREMENT BY {increment} MINVALUE {} MAXVALUE {} START WITH {}{}",
            seq.minimum_value,
            seq.maximum_value,
            seq.start_value,
            if seq.is_cycling { " CYCLE" } else { "" }
        ),
        format!("SELECT setval({}, {}, true)", quote_literal(&name), seq.current_value),
    ]
}

/// Renamed source columns (`sp_rename`: the same column id and type under a name the old
/// shape does not have, while the old name is gone) are renamed on the target, keeping their
/// values; [`alter_table_ddl`] would drop and re-add them. Returns the `RENAME COLUMN`
/// statements and `old` as it is after them.
pub fn rename_columns(old: &TableTarget, new: &TableTarget) -> (Vec<String>, TableTarget) {
    let mut renamed = old.clone();
    let mut statements = Vec::new();
    let has = |s: &TableSchema, name: &str| s.columns.iter().any(|c| c.name == name);
    for (i, o) in old.source.columns.iter().enumerate() {
        let Some(j) = new.source.columns.iter().position(|n| {
            n.column_id == o.column_id
                && n.column_id != 0
                && n.name != o.name
                && n.type_name == o.type_name
                && !has(&old.source, &n.name)
                && !has(&new.source, &o.name)
        }) else {
            continue;
        };
        let (from, to) = (&old.columns[i], &new.columns[j]);
        if from.skip || to.skip {
            continue;
        }
        if from.name != to.name {
            statements.push(format!(
                "ALTER TABLE {} RENAME COLUMN {} TO {}",
                old.qualified,
                quote_ident(&from.name),
                quote_ident(&to.name)
            ));
        }
        renamed.source.columns[i].name = new.source.columns[j].name.clone();
        renamed.columns[i] = to.clone();
    }
    (statements, renamed)
}

/// ALTER TABLE statements that bring a target table from the `old` source schema to the
/// `new` one (a schema change followed on the source): added columns (nullable, since
/// existing rows have no value), dropped columns, changed types. Case-insensitive columns keep
/// their ICU collation (a type change would otherwise reset it to the default).
pub fn alter_table_ddl(old: &TableTarget, new: &TableTarget) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (c, tc) in new.source.columns.iter().zip(&new.columns) {
        if tc.skip {
            continue;
        }
        let mapped = map_column(c, &MappingOptions::default())
            .map_err(|e| format!("column {}: {e}", c.name))?;
        let mut ty = mapped.ddl();
        if let Some(collation) = column_collation(c, mapped.kind, &DdlOptions::default()) {
            if !out.iter().any(|s| s == collation.create_sql) {
                out.insert(0, collation.create_sql.to_string());
            }
            ty = format!("{ty} COLLATE {}", collation.name);
        }
        match old.source.columns.iter().find(|o| o.name == c.name) {
            None => out.push(format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {ty}",
                new.qualified,
                quote_ident(&tc.name)
            )),
            Some(o) => {
                let old_ty = map_column_type(o).map_err(|e| format!("column {}: {e}", o.name))?;
                if old_ty != mapped.ddl() || o.collation != c.collation {
                    out.push(format!(
                        "ALTER TABLE {} ALTER COLUMN {1} TYPE {ty} USING {1}::{2}",
                        new.qualified,
                        quote_ident(&tc.name),
                        mapped.ddl()
                    ));
                }
            }
        }
    }
    for (o, tc) in old.source.columns.iter().zip(&old.columns) {
        if !tc.skip && !new.source.columns.iter().any(|c| c.name == o.name) {
            out.push(format!(
                "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
                old.qualified,
                quote_ident(&tc.name)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::TableTarget;
    use dbsync_proto::v1::*;

    fn col(name: &str, ty: &str, len: i32, p: i32, s: i32, nullable: bool) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            type_name: ty.into(),
            max_length: len,
            precision: p,
            scale: s,
            nullable,
            ..Default::default()
        }
    }

    pub(crate) fn orders_plan() -> TablePlan {
        let mut id = col("OrderID", "int", 4, 10, 0, false);
        id.identity = Some(Identity {
            seed: 1,
            increment: 1,
            last_value: Some(41),
        });
        let mut created = col("CreatedAt", "datetime2", 8, 27, 7, false);
        created.default_definition = "(sysdatetime())".into();
        let mut flag = col("IsPaid", "bit", 1, 1, 0, false);
        flag.default_definition = "((0))".into();
        let mut total = col("Total", "decimal", 9, 12, 2, true);
        total.computed_definition = "([Qty]*[Price])".into();
        let table = TableSchema {
            table: Some(TableRef {
                database: "shop".into(),
                schema: "dbo".into(),
                name: "Orders".into(),
            }),
            columns: vec![
                id,
                col("CustomerID", "int", 4, 10, 0, false),
                col("Qty", "tinyint", 1, 3, 0, false),
                col("Price", "money", 8, 19, 4, false),
                total,
                col("Note", "nvarchar", -1, 0, 0, true),
                col("Code", "char", 10, 0, 0, true),
                created,
                flag,
            ],
            indexes: vec![
                IndexSchema {
                    name: "PK_Orders".into(),
                    is_primary_key: true,
                    is_unique: true,
                    clustered: true,
                    columns: vec![IndexColumn {
                        name: "OrderID".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                IndexSchema {
                    name: "UQ_Orders_Code".into(),
                    is_unique: true,
                    is_unique_constraint: true,
                    columns: vec![IndexColumn {
                        name: "Code".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                IndexSchema {
                    name: "IX_Customer".into(),
                    columns: vec![
                        IndexColumn {
                            name: "CustomerID".into(),
                            ..Default::default()
                        },
                        IndexColumn {
                            name: "CreatedAt".into(),
                            descending: true,
                            ..Default::default()
                        },
                        IndexColumn {
                            name: "Note".into(),
                            included: true,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                },
                IndexSchema {
                    name: "IX_Unpaid".into(),
                    is_unique: true,
                    columns: vec![IndexColumn {
                        name: "CustomerID".into(),
                        ..Default::default()
                    }],
                    filter_definition: "([IsPaid]=(0))".into(),
                    ..Default::default()
                },
            ],
            foreign_keys: vec![ForeignKeySchema {
                name: "FK_Orders_Customers".into(),
                columns: vec!["CustomerID".into()],
                referenced_table: Some(TableRef {
                    database: "shop".into(),
                    schema: "dbo".into(),
                    name: "Customers".into(),
                }),
                referenced_columns: vec!["CustomerID".into()],
                on_delete: "CASCADE".into(),
                on_update: "NO_ACTION".into(),
                ..Default::default()
            }],
            checks: vec![
                CheckSchema {
                    name: "CK_Orders_Price".into(),
                    definition: "([Price]>=(0))".into(),
                    disabled: false,
                },
                CheckSchema {
                    name: "CK_Orders_Odd".into(),
                    definition: "(dbo.fn_odd([Qty])=(1))".into(),
                    disabled: false,
                },
            ],
            key_columns: vec!["OrderID".into()],
            key_source: "primary_key".into(),
            ..Default::default()
        };
        TablePlan {
            source: Some(table),
            capitalization: "lower".into(),
            ..Default::default()
        }
    }

    /// `customers_plan` with column ids, plus `extra` columns.
    pub(crate) fn plan_with_ids(names: &[(&str, &str, i32)]) -> TablePlan {
        let mut plan = customers_plan();
        let source = plan.source.as_mut().unwrap();
        for (i, c) in source.columns.iter_mut().enumerate() {
            c.column_id = i as i32 + 1;
        }
        for (name, type_name, id) in names {
            source.columns.push(ColumnSchema {
                name: (*name).into(),
                type_name: (*type_name).into(),
                max_length: 80,
                nullable: true,
                column_id: *id,
                ..Default::default()
            });
        }
        plan
    }

    fn target(plan: &TablePlan) -> TableTarget {
        TableTarget::from_plan(plan).unwrap()
    }

    #[test]
    fn a_renamed_column_is_renamed_on_the_target_and_nothing_else_changes() {
        let old = target(&plan_with_ids(&[("Note", "nvarchar", 3)]));
        let new = target(&plan_with_ids(&[("Remark", "nvarchar", 3)]));
        let (statements, renamed) = rename_columns(&old, &new);
        assert_eq!(
            statements,
            ["ALTER TABLE dbo.customers RENAME COLUMN note TO remark"]
        );
        assert!(alter_table_ddl(&renamed, &new).unwrap().is_empty());
        // Following the same change again (a replay after a restart) renames nothing.
        let (again, _) = rename_columns(&new, &new);
        assert!(again.is_empty());
    }

    #[test]
    fn drops_adds_and_shifted_column_ids_are_not_renames() {
        // A dropped column whose id a later column takes over (ids move on the stand-in).
        let old = target(&plan_with_ids(&[
            ("Note", "nvarchar", 3),
            ("Code", "nvarchar", 4),
        ]));
        let new = target(&plan_with_ids(&[("Code", "nvarchar", 3)]));
        let (statements, renamed) = rename_columns(&old, &new);
        assert!(statements.is_empty(), "{statements:?}");
        let ddl = alter_table_ddl(&renamed, &new).unwrap();
        assert_eq!(
            ddl,
            ["ALTER TABLE dbo.customers DROP COLUMN IF EXISTS note"]
        );
        // Another type under the same id is a drop and an add.
        let old = target(&plan_with_ids(&[("Note", "nvarchar", 3)]));
        let new = target(&plan_with_ids(&[("Flag", "int", 3)]));
        assert!(rename_columns(&old, &new).0.is_empty());
    }

    pub(crate) fn customers_plan() -> TablePlan {
        let table = TableSchema {
            table: Some(TableRef {
                database: "shop".into(),
                schema: "dbo".into(),
                name: "Customers".into(),
            }),
            columns: vec![
                col("CustomerID", "int", 4, 10, 0, false),
                col("Name", "nvarchar", 200, 0, 0, false),
            ],
            indexes: vec![IndexSchema {
                name: "PK_Customers".into(),
                is_primary_key: true,
                is_unique: true,
                columns: vec![IndexColumn {
                    name: "CustomerID".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            key_columns: vec!["CustomerID".into()],
            key_source: "primary_key".into(),
            ..Default::default()
        };
        TablePlan {
            source: Some(table),
            ..Default::default()
        }
    }

    #[test]
    fn orders_table_ddl_matches_the_golden_text() {
        let t = TableTarget::from_plan(&orders_plan()).unwrap();
        let ddl = table_ddl(&t, &DdlOptions::default()).unwrap();
        assert_eq!(ddl.create_schema, r#"CREATE SCHEMA IF NOT EXISTS dbo"#);
        assert_eq!(
            ddl.create_table,
            r#"CREATE TABLE IF NOT EXISTS dbo.orders (
    orderid integer GENERATED BY DEFAULT AS IDENTITY (START WITH 1 INCREMENT BY 1 MINVALUE 1) NOT NULL,
    customerid integer NOT NULL,
    qty smallint NOT NULL,
    CONSTRAINT orders_qty_tinyint CHECK (qty BETWEEN 0 AND 255),
    price numeric(19,4) NOT NULL,
    total numeric(12,2) GENERATED ALWAYS AS (qty * price) STORED,
    note text,
    code char(10),
    createdat timestamp(6) DEFAULT LOCALTIMESTAMP NOT NULL,
    ispaid boolean DEFAULT false NOT NULL,
    CONSTRAINT pk_orders PRIMARY KEY (orderid),
    CONSTRAINT uq_orders_code UNIQUE NULLS NOT DISTINCT (code)
)"#
        );
        assert_eq!(ddl.key_index, None);
        assert_eq!(
            ddl.post_load,
            vec![
                r#"SELECT setval(pg_get_serial_sequence('dbo.orders', 'orderid'), 41, true)"#.to_string(),
                r#"CREATE INDEX IF NOT EXISTS orders_ix_customer ON dbo.orders (customerid, createdat DESC) INCLUDE (note)"#.to_string(),
                r#"CREATE UNIQUE INDEX IF NOT EXISTS orders_ix_unpaid ON dbo.orders (customerid) WHERE ispaid = false"#.to_string(),
                r#"ALTER TABLE dbo.orders ADD CONSTRAINT ck_orders_price CHECK (price >= 0)"#.to_string(),
            ]
        );
        assert_eq!(ddl.notes.len(), 1, "{:?}", ddl.notes);
        assert!(ddl.notes[0].contains("CK_Orders_Odd") && ddl.notes[0].contains("fn_odd"));
    }

    #[test]
    fn deferred_keys_leave_the_table_without_indexes_until_after_the_load() {
        let t = TableTarget::from_plan(&orders_plan()).unwrap();
        let opts = DdlOptions {
            defer_keys: true,
            ..DdlOptions::default()
        };
        let ddl = table_ddl(&t, &opts).unwrap();
        let inline = table_ddl(&t, &DdlOptions::default()).unwrap();
        assert!(!ddl.create_table.contains("PRIMARY KEY") && !ddl.create_table.contains("UNIQUE"));
        assert_eq!(
            ddl.keys,
            vec![
                KeyDdl {
                    constraint: Some("pk_orders".into()),
                    sql: r#"ALTER TABLE dbo.orders ADD CONSTRAINT pk_orders PRIMARY KEY (orderid)"#.into(),
                },
                KeyDdl {
                    constraint: Some("uq_orders_code".into()),
                    sql: r#"ALTER TABLE dbo.orders ADD CONSTRAINT uq_orders_code UNIQUE NULLS NOT DISTINCT (code)"#.into(),
                },
            ]
        );
        assert!(inline.keys.is_empty());
        assert_eq!(ddl.post_load, inline.post_load);
    }

    #[test]
    fn foreign_keys_are_created_not_valid_only_inside_the_group() {
        let orders = TableTarget::from_plan(&orders_plan()).unwrap();
        let customers = TableTarget::from_plan(&customers_plan()).unwrap();
        let (fks, notes) = foreign_keys(&orders, &[orders.clone(), customers.clone()]);
        assert!(notes.is_empty());
        assert_eq!(
            fks[0].create,
            r#"ALTER TABLE dbo.orders ADD CONSTRAINT fk_orders_customers FOREIGN KEY (customerid) REFERENCES dbo.customers (customerid) ON DELETE CASCADE ON UPDATE NO ACTION NOT VALID"#
        );
        assert_eq!(
            fks[0].validate.as_deref(),
            Some(r#"ALTER TABLE dbo.orders VALIDATE CONSTRAINT fk_orders_customers"#)
        );
        let (fks, notes) = foreign_keys(&orders, std::slice::from_ref(&orders));
        assert!(fks.is_empty());
        assert!(notes[0].contains("not in this table group"));
    }

    #[test]
    fn schema_changes_become_alter_table() {
        let old = TableTarget::from_plan(&customers_plan()).unwrap();
        let mut plan = customers_plan();
        let src = plan.source.as_mut().unwrap();
        src.columns[1].max_length = 400;
        let mut email = col("Email", "varchar", 100, 0, 0, true);
        email.collation = "SQL_Latin1_General_CP1_CI_AS".into();
        src.columns.push(email);
        let new = TableTarget::from_plan(&plan).unwrap();
        assert_eq!(
            alter_table_ddl(&old, &new).unwrap(),
            vec![
                r#"CREATE COLLATION IF NOT EXISTS dbsync_ci_as (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"#.to_string(),
                r#"ALTER TABLE dbo.customers ALTER COLUMN name TYPE varchar(200) USING name::varchar(200)"#.to_string(),
                r#"ALTER TABLE dbo.customers ADD COLUMN IF NOT EXISTS email varchar(100) COLLATE dbsync_ci_as"#.to_string(),
            ]
        );
        let mut table = plan.source.clone().unwrap();
        table.columns.truncate(1);
        table.columns.push(
            plan.source
                .as_ref()
                .unwrap()
                .columns
                .last()
                .unwrap()
                .clone(),
        );
        let mut with_email = customers_plan();
        with_email.source = Some(table);
        let ddl = table_ddl(
            &TableTarget::from_plan(&with_email).unwrap(),
            &DdlOptions::default(),
        )
        .unwrap();
        assert!(
            ddl.create_table
                .contains("email varchar(100) COLLATE dbsync_ci_as"),
            "{}",
            ddl.create_table
        );
        assert_eq!(ddl.collations.len(), 1);
        let off = DdlOptions {
            ci_collations: false,
            ..DdlOptions::default()
        };
        let ddl = table_ddl(&TableTarget::from_plan(&with_email).unwrap(), &off).unwrap();
        assert!(!ddl.create_table.contains("COLLATE") && ddl.collations.is_empty());
        assert_eq!(
            alter_table_ddl(&new, &old).unwrap().last().unwrap(),
            r#"ALTER TABLE dbo.customers DROP COLUMN IF EXISTS email"#
        );
    }

    #[test]
    fn sequences_keep_their_current_value() {
        let seq = SequenceSchema {
            schema: "dbo".into(),
            name: "OrderNo".into(),
            type_name: "bigint".into(),
            start_value: 1000,
            increment: 10,
            minimum_value: 1,
            maximum_value: 999999,
            current_value: 1230,
            ..Default::default()
        };
        assert_eq!(
            sequence_ddl(&seq, "lower"),
            vec![
                r#"CREATE SCHEMA IF NOT EXISTS dbo"#.to_string(),
                r#"CREATE SEQUENCE IF NOT EXISTS dbo.orderno AS bigint INCREMENT BY 10 MINVALUE 1 MAXVALUE 999999 START WITH 1000"#.to_string(),
                r#"SELECT setval('dbo.orderno', 1230, true)"#.to_string(),
            ]
        );
    }
}
