//! Unit tests of the reconciler's rules on hand-built states.

use std::collections::BTreeMap;

use super::model::*;
use super::reconcile::*;

const NOW: i64 = 1_000_000_000;

struct Fx {
    spec: ServiceSpec,
    deployments: Vec<Deployment>,
    tasks: Vec<TaskView>,
    instances: Vec<InstanceView>,
    events: Vec<RecordedEvent>,
    now: i64,
}

fn deployment(id: &str, td: &str, status: DeploymentStatus, created: i64) -> Deployment {
    Deployment {
        id: id.into(),
        task_definition: td.into(),
        status,
        rollout_state: RolloutState::InProgress,
        rollout_state_reason: String::new(),
        failed_tasks: 0,
        created_at_ms: created,
        updated_at_ms: created,
        retry: RetryState::default(),
    }
}

fn instance(id: &str) -> InstanceView {
    InstanceView {
        id: id.into(),
        status: InstanceStatus::Active,
        connected: true,
        disconnected_since_ms: None,
        daemon: BTreeMap::new(),
        other_tasks: 0,
    }
}

impl Fx {
    fn replica(desired: i64, instances: usize) -> Fx {
        Fx {
            spec: ServiceSpec::replica("web", "default", desired),
            deployments: vec![deployment("d1", "web:1", DeploymentStatus::Primary, 0)],
            tasks: Vec::new(),
            instances: (0..instances).map(|i| instance(&format!("i{i}"))).collect(),
            events: Vec::new(),
            now: NOW,
        }
    }

    /// A RUNNING healthy task (long past its min healthy time).
    fn running(&mut self, id: &str, dep: &str, inst: &str) -> &mut TaskView {
        self.tasks.push(TaskView {
            id: id.into(),
            deployment_id: dep.into(),
            instance_id: inst.into(),
            last_status: LastStatus::Running,
            desired_status: DesiredStatus::Running,
            has_health_check: false,
            health: Health::Unknown,
            created_at_ms: self.tasks.len() as i64,
            started_at_ms: Some(1),
            stopped_reason: None,
            ever_healthy: true,
            failure_counted: false,
        });
        self.tasks.last_mut().expect("pushed")
    }

    fn pending(&mut self, id: &str, dep: &str, inst: &str) -> &mut TaskView {
        let t = self.running(id, dep, inst);
        t.last_status = LastStatus::Pending;
        t.started_at_ms = None;
        t.ever_healthy = false;
        t
    }

    fn plan(&self) -> Plan {
        reconcile(&State {
            spec: &self.spec,
            deployments: &self.deployments,
            tasks: &self.tasks,
            instances: &self.instances,
            events: &self.events,
            now_ms: self.now,
        })
    }

    fn dep(&self, plan: &Plan, id: &str) -> Deployment {
        plan.deployments
            .iter()
            .find(|d| d.id == id)
            .or_else(|| self.deployments.iter().find(|d| d.id == id))
            .cloned()
            .expect("deployment")
    }
}

fn stopped_ids(p: &Plan) -> Vec<&str> {
    let mut v: Vec<&str> = p.stops.iter().map(|s| s.task_id.as_str()).collect();
    v.sort();
    v
}

// ---- validation ----

#[test]
fn validate_accepts_defaults() {
    assert_eq!(ServiceSpec::replica("web", "default", 3).validate(), Ok(()));
    assert_eq!(ServiceSpec::daemon("agent", "default").validate(), Ok(()));
    let s = ServiceSpec::replica("web", "default", 3);
    assert_eq!((s.min_percent(), s.max_percent()), (100, 200));
    let d = ServiceSpec::daemon("agent", "default");
    assert_eq!((d.min_percent(), d.max_percent()), (0, 100));
}

