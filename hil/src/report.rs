//! What a scenario reports, and the summary table printed at the end of a
//! rig run.

use std::fmt;
use std::time::Duration;

/// The outcome of one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioReport {
    /// Scenario name, e.g. `all-pairs`.
    pub name: String,
    /// How many hosts took part.
    pub hosts: usize,
    /// Payload bytes moved through the shared LUN.
    pub bytes: u64,
    /// Wall-clock time of the scenario (without provisioning).
    pub elapsed: Duration,
    /// `Ok(figures)`: passed, with a line of figures; `Err(why)`: failed.
    pub result: Result<String, String>,
}

impl ScenarioReport {
    /// True when the scenario passed.
    pub fn passed(&self) -> bool {
        self.result.is_ok()
    }
}

impl fmt::Display for ScenarioReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verdict, text) = match &self.result {
            Ok(t) => ("PASS", t),
            Err(t) => ("FAIL", t),
        };
        write!(
            f,
            "{verdict} {} ({} hosts, {} bytes, {:.2}s): {text}",
            self.name,
            self.hosts,
            self.bytes,
            self.elapsed.as_secs_f64()
        )
    }
}

/// The summary table: scenario, hosts, bytes moved, time, result.
pub fn summary_table(reports: &[ScenarioReport]) -> String {
    let w = reports
        .iter()
        .map(|r| r.name.len())
        .chain([14])
        .max()
        .unwrap_or(14);
    let mut out = format!(
        "{:<w$} {:>5} {:>14} {:>9}  {}\n",
        "scenario", "hosts", "bytes", "time", "result"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<w$} {:>5} {:>14} {:>8.2}s  {}\n",
            r.name,
            r.hosts,
            r.bytes,
            r.elapsed.as_secs_f64(),
            if r.passed() { "pass" } else { "FAIL" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_every_scenario_and_its_verdict() {
        let reports = vec![
            ScenarioReport {
                name: "all-pairs".into(),
                hosts: 3,
                bytes: 6 << 20,
                elapsed: Duration::from_millis(1500),
                result: Ok("6 transfers".into()),
            },
            ScenarioReport {
                name: "link-flap".into(),
                hosts: 3,
                bytes: 0,
                elapsed: Duration::from_secs(2),
                result: Err("partial file".into()),
            },
        ];
        let t = summary_table(&reports);
        assert!(
            t.contains("all-pairs          3        6291456     1.50s  pass"),
            "{t}"
        );
        assert!(t.contains("link-flap") && t.contains("FAIL"), "{t}");
        assert_eq!(
            reports[1].to_string(),
            "FAIL link-flap (3 hosts, 0 bytes, 2.00s): partial file"
        );
    }
}
