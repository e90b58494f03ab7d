//! Guards the space reserve (issue 27, point 1): on a disk filled to the
//! last byte, a logout (a delete) and a touch that brings a deadline
//! forward still succeed, a login is refused with a typed full-disk error
//! that poisons nothing, and once the sessions expired a compaction (as
//! `sessionlog expire` runs it) gives the space back: logins and logouts
//! work again and the reserve is made again.
//!
//! The disks are real small ones, made for the test: a tmpfs and a
//! loop-mounted ext4, which need root (CI runs as root). Not root, each
//! test is skipped and says so on stderr (tests/common/root.rs); as root
//! where mounting is not permitted, it fails and says why.

#[macro_use]
mod common;
use common::child;
use common::disk::{Disk, leave_free};

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sessionlog::{
    Clock, Error, LogStore, ManualClock, Session, SessionId, SessionStore, SyncPolicy,
};

const RESERVE: u64 = 4 << 20;
const NOW: u64 = 1_800_000_000_000;

fn open(path: &Path, now_ms: u64) -> (LogStore, ManualClock) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_millis(now_ms));
    let store = LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
        .space_reserve(RESERVE)
        .clock(clock.clone())
        .open(path)
        .expect("open");
    (store, clock)
}

fn id(i: usize) -> SessionId {
    SessionId::new(format!("visitor{i:06}")).expect("valid id")
}

fn reserve_of(path: &Path) -> u64 {
    let mut p = path.as_os_str().to_owned();
    p.push(".reserve");
    fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
}

/// Whether `e` is the typed full-disk refusal.
fn is_full(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
}

/// Saves sessions expiring in a minute, from 64 KiB down to empty ones,
/// until not even an empty one fits; returns how many were saved. Every
/// failure must be the typed full-disk error.
fn fill(store: &LogStore, clock: &ManualClock) -> usize {
    let mut n = 0;
    for size in [64 << 10, 4 << 10, 256, 0] {
        loop {
            let mut s = Session::new(id(n), vec![n as u8; size])
                .with_expires(clock.now() + Duration::from_secs(60));
            match store.save_session(&mut s) {
                Ok(()) => n += 1,
                Err(e) if is_full(&e) => break,
                Err(e) => panic!("save {n} of {size} bytes: {e}"),
            }
        }
    }
    n
}

/// The child's side: a compaction with an idle cutoff of a minute, as
/// `sessionlog expire 1m` runs it, in a process of its own.
fn child_role(role: &str) {
    assert_eq!(role, "expire");
    let path = PathBuf::from(std::env::var("STORE").expect("STORE"));
    let (store, _) = open(&path, NOW + 120_000);
    match store.delete_old_sessions(Duration::from_secs(60)) {
        Ok(n) => println!("EXPIRED {n}"),
        Err(e) => println!("REFUSED {e}"),
    }
}

fn expire_in_child(test: &str, path: &Path) -> String {
    let mut c = child::spawn(test, "expire", &[("STORE", path.display().to_string())]);
    let mut r = child::Reader::new(&mut c);
    let mut found = None;
    while let Some(line) = r.next() {
        if line.starts_with("EXPIRED") || line.starts_with("REFUSED") {
            found = Some(line);
        }
    }
    assert!(c.wait().expect("wait").success(), "the expire child failed");
    found.expect("the child said nothing")
}

