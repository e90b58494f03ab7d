//! Fuzz target `ops`: operation sequences against the model, with reopen and simulated crash.
//! The check itself is `fuzz_checks::ops` in tests/support/fuzz_checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "../../tests/support/model.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::ops(data));
