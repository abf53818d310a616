//! SQL Server column types and T-SQL expressions in PostgreSQL terms, as
//! `reference/type-mapping.md` §1.3 and §2.21 decide.
//!
//! This is the thin adapter between apply and the mapping rules: the DDL builder and the
//! writers only call the functions here, so the rules live in one place.

use dbsync_proto::v1::ColumnSchema;
use dbsync_typemap::{map_column, pg_identifier, Capitalization, MappingOptions};

/// The PostgreSQL column type for a SQL Server column (typemap's mapping with the default
/// options), or why there is none.
pub fn map_column_type(col: &ColumnSchema) -> Result<String, String> {
    map_column(col, &MappingOptions::default())
        .map(|t| t.ddl())
        .map_err(|e| e.to_string())
}

/// The domain CHECK a mapped column needs (tinyint: 0..255), for the quoted column name.
pub fn column_check(col: &ColumnSchema, quoted: &str) -> Option<String> {
    map_column(col, &MappingOptions::default())
        .ok()
        .and_then(|t| t.check_sql(quoted))
}

pub use dbsync_typemap::{quote_ident, quote_literal, shorten_identifier};

/// Applies the capitalization policy (`lower` default, `source`, `upper`) to a name and
/// shortens it to 63 bytes (typemap's rule, shared with the coordinator).
pub fn capitalize(name: &str, policy: &str) -> String {
    let policy = match policy {
        "source" => Capitalization::Source,
        "upper" => Capitalization::Upper,
        _ => Capitalization::Lower,
    };
    pg_identifier(name, policy)
}

/// What the translator needs to know about a column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnClass {
    /// `+` on it is concatenation.
    Text,
    /// bit → boolean: `= 1` becomes `= true`.
    Bool,
    Other,
}

/// Translates a T-SQL expression (a default, computed column, CHECK or index filter) into
/// PostgreSQL. `column` maps a source column name to its quoted target name and type class. Anything outside the supported subset is an error
/// naming the construct, so the caller reports it instead of guessing.
pub fn translate_expression(
    expr: &str,
    column: &dyn Fn(&str) -> Option<(String, ColumnClass)>,
) -> Result<String, String> {
    let tokens = tokenize(expr)?;
    let concatenation = tokens.iter().any(|t| match t {
        Token::Str(_) => true,
        Token::Ident(name) | Token::Bracketed(name) => {
            column(name).is_some_and(|(_, c)| c == ColumnClass::Text)
        }
        _ => false,
    });
    let mut out = String::with_capacity(expr.len() + 16);
    let mut i = 0;
    let mut after_function = false;
    // A bit column, then a comparison: a following 0/1 literal is a boolean.
    let mut bool_column = false;
    let mut bool_comparison = false;
    while i < tokens.len() {
        let compare_with_bool = std::mem::replace(&mut bool_comparison, false);
        let after_bool_column = std::mem::replace(&mut bool_column, false);
        let was_function = std::mem::replace(&mut after_function, false);
        let after_function_here = was_function;
        let next_is_paren = matches!(tokens.get(i + 1), Some(Token::Punct(p)) if p == "(");
        match &tokens[i] {
            Token::Str(s) => push_word(&mut out, &quote_literal(s)),
            Token::Number(n) if compare_with_bool && (n == "0" || n == "1") => {
                push_word(&mut out, if n == "1" { "true" } else { "false" })
            }
            Token::Number(n) => push_word(&mut out, n),
            Token::Hex(h) => push_word(&mut out, &format!("'\\x{h}'::bytea")),
            Token::Bracketed(name) => {
                let (target, class) =
                    column(name).ok_or_else(|| format!("unknown column [{name}]"))?;
                push_word(&mut out, &target);
                bool_column = class == ColumnClass::Bool;
            }
            Token::Punct(p) if p == "(" && (compare_with_bool || after_bool_column) => {
                // Parentheses around the literal keep the state.
                if after_function_here {
                    out.push('(');
                } else {
                    push_word(&mut out, "(");
                }
                bool_comparison = compare_with_bool;
                bool_column = after_bool_column;
            }
            Token::Punct(p) if after_bool_column && matches!(p.as_str(), "=" | "<>" | "!=") => {
                push_word(&mut out, if p == "=" { "=" } else { "<>" });
                bool_comparison = true;
            }
            Token::Punct(p) => {
                let p = match p.as_str() {
                    "+" if concatenation => "||",
                    "!=" => "<>",
                    other => other,
                };
                if p == ")" || p == "," || (p == "(" && after_function_here) {
                    out.push_str(p);
                } else {
                    push_word(&mut out, p);
                }
            }
            Token::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                if next_is_paren {
                    let (replacement, no_args) = function(&lower)
                        .ok_or_else(|| format!("function {word}() has no translation"))?;
                    if no_args {
                        // Skip `(` `)` of a no-argument function.
                        if !matches!(tokens.get(i + 2), Some(Token::Punct(p)) if p == ")") {
                            return Err(format!("function {word}() expects no arguments"));
                        }
                        push_word(&mut out, replacement);
                        i += 3;
                        continue;
                    }
                    push_word(&mut out, replacement);
                    after_function = true;
                } else if let Some(kw) = keyword(&lower) {
                    push_word(&mut out, kw);
                } else if let Some((target, class)) = column(word) {
                    push_word(&mut out, &target);
                    bool_column = class == ColumnClass::Bool;
                } else {
                    return Err(format!("unknown name {word}"));
                }
            }
        }
        i += 1;
    }
    Ok(strip_outer_parens(out.trim()).to_string())
}

