//! Guards the `sessionlog` command on encrypted stores (issue 29):
//! `keygen` lines load as keys; `show`, `export` and `import` decrypt and
//! encrypt with `--key-file`; a key file others can read is refused;
//! `rekey` (a second process) re-encrypts every session under the current
//! key while this process keeps writing, loses no write, and leaves
//! neither plaintext nor a record under the retired key in the file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sessionlog::{Encrypted, Keyring, LogStore, Session, SessionId, SessionStore, SyncPolicy};

const MARKER: &str = "MARKER-cli-4be0";

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
    }
    child.wait_with_output().expect("the binary finishes")
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A key file of one new key made by `keygen`, mode 0600.
fn keygen(dir: &Path, key_id: &str) -> PathBuf {
    let line = ok(&run(&["keygen", key_id], None));
    assert!(line.starts_with(&format!("{key_id}:")), "{line}");
    let path = dir.join(format!("{key_id}.keys"));
    std::fs::write(&path, &line).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn open(path: &Path) -> LogStore {
    LogStore::options()
        .sync(SyncPolicy::Always)
        .background(false)
        .open(path)
        .expect("open")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn show_export_and_import_use_the_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = keygen(dir.path(), "k1");
    let path = dir.path().join("s.db");
    let id = SessionId::new("alice-session-0001").expect("id");
    {
        let store = Encrypted::new(open(&path), Keyring::from_file(&keys).expect("keys"));
        store
            .save_session(&mut Session::new(id.clone(), format!("user={MARKER}")))
            .expect("save");
    }
    assert!(!contains(
        &std::fs::read(&path).expect("read"),
        MARKER.as_bytes()
    ));

    let shown = ok(&run(
        &["show", s(&path), id.as_str(), "--key-file", s(&keys)],
        None,
    ));
    assert!(shown.contains(MARKER), "{shown}");
    let without = ok(&run(&["show", s(&path), id.as_str()], None));
    assert!(!without.contains(MARKER), "no key, no data: {without}");

    let exported = ok(&run(&["export", s(&path), "--key-file", s(&keys)], None));
    let other = dir.path().join("t.db");
    ok(&run(
        &["import", s(&other), "--key-file", s(&keys)],
        Some(exported.as_bytes()),
    ));
    assert!(!contains(
        &std::fs::read(&other).expect("read"),
        MARKER.as_bytes()
    ));
    let imported = Encrypted::new(open(&other), Keyring::from_file(&keys).expect("keys"));
    assert_eq!(
        imported
            .load_session(&id)
            .expect("load")
            .expect("present")
            .data,
        format!("user={MARKER}").into_bytes()
    );

    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let refused = run(
        &["show", s(&path), id.as_str(), "--key-file", s(&keys)],
        None,
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn rekey_while_this_process_writes_loses_nothing() {
    const SESSIONS: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let old_keys = keygen(dir.path(), "old");
    let new_keys = keygen(dir.path(), "new");
    let old = Keyring::from_file(&old_keys).expect("old");
    let new = Keyring::from_file(&new_keys).expect("new");
    let path = dir.path().join("s.db");
    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    {
        let raw = open(&path);
        // One session from before the store was encrypted.
        raw.save_session(&mut Session::new(ids[0].clone(), format!("0;{MARKER}")))
            .expect("plain save");
        let enc = Encrypted::new(raw, old.clone());
        for id in &ids[1..] {
            enc.save_session(&mut Session::new(id.clone(), format!("0;{MARKER}")))
                .expect("save");
        }
    }
    // The server: given the new keyring (the old key retired), it keeps
    // incrementing counters until the rekey process has exited.
    let server = Arc::new(
        Encrypted::new(
            open(&path),
            new.clone().with_retired_keys(&old).expect("ring"),
        )
        .accept_plaintext(true),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop, ids) = (server.clone(), stop.clone(), ids.clone());
        std::thread::spawn(move || {
            let mut done = vec![0u64; ids.len()];
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                i = (i + 37) % ids.len();
                loop {
                    let mut s = server.load_session(&ids[i]).expect("load").expect("live");
                    let text = String::from_utf8(s.data.clone()).expect("utf-8");
                    let (n, rest) = text.split_once(';').expect("counter");
                    let n: u64 = n.parse().expect("number");
                    s.data = format!("{};{rest}", n + 1).into_bytes();
                    match server.save_session_if_unchanged(&mut s) {
                        Ok(()) => break,
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                done[i] += 1;
            }
            done
        })
    };
    let out = run(
        &[
            "rekey",
            s(&path),
            "--key-file",
            s(&new_keys),
            "--retire-file",
            s(&old_keys),
        ],
        None,
    );
    stop.store(true, Ordering::Release);
    let done = writer.join().expect("writer");
    let report = ok(&out);
    assert!(report.contains(&format!("{SESSIONS} sessions")), "{report}");
    assert!(report.contains("0 left"), "{report}");
    drop(server);

    // Only the new key now: every session loads with every increment.
    let after = Encrypted::new(open(&path), new);
    for (i, id) in ids.iter().enumerate() {
        let s = after.load_session(id).expect("load").expect("live");
        assert_eq!(
            s.data,
            format!("{};{MARKER}", done[i]).into_bytes(),
            "session {i}"
        );
    }
    // Compacted: no plaintext and no record under the old key in the file.
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        !contains(&bytes, MARKER.as_bytes()),
        "plaintext left in the file"
    );
    assert!(
        !contains(&bytes, b"\xFFSLE\x01\x00\x03old"),
        "an old-key record left"
    );
}
