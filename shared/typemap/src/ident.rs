//! PostgreSQL names for SQL Server objects (type-mapping reference §2.29, §2.30).

use sha2::{Digest, Sha256};

/// PostgreSQL's identifier limit: NAMEDATALEN − 1 bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// Bytes kept from a too-long name before `_` and the 8-hex-digit hash.
const SHORTENED_PREFIX_BYTES: usize = MAX_IDENTIFIER_BYTES - 9;

/// The task's capitalization policy for target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Capitalization {
    /// Lower-case: what PostgreSQL users expect (unquoted names fold to lower case).
    #[default]
    Lower,
    /// Keep the source spelling (the names then need quoting when they have capitals).
    Source,
    Upper,
}

/// The target name for a source name: the policy applied, then shortened to ≤ 63 bytes.
/// Returns the bare name; quote it with [`quote_ident`] when writing SQL.
pub fn pg_identifier(name: &str, policy: Capitalization) -> String {
    let cased = match policy {
        Capitalization::Lower => name.to_lowercase(),
        Capitalization::Source => name.to_string(),
        Capitalization::Upper => name.to_uppercase(),
    };
    shorten_identifier(&cased)
}

/// `name` if it fits in 63 bytes; otherwise its first ≤ 54 bytes (cut on a character
/// boundary), `_`, and the first 8 hex digits of SHA-256 of the whole name. Deterministic, so
/// schema creation and CDC apply always agree; distinct long names with a common prefix stay
/// distinct.
pub fn shorten_identifier(name: &str) -> String {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name.to_string();
    }
    let mut cut = SHORTENED_PREFIX_BYTES;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(name.as_bytes());
    let mut out = String::with_capacity(MAX_IDENTIFIER_BYTES);
    out.push_str(&name[..cut]);
    out.push('_');
    for byte in &digest[..4] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// `name` as SQL: bare when PostgreSQL would read it back unchanged (lower-case ASCII letters,
/// digits, `_`, `$`, not starting with a digit or `$`, not a keyword), else double-quoted with
/// inner quotes doubled.
pub fn quote_ident(name: &str) -> String {
    let bytes = name.as_bytes();
    let plain = !bytes.is_empty()
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'$')
        && KEYWORDS.binary_search(&name).is_err();
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// PostgreSQL keywords that are reserved or restricted as names (reserved, type/function-name
/// and column-name categories). Sorted for binary search.
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_sorted() {
        assert!(KEYWORDS.windows(2).all(|w| w[0] < w[1]));
    }
}
