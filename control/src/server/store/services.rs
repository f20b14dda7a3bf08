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
//!   [`MAX_EVENT_MESSAGE`] bytes (cut at a character boundary);
//! - a plan's stops and marks name tasks of the service (its group in its
//!   cluster), its new tasks are in that group and cluster: anything else
//!   is refused and nothing stored;
//! - every name, text and count is bounded ([`MAX_PLAN_ITEMS`] items per
//!   change, ids 255 bytes, the configuration
//!   [`MAX_SERVICE_CONFIG_BYTES`]), checked before the transaction
//!   ([`StoreError::Invalid`]).
//!
//! Also: a create over an INACTIVE service replaces it with its
//! deployments and events (its STOPPED tasks stay, as tasks do); a change
//! that changes nothing (an empty plan or update) is checked against the
//! generation but does not bump it; the first deployment is stored PRIMARY
//! and IN_PROGRESS, an update's new one PRIMARY.
//!
//! Implementation: the transactions are written once, generic over
//! `ServiceTx` (a backend's open transaction) and run by each backend's
//! `ServiceBackend::transaction`; `impl<B: ServiceBackend> ServiceStore for
//! B` is the only implementation. On SQLite a write transaction holds the
//! write lock from its start (`BEGIN IMMEDIATE`) and the futures complete
//! on their first poll; on PostgreSQL (READ COMMITTED) the service row is
//! locked `FOR UPDATE` before its generation is checked, the cluster
//! `FOR SHARE` at a create, and a snapshot reads at REPEATABLE READ.

use std::borrow::Cow;
use std::collections::BTreeMap;

use futures_util::FutureExt;
use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio_postgres::types::{ToSql, Type};
use tracing::debug;

use super::postgres::{self, PostgresStore};
use super::sql::{RawTask, TASK_COLUMNS, from_db, to_db};
use super::sqlite::{self, SqliteStore};
use super::{ACTIVE, INACTIVE, StoreError, TaskRecord, rules};

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
    /// service of that name is in the cluster (also when another create
    /// wins a race); [`StoreError::NoCluster`] /
    /// [`StoreError::ClusterInactive`] for a missing or deleted cluster.
    /// An INACTIVE service of that name is replaced, with its deployments
    /// and events. Returns the record as stored (generation 1; its
    /// `task_definition` the first deployment's).
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
    /// [`StoreError::Conflict`] when the generation moved. Returns the
    /// record as stored.
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
    /// stored. Several new tasks on one instance carry the same
    /// generation (each bumps it in turn). A stop or mark of a task that is
    /// not the service's is a conflict too; [`StoreError::NoService`] when
    /// the service is missing or INACTIVE. An empty plan stores nothing and
    /// keeps the generation.
    fn apply_service_plan(
        &self,
        cluster: &str,
        name: &str,
        generation: u64,
        plan: &ServicePlanRecord,
    ) -> Result<PlanOutcome, StoreError>;
}

// ---- Bounds

/// The most new tasks, stops, deployments, marks or events one plan (or
/// one create or update) may carry.
pub const MAX_PLAN_ITEMS: usize = 10_000;
/// The longest id stored: task, instance, deployment and event ids.
const MAX_ID_LEN: usize = 255;
/// The longest short text stored: `family:revision`, stop codes and
/// reasons, `startedBy`, a rollout state's reason.
const MAX_TEXT_LEN: usize = 1_024;

const DEPLOYMENT_PRIMARY: &str = "PRIMARY";
const ROLLOUT_IN_PROGRESS: &str = "IN_PROGRESS";

fn invalid(op: &'static str, detail: String) -> StoreError {
    StoreError::Invalid { op, detail }
}

fn check_len(op: &'static str, what: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.len() > max {
        return Err(invalid(
            op,
            format!(
                "{what} is {} bytes; at most {max} are accepted",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn check_id(op: &'static str, what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() {
        return Err(invalid(op, format!("{what} is empty")));
    }
    check_len(op, what, value, MAX_ID_LEN)
}

fn check_count(op: &'static str, what: &str, n: usize) -> Result<(), StoreError> {
    if n > MAX_PLAN_ITEMS {
        return Err(invalid(
            op,
            format!("{n} {what} in one change; at most {MAX_PLAN_ITEMS} are accepted"),
        ));
    }
    Ok(())
}

fn check_one_of(
    op: &'static str,
    what: &str,
    value: &str,
    allowed: &[&str],
) -> Result<(), StoreError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        op,
        format!("{what} {value:?} is not one of {}", allowed.join(", ")),
    ))
}

/// A service is keyed by an ECS cluster name and a service name, both
/// 1–255 of `[A-Za-z0-9_-]`.
fn check_names(op: &'static str, cluster: &str, name: &str) -> Result<(), StoreError> {
    rules::check_cluster_name(cluster)
        .map_err(|why| StoreError::InvalidClusterName(cluster.to_owned(), why))?;
    rules::check_cluster_name(name)
        .map_err(|why| invalid(op, format!("service name {name:?} is not valid: {why}")))
}

fn check_status(op: &'static str, status: &str) -> Result<(), StoreError> {
    check_one_of(
        op,
        "service status",
        status,
        &[ACTIVE, SERVICE_DRAINING, INACTIVE],
    )
}

fn check_config(op: &'static str, config_json: &str) -> Result<(), StoreError> {
    check_len(
        op,
        "the service configuration",
        config_json,
        MAX_SERVICE_CONFIG_BYTES,
    )
}

