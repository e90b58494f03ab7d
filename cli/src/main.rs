//! `sessionlog`: the admin command for sessionlog stores. See CLI.md.

mod admin;
mod backup;
mod bench;
mod check;
mod copy;
mod durable;
mod follower;
mod keys;
mod policy;
mod transfer;

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sessionlog::{LogOptions, LogStore, Owner, SessionId};

/// The error type of the commands: anything displayable as one sentence.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;
/// What a command returns: an exit code, or an error printed to stderr
/// (exit 1).
pub type Outcome = Result<ExitCode, Failure>;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  damage found (check), a session not found (show, delete), a bad
     import line, or the operation failed (the error names the file)
  2  bad usage: unknown option, invalid id or duration";

/// Administer sessionlog stores: inspect, expire, compact, verify, back up,
/// re-encrypt and benchmark.
#[derive(Debug, Parser)]
#[command(name = "sessionlog", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Open a store whose directory other users may write (group- or
    /// world-writable, like /tmp), giving up the protection against them
    /// (the library's `allow_others_to_write_directory(true)`).
    #[arg(long, global = true)]
    allow_others_to_write_directory: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a store, or confirm that an existing one is valid. The rules
    /// given are recorded in a new store; an existing one must record the
    /// same (change them with `policy`).
    Setup {
        /// The store file.
        path: PathBuf,
        #[command(flatten)]
        policy: policy::PolicyArgs,
    },
    /// Show the rules a store records for every process (idle limit,
    /// quota, what a full store does), or record the ones given.
    Policy {
        /// The store file.
        path: PathBuf,
        #[command(flatten)]
        policy: policy::PolicyArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One line per live session: id, data size, modified, expires, version.
    List {
        /// The store file.
        path: PathBuf,
        /// Only this owner's sessions (typically a user id), most recently
        /// modified first; also found when the store keeps owners as
        /// `HashedIds` digests.
        #[arg(long, value_name = "OWNER", value_parser = parse_owner)]
        owner: Option<Owner>,
        /// Print at most this many sessions.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One session: its metadata and data (UTF-8 as text, else a hex dump).
    Show {
        /// The store file.
        path: PathBuf,
        /// The session id as stored (for a store kept through `HashedIds`:
        /// its digest, or the session's own id), or a unique prefix of at
        /// least 8 characters of a stored id. It may start with `-`.
        #[arg(value_parser = parse_id, allow_hyphen_values = true)]
        id: SessionId,
        /// Write only the data bytes to stdout.
        #[arg(long)]
        raw: bool,
        /// Decrypt with the keys of this file (a store kept through
        /// `Encrypted`; see `rekey`).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Delete sessions (exit 1 if any did not exist), or with --owner
    /// every session of an owner ("log out everywhere").
    Delete {
        /// The store file.
        path: PathBuf,
        /// Every live session of this owner instead of ids.
        #[arg(long, value_name = "OWNER", value_parser = parse_owner, conflicts_with = "ids")]
        owner: Option<Owner>,
        /// With --owner: spare this session (as `show` takes it).
        #[arg(long, value_name = "ID", value_parser = parse_id, requires = "owner", allow_hyphen_values = true)]
        keep: Option<SessionId>,
        /// The session ids, each as `show` takes it (a stored id, a
        /// session's own id, or a unique prefix of 8 or more characters).
        /// Every argument after PATH is an id, even one that starts with
        /// `-`.
        #[arg(required_unless_present = "owner", value_parser = parse_id, allow_hyphen_values = true)]
        ids: Vec<SessionId>,
    },
    /// Delete every session of an owner so that no byte of their ids, data
    /// or owner remains in the store's files (a user's erasure).
    Erase {
        /// The store file.
        path: PathBuf,
        /// The owner whose sessions go.
        #[arg(long, value_name = "OWNER", value_parser = parse_owner)]
        owner: Owner,
    },
    /// Delete sessions idle for at least DURATION and those past their
    /// deadline, counting each apart (safe to run from cron while servers
    /// use the store).
    Expire {
        /// The store file.
        path: PathBuf,
        /// Idle time, e.g. 30m, 2h, 14d.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        idle: Duration,
    },
    /// Rewrite live sessions into a new file, dropping dead records.
    Compact {
        /// The store file.
        path: PathBuf,
    },
    /// Verify every record's checksum and the index; exit 1 on damage.
    Check {
        /// The store file.
        path: PathBuf,
        /// Salvage every valid record of a damaged store, keeping a copy of
        /// the damaged file beside it (exit 0 once repaired).
        #[arg(long)]
        repair: bool,
    },
    /// Sessions, bytes, garbage ratio, generation, last compaction, the
    /// policy, and how far the store is from its quota and its reserve.
    Stats {
        /// The store file.
        path: PathBuf,
        /// Print one JSON object (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// How to print: lines for a person, one JSON object, or the
        /// Prometheus text format (gauges named `sessionlog_*`, for
        /// node-exporter's textfile collector).
        #[arg(long, value_enum, default_value_t = StatsFormat::Text)]
        format: StatsFormat,
    },
    /// Write every live session to stdout (or a new file) as JSON lines.
    Export {
        /// The store file.
        path: PathBuf,
        /// Write to this new file (created mode 0600; an existing file is
        /// refused) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Decrypt with the keys of this file (a store kept through
        /// `Encrypted`; see `rekey`).
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Read JSON lines (as written by export) from stdin into a store,
    /// creating it if needed; each line is imported whole or not at all.
    Import {
        /// The store file.
        path: PathBuf,
        /// Encrypt the imported data with the current key of this file
        /// (the first line), for a store kept through `Encrypted`.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
    },
    /// Write a compacted, checked copy of a store (mode 0600) while other
    /// processes keep writing: every save acknowledged before it began.
    Backup {
        /// The store file, or `dir:PATH` for a DirStore (the backup is
        /// then a directory, 0700, files 0600).
        path: PathBuf,
        /// The backup file (or directory) to create.
        dest: PathBuf,
        /// Replace DEST if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Replace a store with a backup, keeping the replaced file beside it;
    /// refused while any process has the store open.
    Restore {
        /// The backup file (checked first), or the backup directory of a
        /// DirStore.
        backup: PathBuf,
        /// The store file to replace (or create), or `dir:PATH` for a
        /// DirStore.
        path: PathBuf,
    },
    /// Copy every live session from one store to another, keeping ids,
    /// data, deadlines and owners (see CLI.md for what each backend keeps).
    /// A store is a LogStore file path, `dir:PATH`, or a `postgres://`,
    /// `mysql://` or `redis://` URL (with the matching build feature).
    /// FROM may also be a tower-sessions app's own store,
    /// `tower-sessions-redis://` or `tower-sessions-postgres://` (feature
    /// `tower-sessions` too): its sessions keep their ids for `TowerStore`.
    Copy {
        /// The source store (must exist).
        from: String,
        /// The destination store (created if needed).
        to: String,
        /// Replace sessions already live at the destination.
        #[arg(long)]
        overwrite: bool,
        /// The table of a `postgres://` or `mysql://` end (default
        /// `sessions`).
        #[arg(long, value_name = "NAME")]
        table: Option<String>,
        /// The key prefix of a `redis://` end (default `sessionlog`).
        #[arg(long, value_name = "PREFIX")]
        key_prefix: Option<String>,
        /// The key prefix of a `tower-sessions-redis://` source, as the
        /// app gave `RedisStore::with_prefix` (default none).
        #[arg(long, value_name = "PREFIX")]
        tower_prefix: Option<String>,
        /// The table of a `tower-sessions-postgres://` source (default
        /// `tower_sessions.session`, `PostgresStore`'s).
        #[arg(long, value_name = "SCHEMA.TABLE")]
        tower_table: Option<String>,
    },
    /// Re-encrypt every live session under the current key (the first
    /// line of the key file), online, while servers write; then compact,
    /// so that no record under another key stays in the file.
    Rekey {
        /// The store file.
        path: PathBuf,
        /// The keys: `KEY_ID:BASE64` lines, the first is the current key,
        /// the others retired (they decrypt only). Mode 0600.
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// More retired keys (the old key file), same format.
        #[arg(long, value_name = "FILE")]
        retire_file: Option<PathBuf>,
    },
    /// Print a new random 256-bit key as a key file line, `KEY_ID:BASE64`.
    Keygen {
        /// The new key's id: 1 to 32 characters of A-Z a-z 0-9 . _ -
        key_id: String,
    },
    /// Benchmark the session workload on a store (a temporary one by
    /// default, removed afterwards).
    Bench(bench::BenchArgs),
    /// The other process of `bench`'s compaction-under-load phase, started
    /// and driven over stdin and stdout by `bench` itself.
    #[command(hide = true)]
    BenchFollower(follower::FollowerArgs),
    /// One process of `bench --durable-processes`, started and driven over
    /// stdin and stdout by `bench` itself.
    #[command(hide = true)]
    BenchDurable(durable::DurableArgs),
}

/// How `stats` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// Lines for a person.
    Text,
    /// One JSON object.
    Json,
    /// The Prometheus text exposition format.
    Prometheus,
}

/// When saves reach the disk, for `bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SyncArg {
    /// On stable storage before every save returns (group commit).
    Always,
    /// fdatasync once a second in a background thread (the library default).
    Interval,
    /// Leave write-back to the operating system.
    Never,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Outcome {
    ALLOW_OTHERS.store(cli.allow_others_to_write_directory, Ordering::Relaxed);
    match cli.command {
        Command::Setup { path, policy } => admin::setup(&path, &policy),
        Command::Policy { path, policy, json } => policy::policy(&path, &policy, json),
        Command::List {
            path,
            limit,
            json,
            owner: Some(owner),
        } => admin::list_owner(&path, &owner, limit, json),
        Command::List {
            path, limit, json, ..
        } => admin::list(&path, limit, json),
        Command::Show {
            path,
            id,
            raw,
            key_file,
        } => admin::show(&path, &id, raw, key_file.as_deref()),
        Command::Delete {
            path,
            owner: Some(owner),
            keep,
            ..
        } => admin::delete_owner(&path, &owner, keep.as_ref()),
        Command::Delete { path, ids, .. } => admin::delete(&path, &ids),
        Command::Erase { path, owner } => admin::erase_owner(&path, &owner),
        Command::Expire { path, idle } => admin::expire(&path, idle),
        Command::Compact { path } => admin::compact(&path),
        Command::Check { path, repair } => check::check(&path, repair),
        Command::Stats { path, json, format } => {
            admin::stats(&path, if json { StatsFormat::Json } else { format })
        }
        Command::Export {
            path,
            output,
            key_file,
        } => transfer::export(&path, output.as_deref(), key_file.as_deref()),
        Command::Import { path, key_file } => transfer::import(&path, key_file.as_deref()),
        Command::Backup { path, dest, force } => backup::backup(&path, &dest, force),
        Command::Restore { backup, path } => backup::restore(&backup, &path),
        Command::Copy {
            from,
            to,
            overwrite,
            table,
            key_prefix,
            tower_prefix,
            tower_table,
        } => copy::copy(
            &from,
            &to,
            &copy::Names {
                table: table.as_deref(),
                key_prefix: key_prefix.as_deref(),
                tower_prefix: tower_prefix.as_deref(),
                tower_table: tower_table.as_deref(),
            },
            overwrite,
        ),
        Command::Rekey {
            path,
            key_file,
            retire_file,
        } => keys::rekey(&path, &key_file, retire_file.as_ref()),
        Command::Keygen { key_id } => keys::keygen(&key_id),
        Command::Bench(args) => bench::bench(&args),
        Command::BenchFollower(args) => follower::follower(&args),
        Command::BenchDurable(args) => durable::child(&args),
    }
}

fn parse_id(s: &str) -> Result<SessionId, String> {
    SessionId::new(s).map_err(|e| e.to_string())
}

fn parse_owner(s: &str) -> Result<Owner, String> {
    Owner::new(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 30m, 2h or 14d)"))?;
    if d.is_zero() {
        return Err("the idle time must be more than zero".into());
    }
    Ok(d)
}

/// Fails with "no store at PATH" unless `path` exists, so that commands
/// other than `setup` and `import` never create a store by accident.
fn require_store(path: &Path) -> Result<(), Failure> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("no store at {}", path.display()).into())
        }
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}

