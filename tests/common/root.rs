//! Tests that need root: to act as another user (uid 65534, in a child
//! process), to give a file to another user, to mount a small disk. CI
//! runs as root and runs every one of them. Elsewhere each is skipped:
//! it returns at once and libtest counts it as passed, so the skip is
//! written on stderr, past libtest's capture (which only holds the
//! `print!` family), where `cargo test` shows it whatever the outcome:
//!
//! ```text
//! SKIPPED (not root) hardening_root: roots_…: acts as uid 65534; run as root to run it
//! ```

use std::io::Write;

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether the calling test must stop here, skipped: true when not root,
/// after a line on stderr naming the test and saying what it needs root
/// for (`why`). As root, false: the test runs.
///
/// ```ignore
/// if common::root::skip_unless_root("acts as uid 65534") {
///     return;
/// }
/// ```
#[must_use]
pub fn skip_unless_root(why: &str) -> bool {
    if is_root() {
        return false;
    }
    skipped(why);
    true
}

/// Writes the line of a skipped test: the test binary's name (without
/// cargo's hash) and the test's (libtest names each test's thread after it).
fn skipped(why: &str) {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, _hash)) => name.to_owned(),
            None => s,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    // Straight to the file descriptor, not `eprintln!`, which libtest
    // captures and shows only for a failing test.
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED (not root) {binary}: {test}: {why}; run as root to run it"
    );
}
