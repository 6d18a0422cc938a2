// A handler after an unguarded handler of the same event never runs.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
            on OrderPaid when event.express { -> Shipped }
        }
        final state Shipped
    }
}

fn main() {}
