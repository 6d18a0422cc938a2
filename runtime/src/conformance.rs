//! The suite every [`Store`] must pass: the same checks, in the same words,
//! for the in-memory store, SQLite, and any store written later (PostgreSQL
//! runs it too). Call [`run`] from a test with a function that makes an
//! empty store, as the in-memory store's test does:
//!
//! ```
//! # async fn test() {
//! switchyard_runtime::conformance::run(switchyard_runtime::MemoryStore::new).await;
//! # }
//! ```
//!
//! Each check panics with a sentence saying what the store got wrong; this
//! module is test support, and a failing assertion is how a test fails.

use std::sync::Arc;

use crate::message::{Body, Envelope, MessageId, MessageKind, Timestamp};
use crate::store::{
    Batch, CommitOutcome, InstanceWrite, Letter, NewDeadLetter, Slot, Store, TimerChange, TimerRow,
};

/// One check: its name, and the function that runs it on an empty store.
pub type Check = (&'static str, for<'a> fn(&'a dyn Store) -> crate::BoxFuture<'a, ()>);

/// Every check, in order.
pub const CHECKS: &[Check] = &[
    ("a created instance loads as written", |s| Box::pin(created_instance_loads(s))),
    ("an absent instance loads as none", |s| Box::pin(absent_instance_loads_as_none(s))),
    ("a stale version is a conflict and applies nothing", |s| Box::pin(stale_version_conflicts(s))),
    ("creating an existing instance is a conflict", |s| Box::pin(creating_twice_conflicts(s))),
    ("a handled message id is a duplicate and applies nothing", |s| Box::pin(duplicates(s))),
    ("inboxes are kept per process", |s| Box::pin(inbox_per_process(s))),
    ("each write of a batch applies on its own", |s| Box::pin(writes_apply_alone(s))),
    ("the outbox keeps commit order until marked sent", |s| Box::pin(outbox_order(s))),
    ("timers are scheduled, moved, cancelled and fired", |s| Box::pin(timers(s))),
    ("completing an instance drops its timers and keeps a tombstone", |s| Box::pin(tombstones(s))),
    ("pruning deletes old tombstones and inbox rows", |s| Box::pin(pruning(s))),
    ("dead letters are listed and replayed", |s| Box::pin(dead_letters(s))),
    ("a write with a slot is checked as one without", |s| Box::pin(slots(s))),
    ("a handler's inbox records a message once", |s| Box::pin(handler_inbox(s))),
    ("handlers' inboxes are apart from each other and from processes'", |s| {
        Box::pin(handler_inboxes_apart(s))
    }),
    ("pruning deletes old rows of handlers' inboxes", |s| Box::pin(handler_pruning(s))),
];

/// Runs every check, each on a fresh store from `fresh`.
pub async fn run<S: Store>(mut fresh: impl FnMut() -> S) {
    for (name, check) in CHECKS {
        let store = fresh();
        tracing::info!(check = name, "store conformance");
        check(&store).await;
    }
}

const P: &str = "Order";

fn key(text: &str) -> Arc<str> {
    Arc::from(format!("\"{text}\""))
}

fn id(n: u128) -> MessageId {
    MessageId::from_uuid(uuid::Uuid::from_u128(n))
}

fn write(key_text: &str, expected: Option<u64>, inbox: &[MessageId]) -> InstanceWrite {
    let version = expected.unwrap_or(0) + 1;
    InstanceWrite {
        process: P,
        key: key(key_text),
        expected_version: expected,
        version,
        state: Body::value(format!("State{version}")),
        data: Body::value(vec![version]),
        completed_at: None,
        inbox: inbox.into(),
        at: Timestamp(1_000),
        outbox: Vec::new(),
        timers: Vec::new(),
        slot: None,
    }
}

fn message(n: u128, name: &'static str) -> Envelope {
    Envelope {
        id: id(n),
        name: name.into(),
        kind: MessageKind::Command,
        body: Body::value(vec![n as u64]),
        causation: Some(id(n + 1_000)),
        time: Timestamp(2_000 + n as u64),
    }
}

async fn commit(store: &dyn Store, writes: Vec<InstanceWrite>) -> Vec<CommitOutcome> {
    let mut batch = Batch { instances: writes, dead_letters: Vec::new() };
    let outcomes = store.commit(&mut batch).await.expect("the store failed a commit");
    assert!(
        batch.instances.is_empty() && batch.dead_letters.is_empty(),
        "the store left writes in the batch it committed"
    );
    outcomes
}

async fn commit_one(store: &dyn Store, write: InstanceWrite) -> CommitOutcome {
    commit(store, vec![write]).await.pop().expect("the store gave no outcome for a write")
}

fn committed(outcome: &CommitOutcome) -> bool {
    matches!(outcome, CommitOutcome::Committed { .. })
}

async fn version_of(store: &dyn Store, key_text: &str) -> Option<u64> {
    let mut loaded = store.load(P, vec![key(key_text)]).await.expect("the store failed a load");
    loaded.pop().flatten().map(|record| record.version)
}

async fn created_instance_loads(store: &dyn Store) {
    let outcome = commit_one(store, write("a", None, &[id(1)])).await;
    assert!(committed(&outcome), "creating an instance gave {outcome:?}");
    let loaded = store.load(P, vec![key("a")]).await.unwrap().pop().flatten();
    let record = loaded.expect("the created instance does not load");
    assert_eq!(record.version, 1);
    assert_eq!(record.state.decode::<String>().unwrap(), "State1");
    assert_eq!(record.data.decode::<Vec<u64>>().unwrap(), vec![1]);
    assert_eq!(record.completed_at, None);
    assert!(record.timers.is_empty());
}

async fn absent_instance_loads_as_none(store: &dyn Store) {
    commit_one(store, write("a", None, &[id(1)])).await;
    let loaded = store.load(P, vec![key("b"), key("a")]).await.unwrap();
    assert_eq!(loaded.len(), 2, "a load returns one entry per key");
    assert!(loaded[0].is_none(), "an instance never written loaded as {:?}", loaded[0]);
    assert!(loaded[1].is_some(), "keys are answered in the order asked");
    let other = store.load("Other", vec![key("a")]).await.unwrap();
    assert!(other[0].is_none(), "instances of another process are apart");
}

async fn stale_version_conflicts(store: &dyn Store) {
    commit_one(store, write("a", None, &[id(1)])).await;
    let outcome = commit_one(store, write("a", Some(7), &[id(2)])).await;
    assert_eq!(outcome, CommitOutcome::Conflict);
    assert_eq!(version_of(store, "a").await, Some(1));
    // The conflicting write left no inbox row behind.
    let outcome = commit_one(store, write("a", Some(1), &[id(2)])).await;
    assert!(committed(&outcome), "after a conflict the same message commits, got {outcome:?}");
    assert_eq!(version_of(store, "a").await, Some(2));
}

async fn creating_twice_conflicts(store: &dyn Store) {
    commit_one(store, write("a", None, &[id(1)])).await;
    let outcome = commit_one(store, write("a", None, &[id(2)])).await;
    assert_eq!(outcome, CommitOutcome::Conflict);
}

async fn duplicates(store: &dyn Store) {
    commit_one(store, write("a", None, &[id(1)])).await;
    let outcome = commit_one(store, write("a", Some(1), &[id(2), id(1)])).await;
    assert_eq!(outcome, CommitOutcome::Duplicate(vec![id(1)]));
    assert_eq!(version_of(store, "a").await, Some(1));
    let outcome = commit_one(store, write("a", Some(1), &[id(2)])).await;
    assert!(committed(&outcome), "the message not handled before still commits, got {outcome:?}");
    let outcome = commit_one(store, write("a", Some(2), &[id(2)])).await;
    assert_eq!(outcome, CommitOutcome::Duplicate(vec![id(2)]));
    assert_eq!(version_of(store, "a").await, Some(2));
}

async fn inbox_per_process(store: &dyn Store) {
    commit_one(store, write("a", None, &[id(1)])).await;
    let mut other = write("a", None, &[id(1)]);
    other.process = "Other";
    let outcome = commit_one(store, other).await;
    assert!(committed(&outcome), "one message handled by two processes gave {outcome:?}");
}

async fn writes_apply_alone(store: &dyn Store) {
    commit_one(store, write("a", None, &[id(1)])).await;
    let outcomes = commit(
        store,
        vec![
            write("a", Some(9), &[id(2)]),
            write("b", None, &[id(3)]),
            write("a", Some(1), &[id(1)]),
        ],
    )
    .await;
    assert_eq!(outcomes.len(), 3, "a batch gives one outcome per write");
    assert_eq!(outcomes[0], CommitOutcome::Conflict);
    assert!(committed(&outcomes[1]), "a good write next to a conflict gave {:?}", outcomes[1]);
    assert_eq!(outcomes[2], CommitOutcome::Duplicate(vec![id(1)]));
    assert_eq!(version_of(store, "b").await, Some(1));
    assert_eq!(version_of(store, "a").await, Some(1));
    // The conflicting write recorded no inbox row.
    let outcome = commit_one(store, write("a", Some(1), &[id(2)])).await;
    assert!(committed(&outcome), "{outcome:?}");
}

async fn outbox_order(store: &dyn Store) {
    let mut first = write("a", None, &[id(1)]);
    first.outbox = vec![message(10, "Ship"), message(11, "Bill")];
    let mut second = write("b", None, &[id(2)]);
    second.outbox = vec![message(12, "Ship")];
    let outcomes = commit(store, vec![first, second]).await;
    let sequences: Vec<u64> = outcomes
        .iter()
        .flat_map(|o| match o {
            CommitOutcome::Committed { outbox, .. } => outbox.clone(),
            other => panic!("an outbox write gave {other:?}"),
        })
        .collect();
    assert_eq!(sequences.len(), 3, "each outbox row gets a sequence number");
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequences follow commit order: {sequences:?}"
    );

    let pending = store.pending_outbox().await.unwrap();
    let ids: Vec<MessageId> = pending.iter().map(|row| row.message.id).collect();
    assert_eq!(ids, vec![id(10), id(11), id(12)]);
    let row = &pending[1];
    assert_eq!((row.sequence, row.process.as_str(), row.key.as_str()), (sequences[1], P, "\"a\""));
    let expected = message(11, "Bill");
    assert_eq!(row.message.name, expected.name);
    assert_eq!(row.message.kind, expected.kind);
    assert_eq!(row.message.causation, expected.causation);
    assert_eq!(row.message.time, expected.time);
    assert_eq!(row.message.body.decode::<Vec<u64>>().unwrap(), vec![11]);

    store.mark_sent(vec![sequences[0], sequences[2]]).await.unwrap();
    let left: Vec<MessageId> =
        store.pending_outbox().await.unwrap().iter().map(|row| row.message.id).collect();
    assert_eq!(left, vec![id(11)]);
    // Marking a row sent twice is harmless.
    store.mark_sent(vec![sequences[0]]).await.unwrap();
    let mut third = write("c", None, &[id(3)]);
    third.outbox = vec![message(13, "Ship")];
    let outcome = commit_one(store, third).await;
    let CommitOutcome::Committed { outbox, .. } = outcome else { panic!("gave {outcome:?}") };
    assert!(outbox[0] > sequences[2], "a sequence number is never used twice");
}

