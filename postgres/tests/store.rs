//! The PostgreSQL store passes the conformance suite, creates its schema
//! once however many nodes connect at once, groups the commits of many
//! callers, fails a refused write alone, and connects again by itself once
//! its connections are killed.

mod common;

use std::time::Duration;

use common::*;
use switchyard_postgres::{PostgresOptions, PostgresStore};
use switchyard_runtime::store::{Batch, CommitOutcome};
use switchyard_runtime::{Store, StoreError, conformance};
use tokio::runtime::Handle;

const LEASE: Duration = Duration::from_secs(30);

/// The suite makes its stores in a plain closure: each is connected on
/// this runtime from a blocking section, in a schema of its own.
async fn conforms(test: &str, options: impl Fn(&Scratch) -> PostgresOptions) {
    let Some(url) = database_url() else { return };
    let mut schemas = Vec::new();
    conformance::run(|| {
        let scratch = Scratch::new(&url, test);
        let connected = PostgresStore::connect(&url, options(&scratch));
        let store = tokio::task::block_in_place(|| Handle::current().block_on(connected));
        schemas.push(scratch);
        store.unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_conforms() {
    conforms("conformance", |scratch| scratch.options("a", LEASE)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_conforms_with_groups_of_two_calls() {
    conforms("small_groups", |scratch| PostgresOptions {
        max_group: 2,
        group_rows: 2,
        ..scratch.options("a", LEASE)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connecting_at_once_create_the_schema_once_and_a_newer_one_is_refused() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "migrate");
    let mut connecting = tokio::task::JoinSet::new();
    for node in 0..8 {
        let (url, options) = (url.clone(), scratch.options(&format!("n{node}"), LEASE));
        connecting.spawn(async move { PostgresStore::connect(&url, options).await });
    }
    let stores: Vec<PostgresStore> =
        connecting.join_all().await.into_iter().map(|connected| connected.unwrap()).collect();
    assert_eq!(stores.len(), 8);
    let client = scratch.client().await;
    let versions = format!("SELECT version FROM \"{}\".schema_version", scratch.name);
    let rows = client.query(&versions, &[]).await.unwrap();
    let found: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(found, [1], "the schema was migrated more than once, or not at all");
    // Every node writes to the same tables.
    let outcome = commit_one(&stores[3], write("a", None, &[id(1)])).await;
    assert!(committed(&outcome), "{outcome:?}");
    assert_eq!(commit_one(&stores[5], write("a", None, &[id(2)])).await, CommitOutcome::Conflict);

    let newer = format!("UPDATE \"{}\".schema_version SET version = 99", scratch.name);
    client.batch_execute(&newer).await.unwrap();
    match PostgresStore::connect(&url, scratch.options("late", LEASE)).await {
        Err(StoreError::NewerSchema { found: 99, known: 1 }) => {}
        other => panic!("a newer schema was connected to: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_may_not_create_its_schema_refuses_a_missing_one() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "missing");
    let options = PostgresOptions { create_schema: false, ..scratch.options("a", LEASE) };
    match PostgresStore::connect(&url, options).await {
        Err(StoreError::Failed(cause)) => {
            assert!(cause.to_string().contains("no Switchyard schema"), "{cause}");
        }
        other => panic!("a missing schema was connected to: {other:?}"),
    }
    let client = scratch.client().await;
    let exists = "SELECT 1 FROM pg_namespace WHERE nspname = $1";
    assert!(client.query_opt(exists, &[&scratch.name]).await.unwrap().is_none());
}

/// Calls queued while the writer is busy share its next transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_queued_together_share_transactions() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "group");
    let store = scratch.store("a", LEASE).await;
    let mut batches: Vec<Batch> = (0..50)
        .map(|n| Batch {
            instances: vec![write(&format!("k{n}"), None, &[id(n)])],
            dead_letters: Vec::new(),
        })
        .collect();
    // Each call is queued when it is made, before it is awaited.
    let calls: Vec<_> = batches.iter_mut().map(|batch| store.commit(batch)).collect();
    for call in calls {
        let outcomes = call.await.unwrap();
        assert!(committed(&outcomes[0]), "{outcomes:?}");
    }
    assert!(store.transactions() < 10, "50 commits took {} transactions", store.transactions());
}

/// A key PostgreSQL refuses (`text` holds no NUL) fails its own write; the
/// writes beside it, in its batch and in another caller's, commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_fails_alone() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "refused");
    let store = scratch.store("a", LEASE).await;
    let mut bad = write("b", None, &[id(2)]);
    bad.key = "\"b\0\"".into();
    let mut first = Batch {
        instances: vec![write("a", None, &[id(1)]), bad, write("c", None, &[id(3)])],
        dead_letters: Vec::new(),
    };
    let mut second =
        Batch { instances: vec![write("d", None, &[id(4)])], dead_letters: Vec::new() };
    let (first, second) = (store.commit(&mut first), store.commit(&mut second));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(committed(&first[0]) && committed(&first[2]), "{first:?}");
    assert!(matches!(&first[1], CommitOutcome::Failed(_)), "{first:?}");
    assert!(committed(&second[0]), "{second:?}");
    // The refused write left nothing: its message id is not in the inbox.
    let outcome = commit_one(&store, write("e", None, &[id(2)])).await;
    assert!(committed(&outcome), "{outcome:?}");
}

/// With its connections killed under it, the store answers unavailable
/// (an outage, which the engine waits out) and then works again, with no
/// new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_connects_again_after_its_connections_are_killed() {
    let Some(url) = database_url() else { return };
    let scratch = Scratch::new(&url, "reconnect");
    let node = format!("killed-{}", scratch.name);
    let store = scratch.store(&node, LEASE).await;
    commit_one(&store, write("a", None, &[id(1)])).await;
    store.load(P, vec![key("a")]).await.unwrap();

    let client = scratch.client().await;
    let killed = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("switchyard {node}")],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "the store holds two connections");

    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut batch = Batch { instances: vec![write("a", Some(1), &[id(2)])], dead_letters: vec![] };
    let outcome = loop {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected: {errors:?}");
        if batch.instances.is_empty() {
            batch.instances.push(write("a", Some(1), &[id(2)]));
        }
        match store.commit(&mut batch).await {
            Ok(mut outcomes) => break outcomes.pop().unwrap(),
            Err(error) => {
                assert!(error.is_transient(), "a lost connection failed as {error}");
                errors.push(error.to_string());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(committed(&outcome), "{outcome:?}");
    let loaded = loop {
        match store.load(P, vec![key("a")]).await {
            Ok(mut loaded) => break loaded.pop().flatten().unwrap(),
            Err(error) => assert!(error.is_transient(), "a lost connection failed as {error}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(loaded.version, 2);
}
