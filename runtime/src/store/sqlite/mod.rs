//! The SQLite store, the embedded default: one file in WAL mode, durable by
//! default (`synchronous=FULL`), with a schema that it creates and migrates
//! itself.
//!
//! One thread owns the connection. Calls are queued to it; each time it
//! wakes it answers the reads first, then applies every queued write (the
//! commits of many workers, outbox rows marked sent, dead letters) in one
//! transaction, so one sync of the file pays for all of them: group commit.
//! Each instance write inside the transaction is all or nothing: its checks
//! (inbox, version) come first, and a failed check undoes what the write had
//! done before the transaction goes on with the next one.
//!
//! A store that cannot write (a read-only or full disk, I/O errors, a file
//! locked or gone) is an outage, not a bad message: every call of the
//! group fails with [`StoreError::Unavailable`], nothing of it applied, and
//! the store opens its file again, with backoff, until it can write.
//!
//! - `connection`: opening, the schema and its migrations, what SQLite's
//!   errors mean, opening again.
//! - `serve`: the store's thread and its groups.
//! - `write`: the writes of a group; `read`: the reads, and the columns'
//!   encodings.
//! - `once`: [`SqliteStore::handle_once`], a handler's own work and its
//!   inbox row in one transaction, outside the groups.

mod connection;
mod once;
mod read;
mod serve;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, OutboxRow, Pruned, Replayed, Store,
    StoreError, TimerRow,
};
use crate::clock::BoxFuture;
use crate::message::{Body, MessageId, Timestamp};
use connection::Link;
use serve::{Group, Request, serve};

/// How hard a commit holds on to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit that returned survives a power cut.
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of the process, but
    /// the last commits may be lost in a power cut. Faster.
    Normal,
}

/// How to open a SQLite store.
#[derive(Clone, Copy, Debug)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// The most calls one wake of the store's thread takes up, and so the
    /// most commits that share one transaction.
    pub max_group: usize,
    /// Once a transaction holds this many rows to write (instance writes,
    /// dead letters, outbox rows marked sent), the store's thread commits it
    /// rather than taking up more calls. Under light load, many small
    /// commits still share one transaction; a worker busy enough to fill one
    /// alone gets its own, and the next worker's batch, which came in
    /// meanwhile, goes into the next one instead of waiting for this one's
    /// sync: the store's thread then always has work while the workers
    /// decide.
    pub group_rows: usize,
    /// How much of the file SQLite keeps in memory, in MiB (SQLite's own
    /// default is 2). The inbox grows with every message, and the ids of
    /// decided messages (derived, so random) land all over its index: a
    /// small cache reads those pages back from the file again and again.
    pub cache_mib: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            max_group: 256,
            group_rows: 256,
            cache_mib: 64,
        }
    }
}

