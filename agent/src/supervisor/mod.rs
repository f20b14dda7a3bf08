//! One supervisor per task: it owns the task's state and drives its
//! containers through the runtime.
//!
//! Lifecycle (ECS semantics, SPEC §3), as the [`Phase`]s of [`phase`]:
//!
//! ```text
//! Preparing ──pulled, created──▶ Starting ──essentials started──▶ Running
//!     │                             │                               │
//!     └──────── stop, failure ──────┴────── stop, essential exit ───┴──▶ Stopping ──▶ Stopped ──cleanup delay──▶ CleaningUp
//! ```
//!
//! Modules, by responsibility:
//! - this one: [`spawn`], [`Handle`], [`Report`], [`Settings`] and the run
//!   loop, one loop over a closed [`Input`] (a command, a runtime event, a
//!   deadline);
//! - [`phase`]: the phases, the table of legal edges, and `transition`,
//!   the only writer of the task's `lastStatus`/`desiredStatus`;
//! - [`prepare`]: adoption, the host's policy, log drivers, ports, pulls,
//!   volumes, creates;
//! - [`deps`]: `dependsOn`, start order, starting containers, `startTimeout`;
//! - [`exits`]: runtime events, resync, the restart decision;
//! - [`stop`]: stopping and removing the task's containers and volumes;
//! - [`report`]: the snapshot sent to the manager, ports, task health.
//!
//! Invariants:
//! - only the supervisor changes its task's state, through
//!   `Supervisor::transition`; every change is sent to the manager as a full
//!   [`TaskState`] snapshot, which persists it and turns it into a sequenced
//!   event;
//! - commands are read in every phase: a stop seen before a container is
//!   created or started means it never is (a pull or a volume creation in
//!   flight is abandoned; a create in flight completes and is recorded, so it
//!   is removed with the task);
//! - a container that already exists (found by its recorded id or by its
//!   name) is adopted, never created twice — so an agent restart neither
//!   duplicates nor restarts containers;
//! - container exits come from the engine's event stream; a resync
//!   re-inspects every container, so an exit missed while the stream was
//!   down is still seen;
//! - containers stop in reverse definition order, each with its own stop
//!   timeout.

mod deps;
mod exits;
pub mod phase;
mod prepare;
mod report;
mod stop;

#[cfg(test)]
mod harness;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::status::{Health, Status, StopCode};
use berth_proto::v1::{ContainerState, TaskState};
use berth_taskdef::{ContainerDefinition, TaskDefinition};
use tokio::sync::{broadcast, mpsc};
use tracing::{Instrument, info, info_span, warn};

use crate::clock::{Clock, SystemClock};
use crate::runtime::{PullPolicy, Runtime, RuntimeEvent};

pub use crate::runtime::naming::{container_name, short_id};
pub use deps::start_order;
pub use phase::{Phase, after_reboot, failed_definition, stopped_unstarted};
pub use report::task_health;

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
    /// Where task-level `cpu`/`memory` limits go ([`crate::cgroups`]);
    /// `None`: not enforced on this host.
    pub task_cgroups: Option<crate::cgroups::Layout>,
}

/// What a supervisor tells the manager.
#[derive(Debug)]
pub enum Report {
    /// The task's state changed.
    State(TaskState),
    /// The task is stopped and its containers removed; the supervisor ended.
    Finished(String),
}

/// What the manager asks of a supervisor.
#[derive(Debug, Clone)]
pub enum Command {
    /// Stop the task (the first stop's code and reason are the ones kept).
    Stop { stop_code: StopCode, reason: String },
}

#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    pub async fn stop(&self, stop_code: StopCode, reason: &str) {
        let _ = self
            .tx
            .send(Command::Stop {
                stop_code,
                reason: reason.to_string(),
            })
            .await;
    }
}

/// A task handed to a supervisor.
pub struct Assigned {
    pub task_id: String,
    pub definition: TaskDefinition,
    pub created_at_ms: i64,
    /// The task's last persisted state, when the agent knew it before.
    pub prior: Option<TaskState>,
    /// What its assignment delivered (in memory only).
    pub secrets: crate::secrets::TaskSecrets,
}

