//! T-SQL expressions (defaults, computed columns, CHECKs, filtered-index predicates) →
//! PostgreSQL (type-mapping reference §2.20–§2.23).
//!
//! A small parser covers literals (`'..'`, `N'..'`, numbers, `0x..`), `[bracketed]` and
//! quoted names, `NULL`, arithmetic, comparison (`=`, `<>`, `!=`, `!<`, `!>`, …), `AND`/`OR`/
//! `NOT`, `IS [NOT] NULL`, `[NOT] IN`, `[NOT] BETWEEN`, `[NOT] LIKE` (without `[...]` classes),
//! `CASE`, `IIF`, `CAST`, `CONVERT` (without style) and the functions in the table below.
//! Redundant parentheses such as `((0))` disappear; every compound operand in the output is
//! parenthesised, so precedence differences between the dialects cannot change the meaning.
//! `+` becomes `||` when either side is text; when the operand types cannot be told apart the
//! expression is refused. Anything outside this list is [`Untranslatable`](crate::Untranslatable):
//! the caller reports it rather than guessing.
//!
//! | T-SQL | PostgreSQL |
//! |---|---|
//! | `getdate()`, `sysdatetime()`, `CURRENT_TIMESTAMP` | `LOCALTIMESTAMP` (`now()` on timestamptz targets) |
//! | `getutcdate()`, `sysutcdatetime()` | `(now() AT TIME ZONE 'UTC')` (`now()` on timestamptz) |
//! | `sysdatetimeoffset()` | `now()` |
//! | `newid()`, `newsequentialid()` | `gen_random_uuid()` |
//! | `suser_sname()`, `SYSTEM_USER` / `user_name()`, `CURRENT_USER` | `SESSION_USER` / `CURRENT_USER` |
//! | `db_name()`, `app_name()` | `current_database()`, `current_setting('application_name')` |
//! | `(0)`/`(1)` default on bit, `bitcol = 1` | `false`/`true`, `bitcol = true` |
//! | `N'x'`, `'x'`, `0x0A` | `'x'`, `'x'`, `E'\\x0a'::bytea` |
//! | `[Name]`, `"Name"` | the target column name (policy-cased, quoted when needed) |
//! | `ISNULL(a,b)`, `COALESCE`, `NULLIF`, `IIF(c,a,b)` | `COALESCE(a, b)`, same, same, `CASE WHEN … END` |
//! | `LEN(x)` | `length(rtrim(x))` (LEN ignores trailing blanks) |
//! | `UPPER`, `LOWER`, `LTRIM`, `RTRIM`, `TRIM`, `LEFT`, `RIGHT`, `SUBSTRING`, `REPLACE`, `REVERSE`, `CONCAT` | same (`TRIM` → `btrim`) |
//! | `CHARINDEX(a,b)`, `REPLICATE(x,n)`, `SPACE(n)` | `strpos(b, a)`, `repeat(x, n)`, `repeat(' ', n)` |
//! | `ABS`, `CEILING`, `FLOOR`, `ROUND(x,n)`, `POWER`, `SQRT`, `SQUARE`, `SIGN`, `EXP`, `LOG10` | same (`ceil`, `power(x, 2)`) |
//! | `YEAR`/`MONTH`/`DAY(d)`, `DATEPART(part, d)` | `CAST(date_part('part', d) AS integer)` |
//! | `DATEADD(part, n, d)`, `DATEDIFF(day, a, b)` | `d + (n) * interval '1 part'`, `CAST(b AS date) - CAST(a AS date)` |
//! | `CAST(x AS t)`, `CONVERT(t, x)` | `CAST(x AS <mapped t>)` |
//! | `+` on text, `^`, `!=`, `!<`, `!>` | `\|\|`, `#`, `<>`, `>=`, `<=` |
//!
//! Known semantic differences that remain: PostgreSQL drops `char(n)` padding when
//! concatenating (SQL Server keeps it), and LIKE/`=` on case-insensitive source collations are
//! case-sensitive unless the column gets a nondeterministic collation ([`crate::pg_collation`]);
//! LIKE stays case-sensitive even then (it is translated as `x COLLATE "default" LIKE p`,
//! because PostgreSQL before 18 refuses LIKE on nondeterministic collations).

use dbsync_proto::v1::ColumnSchema;

use crate::ident::{pg_identifier, quote_ident, Capitalization};
use crate::literal::quote_literal;
use crate::mapping::{map_column, map_type_text, MappingOptions, PgColumnType, PgKind};
use crate::TypemapError;

