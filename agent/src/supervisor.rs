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
    LABEL_TASK_FAMILY, LABEL_TASK_ID, PullPolicy, RunState, Runtime, RuntimeEvent,
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
pub fn spawn(
    rt: Arc<dyn Runtime>,
    settings: Settings,
    task_id: String,
    definition: TaskDefinition,
    created_at_ms: i64,
    prior: Option<TaskState>,
    events: broadcast::Receiver<RuntimeEvent>,
    reports: mpsc::Sender<Report>,
) -> Handle {
    let (tx, rx) = mpsc::channel(16);
    let span = info_span!("task", task_id = %task_id, family = %definition.family);
    let sup = Supervisor::new(rt, settings, task_id, definition, created_at_ms, prior, reports);
    tokio::spawn(sup.run(rx, events).instrument(span));
    Handle { tx }
}

struct Container {
    def: ContainerDefinition,
    state: ContainerState,
}

struct Supervisor {
    rt: Arc<dyn Runtime>,
    settings: Settings,
    definition: TaskDefinition,
    state: TaskState,
    containers: Vec<Container>,
    reports: mpsc::Sender<Report>,
    last_sent: Option<TaskState>,
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
                let state = prior_containers.get(&def.name).cloned().unwrap_or_else(|| {
                    ContainerState {
                        name: def.name.clone(),
                        image: def.image.clone(),
                        last_status: PENDING.into(),
                        health_status: UNKNOWN.into(),
                        essential: def.is_essential(),
                        ..Default::default()
                    }
                });
                Container {
                    def: def.clone(),
                    state,
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
        Self {
            rt,
            settings,
            definition,
            state,
            containers,
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
                let (code, reason) = (self.state.stop_code.clone(), self.state.stopped_reason.clone());
                self.stop_all(&code, &reason).await;
            } else if self.state.last_status == PENDING {
                self.start_all().await;
            } else {
                self.resync().await;
            }
        }
        // Run until stopped.
        while self.state.last_status != STOPPED {
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
        for c in &self.containers {
            if !c.state.runtime_id.is_empty() {
                if let Err(e) = self.rt.remove(&c.state.runtime_id).await {
                    warn!(container = %c.def.name, error = %e, "cannot remove container");
                }
            }
        }
        info!("task cleaned up");
        let id = self.task_id().to_string();
        let _ = self.reports.send(Report::Finished(id)).await;
    }

    fn spec(&self, def: &ContainerDefinition) -> ContainerSpec {
        let mut labels: BTreeMap<String, String> = def.docker_labels.clone();
        labels.insert(LABEL_TASK_ID.into(), self.state.task_id.clone());
        labels.insert(LABEL_CONTAINER_NAME.into(), def.name.clone());
        labels.insert(LABEL_TASK_FAMILY.into(), self.definition.family.clone());
        labels.insert(LABEL_INSTANCE_ID.into(), self.settings.instance_id.clone());
        let network_mode = match self.definition.network_mode() {
            berth_taskdef::NetworkMode::Bridge => "bridge",
            berth_taskdef::NetworkMode::Host => "host",
            berth_taskdef::NetworkMode::None => "none",
        };
        ContainerSpec {
            name: container_name(&self.definition.family, &def.name, &self.state.task_id),
            labels,
            network_mode: network_mode.into(),
            definition: def.clone(),
            default_stop_timeout: self.settings.default_stop_timeout,
        }
    }

