//! The seams on the target side: where changes are written ([`ChangeSink`]) and where the
//! progress that makes a restart exact is kept ([`CheckpointStore`]).
//!
//! Contract (modelled on supabase/etl's `Destination`): a sink makes a position durable only
//! together with the data it describes. After a crash, [`CheckpointStore::load_position`]
//! returns the position of the last committed batch, and the stream resumes strictly after
//! it, so no change is lost or applied twice.

use std::future::Future;

use dbsync_proto::v1::{Chunk, RowBatch, TransactionFragment};

use crate::error::Classify;
use crate::lsn::{Lsn, Position};

/// Writes snapshot chunks and change transactions into the target.
pub trait ChangeSink: Send {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// Writes one fragment of a source transaction. Fragments of one transaction arrive in
    /// order; the transaction (and the stream position after it) becomes visible in the target
    /// only with the fragment that has `last_fragment` set. Returns the position that is now
    /// durable, if this call committed.
    fn apply_fragment(
        &mut self,
        fragment: TransactionFragment,
    ) -> impl Future<Output = Result<Option<Position>, Self::Error>> + Send;

    /// The source has delivered everything below `lsn` (an idle stream's heartbeat): the sink
    /// may record the position without any data.
    fn advance(
        &mut self,
        lsn: Lsn,
        source_time_unix_micros: i64,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Makes everything written so far durable (commits complete transactions).
    fn flush(&mut self) -> impl Future<Output = Result<Option<Position>, Self::Error>> + Send;
}

/// Writes the rows of one snapshot chunk; the chunk counts as done only when `finish`
/// committed the rows and the chunk's done flag together.
pub trait ChunkSink: Send {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    fn write_batch(
        &mut self,
        batch: &RowBatch,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn finish(self) -> impl Future<Output = Result<u64, Self::Error>> + Send;
}

/// Durable state of one task in the target: chunk plans, done flags and stream positions.
pub trait CheckpointStore: Send + Sync {
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// The chunk plan of a table and which chunks are done, or `None` if it was never planned.
    fn load_chunks(
        &self,
        table: &str,
    ) -> impl Future<Output = Result<Option<Vec<(Chunk, bool)>>, Self::Error>> + Send;
    /// Stores the chunk plan of a table once (a later call keeps the first plan).
    fn save_chunk_plan(
        &self,
        table: &str,
        chunks: &[Chunk],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// The last committed stream position of a table group.
    fn load_position(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Option<Position>, Self::Error>> + Send;
}
