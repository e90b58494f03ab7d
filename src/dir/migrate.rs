//! Moving a store written before digest names (DESIGN.md §11, "Names") to
//! them.
//!
//! Such a store named each file `s-<base32 of the id>`, so that anyone who
//! could list the directory held every session id. The first open by this
//! version renames every such file to its digest name under the write
//! lock, makes the directory durable, and then creates `.hashed-names`;
//! later opens see that file and list nothing. The renames need no file to
//! be read: the old name decodes to the id, and the id gives the new name.
//! A crash part way leaves some files renamed and no `.hashed-names`: the
//! next open finishes the job. `setup` and `delete_old_sessions` run it
//! again whatever the marker says, for files a process of an older version
//! still sharing the directory wrote since (run every process sharing a
//! directory at one version; an older one does not find renamed files).

use crate::error::Result;
use crate::trust::Create;

use super::file::{MARKER_NAME, file_name, id_from_legacy_name};
use super::handle::DirHandle;

/// Whether the directory may still hold old names (no `.hashed-names`).
pub(super) fn needed(dir: &DirHandle) -> Result<bool> {
    Ok(!dir.exists(MARKER_NAME)?)
}

/// Renames every old-style file to its digest name, makes that durable,
/// and marks the directory done. Call with the write lock held. If both
/// names exist, the file at the digest name was written by this version,
/// later: the old one is removed. Returns how many files were moved.
pub(super) fn run(dir: &DirHandle) -> Result<usize> {
    let old: Vec<String> = dir
        .names()?
        .filter(|n| {
            n.as_ref()
                .map_or(true, |n| id_from_legacy_name(n).is_some())
        })
        .collect::<Result<_>>()?;
    let mut moved = 0;
    let changed = !old.is_empty();
    for name in old {
        let Some(id) = id_from_legacy_name(&name) else {
            continue;
        };
        let new = file_name(&id);
        if dir.exists(&new)? {
            dir.remove(&name)?;
        } else {
            dir.rename(&name, &new)?;
            moved += 1;
        }
    }
    if changed {
        dir.sync()?;
    }
    if needed(dir)? {
        drop(dir.open_file(MARKER_NAME, Create::IfMissing)?);
        dir.sync()?;
    }
    Ok(moved)
}
