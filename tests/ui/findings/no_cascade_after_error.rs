// After a finding, the types the process would have declared still exist, so
// code that uses them shows no error of its own: the finding is the only one.
use serde::{Deserialize, Serialize};
use switchyard::{Engine, Event, Process};

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderPaid {
    pub order_id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Event)]
pub struct OrderShipped {
    pub order_id: u64,
}

switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        data {
            attempts: u32 = 0
        }
        initial state Waiting {
            on OrderPaid { -> Shiping }
            ignore OrderShipped
        }
        state Shipping {
            on OrderShipped { -> Shipped }
            ignore OrderPaid
        }
        final state Shipped
    }
}

fn main() {
    let _builder = Engine::builder().process::<Shipping>();
    let _initial: ShippingState = Shipping::INITIAL;
    let _states: &[ShippingState] = ShippingState::ALL;
    let _input = ShippingInput::from(OrderPaid { order_id: 1 });
    let _attempts: u32 = ShippingData::default().attempts;
}
