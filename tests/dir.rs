//! Guards what `DirStore` promises beyond the shared conformance suite:
//! file and directory modes (0600 / 0700); file names that are digests of
//! the ids (never the ids), so nothing escapes the directory, ids
//! differing in case never share a file, and a store of the older names
//! (`s-<base32 of the id>`) is renamed once and reads as before; damaged, truncated or misplaced files reported
//! as `Error::Corrupt` while every other session still loads; unknown files
//! ignored and stale temporary files cleaned up; option validation; every
//! sync policy; no lost update when several processes increment one
//! session through conditional saves (the test re-runs its own binary);
//! and a backup and restore that keep the order of logins made in one
//! millisecond (the files' modification times).

mod common;
use common::id;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use sessionlog::{DirStore, Error, Session, SessionId, SessionStore, SyncPolicy};

/// `h-` and the lowercase base32 of the digest `HashedIds::stored_id`
/// encodes in base64url (DESIGN.md §11), computed here from that id.
fn digest_name(name: &str) -> String {
    let stored = sessionlog::HashedIds::<()>::stored_id(&id(name));
    let digest = base64url_decode(&stored.as_str()[2..]);
    format!("h-{}", common::base32(&digest))
}

fn base64url_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut acc, mut bits, mut out) = (0u32, 0, Vec::new());
    for c in s.bytes() {
        acc = (acc << 6) | A.iter().position(|&a| a == c).expect("base64url") as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("entry")
                .file_name()
                .into_string()
                .expect("UTF-8 name")
        })
        .collect()
}

/// Saves a session under a new id and returns the file that appeared.
fn save_new(store: &DirStore, name: &str, data: &[u8]) -> PathBuf {
    let before = names(store.path());
    store
        .save_session(&mut Session::new(id(name), data.to_vec()))
        .expect("save");
    let added: Vec<String> = names(store.path()).difference(&before).cloned().collect();
    assert_eq!(added.len(), 1, "one new file for {name}: {added:?}");
    store.path().join(&added[0])
}

fn open(tmp: &tempfile::TempDir) -> DirStore {
    let store = DirStore::open(tmp.path().join("sessions")).expect("open");
    store.setup().expect("setup");
    store
}

fn load_data(store: &DirStore, name: &str) -> Vec<u8> {
    store
        .load_session(&id(name))
        .expect("load")
        .expect("present")
        .data
}

fn assert_corrupt(store: &DirStore, name: &str, file: &Path) {
    match store.load_session(&id(name)) {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, file),
        other => panic!("{name}: expected Error::Corrupt, got {other:?}"),
    }
}

#[test]
fn files_are_0600_in_a_0700_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("a").join("b");
    let store = DirStore::open(&dir).expect("open creates missing directories");
    save_new(&store, "abc", b"x");
    assert!(store.touch_session(&id("abc")).expect("touch"));
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("a")), 0o700, "created parents too");
    let files = names(&dir);
    assert_eq!(files.len(), 3, "{files:?}");
    for name in files {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
    }
}

#[test]
fn file_names_are_digests_of_the_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(&tmp);
    let long = "Zz9".repeat(42) + "-_";
    let ids = [
        "abc", "ABC", "a-b_c,d", "lock", "tmp-1", "s-abc", "__", "-", &long,
    ];
    let mut files = BTreeSet::new();
    for name in ids {
        let file = save_new(&store, name, name.as_bytes());
        assert_eq!(file.parent(), Some(store.path()));
        let fname = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name")
            .to_owned();
        let encoded = fname.strip_prefix("h-").expect("h- prefix");
        assert!(
            encoded.len() == 52
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
            "{fname}"
        );
        assert_eq!(fname, digest_name(name), "the documented digest");
        files.insert(fname);
    }
    files.insert(".lock".to_owned());
    files.insert(".hashed-names".to_owned());
    assert_eq!(names(store.path()), files, "nothing else in the directory");
    assert_eq!(
        names(tmp.path()),
        BTreeSet::from(["sessions".to_owned()]),
        "nothing outside it"
    );
    for name in ids {
        assert_eq!(load_data(&store, name), name.as_bytes());
    }
}

