//! `HashedIds` (issue 12, item 12): what each backend really holds contains
//! no session id in the clear, a store of clear ids is read and moved on
//! save, and a digest read from the store reaches no session.

mod common;

use std::path::Path;

use sessionlog::{
    DirStore, Error, HashedIds, LogStore, MemoryStore, Session, SessionId, SessionStore,
};

fn ids(n: usize) -> Vec<SessionId> {
    (0..n).map(|_| SessionId::generate()).collect()
}

/// Saves, re-saves, touches and deletes sessions through `store`.
fn exercise(store: &impl SessionStore, ids: &[SessionId]) {
    for (i, id) in ids.iter().enumerate() {
        let mut s = Session::new(id.clone(), format!("user={i}").into_bytes());
        store.save_session(&mut s).expect("save");
        s.data.push(b'!');
        store
            .save_session_if_unchanged(&mut s)
            .expect("conditional save");
        assert!(store.touch_session(id).expect("touch"));
    }
    assert!(store.delete_session(&ids[0]).expect("delete"));
    for id in &ids[1..] {
        assert!(
            store.has_session(id).expect("has"),
            "every other session loads"
        );
    }
}

/// Every file under `dir`, recursively: its path and its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir") {
        let path = e.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let bytes = std::fs::read(&path).expect("read file");
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// No file name or content under `dir` holds any of `ids`.
fn assert_no_clear_id(dir: &Path, ids: &[SessionId]) {
    let all = files(dir);
    assert!(!all.is_empty());
    for (name, bytes) in &all {
        for id in ids {
            let needle = id.as_str().as_bytes();
            assert!(
                !name.contains(id.as_str()),
                "{name} names session {}",
                id.digest_hint()
            );
            assert!(
                !contains(bytes, needle),
                "{name} holds session {}",
                id.digest_hint()
            );
        }
    }
}

/// The raw store lists only digests.
fn assert_lists_only_digests(raw: &impl SessionStore, ids: &[SessionId]) {
    let listed: Vec<SessionId> = raw
        .iter_sessions()
        .expect("iter")
        .map(|r| r.expect("item").id)
        .collect();
    assert_eq!(listed.len(), ids.len() - 1);
    for id in &ids[1..] {
        assert!(listed.contains(&HashedIds::<()>::stored_id(id)));
        assert!(!listed.contains(id));
    }
}

#[test]
fn a_log_store_file_holds_no_clear_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sessions.db");
    let ids = ids(50);
    {
        let store = HashedIds::new(LogStore::open(&path).expect("open"));
        exercise(&store, &ids);
        store.inner().compact().expect("compact");
        exercise(&store, &ids[1..]);
    }
    assert_no_clear_id(dir.path(), &ids);
    let log = std::fs::read(&path).expect("read log");
    let digest = HashedIds::<()>::stored_id(&ids[1]);
    assert!(
        contains(&log, digest.as_str().as_bytes()),
        "the log holds the digest"
    );
    let raw = LogStore::open(&path).expect("reopen");
    assert_lists_only_digests(&raw, &ids[1..]);
}

#[test]
fn a_dir_store_holds_no_clear_id_in_names_or_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("sessions");
    let ids = ids(30);
    let store = HashedIds::new(DirStore::open(&root).expect("open"));
    store.setup().expect("setup");
    exercise(&store, &ids);
    assert_no_clear_id(dir.path(), &ids);
    assert_lists_only_digests(store.inner(), &ids);
}

/// A store of clear ids (made without the wrapper) read through it: every
/// session loads; the first save moves it to its digest; a stale copy
/// conflicts; delete removes the clear record; untouched sessions stay.
fn migrates_a_store_of_clear_ids<S: SessionStore>(raw: S) {
    let [a, b, c, d, e] = [(); 5].map(|()| SessionId::generate());
    for id in [&a, &b, &c, &d, &e] {
        let mut s = Session::new(id.clone(), id.as_str().as_bytes().to_vec());
        for _ in 0..3 {
            raw.save_session(&mut s).expect("raw save");
        }
    }
    let store = HashedIds::new(raw);
    let digest = |id: &SessionId| HashedIds::<()>::stored_id(id);

    // read in place
    let mut la = store
        .load_session(&a)
        .expect("load")
        .expect("clear a loads");
    assert_eq!((la.id.clone(), la.version()), (a.clone(), 3));
    assert!(store.has_session(&b).expect("has"));
    let stale = la.clone();

    // a conditional save moves it
    la.data = b"a, moved".to_vec();
    store
        .save_session_if_unchanged(&mut la)
        .expect("save moves a");
    assert_eq!((la.id.clone(), la.version()), (a.clone(), 1));
    assert_eq!(
        store.inner().load_session(&a).expect("raw"),
        None,
        "clear a gone"
    );
    let moved = store
        .inner()
        .load_session(&digest(&a))
        .expect("raw")
        .expect("digest a");
    assert_eq!(moved.data, b"a, moved");
    assert_eq!(
        store.load_session(&a).expect("load").expect("a").data,
        b"a, moved"
    );

    // the copy loaded from the clear record before the move is stale
    let mut stale = stale;
    stale.data = b"stale".to_vec();
    let err = store
        .save_session_if_unchanged(&mut stale)
        .expect_err("stale");
    assert!(
        matches!(err, Error::Conflict { expected: 3, found: 1, ref id } if *id == a),
        "{err}"
    );

    // a stale copy of a clear record that someone else saved meanwhile
    let mut old_b = store.load_session(&b).expect("load").expect("b");
    let mut new_b = old_b.clone();
    store
        .inner()
        .save_session(&mut new_b)
        .expect("raw save of b");
    old_b.data = b"stale b".to_vec();
    let err = store
        .save_session_if_unchanged(&mut old_b)
        .expect_err("stale b");
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected: 3,
                found: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !store.inner().has_session(&digest(&b)).expect("raw"),
        "nothing written"
    );

    // an unconditional save moves it
    let mut lc = store.load_session(&c).expect("load").expect("c");
    store.save_session(&mut lc).expect("save moves c");
    assert!(!store.inner().has_session(&c).expect("raw"));
    assert!(store.inner().has_session(&digest(&c)).expect("raw"));

    // touching keeps a clear session alive where it is; deleting removes it
    assert!(store.touch_session(&d).expect("touch"));
    assert!(store.delete_session(&d).expect("delete"));
    assert!(!store.inner().has_session(&d).expect("raw"));
    assert!(!store.delete_session(&d).expect("delete twice"));

    // untouched sessions stay readable; digests are never looked up clear
    assert_eq!(
        store.load_session(&e).expect("load").expect("e").data,
        e.as_str().as_bytes()
    );
    assert_eq!(store.load_session(&digest(&a)).expect("load"), None);
    let mut listed: Vec<String> = store
        .iter_sessions()
        .expect("iter")
        .map(|r| r.expect("item").id.to_string())
        .collect();
    listed.sort();
    let mut want = vec![
        digest(&a).to_string(),
        b.to_string(),
        digest(&c).to_string(),
        e.to_string(),
    ];
    want.sort();
    assert_eq!(listed, want, "moved sessions by digest, the rest as stored");
}

