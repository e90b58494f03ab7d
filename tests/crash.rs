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
use sessionlog::{Error, LogStore, Session, SessionStore, SyncPolicy};

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
    let sid = id(name);
    let current = store.load_session(&sid).expect("load");
    let mut s = current.unwrap_or_else(|| Session::new(sid, Vec::new()));
    s.data = child::versioned_data(
        name,
        s.version() + 1,
        64 + (s.version() as usize * 97) % 1500,
    );
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
