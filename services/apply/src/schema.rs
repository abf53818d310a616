//! Runs the DDL of [`crate::pg::ddl`] on the target, once per task and table (recorded in
//! `dbsync.table_state`), so a restarted task neither fails on its own tables nor repeats work.

use dbsync_proto::v1::SequenceSchema;
use tokio_postgres::Client;

use crate::error::{ApplyError, Result};
use crate::pg::catalog::table_exists;
use crate::pg::checkpoint::{load_table_state, record_step, TableStep};
use crate::pg::ddl::{foreign_keys, sequence_ddl, table_ddl, DdlOptions, KeyDdl};
use crate::plan::TableTarget;

/// Serializes apply's DDL across table groups and appliers (see `create_objects`).
const DDL_SESSION_LOCK: &str = "SELECT pg_advisory_lock(7262696713854)";
const DDL_SESSION_UNLOCK: &str = "SELECT pg_advisory_unlock(7262696713854)";

/// Conflict mode `ignore` keeps existing tables; anything else (`precheck`, the default)
/// refuses them before anything is written.
pub fn keeps_existing(conflict_mode: &str) -> bool {
    conflict_mode.eq_ignore_ascii_case("ignore")
}

/// Creates schemas, tables, keys, the key index, sequences and (NOT VALID) foreign keys of a
/// table group. Returns notes about what was not translated.
pub async fn create_objects(
    client: &mut Client,
    task_id: &str,
    conflict_mode: &str,
    targets: &[TableTarget],
    sequences: &[SequenceSchema],
    opts: &DdlOptions,
    defer_foreign_keys: bool,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    // 1. Decide per table, before writing anything.
    let mut to_create = Vec::new();
    let mut conflicts = Vec::new();
    for t in targets {
        let state = load_table_state(client, task_id, &t.source_name).await?;
        if state.as_ref().is_some_and(|s| s.schema_done) {
            continue;
        }
        if table_exists(client, t).await? {
            if keeps_existing(conflict_mode) {
                record_step(
                    client,
                    task_id,
                    &t.source_name,
                    &t.qualified,
                    TableStep::SchemaDone {
                        kept_existing: true,
                    },
                )
                .await?;
                notes.push(format!(
                    "{} exists on the target and is kept (conflict mode ignore)",
                    t.qualified
                ));
            } else {
                conflicts.push(t.qualified.clone());
            }
            continue;
        }
        to_create.push(t);
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::ConflictingTables {
            tables: conflicts.join(", "),
        });
    }
    // 2. + 3. Table groups run in parallel and share schemas, and `CREATE SCHEMA IF NOT
    //    EXISTS` is not safe against a concurrent creator. One advisory lock serializes apply's
    //    DDL; it is a session lock taken BEFORE each transaction begins, because a transaction
    //    that waits for a lock inside itself can keep a stale catalog cache and still collide.
    client
        .batch_execute(DDL_SESSION_LOCK)
        .await
        .map_err(|e| ApplyError::target("schema", "waiting for the DDL lock", e))?;
    let created = create_tables_and_sequences(
        client, task_id, &to_create, sequences, opts, targets, &mut notes,
    )
    .await;
    let unlocked = client.batch_execute(DDL_SESSION_UNLOCK).await;
    created?;
    unlocked.map_err(|e| ApplyError::target("schema", "releasing the DDL lock", e))?;
    // 4. Foreign keys NOT VALID, once every table of the group exists; when the target role
    //    may not switch FK checks off, they wait for the end of the data phases. Keys that
    //    come after the load take the FKs (which need the referenced key) with them.
    if opts.defer_keys {
        return Ok(log_notes(task_id, notes));
    }
    if defer_foreign_keys {
        notes.push(
            "foreign keys are deferred: the target role may not set session_replication_role"
                .into(),
        );
    }
    for t in to_create.iter().filter(|_| !defer_foreign_keys) {
        let (fks, fk_notes) = foreign_keys(t, targets);
        notes.extend(fk_notes.iter().map(|n| format!("{}: {n}", t.source_name)));
        for fk in fks {
            if !constraint_exists(client, t, &fk.name).await? {
                client
                    .batch_execute(&fk.create)
                    .await
                    .map_err(|e| ApplyError::target(&t.qualified, "creating a foreign key", e))?;
            }
        }
    }
    Ok(log_notes(task_id, notes))
}

