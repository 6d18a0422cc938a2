//! Engines on the JetStream bus, side by side in the same run with the same
//! JetStream work done by plain clients, and reported as ratios:
//!
//! - **end to end**: events published on the stream by a plain publisher
//!   (with the headers `docs/wire-format.md` documents), taken by one engine
//!   node and then by three (three engines in this process on one shared
//!   `MemoryStore`, so that the bus is what is measured, not a database),
//!   each event leading to a command the engine publishes back on the
//!   stream, read by a plain pull consumer; events per second from the
//!   first publish to the last command consumed. The baseline does the
//!   same JetStream work without the engine: the same publisher, relays
//!   (as many as nodes) that pull each event from a durable consumer, read
//!   its JSON, publish the reply with the same headers, and ack the event
//!   once the stream has stored the reply, and the same plain consumer of
//!   the replies;
//! - **latency**: from publishing an event to its command delivered at a
//!   command handler of the engine (one node), p50 and p99, in a closed loop
//!   (one event in flight) and at a fixed offered rate below saturation
//!   (an open loop: each event published when it is due, whatever came
//!   before); the baseline is the same relay, with the plain
//!   consumer of the replies as the handler.
//!
//! Run with `cargo bench -p switchyard-nats --bench jetstream` against
//! `NATS_URL` (default `nats://127.0.0.1:4222`, a server with JetStream);
//! each measurement makes a stream of its own and deletes it. A filter
//! argument (`end-to-end`, `latency`) runs one part;
//! `SWITCHYARD_BENCH_SCALE=0.1` runs everything ten times smaller, and
//! `SWITCHYARD_BENCH_RATE` sets the offered rate (events per second).
//! Results are printed and appended to `target/bench-results.jsonl`.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchyard::{CommandContext, Engine, HandlerError, MemoryStore, MessageId, MessageKind};
use switchyard_nats::{JetStreamBus, JetStreamOptions, wire};
use tokio::sync::mpsc;

