//! Guards crash safety with real processes: writers, compactions and
//! recoveries are SIGKILLed at random moments, hundreds of times; after
//! each kill the store opens and holds every save acknowledged before it
//! (process death loses nothing under any sync policy). Also: a process
//! killed while holding the write lock, and a full disk (RLIMIT_FSIZE).

#[macro_use]
mod common;
use common::id;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::child::{self, Reader, Rng};
use sessionlog::internals::compact::close_writes_hint;
use sessionlog::internals::format::HEADER_SIZE;
use sessionlog::internals::hook::{IoEvent, IoHook};
use sessionlog::{Error, LogStore, Session, SessionStore, SyncPolicy};
use std::os::unix::process::ExitStatusExt;

fn store_path() -> PathBuf {
    PathBuf::from(std::env::var("STORE").expect("STORE set for children"))
}

fn policy(name: &str) -> SyncPolicy {
    match name {
        "always" => SyncPolicy::Always,
        "never" => SyncPolicy::Never,
        _ => SyncPolicy::Interval(std::time::Duration::from_millis(5)),
    }
}

/// Saves the next version of `name`, whose data encodes its version.
fn bump(store: &LogStore, name: &str) -> u64 {
    bump_with(store, name, |v| 64 + (v as usize * 97) % 1500)
}

/// Saves the next version of `name` with `len(current version)` bytes of
/// data that encode the new version.
fn bump_with(store: &LogStore, name: &str, len: impl Fn(u64) -> usize) -> u64 {
    let sid = id(name);
    let current = store.load_session(&sid).expect("load");
    let mut s = current.unwrap_or_else(|| Session::new(sid, Vec::new()));
    s.data = child::versioned_data(name, s.version() + 1, len(s.version()));
    store.save_session_if_unchanged(&mut s).expect("save");
    s.version()
}

/// Every session holds exactly the data of its version; every
/// acknowledged version is there (or a later one).
fn verify(path: &Path, acked: &HashMap<String, u64>) -> LogStore {
    let store = LogStore::options()
        .background(false)
        .open(path)
        .unwrap_or_else(|e| panic!("store does not open after a kill: {e}"));
    for (name, &v) in acked {
        let s = store
            .load_session(&id(name))
            .expect("load")
            .unwrap_or_else(|| panic!("acknowledged session {name} v{v} lost"));
        assert!(
            s.version() >= v,
            "{name}: acknowledged v{v}, found v{}",
            s.version()
        );
        assert_eq!(
            s.data,
            child::versioned_data(name, s.version(), s.data.len()),
            "{name} altered"
        );
    }
    for s in store.iter_sessions().expect("iter") {
        let s = s.expect("every session reads back");
        assert_eq!(
            s.data,
            child::versioned_data(s.id.as_str(), s.version(), s.data.len())
        );
    }
    store
}

