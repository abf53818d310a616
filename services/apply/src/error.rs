//! The apply service's one error type, classified for the retry policy.

use dbsync_core::error::{Classify, ErrorClass};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The target could not be reached or the connection broke.
    #[error("PostgreSQL connection to {target} failed: {detail}")]
    TargetConnection { target: String, detail: String },

    /// A statement failed on the target; `object` names the table or object involved.
    #[error("PostgreSQL error on {object} while {action}: {}", pg_detail(source))]
    Target {
        object: String,
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    /// The capture service could not be reached or its stream broke.
    #[error("capture service at {address} unavailable while {action}: {detail}")]
    CaptureUnavailable {
        address: String,
        action: &'static str,
        detail: String,
    },

    /// The capture service answered with an error that retrying will not fix.
    #[error("capture service rejected {action} for {object}: {detail}")]
    CaptureRejected {
        object: String,
        action: &'static str,
        detail: String,
    },

    /// A value cannot be written into its target column.
    #[error("cannot write a value into {table}.{column}: {detail}")]
    InvalidValue {
        table: String,
        column: String,
        detail: String,
    },

    /// The assignment or schema cannot be turned into target objects.
    #[error("invalid plan for {object}: {detail}")]
    InvalidPlan { object: String, detail: String },

    /// conflict_mode `precheck` found existing target tables.
    #[error("target tables already exist: {tables}; drop them, or set conflict_mode: ignore to keep them and their rows")]
    ConflictingTables { tables: String },

    /// The target role may not switch off triggers and FK checks for the session.
    #[error("the target role may not set session_replication_role = replica ({detail}); run as a superuser, or on PostgreSQL 15+ `GRANT SET ON PARAMETER session_replication_role TO <role>`")]
    ReplicationRoleDenied { detail: String },

    /// The stream is inconsistent (a fragment out of order, an unknown table index).
    #[error("change stream out of contract: {detail}")]
    Protocol { detail: String },

    #[error("coordinator at {address} unavailable: {detail}")]
    Coordinator { address: String, detail: String },

    /// The stream's resume position is below a capture instance's minimum LSN and the task
    /// says `incremental.on_retention_overrun: fail` (changes are never skipped).
    #[error("changes of {table} are gone from the source: the stream resumes from {requested} but the capture instance's minimum LSN is {min} ({reason}); set incremental.on_retention_overrun: resnapshot, or raise the CDC cleanup retention with sys.sp_cdc_change_job")]
    RetentionOverrun {
        table: String,
        requested: String,
        min: String,
        reason: String,
    },

    #[error("shut down")]
    Cancelled,
}

pub type Result<T, E = ApplyError> = std::result::Result<T, E>;

impl ApplyError {
    pub fn target(
        object: impl Into<String>,
        action: &'static str,
        source: tokio_postgres::Error,
    ) -> Self {
        ApplyError::Target {
            object: object.into(),
            action,
            source,
        }
    }

    pub fn capture_status(
        address: &str,
        object: &str,
        action: &'static str,
        status: tonic::Status,
    ) -> Self {
        use tonic::Code;
        match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal => ApplyError::CaptureUnavailable {
                address: address.to_string(),
                action,
                detail: format!("{}: {}", code_name(status.code()), status.message()),
            },
            _ => ApplyError::CaptureRejected {
                object: object.to_string(),
                action,
                detail: format!("{}: {}", code_name(status.code()), status.message()),
            },
        }
    }

    /// True when a PostgreSQL error says the session or server went away.
    fn pg_is_connection(e: &tokio_postgres::Error) -> bool {
        if e.is_closed() {
            return true;
        }
        match e.code() {
            Some(code) => {
                let c = code.code();
                // Class 08 connection exceptions, 57P01..03 admin/crash shutdown, 53 resources.
                c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"
            }
            // No SQLSTATE: an I/O or protocol failure below the SQL layer.
            None => e.as_db_error().is_none(),
        }
    }

    fn pg_is_transient(e: &tokio_postgres::Error) -> bool {
        matches!(
            e.code().map(|c| c.code()),
            // serialization failure, deadlock, lock not available, out of resources, query cancelled
            Some("40001" | "40P01" | "55P03" | "53000" | "53100" | "53200" | "53300" | "57014")
        )
    }
}

/// The server's message and SQLSTATE (tokio-postgres' own Display says only "db error").
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut out = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                out.push_str(": ");
                out.push_str(detail);
            }
            out
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid argument",
        DeadlineExceeded => "deadline exceeded",
        NotFound => "not found",
        AlreadyExists => "already exists",
        PermissionDenied => "permission denied",
        ResourceExhausted => "resource exhausted",
        FailedPrecondition => "failed precondition",
        Aborted => "aborted",
        OutOfRange => "out of range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data loss",
        Unauthenticated => "unauthenticated",
    }
}

impl Classify for ApplyError {
    fn class(&self) -> ErrorClass {
        match self {
            ApplyError::TargetConnection { .. }
            | ApplyError::CaptureUnavailable { .. }
            | ApplyError::Coordinator { .. } => ErrorClass::Connection,
            ApplyError::Target { source, .. } => {
                if Self::pg_is_connection(source) {
                    ErrorClass::Connection
                } else if Self::pg_is_transient(source) {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Definite
                }
            }
            ApplyError::Cancelled => ErrorClass::Transient,
            ApplyError::CaptureRejected { .. }
            | ApplyError::InvalidValue { .. }
            | ApplyError::InvalidPlan { .. }
            | ApplyError::ConflictingTables { .. }
            | ApplyError::ReplicationRoleDenied { .. }
            | ApplyError::Protocol { .. }
            | ApplyError::RetentionOverrun { .. } => ErrorClass::Definite,
        }
    }
}
