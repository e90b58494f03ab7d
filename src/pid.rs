//! The calling process's id without a system call on every ask.
//!
//! A `LogStore` checks on every call that it runs in the process that
//! opened it (a child after `fork()` must not use it). `getpid` is a system
//! call (glibc stopped caching it in 2.25), a tenth of a save or a load
//! (DESIGN.md §5). So the answer is kept in a word of a
//! private page marked `MADV_WIPEONFORK` (Linux 4.14): the kernel hands
//! every child made by `fork`, `_Fork` or `clone` without `CLONE_VM` a
//! zeroed copy of that page, however the child was made and before any of
//! its code runs. A non-zero word was therefore written in this very
//! process, and by the rule below it holds this process's id; a zero word
//! (the first ask, or the first in a child) is answered by `getpid` and
//! written. Where the page cannot be made (`madvise` refused, as by an
//! older kernel or a sandbox), every ask calls `getpid`.
//!
//! Not seen: a process made by `clone(CLONE_VM)` without `CLONE_THREAD`
//! shares this memory with its parent and is taken for it (as by glibc's
//! own `getpid` cache before 2.25); `vfork`'s child, which shares it too,
//! may only `exec` or `_exit`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The word, in its page; `None` where the page could not be made.
static WORD: OnceLock<Option<&'static AtomicU32>> = OnceLock::new();

/// Maps the page and marks it wiped on fork, or `None`.
fn wipe_on_fork_word() -> Option<&'static AtomicU32> {
    // One page wherever pages are 4 KiB; the kernel rounds a larger page
    // size up, for `mmap`, `madvise` and `munmap` alike.
    let len = 4096;
    // SAFETY: a new private anonymous mapping at an address the kernel
    // picks: it aliases nothing, and it is never unmapped, so a `'static`
    // reference into it stays valid.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    // SAFETY: `ptr` and `len` are the mapping just made, which nothing else
    // uses yet; the advice changes only what a child's copy holds.
    if unsafe { libc::madvise(ptr, len, libc::MADV_WIPEONFORK) } != 0 {
        // SAFETY: the same mapping, not referenced anywhere.
        unsafe { libc::munmap(ptr, len) };
        return None;
    }
    // SAFETY: the page is zeroed, page-aligned (so aligned for u32), lives
    // as long as the process and is only ever accessed through this atomic.
    Some(unsafe { &*ptr.cast::<AtomicU32>() })
}

/// This process's id: `std::process::id()`, read from memory after the
/// first ask in each process.
pub(crate) fn current() -> u32 {
    let word = *WORD.get_or_init(wipe_on_fork_word);
    let Some(word) = word else {
        return std::process::id();
    };
    let kept = word.load(Ordering::Relaxed);
    if kept != 0 {
        return kept;
    }
    let pid = std::process::id();
    // Written only if still zero, and taken back if the process changed
    // between the two `getpid` calls (a fork from a signal handler that
    // then returned into this function in the child): the word never keeps
    // another process's id. A fork after the write wipes the child's copy.
    if word
        .compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
        && std::process::id() != pid
    {
        let _ = word.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
    pid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_id_is_this_process_s() {
        assert_eq!(current(), std::process::id());
        // Now from the page.
        assert_eq!(current(), std::process::id());
    }

    #[test]
    fn a_forked_child_gets_its_own_id_not_the_kept_one() {
        let parent = current();
        assert_eq!(parent, std::process::id());
        // SAFETY: the child only calls `current` (an atomic load, `getpid`
        // and compare-exchanges on memory mapped before the fork; the
        // `OnceLock` is already initialised, so it takes no lock) and
        // leaves with `_exit`, returning into nothing of the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mine = current();
            let ok = mine == std::process::id() && mine != parent && current() == mine;
            // SAFETY: ends the forked process at once, running no
            // destructor or atexit handler of the copied harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid
        // out-pointer for the call.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child was given the parent's id ({parent}) or a wrong one: status {status:#x}"
        );
        assert_eq!(current(), std::process::id(), "the parent's id changed");
    }
}
