//! The agent's Prometheus metrics, served as `/metrics` by the local API.
//!
//! One [`AgentMetrics`] per agent, shared through an `Arc`. Where each
//! number comes from:
//!
//! | metric | incremented / read in |
//! |---|---|
//! | `berth_agent_docker_request_duration_seconds{operation}`, `berth_agent_docker_request_errors_total{operation}` | [`crate::runtime::metered::MeteredRuntime`], around every [`crate::runtime::Runtime`] call |
//! | `berth_agent_image_pulls_total{result}`, `berth_agent_image_pull_duration_seconds` | the same decorator's `ensure_image` |
//! | `berth_agent_container_restarts_total` | the manager, when a task state it records has a higher `restartCount` than the one before |
//! | `berth_agent_events_total` | the manager, for every event it queues in the outbox |
//! | `berth_agent_store_bytes`, `berth_agent_store_write_duration_seconds`, `berth_agent_store_write_errors_total` | the manager, around every write of `state.json` |
//! | `berth_agent_sessions_established_total`, `berth_agent_session_reconnects_total` | the session loop |
//! | `berth_agent_connected`, `berth_agent_tasks{status}`, `berth_agent_outbox_events`, `berth_agent_assignment_generation`, `berth_agent_store_healthy` | the manager's [`View`], read at scrape time |
//!
//! Counters start at 0 when the agent starts (Prometheus' `rate()` and
//! `increase()` handle the reset).

use std::sync::atomic::{AtomicU64, Ordering};

use berth_proto::metrics::{Counter, Encoder, Histogram, Kind, LATENCY_BUCKETS, PULL_BUCKETS};

use crate::manager::View;

/// The [`crate::runtime::Runtime`] calls, as the `operation` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerOp {
    Ping,
    EnsureImage,
    Create,
    Start,
    Stop,
    Remove,
    Inspect,
    List,
    EnsureVolume,
    RemoveVolume,
    LogDrivers,
}

impl DockerOp {
    pub const ALL: [DockerOp; 11] = [
        DockerOp::Ping,
        DockerOp::EnsureImage,
        DockerOp::Create,
        DockerOp::Start,
        DockerOp::Stop,
        DockerOp::Remove,
        DockerOp::Inspect,
        DockerOp::List,
        DockerOp::EnsureVolume,
        DockerOp::RemoveVolume,
        DockerOp::LogDrivers,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DockerOp::Ping => "ping",
            DockerOp::EnsureImage => "ensure_image",
            DockerOp::Create => "create",
            DockerOp::Start => "start",
            DockerOp::Stop => "stop",
            DockerOp::Remove => "remove",
            DockerOp::Inspect => "inspect",
            DockerOp::List => "list",
            DockerOp::EnsureVolume => "ensure_volume",
            DockerOp::RemoveVolume => "remove_volume",
            DockerOp::LogDrivers => "log_drivers",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Every counter and histogram of one agent.
#[derive(Debug)]
pub struct AgentMetrics {
    docker_latency: Vec<Histogram>,
    docker_errors: Vec<Counter>,
    pub image_pulls_succeeded: Counter,
    pub image_pulls_failed: Counter,
    pub image_pull_duration: Histogram,
    pub container_restarts: Counter,
    pub events: Counter,
    pub sessions_established: Counter,
    pub session_reconnects: Counter,
    store_bytes: AtomicU64,
    pub store_write_duration: Histogram,
    pub store_write_errors: Counter,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            docker_latency: DockerOp::ALL
                .iter()
                .map(|_| Histogram::new(LATENCY_BUCKETS))
                .collect(),
            docker_errors: DockerOp::ALL.iter().map(|_| Counter::new()).collect(),
            image_pulls_succeeded: Counter::new(),
            image_pulls_failed: Counter::new(),
            image_pull_duration: Histogram::new(PULL_BUCKETS),
            container_restarts: Counter::new(),
            events: Counter::new(),
            sessions_established: Counter::new(),
            session_reconnects: Counter::new(),
            store_bytes: AtomicU64::new(0),
            store_write_duration: Histogram::new(LATENCY_BUCKETS),
            store_write_errors: Counter::new(),
        }
    }
}

impl AgentMetrics {
    /// Records one runtime call: its duration, and whether it failed.
    pub fn docker_call(&self, op: DockerOp, took: std::time::Duration, failed: bool) {
        if let Some(h) = self.docker_latency.get(op.index()) {
            h.observe_duration(took);
        }
        if failed && let Some(c) = self.docker_errors.get(op.index()) {
            c.inc();
        }
    }

    /// How many calls of `op` were made.
    pub fn docker_calls(&self, op: DockerOp) -> u64 {
        self.docker_latency
            .get(op.index())
            .map_or(0, Histogram::count)
    }

