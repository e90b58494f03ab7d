//! Pacing long runs of CPU work so that threads serving requests get a CPU
//! within a fraction of a millisecond.
//!
//! A compaction's copy, a hint being encoded or read and checked are runs
//! of tens of milliseconds on one CPU. The scheduler does not take the CPU
//! from such a run when a thread sleeping on a request wakes up: a Linux
//! kernel built without preemption (`PREEMPT_NONE`, the default of many
//! distributions' server kernels) only switches when the running thread
//! enters the kernel's scheduler, and EEVDF protects the running thread's
//! slice (`RUN_TO_PARITY`), so the woken thread waits for that slice and
//! the next tick: 3 to 6 ms on this machine (`HZ=250`), whatever the run's
//! nice value (the nice-19 retire thread delayed saves by 2.8 ms). DESIGN.md
//! §8 has the trace. A run that calls [`Pace::at`] with its loop index (or
//! [`Pace::chunk`] after each piece of work) gives the CPU up
//! (`sched_yield`) once it has run [`Pace::EVERY`]: a woken thread waiting
//! on the same CPU runs then, and with no thread waiting the yield returns
//! at once (about a microsecond, 0.4 % of the run).
//!
//! Only runs that hold no lock a request needs may pace: a thread that
//! yields holding the store's write lock makes every save wait longer.

use std::time::{Duration, Instant};

/// How many steps go between two looks at the clock: a step is a record
/// or a slot, well under a microsecond each.
const STEPS_PER_LOOK: usize = 1024;

/// A run of work that yields the CPU every [`Pace::EVERY`].
#[derive(Debug)]
pub(crate) struct Pace {
    since: Instant,
    /// How many times the run yielded.
    yields: u64,
}

impl Pace {
    /// How long a run keeps the CPU before it lets a waiting thread have
    /// it.
    pub const EVERY: Duration = Duration::from_micros(250);

    /// A run starting now.
    pub fn new() -> Pace {
        Pace {
            since: Instant::now(),
            yields: 0,
        }
    }

    /// The run is at its `i`-th small unit of work (a record, a slot):
    /// every so many, yields if the run has had the CPU for
    /// [`Pace::EVERY`] since it last did. The count is the caller's loop
    /// index, so that the loop keeps its own state in registers (a counter
    /// kept here cost a slot loop of a hint 4 ms in 50).
    #[inline]
    pub fn at(&mut self, i: usize) {
        if i.is_multiple_of(STEPS_PER_LOOK) {
            self.look();
        }
    }

    /// A large unit of work done (a piece of a file read or written):
    /// yields if the run has had the CPU for [`Pace::EVERY`].
    pub fn chunk(&mut self) {
        self.look();
    }

    #[cold]
    #[inline(never)]
    fn look(&mut self) {
        if self.since.elapsed() >= Self::EVERY {
            std::thread::yield_now();
            self.yields += 1;
            self.since = Instant::now();
        }
    }
}

/// Pieces in which [`let_go`] gives pages back.
const LET_GO_PIECE: usize = 4 << 20;

/// Gives back the pages of `[start, start + len)` (`MADV_DONTNEED`) in 4 MiB
/// pieces, pacing between them: the work an unmap or a free of a large
/// block would do in one system call, milliseconds of a CPU, is done ahead
/// in runs a waiting thread can come between. A failure leaves the pages
/// to the unmap or free that follows.
///
/// # Safety
///
/// `[start, start + len)` must be whole pages of one mapping that the
/// caller owns and is about to unmap or free, that nothing else borrows,
/// and that nothing reads again except as what `MADV_DONTNEED` leaves:
/// zeros in private memory, the file's bytes in a shared file mapping.
pub(crate) unsafe fn let_go(start: *mut u8, len: usize) {
    let mut pace = Pace::new();
    let mut at = 0;
    while at < len {
        let n = LET_GO_PIECE.min(len - at);
        // SAFETY: `[at, at + n)` lies within the range the caller vouches
        // for (whole pages, owned, read again only as `MADV_DONTNEED`
        // leaves them); `madvise` reads and writes no byte of it.
        unsafe {
            libc::madvise(start.add(at).cast(), n, libc::MADV_DONTNEED);
        }
        at += n;
        pace.chunk();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each yield comes at least `EVERY` after the run started or last
    /// yielded, and a run that goes on yields again and again.
    #[test]
    fn a_run_yields_after_every_and_not_before() {
        let mut pace = Pace::new();
        let mut last = pace.since;
        let give_up = Instant::now() + Duration::from_secs(60);
        let mut i = 0;
        while pace.yields < 3 {
            let before = pace.yields;
            pace.at(i);
            i += 1;
            if pace.yields != before {
                assert!(pace.since - last >= Pace::EVERY, "yielded too soon");
                last = pace.since;
            }
            assert!(Instant::now() < give_up, "the run never yielded");
        }
        // A chunk looks at the clock at once, without the steps between.
        std::thread::sleep(Pace::EVERY);
        pace.chunk();
        assert_eq!(pace.yields, 4);
    }
}
