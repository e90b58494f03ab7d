//! `sessionlog bench --durable-processes 1,2,4`: durable saves
//! (`SyncPolicy::Always`) per second when 1, 2, 4, .. processes save into
//! one store at once, each in a loop on one thread.
//!
//! Each count runs on a fresh store in a temporary directory beside the
//! bench's path, so that every run starts from the same file. The bench
//! starts its own executable as `sessionlog bench-durable` (a subcommand
//! hidden from `--help`) once per process; they talk over the child's
//! stdin and stdout, one line at a time:
//!
//! - child: `ready`, once it has opened the store;
//! - parent: `start` (to every child, once all are ready); the child
//!   saves for the given time, then prints `done SAVES NANOS`: the saves
//!   acknowledged and the nanoseconds it spent on them;
//! - a child that fails prints its error to stderr and exits 1.
//!
//! Beside each run of the store, the same number of processes flush with
//! no store in the way (`--raw`): each writes records of the same size at
//! the tail of its own file, zeroed and synced beforehand, and makes each
//! durable with `pwritev2(RWF_DSYNC)`, as a durable save's flush does. That
//! row is the disk's own flush concurrency, which group commit has to beat
//! (as `benches/peers --flush-probe` measures it, in the same run).
//!
//! Rounds run every count in turn, so that a slow spell of the machine
//! falls on all of them alike; the table shows each round and the median.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use sessionlog::{Session, SessionStore};

use crate::bench::{nanos, open_store, random_data, random_ids};
use crate::{Failure, Outcome, SyncArg};

/// Sessions each child overwrites in turn.
const IDS_PER_CHILD: usize = 1000;

/// Arguments of the hidden `sessionlog bench-durable`, as the bench passes
/// them.
#[derive(Debug, clap::Args)]
pub struct DurableArgs {
    /// Bytes of data per session saved.
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(0..=16 << 20))]
    value_size: u64,
    /// How long to save, in milliseconds, once told to start.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    millis: u64,
    /// Flush records of a save's size into a file of its own at PATH with
    /// `pwritev2(RWF_DSYNC)`, no store.
    #[arg(long)]
    raw: bool,
    /// The store.
    path: PathBuf,
}

/// The child: opens the store, says `ready`, waits for `start`, saves for
/// the given time and reports.
pub fn child(args: &DurableArgs) -> Outcome {
    if args.raw {
        return raw_child(args);
    }
    let store = open_store(&args.path, SyncArg::Always, 0)?;
    let ids = random_ids(IDS_PER_CHILD)?;
    let mut data = random_data(usize::try_from(args.value_size)?);
    ready()?;
    let run = Duration::from_millis(args.millis);
    let start = Instant::now();
    let mut saves = 0u64;
    while start.elapsed() < run {
        let k = data.len().min(8);
        data[..k].copy_from_slice(&saves.to_le_bytes()[..k]);
        let id = &ids[usize::try_from(saves)? % ids.len()];
        store.save_session(&mut Session::new(id.clone(), data.clone()))?;
        saves += 1;
    }
    let elapsed = nanos(start.elapsed());
    writeln!(std::io::stdout().lock(), "done {saves} {elapsed}")?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// Bytes of the raw probe's file, zeroed and synced before it starts.
const RAW_FILE: u64 = 64 << 20;

/// Says `ready`, waits for `start`.
fn ready() -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "start" {
        return Err(format!("expected `start`, got {:?}", line.trim()).into());
    }
    Ok(())
}

