//! Guards issue 28 (sessions that know their user) on the server stores
//! (PostgresStore, MySqlStore, RedisStore), beyond the conformance suite:
//! - `setup` adds the owner column to a table an earlier version created,
//!   and its sessions survive (PostgreSQL, MySQL);
//! - owners are kept, moved and cleared by saves, loaded and listed back;
//!   `delete_sessions_of` keeps the one asked, `erase_sessions_of` removes
//!   the rows (the owner's rows are gone from the table);
//! - `max_sessions_per_owner` holds under concurrent logins from two
//!   stores (two pools, as two processes would), the newest login wins;
//! - `delete_sessions_of` racing a stream of saves for the same owner takes
//!   effect at one moment: what survives is exactly the saves after it;
//! - Redis: the per-owner index loses the entries of expired and deleted
//!   sessions on the way and never outgrows what the owner has.
//!
//! The servers must be running (`bash .ci/servers.sh`); an unreachable one
//! fails these tests, it never skips them.
#![cfg(any(feature = "postgres", feature = "mysql", feature = "redis"))]

#[macro_use]
mod common;
use common::id;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::conformance::{Backend, Config};
use sessionlog::{Clock, ClockOffset, Owner, Session, SessionStore};

fn owner(s: &str) -> Owner {
    Owner::new(s).expect("valid owner")
}

fn save_as<S: SessionStore>(store: &S, name: &str, who: Option<&Owner>) -> Session {
    let mut s = Session::new(id(name), name.as_bytes().to_vec());
    s.owner = who.cloned();
    store.save_session(&mut s).expect("save");
    s
}

fn ids_of<S: SessionStore>(store: &S, who: &Owner) -> Vec<String> {
    store
        .sessions_of(who)
        .expect("sessions_of")
        .into_iter()
        .map(|i| i.id.as_str().to_owned())
        .collect()
}

/// Saves, moves, clears, lists, deletes and erases owners' sessions.
/// `hashed`: the store is wrapped in `HashedIds`, which loads the owner's
/// digest.
fn owners_are_kept_moved_listed_and_deleted<B: Backend>(hashed: bool) {
    let n = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|x| B::listed_id(&id(x)).as_str().to_owned())
            .collect()
    };
    let cfg = Config::default();
    let loc = B::new_location();
    let store = loc.open(&cfg);
    store.setup().expect("setup");
    let (alice, bob) = (owner("alice@example.com"), owner("bob"));
    for name in ["a1", "a2", "a3"] {
        save_as(&store, name, Some(&alice));
        loc.advance(&cfg, Duration::from_millis(5));
    }
    save_as(&store, "b1", Some(&bob));
    save_as(&store, "none", None);
    let mut short = Session::new(id("a-short"), b"x".to_vec()).with_owner(alice.clone());
    short.expires = Some(cfg.clock.now() + Duration::from_secs(1));
    store.save_session(&mut short).expect("save");

    let loaded = store.load_session(&id("a1")).expect("load").expect("there");
    let stored = if hashed {
        sessionlog::HashedIds::<()>::stored_owner(&alice)
    } else {
        alice.clone()
    };
    assert_eq!(loaded.owner.as_ref(), Some(&stored), "the owner loads back");
    let listed = store.sessions_of(&alice).expect("list");
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[3].size, 2);
    assert_eq!(listed[3].version, 1);
    assert_eq!(listed[3].owner.as_ref(), Some(&alice));
    let all: Vec<Session> = store
        .iter_sessions()
        .expect("iter")
        .collect::<sessionlog::Result<_>>()
        .expect("iter");
    let b1 = all
        .iter()
        .find(|s| s.id == B::listed_id(&id("b1")))
        .expect("b1");
    let bob_stored = if hashed {
        sessionlog::HashedIds::<()>::stored_owner(&bob)
    } else {
        bob.clone()
    };
    assert_eq!(
        b1.owner.as_ref(),
        Some(&bob_stored),
        "iter_sessions has owners"
    );

    loc.advance(&cfg, Duration::from_secs(2));
    assert_eq!(
        ids_of(&store, &alice),
        n(&["a3", "a2", "a1"]),
        "expired ones never listed, newest first"
    );

    // A login as someone else moves the session; a save without clears it.
    save_as(&store, "a3", Some(&bob));
    save_as(&store, "a2", None);
    assert_eq!(ids_of(&store, &alice), n(&["a1"]));
    assert_eq!(ids_of(&store, &bob), n(&["a3", "b1"]));

    assert_eq!(
        store
            .delete_sessions_of(&bob, Some(&id("b1")))
            .expect("delete"),
        1
    );
    assert_eq!(ids_of(&store, &bob), n(&["b1"]));
    assert!(store.has_session(&id("a2")).expect("has"), "not bob's");
    assert_eq!(store.erase_sessions_of(&alice).expect("erase"), 1);
    assert!(store.load_session(&id("a1")).expect("load").is_none());
    assert!(ids_of(&store, &alice).is_empty());
    assert_eq!(store.erase_sessions_of(&alice).expect("again"), 0);
    assert!(store.has_session(&id("none")).expect("has"));
}

