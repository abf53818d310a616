//! From the source catalog and the task definition to what appliers run: one [`TablePlan`] per
//! selected table (target names after renames, capitalization and PostgreSQL's 63-byte limit;
//! filters; DML operations; column expressions) and table groups.
//!
//! Groups: tables linked by foreign keys land in one group (union-find over the FK graph of
//! the selected tables), so one applier applies their changes in source commit order and the
//! target never sees a child row before its parent across appliers. A group never spans
//! databases (SQL Server FKs cannot), which also gives each group a single LSN space.

use std::collections::{BTreeMap, HashMap};

use dbsync_proto::v1::{ColumnPlan, SequenceSchema, TablePlan, TableRef, TableSchema};

use crate::spec::{DmlOperation, TaskSpec};

/// PostgreSQL's identifier limit in bytes (NAMEDATALEN - 1).
pub const PG_IDENTIFIER_MAX_BYTES: usize = 63;

/// `db.schema.table` of a source table.
pub fn source_key(t: &TableRef) -> String {
    format!("{}.{}.{}", t.database, t.schema, t.name)
}

/// Fits `name` into PostgreSQL's 63 bytes: longer names keep a prefix cut at a character
/// boundary plus `_` and 8 hex digits of their SHA-256, so distinct long names stay distinct
/// and the result is stable across runs.
pub fn shorten_identifier(name: &str) -> String {
    if name.len() <= PG_IDENTIFIER_MAX_BYTES {
        return name.to_string();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut cut = PG_IDENTIFIER_MAX_BYTES - 1 - suffix.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{suffix}", &name[..cut])
}

/// A planned table and the group it belongs to.
#[derive(Debug, Clone)]
pub struct PlannedTable {
    pub key: String,
    pub database: String,
    pub plan: TablePlan,
}

impl PlannedTable {
    pub fn target(&self) -> String {
        format!("{}.{}", self.plan.target_schema, self.plan.target_table)
    }
}

/// The target schema of source schema `database.schema`: its rename in `objects.schemas`,
/// else the name after the capitalization policy; within PostgreSQL's identifier limit.
fn target_schema_name(spec: &TaskSpec, database: &str, schema: &str) -> String {
    let schema_key = format!("{database}.{schema}");
    shorten_identifier(
        &spec
            .objects
            .schemas
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&schema_key))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| spec.objects.capitalization.apply(schema)),
    )
}

/// The source sequences the task creates on the target, named for it (schema renames and the
/// capitalization policy, as for tables). A sequence is selected when its database is, no
/// exclude pattern matches `db.schema.sequence`, and either an include pattern matches it or
/// a selected table lives in its schema (so `include: [shop.dbo.*]` brings dbo's sequences).
pub fn plan_sequences(
    spec: &TaskSpec,
    sequences: Vec<SequenceSchema>,
    tables: &[PlannedTable],
) -> Vec<SequenceSchema> {
    let objects = &spec.objects;
    sequences
        .into_iter()
        .filter(|q| {
            let full = format!("{}.{}.{}", q.database, q.schema, q.name);
            let same_schema = |t: &PlannedTable| {
                t.plan
                    .source
                    .as_ref()
                    .and_then(|s| s.table.as_ref())
                    .is_some_and(|r| {
                        r.database.eq_ignore_ascii_case(&q.database)
                            && r.schema.eq_ignore_ascii_case(&q.schema)
                    })
            };
            objects
                .databases
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&q.database))
                && !objects
                    .exclude
                    .iter()
                    .any(|p| crate::spec::glob_match(p, &full))
                && (objects.include.is_empty()
                    || objects
                        .include
                        .iter()
                        .any(|p| crate::spec::glob_match(p, &full))
                    || tables.iter().any(same_schema))
        })
        .map(|mut q| {
            q.schema = target_schema_name(spec, &q.database, &q.schema);
            q.name = shorten_identifier(&objects.capitalization.apply(&q.name));
            q
        })
        .collect()
}

