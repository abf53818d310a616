//! SELECT: planning (binding FROM/WHERE/GROUP BY/ORDER BY/TOP/OFFSET) and execution.
//!
//! A single-table query whose order is the storage key order streams straight from the
//! table snapshot to the sink (no materialisation; TOP/OFFSET stop the scan early and
//! key-range predicates position the scan). Everything else (joins, grouping, sorting,
//! DISTINCT) materialises the rows it needs.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound as RangeBound;
use std::sync::Arc;

use sqlparser::ast;

use super::catalog::TableDef;
use super::eval::{
    eval, eval_cond, AggContext, AggKind, AggSpec, BExpr, Binder, CmpOp, Env, Scope, ScopeCol,
};
use super::hooks::RowStream;
use super::parse::object_name_parts;
use super::session::Isolation;
use super::store::{Key, MergedScan};
use super::value::{self, compare_total, err, ValueExt};
use crate::api::{ResultColumn, SqlError};
use crate::types::{SqlType, Value};

/// Where rows of a FROM item come from.
#[derive(Clone)]
pub enum Source {
    Table {
        def: Arc<TableDef>,
    },
    /// Materialised rows (catalog views, table-valued functions).
    Rows(Arc<Vec<Vec<Value>>>),
    /// Rows of a streamed table-valued function, sorted by the `sorted_by` columns.
    Stream {
        rows: Arc<dyn RowStream>,
        sorted_by: Arc<[usize]>,
    },
    Derived(Arc<SelectPlan>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    Cross,
}

#[derive(Clone)]
pub struct FromItem {
    pub source: Source,
    pub kind: JoinKind,
    pub on: Option<BExpr>,
    pub offset: usize,
    pub width: usize,
}

/// Bounds on the leading storage-key columns of the first table, from WHERE: each bound is a
/// key tuple prefix (one expression per column, evaluated once before the scan) and whether
/// it is inclusive. Bounds from `key_range_of` are on the first column only.
#[derive(Clone, Default)]
pub struct KeyRange {
    pub lower: Option<(Vec<BExpr>, bool)>,
    pub upper: Option<(Vec<BExpr>, bool)>,
}

#[derive(Clone)]
pub struct GroupPlan {
    pub keys: Vec<BExpr>,
    pub aggs: Vec<AggSpec>,
}

#[derive(Clone)]
pub struct SelectCore {
    pub from: Vec<FromItem>,
    pub width: usize,
    pub filter: Option<BExpr>,
    pub range: KeyRange,
    pub group: Option<GroupPlan>,
    pub having: Option<BExpr>,
    pub projection: Vec<BExpr>,
    /// SELECT * over one table: the stored row is the output row.
    pub identity_projection: bool,
    pub distinct: bool,
    pub order: Vec<(BExpr, bool)>,
    /// The order equals the storage key order of the single table (stream without sorting).
    pub order_is_storage: bool,
    pub top: Option<BExpr>,
    pub top_percent: bool,
    pub offset: Option<BExpr>,
    pub fetch: Option<BExpr>,
    /// Variables assigned by `SELECT @v = expr` (one per projection item).
    pub assign: Option<Vec<String>>,
}

#[derive(Clone)]
pub enum PlanBody {
    Select(Box<SelectCore>),
    SetOp {
        all: bool,
        op: ast::SetOperator,
        left: Arc<SelectPlan>,
        right: Arc<SelectPlan>,
        order: Vec<(usize, bool)>,
    },
    Values(Vec<Vec<BExpr>>),
}

#[derive(Clone)]
pub struct SelectPlan {
    pub columns: Vec<ResultColumn>,
    pub body: PlanBody,
}

fn result_col(name: &str, ty: &SqlType, nullable: bool) -> ResultColumn {
    ResultColumn::expr(name, ty.clone(), nullable)
}

/// Plans a query in the binder's current context (a new scope level is pushed for it).
pub fn plan_query(b: &mut Binder, q: &ast::Query) -> Result<SelectPlan, SqlError> {
    let ctes_before = b.ctes.len();
    if let Some(with) = &q.with {
        for (i, cte) in with.cte_tables.iter().enumerate() {
            let name = &cte.alias.name.value;
            if with.cte_tables[..i]
                .iter()
                .any(|c| c.alias.name.value.eq_ignore_ascii_case(name))
            {
                b.ctes.truncate(ctes_before);
                return Err(err(
                    239,
                    format!("Duplicate common table expression name '{name}' was specified."),
                ));
            }
            b.ctes.push(Cte {
                name: cte.alias.name.value.to_lowercase(),
                columns: cte
                    .alias
                    .columns
                    .iter()
                    .map(|c| c.name.value.clone())
                    .collect(),
                query: Some(Arc::new((*cte.query).clone())),
            });
        }
    }
    b.scopes.push(Scope::default());
    let r = plan_query_inner(b, q);
    b.scopes.pop();
    b.ctes.truncate(ctes_before);
    r
}

/// A common table expression in scope. `query` is None while its own definition is planned:
/// a reference then would make it recursive, which the stand-in does not support.
#[derive(Clone)]
pub struct Cte {
    pub name: String,
    pub columns: Vec<String>,
    pub query: Option<Arc<ast::Query>>,
}

/// Parses the stored SELECT of a view.
pub fn parse_view_query(sql: &str) -> Result<ast::Query, SqlError> {
    let dialect = sqlparser::dialect::MsSqlDialect {};
    let mut stmts = sqlparser::parser::Parser::parse_sql(&dialect, sql).map_err(|e| {
        err(
            102,
            format!("Incorrect syntax in the view definition: {e}."),
        )
    })?;
    match (stmts.pop(), stmts.is_empty()) {
        (Some(ast::Statement::Query(q)), true) => Ok(*q),
        _ => Err(err(
            156,
            "Incorrect syntax: a view is defined by a single SELECT statement.",
        )),
    }
}

/// The view named by a FROM item, if it names one.
fn lookup_view(b: &Binder, parts: &[String]) -> Option<Arc<super::catalog::ViewDef>> {
    let (db, schema, name) = super::parse::split_name(parts);
    let db = db.unwrap_or_else(|| b.core.database.clone());
    let schema = schema.unwrap_or_else(|| "dbo".into());
    let cat = b.core.engine.inner.catalog.read();
    cat.get(&db.to_lowercase())?
        .views
        .get(&super::catalog::object_key(&schema, &name))
        .cloned()
}

/// Scope columns of a derived table, CTE or view: the plan's columns under `qualifier`,
/// renamed by an explicit column list. Every column needs a name (8155).
fn derived_cols(
    plan: &SelectPlan,
    qualifier: Option<String>,
    schema: Option<String>,
    renames: &[String],
    source_name: &str,
) -> Result<Vec<ScopeCol>, SqlError> {
    if !renames.is_empty() && renames.len() != plan.columns.len() {
        return Err(err(
            8158,
            format!("'{source_name}' has more columns than were specified in the column list."),
        ));
    }
    let mut cols = Vec::with_capacity(plan.columns.len());
    for (i, c) in plan.columns.iter().enumerate() {
        let name = renames.get(i).cloned().unwrap_or_else(|| c.name.clone());
        if name.is_empty() {
            return Err(err(
                8155,
                format!(
                    "No column name was specified for column {} of '{source_name}'.",
                    i + 1
                ),
            ));
        }
        cols.push(ScopeCol {
            qualifier: qualifier.clone(),
            schema: schema.clone(),
            name,
            ty: c.ty.clone(),
            nullable: c.nullable,
            identity: false,
            computed: false,
            updateable: false,
            hidden: false,
        });
    }
    Ok(cols)
}

fn plan_query_inner(b: &mut Binder, q: &ast::Query) -> Result<SelectPlan, SqlError> {
    let order_exprs: Vec<(ast::Expr, bool)> = match &q.order_by {
        Some(ob) => match &ob.kind {
            ast::OrderByKind::Expressions(list) => list
                .iter()
                .map(|o| {
                    (
                        o.expr.clone(),
                        matches!(o.options.sort, Some(ast::OrderBySort::Desc)),
                    )
                })
                .collect(),
            ast::OrderByKind::All(_) => return Err(value::unsupported("ORDER BY ALL")),
        },
        None => Vec::new(),
    };
    let (offset, fetch) = match &q.limit_clause {
        Some(ast::LimitClause::LimitOffset { offset, limit, .. }) => {
            if limit.is_some() {
                return Err(err(102, "Incorrect syntax near 'LIMIT'."));
            }
            (offset.as_ref().map(|o| o.value.clone()), None)
        }
        Some(_) => return Err(err(102, "Incorrect syntax near 'LIMIT'.")),
        None => (None, None::<ast::Expr>),
    };
    let fetch = fetch.or_else(|| q.fetch.as_ref().and_then(|f| f.quantity.clone()));
    match q.body.as_ref() {
        ast::SetExpr::Select(sel) => {
            plan_select(b, sel, &order_exprs, offset.as_ref(), fetch.as_ref())
        }
        ast::SetExpr::Query(inner) => {
            let p = plan_query_inner(b, inner)?;
            if order_exprs.is_empty() && offset.is_none() {
                Ok(p)
            } else {
                Err(value::unsupported("ORDER BY on a parenthesized query"))
            }
        }
        ast::SetExpr::SetOperation {
            left,
            op,
            set_quantifier,
            right,
        } => {
            let l = plan_set_side(b, left)?;
            let r = plan_set_side(b, right)?;
            if l.columns.len() != r.columns.len() {
                return Err(err(205, "All queries combined using a UNION, INTERSECT or EXCEPT operator must have an equal number of expressions in their target lists."));
            }
            let columns: Vec<ResultColumn> = l
                .columns
                .iter()
                .zip(r.columns.iter())
                .map(|(a, c)| {
                    result_col(
                        &a.name,
                        &value::common_type(&a.ty, &c.ty),
                        a.nullable || c.nullable,
                    )
                })
                .collect();
            let mut order = Vec::new();
            for (e, desc) in &order_exprs {
                let idx = match e {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::Number(n, _) => n.parse::<usize>().ok().map(|i| i - 1),
                        _ => None,
                    },
                    ast::Expr::Identifier(id) => columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(&id.value)),
                    _ => None,
                };
                let idx = idx.ok_or_else(|| err(104, "ORDER BY items must appear in the select list if the statement contains a UNION, INTERSECT or EXCEPT operator."))?;
                order.push((idx, *desc));
            }
            let all = matches!(set_quantifier, ast::SetQuantifier::All);
            Ok(SelectPlan {
                columns,
                body: PlanBody::SetOp {
                    all,
                    op: *op,
                    left: Arc::new(l),
                    right: Arc::new(r),
                    order,
                },
            })
        }
        ast::SetExpr::Values(v) => {
            let mut rows = Vec::new();
            let mut types: Vec<(SqlType, bool)> = Vec::new();
            for r in &v.rows {
                let mut out = Vec::new();
                for (i, e) in r.content.iter().enumerate() {
                    let (x, t, n) = b.bind(e)?;
                    if types.len() <= i {
                        types.push((t, n));
                    } else {
                        types[i] = (value::common_type(&types[i].0, &t), types[i].1 || n);
                    }
                    out.push(x);
                }
                rows.push(out);
            }
            let columns = types
                .iter()
                .enumerate()
                .map(|(i, (t, n))| result_col(&format!("column{}", i + 1), t, *n))
                .collect();
            Ok(SelectPlan {
                columns,
                body: PlanBody::Values(rows),
            })
        }
        _ => Err(value::unsupported("this query form")),
    }
}

