//! DDL on tracked tables (`cdc.ddl_history`, type propagation, dropping a source table drops
//! its instances) and database DDL triggers (`CREATE TRIGGER … ON DATABASE`) with
//! `EVENTDATA()`.

use std::sync::{Arc, Weak};

use super::tables::bracket;
use super::{procs, Cdc};
use crate::api::SqlError;
use crate::engine::catalog::TableDef;
use crate::engine::hooks::{DdlEvent, DdlEventType, DdlObserver};
use crate::engine::value::type_name;
use crate::engine::ProcContext;
use crate::types::Value;

pub(super) struct CdcDdlObserver(pub Weak<Cdc>);

impl DdlObserver for CdcDdlObserver {
    fn ddl(&self, ctx: &mut ProcContext<'_>, event: &DdlEvent) -> Result<(), SqlError> {
        // Change tables and metadata are CDC's own; neither history nor triggers see them.
        if event.schema.eq_ignore_ascii_case("cdc") {
            return Ok(());
        }
        if let Some(cdc) = self.0.upgrade() {
            track_ddl(&cdc, ctx, event)?;
        }
        fire_triggers(ctx, event)
    }
}

/// Column changes between two versions of a table: (added, dropped, altered) names.
fn column_changes(
    before: Option<&TableDef>,
    after: Option<&TableDef>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (Some(b), Some(a)) = (before, after) else {
        return Default::default();
    };
    let added = a
        .columns
        .iter()
        .filter(|c| !b.columns.iter().any(|o| o.column_id == c.column_id))
        .map(|c| c.name.clone())
        .collect();
    let dropped = b
        .columns
        .iter()
        .filter(|c| !a.columns.iter().any(|n| n.column_id == c.column_id))
        .map(|c| c.name.clone())
        .collect();
    let altered = a
        .columns
        .iter()
        .filter(|c| {
            b.columns
                .iter()
                .any(|o| o.column_id == c.column_id && (o.ty != c.ty || o.nullable != c.nullable))
        })
        .map(|c| c.name.clone())
        .collect();
    (added, dropped, altered)
}