fn schedule(timer: &str, at: u64, n: u128) -> TimerChange {
    TimerChange::Schedule { timer: Arc::from(timer), at: Timestamp(at), id: id(n) }
}

async fn timers(store: &dyn Store) {
    let mut create = write("a", None, &[id(1)]);
    create.timers = vec![schedule("\"Remind\"", 50, 100), schedule("\"Expire\"", 90, 101)];
    commit_one(store, create).await;
    let mut other = write("b", None, &[id(2)]);
    other.timers = vec![schedule("\"Remind\"", 70, 102)];
    commit_one(store, other).await;

    let mut pending = store.pending_timers().await.unwrap();
    pending.sort_by_key(|t| (t.at, t.id));
    let seen: Vec<(&str, &str, u64)> =
        pending.iter().map(|t| (t.key.as_str(), t.timer.as_str(), t.at.0)).collect();
    assert_eq!(
        seen,
        [("\"a\"", "\"Remind\"", 50), ("\"b\"", "\"Remind\"", 70), ("\"a\"", "\"Expire\"", 90)]
    );
    assert_eq!(pending[0].process, P);

    // Moving, firing with an old id (no effect), cancelling.
    let mut change = write("a", Some(1), &[id(3)]);
    change.timers = vec![
        schedule("\"Remind\"", 60, 103),
        TimerChange::Fired { timer: Arc::from("\"Remind\""), id: id(100) },
        TimerChange::Cancel { timer: Arc::from("\"Expire\"") },
    ];
    commit_one(store, change).await;
    let record = store.load(P, vec![key("a")]).await.unwrap().pop().flatten().unwrap();
    let timers: Vec<(&str, u64, MessageId)> =
        record.timers.iter().map(|t| (&*t.timer, t.at.0, t.id)).collect();
    assert_eq!(timers, [("\"Remind\"", 60, id(103))], "a timer scheduled again moves");

    // Firing with the current id drops it.
    let mut fire = write("a", Some(2), &[id(103)]);
    fire.timers = vec![TimerChange::Fired { timer: Arc::from("\"Remind\""), id: id(103) }];
    commit_one(store, fire).await;
    let record = store.load(P, vec![key("a")]).await.unwrap().pop().flatten().unwrap();
    assert!(record.timers.is_empty(), "a fired timer is gone: {:?}", record.timers);
    assert_eq!(store.pending_timers().await.unwrap().len(), 1);
}