fn check_desired_count(op: &'static str, n: i64) -> Result<(), StoreError> {
    if n < 0 {
        return Err(invalid(op, format!("desired count {n} is negative")));
    }
    Ok(())
}

/// A deployment belongs to the service it is stored with: its `cluster`
/// and `service` are that service's or empty (filled in).
fn check_deployment(
    op: &'static str,
    d: &DeploymentRecord,
    cluster: &str,
    name: &str,
) -> Result<(), StoreError> {
    check_id(op, "a deployment id", &d.id)?;
    if !(d.cluster.is_empty() || d.cluster == cluster)
        || !(d.service.is_empty() || d.service == name)
    {
        return Err(invalid(
            op,
            format!(
                "deployment {} names service {} of cluster {}, not {name} of {cluster}",
                d.id, d.service, d.cluster
            ),
        ));
    }
    check_len(
        op,
        "a deployment's task definition",
        &d.task_definition,
        MAX_TEXT_LEN,
    )?;
    check_len(
        op,
        "a rollout state's reason",
        &d.rollout_state_reason,
        MAX_TEXT_LEN,
    )?;
    check_one_of(
        op,
        "deployment status",
        &d.status,
        &[DEPLOYMENT_PRIMARY, ACTIVE, INACTIVE],
    )?;
    check_one_of(
        op,
        "rollout state",
        &d.rollout_state,
        &[ROLLOUT_IN_PROGRESS, "COMPLETED", "FAILED"],
    )
}

fn check_events(op: &'static str, events: &[ServiceEventRecord]) -> Result<(), StoreError> {
    check_count(op, "events", events.len())?;
    // Messages are cut (see `cut_message`), not refused.
    events
        .iter()
        .try_for_each(|e| check_id(op, "an event id", &e.id))
}

/// A plan's new task is a task of the service: its group `service:NAME`,
/// its cluster the service's (or empty, filled in), every text bounded.
fn check_new_task(
    op: &'static str,
    t: &TaskRecord,
    cluster: &str,
    group: &str,
) -> Result<(), StoreError> {
    check_id(op, "a task id", &t.task_id)?;
    check_id(op, "an instance id", &t.instance_id)?;
    if t.group != group || !(t.cluster.is_empty() || t.cluster == cluster) {
        return Err(invalid(
            op,
            format!(
                "new task {} is in group {:?} of cluster {:?}, not {group} of {cluster}",
                t.task_id, t.group, t.cluster
            ),
        ));
    }
    check_len(op, "a task's family", &t.family, MAX_ID_LEN)?;
    check_len(
        op,
        "a task definition",
        &t.definition_json,
        berth_taskdef::MAX_DEFINITION_BYTES,
    )?;
    for (what, value) in [
        ("a task's definition name", &t.task_definition),
        ("a task's startedBy", &t.started_by),
        ("a task's stop code", &t.stop_code),
        ("a task's stopped reason", &t.stopped_reason),
    ] {
        check_len(op, what, value, MAX_TEXT_LEN)?;
    }
    Ok(())
}

fn check_create(
    s: &ServiceRecord,
    first: &DeploymentRecord,
    events: &[ServiceEventRecord],
) -> Result<(), StoreError> {
    let op = "create_service";
    check_names(op, &s.cluster, &s.name)?;
    check_config(op, &s.config_json)?;
    check_desired_count(op, s.desired_count)?;
    check_deployment(op, &first_deployment(first), &s.cluster, &s.name)?;
    check_events(op, events)
}

/// A service's first deployment as stored: PRIMARY, IN_PROGRESS.
fn first_deployment(d: &DeploymentRecord) -> DeploymentRecord {
    DeploymentRecord {
        status: DEPLOYMENT_PRIMARY.to_owned(),
        rollout_state: ROLLOUT_IN_PROGRESS.to_owned(),
        ..d.clone()
    }
}

/// An update's new deployment as stored: PRIMARY; IN_PROGRESS unless it
/// names its rollout state.
fn new_primary(d: &DeploymentRecord) -> DeploymentRecord {
    let rollout_state = if d.rollout_state.is_empty() {
        ROLLOUT_IN_PROGRESS.to_owned()
    } else {
        d.rollout_state.clone()
    };
    DeploymentRecord {
        status: DEPLOYMENT_PRIMARY.to_owned(),
        rollout_state,
        ..d.clone()
    }
}

fn check_update(cluster: &str, name: &str, u: &ServiceUpdate) -> Result<(), StoreError> {
    let op = "update_service";
    check_names(op, cluster, name)?;
    if let Some(c) = &u.config_json {
        check_config(op, c)?;
    }
    if let Some(n) = u.desired_count {
        check_desired_count(op, n)?;
    }
    if let Some(d) = &u.new_deployment {
        check_deployment(op, &new_primary(d), cluster, name)?;
    }
    if let Some(st) = &u.status {
        check_status(op, st)?;
    }
    check_events(op, &u.events)
}