fn plan_set_side(b: &mut Binder, s: &ast::SetExpr) -> Result<SelectPlan, SqlError> {
    let q = ast::Query {
        with: None,
        body: Box::new(s.clone()),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: vec![],
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: vec![],
    };
    plan_query(b, &q)
}

fn alias_name(a: &Option<ast::TableAlias>) -> Option<String> {
    a.as_ref().map(|a| a.name.value.clone())
}

/// Resolves one FROM table factor into a source and its scope columns.
fn plan_factor(b: &mut Binder, f: &ast::TableFactor) -> Result<(Source, Vec<ScopeCol>), SqlError> {
    match f {
        ast::TableFactor::Table {
            name, alias, args, ..
        } => {
            let parts = object_name_parts(name);
            let qualifier = alias_name(alias)
                .unwrap_or_else(|| parts.last().cloned().unwrap_or_default())
                .to_lowercase();
            if let Some(args) = args {
                // Table-valued function.
                let mut bound = Vec::new();
                for a in &args.args {
                    match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => {
                            bound.push(b.bind(e)?.0)
                        }
                        _ => return Err(value::unsupported("this table-valued function argument")),
                    }
                }
                let mut values = Vec::new();
                {
                    let env = Env {
                        core: &*b.core,
                        outer: vec![],
                    };
                    for x in &bound {
                        values.push(eval(x, &[], &env)?);
                    }
                }
                let (source, columns) = match b.core.stream_table_function(&parts, &values)? {
                    // Streamed (CDC change functions): read lazily, in a known order.
                    Some(st) => (
                        Source::Stream {
                            rows: st.rows,
                            sorted_by: st.sorted_by.into(),
                        },
                        st.columns,
                    ),
                    None => {
                        let result = b.core.call_table_function(&parts, &values)?;
                        (Source::Rows(Arc::new(result.rows)), result.columns)
                    }
                };
                let cols = columns
                    .iter()
                    .map(|c| ScopeCol {
                        qualifier: Some(qualifier.clone()),
                        schema: None,
                        name: c.name.clone(),
                        ty: c.ty.clone(),
                        nullable: c.nullable,
                        identity: false,
                        computed: false,
                        updateable: false,
                        hidden: false,
                    })
                    .collect();
                return Ok((source, cols));
            }
            if parts.len() == 1 {
                let lname = parts[0].to_lowercase();
                if let Some(pos) = b.ctes.iter().rposition(|c| c.name == lname) {
                    let cte = b.ctes[pos].clone();
                    let Some(q) = cte.query.clone() else {
                        return Err(value::unsupported("recursive common table expressions"));
                    };
                    // Only the CTEs defined before this one are visible in its body.
                    let saved = b.ctes.split_off(pos);
                    b.ctes.push(Cte {
                        query: None,
                        ..cte.clone()
                    });
                    let plan = b.bind_subquery(&q);
                    b.ctes.truncate(pos);
                    b.ctes.extend(saved);
                    let plan = plan?;
                    let cols = derived_cols(&plan, Some(qualifier), None, &cte.columns, &parts[0])?;
                    return Ok((Source::Derived(plan), cols));
                }
            }
            if let Some(view) = lookup_view(b, &parts) {
                let q = parse_view_query(&view.query)?;
                // The view's body sees no CTE of the query that references it.
                let saved = std::mem::take(&mut b.ctes);
                let plan = b.bind_subquery(&q);
                b.ctes = saved;
                let plan = plan?;
                let cols = derived_cols(
                    &plan,
                    Some(qualifier),
                    Some(view.schema.to_lowercase()),
                    &view.columns,
                    &view.name,
                )?;
                return Ok((Source::Derived(plan), cols));
            }
            match b.core.resolve_relation(&parts)? {
                Relation::Table(def) => {
                    let cols = table_scope_cols(&def, &qualifier);
                    Ok((Source::Table { def }, cols))
                }
                Relation::View { columns, rows } => {
                    let cols = columns
                        .iter()
                        .map(|c| ScopeCol {
                            qualifier: Some(qualifier.clone()),
                            schema: parts.len().checked_sub(2).map(|i| parts[i].to_lowercase()),
                            name: c.name.clone(),
                            ty: c.ty.clone(),
                            nullable: c.nullable,
                            identity: false,
                            computed: false,
                            updateable: false,
                            hidden: false,
                        })
                        .collect();
                    Ok((Source::Rows(Arc::new(rows)), cols))
                }
            }
        }
        ast::TableFactor::Derived {
            subquery, alias, ..
        } => {
            let plan = b.bind_subquery(subquery)?;
            let qualifier = alias_name(alias).map(|s| s.to_lowercase());
            let renames: Vec<String> = alias
                .as_ref()
                .map(|a| a.columns.iter().map(|c| c.name.value.clone()).collect())
                .unwrap_or_default();
            let cols = derived_cols(
                &plan,
                qualifier,
                None,
                &renames,
                &alias_name(alias).unwrap_or_default(),
            )?;
            Ok((Source::Derived(plan), cols))
        }
        ast::TableFactor::NestedJoin { .. } => Err(value::unsupported("parenthesized joins")),
        other => Err(value::unsupported(format!("the FROM item `{other}`"))),
    }
}

pub enum Relation {
    Table(Arc<TableDef>),
    View {
        columns: Vec<ResultColumn>,
        rows: Vec<Vec<Value>>,
    },
}

