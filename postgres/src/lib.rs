//! A [`Store`] in PostgreSQL, for several engine nodes on one database.
//!
//! Each node connects its own [`PostgresStore`] to the same schema, under
//! its own [`NodeId`]. The version check of every instance write is what
//! keeps two nodes from changing one instance at once: the loser gets
//! [`CommitOutcome::Conflict`](switchyard_runtime::store::CommitOutcome),
//! and the engine decides again. Outbox rows and timers are claimed: each
//! row carries the node that sends it (`owner`) and a lease (`lease_until`,
//! on the database's clock). A commit claims the rows it adds for its own
//! node; [`Store::pending_outbox`] and [`Store::pending_timers`] return the
//! rows this node owns and claim, for this node, those whose lease ran out
//! (a node that died); [`PostgresStore::renew_leases`] keeps this node's
//! leases alive, and [`PostgresStore::claim_expired`] takes, exactly once,
//! the rows a dead node left. No row is held by two live nodes, and none
//! is stranded when a node dies.
//!
//! The store has two connections. One belongs to a writer task that applies
//! every write queued meanwhile (the commits of many workers, outbox rows
//! marked sent, dead letters) in one transaction: group commit, as the
//! SQLite store does. Reads and claims run on the other, from the callers'
//! own tasks. Either connection, once lost, is opened again with backoff,
//! and meanwhile calls fail as [`StoreError::Unavailable`], an outage the
//! engine waits out with no restart.
//!
//! - `connection`: connecting, what PostgreSQL's errors mean for the store,
//!   connecting again.
//! - `schema`: the tables and their migrations, safe when nodes start at once.
//! - `serve`: the writer task and its groups; `write`: the writes of a group.
//! - `read`: the reads, the claims and the renewal of leases.

mod connection;
mod read;
mod schema;
mod serve;
mod write;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use switchyard_runtime::store::{
    Batch, CommitOutcome, DeadLetter, InstanceRecord, OutboxRow, Pruned, Replayed, TimerRow,
};
use switchyard_runtime::{Body, BoxFuture, MessageId, Store, StoreError, Timestamp};
use tokio::sync::{mpsc, oneshot};

use connection::{Conn, Line, Target, error};
use read::Take;
use serve::{Call, Group, Writer};

/// The name a node's claims are made under. Each live node needs its own:
/// two nodes under one id would take each other's rows. An id that stays
/// the same across restarts (a host name, a pod name) lets a node that
/// starts again take back its own rows at once, without waiting for their
/// leases to run out.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn new(id: impl Into<Arc<str>>) -> NodeId {
        NodeId(id.into())
    }

    /// A new id, unlike any other: for a node with no name of its own. Its
    /// rows are taken over by others once their leases run out.
    pub fn random() -> NodeId {
        NodeId(format!("node-{}", uuid::Uuid::new_v4().simple()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:?})", &*self.0)
    }
}

/// How to connect a PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// The schema (namespace) that holds the store's tables; created if
    /// missing. Engines that share instances share a schema.
    pub schema: String,
    /// This node, as its claims of outbox rows and timers name it.
    pub node: NodeId,
    /// How long a claim holds without being renewed. A node that dies
    /// leaves its rows to the others for this long; a node that cannot
    /// renew its leases for this long (an outage, a pause) may see others
    /// send its rows too, which receivers drop as duplicates by id.
    pub lease: Duration,
    /// Whether connecting may create the schema. `false` for tools that
    /// only read an existing store: a schema that is not there is an error.
    pub create_schema: bool,
    /// The most calls one transaction of the writer takes up.
    pub max_group: usize,
    /// Once a transaction holds this many rows to write (instance writes,
    /// dead letters, outbox rows marked sent), the writer commits it rather
    /// than taking up more calls: a worker busy enough to fill one alone
    /// gets its own, and the next worker's batch goes into the next one.
    pub group_rows: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "switchyard".to_owned(),
            node: NodeId::random(),
            lease: Duration::from_secs(30),
            create_schema: true,
            max_group: 256,
            group_rows: 256,
        }
    }
}

