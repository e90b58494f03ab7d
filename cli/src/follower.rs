//! The other process of `sessionlog bench`'s compaction-under-load phase.
//!
//! The bench starts its own executable as `sessionlog bench-follower` (a
//! subcommand hidden from `--help`) on the same store, so that one of the
//! phase's two loader/saver threads runs in another process and follows
//! each compaction's swap to the new file as any other process would. The
//! two talk over the child's stdin and stdout, one line at a time:
//!
//! - parent: `ids N`, then N lines of one session id each; child: `ready`,
//!   once it has the ids and has opened the store.
//! - parent: `start`; child: `started`, once it has caught up with the
//!   store (untimed) and its loader/saver thread is about to run.
//! - parent: `stop`; child: `done E`, `load L1 L2 ...`, `save S1 S2 ...`:
//!   the nanoseconds its loader/saver ran, then those of each load and of
//!   each save, in decimal.
//! - end of the parent's stream (the parent is done, or died): the child
//!   stops and exits, 0 unless its store failed.
//!
//! A child that fails prints its error to stderr and exits 1; the parent
//! reports that as [`FollowerError::Exited`], with what the child printed.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use sessionlog::{SessionId, SessionStore};

use crate::bench::{load_and_save, nanos, open_store, random_data};
use crate::{Failure, Outcome, SyncArg};

/// The name of the hidden subcommand.
const SUBCOMMAND: &str = "bench-follower";

/// At most this much of a line goes into an error message.
const QUOTE_LIMIT: usize = 80;

/// Arguments of the hidden `sessionlog bench-follower`, as the bench
/// passes them; the session ids come over stdin.
#[derive(Debug, clap::Args)]
pub struct FollowerArgs {
    /// When saves reach the disk (as the bench's own handles).
    #[arg(long, value_enum)]
    sync: SyncArg,
    /// Writeback every M MiB appended (as the bench's own handles).
    #[arg(long, value_name = "M")]
    writeback_mib: u64,
    /// Bytes of data per session saved.
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(0..=16 << 20))]
    value_size: u64,
    /// Operations per second (0: as fast as it can).
    #[arg(long, value_name = "OPS", value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    load_rate: u64,
    /// The store the bench uses.
    path: PathBuf,
}