pub fn table_scope_cols(def: &TableDef, qualifier: &str) -> Vec<ScopeCol> {
    def.columns
        .iter()
        .map(|c| ScopeCol {
            qualifier: Some(qualifier.to_lowercase()),
            schema: Some(def.schema.to_lowercase()),
            name: c.name.clone(),
            ty: c.ty.clone(),
            nullable: c.nullable,
            identity: c.identity.is_some(),
            computed: c.computed.is_some(),
            updateable: c.identity.is_none()
                && c.computed.is_none()
                && !matches!(c.ty, SqlType::RowVersion),
            hidden: false,
        })
        .collect()
}

/// Binds the FROM clause into the binder's current scope.
pub fn plan_from(
    b: &mut Binder,
    from: &[ast::TableWithJoins],
) -> Result<(Vec<FromItem>, usize), SqlError> {
    let mut items = Vec::new();
    let mut width = 0;
    for (ti, twj) in from.iter().enumerate() {
        let (src, cols) = plan_factor(b, &twj.relation)?;
        let w = cols.len();
        let level = b.level();
        b.scopes[level].cols.extend(cols);
        items.push(FromItem {
            source: src,
            kind: if ti == 0 {
                JoinKind::Inner
            } else {
                JoinKind::Cross
            },
            on: None,
            offset: width,
            width: w,
        });
        width += w;
        for j in &twj.joins {
            let (src, cols) = plan_factor(b, &j.relation)?;
            let w = cols.len();
            let level = b.level();
            b.scopes[level].cols.extend(cols);
            let (kind, constraint) = match &j.join_operator {
                ast::JoinOperator::Join(c) | ast::JoinOperator::Inner(c) => {
                    (JoinKind::Inner, Some(c))
                }
                ast::JoinOperator::Left(c) | ast::JoinOperator::LeftOuter(c) => {
                    (JoinKind::Left, Some(c))
                }
                ast::JoinOperator::Right(c) | ast::JoinOperator::RightOuter(c) => {
                    (JoinKind::Right, Some(c))
                }
                ast::JoinOperator::FullOuter(c) => (JoinKind::Full, Some(c)),
                ast::JoinOperator::CrossJoin(_) => (JoinKind::Cross, None),
                _ => return Err(value::unsupported("APPLY and other join kinds")),
            };
            let on = match constraint {
                Some(ast::JoinConstraint::On(e)) => Some(b.bind_cond(e)?),
                Some(ast::JoinConstraint::None) | None => None,
                Some(_) => return Err(value::unsupported("USING / NATURAL joins")),
            };
            items.push(FromItem {
                source: src,
                kind,
                on,
                offset: width,
                width: w,
            });
            width += w;
        }
    }
    Ok((items, width))
}

fn plan_select(
    b: &mut Binder,
    sel: &ast::Select,
    order_exprs: &[(ast::Expr, bool)],
    offset: Option<&ast::Expr>,
    fetch: Option<&ast::Expr>,
) -> Result<SelectPlan, SqlError> {
    if sel.into.is_some() {
        return Err(value::unsupported("SELECT … INTO"));
    }
    let (from, width) = plan_from(b, &sel.from)?;
    let mut filter = match &sel.selection {
        Some(e) => Some(b.bind_cond(e)?),
        None => None,
    };
    let group_exprs: Vec<ast::Expr> = match &sel.group_by {
        ast::GroupByExpr::Expressions(list, _) => list.clone(),
        ast::GroupByExpr::All(_) => return Err(value::unsupported("GROUP BY ALL")),
    };
    let has_agg = !group_exprs.is_empty()
        || sel.projection.iter().any(item_has_aggregate)
        || sel.having.is_some();
    let mut group = None;
    let mut key_types = Vec::new();
    if has_agg {
        let mut keys = Vec::new();
        for g in &group_exprs {
            let (x, t, n) = b.bind(g)?;
            keys.push(x);
            key_types.push((t, n));
        }
        b.agg = Some(AggContext {
            group_exprs: group_exprs.clone(),
            aggs: Vec::new(),
        });
        group = Some(keys);
    }
    // Projection.
    let mut projection = Vec::new();
    let mut columns = Vec::new();
    let mut assign: Vec<String> = Vec::new();
    let level = b.level();
    for item in &sel.projection {
        match item {
            ast::SelectItem::Wildcard(_) | ast::SelectItem::QualifiedWildcard(..) => {
                if has_agg {
                    b.agg = None;
                    return Err(err(8120, "Column is invalid in the select list because it is not contained in either an aggregate function or the GROUP BY clause."));
                }
                let qual = match item {
                    ast::SelectItem::QualifiedWildcard(
                        ast::SelectItemQualifiedWildcardKind::ObjectName(n),
                        _,
                    ) => Some(
                        object_name_parts(n)
                            .last()
                            .cloned()
                            .unwrap_or_default()
                            .to_lowercase(),
                    ),
                    _ => None,
                };
                let mut any = false;
                for (i, c) in b.scopes[level].cols.iter().enumerate() {
                    if c.hidden || (qual.is_some() && c.qualifier != qual) {
                        continue;
                    }
                    any = true;
                    projection.push(BExpr::Col(i));
                    columns.push(ResultColumn {
                        name: c.name.clone(),
                        ty: c.ty.clone(),
                        nullable: c.nullable,
                        updateable: c.updateable,
                        identity: c.identity,
                        computed: c.computed,
                        table_name: None,
                    });
                }
                if !any {
                    if let Some(q) = qual {
                        return Err(err(
                            4104,
                            format!("The multi-part identifier \"{q}\" could not be bound."),
                        ));
                    }
                    return Err(err(263, "Must specify table to select from."));
                }
            }
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                // SELECT @v = expr
                if let ast::Expr::BinaryOp {
                    left,
                    op: ast::BinaryOperator::Eq,
                    right,
                } = e
                {
                    if let ast::Expr::Identifier(id) = left.as_ref() {
                        if id.value.starts_with('@')
                            && !id.value.starts_with("@@")
                            && matches!(item, ast::SelectItem::UnnamedExpr(_))
                        {
                            let key = id.value.to_lowercase();
                            if b.core.var(&key).is_none() {
                                b.agg = None;
                                return Err(err(
                                    137,
                                    format!("Must declare the scalar variable \"{}\".", id.value),
                                ));
                            }
                            let (x, t, n) = b.bind(right)?;
                            assign.push(key);
                            projection.push(x);
                            columns.push(result_col("", &t, n));
                            continue;
                        }
                    }
                }
                let (x, t, n) = b.bind(e)?;
                let (name, col) = match item {
                    ast::SelectItem::ExprWithAlias { alias, .. } => (alias.value.clone(), None),
                    _ => match e {
                        ast::Expr::Identifier(id) => (id.value.clone(), scope_col_of(&x, b, level)),
                        ast::Expr::CompoundIdentifier(p) => (
                            p.last().map(|i| i.value.clone()).unwrap_or_default(),
                            scope_col_of(&x, b, level),
                        ),
                        _ => (String::new(), None),
                    },
                };
                projection.push(x);
                let mut rc = result_col(&name, &t, n);
                if let Some(c) = col {
                    rc.updateable = c.updateable;
                    rc.identity = c.identity;
                    rc.computed = c.computed;
                }
                columns.push(rc);
            }
            ast::SelectItem::ExprWithAliases { .. } => {
                return Err(value::unsupported("multiple aliases"))
            }
        }
    }
    if !assign.is_empty() && assign.len() != projection.len() {
        b.agg = None;
        return Err(err(141, "A SELECT statement that assigns a value to a variable must not be combined with data-retrieval operations."));
    }
    let having = match &sel.having {
        Some(h) => Some(b.bind_cond(h)?),
        None => None,
    };
    // ORDER BY: output aliases, ordinals, or expressions over the same row as the projection.
    b.aliases = columns
        .iter()
        .zip(projection.iter())
        .filter(|(c, _)| !c.name.is_empty())
        .map(|(c, p)| (c.name.clone(), p.clone(), c.ty.clone(), c.nullable))
        .collect();
    let mut order = Vec::new();
    for (e, desc) in order_exprs {
        let bound = match e {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                let ast::Value::Number(n, _) = &v.value else {
                    unreachable!("matched")
                };
                let i: usize = n.parse().map_err(|_| err(108, format!("The ORDER BY position number {n} is out of range of the number of items in the select list.")))?;
                if i == 0 || i > projection.len() {
                    b.agg = None;
                    return Err(err(108, format!("The ORDER BY position number {n} is out of range of the number of items in the select list.")));
                }
                projection[i - 1].clone()
            }
            _ => match b.bind(e) {
                Ok(x) => x.0,
                Err(er) => {
                    b.agg = None;
                    return Err(er);
                }
            },
        };
        order.push((bound, *desc));
    }
    b.aliases.clear();
    let group = match (group, b.agg.take()) {
        (Some(keys), Some(ctx)) => Some(GroupPlan {
            keys,
            aggs: ctx.aggs,
        }),
        _ => None,
    };
    let distinct = matches!(sel.distinct, Some(ast::Distinct::Distinct));
    if distinct && !order.is_empty() {
        // ORDER BY items must appear in the select list with DISTINCT.
        for (o, _) in &order {
            if !projection.iter().any(|p| bexpr_same(p, o)) {
                return Err(err(145, "ORDER BY items must appear in the select list if SELECT DISTINCT is specified."));
            }
        }
    }
    let (top, top_percent) = match &sel.top {
        Some(t) => {
            if t.with_ties {
                return Err(value::unsupported("TOP … WITH TIES"));
            }
            let q = match &t.quantity {
                Some(ast::TopQuantity::Expr(e)) => b.bind(e)?.0,
                Some(ast::TopQuantity::Constant(n)) => BExpr::Const(Value::BigInt(*n as i64)),
                None => return Err(err(102, "Incorrect syntax near 'TOP'.")),
            };
            (Some(q), t.percent)
        }
        None => (None, false),
    };
    if (offset.is_some() || fetch.is_some()) && order.is_empty() {
        return Err(err(102, "Incorrect syntax near 'OFFSET'."));
    }
    if top.is_some() && offset.is_some() {
        return Err(err(
            10741,
            "A TOP can not be used in the same query or sub-query as a OFFSET.",
        ));
    }
    let offset = offset.map(|e| b.bind(e).map(|x| x.0)).transpose()?;
    let fetch = fetch.map(|e| b.bind(e).map(|x| x.0)).transpose()?;
    // Storage-order detection and key range for a single table.
    let mut order_is_storage = order.is_empty();
    let mut range = KeyRange::default();
    if let [FromItem {
        source: Source::Table { def },
        ..
    }] = from.as_slice()
    {
        if !def.storage_key.is_empty() {
            if !order.is_empty() && group.is_none() && !distinct {
                order_is_storage = order.len() <= def.storage_key.len()
                    && order
                        .iter()
                        .zip(def.storage_key.iter())
                        .all(|((e, desc), k)| {
                            !desc && matches!(e, BExpr::Col(c) if c == k) && !key_is_desc(def, *k)
                        });
            }
            if let Some(f) = filter.take() {
                // Conjuncts the range states exactly are not evaluated per row again.
                let (r, residual) = plan_key_range(f, def, &|e| param_type(e, b));
                range = r;
                filter = residual;
            }
        } else if !order.is_empty() {
            order_is_storage = false;
        }
    } else if let [FromItem {
        source: Source::Stream { sorted_by, .. },
        ..
    }] = from.as_slice()
    {
        // A streamed function's own order makes ORDER BY on a prefix of it a no-op.
        order_is_storage = order.is_empty()
            || (group.is_none()
                && !distinct
                && order.len() <= sorted_by.len()
                && order
                    .iter()
                    .zip(sorted_by.iter())
                    .all(|((e, desc), k)| !desc && matches!(e, BExpr::Col(c) if c == k)));
    } else if !order.is_empty() {
        order_is_storage = false;
    }
    let identity_projection = from.len() == 1
        && matches!(from[0].source, Source::Table { .. })
        && group.is_none()
        && projection.len() == width
        && projection
            .iter()
            .enumerate()
            .all(|(i, p)| matches!(p, BExpr::Col(c) if *c == i));
    let _ = key_types;
    Ok(SelectPlan {
        columns,
        body: PlanBody::Select(Box::new(SelectCore {
            from,
            width,
            filter,
            range,
            group,
            having,
            projection,
            identity_projection,
            distinct,
            order,
            order_is_storage,
            top,
            top_percent,
            offset,
            fetch,
            assign: if assign.is_empty() {
                None
            } else {
                Some(assign)
            },
        })),
    })
}