fn logout_and_login_on_a_full_disk(disk: &Disk, test: &str) {
    let path = disk.path().join("sessions.db");
    let (store, clock) = open(&path, NOW);
    assert_eq!(reserve_of(&path), RESERVE, "the reserve is made at open");

    // A visit counter for cookie-less visitors fills the disk; then the
    // last bytes go to another program.
    let saved = fill(&store, &clock);
    assert!(saved > 100, "the disk took {saved} sessions");
    let ballast = leave_free(disk.path(), 0);

    // A login is refused, typed, and poisons nothing.
    let mut s = Session::new(id(999_999), vec![7; 64 << 10]);
    let e = store
        .save_session(&mut s)
        .expect_err("a login on a full disk");
    assert!(is_full(&e), "{e}");

    // Logouts succeed: the reserve's space is given back to them.
    for i in 0..200 {
        assert!(
            store
                .delete_session(&id(i))
                .expect("a logout on a full disk"),
            "{i}"
        );
        assert!(
            store.load_session(&id(i)).expect("load").is_none(),
            "{i} logged out"
        );
    }
    assert_eq!(reserve_of(&path), 0, "the reserve was given back");
    // A touch that brings a deadline forward ends a session too.
    let sooner = clock.now() + Duration::from_secs(1);
    assert!(
        store
            .touch_session_until(&id(300), Some(sooner))
            .expect("a touch that shortens a deadline")
    );
    // Logins are still refused: what the reserve gave back is kept for
    // logouts, not taken by the next visitor (who may use at most the
    // rest of the page a logout's record grew the log by).
    let mut big = Session::new(id(999_998), vec![7; 64 << 10]);
    let e = store.save_session(&mut big).expect_err("a login");
    assert!(is_full(&e), "{e}");
    assert!(e.to_string().contains("reserve"), "{e}");
    let crumbs = fill(&store, &clock);
    assert!(crumbs < 64, "{crumbs} logins took the reserve's space");
    for i in 200..saved.min(800) {
        assert!(
            store
                .delete_session(&id(i))
                .expect("a logout after the logins"),
            "{i}"
        );
    }

    // The sessions expire; `sessionlog expire` gives the space back. (This
    // handle is closed first: a file some process still holds keeps its
    // blocks until it lets go.)
    drop(store);
    let done = expire_in_child(test, &path);
    assert!(done.starts_with("EXPIRED "), "{done}");
    let n: usize = done["EXPIRED ".len()..].parse().expect("a count");
    assert!(n + 800 >= saved, "{n} expired of {saved}");
    // The compaction made the reserve again, with the space it freed (the
    // ballast is still there).
    assert_eq!(reserve_of(&path), RESERVE, "the reserve is back");

    // Logins and logouts work again.
    let (store, _) = open(&path, NOW + 120_000);
    for i in 0..100 {
        let mut s = Session::new(id(i), vec![1; 64 << 10]);
        store
            .save_session(&mut s)
            .expect("a login after the space came back");
    }
    assert!(store.delete_session(&id(0)).expect("a logout"));
    assert!(store.load_session(&id(1)).expect("load").is_some());
    drop(store);
    fs::remove_file(&ballast).expect("remove the ballast");
}

#[test]
fn a_logout_succeeds_on_a_full_tmpfs() {
    if let Some(role) = child::role() {
        return child_role(&role);
    }
    if common::root::skip_unless_root("mounts a 64 MiB tmpfs") {
        return;
    }
    let disk = Disk::tmpfs("64m").unwrap_or_else(|e| {
        panic!("full_disk needs a 64 MiB tmpfs and mounting it failed ({e}); run as root")
    });
    logout_and_login_on_a_full_disk(&disk, "a_logout_succeeds_on_a_full_tmpfs");
}

#[test]
fn a_logout_succeeds_on_a_full_ext4() {
    if let Some(role) = child::role() {
        return child_role(&role);
    }
    if common::root::skip_unless_root("loop-mounts a 64 MiB ext4") {
        return;
    }
    let disk = Disk::ext4(64).unwrap_or_else(|e| {
        panic!(
            "full_disk needs a loop-mounted 64 MiB ext4 and making it failed ({e}); \
             run as root with loop devices"
        )
    });
    logout_and_login_on_a_full_disk(&disk, "a_logout_succeeds_on_a_full_ext4");
}

/// A compaction's start uses the reserve too: with not one byte free and
/// the reserve whole, `sessionlog expire` still starts, and frees the disk.
#[test]
fn a_compaction_starts_on_a_disk_full_to_the_last_byte() {
    if let Some(role) = child::role() {
        return child_role(&role);
    }
    if common::root::skip_unless_root("mounts a 64 MiB tmpfs") {
        return;
    }
    let disk = Disk::tmpfs("64m").unwrap_or_else(|e| {
        panic!("full_disk needs a 64 MiB tmpfs and mounting it failed ({e}); run as root")
    });
    let path = disk.path().join("sessions.db");
    let (store, clock) = open(&path, NOW);
    let saved = fill(&store, &clock);
    drop(store);
    let ballast = leave_free(disk.path(), 0);
    assert_eq!(reserve_of(&path), RESERVE, "no logout used the reserve");
    let done = expire_in_child("a_compaction_starts_on_a_disk_full_to_the_last_byte", &path);
    assert_eq!(done, format!("EXPIRED {saved}"));
    assert_eq!(
        reserve_of(&path),
        RESERVE,
        "made again with the space freed"
    );
    let (store, _) = open(&path, NOW + 120_000);
    store
        .save_session(&mut Session::new(id(0), vec![1; 64 << 10]))
        .expect("a login after the space came back");
    drop(store);
    fs::remove_file(&ballast).expect("remove the ballast");
}
