//! A SQL Server stand-in: a TDS 7.4 server, a T-SQL subset and faithful change data capture.
//!
//! It exists because no SQL Server runs on the build machines. It is a test fixture and a demo
//! source; dbsync's capture service talks to it exactly as to a real server.

pub mod api;
pub mod engine;
pub mod sample;
pub mod server;
pub mod tds;
pub mod types;
pub mod workload;