#[test]
fn validate_names_the_field() {
    type Change = Box<dyn Fn(&mut ServiceSpec)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|s| s.desired_count = Some(-1)), "desiredCount"),
        (Box::new(|s| s.desired_count = None), "desiredCount"),
        (
            Box::new(|s| s.max_percent = Some(99)),
            "deploymentConfiguration.maximumPercent",
        ),
        (
            Box::new(|s| s.max_percent = Some(MAX_MAXIMUM_PERCENT + 1)),
            "deploymentConfiguration.maximumPercent",
        ),
        (
            Box::new(|s| s.min_healthy_percent = Some(101)),
            "deploymentConfiguration.minimumHealthyPercent",
        ),
        (
            Box::new(|s| s.min_healthy_percent = Some(-1)),
            "deploymentConfiguration.minimumHealthyPercent",
        ),
        (Box::new(|s| s.name = String::new()), "serviceName"),
        (Box::new(|s| s.name = "a b".into()), "serviceName"),
        (Box::new(|s| s.name = "x".repeat(256)), "serviceName"),
        (
            Box::new(|s| s.health_check_grace_period_s = -1),
            "healthCheckGracePeriodSeconds",
        ),
        (Box::new(|s| s.lost_after_ms = -1), "lostAfter"),
        (Box::new(|s| s.min_healthy_time_ms = -5), "minHealthyTime"),
    ];
    for (change, field) in cases {
        let mut s = ServiceSpec::replica("web", "default", 3);
        change(&mut s);
        let e = s.validate().expect_err(field);
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().starts_with(field), "{e}");
    }
}

#[test]
fn validate_daemon_refuses_count_strategy_and_max() {
    let mut d = ServiceSpec::daemon("agent", "default");
    d.desired_count = Some(2);
    assert_eq!(d.validate().expect_err("count").field, "desiredCount");
    let mut d = ServiceSpec::daemon("agent", "default");
    d.placement_strategies = 1;
    assert_eq!(
        d.validate().expect_err("strategy").field,
        "placementStrategy"
    );
    let mut d = ServiceSpec::daemon("agent", "default");
    d.max_percent = Some(200);
    assert_eq!(
        d.validate().expect_err("max").field,
        "deploymentConfiguration.maximumPercent"
    );
}

#[test]
fn bounds_and_threshold() {
    assert_eq!(bounds(4, 50, 200), (2, 8));
    assert_eq!(bounds(3, 50, 150), (2, 4));
    assert_eq!(bounds(1, 100, 100), (1, 1));
    assert_eq!(failure_threshold(1), 3);
    assert_eq!(failure_threshold(9), 5);
    assert_eq!(failure_threshold(1000), 200);
    assert_eq!(RetryState::delay_ms(1), 10_000);
    assert_eq!(RetryState::delay_ms(2), 20_000);
    assert_eq!(RetryState::delay_ms(10), 300_000);
    assert_eq!(RetryState::delay_ms(u32::MAX), 300_000);
}

// ---- REPLICA ----

#[test]
fn replica_starts_the_desired_count() {
    let fx = Fx::replica(3, 3);
    let p = fx.plan();
    assert_eq!(p.start_count(), 3);
    assert_eq!(p.starts[0].deployment_id, "d1");
    assert_eq!(p.starts[0].task_definition, "web:1");
    assert_eq!(p.starts[0].instance_id, None);
    assert!(p.stops.is_empty());
}

#[test]
fn replica_replaces_a_stopped_task() {
    let mut fx = Fx::replica(2, 2);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    let t = fx.running("b", "d1", "i1");
    t.last_status = LastStatus::Stopped;
    t.stopped_reason = Some("Essential container in task exited".into());
    let p = fx.plan();
    assert_eq!(p.start_count(), 1);
    // A crash after it was healthy is no circuit-breaker failure.
    assert!(!p.marks.contains(&TaskMark::FailureCounted("b".into())));
}

#[test]
fn steady_state_completes_the_deployment_once() {
    let mut fx = Fx::replica(2, 2);
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    let p = fx.plan();
    assert!(p.starts.is_empty() && p.stops.is_empty());
    let d = fx.dep(&p, "d1");
    assert_eq!(d.rollout_state, RolloutState::Completed);
    assert_eq!(d.updated_at_ms, NOW);
    assert!(p.events.contains(&steady_state_message("web")));
    // Stored: no new event within the hour, nothing to do.
    fx.deployments = vec![d];
    fx.events = p
        .events
        .iter()
        .map(|m| RecordedEvent {
            created_at_ms: NOW,
            message: m.clone(),
        })
        .collect();
    fx.now += 1;
    assert!(fx.plan().is_empty(), "{:?}", fx.plan());
}

