// One event both handled and ignored in one state contradicts itself.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shipped }
            ignore OrderPaid
        }
        final state Shipped
    }
}

fn main() {}
