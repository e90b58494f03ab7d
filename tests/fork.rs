//! Issue 26, point 6: a `LogStore` handle that crosses `fork()`.
//!
//! A handle belongs to the process that opened it. In a forked child its
//! background thread does not exist and its file locks are the parent's:
//! - every call there returns `Error::OtherProcess`, naming both processes,
//!   and touches nothing;
//! - dropping it there neither hangs nor panics (no join of the missing
//!   thread), writes no file (no flush, no hint) and leaves the parent's
//!   locks held; the parent's handle keeps working.
//!
//! The test process re-runs itself as a child (`tests/common/child.rs`), so
//! that the fork happens in a process with only the test's threads. That
//! child opens a store, forks, and waits (bounded) for the forked
//! grandchild, which uses or drops the handle and leaves with `_exit` and a
//! status the child checks; the parent checks the child's status.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{child, id};
use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use sessionlog::{Error, LogStore, Session, SessionStore, SyncPolicy};

/// The store directory, for the child.
const DIR_ENV: &str = "SESSIONLOG_TEST_FORK_DIR";
/// The longest the forked grandchild may take.
const BOUND: Duration = Duration::from_secs(30);

/// Runs `test` as a child process in `role` on a fresh directory and
/// checks that it succeeded.
fn run_child(test: &str, role: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = child::spawn(test, role, &[(DIR_ENV, dir.path().display().to_string())]);
    let out = c.wait_with_output().expect("wait for the child");
    assert!(
        out.status.success(),
        "the child failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every file of the store but the lock file, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

/// Opens a store with its background thread, saves a session and makes it
/// durable, so that nothing is left for anyone to write.
fn open_quiet(dir: &Path) -> LogStore {
    let store = LogStore::options()
        .sync(SyncPolicy::Interval(Duration::from_secs(3600)))
        .compact_check_interval(Duration::from_secs(3600))
        .open(dir.join("s.db"))
        .expect("open");
    let mut s = Session::new(id("before"), b"saved before the fork".to_vec());
    store.save_session(&mut s).expect("save");
    store.sync().expect("sync");
    store
}

/// Forks; the grandchild runs `f` on the handle and leaves with its
/// status (1 if it panicked). Returns the grandchild's status, or kills it
/// and fails if it did not end within `BOUND`.
fn fork_with(store: LogStore, f: impl FnOnce(LogStore) -> i32) -> (LogStore, WaitStatus) {
    // SAFETY: the grandchild only runs `f` (which uses or drops the
    // handle: memory allocation and file system calls, safe after fork
    // with glibc's and musl's fork handlers) and then `_exit`s without
    // returning into the test harness; the parent goes on unchanged.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = std::panic::catch_unwind(AssertUnwindSafe(|| f(store))).unwrap_or(1);
        // SAFETY: `_exit` ends this forked process at once, running no
        // atexit handler and no destructor of the test harness it copied.
        unsafe { libc::_exit(status) }
    }
    let pid = Pid::from_raw(pid).expect("a child pid");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rustix::process::waitpid(Some(pid), WaitOptions::empty()));
    });
    match rx.recv_timeout(BOUND) {
        Ok(r) => {
            let (_, status) = r.expect("waitpid").expect("the child's status");
            (store, status)
        }
        Err(_) => {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            panic!(
                "the forked child did not end within {BOUND:?}: it hung (joining a thread that \
                 does not exist there?)"
            );
        }
    }
}

/// The grandchild's exit code, or a description of its end.
fn exit_code(status: WaitStatus) -> Result<i32, String> {
    status
        .exit_status()
        .ok_or_else(|| format!("ended by signal {:?}", status.terminating_signal()))
}

/// What the child checks after the grandchild ended: nothing written, the
/// handle's shared lock still held, the handle still working.
fn parent_is_unharmed(dir: &Path, store: &LogStore, before: &BTreeMap<PathBuf, Vec<u8>>) {
    assert_eq!(
        &files(dir),
        before,
        "the forked child wrote to the store's files"
    );
    let lock = File::open(dir.join("s.db.lock")).expect("open the lock file");
    assert!(
        lock.try_lock().is_err(),
        "the handle's shared lock was released by the forked child"
    );
    let loaded = store
        .load_session(&id("before"))
        .expect("load in the parent")
        .expect("present");
    assert_eq!(loaded.data, b"saved before the fork");
    let mut s = Session::new(id("after"), b"saved after".to_vec());
    store.save_session(&mut s).expect("save in the parent");
    store.compact().expect("compact in the parent");
    assert!(store.has_session(&id("after")).expect("has"));
}

#[test]
fn every_call_in_a_forked_child_is_refused_with_a_typed_error() {
    const TEST: &str = "every_call_in_a_forked_child_is_refused_with_a_typed_error";
    if child::role().is_none() {
        return run_child(TEST, "calls");
    }
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir"));
    let store = open_quiet(&dir);
    let before = files(&dir);
    let parent = std::process::id();
    let (store, status) = fork_with(store, |store| {
        let refused = |r: Result<(), Error>, code| match r {
            Err(Error::OtherProcess {
                opened_by, current, ..
            }) if opened_by == parent && current != parent => 0,
            _ => code,
        };
        let mut s = Session::new(id("child"), b"from the child".to_vec());
        let checks = [
            refused(store.save_session(&mut s), 10),
            refused(store.save_session_if_unchanged(&mut s), 11),
            refused(store.touch_session(&id("before")).map(drop), 12),
            refused(store.delete_session(&id("before")).map(drop), 13),
            refused(store.load_session(&id("before")).map(drop), 14),
            refused(store.has_session(&id("before")).map(drop), 15),
            refused(store.compact().map(drop), 16),
            refused(store.sync(), 17),
            refused(store.stats().map(drop), 18),
            refused(store.iter_sessions().map(drop), 19),
        ];
        let message = match store.save_session(&mut s) {
            Err(e) => e.to_string(),
            Ok(()) => String::new(),
        };
        if !message.contains("fork") || !message.contains("open the store again") {
            return 20;
        }
        drop(store);
        checks.into_iter().find(|&c| c != 0).unwrap_or(0)
    });
    assert_eq!(
        exit_code(status),
        Ok(0),
        "10-19: a call was not refused with Error::OtherProcess (in the order of the checks), \
         20: the message does not say what happened and what to do, 1: a panic"
    );
    parent_is_unharmed(&dir, &store, &before);
}

#[test]
fn dropping_a_handle_in_a_forked_child_does_nothing() {
    const TEST: &str = "dropping_a_handle_in_a_forked_child_does_nothing";
    if child::role().is_none() {
        return run_child(TEST, "drop");
    }
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("dir"));
    let store = open_quiet(&dir);
    let before = files(&dir);
    let (store, status) = fork_with(store, |store| {
        drop(store);
        0
    });
    assert_eq!(exit_code(status), Ok(0), "1: the drop panicked");
    parent_is_unharmed(&dir, &store, &before);
}
