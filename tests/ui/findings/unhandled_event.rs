// A state that neither handles nor ignores one of the process's events is a
// compile error naming the state and the event.
switchyard::process!("unhandled_event.yard");

fn main() {}