#[test]
fn ids_differing_only_in_case_are_distinct_sessions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(&tmp);
    let lower = save_new(&store, "abc", b"lower");
    let upper = save_new(&store, "ABC", b"upper");
    assert_ne!(
        lower.to_string_lossy().to_lowercase(),
        upper.to_string_lossy().to_lowercase(),
        "distinct even on a case-insensitive file system"
    );
    assert_eq!(load_data(&store, "abc"), b"lower");
    assert_eq!(load_data(&store, "ABC"), b"upper");
    assert!(store.delete_session(&id("abc")).expect("delete"));
    assert_eq!(load_data(&store, "ABC"), b"upper");
    assert_eq!(store.iter_sessions().expect("iter").count(), 1);
}

#[test]
fn a_corrupt_file_is_reported_and_other_sessions_still_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(&tmp);
    save_new(&store, "good", b"fine");
    let bad = save_new(&store, "bad", &[7u8; 100]);
    let mut bytes = fs::read(&bad).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    fs::write(&bad, &bytes).expect("damage");

    assert_corrupt(&store, "bad", &bad);
    assert!(matches!(
        store.has_session(&id("bad")),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(load_data(&store, "good"), b"fine");
    let items: Vec<_> = store.iter_sessions().expect("iter").collect();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items.iter().filter(|r| r.is_ok()).count(),
        1,
        "the good one"
    );
    assert!(
        items
            .iter()
            .any(|r| matches!(r, Err(Error::Corrupt { path, .. }) if *path == bad))
    );
    // The maintenance job neither fails nor removes the evidence.
    assert_eq!(
        store
            .delete_old_sessions(Duration::from_secs(0))
            .expect("delete old"),
        1,
        "only the good session"
    );
    assert!(bad.exists());

    // A conditional save refuses to guess; an unconditional one repairs.
    let mut s = Session::new(id("bad"), b"new".to_vec());
    assert!(matches!(
        store.save_session_if_unchanged(&mut s),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(fs::read(&bad).expect("read"), bytes, "left as it was");
    store.save_session(&mut s).expect("save over the damage");
    assert_eq!(s.version(), 1);
    assert_eq!(load_data(&store, "bad"), b"new");
}

#[test]
fn a_truncated_file_is_corrupt_and_others_still_load() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(&tmp);
    save_new(&store, "good", b"fine");
    let cut = save_new(&store, "cut", &[1u8; 64]);
    let full = fs::read(&cut).expect("read");
    for len in [0, 1, 8, 15, 16, 17, 40, 56, full.len() - 9, full.len() - 1] {
        fs::write(&cut, &full[..len]).expect("truncate");
        assert_corrupt(&store, "cut", &cut);
        assert_eq!(load_data(&store, "good"), b"fine", "after cutting to {len}");
    }
    // Deleting a damaged session removes the file; it was not live.
    assert!(!store.delete_session(&id("cut")).expect("delete"));
    assert!(!cut.exists());
    assert_eq!(store.load_session(&id("cut")).expect("load"), None);
}

#[test]
fn wrong_magic_future_versions_and_misplaced_files_are_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(&tmp);
    let good = save_new(&store, "good", b"fine");
    let other = save_new(&store, "other", b"x");
    let original = fs::read(&other).expect("read");

    let mut wrong = original.clone();
    wrong[1] = b'X';
    fs::write(&other, &wrong).expect("write");
    assert!(matches!(
        store.load_session(&id("other")),
        Err(Error::Corrupt { offset: 0, .. })
    ));

    let mut future = original.clone();
    future[8] = 3;
    fs::write(&other, &future).expect("write");
    assert!(matches!(
        store.load_session(&id("other")),
        Err(Error::UnsupportedVersion {
            found: 3,
            supported: 2,
            ..
        })
    ));
    let mut s = Session::new(id("other"), b"y".to_vec());
    assert!(
        store.save_session(&mut s).is_err(),
        "a newer build's file is not overwritten"
    );
    assert_eq!(fs::read(&other).expect("read"), future);

    // A valid file under another session's name is not that session.
    fs::copy(&good, &other).expect("copy");
    assert_corrupt(&store, "other", &other);
    assert_eq!(load_data(&store, "good"), b"fine");
}

