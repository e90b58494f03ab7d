//! The log file: read through a shared memory map, appended with positioned
//! writes (or copies into the map), preallocated in chunks.
//!
//! Beside it, parts that import none of each other (`.ci/layers.sh`
//! checks):
//!
//! - `premapped`: another process's mapping of a compaction's file, made
//!   ahead of the swap;
//! - `blocks`: reserving the file's blocks, finding where its data is;
//! - `site`: a file of the store, reached by name through the store's
//!   directory descriptor.

mod blocks;
mod mapping;
mod premapped;
mod site;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use mapping::Mapping;

use crate::engine::format::{
    self, H_COMMITTED, H_POLICY_END, H_SUPERSEDED, H_SYNCED, HEADER_SIZE, HeaderError, Policy,
    StaticHeader,
};
use crate::error::{Error, Result};
use crate::trust::{self, Create, Owner};

use blocks::write_zeros;
pub(crate) use blocks::{allocate, data_ranges};
pub(crate) use premapped::Premapped;
pub(crate) use site::{Site, sibling};

/// One open log file and its shared mapping. Immutable once built: when
/// the file outgrows the mapping, a new `LogFile` with a larger mapping
/// replaces it, and readers still holding the old one stay valid because
/// no file that anyone may have mapped is ever shortened.
#[derive(Debug)]
pub(crate) struct LogFile {
    /// The log's path, for messages.
    pub path: PathBuf,
    /// A shared mapping of the whole file as long as it was when mapped
    /// (`mapped_file_len`), and room past it; a file that outgrows that
    /// gets a new `LogFile`.
    map: Mapping,
    pub file: File,
    /// The file's length when it was mapped.
    pub mapped_file_len: u64,
    /// Set once this handle reserved blocks with `fallocate`: records may
    /// then be written through the mapping.
    reserved: AtomicBool,
    pub header: StaticHeader,
    /// The store's policy as this file records it (`None`: a file of an
    /// earlier build, which records none; DESIGN.md §9).
    pub policy: Option<Policy>,
    /// Device and inode, to tell whether the log's name still holds this
    /// file.
    pub ino: (u64, u64),
    /// Where the log lives: its directory and name (cold: opens, swaps).
    pub site: Site,
}

/// The shared header word at `offset` of a mapped file.
///
/// # Safety
///
/// The file must be at least `HEADER_SIZE` long (a touch of the header
/// page of a shorter file raises SIGBUS). The mapping is page-aligned and
/// longer than a header (`LogFile::map` leaves at least 64 MiB of room),
/// so `offset`, a multiple of 8 below `HEADER_SIZE`, is in bounds and
/// aligned for an `AtomicU64`, which lives as long as the borrow of `map`.
/// Every process touches these words only through atomic operations, so
/// there is no data race.
unsafe fn shared_word(map: &MmapRaw, offset: usize) -> &AtomicU64 {
    debug_assert!(offset.is_multiple_of(8) && offset + 8 <= HEADER_SIZE as usize);
    debug_assert!(map.len() >= HEADER_SIZE as usize);
    // SAFETY: see the function's contract.
    unsafe { &*map.as_mut_ptr().add(offset).cast::<AtomicU64>() }
}

/// The least and most room a mapping leaves for the file to grow.
const MAP_ROOM_MIN: u64 = 64 << 20;
const MAP_ROOM_MAX: u64 = 4 << 30;

impl LogFile {
    /// Opens and validates an existing log file of `owner`'s store.
    pub fn open(site: &Site, owner: Owner) -> Result<LogFile> {
        let file = site.open(Create::No, owner)?;
        Self::from_file(site, file)
    }

    /// Maps an open file after checking its header: the file at `site`, or
    /// one that is to be renamed there.
    pub fn from_file(site: &Site, file: File) -> Result<LogFile> {
        let path = &site.path;
        let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
        let mut head = vec![0u8; (meta.len().min(H_POLICY_END as u64)) as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(path, "read header", e))?;
        let header = check_header(path, &head)?;
        if meta.len() < HEADER_SIZE {
            return Err(Error::corrupt(
                path,
                meta.len(),
                "the file ends inside the header",
            ));
        }
        let policy = check_policy(path, &head)?;
        Self::mapped(site, file, &meta, header, policy)
    }

