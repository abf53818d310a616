//! Hybrid mode's own objects on the source, and the DDL events they record.
//!
//! dbsync installs three objects per database (names from the task's prefix, `dbsync_` by
//! default) and removes them again on cleanup:
//! - `[dbo].[<prefix>ddl_history]`: one row per table DDL statement with its `EVENTDATA()`
//!   document. CDC is enabled on it, so each row's `__$start_lsn` is the commit LSN of the
//!   DDL's own transaction (a DDL trigger runs inside the statement's transaction): the stream
//!   sees every schema change at its exact place among the data changes, for every table (heap
//!   tables, tables without a key, tables CDC does not track yet), independent of
//!   `cdc.ddl_history` (which only covers tracked tables and only once the capture process has
//!   reached the DDL).
//! - `[<prefix>ddl_trigger]`: a database DDL trigger `FOR DDL_TABLE_EVENTS, RENAME` that
//!   inserts `EVENTDATA()` into the history table. It checks that the table exists, so a
//!   half-removed installation never makes a user's DDL fail.
//! - `[dbo].[<prefix>heartbeat]`: one row the change stream updates while the source is idle
//!   (CDC-enabled), so the high-water mark keeps moving and lag reads true.
//!
//! Docs: <https://learn.microsoft.com/sql/relational-databases/triggers/ddl-triggers>,
//! <https://learn.microsoft.com/sql/t-sql/functions/eventdata-transact-sql>

use dbsync_core::Lsn;
use dbsync_proto::v1::TableRef;
use tiberius::ColumnData;

use crate::error::Result;
use crate::mssql::client::SqlClient;
use crate::mssql::inspect::{self, TableRow};
use crate::setup::{capture_instance_name, enable_table_statement};
use crate::sql::{quote_ident, quote_string, table_name};

/// The names of dbsync's objects in one source database.
#[derive(Debug, Clone, PartialEq)]
pub struct HybridObjects {
    pub trigger: String,
    pub history: TableRef,
    pub heartbeat: TableRef,
}

impl HybridObjects {
    pub fn new(prefix: &str) -> HybridObjects {
        let table = |name: &str| TableRef {
            database: String::new(),
            schema: "dbo".into(),
            name: format!("{prefix}{name}"),
        };
        HybridObjects {
            trigger: format!("{prefix}ddl_trigger"),
            history: table("ddl_history"),
            heartbeat: table("heartbeat"),
        }
    }

    /// The capture instance of the history table.
    pub fn history_instance(&self, prefix: &str) -> String {
        capture_instance_name(prefix, &self.history.schema, &self.history.name)
    }

    pub fn heartbeat_instance(&self, prefix: &str) -> String {
        capture_instance_name(prefix, &self.heartbeat.schema, &self.heartbeat.name)
    }

    /// Is this table one of dbsync's own?
    pub fn owns(&self, schema: &str, table: &str) -> bool {
        [&self.history, &self.heartbeat]
            .iter()
            .any(|t| t.schema.eq_ignore_ascii_case(schema) && t.name.eq_ignore_ascii_case(table))
    }

    pub fn create_history_sql(&self) -> String {
        format!(
            "CREATE TABLE {} (id bigint IDENTITY(1,1) NOT NULL PRIMARY KEY, \
             event_time datetime2(3) NOT NULL, event_data nvarchar(max) NOT NULL)",
            table_name(&self.history)
        )
    }

    /// The trigger; `CREATE TRIGGER` must be the only statement of its batch.
    pub fn create_trigger_sql(&self) -> String {
        let history = table_name(&self.history);
        let object = quote_string(&format!(
            "{}.{}",
            quote_ident(&self.history.schema),
            quote_ident(&self.history.name)
        ));
        format!(
            "CREATE TRIGGER {} ON DATABASE FOR DDL_TABLE_EVENTS, RENAME AS \
             IF OBJECT_ID({object}) IS NOT NULL \
             INSERT INTO {history} (event_time, event_data) VALUES (SYSUTCDATETIME(), CAST(EVENTDATA() AS nvarchar(max)))",
            quote_ident(&self.trigger)
        )
    }

    pub fn drop_trigger_sql(&self) -> String {
        format!("DROP TRIGGER {} ON DATABASE", quote_ident(&self.trigger))
    }

