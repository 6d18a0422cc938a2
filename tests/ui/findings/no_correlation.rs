// Without `correlate by FIELD: Type` the process has no key to find its
// instances by.
switchyard::process! {
    process Shipping {
        initial state Waiting {
            on OrderPaid { -> Shipped }
        }
        final state Shipped
    }
}

fn main() {}
