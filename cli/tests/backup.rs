//! Guards `sessionlog backup` and `sessionlog restore` through the real
//! binary:
//! - a backup taken while four writer processes keep saving holds every
//!   save acknowledged before the backup began (the writers report each
//!   acknowledged save; the backup process is started only after the test
//!   has read those reports), each writer's saves form a prefix (one
//!   instant, no save half in), every session's data is whole, the copy
//!   passes `check` and is mode 0600;
//! - an existing destination is refused without `--force`;
//! - `restore` is refused while a process has the store open, and
//!   otherwise replaces the store, keeping the replaced file;
//! - the backup keeps the store's recorded policy (idle limit, quota);
//! - the same for a DirStore (`dir:PATH`): a backup directory (0700,
//!   files 0600) taken while four writer processes save holds every
//!   acknowledged save, whole; an existing destination is refused without
//!   `--force`; restore is refused while a process has the store open,
//!   otherwise swaps the directory and keeps the replaced one.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use sessionlog::{DirStore, LogStore, Session, SessionId, SessionStore, StorePolicy};

/// Set in a writer child: the store to write to, and the writer's number.
const CHILD_STORE: &str = "SESSIONLOG_TEST_BACKUP_STORE";
const CHILD_NUMBER: &str = "SESSIONLOG_TEST_BACKUP_WRITER";
/// Set in a writer child that writes to a DirStore directory.
const CHILD_DIR: &str = "SESSIONLOG_TEST_BACKUP_DIR";
const WRITERS: usize = 4;
/// Saves each writer has acknowledged before the backup starts.
const BEFORE: u64 = 300;

fn sessionlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn id_of(writer: usize, n: u64) -> SessionId {
    SessionId::new(format!("writer-{writer}-save-{n:08}")).expect("id")
}

/// The data of save `n` of `writer`: long enough to span pages, and
/// checkable whole.
fn data_of(writer: usize, n: u64) -> Vec<u8> {
    let line = format!("writer {writer} save {n};");
    line.repeat(64).into_bytes()
}

/// A writer process: saves `writer-W-save-N` for N = 0, 1, ... and prints
/// `ACK N` once each save has returned, until its stdin closes.
#[test]
fn writer_child() {
    let (Ok(store), Ok(w)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_NUMBER)) else {
        return; // not a child: nothing to do
    };
    let w: usize = w.parse().expect("writer number");
    let store: Box<dyn SessionStore> = if std::env::var_os(CHILD_DIR).is_some() {
        Box::new(DirStore::open(&store).expect("open"))
    } else {
        Box::new(
            LogStore::options()
                .background(false)
                .open(&store)
                .expect("open"),
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut session = Session::new(id_of(w, n), data_of(w, n));
        store.save_session(&mut session).expect("save");
        writeln!(out, "ACK {n}").expect("report");
        out.flush().expect("flush");
        n += 1;
    }
}

fn spawn_writer(store: &Path, w: usize) -> Child {
    spawn_writer_of(store, w, false)
}

