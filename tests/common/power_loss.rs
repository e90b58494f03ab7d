//! What the power-loss image tests share: a fresh store's bytes, laying a
//! write onto an image, and opening an image as a store.

use std::path::{Path, PathBuf};

use sessionlog::LogStore;

use super::child::Rng;

/// Creates the store `s.db` in `dir`; returns its path and its bytes, the
/// image every power-loss image starts from.
pub fn fresh_store(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("s.db");
    drop(
        LogStore::options()
            .background(false)
            .open(&path)
            .expect("create"),
    );
    let base = std::fs::read(&path).expect("read");
    (path, base)
}

/// Writes `bytes` at `offset` of `img`, growing it with zeros if needed.
pub fn apply(img: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset as usize + bytes.len();
    if img.len() < end {
        img.resize(end, 0);
    }
    img[offset as usize..end].copy_from_slice(bytes);
}

/// Writes `img` as `image.db` in `dir` (mode 0600, as a store's own files
/// are; no lock file left from the last image) and opens it; `k` names the
/// event the image was taken at in the panic if it does not open.
pub fn open_image(dir: &Path, img: &[u8], k: usize) -> LogStore {
    let img_path = dir.join("image.db");
    std::fs::write(&img_path, img).expect("write image");
    std::fs::set_permissions(
        &img_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod image");
    let _ = std::fs::remove_file(dir.join("image.db.lock"));
    LogStore::options()
        .background(false)
        .open(&img_path)
        .unwrap_or_else(|e| panic!("image at event {k} does not open: {e}"))
}

/// Lays onto `img` the first `keep` of the writes `pending` (offset,
/// bytes; not synced, in the order made) and a random prefix of the next
/// one, the write a power loss tore. A header word (8 bytes, one aligned
/// store inside a sector) is written whole or not at all (DESIGN.md, the
/// assumptions), so a torn one is left out.
pub fn apply_torn_prefix<B: AsRef<[u8]>>(
    img: &mut Vec<u8>,
    pending: &[(u64, B)],
    keep: usize,
    rng: &mut Rng,
) {
    for (j, (off, b)) in pending.iter().enumerate().take(keep + 1) {
        let b = b.as_ref();
        if j < keep {
            apply(img, *off, b);
        } else if b.len() != 8 {
            let cut = rng.below(b.len() as u64 + 1) as usize;
            apply(img, *off, &b[..cut]);
        }
    }
}