switchyard::process! {
    /// Ships an order once it is placed: one event, one command.
    process Fulfilment {
        correlate by order: u64

        initial state Waiting {
            on Placed {
                send Ship { order: id }
                -> Shipped
            }
        }

        final state Shipped
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

fn nats_url() -> String {
    std::env::var("NATS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned())
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

/// A stream and subject prefix of one measurement's own, made by a bus as
/// the engine makes it, and deleted by [`Stream::finish`].
struct Stream {
    url: String,
    options: JetStreamOptions,
    jetstream: jetstream::Context,
}

impl Stream {
    async fn new(url: &str) -> Stream {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let options = JetStreamOptions {
            stream: format!("bench-{}", &unique[..12]),
            subject_prefix: format!("bench{}", &unique[..12]),
            // A run that fails before its end leaves its stream behind;
            // the server drops its messages within the hour.
            max_age: Duration::from_secs(3600),
            ..JetStreamOptions::default()
        };
        let client = async_nats::connect(url).await.expect("connect to NATS_URL");
        let jetstream = jetstream::new(client);
        // The bus makes the stream, with the bus's settings.
        drop(JetStreamBus::connect(url, options.clone()).await.expect("the bus connects"));
        Stream { url: url.to_owned(), options, jetstream }
    }

    fn subject(&self, kind: MessageKind, name: &str) -> String {
        wire::subject(&self.options.subject_prefix, kind, name)
    }

    async fn bus(&self) -> JetStreamBus {
        JetStreamBus::connect(&self.url, self.options.clone()).await.expect("the bus connects")
    }

    /// A durable pull consumer of one subject, configured as the bus
    /// configures its own (explicit acks, the same ack wait, no limit of
    /// deliveries, the server's default of pending acks).
    async fn consumer(
        &self,
        jetstream: &jetstream::Context,
        durable: &str,
        subject: String,
    ) -> jetstream::consumer::Consumer<pull::Config> {
        let stream = jetstream.get_stream(&self.options.stream).await.unwrap();
        let config = pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: subject,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            max_deliver: -1,
            ..Default::default()
        };
        stream.create_consumer(config).await.unwrap()
    }

    /// Waits until `waiting` pulls wait on the durable consumer: the nodes
    /// or relays are ready before the clock starts.
    async fn until_pulling(&self, durable: &str, waiting: usize) {
        let stream = self.jetstream.get_stream(&self.options.stream).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(info) = stream.consumer_info(durable).await
                && info.num_waiting >= waiting
            {
                return;
            }
            assert!(Instant::now() < deadline, "`{durable}` never had {waiting} pulls waiting");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) {
        self.jetstream.delete_stream(&self.options.stream).await.expect("delete the stream");
    }
}

/// Publishes event `order` as another service would, with the documented
/// headers and its JSON body, and returns the stream's acknowledgement to
/// wait for.
async fn publish(
    jetstream: &jetstream::Context,
    subject: &str,
    order: u64,
) -> jetstream::context::PublishAckFuture {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(wire::MESSAGE_ID, MessageId::new().to_string().as_str());
    headers.insert(wire::TYPE, "Placed");
    let body = serde_json::to_vec(&Placed { order }).unwrap();
    jetstream
        .publish_with_headers(subject.to_owned(), headers, body.into())
        .await
        .expect("publish an event")
}

/// Publishes `events` events, keeping at most a thousand acknowledgements
/// outstanding, and waits for them all.
async fn publish_all(jetstream: &jetstream::Context, subject: &str, events: usize) {
    let mut acks = VecDeque::with_capacity(1024);
    for order in 0..events as u64 {
        if acks.len() >= 1000 {
            let ack: jetstream::context::PublishAckFuture = acks.pop_front().unwrap();
            ack.await.expect("the stream stores the event");
        }
        acks.push_back(publish(jetstream, subject, order).await);
    }
    for ack in acks {
        ack.await.expect("the stream stores the event");
    }
}

/// A plain consumer of the commands: acks each and hands its order on.
async fn consume_commands(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    events: usize,
    delivered: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let mut messages = consumer.messages().await.unwrap();
    for _ in 0..events {
        // The stream is deleted under a handler that has no end.
        let Some(Ok(message)) = messages.next().await else { return };
        let ship: Ship = serde_json::from_slice(&message.payload).unwrap();
        let _ = delivered.send((ship.order, Instant::now()));
        message.ack().await.unwrap();
    }
}

/// A relay of the baseline, on a connection of its own: pulls each event,
/// reads its JSON, publishes the reply with the headers the bus writes
/// (an id derived from the event's, as the engine derives it), and acks
/// the event once the stream has stored the reply.
async fn relay(stream: &Stream, durable: &str) {
    let client = async_nats::connect(&stream.url).await.unwrap();
    let jetstream = jetstream::new(client);
    let events = stream.subject(MessageKind::Event, "Placed");
    let consumer = stream.consumer(&jetstream, durable, events).await;
    let commands = stream.subject(MessageKind::Command, "Ship");
    tokio::spawn(async move {
        let mut messages = consumer.messages().await.unwrap();
        while let Some(Ok(message)) = messages.next().await {
            let placed: Placed = serde_json::from_slice(&message.payload).unwrap();
            let headers = message.headers.as_ref().unwrap();
            let id = wire::message_id(headers.get(wire::MESSAGE_ID).unwrap().as_str());
            let mut reply = async_nats::HeaderMap::new();
            let command = id.derive_in("Fulfilment", 0);
            reply.insert(wire::MESSAGE_ID, command.to_string().as_str());
            reply.insert(wire::TYPE, "Ship");
            reply.insert(wire::KIND, "command");
            reply.insert(wire::CAUSATION_ID, id.to_string().as_str());
            let now = switchyard::Timestamp::now().millis().to_string();
            reply.insert(wire::TIME, now.as_str());
            reply.insert(wire::CONTENT_TYPE, "application/json");
            let body = serde_json::to_vec(&Ship { order: placed.order }).unwrap();
            let stored =
                jetstream.publish_with_headers(commands.clone(), reply, body.into()).await.unwrap();
            tokio::spawn(async move {
                stored.await.expect("the stream stores the reply");
                message.ack().await.unwrap();
            });
        }
    });
}

/// What the engines or relays are, for one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Engine,
    Bare,
}

/// Starts `nodes` engine nodes (one `MemoryStore` shared between them) or
/// bare relays on `stream`, and waits until each pulls events. With
/// `handler`, the engines handle the commands themselves (a command handler
/// of each node hands on the order) and the bare side reads the replies
/// with a plain consumer that does the same; without, neither does.
async fn start(
    stream: &Stream,
    side: Side,
    nodes: usize,
    handler: Option<mpsc::UnboundedSender<(u64, Instant)>>,
) -> Vec<Engine> {
    let durable = wire::consumer_name(&stream.options.consumer, MessageKind::Event, "Placed");
    let mut engines = Vec::new();
    match side {
        Side::Engine => {
            let store = MemoryStore::new();
            for _ in 0..nodes {
                let builder = Engine::builder()
                    .store(store.clone())
                    .bus(stream.bus().await)
                    .process::<Fulfilment>();
                let builder = match handler.clone() {
                    Some(delivered) => builder.handle(move |ship: Ship, _: CommandContext| {
                        let _ = delivered.send((ship.order, Instant::now()));
                        async { Ok::<_, HandlerError>(()) }
                    }),
                    None => builder,
                };
                engines.push(builder.build());
            }
        }
        Side::Bare => {
            for _ in 0..nodes {
                relay(stream, &durable).await;
            }
            if let Some(delivered) = handler {
                let subject = stream.subject(MessageKind::Command, "Ship");
                let consumer = stream.consumer(&stream.jetstream, "handler", subject).await;
                tokio::spawn(consume_commands(consumer, usize::MAX, delivered));
            }
        }
    }
    stream.until_pulling(&durable, nodes).await;
    engines
}

/// End to end: `events` events published at once, through `nodes` engine
/// nodes or bare relays, to the last command consumed.
fn end_to_end(url: &str, side: Side, nodes: usize, events: usize) -> (usize, Duration) {
    runtime().block_on(async {
        let stream = Stream::new(url).await;
        let engines = start(&stream, side, nodes, None).await;
        let subject = stream.subject(MessageKind::Command, "Ship");
        let consumer = stream.consumer(&stream.jetstream, "reader", subject).await;
        let (sender, mut delivered) = mpsc::unbounded_channel();
        let reader = tokio::spawn(consume_commands(consumer, events, sender));
        stream.until_pulling("reader", 1).await;
        let start = Instant::now();
        publish_all(&stream.jetstream, &stream.subject(MessageKind::Event, "Placed"), events).await;
        reader.await.unwrap();
        let (mut last, mut commands) = (start, 0);
        while let Ok((_, at)) = delivered.try_recv() {
            last = last.max(at);
            commands += 1;
        }
        assert_eq!(commands, events, "every command consumed");
        let took = last - start;
        if side == Side::Engine {
            let handled: Vec<u64> = engines.iter().map(|engine| engine.stats().handled).collect();
            assert_eq!(handled.iter().sum::<u64>(), events as u64, "handled per node: {handled:?}");
            if nodes > 1 {
                println!("  handled per node: {handled:?}");
            }
        }
        drop(engines);
        stream.finish().await;
        (events, took)
    })
}

/// One event in flight at a time: the time from publishing each event
/// (the publish and the stream's acknowledgement included) to its command
/// at the handler.
fn closed_loop(url: &str, side: Side, events: usize) -> Vec<Duration> {
    runtime().block_on(async {
        let stream = Stream::new(url).await;
        let (sender, mut delivered) = mpsc::unbounded_channel();
        let engines = start(&stream, side, 1, Some(sender)).await;
        let subject = stream.subject(MessageKind::Event, "Placed");
        // A few events first, so that the command's consumer is made and
        // pulling, and the connections warm.
        let warm = 20;
        let mut latencies = Vec::with_capacity(events);
        for order in 0..(warm + events) as u64 {
            let start = Instant::now();
            publish(&stream.jetstream, &subject, order).await.await.unwrap();
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), delivered.recv())
                .await
                .expect("a command within ten seconds")
                .unwrap();
            assert_eq!(got, order);
            if order >= warm as u64 {
                latencies.push(at - start);
            }
        }
        drop(engines);
        stream.finish().await;
        latencies
    })
}