#[test]
fn a_memory_store_of_clear_ids_is_read_and_moved() {
    migrates_a_store_of_clear_ids(MemoryStore::new());
}

#[test]
fn a_log_store_of_clear_ids_is_read_and_moved() {
    let dir = tempfile::tempdir().expect("temp dir");
    migrates_a_store_of_clear_ids(LogStore::open(dir.path().join("s.db")).expect("open"));
}

#[test]
fn a_dir_store_of_clear_ids_is_read_and_moved() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = DirStore::open(dir.path().join("s")).expect("open");
    store.setup().expect("setup");
    migrates_a_store_of_clear_ids(store);
}

/// The digest of a session, read from the store's file, presented as a
/// cookie: the server hashes it again and finds nothing, even on a store
/// that still reads clear ids.
#[test]
fn a_digest_from_the_file_is_not_a_cookie() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = HashedIds::new(LogStore::open(dir.path().join("s.db")).expect("open"));
    let victim = SessionId::generate();
    store
        .save_session(&mut Session::new(victim.clone(), b"role=admin".to_vec()))
        .expect("save");
    let stolen = store
        .iter_sessions()
        .expect("iter")
        .next()
        .expect("one")
        .expect("ok")
        .id;
    assert_eq!(stolen, HashedIds::<()>::stored_id(&victim));
    assert_eq!(store.load_session(&stolen).expect("load"), None);
    assert!(!store.touch_session_until(&stolen, None).expect("touch"));
    let mut forged = Session::new(stolen.clone(), b"role=attacker".to_vec());
    store
        .save_session(&mut forged)
        .expect("a save lands elsewhere");
    assert_eq!(
        store
            .load_session(&victim)
            .expect("load")
            .expect("victim")
            .data,
        b"role=admin"
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_keys_and_values_hold_no_clear_id() {
    use common::conformance::{Backend, Config};
    let loc = common::servers::Redis::new_location();
    let store = HashedIds::new(loc.open(&Config::default()));
    store.setup().expect("setup");
    let ids = ids(20);
    exercise(&store, &ids);
    assert_lists_only_digests(store.inner(), &ids);
    let client = redis::Client::open(common::servers::redis_url()).expect("client");
    let mut c = client.get_connection().expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}}}:*", loc.prefix))
        .query(&mut c)
        .expect("keys");
    assert!(!keys.is_empty());
    for key in &keys {
        let dump: Vec<u8> = redis::cmd("DUMP").arg(key).query(&mut c).expect("dump");
        for id in &ids {
            assert!(
                !key.contains(id.as_str()),
                "a key names session {}",
                id.digest_hint()
            );
            assert!(
                !contains(&dump, id.as_str().as_bytes()),
                "{key} holds session {}",
                id.digest_hint()
            );
        }
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_rows_hold_no_clear_id() {
    use common::conformance::{Backend, Config};
    let loc = common::servers::Postgres::new_location();
    let store = HashedIds::new(loc.open(&Config::default()));
    store.setup().expect("setup");
    let ids = ids(20);
    exercise(&store, &ids);
    assert_lists_only_digests(store.inner(), &ids);
    let rows = common::servers::pg_query_i64(&format!("SELECT count(*) FROM {}", loc.table))
        .expect("count");
    assert_eq!(rows, 19);
    for id in &ids {
        // every column of every row, as text
        let n = common::servers::pg_query_i64(&format!(
            "SELECT count(*) FROM {} t WHERE strpos(t::text, '{}') > 0",
            loc.table,
            id.as_str()
        ))
        .expect("query");
        assert_eq!(n, 0, "a row holds session {}", id.digest_hint());
    }
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_rows_hold_only_digests() {
    use common::conformance::{Backend, Config};
    let loc = common::servers::MySql::new_location();
    let store = HashedIds::new(loc.open(&Config::default()));
    store.setup().expect("setup");
    let ids = ids(20);
    exercise(&store, &ids);
    assert_lists_only_digests(store.inner(), &ids);
}
