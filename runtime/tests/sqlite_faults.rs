//! The SQLite store under real faults: a file it cannot write, a full disk,
//! many openers of one new file at once, a write that SQLite refuses on its
//! own, and bodies that are not UTF-8. Each fault is made for real (file
//! attributes, a small tmpfs, a trigger, threads racing on one file), and
//! each test shows what the store answers while it lasts and that the same
//! store writes again, with nothing applied twice, once it is gone.
//!
//! The engine runs on a file it cannot write too: it holds its messages,
//! dead-letters none of them, and handles each once when the file is
//! writable again, with no restart.
//!
//! Making a file unwritable needs `chattr +i` as root (root ignores file
//! modes) or `chmod` as anyone else; filling a disk needs a tmpfs, which
//! only root can mount. Every such change is undone by a guard's `Drop`, so
//! that a failing test leaves no immutable file and no mount behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use switchyard_runtime::store::{
    Batch, CommitOutcome, Durability, InstanceWrite, Letter, NewDeadLetter, SqliteOptions, Store,
};
use switchyard_runtime::{
    Body, Envelope, MessageId, MessageKind, SqliteStore, StoreError, Timestamp,
};

const P: &str = "Order";

/// How long a test waits for the store to write again once a fault is
/// gone. The store retries its connection with a backoff of at most a
/// fraction of a second; this only bounds a test that would otherwise hang.
const RECOVERY: Duration = Duration::from_secs(10);

/// A new empty directory under the target directory.
fn fresh_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("sqlite-faults")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn id(n: u128) -> MessageId {
    MessageId::from_uuid(uuid::Uuid::from_u128(n))
}

fn key(text: &str) -> Arc<str> {
    Arc::from(format!("\"{text}\""))
}

/// A write that creates instance `key_text`, handles message `n` and sends
/// one command with `body`.
fn create(key_text: &str, n: u128, body: Body) -> InstanceWrite {
    InstanceWrite {
        process: P,
        key: key(key_text),
        expected_version: None,
        version: 1,
        state: Body::value("Open".to_owned()),
        data: Body::value(vec![n as u64]),
        completed_at: None,
        inbox: vec![id(n)].into(),
        at: Timestamp(1_000),
        outbox: vec![command(n + 1_000, body)],
        timers: Vec::new(),
        slot: None,
    }
}

fn command(n: u128, body: Body) -> Envelope {
    Envelope {
        id: id(n),
        name: "Ship".into(),
        kind: MessageKind::Command,
        body,
        causation: None,
        time: Timestamp(2_000),
    }
}

fn json(text: &str) -> Body {
    Body::Json(Arc::from(text.as_bytes()))
}

/// The bytes of a body as a store gives it back.
fn bytes(body: &Body) -> Vec<u8> {
    match body {
        Body::Json(bytes) => bytes.to_vec(),
        Body::Value(value) => value.to_json().unwrap(),
    }
}

async fn commit(
    store: &SqliteStore,
    writes: Vec<InstanceWrite>,
) -> Result<Vec<CommitOutcome>, StoreError> {
    let mut batch = Batch { instances: writes, dead_letters: Vec::new() };
    store.commit(&mut batch).await
}

