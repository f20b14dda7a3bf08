//! The control plane's Prometheus metrics: `GET /metrics` on
//! `--metrics-listen` (default [`super::DEFAULT_METRICS_LISTEN`], loopback).
//!
//! Plain HTTP and read-only: it serves nothing but `GET /metrics`, which
//! holds counts and latencies, never a secret, an instance id or a task.
//! Keep it on loopback, or behind a firewall, like any exporter.
//!
//! Where each number comes from:
//!
//! | metric | incremented / read in |
//! |---|---|
//! | `berth_server_connected_instances` | the session registry, at scrape time |
//! | `berth_server_instances{status}`, `berth_server_tasks{status}` | the store, at scrape time |
//! | `berth_server_sessions_opened_total`, `berth_server_sessions_replaced_total` | `Core::register_session` (`mod.rs`) |
//! | `berth_server_sessions_closed_total{reason}` | the end of every `Fleet.Connect` session (`fleet.rs`) |
//! | `berth_server_events_applied_total`, `berth_server_events_ignored_total{reason}` | `fleet.rs`, after the store applied (or skipped) an agent's event |
//! | `berth_server_assignments_sent_total` | `fleet.rs`, for every Assignment sent to an agent |
//! | `berth_server_enrollments_total` | `enroll.rs`, for every host enrolled |
//! | `berth_server_store_latency_seconds{operation}`, `berth_server_store_errors_total{operation}` | [`TimedStore`], around every [`Store`] call |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_proto::metrics::{Counter, Encoder, Histogram, Kind, LATENCY_BUCKETS};
use berth_proto::v1::{Assignment, TaskEvent};
use tokio::sync::watch;

use super::Core;
use super::store::{
    ACTIVE, ActivationRecord, AdminCertRecord, CertUse, EventOutcome, HelloOutcome, HelloRecord,
    INACTIVE, InstanceRecord, NewInstance, Store, StoreError, TaskRecord, Usage,
};

/// The [`Store`] methods, as the `operation` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    CreateActivation,
    Activation,
    Enroll,
    Instance,
    Instances,
    Usage,
    RecordHello,
    RecordHeartbeat,
    RecordAssignmentAck,
    DeregisterInstance,
    ApplyEvent,
    Assignment,
    InsertTask,
    Task,
    Tasks,
    StopTask,
    RecordAdminCert,
    AdminCert,
    AdminCerts,
    RevokeAdminCert,
    AcceptCapacity,
    UseCertificate,
    RecordRenewal,
}

impl StoreOp {
    pub const ALL: [StoreOp; 23] = [
        StoreOp::CreateActivation,
        StoreOp::Activation,
        StoreOp::Enroll,
        StoreOp::Instance,
        StoreOp::Instances,
        StoreOp::Usage,
        StoreOp::RecordHello,
        StoreOp::RecordHeartbeat,
        StoreOp::RecordAssignmentAck,
        StoreOp::DeregisterInstance,
        StoreOp::ApplyEvent,
        StoreOp::Assignment,
        StoreOp::InsertTask,
        StoreOp::Task,
        StoreOp::Tasks,
        StoreOp::StopTask,
        StoreOp::RecordAdminCert,
        StoreOp::AdminCert,
        StoreOp::AdminCerts,
        StoreOp::RevokeAdminCert,
        StoreOp::AcceptCapacity,
        StoreOp::UseCertificate,
        StoreOp::RecordRenewal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::CreateActivation => "create_activation",
            StoreOp::Activation => "activation",
            StoreOp::Enroll => "enroll",
            StoreOp::Instance => "instance",
            StoreOp::Instances => "instances",
            StoreOp::Usage => "usage",
            StoreOp::RecordHello => "record_hello",
            StoreOp::RecordHeartbeat => "record_heartbeat",
            StoreOp::RecordAssignmentAck => "record_assignment_ack",
            StoreOp::DeregisterInstance => "deregister_instance",
            StoreOp::ApplyEvent => "apply_event",
            StoreOp::Assignment => "assignment",
            StoreOp::InsertTask => "insert_task",
            StoreOp::Task => "task",
            StoreOp::Tasks => "tasks",
            StoreOp::StopTask => "stop_task",
            StoreOp::RecordAdminCert => "record_admin_cert",
            StoreOp::AdminCert => "admin_cert",
            StoreOp::AdminCerts => "admin_certs",
            StoreOp::RevokeAdminCert => "revoke_admin_cert",
            StoreOp::AcceptCapacity => "accept_capacity",
            StoreOp::UseCertificate => "use_certificate",
            StoreOp::RecordRenewal => "record_renewal",
        }
    }
}

