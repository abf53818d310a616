//! Checkpoints in the target database (schema `dbsync`), written in the same transaction as
//! the data they describe, so that a crash at any point neither loses nor repeats anything:
//! - `dbsync.table_state`: per task and source table, the phase and the one-time steps done
//!   (schema, snapshot, post-load DDL) and the LSN at which the table's snapshot ended;
//! - `dbsync.chunks`: the chunk plan of each table (the proto `Chunk`, encoded once) and a
//!   done flag set in the COPY transaction of that chunk;
//! - `dbsync.stream_position`: per task and table group, `(commit_lsn, seqval, operation)` of
//!   the last committed change transaction, updated in that transaction;
//! - `dbsync.resnapshots`: per task and table, a re-snapshot in progress after a retention
//!   overrun (its side stream starts after `from_lsn`); while a row exists the group's main
//!   stream skips the table's changes. Written with the stream checkpoint, cleared in the
//!   transaction in which the table rejoins the main stream;
//! - `dbsync.source_schemas`: per task and source table, the source schema (the proto
//!   `TableSchema`) after the last source schema change that apply followed, written in the
//!   transaction that alters the target table. It outranks the assignment's (older) schema
//!   when the group starts again.

use std::collections::HashMap;

use dbsync_core::lsn::{Lsn, Position};
use dbsync_core::sink::CheckpointStore;
use dbsync_proto::v1::{Chunk, TableSchema};
use prost::Message;
use tokio_postgres::{Client, GenericClient};

use crate::error::{ApplyError, Result};

const SCHEMA_SQL: &str = "
    CREATE SCHEMA IF NOT EXISTS dbsync;
    CREATE TABLE IF NOT EXISTS dbsync.table_state (
        task_id text NOT NULL,
        source_table text NOT NULL,
        target_table text NOT NULL,
        phase text NOT NULL,
        schema_done boolean NOT NULL DEFAULT false,
        kept_existing boolean NOT NULL DEFAULT false,
        snapshot_done boolean NOT NULL DEFAULT false,
        post_load_done boolean NOT NULL DEFAULT false,
        snapshot_end_lsn bytea,
        rows_done bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, source_table)
    );
    CREATE TABLE IF NOT EXISTS dbsync.chunks (
        task_id text NOT NULL,
        source_table text NOT NULL,
        chunk_index integer NOT NULL,
        chunk bytea NOT NULL,
        done boolean NOT NULL DEFAULT false,
        rows bigint NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (task_id, source_table, chunk_index)
    );
    CREATE TABLE IF NOT EXISTS dbsync.stream_position (
        task_id text NOT NULL,
        group_id text NOT NULL,
        commit_lsn bytea NOT NULL,
        seqval bytea NOT NULL,
        operation integer NOT NULL,
        source_time_unix_micros bigint NOT NULL DEFAULT 0,
        changes_applied bigint NOT NULL DEFAULT 0,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, group_id)
    );
    CREATE TABLE IF NOT EXISTS dbsync.resnapshots (
        task_id text NOT NULL,
        group_id text NOT NULL,
        source_table text NOT NULL,
        from_lsn bytea NOT NULL,
        reason text NOT NULL DEFAULT '',
        started_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, source_table)
    );
    CREATE TABLE IF NOT EXISTS dbsync.source_schemas (
        task_id text NOT NULL,
        source_table text NOT NULL,
        source_schema bytea NOT NULL,
        lsn bytea NOT NULL,
        ddl_command text NOT NULL DEFAULT '',
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (task_id, source_table)
    );";

/// Creates the checkpoint schema once; an advisory lock keeps concurrent appliers from racing
/// on `CREATE TABLE IF NOT EXISTS`.
pub async fn ensure_schema(client: &mut Client) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| ApplyError::target("dbsync", "opening a transaction", e))?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(7262696713853)")
        .await
        .map_err(|e| ApplyError::target("dbsync", "locking the checkpoint schema", e))?;
    tx.batch_execute(SCHEMA_SQL)
        .await
        .map_err(|e| ApplyError::target("dbsync", "creating the checkpoint schema", e))?;
    tx.commit()
        .await
        .map_err(|e| ApplyError::target("dbsync", "creating the checkpoint schema", e))
}

