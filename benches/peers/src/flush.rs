//! `--flush-probe`: how many flushes this disk completes per second when
//! 1, 2 or 4 threads flush at once, with no engine in the way. Each thread
//! writes a record of the durable phases' size (`32 + B + 8` bytes) at the
//! tail of its own file, already written with zeros and synced (so that no
//! flush has to record a new file size or extent), and makes it durable
//! with `pwritev2(RWF_DSYNC)`, as sessionlog's `SyncPolicy::Always` does,
//! or with `pwrite` + `fdatasync`. If 4 threads complete fewer than 3× the
//! flushes of 1, group commit is what can make 4 durable savers go faster
//! than the disk's own concurrency, and nothing else can.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::engines::Result;

/// How long each configuration runs.
const RUN: Duration = Duration::from_secs(3);
/// Each thread's file: zeroed and synced before the run.
const FILE: u64 = 64 << 20;

#[derive(Clone, Copy)]
enum How {
    /// `pwritev2(.., RWF_DSYNC)`: the range and a flush of the disk cache.
    Dsync,
    /// `pwrite` then `fdatasync`.
    Fdatasync,
}

fn zeroed(path: &Path) -> Result<File> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..FILE / chunk.len() as u64 {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    Ok(f)
}

fn flush(f: &File, rec: &[u8], off: u64, how: How) -> Result<()> {
    match how {
        How::Fdatasync => {
            f.write_all_at(rec, off)?;
            f.sync_data()?;
        }
        How::Dsync => {
            let iov = libc::iovec {
                iov_base: rec.as_ptr() as *mut libc::c_void,
                iov_len: rec.len(),
            };
            // SAFETY: `iov` describes `rec`, which outlives the call and is
            // only read by it; the descriptor is open for writing.
            let n = unsafe {
                libc::pwritev2(f.as_raw_fd(), &iov, 1, off as libc::off_t, libc::RWF_DSYNC)
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            if n as usize != rec.len() {
                return Err(format!("short write: {n} of {} bytes", rec.len()).into());
            }
        }
    }
    Ok(())
}

/// Flushes per second, all threads together.
fn probe(dir: &Path, threads: usize, rec_len: usize, how: How) -> Result<f64> {
    let files = (0..threads)
        .map(|t| zeroed(&dir.join(format!("flush-{t}"))))
        .collect::<Result<Vec<_>>>()?;
    let rec = vec![0x5au8; rec_len];
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = files
            .iter()
            .map(|f| {
                let (rec, stop, done) = (&rec, &stop, &done);
                s.spawn(move || -> Result<()> {
                    let mut off = 0;
                    while !stop.load(Ordering::Relaxed) && off + rec.len() as u64 <= FILE {
                        flush(f, rec, off, how)?;
                        off += rec.len() as u64;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            h.join().map_err(|_| "a flush thread panicked")??;
        }
        Ok(())
    })?;
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    for t in 0..threads {
        std::fs::remove_file(dir.join(format!("flush-{t}")))?;
    }
    Ok(rate)
}

/// Runs the probe `rounds` times and prints a Markdown table of medians.
pub fn run(dir: &Path, value_size: usize, rounds: usize) -> Result<()> {
    let rec_len = 32 + value_size + 8;
    let mut text = format!(
        "flushes per second of {rec_len}-byte records, each thread on its own zeroed file, \
         median of {rounds}; {}\n\n| method | 1 thread | 2 threads | 4 threads | 4 / 1 |\n|---|---:|---:|---:|---:|\n",
        crate::report::machine()
    );
    for (name, how) in [
        ("pwritev2(RWF_DSYNC)", How::Dsync),
        ("pwrite + fdatasync", How::Fdatasync),
    ] {
        let mut med = [0.0; 3];
        for (k, threads) in [1, 2, 4].into_iter().enumerate() {
            let mut v = (0..rounds)
                .map(|_| probe(dir, threads, rec_len, how))
                .collect::<Result<Vec<f64>>>()?;
            v.sort_by(f64::total_cmp);
            med[k] = v[v.len() / 2];
            eprintln!("{name}, {threads} thread(s): {:.0}/s", med[k]);
        }
        text.push_str(&format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2}× |\n",
            med[0],
            med[1],
            med[2],
            med[2] / med[0]
        ));
    }
    print!("{text}");
    Ok(())
}