#[test]
fn unknown_files_are_ignored_and_only_stale_temporary_files_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open(&tmp);
    save_new(&store, "keep", b"x");
    let dir = store.path();
    fs::write(dir.join("README"), b"not a session").expect("write");
    fs::write(dir.join("s-not-base32!"), b"junk").expect("write");
    fs::write(dir.join(".tmp-fresh"), b"a live writer's").expect("write");
    let old = dir.join(".tmp-old");
    fs::write(&old, b"a dead writer's").expect("write");
    fs::File::options()
        .write(true)
        .open(&old)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .expect("set mtime");

    let ids: Vec<SessionId> = store
        .iter_sessions()
        .expect("iter")
        .map(|r| r.expect("no error for unknown files").id)
        .collect();
    assert_eq!(ids, [id("keep")]);
    store.setup().expect("setup");
    let left = names(dir);
    assert!(!left.contains(".tmp-old"), "{left:?}");
    for name in [".tmp-fresh", "README", "s-not-base32!", ".lock"] {
        assert!(left.contains(name), "{name} kept: {left:?}");
    }
}

#[test]
fn options_are_validated_in_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for bad in [0, (1 << 30) + 1] {
        let r = DirStore::options()
            .max_session_size(bad)
            .open(tmp.path().join("x"));
        assert!(matches!(r, Err(Error::InvalidOption(_))), "{bad}: {r:?}");
    }
    DirStore::options()
        .max_session_size(1 << 30)
        .open(tmp.path().join("x"))
        .expect("1 GiB is allowed");
}

/// Regression: `Interval(0)` used to be accepted, and the flusher thread
/// then spun a core. DirStore refuses what LogStore refuses, before
/// creating anything.
#[test]
fn options_are_validated_as_for_every_backend() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("s");
    for o in [
        DirStore::options().sync(SyncPolicy::Interval(Duration::ZERO)),
        DirStore::options().max_session_size(0),
        DirStore::options().max_session_size(usize::MAX),
        DirStore::options().max_idle(Duration::ZERO),
    ] {
        assert!(matches!(o.open(&dir), Err(Error::InvalidOption(_))));
    }
    assert!(!dir.exists(), "nothing created for bad options");
    for o in [
        sessionlog::MemoryStore::options().max_session_size(0),
        sessionlog::MemoryStore::options().max_idle(Duration::ZERO),
    ] {
        assert!(matches!(o.open(), Err(Error::InvalidOption(_))));
    }
}

#[test]
fn every_sync_policy_saves_touches_deletes_and_syncs() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Interval(Duration::from_millis(1)),
        SyncPolicy::Interval(Duration::from_secs(3600)),
        SyncPolicy::Never,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("s");
        let store = DirStore::options().sync(policy).open(&dir).expect("open");
        assert!(store.is_multiprocess_safe() && store.is_thread_safe());
        for name in ["a", "b"] {
            store
                .save_session(&mut Session::new(id(name), name.as_bytes().to_vec()))
                .expect("save");
        }
        assert!(store.touch_session(&id("a")).expect("touch"));
        assert!(store.delete_session(&id("b")).expect("delete"));
        store.sync().expect("sync");
        store.sync().expect("sync with nothing pending");
        drop(store);
        let store = DirStore::open(&dir).expect("reopen");
        assert_eq!(load_data(&store, "a"), b"a", "{policy:?}");
        assert!(!store.has_session(&id("b")).expect("has"), "{policy:?}");
        assert_eq!(
            names(&dir).len(),
            3,
            "{policy:?}: .lock, .hashed-names and one session, no temporary files"
        );
    }
}

const CHILD_ENV: &str = "SESSIONLOG_TEST_DIRSTORE_COUNTER";
const MULTIPROCESS_TEST: &str = "processes_increment_one_counter_without_lost_updates";
const CHILDREN: u64 = 4;
const INCREMENTS: u64 = 50;

/// What each child process does: `INCREMENTS` conditional increments.
fn increment_counter(dir: &Path) {
    let store = DirStore::options()
        .sync(SyncPolicy::Never)
        .open(dir)
        .expect("child open");
    let cid = id("counter");
    for _ in 0..INCREMENTS {
        loop {
            let mut c = store
                .load_session(&cid)
                .expect("load counter")
                .unwrap_or_else(|| Session::new(cid.clone(), 0u64.to_le_bytes().to_vec()));
            let n = u64::from_le_bytes(c.data[..8].try_into().expect("8 bytes"));
            c.data = (n + 1).to_le_bytes().to_vec();
            match store.save_session_if_unchanged(&mut c) {
                Ok(()) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("counter save: {e}"),
            }
        }
    }
}

