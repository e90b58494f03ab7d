//! `--lock-probe`: what a lock and an unlock of the store's write lock
//! cost, for the lock sessionlog uses and the pointer-free ones that could
//! replace it (DESIGN.md §5.1), against the cost of one `LogStore` save
//! measured in the same run:
//!
//! - `robust mutex`: a process-shared, robust `pthread_mutex_t` in a
//!   shared mapping of a file, taken as src/engine/lock.rs takes it (a
//!   trylock first; a waiter blocks in the mutex);
//! - `OFD lock`: `fcntl(F_OFD_SETLKW)` of a write lock on the file's first
//!   byte, `F_OFD_SETLK` of `F_UNLCK` to release it;
//! - `flock`: `LOCK_EX` then `LOCK_UN`;
//! - `futex word`: a 32-bit word in the same mapping, taken with a
//!   compare-and-swap and released with a swap, the kernel's futex only to
//!   sleep and wake (0 free, 1 held, 2 held with waiters). It knows nothing
//!   of its holder, so nothing detects a holder that died: the floor a
//!   pointer-free lock with an owner-death protocol would start from.
//!
//! Each lock is timed with 1 thread (uncontended), 2 threads of one
//! process and 2 processes (this program again, `--lock-probe-child`),
//! for `RUN` each. Uncontended locks and the saves are also timed in the
//! thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), which time-sharing
//! with other programs on a busy machine does not inflate. Every worker has its own open file description (OFD
//! locks and `flock` belong to it, so two workers sharing one would not
//! exclude each other). Inside the lock a worker increments a plain
//! (non-atomic) counter in the shared page; at the end the counter must
//! equal the pairs counted, or the probe fails: a lock that does not
//! exclude is reported as an error, not as a figure.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};

use crate::engines::Result;

/// How long each lock and contention case runs.
const RUN: Duration = Duration::from_secs(1);
/// Lock and unlock pairs between two looks at the stop word.
const BATCH: u64 = 256;
const PAGE: usize = 4096;

// The shared page: control words, then each lock in its own cache line.
/// Workers that are ready (u32).
const READY: usize = 0;
/// Set by the parent when the workers may start (u32).
const GO: usize = 4;
/// Set by the parent when the workers must stop (u32).
const STOP: usize = 8;
/// The child's pair count (u64), written before `DONE`.
const CHILD_PAIRS: usize = 16;
/// Set by the child when it has stopped (u32).
const DONE: usize = 24;
/// Incremented non-atomically inside the lock (u64).
const COUNTER: usize = 64;
/// The robust mutex (as in lock.rs, 64-byte aligned).
const MUTEX: usize = 128;
/// The futex word.
const FUTEX: usize = 256;

const _: () = assert!(MUTEX + size_of::<libc::pthread_mutex_t>() <= FUTEX);

/// This thread's CPU time so far, in nanoseconds.
fn cpu_ns() -> u64 {
    let t = thread_cputime();
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn thread_cputime() -> libc::timespec {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid out-pointer for the call; this clock exists
    // on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t
}

/// The locks compared.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Robust,
    Ofd,
    Flock,
    Futex,
}

const KINDS: [Kind; 4] = [Kind::Robust, Kind::Ofd, Kind::Flock, Kind::Futex];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Robust => "robust mutex (today)",
            Kind::Ofd => "OFD lock (fcntl)",
            Kind::Flock => "flock",
            Kind::Futex => "futex word (no owner death)",
        }
    }
    fn arg(self) -> &'static str {
        match self {
            Kind::Robust => "robust",
            Kind::Ofd => "ofd",
            Kind::Flock => "flock",
            Kind::Futex => "futex",
        }
    }
    fn from_arg(s: &str) -> Result<Kind> {
        KINDS
            .into_iter()
            .find(|k| k.arg() == s)
            .ok_or_else(|| format!("unknown lock kind {s}").into())
    }
}

/// The probe file's page, mapped shared.
struct Page {
    ptr: *mut u8,
}

