//! `--scale N1,N2,..`: how each engine's cost grows with the number of
//! sessions. For each size and engine: a fresh store is filled untimed
//! (`Engine::fill`), its files are read once, then one thread times random
//! loads and then random overwrites, each operation timed on its own, so
//! that the table and the plot show ops/s and p99 against sessions.

use std::fmt::Write as _;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::engines::{Mode, Result, Spec};
use crate::{CAP, Scratch, check_load, load_reused, session_ids, warm_page_cache};

/// Operations timed per phase at most (each phase also stops at `CAP`).
const OPS: usize = 1_000_000;

/// One engine at one size.
#[derive(Clone, Copy, Default)]
struct Point {
    /// Untimed fill, in seconds (reported: it is what building costs).
    fill: f64,
    load_rate: f64,
    load_p99: f64,
    save_rate: f64,
    save_p99: f64,
}

/// Times `ops` operations one by one; returns (ops/s, p99 in µs).
fn each(ops: usize, mut op: impl FnMut(usize) -> Result<()>) -> Result<(f64, f64)> {
    let mut lat = Vec::with_capacity(ops);
    let start = Instant::now();
    let deadline = start + CAP;
    for i in 0..ops {
        let t = Instant::now();
        op(i)?;
        let end = Instant::now();
        lat.push((end - t).as_nanos() as u64);
        if i % 64 == 63 && end >= deadline {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)] as f64 / 1e3;
    Ok((lat.len() as f64 / secs, p99))
}

fn measure(spec: &Spec, n: usize, value_size: usize, scratch: &Scratch) -> Result<Point> {
    let mut rng = StdRng::seed_from_u64(5);
    let ids = session_ids(&mut rng, n);
    let mut value = vec![0u8; value_size];
    rng.fill_bytes(&mut value);
    let ops = OPS.min(n.max(100_000));
    let picks: Vec<u64> = (0..ops).map(|_| rng.random()).collect();
    let pick = |i: usize| &ids[(picks[i % picks.len()] % n as u64) as usize];
    let dir = scratch.dir(&format!("{}-scale", spec.name))?;
    crate::engines::set_owned_sessions(n);
    let e = spec.open(&dir, Mode::Buffered)?;
    let t = Instant::now();
    e.fill(&ids, &value)?;
    let fill = t.elapsed().as_secs_f64();
    warm_page_cache(&dir)?;
    for i in 0..n.min(10_000) {
        check_load(&*e, pick(i), value.len())?;
    }
    let (load_rate, load_p99) = each(ops, |i| load_reused(&*e, pick(i)))?;
    let (save_rate, save_p99) = each(ops, |i| e.save(pick(i), &value))?;
    e.cleanup()?;
    drop(e);
    std::fs::remove_dir_all(&dir)?;
    Ok(Point {
        fill,
        load_rate,
        load_p99,
        save_rate,
        save_p99,
    })
}

/// Runs every size for every engine; writes `scale-<B>.{md,svg}` to `out`.
pub fn run(
    sizes: &[usize],
    value_size: usize,
    specs: &[Spec],
    scratch: &Scratch,
    out: &std::path::Path,
) -> Result<()> {
    let mut points = vec![vec![None; sizes.len()]; specs.len()];
    for (j, &n) in sizes.iter().enumerate() {
        for (i, spec) in specs.iter().enumerate() {
            eprintln!("scale: {} at {n} sessions ...", spec.name);
            match measure(spec, n, value_size, scratch) {
                Ok(p) => points[i][j] = Some(p),
                Err(err) => eprintln!("{} at {n}: {err}", spec.name),
            }
        }
    }
    let title = format!(
        "sessions of {value_size} B, 1 thread, random ids; {}",
        crate::report::machine()
    );
    let md = markdown(&title, sizes, specs, &points);
    println!("{md}");
    std::fs::create_dir_all(out)?;
    let stem = format!("scale-{value_size}");
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        out.join(format!("{stem}.svg")),
        svg(&title, sizes, specs, &points),
    )?;
    eprintln!("wrote {}/{stem}.md and .svg", out.display());
    Ok(())
}

fn rate(v: f64) -> String {
    if v >= 1e7 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else {
        format!("{:.0}k", v / 1e3)
    }
}

