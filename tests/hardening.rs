//! Guards a store against the attacks and faults of issue 12, each as it
//! was performed against the old code: another name for the store's file
//! (a symbolic or hard link), files planted beside it under the names it
//! uses, a directory other users can write, a lock file removed under a
//! running store, a stopped lock holder, a background compaction that
//! keeps failing, a log truncated under the map, crafted sizes and
//! versions, and root doing maintenance on another user's store; and
//! (issue 25) a log replaced by name during a compaction, and on a
//! DirStore: uid 65534 listing a 0755 store directory for cookies,
//! planting a store directory where root will open one, and swapping the
//! directory for a symbolic link under root's maintenance. The threat
//! model is DESIGN.md §14; root's side of issue 25 for a LogStore is in
//! `tests/hardening_root.rs`.
//!
//! Some tests need root (to act as another user, or to own files as one);
//! CI runs as root. Elsewhere they are skipped, each with a line on stderr
//! that says so (tests/common/root.rs).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionlog::internals::format::{self, H_COMMITTED};
use sessionlog::internals::hook::{IoEvent, IoHook};
use sessionlog::{DirStore, Error, LogOptions, LogStore, Session, SessionStore, SyncPolicy};

mod common;
use common::id;

fn opts() -> LogOptions {
    LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
}

/// A private directory (mode 0700) and the store path in it.
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("real.db");
    (dir, path)
}

fn save(store: &LogStore, name: &str, data: &[u8]) {
    store
        .save_session(&mut Session::new(id(name), data.to_vec()))
        .expect("save");
}

fn refused(r: sessionlog::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Unsafe { .. }) => e.to_string(),
        other => panic!("expected Error::Unsafe, got {other:?}"),
    }
}

// ---- 1. one store, one lock, whatever the name ----

#[test]
fn a_symlink_to_the_store_shares_its_lock_and_compaction_keeps_the_link() {
    let (dir, real) = fixture();
    let link = dir.path().join("link.db");
    let a = opts().open(&real).expect("open real");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let b = opts()
        .lock_timeout(Duration::from_millis(200))
        .open(&link)
        .expect("open link");
    assert_eq!(a.path(), b.path(), "both handles name the real file");
    assert!(
        !dir.path().join("link.db.lock").exists(),
        "no second lock file beside the link"
    );
    // The two handles exclude each other: while `a` holds the write lock,
    // `b` waits for it, up to its timeout.
    let waited = a
        .with_write_lock(|| b.save_session(&mut Session::new(id("x"), b"x".to_vec())))
        .expect("lock");
    assert!(matches!(waited, Err(Error::Busy { .. })), "{waited:?}");
    save(&b, "via-link", b"1");
    b.compact().expect("compact through the link");
    assert!(
        fs::symlink_metadata(&link)
            .expect("stat")
            .file_type()
            .is_symlink(),
        "compaction replaced the real file, not the link"
    );
    assert!(a.has_session(&id("via-link")).expect("has"));
}

#[test]
fn a_second_hard_link_to_the_log_is_refused() {
    let (dir, real) = fixture();
    save(&opts().open(&real).expect("open"), "s", b"1");
    let other = dir.path().join("other.db");
    fs::hard_link(&real, &other).expect("hard link");
    let why = refused(opts().open(&other));
    assert!(why.contains("2 hard links"), "{why}");
    refused(opts().open(&real));
    fs::remove_file(&other).expect("unlink");
    assert!(
        opts()
            .open(&real)
            .expect("one link again")
            .has_session(&id("s"))
            .expect("has")
    );
}

// ---- 2. no trusted sibling by predictable name ----

#[test]
fn a_symlink_planted_as_the_lock_file_is_refused_and_its_target_untouched() {
    let (dir, real) = fixture();
    let victim = dir.path().join("victim");
    fs::write(&victim, b"someone else's file").expect("write");
    std::os::unix::fs::symlink(&victim, dir.path().join("real.db.lock")).expect("symlink");
    let why = refused(opts().open(&real));
    assert!(why.contains("symbolic link"), "{why}");
    assert_eq!(fs::read(&victim).expect("read"), b"someone else's file");
    assert!(!real.exists(), "no store was created");
}

