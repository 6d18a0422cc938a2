// The same mistake in an inline definition: the error points at the state's
// name in the Rust source.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64

        initial state Waiting {
            on OrderPaid { send ShipOrder { order_id: id } -> Shipping }
            ignore OrderCancelled, OrderShipped
        }

        state Shipping {
            on OrderShipped { -> Shipped }
            ignore OrderPaid
        }

        final state Shipped
    }
}

fn main() {}
