//! The reconciler's inputs and outputs, and the validation of a service's
//! configuration.
//!
//! These types are the reconciler's own: the store keeps its records, the
//! caller converts. Times are milliseconds since the Unix epoch (`*_ms`);
//! durations are milliseconds too, except `health_check_grace_period_s`
//! (ECS' `healthCheckGracePeriodSeconds`).

use std::collections::BTreeMap;
use std::fmt;

pub use berth_proto::status::{Health, StopCode};

/// The longest service (and cluster) name: ECS' rule, 1–255 letters, digits,
/// hyphens and underscores.
pub const MAX_NAME_LEN: usize = 255;
/// The largest `desiredCount` (ECS' default quota of tasks per service).
pub const MAX_DESIRED_COUNT: i64 = 5_000;
/// The largest `maximumPercent` berth takes. ECS documents no upper limit;
/// berth bounds it so that ⌊desired × max / 100⌋ stays small.
pub const MAX_MAXIMUM_PERCENT: i64 = 1_000;
/// ECS' largest `healthCheckGracePeriodSeconds` (2^31 − 1).
pub const MAX_GRACE_PERIOD_S: i64 = 2_147_483_647;
/// The longest `--min-healthy-time` (1 hour).
pub const MAX_MIN_HEALTHY_TIME_MS: i64 = 3_600_000;
/// The longest `--lost-after` (7 days).
pub const MAX_LOST_AFTER_MS: i64 = 7 * 24 * 3_600_000;
/// Default `--min-healthy-time`: 10 s.
pub const DEFAULT_MIN_HEALTHY_TIME_MS: i64 = 10_000;
/// Default `--lost-after`: 5 min.
pub const DEFAULT_LOST_AFTER_MS: i64 = 300_000;

/// `schedulingStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulingStrategy {
    Replica,
    Daemon,
}

impl SchedulingStrategy {
    pub const fn as_str(self) -> &'static str {
        match self {
            SchedulingStrategy::Replica => "REPLICA",
            SchedulingStrategy::Daemon => "DAEMON",
        }
    }
}

/// `--circuit-breaker` (`deploymentCircuitBreaker{enable, rollback}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitBreaker {
    Off,
    Enable,
    Rollback,
}

/// A service's configuration as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub cluster: String,
    pub strategy: SchedulingStrategy,
    /// `desiredCount`; `None` when not given (required for REPLICA,
    /// refused for DAEMON).
    pub desired_count: Option<i64>,
    /// `deploymentConfiguration.minimumHealthyPercent`; `None`: the default.
    pub min_healthy_percent: Option<i64>,
    /// `deploymentConfiguration.maximumPercent`; `None`: the default.
    pub max_percent: Option<i64>,
    pub circuit_breaker: CircuitBreaker,
    /// How many placement strategies were given (DAEMON takes none).
    pub placement_strategies: usize,
    /// `healthCheckGracePeriodSeconds`.
    pub health_check_grace_period_s: i64,
    /// `--min-healthy-time`.
    pub min_healthy_time_ms: i64,
    /// `--lost-after`; 0 = never.
    pub lost_after_ms: i64,
}

impl ServiceSpec {
    /// A REPLICA service with the defaults.
    #[cfg(test)]
    pub fn replica(name: &str, cluster: &str, desired: i64) -> Self {
        ServiceSpec {
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            strategy: SchedulingStrategy::Replica,
            desired_count: Some(desired),
            min_healthy_percent: None,
            max_percent: None,
            circuit_breaker: CircuitBreaker::Off,
            placement_strategies: 0,
            health_check_grace_period_s: 0,
            min_healthy_time_ms: DEFAULT_MIN_HEALTHY_TIME_MS,
            lost_after_ms: DEFAULT_LOST_AFTER_MS,
        }
    }

    /// A DAEMON service with the defaults.
    #[cfg(test)]
    pub fn daemon(name: &str, cluster: &str) -> Self {
        ServiceSpec {
            strategy: SchedulingStrategy::Daemon,
            desired_count: None,
            ..ServiceSpec::replica(name, cluster, 0)
        }
    }

