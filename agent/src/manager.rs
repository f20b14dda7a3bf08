//! The manager: the single owner of the agent's durable state.
//!
//! It applies assignments (starting supervisors for new tasks and stopping
//! the ones no longer wanted), turns every task state change reported by a
//! supervisor into a sequenced event in the outbox, trims the outbox when the
//! control plane acknowledges, and publishes a [`View`] that the session and
//! the local API read. Everything goes through one channel, so there is no
//! shared mutable state.
//!
//! Invariants:
//! - an event is in `state.json` before the session can send it;
//! - sequence numbers are per host, strictly increasing, never reused (the
//!   counter is persisted with the outbox);
//! - an assignment is persisted before it is acknowledged;
//! - applying the same assignment twice changes nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::{Assignment, DesiredTask, TaskEvent, TaskState};
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::metrics::AgentMetrics;
use crate::runtime::{Runtime, RuntimeEvent};
use crate::state::{PersistedState, StateError, StateFile};
use berth_proto::status::{Status, StopCode};

use crate::supervisor::{self, Report, Settings};

/// What the session and the local API see.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub instance_id: String,
    pub generation: u64,
    pub last_seq: u64,
    pub tasks: Vec<TaskState>,
    pub outbox: Vec<TaskEvent>,
    pub connected: bool,
    /// Why the last write of the agent's state failed (full disk, …), with
    /// the path; `None` once a write succeeds again.
    pub store_error: Option<String>,
}

pub enum Input {
    Assignment(Assignment, oneshot::Sender<u64>),
    EventAck(u64),
    Connected(bool),
    /// Answered at once: the manager's loop is alive (the watchdog).
    Ping(oneshot::Sender<()>),
}

/// How the rest of the agent talks to the manager.
#[derive(Clone)]
pub struct ManagerHandle {
    tx: mpsc::Sender<Input>,
    view: watch::Receiver<View>,
}

impl ManagerHandle {
    /// Applies and persists an assignment; returns the generation to acknowledge.
    pub async fn assign(&self, a: Assignment) -> Option<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Input::Assignment(a, tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn ack(&self, seq: u64) {
        let _ = self.tx.send(Input::EventAck(seq)).await;
    }

    /// Whether the manager answers within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Input::Ping(tx)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    pub async fn set_connected(&self, connected: bool) {
        let _ = self.tx.send(Input::Connected(connected)).await;
    }

    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }
}

pub struct Manager {
    rt: Arc<dyn Runtime>,
    settings: Settings,
    file: StateFile,
    state: PersistedState,
    supervisors: HashMap<String, supervisor::Handle>,
    events: broadcast::Sender<RuntimeEvent>,
    reports_tx: mpsc::Sender<Report>,
    view: watch::Sender<View>,
    connected: bool,
    store_error: Option<String>,
    metrics: Arc<AgentMetrics>,
}

impl Manager {
    /// Loads the state, subscribes to the runtime's events, resumes the
    /// supervision of known tasks and (with `start_offline`) starts the last
    /// desired set without waiting for the control plane.
    pub async fn start(
        rt: Arc<dyn Runtime>,
        settings: Settings,
        data_dir: &Path,
        start_offline: bool,
        boot_id: &str,
        metrics: Arc<AgentMetrics>,
    ) -> Result<ManagerHandle, StateError> {
        let (file, mut state, aside) = StateFile::open(data_dir)?;
        metrics.set_store_bytes(std::fs::metadata(file.path()).map_or(0, |m| m.len()));
        if let Some(aside) = aside {
            error!(path = %aside.display(), "agent state was corrupt; moved aside, starting empty");
        }
        let (events, _) = broadcast::channel(1024);
        // Subscribe before anything is inspected, and wait for the stream to
        // be established (its first Resync) so no change is missed.
        let mut first = events.subscribe();
        let mut stream = rt.events(&settings.instance_id);
        let fwd = events.clone();
        tokio::spawn(async move {
            while let Some(ev) = stream.next().await {
                let _ = fwd.send(ev);
            }
        });
        if tokio::time::timeout(Duration::from_secs(10), first.recv())
            .await
            .is_err()
        {
            warn!(
                "docker event stream not established after 10s; continuing, containers are re-inspected when it is"
            );
        }
        // With start_offline off, tasks whose containers exited with the
        // reboot stop (EssentialContainerExited), as in ECS.
        if start_offline && !state.boot_id.is_empty() && state.boot_id != boot_id {
            info!(
                "the host rebooted since the agent last ran; restarting the tasks it was told to run"
            );
            after_reboot(&mut state);
        }
        state.boot_id = boot_id.to_string();
        let (reports_tx, reports_rx) = mpsc::channel(256);
        let (tx, rx) = mpsc::channel(64);
        let (view, view_rx) = watch::channel(View::default());
        let mut m = Manager {
            rt,
            settings,
            file,
            state,
            supervisors: HashMap::new(),
            events,
            reports_tx,
            view,
            connected: false,
            store_error: None,
            metrics,
        };
        m.resume(start_offline);
        m.publish();
        tokio::spawn(m.run(rx, reports_rx));
        Ok(ManagerHandle { tx, view: view_rx })
    }

