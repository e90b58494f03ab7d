//! Where an encrypted load's time goes, against a plain one: 50,000 sessions
//! of 1 KiB in a LogStore and in an `Encrypted<LogStore>`, loaded into a
//! reused buffer, beside `decrypt_record` and `encrypt_record` alone (the
//! envelope's cost without the store) and a load that copies nothing. Three
//! rounds, ns per operation:
//! `cargo run --release --manifest-path benches/peers/Cargo.toml --bin encload`.
use sessionlog::{Encrypted, Keyring, LogStore, Session, SessionId, SessionStore, SyncPolicy};
use std::time::Instant;
fn main() {
    let n = 50_000usize;
    let _ = std::fs::remove_dir_all("/tmp/encload");
    std::fs::create_dir_all("/tmp/encload").unwrap();
    let open = |p: &str| {
        LogStore::options()
            .sync(SyncPolicy::Never)
            .background(false)
            .open(p)
            .unwrap()
    };
    let plain = open("/tmp/encload/p.db");
    let enc = Encrypted::new(
        open("/tmp/encload/e.db"),
        Keyring::new("k1", [1; 32]).unwrap(),
    );
    let ids: Vec<SessionId> = (0..n)
        .map(|i| {
            SessionId::new(format!(
                "{:032x}",
                (i as u128).wrapping_mul(0x9E3779B97F4A7C15F39CC0605CEDC835)
            ))
            .unwrap()
        })
        .collect();
    let data = vec![7u8; 1024];
    for id in &ids {
        plain
            .save_session(&mut Session::new(id.clone(), data.clone()))
            .unwrap();
        enc.save_session(&mut Session::new(id.clone(), data.clone()))
            .unwrap();
    }
    let mut buf = Vec::new();
    let sid = ids[0].clone();
    let env = enc.encrypt_record(&sid, &data).unwrap();
    for round in 0..3 {
        let t = Instant::now();
        for id in &ids {
            buf.clear();
            plain
                .load_session_with(id, &mut |v| buf.extend_from_slice(v.data()))
                .unwrap();
        }
        let a = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for id in &ids {
            buf.clear();
            enc.load_session_with(id, &mut |v| buf.extend_from_slice(v.data()))
                .unwrap();
        }
        let b = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(enc.decrypt_record(&sid, &env).unwrap());
        }
        let c = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(enc.encrypt_record(&sid, &data).unwrap());
        }
        let d = t.elapsed().as_nanos() as f64 / n as f64;
        let t = Instant::now();
        for id in &ids {
            std::hint::black_box(
                enc.inner()
                    .load_session_with(id, &mut |v| buf.extend_from_slice(&v.data()[..0]))
                    .unwrap(),
            );
        }
        let e = t.elapsed().as_nanos() as f64 / n as f64;
        println!(
            "round {round}: plain load {a:.0} ns, encrypted load {b:.0} ns, decrypt_record {c:.0} ns, encrypt_record {d:.0} ns, inner load(no copy) {e:.0} ns"
        );
    }
}