#[test]
fn processes_increment_one_counter_without_lost_updates() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        increment_counter(Path::new(&dir));
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("shared");
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", MULTIPROCESS_TEST, "--nocapture"])
                .env(CHILD_ENV, &dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn child test process")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("wait for child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "child ran the test: {stdout}");
    }
    let store = DirStore::open(&dir).expect("open");
    let c = store
        .load_session(&id("counter"))
        .expect("load")
        .expect("present");
    let n = u64::from_le_bytes(c.data[..8].try_into().expect("8 bytes"));
    assert_eq!(n, CHILDREN * INCREMENTS, "no lost update");
    assert_eq!(c.version(), CHILDREN * INCREMENTS);
    assert_eq!(
        names(&dir).len(),
        3,
        ".lock, .hashed-names and the counter only"
    );
}

/// Under `SyncPolicy::Interval` a write is made durable by the background
/// thread even when no further write comes (bounded wait on an observable
/// state, no fixed sleep).
#[test]
fn interval_policy_syncs_without_another_write() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store = DirStore::options()
        .sync(SyncPolicy::Interval(std::time::Duration::from_millis(20)))
        .open(tmp.path().join("s"))
        .expect("open");
    let mut s = Session::new(SessionId::new("lazy").expect("id"), b"x".to_vec());
    store.save_session(&mut s).expect("save");
    assert!(
        store.has_unsynced_writes(),
        "nothing synced inline under Interval"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.has_unsynced_writes() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background thread never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let never = DirStore::options()
        .sync(SyncPolicy::Never)
        .open(tmp.path().join("n"))
        .expect("open");
    never.save_session(&mut s).expect("save");
    assert!(never.has_unsynced_writes());
    never.sync().expect("sync");
    assert!(!never.has_unsynced_writes());
}

/// Turns the store's file of session `name` back into what an older
/// version wrote: named `s-<base32 of the id>`, and no `.hashed-names`.
fn make_legacy(dir: &Path, name: &str) -> PathBuf {
    let legacy = dir.join(format!("s-{}", common::base32(name.as_bytes())));
    fs::rename(dir.join(digest_name(name)), &legacy).expect("rename to the old name");
    let _ = fs::remove_file(dir.join(".hashed-names"));
    legacy
}

#[test]
fn a_store_of_old_names_is_renamed_once_at_open_and_reads_as_before() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("old");
    {
        let store = DirStore::open(&dir).expect("open");
        for name in ["alice", "bob", "carol"] {
            save_new(&store, name, name.as_bytes());
        }
        // bob was saved twice: version 2 must survive the move
        let mut bob = store.load_session(&id("bob")).expect("load").expect("bob");
        store.save_session(&mut bob).expect("save");
    }
    let old: Vec<PathBuf> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| make_legacy(&dir, n))
        .collect();
    // A crash part way through an earlier migration: carol is renamed
    // already, and alice also exists under both names (the digest's copy
    // written later wins).
    fs::rename(&old[2], dir.join(digest_name("carol"))).expect("half done");
    fs::copy(&old[0], dir.join(digest_name("alice"))).expect("both names");
    fs::set_permissions(
        dir.join(digest_name("alice")),
        fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");

    let store = DirStore::open(&dir).expect("reopen migrates");
    let expected: BTreeSet<String> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| digest_name(n))
        .chain([".lock".to_owned(), ".hashed-names".to_owned()])
        .collect();
    assert_eq!(names(&dir), expected, "no old name is left");
    for name in ["alice", "bob", "carol"] {
        assert_eq!(load_data(&store, name), name.as_bytes());
    }
    let bob = store.load_session(&id("bob")).expect("load").expect("bob");
    assert_eq!(bob.version(), 2, "the file moved as it was");
    let listed: BTreeSet<SessionId> = store
        .iter_sessions()
        .expect("iter")
        .map(|r| r.expect("ok").id)
        .collect();
    assert_eq!(
        listed,
        ["alice", "bob", "carol"].iter().map(|n| id(n)).collect(),
        "iter_sessions gives the ids the files hold"
    );

    // A file an older process wrote after the migration: the next open
    // does not list the directory again, but setup (and expiry) move it.
    drop(store);
    let straggler = dir.join(format!("s-{}", common::base32(b"dave")));
    fs::copy(dir.join(digest_name("bob")), &straggler).expect("copy");
    fs::set_permissions(&straggler, fs::Permissions::from_mode(0o600)).expect("chmod");
    let store = DirStore::open(&dir).expect("reopen");
    assert!(straggler.exists(), "the marker spares every open a listing");
    store.setup().expect("setup");
    assert!(!straggler.exists());
    assert!(
        matches!(store.load_session(&id("dave")), Err(Error::Corrupt { .. })),
        "bob's file under dave's name is not dave's session"
    );
}

