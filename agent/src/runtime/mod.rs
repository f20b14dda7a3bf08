//! The boundary between the task supervisor and the container engine.
//!
//! [`Runtime`] is everything the agent needs from a container engine. The real
//! implementation is [`docker::DockerRuntime`] (the local Docker Engine through
//! bollard); `fake::FakeRuntime` (unit tests, feature `fake-runtime`) is an in-memory engine for tests of
//! the task lifecycle. [`metered::MeteredRuntime`] wraps either and times
//! every call for the agent's metrics.
//!
//! Invariants every implementation keeps:
//! - it only reports and touches containers that carry the
//!   `berth.instance-id` label of the agent that asks;
//! - `events` yields `Resync` once its subscription is in place, so a caller
//!   that inspects its containers after each `Resync` misses no state change
//!   between its inspection and the subscription;
//! - a container exit is reported once, as [`RuntimeEvent::Died`] (health
//!   probe exits are not container exits).

pub mod docker;
/// Only in unit tests, or for a crate that turns on `fake-runtime`: the
/// release binary never carries an engine that runs nothing.
#[cfg(any(test, feature = "fake-runtime"))]
pub mod fake;
pub mod metered;
pub mod naming;

use std::collections::BTreeMap;
use std::time::Duration;

use berth_taskdef::ContainerDefinition;
use futures_util::stream::BoxStream;

pub use naming::{
    LABEL_CONTAINER_NAME, LABEL_INSTANCE_ID, LABEL_SHARED, LABEL_SHARED_BY, LABEL_TASK_FAMILY,
    LABEL_TASK_ID, LABEL_VOLUME_NAME, container_name, short_id,
};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be reached at all (socket missing, refused, …).
    #[error("docker engine unreachable at {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    /// The image could not be pulled; `message` is the registry's own words.
    #[error("cannot pull image {image}: {message}")]
    Pull { image: String, message: String },
    #[error("no such container {0}")]
    NotFound(String),
    /// The engine refused the request; `message` is its own words.
    #[error("docker engine refused to {action} {target}: {message}")]
    Engine {
        action: &'static str,
        target: String,
        message: String,
    },
    /// A shared volume that the task definition says not to create
    /// (`autoprovision` false) does not exist.
    #[error(
        "shared volume {0} does not exist on this host and its dockerVolumeConfiguration has autoprovision false; create it (docker volume create {0}) or set autoprovision to true"
    )]
    NoSuchVolume(String),
    /// A shared volume exists but berth did not create it (no
    /// [`LABEL_SHARED`]) and the policy does not name it.
    #[error(
        "shared volume {0} exists on this host but berth did not create it (it has no berth.shared label), so it may belong to another workload; to let tasks on this host mount it, add \"{0}\" to allowed_shared_volumes in the agent config (or BERTH_ALLOWED_SHARED_VOLUMES)"
    )]
    ForeignSharedVolume(String),
    /// A shared volume exists, but with another driver than the definition asks for.
    #[error(
        "shared volume {name} already exists with driver {existing}, but the task definition asks for driver {wanted}"
    )]
    VolumeDriverMismatch {
        name: String,
        existing: String,
        wanted: String,
    },
}

/// When to pull an image (an agent setting, as in ECS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull; when the pull fails, use a cached image if there is one.
    #[default]
    Default,
    /// Always pull; a failed pull fails the task.
    Always,
    /// Pull only when the image is not cached.
    Once,
    /// Use a cached image when there is one, pull otherwise.
    PreferCached,
}

/// Everything needed to create one container of a task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    /// Docker container name: `berth-<family>-<container>-<short task id>`.
    pub name: String,
    /// The SPEC labels plus the definition's `dockerLabels`.
    pub labels: BTreeMap<String, String>,
    /// `bridge`, `host` or `none`.
    pub network_mode: String,
    /// The container definition as the task definition gives it.
    pub definition: ContainerDefinition,
    /// Stop timeout used when the definition has none.
    pub default_stop_timeout: Duration,
    /// The definition's `mountPoints`, resolved against the task's
    /// `volumes`: host paths and Docker volume names.
    pub mounts: Vec<Mount>,
    /// The definition's `volumesFrom`: (Docker name of the source container,
    /// read-only).
    pub volumes_from: Vec<(String, bool)>,
    /// Docker's PID mode: the task's `pidMode` `host`, or for `task`
    /// `container:<anchor>` on every container but the anchor (the first
    /// to start), whose namespace they join.
    pub pid_mode: Option<String>,
    /// Docker's IPC mode: the task's `ipcMode` `host` or `none`, or for
    /// `task` `shareable` on the anchor and `container:<anchor>` on the
    /// others.
    pub ipc_mode: Option<String>,
    /// The definition's `secrets`, resolved: added to its environment at
    /// create; `Debug` shows the names only.
    pub secret_env: crate::secrets::SecretEnv,
    /// Docker's `CgroupParent`: the task's cgroup when it has task-level
    /// `cpu` or `memory` and the host's layout is managed
    /// ([`crate::cgroups`]).
    pub cgroup_parent: Option<String>,
}

