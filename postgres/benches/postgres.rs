//! The engine on a [`PostgresStore`], side by side in the same run with a
//! bare tokio-postgres loop that writes the same rows, and reported as a
//! ratio:
//!
//! - **burst**: events per second through the engine (each event updates
//!   its instance with a version check, records its id in the inbox and
//!   adds an outbox row for the command it sends; the command reaches its
//!   handler and the row is deleted), against the bare loop writing the
//!   same rows in as many transactions as the engine's group commit made in
//!   its run (`PostgresStore::transactions`), each of the next events,
//!   statement after statement as the store's writer sends them; and, for
//!   information, the same loop with the statements of a transaction
//!   pipelined, which shows what the round trips cost;
//! - **closed loop**: one event at a time, from publishing it to its
//!   command at the handler, p50 and p99, against the bare loop's one
//!   transaction per event.
//!
//! Run with `cargo bench -p switchyard-postgres --bench postgres` against
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); each
//! run makes schemas of its own and drops them. A filter argument (`burst`,
//! `closed-loop`) runs one part; `SWITCHYARD_BENCH_SCALE=0.1` runs
//! everything ten times smaller. Results are printed and appended to
//! `target/bench-results.jsonl`.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard::{CommandContext, Engine, HandlerError, MessageId, Timestamp};
use switchyard_postgres::{NodeId, PostgresOptions, PostgresStore};

switchyard::process! {
    /// Ships an order each time it is placed: every event changes its
    /// instance (its version) and sends one command.
    process Dispatch {
        correlate by order: u64

        initial state Open {
            on Placed { send Ship { order: id } }
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
pub struct Placed {
    pub order: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Command)]
pub struct Ship {
    pub order: u64,
}

/// The process's name as its rows hold it.
const PROCESS: &str = "Dispatch";

/// The statements the store runs for each event, word for word, so that the
/// bare loop makes the database do exactly the same work.
const INSERT_INBOX: &str = "INSERT INTO inbox (process, message_id, handled_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING";
const UPDATE_INSTANCE: &str =
    "UPDATE instances SET version = $3, state = $4, data = $5, completed_at = $6,
                 updated_at = $7 WHERE process = $1 AND key = $2 AND version = $8";
const INSERT_INSTANCE: &str = "INSERT INTO instances
                 (process, key, version, state, data, completed_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
const INSERT_OUTBOX: &str = "INSERT INTO outbox
    (message_id, name, kind, body, causation, time, process, key, owner, claim, lease_until)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
        clock_timestamp() + $11::float8 * interval '1 ms')
    RETURNING sequence";
const DELETE_OUTBOX: &str = "DELETE FROM outbox WHERE sequence = ANY($1)";

/// The store's default lease, as the outbox rows carry it.
const LEASE: Duration = Duration::from_secs(30);

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn scale() -> f64 {
    std::env::var("SWITCHYARD_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

fn scaled(n: usize) -> usize {
    ((n as f64 * scale()) as usize).max(1)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// A schema of the run's own, dropped with the value.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str, what: &str) -> Schema {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("switchyard_bench_{what}_{}_{n}", std::process::id());
        Schema { url: url.to_owned(), name }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions {
            schema: self.name.clone(),
            node: NodeId::new("bench"),
            lease: LEASE,
            ..PostgresOptions::default()
        }
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, self.options()).await.expect("connect to DATABASE_URL")
    }

    /// A plain connection whose unqualified names are this schema's.
    async fn client(&self) -> tokio_postgres::Client {
        let client = connect(&self.url).await;
        client.batch_execute(&format!("SET search_path TO \"{}\"", self.name)).await.unwrap();
        client
    }
}

/// Drops the schema on a thread of its own: the bench's runtime may be gone.
impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            runtime().block_on(async {
                let client = connect(&url).await;
                let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("could not drop the bench schema `{name}`: {e}");
                }
            })
        });
        drop(dropped.join());
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect to DATABASE_URL");
    tokio::spawn(connection);
    client
}