fn log_notes(task_id: &str, notes: Vec<String>) -> Vec<String> {
    for n in &notes {
        tracing::warn!(task_id, "{n}");
    }
    notes
}

/// Steps 2 and 3 of [`create_objects`]; the caller holds the DDL lock.
async fn create_tables_and_sequences(
    client: &mut Client,
    task_id: &str,
    to_create: &[&TableTarget],
    sequences: &[SequenceSchema],
    opts: &DdlOptions,
    targets: &[TableTarget],
    notes: &mut Vec<String>,
) -> Result<()> {
    // Tables, each with its checkpoint in one transaction.
    for t in to_create {
        let ddl = table_ddl(t, opts).map_err(|detail| ApplyError::InvalidPlan {
            object: t.source_name.clone(),
            detail,
        })?;
        notes.extend(ddl.notes.iter().map(|n| format!("{}: {n}", t.source_name)));
        let tx = client
            .transaction()
            .await
            .map_err(|e| ApplyError::target(&t.qualified, "opening a transaction", e))?;
        // Collated columns need their collations first (idempotent, once per database).
        let statements: Vec<&String> = ddl
            .collations
            .iter()
            .chain([&ddl.create_schema, &ddl.create_table])
            .chain(ddl.key_index.as_ref())
            .collect();
        for sql in statements {
            tx.batch_execute(sql)
                .await
                .map_err(|e| ApplyError::target(&t.qualified, "creating the table", e))?;
        }
        record_step(
            &tx,
            task_id,
            &t.source_name,
            &t.qualified,
            TableStep::SchemaDone {
                kept_existing: false,
            },
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| ApplyError::target(&t.qualified, "creating the table", e))?;
    }
    // Sequences (idempotent: IF NOT EXISTS, setval).
    let capitalization = targets
        .first()
        .map_or("lower", |t| t.capitalization.as_str());
    create_sequences_locked(client, sequences, capitalization).await
}

async fn constraint_exists(client: &Client, t: &TableTarget, name: &str) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
            &[&t.qualified, &name],
        )
        .await
        .map_err(|e| ApplyError::target(&t.qualified, "looking up a constraint", e))?;
    Ok(row.get(0))
}

/// After the full sync: keys left out for the load (of every table first: foreign keys need
/// the referenced ones), then per table secondary and partial indexes, CHECKs, identity
/// restarts, missing FKs and FK validation. Tables kept in conflict mode `ignore` are left as
/// they are. `create_foreign_keys`: FKs not created yet are created now (they were deferred,
/// or wait for the keys); false only while a change stream that they could block follows.
pub async fn post_load(
    client: &mut Client,
    task_id: &str,
    targets: &[TableTarget],
    opts: &DdlOptions,
    create_foreign_keys: bool,
) -> Result<()> {
    let mut pending = Vec::new();
    for t in targets {
        let Some(state) = load_table_state(client, task_id, &t.source_name).await? else {
            continue;
        };
        if state.post_load_done || state.kept_existing || !state.schema_done {
            continue;
        }
        let ddl = table_ddl(t, opts).map_err(|detail| ApplyError::InvalidPlan {
            object: t.source_name.clone(),
            detail,
        })?;
        create_keys(client, t, &ddl.keys).await?;
        pending.push((t, ddl));
    }
    for (t, ddl) in pending {
        for sql in &ddl.post_load {
            if let Err(e) = client.batch_execute(sql).await {
                // Re-run after a crash: the object is already there.
                if matches!(e.code().map(|c| c.code()), Some("42P07" | "42710")) {
                    continue;
                }
                return Err(ApplyError::target(
                    &t.qualified,
                    "creating indexes and constraints after the load",
                    e,
                ));
            }
        }
        let (fks, _) = foreign_keys(t, targets);
        for fk in fks {
            if create_foreign_keys && !constraint_exists(client, t, &fk.name).await? {
                client
                    .batch_execute(&fk.create)
                    .await
                    .map_err(|e| ApplyError::target(&t.qualified, "creating a foreign key", e))?;
            }
            if let Some(validate) = &fk.validate {
                if constraint_exists(client, t, &fk.name).await? {
                    client.batch_execute(validate).await.map_err(|e| {
                        ApplyError::target(&t.qualified, "validating a foreign key", e)
                    })?;
                }
            }
        }
        record_step(
            client,
            task_id,
            &t.source_name,
            &t.qualified,
            TableStep::PostLoadDone,
        )
        .await?;
    }
    Ok(())
}

