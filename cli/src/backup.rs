//! `backup STORE DEST` and `restore BACKUP STORE`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, flock};
use sessionlog::DirStore;

use crate::{Failure, Outcome, open_existing, spinner};

pub fn backup(store: &Path, dest: &Path, force: bool) -> Outcome {
    let bar;
    let report = if let Some(dir) = dir_store(store) {
        if !dir.is_dir() {
            return Err(format!("{}: no such directory store", dir.display()).into());
        }
        let store = DirStore::open(dir)?;
        bar = spinner("backing up");
        store.backup_to(dest, force)
    } else {
        let store = open_existing(store)?;
        bar = spinner("backing up");
        store.backup_to(dest, force)
    };
    bar.finish_and_clear();
    let report = report?;
    writeln!(
        io::stdout().lock(),
        "backed up {} sessions to {} ({} bytes, checked)",
        report.sessions,
        report.path.display(),
        report.bytes
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `path` with `suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The directory of a `dir:PATH` store argument.
fn dir_store(spec: &Path) -> Option<&Path> {
    spec.to_str()?.strip_prefix("dir:").map(Path::new)
}

pub fn restore(backup: &Path, store: &Path) -> Outcome {
    if let Some(dir) = dir_store(store) {
        let report = DirStore::restore(backup, dir)?;
        let mut out = io::stdout().lock();
        write!(
            out,
            "restored {} sessions from {} into {}",
            report.sessions,
            backup.display(),
            dir.display()
        )?;
        match report.kept {
            Some(k) => writeln!(out, "; the replaced store is kept as {}", k.display())?,
            None => writeln!(out)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = sessionlog::check(backup)?;
    if !report.is_healthy() || report.torn_tail.is_some() {
        return Err(format!(
            "{}: does not pass check (run `sessionlog check` on it); nothing restored",
            backup.display()
        )
        .into());
    }
    // Every process with the store open holds the lock file's `flock`
    // shared for as long as it has it open; holding it exclusively keeps
    // any process from opening the store until the swap is done.
    let lock_path = beside(store, ".lock");
    let _lock = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&lock_path)
    {
        Ok(f) => {
            if flock(&f, FlockOperation::NonBlockingLockExclusive).is_err() {
                return Err(format!(
                    "{}: the store is open in another process; stop it before restoring",
                    store.display()
                )
                .into());
            }
            f
        }
        Err(e) => return Err(format!("{}: {e}", lock_path.display()).into()),
    };
    let tmp = beside(store, ".restore");
    let copied = copy_private(backup, &tmp);
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let kept = if store.exists() {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let kept = beside(store, &format!(".before-restore-{stamp}"));
        fs::hard_link(store, &kept).map_err(|e| format!("{}: {e}", kept.display()))?;
        Some(kept)
    } else {
        None
    };
    // The hint describes the replaced file: the next open rebuilds it.
    let _ = fs::remove_file(beside(store, ".hint"));
    fs::rename(&tmp, store).map_err(|e| format!("{}: {e}", store.display()))?;
    let dir = store
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all())?;
    let mut out = io::stdout().lock();
    write!(
        out,
        "restored {} into {}",
        backup.display(),
        store.display()
    )?;
    match kept {
        Some(k) => writeln!(out, "; the replaced store is kept as {}", k.display())?,
        None => writeln!(out)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies `from` to a new file `to` (mode 0600) and fsyncs it.
fn copy_private(from: &Path, to: &Path) -> Result<(), Failure> {
    let mut src = File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(to)
        .map_err(|e| format!("{}: {e}", to.display()))?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_all()?;
    Ok(())
}
