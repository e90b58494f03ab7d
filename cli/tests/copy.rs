//! Guards `sessionlog copy` (and `sessionlog::copy_sessions` behind it) as
//! users run it, through the real binary:
//! - LogStore → DirStore → LogStore keeps every id, data and deadline; the
//!   LogStore destination also keeps each session's modification time and
//!   version; an id already live at the destination is skipped and kept
//!   unless `--overwrite`; the summary counts are right;
//! - with the `postgres` and `redis` features (servers from
//!   `bash .ci/servers.sh`; an unreachable one fails, never skips):
//!   LogStore → PostgreSQL → Redis → LogStore with every id, data and
//!   deadline intact (20,000 sessions by default; set
//!   SESSIONLOG_COPY_SESSIONS=100000 for the full size);
//! - `HashedIds` stores copy their stored ids as they are;
//! - owners are copied (between MemoryStores: the LogStore and the server
//!   stores do not store owners on main yet).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};

fn sessionlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn ok(args: &[&str]) -> String {
    let out = sessionlog(args);
    assert!(
        out.status.success(),
        "sessionlog {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn open(path: &Path) -> LogStore {
    LogStore::options()
        .sync(SyncPolicy::Never)
        .background(false)
        .open(path)
        .expect("open")
}

/// A time at millisecond precision, as every store keeps it.
fn ms(t: SystemTime) -> SystemTime {
    let d = t.duration_since(UNIX_EPOCH).expect("after 1970");
    UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64)
}

/// Session `i` of a test set: its id, data and deadline (none for every
/// seventh, else a distinct time between one and two days ahead).
fn nth(i: usize, base: SystemTime) -> Session {
    let id = SessionId::new(format!("copy-{i:08}-{:016x}", i * 2_654_435_761)).expect("id");
    let mut s = Session::new(id, format!("data of session {i}").into_bytes());
    if !i.is_multiple_of(7) {
        s.expires = Some(ms(base
            + Duration::from_secs(86_400)
            + Duration::from_millis(i as u64 * 3)));
    }
    s
}

/// Every live session of `store` by id.
fn all(store: &dyn SessionStore) -> HashMap<SessionId, Session> {
    store
        .iter_sessions()
        .expect("iterate")
        .map(|s| {
            let s = s.expect("session");
            (s.id.clone(), s)
        })
        .collect()
}

/// Each of `want` is at `got` with the same data and deadline.
fn same_sessions(got: &HashMap<SessionId, Session>, want: &[Session], at: &str) {
    assert_eq!(got.len(), want.len(), "{at}: number of sessions");
    for w in want {
        let g = got
            .get(&w.id)
            .unwrap_or_else(|| panic!("{at}: {:?} is missing", w.id));
        assert_eq!(g.data, w.data, "{at}: data of {:?}", w.id);
        assert_eq!(g.expires, w.expires, "{at}: deadline of {:?}", w.id);
    }
}

