//! Power-loss images of compactions under `SyncPolicy::Never`, whose swap
//! syncs the new file and its directory after letting go of the write lock
//! (DESIGN.md §8, the swap). Every I/O event of a workload (saves, deletes,
//! `sync()`, `compact()`, and saves and syncs made while a compaction
//! copies) is recorded with the file it reaches; an image at event k is
//! the file a power loss there would leave at the store's path: the old
//! file or the new one, as far as the renames the directory synced (and
//! perhaps some it had not), with what each file synced and an arbitrary
//! prefix of the rest, the last write torn. Each image must open and show
//! a state the store was in, no older than the last `sync()` or
//! `compact()` that returned.

#[macro_use]
mod common;
use common::id;
use common::power_loss::{apply, apply_torn_prefix, fresh_store, open_image};

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::child::{Rng, versioned_data};
use parking_lot::Mutex;
use sessionlog::internals::hook::{IoEvent, IoHook};
use sessionlog::{LogStore, ManualClock, Session, SessionStore, SyncPolicy};

#[derive(Clone, Debug)]
enum Ev {
    Write(PathBuf, u64, Vec<u8>),
    Sync(PathBuf),
    Rename(PathBuf, PathBuf),
    SyncDir,
    /// The first n logical operations are acknowledged.
    Ack(usize),
    /// The first n logical operations are durable (a `sync()` or a
    /// `compact()` returned).
    Durable(usize),
}

/// The sessions' data after each logical operation: `states[n]` after n.
type States = Vec<HashMap<String, Vec<u8>>>;

#[derive(Default)]
struct Model {
    events: Vec<Ev>,
    states: States,
}

impl Model {
    /// Applies a logical operation's effect and acknowledges it.
    fn done(&mut self, name: &str, data: Option<Vec<u8>>) {
        let mut next = self.states.last().cloned().unwrap_or_default();
        match data {
            Some(d) => next.insert(name.to_owned(), d),
            None => next.remove(name),
        };
        self.states.push(next);
        let n = self.states.len() - 1;
        self.events.push(Ev::Ack(n));
    }

    fn durable(&mut self) {
        let n = self.states.len() - 1;
        self.events.push(Ev::Durable(n));
    }
}

/// Records every event; at a compaction's first two fsyncs of its new file
/// (outside the write lock), saves a session first, and at the second also
/// syncs the store on odd compactions: those records reach the new file
/// after its last fsync before the swap, durable in the old file or not.
/// Between the compaction's rename and its directory's fsync, a second
/// handle on the store (as another process) saves and syncs: it follows
/// the swap, and its sync must not count before the rename is durable.
struct Recorder {
    model: Arc<Mutex<Model>>,
    tmp: PathBuf,
    store: Mutex<Option<Arc<LogStore>>>,
    other: Mutex<Option<Arc<LogStore>>>,
    injecting: AtomicBool,
    /// Fsyncs of the new file in the current compaction; compactions so
    /// far; whether the current one renamed its file and has not synced
    /// the directory since.
    counts: Mutex<(usize, usize, bool)>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    fn inject(&self, sync_no: usize, compaction: usize) {
        let Some(store) = self.store.lock().clone() else {
            return;
        };
        if self.injecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let name = format!("during{compaction}-{sync_no}");
        let data = versioned_data(&name, 1, 100 + 700 * sync_no);
        store
            .save_session(&mut Session::new(id(&name), data.clone()))
            .expect("save during a compaction");
        self.model.lock().done(&name, Some(data));
        if sync_no == 2 && compaction % 2 == 1 {
            store.sync().expect("sync during a compaction");
            self.model.lock().durable();
        }
        self.injecting.store(false, Ordering::SeqCst);
    }

    /// The other handle saves and syncs (it follows the swap first).
    fn inject_other(&self, compaction: usize) {
        let Some(other) = self.other.lock().clone() else {
            return;
        };
        if self.injecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let name = format!("other{compaction}");
        let data = versioned_data(&name, 1, 300);
        other
            .save_session(&mut Session::new(id(&name), data.clone()))
            .expect("save through the other handle");
        self.model.lock().done(&name, Some(data));
        other.sync().expect("sync through the other handle");
        self.model.lock().durable();
        self.injecting.store(false, Ordering::SeqCst);
    }
}

