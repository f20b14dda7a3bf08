//! A supervisor spawned against the fake runtime, and the reports it sends:
//! the one way the supervisor's unit tests run a supervisor.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::status::Status;
use berth_proto::v1::TaskState;
use berth_taskdef::TaskDefinition;
use tokio::sync::{broadcast, mpsc};

use super::{Assigned, Handle, Report, Settings, spawn_with_clock};
use crate::clock::{Clock, SystemClock};
use crate::runtime::fake::FakeRuntime;
use crate::runtime::{PullPolicy, Runtime};

pub(crate) fn settings(check_host_ports: bool) -> Settings {
    Settings {
        instance_id: "i-test".into(),
        pull_policy: PullPolicy::Default,
        default_stop_timeout: Duration::from_secs(1),
        cleanup_delay: Duration::ZERO,
        policy: crate::policy::Policy::default(),
        check_host_ports,
        task_cgroups: None,
    }
}

pub(crate) struct Harness {
    pub(crate) rt: FakeRuntime,
    pub(crate) handle: Handle,
    reports: mpsc::Receiver<Report>,
    last: Option<TaskState>,
    /// Every state received, in order.
    pub(crate) history: Vec<TaskState>,
    /// How long `until` and `finished` wait: 5 s, longer on paused time.
    pub(crate) patience: Duration,
}

impl Harness {
    /// Spawns a supervisor for `definition` on `rt`, resuming from
    /// `prior`, with the fake's events forwarded like the manager does.
    pub(crate) fn start(
        rt: &FakeRuntime,
        settings: Settings,
        definition: TaskDefinition,
        prior: Option<TaskState>,
    ) -> Self {
        Self::start_with_clock(rt, settings, definition, prior, Arc::new(SystemClock))
    }

    /// [`Harness::start`] of a new task whose assignment delivered `secrets`.
    pub(crate) fn start_with_secrets(
        rt: &FakeRuntime,
        settings: Settings,
        definition: TaskDefinition,
        secrets: crate::secrets::TaskSecrets,
    ) -> Self {
        Self::spawn(
            rt,
            settings,
            definition,
            None,
            Arc::new(SystemClock),
            secrets,
        )
    }

    /// [`Harness::start`] on `clock` (give the fake runtime the same one).
    pub(crate) fn start_with_clock(
        rt: &FakeRuntime,
        settings: Settings,
        definition: TaskDefinition,
        prior: Option<TaskState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let secrets = crate::secrets::TaskSecrets::default();
        Self::spawn(rt, settings, definition, prior, clock, secrets)
    }

    fn spawn(
        rt: &FakeRuntime,
        settings: Settings,
        definition: TaskDefinition,
        prior: Option<TaskState>,
        clock: Arc<dyn Clock>,
        secrets: crate::secrets::TaskSecrets,
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
        let handle = spawn_with_clock(
            Arc::new(rt.clone()),
            settings,
            Assigned {
                task_id: "0123456789abcdef0123456789abcdef".into(),
                definition,
                created_at_ms: 1,
                prior,
                secrets,
            },
            events,
            tx,
            clock,
        );
        Self {
            rt: rt.clone(),
            handle,
            reports,
            last: None,
            history: Vec::new(),
            patience: Duration::from_secs(5),
        }
    }

    /// Waits (with a deadline) for a state that satisfies `f`.
    pub(crate) async fn until(&mut self, what: &str, f: impl Fn(&TaskState) -> bool) -> TaskState {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            if let Some(st) = &self.last
                && f(st)
            {
                return st.clone();
            }
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(Report::State(st))) => self.record(st),
                Ok(Some(Report::Finished(_))) => {
                    panic!("supervisor finished before {what}; last {:?}", self.last)
                }
                Ok(None) | Err(_) => panic!("no state with {what}; last {:?}", self.last),
            }
        }
    }

    /// The first state with `status`, within a deadline.
    pub(crate) async fn until_status(&mut self, status: Status) -> TaskState {
        self.until(status.as_str(), |s| s.last_status == status)
            .await
    }

    fn record(&mut self, st: TaskState) {
        self.history.push(st.clone());
        self.last = Some(st);
    }

    /// Takes in the reports sent so far, without waiting; `true` once the
    /// supervisor has finished.
    pub(crate) fn drain(&mut self) -> bool {
        while let Ok(r) = self.reports.try_recv() {
            match r {
                Report::State(st) => self.record(st),
                Report::Finished(_) => return true,
            }
        }
        false
    }

    /// Waits (with a deadline) for the supervisor to finish.
    pub(crate) async fn finished(&mut self) {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                Ok(Some(Report::Finished(_))) => return,
                Ok(Some(Report::State(st))) => self.record(st),
                _ => panic!("supervisor did not finish; last {:?}", self.last),
            }
        }
    }
}