/// Why a `Fleet.Connect` session ended, as the `reason` label names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    AgentClosed,
    StreamError,
    RateLimited,
    ClosedByServer,
    Refused,
    Silent,
    AgentGone,
    StoreError,
}

impl SessionEnd {
    pub const ALL: [SessionEnd; 8] = [
        SessionEnd::AgentClosed,
        SessionEnd::StreamError,
        SessionEnd::RateLimited,
        SessionEnd::ClosedByServer,
        SessionEnd::Refused,
        SessionEnd::Silent,
        SessionEnd::AgentGone,
        SessionEnd::StoreError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::AgentClosed => "agent_closed",
            SessionEnd::StreamError => "stream_error",
            SessionEnd::RateLimited => "rate_limited",
            SessionEnd::ClosedByServer => "closed_by_server",
            SessionEnd::Refused => "refused",
            SessionEnd::Silent => "silent",
            SessionEnd::AgentGone => "agent_gone",
            SessionEnd::StoreError => "store_error",
        }
    }
}

/// Every counter and histogram of one control plane.
#[derive(Debug)]
pub struct ServerMetrics {
    pub sessions_opened: Counter,
    pub sessions_replaced: Counter,
    sessions_closed: Vec<Counter>,
    pub events_applied: Counter,
    pub events_replayed: Counter,
    pub events_foreign: Counter,
    pub assignments_sent: Counter,
    pub enrollments: Counter,
    store_latency: Vec<Histogram>,
    store_errors: Vec<Counter>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            sessions_opened: Counter::new(),
            sessions_replaced: Counter::new(),
            sessions_closed: SessionEnd::ALL.iter().map(|_| Counter::new()).collect(),
            events_applied: Counter::new(),
            events_replayed: Counter::new(),
            events_foreign: Counter::new(),
            assignments_sent: Counter::new(),
            enrollments: Counter::new(),
            store_latency: StoreOp::ALL
                .iter()
                .map(|_| Histogram::new(LATENCY_BUCKETS))
                .collect(),
            store_errors: StoreOp::ALL.iter().map(|_| Counter::new()).collect(),
        }
    }
}

/// What the store says at scrape time.
#[derive(Debug, Default)]
struct StoreFacts {
    active: u64,
    inactive: u64,
    running: u64,
    pending: u64,
}

impl ServerMetrics {
    pub fn session_closed(&self, why: SessionEnd) {
        if let Some(c) = self.sessions_closed.get(why as usize) {
            c.inc();
        }
    }

    /// Counts what applying one event did.
    pub fn event(&self, outcome: &EventOutcome) {
        if !outcome.applied {
            self.events_replayed.inc();
        } else if outcome.foreign_task || outcome.unknown_task {
            self.events_foreign.inc();
        } else {
            self.events_applied.inc();
        }
    }

    fn store_call(&self, op: StoreOp, took: std::time::Duration, failed: bool) {
        if let Some(h) = self.store_latency.get(op as usize) {
            h.observe_duration(took);
        }
        if failed && let Some(c) = self.store_errors.get(op as usize) {
            c.inc();
        }
    }

    /// How many calls of `op` the store got.
    pub fn store_calls(&self, op: StoreOp) -> u64 {
        self.store_latency
            .get(op as usize)
            .map_or(0, Histogram::count)
    }

