//! Object selection: which tables a task covers. Patterns name `db.schema.table` with `*`
//! (any run of characters) and `?` (one character), compared case-insensitively as SQL
//! Server's default collations do. A pattern with fewer parts matches from the right:
//! `dbo.*` is every table of schema `dbo` in every selected database, `orders` every table
//! named `orders`.

use dbsync_proto::v1::ObjectSelection;

use dbsync_core::pattern::glob_match as wildcard_match;

/// Does one pattern match the table `database.schema.table`?
pub fn pattern_matches(pattern: &str, database: &str, schema: &str, table: &str) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    let names = [database, schema, table];
    if parts.is_empty() || parts.len() > 3 {
        return false;
    }
    let offset = 3 - parts.len();
    parts
        .iter()
        .enumerate()
        .all(|(i, p)| wildcard_match(p.trim(), names[offset + i]))
}

/// Is the table selected: in a listed database (if any are listed), matched by an include
/// pattern (if any), and by no exclude pattern?
pub fn is_selected(selection: &ObjectSelection, database: &str, schema: &str, table: &str) -> bool {
    let db_ok = selection.databases.is_empty()
        || selection
            .databases
            .iter()
            .any(|d| wildcard_match(d, database));
    let included = selection.include.is_empty()
        || selection
            .include
            .iter()
            .any(|p| pattern_matches(p, database, schema, table));
    let excluded = selection
        .exclude
        .iter()
        .any(|p| pattern_matches(p, database, schema, table));
    db_ok && included && !excluded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_from_the_right() {
        assert!(pattern_matches("shop.dbo.orders", "shop", "dbo", "orders"));
        assert!(pattern_matches("dbo.*", "shop", "dbo", "orders"));
        assert!(!pattern_matches("sales.*", "shop", "dbo", "orders"));
        assert!(pattern_matches("orders", "shop", "dbo", "ORDERS"));
        assert!(!pattern_matches("a.b.c.d", "a", "b", "c"));
    }

    #[test]
    fn excludes_win_over_includes() {
        let sel = ObjectSelection {
            databases: vec!["shop".into()],
            include: vec!["dbo.*".into()],
            exclude: vec!["*.*_archive".into()],
        };
        assert!(is_selected(&sel, "shop", "dbo", "orders"));
        assert!(!is_selected(&sel, "shop", "dbo", "orders_archive"));
        assert!(!is_selected(&sel, "other", "dbo", "orders"));
        assert!(!is_selected(&sel, "shop", "sales", "orders"));
        assert!(is_selected(&ObjectSelection::default(), "x", "y", "z"));
    }
}
