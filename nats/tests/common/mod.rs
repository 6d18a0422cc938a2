//! What the JetStream tests share: the server's address from `NATS_URL`, a
//! stream and subject prefix of each test's own, deleted at its end, and a
//! receiver that hands deliveries to the test.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use switchyard_nats::{JetStreamBus, JetStreamOptions};
use switchyard_runtime::{Ack, Envelope, Receiver};
use tokio::sync::mpsc;

/// The server the tests run against. Without `NATS_URL` the tests pass
/// after one line saying so, except in CI, where that would hide that they
/// never ran.
pub fn nats_url() -> Option<String> {
    match std::env::var("NATS_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => panic!(
            "NATS_URL is not set: CI must run the JetStream tests against a NATS server with \
             JetStream enabled (`nats-server -js`), for example NATS_URL=nats://127.0.0.1:4222"
        ),
        Err(_) => {
            println!("NATS_URL is not set: skipping the JetStream tests");
            None
        }
    }
}

/// One test's stream on the server, and a plain client beside the bus.
pub struct Fixture {
    pub url: String,
    pub options: JetStreamOptions,
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
}

impl Fixture {
    /// A stream and prefix no other test uses, or `None` without a server.
    pub async fn new() -> Option<Fixture> {
        let url = nats_url()?;
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let options = JetStreamOptions {
            stream: format!("test-{}", &unique[..12]),
            subject_prefix: format!("test{}", &unique[..12]),
            ack_wait: Duration::from_secs(2),
            nak_delay: Duration::from_millis(50),
            // A test that fails before its end leaves its stream behind;
            // the server drops its messages within the hour.
            max_age: Duration::from_secs(3600),
            ..JetStreamOptions::default()
        };
        let client = async_nats::connect(&url).await.expect("connect to NATS_URL");
        let jetstream = jetstream::new(client.clone());
        Some(Fixture { url, options, client, jetstream })
    }

    /// A bus node over the test's stream.
    pub async fn bus(&self) -> JetStreamBus {
        JetStreamBus::connect(&self.url, self.options.clone()).await.expect("the bus connects")
    }

    pub fn subject(&self, tail: &str) -> String {
        format!("{}.{tail}", self.options.subject_prefix)
    }

    pub async fn stream(&self) -> jetstream::stream::Stream {
        self.jetstream.get_stream(&self.options.stream).await.expect("the bus made the stream")
    }

    /// Deletes the test's stream and its consumers.
    pub async fn finish(self) {
        self.jetstream.delete_stream(&self.options.stream).await.expect("delete the test stream");
    }
}

/// Hands every delivery to the test through a channel.
pub struct Inbox(pub mpsc::UnboundedSender<(Envelope, Ack)>);

impl Inbox {
    pub fn new() -> (Arc<Inbox>, mpsc::UnboundedReceiver<(Envelope, Ack)>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Arc::new(Inbox(sender)), receiver)
    }
}

impl Receiver for Inbox {
    fn receive(&self, message: Envelope, ack: Ack) {
        let _ = self.0.send((message, ack));
    }
}

/// The next delivery, failing the test if none comes within ten seconds.
pub async fn next(deliveries: &mut mpsc::UnboundedReceiver<(Envelope, Ack)>) -> (Envelope, Ack) {
    tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
        .await
        .expect("a delivery within ten seconds")
        .expect("the bus is open")
}

/// Asserts that nothing is delivered for `wait`.
pub async fn nothing_for(
    deliveries: &mut mpsc::UnboundedReceiver<(Envelope, Ack)>,
    wait: Duration,
) {
    if let Ok(Some((message, _))) = tokio::time::timeout(wait, deliveries.recv()).await {
        panic!("nothing should have been delivered, got {} {}", message.name, message.id);
    }
}

/// Waits until `check` holds of the consumer's info, failing after ten seconds.
pub async fn until_consumer(
    stream: &jetstream::stream::Stream,
    durable: &str,
    check: impl Fn(&jetstream::consumer::Info) -> bool,
) -> jetstream::consumer::Info {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(info) = stream.consumer_info(durable).await
            && check(&info)
        {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "the consumer `{durable}` never got there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