/// The child of a `--raw` run: flushes records of a save's size into its
/// own file.
fn raw_child(args: &DurableArgs) -> Outcome {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.path)?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..RAW_FILE / chunk.len() as u64 {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let rec = vec![0x5au8; usize::try_from(crate::bench::record_bytes(args.value_size))?];
    ready()?;
    let run = Duration::from_millis(args.millis);
    let start = Instant::now();
    let (mut flushes, mut off) = (0u64, 0u64);
    while start.elapsed() < run && off + rec.len() as u64 <= RAW_FILE {
        let n = rustix::io::pwritev2(
            &f,
            &[std::io::IoSlice::new(&rec)],
            off,
            rustix::io::ReadWriteFlags::DSYNC,
        )?;
        if n != rec.len() {
            return Err(format!("short write: {n} of {} bytes", rec.len()).into());
        }
        off += rec.len() as u64;
        flushes += 1;
    }
    let elapsed = nanos(start.elapsed());
    writeln!(std::io::stdout().lock(), "done {flushes} {elapsed}")?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// One child as the parent drives it.
struct Running {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Running {
    fn line(&mut self, due: &str) -> Result<String, Failure> {
        let mut l = String::new();
        if self.out.read_line(&mut l)? == 0 {
            let status = self.child.wait()?;
            return Err(
                format!("a durable-save process exited ({status}) where `{due}` was due").into(),
            );
        }
        Ok(l.trim().to_owned())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Closing its stdin ends a child still waiting for `start`.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Durable saves per second of `procs` processes on a fresh store in
/// `base`, each saving for `run`; with `raw`, flushes per second of as
/// many processes with no store.
fn once(
    base: &Path,
    procs: usize,
    value_size: u64,
    run: Duration,
    raw: bool,
) -> Result<f64, Failure> {
    let dir = crate::bench::TempStore::new_in(base)?;
    let path = dir.path().join("durable.db");
    if !raw {
        // Created here, so that the children only open it.
        drop(open_store(&path, SyncArg::Always, 0)?);
    }
    let exe = std::env::current_exe()?;
    let mut kids = Vec::with_capacity(procs);
    for k in 0..procs {
        let mut cmd = Command::new(&exe);
        cmd.arg("bench-durable")
            .arg("--value-size")
            .arg(value_size.to_string())
            .arg("--millis")
            .arg(run.as_millis().to_string());
        if raw {
            cmd.arg("--raw").arg(dir.path().join(format!("raw-{k}")));
        } else {
            cmd.arg(&path);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        kids.push(Running { child, out });
    }
    for k in &mut kids {
        let l = k.line("ready")?;
        if l != "ready" {
            return Err(format!("a durable-save process said {l:?} where `ready` was due").into());
        }
    }
    for k in &mut kids {
        let stdin = k.child.stdin.as_mut().ok_or("no stdin")?;
        writeln!(stdin, "start")?;
        stdin.flush()?;
    }
    let mut rate = 0.0;
    for k in &mut kids {
        let l = k.line("done")?;
        let mut w = l.split(' ');
        let (Some("done"), Some(saves), Some(ns), None) = (w.next(), w.next(), w.next(), w.next())
        else {
            return Err(format!("a durable-save process said {l:?} where `done` was due").into());
        };
        let (saves, ns): (u64, u64) = (saves.parse()?, ns.parse()?);
        rate += saves as f64 / (ns.max(1) as f64 / 1e9);
    }
    drop(kids);
    Ok(rate)
}

/// The load averages (`/proc/loadavg`'s first three fields), for the
/// figures' context.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs every count of processes `rounds` times and prints a Markdown
/// table of durable saves per second.
pub fn run(base: &Path, counts: &[u64], value_size: u64, seconds: u64, rounds: u64) -> Outcome {
    let run = Duration::from_secs(seconds);
    let before = load_average();
    let mut rates = vec![Vec::new(); counts.len()];
    let mut raws = vec![Vec::new(); counts.len()];
    for round in 1..=rounds {
        for (k, &procs) in counts.iter().enumerate() {
            let p = usize::try_from(procs)?;
            let r = once(base, p, value_size, run, false)?;
            let f = once(base, p, value_size, run, true)?;
            eprintln!(
                "round {round}/{rounds}: {procs} process(es): {r:.0} durable saves/s, \
                 {f:.0} raw flushes/s"
            );
            rates[k].push(r);
            raws[k].push(f);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base_rate = median(&rates[0]);
    let base_raw = median(&raws[0]);
    let mut text = format!(
        "durable saves (SyncPolicy::Always) per second, all processes together: each process \
         saves {value_size}-byte sessions in a loop on one thread for {seconds} s, on a fresh \
         store per run; beside it, raw: as many processes each flushing records of that size \
         into a file of its own with pwritev2(RWF_DSYNC), no store; rounds run every count \
         in turn; load average {before} before, {} after\n\n\
         | processes |",
        load_average()
    );
    for r in 1..=rounds {
        text.push_str(&format!(" round {r} |"));
    }
    text.push_str(&format!(
        " median | × {0} process(es) | raw flushes/s, median | raw × {0} |\n|---:|",
        counts[0]
    ));
    for _ in 0..=rounds {
        text.push_str("---:|");
    }
    text.push_str("---:|---:|---:|\n");
    for (k, &procs) in counts.iter().enumerate() {
        text.push_str(&format!("| {procs} |"));
        for r in &rates[k] {
            text.push_str(&format!(" {r:.0} |"));
        }
        let m = median(&rates[k]);
        let f = median(&raws[k]);
        text.push_str(&format!(
            " {m:.0} | {:.2}× | {f:.0} | {:.2}× |\n",
            m / base_rate,
            f / base_raw
        ));
    }
    print!("{text}");
    Ok(std::process::ExitCode::SUCCESS)
}
