// A process has exactly one initial state.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        initial state Ready {
            on OrderPaid { -> Shipped }
        }
        final state Shipped
    }
}

fn main() {}
