// `#[switchyard(...)]` on a message knows `name` only.
use serde::{Deserialize, Serialize};
use switchyard::{Command};

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
#[switchyard(rename = "orders.ship")]
pub struct ShipOrder {
    pub order_id: u64,
}

fn main() {}
