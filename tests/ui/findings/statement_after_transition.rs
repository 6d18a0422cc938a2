// The transition ends a handler: a statement after it is an error.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid {
                -> Shipped
                send ShipOrder { order_id: id }
            }
        }
        final state Shipped
    }
}

fn main() {}
