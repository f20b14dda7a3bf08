//! berth-agent: the node agent.
//!
//! Background: installed on every host, enrolled once, then it keeps the
//! ECS task groups that the control plane assigns running on the local Docker
//! Engine — also while the control plane is out of reach.
//!
//! Design: one [`manager`] owns the durable state (`state.json`) and one
//! [`supervisor`] per task owns that task's containers; they talk through
//! channels. The [`session`] moves assignments down and sequenced events up;
//! the [`api`] shows the manager's view on loopback. Every effect on the
//! container engine goes through the [`runtime::Runtime`] trait (Docker, or
//! an in-memory fake for unit tests).
//!
//! Limitations: see ARCHITECTURE.md at the repository root.
#![forbid(unsafe_code)]

pub mod api;
pub mod attributes;
pub mod cgroups;
pub mod cli_docs;
pub mod clock;
pub mod commands;
pub mod config;
/// Failpoints stay in every build, release included, on purpose: the e2e
/// fault suite (tests/tests/faults.rs) arms them in the built binary through
/// `BERTH_FAILPOINTS`, and a binary without them would be another binary
/// than the one tested. Unarmed, a point costs one comparison against an
/// empty list read once at start.
pub mod failpoint;
pub mod fsutil;
pub mod identity;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod notify;
pub mod paths;
pub mod policy;
pub mod ports;
pub mod runtime;
pub mod secrets;
pub mod session;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod tls;
pub mod volumes;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use berth_proto::v1::Resources;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::runtime::Runtime;
use crate::supervisor::Settings;

/// Registered capacity (SPEC §4): cores × 1024 CPU units, total memory minus
/// the reserved MiB.
pub fn capacity(reserved_memory_mib: u64) -> Resources {
    let total_bytes = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_memory();
            sys.total_memory()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the host's memory; registering 0 MiB");
            0
        }
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    let total_mib = (total_bytes / (1024 * 1024)) as i64;
    Resources {
        cpu: cores * 1024,
        memory_mib: (total_mib - reserved_memory_mib as i64).max(0),
    }
}

/// Changes on every host boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A running agent; dropping it does not stop it, [`Running::shutdown`] does.
pub struct Running {
    pub api_addr: std::net::SocketAddr,
    pub instance_id: String,
    manager: manager::ManagerHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Waits until the agent's session with the control plane is up (the
    /// server has registered it and sent its Welcome); `false` after
    /// `timeout`.
    pub async fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        let mut view = self.manager.view();
        matches!(
            tokio::time::timeout(timeout, view.wait_for(|v| v.connected)).await,
            Ok(Ok(_))
        )
    }

    /// A one-line summary for systemd's `STATUS=`, or `None` when the
    /// manager does not answer within `timeout` (then the watchdog must not
    /// be fed).
    pub async fn status_line(&self, timeout: std::time::Duration) -> Option<String> {
        if !self.manager.ping(timeout).await {
            return None;
        }
        let v = self.manager.view().borrow().clone();
        let running = v
            .tasks
            .iter()
            .filter(|t| t.last_status == berth_proto::status::Status::Running)
            .count();
        Some(format!(
            "{}, {running} tasks running, {} events pending{}",
            if v.connected {
                "connected"
            } else {
                "disconnected"
            },
            v.outbox.len(),
            if v.store_error.is_some() {
                ", STATE NOT SAVED"
            } else {
                ""
            }
        ))
    }

    /// Stops the session and the API. Containers keep running: an agent
    /// stop never stops workloads.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the agent with `runtime` and `cfg`: state, supervisors, session,
/// local API. Returns once the API serves. Every call on `runtime` is
/// measured for `/metrics` ([`runtime::metered::MeteredRuntime`]).
pub async fn start(cfg: &Config, runtime: Arc<dyn Runtime>) -> anyhow::Result<Running> {
    let metrics = Arc::new(metrics::AgentMetrics::default());
    let runtime: Arc<dyn Runtime> = Arc::new(runtime::metered::MeteredRuntime::new(
        runtime,
        Arc::clone(&metrics),
    ));
    let data_dir = cfg.data_dir.as_path();
    let open = fsutil::create_private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    if open {
        tracing::warn!(data_dir = %data_dir.display(), "the data dir is accessible to group or others; it should be mode 0700 (chmod 700 it)");
    }
    // Refuses secret files readable by others, naming the file and the fix.
    let identity = identity::load(data_dir)?;
    runtime.ping().await?;
    let task_cgroups = match runtime.engine_cgroups().await {
        Ok(engine) => match cgroups::Layout::detect(&engine, Path::new("/sys/fs/cgroup")) {
            Ok(layout) => match layout.check() {
                Ok(()) => Some(layout),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot manage task cgroups; task-level cpu and memory are reserved for placement but not enforced on this host");
                    None
                }
            },
            Err(why) => {
                tracing::warn!(reason = %why, "task-level cpu and memory are reserved for placement but not enforced on this host");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the engine's cgroup driver; task-level cpu and memory are not enforced");
            None
        }
    };
    let settings = Settings {
        instance_id: identity.instance_id.clone(),
        pull_policy: cfg.pull_policy,
        default_stop_timeout: cfg.stop_timeout,
        cleanup_delay: cfg.container_cleanup_delay,
        policy: cfg.policy(),
        check_host_ports: true,
        task_cgroups,
    };
    let manager = manager::Manager::start(
        runtime,
        settings,
        data_dir,
        cfg.start_tasks_offline,
        &boot_id(),
        Arc::clone(&metrics),
    )
    .await?;
    let (shutdown, shutdown_rx) = watch::channel(false);

    let (api_addr, api) = api::bind(
        cfg.api_addr(),
        manager.view(),
        Arc::clone(&metrics),
        identity.server.clone(),
        shutdown_rx.clone(),
    )
    .await
    .with_context(|| format!("cannot listen on api_listen {}", cfg.api_listen))?;
    write_api_file(data_dir, &api_addr, &identity.instance_id)?;
    let api_task = tokio::spawn(async move {
        if let Err(e) = api.await {
            tracing::error!(error = %e, "local API failed");
        }
    });

    let hostname = identity::hostname();
    let attributes = attributes::host_attributes(&cfg.policy(), &hostname, &cfg.attributes)
        .into_iter()
        .collect();
    let host = session::HostInfo {
        hostname,
        boot_id: boot_id(),
        capacity: capacity(cfg.reserved_memory_mib),
        attributes,
    };
    let instance_id = identity.instance_id.clone();
    let session_task = tokio::spawn(session::run(
        identity,
        host,
        manager.clone(),
        metrics,
        shutdown_rx,
    ));
    info!(api = %api_addr, instance_id = %instance_id, "berth-agent ready");
    Ok(Running {
        api_addr,
        instance_id,
        manager,
        shutdown,
        tasks: vec![api_task, session_task],
    })
}

fn write_api_file(
    data_dir: &Path,
    addr: &std::net::SocketAddr,
    instance_id: &str,
) -> anyhow::Result<()> {
    let p = data_dir.join("agent-api.json");
    let body = serde_json::json!({ "apiAddr": addr.to_string(), "instanceId": instance_id });
    fsutil::write_atomic(&p, body.to_string().as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", p.display()))
}
