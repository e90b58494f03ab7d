//! Guards LogStore across processes: several real processes (this test
//! binary re-run as children) save, conditionally save, load and compact
//! one store at once; every process sees the others' completed saves, no
//! conditional save wins twice on one version, and nothing acknowledged is
//! lost across compactions.

#[macro_use]
mod common;
use common::id;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use common::child::{self, Reader};
use sessionlog::{LogStore, Session, SessionStore, SyncPolicy};

fn store_path() -> PathBuf {
    PathBuf::from(std::env::var("STORE").expect("STORE set for children"))
}

fn open(path: &Path) -> LogStore {
    LogStore::options()
        .sync(SyncPolicy::Never)
        .background(false)
        .open(path)
        .expect("open store")
}

/// Increments the counter session through conditional saves; returns the
/// version this process won.
fn increment(store: &LogStore) -> u64 {
    loop {
        let cid = id("counter");
        let mut c = store
            .load_session(&cid)
            .expect("load counter")
            .unwrap_or_else(|| Session::new(cid, 0u64.to_le_bytes().to_vec()));
        let n = u64::from_le_bytes(c.data[..8].try_into().expect("8 bytes"));
        c.data = (n + 1).to_le_bytes().to_vec();
        match store.save_session_if_unchanged(&mut c) {
            Ok(()) => return c.version(),
            Err(e) if e.is_conflict() => continue,
            Err(e) => panic!("counter: {e}"),
        }
    }
}

const WRITERS: u64 = 4;
const ROUNDS: u64 = 400;

fn writer(k: u64) {
    let store = open(&store_path());
    for i in 0..ROUNDS {
        let own = format!("w{k}-{}", i % 10);
        let mut s = Session::new(
            id(&own),
            child::versioned_data(&own, i, 200 + (i as usize % 5) * 300),
        );
        store.save_session(&mut s).expect("save own");
        let shared = format!("shared-{}", i % 3);
        let mut s = Session::new(
            id(&shared),
            child::versioned_data(&shared, k * 1000 + i, 700),
        );
        store.save_session(&mut s).expect("save shared");
        let won = increment(&store);
        println!("WON {won}");
        if i % 7 == 0 {
            store.touch_session(&id(&own)).expect("touch");
        }
    }
    println!("DONE");
}

fn compactor() {
    let path = store_path();
    let store = open(&path);
    let stop = path.with_extension("stop");
    let mut n = 0;
    while !stop.exists() {
        store.compact().expect("compact");
        n += 1;
    }
    println!("COMPACTIONS {n}");
}

fn reader() {
    let path = store_path();
    let store = open(&path);
    let stop = path.with_extension("stop");
    let mut last_counter = 0;
    let mut reads = 0u64;
    while !stop.exists() {
        if let Some(c) = store.load_session(&id("counter")).expect("load counter") {
            assert!(
                c.version() >= last_counter,
                "counter went back from {last_counter} to {}",
                c.version()
            );
            let n = u64::from_le_bytes(c.data[..8].try_into().expect("8 bytes"));
            assert_eq!(n, c.version(), "counter value matches its version");
            last_counter = c.version();
        }
        for j in 0..3 {
            let sid = format!("shared-{j}");
            if let Some(s) = store.load_session(&id(&sid)).expect("load shared") {
                let text = String::from_utf8_lossy(&s.data[..20.min(s.data.len())]).to_string();
                let v: u64 = text
                    .split(':')
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .expect("tagged data");
                assert_eq!(
                    s.data,
                    child::versioned_data(&sid, v, 700),
                    "torn shared session"
                );
            }
        }
        reads += 1;
    }
    println!("READS {reads}");
}

