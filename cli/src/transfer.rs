//! `export` and `import`: sessions as JSON lines, one object a line:
//!
//! ```text
//! {"id":"…","data":"<base64>","modified":"2026-01-01T10:00:00.000Z","expires":null,"version":3,"owner":"42"}
//! ```
//!
//! Times are RFC 3339 UTC, or milliseconds since the epoch outside years
//! 1970 to 9999; `expires` is null for none. `owner` is null (or, in
//! exports written before owners existed, absent) for none.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sessionlog::{Encrypted, Owner, Session, SessionId, SessionStore};

use crate::{Outcome, fmt_time, open_existing, spinner, store_options};

pub fn export(path: &Path, output: Option<&Path>, key_file: Option<&Path>) -> Outcome {
    let keys = crate::keys::load(key_file)?;
    let store = open_existing(path)?;
    let enc = keys.map(|k| crate::keys::wrap((), k));
    let Some(output) = output else {
        return write_sessions(&store, enc.as_ref(), io::stdout().lock());
    };
    // Session data are logins: the file is 0600 from its creation, and a
    // file already there (another user's, or a link) is never written.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(output)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => format!(
                "{} exists; export writes only a new file (remove it or name another)",
                output.display()
            ),
            _ => format!("create {}: {e}", output.display()),
        })?;
    let written = write_sessions(&store, enc.as_ref(), &file).and_then(|code| {
        file.sync_all()
            .map_err(|e| format!("sync {}: {e}", output.display()))?;
        Ok(code)
    });
    if written.is_err() {
        // No half export left behind to be taken for a whole one.
        let _ = fs::remove_file(output);
    }
    written
}

/// Every live session as JSON lines into `out`.
fn write_sessions<S: SessionStore>(
    store: &S,
    enc: Option<&Encrypted<()>>,
    out: impl Write,
) -> Outcome {
    let mut out = io::BufWriter::new(out);
    for s in store.iter_sessions()? {
        let mut s = s?;
        if let Some(enc) = &enc {
            s.data = enc.decrypt_record(&s.id, &s.data)?;
        }
        let line = json!({
            "id": s.id.as_str(),
            "data": BASE64.encode(&s.data),
            "modified": s.modified().map(fmt_time),
            "expires": s.expires.map(fmt_time),
            "version": s.version(),
            "owner": s.owner.as_ref().map(Owner::as_str),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Longest accepted import line: base64 of the largest session data
/// (`DEFAULT_MAX_SESSION_SIZE`) plus 64 KiB for the id and the times.
const MAX_LINE: u64 = (sessionlog::DEFAULT_MAX_SESSION_SIZE as u64).div_ceil(3) * 4 + (64 << 10);

pub fn import(path: &Path, key_file: Option<&Path>) -> Outcome {
    let enc = crate::keys::load(key_file)?.map(|k| crate::keys::wrap((), k));
    // Each session is restored as exported: its `modified` time (so that
    // idle times survive the move) and its version.
    let store = store_options().open(path)?;
    let bar = spinner("importing");
    let mut input = io::stdin().lock();
    let mut buf = Vec::new();
    let (mut line_no, mut imported, mut expired, mut bad) = (0u64, 0u64, 0u64, 0u64);
    loop {
        buf.clear();
        // A line is read up to the longest a session can need (its data in
        // base64 plus the other fields): a line of any length costs no more.
        if (&mut input)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut buf)?
            == 0
        {
            break;
        }
        line_no += 1;
        if buf.len() as u64 > MAX_LINE && !buf.ends_with(b"\n") {
            bad += 1;
            bar.suspend(|| {
                eprintln!(
                    "sessionlog: line {line_no}: longer than {MAX_LINE} bytes, more than any \
                     session of the largest size needs; line skipped"
                )
            });
            // Skip the rest of the line, a bounded chunk at a time.
            loop {
                buf.clear();
                let n = (&mut input).take(1 << 20).read_until(b'\n', &mut buf)?;
                if n == 0 || buf.ends_with(b"\n") {
                    break;
                }
            }
            continue;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let saved = parse_line(line).and_then(|mut session| {
            // Past its deadline: nothing to import (the store would hold it
            // as garbage until the next compaction).
            if session.expires.is_some_and(|e| e <= SystemTime::now()) {
                return Ok(false);
            }
            if let Some(enc) = &enc {
                session.data = enc
                    .encrypt_record(&session.id, &session.data)
                    .map_err(|e| e.to_string())?;
            }
            store.restore_session(&session).map_err(|e| e.to_string())?;
            // Restored but absent: expired by a rule of the store's own
            // (an idle limit), which the deadline check above cannot see.
            store.has_session(&session.id).map_err(|e| e.to_string())
        });
        match saved {
            Ok(true) => imported += 1,
            Ok(false) => expired += 1,
            Err(why) => {
                bad += 1;
                bar.suspend(|| eprintln!("sessionlog: line {line_no}: {why}; line skipped"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    store.sync()?;
    writeln!(
        io::stdout().lock(),
        "imported {imported} sessions into {}; skipped {expired} expired; {bad} bad lines",
        path.display()
    )?;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One exported session, or why the line is not one. A missing `modified`
/// means now; a missing `version`, 1.
fn parse_line(line: &str) -> Result<Session, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let id = obj
        .get("id")
        .and_then(Value::as_str)
        .ok_or("\"id\" is missing or not a string")?;
    let id = SessionId::new(id).map_err(|e| e.to_string())?;
    let data = obj
        .get("data")
        .and_then(Value::as_str)
        .ok_or("\"data\" is missing or not a string")?;
    let data = BASE64
        .decode(data)
        .map_err(|e| format!("\"data\" is not base64: {e}"))?;
    let modified = parse_time(obj.get("modified"), "modified")?;
    let expires = parse_time(obj.get("expires"), "expires")?;
    let version = match obj.get("version") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|&v| v > 0)
            .ok_or("\"version\" must be a positive integer")?,
    };
    // The reason only: an owner is personal data, never echoed.
    let owner = match obj.get("owner") {
        None | Some(Value::Null) => None,
        Some(Value::String(o)) => Some(
            Owner::new(o.as_str()).map_err(|e| format!("\"owner\" is not a valid owner: {e}"))?,
        ),
        Some(_) => return Err("\"owner\" must be a string or null".into()),
    };
    let mut session = Session::restore(
        id,
        data,
        expires,
        modified.unwrap_or_else(SystemTime::now),
        version,
    );
    session.owner = owner;
    Ok(session)
}

/// A time field: absent or null, an RFC 3339 string, or milliseconds.
fn parse_time(v: Option<&Value>, name: &str) -> Result<Option<SystemTime>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => humantime::parse_rfc3339_weak(s)
            .map(Some)
            .map_err(|e| format!("\"{name}\" is not an RFC 3339 time: {e}")),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
            .map(Some)
            .ok_or_else(|| format!("\"{name}\" is not a time in milliseconds")),
        Some(_) => Err(format!(
            "\"{name}\" must be an RFC 3339 string, milliseconds or null"
        )),
    }
}