#[test]
fn log_to_dir_to_log_keeps_sessions_and_skips_live_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, dir, b) = (
        tmp.path().join("a.db"),
        tmp.path().join("d"),
        tmp.path().join("b.db"),
    );
    let base = SystemTime::now();
    let want: Vec<Session> = (0..300).map(|i| nth(i, base)).collect();
    let source = open(&a);
    // Modification times an hour ago and versions above 1, so that a copy
    // that re-stamps them shows.
    let hour_ago = ms(base - Duration::from_secs(3600));
    for w in &want {
        let s = Session::restore(w.id.clone(), w.data.clone(), w.expires, hour_ago, 5);
        source.restore_session(&s).expect("restore");
    }
    drop(source);

    let dir_spec = format!("dir:{}", s(&dir));
    let out = ok(&["copy", s(&a), &dir_spec]);
    assert_eq!(
        out.trim(),
        "copied 300 sessions; skipped 0 (already live at the destination, kept); 0 expired"
    );
    let out = ok(&["copy", &dir_spec, s(&b)]);
    assert!(out.starts_with("copied 300 sessions; skipped 0"), "{out}");
    let back = open(&b);
    let got = all(&back);
    same_sessions(&got, &want, "LogStore → DirStore → LogStore");

    // LogStore → LogStore keeps the modification time and the version.
    let c = tmp.path().join("c.db");
    ok(&["copy", s(&a), s(&c)]);
    let direct = all(&open(&c));
    for w in &want {
        let g = &direct[&w.id];
        assert_eq!(g.modified(), Some(hour_ago), "idle clock of {:?}", w.id);
        assert_eq!(g.version(), 5, "version of {:?}", w.id);
    }

    // An id live at the destination is skipped and kept, then replaced
    // with --overwrite.
    let mut changed = want[1].clone();
    changed.data = b"changed at the destination".to_vec();
    back.save_session(&mut changed).expect("save");
    drop(back);
    let out = ok(&["copy", s(&a), s(&b)]);
    assert_eq!(
        out.trim(),
        "copied 0 sessions; skipped 300 (already live at the destination, kept); 0 expired"
    );
    assert_eq!(
        all(&open(&b))[&want[1].id].data,
        b"changed at the destination".to_vec()
    );
    let out = ok(&["copy", "--overwrite", s(&a), s(&b)]);
    assert_eq!(
        out.trim(),
        "copied 300 sessions; skipped 0 (already live at the destination); 0 expired"
    );
    same_sessions(&all(&open(&b)), &want, "after --overwrite");
}