#[test]
fn every_completed_deployment_says_the_steady_state_even_within_the_hour() {
    let mut fx = Fx::replica(2, 2);
    fx.deployments[0].status = DeploymentStatus::Inactive;
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.deployments
        .push(deployment("d2", "web:2", DeploymentStatus::Primary, 10));
    fx.running("a", "d2", "i0");
    fx.running("b", "d2", "i1");
    // d1 completed a minute ago.
    fx.events = [
        deployment_completed_message("web", "d1"),
        steady_state_message("web"),
    ]
    .into_iter()
    .map(|message| RecordedEvent {
        created_at_ms: NOW - 60_000,
        message,
    })
    .collect();
    let p = fx.plan();
    assert_eq!(fx.dep(&p, "d2").rollout_state, RolloutState::Completed);
    assert_eq!(
        p.events,
        vec![
            deployment_completed_message("web", "d2"),
            steady_state_message("web")
        ]
    );
    // Once: the next pass says nothing.
    fx.deployments[1] = fx.dep(&p, "d2");
    fx.events.extend(p.events.iter().map(|m| RecordedEvent {
        created_at_ms: NOW,
        message: m.clone(),
    }));
    fx.now += 1;
    assert!(fx.plan().is_empty(), "{:?}", fx.plan());
}

#[test]
fn new_tasks_are_healthy_after_min_healthy_time() {
    let mut fx = Fx::replica(1, 1);
    let t = fx.running("a", "d1", "i0");
    t.ever_healthy = false;
    t.started_at_ms = Some(NOW - 4_000);
    let p = fx.plan();
    assert_eq!(p.next_wake_ms, Some(NOW + 6_000));
    assert_eq!(fx.dep(&p, "d1").rollout_state, RolloutState::InProgress);
    fx.now += 6_000;
    let p = fx.plan();
    assert!(p.marks.contains(&TaskMark::BecameHealthy("a".into())));
    assert_eq!(fx.dep(&p, "d1").rollout_state, RolloutState::Completed);
}

#[test]
fn scale_in_stops_pending_first_then_busiest_instance_newest_first() {
    let mut fx = Fx::replica(2, 2);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i0");
    fx.running("c", "d1", "i1");
    fx.pending("d", "d1", "i1");
    let p = fx.plan();
    // d is not RUNNING; then i0 has the most tasks (2 vs 1): b is newer.
    assert_eq!(stopped_ids(&p), vec!["b", "d"]);
    assert!(p.stops.iter().all(|s| s.reason == StopReason::ScaleIn));
    assert!(p.starts.is_empty());
}

fn rolling(desired: i64, min: i64, max: i64) -> Fx {
    let mut fx = Fx::replica(desired, 4);
    fx.spec.min_healthy_percent = Some(min);
    fx.spec.max_percent = Some(max);
    fx.deployments[0].status = DeploymentStatus::Active;
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.deployments
        .push(deployment("d2", "web:2", DeploymentStatus::Primary, 10));
    for i in 0..desired {
        fx.running(&format!("old{i}"), "d1", &format!("i{}", i % 4));
    }
    fx
}

#[test]
fn rolling_min_100_max_200_starts_before_stopping() {
    let mut fx = rolling(4, 100, 200);
    let p = fx.plan();
    assert_eq!(p.start_count(), 4);
    assert!(p.stops.is_empty());
    // The new ones RUNNING but not yet healthy: nothing stops.
    for i in 0..4 {
        let t = fx.running(&format!("new{i}"), "d2", &format!("i{i}"));
        t.ever_healthy = false;
        t.started_at_ms = Some(NOW - 1);
    }
    let p = fx.plan();
    assert!(p.stops.is_empty() && p.starts.is_empty());
    // Healthy: all old ones stop, replaced by d2.
    fx.now += 20_000;
    let p = fx.plan();
    assert_eq!(p.stops.len(), 4);
    assert!(p.stops.iter().all(|s| s.reason
        == StopReason::Replaced {
            deployment_id: "d2".into()
        }));
    assert!(
        p.stops[0].reason.to_string().contains("d2"),
        "{}",
        p.stops[0].reason
    );
}

#[test]
fn rolling_min_50_max_100_stops_first() {
    let fx = rolling(4, 50, 100);
    let p = fx.plan();
    assert!(p.starts.is_empty());
    assert_eq!(p.stops.len(), 2, "{p:?}");
}

