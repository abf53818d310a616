//! The capture service's one error type and how each error is classified and reported.

use dbsync_core::error::{Classify, ErrorClass};

/// Everything that can go wrong in the capture service. Messages name the object and, where
/// one exists, the fix. No variant ever carries a password.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Could not reach or log in to SQL Server.
    #[error("Cannot connect to SQL Server at {host}:{port} as user '{user}': {detail}")]
    Connect {
        host: String,
        port: u16,
        user: String,
        detail: String,
        class: ErrorClass,
    },

    /// A statement failed on the server.
    #[error("SQL Server error {code} while {context}: {message}")]
    Server {
        context: String,
        code: u32,
        message: String,
    },

    /// The connection broke or the driver failed while running a statement.
    #[error("Connection to SQL Server failed while {context}: {detail}")]
    Io { context: String, detail: String },

    /// A value could not be converted.
    #[error("Cannot convert column {column}: {detail}")]
    Decode { column: String, detail: String },

    /// The request is malformed (missing field, bad bound, unknown table).
    #[error("{0}")]
    InvalidRequest(String),

    /// The source is not in a state that allows the operation (e.g. CDC not enabled).
    #[error("{0}")]
    Precondition(String),
    /// A column the read named is gone (a DDL ran since the caller read the table's schema):
    /// reading again with the table's current columns works, so it is worth a retry.
    #[error(
        "The columns of {table} changed while it was being read ({detail}); the read is retried"
    )]
    ColumnsChanged { table: String, detail: String },
}

/// Shorthand used across the crate.
pub type Result<T, E = CaptureError> = std::result::Result<T, E>;

impl CaptureError {
    /// Wraps a tiberius error raised while doing `context` (a short gerund phrase).
    pub fn from_tiberius(context: impl Into<String>, error: tiberius::error::Error) -> Self {
        let context = context.into();
        match error {
            tiberius::error::Error::Server(token) => CaptureError::Server {
                context,
                code: token.code(),
                message: token.message().to_string(),
            },
            other => CaptureError::Io {
                context,
                detail: other.to_string(),
            },
        }
    }

    /// Error 207 (invalid column name) while reading `table`: its columns changed under the
    /// read ([`CaptureError::ColumnsChanged`]); other errors unchanged.
    pub fn columns_changed(self, table: &str) -> Self {
        match self {
            CaptureError::Server {
                code: 207, message, ..
            } => CaptureError::ColumnsChanged {
                table: table.to_string(),
                detail: format!("SQL Server error 207: {message}"),
            },
            other => other,
        }
    }

    /// The SQL Server error number, for server errors.
    pub fn server_code(&self) -> Option<u32> {
        match self {
            CaptureError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// SQL Server error numbers that are worth retrying.
fn server_error_class(code: u32) -> ErrorClass {
    match code {
        // deadlock victim, lock request timeout, snapshot update conflict, resource shortage
        1205 | 1222 | 3960 | 8645 | 701 => ErrorClass::Transient,
        // database in transition / not currently available, server shutting down
        952 | 983 | 6005 | 40197 | 40501 | 40613 => ErrorClass::Connection,
        // 18456 login failed, 208 missing object, 313 LSN out of range, 229/230 permission,
        // 207 invalid column, 102 syntax, 3952 snapshot isolation not allowed, everything else
        _ => ErrorClass::Definite,
    }
}

impl Classify for CaptureError {
    fn class(&self) -> ErrorClass {
        match self {
            CaptureError::Connect { class, .. } => *class,
            CaptureError::Server { code, .. } => server_error_class(*code),
            CaptureError::Io { .. } => ErrorClass::Connection,
            CaptureError::ColumnsChanged { .. } => ErrorClass::Transient,
            CaptureError::Decode { .. }
            | CaptureError::InvalidRequest(_)
            | CaptureError::Precondition(_) => ErrorClass::Definite,
        }
    }
}

impl From<CaptureError> for tonic::Status {
    fn from(error: CaptureError) -> Self {
        tracing::warn!(error = %error, "capture request failed");
        let message = error.to_string();
        match (&error, error.class()) {
            (CaptureError::InvalidRequest(_), _) => tonic::Status::invalid_argument(message),
            (CaptureError::Server { code: 208, .. }, _) => tonic::Status::not_found(message),
            (CaptureError::ColumnsChanged { .. }, _) => tonic::Status::aborted(message),
            (_, ErrorClass::Definite) => tonic::Status::failed_precondition(message),
            (_, ErrorClass::Connection | ErrorClass::Transient) => {
                tonic::Status::unavailable(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlocks_retry_and_missing_objects_do_not() {
        let e = |code| CaptureError::Server {
            context: "x".into(),
            code,
            message: String::new(),
        };
        assert_eq!(e(1205).class(), ErrorClass::Transient);
        assert_eq!(e(1222).class(), ErrorClass::Transient);
        assert_eq!(e(18456).class(), ErrorClass::Definite);
        assert_eq!(e(208).class(), ErrorClass::Definite);
        assert_eq!(e(313).class(), ErrorClass::Definite);
        assert_eq!(e(229).class(), ErrorClass::Definite);
        assert_eq!(
            CaptureError::Io {
                context: "x".into(),
                detail: "reset".into()
            }
            .class(),
            ErrorClass::Connection
        );
    }

    #[test]
    fn a_column_gone_under_a_chunk_read_is_retried_with_the_table_named() {
        let gone = CaptureError::Server {
            context: "reading chunk 0 of shop.sales.audit_log".into(),
            code: 207,
            message: "Invalid column name 'c2'.".into(),
        }
        .columns_changed("shop.sales.audit_log");
        assert_eq!(gone.class(), ErrorClass::Transient);
        assert!(
            gone.to_string().contains("shop.sales.audit_log") && gone.to_string().contains("c2")
        );
        assert_eq!(tonic::Status::from(gone).code(), tonic::Code::Aborted);
        let other = CaptureError::Server {
            context: "x".into(),
            code: 208,
            message: String::new(),
        };
        assert_eq!(other.columns_changed("t").class(), ErrorClass::Definite);
    }
}
