//! One supervisor per task: it owns the task's state and drives its
//! containers through the runtime.
//!
//! Lifecycle (ECS semantics, SPEC §3):
//!
//! ```text
//! PENDING ──pull, create, start──▶ RUNNING ──essential exit / stop──▶ STOPPED ──cleanup delay──▶ removed
//!    └────────pull/create/start failure (TaskFailedToStart)────────────▶ STOPPED
//! ```
//!
//! Invariants:
//! - only the supervisor changes its task's state; every change is sent to
//!   the manager as a full [`TaskState`] snapshot, which persists it and turns
//!   it into a sequenced event;
//! - a container that already exists (found by its recorded id or by its
//!   name) is adopted, never created twice — so an agent restart neither
//!   duplicates nor restarts containers;
//! - container exits come from the engine's event stream; a resync
//!   re-inspects every container, so an exit missed while the stream was
//!   down is still seen;
//! - containers stop in reverse definition order, each with its own stop
//!   timeout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::{ContainerState, NetworkBinding, TaskState};
use berth_taskdef::{ContainerDefinition, TaskDefinition};
use tokio::sync::{broadcast, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::runtime::{
    ContainerInfo, ContainerSpec, Health, LABEL_CONTAINER_NAME, LABEL_INSTANCE_ID,
    LABEL_TASK_FAMILY, LABEL_TASK_ID, PullPolicy, RunState, Runtime, RuntimeError, RuntimeEvent,
};

pub const PENDING: &str = "PENDING";
pub const RUNNING: &str = "RUNNING";
pub const STOPPED: &str = "STOPPED";
pub const HEALTHY: &str = "HEALTHY";
pub const UNHEALTHY: &str = "UNHEALTHY";
pub const UNKNOWN: &str = "UNKNOWN";
pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
pub const USER_INITIATED: &str = "UserInitiated";

/// Settings a supervisor takes from the agent's config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub instance_id: String,
    pub pull_policy: PullPolicy,
    pub default_stop_timeout: Duration,
    pub cleanup_delay: Duration,
    /// What a task may ask of the host; checked before anything is pulled.
    pub policy: crate::policy::Policy,
    /// Check that static host ports are free before creating containers.
    /// Always on in the agent; unit tests with fixed ports turn it off.
    pub check_host_ports: bool,
}

/// What a supervisor tells the manager.
#[derive(Debug)]
pub enum Report {
    /// The task's state changed.
    State(TaskState),
    /// The task is stopped and its containers removed; the supervisor ended.
    Finished(String),
}

#[derive(Debug, Clone)]
pub enum Command {
    Stop { stop_code: String, reason: String },
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    pub async fn stop(&self, stop_code: &str, reason: &str) {
        let _ = self
            .tx
            .send(Command::Stop {
                stop_code: stop_code.to_string(),
                reason: reason.to_string(),
            })
            .await;
    }
}

/// Short task id used in container names.
pub fn short_id(task_id: &str) -> &str {
    task_id.get(..12).unwrap_or(task_id)
}

/// `berth-<family>-<container>-<short task id>`.
pub fn container_name(family: &str, container: &str, task_id: &str) -> String {
    format!("berth-{family}-{container}-{}", short_id(task_id))
}

/// Starts the supervisor of a task. `prior` is the task's last persisted
/// state, when the agent knew it before (agent restart).
/// A task handed to a supervisor.
pub struct Assigned {
    pub task_id: String,
    pub definition: TaskDefinition,
    pub created_at_ms: i64,
    /// The task's last persisted state, when the agent knew it before.
    pub prior: Option<TaskState>,
}

pub fn spawn(
    rt: Arc<dyn Runtime>,
    settings: Settings,
    task: Assigned,
    events: broadcast::Receiver<RuntimeEvent>,
    reports: mpsc::Sender<Report>,
) -> Handle {
    let (tx, rx) = mpsc::channel(16);
    let span = info_span!("task", task_id = %task.task_id, family = %task.definition.family);
    let sup = Supervisor::new(
        rt,
        settings,
        task.task_id,
        task.definition,
        task.created_at_ms,
        task.prior,
        reports,
    );
    tokio::spawn(sup.run(rx, events).instrument(span));
    Handle { tx }
}

struct Container {
    def: ContainerDefinition,
    state: ContainerState,
    /// The engine has been asked to start it at least once.
    started: bool,
    /// Unix ms of the last (re)start, for the restart attempt period.
    last_start_ms: i64,
    /// When this container began waiting for its dependencies.
    waiting_since: Option<tokio::time::Instant>,
    /// `FinishedAt` (unix ms) of the last exit handled: the same exit can
    /// be seen twice (an inspect right after a start, then its `die`
    /// event), and must be acted on once.
    handled_exit_ms: i64,
}

struct Supervisor {
    rt: Arc<dyn Runtime>,
    settings: Settings,
    definition: TaskDefinition,
    state: TaskState,
    containers: Vec<Container>,
    /// Container indexes, dependencies before dependents.
    order: Vec<usize>,
    reports: mpsc::Sender<Report>,
    last_sent: Option<TaskState>,
}

/// Outcome of checking a container's `dependsOn`.
enum Deps {
    Met,
    Wait,
    Failed(String),
}