fn check_plan(cluster: &str, name: &str, p: &ServicePlanRecord) -> Result<(), StoreError> {
    let op = "apply_service_plan";
    check_names(op, cluster, name)?;
    check_count(op, "new tasks", p.new_tasks.len())?;
    check_count(op, "stops", p.stops.len())?;
    check_count(op, "deployments", p.deployments.len())?;
    check_count(op, "marks", p.marks.len())?;
    let group = service_group(name);
    for (t, _) in &p.new_tasks {
        check_new_task(op, t, cluster, &group)?;
    }
    for (task_id, code, reason) in &p.stops {
        check_id(op, "a task id", task_id)?;
        check_len(op, "a stop code", code, MAX_TEXT_LEN)?;
        check_len(op, "a stopped reason", reason, MAX_TEXT_LEN)?;
    }
    for d in &p.deployments {
        check_deployment(op, d, cluster, name)?;
    }
    if let Some(td) = &p.task_definition {
        check_len(op, "the task definition", td, MAX_TEXT_LEN)?;
    }
    for (task_id, _) in &p.marks {
        check_id(op, "a task id", task_id)?;
    }
    if let Some(st) = &p.status {
        check_status(op, st)?;
    }
    check_events(op, &p.events)
}

/// The task group of a service's tasks.
pub fn service_group(name: &str) -> String {
    format!("service:{name}")
}

/// `message` cut to at most [`MAX_EVENT_MESSAGE`] bytes, at a character
/// boundary.
pub fn cut_message(message: &str) -> &str {
    if message.len() <= MAX_EVENT_MESSAGE {
        return message;
    }
    let mut end = MAX_EVENT_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

fn update_changes_anything(u: &ServiceUpdate) -> bool {
    u.config_json.is_some()
        || u.desired_count.is_some()
        || u.new_deployment.is_some()
        || u.status.is_some()
        || !u.events.is_empty()
}

fn plan_changes_anything(p: &ServicePlanRecord) -> bool {
    !(p.new_tasks.is_empty()
        && p.stops.is_empty()
        && p.deployments.is_empty()
        && p.task_definition.is_none()
        && p.marks.is_empty()
        && p.events.is_empty()
        && p.status.is_none())
}

fn mark_column(kind: TaskMarkKind) -> &'static str {
    match kind {
        TaskMarkKind::EverHealthy => "ever_healthy",
        TaskMarkKind::FailureCounted => "failure_counted",
        TaskMarkKind::Lost => "lost",
    }
}

// ---- One logic on both backends
//
// The transactions below are written once, over `ServiceTx`: a statement
// runner with `$n` placeholders (SQLite reads them as `?n`), rows of TEXT
// and integers, and the backend's own task insert (the one
// `Store::insert_task_at` runs) and generation bump. On SQLite the write
// transaction holds the write lock from its start; on PostgreSQL the
// service row is locked (`FOR UPDATE`) before its generation is checked,
// and the final update is conditional on that generation as well.

/// A value bound to a statement: the schema holds TEXT and integers only.
#[derive(Debug, Clone, Copy)]
pub(super) enum Val<'a> {
    Text(&'a str),
    Int(i64),
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// One row read.
#[derive(Debug, Clone)]
pub(super) struct Cells(pub(super) Vec<Cell>);

fn bad_column(i: usize, wanted: &str, found: Option<&Cell>) -> StoreError {
    StoreError::Database {
        op: "read",
        source: format!("column {i}: {wanted} expected, found {found:?}").into(),
    }
}

impl Cells {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.0.get(i) {
            Some(Cell::Text(s)) => Ok(s.clone()),
            other => Err(bad_column(i, "text", other)),
        }
    }

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.0.get(i) {
            Some(Cell::Int(v)) => Ok(*v),
            other => Err(bad_column(i, "an integer", other)),
        }
    }

    fn count(&self, i: usize) -> Result<u32, StoreError> {
        Ok(u32::try_from(self.int(i)?.max(0)).unwrap_or(u32::MAX))
    }
}

