// A process that takes no event can never start.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting
        final state Shipped
    }
}

fn main() {}
