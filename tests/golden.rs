//! Guards the on-disk formats against a change made to the encoder and the
//! decoder alike, which every round-trip test would pass: a version 1 log,
//! a version 2 log (sessions with owners) and a DirStore session file,
//! written once and committed under `tests/golden/`, must decode to exactly
//! the contents below, and re-encode byte for byte; the version 1 log opens
//! and a compaction rewrites it as version 2.
//!
//! `SESSIONLOG_BLESS=1 cargo test --test golden` writes the version 2 log
//! and the DirStore file anew (this build writes no version 1 log); do
//! that only for a deliberate format change, with a new format version.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sessionlog::internals::format::{
    self, FORMAT_VERSION, H_COMMITTED, H_STATIC_END, HEADER_SIZE, Kind, RecordFields,
};
use sessionlog::{
    DirStore, LogStore, ManualClock, Owner, Session, SessionId, SessionStore, StorePolicy,
    SyncPolicy, WhenFull,
};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn id(s: &str) -> SessionId {
    SessionId::new(s).expect("valid id")
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000 + secs)
}

fn binary() -> Vec<u8> {
    (0..=255u8).collect()
}

/// One record of the golden log: kind, id, version, modified (seconds
/// after the fixed date), expires (same), data.
type Expected = (Kind, &'static str, u64, u64, Option<u64>, Vec<u8>);

/// What the golden log holds, record by record.
fn expected_records() -> Vec<Expected> {
    vec![
        (Kind::Put, "alice", 1, 0, None, b"user=alice".to_vec()),
        (Kind::Put, "bob", 1, 0, Some(3600), b"user=bob".to_vec()),
        (Kind::Put, "carol", 1, 0, None, b"user=carol".to_vec()),
        (Kind::Put, "bin", 1, 0, None, binary()),
        (
            Kind::Put,
            "alice",
            2,
            1,
            None,
            b"user=alice;role=admin".to_vec(),
        ),
        (Kind::Delete, "carol", 1, 1, None, Vec::new()),
        // A touch's data is the offset of the put it refreshes.
        (Kind::Touch, "alice", 2, 2, None, Vec::new()),
    ]
}

/// Writes the golden log: the operations behind `expected_records`, with
/// `owner_of` giving each put's owner.
fn bless_log(path: &Path, owner_of: impl Fn(&str, u64) -> Option<&'static str>) {
    let clock = ManualClock::new(at(0));
    let store = LogStore::options()
        .clock(clock.clone())
        .sync(SyncPolicy::Always)
        .background(false)
        .open(path)
        .expect("create");
    for (name, data) in [
        ("alice", b"user=alice".to_vec()),
        ("bob", b"user=bob".to_vec()),
        ("carol", b"user=carol".to_vec()),
        ("bin", binary()),
    ] {
        let mut s = Session::new(id(name), data);
        if name == "bob" {
            s.expires = Some(at(3600));
        }
        s.owner = owner_of(name, 1).map(|o| Owner::new(o).expect("owner"));
        store.save_session(&mut s).expect("save");
    }
    clock.advance(Duration::from_secs(1));
    let mut alice = store
        .load_session(&id("alice"))
        .expect("load")
        .expect("live");
    alice.data = b"user=alice;role=admin".to_vec();
    alice.owner = owner_of("alice", 2).map(|o| Owner::new(o).expect("owner"));
    store.save_session_if_unchanged(&mut alice).expect("save");
    assert!(store.delete_session(&id("carol")).expect("delete"));
    clock.advance(Duration::from_secs(1));
    assert!(store.touch_session(&id("alice")).expect("touch"));
    drop(store);
    // Keep the committed bytes only: the rest is space reserved for appends.
    let committed = format::decode_offset(u64::from_le_bytes(
        fs::read(path).expect("read")[H_COMMITTED..H_COMMITTED + 8]
            .try_into()
            .expect("8 bytes"),
    ))
    .expect("committed word");
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.set_len(committed).expect("cut");
    let _ = fs::remove_file(format!("{}.lock", path.display()));
}

/// The owners of the version 2 golden log's puts: alice's second version
/// moves her session to another owner; carol has none.
fn v2_owner(name: &str, version: u64) -> Option<&'static str> {
    match (name, version) {
        ("alice", 1) => Some("user-42"),
        ("alice", _) => Some("admin-7 Zoë"),
        ("bob" | "bin", _) => Some("user-42"),
        _ => None,
    }
}

#[test]
fn the_v1_log_decodes_to_its_exact_contents_and_re_encodes_byte_for_byte() {
    check_golden_log("v1.log", 1, |_, _| None);
    // (the store and its directory are dropped here)
}

