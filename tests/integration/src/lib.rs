//! Test harness: the SQL Server stand-in, an ephemeral PostgreSQL and the three dbsync services
//! in-process, plus helpers the end-to-end suites, `dbsync-demo` and `dbsync-bench` share.

pub mod bench;
pub mod harness;

pub use harness::{EnvOptions, TestEnv};