    fn resume(&mut self, start_offline: bool) {
        let known: Vec<TaskState> = self.state.tasks.values().cloned().collect();
        for prior in known {
            let has_containers = prior.containers.iter().any(|c| !c.runtime_id.is_empty());
            if prior.last_status == Status::Stopped && !has_containers {
                continue;
            }
            let Some(desired) = self.state.desired.get(&prior.task_id).cloned() else {
                if prior.last_status != Status::Stopped || has_containers {
                    // Not wanted any more but may still have containers:
                    // supervise it so it stops and is cleaned up.
                    if let Some(def) = self.definition_of(&prior.task_id) {
                        let id = prior.task_id.clone();
                        self.spawn_supervisor(&id, def, prior.created_at_ms, Some(prior));
                        if let Some(h) = self.supervisors.get(&id) {
                            let h = h.clone();
                            tokio::spawn(async move {
                                h.stop(
                                    StopCode::UserInitiated,
                                    "task is no longer assigned to this instance",
                                )
                                .await;
                            });
                        }
                    }
                }
                continue;
            };
            if let Some(def) = self.parse(&desired) {
                let id = prior.task_id.clone();
                self.spawn_supervisor(&id, def, desired.created_at_ms, Some(prior));
            }
        }
        if start_offline {
            let desired: Vec<DesiredTask> = self.state.desired.values().cloned().collect();
            self.reconcile_tasks(&desired);
        }
    }

    /// The definition of a task that is no longer desired is not kept; such
    /// a task can only be adopted for stopping if it still is desired.
    fn definition_of(&self, task_id: &str) -> Option<berth_taskdef::TaskDefinition> {
        self.state
            .desired
            .get(task_id)
            .and_then(|d| berth_taskdef::parse(&d.task_definition_json).ok())
            .map(|p| p.definition)
    }

    fn parse(&mut self, d: &DesiredTask) -> Option<berth_taskdef::TaskDefinition> {
        match berth_taskdef::parse(&d.task_definition_json) {
            Ok(p) => Some(p.definition),
            Err(e) => {
                // The agent trusts no input: a definition it cannot validate
                // fails the task, with the reason.
                self.record(supervisor::failed_definition(
                    &d.task_id,
                    d.created_at_ms,
                    e.to_string().replace('\n', " "),
                    berth_proto::now_ms(),
                ));
                None
            }
        }
    }

