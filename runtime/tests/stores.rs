//! Every store passes the conformance suite; the SQLite store also keeps
//! its schema, its durability settings and the engine's state across
//! reopening the file.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use switchyard_runtime::store::{Durability, SqliteOptions};
use switchyard_runtime::testing::TestEngine;
use switchyard_runtime::{
    Engine, InstanceStatus, ManualClock, MemoryStore, SqliteStore, StoreError, conformance,
};

/// A path for a new database file under the target directory.
fn fresh_path(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stores");
    std::fs::create_dir_all(&dir).unwrap();
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let path = dir.join(format!("{name}-{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

#[tokio::test]
async fn the_memory_store_conforms() {
    conformance::run(MemoryStore::new).await;
}

#[tokio::test]
async fn the_sqlite_store_conforms() {
    conformance::run(|| SqliteStore::open(fresh_path("conformance")).unwrap()).await;
}

#[tokio::test]
async fn the_sqlite_store_conforms_with_normal_durability() {
    let options =
        SqliteOptions { durability: Durability::Normal, max_group: 2, ..SqliteOptions::default() };
    conformance::run(|| SqliteStore::open_with(fresh_path("normal"), options).unwrap()).await;
}

#[test]
fn the_sqlite_store_creates_its_schema_once_and_refuses_a_newer_one() {
    let path = fresh_path("schema");
    drop(SqliteStore::open(&path).unwrap());
    // Opening again finds the schema current and changes nothing.
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 1);
    let mode: String = connection.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    match SqliteStore::open(&path) {
        Err(StoreError::NewerSchema { found: 99, known: 1 }) => {}
        other => panic!("a newer schema was opened: {other:?}"),
    }
}

#[tokio::test]
async fn an_engine_on_sqlite_picks_up_where_the_last_one_stopped() {
    let path = fresh_path("restart");
    let clock = ManualClock::default();
    let first = orders_on(SqliteStore::open(&path).unwrap(), &clock);
    first.publish(Placed { order: 1, amount: 5 });
    first.publish(Placed { order: 2, amount: 6 });
    first.idle().await;
    drop(first);

    let second = orders_on(SqliteStore::open(&path).unwrap(), &clock);
    second.publish(Paid { order: 1 });
    clock.advance(HOUR);
    second.idle().await;
    assert_eq!(
        second.instance::<Order>(&1).await.unwrap(),
        Some(InstanceStatus::Completed { state: OrderState::Shipped })
    );
    assert_eq!(
        second.instance::<Order>(&2).await.unwrap(),
        Some(InstanceStatus::Running {
            state: OrderState::Open,
            data: OrderData { amount: 6, reminders: 1 }
        })
    );
    assert_eq!(second.stats().timers_fired, 1, "the timer of order 1 went with its completion");
}

fn orders_on(store: SqliteStore, clock: &ManualClock) -> Engine {
    Engine::builder()
        .store(store)
        .clock(clock.clone())
        .process::<Order>()
        .handle(|_: Ship, _| async { Ok(()) })
        .handle(|_: Nudge, _| async { Ok(()) })
        .build()
}

#[tokio::test]
async fn a_test_engine_can_restart_on_its_store() {
    let first = TestEngine::start(|b| b.process::<Order>().handle(|_: Nudge, _| async { Ok(()) }));
    first.engine.publish(Placed { order: 3, amount: 1 });
    first.engine.idle().await;
    let second = first.restart(|b| b.process::<Order>().handle(|_: Nudge, _| async { Ok(()) }));
    drop(first);
    second.advance(HOUR).await;
    assert_eq!(second.commands::<Nudge>(), [Nudge { order: 3, reminders: 1 }]);
}

/// A slot is a store's own: given to another memory store, even with the
/// same process and key, it leads nowhere, and the write goes by its key.
#[tokio::test]
async fn a_memory_store_does_not_write_through_another_stores_slot() {
    use switchyard_runtime::store::{Batch, CommitOutcome, InstanceWrite, Slot, Store};
    use switchyard_runtime::{Body, MessageId, Timestamp};

    let write = |expected: Option<u64>, slot: Option<Slot>| InstanceWrite {
        process: "Order",
        key: "\"a\"".into(),
        expected_version: expected,
        version: expected.unwrap_or(0) + 1,
        state: Body::value("Open".to_owned()),
        data: Body::value(0u64),
        completed_at: None,
        inbox: vec![MessageId::at(Timestamp::now())].into(),
        at: Timestamp::now(),
        outbox: Vec::new(),
        timers: Vec::new(),
        slot,
    };
    let commit = |store: &MemoryStore, write: InstanceWrite| {
        let store = store.clone();
        async move {
            let mut batch = Batch { instances: vec![write], dead_letters: Vec::new() };
            store.commit(&mut batch).await.unwrap().pop().unwrap()
        }
    };
    let (first, second) = (MemoryStore::new(), MemoryStore::new());
    let CommitOutcome::Committed { slot: Some(slot), .. } = commit(&first, write(None, None)).await
    else {
        panic!("the memory store gives a slot with an instance it creates")
    };
    // The second store has no such instance: a write expecting version 1
    // conflicts there, slot or not, and one that creates it creates it there.
    let outcome = commit(&second, write(Some(1), Some(slot.clone()))).await;
    assert_eq!(outcome, CommitOutcome::Conflict, "the write went through the first store's slot");
    let outcome = commit(&second, write(None, Some(slot))).await;
    assert!(matches!(outcome, CommitOutcome::Committed { .. }), "creating gave {outcome:?}");
    let versions = |store: MemoryStore| async move {
        let loaded = store.load("Order", vec!["\"a\"".into()]).await.unwrap();
        loaded.into_iter().flatten().map(|record| record.version).collect::<Vec<_>>()
    };
    assert_eq!(versions(first).await, vec![1], "the first store's instance moved");
    assert_eq!(versions(second).await, vec![1]);
}
