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
//! | `berth_server_sessions_opened_total`, `berth_server_sessions_replaced_total` | `LocalSessions::register_session` (`sessions.rs`) |
//! | `berth_server_sessions_closed_total{reason}` | the end of every `Fleet.Connect` session (`fleet.rs`) |
//! | `berth_server_events_applied_total`, `berth_server_events_ignored_total{reason}` | `fleet.rs`, after the store applied (or skipped) an agent's event |
//! | `berth_server_assignments_sent_total` | `fleet.rs`, for every Assignment sent to an agent |
//! | `berth_server_enrollments_total` | `enroll.rs`, for every host enrolled |
//! | `berth_server_store_latency_seconds{operation}`, `berth_server_store_errors_total{operation}` | [`Core::db`], around every store operation (the label is the name its call site gives) |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_proto::metrics::{Counter, Encoder, Histogram, Kind, LATENCY_BUCKETS};
use tokio::sync::watch;

use super::Core;
use super::store::{ACTIVE, DRAINING, EventOutcome, INACTIVE, StoreError};

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
    /// Latency and failures of [`Core::db`] calls, by operation name.
    store: Mutex<BTreeMap<&'static str, StoreTimes>>,
}

/// What `/metrics` shows of one store operation.
#[derive(Debug)]
struct StoreTimes {
    latency: Histogram,
    errors: Counter,
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
            store: Mutex::new(BTreeMap::new()),
        }
    }
}

/// What the store says at scrape time.
#[derive(Debug, Default)]
struct StoreFacts {
    active: u64,
    draining: u64,
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

    fn store_times(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, StoreTimes>> {
        // Counters and histograms hold no invariant a panic could break.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one store operation `op` that took `took`.
    pub(crate) fn store_call(&self, op: &'static str, took: Duration, failed: bool) {
        let mut times = self.store_times();
        let t = times.entry(op).or_insert_with(|| StoreTimes {
            latency: Histogram::new(LATENCY_BUCKETS),
            errors: Counter::new(),
        });
        t.latency.observe_duration(took);
        if failed {
            t.errors.inc();
        }
    }

    /// How many store operations named `op` ran.
    pub fn store_calls(&self, op: &str) -> u64 {
        self.store_times().get(op).map_or(0, |t| t.latency.count())
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
                "Enrolled instances by status (DRAINING: no new tasks; INACTIVE: deregistered).",
                Kind::Gauge,
            );
            e.sample(
                "berth_server_instances",
                &[("status", ACTIVE)],
                f.active as f64,
            );
            e.sample(
                "berth_server_instances",
                &[("status", DRAINING)],
                f.draining as f64,
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
        let times = self.store_times();
        for (op, t) in times.iter() {
            e.histogram(
                "berth_server_store_latency_seconds",
                &[("operation", op)],
                &t.latency.snapshot(),
            );
        }
        e.family(
            "berth_server_store_errors_total",
            "Store calls that failed, by operation.",
            Kind::Counter,
        );
        for (op, t) in times.iter() {
            e.sample(
                "berth_server_store_errors_total",
                &[("operation", op)],
                t.errors.get() as f64,
            );
        }
        drop(times);
        e.finish()
    }
}

/// The `/metrics` text of `core`.
pub(crate) async fn render(core: &Core) -> String {
    let connected = core.sessions().connected_instances().len();
    let facts = core
        .db("metrics_facts", |s| -> Result<StoreFacts, StoreError> {
            let mut f = StoreFacts::default();
            for i in s.instances()? {
                match i.status.as_str() {
                    ACTIVE => f.active += 1,
                    DRAINING => f.draining += 1,
                    _ => f.inactive += 1,
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

    #[tokio::test]
    async fn store_calls_are_timed_by_operation_and_errors_counted() {
        let store = SqliteStore::open_in_memory().expect("store");
        let ca = crate::server::ca::Ca::ephemeral().expect("ca");
        let cfg = crate::server::ServerConfig::loopback("/nonexistent");
        let core = Core::new(Box::new(store), ca, "127.0.0.1:7420".into(), &cfg);
        let instances = core
            .db("instances", |s| s.instances())
            .await
            .expect("instances");
        assert!(instances.is_empty());
        let task = core.db("task", |s| s.task("nope")).await.expect("task");
        assert!(task.is_none());
        let stopped = core
            .db("stop_task", |s| {
                s.stop_task("nope", "UserInitiated", "test")
            })
            .await;
        assert!(stopped.is_err());
        let metrics = &core.metrics;
        assert_eq!(metrics.store_calls("instances"), 1);
        assert_eq!(metrics.store_calls("task"), 1);
        assert_eq!(metrics.store_calls("stop_task"), 1);
        assert_eq!(metrics.store_calls("apply_event"), 0);
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
                draining: 3,
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
            "berth_server_instances{status=\"DRAINING\"} 3",
            "berth_server_instances{status=\"INACTIVE\"} 1",
            "berth_server_tasks{status=\"RUNNING\"} 4",
        ] {
            assert!(lines.contains(&needle), "no line {needle:?} in\n{text}");
        }
    }
}
