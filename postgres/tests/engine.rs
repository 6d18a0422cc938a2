//! Engines on one PostgreSQL schema: when a node dies with outbox rows it
//! could not send and timers not yet due, a live node takes them over once
//! their lease runs out, with no restart, and sends each row and fires each
//! timer once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switchyard::{
    BoxFuture, Bus, BusError, CommandContext, Engine, Envelope, HandlerError, ManualClock, Settle,
    Store, Subscription, Timestamp,
};
use switchyard_postgres::PostgresStore;

switchyard::process! {
    /// Ships an order, and chases the carrier an hour later.
    process Fulfilment {
        correlate by order: u32

        timer Chase

        initial state New {
            on Placed {
                send Ship { order: id }
                schedule Chase after 1h
                -> Shipping
            }
        }

        state Shipping {
            on Chase { send ChaseCarrier { order: id } }
            ignore Placed
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Event)]
pub struct Placed {
    pub order: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Command)]
pub struct Ship {
    pub order: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, switchyard::Command)]
pub struct ChaseCarrier {
    pub order: u32,
}

/// A bus that takes nothing: the node behind it can commit but never send.
struct Unreachable;

impl Bus for Unreachable {
    fn publish(&self, _: Vec<Envelope>, _: Settle) -> BoxFuture<'static, Result<(), BusError>> {
        Box::pin(async { Err(BusError::Unavailable("the network is cut".into())) })
    }

    fn subscribe(&self, _: Subscription, _: Arc<dyn switchyard::Receiver>) {}
}

const LEASE: Duration = Duration::from_millis(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_node_takes_over_the_rows_and_timers_of_a_dead_one() {
    let Some(url) = common::database_url() else { return };
    let scratch = common::Scratch::new(&url, "takeover");
    let (ships, chases) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (shipped, chased) = (ships.clone(), chases.clone());
    // The live node's clock is two hours ahead: the dead node's timer (an
    // hour after the event's time) is due for it as soon as it holds it.
    let later = ManualClock::new(Timestamp::now() + Duration::from_secs(2 * 3600));
    let live = Engine::builder()
        .store(scratch.store("live", LEASE).await)
        .clock(later)
        .process::<Fulfilment>()
        .handle(move |_: Ship, _: CommandContext| {
            shipped.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, HandlerError>(()) }
        })
        .handle(move |_: ChaseCarrier, _: CommandContext| {
            chased.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, HandlerError>(()) }
        })
        .build();
    live.idle().await;

    // The dying node runs on a runtime of its own, shut down at once once
    // it has committed: its tasks stop where they are, as if killed.
    let dying =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (url, options) = (url.clone(), scratch.options("dying", LEASE));
    let (committed, has_committed) = tokio::sync::oneshot::channel();
    dying.spawn(async move {
        let store = PostgresStore::connect(&url, options).await.unwrap();
        let engine = Engine::builder()
            .store(store.clone())
            .bus(Unreachable)
            .clock(ManualClock::default())
            .process::<Fulfilment>()
            .build();
        engine.deliver(Envelope::event(Placed { order: 1 }));
        while store.pending_timers().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = committed.send(());
        std::future::pending::<()>().await;
    });
    tokio::time::timeout(Duration::from_secs(10), has_committed)
        .await
        .expect("the dying node never committed")
        .unwrap();
    dying.shutdown_background();

    // Within a few leases the live node holds both, sends the row, fires
    // the timer; and nothing more comes after.
    let deadline = Instant::now() + 10 * LEASE;
    while ships.load(Ordering::SeqCst) == 0 || chases.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the live node never took the rows over: {ships:?} ships, {chases:?} chases, {:?}",
            live.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live.idle().await;
    tokio::time::sleep(2 * LEASE).await;
    live.idle().await;
    assert_eq!((ships.load(Ordering::SeqCst), chases.load(Ordering::SeqCst)), (1, 1));
    assert!(live.dead_letters().await.unwrap().is_empty());
    let check = scratch.store("check", LEASE).await;
    assert!(check.pending_outbox().await.unwrap().is_empty());
}
