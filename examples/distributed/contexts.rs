//! The bounded contexts around the registration process, in a program of
//! their own that knows nothing of Switchyard but `docs/wire-format.md`:
//! it speaks to NATS JetStream with the plain client and JSON, as a service
//! in another language would.
//!
//! `serve` plays Reservations, Payments and Orders. It consumes every
//! command of the registration process (`{prefix}.command.>`) through one
//! durable pull consumer of its own, drops a command whose `Nats-Msg-Id`
//! it has seen (a resend is allowed on the wire), appends each delivery to
//! a log (`sequence delivered id name order fresh|again`) that the
//! end-to-end test reads, and answers as the contexts would: seats
//! reserved (or one short, for the wait list), payment for the orders that
//! pay, the order confirmed once asked. The unpaid orders get no payment,
//! so their `Expiry` timer fires. Which order does what follows from its
//! number (`plan.rs`).
//!
//! `place` is the Orders context taking orders: it publishes `OrderPlaced`
//! for orders FIRST..FIRST+COUNT at a given rate.
//!
//! ```text
//! switchyard-distributed-contexts serve --log FILE [--quiet]
//! switchyard-distributed-contexts place --count N [--first 0] [--tag o]
//!     [--per-second 200] [--unpaid-expiry-ms 20000]
//! common: [--stream registration] [--prefix registration], NATS_URL
//! ```

#[path = "plan.rs"]
mod plan;

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, context::PublishAckFuture};
use futures_util::StreamExt;
use plan::{Kind, setting};
use serde_json::{Value, json};

/// The consumer's durable name: one no engine node uses.
const CONSUMER: &str = "contexts";

/// Where the program talks.
#[derive(Debug)]
struct Wire {
    jetstream: jetstream::Context,
    stream: String,
    prefix: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = setting(&args, "--nats-url", "NATS_URL", "nats://127.0.0.1:4222");
    let client = async_nats::connect(&url).await.context("connect to NATS (NATS_URL)")?;
    let wire = Wire {
        jetstream: jetstream::new(client),
        stream: setting(&args, "--stream", "SWITCHYARD_STREAM", plan::DEFAULT_NAME),
        prefix: setting(&args, "--prefix", "SWITCHYARD_PREFIX", plan::DEFAULT_NAME),
    };
    match args.first().map(String::as_str) {
        Some("serve") => serve(&wire, &args).await,
        Some("place") => place(&wire, &args).await,
        _ => anyhow::bail!("usage: switchyard-distributed-contexts serve|place [options]"),
    }
}

/// Answers commands until killed.
async fn serve(wire: &Wire, args: &[String]) -> anyhow::Result<()> {
    let log = setting(args, "--log", "SWITCHYARD_CONTEXTS_LOG", "contexts.log");
    let mut log = BufWriter::new(File::create(&log).with_context(|| format!("create {log}"))?);
    let quiet = args.iter().any(|a| a == "--quiet");
    let consumer = consumer(wire).await?;
    let mut seen = HashSet::new();
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(256)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .context("pull commands")?;
        let mut handled = Vec::new();
        let mut answers = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("pull a command: {e}"))?;
            if let Some(answer) = take(wire, &message, &mut seen, &mut log, quiet).await? {
                answers.push(answer);
            }
            handled.push(message);
        }
        // Logged and answered, then acknowledged: a kill in between brings
        // the command again, and the log shows it twice.
        log.flush().context("write the log")?;
        for answer in answers {
            answer.await.context("the stream stores an answer")?;
        }
        for message in handled {
            message.ack().await.map_err(|e| anyhow::anyhow!("acknowledge a command: {e}"))?;
        }
    }
}

/// The contexts' own durable consumer of every command, made once the
/// engine nodes have made the stream.
async fn consumer(wire: &Wire) -> anyhow::Result<jetstream::consumer::PullConsumer> {
    let mut waited = 0;
    let stream = loop {
        match wire.jetstream.get_stream(&wire.stream).await {
            Ok(stream) => break stream,
            Err(_) if waited < 600 => {
                waited += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => anyhow::bail!("no stream `{}` after a minute: {e}", wire.stream),
        }
    };
    let config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        filter_subject: format!("{}.command.>", wire.prefix),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10_000,
        ..pull::Config::default()
    };
    stream.get_or_create_consumer(CONSUMER, config).await.context("make the contexts' consumer")
}

