//! The crate's one error type. Mapping, encoding and expression translation each fail with a
//! variant that names the column (or expression) and says what to do about it.

use dbsync_core::error::{Classify, ErrorClass};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypemapError {
    #[error("column {column:?}: SQL Server type {type_name} is not supported; {fix}")]
    UnsupportedType {
        column: String,
        type_name: String,
        fix: String,
    },

    #[error("column {column:?}: invalid {type_name} parameters ({detail})")]
    InvalidTypeParameters {
        column: String,
        type_name: String,
        detail: String,
    },

    #[error("column {column:?}: a {value_kind} value cannot be written to a {pg_type} column")]
    TypeMismatch {
        column: String,
        value_kind: &'static str,
        pg_type: String,
    },

    #[error("column {column:?}: value {value} is out of range for {pg_type}")]
    OutOfRange {
        column: String,
        value: String,
        pg_type: String,
    },

    #[error("column {column:?}: {problem}; set the column's invalid-text policy to `strip` or `replace` to load it anyway")]
    InvalidText {
        column: String,
        problem: &'static str,
    },

    #[error("column {column:?}: value of {bytes} bytes exceeds PostgreSQL's 1 GB field limit")]
    TooLarge { column: String, bytes: usize },

    #[error("column {column:?}: malformed value ({detail})")]
    Malformed { column: String, detail: String },

    #[error("column {column:?}: an unchanged-LOB marker must never be written; leave the column out of the statement")]
    UnchangedMarker { column: String },

    #[error("cannot translate T-SQL expression {expression:?}: {reason}")]
    Untranslatable { expression: String, reason: String },
}

/// Errors from [`crate::map_column`].
pub type MappingError = TypemapError;
/// Errors from [`crate::encode_value`] and [`crate::render_literal`].
pub type EncodeError = TypemapError;
/// Errors from [`crate::translate_expression`].
pub type Untranslatable = TypemapError;

impl Classify for TypemapError {
    /// Every failure here is about the data or schema itself: retrying cannot help.
    fn class(&self) -> ErrorClass {
        ErrorClass::Definite
    }
}
