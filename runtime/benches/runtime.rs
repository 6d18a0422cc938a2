//! Runtime benchmarks (being written).
fn main() {}
