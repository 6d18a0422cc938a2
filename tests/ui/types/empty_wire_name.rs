// A message's wire name cannot be empty.
use serde::{Deserialize, Serialize};
use switchyard::{Event};

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
#[switchyard(name = "")]
pub struct OrderPaid {
    pub order_id: u64,
}

fn main() {}
