//! The timer index: every pending timer of the engine's instances, ordered
//! by due time, kept in step with the store by the workers after each
//! commit, and loaded from the store at start so that no timer is lost
//! across a restart. One task sleeps until the soonest one is due (or the
//! index changes) and hands due timers to the worker of their instance,
//! where they go through the same path as events.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Weak};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::info;

use super::Shared;
use super::health::Access;
use crate::clock::Clock;
use crate::message::{MessageId, Timestamp};
use crate::store::TimerChange;

#[derive(Debug, Default)]
pub(super) struct TimerIndex {
    slots: HashMap<Slot, (Timestamp, MessageId)>,
    due: BTreeMap<(Timestamp, MessageId), Slot>,
}

/// One timer of one instance: scheduling it again moves it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Slot {
    process: usize,
    key: Arc<str>,
    timer: Arc<str>,
}

/// A timer that is due.
#[derive(Debug)]
pub(super) struct Due {
    pub(super) process: usize,
    pub(super) key: Arc<str>,
    pub(super) timer: Arc<str>,
    pub(super) at: Timestamp,
    pub(super) id: MessageId,
}

impl TimerIndex {
    /// Applies the committed timer changes of one instance. Returns whether
    /// a timer was scheduled, so that the sleeping task looks again.
    pub(super) fn apply(
        &mut self,
        process: usize,
        key: &Arc<str>,
        changes: &[TimerChange],
    ) -> bool {
        let mut scheduled = false;
        for change in changes {
            match change {
                TimerChange::Schedule { timer, at, id } => {
                    self.schedule(process, key.clone(), timer.clone(), *at, *id);
                    scheduled = true;
                }
                TimerChange::Cancel { timer } => {
                    let slot = Slot { process, key: key.clone(), timer: timer.clone() };
                    if let Some(due) = self.slots.remove(&slot) {
                        self.due.remove(&due);
                    }
                }
                TimerChange::Fired { timer, id } => {
                    let slot = Slot { process, key: key.clone(), timer: timer.clone() };
                    if self.slots.get(&slot).is_some_and(|(_, pending)| pending == id)
                        && let Some(due) = self.slots.remove(&slot)
                    {
                        self.due.remove(&due);
                    }
                }
            }
        }
        scheduled
    }

    pub(super) fn schedule(
        &mut self,
        process: usize,
        key: Arc<str>,
        timer: Arc<str>,
        at: Timestamp,
        id: MessageId,
    ) {
        let slot = Slot { process, key, timer };
        if let Some(old) = self.slots.insert(slot.clone(), (at, id)) {
            self.due.remove(&old);
        }
        self.due.insert((at, id), slot);
    }

    /// Takes out every timer due by `now`, soonest first.
    pub(super) fn pop_due(&mut self, now: Timestamp) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((at, id), slot) = entry.remove_entry();
            self.slots.remove(&slot);
            due.push(Due { process: slot.process, key: slot.key, timer: slot.timer, at, id });
        }
        due
    }

    fn next(&self) -> Option<Timestamp> {
        self.due.first_key_value().map(|((at, _), _)| *at)
    }
}

/// The timer task: fires what is due, then sleeps until the next timer is
/// due, the index changes, or the engine stops.
pub(super) async fn run(
    weak: Weak<Shared>,
    changed: Arc<Notify>,
    clock: Arc<dyn Clock>,
    mut stop: watch::Receiver<()>,
    mut ready: watch::Receiver<bool>,
) {
    if ready.wait_for(|ready| *ready).await.is_err() {
        return;
    }
    loop {
        let next = {
            let Some(shared) = weak.upgrade() else { return };
            shared.fire_due();
            // While the store fails, due timers stay in the index: the task
            // waits for the store to answer (which notifies it) instead of
            // waking again and again for a timer it may not fire.
            if shared.health.is_down() { None } else { super::lock(&shared.timers).next() }
        };
        let mut sleep = pin!(async {
            match next {
                Some(at) => clock.sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        let mut notified = pin!(changed.notified());
        let mut stopped = pin!(stop.changed());
        let stopping = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = stopped.as_mut().poll(cx) {
                return Poll::Ready(result.is_err());
            }
            if sleep.as_mut().poll(cx).is_ready() || notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Pending
        })
        .await;
        if stopping {
            return;
        }
    }
}

/// Waits for `sleep`, or for the engine to stop: true if it stopped first.
pub(super) async fn stops_first(
    sleep: impl Future<Output = ()>,
    stop: &mut watch::Receiver<()>,
) -> bool {
    let mut sleep = pin!(sleep);
    let mut stopped = pin!(stop.changed());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = stopped.as_mut().poll(cx) {
            return Poll::Ready(result.is_err());
        }
        sleep.as_mut().poll(cx).map(|()| false)
    })
    .await
}

/// The pruning task: every quarter of the retention (at least a minute, at
/// most an hour), deletes tombstones and inbox rows older than the retention.
pub(super) async fn prune(
    weak: Weak<Shared>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    mut stop: watch::Receiver<()>,
) {
    let every = (retention / 4).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        if stops_first(clock.sleep_until(clock.now() + every), &mut stop).await {
            return;
        }
        let Some(shared) = weak.upgrade() else { return };
        let before = clock.now() - retention;
        let pruned = shared.persist("prune", Access::Write, || shared.store.prune(before)).await;
        if pruned.tombstones + pruned.inbox > 0 {
            info!(tombstones = pruned.tombstones, inbox = pruned.inbox, "pruned");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Arc<str> {
        text.into()
    }

    #[test]
    fn scheduling_again_moves_a_timer_and_cancelling_drops_it() {
        let mut index = TimerIndex::default();
        let (first, second) = (MessageId::new(), MessageId::new());
        let schedule = |at, id| TimerChange::Schedule { timer: key("T"), at: Timestamp(at), id };
        index.apply(0, &key("k"), &[schedule(10, first)]);
        index.apply(0, &key("k"), &[schedule(30, second)]);
        index.apply(0, &key("other"), &[schedule(20, first)]);
        index.apply(0, &key("other"), &[TimerChange::Cancel { timer: key("T") }]);
        assert!(index.pop_due(Timestamp(29)).is_empty());
        let due = index.pop_due(Timestamp(30));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].at, due[0].id, &*due[0].key), (Timestamp(30), second, "k"));
        assert_eq!(index.next(), None);
    }

    #[test]
    fn a_stale_firing_leaves_the_moved_timer_alone() {
        let mut index = TimerIndex::default();
        let (old, new) = (MessageId::new(), MessageId::new());
        index.schedule(0, key("k"), key("T"), Timestamp(50), new);
        index.apply(0, &key("k"), &[TimerChange::Fired { timer: key("T"), id: old }]);
        assert_eq!(index.next(), Some(Timestamp(50)));
    }
}