    fn render(&self, connected: usize, facts: Option<&StoreFacts>) -> String {
        let mut e = Encoder::new();
        e.gauge(
            "berth_server_connected_instances",
            "Instances with a live session now.",
            connected as f64,
        );
        if let Some(f) = facts {
            e.family(
                "berth_server_instances",
                "Enrolled instances by status (INACTIVE: deregistered).",
                Kind::Gauge,
            );
            e.sample(
                "berth_server_instances",
                &[("status", ACTIVE)],
                f.active as f64,
            );
            e.sample(
                "berth_server_instances",
                &[("status", INACTIVE)],
                f.inactive as f64,
            );
            e.family(
                "berth_server_tasks",
                "Tasks not stopped yet, by last status.",
                Kind::Gauge,
            );
            e.sample(
                "berth_server_tasks",
                &[("status", "RUNNING")],
                f.running as f64,
            );
            e.sample(
                "berth_server_tasks",
                &[("status", "PENDING")],
                f.pending as f64,
            );
        }
        e.counter(
            "berth_server_sessions_opened_total",
            "Agent sessions accepted (Hello checked and recorded); each then gets its Welcome.",
            self.sessions_opened.get(),
        );
        e.counter(
            "berth_server_sessions_replaced_total",
            "Sessions closed because a newer session of the same instance opened (a reconnect, or two hosts sharing one identity).",
            self.sessions_replaced.get(),
        );
        e.family(
            "berth_server_sessions_closed_total",
            "Agent session streams that ended, by reason (refused: no Hello in time, or a wrong one).",
            Kind::Counter,
        );
        for why in SessionEnd::ALL {
            if let Some(c) = self.sessions_closed.get(why as usize) {
                e.sample(
                    "berth_server_sessions_closed_total",
                    &[("reason", why.as_str())],
                    c.get() as f64,
                );
            }
        }
        e.counter(
            "berth_server_events_applied_total",
            "Task events from agents applied to the store.",
            self.events_applied.get(),
        );
        e.family(
            "berth_server_events_ignored_total",
            "Task events from agents not applied: replays of events already applied, and events naming another instance's task.",
            Kind::Counter,
        );
        e.sample(
            "berth_server_events_ignored_total",
            &[("reason", "replay")],
            self.events_replayed.get() as f64,
        );
        e.sample(
            "berth_server_events_ignored_total",
            &[("reason", "foreign_task")],
            self.events_foreign.get() as f64,
        );
        e.counter(
            "berth_server_assignments_sent_total",
            "Assignments (an instance's desired task set) sent to agents.",
            self.assignments_sent.get(),
        );
        e.counter(
            "berth_server_enrollments_total",
            "Hosts enrolled with an activation.",
            self.enrollments.get(),
        );
        e.family(
            "berth_server_store_latency_seconds",
            "Latency of the store's calls (SQLite, transactions included), by operation.",
            Kind::Histogram,
        );
        for op in StoreOp::ALL {
            if let Some(h) = self.store_latency.get(op as usize) {
                e.histogram(
                    "berth_server_store_latency_seconds",
                    &[("operation", op.as_str())],
                    &h.snapshot(),
                );
            }
        }
        e.family(
            "berth_server_store_errors_total",
            "Store calls that failed, by operation.",
            Kind::Counter,
        );
        for op in StoreOp::ALL {
            if let Some(c) = self.store_errors.get(op as usize) {
                e.sample(
                    "berth_server_store_errors_total",
                    &[("operation", op.as_str())],
                    c.get() as f64,
                );
            }
        }
        e.finish()
    }
}

/// A [`Store`] that times every call of the one it wraps.
pub struct TimedStore {
    inner: Box<dyn Store>,
    metrics: Arc<ServerMetrics>,
}

impl TimedStore {
    pub fn new(inner: Box<dyn Store>, metrics: Arc<ServerMetrics>) -> TimedStore {
        TimedStore { inner, metrics }
    }

    fn timed<T>(
        &mut self,
        op: StoreOp,
        call: impl FnOnce(&mut dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call(self.inner.as_mut());
        self.metrics
            .store_call(op, started.elapsed(), result.is_err());
        result
    }

    fn timed_ref<T>(
        &self,
        op: StoreOp,
        call: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call(self.inner.as_ref());
        self.metrics
            .store_call(op, started.elapsed(), result.is_err());
        result
    }
}

impl Store for TimedStore {
    fn create_activation(&mut self, activation: &ActivationRecord) -> Result<(), StoreError> {
        self.timed(StoreOp::CreateActivation, |s| {
            s.create_activation(activation)
        })
    }

