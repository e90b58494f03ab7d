//! The file's blocks: reserving them (`fallocate`, or zeros written),
//! and finding which parts of a range hold data (`SEEK_DATA`,
//! `SEEK_HOLE`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The parts of `[from, to)` of `file` that may hold data (see
/// [`LogFile::data_ranges`](super::LogFile::data_ranges)).
pub(crate) fn data_ranges(file: &File, from: u64, to: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();

    let seek = |pos: u64, whence| -> Option<io::Result<u64>> {
        let p = libc::off_t::try_from(pos).ok()?;
        // SAFETY: lseek only reads its integer arguments; the
        // descriptor is owned by `file`. It moves the file offset, which
        // callers do not use: every read and write of theirs is
        // positioned or through a mapping.
        let r = unsafe { libc::lseek(fd, p, whence) };
        Some(if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        })
    };
    let mut out = Vec::new();
    let mut pos = from;
    while pos < to {
        let data = match seek(pos, libc::SEEK_DATA) {
            Some(Ok(d)) => d,
            // No data at or after `pos`.
            Some(Err(e)) if e.raw_os_error() == Some(libc::ENXIO) => break,
            _ => {
                out.push((pos, to));
                break;
            }
        };
        if data >= to {
            break;
        }
        let hole = match seek(data, libc::SEEK_HOLE) {
            Some(Ok(h)) => h.min(to),
            _ => to,
        };
        out.push((data, hole));
        pos = hole.max(data + 1);
    }
    out
}

/// Writes zeros over `[offset, offset + len)`.
pub(super) fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = usize::try_from(offset + len - at)
            .unwrap_or(usize::MAX)
            .min(zeros.len());
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Reserves `[offset, offset + len)`, extending the file. Returns false if
/// the filesystem cannot reserve blocks and the file was only extended.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from(io::ErrorKind::FileTooLarge));
    };
    // SAFETY: fallocate only reads its integer arguments; the descriptor is
    // owned by `file`, which is open for writing.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, l) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(offset + len).map(|()| false),
        _ => Err(err),
    }
}
