//! Tracing, metrics and shutdown plumbing shared by every service
