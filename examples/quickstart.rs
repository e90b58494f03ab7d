//! The README's demonstration: open a store, save, load, touch, expire,
//! compact and reopen sessions, printing what happens.
//!
//! `cargo run -p sessionlog-examples --example quickstart`

use std::time::{Duration, SystemTime};

use sessionlog::{LogStore, Session, SessionId, SessionStore, SyncPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sessionlog-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("sessions.db");
    println!("store: {}", path.display());

    let store = LogStore::options()
        .sync(SyncPolicy::Always)
        .max_idle(Duration::from_secs(30 * 60))
        .open(&path)?;

    // A login: a new session with a random 128-bit id.
    let mut alice = Session::new(SessionId::generate(), b"user=alice;cart=3".to_vec());
    store.save_session(&mut alice)?;
    println!(
        "saved   {} version {} ({} bytes)",
        alice.id,
        alice.version(),
        alice.data.len()
    );

    // The next request loads it, changes it and saves it back, refusing to
    // overwrite a change made meanwhile by another request.
    let mut req = store.load_session(&alice.id)?.expect("just saved");
    req.data = b"user=alice;cart=4".to_vec();
    store.save_session_if_unchanged(&mut req)?;
    println!("updated {} to version {}", req.id, req.version());
    alice.data = b"user=alice;cart=5".to_vec();
    match store.save_session_if_unchanged(&mut alice) {
        Err(e) if e.is_conflict() => println!("stale save refused: {e}"),
        other => println!("unexpected: {other:?}"),
    }

    // A session with an absolute deadline already in the past is absent.
    let mut short = Session::new(SessionId::generate(), b"user=bob".to_vec());
    short.expires = Some(SystemTime::now() - Duration::from_secs(1));
    store.save_session(&mut short)?;
    println!("expired session visible: {}", store.has_session(&short.id)?);

    // Touch refreshes the idle timer without rewriting the data.
    println!("touched: {}", store.touch_session(&alice.id)?);

    // Compaction rewrites live sessions and drops the expired one.
    let c = store.compact()?;
    println!(
        "compacted: kept {}, dropped {}, {} -> {} bytes",
        c.kept, c.dropped, c.bytes_before, c.bytes_after
    );

    // Reopen: everything acknowledged is still there.
    drop(store);
    let store = LogStore::open(&path)?;
    let back = store.load_session(&alice.id)?.expect("survives reopen");
    println!(
        "reopened: {} -> {:?} (version {})",
        back.id,
        String::from_utf8_lossy(&back.data),
        back.version()
    );
    let stats = store.stats()?;
    println!(
        "stats: {} sessions, {} live bytes, file {} bytes, generation {}",
        stats.sessions, stats.live_bytes, stats.file_bytes, stats.generation
    );
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
