//! The single-thread paths of `benches/peers` (issue 32.4), as a fixed
//! workload for callgrind: N new saves of 1 KiB sessions from a string id
//! (as a cookie brings it), then N loads into a reused buffer in random
//! order, on a LogStore with `SyncPolicy::Never` (background thread on, as
//! benches/peers opens it), beside the same two paths of the HashMap ceiling
//! and of the plain `write(2)` log, written as the harness's. Each phase is
//! a function of its own, so that callgrind counts it alone:
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hotpath::phase_*' \
//!   target/release/hotpath 100000`
//! (one phase at a time: `--toggle-collect='hotpath::phase_sl_load'`).
//! Without valgrind it prints ns/op of each phase. A third argument repeats
//! each load phase that many times (for `perf record`). Beside the HashMap
//! runs one that checks a CRC-32 of each value on load (`phase_hc_load`), as
//! every sessionlog load checks its record's.
use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[inline(never)]
fn phase_sl_save(store: &LogStore, ids: &[String], data: &[u8]) {
    for id in ids {
        let mut s = Session::new(SessionId::new(id).unwrap(), data.to_vec());
        store.save_session(&mut s).unwrap();
    }
}

/// The loop of every load phase: each id of `ids` in `order`, loaded by
/// `load` (the data copied into `buf`, cleared first; whether it was
/// found); a sum of what was found, for the phases to agree on.
#[inline(always)]
fn each_load(
    ids: &[String],
    order: &[usize],
    buf: &mut Vec<u8>,
    mut load: impl FnMut(&str, &mut Vec<u8>) -> bool,
) -> usize {
    let mut got = 0;
    for &i in order {
        buf.clear();
        let found = load(&ids[i], buf);
        got += usize::from(found) + buf.len();
    }
    got
}

#[inline(never)]
fn phase_sl_load(store: &LogStore, ids: &[String], order: &[usize], buf: &mut Vec<u8>) -> usize {
    each_load(ids, order, buf, |id, buf| {
        store
            .load_session_with(&SessionId::new(id).unwrap(), &mut |v| {
                buf.extend_from_slice(v.data())
            })
            .unwrap()
    })
}

type Sessions = HashMap<Box<str>, (u64, Vec<u8>)>;

#[inline(never)]
fn phase_hm_save(map: &RwLock<Sessions>, ids: &[String], data: &[u8]) {
    for id in ids {
        let v = (now_ms(), data.to_vec());
        map.write().unwrap().insert(id.as_str().into(), v);
    }
}

#[inline(never)]
fn phase_hm_load(
    map: &RwLock<Sessions>,
    ids: &[String],
    order: &[usize],
    buf: &mut Vec<u8>,
) -> usize {
    each_load(ids, order, buf, |id, buf| {
        let m = map.read().unwrap();
        m.get(id).map(|v| buf.extend_from_slice(&v.1)).is_some()
    })
}

type Checked = HashMap<Box<str>, (u32, Vec<u8>)>;

#[inline(never)]
fn phase_hc_save(map: &RwLock<Checked>, ids: &[String], data: &[u8]) {
    for id in ids {
        let v = (crc32fast::hash(data), data.to_vec());
        map.write().unwrap().insert(id.as_str().into(), v);
    }
}

/// The HashMap's load with the check a log's load makes: the value's
/// CRC-32 computed and compared before it is copied out.
#[inline(never)]
fn phase_hc_load(
    map: &RwLock<Checked>,
    ids: &[String],
    order: &[usize],
    buf: &mut Vec<u8>,
) -> usize {
    each_load(ids, order, buf, |id, buf| {
        let m = map.read().unwrap();
        m.get(id)
            .filter(|v| crc32fast::hash(&v.1) == v.0)
            .map(|v| buf.extend_from_slice(&v.1))
            .is_some()
    })
}

/// The `write(2)` log of benches/peers: one record a save, appended with
/// one `write(2)` under a mutex, its place kept in a `HashMap`.
struct WriteLog {
    file: Mutex<(File, u64)>,
    index: RwLock<HashMap<Box<str>, (u64, u32)>>,
}

#[inline(never)]
fn phase_wl_save(log: &WriteLog, ids: &[String], data: &[u8]) {
    for id in ids {
        let len = 14 + id.len() + data.len();
        let mut r = Vec::with_capacity(len);
        r.extend_from_slice(&(len as u32).to_le_bytes());
        r.push(1);
        r.push(id.len() as u8);
        r.extend_from_slice(&now_ms().to_le_bytes());
        r.extend_from_slice(id.as_bytes());
        r.extend_from_slice(data);
        let off = {
            let mut f = log.file.lock().unwrap();
            let off = f.1;
            f.0.write_all(&r).unwrap();
            f.1 += len as u64;
            off
        };
        let place = (off + 14 + id.len() as u64, data.len() as u32);
        log.index.write().unwrap().insert(id.as_str().into(), place);
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let dir = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "/tmp/hotpath-store".into());
    let rounds: usize = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1)
        .max(1);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = LogStore::options()
        .sync(SyncPolicy::Never)
        .open(format!("{dir}/s.db"))
        .unwrap();
    let ids: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9E3779B97F4A7C15F39CC0605CEDC835)
            )
        })
        .collect();
    let data = vec![7u8; 1024];
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 12345u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let mut buf = Vec::new();
    let map = RwLock::new(Sessions::new());
    let log = WriteLog {
        file: Mutex::new((
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(format!("{dir}/append.log"))
                .unwrap(),
            0,
        )),
        index: RwLock::new(HashMap::new()),
    };
    let ns = |t: Instant| t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    phase_sl_save(&store, &ids, &data);
    let sl_save = ns(t);
    let t = Instant::now();
    let a = (0..rounds)
        .map(|_| phase_sl_load(&store, &ids, &order, &mut buf))
        .last()
        .unwrap_or(0);
    let sl_load = ns(t) / rounds as f64;
    let t = Instant::now();
    phase_hm_save(&map, &ids, &data);
    let hm_save = ns(t);
    let t = Instant::now();
    let b = (0..rounds)
        .map(|_| phase_hm_load(&map, &ids, &order, &mut buf))
        .last()
        .unwrap_or(0);
    let hm_load = ns(t) / rounds as f64;
    drop(map);
    let checked = RwLock::new(Checked::new());
    phase_hc_save(&checked, &ids, &data);
    let t = Instant::now();
    let c = (0..rounds)
        .map(|_| phase_hc_load(&checked, &ids, &order, &mut buf))
        .last()
        .unwrap_or(0);
    let hc_load = ns(t) / rounds as f64;
    drop(checked);
    let t = Instant::now();
    phase_wl_save(&log, &ids, &data);
    let wl_save = ns(t);
    assert_eq!(a, b);
    assert_eq!(a, c);
    println!(
        "sessionlog save {sl_save:.0} load {sl_load:.0}; hashmap save {hm_save:.0} \
         load {hm_load:.0}; hashmap+crc load {hc_load:.0}; write(2) save {wl_save:.0} ns/op"
    );
}