async fn tombstones(store: &dyn Store) {
    let mut create = write("a", None, &[id(1)]);
    create.timers = vec![schedule("\"Remind\"", 50, 100)];
    commit_one(store, create).await;
    let mut complete = write("a", Some(1), &[id(2)]);
    complete.completed_at = Some(Timestamp(5_000));
    commit_one(store, complete).await;
    let record = store.load(P, vec![key("a")]).await.unwrap().pop().flatten();
    let record = record.expect("a completed instance stays as a tombstone");
    assert_eq!(record.completed_at, Some(Timestamp(5_000)));
    assert_eq!(record.state.decode::<String>().unwrap(), "State2");
    assert!(record.timers.is_empty(), "completion drops timers");
    assert!(store.pending_timers().await.unwrap().is_empty());
}

async fn pruning(store: &dyn Store) {
    let mut old = write("old", None, &[id(1)]);
    old.completed_at = Some(Timestamp(1_000));
    old.at = Timestamp(1_000);
    let mut recent = write("recent", None, &[id(2)]);
    recent.completed_at = Some(Timestamp(9_000));
    recent.at = Timestamp(9_000);
    let mut running = write("running", None, &[id(3)]);
    running.at = Timestamp(1_000);
    commit(store, vec![old, recent, running]).await;

    let pruned = store.prune(Timestamp(5_000)).await.unwrap();
    assert_eq!((pruned.tombstones, pruned.inbox), (1, 2));
    assert_eq!(version_of(store, "old").await, None);
    assert_eq!(version_of(store, "recent").await, Some(1));
    assert_eq!(version_of(store, "running").await, Some(1), "running instances are never pruned");
    // The pruned inbox rows no longer make duplicates.
    let outcome = commit_one(store, write("old", None, &[id(1)])).await;
    assert!(committed(&outcome), "after pruning, the old key starts afresh: {outcome:?}");
}

