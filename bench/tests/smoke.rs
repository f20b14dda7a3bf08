//! The smoke run of every benchmark scenario with tiny sizes (2 tasks, 1
//! restart, a 5 s window, 20 simulated sessions, 200 events, a service of
//! 20 tasks on 4 simulated instances, 3 services of 4 tasks on 10), so that the
//! benchmarks cannot rot. It checks correctness only — each scenario's own
//! checks (tasks really running, events really applied, no container
//! restarted by an agent restart, every session held) — and never a
//! duration: the figures of a smoke run mean nothing.
//!
//! Needs what the e2e tests need: the `berth` and `berth-agent` binaries
//! (`cargo build --workspace --bins`), a Docker Engine and busybox-static.

use berth_bench::report::{Target, Verdict, table};
use berth_bench::{Ctx, Options, Scenario, run_scenario};

fn smoke(scenario: Scenario) {
    let ctx = Ctx::new(Options::smoke()).expect("cannot set up the benchmark run");
    let report = run_scenario(&ctx, scenario);
    eprintln!("{}", table(std::slice::from_ref(&report)));
    if let Some(e) = &report.error {
        panic!("scenario {} failed: {e}", report.scenario);
    }
    assert!(
        !report.metrics.is_empty(),
        "scenario {} measured nothing",
        report.scenario
    );
    for m in &report.metrics {
        assert!(
            m.berth.is_finite() && m.baseline.is_none_or(f64::is_finite),
            "{}: {} is not a number: {m:?}",
            m.scenario,
            m.metric
        );
        // Counts are correctness (containers restarted by an agent restart
        // must be 0, every session must be held); durations are not checked.
        if matches!(m.target, Some(Target::Equals(_) | Target::AtLeast(_))) {
            assert_eq!(m.verdict, Verdict::Pass, "{}: {m:?}", m.metric);
        }
    }
    let json = berth_bench::run_json(&ctx, std::slice::from_ref(&report), "smoke");
    assert!(json["scenarios"][0]["metrics"].is_array(), "{json}");
}

#[test]
fn task_start() {
    smoke(Scenario::TaskStart);
}

#[test]
fn restart() {
    smoke(Scenario::Restart);
}

#[test]
fn footprint() {
    smoke(Scenario::Footprint);
}

#[test]
fn recovery() {
    smoke(Scenario::Recovery);
}

#[test]
fn fleet() {
    smoke(Scenario::Fleet);
}

#[test]
fn replay() {
    smoke(Scenario::Replay);
}

#[test]
fn services() {
    smoke(Scenario::Services);
}

#[test]
fn services_scale() {
    smoke(Scenario::ServicesScale);
}