fn key_is_desc(def: &TableDef, col: usize) -> bool {
    def.indexes
        .first()
        .map(|i| i.columns.iter().any(|c| c.column == col && c.descending))
        .unwrap_or(false)
}

fn scope_col_of(x: &BExpr, b: &Binder, level: usize) -> Option<ScopeCol> {
    match x {
        BExpr::Col(i) => b.scopes[level].cols.get(*i).cloned(),
        _ => None,
    }
}

fn bexpr_same(a: &BExpr, b: &BExpr) -> bool {
    match (a, b) {
        (BExpr::Col(x), BExpr::Col(y)) => x == y,
        _ => std::ptr::eq(a, b),
    }
}

fn item_has_aggregate(item: &ast::SelectItem) -> bool {
    match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
            expr_has_aggregate(e)
        }
        _ => false,
    }
}

fn expr_has_aggregate(e: &ast::Expr) -> bool {
    // Textual scan is enough: aggregate names followed by '(' outside subqueries.
    let s = e.to_string().to_uppercase();
    let stripped = strip_subqueries(&s);
    [
        "COUNT(",
        "COUNT_BIG(",
        "SUM(",
        "AVG(",
        "MIN(",
        "MAX(",
        "CHECKSUM_AGG(",
    ]
    .iter()
    .any(|k| {
        stripped.match_indices(k).any(|(i, _)| {
            i == 0
                || !stripped.as_bytes()[i - 1].is_ascii_alphanumeric()
                    && stripped.as_bytes()[i - 1] != b'_'
                    && stripped.as_bytes()[i - 1] != b'.'
        })
    })
}