fn writer_child() {
    let store = Arc::new(
        LogStore::options()
            .sync(policy(&std::env::var("POLICY").expect("POLICY")))
            .open(store_path())
            .expect("open"),
    );
    let compacting = std::env::var("COMPACT").is_ok();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut out = std::io::stdout();
                for i in 0u64.. {
                    if compacting && t == 1 {
                        store.compact().expect("compact");
                        writeln!(out, "COMPACTED").expect("stdout");
                        continue;
                    }
                    let name = format!("k{t}-{}", i % 13);
                    let v = bump(&store, &name);
                    if i % 5 == 0 {
                        store.touch_session(&id(&name)).expect("touch");
                    }
                    if i % 11 == 0 {
                        let gone = format!("k{t}-del");
                        bump(&store, &gone);
                        store.delete_session(&id(&gone)).expect("delete");
                    }
                    // acknowledged: the save returned before this line
                    writeln!(out, "ACK {name} {v}").expect("stdout");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

fn kill_rounds(test: &str, rounds: u64, compact: bool) {
    let mut rng = Rng::from_env_or_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut kills = 0;
    for round in 0..rounds {
        let pol = ["always", "interval", "never"][(round % 3) as usize];
        let mut vars = vec![
            ("STORE", path.display().to_string()),
            ("POLICY", pol.to_string()),
        ];
        if compact {
            vars.push(("COMPACT", "1".into()));
        }
        let mut c = child::spawn(test, "writer", &vars);
        let mut r = Reader::new(&mut c);
        let wait_for = 1 + rng.below(120);
        let mut seen = 0;
        while seen < wait_for {
            let Some(line) = r.next() else { break };
            seen += 1;
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (name, v) = rest.split_once(' ').expect("ACK name v");
                let v: u64 = v.parse().expect("version");
                let e = acked.entry(name.to_owned()).or_default();
                *e = (*e).max(v);
            }
        }
        child::kill9(&mut c);
        kills += 1;
        let store = verify(&path, &acked);
        let stats = store.stats().expect("stats");
        assert!(stats.sessions > 0 || acked.is_empty());
    }
    assert!(
        !path.with_extension("db.compact").exists(),
        "no temp file left behind after open"
    );
    eprintln!("{kills} kills survived");
}

#[test]
fn kill_9_writers_lose_no_acknowledged_save() {
    if child::role().as_deref() == Some("writer") {
        return writer_child();
    }
    kill_rounds("kill_9_writers_lose_no_acknowledged_save", 150, false);
}

#[test]
fn kill_9_during_compaction_loses_nothing() {
    if child::role().as_deref() == Some("writer") {
        return writer_child();
    }
    kill_rounds("kill_9_during_compaction_loses_nothing", 120, true);
}

/// A child opens a store whose last record is torn (so recovery has work
/// to do) and is killed at a random moment, often during that recovery.
#[test]
fn kill_9_during_recovery_loses_nothing() {
    if child::role().as_deref() == Some("opener") {
        println!("OPENING");
        let store = LogStore::options()
            .background(false)
            .open(store_path())
            .expect("open");
        bump(&store, "after");
        println!("OPENED");
        return;
    }
    let mut rng = Rng::from_env_or_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let mut acked = HashMap::new();
    for round in 0..60 {
        {
            let store = LogStore::options()
                .sync(SyncPolicy::Never)
                .background(false)
                .open(&path)
                .expect("open");
            for j in 0..5 {
                let name = format!("r{j}");
                acked.insert(name.clone(), bump(&store, &name));
            }
            store.sync().expect("sync");
            bump(&store, "torn");
        }
        // tear the unsynced last record as a power cut might
        let bytes = std::fs::read(&path).expect("read");
        let end = sessionlog::internals::format::decode_offset(u64::from_le_bytes(
            bytes[sessionlog::internals::format::H_COMMITTED
                ..sessionlog::internals::format::H_COMMITTED + 8]
                .try_into()
                .expect("8"),
        ))
        .expect("committed") as usize;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 24], (end - 24) as u64).expect("tear");
        drop(f);
        let mut c = child::spawn(
            "kill_9_during_recovery_loses_nothing",
            "opener",
            &[("STORE", path.display().to_string())],
        );
        let mut r = Reader::new(&mut c);
        assert_eq!(r.next().as_deref(), Some("OPENING"));
        for _ in 0..rng.below(200_000) {
            std::hint::spin_loop();
        }
        child::kill9(&mut c);
        let store = verify(&path, &acked);
        assert!(!store.has_session(&id("torn")).expect("has") || round > 0);
    }
}

