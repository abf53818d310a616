//! The coordinator: tasks, prechecks, assignments, throttles and progress.

pub mod alert;
pub mod spec;
