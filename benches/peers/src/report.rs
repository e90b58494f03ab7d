//! The results table (Markdown) and its bar chart (hand-written SVG).

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    SaveNew,
    Load1,
    Load2,
    Overwrite,
    Mixed,
    Touch,
    Delete,
    Durable1,
    Durable2,
    Durable4,
    Reopen,
    Compact,
    StallIdle,
    StallCompacting,
    SizeAfterCompact,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Higher is better.
    OpsPerSec,
    /// Lower is better.
    Seconds,
    /// Lower is better.
    Millis,
    /// Lower is better.
    TimesLive,
}

impl Phase {
    pub const ALL: [Phase; 15] = [
        Phase::SaveNew,
        Phase::Load1,
        Phase::Load2,
        Phase::Overwrite,
        Phase::Mixed,
        Phase::Touch,
        Phase::Delete,
        Phase::Durable1,
        Phase::Durable2,
        Phase::Durable4,
        Phase::Reopen,
        Phase::Compact,
        Phase::StallIdle,
        Phase::StallCompacting,
        Phase::SizeAfterCompact,
    ];

    fn label(self) -> &'static str {
        match self {
            Phase::SaveNew => "save new (no fsync)",
            Phase::Load1 => "load, 1 thread",
            Phase::Load2 => "load, 2 threads",
            Phase::Overwrite => "overwrite (no fsync)",
            Phase::Mixed => "mixed 90 % load / 10 % save",
            Phase::Touch => "touch (no fsync)",
            Phase::Delete => "delete (no fsync)",
            Phase::Durable1 => "durable save, 1 thread",
            Phase::Durable2 => "durable save, 2 threads",
            Phase::Durable4 => "durable save, 4 threads",
            Phase::Reopen => "close and reopen",
            Phase::Compact => "compact a 75 % garbage store",
            Phase::StallIdle => "worst op, nothing compacting",
            Phase::StallCompacting => "worst op while compacting",
            Phase::SizeAfterCompact => "disk after compaction",
        }
    }

    fn unit(self) -> Unit {
        match self {
            Phase::Reopen | Phase::Compact => Unit::Seconds,
            Phase::StallIdle | Phase::StallCompacting => Unit::Millis,
            Phase::SizeAfterCompact => Unit::TimesLive,
            _ => Unit::OpsPerSec,
        }
    }
}

pub struct Results {
    engines: Vec<&'static str>,
    /// `values[phase][engine]`: the median of the samples.
    values: Vec<Vec<Option<f64>>>,
    /// `samples[phase][engine]`: one per round.
    samples: Vec<Vec<Vec<f64>>>,
    failures: Vec<(&'static str, String)>,
}

impl Results {
    pub fn new(engines: Vec<&'static str>) -> Results {
        let values = vec![vec![None; engines.len()]; Phase::ALL.len()];
        let samples = vec![vec![Vec::new(); engines.len()]; Phase::ALL.len()];
        Results {
            engines,
            values,
            samples,
            failures: Vec::new(),
        }
    }

    fn col(&self, engine: &str) -> usize {
        self.engines
            .iter()
            .position(|e| *e == engine)
            .expect("a known engine")
    }

    /// Records one round's figure; the table shows the median of them.
    pub fn set(&mut self, phase: Phase, engine: &'static str, v: f64) {
        let c = self.col(engine);
        let all = &mut self.samples[phase as usize][c];
        all.push(v);
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        let m = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[m]
        } else {
            (sorted[m - 1] + sorted[m]) / 2.0
        };
        self.values[phase as usize][c] = Some(median);
    }

    pub fn fail(&mut self, engine: &'static str, why: &str) {
        self.failures.push((engine, why.to_owned()));
    }