    fn spawn_supervisor(
        &mut self,
        task_id: &str,
        def: berth_taskdef::TaskDefinition,
        created_at_ms: i64,
        prior: Option<TaskState>,
    ) {
        // What the last assignment delivered; after a restart, before the
        // control plane was heard from, nothing (kept in memory only).
        let secrets = self
            .state
            .desired
            .get(task_id)
            .map(crate::secrets::TaskSecrets::from_desired)
            .unwrap_or_default();
        let handle = supervisor::spawn(
            self.rt.clone(),
            self.settings.clone(),
            supervisor::Assigned {
                task_id: task_id.to_string(),
                definition: def,
                created_at_ms,
                prior,
                secrets,
            },
            self.events.subscribe(),
            self.reports_tx.clone(),
        );
        self.supervisors.insert(task_id.to_string(), handle);
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>, mut reports: mpsc::Receiver<Report>) {
        loop {
            tokio::select! {
                input = rx.recv() => match input {
                    Some(Input::Assignment(a, done)) => {
                        let generation = self.apply(a);
                        let _ = done.send(generation);
                    }
                    Some(Input::EventAck(seq)) => self.trim(seq),
                    Some(Input::Ping(done)) => {
                        let _ = done.send(());
                    }
                    Some(Input::Connected(c)) => {
                        self.connected = c;
                        self.publish();
                    }
                    None => return,
                },
                Some(report) = reports.recv() => match report {
                    Report::State(st) => self.record(st),
                    Report::Finished(id) => {
                        self.supervisors.remove(&id);
                        if !self.state.desired.contains_key(&id) {
                            self.state.tasks.remove(&id);
                        }
                        self.save();
                        self.publish();
                    }
                },
            }
        }
    }

    /// A task state changed: store it and queue it as the next event.
    fn record(&mut self, st: TaskState) {
        let before = self.state.tasks.get(&st.task_id);
        if before == Some(&st) {
            return;
        }
        self.metrics
            .container_restarts
            .add(new_restarts(before, &st));
        self.metrics.events.inc();
        if self.state.outbox.len() >= OUTBOX_COMPACT_AT {
            compact(&mut self.state.outbox);
        }
        self.state.last_seq += 1;
        self.state.outbox.push(TaskEvent {
            sequence: self.state.last_seq,
            task: Some(st.clone()),
            at_ms: berth_proto::now_ms(),
        });
        self.state.tasks.insert(st.task_id.clone(), st);
        self.save();
        self.publish();
    }

    fn trim(&mut self, seq: u64) {
        let before = self.state.outbox.len();
        self.state.outbox.retain(|e| e.sequence > seq);
        if self.state.outbox.len() != before {
            self.save();
            self.publish();
        }
    }

    fn apply(&mut self, a: Assignment) -> u64 {
        info!(
            generation = a.generation,
            tasks = a.tasks.len(),
            "assignment"
        );
        self.state.generation = a.generation;
        self.state.desired = a
            .tasks
            .iter()
            .map(|t| (t.task_id.clone(), t.clone()))
            .collect();
        self.reconcile_tasks(&a.tasks);
        // Tasks that are neither wanted nor supervised are forgotten.
        let desired = &self.state.desired;
        let supervised = &self.supervisors;
        self.state
            .tasks
            .retain(|id, _| desired.contains_key(id) || supervised.contains_key(id));
        self.save();
        self.publish();
        a.generation
    }

    fn reconcile_tasks(&mut self, tasks: &[DesiredTask]) {
        for d in tasks {
            let known = self.state.tasks.get(&d.task_id).cloned();
            if d.desired_status == Status::Stopped {
                if let Some(h) = self.supervisors.get(&d.task_id) {
                    let h = h.clone();
                    let (code, reason) = stop_reason(d);
                    tokio::spawn(async move { h.stop(code, &reason).await });
                } else if known.is_none() {
                    let (code, reason) = stop_reason(d);
                    self.record(supervisor::stopped_unstarted(
                        &d.task_id,
                        d.created_at_ms,
                        code,
                        reason,
                        berth_proto::now_ms(),
                    ));
                }
                continue;
            }
            if self.supervisors.contains_key(&d.task_id) {
                continue;
            }
            if known
                .as_ref()
                .is_some_and(|k| k.last_status == Status::Stopped)
            {
                continue;
            }
            if let Some(def) = self.parse(d) {
                self.spawn_supervisor(&d.task_id, def, d.created_at_ms, known);
            }
        }
        let wanted: std::collections::HashSet<&str> =
            tasks.iter().map(|t| t.task_id.as_str()).collect();
        for (id, h) in &self.supervisors {
            if !wanted.contains(id.as_str()) {
                let h = h.clone();
                tokio::spawn(async move {
                    h.stop(
                        StopCode::UserInitiated,
                        "task is no longer assigned to this instance",
                    )
                    .await
                });
            }
        }
    }