/// A store in one SQLite file. Cheap to clone; the file is closed when the
/// last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    requests: mpsc::Sender<Request>,
    path: Arc<PathBuf>,
    transactions: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`, durable.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the store in the file at `path`.
    ///
    /// Several processes may open one new file at once: one creates the
    /// schema, under an exclusive lock, and the others wait for it. While
    /// the file is busy, opening is tried again with backoff, for ten
    /// seconds at most. A file that cannot be written now is opened all the
    /// same (its reads are answered); writes fail as unavailable until it
    /// can be written, and then succeed with no new opening.
    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let link = Link::open(&path, options)?;
        let (requests, receiver) = mpsc::channel();
        let group = Group { calls: options.max_group.max(1), rows: options.group_rows.max(1) };
        let transactions = Arc::new(AtomicU64::new(0));
        let counted = transactions.clone();
        std::thread::Builder::new()
            .name("switchyard-sqlite".to_owned())
            .spawn(move || serve(link, receiver, group, &counted))
            .map_err(|e| StoreError::Failed(e.into()))?;
        Ok(SqliteStore { requests, path: Arc::new(path), transactions })
    }

    /// How many write transactions the store has committed: with the number
    /// of messages handled, it tells how well commits are grouped.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` in one transaction with the inbox row of message `id` in
    /// `scope`: if the row is there already, `work` does not run and the result
    /// is `Ok(None)`; otherwise `work` runs, the row is inserted, and both
    /// commit together: `Ok(Some(value))`. An error from `work` rolls both back.
    ///
    /// This is for a command handler whose own tables live in this file: its
    /// effects and the record that it handled the command are one commit, so
    /// a redelivery neither runs it twice nor finds its work half done.
    /// `scope` is the handler's inbox, as for [`Store::mark_handled`]
    /// (`"handler:<wire name>"`), and `handled` answers for it too.
    ///
    /// `work` runs on the store's one connection thread, inside its own
    /// transaction (which joins no group commit), while every other call of
    /// the store waits: it must be short, must not block on anything else
    /// (a lock, a channel, the network, this store), and must neither commit
    /// nor roll back the transaction itself.
    ///
    /// An error of SQLite, from `work` or the store, is sorted as the store's
    /// other errors are: [`StoreError::Unavailable`] for an outage (worth
    /// retrying), [`StoreError::Failed`] otherwise. A panic in `work` is
    /// caught, rolls both back and is reported as [`StoreError::Failed`];
    /// the store goes on working (unless the build aborts on panic).
    pub async fn handle_once<T: Send + 'static>(
        &self,
        scope: &str,
        id: MessageId,
        at: Timestamp,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        let scope: Box<str> = scope.into();
        self.call(|reply| Request::Alone(once::job(scope, id, at, work, reply))).await
    }

    fn call<T: Send + 'static>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.requests.send(request(reply));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }
}

impl Store for SqliteStore {
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>> {
        self.call(|reply| Request::Load { process, keys, reply })
    }

    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        let mut taken = std::mem::take(batch);
        // The store's one thread is what limits how fast it writes: bodies
        // are written as JSON here, on the caller's thread, so that it only
        // runs SQL. States stay typed: there are few, and the store's thread
        // keeps each one's JSON.
        for write in &mut taken.instances {
            to_json(&mut write.data);
            for message in &mut write.outbox {
                to_json(&mut message.body);
            }
        }
        let written = self.call(|reply| Request::Commit { batch: taken, reply });
        Box::pin(async move {
            let (outcomes, mut written) = written.await?;
            // Freed here, on the caller's thread, and the lists kept for
            // the caller's next batch.
            written.instances.clear();
            written.dead_letters.clear();
            *batch = written;
            Ok(outcomes)
        })
    }

    fn mark_sent(&self, sequences: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.call(|reply| Request::MarkSent { sequences, reply })
    }

    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        self.call(|reply| Request::PendingOutbox { reply })
    }

    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>> {
        self.call(|reply| Request::PendingTimers { reply })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        self.call(|reply| Request::DeadLetters { reply })
    }

    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>> {
        self.call(|reply| Request::Replay { ids, now, reply })
    }

    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        self.call(|reply| Request::Prune { before, reply })
    }

    fn handled(&self, scope: &str, id: MessageId) -> BoxFuture<'_, Result<bool, StoreError>> {
        let scope = scope.into();
        self.call(|reply| Request::Handled { scope, id, reply })
    }

    /// Joins the group commit, as one row: the sync it waits for is shared
    /// with the commits of every worker, where a transaction of its own
    /// would pay a sync for one row.
    fn mark_handled(
        &self,
        scope: &str,
        id: MessageId,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let scope = scope.into();
        self.call(|reply| Request::MarkHandled { scope, id, at, reply })
    }
}

/// Writes a typed body as JSON in place. One that cannot be written stays
/// typed: the store's thread meets the same error and fails its write.
fn to_json(body: &mut Body) {
    if let Body::Value(value) = body
        && let Ok(json) = value.to_json()
    {
        *body = Body::Json(json.into());
    }
}
