//! `Encrypted` (issue 29): what each backend really holds contains no
//! session data and no key; a record moved to another session, tampered
//! with, or under a key the keyring lacks fails with a typed error and
//! never yields data; plaintext is read only when the migration setting
//! says so; key files are trusted as the store's own files are; `rekey`
//! under concurrent writers loses no save and leaves no record under a
//! retired key.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use sessionlog::{
    DirStore, Encrypted, Error, HashedIds, Keyring, LogStore, MemoryStore, SaveMode, Session,
    SessionId, SessionIter, SessionStore, Touch,
};

const MARKER: &str = "MARKER-7f3a91-user-credit-card";
const KEY: [u8; 32] = [0x5A; 32];
const OLD_KEY: [u8; 32] = [0xA5; 32];

fn keys() -> Keyring {
    Keyring::new("k-new", KEY).expect("keyring")
}

fn old_keys() -> Keyring {
    Keyring::new("k-old", OLD_KEY).expect("keyring")
}

fn rotated() -> Keyring {
    keys().with_retired("k-old", OLD_KEY).expect("keyring")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively: its path and its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let path = e.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((
                path.display().to_string(),
                std::fs::read(&path).expect("read file"),
            ));
        }
    }
    out
}

/// The byte strings that must appear nowhere: the marker and the keys
/// (raw and base64).
fn secrets() -> Vec<Vec<u8>> {
    vec![
        MARKER.as_bytes().to_vec(),
        KEY.to_vec(),
        b64(&KEY).into_bytes(),
        OLD_KEY.to_vec(),
        b64(&OLD_KEY).into_bytes(),
    ]
}

fn assert_holds_no_secret(what: &str, bytes: &[u8]) {
    for s in secrets() {
        assert!(!contains(bytes, &s), "{what} holds a secret");
    }
}

fn assert_dir_holds_no_secret(dir: &Path) {
    let all = files(dir);
    assert!(!all.is_empty());
    for (name, bytes) in &all {
        assert_holds_no_secret(name, bytes);
        assert!(!name.contains(MARKER));
    }
}

/// Saves, re-saves, touches and deletes sessions whose data holds the
/// marker, and checks that every one loads back.
fn exercise(store: &impl SessionStore, n: usize) -> Vec<SessionId> {
    let ids: Vec<SessionId> = (0..n).map(|_| SessionId::generate()).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut s = Session::new(id.clone(), format!("{MARKER} #{i}").into_bytes());
        store.save_session(&mut s).expect("save");
        s.data.extend_from_slice(MARKER.as_bytes());
        store.save_session_if_unchanged(&mut s).expect("cond save");
        assert!(store.touch_session(id).expect("touch"));
    }
    assert!(store.delete_session(&ids[0]).expect("delete"));
    for (i, id) in ids.iter().enumerate().skip(1) {
        let s = store.load_session(id).expect("load").expect("present");
        assert_eq!(s.data, format!("{MARKER} #{i}{MARKER}").into_bytes());
    }
    ids
}

#[test]
fn a_plain_log_store_does_hold_the_marker() {
    // The control: the scan finds what is there, so its silence below means something.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LogStore::open(dir.path().join("s.db")).expect("open");
    exercise(&store, 3);
    drop(store);
    assert!(
        files(dir.path())
            .iter()
            .any(|(_, b)| contains(b, MARKER.as_bytes()))
    );
}

#[test]
fn a_log_store_file_holds_no_data_and_no_key() {
    for hashed in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sessions.db");
        {
            let log = LogStore::open(&path).expect("open");
            if hashed {
                let store = HashedIds::new(Encrypted::new(log, keys()));
                exercise(&store, 40);
                store.inner().inner().compact().expect("compact");
                assert_holds_no_secret("Debug", format!("{store:?}").as_bytes());
            } else {
                let store = Encrypted::new(log, keys());
                exercise(&store, 40);
                store.inner().compact().expect("compact");
                exercise(&store, 10);
                assert_holds_no_secret("Debug", format!("{store:?}").as_bytes());
            }
        }
        assert_dir_holds_no_secret(dir.path());
    }
}

#[test]
fn a_dir_store_holds_no_data_and_no_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Encrypted::new(
        DirStore::open(dir.path().join("sessions")).expect("open"),
        keys(),
    );
    store.setup().expect("setup");
    exercise(&store, 30);
    assert_dir_holds_no_secret(dir.path());
}

