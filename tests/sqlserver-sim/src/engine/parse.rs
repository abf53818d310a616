//! Batch parsing. One sqlparser `Parser` (MsSqlDialect) walks the whole batch; statements
//! that sqlparser handles well (queries, INSERT/UPDATE/DELETE, expressions) are delegated to
//! it, and the T-SQL statements it rejects or gets wrong (CREATE TABLE with CLUSTERED,
//! CREATE INDEX variants, ALTER TABLE … ALTER COLUMN / multi-column ADD, ALTER DATABASE,
//! sequences, alias types, triggers, procedures, SAVE TRAN, BACKUP, INSERT BULK, control
//! flow, SET options, EXEC) are parsed here from the same token stream.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use sqlparser::ast;
use sqlparser::dialect::MsSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Word};

use super::value::err;
use crate::api::SqlError;
use crate::types::Value;

mod fast;

/// A multi-part object name (1–4 parts), unquoted.
pub type ObjName = Vec<String>;

#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    /// Type text (`decimal(18,2)`), or None for a computed column.
    pub type_text: Option<String>,
    pub nullable: Option<bool>,
    pub identity: Option<(String, String)>,
    pub default: Option<(Option<String>, ast::Expr)>,
    pub computed: Option<(ast::Expr, bool)>,
    pub rowguidcol: bool,
    pub constraints: Vec<ConstraintSpec>,
}

#[derive(Debug, Clone)]
pub enum ConstraintKind {
    PrimaryKey {
        clustered: Option<bool>,
        columns: Vec<(String, bool)>,
    },
    Unique {
        clustered: Option<bool>,
        columns: Vec<(String, bool)>,
    },
    ForeignKey {
        columns: Vec<String>,
        ref_table: ObjName,
        ref_columns: Vec<String>,
        on_delete: String,
        on_update: String,
    },
    Check(ast::Expr),
    Default {
        column: String,
        expr: ast::Expr,
    },
}

#[derive(Debug, Clone)]
pub struct ConstraintSpec {
    pub name: Option<String>,
    pub kind: ConstraintKind,
}

#[derive(Debug, Clone)]
pub enum AlterAction {
    AddColumns(Vec<ColumnSpec>),
    AddConstraints(Vec<ConstraintSpec>),
    DropColumns(Vec<String>, bool),
    DropConstraints(Vec<String>, bool),
    AlterColumn {
        name: String,
        type_text: String,
        nullable: Option<bool>,
    },
    /// NOCHECK/CHECK CONSTRAINT, ENABLE/DISABLE TRIGGER, SET (…): accepted, no effect.
    NoOp,
}

#[derive(Debug, Clone)]
pub struct IndexSpec {
    pub name: String,
    pub table: ObjName,
    pub unique: bool,
    pub clustered: bool,
    pub columns: Vec<(String, bool)>,
    pub include: Vec<String>,
    pub filter: Option<ast::Expr>,
}

#[derive(Debug, Clone)]
pub struct ExecArg {
    pub name: Option<String>,
    pub value: ast::Expr,
    pub output: bool,
}

/// `INSERT INTO table [(columns)] VALUES …` whose values are all constants, read by the fast
/// path (`parse/fast.rs`) without sqlparser.
#[derive(Debug, Clone)]
pub struct InsertValues {
    pub table: ObjName,
    /// Empty: the table's insertable columns.
    pub columns: Vec<String>,
    /// One entry per VALUES row; None = DEFAULT.
    pub rows: Vec<Vec<Option<Value>>>,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    /// A statement sqlparser parsed (SELECT, INSERT, UPDATE, DELETE, MERGE …).
    Std(Box<ast::Statement>),
    InsertValues(Box<InsertValues>),
    Block(Vec<Parsed>),
    TryCatch(Vec<Parsed>, Vec<Parsed>),
    If {
        cond: ast::Expr,
        then: Box<Parsed>,
        els: Option<Box<Parsed>>,
    },
    While {
        cond: ast::Expr,
        body: Box<Parsed>,
    },
    Break,
    Continue,
    Return(Option<ast::Expr>),
    Declare(Vec<(String, String, Option<ast::Expr>)>),
    SetVar {
        name: String,
        op: Option<char>,
        value: ast::Expr,
    },
    SetOption {
        name: String,
        value: String,
    },
    SetIdentityInsert {
        table: ObjName,
        on: bool,
    },
    SetIsolation(String),
    BeginTran,
    CommitTran,
    RollbackTran {
        savepoint: Option<String>,
    },
    SaveTran(String),
    Print(ast::Expr),
    RaisError {
        message: ast::Expr,
        severity: ast::Expr,
        state: ast::Expr,
        args: Vec<ast::Expr>,
    },
    Throw(Option<(ast::Expr, ast::Expr, ast::Expr)>),
    Exec {
        ret: Option<String>,
        name: ObjName,
        args: Vec<ExecArg>,
    },
    ExecDynamic(ast::Expr),
    Use(String),
    CreateDatabase(String),
    DropDatabase {
        names: Vec<String>,
        if_exists: bool,
    },
    AlterDatabase {
        name: String,
        option: String,
        value: String,
    },
    CreateSchema {
        name: String,
    },
    CreateTable {
        name: ObjName,
        columns: Vec<ColumnSpec>,
        constraints: Vec<ConstraintSpec>,
    },
    AlterTable {
        table: ObjName,
        action: AlterAction,
    },
    CreateIndex(IndexSpec),
    DropIndex {
        index: String,
        table: ObjName,
        if_exists: bool,
    },
    Drop {
        kind: String,
        names: Vec<ObjName>,
        if_exists: bool,
    },
    Truncate(ObjName),
    CreateSequence {
        name: ObjName,
        type_text: Option<String>,
        start: Option<i128>,
        increment: Option<i128>,
        min: Option<i128>,
        max: Option<i128>,
        cycle: bool,
        cache: Option<i64>,
    },
    CreateType {
        name: ObjName,
        base: String,
        nullable: bool,
    },
    CreateTrigger {
        name: ObjName,
        events: Vec<String>,
        body: String,
    },
    CreateProcedure {
        name: ObjName,
        params: Vec<(String, String, Option<ast::Expr>, bool)>,
        body: String,
    },
    /// CREATE [OR ALTER] VIEW name [(columns)] [WITH …] AS select.
    CreateView {
        name: ObjName,
        columns: Vec<String>,
        query: String,
        definition: String,
        check_option: bool,
        mode: ViewMode,
    },
    Backup {
        database: String,
        log: bool,
    },
    /// INSERT BULK: the column list is taken from the BulkLoad COLMETADATA instead.
    InsertBulk {
        table: ObjName,
        #[allow(dead_code)]
        columns: Vec<(String, String)>,
    },
    WaitFor(ast::Expr),
    /// Statements accepted and ignored (CHECKPOINT, GO, DBCC TRACEON …).
    NoOp,
}

#[derive(Debug, Clone)]
pub struct Parsed {
    pub stmt: Stmt,
    /// The statement's source text.
    pub text: String,
    pub line: u32,
}