#[test]
fn a_symlink_at_the_compaction_file_is_refused_not_looped_on() {
    let (dir, real) = fixture();
    let store = opts().open(&real).expect("open");
    save(&store, "s", b"1");
    std::os::unix::fs::symlink("/dev/null", dir.path().join("real.db.compact")).expect("symlink");
    refused(store.compact());
    assert!(store.has_session(&id("s")).expect("the store goes on"));
}

#[test]
fn a_hard_link_named_like_the_compaction_file_never_truncates_the_live_log() {
    let (dir, real) = fixture();
    let store = opts().open(&real).expect("open");
    save(&store, "s", &[7u8; 5000]);
    let before = fs::read(&real).expect("read");
    fs::hard_link(&real, dir.path().join("real.db.compact")).expect("hard link");
    refused(store.compact());
    assert_eq!(
        fs::read(&real).expect("read"),
        before,
        "the log is untouched"
    );
    let s = store.load_session(&id("s")).expect("load").expect("live");
    assert_eq!(s.data, vec![7u8; 5000]);
}

#[test]
fn a_pre_created_compaction_file_others_can_read_or_own_is_refused() {
    let (dir, real) = fixture();
    let store = opts().open(&real).expect("open");
    save(&store, "s", b"secret");
    let planted = dir.path().join("real.db.compact");
    fs::write(&planted, b"").expect("plant");
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).expect("chmod");
    let why = refused(store.compact());
    assert!(why.contains("0666"), "{why}");
    if common::root::is_root() {
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown");
        let why = refused(store.compact());
        assert!(why.contains("uid 65534"), "{why}");
    }
    let m = fs::metadata(&real).expect("stat");
    assert_eq!(
        (m.uid(), m.mode() & 0o777),
        (fs::metadata(dir.path()).expect("stat").uid(), 0o600)
    );
    fs::remove_file(&planted).expect("remove");
    store
        .compact()
        .expect("compacts once the planted file is gone");
}

#[test]
fn a_store_file_other_users_can_read_is_refused() {
    let (_dir, real) = fixture();
    save(&opts().open(&real).expect("open"), "s", b"1");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).expect("chmod");
    let why = refused(opts().open(&real));
    assert!(why.contains("0644") && why.contains("chmod 600"), "{why}");
}

// ---- 3. a directory that others can write is refused ----

#[test]
fn a_directory_others_can_write_is_refused_unless_the_caller_opts_in() {
    let (dir, real) = fixture();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let why = refused(opts().open(&real));
    assert!(
        why.contains(&dir.path().display().to_string()) && why.contains("0777"),
        "{why}"
    );
    assert!(!real.exists(), "nothing created");
    opts()
        .allow_others_to_write_directory(true)
        .open(&real)
        .expect("opted in");

    let sessions = dir.path().join("sessions");
    fs::create_dir(&sessions).expect("mkdir");
    fs::set_permissions(&sessions, fs::Permissions::from_mode(0o777)).expect("chmod");
    fs::write(sessions.join("s-mfrggzdf"), b"a planted session file").expect("plant");
    let why = refused(DirStore::open(&sessions));
    assert!(why.contains("0777"), "{why}");
    DirStore::options()
        .allow_others_to_write_directory(true)
        .open(&sessions)
        .expect("opted in");
}

// ---- 5. a deleted lock file does not end mutual exclusion silently ----

