//! Property tests: random tasks and random interleavings of commands
//! (stops) and runtime events (exits, health, removals, engine errors,
//! time passing) through a supervisor on the fake runtime, on paused time.
//!
//! Checked, whatever the interleaving:
//! - no container is created or started after a stop reached the
//!   supervisor;
//! - every STOPPED task has a stop code;
//! - restart counts only grow;
//! - consecutive reported states follow the table of legal edges;
//! - a final stop always ends in STOPPED and the supervisor finishing.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::status::{Status, StopCode};
use berth_proto::v1::TaskState;
use berth_taskdef::{ContainerDefinition, ContainerDependency, RestartPolicy, TaskDefinition};
use proptest::prelude::*;

use super::Phase;
use super::harness::{Harness, settings};
use crate::clock::PausedClock;
use crate::runtime::fake::FakeRuntime;

#[derive(Debug, Clone)]
struct Spec {
    essential: bool,
    restart: Option<(u64, bool)>,
    /// A condition on the container before it, and a start timeout.
    depends: Option<(&'static str, Option<u64>)>,
    health_check: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Exit(usize, i64),
    Health(usize, bool),
    FailStart(usize),
    Remove(usize),
    Wait(u64),
    Stop(StopCode),
}

#[derive(Debug, Clone)]
enum Start {
    /// Nothing special.
    Plain,
    /// A stop queued before the supervisor runs.
    StopFirst,
    /// A stop while the first pull hangs.
    StopDuringPull,
    /// The first image cannot be pulled.
    BadImage,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        proptest::option::of((prop_oneof![Just(0u64), Just(5), Just(60)], any::<bool>())),
        proptest::option::of((
            prop_oneof![
                Just("START"),
                Just("COMPLETE"),
                Just("SUCCESS"),
                Just("HEALTHY")
            ],
            proptest::option::of(Just(10u64)),
        )),
        any::<bool>(),
    )
        .prop_map(|(essential, restart, depends, health_check)| Spec {
            essential,
            restart,
            depends,
            health_check,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, prop_oneof![Just(0i64), Just(1), Just(3), Just(137)]).prop_map(|(c, code)| Op::Exit(c, code)),
        2 => (0..3usize, any::<bool>()).prop_map(|(c, h)| Op::Health(c, h)),
        1 => (0..3usize).prop_map(Op::FailStart),
        1 => (0..3usize).prop_map(Op::Remove),
        3 => prop_oneof![Just(10u64), Just(700), Just(1500), Just(6000), Just(61_000)].prop_map(Op::Wait),
        1 => prop_oneof![
            Just(StopCode::UserInitiated),
            Just(StopCode::ServiceSchedulerInitiated)
        ]
        .prop_map(Op::Stop),
    ]
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        6 => Just(Start::Plain),
        1 => Just(Start::StopFirst),
        1 => Just(Start::StopDuringPull),
        1 => Just(Start::BadImage),
    ]
}

fn name(i: usize) -> String {
    format!("c{i}")
}

