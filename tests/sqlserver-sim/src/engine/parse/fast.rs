//! The fast path of `parse_batch` for the batches bulk writers send: multi-row
//! `INSERT INTO t [(cols)] VALUES (literal, …), …` statements, optionally between
//! `BEGIN TRAN[SACTION];` and `COMMIT [TRAN[SACTION]]`. Tokenizing and parsing such
//! statements with sqlparser costs far more than executing them. The scanner reads the batch's
//! leading statements of these forms; from the first statement it does not fully recognize
//! (anything else, comments, expressions, a literal it cannot convert) the rest of the batch
//! goes to the general parser, so the fast path never changes what a batch means.

use std::sync::Arc;

use super::{InsertValues, ObjName, Parsed, Stmt};
use crate::engine::value;
use crate::types::Value;

/// The leading statements of `sql` that are of the simple forms above, and the byte offset
/// and line where the rest of the batch (for the general parser) starts.
pub(super) fn simple_prefix(sql: &str) -> (Vec<Parsed>, usize, u32) {
    let mut s = Scanner {
        sql,
        b: sql.as_bytes(),
        at: 0,
        line: 1,
        line_counted_to: 0,
    };
    let mut out = Vec::new();
    loop {
        s.skip_ws();
        while s.eat(b';') {
            s.skip_ws();
        }
        let start = s.at;
        let line = s.line_at(start);
        if start >= s.b.len() {
            return (out, start, line);
        }
        match s.statement() {
            Some(stmt) => out.push(Parsed {
                stmt,
                text: sql[start..s.at].to_string(),
                line,
            }),
            None => return (out, start, line),
        }
    }
}

struct Scanner<'a> {
    sql: &'a str,
    b: &'a [u8],
    at: usize,
    line: u32,
    line_counted_to: usize,
}