    pub fn heartbeat_sql(&self) -> String {
        format!(
            "UPDATE {} SET beat = SYSUTCDATETIME() WHERE id = 1",
            table_name(&self.heartbeat)
        )
    }
}

/// Tries of a DROP TABLE that meets a lock (error 1222).
const DROP_ATTEMPTS: u32 = 10;

/// Lists the database's DDL triggers (`sys.triggers`, parent class 0 = database).
pub const DATABASE_TRIGGERS_QUERY: &str = "SELECT name FROM sys.triggers WHERE parent_class = 0";

async fn database_triggers(client: &mut SqlClient) -> Result<Vec<String>> {
    let rows = inspect::query_rows(
        client,
        "listing database DDL triggers",
        DATABASE_TRIGGERS_QUERY,
        &[],
    )
    .await?;
    rows.iter().map(|r| inspect::get_text(r, "name")).collect()
}

/// The prefixes of dbsync's installations in the database: the default one, and the prefix of
/// every `<prefix>ddl_trigger` DDL trigger, so a task's own tables are known whatever prefix
/// it chose (ReadSchema never lists them).
pub async fn installed_prefixes(client: &mut SqlClient) -> Result<Vec<String>> {
    const TRIGGER: &str = "ddl_trigger";
    let mut prefixes = vec![crate::setup::DEFAULT_PREFIX.to_string()];
    for name in database_triggers(client).await? {
        if name.to_ascii_lowercase().ends_with(TRIGGER) {
            prefixes.push(name[..name.len() - TRIGGER.len()].to_string());
        }
    }
    Ok(prefixes)
}

/// Is `schema.table` one of dbsync's own tables under any of `prefixes`?
pub fn is_own_table(prefixes: &[String], schema: &str, table: &str) -> bool {
    prefixes
        .iter()
        .any(|p| HybridObjects::new(p).owns(schema, table))
}

fn exists(tables: &[TableRow], t: &TableRef) -> bool {
    tables
        .iter()
        .any(|r| r.schema.eq_ignore_ascii_case(&t.schema) && r.name.eq_ignore_ascii_case(&t.name))
}

/// Creates whatever of the three objects is missing (history table and heartbeat with CDC
/// enabled, then the trigger). Returns notes for the operator.
pub async fn install(
    client: &mut SqlClient,
    database: &str,
    prefix: &str,
    existing: &[TableRow],
) -> Result<Vec<String>> {
    let o = HybridObjects::new(prefix);
    let mut notes = Vec::new();
    if !exists(existing, &o.heartbeat) {
        let name = table_name(&o.heartbeat);
        let context = format!(
            "creating {database}.{}.{}",
            o.heartbeat.schema, o.heartbeat.name
        );
        inspect::batch(
            client,
            &context,
            &format!(
                "CREATE TABLE {name} (id int NOT NULL PRIMARY KEY, beat datetime2(7) NOT NULL)"
            ),
        )
        .await?;
        inspect::batch(
            client,
            &context,
            &format!("INSERT INTO {name} (id, beat) VALUES (1, SYSUTCDATETIME())"),
        )
        .await?;
        let instance = o.heartbeat_instance(prefix);
        inspect::batch(
            client,
            &context,
            &enable_table_statement(&o.heartbeat, &instance),
        )
        .await?;
        notes.push(format!(
            "Created the heartbeat table {database}.{}.{} (CDC instance {instance}); dbsync updates its row while the source is idle",
            o.heartbeat.schema, o.heartbeat.name
        ));
    }
    if !exists(existing, &o.history) {
        let context = format!(
            "creating {database}.{}.{}",
            o.history.schema, o.history.name
        );
        inspect::batch(client, &context, &o.create_history_sql()).await?;
        let instance = o.history_instance(prefix);
        inspect::batch(
            client,
            &context,
            &enable_table_statement(&o.history, &instance),
        )
        .await?;
        notes.push(format!(
            "Created the DDL history table {database}.{}.{} (CDC instance {instance})",
            o.history.schema, o.history.name
        ));
    }
    if !database_triggers(client)
        .await?
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&o.trigger))
    {
        inspect::batch(
            client,
            &format!("creating the DDL trigger {} in {database}", o.trigger),
            &o.create_trigger_sql(),
        )
        .await?;
        notes.push(format!(
            "Created the database DDL trigger {} in {database}: it records every table DDL statement in {}.{}",
            o.trigger, o.history.schema, o.history.name
        ));
    }
    Ok(notes)
}

