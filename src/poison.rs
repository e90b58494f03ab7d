//! Poisoning, shared by the backends that write files: after a failed
//! write or sync the on-disk state is unknown (the kernel may have dropped
//! the dirty pages, and a retried `fsync` can report success for lost
//! data), so the handle refuses every later write until it is reopened.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Whether a handle is poisoned, and by what.
#[derive(Debug, Default)]
pub(crate) struct Poison {
    set: AtomicBool,
    /// Reads are refused too: the file under the map is no longer whole
    /// (a read of a page past its end would raise SIGBUS).
    fatal: AtomicBool,
    cause: Mutex<String>,
}

impl Poison {
    /// True once a write or sync failed.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Records that `what` failed with `err`; the first cause is kept.
    pub fn set(&self, what: &str, err: &io::Error) {
        self.set_cause(format!("{what} ({err})"));
    }

    /// Records `cause`, a failed operation and its error, unless a cause
    /// was recorded before.
    pub fn set_cause(&self, cause: String) {
        let mut kept = self.cause.lock();
        if !self.is_set() {
            *kept = cause;
            self.set.store(true, Ordering::Release);
        }
    }

    /// Refuses reads as well as writes from now on.
    pub fn set_fatal(&self, cause: String) {
        self.set_cause(cause);
        self.fatal.store(true, Ordering::Release);
    }

    /// `Error::Poisoned` if reads are refused too ([`Poison::set_fatal`]).
    pub fn check_read(&self, path: &Path) -> Result<()> {
        if self.fatal.load(Ordering::Acquire) {
            return self.check(path);
        }
        Ok(())
    }

    /// `Error::Poisoned` naming `path` and the recorded cause, if set.
    pub fn check(&self, path: &Path) -> Result<()> {
        if self.is_set() {
            return Err(Error::Poisoned {
                path: path.to_owned(),
                cause: self.cause.lock().clone(),
            });
        }
        Ok(())
    }
}
