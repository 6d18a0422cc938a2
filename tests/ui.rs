//! Compile-fail tests: every compile error a user can meet, one minimal case
//! per mistake, named for it, pinned with its exact text in the `.stderr`
//! beside it. `findings/` holds what the Switchyard checker reports (and the
//! front door's own errors); `types/` what the Rust compiler reports about
//! generated code and derived messages, which Switchyard arranges to say in
//! words and at the DSL text.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/findings/*.rs");
    cases.compile_fail("tests/ui/types/*.rs");
}
