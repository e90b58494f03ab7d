//! Fuzz target `hint`: arbitrary bytes into the hint decoder (the index
//! snapshot beside a compacted log). The check itself is
//! `fuzz_checks::hint` in tests/support/fuzz_checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "../../tests/support/model.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::hint(data));
