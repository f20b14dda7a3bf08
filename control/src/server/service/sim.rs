//! A simulated fleet that applies plans, and property tests of the
//! reconciler's invariants over random fleets, services and event orders.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::health::is_healthy;
use super::model::*;
use super::reconcile::{bounds, reconcile};

const SLOTS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    /// Time passes; PENDING tasks start (or fail when `fail`).
    Tick {
        fail: bool,
    },
    Kill(usize),
    Drain(usize),
    Activate(usize),
    Disconnect(usize),
    Reconnect(usize),
    Scale(i64),
    Deploy,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<bool>().prop_map(|f| Op::Tick { fail: f }),
        1 => (0usize..20).prop_map(Op::Kill),
        1 => (0usize..4).prop_map(Op::Drain),
        1 => (0usize..4).prop_map(Op::Activate),
        1 => (0usize..4).prop_map(Op::Disconnect),
        1 => (0usize..4).prop_map(Op::Reconnect),
        1 => (0i64..6).prop_map(Op::Scale),
        1 => Just(Op::Deploy),
    ]
}

struct Sim {
    spec: ServiceSpec,
    deployments: Vec<Deployment>,
    tasks: Vec<TaskView>,
    instances: Vec<InstanceView>,
    events: Vec<RecordedEvent>,
    now: i64,
    seq: u64,
    revision: u32,
}

impl Sim {
    fn new(spec: ServiceSpec, instances: usize) -> Sim {
        let mut s = Sim {
            spec,
            deployments: Vec::new(),
            tasks: Vec::new(),
            instances: (0..instances)
                .map(|i| InstanceView {
                    id: format!("i{i}"),
                    status: InstanceStatus::Active,
                    connected: true,
                    disconnected_since_ms: None,
                    daemon: BTreeMap::new(),
                    other_tasks: 0,
                })
                .collect(),
            events: Vec::new(),
            now: 1_000_000,
            seq: 0,
            revision: 0,
        };
        s.deploy(None);
        s
    }

    fn id(&mut self, p: &str) -> String {
        self.seq += 1;
        format!("{p}{:05}", self.seq)
    }

    fn deploy(&mut self, td: Option<String>) {
        for d in &mut self.deployments {
            if d.status == DeploymentStatus::Primary {
                d.status = DeploymentStatus::Active;
            }
        }
        let td = td.unwrap_or_else(|| {
            self.revision += 1;
            format!("web:{}", self.revision)
        });
        let id = self.id("d");
        self.deployments.push(Deployment {
            id,
            task_definition: td,
            status: DeploymentStatus::Primary,
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: String::new(),
            failed_tasks: 0,
            created_at_ms: self.now,
            updated_at_ms: self.now,
            retry: RetryState::default(),
        });
    }