/// Why the other process of the bench failed, as the bench sees it.
#[derive(Debug, thiserror::Error)]
pub enum FollowerError {
    /// Its executable could not be found or started.
    #[error("cannot start the bench's other process: {0}")]
    Spawn(#[source] io::Error),
    /// Reading from or writing to its pipes failed.
    #[error("the bench's other process: {0}")]
    Pipe(#[source] io::Error),
    /// It sent a line the protocol does not allow there.
    #[error("the bench's other process sent {got:?} where {expected} was due")]
    Protocol {
        /// What was due.
        expected: &'static str,
        /// The line or word it sent instead (at most `QUOTE_LIMIT` bytes).
        got: String,
    },
    /// Its output ended early, yet it exited with success.
    #[error("the bench's other process closed its output where {expected} was due")]
    Closed {
        /// What was due.
        expected: &'static str,
    },
    /// It exited with failure (`stderr`: what it printed there).
    #[error("the bench's other process failed ({status}){}", fmt_stderr(stderr))]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// What it printed to stderr, trimmed.
        stderr: String,
    },
}

/// `: MESSAGE` for a child's stderr, nothing if it printed nothing.
fn fmt_stderr(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// At most `QUOTE_LIMIT` bytes of `s`, cut at a character boundary.
fn quote(s: &str) -> String {
    let mut end = s.len().min(QUOTE_LIMIT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What the other process measured in one window.
pub struct Measured {
    /// How long its loader/saver ran.
    pub elapsed: Duration,
    /// Nanoseconds of each `[load, save]`.
    pub lat: [Vec<u64>; 2],
}

/// The bench's handle on its other process: a running `bench-follower`
/// with the ids sent and the store open. Dropping it closes the pipes and
/// waits for the child to exit; [`OtherProcess::finish`] does so and
/// reports how it exited.
pub struct OtherProcess {
    child: Child,
    /// Commands to the child; `None` once closed.
    stdin: Option<BufWriter<ChildStdin>>,
    /// Answers from the child; `None` once closed.
    stdout: Option<BufReader<ChildStdout>>,
    /// Reads the child's stderr to its end (so that it never blocks on a
    /// full pipe), for the error if it fails.
    stderr: Option<JoinHandle<String>>,
    /// The last line read, without its newline.
    line: String,
}

impl OtherProcess {
    /// Starts this executable as `bench-follower` on the store at `path`
    /// with the bench's sync policy, value size and rate, sends it `ids`
    /// and waits until it has opened the store.
    pub fn spawn(
        path: &Path,
        sync: SyncArg,
        writeback_mib: u64,
        value_size: usize,
        rate: u64,
        ids: &[SessionId],
    ) -> Result<OtherProcess, FollowerError> {
        let exe = std::env::current_exe().map_err(FollowerError::Spawn)?;
        let sync = sync
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .ok_or_else(|| FollowerError::Spawn(io::Error::other("no name for the sync policy")))?;
        let mut cmd = Command::new(&exe);
        if crate::allow_others() {
            cmd.arg("--allow-others-to-write-directory");
        }
        let mut child = cmd
            .arg(SUBCOMMAND)
            .args(["--sync", &sync])
            .args(["--writeback-mib", &writeback_mib.to_string()])
            .args(["--value-size", &value_size.to_string()])
            .args(["--load-rate", &rate.to_string()])
            .arg("--")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                FollowerError::Spawn(io::Error::new(e.kind(), format!("{}: {e}", exe.display())))
            })?;
        let stdin = child.stdin.take().map(BufWriter::new);
        let stdout = child.stdout.take().map(BufReader::new);
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).trim().to_owned()
            })
        });
        let mut other = OtherProcess {
            child,
            stdin,
            stdout,
            stderr,
            line: String::new(),
        };
        let sent = other.send_ids(ids);
        other.check(sent)?;
        let ready = other.expect_word("ready");
        other.check(ready)?;
        Ok(other)
    }

    /// Starts a window: the child catches up with the store, starts its
    /// loader/saver and says so before this returns.
    pub fn start(&mut self) -> Result<(), FollowerError> {
        let r = self
            .send("start")
            .and_then(|()| self.expect_word("started"));
        self.check(r)
    }

    /// Tells the child to end the window; [`OtherProcess::collect`] reads
    /// what it measured.
    pub fn stop(&mut self) -> Result<(), FollowerError> {
        let r = self.send("stop");
        self.check(r)
    }

    /// What the child measured in the window just stopped.
    pub fn collect(&mut self) -> Result<Measured, FollowerError> {
        let r = self.read_measured();
        self.check(r)
    }

    /// Closes the pipes (the child exits at the end of its input) and
    /// waits for the child; an error if it failed.
    pub fn finish(mut self) -> Result<(), FollowerError> {
        self.close()
    }

    fn send_ids(&mut self, ids: &[SessionId]) -> Result<(), FollowerError> {
        let w = self.writer()?;
        let r = (|| {
            writeln!(w, "ids {}", ids.len())?;
            for id in ids {
                writeln!(w, "{id}")?;
            }
            w.flush()
        })();
        r.map_err(FollowerError::Pipe)
    }

    fn read_measured(&mut self) -> Result<Measured, FollowerError> {
        self.expect_line("done")?;
        let elapsed = match self.words().collect::<Vec<_>>()[..] {
            [w] => Duration::from_nanos(parse_nanos(w)?),
            _ => return Err(self.protocol("`done` and the nanoseconds it ran")),
        };
        let mut lat = [Vec::new(), Vec::new()];
        for (key, out) in ["load", "save"].into_iter().zip(&mut lat) {
            self.expect_line(key)?;
            for w in self.words() {
                out.push(parse_nanos(w)?);
            }
        }
        Ok(Measured { elapsed, lat })
    }

    fn writer(&mut self) -> Result<&mut BufWriter<ChildStdin>, FollowerError> {
        self.stdin
            .as_mut()
            .ok_or_else(|| FollowerError::Pipe(io::Error::other("its stdin is closed")))
    }

    /// Sends one command.
    fn send(&mut self, command: &str) -> Result<(), FollowerError> {
        let w = self.writer()?;
        writeln!(w, "{command}")
            .and_then(|()| w.flush())
            .map_err(FollowerError::Pipe)
    }

    /// Reads a line that must be `key`, or `key` and words after it
    /// ([`OtherProcess::words`]).
    fn expect_line(&mut self, key: &'static str) -> Result<(), FollowerError> {
        let Some(r) = self.stdout.as_mut() else {
            return Err(FollowerError::Pipe(io::Error::other(
                "its stdout is closed",
            )));
        };
        self.line.clear();
        if r.read_line(&mut self.line).map_err(FollowerError::Pipe)? == 0 {
            return Err(FollowerError::Closed { expected: key });
        }
        if self.line.split_ascii_whitespace().next() != Some(key) || !self.line.ends_with('\n') {
            return Err(self.protocol(key));
        }
        Ok(())
    }

    /// The words of the last line read after its first.
    fn words(&self) -> impl Iterator<Item = &str> {
        self.line.split_ascii_whitespace().skip(1)
    }

    /// Reads a line that must be exactly `word`.
    fn expect_word(&mut self, word: &'static str) -> Result<(), FollowerError> {
        self.expect_line(word)?;
        if self.words().next().is_some() {
            return Err(self.protocol(word));
        }
        Ok(())
    }

    /// A protocol error quoting the last line read.
    fn protocol(&self, expected: &'static str) -> FollowerError {
        FollowerError::Protocol {
            expected,
            got: quote(self.line.trim_end_matches('\n')),
        }
    }

    /// Passes `r` on; on an error, closes the pipes and waits for the
    /// child. If the pipes failed or closed, the child's failure (if it
    /// failed) explains why, and is the error.
    fn check<T>(&mut self, r: Result<T, FollowerError>) -> Result<T, FollowerError> {
        r.map_err(|e| match (self.close(), e) {
            (_, e @ FollowerError::Protocol { .. }) => e,
            (Err(exited @ FollowerError::Exited { .. }), _) => exited,
            (_, e) => e,
        })
    }

    /// Closes both pipes, waits for the child and collects its stderr.
    fn close(&mut self) -> Result<(), FollowerError> {
        // Closing stdin ends the child's input: it stops and exits. Closing
        // stdout fails any write it is blocked in.
        let flushed = self.stdin.take().map_or(Ok(()), |mut w| w.flush());
        self.stdout = None;
        let status = self.child.wait().map_err(FollowerError::Pipe)?;
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        if !status.success() {
            return Err(FollowerError::Exited { status, stderr });
        }
        flushed.map_err(FollowerError::Pipe)
    }
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// One latency in decimal nanoseconds.
fn parse_nanos(word: &str) -> Result<u64, FollowerError> {
    word.parse().map_err(|_| FollowerError::Protocol {
        expected: "nanoseconds in decimal",
        got: quote(word),
    })
}