/// Builds plans for the selected tables. Errors name the option or table and the fix.
pub fn build_plans(spec: &TaskSpec, tables: Vec<TableSchema>) -> Result<Vec<PlannedTable>, String> {
    let cap = spec.objects.capitalization;
    let mut problems = Vec::new();
    let mut planned = Vec::new();
    let mut used_options = vec![false; spec.objects.tables.len()];
    let option_keys: Vec<String> = spec
        .objects
        .tables
        .keys()
        .map(|k| spec.qualify_table(k).unwrap_or_else(|_| k.clone()))
        .collect();

    for schema in tables {
        let Some(t) = schema.table.clone() else {
            continue;
        };
        if !spec.objects.selects(&t.database, &t.schema, &t.name)
            || spec.is_dbsync_table(&t.schema, &t.name)
        {
            continue;
        }
        let key = source_key(&t);
        let option_index = option_keys
            .iter()
            .position(|k| k.eq_ignore_ascii_case(&key));
        if let Some(i) = option_index {
            used_options[i] = true;
        }
        let options =
            option_index.map(|i| spec.objects.tables.values().nth(i).expect("index in range"));
        let target_schema = target_schema_name(spec, &t.database, &t.schema);
        let target_table = options
            .and_then(|o| o.rename.clone())
            .unwrap_or_else(|| cap.apply(&t.name));

        let mut columns = Vec::with_capacity(schema.columns.len());
        let mut seen_targets: HashMap<String, String> = HashMap::new();
        let mut used_columns = BTreeMap::new();
        for c in &schema.columns {
            let col_opts = options.and_then(|o| {
                o.columns
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&c.name))
                    .map(|(k, v)| {
                        used_columns.insert(k.clone(), ());
                        v
                    })
            });
            let skip = col_opts.map(|o| o.skip).unwrap_or(false);
            let target_name = shorten_identifier(
                &col_opts
                    .and_then(|o| o.rename.clone())
                    .unwrap_or_else(|| cap.apply(&c.name)),
            );
            if !skip {
                if let Some(other) = seen_targets.insert(target_name.clone(), c.name.clone()) {
                    problems.push(format!(
                        "{key}: columns {other} and {} both map to target column {target_name}: rename one in objects.tables.{key}.columns",
                        c.name
                    ));
                }
            }
            columns.push(ColumnPlan {
                source_name: c.name.clone(),
                target_name,
                expression: col_opts
                    .and_then(|o| o.expression.clone())
                    .unwrap_or_default(),
                skip,
            });
        }
        if let Some(o) = options {
            for name in o.columns.keys().filter(|k| !used_columns.contains_key(*k)) {
                problems.push(format!(
                    "objects.tables.{key}.columns.{name}: the source table has no such column"
                ));
            }
        }
        if !columns.iter().any(|c| !c.skip) {
            problems.push(format!(
                "{key}: every column is skipped: sync at least one or exclude the table"
            ));
        }
        let ops = options.and_then(|o| o.operations.clone());
        let has = |op| ops.as_ref().map(|v| v.contains(&op)).unwrap_or(true);
        planned.push(PlannedTable {
            key,
            database: t.database.clone(),
            plan: TablePlan {
                source: Some(schema),
                target_schema,
                target_table: shorten_identifier(&target_table),
                columns,
                where_filter: options
                    .and_then(|o| o.where_filter.clone())
                    .unwrap_or_default(),
                sync_inserts: has(DmlOperation::Insert),
                sync_updates: has(DmlOperation::Update),
                sync_deletes: has(DmlOperation::Delete),
                capitalization: cap.as_str().to_string(),
            },
        });
    }
    for (i, used) in used_options.iter().enumerate() {
        if !used {
            problems.push(format!(
                "objects.tables.{}: no selected source table has this name (check the name and objects.include/exclude)",
                option_keys[i]
            ));
        }
    }
    let mut by_target: HashMap<String, &str> = HashMap::new();
    for p in &planned {
        if let Some(other) = by_target.insert(p.target(), &p.key) {
            problems.push(format!(
                "{other} and {} both map to target table {}: rename one in objects.tables or objects.schemas",
                p.key,
                p.target()
            ));
        }
    }
    if problems.is_empty() {
        Ok(planned)
    } else {
        Err(problems.join("; "))
    }
}

