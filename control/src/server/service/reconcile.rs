//! [`reconcile`]: one service's state in, a [`Plan`] out.
//!
//! The function is pure and deterministic: the same [`State`] gives the
//! same plan (ties are broken by ids), so a plan that could not be stored
//! because the state moved on is simply computed again.
//!
//! Order of the work (each step sees what the earlier ones decided):
//! 1. classify every task by its instance: usable, DRAINING, disconnected
//!    (not yet lost), lost (disconnected past `lost_after`), gone
//!    (deregistered or unknown);
//! 2. bookkeeping: tasks healthy for the first time, failures the circuit
//!    breaker and the retry throttle count (each once, through
//!    [`TaskMark`]s), lost tasks, tasks of gone instances stopped;
//! 3. the circuit breaker (FAILED, and a rollback deployment);
//! 4. the strategy: [`replica`] or [`daemon`] — stops and starts within
//!    the bounds, completion;
//! 5. older deployments without tasks become INACTIVE; events not repeated
//!    within an hour; the next time the clock alone changes something.

use std::collections::{BTreeMap, BTreeSet};

use super::health::{failed_to_start, is_failed, is_healthy, is_unhealthy, next_change};
use super::model::{
    CircuitBreaker, DaemonFit, Deployment, DeploymentStatus, DesiredStatus, InstanceStatus,
    InstanceView, LastStatus, MAX_DESIRED_COUNT, MAX_MAXIMUM_PERCENT, NewDeployment, Plan,
    RetryState, RolloutState, SchedulingStrategy, Start, State, Stop, StopReason, TaskMark,
    TaskView,
};

/// Events are not repeated within this window.
pub const EVENT_REPEAT_WINDOW_MS: i64 = 3_600_000;

/// `service (NAME) has reached a steady state.`
pub fn steady_state_message(name: &str) -> String {
    format!("service ({name}) has reached a steady state.")
}

/// The deadlock of a rolling deployment.
pub fn deadlock_message(name: &str) -> String {
    format!(
        "service ({name}) was unable to stop or start tasks during a deployment because of the service deployment configuration. Update the minimumHealthyPercent or maximumPercent value and try again."
    )
}

/// Tasks keep failing to start.
pub fn unable_to_start_message(name: &str) -> String {
    format!("service ({name}) is unable to consistently start tasks successfully.")
}

/// The circuit breaker tripped.
pub fn deployment_failed_message(name: &str, deployment: &str) -> String {
    format!("service ({name}) (deployment {deployment}) deployment failed: tasks failed to start.")
}

/// A rollback to the last completed deployment.
pub fn rolling_back_message(name: &str, deployment: &str) -> String {
    format!("service ({name}) rolling back to deployment {deployment}.")
}

/// A deployment reached COMPLETED.
pub fn deployment_completed_message(name: &str, deployment: &str) -> String {
    format!("service ({name}) (deployment {deployment}) deployment completed.")
}

/// The circuit breaker's threshold: ⌈0.5 × desired⌉ clamped to 3..200.
pub fn failure_threshold(desired: i64) -> u32 {
    let half = (desired.max(0) + 1) / 2;
    half.clamp(3, 200) as u32
}

/// (⌈desired × min / 100⌉, ⌊desired × max / 100⌋): the fewest healthy
/// tasks and the most RUNNING + PENDING tasks.
pub fn bounds(desired: i64, min_percent: i64, max_percent: i64) -> (i64, i64) {
    let d = desired.clamp(0, MAX_DESIRED_COUNT);
    let max = max_percent.clamp(100, MAX_MAXIMUM_PERCENT);
    let min = min_percent.clamp(0, 100);
    ((d * min + 99) / 100, d * max / 100)
}

/// Where a task is, as far as the service is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// An ACTIVE instance, connected (or disconnected but not lost yet).
    Usable,
    /// A DRAINING instance (not lost).
    Draining,
    /// Disconnected longer than `lost_after`.
    Lost,
    /// INACTIVE or unknown instance.
    Gone,
}

struct Work<'a> {
    s: State<'a>,
    instances: BTreeMap<&'a str, &'a InstanceView>,
    deployments: Vec<Deployment>,
    plan: Plan,
    wake: Option<i64>,
    /// Tasks the plan stops (not counted as running in later steps).
    stopping: BTreeSet<&'a str>,
    /// Tasks healthy now or before.
    ever_healthy: BTreeSet<&'a str>,
    /// The stop reason of the last failed task counted in this plan.
    last_reason: Option<String>,
}