fn strip_subqueries(s: &str) -> String {
    // Removes "(SELECT ...)" spans.
    let mut out = String::new();
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '('
            && s[s.char_indices().nth(i).map(|x| x.0).unwrap_or(0)..]
                .trim_start_matches('(')
                .trim_start()
                .starts_with("SELECT")
        {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i] == '(' {
                    depth += 1;
                } else if bytes[i] == ')' {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                i += 1;
            }
            out.push_str("(_)");
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Bounds on storage-key column `k` implied by a bound condition (a superset of its rows: the
/// condition is still evaluated per row).
pub fn key_range_of(f: &BExpr, k: usize) -> KeyRange {
    let mut conj = Vec::new();
    flatten_and(f, &mut conj);
    let mut r = KeyRange::default();
    add_superset_bounds(&mut r, &conj, k);
    r
}

/// Evaluates a bound tuple. A NULL makes the rest of the tuple unknown: `(k0, k1) > (p0,
/// NULL)` holds exactly where `k0 > p0`, so the bound becomes the exclusive prefix before the
/// NULL. `None`: no row can satisfy the bound (NULL in the first position).
fn eval_bound(
    bound: &(Vec<BExpr>, bool),
    env: &Env,
) -> Result<Option<(Vec<Value>, bool)>, SqlError> {
    let (exprs, mut inclusive) = (&bound.0, bound.1);
    let mut values = Vec::with_capacity(exprs.len());
    for e in exprs {
        let v = eval(e, &[], env)?;
        if v.is_null_value() {
            inclusive = false;
            break;
        }
        values.push(v);
    }
    Ok((!values.is_empty()).then_some((values, inclusive)))
}

/// Compares the leading columns of a key with a bound tuple.
fn cmp_prefix(key: &Key, bound: &[Value]) -> Ordering {
    for (a, b) in key.0.iter().zip(bound) {
        let o = compare_total(a, b);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Scans a table within a key range, passing (key, row). The scan returns exactly the rows
/// whose key satisfies the bounds as SQL comparisons (so a conjunct the range states need not
/// be evaluated again): an exclusive lower bound skips the keys equal to it, and a bounded
/// range never returns a NULL first key column (NULLs sort first).
pub fn scan_range(
    env: &Env,
    def: &TableDef,
    range: &KeyRange,
    f: &mut KeyRowFn,
) -> Result<(), SqlError> {
    let lower = match &range.lower {
        Some(b) => match eval_bound(b, env)? {
            Some(v) => Some(v),
            None => return Ok(()),
        },
        None => None,
    };
    let upper = match &range.upper {
        Some(b) => match eval_bound(b, env)? {
            Some(v) => Some(v),
            None => return Ok(()),
        },
        None => None,
    };
    let start = match &lower {
        Some((values, _)) => RangeBound::Included(Key::new(values.clone())),
        None => RangeBound::Unbounded,
    };
    // Keys equal to an exclusive lower bound (all at the start of the scan) are skipped.
    let mut skip_equal = lower.as_ref().is_some_and(|(_, inclusive)| !inclusive);
    let skip_null = lower.is_none() && upper.is_some();
    scan_table(env, def, start, &mut |k, row| {
        if skip_equal {
            if let Some((values, _)) = &lower {
                if cmp_prefix(k, values) == Ordering::Equal {
                    return Ok(true);
                }
            }
            skip_equal = false;
        }
        if skip_null && k.0[0].is_null_value() {
            return Ok(true);
        }
        if let Some((values, inclusive)) = &upper {
            match cmp_prefix(k, values) {
                Ordering::Greater => return Ok(false),
                Ordering::Equal if !inclusive => return Ok(false),
                _ => {}
            }
        }
        f(k, row)
    })
}

/// Fills the free sides of `r` with first-column bounds implied by `conj`.
fn add_superset_bounds(r: &mut KeyRange, conj: &[&BExpr], k: usize) {
    for c in conj {
        if let Some((lo, hi)) = bounds_of(c, k) {
            if r.lower.is_none() {
                r.lower = lo.map(|(e, inclusive)| (vec![e], inclusive));
            }
            if r.upper.is_none() {
                r.upper = hi.map(|(e, inclusive)| (vec![e], inclusive));
            }
        }
    }
}

/// The key range of a single-table WHERE and what of the WHERE is left to evaluate per row:
/// the conjuncts that `exact_bound` recognises are stated exactly by the range (see
/// `scan_range`) and dropped; the others stay, and may still narrow the range as supersets.
fn plan_key_range(
    filter: BExpr,
    def: &TableDef,
    param_type: &dyn Fn(&BExpr) -> Option<SqlType>,
) -> (KeyRange, Option<BExpr>) {
    let mut conj = Vec::new();
    flatten_and(&filter, &mut conj);
    let mut r = KeyRange::default();
    let mut consumed = vec![false; conj.len()];
    for (i, c) in conj.iter().enumerate() {
        let Some(bounds) = exact_bound(c, def, param_type) else {
            continue;
        };
        // An equality sets both sides: only when both are still free.
        let free = bounds.iter().all(|b| match b.side {
            Side::Lower => r.lower.is_none(),
            Side::Upper => r.upper.is_none(),
        });
        if !free {
            continue;
        }
        for b in bounds {
            let slot = match b.side {
                Side::Lower => &mut r.lower,
                Side::Upper => &mut r.upper,
            };
            *slot = Some((b.values, b.inclusive));
        }
        consumed[i] = true;
    }
    add_superset_bounds(&mut r, &conj, def.storage_key[0]);
    if !consumed.contains(&true) {
        return (r, Some(filter));
    }
    let residual = conj
        .iter()
        .zip(&consumed)
        .filter(|(_, used)| !**used)
        .map(|(c, _)| (*c).clone())
        .reduce(|a, b| BExpr::And(Box::new(a), Box::new(b)));
    (r, residual)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Lower,
    Upper,
}

/// One side of a key range that a conjunct states exactly.
struct ExactBound {
    side: Side,
    values: Vec<BExpr>,
    inclusive: bool,
}

/// `col op param` with the column on the left (the operator flipped if needed).
fn simple_cmp(e: &BExpr) -> Option<(usize, CmpOp, &BExpr)> {
    match e {
        BExpr::Cmp(op, a, b) => match (a.as_ref(), b.as_ref()) {
            (BExpr::Col(c), v) if is_param(v) => Some((*c, *op, v)),
            (v, BExpr::Col(c)) if is_param(v) => Some((*c, flip(*op), v)),
            _ => None,
        },
        _ => None,
    }
}

fn flatten_or<'a>(e: &'a BExpr, out: &mut Vec<&'a BExpr>) {
    if let BExpr::Or(a, b) = e {
        flatten_or(a, out);
        flatten_or(b, out);
    } else {
        out.push(e);
    }
}

/// The range bounds a conjunct states exactly, if it is one of
/// - `k0 op p` (op one of = < <= > >=) on the first storage-key column;
/// - the tuple comparison `(k0, …, kn) > (p0, …, pn)` written as capture writes it
///   (`k0 > p0 OR (k0 = p0 AND k1 > p1) OR …`, the last operator `>` or `>=`), or `<` / `<=`
///   likewise, over leading storage-key columns of which all but the first are NOT NULL;
///
/// and every column is compared with a parameter whose comparison cannot differ from the
/// key order (`exact_key_comparison`). A NULL first key column never satisfies these
/// conjuncts: `scan_range` skips such rows.
fn exact_bound(
    c: &BExpr,
    def: &TableDef,
    param_type: &dyn Fn(&BExpr) -> Option<SqlType>,
) -> Option<Vec<ExactBound>> {
    let exact = |col: usize, p: &BExpr| {
        param_type(p).is_some_and(|t| exact_key_comparison(&def.columns[col].ty, &t))
    };
    let mut branches = Vec::new();
    flatten_or(c, &mut branches);
    if branches.len() > def.storage_key.len() {
        return None;
    }
    if let [single] = branches.as_slice() {
        let (col, op, p) = simple_cmp(single)?;
        if col != def.storage_key[0] || !exact(col, p) {
            return None;
        }
        let bound = |side, inclusive| ExactBound {
            side,
            values: vec![p.clone()],
            inclusive,
        };
        return Some(match op {
            CmpOp::Eq => vec![bound(Side::Lower, true), bound(Side::Upper, true)],
            CmpOp::Gt => vec![bound(Side::Lower, false)],
            CmpOp::Ge => vec![bound(Side::Lower, true)],
            CmpOp::Lt => vec![bound(Side::Upper, false)],
            CmpOp::Le => vec![bound(Side::Upper, true)],
            CmpOp::Ne => return None,
        });
    }
    // Tuple comparison: branch i is `k0 = p0 AND … AND k(i-1) = p(i-1) AND ki op pi`.
    let n = branches.len();
    let keys = &def.storage_key[..n];
    if keys[1..].iter().any(|&k| def.columns[k].nullable) {
        return None;
    }
    let mut params: Vec<&BExpr> = Vec::with_capacity(n);
    let mut side = None;
    let mut inclusive = false;
    for (i, branch) in branches.iter().enumerate() {
        let mut terms = Vec::new();
        flatten_and(branch, &mut terms);
        if terms.len() != i + 1 {
            return None;
        }
        let (col, op, p) = simple_cmp(terms[i])?;
        if col != keys[i] || !exact(col, p) {
            return None;
        }
        let last = i + 1 == n;
        let this_side = match (op, last) {
            (CmpOp::Gt, _) => Side::Lower,
            (CmpOp::Lt, _) => Side::Upper,
            (CmpOp::Ge, true) => Side::Lower,
            (CmpOp::Le, true) => Side::Upper,
            _ => return None,
        };
        if *side.get_or_insert(this_side) != this_side {
            return None;
        }
        inclusive = matches!(op, CmpOp::Ge | CmpOp::Le);
        for (j, t) in terms[..i].iter().enumerate() {
            match simple_cmp(t) {
                Some((c, CmpOp::Eq, q)) if c == keys[j] && same_param(q, params[j]) => {}
                _ => return None,
            }
        }
        params.push(p);
    }
    Some(vec![ExactBound {
        side: side?,
        values: params.into_iter().cloned().collect(),
        inclusive,
    }])
}

/// The static type of a range parameter (`is_param`), when known exactly. String literals
/// carry no varchar/nvarchar distinction once bound, so they have none.
fn param_type(e: &BExpr, b: &Binder) -> Option<SqlType> {
    match e {
        BExpr::Cast { ty, .. } => Some(ty.clone()),
        BExpr::Var(name) => b.core.var(name).map(|(t, _)| t.clone()),
        BExpr::Const(Value::Null | Value::String(_)) => None,
        BExpr::Const(v) => Some(value::natural_type(v)),
        _ => None,
    }
}

/// Whether comparing a key column of type `key` with a value of type `param` orders exactly
/// as the key itself: the same type, or integers of any width (SQL Server widens them
/// exactly), or strings of the same kind (both non-Unicode or both Unicode) and collation,
/// or the same date/time type at any scale. Anything that needs a conversion that could
/// round or change the collation (decimal of another precision or scale, float against
/// exact numbers, varchar against nvarchar) is not: those keep their per-row check.
fn exact_key_comparison(key: &SqlType, param: &SqlType) -> bool {
    use SqlType::*;
    let integer = |t: &SqlType| matches!(t, TinyInt | SmallInt | Int | BigInt);
    match (key, param) {
        (a, b) if integer(a) && integer(b) => true,
        (
            Char { collation: a, .. } | VarChar { collation: a, .. },
            Char { collation: b, .. } | VarChar { collation: b, .. },
        )
        | (
            NChar { collation: a, .. } | NVarChar { collation: a, .. },
            NChar { collation: b, .. } | NVarChar { collation: b, .. },
        ) => a == b,
        (DateTime2 { .. }, DateTime2 { .. })
        | (Time { .. }, Time { .. })
        | (DateTimeOffset { .. }, DateTimeOffset { .. }) => true,
        (
            Decimal {
                precision: p1,
                scale: s1,
                ..
            },
            Decimal {
                precision: p2,
                scale: s2,
                ..
            },
        ) => p1 == p2 && s1 == s2,
        (
            Bit
            | Real
            | Float
            | Money
            | SmallMoney
            | Date
            | DateTime
            | SmallDateTime
            | UniqueIdentifier
            | Binary { .. }
            | VarBinary { .. },
            _,
        ) => key == param,
        _ => false,
    }
}

fn flatten_and<'a>(e: &'a BExpr, out: &mut Vec<&'a BExpr>) {
    if let BExpr::And(a, b) = e {
        flatten_and(a, out);
        flatten_and(b, out);
    } else {
        out.push(e);
    }
}

/// A value known before the scan: a constant, a variable, or a CAST of one.
fn is_param(e: &BExpr) -> bool {
    match e {
        BExpr::Const(_) | BExpr::Var(_) => true,
        BExpr::Cast { expr, .. } => is_param(expr),
        _ => false,
    }
}

fn param_key(e: &BExpr) -> Option<String> {
    match e {
        BExpr::Var(v) => Some(format!("var:{v}")),
        BExpr::Const(c) => Some(format!("const:{c:?}")),
        BExpr::Cast {
            expr, ty, style, ..
        } => Some(format!("cast({},{:?},{})", param_key(expr)?, ty, style)),
        _ => None,
    }
}

type Bounds = (Option<(BExpr, bool)>, Option<(BExpr, bool)>);

/// (lower, upper) bounds (expr, inclusive) on column k implied by `e`.
fn bounds_of(e: &BExpr, k: usize) -> Option<Bounds> {
    match e {
        BExpr::Cmp(op, a, b) => {
            let (op, v) = match (a.as_ref(), b.as_ref()) {
                (BExpr::Col(c), v) if *c == k && is_param(v) => (*op, v.clone()),
                (v, BExpr::Col(c)) if *c == k && is_param(v) => (flip(*op), v.clone()),
                _ => return None,
            };
            Some(match op {
                CmpOp::Eq => (Some((v.clone(), true)), Some((v, true))),
                CmpOp::Gt => (Some((v, false)), None),
                CmpOp::Ge => (Some((v, true)), None),
                CmpOp::Lt => (None, Some((v, false))),
                CmpOp::Le => (None, Some((v, true))),
                CmpOp::Ne => return None,
            })
        }
        BExpr::And(a, b) => {
            let x = bounds_of(a, k);
            let y = bounds_of(b, k);
            match (x, y) {
                (None, None) => None,
                (Some(x), None) => Some(x),
                (None, Some(y)) => Some(y),
                (Some(x), Some(y)) => Some((x.0.or(y.0), x.1.or(y.1))),
            }
        }
        BExpr::Or(a, b) => {
            // Both sides must bound the column from below by the same parameter: the union
            // is bounded by that parameter inclusively.
            let x = bounds_of(a, k)?;
            let y = bounds_of(b, k)?;
            let lower = match (&x.0, &y.0) {
                (Some((p, _)), Some((q, _))) if same_param(p, q) => Some((p.clone(), true)),
                _ => None,
            };
            let upper = match (&x.1, &y.1) {
                (Some((p, _)), Some((q, _))) if same_param(p, q) => Some((p.clone(), true)),
                _ => None,
            };
            if lower.is_none() && upper.is_none() {
                None
            } else {
                Some((lower, upper))
            }
        }
        _ => None,
    }
}

fn same_param(a: &BExpr, b: &BExpr) -> bool {
    matches!((param_key(a), param_key(b)), (Some(x), Some(y)) if x == y)
}

fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        o => o,
    }
}