// SAFETY: the page is only accessed through atomics, through the locks
// under test (which are made for concurrent use), and through the counter,
// which is read and written only while holding the lock under test (the
// probe checks afterwards that it excluded).
unsafe impl Send for Page {}
// SAFETY: as for `Send`.
unsafe impl Sync for Page {}

impl Page {
    fn map(file: &File) -> Result<Page> {
        // SAFETY: a fresh shared mapping of PAGE bytes of a file at least
        // that long; the kernel picks the address, so nothing aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Page { ptr: ptr.cast() })
    }
    fn u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the 4-aligned offsets above, inside the
        // page, which lives as long as `self`; it is only used atomically.
        unsafe { &*self.ptr.add(off).cast() }
    }
    fn u64(&self, off: usize) -> &AtomicU64 {
        // SAFETY: as for `u32`, 8-aligned.
        unsafe { &*self.ptr.add(off).cast() }
    }
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: MUTEX is 64-aligned and the mutex fits before FUTEX
        // (checked above), inside the mapping.
        unsafe { self.ptr.add(MUTEX).cast() }
    }
    /// The critical section: a read and a write of a plain counter.
    fn bump(&self) {
        // SAFETY: the counter lies in the page, 8-aligned, and the caller
        // holds the lock under test, so no other worker touches it now
        // (the probe checks that afterwards).
        unsafe {
            let c = self.ptr.add(COUNTER).cast::<u64>();
            c.write_volatile(c.read_volatile() + 1);
        }
    }
    fn counter(&self) -> u64 {
        // SAFETY: as in `bump`; every worker has stopped.
        unsafe { self.ptr.add(COUNTER).cast::<u64>().read_volatile() }
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the mapping made in `map`, unmapped once here;
        // no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast(), PAGE) };
    }
}

/// Writes the probe file anew: one zeroed page holding an unlocked robust
/// mutex (initialised as lock.rs's `init` does) and a free futex word.
fn prepare(path: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_len(PAGE as u64)?;
    let page = Page::map(&f)?;
    // SAFETY: `attr` is initialised before use and destroyed after; the
    // mutex lies in the zeroed mapping, which no worker uses yet.
    let rc = unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        let mut rc = libc::pthread_mutexattr_init(attr.as_mut_ptr());
        if rc == 0 {
            rc =
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(
                    attr.as_mut_ptr(),
                    libc::PTHREAD_MUTEX_ROBUST,
                );
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(page.mutex(), attr.as_ptr());
            }
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        rc
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    Ok(())
}

/// One worker's hold on the lock under test: its own open file
/// description and mapping.
struct Locker {
    kind: Kind,
    file: File,
    page: Page,
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32) {
    // SAFETY: `word` is a valid, aligned u32 in a shared mapping; no
    // timeout or second word is passed. Waiting with a stale value returns
    // at once (EAGAIN), which the callers' loops expect.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

fn check(rc: libc::c_int, what: &str) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", std::io::Error::from_raw_os_error(rc)).into())
    }
}

/// `fcntl` of an OFD lock on byte 0, retried on EINTR.
fn ofd(fd: libc::c_int, cmd: libc::c_int, ty: libc::c_int) -> Result<()> {
    let fl = libc::flock {
        l_type: ty as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    loop {
        // SAFETY: `fl` is a valid `struct flock` for the whole call, and
        // OFD commands require `l_pid` 0, as set.
        if unsafe { libc::fcntl(fd, cmd, &fl) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("fcntl of an OFD lock: {e}").into());
        }
    }
}

fn flock(fd: libc::c_int, op: libc::c_int) -> Result<()> {
    loop {
        // SAFETY: a plain system call on a descriptor this worker owns.
        if unsafe { libc::flock(fd, op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("flock: {e}").into());
        }
    }
}

