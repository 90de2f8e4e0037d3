//! Compile-fail tests: the scheduler token cannot be made outside this
//! crate, cannot leave its thread, and token-gated APIs need one.

#[test]
fn token_misuse_does_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