/// Commits the writes `make` makes until the store takes them, giving up
/// after [`RECOVERY`]. Only `Unavailable` is worth another try.
async fn commit_once_available(
    store: &SqliteStore,
    make: impl Fn() -> Vec<InstanceWrite>,
) -> Vec<CommitOutcome> {
    let deadline = Instant::now() + RECOVERY;
    loop {
        match commit(store, make()).await {
            Ok(outcomes) => return outcomes,
            Err(StoreError::Unavailable(cause)) if Instant::now() < deadline => {
                tracing::debug!(%cause, "still unavailable");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("the store did not write again once the fault was gone: {other}"),
        }
    }
}

async fn versions(store: &SqliteStore, keys: &[&str]) -> Vec<Option<u64>> {
    let keys = keys.iter().map(|k| key(k)).collect();
    let loaded = store.load(P, keys).await.unwrap();
    loaded.into_iter().map(|record| record.map(|r| r.version)).collect()
}

async fn outbox_ids(store: &SqliteStore) -> Vec<MessageId> {
    let rows = store.pending_outbox().await.unwrap();
    rows.into_iter().map(|row| row.message.id).collect()
}

fn committed(outcomes: &[CommitOutcome]) -> bool {
    outcomes.iter().all(|outcome| matches!(outcome, CommitOutcome::Committed { .. }))
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

fn run(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).status().is_ok_and(|status| status.success())
}

/// Files this process cannot open for writing until the guard is dropped:
/// immutable (`chattr +i`) as root, read-only by mode otherwise.
struct Unwritable {
    paths: Vec<PathBuf>,
    immutable: bool,
}

impl Unwritable {
    fn new(paths: &[&Path]) -> Unwritable {
        let paths: Vec<PathBuf> = paths.iter().map(|path| path.to_path_buf()).collect();
        if is_root() {
            let mut guard = Unwritable { paths: Vec::new(), immutable: true };
            for path in &paths {
                // Kept before the change, so that a partial failure is undone too.
                guard.paths.push(path.clone());
                let made = run("chattr", &["+i", path.to_str().unwrap()]);
                assert!(made, "root ignores file modes, and `chattr +i {}` failed", path.display());
            }
            guard
        } else {
            for path in &paths {
                let mut permissions = std::fs::metadata(path).unwrap().permissions();
                permissions.set_readonly(true);
                std::fs::set_permissions(path, permissions).unwrap();
            }
            Unwritable { paths, immutable: false }
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        for path in &self.paths {
            if self.immutable {
                run("chattr", &["-i", path.to_str().unwrap()]);
            } else if let Ok(metadata) = std::fs::metadata(path) {
                let mut permissions = metadata.permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                permissions.set_readonly(false);
                let _ = std::fs::set_permissions(path, permissions);
            }
        }
    }
}

/// A small tmpfs mounted on a directory until dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` when this process cannot mount (it is not root).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let options = format!("size={size}");
        let mounted =
            run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", dir.to_str().unwrap()]);
        mounted.then(|| Tmpfs { dir: dir.to_path_buf() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let dir = self.dir.to_str().unwrap();
        // A store's thread may still hold its files for a moment: detach
        // lazily rather than leave the mount behind.
        if !run("umount", &[dir]) {
            run("umount", &["-l", dir]);
        }
    }
}

/// Waits until the store's thread has closed the file: the last connection
/// to close a WAL database checkpoints it and removes the `-wal` file.
fn wait_closed(path: &Path) {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let deadline = Instant::now() + RECOVERY;
    while wal.exists() {
        assert!(Instant::now() < deadline, "the store never closed {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SQLite opens a file it cannot write read-only, without saying so, and
/// such a connection stays read-only. The store must answer reads from it,
/// answer writes with `Unavailable` and apply none of them, and write
/// again, without being opened anew, once the file is writable.
#[tokio::test]
async fn a_store_opened_on_an_unwritable_file_writes_once_the_file_is_writable() {
    let path = fresh_dir("readonly").join("store.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        let outcomes = commit(&store, vec![create("a", 1, json("1"))]).await.unwrap();
        assert!(committed(&outcomes), "the first write gave {outcomes:?}");
    }
    wait_closed(&path);

    // The database file alone: the store makes its `-wal` and `-shm` anew
    // beside it. A `-shm` made immutable would not do: SQLite maps it in
    // memory, and a write to the mapping of an immutable file is a bus error.
    let unwritable = Unwritable::new(&[&path]);
    let store = SqliteStore::open(&path).expect("a file that cannot be written can be read");
    assert_eq!(versions(&store, &["a"]).await, [Some(1)], "reads are answered meanwhile");
    let batch = || vec![create("b", 2, json("2")), create("c", 3, json("3"))];
    for _ in 0..3 {
        match commit(&store, batch()).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("a write to an unwritable file gave {other:?}"),
        }
    }
    assert_eq!(versions(&store, &["b", "c"]).await, [None, None], "a failed batch was applied");
    assert_eq!(outbox_ids(&store).await, [id(1_001)]);

    drop(unwritable);
    let outcomes = commit_once_available(&store, batch).await;
    assert!(committed(&outcomes), "the batch gave {outcomes:?} once the file was writable");
    let again = commit(&store, batch()).await.unwrap();
    assert!(
        again.iter().all(|outcome| matches!(outcome, CommitOutcome::Duplicate(_))),
        "the same batch again gave {again:?}"
    );
    assert_eq!(versions(&store, &["a", "b", "c"]).await, [Some(1), Some(1), Some(1)]);
    assert_eq!(outbox_ids(&store).await, [id(1_001), id(1_002), id(1_003)]);
}

/// A full disk is an outage: the writes that do not fit come back as
/// `Unavailable` with nothing of them applied, and the store writes them
/// once there is room again.
#[tokio::test]
async fn a_full_disk_is_unavailable_until_space_is_freed() {
    let dir = fresh_dir("full");
    let Some(tmpfs) = Tmpfs::mount(&dir, "2m") else {
        assert!(!is_root(), "root could not mount a tmpfs on {}", dir.display());
        eprintln!("not root: no tmpfs to fill, so no full disk to test");
        return;
    };
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let outcomes = commit(&store, vec![create("a", 1, json("1"))]).await.unwrap();
    assert!(committed(&outcomes));

    let filler = dir.join("filler");
    fill(&filler);
    // Bodies far larger than the WAL so far: the commit needs new pages.
    let big = format!("\"{}\"", "x".repeat(60_000));
    let batch = || (2..6).map(|n| create(&format!("k{n}"), n, json(&big))).collect();
    for _ in 0..3 {
        match commit(&store, batch()).await {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("a write to a full disk gave {other:?}"),
        }
    }
    assert_eq!(versions(&store, &["k2", "k3", "k4", "k5"]).await, [None; 4]);
    assert_eq!(outbox_ids(&store).await, [id(1_001)], "a failed batch was half applied");

    std::fs::remove_file(&filler).unwrap();
    let outcomes = commit_once_available(&store, batch).await;
    assert!(committed(&outcomes), "the batch gave {outcomes:?} once there was room");
    assert_eq!(versions(&store, &["k2", "k5"]).await, [Some(1), Some(1)]);
    assert_eq!(outbox_ids(&store).await.len(), 5);
    drop(store);
    wait_closed(&path);
    drop(tmpfs);
}

/// Writes to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk failed: {e}"),
        }
    }
    let _ = file.sync_all();
}

/// Processes and threads that start at once on one new file all open it:
/// one of them creates the schema, the others wait for it and find it
/// current. Before migrations ran in an exclusive transaction, about one
/// start in seventy failed ("table instances already exists", "database is
/// locked").
#[test]
fn many_openers_of_one_new_file_all_succeed() {
    const ROUNDS: usize = 200;
    const OPENERS: usize = 4;
    let dir = fresh_dir("concurrent");
    // Fewer syncs, the same locks: what is raced for is the schema.
    let options = SqliteOptions { durability: Durability::Normal, ..SqliteOptions::default() };
    for round in 0..ROUNDS {
        let path = dir.join(format!("store-{round}.db"));
        let start = Arc::new(Barrier::new(OPENERS));
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    SqliteStore::open_with(&path, options).map(drop)
                })
            })
            .collect();
        for opener in openers {
            if let Err(e) = opener.join().unwrap() {
                panic!("round {round}: opening a new file at once with others failed: {e}");
            }
        }
        let connection = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = connection.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let tables: i64 = connection
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('instances', 'inbox', 'outbox', 'timers', 'dead_letters')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((version, tables), (1, 5), "round {round}: the schema is not as migrated");
    }
}