#[test]
fn missing_source_and_misplaced_names_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("nope.db");
    let b = tmp.path().join("b.db");
    let out = sessionlog(&["copy", s(&a), s(&b)]);
    assert!(!out.status.success());
    assert!(
        !b.exists(),
        "no destination is created for a missing source"
    );
    let out = sessionlog(&["copy", "--table", "t", s(&a), s(&b)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--table"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Owners go through `copy_sessions` (here between MemoryStores, the one
/// backend on main that stores them; the LogStore and the server stores
/// do not yet).
#[test]
fn owners_are_copied() {
    use sessionlog::{CopyOptions, MemoryStore, Owner, copy_sessions};
    let (from, to) = (MemoryStore::new(), MemoryStore::new());
    let base = SystemTime::now();
    let mut want = Vec::new();
    for i in 0..200 {
        let mut s = nth(i, base);
        if !i.is_multiple_of(3) {
            s.owner = Some(Owner::new(format!("user-{}", i % 10)).expect("owner"));
        }
        from.save_session(&mut s.clone()).expect("save");
        want.push(s);
    }
    let mut seen = 0;
    let report =
        copy_sessions(&from, &to, &mut CopyOptions::new().progress(|_| seen += 1)).expect("copy");
    assert_eq!((report.copied, report.skipped, report.expired), (200, 0, 0));
    assert_eq!(seen, 200, "the progress callback runs once a session");
    let got = all(&to);
    same_sessions(&got, &want, "in the destination");
    for w in &want {
        assert_eq!(got[&w.id].owner, w.owner, "owner of {:?}", w.id);
    }
    let owner = Owner::new("user-4").expect("owner");
    let expected = want
        .iter()
        .filter(|w| w.owner.as_ref() == Some(&owner))
        .count();
    assert_eq!(to.sessions_of(&owner).expect("sessions_of").len(), expected);
}

/// Between two `HashedIds` stores, sessions keep their stored ids (not
/// hashed twice): a session saved under its cookie's id loads by that id
/// from the destination.
#[test]
fn hashed_stores_copy_stored_ids_as_they_are() {
    use sessionlog::{CopyOptions, HashedIds, MemoryStore, copy_sessions};
    let (from, to) = (
        HashedIds::new(MemoryStore::new()),
        HashedIds::new(MemoryStore::new()),
    );
    let base = SystemTime::now();
    let want: Vec<Session> = (0..50).map(|i| nth(i, base)).collect();
    for w in &want {
        from.save_session(&mut w.clone()).expect("save");
    }
    let report = copy_sessions(&from, &to, &mut CopyOptions::new()).expect("copy");
    assert_eq!(report.copied, 50);
    for w in &want {
        let got = to.load_session(&w.id).expect("load").expect("copied");
        assert_eq!(got.data, w.data);
    }
}

#[cfg(all(feature = "postgres", feature = "redis"))]
#[path = "common/server_check.rs"]
mod server_check;

#[cfg(all(feature = "postgres", feature = "redis"))]
mod servers {
    use super::*;
    use sessionlog::{PostgresStore, RedisStore};

    fn raw_postgres_url() -> String {
        std::env::var("SESSIONLOG_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".to_owned())
    }

    fn raw_redis_url() -> String {
        std::env::var("SESSIONLOG_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".to_owned())
    }

    /// Once per process: both servers answer, or the process says how to
    /// start them and the calling test fails (cli/tests/common/server_check.rs,
    /// the library's tests' file).
    fn require_servers(name: &str) {
        use super::server_check::{Server, require};
        require(name, || {
            vec![
                Server {
                    name: "PostgreSQL",
                    var: "SESSIONLOG_POSTGRES_URL",
                    url: raw_postgres_url(),
                    default_port: 5432,
                },
                Server {
                    name: "Redis",
                    var: "SESSIONLOG_REDIS_URL",
                    url: raw_redis_url(),
                    default_port: 6379,
                },
            ]
        });
    }

    fn postgres_url() -> String {
        require_servers("PostgreSQL");
        raw_postgres_url()
    }

    fn redis_url() -> String {
        require_servers("Redis");
        raw_redis_url()
    }

    /// A table and key prefix no other run uses, emptied on drop.
    struct Names {
        table: String,
        prefix: String,
    }

    impl Names {
        fn new(stem: &str) -> Names {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!("{stem}_{}_{nanos}", std::process::id());
            Names {
                table: name.clone(),
                prefix: name,
            }
        }

        fn postgres(&self) -> PostgresStore {
            PostgresStore::options(&postgres_url())
                .table(&self.table)
                .open()
                .expect("PostgreSQL (start it with `bash .ci/servers.sh`)")
        }

        fn redis(&self) -> RedisStore {
            RedisStore::options(&redis_url())
                .key_prefix(&self.prefix)
                .open()
                .expect("Redis (start it with `bash .ci/servers.sh`)")
        }
    }

    impl Drop for Names {
        fn drop(&mut self) {
            if let Ok(pg) = PostgresStore::options(&postgres_url())
                .table(&self.table)
                .open()
            {
                let _ = pg.delete_old_sessions(Duration::ZERO);
            }
            let _ = Command::new("psql")
                .args([
                    &postgres_url(),
                    "-qc",
                    &format!("DROP TABLE IF EXISTS {}", self.table),
                ])
                .output();
            if let Ok(r) = RedisStore::options(&redis_url())
                .key_prefix(&self.prefix)
                .open()
            {
                let _ = r.delete_old_sessions(Duration::ZERO);
            }
        }
    }

    fn count() -> usize {
        std::env::var("SESSIONLOG_COPY_SESSIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000)
    }

    #[test]
    fn log_to_postgres_to_redis_to_log() {
        let n = count();
        let names = Names::new("copy_chain");
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a.db"), tmp.path().join("b.db"));
        let base = SystemTime::now();
        let want: Vec<Session> = (0..n).map(|i| nth(i, base)).collect();
        let source = open(&a);
        for w in &want {
            source.save_session(&mut w.clone()).expect("save");
        }
        drop(source);

        let pg = postgres_url();
        let redis = redis_url();
        let (t, p) = (names.table.as_str(), names.prefix.as_str());
        let summary = format!(
            "copied {n} sessions; skipped 0 (already live at the destination, kept); 0 expired"
        );
        assert_eq!(ok(&["copy", "--table", t, s(&a), &pg]).trim(), summary);
        same_sessions(&all(&names.postgres()), &want, "in PostgreSQL");
        assert_eq!(
            ok(&["copy", "--table", t, "--key-prefix", p, &pg, &redis]).trim(),
            summary
        );
        same_sessions(&all(&names.redis()), &want, "in Redis");
        assert_eq!(
            ok(&["copy", "--key-prefix", p, &redis, s(&b)]).trim(),
            summary
        );
        same_sessions(&all(&open(&b)), &want, "back in a LogStore");
    }
}