    fn activation(&self, id: &str) -> Result<Option<ActivationRecord>, StoreError> {
        self.timed_ref(StoreOp::Activation, |s| s.activation(id))
    }

    fn enroll(
        &mut self,
        activation_id: &str,
        now_ms: i64,
        instance: &NewInstance,
    ) -> Result<(), StoreError> {
        self.timed(StoreOp::Enroll, |s| {
            s.enroll(activation_id, now_ms, instance)
        })
    }

    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.timed_ref(StoreOp::Instance, |s| s.instance(id))
    }

    fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.timed_ref(StoreOp::Instances, |s| s.instances())
    }

    fn usage(&self) -> Result<HashMap<String, Usage>, StoreError> {
        self.timed_ref(StoreOp::Usage, |s| s.usage())
    }

    fn record_hello(&mut self, id: &str, hello: &HelloRecord) -> Result<HelloOutcome, StoreError> {
        self.timed(StoreOp::RecordHello, |s| s.record_hello(id, hello))
    }

    fn record_heartbeat(&mut self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.timed(StoreOp::RecordHeartbeat, |s| s.record_heartbeat(id, at_ms))
    }

    fn record_assignment_ack(&mut self, id: &str, generation: u64) -> Result<(), StoreError> {
        self.timed(StoreOp::RecordAssignmentAck, |s| {
            s.record_assignment_ack(id, generation)
        })
    }

    fn accept_capacity(
        &mut self,
        id: &str,
    ) -> Result<(InstanceRecord, InstanceRecord), StoreError> {
        self.timed(StoreOp::AcceptCapacity, |s| s.accept_capacity(id))
    }

    fn use_certificate(&mut self, id: &str, serial: &str) -> Result<CertUse, StoreError> {
        self.timed(StoreOp::UseCertificate, |s| s.use_certificate(id, serial))
    }

    fn record_renewal(
        &mut self,
        id: &str,
        presented: &str,
        issued: &str,
    ) -> Result<CertUse, StoreError> {
        self.timed(StoreOp::RecordRenewal, |s| {
            s.record_renewal(id, presented, issued)
        })
    }

    fn deregister_instance(
        &mut self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<InstanceRecord, StoreError> {
        self.timed(StoreOp::DeregisterInstance, |s| {
            s.deregister_instance(id, stop_code, reason)
        })
    }

    fn apply_event(
        &mut self,
        instance_id: &str,
        event: &TaskEvent,
        now_ms: i64,
    ) -> Result<EventOutcome, StoreError> {
        self.timed(StoreOp::ApplyEvent, |s| {
            s.apply_event(instance_id, event, now_ms)
        })
    }

    fn assignment(&self, instance_id: &str) -> Result<Assignment, StoreError> {
        self.timed_ref(StoreOp::Assignment, |s| s.assignment(instance_id))
    }

    fn insert_task(&mut self, task: &TaskRecord) -> Result<u64, StoreError> {
        self.timed(StoreOp::InsertTask, |s| s.insert_task(task))
    }

    fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.timed_ref(StoreOp::Task, |s| s.task(id))
    }

    fn tasks(&self, instance_id: Option<&str>) -> Result<Vec<TaskRecord>, StoreError> {
        self.timed_ref(StoreOp::Tasks, |s| s.tasks(instance_id))
    }

    fn stop_task(
        &mut self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<(TaskRecord, bool), StoreError> {
        self.timed(StoreOp::StopTask, |s| s.stop_task(id, stop_code, reason))
    }

    fn record_admin_cert(&mut self, cert: &AdminCertRecord) -> Result<(), StoreError> {
        self.timed(StoreOp::RecordAdminCert, |s| s.record_admin_cert(cert))
    }

    fn admin_cert(&self, serial: &str) -> Result<Option<AdminCertRecord>, StoreError> {
        self.timed_ref(StoreOp::AdminCert, |s| s.admin_cert(serial))
    }

    fn admin_certs(&self) -> Result<Vec<AdminCertRecord>, StoreError> {
        self.timed_ref(StoreOp::AdminCerts, |s| s.admin_certs())
    }

    fn revoke_admin_cert(
        &mut self,
        serial: &str,
        now_ms: i64,
    ) -> Result<(AdminCertRecord, bool), StoreError> {
        self.timed(StoreOp::RevokeAdminCert, |s| {
            s.revoke_admin_cert(serial, now_ms)
        })
    }
}