impl IoHook for Recorder {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        let ev = match e {
            IoEvent::Write {
                path,
                offset,
                bytes,
            } => Ev::Write(path.to_path_buf(), *offset, bytes.to_vec()),
            IoEvent::Sync { path } => {
                if *path == self.tmp && !self.injecting.load(Ordering::SeqCst) {
                    let (sync_no, compaction, _) = {
                        let mut c = self.counts.lock();
                        c.0 += 1;
                        *c
                    };
                    if sync_no <= 2 {
                        // Before the event: the fsync follows these writes.
                        self.inject(sync_no, compaction);
                    }
                }
                Ev::Sync(path.to_path_buf())
            }
            IoEvent::Rename { from, to } => {
                if *from == self.tmp {
                    let mut c = self.counts.lock();
                    *c = (0, c.1 + 1, true);
                }
                Ev::Rename(from.to_path_buf(), to.to_path_buf())
            }
            IoEvent::SyncDir { .. } => {
                let renamed = std::mem::take(&mut self.counts.lock().2);
                if renamed && !self.injecting.load(Ordering::SeqCst) {
                    let compaction = self.counts.lock().1;
                    self.inject_other(compaction);
                }
                Ev::SyncDir
            }
            _ => return Ok(()),
        };
        self.model.lock().events.push(ev);
        Ok(())
    }
}

/// A change to the directory: a file created at a path, or a rename.
enum DirOp {
    Create(PathBuf, usize),
    Rename(PathBuf, PathBuf),
}

/// Files a power loss at event `k` of `events` may leave at `path`, `base`
/// being the store file's bytes before the first event: for each prefix
/// of the changes to the directory (creations, renames) not yet synced, the file then at the path
/// with what it synced plus none, all, or a random prefix of the rest
/// (the last write of it torn).
fn images(events: &[Ev], k: usize, path: &Path, base: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    // Files by number (0: the store's file at the start); for each, its
    // writes (event index, offset, bytes) and the index of its last sync.
    let mut writes: Vec<Vec<(usize, u64, Vec<u8>)>> = vec![Vec::new()];
    let mut synced: Vec<Option<usize>> = vec![None];
    let mut live: HashMap<PathBuf, usize> = HashMap::from([(path.to_owned(), 0)]);
    let mut durable = live.clone();
    // What happened to the directory since its last sync, in order: a file
    // created (its first write), or a rename.
    let mut dir_ops: Vec<DirOp> = Vec::new();
    for (j, e) in events[..k].iter().enumerate() {
        match e {
            Ev::Write(p, off, b) => {
                let f = match live.get(p) {
                    Some(&f) => f,
                    None => {
                        writes.push(Vec::new());
                        synced.push(None);
                        let f = writes.len() - 1;
                        live.insert(p.clone(), f);
                        dir_ops.push(DirOp::Create(p.clone(), f));
                        f
                    }
                };
                writes[f].push((j, *off, b.clone()));
            }
            Ev::Sync(p) => {
                if let Some(&f) = live.get(p) {
                    synced[f] = Some(j);
                }
            }
            Ev::Rename(from, to) => {
                if let Some(f) = live.remove(from) {
                    live.insert(to.clone(), f);
                }
                dir_ops.push(DirOp::Rename(from.clone(), to.clone()));
            }
            Ev::SyncDir => {
                durable = live.clone();
                dir_ops.clear();
            }
            Ev::Ack(_) | Ev::Durable(_) => {}
        }
    }
    let mut out = Vec::new();
    // The journal may have committed some of the directory's changes that
    // its sync had not: a prefix of them.
    for take in 0..=dir_ops.len() {
        let mut at = durable.clone();
        for op in dir_ops.iter().take(take) {
            match op {
                DirOp::Create(p, f) => {
                    at.insert(p.clone(), *f);
                }
                DirOp::Rename(from, to) => {
                    if let Some(f) = at.remove(from) {
                        at.insert(to.clone(), f);
                    }
                }
            }
        }
        let f = at[path];
        let mut img = if f == 0 { base.to_vec() } else { Vec::new() };
        let mut pending = Vec::new();
        for (j, off, b) in &writes[f] {
            if synced[f].is_some_and(|s| *j < s) {
                apply(&mut img, *off, b);
            } else {
                pending.push((*off, b));
            }
        }
        let mut keeps = vec![
            0,
            rng.below(pending.len() as u64 + 1) as usize,
            pending.len(),
        ];
        keeps.dedup();
        for keep in keeps {
            let mut img = img.clone();
            apply_torn_prefix(&mut img, &pending, keep, rng);
            out.push(img);
        }
    }
    out
}