/// What the service transactions need of a backend's open transaction.
pub(super) trait ServiceTx {
    /// Appended to a `SELECT` of one row that is then checked and
    /// written: `FOR UPDATE` where rows are locked (PostgreSQL).
    const FOR_UPDATE: &'static str;
    /// Appended to the `SELECT` of a cluster a service is created in, so
    /// that a delete of the cluster is ordered against it.
    const FOR_SHARE: &'static str;
    /// Makes every later read of the transaction see one state.
    async fn one_snapshot(&self) -> Result<(), StoreError>;
    async fn exec(&self, sql: &str, params: &[Val<'_>]) -> Result<u64, StoreError>;
    async fn query(&self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Cells>, StoreError>;
    /// Rows of `TASK_COLUMNS`, decoded.
    async fn tasks(&self, sql: &str, params: &[Val<'_>]) -> Result<Vec<TaskRecord>, StoreError>;
    /// `Store::insert_task_at`'s step: returns the instance's new
    /// generation.
    async fn insert_task_at(
        &self,
        op: &'static str,
        t: &TaskRecord,
        generation: u64,
    ) -> Result<u64, StoreError>;
    async fn bump_generation(&self, instance_id: &str) -> Result<u64, StoreError>;
    fn is_unique_violation(e: &StoreError) -> bool;
}

const SERVICE_COLUMNS: &str = "cluster, name, status, config_json, desired_count, \
     task_definition, generation, created_at_ms, updated_at_ms";
const DEPLOYMENT_COLUMNS: &str = "id, cluster, service, task_definition, status, \
     rollout_state, rollout_state_reason, failed_tasks, consecutive_failures, \
     next_retry_at_ms, created_at_ms, updated_at_ms";

fn service_from(c: &Cells) -> Result<ServiceRecord, StoreError> {
    Ok(ServiceRecord {
        cluster: c.text(0)?,
        name: c.text(1)?,
        status: c.text(2)?,
        config_json: c.text(3)?,
        desired_count: c.int(4)?,
        task_definition: c.text(5)?,
        generation: from_db(c.int(6)?),
        created_at_ms: c.int(7)?,
        updated_at_ms: c.int(8)?,
    })
}

fn deployment_from(c: &Cells) -> Result<DeploymentRecord, StoreError> {
    Ok(DeploymentRecord {
        id: c.text(0)?,
        cluster: c.text(1)?,
        service: c.text(2)?,
        task_definition: c.text(3)?,
        status: c.text(4)?,
        rollout_state: c.text(5)?,
        rollout_state_reason: c.text(6)?,
        failed_tasks: c.count(7)?,
        consecutive_failures: c.count(8)?,
        next_retry_at_ms: c.int(9)?,
        created_at_ms: c.int(10)?,
        updated_at_ms: c.int(11)?,
    })
}

fn event_from(c: &Cells) -> Result<ServiceEventRecord, StoreError> {
    Ok(ServiceEventRecord {
        id: c.text(0)?,
        created_at_ms: c.int(1)?,
        message: c.text(2)?,
    })
}

fn no_service(cluster: &str, name: &str) -> StoreError {
    StoreError::NoService {
        cluster: cluster.to_owned(),
        name: name.to_owned(),
    }
}

async fn get_service<T: ServiceTx>(
    tx: &T,
    cluster: &str,
    name: &str,
    lock: bool,
) -> Result<Option<ServiceRecord>, StoreError> {
    let lock = if lock { T::FOR_UPDATE } else { "" };
    tx.query(
        &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE cluster = $1 AND name = $2{lock}"),
        &[Val::Text(cluster), Val::Text(name)],
    )
    .await?
    .first()
    .map(service_from)
    .transpose()
}

/// The service, locked, if it is not INACTIVE and still at `generation`.
async fn service_at<T: ServiceTx>(
    tx: &T,
    op: &'static str,
    cluster: &str,
    name: &str,
    generation: u64,
) -> Result<ServiceRecord, StoreError> {
    let Some(rec) = get_service(tx, cluster, name, true)
        .await?
        .filter(|s| s.status != INACTIVE)
    else {
        return Err(no_service(cluster, name));
    };
    if rec.generation != generation {
        return Err(StoreError::Conflict {
            op,
            detail: format!(
                "service {name} of cluster {cluster} is at generation {}, not {generation}",
                rec.generation
            ),
        });
    }
    Ok(rec)
}

/// Writes the service's record with the next generation, only if it is
/// still at `generation`.
async fn store_service<T: ServiceTx>(
    tx: &T,
    op: &'static str,
    rec: &mut ServiceRecord,
    generation: u64,
) -> Result<(), StoreError> {
    rec.generation = generation + 1;
    rec.updated_at_ms = berth_proto::now_ms().max(rec.updated_at_ms);
    let written = tx
        .exec(
            "UPDATE services SET status = $3, config_json = $4, desired_count = $5, \
             task_definition = $6, generation = $7, updated_at_ms = $8 \
             WHERE cluster = $1 AND name = $2 AND generation = $9",
            &[
                Val::Text(&rec.cluster),
                Val::Text(&rec.name),
                Val::Text(&rec.status),
                Val::Text(&rec.config_json),
                Val::Int(rec.desired_count),
                Val::Text(&rec.task_definition),
                Val::Int(to_db(rec.generation)),
                Val::Int(rec.updated_at_ms),
                Val::Int(to_db(generation)),
            ],
        )
        .await?;
    if written != 1 {
        return Err(StoreError::Conflict {
            op,
            detail: format!(
                "service {} of cluster {} moved past generation {generation}",
                rec.name, rec.cluster
            ),
        });
    }
    Ok(())
}

/// Inserts the deployment, or replaces the stored one of that id if it
/// belongs to the same service (its creation time stays).
async fn put_deployment<T: ServiceTx>(
    tx: &T,
    op: &'static str,
    d: &DeploymentRecord,
    cluster: &str,
    name: &str,
) -> Result<(), StoreError> {
    let written = tx
        .exec(
            &format!(
                "INSERT INTO deployments ({DEPLOYMENT_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (id) DO UPDATE SET task_definition = excluded.task_definition, \
                 status = excluded.status, rollout_state = excluded.rollout_state, \
                 rollout_state_reason = excluded.rollout_state_reason, \
                 failed_tasks = excluded.failed_tasks, \
                 consecutive_failures = excluded.consecutive_failures, \
                 next_retry_at_ms = excluded.next_retry_at_ms, \
                 updated_at_ms = excluded.updated_at_ms \
                 WHERE deployments.cluster = excluded.cluster \
                 AND deployments.service = excluded.service"
            ),
            &[
                Val::Text(&d.id),
                Val::Text(cluster),
                Val::Text(name),
                Val::Text(&d.task_definition),
                Val::Text(&d.status),
                Val::Text(&d.rollout_state),
                Val::Text(&d.rollout_state_reason),
                Val::Int(i64::from(d.failed_tasks)),
                Val::Int(i64::from(d.consecutive_failures)),
                Val::Int(d.next_retry_at_ms),
                Val::Int(d.created_at_ms),
                Val::Int(d.updated_at_ms),
            ],
        )
        .await?;
    if written != 1 {
        return Err(StoreError::Conflict {
            op,
            detail: format!("deployment {} belongs to another service", d.id),
        });
    }
    Ok(())
}

/// Adds the events (messages cut), then deletes all but the newest
/// [`MAX_EVENTS`] of the service.
async fn add_events<T: ServiceTx>(
    tx: &T,
    cluster: &str,
    name: &str,
    events: &[ServiceEventRecord],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let key = [Val::Text(cluster), Val::Text(name)];
    let last = tx
        .query(
            "SELECT COALESCE(MAX(position), 0) FROM service_events \
             WHERE cluster = $1 AND service = $2",
            &key,
        )
        .await?;
    let mut position = last.first().map_or(Ok(0), |r| r.int(0))?;
    for e in events {
        position += 1;
        tx.exec(
            "INSERT INTO service_events (id, cluster, service, created_at_ms, position, message) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                Val::Text(&e.id),
                Val::Text(cluster),
                Val::Text(name),
                Val::Int(e.created_at_ms),
                Val::Int(position),
                Val::Text(cut_message(&e.message)),
            ],
        )
        .await?;
    }
    tx.exec(
        "DELETE FROM service_events WHERE cluster = $1 AND service = $2 AND id NOT IN \
         (SELECT id FROM service_events WHERE cluster = $1 AND service = $2 \
          ORDER BY created_at_ms DESC, position DESC LIMIT $3)",
        &[
            Val::Text(cluster),
            Val::Text(name),
            Val::Int(i64::try_from(MAX_EVENTS).unwrap_or(i64::MAX)),
        ],
    )
    .await?;
    Ok(())
}

/// Refuses a task id that is not one of the service's tasks.
async fn own_task<T: ServiceTx>(
    tx: &T,
    op: &'static str,
    cluster: &str,
    group: &str,
    task_id: &str,
) -> Result<(), StoreError> {
    let found = tx
        .query(
            "SELECT task_id FROM tasks WHERE task_id = $1 AND cluster = $2 AND task_group = $3",
            &[Val::Text(task_id), Val::Text(cluster), Val::Text(group)],
        )
        .await?;
    if found.is_empty() {
        return Err(StoreError::Conflict {
            op,
            detail: format!("task {task_id} is not a task of {group} in cluster {cluster}"),
        });
    }
    Ok(())
}

async fn create<T: ServiceTx>(
    tx: &T,
    s: &ServiceRecord,
    first: &DeploymentRecord,
    events: &[ServiceEventRecord],
) -> Result<ServiceRecord, StoreError> {
    let op = "create_service";
    let (cluster, name) = (s.cluster.as_str(), s.name.as_str());
    let status = tx
        .query(
            &format!(
                "SELECT status FROM clusters WHERE name = $1{}",
                T::FOR_SHARE
            ),
            &[Val::Text(cluster)],
        )
        .await?
        .first()
        .map(|r| r.text(0))
        .transpose()?;
    rules::cluster_open_for_enrollment(cluster, status.as_deref())?;
    let exists = || StoreError::ServiceExists {
        cluster: cluster.to_owned(),
        name: name.to_owned(),
    };
    let key = [Val::Text(cluster), Val::Text(name)];
    match get_service(tx, cluster, name, true).await? {
        Some(old) if old.status != INACTIVE => return Err(exists()),
        // A deleted service is replaced whole: its deployments and events
        // go with it (its stopped tasks stay, as tasks do).
        Some(_) => {
            for table in [
                "services WHERE cluster = $1 AND name = $2",
                "deployments WHERE cluster = $1 AND service = $2",
                "service_events WHERE cluster = $1 AND service = $2",
            ] {
                tx.exec(&format!("DELETE FROM {table}"), &key).await?;
            }
        }
        None => {}
    }
    let rec = ServiceRecord {
        status: ACTIVE.to_owned(),
        task_definition: first.task_definition.clone(),
        generation: 1,
        ..s.clone()
    };
    let inserted = tx
        .exec(
            &format!(
                "INSERT INTO services ({SERVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                Val::Text(cluster),
                Val::Text(name),
                Val::Text(&rec.status),
                Val::Text(&rec.config_json),
                Val::Int(rec.desired_count),
                Val::Text(&rec.task_definition),
                Val::Int(to_db(rec.generation)),
                Val::Int(rec.created_at_ms),
                Val::Int(rec.updated_at_ms),
            ],
        )
        .await;
    match inserted {
        // Another server created it since the check above.
        Err(e) if T::is_unique_violation(&e) => return Err(exists()),
        other => other?,
    };
    put_deployment(tx, op, &first_deployment(first), cluster, name).await?;
    add_events(tx, cluster, name, events).await?;
    Ok(rec)
}

async fn list<T: ServiceTx>(
    tx: &T,
    cluster: Option<&str>,
) -> Result<Vec<ServiceRecord>, StoreError> {
    // Two statements rather than `$1 IS NULL OR …`, whose parameter type
    // PostgreSQL cannot infer.
    let rows = match cluster {
        Some(c) => {
            tx.query(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE cluster = $1 ORDER BY name"),
                &[Val::Text(c)],
            )
            .await?
        }
        None => {
            tx.query(
                &format!("SELECT {SERVICE_COLUMNS} FROM services ORDER BY cluster, name"),
                &[],
            )
            .await?
        }
    };
    rows.iter().map(service_from).collect()
}

async fn snapshot<T: ServiceTx>(
    tx: &T,
    cluster: &str,
    name: &str,
) -> Result<Option<ServiceSnapshot>, StoreError> {
    tx.one_snapshot().await?;
    let Some(service) = get_service(tx, cluster, name, false).await? else {
        return Ok(None);
    };
    let key = [Val::Text(cluster), Val::Text(name)];
    let deployments = tx
        .query(
            &format!(
                "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE cluster = $1 AND service = $2 \
                 ORDER BY created_at_ms, id"
            ),
            &key,
        )
        .await?
        .iter()
        .map(deployment_from)
        .collect::<Result<_, _>>()?;
    // Without definitions, as a listing (up to 64 KiB each).
    let columns = TASK_COLUMNS.replacen("definition_json", "'' AS definition_json", 1);
    let group = service_group(name);
    let tasks = tx
        .tasks(
            &format!(
                "SELECT {columns} FROM tasks WHERE cluster = $1 AND task_group = $2 \
                 ORDER BY created_at_ms, task_id"
            ),
            &[Val::Text(cluster), Val::Text(&group)],
        )
        .await?;
    let events = tx
        .query(
            "SELECT id, created_at_ms, message FROM service_events \
             WHERE cluster = $1 AND service = $2 ORDER BY created_at_ms DESC, position DESC",
            &key,
        )
        .await?
        .iter()
        .map(event_from)
        .collect::<Result<_, _>>()?;
    Ok(Some(ServiceSnapshot {
        service,
        deployments,
        tasks,
        events,
    }))
}

async fn update<T: ServiceTx>(
    tx: &T,
    cluster: &str,
    name: &str,
    generation: u64,
    u: &ServiceUpdate,
) -> Result<ServiceRecord, StoreError> {
    let op = "update_service";
    let mut rec = service_at(tx, op, cluster, name, generation).await?;
    if !update_changes_anything(u) {
        return Ok(rec);
    }
    if let Some(c) = &u.config_json {
        rec.config_json.clone_from(c);
    }
    if let Some(n) = u.desired_count {
        rec.desired_count = n;
    }
    if let Some(st) = &u.status {
        rec.status.clone_from(st);
    }
    if let Some(d) = &u.new_deployment {
        tx.exec(
            "UPDATE deployments SET status = 'ACTIVE', updated_at_ms = $3 \
             WHERE cluster = $1 AND service = $2 AND status = 'PRIMARY'",
            &[
                Val::Text(cluster),
                Val::Text(name),
                Val::Int(d.created_at_ms),
            ],
        )
        .await?;
        let d = new_primary(d);
        put_deployment(tx, op, &d, cluster, name).await?;
        rec.task_definition.clone_from(&d.task_definition);
    }
    add_events(tx, cluster, name, &u.events).await?;
    store_service(tx, op, &mut rec, generation).await?;
    Ok(rec)
}

async fn apply<T: ServiceTx>(
    tx: &T,
    cluster: &str,
    name: &str,
    generation: u64,
    plan: &ServicePlanRecord,
) -> Result<PlanOutcome, StoreError> {
    let op = "apply_service_plan";
    let mut rec = service_at(tx, op, cluster, name, generation).await?;
    if !plan_changes_anything(plan) {
        return Ok(PlanOutcome {
            generation,
            instances_changed: Vec::new(),
        });
    }
    let group = service_group(name);
    let mut changed: Vec<String> = Vec::new();
    // New tasks instance by instance (one lock order for every plan): the
    // first on an instance is checked against the plan's generation, each
    // later one against the generation the one before left.
    let mut order: Vec<&(TaskRecord, u64)> = plan.new_tasks.iter().collect();
    order.sort_by(|a, b| a.0.instance_id.cmp(&b.0.instance_id));
    let mut at: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (t, planned) in order {
        let expected = match at.get(t.instance_id.as_str()) {
            None => *planned,
            Some((first, now)) if first == planned => *now,
            Some((first, _)) => {
                return Err(StoreError::Conflict {
                    op,
                    detail: format!(
                        "the plan gives instance {} two generations, {first} and {planned}",
                        t.instance_id
                    ),
                });
            }
        };
        let task = if t.cluster.is_empty() {
            Cow::Owned(TaskRecord {
                cluster: cluster.to_owned(),
                ..t.clone()
            })
        } else {
            Cow::Borrowed(t)
        };
        let now = tx.insert_task_at(op, &task, expected).await?;
        at.insert(&t.instance_id, (*planned, now));
        changed.push(t.instance_id.clone());
    }
    // Stops, as `Store::stop_task`: a task already stopping or stopped is
    // left as it is.
    for (task_id, code, reason) in &plan.stops {
        let stopped = tx
            .query(
                "UPDATE tasks SET desired_status = 'STOPPED', stop_code = $4, stopped_reason = $5 \
                 WHERE task_id = $1 AND cluster = $2 AND task_group = $3 \
                 AND desired_status <> 'STOPPED' AND last_status <> 'STOPPED' \
                 RETURNING instance_id",
                &[
                    Val::Text(task_id),
                    Val::Text(cluster),
                    Val::Text(&group),
                    Val::Text(code),
                    Val::Text(reason),
                ],
            )
            .await?;
        match stopped.first() {
            Some(row) => {
                let instance = row.text(0)?;
                tx.bump_generation(&instance).await?;
                changed.push(instance);
            }
            None => own_task(tx, op, cluster, &group, task_id).await?,
        }
    }
    for d in &plan.deployments {
        put_deployment(tx, op, d, cluster, name).await?;
    }
    if let Some(td) = &plan.task_definition {
        rec.task_definition.clone_from(td);
    }
    // Marks only ever go from false to true: the statement sets, never
    // clears.
    for (task_id, kind) in &plan.marks {
        let marked = tx
            .exec(
                &format!(
                    "UPDATE tasks SET {} = 1 WHERE task_id = $1 AND cluster = $2 AND task_group = $3",
                    mark_column(*kind)
                ),
                &[Val::Text(task_id), Val::Text(cluster), Val::Text(&group)],
            )
            .await?;
        if marked == 0 {
            own_task(tx, op, cluster, &group, task_id).await?;
        }
    }
    add_events(tx, cluster, name, &plan.events).await?;
    if let Some(st) = &plan.status {
        rec.status.clone_from(st);
    }
    store_service(tx, op, &mut rec, generation).await?;
    changed.sort();
    changed.dedup();
    debug!(
        cluster,
        service = name,
        generation = rec.generation,
        new_tasks = plan.new_tasks.len(),
        stops = plan.stops.len(),
        instances_changed = changed.len(),
        "service plan applied"
    );
    Ok(PlanOutcome {
        generation: rec.generation,
        instances_changed: changed,
    })
}

// ---- SQLite

pub(super) struct SqliteTx<'t>(&'t rusqlite::Transaction<'t>);

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Val::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Val::Int(v) => ToSqlOutput::Owned(rusqlite::types::Value::Integer(v)),
        })
    }
}