/// A writer killed while it holds the write lock: a process that already
/// had the store open takes the lock over (the robust mutex reports its
/// owner dead), and so does one that opens it afterwards.
#[test]
fn kill_9_while_holding_the_write_lock() {
    if child::role().as_deref() == Some("holder") {
        let store = LogStore::options()
            .background(false)
            .open(store_path())
            .expect("open");
        bump(&store, "held");
        store
            .with_write_lock(|| {
                println!("LOCKED");
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line); // blocks until killed
            })
            .expect("lock");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let mut c = child::spawn(
        "kill_9_while_holding_the_write_lock",
        "holder",
        &[("STORE", path.display().to_string())],
    );
    let mut r = Reader::new(&mut c);
    assert_eq!(r.next().as_deref(), Some("LOCKED"));
    let early = LogStore::options()
        .background(false)
        .open(&path)
        .expect("open beside the lock holder");
    child::kill9(&mut c);
    assert_eq!(
        bump(&early, "held"),
        2,
        "the lock of the dead holder passed to the next writer"
    );
    drop(early);
    let mut acked = HashMap::new();
    acked.insert("held".to_owned(), 2);
    let store = verify(&path, &acked);
    assert_eq!(bump(&store, "held"), 3, "a later opener can write");
}

/// The lock file as a power loss can leave it: its mutex locked by a
/// thread that will never unlock it, and no kernel to report it dead.
/// The first process to open the store initialises the lock afresh.
#[test]
fn a_lock_left_locked_on_disk_is_initialised_afresh() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let lock_path = dir.path().join("s.db.lock");
    let image = {
        let store = LogStore::open(&path).expect("open");
        bump(&store, "a");
        store
            .with_write_lock(|| std::fs::read(&lock_path).expect("read lock file"))
            .expect("lock")
    };
    std::fs::write(&lock_path, &image).expect("write the locked image back");
    // Were the image trusted, the save below would wait forever for the
    // lock: it runs on a thread, and the test fails if it has not finished
    // within a generous bound.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let store = LogStore::open(&path).expect("reopen");
        let _ = tx.send(bump(&store, "a"));
    });
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(60)),
        Ok(2),
        "a save after reopening finished"
    );
}

