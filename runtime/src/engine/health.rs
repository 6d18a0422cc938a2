//! Whether the store answers: an outage is the time between a store call
//! that failed and the next one that succeeded, a write once a write has
//! failed (a store may answer reads while it cannot write).
//!
//! A store that cannot write (read-only, disk full, gone) is an outage, not
//! a fault of the messages in flight: the engine tries their batches again,
//! with backoff, for as long as it lasts, and dead-letters nothing for it.
//! Meanwhile it takes no new work: deliveries from a bus are given back
//! unacknowledged (the bus sends them again later), due timers stay in the
//! index, and the relay holds its rows. [`Health`] is where the workers,
//! the relay and the timer task learn of it and wait for its end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::message::Timestamp;
use crate::store::StoreError;

/// What a store call does. A store may answer reads while it cannot write
/// (SQLite on a file it may only read): a read that succeeds ends only an
/// outage in which no write has failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    Write,
}

/// The store's health as the engine sees it.
#[derive(Debug)]
pub(super) struct Health {
    /// Set while the store is failing: read on every delivery, so an atomic.
    down: AtomicBool,
    /// When the current outage began, and whether a write failed in it.
    since: Mutex<Option<(Timestamp, Access)>>,
    /// Outages begun since the engine started.
    outages: AtomicU64,
    /// `true` while the store answers; waited on by what holds back.
    up: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            down: AtomicBool::new(false),
            since: Mutex::new(None),
            outages: AtomicU64::new(0),
            up: watch::Sender::new(true),
        }
    }
}

impl Health {
    /// Whether the store is failing now.
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// When the current outage began, if the store is failing now.
    pub(super) fn down_since(&self) -> Option<Timestamp> {
        super::lock(&self.since).map(|(began, _)| began)
    }

    pub(super) fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    /// A store call failed at `now`: begins an outage unless one is on.
    /// Returns whether this call began it.
    pub(super) fn failed(
        &self,
        now: Timestamp,
        access: Access,
        what: &str,
        error: &StoreError,
    ) -> bool {
        let mut since = super::lock(&self.since);
        if let Some((_, kind)) = since.as_mut() {
            if access == Access::Write {
                *kind = Access::Write;
            }
            return false;
        }
        *since = Some((now, access));
        self.down.store(true, Ordering::Release);
        self.outages.fetch_add(1, Ordering::Relaxed);
        self.up.send_replace(false);
        warn!(%error, "the store failed to {what}: holding new work and trying again until it answers");
        true
    }

    /// A store call succeeded at `now`: ends the outage, if one is on and
    /// the call can tell (a read cannot, once a write failed). Returns
    /// whether it ended one.
    pub(super) fn answered(&self, now: Timestamp, access: Access) -> bool {
        if !self.is_down() {
            return false;
        }
        let mut since = super::lock(&self.since);
        let Some((began, kind)) = *since else { return false };
        if access == Access::Read && kind == Access::Write {
            return false;
        }
        *since = None;
        drop(since);
        self.down.store(false, Ordering::Release);
        self.up.send_replace(true);
        let lasted = now.0.saturating_sub(began.0);
        info!(lasted_ms = lasted, "the store answers again after {lasted} ms: taking new work");
        true
    }

    /// Whether the store answers, to wait on without holding the engine:
    /// `true` while it does. Closed once the engine is gone.
    pub(super) fn watch(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outage_runs_from_the_first_failure_to_the_next_answer() {
        let health = Health::default();
        let error = || StoreError::Failed("read-only".into());
        assert!(!health.answered(Timestamp(1), Access::Write));
        assert!(health.failed(Timestamp(10), Access::Read, "load", &error()));
        assert!(!health.failed(Timestamp(20), Access::Write, "commit", &error()));
        // A read that succeeds cannot tell that the store writes again.
        assert!(!health.answered(Timestamp(25), Access::Read));
        assert_eq!((health.is_down(), health.down_since()), (true, Some(Timestamp(10))));
        let waiting = tokio::spawn({
            let up = health.up.subscribe();
            async move {
                let mut up = up;
                up.wait_for(|up| *up).await.is_ok()
            }
        });
        assert!(health.answered(Timestamp(30), Access::Write));
        assert!(waiting.await.unwrap());
        assert_eq!((health.is_down(), health.down_since(), health.outages()), (false, None, 1));
        // An outage of reads alone ends with a read.
        assert!(health.failed(Timestamp(40), Access::Read, "load", &error()));
        assert!(health.answered(Timestamp(41), Access::Read));
    }
}