impl Supervisor {
    fn new(
        rt: Arc<dyn Runtime>,
        settings: Settings,
        task_id: String,
        definition: TaskDefinition,
        created_at_ms: i64,
        prior: Option<TaskState>,
        reports: mpsc::Sender<Report>,
    ) -> Self {
        let prior_containers: BTreeMap<String, ContainerState> = prior
            .as_ref()
            .map(|p| {
                p.containers
                    .iter()
                    .map(|c| (c.name.clone(), c.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let containers = definition
            .container_definitions
            .iter()
            .map(|def| {
                let prior = prior_containers.get(&def.name).cloned();
                let started = prior.as_ref().is_some_and(|p| p.last_status != PENDING);
                let state = prior.unwrap_or_else(|| ContainerState {
                    name: def.name.clone(),
                    image: def.image.clone(),
                    last_status: PENDING.into(),
                    health_status: UNKNOWN.into(),
                    essential: def.is_essential(),
                    ..Default::default()
                });
                Container {
                    def: def.clone(),
                    state,
                    started,
                    last_start_ms: 0,
                    waiting_since: None,
                    handled_exit_ms: 0,
                }
            })
            .collect();
        let state = prior.unwrap_or_else(|| TaskState {
            task_id: task_id.clone(),
            family: definition.family.clone(),
            last_status: PENDING.into(),
            desired_status: RUNNING.into(),
            health_status: UNKNOWN.into(),
            created_at_ms,
            ..Default::default()
        });
        let order = start_order(&definition);
        Self {
            rt,
            settings,
            definition,
            state,
            containers,
            order,
            reports,
            last_sent: None,
        }
    }

    fn task_id(&self) -> &str {
        &self.state.task_id
    }

    /// Sends the current state to the manager if it changed.
    async fn publish(&mut self) {
        self.state.containers = self.containers.iter().map(|c| c.state.clone()).collect();
        self.state.health_status = task_health(self.containers.iter().map(|c| {
            (
                c.state.essential,
                c.def.health_check.is_some(),
                c.state.health_status.as_str(),
            )
        }))
        .into();
        if self.last_sent.as_ref() == Some(&self.state) {
            return;
        }
        self.last_sent = Some(self.state.clone());
        let _ = self.reports.send(Report::State(self.state.clone())).await;
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: broadcast::Receiver<RuntimeEvent>,
    ) {
        self.publish().await;
        if self.state.last_status != STOPPED {
            self.adopt().await;
            if self.state.desired_status == STOPPED {
                let (code, reason) = (
                    self.state.stop_code.clone(),
                    self.state.stopped_reason.clone(),
                );
                self.stop_all(&code, &reason).await;
            } else {
                if self.state.last_status == PENDING {
                    self.prepare().await;
                }
                self.resync().await;
                self.advance().await;
            }
        }
        // Run until stopped.
        while self.state.last_status != STOPPED {
            let wake = self.next_deadline();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Stop { stop_code, reason }) => {
                        self.stop_all(&stop_code, &reason).await;
                    }
                    None => return,
                },
                ev = events.recv() => match ev {
                    Ok(ev) => self.on_event(ev).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "runtime events lagged; re-inspecting containers");
                        self.resync().await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = sleep_until(wake) => {}
            }
            if self.state.last_status != STOPPED {
                self.advance().await;
            }
        }
        // Stopped: keep the containers for the cleanup delay, then remove them.
        let deadline = tokio::time::sleep(self.settings.cleanup_delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                cmd = commands.recv() => if cmd.is_none() { return },
            }
        }
        // The task is forgotten only once nothing of it is left: while the
        // engine is unreachable, wait for it to be back (the next Resync).
        while let Err(e) = self.remove_all().await {
            warn!(error = %e, "cannot clean up the task yet; trying again when the engine is back");
            loop {
                tokio::select! {
                    cmd = commands.recv() => if cmd.is_none() { return },
                    ev = events.recv() => match ev {
                        Ok(RuntimeEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
        info!("task cleaned up");
        let id = self.task_id().to_string();
        let _ = self.reports.send(Report::Finished(id)).await;
    }

    /// Removes the task's containers, then its task-scoped volumes (shared
    /// ones are never berth's to remove). Fails only when the engine is
    /// unreachable; other refusals are logged and passed over.
    async fn remove_all(&mut self) -> Result<(), RuntimeError> {
        for i in 0..self.containers.len() {
            let id = self.containers[i].state.runtime_id.clone();
            if id.is_empty() {
                continue;
            }
            match self.rt.remove(&id).await {
                Ok(()) => {}
                Err(e @ RuntimeError::Unreachable { .. }) => return Err(e),
                Err(e) => {
                    warn!(container = %self.containers[i].def.name, error = %e, "cannot remove container")
                }
            }
        }
        let volumes = crate::volumes::docker_volumes(
            &self.definition,
            &self.state.task_id,
            &self.settings.instance_id,
        );
        for (_, volume) in volumes {
            if volume.scope != crate::runtime::VolumeScope::Task {
                continue;
            }
            match self.rt.remove_volume(&volume.name).await {
                Ok(()) => {}
                Err(e @ RuntimeError::Unreachable { .. }) => return Err(e),
                Err(e) => warn!(volume = %volume.name, error = %e, "cannot remove task volume"),
            }
        }
        Ok(())
    }

    /// The earliest `startTimeout` deadline among waiting containers.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.containers
            .iter()
            .filter(|c| !c.started)
            .filter_map(|c| {
                let since = c.waiting_since?;
                let secs = c.def.start_timeout?;
                Some(since + Duration::from_secs(secs))
            })
            .min()
    }

    fn spec(&self, def: &ContainerDefinition) -> ContainerSpec {
        let mut labels: BTreeMap<String, String> = def.docker_labels.clone();
        labels.insert(LABEL_TASK_ID.into(), self.state.task_id.clone());
        labels.insert(LABEL_CONTAINER_NAME.into(), def.name.clone());
        labels.insert(LABEL_TASK_FAMILY.into(), self.definition.family.clone());
        labels.insert(LABEL_INSTANCE_ID.into(), self.settings.instance_id.clone());
        ContainerSpec {
            name: container_name(&self.definition.family, &def.name, &self.state.task_id),
            labels,
            network_mode: self.definition.network_mode().as_str().into(),
            definition: def.clone(),
            default_stop_timeout: self.settings.default_stop_timeout,
            mounts: crate::volumes::mounts(
                &self.definition,
                def,
                &self.state.task_id,
                &self.settings.instance_id,
            ),
            volumes_from: crate::volumes::volumes_from(&self.definition, def, &self.state.task_id),
            pid_mode: self.definition.pid_mode.clone(),
            ipc_mode: self.definition.ipc_mode.clone(),
        }
    }

    /// Whether `info` is a container of this task made by this agent: both
    /// `berth.task-id` and `berth.instance-id` are ours (another agent on a
    /// shared engine may run a task of the same id, SPEC §2).
    fn is_own(&self, info: &ContainerInfo) -> bool {
        info.labels.get(LABEL_TASK_ID).map(String::as_str) == Some(self.task_id())
            && info.labels.get(LABEL_INSTANCE_ID).map(String::as_str)
                == Some(self.settings.instance_id.as_str())
    }

    /// Finds containers that already exist: by recorded id, else by name;
    /// either only when it carries this task's and this agent's labels.
    async fn adopt(&mut self) {
        for i in 0..self.containers.len() {
            let name = self.spec(&self.containers[i].def).name;
            let recorded = self.containers[i].state.runtime_id.clone();
            let mut found = None;
            if !recorded.is_empty() {
                found = self.rt.inspect(&recorded).await.ok().flatten();
            }
            if found.is_none() {
                found = self.rt.inspect(&name).await.ok().flatten();
            }
            let foreign = found.take_if(|info| !self.is_own(info));
            if let Some(info) = &foreign {
                warn!(container = %self.containers[i].def.name, id = %info.id, "a container of this name or id belongs to another task or agent; not adopted");
            }
            match found {
                None if foreign.is_some() => {
                    // Never ours: forget the id, so nothing here touches it.
                    self.containers[i].state.runtime_id.clear();
                }
                Some(info) => {
                    debug!(container = %self.containers[i].def.name, id = %info.id, "adopted existing container");
                    // Whether it still has to be started is the prior
                    // state's call (PENDING: never started, or the host
                    // rebooted); start_container skips a running one.
                    let c = &mut self.containers[i];
                    c.state.runtime_id = info.id.clone();
                    c.last_start_ms = info.started_at_ms;
                }
                None if !recorded.is_empty() && self.containers[i].state.last_status == RUNNING => {
                    // It ran, and is gone: removed behind the agent's back.
                    // The resync below handles it like an exit.
                }
                None => {
                    self.containers[i].state.runtime_id.clear();
                }
            }
        }
    }

    /// Pulls every image and creates every container that does not exist
    /// yet, so a bad image or a bad setting fails the task before anything
    /// starts.
    async fn prepare(&mut self) {
        info!("preparing task");
        // What the host refuses, before anything is pulled or created.
        if let Err(violation) = crate::policy::check(&self.definition, &self.settings.policy) {
            self.fail_to_start(violation.container, violation.to_string())
                .await;
            return;
        }
        let pending: Vec<usize> = (0..self.containers.len())
            .filter(|&i| self.containers[i].state.runtime_id.is_empty())
            .collect();
        let log_drivers: Vec<(usize, String)> = pending
            .iter()
            .filter_map(|&i| {
                let config = self.containers[i].def.log_configuration.as_ref()?;
                Some((i, config.log_driver.clone()))
            })
            .collect();
        if !log_drivers.is_empty() {
            match self.rt.log_drivers().await {
                Ok(available) => {
                    if let Some((i, driver)) =
                        log_drivers.iter().find(|(_, d)| !available.contains(d))
                    {
                        let reason = format!(
                            "CannotCreateContainerError: log driver {driver} is not available on this docker engine; it has {}",
                            available.join(", ")
                        );
                        self.fail_to_start(*i, reason).await;
                        return;
                    }
                }
                // Docker's create will say it if the driver is missing.
                Err(e) => warn!(error = %e, "cannot list the engine's log drivers"),
            }
        }
        if self.settings.check_host_ports && !pending.is_empty() {
            // Binds and a /proc walk: off the async threads.
            let (def, containers) = (self.definition.clone(), pending.clone());
            match tokio::task::spawn_blocking(move || crate::ports::check_task(&def, &containers))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(in_use)) => {
                    self.fail_to_start(in_use.container, in_use.to_string())
                        .await;
                    return;
                }
                Err(e) => warn!(error = %e, "host port check did not complete"),
            }
        }
        for i in 0..self.containers.len() {
            if !self.containers[i].state.runtime_id.is_empty() {
                continue;
            }
            let image = self.containers[i].def.image.clone();
            if let Err(e) = self
                .rt
                .ensure_image(&image, self.settings.pull_policy)
                .await
            {
                let msg = match e {
                    crate::runtime::RuntimeError::Pull { message, .. } => message,
                    other => other.to_string(),
                };
                self.fail_to_start(
                    i,
                    format!("CannotPullContainerError: pull image {image}: {msg}"),
                )
                .await;
                return;
            }
        }
        crate::failpoint::hit("after-pull");
        let volumes = crate::volumes::docker_volumes(
            &self.definition,
            &self.state.task_id,
            &self.settings.instance_id,
        );
        for (i, mut volume) in volumes {
            volume.foreign_allowed = self
                .settings
                .policy
                .allowed_shared_volumes
                .contains(&volume.name);
            if let Err(e) = self.rt.ensure_volume(&volume).await {
                self.fail_to_start(i, format!("CannotCreateVolumeError: {e}"))
                    .await;
                return;
            }
        }
        for i in 0..self.containers.len() {
            if self.state.desired_status == STOPPED {
                return;
            }
            if !self.containers[i].state.runtime_id.is_empty() {
                continue;
            }
            let spec = self.spec(&self.containers[i].def);
            match self.rt.create(&spec).await {
                Ok(id) => {
                    crate::failpoint::hit("after-create");
                    self.containers[i].state.runtime_id = id;
                    // Record the id before starting, so a crash adopts it.
                    self.publish().await;
                }
                Err(e) => {
                    self.fail_to_start(i, format!("CannotCreateContainerError: {e}"))
                        .await;
                    return;
                }
            }
        }
    }

    /// The host binds of container `idx`, checked on the host right before
    /// the engine (re)starts it (off the async threads: it walks paths).
    async fn check_binds(&self, idx: usize) -> Result<(), crate::policy::PolicyViolation> {
        let (def, policy) = (self.definition.clone(), self.settings.policy.clone());
        if crate::policy::host_binds(&def).is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || {
            crate::policy::check_container_binds(&def, idx, &policy)
        })
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "host path check did not complete");
            crate::policy::check_container_binds(&self.definition, idx, &self.settings.policy)
        })
    }

    async fn fail_to_start(&mut self, idx: usize, reason: String) {
        warn!(container = %self.containers[idx].def.name, %reason, "task failed to start");
        self.containers[idx].state.reason = reason.clone();
        self.containers[idx].state.last_status = STOPPED.into();
        let name = self.containers[idx].def.name.clone();
        self.stop_all(TASK_FAILED_TO_START, &format!("{name}: {reason}"))
            .await;
    }

    /// Checks one container's `dependsOn` against the others' states.
    fn deps(&self, idx: usize) -> Deps {
        let me = &self.containers[idx].def.name;
        let mut result = Deps::Met;
        for d in &self.containers[idx].def.depends_on {
            let Some(dep) = self
                .containers
                .iter()
                .find(|c| c.def.name == d.container_name)
            else {
                return Deps::Failed(format!(
                    "{me} depends on {}, which is not in the task",
                    d.container_name
                ));
            };
            let stopped = dep.state.last_status == STOPPED;
            let code = dep.state.exit_code;
            let met = match d.condition.as_str() {
                "START" => {
                    if dep.started {
                        true
                    } else if stopped {
                        return Deps::Failed(format!(
                            "{me} depends on {} to START, but it stopped without starting",
                            dep.def.name
                        ));
                    } else {
                        false
                    }
                }
                "COMPLETE" => stopped && dep.started,
                "SUCCESS" => {
                    if stopped && dep.started && code == Some(0) {
                        true
                    } else if stopped {
                        return Deps::Failed(format!(
                            "{me} depends on {} to SUCCEED, but it exited with code {}",
                            dep.def.name,
                            code.map(|c| c.to_string())
                                .unwrap_or_else(|| "unknown".into())
                        ));
                    } else {
                        false
                    }
                }
                "HEALTHY" => {
                    if dep.state.health_status == HEALTHY {
                        true
                    } else if stopped {
                        return Deps::Failed(format!(
                            "{me} depends on {} to be HEALTHY, but it stopped",
                            dep.def.name
                        ));
                    } else {
                        false
                    }
                }
                other => {
                    return Deps::Failed(format!(
                        "{me} has an unknown dependency condition {other}"
                    ));
                }
            };
            if !met {
                result = Deps::Wait;
            }
        }
        result
    }

    /// Starts every container whose dependencies are met, fails those whose
    /// dependencies cannot be met any more, and moves the task to RUNNING
    /// once every essential container has started.
    async fn advance(&mut self) {
        let mut progress = true;
        while progress && self.state.desired_status == RUNNING {
            progress = false;
            for pos in 0..self.order.len() {
                let i = self.order[pos];
                if self.containers[i].started
                    || self.containers[i].state.last_status == STOPPED
                    || self.containers[i].state.runtime_id.is_empty()
                {
                    continue;
                }
                match self.deps(i) {
                    Deps::Wait => {
                        let now = tokio::time::Instant::now();
                        let c = &mut self.containers[i];
                        let since = *c.waiting_since.get_or_insert(now);
                        if let Some(secs) = c.def.start_timeout
                            && now >= since + Duration::from_secs(secs)
                        {
                            let reason = format!(
                                "{} timed out after {secs}s waiting for its dependencies ({})",
                                c.def.name,
                                c.def
                                    .depends_on
                                    .iter()
                                    .map(|d| format!("{} {}", d.container_name, d.condition))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                            self.dependency_failed(i, reason).await;
                            progress = true;
                        }
                    }
                    Deps::Failed(reason) => {
                        self.dependency_failed(i, reason).await;
                        progress = true;
                    }
                    Deps::Met => {
                        self.start_container(i).await;
                        progress = true;
                    }
                }
                if self.state.desired_status != RUNNING {
                    return;
                }
            }
        }
        let all_essential_started = self
            .containers
            .iter()
            .filter(|c| c.state.essential)
            .all(|c| c.started);
        if self.state.last_status == PENDING
            && self.state.desired_status == RUNNING
            && all_essential_started
        {
            self.state.last_status = RUNNING.into();
            self.state.started_at_ms = berth_proto::now_ms();
            info!("task running");
        }
        self.publish().await;
    }

    async fn dependency_failed(&mut self, idx: usize, reason: String) {
        warn!(container = %self.containers[idx].def.name, %reason, "dependency failed");
        let c = &mut self.containers[idx];
        c.state.last_status = STOPPED.into();
        c.state.reason = format!("DependencyConditionFailed: {reason}");
        if c.state.essential {
            self.stop_all(TASK_FAILED_TO_START, &reason).await;
        } else {
            self.publish().await;
        }
    }

    async fn start_container(&mut self, i: usize) {
        let id = self.containers[i].state.runtime_id.clone();
        let name = self.containers[i].def.name.clone();
        let running = self
            .rt
            .inspect(&id)
            .await
            .ok()
            .flatten()
            .is_some_and(|info| info.state == RunState::Running);
        // Already running (adopted after a crash between start and record).
        if running {
            debug!(container = %name, "container already running");
        } else if let Err(violation) = self.check_binds(i).await {
            self.fail_to_start(i, violation.to_string()).await;
            return;
        } else if let Err(e) = self.rt.start(&id).await {
            self.fail_to_start(i, format!("CannotStartContainerError: {e}"))
                .await;
            return;
        }
        crate::failpoint::hit("after-start");
        debug!(container = %name, "container started");
        let info = self.rt.inspect(&id).await.ok().flatten();
        {
            let c = &mut self.containers[i];
            c.started = true;
            c.waiting_since = None;
            c.state.last_status = RUNNING.into();
            c.last_start_ms = info
                .as_ref()
                .map(|i| i.started_at_ms)
                .filter(|ms| *ms > 0)
                .unwrap_or_else(berth_proto::now_ms);
        }
        self.apply_info(i, info.as_ref());
        self.publish().await;
        if let Some(info) = &info
            && info.state == RunState::Exited
            && self.first_sight_of_exit(i, info)
        {
            // It ended before we looked: handled like the event.
            self.on_exit(i, info.exit_code).await;
        }
    }

    /// Whether `info` (an exited container) shows an exit not handled yet;
    /// records it as handled.
    fn first_sight_of_exit(&mut self, idx: usize, info: &ContainerInfo) -> bool {
        let c = &mut self.containers[idx];
        if info.finished_at_ms != 0 && info.finished_at_ms <= c.handled_exit_ms {
            return false;
        }
        c.handled_exit_ms = info.finished_at_ms;
        true
    }

    /// A `die` event: acted on only if the container is still down and this
    /// exit was not handled already (the event may be older than a restart).
    async fn on_died(&mut self, idx: usize, event_exit_code: Option<i64>) {
        match self
            .rt
            .inspect(&self.containers[idx].state.runtime_id)
            .await
        {
            Ok(Some(info)) if info.state == RunState::Running => {
                debug!(container = %self.containers[idx].def.name, "stale die event: the container runs again");
            }
            Ok(Some(info)) if info.state == RunState::Exited => {
                if self.first_sight_of_exit(idx, &info) {
                    self.on_exit(idx, info.exit_code.or(event_exit_code)).await;
                }
            }
            // The engine is going away (its containers die with it): the
            // resync after it is back sees the exit and handles it once.
            Err(RuntimeError::Unreachable { .. }) => {
                debug!(container = %self.containers[idx].def.name, "die event while the engine is unreachable; handled at the next resync");
            }
            _ => self.on_exit(idx, event_exit_code).await,
        }
    }

    fn apply_info(&mut self, idx: usize, info: Option<&ContainerInfo>) {
        let Some(info) = info else { return };
        let host_mode = self.definition.network_mode() == berth_taskdef::NetworkMode::Host;
        let host_bindings: Vec<NetworkBinding> = if host_mode {
            host_bindings(&self.containers[idx].def)
        } else {
            Vec::new()
        };
        let c = &mut self.containers[idx].state;
        if !info.image_digest.is_empty() {
            // ECS reports the manifest digest alone: `sha256:…`.
            let digest = info.image_digest.as_str();
            c.image_digest = digest
                .rsplit_once('@')
                .map_or(digest, |(_, d)| d)
                .to_string();
        }
        if host_mode {
            // Docker reports no bindings in host mode: the ports are the
            // definition's own.
            c.network_bindings = host_bindings;
        } else if info.state == RunState::Running || !info.ports.is_empty() {
            // Docker lists a dynamic port once per address family; ECS
            // reports one binding per mapping.
            let mut bindings: Vec<NetworkBinding> = Vec::new();
            for p in &info.ports {
                let b = NetworkBinding {
                    container_port: p.container_port.into(),
                    host_port: p.host_port.into(),
                    protocol: p.protocol.clone(),
                    bind_ip: p.host_ip.clone(),
                };
                if !bindings.iter().any(|x| {
                    x.container_port == b.container_port
                        && x.host_port == b.host_port
                        && x.protocol == b.protocol
                }) {
                    bindings.push(b);
                }
            }
            c.network_bindings = bindings;
        }
        if let Some(h) = info.health {
            c.health_status = health_str(h).into();
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.containers
            .iter()
            .position(|c| !c.state.runtime_id.is_empty() && c.state.runtime_id == id)
    }

    async fn on_event(&mut self, ev: RuntimeEvent) {
        match ev {
            RuntimeEvent::Resync => self.resync().await,
            RuntimeEvent::Started { id } => {
                // Every start is the supervisor's own call and recorded when
                // it returns; the event arrives later and may be older than
                // an exit already handled, so it changes nothing. A container
                // started by hand after berth recorded it stopped stays
                // stopped for berth.
                if let Some(i) = self.index_of(&id) {
                    debug!(container = %self.containers[i].def.name, "start event");
                }
            }
            RuntimeEvent::Died { id, exit_code } => {
                if let Some(i) = self.index_of(&id) {
                    self.on_died(i, exit_code).await;
                }
            }
            RuntimeEvent::Health { id, health } => {
                if let Some(i) = self.index_of(&id) {
                    self.containers[i].state.health_status = health_str(health).into();
                    self.publish().await;
                }
            }
            RuntimeEvent::Destroyed { id } => {
                if let Some(i) = self.index_of(&id)
                    && self.containers[i].state.last_status != STOPPED
                {
                    self.containers[i].state.reason = "container removed outside berth".into();
                    self.containers[i].state.runtime_id.clear();
                    self.on_exit(i, None).await;
                }
            }
        }
    }

    /// Re-inspects every started container and handles exits that were
    /// missed (agent restart, lost event stream).
    async fn resync(&mut self) {
        for i in 0..self.containers.len() {
            let id = self.containers[i].state.runtime_id.clone();
            if self.containers[i].state.last_status == STOPPED || !self.containers[i].started {
                continue;
            }
            if id.is_empty() {
                self.containers[i].state.reason =
                    "container vanished while the agent was not watching".into();
                self.on_exit(i, None).await;
                continue;
            }
            match self.rt.inspect(&id).await {
                Ok(Some(info)) => {
                    self.apply_info(i, Some(&info));
                    match info.state {
                        RunState::Exited if self.first_sight_of_exit(i, &info) => {
                            self.on_exit(i, info.exit_code).await;
                        }
                        RunState::Running if self.containers[i].state.last_status != RUNNING => {
                            self.containers[i].state.last_status = RUNNING.into();
                        }
                        _ => {}
                    }
                }
                Ok(None) => {
                    self.containers[i].state.reason =
                        "container vanished while the agent was not watching".into();
                    self.containers[i].state.runtime_id.clear();
                    self.on_exit(i, None).await;
                }
                Err(e) => warn!(error = %e, "cannot inspect container during resync"),
            }
        }
        self.publish().await;
    }

    /// Whether the restart policy restarts a container that exited with
    /// `exit_code` now.
    fn should_restart(&self, idx: usize, exit_code: Option<i64>) -> bool {
        let c = &self.containers[idx];
        let Some(policy) = &c.def.restart_policy else {
            return false;
        };
        if !policy.enabled || self.state.desired_status != RUNNING || c.state.runtime_id.is_empty()
        {
            return false;
        }
        if let Some(code) = exit_code
            && policy.ignored_exit_codes.contains(&code)
        {
            return false;
        }
        let period_ms = policy.restart_attempt_period.unwrap_or(300) as i64 * 1000;
        let ran_ms = berth_proto::now_ms() - c.last_start_ms;
        ran_ms >= period_ms
    }

    /// A container's process ended.
    async fn on_exit(&mut self, idx: usize, exit_code: Option<i64>) {
        if self.containers[idx].state.last_status == STOPPED {
            return;
        }
        let name = self.containers[idx].def.name.clone();
        if self.should_restart(idx, exit_code) {
            let id = self.containers[idx].state.runtime_id.clone();
            info!(container = %name, exit_code = ?exit_code, "restarting container in place");
            // Never twice within one second, whatever the attempt period.
            let ran_ms = berth_proto::now_ms() - self.containers[idx].last_start_ms;
            if ran_ms < 1000 {
                tokio::time::sleep(Duration::from_millis((1000 - ran_ms).max(0) as u64)).await;
            }
            if let Err(violation) = self.check_binds(idx).await {
                // Docker would resolve the host paths again: a path that
                // changed under the task is never mounted.
                let reason = format!("{name}: not restarted: {violation}");
                warn!(container = %name, %reason, "restart refused by the agent policy");
                let c = &mut self.containers[idx].state;
                c.last_status = STOPPED.into();
                c.exit_code = exit_code.map(|c| c as i32);
                c.reason = violation.to_string();
                self.publish().await;
                self.stop_all(ESSENTIAL_CONTAINER_EXITED, &reason).await;
                return;
            }
            match self.rt.start(&id).await {
                Ok(()) => {
                    self.containers[idx].state.exit_code = exit_code.map(|c| c as i32);
                    self.containers[idx].state.restart_count += 1;
                    let info = self.rt.inspect(&id).await.ok().flatten();
                    self.containers[idx].last_start_ms = info
                        .as_ref()
                        .map(|i| i.started_at_ms)
                        .filter(|ms| *ms > 0)
                        .unwrap_or_else(berth_proto::now_ms);
                    self.containers[idx].state.last_status = RUNNING.into();
                    self.apply_info(idx, info.as_ref());
                    self.publish().await;
                    if let Some(info) = info
                        && info.state == RunState::Exited
                        && self.first_sight_of_exit(idx, &info)
                    {
                        Box::pin(self.on_exit(idx, info.exit_code)).await;
                    }
                    return;
                }
                Err(RuntimeError::Unreachable { .. }) => {
                    // Forget this exit: the resync after the engine is back
                    // sees the container exited and restarts it then.
                    warn!(container = %name, "engine unreachable; restarting when it is back");
                    self.containers[idx].handled_exit_ms = 0;
                    return;
                }
                Err(e) => {
                    warn!(container = %name, error = %e, "restart failed");
                    self.containers[idx].state.reason = format!("restart failed: {e}");
                }
            }
        }
        {
            let c = &mut self.containers[idx].state;
            c.last_status = STOPPED.into();
            c.exit_code = exit_code.map(|c| c as i32);
        }
        info!(container = %name, exit_code = ?exit_code, "container exited");
        self.publish().await;
        if self.state.desired_status == RUNNING && self.containers[idx].state.essential {
            let reason = exit_reason(&name, exit_code);
            self.stop_all(ESSENTIAL_CONTAINER_EXITED, &reason).await;
        }
    }

    /// Stops every container — dependents before their dependencies — and
    /// the task.
    async fn stop_all(&mut self, stop_code: &str, reason: &str) {
        if self.state.last_status == STOPPED {
            return;
        }
        if self.state.desired_status != STOPPED || self.state.stop_code.is_empty() {
            self.state.desired_status = STOPPED.into();
            self.state.stop_code = stop_code.into();
            self.state.stopped_reason = reason.into();
        }
        info!(stop_code, reason, "stopping task");
        self.publish().await;
        crate::failpoint::hit("before-stop");
        for pos in (0..self.order.len()).rev() {
            let i = self.order[pos];
            let id = self.containers[i].state.runtime_id.clone();
            if id.is_empty() {
                self.containers[i].state.last_status = STOPPED.into();
                continue;
            }
            if self.containers[i].state.last_status != STOPPED {
                let timeout = self.containers[i]
                    .def
                    .stop_timeout()
                    .unwrap_or(self.settings.default_stop_timeout);
                if let Err(e) = self.rt.stop(&id, timeout).await {
                    warn!(container = %self.containers[i].def.name, error = %e, "cannot stop container");
                }
                let info = self.rt.inspect(&id).await.ok().flatten();
                let c = &mut self.containers[i].state;
                c.last_status = STOPPED.into();
                if let Some(info) = info {
                    c.exit_code = info.exit_code.map(|c| c as i32);
                }
                self.publish().await;
            }
        }
        self.state.last_status = STOPPED.into();
        self.state.stopped_at_ms = berth_proto::now_ms();
        info!("task stopped");
        self.publish().await;
    }
}

fn host_bindings(def: &ContainerDefinition) -> Vec<NetworkBinding> {
    def.port_mappings
        .iter()
        .filter_map(|m| {
            let port = m.container_port?;
            Some(NetworkBinding {
                container_port: port.into(),
                host_port: m.host_port.filter(|p| *p != 0).unwrap_or(port).into(),
                protocol: m.protocol.clone().unwrap_or_else(|| "tcp".into()),
                bind_ip: "0.0.0.0".into(),
            })
        })
        .collect()
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Container indexes with every container after the ones it depends on
/// (definition order otherwise). Validation rejects cycles; should one slip
/// through, the remaining containers keep definition order.
pub fn start_order(def: &TaskDefinition) -> Vec<usize> {
    let names: Vec<&str> = def
        .container_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let mut placed = vec![false; names.len()];
    let mut order = Vec::with_capacity(names.len());
    while order.len() < names.len() {
        let before = order.len();
        for (i, c) in def.container_definitions.iter().enumerate() {
            if placed[i] {
                continue;
            }
            let ready = c.depends_on.iter().all(|d| {
                names
                    .iter()
                    .position(|n| *n == d.container_name)
                    .is_none_or(|j| placed[j])
            });
            if ready {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            order.extend((0..names.len()).filter(|i| !placed[*i]));
            break;
        }
    }
    order
}

fn exit_reason(name: &str, code: Option<i64>) -> String {
    match code {
        Some(code) => format!("Essential container in task exited: {name} exited with code {code}"),
        None => format!("Essential container in task exited: {name} is gone"),
    }
}

fn health_str(h: Health) -> &'static str {
    match h {
        Health::Healthy => HEALTHY,
        Health::Unhealthy => UNHEALTHY,
        Health::Starting => UNKNOWN,
    }
}

/// Task health (SPEC §3): UNHEALTHY if any essential container is unhealthy,
/// HEALTHY if every essential container with a check is healthy (and there is
/// at least one), else UNKNOWN. Items: (essential, has a check, health).
pub fn task_health<'a>(containers: impl Iterator<Item = (bool, bool, &'a str)>) -> &'static str {
    let mut checked = 0;
    let mut healthy = 0;
    for (essential, has_check, health) in containers {
        if !essential {
            continue;
        }
        if health == UNHEALTHY {
            return UNHEALTHY;
        }
        if has_check {
            checked += 1;
            if health == HEALTHY {
                healthy += 1;
            }
        }
    }
    if checked > 0 && healthy == checked {
        HEALTHY
    } else {
        UNKNOWN
    }
}

