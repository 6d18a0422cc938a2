//! Command handlers and event subscribers: plain async functions the engine
//! calls with each message, tries again when they fail, and dead-letters
//! when they keep failing.
//!
//! A handler's message is acknowledged only once the handler has returned
//! and every event it published through its [`CommandContext`] has been
//! handled by its receivers. So a crash between the two sends the command
//! again, and the handler publishes the same events under the same ids.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{Instrument as _, debug, info_span, warn};

use super::health::Access;
use super::{Engine, Shared, lock, spawn};
use crate::bus::{Ack, Settle, Settled};
use crate::message::{Command, Envelope, Event, MessageId, MessageKind, Timestamp};
use crate::store::{Letter, NewDeadLetter};

/// The error a command handler returns.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;
type ErasedHandler = Arc<dyn Fn(Envelope, CommandContext) -> HandlerFuture + Send + Sync>;

/// A registered handler or subscriber with its message type erased.
pub(super) struct Handler {
    pub(super) name: &'static str,
    pub(super) kind: MessageKind,
    options: HandlerOptions,
    /// Its inbox's scope in the store: `handler:` and the wire name.
    scope: Arc<str>,
    run: ErasedHandler,
}

/// How the engine runs one command handler or subscriber:
/// [`EngineBuilder::handle_with`](super::EngineBuilder::handle_with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandlerOptions {
    /// How long one attempt may run before it counts as a failure (retried,
    /// then dead-lettered, as any other); `None` takes the engine's
    /// [`EngineBuilder::handler_timeout`](super::EngineBuilder::handler_timeout).
    pub timeout: Option<Duration>,
    /// Whether the handler has an inbox in the store: a message whose id
    /// it handled before (a redelivery: the same command decided again
    /// after a crash derives the same id) is counted as a duplicate and not
    /// handed to it again. The id is recorded once the handler succeeded,
    /// so a crash between the two still hands the message over again; a
    /// handler whose own work is in the engine's SQLite store closes that
    /// gap with [`SqliteStore::handle_once`](crate::SqliteStore::handle_once),
    /// which commits its work and the inbox row together.
    pub idempotent: bool,
}

impl HandlerOptions {
    /// Gives up an attempt that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> HandlerOptions {
        self.timeout = Some(timeout);
        self
    }

    /// Keeps an inbox for the handler: see [`HandlerOptions::idempotent`].
    pub fn idempotent(mut self) -> HandlerOptions {
        self.idempotent = true;
        self
    }
}

/// Given to a handler: the id of its message, and a way to publish the
/// events (and send the commands) that answer it.
#[derive(Clone, Debug)]
pub struct CommandContext {
    engine: Engine,
    message_id: MessageId,
    scope: Arc<str>,
    published: Arc<AtomicU64>,
    tracker: Arc<Tracker>,
}

/// Follows what a handler published until every receiver has settled it.
#[derive(Debug, Default)]
struct Tracker {
    pending: AtomicUsize,
    failure: Mutex<Option<String>>,
    settled: Notify,
}

impl Handler {
    pub(super) fn new<M, F, Fut>(
        kind: MessageKind,
        name: &'static str,
        options: HandlerOptions,
        handler: F,
    ) -> Handler
    where
        M: DeserializeOwned + Clone + 'static,
        F: Fn(M, CommandContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run: ErasedHandler = Arc::new(move |envelope: Envelope, ctx| {
            let handler = handler.clone();
            Box::pin(async move {
                let message: M = envelope.body.decode()?;
                handler(message, ctx).await
            })
        });
        let scope = format!("handler:{name}").into();
        Handler { name, kind, options, scope, run }
    }
}

impl Shared {
    /// Runs a handler on its own task, with retries, and settles the ack.
    pub(super) fn run_handler(
        self: &Arc<Self>,
        handler: Arc<Handler>,
        message: Envelope,
        ack: Ack,
    ) {
        self.start(1);
        let shared = self.clone();
        let span = info_span!("handler", message = %message.name, id = %message.id);
        spawn(Box::pin(
            async move {
                if handler.options.idempotent && shared.handled_before(&handler, &message).await {
                    ack.done();
                } else {
                    shared.handle_until_settled(&handler, message, ack).await;
                }
                shared.finish(1);
            }
            .instrument(span),
        ));
    }

    /// Whether the handler's inbox holds the message: a redelivery, counted
    /// as a duplicate and not handled again.
    async fn handled_before(&self, handler: &Handler, message: &Envelope) -> bool {
        let scope = &handler.scope;
        let id = message.id;
        let seen = self
            .persist("read a handler's inbox", Access::Read, || self.store.handled(scope, id))
            .await;
        if seen {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            debug!(id = %id, "{} handled before: dropped", message.name);
        }
        seen
    }