/// Where the expression will be used; decides which functions are acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExprUsage {
    #[default]
    Default,
    /// `GENERATED ALWAYS AS (…) STORED`: immutable functions only.
    Computed,
    Check,
    /// Partial-index `WHERE`: immutable functions only.
    IndexPredicate,
}

/// A column the expression may reference.
#[derive(Debug, Clone)]
pub struct ExprColumn {
    pub source_name: String,
    pub target_name: String,
    pub kind: PgKind,
}

/// What the translator needs to know about the surroundings.
#[derive(Debug, Clone, Default)]
pub struct ExprContext {
    pub usage: ExprUsage,
    /// The column a default or computed expression belongs to (bit defaults become booleans,
    /// current-time functions follow timestamp vs timestamptz).
    pub target: Option<PgKind>,
    /// The table's columns. When empty, any name is accepted and renamed by `capitalization`.
    pub columns: Vec<ExprColumn>,
    pub capitalization: Capitalization,
    /// Used to map types in `CAST`/`CONVERT`.
    pub mapping: MappingOptions,
}

impl ExprContext {
    /// Context for a table's expressions: every column mapped with `mapping` and named by
    /// `capitalization` (columns whose type cannot be mapped are still referable, as text-less
    /// unknowns).
    pub fn for_table(
        usage: ExprUsage,
        columns: &[ColumnSchema],
        capitalization: Capitalization,
        mapping: &MappingOptions,
    ) -> ExprContext {
        ExprContext::for_columns(
            usage,
            columns
                .iter()
                .map(|c| (c, pg_identifier(&c.name, capitalization))),
            capitalization,
            mapping,
        )
    }

    /// Context over the given (source column, target name) pairs: each column mapped with
    /// `mapping` (columns whose type cannot be mapped are still referable, as text-less
    /// unknowns).
    pub fn for_columns<'c>(
        usage: ExprUsage,
        columns: impl IntoIterator<Item = (&'c ColumnSchema, String)>,
        capitalization: Capitalization,
        mapping: &MappingOptions,
    ) -> ExprContext {
        let columns = columns
            .into_iter()
            .map(|(c, target_name)| ExprColumn {
                source_name: c.name.clone(),
                target_name,
                kind: map_column(c, mapping)
                    .map(|t| t.kind)
                    .unwrap_or(PgKind::Bytea),
            })
            .collect();
        ExprContext {
            usage,
            target: None,
            columns,
            capitalization,
            mapping: mapping.clone(),
        }
    }

    /// The same context for the default or computed expression of `target`.
    pub fn with_target(mut self, usage: ExprUsage, target: &PgColumnType) -> ExprContext {
        self.usage = usage;
        self.target = Some(target.kind);
        self
    }
}

/// Translates one T-SQL expression (as stored in sys.default_constraints, sys.computed_columns,
/// sys.check_constraints or sys.indexes.filter_definition) to PostgreSQL.
pub fn translate_expression(tsql: &str, ctx: &ExprContext) -> Result<String, TypemapError> {
    let fail = |reason: String| TypemapError::Untranslatable {
        expression: tsql.to_string(),
        reason,
    };
    let tokens = tokenize(tsql).map_err(fail)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        ctx,
    };
    let out = parser.expression().map_err(fail)?;
    if parser.pos != parser.tokens.len() {
        return Err(fail(format!(
            "unexpected {} after the expression",
            parser.tokens[parser.pos].describe()
        )));
    }
    // bit defaults: (0) / (1) → false / true.
    if ctx.target == Some(PgKind::Bool) {
        if let Some(number) = out.literal_number.as_deref() {
            return Ok(if number
                .trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                "false"
            } else {
                "true"
            }
            .to_string());
        }
    }
    Ok(out.sql)
}

/// A T-SQL token (shared with apply's ETL evaluator, so both read one expression language).
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Number(String),
    Str(String),
    Binary(String),
    Word(String),
    Quoted(String),
    Op(&'static str),
}

impl Token {
    pub fn describe(&self) -> String {
        match self {
            Token::Number(n) => format!("number {n}"),
            Token::Str(s) => format!("string '{s}'"),
            Token::Binary(b) => format!("0x{b}"),
            Token::Word(w) => format!("{w:?}"),
            Token::Quoted(q) => format!("[{q}]"),
            Token::Op(o) => format!("{o:?}"),
        }
    }

    pub fn is_word(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(word))
    }
}