/// A supervisor spawned against the fake runtime, and the reports it sends:
/// the one way the test modules below run a supervisor.
#[cfg(test)]
mod harness {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    pub(super) fn settings(check_host_ports: bool) -> Settings {
        Settings {
            instance_id: "i-test".into(),
            pull_policy: PullPolicy::Default,
            default_stop_timeout: Duration::from_secs(1),
            cleanup_delay: Duration::ZERO,
            policy: crate::policy::Policy::default(),
            check_host_ports,
        }
    }

    pub(super) struct Harness {
        pub(super) rt: FakeRuntime,
        pub(super) handle: Handle,
        reports: mpsc::Receiver<Report>,
        last: Option<TaskState>,
    }

    impl Harness {
        /// Spawns a supervisor for `definition` on `rt`, resuming from
        /// `prior`, with the fake's events forwarded like the manager does.
        pub(super) fn start(
            rt: &FakeRuntime,
            settings: Settings,
            definition: TaskDefinition,
            prior: Option<TaskState>,
        ) -> Self {
            let (tx, reports) = mpsc::channel(256);
            let (events_tx, events) = broadcast::channel(256);
            let mut stream = rt.events(&settings.instance_id);
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(ev) = stream.next().await {
                    let _ = events_tx.send(ev);
                }
            });
            let handle = spawn(
                Arc::new(rt.clone()),
                settings,
                Assigned {
                    task_id: "0123456789abcdef0123456789abcdef".into(),
                    definition,
                    created_at_ms: 1,
                    prior,
                },
                events,
                tx,
            );
            Self {
                rt: rt.clone(),
                handle,
                reports,
                last: None,
            }
        }

        /// Waits (with a deadline) for a state that satisfies `f`.
        pub(super) async fn until(
            &mut self,
            what: &str,
            f: impl Fn(&TaskState) -> bool,
        ) -> TaskState {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(st) = &self.last
                    && f(st)
                {
                    return st.clone();
                }
                match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                    Ok(Some(Report::State(st))) => self.last = Some(st),
                    Ok(Some(Report::Finished(_))) => {
                        panic!("supervisor finished before {what}; last {:?}", self.last)
                    }
                    Ok(None) | Err(_) => panic!("no state with {what}; last {:?}", self.last),
                }
            }
        }

        /// The first state with `status`, within a deadline.
        pub(super) async fn until_status(&mut self, status: &str) -> TaskState {
            self.until(status, |s| s.last_status == status).await
        }

        /// Waits (with a deadline) for the supervisor to finish.
        pub(super) async fn finished(&mut self) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                    Ok(Some(Report::Finished(_))) => return,
                    Ok(Some(Report::State(st))) => self.last = Some(st),
                    _ => panic!("supervisor did not finish; last {:?}", self.last),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::harness::{Harness, settings};
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use berth_taskdef::ContainerDefinition;

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
        h.until("RUNNING", |s| s.last_status == RUNNING).await;
        let init = h.rt.id_of("init").expect("init created");
        h.rt.exit(&init, 0);
        let st = h
            .until("init stopped", |s| {
                container(s, "init").last_status == STOPPED
            })
            .await;
        assert_eq!(st.last_status, RUNNING);
        assert_eq!(container(&st, "init").exit_code, Some(0));
        h.handle.stop(USER_INITIATED, "Task stopped by user").await;
        let st = h.until("STOPPED", |s| s.last_status == STOPPED).await;
        assert_eq!(st.stop_code, USER_INITIATED);
        assert!(st.containers.iter().all(|c| c.last_status == STOPPED));
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
        h.until("RUNNING", |s| s.last_status == RUNNING).await;
        let app = h.rt.id_of("app").expect("app created");
        h.rt.exit(&app, 3);
        let st = h.until("STOPPED", |s| s.last_status == STOPPED).await;
        assert_eq!(st.stop_code, ESSENTIAL_CONTAINER_EXITED);
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
        let st = h.until("STOPPED", |s| s.last_status == STOPPED).await;
        assert_eq!(st.stop_code, TASK_FAILED_TO_START);
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
        let running = first.until("RUNNING", |s| s.last_status == RUNNING).await;
        let rt = first.rt.clone();
        drop(first);
        let calls_before = rt.calls().len();
        let mut second = Harness::start(&rt, settings(false), def(), Some(running.clone()));
        // The init container exits while the new supervisor watches.
        let init = rt.id_of("init").expect("init");
        rt.exit(&init, 0);
        let st = second
            .until("init stopped", |s| {
                container(s, "init").last_status == STOPPED
            })
            .await;
        assert_eq!(st.last_status, RUNNING);
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
        let running = other.until("RUNNING", |s| s.last_status == RUNNING).await;
        let app = rt.id_of("app").expect("app");
        let calls_before = rt.calls().len();

        // This agent is handed the same task id, by name and by recorded id.
        for prior in [None, Some(running)] {
            let mut mine = Harness::start(&rt, settings(false), def(), prior);
            let st = mine.until_status(STOPPED).await;
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
            .filter(|c| {
                c.starts_with("start ") || c.starts_with("stop ") || c.starts_with("remove ")
            })
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

    #[test]
    fn task_health_rules() {
        assert_eq!(
            task_health([(true, true, HEALTHY), (false, true, UNHEALTHY)].into_iter()),
            HEALTHY
        );
        assert_eq!(
            task_health([(true, true, HEALTHY), (true, true, UNHEALTHY)].into_iter()),
            UNHEALTHY
        );
        assert_eq!(
            task_health([(true, true, HEALTHY), (true, true, UNKNOWN)].into_iter()),
            UNKNOWN
        );
        assert_eq!(task_health([(true, false, UNKNOWN)].into_iter()), UNKNOWN);
    }

    #[test]
    fn container_names_follow_the_spec() {
        assert_eq!(
            container_name("web", "app", "0123456789abcdef0123"),
            "berth-web-app-0123456789ab"
        );
    }
}

