//! Measures what owners cost a `LogStore` (issue 28): saves of new
//! sessions with an owner against the same saves without, the index's heap
//! bytes a session with and without owners, and `sessions_of` for owners
//! of 10 sessions in a large store.
//!
//! The two stores are filled in turns of 10,000 saves each (the same ids,
//! in the same order), each turn timed, so that a busy spell of the machine
//! falls on both alike; `sessionlog bench` (its `save, owner` phases) and
//! `benches/peers` (`sl-owner`) measure the same ratio phase by phase.
//!
//! `cargo run --release -p sessionlog-examples --example owner_index --
//! [SESSIONS]` (default 1,000,000); it writes two stores of that size in a
//! temporary directory (about 170 bytes a session each) and removes them.
//!
//! Ids are 32 random hex characters, as a web application's. Session `i`
//! belongs to owner `i % (SESSIONS / 10)`, so that each owner's 10
//! sessions were saved far apart and lie in 10 different places of the
//! log, as a user's logins on several devices do. `sessions_of` is timed
//! once for each of 10,000 distinct owners spread over the store, each call
//! on its own: no owner is asked twice, so nothing it reads was brought
//! into the cache by an earlier call for it.

use std::time::Instant;

use sessionlog::{LogStore, Owner, Session, SessionId, SessionStore, SyncPolicy};

/// Sessions a user has.
const PER_OWNER: usize = 10;
/// Owners whose sessions are listed.
const QUERIES: usize = 10_000;

fn open(path: &std::path::Path) -> LogStore {
    LogStore::options()
        .sync(SyncPolicy::Never)
        .background(false)
        .open(path)
        .expect("open")
}

/// `n` ids of 32 hex characters from a fixed sequence (splitmix64).
fn ids(n: usize) -> Vec<SessionId> {
    let mut state = 0x5e55_1014_0000_0028_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| SessionId::new(format!("{:016x}{:016x}", next(), next())).expect("id"))
        .collect()
}

fn owner(k: usize) -> Owner {
    Owner::new(format!("user-{k}")).expect("owner")
}

/// Saves per turn of `fill`.
const TURN: usize = 10_000;

/// Saves every id into `plain` without an owner and into `owned` with one
/// (owners of `PER_OWNER`, cloned from a list as `sessionlog bench` does),
/// in alternating turns; returns the seconds each store's saves took.
fn fill(plain: &LogStore, owned: &LogStore, ids: &[SessionId]) -> (f64, f64) {
    let data = vec![0x5a; 64];
    let owners: Vec<Owner> = (0..(ids.len() / PER_OWNER).max(1)).map(owner).collect();
    let mut secs = [0.0; 2];
    for start in (0..ids.len()).step_by(TURN) {
        let end = (start + TURN).min(ids.len());
        for (k, store) in [plain, owned].into_iter().enumerate() {
            let t = Instant::now();
            for (i, id) in ids.iter().enumerate().take(end).skip(start) {
                let mut s = Session::new(id.clone(), data.clone());
                if k == 1 {
                    s.owner = Some(owners[i % owners.len()].clone());
                }
                store.save_session(&mut s).expect("save");
            }
            secs[k] += t.elapsed().as_secs_f64();
        }
    }
    (secs[0], secs[1])
}

fn bytes_a_session(store: &LogStore, n: usize) -> f64 {
    store.stats().expect("stats").index_bytes as f64 / n as f64
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a number of sessions"));
    assert!(n >= PER_OWNER, "at least {PER_OWNER} sessions");
    let ids = ids(n);
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = open(&dir.path().join("plain.db"));
    let owned = open(&dir.path().join("owned.db"));
    let (plain_secs, owned_secs) = fill(&plain, &owned, &ids);
    let (plain_bytes, owned_bytes) = (bytes_a_session(&plain, n), bytes_a_session(&owned, n));
    drop(plain);
    println!("sessions: {n}, {PER_OWNER} an owner");
    println!("saves/s without owner: {:.0}", n as f64 / plain_secs);
    println!(
        "saves/s with owner:    {:.0} ({:.2}x)",
        n as f64 / owned_secs,
        plain_secs / owned_secs
    );
    println!("index heap bytes/session without owners: {plain_bytes:.1}");
    println!("index heap bytes/session with owners:    {owned_bytes:.1}");
    println!(
        "owner index heap bytes/session:          {:.1}",
        owned_bytes - plain_bytes
    );

    // Distinct owners spread evenly over all of them, each listed once.
    let owners = n / PER_OWNER;
    let asked: Vec<Owner> = (0..QUERIES.min(owners))
        .map(|q| owner(q * owners / QUERIES.min(owners)))
        .collect();
    let mut lat = Vec::with_capacity(asked.len());
    let t = Instant::now();
    for o in &asked {
        let t0 = Instant::now();
        let listed = owned.sessions_of(o).expect("sessions_of");
        lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        assert_eq!(listed.len(), PER_OWNER, "{o:?} has {PER_OWNER} sessions");
    }
    let mean = t.elapsed().as_secs_f64() / asked.len() as f64;
    lat.sort_unstable();
    let pct = |p: usize| micros(lat[(lat.len() * p / 100).min(lat.len() - 1)]);
    println!(
        "sessions_of (owner of {PER_OWNER}, {} distinct owners, each once): \
         mean {:.2} us, p50 {:.2} us, p99 {:.2} us, max {:.2} us",
        asked.len(),
        mean * 1e6,
        pct(50),
        pct(99),
        micros(lat[lat.len() - 1]),
    );
}
