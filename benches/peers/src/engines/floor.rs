//! The reference points: a plain append-only file (`O_APPEND`, one
//! `write(2)` per save, plus one `fdatasync(2)` per save in the durable
//! class: the baseline the durable target names), the same log
//! preallocated with `fallocate` (durable class only, an extra column), and
//! a `HashMap` behind a `RwLock` (the in-memory ceiling), and that `HashMap`
//! checking a CRC-32 of each value on load (`hashmap+crc`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use super::{Engine, Mode, Result, now_ms};

/// Record: `len u32 | kind u8 | id_len u8 | modified u64 | id | data`,
/// little-endian; `len` counts the whole record. A zero `len` ends the log
/// (the preallocated, never written part).
const HEAD: usize = 4 + 1 + 1 + 8;
const PUT: u8 = 1;
const TOUCH: u8 = 2;
const DELETE: u8 = 3;
/// The preallocated variant grows its file by this much at a time.
const PREALLOC: u64 = 64 << 20;

fn record(kind: u8, id: &str, data: &[u8]) -> Vec<u8> {
    let len = HEAD + id.len() + data.len();
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_le_bytes());
    r.push(kind);
    r.push(id.len() as u8);
    r.extend_from_slice(&now_ms().to_le_bytes());
    r.extend_from_slice(id.as_bytes());
    r.extend_from_slice(data);
    r
}

/// Offset and length of a session's data in the file.
type Index = HashMap<Box<str>, (u64, u32)>;

struct Tail {
    end: u64,
    allocated: u64,
}

struct AppendLog {
    path: PathBuf,
    file: File,
    durable: bool,
    /// Grow the file with `fallocate` ahead of the writes and `pwrite` at
    /// the tail, instead of `O_APPEND` writes that grow it.
    prealloc: bool,
    tail: Mutex<Tail>,
    index: RwLock<Index>,
}

/// The plain log: opened `O_APPEND`, never preallocated; every save is one
/// `write(2)` that grows the file (and, durable, one `fdatasync(2)`, which
/// then also has to flush the new file size).
pub fn open(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    open_log(dir, mode, false)
}

/// The same log preallocated in 64 MiB steps (`fallocate`), written with
/// `pwrite(2)` at the tail, so that `fdatasync` has no file size to flush.
/// Only its durable phases are run.
pub fn open_prealloc(dir: &Path, mode: Mode) -> Result<Box<dyn Engine>> {
    open_log(dir, mode, true)
}

fn open_file(path: &Path, prealloc: bool) -> Result<File> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .append(!prealloc)
        .create(true)
        .truncate(false)
        .open(path)?)
}

fn open_log(dir: &Path, mode: Mode, prealloc: bool) -> Result<Box<dyn Engine>> {
    let path = dir.join("append.log");
    let file = open_file(&path, prealloc)?;
    let (index, end) = scan(&file)?;
    let allocated = file.metadata()?.len();
    Ok(Box::new(AppendLog {
        path,
        file,
        durable: mode == Mode::Durable,
        prealloc,
        tail: Mutex::new(Tail { end, allocated }),
        index: RwLock::new(index),
    }))
}

/// Rebuilds the index by reading the whole log once.
fn scan(file: &File) -> Result<(Index, u64)> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut index = Index::new();
    let mut off = 0u64;
    let mut head = [0u8; HEAD];
    let mut body = Vec::new();
    while r.read_exact(&mut head).is_ok() {
        let len = u32::from_le_bytes(head[..4].try_into()?) as usize;
        if len < HEAD {
            break;
        }
        body.resize(len - HEAD, 0);
        r.read_exact(&mut body)?;
        let id_len = usize::from(head[5]);
        let id = std::str::from_utf8(&body[..id_len])?;
        match head[4] {
            PUT => {
                let data_off = off + (HEAD + id_len) as u64;
                index.insert(id.into(), (data_off, (len - HEAD - id_len) as u32));
            }
            DELETE => {
                index.remove(id);
            }
            _ => {}
        }
        off += len as u64;
    }
    Ok((index, off))
}

impl AppendLog {
    fn append(&self, rec: &[u8]) -> Result<u64> {
        let mut t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let off = t.end;
        if self.prealloc && off + rec.len() as u64 > t.allocated {
            let new = t.allocated + PREALLOC;
            // SAFETY: fallocate on an open descriptor with plain integers.
            let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, new as libc::off_t) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            t.allocated = new;
        }
        // One write(2) (O_APPEND: at the end, growing the file) or, when
        // preallocated, one pwrite(2) at the tail; the durable class adds
        // one fdatasync(2), under the lock (no group commit: this is the
        // simple log the target names).
        if self.prealloc {
            self.file.write_all_at(rec, off)?;
        } else {
            (&self.file).write_all(rec)?;
        }
        if self.durable {
            self.file.sync_data()?;
        }
        t.end = off + rec.len() as u64;
        Ok(off)
    }
}

