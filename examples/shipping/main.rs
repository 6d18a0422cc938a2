//! The process of `docs/getting-started.md`: a paid order is shipped, and the
//! warehouse is chased every day the parcel is late. It runs on a SQLite file
//! and on a clock the example moves by hand, so that two days pass at once.
//!
//! Run it with `cargo run --example shipping`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard::{Command, CommandContext, Engine, Event, HandlerError, ManualClock, SqliteStore};

switchyard::process!("examples/shipping/shipping.yard");

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: u64,
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderShipped {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct ShipOrder {
    pub order_id: u64,
    pub address: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct ChaseWarehouse {
    pub order_id: u64,
}

/// The warehouse: it ships order 1 at once and forgets order 2.
pub async fn warehouse(command: ShipOrder, ctx: CommandContext) -> Result<(), HandlerError> {
    println!("warehouse <- ship order {} to {}", command.order_id, command.address);
    if command.order_id == 1 {
        ctx.publish(OrderShipped { order_id: command.order_id });
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("switchyard-shipping.db");
    let _ = std::fs::remove_file(&path);
    let clock = ManualClock::new(switchyard::Timestamp::now());
    let engine = Engine::builder()
        .store(SqliteStore::open(&path)?)
        .clock(clock.clone())
        .process::<Shipping>()
        .handle(warehouse)
        .handle(|command: ChaseWarehouse, _| async move {
            println!("warehouse <- where is order {}?", command.order_id);
            Ok(())
        })
        .build();

    for order_id in [1, 2] {
        engine.publish(OrderPaid { order_id, address: format!("{order_id} Main Street") });
    }
    engine.idle().await;

    // Two days later, order 2 is still waiting: the warehouse is chased.
    clock.advance(Duration::from_secs(2 * 86_400));
    engine.idle().await;

    for order_id in [1, 2] {
        println!("order {order_id}: {:?}", engine.instance::<Shipping>(&order_id).await?);
    }
    println!("state kept in {}", path.display());
    Ok(())
}
