//! The commands that read or change sessions: setup, list, show, delete,
//! expire, compact, stats.

use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::json;
use sessionlog::{HashedIds, LogStore, Owner, Session, SessionId, SessionStore, Stats};

use crate::policy::{self, PolicyArgs};
use crate::{
    Failure, Outcome, StatsFormat, fmt_bytes, fmt_time, millis, open_existing, spinner,
    store_options,
};

pub fn setup(path: &Path, policy: &PolicyArgs) -> Outcome {
    let existed = path.exists();
    let store = policy.options(store_options()).open(path)?;
    store.setup()?;
    let stats = store.stats()?;
    let mut out = io::stdout().lock();
    if existed {
        writeln!(
            out,
            "{}: a valid store with {} sessions (generation {})",
            path.display(),
            stats.sessions - stats.expired,
            stats.generation
        )?;
        if let Some(off) = stats.recovery.torn_tail_offset {
            writeln!(
                out,
                "cut a torn tail of {} bytes at offset {off} (an interrupted write)",
                stats.recovery.torn_tail_bytes
            )?;
        }
    } else {
        writeln!(out, "created a store at {}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `list`: what it shows of a session, without its data.
struct Row {
    id: SessionId,
    size: usize,
    modified: Option<SystemTime>,
    expires: Option<SystemTime>,
    version: u64,
    owner: Option<Owner>,
}

/// The live sessions sorted by id (the `limit` smallest ids only, when
/// given, so that a bounded listing holds no more than it prints).
fn sorted_rows(store: &LogStore, limit: Option<usize>) -> Result<Vec<Row>, Failure> {
    let limit = limit.unwrap_or(usize::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    // A max-heap by id holding the smallest ids seen so far.
    let mut heap: BinaryHeap<ById> = BinaryHeap::new();
    for s in store.iter_sessions()? {
        let s = s?;
        if heap.len() == limit {
            match heap.peek() {
                Some(top) if s.id.as_str() < top.0.id.as_str() => {
                    heap.pop();
                }
                _ => continue,
            }
        }
        heap.push(ById(Row {
            size: s.data.len(),
            modified: s.modified(),
            expires: s.expires,
            version: s.version(),
            owner: s.owner,
            id: s.id,
        }));
    }
    Ok(heap.into_sorted_vec().into_iter().map(|r| r.0).collect())
}

/// A row ordered by its id alone.
struct ById(Row);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id.as_str() == other.0.id.as_str()
    }
}
impl Eq for ById {}
impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.as_str().cmp(other.0.id.as_str())
    }
}

/// Width of list's ID column: a `HashedIds` digest (45 characters), or the
/// longest id listed if that is longer, so that the columns stay aligned.
const ID_COLUMN: usize = 45;

