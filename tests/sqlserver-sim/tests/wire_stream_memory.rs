//! Memory of a streamed SELECT: the engine's memory grows with the rows it holds, not with
//! the size of a result it streams. A counting allocator (this test binary only) measures the
//! live heap of server and client together while a whole table streams to tiberius.

mod wire_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dbsync_sqlserver_sim::engine::{Engine, EngineConfig};
use dbsync_sqlserver_sim::server::Server;
use dbsync_sqlserver_sim::types::Value;
use futures_util::TryStreamExt;
use wire_support::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_result_does_not_grow_memory_with_its_size() {
    let rows: i64 = 200_000;
    let engine_config = EngineConfig::default();
    let password = engine_config.sa_password.clone();
    let engine = Engine::new(engine_config);
    engine
        .run(
            "master",
            "CREATE DATABASE mem; USE mem; CREATE TABLE dbo.t (id bigint NOT NULL PRIMARY KEY, \
             customer_id int NOT NULL, name nvarchar(50) NOT NULL, amount decimal(18,2) NOT NULL, \
             created_at datetime2(7) NOT NULL, active bit NOT NULL, note nvarchar(100) NULL)",
        )
        .unwrap();
    let empty = LIVE.load(Ordering::Relaxed);
    for lo in (0..rows).step_by(50_000) {
        let data: Vec<Vec<Value>> = (lo..lo + 50_000)
            .map(|i| {
                vec![
                    Value::BigInt(i),
                    Value::Int((i % 10_000) as i32),
                    s(&format!("customer name {i}")),
                    Value::Decimal(i as i128 * 37 % 10_000_000, 2),
                    Value::DateTime2 {
                        days: 738_000 + (i % 1000) as i32,
                        ticks: (i as u64 % 86_400) * 10_000_000,
                    },
                    Value::Bit(i % 2 == 0),
                    s(&format!("note {i}")),
                ]
            })
            .collect();
        engine.insert_rows("mem", "dbo", "t", data).unwrap();
    }
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(empty);

    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = Server::start(addr, Arc::new(engine)).await.unwrap();
    let mut cfg = config(server.addr, &password);
    cfg.database("mem");
    let mut client = connect_with(server.addr, cfg).await.unwrap();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut stream = client
        .simple_query("SELECT id, customer_id, name, amount, created_at, active, note FROM dbo.t")
        .await
        .unwrap()
        .into_row_stream();
    let (mut count, mut checksum) = (0i64, 0i64);
    while let Some(row) = stream.try_next().await.unwrap() {
        checksum += row.get::<i64, _>(0).unwrap();
        count += 1;
    }
    let grown = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert_eq!(count, rows);
    assert_eq!(checksum, rows * (rows - 1) / 2);
    println!(
        "live heap: {} MiB holding {rows} rows; streaming them all added at most {:.1} MiB",
        held / MIB,
        grown as f64 / MIB as f64
    );
    assert!(
        held > 20 * MIB,
        "the table should take real memory ({held} bytes)"
    );
    // A materialized result would add about as much as the table holds; the stream only
    // holds packets in flight (a 32 KiB chunk channel of depth 4, socket buffers, tiberius).
    assert!(
        grown < 8 * MIB,
        "streaming {rows} rows added {grown} bytes of heap (the table holds {held})"
    );
}