fn perr(e: ParserError, sql: &str) -> SqlError {
    let msg = e.to_string();
    // "… found: X at Line: …" → Incorrect syntax near 'X'.
    let near = msg
        .split("found: ")
        .nth(1)
        .map(|s| {
            s.split(" at Line")
                .next()
                .unwrap_or(s)
                .trim()
                .trim_matches('\'')
                .to_string()
        })
        .unwrap_or_else(|| sql.split_whitespace().next().unwrap_or("").to_string());
    if near == "EOF" {
        return err(
            102,
            "Incorrect syntax near the end of the batch.".to_string(),
        );
    }
    err(102, format!("Incorrect syntax near '{near}'."))
}

/// Texts longer than this are not cached (multi-row INSERTs rarely repeat).
const CACHED_TEXT_MAX: usize = 16 * 1024;
const CACHE_ENTRIES_MAX: usize = 512;

/// Batch text → its parsed statements.
type ParsedByText = HashMap<Box<str>, Arc<[Parsed]>>;

/// Recently parsed batch texts (parsing depends on the text alone).
static PARSED_CACHE: LazyLock<Mutex<ParsedByText>> = LazyLock::new(Default::default);

/// Parses a batch, reusing the statements of a recent identical text: clients send the same
/// sp_executesql text with new parameter values, and the same batches over and over.
pub fn parse_batch_cached(sql: &str) -> Result<Arc<[Parsed]>, SqlError> {
    if sql.len() > CACHED_TEXT_MAX {
        return parse_batch(sql).map(Arc::from);
    }
    if let Some(hit) = PARSED_CACHE.lock().get(sql) {
        return Ok(hit.clone());
    }
    let parsed: Arc<[Parsed]> = parse_batch(sql)?.into();
    let mut cache = PARSED_CACHE.lock();
    if cache.len() >= CACHE_ENTRIES_MAX {
        cache.clear();
    }
    cache.insert(sql.into(), parsed.clone());
    Ok(parsed)
}

/// CREATE VIEW, CREATE OR ALTER VIEW or ALTER VIEW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    Create,
    CreateOrAlter,
    Alter,
}

/// Parses a batch into statements.
pub fn parse_batch(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let (mut stmts, rest, line) = fast::simple_prefix(sql);
    if rest == sql.len() {
        return Ok(stmts);
    }
    if stmts.is_empty() {
        return parse_general(sql);
    }
    let mut tail = parse_general(&sql[rest..])?;
    for p in &mut tail {
        shift_lines(p, line - 1);
    }
    stmts.extend(tail);
    Ok(stmts)
}

/// Moves a statement parsed from the rest of a batch to its line in the whole batch.
fn shift_lines(p: &mut Parsed, by: u32) {
    p.line += by;
    match &mut p.stmt {
        Stmt::Block(list) => list.iter_mut().for_each(|p| shift_lines(p, by)),
        Stmt::TryCatch(try_, catch) => try_
            .iter_mut()
            .chain(catch.iter_mut())
            .for_each(|p| shift_lines(p, by)),
        Stmt::If { then, els, .. } => {
            shift_lines(then, by);
            if let Some(e) = els {
                shift_lines(e, by);
            }
        }
        Stmt::While { body, .. } => shift_lines(body, by),
        _ => {}
    }
}

/// Parses a batch with sqlparser and the T-SQL statement parsers here.
fn parse_general(sql: &str) -> Result<Vec<Parsed>, SqlError> {
    let dialect = MsSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| err(102, format!("Incorrect syntax: {e}.")))?;
    let tokens = rewrite_tokens(tokens);
    let mut line_starts = vec![0usize];
    for (i, c) in sql.char_indices() {
        if c == '\n' {
            line_starts.push(i + 1);
        }
    }
    let mut bp = BatchParser {
        p: Parser::new(&dialect).with_tokens_with_locations(tokens),
        sql,
        line_starts,
    };
    let mut out = Vec::new();
    loop {
        while bp.p.consume_token(&Token::SemiColon) {}
        if bp.p.peek_token().token == Token::EOF {
            break;
        }
        out.push(bp.statement()?);
    }
    Ok(out)
}

/// Parses one expression (DEFAULT/CHECK/computed definitions stored as text).
pub fn parse_expr_text(text: &str) -> Result<ast::Expr, SqlError> {
    let dialect = MsSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| err(102, format!("Incorrect syntax: {e}.")))?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(rewrite_tokens(tokens));
    p.parse_expr().map_err(|e| perr(e, text))
}

