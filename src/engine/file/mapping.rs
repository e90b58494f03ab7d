//! A shared mapping of a log file that lets its pages go in pieces before
//! it is unmapped.

use std::ops::Deref;

use memmap2::MmapRaw;

use crate::pace::let_go;

/// A log file's mapping (`LogFile`'s, or one made ahead of a swap).
///
/// Unmapping a mapping of a large file is one system call that walks and
/// frees its page tables: milliseconds of a CPU at a million sessions, most
/// of a second at ten million, during which a request thread woken on that
/// CPU waits (`crate::pace` says why). Dropping one lets its pages go first
/// in pieces, pacing, so that the unmap that follows has little left to
/// do. The thread that drops a large one is usually the retire thread
/// (`state::retire`).
#[derive(Debug)]
pub(crate) struct Mapping(MmapRaw);

impl Mapping {
    pub fn new(map: MmapRaw) -> Mapping {
        Mapping(map)
    }
}

impl Deref for Mapping {
    type Target = MmapRaw;

    fn deref(&self) -> &MmapRaw {
        &self.0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole mapping, page-aligned and a whole number of
        // pages long, which stays mapped until memmap2 unmaps it after
        // this; no reference into it is left (`View`s borrow the `LogFile`
        // that owns this). On a shared file mapping MADV_DONTNEED only
        // removes this mapping's page-table entries: the pages stay in the
        // page cache (a page dirtied through the mapping is marked dirty
        // there first), so no byte of the file changes, and nothing reads
        // through the mapping again.
        unsafe { let_go(self.0.as_mut_ptr(), self.0.len()) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use memmap2::MmapOptions;

    use super::*;

    fn mapped(len: usize) -> (tempfile::NamedTempFile, Mapping) {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        f.as_file().set_len(len as u64).expect("set_len");
        let map = MmapOptions::new()
            .len(len)
            .map_raw(f.as_file())
            .expect("mmap");
        (f, Mapping::new(map))
    }

    /// Letting the pages go before the unmap loses nothing written through
    /// the mapping: every byte is in the file afterwards.
    #[test]
    fn bytes_written_through_a_dropped_mapping_are_in_the_file() {
        let len = (12 << 20) + 12_345;
        let (f, map) = mapped(len);
        for i in (0..len).step_by(1000) {
            // SAFETY: `i` is inside the mapping, which nothing else uses.
            unsafe { *map.as_mut_ptr().add(i) = (i % 251) as u8 + 1 };
        }
        drop(map);
        let mut back = Vec::new();
        f.reopen()
            .expect("reopen")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back.len(), len);
        for i in (0..len).step_by(1000) {
            assert_eq!(back[i], (i % 251) as u8 + 1, "byte {i}");
        }
    }
}