#[test]
fn the_keyring_shows_no_key_in_debug_or_errors() {
    let ring = rotated();
    let shown = format!(
        "{ring:?} {:?}",
        Encrypted::new(MemoryStore::new(), ring.clone())
    );
    assert!(shown.contains("k-new") && shown.contains("k-old"));
    assert_holds_no_secret("Debug", shown.as_bytes());
    assert!(!shown.contains("90, 90"), "no key byte list: {shown}");
}

/// Writes two sessions through `store`, swaps their stored bytes through
/// `raw` (the bottom store, ids as stored), and checks both loads fail.
fn swapped_records_fail<S: SessionStore>(store: &impl SessionStore, raw: &S) {
    let a = SessionId::generate();
    let b = SessionId::generate();
    store
        .save_session(&mut Session::new(a.clone(), b"alice:admin".to_vec()))
        .expect("save a");
    store
        .save_session(&mut Session::new(b.clone(), b"bob:user".to_vec()))
        .expect("save b");
    let (sa, sb) = (store.stored_id_of(&a), store.stored_id_of(&b));
    let mut ra = raw.load_session(&sa).expect("raw a").expect("a");
    let mut rb = raw.load_session(&sb).expect("raw b").expect("b");
    std::mem::swap(&mut ra.data, &mut rb.data);
    raw.save_session(&mut ra).expect("write a");
    raw.save_session(&mut rb).expect("write b");
    for id in [&a, &b] {
        let err = store.load_session(id).expect_err("moved ciphertext");
        match &err {
            Error::Undecryptable { key_id, .. } => {
                assert_eq!(key_id.as_deref(), Some("k-new"));
            }
            other => panic!("expected Undecryptable, got {other:?}"),
        }
        assert!(!err.to_string().contains(id.as_str()), "{err}");
    }
}

#[test]
fn swapping_two_sessions_records_makes_both_loads_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Encrypted::new(
        LogStore::open(dir.path().join("a.db")).expect("open"),
        keys(),
    );
    swapped_records_fail(&store, store.inner());

    let store = HashedIds::new(Encrypted::new(
        LogStore::open(dir.path().join("b.db")).expect("open"),
        keys(),
    ));
    swapped_records_fail(&store, store.inner().inner());

    let store = Encrypted::new(
        HashedIds::new(DirStore::open(dir.path().join("c")).expect("open")),
        keys(),
    );
    store.setup().expect("setup");
    swapped_records_fail(&store, store.inner().inner());
}

#[test]
fn a_record_moved_to_another_store_fails() {
    let a = Encrypted::new(MemoryStore::new(), keys());
    // Another store, another key under the same key id.
    let b = Encrypted::new(
        MemoryStore::new(),
        Keyring::new("k-new", [1; 32]).expect("keys"),
    );
    let id = SessionId::generate();
    a.save_session(&mut Session::new(id.clone(), b"secret".to_vec()))
        .expect("save");
    let mut raw = a.inner().load_session(&id).expect("load").expect("present");
    b.inner().save_session(&mut raw).expect("plant");
    assert!(matches!(
        b.load_session(&id),
        Err(Error::Undecryptable { .. })
    ));
}

#[test]
fn a_missing_key_is_named_and_a_retired_key_still_reads() {
    let raw = MemoryStore::new();
    let old = Encrypted::new(raw, old_keys());
    let id = SessionId::generate();
    old.save_session(&mut Session::new(id.clone(), b"v1".to_vec()))
        .expect("save under the old key");
    let raw = old.into_inner();

    let new_only = Encrypted::new(raw, keys());
    let err = new_only.load_session(&id).expect_err("key missing");
    assert!(
        matches!(&err, Error::KeyMissing { key_id, .. } if key_id == "k-old"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"k-old\""), "{err}");
    // nothing else reads it either
    assert!(
        new_only
            .iter_sessions()
            .expect("iter")
            .next()
            .expect("one")
            .is_err()
    );
    let mut called = false;
    assert!(
        new_only
            .load_session_with(&id, &mut |_| called = true)
            .is_err()
    );
    assert!(!called, "no data is lent");

    let both = Encrypted::new(new_only.into_inner(), rotated());
    let mut s = both
        .load_session(&id)
        .expect("load")
        .expect("retired key reads");
    assert_eq!(s.data, b"v1");
    s.data = b"v2".to_vec();
    both.save_session_if_unchanged(&mut s).expect("save");
    let stored = both
        .inner()
        .load_session(&id)
        .expect("raw")
        .expect("present");
    assert_eq!(
        Encrypted::<()>::key_id_of(&stored.data).expect("envelope"),
        Some("k-new".to_owned()),
        "a save encrypts under the current key"
    );
}