#[test]
fn rolling_both_at_100_is_a_deadlock() {
    let fx = rolling(2, 100, 100);
    let p = fx.plan();
    assert!(p.starts.is_empty() && p.stops.is_empty());
    assert_eq!(p.events, vec![deadlock_message("web")]);
    // Not repeated within the hour.
    let mut fx = fx;
    fx.events.push(RecordedEvent {
        created_at_ms: NOW - 10,
        message: deadlock_message("web"),
    });
    assert!(fx.plan().events.is_empty());
    fx.now += EVENT_REPEAT_WINDOW_MS;
    assert_eq!(fx.plan().events, vec![deadlock_message("web")]);
}

#[test]
fn older_deployment_without_tasks_becomes_inactive() {
    let mut fx = rolling(1, 100, 200);
    fx.tasks[0].last_status = LastStatus::Stopped;
    fx.running("n", "d2", "i1");
    let p = fx.plan();
    assert_eq!(fx.dep(&p, "d1").status, DeploymentStatus::Inactive);
    assert_eq!(fx.dep(&p, "d2").rollout_state, RolloutState::Completed);
}

#[test]
fn failed_starts_are_throttled_with_the_event() {
    let mut fx = Fx::replica(1, 1);
    let t = fx.pending("a", "d1", "i0");
    t.last_status = LastStatus::Stopped;
    t.stopped_reason = Some("CannotPullContainerError".into());
    let p = fx.plan();
    assert!(p.marks.contains(&TaskMark::FailureCounted("a".into())));
    let d = fx.dep(&p, "d1");
    assert_eq!(d.retry.consecutive_failures, 1);
    assert_eq!(d.retry.next_retry_at_ms, Some(NOW + 10_000));
    assert_eq!(d.failed_tasks, 1);
    assert!(p.starts.is_empty());
    assert!(p.events.contains(&unable_to_start_message("web")));
    assert_eq!(p.next_wake_ms, Some(NOW + 10_000));
    // Stored: not counted twice; retried when due.
    fx.deployments = vec![d];
    fx.tasks[0].failure_counted = true;
    assert!(fx.plan().marks.is_empty());
    fx.now += 10_000;
    assert_eq!(fx.plan().start_count(), 1);
}

#[test]
fn a_task_that_became_healthy_resets_the_throttle() {
    let mut fx = Fx::replica(2, 1);
    fx.deployments[0].retry = RetryState {
        consecutive_failures: 4,
        next_retry_at_ms: Some(NOW + 50_000),
    };
    let t = fx.running("a", "d1", "i0");
    t.ever_healthy = false;
    let p = fx.plan();
    assert_eq!(fx.dep(&p, "d1").retry, RetryState::default());
    assert_eq!(p.start_count(), 1);
}

fn breaker_fx(mode: CircuitBreaker) -> Fx {
    let mut fx = rolling(2, 100, 200);
    fx.spec.circuit_breaker = mode;
    for i in 0..3 {
        let t = fx.pending(&format!("bad{i}"), "d2", "i0");
        t.last_status = LastStatus::Stopped;
        t.stopped_reason = Some(format!("CannotPullContainerError {i}"));
    }
    fx
}

#[test]
fn circuit_breaker_fails_the_deployment() {
    let fx = breaker_fx(CircuitBreaker::Enable);
    let p = fx.plan();
    let d = fx.dep(&p, "d2");
    assert_eq!(d.rollout_state, RolloutState::Failed);
    assert_eq!(d.failed_tasks, 3);
    assert!(
        d.rollout_state_reason.contains("3 tasks failed"),
        "{}",
        d.rollout_state_reason
    );
    assert!(
        d.rollout_state_reason
            .contains("CannotPullContainerError 2"),
        "{}",
        d.rollout_state_reason
    );
    assert!(p.events.contains(&deployment_failed_message("web", "d2")));
    assert!(p.new_deployment.is_none());
    assert!(p.starts.is_empty());
    assert!(p.stops.is_empty(), "old tasks stay: {p:?}");
}

#[test]
fn circuit_breaker_off_only_counts() {
    let fx = breaker_fx(CircuitBreaker::Off);
    let p = fx.plan();
    let d = fx.dep(&p, "d2");
    assert_eq!(d.rollout_state, RolloutState::InProgress);
    assert_eq!(d.failed_tasks, 3);
}

