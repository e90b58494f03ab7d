//! Runs a web-session workload (this package's README.md) against
//! sessionlog and its peers and prints one Markdown table (ops/s, and
//! sessionlog's ratio to each).
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- \
//!     [--sessions N] [--value-size B] [--out DIR] [--engines a,b] [--rounds R] [--memory]
//! ```

mod alloc;
mod engines;
mod flush;
mod lockprobe;
mod report;
mod scale;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use engines::{Engine, Mode, Result, Spec};
use report::{Phase, Results};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// No timed phase runs longer than this: it stops early and reports the
/// rate over the operations it completed.
const CAP: Duration = Duration::from_secs(3);
/// Operations per thread configuration of the durable phases.
const DURABLE_OPS: usize = 2000;

struct Args {
    sessions: usize,
    value_size: usize,
    out: PathBuf,
    engines: Option<Vec<String>>,
    memory: bool,
    tmp: PathBuf,
    /// Rounds of the whole comparison; the table shows medians.
    rounds: usize,
    /// `--flush-probe`: the disk's own flush concurrency, no engine.
    flush_probe: bool,
    /// `--lock-probe`: the write lock's cost against a save's, and the
    /// pointer-free locks' (DESIGN.md §5.1).
    lock_probe: bool,
    /// `--scale`: the session counts of the scale comparison.
    scale: Option<Vec<usize>>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        sessions: 100_000,
        value_size: 1024,
        out: Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
        engines: None,
        memory: false,
        tmp: std::env::temp_dir(),
        rounds: 3,
        scale: None,
        flush_probe: false,
        lock_probe: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sessions" => a.sessions = value()?.replace('_', "").parse()?,
            "--value-size" => a.value_size = value()?.parse()?,
            "--out" => a.out = value()?.into(),
            "--engines" => a.engines = Some(value()?.split(',').map(str::to_owned).collect()),
            "--tmp" => a.tmp = value()?.into(),
            "--memory" => a.memory = true,
            "--flush-probe" => a.flush_probe = true,
            "--lock-probe" => a.lock_probe = true,
            "--rounds" => a.rounds = value()?.parse()?,
            "--scale" => {
                a.scale = Some(
                    value()?
                        .split(',')
                        .map(|n| n.replace('_', "").parse())
                        .collect::<std::result::Result<_, _>>()?,
                )
            }
            "-h" | "--help" => {
                println!(
                    "usage: sessionlog-peers [--sessions N] [--value-size B] [--out DIR] \
                     [--engines a,b,..] [--rounds R] [--tmp DIR] [--memory] \
                     [--scale N1,N2,..] [--flush-probe] [--lock-probe]\nengines: {}",
                    engines::all()
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(",")
                );
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {flag}").into()),
        }
    }
    if a.sessions < 4 {
        return Err("--sessions must be at least 4".into());
    }
    if a.scale.as_ref().is_some_and(|l| l.iter().any(|&n| n < 4)) {
        return Err("--scale sizes must be at least 4".into());
    }
    if a.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(a)
}

/// The harness's own scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path) -> Result<Scratch> {
        let p = base.join(format!("sessionlog-peers-{}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
    /// A fresh, empty subdirectory.
    fn dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 32 lowercase hex characters: 128 random bits.
fn session_ids(rng: &mut StdRng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| format!("{:032x}", rng.random::<u128>()))
        .collect()
}

/// Runs `op(i)` for i in 0..ops spread over `threads` threads (thread t
/// takes i = t, t + threads, ...), all stopping at `CAP`; returns ops/s.
fn timed(threads: usize, ops: usize, op: impl Fn(usize) -> Result<()> + Sync) -> Result<f64> {
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    let deadline = start + CAP;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, done) = (&op, &done);
                s.spawn(move || -> Result<()> {
                    engines::set_slot(t);
                    let mut n = 0;
                    for i in (t..ops).step_by(threads) {
                        op(i)?;
                        n += 1;
                        if n % 64 == 0 && Instant::now() >= deadline {
                            break;
                        }
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a worker thread panicked")??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    Ok(done.load(Ordering::Relaxed) as f64 / secs)
}

/// Reads every file under `dir` once, so that every engine starts its
/// read phases with its files in the page cache.
fn warm_page_cache(dir: &Path) -> Result<()> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            warm_page_cache(&p)?;
        } else if let Ok(mut f) = std::fs::File::open(&p) {
            while f.read(&mut buf)? > 0 {}
        }
    }
    Ok(())
}

/// Bytes the files under `dir` occupy on disk (allocated blocks).
fn disk_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let e = entry?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            disk_bytes(&e.path())?
        } else {
            m.blocks() * 512
        };
    }
    Ok(total)
}

