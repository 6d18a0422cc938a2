//! `SqliteStore::handle_once`: a command handler whose own table lives in
//! the store's file commits its work and the inbox row of the command in one
//! transaction. Run twice with one id, its work runs once; an error or a
//! panic in its work leaves neither its rows nor the inbox row, and the
//! store goes on working.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use switchyard_runtime::store::rusqlite::{self, Transaction, params};
use switchyard_runtime::{MessageId, SqliteStore, Store, StoreError, Timestamp};

const SCOPE: &str = "handler:Ship";

/// A new store in a new file under the target directory, with the
/// handler's own table beside the store's.
fn fresh_store(name: &str) -> (SqliteStore, PathBuf) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sqlite-handlers");
    std::fs::create_dir_all(&dir).unwrap();
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let path = dir.join(format!("{name}-{}-{n}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path).unwrap();
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch("CREATE TABLE shipments (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL)")
        .unwrap();
    (store, path)
}

fn id(n: u128) -> MessageId {
    MessageId::from_uuid(uuid::Uuid::from_u128(n))
}

/// The rows of the handler's table, and of the handler's inbox, as another
/// connection sees them: what was committed.
fn committed(path: &PathBuf) -> (Vec<(i64, i64)>, i64) {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut select = connection.prepare("SELECT id, order_id FROM shipments ORDER BY id").unwrap();
    let shipments = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let inbox = connection
        .query_row("SELECT count(*) FROM inbox WHERE process = ?1", [SCOPE], |row| row.get(0))
        .unwrap();
    (shipments, inbox)
}

/// The handler's work: ships order `order` as shipment `shipment`, and
/// counts its runs.
fn ship(
    runs: &Arc<AtomicU32>,
    shipment: i64,
    order: i64,
) -> impl FnOnce(&Transaction<'_>) -> rusqlite::Result<i64> + Send + 'static {
    let runs = runs.clone();
    move |transaction| {
        runs.fetch_add(1, Ordering::SeqCst);
        transaction.execute(
            "INSERT INTO shipments (id, order_id) VALUES (?1, ?2)",
            params![shipment, order],
        )?;
        Ok(shipment)
    }
}

#[tokio::test]
async fn the_work_and_the_inbox_row_commit_together_and_a_redelivery_skips_the_work() {
    let (store, path) = fresh_store("once");
    let runs = Arc::new(AtomicU32::new(0));
    let first = store.handle_once(SCOPE, id(1), Timestamp(1_000), ship(&runs, 10, 7)).await;
    assert_eq!(first.unwrap(), Some(10));
    assert_eq!(committed(&path), (vec![(10, 7)], 1));
    assert!(store.handled(SCOPE, id(1)).await.unwrap(), "`handled` does not see the row");

    let again = store.handle_once(SCOPE, id(1), Timestamp(2_000), ship(&runs, 11, 7)).await;
    assert_eq!(again.unwrap(), None, "a redelivered command was handled again");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the work ran for a redelivery");
    assert_eq!(committed(&path), (vec![(10, 7)], 1));
    // A row that `mark_handled` wrote keeps the work out just the same.
    assert!(store.mark_handled(SCOPE, id(2), Timestamp(3_000)).await.unwrap());
    let marked = store.handle_once(SCOPE, id(2), Timestamp(3_000), ship(&runs, 12, 8)).await;
    assert_eq!(marked.unwrap(), None);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_error_from_the_work_rolls_back_its_rows_and_the_inbox_row() {
    let (store, path) = fresh_store("error");
    let runs = Arc::new(AtomicU32::new(0));
    store.handle_once(SCOPE, id(1), Timestamp(1_000), ship(&runs, 10, 7)).await.unwrap();
    // Shipment 20 goes in, then shipment 10 again breaks the primary key.
    let refused = store
        .handle_once(SCOPE, id(2), Timestamp(2_000), |transaction| {
            transaction.execute("INSERT INTO shipments (id, order_id) VALUES (20, 8)", [])?;
            transaction.execute("INSERT INTO shipments (id, order_id) VALUES (10, 8)", [])?;
            Ok(())
        })
        .await;
    match refused {
        Err(StoreError::Failed(cause)) => {
            assert!(cause.to_string().contains("UNIQUE"), "the cause is lost: {cause}")
        }
        other => panic!("a refused write of the work gave {other:?}"),
    }
    assert_eq!(committed(&path), (vec![(10, 7)], 1), "the failed work left rows behind");
    assert!(!store.handled(SCOPE, id(2)).await.unwrap(), "the failed work left its inbox row");

    let retried = store.handle_once(SCOPE, id(2), Timestamp(3_000), ship(&runs, 20, 8)).await;
    assert_eq!(retried.unwrap(), Some(20), "the command was not handled again after an error");
    assert_eq!(committed(&path), (vec![(10, 7), (20, 8)], 2));
}

#[tokio::test]
async fn a_busy_database_in_the_work_is_an_outage_to_retry() {
    let (store, path) = fresh_store("busy");
    let busy = store
        .handle_once(SCOPE, id(1), Timestamp(1_000), |transaction| {
            transaction.execute("INSERT INTO shipments (id, order_id) VALUES (10, 7)", [])?;
            let code = rusqlite::ffi::SQLITE_BUSY;
            Err::<(), _>(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None))
        })
        .await;
    assert!(matches!(&busy, Err(error) if error.is_transient()), "a busy database gave {busy:?}");
    assert_eq!(committed(&path), (Vec::new(), 0));
}

#[tokio::test]
async fn a_panic_in_the_work_is_reported_rolls_back_and_the_store_goes_on() {
    let (store, path) = fresh_store("panic");
    let panicked: Result<Option<()>, _> = store
        .handle_once(SCOPE, id(1), Timestamp(1_000), |transaction| {
            transaction.execute("INSERT INTO shipments (id, order_id) VALUES (10, 7)", [])?;
            panic!("the carrier's code is wrong");
        })
        .await;
    let cause = match panicked {
        Err(StoreError::Failed(cause)) => cause.to_string(),
        other => panic!("a panic in the work gave {other:?}"),
    };
    assert!(cause.contains("the carrier's code is wrong"), "the panic's message is lost: {cause}");
    assert_eq!(committed(&path), (Vec::new(), 0), "the panicked work left rows behind");

    // The store's thread lives on: every kind of call is answered.
    assert!(!store.handled(SCOPE, id(1)).await.unwrap());
    let runs = Arc::new(AtomicU32::new(0));
    let retried = store.handle_once(SCOPE, id(1), Timestamp(2_000), ship(&runs, 10, 7)).await;
    assert_eq!(retried.unwrap(), Some(10));
    assert!(store.mark_handled(SCOPE, id(2), Timestamp(2_000)).await.unwrap());
    assert!(store.pending_outbox().await.unwrap().is_empty());
    assert_eq!(committed(&path), (vec![(10, 7)], 2));
}

/// A handler's transaction runs after the writes queued before it, which
/// its work sees, and the group after it goes on. The first call's work is
/// held on the store's thread (a test may block there; a handler must not)
/// until the next calls are queued behind it, so that they come up in one
/// wake: a row marked handled, then another handler's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_transaction_sees_the_writes_queued_before_it() {
    let (store, path) = fresh_store("order");
    let (started, running) = tokio::sync::oneshot::channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = store.clone();
    let first = tokio::spawn(async move {
        holder
            .handle_once(SCOPE, id(1), Timestamp(1_000), move |_| {
                started.send(()).expect("the test waits for the work");
                held.recv().expect("the test dropped the release");
                Ok(())
            })
            .await
    });
    running.await.unwrap();
    let marked = store.mark_handled(SCOPE, id(2), Timestamp(2_000));
    let mut second = Box::pin(store.handle_once(SCOPE, id(3), Timestamp(3_000), |transaction| {
        transaction.query_row("SELECT count(*) FROM inbox WHERE process = ?1", [SCOPE], |row| {
            row.get::<_, i64>(0)
        })
    }));
    // Polled once, the call is queued; it cannot be answered yet.
    let queued = tokio::time::timeout(std::time::Duration::ZERO, &mut second).await;
    assert!(queued.is_err(), "a call was answered while the store's thread was held");
    let after = store.mark_handled(SCOPE, id(4), Timestamp(4_000));
    release.send(()).unwrap();

    assert_eq!(first.await.unwrap().unwrap(), Some(()));
    assert!(marked.await.unwrap());
    // The rows of the first call, of the call marked before it, and its own.
    let rows = second.await.unwrap();
    assert_eq!(rows, Some(3), "the work did not see the row marked before it");
    assert!(after.await.unwrap());
    assert_eq!(committed(&path), (Vec::new(), 4));
}
