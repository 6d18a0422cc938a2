//! Several nodes on one schema: each outbox row and each timer is held by
//! one live node at a time, taken over exactly once when its holder's lease
//! runs out, kept while the holder renews; a node started again under its
//! id takes its rows back at once; and the version check holds across
//! nodes.
//!
//! Leases run on the database's clock, which a test cannot move: these
//! tests use short leases and wait them out for real, a second or so.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use switchyard_postgres::PostgresStore;
use switchyard_runtime::store::{CommitOutcome, TimerChange};
use switchyard_runtime::{MessageId, Store};

const SHORT: Duration = Duration::from_millis(1_000);
const LONG: Duration = Duration::from_secs(60);

/// Waits until a lease of `SHORT`, taken before this call, has run out.
async fn outlive_short_lease() {
    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;
}

fn ids(rows: &[switchyard_runtime::store::OutboxRow]) -> BTreeSet<MessageId> {
    rows.iter().map(|row| row.message.id).collect()
}

/// Commits, on `store`, instance `a` with messages 10..14 and instance `b`
/// with message 14.
async fn commit_outbox(store: &PostgresStore) -> BTreeSet<MessageId> {
    let mut a = write("a", None, &[id(1)]);
    a.outbox = (10..14).map(message).collect();
    let mut b = write("b", None, &[id(2)]);
    b.outbox = vec![message(14)];
    let outcomes = commit(store, vec![a, b]).await;
    assert!(outcomes.iter().all(committed), "{outcomes:?}");
    (10..15).map(id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_rows_are_held_by_one_live_node_and_taken_over_exactly_once() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "outbox");
    let a = scratch.store("a", SHORT).await;
    let (b, c) = (scratch.store("b", LONG).await, scratch.store("c", LONG).await);
    let all = commit_outbox(&a).await;

    assert!(b.pending_outbox().await.unwrap().is_empty(), "b took rows a holds");
    assert!(b.claim_expired().await.unwrap().outbox.is_empty(), "b took rows a holds");
    assert!(c.pending_outbox().await.unwrap().is_empty(), "c took rows a holds");
    assert_eq!(ids(&a.pending_outbox().await.unwrap()), all, "a lost its own rows");

    outlive_short_lease().await;
    let (b1, b2, c1) = (b.clone(), b.clone(), c.clone());
    let claims = [
        tokio::spawn(async move { b1.claim_expired().await }),
        tokio::spawn(async move { b2.claim_expired().await }),
        tokio::spawn(async move { c1.claim_expired().await }),
    ];
    let mut taken = Vec::new();
    for claim in claims {
        taken.extend(claim.await.unwrap().unwrap().outbox);
    }
    assert_eq!(taken.len(), all.len(), "rows were taken twice, or not at all: {taken:?}");
    assert_eq!(ids(&taken), all);
    let sequences: Vec<u64> = taken.iter().map(|row| row.sequence).collect();

    // The new holders' leases are live: a, and the other node, get nothing.
    assert!(a.pending_outbox().await.unwrap().is_empty(), "a took back rows b or c holds");
    assert!(a.claim_expired().await.unwrap().outbox.is_empty());
    let held_by_b = ids(&b.pending_outbox().await.unwrap());
    let held_by_c = ids(&c.pending_outbox().await.unwrap());
    assert!(held_by_b.is_disjoint(&held_by_c), "b and c both hold {held_by_b:?} {held_by_c:?}");
    assert_eq!(&held_by_b | &held_by_c, all);

    // Any node may mark a row sent, whoever holds it.
    a.mark_sent(sequences[..2].to_vec()).await.unwrap();
    b.mark_sent(sequences[2..].to_vec()).await.unwrap();
    for store in [&a, &b, &c] {
        assert!(store.pending_outbox().await.unwrap().is_empty(), "a row marked sent stayed");
    }
}

/// Nodes starting together after a node died split its rows between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_split_a_dead_nodes_rows() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "split");
    let a = scratch.store("a", SHORT).await;
    let all = commit_outbox(&a).await;
    drop(a);
    let (b, c) = (scratch.store("b", LONG).await, scratch.store("c", LONG).await);
    outlive_short_lease().await;
    let (b1, c1) = (b.clone(), c.clone());
    let b_rows = tokio::spawn(async move { b1.pending_outbox().await });
    let c_rows = tokio::spawn(async move { c1.pending_outbox().await });
    let b_rows = ids(&b_rows.await.unwrap().unwrap());
    let c_rows = ids(&c_rows.await.unwrap().unwrap());
    assert!(b_rows.is_disjoint(&c_rows), "b and c both took {b_rows:?} {c_rows:?}");
    assert_eq!(&b_rows | &c_rows, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_are_held_by_one_live_node_and_taken_over_exactly_once() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "timers");
    let a = scratch.store("a", SHORT).await;
    let (b, c) = (scratch.store("b", LONG).await, scratch.store("c", LONG).await);
    let mut create = write("a", None, &[id(1)]);
    create.timers = vec![schedule("\"Remind\"", 50, 100), schedule("\"Expire\"", 90, 101)];
    commit_one(&a, create).await;
    let mut other = write("b", None, &[id(2)]);
    other.timers = vec![schedule("\"Remind\"", 70, 102)];
    commit_one(&a, other).await;
    let all: BTreeSet<MessageId> = [100, 101, 102].map(id).into();
    let timer_ids = |timers: &[switchyard_runtime::store::TimerRow]| -> BTreeSet<MessageId> {
        timers.iter().map(|timer| timer.id).collect()
    };

    assert!(b.pending_timers().await.unwrap().is_empty(), "b took timers a holds");
    assert!(c.claim_expired().await.unwrap().timers.is_empty(), "c took timers a holds");
    assert_eq!(timer_ids(&a.pending_timers().await.unwrap()), all);

    outlive_short_lease().await;
    let (b1, b2, c1) = (b.clone(), b.clone(), c.clone());
    let claims = [
        tokio::spawn(async move { b1.claim_expired().await }),
        tokio::spawn(async move { b2.claim_expired().await }),
        tokio::spawn(async move { c1.claim_expired().await }),
    ];
    let mut taken = Vec::new();
    for claim in claims {
        taken.extend(claim.await.unwrap().unwrap().timers);
    }
    assert_eq!(taken.len(), all.len(), "timers were taken twice, or not at all: {taken:?}");
    assert_eq!(timer_ids(&taken), all);
    assert!(a.pending_timers().await.unwrap().is_empty(), "a took back timers b or c holds");

    // Firing and cancelling remove timers whichever node holds them.
    let mut fire = write("a", Some(1), &[id(100)]);
    fire.timers = vec![
        TimerChange::Fired { timer: "\"Remind\"".into(), id: id(100) },
        TimerChange::Cancel { timer: "\"Expire\"".into() },
    ];
    assert!(committed(&commit_one(&a, fire).await));
    let left = [b.pending_timers().await.unwrap(), c.pending_timers().await.unwrap()].concat();
    assert_eq!(timer_ids(&left), [id(102)].into());
}

