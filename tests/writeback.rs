//! Guards the writeback behind the writers (`LogOptions::writeback_every`,
//! DESIGN.md §6), through the engine's I/O seam:
//! - a handle starts writeback of what its writers append, chunk by chunk,
//!   over whole pages past the header page and at or below the committed
//!   end (the pages writers still store into are never cleaned under
//!   them), and waits for the writeback further behind, under
//!   `SyncPolicy::Never` (records written through the map) and
//!   `Interval` (written with `pwrite`);
//! - a writeback that fails with an I/O error poisons the handle, as a
//!   failed sync does: the kernel reports a lost page to one waiter only.

#[macro_use]
mod common;
use common::id;

use std::io;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use parking_lot::Mutex;
use sessionlog::internals::hook::{IoEvent, IoHook};
use sessionlog::{Error, LogStore, Session, SessionStore, SyncPolicy};

/// Longest a test waits for the writeback thread's next step before it
/// counts as never coming (a bound on a wait for an event, not a sleep).
const PATIENCE: Duration = Duration::from_secs(60);

/// One writeback call the hook saw: start, end, whether it waited.
type Seen = (u64, u64, bool);

/// Reports every writeback of the log over a channel; fails them with
/// `EIO` when told to.
#[derive(Debug)]
struct Watch {
    tx: Mutex<Sender<Seen>>,
    fail: bool,
}

impl IoHook for Watch {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        if let IoEvent::Writeback {
            start, end, wait, ..
        } = *e
        {
            let _ = self.tx.lock().send((start, end, wait));
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
        Ok(())
    }
}

fn open(path: &std::path::Path, sync: SyncPolicy, fail: bool) -> (LogStore, Receiver<Seen>) {
    let (tx, rx) = channel();
    let store = LogStore::options()
        .sync(sync)
        .writeback_every(1 << 20)
        .io_hook(std::sync::Arc::new(Watch {
            tx: Mutex::new(tx),
            fail,
        }))
        .open(path)
        .expect("open");
    (store, rx)
}

/// Saves sessions of 64 KiB until about `bytes` are appended.
fn fill(store: &LogStore, bytes: usize) -> sessionlog::Result<()> {
    for i in 0..bytes / (64 << 10) {
        store.save_session(&mut Session::new(
            id(&format!("s{i}")),
            vec![b'x'; 64 << 10],
        ))?;
    }
    Ok(())
}

fn writeback_follows_the_writer(sync: SyncPolicy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.log");
    let (store, rx) = open(&path, sync, false);
    fill(&store, 24 << 20).expect("save");
    let committed = store.stats().expect("stats").log_bytes + 4096;
    // The thread catches up with a writer that crossed a chunk boundary:
    // the writeback started reaches the last whole page the saves filled
    // before the last chunk boundary, and some range was waited for.
    let mut started_to = 4096;
    let mut waited = false;
    while started_to < (committed >> 20 << 20).min(committed / 4096 * 4096) || !waited {
        let (start, end, wait) = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("writeback stopped at {started_to} of {committed}"));
        assert!(start >= 4096, "the header page was written back: {start}");
        assert!(start < end, "an empty range: {start}..{end}");
        assert!(
            start.is_multiple_of(4096) && end.is_multiple_of(4096),
            "not whole pages: {start}..{end}"
        );
        assert!(
            end <= committed,
            "past the committed end: {end} > {committed}"
        );
        if wait {
            waited = true;
            assert!(end < started_to, "waited for a range not yet started");
        } else {
            assert_eq!(start, started_to, "a gap or overlap in what was started");
            started_to = end;
        }
    }
    drop(store);
    let again = LogStore::options().open(&path).expect("reopen");
    assert_eq!(
        again.stats().expect("stats").sessions,
        (24 << 20) / (64 << 10)
    );
}

#[test]
fn writeback_follows_the_writer_through_the_map() {
    writeback_follows_the_writer(SyncPolicy::Never);
}

#[test]
fn writeback_follows_the_writer_with_pwrite() {
    writeback_follows_the_writer(SyncPolicy::Interval(Duration::from_secs(3600)));
}

#[test]
fn a_failed_writeback_poisons_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.log");
    let (store, rx) = open(&path, SyncPolicy::Never, true);
    // Saves go on until the thread, woken at the first MiB, fails its
    // writeback and poisons the store; from then on every save is refused.
    let mut refused = None;
    let mut tried = false;
    for i in 0..1_000_000 {
        let data = vec![b'x'; 64 << 10];
        if let Err(e) = store.save_session(&mut Session::new(id(&format!("s{i}")), data)) {
            refused = Some((i, e));
            break;
        }
        if i >= 16 && !tried {
            // Past the first MiB: wait for the writeback to be tried.
            rx.recv_timeout(PATIENCE).expect("no writeback was tried");
            tried = true;
        }
    }
    let Some((saved, error)) = refused else {
        panic!("saves were never refused");
    };
    assert!(saved >= 16, "refused before a MiB was appended: {saved}");
    assert!(matches!(error, Error::Poisoned { .. }), "{error:?}");
    assert!(
        store
            .save_session(&mut Session::new(id("late"), vec![1; 10]))
            .is_err(),
        "a later save was taken"
    );
    // Loads go on.
    assert!(store.load_session(&id("s0")).expect("load").is_some());
}

