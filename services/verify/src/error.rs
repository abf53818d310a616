//! The verification crate's one error type, classified for the retry policy.

use dbsync_apply::ApplyError;
use dbsync_core::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The request cannot be verified as given (a plan without a source schema, a bad mode).
    #[error("cannot verify {object}: {detail}")]
    InvalidRequest { object: String, detail: String },

    /// The capture service failed a call; `code` tells whether retrying can help.
    #[error("capture service failed while {action} for {table}: {message}")]
    Capture {
        table: String,
        action: &'static str,
        code: tonic::Code,
        message: String,
    },

    /// A query on the target failed.
    #[error("PostgreSQL error on {object} while {action}: {}", pg_detail(source))]
    Target {
        object: String,
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// Connecting to the target or the capture service, or resolving the target table.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl VerifyError {
    pub(crate) fn target(
        object: &str,
        action: &'static str,
        source: tokio_postgres::Error,
    ) -> Self {
        VerifyError::Target {
            object: object.to_string(),
            action,
            source,
        }
    }

    pub(crate) fn capture(table: &str, action: &'static str, status: tonic::Status) -> Self {
        VerifyError::Capture {
            table: table.to_string(),
            action,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

impl Classify for VerifyError {
    fn class(&self) -> ErrorClass {
        match self {
            VerifyError::InvalidRequest { .. } => ErrorClass::Definite,
            VerifyError::Capture { code, .. } => match code {
                tonic::Code::Unavailable | tonic::Code::Cancelled => ErrorClass::Connection,
                tonic::Code::DeadlineExceeded
                | tonic::Code::ResourceExhausted
                | tonic::Code::Aborted
                | tonic::Code::Internal => ErrorClass::Transient,
                _ => ErrorClass::Definite,
            },
            VerifyError::Target { source, .. } => {
                if source.is_closed() || source.as_db_error().is_none() {
                    ErrorClass::Connection
                } else {
                    ErrorClass::Transient
                }
            }
            VerifyError::Apply(e) => e.class(),
        }
    }
}

pub type Result<T, E = VerifyError> = std::result::Result<T, E>;
