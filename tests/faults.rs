//! Fault injection: the engine under a store that fails and then answers
//! again, timers due while it fails, a handler that hangs, two engines
//! racing on one store, a message redelivered after its instance moved on,
//! and an event nobody takes. Each test injects the fault and proves that
//! nothing was lost, done twice, stalled or dead-lettered for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard::testing::FaultyStore;
use switchyard::{
    Body, CommandContext, Engine, EngineBuilder, Envelope, Error, HandlerError, HandlerOptions,
    InProcessBus, InstanceStatus, ManualClock, MemoryStore, MessageId, MessageKind, Store,
};

switchyard::process! {
    /// An account: opened, then deposits counted one by one, a statement
    /// an hour after opening, and a freeze during which deposits are ignored.
    process Account {
        correlate by account: u32

        timer Statement

        data {
            deposits: u32 = 0
        }

        initial state New {
            on Opened {
                schedule Statement after 1h
                -> Open
            }
            ignore Deposited, Frozen, Thawed
        }

        state Open {
            on Deposited {
                set deposits = data.deposits + 1
                send Record { account: id, deposit: event.number, count: data.deposits }
            }
            on Statement { send SendStatement { account: id, deposits: data.deposits } }
            on Frozen { -> Frozen }
            ignore Opened, Thawed
        }

        state Frozen {
            on Thawed { -> Open }
            on Statement { send SendStatement { account: id, deposits: data.deposits } }
            ignore Opened, Deposited, Frozen
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
pub struct Opened {
    pub account: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
pub struct Deposited {
    pub account: u32,
    pub number: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
pub struct Frozen {
    pub account: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
pub struct Thawed {
    pub account: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, switchyard::Command)]
pub struct Record {
    pub account: u32,
    pub deposit: u32,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, switchyard::Command)]
pub struct SendStatement {
    pub account: u32,
    pub deposits: u32,
}

const HOUR: Duration = Duration::from_secs(3600);

/// What the command handlers received: each command by its id, and how
/// many times each id arrived.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<BTreeMap<MessageId, (String, u32)>>>);

impl Received {
    fn note(&self, id: MessageId, what: String) {
        self.0.lock().unwrap().entry(id).or_insert((what, 0)).1 += 1;
    }

    /// The commands received, once each by id.
    fn commands(&self) -> Vec<String> {
        self.0.lock().unwrap().values().map(|(what, _)| what.clone()).collect()
    }

    /// How many distinct ids arrived.
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// `Account` with handlers that note every command they receive.
fn accounts(builder: EngineBuilder, received: &Received) -> EngineBuilder {
    let (records, statements) = (received.clone(), received.clone());
    builder
        .process::<Account>()
        .handle(move |record: Record, ctx: CommandContext| {
            let received = records.clone();
            async move {
                received.note(ctx.message_id(), format!("{record:?}"));
                Ok::<_, HandlerError>(())
            }
        })
        .handle(move |statement: SendStatement, ctx: CommandContext| {
            let received = statements.clone();
            async move {
                received.note(ctx.message_id(), format!("{statement:?}"));
                Ok::<_, HandlerError>(())
            }
        })
}

/// Waits for the engine to be idle, or fails the test if it is not within
/// ten minutes of tokio's (paused) time: a stall is a failure, not a hang.
async fn idle(engine: &Engine) {
    let waited = tokio::time::timeout(Duration::from_secs(600), engine.idle()).await;
    assert!(waited.is_ok(), "the engine stalled: {:?}", engine.stats());
}

/// Lets the engine's tasks run for `duration` of tokio's (paused) time.
async fn run_for(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_holds_the_work_and_dead_letters_none_of_it() {
    let (store, received) = (FaultyStore::new(MemoryStore::new()), Received::default());
    let engine = accounts(Engine::builder(), &received)
        .store(store.clone())
        .clock(ManualClock::default())
        .build();
    idle(&engine).await;
    store.set_down(true);
    for account in 0..20 {
        engine.publish(Opened { account });
        engine.publish(Deposited { account, number: 1 });
    }
    // A minute of failures: a hundred times what the retry policy's
    // attempts used to allow before dead-lettering everything.
    run_for(Duration::from_secs(60)).await;
    let stats = engine.stats();
    assert!(stats.store_down_since.is_some(), "{stats:?}");
    assert_eq!((stats.handled, stats.dead_lettered, stats.outages), (0, 0, 1), "{stats:?}");
    assert!(store.failed_calls() > 10);
    assert_eq!(received.len(), 0);

    store.set_down(false);
    idle(&engine).await;
    let stats = engine.stats();
    assert_eq!(stats.store_down_since, None, "{stats:?}");
    assert_eq!((stats.handled, stats.dead_lettered, stats.outages), (40, 0, 1), "{stats:?}");
    assert!(engine.dead_letters().await.unwrap().is_empty());
    let expected: BTreeSet<String> =
        (0..20).map(|account| format!("{:?}", Record { account, deposit: 1, count: 1 })).collect();
    assert_eq!(received.commands().into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(received.len(), 20, "a command arrived under two ids");
}

#[tokio::test(start_paused = true)]
async fn deliveries_from_a_bus_are_given_back_while_the_store_is_out() {
    // Another engine publishes through a shared bus to one whose store is
    // out: the deliveries are given back, and arrive once it answers.
    let (store, received) = (FaultyStore::new(MemoryStore::new()), Received::default());
    let bus = InProcessBus::new();
    let engine = accounts(Engine::builder(), &received)
        .store(store.clone())
        .bus(bus.clone())
        .clock(ManualClock::default())
        .build();
    let publisher = Engine::builder().bus(bus).build();
    idle(&engine).await;
    store.set_down(true);
    // Something to find the outage with.
    publisher.publish(Opened { account: 1 });
    run_for(Duration::from_secs(5)).await;
    assert!(engine.stats().store_down_since.is_some());
    let refused = engine.submit(Envelope::event(Opened { account: 2 })).await;
    assert!(matches!(refused, Err(Error::Unacknowledged { .. })), "{refused:?}");
    publisher.publish(Deposited { account: 1, number: 1 });
    run_for(Duration::from_secs(5)).await;

    store.set_down(false);
    idle(&engine).await;
    idle(&publisher).await;
    idle(&engine).await;
    assert_eq!(engine.stats().dead_lettered + publisher.stats().dead_lettered, 0);
    assert_eq!(
        received.commands(),
        vec![format!("{:?}", Record { account: 1, deposit: 1, count: 1 })]
    );
    assert!(matches!(
        engine.instance::<Account>(&1).await.unwrap(),
        Some(InstanceStatus::Running { state: AccountState::Open, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_timer_due_while_the_store_fails_fires_once_it_answers() {
    let (store, received) = (FaultyStore::new(MemoryStore::new()), Received::default());
    let clock = ManualClock::default();
    let engine =
        accounts(Engine::builder(), &received).store(store.clone()).clock(clock.clone()).build();
    engine.publish(Opened { account: 7 });
    idle(&engine).await;
    store.set_down(true);
    clock.advance(HOUR + Duration::from_secs(1));
    // The due timer is taken up, its commit fails, and keeps failing.
    run_for(Duration::from_secs(30)).await;
    assert_eq!((engine.stats().timers_fired, received.len()), (0, 0));
    assert!(engine.stats().store_down_since.is_some());

    store.set_down(false);
    idle(&engine).await;
    assert_eq!(engine.stats().timers_fired, 1);
    assert_eq!(
        received.commands(),
        vec![format!("{:?}", SendStatement { account: 7, deposits: 0 })]
    );
    assert!(engine.timers::<Account>(&7).await.unwrap().is_empty());
    assert!(engine.dead_letters().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hung_handler_times_out_is_retried_and_holds_back_nothing() {
    let received = Received::default();
    let clock = ManualClock::default();
    let hangs = Arc::new(AtomicU32::new(2));
    let (records, hanging) = (received.clone(), hangs.clone());
    let engine = Engine::builder()
        .process::<Account>()
        .clock(clock.clone())
        .handle_with(HandlerOptions::default().timeout(Duration::from_secs(2)), {
            move |record: Record, ctx: CommandContext| {
                let (received, hanging) = (records.clone(), hanging.clone());
                async move {
                    // The first deposit's first two attempts never finish.
                    if record.deposit == 1 && hanging.load(Ordering::SeqCst) > 0 {
                        hanging.fetch_sub(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                    }
                    received.note(ctx.message_id(), format!("{record:?}"));
                    Ok::<_, HandlerError>(())
                }
            }
        })
        // Statements hang for good: past the engine's timeout, on every
        // attempt the retry policy allows.
        .handler_timeout(Duration::from_secs(1))
        .handle(|_: SendStatement, _: CommandContext| async {
            std::future::pending::<Result<(), HandlerError>>().await
        })
        .build();
    engine.publish(Opened { account: 3 });
    for number in 1..=3 {
        engine.publish(Deposited { account: 3, number });
    }
    idle(&engine).await;
    let records = |numbers: std::ops::RangeInclusive<u32>| -> Vec<String> {
        numbers.map(|n| format!("{:?}", Record { account: 3, deposit: n, count: n })).collect()
    };
    let mut commands = received.commands();
    commands.sort();
    assert_eq!(commands, records(1..=3));
    assert_eq!(engine.stats().timeouts, 2);

    // The statement hangs on every attempt: `idle` still returns, with the
    // statement in the dead letters, and the account goes on.
    clock.advance(HOUR);
    idle(&engine).await;
    let letters = engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].name(), "SendStatement");
    assert!(letters[0].reason.contains("did not finish within 1s"), "{}", letters[0].reason);
    assert_eq!(engine.stats().timeouts, 2 + 5);
    engine.publish(Deposited { account: 3, number: 4 });
    idle(&engine).await;
    let mut commands = received.commands();
    commands.sort();
    assert_eq!(commands, records(1..=4));
}

#[tokio::test(start_paused = true)]
async fn an_input_ignored_then_redelivered_after_its_instance_moved_on_is_a_duplicate() {
    let received = Received::default();
    let engine = accounts(Engine::builder(), &received).clock(ManualClock::default()).build();
    engine.publish(Opened { account: 4 });
    engine.publish(Frozen { account: 4 });
    // Ignored while the account is frozen.
    let deposit = Envelope::event(Deposited { account: 4, number: 1 });
    engine.submit(deposit.clone()).await.unwrap();
    engine.publish(Thawed { account: 4 });
    idle(&engine).await;
    assert_eq!(engine.stats().ignored, 1);
    // The same message again, now that the account would handle it.
    engine.submit(deposit).await.unwrap();
    idle(&engine).await;
    assert_eq!(received.len(), 0, "the redelivered deposit was handled: {:?}", received.commands());
    assert_eq!(engine.stats().duplicates, 1);
}

#[tokio::test]
async fn an_event_no_process_or_subscriber_takes_is_dead_lettered_and_counted() {
    let engine = Engine::builder().process::<Account>().build();
    let stray = Envelope::new("Closed", MessageKind::Event, Body::value(Frozen { account: 1 }));
    let submitted = engine.submit(stray.clone()).await;
    assert!(matches!(&submitted, Err(Error::DeadLettered { id, .. }) if *id == stray.id));
    idle(&engine).await;
    let letters = engine.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message_id(), stray.id);
    assert_eq!(letters[0].reason, "no process or subscriber of this engine takes event `Closed`");
    assert_eq!((engine.stats().unrouted, engine.stats().dead_lettered), (1, 1));
}

/// Runs two engines on one store, each with its own bus, and hands them
/// the deposits of the same accounts by turns: each engine's cached
/// instance goes stale whenever the other writes it, so their writes
/// conflict. Then both at once, as fast as they take them.
async fn two_engines_on_one_store(first: impl Store, second: impl Store) {
    const ACCOUNTS: u32 = 8;
    const DEPOSITS: u32 = 40;
    let received = Received::default();
    let engines = [
        accounts(Engine::builder(), &received).store(first).workers(2).build(),
        accounts(Engine::builder(), &received).store(second).workers(2).build(),
    ];
    for account in 0..ACCOUNTS {
        engines[0].publish(Opened { account });
    }
    idle(&engines[0]).await;
    // By turns, waiting for each: every turn meets the other's write.
    for number in 1..=DEPOSITS / 2 {
        for account in 0..ACCOUNTS {
            let engine = &engines[(number % 2) as usize];
            engine.publish(Deposited { account, number });
            idle(engine).await;
        }
    }
    let turns = engines[0].stats().conflicts + engines[1].stats().conflicts;
    assert!(turns > 0, "no write conflicted");
    // Both at once.
    let submitted: Vec<_> = (DEPOSITS / 2 + 1..=DEPOSITS)
        .flat_map(|number| (0..ACCOUNTS).map(move |account| (account, number)))
        .map(|(account, number)| {
            let engine = engines[(number % 2) as usize].clone();
            tokio::spawn(async move {
                engine.submit(Envelope::event(Deposited { account, number })).await
            })
        })
        .collect();
    for submitted in submitted {
        submitted.await.unwrap().unwrap();
    }
    for engine in &engines {
        idle(engine).await;
        assert_eq!(engine.stats().dead_lettered, 0, "{:?}", engine.stats());
        assert!(engine.dead_letters().await.unwrap().is_empty());
    }
    // Every deposit counted once, each count given once, no command twice.
    let mut expected = BTreeSet::new();
    for account in 0..ACCOUNTS {
        let status = engines[0].instance::<Account>(&account).await.unwrap();
        let Some(InstanceStatus::Running { data, .. }) = status else { panic!("{status:?}") };
        assert_eq!(data.deposits, DEPOSITS);
        expected.extend((1..=DEPOSITS).map(|n| (account, n)));
    }
    let records: Vec<Record> =
        received.commands().iter().filter_map(|text| parse_record(text)).collect();
    assert_eq!(records.len(), (ACCOUNTS * DEPOSITS) as usize, "a command arrived twice or never");
    let deposits: BTreeSet<_> = records.iter().map(|r| (r.account, r.deposit)).collect();
    let counts: BTreeSet<_> = records.iter().map(|r| (r.account, r.count)).collect();
    assert_eq!((deposits, counts), (expected.clone(), expected));
}

/// A `Record` as [`Received`] noted it.
fn parse_record(text: &str) -> Option<Record> {
    let fields: Vec<u32> = text
        .strip_prefix("Record { ")?
        .trim_end_matches(" }")
        .split(", ")
        .map(|field| field.split(": ").nth(1)?.parse().ok())
        .collect::<Option<_>>()?;
    let [account, deposit, count] = fields[..] else { return None };
    Some(Record { account, deposit, count })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_memory_store_conflict_and_lose_or_double_nothing() {
    let store = MemoryStore::new();
    two_engines_on_one_store(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_sqlite_file_conflict_and_lose_or_double_nothing() {
    let path = std::env::temp_dir().join(format!("faults-two-engines-{}.db", std::process::id()));
    remove_database(&path);
    let open = || switchyard::SqliteStore::open(&path).unwrap();
    two_engines_on_one_store(open(), open()).await;
    remove_database(&path);
}

fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_that_keeps_conflicting_is_decided_again_and_never_dead_lettered() {
    // Four times the retry policy's attempts in a row.
    let store = FaultyStore::new(MemoryStore::new());
    store.conflict_commits(20);
    let received = Received::default();
    let engine = accounts(Engine::builder(), &received).store(store).build();
    engine.submit(Envelope::event(Opened { account: 9 })).await.unwrap();
    engine.submit(Envelope::event(Deposited { account: 9, number: 1 })).await.unwrap();
    idle(&engine).await;
    let stats = engine.stats();
    assert_eq!((stats.handled, stats.conflicts, stats.dead_lettered), (2, 20, 0), "{stats:?}");
    assert_eq!(
        received.commands(),
        vec![format!("{:?}", Record { account: 9, deposit: 1, count: 1 })]
    );
}

/// An engine whose `Record` handler counts its runs, with `options`.
fn counting_records(options: HandlerOptions, runs: &Arc<AtomicU32>) -> Engine {
    let runs = runs.clone();
    Engine::builder()
        .process::<Account>()
        .handle_with(options, move |_: Record, _: CommandContext| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, HandlerError>(()) }
        })
        .build()
}

#[tokio::test]
async fn an_idempotent_handler_is_not_handed_a_redelivered_command_again() {
    let record = Envelope::command(Record { account: 1, deposit: 1, count: 1 });
    for (options, expected_runs) in
        [(HandlerOptions::default(), 2), (HandlerOptions::default().idempotent(), 1)]
    {
        let runs = Arc::new(AtomicU32::new(0));
        let engine = counting_records(options, &runs);
        engine.submit(record.clone()).await.unwrap();
        engine.submit(record.clone()).await.unwrap();
        idle(&engine).await;
        assert_eq!(runs.load(Ordering::SeqCst), expected_runs, "{options:?}");
        let duplicates = 2 - expected_runs;
        assert_eq!(engine.stats().duplicates, u64::from(duplicates), "{options:?}");
    }
}

#[tokio::test]
async fn a_handler_commits_its_own_work_with_its_inbox_row_in_the_sqlite_store() {
    use switchyard::store::rusqlite;

    let path = std::env::temp_dir().join(format!("faults-handle-once-{}.db", std::process::id()));
    remove_database(&path);
    let store = switchyard::SqliteStore::open(&path).unwrap();
    let (ledger, attempts) = (store.clone(), Arc::new(AtomicU32::new(0)));
    let tries = attempts.clone();
    let engine = Engine::builder()
        .store(store.clone())
        .process::<Account>()
        .handle_with(HandlerOptions::default().idempotent(), move |record: Record, ctx: CommandContext| {
            let (ledger, tries) = (ledger.clone(), tries.clone());
            async move {
                let (scope, id, now) = (ctx.inbox_scope().to_owned(), ctx.message_id(), ctx.now());
                ledger
                    .handle_once(&scope, id, now, move |tx: &rusqlite::Transaction<'_>| {
                        tx.execute("CREATE TABLE IF NOT EXISTS ledger (account INTEGER, deposit INTEGER)", [])?;
                        tx.execute("INSERT INTO ledger VALUES (?1, ?2)", [record.account, record.deposit])
                    })
                    .await?;
                // The first attempt fails after its work committed, as if
                // the process died there: the next one finds it done.
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err("lost before the engine heard of it".into());
                }
                Ok::<_, HandlerError>(())
            }
        })
        .retry(switchyard::RetryPolicy { first_backoff: Duration::from_millis(1), ..Default::default() })
        .build();
    let record = Envelope::command(Record { account: 2, deposit: 5, count: 1 });
    engine.submit(record.clone()).await.unwrap();
    engine.submit(record).await.unwrap();
    idle(&engine).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 2, "the redelivery reached the handler");
    let rows = store
        .handle_once(
            "test:count",
            MessageId::new(),
            engine.now(),
            |tx: &rusqlite::Transaction<'_>| {
                tx.query_row("SELECT count(*) FROM ledger", [], |row| row.get::<_, u32>(0))
            },
        )
        .await
        .unwrap();
    assert_eq!(rows, Some(1), "the handler's work was done twice");
    assert_eq!(engine.stats().duplicates, 1);
    drop(engine);
    drop(store);
    remove_database(&path);
}
