//! Expressions: binding sqlparser ASTs to typed expressions (name resolution, result types)
//! and evaluating them over rows.

use std::cmp::Ordering;
use std::sync::Arc;

use sqlparser::ast::{self, BinaryOperator, UnaryOperator};

use super::functions::{self, Func};
use super::hooks::{FunctionContext, ScalarFunction};
use super::query::{self, SelectPlan};
use super::session::SessionCore;
use super::value::{self, compare, err, ValueExt};
use crate::api::SqlError;
use crate::types::{SqlType, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A bound expression.
#[derive(Clone)]
pub enum BExpr {
    Const(Value),
    /// Column of the current row.
    Col(usize),
    /// Column of an enclosing query's row: (scope level, column).
    Outer(usize, usize),
    /// A variable (lower-cased name with '@').
    Var(String),
    Neg(Box<BExpr>, SqlType),
    BitNot(Box<BExpr>, SqlType),
    Arith(char, Box<BExpr>, Box<BExpr>, SqlType),
    Bitwise(char, Box<BExpr>, Box<BExpr>, SqlType),
    Cmp(CmpOp, Box<BExpr>, Box<BExpr>),
    And(Box<BExpr>, Box<BExpr>),
    Or(Box<BExpr>, Box<BExpr>),
    Not(Box<BExpr>),
    IsNull(Box<BExpr>, bool),
    Like {
        expr: Box<BExpr>,
        pattern: Box<BExpr>,
        negated: bool,
        escape: Option<char>,
    },
    InList {
        expr: Box<BExpr>,
        list: Vec<BExpr>,
        negated: bool,
    },
    InSub {
        expr: Box<BExpr>,
        plan: Arc<SelectPlan>,
        negated: bool,
    },
    Exists {
        plan: Arc<SelectPlan>,
        negated: bool,
    },
    Subquery(Arc<SelectPlan>),
    Case {
        whens: Vec<(BExpr, BExpr)>,
        els: Option<Box<BExpr>>,
        ty: SqlType,
    },
    Cast {
        expr: Box<BExpr>,
        ty: SqlType,
        style: i32,
        try_: bool,
        src_scale: Option<u8>,
    },
    Func(Func, Vec<BExpr>, SqlType),
    External {
        f: Arc<dyn ScalarFunction>,
        args: Vec<BExpr>,
        database: String,
    },
}

impl std::fmt::Debug for BExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BExpr::Const(v) => write!(f, "Const({v:?})"),
            BExpr::Col(i) => write!(f, "Col({i})"),
            _ => write!(f, "BExpr"),
        }
    }
}

/// One column visible in a scope.
#[derive(Debug, Clone)]
pub struct ScopeCol {
    /// Lower-cased alias or table name.
    pub qualifier: Option<String>,
    /// Lower-cased schema of a base table (for `schema.table.col`).
    pub schema: Option<String>,
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    pub identity: bool,
    pub computed: bool,
    pub updateable: bool,
    /// Hidden columns (not expanded by `*`).
    pub hidden: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub cols: Vec<ScopeCol>,
}

/// Aggregate function kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    CountBig,
    Sum,
    Avg,
    Min,
    Max,
    ChecksumAgg,
}

#[derive(Debug, Clone)]
pub struct AggSpec {
    pub kind: AggKind,
    /// None for COUNT(*).
    pub arg: Option<BExpr>,
    pub distinct: bool,
    pub ty: SqlType,
}

/// Aggregation context while binding a grouped SELECT's output expressions.
pub struct AggContext {
    pub group_exprs: Vec<ast::Expr>,
    pub aggs: Vec<AggSpec>,
}

/// Binds expressions against a stack of scopes (outermost first).
pub struct Binder<'a> {
    pub core: &'a mut SessionCore,
    pub scopes: Vec<Scope>,
    pub agg: Option<AggContext>,
    /// Output aliases usable in ORDER BY (name, expression).
    pub aliases: Vec<(String, BExpr, SqlType, bool)>,
    /// Common table expressions in scope (innermost last).
    pub ctes: Vec<query::Cte>,
}

pub type Bound = (BExpr, SqlType, bool);

fn ident_name(i: &ast::Ident) -> String {
    i.value.clone()
}

impl<'a> Binder<'a> {
    pub fn new(core: &'a mut SessionCore, scope: Scope) -> Self {
        Binder {
            core,
            scopes: vec![scope],
            agg: None,
            aliases: Vec::new(),
            ctes: Vec::new(),
        }
    }

    pub fn level(&self) -> usize {
        self.scopes.len() - 1
    }