fn track_ddl(cdc: &Cdc, ctx: &mut ProcContext<'_>, event: &DdlEvent) -> Result<(), SqlError> {
    let Some(state) = cdc.state(event.database_id) else {
        return Ok(());
    };
    let instances: Vec<_> = state
        .lock()
        .instances
        .iter()
        .filter(|i| i.def.source_object_id == event.object_id)
        .cloned()
        .collect();
    if instances.is_empty() {
        return Ok(());
    }
    match event.event_type {
        DdlEventType::DropTable => {
            for i in instances {
                procs::drop_instance(ctx, &state, &i.def.name)?;
            }
            Ok(())
        }
        DdlEventType::AlterTable | DdlEventType::Rename => {
            let after = event.after.as_deref();
            for entry in instances {
                // A captured column whose data type changed: the change table follows.
                let mut changed = Vec::new();
                if let Some(a) = after {
                    for c in &entry.def.columns {
                        if let Some(now) = a.columns.iter().find(|n| n.column_id == c.column_id) {
                            if now.ty != c.ty && now.computed.is_none() {
                                changed.push((c.name.clone(), now.ty.clone()));
                            }
                        }
                    }
                }
                for (name, ty) in &changed {
                    let ct_ty = if *ty == crate::types::SqlType::RowVersion {
                        crate::types::SqlType::Binary { len: 8 }
                    } else {
                        ty.clone()
                    };
                    ctx.run(
                        &format!(
                            "ALTER TABLE cdc.{} ALTER COLUMN {} {} NULL",
                            bracket(&entry.def.ct_table_name()),
                            bracket(name),
                            type_name(&ct_ty)
                        ),
                        &[],
                    )?;
                }
                if !changed.is_empty() {
                    let mut s = state.lock();
                    if let Some(e) = s
                        .instances
                        .iter_mut()
                        .find(|e| e.def.object_id == entry.def.object_id)
                    {
                        let mut def = (*e.def).clone();
                        for (name, ty) in &changed {
                            if let Some(c) = def
                                .columns
                                .iter_mut()
                                .find(|c| c.name.eq_ignore_ascii_case(name))
                            {
                                c.ty = ty.clone();
                            }
                        }
                        e.def = Arc::new(def);
                    }
                }
                ctx.run(
                    "INSERT INTO cdc.ddl_history (source_object_id, object_id, required_column_update, ddl_command, ddl_lsn, ddl_time) \
                     VALUES (@source, @ct, @required, @command, @lsn, @time)",
                    &[
                        ("@source", Value::Int(event.object_id)),
                        ("@ct", Value::Int(entry.def.object_id)),
                        ("@required", Value::Bit(!changed.is_empty())),
                        ("@command", super::tables::string(&event.command_text)),
                        ("@lsn", super::tables::lsn_value(event.lsn)),
                        ("@time", super::tables::datetime_value(event.time)),
                    ],
                )?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a trigger declared `FOR <events>` fires for `event`.
fn trigger_fires(events: &[String], event: DdlEventType) -> bool {
    use DdlEventType::*;
    if event == TruncateTable {
        // TRUNCATE TABLE raises no DDL event in SQL Server.
        return false;
    }
    events.iter().any(|e| match e.as_str() {
        "DDL_DATABASE_LEVEL_EVENTS" => true,
        "DDL_TABLE_VIEW_EVENTS" => matches!(
            event,
            CreateTable | AlterTable | DropTable | CreateIndex | DropIndex
        ),
        "DDL_TABLE_EVENTS" => matches!(event, CreateTable | AlterTable | DropTable),
        "DDL_INDEX_EVENTS" => matches!(event, CreateIndex | DropIndex),
        name => name == event.name(),
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

fn element(out: &mut String, name: &str, value: &str) {
    out.push_str(&format!("<{name}>{}</{name}>", xml_escape(value)));
}

/// The EVENTDATA() document of a DDL event, shaped as SQL Server's EVENT_INSTANCE.
pub fn event_xml(event: &DdlEvent, server_name: &str) -> String {
    let mut x = String::from("<EVENT_INSTANCE>");
    element(&mut x, "EventType", event.event_type.name());
    element(
        &mut x,
        "PostTime",
        &event.time.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
    );
    element(&mut x, "ServerName", server_name);
    element(&mut x, "LoginName", &event.login);
    element(&mut x, "UserName", "dbo");
    element(&mut x, "DatabaseName", &event.database);
    element(&mut x, "SchemaName", &event.schema);
    match (&event.event_type, &event.renamed_column) {
        (DdlEventType::Rename, Some((old, new))) => {
            element(&mut x, "ObjectName", old);
            element(&mut x, "ObjectType", "COLUMN");
            element(&mut x, "NewObjectName", new);
            element(&mut x, "TargetObjectName", &event.object_name);
            element(&mut x, "TargetObjectType", "TABLE");
        }
        (DdlEventType::Rename, None) => {
            let old = event
                .before
                .as_ref()
                .map_or(event.object_name.as_str(), |b| b.name.as_str());
            element(&mut x, "ObjectName", old);
            element(&mut x, "ObjectType", "TABLE");
            element(&mut x, "NewObjectName", &event.object_name);
        }
        _ => {
            element(&mut x, "ObjectName", &event.object_name);
            element(&mut x, "ObjectType", "TABLE");
        }
    }
    if event.event_type == DdlEventType::AlterTable {
        let (added, dropped, altered) =
            column_changes(event.before.as_deref(), event.after.as_deref());
        let mut list = String::new();
        for (tag, names) in [("Create", added), ("Drop", dropped), ("Alter", altered)] {
            if !names.is_empty() {
                list.push_str(&format!("<{tag}><Columns>"));
                for n in names {
                    element(&mut list, "Name", &n);
                }
                list.push_str(&format!("</Columns></{tag}>"));
            }
        }
        if !list.is_empty() {
            x.push_str(&format!(
                "<AlterTableActionList>{list}</AlterTableActionList>"
            ));
        }
    }
    x.push_str("<TSQLCommand><SetOptions ANSI_NULLS=\"ON\" ANSI_NULL_DEFAULT=\"ON\" ANSI_PADDING=\"ON\" QUOTED_IDENTIFIER=\"ON\" ENCRYPTED=\"FALSE\"/>");
    element(&mut x, "CommandText", &event.command_text);
    x.push_str("</TSQLCommand></EVENT_INSTANCE>");
    x
}

fn fire_triggers(ctx: &mut ProcContext<'_>, event: &DdlEvent) -> Result<(), SqlError> {
    let triggers = ctx.engine().ddl_triggers(&event.database);
    if triggers.is_empty() {
        return Ok(());
    }
    let server = ctx.engine().config().server_name.clone();
    for t in triggers
        .iter()
        .filter(|t| !t.disabled && trigger_fires(&t.events, event.event_type))
    {
        ctx.set_event_data(Some(event_xml(event, &server)));
        let result = ctx.run(&t.body, &[]);
        ctx.set_event_data(None);
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_groups() {
        let g = |e: &str| vec![e.to_string()];
        assert!(trigger_fires(
            &g("DDL_TABLE_EVENTS"),
            DdlEventType::AlterTable
        ));
        assert!(!trigger_fires(&g("DDL_TABLE_EVENTS"), DdlEventType::Rename));
        assert!(trigger_fires(&g("RENAME"), DdlEventType::Rename));
        assert!(trigger_fires(
            &g("DDL_DATABASE_LEVEL_EVENTS"),
            DdlEventType::CreateIndex
        ));
        assert!(!trigger_fires(
            &g("DDL_DATABASE_LEVEL_EVENTS"),
            DdlEventType::TruncateTable
        ));
        assert!(trigger_fires(&g("DROP_TABLE"), DdlEventType::DropTable));
        assert_eq!(xml_escape("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
