//! The compile errors of `#[multiproc::proxy]`, pinned: each refusal is a sentence
//! at the offending span, every refusal of a block is reported at once, and nothing
//! else is (the rest of the block still expands). `TRYBUILD=overwrite` rewrites the
//! expected output after a deliberate change.

#[test]
fn proxy_refusals() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
