//! Fuzz target `open`: arbitrary bytes opened as a LogStore file: a store or a typed error, never a panic.
//! The check itself is `fuzz_checks::open` in tests/support/fuzz_checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "../../tests/support/model.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::open(data));
