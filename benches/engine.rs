#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
//! Criterion benchmarks of sessionlog's own stores on the session workload
//! of issue 5, at sizes small enough for `cargo bench --bench engine` to
//! finish in a few minutes. The comparison with other engines lives in
//! `benches/peers/`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sessionlog::{DirStore, LogStore, MemoryStore, Session, SessionId, SessionStore, SyncPolicy};

/// Sessions in each store before a phase is measured.
const SESSIONS: usize = 10_000;
const VALUE_SIZES: [usize; 3] = [256, 1024, 8192];

/// Deterministic 32-hex-character ids (128 bits from a small PRNG).
fn ids(n: usize, seed: u64) -> Vec<SessionId> {
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n)
        .map(|_| {
            let hex = format!("{:016x}{:016x}", next(), next());
            SessionId::new(hex).expect("32 hex characters are a valid id")
        })
        .collect()
}

/// A cheap index sequence that visits ids in a scattered order.
fn scatter(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761)) % n
}

fn fill(store: &dyn SessionStore, ids: &[SessionId], value: &[u8]) {
    for id in ids {
        let mut s = Session::new(id.clone(), value.to_vec());
        store.save_session(&mut s).expect("save");
    }
}

fn log_store(path: &Path, sync: SyncPolicy) -> LogStore {
    LogStore::options()
        .sync(sync)
        .background(matches!(sync, SyncPolicy::Interval(_)))
        .open(path)
        .expect("open")
}

const POLICIES: [(&str, SyncPolicy); 3] = [
    ("never", SyncPolicy::Never),
    ("interval-1s", SyncPolicy::Interval(Duration::from_secs(1))),
    ("always", SyncPolicy::Always),
];

/// The phases on one filled store: save new, load, overwrite, mixed,
/// touch, delete.
fn phases(
    c: &mut Criterion,
    group_name: &str,
    store: &dyn SessionStore,
    value_size: usize,
    slow: bool,
) {
    let value = vec![0xa5u8; value_size];
    let existing = ids(SESSIONS, 1);
    fill(store, &existing, &value);
    let n = existing.len();
    let mut g = c.benchmark_group(group_name);
    g.throughput(Throughput::Elements(1));
    if slow {
        g.sample_size(10);
    }
    let fresh = ids(200_000, 2);
    let mut k = 0;
    g.bench_function(BenchmarkId::new("save_new", value_size), |b| {
        b.iter(|| {
            let mut s = Session::new(fresh[k % fresh.len()].clone(), value.clone());
            k += 1;
            store.save_session(&mut s).expect("save");
        })
    });
    let mut i = 0;
    g.bench_function(BenchmarkId::new("load", value_size), |b| {
        b.iter(|| {
            i += 1;
            black_box(store.load_session(&existing[scatter(i, n)]).expect("load"))
        })
    });
    g.bench_function(BenchmarkId::new("overwrite", value_size), |b| {
        b.iter(|| {
            i += 1;
            let mut s = Session::new(existing[scatter(i, n)].clone(), value.clone());
            store.save_session(&mut s).expect("save");
        })
    });
    g.bench_function(BenchmarkId::new("mixed_90_10", value_size), |b| {
        b.iter(|| {
            i += 1;
            let id = &existing[scatter(i, n)];
            if i % 10 == 0 {
                let mut s = Session::new(id.clone(), value.clone());
                store.save_session(&mut s).expect("save");
            } else {
                black_box(store.load_session(id).expect("load"));
            }
        })
    });
    g.bench_function(BenchmarkId::new("touch", value_size), |b| {
        b.iter(|| {
            i += 1;
            black_box(
                store
                    .touch_session(&existing[scatter(i, n)])
                    .expect("touch"),
            )
        })
    });
    // Deletes of ids saved by save_new (each deleted once at most; a
    // repeated id costs only the lookup).
    let mut d = 0;
    g.bench_function(BenchmarkId::new("delete", value_size), |b| {
        b.iter(|| {
            d += 1;
            black_box(
                store
                    .delete_session(&fresh[d % fresh.len()])
                    .expect("delete"),
            )
        })
    });
    g.finish();
}

fn logstore(c: &mut Criterion) {
    for (name, sync) in POLICIES {
        let sizes: &[usize] = if name == "always" {
            &[1024]
        } else {
            &VALUE_SIZES
        };
        for &size in sizes {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = log_store(&dir.path().join("s.log"), sync);
            phases(
                c,
                &format!("logstore/{name}"),
                &store,
                size,
                name == "always",
            );
        }
    }
}

fn other_stores(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = DirStore::options()
        .sync(SyncPolicy::Never)
        .open(dir.path().join("d"))
        .expect("open");
    phases(c, "dirstore/never", &store, 1024, true);
    let store = MemoryStore::new();
    phases(c, "memorystore", &store, 1024, false);
}

/// Close and reopen, and compaction of a store that is 75 % garbage.
fn reopen_and_compact(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.log");
    let value = vec![0x5au8; 1024];
    let live = ids(SESSIONS / 4, 3);
    {
        let store = log_store(&path, SyncPolicy::Never);
        fill(&store, &ids(SESSIONS, 4), &value);
    }
    let mut g = c.benchmark_group("logstore");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("reopen", SESSIONS), |b| {
        b.iter(|| drop(log_store(&path, SyncPolicy::Never)))
    });
    let garbage = dir.path().join("g.log");
    g.bench_function(
        BenchmarkId::new("compact_75pct_garbage", SESSIONS / 4),
        |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_file(&garbage);
                    let store = log_store(&garbage, SyncPolicy::Never);
                    for _ in 0..4 {
                        fill(&store, &live, &value);
                    }
                    store
                },
                |store| {
                    store.compact().expect("compact");
                    store
                },
                BatchSize::PerIteration,
            )
        },
    );
    g.finish();
}

criterion_group!(benches, logstore, other_stores, reopen_and_compact);
criterion_main!(benches);