    fn resolve_column(&self, parts: &[String]) -> Result<Bound, SqlError> {
        let name = parts.last().expect("non-empty").to_lowercase();
        let qual = if parts.len() >= 2 {
            Some(parts[parts.len() - 2].to_lowercase())
        } else {
            None
        };
        let schema = if parts.len() >= 3 {
            Some(parts[parts.len() - 3].to_lowercase())
        } else {
            None
        };
        for level in (0..self.scopes.len()).rev() {
            let scope = &self.scopes[level];
            let mut found: Option<usize> = None;
            for (i, c) in scope.cols.iter().enumerate() {
                if c.name.to_lowercase() != name {
                    continue;
                }
                if let Some(q) = &qual {
                    if c.qualifier.as_deref() != Some(q.as_str()) {
                        continue;
                    }
                    if let (Some(s), Some(cs)) = (&schema, &c.schema) {
                        if s != cs {
                            continue;
                        }
                    }
                }
                if found.is_some() && qual.is_none() {
                    return Err(err(
                        209,
                        format!(
                            "Ambiguous column name '{}'.",
                            parts.last().expect("non-empty")
                        ),
                    ));
                }
                if found.is_none() {
                    found = Some(i);
                }
            }
            if let Some(i) = found {
                let c = &scope.cols[i];
                let e = if level == self.level() {
                    BExpr::Col(i)
                } else {
                    BExpr::Outer(level, i)
                };
                return Ok((e, c.ty.clone(), c.nullable));
            }
        }
        if let Some(q) = &qual {
            let known = self.scopes.iter().any(|s| {
                s.cols
                    .iter()
                    .any(|c| c.qualifier.as_deref() == Some(q.as_str()))
            });
            if !known {
                return Err(err(
                    4104,
                    format!(
                        "The multi-part identifier \"{}\" could not be bound.",
                        parts.join(".")
                    ),
                ));
            }
        }
        Err(err(
            207,
            format!(
                "Invalid column name '{}'.",
                parts.last().expect("non-empty")
            ),
        ))
    }

    /// Binds a boolean condition.
    pub fn bind_cond(&mut self, e: &ast::Expr) -> Result<BExpr, SqlError> {
        Ok(self.bind(e)?.0)
    }

