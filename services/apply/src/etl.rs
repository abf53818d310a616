//! ETL: per-table column expressions, evaluated by apply on the decoded row values.
//!
//! A column's `expression` (task file `objects.tables.<t>.columns.<c>.expression`) replaces the
//! value written to that column. It is evaluated here, in-process, on the wire values of the
//! source row, at one hook point used by both data paths: full sync calls [`transform_row`]
//! before a row is COPY-encoded, incremental sync calls [`transform_change`] before statements
//! are built. Binary COPY stays binary COPY; tables without expressions pay nothing (the row is
//! borrowed as is), tables with expressions pay one row copy.
//!
//! The language is the T-SQL expression subset below (tokens shared with typemap's translator):
//! - source column names (`Name`, `[Name]`, `"Name"`; case-insensitive), including skipped
//!   columns; literals `'text'`, `N'text'`, numbers, `NULL`;
//! - `+ - * / %` (`+` with a text operand concatenates; int / int truncates like T-SQL; decimal
//!   arithmetic is exact), comparisons `= <> != < <= > >=` (text compared ignoring trailing
//!   blanks, as SQL Server does), `AND OR NOT`, `IS [NOT] NULL`, `CASE [x] WHEN … THEN … [ELSE …]
//!   END`, `IIF(c, a, b)`;
//! - `UPPER LOWER LTRIM RTRIM TRIM LEN LEFT RIGHT SUBSTRING REPLACE CONCAT COALESCE ISNULL NULLIF
//!   ABS ROUND FLOOR CEILING`, and `CAST(x AS t)` / `CONVERT(t, x)` (no style) to character,
//!   integer, decimal/numeric/money, float/real and bit types.
//!
//! NULL propagates (`CONCAT` treats it as empty, as in T-SQL). The result is converted to the
//! column's own type (the type its source column maps to): numbers are rounded half away from
//! zero to the column's scale, numbers and booleans become text for text columns, text is
//! parsed for numeric columns; anything else is an error naming the table and column.
//!
//! Limits, by design:
//! - The task's `where` filter is applied to source values (by capture in full sync), so it may
//!   not reference a column that has an expression: on changes the filter sees written values
//!   and the two paths would disagree. Such plans are refused.
//! - On an update that leaves a LOB input unchanged (CDC does not carry it), a column whose
//!   expression reads that LOB is not written either: it keeps its previous value.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use dbsync_proto::v1::{value::Kind, RowChange, TableSchema, Value};
use dbsync_typemap::expr::{tokenize, Token};
use dbsync_typemap::numeric::pow10;
use dbsync_typemap::{decimal_from_parts, decimal_parts, map_column, MappingOptions, PgKind};

use crate::error::{ApplyError, Result};
use crate::pg::changes::TableApply;
use crate::plan::TableTarget;

/// The compiled expressions of one table.
#[derive(Debug)]
pub struct TableEtl {
    outputs: Vec<Output>,
}

#[derive(Debug)]
struct Output {
    /// The column written (index into the source row).
    column: usize,
    column_name: String,
    expr: Expr,
    /// Source columns the expression reads.
    inputs: Vec<usize>,
    kind: PgKind,
}

impl TableEtl {
    /// Compiles the expressions of `columns` (source index, expression text); `None` when
    /// there are none.
    pub fn compile(
        source_name: &str,
        source: &TableSchema,
        expressions: &[(usize, &str)],
    ) -> Result<Option<Arc<TableEtl>>> {
        if expressions.is_empty() {
            return Ok(None);
        }
        let mut outputs = Vec::with_capacity(expressions.len());
        for &(column, text) in expressions {
            let col = &source.columns[column];
            let invalid = |detail: String| ApplyError::InvalidPlan {
                object: format!("{source_name}.{}", col.name),
                detail: format!("expression {text:?}: {detail}"),
            };
            let expr = parse(text, source).map_err(invalid)?;
            let kind = map_column(col, &MappingOptions::default())
                .map(|t| t.kind)
                .map_err(|e| invalid(e.to_string()))?;
            let mut inputs = Vec::new();
            expr.columns(&mut inputs);
            inputs.sort_unstable();
            inputs.dedup();
            outputs.push(Output {
                column,
                column_name: col.name.clone(),
                expr,
                inputs,
                kind,
            });
        }
        Ok(Some(Arc::new(TableEtl { outputs })))
    }

    /// True when `column` (source index) is computed by an expression.
    pub fn computes(&self, column: usize) -> bool {
        self.outputs.iter().any(|o| o.column == column)
    }

    /// Evaluates every expression over `values` (read through `position`: source index →
    /// index into `values`, `None` when absent) and writes the results into `out`.
    fn apply(
        &self,
        table: &str,
        values: &[Value],
        position: impl Fn(usize) -> Option<usize>,
        out: &mut [Value],
    ) -> Result<()> {
        for o in &self.outputs {
            let Some(slot) = position(o.column) else {
                continue;
            };
            // An input the change does not carry (an untouched LOB, a column the capture
            // instance lacks): the result is unknown, so the column is not written.
            let unknown = o
                .inputs
                .iter()
                .any(|i| match position(*i).and_then(|p| values.get(p)) {
                    None => true,
                    Some(v) => matches!(v.kind, Some(Kind::Unchanged(_))),
                });
            out[slot] = if unknown {
                Value {
                    kind: Some(Kind::Unchanged(true)),
                }
            } else {
                let get = |i: usize| position(i).and_then(|p| values.get(p));
                o.expr
                    .eval(&get)
                    .and_then(|v| coerce(v, o.kind))
                    .map_err(|detail| ApplyError::InvalidValue {
                        table: table.to_string(),
                        column: o.column_name.clone(),
                        detail: format!("ETL expression: {detail}"),
                    })?
            };
        }
        Ok(())
    }
}

/// Full sync hook: the row to COPY (source column order), with expression columns computed.
#[inline]
pub fn transform_row<'v>(target: &TableTarget, values: &'v [Value]) -> Result<Cow<'v, [Value]>> {
    let Some(etl) = &target.etl else {
        return Ok(Cow::Borrowed(values));
    };
    let mut out = values.to_vec();
    etl.apply(&target.source_name, values, Some, &mut out)?;
    Ok(Cow::Owned(out))
}

