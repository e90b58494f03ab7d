//! `sessionlog check [--repair]`: the offline verifier's report, and repair.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use sessionlog::SessionStore;
use sessionlog::{CheckReport, check_with};

use crate::{Outcome, fmt_bytes, progress, require_store};

pub fn check(path: &Path, repair: bool) -> Outcome {
    require_store(path)?;
    let mut out = io::stdout().lock();
    let report = match verify(path) {
        Ok(report) => report,
        // A damaged header (not a foreign file or a future version):
        // repair rebuilds it from the records and the hint.
        Err(e @ sessionlog::Error::Corrupt { .. }) if repair => {
            writeln!(out, "header: DAMAGED: {e}")?;
            return repair_store(&mut out, path);
        }
        Err(e) => return Err(e.into()),
    };
    print_report(&mut out, &report)?;
    if !repair {
        if report.is_healthy() {
            writeln!(out, "result: ok")?;
            return Ok(ExitCode::SUCCESS);
        }
        writeln!(
            out,
            "result: DAMAGED: {} corrupt range(s), {} bytes; run `sessionlog check --repair {}` to salvage the rest",
            report.corruption.len(),
            report.corrupt_bytes(),
            path.display()
        )?;
        return Ok(ExitCode::from(1));
    }
    if report.is_healthy() && report.torn_tail.is_none() {
        writeln!(out, "result: ok, nothing to repair")?;
        return Ok(ExitCode::SUCCESS);
    }
    repair_store(&mut out, path)
}

/// Opens the store in repair mode, says what repair did, and checks the
/// result.
fn repair_store(out: &mut impl Write, path: &Path) -> Outcome {
    let store = crate::store_options().repair(true).open(path)?;
    store.setup()?;
    let stats = store.stats()?;
    let rec = &stats.recovery;
    if let Some(how) = &rec.header_repair {
        writeln!(out, "repair: {how}")?;
    }
    if let Some(off) = rec.torn_tail_offset {
        writeln!(
            out,
            "repair: cut the torn tail of {} bytes at offset {off}",
            rec.torn_tail_bytes
        )?;
    }
    for &(off, len) in &rec.repaired_ranges {
        writeln!(
            out,
            "repair: dropped {len} damaged bytes at offset {off} (any records in them are lost)"
        )?;
    }
    if let Some(copy) = &rec.damaged_copy {
        writeln!(
            out,
            "repair: salvaged {} records into generation {}; the damaged file is kept at {}",
            rec.records,
            stats.generation,
            copy.display()
        )?;
    }
    writeln!(
        out,
        "repair: the store now holds {} session(s); one whose latest save or delete lay in a dropped range is lost or back at an older save",
        stats.sessions
    )?;
    drop(store);
    let after = verify(path)?;
    if after.is_healthy() {
        writeln!(out, "result: repaired")?;
        Ok(ExitCode::SUCCESS)
    } else {
        writeln!(out, "result: still DAMAGED after repair")?;
        print_report(out, &after)?;
        Ok(ExitCode::from(1))
    }
}

fn verify(path: &Path) -> Result<CheckReport, sessionlog::Error> {
    let bar = progress(0, "checking");
    let report = check_with(path, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    report
}

fn print_report(out: &mut impl Write, r: &CheckReport) -> io::Result<()> {
    writeln!(
        out,
        "{}: generation {}, {} committed, {} synced, file {}{}",
        r.path.display(),
        r.generation,
        r.committed,
        r.synced,
        fmt_bytes(r.file_bytes),
        if r.superseded {
            " (marked superseded by a compaction)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "records:  {} valid ({} put, {} touch, {} delete)",
        r.records.total(),
        r.records.put,
        r.records.touch,
        r.records.delete
    )?;
    if r.records_past_committed > 0 || r.torn_bytes_past_committed > 0 {
        writeln!(
            out,
            "past the committed end: {} complete record(s), kept by the next open; {} torn byte(s) after them, erased by the next open",
            r.records_past_committed, r.torn_bytes_past_committed
        )?;
    }
    writeln!(
        out,
        "sessions: {} ({} expired), {} live, {} garbage",
        r.live_sessions,
        r.expired_sessions,
        fmt_bytes(r.live_bytes),
        fmt_bytes(r.garbage_bytes)
    )?;
    if r.orphan_records > 0 {
        writeln!(
            out,
            "note:     {} touch/delete records name no live session (harmless)",
            r.orphan_records
        )?;
    }
    for d in &r.corruption {
        let resume = match d.resumes_at {
            Some(at) => format!("valid records resume at offset {at}"),
            None => "no valid record follows".to_owned(),
        };
        writeln!(
            out,
            "CORRUPT:  {} bytes at offset {}: {}; {resume}",
            d.len, d.offset, d.reason
        )?;
    }
    if let Some(t) = &r.torn_tail {
        writeln!(
            out,
            "torn tail: {} bytes at offset {} ({}): an interrupted write, cut when the store is next opened",
            t.len, t.offset, t.reason
        )?;
    }
    Ok(())
}