impl<'a> Work<'a> {
    fn wake_at(&mut self, at: i64) {
        if at > self.s.now_ms {
            self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        }
    }

    fn event(&mut self, message: String) {
        let now = self.s.now_ms;
        let recent = self.s.events.iter().any(|e| {
            e.message == message && now.saturating_sub(e.created_at_ms) < EVENT_REPEAT_WINDOW_MS
        });
        if !recent && !self.plan.events.contains(&message) {
            self.plan.events.push(message);
        }
    }

    fn stop(&mut self, t: &'a TaskView, reason: StopReason) {
        if self.stopping.insert(t.id.as_str()) {
            self.plan.stops.push(Stop {
                task_id: t.id.clone(),
                reason,
            });
        }
    }

    fn place(&self, t: &TaskView) -> Place {
        let Some(i) = self.instances.get(t.instance_id.as_str()) else {
            return Place::Gone;
        };
        if i.status == InstanceStatus::Inactive {
            return Place::Gone;
        }
        if lost(i, self.s.spec.lost_after_ms, self.s.now_ms) {
            return Place::Lost;
        }
        match i.status {
            InstanceStatus::Draining => Place::Draining,
            _ => Place::Usable,
        }
    }

    /// Not STOPPED, on an instance that counts: it runs (or will).
    fn alive(&self, t: &TaskView) -> bool {
        t.last_status != LastStatus::Stopped
            && matches!(self.place(t), Place::Usable | Place::Draining)
    }

    /// Alive, desired RUNNING and not stopped by this plan.
    fn in_service(&self, t: &TaskView) -> bool {
        self.alive(t)
            && t.desired_status == DesiredStatus::Running
            && !self.stopping.contains(t.id.as_str())
    }

    fn healthy(&self, t: &TaskView) -> bool {
        self.in_service(t) && is_healthy(t, self.s.spec, self.s.now_ms)
    }

    fn primary_index(&self) -> Option<usize> {
        self.deployments
            .iter()
            .enumerate()
            .filter(|(_, d)| d.status == DeploymentStatus::Primary)
            .max_by(|(_, a), (_, b)| {
                (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str()))
            })
            .map(|(i, _)| i)
    }

    /// Whether the primary may start tasks now; records the throttle's
    /// wake-up and event when it may not because of it.
    fn may_start(&mut self, p: usize, wanted: bool) -> bool {
        let d = &self.deployments[p];
        if d.rollout_state == RolloutState::Failed {
            return false;
        }
        match d.retry.next_retry_at_ms {
            Some(at) if at > self.s.now_ms => {
                if wanted {
                    self.wake_at(at);
                    let m = unable_to_start_message(&self.s.spec.name);
                    self.event(m);
                }
                false
            }
            _ => true,
        }
    }
}

fn lost(i: &InstanceView, lost_after_ms: i64, now_ms: i64) -> bool {
    if i.connected || lost_after_ms <= 0 {
        return false;
    }
    match i.disconnected_since_ms {
        Some(since) => now_ms >= since.saturating_add(lost_after_ms),
        None => false,
    }
}

/// Computes what should change for one service.
pub fn reconcile(s: &State<'_>) -> Plan {
    let mut w = Work {
        s: *s,
        instances: s.instances.iter().map(|i| (i.id.as_str(), i)).collect(),
        deployments: s.deployments.to_vec(),
        plan: Plan::default(),
        wake: None,
        stopping: BTreeSet::new(),
        ever_healthy: BTreeSet::new(),
        last_reason: None,
    };
    let mut tasks: Vec<&TaskView> = s.tasks.iter().collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));

    bookkeeping(&mut w, &tasks);
    let rolled_back = circuit_breaker(&mut w);
    if !rolled_back && let Some(p) = w.primary_index() {
        match s.spec.strategy {
            SchedulingStrategy::Replica => replica(&mut w, &tasks, p),
            SchedulingStrategy::Daemon => daemon(&mut w, &tasks, p),
        }
    }
    retire(&mut w, &tasks);

    // Deployments whose record changed.
    let now = s.now_ms;
    for (new, old) in w.deployments.iter_mut().zip(s.deployments) {
        if new != old {
            new.updated_at_ms = now;
            w.plan.deployments.push(new.clone());
        }
    }
    w.plan.next_wake_ms = w.wake;
    w.plan
}