pub fn list(path: &Path, limit: Option<usize>, json: bool) -> Outcome {
    let store = open_existing(path)?;
    let rows = sorted_rows(&store, limit)?;
    let mut out = io::stdout().lock();
    if json {
        for r in &rows {
            let line = json!({
                "id": r.id.as_str(),
                "size": r.size,
                "modified": r.modified.map(fmt_time),
                "expires": r.expires.map(fmt_time),
                "version": r.version,
                "owner": r.owner.as_ref().map(Owner::as_str),
            });
            writeln!(out, "{line}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let w = rows
        .iter()
        .map(|r| r.id.as_str().len())
        .fold(ID_COLUMN, usize::max);
    writeln!(
        out,
        "{:<w$} {:>9} {:<24} {:<24} {:>7}",
        "ID", "SIZE", "MODIFIED", "EXPIRES", "VERSION"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<w$} {:>9} {:<24} {:<24} {:>7}",
            r.id.as_str(),
            r.size,
            r.modified.map_or_else(|| "-".into(), fmt_time),
            r.expires.map_or_else(|| "never".into(), fmt_time),
            r.version
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The owner as asked and, if different, the digest a store kept through
/// `HashedIds` holds for it: `--owner` finds sessions saved either way.
fn owner_forms(owner: &Owner) -> Vec<Owner> {
    let digest = HashedIds::<()>::stored_owner(owner);
    if digest == *owner {
        vec![digest]
    } else {
        vec![owner.clone(), digest]
    }
}

/// `list --owner`: the owner's live sessions, most recently modified first.
pub fn list_owner(path: &Path, owner: &Owner, limit: Option<usize>, json: bool) -> Outcome {
    let store = open_existing(path)?;
    let mut list = Vec::new();
    for form in owner_forms(owner) {
        list.extend(store.sessions_of(&form)?);
    }
    list.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.id.cmp(&b.id)));
    let mut out = io::stdout().lock();
    if !json {
        writeln!(
            out,
            "{:<32} {:>9} {:<24} {:<24} {:>7}",
            "ID", "SIZE", "MODIFIED", "EXPIRES", "VERSION"
        )?;
    }
    for s in list.into_iter().take(limit.unwrap_or(usize::MAX)) {
        if json {
            let line = json!({
                "id": s.id.as_str(),
                "size": s.size,
                "modified": fmt_time(s.modified),
                "expires": s.expires.map(fmt_time),
                "version": s.version,
                "owner": owner.as_str(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(
                out,
                "{:<32} {:>9} {:<24} {:<24} {:>7}",
                s.id.as_str(),
                s.size,
                fmt_time(s.modified),
                s.expires.map_or_else(|| "never".into(), fmt_time),
                s.version
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `delete --owner [--keep]`: logs the owner out everywhere (but `keep`).
pub fn delete_owner(path: &Path, owner: &Owner, keep: Option<&SessionId>) -> Outcome {
    let store = open_existing(path)?;
    let keep = match keep {
        Some(k) => match resolve(&store, path, k)? {
            Some(stored) => Some(stored),
            None => return Err(format!("{}: no session {k} to keep", path.display()).into()),
        },
        None => None,
    };
    let mut deleted = 0;
    for form in owner_forms(owner) {
        deleted += store.delete_sessions_of(&form, keep.as_ref())?;
    }
    store.sync()?;
    writeln!(
        io::stdout().lock(),
        "deleted {deleted} sessions of the owner"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `erase --owner`: deletes the owner's sessions and their bytes.
pub fn erase_owner(path: &Path, owner: &Owner) -> Outcome {
    let store = open_existing(path)?;
    let bar = spinner("erasing");
    let mut erased: Result<usize, sessionlog::Error> = Ok(0);
    for form in owner_forms(owner) {
        erased = erased.and_then(|n| Ok(n + store.erase_sessions_of(&form)?));
    }
    bar.finish_and_clear();
    let erased: usize = erased?;
    writeln!(
        io::stdout().lock(),
        "erased {erased} sessions of the owner; no byte of them remains in the store's files"
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Shortest prefix of a stored id that `show` and `delete` accept.
const MIN_PREFIX: usize = 8;

/// The stored id that `arg` names: the stored id itself; else, for a
/// store kept through `HashedIds`, the digest stored for `arg` (a cookie's
/// value); else the one stored id that `arg` (at least 8 characters) is a
/// prefix of, with or without a digest's `h,` tag. `None` if there is no
/// such session; an error if the prefix fits several. Messages name only
/// `arg`, never a stored id.
fn resolve(store: &LogStore, path: &Path, arg: &SessionId) -> Result<Option<SessionId>, Failure> {
    if store.has_session(arg)? {
        return Ok(Some(arg.clone()));
    }
    let digest = HashedIds::<()>::stored_id(arg);
    if store.has_session(&digest)? {
        return Ok(Some(digest));
    }
    let prefix = arg.as_str();
    if prefix.len() < MIN_PREFIX {
        return Ok(None);
    }
    let mut found = None;
    for s in store.iter_sessions()? {
        let id = s?.id;
        let untagged = if HashedIds::<()>::is_digest(&id) {
            id.as_str().get(2..).unwrap_or("")
        } else {
            id.as_str()
        };
        if id.as_str().starts_with(prefix) || untagged.starts_with(prefix) {
            if found.is_some() {
                return Err(format!(
                    "{}: {prefix} is the start of more than one session id; give more characters",
                    path.display()
                )
                .into());
            }
            found = Some(id);
        }
    }
    Ok(found)
}

/// "no session ARG", and why ARG was not looked up as a prefix when it is
/// too short to be one.
fn not_found(path: &Path, arg: &SessionId) -> String {
    let len = arg.as_str().len();
    if len < MIN_PREFIX {
        format!(
            "{}: no session {arg}: not a stored id, and too short for a prefix ({len} \
             characters; a prefix needs at least {MIN_PREFIX}, so that it cannot pick a \
             session by accident)",
            path.display()
        )
    } else {
        format!("{}: no session {arg}", path.display())
    }
}

pub fn show(path: &Path, id: &SessionId, raw: bool, key_file: Option<&Path>) -> Outcome {
    let keys = crate::keys::load(key_file)?;
    let store = open_existing(path)?;
    let Some(mut s) = resolve(&store, path, id)?
        .map(|stored| store.load_session(&stored))
        .transpose()?
        .flatten()
    else {
        return Err(not_found(path, id).into());
    };
    if let Some(keys) = keys {
        s.data = crate::keys::wrap((), keys).decrypt_record(&s.id, &s.data)?;
    }
    let mut out = io::stdout().lock();
    if raw {
        out.write_all(&s.data)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    print_session(&mut out, &s)?;
    Ok(ExitCode::SUCCESS)
}

fn print_session(out: &mut impl Write, s: &Session) -> io::Result<()> {
    writeln!(out, "id:       {}", s.id)?;
    writeln!(out, "version:  {}", s.version())?;
    writeln!(
        out,
        "modified: {}",
        s.modified().map_or_else(|| "-".into(), fmt_time)
    )?;
    writeln!(
        out,
        "expires:  {}",
        s.expires.map_or_else(|| "never".into(), fmt_time)
    )?;
    writeln!(
        out,
        "owner:    {}",
        s.owner.as_ref().map_or("-", Owner::as_str)
    )?;
    // Text only if printing it cannot move the cursor or recolour the
    // terminal: control characters other than tab and newlines go as hex.
    let text = std::str::from_utf8(&s.data).ok().filter(|t| {
        !t.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    });
    match text {
        Some(text) => {
            writeln!(out, "data:     {} bytes, UTF-8", s.data.len())?;
            writeln!(out, "{text}")
        }
        None => {
            writeln!(out, "data:     {} bytes, binary", s.data.len())?;
            hex_dump(out, &s.data)
        }
    }
}

/// `00000010  68 65 6c 6c 6f ...  |hello...|`, 16 bytes a line.
fn hex_dump(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    for (i, chunk) in data.chunks(16).enumerate() {
        write!(out, "{:08x} ", i * 16)?;
        for j in 0..16 {
            match chunk.get(j) {
                Some(b) => write!(out, " {b:02x}")?,
                None => write!(out, "   ")?,
            }
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "  |{ascii}|")?;
    }
    Ok(())
}

pub fn delete(path: &Path, ids: &[SessionId]) -> Outcome {
    let store = open_existing(path)?;
    let mut out = io::stdout().lock();
    let mut missing = 0;
    for id in ids {
        let deleted = match resolve(&store, path, id)? {
            Some(stored) => store.delete_session(&stored)?,
            None => false,
        };
        if deleted {
            writeln!(out, "deleted {id}")?;
        } else {
            missing += 1;
            eprintln!("sessionlog: {}", not_found(path, id));
        }
    }
    store.sync()?;
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Removes the sessions idle for `idle` or longer, with those already
/// expired under the store's own rules, and says how many of each.
///
/// The compaction that removes them counts only their sum, so the split
/// comes from the store as it was just before: the sessions already
/// expired then (past their deadline, or the store's recorded idle limit)
/// are counted as such, the rest of those removed as idle. A session that
/// expires by its deadline while the compaction runs counts as idle; one
/// that a server saves anew meanwhile is not removed, and the counts stay
/// within the total removed.
pub fn expire(path: &Path, idle: Duration) -> Outcome {
    let store = open_existing(path)?;
    let before = store.stats()?;
    let bar = spinner("expiring");
    let removed = store.delete_old_sessions(idle);
    bar.finish_and_clear();
    let removed = removed? as u64;
    let stats = store.stats()?;
    let expired = before.expired.min(removed);
    let rule = match before.policy.max_idle {
        None => "past their deadline".to_owned(),
        Some(limit) => format!(
            "past their deadline or the store's idle limit ({})",
            humantime::format_duration(limit)
        ),
    };
    writeln!(
        io::stdout().lock(),
        "removed {removed} sessions: {expired} {rule}, {} idle for {} or longer; {} remain",
        removed - expired,
        humantime::format_duration(idle),
        stats.sessions - stats.expired
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn compact(path: &Path) -> Outcome {
    let store = open_existing(path)?;
    let bar = spinner("compacting");
    let c = store.compact();
    bar.finish_and_clear();
    let c = c?;
    writeln!(
        io::stdout().lock(),
        "kept {} sessions, dropped {}; {} -> {} (generation {})",
        c.kept,
        c.dropped,
        fmt_bytes(c.bytes_before),
        fmt_bytes(c.bytes_after),
        c.generation
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn stats(path: &Path, format: StatsFormat) -> Outcome {
    let store = open_existing(path)?;
    let s = store.stats()?;
    let mut out = io::stdout().lock();
    if format == StatsFormat::Prometheus {
        prometheus(&mut out, &store.path().display().to_string(), &s)?;
        return Ok(ExitCode::SUCCESS);
    }
    if format == StatsFormat::Json {
        let last = s.last_compaction.as_ref().map(|c| {
            json!({
                "finished": fmt_time(c.finished),
                "finished_ms": millis(c.finished),
                "kept": c.kept,
                "dropped": c.dropped,
                "bytes_before": c.bytes_before,
                "generation": c.generation,
            })
        });
        let v = json!({
            "path": path.display().to_string(),
            "sessions": s.sessions - s.expired,
            "expired": s.expired,
            "live_bytes": s.live_bytes,
            "log_bytes": s.log_bytes,
            "file_bytes": s.file_bytes,
            "garbage_ratio": s.garbage_ratio,
            "generation": s.generation,
            "last_compaction": last,
            "last_background_error": s.last_background_error.as_ref().map(|e| json!({
                "at": fmt_time(e.at),
                "message": e.message,
            })),
            "limits": policy::stats_json(&s),
        });
        writeln!(out, "{v}")?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "path:            {}", path.display())?;
    writeln!(
        out,
        "sessions:        {} (and {} expired, dropped at the next compaction)",
        s.sessions - s.expired,
        s.expired
    )?;
    writeln!(out, "live bytes:      {}", fmt_bytes(s.live_bytes))?;
    writeln!(out, "log bytes:       {}", fmt_bytes(s.log_bytes))?;
    writeln!(out, "file bytes:      {}", fmt_bytes(s.file_bytes))?;
    writeln!(out, "garbage ratio:   {:.3}", s.garbage_ratio)?;
    writeln!(out, "generation:      {}", s.generation)?;
    match &s.last_compaction {
        Some(c) => writeln!(
            out,
            "last compaction: {}, kept {} sessions, dropped {}, from {}",
            fmt_time(c.finished),
            c.kept,
            c.dropped,
            fmt_bytes(c.bytes_before)
        )?,
        None => writeln!(out, "last compaction: never")?,
    }
    if let Some(e) = &s.last_background_error {
        writeln!(
            out,
            "last background error: {} {}",
            fmt_time(e.at),
            e.message
        )?;
    }
    policy::stats_lines(&mut out, &s)?;
    Ok(ExitCode::SUCCESS)
}

/// The store's gauges ([`Stats::gauges`], the names the library's
/// `metrics` feature sets) in the Prometheus text exposition format, each
/// labelled as the library labels it: `backend="log"` and the store's path.
fn prometheus(out: &mut impl Write, store: &str, s: &Stats) -> io::Result<()> {
    let labels = format!("backend=\"log\",store=\"{}\"", escape_label(store));
    for g in s.gauges() {
        writeln!(out, "# HELP {} {}", g.name, escape_help(g.help))?;
        writeln!(out, "# TYPE {} gauge", g.name)?;
        writeln!(out, "{}{{{labels}}} {}", g.name, sample(g.value))?;
    }
    Ok(())
}

/// A label value as the text format quotes it: backslash, double quote
/// and line feed escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: the text format's spelling of the infinities and NaN.
fn sample(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}
