//! Errors of the coordinator, their retry class and their gRPC status.

use dbsync_core::error::{Classify, ErrorClass};

use crate::spec::SpecError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    InvalidSpec(#[from] SpecError),
    #[error("No task named or with id '{0}': list tasks with `dbsync task list`")]
    TaskNotFound(String),
    #[error("A task named '{0}' already exists: choose another name or delete it first")]
    TaskExists(String),
    #[error("Task '{task}' is {state}: cannot {action}{hint}")]
    WrongState {
        task: String,
        state: &'static str,
        action: &'static str,
        hint: String,
    },
    #[error("No capture service is available for task '{task}': set capture_address in the task or start a capture worker that registers with this coordinator")]
    NoCapture { task: String },
    #[error("Capture service at {address} failed to {operation}: {message}")]
    Capture {
        address: String,
        operation: &'static str,
        message: String,
        code: tonic::Code,
    },
    #[error("Task '{task}' cannot be planned: {message}")]
    Plan { task: String, message: String },
    #[error(
        "Precheck of task '{task}' failed, fix these first and run the precheck again: {items}"
    )]
    PrecheckFailed { task: String, items: String },
    #[error("Unknown worker '{0}': register first")]
    UnknownWorker(String),
    #[error("Worker '{worker}' does not own table {table} of task '{task}' (the group moved to another applier): stop working on it")]
    NotOwner {
        worker: String,
        task: String,
        table: String,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for CoordinatorError {
    fn class(&self) -> ErrorClass {
        match self {
            CoordinatorError::NoCapture { .. } => ErrorClass::Connection,
            CoordinatorError::Capture { code, .. } => match code {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ErrorClass::Connection,
                tonic::Code::Aborted | tonic::Code::ResourceExhausted => ErrorClass::Transient,
                _ => ErrorClass::Definite,
            },
            CoordinatorError::Store(_) => ErrorClass::Transient,
            _ => ErrorClass::Definite,
        }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(e: CoordinatorError) -> tonic::Status {
        let message = e.to_string();
        match &e {
            CoordinatorError::InvalidSpec(_)
            | CoordinatorError::InvalidArgument(_)
            | CoordinatorError::Plan { .. } => tonic::Status::invalid_argument(message),
            CoordinatorError::TaskNotFound(_) | CoordinatorError::UnknownWorker(_) => {
                tonic::Status::not_found(message)
            }
            CoordinatorError::TaskExists(_) => tonic::Status::already_exists(message),
            CoordinatorError::WrongState { .. }
            | CoordinatorError::PrecheckFailed { .. }
            | CoordinatorError::NotOwner { .. } => tonic::Status::failed_precondition(message),
            CoordinatorError::NoCapture { .. } => tonic::Status::unavailable(message),
            CoordinatorError::Capture { code, .. } => tonic::Status::new(*code, message),
            CoordinatorError::Store(_) => {
                tracing::error!(error = %e, "store failure");
                tonic::Status::internal(message)
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, CoordinatorError>;
