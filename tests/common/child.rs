//! Child processes for multi-process and crash tests: the test binary
//! re-runs itself with `--exact <test>` and a role in the environment.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

const ROLE: &str = "SESSIONLOG_TEST_ROLE";

/// The role this process was started with, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Starts the test `test` of this binary as a child in `role`, with
/// `vars` in its environment and its stdout piped.
pub fn spawn(test: &str, role: &str, vars: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Lines a child printed that start with `prefix` (the test harness prints
/// its own lines too).
pub struct Reader {
    lines: Lines<BufReader<ChildStdout>>,
}

impl Reader {
    pub fn new(child: &mut Child) -> Reader {
        Reader {
            lines: BufReader::new(child.stdout.take().expect("piped stdout")).lines(),
        }
    }

    /// The next protocol line (one starting with an upper-case word and a
    /// space, or exactly an upper-case word), or `None` at end of output.
    pub fn next(&mut self) -> Option<String> {
        for line in self.lines.by_ref() {
            let line = line.ok()?;
            let word = line.split(' ').next().unwrap_or("");
            if !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase()) {
                return Some(line);
            }
        }
        None
    }
}

/// Kills a child with SIGKILL and reaps it.
pub fn kill9(child: &mut Child) {
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    assert!(
        rc == 0 || child.try_wait().ok().flatten().is_some(),
        "kill failed"
    );
    let _ = child.wait();
}

/// A small deterministic random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn from_env_or_time() -> Rng {
        let seed = std::env::var("SESSIONLOG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("random seed {seed} (set SESSIONLOG_TEST_SEED to replay)");
        Rng::new(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Data that encodes its own id and version, so any stored value can be
/// checked for being exactly what was saved for that version.
pub fn versioned_data(id: &str, version: u64, len: usize) -> Vec<u8> {
    let head = format!("{id}:{version}:");
    let mut v = head.clone().into_bytes();
    let mut x = version.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id.len() as u64 | 1;
    while v.len() < len.max(head.len()) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}
