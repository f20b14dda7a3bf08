//! Results: one [`Metric`] per measured figure, its target and verdict, the
//! table printed at the end of a run and the JSON written with `--json`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// What a figure is held against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "camelCase")]
pub enum Target {
    /// berth / baseline must be at most this (1.10 = within 10 %).
    RatioAtMost(f64),
    /// The berth figure must be at most this.
    AtMost(f64),
    /// The berth figure must be at least this.
    AtLeast(f64),
    /// The berth figure must be exactly this (counts).
    Equals(f64),
}

impl Target {
    fn text(&self, unit: &str) -> String {
        match self {
            Target::RatioAtMost(r) => format!("ratio <= {}", trim(*r)),
            Target::AtMost(v) => format!("< {} {unit}", trim(*v)).trim_end().to_string(),
            Target::AtLeast(v) => format!(">= {} {unit}", trim(*v)).trim_end().to_string(),
            Target::Equals(v) => format!("= {} {unit}", trim(*v)).trim_end().to_string(),
        }
    }
}

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Miss,
    /// No target: a figure for the record.
    Info,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "info",
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub berth: f64,
    pub baseline: Option<f64>,
    /// What the baseline is (e.g. "docker API, same concurrency").
    pub baseline_name: Option<String>,
    pub ratio: Option<f64>,
    pub target: Option<Target>,
    pub verdict: Verdict,
    /// Sample count, window, anything needed to read the figure.
    pub note: String,
}

impl Metric {
    /// A figure without a baseline.
    pub fn figure(scenario: &str, metric: &str, unit: &str, berth: f64) -> Metric {
        Metric {
            scenario: scenario.to_string(),
            metric: metric.to_string(),
            unit: unit.to_string(),
            berth,
            baseline: None,
            baseline_name: None,
            ratio: None,
            target: None,
            verdict: Verdict::Info,
            note: String::new(),
        }
    }

    /// A figure measured against a baseline of the same run; the ratio is
    /// berth / baseline.
    pub fn versus(
        scenario: &str,
        metric: &str,
        unit: &str,
        berth: f64,
        baseline: f64,
        baseline_name: &str,
    ) -> Metric {
        let ratio = (baseline > 0.0).then(|| berth / baseline);
        Metric {
            baseline: Some(baseline),
            baseline_name: Some(baseline_name.to_string()),
            ratio,
            ..Metric::figure(scenario, metric, unit, berth)
        }
    }

    /// Holds the figure against `target` and sets the verdict.
    pub fn target(mut self, target: Target) -> Metric {
        self.target = Some(target);
        let ok = match target {
            Target::RatioAtMost(max) => self.ratio.is_some_and(|r| r <= max),
            Target::AtMost(max) => self.berth < max,
            Target::AtLeast(min) => self.berth >= min,
            Target::Equals(v) => (self.berth - v).abs() < f64::EPSILON,
        };
        self.verdict = if ok { Verdict::Pass } else { Verdict::Miss };
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Metric {
        self.note = note.into();
        self
    }
}

/// What one scenario produced: its figures, details for the JSON (raw
/// samples, per-round numbers) or the error that stopped it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioReport {
    pub scenario: String,
    pub seconds: f64,
    pub metrics: Vec<Metric>,
    pub details: Value,
    /// Set when the scenario failed its own correctness checks (or could not
    /// run): its figures are not to be trusted.
    pub error: Option<String>,
}

/// `1.10` → "1.1", `0.5` → "0.5", `10000` → "10000".
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A number for the table: 3 significant digits, no exponent.
pub fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (v.fract() == 0.0 && a < 1e15) || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The results table: scenario, metric, berth, baseline, ratio, target,
/// verdict; failed scenarios are listed under it.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "scenario".into(),
        "metric".into(),
        "berth".into(),
        "baseline".into(),
        "ratio".into(),
        "target".into(),
        "verdict".into(),
    ]];
    for r in reports {
        for m in &r.metrics {
            let with_unit = |v: f64| {
                if m.unit.is_empty() {
                    num(v)
                } else {
                    format!("{} {}", num(v), m.unit)
                }
            };
            rows.push([
                m.scenario.clone(),
                m.metric.clone(),
                with_unit(m.berth),
                m.baseline.map(with_unit).unwrap_or_else(|| "-".into()),
                m.ratio
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".into()),
                m.target
                    .map(|t| t.text(&m.unit))
                    .unwrap_or_else(|| "-".into()),
                m.verdict.as_str().into(),
            ]);
        }
        if r.error.is_some() {
            rows.push([
                r.scenario.clone(),
                "FAILED".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "FAIL".into(),
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * 6;
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    let failed: Vec<&ScenarioReport> = reports.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(out);
        for r in failed {
            let _ = writeln!(
                out,
                "scenario {} FAILED: {}",
                r.scenario,
                r.error.as_deref().unwrap_or_default()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let m =
            Metric::versus("s", "wall", "s", 1.05, 1.0, "docker").target(Target::RatioAtMost(1.10));
        assert_eq!(m.verdict, Verdict::Pass);
        let m =
            Metric::versus("s", "wall", "s", 1.2, 1.0, "docker").target(Target::RatioAtMost(1.10));
        assert_eq!(m.verdict, Verdict::Miss);
        let m = Metric::figure("s", "rss", "MiB", 16.0).target(Target::AtMost(15.0));
        assert_eq!(m.verdict, Verdict::Miss);
        let m = Metric::figure("s", "restarted", "", 0.0).target(Target::Equals(0.0));
        assert_eq!(m.verdict, Verdict::Pass);
        assert_eq!(Metric::figure("s", "x", "", 1.0).verdict, Verdict::Info);
    }

    #[test]
    fn numbers_and_targets_print_short() {
        assert_eq!(num(1234.5), "1234");
        assert_eq!(num(20.0), "20");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(Target::RatioAtMost(1.1).text(""), "ratio <= 1.1");
        assert_eq!(Target::AtMost(15.0).text("MiB"), "< 15 MiB");
    }

    #[test]
    fn table_lists_failures() {
        let reports = vec![ScenarioReport {
            scenario: "replay".into(),
            seconds: 1.0,
            metrics: vec![Metric::figure("replay", "deliver", "s", 2.0)],
            details: Value::Null,
            error: Some("server applied 5 of 10 events".into()),
        }];
        let t = table(&reports);
        assert!(t.contains("deliver"), "{t}");
        assert!(
            t.contains("scenario replay FAILED: server applied 5 of 10 events"),
            "{t}"
        );
    }
}
