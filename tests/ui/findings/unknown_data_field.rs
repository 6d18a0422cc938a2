// `set` of a data field that is not declared.
switchyard::process! {
    process Shipping {
        correlate by order_id: u64
        data {
            attempts: u32 = 0
        }
        initial state Waiting {
            on OrderPaid {
                set atempts = data.attempts + 1
                -> Shipped
            }
        }
        final state Shipped
    }
}

fn main() {}
