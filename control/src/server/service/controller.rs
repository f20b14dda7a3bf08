//! The service controller: the loop that keeps every service as its
//! reconciler says (SPEC §6 "Scheduling semantics").
//!
//! One pass over one service:
//! 1. read its snapshot (record, deployments, tasks, events: one store
//!    transaction) and the fleet's placement snapshot;
//! 2. compute what the reconciler needs and the store does not hold
//!    ([`inputs`]): which instances are connected (the session registry),
//!    since when an instance is disconnected (its last heartbeat, but never
//!    before this server started, so that a restarted control plane does
//!    not count every host lost before its agents had a chance to
//!    reconnect), whether a task's definition has a health check, DAEMON
//!    eligibility and room per instance, and the tasks of other services
//!    and standalone tasks on each instance;
//! 3. [`reconcile`] it (pure);
//! 4. place the REPLICA starts ([`placement::place_many`] over the
//!    service's instances, its constraints and strategies; what fits
//!    nowhere becomes the placement-failure event);
//! 5. apply the plan in one transaction guarded by the service's
//!    generation and each chosen instance's generation
//!    ([`ServiceStore::apply_service_plan`]); a conflict means the state
//!    moved: the pass is simply made again;
//! 6. tell the agents of the instances whose desired set changed.
//!
//! The loop wakes when something may have changed (a task event, an agent
//! connecting or leaving, a drain, a deregistration, an operator's change
//! of a service: [`Core::wake_services`]), at the earliest `next_wake_ms`
//! of the plans, and at least every [`TICK`]. Being level-triggered, a lost
//! wake-up costs latency, never correctness.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::status::Health;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use super::super::Core;
use super::super::placement::{self, Candidate, Request};
use super::super::scheduler;
use super::super::store::{
    ACTIVE, DRAINING, DeploymentRecord, INACTIVE, InstanceRecord, PENDING, PlacementSnapshot,
    RUNNING, SERVICE_DRAINING, STOPPED, ServiceEventRecord, ServicePlanRecord, ServiceRecord,
    ServiceSnapshot, StoreError, TaskMarkKind, TaskRecord,
};
use super::config::ServiceConfig;
use super::model::{
    DaemonFit, Deployment, DeploymentStatus, DesiredStatus, InstanceStatus, InstanceView,
    LastStatus, RecordedEvent, RetryState, RolloutState, SchedulingStrategy, State, Stop, TaskMark,
    TaskView,
};
use super::reconcile::{EVENT_REPEAT_WINDOW_MS, reconcile};

/// The longest the loop sleeps without a wake-up.
pub const TICK: Duration = Duration::from_secs(2);
/// After a pass changed something, the next comes this soon (the change
/// itself may call for more: a stop confirmed, a deployment completed).
const AGAIN: Duration = Duration::from_millis(100);

/// The group of a service's tasks.
pub fn group_of(service: &str) -> String {
    format!("service:{service}")
}

/// A new deployment id: `ecs-svc/` and 19 digits, as ECS.
pub fn new_deployment_id() -> String {
    let n = uuid::Uuid::new_v4().as_u128() % 10_000_000_000_000_000_000;
    format!("ecs-svc/{n:019}")
}

/// A parsed registered definition, as the controller needs it.
#[derive(Clone)]
pub(crate) struct Definition {
    pub stored_json: String,
    pub family: String,
    pub has_health_check: bool,
    pub request: Request,
}

/// Registered definitions by `family:revision` (immutable, so never stale).
#[derive(Default)]
pub(crate) struct Definitions(HashMap<String, Option<Arc<Definition>>>);

