//! The dbsync change-event model, the traits at the seams (change source, change sink,
//! checkpoint store) and the error classes every crate uses. No I/O here.

pub mod error;
pub mod lsn;
pub mod pattern;
pub mod secret;
pub mod sink;
pub mod source;

pub use error::ErrorClass;
pub use lsn::{Lsn, Position};
pub use secret::Secret;