/// What `dbsync.table_state` says about one table.
#[derive(Clone, Debug, Default)]
pub struct TableState {
    pub phase: String,
    pub schema_done: bool,
    /// Conflict mode `ignore` kept a table that existed before: no DDL is run on it.
    pub kept_existing: bool,
    pub snapshot_done: bool,
    pub post_load_done: bool,
    pub snapshot_end_lsn: Option<Lsn>,
    pub rows_done: u64,
}

pub async fn load_table_state(
    client: &impl GenericClient,
    task_id: &str,
    table: &str,
) -> Result<Option<TableState>> {
    let row = client
        .query_opt(
            "SELECT phase, schema_done, snapshot_done, post_load_done, snapshot_end_lsn, rows_done, kept_existing
               FROM dbsync.table_state WHERE task_id = $1 AND source_table = $2",
            &[&task_id, &table],
        )
        .await
        .map_err(|e| ApplyError::target(table, "reading its checkpoint", e))?;
    Ok(row.map(|r| TableState {
        phase: r.get(0),
        schema_done: r.get(1),
        snapshot_done: r.get(2),
        post_load_done: r.get(3),
        snapshot_end_lsn: r.get::<_, Option<&[u8]>>(4).and_then(Lsn::from_slice),
        rows_done: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
        kept_existing: r.get(6),
    }))
}

/// One step of a table's lifecycle, recorded (in the caller's transaction when given one).
#[derive(Clone, Copy, Debug)]
pub enum TableStep<'a> {
    Phase(&'a str),
    SchemaDone {
        kept_existing: bool,
    },
    SnapshotDone {
        end_lsn: Option<Lsn>,
    },
    PostLoadDone,
    /// Full reload after a retention overrun: forget the chunk plan and the snapshot.
    Reset,
}

pub async fn record_step(
    client: &impl GenericClient,
    task_id: &str,
    table: &str,
    target: &str,
    step: TableStep<'_>,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO dbsync.table_state (task_id, source_table, target_table, phase)
             VALUES ($1, $2, $3, 'pending') ON CONFLICT (task_id, source_table) DO NOTHING",
            &[&task_id, &table, &target],
        )
        .await
        .map_err(|e| ApplyError::target(table, "recording its state", e))?;
    let result = match step {
        TableStep::Phase(phase) => {
            client
                .execute(
                    "UPDATE dbsync.table_state SET phase = $3, updated_at = now() WHERE task_id = $1 AND source_table = $2",
                    &[&task_id, &table, &phase],
                )
                .await
        }
        TableStep::SchemaDone { kept_existing } => {
            client
                .execute(
                    "UPDATE dbsync.table_state SET schema_done = true, kept_existing = $3 WHERE task_id = $1 AND source_table = $2",
                    &[&task_id, &table, &kept_existing],
                )
                .await
        }
        TableStep::SnapshotDone { end_lsn } => {
            let lsn = end_lsn.map(|l| l.0.to_vec());
            client
                .execute(
                    "UPDATE dbsync.table_state SET snapshot_done = true, snapshot_end_lsn = $3,
                            rows_done = (SELECT coalesce(sum(rows), 0) FROM dbsync.chunks c
                                          WHERE c.task_id = $1 AND c.source_table = $2)::bigint
                      WHERE task_id = $1 AND source_table = $2",
                    &[&task_id, &table, &lsn],
                )
                .await
        }
        TableStep::PostLoadDone => {
            client
                .execute("UPDATE dbsync.table_state SET post_load_done = true WHERE task_id = $1 AND source_table = $2", &[&task_id, &table])
                .await
        }
        TableStep::Reset => {
            match client
                .execute("DELETE FROM dbsync.chunks WHERE task_id = $1 AND source_table = $2", &[&task_id, &table])
                .await
            {
                Err(e) => Err(e),
                Ok(_) => client
                .execute(
                    "UPDATE dbsync.table_state SET snapshot_done = false, snapshot_end_lsn = NULL, rows_done = 0
                      WHERE task_id = $1 AND source_table = $2",
                    &[&task_id, &table],
                )
                .await,
            }
        }
    };
    result
        .map(|_| ())
        .map_err(|e| ApplyError::target(table, "recording its state", e))
}