// ---------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------

/// Receives (key, row) pairs of a scan; returns false to stop early.
pub type KeyRowFn<'f> = dyn FnMut(&Key, &[Value]) -> Result<bool, SqlError> + 'f;

/// Receives output rows; returns false to stop early.
pub type RowFn<'f> = dyn FnMut(&[Value]) -> Result<bool, SqlError> + 'f;

fn eval_count(e: &Option<BExpr>, env: &Env) -> Result<Option<i64>, SqlError> {
    match e {
        None => Ok(None),
        Some(x) => {
            let v = eval(x, &[], env)?;
            match value::convert(&v, &SqlType::BigInt, 0)? {
                Value::BigInt(n) if n >= 0 => Ok(Some(n)),
                Value::Null => Ok(Some(0)),
                _ => Err(err(
                    1060,
                    "The number of rows in the TOP clause must be an integer.",
                )),
            }
        }
    }
}

/// Iterates the rows of one table (its snapshot plus this transaction's overlay), starting at
/// `from` in key order. `f` returns false to stop.
pub fn scan_table(
    env: &Env,
    def: &TableDef,
    from: RangeBound<Key>,
    f: &mut KeyRowFn,
) -> Result<(), SqlError> {
    let store = &env.core.engine.inner.store;
    let me = env
        .core
        .txn
        .as_ref()
        .map(|t| t.id)
        .unwrap_or(u64::MAX - env.core.spid as u64);
    let timeout = env.core.opts.lock_timeout;
    // REPEATABLE READ / SERIALIZABLE inside a transaction: shared locks held to its end
    // (ENGINE.md "Storage and transactions"). SERIALIZABLE locks the key range it reads, from
    // the scan's start to the last key read; if it had to wait for a writer in that range,
    // it reads the data that writer committed.
    let in_txn = env.core.txn.is_some() && !env.core.nolock;
    let serializable = in_txn && env.core.opts.isolation == Isolation::Serializable;
    let row_locks = in_txn && env.core.opts.isolation == Isolation::RepeatableRead;
    let range_waited = serializable
        && store
            .locks
            .acquire_range(me, def.object_id, from.clone(), timeout)?;
    let snap = if range_waited {
        store.snapshot()
    } else {
        env.core.read_snapshot()
    };
    let overlay = env.core.overlay(def.object_id);
    let base = snap.table(def.object_id);
    // Locking READ COMMITTED: a row another transaction has locked is read after that
    // transaction ends (its latest committed version).
    let wait = row_locks
        || (env.core.reads_wait_for_writers(def.database_id)
            && store.locks.table_has_locks(def.object_id));
    let mut stopped_at: Option<Key> = None;
    for (k, row) in MergedScan::new(base, overlay, from) {
        if wait && !overlay.is_some_and(|o| o.rows.contains_key(k)) {
            let lock = (def.object_id, 0, k.clone());
            let waited = if row_locks {
                store.locks.acquire_shared(me, &lock, timeout)?
            } else {
                store.locks.wait_until_unlocked(me, &lock, timeout)?
            };
            if waited {
                if let Some(latest) = store.latest_row(def.object_id, k) {
                    if !f(k, &latest.row)? {
                        stopped_at = Some(k.clone());
                        break;
                    }
                }
                continue;
            }
        }
        if !f(k, row)? {
            stopped_at = Some(k.clone());
            break;
        }
    }
    if serializable {
        if let Some(last) = stopped_at {
            store.locks.end_range(me, def.object_id, last);
        }
    }
    Ok(())
}

/// The joined rows of a FROM clause (UPDATE/DELETE … FROM).
pub fn for_each_joined_row(
    from: Vec<FromItem>,
    width: usize,
    env: &Env,
    f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
) -> Result<(), SqlError> {
    let core = SelectCore {
        from,
        width,
        filter: None,
        range: KeyRange::default(),
        group: None,
        having: None,
        projection: Vec::new(),
        identity_projection: false,
        distinct: false,
        order: Vec::new(),
        order_is_storage: false,
        top: None,
        top_percent: false,
        offset: None,
        fetch: None,
        assign: None,
    };
    for_each_input(&core, env, f)
}

