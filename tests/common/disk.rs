//! Small real disks for the full-disk tests: a tmpfs, or an ext4 made on
//! a file and loop-mounted. Both need root (CI runs as root); each is
//! unmounted when dropped, also when the test panics.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A filesystem mounted on a temporary directory for one test.
pub struct Disk {
    /// Where it is mounted.
    mnt: tempfile::TempDir,
    /// The ext4 image's directory (on the host filesystem), if any.
    _image: Option<tempfile::TempDir>,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

impl Disk {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it), or says
    /// why it could not.
    pub fn tmpfs(size: &str) -> Result<Disk, String> {
        let mnt = tempfile::tempdir().map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(mnt.path()))?;
        Ok(Disk { mnt, _image: None })
    }

    /// Makes an ext4 of `mib` MiB on a file (no blocks kept for root, so
    /// that root fills it as any user would) and loop-mounts it.
    pub fn ext4(mib: u64) -> Result<Disk, String> {
        let image = tempfile::tempdir().map_err(|e| e.to_string())?;
        let file = image.path().join("ext4.img");
        File::create(&file)
            .and_then(|f| f.set_len(mib << 20))
            .map_err(|e| format!("create the image: {e}"))?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-E", "lazy_itable_init=0"])
            .arg(&file))?;
        let mnt = tempfile::tempdir().map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(mnt.path()))?;
        let disk = Disk {
            mnt,
            _image: Some(image),
        };
        run(Command::new("chmod").arg("0700").arg(disk.path()))?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        self.mnt.path()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.mnt.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a panic while a file was open): detach it.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.mnt.path())
                .status();
        }
    }
}

/// Writes a file until the disk is full, then gives back `room` bytes of
/// it: the disk then has about that much free (tmpfs counts pages, ext4
/// blocks).
pub fn leave_free(dir: &Path, room: u64) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = File::create(&path).expect("create ballast");
    let chunk = vec![0xBA; 64 << 10];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(n) if n > 0 => written += n as u64,
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("write ballast: {e}"),
        }
    }
    // ext4 may take a last partial block after a short write: fill it.
    loop {
        match f.write(&chunk[..512]) {
            Ok(n) if n > 0 => written += n as u64,
            _ => break,
        }
    }
    f.set_len(written.saturating_sub(room))
        .expect("shrink ballast");
    f.sync_all().expect("sync ballast");
    path
}
