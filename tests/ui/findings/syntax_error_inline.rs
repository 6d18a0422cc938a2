// A transition without a target state is a syntax error that says what was
// expected, on the token where it was expected.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        initial state Waiting {
            on OrderPaid { -> }
        }
        final state Shipped
    }
}

fn main() {}
