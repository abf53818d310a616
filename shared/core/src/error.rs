//! How the runtime treats a failure: retry it or stop the task with its reason.

/// Every error in dbsync answers one question for the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Connection-level failures (network, server restart, failover): retried with back-off
    /// inside the task's connection retry window.
    Connection,
    /// Other failures that may pass (deadlock, lock timeout, throttled): retried inside the
    /// task's other-failure retry window.
    Transient,
    /// Cannot succeed by retrying (bad data, missing object, permissions, change data cleaned
    /// up): the table or task stops in a failed state with the reason.
    Definite,
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        !matches!(self, ErrorClass::Definite)
    }
}

/// Implemented by each crate's error type.
pub trait Classify {
    fn class(&self) -> ErrorClass;
}
