// Entering a final state completes the instance, so a final state takes no
// input.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        final state Shipped {
            ignore OrderPaid
        }
    }
}

fn main() {}
