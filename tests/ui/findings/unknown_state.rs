// A transition to a state that is not declared; a close name is offered as the
// fix.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> Shiped }
        }
        final state Shipped
    }
}

fn main() {}
