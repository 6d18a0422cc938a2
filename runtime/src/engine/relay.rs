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

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Shared;
use crate::bus::{Settle, Settled};
use crate::message::{Envelope, MessageId};
use crate::store::{Letter, NewDeadLetter};

/// A committed outbox row on its way.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) sequence: u64,
    pub(super) message: Envelope,
}

/// The most rows handed to the bus at once.
const MAX_SEND: usize = 4096;

pub(super) async fn run(weak: Weak<Shared>, mut rows: mpsc::UnboundedReceiver<Vec<Pending>>) {
    let (settled_sender, settled) = mpsc::unbounded_channel();
    tokio::spawn(mark(weak.clone(), settled));
    while let Some(mut batch) = rows.recv().await {
        while batch.len() < MAX_SEND {
            match rows.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let Some(shared) = weak.upgrade() else { return };
        send(&shared, batch, &settled_sender).await;
    }
}

/// Hands one batch to the bus, trying again while the bus refuses it.
async fn send(
    shared: &Shared,
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
            // The marker stops only with the engine; then the rows stay in
            // the store for the next run.
            let _ = settled.send((rows, outcome));
        });
        match shared.bus.publish(messages, settle).await {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                shared.counters.retried.fetch_add(1, Ordering::Relaxed);
                warn!(%error, failures, rows = batch.len(), "the bus did not take the outbox; trying again");
                tokio::time::sleep(shared.config.retry.backoff(failures)).await;
            }
        }
    }
}

/// Marks settled rows sent, dead-letters rejected ones, and queues the
/// unacknowledged ones again.
async fn mark(weak: Weak<Shared>, mut settled: mpsc::UnboundedReceiver<(Vec<Pending>, Settled)>) {
    while let Some(first) = settled.recv().await {
        let mut outcomes = vec![first];
        while let Ok(more) = settled.try_recv() {
            outcomes.push(more);
        }
        let Some(shared) = weak.upgrade() else { return };
        let now = shared.clock.now();
        let mut sent = Vec::new();
        let mut letters = Vec::new();
        let mut again = Vec::new();
        for (rows, outcome) in outcomes {
            let rejected: HashMap<MessageId, String> =
                outcome.rejected.into_iter().map(|r| (r.id, r.reason)).collect();
            let unacknowledged: HashSet<MessageId> = outcome.unacknowledged.into_iter().collect();
            for row in rows {
                if let Some(reason) = rejected.get(&row.message.id) {
                    warn!(message = %row.message.name, id = %row.message.id, %reason, "dead-lettered");
                    sent.push(row.sequence);
                    letters.push(NewDeadLetter {
                        letter: Letter::Message(row.message),
                        process: None,
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
            shared.persist("mark outbox rows sent", || shared.store.mark_sent(sent.clone())).await;
            shared.finish(count);
        }
        if !again.is_empty() {
            // Counted as in flight still; they go back to the relay after a wait.
            shared.counters.retried.fetch_add(again.len() as u64, Ordering::Relaxed);
            let backoff = shared.config.retry.backoff(1);
            let relay = shared.relay.clone();
            drop(shared);
            tokio::spawn(async move {
                tokio::time::sleep(backoff).await;
                let _ = relay.send(again);
            });
        }
    }
}