fn bookkeeping<'a>(w: &mut Work<'a>, tasks: &[&'a TaskView]) {
    let now = w.s.now_ms;
    let spec = w.s.spec;
    let p = w.primary_index();
    let primary_id = p.map(|p| w.deployments[p].id.clone());
    let mut last_reason: Option<String> = None;
    let mut counted_now = 0u32;
    for &t in tasks {
        let place = w.place(t);
        match place {
            Place::Lost if !matches!(t.last_status, LastStatus::Stopped | LastStatus::Unknown) => {
                w.plan.marks.push(TaskMark::Lost(t.id.clone()));
            }
            Place::Gone
                if t.last_status != LastStatus::Stopped
                    && t.desired_status == DesiredStatus::Running =>
            {
                w.stop(t, StopReason::Deregistered);
            }
            _ => {}
        }
        if t.last_status != LastStatus::Stopped
            && let Some(i) = w.instances.get(t.instance_id.as_str())
            && !i.connected
            && spec.lost_after_ms > 0
            && let Some(since) = i.disconnected_since_ms
        {
            w.wake_at(since.saturating_add(spec.lost_after_ms));
        }
        if matches!(place, Place::Usable | Place::Draining)
            && let Some(at) = next_change(t, spec, now)
        {
            w.wake_at(at);
        }
        let healthy = matches!(place, Place::Usable | Place::Draining) && is_healthy(t, spec, now);
        if t.ever_healthy || healthy {
            w.ever_healthy.insert(t.id.as_str());
        }
        let of_primary = primary_id.as_deref() == Some(t.deployment_id.as_str());
        if healthy && !t.ever_healthy {
            w.plan.marks.push(TaskMark::BecameHealthy(t.id.clone()));
            if of_primary && let Some(p) = p {
                w.deployments[p].retry = RetryState::default();
            }
        }
    }
    // Failures, after the resets above.
    let Some(p) = p else { return };
    for &t in tasks {
        if t.failure_counted || t.deployment_id != w.deployments[p].id {
            continue;
        }
        if !is_failed(t, spec, now) {
            continue;
        }
        w.plan.marks.push(TaskMark::FailureCounted(t.id.clone()));
        let d = &mut w.deployments[p];
        if d.rollout_state == RolloutState::InProgress {
            d.failed_tasks = d.failed_tasks.saturating_add(1);
            counted_now += 1;
            last_reason = Some(
                t.stopped_reason
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| match t.last_status {
                        LastStatus::Running => "Task failed container health checks".to_owned(),
                        _ => "the task stopped before it was healthy".to_owned(),
                    }),
            );
        }
        if failed_to_start(t) {
            let n = d.retry.consecutive_failures.saturating_add(1);
            d.retry.consecutive_failures = n;
            d.retry.next_retry_at_ms = Some(now.saturating_add(RetryState::delay_ms(n)));
        }
    }
    if counted_now > 0 {
        w.last_reason = last_reason;
    }
}

/// The desired count the bounds and the threshold use: REPLICA's
/// `desiredCount`; DAEMON's eligible instances.
fn desired_for(w: &Work<'_>, p: usize) -> i64 {
    match w.s.spec.strategy {
        SchedulingStrategy::Replica => w.s.spec.desired(),
        SchedulingStrategy::Daemon => {
            let id = w.deployments[p].id.as_str();
            w.s.instances
                .iter()
                .filter(|i| daemon_target(w, i, id))
                .count() as i64
        }
    }
}

/// Trips the circuit breaker of the primary; true when the plan rolls back
/// (the primary is then ACTIVE and nothing else is planned this time).
fn circuit_breaker(w: &mut Work<'_>) -> bool {
    let spec = w.s.spec;
    if spec.circuit_breaker == CircuitBreaker::Off {
        return false;
    }
    let Some(p) = w.primary_index() else {
        return false;
    };
    if w.deployments[p].rollout_state != RolloutState::InProgress {
        return false;
    }
    let threshold = failure_threshold(desired_for(w, p));
    if w.deployments[p].failed_tasks < threshold {
        return false;
    }
    let reason = w
        .last_reason
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    let count = w.deployments[p].failed_tasks;
    let d = &mut w.deployments[p];
    d.rollout_state = RolloutState::Failed;
    d.rollout_state_reason = format!(
        "ECS deployment circuit breaker: tasks failed to start. {count} tasks failed (threshold {threshold}); the last: {reason}"
    );
    let failed_id = d.id.clone();
    let failed_td = d.task_definition.clone();
    let m = deployment_failed_message(&spec.name, &failed_id);
    w.event(m);
    if spec.circuit_breaker != CircuitBreaker::Rollback {
        return false;
    }
    // The newest other deployment that completed, unless it runs the very
    // definition that just failed (a rollback of a rollback would loop).
    let target = w
        .deployments
        .iter()
        .filter(|d| d.id != failed_id && d.rollout_state == RolloutState::Completed)
        .max_by(|a, b| (a.created_at_ms, a.id.as_str()).cmp(&(b.created_at_ms, b.id.as_str())))
        .filter(|d| d.task_definition != failed_td)
        .map(|d| (d.id.clone(), d.task_definition.clone()));
    let Some((target_id, target_td)) = target else {
        return false;
    };
    w.deployments[p].status = DeploymentStatus::Active;
    w.plan.new_deployment = Some(NewDeployment {
        task_definition: target_td,
        rollout_state_reason: format!(
            "ECS deployment circuit breaker: rolling back to deploymentId {target_id}."
        ),
    });
    let m = rolling_back_message(&spec.name, &target_id);
    w.event(m);
    true
}

