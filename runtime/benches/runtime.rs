//! Runtime benchmarks, each run side by side with its baseline in the same
//! process, and reported as a ratio:
//!
//! - in memory: events per second through the whole engine over 100,000
//!   live instances, against the same events through one bare tokio channel,
//!   and against a reference pipeline of the engine's shape that does only
//!   the work of each event;
//! - SQLite, durable (WAL, `synchronous=FULL`): events per second through
//!   the engine, against one transaction per event, against a bare rusqlite
//!   loop writing the same rows in batches of the same size, each of the
//!   next events, and against the same loop in the batches the engine's
//!   sharded workers make (each the next events of one worker's keys).
//!
//! Run with `cargo bench -p switchyard-runtime`. Results are printed and
//! appended to `target/bench-results.jsonl`. `SWITCHYARD_BENCH_SCALE=0.1`
//! runs everything ten times smaller, for a quick look. The filter
//! `engine-alone` runs only the in-memory engine, to compare two builds in
//! turn (`SWITCHYARD_BENCH_WORKERS=1` gives the engine one worker per
//! process).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard_runtime::store::{Durability, SqliteOptions};
use switchyard_runtime::{
    Body, Context, Decision, Description, Engine, Event, Handles, MessageKind, Outgoing, Process,
    Route, SqliteStore, StateDescription, StateKind,
};

/// Counts the events of each key: the smallest process that changes its
/// instance on every event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Tally;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Counted {
    key: u64,
}

impl Event for Counted {
    const NAME: &'static str = "Counted";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum TallyState {
    Idle,
    Counting,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TallyData {
    count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum NoTimer {}

#[derive(Clone, Debug)]
enum NoOutput {}

impl Outgoing for NoOutput {
    fn name(&self) -> &'static str {
        match *self {}
    }
    fn kind(&self) -> MessageKind {
        match *self {}
    }
    fn into_body(self) -> Body {
        match self {}
    }
}

impl Handles<Counted> for Tally {
    fn correlate(event: &Counted) -> &u64 {
        &event.key
    }
}

impl Process for Tally {
    const NAME: &'static str = "Tally";
    const INITIAL: TallyState = TallyState::Idle;
    type State = TallyState;
    type Data = TallyData;
    type Key = u64;
    type Input = Counted;
    type Output = NoOutput;
    type Timer = NoTimer;

    fn is_final(_: TallyState) -> bool {
        false
    }

    fn decide(
        _: TallyState,
        data: &TallyData,
        _: &Counted,
        _: &Context<'_, u64>,
    ) -> Decision<Self> {
        Decision::handled(
            TallyState::Counting,
            Some(TallyData { count: data.count + 1 }),
            Vec::new(),
            Vec::new(),
        )
    }

    fn timer_input(timer: NoTimer) -> Counted {
        match timer {}
    }

    fn routes() -> &'static [Route<Self>] {
        const ROUTES: &[Route<Tally>] = &[Route {
            event: "Counted",
            decode: switchyard_runtime::__private::route::<Tally, Counted>,
            take: switchyard_runtime::__private::take::<Tally, Counted>,
        }];
        ROUTES
    }

    fn input_message(input: &Counted) -> Option<(&'static str, Body)> {
        Some((Counted::NAME, Body::value(input.clone())))
    }

    fn description() -> &'static Description {
        const DESCRIPTION: Description = Description {
            name: "Tally",
            docs: "",
            states: &[
                StateDescription { name: "Idle", kind: StateKind::Initial, docs: "" },
                StateDescription { name: "Counting", kind: StateKind::Normal, docs: "" },
            ],
            inputs: &["Counted"],
            timers: &[],
            transitions: &[],
        };
        &DESCRIPTION
    }
}

/// One line of the results.
struct Result {
    name: &'static str,
    unit: &'static str,
    value: f64,
    baseline: &'static str,
    baseline_value: f64,
    goal: &'static str,
}