fn spawn_writer_of(store: &Path, w: usize, dir: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    if dir {
        cmd.env(CHILD_DIR, "1");
    }
    cmd.args(["writer_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, store)
        .env(CHILD_NUMBER, w.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer")
}

#[test]
fn backup_while_four_processes_save_holds_every_acknowledged_save() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("s.db");
    let dest = tmp.path().join("backup.db");
    drop(LogStore::open(&store).expect("create"));

    // Each writer's acknowledgements arrive on a channel, read by a thread
    // per writer: (writer, n).
    let (tx, rx) = mpsc::channel::<(usize, u64)>();
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for w in 0..WRITERS {
        let mut child = spawn_writer(&store, w);
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.expect("read");
                if let Some(n) = line.strip_prefix("ACK ") {
                    let _ = tx.send((w, n.parse().expect("number")));
                }
            }
        }));
        children.push(child);
    }
    drop(tx);

    // Wait (on the writers' own reports) until each has acknowledged
    // BEFORE saves; everything read so far was acknowledged before the
    // backup process exists.
    let mut acked: HashMap<usize, u64> = HashMap::new();
    while (0..WRITERS).any(|w| acked.get(&w).is_none_or(|&n| n + 1 < BEFORE)) {
        let (w, n) = rx.recv().expect("a writer died early");
        acked.insert(w, n);
    }
    while let Ok((w, n)) = rx.try_recv() {
        acked.insert(w, n);
    }
    let out = sessionlog(&["backup", s(&store), s(&dest)]);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The writers kept going during the backup: stop them now.
    let mut after = acked.clone();
    for child in &mut children {
        drop(child.stdin.take());
    }
    for child in &mut children {
        assert!(child.wait().expect("wait").success(), "a writer failed");
    }
    for r in readers {
        r.join().expect("reader");
    }
    for (w, n) in rx.try_iter() {
        after.insert(w, n);
    }
    assert!(
        (0..WRITERS).any(|w| after[&w] > acked[&w]),
        "the writers saved nothing while the backup ran: the test shows nothing"
    );

    let report = sessionlog::check(&dest).expect("check the backup");
    assert!(
        report.is_healthy() && report.torn_tail.is_none(),
        "{report:?}"
    );
    let mode = std::fs::metadata(&dest).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup's mode");

    let copy = LogStore::options()
        .background(false)
        .open(&dest)
        .expect("open the backup");
    let mut ids: HashMap<usize, HashSet<u64>> = HashMap::new();
    for session in copy.iter_sessions().expect("iterate") {
        let session = session.expect("session");
        let name = session.id.as_str().to_owned();
        let rest = name.strip_prefix("writer-").expect("a writer's session");
        let (w, n) = rest.split_once("-save-").expect("id form");
        let (w, n): (usize, u64) = (w.parse().expect("w"), n.parse().expect("n"));
        assert_eq!(session.data, data_of(w, n), "the data of {name} is whole");
        ids.entry(w).or_default().insert(n);
    }
    for w in 0..WRITERS {
        let got = ids.remove(&w).unwrap_or_default();
        let count = got.len() as u64;
        // Every save acknowledged before the backup began is in it...
        assert!(
            count > acked[&w],
            "writer {w}: {count} saves in the backup, {} acknowledged before it began",
            acked[&w] + 1
        );
        // ...and the saves in it are a prefix: one instant.
        assert!(
            (0..count).all(|n| got.contains(&n)),
            "writer {w}: the backup's saves are not a prefix"
        );
    }

    // An existing destination is refused without --force.
    let again = sessionlog(&["backup", s(&store), s(&dest)]);
    assert!(
        !again.status.success(),
        "an existing backup was overwritten"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let forced = sessionlog(&["backup", "--force", s(&store), s(&dest)]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
}

/// A policy to record: an idle limit and a quota.
fn policy() -> StorePolicy {
    StorePolicy {
        max_idle: Some(std::time::Duration::from_secs(3600)),
        max_sessions: Some(1000),
        ..StorePolicy::default()
    }
}

#[test]
fn restore_is_refused_while_open_and_keeps_the_replaced_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("s.db");
    let dest = tmp.path().join("backup.db");
    let (a, b) = (id_of(0, 1), id_of(0, 2));
    {
        let st = LogStore::open(&store).expect("create");
        st.save_session(&mut Session::new(a.clone(), b"in the backup".to_vec()))
            .expect("save");
        st.set_policy(policy()).expect("record a policy");
    }
    let out = sessionlog(&["backup", s(&store), s(&dest)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = LogStore::open(&dest).expect("open the backup");
    assert_eq!(
        copy.policy().expect("policy"),
        policy(),
        "the backup keeps the policy"
    );
    drop(copy);
    let open = LogStore::open(&store).expect("open");
    open.save_session(&mut Session::new(b.clone(), b"after the backup".to_vec()))
        .expect("save");

    let refused = sessionlog(&["restore", s(&dest), s(&store)]);
    assert!(!refused.status.success(), "restore ran under an open store");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("open in another process"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        open.has_session(&b).expect("has"),
        "the refused restore changed the store"
    );
    drop(open);

    let done = sessionlog(&["restore", s(&dest), s(&store)]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let st = LogStore::open(&store).expect("open the restored store");
    assert!(st.has_session(&a).expect("has"));
    assert!(
        !st.has_session(&b).expect("has"),
        "the restore did not replace the store"
    );
    drop(st);
    let kept: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("s.db.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "the replaced store is kept: {kept:?}");
    let old = LogStore::open(tmp.path().join(&kept[0])).expect("open the kept store");
    assert!(
        old.has_session(&b).expect("has"),
        "the kept file is the replaced store"
    );
}

/// Writer processes on the DirStore `store`, each reporting its
/// acknowledged saves on the channel as `(writer, n)`.
struct Writers {
    children: Vec<Child>,
    readers: Vec<std::thread::JoinHandle<()>>,
    rx: mpsc::Receiver<(usize, u64)>,
}

impl Writers {
    fn start(store: &Path) -> Writers {
        let (tx, rx) = mpsc::channel::<(usize, u64)>();
        let mut children = Vec::new();
        let mut readers = Vec::new();
        for w in 0..WRITERS {
            let mut child = spawn_writer_of(store, w, true);
            let stdout = child.stdout.take().expect("piped");
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let line = line.expect("read");
                    if let Some(n) = line.strip_prefix("ACK ") {
                        let _ = tx.send((w, n.parse().expect("number")));
                    }
                }
            }));
            children.push(child);
        }
        Writers {
            children,
            readers,
            rx,
        }
    }

    /// Waits (on the writers' own reports) until each has acknowledged
    /// `before` saves; the last acknowledged save of each.
    fn wait_for(&self, before: u64) -> HashMap<usize, u64> {
        let mut acked: HashMap<usize, u64> = HashMap::new();
        while (0..WRITERS).any(|w| acked.get(&w).is_none_or(|&n| n + 1 < before)) {
            let (w, n) = self.rx.recv().expect("a writer died early");
            acked.insert(w, n);
        }
        while let Ok((w, n)) = self.rx.try_recv() {
            acked.insert(w, n);
        }
        acked
    }

    /// Stops the writers; the last acknowledged save of each.
    fn stop(mut self, mut last: HashMap<usize, u64>) -> HashMap<usize, u64> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        for child in &mut self.children {
            assert!(child.wait().expect("wait").success(), "a writer failed");
        }
        for r in self.readers {
            r.join().expect("reader");
        }
        for (w, n) in self.rx.try_iter() {
            last.insert(w, n);
        }
        last
    }
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn dir_arg(p: &Path) -> String {
    format!("dir:{}", s(p))
}