/// Marks a chunk done; called inside the chunk's COPY transaction.
pub async fn mark_chunk_done(
    client: &impl GenericClient,
    task_id: &str,
    table: &str,
    index: u32,
    rows: u64,
    bytes: u64,
) -> Result<()> {
    let n = client
        .execute(
            "UPDATE dbsync.chunks SET done = true, rows = $4, bytes = $5
              WHERE task_id = $1 AND source_table = $2 AND chunk_index = $3 AND NOT done",
            &[
                &task_id,
                &table,
                &(index as i32),
                &(rows as i64),
                &(bytes as i64),
            ],
        )
        .await
        .map_err(|e| ApplyError::target(table, "marking a chunk done", e))?;
    if n != 1 {
        // Another applier finished the same chunk: rolling back keeps its rows exactly once.
        return Err(ApplyError::Protocol {
            detail: format!("chunk {index} of {table} was already done or never planned"),
        });
    }
    Ok(())
}

/// Stores the stream position; called inside the transaction whose changes it covers.
pub async fn save_position(
    client: &impl GenericClient,
    task_id: &str,
    group_id: &str,
    position: &Position,
    source_time_unix_micros: i64,
    changes: u64,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO dbsync.stream_position AS p (task_id, group_id, commit_lsn, seqval, operation, source_time_unix_micros, changes_applied)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (task_id, group_id) DO UPDATE
                SET commit_lsn = EXCLUDED.commit_lsn, seqval = EXCLUDED.seqval, operation = EXCLUDED.operation,
                    source_time_unix_micros = EXCLUDED.source_time_unix_micros,
                    changes_applied = p.changes_applied + EXCLUDED.changes_applied, updated_at = now()",
            &[
                &task_id,
                &group_id,
                &&position.commit_lsn.0[..],
                &&position.seqval.0[..],
                &position.operation,
                &source_time_unix_micros,
                &(changes as i64),
            ],
        )
        .await
        .map_err(|e| ApplyError::target("dbsync.stream_position", "saving the stream position", e))?;
    Ok(())
}

/// The stream-position key of a table's side stream while it is re-snapshotted (not tied to
/// the group, so a table moved to another group keeps its side checkpoint).
pub fn side_group_id(table: &str) -> String {
    format!("resnapshot:{table}")
}

/// Starts (or restarts) a table's re-snapshot: records it with the LSN its side stream starts
/// after, empties the table and forgets its snapshot, chunk plan and side stream position.
/// Call inside a transaction so that a crash leaves either all of it or none.
pub async fn begin_resnapshot(
    client: &impl GenericClient,
    task_id: &str,
    group_id: &str,
    table: &str,
    target: &str,
    from_lsn: Lsn,
    reason: &str,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO dbsync.resnapshots (task_id, group_id, source_table, from_lsn, reason)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (task_id, source_table) DO UPDATE
                SET group_id = EXCLUDED.group_id, from_lsn = EXCLUDED.from_lsn,
                    reason = EXCLUDED.reason, started_at = now()",
            &[&task_id, &group_id, &table, &&from_lsn.0[..], &reason],
        )
        .await
        .map_err(|e| ApplyError::target(table, "recording its re-snapshot", e))?;
    client
        .execute(
            "DELETE FROM dbsync.stream_position WHERE task_id = $1 AND group_id = $2",
            &[&task_id, &side_group_id(table)],
        )
        .await
        .map_err(|e| ApplyError::target(table, "recording its re-snapshot", e))?;
    client
        .batch_execute(&format!("TRUNCATE {target}"))
        .await
        .map_err(|e| ApplyError::target(target, "truncating for a re-snapshot", e))?;
    record_step(client, task_id, table, target, TableStep::Reset).await
}

/// The re-snapshots in progress of a task: source table and the LSN its side stream starts
/// after.
pub async fn load_resnapshots(
    client: &impl GenericClient,
    task_id: &str,
) -> Result<Vec<(String, Lsn)>> {
    let rows = client
        .query(
            "SELECT source_table, from_lsn FROM dbsync.resnapshots WHERE task_id = $1",
            &[&task_id],
        )
        .await
        .map_err(|e| ApplyError::target("dbsync.resnapshots", "reading the re-snapshots", e))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<_, String>(0), Lsn::from_slice(r.get(1))?)))
        .collect())
}

/// The table rejoins the main stream: its re-snapshot record and side stream position go (in
/// the main stream's transaction).
pub async fn end_resnapshot(client: &impl GenericClient, task_id: &str, table: &str) -> Result<()> {
    client
        .execute(
            "DELETE FROM dbsync.resnapshots WHERE task_id = $1 AND source_table = $2",
            &[&task_id, &table],
        )
        .await
        .map_err(|e| ApplyError::target(table, "ending its re-snapshot", e))?;
    client
        .execute(
            "DELETE FROM dbsync.stream_position WHERE task_id = $1 AND group_id = $2",
            &[&task_id, &side_group_id(table)],
        )
        .await
        .map_err(|e| ApplyError::target(table, "ending its re-snapshot", e))?;
    Ok(())
}

