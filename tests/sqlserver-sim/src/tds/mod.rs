//! The TDS 7.4 wire layer: packet framing, the login handshake, token writers and the value
//! codec in both directions (results out; RPC parameters and bulk-load rows in).
//!
//! Everything here is synchronous byte manipulation; `crate::server` owns the sockets.

pub mod login;
pub mod packet;
pub mod reader;
pub mod requests;
pub mod tokens;
pub mod values;

/// A request the client sent that the stand-in cannot understand. The connection that sent
/// it is closed (a TDS stream cannot be resynchronised after a framing error).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed TDS packet: {0}")]
    Framing(String),
    #[error("malformed {what}: unexpected end of data at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("malformed {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("unsupported by the stand-in: {0}")]
    Unsupported(String),
    #[error("connection I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        WireError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
