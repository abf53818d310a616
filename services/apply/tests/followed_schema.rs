//! The source schema apply followed is recorded in the target's checkpoint schema in the
//! transaction that alters the table, and outranks the assignment's older schema when the
//! group starts again (an applier restart, or the group on another applier).

mod common;

use common::*;
use dbsync_apply::pg::checkpoint::{load_source_schemas, save_source_schema};
use dbsync_apply::stream::adopt_followed_schemas;
use dbsync_core::lsn::Lsn;
use dbsync_proto::v1::*;

fn schema(name: &str, columns: &[&str]) -> TableSchema {
    TableSchema {
        table: Some(TableRef {
            database: "shop".into(),
            schema: "dbo".into(),
            name: name.into(),
        }),
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut column = col(c, "int", 4, 10, 0, i > 0);
                column.column_id = i as i32 + 1;
                column
            })
            .collect(),
        key_columns: vec![columns[0].to_string()],
        ..Default::default()
    }
}

fn assignment(target: &TargetConnection, incremental: bool) -> Assignment {
    Assignment {
        task_id: TASK.into(),
        target: Some(target.clone()),
        incremental_sync: incremental,
        tables: ["Orders", "Items"]
            .iter()
            .map(|t| TablePlan {
                source: Some(schema(t, &["Id", "Qty"])),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn columns(a: &Assignment, table: usize) -> Vec<String> {
    a.tables[table]
        .source
        .as_ref()
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect()
}

#[tokio::test]
async fn a_recorded_schema_replaces_the_assignments_older_one() {
    let (target, client) = fresh_db("followed").await;
    let mut a = assignment(&target, true);
    adopt_followed_schemas(&mut a).await.unwrap();
    assert_eq!(columns(&a, 0), ["Id", "Qty"], "nothing recorded yet");

    // Recorded in a transaction that does not commit (the ALTER failed, or a crash): no record.
    let followed = schema("Orders", &["Id", "Quantity", "Note"]);
    let lsn = Lsn::from_u128(0x42);
    client.batch_execute("BEGIN").await.unwrap();
    save_source_schema(
        &client,
        TASK,
        "shop.dbo.Orders",
        &followed,
        lsn,
        "EXEC sp_rename",
    )
    .await
    .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    adopt_followed_schemas(&mut a).await.unwrap();
    assert_eq!(columns(&a, 0), ["Id", "Qty"]);

    client.batch_execute("BEGIN").await.unwrap();
    save_source_schema(
        &client,
        TASK,
        "shop.dbo.Orders",
        &followed,
        lsn,
        "EXEC sp_rename",
    )
    .await
    .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    adopt_followed_schemas(&mut a).await.unwrap();
    assert_eq!(columns(&a, 0), ["Id", "Quantity", "Note"]);
    assert_eq!(a.tables[0].source.as_ref(), Some(&followed));
    assert_eq!(
        columns(&a, 1),
        ["Id", "Qty"],
        "the other table keeps its plan"
    );

    // A later change replaces the record; other tasks do not see it.
    let later = schema("Orders", &["Id", "Quantity"]);
    save_source_schema(
        &client,
        TASK,
        "shop.dbo.Orders",
        &later,
        Lsn::from_u128(0x50),
        "",
    )
    .await
    .unwrap();
    let mut b = assignment(&target, true);
    adopt_followed_schemas(&mut b).await.unwrap();
    assert_eq!(columns(&b, 0), ["Id", "Quantity"]);
    assert_eq!(load_source_schemas(&client, TASK).await.unwrap().len(), 1);
    assert!(load_source_schemas(&client, "another-task")
        .await
        .unwrap()
        .is_empty());

    // Without incremental sync there is nothing to follow.
    let mut full_only = assignment(&target, false);
    adopt_followed_schemas(&mut full_only).await.unwrap();
    assert_eq!(columns(&full_only, 0), ["Id", "Qty"]);
}