/// Fails the first wait a compaction makes for the writeback of its new
/// file (`<log>.compact`), once.
#[derive(Debug, Default)]
struct FailCompactionWait(std::sync::atomic::AtomicBool);

impl IoHook for FailCompactionWait {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        if let IoEvent::Writeback {
            path, wait: true, ..
        } = *e
            && path.to_string_lossy().ends_with(".compact")
            && !self.0.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

#[test]
fn a_failed_write_behind_fails_the_compaction_and_keeps_every_session() {
    // A compaction waits for the writeback of its new file behind its
    // writes; that wait reports a lost page to this file description once
    // and the final fsync then would not: the compaction must fail there.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.log");
    let hook = std::sync::Arc::new(FailCompactionWait::default());
    let open = || {
        LogStore::options()
            .sync(SyncPolicy::Never)
            .background(false)
            .io_hook(hook.clone())
            .open(&path)
            .expect("open")
    };
    let store = open();
    // 12 MiB of live sessions: the new file grows past the write-behind
    // distance, so the compaction waits.
    fill(&store, 12 << 20).expect("fill");
    let n = (12 << 20) / (64 << 10);
    let error = store
        .compact()
        .expect_err("the compaction went on past a failed writeback");
    assert!(
        hook.0.load(std::sync::atomic::Ordering::SeqCst),
        "no wait was made"
    );
    assert!(
        matches!(&error, Error::Io { op: "write back", path, .. } if path.to_string_lossy().ends_with(".compact")),
        "{error:?}"
    );
    let all_there = |store: &LogStore| {
        (0..n).all(|i| {
            store
                .load_session(&id(&format!("s{i}")))
                .expect("load")
                .is_some()
        })
    };
    assert!(
        all_there(&store),
        "a session was lost with the failed compaction"
    );
    // The next compaction (the hook fails once) goes through, and a reopen
    // has every session.
    store.compact().expect("a second compaction");
    drop(store);
    assert!(
        all_there(&open()),
        "a session was lost after the second compaction"
    );
}

/// A growth of the log the hook saw: the thread, the length asked for.
type Growth = (String, u64);

/// A prefault the hook saw: the thread, start and end.
type Prefault = (String, u64, u64);

/// Reports what the handle's thread does ahead of the writers, each with
/// the thread that did it: every growth of the log (the length asked for)
/// and every prefault (start and end); and keeps the end of every record
/// write.
#[derive(Debug)]
struct Ahead {
    grows: Mutex<Sender<Growth>>,
    prefaults: Mutex<Sender<Prefault>>,
    end: std::sync::atomic::AtomicU64,
}

impl IoHook for Ahead {
    fn before(&self, e: &IoEvent<'_>) -> io::Result<()> {
        let who = || std::thread::current().name().unwrap_or("").to_owned();
        match *e {
            IoEvent::Grow { len, .. } => {
                let _ = self.grows.lock().send((who(), len));
            }
            IoEvent::Prefault { start, end, .. } => {
                let _ = self.prefaults.lock().send((who(), start, end));
            }
            IoEvent::Write { offset, bytes, .. } if bytes.len() > 8 => {
                self.end.fetch_max(
                    offset + bytes.len() as u64,
                    std::sync::atomic::Ordering::SeqCst,
                );
            }
            _ => {}
        }
        Ok(())
    }
}

/// A store at `path` under `SyncPolicy::Never` watched by an [`Ahead`]
/// hook, with the receivers of its growths and its prefaults.
fn open_ahead(
    path: &std::path::Path,
) -> (
    LogStore,
    std::sync::Arc<Ahead>,
    Receiver<Growth>,
    Receiver<Prefault>,
) {
    let (grows, grown) = channel();
    let (prefaults, prefaulted) = channel();
    let hook = std::sync::Arc::new(Ahead {
        grows: Mutex::new(grows),
        prefaults: Mutex::new(prefaults),
        end: std::sync::atomic::AtomicU64::new(0),
    });
    let store = LogStore::options()
        .sync(SyncPolicy::Never)
        .io_hook(hook.clone())
        .open(path)
        .expect("open");
    (store, hook, grown, prefaulted)
}

/// The log grows ahead of the writers (DESIGN.md §6): once an append
/// comes within half a growth step of the file's end, the handle's thread
/// reserves the next step, and the save that reaches the old end finds the
/// room there instead of growing the file itself (a `fallocate` that
/// waited up to 32 ms here). Deterministic: after the save that came near
/// the end, the test waits for the thread's growth before it saves on.
#[test]
fn the_log_is_grown_ahead_by_the_handle_s_thread_not_by_the_save_that_reaches_its_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (store, hook, rx, _) = open_ahead(&path);
    let data = vec![7u8; 4000];
    let len = || std::fs::metadata(&path).expect("stat").len();
    let mut ahead = 0;
    let mut i = 0;
    let seen = |who: String, asked: u64, i: usize, ahead: &mut usize| {
        if who == "sessionlog-wb" {
            // The hook runs just before the `fallocate`: wait until the
            // file holds the byte asked for (a bound, not a sleep).
            let deadline = std::time::Instant::now() + PATIENCE;
            while len() < asked {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the growth ahead never came"
                );
                std::thread::yield_now();
            }
            *ahead += 1;
        } else {
            // The first save grows the new file (header only) itself.
            assert!(
                *ahead == 0,
                "save {i} grew the file itself although it was grown ahead"
            );
        }
    };
    // Three growths ahead; a log under 16 MiB grows by 1 MiB at a time,
    // and the thread is woken 512 KiB before the end.
    while ahead < 3 {
        i += 1;
        assert!(i < 2_000, "no growth ahead after {i} saves");
        store
            .save_session(&mut Session::new(id(&format!("g{i}")), data.clone()))
            .expect("save");
        while let Ok((who, asked)) = rx.try_recv() {
            seen(who, asked, i, &mut ahead);
        }
        let end = hook.end.load(std::sync::atomic::Ordering::SeqCst);
        if end + (512 << 10) > len() {
            // The thread was woken and has not grown the file yet: its
            // growth comes before the next save.
            let (who, asked) = rx.recv_timeout(PATIENCE).expect("a growth ahead");
            assert_eq!(who, "sessionlog-wb", "the growth ahead's thread");
            seen(who, asked, i, &mut ahead);
        }
    }
}