impl Locker {
    fn open(kind: Kind, path: &Path) -> Result<Locker> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let page = Page::map(&file)?;
        Ok(Locker { kind, file, page })
    }

    fn lock(&self) -> Result<()> {
        let fd = self.file.as_raw_fd();
        match self.kind {
            Kind::Robust => {
                let m = self.page.mutex();
                // SAFETY: the mutex was initialised by `prepare` before any
                // worker started and stays mapped while `self` lives.
                let mut rc = unsafe { libc::pthread_mutex_trylock(m) };
                if rc == libc::EBUSY {
                    // lock.rs waits with `pthread_mutex_clocklock` and a
                    // deadline: the same futex wait, plus a clock read.
                    // SAFETY: as above.
                    rc = unsafe { libc::pthread_mutex_lock(m) };
                }
                if rc == libc::EOWNERDEAD {
                    // No worker dies holding it; handled as lock.rs does.
                    // SAFETY: this thread holds the mutex.
                    rc = unsafe { libc::pthread_mutex_consistent(m) };
                }
                check(rc, "lock the robust mutex")
            }
            Kind::Ofd => ofd(fd, libc::F_OFD_SETLKW, libc::F_WRLCK),
            Kind::Flock => flock(fd, libc::LOCK_EX),
            Kind::Futex => {
                let w = self.page.u32(FUTEX);
                if let Err(mut c) = w.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed) {
                    // Held: mark it contended (2) and sleep until a swap
                    // finds it free.
                    if c != 2 {
                        c = w.swap(2, Ordering::Acquire);
                    }
                    while c != 0 {
                        futex(w, libc::FUTEX_WAIT, 2);
                        c = w.swap(2, Ordering::Acquire);
                    }
                }
                Ok(())
            }
        }
    }

    fn unlock(&self) -> Result<()> {
        let fd = self.file.as_raw_fd();
        match self.kind {
            Kind::Robust => {
                // SAFETY: this thread holds the mutex, locked in `lock`.
                check(
                    unsafe { libc::pthread_mutex_unlock(self.page.mutex()) },
                    "unlock the robust mutex",
                )
            }
            Kind::Ofd => ofd(fd, libc::F_OFD_SETLK, libc::F_UNLCK),
            Kind::Flock => flock(fd, libc::LOCK_UN),
            Kind::Futex => {
                let w = self.page.u32(FUTEX);
                if w.swap(0, Ordering::Release) == 2 {
                    futex(w, libc::FUTEX_WAKE, 1);
                }
                Ok(())
            }
        }
    }

    /// Says it is ready, waits for the start, then locks, bumps the
    /// counter and unlocks until told to stop; returns the pairs done and
    /// the thread's CPU time meanwhile (ns).
    fn work(&self) -> Result<(u64, u64)> {
        let p = &self.page;
        p.u32(READY).fetch_add(1, Ordering::AcqRel);
        while p.u32(GO).load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let cpu = cpu_ns();
        let mut pairs = 0;
        while p.u32(STOP).load(Ordering::Relaxed) == 0 {
            for _ in 0..BATCH {
                self.lock()?;
                p.bump();
                self.unlock()?;
            }
            pairs += BATCH;
        }
        Ok((pairs, cpu_ns() - cpu))
    }
}

/// The other process of the 2-process case: `--lock-probe-child KIND PATH`.
pub fn child(kind: &str, path: &Path) -> Result<()> {
    let l = Locker::open(Kind::from_arg(kind)?, path)?;
    let (pairs, _) = l.work()?;
    l.page.u64(CHILD_PAIRS).store(pairs, Ordering::Relaxed);
    l.page.u32(DONE).store(1, Ordering::Release);
    Ok(())
}

#[derive(Clone, Copy)]
enum Contention {
    /// One thread.
    None,
    /// Two threads of this process.
    Threads,
    /// This process and a child.
    Processes,
}