#[cfg(test)]
mod dependency_tests {
    use super::*;
    use berth_taskdef::{ContainerDefinition, ContainerDependency};

    fn c(name: &str, deps: &[(&str, &str)]) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: "img".into(),
            memory: Some(8),
            depends_on: deps
                .iter()
                .map(|(n, cond)| ContainerDependency {
                    container_name: (*n).into(),
                    condition: (*cond).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn dependencies_start_first() {
        let def = TaskDefinition {
            family: "f".into(),
            container_definitions: vec![
                c("app", &[("db", "HEALTHY"), ("migrate", "SUCCESS")]),
                c("migrate", &[("db", "START")]),
                c("db", &[]),
            ],
            ..Default::default()
        };
        assert_eq!(start_order(&def), vec![2, 1, 0]);
    }

    #[test]
    fn a_cycle_keeps_definition_order_for_the_rest() {
        let def = TaskDefinition {
            family: "f".into(),
            container_definitions: vec![c("a", &[("b", "START")]), c("b", &[("a", "START")])],
            ..Default::default()
        };
        assert_eq!(start_order(&def), vec![0, 1]);
    }
}

/// `prepare()`'s refusals (policy, log driver, host ports) and the task's
/// volumes, against the fake runtime.
#[cfg(test)]
mod prepare_tests {
    use super::harness::{Harness, settings};
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{Mount, MountSource, VolumeScope, VolumeSpec};
    use berth_taskdef::{
        DockerVolumeConfiguration, HostVolume, LogConfiguration, MountPoint, PortMapping, Volume,
        VolumeFrom,
    };

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: format!("img/{name}"),
            memory: Some(16),
            ..Default::default()
        }
    }

