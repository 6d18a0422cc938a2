// A path that names no file: the error says where it looked.
switchyard::process!("processes/shipping.yard");

fn main() {}