/// A full disk: saves fail with a clear error once the file cannot grow,
/// nothing half-written is left, loads go on, and a reopen finds every
/// acknowledged save.
#[test]
fn a_full_disk_fails_saves_cleanly() {
    if child::role().as_deref() == Some("filler") {
        // SAFETY: setting a signal disposition and a resource limit for this
        // child process only; no memory is shared with Rust code.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 3 << 20,
                rlim_max: 3 << 20,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let store = LogStore::options()
            .background(false)
            .open(store_path())
            .expect("open");
        let mut failed = None;
        for i in 0..100_000u64 {
            let name = format!("f{}", i % 50);
            let sid = id(&name);
            let mut s = store
                .load_session(&sid)
                .expect("load")
                .unwrap_or_else(|| Session::new(sid, Vec::new()));
            s.data = child::versioned_data(&name, s.version() + 1, 8000);
            match store.save_session(&mut s) {
                Ok(()) => println!("ACK {name} {}", s.version()),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.expect("the disk filled up");
        assert!(
            matches!(e, Error::Io { .. } | Error::Poisoned { .. }),
            "{e:?}"
        );
        println!("FULL {e}");
        let again = store.save_session(&mut Session::new(id("more"), vec![1; 8000]));
        assert!(again.is_err(), "still full");
        for j in 0..50 {
            let _ = store
                .load_session(&id(&format!("f{j}")))
                .expect("loads go on");
        }
        println!("LOADS OK");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let mut c = child::spawn(
        "a_full_disk_fails_saves_cleanly",
        "filler",
        &[("STORE", path.display().to_string())],
    );
    let mut r = Reader::new(&mut c);
    let mut acked = HashMap::new();
    let (mut full, mut loads) = (None, false);
    while let Some(line) = r.next() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (name, v) = rest.split_once(' ').expect("ACK name v");
            acked.insert(name.to_owned(), v.parse::<u64>().expect("v"));
        } else if let Some(msg) = line.strip_prefix("FULL ") {
            full = Some(msg.to_owned());
        } else if line == "LOADS OK" {
            loads = true;
        }
    }
    assert!(c.wait().expect("wait").success(), "filler failed");
    let full = full.expect("saves failed when full");
    assert!(full.contains("s.db"), "the error names the file: {full}");
    assert!(loads);
    assert!(acked.len() == 50);
    verify(&path, &acked);
}

// The hint a close writes (`compact::hint_on_close`), killed while it is
// written.

/// `<log><suffix>`, a file beside the log.
fn beside(log: &Path, suffix: &str) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The offset up to which a hint file reflects its log (bytes 40..48,
/// DESIGN.md §2.3).
fn hint_end(hint: &[u8]) -> u64 {
    let end = hint.get(40..48).expect("the hint in place is whole");
    u64::from_le_bytes(end.try_into().expect("8 bytes"))
}

/// The log of the store `s.db` in `dir`, by the resolved path the engine
/// reports its files with.
fn log_in(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).expect("dir").join("s.db")
}

/// The steps of a close's hint at which the child kills itself, each just
/// before it: the temporary hint's write (it exists, empty), its fsync
/// (written), its rename over `<log>.hint` (synced), and the removal of
/// `<log>.compact` after the rename.
const HINT_STEPS: [&str; 4] = ["write", "sync", "rename", "remove"];

/// Kills this process with SIGKILL just before one step of a close's hint.
#[derive(Debug)]
struct KillAt {
    step: String,
    tmp: PathBuf,
    hint: PathBuf,
    compact: PathBuf,
}

impl IoHook for KillAt {
    fn before(&self, e: &IoEvent<'_>) -> std::io::Result<()> {
        let here = match (self.step.as_str(), e) {
            ("write", IoEvent::Write { path, .. }) | ("sync", IoEvent::Sync { path }) => {
                *path == self.tmp
            }
            ("rename", IoEvent::Rename { from, to }) => *from == self.tmp && *to == self.hint,
            ("remove", IoEvent::Remove { path }) => *path == self.compact,
            _ => false,
        };
        if here {
            // SAFETY: kill(2) only reads its integer arguments; signalling
            // this process itself touches no memory of ours.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // SIGKILL cannot be caught: not reached. Were it, the parent
            // would see SIGABRT, not SIGKILL, and fail.
            std::process::abort();
        }
        Ok(())
    }
}

/// Sessions the closing child overwrites.
const CLOSER_SESSIONS: u64 = 256;

/// The closing child: opens the store (nothing compacts), overwrites
/// sessions with 1-4 KiB values until its close will write a hint,
/// acknowledging each save on stdout, then closes it when told to. With
/// `KILL_AT`, it kills itself at that step of the close's hint; with
/// `SYNC_FIRST`, it syncs before it closes.
fn closer_child() {
    let log = log_in(store_path().parent().expect("dir"));
    let mut opts = LogStore::options()
        .sync(SyncPolicy::Interval(std::time::Duration::from_millis(5)))
        .background(false);
    if let Ok(step) = std::env::var("KILL_AT") {
        opts = opts.io_hook(Arc::new(KillAt {
            step,
            tmp: beside(&log, ".hint.tmp"),
            hint: beside(&log, ".hint"),
            compact: beside(&log, ".compact"),
        }));
    }
    let store = opts.open(&log).expect("open");
    let covered = store
        .stats()
        .expect("stats")
        .recovery
        .hint_end
        .unwrap_or(HEADER_SIZE);
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        if i % 64 == 0 {
            let applied = HEADER_SIZE + store.stats().expect("stats").log_bytes;
            if close_writes_hint(applied, covered) {
                break;
            }
        }
        let name = format!("c{}", i % CLOSER_SESSIONS);
        let salt = i % CLOSER_SESSIONS;
        let v = bump_with(&store, &name, |v| {
            1024 + ((v * 1931 + salt * 337) % 3072) as usize
        });
        // acknowledged: the save returned before this line
        writeln!(out, "ACK {name} {v}").expect("stdout");
    }
    if std::env::var("SYNC_FIRST").is_ok() {
        // The close then has (almost) nothing to sync: it is the hint.
        store.sync().expect("sync");
    }
    writeln!(out, "CLOSING").expect("stdout");
    // The parent has read every acknowledgement when it says go.
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("stdin");
    let t = std::time::Instant::now();
    drop(store); // the close writes the hint
    writeln!(out, "CLOSED {}", t.elapsed().as_micros()).expect("stdout");
}

