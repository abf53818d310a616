//! Object-name patterns of task definitions (`db.schema.table` with `*` and `?`).

/// Does `pattern` match `text`? `*` is any run of characters, `?` one character; case is
/// ignored, as SQL Server's default collations compare names.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    // Iterative matcher that backtracks to the last '*'.
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn stars_questions_and_case() {
        assert!(glob_match("ord*", "Orders"));
        assert!(glob_match("*", ""));
        assert!(glob_match("o?ders", "orders"));
        assert!(!glob_match("o?ders", "oders"));
        assert!(glob_match("*_log_*", "app_log_2024"));
        assert!(!glob_match("*_log", "app_log_2024"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("sales.dbo.*", "Sales.DBO.Orders"));
    }
}
