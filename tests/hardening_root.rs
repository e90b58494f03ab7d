//! Guards root against the attacks of issue 25 on the log store, each
//! performed for real by uid 65534 (nobody) in a child process:
//!
//! - root's maintenance of a user's store redirected: the user holds the
//!   compaction's lock so that root's compaction, once root has opened the
//!   store, cannot go on (it polls the lock), swaps the store's directory for
//!   a link to a root-only directory holding a root-owned file named like
//!   the log, and lets go; root's compaction (the library's, and
//!   `sessionlog compact`) must create, rename and chown nothing there;
//! - a store planted by another user where root opens one (under a shared
//!   sticky directory, or as a directory of the user's own) must be
//!   refused with `Error::Unsafe`, creating or giving away nothing, unless
//!   root opts in to maintenance by name (`maintain_as_owner`).
//!
//! The threat model is DESIGN.md §14. Every test here needs root (to act
//! as another user); CI runs as root. Elsewhere each is skipped with a line
//! on stderr that says so (tests/common/root.rs).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sessionlog::{Error, LogOptions, LogStore, Session, SessionStore, SyncPolicy};

mod common;
use common::id;

const NOBODY: u32 = 65534;

fn opts() -> LogOptions {
    LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
}

/// Turns this child process into uid and gid 65534 for good.
fn become_nobody() {
    // SAFETY: plain system calls on this child's own credentials.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setgid(NOBODY), 0, "setgid");
        assert_eq!(libc::setuid(NOBODY), 0, "setuid");
    }
}

fn mkdir(path: &Path, mode: u32, owner: u32) {
    fs::create_dir(path).expect("mkdir");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    std::os::unix::fs::chown(path, Some(owner), Some(owner)).expect("chown");
}

/// Every entry of `dir`: name -> (inode, uid, mode, contents of a file).
fn listing(dir: &Path) -> BTreeMap<String, (u64, u32, u32, Vec<u8>)> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("entry");
            let m = fs::symlink_metadata(e.path()).expect("stat");
            let data = if m.is_file() {
                fs::read(e.path()).expect("read")
            } else {
                Vec::new()
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.uid(), m.mode(), data),
            )
        })
        .collect()
}

/// Waits until a process other than `except` holds the directory `dir`
/// open (a link of /proc/PID/fd): root's store, whose handle keeps the
/// directory's descriptor from its open on. Whatever root does with its
/// store from then on (a compaction waits for the `.compact` lock the
/// attacker holds, polling until `lock_timeout`) comes after this point.
fn wait_for_directory_holder(dir: &Path, except: u32) {
    let dir = fs::canonicalize(dir).expect("canonicalize the store's directory");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let holders = fs::read_dir("/proc").expect("/proc").flatten().filter(|p| {
            p.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| pid != except)
        });
        for p in holders {
            let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
                continue; // the process ended meanwhile
            };
            if fds
                .flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t == dir))
            {
                return;
            }
        }
        assert!(
            Instant::now() < until,
            "no process opened the store's directory"
        );
        std::thread::yield_now();
    }
}

/// The layout of the redirection attack: `base` (root's, 0711) holds
/// `user` (nobody's home, 0700) with the store's directory `user/app`, and
/// `secret` (root's, 0700) with a root-owned 0644 file named like the log.
struct Layout {
    _tmp: tempfile::TempDir,
    user: PathBuf,
    app: PathBuf,
    log: PathBuf,
    secret: PathBuf,
}

const SECRET_DATA: &[u8] = b"root's own file, which must never change owner or content\n";

fn layout() -> Layout {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
    let user = tmp.path().join("user");
    mkdir(&user, 0o700, NOBODY);
    let app = user.join("app");
    mkdir(&app, 0o700, NOBODY);
    let secret = tmp.path().join("secret");
    mkdir(&secret, 0o700, 0);
    let planted = secret.join("sessions.db");
    fs::write(&planted, SECRET_DATA).expect("write");
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o644)).expect("chmod");
    Layout {
        log: app.join("sessions.db"),
        _tmp: tmp,
        user,
        app,
        secret,
    }
}

/// The attacker's part, as uid 65534: holds the flock of
/// `<log>.compact`, says `LOCKED`; on a line from the parent, swaps the
/// store's directory for a link to the root-only directory and lets go of
/// the lock, then says `SWAPPED`.
fn attacker() {
    become_nobody();
    let app = PathBuf::from(std::env::var("APP").expect("APP"));
    let secret = PathBuf::from(std::env::var("SECRET").expect("SECRET"));
    let lock = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(app.join("sessions.db.compact"))
            .expect("open the compaction's file")
    };
    lock.lock().expect("flock");
    println!("LOCKED");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read");
    let mut moved = app.clone().into_os_string();
    moved.push(".real");
    fs::rename(&app, &moved).expect("move the store's directory away");
    std::os::unix::fs::symlink(&secret, &app).expect("link to the root-only directory");
    lock.unlock().expect("unlock");
    println!("SWAPPED");
}