/// Starts the supervisor of a task, on the host's clock.
pub fn spawn(
    rt: Arc<dyn Runtime>,
    settings: Settings,
    task: Assigned,
    events: broadcast::Receiver<RuntimeEvent>,
    reports: mpsc::Sender<Report>,
) -> Handle {
    spawn_with_clock(rt, settings, task, events, reports, Arc::new(SystemClock))
}

/// [`spawn`] with the clock the supervisor reads (tests: a paused one).
pub fn spawn_with_clock(
    rt: Arc<dyn Runtime>,
    settings: Settings,
    task: Assigned,
    events: broadcast::Receiver<RuntimeEvent>,
    reports: mpsc::Sender<Report>,
    clock: Arc<dyn Clock>,
) -> Handle {
    let (tx, rx) = mpsc::channel(16);
    let span = info_span!("task", task_id = %task.task_id, family = %task.definition.family);
    let sup = Supervisor::new(rt, settings, task, reports, rx, clock);
    tokio::spawn(sup.run(events).instrument(span));
    Handle { tx }
}

/// Everything the run loop waits for, as one closed type.
enum Input {
    /// A command, or `None` once the manager dropped every handle.
    Command(Option<Command>),
    Event(Result<RuntimeEvent, broadcast::error::RecvError>),
    /// A `startTimeout` or a delayed restart is due.
    Deadline,
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
    /// A restart waiting out the one-second floor: when, and the exit code
    /// it follows.
    restart_at: Option<(tokio::time::Instant, Option<i64>)>,
}

struct Supervisor {
    rt: Arc<dyn Runtime>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    definition: TaskDefinition,
    phase: Phase,
    state: TaskState,
    containers: Vec<Container>,
    /// Container indexes, dependencies before dependents.
    order: Vec<usize>,
    reports: mpsc::Sender<Report>,
    last_sent: Option<TaskState>,
    commands: mpsc::Receiver<Command>,
    /// A stop read while the supervisor was busy (preparing), acted on as
    /// soon as what was in flight returns.
    stop_seen: Option<(StopCode, String)>,
    /// Every handle is gone: the manager no longer wants this supervisor.
    abandoned: bool,
    /// The values of the task's secrets (`crate::secrets`).
    secrets: crate::secrets::TaskSecrets,
}

