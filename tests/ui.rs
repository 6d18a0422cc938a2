//! Compile-fail tests: every compile error a user can meet, pinned with its
//! exact text in `tests/ui/*.stderr`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
