//! The embedded key-value peers: redb, LMDB (heed), sled and fjall. Each
//! stores `modified_ms ++ data` under the id; a touch rewrites the value.

use std::path::{Path, PathBuf};

use super::{Engine, Mode, Result, decode_value, decode_value_into, encode_value};

/// Touch for stores without one: read, restamp, write back.
fn touch_by_rewrite(e: &(impl Engine + ?Sized), id: &str) -> Result<bool> {
    match e.load(id)? {
        Some(data) => e.save(id, &data).map(|()| true),
        None => Ok(false),
    }
}

/// Saves per transaction when the scale phase fills a store.
const FILL_BATCH: usize = 10_000;

// ---- redb: one write transaction per save, as its docs describe.

const TABLE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sessions");

struct Redb {
    db: redb::Database,
    durability: redb::Durability,
}

pub fn open_redb(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let db = redb::Database::create(dir.join("sessions.redb"))?;
    let tx = db.begin_write()?;
    tx.open_table(TABLE)?;
    tx.commit()?;
    let durability = match mode {
        // Commits are written but not fsynced until a later Immediate one.
        Mode::Buffered => redb::Durability::None,
        Mode::Durable => redb::Durability::Immediate,
    };
    Ok(Box::new(Redb { db, durability }))
}

impl Redb {
    fn write(&self, f: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<()>) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(self.durability)?;
        {
            let mut t = tx.open_table(TABLE)?;
            f(&mut t)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Engine for Redb {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        let v = encode_value(data);
        self.write(|t| t.insert(id, v.as_slice()).map(drop).map_err(Into::into))
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        Ok(t.get(id)?.map(|g| decode_value(g.value())))
    }
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TABLE)?;
        buf.clear();
        Ok(t.get(id)?
            .map(|g| decode_value_into(g.value(), buf))
            .is_some())
    }
    fn fill(&self, ids: &[String], data: &[u8]) -> Result<()> {
        let v = encode_value(data);
        ids.chunks(FILL_BATCH).try_for_each(|chunk| {
            self.write(|t| {
                chunk
                    .iter()
                    .try_for_each(|id| t.insert(id.as_str(), v.as_slice()).map(drop))
                    .map_err(Into::into)
            })
        })
    }
    fn touch(&self, id: &str) -> Result<bool> {
        touch_by_rewrite(self, id)
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.write(|t| t.remove(id).map(drop).map_err(Into::into))
    }
    fn compact(&mut self) -> Result<bool> {
        // Needs the last commit durable, as compaction frees pages only then.
        self.write(|_| Ok(()))?;
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        tx.commit()?;
        while self.db.compact()? {}
        Ok(true)
    }
}

// ---- LMDB through heed: one write transaction per save.

struct Lmdb {
    env: Option<heed::Env>,
    db: heed::Database<heed::types::Str, heed::types::Bytes>,
    dir: PathBuf,
    mode: Mode,
}

type LmdbDb = heed::Database<heed::types::Str, heed::types::Bytes>;

fn lmdb_env(dir: &Path, mode: Mode) -> Result<(heed::Env, LmdbDb)> {
    let mut o = heed::EnvOpenOptions::new();
    // A sparse 64 GiB map: room for 1M sessions of 8 KiB and their garbage.
    o.map_size(64 << 30).max_readers(126);
    if mode == Mode::Buffered {
        // SAFETY: MDB_NOSYNC only drops the fsync at commit; a crash of the
        // machine may lose recent commits, which is the class compared here.
        unsafe { o.flags(heed::EnvFlags::NO_SYNC) };
    }
    // SAFETY: the harness opens each directory once in this process.
    let env = unsafe { o.open(dir)? };
    let mut w = env.write_txn()?;
    let db: LmdbDb = env.create_database(&mut w, None)?;
    w.commit()?;
    Ok((env, db))
}

pub fn open_lmdb(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let (env, db) = lmdb_env(dir, mode)?;
    Ok(Box::new(Lmdb {
        env: Some(env),
        db,
        dir: dir.to_owned(),
        mode,
    }))
}