/// Produces the joined input rows of a SELECT core.
fn for_each_input(
    core: &SelectCore,
    env: &Env,
    f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
) -> Result<(), SqlError> {
    let first = &core.from[0];
    // Materialise every FROM item but the first.
    let mut rights: Vec<Vec<Vec<Value>>> = Vec::new();
    for item in &core.from[1..] {
        let mut rows = Vec::new();
        for_each_source_row(&item.source, env, &KeyRange::default(), &mut |r| {
            rows.push(r.to_vec());
            Ok(true)
        })?;
        rights.push(rows);
    }
    if core.from.len() == 1 {
        return for_each_source_row(&first.source, env, &core.range, f);
    }
    let width = core.width;
    let mut buf = vec![Value::Null; width];
    // Right/full joins: handled by materialising the left side too.
    let needs_matched = core.from[1..]
        .iter()
        .any(|i| matches!(i.kind, JoinKind::Right | JoinKind::Full));
    if needs_matched {
        return join_materialised(core, env, rights, f);
    }
    let mut stop = false;
    for_each_source_row(&first.source, env, &core.range, &mut |left| {
        buf[..left.len()].clone_from_slice(left);
        let cont = join_rest(core, env, &rights, 1, &mut buf, f)?;
        if !cont {
            stop = true;
        }
        Ok(cont)
    })?;
    let _ = stop;
    Ok(())
}

fn join_rest(
    core: &SelectCore,
    env: &Env,
    rights: &[Vec<Vec<Value>>],
    idx: usize,
    buf: &mut Vec<Value>,
    f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
) -> Result<bool, SqlError> {
    if idx == core.from.len() {
        return f(buf);
    }
    let item = &core.from[idx];
    let rows = &rights[idx - 1];
    let mut matched = false;
    for r in rows {
        buf[item.offset..item.offset + item.width].clone_from_slice(r);
        let ok = match &item.on {
            Some(on) => eval_cond(on, buf, env)?,
            None => true,
        };
        if ok {
            matched = true;
            if !join_rest(core, env, rights, idx + 1, buf, f)? {
                return Ok(false);
            }
        }
    }
    if !matched && item.kind == JoinKind::Left {
        for v in &mut buf[item.offset..item.offset + item.width] {
            *v = Value::Null;
        }
        return join_rest(core, env, rights, idx + 1, buf, f);
    }
    Ok(true)
}

fn join_materialised(
    core: &SelectCore,
    env: &Env,
    rights: Vec<Vec<Vec<Value>>>,
    f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
) -> Result<(), SqlError> {
    let mut current: Vec<Vec<Value>> = Vec::new();
    for_each_source_row(&core.from[0].source, env, &core.range, &mut |r| {
        let mut row = vec![Value::Null; core.width];
        row[..r.len()].clone_from_slice(r);
        current.push(row);
        Ok(true)
    })?;
    for (i, item) in core.from.iter().enumerate().skip(1) {
        let rows = &rights[i - 1];
        let mut next = Vec::new();
        let mut right_matched = vec![false; rows.len()];
        for l in &current {
            let mut matched = false;
            for (ri, r) in rows.iter().enumerate() {
                let mut row = l.clone();
                row[item.offset..item.offset + item.width].clone_from_slice(r);
                let ok = match &item.on {
                    Some(on) => eval_cond(on, &row, env)?,
                    None => true,
                };
                if ok {
                    matched = true;
                    right_matched[ri] = true;
                    next.push(row);
                }
            }
            if !matched && matches!(item.kind, JoinKind::Left | JoinKind::Full) {
                next.push(l.clone());
            }
        }
        if matches!(item.kind, JoinKind::Right | JoinKind::Full) {
            for (ri, r) in rows.iter().enumerate() {
                if !right_matched[ri] {
                    let mut row = vec![Value::Null; core.width];
                    row[item.offset..item.offset + item.width].clone_from_slice(r);
                    next.push(row);
                }
            }
        }
        current = next;
    }
    for r in &current {
        if !f(r)? {
            break;
        }
    }
    Ok(())
}

fn for_each_source_row(
    src: &Source,
    env: &Env,
    range: &KeyRange,
    f: &mut dyn FnMut(&[Value]) -> Result<bool, SqlError>,
) -> Result<(), SqlError> {
    match src {
        Source::Table { def } => {
            if def.is_heap() {
                return scan_table(env, def, RangeBound::Unbounded, &mut |_, row| f(row));
            }
            scan_range(env, def, range, &mut |_, row| f(row))
        }
        Source::Rows(rows) => {
            for r in rows.iter() {
                if !f(r)? {
                    break;
                }
            }
            Ok(())
        }
        Source::Stream { rows, .. } => rows.for_each(f),
        Source::Derived(plan) => {
            execute_plan(plan, env, &mut |r| f(r))?;
            Ok(())
        }
    }
}

/// Runs a plan, passing each output row to `out`. Returns the number of rows produced.
pub fn execute_plan(plan: &SelectPlan, env: &Env, out: &mut RowFn) -> Result<u64, SqlError> {
    match &plan.body {
        PlanBody::Values(rows) => {
            let mut n = 0;
            for r in rows {
                let vals = r
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        eval(e, &[], env).and_then(|v| value::convert(&v, &plan.columns[i].ty, 0))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                n += 1;
                if !out(&vals)? {
                    break;
                }
            }
            Ok(n)
        }
        PlanBody::SetOp {
            all,
            op,
            left,
            right,
            order,
        } => {
            let mut rows: Vec<Vec<Value>> = Vec::new();
            let conv = |r: &[Value]| -> Result<Vec<Value>, SqlError> {
                r.iter()
                    .enumerate()
                    .map(|(i, v)| value::convert(v, &plan.columns[i].ty, 0))
                    .collect()
            };
            execute_plan(left, env, &mut |r| {
                rows.push(conv(r)?);
                Ok(true)
            })?;
            let mut right_rows = Vec::new();
            execute_plan(right, env, &mut |r| {
                right_rows.push(conv(r)?);
                Ok(true)
            })?;
            let key = |r: &Vec<Value>| Key::new(r.clone());
            match op {
                ast::SetOperator::Union => {
                    rows.extend(right_rows);
                    if !all {
                        let mut seen = std::collections::BTreeSet::new();
                        rows.retain(|r| seen.insert(key(r)));
                    }
                }
                ast::SetOperator::Except | ast::SetOperator::Minus => {
                    let rset: std::collections::BTreeSet<Key> =
                        right_rows.iter().map(key).collect();
                    let mut seen = std::collections::BTreeSet::new();
                    rows.retain(|r| !rset.contains(&key(r)) && seen.insert(key(r)));
                }
                ast::SetOperator::Intersect => {
                    let rset: std::collections::BTreeSet<Key> =
                        right_rows.iter().map(key).collect();
                    let mut seen = std::collections::BTreeSet::new();
                    rows.retain(|r| rset.contains(&key(r)) && seen.insert(key(r)));
                }
            }
            if !order.is_empty() {
                rows.sort_by(|a, b| {
                    for (i, desc) in order {
                        let o = compare_total(&a[*i], &b[*i]);
                        if o != Ordering::Equal {
                            return if *desc { o.reverse() } else { o };
                        }
                    }
                    Ordering::Equal
                });
            }
            let mut n = 0;
            for r in &rows {
                n += 1;
                if !out(r)? {
                    break;
                }
            }
            Ok(n)
        }
        PlanBody::Select(core) => execute_select(core, env, out),
    }
}