fn definition(specs: &[Spec]) -> TaskDefinition {
    let containers = specs
        .iter()
        .enumerate()
        .map(|(i, s)| ContainerDefinition {
            name: name(i),
            image: format!("img/{i}"),
            memory: Some(8),
            // The first container is essential, as validation wants one.
            essential: Some(i == 0 || s.essential),
            restart_policy: s.restart.map(|(period, ignore)| RestartPolicy {
                enabled: true,
                ignored_exit_codes: if ignore { vec![3] } else { Vec::new() },
                restart_attempt_period: Some(period),
            }),
            depends_on: match (i, s.depends) {
                (0, _) | (_, None) => Vec::new(),
                (_, Some((condition, _))) => vec![ContainerDependency {
                    container_name: name(i - 1),
                    condition: condition.into(),
                }],
            },
            start_timeout: s.depends.and_then(|(_, t)| t).filter(|_| i > 0),
            health_check: s.health_check.then(|| berth_taskdef::HealthCheck {
                command: vec!["CMD".into(), "true".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    TaskDefinition {
        family: "prop".into(),
        container_definitions: containers,
        ..Default::default()
    }
}

/// Lets every task run until all wait on something outside (paused time
/// moves only once nothing is ready).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

fn creates_or_starts(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.starts_with("create ") || c.starts_with("start "))
        .cloned()
        .collect()
}

/// Whether a reported state may follow another: an edge of the table, with
/// `Starting` (reported as PENDING, like `Preparing`) in between allowed.
fn legal_step(prev: &TaskState, next: &TaskState) -> bool {
    let (from, to) = (Phase::of(prev), Phase::of(next));
    from == to
        || from.can_go(to)
        || (from == Phase::Preparing && Phase::Starting.can_go(to))
        || (from == Phase::Stopping && to == Phase::Stopped)
}

fn check_history(history: &[TaskState]) -> Result<(), TestCaseError> {
    for st in history {
        if st.last_status == Status::Stopped {
            prop_assert!(
                st.stop_code.parse::<StopCode>().is_ok(),
                "a STOPPED task without a stop code: {st:?}"
            );
        }
    }
    for pair in history.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        prop_assert!(
            legal_step(prev, next),
            "illegal step {:?} -> {:?}:\n{prev:?}\n{next:?}",
            Phase::of(prev),
            Phase::of(next)
        );
        for c in &next.containers {
            if let Some(p) = prev.containers.iter().find(|p| p.name == c.name) {
                prop_assert!(
                    c.restart_count >= p.restart_count,
                    "restart count of {} went down",
                    c.name
                );
            }
        }
        prop_assert!(
            !(prev.desired_status == Status::Stopped && next.desired_status == Status::Running),
            "desired STOPPED went back to RUNNING"
        );
    }
    Ok(())
}

async fn run_case(specs: Vec<Spec>, start: Start, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = Arc::new(PausedClock::new());
    let rt = FakeRuntime::with_clock(clock.clone());
    let mut gate = None;
    match start {
        Start::BadImage => rt.fail_pull("img/0"),
        Start::StopDuringPull => gate = Some(rt.hold_pulls()),
        Start::Plain | Start::StopFirst => {}
    }
    let mut h = Harness::start_with_clock(&rt, settings(false), definition(&specs), None, clock);
    h.patience = Duration::from_secs(600);
    // The calls made before the first stop was sent, once one was.
    let mut before_stop: Option<usize> = None;
    if matches!(start, Start::StopFirst) {
        before_stop = Some(rt.calls().len());
        h.handle.stop(StopCode::UserInitiated, "first").await;
    }
    settle().await;
    if let Some(gate) = gate.take() {
        prop_assert!(rt.calls().iter().any(|c| c.starts_with("pull ")));
        before_stop = Some(rt.calls().len());
        h.handle.stop(StopCode::UserInitiated, "during pull").await;
        settle().await;
        gate.release();
    }
    let mut finished = h.drain();
    for op in ops {
        if finished {
            break;
        }
        let id = |i: usize| rt.id_of(&name(i % specs.len()));
        match op {
            Op::Exit(i, code) => {
                if let Some(id) = id(i) {
                    rt.exit(&id, code);
                }
            }
            Op::Health(i, healthy) => {
                if let Some(id) = id(i) {
                    let h = if healthy {
                        crate::runtime::Health::Healthy
                    } else {
                        crate::runtime::Health::Unhealthy
                    };
                    rt.set_health(&id, h);
                }
            }
            Op::FailStart(i) => rt.fail_start(&name(i % specs.len())),
            Op::Remove(i) => {
                if let Some(id) = id(i) {
                    use crate::runtime::Runtime;
                    let _ = rt.remove(&id).await;
                }
            }
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::Stop(code) => {
                before_stop.get_or_insert(rt.calls().len());
                h.handle.stop(code, "stop op").await;
            }
        }
        settle().await;
        finished = h.drain();
    }
    if !finished {
        before_stop.get_or_insert(rt.calls().len());
        h.handle.stop(StopCode::UserInitiated, "the end").await;
        let st = h.until_status(Status::Stopped).await;
        prop_assert!(!st.stop_code.is_empty());
        h.finished().await;
    }
    if let Some(k) = before_stop {
        let calls = rt.calls();
        let late = creates_or_starts(&calls[k.min(calls.len())..]);
        prop_assert!(
            late.is_empty(),
            "created or started after the stop: {late:?}\nall calls: {calls:?}"
        );
    }
    prop_assert!(
        h.history
            .last()
            .is_some_and(|s| s.last_status == Status::Stopped),
        "ends STOPPED: {:?}",
        h.history.last()
    );
    check_history(&h.history)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_interleaving_keeps_the_lifecycle_invariants(
        specs in proptest::collection::vec(spec(), 1..=3),
        start in start(),
        ops in proptest::collection::vec(op(), 0..24),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| TestCaseError::fail(format!("runtime: {e}")))?;
        runtime.block_on(run_case(specs, start, ops))?;
    }
}