/// Creates nobody's store at `log` with a few sessions, as uid 65534.
fn create_as_nobody(test: &str, log: &Path) {
    let mut c = common::child::spawn(test, "create", &[("STORE", log.display().to_string())]);
    let mut out = common::child::Reader::new(&mut c);
    assert_eq!(out.next().as_deref(), Some("DONE"), "create");
    assert!(c.wait().expect("wait").success());
}

fn create_role() {
    become_nobody();
    let store = opts()
        .allow_others_to_write_directory(true)
        .open(std::env::var("STORE").expect("STORE"))
        .expect("nobody opens its store");
    for i in 0..20 {
        let mut s = Session::new(id(&format!("s{}", i % 5)), vec![b'n'; 200]);
        store.save_session(&mut s).expect("save");
    }
    println!("DONE");
}

/// Runs the attack while `compact` (root's compaction, started in a
/// thread of this process or as another process) waits for the lock;
/// returns what `compact` returned.
fn attack<R: Send>(test: &str, l: &Layout, compact: impl FnOnce() -> R + Send) -> R {
    let mut c = common::child::spawn(
        test,
        "attacker",
        &[
            ("APP", l.app.display().to_string()),
            ("SECRET", l.secret.display().to_string()),
        ],
    );
    let mut out = common::child::Reader::new(&mut c);
    assert_eq!(out.next().as_deref(), Some("LOCKED"));
    let result = std::thread::scope(|s| {
        let root = s.spawn(compact);
        wait_for_directory_holder(&l.app, c.id());
        writeln!(c.stdin.as_mut().expect("stdin"), "SWAP").expect("tell the attacker");
        assert_eq!(out.next().as_deref(), Some("SWAPPED"));
        root.join().expect("root's compaction")
    });
    assert!(c.wait().expect("wait").success(), "attacker");
    assert!(
        fs::symlink_metadata(&l.app)
            .expect("stat")
            .file_type()
            .is_symlink(),
        "the attack took place"
    );
    result
}

/// What the attack must not achieve: anything in the root-only directory
/// but root's file, unchanged; and the store, in its real directory, still
/// nobody's with every session.
fn assert_untouched(l: &Layout, secret_before: &BTreeMap<String, (u64, u32, u32, Vec<u8>)>) {
    assert_eq!(
        &listing(&l.secret),
        secret_before,
        "root created, renamed or gave away nothing in the root-only directory"
    );
    let planted = fs::metadata(l.secret.join("sessions.db")).expect("stat");
    assert_eq!((planted.uid(), planted.mode() & 0o777), (0, 0o644));
    assert_eq!(
        fs::read(l.secret.join("sessions.db")).expect("read"),
        SECRET_DATA
    );
    let real = l.user.join("app.real");
    for (name, (_, uid, mode, _)) in listing(&real) {
        assert_eq!(
            (uid, mode & 0o777),
            (NOBODY, 0o600),
            "{name} stays nobody's, 0600"
        );
    }
}

