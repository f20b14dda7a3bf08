//! Prometheus metrics for the agent's and the server's `/metrics`.
//!
//! Background: both binaries expose a handful of counters, gauges and
//! histograms in the Prometheus text format (version 0.0.4). A metrics
//! library would bring a registry, dynamic label sets and a dependency
//! tree for what is here a few atomics, so the primitives are written out:
//!
//! - [`Counter`]: a monotonic `u64`;
//! - [`Histogram`]: fixed bucket bounds, a count per bucket, a sum;
//! - [`Encoder`]: writes families (`# HELP`, `# TYPE`, samples) as text.
//!
//! Design: metrics are plain fields of a struct the program owns (one per
//! agent or server, shared through an `Arc`), updated with relaxed atomics
//! on the hot path; gauges that mirror state (tasks by status, connected
//! instances) are read from that state when `/metrics` is scraped, not kept
//! twice. Names follow Prometheus' conventions: base units (`_seconds`,
//! `_bytes`), `_total` for counters.
//!
//! Limitations: label sets are fixed when the program is written (an enum
//! of operations, a result), never taken from input, so a scrape's size is
//! bounded. A snapshot of a histogram read while it is observed may miss
//! the observation in flight, but its buckets, count and sum always agree
//! with one another up to that observation.
#![warn(clippy::all)]

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) for calls that take milliseconds: Docker API
/// calls, store transactions.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds (seconds) for image pulls: from a cache hit to a large
/// image over a slow link.
pub const PULL_BUCKETS: &[f64] = &[
    0.05, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, strictly increasing; `+Inf` is implied.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds`:
    /// the last holds what is above every bound.
    counts: Box<[AtomicU64]>,
    /// The sum of all observations, as `f64` bits.
    sum_bits: AtomicU64,
}

/// What a [`Histogram`] holds at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, cumulative, ending
    /// with `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    /// A histogram with `bounds` (strictly increasing, finite).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(
            bounds.windows(2).all(|w| w[0] < w[1]) && bounds.iter().all(|b| b.is_finite()),
            "histogram bounds must be finite and strictly increasing"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation. NaN is ignored: it would poison the sum.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(bucket) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // A compare-and-swap loop: there is no atomic f64 add.
        let mut current = self.sum_bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + value).to_bits();
            match self.sum_bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(c.load(Ordering::Relaxed));
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
        }
    }

    /// The number of observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds a `/metrics` body. Each family is written once: [`Encoder::family`]
/// (or a shorthand) and then its samples.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. Counter names end
    /// in `_total`.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) -> &mut Encoder {
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Encoder {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
        self
    }

    /// A family with one unlabelled counter sample.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> &mut Encoder {
        self.family(name, help, Kind::Counter)
            .sample(name, &[], value as f64)
    }

    /// A family with one unlabelled gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> &mut Encoder {
        self.family(name, help, Kind::Gauge)
            .sample(name, &[], value)
    }

    /// The samples of one histogram of the family `name`: `name_bucket`
    /// for every bound (and `+Inf`), `name_sum`, `name_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) -> &mut Encoder {
        for (bound, n) in &h.buckets {
            let mut le = String::new();
            push_value(&mut le, *bound);
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {n}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        self.out.push(' ');
        push_value(&mut self.out, h.sum);
        self.out.push('\n');
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", h.count);
        self
    }

    /// The text, ready to serve with [`CONTENT_TYPE`].
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A sample value as Prometheus writes it: integers without a fraction,
/// `+Inf`, `-Inf`, `NaN`.
fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        // Rust prints the shortest text that reads back as the same f64,
        // never with an exponent: a form Prometheus parses.
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_written_with_help_and_type() {
        let c = Counter::new();
        c.inc();
        c.add(2);
        let mut e = Encoder::new();
        e.counter("x_total", "Things.\nMore", c.get());
        e.gauge("y_bytes", "Size with a \\ in it.", 1.5);
        e.family("z", "By status.", Kind::Gauge)
            .sample("z", &[("status", "A\"b\\c\nd")], 0.0);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\nx_total 3\n\
             # HELP y_bytes Size with a \\\\ in it.\n# TYPE y_bytes gauge\ny_bytes 1.5\n\
             # HELP z By status.\n# TYPE z gauge\nz{status=\"A\\\"b\\\\c\\nd\"} 0\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        static BOUNDS: &[f64] = &[0.1, 1.0];
        let h = Histogram::new(BOUNDS);
        h.observe(0.05);
        h.observe(0.1); // on a bound: counted in it (le = less or equal)
        h.observe(0.5);
        h.observe(7.0);
        h.observe(f64::NAN);
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(0.1, 2), (1.0, 3), (f64::INFINITY, 4)],
            "{s:?}"
        );
        assert_eq!(s.count, 4);
        assert_eq!(h.count(), 4);
        assert!((s.sum - 7.65).abs() < 1e-9, "{s:?}");

        let mut e = Encoder::new();
        e.family("op_seconds", "Latency.", Kind::Histogram)
            .histogram("op_seconds", &[("op", "start")], &s);
        let text = e.finish();
        assert_eq!(
            text,
            "# HELP op_seconds Latency.\n# TYPE op_seconds histogram\n\
             op_seconds_bucket{op=\"start\",le=\"0.1\"} 2\n\
             op_seconds_bucket{op=\"start\",le=\"1\"} 3\n\
             op_seconds_bucket{op=\"start\",le=\"+Inf\"} 4\n\
             op_seconds_sum{op=\"start\"} 7.65\n\
             op_seconds_count{op=\"start\"} 4\n"
        );
    }

    #[test]
    fn an_empty_histogram_has_zero_buckets() {
        let h = Histogram::new(LATENCY_BUCKETS);
        let s = h.snapshot();
        assert_eq!(s.count, 0);
        assert_eq!(s.sum, 0.0);
        assert_eq!(s.buckets.len(), LATENCY_BUCKETS.len() + 1);
        assert!(s.buckets.iter().all(|(_, n)| *n == 0));
        let mut e = Encoder::new();
        e.histogram("h_seconds", &[], &s);
        assert!(e.finish().contains("h_seconds_bucket{le=\"+Inf\"} 0\n"));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(LATENCY_BUCKETS));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        h.observe(0.002);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let s = h.snapshot();
        assert_eq!(s.count, 4000);
        assert!((s.sum - 8.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn values_are_written_as_prometheus_reads_them() {
        let mut s = String::new();
        for v in [
            0.0,
            3.0,
            0.0025,
            1e21,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            push_value(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "0 3 0.0025 1000000000000000000000 +Inf -Inf NaN ");
    }
}
