//! Guards `erase_sessions_of` on a `LogStore`: when it returns, no byte of
//! the erased sessions' ids, data or owner is in any file of the store's
//! directory (the log, the hint, temporary files), plain and through
//! `HashedIds`; and a process SIGKILLed at each I/O step of an erasure
//! leaves the sessions either all there or all erased, with the others
//! untouched. A `DirStore`'s erasure removes the files (and any temporary
//! file a dead writer left) and leaves no byte behind either.

#[macro_use]
mod common;
use common::id;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::child;
use sessionlog::internals::hook::{IoEvent, IoHook};
use sessionlog::{HashedIds, LogStore, Owner, Session, SessionId, SessionStore};

const OWNER: &str = "ERASE-OWNER-q7Zx";
const KEEP_OWNER: &str = "KEEP-OWNER-p4Wy";

fn owner(s: &str) -> Owner {
    Owner::new(s).expect("valid owner")
}

fn erased_name(i: usize) -> String {
    format!("ERASEDID{i}xQ9v")
}

fn erased_data(i: usize, v: u64) -> Vec<u8> {
    format!("ERASED-DATA-{i}-v{v}-k8Jm").into_bytes()
}

/// Whether `needle` occurs in any file of `dir`.
fn found_in(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let e = e.expect("entry");
        if !e.file_type().expect("type").is_file() {
            continue;
        }
        let bytes = std::fs::read(e.path()).expect("read file");
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    hits
}

/// The byte strings of the erased sessions, as `store_id` and
/// `store_owner` keep them.
fn needles(store_id: impl Fn(&SessionId) -> SessionId, store_owner: &Owner) -> Vec<Vec<u8>> {
    let mut n = vec![store_owner.as_str().as_bytes().to_vec()];
    for i in 0..4 {
        n.push(store_id(&id(&erased_name(i))).as_str().as_bytes().to_vec());
        for v in 1..=3 {
            n.push(erased_data(i, v));
        }
    }
    n
}

/// Fills `store` with the owner's sessions (three versions each, touched,
/// one moved away and back) and another owner's.
fn fill<S: SessionStore>(store: &S) {
    let (gone, kept) = (owner(OWNER), owner(KEEP_OWNER));
    for i in 0..4 {
        let mut s = Session::new(id(&erased_name(i)), Vec::new());
        for v in 1..=3 {
            s.data = erased_data(i, v);
            s.owner = Some(if v == 2 && i == 0 {
                kept.clone()
            } else {
                gone.clone()
            });
            store.save_session(&mut s).expect("save");
        }
        assert!(store.touch_session(&s.id).expect("touch"));
    }
    for i in 0..4 {
        let mut s = Session::new(
            id(&format!("kept{i}")),
            format!("kept-data-{i}").into_bytes(),
        )
        .with_owner(kept.clone());
        store.save_session(&mut s).expect("save");
    }
}

fn check_others_kept<S: SessionStore>(store: &S) {
    for i in 0..4 {
        let s = store
            .load_session(&id(&format!("kept{i}")))
            .expect("load")
            .expect("another owner's session is kept");
        assert_eq!(s.data, format!("kept-data-{i}").into_bytes());
    }
}

fn erase_and_search<S: SessionStore>(
    dir: &Path,
    store: S,
    store_id: impl Fn(&SessionId) -> SessionId,
    store_owner: &Owner,
) {
    let needles = needles(store_id, store_owner);
    for n in &needles {
        // A DirStore replaces a file on each save: only the last version
        // of the data is in it.
        let replaced = n.starts_with(b"ERASED-DATA") && !n.ends_with(b"v3-k8Jm");
        assert!(
            replaced || !found_in(dir, n).is_empty(),
            "before the erasure, {:?} is in a file",
            String::from_utf8_lossy(n)
        );
    }
    assert_eq!(store.erase_sessions_of(&owner(OWNER)).expect("erase"), 4);
    for n in &needles {
        let hits = found_in(dir, n);
        assert!(
            hits.is_empty(),
            "{:?} remains in {hits:?}",
            String::from_utf8_lossy(n)
        );
    }
    check_others_kept(&store);
    assert!(store.sessions_of(&owner(OWNER)).expect("list").is_empty());
    drop(store);
    for n in &needles {
        assert!(found_in(dir, n).is_empty(), "after close");
    }
}

#[test]
fn an_erasure_leaves_no_byte_of_the_owners_sessions_in_any_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::options()
        .background(false)
        .open(dir.path().join("s.db"))
        .expect("open");
    fill(&store);
    assert!(
        !found_in(dir.path(), &erased_data(0, 1)).is_empty(),
        "old versions in the log"
    );
    erase_and_search(dir.path(), store, |i| i.clone(), &owner(OWNER));
}