#[test]
fn roots_compaction_redirected_by_the_owner_creates_nothing_outside_the_store() {
    const TEST: &str = "roots_compaction_redirected_by_the_owner_creates_nothing_outside_the_store";
    match common::child::role().as_deref() {
        Some("create") => return create_role(),
        Some("attacker") => return attacker(),
        _ => {}
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let l = layout();
    create_as_nobody(TEST, &l.log);
    let secret_before = listing(&l.secret);
    let store = opts()
        .maintain_as_owner(true)
        .open(&l.log)
        .expect("root opens nobody's store, opted in");
    store
        .save_session(&mut Session::new(id("roots"), b"r".to_vec()))
        .expect("save");
    let compacted = attack(TEST, &l, || store.compact());
    let stats = compacted.expect("the compaction went on in the store's real directory");
    assert_eq!(stats.kept, 6);
    assert!(store.has_session(&id("roots")).expect("has"));
    drop(store);
    assert_untouched(&l, &secret_before);
    // The store, reopened by its real path, holds what root compacted.
    let reopened = opts()
        .maintain_as_owner(true)
        .open(l.user.join("app.real/sessions.db"))
        .expect("reopen");
    assert!(reopened.has_session(&id("s4")).expect("has"));
}

#[test]
fn roots_background_compaction_and_expiry_work_as_the_owner() {
    const TEST: &str = "roots_background_compaction_and_expiry_work_as_the_owner";
    match common::child::role().as_deref() {
        Some("create") => return create_role(),
        Some("attacker") => return attacker(),
        _ => {}
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let l = layout();
    create_as_nobody(TEST, &l.log);
    let secret_before = listing(&l.secret);
    let store = opts()
        .maintain_as_owner(true)
        .open(&l.log)
        .expect("open, opted in");
    // `delete_old_sessions` is a compaction too; under attack it stays
    // in the store's real directory.
    let dropped = attack(TEST, &l, || {
        store.delete_old_sessions(Duration::from_secs(3600))
    });
    assert_eq!(dropped.expect("expiry ran"), 0);
    drop(store);
    assert_untouched(&l, &secret_before);
    // A background thread works as the owner too: every file it makes is
    // nobody's (the thread switched its own identity).
    let real = l.user.join("app.real/sessions.db");
    let store = LogStore::options()
        .maintain_as_owner(true)
        .compact_min_bytes(1)
        .compact_garbage_ratio(0.01)
        .compact_check_interval(Duration::from_millis(10))
        .open(&real)
        .expect("open with a background thread");
    let generation = store.stats().expect("stats").generation;
    for i in 0..50 {
        store
            .save_session(&mut Session::new(id("again"), vec![i; 100]))
            .expect("save");
    }
    let until = Instant::now() + Duration::from_secs(30);
    while store.stats().expect("stats").generation == generation {
        assert!(
            Instant::now() < until,
            "the background thread never compacted"
        );
        std::thread::yield_now();
    }
    drop(store);
    for (name, (_, uid, mode, _)) in listing(&l.user.join("app.real")) {
        assert_eq!((uid, mode & 0o777), (NOBODY, 0o600), "{name}");
    }
}

#[test]
fn sessionlog_compact_redirected_by_the_owner_creates_nothing_outside_the_store() {
    const TEST: &str =
        "sessionlog_compact_redirected_by_the_owner_creates_nothing_outside_the_store";
    match common::child::role().as_deref() {
        Some("create") => return create_role(),
        Some("attacker") => return attacker(),
        _ => {}
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let bin = cli_binary();
    let l = layout();
    create_as_nobody(TEST, &l.log);
    let secret_before = listing(&l.secret);
    let output = attack(TEST, &l, || {
        std::process::Command::new(&bin)
            .args(["compact".as_ref(), l.log.as_os_str()])
            .output()
            .expect("run sessionlog compact")
    });
    assert!(
        output.status.success(),
        "sessionlog compact: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_untouched(&l, &secret_before);
}

/// The `sessionlog` command, built beside this test binary (the
/// workspace's `cargo test` builds it; `cargo build -p sessionlog-cli`
/// otherwise).
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("sessionlog");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sessionlog-cli`",
        bin.display()
    );
    bin
}

// ---- a store planted where root opens one ----

fn refused(r: sessionlog::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Unsafe { .. }) => e.to_string(),
        other => panic!("expected Error::Unsafe, got {other:?}"),
    }
}

#[test]
fn a_store_planted_by_another_user_is_refused_by_root_without_the_opt_in() {
    const TEST: &str = "a_store_planted_by_another_user_is_refused_by_root_without_the_opt_in";
    if common::child::role().as_deref() == Some("create") {
        return create_role();
    }
    if common::root::skip_unless_root("acts as uid 65534") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
    // A shared directory like /tmp: root's, 1777.
    let shared = tmp.path().join("shared");
    mkdir(&shared, 0o1777, 0);

    // 1. nobody planted the store itself in the shared directory.
    let planted = shared.join("sessions.db");
    create_as_nobody(TEST, &planted);
    let before = listing(&shared);
    let why = refused(opts().allow_others_to_write_directory(true).open(&planted));
    assert!(
        why.contains("uid 65534") && why.contains("maintain_as_owner(true)"),
        "{why}"
    );
    assert_eq!(listing(&shared), before, "nothing created or given away");

    // 2. nobody planted a directory of its own holding a store.
    let dir = shared.join("app");
    fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let planted = dir.join("sessions.db");
    create_as_nobody(TEST, &planted);
    let before = listing(&dir);
    let why = refused(opts().open(&planted));
    assert!(why.contains("uid 65534"), "{why}");
    assert_eq!(listing(&dir), before, "nothing created or given away");

    // 3. A new store in nobody's directory is not created for root either.
    let fresh = dir.join("new.db");
    let why = refused(opts().open(&fresh));
    assert!(why.contains("maintain_as_owner(true)"), "{why}");
    assert_eq!(listing(&dir), before, "nothing created");

    // 4. Opted in, root works on the store as its owner: what it makes is
    //    nobody's, and it serves nobody's sessions knowingly.
    let store = opts()
        .maintain_as_owner(true)
        .open(&planted)
        .expect("opted in");
    assert!(store.has_session(&id("s0")).expect("has"));
    drop(store);
    for (name, (_, uid, _, _)) in listing(&dir) {
        assert_eq!(uid, NOBODY, "{name}");
    }

    // 5. Root's own store in nobody's directory is refused even opted in:
    //    the directory must be root's or the store owner's.
    let roots = dir.join("roots.db");
    let root_store = tmp.path().join("roots.db");
    drop(opts().open(&root_store).expect("root's own store"));
    fs::rename(&root_store, &roots).expect("move root's log into nobody's directory");
    let why = refused(opts().maintain_as_owner(true).open(&roots));
    assert!(why.contains("belongs to uid 65534"), "{why}");
}
