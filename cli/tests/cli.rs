//! Guards the `sessionlog` admin command as users run it: every command's
//! happy path through the real binary, exit codes (0 ok, 1 damage or
//! failure, 2 usage), refusal to create stores by accident, damage found
//! and repaired by `check`, and export/import round trips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use sessionlog::internals::format::{HEADER_SIZE, record_len};
use sessionlog::{HashedIds, LogStore, Session, SessionId, SessionStore, SyncPolicy};

fn sessionlog(args: &[&str]) -> Output {
    run(args, None)
}

fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionlog"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary runs");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin is piped");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
    }
    child.wait_with_output().expect("the binary finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A synced store with three sessions; returns its path and the ids.
fn populated(dir: &Path) -> (PathBuf, Vec<SessionId>) {
    let path = dir.join("s.db");
    let store = LogStore::options()
        .sync(SyncPolicy::Always)
        .background(false)
        .open(&path)
        .expect("open");
    let mut ids = Vec::new();
    for (id, data) in [
        ("alice", &b"user=alice"[..]),
        ("bob", &[0u8, 1, 2, 255][..]),
        ("carol", b"user=carol;cart=3"),
    ] {
        let id = SessionId::new(id).expect("id");
        let mut session = Session::new(id.clone(), data.to_vec())
            .with_expires(SystemTime::now() + Duration::from_secs(3600));
        store.save_session(&mut session).expect("save");
        ids.push(id);
    }
    (path, ids)
}

#[test]
fn help_documents_the_exit_codes() {
    let o = sessionlog(&["--help"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Exit codes"), "{}", stdout(&o));
    assert_eq!(code(&sessionlog(&["frobnicate"])), 2);
}

#[test]
fn setup_creates_then_confirms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new.db");
    let o = sessionlog(&["setup", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("created"));
    assert!(path.exists());
    let o = sessionlog(&["setup", s(&path)]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("valid store with 0 sessions"));
}

#[test]
fn commands_refuse_a_missing_store_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing.db");
    let p = s(&path);
    for args in [
        vec!["list", p],
        vec!["show", p, "abc"],
        vec!["delete", p, "abc"],
        vec!["expire", p, "--idle", "2h"],
        vec!["compact", p],
        vec!["check", p],
        vec!["stats", p],
        vec!["export", p],
    ] {
        let o = sessionlog(&args);
        assert_eq!(code(&o), 1, "{args:?}");
        assert!(
            stderr(&o).contains(&format!("no store at {p}")),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!o.stderr.starts_with(b"thread"), "a panic: {}", stderr(&o));
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("readdir").collect();
    assert!(left.is_empty(), "created {left:?}");
}

#[test]
fn a_non_store_file_is_named_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "hello").expect("write");
    for cmd in ["list", "stats", "check", "setup", "compact"] {
        let o = sessionlog(&[cmd, s(&path)]);
        assert_eq!(code(&o), 1, "{cmd}");
        let err = stderr(&o);
        assert!(err.contains("not a sessionlog store"), "{cmd}: {err}");
        assert!(err.contains(s(&path)), "{cmd}: {err}");
    }
    assert_eq!(std::fs::read(&path).expect("read"), b"hello");
    assert!(!dir.path().join("notes.txt.lock").exists());
}

#[test]
fn bad_ids_and_durations_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let o = sessionlog(&["show", s(&path), "../etc/passwd"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("invalid session id"), "{}", stderr(&o));
    assert_eq!(code(&sessionlog(&["delete", s(&path), "a b"])), 2);
    let o = sessionlog(&["expire", s(&path), "--idle", "5 parsecs"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--idle"), "{}", stderr(&o));
    assert_eq!(code(&sessionlog(&["expire", s(&path), "--idle", "0s"])), 2);
}

#[test]
fn list_show_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let p = s(&path);

    let o = sessionlog(&["list", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("ID"));
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("carol") && out.contains("17"), "{out}");

    let o = sessionlog(&["list", p, "--limit", "2", "--json"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0]["id"].is_string() && lines[0]["version"] == 1);

    let o = sessionlog(&["show", p, "alice"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("user=alice"), "{}", stdout(&o));
    let o = sessionlog(&["show", p, "bob"]);
    assert!(stdout(&o).contains("00 01 02 ff"), "{}", stdout(&o));
    let o = sessionlog(&["show", p, "bob", "--raw"]);
    assert_eq!(o.stdout, [0u8, 1, 2, 255]);
    let o = sessionlog(&["show", p, "nobody"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no session nobody"));

    let o = sessionlog(&["delete", p, "alice", "nobody"]);
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("deleted alice"));
    assert!(stderr(&o).contains("no session nobody"));
    let o = sessionlog(&["delete", p, "bob"]);
    assert_eq!(code(&o), 0);
    let store = LogStore::open(&path).expect("open");
    let left: Vec<String> = store
        .iter_sessions()
        .expect("iter")
        .map(|s| s.expect("session").id.to_string())
        .collect();
    assert_eq!(left, ["carol"]);
}

/// A base64url id starts with `-` one time in 64: `show` and `delete` take
/// it as an id, not as an option, and options still work beside it.
#[test]
fn ids_that_start_with_a_hyphen_are_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let store = LogStore::options()
        .background(false)
        .open(&path)
        .expect("open");
    for id in ["-Xq3vT9a", "--raw"] {
        let id = SessionId::new(id).expect("valid id");
        store
            .save_session(&mut Session::new(id, b"hyphen".to_vec()))
            .expect("save");
    }
    drop(store);
    let p = s(&path);

    let o = sessionlog(&["show", p, "-Xq3vT9a", "--raw"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout, b"hyphen");
    let o = sessionlog(&["show", p, "--raw", "-Xq3vT9a"]);
    assert_eq!(o.stdout, b"hyphen", "{}", stderr(&o));
    let o = sessionlog(&["delete", p, "-Xq3vT9a", "--raw"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted -Xq3vT9a"), "{}", stdout(&o));
    assert!(stdout(&o).contains("deleted --raw"), "{}", stdout(&o));
    let o = sessionlog(&["show", p, "-Xq3vT9a"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("no session -Xq3vT9a"), "{}", stderr(&o));
}

#[test]
fn expire_compact_and_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let p = s(&path);
    let o = sessionlog(&["expire", p, "--idle", "14d"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("removed 0 sessions"), "{}", stdout(&o));

    let o = sessionlog(&["delete", p, "alice"]);
    assert_eq!(code(&o), 0);
    let o = sessionlog(&["compact", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("kept 2 sessions, dropped 0"),
        "{}",
        stdout(&o)
    );

    // expire and compact each wrote a new generation.
    let o = sessionlog(&["stats", p]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("sessions:        2"), "{}", stdout(&o));
    assert!(stdout(&o).contains("generation:      3"), "{}", stdout(&o));
    let o = sessionlog(&["stats", p, "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("JSON");
    assert_eq!(v["sessions"], 2);
    assert_eq!(v["last_compaction"]["kept"], 2);

    // Sessions idle for a millisecond are all gone.
    std::thread::sleep(Duration::from_millis(5));
    let o = sessionlog(&["expire", p, "--idle", "1ms"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("removed 2 sessions"), "{}", stdout(&o));
}

/// `expire` says how many sessions it removed because their deadline had
/// passed (or the store's own idle limit) and how many because they were
/// idle for `--idle`, each counted apart.
#[test]
fn expire_reports_deadline_and_idle_expiry_apart() {
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    // Sessions written as a backup restores them: `fresh` saved now,
    // `idle` 20 days ago, `deadline` now with a deadline an hour ago,
    // `both` 20 days ago with a deadline a day ago (its deadline passed:
    // counted as that).
    let fill = |path: &Path| {
        let store = LogStore::options()
            .background(false)
            .open(path)
            .expect("open");
        for (id, modified, expires) in [
            ("fresh", now, None),
            ("idle", now - 20 * day, None),
            ("deadline", now, Some(now - Duration::from_secs(3600))),
            ("both", now - 20 * day, Some(now - day)),
        ] {
            let id = SessionId::new(id).expect("id");
            let session = Session::restore(id, b"x".to_vec(), expires, modified, 1);
            store.restore_session(&session).expect("restore");
        }
        store.sync().expect("sync");
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    fill(&path);
    let o = sessionlog(&["expire", s(&path), "--idle", "14d"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "removed 3 sessions: 2 past their deadline, 1 idle for 14days or longer; 1 remain\n"
    );

    // A store whose own idle limit (18 days) already ended `idle`: it
    // counts with the deadlines, and --idle 14d finds none left.
    let path = dir.path().join("p.db");
    let o = sessionlog(&["setup", s(&path), "--max-idle", "18d"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    fill(&path);
    let o = sessionlog(&["expire", s(&path), "--idle", "14d"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "removed 3 sessions: 3 past their deadline or the store's idle limit (18days), \
         0 idle for 14days or longer; 1 remain\n"
    );
    // With a shorter --idle than the store's, the sessions idle between
    // the two count as idle.
    let path = dir.path().join("q.db");
    let o = sessionlog(&["setup", s(&path), "--max-idle", "25d"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    fill(&path);
    let o = sessionlog(&["expire", s(&path), "--idle", "14d"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "removed 3 sessions: 2 past their deadline or the store's idle limit (25days), \
         1 idle for 14days or longer; 1 remain\n"
    );
}

#[test]
fn check_finds_corruption_and_repair_salvages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let p = s(&path);
    let o = sessionlog(&["check", p]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("3 valid (3 put"), "{}", stdout(&o));

    // Flip a byte in the data of the second record (bob's).
    let second = HEADER_SIZE + record_len(5, 10) as u64;
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[second as usize + 40 + 3 + 1] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");

    let o = sessionlog(&["check", p]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("at offset {second}")), "{out}");
    assert!(out.contains("checksum mismatch"), "{out}");
    let third = second + record_len(3, 4) as u64;
    assert!(out.contains(&format!("resume at offset {third}")), "{out}");

    // Opening refuses the damage and points at check --repair.
    let o = sessionlog(&["list", p]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("check --repair"), "{}", stderr(&o));

    let o = sessionlog(&["check", p, "--repair"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&format!("at offset {second}")), "{out}");
    assert!(out.contains("damaged file is kept at"), "{out}");
    assert!(out.contains("now holds 2 session(s)"), "{out}");

    let o = sessionlog(&["check", p]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let o = sessionlog(&["list", p]);
    assert!(stdout(&o).contains("alice") && !stdout(&o).contains("bob"));
}

/// Issue 27, point 4: a damaged header (a flipped bit at each field, the
/// generation, creation time, compaction figures, salt, checksum, magic,
/// version, the committed and synced words), or a file cut inside it,
/// used to stop `check --repair` at the header check like every other
/// command. Now repair rebuilds the header and every session comes back
/// (none, for a file cut inside the header, which holds no record).
#[test]
fn check_repair_mends_a_damaged_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let p = s(&path);
    let original = std::fs::read(&path).expect("read");
    for (offset, bit) in [
        (16, 0),
        (24, 3),
        (40, 7),
        (64, 5),
        (70, 1),
        (0, 2),
        (8, 1),
        (128, 4),
        (136, 6),
    ] {
        let mut bytes = original.clone();
        bytes[offset] ^= 1 << bit;
        std::fs::write(&path, &bytes).expect("write");
        let o = sessionlog(&["list", p]);
        assert_eq!(code(&o), 1, "byte {offset}: {}", stdout(&o));
        assert!(stderr(&o).contains("check --repair"), "{}", stderr(&o));
        let o = sessionlog(&["check", p, "--repair"]);
        assert_eq!(code(&o), 0, "byte {offset}: {}{}", stdout(&o), stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("result: repaired"), "byte {offset}: {out}");
        assert!(
            out.contains("now holds 3 session(s)"),
            "byte {offset}: {out}"
        );
        let o = sessionlog(&["list", p]);
        assert_eq!(code(&o), 0, "byte {offset}");
        for name in ["alice", "bob", "carol"] {
            assert!(stdout(&o).contains(name), "byte {offset}: {}", stdout(&o));
        }
        assert_eq!(code(&sessionlog(&["check", p])), 0, "byte {offset}");
    }
    std::fs::write(&path, &original[..100]).expect("cut");
    let o = sessionlog(&["check", p, "--repair"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("ends inside the header"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("now holds 0 session(s)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(code(&sessionlog(&["check", p])), 0);
}

#[test]
fn check_reports_a_torn_tail_without_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    {
        // Never synced: every record is past the synced end.
        let store = LogStore::options()
            .sync(SyncPolicy::Never)
            .background(false)
            .open(&path)
            .expect("open");
        let mut a = Session::new(SessionId::new("a").expect("id"), b"x".to_vec());
        store.save_session(&mut a).expect("save");
    }
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[HEADER_SIZE as usize + 41] ^= 1; // the data byte
    std::fs::write(&path, &bytes).expect("write");
    let o = sessionlog(&["check", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("torn tail: 48 bytes at offset {HEADER_SIZE}")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn export_import_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (from, ids) = populated(dir.path());
    {
        // A second save: version 2 must survive the move too.
        let store = LogStore::open(&from).expect("open");
        let mut again = store.load_session(&ids[0]).expect("load").expect("present");
        store.save_session(&mut again).expect("save");
    }
    let to = dir.path().join("copy.db");
    let o = sessionlog(&["export", s(&from)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3);
    let o = run(&["import", s(&to)], Some(&o.stdout));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("imported 3 sessions"), "{}", stdout(&o));

    let all = |p: &Path| {
        let store = LogStore::open(p).expect("open");
        let mut v: Vec<_> = store
            .iter_sessions()
            .expect("iter")
            .map(|s| {
                let s = s.expect("session");
                (
                    s.id.to_string(),
                    s.modified(),
                    s.expires,
                    s.version(),
                    s.data,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(all(&from), all(&to));
}

/// Regression: a 300 MB line used to take 809 MB. A line longer than the
/// largest session needs is refused by number, in bounded memory, and the
/// lines after it are imported.
#[test]
fn import_skips_a_line_longer_than_any_session_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("i.db");
    let mut input = b"{\"id\":\"long\",\"data\":\"".to_vec();
    input.resize(input.len() + (24 << 20), b'A');
    input.extend_from_slice(b"\"}\n{\"id\":\"after\",\"data\":\"aGk=\"}\n");
    let o = run(&["import", s(&path)], Some(&input));
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("line 1: longer than"), "{}", stderr(&o));
    assert!(stdout(&o).contains("imported 1 sessions"), "{}", stdout(&o));
    let store = LogStore::open(&path).expect("open");
    assert!(
        store
            .has_session(&SessionId::new("after").expect("id"))
            .expect("has")
    );
}

#[test]
fn import_reports_bad_lines_by_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("i.db");
    let input = concat!(
        "{\"id\":\"good1\",\"data\":\"aGk=\",\"modified\":\"2026-01-01T00:00:00Z\",\"expires\":null}\n",
        "this is not json\n",
        "{\"id\":\"bad/id\",\"data\":\"\"}\n",
        "{\"id\":\"good2\",\"data\":\"\"}\n",
        "{\"id\":\"nodata\"}\n",
    );
    let o = run(&["import", s(&path)], Some(input.as_bytes()));
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    for n in [2, 3, 5] {
        assert!(err.contains(&format!("line {n}:")), "{err}");
    }
    assert!(
        !err.contains("line 1:") && !err.contains("line 4:"),
        "{err}"
    );
    assert!(stdout(&o).contains("imported 2 sessions"), "{}", stdout(&o));
    let store = LogStore::open(&path).expect("open");
    let good1 = store
        .load_session(&SessionId::new("good1").expect("id"))
        .expect("load")
        .expect("imported");
    assert_eq!(good1.data, b"hi");
    assert_eq!(
        good1
            .modified()
            .map(humantime::format_rfc3339_seconds)
            .map(|t| t.to_string()),
        Some("2026-01-01T00:00:00Z".to_owned())
    );
}

#[test]
fn bench_runs_every_phase() {
    let o = sessionlog(&["bench", "--sessions", "300", "--value-size", "64"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    for phase in [
        "save",
        "load",
        "overwrite",
        "mixed",
        "touch",
        "delete",
        "reopen",
        // Issue 28: saves with an owner beside the same without, and
        // sessions_of for each of the 30 owners (10 sessions each).
        "save, owner",
        "overwrite, owner",
        "sessions_of",
    ] {
        assert!(out.contains(phase), "{phase}: {out}");
    }
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["sessions_of", "30"])),
        "{out}"
    );
    assert!(out.contains("p50") && out.contains("p99"), "{out}");
    assert_other_process_rows(&out);
    let o = sessionlog(&[
        "bench",
        "--sessions",
        "50",
        "--per-owner",
        "0",
        "--compaction-rounds",
        "0",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stdout(&o).contains("owner"), "{}", stdout(&o));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.db");
    let o = sessionlog(&[
        "bench",
        "--sessions",
        "200",
        "--threads",
        "2",
        "--sync",
        "always",
        s(&path),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(path.exists(), "a store given by path is kept");
    assert_eq!(code(&sessionlog(&["bench", "--sync", "sometimes"])), 2);

    // The paced compaction-under-load phase, on the store given by path.
    let o = sessionlog(&[
        "bench",
        "--yes",
        "--sessions",
        "100",
        "--value-size",
        "16",
        "--compaction-rounds",
        "1",
        "--load-rate",
        "2000",
        s(&path),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("2000 ops/s each"), "{out}");
    assert_other_process_rows(&out);
}

/// Each phase's row is printed when its phase ends, not when the run
/// does: the rows of the phases before the compaction phase arrive while
/// the bench still has 100 compaction rounds (of at least 1.3 s each: a
/// one-second window with no compaction, then one around the compaction)
/// ahead of it.
#[test]
fn bench_prints_each_row_as_its_phase_ends() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionlog"))
        .args(["bench", "--sessions", "300", "--value-size", "64"])
        .args(["--per-owner", "0", "--compaction-rounds", "100", s(&path)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut phases = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read a line");
        let name = line.get(..18).unwrap_or(&line).trim_end().to_owned();
        phases.push(name);
        if line.starts_with("reopen, compacted") {
            break;
        }
    }
    let running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        running,
        "the bench had ended when its first rows came: {phases:?}"
    );
    assert_eq!(
        phases[1..],
        [
            "phase",
            "save",
            "load",
            "overwrite",
            "mixed 90/10",
            "reopen, replay",
            "reopen, hint",
            "reopen, compacted"
        ]
    );
}

/// The compaction-under-load table has the other process's four rows
/// (load and save, quiet and compacting), each load row with operations.
fn assert_other_process_rows(out: &str) {
    assert!(out.contains("compaction under load"), "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter_map(|l| l.strip_prefix("other process "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let kinds: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        kinds,
        [
            ("load", "quiet"),
            ("load", "compacting"),
            ("save", "quiet"),
            ("save", "compacting")
        ],
        "{out}"
    );
    for r in &rows[..2] {
        let ops: u64 = r[2].parse().expect("a count of operations");
        assert!(ops > 0, "{out}");
    }
}

/// A bench whose store could not fit on the disk is refused before it
/// writes anything, saying what it needs and where.
#[test]
fn bench_refuses_what_the_disk_cannot_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.db");
    // 100M sessions of 16 MiB: about 8 PB, on no disk of this world.
    let o = sessionlog(&[
        "bench",
        "--sessions",
        "100000000",
        "--value-size",
        "16777216",
        s(&path),
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("free in") && err.contains(s(dir.path())),
        "{err}"
    );
    assert!(!path.exists(), "nothing was created");
}

#[test]
fn bench_follower_is_hidden() {
    let help = stdout(&sessionlog(&["--help"]));
    assert!(help.contains("bench"), "{help}");
    assert!(!help.contains("bench-follower"), "{help}");
    assert!(!help.contains("bench-durable"), "{help}");
}

/// `bench --durable-processes` prints one row per count of processes, with
/// the store's durable saves and the raw flushes beside them, and leaves
/// no store behind.
#[test]
fn bench_durable_processes_prints_a_row_per_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("d.db");
    let o = sessionlog(&[
        "bench",
        "--durable-processes",
        "1,2",
        "--durable-seconds",
        "1",
        "--durable-rounds",
        "1",
        "--value-size",
        "64",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("raw flushes/s"), "{out}");
    for procs in ["1", "2"] {
        let row = out
            .lines()
            .find(|l| l.split('|').nth(1).map(str::trim) == Some(procs))
            .unwrap_or_else(|| panic!("no row for {procs}: {out}"));
        // processes | round 1 | median | × | raw | raw ×: numbers, the
        // saves above zero.
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let saves: f64 = cells[2].parse().unwrap_or_else(|_| panic!("{row}"));
        assert!(saves > 0.0, "{row}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "the bench's stores are removed"
    );
}

/// A store kept through `HashedIds`: `list` shows digests and no id,
/// `show` and `delete` take a digest, a unique prefix of 8 or more
/// characters, or the session's own id; an ambiguous or unknown prefix is
/// refused naming only what was typed; `export`/`import` carry the
/// digests, and the copy serves the same cookies.
#[test]
fn a_hashed_store_by_digest_and_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
    {
        let raw = LogStore::options()
            .sync(SyncPolicy::Always)
            .background(false)
            .open(&path)
            .expect("open");
        // two clear ids sharing a prefix, as in a store not yet moved
        for id in ["sharedprefix-a", "sharedprefix-b"] {
            let mut s = Session::new(SessionId::new(id).expect("id"), b"old".to_vec());
            raw.save_session(&mut s).expect("save");
        }
        let store = HashedIds::new(raw);
        for (i, id) in ids.iter().enumerate() {
            let mut s = Session::new(id.clone(), format!("user={i}").into_bytes());
            store.save_session(&mut s).expect("save");
        }
    }
    let digest = |id: &SessionId| HashedIds::<()>::stored_id(id).to_string();

    let o = sessionlog(&["list", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for id in &ids {
        assert!(stdout(&o).contains(&digest(id)));
        assert!(!stdout(&o).contains(id.as_str()), "list shows no id");
    }

    for arg in [
        digest(&ids[0]),
        digest(&ids[0])[2..10].to_owned(),
        ids[0].to_string(),
    ] {
        let o = sessionlog(&["show", "--", s(&path), &arg]);
        assert_eq!(code(&o), 0, "{arg}: {}", stderr(&o));
        assert!(stdout(&o).contains("user=0"), "{arg}: {}", stdout(&o));
    }

    let o = sessionlog(&["show", s(&path), "sharedpr"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("sharedpr is the start of more than one"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("sharedprefix-"),
        "names no id: {}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
    let o = sessionlog(&["show", s(&path), "zzzzzzzzzz"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("no session zzzzzzzzzz"),
        "{}",
        stderr(&o)
    );
    // a prefix shorter than 8 characters is not one
    let o = sessionlog(&["show", "--", s(&path), &digest(&ids[0])[..7]]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));

    let o = sessionlog(&["delete", "--", s(&path), &digest(&ids[1])[2..12]]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = sessionlog(&["delete", "--", s(&path), ids[2].as_str()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    {
        let store = HashedIds::new(LogStore::open(&path).expect("open"));
        assert!(!store.has_session(&ids[1]).expect("has"));
        assert!(!store.has_session(&ids[2]).expect("has"));
        assert!(store.has_session(&ids[0]).expect("has"));
    }

    let o = sessionlog(&["export", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let exported = stdout(&o);
    assert!(exported.contains(&digest(&ids[0])));
    assert!(
        !exported.contains(ids[0].as_str()),
        "the export holds no id"
    );
    let to = dir.path().join("copy.db");
    let o = run(&["import", s(&to)], Some(exported.as_bytes()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let copy = HashedIds::new(LogStore::open(&to).expect("open copy"));
    let s0 = copy
        .load_session(&ids[0])
        .expect("load")
        .expect("the cookie still works");
    assert_eq!(s0.data, b"user=0");
}

/// A store in a directory other users can write is refused with a message
/// naming the flag that exists, `--allow-others-to-write-directory`, which
/// then opens it (before or after the command's name).
#[test]
fn a_directory_others_can_write_is_refused_unless_the_flag_says_otherwise() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let path = dir.path().join("s.db");
    let p = path.to_str().expect("utf-8 path");
    let o = sessionlog(&["setup", p]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--allow-others-to-write-directory"),
        "{}",
        stderr(&o)
    );
    assert!(!path.exists(), "nothing created");
    let o = sessionlog(&["setup", "--allow-others-to-write-directory", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = sessionlog(&["--allow-others-to-write-directory", "compact", p]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// Issue 27, points 3 and 7: `setup` records the rules given, `policy`
/// shows and changes them, an application opening with other rules is
/// refused by name, and `stats` says how far the store is from its quota
/// and its space reserve.
#[test]
fn setup_records_a_policy_that_policy_changes_and_stats_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let o = sessionlog(&[
        "setup",
        s(&path),
        "--max-idle",
        "30m",
        "--max-sessions",
        "3",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = sessionlog(&["policy", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("max idle 30m; quota 3 sessions, no byte limit; when full: refuse"),
        "{}",
        stdout(&o)
    );
    // An application that asks for another idle limit is told whose it is.
    match LogStore::options()
        .max_idle(Duration::from_secs(3600))
        .background(false)
        .open(&path)
    {
        Err(sessionlog::Error::InvalidOption(m)) => assert!(m.contains("sessionlog policy"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let o = sessionlog(&["setup", s(&path), "--max-idle", "1h"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("records 1800000 ms"), "{}", stderr(&o));

    let store = LogStore::options()
        .background(false)
        .open(&path)
        .expect("open");
    for name in ["a", "b"] {
        store
            .save_session(&mut Session::new(
                SessionId::new(name).expect("id"),
                vec![0; 10],
            ))
            .expect("save");
    }
    drop(store);
    let o = sessionlog(&["stats", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("quota sessions:  2 of 3 (1 to go)"), "{out}");
    assert!(out.contains("quota bytes:     112 B (no limit)"), "{out}");
    assert!(out.contains("space reserve:   4.0 MiB (whole)"), "{out}");
    assert!(out.contains("disk free:"), "{out}");

    let o = sessionlog(&[
        "policy",
        s(&path),
        "--no-max-idle",
        "--max-bytes",
        "1000",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["max_idle_ms"], serde_json::Value::Null);
    assert_eq!(
        (v["max_sessions"].as_u64(), v["max_bytes"].as_u64()),
        (Some(3), Some(1000))
    );
    assert_eq!(v["recorded"], true);
    let o = sessionlog(&["stats", "--json", s(&path)]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["limits"]["used_bytes"].as_u64(), Some(112));
    assert_eq!(v["limits"]["reserve_bytes"].as_u64(), Some(4 << 20));
    let o = sessionlog(&["policy", s(&path), "--max-sessions", "0"]);
    assert_eq!(code(&o), 2, "a quota of 0 is a usage error");
}

/// Whether the calling test must stop here, skipped: true when not root
/// (CI runs as root), after a line on stderr that names the test and says
/// what it needs root for. Written to the file descriptor, past libtest's
/// capture of `eprintln!`, so that the skip shows whatever the outcome (as
/// the library's tests/common/root.rs does).
fn skip_unless_root(why: &str) -> bool {
    use std::io::Write;
    if rustix::process::geteuid().is_root() {
        return false;
    }
    let thread = std::thread::current();
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED (not root) cli: {}: {why}; run as root to run it",
        thread.name().unwrap_or("?")
    );
    true
}

/// A tmpfs mounted for one test (root: CI runs as root), unmounted when
/// dropped, also when the test panics.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.0.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
        }
    }
}

/// Issue 27, point 1, through the binary: a store filled to the last byte;
/// a logout still works, and `sessionlog expire` gives the space back (a
/// login works again, the reserve is back).
#[test]
fn expire_gives_back_a_disk_full_to_the_last_byte() {
    if skip_unless_root("mounts a 32 MiB tmpfs") {
        return;
    }
    let mnt = tempfile::tempdir().expect("tempdir");
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs"])
        .arg(mnt.path())
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "this test needs a tmpfs and mounting one failed as root: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk = Tmpfs(mnt);
    let path = disk.0.path().join("s.db");
    let store = LogStore::options()
        .background(false)
        .sync(SyncPolicy::Never)
        .open(&path)
        .expect("open");
    // A session a visitor, until not even an empty one fits.
    let mut n = 0usize;
    for size in [16 << 10, 256, 0] {
        loop {
            let mut s = Session::new(
                SessionId::new(format!("v{n:06}")).expect("id"),
                vec![1; size],
            );
            match store.save_session(&mut s) {
                Ok(()) => n += 1,
                Err(sessionlog::Error::Io { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    // The rest of the disk goes to another file.
    let ballast = disk.0.path().join("ballast");
    let mut f = std::fs::File::create(&ballast).expect("ballast");
    let chunk = vec![0u8; 4096];
    while std::io::Write::write(&mut f, &chunk).is_ok_and(|w| w > 0) {}
    // A logout on the full disk.
    let first = SessionId::new("v000000").expect("id");
    assert!(
        store
            .delete_session(&first)
            .expect("a logout on a full disk")
    );
    drop(store);
    // `sessionlog expire` (every session is idle for a millisecond by the
    // time it runs) frees the disk.
    let o = sessionlog(&["expire", s(&path), "--idle", "1ms"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("removed {} sessions", n - 1)),
        "{}",
        stdout(&o)
    );
    let o = sessionlog(&["stats", s(&path)]);
    assert!(
        stdout(&o).contains("space reserve:   4.0 MiB (whole)"),
        "{}",
        stdout(&o)
    );
    let store = LogStore::options()
        .background(false)
        .open(&path)
        .expect("open");
    let mut s = Session::new(SessionId::new("after").expect("id"), vec![1; 16 << 10]);
    store.save_session(&mut s).expect("a login after expire");
    assert!(store.delete_session(&s.id).expect("a logout"));
}

/// `list` prints sessions sorted by id (`--limit N`: the N smallest), in
/// columns that stay aligned for 45-character `HashedIds` digests and for
/// longer ids.
#[test]
fn list_is_sorted_and_aligned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.db");
    let long = "z".repeat(60);
    let digest = HashedIds::<()>::stored_id(&SessionId::new("cookie").expect("id"));
    {
        let store = LogStore::open(&path).expect("open");
        for id in ["mallory", "bob", long.as_str(), digest.as_str(), "alice"] {
            let mut s = Session::new(SessionId::new(id).expect("id"), vec![b'x'; id.len()]);
            store.save_session(&mut s).expect("save");
        }
    }
    let mut want = vec!["mallory", "bob", long.as_str(), digest.as_str(), "alice"];
    want.sort_unstable();

    let o = sessionlog(&["list", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    // The ID column is as wide as the longest id, here 60 characters.
    let w = long.len();
    assert_eq!(lines[0][..w].trim_end(), "ID", "{out}");
    assert_eq!(lines[0][w + 1..w + 10].trim_start(), "SIZE", "{out}");
    let ids: Vec<&str> = lines[1..].iter().map(|l| l[..w].trim_end()).collect();
    assert_eq!(ids, want, "{out}");
    for (line, id) in lines[1..].iter().zip(&want) {
        // SIZE is right-aligned in the same 9 columns on every line.
        let size: usize = line[w + 1..w + 10]
            .trim_start()
            .parse()
            .unwrap_or_else(|_| panic!("no size in column: {line}"));
        assert_eq!(size, id.len(), "{line}");
    }

    let o = sessionlog(&["list", s(&path), "--limit", "2", "--json"]);
    let listed: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(listed, want[..2], "the two smallest ids, in order");

    // Without a longer id the column is a digest's width, 45.
    let o = sessionlog(&["delete", "--", s(&path), &long]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&sessionlog(&["list", s(&path)]));
    assert_eq!(digest.as_str().len(), 45);
    for line in out.lines() {
        let size = line[46..55].trim_start();
        assert!(
            line.as_bytes()[45] == b' ' && (size == "SIZE" || size.parse::<usize>().is_ok()),
            "{out}"
        );
    }
    assert!(out.lines().any(|l| l.starts_with(digest.as_str())), "{out}");
}

/// An argument of fewer than 8 characters that is no stored id is not
/// looked up as a prefix, and `show` and `delete` say so and why.
#[test]
fn a_short_prefix_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let p = s(&path);
    // A whole id of fewer than 8 characters is still found.
    assert_eq!(code(&sessionlog(&["show", p, "alice"])), 0);
    for args in [vec!["show", p, "car"], vec!["delete", p, "car"]] {
        let o = sessionlog(&args);
        assert_eq!(code(&o), 1, "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains("no session car") && err.contains("too short for a prefix"),
            "{args:?}: {err}"
        );
        assert!(err.contains("at least 8"), "{args:?}: {err}");
    }
    // carol is still there: the short prefix named nothing.
    let store = LogStore::open(&path).expect("open");
    assert!(
        store
            .has_session(&SessionId::new("carol").expect("id"))
            .expect("has")
    );
}

/// A line whose deadline has passed is counted as skipped, not imported,
/// and is not written; the import still succeeds.
#[test]
fn import_counts_expired_lines_as_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("i.db");
    let input = concat!(
        "{\"id\":\"live\",\"data\":\"aGk=\",\"expires\":\"2999-01-01T00:00:00Z\"}\n",
        "{\"id\":\"gone\",\"data\":\"aGk=\",\"expires\":\"2001-01-01T00:00:00Z\"}\n",
        "{\"id\":\"forever\",\"data\":\"aGk=\",\"expires\":null}\n",
    );
    let o = run(&["import", s(&path)], Some(input.as_bytes()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("imported 2 sessions") && stdout(&o).contains("skipped 1 expired"),
        "{}",
        stdout(&o)
    );
    let stats = LogStore::open(&path).expect("open").stats().expect("stats");
    assert_eq!(
        (stats.sessions, stats.expired),
        (2, 0),
        "the expired line was not written"
    );
}

/// `export --output FILE` writes the same lines as stdout into a new file
/// created 0600, and refuses a file that is already there, leaving it.
#[test]
fn export_to_a_file_creates_it_0600_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let file = dir.path().join("backup.jsonl");
    let o = sessionlog(&["export", s(&path), "--output", s(&file)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing on stdout");
    let meta = std::fs::metadata(&file).expect("created");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let written = std::fs::read(&file).expect("read");
    let mut lines: Vec<&[u8]> = written.split(|&b| b == b'\n').collect();
    let to_stdout = sessionlog(&["export", s(&path)]).stdout;
    let mut want: Vec<&[u8]> = to_stdout.split(|&b| b == b'\n').collect();
    lines.sort_unstable();
    want.sort_unstable();
    assert_eq!(lines, want);

    std::fs::write(&file, b"keep me").expect("write");
    let o = sessionlog(&["export", s(&path), "-o", s(&file)]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).expect("read"), b"keep me");
}

/// `bench PATH` on a path where something is refuses, saying `--yes`, and
/// leaves it as it was; with `--yes` it runs.
#[test]
fn bench_refuses_an_existing_store_without_yes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = populated(dir.path());
    let before = std::fs::read(&path).expect("read");
    let args = [
        "bench",
        "--sessions",
        "50",
        "--compaction-rounds",
        "0",
        s(&path),
    ];
    let o = sessionlog(&args);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exists") && stderr(&o).contains("--yes"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&path).expect("read"), before, "untouched");
    let o = sessionlog(&[&args[..5], &["--yes"][..], &args[5..]].concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let store = LogStore::open(&path).expect("open");
    assert!(
        store
            .has_session(&SessionId::new("carol").expect("id"))
            .expect("has"),
        "the bench leaves the store's own sessions"
    );
}

/// A synced store with sessions of two owners (one kept through
/// `HashedIds`, as a digest) and one without.
fn owned(dir: &Path) -> PathBuf {
    let path = dir.join("owned.db");
    let store = LogStore::options()
        .sync(SyncPolicy::Always)
        .background(false)
        .open(&path)
        .expect("open");
    let alice = sessionlog::Owner::new("alice@example.com").expect("owner");
    for (name, owner) in [
        ("laptop-0001", Some(&alice)),
        ("phone-00001", Some(&alice)),
        ("bob-0000001", None),
    ] {
        let mut session = Session::new(SessionId::new(name).expect("id"), b"x".to_vec());
        session.owner = owner.cloned();
        store.save_session(&mut session).expect("save");
    }
    let hashed = HashedIds::new(store);
    let mut tablet = Session::new(SessionId::new("tablet-0001").expect("id"), b"y".to_vec())
        .with_owner(alice.clone());
    hashed.save_session(&mut tablet).expect("save hashed");
    path
}

#[test]
fn owners_list_delete_keep_and_erase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = owned(dir.path());
    let o = sessionlog(&["list", s(&path), "--owner", "alice@example.com", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 3, "clear and digest owners: {lines:?}");
    assert!(lines.iter().all(|l| l["owner"] == "alice@example.com"));
    let o = sessionlog(&["show", s(&path), "laptop-0001"]);
    assert!(
        stdout(&o).contains("owner:    alice@example.com"),
        "{}",
        stdout(&o)
    );
    let o = sessionlog(&["show", s(&path), "bob-0000001"]);
    assert!(stdout(&o).contains("owner:    -"), "{}", stdout(&o));

    let o = sessionlog(&[
        "delete",
        s(&path),
        "--owner",
        "alice@example.com",
        "--keep",
        "laptop-0001",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("deleted 2 sessions"), "{}", stdout(&o));
    let o = sessionlog(&["list", s(&path), "--owner", "alice@example.com"]);
    assert_eq!(stdout(&o).lines().count(), 2, "the header and the kept one");
    assert!(stdout(&o).contains("laptop-0001"));

    let o = sessionlog(&["erase", s(&path), "--owner", "alice@example.com"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("erased 1 sessions"), "{}", stdout(&o));
    let file = std::fs::read(&path).expect("read");
    assert!(
        !file.windows(11).any(|w| w == b"laptop-0001"),
        "the erased id is gone from the file"
    );
    let o = sessionlog(&["show", s(&path), "bob-0000001"]);
    assert_eq!(code(&o), 0, "others stay");
}

#[test]
fn owner_arguments_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = owned(dir.path());
    let o = sessionlog(&["list", s(&path), "--owner", ""]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let o = sessionlog(&["delete", s(&path), "--keep", "laptop-0001"]);
    assert_eq!(code(&o), 2, "--keep needs --owner: {}", stderr(&o));
    let o = sessionlog(&["delete", s(&path), "--owner", "a", "laptop-0001"]);
    assert_eq!(code(&o), 2, "ids or --owner: {}", stderr(&o));
    let o = sessionlog(&["erase", s(&path)]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn export_and_import_carry_the_owner_and_old_exports_still_import() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = owned(dir.path());
    let o = sessionlog(&["export", s(&path)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains(r#""owner":"alice@example.com""#), "{text}");
    assert!(text.contains(r#""owner":null"#), "{text}");
    let to = dir.path().join("to.db");
    let o = run(&["import", s(&to)], Some(text.as_bytes()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = sessionlog(&["list", s(&to), "--owner", "alice@example.com"]);
    assert_eq!(stdout(&o).lines().count(), 4, "{}", stdout(&o));
    // An export written before owners existed (no "owner" key) imports.
    let old = r#"{"id":"old-session","data":"eA==","modified":"2026-01-01T10:00:00.000Z","expires":null,"version":3}"#;
    let o = run(&["import", s(&to)], Some(old.as_bytes()));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // A bad owner is a bad line, named by number, not echoed.
    let bad = r#"{"id":"x-session","data":"eA==","owner":"secret\nowner"}"#;
    let o = run(&["import", s(&to)], Some(bad.as_bytes()));
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("line 1"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("secret"), "{}", stderr(&o));
}

/// `stats --format prometheus` prints the store's gauges in the Prometheus
/// text format under the library's names (`Stats::gauges`), each labelled
/// with the backend and the store's path, as a real parser of the format
/// reads them: every line a comment or a sample it parses, every gauge
/// typed and documented, the values those of `stats --json`.
#[test]
fn stats_prints_prometheus_text_that_a_parser_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("quota.db");
    {
        let store = LogStore::options()
            .background(false)
            .max_sessions(10)
            .open(&path)
            .expect("open");
        for id in ["alice", "bob"] {
            let mut s = Session::new(SessionId::new(id).expect("id"), b"x".to_vec());
            store.save_session(&mut s).expect("save");
        }
    }
    let p = s(&path);
    let o = sessionlog(&["stats", p, "--format", "prometheus"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o).to_owned();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "a line the parser skipped:\n{text}"
    );

    let store = LogStore::options()
        .background(false)
        .open(&path)
        .expect("reopen");
    let stats = store.stats().expect("stats");
    let gauges = stats.gauges();
    assert_eq!(scrape.samples.len(), gauges.len());
    let resolved = store.path().display().to_string();
    for g in &gauges {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == g.name)
            .unwrap_or_else(|| panic!("no sample of {}:\n{text}", g.name));
        let prometheus_parse::Value::Gauge(v) = sample.value else {
            panic!("{} is not typed a gauge:\n{text}", g.name);
        };
        // Sizes the reopen may change (the file's length, free space) are
        // compared for presence only.
        if ![
            "sessionlog_file_bytes",
            "sessionlog_free_bytes",
            "sessionlog_index_bytes",
        ]
        .contains(&g.name)
        {
            assert_eq!(v, g.value, "{}", g.name);
        }
        assert_eq!(sample.labels.get("backend"), Some("log"));
        assert_eq!(sample.labels.get("store"), Some(resolved.as_str()));
        assert_eq!(sample.labels.len(), 2);
        assert_eq!(scrape.docs.get(g.name).map(String::as_str), Some(g.help));
    }
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("sessionlog_live_sessions"), Some(2.0));
    assert_eq!(value("sessionlog_quota_max_sessions"), Some(10.0));
    assert_eq!(value("sessionlog_quota_sessions_ratio"), Some(0.2));

    // `--json` and `--format json` print the same object (but the free
    // space, which other processes change).
    let json = |args: &[&str]| {
        let mut v: serde_json::Value =
            serde_json::from_str(stdout(&sessionlog(args)).trim()).expect("JSON");
        v["limits"]["free_bytes"] = serde_json::Value::Null;
        v
    };
    assert_eq!(
        json(&["stats", p, "--json"]),
        json(&["stats", p, "--format", "json"])
    );
}