fn markdown(title: &str, sizes: &[usize], specs: &[Spec], points: &[Vec<Option<Point>>]) -> String {
    let mut s = format!(
        "{title}\n\n| engine | sessions | fill (s) | load ops/s | load p99 (µs) | save ops/s | save p99 (µs) |\n|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (i, spec) in specs.iter().enumerate() {
        for (j, &n) in sizes.iter().enumerate() {
            let _ = match points[i][j] {
                Some(p) => writeln!(
                    s,
                    "| {} | {n} | {:.1} | {} | {:.1} | {} | {:.1} |",
                    spec.name,
                    p.fill,
                    rate(p.load_rate),
                    p.load_p99,
                    rate(p.save_rate),
                    p.save_p99
                ),
                None => writeln!(s, "| {} | {n} | failed | – | – | – | – |", spec.name),
            };
        }
    }
    s.push_str(
        "\nFill: the store built untimed in the engine's fastest way (batched \
         transactions where it has them). Loads and saves (overwrites of random \
         existing ids): at most 1M operations or 3 s each, every operation timed \
         on its own (the two clock reads are in the ops/s too, for every engine).\n",
    );
    s
}

/// Two log-log panels: ops/s against sessions, and p99 against sessions;
/// one colour per engine, loads solid and saves dashed.
fn svg(title: &str, sizes: &[usize], specs: &[Spec], points: &[Vec<Option<Point>>]) -> String {
    const COLORS: [&str; 6] = [
        "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
    ];
    let (pw, ph, top, left, gap) = (360.0, 260.0, 70.0, 60.0, 80.0);
    let (xlo, xhi) = (
        (sizes.iter().copied().min().unwrap_or(1) as f64)
            .log10()
            .floor(),
        (sizes.iter().copied().max().unwrap_or(10) as f64)
            .log10()
            .ceil(),
    );
    let xhi = if xhi <= xlo { xlo + 1.0 } else { xhi };
    let mut s = String::new();
    let width = left + 2.0 * pw + gap + 140.0;
    let height = top + ph + 50.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="18" font-size="13">{}</text>"#,
        title.replace('&', "&amp;").replace('<', "&lt;")
    );
    type Get = fn(&Point) -> [f64; 2];
    let panels: [(&str, Get, f64, f64); 2] = [
        (
            "operations per second (higher is better)",
            |p| [p.load_rate, p.save_rate],
            3.0,
            7.0,
        ),
        (
            "p99 latency, µs (lower is better)",
            |p| [p.load_p99, p.save_p99],
            -1.0,
            3.0,
        ),
    ];
    for (k, (label, get, ylo, yhi)) in panels.iter().enumerate() {
        let x0 = left + k as f64 * (pw + gap);
        let x = |n: f64| x0 + pw * (n.log10() - xlo) / (xhi - xlo);
        let y =
            |v: f64| top + ph * (1.0 - ((v.max(1e-9).log10() - ylo) / (yhi - ylo)).clamp(0.0, 1.0));
        let _ = writeln!(s, r#"<text x="{x0}" y="{}">{label}</text>"#, top - 12.0);
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        for d in *ylo as i32..=*yhi as i32 {
            let v = 10f64.powi(d);
            let gy = y(v);
            let text = if *ylo < 0.0 { format!("{v}") } else { rate(v) };
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{gy}" x2="{}" y2="{gy}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{text}</text>"##,
                x0 + pw,
                x0 - 4.0,
                gy + 4.0
            );
        }
        for &n in sizes {
            let gx = x(n as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{gx}" y1="{top}" x2="{gx}" y2="{}" stroke="#eee"/><text x="{gx}" y="{}" text-anchor="middle">{}</text>"##,
                top + ph,
                top + ph + 14.0,
                if n >= 1_000_000 {
                    format!("{}M", n / 1_000_000)
                } else {
                    format!("{}k", n / 1000)
                }
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">sessions (log scale)</text>"#,
            x0 + pw / 2.0,
            top + ph + 30.0
        );
        for (i, _) in specs.iter().enumerate() {
            for (op, dash) in [(0, ""), (1, r#" stroke-dasharray="5,3""#)] {
                let pts: Vec<String> = sizes
                    .iter()
                    .zip(&points[i])
                    .filter_map(|(&n, p)| {
                        p.map(|p| format!("{:.1},{:.1}", x(n as f64), y(get(&p)[op])))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                    pts.join(" "),
                    COLORS[i % COLORS.len()]
                );
            }
        }
    }
    let lx = left + 2.0 * pw + gap + 15.0;
    for (i, spec) in specs.iter().enumerate() {
        let ly = top + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 20.0,
            COLORS[i % COLORS.len()],
            lx + 25.0,
            ly + 4.0,
            spec.name
        );
    }
    let ly = top + specs.len() as f64 * 18.0 + 10.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#000" stroke-width="2"/><text x="{}" y="{}">load</text><line x1="{lx}" y1="{}" x2="{}" y2="{}" stroke="#000" stroke-width="2" stroke-dasharray="5,3"/><text x="{}" y="{}">save</text>"##,
        lx + 20.0,
        lx + 25.0,
        ly + 4.0,
        ly + 18.0,
        lx + 20.0,
        ly + 18.0,
        lx + 25.0,
        ly + 22.0
    );
    s.push_str("</svg>\n");
    s
}
