//! The local Redis server, one request per operation over a connection per
//! thread. Sessions are `SET key data PX ttl`, touched with `PEXPIRE`, the
//! way Redis-backed session stores keep them.

use std::path::Path;
use std::sync::Mutex;

use super::{Engine, MAX_THREADS, Mode, Result, slot};

const URL: &str = "redis://127.0.0.1:6379/";
const TTL_MS: u64 = 24 * 3600 * 1000;

struct Redis {
    conns: Vec<Mutex<redis::Connection>>,
    /// Every key of this run starts with it, so cleanup removes only ours.
    prefix: String,
}

pub fn open(_dir: &Path, _mode: Mode) -> Result<Box<dyn Engine>> {
    let client = redis::Client::open(URL)?;
    let mut conns = Vec::new();
    for _ in 0..MAX_THREADS {
        conns.push(Mutex::new(client.get_connection()?));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let prefix = format!("sessionlog-bench:{}:{nanos}:", std::process::id());
    Ok(Box::new(Redis { conns, prefix }))
}

impl Redis {
    fn conn(&self) -> std::sync::MutexGuard<'_, redis::Connection> {
        self.conns[slot()].lock().unwrap_or_else(|e| e.into_inner())
    }
    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

impl Engine for Redis {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        let key = self.key(id);
        redis::cmd("SET")
            .arg(key)
            .arg(data)
            .arg("PX")
            .arg(TTL_MS)
            .query::<()>(&mut *self.conn())?;
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(id);
        Ok(redis::cmd("GET").arg(key).query(&mut *self.conn())?)
    }
    fn touch(&self, id: &str) -> Result<bool> {
        let key = self.key(id);
        Ok(redis::cmd("PEXPIRE")
            .arg(key)
            .arg(TTL_MS)
            .query(&mut *self.conn())?)
    }
    fn delete(&self, id: &str) -> Result<()> {
        let key = self.key(id);
        redis::cmd("DEL").arg(key).query::<()>(&mut *self.conn())?;
        Ok(())
    }
    fn cleanup(&self) -> Result<()> {
        let mut c = self.conn();
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut *c)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(&mut *c)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.cleanup();
    }
}
