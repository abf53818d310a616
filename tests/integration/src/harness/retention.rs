//! Retention overrun on the stand-in: change data a stream still needs is cleaned up.

use dbsync_sqlserver_sim::sample::{SAMPLE_DATABASE, SAMPLE_TABLES};

use super::{StandIn, TestEnv};

/// Inserts `rows` orders of the sample database (customers 1–100), in statements of at most
/// 500 rows.
pub fn insert_orders(standin: &StandIn, rows: usize) -> anyhow::Result<()> {
    for start in (0..rows).step_by(500) {
        let values: Vec<String> = (start..rows.min(start + 500))
            .map(|i| {
                format!(
                    "({}, '2026-01-01', '2026-01-01T10:00:00+01:00', 'new', {}.25)",
                    1 + i % 100,
                    i % 1000
                )
            })
            .collect();
        standin.run(
            "shop",
            &format!(
                "INSERT INTO sales.orders (customer_id, order_date, ordered_at, status, total) VALUES {}",
                values.join(", ")
            ),
        )?;
    }
    Ok(())
}

/// Captures everything committed, then removes all change data of `schema.table` up to the
/// max LSN (`sys.sp_cdc_cleanup_change_table` with that low water mark): a stream behind it
/// can no longer read the table's changes.
pub fn clean_up_change_data(
    standin: &StandIn,
    database: &str,
    schema: &str,
    table: &str,
) -> anyhow::Result<()> {
    standin
        .cdc
        .scan(database, None)
        .map_err(|e| anyhow::anyhow!("capture scan: {e:?}"))?;
    let max = standin
        .cdc
        .max_lsn(database)
        .ok_or_else(|| anyhow::anyhow!("{database} has no max LSN"))?;
    let instance = standin
        .cdc
        .instances(database)
        .into_iter()
        .find(|(i, _)| i.source_schema == schema && i.source_name == table)
        .map(|(i, _)| i.name.clone())
        .ok_or_else(|| anyhow::anyhow!("{schema}.{table} has no capture instance"))?;
    standin
        .cdc
        .cleanup_to_watermark(database, Some(&instance), max)
        .map_err(|e| anyhow::anyhow!("cleanup of {instance}: {e:?}"))
}

/// Overruns the retention of `sales.orders` while the first applier is down: kills it, inserts
/// `orders` orders, runs `also` (statements on `shop`), removes the orders' change data and
/// restarts the applier, which finds its stream position of orders cleaned up.
pub async fn overrun_orders_retention(
    env: &mut TestEnv,
    orders: usize,
    also: &[&str],
) -> anyhow::Result<()> {
    env.appliers[0].kill();
    insert_orders(&env.standin, orders)?;
    for sql in also {
        env.standin.run("shop", sql)?;
    }
    clean_up_change_data(&env.standin, "shop", "sales", "orders")?;
    env.appliers[0].restart().await
}

/// A full + incremental task over `sales.customers` and `sales.orders` only (one FK group),
/// with the full-sync read rate capped so that loading orders takes seconds.
pub fn customers_and_orders_task(env: &TestEnv, name: &str, full_rows_per_second: u32) -> String {
    let excluded: Vec<String> = SAMPLE_TABLES
        .iter()
        .filter(|(s, t)| !(*s == "sales" && (*t == "customers" || *t == "orders")))
        .map(|(s, t)| format!("{SAMPLE_DATABASE}.{s}.{t}"))
        .collect();
    let excluded: Vec<&str> = excluded.iter().map(String::as_str).collect();
    env.sample_task_with(
        name,
        true,
        true,
        &excluded,
        "",
        &format!("throttle: {{ full: {{ rows_per_second: {full_rows_per_second} }} }}\n"),
    )
}