/// `NEXT VALUE FOR seq` → `__next_value_for('seq')` (sqlparser does not know it).
fn rewrite_tokens(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let is_word = |t: &TokenWithSpan, w: &str| matches!(&t.token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if is_word(&tokens[i], "NEXT") {
            // NEXT ws VALUE ws FOR ws name(.name)*
            let sig: Vec<usize> = (i + 1..tokens.len())
                .filter(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
                .take(2)
                .collect();
            if sig.len() == 2
                && is_word(&tokens[sig[0]], "VALUE")
                && is_word(&tokens[sig[1]], "FOR")
            {
                let mut j = sig[1] + 1;
                while j < tokens.len() && matches!(tokens[j].token, Token::Whitespace(_)) {
                    j += 1;
                }
                let mut name = Vec::new();
                while j < tokens.len() {
                    match &tokens[j].token {
                        Token::Word(w) => {
                            name.push(w.value.clone());
                            j += 1;
                            if j < tokens.len() && tokens[j].token == Token::Period {
                                j += 1;
                                continue;
                            }
                            break;
                        }
                        _ => break,
                    }
                }
                let span = tokens[i].span;
                let mk = |t: Token| TokenWithSpan { token: t, span };
                out.push(mk(Token::Word(Word {
                    value: "__next_value_for".into(),
                    quote_style: None,
                    keyword: Keyword::NoKeyword,
                })));
                out.push(mk(Token::LParen));
                out.push(mk(Token::SingleQuotedString(name.join("."))));
                out.push(mk(Token::RParen));
                i = j;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

struct BatchParser<'a> {
    p: Parser<'a>,
    sql: &'a str,
    line_starts: Vec<usize>,
}

fn word_upper(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_uppercase()),
        _ => None,
    }
}

impl<'a> BatchParser<'a> {
    fn offset(&self, loc: Location) -> usize {
        if loc.line == 0 {
            return self.sql.len();
        }
        let start = self
            .line_starts
            .get(loc.line as usize - 1)
            .copied()
            .unwrap_or(self.sql.len());
        let line = &self.sql[start..];
        line.char_indices()
            .nth(loc.column as usize - 1)
            .map(|(i, _)| start + i)
            .unwrap_or(self.sql.len())
    }

    fn peek_word(&self, n: usize) -> Option<String> {
        word_upper(&self.p.peek_nth_token(n).token)
    }

    fn is_word(&self, n: usize, w: &str) -> bool {
        self.peek_word(n).as_deref() == Some(w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(0, w) {
            self.p.next_token();
            true
        } else {
            false
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<(), SqlError> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    fn syntax_error(&self) -> SqlError {
        let t = self.p.peek_token();
        if t.token == Token::EOF {
            err(102, "Incorrect syntax near the end of the batch.")
        } else {
            err(
                102,
                format!("Incorrect syntax near '{}'.", token_text(&t.token)),
            )
        }
    }

    fn ident(&mut self) -> Result<String, SqlError> {
        match self.p.next_token().token {
            Token::Word(w) => Ok(w.value),
            Token::SingleQuotedString(s) | Token::NationalStringLiteral(s) => Ok(s),
            _ => {
                self.p.prev_token();
                Err(self.syntax_error())
            }
        }
    }

    fn object_name(&mut self) -> Result<ObjName, SqlError> {
        let mut parts = vec![self.ident()?];
        while self.p.consume_token(&Token::Period) {
            if self.p.peek_token().token == Token::Period {
                parts.push("dbo".into());
                continue;
            }
            parts.push(self.ident()?);
        }
        Ok(parts)
    }

    fn expr(&mut self) -> Result<ast::Expr, SqlError> {
        self.p.parse_expr().map_err(|e| perr(e, self.sql))
    }

    fn expect(&mut self, t: Token) -> Result<(), SqlError> {
        if self.p.consume_token(&t) {
            Ok(())
        } else {
            Err(self.syntax_error())
        }
    }

    /// Collects the text of tokens up to (not including) the matching close paren at depth 0
    /// or a comma at depth 0.
    fn type_text(&mut self) -> Result<String, SqlError> {
        let mut name = self.object_name()?.join(".");
        // Multi-word types.
        if (name.eq_ignore_ascii_case("national")
            || name.eq_ignore_ascii_case("character")
            || name.eq_ignore_ascii_case("double"))
            && matches!(self.p.peek_token().token, Token::Word(_))
        {
            let w = self.ident()?;
            name = format!("{name} {w}");
            if self.is_word(0, "VARYING") {
                self.p.next_token();
                name.push_str(" varying");
            }
        }
        if self.p.consume_token(&Token::LParen) {
            let mut args = Vec::new();
            loop {
                match self.p.next_token().token {
                    Token::RParen => break,
                    Token::Comma => args.push(",".to_string()),
                    Token::EOF => return Err(self.syntax_error()),
                    t => args.push(token_text(&t)),
                }
            }
            name = format!("{}({})", name, args.join(""));
        }
        Ok(name)
    }

    fn statement(&mut self) -> Result<Parsed, SqlError> {
        let start_tok = self.p.peek_token();
        let start = self.offset(start_tok.span.start);
        let line = start_tok.span.start.line as u32;
        let stmt = self.statement_inner()?;
        let end = {
            let idx = self.p.index();
            // The last consumed non-whitespace token's end.
            let mut i = idx;
            let mut end = start;
            while i > 0 {
                i -= 1;
                let t = self.p.token_at(i);
                if !matches!(t.token, Token::Whitespace(_)) {
                    end = self.offset(Location {
                        line: t.span.end.line,
                        column: t.span.end.column.saturating_sub(1).max(1),
                    });
                    end = (end
                        + self.sql[end..]
                            .chars()
                            .next()
                            .map(|c| c.len_utf8())
                            .unwrap_or(0))
                    .min(self.sql.len());
                    break;
                }
            }
            end.max(start)
        };
        let text = self.sql.get(start..end).unwrap_or("").trim().to_string();
        Ok(Parsed { stmt, text, line })
    }

    fn body_text_to_end(&mut self) -> String {
        let start = self.offset(self.p.peek_token().span.start);
        while self.p.next_token().token != Token::EOF {}
        self.sql[start.min(self.sql.len())..].trim().to_string()
    }

    fn statement_inner(&mut self) -> Result<Stmt, SqlError> {
        let w0 = self.peek_word(0).unwrap_or_default();
        let w1 = self.peek_word(1).unwrap_or_default();
        match w0.as_str() {
            "BEGIN" if matches!(w1.as_str(), "TRAN" | "TRANSACTION" | "DISTRIBUTED") => {
                self.p.next_token();
                if w1 == "DISTRIBUTED" {
                    self.p.next_token();
                }
                self.p.next_token();
                self.optional_tran_name();
                Ok(Stmt::BeginTran)
            }
            "BEGIN" if w1 == "TRY" => {
                self.p.next_token();
                self.p.next_token();
                let try_ = self.block_until(&["END"])?;
                self.expect_word("END")?;
                self.expect_word("TRY")?;
                while self.p.consume_token(&Token::SemiColon) {}
                self.expect_word("BEGIN")?;
                self.expect_word("CATCH")?;
                let catch = self.block_until(&["END"])?;
                self.expect_word("END")?;
                self.expect_word("CATCH")?;
                Ok(Stmt::TryCatch(try_, catch))
            }
            "BEGIN" => {
                self.p.next_token();
                let body = self.block_until(&["END"])?;
                self.expect_word("END")?;
                Ok(Stmt::Block(body))
            }
            "COMMIT" => {
                self.p.next_token();
                if self.eat_word("TRAN") || self.eat_word("TRANSACTION") || self.eat_word("WORK") {
                    self.optional_tran_name();
                }
                Ok(Stmt::CommitTran)
            }
            "ROLLBACK" => {
                self.p.next_token();
                let mut savepoint = None;
                if self.eat_word("TRAN") || self.eat_word("TRANSACTION") || self.eat_word("WORK") {
                    savepoint = self.optional_tran_name();
                }
                Ok(Stmt::RollbackTran { savepoint })
            }
            "SAVE" => {
                self.p.next_token();
                if !(self.eat_word("TRAN") || self.eat_word("TRANSACTION")) {
                    return Err(self.syntax_error());
                }
                Ok(Stmt::SaveTran(
                    self.optional_tran_name().unwrap_or_default(),
                ))
            }
            "IF" => {
                self.p.next_token();
                let cond = self.expr()?;
                let then = Box::new(self.statement()?);
                while self.p.consume_token(&Token::SemiColon) {}
                let els = if self.eat_word("ELSE") {
                    Some(Box::new(self.statement()?))
                } else {
                    None
                };
                Ok(Stmt::If { cond, then, els })
            }
            "WHILE" => {
                self.p.next_token();
                let cond = self.expr()?;
                let body = Box::new(self.statement()?);
                Ok(Stmt::While { cond, body })
            }
            "BREAK" => {
                self.p.next_token();
                Ok(Stmt::Break)
            }
            "CONTINUE" => {
                self.p.next_token();
                Ok(Stmt::Continue)
            }
            "RETURN" => {
                self.p.next_token();
                let t = self.p.peek_token().token;
                let has_expr = !matches!(t, Token::EOF | Token::SemiColon)
                    && !matches!(
                        word_upper(&t).as_deref(),
                        Some(
                            "END"
                                | "ELSE"
                                | "SELECT"
                                | "INSERT"
                                | "UPDATE"
                                | "DELETE"
                                | "IF"
                                | "BEGIN"
                                | "SET"
                                | "DECLARE"
                                | "EXEC"
                                | "EXECUTE"
                                | "PRINT"
                                | "RETURN"
                        )
                    );
                Ok(Stmt::Return(if has_expr {
                    Some(self.expr()?)
                } else {
                    None
                }))
            }
            "DECLARE" => {
                self.p.next_token();
                let mut vars = Vec::new();
                loop {
                    let name = self.ident()?;
                    if !name.starts_with('@') {
                        return Err(unsupported_stmt("DECLARE of cursors or tables"));
                    }
                    self.eat_word("AS");
                    if self.is_word(0, "TABLE") {
                        return Err(unsupported_stmt("table variables"));
                    }
                    let ty = self.type_text()?;
                    let init = if self.p.consume_token(&Token::Eq) {
                        Some(self.expr()?)
                    } else {
                        None
                    };
                    vars.push((name, ty, init));
                    if !self.p.consume_token(&Token::Comma) {
                        break;
                    }
                }
                Ok(Stmt::Declare(vars))
            }
            "SET" => self.set_statement(),
            "PRINT" => {
                self.p.next_token();
                Ok(Stmt::Print(self.expr()?))
            }
            "RAISERROR" => {
                self.p.next_token();
                self.expect(Token::LParen)?;
                let message = self.expr()?;
                self.expect(Token::Comma)?;
                let severity = self.expr()?;
                self.expect(Token::Comma)?;
                let state = self.expr()?;
                let mut args = Vec::new();
                while self.p.consume_token(&Token::Comma) {
                    args.push(self.expr()?);
                }
                self.expect(Token::RParen)?;
                if self.eat_word("WITH") {
                    loop {
                        self.ident()?;
                        if !self.p.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                }
                Ok(Stmt::RaisError {
                    message,
                    severity,
                    state,
                    args,
                })
            }
            "THROW" => {
                self.p.next_token();
                let t = self.p.peek_token().token;
                if matches!(t, Token::EOF | Token::SemiColon)
                    || word_upper(&t).as_deref() == Some("END")
                {
                    return Ok(Stmt::Throw(None));
                }
                let a = self.expr()?;
                self.expect(Token::Comma)?;
                let b = self.expr()?;
                self.expect(Token::Comma)?;
                let c = self.expr()?;
                Ok(Stmt::Throw(Some((a, b, c))))
            }
            "EXEC" | "EXECUTE" => self.exec_statement(),
            "USE" => {
                self.p.next_token();
                Ok(Stmt::Use(self.ident()?))
            }
            "GO" | "CHECKPOINT" => {
                self.p.next_token();
                Ok(Stmt::NoOp)
            }
            "DBCC" => Err(unsupported_stmt("DBCC")),
            "WAITFOR" => {
                self.p.next_token();
                self.eat_word("DELAY");
                Ok(Stmt::WaitFor(self.expr()?))
            }
            "BACKUP" => {
                self.p.next_token();
                let log = if self.eat_word("LOG") {
                    true
                } else {
                    self.expect_word("DATABASE")?;
                    false
                };
                let database = self.ident()?;
                // TO DISK = '…' [WITH …]: skip to the end of the statement.
                self.skip_to_statement_end();
                Ok(Stmt::Backup { database, log })
            }
            "TRUNCATE" => {
                self.p.next_token();
                self.expect_word("TABLE")?;
                Ok(Stmt::Truncate(self.object_name()?))
            }
            "CREATE" => self.create_statement(),
            "ALTER" if w1 == "TABLE" => self.alter_table(),
            "ALTER" if w1 == "VIEW" => {
                self.p.next_token();
                self.create_view(ViewMode::Alter)
            }
            "ALTER" if w1 == "DATABASE" => {
                self.p.next_token();
                self.p.next_token();
                let name = if self.eat_word("CURRENT") {
                    String::new()
                } else {
                    self.ident()?
                };
                if !self.eat_word("SET") {
                    return Err(unsupported_stmt("this ALTER DATABASE form"));
                }
                let option = self.ident()?.to_uppercase();
                let _ = self.p.consume_token(&Token::Eq);
                let value = self.ident_or_keyword()?.to_uppercase();
                let _ = self.eat_word("WITH") && {
                    self.skip_to_statement_end();
                    true
                };
                Ok(Stmt::AlterDatabase {
                    name,
                    option,
                    value,
                })
            }
            "DROP" => self.drop_statement(),
            "INSERT" if w1 == "BULK" => {
                self.p.next_token();
                self.p.next_token();
                let table = self.object_name()?;
                let mut columns = Vec::new();
                if self.p.consume_token(&Token::LParen) {
                    loop {
                        let c = self.ident()?;
                        let t = self.type_text()?;
                        // COLLATE x
                        if self.eat_word("COLLATE") {
                            self.ident()?;
                        }
                        columns.push((c, t));
                        if !self.p.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    self.expect(Token::RParen)?;
                }
                if self.eat_word("WITH") {
                    self.skip_to_statement_end();
                }
                Ok(Stmt::InsertBulk { table, columns })
            }
            "UPDATE" | "DELETE"
                if self.p.peek_nth_token(1).token != Token::EOF && self.is_word(1, "TOP") =>
            {
                Err(unsupported_stmt("UPDATE TOP / DELETE TOP"))
            }
            _ => {
                let s = self.p.parse_statement().map_err(|e| perr(e, self.sql))?;
                Ok(Stmt::Std(Box::new(s)))
            }
        }
    }

    fn skip_to_statement_end(&mut self) {
        let mut depth = 0i32;
        loop {
            let t = self.p.peek_token().token;
            match t {
                Token::EOF => break,
                Token::SemiColon if depth == 0 => break,
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                if let Some(w) = word_upper(&t) {
                    if matches!(
                        w.as_str(),
                        "SELECT"
                            | "INSERT"
                            | "UPDATE"
                            | "DELETE"
                            | "EXEC"
                            | "EXECUTE"
                            | "BACKUP"
                            | "IF"
                            | "BEGIN"
                            | "END"
                            | "DECLARE"
                            | "CREATE"
                            | "ALTER"
                            | "DROP"
                            | "USE"
                    ) {
                        break;
                    }
                }
            }
            self.p.next_token();
        }
    }

    fn ident_or_keyword(&mut self) -> Result<String, SqlError> {
        match self.p.next_token().token {
            Token::Word(w) => Ok(w.value),
            Token::Number(n, _) => Ok(n),
            Token::SingleQuotedString(s) | Token::NationalStringLiteral(s) => Ok(s),
            _ => Err(self.syntax_error()),
        }
    }

    fn optional_tran_name(&mut self) -> Option<String> {
        match self.p.peek_token().token {
            Token::Word(w)
                if !matches!(
                    w.value.to_uppercase().as_str(),
                    "SELECT"
                        | "INSERT"
                        | "UPDATE"
                        | "DELETE"
                        | "END"
                        | "COMMIT"
                        | "ROLLBACK"
                        | "SET"
                        | "IF"
                        | "EXEC"
                        | "EXECUTE"
                        | "DECLARE"
                        | "PRINT"
                        | "WITH"
                        | "BEGIN"
                        | "CREATE"
                        | "ALTER"
                        | "DROP"
                        | "TRUNCATE"
                        | "SAVE"
                        | "RETURN"
                        | "ELSE"
                        | "MERGE"
                        | "WHILE"
                        | "RAISERROR"
                        | "THROW"
                        | "USE"
                ) =>
            {
                self.p.next_token();
                if self.eat_word("WITH") {
                    // WITH MARK ['desc']
                    self.eat_word("MARK");
                    if matches!(
                        self.p.peek_token().token,
                        Token::SingleQuotedString(_) | Token::NationalStringLiteral(_)
                    ) {
                        self.p.next_token();
                    }
                }
                Some(w.value)
            }
            _ => None,
        }
    }

    fn block_until(&mut self, enders: &[&str]) -> Result<Vec<Parsed>, SqlError> {
        let mut body = Vec::new();
        loop {
            while self.p.consume_token(&Token::SemiColon) {}
            let w = self.peek_word(0);
            if let Some(w) = &w {
                if enders.contains(&w.as_str()) {
                    // END TRY/END CATCH or END of block.
                    break;
                }
            }
            if self.p.peek_token().token == Token::EOF {
                return Err(err(102, "Incorrect syntax near the end of the batch."));
            }
            body.push(self.statement()?);
        }
        Ok(body)
    }

    fn set_statement(&mut self) -> Result<Stmt, SqlError> {
        self.p.next_token();
        let t = self.p.peek_token().token;
        if let Token::Word(w) = &t {
            if w.value.starts_with('@') && !w.value.starts_with("@@") {
                self.p.next_token();
                let op = match self.p.next_token().token {
                    Token::Eq => None,
                    t @ (Token::Plus | Token::Minus | Token::Mul | Token::Div) => {
                        self.expect(Token::Eq)?;
                        Some(match t {
                            Token::Plus => '+',
                            Token::Minus => '-',
                            Token::Mul => '*',
                            _ => '/',
                        })
                    }
                    _ => return Err(self.syntax_error()),
                };
                let value = self.expr()?;
                return Ok(Stmt::SetVar {
                    name: w.value.clone(),
                    op,
                    value,
                });
            }
        }
        let name = self.ident()?.to_uppercase();
        match name.as_str() {
            "TRANSACTION" => {
                self.expect_word("ISOLATION")?;
                self.expect_word("LEVEL")?;
                let mut level = self.ident()?.to_uppercase();
                if matches!(level.as_str(), "READ" | "REPEATABLE") {
                    level = format!("{} {}", level, self.ident()?.to_uppercase());
                }
                Ok(Stmt::SetIsolation(level))
            }
            "IDENTITY_INSERT" => {
                let table = self.object_name()?;
                let v = self.ident()?.to_uppercase();
                Ok(Stmt::SetIdentityInsert {
                    table,
                    on: v == "ON",
                })
            }
            _ => {
                // SET a, b, c ON | SET X value
                let mut names = vec![name];
                while self.p.consume_token(&Token::Comma) {
                    names.push(self.ident()?.to_uppercase());
                }
                let value = match self.p.next_token().token {
                    Token::Word(w) => w.value.to_uppercase(),
                    Token::Number(n, _) => n,
                    Token::Minus => match self.p.next_token().token {
                        Token::Number(n, _) => format!("-{n}"),
                        _ => return Err(self.syntax_error()),
                    },
                    Token::SingleQuotedString(s) | Token::NationalStringLiteral(s) => s,
                    _ => return Err(self.syntax_error()),
                };
                if names.len() == 1 {
                    Ok(Stmt::SetOption {
                        name: names.remove(0),
                        value,
                    })
                } else {
                    Ok(Stmt::Block(
                        names
                            .into_iter()
                            .map(|n| Parsed {
                                stmt: Stmt::SetOption {
                                    name: n,
                                    value: value.clone(),
                                },
                                text: String::new(),
                                line: 0,
                            })
                            .collect(),
                    ))
                }
            }
        }
    }

    fn exec_statement(&mut self) -> Result<Stmt, SqlError> {
        self.p.next_token();
        if self.p.consume_token(&Token::LParen) {
            let e = self.expr()?;
            self.expect(Token::RParen)?;
            return Ok(Stmt::ExecDynamic(e));
        }
        let mut ret = None;
        if let Token::Word(w) = self.p.peek_token().token {
            if w.value.starts_with('@') && self.p.peek_nth_token(1).token == Token::Eq {
                self.p.next_token();
                self.p.next_token();
                ret = Some(w.value);
            }
        }
        let name = self.object_name()?;
        let mut args = Vec::new();
        let t = self.p.peek_token().token;
        let ends = |t: &Token| {
            matches!(t, Token::EOF | Token::SemiColon)
                || matches!(
                    word_upper(t).as_deref(),
                    Some(
                        "SELECT"
                            | "INSERT"
                            | "UPDATE"
                            | "DELETE"
                            | "END"
                            | "EXEC"
                            | "EXECUTE"
                            | "IF"
                            | "ELSE"
                            | "SET"
                            | "DECLARE"
                            | "PRINT"
                            | "COMMIT"
                            | "ROLLBACK"
                            | "BEGIN"
                            | "RETURN"
                            | "WITH"
                            | "CREATE"
                            | "DROP"
                            | "ALTER"
                            | "USE"
                    )
                )
        };
        if !ends(&t) {
            loop {
                let mut arg_name = None;
                if let Token::Word(w) = self.p.peek_token().token {
                    if w.value.starts_with('@') && self.p.peek_nth_token(1).token == Token::Eq {
                        self.p.next_token();
                        self.p.next_token();
                        arg_name = Some(w.value.trim_start_matches('@').to_lowercase());
                    }
                }
                let value = if self.is_word(0, "DEFAULT") {
                    self.p.next_token();
                    ast::Expr::Identifier(ast::Ident::new("DEFAULT"))
                } else {
                    self.expr()?
                };
                let output = self.eat_word("OUTPUT") || self.eat_word("OUT");
                args.push(ExecArg {
                    name: arg_name,
                    value,
                    output,
                });
                if !self.p.consume_token(&Token::Comma) {
                    break;
                }
            }
        }
        Ok(Stmt::Exec { ret, name, args })
    }

    fn drop_statement(&mut self) -> Result<Stmt, SqlError> {
        self.p.next_token();
        let kind = self.ident()?.to_uppercase();
        let kind = match kind.as_str() {
            "PROC" => "PROCEDURE".to_string(),
            _ => kind,
        };
        let if_exists = if self.is_word(0, "IF") && self.is_word(1, "EXISTS") {
            self.p.next_token();
            self.p.next_token();
            true
        } else {
            false
        };
        if kind == "DATABASE" {
            let mut names = vec![self.ident()?];
            while self.p.consume_token(&Token::Comma) {
                names.push(self.ident()?);
            }
            return Ok(Stmt::DropDatabase { names, if_exists });
        }
        if kind == "INDEX" {
            let first = self.object_name()?;
            if self.eat_word("ON") {
                let table = self.object_name()?;
                return Ok(Stmt::DropIndex {
                    index: first.last().cloned().unwrap_or_default(),
                    table,
                    if_exists,
                });
            }
            // DROP INDEX table.index
            let mut table = first.clone();
            let index = table.pop().unwrap_or_default();
            return Ok(Stmt::DropIndex {
                index,
                table,
                if_exists,
            });
        }
        let mut names = vec![self.object_name()?];
        while self.p.consume_token(&Token::Comma) {
            names.push(self.object_name()?);
        }
        if kind == "TRIGGER" && self.eat_word("ON") {
            self.eat_word("DATABASE");
            self.eat_word("ALL");
            self.eat_word("SERVER");
        }
        Ok(Stmt::Drop {
            kind,
            names,
            if_exists,
        })
    }

    fn create_statement(&mut self) -> Result<Stmt, SqlError> {
        self.p.next_token();
        if self.is_word(0, "OR") && self.is_word(1, "ALTER") && self.is_word(2, "VIEW") {
            self.p.next_token();
            self.p.next_token();
            return self.create_view(ViewMode::CreateOrAlter);
        }
        if self.is_word(0, "OR") {
            return Err(unsupported_stmt("CREATE OR ALTER"));
        }
        if self.is_word(0, "VIEW") {
            return self.create_view(ViewMode::Create);
        }
        let mut unique = false;
        let mut clustered = None;
        loop {
            if self.eat_word("UNIQUE") {
                unique = true;
            } else if self.eat_word("CLUSTERED") {
                clustered = Some(true);
            } else if self.eat_word("NONCLUSTERED") {
                clustered = Some(false);
            } else {
                break;
            }
        }
        let kind = self.ident()?.to_uppercase();
        match kind.as_str() {
            "TABLE" => self.create_table(),
            "INDEX" => {
                let name = self.ident()?;
                self.expect_word("ON")?;
                let table = self.object_name()?;
                self.expect(Token::LParen)?;
                let columns = self.column_list_with_order()?;
                let mut include = Vec::new();
                if self.eat_word("INCLUDE") {
                    self.expect(Token::LParen)?;
                    include = self.ident_list()?;
                }
                let filter = if self.eat_word("WHERE") {
                    Some(self.expr()?)
                } else {
                    None
                };
                self.skip_with_and_on()?;
                Ok(Stmt::CreateIndex(IndexSpec {
                    name,
                    table,
                    unique,
                    clustered: clustered.unwrap_or(false),
                    columns,
                    include,
                    filter,
                }))
            }
            "DATABASE" => {
                let name = self.ident()?;
                self.skip_to_statement_end();
                Ok(Stmt::CreateDatabase(name))
            }
            "SCHEMA" => {
                let name = self.ident()?;
                if self.eat_word("AUTHORIZATION") {
                    self.ident()?;
                }
                Ok(Stmt::CreateSchema { name })
            }
            "SEQUENCE" => {
                let name = self.object_name()?;
                let mut s = Stmt::CreateSequence {
                    name,
                    type_text: None,
                    start: None,
                    increment: None,
                    min: None,
                    max: None,
                    cycle: false,
                    cache: None,
                };
                let Stmt::CreateSequence {
                    type_text,
                    start,
                    increment,
                    min,
                    max,
                    cycle,
                    cache,
                    ..
                } = &mut s
                else {
                    unreachable!("just built")
                };
                loop {
                    if self.eat_word("AS") {
                        *type_text = Some(self.type_text()?);
                    } else if self.eat_word("START") {
                        self.expect_word("WITH")?;
                        *start = Some(self.signed_number()?);
                    } else if self.eat_word("INCREMENT") {
                        self.expect_word("BY")?;
                        *increment = Some(self.signed_number()?);
                    } else if self.eat_word("MINVALUE") {
                        *min = Some(self.signed_number()?);
                    } else if self.eat_word("MAXVALUE") {
                        *max = Some(self.signed_number()?);
                    } else if self.eat_word("CYCLE") {
                        *cycle = true;
                    } else if self.eat_word("CACHE") {
                        if let Token::Number(_, _) = self.p.peek_token().token {
                            *cache = Some(self.signed_number()? as i64);
                        }
                    } else if self.is_word(0, "NO") {
                        self.p.next_token();
                        self.ident()?;
                    } else {
                        break;
                    }
                }
                Ok(s)
            }
            "TYPE" => {
                let name = self.object_name()?;
                if !self.eat_word("FROM") {
                    return Err(unsupported_stmt("CREATE TYPE AS TABLE"));
                }
                let base = self.type_text()?;
                let mut nullable = true;
                if self.eat_word("NOT") {
                    self.expect_word("NULL")?;
                    nullable = false;
                } else {
                    self.eat_word("NULL");
                }
                Ok(Stmt::CreateType {
                    name,
                    base,
                    nullable,
                })
            }
            "TRIGGER" => {
                let name = self.object_name()?;
                self.expect_word("ON")?;
                if !self.eat_word("DATABASE") {
                    return Err(unsupported_stmt(
                        "DML triggers (only CREATE TRIGGER … ON DATABASE)",
                    ));
                }
                if self.eat_word("WITH") {
                    self.ident()?;
                }
                if !(self.eat_word("FOR") || self.eat_word("AFTER")) {
                    return Err(self.syntax_error());
                }
                let mut events = vec![self.ident()?.to_uppercase()];
                while self.p.consume_token(&Token::Comma) {
                    events.push(self.ident()?.to_uppercase());
                }
                self.expect_word("AS")?;
                let body = self.body_text_to_end();
                Ok(Stmt::CreateTrigger { name, events, body })
            }
            "PROC" | "PROCEDURE" => {
                let name = self.object_name()?;
                let mut params = Vec::new();
                let paren = self.p.consume_token(&Token::LParen);
                while let Token::Word(w) = self.p.peek_token().token {
                    if !w.value.starts_with('@') {
                        break;
                    }
                    self.p.next_token();
                    self.eat_word("AS");
                    let ty = self.type_text()?;
                    let default = if self.p.consume_token(&Token::Eq) {
                        Some(self.expr()?)
                    } else {
                        None
                    };
                    let output = self.eat_word("OUTPUT") || self.eat_word("OUT");
                    params.push((w.value, ty, default, output));
                    if !self.p.consume_token(&Token::Comma) {
                        break;
                    }
                }
                if paren {
                    self.expect(Token::RParen)?;
                }
                if self.eat_word("WITH") {
                    self.ident()?;
                }
                self.expect_word("AS")?;
                let body = self.body_text_to_end();
                Ok(Stmt::CreateProcedure { name, params, body })
            }
            "VIEW" | "FUNCTION" => Err(unsupported_stmt(&format!("CREATE {kind}"))),
            _ => Err(unsupported_stmt(&format!("CREATE {kind}"))),
        }
    }

    /// After CREATE [OR ALTER] / ALTER: `VIEW name [(columns)] [WITH attributes] AS select`.
    /// The SELECT is the rest of the batch (CREATE VIEW must be alone in its batch).
    fn create_view(&mut self, mode: ViewMode) -> Result<Stmt, SqlError> {
        self.expect_word("VIEW")?;
        let name = self.object_name()?;
        let mut columns = Vec::new();
        if self.p.consume_token(&Token::LParen) {
            loop {
                columns.push(self.ident()?);
                if !self.p.consume_token(&Token::Comma) {
                    break;
                }
            }
            self.expect(Token::RParen)?;
        }
        if self.eat_word("WITH") {
            // SCHEMABINDING, ENCRYPTION, VIEW_METADATA: accepted, no effect.
            loop {
                self.ident()?;
                if !self.p.consume_token(&Token::Comma) {
                    break;
                }
            }
        }
        self.expect_word("AS")?;
        let query = self.body_text_to_end();
        let mut query = query.trim_end_matches(';').trim_end().to_string();
        let check_option = query.to_ascii_uppercase().ends_with("WITH CHECK OPTION");
        if check_option {
            query.truncate(query.len() - "WITH CHECK OPTION".len());
            query = query.trim_end().to_string();
        }
        Ok(Stmt::CreateView {
            name,
            columns,
            definition: self.sql.trim().to_string(),
            query,
            check_option,
            mode,
        })
    }

    fn signed_number(&mut self) -> Result<i128, SqlError> {
        let neg = self.p.consume_token(&Token::Minus);
        let _ = self.p.consume_token(&Token::Plus);
        match self.p.next_token().token {
            Token::Number(n, _) => n
                .parse::<i128>()
                .map(|v| if neg { -v } else { v })
                .map_err(|_| self.syntax_error()),
            _ => Err(self.syntax_error()),
        }
    }

    fn ident_list(&mut self) -> Result<Vec<String>, SqlError> {
        let mut out = vec![self.ident()?];
        while self.p.consume_token(&Token::Comma) {
            out.push(self.ident()?);
        }
        self.expect(Token::RParen)?;
        Ok(out)
    }

    /// `a [ASC|DESC], b …)` — consumes the closing paren.
    fn column_list_with_order(&mut self) -> Result<Vec<(String, bool)>, SqlError> {
        let mut out = Vec::new();
        loop {
            let c = self.ident()?;
            let desc = if self.eat_word("DESC") {
                true
            } else {
                self.eat_word("ASC");
                false
            };
            out.push((c, desc));
            if !self.p.consume_token(&Token::Comma) {
                break;
            }
        }
        self.expect(Token::RParen)?;
        Ok(out)
    }

    /// Skips `WITH (…)`, `ON [filegroup]`, `TEXTIMAGE_ON x` after table/index definitions.
    fn skip_with_and_on(&mut self) -> Result<(), SqlError> {
        loop {
            if self.is_word(0, "WITH") && self.p.peek_nth_token(1).token == Token::LParen {
                self.p.next_token();
                self.p.next_token();
                let mut depth = 1;
                while depth > 0 {
                    match self.p.next_token().token {
                        Token::LParen => depth += 1,
                        Token::RParen => depth -= 1,
                        Token::EOF => return Err(self.syntax_error()),
                        _ => {}
                    }
                }
            } else if self.is_word(0, "ON")
                || self.is_word(0, "TEXTIMAGE_ON")
                || self.is_word(0, "FILESTREAM_ON")
            {
                self.p.next_token();
                self.ident()?;
                if self.p.consume_token(&Token::LParen) {
                    self.ident()?;
                    self.expect(Token::RParen)?;
                }
            } else {
                return Ok(());
            }
        }
    }

    fn create_table(&mut self) -> Result<Stmt, SqlError> {
        let name = self.object_name()?;
        self.expect(Token::LParen)?;
        let mut columns = Vec::new();
        let mut constraints = Vec::new();
        loop {
            if self.is_word(0, "CONSTRAINT")
                || self.is_word(0, "PRIMARY")
                || self.is_word(0, "UNIQUE")
                || self.is_word(0, "FOREIGN")
                || self.is_word(0, "CHECK")
            {
                constraints.push(self.table_constraint()?);
            } else if self.is_word(0, "INDEX") {
                return Err(unsupported_stmt("inline INDEX in CREATE TABLE"));
            } else {
                columns.push(self.column_spec()?);
            }
            if !self.p.consume_token(&Token::Comma) {
                break;
            }
            if self.p.peek_token().token == Token::RParen {
                break;
            }
        }
        self.expect(Token::RParen)?;
        self.skip_with_and_on()?;
        Ok(Stmt::CreateTable {
            name,
            columns,
            constraints,
        })
    }

    fn clustered_opt(&mut self) -> Option<bool> {
        if self.eat_word("CLUSTERED") {
            Some(true)
        } else if self.eat_word("NONCLUSTERED") {
            Some(false)
        } else {
            None
        }
    }

    fn referential_actions(&mut self) -> Result<(String, String), SqlError> {
        let mut on_delete = "NO ACTION".to_string();
        let mut on_update = "NO ACTION".to_string();
        while self.is_word(0, "ON") && (self.is_word(1, "DELETE") || self.is_word(1, "UPDATE")) {
            self.p.next_token();
            let which = self.ident()?.to_uppercase();
            let action = if self.eat_word("NO") {
                self.expect_word("ACTION")?;
                "NO ACTION".to_string()
            } else if self.eat_word("CASCADE") {
                "CASCADE".to_string()
            } else if self.eat_word("SET") {
                format!("SET {}", self.ident()?.to_uppercase())
            } else {
                return Err(self.syntax_error());
            };
            if which == "DELETE" {
                on_delete = action;
            } else {
                on_update = action;
            }
        }
        if self.eat_word("NOT") {
            self.expect_word("FOR")?;
            self.expect_word("REPLICATION")?;
        }
        Ok((on_delete, on_update))
    }

    fn table_constraint(&mut self) -> Result<ConstraintSpec, SqlError> {
        let name = if self.eat_word("CONSTRAINT") {
            Some(self.ident()?)
        } else {
            None
        };
        let kind = if self.eat_word("PRIMARY") {
            self.expect_word("KEY")?;
            let clustered = self.clustered_opt();
            self.expect(Token::LParen)?;
            let columns = self.column_list_with_order()?;
            self.skip_with_and_on()?;
            ConstraintKind::PrimaryKey { clustered, columns }
        } else if self.eat_word("UNIQUE") {
            let clustered = self.clustered_opt();
            self.expect(Token::LParen)?;
            let columns = self.column_list_with_order()?;
            self.skip_with_and_on()?;
            ConstraintKind::Unique { clustered, columns }
        } else if self.eat_word("FOREIGN") {
            self.expect_word("KEY")?;
            self.expect(Token::LParen)?;
            let columns = self.ident_list()?;
            self.expect_word("REFERENCES")?;
            let ref_table = self.object_name()?;
            let ref_columns = if self.p.consume_token(&Token::LParen) {
                self.ident_list()?
            } else {
                Vec::new()
            };
            let (on_delete, on_update) = self.referential_actions()?;
            ConstraintKind::ForeignKey {
                columns,
                ref_table,
                ref_columns,
                on_delete,
                on_update,
            }
        } else if self.eat_word("CHECK") {
            if self.eat_word("NOT") {
                self.expect_word("FOR")?;
                self.expect_word("REPLICATION")?;
            }
            ConstraintKind::Check(self.expr()?)
        } else if self.eat_word("DEFAULT") {
            let expr = self.expr()?;
            self.expect_word("FOR")?;
            let column = self.ident()?;
            ConstraintKind::Default { column, expr }
        } else {
            return Err(self.syntax_error());
        };
        Ok(ConstraintSpec { name, kind })
    }

    fn column_spec(&mut self) -> Result<ColumnSpec, SqlError> {
        let name = self.ident()?;
        let mut spec = ColumnSpec {
            name: name.clone(),
            type_text: None,
            nullable: None,
            identity: None,
            default: None,
            computed: None,
            rowguidcol: false,
            constraints: Vec::new(),
        };
        if self.eat_word("AS") {
            let e = self.expr()?;
            let persisted = self.eat_word("PERSISTED");
            if self.eat_word("NOT") {
                self.expect_word("NULL")?;
                spec.nullable = Some(false);
            }
            spec.computed = Some((e, persisted));
            return Ok(spec);
        }
        spec.type_text = Some(self.type_text()?);
        loop {
            if self.eat_word("NULL") {
                spec.nullable = Some(true);
            } else if self.is_word(0, "NOT") && self.is_word(1, "NULL") {
                self.p.next_token();
                self.p.next_token();
                spec.nullable = Some(false);
            } else if self.is_word(0, "NOT") && self.is_word(1, "FOR") {
                self.p.next_token();
                self.p.next_token();
                self.expect_word("REPLICATION")?;
            } else if self.eat_word("IDENTITY") {
                let (mut seed, mut inc) = ("1".to_string(), "1".to_string());
                if self.p.consume_token(&Token::LParen) {
                    seed = self.signed_number()?.to_string();
                    self.expect(Token::Comma)?;
                    inc = self.signed_number()?.to_string();
                    self.expect(Token::RParen)?;
                }
                spec.identity = Some((seed, inc));
            } else if self.eat_word("COLLATE") {
                self.ident()?;
            } else if self.eat_word("ROWGUIDCOL") {
                spec.rowguidcol = true;
            } else if self.eat_word("SPARSE") || self.eat_word("FILESTREAM") {
            } else if self.is_word(0, "CONSTRAINT")
                || self.is_word(0, "PRIMARY")
                || self.is_word(0, "UNIQUE")
                || self.is_word(0, "REFERENCES")
                || self.is_word(0, "CHECK")
                || self.is_word(0, "DEFAULT")
                || self.is_word(0, "FOREIGN")
            {
                let cname = if self.eat_word("CONSTRAINT") {
                    Some(self.ident()?)
                } else {
                    None
                };
                if self.eat_word("DEFAULT") {
                    let e = self.expr()?;
                    spec.default = Some((cname, e));
                    if self.eat_word("WITH") {
                        self.expect_word("VALUES")?;
                    }
                } else if self.eat_word("PRIMARY") {
                    self.expect_word("KEY")?;
                    let clustered = self.clustered_opt();
                    self.skip_with_and_on()?;
                    spec.constraints.push(ConstraintSpec {
                        name: cname,
                        kind: ConstraintKind::PrimaryKey {
                            clustered,
                            columns: vec![(name.clone(), false)],
                        },
                    });
                } else if self.eat_word("UNIQUE") {
                    let clustered = self.clustered_opt();
                    self.skip_with_and_on()?;
                    spec.constraints.push(ConstraintSpec {
                        name: cname,
                        kind: ConstraintKind::Unique {
                            clustered,
                            columns: vec![(name.clone(), false)],
                        },
                    });
                } else if self.eat_word("FOREIGN") || self.is_word(0, "REFERENCES") {
                    self.eat_word("KEY");
                    self.expect_word("REFERENCES")?;
                    let ref_table = self.object_name()?;
                    let ref_columns = if self.p.consume_token(&Token::LParen) {
                        self.ident_list()?
                    } else {
                        Vec::new()
                    };
                    let (on_delete, on_update) = self.referential_actions()?;
                    spec.constraints.push(ConstraintSpec {
                        name: cname,
                        kind: ConstraintKind::ForeignKey {
                            columns: vec![name.clone()],
                            ref_table,
                            ref_columns,
                            on_delete,
                            on_update,
                        },
                    });
                } else if self.eat_word("CHECK") {
                    let e = self.expr()?;
                    spec.constraints.push(ConstraintSpec {
                        name: cname,
                        kind: ConstraintKind::Check(e),
                    });
                } else {
                    return Err(self.syntax_error());
                }
            } else {
                break;
            }
        }
        Ok(spec)
    }

    fn alter_table(&mut self) -> Result<Stmt, SqlError> {
        self.p.next_token();
        self.p.next_token();
        let table = self.object_name()?;
        let action = if self.eat_word("ADD") {
            if self.is_word(0, "CONSTRAINT")
                || self.is_word(0, "PRIMARY")
                || self.is_word(0, "UNIQUE")
                || self.is_word(0, "FOREIGN")
                || self.is_word(0, "CHECK")
                || self.is_word(0, "DEFAULT")
            {
                let mut cs = vec![self.table_constraint()?];
                while self.p.consume_token(&Token::Comma) {
                    cs.push(self.table_constraint()?);
                }
                AlterAction::AddConstraints(cs)
            } else {
                let mut cols = vec![self.column_spec()?];
                while self.p.consume_token(&Token::Comma) {
                    cols.push(self.column_spec()?);
                }
                AlterAction::AddColumns(cols)
            }
        } else if self.eat_word("DROP") {
            let is_col = self.eat_word("COLUMN");
            let is_con = !is_col && self.eat_word("CONSTRAINT");
            let if_exists = if self.is_word(0, "IF") && self.is_word(1, "EXISTS") {
                self.p.next_token();
                self.p.next_token();
                true
            } else {
                false
            };
            let mut names = vec![self.ident()?];
            while self.p.consume_token(&Token::Comma) {
                self.eat_word("COLUMN");
                self.eat_word("CONSTRAINT");
                names.push(self.ident()?);
            }
            if is_col {
                AlterAction::DropColumns(names, if_exists)
            } else {
                let _ = is_con;
                AlterAction::DropConstraints(names, if_exists)
            }
        } else if self.eat_word("ALTER") {
            self.expect_word("COLUMN")?;
            let name = self.ident()?;
            let type_text = self.type_text()?;
            let mut nullable = None;
            loop {
                if self.eat_word("COLLATE") {
                    self.ident()?;
                } else if self.eat_word("NULL") {
                    nullable = Some(true);
                } else if self.is_word(0, "NOT") {
                    self.p.next_token();
                    self.expect_word("NULL")?;
                    nullable = Some(false);
                } else {
                    break;
                }
            }
            AlterAction::AlterColumn {
                name,
                type_text,
                nullable,
            }
        } else if self.is_word(0, "WITH")
            || self.is_word(0, "NOCHECK")
            || self.is_word(0, "CHECK")
            || self.is_word(0, "ENABLE")
            || self.is_word(0, "DISABLE")
            || self.is_word(0, "SET")
        {
            self.skip_to_statement_end();
            AlterAction::NoOp
        } else {
            return Err(self.syntax_error());
        };
        Ok(Stmt::AlterTable { table, action })
    }
}

fn unsupported_stmt(what: &str) -> SqlError {
    super::value::unsupported(what)
}

fn token_text(t: &Token) -> String {
    match t {
        Token::Word(w) => w.value.clone(),
        other => other.to_string(),
    }
}

/// Splits a multi-part name into (database, schema, object), defaulting missing parts.
pub fn split_name(name: &[String]) -> (Option<String>, Option<String>, String) {
    match name.len() {
        0 => (None, None, String::new()),
        1 => (None, None, name[0].clone()),
        2 => (None, Some(name[0].clone()), name[1].clone()),
        3 => (
            Some(name[0].clone()),
            Some(name[1].clone()),
            name[2].clone(),
        ),
        _ => (
            Some(name[name.len() - 3].clone()),
            Some(name[name.len() - 2].clone()),
            name[name.len() - 1].clone(),
        ),
    }
}

pub fn object_name_parts(n: &ast::ObjectName) -> ObjName {
    n.0.iter()
        .map(|p| match p {
            ast::ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect()
}
