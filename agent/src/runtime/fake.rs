//! In-memory runtime for unit tests of the task lifecycle.
//!
//! It keeps containers in a map and emits the same events the Docker runtime
//! would. Tests drive container exits with [`FakeRuntime::exit`] and inject
//! failures with [`FakeRuntime::fail_pull`]. Volumes live in a map too;
//! [`FakeRuntime::add_volume`] makes one exist beforehand (a shared volume
//! created by the operator), and [`FakeRuntime::set_log_drivers`] changes
//! what the engine offers. [`FakeRuntime::hold_pulls`] makes pulls wait
//! until released (a slow registry), [`FakeRuntime::fail_start`] makes the
//! engine refuse starts, [`FakeRuntime::set_health`] reports a health
//! check's outcome. Start times come from a [`Clock`], so a test under
//! `tokio::time::pause` with [`crate::clock::PausedClock`] controls how
//! long a container has run.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::BroadcastStream;

use crate::clock::{Clock, SystemClock};

use super::{
    ContainerInfo, ContainerSpec, LABEL_SHARED, PullPolicy, RunState, Runtime, RuntimeError,
    RuntimeEvent, VolumeScope, VolumeSpec,
};

/// What the fake engine offers as log drivers until told otherwise.
pub const DEFAULT_LOG_DRIVERS: &[&str] = &["journald", "json-file", "local", "none", "syslog"];

#[derive(Default)]
struct Inner {
    containers: BTreeMap<String, ContainerInfo>,
    /// Volume name → how it was created.
    volumes: BTreeMap<String, VolumeSpec>,
    /// The spec each container was created with, by container id.
    specs: BTreeMap<String, ContainerSpec>,
    log_drivers: Option<Vec<String>>,
    bad_images: HashSet<String>,
    /// Container names whose start the engine refuses.
    bad_starts: HashSet<String>,
    /// While set, every pull waits until the value turns `true`.
    pull_gate: Option<watch::Receiver<bool>>,
    next_id: u64,
    /// Every call, in order, for assertions: "create web", "start <id>", ...
    calls: Vec<String>,
}

/// An engine in memory.
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<RuntimeEvent>,
    clock: Arc<dyn Clock>,
}

/// Held pulls: they go on once [`PullGate::release`] is called (or the
/// gate is dropped).
pub struct PullGate {
    open: watch::Sender<bool>,
}

