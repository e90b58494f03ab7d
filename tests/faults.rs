//! Guards what sessionlog does when I/O fails or power is lost, through the
//! engine's I/O seam (`LogOptions::io_hook`):
//! - every write, growth, sync, rename and directory sync of a scripted
//!   workload is failed in turn (the N-th operation, for every N): the
//!   failing call returns an error, a failed write or sync poisons the
//!   store (further writes refused until reopened) while loads go on, and a
//!   reopen finds every acknowledged save;
//! - power-loss images (what was synced, plus an arbitrary prefix of what
//!   was not, the last write possibly torn) taken at every I/O event of a
//!   workload under `SyncPolicy::Always` open, hold every acknowledged
//!   save, and show a state the store really was in.

#[macro_use]
mod common;
use common::id;
use common::power_loss::{apply, apply_torn_prefix, fresh_store, open_image};

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::child::{Rng, versioned_data};
use parking_lot::Mutex;
use sessionlog::internals::hook::{IoEvent, IoHook};
use sessionlog::{Error, LogStore, ManualClock, Session, SessionStore, SyncPolicy};

/// Header words (8-byte writes) are stores to memory: never counted.
fn is_word(e: &IoEvent<'_>) -> bool {
    matches!(e, IoEvent::Write { bytes, .. } if bytes.len() == 8)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Failed {
    /// A write or sync of the log, or the directory sync after a rename:
    /// the store must poison itself.
    Poisoning,
    /// Growth of the log, or the compaction's own file or rename: an error,
    /// and the store goes on.
    Plain,
}

#[derive(Debug)]
struct FailAt {
    at: Option<usize>,
    seen: AtomicUsize,
    log: PathBuf,
    failed: Mutex<Option<Failed>>,
}

impl IoHook for FailAt {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        if is_word(e) {
            return Ok(());
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if Some(n) != self.at {
            return Ok(());
        }
        let kind = match e {
            IoEvent::Write { path, .. }
            | IoEvent::Sync { path }
            | IoEvent::SyncRange { path, .. }
                if *path == self.log =>
            {
                Failed::Poisoning
            }
            IoEvent::SyncDir { .. } => Failed::Poisoning,
            _ => Failed::Plain,
        };
        *self.failed.lock() = Some(kind);
        Err(io::Error::from_raw_os_error(
            if matches!(e, IoEvent::Grow { .. }) {
                libc::ENOSPC
            } else {
                libc::EIO
            },
        ))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Save(&'static str, usize),
    SaveIfUnchanged(&'static str, usize),
    Touch(&'static str),
    Delete(&'static str),
    Sync,
    Compact,
}

fn script() -> Vec<Op> {
    use Op::*;
    vec![
        Save("a", 100),
        Save("b", 3000),
        Touch("a"),
        SaveIfUnchanged("b", 200),
        Delete("a"),
        Save("c", 50),
        Sync,
        Compact,
        Save("a", 700),
        Touch("b"),
        Save("d", 1_500_000),
        Delete("c"),
        Compact,
        Save("e", 10),
        SaveIfUnchanged("e", 20),
    ]
}

/// What an acknowledged operation did: the session and its new value.
type Effect = (&'static str, Option<Vec<u8>>);

/// Possible values of each session: `None` for absent.
type Allowed = HashMap<&'static str, Vec<Option<Vec<u8>>>>;

fn check_store(store: &LogStore, allowed: &Allowed, when: &str) {
    for (name, values) in allowed {
        let got = store
            .load_session(&id(name))
            .unwrap_or_else(|e| panic!("{when}: load {name}: {e}"));
        let got = got.map(|s| s.data);
        assert!(
            values.contains(&got),
            "{when}: {name} = {:?} not in {} allowed values",
            got.map(|d| d.len()),
            values.len()
        );
    }
}

/// Runs the script with the `at`-th I/O operation failing; returns how
/// many operations the run made.
fn run(dir: &Path, at: Option<usize>, policy: SyncPolicy) -> usize {
    let path = dir.join("s.db");
    let hook = Arc::new(FailAt {
        at,
        seen: AtomicUsize::new(0),
        log: path.clone(),
        failed: Mutex::new(None),
    });
    let store = LogStore::options()
        .sync(policy)
        .background(false)
        .clock(ManualClock::fixed())
        .io_hook(hook.clone())
        .open(&path)
        .expect("open");
    let mut allowed: Allowed = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| (*n, vec![None]))
        .collect();
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for (i, op) in script().into_iter().enumerate() {
        let failed_before = *hook.failed.lock();
        let result: sessionlog::Result<Option<Effect>> = match op {
            Op::Save(n, len) | Op::SaveIfUnchanged(n, len) => {
                let v = versions.get(n).copied().unwrap_or(0);
                let data = versioned_data(n, i as u64, len);
                let mut s = Session::new(id(n), data.clone());
                let r = if matches!(op, Op::Save(..)) {
                    store.save_session(&mut s)
                } else {
                    let mut cur = store
                        .load_session(&id(n))
                        .expect("load")
                        .unwrap_or(s.clone());
                    cur.data = data.clone();
                    let r = store.save_session_if_unchanged(&mut cur);
                    s = cur;
                    r
                };
                if r.is_ok() {
                    versions.insert(n, s.version().max(v));
                }
                r.map(|()| Some((n, Some(data))))
            }
            Op::Touch(n) => store.touch_session(&id(n)).map(|_| None),
            Op::Delete(n) => store.delete_session(&id(n)).map(|_| Some((n, None))),
            Op::Sync => store.sync().map(|()| None),
            Op::Compact => store.compact().map(|_| None),
        };
        let failed_now = *hook.failed.lock();
        match result {
            Ok(Some((n, v))) => allowed.insert(n, vec![v]).map(|_| ()).unwrap_or(()),
            Ok(None) => {}
            Err(e) => {
                assert!(
                    failed_now.is_some(),
                    "op {i} {op:?} failed with no injected fault: {e}"
                );
                if failed_before == Some(Failed::Poisoning) {
                    assert!(
                        matches!(e, Error::Poisoned { .. }),
                        "op {i} after poisoning: {e:?}"
                    );
                } else {
                    assert!(
                        matches!(e, Error::Io { .. }),
                        "op {i}: injected failure reported as {e:?}"
                    );
                    assert!(
                        e.to_string().contains("s.db"),
                        "the error names the file: {e}"
                    );
                }
                // The failed operation may or may not have taken effect.
                match op {
                    Op::Save(n, len) | Op::SaveIfUnchanged(n, len) => {
                        allowed
                            .entry(n)
                            .or_default()
                            .push(Some(versioned_data(n, i as u64, len)));
                    }
                    Op::Delete(n) => allowed.entry(n).or_default().push(None),
                    _ => {}
                }
            }
        }
        check_store(
            &store,
            &allowed,
            &format!("after op {i} {op:?} (fault at {at:?})"),
        );
    }
    let total = hook.seen.load(Ordering::SeqCst);
    drop(store);
    let store = LogStore::options()
        .background(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("reopen (fault at {at:?}): {e}"));
    check_store(&store, &allowed, &format!("after reopen (fault at {at:?})"));
    // The reopened store takes writes again.
    store
        .save_session(&mut Session::new(id("z"), b"after".to_vec()))
        .expect("writes after reopen");
    total
}

fn every_failed_io_operation(policy: SyncPolicy) {
    let clean = tempfile::tempdir().expect("temp dir");
    let total = run(clean.path(), None, policy);
    assert!(total > 30, "the script makes {total} I/O operations");
    for at in 0..total {
        let dir = tempfile::tempdir().expect("temp dir");
        run(dir.path(), Some(at), policy);
    }
}

#[test]
fn every_failed_io_operation_is_reported_and_loses_nothing() {
    every_failed_io_operation(SyncPolicy::Always);
}

/// Under `SyncPolicy::Never` a compaction's swap syncs the new file and
/// the directory after letting go of the write lock: a failure there is
/// reported by `compact()` and poisons the handle all the same.
#[test]
fn every_failed_io_operation_is_reported_and_loses_nothing_under_never() {
    every_failed_io_operation(SyncPolicy::Never);
}

#[derive(Debug, Clone)]
enum Ev {
    Write(u64, Vec<u8>),
    /// `fdatasync`: every earlier write is durable.
    Sync,
    /// A range written back with `RWF_DSYNC`: the earlier writes inside it
    /// are durable, nothing else (not the header's words).
    SyncRange(u64, u64),
    /// The workload acknowledged operation `n`.
    Ack(usize),
}

#[derive(Debug)]
struct Recorder {
    log: PathBuf,
    events: Mutex<Vec<Ev>>,
}

impl IoHook for Recorder {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        match e {
            IoEvent::Write {
                path,
                offset,
                bytes,
            } if *path == self.log => {
                self.events.lock().push(Ev::Write(*offset, bytes.to_vec()));
            }
            IoEvent::Sync { path } if *path == self.log => self.events.lock().push(Ev::Sync),
            IoEvent::SyncRange { path, start, end } if *path == self.log => {
                self.events.lock().push(Ev::SyncRange(*start, *end));
            }
            _ => {}
        }
        Ok(())
    }
}

#[test]
fn power_loss_images_keep_every_acknowledged_save_under_always() {
    let mut rng = Rng::from_env_or_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, base) = fresh_store(dir.path());
    let rec = Arc::new(Recorder {
        log: path.clone(),
        events: Mutex::new(Vec::new()),
    });
    let store = LogStore::options()
        .sync(SyncPolicy::Always)
        .background(false)
        .clock(ManualClock::fixed())
        .io_hook(rec.clone())
        .open(&path)
        .expect("open");
    let names = ["p", "q", "r", "s"];
    let mut state: HashMap<&str, Vec<u8>> = HashMap::new();
    let mut states = vec![state.clone()];
    for i in 0..60usize {
        let n = names[(i * 7) % names.len()];
        match i % 5 {
            3 => {
                store.delete_session(&id(n)).expect("delete");
                state.remove(n);
            }
            4 => {
                store.touch_session(&id(n)).expect("touch");
            }
            _ => {
                let data = versioned_data(n, i as u64, 40 + (i * 331) % 3000);
                store
                    .save_session(&mut Session::new(id(n), data.clone()))
                    .expect("save");
                state.insert(n, data);
            }
        }
        states.push(state.clone());
        rec.events.lock().push(Ev::Ack(i + 1));
    }
    drop(store);
    let events = rec.events.lock().clone();
    let mut images = 0;
    for k in 0..=events.len() {
        // Durable: every write before the last full sync before k, and
        // every write inside a range synced after it and before k.
        let last_sync = events[..k].iter().rposition(|e| matches!(e, Ev::Sync));
        let durable = |j: usize, off: u64, len: u64| {
            last_sync.is_some_and(|s| j < s)
                || events[j..k]
                    .iter()
                    .any(|e| matches!(e, Ev::SyncRange(a, b) if *a <= off && off + len <= *b))
        };
        let mut img = base.clone();
        let mut pending = Vec::new();
        for (j, e) in events[..k].iter().enumerate() {
            if let Ev::Write(off, b) = e {
                if durable(j, *off, b.len() as u64) {
                    apply(&mut img, *off, b);
                } else {
                    pending.push((*off, b.clone()));
                }
            }
        }
        // Plus a prefix of what was not synced, the last write torn.
        let keep = rng.below(pending.len() as u64 + 1) as usize;
        apply_torn_prefix(&mut img, &pending, keep, &mut rng);
        let acked = events[..k]
            .iter()
            .filter_map(|e| if let Ev::Ack(n) = e { Some(*n) } else { None })
            .max()
            .unwrap_or(0);
        let store = open_image(dir.path(), &img, k);
        let got: HashMap<&str, Vec<u8>> = names
            .iter()
            .filter_map(|n| {
                store
                    .load_session(&id(n))
                    .expect("load")
                    .map(|s| (*n, s.data))
            })
            .collect();
        // Everything acknowledged, and at most the one operation in flight.
        let ok = got == states[acked] || (acked + 1 < states.len() && got == states[acked + 1]);
        assert!(
            ok,
            "image at event {k}: acknowledged {acked} operations, store shows another state"
        );
        images += 1;
    }
    assert!(images > 100, "{images} images checked");
}

/// What the handles of the shared-flush tests saw, in one order: the
/// events of every handle, and the committed words each has published.
#[derive(Debug, Default)]
struct Shared {
    events: Mutex<Vec<Ev>>,
    state: Mutex<Handles>,
    changed: parking_lot::Condvar,
}

#[derive(Debug, Default)]
struct Handles {
    /// Per handle: committed words published (appends made visible).
    commits: Vec<usize>,
    /// Per handle: range syncs it made (`SyncRange` events).
    flushes: Vec<Vec<(u64, u64)>>,
    /// Per handle: saves its thread saw acknowledged.
    acked: Vec<usize>,
    /// Per handle: its thread has finished its workload.
    done: Vec<bool>,
}

impl Shared {
    fn new(n: usize) -> Arc<Shared> {
        let s = Shared::default();
        *s.state.lock() = Handles {
            commits: vec![0; n],
            flushes: vec![Vec::new(); n],
            acked: vec![0; n],
            done: vec![false; n],
        };
        Arc::new(s)
    }
}

/// The recorder of one of several handles on one store. With `gate`, the
/// handle's flushes (every other one, from its first) wait, while it holds
/// the flush turn and after it read the committed end it will flush to,
/// until another handle has published an append: that append is not
/// covered by this flush, and its handle must not be acknowledged by it.
/// Unless none can come: every other handle is done, or has an append
/// that waits for a flush (its thread saves one session at a time).
#[derive(Debug)]
struct HandleRecorder {
    log: PathBuf,
    me: usize,
    gate: bool,
    shared: Arc<Shared>,
}

impl HandleRecorder {
    fn others_commits(&self, st: &Handles) -> usize {
        (0..st.commits.len())
            .filter(|&h| h != self.me)
            .map(|h| st.commits[h])
            .sum()
    }
}

impl IoHook for HandleRecorder {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        match e {
            IoEvent::Write {
                path,
                offset,
                bytes,
            } if *path == self.log => {
                self.shared
                    .events
                    .lock()
                    .push(Ev::Write(*offset, bytes.to_vec()));
                if *offset == sessionlog::internals::format::H_COMMITTED as u64 {
                    // Reported after the word is stored: the append is
                    // visible to every handle.
                    self.shared.state.lock().commits[self.me] += 1;
                    self.shared.changed.notify_all();
                }
            }
            IoEvent::Sync { path } if *path == self.log => {
                self.shared.events.lock().push(Ev::Sync);
            }
            IoEvent::SyncRange { path, start, end } if *path == self.log => {
                let mut st = self.shared.state.lock();
                st.flushes[self.me].push((*start, *end));
                if self.gate && st.flushes[self.me].len() % 2 == 1 {
                    let seen = self.others_commits(&st);
                    while self.others_commits(&st) == seen
                        && !(0..st.done.len())
                            .all(|h| h == self.me || st.done[h] || st.commits[h] > st.acked[h])
                    {
                        self.shared.changed.wait(&mut st);
                    }
                }
                drop(st);
                self.shared.events.lock().push(Ev::SyncRange(*start, *end));
            }
            _ => {}
        }
        Ok(())
    }
}

/// `n` handles on a new store at `path`, each with its recorder (the
/// first `gated` of them gating their flushes), `SyncPolicy::Always`. A
/// long lock timeout: no handle gives up on another's flush turn and
/// flushes alone, so every flush is an elected one.
fn shared_handles(path: &Path, n: usize, gated: usize) -> (Vec<LogStore>, Arc<Shared>) {
    let shared = Shared::new(n);
    let stores = (0..n)
        .map(|me| {
            LogStore::options()
                .sync(SyncPolicy::Always)
                .background(false)
                .lock_timeout(std::time::Duration::from_secs(600))
                .io_hook(Arc::new(HandleRecorder {
                    log: path.to_owned(),
                    me,
                    gate: me < gated,
                    shared: Arc::clone(&shared),
                }))
                .open(path)
                .expect("open")
        })
        .collect();
    (stores, shared)
}

/// Durable saves of several handles on one store (as several processes:
/// each handle has its own lock-file mapping and group commit) share
/// flushes. Power-loss images taken at every event hold every save any
/// handle acknowledged: no handle is acknowledged by a flush that began
/// before its append was written. The gated handles make that case
/// happen: while one holds the flush turn, another appends past the end
/// it flushes to.
#[test]
fn power_loss_images_keep_every_save_acknowledged_through_another_handle_s_flush() {
    const HANDLES: usize = 3;
    const SAVES: usize = 16;
    let mut rng = Rng::from_env_or_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, base) = fresh_store(dir.path());
    let (stores, shared) = shared_handles(&path, HANDLES, 2);
    // Acknowledgements as events: (handle, session, version).
    let acks: Mutex<Vec<(usize, usize, String, u64)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (h, store) in stores.iter().enumerate() {
            let (shared, acks) = (&shared, &acks);
            s.spawn(move || {
                for i in 0..SAVES {
                    let name = format!("h{h}-{}", i % 3);
                    let v = (i / 3 + 1) as u64;
                    let data = versioned_data(&name, v, 40 + (i * 331 + h * 97) % 2500);
                    store
                        .save_session(&mut Session::new(id(&name), data))
                        .expect("save");
                    {
                        let mut ev = shared.events.lock();
                        let at = ev.len();
                        ev.push(Ev::Ack(at));
                        acks.lock().push((at, h, name, v));
                    }
                    shared.state.lock().acked[h] += 1;
                    shared.changed.notify_all();
                }
                shared.state.lock().done[h] = true;
                shared.changed.notify_all();
            });
        }
    });
    drop(stores);
    let events = shared.events.lock().clone();
    let acks = acks.into_inner();
    let flushes: usize = shared.state.lock().flushes.iter().map(Vec::len).sum();
    assert!(
        flushes < HANDLES * SAVES,
        "{flushes} flushes for {} saves: no save was covered by another's flush",
        HANDLES * SAVES
    );
    let mut images = 0;
    for k in 0..=events.len() {
        let last_sync = events[..k].iter().rposition(|e| matches!(e, Ev::Sync));
        let durable = |j: usize, off: u64, len: u64| {
            last_sync.is_some_and(|s| j < s)
                || events[j..k]
                    .iter()
                    .any(|e| matches!(e, Ev::SyncRange(a, b) if *a <= off && off + len <= *b))
        };
        let mut img = base.clone();
        let mut pending = Vec::new();
        for (j, e) in events[..k].iter().enumerate() {
            if let Ev::Write(off, b) = e {
                if durable(j, *off, b.len() as u64) {
                    apply(&mut img, *off, b);
                } else {
                    pending.push((*off, b.clone()));
                }
            }
        }
        let keep = rng.below(pending.len() as u64 + 1) as usize;
        apply_torn_prefix(&mut img, &pending, keep, &mut rng);
        let store = open_image(dir.path(), &img, k);
        let mut acked: HashMap<&str, u64> = HashMap::new();
        for (at, _, name, v) in &acks {
            if *at < k {
                let e = acked.entry(name.as_str()).or_default();
                *e = (*e).max(*v);
            }
        }
        for (name, v) in acked {
            let s = store
                .load_session(&id(name))
                .expect("load")
                .unwrap_or_else(|| panic!("image at event {k}: acknowledged {name} v{v} lost"));
            let head = String::from_utf8_lossy(&s.data[..s.data.len().min(24)]).into_owned();
            let found: u64 = head
                .split(':')
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("image at event {k}: {name} holds {head:?}"));
            assert!(
                found >= v,
                "image at event {k}: {name} acknowledged at v{v}, the image holds v{found}"
            );
            assert_eq!(
                s.data,
                versioned_data(name, found, s.data.len()),
                "image at event {k}: {name} altered"
            );
        }
        images += 1;
    }
    assert!(images > 100, "{images} images checked");
}