#[test]
fn tampering_with_any_byte_is_refused() {
    let store = Encrypted::new(MemoryStore::new(), keys());
    let id = SessionId::generate();
    store
        .save_session(&mut Session::new(id.clone(), b"role=user".to_vec()))
        .expect("save");
    let good = store
        .inner()
        .load_session(&id)
        .expect("raw")
        .expect("present");
    for i in 0..good.data.len() {
        let mut bad = good.clone();
        bad.data[i] ^= 0x01;
        store.inner().save_session(&mut bad).expect("plant");
        let err = store.load_session(&id).expect_err("tampered");
        assert!(
            matches!(err, Error::Undecryptable { .. } | Error::KeyMissing { .. }),
            "byte {i}: {err:?}"
        );
    }
    let mut cut = good.clone();
    cut.data.truncate(20);
    store.inner().save_session(&mut cut).expect("plant");
    assert!(matches!(
        store.load_session(&id),
        Err(Error::Undecryptable { .. })
    ));
}

#[test]
fn plaintext_is_read_only_as_a_migration_and_encrypted_on_save() {
    let raw = MemoryStore::new();
    let id = SessionId::generate();
    let lookalike = SessionId::generate();
    raw.save_session(&mut Session::new(id.clone(), b"from before".to_vec()))
        .expect("plain save");
    // An application's plaintext that starts like an envelope.
    let mut fake =
        b"\xFFSLE\x01\x00\x05k-newAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_vec();
    fake.extend_from_slice(b"user=1");
    raw.save_session(&mut Session::new(lookalike.clone(), fake))
        .expect("plain save");

    let strict = Encrypted::new(raw, keys());
    let err = strict.load_session(&id).expect_err("plaintext refused");
    assert!(
        matches!(&err, Error::Undecryptable { key_id: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("accept_plaintext"), "{err}");

    let migrating = Encrypted::new(strict.into_inner(), keys()).accept_plaintext(true);
    let mut s = migrating.load_session(&id).expect("load").expect("present");
    assert_eq!(s.data, b"from before");
    assert!(
        matches!(
            migrating.load_session(&lookalike),
            Err(Error::Undecryptable { .. })
        ),
        "bytes that start with the magic are an envelope and must decrypt"
    );
    migrating.save_session_if_unchanged(&mut s).expect("save");
    let stored = migrating
        .inner()
        .load_session(&id)
        .expect("raw")
        .expect("present");
    assert!(
        Encrypted::<()>::key_id_of(&stored.data)
            .expect("parse")
            .is_some()
    );
    let strict = Encrypted::new(migrating.into_inner(), keys());
    assert_eq!(
        strict
            .load_session(&id)
            .expect("load")
            .expect("present")
            .data,
        b"from before"
    );
}

#[test]
fn the_data_size_limit_counts_data_bytes() {
    let store = Encrypted::new(
        MemoryStore::options()
            .max_session_size(100)
            .open()
            .expect("opts"),
        keys(),
    );
    let err = store
        .save_session(&mut Session::new(SessionId::generate(), vec![0; 90]))
        .expect_err("the envelope is over the limit");
    match err {
        Error::TooLarge { size, limit } => assert_eq!((size, limit), (90, 100 - store.overhead())),
        other => panic!("{other:?}"),
    }
}

fn write_key_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn key_files_must_be_private_and_well_formed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys");
    let text = format!("# rotated\nk-new:{}\nk-old:{}\n", b64(&KEY), b64(&OLD_KEY));
    write_key_file(&path, &text, 0o644);
    let err = Keyring::from_file(&path).expect_err("readable by others");
    assert!(matches!(err, Error::Unsafe { .. }), "{err:?}");
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let ring = Keyring::from_file(&path).expect("0600 is trusted");
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k-new", "k-old"]);

    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    assert!(matches!(
        Keyring::from_file(&link),
        Err(Error::Unsafe { .. })
    ));

    let short = dir.path().join("short");
    write_key_file(&short, &format!("k:{}\n", b64(&KEY[..31])), 0o600);
    let err = Keyring::from_file(&short).expect_err("31 bytes");
    assert!(matches!(err, Error::BadKeys { .. }), "{err:?}");
    assert!(err.to_string().contains("line 1"), "{err}");
    assert_holds_no_secret("error", err.to_string().as_bytes());
    assert_holds_no_secret("error", b64(&KEY[..31]).as_bytes());
}

#[test]
fn keys_come_from_the_environment() {
    let var = "SESSIONLOG_TEST_KEYS_ENCRYPTED_RS";
    // SAFETY: no other test of this binary reads or writes this variable.
    unsafe { std::env::set_var(var, format!("k-new:{}, k-old:{}", b64(&KEY), b64(&OLD_KEY))) };
    let ring = Keyring::from_env(var).expect("from env");
    assert_eq!(ring.key_ids().collect::<Vec<_>>(), ["k-new", "k-old"]);
    assert!(matches!(
        Keyring::from_env("SESSIONLOG_TEST_KEYS_UNSET_VAR"),
        Err(Error::BadKeys { .. })
    ));
}

/// A bottom store whose next conditional save first runs `before`: a
/// concurrent writer's save made to land between a rekey's read and its
/// write, every time, with no timing.
struct Interleaved {
    inner: Arc<MemoryStore>,
    before: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl SessionStore for Interleaved {
    fn setup(&self) -> sessionlog::Result<()> {
        self.inner.setup()
    }
    fn load_session(&self, id: &SessionId) -> sessionlog::Result<Option<Session>> {
        self.inner.load_session(id)
    }
    fn save(&self, s: &mut Session, mode: SaveMode) -> sessionlog::Result<()> {
        if mode == SaveMode::IfUnchanged {
            let next = self.before.lock().expect("lock").pop();
            if let Some(f) = next {
                f();
            }
        }
        self.inner.save(s, mode)
    }
    fn touch(&self, id: &SessionId, touch: Touch) -> sessionlog::Result<bool> {
        self.inner.touch(id, touch)
    }
    fn delete_session(&self, id: &SessionId) -> sessionlog::Result<bool> {
        self.inner.delete_session(id)
    }
    fn iter_sessions(&self) -> sessionlog::Result<SessionIter<'_>> {
        self.inner.iter_sessions()
    }
    fn delete_old_sessions(&self, d: Duration) -> sessionlog::Result<usize> {
        self.inner.delete_old_sessions(d)
    }
    fn is_thread_safe(&self) -> bool {
        true
    }
    fn is_multiprocess_safe(&self) -> bool {
        false
    }
}

/// A second handle on the same bottom store, as a server would hold.
struct Shared(Arc<MemoryStore>);
impl SessionStore for Shared {
    fn setup(&self) -> sessionlog::Result<()> {
        self.0.setup()
    }
    fn load_session(&self, id: &SessionId) -> sessionlog::Result<Option<Session>> {
        self.0.load_session(id)
    }
    fn save(&self, s: &mut Session, mode: SaveMode) -> sessionlog::Result<()> {
        self.0.save(s, mode)
    }
    fn delete_session(&self, id: &SessionId) -> sessionlog::Result<bool> {
        self.0.delete_session(id)
    }
    fn iter_sessions(&self) -> sessionlog::Result<SessionIter<'_>> {
        self.0.iter_sessions()
    }
    fn delete_old_sessions(&self, d: Duration) -> sessionlog::Result<usize> {
        self.0.delete_old_sessions(d)
    }
    fn is_thread_safe(&self) -> bool {
        true
    }
    fn is_multiprocess_safe(&self) -> bool {
        false
    }
}

