//! Text values PostgreSQL cannot store as given, and the one policy for them.
//!
//! PostgreSQL text rejects NUL (U+0000) in both text and binary input, and UTF-8 cannot carry
//! unpaired UTF-16 surrogates. SQL Server stores both. The policy (per column, the same in the
//! full load and CDC apply):
//! - `Error` (default): the row fails with an error naming the column;
//! - `Strip`: the offending characters are removed;
//! - `Replace`: each is replaced by U+FFFD.
//!
//! Unpaired surrogates are handled when capture decodes UTF-16 ([`crate::text_from_utf16`]),
//! because a Rust string cannot hold them; NULs are handled by the encoder, the literal renderer
//! and the canonical form, which all go through [`for_each_clean_piece`].

use crate::TypemapError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidTextPolicy {
    #[default]
    Error,
    Strip,
    Replace,
}

pub const REPLACEMENT: &str = "\u{FFFD}";

/// Calls `piece` with the value's text in order, NULs removed or replaced per `policy`.
/// Never allocates.
#[inline]
pub fn for_each_clean_piece(
    text: &str,
    policy: InvalidTextPolicy,
    column: &str,
    mut piece: impl FnMut(&str),
) -> Result<(), TypemapError> {
    if !text.as_bytes().contains(&0) {
        piece(text);
        return Ok(());
    }
    if policy == InvalidTextPolicy::Error {
        return Err(TypemapError::InvalidText {
            column: column.to_string(),
            problem: "text contains a NUL (0x00) character, which PostgreSQL cannot store",
        });
    }
    let mut parts = text.split('\0');
    if let Some(first) = parts.next() {
        piece(first);
    }
    for part in parts {
        if policy == InvalidTextPolicy::Replace {
            piece(REPLACEMENT);
        }
        piece(part);
    }
    Ok(())
}

pub(crate) fn apply_text_policy_to_utf16(
    units: &[u16],
    policy: InvalidTextPolicy,
    column: &str,
) -> Result<String, TypemapError> {
    let mut out = String::with_capacity(units.len());
    for decoded in char::decode_utf16(units.iter().copied()) {
        match decoded {
            Ok(c) => out.push(c),
            Err(_) => match policy {
                InvalidTextPolicy::Error => return Err(TypemapError::InvalidText {
                    column: column.to_string(),
                    problem:
                        "text contains an unpaired UTF-16 surrogate, which UTF-8 cannot represent",
                }),
                InvalidTextPolicy::Strip => {}
                InvalidTextPolicy::Replace => out.push('\u{FFFD}'),
            },
        }
    }
    Ok(out)
}

/// Splits an XML value around the `encoding="…"` pseudo-attribute of its declaration, so that
/// `before + after` is the value without it. PostgreSQL honours the declared encoding on binary
/// input, but the text always travels as UTF-8 (SQL Server declares UTF-16). When there is no
/// encoding declaration, `after` is empty.
pub fn split_xml_encoding_declaration(xml: &str) -> (&str, &str) {
    let trimmed_start = xml.len() - xml.trim_start().len();
    let rest = &xml[trimmed_start..];
    if !rest.starts_with("<?xml") {
        return (xml, "");
    }
    let Some(decl_end) = rest.find("?>") else {
        return (xml, "");
    };
    let decl = &rest[..decl_end];
    let Some(attr) = decl.find("encoding") else {
        return (xml, "");
    };
    // Include the whitespace before the attribute.
    let attr_start = decl[..attr].trim_end().len();
    let after_name = decl[attr + "encoding".len()..].trim_start();
    let Some(after_eq) = after_name.strip_prefix('=') else {
        return (xml, "");
    };
    let after_eq = after_eq.trim_start();
    let Some(quote) = after_eq.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return (xml, "");
    };
    let Some(close) = after_eq[1..].find(quote) else {
        return (xml, "");
    };
    let value_end_in_decl = decl.len() - after_eq.len() + 1 + close + 1;
    let before = &xml[..trimmed_start + attr_start];
    let after = &xml[trimmed_start + value_end_in_decl..];
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str, policy: InvalidTextPolicy) -> Result<String, TypemapError> {
        let mut out = String::new();
        for_each_clean_piece(text, policy, "c", |p| out.push_str(p))?;
        Ok(out)
    }

    #[test]
    fn nul_policy() {
        assert_eq!(clean("abc", InvalidTextPolicy::Error).unwrap(), "abc");
        assert!(matches!(
            clean("a\0b", InvalidTextPolicy::Error),
            Err(TypemapError::InvalidText { .. })
        ));
        assert_eq!(clean("\0a\0\0b\0", InvalidTextPolicy::Strip).unwrap(), "ab");
        assert_eq!(
            clean("a\0b", InvalidTextPolicy::Replace).unwrap(),
            "a\u{FFFD}b"
        );
    }

    #[test]
    fn surrogate_policy() {
        let units = [0x61, 0xD800, 0x62, 0xD83D, 0xDE00];
        assert!(apply_text_policy_to_utf16(&units, InvalidTextPolicy::Error, "c").is_err());
        assert_eq!(
            apply_text_policy_to_utf16(&units, InvalidTextPolicy::Strip, "c").unwrap(),
            "ab😀"
        );
        assert_eq!(
            apply_text_policy_to_utf16(&units, InvalidTextPolicy::Replace, "c").unwrap(),
            "a\u{FFFD}b😀"
        );
    }

    #[test]
    fn xml_encoding_declaration_is_removed() {
        let join = |x: &str| {
            let (a, b) = split_xml_encoding_declaration(x);
            format!("{a}{b}")
        };
        assert_eq!(
            join(r#"<?xml version="1.0" encoding="UTF-16"?><a/>"#),
            r#"<?xml version="1.0"?><a/>"#
        );
        assert_eq!(
            join("<?xml version='1.0' encoding = 'utf-16' standalone='yes'?><a/>"),
            "<?xml version='1.0' standalone='yes'?><a/>"
        );
        assert_eq!(join("<a>encoding=\"x\"</a>"), "<a>encoding=\"x\"</a>");
        assert_eq!(
            join(r#"<?xml version="1.0"?><a/>"#),
            r#"<?xml version="1.0"?><a/>"#
        );
    }
}
