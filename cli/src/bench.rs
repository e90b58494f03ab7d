//! `sessionlog bench`: the session workload, phase by phase, with
//! operations per second and latency percentiles.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use sessionlog::{LogStore, Owner, Session, SessionId, SessionStore, SyncPolicy};

use crate::follower::OtherProcess;
use crate::{Failure, Outcome, SyncArg, fmt_bytes, progress};

/// Arguments of `sessionlog bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Sessions to create (each later phase does as many operations).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    sessions: u64,
    /// Bytes of data per session.
    #[arg(long, value_name = "B", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(0..=16 << 20))]
    value_size: u64,
    /// Threads sharing the store.
    #[arg(long, value_name = "T", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// When saves reach the disk.
    #[arg(long, value_enum, default_value_t = SyncArg::Interval)]
    sync: SyncArg,
    /// Rounds of the compaction-under-load phase (0: skip it). Each round
    /// overwrites every session (50 % garbage), runs loads and saves for a
    /// second with no compaction, then again while the store compacts: in
    /// the compacting process, and in another process on the same store
    /// (the bench starts itself again for it).
    #[arg(long, value_name = "R", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(0..=100))]
    compaction_rounds: u64,
    /// Operations per second of each loader/saver thread (one per
    /// process) in the compaction-under-load phase (0: as fast as it can).
    /// A fixed rate leaves the CPUs room, so that the worst operation shows
    /// waits in the store rather than threads preempted on a saturated
    /// machine. Either way each latency is that of the operation itself.
    #[arg(long, value_name = "OPS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    load_rate: u64,
    /// Sessions an owner has in the owner phases (0: skip them). `save`
    /// and `overwrite` run in alternating turns with the same phase on a
    /// second store, every save there carrying an owner (session i belongs
    /// to owner i modulo sessions/K, so an owner's sessions lie far apart
    /// in the log); then `sessions_of` lists every owner once. The second
    /// store is a fresh one in a temporary directory beside the first,
    /// removed afterwards.
    #[arg(long, value_name = "K", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    per_owner: u64,
    /// The store starts writeback of the log every M MiB appended
    /// (`LogOptions::writeback_every`; 0, the library's default: leave
    /// writeback to the kernel), to compare the two.
    #[arg(long, value_name = "M", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    writeback_mib: u64,
    /// Run on PATH even though something is there already: the bench
    /// saves, overwrites and deletes its own sessions in it and compacts
    /// it, beside whatever it holds.
    #[arg(long)]
    yes: bool,
    /// Measure only durable saves (`SyncPolicy::Always`) per second when
    /// this many processes save into one store at once, each count in
    /// turn (e.g. `1,2,4`), and print a table; the other phases do not
    /// run. Each run uses a fresh store in a temporary directory beside
    /// PATH (or in the system's temporary directory).
    #[arg(long, value_name = "N,N,..", value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=64))]
    durable_processes: Vec<u64>,
    /// Seconds each run of `--durable-processes` saves for.
    #[arg(long, value_name = "S", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    durable_seconds: u64,
    /// Rounds of `--durable-processes` (each runs every count in turn;
    /// the table shows every round and the median).
    #[arg(long, value_name = "R", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    durable_rounds: u64,
    /// The store to use (kept afterwards); default: a temporary store,
    /// removed afterwards. An existing one is refused without `--yes`.
    path: Option<PathBuf>,
}

/// Fails unless nothing is at `path` or `yes` says to go on: a bench writes
/// its own sessions into a store, overwrites and deletes them and compacts
/// it, which on a store in use costs its users the time and shows them
/// nothing.
fn refuse_existing(path: &Path, yes: bool) -> Result<(), Failure> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
        Ok(_) if yes => Ok(()),
        Ok(_) => Err(format!(
            "{} exists: the bench would save, overwrite and delete its own sessions in it and \
             compact it; pass --yes to run on it anyway, or name a path where nothing is",
            path.display()
        )
        .into()),
    }
}

/// Opens timed per reopen phase.
const REOPENS: u64 = 3;