    pub fn bind(&mut self, e: &ast::Expr) -> Result<Bound, SqlError> {
        // In a grouped query, an expression equal to a GROUP BY expression is a key column.
        if let Some(agg) = &self.agg {
            if let Some(i) = agg.group_exprs.iter().position(|g| exprs_equal(g, e)) {
                let saved = self.agg.take();
                let r = self.bind(e);
                self.agg = saved;
                let (_, ty, nullable) = r?;
                return Ok((BExpr::Col(i), ty, nullable));
            }
        }
        match e {
            ast::Expr::Identifier(id) => self.bind_identifier(id),
            ast::Expr::CompoundIdentifier(parts) => {
                self.check_not_grouped()?;
                self.resolve_column(&parts.iter().map(ident_name).collect::<Vec<_>>())
            }
            ast::Expr::Nested(inner) => self.bind(inner),
            ast::Expr::Value(v) => bind_literal(&v.value),
            ast::Expr::UnaryOp { op, expr } => {
                let (x, ty, n) = self.bind(expr)?;
                match op {
                    UnaryOperator::Minus => {
                        if let BExpr::Const(v) = &x {
                            // Fold negative literals (so -2147483648 is an int).
                            if let Value::Decimal(m, s) = v {
                                if *s == 0 && (0..=-(i32::MIN as i128)).contains(m) {
                                    return Ok((
                                        BExpr::Const(Value::Int(-*m as i32)),
                                        SqlType::Int,
                                        false,
                                    ));
                                }
                            }
                            let neg = value::negate(v, &ty)?;
                            return Ok((BExpr::Const(neg), ty, n));
                        }
                        Ok((BExpr::Neg(Box::new(x), ty.clone()), ty, n))
                    }
                    UnaryOperator::Plus => Ok((x, ty, n)),
                    UnaryOperator::Not => Ok((BExpr::Not(Box::new(x)), SqlType::Bit, n)),
                    UnaryOperator::BitwiseNot => {
                        Ok((BExpr::BitNot(Box::new(x), ty.clone()), ty, n))
                    }
                    other => Err(value::unsupported(format!("the unary operator {other}"))),
                }
            }
            ast::Expr::BinaryOp { left, op, right } => self.bind_binary(left, op, right),
            ast::Expr::IsNull(x) => Ok((
                BExpr::IsNull(Box::new(self.bind(x)?.0), false),
                SqlType::Bit,
                false,
            )),
            ast::Expr::IsNotNull(x) => Ok((
                BExpr::IsNull(Box::new(self.bind(x)?.0), true),
                SqlType::Bit,
                false,
            )),
            ast::Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = self.bind(expr)?.0;
                let lo = self.bind(low)?.0;
                let hi = self.bind(high)?.0;
                let both = BExpr::And(
                    Box::new(BExpr::Cmp(CmpOp::Ge, Box::new(x.clone()), Box::new(lo))),
                    Box::new(BExpr::Cmp(CmpOp::Le, Box::new(x), Box::new(hi))),
                );
                Ok((
                    if *negated {
                        BExpr::Not(Box::new(both))
                    } else {
                        both
                    },
                    SqlType::Bit,
                    false,
                ))
            }
            ast::Expr::Like {
                negated,
                expr,
                pattern,
                escape_char,
                ..
            } => {
                let x = self.bind(expr)?.0;
                let p = self.bind(pattern)?.0;
                let escape = match escape_char.as_deref() {
                    Some(ast::Expr::Value(v)) => match &v.value {
                        ast::Value::SingleQuotedString(s)
                        | ast::Value::NationalStringLiteral(s) => s.chars().next(),
                        _ => None,
                    },
                    _ => None,
                };
                Ok((
                    BExpr::Like {
                        expr: Box::new(x),
                        pattern: Box::new(p),
                        negated: *negated,
                        escape,
                    },
                    SqlType::Bit,
                    false,
                ))
            }
            ast::Expr::InList {
                expr,
                list,
                negated,
            } => {
                let x = self.bind(expr)?.0;
                let list = list
                    .iter()
                    .map(|i| self.bind(i).map(|b| b.0))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((
                    BExpr::InList {
                        expr: Box::new(x),
                        list,
                        negated: *negated,
                    },
                    SqlType::Bit,
                    false,
                ))
            }
            ast::Expr::InSubquery {
                expr,
                subquery,
                negated,
            } => {
                let x = self.bind(expr)?.0;
                let plan = self.bind_subquery(subquery)?;
                Ok((
                    BExpr::InSub {
                        expr: Box::new(x),
                        plan,
                        negated: *negated,
                    },
                    SqlType::Bit,
                    false,
                ))
            }
            ast::Expr::Exists { subquery, negated } => {
                let plan = self.bind_subquery(subquery)?;
                Ok((
                    BExpr::Exists {
                        plan,
                        negated: *negated,
                    },
                    SqlType::Bit,
                    false,
                ))
            }
            ast::Expr::Subquery(q) => {
                let plan = self.bind_subquery(q)?;
                let col = plan.columns.first().ok_or_else(|| err(116, "Only one expression can be specified in the select list when the subquery is not introduced with EXISTS."))?;
                if plan.columns.len() != 1 {
                    return Err(err(116, "Only one expression can be specified in the select list when the subquery is not introduced with EXISTS."));
                }
                let ty = col.ty.clone();
                Ok((BExpr::Subquery(plan), ty, true))
            }
            ast::Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let op = match operand {
                    Some(o) => Some(self.bind(o)?.0),
                    None => None,
                };
                let mut whens = Vec::new();
                let mut ty = SqlType::Null;
                let mut nullable = else_result.is_none();
                for c in conditions {
                    let cond = match &op {
                        Some(o) => BExpr::Cmp(
                            CmpOp::Eq,
                            Box::new(o.clone()),
                            Box::new(self.bind(&c.condition)?.0),
                        ),
                        None => self.bind(&c.condition)?.0,
                    };
                    let (r, rt, rn) = self.bind(&c.result)?;
                    ty = value::common_type(&ty, &rt);
                    nullable |= rn;
                    whens.push((cond, r));
                }
                let els = match else_result {
                    Some(e) => {
                        let (r, rt, rn) = self.bind(e)?;
                        ty = value::common_type(&ty, &rt);
                        nullable |= rn;
                        Some(Box::new(r))
                    }
                    None => None,
                };
                let ty = if matches!(ty, SqlType::Null) {
                    SqlType::Int
                } else {
                    ty
                };
                Ok((
                    BExpr::Case {
                        whens,
                        els,
                        ty: ty.clone(),
                    },
                    ty,
                    nullable,
                ))
            }
            ast::Expr::Cast {
                kind,
                expr,
                data_type,
                ..
            } => {
                let ty = value::parse_type_name(&data_type.to_string(), 30)?;
                let (x, src, n) = self.bind(expr)?;
                let try_ = matches!(kind, ast::CastKind::TryCast | ast::CastKind::SafeCast);
                Ok((fold_cast(x, &src, ty.clone(), 0, try_), ty, n || try_))
            }
            ast::Expr::Convert {
                is_try,
                expr,
                data_type,
                styles,
                ..
            } => {
                let dt = data_type
                    .as_ref()
                    .ok_or_else(|| err(102, "Incorrect syntax near 'CONVERT'."))?;
                let ty = value::parse_type_name(&dt.to_string(), 30)?;
                let (x, src, n) = self.bind(expr)?;
                let style = match styles.first() {
                    Some(s) => match self.bind(s)?.0 {
                        BExpr::Const(v) => match value::convert(&v, &SqlType::Int, 0)? {
                            Value::Int(i) => i,
                            _ => 0,
                        },
                        _ => return Err(value::unsupported("a non-constant CONVERT style")),
                    },
                    None => 0,
                };
                Ok((
                    fold_cast(x, &src, ty.clone(), style, *is_try),
                    ty,
                    n || *is_try,
                ))
            }
            ast::Expr::Function(f) => self.bind_function(f),
            ast::Expr::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![self.bind(expr)?];
                if let Some(f) = substring_from {
                    args.push(self.bind(f)?);
                }
                if let Some(f) = substring_for {
                    args.push(self.bind(f)?);
                }
                functions::bind_builtin("substring", args, self)
            }
            ast::Expr::Trim {
                expr, trim_where, ..
            } => {
                let a = self.bind(expr)?;
                let name = match trim_where {
                    Some(ast::TrimWhereField::Leading) => "ltrim",
                    Some(ast::TrimWhereField::Trailing) => "rtrim",
                    _ => "trim",
                };
                functions::bind_builtin(name, vec![a], self)
            }
            ast::Expr::Collate { expr, .. } => self.bind(expr),
            ast::Expr::IsTrue(_) | ast::Expr::IsFalse(_) => {
                Err(value::unsupported("IS TRUE / IS FALSE"))
            }
            ast::Expr::TypedString(ts) => {
                let ty = value::parse_type_name(&ts.data_type.to_string(), 30)?;
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                };
                let v = value::convert(&Value::String(Arc::from(text)), &ty, 0)?;
                Ok((BExpr::Const(v), ty, false))
            }
            ast::Expr::Wildcard(_) => Err(err(102, "Incorrect syntax near '*'.")),
            other => Err(value::unsupported(format!("the expression `{other}`"))),
        }
    }

    fn check_not_grouped(&self) -> Result<(), SqlError> {
        Ok(())
    }

    fn bind_identifier(&mut self, id: &ast::Ident) -> Result<Bound, SqlError> {
        let name = &id.value;
        if name.starts_with("@@") {
            return functions::bind_builtin(&name.to_lowercase(), vec![], self);
        }
        if name.starts_with('@') {
            let key = name.to_lowercase();
            let (ty, _) = self
                .core
                .var(&key)
                .ok_or_else(|| err(137, format!("Must declare the scalar variable \"{name}\".")))?;
            return Ok((BExpr::Var(key), ty.clone(), true));
        }
        if id.quote_style == Some('"') && self.resolve_column(std::slice::from_ref(name)).is_err() {
            // QUOTED_IDENTIFIER: "x" is an identifier; an unknown one is an error like [x].
        }
        // Niladic functions written without parentheses.
        match name.to_uppercase().as_str() {
            "CURRENT_TIMESTAMP" | "CURRENT_USER" | "SYSTEM_USER" | "SESSION_USER" | "USER"
                if id.quote_style.is_none()
                    && self.resolve_column(std::slice::from_ref(name)).is_err() =>
            {
                return functions::bind_builtin(&name.to_lowercase(), vec![], self);
            }
            _ => {}
        }
        if self.agg.is_some() {
            // A bare column outside an aggregate and not in GROUP BY.
            let saved = self.agg.take();
            let r = self.resolve_column(std::slice::from_ref(name));
            self.agg = saved;
            r?;
            return Err(err(
                8120,
                format!("Column '{}' is invalid in the select list because it is not contained in either an aggregate function or the GROUP BY clause.", name),
            ));
        }
        // ORDER BY may use output aliases.
        if let Some((_, e, t, n)) = self
            .aliases
            .iter()
            .find(|(a, ..)| a.eq_ignore_ascii_case(name))
        {
            if self.resolve_column(std::slice::from_ref(name)).is_err() {
                return Ok((e.clone(), t.clone(), *n));
            }
        }
        self.resolve_column(std::slice::from_ref(name))
    }

    fn bind_binary(
        &mut self,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
    ) -> Result<Bound, SqlError> {
        match op {
            BinaryOperator::And => {
                let l = self.bind(left)?.0;
                let r = self.bind(right)?.0;
                return Ok((BExpr::And(Box::new(l), Box::new(r)), SqlType::Bit, false));
            }
            BinaryOperator::Or => {
                let l = self.bind(left)?.0;
                let r = self.bind(right)?.0;
                return Ok((BExpr::Or(Box::new(l), Box::new(r)), SqlType::Bit, false));
            }
            _ => {}
        }
        let (l, lt, ln) = self.bind(left)?;
        let (r, rt, rn) = self.bind(right)?;
        let cmp = match op {
            BinaryOperator::Eq => Some(CmpOp::Eq),
            BinaryOperator::NotEq => Some(CmpOp::Ne),
            BinaryOperator::Lt => Some(CmpOp::Lt),
            BinaryOperator::LtEq => Some(CmpOp::Le),
            BinaryOperator::Gt => Some(CmpOp::Gt),
            BinaryOperator::GtEq => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(c) = cmp {
            check_comparable(&lt, &rt)?;
            return Ok((BExpr::Cmp(c, Box::new(l), Box::new(r)), SqlType::Bit, false));
        }
        let nullable = ln || rn;
        let arith = match op {
            BinaryOperator::Plus | BinaryOperator::StringConcat => Some('+'),
            BinaryOperator::Minus => Some('-'),
            BinaryOperator::Multiply => Some('*'),
            BinaryOperator::Divide => Some('/'),
            BinaryOperator::Modulo => Some('%'),
            _ => None,
        };
        if let Some(c) = arith {
            let ty = value::arithmetic_type(c, &lt, &rt)?;
            if let (BExpr::Const(a), BExpr::Const(b)) = (&l, &r) {
                if let Ok(v) = value::arithmetic(c, a, b, &ty) {
                    return Ok((BExpr::Const(v), ty, nullable));
                }
            }
            return Ok((
                BExpr::Arith(c, Box::new(l), Box::new(r), ty.clone()),
                ty,
                nullable,
            ));
        }
        let bit = match op {
            BinaryOperator::BitwiseAnd => Some('&'),
            BinaryOperator::BitwiseOr => Some('|'),
            BinaryOperator::BitwiseXor | BinaryOperator::PGBitwiseXor => Some('^'),
            _ => None,
        };
        if let Some(c) = bit {
            let ty = if value::precedence(&lt) >= value::precedence(&rt) {
                lt
            } else {
                rt
            };
            return Ok((
                BExpr::Bitwise(c, Box::new(l), Box::new(r), ty.clone()),
                ty,
                nullable,
            ));
        }
        Err(value::unsupported(format!("the operator {op}")))
    }

    pub fn bind_subquery(&mut self, q: &ast::Query) -> Result<Arc<SelectPlan>, SqlError> {
        let saved_agg = self.agg.take();
        let saved_aliases = std::mem::take(&mut self.aliases);
        let r = query::plan_query(self, q);
        self.agg = saved_agg;
        self.aliases = saved_aliases;
        Ok(Arc::new(r?))
    }

    fn bind_function(&mut self, f: &ast::Function) -> Result<Bound, SqlError> {
        let parts = super::parse::object_name_parts(&f.name);
        let name = parts.last().cloned().unwrap_or_default().to_lowercase();
        let (args, distinct, star) = match &f.args {
            ast::FunctionArguments::None => (vec![], false, false),
            ast::FunctionArguments::Subquery(_) => {
                return Err(value::unsupported("a subquery as a function argument"))
            }
            ast::FunctionArguments::List(l) => {
                let distinct = matches!(
                    l.duplicate_treatment,
                    Some(ast::DuplicateTreatment::Distinct)
                );
                let mut star = false;
                let mut args = Vec::new();
                for a in &l.args {
                    match a {
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => {
                            args.push(e.clone())
                        }
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard) => star = true,
                        _ => {
                            return Err(value::unsupported(
                                "named or qualified-wildcard function arguments",
                            ))
                        }
                    }
                }
                (args, distinct, star)
            }
        };
        if f.over.is_some() {
            return Err(value::unsupported("window functions (OVER)"));
        }
        // Aggregates.
        let agg_kind = match name.as_str() {
            "count" => Some(AggKind::Count),
            "count_big" => Some(AggKind::CountBig),
            "sum" => Some(AggKind::Sum),
            "avg" => Some(AggKind::Avg),
            "min" => Some(AggKind::Min),
            "max" => Some(AggKind::Max),
            "checksum_agg" => Some(AggKind::ChecksumAgg),
            _ => None,
        };
        if let (Some(kind), 1) = (agg_kind, parts.len()) {
            let Some(mut ctx) = self.agg.take() else {
                return Err(err(
                    147,
                    "An aggregate may not appear in the WHERE clause unless it is in a subquery contained in a HAVING clause or a select list, and the column being aggregated is an outer reference.",
                ));
            };
            let arg = if star {
                None
            } else {
                let a = args.first().ok_or_else(|| {
                    err(174, format!("The {name} function requires 1 argument(s)."))
                })?;
                let r = self.bind(a);
                match r {
                    Ok(b) => Some(b),
                    Err(e) => {
                        self.agg = Some(ctx);
                        return Err(e);
                    }
                }
            };
            let ty = match (kind, &arg) {
                (AggKind::Count, _) => SqlType::Int,
                (AggKind::CountBig, _) => SqlType::BigInt,
                (AggKind::ChecksumAgg, _) => SqlType::Int,
                (AggKind::Min | AggKind::Max, Some((_, t, _))) => t.clone(),
                (AggKind::Sum, Some((_, t, _))) => match t {
                    SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::Bit => {
                        SqlType::Int
                    }
                    SqlType::BigInt => SqlType::BigInt,
                    SqlType::Decimal { scale, .. } => value::decimal(38, *scale),
                    SqlType::Money | SqlType::SmallMoney => SqlType::Money,
                    SqlType::Real | SqlType::Float => SqlType::Float,
                    other => {
                        return Err(err(
                            8117,
                            format!(
                                "Operand data type {} is invalid for sum operator.",
                                value::base_type_name(other)
                            ),
                        ))
                    }
                },
                (AggKind::Avg, Some((_, t, _))) => match t {
                    SqlType::TinyInt | SqlType::SmallInt | SqlType::Int | SqlType::Bit => {
                        SqlType::Int
                    }
                    SqlType::BigInt => SqlType::BigInt,
                    SqlType::Decimal { scale, .. } => value::decimal(38, (*scale).max(6)),
                    SqlType::Money | SqlType::SmallMoney => SqlType::Money,
                    SqlType::Real | SqlType::Float => SqlType::Float,
                    other => {
                        return Err(err(
                            8117,
                            format!(
                                "Operand data type {} is invalid for avg operator.",
                                value::base_type_name(other)
                            ),
                        ))
                    }
                },
                _ => SqlType::Int,
            };
            let idx = ctx.group_exprs.len() + ctx.aggs.len();
            ctx.aggs.push(AggSpec {
                kind,
                arg: arg.map(|a| a.0),
                distinct,
                ty: ty.clone(),
            });
            self.agg = Some(ctx);
            let nullable = !matches!(kind, AggKind::Count | AggKind::CountBig);
            return Ok((BExpr::Col(idx), ty, nullable));
        }
        if star && name != "binary_checksum" && name != "checksum" {
            return Err(err(102, "Incorrect syntax near '*'."));
        }
        // CLR type methods on a column: geometry/geography STAsBinary(), hierarchyid ToString().
        if parts.len() >= 2
            && matches!(name.as_str(), "stasbinary" | "tostring" | "stastext")
            && args.is_empty()
        {
            if let Ok((x, t, n)) = self.resolve_column(&parts[..parts.len() - 1]) {
                let ty = if name == "stasbinary" {
                    SqlType::VarBinary { len: None }
                } else {
                    value::nvarchar(None)
                };
                let _ = t;
                return Ok((
                    BExpr::Cast {
                        expr: Box::new(x),
                        ty: ty.clone(),
                        style: 0,
                        try_: true,
                        src_scale: None,
                    },
                    ty,
                    n,
                ));
            }
        }
        // Registered (extension) functions: schema-qualified names like sys.fn_cdc_get_max_lsn.
        if parts.len() >= 2 {
            let schema = parts[parts.len() - 2].to_lowercase();
            let key = format!("{schema}.{name}");
            let ext = self
                .core
                .engine
                .inner
                .registry
                .read()
                .functions
                .get(&key)
                .cloned();
            if let Some(fun) = ext {
                let bound = args
                    .iter()
                    .map(|a| self.bind(a))
                    .collect::<Result<Vec<_>, _>>()?;
                let types: Vec<SqlType> = bound.iter().map(|b| b.1.clone()).collect();
                let ty = fun.return_type(&types)?;
                let database = if parts.len() >= 3 {
                    parts[parts.len() - 3].clone()
                } else {
                    self.core.database.clone()
                };
                return Ok((
                    BExpr::External {
                        f: fun,
                        args: bound.into_iter().map(|b| b.0).collect(),
                        database,
                    },
                    ty,
                    true,
                ));
            }
            if schema != "sys" && schema != "dbo" {
                return Err(err(4121, format!("Cannot find either column \"{schema}\" or the user-defined function or aggregate \"{}\", or the name is ambiguous.", parts.join("."))));
            }
        }
        let bound = if star {
            // CHECKSUM(*) / BINARY_CHECKSUM(*): all visible columns.
            let scope = &self.scopes[self.level()];
            scope
                .cols
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.hidden)
                .map(|(i, c)| (BExpr::Col(i), c.ty.clone(), c.nullable))
                .collect()
        } else {
            let mut out = Vec::new();
            for (i, a) in args.iter().enumerate() {
                // Date part names are bare identifiers.
                if i == 0 && functions::takes_datepart(&name) {
                    if let ast::Expr::Identifier(id) = a {
                        out.push((
                            BExpr::Const(Value::String(Arc::from(id.value.to_lowercase()))),
                            value::varchar(Some(30)),
                            false,
                        ));
                        continue;
                    }
                }
                out.push(self.bind(a)?);
            }
            out
        };
        functions::bind_builtin(&name, bound, self)
    }
}

