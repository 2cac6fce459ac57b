//! Figures, the table and `report.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

/// The unit of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// MiB per second (2^20 bytes).
    MiBps,
    /// Milliseconds.
    Ms,
    /// Percent of one CPU core.
    PctCore,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::MiBps => "MiB/s",
            Unit::Ms => "ms",
            Unit::PctCore => "% of a core",
        }
    }

    fn show(self, v: f64) -> String {
        match self {
            Unit::MiBps => format!("{} MiB/s", group_digits(v.round() as u64)),
            Unit::Ms if v < 1.0 => format!("{v:.3} ms"),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::PctCore => format!("{v:.2}% of a core"),
        }
    }
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// What became of one figure.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// One sample per repetition.
    Measured { samples: Vec<f64>, unit: Unit },
    /// The measurement failed; the bench went on.
    Failed(String),
    /// The build or the machine lacks what it needs.
    Unavailable(String),
    /// Left out on purpose (e.g. by `--quick`).
    Skipped(String),
}

impl Outcome {
    pub fn median(&self) -> Option<f64> {
        match self {
            Outcome::Measured { samples, .. } => median(samples),
            _ => None,
        }
    }

    fn cell(&self) -> String {
        match self {
            Outcome::Measured { samples, unit } => match median(samples) {
                Some(m) => unit.show(m),
                None => "no samples".into(),
            },
            Outcome::Failed(m) => format!("fails: {m}"),
            Outcome::Unavailable(m) => m.clone(),
            Outcome::Skipped(m) => format!("skipped: {m}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Outcome::Measured { samples, unit } => json!({
                "status": "ok",
                "median": median(samples),
                "unit": unit.as_str(),
                "samples": samples,
            }),
            Outcome::Failed(m) => json!({ "status": "fails", "message": m }),
            Outcome::Unavailable(m) => json!({ "status": "not available", "message": m }),
            Outcome::Skipped(m) => json!({ "status": "skipped", "message": m }),
        }
    }
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Every figure of the run, by key (e.g. `disk.put`).
#[derive(Debug, Default)]
pub struct Results {
    map: BTreeMap<String, Outcome>,
}