/// How a closing child ended.
struct CloserRun {
    /// It had saved all it would and was told to close.
    closing: bool,
    /// Its close returned, after this long (as the child timed it).
    closed: Option<std::time::Duration>,
    status: std::process::ExitStatus,
}

/// Runs a closing child on `log` to its end, recording its acknowledged
/// saves; with `kill_at` it kills itself at that step, else it syncs
/// before its close, and with `kill_after` the parent SIGKILLs it that
/// long after telling it to close.
fn run_closer(
    test: &str,
    log: &Path,
    kill_at: Option<&str>,
    kill_after: Option<std::time::Duration>,
    acked: &mut HashMap<String, u64>,
) -> CloserRun {
    let mut vars = vec![("STORE", log.display().to_string())];
    if let Some(step) = kill_at {
        vars.push(("KILL_AT", step.to_owned()));
    } else {
        vars.push(("SYNC_FIRST", "1".to_owned()));
    }
    let mut c = child::spawn(test, "closer", &vars);
    let mut r = Reader::new(&mut c);
    let (mut closing, mut closed) = (false, None);
    while let Some(line) = r.next() {
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (name, v) = rest.split_once(' ').expect("ACK name v");
            let v: u64 = v.parse().expect("version");
            let e = acked.entry(name.to_owned()).or_default();
            *e = (*e).max(v);
        } else if line == "CLOSING" {
            closing = true;
            let stdin = c.stdin.as_mut().expect("piped stdin");
            stdin.write_all(b"go\n").expect("tell the child to close");
            if let Some(d) = kill_after {
                std::thread::sleep(d); // the random moment of the kill
                child::kill9(&mut c);
            }
        } else if let Some(us) = line.strip_prefix("CLOSED ") {
            let us = us.parse().expect("microseconds");
            closed = Some(std::time::Duration::from_micros(us));
        }
    }
    let status = c.wait().expect("wait");
    CloserRun {
        closing,
        closed,
        status,
    }
}

/// What a close left beside the log, seen before any open.
#[derive(Debug)]
struct Left {
    compact: bool,
    /// The temporary hint's length, if it exists.
    tmp: Option<u64>,
    hint: Option<Vec<u8>>,
}

fn left(log: &Path) -> Left {
    Left {
        compact: beside(log, ".compact").exists(),
        tmp: std::fs::metadata(beside(log, ".hint.tmp"))
            .ok()
            .map(|m| m.len()),
        hint: std::fs::read(beside(log, ".hint")).ok(),
    }
}

/// After a kill during a close: the store opens with every acknowledged
/// save, removes a leftover `.compact` (its lock died with the child) and
/// uses the hint in place if any (never the temporary one). A few saves
/// and a close then write a hint if the log grew enough since the one in
/// place (so whatever the kill left does not keep the store from writing
/// hints), and the next open reads it and replays nothing. Returns whether
/// that close wrote a hint.
fn reopen_after_kill(log: &Path, acked: &mut HashMap<String, u64>, killed: &Left) -> bool {
    let store = verify(log, acked);
    let st = store.stats().expect("stats");
    assert_eq!(
        st.recovery.removed_temp_files,
        u32::from(killed.compact),
        "the open removes a leftover .compact, and nothing else"
    );
    assert!(!beside(log, ".compact").exists());
    assert_eq!(
        st.recovery.hint_end,
        killed.hint.as_deref().map(hint_end),
        "the open read the hint in place, if any"
    );
    for j in 0..3 {
        let name = format!("after{j}");
        let v = bump(&store, &name);
        acked.insert(name, v);
    }
    let applied = HEADER_SIZE + store.stats().expect("stats").log_bytes;
    let writes = close_writes_hint(applied, st.recovery.hint_end.unwrap_or(HEADER_SIZE));
    drop(store);
    let closed = left(log);
    assert!(!closed.compact, "the close leaves no .compact");
    if writes {
        assert_eq!(closed.tmp, None, "the new hint was renamed into place");
        assert!(
            closed.hint.is_some() && closed.hint != killed.hint,
            "the close wrote a new hint"
        );
    } else {
        assert_eq!(closed.hint, killed.hint, "the close left the hint alone");
    }
    let store = verify(log, acked);
    let again = store.stats().expect("stats");
    if writes {
        assert_eq!(
            again.recovery.hint_end,
            Some(HEADER_SIZE + again.log_bytes),
            "the next open reads the new hint, which covers the whole log"
        );
        assert_eq!(again.recovery.records, 0, "and replays nothing");
    } else {
        assert_eq!(again.recovery.hint_end, st.recovery.hint_end);
    }
    writes
}