/// Records the source schema a table has after a followed schema change at `lsn`; call in the
/// transaction that alters the target table.
pub async fn save_source_schema(
    client: &impl GenericClient,
    task_id: &str,
    table: &str,
    schema: &TableSchema,
    lsn: Lsn,
    ddl_command: &str,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO dbsync.source_schemas (task_id, source_table, source_schema, lsn, ddl_command)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (task_id, source_table) DO UPDATE
                SET source_schema = EXCLUDED.source_schema, lsn = EXCLUDED.lsn,
                    ddl_command = EXCLUDED.ddl_command, updated_at = now()",
            &[&task_id, &table, &schema.encode_to_vec(), &&lsn.0[..], &ddl_command],
        )
        .await
        .map_err(|e| ApplyError::target(table, "recording its new source schema", e))?;
    Ok(())
}

/// The source schemas recorded for a task's tables by [`save_source_schema`], keyed by
/// `database.schema.table`.
pub async fn load_source_schemas(
    client: &impl GenericClient,
    task_id: &str,
) -> Result<HashMap<String, TableSchema>> {
    let rows = client
        .query(
            "SELECT source_table, source_schema FROM dbsync.source_schemas WHERE task_id = $1",
            &[&task_id],
        )
        .await
        .map_err(|e| {
            ApplyError::target(
                "dbsync.source_schemas",
                "reading the followed source schemas",
                e,
            )
        })?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let table: String = r.get(0);
        let schema =
            TableSchema::decode(r.get::<_, &[u8]>(1)).map_err(|e| ApplyError::Protocol {
                detail: format!("stored source schema of {table} does not decode: {e}"),
            })?;
        out.insert(table, schema);
    }
    Ok(out)
}

/// The checkpoint store of one task on one connection.
pub struct PgCheckpoints<'a> {
    pub client: &'a Client,
    pub task_id: &'a str,
}

impl CheckpointStore for PgCheckpoints<'_> {
    type Error = ApplyError;

    async fn load_chunks(&self, table: &str) -> Result<Option<Vec<(Chunk, bool)>>> {
        let rows = self
            .client
            .query(
                "SELECT chunk, done FROM dbsync.chunks WHERE task_id = $1 AND source_table = $2 ORDER BY chunk_index",
                &[&self.task_id, &table],
            )
            .await
            .map_err(|e| ApplyError::target(table, "reading its chunk plan", e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let chunk = Chunk::decode(r.get::<_, &[u8]>(0)).map_err(|e| ApplyError::Protocol {
                detail: format!("stored chunk of {table} does not decode: {e}"),
            })?;
            out.push((chunk, r.get(1)));
        }
        Ok(Some(out))
    }

    async fn save_chunk_plan(&self, table: &str, chunks: &[Chunk]) -> Result<()> {
        let indexes: Vec<i32> = chunks.iter().map(|c| c.index as i32).collect();
        let encoded: Vec<Vec<u8>> = chunks.iter().map(|c| c.encode_to_vec()).collect();
        self.client
            .execute(
                "INSERT INTO dbsync.chunks (task_id, source_table, chunk_index, chunk)
                 SELECT $1, $2, i, c FROM unnest($3::int[], $4::bytea[]) AS u(i, c)
                 ON CONFLICT DO NOTHING",
                &[&self.task_id, &table, &indexes, &encoded],
            )
            .await
            .map_err(|e| ApplyError::target(table, "saving its chunk plan", e))?;
        Ok(())
    }

    async fn load_position(&self, group: &str) -> Result<Option<Position>> {
        let row = self
            .client
            .query_opt(
                "SELECT commit_lsn, seqval, operation FROM dbsync.stream_position WHERE task_id = $1 AND group_id = $2",
                &[&self.task_id, &group],
            )
            .await
            .map_err(|e| ApplyError::target("dbsync.stream_position", "reading the stream position", e))?;
        Ok(row.and_then(|r| {
            Some(Position {
                commit_lsn: Lsn::from_slice(r.get(0))?,
                seqval: Lsn::from_slice(r.get(1))?,
                operation: r.get(2),
            })
        }))
    }
}