    fn state(&self) -> State<'_> {
        State {
            spec: &self.spec,
            deployments: &self.deployments,
            tasks: &self.tasks,
            instances: &self.instances,
            events: &self.events,
            now_ms: self.now,
        }
    }

    fn usable(&self, i: &InstanceView) -> bool {
        i.status == InstanceStatus::Active && i.connected
    }

    fn alive_on(&self, inst: &str) -> usize {
        self.tasks
            .iter()
            .filter(|t| t.instance_id == inst && t.last_status != LastStatus::Stopped)
            .count()
    }

    fn counts_alive(&self, t: &TaskView) -> bool {
        t.last_status != LastStatus::Stopped
            && self.instances.iter().any(|i| {
                i.id == t.instance_id
                    && i.status != InstanceStatus::Inactive
                    && (i.connected
                        || self.spec.lost_after_ms == 0
                        || i.disconnected_since_ms
                            .is_none_or(|s| self.now < s + self.spec.lost_after_ms))
            })
    }

    fn healthy(&self, t: &TaskView) -> bool {
        self.counts_alive(t)
            && t.desired_status == DesiredStatus::Running
            && is_healthy(t, &self.spec, self.now)
    }

    /// Plans, checks the invariants, applies.
    fn step(&mut self) -> Result<(), TestCaseError> {
        let plan = reconcile(&self.state());
        prop_assert_eq!(&plan, &reconcile(&self.state()), "same state, same plan");
        let (min_h, max_t) = bounds(
            self.spec.desired(),
            self.spec.min_percent(),
            self.spec.max_percent(),
        );
        let alive = self.tasks.iter().filter(|t| self.counts_alive(t)).count() as i64;
        if plan.start_count() > 0 {
            prop_assert!(
                alive + i64::from(plan.start_count()) <= max_t,
                "above max: {} alive + {} > {}",
                alive,
                plan.start_count(),
                max_t
            );
        }
        let healthy_before = self.tasks.iter().filter(|t| self.healthy(t)).count() as i64;
        let healthy_stopped = plan
            .stops
            .iter()
            .filter(|s| {
                self.tasks
                    .iter()
                    .any(|t| t.id == s.task_id && self.healthy(t))
            })
            .count() as i64;
        if healthy_stopped > 0 {
            prop_assert!(
                healthy_before - healthy_stopped >= min_h.min(healthy_before),
                "below min: {} - {} < {}",
                healthy_before,
                healthy_stopped,
                min_h
            );
        }
        for d in &plan.deployments {
            if d.rollout_state == RolloutState::Completed
                && self
                    .deployments
                    .iter()
                    .any(|o| o.id == d.id && o.rollout_state != RolloutState::Completed)
            {
                let alive: Vec<&TaskView> =
                    self.tasks.iter().filter(|t| self.counts_alive(t)).collect();
                prop_assert_eq!(alive.len() as i64, self.spec.desired());
                prop_assert!(
                    alive
                        .iter()
                        .all(|t| t.deployment_id == d.id && self.healthy(t))
                );
            }
        }
        self.apply(plan);
        Ok(())
    }

    fn apply(&mut self, plan: Plan) {
        for m in &plan.marks {
            let (id, f): (&String, fn(&mut TaskView)) = match m {
                TaskMark::BecameHealthy(id) => (id, |t| t.ever_healthy = true),
                TaskMark::FailureCounted(id) => (id, |t| t.failure_counted = true),
                TaskMark::Lost(id) => (id, |t| t.last_status = LastStatus::Unknown),
            };
            if let Some(t) = self.tasks.iter_mut().find(|t| &t.id == id) {
                f(t);
            }
        }
        for d in plan.deployments {
            if let Some(o) = self.deployments.iter_mut().find(|o| o.id == d.id) {
                *o = d;
            }
        }
        if let Some(nd) = plan.new_deployment {
            self.deploy(Some(nd.task_definition));
        }
        for m in plan.events {
            self.events.push(RecordedEvent {
                created_at_ms: self.now,
                message: m,
            });
        }
        for s in &plan.stops {
            if let Some(t) = self.tasks.iter_mut().find(|t| t.id == s.task_id) {
                t.desired_status = DesiredStatus::Stopped;
            }
        }
        for s in plan.starts {
            for _ in 0..s.count {
                let target = self
                    .instances
                    .iter()
                    .filter(|i| self.usable(i) && self.alive_on(&i.id) < SLOTS)
                    .min_by_key(|i| (self.alive_on(&i.id), i.id.clone()))
                    .map(|i| i.id.clone());
                let Some(inst) = target else { break };
                let id = self.id("t");
                self.tasks.push(TaskView {
                    id,
                    deployment_id: s.deployment_id.clone(),
                    instance_id: inst,
                    last_status: LastStatus::Pending,
                    desired_status: DesiredStatus::Running,
                    has_health_check: false,
                    health: Health::Unknown,
                    created_at_ms: self.now,
                    started_at_ms: None,
                    stopped_reason: None,
                    ever_healthy: false,
                    failure_counted: false,
                });
            }
        }
    }

    fn op(&mut self, op: &Op) {
        let n = self.instances.len();
        match *op {
            Op::Tick { fail } => {
                self.now += 5_000;
                let now = self.now;
                for t in &mut self.tasks {
                    let connected = self
                        .instances
                        .iter()
                        .any(|i| i.id == t.instance_id && i.connected);
                    if !connected {
                        continue;
                    }
                    if t.desired_status == DesiredStatus::Stopped {
                        t.last_status = LastStatus::Stopped;
                    } else if t.last_status == LastStatus::Pending {
                        if fail {
                            t.last_status = LastStatus::Stopped;
                            t.stopped_reason = Some("CannotPullContainerError".into());
                        } else {
                            t.last_status = LastStatus::Running;
                            t.started_at_ms = Some(now);
                        }
                    } else if t.last_status == LastStatus::Unknown {
                        // The agent reports what it really runs.
                        t.last_status = if t.started_at_ms.is_some() {
                            LastStatus::Running
                        } else {
                            LastStatus::Pending
                        };
                    }
                }
            }
            Op::Kill(k) => {
                let running: Vec<usize> = (0..self.tasks.len())
                    .filter(|&i| self.tasks[i].last_status == LastStatus::Running)
                    .collect();
                if !running.is_empty() {
                    let t = &mut self.tasks[running[k % running.len()]];
                    t.last_status = LastStatus::Stopped;
                    t.stopped_reason = Some("Essential container in task exited".into());
                }
            }
            Op::Drain(i) => self.instances[i % n].status = InstanceStatus::Draining,
            Op::Activate(i) => self.instances[i % n].status = InstanceStatus::Active,
            Op::Disconnect(i) => {
                let inst = &mut self.instances[i % n];
                if inst.connected {
                    inst.connected = false;
                    inst.disconnected_since_ms = Some(self.now);
                }
            }
            Op::Reconnect(i) => {
                let inst = &mut self.instances[i % n];
                inst.connected = true;
                inst.disconnected_since_ms = None;
            }
            Op::Scale(d) => self.spec.desired_count = Some(d),
            Op::Deploy => self.deploy(None),
        }
    }
}