/// Events offered at `rate` per second for `events` events, each published
/// when it is due whatever happened before (an open loop): the time from
/// publishing each to its command at the handler. The publisher's timer
/// has a resolution of a millisecond, so each event is timed from when it
/// was actually published, and how late the publisher fell behind its
/// schedule is printed: at a rate below saturation it stays within the
/// timer's millisecond.
fn offered(url: &str, side: Side, rate: f64, events: usize) -> Vec<Duration> {
    runtime().block_on(async {
        let stream = Stream::new(url).await;
        let (sender, mut delivered) = mpsc::unbounded_channel();
        let engines = start(&stream, side, 1, Some(sender)).await;
        let subject = stream.subject(MessageKind::Event, "Placed");
        // Warm as the closed loop does.
        for order in 0..20u64 {
            publish(&stream.jetstream, &subject, order).await.await.unwrap();
            delivered.recv().await.unwrap();
        }
        let jetstream = stream.jetstream.clone();
        let start = tokio::time::Instant::now() + Duration::from_millis(10);
        let publisher = tokio::spawn(async move {
            let (mut published, mut acks) =
                (Vec::with_capacity(events), Vec::with_capacity(events));
            let mut late = Duration::ZERO;
            for n in 0..events {
                let due = start + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due).await;
                let now = Instant::now();
                late = late.max(now.saturating_duration_since(due.into_std()));
                published.push(now);
                // Each acknowledgement awaited as it comes: the client holds
                // only so many outstanding before a publish waits for one.
                let ack = publish(&jetstream, &subject, 1_000 + n as u64).await;
                acks.push(tokio::spawn(async move { ack.await }));
            }
            for ack in acks {
                ack.await.unwrap().expect("the stream stores the event");
            }
            (published, late)
        });
        let mut arrived = Vec::with_capacity(events);
        while arrived.len() < events {
            let next = tokio::time::timeout(Duration::from_secs(10), delivered.recv()).await;
            let Ok(Some((order, at))) = next else {
                panic!(
                    "{side:?}: {} of {events} commands, then none for ten seconds",
                    arrived.len()
                )
            };
            arrived.push(((order - 1_000) as usize, at));
        }
        let (published, late) = publisher.await.unwrap();
        println!("  {side:?} at {rate:.0} events/s: the publisher was at most {late:?} late");
        drop(engines);
        stream.finish().await;
        arrived.into_iter().map(|(n, at)| at - published[n]).collect()
    })
}

