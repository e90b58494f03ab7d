//! Issue 26, point 4: maintenance never freezes a caller or an async
//! worker.
//! - An explicit compaction (`compact`, `delete_old_sessions`) waits at
//!   most the store's `lock_timeout` for the `<log>.compact` lock that
//!   another compaction holds, then fails with `Error::Busy`, nothing
//!   changed.
//! - tower-sessions' cleanup (`ExpiredDeletion::delete_expired` on
//!   `TowerStore`) runs on the blocking pool even over a LogStore whose
//!   other calls run inline: on a current-thread runtime another task
//!   completes while the cleanup waits for that lock.
//!
//! The other compaction is played by a separate open of `<log>.compact`
//! holding its `flock`, exactly what another process's compaction holds
//! (flock locks belong to the open file, not the process).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use sessionlog::{Error, LogStore, Session, SessionId, SessionStore};

/// Holds `<log>.compact`'s lock as a compaction in another process would.
fn hold_compact_lock(log: &Path) -> File {
    let mut name = log.as_os_str().to_owned();
    name.push(".compact");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&name)
        .expect("open .compact");
    f.lock().expect("lock .compact");
    f
}

fn open(log: &Path, lock_timeout: Duration) -> LogStore {
    LogStore::options()
        .lock_timeout(lock_timeout)
        .open(log)
        .expect("open")
}

fn sid(n: &str) -> SessionId {
    SessionId::new(format!("maintenance-test-session-{n}")).expect("id")
}

/// Runs `f` on a thread and waits for it at most a minute: a compaction
/// that waits without a deadline fails the test instead of hanging it.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not return within a minute"))
}

#[test]
fn compaction_gives_busy_when_another_holds_the_compact_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("s.log");
    let store = open(&log, Duration::from_millis(200));
    let mut s = Session::new(sid("a"), b"kept".to_vec());
    store.save_session(&mut s).expect("save");
    let held = hold_compact_lock(&log);

    let (store, err) = bounded("compact", move || {
        let r = store.compact();
        (store, r)
    });
    match err {
        Err(Error::Busy { .. }) => {}
        other => panic!("expected Error::Busy, got {other:?}"),
    }
    let (store, err) = bounded("delete_old_sessions", move || {
        let r = store.delete_old_sessions(Duration::MAX);
        (store, r)
    });
    assert!(
        matches!(err, Err(Error::Busy { .. })),
        "expected Error::Busy, got {err:?}"
    );
    // Nothing changed, and the store compacts once the lock is free.
    assert_eq!(
        store
            .load_session(&sid("a"))
            .expect("load")
            .expect("kept")
            .data,
        b"kept"
    );
    drop(held);
    store.compact().expect("compact once the lock is free");
    assert!(store.has_session(&sid("a")).expect("has"));
}

#[cfg(feature = "tower-sessions")]
#[test]
fn tower_cleanup_runs_on_the_blocking_pool() {
    use sessionlog::web::TowerStore;
    use tower_sessions::ExpiredDeletion;

    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("s.log");
    // A long lock timeout: the cleanup is still waiting when the other
    // task is checked, whatever the machine's speed.
    let store = TowerStore::new(open(&log, Duration::from_secs(30)));
    assert!(
        !store.uses_blocking_pool(),
        "LogStore's ordinary calls run inline: the test is about maintenance"
    );
    let held = hold_compact_lock(&log);
    let outcome = bounded("the current-thread runtime", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cleanup = tokio::spawn(async move { store.delete_expired().await });
            // Another task on the runtime's only thread. Were the cleanup
            // inline, it would hold that thread until the lock timeout.
            let other = tokio::spawn(async { "served" });
            let served = other.await.expect("other task");
            let waiting = !cleanup.is_finished();
            drop(held);
            let done = cleanup.await.expect("cleanup task");
            (served, waiting, done.is_ok())
        })
    });
    assert_eq!(outcome.0, "served");
    assert!(
        outcome.1,
        "the cleanup finished before the other task ran: it ran on the worker"
    );
    assert!(outcome.2, "the cleanup failed once the lock was free");
}
