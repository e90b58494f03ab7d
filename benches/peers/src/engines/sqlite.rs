//! SQLite through rusqlite (bundled), WAL mode, a connection per thread.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Engine, MAX_THREADS, Mode, Result, now_ms, slot};

struct Sqlite {
    conns: Vec<Mutex<Connection>>,
}

const SAVE: &str = "INSERT INTO sessions (id, data, modified) VALUES (?1, ?2, ?3) \
                    ON CONFLICT (id) DO UPDATE SET data = excluded.data, modified = excluded.modified";

pub fn open(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let path = dir.join("sessions.sqlite");
    // In WAL mode NORMAL syncs only at checkpoints (no fsync per commit);
    // FULL syncs the WAL at every commit.
    let sync = match mode {
        Mode::Buffered => "NORMAL",
        Mode::Durable => "FULL",
    };
    let mut conns = Vec::new();
    for i in 0..MAX_THREADS {
        let c = Connection::open(&path)?;
        c.busy_timeout(std::time::Duration::from_secs(10))?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", sync)?;
        if i == 0 {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS sessions (
                     id TEXT PRIMARY KEY, data BLOB NOT NULL, modified INTEGER NOT NULL)",
            )?;
        }
        conns.push(Mutex::new(c));
    }
    Ok(Box::new(Sqlite { conns }))
}

impl Sqlite {
    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conns[slot()].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Engine for Sqlite {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        let c = self.conn();
        c.prepare_cached(SAVE)?
            .execute(params![id, data, now_ms() as i64])?;
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT data FROM sessions WHERE id = ?1")?;
        Ok(st.query_row([id], |r| r.get::<_, Vec<u8>>(0)).optional()?)
    }
    fn touch(&self, id: &str) -> Result<bool> {
        let c = self.conn();
        let mut st = c.prepare_cached("UPDATE sessions SET modified = ?2 WHERE id = ?1")?;
        Ok(st.execute(params![id, now_ms() as i64])? > 0)
    }
    fn delete(&self, id: &str) -> Result<()> {
        let c = self.conn();
        c.prepare_cached("DELETE FROM sessions WHERE id = ?1")?
            .execute([id])?;
        Ok(())
    }
    fn compact(&mut self) -> Result<bool> {
        let c = self.conn();
        c.execute_batch(
            "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
        )?;
        Ok(true)
    }
}