impl PullGate {
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for PullGate {
    fn drop(&mut self) {
        self.release();
    }
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An engine whose containers' start times come from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            events,
            clock,
        }
    }

    /// Makes every pull from now on wait until the gate is released; the
    /// pull is recorded in [`FakeRuntime::calls`] when it begins.
    pub fn hold_pulls(&self) -> PullGate {
        let (open, rx) = watch::channel(false);
        self.lock().pull_gate = Some(rx);
        PullGate { open }
    }

    /// Makes every start of the container named `name` (its berth
    /// container-name label) fail, as an engine error.
    pub fn fail_start(&self, name: &str) {
        self.lock().bad_starts.insert(name.to_string());
    }

    /// Reports `health` for container `id`, as a health check would.
    pub fn set_health(&self, id: &str, health: super::Health) {
        {
            let mut inner = self.lock();
            let Some(c) = inner.containers.get_mut(id) else {
                return;
            };
            c.health = Some(health);
        }
        let _ = self.events.send(RuntimeEvent::Health {
            id: id.to_string(),
            health,
        });
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another test thread panicked.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes every pull of `image` fail.
    pub fn fail_pull(&self, image: &str) {
        self.lock().bad_images.insert(image.to_string());
    }

    /// Lets the container exit with `code`, as if its process ended.
    pub fn exit(&self, id: &str, code: i64) {
        {
            let mut inner = self.lock();
            let Some(c) = inner.containers.get_mut(id) else {
                return;
            };
            c.state = RunState::Exited;
            c.exit_code = Some(code);
        }
        let _ = self.events.send(RuntimeEvent::Died {
            id: id.to_string(),
            exit_code: Some(code),
        });
    }

    /// Id of the container whose berth container-name label is `name`.
    pub fn id_of(&self, name: &str) -> Option<String> {
        self.lock()
            .containers
            .values()
            .find(|c| {
                c.labels
                    .get(super::LABEL_CONTAINER_NAME)
                    .map(String::as_str)
                    == Some(name)
            })
            .map(|c| c.id.clone())
    }

    pub fn container(&self, id: &str) -> Option<ContainerInfo> {
        self.lock().containers.get(id).cloned()
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    pub fn count(&self) -> usize {
        self.lock().containers.len()
    }

    /// Makes a volume exist, as if the operator had created it.
    pub fn add_volume(&self, spec: VolumeSpec) {
        self.lock().volumes.insert(spec.name.clone(), spec);
    }

    /// The volumes that exist, by name.
    pub fn volumes(&self) -> BTreeMap<String, VolumeSpec> {
        self.lock().volumes.clone()
    }

    /// The spec the container `id` was created with.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        self.lock().specs.get(id).cloned()
    }

    /// Replaces the log drivers the engine offers.
    pub fn set_log_drivers(&self, drivers: &[&str]) {
        self.lock().log_drivers = Some(drivers.iter().map(|d| (*d).to_owned()).collect());
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn ensure_image(
        &self,
        image: &str,
        _policy: PullPolicy,
        credentials: Option<&crate::secrets::PullCredentials>,
    ) -> Result<(), RuntimeError> {
        let gate = {
            let mut inner = self.lock();
            inner.calls.push(format!("pull {image}"));
            if let Some(c) = credentials {
                inner.calls.push(format!("pull credentials {}", c.username));
            }
            inner.pull_gate.clone()
        };
        if let Some(mut gate) = gate {
            // A dropped gate counts as released.
            let _ = gate.wait_for(|open| *open).await;
        }
        let inner = self.lock();
        if inner.bad_images.contains(image) {
            return Err(RuntimeError::Pull {
                image: image.to_string(),
                message: "manifest unknown".into(),
            });
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let mut inner = self.lock();
        if inner.containers.values().any(|c| c.name == spec.name) {
            return Err(RuntimeError::Engine {
                action: "create",
                target: spec.name.clone(),
                message: "name already in use".into(),
            });
        }
        inner.next_id += 1;
        let id = format!("fake{:060}", inner.next_id);
        inner.calls.push(format!("create {}", spec.definition.name));
        inner.specs.insert(id.clone(), spec.clone());
        inner.containers.insert(
            id.clone(),
            ContainerInfo {
                id: id.clone(),
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                state: RunState::Created,
                exit_code: None,
                error: None,
                oom_killed: false,
                health: None,
                image_digest: format!("sha256:{}", spec.definition.image.len()),
                ports: Vec::new(),
                started_at_ms: 0,
                finished_at_ms: 0,
            },
        );
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        {
            let mut inner = self.lock();
            let now_ms = self.clock.now_ms();
            let Some(name) = inner
                .containers
                .get(id)
                .map(|c| c.labels.get(super::LABEL_CONTAINER_NAME).cloned())
            else {
                return Err(RuntimeError::NotFound(id.to_string()));
            };
            let name = name.unwrap_or_default();
            inner.calls.push(format!("start {name}"));
            if inner.bad_starts.contains(&name) {
                return Err(RuntimeError::Engine {
                    action: "start",
                    target: name,
                    message: "OCI runtime create failed".into(),
                });
            }
            if let Some(c) = inner.containers.get_mut(id) {
                c.state = RunState::Running;
                c.exit_code = None;
                c.health = None;
                c.started_at_ms = now_ms;
            }
        }
        let _ = self
            .events
            .send(RuntimeEvent::Started { id: id.to_string() });
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        let running = {
            let mut inner = self.lock();
            let name = inner
                .containers
                .get(id)
                .and_then(|c| c.labels.get(super::LABEL_CONTAINER_NAME).cloned())
                .unwrap_or_default();
            inner.calls.push(format!("stop {name}"));
            inner
                .containers
                .get(id)
                .is_some_and(|c| c.state == RunState::Running)
        };
        if running {
            // SIGTERM ends a well-behaved process with 143.
            self.exit(id, 143);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let removed = {
            let mut inner = self.lock();
            inner.calls.push(format!("remove {id}"));
            inner.specs.remove(id);
            inner.containers.remove(id).is_some()
        };
        if removed {
            let _ = self
                .events
                .send(RuntimeEvent::Destroyed { id: id.to_string() });
        }
        Ok(())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let inner = self.lock();
        Ok(inner
            .containers
            .get(id)
            .or_else(|| inner.containers.values().find(|c| c.name == id))
            .cloned())
    }

    fn events(&self, _instance_id: &str) -> BoxStream<'static, RuntimeEvent> {
        let rx = self.events.subscribe();
        futures_util::stream::once(async { RuntimeEvent::Resync })
            .chain(BroadcastStream::new(rx).map(|e| e.unwrap_or(RuntimeEvent::Resync)))
            .boxed()
    }

    async fn ensure_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        let mut inner = self.lock();
        inner.calls.push(format!("volume {}", spec.name));
        match inner.volumes.get(&spec.name) {
            Some(existing)
                if spec.scope == VolumeScope::Shared
                    && !spec.foreign_allowed
                    && existing.labels.get(LABEL_SHARED).map(String::as_str) != Some("1") =>
            {
                Err(RuntimeError::ForeignSharedVolume(spec.name.clone()))
            }
            Some(existing) => {
                let existing_driver = existing.driver.as_deref().unwrap_or("local");
                match spec.driver.as_deref() {
                    Some(wanted)
                        if spec.scope == VolumeScope::Shared && wanted != existing_driver =>
                    {
                        Err(RuntimeError::VolumeDriverMismatch {
                            name: spec.name.clone(),
                            existing: existing_driver.to_owned(),
                            wanted: wanted.to_owned(),
                        })
                    }
                    _ => Ok(()),
                }
            }
            None if spec.scope == VolumeScope::Shared && !spec.autoprovision => {
                Err(RuntimeError::NoSuchVolume(spec.name.clone()))
            }
            None => {
                inner.volumes.insert(spec.name.clone(), spec.clone());
                Ok(())
            }
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let mut inner = self.lock();
        inner.calls.push(format!("remove volume {name}"));
        inner.volumes.remove(name);
        Ok(())
    }

    async fn engine_cgroups(&self) -> Result<crate::cgroups::EngineCgroups, RuntimeError> {
        Ok(crate::cgroups::EngineCgroups::default())
    }

    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self.lock().log_drivers.clone().unwrap_or_else(|| {
            DEFAULT_LOG_DRIVERS
                .iter()
                .map(|d| (*d).to_owned())
                .collect()
        }))
    }
}
