//! Online backup: a compacted, fsynced copy of the store as of one instant,
//! taken while any number of processes keep writing.
//!
//! The instant is taken under the write lock (this process's writer mutex
//! and the lock file's mutex that every process's writers take): with a
//! fresh view, the current file and its applied end. Every write
//! acknowledged before then is below that end; a write made after it is
//! past it. The locks are then let go and the records below the end are
//! copied with `pread`s from that file: records below the committed end
//! are never written again, and the handle kept open on the file keeps
//! its bytes even if a compaction renames another file over its name. The
//! copy gets a header of its own (the source's static header, committed
//! and synced at the copied end), is fsynced, opened privately, compacted
//! (dropping dead records and expired sessions), checked, and only then
//! given its name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::check::check;
use crate::engine::file::LogFile;
use crate::engine::format::{self, HEADER_SIZE};
use crate::engine::shared::Inner;
use crate::error::{Error, Result};

/// What [`LogStore::backup_to`](crate::LogStore::backup_to) wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Bytes of the source log copied (up to the instant).
    pub source_bytes: u64,
    /// Live sessions in the backup (checked).
    pub sessions: u64,
    /// Size of the backup file.
    pub bytes: u64,
}

/// The file and its applied end at one instant, taken under the write
/// lock.
fn instant(inner: &Inner) -> Result<(Arc<LogFile>, u64)> {
    loop {
        let writer = inner.writer.lock();
        let lock = inner.lock.lock()?;
        match inner.follow().fresh_or_switch()? {
            Ok(st) => return Ok((Arc::clone(&st.file), st.applied)),
            Err(switch) => {
                drop(lock);
                drop(writer);
                inner.follow().switch_to(switch)?;
            }
        }
    }
}

/// `dest` with `suffix` added to its name.
fn beside(dest: &Path, suffix: &str) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The files a private open of the copy leaves beside it.
fn remove_siblings(tmp: &Path) {
    for suffix in [".lock", ".hint", ".hint.tmp", ".compact", ".reserve"] {
        let _ = fs::remove_file(beside(tmp, suffix));
    }
}

/// Writes the backup of `inner`'s store to `dest`; `compact` compacts the
/// copy at the path it is given, a store nobody else knows (the caller
/// opens it privately: this layer is below the store handle).
pub(crate) fn backup(
    inner: &Inner,
    dest: &Path,
    overwrite: bool,
    compact: impl FnOnce(&Path) -> Result<()>,
) -> Result<BackupReport> {
    if !overwrite && fs::symlink_metadata(dest).is_ok() {
        return Err(Error::InvalidOption(format!(
            "{}: already exists (pass overwrite to replace it)",
            dest.display()
        )));
    }
    let tmp = beside(dest, ".partial");
    let result = write_copy(inner, dest, &tmp, overwrite, compact);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    remove_siblings(&tmp);
    result
}

fn write_copy(
    inner: &Inner,
    dest: &Path,
    tmp: &Path,
    overwrite: bool,
    compact: impl FnOnce(&Path) -> Result<()>,
) -> Result<BackupReport> {
    let (src, end) = instant(inner)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(tmp)
        .map_err(|e| Error::io(tmp, "create", e))?;
    let mut head = format::encode_header(&src.header, end);
    // The store's policy (idle limit, quotas) as the file records it.
    if let Some(policy) = &src.policy {
        format::encode_policy(policy, &mut head);
    }
    out.write_all(&head)
        .map_err(|e| Error::io(tmp, "write", e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = HEADER_SIZE;
    while at < end {
        let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
        src.file
            .read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::io(&inner.path, "read", e))?;
        out.write_all(&buf[..n])
            .map_err(|e| Error::io(tmp, "write", e))?;
        at += n as u64;
    }
    out.sync_all().map_err(|e| Error::io(tmp, "fsync", e))?;
    drop(out);
    drop(src);
    // Compact the copy on its own: nobody else knows its name.
    compact(tmp)?;
    let report = check(tmp)?;
    let clean = report.is_healthy()
        && report.torn_tail.is_none()
        && report.records_past_committed == 0
        && report.torn_bytes_past_committed == 0;
    if !clean {
        return Err(Error::corrupt(
            tmp,
            0,
            "the backup copy does not pass check",
        ));
    }
    if overwrite {
        fs::rename(tmp, dest).map_err(|e| Error::io(dest, "rename", e))?;
    } else {
        // A link fails if `dest` appeared meanwhile: never replaced.
        fs::hard_link(tmp, dest).map_err(|e| Error::io(dest, "link", e))?;
        fs::remove_file(tmp).map_err(|e| Error::io(tmp, "remove", e))?;
    }
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "fsync", e))?;
    let bytes = fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        path: dest.to_owned(),
        source_bytes: end,
        sessions: report.live_sessions - report.expired_sessions,
        bytes,
    })
}
