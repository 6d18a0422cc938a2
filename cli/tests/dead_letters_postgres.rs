//! `switchyard dead-letters --database-url` on a PostgreSQL schema that an
//! engine node left dead letters in: listing them, replaying some, then
//! all, and refusing a schema that is not there without creating it.
//!
//! The database is `DATABASE_URL`. Without it the tests say so in one line
//! and pass, except in CI (`CI` set), where a missing database is a broken
//! setup, not a reason to test nothing.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use switchyard_postgres::{NodeId, PostgresOptions, PostgresStore};
use switchyard_runtime::store::{Batch, Letter, NewDeadLetter, Store};
use switchyard_runtime::{Body, Envelope, MessageId, MessageKind, Timestamp};

fn database_url() -> Option<String> {
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

/// A schema of its own for one test, dropped with the value.
struct Scratch {
    url: String,
    name: String,
}

impl Scratch {
    fn new(url: &str, test: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("switchyard_cli_{test}_{}_{n}", std::process::id());
        Scratch { url: url.to_owned(), name }
    }

    /// Runs `work` with a store of an engine node on the schema.
    fn with_node<T>(&self, node: &str, work: impl AsyncFnOnce(&PostgresStore) -> T) -> T {
        let options = PostgresOptions {
            schema: self.name.clone(),
            node: NodeId::new(node),
            lease: Duration::from_secs(60),
            ..PostgresOptions::default()
        };
        runtime().block_on(async {
            let store = PostgresStore::connect(&self.url, options).await.unwrap();
            work(&store).await
        })
    }

    fn schema_exists(&self) -> bool {
        runtime().block_on(async {
            let client = connect(&self.url).await;
            let exists = "SELECT 1 FROM pg_namespace WHERE nspname = $1";
            client.query_opt(exists, &[&self.name]).await.unwrap().is_some()
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        runtime().block_on(async {
            let client = connect(&self.url).await;
            let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
            drop(client.batch_execute(&sql).await);
        });
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn switchyard(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn letter(n: u128, name: &'static str, reason: &str) -> NewDeadLetter {
    let message = Envelope {
        id: format!("00000000-0000-0000-0000-{n:012}").parse::<MessageId>().unwrap(),
        name: name.into(),
        kind: MessageKind::Command,
        body: Body::Json(br#"{"order":7}"#.as_slice().into()),
        causation: None,
        time: Timestamp(1_704_067_200_000),
    };
    NewDeadLetter {
        letter: Letter::Message(message),
        process: None,
        reason: reason.to_owned(),
        at: Timestamp(1_704_067_260_000),
    }
}

#[test]
fn dead_letters_in_postgres_are_listed_and_replayed_for_any_node_to_send() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "replay");
    scratch.with_node("a", async |store| {
        let letters = vec![
            letter(1, "Ship", "no handler is registered for command `Ship`"),
            letter(2, "Bill", "the handler of `Bill` failed 5 times; last: the bank is closed"),
        ];
        let mut batch = Batch { instances: Vec::new(), dead_letters: letters };
        store.commit(&mut batch).await.unwrap();
    });
    let on = |args: &[&str]| {
        let mut all = vec!["dead-letters"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", &url, "--schema", &scratch.name]);
        switchyard(&all)
    };

    let (code, stdout, stderr) = on(&["list", "--bodies"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "#1 at 2024-01-01T00:01:00Z: command `Ship` 00000000-0000-0000-0000-000000000001: \
         no handler is registered for command `Ship`\n    {\"order\":7}\n\
         #2 at 2024-01-01T00:01:00Z: command `Bill` 00000000-0000-0000-0000-000000000002: \
         the handler of `Bill` failed 5 times; last: the bank is closed\n    {\"order\":7}\n\
         2 dead letters\n"
    );

    let (code, stdout, _) = on(&["replay", "2"]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        "replayed 1 message and 0 timers: \
         an engine node takes them up when it next claims expired rows\n"
    );
    let (_, stdout, _) = on(&["list"]);
    assert!(stdout.starts_with("#1 ") && stdout.ends_with("1 dead letter\n"), "{stdout}");
    let (code, stdout, _) = on(&["replay", "--all"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("replayed 1 message "), "{stdout}");
    let (_, stdout, _) = on(&["list"]);
    assert_eq!(stdout, format!("no dead letters in the PostgreSQL schema `{}`\n", scratch.name));

    // Both are in the outbox, with their ids, and no live node holds them:
    // an engine node claims them at once.
    let claimed = scratch.with_node("b", async |store| store.claim_expired().await.unwrap());
    let mut ids: Vec<String> =
        claimed.outbox.iter().map(|row| row.message.id.to_string()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"]
    );
}

#[test]
fn a_missing_postgres_schema_is_an_error_and_is_not_created() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "missing");
    let args = ["dead-letters", "list", "--database-url", &url, "--schema", &scratch.name];
    let (code, stdout, stderr) = switchyard(&args);
    assert_eq!((code, stdout.as_str()), (2, ""));
    assert!(
        stderr.starts_with(&format!("error: cannot open the PostgreSQL schema `{}`", scratch.name))
            && stderr.contains("no Switchyard schema"),
        "{stderr}"
    );
    assert!(!stderr.contains("postgres://"), "the URL, which may hold a password, was printed");
    assert!(!scratch.schema_exists(), "listing created the schema");
}

#[test]
fn the_sqlite_and_postgres_sources_exclude_each_other() {
    let (code, _, stderr) =
        switchyard(&["dead-letters", "list", "--db", "x.db", "--database-url", "postgres://x"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let (code, _, stderr) = switchyard(&["dead-letters", "list", "--schema", "s"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--database-url") || stderr.contains("--db"), "{stderr}");
}
