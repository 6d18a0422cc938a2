// An event whose correlation field is not of the key's type: the error names
// the event, the field and both types.
use serde::{Deserialize, Serialize};
use switchyard::{Event};

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: String,
}

switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        final state Shipped
    }
}

fn main() {}