/// A slot is only a shortcut: whatever slot a write gives, or none, the
/// store checks and applies it as the key and version say.
async fn slots(store: &dyn Store) {
    let created = commit_one(store, write("a", None, &[id(1)])).await;
    let CommitOutcome::Committed { slot: created, .. } = created else {
        panic!("creating gave {created:?}")
    };
    commit_one(store, write("b", None, &[id(2)])).await;
    let loaded = store.load(P, vec![key("a")]).await.unwrap().pop().flatten();
    let loaded = loaded.expect("a created instance loads").slot;
    if let (Some(created), Some(loaded)) = (&created, &loaded) {
        assert!(created == loaded, "one instance, one slot: creating and loading gave two");
    }
    let with = |mut write: InstanceWrite, slot: &Option<Slot>| {
        write.slot = slot.clone();
        write
    };
    let outcome = commit_one(store, with(write("a", Some(7), &[id(3)]), &loaded)).await;
    assert_eq!(outcome, CommitOutcome::Conflict, "a stale version conflicts, slot or not");
    let outcome = commit_one(store, with(write("a", Some(1), &[id(1)]), &loaded)).await;
    assert_eq!(outcome, CommitOutcome::Duplicate(vec![id(1)]), "the inbox holds, slot or not");
    let outcome = commit_one(store, with(write("a", None, &[id(3)]), &loaded)).await;
    assert_eq!(outcome, CommitOutcome::Conflict, "creating an existing instance conflicts");
    // Another instance's slot does not lead the write to that instance.
    let outcome = commit_one(store, with(write("b", Some(1), &[id(3)]), &loaded)).await;
    assert!(committed(&outcome), "a write for b with a's slot gave {outcome:?}");
    assert_eq!(version_of(store, "a").await, Some(1), "a's slot moved a on b's write");
    assert_eq!(version_of(store, "b").await, Some(2));
    let outcome = commit_one(store, with(write("a", Some(1), &[id(4)]), &loaded)).await;
    assert!(committed(&outcome), "a write with its instance's slot gave {outcome:?}");
    assert_eq!(version_of(store, "a").await, Some(2));
    // A pruned instance is gone, whatever slot a write still has of it.
    let mut complete = with(write("a", Some(2), &[id(5)]), &loaded);
    complete.completed_at = Some(Timestamp(1_000));
    commit_one(store, complete).await;
    store.prune(Timestamp(5_000)).await.unwrap();
    let outcome = commit_one(store, with(write("a", Some(3), &[id(6)]), &loaded)).await;
    assert_eq!(outcome, CommitOutcome::Conflict, "a write to a pruned instance conflicts");
    let outcome = commit_one(store, with(write("a", None, &[id(6)]), &loaded)).await;
    assert!(committed(&outcome), "after pruning, the key starts afresh, slot or not: {outcome:?}");
    assert_eq!(version_of(store, "a").await, Some(1));
}