struct Workload {
    ids: Vec<String>,
    value: Vec<u8>,
    /// Random numbers that pick ids (and, for the mixed phase, the kind).
    picks: Vec<u64>,
    /// Ids never saved by the main phases, for the durable phases.
    fresh: Vec<String>,
}

thread_local! {
    /// Each loading thread's buffer, reused by every load it times.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One timed load: the engine copies the data into this thread's reused
/// buffer (see `Engine::load_into`), the same for every engine.
fn load_reused(e: &dyn Engine, id: &str) -> Result<()> {
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        std::hint::black_box(e.load_into(id, &mut buf)?);
        std::hint::black_box(buf.as_slice());
        Ok(())
    })
}

fn check_load(e: &dyn Engine, id: &str, size: usize) -> Result<()> {
    match e.load(id)? {
        Some(v) if v.len() == size => Ok(()),
        Some(v) => Err(format!("load of {id} returned {} bytes, not {size}", v.len()).into()),
        None => Err(format!("load of {id} found nothing").into()),
    }
}

/// Every phase for one engine; `None` where a phase does not apply.
fn run_engine(spec: &Spec, w: &Workload, scratch: &Scratch, res: &mut Results) -> Result<()> {
    if spec.buffered {
        run_buffered(spec, w, scratch, res)?;
    }
    if spec.durable {
        run_durable(spec, w, scratch, res)?;
    }
    Ok(())
}

