//! The supervisor's lifecycle against the fake runtime: stops, exits,
//! adoption, stop while PENDING, and restart-policy and `dependsOn` timing
//! on a paused clock.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::status::{Health, Status, StopCode};
use berth_proto::v1::{ContainerState, TaskState};
use berth_taskdef::{ContainerDefinition, TaskDefinition};

use super::harness::{Harness, settings};
use crate::clock::PausedClock;
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{LABEL_INSTANCE_ID, RunState};

fn def() -> TaskDefinition {
    TaskDefinition {
        family: "web".into(),
        container_definitions: vec![
            ContainerDefinition {
                name: "app".into(),
                image: "img/app".into(),
                memory: Some(64),
                ..Default::default()
            },
            ContainerDefinition {
                name: "init".into(),
                image: "img/init".into(),
                essential: Some(false),
                memory: Some(16),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn container<'a>(st: &'a TaskState, name: &str) -> &'a ContainerState {
    st.containers
        .iter()
        .find(|c| c.name == name)
        .expect("container in state")
}

#[tokio::test]
async fn non_essential_exit_keeps_task_running_and_stop_cleans_up() {
    let mut h = Harness::start(&FakeRuntime::new(), settings(false), def(), None);
    h.until("RUNNING", |s| s.last_status == Status::Running)
        .await;
    let init = h.rt.id_of("init").expect("init created");
    h.rt.exit(&init, 0);
    let st = h
        .until("init stopped", |s| {
            container(s, "init").last_status == Status::Stopped
        })
        .await;
    assert_eq!(st.last_status, Status::Running);
    assert_eq!(container(&st, "init").exit_code, Some(0));
    h.handle
        .stop(StopCode::UserInitiated, "Task stopped by user")
        .await;
    let st = h
        .until("STOPPED", |s| s.last_status == Status::Stopped)
        .await;
    assert_eq!(st.stop_code, StopCode::UserInitiated);
    assert!(
        st.containers
            .iter()
            .all(|c| c.last_status == Status::Stopped)
    );
    h.finished().await;
    assert_eq!(
        h.rt.count(),
        0,
        "containers removed after the cleanup delay"
    );
}

#[tokio::test]
async fn essential_exit_stops_the_task_and_names_the_container() {
    let mut h = Harness::start(&FakeRuntime::new(), settings(false), def(), None);
    h.until("RUNNING", |s| s.last_status == Status::Running)
        .await;
    let app = h.rt.id_of("app").expect("app created");
    h.rt.exit(&app, 3);
    let st = h
        .until("STOPPED", |s| s.last_status == Status::Stopped)
        .await;
    assert_eq!(st.stop_code, StopCode::EssentialContainerExited);
    assert!(st.stopped_reason.contains("app"), "{}", st.stopped_reason);
    assert!(
        st.stopped_reason.contains("code 3"),
        "{}",
        st.stopped_reason
    );
    assert_eq!(container(&st, "app").exit_code, Some(3));
    assert!(h.rt.calls().iter().any(|c| c == "stop init"));
}

#[tokio::test]
async fn pull_failure_fails_the_task_before_creating_anything() {
    let rt = FakeRuntime::new();
    rt.fail_pull("img/init");
    let mut h = Harness::start(&rt, settings(false), def(), None);
    let st = h
        .until("STOPPED", |s| s.last_status == Status::Stopped)
        .await;
    assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
    assert!(
        st.stopped_reason.contains("manifest unknown"),
        "{}",
        st.stopped_reason
    );
    assert!(
        st.stopped_reason.contains("img/init"),
        "{}",
        st.stopped_reason
    );
    assert!(!h.rt.calls().iter().any(|c| c.starts_with("create")));
}

#[tokio::test]
async fn restart_adopts_running_containers_without_recreating_them() {
    let mut first = Harness::start(&FakeRuntime::new(), settings(false), def(), None);
    let running = first
        .until("RUNNING", |s| s.last_status == Status::Running)
        .await;
    let rt = first.rt.clone();
    drop(first);
    let calls_before = rt.calls().len();
    let mut second = Harness::start(&rt, settings(false), def(), Some(running.clone()));
    // The init container exits while the new supervisor watches.
    let init = rt.id_of("init").expect("init");
    rt.exit(&init, 0);
    let st = second
        .until("init stopped", |s| {
            container(s, "init").last_status == Status::Stopped
        })
        .await;
    assert_eq!(st.last_status, Status::Running);
    let new_calls: Vec<String> = rt.calls()[calls_before..].to_vec();
    assert!(
        !new_calls
            .iter()
            .any(|c| c.starts_with("create") || c.starts_with("start")),
        "{new_calls:?}"
    );
    assert_eq!(rt.count(), 2);
}

#[tokio::test]
async fn adoption_ignores_a_container_of_another_instance() {
    // Another agent on the same engine runs a task of the same id.
    let rt = FakeRuntime::new();
    let mut other_settings = settings(false);
    other_settings.instance_id = "i-other".into();
    let mut other = Harness::start(&rt, other_settings, def(), None);
    let running = other
        .until("RUNNING", |s| s.last_status == Status::Running)
        .await;
    let app = rt.id_of("app").expect("app");
    let calls_before = rt.calls().len();

    // This agent is handed the same task id, by name and by recorded id.
    for prior in [None, Some(running)] {
        let mut mine = Harness::start(&rt, settings(false), def(), prior);
        let st = mine.until_status(Status::Stopped).await;
        assert!(
            st.containers.iter().all(|c| c.runtime_id != app),
            "the other agent's container must not be recorded: {st:?}"
        );
        mine.finished().await;
    }
    // No start, stop or removal of anything: this agent's own containers
    // were never created (the names are taken).
    let touched: Vec<String> = rt.calls()[calls_before..]
        .iter()
        .filter(|c| c.starts_with("start ") || c.starts_with("stop ") || c.starts_with("remove "))
        .cloned()
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
    let info = rt.container(&app).expect("still there");
    assert_eq!(info.state, RunState::Running);
    assert_eq!(
        info.labels.get(LABEL_INSTANCE_ID).map(String::as_str),
        Some("i-other")
    );
}

// Stop while PENDING: commands are read in every phase.

#[tokio::test]
async fn a_stop_queued_before_the_supervisor_runs_starts_nothing() {
    let rt = FakeRuntime::new();
    let mut h = Harness::start(&rt, settings(false), def(), None);
    // Queued before the supervisor has run at all (a current-thread test).
    h.handle
        .stop(StopCode::UserInitiated, "Task stopped by user")
        .await;
    let st = h.until_status(Status::Stopped).await;
    assert_eq!(st.stop_code, StopCode::UserInitiated);
    assert_eq!(st.stopped_reason, "Task stopped by user");
    assert!(
        st.containers
            .iter()
            .all(|c| c.last_status == Status::Stopped)
    );
    let calls = rt.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("start") || c.starts_with("create") || c.starts_with("pull")),
        "{calls:?}"
    );
    h.finished().await;
}