/// Sort memory for building keys after the load, unless the session already has more:
/// PostgreSQL's 64 MB default spills the sort of a few million keys to disk.
const KEY_BUILD_MEMORY: &str = "SELECT set_config('maintenance_work_mem', '256MB', false)
     WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes('256MB')";

/// Builds the keys of a loaded table ([`DdlOptions::defer_keys`]); those a resumed post-load
/// already built are skipped.
async fn create_keys(client: &Client, t: &TableTarget, keys: &[KeyDdl]) -> Result<()> {
    if !keys.is_empty() {
        client
            .batch_execute(KEY_BUILD_MEMORY)
            .await
            .map_err(|e| ApplyError::target(&t.qualified, "raising maintenance_work_mem", e))?;
    }
    for key in keys {
        if let Some(name) = &key.constraint {
            if constraint_exists(client, t, name).await? {
                continue;
            }
        }
        let started = std::time::Instant::now();
        client.batch_execute(&key.sql).await.map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                ApplyError::InvalidPlan {
                    object: t.qualified.clone(),
                    detail: format!(
                        "rows that are distinct on the source are equal on the target, so its key cannot be built \
                         ({e}); a case- or accent-insensitive column compares differently under the target's ICU \
                         collation: set objects.default_collations: true in the task to use the database default"
                    ),
                }
            } else {
                ApplyError::target(&t.qualified, "building its key after the load", e)
            }
        })?;
        tracing::info!(table = %t.qualified, elapsed_ms = started.elapsed().as_millis() as u64, "key built after the load");
    }
    Ok(())
}

/// Creates sequences with their current values; an existing one (another group, a restart)
/// is kept.
pub async fn create_sequences(
    client: &Client,
    sequences: &[SequenceSchema],
    capitalization: &str,
) -> Result<()> {
    if sequences.is_empty() {
        return Ok(());
    }
    // Sequence DDL creates schemas too: it must not race the table groups' DDL transactions,
    // so it holds the same advisory lock (a session lock here, released right after).
    client
        .batch_execute(DDL_SESSION_LOCK)
        .await
        .map_err(|e| ApplyError::target("sequences", "waiting for the DDL lock", e))?;
    let result = create_sequences_locked(client, sequences, capitalization).await;
    let unlocked = client.batch_execute(DDL_SESSION_UNLOCK).await;
    result?;
    unlocked.map_err(|e| ApplyError::target("sequences", "releasing the DDL lock", e))
}

async fn create_sequences_locked(
    client: &Client,
    sequences: &[SequenceSchema],
    capitalization: &str,
) -> Result<()> {
    for seq in sequences {
        for sql in sequence_ddl(seq, capitalization) {
            if let Err(e) = client.batch_execute(&sql).await {
                // A concurrent CREATE of the same sequence by another applier.
                if matches!(e.code().map(|c| c.code()), Some("42P07" | "23505")) {
                    continue;
                }
                return Err(ApplyError::target(&seq.name, "creating a sequence", e));
            }
        }
    }
    Ok(())
}