async fn dead_letters(store: &dyn Store) {
    let mut create = write("a", None, &[id(1)]);
    create.timers = vec![schedule("\"Remind\"", 50, 100)];
    commit_one(store, create).await;
    let timer = TimerRow {
        process: P.to_owned(),
        key: "\"a\"".to_owned(),
        timer: "\"Remind\"".to_owned(),
        at: Timestamp(50),
        id: id(100),
    };
    let letters = vec![
        NewDeadLetter {
            letter: Letter::Message(message(20, "Ship")),
            process: None,
            reason: "no handler".to_owned(),
            at: Timestamp(7_000),
        },
        NewDeadLetter {
            letter: Letter::Timer(timer.clone()),
            process: Some(P.to_owned()),
            reason: "`decide` panicked".to_owned(),
            at: Timestamp(7_001),
        },
    ];
    let mut batch = Batch { instances: Vec::new(), dead_letters: letters };
    let outcomes = store.commit(&mut batch).await.unwrap();
    assert!(batch.dead_letters.is_empty(), "the store left dead letters in the batch");
    assert!(outcomes.is_empty());
    assert!(
        store.pending_timers().await.unwrap().is_empty(),
        "a dead-lettered timer is no longer pending"
    );

    let listed = store.dead_letters().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].id < listed[1].id, "dead letters are listed oldest first");
    assert_eq!((listed[0].reason.as_str(), listed[0].at), ("no handler", Timestamp(7_000)));
    assert_eq!(listed[1].process.as_deref(), Some(P));
    match (&listed[0].letter, &listed[1].letter) {
        (Letter::Message(message), Letter::Timer(listed_timer)) => {
            assert_eq!((message.id, &*message.name), (id(20), "Ship"));
            assert_eq!(message.body.decode::<Vec<u64>>().unwrap(), vec![20]);
            assert_eq!(*listed_timer, timer);
        }
        other => panic!("the letters came back as {other:?}"),
    }

    let replayed = store.replay(vec![listed[0].id, listed[1].id, 999_999], Timestamp(8_000)).await;
    let replayed = replayed.unwrap();
    assert_eq!(replayed.messages.len(), 1);
    assert_eq!(replayed.messages[0].message.id, id(20));
    assert_eq!(replayed.timers.len(), 1);
    assert_eq!(replayed.timers[0].at, Timestamp(8_000), "a replayed timer is due at once");
    assert!(store.dead_letters().await.unwrap().is_empty());
    let pending: Vec<MessageId> =
        store.pending_outbox().await.unwrap().iter().map(|row| row.message.id).collect();
    assert_eq!(pending, vec![id(20)]);
    let timers = store.pending_timers().await.unwrap();
    assert_eq!(timers.len(), 1);
    assert_eq!((timers[0].id, timers[0].at), (id(100), Timestamp(8_000)));
}