const OPERATORS: &[&str] = &[
    "<>", "!=", "!<", "!>", "<=", ">=", "(", ")", ",", "+", "-", "*", "/", "%", "=", "<", ">", "&",
    "|", "^", "~", ".",
];

/// Splits a T-SQL expression into tokens: literals, names, `[quoted]` names, operators.
pub fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || ((c == 'N' || c == 'n') && chars.get(i + 1) == Some(&'\'')) {
            i += if c == '\'' { 1 } else { 2 };
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Str(s));
        } else if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
            let start = i + 2;
            i = start;
            while i < chars.len() && chars[i].is_ascii_hexdigit() {
                i += 1;
            }
            tokens.push(Token::Binary(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .to_ascii_lowercase(),
            ));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            tokens.push(Token::Number(chars[start..i].iter().collect()));
        } else if c == '[' || c == '"' {
            let close = if c == '[' { ']' } else { '"' };
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err("unterminated quoted name".into()),
                    Some(&ch) if ch == close && chars.get(i + 1) == Some(&close) => {
                        s.push(close);
                        i += 2;
                    }
                    Some(&ch) if ch == close => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Quoted(s));
        } else if c.is_alphabetic() || c == '_' || c == '@' || c == '#' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '@' | '#' | '$'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with('@') {
                return Err(format!("variable {word} is not allowed here"));
            }
            tokens.push(Token::Word(word));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(op) = OPERATORS.iter().find(|op| rest.starts_with(*op)) else {
                return Err(format!("unexpected character {c:?}"));
            };
            tokens.push(Token::Op(op));
            i += op.chars().count();
        }
    }
    Ok(tokens)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Text,
    Number,
    Bool,
    /// A bit column: compared with 0/1 in T-SQL, boolean in PostgreSQL.
    BitColumn,
    Temporal,
    Uuid,
    Binary,
    Null,
    Unknown,
}

impl Ty {
    fn of(kind: PgKind) -> Ty {
        match kind {
            PgKind::Bool => Ty::BitColumn,
            PgKind::SmallInt
            | PgKind::Integer
            | PgKind::BigInt
            | PgKind::Real
            | PgKind::Double
            | PgKind::Numeric { .. } => Ty::Number,
            PgKind::Date
            | PgKind::Time { .. }
            | PgKind::Timestamp { .. }
            | PgKind::Timestamptz { .. } => Ty::Temporal,
            PgKind::Uuid => Ty::Uuid,
            PgKind::Bytea | PgKind::Geometry | PgKind::Geography => Ty::Binary,
            PgKind::Char { .. }
            | PgKind::Varchar { .. }
            | PgKind::Text
            | PgKind::Xml
            | PgKind::Jsonb => Ty::Text,
        }
    }
}

struct Out {
    sql: String,
    ty: Ty,
    /// Needs no parentheses as an operand.
    atomic: bool,
    /// Set for numeric literals (bit defaults and bit comparisons).
    literal_number: Option<String>,
}

impl Out {
    fn atom(sql: impl Into<String>, ty: Ty) -> Out {
        Out {
            sql: sql.into(),
            ty,
            atomic: true,
            literal_number: None,
        }
    }

    fn compound(sql: String, ty: Ty) -> Out {
        Out {
            sql,
            ty,
            atomic: false,
            literal_number: None,
        }
    }

    fn operand(&self) -> String {
        if self.atomic {
            self.sql.clone()
        } else {
            format!("({})", self.sql)
        }
    }
}