/// SQLite reads `?n` as PostgreSQL reads `$n`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

impl ServiceTx for SqliteTx<'_> {
    const FOR_UPDATE: &'static str = "";
    const FOR_SHARE: &'static str = "";

    async fn one_snapshot(&self) -> Result<(), StoreError> {
        // A SQLite transaction reads one state from its first read on.
        Ok(())
    }

    async fn exec(&self, sql: &str, params: &[Val<'_>]) -> Result<u64, StoreError> {
        let n = self
            .0
            .prepare_cached(&sqlite_sql(sql))?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn query(&self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Cells>, StoreError> {
        let mut stmt = self.0.prepare_cached(&sqlite_sql(sql))?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut cells = Vec::with_capacity(width);
            for i in 0..width {
                cells.push(match row.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(bad_column(i, "text or an integer", None));
                    }
                });
            }
            out.push(Cells(cells));
        }
        Ok(out)
    }

    async fn tasks(&self, sql: &str, params: &[Val<'_>]) -> Result<Vec<TaskRecord>, StoreError> {
        let mut stmt = self.0.prepare_cached(&sqlite_sql(sql))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params), sqlite::task_from_row)?;
        rows.map(|r| r.map_err(StoreError::from).and_then(RawTask::decode))
            .collect()
    }

    async fn insert_task_at(
        &self,
        op: &'static str,
        t: &TaskRecord,
        generation: u64,
    ) -> Result<u64, StoreError> {
        sqlite::insert_task_checked(self.0, op, t, Some(generation))
    }

    async fn bump_generation(&self, instance_id: &str) -> Result<u64, StoreError> {
        sqlite::bump_generation(self.0, instance_id)
    }

    fn is_unique_violation(e: &StoreError) -> bool {
        matches!(e, StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
    }
}

