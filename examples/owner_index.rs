//! Measures what owners cost a `LogStore` (issue 28): saves with an owner
//! against saves without, `sessions_of` for an owner of 10 in a large
//! store, and the index's heap bytes a session with and without owners.
//!
//! `cargo run --release --example owner_index -- [SESSIONS]` (default
//! 1,000,000); it writes two stores of that size in a temporary directory
//! (about 150 bytes a session each) and removes them.

use std::time::Instant;

use sessionlog::{LogStore, Owner, Session, SessionId, SessionStore, SyncPolicy};

fn open(path: &std::path::Path) -> LogStore {
    LogStore::options()
        .sync(SyncPolicy::Never)
        .background(false)
        .open(path)
        .expect("open")
}

/// Saves `n` sessions (owners of 10 each if `owned`); returns saves a second
/// and the index's heap bytes a session.
fn fill(store: &LogStore, n: usize, owned: bool) -> (f64, f64) {
    let data = vec![0x5a; 64];
    let t = Instant::now();
    for i in 0..n {
        let mut s = Session::new(
            SessionId::new(format!("sess-{i:012}")).expect("id"),
            data.clone(),
        );
        if owned {
            s.owner = Some(Owner::new(format!("user-{}", i / 10)).expect("owner"));
        }
        store.save_session(&mut s).expect("save");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let bytes = store.stats().expect("stats").index_bytes as f64 / n as f64;
    (rate, bytes)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a number of sessions"));
    let dir = tempfile::tempdir().expect("temp dir");
    let plain = open(&dir.path().join("plain.db"));
    let (plain_rate, plain_bytes) = fill(&plain, n, false);
    drop(plain);
    let owned = open(&dir.path().join("owned.db"));
    let (owned_rate, owned_bytes) = fill(&owned, n, true);
    println!("sessions: {n}");
    println!("saves/s without owner: {plain_rate:.0}");
    println!(
        "saves/s with owner:    {owned_rate:.0} ({:.2}x)",
        owned_rate / plain_rate
    );
    println!("index heap bytes/session without owners: {plain_bytes:.1}");
    println!("index heap bytes/session with owners:    {owned_bytes:.1}");
    // sessions_of for 1,000 owners of 10 spread over the store.
    let owners: Vec<Owner> = (0..1000)
        .map(|k| Owner::new(format!("user-{}", k * (n / 10 / 1000).max(1))).expect("owner"))
        .collect();
    let mut listed = 0;
    let t = Instant::now();
    for _ in 0..10 {
        for o in &owners {
            listed += owned.sessions_of(o).expect("sessions_of").len();
        }
    }
    let per = t.elapsed().as_secs_f64() / (10.0 * owners.len() as f64);
    assert_eq!(listed, 10 * 10 * owners.len(), "each owner has 10");
    println!("sessions_of (owner of 10): {:.2} us", per * 1e6);
}