/// The address at which this process maps byte `offset` of `path`
/// (from /proc/self/maps).
fn mapped_at(path: &std::path::Path, offset: u64) -> Option<u64> {
    let path = std::fs::canonicalize(path).ok()?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let (range, _perms, map_off) = (f.next()?, f.next()?, f.next()?);
        let (_dev, _inode) = (f.next()?, f.next()?);
        if std::path::Path::new(f.next()?) != path {
            return None;
        }
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        let map_off = u64::from_str_radix(map_off, 16).ok()?;
        let at = lo + offset.checked_sub(map_off)?;
        (at < hi).then_some(at)
    })
}

/// Whether the page at virtual address `addr` of this process is present
/// in its page table (bit 63 of its /proc/self/pagemap entry, which needs
/// no privilege).
fn page_present(addr: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let pagemap = std::fs::File::open("/proc/self/pagemap").expect("open pagemap");
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, addr / 4096 * 8)
        .expect("read pagemap");
    u64::from_le_bytes(entry) >> 63 == 1
}

/// Under `SyncPolicy::Never` writers copy records into the map, and the
/// first copy into a page of the file used to fault there (the kernel
/// allocating, zeroing and dirtying the page: two thirds of a save's time
/// in `benches/peers`). The handle's thread faults the pages ahead of the
/// log's end in (DESIGN.md §4): once appends cross a 256 KiB boundary it
/// is woken, and pages past anything written become present in this
/// process's map without a writer touching them.
#[test]
fn the_pages_ahead_of_the_log_s_end_are_faulted_in_by_the_handle_s_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let (store, hook, _, rx) = open_ahead(&path);
    let data = vec![7u8; 4000];
    let mut i = 0;
    let (who, _, ahead) = loop {
        i += 1;
        assert!(i < 2_000, "no pages faulted in ahead after {i} saves");
        store
            .save_session(&mut Session::new(id(&format!("p{i}")), data.clone()))
            .expect("save");
        // Past the first 256 KiB the thread is woken; its prefault comes
        // before the next save, or soon after (a bound, not a sleep).
        if hook.end.load(std::sync::atomic::Ordering::SeqCst) > 256 << 10 {
            break rx.recv_timeout(PATIENCE).expect("a prefault ahead");
        }
        if let Ok(seen) = rx.try_recv() {
            break seen;
        }
    };
    assert_eq!(who, "sessionlog-wb", "the prefault's thread");
    // Only pages past every record written count: no writer touched them.
    let written = hook.end.load(std::sync::atomic::Ordering::SeqCst);
    let first = written.next_multiple_of(4096);
    assert!(
        ahead >= first + (64 << 10),
        "the prefault ends at {ahead}, not well past the records' end {written}"
    );
    let deadline = std::time::Instant::now() + PATIENCE;
    for page in (first..ahead).step_by(4096) {
        let addr = mapped_at(&path, page).expect("the log is mapped there");
        while !page_present(addr) {
            assert!(
                std::time::Instant::now() < deadline,
                "page at {page} (records end at {written}) never became present"
            );
            std::thread::yield_now();
        }
    }
}