impl Scanner<'_> {
    /// One statement of the simple forms, followed by `;` or the end of the batch (a name
    /// after BEGIN/COMMIT TRAN, or a statement without a separator, is not ours).
    fn statement(&mut self) -> Option<Stmt> {
        let stmt = match self.word()?.to_ascii_uppercase().as_str() {
            "BEGIN" => {
                self.skip_ws();
                match self.word()?.to_ascii_uppercase().as_str() {
                    "TRAN" | "TRANSACTION" => Stmt::BeginTran,
                    _ => return None,
                }
            }
            "COMMIT" => {
                let save = self.at;
                self.skip_ws();
                if matches!(self.peek(), Some(b';') | None) {
                    self.at = save;
                } else {
                    match self.word()?.to_ascii_uppercase().as_str() {
                        "TRAN" | "TRANSACTION" => {}
                        _ => return None,
                    }
                }
                Stmt::CommitTran
            }
            "INSERT" => Stmt::InsertValues(Box::new(self.insert_values()?)),
            _ => return None,
        };
        let end = self.at;
        self.skip_ws();
        if !matches!(self.peek(), Some(b';') | None) {
            return None;
        }
        self.at = end;
        Some(stmt)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    /// The 1-based line of byte offset `at` (offsets only grow).
    fn line_at(&mut self, at: usize) -> u32 {
        self.line += self.b[self.line_counted_to..at]
            .iter()
            .filter(|&&c| c == b'\n')
            .count() as u32;
        self.line_counted_to = at;
        self.line
    }

    /// A bare word of ASCII letters, digits and `_` that starts with a letter or `_`.
    fn word(&mut self) -> Option<&str> {
        let start = self.at;
        if !matches!(self.peek(), Some(c) if c.is_ascii_alphabetic() || c == b'_') {
            return None;
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.at += 1;
        }
        // A word running into characters sqlparser would keep in it (`@`, `$`, `#`,
        // non-ASCII letters) is not ours.
        if matches!(self.peek(), Some(c) if c >= 0x80 || matches!(c, b'@' | b'$' | b'#')) {
            return None;
        }
        Some(&self.sql[start..self.at])
    }

    /// A name part: a bare word or `[bracketed]` (without `]]` escapes).
    fn name_part(&mut self) -> Option<String> {
        if self.eat(b'[') {
            let start = self.at;
            let len = self.b[start..].iter().position(|&c| c == b']')?;
            self.at = start + len + 1;
            if self.peek() == Some(b']') || len == 0 {
                return None;
            }
            return Some(self.sql[start..start + len].to_string());
        }
        let w = self.word()?;
        // Keywords as bare names could make sqlparser read the statement differently.
        if sqlparser::keywords::ALL_KEYWORDS
            .binary_search(&w.to_ascii_uppercase().as_str())
            .is_ok()
        {
            return None;
        }
        Some(w.to_string())
    }

    /// `INTO name [(columns)] VALUES (…), …` after INSERT.
    fn insert_values(&mut self) -> Option<InsertValues> {
        self.skip_ws();
        if !self.word()?.eq_ignore_ascii_case("INTO") {
            return None;
        }
        self.skip_ws();
        let mut table: ObjName = vec![self.name_part()?];
        while self.eat(b'.') {
            table.push(self.name_part()?);
        }
        if table.len() > 4 {
            return None;
        }
        self.skip_ws();
        let mut columns = Vec::new();
        if self.eat(b'(') {
            loop {
                self.skip_ws();
                let column = match self.peek() {
                    Some(b'[') => self.name_part()?,
                    _ => self.word()?.to_string(),
                };
                columns.push(column);
                self.skip_ws();
                if self.eat(b')') {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
            self.skip_ws();
        }
        if !self.word()?.eq_ignore_ascii_case("VALUES") {
            return None;
        }
        let mut rows = Vec::new();
        loop {
            self.skip_ws();
            if !self.eat(b'(') {
                return None;
            }
            let mut row = Vec::with_capacity(columns.len().max(rows.first().map_or(0, Vec::len)));
            loop {
                self.skip_ws();
                row.push(self.literal()?);
                self.skip_ws();
                if self.eat(b')') {
                    break;
                }
                if !self.eat(b',') {
                    return None;
                }
            }
            rows.push(row);
            let save = self.at;
            self.skip_ws();
            if !self.eat(b',') {
                self.at = save;
                break;
            }
        }
        Some(InsertValues {
            table,
            columns,
            rows,
        })
    }

    /// A constant: number, 'string', N'string', 0xhex, NULL, or DEFAULT (None).
    fn literal(&mut self) -> Option<Option<Value>> {
        let v = match self.peek()? {
            b'\'' => Value::String(Arc::from(self.quoted()?.as_str())),
            b'N' | b'n' if self.b.get(self.at + 1) == Some(&b'\'') => {
                self.at += 1;
                Value::String(Arc::from(self.quoted()?.as_str()))
            }
            b'0' if self.b.get(self.at + 1) == Some(&b'x') => {
                self.at += 2;
                let start = self.at;
                while matches!(self.peek(), Some(c) if c.is_ascii_hexdigit()) {
                    self.at += 1;
                }
                Value::Binary(Arc::from(value::parse_hex(&self.sql[start..self.at])?))
            }
            b'0'..=b'9' => {
                let start = self.at;
                while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                    self.at += 1;
                }
                if self.eat(b'.') {
                    while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
                        self.at += 1;
                    }
                }
                value::numeric_literal(&self.sql[start..self.at]).ok()?.0
            }
            _ => {
                let w = self.word()?;
                if w.eq_ignore_ascii_case("NULL") {
                    Value::Null
                } else if w.eq_ignore_ascii_case("DEFAULT") {
                    return self.delimited().then_some(None);
                } else {
                    return None;
                }
            }
        };
        self.delimited().then_some(Some(v))
    }

    /// Whether the literal just read ends here (anything else, e.g. `1e5`, `'a'+'b'`, is
    /// an expression for the general parser).
    fn delimited(&self) -> bool {
        matches!(
            self.peek(),
            Some(b' ' | b'\t' | b'\r' | b'\n' | b',' | b')')
        )
    }

    /// A single-quoted string with `''` escapes, the opening quote next.
    fn quoted(&mut self) -> Option<String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let len = self.b[self.at..].iter().position(|&c| c == b'\'')?;
            out.push_str(&self.sql[self.at..self.at + len]);
            self.at += len + 1;
            if self.peek() == Some(b'\'') {
                out.push('\'');
                self.at += 1;
            } else {
                return Some(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements when the fast path reads the whole batch.
    fn simple_batch(sql: &str) -> Option<Vec<Parsed>> {
        let (stmts, rest, _) = simple_prefix(sql);
        (rest == sql.len()).then_some(stmts)
    }

    #[test]
    fn hands_the_rest_of_a_batch_to_the_general_parser() {
        let sql = "BEGIN TRAN;\n INSERT INTO t VALUES (1);\n UPDATE t SET a = 1; COMMIT";
        let (stmts, rest, line) = simple_prefix(sql);
        assert_eq!(stmts.len(), 2);
        assert!(sql[rest..].starts_with("UPDATE"));
        assert_eq!(line, 3);
        let (stmts, rest, line) = simple_prefix("BEGIN TRAN t1; INSERT INTO t VALUES (1)");
        assert_eq!((stmts.len(), rest, line), (0, 0, 1));
    }

    #[test]
    fn recognizes_transactions_of_multi_row_inserts() {
        let sql = "BEGIN TRANSACTION;\nINSERT INTO dbo.t VALUES (1, 'a''b', N'é', 0x0A0b, NULL, 12.50),(2,'',N'',0x,null,007) ;\n COMMIT;";
        let stmts = simple_batch(sql).expect("fast path");
        assert_eq!(stmts.len(), 3);
        assert!(matches!(stmts[0].stmt, Stmt::BeginTran));
        assert!(matches!(stmts[2].stmt, Stmt::CommitTran));
        assert_eq!((stmts[1].line, stmts[2].line), (2, 3));
        let Stmt::InsertValues(ins) = &stmts[1].stmt else {
            panic!("{:?}", stmts[1].stmt)
        };
        assert_eq!(ins.table, vec!["dbo".to_string(), "t".to_string()]);
        assert_eq!(
            ins.rows[0],
            vec![
                Some(Value::Int(1)),
                Some(Value::String("a'b".into())),
                Some(Value::String("é".into())),
                Some(Value::Binary(vec![0x0a, 0x0b].into())),
                Some(Value::Null),
                Some(Value::Decimal(1250, 2)),
            ]
        );
        assert_eq!(ins.rows[1][5], Some(Value::Int(7)));
        assert!(stmts[1].text.starts_with("INSERT INTO") && stmts[1].text.ends_with("007)"));
    }

    #[test]
    fn leaves_everything_else_to_the_general_parser() {
        for sql in [
            "INSERT INTO t VALUES (-1)",
            "INSERT INTO t VALUES (1e5)",
            "INSERT INTO t VALUES (GETDATE())",
            "INSERT INTO t VALUES (@p)",
            "INSERT INTO t VALUES (1) INSERT INTO t VALUES (2)",
            "INSERT t VALUES (1)",
            "INSERT INTO t SELECT 1",
            "INSERT INTO [a]]b] VALUES (1)",
            "INSERT INTO t VALUES (1) -- comment",
            "INSERT INTO t VALUES ('unterminated)",
            "INSERT INTO t VALUES (1",
            "INSERT INTO select VALUES (1)",
            "BEGIN TRAN t1; COMMIT",
            "BEGIN; COMMIT",
            "SELECT 1",
        ] {
            assert!(simple_batch(sql).is_none(), "{sql}");
        }
        assert_eq!(simple_batch(" ;; ").map(|s| s.len()), Some(0));
    }
}