/// `max_sessions_per_owner(3)`: a fourth login deletes the oldest; logins
/// racing from two stores never leave more than three.
fn the_cap_holds_under_concurrent_logins<B: Backend>(
    open_capped: fn(&B, usize, &ClockOffset) -> B::Store,
) {
    let loc = B::new_location();
    let clock = ClockOffset::new();
    let store = open_capped(&loc, 3, &clock);
    store.setup().expect("setup");
    let alice = owner("alice");
    for name in ["d1", "d2", "d3", "d4"] {
        save_as(&store, name, Some(&alice));
        clock.advance(Duration::from_millis(5));
    }
    save_as(&store, "other", Some(&owner("bob")));
    assert_eq!(ids_of(&store, &alice), ["d4", "d3", "d2"], "newest win");
    assert!(!store.has_session(&id("d1")).expect("has"));
    // Saving a session already counted deletes nothing.
    save_as(&store, "d2", Some(&alice));
    assert_eq!(ids_of(&store, &alice).len(), 3);

    let stores = Arc::new([open_capped(&loc, 3, &clock), open_capped(&loc, 3, &clock)]);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (stores, barrier, alice) =
                (Arc::clone(&stores), Arc::clone(&barrier), alice.clone());
            thread::spawn(move || {
                barrier.wait();
                for i in 0..10 {
                    save_as(&stores[t % 2], &format!("login-{t}-{i}"), Some(&alice));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let live_of_alice = store
        .iter_sessions()
        .expect("iter")
        .filter(|s| s.as_ref().expect("session").owner.as_ref() == Some(&alice))
        .count();
    assert_eq!(live_of_alice, 3, "never more than the cap");
    assert_eq!(ids_of(&store, &alice).len(), 3);
    assert!(store.has_session(&id("other")).expect("bob untouched"));
}

/// A stream of saves for one owner and one `delete_sessions_of` in the
/// middle: the survivors are exactly a suffix of the stream, and the count
/// is the number of those before it.
fn delete_of_racing_saves_takes_effect_at_one_moment<B: Backend>() {
    let cfg = Config::default();
    let loc = B::new_location();
    let store = Arc::new(loc.open(&cfg));
    store.setup().expect("setup");
    let alice = owner("alice");
    const N: usize = 200;
    let barrier = Arc::new(Barrier::new(2));
    let saver = {
        let (store, barrier, alice) = (Arc::clone(&store), Arc::clone(&barrier), alice.clone());
        thread::spawn(move || {
            for i in 0..N {
                if i == N / 4 {
                    barrier.wait(); // the delete starts with saves still to come
                }
                save_as(&*store, &format!("s{i:04}"), Some(&alice));
            }
        })
    };
    barrier.wait();
    let deleted = store.delete_sessions_of(&alice, None).expect("delete");
    saver.join().expect("saver");
    let alive: Vec<bool> = (0..N)
        .map(|i| store.has_session(&id(&format!("s{i:04}"))).expect("has"))
        .collect();
    let first_alive = alive.iter().position(|&a| a).unwrap_or(N);
    assert!(
        alive[first_alive..].iter().all(|&a| a),
        "survivors are a suffix of the saves: {alive:?}"
    );
    assert_eq!(deleted, first_alive, "the count is what was deleted");
    assert!(deleted >= N / 4, "every save before the call is gone");
    assert_eq!(ids_of(&*store, &alice).len(), N - deleted);
}

macro_rules! owner_tests {
    ($feature:literal, $m:ident, $backend:ty, $capped:expr) => {
        #[cfg(feature = $feature)]
        mod $m {
            use super::*;

            #[test]
            fn owners_are_kept_moved_listed_and_deleted() {
                super::owners_are_kept_moved_listed_and_deleted::<$backend>(false);
            }

            #[test]
            fn hashed_owners_are_kept_moved_listed_and_deleted() {
                super::owners_are_kept_moved_listed_and_deleted::<
                    common::conformance::Hashed<$backend>,
                >(true);
            }

            #[test]
            fn the_cap_holds_under_concurrent_logins() {
                super::the_cap_holds_under_concurrent_logins::<$backend>($capped);
            }

            #[test]
            fn delete_of_racing_saves_takes_effect_at_one_moment() {
                super::delete_of_racing_saves_takes_effect_at_one_moment::<$backend>();
            }
        }
    };
}

owner_tests!(
    "postgres",
    postgres,
    common::servers::Postgres,
    |loc: &common::servers::Postgres, n, clock: &ClockOffset| {
        sessionlog::PostgresStore::options(&common::servers::postgres_url())
            .table(&loc.table)
            .max_sessions_per_owner(n)
            .clock_offset(clock.clone())
            .open()
            .expect("open")
    }
);
owner_tests!(
    "mysql",
    mysql,
    common::servers::MySql,
    |loc: &common::servers::MySql, n, clock: &ClockOffset| {
        sessionlog::MySqlStore::options(&common::servers::mysql_url())
            .table(&loc.table)
            .max_sessions_per_owner(n)
            .clock_offset(clock.clone())
            .open()
            .expect("open")
    }
);
owner_tests!(
    "redis",
    redis,
    common::servers::Redis,
    |loc: &common::servers::Redis, n, clock: &ClockOffset| {
        sessionlog::RedisStore::options(&common::servers::redis_url())
            .key_prefix(&loc.prefix)
            .max_sessions_per_owner(n)
            .clock_offset(clock.clone())
            .open()
            .expect("open")
    }
);

/// A table as created before owners existed, with one session in it.
#[cfg(feature = "postgres")]
#[test]
fn postgres_setup_adds_the_owner_column_and_keeps_sessions() {
    use common::servers::{Postgres, pg_batch, pg_query_i64};
    let loc = Postgres::new_location();
    let t = &loc.table;
    pg_batch(&format!(
        "CREATE TABLE {t} (id text COLLATE \"C\" PRIMARY KEY, data bytea NOT NULL, \
         expires bigint NOT NULL DEFAULT 0, modified bigint NOT NULL, version bigint NOT NULL); \
         CREATE INDEX {t}_modified_idx ON {t} (modified); \
         INSERT INTO {t} VALUES ('old-session', '\\x6f6c64', 0, \
         floor(extract(epoch from now()) * 1000)::bigint, 7);"
    ))
    .expect("old table");
    let store = loc.open(&Config::default());
    store.setup().expect("setup");
    store.setup().expect("setup is idempotent");
    old_session_survives_and_owners_work(&store);
    let idx = pg_query_i64(&format!(
        "SELECT count(*) FROM pg_indexes WHERE tablename = '{t}' AND indexdef LIKE '%(owner, modified)%'"
    ))
    .expect("query");
    assert_eq!(idx, 1, "the owner index exists");
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_setup_adds_the_owner_column_and_keeps_sessions() {
    use ::mysql::prelude::Queryable;
    let loc = common::servers::MySql::new_location();
    let t = &loc.table;
    let mut c =
        ::mysql::Conn::new(::mysql::Opts::from_url(&common::servers::mysql_url()).expect("url"))
            .expect("connect");
    c.query_drop(format!(
        "CREATE TABLE {t} (id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY, \
         data LONGBLOB NOT NULL, expires BIGINT NOT NULL DEFAULT 0, modified BIGINT NOT NULL, \
         version BIGINT NOT NULL, INDEX {t}_modified (modified), INDEX {t}_expires (expires)) ENGINE=InnoDB"
    ))
    .expect("old table");
    c.query_drop(format!(
        "INSERT INTO {t} VALUES ('old-session', 'old', 0, \
         CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED), 7)"
    ))
    .expect("old row");
    let store = loc.open(&Config::default());
    store.setup().expect("setup");
    store.setup().expect("setup is idempotent");
    old_session_survives_and_owners_work(&store);
    let idx: Option<i64> = c
        .query_first(format!(
            "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = '{t}' AND index_name = '{t}_owner'"
        ))
        .expect("query");
    assert!(idx.unwrap_or(0) >= 1, "the owner index exists");
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn old_session_survives_and_owners_work<S: SessionStore>(store: &S) {
    let old = store
        .load_session(&id("old-session"))
        .expect("load")
        .expect("the old session survives setup");
    assert_eq!(old.data, b"old");
    assert_eq!(old.version(), 7);
    assert_eq!(old.owner, None);
    let alice = owner("alice");
    let mut s = old.clone();
    s.owner = Some(alice.clone());
    store.save_session(&mut s).expect("save with an owner");
    assert_eq!(s.version(), 8);
    assert_eq!(ids_of(store, &alice), ["old-session"]);
    assert_eq!(store.delete_sessions_of(&alice, None).expect("delete"), 1);
}

/// The owner's index in Redis keeps only what the owner has: entries of
/// expired sessions go with the owner's next save, deleted ones at once,
/// and an index whose sessions all have deadlines expires by itself.
#[cfg(feature = "redis")]
#[test]
fn redis_owner_index_never_outgrows_the_owner() {
    let cfg = Config::default();
    let loc = common::servers::Redis::new_location();
    let store = loc.open(&cfg);
    let alice = owner("alice");
    let key = format!("{{{}}}:o:alice", loc.prefix);
    let mut conn = ::redis::Client::open(common::servers::redis_url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to the test Redis");
    let card = |conn: &mut ::redis::Connection| -> usize {
        ::redis::cmd("ZCARD").arg(&key).query(conn).expect("ZCARD")
    };
    let now = cfg.clock.now();
    for i in 0..10 {
        let mut s = Session::new(id(&format!("short{i}")), b"x".to_vec()).with_owner(alice.clone());
        s.expires = Some(now + Duration::from_secs(1));
        store.save_session(&mut s).expect("save");
    }
    assert_eq!(card(&mut conn), 10);
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query(&mut conn)
        .expect("PTTL");
    assert!(
        pttl > 0,
        "an index of sessions with deadlines expires: {pttl}"
    );
    loc.advance(&cfg, Duration::from_secs(2));
    save_as(&store, "fresh", Some(&alice));
    assert_eq!(card(&mut conn), 1, "the next save dropped the dead entries");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query(&mut conn)
        .expect("PTTL");
    assert_eq!(pttl, -1, "a session without a deadline keeps the index");
    // A session that moves to another owner leaves this index.
    save_as(&store, "fresh", Some(&owner("bob")));
    assert_eq!(card(&mut conn), 0);
    save_as(&store, "fresh", Some(&alice));
    assert!(store.delete_session(&id("fresh")).expect("delete"));
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(&key)
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(exists, 0, "deleting the last session removes the index");
    // An id entered behind the store's back is dropped when listed.
    let _: () = ::redis::cmd("ZADD")
        .arg(&key)
        .arg(1)
        .arg("ghost")
        .query(&mut conn)
        .expect("ZADD");
    assert!(ids_of(&store, &alice).is_empty());
    assert_eq!(card(&mut conn), 0);
}
