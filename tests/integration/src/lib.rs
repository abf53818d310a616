//! Test harness: ephemeral PostgreSQL, in-process services, end-to-end suites and benchmarks