    /// The size of `state.json` as last written (or read at start).
    pub fn set_store_bytes(&self, bytes: u64) {
        self.store_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn store_bytes(&self) -> u64 {
        self.store_bytes.load(Ordering::Relaxed)
    }

    /// The `/metrics` text: these counters and the gauges of `view`.
    pub fn render(&self, v: &View) -> String {
        let mut e = Encoder::new();
        e.gauge(
            "berth_agent_connected",
            "1 when the session with the control plane is up.",
            f64::from(u8::from(v.connected)),
        );
        e.counter(
            "berth_agent_sessions_established_total",
            "Sessions with the control plane that got as far as the Welcome.",
            self.sessions_established.get(),
        );
        e.counter(
            "berth_agent_session_reconnects_total",
            "Connection attempts after the first one: each follows a session that ended or failed to open.",
            self.session_reconnects.get(),
        );
        e.family(
            "berth_agent_tasks",
            "Tasks known to the agent by last status.",
            Kind::Gauge,
        );
        for status in berth_proto::status::Status::ALL {
            let n = v.tasks.iter().filter(|t| t.last_status == *status).count();
            e.sample(
                "berth_agent_tasks",
                &[("status", status.as_str())],
                n as f64,
            );
        }
        e.counter(
            "berth_agent_container_restarts_total",
            "Container restarts by the restart policy since the agent started.",
            self.container_restarts.get(),
        );
        e.counter(
            "berth_agent_events_total",
            "Task state events queued for the control plane since the agent started.",
            self.events.get(),
        );
        e.gauge(
            "berth_agent_outbox_events",
            "Events waiting for the control plane's acknowledgement.",
            v.outbox.len() as f64,
        );
        e.gauge(
            "berth_agent_assignment_generation",
            "Generation of the last applied assignment.",
            v.generation as f64,
        );
        e.family(
            "berth_agent_image_pulls_total",
            "Images made available for containers, by result: one per container creation, pulled as pull_policy says (with once or prefer-cached a cached image counts as a success without asking the registry).",
            Kind::Counter,
        );
        e.sample(
            "berth_agent_image_pulls_total",
            &[("result", "success")],
            self.image_pulls_succeeded.get() as f64,
        );
        e.sample(
            "berth_agent_image_pulls_total",
            &[("result", "failure")],
            self.image_pulls_failed.get() as f64,
        );
        e.family(
            "berth_agent_image_pull_duration_seconds",
            "How long making an image available took, pulls that failed included.",
            Kind::Histogram,
        );
        e.histogram(
            "berth_agent_image_pull_duration_seconds",
            &[],
            &self.image_pull_duration.snapshot(),
        );
        e.family(
            "berth_agent_docker_request_duration_seconds",
            "Latency of the agent's calls to the Docker Engine, by operation (ensure_image includes pulls, stop includes the stop timeout).",
            Kind::Histogram,
        );
        for op in DockerOp::ALL {
            if let Some(h) = self.docker_latency.get(op.index()) {
                e.histogram(
                    "berth_agent_docker_request_duration_seconds",
                    &[("operation", op.as_str())],
                    &h.snapshot(),
                );
            }
        }
        e.family(
            "berth_agent_docker_request_errors_total",
            "Calls to the Docker Engine that failed, by operation.",
            Kind::Counter,
        );
        for op in DockerOp::ALL {
            if let Some(c) = self.docker_errors.get(op.index()) {
                e.sample(
                    "berth_agent_docker_request_errors_total",
                    &[("operation", op.as_str())],
                    c.get() as f64,
                );
            }
        }
        e.gauge(
            "berth_agent_store_bytes",
            "Size of the agent's state file (state.json) as last written.",
            self.store_bytes() as f64,
        );
        e.family(
            "berth_agent_store_write_duration_seconds",
            "How long writing state.json took (write, fsync, rename, fsync of the directory).",
            Kind::Histogram,
        );
        e.histogram(
            "berth_agent_store_write_duration_seconds",
            &[],
            &self.store_write_duration.snapshot(),
        );
        e.counter(
            "berth_agent_store_write_errors_total",
            "Writes of state.json that failed (full disk, …); the state stays in memory and is written with the next change.",
            self.store_write_errors.get(),
        );
        e.gauge(
            "berth_agent_store_healthy",
            "0 while the agent cannot write its state (see storeError in /v1/metadata).",
            f64::from(u8::from(v.store_error.is_none())),
        );
        e.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::TaskState;
    use std::time::Duration;

    #[test]
    fn render_has_every_family_once_with_its_type() {
        let m = AgentMetrics::default();
        m.docker_call(DockerOp::Start, Duration::from_millis(3), false);
        m.docker_call(DockerOp::Start, Duration::from_millis(4), true);
        m.container_restarts.inc();
        m.set_store_bytes(1234);
        let view = View {
            connected: true,
            tasks: vec![TaskState {
                task_id: "t1".into(),
                last_status: "RUNNING".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = m.render(&view);
        let lines: Vec<&str> = text.lines().collect();
        for needle in [
            "berth_agent_connected 1",
            "berth_agent_tasks{status=\"RUNNING\"} 1",
            "berth_agent_tasks{status=\"PENDING\"} 0",
            "berth_agent_container_restarts_total 1",
            "berth_agent_docker_request_duration_seconds_count{operation=\"start\"} 2",
            "berth_agent_docker_request_duration_seconds_count{operation=\"create\"} 0",
            "berth_agent_docker_request_errors_total{operation=\"start\"} 1",
            "berth_agent_store_bytes 1234",
            "berth_agent_store_healthy 1",
            "berth_agent_image_pulls_total{result=\"failure\"} 0",
        ] {
            assert!(lines.contains(&needle), "no line {needle:?} in\n{text}");
        }
        // Every family is declared once, and every sample belongs to a
        // declared family.
        let mut declared = Vec::new();
        for l in &lines {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(!declared.contains(&name), "{name} declared twice");
                declared.push(name);
            }
        }
        for l in lines.iter().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(f)))
                .unwrap_or(name);
            assert!(declared.contains(&family), "undeclared sample {l:?}");
        }
        assert_eq!(m.docker_calls(DockerOp::Start), 2);
    }
}
