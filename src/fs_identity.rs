//! Root working on another user's files as that user: the calling
//! thread's filesystem user and group ids (`setfsuid`, `setfsgid`) and its
//! supplementary groups are switched to the user's for one call, then
//! back. On Linux these are per-thread credentials (the C library's
//! `setfsuid` is a plain system call, and rustix's `set_thread_groups` too),
//! so other threads of the process are unaffected, and every thread that
//! works on the store (a background compaction, a read-ahead) switches for
//! itself. With a filesystem uid other than 0 the kernel also drops the
//! filesystem capabilities (`CAP_DAC_OVERRIDE`, `CAP_CHOWN`, `CAP_FOWNER`,
//! ...) from the thread until it switches back: the call can do exactly
//! what the user could. A thread started while its creator is switched
//! inherits the switched identity, so a switch spans single system calls
//! (`StoreDir`'s) and never a spawn. See DESIGN.md §14.

use std::io;

use rustix::process::Gid;

use crate::trust::Owner;

/// The thread's former filesystem identity, restored on drop.
pub(crate) struct AsUser {
    uid: u32,
    gid: u32,
    /// The supplementary groups to restore, if they were changed.
    groups: Option<Vec<Gid>>,
}

fn set_fsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes an integer and changes only this thread's
    // filesystem uid; it has no memory effects. rustix has no wrapper.
    unsafe { libc::setfsuid(uid) as u32 }
}

fn set_fsgid(gid: u32) -> u32 {
    // SAFETY: as for `set_fsuid`.
    unsafe { libc::setfsgid(gid) as u32 }
}

/// The current filesystem uid (an invalid id changes nothing and returns it).
fn fsuid() -> u32 {
    set_fsuid(u32::MAX)
}

fn fsgid() -> u32 {
    set_fsgid(u32::MAX)
}

impl AsUser {
    /// Switches this thread to `owner`'s filesystem identity, with no
    /// supplementary groups but the owner's group.
    pub fn enter(owner: Owner) -> io::Result<AsUser> {
        // Where setting groups is not allowed (a user namespace with
        // setgroups denied), the thread keeps root's groups: the uid and
        // gid still switch.
        let groups = rustix::process::getgroups()
            .ok()
            .filter(|_| rustix::thread::set_thread_groups(&[Gid::from_raw(owner.gid)]).is_ok());
        let gid = set_fsgid(owner.gid);
        let uid = set_fsuid(owner.uid);
        let was = AsUser { uid, gid, groups };
        if fsuid() != owner.uid || fsgid() != owner.gid {
            // Dropping `was` switches back.
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "cannot work as the store's owner (uid {}, gid {})",
                    owner.uid, owner.gid
                ),
            ));
        }
        Ok(was)
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // The uid first: with it back, the thread has its capabilities
        // again, which the other two need.
        set_fsuid(self.uid);
        set_fsgid(self.gid);
        if let Some(groups) = &self.groups {
            let _ = rustix::thread::set_thread_groups(groups);
        }
        // A thread that cannot get its identity back must not go on as
        // root in another user's shoes, nor as that user in root's.
        assert!(
            fsuid() == self.uid && fsgid() == self.gid,
            "could not restore the thread's filesystem identity"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Inside `AsUser` a file this thread creates is the user's, another
    /// running thread meanwhile stays root, and after it this thread is
    /// root again.
    #[test]
    fn the_identity_is_the_users_for_the_call_and_this_threads_only() {
        if crate::trust::euid() != 0 {
            // A skip libtest would show as a pass: said on stderr, past
            // its capture of `eprintln!` (as tests/common/root.rs does).
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED (not root) sessionlog: fs_identity::tests::\
                 the_identity_is_the_users_for_the_call_and_this_threads_only: \
                 acts as uid 65534; run as root to run it"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let nobody = Owner {
            uid: 65534,
            gid: 65534,
        };
        let owner_of = |name: &str| {
            std::fs::File::create(dir.path().join(name)).expect("create");
            std::fs::metadata(dir.path().join(name))
                .expect("stat")
                .uid()
        };
        let secret = tempfile::tempdir().expect("a root-only directory, 0700");
        // A thread started before the switch (one started during it would
        // inherit the switched credentials: `AsUser` spans one system call
        // and never a spawn). It creates its file while this one is nobody.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let other = s.spawn(move || {
                wait.recv().expect("go");
                owner_of("other-thread")
            });
            let _as = AsUser::enter(nobody).expect("enter");
            assert_eq!(owner_of("as-nobody"), 65534);
            go.send(()).expect("send");
            assert_eq!(
                other.join().expect("join"),
                0,
                "another thread keeps its identity"
            );
            assert!(
                std::fs::File::create(secret.path().join("x")).is_err(),
                "as nobody, no capability overrides a directory's mode"
            );
        });
        assert_eq!(owner_of("as-root-again"), 0);
    }
}