/// Times of one phase.
struct Phase {
    name: &'static str,
    ops: u64,
    elapsed: Duration,
    /// Sorted latencies in nanoseconds.
    latencies: Vec<u64>,
}

/// A private directory (mode 0700) for a temporary store, removed with
/// everything in it when dropped. A store refuses a directory that other
/// users can write, such as `/tmp` itself.
pub(crate) struct TempStore(PathBuf);

impl TempStore {
    /// A new directory in `base`.
    pub(crate) fn new_in(base: &Path) -> Result<TempStore, Failure> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!("sessionlog-bench-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        Ok(TempStore(dir))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Bytes of log per session record: the header, a 32-character id and the
/// data, aligned to 8, rounded up.
pub(crate) fn record_bytes(value_size: u64) -> u64 {
    (48 + 32 + value_size).next_multiple_of(8)
}

/// At its largest the bench's disk holds about five records per session:
/// the log of four just before the reopen phases' compaction, and the new
/// file of one it writes. The hints and the growth ahead add little.
const RECORDS_AT_PEAK: u64 = 5;

/// Heap the bench needs per session, in both of its processes together: the
/// ids (64 bytes each, in both), the latencies of the phases being timed
/// (two at a time in the owner pairs, 8 bytes an operation; a phase's row
/// is printed when it ends and its latencies dropped), the index and the
/// second index of a compaction (up to 32 bytes each), and the other
/// process's index. The owner phases' store (its index, up to 48 bytes a
/// session) is closed before the compaction.
const HEAP_PER_SESSION: u64 = 2 * 64 + 2 * 8 + 3 * 32;

/// Refuses, with what it needs and what there is, a bench that would fill
/// the disk under `path` or the machine's memory before it ends.
fn check_room(path: &Path, sessions: u64, value_size: u64) -> Result<(), Failure> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let disk = sessions
        .saturating_mul(record_bytes(value_size))
        .saturating_mul(RECORDS_AT_PEAK)
        .saturating_add(64 << 20);
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| format!("{}: cannot read the free space: {e}", dir.display()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if disk > free {
        return Err(format!(
            "{sessions} sessions of {value_size} B need about {} free in {}, which has {}: \
             use fewer --sessions or a store on a larger disk (PATH)",
            fmt_bytes(disk),
            dir.display(),
            fmt_bytes(free),
        )
        .into());
    }
    let heap = sessions.saturating_mul(HEAP_PER_SESSION);
    if let Some(avail) = mem_available()
        && heap > avail
    {
        return Err(format!(
            "{sessions} sessions need about {} of memory, and {} is available: \
             use fewer --sessions",
            fmt_bytes(heap),
            fmt_bytes(avail),
        )
        .into());
    }
    Ok(())
}

/// `MemAvailable` of /proc/meminfo in bytes; `None` where there is none.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Opens the store at `path` as the bench opens every handle of it, in
/// this process and in the other one of the compaction-under-load phase.
pub(crate) fn open_store(
    path: &Path,
    sync: SyncArg,
    writeback_mib: u64,
) -> sessionlog::Result<LogStore> {
    let (sync, background) = match sync {
        SyncArg::Always => (SyncPolicy::Always, false),
        SyncArg::Interval => (SyncPolicy::Interval(Duration::from_secs(1)), true),
        SyncArg::Never => (SyncPolicy::Never, true),
    };
    // The background thread syncs (and writes back), but does not compact:
    // the bench compacts when it measures a compaction, and only then.
    LogStore::options()
        .sync(sync)
        .background(background)
        .writeback_every(writeback_mib << 20)
        .compact_check_interval(Duration::from_secs(86_400))
        .allow_others_to_write_directory(crate::allow_others())
        .open(path)
}

/// `size` random lowercase letters: the data of every session the bench
/// saves.
pub(crate) fn random_data(size: usize) -> Vec<u8> {
    let mut rng = Rng::seeded();
    (0..size).map(|_| b'a' + (rng.next() % 26) as u8).collect()
}

/// A small, fast generator (xorshift64*) for picking ids; not for secrets.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        Rng(u64::from_le_bytes(b) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        // n <= 100 million, so the modulo bias is negligible.
        (self.next() % n as u64) as usize
    }
}

