//! The seam on the source side: where changes come from ([`ChangeSource`]).
//!
//! Contract: a source yields [`ChangeMessage`]s of the tables it was opened for, strictly
//! after the position it was opened at, in commit order `(commit LSN, seqval, operation)`:
//! - a `TransactionFragment` per bounded piece of a source transaction, the last one with
//!   `last_fragment` set; a `ChangeTableColumns` precedes a table's first change from each
//!   capture instance (its values follow that column order);
//! - a `Progress { lsn }` when everything below `lsn` has been delivered (also while idle, so
//!   lag reads true); resume after it with `from_lsn = lsn - 1`;
//! - a `TableNeedsResnapshot` when a table's changes from the position are gone (retention
//!   cleanup); that table leaves the stream, the others continue.

use std::future::Future;

use dbsync_proto::v1::ChangeMessage;

use crate::error::Classify;
use crate::lsn::Position;

/// A stream of source changes in commit order.
pub trait ChangeSource: Send {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// The next message; waits (polling the source) until there is one.
    fn next_message(&mut self) -> impl Future<Output = Result<ChangeMessage, Self::Error>> + Send;

    /// Everything at or before this position has been yielded.
    fn position(&self) -> Position;
}