#[test]
fn a_save_between_a_rekeys_read_and_write_is_kept() {
    let bottom = Arc::new(MemoryStore::new());
    let id = SessionId::generate();
    let old = Encrypted::new(Shared(bottom.clone()), old_keys());
    old.save_session(&mut Session::new(id.clone(), b"count=1".to_vec()))
        .expect("save");
    let server = Arc::new(Encrypted::new(Shared(bottom.clone()), rotated()));
    let writer = {
        let (server, id) = (server.clone(), id.clone());
        move || {
            let mut s = server.load_session(&id).expect("load").expect("present");
            s.data = b"count=2".to_vec();
            server
                .save_session_if_unchanged(&mut s)
                .expect("the server's save");
        }
    };
    let rekeyer = Encrypted::new(
        Interleaved {
            inner: bottom.clone(),
            before: Mutex::new(vec![Box::new(writer)]),
        },
        rotated(),
    );
    let report = rekeyer.rekey().expect("rekey");
    assert_eq!((report.examined, report.left), (1, 0), "{report:?}");
    assert_eq!(
        report.current + report.rekeyed,
        1,
        "the rekey found the server's save under the new key: {report:?}"
    );
    let only_new = Encrypted::new(Shared(bottom), keys());
    assert_eq!(
        only_new
            .load_session(&id)
            .expect("load")
            .expect("present")
            .data,
        b"count=2",
        "the concurrent save was kept"
    );
}