/// `--allow-others-to-write-directory`, for every store a command opens.
static ALLOW_OTHERS: AtomicBool = AtomicBool::new(false);

/// Whether the command line said `--allow-others-to-write-directory`.
pub(crate) fn allow_others() -> bool {
    ALLOW_OTHERS.load(Ordering::Relaxed)
}

/// The options every command (but `bench`) opens a store with: no
/// background thread, so nothing runs behind the command's back; and, as
/// maintenance commands, `maintain_as_owner`: run as root on another
/// user's store, a command works as that user (CLI.md, "Running as root").
fn store_options() -> LogOptions {
    LogStore::options()
        .background(false)
        .maintain_as_owner(true)
        .allow_others_to_write_directory(allow_others())
}

/// Opens an existing store the way every command does (`store_options`).
fn open_existing(path: &Path) -> Result<LogStore, Failure> {
    require_store(path)?;
    Ok(store_options().open(path)?)
}

/// A progress bar on stderr when it is a terminal, a hidden one otherwise.
fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>10} [{bar:30}] {percent:>3}% {elapsed}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A spinner on stderr when it is a terminal, for work of unknown length.
fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Largest time RFC 3339 can show (year 9999).
const MAX_RFC3339_SECS: u64 = 253_402_300_799;

/// A time as RFC 3339 UTC with milliseconds, or as milliseconds since the
/// epoch when it is outside years 1970 to 9999.
fn fmt_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= MAX_RFC3339_SECS => humantime::format_rfc3339_millis(t).to_string(),
        Ok(d) => d.as_millis().to_string(),
        Err(_) => "0".to_owned(),
    }
}

/// Milliseconds since the epoch (saturating, 0 before it).
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bytes in binary units: `1.5 MiB`.
fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`sessionlog list | head`) is not a failure.
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(io::stderr(), "sessionlog: {e}");
            ExitCode::from(1)
        }
    }
}