fn check_comparable(a: &SqlType, b: &SqlType) -> Result<(), SqlError> {
    let lob_text = |t: &SqlType| {
        matches!(
            t,
            SqlType::Text { .. } | SqlType::NText { .. } | SqlType::Image
        )
    };
    if lob_text(a) || lob_text(b) {
        return Err(err(
            402,
            "The data types text and varchar are incompatible in the equal to operator.",
        ));
    }
    if matches!(a, SqlType::Xml) || matches!(b, SqlType::Xml) {
        return Err(err(305, "The XML data type cannot be compared or sorted, except when using the IS NULL operator."));
    }
    Ok(())
}

fn fold_cast(x: BExpr, src: &SqlType, ty: SqlType, style: i32, try_: bool) -> BExpr {
    let src_scale = value::time_scale(src);
    if let BExpr::Const(v) = &x {
        if let Ok(c) = value::convert_ex(v, &ty, style, src_scale) {
            return BExpr::Const(c);
        }
    }
    BExpr::Cast {
        expr: Box::new(x),
        ty,
        style,
        try_,
        src_scale,
    }
}

/// Literal → (value, type) as SQL Server types literals.
pub fn bind_literal(v: &ast::Value) -> Result<Bound, SqlError> {
    Ok(match v {
        ast::Value::Number(n, _) => {
            let (v, t) = value::numeric_literal(n)?;
            (BExpr::Const(v), t, false)
        }
        ast::Value::SingleQuotedString(s) => {
            let len = s.chars().count().max(1);
            let ty = if len <= 8000 {
                value::varchar(Some(len as u16))
            } else {
                value::varchar(None)
            };
            (
                BExpr::Const(Value::String(Arc::from(s.as_str()))),
                ty,
                false,
            )
        }
        ast::Value::NationalStringLiteral(s) => {
            let len = s.encode_utf16().count().max(1);
            let ty = if len <= 4000 {
                value::nvarchar(Some(len as u16))
            } else {
                value::nvarchar(None)
            };
            (
                BExpr::Const(Value::String(Arc::from(s.as_str()))),
                ty,
                false,
            )
        }
        ast::Value::HexStringLiteral(h) => {
            let bytes = value::parse_hex(h)
                .ok_or_else(|| err(102, format!("Incorrect syntax near '0x{h}'.")))?;
            let len = bytes.len().max(1);
            (
                BExpr::Const(Value::Binary(Arc::from(bytes))),
                SqlType::VarBinary {
                    len: Some(len.min(8000) as u16),
                },
                false,
            )
        }
        ast::Value::Null => (BExpr::Const(Value::Null), SqlType::Null, true),
        ast::Value::Boolean(b) => (BExpr::Const(Value::Bit(*b)), SqlType::Bit, false),
        ast::Value::DoubleQuotedString(s) => {
            // With QUOTED_IDENTIFIER ON this is an identifier; sqlparser only gives us a
            // value here in odd positions, treat it as a string.
            (
                BExpr::Const(Value::String(Arc::from(s.as_str()))),
                value::varchar(Some(s.len().max(1) as u16)),
                false,
            )
        }
        other => return Err(value::unsupported(format!("the literal {other}"))),
    })
}