fn push_word(out: &mut String, word: &str) {
    if let Some(last) = out.chars().last() {
        if last != '(' && last != ' ' {
            out.push(' ');
        }
    }
    out.push_str(word);
}

/// Removes parentheses that wrap the whole expression: `((0))` → `0`.
pub fn strip_outer_parens(mut s: &str) -> &str {
    loop {
        let t = s.trim();
        if !(t.starts_with('(') && t.ends_with(')')) {
            return t;
        }
        // The first `(` must close at the very end.
        let mut depth = 0;
        let mut closes_at_end = true;
        let mut in_str = false;
        for (i, c) in t.char_indices() {
            match c {
                '\'' => in_str = !in_str,
                '(' if !in_str => depth += 1,
                ')' if !in_str => {
                    depth -= 1;
                    if depth == 0 && i != t.len() - 1 {
                        closes_at_end = false;
                        break;
                    }
                }
                _ => {}
            }
        }
        if !closes_at_end {
            return t;
        }
        s = &t[1..t.len() - 1];
    }
}

/// T-SQL function → PostgreSQL text; `true` when it takes no arguments and the text replaces
/// the whole call.
fn function(name: &str) -> Option<(&'static str, bool)> {
    Some(match name {
        "getdate" | "sysdatetime" => ("LOCALTIMESTAMP", true),
        "getutcdate" | "sysutcdatetime" => ("(now() AT TIME ZONE 'UTC')", true),
        "sysdatetimeoffset" => ("now()", true),
        "newid" | "newsequentialid" => ("gen_random_uuid()", true),
        "suser_sname" | "suser_name" => ("session_user", true),
        "user_name" => ("current_user", true),
        "db_name" => ("current_database()", true),
        "app_name" => ("current_setting('application_name')", true),
        "isnull" => ("coalesce", false),
        "coalesce" => ("coalesce", false),
        "nullif" => ("nullif", false),
        "len" => ("length", false),
        "datalength" => ("octet_length", false),
        "upper" => ("upper", false),
        "lower" => ("lower", false),
        "ltrim" => ("ltrim", false),
        "rtrim" => ("rtrim", false),
        "abs" => ("abs", false),
        "round" => ("round", false),
        "floor" => ("floor", false),
        "ceiling" => ("ceil", false),
        "substring" => ("substring", false),
        "replace" => ("replace", false),
        "left" => ("left", false),
        "right" => ("right", false),
        _ => return None,
    })
}

fn keyword(word: &str) -> Option<&'static str> {
    Some(match word {
        "and" => "AND",
        "or" => "OR",
        "not" => "NOT",
        "is" => "IS",
        "null" => "NULL",
        "like" => "LIKE",
        "in" => "IN",
        "between" => "BETWEEN",
        "case" => "CASE",
        "when" => "WHEN",
        "then" => "THEN",
        "else" => "ELSE",
        "end" => "END",
        "current_timestamp" => "LOCALTIMESTAMP",
        "current_user" | "user" => "current_user",
        "session_user" => "session_user",
        "system_user" => "session_user",
        _ => return None,
    })
}

