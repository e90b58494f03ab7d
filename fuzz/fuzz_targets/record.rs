//! Fuzz target `record`: arbitrary bytes into the record decoder, and structured records round-tripping.
//! The check itself is `fuzz_checks::record` in tests/support/fuzz_checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "../../tests/support/model.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::record(data));