/// Incremental hook: the change with expression columns computed (values stay in
/// capture-instance order).
#[inline]
pub fn transform_change<'c>(t: &TableApply, change: &'c RowChange) -> Result<Cow<'c, RowChange>> {
    let target = &t.table.target;
    let Some(etl) = &target.etl else {
        return Ok(Cow::Borrowed(change));
    };
    let mut out = change.clone();
    etl.apply(
        &target.source_name,
        &change.values,
        |i| t.change_position.get(i).copied().flatten(),
        &mut out.values,
    )?;
    Ok(Cow::Owned(out))
}

/// Refuses a `where` filter that reads a column computed by an expression (see module docs).
pub fn check_filter(target: &TableTarget) -> Result<()> {
    let Some(etl) = &target.etl else {
        return Ok(());
    };
    if !target.has_filter() {
        return Ok(());
    }
    let Ok(tokens) = tokenize(&target.where_filter) else {
        return Ok(()); // a filter that does not tokenize is reported where it is translated
    };
    for o in &etl.outputs {
        let name = &o.column_name;
        if tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) | Token::Quoted(w) if w.eq_ignore_ascii_case(name)))
        {
            return Err(ApplyError::InvalidPlan {
                object: format!("{}.{name}", target.source_name),
                detail: format!(
                    "the where filter {:?} reads column {name}, which has an ETL expression; filters see source values in full sync and written values on changes, so filter on other columns or drop the expression",
                    target.where_filter
                ),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Values

/// An evaluated value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Null,
    Bool(bool),
    Int(i64),
    /// (unscaled, scale)
    Dec(i128, u32),
    Float(f64),
    Text(String),
    /// Dates, times, binary, uuid: passed through, compared for equality only.
    Other(Kind),
}

type Eval = std::result::Result<V, String>;

fn from_value(v: Option<&Value>) -> Eval {
    Ok(match v.and_then(|v| v.kind.as_ref()) {
        None => V::Null,
        Some(Kind::Bool(b)) => V::Bool(*b),
        Some(Kind::Int(i)) => V::Int(*i),
        Some(Kind::Float32(f)) => V::Float(f64::from(*f)),
        Some(Kind::Float64(f)) => V::Float(*f),
        Some(Kind::Decimal(d)) => {
            let (u, s) = decimal_parts(d).map_err(|e| e.to_string())?;
            V::Dec(u, s)
        }
        Some(Kind::Text(t)) => V::Text(t.clone()),
        Some(other) => V::Other(other.clone()),
    })
}

impl V {
    fn type_name(&self) -> &'static str {
        match self {
            V::Null => "NULL",
            V::Bool(_) => "bit",
            V::Int(_) => "integer",
            V::Dec(..) => "decimal",
            V::Float(_) => "float",
            V::Text(_) => "text",
            V::Other(_) => "a date, time, binary or uuid value",
        }
    }

    fn truth(&self) -> std::result::Result<Option<bool>, String> {
        match self {
            V::Null => Ok(None),
            V::Bool(b) => Ok(Some(*b)),
            other => Err(format!("{} used as a condition", other.type_name())),
        }
    }

    fn text(&self) -> Option<String> {
        Some(match self {
            V::Null => return None,
            V::Bool(b) => u8::from(*b).to_string(),
            V::Int(i) => i.to_string(),
            V::Dec(u, s) => decimal_text(*u, *s),
            V::Float(f) => f.to_string(),
            V::Text(t) => t.clone(),
            V::Other(_) => return None,
        })
    }
}

fn decimal_text(unscaled: i128, scale: u32) -> String {
    let digits = unscaled.unsigned_abs().to_string();
    let sign = if unscaled < 0 { "-" } else { "" };
    let scale = scale as usize;
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

fn parse_decimal(text: &str) -> Option<(i128, u32)> {
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut u: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        u = u.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    Some((if neg { -u } else { u }, frac.len() as u32))
}

/// `unscaled × 10^-from` at scale `to`, rounding half away from zero when digits are dropped.
fn round_to(unscaled: i128, from: u32, to: u32) -> Option<i128> {
    if to >= from {
        return unscaled.checked_mul(i128::try_from(pow10(to - from)?).ok()?);
    }
    let Some(factor) = pow10(from - to).and_then(|f| i128::try_from(f).ok()) else {
        return Some(0);
    };
    let q = unscaled / factor;
    let r = unscaled % factor;
    Some(if r.unsigned_abs() * 2 >= factor.unsigned_abs() {
        q + unscaled.signum()
    } else {
        q
    })
}

/// Numbers as one of the three numeric forms, for arithmetic and comparison.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Dec(i128, u32),
    Float(f64),
}

fn num(v: &V) -> Option<Num> {
    match v {
        V::Int(i) => Some(Num::Int(*i)),
        V::Bool(b) => Some(Num::Int(i64::from(*b))),
        V::Dec(u, s) => Some(Num::Dec(*u, *s)),
        V::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

fn as_f64(n: Num) -> f64 {
    match n {
        Num::Int(i) => i as f64,
        Num::Dec(u, s) => u as f64 / 10f64.powi(s as i32),
        Num::Float(f) => f,
    }
}

fn as_dec(n: Num) -> (i128, u32) {
    match n {
        Num::Int(i) => (i128::from(i), 0),
        Num::Dec(u, s) => (u, s),
        Num::Float(_) => unreachable!("floats are handled before decimals"),
    }
}

const OVERFLOW: &str = "arithmetic overflow";

fn arithmetic(op: BinOp, a: Num, b: Num) -> Eval {
    use BinOp::*;
    if let (Num::Int(x), Num::Int(y)) = (a, b) {
        let r = match op {
            Add => x.checked_add(y),
            Sub => x.checked_sub(y),
            Mul => x.checked_mul(y),
            Div | Mod if y == 0 => return Err("division by zero".into()),
            Div => x.checked_div(y),
            Mod => x.checked_rem(y),
            _ => unreachable!("not arithmetic"),
        };
        return r.map(V::Int).ok_or_else(|| OVERFLOW.into());
    }
    if matches!(a, Num::Float(_)) || matches!(b, Num::Float(_)) {
        let (x, y) = (as_f64(a), as_f64(b));
        if matches!(op, Div | Mod) && y == 0.0 {
            return Err("division by zero".into());
        }
        return Ok(V::Float(match op {
            Add => x + y,
            Sub => x - y,
            Mul => x * y,
            Div => x / y,
            Mod => x % y,
            _ => unreachable!("not arithmetic"),
        }));
    }
    let ((x, sx), (y, sy)) = (as_dec(a), as_dec(b));
    let common = sx.max(sy);
    let aligned = || Some((round_to(x, sx, common)?, round_to(y, sy, common)?));
    let r = match op {
        Add => aligned()
            .and_then(|(x, y)| x.checked_add(y))
            .map(|u| (u, common)),
        Sub => aligned()
            .and_then(|(x, y)| x.checked_sub(y))
            .map(|u| (u, common)),
        Mod => {
            if y == 0 {
                return Err("division by zero".into());
            }
            aligned()
                .and_then(|(x, y)| x.checked_rem(y))
                .map(|u| (u, common))
        }
        Mul => x.checked_mul(y).map(|u| (u, sx + sy)).and_then(|(u, s)| {
            if s > 38 {
                round_to(u, s, 38).map(|u| (u, 38))
            } else {
                Some((u, s))
            }
        }),
        Div => {
            if y == 0 {
                return Err("division by zero".into());
            }
            // SQL Server keeps at least 6 fractional digits in a decimal quotient.
            let scale = sx.max(6);
            // x/10^sx ÷ y/10^sy at `scale` = x × 10^(scale - sx + sy + 1) / y, then round once.
            let shift = scale + sy + 1 - sx;
            pow10(shift)
                .and_then(|f| i128::try_from(f).ok())
                .and_then(|f| x.checked_mul(f))
                .map(|n| (round_to(n / y, scale + 1, scale).unwrap_or(0), scale))
        }
        _ => unreachable!("not arithmetic"),
    };
    r.map(|(u, s)| V::Dec(u, s)).ok_or_else(|| OVERFLOW.into())
}

fn compare(a: &V, b: &V) -> std::result::Result<Option<Ordering>, String> {
    if let (Some(x), Some(y)) = (num(a), num(b)) {
        return Ok(match (x, y) {
            (Num::Float(_), _) | (_, Num::Float(_)) => as_f64(x).partial_cmp(&as_f64(y)),
            _ => {
                let ((x, sx), (y, sy)) = (as_dec(x), as_dec(y));
                let s = sx.max(sy);
                match (round_to(x, sx, s), round_to(y, sy, s)) {
                    (Some(x), Some(y)) => Some(x.cmp(&y)),
                    _ => as_f64(Num::Dec(x, sx)).partial_cmp(&as_f64(Num::Dec(y, sy))),
                }
            }
        });
    }
    match (a, b) {
        // SQL Server ignores trailing blanks when comparing strings.
        (V::Text(x), V::Text(y)) => Ok(Some(x.trim_end_matches(' ').cmp(y.trim_end_matches(' ')))),
        (V::Other(x), V::Other(y)) => match (x, y) {
            (Kind::Date(a), Kind::Date(b)) => Ok(Some(a.cmp(b))),
            (Kind::Time(a), Kind::Time(b)) | (Kind::Datetime(a), Kind::Datetime(b)) => {
                Ok(Some(a.cmp(b)))
            }
            (Kind::Datetimeoffset(a), Kind::Datetimeoffset(b)) => {
                Ok(Some(a.utc_ticks.cmp(&b.utc_ticks)))
            }
            (Kind::Binary(a), Kind::Binary(b)) | (Kind::Uuid(a), Kind::Uuid(b)) => {
                Ok(Some(a.cmp(b)))
            }
            _ => Err(format!("cannot compare {x:?} with {y:?}")),
        },
        _ => Err(format!(
            "cannot compare {} with {}",
            a.type_name(),
            b.type_name()
        )),
    }
}

/// The evaluated result as a wire value of the column's type.
fn coerce(v: V, kind: PgKind) -> std::result::Result<Value, String> {
    let wrap = |k: Kind| Value { kind: Some(k) };
    if v == V::Null {
        return Ok(Value { kind: None });
    }
    let mismatch = |v: &V| {
        format!(
            "a {} result cannot be written to a {} column",
            v.type_name(),
            kind.ddl()
        )
    };
    Ok(match kind {
        PgKind::Bool => match &v {
            V::Bool(b) => wrap(Kind::Bool(*b)),
            V::Int(i) => wrap(Kind::Bool(*i != 0)),
            _ => return Err(mismatch(&v)),
        },
        PgKind::SmallInt | PgKind::Integer | PgKind::BigInt => wrap(Kind::Int(match &v {
            V::Bool(b) => i64::from(*b),
            V::Int(i) => *i,
            V::Dec(u, s) => round_to(*u, *s, 0)
                .and_then(|u| i64::try_from(u).ok())
                .ok_or(OVERFLOW)?,
            V::Float(f) if f.is_finite() => f.round() as i64,
            V::Text(t) => t
                .trim()
                .parse()
                .map_err(|_| format!("{t:?} is not an integer"))?,
            _ => return Err(mismatch(&v)),
        })),
        PgKind::Real | PgKind::Double => {
            let f = match &v {
                V::Text(t) => t
                    .trim()
                    .parse()
                    .map_err(|_| format!("{t:?} is not a number"))?,
                other => as_f64(num(other).ok_or_else(|| mismatch(other))?),
            };
            wrap(if kind == PgKind::Real {
                Kind::Float32(f as f32)
            } else {
                Kind::Float64(f)
            })
        }
        PgKind::Numeric { scale, .. } => {
            let (u, s) = match &v {
                V::Text(t) => parse_decimal(t).ok_or_else(|| format!("{t:?} is not a number"))?,
                V::Float(f) => parse_decimal(&f.to_string()).ok_or(OVERFLOW)?,
                other => as_dec(num(other).ok_or_else(|| mismatch(other))?),
            };
            let u = round_to(u, s, u32::from(scale)).ok_or(OVERFLOW)?;
            wrap(Kind::Decimal(decimal_from_parts(u, u32::from(scale))))
        }
        k if k.is_text() || matches!(k, PgKind::Xml | PgKind::Jsonb) => match v.text() {
            Some(t) => wrap(Kind::Text(t)),
            None => return Err(mismatch(&v)),
        },
        _ => match v {
            V::Other(k) => wrap(k),
            other => return Err(mismatch(&other)),
        },
    })
}

// ---------------------------------------------------------------------------------------
// Expressions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Upper,
    Lower,
    Ltrim,
    Rtrim,
    Trim,
    Len,
    Left,
    Right,
    Substring,
    Replace,
    Concat,
    Coalesce,
    Nullif,
    Abs,
    Round,
    Floor,
    Ceiling,
}

impl Func {
    /// The function and its accepted argument counts.
    fn by_name(name: &str) -> Option<(Func, usize, usize)> {
        use Func::*;
        Some(match name.to_ascii_lowercase().as_str() {
            "upper" => (Upper, 1, 1),
            "lower" => (Lower, 1, 1),
            "ltrim" => (Ltrim, 1, 1),
            "rtrim" => (Rtrim, 1, 1),
            "trim" => (Trim, 1, 1),
            "len" => (Len, 1, 1),
            "left" => (Left, 2, 2),
            "right" => (Right, 2, 2),
            "substring" => (Substring, 3, 3),
            "replace" => (Replace, 3, 3),
            "concat" => (Concat, 2, usize::MAX),
            "coalesce" => (Coalesce, 1, usize::MAX),
            "isnull" => (Coalesce, 2, 2),
            "nullif" => (Nullif, 2, 2),
            "abs" => (Abs, 1, 1),
            "round" => (Round, 2, 2),
            "floor" => (Floor, 1, 1),
            "ceiling" => (Ceiling, 1, 1),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(V),
    /// Source column index.
    Col(usize),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    IsNull(Box<Expr>, bool),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// Searched CASE (a simple CASE is rewritten into `operand = value` conditions).
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    Call(Func, Vec<Expr>),
    /// `CAST(x AS type)` / `CONVERT(type, x)`.
    Cast(Box<Expr>, CastTo),
}

impl Expr {
    fn columns(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Lit(_) => {}
            Expr::Col(i) => out.push(*i),
            Expr::Neg(e) | Expr::Not(e) | Expr::IsNull(e, _) => e.columns(out),
            Expr::Bin(_, a, b) => {
                a.columns(out);
                b.columns(out);
            }
            Expr::Case(arms, otherwise) => {
                for (c, v) in arms {
                    c.columns(out);
                    v.columns(out);
                }
                if let Some(e) = otherwise {
                    e.columns(out);
                }
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.columns(out)),
            Expr::Cast(e, _) => e.columns(out),
        }
    }

    fn eval<'v>(&self, get: &dyn Fn(usize) -> Option<&'v Value>) -> Eval {
        Ok(match self {
            Expr::Lit(v) => v.clone(),
            Expr::Col(i) => from_value(get(*i))?,
            Expr::Neg(e) => match e.eval(get)? {
                V::Null => V::Null,
                V::Int(i) => V::Int(i.checked_neg().ok_or(OVERFLOW)?),
                V::Dec(u, s) => V::Dec(-u, s),
                V::Float(f) => V::Float(-f),
                other => return Err(format!("cannot negate {}", other.type_name())),
            },
            Expr::Not(e) => match e.eval(get)?.truth()? {
                None => V::Null,
                Some(b) => V::Bool(!b),
            },
            Expr::IsNull(e, negated) => V::Bool((e.eval(get)? == V::Null) != *negated),
            Expr::Bin(op @ (BinOp::And | BinOp::Or), a, b) => {
                let x = a.eval(get)?.truth()?;
                // Short-circuit like SQL: FALSE AND x = FALSE, TRUE OR x = TRUE.
                if x == Some(*op == BinOp::Or) {
                    return Ok(V::Bool(*op == BinOp::Or));
                }
                let y = b.eval(get)?.truth()?;
                match (op, x, y) {
                    (_, _, Some(y)) if y == (*op == BinOp::Or) => V::Bool(y),
                    (_, Some(_), Some(y)) => V::Bool(y),
                    _ => V::Null,
                }
            }
            Expr::Bin(op, a, b) => {
                let (x, y) = (a.eval(get)?, b.eval(get)?);
                if x == V::Null || y == V::Null {
                    return Ok(V::Null);
                }
                match op {
                    BinOp::Add if matches!(x, V::Text(_)) || matches!(y, V::Text(_)) => {
                        let (Some(x), Some(y)) = (x.text(), y.text()) else {
                            return Err(format!(
                                "cannot concatenate {} and {}",
                                x.type_name(),
                                y.type_name()
                            ));
                        };
                        V::Text(x + &y)
                    }
                    BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                        match (num(&x), num(&y)) {
                            (Some(a), Some(b)) => arithmetic(*op, a, b)?,
                            _ => {
                                return Err(format!(
                                    "arithmetic on {} and {}",
                                    x.type_name(),
                                    y.type_name()
                                ))
                            }
                        }
                    }
                    _ => match compare(&x, &y)? {
                        None => V::Null,
                        Some(o) => V::Bool(match op {
                            BinOp::Eq => o == Ordering::Equal,
                            BinOp::Ne => o != Ordering::Equal,
                            BinOp::Lt => o == Ordering::Less,
                            BinOp::Le => o != Ordering::Greater,
                            BinOp::Gt => o == Ordering::Greater,
                            _ => o != Ordering::Less,
                        }),
                    },
                }
            }
            Expr::Case(arms, otherwise) => {
                for (cond, value) in arms {
                    if cond.eval(get)?.truth()? == Some(true) {
                        return value.eval(get);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(get)?,
                    None => V::Null,
                }
            }
            Expr::Call(f, args) => call(*f, args, get)?,
            Expr::Cast(e, to) => cast(e.eval(get)?, *to)?,
        })
    }
}

/// The target of a `CAST`/`CONVERT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CastTo {
    Text,
    Int,
    /// decimal with this scale
    Decimal(u32),
    Float,
    Bit,
}

fn cast(v: V, to: CastTo) -> Eval {
    if v == V::Null {
        return Ok(V::Null);
    }
    let not_number = |v: &V| format!("cannot convert {} to a number", v.type_name());
    Ok(match to {
        CastTo::Text => V::Text(
            v.text()
                .ok_or_else(|| format!("cannot convert {} to text", v.type_name()))?,
        ),
        CastTo::Int => match &v {
            V::Text(t) => V::Int(
                t.trim()
                    .parse()
                    .map_err(|_| format!("{t:?} is not an integer"))?,
            ),
            // SQL Server truncates decimals and floats converted to int.
            V::Float(f) if f.is_finite() => V::Int(f.trunc() as i64),
            other => match num(other).ok_or_else(|| not_number(other))? {
                Num::Int(i) => V::Int(i),
                Num::Dec(u, s) => {
                    let factor = pow10(s)
                        .and_then(|p| i128::try_from(p).ok())
                        .ok_or(OVERFLOW)?;
                    V::Int(i64::try_from(u / factor).map_err(|_| OVERFLOW)?)
                }
                Num::Float(_) => return Err(OVERFLOW.into()),
            },
        },
        CastTo::Decimal(scale) => {
            let (u, s) = match &v {
                V::Text(t) => parse_decimal(t).ok_or_else(|| format!("{t:?} is not a number"))?,
                V::Float(f) => parse_decimal(&f.to_string()).ok_or(OVERFLOW)?,
                other => as_dec(num(other).ok_or_else(|| not_number(other))?),
            };
            V::Dec(round_to(u, s, scale).ok_or(OVERFLOW)?, scale)
        }
        CastTo::Float => match &v {
            V::Text(t) => V::Float(
                t.trim()
                    .parse()
                    .map_err(|_| format!("{t:?} is not a number"))?,
            ),
            other => V::Float(as_f64(num(other).ok_or_else(|| not_number(other))?)),
        },
        CastTo::Bit => match &v {
            V::Text(t) if t.trim().eq_ignore_ascii_case("true") => V::Bool(true),
            V::Text(t) if t.trim().eq_ignore_ascii_case("false") => V::Bool(false),
            V::Text(t) => V::Bool(
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{t:?} is not a bit"))?
                    != 0,
            ),
            other => V::Bool(as_f64(num(other).ok_or_else(|| not_number(other))?) != 0.0),
        },
    })
}

fn call<'v>(f: Func, args: &[Expr], get: &dyn Fn(usize) -> Option<&'v Value>) -> Eval {
    use Func::*;
    match f {
        Coalesce => {
            for a in args {
                let v = a.eval(get)?;
                if v != V::Null {
                    return Ok(v);
                }
            }
            return Ok(V::Null);
        }
        Concat => {
            let mut out = String::new();
            for a in args {
                out.push_str(&a.eval(get)?.text().unwrap_or_default());
            }
            return Ok(V::Text(out));
        }
        Nullif => {
            let (x, y) = (args[0].eval(get)?, args[1].eval(get)?);
            return Ok(
                if x != V::Null && y != V::Null && compare(&x, &y)? == Some(Ordering::Equal) {
                    V::Null
                } else {
                    x
                },
            );
        }
        _ => {}
    }
    let values = args
        .iter()
        .map(|a| a.eval(get))
        .collect::<std::result::Result<Vec<V>, String>>()?;
    if values.contains(&V::Null) {
        return Ok(V::Null);
    }
    let text = |i: usize| -> std::result::Result<String, String> {
        values[i]
            .text()
            .ok_or_else(|| format!("{f:?} expects text, got {}", values[i].type_name()))
    };
    let int = |i: usize| -> std::result::Result<i64, String> {
        match num(&values[i]) {
            Some(Num::Int(n)) => Ok(n),
            Some(Num::Dec(u, s)) => round_to(u, s, 0)
                .and_then(|u| i64::try_from(u).ok())
                .ok_or_else(|| OVERFLOW.to_string()),
            _ => Err(format!(
                "{f:?} expects an integer, got {}",
                values[i].type_name()
            )),
        }
    };
    let number = |i: usize| {
        num(&values[i])
            .ok_or_else(|| format!("{f:?} expects a number, got {}", values[i].type_name()))
    };
    Ok(match f {
        Upper => V::Text(text(0)?.to_uppercase()),
        Lower => V::Text(text(0)?.to_lowercase()),
        Ltrim => V::Text(text(0)?.trim_start_matches(' ').to_string()),
        Rtrim => V::Text(text(0)?.trim_end_matches(' ').to_string()),
        Trim => V::Text(text(0)?.trim_matches(' ').to_string()),
        Len => V::Int(text(0)?.trim_end_matches(' ').chars().count() as i64),
        Left => {
            let n = usize::try_from(int(1)?).map_err(|_| "LEFT with a negative length")?;
            V::Text(text(0)?.chars().take(n).collect())
        }
        Right => {
            let n = usize::try_from(int(1)?).map_err(|_| "RIGHT with a negative length")?;
            let s = text(0)?;
            let skip = s.chars().count().saturating_sub(n);
            V::Text(s.chars().skip(skip).collect())
        }
        Substring => {
            // T-SQL: characters start..start+length-1 (1-based), clipped to the string.
            let (start, length) = (int(1)?, int(2)?);
            if length < 0 {
                return Err("SUBSTRING with a negative length".into());
            }
            let end = start.saturating_add(length);
            let first = start.max(1);
            let count = usize::try_from((end - first).max(0)).unwrap_or(0);
            V::Text(
                text(0)?
                    .chars()
                    .skip((first - 1) as usize)
                    .take(count)
                    .collect(),
            )
        }
        Replace => {
            let pattern = text(1)?;
            if pattern.is_empty() {
                V::Text(text(0)?)
            } else {
                V::Text(text(0)?.replace(&pattern, &text(2)?))
            }
        }
        Abs => match number(0)? {
            Num::Int(i) => V::Int(i.checked_abs().ok_or(OVERFLOW)?),
            Num::Dec(u, s) => V::Dec(u.abs(), s),
            Num::Float(x) => V::Float(x.abs()),
        },
        Round => {
            let digits = int(1)?;
            match number(0)? {
                Num::Float(x) => {
                    let f = 10f64.powi(digits as i32);
                    V::Float((x * f).round() / f)
                }
                n => {
                    // The scale stays (ROUND(1.235, 2) = 1.240); negative digits round the
                    // integer part.
                    let (u, s) = as_dec(n);
                    let keep = i64::from(s).min(digits);
                    let rounded = if keep >= 0 {
                        round_to(u, s, keep as u32).and_then(|r| round_to(r, keep as u32, s))
                    } else {
                        let drop = u32::try_from(-keep).unwrap_or(u32::MAX);
                        round_to(u, s, 0)
                            .and_then(|r| round_to(r, drop, 0))
                            .and_then(|r| round_to(r, 0, drop))
                            .and_then(|r| round_to(r, 0, s))
                    };
                    let r = rounded.ok_or(OVERFLOW)?;
                    match n {
                        Num::Int(_) => V::Int(i64::try_from(r).map_err(|_| OVERFLOW)?),
                        _ => V::Dec(r, s),
                    }
                }
            }
        }
        Floor | Ceiling => match number(0)? {
            Num::Int(i) => V::Int(i),
            Num::Float(x) => V::Float(if f == Floor { x.floor() } else { x.ceil() }),
            Num::Dec(u, s) => {
                let factor = pow10(s)
                    .and_then(|p| i128::try_from(p).ok())
                    .ok_or(OVERFLOW)?;
                let mut q = u / factor;
                if u % factor != 0 && ((f == Floor) == (u < 0)) {
                    q += if f == Floor { -1 } else { 1 };
                }
                V::Dec(q, 0)
            }
        },
        Coalesce | Concat | Nullif => unreachable!("handled above"),
    })
}

// ---------------------------------------------------------------------------------------
// Parser

fn parse(text: &str, source: &TableSchema) -> std::result::Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        source,
    };
    let e = p.or()?;
    match p.tokens.get(p.pos) {
        None => Ok(e),
        Some(t) => Err(format!("unexpected {} after the expression", t.describe())),
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    source: &'a TableSchema,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let hit = self.peek().is_some_and(|t| t.is_word(word));
        self.pos += usize::from(hit);
        hit
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let hit = matches!(self.peek(), Some(Token::Op(o)) if *o == op);
        self.pos += usize::from(hit);
        hit
    }

    fn expect_op(&mut self, op: &str) -> std::result::Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(format!("expected {op:?}, found {}", self.found()))
        }
    }

    fn expect_word(&mut self, word: &str) -> std::result::Result<(), String> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(format!("expected {word}, found {}", self.found()))
        }
    }

    fn found(&self) -> String {
        self.peek()
            .map(Token::describe)
            .unwrap_or_else(|| "the end".into())
    }

    fn or(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_word("OR") {
            e = Expr::Bin(BinOp::Or, Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.not()?;
        while self.eat_word("AND") {
            e = Expr::Bin(BinOp::And, Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> std::result::Result<Expr, String> {
        if self.eat_word("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> std::result::Result<Expr, String> {
        let left = self.additive()?;
        if self.eat_word("IS") {
            let negated = self.eat_word("NOT");
            self.expect_word("NULL")?;
            return Ok(Expr::IsNull(Box::new(left), negated));
        }
        let op = match self.peek() {
            Some(Token::Op("=")) => BinOp::Eq,
            Some(Token::Op("<>" | "!=")) => BinOp::Ne,
            Some(Token::Op("<")) => BinOp::Lt,
            Some(Token::Op("<=" | "!>")) => BinOp::Le,
            Some(Token::Op(">")) => BinOp::Gt,
            Some(Token::Op(">=" | "!<")) => BinOp::Ge,
            _ => return Ok(left),
        };
        self.pos += 1;
        Ok(Expr::Bin(op, Box::new(left), Box::new(self.additive()?)))
    }

    fn additive(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.multiplicative()?;
        loop {
            let op = if self.eat_op("+") {
                BinOp::Add
            } else if self.eat_op("-") {
                BinOp::Sub
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> std::result::Result<Expr, String> {
        let mut e = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                BinOp::Mul
            } else if self.eat_op("/") {
                BinOp::Div
            } else if self.eat_op("%") {
                BinOp::Mod
            } else {
                return Ok(e);
            };
            e = Expr::Bin(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> std::result::Result<Expr, String> {
        if self.eat_op("-") {
            return Ok(match self.unary()? {
                Expr::Lit(V::Int(i)) => Expr::Lit(V::Int(-i)),
                Expr::Lit(V::Dec(u, s)) => Expr::Lit(V::Dec(-u, s)),
                e => Expr::Neg(Box::new(e)),
            });
        }
        if self.eat_op("+") {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> std::result::Result<Expr, String> {
        let Some(token) = self.peek().cloned() else {
            return Err("the expression ends too early".into());
        };
        self.pos += 1;
        match token {
            Token::Number(n) => number_literal(&n).map(Expr::Lit),
            Token::Str(s) => Ok(Expr::Lit(V::Text(s))),
            Token::Op("(") => {
                let e = self.or()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Token::Quoted(name) => self.column(&name),
            Token::Word(w) if w.eq_ignore_ascii_case("NULL") => Ok(Expr::Lit(V::Null)),
            Token::Word(w) if w.eq_ignore_ascii_case("CASE") => self.case(),
            Token::Word(w) if w.eq_ignore_ascii_case("CAST") => self.cast(),
            Token::Word(w) if w.eq_ignore_ascii_case("CONVERT") => self.convert(),
            Token::Word(w) if matches!(self.peek(), Some(Token::Op("("))) => self.call(&w),
            Token::Word(w) => self.column(&w),
            other => Err(format!("unexpected {}", other.describe())),
        }
    }

    fn column(&self, name: &str) -> std::result::Result<Expr, String> {
        self.source
            .columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
            .map(Expr::Col)
            .ok_or_else(|| format!("{name} is not a column of the source table"))
    }

    fn call(&mut self, name: &str) -> std::result::Result<Expr, String> {
        self.expect_op("(")?;
        let mut args = Vec::new();
        if !self.eat_op(")") {
            loop {
                args.push(self.or()?);
                if self.eat_op(")") {
                    break;
                }
                self.expect_op(",")?;
            }
        }
        if name.eq_ignore_ascii_case("IIF") {
            let [cond, then, otherwise]: [Expr; 3] = args
                .try_into()
                .map_err(|_| "IIF takes 3 arguments".to_string())?;
            return Ok(Expr::Case(vec![(cond, then)], Some(Box::new(otherwise))));
        }
        let Some((f, min, max)) = Func::by_name(name) else {
            return Err(format!(
                "function {name} is not supported in ETL expressions (supported: UPPER, LOWER, LTRIM, RTRIM, TRIM, LEN, LEFT, RIGHT, SUBSTRING, REPLACE, CONCAT, COALESCE, ISNULL, NULLIF, IIF, ABS, ROUND, FLOOR, CEILING, CAST, CONVERT)"
            ));
        };
        if args.len() < min || args.len() > max {
            return Err(format!(
                "{name} takes {min}{} arguments, got {}",
                if max == min {
                    String::new()
                } else if max == usize::MAX {
                    " or more".into()
                } else {
                    format!(" to {max}")
                },
                args.len()
            ));
        }
        Ok(Expr::Call(f, args))
    }

    fn cast(&mut self) -> std::result::Result<Expr, String> {
        self.expect_op("(")?;
        let e = self.or()?;
        self.expect_word("AS")?;
        let to = self.cast_type()?;
        self.expect_op(")")?;
        Ok(Expr::Cast(Box::new(e), to))
    }

    fn convert(&mut self) -> std::result::Result<Expr, String> {
        self.expect_op("(")?;
        let to = self.cast_type()?;
        self.expect_op(",")?;
        let e = self.or()?;
        if self.eat_op(",") {
            return Err("CONVERT with a style is not supported in ETL expressions".into());
        }
        self.expect_op(")")?;
        Ok(Expr::Cast(Box::new(e), to))
    }

    /// A type name with optional `(n)`, `(max)` or `(p, s)`.
    fn cast_type(&mut self) -> std::result::Result<CastTo, String> {
        let Some(Token::Word(name)) = self.peek().cloned() else {
            return Err(format!("expected a type name, found {}", self.found()));
        };
        self.pos += 1;
        let mut numbers = Vec::new();
        if self.eat_op("(") {
            loop {
                match self.peek().cloned() {
                    Some(Token::Number(n)) => numbers.push(
                        n.parse::<u32>()
                            .map_err(|_| format!("bad type argument {n}"))?,
                    ),
                    Some(Token::Word(w)) if w.eq_ignore_ascii_case("max") => {}
                    _ => return Err(format!("expected a type argument, found {}", self.found())),
                }
                self.pos += 1;
                if self.eat_op(")") {
                    break;
                }
                self.expect_op(",")?;
            }
        }
        Ok(match name.to_ascii_lowercase().as_str() {
            "varchar" | "nvarchar" | "char" | "nchar" | "text" | "ntext" => CastTo::Text,
            "tinyint" | "smallint" | "int" | "bigint" => CastTo::Int,
            "decimal" | "numeric" | "money" | "smallmoney" => {
                let scale = match name.to_ascii_lowercase().as_str() {
                    "money" | "smallmoney" => 4,
                    _ => numbers.get(1).copied().unwrap_or(0),
                };
                if scale > 38 {
                    return Err(format!("scale {scale} is over 38"));
                }
                CastTo::Decimal(scale)
            }
            "float" | "real" => CastTo::Float,
            "bit" => CastTo::Bit,
            other => {
                return Err(format!(
                    "CAST to {other} is not supported in ETL expressions (text, integer, decimal, float and bit types are)"
                ))
            }
        })
    }

    fn case(&mut self) -> std::result::Result<Expr, String> {
        let operand = if self.peek().is_some_and(|t| t.is_word("WHEN")) {
            None
        } else {
            Some(self.or()?)
        };
        let mut arms = Vec::new();
        while self.eat_word("WHEN") {
            let when = self.or()?;
            self.expect_word("THEN")?;
            let then = self.or()?;
            let cond = match &operand {
                Some(x) => Expr::Bin(BinOp::Eq, Box::new(x.clone()), Box::new(when)),
                None => when,
            };
            arms.push((cond, then));
        }
        if arms.is_empty() {
            return Err(format!("CASE needs WHEN, found {}", self.found()));
        }
        let otherwise = if self.eat_word("ELSE") {
            Some(Box::new(self.or()?))
        } else {
            None
        };
        self.expect_word("END")?;
        Ok(Expr::Case(arms, otherwise))
    }
}

fn number_literal(text: &str) -> std::result::Result<V, String> {
    if text.contains(['e', 'E']) {
        return text
            .parse()
            .map(V::Float)
            .map_err(|_| format!("bad number {text}"));
    }
    if !text.contains('.') {
        if let Ok(i) = text.parse() {
            return Ok(V::Int(i));
        }
    }
    parse_decimal(text)
        .map(|(u, s)| V::Dec(u, s))
        .ok_or_else(|| format!("bad number {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbsync_proto::v1::ColumnSchema;

    fn col(
        name: &str,
        type_name: &str,
        max_length: i32,
        precision: i32,
        scale: i32,
    ) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            type_name: type_name.into(),
            max_length,
            precision,
            scale,
            nullable: true,
            ..Default::default()
        }
    }

    fn table() -> TableSchema {
        TableSchema {
            columns: vec![
                col("Id", "int", 4, 10, 0),
                col("Name", "nvarchar", 200, 0, 0),
                col("Total", "decimal", 9, 12, 2),
                col("Qty", "int", 4, 10, 0),
                col("Ratio", "float", 8, 53, 0),
                col("Note", "varchar", 50, 0, 0),
            ],
            ..Default::default()
        }
    }

    fn text(s: &str) -> Value {
        Value {
            kind: Some(Kind::Text(s.into())),
        }
    }
    fn int(i: i64) -> Value {
        Value {
            kind: Some(Kind::Int(i)),
        }
    }
    fn dec(u: i128, s: u32) -> Value {
        Value {
            kind: Some(Kind::Decimal(decimal_from_parts(u, s))),
        }
    }
    fn null() -> Value {
        Value { kind: None }
    }

    fn row() -> Vec<Value> {
        vec![
            int(7),
            text("  Ada Lovelace "),
            dec(123_456, 2),
            int(3),
            Value {
                kind: Some(Kind::Float64(0.25)),
            },
            null(),
        ]
    }

    /// Evaluates `expr` for column `column` over `row()`.
    fn eval(column: usize, expr: &str) -> std::result::Result<Value, String> {
        let t = table();
        let etl = TableEtl::compile("db.dbo.t", &t, &[(column, expr)])
            .map_err(|e| e.to_string())?
            .unwrap();
        let values = row();
        let mut out = values.clone();
        etl.apply("t", &values, Some, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out[column].clone())
    }

    #[test]
    fn string_functions_follow_tsql() {
        assert_eq!(
            eval(1, "UPPER(LTRIM(RTRIM(Name)))").unwrap(),
            text("ADA LOVELACE")
        );
        assert_eq!(eval(1, "lower([Name])").unwrap(), text("  ada lovelace "));
        assert_eq!(eval(1, "TRIM(Name) + '!'").unwrap(), text("Ada Lovelace!"));
        assert_eq!(
            eval(1, "SUBSTRING(TRIM(Name), 5, 4)").unwrap(),
            text("Love")
        );
        assert_eq!(eval(1, "SUBSTRING('abc', 0, 2)").unwrap(), text("a"));
        assert_eq!(
            eval(1, "LEFT(TRIM(Name), 3) + RIGHT(TRIM(Name), 3)").unwrap(),
            text("Adaace")
        );
        assert_eq!(
            eval(1, "REPLACE(TRIM(Name), ' ', '_')").unwrap(),
            text("Ada_Lovelace")
        );
        assert_eq!(
            eval(1, "CONCAT(Id, '-', Note, '-', Total)").unwrap(),
            text("7--1234.56")
        );
        assert_eq!(eval(3, "LEN(Name)").unwrap(), int(14));
        // + propagates NULL, CONCAT does not.
        assert_eq!(eval(1, "Name + Note").unwrap(), null());
    }

    #[test]
    fn arithmetic_is_exact_and_converted_to_the_column_type() {
        // decimal(12,2) * int stays exact; the column keeps scale 2.
        assert_eq!(eval(2, "Total * Qty").unwrap(), dec(370_368, 2));
        assert_eq!(eval(2, "round(Total, 1)").unwrap(), dec(123_460, 2));
        assert_eq!(eval(2, "Total / 3").unwrap(), dec(41_152, 2));
        assert_eq!(eval(2, "-Total + 0.006").unwrap(), dec(-123_455, 2));
        assert_eq!(eval(2, "-Total - 0.005").unwrap(), dec(-123_457, 2));
        assert_eq!(eval(3, "Qty / 2").unwrap(), int(1));
        assert_eq!(
            eval(3, "Qty % 2 + FLOOR(-1.5) + CEILING(1.2)").unwrap(),
            int(1)
        );
        assert_eq!(eval(3, "Total").unwrap(), int(1235));
        assert_eq!(
            eval(4, "Ratio * 4").unwrap(),
            Value {
                kind: Some(Kind::Float64(1.0))
            }
        );
        assert_eq!(eval(1, "Total * 2").unwrap(), text("2469.12"));
        assert!(eval(3, "Qty / 0").unwrap_err().contains("division by zero"));
        assert!(eval(3, "Name * 2")
            .unwrap_err()
            .contains("arithmetic on text"));
    }

    #[test]
    fn casts_follow_tsql() {
        assert_eq!(
            eval(1, "'Total: ' + CAST(Total AS varchar(20))").unwrap(),
            text("Total: 1234.56")
        );
        assert_eq!(eval(3, "CAST(Total AS int)").unwrap(), int(1234));
        assert_eq!(eval(3, "CONVERT(int, '42') + 1").unwrap(), int(43));
        assert_eq!(
            eval(2, "CAST(Ratio AS decimal(10, 1)) * 10").unwrap(),
            dec(300, 2)
        );
        assert_eq!(
            eval(1, "CAST(CAST(Qty AS decimal(5,2)) AS nvarchar(max))").unwrap(),
            text("3.00")
        );
        assert_eq!(eval(3, "CAST(Note AS int)").unwrap(), null());
        assert!(eval(3, "CAST('x1' AS int)")
            .unwrap_err()
            .contains("not an integer"));
        assert!(eval(1, "CAST(Id AS date)")
            .unwrap_err()
            .contains("CAST to date is not supported"));
        assert!(eval(1, "CONVERT(varchar, Id, 112)")
            .unwrap_err()
            .contains("style"));
    }

    #[test]
    fn conditions_case_and_null_handling() {
        assert_eq!(
            eval(1, "CASE WHEN Qty > 2 THEN 'many' ELSE 'few' END").unwrap(),
            text("many")
        );
        assert_eq!(
            eval(1, "CASE Qty WHEN 1 THEN 'one' WHEN 3 THEN 'three' END").unwrap(),
            text("three")
        );
        assert_eq!(eval(1, "CASE WHEN Qty > 5 THEN 'x' END").unwrap(), null());
        assert_eq!(
            eval(1, "IIF(Note IS NULL AND NOT Qty = 4, 'none', Note)").unwrap(),
            text("none")
        );
        assert_eq!(
            eval(5, "COALESCE(Note, ISNULL(NULL, 'dflt'))").unwrap(),
            text("dflt")
        );
        assert_eq!(eval(3, "NULLIF(Qty, 3)").unwrap(), null());
        // Trailing blanks do not count in comparisons, as in SQL Server.
        assert_eq!(eval(1, "IIF('a  ' = 'a', 'eq', 'ne')").unwrap(), text("eq"));
        // NULL in a condition is not true.
        assert_eq!(
            eval(1, "IIF(Note = 'x' OR Qty = 3, 'y', 'n')").unwrap(),
            text("y")
        );
        assert_eq!(
            eval(1, "IIF(Note = 'x' AND Qty = 3, 'y', 'n')").unwrap(),
            text("n")
        );
    }

    #[test]
    fn bad_expressions_name_the_column_and_the_problem() {
        let err = eval(1, "upper(Missing)").unwrap_err();
        assert!(
            err.contains("db.dbo.t.Name") && err.contains("Missing is not a column"),
            "{err}"
        );
        let err = eval(1, "soundex(Name)").unwrap_err();
        assert!(err.contains("soundex is not supported"), "{err}");
        assert!(eval(1, "upper(Name").unwrap_err().contains("found the end"));
        assert!(eval(1, "LEFT(Name)")
            .unwrap_err()
            .contains("LEFT takes 2 arguments"));
    }

    #[test]
    fn unknown_inputs_leave_the_column_unwritten() {
        let t = table();
        let etl = TableEtl::compile("db.dbo.t", &t, &[(1, "upper(Note)"), (3, "Qty * 2")])
            .unwrap()
            .unwrap();
        let mut values = row();
        values[5] = Value {
            kind: Some(Kind::Unchanged(true)),
        };
        let mut out = values.clone();
        etl.apply("t", &values, Some, &mut out).unwrap();
        assert_eq!(
            out[1],
            Value {
                kind: Some(Kind::Unchanged(true))
            }
        );
        assert_eq!(out[3], int(6));
        // Rows without expressions are borrowed, not copied.
        assert!(TableEtl::compile("db.dbo.t", &t, &[]).unwrap().is_none());
    }
}