impl Supervisor {
    fn new(
        rt: Arc<dyn Runtime>,
        settings: Settings,
        task: Assigned,
        reports: mpsc::Sender<Report>,
        commands: mpsc::Receiver<Command>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let Assigned {
            task_id,
            definition,
            created_at_ms,
            prior,
            secrets,
        } = task;
        let prior_containers: std::collections::BTreeMap<String, ContainerState> = prior
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
                let started = prior
                    .as_ref()
                    .is_some_and(|p| p.last_status != Status::Pending);
                let state = prior.unwrap_or_else(|| ContainerState {
                    name: def.name.clone(),
                    image: def.image.clone(),
                    last_status: Status::Pending.to_string(),
                    health_status: Health::Unknown.to_string(),
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
                    restart_at: None,
                }
            })
            .collect();
        let state = prior.unwrap_or_else(|| phase::new_task(&task_id, &definition, created_at_ms));
        let order = start_order(&definition);
        Self {
            rt,
            settings,
            clock,
            definition,
            phase: Phase::of(&state),
            state,
            containers,
            order,
            reports,
            last_sent: None,
            commands,
            stop_seen: None,
            abandoned: false,
            secrets,
        }
    }

    fn task_id(&self) -> &str {
        &self.state.task_id
    }

    /// Notes a command read while busy.
    fn note(&mut self, cmd: Option<Command>) {
        match cmd {
            Some(Command::Stop { stop_code, reason }) => {
                if self.stop_seen.is_none() {
                    info!(stop_code = %stop_code, reason, "stop requested");
                    self.stop_seen = Some((stop_code, reason));
                }
            }
            None => self.abandoned = true,
        }
    }

    /// Reads the commands already queued, without waiting; `true` when a
    /// stop was seen (now or before) or the supervisor is abandoned.
    fn stop_requested(&mut self) -> bool {
        while !self.abandoned {
            match self.commands.try_recv() {
                Ok(cmd) => self.note(Some(cmd)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.note(None),
            }
        }
        self.stop_seen.is_some() || self.abandoned
    }

    /// Runs `work` while reading commands. With `cancel`, a stop abandons
    /// the work (it is dropped) and `None` comes back; without, the work
    /// runs to its end and the stop waits in `stop_seen`.
    async fn guarded<T>(&mut self, cancel: bool, work: impl Future<Output = T>) -> Option<T> {
        if cancel && self.stop_requested() {
            return None;
        }
        tokio::pin!(work);
        loop {
            if self.abandoned || (cancel && self.stop_seen.is_some()) {
                if cancel {
                    return None;
                }
                return Some(work.await);
            }
            tokio::select! {
                biased;
                cmd = self.commands.recv() => self.note(cmd),
                out = &mut work => return Some(out),
            }
        }
    }

    /// The next thing to act on. Commands come first, so a stop queued
    /// with an event is acted on before the event.
    async fn next_input(&mut self, events: &mut broadcast::Receiver<RuntimeEvent>) -> Input {
        let wake = self.next_deadline();
        tokio::select! {
            biased;
            cmd = self.commands.recv() => Input::Command(cmd),
            ev = events.recv() => Input::Event(ev),
            _ = sleep_until(wake) => Input::Deadline,
        }
    }

    /// Acts on a stop seen while busy; `true` if there was one.
    async fn act_on_stop_seen(&mut self) -> bool {
        match self.stop_seen.take() {
            Some((code, reason)) => {
                self.stop_all(code, &reason).await;
                true
            }
            None => false,
        }
    }

    async fn run(mut self, mut events: broadcast::Receiver<RuntimeEvent>) {
        self.publish().await;
        if self.phase != Phase::Stopped {
            self.adopt().await;
            if self.phase == Phase::Stopping {
                let code = self
                    .state
                    .stop_code
                    .parse()
                    .unwrap_or(StopCode::UserInitiated);
                let reason = self.state.stopped_reason.clone();
                self.stop_all(code, &reason).await;
            } else {
                if self.phase == Phase::Preparing {
                    self.prepare().await;
                }
                if self.abandoned {
                    return;
                }
                if !self.act_on_stop_seen().await {
                    if self.phase == Phase::Preparing {
                        self.transition(Phase::Starting);
                    }
                    self.resync().await;
                    self.advance().await;
                }
            }
        }
        // Run until stopped.
        while self.phase != Phase::Stopped {
            if self.act_on_stop_seen().await {
                continue;
            }
            match self.next_input(&mut events).await {
                Input::Command(Some(Command::Stop { stop_code, reason })) => {
                    self.stop_all(stop_code, &reason).await;
                }
                Input::Command(None) => return,
                Input::Event(Ok(ev)) => self.on_event(ev).await,
                Input::Event(Err(broadcast::error::RecvError::Lagged(n))) => {
                    warn!(
                        missed = n,
                        "runtime events lagged; re-inspecting containers"
                    );
                    self.resync().await;
                }
                Input::Event(Err(broadcast::error::RecvError::Closed)) => return,
                Input::Deadline => self.restart_due().await,
            }
            if self.abandoned {
                return;
            }
            if self.phase != Phase::Stopped {
                self.advance().await;
            }
        }
        // Stopped: keep the containers for the cleanup delay, then remove them.
        let deadline = tokio::time::sleep(self.settings.cleanup_delay);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                cmd = self.commands.recv() => if cmd.is_none() { return },
            }
        }
        self.transition(Phase::CleaningUp);
        // The task is forgotten only once nothing of it is left: while the
        // engine is unreachable, wait for it to be back (the next Resync).
        while let Err(e) = self.remove_all().await {
            warn!(error = %e, "cannot clean up the task yet; trying again when the engine is back");
            loop {
                tokio::select! {
                    cmd = self.commands.recv() => if cmd.is_none() { return },
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

    /// The earliest deadline: a `startTimeout` of a waiting container or a
    /// restart waiting out the floor.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let timeouts = self
            .containers
            .iter()
            .filter(|c| !c.started && c.state.last_status != Status::Stopped)
            .filter_map(|c| {
                let since = c.waiting_since?;
                let secs = c.def.start_timeout?;
                Some(since + Duration::from_secs(secs))
            });
        let restarts = self
            .containers
            .iter()
            .filter_map(|c| c.restart_at.map(|r| r.0));
        timeouts.chain(restarts).min()
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