    /// Tries the handler until it succeeds, or dead-letters its message
    /// once the retry policy's attempts are spent; then settles the ack.
    async fn handle_until_settled(
        self: &Arc<Self>,
        handler: &Handler,
        message: Envelope,
        ack: Ack,
    ) {
        let mut failures = 0;
        loop {
            let reason = match self.attempt(handler, &message).await {
                Ok(()) => return self.handled(handler, &message, ack).await,
                Err(reason) => reason,
            };
            failures += 1;
            if failures >= self.config.retry.attempts {
                let reason = format!(
                    "the handler of `{}` failed {failures} times; last: {reason}",
                    message.name
                );
                warn!(%reason, "dead-lettered");
                let letter = NewDeadLetter {
                    letter: Letter::Message(message),
                    process: None,
                    reason: reason.clone(),
                    at: self.clock.now(),
                };
                self.record_dead_letters(vec![letter]).await;
                return ack.dead_lettered(reason);
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            warn!(%reason, failures, "handler failed; trying again");
            tokio::time::sleep(self.config.retry.backoff(failures)).await;
        }
    }

    /// After a handler succeeded: records the message in its inbox if it is
    /// idempotent (already there if the handler recorded it with its own
    /// work, through [`SqliteStore::handle_once`](crate::SqliteStore::handle_once)),
    /// then counts and settles it.
    async fn handled(&self, handler: &Handler, message: &Envelope, ack: Ack) {
        if handler.options.idempotent {
            let (scope, id, now) = (&handler.scope, message.id, self.clock.now());
            self.persist("record a handler's inbox", Access::Write, || {
                self.store.mark_handled(scope, id, now)
            })
            .await;
        }
        if handler.kind == MessageKind::Command {
            self.counters.commands_delivered.fetch_add(1, Ordering::Relaxed);
        }
        ack.done();
    }

    /// One try: the handler, then everything it published.
    async fn attempt(
        self: &Arc<Self>,
        handler: &Handler,
        message: &Envelope,
    ) -> Result<(), String> {
        let tracker = Arc::new(Tracker::default());
        let ctx = CommandContext {
            engine: Engine { shared: self.clone() },
            message_id: message.id,
            scope: handler.scope.clone(),
            published: Arc::new(AtomicU64::new(0)),
            tracker: tracker.clone(),
        };
        let run =
            std::panic::catch_unwind(AssertUnwindSafe(|| (handler.run)(message.clone(), ctx)))
                .map_err(|panic| format!("the handler panicked: {}", panic_message(&*panic)))?;
        // Only the handler's own run is timed: what it published waits for
        // its receivers, whose store may be out for a while.
        let timeout = handler.options.timeout.unwrap_or(self.config.handler_timeout);
        match tokio::time::timeout(timeout, CatchUnwind(run)).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(error.to_string()),
            Ok(Err(panic)) => return Err(format!("the handler panicked: {panic}")),
            Err(_) => {
                // Dropping the run cancels it at its next `.await`.
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(format!("the handler did not finish within {timeout:?}"));
            }
        }
        tracker.wait().await
    }
}

impl CommandContext {
    /// Publishes an event in answer to the message. Its id is derived from
    /// the message's id, so a redelivered message publishes the same ids.
    pub fn publish<E: Event>(&self, event: E) -> MessageId {
        self.emit(Envelope::event(event))
    }

    /// Sends a command in answer to the message, with a derived id too.
    pub fn send<C: Command>(&self, command: C) -> MessageId {
        self.emit(Envelope::command(command))
    }

    /// The id of the message being handled.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }

    /// The time by the engine's clock.
    pub fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// The scope of the handler's inbox in the store (`handler:` and the
    /// message's wire name): what [`SqliteStore::handle_once`](crate::SqliteStore::handle_once)
    /// takes to commit the handler's own work with its inbox row.
    pub fn inbox_scope(&self) -> &str {
        &self.scope
    }

    fn emit(&self, mut envelope: Envelope) -> MessageId {
        let index = self.published.fetch_add(1, Ordering::Relaxed);
        envelope.id = self.message_id.derive(u32::try_from(index).unwrap_or(u32::MAX));
        envelope.causation = Some(self.message_id);
        envelope.time = self.engine.now();
        let id = envelope.id;
        self.tracker.pending.fetch_add(1, Ordering::AcqRel);
        let on_settle = self.tracker.clone();
        let on_failure = self.tracker.clone();
        self.engine.shared.hand_off(
            envelope,
            Settle::new(move |settled| on_settle.settle(settled)),
            move |error| {
                on_failure.settle(Settled {
                    rejected: vec![crate::bus::Rejection { id, reason: error.to_string() }],
                    ..Settled::default()
                })
            },
        );
        id
    }
}

impl Tracker {
    fn settle(&self, settled: Settled) {
        if let Some(rejection) = settled.rejected.first() {
            lock(&self.failure).get_or_insert_with(|| {
                format!("a message it published was rejected: {}", rejection.reason)
            });
        } else if !settled.unacknowledged.is_empty() {
            lock(&self.failure)
                .get_or_insert_with(|| "a message it published was not acknowledged".to_owned());
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_one();
        }
    }

    async fn wait(&self) -> Result<(), String> {
        while self.pending.load(Ordering::Acquire) > 0 {
            self.settled.notified().await;
        }
        match lock(&self.failure).take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

/// A future that reports a panic as an error instead of unwinding into the
/// task: one handler's bug must not take its message down unrecorded.
struct CatchUnwind(HandlerFuture);

impl Future for CatchUnwind {
    type Output = Result<Result<(), HandlerError>, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic_message(&*panic))),
        }
    }
}

/// The text a panic was raised with.
pub(super) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a value that is not text".to_owned()
    }
}