/// State of one worker thread.
struct Worker<'a> {
    store: &'a LogStore,
    ids: &'a [SessionId],
    /// Session i's owner is `owners[i % owners.len()]`; empty: no owners.
    owners: &'a [Owner],
    rng: Rng,
    data: Vec<u8>,
}

impl Worker<'_> {
    fn save(&mut self, i: usize) -> Result<(), Failure> {
        let n = self.rng.next().to_le_bytes();
        let k = self.data.len().min(8);
        self.data[..k].copy_from_slice(&n[..k]);
        let mut s = Session::new(self.ids[i].clone(), self.data.clone());
        if !self.owners.is_empty() {
            s.owner = Some(self.owners[i % self.owners.len()].clone());
        }
        Ok(self.store.save_session(&mut s)?)
    }
    /// Lists owner `j`'s sessions, which must be all of them.
    fn list(&mut self, j: usize) -> Result<(), Failure> {
        let owners = self.owners.len();
        let want = self.ids.len() / owners + usize::from(j < self.ids.len() % owners);
        let got = self.store.sessions_of(&self.owners[j])?.len();
        if got == want {
            Ok(())
        } else {
            Err(format!("sessions_of listed {got} sessions of an owner of {want}").into())
        }
    }
    fn random(&mut self) -> usize {
        self.rng.below(self.ids.len())
    }
    fn load(&mut self, i: usize) -> Result<(), Failure> {
        match self.store.load_session(&self.ids[i])? {
            Some(_) => Ok(()),
            None => Err(format!("session {} vanished during the benchmark", self.ids[i]).into()),
        }
    }
}

