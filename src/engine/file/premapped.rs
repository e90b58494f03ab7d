//! A mapping of a compaction's temporary file, made by another process
//! ahead of the swap (see `pending.rs`), and the records read through it.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;

use crate::engine::format::{self, H_COMMITTED, HEADER_SIZE};
use crate::trust::{Create, Owner};

use super::{LogFile, Mapping, Site, shared_word};

/// A mapping of a file that a compaction is still writing, made by
/// another process ahead of the swap: a thread of its own fills in the
/// page tables of the file's first reads ([`Premapped::populate`]) and
/// replays the records the compactor has written so far
/// ([`Premapped::written`]), and the switch takes the mapping in place of
/// its own ([`LogFile::adopt`]) once it has checked that the file at the
/// path is this very one.
///
/// Reads through it stay below the file's length, and no file that anyone
/// may have mapped is ever shortened (a compaction that finds a dead
/// compactor's file at the temporary path removes it and starts a new
/// one, it never cuts it), so they cannot raise SIGBUS; populating never
/// could (`MADV_POPULATE_READ` reports a page past the end as an error).
pub(crate) struct Premapped {
    pub(super) map: Mapping,
    pub(super) ino: (u64, u64),
    /// The file, to learn how far it has grown.
    file: File,
}

impl std::fmt::Debug for Premapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Premapped")
            .field("ino", &self.ino)
            .field("map_len", &self.map.len())
            .finish_non_exhaustive()
    }
}

impl Premapped {
    /// Maps the file at `site` (a compaction's temporary file) with the
    /// same room to grow as a log's mapping, or `None` if it cannot be
    /// opened as one of `owner`'s files.
    pub fn open(site: &Site, owner: Owner) -> Option<Premapped> {
        let file = site.open(Create::No, owner).ok()?;
        let meta = file.metadata().ok()?;
        let map = LogFile::map(&site.path, &file, meta.len()).ok()?;
        Some(Premapped {
            map,
            ino: (meta.dev(), meta.ino()),
            file,
        })
    }

    /// The file's length now, capped at the mapping's (0 if unknown).
    pub fn file_len(&self) -> u64 {
        self.file
            .metadata()
            .map_or(0, |m| m.len())
            .min(self.map.len() as u64)
    }

    /// Device and inode of the file mapped.
    pub fn ino(&self) -> (u64, u64) {
        self.ino
    }

    /// Whether `site` still holds the file mapped.
    pub fn is_at(&self, site: &Site) -> bool {
        site.holds(self.ino)
    }

    /// The records the compactor has written so far: its temporary file's
    /// committed word, which it raises after each write of records (and
    /// the swap leaves at the file's end), if the file holds a header yet
    /// and the word is intact. Any file at the temporary path is written
    /// only that way, so the records below the word are complete and
    /// never written again; whose records they are (this compaction's or
    /// another's) is for their salt and the switch's checks to tell.
    pub fn written(&self) -> Option<Written<'_>> {
        if self.file_len() < HEADER_SIZE {
            return None;
        }
        // SAFETY: the file holds a header (just checked), and no file
        // anyone may have mapped is ever shortened.
        let word = unsafe { shared_word(&self.map, H_COMMITTED) }.load(Ordering::Acquire);
        let end = format::decode_offset(word)?;
        // The length again, after the word: it covers every byte the word
        // does (the compactor wrote them before raising it).
        (end >= HEADER_SIZE && end <= self.file_len()).then_some(Written {
            map: &self.map,
            end,
        })
    }

    /// Fills in the page tables of `[from, to)` from the page cache.
    /// Returns false if the kernel would not (a page past the file's end,
    /// no `MADV_POPULATE_READ` before Linux 5.14): the mapping stays good,
    /// its pages then fault on first touch as any mapping's do.
    pub fn populate(&self, from: u64, to: u64) -> bool {
        let to = to.min(self.map.len() as u64);
        if from >= to {
            return true;
        }
        let (Ok(off), Ok(len)) = (usize::try_from(from), usize::try_from(to - from)) else {
            return false;
        };
        self.map
            .advise_range(memmap2::Advice::PopulateRead, off, len)
            .is_ok()
    }
}

/// The records of a compaction's temporary file below its committed word,
/// read through a [`Premapped`] mapping: see [`Premapped::written`].
#[derive(Clone, Copy)]
pub(crate) struct Written<'a> {
    map: &'a Mapping,
    end: u64,
}

impl Written<'_> {
    /// The end of what the compactor has written.
    pub fn end(&self) -> u64 {
        self.end
    }
}

impl crate::engine::index::Records for Written<'_> {
    fn from(&self, offset: u64) -> &[u8] {
        let start = offset.clamp(HEADER_SIZE, self.end);
        // SAFETY: `[HEADER_SIZE, end)` lies inside the mapping (`end` is at
        // most the file's length, which the mapping covered when made or
        // `file_len` capped it at) and inside the file, which is never
        // shortened; its bytes are complete records that nobody writes
        // again (`Premapped::written`). The header page below is left out:
        // the compactor writes it again at the swap.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(start as usize),
                (self.end - start) as usize,
            )
        }
    }
}