    fn save(&mut self) {
        let started = std::time::Instant::now();
        let saved = self.file.save(&self.state);
        self.metrics
            .store_write_duration
            .observe_duration(started.elapsed());
        match saved {
            Ok(bytes) => {
                self.metrics.set_store_bytes(bytes);
                self.store_error = None;
            }
            Err(e) => {
                self.metrics.store_write_errors.inc();
                // Kept in memory and written with the next change; shown on
                // the local API until then.
                error!(error = %e, "cannot persist agent state");
                self.store_error = Some(e.to_string());
            }
        }
    }

    fn publish(&self) {
        let v = View {
            instance_id: self.settings.instance_id.clone(),
            generation: self.state.generation,
            last_seq: self.state.last_seq,
            tasks: self.state.tasks.values().cloned().collect(),
            outbox: self.state.outbox.clone(),
            connected: self.connected,
            store_error: self.store_error.clone(),
        };
        self.view.send_replace(v);
    }
}

/// Restarts `after` shows that `before` did not: the growth of each
/// container's `restartCount` (a container new to the task counts from 0).
fn new_restarts(before: Option<&TaskState>, after: &TaskState) -> u64 {
    after
        .containers
        .iter()
        .map(|c| {
            let was = before
                .and_then(|b| b.containers.iter().find(|p| p.name == c.name))
                .map_or(0, |p| p.restart_count);
            u64::from(c.restart_count.saturating_sub(was))
        })
        .sum()
}

/// The stop code and reason of a desired-STOPPED task; the wire's code is
/// checked here, at the edge (none or an unknown one: UserInitiated).
fn stop_reason(d: &DesiredTask) -> (StopCode, String) {
    let code = if d.stop_code.is_empty() {
        StopCode::UserInitiated
    } else {
        d.stop_code.parse().unwrap_or_else(|e| {
            warn!(task_id = %d.task_id, error = %e, "unknown stop code; stopping as UserInitiated");
            StopCode::UserInitiated
        })
    };
    let reason = if d.stopped_reason.is_empty() {
        "Task stopped by user".to_string()
    } else {
        d.stopped_reason.clone()
    };
    (code, reason)
}

/// Past this many unacknowledged events (a long outage), the outbox keeps
/// only the newest event of each task: events carry whole task states, so
/// the newest one says everything the older ones did.
pub const OUTBOX_COMPACT_AT: usize = 1000;

/// Keeps the newest event of each task, in sequence order.
pub fn compact(outbox: &mut Vec<TaskEvent>) {
    let mut newest: HashMap<String, u64> = HashMap::new();
    for e in outbox.iter() {
        let id = e
            .task
            .as_ref()
            .map(|t| t.task_id.clone())
            .unwrap_or_default();
        newest.insert(id, e.sequence);
    }
    outbox.retain(|e| {
        let id = e
            .task
            .as_ref()
            .map(|t| t.task_id.as_str())
            .unwrap_or_default();
        newest.get(id) == Some(&e.sequence)
    });
}