    /// Maps the damaged log at `site` for repair, whose header could not
    /// be read: `header` (what repair salvaged of it) stands in for the
    /// one on disk. Nothing here reads the file's header page; a file
    /// shorter than a header is mapped but holds no records to read.
    pub fn open_damaged(site: &Site, owner: Owner, header: StaticHeader) -> Result<LogFile> {
        let path = &site.path;
        let file = site.open(Create::No, owner)?;
        let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
        Self::mapped(site, file, &meta, header, None)
    }

    /// Maps `file` (at `site`, of metadata `meta`) as a log whose header
    /// and policy are the ones given.
    fn mapped(
        site: &Site,
        file: File,
        meta: &std::fs::Metadata,
        header: StaticHeader,
        policy: Option<Policy>,
    ) -> Result<LogFile> {
        let map = Self::map(&site.path, &file, meta.len())?;
        Ok(LogFile {
            path: site.path.clone(),
            site: site.clone(),
            file,
            map,
            mapped_file_len: meta.len(),
            reserved: AtomicBool::new(false),
            header,
            policy,
            ino: (meta.dev(), meta.ino()),
        })
    }

    /// Maps `file`, whose length is `len`, with room to grow: the mapping
    /// reaches as far again (at least 64 MiB more, at most 4 GiB), so that a
    /// growing log is mapped again only each time it doubles. Replacing a
    /// mapping unmaps the old one, which for a large file takes long
    /// enough to stall every request waiting on the lock it is done
    /// under. Bytes past the file's end are never touched: every read is
    /// of committed records, below the file's length (see `bytes`).
    fn map(path: &Path, file: &File, len: u64) -> Result<Mapping> {
        let room = len.clamp(MAP_ROOM_MIN, MAP_ROOM_MAX);
        let len = len
            .checked_add(room)
            .and_then(|l| usize::try_from(l.next_multiple_of(1 << 16)).ok())
            .ok_or_else(|| Error::corrupt(path, len, "file too large to map"))?;
        MmapOptions::new()
            .len(len)
            .map_raw(file)
            .map(Mapping::new)
            .map_err(|e| Error::io(path, "mmap", e))
    }

