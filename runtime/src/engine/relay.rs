//! The outbox relay: sends committed outbox rows through the bus, in commit
//! order (so in decision order per instance), and marks them sent once every
//! receiver has settled them.
//!
//! It is woken by commits: workers hand it the rows they have just committed,
//! and at start it is handed the rows a previous run left unsent. It never
//! polls the store. A row whose receivers did not acknowledge it is sent
//! again after a backoff; one they rejected goes to the dead letters. Either
//! way it stays in the store until then, so a crash sends it again: at least
//! once, with the id it was decided under.
//!
//! Order per instance holds through failures too. Each instance has at most
//! one publish out at a time: its rows that arrive meanwhile wait, and are
//! sent, in order, once that publish has settled. A row that must be sent
//! again goes before them. So no row overtakes an earlier row of its
//! instance, except one handed to the bus in the same publish (the bus
//! delivers a publish's rows in order, but a receiver may refuse the first
//! and take the second).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Shared;
use super::health::Access;
use crate::bus::{Settle, Settled};
use crate::message::{Envelope, MessageId};
use crate::store::{Letter, NewDeadLetter, OutboxRow};

/// A committed outbox row on its way.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) sequence: u64,
    pub(super) message: Envelope,
    /// The instance that decided it, when known: its rows keep their order.
    pub(super) instance: Option<Instance>,
}

impl From<OutboxRow> for Pending {
    fn from(row: OutboxRow) -> Pending {
        // A replayed dead letter knows no instance: it keeps no order.
        let instance = (!row.key.is_empty()).then(|| (Cow::Owned(row.process), Arc::from(row.key)));
        Pending { sequence: row.sequence, message: row.message, instance }
    }
}

