// A data field's initial value is computed before any instance exists, so it
// cannot read `now`.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        data {
            opened: Timestamp = now
        }
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        final state Shipped
    }
}

fn main() {}