/// Drops the trigger first (so no DDL can fail on a missing table), then the two tables
/// (dropping a table also drops its capture instances). Returns what was removed.
pub async fn remove(client: &mut SqlClient, database: &str, prefix: &str) -> Result<Vec<String>> {
    let o = HybridObjects::new(prefix);
    let mut removed = Vec::new();
    if database_triggers(client)
        .await?
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&o.trigger))
    {
        inspect::batch(
            client,
            &format!("dropping the DDL trigger {}", o.trigger),
            &o.drop_trigger_sql(),
        )
        .await?;
        removed.push(format!("database DDL trigger {} on {database}", o.trigger));
    }
    let tables = inspect::tables(client).await?;
    for t in [&o.history, &o.heartbeat] {
        if !exists(&tables, t) {
            continue;
        }
        // A running change stream may be updating the heartbeat at this moment: retry a lock
        // timeout a few times.
        let context = format!("dropping {}.{}", t.schema, t.name);
        let statement = format!("DROP TABLE {}", table_name(t));
        let mut attempt = 0;
        loop {
            match inspect::batch(client, &context, &statement).await {
                Err(e) if e.server_code() == Some(1222) && attempt < DROP_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                other => break other?,
            }
        }
        removed.push(format!("table {database}.{}.{}", t.schema, t.name));
    }
    Ok(removed)
}

/// One DDL statement recorded by the trigger.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DdlEvent {
    /// Commit LSN of the DDL's transaction.
    pub lsn: Lsn,
    pub event_type: String,
    pub schema: String,
    /// The table (for a column rename: the table the column belongs to).
    pub table: String,
    pub added: Vec<String>,
    pub dropped: Vec<String>,
    pub altered: Vec<String>,
    /// A column rename: (old name, new name).
    pub renamed_column: Option<(String, String)>,
    pub command: String,
}

impl DdlEvent {
    /// Does the event change the table's columns (so a new capture instance is needed)?
    pub fn changes_columns(&self) -> bool {
        !self.added.is_empty()
            || !self.dropped.is_empty()
            || !self.altered.is_empty()
            || self.renamed_column.is_some()
    }
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(end) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..end];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=end]),
        }
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The text of the first `<tag>…</tag>` in `xml` (elements dbsync reads carry no attributes).
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// Every `<Name>` inside `<{action}><Columns>…</Columns></{action}>` of the action list.
fn action_columns(xml: &str, action: &str) -> Vec<String> {
    let Some(list) = element(xml, "AlterTableActionList") else {
        return Vec::new();
    };
    let Some(block) = element(list, action).and_then(|b| element(b, "Columns")) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut rest = block;
    while let Some(name) = element(rest, "Name") {
        names.push(unescape(name));
        let consumed = rest
            .find("</Name>")
            .map_or(rest.len(), |i| i + "</Name>".len());
        rest = &rest[consumed..];
    }
    names
}

/// Parses an `EVENT_INSTANCE` document.
pub fn parse_event(lsn: Lsn, xml: &str) -> DdlEvent {
    let get = |tag: &str| element(xml, tag).map(unescape).unwrap_or_default();
    let event_type = get("EventType");
    let object_type = get("ObjectType");
    let mut event = DdlEvent {
        lsn,
        schema: get("SchemaName"),
        table: get("ObjectName"),
        command: get("CommandText"),
        ..Default::default()
    };
    if event_type.eq_ignore_ascii_case("RENAME") && object_type.eq_ignore_ascii_case("COLUMN") {
        event.renamed_column = Some((event.table.clone(), get("NewObjectName")));
        event.table = get("TargetObjectName");
    } else if event_type.eq_ignore_ascii_case("ALTER_TABLE") {
        event.added = action_columns(xml, "Create");
        event.dropped = action_columns(xml, "Drop");
        event.altered = action_columns(xml, "Alter");
    }
    event.event_type = event_type;
    event
}