type Parsed = Result<Out, String>;

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    ctx: &'a ExprContext,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_word(&self, word: &str) -> bool {
        self.peek().is_some_and(|t| t.is_word(word))
    }

    fn peek_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Token::Op(o)) if *o == op)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = self.peek_word(word);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let found = self.peek_op(op);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_op(&mut self, op: &str) -> Result<(), String> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(format!(
                "expected {op:?}, found {}",
                self.peek().map_or("the end".into(), Token::describe)
            ))
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<(), String> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(format!(
                "expected {word}, found {}",
                self.peek().map_or("the end".into(), Token::describe)
            ))
        }
    }

    fn expression(&mut self) -> Parsed {
        let mut left = self.and_expr()?;
        while self.eat_word("OR") {
            let right = self.and_expr()?;
            left = Out::compound(
                format!("{} OR {}", left.operand(), right.operand()),
                Ty::Bool,
            );
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Parsed {
        let mut left = self.not_expr()?;
        while self.eat_word("AND") {
            let right = self.not_expr()?;
            left = Out::compound(
                format!("{} AND {}", left.operand(), right.operand()),
                Ty::Bool,
            );
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Parsed {
        if self.eat_word("NOT") {
            let inner = self.not_expr()?;
            return Ok(Out::compound(format!("NOT {}", inner.operand()), Ty::Bool));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Parsed {
        let left = self.additive()?;
        if let Some(Token::Op(op)) = self.peek() {
            let pg_op = match *op {
                "=" => Some("="),
                "<>" | "!=" => Some("<>"),
                "<" => Some("<"),
                ">" => Some(">"),
                "<=" | "!>" => Some("<="),
                ">=" | "!<" => Some(">="),
                _ => None,
            };
            if let Some(pg_op) = pg_op {
                self.pos += 1;
                let right = self.additive()?;
                let (l, r) = bit_comparison_operands(left, right);
                return Ok(Out::compound(
                    format!("{} {pg_op} {}", l.operand(), r.operand()),
                    Ty::Bool,
                ));
            }
        }
        if self.eat_word("IS") {
            let not = if self.eat_word("NOT") { " NOT" } else { "" };
            self.expect_word("NULL")?;
            return Ok(Out::compound(
                format!("{} IS{not} NULL", left.operand()),
                Ty::Bool,
            ));
        }
        let negated = self.peek_word("NOT")
            && self
                .tokens
                .get(self.pos + 1)
                .is_some_and(|t| t.is_word("IN") || t.is_word("BETWEEN") || t.is_word("LIKE"));
        if negated {
            self.pos += 1;
        }
        let not = if negated { "NOT " } else { "" };
        if self.eat_word("IN") {
            self.expect_op("(")?;
            let mut items = Vec::new();
            loop {
                let item = self.additive()?;
                let (_, item) = bit_comparison_operands(Out::atom(String::new(), left.ty), item);
                items.push(item.operand());
                if !self.eat_op(",") {
                    break;
                }
            }
            self.expect_op(")")?;
            return Ok(Out::compound(
                format!("{} {not}IN ({})", left.operand(), items.join(", ")),
                Ty::Bool,
            ));
        }
        if self.eat_word("BETWEEN") {
            let low = self.additive()?;
            self.expect_word("AND")?;
            let high = self.additive()?;
            return Ok(Out::compound(
                format!(
                    "{} {not}BETWEEN {} AND {}",
                    left.operand(),
                    low.operand(),
                    high.operand()
                ),
                Ty::Bool,
            ));
        }
        if self.eat_word("LIKE") {
            let pattern = self.additive()?;
            if pattern.ty != Ty::Text || !pattern.atomic || !pattern.sql.starts_with(['\'', 'E']) {
                return Err("LIKE needs a literal pattern".into());
            }
            if pattern.sql.contains('[') {
                return Err(
                    "LIKE patterns with [...] character classes have no PostgreSQL LIKE equivalent"
                        .into(),
                );
            }
            if self.peek_word("ESCAPE") {
                return Err("LIKE ... ESCAPE is not supported".into());
            }
            // Before PostgreSQL 18, LIKE raises an error on a nondeterministic collation (the
            // ICU collations of case-insensitive columns): match under the default collation.
            let collate = if left.ty == Ty::Text {
                " COLLATE \"default\""
            } else {
                ""
            };
            return Ok(Out::compound(
                format!("{}{collate} {not}LIKE {}", left.operand(), pattern.sql),
                Ty::Bool,
            ));
        }
        if negated {
            return Err("NOT must be followed by IN, BETWEEN or LIKE here".into());
        }
        Ok(left)
    }

    fn additive(&mut self) -> Parsed {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Some(Token::Op(op @ ("+" | "-" | "&" | "|" | "^"))) => *op,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.multiplicative()?;
            let (pg_op, ty) = match op {
                "+" => match (left.ty, right.ty) {
                    (Ty::Text, _) | (_, Ty::Text) => ("||", Ty::Text),
                    (Ty::Number, Ty::Number) => ("+", Ty::Number),
                    (Ty::Null, other) | (other, Ty::Null) if other != Ty::Unknown => (if other == Ty::Text { "||" } else { "+" }, other),
                    (Ty::Temporal, _) | (_, Ty::Temporal) => return Err("date arithmetic with + has different semantics in PostgreSQL; use DATEADD".into()),
                    _ => return Err("cannot tell whether + adds numbers or concatenates strings here".into()),
                },
                "-" if left.ty == Ty::Temporal || right.ty == Ty::Temporal => {
                    return Err("date arithmetic with - has different semantics in PostgreSQL; use DATEADD/DATEDIFF".into())
                }
                "-" => ("-", Ty::Number),
                "&" => ("&", Ty::Number),
                "|" => ("|", Ty::Number),
                _ => ("#", Ty::Number), // ^ is XOR in T-SQL, # in PostgreSQL
            };
            left = Out::compound(
                format!("{} {pg_op} {}", left.operand(), right.operand()),
                ty,
            );
        }
    }

    fn multiplicative(&mut self) -> Parsed {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Some(Token::Op(op @ ("*" | "/" | "%"))) => *op,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.unary()?;
            left = Out::compound(
                format!("{} {op} {}", left.operand(), right.operand()),
                Ty::Number,
            );
        }
    }

    fn unary(&mut self) -> Parsed {
        if self.eat_op("-") {
            let inner = self.unary()?;
            if let Some(number) = &inner.literal_number {
                let negative = format!("-{number}");
                return Ok(Out {
                    sql: negative.clone(),
                    ty: Ty::Number,
                    atomic: false,
                    literal_number: Some(negative),
                });
            }
            return Ok(Out::compound(format!("- {}", inner.operand()), Ty::Number));
        }
        if self.eat_op("+") {
            return self.unary();
        }
        if self.eat_op("~") {
            let inner = self.unary()?;
            return Ok(Out::compound(format!("~ {}", inner.operand()), Ty::Number));
        }
        self.primary()
    }

    fn primary(&mut self) -> Parsed {
        let Some(token) = self.peek().cloned() else {
            return Err("unexpected end of expression".into());
        };
        self.pos += 1;
        match token {
            Token::Number(n) => Ok(Out {
                sql: n.clone(),
                ty: Ty::Number,
                atomic: true,
                literal_number: Some(n),
            }),
            Token::Str(s) => Ok(Out::atom(quote_literal(&s), Ty::Text)),
            Token::Binary(hex) => Ok(Out::atom(
                format!("{}::bytea", quote_literal(&format!("\\x{hex}"))),
                Ty::Binary,
            )),
            Token::Op("(") => {
                let inner = self.expression()?;
                self.expect_op(")")?;
                Ok(inner)
            }
            Token::Op(op) => Err(format!("unexpected {op:?}")),
            Token::Quoted(name) => self.name_or_call(name, true),
            Token::Word(word) => self.word(word),
        }
    }

    fn word(&mut self, word: String) -> Parsed {
        let upper = word.to_ascii_uppercase();
        match upper.as_str() {
            "NULL" => Ok(Out::atom("NULL", Ty::Null)),
            "CASE" => self.case(),
            "CAST" | "TRY_CAST" if self.peek_op("(") => {
                if upper == "TRY_CAST" {
                    return Err("TRY_CAST has no PostgreSQL equivalent".into());
                }
                self.expect_op("(")?;
                let value = self.expression()?;
                self.expect_word("AS")?;
                let type_text = self.type_text()?;
                self.expect_op(")")?;
                self.cast(value, &type_text)
            }
            "CONVERT" if self.peek_op("(") => {
                self.expect_op("(")?;
                let type_text = self.type_text_until_comma()?;
                self.expect_op(",")?;
                let value = self.expression()?;
                if self.eat_op(",") {
                    return Err("CONVERT with a style has no exact PostgreSQL equivalent".into());
                }
                self.expect_op(")")?;
                self.cast(value, &type_text)
            }
            "CURRENT_TIMESTAMP" => self.current_time(false),
            "CURRENT_USER" | "USER" | "SESSION_USER" => Ok(Out::atom("CURRENT_USER", Ty::Text)),
            "SYSTEM_USER" => Ok(Out::atom("SESSION_USER", Ty::Text)),
            "AND" | "OR" | "NOT" | "IS" | "IN" | "BETWEEN" | "LIKE" | "WHEN" | "THEN" | "ELSE"
            | "END" | "AS" => Err(format!("unexpected keyword {word}")),
            _ => self.name_or_call(word, false),
        }
    }

    fn name_or_call(&mut self, name: String, quoted: bool) -> Parsed {
        if self.eat_op(".") {
            // schema.function(...) or table.column
            let Some(next) = self.peek().cloned() else {
                return Err("name expected after '.'".into());
            };
            self.pos += 1;
            let second = match next {
                Token::Word(w) | Token::Quoted(w) => w,
                other => {
                    return Err(format!(
                        "name expected after '.', found {}",
                        other.describe()
                    ))
                }
            };
            if self.peek_op("(") {
                return Err(format!("user-defined function {name}.{second} has no PostgreSQL translation; create it in PostgreSQL and adjust the expression by hand"));
            }
            return self.column(&second);
        }
        if !quoted && self.peek_op("(") {
            self.pos += 1;
            let mut args = Vec::new();
            if !self.eat_op(")") {
                loop {
                    args.push(self.function_argument(&name, args.len())?);
                    if !self.eat_op(",") {
                        break;
                    }
                }
                self.expect_op(")")?;
            }
            return self.translate_function(&name, args);
        }
        self.column(&name)
    }

    /// DATEADD/DATEPART/DATEDIFF take a bare date-part word as first argument.
    fn function_argument(&mut self, function: &str, index: usize) -> Parsed {
        let takes_part = matches!(
            function.to_ascii_lowercase().as_str(),
            "dateadd" | "datepart" | "datediff" | "datename"
        );
        if takes_part && index == 0 {
            if let Some(Token::Word(part)) = self.peek().cloned() {
                self.pos += 1;
                return Ok(Out::atom(part.to_ascii_lowercase(), Ty::Unknown));
            }
        }
        self.expression()
    }

    fn column(&self, name: &str) -> Parsed {
        if self.ctx.columns.is_empty() {
            return Ok(Out::atom(
                quote_ident(&pg_identifier(name, self.ctx.capitalization)),
                Ty::Unknown,
            ));
        }
        let column = self
            .ctx
            .columns
            .iter()
            .find(|c| c.source_name.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown column {name}"))?;
        Ok(Out::atom(
            quote_ident(&column.target_name),
            Ty::of(column.kind),
        ))
    }

    fn case(&mut self) -> Parsed {
        let mut sql = String::from("CASE");
        if !self.peek_word("WHEN") {
            let operand = self.expression()?;
            sql.push(' ');
            sql.push_str(&operand.operand());
        }
        let mut ty = Ty::Unknown;
        while self.eat_word("WHEN") {
            let condition = self.expression()?;
            self.expect_word("THEN")?;
            let result = self.expression()?;
            if ty == Ty::Unknown || ty == Ty::Null {
                ty = result.ty;
            }
            // WHEN/THEN/ELSE delimit their operands: no parentheses needed.
            sql.push_str(&format!(" WHEN {} THEN {}", condition.sql, result.sql));
        }
        if self.eat_word("ELSE") {
            let result = self.expression()?;
            sql.push_str(&format!(" ELSE {}", result.sql));
        }
        self.expect_word("END")?;
        sql.push_str(" END");
        Ok(Out::atom(sql, ty))
    }

    /// Collects a type name such as `decimal(10, 2)` or `nvarchar(max)` up to the closing
    /// parenthesis of CAST.
    fn type_text(&mut self) -> Result<String, String> {
        let mut text = String::new();
        let mut depth = 0;
        while let Some(token) = self.peek() {
            match token {
                Token::Op(")") if depth == 0 => break,
                Token::Op("(") => depth += 1,
                Token::Op(")") => depth -= 1,
                _ => {}
            }
            text.push_str(&match token {
                Token::Word(w) | Token::Number(w) => w.clone(),
                Token::Quoted(q) => q.clone(),
                Token::Op(o) => o.to_string(),
                other => return Err(format!("unexpected {} in a type name", other.describe())),
            });
            self.pos += 1;
        }
        Ok(text)
    }

    fn type_text_until_comma(&mut self) -> Result<String, String> {
        let mut text = String::new();
        let mut depth = 0;
        while let Some(token) = self.peek() {
            match token {
                Token::Op(",") if depth == 0 => break,
                Token::Op("(") => depth += 1,
                Token::Op(")") => depth -= 1,
                _ => {}
            }
            text.push_str(&match token {
                Token::Word(w) | Token::Number(w) => w.clone(),
                Token::Quoted(q) => q.clone(),
                Token::Op(o) => o.to_string(),
                other => return Err(format!("unexpected {} in a type name", other.describe())),
            });
            self.pos += 1;
        }
        Ok(text)
    }

    fn cast(&self, value: Out, type_text: &str) -> Parsed {
        let kind = map_type_text(type_text, &self.ctx.mapping)?;
        Ok(Out::atom(
            format!("CAST({} AS {})", value.sql, kind.ddl()),
            match Ty::of(kind) {
                Ty::BitColumn => Ty::Bool,
                other => other,
            },
        ))
    }

    fn volatile(&self, function: &str) -> Result<(), String> {
        match self.ctx.usage {
            ExprUsage::Computed | ExprUsage::IndexPredicate => Err(format!(
                "{function}() is not immutable, and PostgreSQL allows only immutable functions in generated columns and index predicates"
            )),
            ExprUsage::Default | ExprUsage::Check => Ok(()),
        }
    }

    fn current_time(&self, utc: bool) -> Parsed {
        self.volatile("current time")?;
        let sql = match (self.ctx.target, utc) {
            (Some(PgKind::Timestamptz { .. }), _) => "now()",
            (_, true) => "(now() AT TIME ZONE 'UTC')",
            (_, false) => "LOCALTIMESTAMP",
        };
        Ok(Out::atom(sql, Ty::Temporal))
    }

    fn translate_function(&self, name: &str, args: Vec<Out>) -> Parsed {
        translate_function(self, name, args)
    }
}

/// `bitcol = 1` → `bitcol = true`.
fn bit_comparison_operands(left: Out, right: Out) -> (Out, Out) {
    let as_bool = |literal: &Out| {
        literal.literal_number.as_deref().map(|n| {
            if n.trim_start_matches('-')
                .chars()
                .all(|c| c == '0' || c == '.')
            {
                "false"
            } else {
                "true"
            }
        })
    };
    match (left.ty, right.ty) {
        (Ty::BitColumn, _) if as_bool(&right).is_some() => {
            let b = as_bool(&right).unwrap_or("false");
            (left, Out::atom(b, Ty::Bool))
        }
        (_, Ty::BitColumn) if as_bool(&left).is_some() => {
            let b = as_bool(&left).unwrap_or("false");
            (Out::atom(b, Ty::Bool), right)
        }
        _ => (left, right),
    }
}

/// The supported T-SQL functions and their PostgreSQL forms.
fn translate_function(parser: &Parser, name: &str, args: Vec<Out>) -> Parsed {
    let lower = name.to_ascii_lowercase();
    let arity = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{name} takes {n} argument(s), got {}", args.len()))
        }
    };
    let call = |pg: &str, ty: Ty| {
        Out::atom(
            format!(
                "{pg}({})",
                args.iter()
                    .map(|a| a.sql.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ty,
        )
    };
    let first_ty = args.first().map_or(Ty::Unknown, |a| a.ty);
    let date_part = |part: &str| -> Result<&'static str, String> {
        Ok(match part {
            "year" | "yy" | "yyyy" => "year",
            "quarter" | "qq" | "q" => "quarter",
            "month" | "mm" | "m" => "month",
            "dayofyear" | "dy" | "y" => "doy",
            "day" | "dd" | "d" => "day",
            "week" | "wk" | "ww" => "week",
            "hour" | "hh" => "hour",
            "minute" | "mi" | "n" => "minute",
            "second" | "ss" | "s" => "second",
            "millisecond" | "ms" => "millisecond",
            "microsecond" | "mcs" => "microsecond",
            other => {
                return Err(format!(
                    "date part {other} has no exact PostgreSQL equivalent"
                ))
            }
        })
    };
    match lower.as_str() {
        "getdate" | "sysdatetime" => {
            arity(0)?;
            parser.current_time(false)
        }
        "getutcdate" | "sysutcdatetime" => {
            arity(0)?;
            parser.current_time(true)
        }
        "sysdatetimeoffset" => {
            arity(0)?;
            parser.volatile(name)?;
            Ok(Out::atom("now()", Ty::Temporal))
        }
        "newid" | "newsequentialid" => {
            arity(0)?;
            parser.volatile(name)?;
            Ok(Out::atom("gen_random_uuid()", Ty::Uuid))
        }
        "suser_sname" | "suser_name" => {
            arity(0)?;
            parser.volatile(name)?;
            Ok(Out::atom("SESSION_USER", Ty::Text))
        }
        "user_name" => {
            arity(0)?;
            parser.volatile(name)?;
            Ok(Out::atom("CURRENT_USER", Ty::Text))
        }
        "db_name" => {
            arity(0)?;
            parser.volatile(name)?;
            Ok(Out::atom("current_database()", Ty::Text))
        }
        "app_name" => {
            arity(0)?;
            parser.volatile(name)?;
            Ok(Out::atom("current_setting('application_name')", Ty::Text))
        }
        "isnull" => {
            arity(2)?;
            Ok(call("COALESCE", first_ty))
        }
        "coalesce" => Ok(call("COALESCE", first_ty)),
        "nullif" => {
            arity(2)?;
            Ok(call("NULLIF", first_ty))
        }
        "iif" => {
            arity(3)?;
            Ok(Out::atom(
                format!(
                    "CASE WHEN {} THEN {} ELSE {} END",
                    args[0].sql, args[1].sql, args[2].sql
                ),
                args[1].ty,
            ))
        }
        // T-SQL LEN ignores trailing blanks.
        "len" => {
            arity(1)?;
            Ok(Out::atom(
                format!("length(rtrim({}))", args[0].sql),
                Ty::Number,
            ))
        }
        "upper" | "lower" | "reverse" => {
            arity(1)?;
            Ok(call(&lower, Ty::Text))
        }
        "ltrim" | "rtrim" => Ok(call(&lower, Ty::Text)),
        "trim" => {
            arity(1)?;
            Ok(call("btrim", Ty::Text))
        }
        "substring" => {
            arity(3)?;
            Ok(call("substring", Ty::Text))
        }
        "left" | "right" => {
            arity(2)?;
            Ok(call(&lower, Ty::Text))
        }
        "replace" => {
            arity(3)?;
            Ok(call("replace", Ty::Text))
        }
        "replicate" => {
            arity(2)?;
            Ok(call("repeat", Ty::Text))
        }
        "space" => {
            arity(1)?;
            Ok(Out::atom(format!("repeat(' ', {})", args[0].sql), Ty::Text))
        }
        "charindex" => {
            arity(2)?;
            Ok(Out::atom(
                format!("strpos({}, {})", args[1].sql, args[0].sql),
                Ty::Number,
            ))
        }
        "concat" => Ok(call("concat", Ty::Text)),
        "abs" | "floor" | "sign" | "sqrt" | "power" | "exp" | "log10" => {
            Ok(call(&lower, Ty::Number))
        }
        "ceiling" => {
            arity(1)?;
            Ok(call("ceil", Ty::Number))
        }
        "round" => {
            arity(2)?;
            Ok(call("round", Ty::Number))
        }
        "square" => {
            arity(1)?;
            Ok(Out::atom(format!("power({}, 2)", args[0].sql), Ty::Number))
        }
        "year" | "month" | "day" => {
            arity(1)?;
            Ok(Out::atom(
                format!("CAST(date_part('{lower}', {}) AS integer)", args[0].sql),
                Ty::Number,
            ))
        }
        "datepart" => {
            arity(2)?;
            let part = date_part(&args[0].sql)?;
            let sql =
                match part {
                    "second" => format!(
                        "CAST(floor(date_part('second', {})) AS integer)",
                        args[1].sql
                    ),
                    "millisecond" => format!(
                        "CAST(floor(date_part('milliseconds', {})) AS integer) % 1000",
                        args[1].sql
                    ),
                    "microsecond" => format!(
                        "CAST(date_part('microseconds', {}) AS integer) % 1000000",
                        args[1].sql
                    ),
                    "week" => return Err(
                        "DATEPART(week) depends on SET DATEFIRST; no exact PostgreSQL equivalent"
                            .into(),
                    ),
                    other => format!("CAST(date_part('{other}', {}) AS integer)", args[1].sql),
                };
            Ok(Out::compound(sql, Ty::Number))
        }
        "dateadd" => {
            arity(3)?;
            let part = date_part(&args[0].sql)?;
            let unit = match part {
                "doy" => "day",
                "week" => "week",
                "quarter" => {
                    return Ok(Out::compound(
                        format!(
                            "{} + ({}) * interval '3 months'",
                            args[2].operand(),
                            args[1].sql
                        ),
                        Ty::Temporal,
                    ))
                }
                other => other,
            };
            Ok(Out::compound(
                format!(
                    "{} + ({}) * interval '1 {unit}'",
                    args[2].operand(),
                    args[1].sql
                ),
                Ty::Temporal,
            ))
        }
        "datediff" => {
            arity(3)?;
            if date_part(&args[0].sql)? != "day" {
                return Err(
                    "DATEDIFF counts boundary crossings; only DATEDIFF(day, …) is translated"
                        .into(),
                );
            }
            Ok(Out::compound(
                format!(
                    "CAST({} AS date) - CAST({} AS date)",
                    args[2].sql, args[1].sql
                ),
                Ty::Number,
            ))
        }
        _ => Err(format!(
            "function {name} has no known PostgreSQL equivalent"
        )),
    }
}