impl Definitions {
    async fn get(&mut self, core: &Core, name: &str) -> Option<Arc<Definition>> {
        if let Some(d) = self.0.get(name) {
            return d.clone();
        }
        if self.0.len() > 1_000 {
            self.0.clear();
        }
        let (family, revision) = match name.rsplit_once(':') {
            Some((f, r)) => (f.to_owned(), r.parse::<i64>().ok()),
            None => (name.to_owned(), None),
        };
        let found = core
            .db("task_definition", move |s| {
                s.task_definition(&family, revision)
            })
            .await;
        let d = match found {
            Ok(Some(rec)) => match berth_taskdef::parse(&rec.definition_json) {
                Ok(p) => {
                    let def = &p.definition;
                    let has_health_check = def
                        .container_definitions
                        .iter()
                        .any(|c| c.is_essential() && c.health_check.is_some());
                    Some(Arc::new(Definition {
                        stored_json: rec.definition_json.clone(),
                        family: def.family.clone(),
                        has_health_check,
                        request: Request::for_definition(def),
                    }))
                }
                Err(e) => {
                    warn!(task_definition = %name, error = %e, "a registered task definition no longer parses");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                // Not cached: tried again on the next pass.
                warn!(task_definition = %name, error = %e, "cannot read a task definition");
                return None;
            }
        };
        self.0.insert(name.to_owned(), d.clone());
        d
    }
}

/// A service, as the loop keys it: `(cluster, name)`.
type ServiceKey = (String, String);

/// Runs the loop until `stop` turns true.
///
/// A round looks at every service when a wake-up says anything but one
/// service's task may have changed (an agent connecting or leaving, a drain,
/// an operator's change), or when the last full round is [`TICK`] old;
/// otherwise only at the services a task event named and those whose plan
/// asked to be looked at again by now. So a task's stop costs one service's
/// pass, not a round over all of them.
pub(crate) async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let started_at_ms = berth_proto::now_ms();
    let mut defs = Definitions::default();
    // When each service asked to be looked at again.
    let mut due: BTreeMap<ServiceKey, i64> = BTreeMap::new();
    let mut last_full: Option<tokio::time::Instant> = None;
    loop {
        let hints = core.take_service_hints();
        let now = berth_proto::now_ms();
        let full = hints.all || last_full.is_none_or(|t| t.elapsed() >= TICK);
        let selected = (!full).then(|| {
            let mut s = hints.services;
            s.extend(
                due.iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone()),
            );
            s
        });
        if full {
            last_full = Some(tokio::time::Instant::now());
        }
        if selected.as_ref().is_none_or(|s| !s.is_empty()) {
            match pass_round(&core, &mut defs, started_at_ms, selected.as_ref()).await {
                Ok(results) => {
                    if full {
                        // Deleted services are not in a full round's results.
                        due.clear();
                    }
                    for (key, at) in results {
                        match at {
                            Some(at) => {
                                due.insert(key, at);
                            }
                            None => {
                                due.remove(&key);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "the service controller could not read the services");
                }
            }
        }
        let now = berth_proto::now_ms();
        let until_full = last_full.map_or(Duration::ZERO, |t| TICK.saturating_sub(t.elapsed()));
        let wait = due
            .values()
            .min()
            .map(|at| Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
            .map_or(until_full, |d| d.min(until_full));
        tokio::select! {
            _ = core.service_wake().notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// One pass over every service not INACTIVE (or only the `selected`
/// ones); when each asks to be looked at again (`None`: only when
/// something changes).
async fn pass_round(
    core: &Core,
    defs: &mut Definitions,
    started_at_ms: i64,
    selected: Option<&BTreeSet<ServiceKey>>,
) -> Result<Vec<(ServiceKey, Option<i64>)>, StoreError> {
    let services = core.db("services", |s| s.services(None)).await?;
    let live: Vec<ServiceRecord> = services
        .into_iter()
        .filter(|s| s.status != INACTIVE)
        .collect();
    let daemons: BTreeSet<String> = live
        .iter()
        .filter(|s| {
            ServiceConfig::stored_strategy(&s.config_json) == Some(SchedulingStrategy::Daemon)
        })
        .map(|s| format!("{}/{}", s.cluster, group_of(&s.name)))
        .collect();
    let mut results = Vec::new();
    let mut view = FleetView::default();
    for svc in live {
        let key = (svc.cluster.clone(), svc.name.clone());
        if selected.is_some_and(|s| !s.contains(&key)) {
            continue;
        }
        let span = info_span!("service", cluster = %svc.cluster, service = %svc.name);
        let r = pass(core, defs, &mut view, &svc, &daemons, started_at_ms)
            .instrument(span.clone())
            .await;
        let at = match r {
            Ok(at) => at,
            Err(e) => {
                span.in_scope(|| warn!(error = %e, "service pass failed; tried again"));
                Some(berth_proto::now_ms() + TICK.as_millis() as i64)
            }
        };
        results.push((key, at));
    }
    Ok(results)
}

/// What the services of one round read of the fleet: read once, and again
/// only after a plan changed it (or a plan met a change it did not see), so
/// a round over many services at rest reads the fleet once.
#[derive(Default)]
struct FleetView {
    snapshot: Option<Arc<PlacementSnapshot>>,
    tasks: Option<Arc<Vec<TaskRecord>>>,
    connected: Option<Arc<HashSet<String>>>,
}

impl FleetView {
    /// The instances with a live session, once per round.
    fn connected(&mut self, core: &Core) -> Arc<HashSet<String>> {
        Arc::clone(
            self.connected
                .get_or_insert_with(|| Arc::new(core.sessions().connected_instances())),
        )
    }

    async fn snapshot(&mut self, core: &Core) -> Result<Arc<PlacementSnapshot>, StoreError> {
        if let Some(s) = &self.snapshot {
            return Ok(Arc::clone(s));
        }
        let s = Arc::new(
            core.db("placement_snapshot", |s| s.placement_snapshot())
                .await?,
        );
        self.snapshot = Some(Arc::clone(&s));
        Ok(s)
    }

    async fn tasks(&mut self, core: &Core) -> Result<Arc<Vec<TaskRecord>>, StoreError> {
        if let Some(t) = &self.tasks {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(core.db("tasks", |s| s.tasks(None)).await?);
        self.tasks = Some(Arc::clone(&t));
        Ok(t)
    }

    fn invalidate(&mut self) {
        *self = FleetView::default();
    }
}

/// The view a reconciler pass takes of one service.
pub(crate) struct Inputs {
    pub config: ServiceConfig,
    pub deployments: Vec<Deployment>,
    pub tasks: Vec<TaskView>,
    pub instances: Vec<InstanceView>,
    pub events: Vec<RecordedEvent>,
}

fn last_status(t: &TaskRecord) -> LastStatus {
    match t.last_status.as_str() {
        STOPPED => LastStatus::Stopped,
        _ if t.lost => LastStatus::Unknown,
        RUNNING => LastStatus::Running,
        _ => LastStatus::Pending,
    }
}

fn deployment_of(d: &DeploymentRecord) -> Deployment {
    Deployment {
        id: d.id.clone(),
        task_definition: d.task_definition.clone(),
        status: match d.status.as_str() {
            "PRIMARY" => DeploymentStatus::Primary,
            ACTIVE => DeploymentStatus::Active,
            _ => DeploymentStatus::Inactive,
        },
        rollout_state: match d.rollout_state.as_str() {
            "COMPLETED" => RolloutState::Completed,
            "FAILED" => RolloutState::Failed,
            _ => RolloutState::InProgress,
        },
        rollout_state_reason: d.rollout_state_reason.clone(),
        failed_tasks: d.failed_tasks,
        created_at_ms: d.created_at_ms,
        updated_at_ms: d.updated_at_ms,
        retry: RetryState {
            consecutive_failures: d.consecutive_failures,
            next_retry_at_ms: (d.next_retry_at_ms > 0).then_some(d.next_retry_at_ms),
        },
    }
}

fn deployment_record(svc: &ServiceRecord, d: &Deployment) -> DeploymentRecord {
    DeploymentRecord {
        id: d.id.clone(),
        cluster: svc.cluster.clone(),
        service: svc.name.clone(),
        task_definition: d.task_definition.clone(),
        status: d.status.as_str().to_owned(),
        rollout_state: d.rollout_state.as_str().to_owned(),
        rollout_state_reason: d.rollout_state_reason.clone(),
        failed_tasks: d.failed_tasks,
        consecutive_failures: d.retry.consecutive_failures,
        next_retry_at_ms: d.retry.next_retry_at_ms.unwrap_or(0),
        created_at_ms: d.created_at_ms,
        updated_at_ms: d.updated_at_ms,
    }
}

/// The service's instances as placement sees them, with the service's own
/// tasks counted per instance (for `spread` and `distinctInstance`) and
/// the static host ports its tasks hold.
fn candidates_of(
    cluster_instances: &[InstanceRecord],
    fleet: &PlacementSnapshot,
    connected: &HashSet<String>,
    service_tasks: &[TaskRecord],
    host_ports_of: &HashMap<String, Vec<(u16, placement::Protocol)>>,
) -> Vec<Candidate> {
    let mut cands = scheduler::candidates(cluster_instances, &fleet.usage, connected);
    for c in &mut cands {
        for t in service_tasks
            .iter()
            .filter(|t| t.instance_id == c.instance_id && t.last_status != STOPPED && !t.lost)
        {
            c.group_count += 1;
            if let Some(ports) = host_ports_of.get(&t.task_definition) {
                c.used_host_ports.extend(ports.iter().copied());
            }
        }
    }
    cands
}

/// One pass over one service: the time the clock alone calls for another.
async fn pass(
    core: &Core,
    defs: &mut Definitions,
    view: &mut FleetView,
    svc: &ServiceRecord,
    daemons: &BTreeSet<String>,
    started_at_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let (cluster, name) = (svc.cluster.clone(), svc.name.clone());
    let snap = core
        .db("service_snapshot", move |s| {
            s.service_snapshot(&cluster, &name)
        })
        .await?;
    let Some(snap) = snap else { return Ok(None) };
    let config = match ServiceConfig::from_stored(
        &snap.service.cluster,
        &snap.service.name,
        snap.service.desired_count,
        &snap.service.config_json,
    ) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "the service's stored configuration cannot be read; it is left alone");
            return Ok(None);
        }
    };
    let fleet = view.snapshot(core).await?;
    let others = if config.spec.strategy == SchedulingStrategy::Daemon {
        view.tasks(core).await?
    } else {
        Arc::new(Vec::new())
    };
    let connected = view.connected(core);
    let now = berth_proto::now_ms();

    // Definitions of every deployment.
    let mut by_deployment: BTreeMap<String, Arc<Definition>> = BTreeMap::new();
    for d in &snap.deployments {
        if let Some(def) = defs.get(core, &d.task_definition).await {
            by_deployment.insert(d.id.clone(), def);
        }
    }
    let mut host_ports_of = HashMap::new();
    for d in &snap.deployments {
        if let Some(def) = by_deployment.get(&d.id) {
            host_ports_of.insert(d.task_definition.clone(), def.request.host_ports.clone());
        }
    }

    let cluster_instances: Vec<InstanceRecord> = fleet
        .instances
        .iter()
        .filter(|i| i.cluster == snap.service.cluster)
        .cloned()
        .collect();
    // Placement's view of the instances: for DAEMON eligibility now, for
    // REPLICA only once the plan asks for starts (a service at rest needs
    // none).
    let daemon = config.spec.strategy == SchedulingStrategy::Daemon;
    let build = || {
        candidates_of(
            &cluster_instances,
            &fleet,
            &connected,
            &snap.tasks,
            &host_ports_of,
        )
    };
    let cands = if daemon { build() } else { Vec::new() };
    let inputs = inputs(
        &snap,
        config,
        &cluster_instances,
        &cands,
        &connected,
        &by_deployment,
        &others,
        daemons,
        started_at_ms,
    );
    let state = State {
        spec: &inputs.config.spec,
        deployments: &inputs.deployments,
        tasks: &inputs.tasks,
        instances: &inputs.instances,
        events: &inputs.events,
        now_ms: now,
    };
    let plan = reconcile(&state);
    let next_wake = plan.next_wake_ms;

    let mut record = ServicePlanRecord::default();
    // The controller's own events (placement, unreadable definitions); the
    // reconciler's are already not repeated within the window, and the
    // steady state of a completed deployment is said even within it.
    let mut events: Vec<String> = Vec::new();
    let generation_of = |id: &str| {
        fleet
            .instances
            .iter()
            .find(|i| i.instance_id == id)
            .map_or(0, |i| i.generation)
    };
    // Starts.
    let mut placed_cands = if daemon || plan.starts.is_empty() {
        cands
    } else {
        build()
    };
    for start in &plan.starts {
        let Some(def) = by_deployment.get(&start.deployment_id) else {
            events.push(format!(
                "service ({}) cannot start tasks of deployment {}: its task definition {} cannot be read.",
                svc.name, start.deployment_id, start.task_definition
            ));
            continue;
        };
        let instances: Vec<String> = match &start.instance_id {
            Some(id) => vec![id.clone(); start.count as usize],
            None => {
                let mut req = def.request.clone();
                req.constraints = inputs.config.constraints.clone();
                req.strategies = inputs.config.placement_strategies();
                req.seed = now as u64;
                let (ids, failed) =
                    placement::pipeline::place_many(&req, &mut placed_cands, start.count as usize);
                if let Some(u) = failed {
                    info!(reason = %u, "a task of the service cannot be placed");
                    events.push(u.service_event(&svc.name));
                }
                ids
            }
        };
        for instance_id in instances {
            let task = TaskRecord {
                task_id: uuid::Uuid::new_v4().simple().to_string(),
                instance_id: instance_id.clone(),
                family: def.family.clone(),
                definition_json: def.stored_json.clone(),
                desired_status: RUNNING.to_owned(),
                last_status: PENDING.to_owned(),
                health_status: Health::Unknown.as_str().to_owned(),
                created_at_ms: now,
                reserved_cpu: def.request.need.cpu,
                reserved_memory_mib: def.request.need.memory_mib,
                task_definition: start.task_definition.clone(),
                group: group_of(&svc.name),
                started_by: start.deployment_id.clone(),
                cluster: svc.cluster.clone(),
                ..TaskRecord::default()
            };
            let g = generation_of(&instance_id);
            record.new_tasks.push((task, g));
        }
    }
    let stop_code = Stop::CODE.as_str().to_owned();
    for stop in &plan.stops {
        record.stops.push((
            stop.task_id.clone(),
            stop_code.clone(),
            stop.reason.to_string(),
        ));
    }
    let mut deployments: Vec<DeploymentRecord> = plan
        .deployments
        .iter()
        .map(|d| deployment_record(&snap.service, d))
        .collect();
    if let Some(nd) = &plan.new_deployment {
        deployments.push(DeploymentRecord {
            id: new_deployment_id(),
            cluster: snap.service.cluster.clone(),
            service: snap.service.name.clone(),
            task_definition: nd.task_definition.clone(),
            status: DeploymentStatus::Primary.as_str().to_owned(),
            rollout_state: RolloutState::InProgress.as_str().to_owned(),
            rollout_state_reason: nd.rollout_state_reason.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            ..DeploymentRecord::default()
        });
        record.task_definition = Some(nd.task_definition.clone());
    }
    record.deployments = deployments;
    for m in &plan.marks {
        record.marks.push(match m {
            TaskMark::BecameHealthy(id) => (id.clone(), TaskMarkKind::EverHealthy),
            TaskMark::FailureCounted(id) => (id.clone(), TaskMarkKind::FailureCounted),
            TaskMark::Lost(id) => (id.clone(), TaskMarkKind::Lost),
        });
    }
    // The controller's own not repeated within the window.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let own = events.into_iter().filter(|m| {
        !snap.events.iter().any(|e| {
            &e.message == m && now.saturating_sub(e.created_at_ms) < EVENT_REPEAT_WINDOW_MS
        })
    });
    for m in plan.events.iter().cloned().chain(own) {
        if seen.insert(m.clone()) {
            info!(event = %m, "service event");
            record.events.push(ServiceEventRecord {
                id: uuid::Uuid::new_v4().to_string(),
                created_at_ms: now,
                message: m,
            });
        }
    }
    // A deleted service whose last task stopped is gone.
    if snap.service.status == SERVICE_DRAINING
        && record.new_tasks.is_empty()
        && snap.tasks.iter().all(|t| t.last_status == STOPPED)
    {
        record.status = Some(INACTIVE.to_owned());
    }
    if record == ServicePlanRecord::default() {
        return Ok(next_wake);
    }
    let (cluster, name, generation) = (
        snap.service.cluster.clone(),
        snap.service.name.clone(),
        snap.service.generation,
    );
    let starts = record.new_tasks.len();
    let stops = record.stops.len();
    let applied = core
        .db("apply_service_plan", move |s| {
            s.apply_service_plan(&cluster, &name, generation, &record)
        })
        .await;
    match applied {
        Ok(outcome) => {
            if starts > 0 || stops > 0 {
                info!(starts, stops, "service plan applied");
            }
            if !outcome.instances_changed.is_empty() {
                view.invalidate();
            }
            for id in &outcome.instances_changed {
                core.sessions().notify_assignment(id);
            }
            let soon = berth_proto::now_ms() + AGAIN.as_millis() as i64;
            Ok(Some(next_wake.map_or(soon, |w| w.min(soon))))
        }
        Err(StoreError::Conflict { detail, .. }) => {
            debug!(%detail, "the service changed during the pass; planning again");
            view.invalidate();
            Ok(Some(berth_proto::now_ms() + AGAIN.as_millis() as i64))
        }
        Err(e) => Err(e),
    }
}

/// Everything the reconciler reads, from the snapshots (see the module
/// docs for what is computed here).
#[allow(clippy::too_many_arguments)]
pub(crate) fn inputs(
    snap: &ServiceSnapshot,
    mut config: ServiceConfig,
    cluster_instances: &[InstanceRecord],
    cands: &[Candidate],
    connected: &HashSet<String>,
    defs: &BTreeMap<String, Arc<Definition>>,
    all_tasks: &[TaskRecord],
    daemons: &BTreeSet<String>,
    started_at_ms: i64,
) -> Inputs {
    let deleted = snap.service.status == SERVICE_DRAINING;
    if deleted && config.spec.strategy == SchedulingStrategy::Replica {
        config.spec.desired_count = Some(0);
    }
    let deployments: Vec<Deployment> = snap.deployments.iter().map(deployment_of).collect();
    let tasks: Vec<TaskView> = snap
        .tasks
        .iter()
        .map(|t| TaskView {
            id: t.task_id.clone(),
            deployment_id: t.started_by.clone(),
            instance_id: t.instance_id.clone(),
            last_status: last_status(t),
            desired_status: if t.desired_status == STOPPED {
                DesiredStatus::Stopped
            } else {
                DesiredStatus::Running
            },
            has_health_check: defs.get(&t.started_by).is_some_and(|d| d.has_health_check),
            health: t.health_status.parse().unwrap_or(Health::Unknown),
            created_at_ms: t.created_at_ms,
            started_at_ms: (t.started_at_ms > 0).then_some(t.started_at_ms),
            stopped_reason: (!t.stopped_reason.is_empty()).then(|| t.stopped_reason.clone()),
            ever_healthy: t.ever_healthy,
            failure_counted: t.failure_counted,
        })
        .collect();
    let own_group = format!("{}/{}", snap.service.cluster, group_of(&snap.service.name));
    // Per instance, once: its tasks not STOPPED of neither this nor another
    // DAEMON service (`all_tasks` is empty for a REPLICA service), and
    // placement's view of it.
    let mut other_by_instance: HashMap<&str, usize> = HashMap::new();
    for t in all_tasks.iter().filter(|t| t.last_status != STOPPED) {
        let group = format!("{}/{}", t.cluster, t.group);
        if group != own_group && !daemons.contains(&group) {
            *other_by_instance.entry(t.instance_id.as_str()).or_default() += 1;
        }
    }
    let cand_by_id: HashMap<&str, &Candidate> =
        cands.iter().map(|c| (c.instance_id.as_str(), c)).collect();
    let instances = cluster_instances
        .iter()
        .map(|i| {
            let is_connected = connected.contains(&i.instance_id);
            let status = match i.status.as_str() {
                ACTIVE => InstanceStatus::Active,
                DRAINING => InstanceStatus::Draining,
                _ => InstanceStatus::Inactive,
            };
            let mut daemon = BTreeMap::new();
            if config.spec.strategy == SchedulingStrategy::Daemon {
                let cand = cand_by_id.get(i.instance_id.as_str()).copied();
                for d in &snap.deployments {
                    let fit = match (defs.get(&d.id), cand) {
                        (Some(def), Some(c)) if !deleted => daemon_fit(def, &config, c),
                        _ => DaemonFit::default(),
                    };
                    daemon.insert(d.id.clone(), fit);
                }
            }
            let other_tasks = other_by_instance
                .get(i.instance_id.as_str())
                .copied()
                .unwrap_or(0);
            InstanceView {
                id: i.instance_id.clone(),
                status,
                connected: is_connected,
                disconnected_since_ms: (!is_connected)
                    .then(|| i.last_heartbeat_at_ms.max(started_at_ms)),
                daemon,
                other_tasks: u32::try_from(other_tasks).unwrap_or(u32::MAX),
            }
        })
        .collect();
    let events = snap
        .events
        .iter()
        .map(|e| RecordedEvent {
            created_at_ms: e.created_at_ms,
            message: e.message.clone(),
        })
        .collect();
    Inputs {
        config,
        deployments,
        tasks,
        instances,
        events,
    }
}

/// Whether an instance may run a DAEMON deployment's task (its
/// constraints and the definition's requirements) and has room for one
/// more with the tasks it runs now (capacity and static host ports).
fn daemon_fit(def: &Definition, config: &ServiceConfig, c: &Candidate) -> DaemonFit {
    let mut req = def.request.clone();
    req.constraints = config.constraints.clone();
    // The reconciler judges status and connection itself.
    let mut judged = c.clone();
    judged.connected = true;
    judged.status = placement::InstanceStatus::Active;
    judged.group_count = 0;
    // Eligibility: everything but capacity and ports.
    let mut roomy = judged.clone();
    roomy.free.cpu = i64::MAX / 4;
    roomy.free.memory_mib = i64::MAX / 4;
    roomy.used_host_ports.clear();
    let eligible = placement::pipeline::check_candidate(&req, &roomy).is_ok();
    let room = eligible && placement::pipeline::check_candidate(&req, &judged).is_ok();
    DaemonFit { eligible, room }
}