#[tokio::test]
async fn a_stop_during_a_slow_pull_creates_and_starts_nothing() {
    let rt = FakeRuntime::new();
    let gate = rt.hold_pulls();
    let mut h = Harness::start(&rt, settings(false), def(), None);
    // Wait until the first pull has begun (it now waits on the gate).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !rt.calls().iter().any(|c| c.starts_with("pull")) {
        assert!(tokio::time::Instant::now() < deadline, "no pull began");
        tokio::task::yield_now().await;
    }
    h.handle
        .stop(StopCode::UserInitiated, "Task stopped by user")
        .await;
    let st = h.until_status(Status::Stopped).await;
    gate.release();
    assert_eq!(st.stop_code, StopCode::UserInitiated);
    h.finished().await;
    let calls = rt.calls();
    assert_eq!(
        calls,
        vec!["pull img/app".to_owned()],
        "one pull, abandoned"
    );
}

#[tokio::test]
async fn a_stop_after_prepare_but_before_start_starts_nothing() {
    // The second container depends on the first being HEALTHY: prepared and
    // created, the task waits; a stop then starts nothing more.
    let rt = FakeRuntime::new();
    let mut h = Harness::start(&rt, settings(false), healthy_dep(None), None);
    h.until("app waiting", |s| {
        !container(s, "app").runtime_id.is_empty()
    })
    .await;
    h.handle
        .stop(StopCode::ServiceSchedulerInitiated, "scaled in")
        .await;
    let st = h.until_status(Status::Stopped).await;
    assert_eq!(st.stop_code, StopCode::ServiceSchedulerInitiated);
    let starts: Vec<String> = rt
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("start"))
        .collect();
    assert_eq!(starts, vec!["start db".to_owned()]);
}