#[test]
fn a_directory_that_grants_others_any_access_is_refused_unless_opted_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("s");
    DirStore::open(&dir).expect("create").sync().expect("sync");
    for mode in [0o755, 0o750, 0o705, 0o701, 0o710] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
        match DirStore::open(&dir) {
            Err(e @ Error::Unsafe { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("{mode:04o}"))
                        && msg.contains("allow_others_to_read_directory(true)")
                        && msg.contains("chmod 700"),
                    "{msg}"
                );
            }
            other => panic!("mode {mode:o}: expected Error::Unsafe, got {other:?}"),
        }
        DirStore::options()
            .allow_others_to_read_directory(true)
            .open(&dir)
            .expect("opted in");
    }
    for mode in [0o775, 0o757] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod");
        let r = DirStore::options()
            .allow_others_to_read_directory(true)
            .open(&dir);
        assert!(
            matches!(&r, Err(Error::Unsafe { reason, .. }) if reason.contains("allow_others_to_write_directory(true)")),
            "{mode:o}: {r:?}"
        );
        DirStore::options()
            .allow_others_to_write_directory(true)
            .open(&dir)
            .expect("writing implies reading");
    }
}

/// The modification time of every session file under `dir`, by name.
fn modification_times(dir: &Path) -> std::collections::BTreeMap<String, SystemTime> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with("h-"))
        .map(|n| {
            let t = fs::metadata(dir.join(&n))
                .and_then(|m| m.modified())
                .expect("modification time");
            (n, t)
        })
        .collect()
}

/// One owner's sessions, newest first, as their ids.
fn ids_of(store: &DirStore, owner: &sessionlog::Owner) -> Vec<String> {
    store
        .sessions_of(owner)
        .expect("sessions of the owner")
        .into_iter()
        .map(|s| s.id.as_str().to_owned())
        .collect()
}

/// Logins saved in one millisecond are told apart by the files'
/// modification times, to the nanosecond; a backup and a restore keep
/// them, so the owner's newest login is still the newest afterwards (the
/// one an owner limit keeps).
#[test]
fn backup_and_restore_keep_the_order_of_logins_made_in_one_millisecond() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = sessionlog::ManualClock::fixed();
    let open_at = |dir: &Path| {
        DirStore::options()
            .clock(clock.clone())
            .open(dir)
            .expect("open")
    };
    let store = open_at(&tmp.path().join("sessions"));
    store.setup().expect("setup");
    let owner = sessionlog::Owner::new("alice").expect("owner");
    for i in 0..8 {
        let mut s = Session::new(id(&format!("login{i}")), vec![i]);
        s.owner = Some(owner.clone());
        store.save_session(&mut s).expect("save");
    }
    let listed = ids_of(&store, &owner);
    let newest_first: Vec<String> = (0..8)
        .rev()
        .map(|i| id(&format!("login{i}")).as_str().to_owned())
        .collect();
    assert_eq!(
        listed, newest_first,
        "saved in one millisecond, newest first"
    );
    let times = modification_times(store.path());
    assert_eq!(times.len(), 8);

    let backup = tmp.path().join("backup");
    store.backup_to(&backup, false).expect("backup");
    assert_eq!(modification_times(&backup), times, "the backup's files");
    drop(store);

    let restored = tmp.path().join("restored");
    DirStore::restore(&backup, &restored).expect("restore");
    assert_eq!(modification_times(&restored), times, "the restored files");
    assert_eq!(ids_of(&open_at(&restored), &owner), newest_first);
}