/// The `/metrics` text of `core`.
pub(crate) async fn render(core: &Core) -> String {
    let connected = core.connected_instances().len();
    let facts = core
        .db(|s| -> Result<StoreFacts, StoreError> {
            let mut f = StoreFacts::default();
            for i in s.instances()? {
                if i.status == ACTIVE {
                    f.active += 1;
                } else {
                    f.inactive += 1;
                }
            }
            for u in s.usage()?.values() {
                f.running += u64::from(u.running);
                f.pending += u64::from(u.pending);
            }
            Ok(f)
        })
        .await;
    let facts = match facts {
        Ok(f) => Some(f),
        Err(e) => {
            // The counters are still worth serving; the store's errors
            // show in berth_server_store_errors_total.
            tracing::warn!(error = %e, "metrics: cannot read instances and tasks from the store");
            None
        }
    };
    core.metrics.render(connected, facts.as_ref())
}

/// Serves `GET /metrics` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(prometheus))
        .with_state(core);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

async fn prometheus(State(core): State<Arc<Core>>) -> Response {
    let body = render(&core).await;
    ([("content-type", berth_proto::metrics::CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::SqliteStore;

    #[test]
    fn store_calls_are_timed_by_operation_and_errors_counted() {
        let metrics = Arc::new(ServerMetrics::default());
        let inner = SqliteStore::open_in_memory().expect("store");
        let mut store = TimedStore::new(Box::new(inner), Arc::clone(&metrics));
        assert!(store.instances().expect("instances").is_empty());
        assert!(store.task("nope").expect("task").is_none());
        assert!(store.stop_task("nope", "UserInitiated", "test").is_err());
        assert_eq!(metrics.store_calls(StoreOp::Instances), 1);
        assert_eq!(metrics.store_calls(StoreOp::Task), 1);
        assert_eq!(metrics.store_calls(StoreOp::StopTask), 1);
        assert_eq!(metrics.store_calls(StoreOp::ApplyEvent), 0);
        let text = metrics.render(3, None);
        let lines: Vec<&str> = text.lines().collect();
        for needle in [
            "berth_server_connected_instances 3",
            "berth_server_store_latency_seconds_count{operation=\"stop_task\"} 1",
            "berth_server_store_errors_total{operation=\"stop_task\"} 1",
            "berth_server_store_errors_total{operation=\"task\"} 0",
            "berth_server_events_applied_total 0",
        ] {
            assert!(lines.contains(&needle), "no line {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("berth_server_instances"),
            "no store facts, no instance gauge: {text}"
        );
    }

    #[test]
    fn events_and_session_ends_are_counted_by_kind() {
        let m = ServerMetrics::default();
        m.event(&EventOutcome {
            applied: true,
            ..Default::default()
        });
        m.event(&EventOutcome::default());
        m.event(&EventOutcome {
            applied: true,
            foreign_task: true,
            ..Default::default()
        });
        m.session_closed(SessionEnd::Silent);
        let text = m.render(
            0,
            Some(&StoreFacts {
                active: 2,
                inactive: 1,
                running: 4,
                pending: 0,
            }),
        );
        let lines: Vec<&str> = text.lines().collect();
        for needle in [
            "berth_server_events_applied_total 1",
            "berth_server_events_ignored_total{reason=\"replay\"} 1",
            "berth_server_events_ignored_total{reason=\"foreign_task\"} 1",
            "berth_server_sessions_closed_total{reason=\"silent\"} 1",
            "berth_server_sessions_closed_total{reason=\"refused\"} 0",
            "berth_server_instances{status=\"ACTIVE\"} 2",
            "berth_server_instances{status=\"INACTIVE\"} 1",
            "berth_server_tasks{status=\"RUNNING\"} 4",
        ] {
            assert!(lines.contains(&needle), "no line {needle:?} in\n{text}");
        }
    }
}