#[test]
fn circuit_breaker_rolls_back_to_the_last_completed() {
    let fx = breaker_fx(CircuitBreaker::Rollback);
    let p = fx.plan();
    let d = fx.dep(&p, "d2");
    assert_eq!(d.rollout_state, RolloutState::Failed);
    // No longer PRIMARY; without tasks left it is INACTIVE at once.
    assert_eq!(d.status, DeploymentStatus::Inactive);
    let nd = p.new_deployment.clone().expect("rollback");
    assert_eq!(nd.task_definition, "web:1");
    assert!(nd.rollout_state_reason.contains("d1"));
    assert_eq!(
        p.events,
        vec![
            deployment_failed_message("web", "d2"),
            rolling_back_message("web", "d1")
        ]
    );
}

#[test]
fn unhealthy_before_ever_healthy_counts_and_is_replaced() {
    let mut fx = Fx::replica(1, 1);
    fx.spec.health_check_grace_period_s = 10;
    let t = fx.running("a", "d1", "i0");
    t.has_health_check = true;
    t.health = Health::Unhealthy;
    t.ever_healthy = false;
    t.started_at_ms = Some(NOW - 5_000);
    // Inside the grace period: ignored.
    let p = fx.plan();
    assert!(p.stops.is_empty() && p.marks.is_empty());
    assert_eq!(p.next_wake_ms, Some(NOW + 5_000));
    fx.now += 5_000;
    let p = fx.plan();
    assert!(p.marks.contains(&TaskMark::FailureCounted("a".into())));
    assert_eq!(p.stops[0].reason, StopReason::Unhealthy);
    assert_eq!(fx.dep(&p, "d1").failed_tasks, 1);
}

#[test]
fn draining_replaces_first_when_max_allows() {
    let mut fx = Fx::replica(2, 3);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.instances[0].status = InstanceStatus::Draining;
    let p = fx.plan();
    assert_eq!(p.start_count(), 1);
    assert!(p.stops.is_empty(), "min 100: wait for the replacement");
    fx.running("c", "d1", "i2");
    let p = fx.plan();
    assert_eq!(stopped_ids(&p), vec!["a"]);
    assert_eq!(p.stops[0].reason, StopReason::Draining);
    assert!(p.starts.is_empty());
}

#[test]
fn draining_with_max_100_stops_first() {
    let mut fx = Fx::replica(2, 3);
    fx.spec.min_healthy_percent = Some(50);
    fx.spec.max_percent = Some(100);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.instances[0].status = InstanceStatus::Draining;
    let p = fx.plan();
    assert!(p.starts.is_empty());
    assert_eq!(stopped_ids(&p), vec!["a"]);
}

#[test]
fn lost_instance_tasks_are_replaced_and_surplus_stopped_on_return() {
    let mut fx = Fx::replica(2, 3);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.instances[0].connected = false;
    fx.instances[0].disconnected_since_ms = Some(NOW - 60_000);
    // Not lost yet: wait until lost_after (5 min).
    let p = fx.plan();
    assert!(p.starts.is_empty());
    assert_eq!(p.next_wake_ms, Some(NOW - 60_000 + DEFAULT_LOST_AFTER_MS));
    fx.now = NOW - 60_000 + DEFAULT_LOST_AFTER_MS;
    let p = fx.plan();
    assert!(p.marks.contains(&TaskMark::Lost("a".into())));
    assert_eq!(p.start_count(), 1);
    // Marked lost and replaced; then the instance returns.
    fx.tasks[0].last_status = LastStatus::Unknown;
    fx.running("c", "d1", "i2");
    fx.instances[0].connected = true;
    fx.instances[0].disconnected_since_ms = None;
    let p = fx.plan();
    assert_eq!(stopped_ids(&p), vec!["a"]);
    assert_eq!(p.stops[0].reason, StopReason::LostInstanceReturned);
    assert!(p.stops[0].reason.to_string().contains("came back"));
}

#[test]
fn lost_after_zero_never_replaces() {
    let mut fx = Fx::replica(2, 3);
    fx.spec.lost_after_ms = 0;
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.instances[0].connected = false;
    fx.instances[0].disconnected_since_ms = Some(0);
    let p = fx.plan();
    assert!(p.starts.is_empty() && p.marks.is_empty());
    assert_eq!(p.next_wake_ms, None);
}