type Op = fn(&mut Worker<'_>, usize) -> Result<(), Failure>;

pub fn bench(args: &BenchArgs) -> Outcome {
    if !args.durable_processes.is_empty() {
        let base = match args.path.as_deref().and_then(Path::parent) {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            Some(_) => PathBuf::from("."),
            None => std::env::temp_dir(),
        };
        return crate::durable::run(
            &base,
            &args.durable_processes,
            args.value_size,
            args.durable_seconds,
            args.durable_rounds,
        );
    }
    let n = usize::try_from(args.sessions)?;
    let threads = usize::try_from(args.threads)?;
    let value_size = usize::try_from(args.value_size)?;
    let (path, _temp) = match &args.path {
        Some(p) => {
            refuse_existing(p, args.yes)?;
            (p.clone(), None)
        }
        None => {
            let dir = TempStore::new_in(&std::env::temp_dir())?;
            (dir.0.join("bench.db"), Some(dir))
        }
    };
    check_room(&path, args.sessions, args.value_size)?;
    let ids = random_ids(n)?;
    let open = || open_store(&path, args.sync, args.writeback_mib);
    let per_owner = usize::try_from(args.per_owner)?;
    // No owner phases for 0 (`checked_div` gives `None`).
    let owners: Vec<Owner> = match n.checked_div(per_owner) {
        None => Vec::new(),
        Some(k) => (0..k.max(1))
            .map(|j| Owner::new(format!("user-{j}")))
            .collect::<sessionlog::Result<_>>()?,
    };
    let units = Units::new(args.sessions);
    let bar = progress(
        units.total(owners.len() as u64, args.compaction_rounds),
        "bench",
    );
    let data = random_data(value_size);
    // The owner phases' store: a fresh one beside the first.
    let mut owned: Option<(LogStore, TempStore)> = None;
    if !owners.is_empty() {
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = TempStore::new_in(base)?;
        owned = Some((
            open_store(&dir.0.join("owned.db"), args.sync, args.writeback_mib)?,
            dir,
        ));
    }

    let mut store = open()?;
    let mut table = Table::new(&bar);
    table.title(format_args!(
        "sessionlog bench: {} sessions, {value_size}-byte values, {threads} thread(s), sync {}, {}",
        args.sessions,
        format!("{:?}", args.sync).to_lowercase(),
        match &args.path {
            Some(p) => format!("store {}", p.display()),
            None => "temporary store".to_owned(),
        }
    ))?;
    let steps: [(&'static str, Op); 6] = [
        ("save", |w, i| w.save(i)),
        ("load", |w, _| {
            let i = w.random();
            w.load(i)
        }),
        ("overwrite", |w, _| {
            let i = w.random();
            w.save(i)
        }),
        ("mixed 90/10", |w, _| {
            let i = w.random();
            if w.rng.below(10) == 0 {
                w.save(i)
            } else {
                w.load(i)
            }
        }),
        ("touch", |w, _| {
            let i = w.random();
            let id = &w.ids[i];
            if w.store.touch_session(id)? {
                Ok(())
            } else {
                Err(format!("session {id} vanished during the benchmark").into())
            }
        }),
        ("delete", |w, i| {
            w.store.delete_session(&w.ids[i])?;
            Ok(())
        }),
    ];
    for (k, (name, op)) in steps.into_iter().enumerate() {
        bar.set_message(name);
        match &owned {
            // Saves and overwrites with an owner, in turns with the same
            // without.
            Some((o, _)) if k == 0 || k == 2 => {
                let with = if k == 0 {
                    "save, owner"
                } else {
                    "overwrite, owner"
                };
                let pair = Pair {
                    names: [name, with],
                    stores: [&store, o],
                    owners: [&[], &owners],
                };
                for p in run_pair(&pair, &ids, threads, &data, &bar, op)? {
                    table.row(&p)?;
                }
            }
            _ => table.row(&run_phase(
                name,
                &store,
                &ids,
                &[],
                0..n,
                threads,
                &data,
                &bar,
                op,
            )?)?,
        }
        if k == 2
            && let Some((o, dir)) = owned.take()
        {
            bar.set_message("sessions_of");
            let lists = owners.len();
            table.row(&run_phase(
                "sessions_of",
                &o,
                &ids,
                &owners,
                0..lists,
                threads,
                &data,
                &bar,
                |w, j| w.list(j),
            )?)?;
            drop(o);
            drop(dir);
        }
        if k == 3 {
            // Every session live, in a log of about four records each
            // (two more overwrites of every session make it so): reopen
            // replaying it all (no hint), from the hint the close wrote,
            // and after a compaction.
            bar.set_message("reopen");
            let mut w = Worker {
                store: &store,
                ids: &ids,
                owners: &[],
                rng: Rng::seeded(),
                data: data.clone(),
            };
            for (k, i) in (0..n).chain(0..n).enumerate() {
                w.save(i)?;
                if k % 1024 == 1023 {
                    bar.inc(1024);
                }
            }
            bar.inc((2 * n % 1024) as u64);
            drop(store);
            let hint = hint_path(&path);
            let _ = std::fs::remove_file(&hint);
            table.row(&reopen_phase(
                "reopen, replay",
                &open,
                &bar,
                units.reopen,
                || {
                    // Keep the next close from writing a hint for the next open.
                    std::fs::remove_file(&hint).or_else(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                },
            )?)?;
            // This close writes the hint the next opens read.
            drop(open()?);
            table.row(&reopen_phase(
                "reopen, hint",
                &open,
                &bar,
                units.reopen,
                || Ok(()),
            )?)?;
            let s = open()?;
            s.compact()?;
            drop(s);
            bar.inc(units.compact);
            table.row(&reopen_phase(
                "reopen, compacted",
                &open,
                &bar,
                units.reopen,
                || Ok(()),
            )?)?;
            store = open()?;
        }
        if k == 3 && args.compaction_rounds > 0 {
            bar.set_message("compaction");
            let mut other = OtherProcess::spawn(
                &path,
                args.sync,
                args.writeback_mib,
                value_size,
                args.load_rate,
                &ids,
            )?;
            let stalls = compaction_under_load(
                &store,
                &mut other,
                &ids,
                &data,
                args.compaction_rounds,
                args.load_rate,
                (&bar, &units),
            )?;
            other.finish()?;
            table.stalls(&stalls)?;
        }
    }
    drop(store);

    bar.set_message("reopen");
    table.row(&reopen_phase(
        "reopen, empty",
        &open,
        &bar,
        units.reopen,
        || Ok(()),
    )?)?;
    let store = open()?;
    let stats = store.stats()?;
    drop(store);
    bar.finish_and_clear();
    table.title(format_args!(
        "final file: {} on disk, {} of log, generation {}",
        fmt_bytes(stats.file_bytes),
        fmt_bytes(stats.log_bytes),
        stats.generation
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The bench's output on stdout, a line at a time as each phase ends (above
/// the progress bar, which is drawn on stderr and cleared meanwhile).
struct Table<'a> {
    bar: &'a ProgressBar,
    /// Whether the next phase row needs the column header first: before
    /// the first row, and again after the compaction's own table.
    header_due: bool,
}

impl<'a> Table<'a> {
    fn new(bar: &'a ProgressBar) -> Table<'a> {
        Table {
            bar,
            header_due: true,
        }
    }

    /// Writes with `f` to stdout, out of the progress bar's way.
    fn print(
        &self,
        f: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.bar.suspend(|| {
            let mut out = io::stdout().lock();
            f(&mut out)?;
            out.flush()
        })
    }

    /// A line of its own (the title, the final file).
    fn title(&mut self, line: std::fmt::Arguments<'_>) -> io::Result<()> {
        self.print(|out| writeln!(out, "{line}"))
    }

    /// A phase's row, the column header first where due.
    fn row(&mut self, p: &Phase) -> io::Result<()> {
        let header = std::mem::take(&mut self.header_due);
        self.print(|out| {
            if header {
                writeln!(
                    out,
                    "{:<18} {:>9} {:>12} {:>10} {:>10} {:>10}",
                    "phase", "ops", "ops/s", "p50", "p99", "worst"
                )?;
            }
            let secs = p.elapsed.as_secs_f64();
            let rate = if secs > 0.0 { p.ops as f64 / secs } else { 0.0 };
            writeln!(
                out,
                "{:<18} {:>9} {:>12.0} {:>10} {:>10} {:>10}",
                p.name,
                p.ops,
                rate,
                fmt_nanos(percentile(&p.latencies, 50)),
                fmt_nanos(percentile(&p.latencies, 99)),
                fmt_nanos(p.latencies.iter().copied().max().unwrap_or(0)),
            )
        })
    }

    /// The compaction-under-load table, between the phase rows of the
    /// phases before and after it.
    fn stalls(&mut self, s: &Stalls) -> io::Result<()> {
        self.header_due = true;
        self.print(|out| s.print(out))
    }
}

/// The progress bar's units: one an operation of a phase, and for the
/// steps that are not counted operations (an open, a compaction, the
/// compaction phase's windows of fixed length) a share of a phase's,
/// so that the bar moves through them too.
struct Units {
    /// Sessions: the operations of one phase.
    n: u64,
    /// One reopen phase (`REOPENS` opens).
    reopen: u64,
    /// The compaction between the reopen phases.
    compact: u64,
    /// One window of a compaction-under-load round.
    window: u64,
}

impl Units {
    fn new(n: u64) -> Units {
        Units {
            n,
            reopen: (n / 2).max(REOPENS),
            compact: n / 2,
            window: n,
        }
    }

    /// All of a run: six phases of `n` operations, the two owner phases
    /// and one list per owner (when there are owners), the reopen phases
    /// with the two overwrites of every session before them and the
    /// compaction between them, the last reopen phase, and per compaction
    /// round an overwrite of every session and two windows.
    fn total(&self, owners: u64, rounds: u64) -> u64 {
        let owner_phases = if owners == 0 { 0 } else { 2 * self.n + owners };
        6 * self.n
            + owner_phases
            + 2 * self.n
            + 4 * self.reopen
            + self.compact
            + rounds * (self.n + 2 * self.window)
    }
}

/// Latencies of one kind of operation on one handle, with and without a
/// compaction running.
#[derive(Default)]
struct Window {
    /// Nanoseconds, one per operation.
    lat: Vec<u64>,
    /// Time the workers ran, summed over rounds.
    elapsed: Duration,
}

/// What the compaction-under-load phase measured: `[handle][op][window]`,
/// handle 0 the compacting one (this process), 1 the other process's; op 0
/// load, 1 save; window 0 quiet (no compaction), 1 compacting.
struct Stalls {
    rounds: u64,
    /// Operations per second per thread (0: flat out).
    rate: u64,
    windows: [[[Window; 2]; 2]; 2],
    /// Wall time of each `compact()`.
    compactions: Vec<u64>,
}

impl Stalls {
    fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let mut c = self.compactions.clone();
        c.sort_unstable();
        writeln!(
            out,
            "compaction under load: {} round(s), compact() took {} (median); \
             one loader/saver thread (1 save in 10) in this process and one in another, {}",
            self.rounds,
            fmt_nanos(percentile(&c, 50)),
            if self.rate == 0 {
                "flat out".to_owned()
            } else {
                format!("{} ops/s each", self.rate)
            },
        )?;
        writeln!(
            out,
            "{:<13} {:<5} {:<11} {:>9} {:>10} {:>10} {:>10} {:>10}",
            "handle", "op", "window", "ops", "ops/s", "p99", "p99.9", "worst"
        )?;
        for (h, handle) in ["compacting", "other process"].iter().enumerate() {
            for (o, op) in ["load", "save"].iter().enumerate() {
                for (w, window) in ["quiet", "compacting"].iter().enumerate() {
                    let win = &self.windows[h][o][w];
                    let mut lat = win.lat.clone();
                    lat.sort_unstable();
                    let secs = win.elapsed.as_secs_f64();
                    let rate = if secs > 0.0 {
                        lat.len() as f64 / secs
                    } else {
                        0.0
                    };
                    writeln!(
                        out,
                        "{:<13} {:<5} {:<11} {:>9} {:>10.0} {:>10} {:>10} {:>10}",
                        handle,
                        op,
                        window,
                        lat.len(),
                        rate,
                        fmt_nanos(percentile_milli(&lat, 990)),
                        fmt_nanos(percentile_milli(&lat, 999)),
                        fmt_nanos(lat.last().copied().unwrap_or(0)),
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// How long the quiet window (no compaction) runs, and how long the
/// compacting window goes on after `compact()` returns (so that the other
/// process's move to the new file is inside it).
const QUIET_WINDOW: Duration = Duration::from_secs(1);
const AFTER_COMPACTION: Duration = Duration::from_millis(200);

/// Loads and saves on `store` (1 in 10 a save) until `stop`, as
/// `[load, save]` latencies; `rate` operations per second (0: flat out).
/// The other process of the compaction-under-load phase runs it too.
pub(crate) fn load_and_save(
    store: &LogStore,
    ids: &[SessionId],
    data: &[u8],
    rate: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<[Vec<u64>; 2], Failure> {
    use std::sync::atomic::Ordering;
    let mut w = Worker {
        store,
        ids,
        owners: &[],
        rng: Rng::seeded(),
        data: data.to_vec(),
    };
    let mut out = [Vec::new(), Vec::new()];
    let start = Instant::now();
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let i = w.random();
        let save = w.rng.below(10) == 0;
        // Operation k is due at k / rate (no rate: now): sleep when a
        // millisecond ahead (a sleep is not finer than ~0.1 ms).
        if let Some(at) = k.saturating_mul(1_000_000_000).checked_div(rate) {
            let due = start + Duration::from_nanos(at);
            k += 1;
            let now = Instant::now();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
        }
        let t0 = Instant::now();
        if save {
            w.save(i)?
        } else {
            w.load(i)?
        }
        out[usize::from(save)].push(nanos(t0.elapsed()));
    }
    Ok(out)
}

/// The compaction-under-load phase: each round makes the store half
/// garbage, then measures loads and saves in this process (on `store`) and
/// in `other` for a second with no compaction (the quiet window), then
/// while `store` compacts (and for a moment after, while `other` moves to
/// the new file). Moves `bar` by `units.n` for each round's overwrites
/// and `units.window` for each window.
fn compaction_under_load(
    store: &LogStore,
    other: &mut OtherProcess,
    ids: &[SessionId],
    data: &[u8],
    rounds: u64,
    rate: u64,
    (bar, units): (&ProgressBar, &Units),
) -> Result<Stalls, Failure> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut stalls = Stalls {
        rounds,
        rate,
        windows: Default::default(),
        compactions: Vec::new(),
    };
    for _ in 0..rounds {
        let mut w = Worker {
            store,
            ids,
            owners: &[],
            rng: Rng::seeded(),
            data: data.to_vec(),
        };
        for i in 0..ids.len() {
            w.save(i)?;
            if i % 1024 == 1023 {
                bar.inc(1024);
            }
        }
        bar.inc((ids.len() % 1024) as u64);
        for window in 0..2 {
            // The other process catches up with those saves untimed, and
            // answers when its loader/saver starts.
            other.start()?;
            let stop = AtomicBool::new(false);
            let start = Instant::now();
            let (result, took, stopped) = std::thread::scope(|s| {
                let worker = s.spawn(|| load_and_save(store, ids, data, rate, &stop));
                // The bar moves through the window in tenths: one per
                // tenth of the quiet window; through the compacting one
                // (as long as the compaction) one before it starts, eight
                // when it ends, the rest after.
                let tenth = units.window / 10;
                let took = if window == 0 {
                    for _ in 0..10 {
                        std::thread::sleep(QUIET_WINDOW / 10);
                        bar.inc(tenth);
                    }
                    None
                } else {
                    // Let both workers get going first.
                    std::thread::sleep(Duration::from_millis(100));
                    bar.inc(tenth);
                    let t = Instant::now();
                    let r = store.compact();
                    let took = t.elapsed();
                    bar.inc(8 * tenth);
                    std::thread::sleep(AFTER_COMPACTION);
                    bar.inc(tenth);
                    Some(r.map(|_| took))
                };
                // What the tenths left over.
                bar.inc(units.window % 10);
                stop.store(true, Ordering::Relaxed);
                let stopped = other.stop();
                let result = worker.join().expect("a bench thread panicked");
                (result, took, stopped)
            });
            let elapsed = start.elapsed();
            stopped?;
            let theirs = other.collect()?;
            if let Some(took) = took {
                stalls.compactions.push(nanos(took?));
            }
            let ours = (result?, elapsed);
            for (h, (lat, elapsed)) in [ours, (theirs.lat, theirs.elapsed)].into_iter().enumerate()
            {
                for (o, lat) in lat.into_iter().enumerate() {
                    let win = &mut stalls.windows[h][o][window];
                    win.lat.extend(lat);
                    win.elapsed += elapsed;
                }
            }
        }
    }
    Ok(stalls)
}

/// Where the store keeps the hint of its file.
fn hint_path(log: &std::path::Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".hint");
    PathBuf::from(p)
}

/// Opens and closes the store `REOPENS` times, running `between` after
/// each close, and times the opens; moves `bar` by `units` in all.
fn reopen_phase(
    name: &'static str,
    open: &dyn Fn() -> sessionlog::Result<LogStore>,
    bar: &ProgressBar,
    units: u64,
    between: impl Fn() -> io::Result<()>,
) -> Result<Phase, Failure> {
    let mut lat = Vec::new();
    let start = Instant::now();
    for k in 0..REOPENS {
        let t = Instant::now();
        let s = open()?;
        lat.push(nanos(t.elapsed()));
        drop(s);
        between()?;
        // `units` in all, the last open taking what division leaves.
        bar.inc(units / REOPENS + if k + 1 == REOPENS { units % REOPENS } else { 0 });
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    Ok(Phase {
        name,
        ops: REOPENS,
        elapsed,
        latencies: lat,
    })
}

/// `n` distinct ids of 32 hex characters from the system's random source.
pub(crate) fn random_ids(n: usize) -> Result<Vec<SessionId>, Failure> {
    let mut raw = vec![0u8; n * 16];
    getrandom::fill(&mut raw).map_err(|e| format!("random source failed: {e}"))?;
    let mut ids = Vec::with_capacity(n);
    let mut hex = String::with_capacity(32);
    for chunk in raw.chunks_exact(16) {
        hex.clear();
        for b in chunk {
            let _ = write!(hex, "{b:02x}");
        }
        ids.push(SessionId::new(hex.as_str())?);
    }
    Ok(ids)
}

/// Operations in one turn of a pair of phases (`run_pair`).
const TURN: usize = 10_000;

/// Two phases compared side by side: the same operation on two stores,
/// sessions without an owner in the first and with one in the second.
struct Pair<'a> {
    names: [&'static str; 2],
    stores: [&'a LogStore; 2],
    owners: [&'a [Owner]; 2],
}

/// `run_phase` for both phases of `pair`, in alternating turns of `TURN`
/// operations over the same range of ids, so that a busy spell of the
/// machine falls on both alike.
fn run_pair(
    pair: &Pair<'_>,
    ids: &[SessionId],
    threads: usize,
    data: &[u8],
    bar: &ProgressBar,
    op: Op,
) -> Result<[Phase; 2], Failure> {
    let mut out = pair.names.map(|name| Phase {
        name,
        ops: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(ids.len()),
    });
    for start in (0..ids.len()).step_by(TURN) {
        let turn = start..(start + TURN).min(ids.len());
        for (k, phase) in out.iter_mut().enumerate() {
            let p = run_phase(
                phase.name,
                pair.stores[k],
                ids,
                pair.owners[k],
                turn.clone(),
                threads,
                data,
                bar,
                op,
            )?;
            phase.ops += p.ops;
            phase.elapsed += p.elapsed;
            phase.latencies.extend(p.latencies);
        }
    }
    for phase in &mut out {
        phase.latencies.sort_unstable();
    }
    Ok(out)
}

/// Runs `op(i)` for each i of `range`, spread over `threads` threads, each
/// operation timed.
#[allow(clippy::too_many_arguments)]
fn run_phase(
    name: &'static str,
    store: &LogStore,
    ids: &[SessionId],
    owners: &[Owner],
    range: std::ops::Range<usize>,
    threads: usize,
    data: &[u8],
    bar: &ProgressBar,
    op: Op,
) -> Result<Phase, Failure> {
    let n = range.len();
    let first = range.start;
    let start = Instant::now();
    let results: Vec<Result<Vec<u64>, Failure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut w = Worker {
                        store,
                        ids,
                        owners,
                        rng: Rng::seeded(),
                        data: data.to_vec(),
                    };
                    let mut lat = Vec::with_capacity(n / threads + 1);
                    for i in (first + t..first + n).step_by(threads) {
                        let t0 = Instant::now();
                        op(&mut w, i)?;
                        lat.push(nanos(t0.elapsed()));
                        if lat.len() % 1024 == 0 {
                            bar.inc(1024);
                        }
                    }
                    bar.inc((lat.len() % 1024) as u64);
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a bench thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut latencies = Vec::with_capacity(n);
    for r in results {
        latencies.extend(r?);
    }
    latencies.sort_unstable();
    Ok(Phase {
        name,
        ops: n as u64,
        elapsed,
        latencies,
    })
}

/// `d` in nanoseconds, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// The `p`-th of 1000 (`percentile_milli(s, 999)` is the p99.9).
fn percentile_milli(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 1000).min(sorted.len() - 1)]
}

fn fmt_nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}
