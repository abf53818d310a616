//! The dbsync command
