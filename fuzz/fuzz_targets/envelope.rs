//! Fuzz target `envelope`: arbitrary bytes as an encrypted session's
//! stored data, decoded and loaded through `Encrypted`. The check itself
//! is `fuzz_checks::envelope` in tests/support/fuzz_checks.rs.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "../../tests/support/model.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::envelope(data));