const SHIP: &str = "handler:Ship";
const BILL: &str = "handler:Bill";

async fn handled(store: &dyn Store, scope: &str, n: u128) -> bool {
    store.handled(scope, id(n)).await.expect("the store failed `handled`")
}

async fn mark_handled(store: &dyn Store, scope: &str, n: u128, at: u64) -> bool {
    store.mark_handled(scope, id(n), Timestamp(at)).await.expect("the store failed `mark_handled`")
}

async fn handler_inbox(store: &dyn Store) {
    assert!(!handled(store, SHIP, 1).await, "a message never handled is handled");
    assert!(mark_handled(store, SHIP, 1, 1_000).await, "marking a new message gave false");
    assert!(handled(store, SHIP, 1).await, "a message marked handled is not handled");
    assert!(!mark_handled(store, SHIP, 1, 2_000).await, "marking a message twice gave true");
    assert!(handled(store, SHIP, 1).await);
    assert!(!handled(store, SHIP, 2).await, "another message of the scope is handled");
}

/// A message can reach a handler, another handler and a process: each
/// handles it once, and none of them stands for the others.
async fn handler_inboxes_apart(store: &dyn Store) {
    assert!(mark_handled(store, SHIP, 1, 1_000).await);
    assert!(!handled(store, BILL, 1).await, "one handler's inbox answered for another's");
    assert!(mark_handled(store, BILL, 1, 1_000).await, "one handler's row kept another's out");
    let outcome = commit_one(store, write("a", None, &[id(1)])).await;
    assert!(committed(&outcome), "a handler's row made a process's write {outcome:?}");
    commit_one(store, write("b", None, &[id(2)])).await;
    assert!(!handled(store, SHIP, 2).await, "a process's inbox answered for a handler's");
    let scope_of_process = format!("handler:{P}");
    assert!(
        !handled(store, &scope_of_process, 2).await,
        "a process's inbox answered for a handler's"
    );
    assert!(mark_handled(store, SHIP, 2, 1_000).await, "a process's row kept a handler's out");
}

async fn handler_pruning(store: &dyn Store) {
    mark_handled(store, SHIP, 1, 1_000).await;
    mark_handled(store, SHIP, 2, 5_000).await;
    mark_handled(store, BILL, 3, 9_000).await;
    mark_handled(store, BILL, 4, 4_999).await;
    let pruned = store.prune(Timestamp(5_000)).await.unwrap();
    assert_eq!(pruned.inbox, 2, "pruning counts the handlers' rows older than `before`");
    assert!(!handled(store, SHIP, 1).await, "a row older than `before` was kept");
    assert!(!handled(store, BILL, 4).await, "a row older than `before` was kept");
    assert!(handled(store, SHIP, 2).await, "a row of `before` itself was pruned");
    assert!(handled(store, BILL, 3).await, "a newer row was pruned");
    assert!(mark_handled(store, SHIP, 1, 9_000).await, "a pruned row still counted as handled");
}
