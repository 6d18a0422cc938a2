//! The conference registration process of the CQRS Journey, end to end:
//! orders placed with the Orders context go through the `Registration`
//! process (`registration.yard`), which reserves seats with the Reservations
//! context, waits for payment, confirms the order and commits the seats, or
//! gives the seats back and rejects the order when its reservation lapses.
//! Seats that cannot be reserved go on the wait list.
//!
//! The engine runs on a SQLite file, removed at start so that every run
//! begins afresh, and on a manual clock, so that the fifteen minutes of a
//! reservation pass at once instead of in real time. Each story prints the
//! contexts' lines and the engine's decisions, then the final statuses.
//!
//! Run it with `cargo run --example registration`.

mod process;

use std::time::Duration;

use process::*;
use switchyard::{Engine, ManualClock, SqliteStore};

#[path = "../common/database.rs"]
mod database;
#[path = "../common/flow.rs"]
mod flow;

// One thread: two events published back to back reach the process before
// anything they lead to, which is what the stale-reply story relies on.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The engine reports each decision as a tracing event; show their messages.
    flow::init("switchyard_runtime=info");

    let path = database::fresh("registration-example");
    println!("engine store: {}\n", path.display());

    let clock = ManualClock::default();
    let state = Contexts::default();
    let conference = ConferenceId("rustconf".to_owned());
    state.open_conference(&conference, &[("full", 10), ("workshop", 2)]);
    let engine =
        contexts(Engine::builder().store(SqliteStore::open(&path)?).clock(clock.clone()), &state)
            .build();

    let order = |id: &str| OrderId(id.to_owned());

    header("1. An order is placed, reserved, paid and confirmed");
    let placed = state.place_order(
        &order("o-1"),
        &conference,
        vec![SeatQuantity::new("full", 2)],
        engine.now(),
    );
    engine.publish(placed);
    engine.idle().await;
    engine.send(PayOrder { order_id: order("o-1") });
    engine.idle().await;
    status(&engine, &state, &order("o-1")).await;

    header("2. An order is not paid in time: its seats go back on sale");
    let placed = state.place_order(
        &order("o-2"),
        &conference,
        vec![SeatQuantity::new("full", 3)],
        engine.now(),
    );
    engine.publish(placed);
    engine.idle().await;
    println!("  clock       {} minutes pass", RESERVATION_TIME.as_secs() / 60);
    clock.advance(RESERVATION_TIME);
    engine.idle().await;
    println!("  seats       {} full seats left", state.available(&conference, "full"));
    status(&engine, &state, &order("o-2")).await;

    header("3. An order reaches the process after its reservation time: rejected at once");
    let placed = state.place_order(
        &order("o-3"),
        &conference,
        vec![SeatQuantity::new("full", 1)],
        engine.now(),
    );
    println!("  clock       the event waits 20 minutes on its way");
    clock.advance(Duration::from_secs(20 * 60));
    engine.publish(placed);
    engine.idle().await;
    status(&engine, &state, &order("o-3")).await;

    header("4. Not every seat is left: the rest goes on the wait list");
    let seats = vec![SeatQuantity::new("full", 1), SeatQuantity::new("workshop", 3)];
    let placed = state.place_order(&order("o-4"), &conference, seats, engine.now());
    engine.publish(placed);
    engine.idle().await;
    engine.send(PayOrder { order_id: order("o-4") });
    engine.idle().await;
    status(&engine, &state, &order("o-4")).await;

    header("5. An order is changed before its seats are reserved: the first reply is stale");
    let placed = state.place_order(
        &order("o-5"),
        &conference,
        vec![SeatQuantity::new("full", 1)],
        engine.now(),
    );
    engine.publish(placed);
    engine.publish(state.update_order(&order("o-5"), vec![SeatQuantity::new("full", 4)]));
    engine.idle().await;
    engine.send(PayOrder { order_id: order("o-5") });
    engine.idle().await;
    status(&engine, &state, &order("o-5")).await;

    header("Afterwards");
    for seat_type in ["full", "workshop"] {
        println!(
            "  seats       {} {seat_type} seats left",
            state.available(&conference, seat_type)
        );
    }
    for entry in state.wait_list.lock().unwrap().iter() {
        println!("  wait list   {:?} waits for {}", entry.order_id.0, describe(&entry.seats));
    }
    let stats = engine.stats();
    println!(
        "  engine      handled {} messages, ignored {}, fired {} timers, delivered {} commands, {} dead letters",
        stats.handled,
        stats.ignored,
        stats.timers_fired,
        stats.commands_delivered,
        stats.dead_lettered
    );
    Ok(())
}

/// The engine's file: under the system's temporary directory, so that a
/// run leaves nothing in the source tree.
fn header(title: &str) {
    println!("== {title}");
}

/// Prints an order's status in the process and in the Orders context.
async fn status(engine: &Engine, state: &Contexts, order_id: &OrderId) {
    match engine.instance::<Registration>(order_id).await {
        Ok(Some(status)) => println!("  process     == {status:?}"),
        Ok(None) => println!("  process     == never started"),
        Err(error) => println!("  process     == cannot be read: {error}"),
    }
    match state.order_status(order_id) {
        Some(status) => println!("  order       == {status:?}\n"),
        None => println!("  order       == unknown\n"),
    }
}