/// Structural equality of expressions, ignoring identifier case and brackets.
pub fn exprs_equal(a: &ast::Expr, b: &ast::Expr) -> bool {
    a.to_string().replace(['[', ']', '"'], "").to_lowercase()
        == b.to_string().replace(['[', ']', '"'], "").to_lowercase()
}

/// What evaluation needs: the session and the rows of enclosing queries.
pub struct Env<'a> {
    pub core: &'a SessionCore,
    pub outer: Vec<&'a [Value]>,
}

/// SQL three-valued truth of a condition value.
pub fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Null => None,
        Value::Bit(b) => Some(*b),
        other => Some(!matches!(value::to_num(other), Some(value::Num::Int(0)))),
    }
}

pub fn eval_cond(e: &BExpr, row: &[Value], env: &Env) -> Result<bool, SqlError> {
    Ok(truth(&eval(e, row, env)?) == Some(true))
}

fn bool_val(b: Option<bool>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::Bit(b),
    }
}

pub fn eval(e: &BExpr, row: &[Value], env: &Env) -> Result<Value, SqlError> {
    Ok(match e {
        BExpr::Const(v) => v.clone(),
        BExpr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
        BExpr::Outer(level, i) => env
            .outer
            .get(*level)
            .and_then(|r| r.get(*i))
            .cloned()
            .unwrap_or(Value::Null),
        BExpr::Var(name) => env
            .core
            .var(name)
            .map(|(_, v)| v.clone())
            .unwrap_or(Value::Null),
        BExpr::Neg(x, ty) => {
            let v = eval(x, row, env)?;
            if v.is_null_value() {
                Value::Null
            } else {
                value::negate(&v, ty)?
            }
        }
        BExpr::BitNot(x, ty) => match eval(x, row, env)? {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(!i),
            Value::BigInt(i) => Value::BigInt(!i),
            Value::SmallInt(i) => Value::SmallInt(!i),
            Value::TinyInt(i) => Value::TinyInt(!i),
            Value::Bit(b) => Value::Bit(!b),
            other => {
                let _ = ty;
                return Err(err(
                    8117,
                    format!(
                        "Operand data type {} is invalid for '~' operator.",
                        value::base_type_name(&value::natural_type(&other))
                    ),
                ));
            }
        },
        BExpr::Arith(op, a, b, ty) => {
            let x = eval(a, row, env)?;
            let y = eval(b, row, env)?;
            value::arithmetic(*op, &x, &y, ty)?
        }
        BExpr::Bitwise(op, a, b, ty) => {
            let x = eval(a, row, env)?;
            let y = eval(b, row, env)?;
            if x.is_null_value() || y.is_null_value() {
                Value::Null
            } else {
                let xi = int_of(&x);
                let yi = int_of(&y);
                let r = match op {
                    '&' => xi & yi,
                    '|' => xi | yi,
                    _ => xi ^ yi,
                };
                value::convert(
                    &Value::BigInt(r),
                    if matches!(ty, SqlType::Bit) {
                        &SqlType::Bit
                    } else {
                        ty
                    },
                    0,
                )?
            }
        }
        BExpr::Cmp(op, a, b) => {
            let x = eval(a, row, env)?;
            let y = eval(b, row, env)?;
            bool_val(compare(&x, &y).map(|o| cmp_matches(*op, o)))
        }
        BExpr::And(a, b) => {
            let x = truth(&eval(a, row, env)?);
            if x == Some(false) {
                return Ok(Value::Bit(false));
            }
            let y = truth(&eval(b, row, env)?);
            bool_val(match (x, y) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        BExpr::Or(a, b) => {
            let x = truth(&eval(a, row, env)?);
            if x == Some(true) {
                return Ok(Value::Bit(true));
            }
            let y = truth(&eval(b, row, env)?);
            bool_val(match (x, y) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        BExpr::Not(a) => bool_val(truth(&eval(a, row, env)?).map(|b| !b)),
        BExpr::IsNull(a, negated) => Value::Bit(eval(a, row, env)?.is_null_value() != *negated),
        BExpr::Like {
            expr,
            pattern,
            negated,
            escape,
        } => {
            let x = eval(expr, row, env)?;
            let p = eval(pattern, row, env)?;
            if x.is_null_value() || p.is_null_value() {
                Value::Null
            } else {
                let m = like_match(
                    &value::to_display_string(&x),
                    &value::to_display_string(&p),
                    *escape,
                );
                Value::Bit(m != *negated)
            }
        }
        BExpr::InList {
            expr,
            list,
            negated,
        } => {
            let x = eval(expr, row, env)?;
            if x.is_null_value() {
                return Ok(Value::Null);
            }
            let mut saw_null = false;
            for item in list {
                let y = eval(item, row, env)?;
                match compare(&x, &y) {
                    Some(Ordering::Equal) => return Ok(Value::Bit(!negated)),
                    None => saw_null = true,
                    _ => {}
                }
            }
            if saw_null {
                Value::Null
            } else {
                Value::Bit(*negated)
            }
        }
        BExpr::InSub {
            expr,
            plan,
            negated,
        } => {
            let x = eval(expr, row, env)?;
            if x.is_null_value() {
                return Ok(Value::Null);
            }
            let values = query::run_subquery_values(plan, row, env, None)?;
            let mut saw_null = false;
            for y in values {
                match compare(&x, &y) {
                    Some(Ordering::Equal) => return Ok(Value::Bit(!negated)),
                    None => saw_null = true,
                    _ => {}
                }
            }
            if saw_null {
                Value::Null
            } else {
                Value::Bit(*negated)
            }
        }
        BExpr::Exists { plan, negated } => {
            let any = !query::run_subquery_values(plan, row, env, Some(1))?.is_empty()
                || query::subquery_has_rows(plan, row, env)?;
            Value::Bit(any != *negated)
        }
        BExpr::Subquery(plan) => {
            let values = query::run_subquery_values(plan, row, env, Some(2))?;
            if values.len() > 1 {
                return Err(err(512, "Subquery returned more than 1 value. This is not permitted when the subquery follows =, !=, <, <= , >, >= or when the subquery is used as an expression."));
            }
            values.into_iter().next().unwrap_or(Value::Null)
        }
        BExpr::Case { whens, els, ty } => {
            for (c, r) in whens {
                if eval_cond(c, row, env)? {
                    return value::convert(&eval(r, row, env)?, ty, 0);
                }
            }
            match els {
                Some(e) => value::convert(&eval(e, row, env)?, ty, 0)?,
                None => Value::Null,
            }
        }
        BExpr::Cast {
            expr,
            ty,
            style,
            try_,
            src_scale,
        } => {
            let v = eval(expr, row, env)?;
            match value::convert_ex(&v, ty, *style, *src_scale) {
                Ok(v) => v,
                Err(_) if *try_ => Value::Null,
                Err(e) => return Err(e),
            }
        }
        BExpr::Func(f, args, ty) => {
            if let Some(v) = functions::eval_lazy(*f, args, row, env)? {
                return Ok(v);
            }
            let vals = args
                .iter()
                .map(|a| eval(a, row, env))
                .collect::<Result<Vec<_>, _>>()?;
            functions::call(*f, &vals, ty, env)?
        }
        BExpr::External { f, args, database } => {
            let vals = args
                .iter()
                .map(|a| eval(a, row, env))
                .collect::<Result<Vec<_>, _>>()?;
            let ctx = FunctionContext {
                engine: &env.core.engine,
                database,
            };
            f.call(&ctx, &vals)?
        }
    })
}

fn int_of(v: &Value) -> i64 {
    match value::to_num(v) {
        Some(value::Num::Int(i)) => i as i64,
        Some(n) => value::num_to_f64(n) as i64,
        None => match v {
            Value::Binary(b) => b.iter().take(8).fold(0i64, |acc, x| (acc << 8) | *x as i64),
            _ => 0,
        },
    }
}

pub fn cmp_matches(op: CmpOp, o: Ordering) -> bool {
    match op {
        CmpOp::Eq => o == Ordering::Equal,
        CmpOp::Ne => o != Ordering::Equal,
        CmpOp::Lt => o == Ordering::Less,
        CmpOp::Le => o != Ordering::Greater,
        CmpOp::Gt => o == Ordering::Greater,
        CmpOp::Ge => o != Ordering::Less,
    }
}

/// LIKE with %, _, [set], [^set] and ESCAPE; case-insensitive; trailing spaces of the value
/// are significant only if the pattern has them.
pub fn like_match(s: &str, p: &str, escape: Option<char>) -> bool {
    let s: Vec<char> = s.chars().flat_map(|c| c.to_lowercase()).collect();
    let p: Vec<char> = p.chars().flat_map(|c| c.to_lowercase()).collect();
    fn m(s: &[char], p: &[char], esc: Option<char>) -> bool {
        if p.is_empty() {
            return s.iter().all(|c| *c == ' ');
        }
        match p[0] {
            c if Some(c) == esc && p.len() > 1 => {
                !s.is_empty() && s[0] == p[1] && m(&s[1..], &p[2..], esc)
            }
            '%' => (0..=s.len()).any(|i| m(&s[i..], &p[1..], esc)),
            '_' => !s.is_empty() && m(&s[1..], &p[1..], esc),
            '[' => {
                let Some(close) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else {
                    return !s.is_empty() && s[0] == '[' && m(&s[1..], &p[1..], esc);
                };
                if s.is_empty() {
                    return false;
                }
                let set = &p[1..close];
                let (neg, set) = if set.first() == Some(&'^') {
                    (true, &set[1..])
                } else {
                    (false, set)
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        if set[i] <= s[0] && s[0] <= set[i + 2] {
                            hit = true;
                        }
                        i += 3;
                    } else {
                        if set[i] == s[0] {
                            hit = true;
                        }
                        i += 1;
                    }
                }
                hit != neg && m(&s[1..], &p[close + 1..], esc)
            }
            c => !s.is_empty() && s[0] == c && m(&s[1..], &p[1..], esc),
        }
    }
    m(&s, &p, escape)
}