#[test]
fn power_loss_images_of_compactions_under_never_keep_what_was_synced() {
    let mut rng = Rng::from_env_or_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, base) = fresh_store(dir.path());
    let model = Arc::new(Mutex::new(Model {
        events: Vec::new(),
        states: vec![HashMap::new()],
    }));
    let rec = Arc::new(Recorder {
        model: Arc::clone(&model),
        tmp: dir.path().join("s.db.compact"),
        store: Mutex::new(None),
        other: Mutex::new(None),
        injecting: AtomicBool::new(false),
        counts: Mutex::new((0, 0, false)),
    });
    let store = Arc::new(
        LogStore::options()
            .sync(SyncPolicy::Never)
            .background(false)
            .clock(ManualClock::fixed())
            .io_hook(rec.clone())
            .open(&path)
            .expect("open"),
    );
    *rec.store.lock() = Some(Arc::clone(&store));
    let other = LogStore::options()
        .sync(SyncPolicy::Never)
        .background(false)
        .clock(ManualClock::fixed())
        .io_hook(rec.clone())
        .open(&path)
        .expect("open a second handle");
    *rec.other.lock() = Some(Arc::new(other));
    let names = ["p", "q", "r", "s"];
    for i in 0..50usize {
        let n = names[(i * 7) % names.len()];
        match i % 10 {
            6 => {
                store.delete_session(&id(n)).expect("delete");
                model.lock().done(n, None);
            }
            7 => {
                store.touch_session(&id(n)).expect("touch");
                let data = model.lock().states.last().and_then(|s| s.get(n).cloned());
                model.lock().done(n, data);
            }
            8 => {
                store.sync().expect("sync");
                model.lock().durable();
            }
            9 => {
                store.compact().expect("compact");
                model.lock().durable();
            }
            _ => {
                let data = versioned_data(n, i as u64, 40 + (i * 331) % 3000);
                store
                    .save_session(&mut Session::new(id(n), data.clone()))
                    .expect("save");
                model.lock().done(n, Some(data));
            }
        }
    }
    *rec.store.lock() = None;
    *rec.other.lock() = None;
    drop(store);
    let (events, states) = {
        let m = model.lock();
        (m.events.clone(), m.states.clone())
    };
    let compactions = rec.counts.lock().1;
    assert_eq!(compactions, 5, "every compaction swapped");
    assert!(
        states.len() > 55,
        "{} operations, saves during compactions included",
        states.len()
    );
    let mut checked = 0;
    for (k, img) in (0..=events.len()).flat_map(|k| {
        images(&events, k, &path, &base, &mut rng)
            .into_iter()
            .map(move |i| (k, i))
    }) {
        let (mut acked, mut floor) = (0, 0);
        for e in &events[..k] {
            match e {
                Ev::Ack(n) => acked = *n,
                Ev::Durable(n) => floor = *n,
                _ => {}
            }
        }
        let store = open_image(dir.path(), &img, k);
        let every: std::collections::HashSet<&String> =
            states.iter().flat_map(|s| s.keys()).collect();
        let got: HashMap<String, Vec<u8>> = every
            .into_iter()
            .filter_map(|n| {
                store
                    .load_session(&id(n))
                    .expect("load")
                    .map(|s| (n.clone(), s.data))
            })
            .collect();
        let last = (acked + 1).min(states.len() - 1);
        assert!(
            (floor..=last).any(|j| states[j] == got),
            "image at event {k}: durable up to operation {floor}, acknowledged {acked}: \
             the image shows no state in between"
        );
        checked += 1;
    }
    assert!(checked > 100, "{checked} images checked");
}