/// The text of an instance's state and data, as the engine wrote them:
/// what the bare loop writes in turn.
#[derive(Clone, Debug)]
struct Texts {
    state: String,
    data: String,
}

/// An engine on a new schema whose command handler counts the commands
/// and hands each one's order to `delivered`, if given.
async fn engine(
    schema: &Schema,
    delivered: Option<tokio::sync::mpsc::UnboundedSender<u64>>,
) -> (Engine, PostgresStore, Arc<AtomicUsize>) {
    let store = schema.store().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let engine = Engine::builder()
        .store(store.clone())
        .process::<Dispatch>()
        .handle(move |ship: Ship, _: CommandContext| {
            count.fetch_add(1, Ordering::Relaxed);
            if let Some(delivered) = &delivered {
                let _ = delivered.send(ship.order);
            }
            async { Ok::<_, HandlerError>(()) }
        })
        .build();
    (engine, store, handled)
}

/// Creates `instances` instances through the engine, one event each, and
/// waits until their commands are handled and their outbox rows deleted.
async fn warm(engine: &Engine, instances: usize) {
    for order in 0..instances as u64 {
        engine.publish(Placed { order });
    }
    engine.idle().await;
}

/// What one burst of the engine did.
struct Burst {
    events: usize,
    took: Duration,
    transactions: u64,
    texts: Texts,
}

/// The engine: `events` events round-robin over `instances` existing
/// instances, timed from the first publish until every command is handled
/// and every outbox row deleted (`idle`).
fn engine_burst(url: &str, instances: usize, events: usize) -> Burst {
    let schema = Schema::new(url, "engine");
    runtime().block_on(async {
        let (engine, store, handled) = engine(&schema, None).await;
        warm(&engine, instances).await;
        let before = store.transactions();
        let start = Instant::now();
        for n in 0..events {
            engine.publish(Placed { order: (n % instances) as u64 });
        }
        engine.idle().await;
        let took = start.elapsed();
        let transactions = store.transactions() - before;
        assert_eq!(handled.load(Ordering::Relaxed), instances + events);
        assert_eq!(engine.stats().handled, (instances + events) as u64);
        let client = schema.client().await;
        let row = client
            .query_one(
                "SELECT state, data FROM instances WHERE process = $1 AND key = '0'",
                &[&PROCESS],
            )
            .await
            .unwrap();
        // Two events of one instance in one worker's batch make one write
        // (one update, two inbox rows); with batches far smaller than the
        // round over the instances, none do, and the bare loop's rows are
        // the engine's.
        let versions: i64 = client
            .query_one("SELECT sum(version)::bigint FROM instances", &[])
            .await
            .unwrap()
            .get(0);
        let writes = versions as usize - instances;
        if writes != events {
            println!("the engine made {writes} instance writes for {events} events");
        }
        let left: i64 = client.query_one("SELECT count(*) FROM outbox", &[]).await.unwrap().get(0);
        assert_eq!(left, 0, "the engine left outbox rows");
        let texts = Texts { state: row.get(0), data: row.get(1) };
        Burst { events, took, transactions, texts }
    })
}

/// The bare loop's connection, its schema made by the store and filled
/// with `instances` instances at version 1, as the engine's warm-up leaves
/// them.
struct Bare {
    client: tokio_postgres::Client,
    statements: [tokio_postgres::Statement; 4],
    versions: Vec<i64>,
    texts: Texts,
    claim: uuid::Uuid,
    /// The outbox rows written and not deleted yet.
    sent: Vec<i64>,
}