/// Splits tables into FK-connected groups (indices into `tables`), each within one database.
/// Deterministic: groups are ordered by their first table, tables keep their input order.
pub fn group_tables(tables: &[PlannedTable]) -> Vec<Vec<usize>> {
    let index: HashMap<String, usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.key.to_lowercase(), i))
        .collect();
    let mut parent: Vec<usize> = (0..tables.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (i, t) in tables.iter().enumerate() {
        let Some(schema) = &t.plan.source else {
            continue;
        };
        for fk in &schema.foreign_keys {
            let Some(r) = &fk.referenced_table else {
                continue;
            };
            let db = if r.database.is_empty() {
                &t.database
            } else {
                &r.database
            };
            let key = format!("{db}.{}.{}", r.schema, r.name).to_lowercase();
            if let Some(&j) = index.get(&key) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..tables.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbsync_proto::v1::{ColumnSchema, ForeignKeySchema};

    fn table(db: &str, schema: &str, name: &str, cols: &[&str], fks: &[&str]) -> TableSchema {
        TableSchema {
            table: Some(TableRef {
                database: db.into(),
                schema: schema.into(),
                name: name.into(),
            }),
            columns: cols
                .iter()
                .map(|c| ColumnSchema {
                    name: c.to_string(),
                    ..Default::default()
                })
                .collect(),
            foreign_keys: fks
                .iter()
                .map(|r| ForeignKeySchema {
                    referenced_table: Some(TableRef {
                        database: String::new(),
                        schema: "dbo".into(),
                        name: r.to_string(),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn spec(objects: &str) -> TaskSpec {
        TaskSpec::parse(&format!(
            "name: t\nsource: {{ host: h, user: u, password: p }}\ntarget: {{ host: h, user: u, password: p, database: d }}\nobjects: {objects}\n"
        ))
        .unwrap()
    }

    #[test]
    fn names_follow_renames_capitalization_and_the_63_byte_limit() {
        let long = "C".repeat(70);
        let s = spec(
            "{ databases: [Shop], schemas: { Shop.dbo: Public_X }, tables: { 'dbo.Orders': { rename: OrdersPG, where: 'Id > 5', operations: [insert], columns: { Note: { skip: true }, Total: { rename: TotalPG, expression: 'Total*2' } } } } }",
        );
        let plans = build_plans(
            &s,
            vec![
                table("Shop", "dbo", "Orders", &["Id", "Total", "Note"], &[]),
                table("Shop", "Sales", "Items", &["Id", &long], &[]),
            ],
        )
        .unwrap();
        let orders = &plans[0].plan;
        assert_eq!(
            (orders.target_schema.as_str(), orders.target_table.as_str()),
            ("Public_X", "OrdersPG")
        );
        assert_eq!(orders.where_filter, "Id > 5");
        assert!(orders.sync_inserts && !orders.sync_updates && !orders.sync_deletes);
        assert_eq!(orders.columns[0].target_name, "id");
        assert_eq!(
            (
                orders.columns[1].target_name.as_str(),
                orders.columns[1].expression.as_str()
            ),
            ("TotalPG", "Total*2")
        );
        assert!(orders.columns[2].skip);
        let items = &plans[1].plan;
        assert_eq!(
            (items.target_schema.as_str(), items.target_table.as_str()),
            ("sales", "items")
        );
        let shortened = &items.columns[1].target_name;
        assert_eq!(shortened.len(), 63);
        assert!(shortened.starts_with("ccccc"));
        assert_eq!(
            shortened,
            &shorten_identifier(&long.to_lowercase()),
            "stable"
        );
        assert_ne!(
            shorten_identifier(&format!("{long}a")),
            shorten_identifier(&format!("{long}b"))
        );
        // Multi-byte characters are never cut in half.
        assert!(shorten_identifier(&"é".repeat(40)).len() <= 63);
    }

    #[test]
    fn dbsync_own_tables_are_never_planned() {
        let tables = || {
            vec![
                table("shop", "dbo", "orders", &["id"], &[]),
                table("shop", "dbo", "dbsync_ddl_history", &["id"], &[]),
                table("shop", "DBO", "DBSYNC_Heartbeat", &["id"], &[]),
                table("shop", "dbo", "dbsync_orders", &["id"], &[]),
                table("shop", "sales", "dbsync_heartbeat", &["id"], &[]),
                table("shop", "dbo", "ds_heartbeat", &["id"], &[]),
            ]
        };
        let names = |plans: Vec<PlannedTable>| -> Vec<String> {
            plans
                .iter()
                .map(|p| source_key(p.plan.source.as_ref().unwrap().table.as_ref().unwrap()))
                .collect()
        };
        // An include that names them explicitly still does not select them.
        let s = spec("{ databases: [shop], include: ['shop.*.*', 'shop.dbo.dbsync_heartbeat'] }");
        assert_eq!(
            names(build_plans(&s, tables()).unwrap()),
            [
                "shop.dbo.orders",
                "shop.dbo.dbsync_orders",
                "shop.sales.dbsync_heartbeat",
                "shop.dbo.ds_heartbeat"
            ]
        );
        // With another prefix, that prefix's tables are dbsync's and dbsync_* are user tables.
        let mut s = spec("{ databases: [shop] }");
        s.incremental.object_prefix = "ds_".into();
        assert_eq!(
            names(build_plans(&s, tables()).unwrap()),
            [
                "shop.dbo.orders",
                "shop.dbo.dbsync_ddl_history",
                "shop.DBO.DBSYNC_Heartbeat",
                "shop.dbo.dbsync_orders",
                "shop.sales.dbsync_heartbeat"
            ]
        );
    }

    #[test]
    fn upper_and_source_capitalization() {
        let plans = build_plans(
            &spec("{ databases: [db], capitalization: upper }"),
            vec![table("db", "dbo", "Ab", &["cD"], &[])],
        )
        .unwrap();
        assert_eq!(
            (
                plans[0].plan.target_table.as_str(),
                plans[0].plan.columns[0].target_name.as_str()
            ),
            ("AB", "CD")
        );
        let plans = build_plans(
            &spec("{ databases: [db], capitalization: source }"),
            vec![table("db", "dbo", "Ab", &["cD"], &[])],
        )
        .unwrap();
        assert_eq!(plans[0].plan.target_table, "Ab");
    }

    #[test]
    fn selection_and_bad_options_are_reported() {
        let s = spec("{ databases: [db], exclude: ['db.dbo.tmp*'], tables: { 'dbo.missing': {}, 'dbo.a': { columns: { nope: { skip: true } } } } }");
        let err = build_plans(
            &s,
            vec![
                table("db", "dbo", "a", &["x"], &[]),
                table("db", "dbo", "tmp1", &["x"], &[]),
            ],
        )
        .unwrap_err();
        assert!(
            err.contains("objects.tables.db.dbo.missing: no selected source table"),
            "{err}"
        );
        assert!(
            err.contains("objects.tables.db.dbo.a.columns.nope"),
            "{err}"
        );
        let err = build_plans(
            &spec("{ databases: [db] }"),
            vec![table("db", "dbo", "a", &["X", "x"], &[])],
        )
        .unwrap_err();
        assert!(err.contains("both map to target column x"), "{err}");
        let err = build_plans(
            &spec("{ databases: [db] }"),
            vec![
                table("db", "dbo", "A", &["x"], &[]),
                table("db", "dbo", "a", &["x"], &[]),
            ],
        )
        .unwrap_err();
        assert!(err.contains("both map to target table dbo.a"), "{err}");
    }

    #[test]
    fn sequences_follow_selection_schema_renames_and_capitalization() {
        let seq = |db: &str, schema: &str, name: &str| SequenceSchema {
            database: db.into(),
            schema: schema.into(),
            name: name.into(),
            ..Default::default()
        };
        let s = spec("{ databases: [Shop], include: ['Shop.Sales.*', 'Shop.dbo.InvoiceNo'], exclude: ['Shop.Sales.Tmp*'], schemas: { Shop.Sales: Sales_PG }, capitalization: upper }");
        let tables = build_plans(&s, vec![table("Shop", "Sales", "Orders", &["x"], &[])]).unwrap();
        let planned = plan_sequences(
            &s,
            vec![
                seq("Shop", "Sales", "OrderNo"),
                seq("Shop", "Sales", "TmpNo"),
                seq("Shop", "dbo", "InvoiceNo"),
                seq("Shop", "dbo", "Other"),
                seq("Archive", "Sales", "OrderNo"),
            ],
            &tables,
        );
        let names: Vec<String> = planned
            .iter()
            .map(|q| format!("{}.{}", q.schema, q.name))
            .collect();
        assert_eq!(names, ["Sales_PG.ORDERNO", "DBO.INVOICENO"]);
        // Without include patterns every sequence of a selected database comes along.
        let all = plan_sequences(
            &spec("{ databases: [Shop] }"),
            vec![seq("Shop", "dbo", "Other")],
            &[],
        );
        assert_eq!(all[0].schema, "dbo");
        assert_eq!(all[0].name, "other");
    }

    #[test]
    fn fk_linked_tables_share_a_group() {
        let s = spec("{ databases: [db] }");
        let plans = build_plans(
            &s,
            vec![
                table("db", "dbo", "customers", &["id"], &[]),
                table("db", "dbo", "orders", &["id"], &["customers"]),
                table("db", "dbo", "lines", &["id"], &["orders", "products"]),
                table("db", "dbo", "products", &["id"], &[]),
                table("db", "dbo", "audit", &["id"], &[]),
                table("db", "dbo", "notes", &["id"], &["not_selected"]),
            ],
        )
        .unwrap();
        let groups = group_tables(&plans);
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|i| plans[*i].plan.target_table.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["customers", "orders", "lines", "products"],
                vec!["audit"],
                vec!["notes"]
            ]
        );
    }
}