    fn task(containers: Vec<ContainerDefinition>) -> TaskDefinition {
        TaskDefinition {
            family: "web".into(),
            container_definitions: containers,
            ..Default::default()
        }
    }

    /// A supervisor for a new task (no prior state).
    fn run(rt: &FakeRuntime, settings: Settings, def: TaskDefinition) -> Harness {
        Harness::start(rt, settings, def, None)
    }

    fn nothing_pulled_or_created(rt: &FakeRuntime) {
        let calls = rt.calls();
        assert!(
            !calls.iter().any(|c| c.starts_with("pull")
                || c.starts_with("create")
                || c.starts_with("volume")),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn a_policy_violation_fails_the_task_before_anything_is_pulled() {
        let mut app = container("app");
        app.privileged = Some(true);
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(false), task(vec![container("init"), app]));
        let st = r.until_status(STOPPED).await;
        assert_eq!(st.stop_code, TASK_FAILED_TO_START);
        for part in [
            "app:",
            "allow_privileged",
            "containerDefinitions[1].privileged",
        ] {
            assert!(
                st.stopped_reason.contains(part),
                "{part}: {}",
                st.stopped_reason
            );
        }
        let app = st.containers.iter().find(|c| c.name == "app").expect("app");
        assert!(app.reason.contains("allow_privileged"), "{}", app.reason);
        nothing_pulled_or_created(&rt);
    }

    #[tokio::test]
    async fn a_missing_log_driver_is_refused_with_the_list() {
        let mut app = container("app");
        app.log_configuration = Some(LogConfiguration {
            log_driver: "fluentd".into(),
            ..Default::default()
        });
        let rt = FakeRuntime::new();
        rt.set_log_drivers(&["json-file", "none"]);
        let mut s = settings(false);
        s.policy.allowed_log_drivers.push("fluentd".into());
        let mut r = run(&rt, s, task(vec![app]));
        let st = r.until_status(STOPPED).await;
        assert_eq!(st.stop_code, TASK_FAILED_TO_START);
        assert!(
            st.stopped_reason.contains(
                "log driver fluentd is not available on this docker engine; it has json-file, none"
            ),
            "{}",
            st.stopped_reason
        );
        nothing_pulled_or_created(&rt);
    }

    #[tokio::test]
    async fn an_available_log_driver_runs() {
        let mut app = container("app");
        app.log_configuration = Some(LogConfiguration {
            log_driver: "json-file".into(),
            ..Default::default()
        });
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(false), task(vec![app]));
        r.until_status(RUNNING).await;
    }