impl Bare {
    async fn new(schema: &Schema, instances: usize, texts: &Texts) -> Bare {
        // The store makes the schema; the loop then writes it directly.
        drop(schema.store().await);
        let client = schema.client().await;
        client.batch_execute("BEGIN").await.unwrap();
        let insert = client.prepare(INSERT_INSTANCE).await.unwrap();
        for key in 0..instances {
            let key = key.to_string();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                [&PROCESS, &key, &1i64, &texts.state, &texts.data, &None::<i64>, &0i64];
            client.execute(&insert, &params).await.unwrap();
        }
        client.batch_execute("COMMIT").await.unwrap();
        let statements = [
            client.prepare(INSERT_INBOX).await.unwrap(),
            client.prepare(UPDATE_INSTANCE).await.unwrap(),
            client.prepare(INSERT_OUTBOX).await.unwrap(),
            client.prepare(DELETE_OUTBOX).await.unwrap(),
        ];
        Bare {
            client,
            statements,
            versions: vec![1; instances],
            texts: texts.clone(),
            claim: uuid::Uuid::new_v4(),
            sent: Vec::new(),
        }
    }

    /// One transaction: deletes the outbox rows of the transaction before
    /// (as the engine's relay marks them sent, in a later group), then for
    /// each event of `keys` the rows the store writes, statement by
    /// statement as it does ([`event`]). `Sequential` waits for each
    /// statement's answer before sending the next, as the store's writer
    /// does; `Pipelined` sends the events' statements without waiting for
    /// the other events' answers (tokio-postgres pipelines the requests of
    /// futures polled together), which shows what the round trips cost.
    async fn transaction(&mut self, keys: &[usize], mode: Mode) {
        let client = &self.client;
        client.batch_execute("BEGIN").await.unwrap();
        if !self.sent.is_empty() {
            client.execute(&self.statements[3], &[&self.sent]).await.unwrap();
            self.sent.clear();
        }
        // Stamped as the engine stamps its rows, the time of its round.
        let at = Timestamp::now().millis() as i64;
        let writes = keys.iter().map(|&key| {
            let version = self.versions[key];
            event(client, &self.statements, &self.texts, self.claim, key, version, at)
        });
        match mode {
            Mode::Sequential => {
                for write in writes {
                    self.sent.push(write.await);
                }
            }
            Mode::Pipelined => self.sent.extend(join_all(writes.collect()).await),
        }
        for &key in keys {
            self.versions[key] += 1;
        }
        client.batch_execute("COMMIT").await.unwrap();
    }

    /// Deletes the last transaction's outbox rows, as the engine's relay
    /// does before it is idle.
    async fn finish(&mut self) {
        if !self.sent.is_empty() {
            let delete = &self.statements[3];
            self.client.execute(delete, &[&self.sent]).await.unwrap();
            self.sent.clear();
        }
    }
}

/// How the bare loop sends the statements of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Sequential,
    Pipelined,
}

