//! A shared mapping of a log file that lets its pages go in pieces before
//! it is unmapped.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ops::Deref;

use memmap2::MmapRaw;

use crate::pace::Pace;

/// Pieces in which a dropped mapping's pages are let go.
const RELEASE_PIECE: usize = 4 << 20;

/// A log file's mapping (`LogFile`'s, or one made ahead of a swap).
///
/// Unmapping a mapping of a large file is one system call that walks and
/// frees its page tables: milliseconds of a CPU at a million sessions, most
/// of a second at ten million, during which a request thread woken on that
/// CPU waits (`crate::pace` says why). Dropping one lets its pages go first
/// in pieces, pacing, so that the unmap that follows has little left to
/// do. The thread that drops a large one is usually the retire thread
/// (`state::retire`); see [`idle_after_unmap`] for what it does next.
#[derive(Debug)]
pub(crate) struct Mapping(ManuallyDrop<MmapRaw>);

impl Mapping {
    pub fn new(map: MmapRaw) -> Mapping {
        Mapping(ManuallyDrop::new(map))
    }
}

impl Deref for Mapping {
    type Target = MmapRaw;

    fn deref(&self) -> &MmapRaw {
        &self.0
    }
}

thread_local! {
    /// Set on a thread that only drops what it is given (the retire thread).
    static IDLE_AFTER_UNMAP: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as one whose only work left is dropping what it holds:
/// after its next unmap, it runs at `SCHED_IDLE`, for good.
///
/// A compaction's old file is deleted (renamed over) while every process
/// still has it open and mapped; the last to let go of it frees its page
/// cache in the kernel, 24 ms of a CPU at a million sessions of 256 B
/// here, in slices of a scheduler tick (about 4 ms) during which a woken
/// request thread waits, whatever the nice value. A `SCHED_IDLE` thread is
/// set aside by any thread that wakes up. The unmap itself (which takes
/// the process's `mmap_lock`) is done before: a thread set aside holding
/// that lock would keep other threads' `mmap` waiting. `LogFile` and
/// `Premapped` declare their mapping before their file, so the file's last
/// close comes after the unmap, at the idle priority.
pub(crate) fn idle_after_unmap() {
    IDLE_AFTER_UNMAP.with(|c| c.set(true));
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let len = self.0.len();
        let mut pace = Pace::new();
        let mut at = 0;
        while at < len {
            let n = RELEASE_PIECE.min(len - at);
            // SAFETY: `[at, at + n)` lies inside the mapping, which stays
            // mapped until it is dropped below, and no reference into it is
            // left (`View`s borrow the `LogFile` that owns this).
            // MADV_DONTNEED on a shared file mapping only removes this
            // mapping's page-table entries: the pages stay in the page
            // cache (a page dirtied through the mapping is marked dirty
            // there first), so no byte of the file changes, and nothing
            // reads through the mapping again. A failure leaves the work to
            // the unmap.
            unsafe {
                libc::madvise(self.0.as_mut_ptr().add(at).cast(), n, libc::MADV_DONTNEED);
            }
            at += n;
            pace.chunk();
        }
        // SAFETY: dropped once, here; `self.0` is not used after.
        unsafe { ManuallyDrop::drop(&mut self.0) };
        if IDLE_AFTER_UNMAP.with(Cell::get) {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid `sched_param` that outlives the
            // call; pid 0 is the calling thread. Lowering a thread's own
            // policy needs no privilege; a failure leaves it as it was.
            unsafe {
                libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
            }
        }
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
        let len = 3 * RELEASE_PIECE + 12_345;
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

    /// A thread marked with `idle_after_unmap` runs at `SCHED_IDLE` once
    /// it has unmapped, and only then; an unmarked one is left as it was.
    #[test]
    fn only_a_marked_thread_turns_idle_and_only_after_the_unmap() {
        let policy = || {
            // SAFETY: pid 0 is the calling thread.
            unsafe { libc::sched_getscheduler(0) }
        };
        let run = |mark: bool| {
            std::thread::spawn(move || {
                let (_f, map) = mapped(RELEASE_PIECE);
                if mark {
                    idle_after_unmap();
                }
                let before = policy();
                drop(map);
                (before, policy())
            })
            .join()
            .expect("thread")
        };
        assert_eq!(run(true), (libc::SCHED_OTHER, libc::SCHED_IDLE));
        assert_eq!(run(false), (libc::SCHED_OTHER, libc::SCHED_OTHER));
    }
}
