//! The consuming side: one durable pull consumer per wire name a receiver
//! takes, read by a task that turns each JetStream message into an
//! [`Envelope`] and an [`Ack`], and settles the message with JetStream only
//! when the receiver settles the ack.
//!
//! **One consumer per wire name.** A consumer filtered to several subjects
//! needs NATS 2.10; one per name also runs on 2.9, the version Debian
//! packages, and its cost is a few more consumers on the server.
//!
//! **How nodes share the work.** Every node's receiver of a name pulls from
//! the same durable consumer, and JetStream hands each message to one of
//! them: the consumer is a queue. Nothing on the bus keeps the messages of
//! one instance on one node; the store does. Two nodes that change one
//! instance at once both commit against the version they loaded, one of
//! them meets a conflict, and the engine decides its message again on the
//! stored state. Partitioning subjects by the instance key instead would
//! need the bus (and every service that publishes) to know each process's
//! correlation key, which is a field of the body that each process chooses
//! for itself (one event can reach two processes under two keys), and
//! would leave the number of partitions to be chosen and moved by hand as
//! nodes come and go. The version check is already what keeps engines on a
//! shared store correct; the bus adds nothing it must trust.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use switchyard_runtime::{Ack, MessageKind, Receiver, Settle, Settled, Timestamp};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::JetStreamOptions;
use crate::wire::{self, Stored};

/// What a consumer's task needs: one wire name and the receiver of it.
pub(crate) struct Feed {
    pub stream: stream::Stream,
    pub subject: String,
    pub durable: String,
    pub name: String,
    pub kind: MessageKind,
    pub options: JetStreamOptions,
    pub receiver: Arc<dyn Receiver>,
    pub runtime: tokio::runtime::Handle,
}

/// Why a consumer stopped delivering, to be made again after a pause.
type Failure = Box<dyn std::error::Error + Send + Sync>;

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// Consumes `feed` until the bus is dropped (`open` closes). When the
/// consumer cannot be made or its messages stop (the server went away, the
/// consumer was deleted), it is made again after a pause that doubles up to
/// five seconds, and is short again once a message came through.
pub(crate) async fn run(feed: Feed, mut open: watch::Receiver<()>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let mut delivered = false;
        let outcome = tokio::select! {
            outcome = feed.consume(&mut delivered) => outcome,
            _ = open.changed() => return,
        };
        if delivered {
            pause = FIRST_PAUSE;
        }
        match outcome {
            Ok(()) => debug!(consumer = feed.durable, "the messages of a consumer ended"),
            Err(error) => {
                warn!(consumer = feed.durable, %error, "a consumer failed; it is made again")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = open.changed() => return,
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

impl Feed {
    /// Makes the durable consumer (or binds to it) and hands its messages to
    /// the receiver until they stop.
    async fn consume(&self, delivered: &mut bool) -> Result<(), Failure> {
        let consumer = self.stream.create_consumer(self.config()).await?;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            self.deliver(message?);
            *delivered = true;
        }
        Ok(())
    }

    fn config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some(format!("switchyard: the {} `{}`", self.kind.as_str(), self.name)),
            filter_subject: self.subject.clone(),
            deliver_policy: self.options.deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.options.ack_wait,
            max_deliver: self.options.max_deliver.unwrap_or(-1),
            max_ack_pending: self.options.max_ack_pending.unwrap_or(0),
            ..Default::default()
        }
    }

    /// Hands one message to the receiver with an ack that settles it with
    /// JetStream. A message from another subject than the consumer's cannot
    /// be named, so it is terminated with the reason logged.
    fn deliver(&self, message: jetstream::Message) {
        let stored = match message.info() {
            Ok(info) => (info.stream.to_owned(), info.stream_sequence, millis(info.published)),
            Err(error) => {
                warn!(consumer = self.durable, %error, "a delivered message is not from a stream");
                return;
            }
        };
        let (message, acker) = message.split();
        if message.subject.as_str() != self.subject {
            warn!(
                consumer = self.durable,
                subject = message.subject.as_str(),
                "a message on another subject than its consumer's cannot be named; terminated"
            );
            self.runtime.spawn(settle_with(acker, AckKind::Term));
            return;
        }
        let (stream, sequence, published) = stored;
        let stored = Stored { stream: &stream, sequence, published };
        let envelope = wire::incoming(
            &self.name,
            self.kind,
            message.headers.as_ref(),
            &message.payload,
            stored,
        );
        let (runtime, nak_delay) = (self.runtime.clone(), self.options.nak_delay);
        let settle = Settle::new(move |settled| {
            runtime.spawn(settle_with(acker, ack_kind(&settled, nak_delay)));
        });
        let id = envelope.id;
        self.receiver.receive(envelope, Ack::new(id, settle));
    }
}

/// How an ack's outcome reads to JetStream: handled or dead-lettered by the
/// receiver is an ack (the receiver holds it now), refused for good a
/// termination, and dropped unsettled a negative ack after `nak_delay`.
fn ack_kind(settled: &Settled, nak_delay: Duration) -> AckKind {
    if let Some(rejection) = settled.rejected.first() {
        warn!(id = %rejection.id, reason = rejection.reason, "a message was refused; terminated");
        AckKind::Term
    } else if !settled.unacknowledged.is_empty() {
        AckKind::Nak(Some(nak_delay))
    } else {
        AckKind::Ack
    }
}

/// Sends an outcome to JetStream. One that is lost changes nothing but
/// timing: JetStream delivers the message again after its ack wait, and the
/// engine's inbox makes that a duplicate.
async fn settle_with(acker: Acker, kind: AckKind) {
    if let Err(error) = acker.ack_with(kind).await {
        warn!(%error, "a message could not be settled with JetStream; it will be delivered again");
    }
}

/// The time the stream stored a message.
fn millis(published: async_nats::datetime::DateTime) -> Timestamp {
    let nanos = published.unix_timestamp_nanos();
    Timestamp(u64::try_from(nanos / 1_000_000).unwrap_or(0))
}
