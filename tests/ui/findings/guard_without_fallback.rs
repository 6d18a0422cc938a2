// Every handler of an event is guarded: when no guard holds, nothing would
// handle the event.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid when event.amount > 100 { -> Review }
            on OrderPaid when event.amount <= 100 { -> Shipped }
            ignore ReviewPassed
        }
        state Review {
            on ReviewPassed { -> Shipped }
            ignore OrderPaid
        }
        final state Shipped
    }
}

fn main() {}
