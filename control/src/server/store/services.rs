//! Services in the store: their configuration, deployments and events
//! (SPEC §6 "Services"), and the one transaction that applies a
//! reconciler's plan.
//!
//! A service is keyed by `(cluster, name)`. Its tasks are ordinary tasks
//! (the `tasks` table) with `task_group` = `service:NAME`, `cluster` = the
//! service's cluster and `started_by` = the deployment id.
//!
//! Invariants (both backends, each method one transaction):
//! - at most one service per `(cluster, name)` is ACTIVE or DRAINING; an
//!   INACTIVE one (deleted) is replaced by a new create with that name;
//! - a service is created only in an ACTIVE cluster, with its first
//!   deployment, in one transaction;
//! - `generation` grows by one with every change of the service's record,
//!   its deployments, its events or its tasks made through this trait;
//!   [`ServiceStore::update_service`] and
//!   [`ServiceStore::apply_service_plan`] hold only if the generation is
//!   still the one the caller read (otherwise [`StoreError::Conflict`] and
//!   nothing is stored), so two reconcilers (threads or servers) cannot
//!   both apply a plan computed from the same state;
//! - a plan's new tasks are inserted only on instances that are ACTIVE and
//!   still at the generation the placement snapshot saw (as
//!   `Store::insert_task_at`); each new task and each stop bumps its
//!   instance's generation (the desired set changed);
//! - a task's marks (`ever_healthy`, `failure_counted`, `lost`) only go
//!   from false to true;
//! - events: at most [`MAX_EVENTS`] kept per service (the oldest are
//!   deleted in the same transaction), each message at most
//!   [`MAX_EVENT_MESSAGE`] bytes (cut at a character boundary).

use super::{StoreError, TaskRecord};

/// Events kept per service (ECS shows the newest 100).
pub const MAX_EVENTS: usize = 100;
/// The longest event message stored.
pub const MAX_EVENT_MESSAGE: usize = 1_024;
/// The longest stored service configuration (JSON).
pub const MAX_SERVICE_CONFIG_BYTES: usize = 64 * 1024;

/// Service statuses (ECS): ACTIVE, DRAINING (deleted, tasks stopping),
/// INACTIVE (deleted, no task left).
pub const SERVICE_DRAINING: &str = "DRAINING";

/// A service as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    pub cluster: String,
    pub name: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    /// The configuration: the server's normalized JSON (everything but
    /// `desiredCount` and `taskDefinition`, which have their own columns).
    pub config_json: String,
    /// REPLICA: `desiredCount`; DAEMON: 0 (the reconciler counts instances).
    pub desired_count: i64,
    /// The PRIMARY deployment's `family:revision`.
    pub task_definition: String,
    pub generation: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// One deployment of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentRecord {
    /// `ecs-svc/<digits>`, unique across services.
    pub id: String,
    pub cluster: String,
    pub service: String,
    /// `family:revision`.
    pub task_definition: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub rollout_state: String,
    pub rollout_state_reason: String,
    pub failed_tasks: u32,
    /// The retry throttle: failures since a task last became healthy, and
    /// no start before `next_retry_at_ms` (0: none).
    pub consecutive_failures: u32,
    pub next_retry_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A service event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEventRecord {
    /// A UUID, chosen by the caller.
    pub id: String,
    pub created_at_ms: i64,
    pub message: String,
}

/// Everything the reconciler reads about one service, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct ServiceSnapshot {
    pub service: ServiceRecord,
    /// Every deployment of the service, oldest first.
    pub deployments: Vec<DeploymentRecord>,
    /// Every task of the service (`task_group` = `service:NAME` in its
    /// cluster), STOPPED ones included, without `definition_json`.
    pub tasks: Vec<TaskRecord>,
    /// The events kept, newest first.
    pub events: Vec<ServiceEventRecord>,
}

/// What a mark records on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskMarkKind {
    EverHealthy,
    FailureCounted,
    Lost,
}

/// A change to a service's record, made by an operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceUpdate {
    pub config_json: Option<String>,
    pub desired_count: Option<i64>,
    /// A new PRIMARY deployment: the one that was PRIMARY becomes ACTIVE,
    /// and the service's `task_definition` becomes this one's.
    pub new_deployment: Option<DeploymentRecord>,
    /// `DRAINING` (delete) or `INACTIVE`.
    pub status: Option<String>,
    pub events: Vec<ServiceEventRecord>,
}