/// The engine's workers per process: `SWITCHYARD_BENCH_WORKERS`, or the
/// engine's default, one per core. With one, the workers' own cost sets the
/// in-memory rate.
fn workers() -> usize {
    std::env::var("SWITCHYARD_BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn scale() -> f64 {
    std::env::var("SWITCHYARD_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

/// The best of `runs` timings of `run`, which returns how many events it
/// handled and how long that took.
fn best(runs: usize, mut run: impl FnMut() -> (usize, Duration)) -> f64 {
    (0..runs)
        .map(|_| {
            let (events, took) = run();
            events as f64 / took.as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// The engine in memory: events over `instances` live instances.
fn in_memory_engine(instances: usize, events: usize) -> (usize, Duration) {
    runtime().block_on(async {
        let engine = Engine::builder().process::<Tally>().workers(workers()).build();
        for key in 0..instances as u64 {
            engine.publish(Counted { key });
        }
        engine.idle().await;
        let start = Instant::now();
        for n in 0..events {
            engine.publish(Counted { key: (n % instances) as u64 });
        }
        engine.idle().await;
        let took = start.elapsed();
        assert_eq!(engine.stats().handled, (instances + events) as u64);
        (events, took)
    })
}

/// The same events through one bare tokio channel to one task.
fn bare_channel(events: usize) -> (usize, Duration) {
    runtime().block_on(async {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let consumer = tokio::spawn(async move {
            let mut sum = 0u64;
            while let Some(Counted { key }) = receiver.recv().await {
                sum = sum.wrapping_add(key);
            }
            sum
        });
        let start = Instant::now();
        for n in 0..events {
            sender.send(Counted { key: n as u64 }).unwrap();
        }
        drop(sender);
        std::hint::black_box(consumer.await.unwrap());
        (events, start.elapsed())
    })
}

/// A reference for the in-memory engine: a pipeline of the engine's shape
/// that does only the work the benchmark asks of each event, written as
/// directly as it can be, with none of the engine's generality (no bus, no
/// acknowledgement, no store trait, no worker cache in front of a store, no
/// outbox, timers or dead letters). Per event, the publishing thread reads
/// the clock, makes a v7 id, hashes the key (SipHash, seeded) and sends a
/// job to the worker that owns the key, one per core as the engine has; the
/// worker finds the instance in its table, drops the event if its inbox has
/// the id, and otherwise counts it, moves the version and records the id.
///
/// It measures how close to the bare hop anything of this shape can come on
/// the machine, so that the engine's own overhead can be told apart from
/// the cost of the work.
fn reference_pipeline(instances: usize, events: usize) -> (usize, Duration) {
    use std::hash::BuildHasher as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchyard_runtime::{MessageId, Timestamp};

    struct Job {
        key: u64,
        hash: u64,
        id: MessageId,
        time: Timestamp,
    }
    struct Counter {
        key: u64,
        hash: u64,
        version: u64,
        count: u64,
        inbox: Vec<(MessageId, Timestamp)>,
    }

    runtime().block_on(async {
        let workers = workers();
        let hasher = std::hash::RandomState::new();
        let handled = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::with_capacity(workers);
        let mut tasks = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let handled = handled.clone();
            senders.push(sender);
            tasks.push(tokio::spawn(async move {
                let mut table = hashbrown::HashTable::<Counter>::new();
                let mut jobs = Vec::with_capacity(512);
                let mut total = 0u64;
                while receiver.recv_many(&mut jobs, 512).await > 0 {
                    let taken = jobs.len();
                    for job in jobs.drain(..) {
                        let counter = table
                            .entry(job.hash, |c| c.key == job.key, |c| c.hash)
                            .or_insert_with(|| Counter {
                                key: job.key,
                                hash: job.hash,
                                version: 0,
                                count: 0,
                                inbox: Vec::new(),
                            })
                            .into_mut();
                        if counter.inbox.iter().any(|(id, _)| *id == job.id) {
                            continue;
                        }
                        counter.count += 1;
                        counter.version += 1;
                        counter.inbox.push((job.id, job.time));
                        total += counter.count;
                    }
                    handled.fetch_add(taken, Ordering::Release);
                }
                total
            }));
        }
        let publish = |key: u64| {
            let time = Timestamp::now();
            let hash = hasher.hash_one(key);
            let job = Job { key, hash, id: MessageId::at(time), time };
            senders[((hash >> 32) % workers as u64) as usize].send(job).unwrap();
        };
        for key in 0..instances as u64 {
            publish(key);
        }
        while handled.load(Ordering::Acquire) < instances {
            tokio::task::yield_now().await;
        }
        let start = Instant::now();
        for n in 0..events {
            publish((n % instances) as u64);
        }
        drop(senders);
        for task in tasks {
            std::hint::black_box(task.await.unwrap());
        }
        let took = start.elapsed();
        assert_eq!(handled.load(Ordering::Acquire), instances + events);
        (events, took)
    })
}

fn bench_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fresh_db(name: &str) -> PathBuf {
    let path = bench_dir().join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// The engine on SQLite, durable: events over `instances` existing
/// instances. Returns the rate and the mean number of events per transaction.
fn sqlite_engine(instances: usize, events: usize) -> (usize, Duration, f64) {
    runtime().block_on(async {
        let path = fresh_db("engine");
        let options = SqliteOptions { durability: Durability::Full, ..SqliteOptions::default() };
        let store = SqliteStore::open_with(&path, options).unwrap();
        let engine =
            Engine::builder().store(store.clone()).process::<Tally>().workers(workers()).build();
        for key in 0..instances as u64 {
            engine.publish(Counted { key });
        }
        engine.idle().await;
        let before = store.transactions();
        let start = Instant::now();
        for n in 0..events {
            engine.publish(Counted { key: (n % instances) as u64 });
        }
        engine.idle().await;
        let took = start.elapsed();
        let transactions = store.transactions() - before;
        assert_eq!(engine.stats().handled, (instances + events) as u64);
        (events, took, events as f64 / transactions.max(1) as f64)
    })
}

/// The keys of the events of each transaction of a bare loop: `events`
/// round-robin over `instances`, `batch` per transaction. With one shard,
/// each transaction takes the next `batch` events. With more, the keys are
/// split over `shards` by a hash and each transaction takes the next `batch`
/// events of one shard, the shards in turn: the batches the engine's
/// sharded workers make, each taking up the next events of its own share.
fn batches(instances: usize, events: usize, batch: usize, shards: usize) -> Vec<Vec<usize>> {
    use std::hash::BuildHasher as _;
    let (batch, shards) = (batch.max(1), shards.max(1));
    let hasher = std::hash::RandomState::new();
    let mut shares = vec![std::collections::VecDeque::new(); shards];
    for n in 0..events {
        let key = n % instances;
        shares[(hasher.hash_one(key) % shards as u64) as usize].push_back(key);
    }
    let mut batches = Vec::with_capacity(events / batch + shards);
    while shares.iter().any(|share| !share.is_empty()) {
        for share in &mut shares {
            let take = batch.min(share.len());
            if take > 0 {
                batches.push(share.drain(..take).collect());
            }
        }
    }
    batches
}

/// A bare rusqlite loop writing the rows the engine writes for one event
/// (the instance's new state and version, an inbox row), in the given
/// transactions (from [`batches`]), durable as the engine is.
fn bare_sqlite(instances: usize, transactions: &[Vec<usize>]) -> (usize, Duration) {
    let path = fresh_db("bare");
    // The store creates the schema; the loop then writes it directly.
    drop(SqliteStore::open(&path).unwrap());
    let mut connection = rusqlite::Connection::open(&path).unwrap();
    // The store's own settings, so that the loop writes as the store does.
    connection.pragma_update(None, "synchronous", "FULL").unwrap();
    let cache_kib = i64::from(SqliteOptions::default().cache_mib) * 1024;
    connection.pragma_update(None, "cache_size", -cache_kib).unwrap();
    let state = serde_json::to_string(&TallyState::Counting).unwrap();
    {
        let transaction = connection.transaction().unwrap();
        for key in 0..instances {
            transaction
                .execute(
                    "INSERT INTO instances (process, key, version, state, data, completed_at, updated_at)
                     VALUES ('Tally', ?1, 1, ?2, '{\"count\":1}', NULL, 0)",
                    rusqlite::params![key.to_string(), state],
                )
                .unwrap();
        }
        transaction.commit().unwrap();
    }
    let mut versions = vec![1i64; instances];
    let mut counts = vec![1u64; instances];
    let start = Instant::now();
    let mut events = 0;
    for keys in transactions {
        let transaction = connection.transaction().unwrap();
        // Stamped as the engine stamps its rows: the time of the round, the
        // same for every row of the batch (it matters to the index on it).
        let now = switchyard_runtime::Timestamp::now().millis() as i64;
        {
            let mut inbox = transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO inbox (process, message_id, handled_at) VALUES ('Tally', ?1, ?2)",
                )
                .unwrap();
            let mut update = transaction
                .prepare_cached(
                    "UPDATE instances SET version = ?3, state = ?4, data = ?5, completed_at = NULL,
                     updated_at = ?6 WHERE process = 'Tally' AND key = ?1 AND version = ?2",
                )
                .unwrap();
            for &key in keys {
                counts[key] += 1;
                let data = serde_json::to_string(&TallyData { count: counts[key] }).unwrap();
                // Ids as the engine makes them for messages from outside.
                let id = switchyard_runtime::MessageId::new().as_uuid();
                assert_eq!(inbox.execute(rusqlite::params![&id.as_bytes()[..], now]).unwrap(), 1);
                let changed = update
                    .execute(rusqlite::params![
                        key.to_string(),
                        versions[key],
                        versions[key] + 1,
                        state,
                        data,
                        now
                    ])
                    .unwrap();
                assert_eq!(changed, 1);
                versions[key] += 1;
            }
        }
        transaction.commit().unwrap();
        events += keys.len();
    }
    (events, start.elapsed())
}

/// The CPU time this process has used so far (all threads), from
/// `/proc/self/stat`; zero where that file does not exist.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split(' ').collect();
    let ticks: u64 = [12, 13].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // The kernel counts in clock ticks of 1/100 s on Linux.
    Duration::from_millis(ticks * 10)
}

/// How many times each measurement and its baseline run, in turn. The
/// machine is shared and its speed varies by 10 to 20% from one run to the
/// next; the best of five is steadier than the best of three.
const ROUNDS: usize = 5;

/// Runs `engine` and each of `baselines` in turn, `rounds` times, so that a
/// change in the machine's load hits all alike, and returns the best rate of
/// each (events per second) with the engine's CPU time per event in its best
/// run.
fn side_by_side(
    rounds: usize,
    mut engine: impl FnMut() -> (usize, Duration),
    baselines: &mut [&mut dyn FnMut() -> (usize, Duration)],
) -> (f64, Vec<f64>, Duration) {
    let (mut best, mut cpu) = (0.0, Duration::ZERO);
    let mut best_baselines = vec![0.0; baselines.len()];
    for _ in 0..rounds {
        let before = cpu_time();
        let (events, took) = engine();
        let rate = events as f64 / took.as_secs_f64();
        if rate > best {
            best = rate;
            cpu = (cpu_time() - before) / events as u32;
        }
        for (baseline, best) in baselines.iter_mut().zip(&mut best_baselines) {
            let (events, took) = baseline();
            *best = f64::max(*best, events as f64 / took.as_secs_f64());
        }
    }
    (best, best_baselines, cpu)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, picks benchmarks by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let mut results = Vec::new();

    if filter.as_deref() == Some("engine-alone") {
        // The in-memory engine without its baselines, to compare two builds
        // run in turn: prints each round's rate and the best, records nothing.
        let (instances, events) = (scaled(100_000), scaled(1_000_000));
        let best = best(ROUNDS, || {
            let (events, took) = in_memory_engine(instances, events);
            println!("{:.0} events/s", events as f64 / took.as_secs_f64());
            (events, took)
        });
        println!("best of {ROUNDS}: {best:.0} events/s");
        return;
    }

    if wanted("in-memory") {
        let (instances, events) = (scaled(100_000), scaled(1_000_000));
        let (engine, baselines, cpu) = side_by_side(
            ROUNDS,
            || in_memory_engine(instances, events),
            &mut [&mut || bare_channel(events), &mut || reference_pipeline(instances, events)],
        );
        let (bare, reference) = (baselines[0], baselines[1]);
        println!(
            "in memory: {:.2} µs of CPU per event (all threads, warm-up included) in the engine's best run",
            cpu.as_secs_f64() * 1e6
        );
        results.push(Result {
            name: "runtime/in-memory events over 100k live instances",
            unit: "events/s",
            value: engine,
            baseline: "bare tokio channel hop",
            baseline_value: bare,
            goal: ">= 1,000,000 events/s, ratio >= 0.25",
        });
        results.push(Result {
            name: "runtime/in-memory events over 100k live instances",
            unit: "events/s",
            value: engine,
            baseline: "reference pipeline, same work, no engine",
            baseline_value: reference,
            goal: "(how much the engine adds)",
        });
        results.push(Result {
            name: "runtime/reference pipeline over 100k instances",
            unit: "events/s",
            value: reference,
            baseline: "bare tokio channel hop",
            baseline_value: bare,
            goal: "(the best ratio of this shape here)",
        });
    }

    if wanted("sqlite") {
        let (instances, events) = (scaled(10_000), scaled(200_000));
        // The bare loops write in batches as large as the engine's last run
        // did: one of the next events, whatever their keys (the goal's
        // baseline); the other as the engine's workers make them, each the
        // next events of one worker's keys, which shows what sharding costs
        // the writes (one worker's batch holds keys from a range as many
        // times as wide as there are workers, so each transaction touches
        // more pages).
        let batch = std::cell::Cell::new(1);
        let (engine, baselines, cpu) = side_by_side(
            ROUNDS,
            || {
                let (events, took, per_transaction) = sqlite_engine(instances, events);
                batch.set(per_transaction.round().max(1.0) as usize);
                (events, took)
            },
            &mut [
                &mut || bare_sqlite(instances, &batches(instances, events, batch.get(), workers())),
                &mut || bare_sqlite(instances, &batches(instances, events, batch.get(), 1)),
            ],
        );
        let (sharded, consecutive) = (baselines[0], baselines[1]);
        let batch = batch.get();
        println!(
            "sqlite: {batch} events per transaction in the engine's last run; \
             {:.2} µs of CPU per event (all threads, warm-up included) in its best",
            cpu.as_secs_f64() * 1e6
        );
        let single = best(1, || bare_sqlite(instances, &batches(instances, scaled(2_000), 1, 1)));
        results.push(Result {
            name: "runtime/sqlite durable events (group commit)",
            unit: "events/s",
            value: engine,
            baseline: "one transaction per event",
            baseline_value: single,
            goal: "ratio >= 10",
        });
        results.push(Result {
            name: "runtime/sqlite durable events (group commit)",
            unit: "events/s",
            value: engine,
            baseline: "bare rusqlite loop, same rows, same batch sizes",
            baseline_value: consecutive,
            goal: "ratio >= 0.8",
        });
        results.push(Result {
            name: "runtime/sqlite durable events (group commit)",
            unit: "events/s",
            value: engine,
            baseline: "bare rusqlite loop, the workers' batches",
            baseline_value: sharded,
            goal: "(what sharding costs the writes)",
        });
    }

    println!(
        "{:<52} {:>14}   {:<44} {:>14} {:>7}   goal",
        "benchmark", "value", "baseline", "baseline", "ratio"
    );
    let mut lines = String::new();
    for r in &results {
        let ratio = r.value / r.baseline_value;
        println!(
            "{:<52} {:>14.0}   {:<44} {:>14.0} {:>7.3}   {}",
            r.name, r.value, r.baseline, r.baseline_value, ratio, r.goal
        );
        lines.push_str(
            &serde_json::json!({
                "name": r.name,
                "unit": r.unit,
                "value": r.value.round(),
                "baseline": r.baseline,
                "baseline_value": r.baseline_value.round(),
                "ratio": (ratio * 1000.0).round() / 1000.0,
            })
            .to_string(),
        );
        lines.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results.jsonl");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(lines.as_bytes()));
    match appended {
        Ok(()) => println!("appended to {}", path.display()),
        Err(error) => eprintln!("could not append to {}: {error}", path.display()),
    }
}
