// A definition that does not parse still declares the process and its states,
// as far as its words say: code naming them shows no error of its own.
use switchyard::{Engine, Process};

switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { => Shipped }
        }
        final state Shipped
    }
}

fn main() {
    let _builder = Engine::builder().process::<Shipping>();
    let _initial: ShippingState = Shipping::INITIAL;
    let _shipped = ShippingState::Shipped;
}
