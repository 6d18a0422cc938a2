//! What the PostgreSQL tests share: the database they run on, a schema of
//! their own for each store they make (dropped afterwards), and the writes
//! they commit.
//!
//! The database is `DATABASE_URL`. Without it the tests say so in one line
//! and pass, except in CI (`CI` set), where a missing database is a broken
//! setup, not a reason to test nothing.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchyard_postgres::{NodeId, PostgresOptions, PostgresStore};
use switchyard_runtime::store::{Batch, CommitOutcome, InstanceWrite, TimerChange};
use switchyard_runtime::{Body, Envelope, MessageId, MessageKind, Store, Timestamp};

/// The database to test on, or `None` (said in one line) to skip.
pub fn database_url() -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("DATABASE_URL is not set, and CI must run the PostgreSQL tests: set it")
        }
        _ => {
            eprintln!("DATABASE_URL is not set: skipping the PostgreSQL tests");
            None
        }
    }
}

/// A schema for one test, unlike any other test's, dropped with the value.
pub struct Scratch {
    pub url: String,
    pub name: String,
}

impl Scratch {
    pub fn new(url: &str, test: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("switchyard_test_{test}_{}_{n}", std::process::id());
        Scratch { url: url.to_owned(), name }
    }

    pub fn options(&self, node: &str, lease: Duration) -> PostgresOptions {
        PostgresOptions {
            schema: self.name.clone(),
            node: NodeId::new(node),
            lease,
            ..PostgresOptions::default()
        }
    }

    pub async fn store(&self, node: &str, lease: Duration) -> PostgresStore {
        PostgresStore::connect(&self.url, self.options(node, lease)).await.unwrap()
    }

    /// A plain connection to the database, for what a test checks or
    /// breaks behind the store's back.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Drops the schema on a thread of its own: a test's runtime may be gone,
/// or be the one thread that is dropping this.
impl Drop for Scratch {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.unwrap().block_on(async {
                let client = connect(&url).await;
                let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("could not drop the test schema `{name}`: {e}");
                }
            })
        });
        drop(dropped.join());
    }
}

pub const P: &str = "Order";

pub fn key(text: &str) -> Arc<str> {
    Arc::from(format!("\"{text}\""))
}

pub fn id(n: u128) -> MessageId {
    MessageId::from_uuid(uuid::Uuid::from_u128(n))
}

pub fn write(key_text: &str, expected: Option<u64>, inbox: &[MessageId]) -> InstanceWrite {
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

pub fn message(n: u128) -> Envelope {
    Envelope {
        id: id(n),
        name: "Ship".into(),
        kind: MessageKind::Command,
        body: Body::value(vec![n as u64]),
        causation: None,
        time: Timestamp(2_000),
    }
}

pub fn schedule(timer: &str, at: u64, n: u128) -> TimerChange {
    TimerChange::Schedule { timer: Arc::from(timer), at: Timestamp(at), id: id(n) }
}

pub async fn commit(store: &dyn Store, writes: Vec<InstanceWrite>) -> Vec<CommitOutcome> {
    let mut batch = Batch { instances: writes, dead_letters: Vec::new() };
    store.commit(&mut batch).await.expect("the store failed a commit")
}

pub async fn commit_one(store: &dyn Store, write: InstanceWrite) -> CommitOutcome {
    commit(store, vec![write]).await.pop().expect("no outcome for a write")
}

pub fn committed(outcome: &CommitOutcome) -> bool {
    matches!(outcome, CommitOutcome::Committed { .. })
}