impl Lmdb {
    fn env(&self) -> &heed::Env {
        self.env.as_ref().expect("the environment is open")
    }
}

impl Engine for Lmdb {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        let v = encode_value(data);
        let mut w = self.env().write_txn()?;
        self.db.put(&mut w, id, &v)?;
        w.commit()?;
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let r = self.env().read_txn()?;
        Ok(self.db.get(&r, id)?.map(decode_value))
    }
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        let r = self.env().read_txn()?;
        buf.clear();
        Ok(self
            .db
            .get(&r, id)?
            .map(|v| decode_value_into(v, buf))
            .is_some())
    }
    fn fill(&self, ids: &[String], data: &[u8]) -> Result<()> {
        let v = encode_value(data);
        for chunk in ids.chunks(FILL_BATCH) {
            let mut w = self.env().write_txn()?;
            for id in chunk {
                self.db.put(&mut w, id, &v)?;
            }
            w.commit()?;
        }
        Ok(())
    }
    fn touch(&self, id: &str) -> Result<bool> {
        touch_by_rewrite(self, id)
    }
    fn delete(&self, id: &str) -> Result<()> {
        let mut w = self.env().write_txn()?;
        self.db.delete(&mut w, id)?;
        w.commit()?;
        Ok(())
    }
    fn compact(&mut self) -> Result<bool> {
        // LMDB reuses free pages but never shrinks; its compaction is a
        // compacting copy (mdb_copy -c) swapped in for the old file.
        let tmp = self.dir.join("compact.mdb");
        self.env()
            .copy_to_path(&tmp, heed::CompactionOption::Enabled)?;
        if let Some(env) = self.env.take() {
            env.prepare_for_closing().wait();
        }
        std::fs::rename(&tmp, self.dir.join("data.mdb"))?;
        let (env, db) = lmdb_env(&self.dir, self.mode)?;
        self.env = Some(env);
        self.db = db;
        Ok(true)
    }
}

// ---- sled: its defaults (a background flush every 500 ms); `flush` after
// each save for the durable class.

struct Sled {
    db: sled::Db,
    durable: bool,
}

pub fn open_sled(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let db = sled::open(dir.join("sled"))?;
    Ok(Box::new(Sled {
        db,
        durable: mode == Mode::Durable,
    }))
}

impl Engine for Sled {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        self.db.insert(id, encode_value(data))?;
        if self.durable {
            self.db.flush()?;
        }
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(id)?.map(|v| decode_value(&v)))
    }
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        Ok(self
            .db
            .get(id)?
            .map(|v| decode_value_into(&v, buf))
            .is_some())
    }
    fn touch(&self, id: &str) -> Result<bool> {
        touch_by_rewrite(self, id)
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.db.remove(id)?;
        if self.durable {
            self.db.flush()?;
        }
        Ok(())
    }
}

// ---- fjall: writes go to OS buffers by default; `persist(SyncData)`
// after each save for the durable class.

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
    durable: bool,
}

pub fn open_fjall(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    let db = fjall::Database::builder(dir.join("fjall")).open()?;
    let ks = db.keyspace("sessions", fjall::KeyspaceCreateOptions::default)?;
    Ok(Box::new(Fjall {
        db,
        ks,
        durable: mode == Mode::Durable,
    }))
}

impl Fjall {
    fn persist(&self) -> Result<()> {
        if self.durable {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }
}

impl Engine for Fjall {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        self.ks.insert(id, encode_value(data))?;
        self.persist()
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.ks.get(id)?.map(|v| decode_value(&v)))
    }
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        Ok(self
            .ks
            .get(id)?
            .map(|v| decode_value_into(&v, buf))
            .is_some())
    }
    fn touch(&self, id: &str) -> Result<bool> {
        touch_by_rewrite(self, id)
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.ks.remove(id)?;
        self.persist()
    }
    fn compact(&mut self) -> Result<bool> {
        // Not in fjall's documented API (doc-hidden), but the only way to
        // ask it for a full compaction now.
        self.ks.major_compact()?;
        Ok(true)
    }
    fn compact_concurrent(&self) -> Option<Result<()>> {
        Some(self.ks.major_compact().map_err(Into::into))
    }
}
