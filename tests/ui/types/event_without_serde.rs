// A message travels as JSON between processes: deriving `Event` without
// serde's derives is an error that says which derive is missing.
use switchyard::Event;

#[derive(Clone, Debug, Event)]
pub struct OrderPaid {
    pub order_id: u64,
}

fn main() {}
