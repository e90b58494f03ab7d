//! A fixed workload for measuring the library's own cost by instruction count
//! (`valgrind --tool=cachegrind`), which a loaded machine does not disturb as
//! it does wall time: built once without and once with `--features observe`.
//! A fixed workload (no time caps): N saves of new 1 KiB sessions, N loads,
//! N overwrites, N touches, N/4 deletes, on a LogStore with SyncPolicy::Never
//! and no background thread, as benches/peers opens it. Prints ns/op of each.
use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let dir = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "/tmp/obench-store".into());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = LogStore::options()
        .sync(SyncPolicy::Never)
        .background(false)
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
    let t = Instant::now();
    for id in &ids {
        let mut s = Session::new(SessionId::new(id).unwrap(), data.clone());
        store.save_session(&mut s).unwrap();
    }
    let save = t.elapsed();
    let t = Instant::now();
    let mut got = 0usize;
    for &i in &order {
        got += store
            .load_session(&SessionId::new(&ids[i]).unwrap())
            .unwrap()
            .unwrap()
            .data
            .len();
    }
    let load = t.elapsed();
    let t = Instant::now();
    for &i in &order {
        let mut s = Session::new(SessionId::new(&ids[i]).unwrap(), data.clone());
        store.save_session(&mut s).unwrap();
    }
    let over = t.elapsed();
    let t = Instant::now();
    for &i in &order {
        assert!(
            store
                .touch_session(&SessionId::new(&ids[i]).unwrap())
                .unwrap()
        );
    }
    let touch = t.elapsed();
    let t = Instant::now();
    for &i in &order[..n / 4] {
        assert!(
            store
                .delete_session(&SessionId::new(&ids[i]).unwrap())
                .unwrap()
        );
    }
    let del = t.elapsed();
    let ns = |d: std::time::Duration, k: usize| d.as_nanos() as f64 / k as f64;
    println!(
        "save {:.0} load {:.0} overwrite {:.0} touch {:.0} delete {:.0} ns/op ({got})",
        ns(save, n),
        ns(load, n),
        ns(over, n),
        ns(touch, n),
        ns(del, n / 4)
    );
}