    /// Finds containers that already exist: by recorded id, else by name.
    async fn adopt(&mut self) {
        for i in 0..self.containers.len() {
            let name = self.spec(&self.containers[i].def).name;
            let recorded = self.containers[i].state.runtime_id.clone();
            let mut found = None;
            if !recorded.is_empty() {
                found = self.rt.inspect(&recorded).await.ok().flatten();
            }
            if found.is_none() {
                found = self.rt.inspect(&name).await.ok().flatten().filter(|info| {
                    info.labels.get(LABEL_TASK_ID).map(String::as_str) == Some(self.task_id())
                });
            }
            match found {
                Some(info) => {
                    debug!(container = %self.containers[i].def.name, id = %info.id, "adopted existing container");
                    self.containers[i].state.runtime_id = info.id.clone();
                }
                None if !recorded.is_empty() && self.containers[i].state.last_status == RUNNING => {
                    // It ran, and is gone: removed behind the agent's back.
                    self.containers[i].state.last_status = STOPPED.into();
                    self.containers[i].state.reason =
                        "container vanished while the agent was not watching".into();
                }
                None => {
                    self.containers[i].state.runtime_id.clear();
                }
            }
        }
    }

    async fn fail_to_start(&mut self, idx: usize, reason: String) {
        warn!(container = %self.containers[idx].def.name, %reason, "task failed to start");
        self.containers[idx].state.reason = reason.clone();
        self.containers[idx].state.last_status = STOPPED.into();
        let name = self.containers[idx].def.name.clone();
        self.stop_all(TASK_FAILED_TO_START, &format!("{name}: {reason}"))
            .await;
    }

    async fn start_all(&mut self) {
        info!("starting task");
        // Pull every image first, so a bad image creates nothing.
        for i in 0..self.containers.len() {
            if !self.containers[i].state.runtime_id.is_empty() {
                continue;
            }
            let image = self.containers[i].def.image.clone();
            if let Err(e) = self.rt.ensure_image(&image, self.settings.pull_policy).await {
                let msg = match e {
                    crate::runtime::RuntimeError::Pull { message, .. } => message,
                    other => other.to_string(),
                };
                self.fail_to_start(i, format!("CannotPullContainerError: pull image {image}: {msg}"))
                    .await;
                return;
            }
        }
        for i in 0..self.containers.len() {
            if self.state.desired_status == STOPPED {
                return;
            }
            if self.containers[i].state.runtime_id.is_empty() {
                let spec = self.spec(&self.containers[i].def);
                match self.rt.create(&spec).await {
                    Ok(id) => {
                        self.containers[i].state.runtime_id = id;
                        self.containers[i].state.last_status = PENDING.into();
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
            let id = self.containers[i].state.runtime_id.clone();
            let info = self.rt.inspect(&id).await.ok().flatten();
            if info.as_ref().is_some_and(|i| i.state == RunState::Running) {
                self.apply_info(i, info.as_ref());
                continue;
            }
            if let Err(e) = self.rt.start(&id).await {
                self.fail_to_start(i, format!("CannotStartContainerError: {e}")).await;
                return;
            }
            let info = self.rt.inspect(&id).await.ok().flatten();
            self.apply_info(i, info.as_ref());
            self.containers[i].state.last_status = RUNNING.into();
            if let Some(info) = &info
                && info.state == RunState::Exited
            {
                // It ended before we looked: handled like the event.
                let code = info.exit_code;
                self.on_exit(i, code).await;
            }
            self.publish().await;
        }
        if self.state.last_status == PENDING && self.state.desired_status == RUNNING {
            self.state.last_status = RUNNING.into();
            self.state.started_at_ms = berth_proto::now_ms();
            info!("task running");
            self.publish().await;
        }
    }

    fn apply_info(&mut self, idx: usize, info: Option<&ContainerInfo>) {
        let Some(info) = info else { return };
        let c = &mut self.containers[idx].state;
        if !info.image_digest.is_empty() {
            c.image_digest = info.image_digest.clone();
        }
        c.network_bindings = info
            .ports
            .iter()
            .map(|p| NetworkBinding {
                container_port: p.container_port.into(),
                host_port: p.host_port.into(),
                protocol: p.protocol.clone(),
                bind_ip: p.host_ip.clone(),
            })
            .collect();
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
                if let Some(i) = self.index_of(&id)
                    && self.containers[i].state.last_status != RUNNING
                    && self.state.last_status == RUNNING
                {
                    self.containers[i].state.last_status = RUNNING.into();
                    self.containers[i].state.exit_code = None;
                    self.publish().await;
                }
            }
            RuntimeEvent::Died { id, exit_code } => {
                if let Some(i) = self.index_of(&id) {
                    self.on_exit(i, exit_code).await;
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
                    self.on_exit(i, None).await;
                }
            }
        }
    }

    /// Re-inspects every container and handles exits that were missed.
    async fn resync(&mut self) {
        for i in 0..self.containers.len() {
            let id = self.containers[i].state.runtime_id.clone();
            if id.is_empty() || self.containers[i].state.last_status == STOPPED {
                continue;
            }
            match self.rt.inspect(&id).await {
                Ok(Some(info)) => {
                    self.apply_info(i, Some(&info));
                    if info.state == RunState::Exited
                        && self.containers[i].state.last_status == RUNNING
                    {
                        self.on_exit(i, info.exit_code).await;
                    }
                }
                Ok(None) => {
                    if self.containers[i].state.last_status == RUNNING {
                        self.containers[i].state.reason =
                            "container vanished while the agent was not watching".into();
                        self.on_exit(i, None).await;
                    }
                }
                Err(e) => warn!(error = %e, "cannot inspect container during resync"),
            }
        }
        // A container recorded as stopped while the agent was away.
        if self.state.last_status == RUNNING
            && let Some(c) = self
                .containers
                .iter()
                .find(|c| c.state.essential && c.state.last_status == STOPPED)
        {
            let reason = exit_reason(&c.def.name, c.state.exit_code.map(i64::from));
            self.stop_all(ESSENTIAL_CONTAINER_EXITED, &reason).await;
        }
        self.publish().await;
    }

    /// A container's process ended.
    async fn on_exit(&mut self, idx: usize, exit_code: Option<i64>) {
        if self.containers[idx].state.last_status == STOPPED {
            return;
        }
        let name = self.containers[idx].def.name.clone();
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

    /// Stops every container (reverse definition order) and the task.
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
        for i in (0..self.containers.len()).rev() {
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
            }
        }
        self.state.last_status = STOPPED.into();
        self.state.stopped_at_ms = berth_proto::now_ms();
        info!("task stopped");
        self.publish().await;
    }
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

#[cfg(test)]
mod tests {
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