#[test]
fn the_v2_log_decodes_to_its_exact_contents_and_re_encodes_byte_for_byte() {
    let path = golden("v2.log");
    if std::env::var("SESSIONLOG_BLESS").is_ok() {
        let _ = fs::remove_file(&path);
        bless_log(&path, v2_owner);
    }
    let (_tmp, store) = check_golden_log("v2.log", 2, v2_owner);
    let user = Owner::new("user-42").expect("owner");
    let mut listed: Vec<String> = store
        .sessions_of(&user)
        .expect("list")
        .into_iter()
        .map(|i| i.id.as_str().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["bin", "bob"]);
    let admin = Owner::new("admin-7 Zoë").expect("owner");
    assert_eq!(store.sessions_of(&admin).expect("list").len(), 1);
}

/// A version 1 log opens, and a save with an owner first compacts it into
/// a version 2 file, which keeps every session.
#[test]
fn a_v1_log_is_rewritten_as_v2_when_a_session_gets_an_owner() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("v1.log");
    fs::copy(golden("v1.log"), &copy).expect("copy");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).expect("chmod");
    let store = LogStore::options()
        .clock(ManualClock::new(at(3)))
        .background(false)
        .open(&copy)
        .expect("the golden log opens");
    // Without an owner, a save appends to the version 1 file.
    let mut plain = Session::new(id("dave"), b"user=dave".to_vec());
    store.save_session(&mut plain).expect("save");
    let version =
        |p: &Path| u32::from_le_bytes(fs::read(p).expect("read")[8..12].try_into().expect("4"));
    assert_eq!(version(&copy), 1);
    let mut owned = Session::new(id("erin"), b"user=erin".to_vec())
        .with_owner(Owner::new("user-9").expect("owner"));
    store.save_session(&mut owned).expect("save with an owner");
    assert_eq!(version(&copy), 2, "compacted into version 2");
    assert_eq!(store.stats().expect("stats").generation, 2);
    for name in ["alice", "bob", "bin", "dave", "erin"] {
        assert!(store.has_session(&id(name)).expect("has"), "{name}");
    }
    drop(store);
    let store = LogStore::options()
        .clock(ManualClock::new(at(3)))
        .background(false)
        .open(&copy)
        .expect("reopens");
    assert_eq!(
        store
            .sessions_of(&Owner::new("user-9").expect("owner"))
            .expect("list")
            .len(),
        1
    );
}

/// Checks the golden log `name` of format `version`, whose puts carry
/// `owner_of`'s owners, and returns the store opened from a copy of it.
fn check_golden_log(
    name: &str,
    version: u32,
    owner_of: impl Fn(&str, u64) -> Option<&'static str>,
) -> (tempfile::TempDir, LogStore) {
    let path = golden(name);
    assert!(version <= FORMAT_VERSION);
    let bytes = fs::read(&path).expect("the golden log is committed");

    // The header: static part, then the committed and synced words, which
    // both point at the end of the last record.
    let header = format::decode_static_header(&bytes[..H_STATIC_END]).expect("header");
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().expect("4")),
        version
    );
    assert_eq!(header.version, version);
    assert_eq!(header.generation, 1);
    assert_eq!(header.created_ms, 1_893_456_000_000);
    assert_eq!(
        format::encode_header(&header, bytes.len() as u64),
        bytes[..HEADER_SIZE as usize],
        "the header re-encodes byte for byte"
    );

    // The records, one by one.
    let mut off = HEADER_SIZE as usize;
    let mut put_offsets = std::collections::HashMap::new();
    for (i, (kind, name, version, modified, expires, data)) in
        expected_records().into_iter().enumerate()
    {
        let rec = format::decode_record_salted(&bytes[off..], header.salt)
            .unwrap_or_else(|e| panic!("record {i} at {off}: {e}"));
        assert_eq!(rec.kind, kind, "record {i}");
        assert_eq!(rec.id, name.as_bytes(), "record {i}");
        assert_eq!(rec.version, version, "record {i}");
        assert_eq!(
            rec.modified_ms,
            1_893_456_000_000 + modified * 1000,
            "record {i}"
        );
        assert_eq!(
            rec.expires_ms,
            expires.map_or(0, |e| 1_893_456_000_000 + e * 1000),
            "record {i}"
        );
        let want_data = match kind {
            Kind::Touch => (put_offsets[name] as u64).to_le_bytes().to_vec(),
            _ => data,
        };
        assert_eq!(rec.data, &want_data[..], "record {i}");
        let want_owner = match kind {
            Kind::Put => owner_of(name, version_of_put(&rec)),
            _ => None,
        };
        assert_eq!(rec.owner, want_owner.unwrap_or("").as_bytes(), "record {i}");
        if kind == Kind::Put {
            put_offsets.insert(name, off);
        }
        let mut again = Vec::new();
        format::encode_record_salted(
            &mut again,
            &RecordFields {
                kind: rec.kind,
                id: rec.id,
                data: rec.data,
                version: rec.version,
                modified_ms: rec.modified_ms,
                expires_ms: rec.expires_ms,
                owner: rec.owner,
            },
            header.salt,
        );
        assert_eq!(
            again,
            bytes[off..off + rec.padded_len],
            "record {i} re-encodes byte for byte"
        );
        off += rec.padded_len;
    }
    assert_eq!(off, bytes.len(), "nothing follows the last record");

    // And the store built from it, opened from a copy.
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join(name);
    fs::copy(&path, &copy).expect("copy");
    // A checkout's mode is git's (0644); a store refuses a log others can read.
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).expect("chmod");
    let store = LogStore::options()
        .clock(ManualClock::new(at(3)))
        .background(false)
        .open(&copy)
        .expect("the golden log opens");
    let alice = store
        .load_session(&id("alice"))
        .expect("load")
        .expect("live");
    assert_eq!(alice.data, b"user=alice;role=admin");
    assert_eq!(
        (alice.version(), alice.modified(), alice.expires),
        (2, Some(at(2)), None)
    );
    let bob = store.load_session(&id("bob")).expect("load").expect("live");
    assert_eq!(bob.data, b"user=bob");
    assert_eq!(
        (bob.version(), bob.modified(), bob.expires),
        (1, Some(at(0)), Some(at(3600)))
    );
    assert_eq!(store.load_session(&id("carol")).expect("load"), None);
    let bin = store.load_session(&id("bin")).expect("load").expect("live");
    assert_eq!(bin.data, binary());
    assert_eq!(store.iter_sessions().expect("iter").count(), 3);
    assert_eq!(
        bin.owner.as_ref().map(Owner::as_str),
        owner_of("bin", 1),
        "a load gives the owner"
    );
    (tmp, store)
}