/// A store in a schema of a PostgreSQL database. Cheap to clone; its
/// connections close when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    writes: mpsc::UnboundedSender<Call>,
    /// The connection of reads and claims.
    side: Line,
    claim: Arc<Claim>,
    schema: String,
    transactions: Arc<AtomicU64>,
}

/// Whose claims this store makes: its node, and a token of its own, new
/// each time a store connects, that tells the rows this very store holds
/// (and sends) from those its node held in an earlier run.
#[derive(Debug)]
pub(crate) struct Claim {
    pub(crate) node: NodeId,
    pub(crate) token: uuid::Uuid,
    pub(crate) lease: Duration,
}

impl Claim {
    /// The lease in milliseconds, as the statements add it to the
    /// database's clock.
    pub(crate) fn lease_ms(&self) -> f64 {
        self.lease.as_secs_f64() * 1000.0
    }
}

/// What [`PostgresStore::renew_leases`] extended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Renewed {
    pub outbox: u64,
    pub timers: u64,
}

/// What [`PostgresStore::claim_expired`] took over: the runtime's own, since
/// the engine claims through the [`Store`] trait.
pub use switchyard_runtime::store::Claimed;

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.shared.schema)
            .field("node", &self.shared.claim.node)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, or
    /// `host=... dbname=...`), creates or migrates the schema, and starts
    /// the writer task. Must be called within a tokio runtime, which runs
    /// the store's tasks.
    ///
    /// Several nodes may connect at once to a new schema: one creates it,
    /// and the others wait for it. A database that cannot be reached is
    /// [`StoreError::Unavailable`]; refused credentials, a missing database
    /// or schema (with `create_schema: false`) are [`StoreError::Failed`].
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Failed(Box::new(e)))?;
        let name = format!("switchyard {}", options.node);
        let target = Arc::new(Target::new(config, &options.schema, &name));
        let line = Line::new(target.clone());
        let conn = line.conn().await?;
        schema::migrate(&conn, target.schema(), &options.schema, options.create_schema).await?;
        let claim = Arc::new(Claim {
            node: options.node.clone(),
            token: uuid::Uuid::new_v4(),
            lease: options.lease,
        });
        let transactions = Arc::new(AtomicU64::new(0));
        let group = Group { calls: options.max_group.max(1), rows: options.group_rows.max(1) };
        let (writes, calls) = mpsc::unbounded_channel();
        let writer =
            Writer { line, claim: claim.clone(), group, transactions: transactions.clone() };
        tokio::spawn(serve::serve(writer, calls));
        let shared =
            Shared { writes, side: Line::new(target), claim, schema: options.schema, transactions };
        Ok(PostgresStore { shared: Arc::new(shared) })
    }

    /// How many write transactions the store has committed: with the number
    /// of messages handled, it tells how well commits are grouped.
    pub fn transactions(&self) -> u64 {
        self.shared.transactions.load(Ordering::Relaxed)
    }

    pub fn node(&self) -> &NodeId {
        &self.shared.claim.node
    }

    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// Extends the lease of every outbox row and timer this store holds, by
    /// the lease of its options from now. A node calls it well within its
    /// lease (every third of it), from the time it connects: a node that
    /// stops renewing has its rows taken over once their leases run out.
    pub async fn renew_leases(&self) -> Result<Renewed, StoreError> {
        let conn = self.shared.side.conn().await?;
        let (outbox, timers) = read::renew(&conn, &self.shared.claim).await.map_err(error)?;
        Ok(Renewed { outbox, timers })
    }

    /// Claims for this node the outbox rows and timers it does not hold
    /// yet: those of other nodes whose leases ran out, and those its node
    /// left in an earlier run. Each row is returned by one call only, of
    /// any node or task: a caller hands them to its relay and its timers,
    /// which do not have them. A node calls it about as often as it renews.
    pub async fn claim_expired(&self) -> Result<Claimed, StoreError> {
        let conn = self.shared.side.conn().await?;
        let claim = &self.shared.claim;
        let outbox = read::claim_outbox(&conn, claim, Take::New).await.map_err(error)?;
        let timers = read::claim_timers(&conn, claim, Take::New).await.map_err(error)?;
        Ok(Claimed { outbox, timers })
    }

    fn call<T: Send + 'static>(
        &self,
        call: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Call,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (reply, answer) = oneshot::channel();
        let sent = self.shared.writes.send(call(reply));
        Box::pin(async move {
            sent.map_err(|_| StoreError::Closed)?;
            answer.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// Runs a read on the second connection, sorting its error.
    fn read<'a, T, F, Fut>(&'a self, read: F) -> BoxFuture<'a, Result<T, StoreError>>
    where
        F: FnOnce(Arc<Conn>) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a,
    {
        Box::pin(async move {
            let conn = self.shared.side.conn().await?;
            read(conn).await.map_err(error)
        })
    }
}