    fn settings() -> Settings {
        Settings {
            instance_id: "i-test".into(),
            pull_policy: PullPolicy::Default,
            default_stop_timeout: Duration::from_secs(1),
            cleanup_delay: Duration::ZERO,
        }
    }

    struct Harness {
        rt: FakeRuntime,
        handle: Handle,
        reports: mpsc::Receiver<Report>,
        last: Option<TaskState>,
    }

    impl Harness {
        fn start(rt: FakeRuntime, prior: Option<TaskState>) -> Self {
            let (tx, reports) = mpsc::channel(256);
            let (events_tx, events) = broadcast::channel(256);
            // Forward the fake's events like the manager does.
            let mut stream = rt.events("i-test");
            tokio::spawn(async move {
                use futures_util::StreamExt;
                while let Some(ev) = stream.next().await {
                    let _ = events_tx.send(ev);
                }
            });
            let handle = spawn(
                Arc::new(rt.clone()),
                settings(),
                "0123456789abcdef0123456789abcdef".into(),
                def(),
                1,
                prior,
                events,
                tx,
            );
            Self {
                rt,
                handle,
                reports,
                last: None,
            }
        }

        /// Waits (with a deadline) for a state that satisfies `f`.
        async fn until(&mut self, what: &str, f: impl Fn(&TaskState) -> bool) -> TaskState {
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

        async fn finished(&mut self) {
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

    fn container<'a>(st: &'a TaskState, name: &str) -> &'a ContainerState {
        st.containers
            .iter()
            .find(|c| c.name == name)
            .expect("container in state")
    }