/// Sessions hold a counter; `writers` threads increment them with
/// conditional saves (reloading on conflict) while `rekey` runs on
/// another handle of the same `LogStore` file. Every increment that
/// succeeded is in the final counters; every record is under the new key.
#[test]
fn rekey_under_concurrent_writers_loses_nothing() {
    const SESSIONS: usize = 200;
    const WRITERS: usize = 3;
    const ROUNDS: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.db");
    let ids: Vec<SessionId> = (0..SESSIONS).map(|_| SessionId::generate()).collect();
    {
        let old = Encrypted::new(LogStore::open(&path).expect("open"), old_keys());
        for id in &ids {
            old.save_session(&mut Session::new(id.clone(), 0u64.to_le_bytes().to_vec()))
                .expect("save");
        }
    }
    let server = Arc::new(Encrypted::new(
        LogStore::open(&path).expect("open"),
        rotated(),
    ));
    let start = Arc::new(Barrier::new(WRITERS + 1));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (server, start, ids) = (server.clone(), start.clone(), ids.clone());
        threads.push(std::thread::spawn(move || {
            let mut done = vec![0u64; ids.len()];
            start.wait();
            for r in 0..ROUNDS {
                let i = (r * 7 + w * 13) % ids.len();
                loop {
                    let mut s = server.load_session(&ids[i]).expect("load").expect("live");
                    let n = u64::from_le_bytes(s.data[..8].try_into().expect("8 bytes"));
                    s.data = (n + 1).to_le_bytes().to_vec();
                    match server.save_session_if_unchanged(&mut s) {
                        Ok(()) => break,
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                done[i] += 1;
            }
            done
        }));
    }
    let rekeyer = Encrypted::new(LogStore::open(&path).expect("open"), rotated());
    start.wait();
    let report = rekeyer.rekey().expect("rekey");
    let mut want = vec![0u64; SESSIONS];
    for t in threads {
        for (i, n) in t.join().expect("writer").into_iter().enumerate() {
            want[i] += n;
        }
    }
    assert_eq!(report.examined, SESSIONS, "{report:?}");
    assert_eq!(report.left, 0, "{report:?}");
    // No record is left under the retired key: a keyring without it reads all.
    let only_new = Encrypted::new(rekeyer.into_inner(), keys());
    for (i, id) in ids.iter().enumerate() {
        let s = only_new.load_session(id).expect("load").expect("live");
        assert_eq!(
            u64::from_le_bytes(s.data[..8].try_into().expect("8 bytes")),
            want[i],
            "session {i} lost an increment"
        );
        let raw = only_new
            .inner()
            .load_session(id)
            .expect("raw")
            .expect("live");
        assert_eq!(
            Encrypted::<()>::key_id_of(&raw.data)
                .expect("envelope")
                .as_deref(),
            Some("k-new")
        );
    }
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_table_holds_no_data() {
    use common::conformance::{Backend, Config};
    let loc = common::servers::Postgres::new_location();
    let cfg = Config::default();
    let raw = loc.open(&cfg);
    raw.setup().expect("setup");
    // The control row, saved without the wrapper: psql must show it.
    raw.save_session(&mut Session::new(
        SessionId::generate(),
        b"CONTROL-plain-9d1".to_vec(),
    ))
    .expect("plain save");
    let store = Encrypted::new(raw, keys());
    exercise(&store, 20);
    let out = std::process::Command::new("psql")
        .arg(common::servers::postgres_url())
        .args([
            "-At",
            "-c",
            &format!(
                "SELECT encode(data, 'escape') FROM {} UNION ALL SELECT t::text FROM {} t",
                loc.table, loc.table
            ),
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        contains(&out.stdout, b"CONTROL-plain-9d1"),
        "psql reads the rows"
    );
    assert_holds_no_secret("psql output", &out.stdout);
    let hex: String = MARKER.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(!contains(&out.stdout, hex.as_bytes()));
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_database_holds_no_data() {
    use common::conformance::{Backend, Config};
    let loc = common::servers::Redis::new_location();
    let cfg = Config::default();
    let raw = loc.open(&cfg);
    raw.setup().expect("setup");
    raw.save_session(&mut Session::new(
        SessionId::generate(),
        b"CONTROL-plain-9d1".to_vec(),
    ))
    .expect("plain save");
    let store = Encrypted::new(raw, keys());
    exercise(&store, 20);
    let url = common::servers::redis_url();
    let keys_out = std::process::Command::new("redis-cli")
        .args([
            "-u",
            &url,
            "--scan",
            "--pattern",
            &format!("{{{}}}:s:*", loc.prefix),
        ])
        .output()
        .expect("redis-cli");
    assert!(keys_out.status.success());
    let listed = String::from_utf8(keys_out.stdout).expect("utf-8 keys");
    assert_eq!(
        listed.lines().count(),
        20,
        "the control and 19 live sessions"
    );
    let mut dump = Vec::new();
    for key in listed.lines() {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", &url, "--raw", "HGETALL", key])
            .output()
            .expect("redis-cli");
        dump.extend_from_slice(&out.stdout);
    }
    assert!(
        contains(&dump, b"CONTROL-plain-9d1"),
        "redis-cli reads the hashes"
    );
    assert_holds_no_secret("redis-cli output", &dump);
}

/// The writer salt and nonce of an envelope under "k-new" (DESIGN.md
/// §14.2: the salt at 7+k, 16 bytes, then the 12-byte nonce).
fn salt_and_nonce(envelope: &[u8]) -> ([u8; 16], [u8; 12]) {
    let at = 7 + "k-new".len();
    (
        envelope[at..at + 16].try_into().expect("salt"),
        envelope[at + 16..at + 28].try_into().expect("nonce"),
    )
}

/// Each `Encrypted` draws a salt of its own and numbers its seals: two
/// seals never share a nonce under one salt, another instance (another
/// process) seals under another salt, and each reads the other's records.
#[test]
fn each_writer_seals_under_its_own_salt_with_nonces_never_reused() {
    let a = Encrypted::new(MemoryStore::new(), keys());
    let b = Encrypted::new(MemoryStore::new(), keys());
    let sid = SessionId::new("sid-0001").expect("id");
    let mut seen = std::collections::HashSet::new();
    let mut salts = std::collections::HashSet::new();
    for _ in 0..1000 {
        for store in [&a, &b] {
            let sealed = store.encrypt_record(&sid, MARKER.as_bytes()).expect("seal");
            assert!(
                seen.insert(salt_and_nonce(&sealed)),
                "a salt and nonce used twice"
            );
            salts.insert(salt_and_nonce(&sealed).0);
            let other = if std::ptr::eq(store, &a) { &b } else { &a };
            assert_eq!(
                other
                    .decrypt_record(&sid, &sealed)
                    .expect("the other writer reads it"),
                MARKER.as_bytes()
            );
        }
    }
    assert_eq!(salts.len(), 2, "one salt per writer");
}

/// A forked child does not go on counting under its parent's salt: its
/// first seal uses a salt of its own (the parent's next seal would use the
/// same nonce as the child's if it did), and the parent's count goes on.
#[test]
fn a_forked_child_seals_under_a_salt_of_its_own() {
    let store = Encrypted::new(MemoryStore::new(), keys());
    let sid = SessionId::new("sid-0001").expect("id");
    let (parent_salt, first) = salt_and_nonce(&store.encrypt_record(&sid, b"x").expect("seal"));
    let (mut read, mut write) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    // SAFETY: the child only seals (allocation, getrandom, AES: safe after
    // fork with glibc's fork handlers; this store's locks are held by no
    // other thread), writes to the pipe and `_exit`s without returning into
    // the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = store
            .encrypt_record(&sid, b"x")
            .ok()
            .map(|e| salt_and_nonce(&e))
            .and_then(|(s, n)| {
                let mut out = s.to_vec();
                out.extend_from_slice(&n);
                std::io::Write::write_all(&mut write, &out).ok()
            })
            .is_some();
        // SAFETY: ends the forked process at once, running no destructor
        // of the test harness it copied.
        unsafe { libc::_exit(i32::from(!ok)) }
    }
    drop(write);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut read, &mut got).expect("read the child's seal");
    let pid = rustix::process::Pid::from_raw(pid).expect("pid");
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .expect("waitpid")
        .expect("status");
    assert_eq!(status.exit_status(), Some(0), "the child sealed");
    assert_eq!(got.len(), 28, "the child's salt and nonce");
    assert_ne!(
        &got[..16],
        &parent_salt[..],
        "the child counted under its parent's salt"
    );
    let (salt, next) = salt_and_nonce(&store.encrypt_record(&sid, b"x").expect("seal"));
    assert_eq!(salt, parent_salt, "the parent keeps its salt");
    assert_ne!(next, first, "and its count goes on");
}
