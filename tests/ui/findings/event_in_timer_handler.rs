// A timer carries no event, so `event` in its handler is an error.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        timer Deadline
        initial state Waiting {
            on OrderPaid {
                schedule Deadline after 1h
                -> Paid
            }
        }
        state Paid {
            on Deadline {
                send CancelOrder { order_id: event.order_id }
                -> Cancelled
            }
            ignore OrderPaid
        }
        final state Cancelled
    }
}

fn main() {}