fn version_of_put(rec: &format::RecordRef<'_>) -> u64 {
    rec.version
}

/// Writes the golden log with a recorded policy: a store set up with an
/// idle limit, a quota and eviction, holding one session.
fn bless_policy_log(path: &Path) {
    let store = LogStore::options()
        .clock(ManualClock::new(at(0)))
        .sync(SyncPolicy::Always)
        .background(false)
        .max_idle(Duration::from_secs(1800))
        .max_sessions(50_000)
        .max_bytes(64 << 20)
        .when_full(WhenFull::EvictOldest)
        .open(path)
        .expect("create");
    store
        .save_session(&mut Session::new(id("erin"), b"user=erin".to_vec()))
        .expect("save");
    drop(store);
    let committed = format::decode_offset(u64::from_le_bytes(
        fs::read(path).expect("read")[H_COMMITTED..H_COMMITTED + 8]
            .try_into()
            .expect("8 bytes"),
    ))
    .expect("committed word");
    let f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.set_len(committed).expect("cut");
    let _ = fs::remove_file(format!("{}.lock", path.display()));
    let _ = fs::remove_file(format!("{}.reserve", path.display()));
}

/// The policy a store records (bytes 72..104 of the header, DESIGN.md
/// §2.1): `v1-policy.log` must decode to exactly this, re-encode byte for
/// byte, and be applied by a process that opens it without options.
/// `v1.log`, written before stores recorded one, holds zeros there (the
/// test above re-encodes its header with none).
#[test]
fn the_v1_log_with_a_recorded_policy_decodes_and_re_encodes_byte_for_byte() {
    let path = golden("v1-policy.log");
    if std::env::var("SESSIONLOG_BLESS").is_ok() {
        let _ = fs::remove_file(&path);
        bless_policy_log(&path);
    }
    let bytes = fs::read(&path).expect("the golden log is committed");
    let header = format::decode_static_header(&bytes[..H_STATIC_END]).expect("header");
    let policy = format::decode_policy(&bytes)
        .expect("an intact policy")
        .expect("a recorded policy");
    assert_eq!(
        policy,
        format::Policy {
            max_idle_ms: 1_800_000,
            max_sessions: 50_000,
            max_bytes: 64 << 20,
            evict: true,
        }
    );
    let mut page = format::encode_header(&header, bytes.len() as u64);
    format::encode_policy(&policy, &mut page);
    assert_eq!(
        page,
        bytes[..HEADER_SIZE as usize],
        "the header re-encodes byte for byte"
    );
    assert_eq!(
        format::decode_policy(&fs::read(golden("v1.log")).expect("v1.log")),
        Ok(None),
        "a file of an earlier build records none"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("p.log");
    fs::copy(&path, &copy).expect("copy");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600)).expect("chmod");
    let clock = ManualClock::new(at(1799));
    let store = LogStore::options()
        .clock(clock.clone())
        .background(false)
        .open(&copy)
        .expect("the golden log opens");
    assert_eq!(
        store.policy().expect("policy"),
        StorePolicy {
            max_idle: Some(Duration::from_secs(1800)),
            max_sessions: Some(50_000),
            max_bytes: Some(64 << 20),
            when_full: WhenFull::EvictOldest,
        }
    );
    let erin = store
        .load_session(&id("erin"))
        .expect("load")
        .expect("live");
    assert_eq!(erin.data, b"user=erin");
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.load_session(&id("erin")).expect("load"), None, "idle");
}