/// A process SIGKILLed by its own I/O hook just before each step of the
/// hint its close writes, twice per step: on a store without a hint, then
/// on one whose older hint is in place (the open must use the older hint
/// and replay what came after it).
#[test]
fn kill_9_at_each_step_of_a_close_s_hint_loses_nothing() {
    const TEST: &str = "kill_9_at_each_step_of_a_close_s_hint_loses_nothing";
    if child::role().as_deref() == Some("closer") {
        return closer_child();
    }
    for step in HINT_STEPS {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = log_in(dir.path());
        let mut acked = HashMap::new();
        for round in 0..2 {
            let before = left(&log);
            let run = run_closer(TEST, &log, Some(step), None, &mut acked);
            assert!(
                run.closing && run.closed.is_none(),
                "{step}/{round}: killed in its close"
            );
            assert_eq!(
                run.status.signal(),
                Some(libc::SIGKILL),
                "{step}/{round}: killed by its hook ({:?})",
                run.status
            );
            let l = left(&log);
            assert!(l.compact, "{step}/{round}: killed holding .compact");
            match step {
                "write" => {
                    assert_eq!(
                        l.tmp,
                        Some(0),
                        "{step}/{round}: the temporary hint is empty"
                    );
                    assert_eq!(
                        l.hint, before.hint,
                        "{step}/{round}: the hint in place stays"
                    );
                }
                "sync" | "rename" => {
                    assert!(
                        l.tmp.is_some_and(|n| n > 0),
                        "{step}/{round}: the temporary hint is written"
                    );
                    assert_eq!(
                        l.hint, before.hint,
                        "{step}/{round}: the hint in place stays"
                    );
                }
                _ => {
                    assert_eq!(l.tmp, None, "{step}/{round}: the hint was renamed");
                    assert!(
                        l.hint.is_some() && l.hint != before.hint,
                        "{step}/{round}: a new hint is in place"
                    );
                }
            }
            let wrote = reopen_after_kill(&log, &mut acked, &l);
            assert_eq!(
                wrote,
                step != "remove",
                "{step}/{round}: the next close writes the hint the killed one did not"
            );
        }
    }
}

