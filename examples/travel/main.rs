//! The travel-booking saga, the worked example of compensation: a flight,
//! then a hotel, then the payment; when a later step fails, is over budget
//! or does not answer in time, the steps already done are undone in reverse
//! order, the hotel before the flight, each cancellation asked again until
//! it is confirmed.
//!
//! The process is declared in `travel.yard`, its messages and contexts in
//! `process.rs`. This file runs six trips on an engine over a SQLite file in
//! the system's temporary directory, with a clock the example moves by hand
//! so that the step timeouts fire at once, and prints the message flow.
//!
//! Run it with `cargo run --example travel`.

mod process;

use std::time::Duration;

use process::*;
use switchyard::{Engine, ManualClock, SqliteStore};

#[path = "../common/database.rs"]
mod database;
#[path = "../common/flow.rs"]
mod flow;

/// What `travel.yard` gives a step to answer.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The engine reports each decision as a tracing event; show their messages.
    flow::init("switchyard_runtime=info");

    // A fresh file each run, so that the trips of a previous run do not
    // answer for this one's.
    let path = database::fresh("travel");
    println!("store: {}\n", path.display());

    let agencies = Agencies::default();
    let clock = ManualClock::default();
    let engine = contexts(
        Engine::builder().store(SqliteStore::open(&path)?).clock(clock.clone()),
        &agencies,
    )
    .build();

    let stories: [(&str, &str, u64, Plan); 6] = [
        ("lisbon", "every step succeeds", 1_000, Plan::default()),
        (
            "oslo",
            "the hotel is full: the flight is cancelled",
            1_000,
            Plan { hotel: Answer::No("no rooms left".to_owned()), ..Plan::default() },
        ),
        (
            "rome",
            "the payment is declined: the hotel is cancelled, then the flight",
            1_000,
            Plan { payment: Answer::No("card expired".to_owned()), ..Plan::default() },
        ),
        (
            "vienna",
            "the payment never answers: after the step timeout, the same compensation",
            1_000,
            Plan { payment: Answer::Never, ..Plan::default() },
        ),
        (
            "madrid",
            "the payment never answers and the first hotel cancellation is lost: asked again",
            1_000,
            Plan { payment: Answer::Never, lost_cancellations: 1, ..Plan::default() },
        ),
        (
            "tokyo",
            "the flight costs more than the whole budget: cancelled at once",
            600,
            Plan { flight_price: 900, ..Plan::default() },
        ),
    ];

    for (to, story, budget, plan) in stories {
        let trip = TripId::new(to);
        println!("== trip {to:?}: {story}");
        println!("  traveller   -> TripRequested {{ {to:?}, budget: {budget} }}");
        agencies.plan(&trip, plan);
        engine.publish(TripRequested {
            trip_id: trip.clone(),
            budget,
            from: "paris".to_owned(),
            to: to.to_owned(),
            date: "2024-06-01".to_owned(),
        });
        engine.idle().await;
        // A step that has not answered is noticed only when its timeout
        // fires: move the clock past it, as often as the saga keeps waiting.
        while matches!(
            engine.instance::<TripBooking>(&trip).await?,
            Some(switchyard::InstanceStatus::Running { .. })
        ) {
            println!("  clock       +{}s", STEP_TIMEOUT.as_secs());
            clock.advance(STEP_TIMEOUT);
            engine.idle().await;
        }
        match engine.instance::<TripBooking>(&trip).await? {
            Some(status) => println!("  saga        == {status:?}"),
            None => println!("  saga        == never started"),
        }
        for outcome in agencies.outcomes_for(&trip) {
            println!("  outcome     == {outcome:?}");
        }
        println!("  calls       == {}\n", agencies.calls_for(&trip).join(", "));
    }

    let stats = engine.stats();
    println!(
        "handled {} messages, {} timers fired, delivered {} commands, {} dead letters",
        stats.handled, stats.timers_fired, stats.commands_delivered, stats.dead_lettered
    );
    Ok(())
}