/// A process's name and an instance's key (JSON).
pub(super) type Instance = (Cow<'static, str>, Arc<str>);

/// The most rows handed to the bus at once.
const MAX_SEND: usize = 4096;

/// Rows sent and not yet settled, and the rows that wait behind them.
#[derive(Default)]
struct Order {
    /// Instances with a publish out -> their rows that came in since.
    out: HashMap<Instance, VecDeque<Pending>>,
}

impl Order {
    /// Of `rows`, in order, those that may go now; the others wait behind
    /// their instance's publish. Rows of one instance that arrive together
    /// go together.
    fn admit(&mut self, rows: Vec<Pending>) -> Vec<Pending> {
        let mut now = Vec::with_capacity(rows.len());
        let mut opened: HashSet<Instance> = HashSet::new();
        for row in rows {
            let Some(instance) = &row.instance else {
                now.push(row);
                continue;
            };
            if opened.contains(instance) {
                now.push(row);
            } else if let Some(waiting) = self.out.get_mut(instance) {
                waiting.push_back(row);
            } else {
                self.out.insert(instance.clone(), VecDeque::new());
                opened.insert(instance.clone());
                now.push(row);
            }
        }
        now
    }

    /// After a publish of these instances settled: the rows of each that
    /// must go again (they keep the instance's place), or else the rows that
    /// waited behind it.
    fn release(
        &mut self,
        settled: impl IntoIterator<Item = Instance>,
        again: &HashSet<Instance>,
    ) -> Vec<Pending> {
        let mut next = Vec::new();
        for instance in settled {
            if again.contains(&instance) {
                continue;
            }
            match self.out.get_mut(&instance) {
                Some(waiting) if !waiting.is_empty() => next.extend(waiting.drain(..)),
                Some(_) => {
                    self.out.remove(&instance);
                }
                None => {}
            }
        }
        next
    }
}

pub(super) async fn run(weak: Weak<Shared>, mut rows: mpsc::UnboundedReceiver<Vec<Pending>>) {
    let (settled_sender, mut settled) = mpsc::unbounded_channel();
    let (again_sender, mut again) = mpsc::unbounded_channel::<Vec<Pending>>();
    let mut order = Order::default();
    loop {
        let batch = tokio::select! {
            // In this order: rows to send again hold their instances'
            // places; settling frees places and the engine's count of work
            // in flight; then new rows.
            biased;
            Some(rows) = again.recv() => rows,
            Some(first) = settled.recv() => {
                let mut outcomes = vec![first];
                while let Ok(more) = settled.try_recv() {
                    outcomes.push(more);
                }
                let Some(shared) = weak.upgrade() else { return };
                mark(&shared, &mut order, outcomes, &again_sender).await
            }
            Some(first) = rows.recv() => {
                let mut batch = first;
                while batch.len() < MAX_SEND {
                    match rows.try_recv() {
                        Ok(more) => batch.extend(more),
                        Err(_) => break,
                    }
                }
                order.admit(batch)
            }
            else => return,
        };
        if batch.is_empty() {
            continue;
        }
        let Some(shared) = weak.upgrade() else { return };
        // While the store fails, what the relay sends would only be given
        // back by receivers on it, and could not be marked sent: it waits.
        let mut up = shared.health.watch();
        drop(shared);
        if up.wait_for(|up| *up).await.is_err() {
            return;
        }
        send(&weak, batch, &settled_sender).await;
    }
}

/// Hands one batch to the bus, trying again while the bus refuses it. The
/// engine is held only for each attempt, not across the waits between
/// them: an engine dropped while its bus is down stops, and its rows stay
/// in the store for the next run.
async fn send(
    weak: &Weak<Shared>,
    batch: Vec<Pending>,
    settled: &mpsc::UnboundedSender<(Vec<Pending>, Settled)>,
) {
    let mut failures = 0;
    info!(
        target: "switchyard::outbox",
        "relay: sending {}",
        batch.iter().map(|row| row.message.name.as_ref()).collect::<Vec<_>>().join(", ")
    );
    loop {
        let messages = batch.iter().map(|row| row.message.clone()).collect();
        let rows = batch.clone();
        let settled = settled.clone();
        let settle = Settle::new(move |outcome| {
            // The relay stops only with the engine; then the rows stay in
            // the store for the next run.
            let _ = settled.send((rows, outcome));
        });
        let Some(shared) = weak.upgrade() else { return };
        match shared.bus.publish(messages, settle).await {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                warn!(%error, failures, rows = batch.len(), "the bus did not take the outbox; trying again");
                let wait = shared.config.retry.backoff(failures);
                drop(shared);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Marks settled rows sent, dead-letters rejected ones, queues the
/// unacknowledged ones to go again after a wait, and returns the rows that
/// waited behind the instances now settled.
async fn mark(
    shared: &Arc<Shared>,
    order: &mut Order,
    outcomes: Vec<(Vec<Pending>, Settled)>,
    again_sender: &mpsc::UnboundedSender<Vec<Pending>>,
) -> Vec<Pending> {
    let now = shared.clock.now();
    let mut sent = Vec::new();
    let mut letters = Vec::new();
    let mut again = Vec::new();
    let mut instances = HashSet::new();
    for (rows, outcome) in outcomes {
        let rejected: HashMap<MessageId, String> =
            outcome.rejected.into_iter().map(|r| (r.id, r.reason)).collect();
        let unacknowledged: HashSet<MessageId> = outcome.unacknowledged.into_iter().collect();
        for row in rows {
            if let Some(instance) = &row.instance {
                instances.insert(instance.clone());
            }
            if let Some(reason) = rejected.get(&row.message.id) {
                warn!(message = %row.message.name, id = %row.message.id, %reason, "dead-lettered");
                sent.push(row.sequence);
                letters.push(NewDeadLetter {
                    letter: Letter::Message(row.message),
                    process: row.instance.map(|(process, _)| process.into_owned()),
                    reason: reason.clone(),
                    at: now,
                });
            } else if unacknowledged.contains(&row.message.id) {
                again.push(row);
            } else {
                sent.push(row.sequence);
            }
        }
    }
    if !letters.is_empty() {
        shared.record_dead_letters(letters).await;
    }
    if !sent.is_empty() {
        let count = sent.len();
        info!(target: "switchyard::outbox", "relay: {count} outbox row(s) delivered and marked sent");
        shared
            .persist("mark outbox rows sent", Access::Write, || {
                shared.store.mark_sent(sent.clone())
            })
            .await;
        shared.finish(count);
    }
    let held: HashSet<Instance> = again.iter().filter_map(|row| row.instance.clone()).collect();
    let released = order.release(instances, &held);
    if !again.is_empty() {
        // Counted as in flight still; they go back to the relay after a
        // wait, ahead of the rows their instances hold back.
        shared.counters.retried.fetch_add(again.len() as u64, Ordering::Relaxed);
        let backoff = shared.config.retry.backoff(1);
        let again_sender = again_sender.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = again_sender.send(again);
        });
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Body, MessageKind};

    fn row(sequence: u64, key: &str) -> Pending {
        Pending {
            sequence,
            message: Envelope::new("Ship", MessageKind::Command, Body::value(sequence)),
            instance: Some(instance(key)),
        }
    }

    fn sequences(rows: &[Pending]) -> Vec<u64> {
        rows.iter().map(|row| row.sequence).collect()
    }

    fn instance(key: &str) -> Instance {
        (Cow::Borrowed("Order"), Arc::from(key))
    }

    #[test]
    fn later_rows_of_an_instance_wait_for_its_publish_to_settle() {
        let mut order = Order::default();
        // Rows that arrive together go together.
        assert_eq!(sequences(&order.admit(vec![row(1, "a"), row(2, "a"), row(3, "b")])), [1, 2, 3]);
        // While a's publish is out, its next rows wait; c's go.
        assert_eq!(sequences(&order.admit(vec![row(4, "a"), row(5, "c"), row(6, "a")])), [5]);
        // a settled: its waiting rows go, in order.
        let released = order.release(vec![instance("a"), instance("b")], &HashSet::new());
        assert_eq!(sequences(&released), [4, 6]);
        // b has nothing out any more; a has 4 and 6 out.
        assert_eq!(sequences(&order.admit(vec![row(7, "b"), row(8, "a")])), [7]);
    }

    #[test]
    fn a_row_to_send_again_keeps_its_instance_held() {
        let mut order = Order::default();
        order.admit(vec![row(1, "a")]);
        assert!(order.admit(vec![row(2, "a")]).is_empty());
        // Row 1 must go again: row 2 keeps waiting behind it.
        let held = HashSet::from([instance("a")]);
        assert!(order.release(vec![instance("a")], &held).is_empty());
        // Row 1 went again and settled: row 2 goes.
        let released = order.release(vec![instance("a")], &HashSet::new());
        assert_eq!(sequences(&released), [2]);
    }
}