/// `sessionlog bench-follower`: the child's side of the protocol above.
pub fn follower(args: &FollowerArgs) -> Outcome {
    let value_size = usize::try_from(args.value_size)?;
    let mut input = io::stdin().lock();
    let mut out = io::stdout().lock();
    let mut line = String::new();
    let ids = read_ids(&mut input, &mut line)?;
    let store = open_store(&args.path, args.sync, args.writeback_mib)?;
    let data = random_data(value_size);
    writeln!(out, "ready")?;
    out.flush()?;
    loop {
        match read_command(&mut input, &mut line)? {
            None => return Ok(ExitCode::SUCCESS),
            Some("start") => {}
            Some(other) => return Err(format!("expected `start`, got {:?}", quote(other)).into()),
        }
        // Catch up with the bench's saves before the window, untimed.
        store.load_session(&ids[0])?;
        writeln!(out, "started")?;
        out.flush()?;
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let (command, result) = std::thread::scope(|s| {
            let worker = s.spawn(|| load_and_save(&store, &ids, &data, args.load_rate, &stop));
            let command = read_command(&mut input, &mut line).map(|c| c.map(str::to_owned));
            stop.store(true, Ordering::Relaxed);
            let result = worker
                .join()
                .unwrap_or_else(|_| Err("the loader/saver thread panicked".into()));
            (command, result)
        });
        let elapsed = start.elapsed();
        let [loads, saves] = result?;
        match command?.as_deref() {
            // The bench is gone: nobody wants the figures.
            None => return Ok(ExitCode::SUCCESS),
            Some("stop") => {}
            Some(other) => return Err(format!("expected `stop`, got {:?}", quote(other)).into()),
        }
        out.write_all(measured(elapsed, &loads, &saves).as_bytes())?;
        out.flush()?;
    }
}

/// The answer to `stop`: `done`, `load` and `save` lines.
fn measured(elapsed: Duration, loads: &[u64], saves: &[u64]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(32 + (loads.len() + saves.len()) * 8);
    let _ = writeln!(s, "done {}", nanos(elapsed));
    for (key, lat) in [("load", loads), ("save", saves)] {
        s.push_str(key);
        for l in lat {
            let _ = write!(s, " {l}");
        }
        s.push('\n');
    }
    s
}

/// The next command without its newline, `None` at the end of the input.
fn read_command<'a>(
    input: &mut impl BufRead,
    line: &'a mut String,
) -> Result<Option<&'a str>, Failure> {
    line.clear();
    if input.read_line(line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches('\n')))
}

/// `ids N` and the N ids after it.
fn read_ids(input: &mut impl BufRead, line: &mut String) -> Result<Vec<SessionId>, Failure> {
    let first = read_command(input, line)?.unwrap_or_default();
    let Some(n) = first
        .strip_prefix("ids ")
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return Err(format!("expected `ids N`, got {:?}", quote(first)).into());
    };
    if n == 0 {
        return Err("no session ids to load and save".into());
    }
    // Grown as the ids come, not trusted with the count up front.
    let mut ids = Vec::with_capacity(n.min(1 << 20));
    for k in 0..n {
        match read_command(input, line)? {
            Some(id) => ids.push(SessionId::new(id).map_err(|e| format!("session id {k}: {e}"))?),
            None => return Err(format!("the input ended after {k} of {n} session ids").into()),
        }
    }
    Ok(ids)
}