/// Nanoseconds of wall time per lock and unlock pair, all workers
/// together, and of this process's workers' CPU time per pair they did.
fn probe(path: &Path, kind: Kind, how: Contention) -> Result<(f64, f64)> {
    prepare(path)?;
    let ctl = Locker::open(kind, path)?;
    let page = &ctl.page;
    let threads = match how {
        Contention::None | Contention::Processes => 1,
        Contention::Threads => 2,
    };
    let mut child = match how {
        Contention::Processes => Some(
            Command::new(std::env::current_exe()?)
                .arg("--lock-probe-child")
                .arg(kind.arg())
                .arg(path)
                .spawn()?,
        ),
        _ => None,
    };
    let workers = threads + usize::from(child.is_some());
    let (pairs, secs, cpu) = std::thread::scope(|s| -> Result<(u64, f64, f64)> {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| Locker::open(kind, path)?.work()))
            .collect();
        while (page.u32(READY).load(Ordering::Acquire) as usize) < workers {
            if hs.iter().any(|h| h.is_finished()) {
                // It failed before it was ready: let it go, to report why.
                page.u32(GO).store(1, Ordering::Release);
                page.u32(STOP).store(1, Ordering::Release);
                for h in hs {
                    h.join().map_err(|_| "a lock probe thread panicked")??;
                }
                return Err("a lock probe thread stopped before the start".into());
            }
            if let Some(c) = child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                return Err(format!("the lock probe's child exited early: {st}").into());
            }
            std::thread::yield_now();
        }
        let start = Instant::now();
        page.u32(GO).store(1, Ordering::Release);
        std::thread::sleep(RUN);
        page.u32(STOP).store(1, Ordering::Relaxed);
        let (mut pairs, mut cpu, mut own) = (0, 0, 0);
        for h in hs {
            let (p, c) = h.join().map_err(|_| "a lock probe thread panicked")??;
            (pairs, cpu, own) = (pairs + p, cpu + c, own + p);
        }
        if child.is_some() {
            while page.u32(DONE).load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            pairs += page.u64(CHILD_PAIRS).load(Ordering::Relaxed);
        }
        Ok((
            pairs,
            start.elapsed().as_secs_f64(),
            cpu as f64 / own as f64,
        ))
    })?;
    if let Some(mut c) = child {
        let st = c.wait()?;
        if !st.success() {
            return Err(format!("the lock probe's child failed: {st}").into());
        }
    }
    let counted = page.counter();
    if counted != pairs {
        return Err(format!(
            "{}: the counter inside the lock reads {counted} after {pairs} pairs: \
             the lock did not exclude",
            kind.name()
        )
        .into());
    }
    Ok((secs * 1e9 / pairs as f64, cpu))
}