/// The DDL events committed in `[from, to]` (both within the history instance's validity
/// range), read through the history table's change function, in commit order.
pub async fn read_events(
    client: &mut SqlClient,
    history_instance: &str,
    from: Lsn,
    to: Lsn,
) -> Result<Vec<DdlEvent>> {
    let function = quote_ident(&format!("fn_cdc_get_all_changes_{history_instance}"));
    let query = format!(
        "SELECT [__$start_lsn], [event_data] FROM cdc.{function}(@P1, @P2, N'all') \
         WHERE [__$operation] = 2 ORDER BY [__$start_lsn], [__$seqval]"
    );
    let f = ColumnData::Binary(Some(from.as_bytes().to_vec().into()));
    let t = ColumnData::Binary(Some(to.as_bytes().to_vec().into()));
    let rows =
        inspect::query_rows(client, "reading dbsync's DDL history", &query, &[&f, &t]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(lsn) = inspect::get_lsn(r, "__$start_lsn")? {
            out.push(parse_event(lsn, &inspect::get_text(r, "event_data")?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_the_prefix() {
        let o = HybridObjects::new("acme_");
        assert_eq!(o.trigger, "acme_ddl_trigger");
        assert_eq!(o.history.name, "acme_ddl_history");
        assert_eq!(o.heartbeat.name, "acme_heartbeat");
        assert!(o.owns("DBO", "ACME_HEARTBEAT") && !o.owns("dbo", "orders"));
        assert_eq!(o.history_instance("acme_"), "acme_dbo_acme_ddl_history");
        assert_eq!(
            o.create_trigger_sql(),
            "CREATE TRIGGER [acme_ddl_trigger] ON DATABASE FOR DDL_TABLE_EVENTS, RENAME AS \
             IF OBJECT_ID(N'[dbo].[acme_ddl_history]') IS NOT NULL \
             INSERT INTO [dbo].[acme_ddl_history] (event_time, event_data) VALUES (SYSUTCDATETIME(), CAST(EVENTDATA() AS nvarchar(max)))"
        );
        assert_eq!(
            o.drop_trigger_sql(),
            "DROP TRIGGER [acme_ddl_trigger] ON DATABASE"
        );
    }

    #[test]
    fn event_documents_give_the_column_changes() {
        let lsn = Lsn::from_u128(42);
        let alter = "<EVENT_INSTANCE><EventType>ALTER_TABLE</EventType><SchemaName>sales</SchemaName>\
            <ObjectName>orders</ObjectName><ObjectType>TABLE</ObjectType><AlterTableActionList>\
            <Create><Columns><Name>note</Name><Name>a&amp;b</Name></Columns></Create>\
            <Drop><Columns><Name>old</Name></Columns></Drop></AlterTableActionList>\
            <TSQLCommand><SetOptions ANSI_NULLS=\"ON\"/><CommandText>ALTER TABLE sales.orders ADD note int, [a&amp;b] int; \
            ALTER TABLE x DROP COLUMN old</CommandText></TSQLCommand></EVENT_INSTANCE>";
        let e = parse_event(lsn, alter);
        assert_eq!(
            (e.schema.as_str(), e.table.as_str(), e.event_type.as_str()),
            ("sales", "orders", "ALTER_TABLE")
        );
        assert_eq!(e.added, vec!["note".to_string(), "a&b".to_string()]);
        assert_eq!(e.dropped, vec!["old".to_string()]);
        assert!(e.altered.is_empty() && e.changes_columns() && e.lsn == lsn);
        assert!(e
            .command
            .starts_with("ALTER TABLE sales.orders ADD note int, [a&b] int;"));

        let rename = "<EVENT_INSTANCE><EventType>RENAME</EventType><SchemaName>dbo</SchemaName><ObjectName>note</ObjectName>\
            <ObjectType>COLUMN</ObjectType><NewObjectName>remark</NewObjectName><TargetObjectName>x</TargetObjectName>\
            <TargetObjectType>TABLE</TargetObjectType></EVENT_INSTANCE>";
        let r = parse_event(lsn, rename);
        assert_eq!(r.table, "x");
        assert_eq!(r.renamed_column, Some(("note".into(), "remark".into())));

        let index = "<EVENT_INSTANCE><EventType>ALTER_TABLE</EventType><SchemaName>dbo</SchemaName>\
            <ObjectName>x</ObjectName><TSQLCommand><CommandText>ALTER TABLE x ADD CONSTRAINT c CHECK (a &gt; 0)</CommandText></TSQLCommand></EVENT_INSTANCE>";
        let i = parse_event(lsn, index);
        assert!(!i.changes_columns());
        assert_eq!(i.command, "ALTER TABLE x ADD CONSTRAINT c CHECK (a > 0)");
    }
}