    /// This file with its header read again and its mapping kept (made
    /// anew only if the file outgrew it): a compaction's new file, once
    /// the real header is written over the placeholder it was mapped with.
    pub fn with_header_read_again(self) -> Result<LogFile> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?;
        let mut head = vec![0u8; (meta.len().min(H_POLICY_END as u64)) as usize];
        self.file
            .read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(&self.path, "read header", e))?;
        let header = check_header(&self.path, &head)?;
        if meta.len() < HEADER_SIZE {
            return Err(Error::corrupt(
                &self.path,
                meta.len(),
                "the file ends inside the header",
            ));
        }
        let policy = check_policy(&self.path, &head)?;
        let log = LogFile {
            header,
            policy,
            mapped_file_len: meta.len(),
            ..self
        };
        if meta.len() > log.map_len() {
            return log.remapped();
        }
        Ok(log)
    }

    /// A new `LogFile` for the same file, mapping its current length (and
    /// room past it).
    pub fn remapped(&self) -> Result<LogFile> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(&self.path, "dup", e))?;
        let len = self.file_len()?;
        let map = Self::map(&self.path, &file, len)?;
        Ok(LogFile {
            path: self.path.clone(),
            site: self.site.clone(),
            file,
            map,
            mapped_file_len: len,
            reserved: AtomicBool::new(self.reserved.load(Ordering::Relaxed)),
            header: self.header,
            policy: self.policy,
            ino: self.ino,
        })
    }

    /// Takes `pre`'s mapping in place of this one's if `pre` maps this
    /// very file (same device and inode) and covers it: the page tables
    /// `pre` populated ahead then serve this file's first reads, which
    /// would otherwise fault page by page. Returns the mapping that is no
    /// longer used (this one's, or `pre`'s if it did not fit), for the
    /// caller to drop off the request path if it is large.
    pub fn adopt(&mut self, pre: Premapped) -> Mapping {
        if pre.ino != self.ino || (pre.map.len() as u64) < self.mapped_file_len {
            return pre.map;
        }
        std::mem::replace(&mut self.map, pre.map)
    }

    /// The idle limit this file records (ms, 0 for none), or `None` if it
    /// records no policy.
    pub fn recorded_idle(&self) -> Option<u64> {
        self.policy.map(|p| p.max_idle_ms)
    }

    /// Bytes mapped: more than the file's length when it was mapped (room
    /// to grow), so never a bound on what may be read: that is the file's
    /// length.
    pub fn map_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Current length of the file (one `fstat`).
    pub fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, "stat", e))?
            .len())
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: `from_file` checked that the file holds a whole header,
        // and no file anyone may have mapped is ever shortened.
        unsafe { shared_word(&self.map, offset) }
    }

    /// The raw committed word (offset plus check bits).
    pub fn committed_word(&self) -> u64 {
        self.word(H_COMMITTED).load(Ordering::Acquire)
    }

    /// Publishes a new committed end. Only under the write lock.
    pub fn set_committed(&self, offset: u64) -> u64 {
        let w = format::encode_offset(offset);
        self.word(H_COMMITTED).store(w, Ordering::Release);
        w
    }

    /// The synced end, or `None` if the word is damaged.
    pub fn synced(&self) -> Option<u64> {
        format::decode_offset(self.word(H_SYNCED).load(Ordering::Acquire))
    }

    /// Raises the synced end to `offset` (never lowers it).
    pub fn set_synced(&self, offset: u64) {
        let word = self.word(H_SYNCED);
        let new = format::encode_offset(offset);
        let mut cur = word.load(Ordering::Acquire);
        loop {
            if format::decode_offset(cur).is_some_and(|c| c >= offset) {
                return;
            }
            match word.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether a compaction has replaced (or is replacing) this file.
    pub fn superseded(&self) -> bool {
        self.word(H_SUPERSEDED).load(Ordering::Acquire) != 0
    }

    pub fn set_superseded(&self, on: bool) {
        let v = if on { format::SUPERSEDED } else { 0 };
        self.word(H_SUPERSEDED).store(v, Ordering::Release);
    }

    /// The pending word (see `format::H_PENDING`).
    pub fn pending(&self) -> u64 {
        self.word(format::H_PENDING).load(Ordering::Acquire)
    }

    pub fn set_pending(&self, token: u64) {
        self.word(format::H_PENDING).store(token, Ordering::Release);
    }

    /// The bytes `[start, end)` of the mapping (clamped to it).
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no process may modify those bytes,
    /// and `end` must not pass the file's length (if something shortened
    /// the file, a touch of a page past its end raises SIGBUS). Both hold
    /// for committed records, which are never rewritten while anyone may
    /// read them (appends go past the committed end, compaction writes a
    /// new file, a torn tail is cut only where no complete record was, and
    /// files never shrink); [`View`] carries that promise for a range.
    pub unsafe fn bytes(&self, start: u64, end: u64) -> &[u8] {
        let end = end.min(self.map_len());
        let start = start.min(end);
        // SAFETY: `start <= end <= map_len`, so the range lies inside the
        // mapping, which lives as long as `self`; the caller promises that
        // nobody writes the bytes meanwhile and that they lie in the file.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(start as usize),
                (end - start) as usize,
            )
        }
    }

    /// Writes zeros over `[offset, offset + len)` (past the committed end).
    pub fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        write_zeros(&self.file, offset, len)
    }

    /// Writes `buf` at `offset` (past the committed end).
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Writes a record at `offset`, past the committed end and below
    /// `file_len` (the file's known length). Copies into the shared mapping
    /// when the blocks were reserved (so writeback cannot meet a full disk,
    /// which would fault) unless `pwrite` is preferred; otherwise `pwrite`s.
    ///
    /// Logs that are synced prefer `pwrite`: the sync then has no mapped
    /// page to write-protect (faster durable saves: DESIGN.md §4), and no
    /// copy faults on a page a sync write-protected.
    pub fn write_record(
        &self,
        buf: &[u8],
        offset: u64,
        file_len: u64,
        prefer_pwrite: bool,
    ) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if prefer_pwrite
            || !self.reserved.load(Ordering::Relaxed)
            || end > file_len.min(self.map_len())
        {
            return self.write_at(buf, offset);
        }
        // SAFETY: `offset..end` lies inside the mapping and inside the file
        // (`end <= file_len <= ` the real length: files never shrink), whose
        // blocks were reserved by fallocate. The range is past the committed
        // end, so no reader holds a slice over it, and only the holder of
        // the write lock writes there.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                buf.len(),
            );
        }
        Ok(())
    }

    /// Faults in the pages of `[start, end)` writable in this handle's
    /// map (`MADV_POPULATE_WRITE`), ahead of the writers that copy records
    /// there (`write_record`), so that their copies do not fault: the
    /// kernel allocates, zeroes and dirties each page now, on the caller's
    /// thread. Only where records are written through the map (the blocks
    /// are reserved); elsewhere nothing is done. `start` and `end` are
    /// page boundaries past the committed end, inside the file and the
    /// map.
    pub fn prefault(&self, start: u64, end: u64) -> io::Result<()> {
        if !self.reserved.load(Ordering::Relaxed) || start >= end || end > self.map_len() {
            return Ok(());
        }
        let (Ok(at), Ok(len)) = (usize::try_from(start), usize::try_from(end - start)) else {
            return Ok(());
        };
        // SAFETY: `[start, end)` lies inside the mapping (checked above),
        // which lives as long as `self`, and `start` is a page boundary (the
        // mapping starts at one). MADV_POPULATE_WRITE only faults the pages
        // in writable; it reads and writes no byte of them, so it cannot
        // race a writer copying into the range or a reader below it. Pages
        // past the file's end would fail it (EFAULT), not signal.
        let rc = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(at).cast(),
                len,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Makes sure the file is at least `end` bytes long, growing it in
    /// chunks so that blocks are reserved (a full disk shows up here,
    /// before any record byte is written) and so that most appends do not
    /// change the file size.
    ///
    /// With `zero_fill` (for `SyncPolicy::Always`) the chunk is written
    /// with zeros and synced instead of `fallocate`d: a later `fdatasync`
    /// then has no extent to convert from unwritten to written (faster
    /// durable saves: DESIGN.md §4). Chunks are smaller
    /// (at most 8 MiB) to bound the pause of writing them.
    ///
    /// With `least`, the file grows by the least whole pages that hold
    /// `end`: the retry of a chunk the disk had no room for.
    pub fn ensure_len(&self, end: u64, current: u64, zero_fill: bool, least: bool) -> Result<u64> {
        if end <= current {
            return Ok(current);
        }
        let step = growth_step(current, zero_fill);
        let target = if least {
            end.next_multiple_of(4096)
        } else {
            (end + step).next_multiple_of(1 << 16)
        };
        let reserved = if zero_fill {
            write_zeros(&self.file, current, target - current)
                .and_then(|()| self.file.sync_data())
                .map(|()| true)
        } else {
            allocate(&self.file, current, target - current)
        }
        .map_err(|e| Error::io(&self.path, "grow file", e))?;
        if reserved {
            self.reserved.store(true, Ordering::Relaxed);
        }
        Ok(target)
    }

    /// The parts of `[from, to)` that may hold data: holes and unwritten
    /// extents (space reserved by `fallocate`, never written) read as zeros
    /// and are left out, so that a look at the reserved space past the end
    /// of the log costs a few system calls, not a read of up to 64 MiB.
    /// Where the filesystem cannot tell, all of it.
    pub fn data_ranges(&self, from: u64, to: u64) -> Vec<(u64, u64)> {
        data_ranges(&self.file, from, to)
    }

    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Makes the committed bytes `[start, end)` durable, and nothing else
    /// of the file: they are written again, unchanged, with `RWF_DSYNC`,
    /// which writes back only that range and then flushes the disk's cache
    /// (`fdatasync` would also write the header page, which every append
    /// dirties: a second I/O per durable save).
    pub fn sync_range(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        // A copy: the source of a write must not be a mapping of the pages
        // it writes to. Read from the file where the range passes this
        // handle's mapping: another process grew the file and committed
        // records past it (a flush for every process covers theirs too).
        let bytes = if end <= self.map_len() {
            // SAFETY: callers sync committed bytes, which nobody rewrites,
            // and the committed end lies inside the file.
            unsafe { self.bytes(start, end) }.to_vec()
        } else {
            let mut b = vec![0u8; usize::try_from(end - start).map_err(io::Error::other)?];
            self.file.read_exact_at(&mut b, start)?;
            b
        };
        let mut done = 0usize;
        while done < bytes.len() {
            let rest = &bytes[done..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            let Ok(at) = libc::off_t::try_from(start + done as u64) else {
                return Err(io::Error::from(io::ErrorKind::FileTooLarge));
            };
            use std::os::fd::AsRawFd;
            // SAFETY: `iov` describes `rest`, which lives across the call;
            // pwritev2 only reads it. The descriptor is owned by `self.file`.
            let n = unsafe { libc::pwritev2(self.file.as_raw_fd(), &iov, 1, at, libc::RWF_DSYNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            done += n as usize;
        }
        Ok(())
    }
}

/// Decodes a static header into the crate's error types.
pub(crate) fn check_header(path: &Path, head: &[u8]) -> Result<StaticHeader> {
    format::decode_static_header(head).map_err(|e| match e {
        HeaderError::NotAStore(reason) => Error::NotAStore {
            path: path.to_owned(),
            reason: reason.to_owned(),
        },
        HeaderError::Version(found) => Error::UnsupportedVersion {
            path: path.to_owned(),
            found,
            supported: format::FORMAT_VERSION,
        },
        HeaderError::Corrupt(offset, reason) => Error::corrupt(path, offset, reason),
    })
}

/// The policy the header page `head` records (see `format::decode_policy`).
pub(crate) fn check_policy(path: &Path, head: &[u8]) -> Result<Option<Policy>> {
    format::decode_policy(head).map_err(|e| match e {
        HeaderError::Corrupt(offset, reason) => Error::corrupt(path, offset, reason),
        other => Error::corrupt(path, format::H_POLICY as u64, format!("{other:?}")),
    })
}

/// A random salt for a new file (the time, if the OS random source fails:
/// the salt guards against accidents and forgery by people who cannot read
/// the file, and any value works).
pub(crate) fn new_salt() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5A17, |d| d.subsec_nanos())
    })
}