    pub fn markdown(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{title}\n");
        let _ = write!(s, "| phase | unit |");
        for e in &self.engines {
            let _ = write!(s, " {e} |");
        }
        let _ = write!(s, "\n|---|---|");
        for _ in &self.engines {
            let _ = write!(s, "---:|");
        }
        s.push('\n');
        for p in Phase::ALL {
            let row = &self.values[p as usize];
            let unit = match p.unit() {
                Unit::OpsPerSec => "ops/s",
                Unit::Seconds => "s",
                Unit::Millis => "ms",
                Unit::TimesLive => "× live",
            };
            let _ = write!(s, "| {} | {unit} |", p.label());
            // Without a sessionlog column (`--engines` left it out) there
            // are no ratios.
            let base = self.engines.iter().position(|e| *e == "sessionlog");
            for (c, v) in row.iter().enumerate() {
                let cell = match (v, base.and_then(|b| row[b])) {
                    (None, _) => "–".to_owned(),
                    (Some(v), Some(sl)) if Some(c) != base => {
                        // Always "how many times better sessionlog is".
                        let ratio = if p.unit() == Unit::OpsPerSec {
                            sl / v
                        } else {
                            v / sl
                        };
                        format!("{} ({ratio:.2}×)", fmt(p.unit(), *v))
                    }
                    (Some(v), _) => format!("**{}**", fmt(p.unit(), *v)),
                };
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        s.push_str(
            "\nIn brackets: sessionlog's advantage over that engine (its ops/s divided by \
             the engine's; for seconds and size, the engine's figure divided by sessionlog's), \
             so above 1× means sessionlog is better. – : does not apply (see README).\n",
        );
        for (e, why) in &self.failures {
            let _ = writeln!(s, "\n{e} failed: {why}");
        }
        s
    }

    /// Grouped horizontal bars of the ops/s phases on a log scale.
    pub fn svg(&self, title: &str) -> String {
        const COLORS: [&str; 12] = [
            "#d62728", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf", "#393b79", "#637939",
        ];
        let phases: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| p.unit() == Unit::OpsPerSec)
            .collect();
        let (left, width, bar, gap) = (210.0, 640.0, 9.0, 14.0);
        let (lo, hi) = (2.0f64, 8.0f64); // 100 to 100M ops/s
        let x = |v: f64| left + width * ((v.max(1.0).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
        let group = bar * self.engines.len() as f64 + gap;
        let top = 60.0;
        let height = top + group * phases.len() as f64 + 30.0;
        let total_w = left + width + 150.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{height}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="10" y="18" font-size="13">{}</text>"#,
            esc(title)
        );
        let _ = writeln!(
            s,
            r#"<text x="10" y="36">operations per second, log scale (longer is better)</text>"#
        );
        for d in lo as i32..=hi as i32 {
            let gx = x(10f64.powi(d));
            let _ = writeln!(
                s,
                r##"<line x1="{gx}" y1="{top}" x2="{gx}" y2="{}" stroke="#ddd"/><text x="{gx}" y="{}" text-anchor="middle">{}</text>"##,
                height - 25.0,
                top - 6.0,
                fmt(Unit::OpsPerSec, 10f64.powi(d))
            );
        }
        for (g, p) in phases.iter().enumerate() {
            let y0 = top + g as f64 * group;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                left - 8.0,
                y0 + group / 2.0,
                esc(p.label())
            );
            for (c, v) in self.values[*p as usize].iter().enumerate() {
                let Some(v) = v else { continue };
                let y = y0 + c as f64 * bar;
                let _ = writeln!(
                    s,
                    r#"<rect x="{left}" y="{y}" width="{:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="8">{}</text>"#,
                    x(*v) - left,
                    bar - 1.0,
                    COLORS[c % COLORS.len()],
                    x(*v) + 3.0,
                    y + bar - 2.0,
                    fmt(Unit::OpsPerSec, *v)
                );
            }
        }
        for (c, e) in self.engines.iter().enumerate() {
            let y = top + c as f64 * 16.0;
            let lx = left + width + 20.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
                COLORS[c % COLORS.len()],
                lx + 16.0,
                y + 10.0,
                esc(e)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn fmt(unit: Unit, v: f64) -> String {
    match unit {
        Unit::OpsPerSec if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Unit::OpsPerSec if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Unit::OpsPerSec => format!("{v:.0}"),
        Unit::Seconds => format!("{v:.3}"),
        Unit::Millis => format!("{v:.2}"),
        Unit::TimesLive => format!("{v:.2}"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The machine, for the table's title.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}
