//! A [`FaultyStore`]: a store around another that fails on demand, for
//! tests of what an engine does when its store misbehaves: an outage that
//! lasts until it is lifted, commits that fail for a while, transiently or
//! not, and writes that meet a version another engine moved.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::BoxFuture;
use crate::message::{MessageId, Timestamp};
use crate::store::{
    Batch, Claimed, CommitOutcome, DeadLetter, InstanceRecord, OutboxRow, Pruned, Replayed, Store,
    StoreError, TimerRow,
};

/// A store that passes every call to `S`, except the ones it is told to
/// fail. Clones share their faults and the store around which they are.
///
/// ```
/// use switchyard_runtime::MemoryStore;
/// use switchyard_runtime::testing::FaultyStore;
///
/// let store = FaultyStore::new(MemoryStore::new());
/// store.set_down(true); // every call fails, as on a file that cannot be written
/// store.set_down(false);
/// store.fail_commits(3, true); // the next three commits fail as a busy disk does
/// store.conflict_commits(2); // the next two commits that write find their versions moved
/// ```
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    down: AtomicBool,
    failing_commits: AtomicU32,
    transient: AtomicBool,
    conflicting_commits: AtomicU32,
    failed: AtomicU64,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore { inner, faults: Arc::default() }
    }

    /// The store around which this one is.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// While `down`, every call fails with the error SQLite gives for a
    /// file it cannot write, one that trying again at once does not cure.
    pub fn set_down(&self, down: bool) {
        self.faults.down.store(down, Ordering::SeqCst);
    }

    /// The next `commits` commits fail, applying nothing: as a busy disk
    /// (`StoreError::Unavailable`) if `transient`, as a full one
    /// (`StoreError::Failed`) otherwise.
    pub fn fail_commits(&self, commits: u32, transient: bool) {
        self.faults.transient.store(transient, Ordering::SeqCst);
        self.faults.failing_commits.store(commits, Ordering::SeqCst);
    }

    /// The next `commits` commits that write instances apply nothing and
    /// answer [`CommitOutcome::Conflict`] for each write, as if another
    /// engine had written every instance first.
    pub fn conflict_commits(&self, commits: u32) {
        self.faults.conflicting_commits.store(commits, Ordering::SeqCst);
    }

    /// How many calls it has failed.
    pub fn failed_calls(&self) -> u64 {
        self.faults.failed.load(Ordering::SeqCst)
    }

    /// A failure for the call, if the store is down.
    fn outage<T: Send + 'static>(&self) -> Option<BoxFuture<'static, Result<T, StoreError>>> {
        if !self.faults.down.load(Ordering::SeqCst) {
            return None;
        }
        Some(self.failure(StoreError::Failed("attempt to write a readonly database".into())))
    }

    fn failure<T: Send + 'static>(
        &self,
        error: StoreError,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        self.faults.failed.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move { Err(error) })
    }

    /// Takes one from `counter` if it is above zero.
    fn take(counter: &AtomicU32) -> bool {
        counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    /// The fault the commit of `batch` meets, if any.
    fn commit_fault(
        &self,
        batch: &Batch,
    ) -> Option<BoxFuture<'static, Result<Vec<CommitOutcome>, StoreError>>> {
        if let Some(failure) = self.outage() {
            return Some(failure);
        }
        if Self::take(&self.faults.failing_commits) {
            let error = if self.faults.transient.load(Ordering::SeqCst) {
                StoreError::Unavailable("the disk is busy".into())
            } else {
                StoreError::Failed("the disk is full".into())
            };
            return Some(self.failure(error));
        }
        let writes = batch.instances.len();
        if writes > 0 && Self::take(&self.faults.conflicting_commits) {
            return Some(Box::pin(async move { Ok(vec![CommitOutcome::Conflict; writes]) }));
        }
        None
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn load(
        &self,
        process: &'static str,
        keys: Vec<Arc<str>>,
    ) -> BoxFuture<'_, Result<Vec<Option<InstanceRecord>>, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.load(process, keys))
    }

    fn commit<'a>(
        &'a self,
        batch: &'a mut Batch,
    ) -> BoxFuture<'a, Result<Vec<CommitOutcome>, StoreError>> {
        match self.commit_fault(batch) {
            Some(fault) => {
                // A store takes the batch's contents out whatever the result.
                *batch = Batch::default();
                fault
            }
            None => self.inner.commit(batch),
        }
    }

    fn mark_sent(&self, sequences: Vec<u64>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.mark_sent(sequences))
    }

    fn pending_outbox(&self) -> BoxFuture<'_, Result<Vec<OutboxRow>, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.pending_outbox())
    }

    fn pending_timers(&self) -> BoxFuture<'_, Result<Vec<TimerRow>, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.pending_timers())
    }

    fn dead_letters(&self) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.dead_letters())
    }

    fn replay(&self, ids: Vec<u64>, now: Timestamp) -> BoxFuture<'_, Result<Replayed, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.replay(ids, now))
    }

    fn prune(&self, before: Timestamp) -> BoxFuture<'_, Result<Pruned, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.prune(before))
    }

    fn handled(&self, scope: &str, id: MessageId) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.handled(scope, id))
    }

    fn mark_handled(
        &self,
        scope: &str,
        id: MessageId,
        at: Timestamp,
    ) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.mark_handled(scope, id, at))
    }

    fn lease(&self) -> Option<Duration> {
        self.inner.lease()
    }

    fn renew_leases(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.renew_leases())
    }

    fn claim_expired(&self) -> BoxFuture<'_, Result<Claimed, StoreError>> {
        self.outage().unwrap_or_else(|| self.inner.claim_expired())
    }
}

impl<S> fmt::Debug for FaultyStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("down", &self.faults.down.load(Ordering::Relaxed))
            .field("failed", &self.faults.failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