/// Scale-in order: the returned-lost first, then tasks not RUNNING, then
/// unhealthy ones, then from the instance with the most tasks of the
/// service, the newest first. Picks `n` of `candidates`.
fn scale_in_pick<'a>(
    w: &Work<'a>,
    candidates: &[&'a TaskView],
    all_alive: &[&'a TaskView],
    n: usize,
) -> Vec<&'a TaskView> {
    let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for t in all_alive {
        *per_instance.entry(t.instance_id.as_str()).or_default() += 1;
    }
    let mut left: Vec<&'a TaskView> = candidates.to_vec();
    let mut picked = Vec::new();
    let now = w.s.now_ms;
    while picked.len() < n && !left.is_empty() {
        let best = left
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                let key = |t: &TaskView| {
                    (
                        t.last_status != LastStatus::Unknown,
                        t.last_status == LastStatus::Running,
                        is_healthy(t, w.s.spec, now),
                        std::cmp::Reverse(per_instance.get(t.instance_id.as_str()).copied()),
                        std::cmp::Reverse(t.created_at_ms),
                    )
                };
                key(a).cmp(&key(b)).then_with(|| b.id.cmp(&a.id))
            })
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let t = left.swap_remove(i);
        if let Some(c) = per_instance.get_mut(t.instance_id.as_str()) {
            *c = c.saturating_sub(1);
        }
        picked.push(t);
    }
    picked
}