/// One resolved mount point of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path (`host.sourcePath`), bind-mounted; it must exist (the
    /// engine refuses a missing one rather than creating it).
    Bind(String),
    /// A Docker volume, by its Docker name.
    Volume(String),
}

/// Lifetime of a Docker volume (`dockerVolumeConfiguration.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeScope {
    /// Created for one task and removed with it.
    #[default]
    Task,
    /// Outlives the task; berth never removes it.
    Shared,
}

/// A Docker volume a task needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSpec {
    /// Docker volume name.
    pub name: String,
    pub scope: VolumeScope,
    /// Volume driver; `None` is Docker's default (`local`).
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Shared scope only: create the volume when it does not exist. Task
    /// scope always creates.
    pub autoprovision: bool,
    /// Shared scope only: an existing volume without [`LABEL_SHARED`] may be
    /// used (the policy's `allowed_shared_volumes` names it).
    pub foreign_allowed: bool,
}

/// Coarse container state as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    /// Paused or restarting: still alive.
    Other,
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
    pub host_ip: String,
}

/// What the engine says about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
    pub exit_code: Option<i64>,
    /// The engine's error text when the container could not start, or OOM.
    pub error: Option<String>,
    pub oom_killed: bool,
    pub health: Option<Health>,
    /// `repo@sha256:…` when the image came from a registry, else the image id.
    pub image_digest: String,
    pub ports: Vec<PortBinding>,
    /// Unix milliseconds; 0 when never started.
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
}

/// A state change of a container, from the engine's event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEvent {
    Started {
        id: String,
    },
    Died {
        id: String,
        exit_code: Option<i64>,
    },
    Health {
        id: String,
        health: Health,
    },
    Destroyed {
        id: String,
    },
    /// The event stream was (re)established; anything may have changed
    /// while it was down, so callers re-inspect what they watch.
    Resync,
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Checks that the engine answers.
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// Makes `image` available locally according to `policy`; a pull
    /// sends `credentials` (the task's `repositoryCredentials`) when given,
    /// else the agent's own for the image's registry.
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: Option<&crate::secrets::PullCredentials>,
    ) -> Result<(), RuntimeError>;
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// SIGTERM (or the image's stop signal), SIGKILL after `timeout`.
    /// Stopping a container that is not running is not an error.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError>;
    /// Removes a container (and its anonymous volumes). Removing a missing
    /// container is not an error.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// `Ok(None)` when the container does not exist.
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError>;
    /// State changes of containers labelled with `instance_id`, forever:
    /// the implementation reconnects by itself and yields
    /// [`RuntimeEvent::Resync`] after every (re)connection, the first
    /// included.
    fn events(&self, instance_id: &str) -> BoxStream<'static, RuntimeEvent>;
    /// Makes the volume `spec` describes available. Task scope: created
    /// (an existing one is reused, so an agent restart is harmless). Shared
    /// scope: an existing volume is used as it is when it carries
    /// [`LABEL_SHARED`] or `foreign_allowed` is set (else
    /// [`RuntimeError::ForeignSharedVolume`]; a different driver is
    /// [`RuntimeError::VolumeDriverMismatch`]); a missing one is created
    /// when `autoprovision` is set, else [`RuntimeError::NoSuchVolume`].
    async fn ensure_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError>;
    /// Removes a volume by its Docker name. Removing a missing volume is
    /// not an error.
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError>;
    /// The log drivers the engine can use for a container's `logDriver`.
    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError>;
    /// The engine's cgroup driver and version (`docker info`).
    async fn engine_cgroups(&self) -> Result<crate::cgroups::EngineCgroups, RuntimeError>;
}
