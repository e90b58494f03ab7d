//! Where an encrypted load's time goes, against a plain one: 50,000 sessions
//! of 1 KiB in a LogStore and in an `Encrypted<LogStore>`, loaded into a
//! reused buffer, beside `decrypt_record` and `encrypt_record` alone (the
//! envelope's cost without the store) and a load that copies nothing. Three
//! rounds, CPU ns per operation (this thread's CPU time, so that a busy
//! machine skews the figures less than wall time would). Under each round,
//! the floor an encrypted load cannot go below: ring's `open_in_place` of
//! 1 KiB alone (with an associated data as long as an envelope's for these
//! ids), the copy of the ciphertext into a buffer it needs first (it opens
//! in place only), and the wipe of that buffer after the load; then a
//! tenth of the sessions saved again, plain and encrypted, and
//! `decrypt_record` of every stored envelope in turn (out of cache, as a
//! load's are):
//! `cargo run --release --manifest-path benches/peers/Cargo.toml --bin encload`.
use sessionlog::{Encrypted, Keyring, LogStore, Session, SessionId, SessionStore, SyncPolicy};

/// This thread's CPU time in ns: unlike wall time it leaves out the time
/// other processes hold the CPU, so a busy machine inflates it far less.
fn cpu_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration and
    // CLOCK_THREAD_CPUTIME_ID is supported by every Linux this runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128
}

/// A start of a timed loop; `per_op` gives CPU ns per operation.
struct Timer(u128);
impl Timer {
    fn now() -> Timer {
        Timer(cpu_ns())
    }
    fn per_op(&self, n: usize) -> f64 {
        (cpu_ns() - self.0) as f64 / n as f64
    }
}
fn main() {
    let n = 50_000usize;
    // A directory of this process's own: two runs at once must not share
    // (and overwrite) one store.
    let dir = std::env::temp_dir().join(format!("encload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let open = |name: &str| {
        LogStore::options()
            .sync(SyncPolicy::Never)
            .background(false)
            .open(dir.join(name))
            .unwrap()
    };
    let plain = open("p.db");
    let enc = Encrypted::new(open("e.db"), Keyring::new("k1", [1; 32]).unwrap());
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
    // ring alone: "sessionlog encrypted session v2\0" (32 bytes), a header
    // with key id "k1" (9), the id's length (2) and a 32-character id.
    let aead = {
        use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1; 32]).unwrap())
    };
    let aad = [3u8; 75];
    let nonce = || ring::aead::Nonce::assume_unique_for_key([0; 12]);
    let mut sealed = data.clone();
    aead.seal_in_place_append_tag(nonce(), ring::aead::Aad::from(aad), &mut sealed)
        .unwrap();
    let sid = ids[0].clone();
    // Every stored envelope, read once: decrypting them in turn touches
    // 55 MB, as the loads do, where decrypt_record above reuses one.
    let envelopes: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| enc.inner().load_session(id).unwrap().unwrap().data)
        .collect();
    let env = enc.encrypt_record(&sid, &data).unwrap();
    for round in 0..3 {
        let t = Timer::now();
        for id in &ids {
            buf.clear();
            plain
                .load_session_with(id, &mut |v| buf.extend_from_slice(v.data()))
                .unwrap();
        }
        let a = t.per_op(n);
        let t = Timer::now();
        for id in &ids {
            buf.clear();
            enc.load_session_with(id, &mut |v| buf.extend_from_slice(v.data()))
                .unwrap();
        }
        let b = t.per_op(n);
        let t = Timer::now();
        for _ in 0..n {
            std::hint::black_box(enc.decrypt_record(&sid, &env).unwrap());
        }
        let c = t.per_op(n);
        let t = Timer::now();
        for _ in 0..n {
            std::hint::black_box(enc.encrypt_record(&sid, &data).unwrap());
        }
        let d = t.per_op(n);
        let t = Timer::now();
        for id in &ids {
            std::hint::black_box(
                enc.inner()
                    .load_session_with(id, &mut |v| buf.extend_from_slice(&v.data()[..0]))
                    .unwrap(),
            );
        }
        let e = t.per_op(n);
        let t = Timer::now();
        for (id, env) in ids.iter().zip(&envelopes) {
            std::hint::black_box(enc.decrypt_record(id, env).unwrap());
        }
        let cold = t.per_op(n);
        println!(
            "round {round}: plain load {a:.0} ns, encrypted load {b:.0} ns, decrypt_record {c:.0} ns, encrypt_record {d:.0} ns, inner load(no copy) {e:.0} ns"
        );
        let t = Timer::now();
        for _ in 0..n {
            buf.clear();
            buf.extend_from_slice(std::hint::black_box(&sealed));
            std::hint::black_box(&mut buf);
        }
        let copy = t.per_op(n);
        let t = Timer::now();
        for _ in 0..n {
            buf.clear();
            buf.extend_from_slice(std::hint::black_box(&sealed));
            let plain = aead
                .open_in_place(nonce(), ring::aead::Aad::from(aad), &mut buf)
                .unwrap();
            std::hint::black_box(plain);
        }
        let open = t.per_op(n);
        let t = Timer::now();
        for _ in 0..n {
            buf.fill(0);
            std::hint::black_box(&mut buf);
        }
        let wipe = t.per_op(n);
        // Saves: the first tenth of the sessions again, same data.
        let m = n / 10;
        let t = Timer::now();
        for id in &ids[..m] {
            plain
                .save_session(&mut Session::new(id.clone(), data.clone()))
                .unwrap();
        }
        let psave = t.per_op(m);
        let t = Timer::now();
        for id in &ids[..m] {
            enc.save_session(&mut Session::new(id.clone(), data.clone()))
                .unwrap();
        }
        let esave = t.per_op(m);
        println!(
            "  floor: copy 1 KiB + tag {copy:.0} ns, copy + ring open_in_place {open:.0} ns (ring alone {:.0} ns), wipe 1 KiB {wipe:.0} ns",
            open - copy
        );
        println!("  save: plain {psave:.0} ns, encrypted {esave:.0} ns");
        println!("  decrypt_record of each stored envelope in turn {cold:.0} ns");
    }
    drop((plain, enc));
    let _ = std::fs::remove_dir_all(&dir);
}
