//! A file of the store reached by name only through the store's directory
//! descriptor (`crate::store_dir`, opened once per handle).

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::store_dir::{self, Found, StoreDir};
use crate::trust::Create;
use crate::trust::Owner;

/// `<path><suffix>`, e.g. `sessions.db.lock`: a label for messages and
/// hooks (files are reached through a [`Site`]).
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A file of the store: the store's directory, opened once per handle,
/// and the file's name in it. Every operation on the file by name goes
/// through the directory's descriptor (see `store_dir`); the path is for
/// messages only.
#[derive(Clone, Debug)]
pub(crate) struct Site {
    pub dir: Arc<StoreDir>,
    pub name: OsString,
    pub path: PathBuf,
}

impl Site {
    /// The file `name` of the directory `dir`.
    pub fn new(dir: Arc<StoreDir>, name: OsString) -> Site {
        let path = dir.join(&name);
        Site { dir, name, path }
    }

    /// `<name><suffix>` in the same directory.
    pub fn sibling(&self, suffix: &str) -> Site {
        Site {
            dir: Arc::clone(&self.dir),
            name: store_dir::with_suffix(&self.name, suffix),
            path: sibling(&self.path, suffix),
        }
    }

    /// Opens the file (see [`StoreDir::open_file`]).
    pub fn open(&self, create: Create, owner: Owner) -> Result<File> {
        self.dir.open_file(&self.name, create, owner)
    }

    /// Opens the file for reading (see [`StoreDir::open_read`]).
    pub fn open_read(&self, owner: Owner) -> Result<Option<File>> {
        self.dir.open_read(&self.name, owner)
    }

    /// What is at the name now (not following a link), or `None`.
    pub fn stat(&self) -> Result<Option<Found>> {
        self.dir
            .stat(&self.name)
            .map_err(|e| Error::io(&self.path, "stat", e))
    }

    /// Whether the name now holds the file with this device and inode.
    pub fn holds(&self, ino: (u64, u64)) -> bool {
        self.dir
            .stat(&self.name)
            .is_ok_and(|f| f.is_some_and(|f| f.ino() == ino))
    }

    /// Renames this file over `to` (in the same directory).
    pub fn rename_to(&self, to: &Site) -> io::Result<()> {
        self.dir.rename(&self.name, &to.name)
    }

    /// Removes the file.
    pub fn remove(&self) -> io::Result<()> {
        self.dir.unlink(&self.name)
    }

    /// fsyncs the directory, making a create or rename in it durable.
    pub fn sync_dir(&self) -> Result<()> {
        self.dir.sync()
    }
}