fn spec() -> impl Strategy<Value = ServiceSpec> {
    (
        0i64..6,
        prop_oneof![Just(0i64), Just(50), Just(100)],
        prop_oneof![Just(100i64), Just(150), Just(200)],
        prop_oneof![
            Just(CircuitBreaker::Off),
            Just(CircuitBreaker::Enable),
            Just(CircuitBreaker::Rollback)
        ],
        prop_oneof![Just(0i64), Just(20_000)],
    )
        .prop_map(|(d, min, max, cb, lost)| {
            let mut s = ServiceSpec::replica("web", "default", d);
            s.min_healthy_percent = Some(min);
            s.max_percent = Some(max);
            s.circuit_breaker = cb;
            s.lost_after_ms = lost;
            s.min_healthy_time_ms = 5_000;
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn invariants_hold_and_desired_count_is_reached(
        spec in spec(),
        instances in 1usize..4,
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let mut sim = Sim::new(spec, instances);
        for o in &ops {
            sim.op(o);
            sim.step()?;
        }
        // Quiet: every instance back and ACTIVE, no failures.
        for i in 0..sim.instances.len() {
            sim.op(&Op::Activate(i));
            sim.op(&Op::Reconnect(i));
        }
        for _ in 0..400 {
            sim.op(&Op::Tick { fail: false });
            sim.now += 25_000;
            sim.step()?;
        }
        let primary_failed = sim.deployments.iter().any(|d| {
            d.status == DeploymentStatus::Primary && d.rollout_state == RolloutState::Failed
        });
        let capacity = (SLOTS * sim.instances.len()) as i64;
        let (min_h, max_t) = bounds(sim.spec.desired(), sim.spec.min_percent(), sim.spec.max_percent());
        let deadlocked = min_h == sim.spec.desired() && max_t == sim.spec.desired();
        if !primary_failed && !deadlocked && capacity >= 2 * sim.spec.desired() {
            let primary = sim.deployments.iter().find(|d| d.status == DeploymentStatus::Primary).map(|d| d.id.clone());
            let healthy = sim.tasks.iter().filter(|t| sim.healthy(t) && Some(&t.deployment_id) == primary.as_ref()).count() as i64;
            prop_assert_eq!(healthy, sim.spec.desired(), "{:#?} {:#?} {:#?}", sim.tasks, sim.deployments, reconcile(&sim.state()));
            let alive = sim.tasks.iter().filter(|t| sim.counts_alive(t)).count() as i64;
            prop_assert_eq!(alive, sim.spec.desired());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Each instance: status, connected, eligible, room, and the state of
    /// its task of the old and of the new deployment (0 = none).
    #[test]
    fn daemon_starts_only_on_active_eligible_instances(
        insts in proptest::collection::vec(
            (0u8..3, any::<bool>(), any::<bool>(), any::<bool>(), 0u8..4, 0u8..4), 1..6),
        rolling in any::<bool>(),
    ) {
        let spec = ServiceSpec::daemon("agent", "default");
        let mut deployments = vec![Deployment {
            id: "d1".into(),
            task_definition: "agent:1".into(),
            status: DeploymentStatus::Primary,
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: String::new(),
            failed_tasks: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            retry: RetryState::default(),
        }];
        if rolling {
            deployments[0].status = DeploymentStatus::Active;
            deployments[0].rollout_state = RolloutState::Completed;
            let mut d2 = deployments[0].clone();
            d2.id = "d2".into();
            d2.task_definition = "agent:2".into();
            d2.status = DeploymentStatus::Primary;
            d2.rollout_state = RolloutState::InProgress;
            deployments.push(d2);
        }
        let primary = if rolling { "d2" } else { "d1" };
        let now = 1_000_000;
        let mut instances = Vec::new();
        let mut tasks = Vec::new();
        for (n, &(status, connected, eligible, room, old, new)) in insts.iter().enumerate() {
            let id = format!("i{n}");
            let fit = DaemonFit { eligible, room };
            instances.push(InstanceView {
                id: id.clone(),
                status: [InstanceStatus::Active, InstanceStatus::Draining, InstanceStatus::Inactive][status as usize],
                connected,
                disconnected_since_ms: (!connected).then_some(now - 1_000),
                daemon: [("d1".to_owned(), fit), ("d2".to_owned(), fit)].into_iter().collect(),
                other_tasks: 0,
            });
            for (dep, state) in [("d1", old), ("d2", new)] {
                if state == 0 || (dep == "d2" && !rolling) {
                    continue;
                }
                let last = [LastStatus::Pending, LastStatus::Running, LastStatus::Stopped][(state - 1) as usize];
                tasks.push(TaskView {
                    id: format!("{dep}-{id}"),
                    deployment_id: dep.into(),
                    instance_id: id.clone(),
                    last_status: last,
                    desired_status: DesiredStatus::Running,
                    has_health_check: false,
                    health: Health::Unknown,
                    created_at_ms: 0,
                    started_at_ms: (last != LastStatus::Pending).then_some(0),
                    stopped_reason: None,
                    ever_healthy: last == LastStatus::Running,
                    failure_counted: false,
                });
            }
        }
        let state = State {
            spec: &spec,
            deployments: &deployments,
            tasks: &tasks,
            instances: &instances,
            events: &[],
            now_ms: now,
        };
        let plan = reconcile(&state);
        prop_assert_eq!(&plan, &reconcile(&state));
        for s in &plan.starts {
            prop_assert_eq!(s.deployment_id.as_str(), primary);
            prop_assert_eq!(s.count, 1);
            let i = instances.iter().find(|i| Some(&i.id) == s.instance_id.as_ref());
            let i = i.expect("start on a known instance");
            prop_assert_eq!(i.status, InstanceStatus::Active);
            prop_assert!(i.connected);
            prop_assert!(i.daemon[primary].eligible);
            // At most one task per instance unless it has room for both.
            let alive_here = tasks.iter().filter(|t| t.instance_id == i.id && t.last_status != LastStatus::Stopped).count();
            prop_assert!(alive_here == 0 || i.daemon[primary].room, "{:?}", i);
            prop_assert!(!tasks.iter().any(|t| t.instance_id == i.id && t.deployment_id == primary && t.last_status != LastStatus::Stopped));
        }
    }
}