    /// `minimumHealthyPercent` in effect (defaults: REPLICA 100, DAEMON 0).
    pub fn min_percent(&self) -> i64 {
        self.min_healthy_percent.unwrap_or(match self.strategy {
            SchedulingStrategy::Replica => 100,
            SchedulingStrategy::Daemon => 0,
        })
    }

    /// `maximumPercent` in effect (defaults: REPLICA 200, DAEMON 100).
    pub fn max_percent(&self) -> i64 {
        self.max_percent.unwrap_or(match self.strategy {
            SchedulingStrategy::Replica => 200,
            SchedulingStrategy::Daemon => 100,
        })
    }

    /// The REPLICA desired count (0 when absent or negative).
    pub fn desired(&self) -> i64 {
        self.desired_count.unwrap_or(0).max(0)
    }

    /// Checks the configuration with ECS' rules (and berth's bounds); the
    /// error names the JSON member and why.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name("serviceName", &self.name)?;
        check_name("cluster", &self.cluster)?;
        match self.strategy {
            SchedulingStrategy::Replica => {
                let Some(d) = self.desired_count else {
                    return Err(SpecError::new(
                        "desiredCount",
                        "a REPLICA service needs a desired count".to_owned(),
                    ));
                };
                if !(0..=MAX_DESIRED_COUNT).contains(&d) {
                    return Err(SpecError::new(
                        "desiredCount",
                        format!("{d} is out of range: 0 to {MAX_DESIRED_COUNT}"),
                    ));
                }
                if let Some(min) = self.min_healthy_percent
                    && !(0..=100).contains(&min)
                {
                    return Err(SpecError::new(
                        "deploymentConfiguration.minimumHealthyPercent",
                        format!("{min} is out of range: 0 to 100"),
                    ));
                }
                if let Some(max) = self.max_percent
                    && !(100..=MAX_MAXIMUM_PERCENT).contains(&max)
                {
                    return Err(SpecError::new(
                        "deploymentConfiguration.maximumPercent",
                        format!("{max} is out of range: 100 to {MAX_MAXIMUM_PERCENT}"),
                    ));
                }
            }
            SchedulingStrategy::Daemon => {
                if self.desired_count.is_some() {
                    return Err(SpecError::new(
                        "desiredCount",
                        "a DAEMON service runs one task per instance and takes no desired count"
                            .to_owned(),
                    ));
                }
                if self.placement_strategies > 0 {
                    return Err(SpecError::new(
                        "placementStrategy",
                        "a DAEMON service takes no placement strategy".to_owned(),
                    ));
                }
                if let Some(min) = self.min_healthy_percent
                    && !(0..=100).contains(&min)
                {
                    return Err(SpecError::new(
                        "deploymentConfiguration.minimumHealthyPercent",
                        format!("{min} is out of range: 0 to 100"),
                    ));
                }
                if let Some(max) = self.max_percent
                    && max != 100
                {
                    return Err(SpecError::new(
                        "deploymentConfiguration.maximumPercent",
                        format!("{max}: a DAEMON service's maximum percent is 100"),
                    ));
                }
            }
        }
        if !(0..=MAX_GRACE_PERIOD_S).contains(&self.health_check_grace_period_s) {
            return Err(SpecError::new(
                "healthCheckGracePeriodSeconds",
                format!(
                    "{} is out of range: 0 to {MAX_GRACE_PERIOD_S}",
                    self.health_check_grace_period_s
                ),
            ));
        }
        if !(0..=MAX_MIN_HEALTHY_TIME_MS).contains(&self.min_healthy_time_ms) {
            return Err(SpecError::new(
                "minHealthyTime",
                format!(
                    "{} ms is out of range: 0 to 1 hour",
                    self.min_healthy_time_ms
                ),
            ));
        }
        if !(0..=MAX_LOST_AFTER_MS).contains(&self.lost_after_ms) {
            return Err(SpecError::new(
                "lostAfter",
                format!(
                    "{} ms is out of range: 0 (never) to 7 days",
                    self.lost_after_ms
                ),
            ));
        }
        Ok(())
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), SpecError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(SpecError::new(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(SpecError::new(
            field,
            format!(
                "{:?} is not allowed: letters, digits, hyphens and underscores only",
                c
            ),
        ));
    }
    Ok(())
}

