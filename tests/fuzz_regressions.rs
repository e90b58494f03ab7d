//! Replays every input saved under `tests/fuzz-regressions/<target>/`
//! through the same check its fuzz target runs (tests/support/
//! fuzz_checks.rs), so each crash the fuzzers found stays fixed under a
//! plain `cargo test` on stable. Also replays the committed seed corpus.

#[path = "support/fuzz_checks.rs"]
mod fuzz_checks;
#[path = "support/model.rs"]
mod model;

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files in `dir` (none if it does not exist), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.expect("read directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Runs `check` on every saved input of `target`; reports all failures.
fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = inputs(&root.join("tests/fuzz-regressions").join(target));
    files.extend(
        inputs(&root.join("fuzz/corpus").join(target))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            }),
    );
    let mut failed = Vec::new();
    for f in &files {
        let data = fs::read(f).expect("read input");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: failing inputs: {failed:#?}");
}

#[test]
fn record_inputs() {
    replay("record", fuzz_checks::record);
}

#[test]
fn hint_inputs() {
    replay("hint", fuzz_checks::hint);
}

#[test]
fn open_inputs() {
    replay("open", fuzz_checks::open);
}

#[test]
fn ops_inputs() {
    replay("ops", fuzz_checks::ops);
}

#[test]
fn envelope_inputs() {
    replay("envelope", fuzz_checks::envelope);
}