/// A reconciler's plan as the store applies it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePlanRecord {
    /// New tasks (complete records: cluster, group, started_by, instance,
    /// definition), each with the generation of its instance the placement
    /// snapshot saw.
    pub new_tasks: Vec<(TaskRecord, u64)>,
    /// Tasks whose desired status becomes STOPPED: `(task_id, stop_code,
    /// stopped_reason)`; a task already desired STOPPED is left as it is.
    pub stops: Vec<(String, String, String)>,
    /// Deployments stored as given (inserted or replaced by id). A new
    /// PRIMARY deployment (a rollback) is in here; the plan also carries
    /// the old PRIMARY as ACTIVE.
    pub deployments: Vec<DeploymentRecord>,
    /// When set, the service's `task_definition` (a rollback).
    pub task_definition: Option<String>,
    pub marks: Vec<(String, TaskMarkKind)>,
    pub events: Vec<ServiceEventRecord>,
    /// When set, the service's new status (a DRAINING service whose last
    /// task stopped becomes INACTIVE).
    pub status: Option<String>,
}

/// What applying a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOutcome {
    /// The service's generation after the plan.
    pub generation: u64,
    /// Instances whose desired set changed (their agents need a new
    /// assignment), sorted, without repeats.
    pub instances_changed: Vec<String>,
}

/// The service half of the store.
pub trait ServiceStore {
    /// Stores a new ACTIVE service with its first (PRIMARY, IN_PROGRESS)
    /// deployment. [`StoreError::ServiceExists`] when an ACTIVE or DRAINING
    /// service of that name is in the cluster; [`StoreError::NoCluster`] /
    /// [`StoreError::ClusterInactive`] for a missing or deleted cluster.
    /// Returns the record as stored (generation 1).
    fn create_service(
        &self,
        service: &ServiceRecord,
        first: &DeploymentRecord,
        events: &[ServiceEventRecord],
    ) -> Result<ServiceRecord, StoreError>;
    /// The service, whatever its status.
    fn service(&self, cluster: &str, name: &str) -> Result<Option<ServiceRecord>, StoreError>;
    /// Services of one cluster (or every cluster), by cluster then name,
    /// INACTIVE ones included.
    fn services(&self, cluster: Option<&str>) -> Result<Vec<ServiceRecord>, StoreError>;
    /// The service with its deployments, tasks and events; `None` when
    /// there is no such service.
    fn service_snapshot(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<ServiceSnapshot>, StoreError>;
    /// Applies an operator's change if the service is still at
    /// `generation`: [`StoreError::NoService`] when missing or INACTIVE,
    /// [`StoreError::Conflict`] when the generation moved.
    fn update_service(
        &self,
        cluster: &str,
        name: &str,
        generation: u64,
        update: &ServiceUpdate,
    ) -> Result<ServiceRecord, StoreError>;
    /// Applies a plan whole if the service is still at `generation` and
    /// every instance of a new task still at the generation given with it
    /// (and ACTIVE); otherwise [`StoreError::Conflict`] and nothing is
    /// stored.
    fn apply_service_plan(
        &self,
        cluster: &str,
        name: &str,
        generation: u64,
        plan: &ServicePlanRecord,
    ) -> Result<PlanOutcome, StoreError>;
}

// The backends' implementations follow (schema 8).

fn not_yet(op: &'static str) -> StoreError {
    StoreError::Conflict {
        op,
        detail: "services are not stored by this build yet".to_owned(),
    }
}

macro_rules! unstored_services {
    ($backend:ty) => {
        impl ServiceStore for $backend {
            fn create_service(
                &self,
                _service: &ServiceRecord,
                _first: &DeploymentRecord,
                _events: &[ServiceEventRecord],
            ) -> Result<ServiceRecord, StoreError> {
                Err(not_yet("create_service"))
            }
            fn service(
                &self,
                _cluster: &str,
                _name: &str,
            ) -> Result<Option<ServiceRecord>, StoreError> {
                Ok(None)
            }
            fn services(&self, _cluster: Option<&str>) -> Result<Vec<ServiceRecord>, StoreError> {
                Ok(Vec::new())
            }
            fn service_snapshot(
                &self,
                _cluster: &str,
                _name: &str,
            ) -> Result<Option<ServiceSnapshot>, StoreError> {
                Ok(None)
            }
            fn update_service(
                &self,
                _cluster: &str,
                _name: &str,
                _generation: u64,
                _update: &ServiceUpdate,
            ) -> Result<ServiceRecord, StoreError> {
                Err(not_yet("update_service"))
            }
            fn apply_service_plan(
                &self,
                _cluster: &str,
                _name: &str,
                _generation: u64,
                _plan: &ServicePlanRecord,
            ) -> Result<PlanOutcome, StoreError> {
                Err(not_yet("apply_service_plan"))
            }
        }
    };
}

unstored_services!(super::sqlite::SqliteStore);
unstored_services!(super::postgres::PostgresStore);