/// Records of a log file up to a known end that nobody modifies while the
/// view lives: the only safe way to read the mapping.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub file: &'a LogFile,
    end: u64,
}

impl<'a> View<'a> {
    /// A view of `file` up to `end`.
    ///
    /// # Safety
    ///
    /// As for [`LogFile::bytes`]: no process modifies the bytes below `end`
    /// while the view lives, and `end` is within the file's length. A
    /// committed end read from the file, capped at its known length, is
    /// such an end.
    pub unsafe fn new(file: &'a LogFile, end: u64) -> View<'a> {
        View { file, end }
    }

    /// The end of the viewed range.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The bytes from `offset` to the end of the view.
    pub fn tail(&self, offset: u64) -> &'a [u8] {
        // SAFETY: the promise made to `View::new` covers `[.., end)`.
        unsafe { self.file.bytes(offset, self.end) }
    }

    /// The bytes `[start, end)`, cut at the end of the view.
    pub fn range(&self, start: u64, end: u64) -> &'a [u8] {
        // SAFETY: the promise made to `View::new` covers `[.., self.end)`.
        unsafe { self.file.bytes(start, end.min(self.end)) }
    }
}

impl crate::engine::index::Records for View<'_> {
    fn from(&self, offset: u64) -> &[u8] {
        self.tail(offset)
    }
}