    #[tokio::test]
    async fn a_taken_host_port_fails_the_task_naming_the_holder() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let mut app = container("app");
        app.port_mappings = vec![PortMapping {
            container_port: Some(80),
            host_port: Some(port),
            ..Default::default()
        }];
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(true), task(vec![container("init"), app]));
        let st = r.until_status(STOPPED).await;
        assert_eq!(st.stop_code, TASK_FAILED_TO_START);
        let expected = format!(
            "app: host port {port}/tcp is already in use by {} (pid {})",
            std::fs::read_to_string("/proc/self/comm")?.trim_end(),
            std::process::id()
        );
        assert_eq!(st.stopped_reason, expected);
        nothing_pulled_or_created(&rt);
        drop(listener);
        Ok(())
    }

    /// Settings whose policy allows host paths under `dir` (an existing
    /// `dir/site` included).
    fn allowing(dir: &std::path::Path) -> Settings {
        let mut s = settings(false);
        s.policy.allowed_host_paths = vec![dir.to_path_buf()];
        s
    }

    fn volume_task_in(dir: &std::path::Path) -> TaskDefinition {
        let mut def = volume_task();
        def.volumes[1].host = Some(HostVolume {
            source_path: Some(format!("{}/site", dir.display())),
        });
        def
    }

    fn volume_task() -> TaskDefinition {
        let mount = |volume: &str, path: &str, read_only: bool| MountPoint {
            source_volume: volume.into(),
            container_path: path.into(),
            read_only: Some(read_only),
        };
        let mut writer = container("writer");
        writer.mount_points = vec![
            mount("scratch", "/scratch", false),
            mount("site", "/site", true),
            mount("db", "/db", false),
        ];
        let mut reader = container("reader");
        reader.volumes_from = vec![VolumeFrom {
            source_container: "writer".into(),
            read_only: Some(true),
        }];
        let mut def = task(vec![writer, reader]);
        def.pid_mode = Some("host".into());
        def.volumes = vec![
            Volume {
                name: "scratch".into(),
                ..Default::default()
            },
            Volume {
                name: "site".into(),
                host: Some(HostVolume {
                    source_path: Some("/srv/site".into()),
                }),
                ..Default::default()
            },
            Volume {
                name: "db".into(),
                docker_volume_configuration: Some(DockerVolumeConfiguration {
                    scope: Some("shared".into()),
                    autoprovision: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        def
    }

    #[tokio::test]
    async fn volumes_are_created_before_containers_and_task_ones_removed_after()
    -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("site"))?;
        let site = format!("{}/site", dir.path().display());
        let rt = FakeRuntime::new();
        let mut s = allowing(dir.path());
        s.policy.allow_host_pid_ipc = true;
        let mut r = run(&rt, s, volume_task_in(dir.path()));
        r.until_status(RUNNING).await;

        let scratch = "berth-web-scratch-0123456789ab";
        let volumes = rt.volumes();
        assert_eq!(
            volumes.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![scratch, "db"]
        );
        assert_eq!(
            volumes.get(scratch).map(|v| v.scope),
            Some(VolumeScope::Task)
        );
        let calls = rt.calls();
        let last_volume = calls.iter().rposition(|c| c.starts_with("volume"));
        let first_create = calls.iter().position(|c| c.starts_with("create"));
        assert!(last_volume < first_create, "{calls:?}");

        let writer = rt.spec(&rt.id_of("writer").expect("writer")).expect("spec");
        assert_eq!(
            writer.mounts,
            vec![
                Mount {
                    source: MountSource::Volume(scratch.into()),
                    target: "/scratch".into(),
                    read_only: false,
                },
                Mount {
                    source: MountSource::Bind(site.clone()),
                    target: "/site".into(),
                    read_only: true,
                },
                Mount {
                    source: MountSource::Volume("db".into()),
                    target: "/db".into(),
                    read_only: false,
                },
            ]
        );
        assert_eq!(writer.pid_mode.as_deref(), Some("host"));
        let reader = rt.spec(&rt.id_of("reader").expect("reader")).expect("spec");
        assert_eq!(
            reader.volumes_from,
            vec![("berth-web-writer-0123456789ab".to_owned(), true)]
        );

        r.handle.stop(USER_INITIATED, "Task stopped by user").await;
        r.finished().await;
        let left: Vec<String> = rt.volumes().into_keys().collect();
        assert_eq!(left, vec!["db".to_owned()], "the shared volume stays");
        let calls = rt.calls();
        let removed_volume = calls
            .iter()
            .position(|c| c == &format!("remove volume {scratch}"));
        let last_container_removal = calls
            .iter()
            .rposition(|c| c.starts_with("remove ") && !c.starts_with("remove volume"));
        assert!(removed_volume > last_container_removal, "{calls:?}");
        let db = rt.volumes().get("db").map(|v| v.labels.clone());
        assert_eq!(
            db.and_then(|l| l.get(crate::runtime::LABEL_SHARED).cloned())
                .as_deref(),
            Some("1"),
            "an autoprovisioned shared volume is marked as berth's"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_shared_volume_without_autoprovision_fails_the_task() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("site"))?;
        let settings = |_| allowing(dir.path());
        let mut def = volume_task_in(dir.path());
        def.pid_mode = None;
        if let Some(config) = def.volumes[2].docker_volume_configuration.as_mut() {
            config.autoprovision = Some(false);
        }
        // Fails to start with a reason holding `needles`; nothing created.
        async fn refused(rt: &FakeRuntime, s: Settings, def: TaskDefinition, needles: &[&str]) {
            let mut r = run(rt, s, def);
            let st = r.until_status(STOPPED).await;
            assert_eq!(st.stop_code, TASK_FAILED_TO_START);
            for needle in needles {
                assert!(st.stopped_reason.contains(needle), "{}", st.stopped_reason);
            }
            assert!(!rt.calls().iter().any(|c| c.starts_with("create")));
        }
        /// An engine where the shared volume `db` exists with `labels`.
        fn with_db(labels: &[(&str, &str)]) -> FakeRuntime {
            let rt = FakeRuntime::new();
            rt.add_volume(VolumeSpec {
                name: "db".into(),
                scope: VolumeScope::Shared,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            });
            rt
        }
        let missing = "writer: CannotCreateVolumeError: shared volume db does not exist";
        refused(
            &FakeRuntime::new(),
            settings(false),
            def.clone(),
            &[missing],
        )
        .await;

        // Once the operator has created it, it is still not berth's: refused
        // until the policy names it.
        let foreign = ["berth did not create it", "allowed_shared_volumes"];
        refused(&with_db(&[]), settings(false), def.clone(), &foreign).await;
        let mut s = settings(false);
        s.policy.allowed_shared_volumes = vec!["db".into()];
        run(&with_db(&[]), s, def.clone())
            .until_status(RUNNING)
            .await;

        // One berth created (labelled) is used as it is.
        let rt = with_db(&[(crate::runtime::LABEL_SHARED, "1")]);
        run(&rt, settings(false), def).until_status(RUNNING).await;
        Ok(())
    }

    #[tokio::test]
    async fn a_link_swapped_in_before_a_restart_stops_the_task_unrestarted() -> std::io::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let (allowed, data) = (dir.path().join("allowed"), dir.path().join("data"));
        std::fs::create_dir_all(allowed.join("flip"))?;
        std::fs::create_dir(&data)?;
        let mut s = allowing(&allowed);
        s.policy.protected_host_paths = vec![data.clone()];
        let mut app = container("app");
        app.restart_policy = Some(berth_taskdef::RestartPolicy {
            enabled: true,
            ignored_exit_codes: Vec::new(),
            restart_attempt_period: Some(0),
        });
        app.mount_points = vec![MountPoint {
            source_volume: "flip".into(),
            container_path: "/h".into(),
            read_only: Some(true),
        }];
        let mut def = task(vec![app]);
        def.volumes = vec![Volume {
            name: "flip".into(),
            host: Some(HostVolume {
                source_path: Some(format!("{}/flip", allowed.display())),
            }),
            ..Default::default()
        }];
        let rt = FakeRuntime::new();
        let mut r = run(&rt, s, def);
        r.until_status(RUNNING).await;
        let id = rt.id_of("app").expect("app");
        // The checked start, then one restart while the link is a directory.
        rt.exit(&id, 1);
        r.until("a restart", |s| s.containers[0].restart_count == 1)
            .await;

        std::fs::remove_dir(allowed.join("flip"))?;
        std::os::unix::fs::symlink(&data, allowed.join("flip"))?;
        rt.exit(&id, 1);
        let st = r.until_status(STOPPED).await;
        assert_eq!(st.stop_code, ESSENTIAL_CONTAINER_EXITED);
        for part in [
            "not restarted",
            "allowed_host_paths",
            "symbolic link",
            "/flip",
        ] {
            assert!(
                st.stopped_reason.contains(part),
                "{part}: {}",
                st.stopped_reason
            );
        }
        let starts = rt
            .calls()
            .iter()
            .filter(|c| c.as_str() == "start app")
            .count();
        assert_eq!(starts, 2, "not started again: {:?}", rt.calls());
        Ok(())
    }

    #[tokio::test]
    async fn a_bind_missing_at_the_first_start_fails_the_task() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut def = volume_task_in(dir.path());
        def.pid_mode = None;
        let rt = FakeRuntime::new();
        let mut r = run(&rt, allowing(dir.path()), def);
        let st = r.until_status(STOPPED).await;
        assert_eq!(st.stop_code, TASK_FAILED_TO_START);
        assert!(
            st.stopped_reason.contains("does not exist")
                && st.stopped_reason.contains("allowed_host_paths"),
            "{}",
            st.stopped_reason
        );
        assert!(!dir.path().join("site").exists(), "never created");
        nothing_pulled_or_created(&rt);
        Ok(())
    }
}
