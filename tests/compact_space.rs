//! Guards the free-space check that a compaction makes before it starts
//! (issue 27, point 1): it counts only what will be copied (sessions
//! neither expired nor idle) with a margin that scales with it, so a disk
//! filled by sessions that then expired gets its space back; and it still
//! refuses a compaction whose live sessions do not fit.
//!
//! The disk is a real small one: a 64 MiB tmpfs mounted for the test,
//! which needs root (CI runs as root). Not root, the test is skipped and
//! says so on stderr (tests/common/root.rs); as root where mounting is not
//! permitted (a container without the right), it fails and says why.

#[macro_use]
mod common;
use common::child;
use common::disk::{Disk, leave_free};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sessionlog::{
    Clock, Error, LogStore, ManualClock, Session, SessionId, SessionStore, SyncPolicy,
};

/// The small disk. Mounting needs root (the test skips itself first when
/// not root): as root, a mount that fails fails the test and says why
/// rather than letting it pass with nothing checked.
fn small_disk() -> Disk {
    Disk::tmpfs("64m").unwrap_or_else(|e| {
        panic!(
            "compact_space needs a 64 MiB tmpfs and mounting it failed ({e}); \
             run as root where mount(2) is permitted"
        )
    })
}

fn open(path: &Path, clock: &ManualClock) -> LogStore {
    LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
        .clock(clock.clone())
        .open(path)
        .expect("open")
}

fn id(i: usize) -> SessionId {
    SessionId::new(format!("visitor{i:06}")).expect("valid id")
}

/// Saves 64 KiB sessions (expiring in a minute if `expiring`) until a
/// save fails for lack of space; returns how many were saved.
fn fill_with_sessions(store: &LogStore, clock: &ManualClock, expiring: bool) -> usize {
    for i in 0.. {
        let mut s = Session::new(id(i), vec![i as u8; 64 << 10]);
        if expiring {
            s = s.with_expires(clock.now() + Duration::from_secs(60));
        }
        match store.save_session(&mut s) {
            Ok(()) => {}
            Err(Error::Io { .. } | Error::Poisoned { .. }) => return i,
            Err(e) => panic!("save {i}: {e}"),
        }
    }
    unreachable!()
}

/// Runs the role `role` of this test in a child process against the store
/// at `path`, with the store's clock at `now_ms`; returns the line it
/// printed that starts with `word`. The child has exited when this
/// returns, so nothing of it holds a file any more.
fn in_child(role: &str, path: &Path, now_ms: u64, word: &str) -> String {
    let mut c = child::spawn(
        "a_disk_filled_by_sessions_that_expired_gets_its_space_back",
        role,
        &[
            ("STORE", path.display().to_string()),
            ("NOW_MS", now_ms.to_string()),
        ],
    );
    let mut r = child::Reader::new(&mut c);
    let mut found = None;
    while let Some(line) = r.next() {
        if line.starts_with(word) {
            found = Some(line);
        }
    }
    let status = c.wait().expect("wait for the child");
    assert!(status.success(), "child {role}: {status}");
    found.unwrap_or_else(|| panic!("child {role} printed no {word} line"))
}

/// The child's side: `filler` fills the disk with expiring sessions,
/// `compactor` compacts (as `sessionlog expire` from cron would).
fn child_role(role: &str) {
    let path = PathBuf::from(std::env::var("STORE").expect("STORE"));
    let now: u64 = std::env::var("NOW_MS")
        .expect("NOW_MS")
        .parse()
        .expect("a number");
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_millis(now));
    let store = open(&path, &clock);
    match role {
        "filler" => println!("FULL {}", fill_with_sessions(&store, &clock, true)),
        "compactor" => match store.compact() {
            Ok(c) => println!("COMPACTED {} {}", c.kept, c.dropped),
            Err(e) => println!("REFUSED {e}"),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_disk_filled_by_sessions_that_expired_gets_its_space_back() {
    if let Some(role) = child::role() {
        return child_role(&role);
    }
    if common::root::skip_unless_root("mounts a 64 MiB tmpfs") {
        return;
    }
    let disk = small_disk();
    let path = disk.path().join("sessions.db");
    let now = 1_800_000_000_000u64;

    // A visit counter for cookie-less visitors: a session a request, each
    // expiring in a minute, until the disk is full. Then nothing else is
    // left free but 1 MiB.
    let full = in_child("filler", &path, now, "FULL");
    let saved: u64 = full["FULL ".len()..].parse().expect("a count");
    assert!(saved > 100, "the disk took {saved} sessions");
    let ballast = leave_free(disk.path(), 1 << 20);
    let before = fs::metadata(&path).expect("stat").len();

    // They all expire. The only way space comes back is a compaction,
    // with 1 MiB free for a log of tens of MiB: nothing will be copied.
    let done = in_child("compactor", &path, now + 120_000, "COMPACTED");
    assert_eq!(done, format!("COMPACTED 0 {saved}"));
    let after = fs::metadata(&path).expect("stat").len();
    assert!(after < 64 << 10, "{before} bytes -> {after}");
    // The space is back: logins work again, sessions as large as before.
    let clock = ManualClock::new(std::time::UNIX_EPOCH + Duration::from_millis(now + 120_000));
    let store = open(&path, &clock);
    for i in 0..100 {
        let mut s = Session::new(id(i), vec![1; 64 << 10]);
        store
            .save_session(&mut s)
            .expect("a save after the space came back");
    }
    drop(store);
    fs::remove_file(&ballast).expect("remove ballast");
    fs::remove_file(&path).expect("remove store");

    // Sessions that are still live and do not fit are refused, cleanly:
    // the estimate counts what will be copied, it is not switched off.
    let store = open(&path, &clock);
    let saved = fill_with_sessions(&store, &clock, false);
    drop(store);
    leave_free(disk.path(), 1 << 20);
    let store = open(&path, &clock);
    match store.compact() {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}");
            assert!(source.to_string().contains("not started"), "{source}");
        }
        other => panic!("expected a refusal for lack of space, got {other:?}"),
    }
    assert!(
        !disk.path().join("sessions.db.compact").exists(),
        "nothing left behind"
    );
    for i in [0, saved / 2, saved - 1] {
        assert!(store.load_session(&id(i)).expect("load").is_some(), "{i}");
    }
}