/// A process SIGKILLed at random moments of its close (which syncs, takes
/// `.compact`, writes the hint and removes `.compact`; the child synced
/// just before, so the hint is most of it), after one close that ran to
/// its end set the time scale (and each later one that finishes before
/// its kill sets it anew).
#[test]
fn kill_9_at_random_moments_of_a_close_loses_nothing() {
    const TEST: &str = "kill_9_at_random_moments_of_a_close_loses_nothing";
    if child::role().as_deref() == Some("closer") {
        return closer_child();
    }
    let mut rng = Rng::from_env_or_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = log_in(dir.path());
    let mut acked = HashMap::new();
    let run = run_closer(TEST, &log, None, None, &mut acked);
    assert!(run.status.success(), "{:?}", run.status);
    // The time scale of the kills: the last close seen to its end (its
    // fsyncs take 1 to 30 ms here, and vary as much from run to run).
    let mut close = run.closed.expect("the close returned");
    let l = left(&log);
    assert!(
        l.hint.is_some() && !l.compact && l.tmp.is_none(),
        "a close that ran to its end wrote the hint: {l:?}"
    );
    assert!(!reopen_after_kill(&log, &mut acked, &l));
    let mut landed: std::collections::BTreeMap<&str, u32> = Default::default();
    for _ in 0..8 {
        let before = left(&log);
        let delay = close.mul_f64(rng.below(1500) as f64 / 1000.0);
        let run = run_closer(TEST, &log, None, Some(delay), &mut acked);
        assert!(run.closing);
        let l = left(&log);
        let new_hint = l.hint != before.hint;
        let when = if let Some(took) = run.closed {
            close = took;
            "after the close"
        } else if !l.compact && !new_hint {
            "before taking .compact"
        } else if l.tmp.is_none() && !new_hint {
            "holding .compact"
        } else if !new_hint {
            "writing the temporary hint"
        } else if l.compact {
            "after the rename"
        } else {
            "after removing .compact"
        };
        *landed.entry(when).or_default() += 1;
        reopen_after_kill(&log, &mut acked, &l);
    }
    eprintln!("last close {close:?}; kills landed: {landed:?}");
}

// The flush turn (DESIGN.md §6): durable saves of several processes elect
// one flusher among them.

/// Blocks the process in its first flush of the log, while it holds the
/// flush turn: says `FLUSHING`, then waits for its stdin to close (it is
/// killed first, or stays hung).
#[derive(Debug)]
struct HangInFlush(PathBuf);