#[test]
fn dir_store_backup_while_four_processes_save_holds_every_acknowledged_save() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("sessions");
    let dest = tmp.path().join("backup");
    drop(DirStore::open(&store).expect("create"));
    // DirStore writes a file a save: fewer saves keep the test short.
    let before = BEFORE / 3;

    let writers = Writers::start(&store);
    let acked = writers.wait_for(before);
    let out = sessionlog(&["backup", &dir_arg(&store), s(&dest)]);
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = writers.stop(acked.clone());
    assert!(
        (0..WRITERS).any(|w| after[&w] > acked[&w]),
        "the writers saved nothing while the backup ran: the test shows nothing"
    );

    assert_eq!(mode_of(&dest), 0o700, "the backup directory's mode");
    let copy = DirStore::open(&dest).expect("open the backup");
    let mut ids: HashMap<usize, HashSet<u64>> = HashMap::new();
    for session in copy.iter_sessions().expect("iterate") {
        let session = session.expect("a whole session file");
        let name = session.id.as_str().to_owned();
        let rest = name.strip_prefix("writer-").expect("a writer's session");
        let (w, n) = rest.split_once("-save-").expect("id form");
        let (w, n): (usize, u64) = (w.parse().expect("w"), n.parse().expect("n"));
        assert_eq!(session.data, data_of(w, n), "the data of {name} is whole");
        ids.entry(w).or_default().insert(n);
    }
    drop(copy);
    for entry in std::fs::read_dir(&dest).expect("list") {
        let path = entry.expect("entry").path();
        assert_eq!(mode_of(&path), 0o600, "{}", path.display());
    }
    for w in 0..WRITERS {
        let got = ids.remove(&w).unwrap_or_default();
        let count = got.len() as u64;
        assert!(
            count > acked[&w],
            "writer {w}: {count} saves in the backup, {} acknowledged before it began",
            acked[&w] + 1
        );
        // The files were listed at one instant under the write lock, and
        // nothing is deleted here: each writer's saves form a prefix.
        assert!(
            (0..count).all(|n| got.contains(&n)),
            "writer {w}: the backup's saves are not a prefix"
        );
    }

    let again = sessionlog(&["backup", &dir_arg(&store), s(&dest)]);
    assert!(
        !again.status.success(),
        "an existing backup was overwritten"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let forced = sessionlog(&["backup", "--force", &dir_arg(&store), s(&dest)]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(
        !tmp.path().join("backup.partial").exists(),
        "the temporary copy was left behind"
    );
}

#[test]
fn dir_store_restore_is_refused_while_open_and_keeps_the_replaced_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("sessions");
    let dest = tmp.path().join("backup");
    let (a, b) = (id_of(0, 1), id_of(0, 2));
    {
        let st = DirStore::open(&store).expect("create");
        st.save_session(&mut Session::new(a.clone(), b"in the backup".to_vec()))
            .expect("save");
    }
    let out = sessionlog(&["backup", &dir_arg(&store), s(&dest)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A writer process has the store open: refused, nothing changed.
    let writers = Writers::start(&store);
    let acked = writers.wait_for(1);
    let refused = sessionlog(&["restore", s(&dest), &dir_arg(&store)]);
    assert!(!refused.status.success(), "restore ran under an open store");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("open in another process"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    writers.stop(acked);
    // And a handle of this process.
    let open = DirStore::open(&store).expect("open");
    open.save_session(&mut Session::new(b.clone(), b"after the backup".to_vec()))
        .expect("save");
    let refused = sessionlog(&["restore", s(&dest), &dir_arg(&store)]);
    assert!(!refused.status.success(), "restore ran under an open store");
    assert!(
        open.has_session(&b).expect("has"),
        "the refused restore changed the store"
    );
    drop(open);

    let done = sessionlog(&["restore", s(&dest), &dir_arg(&store)]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(mode_of(&store), 0o700, "the restored directory's mode");
    let st = DirStore::open(&store).expect("open the restored store");
    assert!(st.has_session(&a).expect("has"));
    assert!(
        !st.has_session(&b).expect("has"),
        "the restore did not replace the store"
    );
    assert!(
        !st.has_session(&id_of(0, 0)).expect("has"),
        "the restore kept a writer's save made after the backup"
    );
    drop(st);
    let kept: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sessions.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "the replaced store is kept: {kept:?}");
    let old = DirStore::open(tmp.path().join(&kept[0])).expect("open the kept store");
    assert!(
        old.has_session(&b).expect("has"),
        "the kept directory is the replaced store"
    );
}
