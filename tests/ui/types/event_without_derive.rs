// An event type that does not derive `Event` cannot be an input.
use serde::{Deserialize, Serialize};
use switchyard::Command;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Command)]
pub struct ShipOrder {
    pub order_id: u64,
}

switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { send ShipOrder { order_id: id } -> Shipped }
        }
        final state Shipped
    }
}

fn main() {}