impl Results {
    pub fn set(&mut self, key: &str, o: Outcome) {
        match &o {
            Outcome::Measured { samples, unit } => eprintln!(
                "bench: {key} = {} (samples: {})",
                median(samples).map_or("-".into(), |m| unit.show(m)),
                samples
                    .iter()
                    .map(|s| format!("{s:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => eprintln!("bench: {key}: {}", other.cell()),
        }
        self.map.insert(key.to_string(), o);
    }

    pub fn measured(&mut self, key: &str, samples: Vec<f64>, unit: Unit) {
        self.set(key, Outcome::Measured { samples, unit });
    }

    pub fn get(&self, key: &str) -> Option<&Outcome> {
        self.map.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Sets every key of `keys` that has no outcome yet.
    pub fn fill(&mut self, keys: &[String], o: &Outcome) {
        for k in keys {
            if !self.has(k) {
                self.set(k, o.clone());
            }
        }
    }

    pub fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.map {
            m.insert(k.clone(), v.json());
        }
        Value::Object(m)
    }
}

/// How fts compares with the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ratio {
    /// fts as a percentage of a limit (higher is better).
    Percent,
    /// fts as a multiple of a peer or of one device (higher is better).
    Times,
    /// fts as a multiple of an I/O floor (a latency; lower is better).
    TimesFloor,
    /// No ratio.
    None,
}

/// One line of the table: keys into [`Results`].
#[derive(Debug, Clone)]
pub struct RowSpec {
    pub figure: String,
    /// fts's figure, or `None` for a limit-only row.
    pub fts: Option<String>,
    /// Extra keys shown in parentheses after fts's figure: (label, key).
    pub extra: Vec<(&'static str, String)>,
    /// The limit or peer: a label and a key (or a fixed text and no key).
    pub reference: Option<(String, Option<String>)>,
    pub ratio: Ratio,
}

pub struct Table {
    pub rows: Vec<[String; 4]>,
    pub json: Vec<Value>,
}

/// Builds the table from the specs, leaving out rows none of whose figures
/// were run (`--only`).
pub fn table(specs: &[RowSpec], r: &Results) -> Table {
    let mut rows = Vec::new();
    let mut js = Vec::new();
    for s in specs {
        let fts = s.fts.as_ref().map(|k| r.get(k));
        let refk = s.reference.as_ref().and_then(|(_, k)| k.as_ref());
        let refo = refk.map(|k| r.get(k));
        let any_run = matches!(fts, Some(Some(_))) || matches!(refo, Some(Some(_)));
        if !any_run {
            continue;
        }
        let not_run = || "not run (--only)".to_string();
        let mut fts_cell = match fts {
            None => "–".to_string(),
            Some(None) => not_run(),
            Some(Some(o)) => o.cell(),
        };
        let extras: Vec<String> = s
            .extra
            .iter()
            .filter_map(|(label, k)| {
                let o = r.get(k)?;
                Some(match o {
                    Outcome::Measured { samples, .. } => {
                        format!(
                            "{label} {}",
                            median(samples).map_or(0, |m| m.round() as u64)
                        )
                    }
                    _ => return None,
                })
            })
            .collect();
        if !extras.is_empty() && matches!(fts, Some(Some(Outcome::Measured { .. }))) {
            let _ = write!(fts_cell, " ({} per stream)", extras.join(", "));
        }
        let ref_cell = match &s.reference {
            None => "–".to_string(),
            Some((label, None)) => label.clone(),
            Some((label, Some(_))) => match refo {
                Some(Some(o)) => format!("{}: {label}", o.cell()),
                _ => format!("{}: {label}", not_run()),
            },
        };
        let f = fts.flatten().and_then(Outcome::median);
        let l = refo.flatten().and_then(Outcome::median);
        let ratio = match (f, l) {
            (Some(f), Some(l)) if l > 0.0 && s.ratio != Ratio::None => Some(f / l),
            _ => None,
        };
        let ratio_cell = match (ratio, s.ratio) {
            (Some(x), Ratio::Percent) => format!("{:.0}%", x * 100.0),
            (Some(x), Ratio::Times) => format!("{x:.2}×"),
            (Some(x), Ratio::TimesFloor) => format!("{x:.1}× the floor"),
            _ => "–".to_string(),
        };
        js.push(json!({
            "figure": s.figure,
            "fts": s.fts.as_ref().map(|k| json!({
                "key": k,
                "outcome": r.get(k).map(Outcome::json),
            })),
            "per_stream": s.extra.iter().map(|(label, k)| json!({
                "label": label, "key": k, "outcome": r.get(k).map(Outcome::json),
            })).collect::<Vec<_>>(),
            "reference": s.reference.as_ref().map(|(label, k)| json!({
                "label": label,
                "key": k,
                "outcome": k.as_ref().and_then(|k| r.get(k)).map(Outcome::json),
            })),
            "ratio": ratio,
            "ratio_kind": match s.ratio {
                Ratio::Percent => "fts / limit",
                Ratio::Times => "fts / peer",
                Ratio::TimesFloor => "fts / floor (lower is better)",
                Ratio::None => "none",
            },
        }));
        rows.push([s.figure.clone(), fts_cell, ref_cell, ratio_cell]);
    }
    Table { rows, json: js }
}

/// The table as Markdown (what the terminal shows and PERFORMANCE.md keeps).
pub fn markdown(t: &Table) -> String {
    let mut out = String::from("| figure | fts | limit or peer | ratio |\n|---|---|---|---|\n");
    for r in &t.rows {
        let cells: Vec<String> = r.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn digits() {
        assert_eq!(group_digits(1524), "1,524");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000_000), "1,000,000");
    }

    #[test]
    fn rows_show_failures_and_ratios() {
        let mut r = Results::default();
        r.measured("a.put", vec![300.0, 310.0, 290.0], Unit::MiBps);
        r.measured("a.limit", vec![600.0], Unit::MiBps);
        r.set("a.get", Outcome::Failed("boom".into()));
        let specs = vec![
            RowSpec {
                figure: "put".into(),
                fts: Some("a.put".into()),
                extra: vec![],
                reference: Some(("fio".into(), Some("a.limit".into()))),
                ratio: Ratio::Percent,
            },
            RowSpec {
                figure: "get".into(),
                fts: Some("a.get".into()),
                extra: vec![],
                reference: Some(("fio".into(), Some("a.limit".into()))),
                ratio: Ratio::Percent,
            },
            RowSpec {
                figure: "never run".into(),
                fts: Some("b.put".into()),
                extra: vec![],
                reference: None,
                ratio: Ratio::None,
            },
        ];
        let t = table(&specs, &r);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][1], "300 MiB/s");
        assert_eq!(t.rows[0][2], "600 MiB/s: fio");
        assert_eq!(t.rows[0][3], "50%");
        assert_eq!(t.rows[1][1], "fails: boom");
        assert_eq!(t.rows[1][3], "–");
        assert!(markdown(&t).contains("| put | 300 MiB/s | 600 MiB/s: fio | 50% |"));
    }
}