/// The session the golden DirStore file holds.
const DIR_ID: &str = "dave-7Qx";
/// Its file's name today: `h-` and the base32 of the SHA-256 digest of
/// `"sessionlog stored id v1\0dave-7Qx"` (DESIGN.md §11).
const DIR_NAME: &str = "h-h2utreem2b76enb3gwvmeonzrlqntquloinqcsfwfywz3tmtnqpa";

#[test]
fn the_v1_dirstore_session_file_decodes_to_its_exact_contents_and_re_encodes_byte_for_byte() {
    let dir = golden("dir-v1");
    if std::env::var("SESSIONLOG_BLESS").is_ok() {
        let _ = fs::remove_dir_all(&dir);
        let store = DirStore::options()
            .clock(ManualClock::new(at(0)))
            .sync(SyncPolicy::Always)
            .open(&dir)
            .expect("create");
        let mut s = Session::new(id(DIR_ID), b"cart=3".to_vec()).with_expires(at(86_400));
        store.save_session(&mut s).expect("save");
        drop(store);
        let _ = fs::remove_file(dir.join(".lock"));
        let _ = fs::remove_file(dir.join(".hashed-names"));
        // The committed file keeps the name versions before issue 25 gave
        // it, so that this test also reads a store of old names.
        fs::rename(dir.join(DIR_NAME), dir.join("s-mrqxmzjng5ixq")).expect("rename");
    }
    let names: Vec<String> = fs::read_dir(&dir)
        .expect("the golden directory is committed")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    // The id in lowercase unpadded base32 after `s-`: the name versions
    // before issue 25 gave the file.
    assert_eq!(names, ["s-mrqxmzjng5ixq"]);
    let bytes = fs::read(dir.join(&names[0])).expect("read");
    assert_eq!(
        &bytes[..8],
        &[0x89, b'S', b'L', b'D', b'I', b'R', b'\r', b'\n']
    );
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().expect("4")), 1);
    assert_eq!(&bytes[12..16], &[0; 4]);
    let rec = format::decode_record(&bytes[16..]).expect("one unsalted put");
    assert_eq!(rec.kind, Kind::Put);
    assert_eq!(rec.id, DIR_ID.as_bytes());
    assert_eq!(rec.data, b"cart=3");
    assert_eq!(rec.version, 1);
    assert_eq!(rec.modified_ms, 1_893_456_000_000);
    assert_eq!(rec.expires_ms, 1_893_456_000_000 + 86_400_000);
    let mut again = bytes[..16].to_vec();
    format::encode_record(
        &mut again,
        &RecordFields {
            kind: rec.kind,
            id: rec.id,
            data: rec.data,
            version: rec.version,
            modified_ms: rec.modified_ms,
            expires_ms: rec.expires_ms,
            owner: rec.owner,
        },
    );
    assert_eq!(again, bytes, "the file re-encodes byte for byte");

    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("d");
    fs::create_dir(&copy).expect("mkdir");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::copy(dir.join(&names[0]), copy.join(&names[0])).expect("copy");
    fs::set_permissions(copy.join(&names[0]), fs::Permissions::from_mode(0o600)).expect("chmod");
    let store = DirStore::options()
        .clock(ManualClock::new(at(10)))
        .open(&copy)
        .expect("open");
    let mut now: Vec<String> = fs::read_dir(&copy)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    now.sort();
    assert_eq!(
        now,
        [".hashed-names", ".lock", DIR_NAME],
        "opening renamed the file to its digest name"
    );
    let s = store
        .load_session(&id(DIR_ID))
        .expect("load")
        .expect("live");
    assert_eq!(s.data, b"cart=3");
    assert_eq!(
        (s.version(), s.modified(), s.expires),
        (1, Some(at(0)), Some(at(86_400)))
    );
}
