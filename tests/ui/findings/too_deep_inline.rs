// Brackets nested more than 64 deep are refused before the definition is
// parsed, at the first bracket too many, rather than overflowing the stack of
// the compiler: here the handler's statement holds 62 parentheses inside the
// three braces of the process, the state and the handler.
switchyard::process! {
    process Order {
        correlate by order_id: u64
        data { total: u64 = 0 }
        initial state Open {
            on ItemAdded {
                set total = ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((data.total + 1))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))
                -> Done
            }
        }
        final state Done
    }
}

fn main() {}