#[derive(Debug, PartialEq)]
enum Token {
    Str(String),
    Number(String),
    Hex(String),
    Bracketed(String),
    Ident(String),
    Punct(String),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
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
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
            let start = i + 2;
            i = start;
            while i < chars.len() && chars[i].is_ascii_hexdigit() {
                i += 1;
            }
            out.push(Token::Hex(
                chars[start..i].iter().collect::<String>().to_lowercase(),
            ));
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i] == '.'
                    || chars[i] == 'e'
                    || chars[i] == 'E')
            {
                i += 1;
            }
            out.push(Token::Number(chars[start..i].iter().collect()));
        } else if c == '[' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated [identifier]".into()),
                    Some(']') if chars.get(i + 1) == Some(&']') => {
                        s.push(']');
                        i += 2;
                    }
                    Some(']') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Bracketed(s));
        } else if c.is_alphabetic() || c == '_' || c == '@' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric()
                    || chars[i] == '_'
                    || chars[i] == '@'
                    || chars[i] == '$')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if matches!(two.as_str(), "<>" | "!=" | "<=" | ">=") {
                out.push(Token::Punct(two));
                i += 2;
            } else if "=<>+-*/%(),".contains(c) {
                out.push(Token::Punct(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unsupported character {c:?}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(name: &str) -> Option<(String, ColumnClass)> {
        match name.to_lowercase().as_str() {
            "qty" => Some(("\"qty\"".into(), ColumnClass::Other)),
            "price" => Some(("\"price\"".into(), ColumnClass::Other)),
            "first" => Some(("\"first\"".into(), ColumnClass::Text)),
            "last" => Some(("\"last\"".into(), ColumnClass::Text)),
            "paid" => Some(("\"paid\"".into(), ColumnClass::Bool)),
            _ => None,
        }
    }

    #[test]
    fn translates_common_defaults_checks_and_computed_columns() {
        let t = |e: &str| translate_expression(e, &cols);
        assert_eq!(t("((0))").unwrap(), "0");
        assert_eq!(t("((-1))").unwrap(), "- 1");
        assert_eq!(t("(getdate())").unwrap(), "LOCALTIMESTAMP");
        assert_eq!(t("(newid())").unwrap(), "gen_random_uuid()");
        assert_eq!(t("(N'it''s')").unwrap(), "'it''s'");
        assert_eq!(
            t("([qty]>=(0) AND [qty]<=(100))").unwrap(),
            "\"qty\" >= (0) AND \"qty\" <= (100)"
        );
        assert_eq!(t("([qty]*[price])").unwrap(), "\"qty\" * \"price\"");
        assert_eq!(
            t("(([first]+' ')+[last])").unwrap(),
            "(\"first\" || ' ') || \"last\""
        );
        assert_eq!(t("([qty] IS NOT NULL)").unwrap(), "\"qty\" IS NOT NULL");
        assert_eq!(t("(isnull([qty],(0)))").unwrap(), "coalesce(\"qty\", (0))");
        assert_eq!(t("([paid]=(1))").unwrap(), "\"paid\" = (true)");
        assert_eq!(
            t("([paid]<>0 AND [qty]=(1))").unwrap(),
            "\"paid\" <> false AND \"qty\" = (1)"
        );
        assert!(t("(dbo.myfunc([qty]))").is_err());
        assert!(t("([nope]>(1))").unwrap_err().contains("nope"));
    }

    #[test]
    fn maps_types_as_the_reference_says() {
        let c = |t: &str, len: i32, p: i32, s: i32| ColumnSchema {
            type_name: t.into(),
            max_length: len,
            precision: p,
            scale: s,
            ..Default::default()
        };
        assert_eq!(
            map_column_type(&c("nvarchar", 400, 0, 0)).unwrap(),
            "varchar(200)"
        );
        assert_eq!(map_column_type(&c("nvarchar", -1, 0, 0)).unwrap(), "text");
        assert_eq!(
            map_column_type(&c("datetime2", 8, 27, 7)).unwrap(),
            "timestamp(6)"
        );
        assert_eq!(
            map_column_type(&c("decimal", 17, 38, 38)).unwrap(),
            "numeric(38,38)"
        );
        assert_eq!(
            map_column_type(&c("money", 8, 19, 4)).unwrap(),
            "numeric(19,4)"
        );
        assert_eq!(
            map_column_type(&c("float", 8, 53, 0)).unwrap(),
            "double precision"
        );
        assert!(map_column_type(&c("cursor", 0, 0, 0)).is_err());
    }
}
