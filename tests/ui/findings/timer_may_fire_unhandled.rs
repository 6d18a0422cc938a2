// A timer scheduled on the way into a state, and not cancelled, may fire
// there: the state must handle or ignore it.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        timer Deadline
        initial state Waiting {
            on OrderPaid {
                schedule Deadline after 2d
                -> Packing
            }
            ignore OrderPacked
        }
        state Packing {
            on OrderPacked { -> Shipped }
            ignore OrderPaid
        }
        final state Shipped
    }
}

fn main() {}