#[test]
fn deregistered_instance_is_replaced_at_once() {
    let mut fx = Fx::replica(2, 3);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.instances[0].status = InstanceStatus::Inactive;
    let p = fx.plan();
    assert_eq!(p.start_count(), 1);
    assert_eq!(stopped_ids(&p), vec!["a"]);
    assert_eq!(p.stops[0].reason, StopReason::Deregistered);
}

#[test]
fn the_same_state_gives_the_same_plan() {
    let fx = breaker_fx(CircuitBreaker::Rollback);
    assert_eq!(fx.plan(), fx.plan());
    let fx = rolling(5, 50, 150);
    assert_eq!(fx.plan(), fx.plan());
}

// ---- DAEMON ----

fn daemon_fx(n: usize) -> Fx {
    let mut fx = Fx::replica(0, n);
    fx.spec = ServiceSpec::daemon("agent", "default");
    for i in &mut fx.instances {
        i.daemon.insert(
            "d1".into(),
            DaemonFit {
                eligible: true,
                room: true,
            },
        );
    }
    fx
}

#[test]
fn daemon_one_task_per_eligible_instance() {
    let mut fx = daemon_fx(3);
    fx.instances[2]
        .daemon
        .insert("d1".into(), DaemonFit::default());
    let p = fx.plan();
    let on: Vec<_> = p
        .starts
        .iter()
        .map(|s| (s.instance_id.as_deref(), s.count))
        .collect();
    assert_eq!(on, vec![(Some("i0"), 1), (Some("i1"), 1)]);
}

#[test]
fn daemon_stops_on_drained_and_ineligible_instances() {
    let mut fx = daemon_fx(3);
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.running("c", "d1", "i2");
    fx.instances[0].status = InstanceStatus::Draining;
    fx.instances[0].other_tasks = 1;
    fx.instances[1]
        .daemon
        .insert("d1".into(), DaemonFit::default());
    let p = fx.plan();
    // i0 still runs other tasks: its daemon task leaves last.
    assert_eq!(stopped_ids(&p), vec!["b"]);
    assert_eq!(p.stops[0].reason, StopReason::Ineligible);
    assert!(p.starts.is_empty());
    fx.instances[0].other_tasks = 0;
    let p = fx.plan();
    assert_eq!(stopped_ids(&p), vec!["a", "b"]);
}

#[test]
fn daemon_new_revision_starts_first_when_room_else_stops_first() {
    let mut fx = daemon_fx(2);
    fx.deployments[0].status = DeploymentStatus::Active;
    fx.deployments[0].rollout_state = RolloutState::Completed;
    fx.deployments
        .push(deployment("d2", "agent:2", DeploymentStatus::Primary, 10));
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    fx.instances[0].daemon.insert(
        "d2".into(),
        DaemonFit {
            eligible: true,
            room: true,
        },
    );
    fx.instances[1].daemon.insert(
        "d2".into(),
        DaemonFit {
            eligible: true,
            room: false,
        },
    );
    let p = fx.plan();
    assert_eq!(p.starts.len(), 1);
    assert_eq!(p.starts[0].instance_id.as_deref(), Some("i0"));
    assert_eq!(stopped_ids(&p), vec!["b"]);
    // The new task on i0 healthy: the old one there stops.
    fx.running("n0", "d2", "i0");
    let p = fx.plan();
    assert!(stopped_ids(&p).contains(&"a"));
}

#[test]
fn daemon_completes_when_every_instance_runs_a_healthy_task() {
    let mut fx = daemon_fx(2);
    fx.running("a", "d1", "i0");
    fx.running("b", "d1", "i1");
    let p = fx.plan();
    assert_eq!(fx.dep(&p, "d1").rollout_state, RolloutState::Completed);
    assert!(p.events.contains(&steady_state_message("agent")));
}

#[test]
fn words_are_ecs_words() {
    assert_eq!(SchedulingStrategy::Daemon.as_str(), "DAEMON");
    assert_eq!(DeploymentStatus::Primary.as_str(), "PRIMARY");
    assert_eq!(RolloutState::InProgress.as_str(), "IN_PROGRESS");
    assert_eq!(Stop::CODE.as_str(), "ServiceSchedulerInitiated");
}