/// A refused service configuration: the JSON member and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: &'static str,
    pub reason: String,
}

impl SpecError {
    fn new(field: &'static str, reason: String) -> Self {
        SpecError { field, reason }
    }
}

/// A deployment's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentStatus {
    Primary,
    Active,
    Inactive,
}

impl DeploymentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Primary => "PRIMARY",
            DeploymentStatus::Active => "ACTIVE",
            DeploymentStatus::Inactive => "INACTIVE",
        }
    }
}

/// A deployment's `rolloutState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutState {
    InProgress,
    Completed,
    Failed,
}

impl RolloutState {
    pub const fn as_str(self) -> &'static str {
        match self {
            RolloutState::InProgress => "IN_PROGRESS",
            RolloutState::Completed => "COMPLETED",
            RolloutState::Failed => "FAILED",
        }
    }
}

/// The throttle on tasks that fail to start, per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryState {
    /// Tasks of the deployment that stopped before RUNNING since one of its
    /// tasks last became healthy.
    pub consecutive_failures: u32,
    /// No task of the deployment is started before this time.
    pub next_retry_at_ms: Option<i64>,
}

/// The first delay after a task failed to start: 10 s.
pub const RETRY_BASE_MS: i64 = 10_000;
/// The longest delay: 5 min.
pub const RETRY_MAX_MS: i64 = 300_000;

impl RetryState {
    /// The delay after `failures` consecutive failures: 10 s doubling to
    /// 5 min (none before the first).
    pub fn delay_ms(failures: u32) -> i64 {
        if failures == 0 {
            return 0;
        }
        let shift = (failures - 1).min(16);
        RETRY_BASE_MS
            .saturating_mul(1i64 << shift)
            .min(RETRY_MAX_MS)
    }
}

/// One deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    /// `family:revision`.
    pub task_definition: String,
    pub status: DeploymentStatus,
    pub rollout_state: RolloutState,
    pub rollout_state_reason: String,
    pub failed_tasks: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub retry: RetryState,
}

/// A task's `lastStatus` as the reconciler sees it: UNKNOWN once the plan
/// marked it lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastStatus {
    Pending,
    Running,
    Stopped,
    Unknown,
}

/// A task's `desiredStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DesiredStatus {
    Running,
    Stopped,
}

/// One task of the service (any deployment), as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    /// `startedBy`.
    pub deployment_id: String,
    pub instance_id: String,
    pub last_status: LastStatus,
    pub desired_status: DesiredStatus,
    /// Whether an essential container has a health check.
    pub has_health_check: bool,
    pub health: Health,
    pub created_at_ms: i64,
    /// When it became RUNNING; `None` if it never did.
    pub started_at_ms: Option<i64>,
    pub stopped_reason: Option<String>,
    /// Recorded by the caller from [`TaskMark::BecameHealthy`].
    pub ever_healthy: bool,
    /// Recorded by the caller from [`TaskMark::FailureCounted`]: the
    /// circuit breaker and the retry throttle have counted this task.
    pub failure_counted: bool,
}

/// An instance's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    Active,
    Draining,
    Inactive,
}

/// What placement says about one DAEMON deployment on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DaemonFit {
    /// The instance meets the deployment's constraints (and its platform).
    pub eligible: bool,
    /// The instance has room for one more task of the deployment, with the
    /// tasks it runs now still there.
    pub room: bool,
}

/// One instance of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    pub id: String,
    pub status: InstanceStatus,
    pub connected: bool,
    /// When its agent's session ended (`None` while connected or never
    /// connected since the server started).
    pub disconnected_since_ms: Option<i64>,
    /// DAEMON only: per deployment id.
    pub daemon: BTreeMap<String, DaemonFit>,
    /// DAEMON only: tasks on the instance that belong to no DAEMON service
    /// and are not STOPPED (a DRAINING instance loses its daemon tasks
    /// after those).
    pub other_tasks: u32,
}