fn execute_select(core: &SelectCore, env: &Env, out: &mut RowFn) -> Result<u64, SqlError> {
    let top = eval_count(&core.top, env)?;
    let offset = eval_count(&core.offset, env)?.unwrap_or(0);
    let fetch = eval_count(&core.fetch, env)?;
    let limit = match (top, fetch) {
        (Some(t), _) if !core.top_percent => Some(t),
        (_, Some(f)) => Some(f),
        _ => None,
    };
    if core.from.is_empty() {
        // SELECT without FROM: one row.
        if let Some(g) = &core.group {
            let row = finish_groups(core, g, vec![(Vec::new(), new_states(&g.aggs))], env)?;
            return emit_rows(core, row, env, out, offset, limit);
        }
        let ok = match &core.filter {
            Some(f) => eval_cond(f, &[], env)?,
            None => true,
        };
        if !ok || limit == Some(0) || offset > 0 {
            return Ok(0);
        }
        let vals = core
            .projection
            .iter()
            .map(|p| eval(p, &[], env))
            .collect::<Result<Vec<_>, _>>()?;
        out(&vals)?;
        return Ok(1);
    }
    let streaming =
        core.group.is_none() && !core.distinct && core.order_is_storage && !core.top_percent;
    if streaming {
        let mut produced = 0u64;
        let mut skipped = 0i64;
        let mut buf: Vec<Value> = Vec::with_capacity(core.projection.len());
        if limit == Some(0) {
            return Ok(0);
        }
        for_each_input(core, env, &mut |row| {
            if let Some(f) = &core.filter {
                if !eval_cond(f, row, env)? {
                    return Ok(true);
                }
            }
            if skipped < offset {
                skipped += 1;
                return Ok(true);
            }
            produced += 1;
            let cont = if core.identity_projection {
                out(row)?
            } else {
                buf.clear();
                for p in &core.projection {
                    buf.push(eval(p, row, env)?);
                }
                out(&buf)?
            };
            Ok(cont && limit.is_none_or(|l| (produced as i64) < l))
        })?;
        return Ok(produced);
    }
    if let Some(g) = &core.group {
        let mut groups: BTreeMap<Key, Vec<AggState>> = BTreeMap::new();
        for_each_input(core, env, &mut |row| {
            if let Some(f) = &core.filter {
                if !eval_cond(f, row, env)? {
                    return Ok(true);
                }
            }
            let key = Key::new(
                g.keys
                    .iter()
                    .map(|k| eval(k, row, env))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            let states = groups.entry(key).or_insert_with(|| new_states(&g.aggs));
            for (st, spec) in states.iter_mut().zip(g.aggs.iter()) {
                let v = match &spec.arg {
                    Some(a) => Some(eval(a, row, env)?),
                    None => None,
                };
                st.add(spec, v)?;
            }
            Ok(true)
        })?;
        if groups.is_empty() && g.keys.is_empty() {
            groups.insert(Key::new(vec![]), new_states(&g.aggs));
        }
        let groups: Vec<(Vec<Value>, Vec<AggState>)> =
            groups.into_iter().map(|(k, s)| (k.0.to_vec(), s)).collect();
        let rows = finish_groups(core, g, groups, env)?;
        return emit_rows(core, rows, env, out, offset, limit);
    }
    // Materialise input rows that pass the filter, with their order keys.
    let mut rows: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    for_each_input(core, env, &mut |row| {
        if let Some(f) = &core.filter {
            if !eval_cond(f, row, env)? {
                return Ok(true);
            }
        }
        let proj = core
            .projection
            .iter()
            .map(|p| eval(p, row, env))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = core
            .order
            .iter()
            .map(|(o, _)| eval(o, row, env))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push((proj, keys));
        Ok(true)
    })?;
    finish_rows(core, rows, out, offset, limit, top)
}

fn finish_rows(
    core: &SelectCore,
    mut rows: Vec<(Vec<Value>, Vec<Value>)>,
    out: &mut RowFn,
    offset: i64,
    limit: Option<i64>,
    top: Option<i64>,
) -> Result<u64, SqlError> {
    if core.distinct {
        let mut keyset = std::collections::BTreeSet::new();
        rows.retain(|(p, _)| keyset.insert(Key::new(p.clone())));
    }
    if !core.order.is_empty() {
        rows.sort_by(|a, b| {
            for (i, (_, desc)) in core.order.iter().enumerate() {
                let o = compare_total(&a.1[i], &b.1[i]);
                if o != Ordering::Equal {
                    return if *desc { o.reverse() } else { o };
                }
            }
            Ordering::Equal
        });
    }
    let limit = if core.top_percent {
        top.map(|p| ((rows.len() as f64) * (p.min(100) as f64) / 100.0).ceil() as i64)
    } else {
        limit
    };
    let mut n = 0u64;
    for (p, _) in rows.iter().skip(offset.max(0) as usize) {
        if limit.is_some_and(|l| n as i64 >= l) {
            break;
        }
        n += 1;
        if !out(p)? {
            break;
        }
    }
    Ok(n)
}

fn emit_rows(
    core: &SelectCore,
    group_rows: Vec<Vec<Value>>,
    env: &Env,
    out: &mut RowFn,
    offset: i64,
    limit: Option<i64>,
) -> Result<u64, SqlError> {
    let mut rows = Vec::new();
    for r in group_rows {
        if let Some(h) = &core.having {
            if !eval_cond(h, &r, env)? {
                continue;
            }
        }
        let proj = core
            .projection
            .iter()
            .map(|p| eval(p, &r, env))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = core
            .order
            .iter()
            .map(|(o, _)| eval(o, &r, env))
            .collect::<Result<Vec<_>, _>>()?;
        rows.push((proj, keys));
    }
    let top = eval_count(&core.top, env)?;
    finish_rows(core, rows, out, offset, limit, top)
}

fn finish_groups(
    _core: &SelectCore,
    g: &GroupPlan,
    groups: Vec<(Vec<Value>, Vec<AggState>)>,
    _env: &Env,
) -> Result<Vec<Vec<Value>>, SqlError> {
    let mut out = Vec::with_capacity(groups.len());
    for (keys, states) in groups {
        let mut row = keys;
        for (st, spec) in states.into_iter().zip(g.aggs.iter()) {
            row.push(st.finish(spec)?);
        }
        out.push(row);
    }
    Ok(out)
}

/// Running state of one aggregate.
#[derive(Debug, Clone)]
pub struct AggState {
    count: i64,
    acc: Value,
    seen: Option<std::collections::BTreeSet<Key>>,
}

fn new_states(specs: &[AggSpec]) -> Vec<AggState> {
    specs
        .iter()
        .map(|s| AggState {
            count: 0,
            acc: Value::Null,
            seen: if s.distinct {
                Some(Default::default())
            } else {
                None
            },
        })
        .collect()
}

impl AggState {
    fn add(&mut self, spec: &AggSpec, v: Option<Value>) -> Result<(), SqlError> {
        let v = match v {
            None => {
                self.count += 1;
                return Ok(());
            }
            Some(Value::Null) => return Ok(()),
            Some(v) => v,
        };
        if let Some(seen) = &mut self.seen {
            if !seen.insert(Key::new(vec![v.clone()])) {
                return Ok(());
            }
        }
        self.count += 1;
        match spec.kind {
            AggKind::Count | AggKind::CountBig => {}
            AggKind::Min | AggKind::Max => {
                if self.acc.is_null_value() {
                    self.acc = v;
                } else {
                    let o = compare_total(&v, &self.acc);
                    if (spec.kind == AggKind::Min && o == Ordering::Less)
                        || (spec.kind == AggKind::Max && o == Ordering::Greater)
                    {
                        self.acc = v;
                    }
                }
            }
            AggKind::Sum | AggKind::Avg => {
                // Accumulate in the result type (int sums overflow like SQL Server's: 8115).
                let acc_ty = match (&spec.ty, spec.kind) {
                    (SqlType::Decimal { scale, .. }, _) => value::decimal(38, *scale),
                    (t, _) => t.clone(),
                };
                let x = value::convert(&v, &acc_ty, 0)?;
                self.acc = if self.acc.is_null_value() {
                    x
                } else {
                    value::arithmetic('+', &self.acc, &x, &acc_ty)?
                };
            }
            AggKind::ChecksumAgg => {
                let x = match value::convert(&v, &SqlType::Int, 0)? {
                    Value::Int(i) => i,
                    _ => 0,
                };
                self.acc = Value::Int(match self.acc {
                    Value::Int(a) => a ^ x,
                    _ => x,
                });
            }
        }
        Ok(())
    }

    fn finish(self, spec: &AggSpec) -> Result<Value, SqlError> {
        Ok(match spec.kind {
            AggKind::Count => Value::Int(i32::try_from(self.count).map_err(|_| {
                err(
                    8115,
                    "Arithmetic overflow error converting expression to data type int.",
                )
            })?),
            AggKind::CountBig => Value::BigInt(self.count),
            AggKind::Avg => {
                if self.count == 0 || self.acc.is_null_value() {
                    Value::Null
                } else {
                    let n = value::convert(&Value::BigInt(self.count), &spec.ty, 0)
                        .unwrap_or(Value::BigInt(self.count));
                    let r = value::arithmetic(
                        '/',
                        &self.acc,
                        &n,
                        &value::arithmetic_type('/', &spec.ty, &value::natural_type(&n))?,
                    )?;
                    value::convert(&r, &spec.ty, 0)?
                }
            }
            _ => value::convert(&self.acc, &spec.ty, 0)?,
        })
    }
}

/// Runs a subquery for an outer row and returns the first column of its rows (at most
/// `limit`).
pub fn run_subquery_values(
    plan: &SelectPlan,
    row: &[Value],
    env: &Env,
    limit: Option<usize>,
) -> Result<Vec<Value>, SqlError> {
    let mut outer = env.outer.clone();
    outer.push(row);
    let sub = Env {
        core: env.core,
        outer,
    };
    let mut vals = Vec::new();
    execute_plan(plan, &sub, &mut |r| {
        vals.push(r.first().cloned().unwrap_or(Value::Null));
        Ok(limit.is_none_or(|l| vals.len() < l))
    })?;
    Ok(vals)
}

pub fn subquery_has_rows(_plan: &SelectPlan, _row: &[Value], _env: &Env) -> Result<bool, SqlError> {
    Ok(false)
}