#[test]
fn an_erasure_through_hashed_ids_leaves_no_digest_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = HashedIds::new(
        LogStore::options()
            .background(false)
            .open(dir.path().join("s.db"))
            .expect("open"),
    );
    fill(&store);
    let stored_owner = HashedIds::<()>::stored_owner(&owner(OWNER));
    erase_and_search(dir.path(), store, HashedIds::<()>::stored_id, &stored_owner);
}

#[test]
fn an_erasure_in_a_dirstore_leaves_no_byte_of_the_owners_sessions_in_any_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions");
    let store = sessionlog::DirStore::options()
        .sync(sessionlog::SyncPolicy::Always)
        .open(&path)
        .expect("open");
    // A dead writer's temporary file holding one of the owner's sessions.
    fill(&store);
    let leftover = path.join(".tmp-0123456789abcdef");
    std::fs::write(&leftover, erased_data(1, 3)).expect("plant");
    std::fs::set_permissions(
        &leftover,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    erase_and_search(&path, store, |i| i.clone(), &owner(OWNER));
    assert!(!leftover.exists(), "temporary files are removed");
}

/// Kills this process with SIGKILL at the `at`-th I/O event once armed.
#[derive(Debug)]
struct KillAtEvent {
    at: usize,
    seen: AtomicUsize,
    armed: AtomicBool,
}

impl IoHook for KillAtEvent {
    fn before(&self, _e: &IoEvent<'_>) -> std::io::Result<()> {
        if self.armed.load(Ordering::SeqCst) && self.seen.fetch_add(1, Ordering::SeqCst) == self.at
        {
            // SAFETY: kill(2) only reads its integer arguments.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort();
        }
        Ok(())
    }
}

/// The child: opens the store, arms the hook and erases.
fn eraser_child() {
    let path = std::env::var("STORE").expect("STORE");
    let at: usize = std::env::var("KILL_AT")
        .expect("KILL_AT")
        .parse()
        .expect("n");
    let hook = Arc::new(KillAtEvent {
        at,
        seen: AtomicUsize::new(0),
        armed: AtomicBool::new(false),
    });
    let store = LogStore::options()
        .background(false)
        .io_hook(hook.clone())
        .open(path)
        .expect("open");
    hook.armed.store(true, Ordering::SeqCst);
    let n = store.erase_sessions_of(&owner(OWNER)).expect("erase");
    println!("ERASED {n}");
}

#[test]
fn a_kill_9_at_each_step_of_an_erasure_leaves_all_or_none() {
    if child::role().as_deref() == Some("eraser") {
        return eraser_child();
    }
    let test = "a_kill_9_at_each_step_of_an_erasure_leaves_all_or_none";
    let needles = needles(|i| i.clone(), &owner(OWNER));
    let (mut all, mut none) = (0, 0);
    let mut finished = false;
    for at in 0..64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.db");
        {
            let store = LogStore::options()
                .background(false)
                .open(&path)
                .expect("open");
            fill(&store);
        }
        let mut c = child::spawn(
            test,
            "eraser",
            &[
                ("STORE", path.display().to_string()),
                ("KILL_AT", at.to_string()),
            ],
        );
        let status = c.wait().expect("wait");
        let store = LogStore::options()
            .background(false)
            .open(&path)
            .expect("the store opens after the kill");
        check_others_kept(&store);
        let left: Vec<bool> = (0..4)
            .map(|i| {
                store
                    .load_session(&id(&erased_name(i)))
                    .expect("load")
                    .is_some()
            })
            .collect();
        if left.iter().all(|&l| l) {
            all += 1;
            for i in 0..4 {
                let s = store.load_session(&id(&erased_name(i))).expect("load");
                assert_eq!(s.expect("there").data, erased_data(i, 3), "intact");
            }
        } else {
            assert!(
                left.iter().all(|&l| !l),
                "kill at {at}: some erased: {left:?}"
            );
            none += 1;
            for n in &needles {
                let hits = found_in(dir.path(), n);
                assert!(
                    hits.is_empty(),
                    "kill at {at}: {:?} remains in {hits:?}",
                    String::from_utf8_lossy(n)
                );
            }
        }
        if status.success() {
            // The erasure ran to its end before the `at`-th event.
            finished = true;
            assert!(left.iter().all(|&l| !l), "a finished erasure erased");
            break;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "kill at {at}");
    }
    assert!(finished, "every step was tried");
    assert!(
        all > 0 && none > 0,
        "kills before and after the swap: {all} {none}"
    );
    eprintln!("{all} kills left every session, {none} erased them all");
}