/// A service event already recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub created_at_ms: i64,
    pub message: String,
}

/// Everything the reconciler reads.
#[derive(Debug, Clone, Copy)]
pub struct State<'a> {
    pub spec: &'a ServiceSpec,
    pub deployments: &'a [Deployment],
    pub tasks: &'a [TaskView],
    pub instances: &'a [InstanceView],
    /// Newest first or in any order; only their messages and times matter.
    pub events: &'a [RecordedEvent],
    pub now_ms: i64,
}

/// Tasks to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub deployment_id: String,
    /// The task definition to start (the deployment's).
    pub task_definition: String,
    /// DAEMON: on this instance. REPLICA: `None`, placement chooses (never
    /// a DRAINING, INACTIVE or disconnected instance).
    pub instance_id: Option<String>,
    pub count: u32,
}

/// Why the scheduler stops a task (its `stoppedReason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The desired count went down.
    ScaleIn,
    /// A task of a newer deployment replaces it.
    Replaced { deployment_id: String },
    /// Its instance is DRAINING.
    Draining,
    /// Its instance was deregistered.
    Deregistered,
    /// Its instance came back after its tasks were counted lost and
    /// replaced.
    LostInstanceReturned,
    /// An essential container's health check failed.
    Unhealthy,
    /// DAEMON: the instance no longer meets the service's constraints.
    Ineligible,
    /// DAEMON: more than one task of the service on one instance.
    Duplicate,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::ScaleIn => f.write_str("Scaled in: the service runs more tasks than its desired count"),
            StopReason::Replaced { deployment_id } => {
                write!(f, "Replaced by a task of deployment {deployment_id}")
            }
            StopReason::Draining => f.write_str("Container instance is draining; the task was replaced on another instance"),
            StopReason::Deregistered => f.write_str("Container instance was deregistered"),
            StopReason::LostInstanceReturned => f.write_str(
                "Surplus task: its container instance came back after the task was counted lost and replaced",
            ),
            StopReason::Unhealthy => f.write_str("Task failed container health checks"),
            StopReason::Ineligible => {
                f.write_str("Container instance no longer meets the service's placement constraints")
            }
            StopReason::Duplicate => {
                f.write_str("Surplus task: a daemon service runs one task per container instance")
            }
        }
    }
}

/// A task to stop (stop code [`StopCode::ServiceSchedulerInitiated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub task_id: String,
    pub reason: StopReason,
}

impl Stop {
    pub const CODE: StopCode = StopCode::ServiceSchedulerInitiated;
}

/// Something the caller records on a task so that the next plan does not
/// count it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskMark {
    /// The task is healthy for the first time.
    BecameHealthy(String),
    /// The task failed (circuit breaker and retry throttle counted it).
    FailureCounted(String),
    /// Its instance is past `lost_after`: set its `lastStatus` to UNKNOWN.
    Lost(String),
}

/// A deployment to create (a rollback). The caller chooses its id; it is
/// PRIMARY and IN_PROGRESS, and the deployment that was PRIMARY is changed
/// to ACTIVE in the same plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub task_definition: String,
    pub rollout_state_reason: String,
}

/// What should change. The caller stores it in one transaction, only if
/// the state it was computed from is still current.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub starts: Vec<Start>,
    pub stops: Vec<Stop>,
    /// Deployments whose record changes, as they should be stored.
    pub deployments: Vec<Deployment>,
    pub new_deployment: Option<NewDeployment>,
    pub marks: Vec<TaskMark>,
    /// Messages to add as events (already not repeated within an hour).
    pub events: Vec<String>,
    /// When to plan again if nothing else changes.
    pub next_wake_ms: Option<i64>,
}

impl Plan {
    /// How many tasks the plan asks to start.
    #[cfg(test)]
    pub fn start_count(&self) -> u32 {
        self.starts.iter().map(|s| s.count).sum()
    }

    /// Whether the plan changes nothing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
            && self.stops.is_empty()
            && self.deployments.is_empty()
            && self.new_deployment.is_none()
            && self.marks.is_empty()
            && self.events.is_empty()
    }
}