fn replica<'a>(w: &mut Work<'a>, tasks: &[&'a TaskView], p: usize) {
    let spec = w.s.spec;
    let now = w.s.now_ms;
    let d = spec.desired();
    let (min_healthy, max_total) = bounds(d, spec.min_percent(), spec.max_percent());
    let pid = w.deployments[p].id.clone();

    // Unhealthy tasks are replaced (stopping them costs no healthy task).
    for &t in tasks {
        if w.in_service(t) && is_unhealthy(t, spec, now) {
            w.stop(t, StopReason::Unhealthy);
        }
    }

    let alive: Vec<&TaskView> = tasks.iter().copied().filter(|t| w.alive(t)).collect();
    let mut keep: Vec<&TaskView> = Vec::new();
    let mut obsolete: Vec<&TaskView> = Vec::new();
    for &t in &alive {
        if !w.in_service(t) {
            continue;
        }
        if t.deployment_id == pid && w.place(t) == Place::Usable {
            keep.push(t);
        } else {
            obsolete.push(t);
        }
    }
    // Every alive task counts against the maximum, even those stopping.
    let total = alive.len() as i64;
    let mut healthy = alive.iter().filter(|t| w.healthy(t)).count() as i64;

    // Surplus of the primary.
    if keep.len() as i64 > d {
        let n = keep.len() - d as usize;
        for t in scale_in_pick(w, &keep, &alive, n) {
            let reason = if t.last_status == LastStatus::Unknown {
                StopReason::LostInstanceReturned
            } else {
                StopReason::ScaleIn
            };
            if w.healthy(t) {
                healthy -= 1;
            }
            w.stop(t, reason);
        }
        keep.retain(|t| !w.stopping.contains(t.id.as_str()));
    }

    // Starts within the maximum.
    let want = (d - keep.len() as i64).max(0);
    let room = (max_total - total).max(0);
    let startable = w.may_start(p, want > 0 && room > 0);
    let n = if startable { want.min(room) } else { 0 };
    if n > 0 {
        w.plan.starts.push(Start {
            deployment_id: pid.clone(),
            task_definition: w.deployments[p].task_definition.clone(),
            instance_id: None,
            count: n as u32,
        });
    }
    let room_left = room - n;
    let healthy_new = keep.iter().filter(|t| w.healthy(t)).count() as i64;
    let primary_failed = w.deployments[p].rollout_state == RolloutState::Failed;

    // Obsolete tasks (older deployments; the primary's on DRAINING
    // instances): stopped as long as the healthy count stays at the minimum;
    // healthy ones only when their room is needed or the new tasks suffice.
    obsolete.sort_by(|a, b| {
        let key = |t: &TaskView| {
            (
                t.last_status != LastStatus::Unknown,
                w.healthy(t),
                w.deployment_created(&t.deployment_id),
                std::cmp::Reverse(t.created_at_ms),
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    let mut stopped_obsolete = 0;
    for &t in &obsolete {
        if primary_failed && t.deployment_id != pid {
            continue;
        }
        let reason = if t.last_status == LastStatus::Unknown {
            StopReason::LostInstanceReturned
        } else if w.place(t) == Place::Draining {
            StopReason::Draining
        } else {
            StopReason::Replaced {
                deployment_id: pid.clone(),
            }
        };
        if !w.healthy(t) {
            w.stop(t, reason);
            stopped_obsolete += 1;
            continue;
        }
        let needed = room_left == 0 || !startable || healthy_new >= d;
        if needed && healthy > min_healthy {
            healthy -= 1;
            w.stop(t, reason);
            stopped_obsolete += 1;
        }
    }

    // Deadlock: something must move, the bounds forbid both directions and
    // nothing in flight will change that.
    let missing = keep.len() as i64 + n < d;
    let stuck = obsolete.len() > stopped_obsolete;
    if w.plan.stops.is_empty()
        && n == 0
        && startable
        && (missing || stuck)
        && !obsolete.is_empty()
        && !in_flight(w, &alive)
    {
        let m = deadlock_message(&spec.name);
        w.event(m);
    }

    // Completion and steady state.
    let all_in_keep = alive.len() == keep.len();
    let steady = w.plan.stops.is_empty()
        && n == 0
        && all_in_keep
        && keep.len() as i64 == d
        && healthy_new == d;
    finish(w, p, steady);
}

impl Work<'_> {
    fn deployment_created(&self, id: &str) -> i64 {
        self.deployments
            .iter()
            .find(|d| d.id == id)
            .map_or(i64::MIN, |d| d.created_at_ms)
    }
}

/// Whether any task is on its way to another state without the plan's help.
fn in_flight(w: &Work<'_>, alive: &[&TaskView]) -> bool {
    alive.iter().any(|t| {
        t.last_status == LastStatus::Pending
            || t.desired_status == DesiredStatus::Stopped
            || (t.last_status == LastStatus::Running
                && !is_healthy(t, w.s.spec, w.s.now_ms)
                && next_change(t, w.s.spec, w.s.now_ms).is_some())
            || w.instances
                .get(t.instance_id.as_str())
                .is_some_and(|i| !i.connected)
    })
}

/// COMPLETED and the steady-state event.
fn finish(w: &mut Work<'_>, p: usize, steady: bool) {
    if !steady {
        return;
    }
    let name = w.s.spec.name.clone();
    if w.deployments[p].rollout_state == RolloutState::InProgress {
        let d = &mut w.deployments[p];
        d.rollout_state = RolloutState::Completed;
        d.rollout_state_reason = "ECS deployment completed.".to_owned();
        let id = d.id.clone();
        w.event(deployment_completed_message(&name, &id));
        // Said at every completion, even within the hour of the last one:
        // it marks the end of this deployment.
        let m = steady_state_message(&name);
        if !w.plan.events.contains(&m) {
            w.plan.events.push(m);
        }
        return;
    }
    // Back to steady after a change since the last steady-state event.
    let steady_msg = steady_state_message(&name);
    let newest = w.s.events.iter().max_by_key(|e| e.created_at_ms);
    if newest.is_some_and(|e| e.message != steady_msg) {
        w.event(steady_msg);
    }
}

/// Whether `i` should run one task of DAEMON deployment `id`.
fn daemon_target(w: &Work<'_>, i: &InstanceView, id: &str) -> bool {
    i.status == InstanceStatus::Active
        && !lost(i, w.s.spec.lost_after_ms, w.s.now_ms)
        && i.daemon.get(id).copied().unwrap_or_default().eligible
}

fn daemon<'a>(w: &mut Work<'a>, tasks: &[&'a TaskView], p: usize) {
    let spec = w.s.spec;
    let now = w.s.now_ms;
    let pid = w.deployments[p].id.clone();
    let td = w.deployments[p].task_definition.clone();
    let mut all_done = true;
    let instances: Vec<&InstanceView> = {
        let mut v: Vec<&InstanceView> = w.s.instances.iter().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    for i in instances {
        let here: Vec<&TaskView> = tasks
            .iter()
            .copied()
            .filter(|t| t.instance_id == i.id && w.alive(t))
            .collect();
        if here.is_empty() && !daemon_target(w, i, &pid) {
            continue;
        }
        if i.status == InstanceStatus::Inactive || lost(i, spec.lost_after_ms, now) {
            continue;
        }
        let serving: Vec<&TaskView> = here.iter().copied().filter(|t| w.in_service(t)).collect();
        if i.status == InstanceStatus::Draining {
            // Daemon tasks leave a drained instance last.
            if i.other_tasks == 0 {
                for t in serving {
                    w.stop(t, StopReason::Draining);
                }
            }
            all_done = false;
            continue;
        }
        let fit: DaemonFit = i.daemon.get(&pid).copied().unwrap_or_default();
        if !fit.eligible {
            for t in serving {
                w.stop(t, StopReason::Ineligible);
            }
            all_done = false;
            continue;
        }
        if !i.connected {
            // Not lost yet: wait for it.
            all_done = false;
            continue;
        }
        // Unhealthy tasks are replaced.
        for &t in &serving {
            if is_unhealthy(t, spec, now) {
                w.stop(t, StopReason::Unhealthy);
            }
        }
        let serving: Vec<&TaskView> = serving
            .into_iter()
            .filter(|t| !w.stopping.contains(t.id.as_str()))
            .collect();
        let mut new: Vec<&TaskView> = serving
            .iter()
            .copied()
            .filter(|t| t.deployment_id == pid)
            .collect();
        let old: Vec<&TaskView> = serving
            .iter()
            .copied()
            .filter(|t| t.deployment_id != pid)
            .collect();
        new.sort_by(|a, b| {
            let key = |t: &TaskView| {
                (
                    !is_healthy(t, spec, now),
                    t.last_status != LastStatus::Running,
                    t.created_at_ms,
                )
            };
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        });
        for &t in new.iter().skip(1) {
            w.stop(t, StopReason::Duplicate);
        }
        let stopping_here = here.iter().any(|t| {
            t.desired_status == DesiredStatus::Stopped || w.stopping.contains(t.id.as_str())
        });
        match new.first() {
            Some(&keep) => {
                if is_healthy(keep, spec, now) {
                    for &t in &old {
                        w.stop(
                            t,
                            StopReason::Replaced {
                                deployment_id: pid.clone(),
                            },
                        );
                    }
                    if !old.is_empty() || new.len() > 1 || stopping_here {
                        all_done = false;
                    }
                } else {
                    all_done = false;
                }
            }
            None => {
                all_done = false;
                let startable = w.may_start(p, true);
                if !startable {
                    continue;
                }
                if old.is_empty() && !stopping_here {
                    // Nothing there: ask even without room (the caller
                    // reports what placement says).
                    w.plan.starts.push(daemon_start(&pid, &td, &i.id));
                } else if fit.room {
                    // Room for both: the new task starts before the old stops.
                    w.plan.starts.push(daemon_start(&pid, &td, &i.id));
                } else {
                    for &t in &old {
                        w.stop(
                            t,
                            StopReason::Replaced {
                                deployment_id: pid.clone(),
                            },
                        );
                    }
                }
            }
        }
    }
    let steady = all_done && w.plan.stops.is_empty() && w.plan.starts.is_empty();
    finish(w, p, steady);
}

fn daemon_start(pid: &str, td: &str, instance: &str) -> Start {
    Start {
        deployment_id: pid.to_owned(),
        task_definition: td.to_owned(),
        instance_id: Some(instance.to_owned()),
        count: 1,
    }
}

/// Older deployments without alive tasks become INACTIVE.
fn retire(w: &mut Work<'_>, tasks: &[&TaskView]) {
    let mut alive_by_dep: BTreeSet<&str> = BTreeSet::new();
    for t in tasks {
        if w.alive(t) {
            alive_by_dep.insert(t.deployment_id.as_str());
        }
    }
    for d in &mut w.deployments {
        if d.status == DeploymentStatus::Active && !alive_by_dep.contains(d.id.as_str()) {
            d.status = DeploymentStatus::Inactive;
        }
    }
}
