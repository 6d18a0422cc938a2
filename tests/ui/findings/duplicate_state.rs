// Two states with one name: the second is reported, pointing back at the
// first.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        state Waiting {
            ignore OrderPaid
        }
        final state Shipped
    }
}

fn main() {}
