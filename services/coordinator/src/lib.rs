//! The coordinator: tasks, prechecks, assignments, throttles and progress