// Restart policy and dependsOn timing, on a paused clock (ported from
// tests/tests/semantics.rs, which keeps the end-to-end versions).

/// One essential container `app` with `restart_policy`.
fn restarting(period: Option<u64>, ignored: Vec<i64>) -> TaskDefinition {
    TaskDefinition {
        family: "web".into(),
        container_definitions: vec![ContainerDefinition {
            name: "app".into(),
            image: "img/app".into(),
            memory: Some(16),
            restart_policy: Some(berth_taskdef::RestartPolicy {
                enabled: true,
                ignored_exit_codes: ignored,
                restart_attempt_period: period,
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A fake runtime and a harness sharing one paused clock.
fn paused(def: TaskDefinition) -> (FakeRuntime, Harness) {
    let clock = Arc::new(PausedClock::new());
    let rt = FakeRuntime::with_clock(clock.clone());
    let mut h = Harness::start_with_clock(&rt, settings(false), def, None, clock);
    // Paused time: waiting costs nothing, and dependency timeouts are long.
    h.patience = Duration::from_secs(600);
    (rt, h)
}

fn starts(rt: &FakeRuntime, name: &str) -> usize {
    let call = format!("start {name}");
    rt.calls().iter().filter(|c| **c == call).count()
}

#[tokio::test(start_paused = true)]
async fn restart_policy_restarts_in_place_once_the_attempt_period_has_passed() {
    let (rt, mut h) = paused(restarting(Some(10), vec![]));
    h.until_status(Status::Running).await;
    let app = rt.id_of("app").expect("app");
    tokio::time::sleep(Duration::from_secs(10)).await;
    rt.exit(&app, 1);
    let st = h
        .until("a restart", |s| container(s, "app").restart_count == 1)
        .await;
    assert_eq!(st.last_status, Status::Running);
    assert_eq!(container(&st, "app").exit_code, Some(1));
    assert_eq!(rt.id_of("app").as_deref(), Some(app.as_str()), "in place");
    assert_eq!(starts(&rt, "app"), 2);
}

#[tokio::test(start_paused = true)]
async fn restart_policy_does_not_restart_within_the_attempt_period() {
    let (rt, mut h) = paused(restarting(Some(60), vec![]));
    h.until_status(Status::Running).await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    rt.exit(&rt.id_of("app").expect("app"), 1);
    let st = h.until_status(Status::Stopped).await;
    assert_eq!(st.stop_code, StopCode::EssentialContainerExited);
    assert_eq!(container(&st, "app").restart_count, 0);
    assert_eq!(starts(&rt, "app"), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_policy_does_not_restart_on_an_ignored_exit_code() {
    let (rt, mut h) = paused(restarting(Some(0), vec![3]));
    h.until_status(Status::Running).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    rt.exit(&rt.id_of("app").expect("app"), 3);
    let st = h.until_status(Status::Stopped).await;
    assert_eq!(st.stop_code, StopCode::EssentialContainerExited);
    assert!(
        st.stopped_reason.contains("code 3"),
        "{}",
        st.stopped_reason
    );
    assert_eq!(starts(&rt, "app"), 1);
}

#[tokio::test(start_paused = true)]
async fn restarts_wait_out_the_one_second_floor() {
    let (rt, mut h) = paused(restarting(Some(0), vec![]));
    h.until_status(Status::Running).await;
    let app = rt.id_of("app").expect("app");
    let began = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.exit(&app, 1);
    h.until("a restart", |s| container(s, "app").restart_count == 1)
        .await;
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "restarted after {:?}",
        began.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_restart_floor_is_acted_on_and_nothing_restarts() {
    let (rt, mut h) = paused(restarting(Some(0), vec![]));
    h.until_status(Status::Running).await;
    rt.exit(&rt.id_of("app").expect("app"), 1);
    // The restart now waits out the floor; the stop is read meanwhile.
    tokio::task::yield_now().await;
    h.handle
        .stop(StopCode::UserInitiated, "Task stopped by user")
        .await;
    let st = h.until_status(Status::Stopped).await;
    assert_eq!(st.stop_code, StopCode::UserInitiated);
    assert_eq!(container(&st, "app").restart_count, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(starts(&rt, "app"), 1, "{:?}", rt.calls());
}

/// `app` depends on `db` being HEALTHY, with an optional `startTimeout`.
fn healthy_dep(start_timeout: Option<u64>) -> TaskDefinition {
    TaskDefinition {
        family: "web".into(),
        container_definitions: vec![
            ContainerDefinition {
                name: "app".into(),
                image: "img/app".into(),
                memory: Some(16),
                start_timeout,
                depends_on: vec![berth_taskdef::ContainerDependency {
                    container_name: "db".into(),
                    condition: "HEALTHY".into(),
                }],
                ..Default::default()
            },
            ContainerDefinition {
                name: "db".into(),
                image: "img/db".into(),
                memory: Some(16),
                health_check: Some(berth_taskdef::HealthCheck {
                    command: vec!["CMD".into(), "true".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn depends_on_healthy_starts_the_dependent_once_healthy() {
    let (rt, mut h) = paused(healthy_dep(Some(30)));
    let st = h
        .until("db started", |s| {
            container(s, "db").last_status == Status::Running
        })
        .await;
    assert_eq!(st.last_status, Status::Pending, "app still waits");
    assert_eq!(starts(&rt, "app"), 0);
    tokio::time::sleep(Duration::from_secs(20)).await;
    rt.set_health(
        &rt.id_of("db").expect("db"),
        crate::runtime::Health::Healthy,
    );
    let st = h.until_status(Status::Running).await;
    assert_eq!(container(&st, "app").last_status, Status::Running);
    assert_eq!(st.health_status, Health::Healthy);
}

#[tokio::test(start_paused = true)]
async fn depends_on_healthy_that_times_out_stops_the_task_naming_both() {
    let (rt, mut h) = paused(healthy_dep(Some(30)));
    let began = tokio::time::Instant::now();
    let st = h.until_status(Status::Stopped).await;
    assert!(began.elapsed() >= Duration::from_secs(30));
    assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
    for part in ["app timed out after 30s", "db HEALTHY"] {
        assert!(st.stopped_reason.contains(part), "{}", st.stopped_reason);
    }
    assert!(
        container(&st, "app")
            .reason
            .starts_with("DependencyConditionFailed"),
        "{st:?}"
    );
    assert_eq!(starts(&rt, "app"), 0);
}

/// `app` depends on `migrate` with `condition`.
fn after_migrate(condition: &str) -> TaskDefinition {
    TaskDefinition {
        family: "web".into(),
        container_definitions: vec![
            ContainerDefinition {
                name: "app".into(),
                image: "img/app".into(),
                memory: Some(16),
                depends_on: vec![berth_taskdef::ContainerDependency {
                    container_name: "migrate".into(),
                    condition: condition.into(),
                }],
                ..Default::default()
            },
            ContainerDefinition {
                name: "migrate".into(),
                image: "img/migrate".into(),
                essential: Some(false),
                memory: Some(16),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn depends_on_success_and_complete_follow_the_exit_code() {
    for (condition, code, runs) in [
        ("SUCCESS", 0, true),
        ("SUCCESS", 1, false),
        ("COMPLETE", 1, true),
    ] {
        let (rt, mut h) = paused(after_migrate(condition));
        h.until("migrate started", |s| {
            container(s, "migrate").last_status == Status::Running
        })
        .await;
        assert_eq!(starts(&rt, "app"), 0, "{condition}");
        rt.exit(&rt.id_of("migrate").expect("migrate"), code);
        if runs {
            let st = h.until_status(Status::Running).await;
            assert_eq!(container(&st, "app").last_status, Status::Running);
        } else {
            let st = h.until_status(Status::Stopped).await;
            assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
            assert!(
                st.stopped_reason
                    .contains("to SUCCEED, but it exited with code 1"),
                "{}",
                st.stopped_reason
            );
            assert_eq!(starts(&rt, "app"), 0);
        }
    }
}