/// Logs one delivered command and, the first time its id comes, publishes
/// the contexts' answer.
async fn take(
    wire: &Wire,
    message: &jetstream::Message,
    seen: &mut HashSet<String>,
    log: &mut BufWriter<File>,
    quiet: bool,
) -> anyhow::Result<Option<PublishAckFuture>> {
    let header = |name: &str| {
        message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
    };
    let id = header("Nats-Msg-Id").context("a command without `Nats-Msg-Id`")?;
    let name = header("Switchyard-Type").context("a command without `Switchyard-Type`")?;
    let body: Value = serde_json::from_slice(&message.payload).context("a command's JSON")?;
    let order = body
        .get("order_id")
        .or_else(|| body.get("reservation_id"))
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned();
    let info = message.info().map_err(|e| anyhow::anyhow!("a delivery's info: {e}"))?;
    let fresh = seen.insert(id.clone());
    let (sequence, delivered) = (info.stream_sequence, info.delivered);
    let mark = if fresh { "fresh" } else { "again" };
    writeln!(log, "{sequence} {delivered} {id} {name} {order} {mark}").context("write the log")?;
    if !quiet {
        let again = if fresh { "" } else { " (again: dropped)" };
        println!("  contexts  <- {name:<22} {order}{again}");
    }
    if !fresh {
        return Ok(None);
    }
    let Some((event, answer)) = answer(&name, &body) else { return Ok(None) };
    if !quiet {
        println!("  contexts  -> {event:<22} {order}");
    }
    // The answer's id follows from the command's: answering again after a
    // restart is dropped by the stream's duplicate window.
    let answer_id = format!("{id}/{event}");
    publish(wire, event, &answer_id, &answer).await.map(Some)
}

/// What a context answers to a command, if anything.
fn answer(name: &str, command: &Value) -> Option<(&'static str, Value)> {
    let order = command.get("order_id").or_else(|| command.get("reservation_id"))?;
    let kind = Kind::of(plan::order_number(order.as_str()?)?);
    match (name, kind) {
        ("MakeSeatReservation", Kind::WaitListed) => {
            let wanted = command["seats"][0]["quantity"].as_u64().unwrap_or(1);
            let reserved = if wanted > 1 { vec![seat(wanted - 1)] } else { Vec::new() };
            Some((
                "SeatsNotReserved",
                json!({
                    "reservation_id": order,
                    "conference_id": command["conference_id"],
                    "request": command["request"],
                    "reserved": reserved,
                    "missing": [seat(1)],
                }),
            ))
        }
        ("MakeSeatReservation", _) => Some((
            "SeatsReserved",
            json!({
                "reservation_id": order,
                "conference_id": command["conference_id"],
                "request": command["request"],
                "reserved": command["seats"],
            }),
        )),
        ("MarkSeatsAsReserved", Kind::Paid | Kind::WaitListed) => Some((
            "PaymentCompleted",
            json!({ "payment_source_id": order, "payment_id": format!("pay-{}", order.as_str()?) }),
        )),
        ("ConfirmOrder", _) => Some(("OrderConfirmed", json!({ "order_id": order }))),
        _ => None,
    }
}

fn seat(quantity: u64) -> Value {
    json!({ "seat_type": "full", "quantity": quantity })
}

/// Publishes an event with the documented headers and a JSON body.
async fn publish(
    wire: &Wire,
    name: &str,
    id: &str,
    body: &Value,
) -> anyhow::Result<PublishAckFuture> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    headers.insert("Switchyard-Type", name);
    headers.insert("Content-Type", "application/json");
    let subject = format!("{}.event.{name}", wire.prefix);
    let payload = serde_json::to_vec(body)?;
    wire.jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await
        .with_context(|| format!("publish {name}"))
}

/// Places orders at a steady rate, each once, and waits until the stream
/// has stored every one.
async fn place(wire: &Wire, args: &[String]) -> anyhow::Result<()> {
    let number = |flag: &str, default: &str| -> anyhow::Result<u64> {
        let text = setting(args, flag, "", default);
        text.parse().with_context(|| format!("{flag} is a number, not `{text}`"))
    };
    let first = u32::try_from(number("--first", "0")?)?;
    let count = u32::try_from(number("--count", "10")?)?;
    let gap = Duration::from_secs(1).div_f64(number("--per-second", "200")?.max(1) as f64);
    let expiry = Duration::from_millis(number("--unpaid-expiry-ms", "20000")?);
    let tag = setting(args, "--tag", "", "o");
    let quiet = args.iter().any(|a| a == "--quiet");
    let mut pending = Vec::new();
    let mut ticks = tokio::time::interval(gap);
    for order in first..first + count {
        ticks.tick().await;
        let (id, kind) = (plan::order_id(&tag, order), Kind::of(order));
        let placed = plan::now_millis();
        let body = json!({
            "order_id": id,
            "conference_id": plan::CONFERENCE,
            "seats": [seat(u64::from(plan::seats(order)))],
            "reservation_expires": kind.expires(placed, expiry),
        });
        if !quiet {
            println!("  orders    -> OrderPlaced            {id} ({kind:?})");
        }
        pending.push(publish(wire, "OrderPlaced", &format!("placed-{id}"), &body).await?);
    }
    for ack in pending {
        ack.await.context("the stream stores an order")?;
    }
    Ok(())
}