/// The `p`-th percentile of some sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

/// How many times each measurement and its baseline run, in turn, keeping
/// the best rate (the machine is shared: a change of load then hits both).
const ROUNDS: usize = 3;

/// One line of the results.
struct Result {
    name: String,
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
    let url = nats_url();
    let mut results = Vec::new();

    if wanted("end-to-end") {
        let events = scaled(50_000);
        for nodes in [1, 3] {
            let (mut engine, mut bare) = (0.0f64, 0.0f64);
            for round in 0..ROUNDS {
                let (n, took) = end_to_end(&url, Side::Engine, nodes, events);
                let rate = n as f64 / took.as_secs_f64();
                let (n, took) = end_to_end(&url, Side::Bare, nodes, events);
                let bare_rate = n as f64 / took.as_secs_f64();
                println!(
                    "end to end, {nodes} node(s), round {}: engine {rate:.0} events/s; \
                     bare {bare_rate:.0} events/s",
                    round + 1
                );
                engine = engine.max(rate);
                bare = bare.max(bare_rate);
            }
            results.push(Result {
                name: format!("jetstream/end to end, {nodes} node(s), MemoryStore"),
                unit: "events/s",
                value: engine,
                baseline: format!("bare publish, {nodes} relay(s), consume, same messages"),
                baseline_value: bare,
                goal: "(events per second)",
            });
        }
    }

    if wanted("latency") {
        let events = scaled(1_000);
        let rate: f64 = std::env::var("SWITCHYARD_BENCH_RATE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2_000.0);
        // Five seconds of events at the rate.
        let offered_events = scaled((rate * 5.0) as usize);
        let mut rows: Vec<(String, Vec<Duration>, Vec<Duration>)> = vec![
            ("closed loop".to_owned(), Vec::new(), Vec::new()),
            (format!("offered {rate:.0} events/s"), Vec::new(), Vec::new()),
        ];
        for round in 0..ROUNDS {
            rows[0].1.extend(closed_loop(&url, Side::Engine, events));
            rows[0].2.extend(closed_loop(&url, Side::Bare, events));
            rows[1].1.extend(offered(&url, Side::Engine, rate, offered_events));
            rows[1].2.extend(offered(&url, Side::Bare, rate, offered_events));
            println!("latency, round {} done", round + 1);
        }
        for (what, mut engine, mut bare) in rows {
            engine.sort();
            bare.sort();
            for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
                results.push(Result {
                    name: format!("jetstream/{what}, 1 node: publish to handler, {name}"),
                    unit: "µs",
                    value: percentile(&engine, p).as_secs_f64() * 1e6,
                    baseline: format!("bare relay and consumer, {name}"),
                    baseline_value: percentile(&bare, p).as_secs_f64() * 1e6,
                    goal: "(latency: lower is better)",
                });
            }
        }
    }

    report(&results);
}

/// Prints the table and appends one JSON line per comparison to
/// `target/bench-results.jsonl`.
fn report(results: &[Result]) {
    println!(
        "{:<62} {:>12}   {:<48} {:>12} {:>7}",
        "benchmark", "value", "baseline", "baseline", "ratio"
    );
    let mut lines = String::new();
    for r in results {
        let ratio = r.value / r.baseline_value;
        println!(
            "{:<62} {:>12.0}   {:<48} {:>12.0} {:>7.3}   {}",
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