impl IoHook for HangInFlush {
    fn before(&self, e: &IoEvent<'_>) -> std::io::Result<()> {
        if let IoEvent::SyncRange { path, .. } = e
            && *path == self.0
        {
            println!("FLUSHING");
            std::io::stdout().flush().expect("stdout");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        Ok(())
    }
}

/// The process elected to flush: one durable save, which hangs in its
/// flush holding the turn.
fn hung_flusher_child() {
    let log = log_in(store_path().parent().expect("dir"));
    let store = LogStore::options()
        .sync(SyncPolicy::Always)
        .background(false)
        .io_hook(Arc::new(HangInFlush(log)))
        .open(store_path())
        .expect("open");
    bump(&store, "hung");
    println!("UNHUNG");
}

/// A durable saver: `SAVES` saves of its own sessions, each acknowledged
/// on stdout, then `DONE`; it keeps the store open until its stdin closes.
/// `TIMEOUT_MS` is its lock timeout: how long it waits for another
/// process's flush turn before it flushes alone.
fn durable_saver_child() {
    let timeout: u64 = std::env::var("TIMEOUT_MS")
        .expect("TIMEOUT_MS")
        .parse()
        .expect("ms");
    let saves: u64 = std::env::var("SAVES").expect("SAVES").parse().expect("n");
    let me = std::env::var("NAME").expect("NAME");
    let store = LogStore::options()
        .sync(SyncPolicy::Always)
        .background(false)
        .lock_timeout(std::time::Duration::from_millis(timeout))
        .open(store_path())
        .expect("open");
    println!("STARTED");
    for i in 0..saves {
        let name = format!("{me}-{}", i % 3);
        let v = bump(&store, &name);
        println!("ACK {name} {v}");
    }
    println!("DONE");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Starts the hung flusher and `savers` durable savers on `path`, and
/// collects the savers' acknowledgements. `kill_first`: the flusher is
/// SIGKILLed once every saver has started (its turn must pass to one of
/// them); else it stays hung, and the savers' lock timeout (`timeout_ms`)
/// bounds their wait. Returns the acknowledgements, with the savers still
/// open, and the children.
fn run_flush_turn_case(
    test: &str,
    path: &Path,
    savers: usize,
    saves: u64,
    timeout_ms: u64,
    kill_first: bool,
) -> (
    HashMap<String, u64>,
    std::process::Child,
    Vec<(std::process::Child, Reader)>,
) {
    let store_var = ("STORE", path.display().to_string());
    let mut hung = child::spawn(test, "hung", std::slice::from_ref(&store_var));
    assert_eq!(Reader::new(&mut hung).next().as_deref(), Some("FLUSHING"));
    let mut kids = Vec::new();
    let mut readers = Vec::new();
    for k in 0..savers {
        let mut c = child::spawn(
            test,
            "saver",
            &[
                store_var.clone(),
                ("TIMEOUT_MS", timeout_ms.to_string()),
                ("SAVES", saves.to_string()),
                ("NAME", format!("s{k}")),
            ],
        );
        let mut r = Reader::new(&mut c);
        assert_eq!(r.next().as_deref(), Some("STARTED"));
        kids.push(c);
        readers.push(r);
    }
    if kill_first {
        child::kill9(&mut hung);
    }
    let mut acked = HashMap::new();
    for r in &mut readers {
        let mut n = 0;
        loop {
            let line = r.next().expect("a saver ended before DONE");
            if line == "DONE" {
                break;
            }
            let (name, v) = line
                .strip_prefix("ACK ")
                .and_then(|l| l.split_once(' '))
                .expect("ACK name v");
            acked.insert(name.to_owned(), v.parse::<u64>().expect("version"));
            n += 1;
        }
        assert_eq!(n, saves, "every save of a saver was acknowledged");
    }
    (acked, hung, kids.into_iter().zip(readers).collect())
}

/// Every acknowledged save lies below the synced word (checked while the
/// savers still have the store open, before any close syncs), then the
/// savers close, and a reopen holds every acknowledged save.
fn check_durable_then_close(
    path: &Path,
    acked: &HashMap<String, u64>,
    kids: Vec<(std::process::Child, Reader)>,
) {
    let report = sessionlog::check(path).expect("check");
    assert!(
        report.synced >= report.committed,
        "acknowledged saves past the synced word: synced {}, committed {}",
        report.synced,
        report.committed
    );
    for (mut c, mut r) in kids {
        drop(c.stdin.take());
        // Read to the end: a child whose output is closed fails.
        while r.next().is_some() {}
        assert!(c.wait().expect("wait").success(), "a saver failed");
    }
    verify(path, acked);
}

/// Four processes save durably; the one elected to flush is SIGKILLed in
/// the middle of its flush, holding the turn. The other three take the
/// turn over (the robust mutex reports its holder dead) instead of waiting
/// for it: their lock timeout is ten minutes, so no saver ever flushes
/// alone. All their saves are acknowledged, durable (below the synced
/// word) and found after a reopen.
#[test]
fn kill_9_of_the_elected_flusher_passes_the_flush_to_the_other_processes() {
    match child::role().as_deref() {
        Some("hung") => return hung_flusher_child(),
        Some("saver") => return durable_saver_child(),
        _ => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (acked, _hung, kids) = run_flush_turn_case(
        "kill_9_of_the_elected_flusher_passes_the_flush_to_the_other_processes",
        &path,
        3,
        12,
        600_000,
        true,
    );
    check_durable_then_close(&path, &acked, kids);
}

/// The elected flusher hangs in its flush and never ends its turn (a
/// stopped or hung process): the other processes wait for it at most
/// their lock timeout, then flush for themselves; their saves are
/// acknowledged, durable and kept.
#[test]
fn a_hung_flusher_delays_the_others_by_their_lock_timeout_at_most() {
    match child::role().as_deref() {
        Some("hung") => return hung_flusher_child(),
        Some("saver") => return durable_saver_child(),
        _ => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (acked, mut hung, kids) = run_flush_turn_case(
        "a_hung_flusher_delays_the_others_by_their_lock_timeout_at_most",
        &path,
        3,
        3,
        50,
        false,
    );
    assert!(
        hung.try_wait().expect("try_wait").is_none(),
        "the flusher still hangs, holding its turn"
    );
    check_durable_then_close(&path, &acked, kids);
    child::kill9(&mut hung);
}
