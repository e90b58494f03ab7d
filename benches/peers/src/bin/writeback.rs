//! What writeback behind the writers (`LogOptions::writeback_every`,
//! DESIGN.md §6) costs and buys: two stores in one directory, one writing
//! back every 4 MiB appended and one leaving it to the kernel, each
//! saved into flat out by one thread in alternating turns of 20,000 new
//! sessions (so that both see the same machine), until each holds N.
//! Prints each store's saves per second, p99, worst save, and worst save
//! that the thread was not preempted in (`getrusage(RUSAGE_THREAD)`
//! around every save: no involuntary context switch), which on a shared
//! machine is the store's own wait (in `pwrite`, a page fault, a lock)
//! rather than another program's turn on the CPU; and how many saves
//! blocked in the kernel (a voluntary context switch), with the worst.
//!
//! `cargo run --release --manifest-path benches/peers/Cargo.toml --bin writeback -- [N] [VALUE_BYTES] [never|interval] [DIR]`
//! (defaults 2,000,000, 256, interval, the system's temporary directory).
use std::time::{Duration, Instant};

use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};

const TURN: usize = 20_000;

/// Voluntary and involuntary context switches of this thread so far.
fn switches() -> (i64, i64) {
    // SAFETY: getrusage writes only into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage, for this thread.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    (ru.ru_nvcsw, ru.ru_nivcsw)
}

#[derive(Default)]
struct Tally {
    lat: Vec<u64>,
    busy: Duration,
    /// Worst save the thread was not preempted in, and how many saves
    /// blocked in the kernel (a voluntary switch).
    worst_own: u64,
    blocked: u64,
    /// Worst save that blocked in the kernel.
    worst_blocked: u64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(2_000_000, |s| s.parse().expect("N"));
    let size: usize = args.next().map_or(256, |s| s.parse().expect("VALUE_BYTES"));
    let sync = match args.next().as_deref() {
        None | Some("interval") => SyncPolicy::Interval(Duration::from_secs(1)),
        Some("never") => SyncPolicy::Never,
        Some(other) => panic!("never or interval, not {other}"),
    };
    let base = args.next().map_or_else(std::env::temp_dir, Into::into);
    let dir = base.join(format!("writeback-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let open = |name: &str, every: u64| {
        LogStore::options()
            .sync(sync)
            .writeback_every(every)
            .compact_check_interval(Duration::from_secs(86_400))
            .open(dir.join(name))
            .expect("open")
    };
    let stores = [
        ("writeback 4 MiB", open("wb.log", 4 << 20)),
        ("kernel's", open("k.log", 0)),
    ];
    let mut tallies = [Tally::default(), Tally::default()];
    let data = vec![b'x'; size];
    let mut next = [0usize; 2];
    while next[1] < n {
        for (k, (_, store)) in stores.iter().enumerate() {
            let t = &mut tallies[k];
            let start = Instant::now();
            for i in next[k]..(next[k] + TURN).min(n) {
                let id = SessionId::new(format!("{i:032x}")).expect("id");
                let mut s = Session::new(id, data.clone());
                let (v0, i0) = switches();
                let t0 = Instant::now();
                store.save_session(&mut s).expect("save");
                let ns = t0.elapsed().as_nanos() as u64;
                let (v1, i1) = switches();
                t.lat.push(ns);
                if i1 == i0 {
                    t.worst_own = t.worst_own.max(ns);
                }
                if v1 > v0 {
                    t.blocked += 1;
                    t.worst_blocked = t.worst_blocked.max(ns);
                }
            }
            t.busy += start.elapsed();
            next[k] = (next[k] + TURN).min(n);
        }
    }
    println!("{n} new sessions of {size} B into each store, {sync:?}, turns of {TURN}");
    for ((name, _), t) in stores.iter().zip(&mut tallies) {
        t.lat.sort_unstable();
        let p = |q: f64| t.lat[((t.lat.len() as f64 * q) as usize).min(t.lat.len() - 1)];
        println!(
            "{name:>16}: {:>8.0} saves/s, p99 {:>6.1} µs, worst {:>7.2} ms, worst not preempted {:>7.2} ms, {} saves blocked in the kernel (worst {:.2} ms)",
            t.lat.len() as f64 / t.busy.as_secs_f64(),
            p(0.99) as f64 / 1e3,
            *t.lat.last().unwrap_or(&0) as f64 / 1e6,
            t.worst_own as f64 / 1e6,
            t.blocked,
            t.worst_blocked as f64 / 1e6,
        );
    }
    drop(stores);
    let _ = std::fs::remove_dir_all(&dir);
}