#[test]
fn processes_share_one_store_while_another_compacts() {
    match child::role().as_deref() {
        Some(r) if r.starts_with("writer") => return writer(r[6..].parse().expect("k")),
        Some("compactor") => return compactor(),
        Some("reader") => return reader(),
        Some(other) => panic!("unknown role {other}"),
        None => {}
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    drop(open(&path));
    let vars = [("STORE", path.display().to_string())];
    let test = "processes_share_one_store_while_another_compacts";
    let mut compactor = child::spawn(test, "compactor", &vars);
    let mut reader = child::spawn(test, "reader", &vars);
    let mut writers: Vec<_> = (0..WRITERS)
        .map(|k| child::spawn(test, &format!("writer{k}"), &vars))
        .collect();
    let mut won = Vec::new();
    for w in &mut writers {
        let mut r = Reader::new(w);
        let mut done = false;
        while let Some(line) = r.next() {
            if let Some(v) = line.strip_prefix("WON ") {
                won.push(v.parse::<u64>().expect("version"));
            } else if line == "DONE" {
                done = true;
            }
        }
        assert!(w.wait().expect("wait").success(), "writer failed");
        assert!(done, "writer finished its rounds");
    }
    std::fs::write(path.with_extension("stop"), b"").expect("stop file");
    let mut compactions = 0;
    for (c, what) in [(&mut compactor, "COMPACTIONS "), (&mut reader, "READS ")] {
        let mut r = Reader::new(c);
        while let Some(line) = r.next() {
            if let Some(n) = line.strip_prefix(what)
                && what == "COMPACTIONS "
            {
                compactions = n.parse::<u64>().expect("count");
            }
        }
        assert!(c.wait().expect("wait").success(), "{what}process failed");
    }
    assert!(compactions > 0, "compaction ran while writers wrote");

    // No conditional save won twice on one version, and none was lost.
    let total = WRITERS * ROUNDS;
    let distinct: BTreeSet<u64> = won.iter().copied().collect();
    assert_eq!(
        distinct.len() as u64,
        total,
        "two processes won the same version"
    );
    assert_eq!(distinct, (1..=total).collect());

    let store = open(&path);
    let c = store
        .load_session(&id("counter"))
        .expect("load")
        .expect("counter");
    assert_eq!(
        u64::from_le_bytes(c.data[..8].try_into().expect("8")),
        total
    );
    for k in 0..WRITERS {
        for j in 0..10u64 {
            let own = format!("w{k}-{j}");
            let last = (0..ROUNDS)
                .filter(|i| i % 10 == j)
                .max()
                .expect("some round");
            let s = store
                .load_session(&id(&own))
                .expect("load")
                .expect("present");
            assert_eq!(
                s.data,
                child::versioned_data(&own, last, 200 + (last as usize % 5) * 300),
                "{own}"
            );
            assert_eq!(s.version(), ROUNDS / 10, "{own}");
        }
    }
}

/// One process saves, another loads at once after being told: the load
/// must see the save, across compactions too.
#[test]
fn a_load_sees_every_save_completed_in_another_process() {
    if child::role().as_deref() == Some("echo") {
        let store = open(&store_path());
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).expect("stdin") > 0 {
            let i: u64 = line.trim().parse().expect("round");
            line.clear();
            let s = store
                .load_session(&id("pp"))
                .expect("load")
                .expect("present");
            assert_eq!(s.data, i.to_le_bytes(), "stale read in round {i}");
            let mut reply = Session::new(id("back"), i.to_le_bytes().to_vec());
            store.save_session(&mut reply).expect("save reply");
            println!("OK {i}");
        }
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s.db");
    let store = open(&path);
    let mut child = child::spawn(
        "a_load_sees_every_save_completed_in_another_process",
        "echo",
        &[("STORE", path.display().to_string())],
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let mut r = Reader::new(&mut child);
    let mut seen = HashMap::new();
    for i in 0..300u64 {
        store
            .save_session(&mut Session::new(id("pp"), i.to_le_bytes().to_vec()))
            .expect("save");
        if i % 40 == 0 {
            store.compact().expect("compact");
        }
        writeln!(stdin, "{i}").expect("tell child");
        stdin.flush().expect("flush");
        assert_eq!(r.next().as_deref(), Some(format!("OK {i}").as_str()));
        let back = store
            .load_session(&id("back"))
            .expect("load")
            .expect("child's save");
        assert_eq!(back.data, i.to_le_bytes(), "parent saw the child's save");
        seen.insert(i, back.version());
    }
    drop(stdin);
    assert!(child.wait().expect("wait").success());
    assert_eq!(seen[&299], 300);
}
