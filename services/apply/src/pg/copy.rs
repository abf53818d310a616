//! Loads one snapshot chunk with binary COPY, exactly once.
//!
//! 1. `BEGIN`; in conflict mode `ignore` a temporary staging table shaped like the written
//!    columns is created (`ON COMMIT DROP`).
//! 2. `COPY t (cols) FROM STDIN (FORMAT binary)`: rows are encoded field by field straight into
//!    one reused buffer (no per-row allocation) that is sent every [`FLUSH_BYTES`], so memory
//!    stays bounded whatever the chunk size.
//! 3. In `ignore` mode, `INSERT … SELECT … ON CONFLICT DO NOTHING` keeps existing target rows.
//! 4. The chunk's done flag is set and the transaction commits: rows and flag together, so a
//!    crash before the commit leaves neither and the chunk is loaded again on restart.

use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use dbsync_core::sink::ChunkSink;
use dbsync_proto::v1::{RowBatch, Value};
use dbsync_typemap::{begin_row, copy_header, copy_trailer, encode_value, PackedReader};
use futures::SinkExt;
use tokio_postgres::{Client, CopyInSink, Transaction};

use crate::error::{ApplyError, Result};
use crate::pg::catalog::ResolvedTable;
use crate::pg::checkpoint::mark_chunk_done;

/// Bytes buffered before they are sent to PostgreSQL.
pub const FLUSH_BYTES: usize = 256 * 1024;

const STAGE: &str = "dbsync_stage";

/// COPY statement for a table (or the staging table) and its written columns.
pub fn copy_statement(relation: &str, table: &ResolvedTable) -> String {
    format!(
        "COPY {relation} {} FROM STDIN (FORMAT binary)",
        table.column_list()
    )
}

/// The writer of one chunk inside its transaction.
pub struct ChunkWriter<'a> {
    tx: Transaction<'a>,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
    table: &'a ResolvedTable,
    task_id: &'a str,
    chunk_index: u32,
    keep_existing: bool,
    rows: u64,
    bytes: u64,
    /// The current row of a packed batch, its strings and byte vectors reused row after row.
    scratch: Vec<Value>,
}

impl<'a> ChunkWriter<'a> {
    /// Starts the chunk's transaction and COPY. `keep_existing` is conflict mode `ignore`.
    /// `task_id` empty: no chunk checkpoint (benchmarks, resnapshot of a single table).
    pub async fn begin(
        client: &'a mut Client,
        table: &'a ResolvedTable,
        task_id: &'a str,
        chunk_index: u32,
        keep_existing: bool,
    ) -> Result<ChunkWriter<'a>> {
        let name = table.target.qualified.as_str();
        let tx = client
            .transaction()
            .await
            .map_err(|e| ApplyError::target(name, "opening a transaction", e))?;
        let relation = if keep_existing {
            tx.batch_execute(&format!(
                "CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {} FROM {name} WITH NO DATA",
                &table.column_list()[1..table.column_list().len() - 1]
            ))
            .await
            .map_err(|e| ApplyError::target(name, "creating the staging table", e))?;
            STAGE.to_string()
        } else {
            name.to_string()
        };
        let sink = tx
            .copy_in(&copy_statement(&relation, table))
            .await
            .map_err(|e| ApplyError::target(name, "starting COPY", e))?;
        let mut buf = BytesMut::with_capacity(FLUSH_BYTES + 64 * 1024);
        copy_header(&mut buf);
        Ok(ChunkWriter {
            tx,
            sink: Box::pin(sink),
            buf,
            table,
            task_id,
            chunk_index,
            keep_existing,
            rows: 0,
            bytes: 0,
            scratch: Vec::new(),
        })
    }

    /// Encodes one source row (values in source column order) into the COPY buffer.
    #[inline]
    pub fn put_row(&mut self, values: &[Value]) -> Result<()> {
        let t = self.table;
        if values.len() != t.target.columns.len() {
            return Err(ApplyError::Protocol {
                detail: format!(
                    "a row of {} has {} values, the table has {} columns",
                    t.target.source_name,
                    values.len(),
                    t.target.columns.len()
                ),
            });
        }
        let values = &*crate::etl::transform_row(&t.target, values)?;
        begin_row(&mut self.buf, t.write.len() as u16);
        for c in &t.write {
            encode_value(&values[c.source_index], &c.ty, &mut self.buf).map_err(|e| {
                ApplyError::InvalidValue {
                    table: t.target.qualified.clone(),
                    column: c.quoted.clone(),
                    detail: e.to_string(),
                }
            })?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Writes a batch of either form (`rows`, or `packed_rows` decoded into a reused row),
    /// sending the buffer whenever it fills. Every row goes through [`Self::put_row`].
    pub async fn write_batch_rows(&mut self, batch: &RowBatch) -> Result<()> {
        for row in &batch.rows {
            self.put_row(&row.values)?;
            self.maybe_flush().await?;
        }
        if batch.packed_rows.is_empty() {
            return Ok(());
        }
        let malformed = |detail: String, t: &ResolvedTable| ApplyError::Protocol {
            detail: format!("a packed row batch of {}: {detail}", t.target.source_name),
        };
        let mut reader = PackedReader::new(&batch.packed_rows);
        let mut row = std::mem::take(&mut self.scratch);
        for _ in 0..batch.packed_row_count {
            reader
                .next_row(&mut row)
                .map_err(|e| malformed(e.to_string(), self.table))?;
            self.put_row(&row)?;
            self.maybe_flush().await?;
        }
        self.scratch = row;
        if !reader.is_empty() {
            return Err(malformed(
                format!("bytes left after {} rows", batch.packed_row_count),
                self.table,
            ));
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<()> {
        self.bytes += self.buf.len() as u64;
        let data = self.buf.split().freeze();
        self.sink
            .send(data)
            .await
            .map_err(|e| ApplyError::target(&self.table.target.qualified, "sending COPY data", e))
    }

    /// Sends the buffer when it is full.
    #[inline]
    pub async fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= FLUSH_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends COPY, merges from staging in `ignore` mode, marks the chunk done and commits.
    /// Returns (rows, bytes sent).
    pub async fn commit(mut self) -> Result<(u64, u64)> {
        copy_trailer(&mut self.buf);
        self.send().await?;
        let name = self.table.target.qualified.clone();
        self.sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| ApplyError::target(&name, "finishing COPY", e))?;
        if self.keep_existing {
            let cols = self.table.column_list();
            self.tx
                .batch_execute(&format!(
                    "INSERT INTO {name} {cols} SELECT {} FROM {STAGE} ON CONFLICT DO NOTHING",
                    &cols[1..cols.len() - 1]
                ))
                .await
                .map_err(|e| ApplyError::target(&name, "merging staged rows", e))?;
        }
        if !self.task_id.is_empty() {
            mark_chunk_done(
                &self.tx,
                self.task_id,
                &self.table.target.source_name,
                self.chunk_index,
                self.rows,
                self.bytes,
            )
            .await?;
        }
        self.tx
            .commit()
            .await
            .map_err(|e| ApplyError::target(&name, "committing a chunk", e))?;
        Ok((self.rows, self.bytes))
    }
}

impl ChunkSink for ChunkWriter<'_> {
    type Error = ApplyError;

    async fn write_batch(&mut self, batch: &RowBatch) -> Result<()> {
        self.write_batch_rows(batch).await
    }

    async fn finish(self) -> Result<u64> {
        self.commit().await.map(|(rows, _)| rows)
    }
}