/// Runs a service transaction's future on SQLite, where no step waits:
/// it completes on its first poll.
fn at_once<T>(
    op: &'static str,
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    f.now_or_never().unwrap_or_else(|| {
        Err(StoreError::Join(format!(
            "{op}: a SQLite step did not complete"
        )))
    })
}

impl ServiceBackend for SqliteStore {
    type Tx<'t> = SqliteTx<'t>;

    fn transaction<R>(
        &self,
        op: &'static str,
        write: bool,
        mut f: impl AsyncFnMut(&SqliteTx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let run = |tx: &rusqlite::Transaction<'_>| at_once(op, f(&SqliteTx(tx)));
        if write {
            self.write(op, run)
        } else {
            self.read(op, run)
        }
    }
}

// ---- PostgreSQL

pub(super) struct PgTx<'t>(&'t tokio_postgres::Transaction<'t>);

fn pg_params<'a>(params: &'a [Val<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|v| match v {
            Val::Text(s) => s as &(dyn ToSql + Sync),
            Val::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

fn pg_cells(row: &tokio_postgres::Row) -> Result<Cells, StoreError> {
    let mut cells = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Cell::Int(i64::from(v)))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?
                .map(|v| Cell::Int(i64::from(v)))
        } else {
            row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Cells(cells))
}

impl ServiceTx for PgTx<'_> {
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_SHARE: &'static str = " FOR SHARE";