/// The phases without fsync per operation, reopen and compaction.
fn run_buffered(spec: &Spec, w: &Workload, scratch: &Scratch, res: &mut Results) -> Result<()> {
    let n = w.ids.len();
    let ids = &w.ids;
    let pick = |i: usize| &ids[(w.picks[i % w.picks.len()] % n as u64) as usize];
    let name = spec.name;
    let dir = scratch.dir(name)?;
    let mut e = spec.open(&dir, Mode::Buffered)?;
    let e1 = &*e;

    res.set(
        Phase::SaveNew,
        name,
        timed_all(n, |i| e1.save(&ids[i], &w.value))?,
    );
    warm_page_cache(&dir)?;
    for i in 0..n.min(10_000) {
        check_load(e1, pick(i), w.value.len())?;
    }
    res.set(
        Phase::Load1,
        name,
        timed(1, n, |i| load_reused(e1, pick(i)))?,
    );
    res.set(
        Phase::Load2,
        name,
        timed(2, n, |i| load_reused(e1, pick(i)))?,
    );
    res.set(
        Phase::Overwrite,
        name,
        timed(1, n, |i| e1.save(pick(i), &w.value))?,
    );
    res.set(
        Phase::Mixed,
        name,
        timed(1, n, |i| {
            // One save in ten, chosen by bits that do not pick the id.
            if (w.picks[i % w.picks.len()] >> 32).is_multiple_of(10) {
                e1.save(pick(i), &w.value)
            } else {
                load_reused(e1, pick(i))
            }
        })?,
    );
    res.set(
        Phase::Touch,
        name,
        timed(1, n, |i| e1.touch(pick(i)).map(drop))?,
    );
    // Deletes take distinct ids from the end of the list; one at the
    // start stays for the reopen check.
    let deletes = n / 4;
    res.set(
        Phase::Delete,
        name,
        timed(1, deletes, |i| e1.delete(&ids[n - 1 - i]))?,
    );

    if spec.on_disk {
        drop(e);
        let t = Instant::now();
        e = spec.open(&dir, Mode::Buffered)?;
        check_load(&*e, &ids[0], w.value.len())?;
        res.set(Phase::Reopen, name, t.elapsed().as_secs_f64());
    }
    e.cleanup()?;
    drop(e);
    std::fs::remove_dir_all(&dir)?;

    if spec.on_disk {
        // A store that is 75 % garbage: a quarter of the sessions, each
        // written four times.
        let dir = scratch.dir(&format!("{name}-compact"))?;
        let mut e = spec.open(&dir, Mode::Buffered)?;
        let live = (n / 4).max(1);
        for _ in 0..4 {
            for id in &ids[..live] {
                e.save(id, &w.value)?;
            }
        }
        let t = Instant::now();
        if e.compact()? {
            res.set(Phase::Compact, name, t.elapsed().as_secs_f64());
            // Garbage again (each session three more times), then the worst
            // operation with and without a compaction running.
            for _ in 0..3 {
                for id in &ids[..live] {
                    e.save(id, &w.value)?;
                }
            }
            let (shared, [idle, compacting]) = stall(e, &ids[..live], w)?;
            e = shared;
            res.set(Phase::StallIdle, name, idle);
            res.set(Phase::StallCompacting, name, compacting);
            // The stall phase's saves left garbage again: compact with
            // nothing else running before the size is taken.
            e.compact()?;
        }
        check_load(&*e, &ids[0], w.value.len())?;
        drop(e);
        let live_bytes = (live * (32 + w.value.len())) as f64;
        res.set(
            Phase::SizeAfterCompact,
            name,
            disk_bytes(&dir)? as f64 / live_bytes,
        );
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// How long the stall phase's idle window runs, and how long its
/// compacting window goes on after the compaction returns.
const STALL_IDLE: Duration = Duration::from_secs(1);
const STALL_AFTER: Duration = Duration::from_millis(200);

/// The worst single operation (in ms) of one thread that loads and saves
/// (one in ten) random `ids` flat out: for `STALL_IDLE` with nothing else
/// running, then while the engine compacts (and `STALL_AFTER` beyond).
/// Every operation goes through a read lock of an `RwLock` around the
/// engine; an engine whose compaction needs the handle to itself compacts
/// under the write lock, so its operations wait for all of it, as they
/// would in an application that shares one handle between threads.
fn stall(e: Box<dyn Engine>, ids: &[String], w: &Workload) -> Result<(Box<dyn Engine>, [f64; 2])> {
    use std::sync::RwLock;
    use std::sync::atomic::AtomicBool;
    let lock = RwLock::new(e);
    let n = ids.len() as u64;
    let worker = |stop: &AtomicBool| -> Result<f64> {
        let mut worst = Duration::ZERO;
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let r = w.picks[i % w.picks.len()];
            let id = &ids[(r % n) as usize];
            i += 1;
            let t = Instant::now();
            {
                let e = lock.read().unwrap_or_else(|p| p.into_inner());
                if (r >> 32).is_multiple_of(10) {
                    e.save(id, &w.value)?;
                } else {
                    load_reused(&**e, id)?;
                }
            }
            worst = worst.max(t.elapsed());
        }
        Ok(worst.as_secs_f64() * 1e3)
    };
    let mut out = [0.0; 2];
    for (window, worst) in out.iter_mut().enumerate() {
        let stop = AtomicBool::new(false);
        *worst = std::thread::scope(|s| -> Result<f64> {
            let h = s.spawn(|| worker(&stop));
            let r = if window == 0 {
                std::thread::sleep(STALL_IDLE);
                Ok(())
            } else {
                // Let the worker get going first.
                std::thread::sleep(Duration::from_millis(100));
                let concurrent = lock
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .compact_concurrent();
                let r = match concurrent {
                    Some(r) => r,
                    None => lock
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .compact()
                        .map(drop),
                };
                std::thread::sleep(STALL_AFTER);
                r
            };
            stop.store(true, Ordering::Relaxed);
            let worst = h.join().map_err(|_| "the stall worker panicked")?;
            r?;
            worst
        })?;
    }
    Ok((lock.into_inner().unwrap_or_else(|p| p.into_inner()), out))
}

/// The durable saves, 1, 2 and 4 threads, in a fresh store.
fn run_durable(spec: &Spec, w: &Workload, scratch: &Scratch, res: &mut Results) -> Result<()> {
    let name = spec.name;
    let dir = scratch.dir(&format!("{name}-durable"))?;
    let e = spec.open(&dir, Mode::Durable)?;
    let e1 = &*e;
    let k = w.fresh.len() / 3;
    for (phase, threads, part) in [
        (Phase::Durable1, 1, 0),
        (Phase::Durable2, 2, 1),
        (Phase::Durable4, 4, 2),
    ] {
        let ids = &w.fresh[part * k..(part + 1) * k];
        res.set(
            phase,
            name,
            timed(threads, k, |i| e1.save(&ids[i], &w.value))?,
        );
    }
    drop(e);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `timed` for a phase that must complete (the store is built by it).
fn timed_all(n: usize, op: impl Fn(usize) -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        op(i)?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// `--memory`: heap bytes per session of sessionlog's index, and the time
/// to reopen the store.
fn memory(args: &Args, scratch: &Scratch) -> Result<()> {
    use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};
    let n = args.sessions;
    let mut rng = StdRng::seed_from_u64(5);
    let ids = session_ids(&mut rng, n);
    let mut value = vec![0u8; args.value_size];
    rng.fill_bytes(&mut value);
    let path = scratch.dir("memory")?.join("sessions.log");
    // As shipped (background thread on): a reopen hands the sync of what
    // `SyncPolicy::Never` left unsynced to that thread.
    let open = || LogStore::options().sync(SyncPolicy::Never).open(&path);
    {
        let store = open()?;
        for id in &ids {
            store.save_session(&mut Session::new(
                SessionId::new(id.as_str())?,
                value.clone(),
            ))?;
        }
    }
    warm_page_cache(path.parent().ok_or("no parent")?)?;
    // The reopen (until the store is usable) is timed with the allocation
    // counter off. After the first, the background thread makes durable
    // what `SyncPolicy::Never` left unsynced (dropping the store waits for
    // it, outside the timer); the second finds the records synced. A third
    // open, counted, measures the heap.
    let t = Instant::now();
    let first = open()?;
    let reopen = t.elapsed().as_secs_f64();
    drop(first);
    let t = Instant::now();
    let second = open()?;
    let reopen2 = t.elapsed().as_secs_f64();
    drop(second);
    alloc::start();
    let before = alloc::live();
    let store = open()?;
    let heap = alloc::live() - before;
    let stats = store.stats()?;
    // The whole heap per session: the lean index keeps a keyed hash of the
    // id, not the id, so nothing is subtracted for it.
    let per = heap as f64 / n as f64;
    let text = format!(
        "| sessions | value | reopen (first) | reopen (again) | heap after open | heap bytes/session (no id kept) | stats().index_bytes/session |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {n} | {} B | {:.3} s | {reopen2:.3} s | {:.1} MiB | {per:.1} | {:.1} |\n",
        args.value_size,
        reopen,
        heap as f64 / (1 << 20) as f64,
        stats.index_bytes as f64 / n as f64,
    );
    print!("{text}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join(format!("memory-{n}x{}.md", args.value_size)),
        text,
    )?;
    Ok(())
}

fn main() -> Result<()> {
    // The second process of `--lock-probe`'s 2-process case.
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 4 && argv[1] == "--lock-probe-child" {
        return lockprobe::child(&argv[2], Path::new(&argv[3]));
    }
    let args = parse_args()?;
    let scratch = Scratch::new(&args.tmp)?;
    if args.memory {
        return memory(&args, &scratch);
    }
    if args.flush_probe {
        return flush::run(&scratch.dir("flush")?, args.value_size, args.rounds);
    }
    if args.lock_probe {
        return lockprobe::run(
            &scratch.dir("lock")?,
            args.sessions,
            args.value_size,
            args.rounds,
        );
    }
    // The scale comparison runs sessionlog, LMDB and redb unless told.
    let default_scale = ["sessionlog", "lmdb", "redb"].map(str::to_owned).to_vec();
    let chosen = match (&args.engines, &args.scale) {
        (Some(l), _) => Some(l),
        (None, Some(_)) => Some(&default_scale),
        (None, None) => None,
    };
    let specs: Vec<Spec> = engines::all()
        .into_iter()
        .filter(|s| chosen.is_none_or(|l| l.iter().any(|n| n == s.name)))
        .collect();
    if let Some(sizes) = &args.scale {
        return scale::run(sizes, args.value_size, &specs, &scratch, &args.out);
    }
    let mut rng = StdRng::seed_from_u64(5);
    let n = args.sessions;
    engines::set_owned_sessions(n);
    let ids = session_ids(&mut rng, n);
    let mut value = vec![0u8; args.value_size];
    rng.fill_bytes(&mut value);
    let picks = (0..n).map(|_| rng.random()).collect();
    let fresh = session_ids(&mut rng, 3 * DURABLE_OPS.min(n));
    let w = Workload {
        ids,
        value,
        picks,
        fresh,
    };

    let mut res = Results::new(specs.iter().map(|s| s.name).collect());
    // Rounds run every engine in turn, so that a slow spell of the machine
    // (a shared disk, a busy neighbour) falls on all of them alike; the
    // table shows each figure's median over the rounds.
    for round in 1..=args.rounds {
        for spec in &specs {
            eprintln!("round {round}/{}: running {} ...", args.rounds, spec.name);
            if let Err(err) = run_engine(spec, &w, &scratch, &mut res) {
                eprintln!("{}: {err}", spec.name);
                res.fail(spec.name, &err.to_string());
            }
        }
    }
    let title = format!(
        "{n} sessions of {} B, ids of 32 hex characters, median of {} round(s); {}",
        args.value_size,
        args.rounds,
        report::machine()
    );
    let md = res.markdown(&title);
    println!("{md}");
    std::fs::create_dir_all(&args.out)?;
    let stem = format!("peers-{n}x{}", args.value_size);
    std::fs::write(args.out.join(format!("{stem}.md")), &md)?;
    std::fs::write(args.out.join(format!("{stem}.svg")), res.svg(&title))?;
    eprintln!("wrote {}/{stem}.md and .svg", args.out.display());
    Ok(())
}