impl Engine for AppendLog {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        let off = self.append(&record(PUT, id, data))?;
        let place = (off + (HEAD + id.len()) as u64, data.len() as u32);
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), place);
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let Some((off, len)) = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
        else {
            return Ok(None);
        };
        let mut buf = vec![0; len as usize];
        self.file.read_exact_at(&mut buf, off)?;
        Ok(Some(buf))
    }
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        let Some((off, len)) = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
        else {
            buf.clear();
            return Ok(false);
        };
        buf.resize(len as usize, 0);
        self.file.read_exact_at(buf, off)?;
        Ok(true)
    }
    fn touch(&self, id: &str) -> Result<bool> {
        if !self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
        {
            return Ok(false);
        }
        self.append(&record(TOUCH, id, &[]))?;
        Ok(true)
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.append(&record(DELETE, id, &[]))?;
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }
    fn compact(&mut self) -> Result<bool> {
        // Copy the live records into a new file, sync it, rename it over.
        let tmp = self.path.with_extension("compact");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        let mut index = Index::new();
        let mut off = 0u64;
        let mut data = Vec::new();
        for (id, &(at, len)) in self
            .index
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            data.resize(len as usize, 0);
            self.file.read_exact_at(&mut data, at)?;
            let rec = record(PUT, id, &data);
            out.write_all(&rec)?;
            index.insert(id.clone(), (off + (HEAD + id.len()) as u64, len));
            off += rec.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
        self.file = open_file(&self.path, self.prealloc)?;
        *self.index.get_mut().unwrap_or_else(|e| e.into_inner()) = index;
        *self.tail.get_mut().unwrap_or_else(|e| e.into_inner()) = Tail {
            end: off,
            allocated: off,
        };
        Ok(true)
    }
}

/// What the in-memory maps keep per id: the modification time and the
/// data, and for `hashmap+crc` a CRC-32 of the data beside them.
trait Value: Send + Sync + 'static {
    fn new(data: &[u8]) -> Self;
    /// The data, checked first where a checksum is kept.
    fn data(&self) -> Result<&[u8]>;
    fn modified(&mut self) -> &mut u64;
}

/// The ceiling's value: `(modified, data)`, nothing checked.
struct Plain(u64, Vec<u8>);

impl Value for Plain {
    fn new(data: &[u8]) -> Plain {
        Plain(now_ms(), data.to_vec())
    }
    fn data(&self) -> Result<&[u8]> {
        Ok(&self.1)
    }
    fn modified(&mut self) -> &mut u64 {
        &mut self.0
    }
}

/// `hashmap+crc`'s value: a CRC-32 of the data computed on save and checked
/// on every load before the data is copied out, as every sessionlog load
/// checks its record's (it tells the check's cost from the rest).
struct Crc(u64, u32, Vec<u8>);

impl Value for Crc {
    fn new(data: &[u8]) -> Crc {
        Crc(now_ms(), crc32fast::hash(data), data.to_vec())
    }
    fn data(&self) -> Result<&[u8]> {
        if crc32fast::hash(&self.2) != self.1 {
            return Err("a value's checksum does not match".into());
        }
        Ok(&self.2)
    }
    fn modified(&mut self) -> &mut u64 {
        &mut self.0
    }
}

/// The ceiling: no persistence, no encoding, one lock.
struct MemMap<V> {
    map: RwLock<HashMap<Box<str>, V>>,
}

fn open_map<V: Value>() -> Result<Box<dyn Engine>> {
    Ok(Box::new(MemMap::<V> {
        map: RwLock::new(HashMap::new()),
    }))
}

pub fn open_hashmap(_dir: &Path, _mode: Mode) -> Result<Box<dyn Engine>> {
    open_map::<Plain>()
}

/// The HashMap that checks a CRC-32 of each value on load.
pub fn open_checked_hashmap(_dir: &Path, _mode: Mode) -> Result<Box<dyn Engine>> {
    open_map::<Crc>()
}

impl<V: Value> Engine for MemMap<V> {
    fn save(&self, id: &str, data: &[u8]) -> Result<()> {
        let v = V::new(data);
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), v);
        Ok(())
    }
    fn load(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        m.get(id).map(|v| v.data().map(<[u8]>::to_vec)).transpose()
    }
    fn load_into(&self, id: &str, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        let Some(v) = m.get(id) else {
            return Ok(false);
        };
        buf.extend_from_slice(v.data()?);
        Ok(true)
    }
    fn touch(&self, id: &str) -> Result<bool> {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        Ok(m.get_mut(id).map(|v| *v.modified() = now_ms()).is_some())
    }
    fn delete(&self, id: &str) -> Result<()> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }
}