/// Microseconds per save, wall time then CPU time: `n` saves of new ids,
/// then `n` of random existing ids, in a fresh `LogStore` (`policy`, or
/// the default: `SyncPolicy::Interval(1 s)`); otherwise as shipped.
fn save_cost(
    dir: &Path,
    policy: Option<SyncPolicy>,
    ids: &[String],
    picks: &[usize],
    value: &[u8],
) -> Result<[[f64; 2]; 2]> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut opts = LogStore::options();
    if let Some(p) = policy {
        opts = opts.sync(p);
    }
    let store = opts.open(dir.join("sessions.log"))?;
    let save = |id: &str| -> Result<()> {
        store.save_session(&mut Session::new(SessionId::new(id)?, value.to_vec()))?;
        Ok(())
    };
    let (t, c) = (Instant::now(), cpu_ns());
    for id in ids {
        save(id)?;
    }
    let new = [t.elapsed().as_secs_f64(), (cpu_ns() - c) as f64 / 1e9];
    let (t, c) = (Instant::now(), cpu_ns());
    for &i in picks {
        save(&ids[i])?;
    }
    let over = [t.elapsed().as_secs_f64(), (cpu_ns() - c) as f64 / 1e9];
    drop(store);
    std::fs::remove_dir_all(dir)?;
    let per = |secs: [f64; 2], n: usize| secs.map(|s| s * 1e6 / n as f64);
    Ok([per(new, ids.len()), per(over, picks.len())])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the saves and every lock case `rounds` times (in turn, so a slow
/// spell of the machine falls on all of them) and prints a Markdown table
/// of medians.
pub fn run(dir: &Path, sessions: usize, value_size: usize, rounds: usize) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(5);
    let ids: Vec<String> = (0..sessions)
        .map(|_| format!("{:032x}", rng.random::<u128>()))
        .collect();
    let picks: Vec<usize> = (0..sessions)
        .map(|_| rng.random_range(0..sessions))
        .collect();
    let mut value = vec![0u8; value_size];
    rng.fill_bytes(&mut value);
    let path = dir.join("lock-probe");
    let cases = [Contention::None, Contention::Threads, Contention::Processes];
    // saves[policy][new, overwrite][round] and locks[kind][case][round]:
    // (wall, CPU).
    let mut saves = vec![vec![Vec::new(); 2]; 2];
    let mut locks = vec![vec![Vec::new(); cases.len()]; KINDS.len()];
    for round in 1..=rounds {
        for (p, policy) in [Some(SyncPolicy::Never), None].into_iter().enumerate() {
            let us = save_cost(&dir.join("store"), policy, &ids, &picks, &value)?;
            eprintln!(
                "round {round}: save ({}) new {:.3} µs (CPU {:.3}), overwrite {:.3} µs (CPU {:.3})",
                ["Never", "Interval"][p],
                us[0][0],
                us[0][1],
                us[1][0],
                us[1][1]
            );
            for (k, x) in us.into_iter().enumerate() {
                saves[p][k].push((x[0], x[1]));
            }
        }
        for (k, &kind) in KINDS.iter().enumerate() {
            for (c, &how) in cases.iter().enumerate() {
                let (ns, cpu) = probe(&path, kind, how)?;
                eprintln!(
                    "round {round}: {}, {} worker(s): {ns:.1} ns/pair (CPU {cpu:.1})",
                    kind.name(),
                    ["1", "2 threads", "2 processes"][c]
                );
                locks[k][c].push((ns, cpu));
            }
        }
    }
    let wall = |v: &Vec<(f64, f64)>| median(v.iter().map(|x| x.0).collect());
    let cpu = |v: &Vec<(f64, f64)>| median(v.iter().map(|x| x.1).collect());
    // The denominators: an overwrite in a store of `sessions` sessions, ns.
    let never = [wall(&saves[0][1]) * 1e3, cpu(&saves[0][1]) * 1e3];
    let interval = [wall(&saves[1][1]) * 1e3, cpu(&saves[1][1]) * 1e3];
    let robust = wall(&locks[0][0]);
    let mut text = format!(
        "Lock and unlock pairs against one LogStore save of {value_size} B in a store of \
         {sessions} sessions, median of {rounds} round(s); {}\n\n\
         | save, µs: wall (CPU) | new id | overwrite |\n|---|---:|---:|\n\
         | `SyncPolicy::Never` | {:.3} ({:.3}) | {:.3} ({:.3}) |\n\
         | `Interval(1 s)` (default) | {:.3} ({:.3}) | {:.3} ({:.3}) |\n\n\
         | lock | 1 thread: ns per pair, wall (CPU) | % of an overwrite, Never / Interval \
         (CPU time) | replacing the robust mutex adds, % of an overwrite, Never / Interval | \
         2 threads: ns per pair | 2 processes: ns per pair |\n\
         |---|---:|---:|---:|---:|---:|\n",
        crate::report::machine(),
        wall(&saves[0][0]),
        cpu(&saves[0][0]),
        wall(&saves[0][1]),
        cpu(&saves[0][1]),
        wall(&saves[1][0]),
        cpu(&saves[1][0]),
        wall(&saves[1][1]),
        cpu(&saves[1][1]),
    );
    for (k, kind) in KINDS.iter().enumerate() {
        let (ns, ns_cpu) = (wall(&locks[k][0]), cpu(&locks[k][0]));
        text.push_str(&format!(
            "| {} | {ns:.1} ({ns_cpu:.1}) | {:.1} % / {:.1} % ({:.1} % / {:.1} %) | \
             {:+.1} % / {:+.1} % | {:.1} | {:.1} |\n",
            kind.name(),
            100.0 * ns / never[0],
            100.0 * ns / interval[0],
            100.0 * ns_cpu / never[1],
            100.0 * ns_cpu / interval[1],
            100.0 * (ns - robust) / never[0],
            100.0 * (ns - robust) / interval[0],
            wall(&locks[k][1]),
            wall(&locks[k][2]),
        ));
    }
    print!("{text}");
    let _ = std::fs::remove_file(&path);
    Ok(())
}