/// Writes a brand-new log file at `log` atomically: header into a
/// temporary file of a random name (`<log>.init-<hex>`, created with
/// `O_EXCL`), fsync, rename, fsync the directory. Caller holds the write
/// lock.
pub(crate) fn create_log(
    log: &Site,
    header: &StaticHeader,
    policy: &Policy,
    owner: Owner,
) -> Result<()> {
    let tmp = log.sibling(&format!(".init-{}", trust::random_suffix()?));
    let file = tmp.open(Create::New, owner)?;
    let mut bytes = format::encode_header(header, HEADER_SIZE);
    format::encode_policy(policy, &mut bytes);
    let written = file
        .write_all_at(&bytes, 0)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(&tmp.path, "write", e))
        .and_then(|()| {
            tmp.rename_to(log)
                .map_err(|e| Error::io(&log.path, "rename", e))
        });
    if written.is_err() {
        let _ = tmp.remove();
    }
    written?;
    log.sync_dir()
}

/// How much a log `current` bytes long grows by at a time (see
/// [`LogFile::ensure_len`]): a sixteenth of it, between 1 MiB and 64 MiB
/// (8 MiB when the growth is written with zeros).
pub(crate) fn growth_step(current: u64, zero_fill: bool) -> u64 {
    let max_step = if zero_fill { 8 << 20 } else { 64 << 20 };
    (current / 16).clamp(1 << 20, max_step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_dir::StoreDir;
    use std::sync::Arc;

    /// The file `name` of the directory `dir`, opened as a store's.
    pub(crate) fn site(dir: &Path, name: &str) -> Site {
        let d = StoreDir::open(dir).expect("open directory");
        Site::new(Arc::new(d), name.into())
    }

    /// What a compactor has written is read through the mapping made
    /// ahead only as far as its committed word, and only once the file
    /// holds a header and covers the word.
    #[test]
    fn written_records_are_bounded_by_the_committed_word_and_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = site(dir.path(), "t.db.compact");
        let owner = Owner::of(&path.path).expect("owner");
        let f = path.open(Create::IfMissing, owner).expect("create");
        let pre = Premapped::open(&path, owner).expect("map the empty file");
        assert!(pre.written().is_none(), "no header yet");
        let mut page = vec![0u8; HEADER_SIZE as usize + 64];
        page[HEADER_SIZE as usize..].fill(0xAB);
        let word = |end: u64| format::encode_offset(end).to_le_bytes();
        page[H_COMMITTED..H_COMMITTED + 8].copy_from_slice(&word(HEADER_SIZE + 64));
        f.write_all_at(&page, 0).expect("write");
        let w = pre.written().expect("header and records");
        assert_eq!(w.end(), HEADER_SIZE + 64);
        use crate::engine::index::Records;
        assert_eq!(w.from(HEADER_SIZE + 8), &[0xAB; 56][..]);
        assert!(w.from(0).len() == 64, "the header page is never lent");
        assert!(w.from(HEADER_SIZE + 100).is_empty());
        f.write_all_at(&word(HEADER_SIZE + 72), H_COMMITTED as u64)
            .expect("a word past the file's end");
        assert!(
            pre.written().is_none(),
            "a word past the end is not followed"
        );
        f.write_all_at(&[0xFF], H_COMMITTED as u64).expect("damage");
        assert!(pre.written().is_none(), "a damaged word is not followed");
    }

    fn new_log(dir: &Path, name: &str) -> (Site, Owner) {
        let path = site(dir, name);
        let owner = Owner::of(&path.path).expect("owner");
        let header = StaticHeader {
            version: format::FORMAT_VERSION,
            generation: 1,
            created_ms: 0,
            compact_kept: 0,
            compact_dropped: 0,
            compact_source_bytes: 0,
            compact_result_bytes: 0,
            salt: 7,
        };
        create_log(&path, &header, &Policy::default(), owner).expect("create log");
        (path, owner)
    }

    /// A mapping made ahead replaces a log's own only if it maps that very
    /// file and covers it; either way the log reads its file after.
    #[test]
    fn a_mapping_made_ahead_is_adopted_only_by_its_own_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, owner) = new_log(dir.path(), "a.db");
        let (b, _) = new_log(dir.path(), "b.db");
        let mut log = LogFile::open(&a, owner).expect("open a");
        log.set_committed(HEADER_SIZE);
        let own_map = log.map.as_ptr();

        let other = Premapped::open(&b, owner).expect("map b ahead");
        assert!(other.populate(0, other.file_len()));
        drop(log.adopt(other));
        assert_eq!(log.map.as_ptr(), own_map, "b's mapping refused");

        let ahead = Premapped::open(&a, owner).expect("map a ahead");
        assert!(ahead.populate(0, ahead.file_len()));
        let ahead_map = ahead.map.as_ptr();
        drop(log.adopt(ahead));
        assert_eq!(log.map.as_ptr(), ahead_map, "a's own mapping taken");
        assert_eq!(
            format::decode_offset(log.committed_word()),
            Some(HEADER_SIZE),
            "the adopted mapping shows the file"
        );
    }

    /// A file that outgrew the mapping made ahead keeps its own; and
    /// populating past a file's end (a temporary file cut by the next
    /// compaction) fails instead of raising SIGBUS.
    #[test]
    fn a_short_mapping_is_refused_and_populating_past_the_end_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (a, owner) = new_log(dir.path(), "a.db");
        let ahead = Premapped::open(&a, owner).expect("map a ahead");
        assert!(
            !ahead.populate(0, ahead.map.len() as u64),
            "pages past the end are not populated"
        );
        let f = a.open(Create::No, owner).expect("open raw");
        f.set_len(ahead.map.len() as u64 + (1 << 20))
            .expect("grow past the mapping");
        let mut log = LogFile::open(&a, owner).expect("open a");
        let own_map = log.map.as_ptr();
        drop(log.adopt(ahead));
        assert_eq!(log.map.as_ptr(), own_map, "a mapping shorter than the file");
    }
}
