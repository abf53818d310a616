//! Ephemeral PostgreSQL clusters for tests and benchmarks.
