//! A [`Bus`] over NATS JetStream, so that several engine nodes, and services
//! written in other languages, share messages through one durable stream.
//!
//! [`JetStreamBus`] publishes every message to `{prefix}.event.{name}` or
//! `{prefix}.command.{name}` with its id as `Nats-Msg-Id`, so that the
//! stream's duplicate window drops a resend, and resolves a publish once the
//! stream has acknowledged storing every message. A subscription reads each
//! of its wire names through a durable pull consumer: receivers on every
//! node that use the same consumer name share its messages, and a message
//! is acknowledged to JetStream only when its receiver settles it, which the
//! engine does after its commit. `docs/wire-format.md` documents the
//! subjects, headers and body for other services.
//!
//! Each instance stays consistent across nodes through the store's version
//! check, not through the bus: see [`consume`] for why.

mod consume;
pub mod wire;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, stream};
use switchyard_runtime::{
    BoxFuture, Bus, BusError, Envelope, MessageKind, Receiver, Settle, Settled, Subscription,
};
use tokio::sync::watch;

/// Where a [`JetStreamBus`] keeps its messages and how it consumes them.
#[derive(Clone, Debug)]
pub struct JetStreamOptions {
    /// The stream that holds every subject under the prefix. The bus makes
    /// it if it does not exist, and otherwise uses it as it is configured.
    pub stream: String,
    /// The first tokens of every subject: `{prefix}.event.{name}`.
    pub subject_prefix: String,
    /// The name that the durable consumers of this kind of engine begin
    /// with. Nodes that use the same name share the work; another service
    /// that must see every event uses a name of its own.
    pub consumer: String,
    /// How long JetStream waits for a delivered message to be settled
    /// before it delivers it again.
    pub ack_wait: Duration,
    /// How often JetStream delivers a message at most; `None` for no limit.
    /// With a limit, a message past it stays in the stream unhandled and
    /// only an advisory tells, so the default is none: the engine
    /// dead-letters a message that cannot be handled itself.
    pub max_deliver: Option<i64>,
    /// How many delivered messages a consumer may have unsettled at once,
    /// across all nodes; `None` for the server's default (1000).
    pub max_ack_pending: Option<i64>,
    /// How long JetStream waits before it delivers again a message whose
    /// ack was dropped unsettled.
    pub nak_delay: Duration,
    /// For how long the stream remembers ids, to drop a message stored
    /// again under an id it holds. Used only when the bus makes the stream.
    pub duplicate_window: Duration,
    /// How long the stream keeps messages; zero keeps them until other
    /// limits (or an operator) remove them. Used only when the bus makes
    /// the stream.
    pub max_age: Duration,
    /// Where a consumer made for the first time starts: `All`, the default,
    /// also delivers what was published before any engine consumed the
    /// name, so that nothing sent to a process before its first start is
    /// lost; `New` starts at the end of the stream.
    pub deliver_policy: DeliverPolicy,
}

/// A [`Bus`] over a JetStream stream. Clones share the connection.
#[derive(Clone)]
pub struct JetStreamBus {
    shared: Arc<Shared>,
}

/// Why the bus refused its options or a message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{value}` cannot be the {what}: {why}")]
    Option { what: &'static str, value: String, why: &'static str },
    #[error("the body of `{name}` cannot be written as JSON: {source}")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{subject}` was stored in the stream `{found}`, not in `{expected}`")]
    OtherStream { subject: String, found: String, expected: String },
}

struct Shared {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    options: JetStreamOptions,
    runtime: tokio::runtime::Handle,
    /// Dropped with the last clone of the bus, which ends the consumers' tasks.
    _closed: watch::Sender<()>,
    open: watch::Receiver<()>,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            stream: "switchyard".into(),
            subject_prefix: "switchyard".into(),
            consumer: "engine".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_ack_pending: None,
            nak_delay: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
            deliver_policy: DeliverPolicy::All,
        }
    }
}