    #[tokio::test]
    async fn non_essential_exit_keeps_task_running_and_stop_cleans_up() {
        let mut h = Harness::start(FakeRuntime::new(), None);
        h.until("RUNNING", |s| s.last_status == RUNNING).await;
        let init = h.rt.id_of("init").expect("init created");
        h.rt.exit(&init, 0);
        let st = h
            .until("init stopped", |s| container(s, "init").last_status == STOPPED)
            .await;
        assert_eq!(st.last_status, RUNNING);
        assert_eq!(container(&st, "init").exit_code, Some(0));
        h.handle.stop(USER_INITIATED, "Task stopped by user").await;
        let st = h.until("STOPPED", |s| s.last_status == STOPPED).await;
        assert_eq!(st.stop_code, USER_INITIATED);
        assert!(st.containers.iter().all(|c| c.last_status == STOPPED));
        h.finished().await;
        assert_eq!(h.rt.count(), 0, "containers removed after the cleanup delay");
    }

    #[tokio::test]
    async fn essential_exit_stops_the_task_and_names_the_container() {
        let mut h = Harness::start(FakeRuntime::new(), None);
        h.until("RUNNING", |s| s.last_status == RUNNING).await;
        let app = h.rt.id_of("app").expect("app created");
        h.rt.exit(&app, 3);
        let st = h.until("STOPPED", |s| s.last_status == STOPPED).await;
        assert_eq!(st.stop_code, ESSENTIAL_CONTAINER_EXITED);
        assert!(st.stopped_reason.contains("app"), "{}", st.stopped_reason);
        assert!(st.stopped_reason.contains("code 3"), "{}", st.stopped_reason);
        assert_eq!(container(&st, "app").exit_code, Some(3));
        assert!(h.rt.calls().iter().any(|c| c == "stop init"));
    }

    #[tokio::test]
    async fn pull_failure_fails_the_task_before_creating_anything() {
        let rt = FakeRuntime::new();
        rt.fail_pull("img/init");
        let mut h = Harness::start(rt, None);
        let st = h.until("STOPPED", |s| s.last_status == STOPPED).await;
        assert_eq!(st.stop_code, TASK_FAILED_TO_START);
        assert!(st.stopped_reason.contains("manifest unknown"), "{}", st.stopped_reason);
        assert!(st.stopped_reason.contains("img/init"), "{}", st.stopped_reason);
        assert!(!h.rt.calls().iter().any(|c| c.starts_with("create")));
    }

    #[tokio::test]
    async fn restart_adopts_running_containers_without_recreating_them() {
        let mut first = Harness::start(FakeRuntime::new(), None);
        let running = first.until("RUNNING", |s| s.last_status == RUNNING).await;
        let rt = first.rt.clone();
        drop(first);
        let calls_before = rt.calls().len();
        let mut second = Harness::start(rt.clone(), Some(running.clone()));
        // The init container exits while the new supervisor watches.
        let init = rt.id_of("init").expect("init");
        rt.exit(&init, 0);
        let st = second
            .until("init stopped", |s| container(s, "init").last_status == STOPPED)
            .await;
        assert_eq!(st.last_status, RUNNING);
        let new_calls: Vec<String> = rt.calls()[calls_before..].to_vec();
        assert!(
            !new_calls.iter().any(|c| c.starts_with("create") || c.starts_with("start")),
            "{new_calls:?}"
        );
        assert_eq!(rt.count(), 2);
    }

    #[test]
    fn task_health_rules() {
        assert_eq!(task_health([(true, true, HEALTHY), (false, true, UNHEALTHY)].into_iter()), HEALTHY);
        assert_eq!(task_health([(true, true, HEALTHY), (true, true, UNHEALTHY)].into_iter()), UNHEALTHY);
        assert_eq!(task_health([(true, true, HEALTHY), (true, true, UNKNOWN)].into_iter()), UNKNOWN);
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