/// A write that SQLite refuses for a reason of its own fails alone: the
/// other writes of its batch, and of the other batches sharing its
/// transaction, are applied. The trigger stands for what a write can meet
/// (a row too big, a constraint): it refuses one command's row.
#[tokio::test]
async fn a_write_that_sqlite_refuses_fails_alone() {
    let path = fresh_dir("refused").join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.body = '\"refused\"'
             BEGIN SELECT RAISE(ABORT, 'this row is refused'); END;",
        )
        .unwrap();
    let writes = vec![
        create("a", 1, json("1")),
        create("b", 2, json("\"refused\"")),
        create("c", 3, json("3")),
    ];
    let mut other = Batch { instances: vec![create("d", 4, json("4"))], dead_letters: Vec::new() };
    let mut batch = Batch { instances: writes, dead_letters: Vec::new() };
    // Both batches are queued before the store's thread wakes, so that
    // they are likely to share a transaction; the outcome must not depend
    // on whether they do.
    let (outcomes, others) = tokio::join!(store.commit(&mut batch), store.commit(&mut other));
    let (outcomes, others) = (outcomes.unwrap(), others.unwrap());
    assert!(committed(&others), "another caller's batch gave {others:?}");
    assert!(matches!(&outcomes[0], CommitOutcome::Committed { .. }), "{outcomes:?}");
    match &outcomes[1] {
        CommitOutcome::Failed(reason) => {
            assert!(reason.contains("this row is refused"), "the reason was {reason}")
        }
        other => panic!("the refused write gave {other:?}"),
    }
    assert!(matches!(&outcomes[2], CommitOutcome::Committed { .. }), "{outcomes:?}");
    assert_eq!(versions(&store, &["a", "b", "c", "d"]).await, [Some(1), None, Some(1), Some(1)]);
    let mut ids = outbox_ids(&store).await;
    ids.sort();
    assert_eq!(ids, [id(1_001), id(1_003), id(1_004)]);
    // Nothing of the refused write stayed behind, its inbox row neither:
    // without the trigger, it is applied as new.
    rusqlite::Connection::open(&path).unwrap().execute_batch("DROP TRIGGER refuse").unwrap();
    let outcomes = commit(&store, vec![create("b", 2, json("\"refused\""))]).await.unwrap();
    assert!(committed(&outcomes), "the write once allowed gave {outcomes:?}");
}

