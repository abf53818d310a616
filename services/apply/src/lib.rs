//! The apply service: writes schemas, snapshot chunks and changes into PostgreSQL.

pub mod error;
pub mod pg;
pub mod plan;

pub use error::ApplyError;