/// The rows the store writes for one event, statement by statement as it
/// does: the inbox row, the instance moved on from `version` (checked),
/// the outbox row of the command. Returns the outbox row's sequence.
async fn event(
    client: &tokio_postgres::Client,
    statements: &[tokio_postgres::Statement; 4],
    texts: &Texts,
    claim: uuid::Uuid,
    key: usize,
    version: i64,
    at: i64,
) -> i64 {
    let [inbox, update, outbox, _] = statements;
    // Ids as the engine makes them: the event's from the clock, the
    // command's derived from it.
    let id = MessageId::new();
    let added = client.execute(inbox, &[&PROCESS, &id.as_uuid(), &at]).await.unwrap();
    assert_eq!(added, 1);
    let text = key.to_string();
    let (state, data) = (&texts.state, &texts.data);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
        [&PROCESS, &text, &(version + 1), state, data, &None::<i64>, &at, &version];
    let changed = client.execute(update, &params).await.unwrap();
    assert_eq!(changed, 1);
    let body = serde_json::to_vec(&Ship { order: key as u64 }).unwrap();
    let lease = LEASE.as_secs_f64() * 1000.0;
    let row = client
        .query_one(
            outbox,
            &[
                &id.derive_in(PROCESS, 0).as_uuid(),
                &"Ship",
                &"command",
                &body,
                &Some(id.as_uuid()),
                &at,
                &PROCESS,
                &text,
                &"bench",
                &claim,
                &lease,
            ],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Polls every future together until all are done: their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(&mut outputs) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(done) => *output = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// The keys of each transaction: `events` round-robin over `instances`,
/// the next `batch` events each.
fn batches(instances: usize, events: usize, batch: usize) -> Vec<Vec<usize>> {
    let keys: Vec<usize> = (0..events).map(|n| n % instances).collect();
    keys.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// The bare loop: the same rows in the given transactions.
fn bare_burst(
    url: &str,
    instances: usize,
    texts: &Texts,
    transactions: &[Vec<usize>],
    mode: Mode,
) -> (usize, Duration) {
    let schema = Schema::new(url, "bare");
    let (texts, transactions) = (texts.clone(), transactions.to_vec());
    // On a task of the runtime, as the store's writer is, rather than on
    // the thread that blocks on it: every round trip then wakes a task
    // where the connection's own task runs, as it does for the store.
    runtime().block_on(async {
        let mut bare = Bare::new(&schema, instances, &texts).await;
        let run = tokio::spawn(async move {
            let start = Instant::now();
            for keys in &transactions {
                bare.transaction(keys, mode).await;
            }
            bare.finish().await;
            let events = transactions.iter().map(Vec::len).sum();
            (events, start.elapsed())
        });
        run.await.unwrap()
    })
}

/// The engine, one event at a time: the time from publishing each event
/// to its command at the handler.
fn engine_closed_loop(url: &str, instances: usize, events: usize) -> (Vec<Duration>, f64, Texts) {
    let schema = Schema::new(url, "engine");
    runtime().block_on(async {
        let (sender, mut delivered) = tokio::sync::mpsc::unbounded_channel();
        let (engine, store, _) = engine(&schema, Some(sender)).await;
        warm(&engine, instances).await;
        while delivered.try_recv().is_ok() {}
        let before = store.transactions();
        let mut latencies = Vec::with_capacity(events);
        for n in 0..events {
            let order = (n % instances) as u64;
            let start = Instant::now();
            engine.publish(Placed { order });
            let got = tokio::time::timeout(Duration::from_secs(10), delivered.recv())
                .await
                .expect("a command within ten seconds")
                .unwrap();
            latencies.push(start.elapsed());
            assert_eq!(got, order);
        }
        engine.idle().await;
        let per_event = (store.transactions() - before) as f64 / events as f64;
        let client = schema.client().await;
        let row = client
            .query_one("SELECT state, data FROM instances WHERE process = $1 LIMIT 1", &[&PROCESS])
            .await
            .unwrap();
        (latencies, per_event, Texts { state: row.get(0), data: row.get(1) })
    })
}

/// The bare loop, one transaction per event, each timed from its `BEGIN`
/// to its `COMMIT` answered.
fn bare_closed_loop(url: &str, instances: usize, events: usize, texts: &Texts) -> Vec<Duration> {
    let schema = Schema::new(url, "bare");
    runtime().block_on(async {
        let mut bare = Bare::new(&schema, instances, texts).await;
        let run = tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(events);
            for n in 0..events {
                let start = Instant::now();
                bare.transaction(&[n % instances], Mode::Sequential).await;
                latencies.push(start.elapsed());
            }
            bare.finish().await;
            latencies
        });
        run.await.unwrap()
    })
}

/// The `p`-th percentile of some durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

/// How many times each measurement and its baseline run, in turn, keeping
/// the best: the machine is shared, and a change of load then hits both.
const ROUNDS: usize = 3;

/// One line of the results.
struct Result {
    name: &'static str,
    unit: &'static str,
    value: f64,
    baseline: String,
    baseline_value: f64,
    goal: &'static str,
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks parts by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let url = database_url();
    let mut results = Vec::new();

    if wanted("burst") {
        let (instances, events) = (scaled(10_000), scaled(50_000));
        let (mut engine, mut bare, mut pipelined, mut batch) = (0.0f64, 0.0f64, 0.0f64, 0usize);
        for round in 0..ROUNDS {
            let burst = engine_burst(&url, instances, events);
            let rate = burst.events as f64 / burst.took.as_secs_f64();
            batch = (burst.events as f64 / burst.transactions.max(1) as f64).round() as usize;
            let transactions = batches(instances, events, batch);
            let texts = &burst.texts;
            let (done, took) = bare_burst(&url, instances, texts, &transactions, Mode::Sequential);
            let bare_rate = done as f64 / took.as_secs_f64();
            let (done, took) = bare_burst(&url, instances, texts, &transactions, Mode::Pipelined);
            let pipelined_rate = done as f64 / took.as_secs_f64();
            println!(
                "burst, round {}: engine {rate:.0} events/s in {} transactions \
                 ({batch} events each); bare loop {bare_rate:.0} events/s; \
                 pipelined {pipelined_rate:.0} events/s",
                round + 1,
                burst.transactions,
            );
            engine = engine.max(rate);
            bare = bare.max(bare_rate);
            pipelined = pipelined.max(pipelined_rate);
        }
        results.push(Result {
            name: "postgres/burst: events through the engine (group commit)",
            unit: "events/s",
            value: engine,
            baseline: format!(
                "bare tokio-postgres loop, same rows, {batch} events per transaction"
            ),
            baseline_value: bare,
            goal: "ratio >= 0.7",
        });
        results.push(Result {
            name: "postgres/burst: events through the engine (group commit)",
            unit: "events/s",
            value: engine,
            baseline: format!("the same loop, statements pipelined, {batch} per transaction"),
            baseline_value: pipelined,
            goal: "(what the round trips cost)",
        });
    }

    if wanted("closed-loop") {
        let (instances, events) = (scaled(1_000), scaled(1_000));
        let (mut engine, mut bare): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let (latencies, per_event, texts) = engine_closed_loop(&url, instances, events);
            let baseline = bare_closed_loop(&url, instances, events, &texts);
            let (mut a, mut b) = (latencies.clone(), baseline.clone());
            a.sort();
            b.sort();
            println!(
                "closed loop, round {}: engine p50 {:?} p99 {:?} ({per_event:.2} transactions \
                 per event); bare loop p50 {:?} p99 {:?}",
                round + 1,
                percentile(&a, 50.0),
                percentile(&a, 99.0),
                percentile(&b, 50.0),
                percentile(&b, 99.0),
            );
            engine.extend(latencies);
            bare.extend(baseline);
        }
        engine.sort();
        bare.sort();
        for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
            let (e, b) = (percentile(&engine, p), percentile(&bare, p));
            results.push(Result {
                name: if name == "p50" {
                    "postgres/closed loop: publish to command handled, p50"
                } else {
                    "postgres/closed loop: publish to command handled, p99"
                },
                unit: "µs",
                value: e.as_secs_f64() * 1e6,
                baseline: format!("bare loop, one transaction per event, {name}"),
                baseline_value: b.as_secs_f64() * 1e6,
                goal: "(latency: lower is better)",
            });
        }
    }

    report(&results);
}

/// Prints the table and appends one JSON line per comparison to
/// `target/bench-results.jsonl`.
fn report(results: &[Result]) {
    println!(
        "{:<58} {:>12}   {:<62} {:>12} {:>7}   goal",
        "benchmark", "value", "baseline", "baseline", "ratio"
    );
    let mut lines = String::new();
    for r in results {
        let ratio = r.value / r.baseline_value;
        println!(
            "{:<58} {:>12.0}   {:<62} {:>12.0} {:>7.3}   {}",
            r.name, r.value, r.baseline, r.baseline_value, ratio, r.goal
        );
        let line = serde_json::json!({
            "name": r.name,
            "unit": r.unit,
            "value": r.value.round(),
            "baseline": r.baseline,
            "baseline_value": r.baseline_value.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
        });
        lines.push_str(&line.to_string());
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