impl Store for PostgresStore {
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>> {
        self.read(move |conn| async move { read::load(&conn, process, &keys).await })
    }

    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        let mut taken = std::mem::take(batch);
        // The writer task is what limits how fast the store writes: bodies
        // are written as JSON here, on the caller's task, so that it only
        // runs SQL.
        for write in &mut taken.instances {
            to_json(&mut write.state);
            to_json(&mut write.data);
            for message in &mut write.outbox {
                to_json(&mut message.body);
            }
        }
        let written = self.call(|reply| Call::Commit { batch: taken, reply });
        Box::pin(async move {
            let (outcomes, mut written) = written.await?;
            written.instances.clear();
            written.dead_letters.clear();
            *batch = written;
            Ok(outcomes)
        })
    }

    fn mark_sent(&self, sequences: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.call(|reply| Call::MarkSent { sequences, reply })
    }

    /// The rows this node owns, and those whose lease ran out, claimed
    /// for this node with a new lease: what a node starting up is to send.
    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        let claim = self.shared.claim.clone();
        self.read(move |conn| async move { read::claim_outbox(&conn, &claim, Take::Held).await })
    }

    /// The timers this node owns, and those whose lease ran out, claimed
    /// for this node with a new lease.
    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>> {
        let claim = self.shared.claim.clone();
        self.read(move |conn| async move { read::claim_timers(&conn, &claim, Take::Held).await })
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        self.read(|conn| async move { read::dead_letters(&conn).await })
    }

    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>> {
        self.call(|reply| Call::Replay { ids, now, reply })
    }

    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        self.call(|reply| Call::Prune { before, reply })
    }

    fn handled(&self, scope: &str, id: MessageId) -> BoxFuture<'_, Result<bool, StoreError>> {
        let scope = scope.to_owned();
        self.read(move |conn| async move { read::handled(&conn, &scope, id).await })
    }

    /// Joins the group commit, as one row.
    fn mark_handled(
        &self,
        scope: &str,
        id: MessageId,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        let scope = scope.into();
        self.call(|reply| Call::MarkHandled { scope, id, at, reply })
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.shared.claim.lease)
    }

    fn renew_leases(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { PostgresStore::renew_leases(self).await.map(|_| ()) })
    }

    fn claim_expired(&self) -> BoxFuture<'_, Result<Claimed, StoreError>> {
        Box::pin(PostgresStore::claim_expired(self))
    }
}

/// Writes a typed body as JSON in place. One that cannot be written stays
/// typed: the writer meets the same error and fails its write alone.
fn to_json(body: &mut Body) {
    if let Body::Value(value) = body
        && let Ok(json) = value.to_json()
    {
        *body = Body::Json(json.into());
    }
}