/// A body that is not UTF-8 (a malformed message from outside) is kept
/// byte for byte in the outbox and the dead letters, so that a replay
/// sends the original, also after the store is opened again.
#[tokio::test]
async fn bodies_that_are_not_utf8_are_kept_byte_for_byte() {
    let raw: &[u8] = b"{\"note\":\"caf\xe9 \xff\xfe\"}";
    let dead: &[u8] = b"\xc3\x28 not json \x80";
    let path = fresh_dir("bytes").join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let letter = NewDeadLetter {
        letter: Letter::Message(command(50, Body::Json(Arc::from(dead)))),
        process: Some(P.to_owned()),
        reason: "malformed JSON".to_owned(),
        at: Timestamp(3_000),
    };
    let mut batch = Batch {
        instances: vec![create("a", 1, Body::Json(Arc::from(raw)))],
        dead_letters: vec![letter],
    };
    let outcomes = store.commit(&mut batch).await.unwrap();
    assert!(committed(&outcomes));
    drop(store);
    wait_closed(&path);

    let store = SqliteStore::open(&path).unwrap();
    let outbox = store.pending_outbox().await.unwrap();
    assert_eq!(bytes(&outbox[0].message.body), raw, "an outbox body changed");
    let letters = store.dead_letters().await.unwrap();
    let Letter::Message(message) = &letters[0].letter else { panic!("{letters:?}") };
    assert_eq!(bytes(&message.body), dead, "a dead letter's body changed");

    let replayed = store.replay(vec![letters[0].id], Timestamp(4_000)).await.unwrap();
    assert_eq!(bytes(&replayed.messages[0].message.body), dead, "the replay changed the body");
    let outbox = store.pending_outbox().await.unwrap();
    let resent: Vec<Vec<u8>> = outbox.iter().map(|row| bytes(&row.message.body)).collect();
    assert_eq!(resent, [raw.to_vec(), dead.to_vec()], "the outbox does not resend the original");
}

/// The engine on a SQLite file it cannot write: an outage, not bad
/// messages. Nothing is dead-lettered while it lasts, and every message is
/// handled once, by the same engine on the same store, once the file is
/// writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_on_an_unwritable_file_holds_its_work_until_the_file_is_writable() {
    use common::{Order, Paid, Placed, Ship};
    use switchyard_runtime::{CommandContext, Engine, HandlerError, RetryPolicy};

    let path = fresh_dir("engine-readonly").join("engine.db");
    drop(SqliteStore::open(&path).unwrap());
    wait_closed(&path);
    let unwritable = Unwritable::new(&[&path]);
    let shipped = Arc::new(AtomicU32::new(0));
    let counted = shipped.clone();
    let engine = Engine::builder()
        .store(SqliteStore::open(&path).unwrap())
        .process::<Order>()
        .retry(RetryPolicy { max_backoff: Duration::from_millis(100), ..RetryPolicy::default() })
        .handle(move |_: Ship, _: CommandContext| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, HandlerError>(()) }
        })
        .build();
    for order in 0..10 {
        engine.publish(Placed { order, amount: u64::from(order) });
        engine.publish(Paid { order });
    }
    let deadline = Instant::now() + RECOVERY;
    while engine.stats().store_down_since.is_none() {
        assert!(Instant::now() < deadline, "the engine never saw the outage");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Many retries' worth: the old engine dead-lettered after five.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = engine.stats();
    assert_eq!((stats.handled, stats.dead_lettered), (0, 0), "{stats:?}");

    drop(unwritable);
    let idle = tokio::time::timeout(RECOVERY, engine.idle()).await;
    let stats = engine.stats();
    assert!(idle.is_ok(), "the engine did not recover: {stats:?}");
    assert_eq!((stats.handled, stats.dead_lettered, stats.outages), (20, 0, 1), "{stats:?}");
    assert_eq!((stats.store_down_since, shipped.load(Ordering::SeqCst)), (None, 10));
    assert!(engine.dead_letters().await.unwrap().is_empty());
}