    async fn one_snapshot(&self) -> Result<(), StoreError> {
        // READ COMMITTED gives each statement its own snapshot.
        self.0
            .batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        Ok(())
    }

    async fn exec(&self, sql: &str, params: &[Val<'_>]) -> Result<u64, StoreError> {
        Ok(self.0.execute(sql, &pg_params(params)).await?)
    }

    async fn query(&self, sql: &str, params: &[Val<'_>]) -> Result<Vec<Cells>, StoreError> {
        self.0
            .query(sql, &pg_params(params))
            .await?
            .iter()
            .map(pg_cells)
            .collect()
    }

    async fn tasks(&self, sql: &str, params: &[Val<'_>]) -> Result<Vec<TaskRecord>, StoreError> {
        self.0
            .query(sql, &pg_params(params))
            .await?
            .iter()
            .map(postgres::task_from_row)
            .collect()
    }

    async fn insert_task_at(
        &self,
        op: &'static str,
        t: &TaskRecord,
        generation: u64,
    ) -> Result<u64, StoreError> {
        postgres::insert_task_checked(self.0, op, t, Some(generation)).await
    }

    async fn bump_generation(&self, instance_id: &str) -> Result<u64, StoreError> {
        postgres::bump_generation(self.0, instance_id).await
    }

    fn is_unique_violation(e: &StoreError) -> bool {
        matches!(e, StoreError::Pg(p) if postgres::is_unique_violation(p))
    }
}

impl ServiceBackend for PostgresStore {
    type Tx<'t> = PgTx<'t>;

    fn transaction<R>(
        &self,
        op: &'static str,
        _write: bool,
        mut f: impl AsyncFnMut(&PgTx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.run(op, async |tx| f(&PgTx(tx)).await)
    }
}

/// A backend the service transactions run on.
pub(super) trait ServiceBackend {
    type Tx<'t>: ServiceTx;
    /// Runs `f` as one transaction; a write transaction when `write`.
    fn transaction<R>(
        &self,
        op: &'static str,
        write: bool,
        f: impl AsyncFnMut(&Self::Tx<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;
}

/// Every method once, on whichever backend: the bounds first, then one
/// transaction.
impl<B: ServiceBackend> ServiceStore for B {
    fn create_service(
        &self,
        service: &ServiceRecord,
        first: &DeploymentRecord,
        events: &[ServiceEventRecord],
    ) -> Result<ServiceRecord, StoreError> {
        check_create(service, first, events)?;
        self.transaction("create_service", true, async |tx| {
            create(tx, service, first, events).await
        })
    }

    fn service(&self, cluster: &str, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        self.transaction("service", false, async |tx| {
            get_service(tx, cluster, name, false).await
        })
    }

    fn services(&self, cluster: Option<&str>) -> Result<Vec<ServiceRecord>, StoreError> {
        self.transaction("services", false, async |tx| list(tx, cluster).await)
    }

    fn service_snapshot(
        &self,
        cluster: &str,
        name: &str,
    ) -> Result<Option<ServiceSnapshot>, StoreError> {
        self.transaction("service_snapshot", false, async |tx| {
            snapshot(tx, cluster, name).await
        })
    }

    fn update_service(
        &self,
        cluster: &str,
        name: &str,
        generation: u64,
        change: &ServiceUpdate,
    ) -> Result<ServiceRecord, StoreError> {
        check_update(cluster, name, change)?;
        self.transaction("update_service", true, async |tx| {
            update(tx, cluster, name, generation, change).await
        })
    }

    fn apply_service_plan(
        &self,
        cluster: &str,
        name: &str,
        generation: u64,
        plan: &ServicePlanRecord,
    ) -> Result<PlanOutcome, StoreError> {
        check_plan(cluster, name, plan)?;
        self.transaction("apply_service_plan", true, async |tx| {
            apply(tx, cluster, name, generation, plan).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        assert_eq!(cut_message("short"), "short");
        let exact = "x".repeat(MAX_EVENT_MESSAGE);
        assert_eq!(cut_message(&exact), exact);
        // 'é' is two bytes: 1023 of 'x' then 'é' straddles the limit.
        let straddling = format!("{}é tail", "x".repeat(MAX_EVENT_MESSAGE - 1));
        let cut = cut_message(&straddling);
        assert_eq!(cut.len(), MAX_EVENT_MESSAGE - 1);
        assert!(cut.chars().all(|c| c == 'x'));
        let wide = "€".repeat(1_000);
        let cut = cut_message(&wide);
        assert!(cut.len() <= MAX_EVENT_MESSAGE && cut.len() > MAX_EVENT_MESSAGE - 3);
        assert!(cut.chars().all(|c| c == '€'));
    }

    #[test]
    fn bounds_are_checked_before_anything_is_stored() {
        let plan = ServicePlanRecord {
            marks: vec![("t".into(), TaskMarkKind::Lost); MAX_PLAN_ITEMS + 1],
            ..ServicePlanRecord::default()
        };
        let e = check_plan("default", "web", &plan).expect_err("too many marks");
        assert!(e.to_string().contains("10001 marks"), "{e}");
        assert!(matches!(
            check_plan("default", "we b", &ServicePlanRecord::default()),
            Err(StoreError::Invalid { .. })
        ));
        assert!(matches!(
            check_plan("a.b", "web", &ServicePlanRecord::default()),
            Err(StoreError::InvalidClusterName(..))
        ));
        let foreign = ServicePlanRecord {
            new_tasks: vec![(
                TaskRecord {
                    task_id: "t1".into(),
                    instance_id: "i-1".into(),
                    group: "service:other".into(),
                    ..TaskRecord::default()
                },
                1,
            )],
            ..ServicePlanRecord::default()
        };
        let e = check_plan("default", "web", &foreign).expect_err("another group");
        assert!(e.to_string().contains("service:web"), "{e}");
        let update = ServiceUpdate {
            config_json: Some("x".repeat(MAX_SERVICE_CONFIG_BYTES + 1)),
            ..ServiceUpdate::default()
        };
        assert!(matches!(
            check_update("default", "web", &update),
            Err(StoreError::Invalid { .. })
        ));
        let update = ServiceUpdate {
            status: Some("PAUSED".into()),
            ..ServiceUpdate::default()
        };
        assert!(check_update("default", "web", &update).is_err());
        let stranger = DeploymentRecord {
            id: "ecs-svc/1".into(),
            cluster: "other".into(),
            status: ACTIVE.into(),
            rollout_state: "COMPLETED".into(),
            ..DeploymentRecord::default()
        };
        assert!(check_deployment("x", &stranger, "default", "web").is_err());
    }
}