#[test]
fn a_removed_lock_file_poisons_the_handle_that_still_uses_it() {
    let (dir, real) = fixture();
    let a = opts().open(&real).expect("open");
    save(&a, "before", b"1");
    fs::remove_file(dir.path().join("real.db.lock")).expect("a cleaner removes the lock");
    let b = opts().open(&real).expect("a new opener makes a new lock");
    save(&b, "b", b"1");
    // `a` checks the lock file's identity within 256 writes.
    let mut refused_at = None;
    for i in 0..300 {
        match a.save_session(&mut Session::new(id(&format!("a{i}")), b"x".to_vec())) {
            Ok(()) => {}
            Err(e @ Error::Poisoned { .. }) => {
                assert!(e.to_string().contains("lock file"), "{e}");
                refused_at = Some(i);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused_at.is_some(), "writes through a stale lock went on");
    assert!(b.has_session(&id("before")).expect("has"));
}

// ---- 7. a stopped lock holder does not freeze every process ----

#[test]
fn a_stopped_lock_holder_gives_busy_and_its_death_frees_the_lock() {
    if common::child::role().as_deref() == Some("holder") {
        let store = opts()
            .open(std::env::var("STORE").expect("STORE"))
            .expect("open");
        store
            .with_write_lock(|| {
                println!("HOLDING");
                // Holds the lock until the parent stops and kills it.
                loop {
                    std::thread::park();
                }
            })
            .expect("lock");
        return;
    }
    let (_dir, real) = fixture();
    let store = opts()
        .lock_timeout(Duration::from_millis(300))
        .open(&real)
        .expect("open");
    save(&store, "s", b"1");
    let mut child = common::child::spawn(
        "a_stopped_lock_holder_gives_busy_and_its_death_frees_the_lock",
        "holder",
        &[("STORE", real.display().to_string())],
    );
    let mut out = common::child::Reader::new(&mut child);
    assert_eq!(out.next().as_deref(), Some("HOLDING"));
    // SAFETY: signals to the child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGSTOP) };
    let err = store
        .save_session(&mut Session::new(id("t"), b"2".to_vec()))
        .expect_err("the lock is held by a stopped process");
    assert!(
        matches!(&err, Error::Busy { .. }) && err.to_string().contains("real.db"),
        "{err}"
    );
    common::child::kill9(&mut child);
    save(&store, "t", b"2");
    assert!(store.has_session(&id("t")).expect("has"));
}

// ---- 8. background compaction failures are visible and bounded ----

/// Fails every write to the compaction's temporary file with ENOSPC and
/// notes when each compaction attempt began.
#[derive(Debug, Default)]
struct FullDisk {
    attempts: parking_lot_free::Attempts,
}

mod parking_lot_free {
    use std::sync::Mutex;
    use std::time::Instant;
    /// When each failed attempt happened.
    #[derive(Debug, Default)]
    pub struct Attempts(pub Mutex<Vec<Instant>>);
}

impl IoHook for FullDisk {
    fn before(&self, event: &IoEvent<'_>) -> std::io::Result<()> {
        if let IoEvent::Write { path, offset, .. } = event
            && path.to_string_lossy().ends_with(".compact")
        {
            // An attempt's first write, the new file's placeholder header,
            // fails: one write at offset 0 per attempt.
            if *offset == 0 {
                self.attempts.0.lock().expect("lock").push(Instant::now());
            }
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

#[test]
fn failing_background_compactions_are_recorded_and_retried_later_and_later() {
    let (_dir, real) = fixture();
    let hook = Arc::new(FullDisk::default());
    let every = Duration::from_millis(10);
    let store = LogStore::options()
        .sync(SyncPolicy::Never)
        .compact_min_bytes(16 << 10)
        .compact_check_interval(every)
        .io_hook(hook.clone())
        .open(&real)
        .expect("open");
    for round in 0..20 {
        for i in 0..10 {
            save(&store, &format!("g{i}"), &[round as u8; 1000]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while hook.attempts.0.lock().expect("lock").len() < 5 {
        assert!(Instant::now() < deadline, "fewer than 5 attempts in 60 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let err = store
        .stats()
        .expect("stats")
        .last_background_error
        .expect("the failure is recorded");
    assert!(err.message.contains("compaction"), "{}", err.message);
    let attempts = hook.attempts.0.lock().expect("lock").clone();
    // After the n-th failure the thread waits at least every * 2^n.
    for (n, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= every * (1 << (n + 1)) - Duration::from_millis(2),
            "attempt {} came {gap:?} after the one before",
            n + 2
        );
    }
    drop(store);
    let log = fs::metadata(&real).expect("stat").len();
    assert!(
        log < 16 << 20,
        "the log did not grow with the retries: {log}"
    );
}

// ---- 9. a file truncated under the map ----

#[test]
fn a_log_truncated_under_the_map_poisons_reads_instead_of_crashing() {
    let (_dir, real) = fixture();
    let store = opts().open(&real).expect("open");
    save(&store, "s", &[1u8; 20_000]);
    fs::OpenOptions::new()
        .write(true)
        .open(&real)
        .expect("open")
        .set_len(format::HEADER_SIZE)
        .expect("truncate");
    let err = store.stats().expect_err("the truncation is found");
    assert!(
        matches!(&err, Error::Poisoned { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );
    assert!(matches!(
        store.load_session(&id("s")),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        store.save_session(&mut Session::new(id("t"), b"x".to_vec())),
        Err(Error::Poisoned { .. })
    ));
}

// ---- 10. crafted files and values cannot exhaust memory or wrap ----

#[test]
fn a_sparse_terabyte_with_a_forged_committed_word_opens_without_a_huge_allocation() {
    let (_dir, real) = fixture();
    save(&opts().open(&real).expect("open"), "s", b"1");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&real)
        .expect("open");
    f.set_len(1 << 40).expect("a sparse terabyte");
    let word = format::encode_offset((1 << 40) - 4096);
    std::os::unix::fs::FileExt::write_all_at(&f, &word.to_le_bytes(), H_COMMITTED as u64)
        .expect("forge");
    drop(f);
    // Before the fix this aborted the process with a 32 GiB allocation.
    match opts().open(&real) {
        Ok(store) => {
            let _ = store.load_session(&id("s"));
        }
        Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
    }
}

#[test]
fn a_session_at_the_largest_version_is_refused_not_wrapped() {
    let (_dir, real) = fixture();
    let store = opts().open(&real).expect("open");
    let s = Session::restore(
        id("max"),
        b"x".to_vec(),
        None,
        std::time::SystemTime::now(),
        u64::MAX,
    );
    assert!(matches!(
        store.restore_session(&s),
        Err(Error::InvalidOption(_))
    ));
    let s = Session::restore(
        id("max"),
        b"x".to_vec(),
        None,
        std::time::SystemTime::now(),
        u64::MAX - 1,
    );
    store
        .restore_session(&s)
        .expect("the largest restorable version");
    let mut next = Session::new(id("max"), b"y".to_vec());
    store.save_session(&mut next).expect("one more save");
    assert_eq!(next.version(), u64::MAX);
    let err = store
        .save_session(&mut Session::new(id("max"), b"z".to_vec()))
        .expect_err("no version after the largest");
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    let stored = store.load_session(&id("max")).expect("load").expect("live");
    assert_eq!(
        (stored.version(), stored.data),
        (u64::MAX, b"y".to_vec()),
        "nothing was saved as version 0"
    );
}

// ---- 6. maintenance as root keeps the store usable by its owner ----

#[test]
fn roots_maintenance_leaves_the_store_its_owners() {
    let role = common::child::role();
    if let Some(role) = role.as_deref() {
        // SAFETY: plain system calls on this child's own credentials.
        unsafe {
            assert_eq!(libc::setgid(65534), 0, "setgid");
            assert_eq!(libc::setuid(65534), 0, "setuid");
        }
        let store = opts()
            .open(std::env::var("STORE").expect("STORE"))
            .expect("the owner opens the store");
        match role {
            "create" => save(&store, "owners", b"1"),
            _ => assert!(store.has_session(&id("roots")).expect("has")),
        }
        println!("DONE");
        return;
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let (dir, _) = fixture();
    let home = dir.path().join("app");
    fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
    let real = home.join("sessions.db");
    let run = |role: &str| {
        let mut c = common::child::spawn(
            "roots_maintenance_leaves_the_store_its_owners",
            role,
            &[("STORE", real.display().to_string())],
        );
        let mut out = common::child::Reader::new(&mut c);
        assert_eq!(out.next().as_deref(), Some("DONE"), "child {role}");
        assert!(c.wait().expect("wait").success());
    };
    run("create");
    {
        let store = opts()
            .maintain_as_owner(true)
            .open(&real)
            .expect("root opens the owner's store, opted in");
        save(&store, "roots", b"1");
        store.compact().expect("root compacts");
    }
    for p in [real.clone(), home.join("sessions.db.lock")] {
        let m = fs::metadata(&p).expect("stat");
        assert_eq!(
            (m.uid(), m.mode() & 0o777),
            (65534, 0o600),
            "{}",
            p.display()
        );
    }
    run("check");
}

// ---- 7. a compaction renames only over the file it read (issue 25) ----

/// Replaces the log by name (with a file the compaction never read) while
/// the compaction writes its hint, once.
#[derive(Debug)]
struct ReplaceLog {
    planted: PathBuf,
    log: PathBuf,
    done: std::sync::atomic::AtomicBool,
}

impl IoHook for ReplaceLog {
    fn before(&self, event: &IoEvent<'_>) -> std::io::Result<()> {
        if let IoEvent::Rename { to, .. } = event
            && to.to_string_lossy().ends_with(".hint")
            && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            fs::rename(&self.planted, &self.log)?;
        }
        Ok(())
    }
}

#[test]
fn a_compaction_does_not_rename_over_a_log_replaced_meanwhile() {
    let (dir, real) = fixture();
    {
        let store = opts().open(&real).expect("open");
        save(&store, "s", b"1");
    }
    let planted = dir.path().join("planted");
    fs::copy(&real, &planted).expect("copy");
    let planted_ino = fs::metadata(&planted).expect("stat").ino();
    let hook = Arc::new(ReplaceLog {
        planted,
        log: real.clone(),
        done: Default::default(),
    });
    let store = opts().io_hook(hook.clone()).open(&real).expect("open");
    save(&store, "t", b"2");
    let err = store.compact().expect_err("the log was replaced");
    assert!(
        matches!(&err, Error::Busy { what, .. } if what.contains("log was replaced")),
        "{err:?}"
    );
    assert!(
        hook.done.load(std::sync::atomic::Ordering::SeqCst),
        "the log was replaced during the compaction"
    );
    assert_eq!(
        fs::metadata(&real).expect("stat").ino(),
        planted_ino,
        "the file at the log's name is the one put there, not the compaction's"
    );
    assert!(
        !dir.path().join("real.db.compact").exists(),
        "no temporary file left"
    );
}

// ---- 11. DirStore: a listing is no credential, a planted directory is
// refused, root's maintenance stays in the real directory (issue 25) ----

/// Makes this child process uid/gid 65534.
fn become_nobody() {
    // SAFETY: plain system calls on this child's own credentials.
    unsafe {
        assert_eq!(libc::setgid(65534), 0, "setgid");
        assert_eq!(libc::setuid(65534), 0, "setuid");
    }
}

/// Runs `test`'s child in `role` as uid 65534 with `vars`; the protocol
/// lines it printed before `DONE`.
fn run_as_nobody(test: &str, role: &str, vars: &[(&str, String)]) -> Vec<String> {
    let mut c = common::child::spawn(test, role, vars);
    let mut out = common::child::Reader::new(&mut c);
    let mut lines = Vec::new();
    loop {
        match out.next() {
            Some(l) if l == "DONE" => break,
            Some(l) => lines.push(l),
            None => panic!("child {role} ended before DONE: {lines:?}"),
        }
    }
    assert!(c.wait().expect("wait").success(), "child {role}");
    lines
}

/// A temporary directory that uid 65534 may traverse but not list.
fn traversable_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
    dir
}

/// The attack of issue 25, item 2: a DirStore directory made with the
/// default umask (0755) let every local user list it and decode a name
/// into a session id. Now such a directory is refused unless the caller
/// opts in, and even then uid 65534's listing gives nothing that loads a
/// session: the names are digests, the files unreadable.
#[test]
fn a_listing_of_the_store_directory_gives_no_cookie() {
    const TEST: &str = "a_listing_of_the_store_directory_gives_no_cookie";
    if common::child::role().is_some() {
        become_nobody();
        let dir = PathBuf::from(std::env::var("STORE").expect("STORE"));
        for e in fs::read_dir(&dir).expect("uid 65534 lists the 0755 directory") {
            let name = e.expect("entry").file_name().into_string().expect("utf-8");
            match fs::read(dir.join(&name)) {
                Ok(bytes) => println!("READ {name} {}", bytes.len()),
                Err(_) => println!("NAME {name}"),
            }
        }
        println!("DONE");
        return;
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let tmp = traversable_fixture();
    let dir = tmp.path().join("sessions");
    drop(DirStore::open(&dir).expect("create"));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
    let why = refused(DirStore::open(&dir));
    assert!(
        why.contains("0755") && why.contains("allow_others_to_read_directory(true)"),
        "{why}"
    );
    let store = DirStore::options()
        .allow_others_to_read_directory(true)
        .open(&dir)
        .expect("opted in");
    let victim = sessionlog::SessionId::generate();
    store
        .save_session(&mut Session::new(victim.clone(), b"role=admin".to_vec()))
        .expect("save");

    let seen = run_as_nobody(TEST, "list", &[("STORE", dir.display().to_string())]);
    let names: Vec<&str> = seen
        .iter()
        .map(|l| {
            l.strip_prefix("NAME ")
                .unwrap_or_else(|| panic!("uid 65534 read a file: {l}"))
        })
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("h-")),
        "the session's file was listed: {names:?}"
    );
    let clear = common::base32(victim.as_str().as_bytes());
    for name in &names {
        assert!(!name.contains(&clear), "{name} holds the id");
        // every way the old names were turned into a cookie
        let suffix = name.get(2..).unwrap_or_default();
        let decoded = common::un_base32(suffix).and_then(|b| String::from_utf8(b).ok());
        for cookie in [Some(name.to_string()), Some(suffix.to_owned()), decoded]
            .into_iter()
            .flatten()
        {
            if let Ok(cookie) = sessionlog::SessionId::new(cookie) {
                assert_eq!(
                    store.load_session(&cookie).expect("load"),
                    None,
                    "a name from the listing logs in"
                );
            }
        }
    }
    assert!(
        store.has_session(&victim).expect("has"),
        "the victim's own id still works"
    );
}

/// The attack of issue 25, item 3, on a DirStore: uid 65534 makes the
/// store's directory first, at the path a root process will use under a
/// shared sticky directory, with a session of its choosing in it. Root
/// used to adopt it (serving the planted session, giving every new file
/// to uid 65534); now it refuses unless it states maintenance by name.
#[test]
fn a_store_directory_another_user_planted_is_refused() {
    const TEST: &str = "a_store_directory_another_user_planted_is_refused";
    if common::child::role().is_some() {
        become_nobody();
        let store = DirStore::open(std::env::var("STORE").expect("STORE")).expect("nobody's store");
        store
            .save_session(&mut Session::new(
                id("planted-session"),
                b"role=admin".to_vec(),
            ))
            .expect("plant");
        println!("DONE");
        return;
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let tmp = traversable_fixture();
    let shared = tmp.path().join("tmp");
    fs::create_dir(&shared).expect("mkdir");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let path = shared.join("app-sessions");
    run_as_nobody(TEST, "plant", &[("STORE", path.display().to_string())]);

    let why = refused(DirStore::open(&path));
    assert!(
        why.contains("uid 65534") && why.contains("maintain_as_owner(true)"),
        "{why}"
    );
    // Stated maintenance works on the owner's terms: files stay theirs.
    let store = DirStore::options()
        .maintain_as_owner(true)
        .open(&path)
        .expect("maintenance by name");
    assert_eq!(store.owner_uid(), 65534);
    store
        .save_session(&mut Session::new(id("roots"), b"1".to_vec()))
        .expect("save");
    for e in fs::read_dir(&path).expect("list") {
        let e = e.expect("entry");
        assert_eq!(
            e.metadata().expect("stat").uid(),
            65534,
            "{:?}",
            e.file_name()
        );
    }
}

/// The attack of issue 25, item 1, on a DirStore: while root maintains
/// uid 65534's store, uid 65534 moves the store's directory away and puts
/// a symbolic link to a root-only directory in its place. Root used to
/// follow the path again for every file, creating its temporary file
/// there, giving it to uid 65534 and renaming it over root's file. Now
/// every operation is relative to the directory root opened: the root-only
/// directory is untouched and the work lands in the moved directory.
#[test]
fn roots_dir_maintenance_cannot_be_redirected_by_swapping_the_directory() {
    const TEST: &str = "roots_dir_maintenance_cannot_be_redirected_by_swapping_the_directory";
    if let Some(role) = common::child::role() {
        become_nobody();
        let store = PathBuf::from(std::env::var("STORE").expect("STORE"));
        match role.as_str() {
            "create" => {
                let s = DirStore::open(&store).expect("the owner's store");
                s.save_session(&mut Session::new(id("owners"), b"1".to_vec()))
                    .expect("save");
            }
            _ => {
                let target = std::env::var("TARGET").expect("TARGET");
                fs::rename(&store, store.with_file_name("moved")).expect("move the directory");
                std::os::unix::fs::symlink(target, &store).expect("plant the link");
            }
        }
        println!("DONE");
        return;
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let tmp = traversable_fixture();
    let home = tmp.path().join("home");
    fs::create_dir(&home).expect("mkdir");
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).expect("chown");
    let store_path = home.join("sessions");
    let vars = |_: ()| {
        vec![
            ("STORE", store_path.display().to_string()),
            ("TARGET", tmp.path().join("root-only").display().to_string()),
        ]
    };
    run_as_nobody(TEST, "create", &vars(()));

    // A root-only directory holding a root-owned file named like the
    // session file root is about to write.
    let root_only = tmp.path().join("root-only");
    fs::create_dir(&root_only).expect("mkdir");
    fs::set_permissions(&root_only, fs::Permissions::from_mode(0o700)).expect("chmod");
    let store = DirStore::options()
        .maintain_as_owner(true)
        .sync(SyncPolicy::Always)
        .open(&store_path)
        .expect("root maintains the owner's store");
    let listing = || -> std::collections::BTreeSet<String> {
        fs::read_dir(&store_path)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect()
    };
    let before = listing();
    let mut roots = Session::new(id("roots"), b"2".to_vec());
    store.save_session(&mut roots).expect("save");
    let target_name = listing()
        .difference(&before)
        .next()
        .cloned()
        .expect("the session's file");
    let victim = root_only.join(&target_name);
    fs::write(&victim, b"root's own file").expect("write");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).expect("chmod");

    run_as_nobody(TEST, "swap", &vars(()));
    assert!(
        fs::symlink_metadata(&store_path)
            .expect("lstat")
            .file_type()
            .is_symlink(),
        "the swap happened"
    );

    // Root's maintenance after the swap: a save of every session, expiry,
    // setup (renames and temporary-file cleanup).
    for name in ["roots", "owners"] {
        store
            .save_session(&mut Session::new(id(name), b"3".to_vec()))
            .expect("save");
    }
    store
        .delete_old_sessions(Duration::from_secs(3600))
        .expect("expire");
    store.setup().expect("setup");

    let meta = fs::metadata(&victim).expect("stat");
    assert_eq!(fs::read(&victim).expect("read"), b"root's own file");
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    let left: Vec<_> = fs::read_dir(&root_only)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        [std::ffi::OsString::from(&target_name)],
        "nothing else created there"
    );
    let moved = home.join("moved");
    let m = fs::metadata(moved.join(&target_name)).expect("the save landed in the real directory");
    assert_eq!((m.uid(), m.mode() & 0o777), (65534, 0o600));
    let reopened = DirStore::options()
        .maintain_as_owner(true)
        .open(&moved)
        .expect("reopen");
    assert_eq!(
        reopened
            .load_session(&id("roots"))
            .expect("load")
            .expect("live")
            .data,
        b"3"
    );
}
