// `schedule` of a timer that is not declared.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid {
                schedule Deadline after 1h
                -> Shipped
            }
        }
        final state Shipped
    }
}

fn main() {}