/// A timer scheduled again by another node moves to that node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_moved_by_another_node_is_held_by_it() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "moved");
    let (a, b) = (scratch.store("a", LONG).await, scratch.store("b", LONG).await);
    let mut create = write("a", None, &[id(1)]);
    create.timers = vec![schedule("\"Remind\"", 50, 100)];
    commit_one(&a, create).await;
    let mut moved = write("a", Some(1), &[id(2)]);
    moved.timers = vec![schedule("\"Remind\"", 80, 101)];
    commit_one(&b, moved).await;
    assert!(a.pending_timers().await.unwrap().is_empty(), "a still holds a timer b moved");
    let held = b.pending_timers().await.unwrap();
    assert_eq!(
        held.iter().map(|timer| (timer.at.0, timer.id)).collect::<Vec<_>>(),
        [(80, id(101))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_leases_keep_rows_from_other_nodes_until_renewal_stops() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "renew");
    let a = scratch.store("a", SHORT).await;
    let b = scratch.store("b", LONG).await;
    let all = commit_outbox(&a).await;
    let mut create = write("t", None, &[id(3)]);
    create.timers = vec![schedule("\"Remind\"", 50, 100)];
    commit_one(&a, create).await;

    // Renewing every quarter of the lease, for twice the lease.
    for _ in 0..8 {
        let renewed = a.renew_leases().await.unwrap();
        assert_eq!((renewed.outbox, renewed.timers), (all.len() as u64, 1));
        tokio::time::sleep(SHORT / 4).await;
        let claimed = b.claim_expired().await.unwrap();
        assert!(claimed.outbox.is_empty() && claimed.timers.is_empty(), "{claimed:?}");
    }
    outlive_short_lease().await;
    let claimed = b.claim_expired().await.unwrap();
    assert_eq!(ids(&claimed.outbox), all);
    assert_eq!(claimed.timers.len(), 1);
    assert_eq!(a.renew_leases().await.unwrap(), Default::default(), "a renewed rows b took");
}

/// A node that starts again under the same id takes back its rows at
/// once, though their leases have not run out; no other node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_again_takes_back_its_rows_at_once() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "restart");
    let first = scratch.store("a", LONG).await;
    let all = commit_outbox(&first).await;
    drop(first);
    let b = scratch.store("b", LONG).await;
    let again = scratch.store("a", LONG).await;
    assert!(b.claim_expired().await.unwrap().outbox.is_empty(), "b took rows of a live lease");
    assert_eq!(ids(&again.claim_expired().await.unwrap().outbox), all);
    assert!(again.claim_expired().await.unwrap().outbox.is_empty(), "rows were taken twice");
    assert_eq!(ids(&again.pending_outbox().await.unwrap()), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_version_check_holds_across_nodes() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "versions");
    let (a, b) = (scratch.store("a", LONG).await, scratch.store("b", LONG).await);
    commit_one(&a, write("x", None, &[id(1)])).await;
    let seen = b.load(P, vec![key("x")]).await.unwrap().pop().flatten().unwrap();
    assert_eq!(seen.version, 1);
    assert!(committed(&commit_one(&a, write("x", Some(1), &[id(2)])).await));
    let stale = commit_one(&b, write("x", Some(seen.version), &[id(3)])).await;
    assert_eq!(stale, CommitOutcome::Conflict, "b wrote over a's version");

    // Both nodes write version 2 at once: one wins, the other conflicts.
    for round in 0..10u64 {
        let expected = 2 + round;
        let (a1, b1) = (a.clone(), b.clone());
        let n = u128::from(round) * 2 + 10;
        let on_a =
            tokio::spawn(
                async move { commit_one(&a1, write("x", Some(expected), &[id(n)])).await },
            );
        let on_b =
            tokio::spawn(
                async move { commit_one(&b1, write("x", Some(expected), &[id(n + 1)])).await },
            );
        let outcomes = [on_a.await.unwrap(), on_b.await.unwrap()];
        let wins = outcomes.iter().filter(|outcome| committed(outcome)).count();
        assert_eq!(wins, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&CommitOutcome::Conflict), "round {round}: {outcomes:?}");
    }
    let stored = a.load(P, vec![key("x")]).await.unwrap().pop().flatten().unwrap();
    assert_eq!(stored.version, 12);
}