/// Two handles append while a third holds the flush turn: when its turn
/// ends, one flush covers both, and the handle it covered does not flush
/// again (DESIGN.md §6). Deterministic: the two save only once the third
/// holds the turn, and it lets the turn go only once both appends are
/// visible.
#[test]
fn a_save_covered_by_another_handle_s_flush_is_not_flushed_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    drop(
        LogStore::options()
            .background(false)
            .open(&path)
            .expect("create"),
    );
    let shared = Shared::new(3);
    // Handle 0 waits, in its first flush, for appends of both others.
    #[derive(Debug)]
    struct Holder(Arc<Shared>, PathBuf);
    impl IoHook for Holder {
        fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
            if let IoEvent::SyncRange { path, start, end } = e
                && *path == self.1
            {
                let mut st = self.0.state.lock();
                st.flushes[0].push((*start, *end));
                self.0.changed.notify_all();
                if st.flushes[0].len() == 1 {
                    while st.commits[1..].contains(&0) {
                        self.0.changed.wait(&mut st);
                    }
                }
            }
            Ok(())
        }
    }
    let open = |hook: Arc<dyn IoHook>| {
        LogStore::options()
            .sync(SyncPolicy::Always)
            .background(false)
            .lock_timeout(std::time::Duration::from_secs(600))
            .io_hook(hook)
            .open(&path)
            .expect("open")
    };
    let holder = open(Arc::new(Holder(Arc::clone(&shared), path.clone())));
    let others: Vec<LogStore> = (1..3)
        .map(|me| {
            open(Arc::new(HandleRecorder {
                log: path.clone(),
                me,
                gate: false,
                shared: Arc::clone(&shared),
            }))
        })
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            holder
                .save_session(&mut Session::new(id("held"), b"h".to_vec()))
                .expect("save");
        });
        for (k, store) in others.iter().enumerate() {
            let shared = &shared;
            s.spawn(move || {
                {
                    let mut st = shared.state.lock();
                    while st.flushes[0].is_empty() {
                        shared.changed.wait(&mut st);
                    }
                }
                store
                    .save_session(&mut Session::new(id(&format!("o{k}")), b"o".to_vec()))
                    .expect("save");
            });
        }
    });
    let flushes = shared.state.lock().flushes.clone();
    let committed = sessionlog::check(&path).expect("check").committed;
    let synced = sessionlog::check(&path).expect("check").synced;
    assert_eq!(flushes[0].len(), 1, "the holder flushed once: {flushes:?}");
    assert_eq!(
        flushes[1].len() + flushes[2].len(),
        1,
        "one flush covered both appends made during the holder's: {flushes:?}"
    );
    let last = flushes[1].iter().chain(&flushes[2]).next().expect("one");
    assert_eq!(last.1, committed, "it flushed up to the committed end");
    assert!(
        synced >= committed,
        "synced {synced} < committed {committed}"
    );
    drop(others);
    drop(holder);
    let store = LogStore::open(&path).expect("reopen");
    for n in ["held", "o0", "o1"] {
        assert!(store.has_session(&id(n)).expect("has"), "{n} lost");
    }
}