impl JetStreamOptions {
    /// Refuses names that JetStream would refuse later, or worse, read as
    /// wildcards.
    fn validate(&self) -> Result<(), Error> {
        let bad = |what, value: &str, why| Error::Option { what, value: value.to_owned(), why };
        let plain = |c: char| !c.is_whitespace() && !matches!(c, '.' | '*' | '>' | '/' | '\\');
        if self.stream.is_empty() || !self.stream.chars().all(plain) {
            return Err(bad("stream name", &self.stream, "it must be one token with no wildcard"));
        }
        if self.consumer.is_empty() || !self.consumer.chars().all(plain) {
            return Err(bad(
                "consumer name",
                &self.consumer,
                "it must be one token with no wildcard",
            ));
        }
        let token =
            |t: &str| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace);
        if !self.subject_prefix.split('.').all(token) {
            return Err(bad(
                "subject prefix",
                &self.subject_prefix,
                "it must be non-empty tokens separated by `.`, with no wildcard",
            ));
        }
        Ok(())
    }
}

impl JetStreamBus {
    /// Connects to the NATS server at `url` and makes (or binds to) the
    /// stream. Must be called inside a tokio runtime, where the consumers'
    /// tasks will run.
    pub async fn connect(url: &str, options: JetStreamOptions) -> Result<JetStreamBus, BusError> {
        options.validate().map_err(unavailable)?;
        let client = async_nats::connect(url).await.map_err(unavailable)?;
        JetStreamBus::with_client(client, options).await
    }

    /// The bus over a client connected already: for credentials, TLS or
    /// other connect options.
    pub async fn with_client(
        client: async_nats::Client,
        options: JetStreamOptions,
    ) -> Result<JetStreamBus, BusError> {
        options.validate().map_err(unavailable)?;
        let jetstream = jetstream::new(client);
        let config = stream::Config {
            name: options.stream.clone(),
            subjects: vec![format!("{}.>", options.subject_prefix)],
            duplicate_window: options.duplicate_window,
            max_age: options.max_age,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let stream = jetstream.get_or_create_stream(config).await.map_err(unavailable)?;
        let (closed, open) = watch::channel(());
        let runtime = tokio::runtime::Handle::current();
        let shared = Shared { jetstream, stream, options, runtime, _closed: closed, open };
        Ok(JetStreamBus { shared: Arc::new(shared) })
    }

    /// The options the bus was made with.
    pub fn options(&self) -> &JetStreamOptions {
        &self.shared.options
    }
}

impl fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamBus").field("options", &self.shared.options).finish()
    }
}

impl Bus for JetStreamBus {
    /// Publishes the messages in order and resolves once the stream has
    /// stored every one (a duplicate dropped by the window counts: it was
    /// stored before). `settle` is then called at once with nothing
    /// outstanding, since the stream holds the messages durably: whoever
    /// consumes them settles them with JetStream, not with the publisher.
    fn publish(
        &self,
        messages: Vec<Envelope>,
        settle: Settle,
    ) -> BoxFuture<'static, Result<(), BusError>> {
        let shared = self.shared.clone();
        Box::pin(async move {
            shared.store(&messages).await?;
            settle.call(Settled::default());
            Ok(())
        })
    }

    fn subscribe(&self, subscription: Subscription, receiver: Arc<dyn Receiver>) {
        let names = subscription.events.into_iter().map(|name| (MessageKind::Event, name));
        let names =
            names.chain(subscription.commands.into_iter().map(|n| (MessageKind::Command, n)));
        for (kind, name) in names {
            let feed = consume::Feed {
                stream: self.shared.stream.clone(),
                subject: wire::subject(&self.shared.options.subject_prefix, kind, &name),
                durable: wire::consumer_name(&self.shared.options.consumer, kind, &name),
                name,
                kind,
                options: self.shared.options.clone(),
                receiver: receiver.clone(),
                runtime: self.shared.runtime.clone(),
            };
            self.shared.runtime.spawn(consume::run(feed, self.shared.open.clone()));
        }
    }
}

impl Shared {
    /// Publishes every message, then waits for the stream's acknowledgements.
    /// The messages go out on one connection in order, so the stream stores
    /// them in order while their acknowledgements are awaited together.
    async fn store(&self, messages: &[Envelope]) -> Result<(), BusError> {
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let (subject, headers, body) =
                wire::outgoing(&self.options.subject_prefix, message).map_err(unavailable)?;
            let ack = self
                .jetstream
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(unavailable)?;
            acks.push((subject, ack));
        }
        for (subject, ack) in acks {
            let ack = ack.await.map_err(unavailable)?;
            if ack.stream != self.options.stream {
                let expected = self.options.stream.clone();
                return Err(unavailable(Error::OtherStream {
                    subject,
                    found: ack.stream,
                    expected,
                }));
            }
        }
        Ok(())
    }
}

fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::Unavailable(Box::new(error))
}