/// After a reboot the containers of running tasks have exited (berth gives
/// them no Docker restart policy). Tasks the control plane last wanted
/// RUNNING start again, in dependency order, reusing their containers.
fn after_reboot(state: &mut PersistedState) {
    for (id, task) in state.tasks.iter_mut() {
        let wanted = state
            .desired
            .get(id)
            .is_some_and(|d| d.desired_status == Status::Running);
        if wanted {
            supervisor::after_reboot(task, berth_proto::now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, task: &str, status: &str) -> TaskEvent {
        TaskEvent {
            sequence: seq,
            task: Some(TaskState {
                task_id: task.into(),
                last_status: status.into(),
                ..Default::default()
            }),
            at_ms: 0,
        }
    }

    mod running {
        //! The manager itself, on the in-memory runtime and a temporary
        //! data dir.
        use super::super::*;
        use crate::runtime::fake::FakeRuntime;
        const RUNNING: &str = berth_proto::status::Status::Running.as_str();

        const TASK: &str = "0123456789abcdef0123456789abcdef";
        const DEADLINE: Duration = Duration::from_secs(30);

        fn settings() -> Settings {
            Settings {
                instance_id: "i-test".into(),
                pull_policy: crate::runtime::PullPolicy::Default,
                default_stop_timeout: Duration::from_secs(1),
                cleanup_delay: Duration::from_secs(3600),
                policy: crate::policy::Policy::default(),
                check_host_ports: false,
                task_cgroups: None,
            }
        }

        async fn start(rt: &FakeRuntime, dir: &Path) -> ManagerHandle {
            Manager::start(
                Arc::new(rt.clone()),
                settings(),
                dir,
                true,
                "boot-1",
                Arc::new(AgentMetrics::default()),
            )
            .await
            .expect("manager starts")
        }

        fn assignment(generation: u64) -> Assignment {
            Assignment {
                generation,
                tasks: vec![DesiredTask {
                    task_id: TASK.into(),
                    task_definition_json: r#"{"family":"web","containerDefinitions":[
                        {"name":"app","image":"img/app","memory":64}]}"#
                        .into(),
                    desired_status: RUNNING.into(),
                    created_at_ms: 1,
                    ..Default::default()
                }],
            }
        }

        fn on_disk(dir: &Path) -> PersistedState {
            let bytes = std::fs::read(dir.join("state.json")).expect("state.json");
            serde_json::from_slice(&bytes).expect("state.json parses")
        }

        async fn until(view: &mut watch::Receiver<View>, what: &str, f: impl FnMut(&View) -> bool) {
            tokio::time::timeout(DEADLINE, view.wait_for(f))
                .await
                .unwrap_or_else(|_| panic!("{what} not within {DEADLINE:?}"))
                .expect("manager alive");
        }

        fn running(v: &View) -> bool {
            v.tasks
                .iter()
                .any(|t| t.task_id == TASK && t.last_status == RUNNING)
        }

        #[tokio::test]
        async fn every_event_is_on_disk_before_anyone_can_see_it() {
            let rt = FakeRuntime::new();
            let dir = tempfile::tempdir().expect("tempdir");
            let handle = start(&rt, dir.path()).await;
            let mut view = handle.view();
            assert_eq!(handle.assign(assignment(3)).await, Some(3));
            assert_eq!(
                on_disk(dir.path()).generation,
                3,
                "persisted before the ack"
            );
            let mut seen = Vec::new();
            loop {
                tokio::time::timeout(DEADLINE, view.changed())
                    .await
                    .expect("a change within the deadline")
                    .expect("manager alive");
                let v = view.borrow_and_update().clone();
                let disk = on_disk(dir.path());
                assert!(
                    disk.last_seq >= v.last_seq,
                    "event {} visible before it was written (disk has {})",
                    v.last_seq,
                    disk.last_seq
                );
                for e in &v.outbox {
                    assert!(
                        disk.outbox.iter().any(|d| d.sequence == e.sequence),
                        "outbox event {} not on disk",
                        e.sequence
                    );
                }
                seen.extend(v.outbox.iter().map(|e| e.sequence));
                if running(&v) {
                    break;
                }
            }
            seen.dedup();
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "sequences increase: {seen:?}"
            );
        }

        #[tokio::test]
        async fn a_restarted_manager_keeps_counting_and_adopts_instead_of_creating() {
            let rt = FakeRuntime::new();
            let dir = tempfile::tempdir().expect("tempdir");
            let handle = start(&rt, dir.path()).await;
            let mut view = handle.view();
            handle.assign(assignment(1)).await;
            until(&mut view, "the task RUNNING", running).await;
            let last = view.borrow().last_seq;
            let creates = |rt: &FakeRuntime| {
                rt.calls()
                    .iter()
                    .filter(|c| c.starts_with("create"))
                    .count()
            };
            assert_eq!(creates(&rt), 1);

            // The agent stops: the manager ends once nobody holds its handle.
            drop(handle);
            let ended =
                tokio::time::timeout(DEADLINE, async { while view.changed().await.is_ok() {} })
                    .await;
            assert!(ended.is_ok(), "the manager did not end");

            // And starts again on the same data dir and engine.
            let handle = start(&rt, dir.path()).await;
            let mut view = handle.view();
            assert!(
                view.borrow().last_seq >= last,
                "the counter survived the restart"
            );
            assert_eq!(view.borrow().generation, 1);
            until(&mut view, "the task RUNNING again", running).await;
            let before = view.borrow().last_seq;
            rt.exit(&rt.id_of("app").expect("the task's container"), 0);
            until(&mut view, "the exit reported", |v| v.last_seq > before).await;
            // Numbered after everything the first run sent.
            let newest = view.borrow().outbox.last().map(|e| e.sequence);
            assert!(newest.is_some_and(|s| s > last), "{newest:?} after {last}");
            assert_eq!(
                creates(&rt),
                1,
                "adopted, not created again: {:?}",
                rt.calls()
            );
        }
    }

    #[test]
    fn restarts_count_only_the_growth_of_restart_counts() {
        let task = |counts: &[(&str, u32)]| TaskState {
            task_id: "t".into(),
            containers: counts
                .iter()
                .map(|(name, n)| berth_proto::v1::ContainerState {
                    name: (*name).into(),
                    restart_count: *n,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(new_restarts(None, &task(&[("a", 0), ("b", 0)])), 0);
        assert_eq!(new_restarts(None, &task(&[("a", 2)])), 2);
        let before = task(&[("a", 1), ("b", 3)]);
        assert_eq!(new_restarts(Some(&before), &task(&[("a", 2), ("b", 3)])), 1);
        assert_eq!(new_restarts(Some(&before), &task(&[("a", 1), ("b", 3)])), 0);
        // A count that goes down (state reset) adds nothing.
        assert_eq!(new_restarts(Some(&before), &task(&[("a", 0), ("b", 4)])), 1);
    }

    #[test]
    fn compaction_keeps_the_newest_event_of_each_task_in_order() {
        let mut outbox = vec![
            ev(1, "a", "PENDING"),
            ev(2, "b", "PENDING"),
            ev(3, "a", "RUNNING"),
            ev(4, "b", "RUNNING"),
            ev(5, "a", "STOPPED"),
        ];
        compact(&mut outbox);
        let kept: Vec<u64> = outbox.iter().map(|e| e.sequence).collect();
        assert_eq!(kept, vec![4, 5]);
    }

    #[test]
    fn a_reboot_restarts_wanted_tasks_only() {
        let mut state = PersistedState::default();
        for (id, desired, last) in [
            ("run", "RUNNING", "RUNNING"),
            ("gone", "STOPPED", "RUNNING"),
            ("done", "RUNNING", "STOPPED"),
        ] {
            state.desired.insert(
                id.into(),
                DesiredTask {
                    task_id: id.into(),
                    desired_status: desired.into(),
                    ..Default::default()
                },
            );
            state.tasks.insert(
                id.into(),
                TaskState {
                    task_id: id.into(),
                    last_status: last.into(),
                    containers: vec![berth_proto::v1::ContainerState {
                        name: "c".into(),
                        last_status: last.into(),
                        runtime_id: "abc".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
        }
        after_reboot(&mut state);
        assert_eq!(state.tasks["run"].last_status, "PENDING");
        assert_eq!(state.tasks["run"].containers[0].last_status, "PENDING");
        assert_eq!(state.tasks["run"].containers[0].runtime_id, "abc");
        assert_eq!(state.tasks["gone"].last_status, "RUNNING");
        assert_eq!(state.tasks["done"].last_status, "STOPPED");
    }
}
