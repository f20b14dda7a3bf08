//! The local Docker Engine as a [`Runtime`], through bollard.
//!
//! # Background
//! berth runs the containers of an ECS task definition on the host's Docker
//! Engine. This module translates an ECS `ContainerDefinition` into Docker's
//! create body, the Engine's answers into [`ContainerInfo`], and the Engine's
//! `/events` stream into [`RuntimeEvent`]s.
//!
//! # Design
//! - One [`bollard::Docker`] client over the unix socket, its API version
//!   negotiated down to the Engine's (Debian's 20.10 speaks 1.41, bollard's
//!   default is newer). Every error names the socket.
//! - Docker restarts nothing by itself (restart policy `no`): berth's
//!   supervisor decides restarts (SPEC §3).
//! - [`DockerRuntime::events`] is a stream that never ends: it subscribes with
//!   `since` = a time taken before the subscription (the last event's time
//!   after a reconnection), so the Engine replays whatever happened while no
//!   subscription was in place, and it yields [`RuntimeEvent::Resync`] after
//!   every (re)subscription. Replayed events already seen are dropped, so a
//!   container exit is reported once. It asks the Engine only for the
//!   actions it maps ([`EVENT_ACTIONS`]), so the `exec_*` events of health
//!   probes are never sent.
//! - Registry credentials are held per registry host and never logged.
//!
//! # Limitations
//! - Only unix sockets (`unix://` in `DOCKER_HOST`).
//! - Host paths and Docker volumes are both mounted through `Mounts`
//!   (`type=bind`, `type=volume`): unlike `Binds`, a bind mount there never
//!   makes the Engine create a missing host directory, it refuses it. The
//!   agent's policy checks each host path right before every start.
//! - The Engine keeps a bounded buffer of past events (256 in moby); an event
//!   outage long and busy enough to overflow it loses events, which the
//!   caller's re-inspection after `Resync` covers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_taskdef::ContainerDefinition;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, DeviceMapping,
    EventMessage, EventMessageTypeEnum, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, Mount as DockerMount, MountType, PortBinding as DockerPortBinding,
    PortMap, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
    StopContainerOptionsBuilder,
};
use futures_util::stream::{BoxStream, StreamExt};
use tracing::{debug, info, warn};

use super::{
    ContainerInfo, ContainerSpec, Health, LABEL_CONTAINER_NAME, LABEL_INSTANCE_ID, LABEL_SHARED,
    LABEL_TASK_FAMILY, MountSource, PortBinding, PullPolicy, RunState, Runtime, RuntimeError,
    RuntimeEvent, VolumeScope, VolumeSpec,
};

/// The socket used when neither the caller nor `DOCKER_HOST` names one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long a request may wait for the Engine's answer (response headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time a stop request may take beyond the stop timeout itself.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// Event-stream reconnection backoff: 100 ms doubling to 5 s.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Linux bounds for CPU shares; ECS passes values below 2 as 2.
const CPU_SHARES_MIN: u64 = 2;
const CPU_SHARES_MAX: u64 = 262_144;
/// What ECS reports for a container the kernel killed for memory.
const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// The log driver that discards everything: always there, never listed in
/// `docker info`.
const NONE_LOG_DRIVER: &str = "none";
/// Docker's zero time: the container never started / never finished.
const ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";
const MIB: i64 = 1024 * 1024;
const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The local Docker Engine.
///
/// Cheap to clone: clones share the connection pool and the credentials.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    endpoint: String,
    /// Registry host (normalised by [`registry_key`]) → credentials.
    credentials: Arc<HashMap<String, DockerCredentials>>,
    /// Image id → digest (`repo@sha256:…`), only for images with a repo digest.
    digests: Arc<Mutex<HashMap<String, String>>>,
}

impl fmt::Debug for DockerRuntime {
    // Hand-written so that credentials can never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut registries: Vec<&str> = self.credentials.keys().map(String::as_str).collect();
        registries.sort_unstable();
        f.debug_struct("DockerRuntime")
            .field("endpoint", &self.endpoint)
            .field("api_version", &self.docker.client_version().to_string())
            .field("credentials_for", &registries)
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the Engine's unix socket and negotiates the API version.
    ///
    /// `socket` is a path or a `unix://` URL; when `None`, `DOCKER_HOST` (if
    /// it is a `unix://` URL) or [`DEFAULT_SOCKET`]. Fails with
    /// [`RuntimeError::Unreachable`] naming the socket when the Engine does
    /// not answer.
    pub async fn connect(socket: Option<&str>) -> Result<Self, RuntimeError> {
        let path = socket_path(socket, std::env::var("DOCKER_HOST").ok().as_deref())?;
        let unreachable = |message: String| RuntimeError::Unreachable {
            endpoint: path.clone(),
            message,
        };
        let docker = Docker::connect_with_unix(
            &path,
            REQUEST_TIMEOUT.as_secs(),
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| unreachable(error_chain(&e)))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        debug!(endpoint = %path, api_version = %docker.client_version(), "connected to docker engine");
        Ok(Self {
            docker,
            endpoint: path,
            credentials: Arc::new(HashMap::new()),
            digests: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Registry credentials, keyed by registry host (`registry.example:5000`,
    /// `docker.io`; a URL such as `https://index.docker.io/v1/` is accepted).
    /// The credentials of an image's registry go with every pull of it.
    pub fn with_credentials(mut self, credentials: HashMap<String, DockerCredentials>) -> Self {
        self.credentials = Arc::new(
            credentials
                .into_iter()
                .map(|(host, creds)| (registry_key(&host), creds))
                .collect(),
        );
        self
    }

    /// The socket path this runtime talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The API version in use after negotiation, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    fn unreachable(&self, err: &BollardError) -> RuntimeError {
        RuntimeError::Unreachable {
            endpoint: self.endpoint.clone(),
            message: error_chain(err),
        }
    }

    /// Maps a bollard error: transport failures are `Unreachable`, anything
    /// the Engine said is `Engine` with its own words.
    fn engine_error(&self, action: &'static str, target: &str, err: BollardError) -> RuntimeError {
        match err {
            BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine {
                action,
                target: target.to_owned(),
                message,
            },
            err if is_transport_error(&err) => self.unreachable(&err),
            err => RuntimeError::Engine {
                action,
                target: target.to_owned(),
                message: error_chain(&err),
            },
        }
    }

    /// Whether the Engine has `reference` locally.
    async fn image_present(&self, reference: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.engine_error("inspect image", reference, e)),
        }
    }

    /// Pulls `reference` (already normalised), consuming the whole progress
    /// stream. Registry failures come back as [`RuntimeError::Pull`].
    async fn pull(&self, reference: &str) -> Result<(), RuntimeError> {
        let credentials = self
            .credentials
            .get(&registry_key(registry_host(reference)))
            .cloned();
        debug!(
            image = reference,
            with_credentials = credentials.is_some(),
            "pulling image"
        );
        let options = CreateImageOptionsBuilder::new()
            .from_image(reference)
            .build();
        let pull_error = |message: String| RuntimeError::Pull {
            image: reference.to_owned(),
            message,
        };
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        let message = detail.message.unwrap_or_else(|| match detail.code {
                            Some(code) => format!("registry error code {code}"),
                            None => "unknown registry error".to_owned(),
                        });
                        return Err(pull_error(message));
                    }
                }
                Err(BollardError::DockerResponseServerError { message, .. }) => {
                    return Err(pull_error(message));
                }
                Err(BollardError::DockerStreamError { error }) => return Err(pull_error(error)),
                Err(e) if is_transport_error(&e) => return Err(self.unreachable(&e)),
                Err(e) => return Err(pull_error(error_chain(&e))),
            }
        }
        info!(image = reference, "pulled image");
        Ok(())
    }

    /// Creates (or, for the same name and driver, reuses) a volume.
    async fn create_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        let request = VolumeCreateRequest {
            name: Some(spec.name.clone()),
            driver: spec.driver.clone(),
            driver_opts: (!spec.driver_opts.is_empty()).then(|| {
                spec.driver_opts
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            labels: (!spec.labels.is_empty()).then(|| {
                spec.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            cluster_volume_spec: None,
        };
        let volume = self
            .docker
            .create_volume(request)
            .await
            .map_err(|e| self.engine_error("create volume", &spec.name, e))?;
        info!(volume = %volume.name, driver = %volume.driver, scope = ?spec.scope, "volume ready");
        Ok(())
    }

    /// `repo@sha256:…` of the image a container runs, else the image id.
    async fn image_digest(&self, image_id: &str, configured: Option<&str>) -> String {
        if let Ok(cache) = self.digests.lock()
            && let Some(digest) = cache.get(image_id)
        {
            return digest.clone();
        }
        let repo_digests = match self.docker.inspect_image(image_id).await {
            Ok(image) => image.repo_digests.unwrap_or_default(),
            Err(e) => {
                debug!(image_id, error = %error_chain(&e), "cannot inspect image for its digest");
                Vec::new()
            }
        };
        match pick_repo_digest(&repo_digests, configured) {
            Some(digest) => {
                if let Ok(mut cache) = self.digests.lock() {
                    cache.insert(image_id.to_owned(), digest.clone());
                }
                digest
            }
            None => image_id.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.unreachable(&e))
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<(), RuntimeError> {
        let reference = normalize_image_reference(image);
        match policy {
            PullPolicy::Always => self.pull(&reference).await,
            PullPolicy::Once | PullPolicy::PreferCached => {
                if self.image_present(&reference).await? {
                    debug!(image = %reference, "image cached; not pulling");
                    Ok(())
                } else {
                    self.pull(&reference).await
                }
            }
            PullPolicy::Default => match self.pull(&reference).await {
                Ok(()) => Ok(()),
                Err(RuntimeError::Pull { image, message }) => {
                    if self.image_present(&reference).await? {
                        warn!(image = %reference, error = %message, "pull failed; using the cached image");
                        Ok(())
                    } else {
                        Err(RuntimeError::Pull { image, message })
                    }
                }
                Err(other) => Err(other),
            },
        }
    }

    #[tracing::instrument(level = "debug", skip(self, spec), fields(container = %spec.name))]
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let body = create_body(spec).map_err(|message| RuntimeError::Engine {
            action: "create container",
            target: spec.name.clone(),
            message,
        })?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.engine_error("create container", &spec.name, e))?;
        for warning in created.warnings.iter().filter(|w| !w.is_empty()) {
            warn!(container = %spec.name, id = %created.id, warning = %warning, "docker engine warning on create");
        }
        debug!(container = %spec.name, id = %created.id, "created container");
        Ok(created.id)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Err(RuntimeError::NotFound(id.to_owned())),
            Err(e) => Err(self.engine_error("start container", id, e)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let secs = timeout_secs(timeout);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        // The Engine answers only once the container is gone, which may take
        // the whole timeout: give the request that long plus a margin.
        let docker = self
            .docker
            .clone()
            .with_timeout(REQUEST_TIMEOUT.max(timeout + STOP_GRACE));
        match docker.stop_container(id, Some(options)).await {
            // 304 (not running) is a success for bollard.
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.engine_error("stop container", id, e)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.engine_error("remove container", id, e)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let response = match self.docker.inspect_container(id, None).await {
            Ok(response) => response,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.engine_error("inspect container", id, e)),
        };
        let image_id = response.image.clone().unwrap_or_default();
        let configured = response.config.as_ref().and_then(|c| c.image.clone());
        let digest = if image_id.is_empty() {
            configured.clone().unwrap_or_default()
        } else {
            self.image_digest(&image_id, configured.as_deref()).await
        };
        container_info(response, digest)
            .map(Some)
            .map_err(|message| RuntimeError::Engine {
                action: "inspect container",
                target: id.to_owned(),
                message,
            })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn list(&self, instance_id: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_INSTANCE_ID}={instance_id}")],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine_error("list containers of instance", instance_id, e))?;
        let mut infos = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            // A container may vanish between the list and the inspect.
            if let Some(info) = self.inspect(&id).await?
                && info.labels.get(LABEL_INSTANCE_ID).map(String::as_str) == Some(instance_id)
            {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    fn events(&self, instance_id: &str) -> BoxStream<'static, RuntimeEvent> {
        let watch = EventWatch {
            docker: self.docker.clone(),
            endpoint: self.endpoint.clone(),
            instance_id: instance_id.to_owned(),
            stream: None,
            cursor: None,
            seen_at_cursor: HashSet::new(),
            backoff: BACKOFF_INITIAL,
            delay: None,
            connected_at: None,
            pending: VecDeque::new(),
        };
        futures_util::stream::unfold(watch, |mut watch| async move {
            let event = watch.next_event().await;
            Some((event, watch))
        })
        .boxed()
    }

    #[tracing::instrument(level = "debug", skip(self, spec), fields(volume = %spec.name))]
    async fn ensure_volume(&self, spec: &VolumeSpec) -> Result<(), RuntimeError> {
        if spec.scope == VolumeScope::Task {
            return self.create_volume(spec).await;
        }
        match self.docker.inspect_volume(&spec.name).await {
            Ok(existing)
                if !spec.foreign_allowed
                    && existing.labels.get(LABEL_SHARED).map(String::as_str) != Some("1") =>
            {
                Err(RuntimeError::ForeignSharedVolume(spec.name.clone()))
            }
            Ok(existing) => match &spec.driver {
                Some(wanted) if *wanted != existing.driver => {
                    Err(RuntimeError::VolumeDriverMismatch {
                        name: spec.name.clone(),
                        existing: existing.driver,
                        wanted: wanted.clone(),
                    })
                }
                _ => {
                    debug!(volume = %spec.name, "shared volume exists; using it");
                    Ok(())
                }
            },
            Err(e) if status_of(&e) == Some(404) => {
                if spec.autoprovision {
                    self.create_volume(spec).await
                } else {
                    Err(RuntimeError::NoSuchVolume(spec.name.clone()))
                }
            }
            Err(e) => Err(self.engine_error("inspect volume", &spec.name, e)),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => {
                debug!(volume = name, "removed volume");
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.engine_error("remove volume", name, e)),
        }
    }

    async fn log_drivers(&self) -> Result<Vec<String>, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.engine_error("describe", "the engine (docker info)", e))?;
        let listed = info.plugins.and_then(|p| p.log).unwrap_or_default();
        Ok(log_driver_list(listed))
    }
}

/// The engine's log drivers, sorted, with `none` (which every engine has
/// but `docker info` does not list).
fn log_driver_list(listed: Vec<String>) -> Vec<String> {
    let mut drivers: Vec<String> = listed.into_iter().filter(|d| !d.is_empty()).collect();
    drivers.push(NONE_LOG_DRIVER.to_owned());
    drivers.sort();
    drivers.dedup();
    drivers
}

// ---------------------------------------------------------------------------
// Events

type EngineEvents = BoxStream<'static, Result<EventMessage, BollardError>>;

/// The state of one `events()` stream: the subscription, where to resume
/// it, and what to yield next.
struct EventWatch {
    docker: Docker,
    endpoint: String,
    instance_id: String,
    stream: Option<EngineEvents>,
    /// Unix nanoseconds: `since` of the next subscription. Set just before
    /// the first subscription, then the time of the newest event seen.
    cursor: Option<i64>,
    /// `(container id, action)` of the events seen at exactly `cursor`, to
    /// drop them when a resubscription replays them.
    seen_at_cursor: HashSet<(String, String)>,
    backoff: Duration,
    delay: Option<Duration>,
    connected_at: Option<Instant>,
    pending: VecDeque<RuntimeEvent>,
}

impl EventWatch {
    async fn next_event(&mut self) -> RuntimeEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let Some(stream) = self.stream.as_mut() else {
                self.subscribe().await;
                continue;
            };
            match stream.next().await {
                Some(Ok(message)) => self.accept(message),
                Some(Err(e)) => {
                    warn!(endpoint = %self.endpoint, instance_id = %self.instance_id, error = %error_chain(&e), "docker event stream failed; resubscribing");
                    self.lost();
                }
                None => {
                    warn!(endpoint = %self.endpoint, instance_id = %self.instance_id, "docker event stream ended; resubscribing");
                    self.lost();
                }
            }
        }
    }

    /// One subscription attempt. On success `Resync` is queued; on failure
    /// the next attempt waits for the backoff.
    async fn subscribe(&mut self) {
        if let Some(delay) = self.delay.take() {
            tokio::time::sleep(delay).await;
        }
        // The Engine must answer before we claim a subscription.
        if let Err(e) = self.docker.ping().await {
            // Warn once per outage; the retries of a long outage are debug.
            if self.backoff <= BACKOFF_INITIAL * 2 {
                warn!(endpoint = %self.endpoint, error = %error_chain(&e), "docker engine unreachable for events; retrying");
            } else {
                debug!(endpoint = %self.endpoint, error = %error_chain(&e), retry_in_ms = self.backoff.as_millis() as u64, "docker engine still unreachable for events");
            }
            self.failed();
            return;
        }
        let since = *self.cursor.get_or_insert_with(unix_nanos_now);
        let filters = event_filters(&self.instance_id);
        let options = EventsOptionsBuilder::new()
            .since(&format_since(since))
            .filters(&filters)
            .build();
        let mut stream = self.docker.events(Some(options)).boxed();
        // Send the request now; an immediate refusal is not a subscription.
        // Anything from `since` on is replayed, so once the request is on its
        // way nothing the caller does after `Resync` can be missed.
        match futures_util::poll!(stream.next()) {
            Poll::Ready(Some(Err(e))) => {
                warn!(endpoint = %self.endpoint, error = %error_chain(&e), "docker refused the event subscription");
                self.failed();
                return;
            }
            Poll::Ready(None) => {
                self.failed();
                return;
            }
            Poll::Ready(Some(Ok(message))) => {
                self.pending.push_back(RuntimeEvent::Resync);
                self.accept(message);
            }
            Poll::Pending => self.pending.push_back(RuntimeEvent::Resync),
        }
        debug!(endpoint = %self.endpoint, instance_id = %self.instance_id, since = %format_since(since), "subscribed to docker events");
        self.stream = Some(stream);
        self.connected_at = Some(Instant::now());
    }

    fn accept(&mut self, message: EventMessage) {
        let time = message
            .time_nano
            .or_else(|| message.time.map(|s| s.saturating_mul(NANOS_PER_SEC)));
        if let Some(time) = time {
            let key = (
                message
                    .actor
                    .as_ref()
                    .and_then(|a| a.id.clone())
                    .unwrap_or_default(),
                message.action.clone().unwrap_or_default(),
            );
            match self.cursor {
                Some(cursor) if time == cursor => {
                    if !self.seen_at_cursor.insert(key) {
                        debug!(time, "dropping replayed docker event");
                        return;
                    }
                }
                Some(cursor) if time < cursor => {}
                _ => {
                    self.cursor = Some(time);
                    self.seen_at_cursor.clear();
                    self.seen_at_cursor.insert(key);
                }
            }
        }
        if let Some(event) = runtime_event(&message) {
            debug!(?event, "docker event");
            self.pending.push_back(event);
        }
    }

    fn lost(&mut self) {
        self.stream = None;
        // A subscription that lived a while starts the backoff afresh.
        if self
            .connected_at
            .take()
            .is_some_and(|at| at.elapsed() >= BACKOFF_MAX)
        {
            self.backoff = BACKOFF_INITIAL;
        }
        self.failed();
    }

    fn failed(&mut self) {
        self.delay = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

const ACTION_START: &str = "start";
const ACTION_DIE: &str = "die";
const ACTION_DESTROY: &str = "destroy";
/// Docker's actions are `health_status: healthy`, `: unhealthy` and
/// `: starting`; as an `event` filter value this prefix matches them all.
const ACTION_HEALTH_STATUS: &str = "health_status";

/// The container event actions `event_from_action` maps, and the only ones
/// the event subscription asks the Engine for (its `event` filter): the
/// Engine sends nothing else, in particular not the `exec_create`,
/// `exec_start` and `exec_die` of every health-check probe.
///
/// When the values of an `event` filter include `health_status`,
/// `exec_create` or `exec_start` without a colon, the Engine matches every
/// value as a prefix of the action (moby's `daemon/events/filter.go`, moby
/// issue 25798), so `health_status` stands for the three health actions; no
/// other container action starts with `start`, `die` or `destroy`.
pub const EVENT_ACTIONS: [&str; 4] = [
    ACTION_START,
    ACTION_DIE,
    ACTION_DESTROY,
    ACTION_HEALTH_STATUS,
];

/// The Engine `/events` filters of an instance's subscription: containers
/// labelled with `instance_id`, actions [`EVENT_ACTIONS`] only.
pub fn event_filters(instance_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "label".to_owned(),
            vec![format!("{LABEL_INSTANCE_ID}={instance_id}")],
        ),
        (
            "event".to_owned(),
            EVENT_ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
        ),
    ])
}

/// What an Engine event means for berth; `None` for events berth ignores
/// (`exec_*`, `create`, `kill`, `stop`, `attach`, …), which
/// [`EVENT_ACTIONS`] keeps the Engine from sending in the first place.
pub(crate) fn runtime_event(message: &EventMessage) -> Option<RuntimeEvent> {
    if let Some(typ) = message.typ
        && typ != EventMessageTypeEnum::CONTAINER
    {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let id = actor.id.clone().filter(|id| !id.is_empty())?;
    let exit_code = actor
        .attributes
        .as_ref()
        .and_then(|a| a.get("exitCode"))
        .map(String::as_str);
    event_from_action(id, message.action.as_deref()?, exit_code)
}

/// Maps an event action (`start`, `die`, `health_status: healthy`, …).
pub(crate) fn event_from_action(
    id: String,
    action: &str,
    exit_code: Option<&str>,
) -> Option<RuntimeEvent> {
    // Every action matched here must be one of `EVENT_ACTIONS`, or the
    // Engine never sends it (`every_mapped_action_passes_the_event_filter`).
    match action {
        ACTION_START => Some(RuntimeEvent::Started { id }),
        ACTION_DIE => Some(RuntimeEvent::Died {
            id,
            exit_code: exit_code.and_then(|c| c.trim().parse().ok()),
        }),
        ACTION_DESTROY => Some(RuntimeEvent::Destroyed { id }),
        _ => {
            let status = action.strip_prefix(ACTION_HEALTH_STATUS)?;
            let status = status.strip_prefix(':').unwrap_or(status).trim();
            let health = match status {
                "healthy" => Health::Healthy,
                "unhealthy" => Health::Unhealthy,
                "starting" => Health::Starting,
                _ => return None,
            };
            Some(RuntimeEvent::Health { id, health })
        }
    }
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Docker's `since`: `seconds.nanoseconds`.
fn format_since(unix_nanos: i64) -> String {
    format!(
        "{}.{:09}",
        unix_nanos.div_euclid(NANOS_PER_SEC),
        unix_nanos.rem_euclid(NANOS_PER_SEC)
    )
}

// ---------------------------------------------------------------------------
// Container definition → Docker create body

/// Docker's create body for `spec`. `Err` names the field that cannot be
/// expressed.
pub(crate) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, String> {
    let def = &spec.definition;
    let network_mode = if spec.network_mode.is_empty() {
        "bridge"
    } else {
        spec.network_mode.as_str()
    };
    let linux = def.linux_parameters.as_ref();

    let memory = def.memory.map(|m| mib_to_bytes(m, "memory")).transpose()?;
    let memory_reservation = def
        .memory_reservation
        .map(|m| mib_to_bytes(m, "memoryReservation"))
        .transpose()?;
    let (memory_swap, memory_swappiness) = swap_settings(def, memory)?;

    let (exposed_ports, port_bindings) = ports(def, network_mode)?;
    let mounts = mounts(spec);

    let stop_timeout = def
        .stop_timeout
        .unwrap_or(spec.default_stop_timeout.as_secs());

    let host_config = HostConfig {
        cpu_shares: cpu_shares(def.cpu),
        memory,
        memory_reservation,
        memory_swap,
        memory_swappiness,
        network_mode: Some(network_mode.to_owned()),
        port_bindings,
        // berth restarts containers itself (SPEC §3).
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        dns: non_empty(def.dns_servers.clone()),
        dns_search: non_empty(def.dns_search_domains.clone()),
        extra_hosts: non_empty(
            def.extra_hosts
                .iter()
                .map(|h| format!("{}:{}", h.hostname, h.ip_address))
                .collect(),
        ),
        ulimits: non_empty(
            def.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft_limit),
                    hard: Some(u.hard_limit),
                })
                .collect(),
        ),
        readonly_rootfs: def.readonly_root_filesystem,
        privileged: def.privileged,
        cap_add: linux
            .and_then(|l| l.capabilities.as_ref())
            .and_then(|c| non_empty(c.add.clone())),
        cap_drop: linux
            .and_then(|l| l.capabilities.as_ref())
            .and_then(|c| non_empty(c.drop.clone())),
        init: linux.and_then(|l| l.init_process_enabled),
        shm_size: linux
            .and_then(|l| l.shared_memory_size)
            .map(|m| mib_to_bytes(m, "linuxParameters.sharedMemorySize"))
            .transpose()?,
        tmpfs: linux.and_then(|l| {
            (!l.tmpfs.is_empty()).then(|| {
                l.tmpfs
                    .iter()
                    .map(|t| (t.container_path.clone(), tmpfs_options(t)))
                    .collect()
            })
        }),
        devices: linux.and_then(|l| {
            non_empty(
                l.devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.host_path.clone()),
                        path_in_container: Some(
                            d.container_path
                                .clone()
                                .unwrap_or_else(|| d.host_path.clone()),
                        ),
                        cgroup_permissions: Some(device_permissions(&d.permissions)),
                    })
                    .collect(),
            )
        }),
        log_config: def.log_configuration.as_ref().map(|l| HostConfigLogConfig {
            typ: Some(l.log_driver.clone()),
            config: (!l.options.is_empty()).then(|| {
                l.options
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
        }),
        sysctls: (!def.system_controls.is_empty()).then(|| {
            def.system_controls
                .iter()
                .map(|s| (s.namespace.clone(), s.value.clone()))
                .collect()
        }),
        security_opt: non_empty(def.docker_security_options.clone()),
        links: non_empty(def.links.iter().map(|l| docker_link(spec, l)).collect()),
        mounts,
        volumes_from: non_empty(
            spec.volumes_from
                .iter()
                .map(|(name, read_only)| format!("{name}:{}", if *read_only { "ro" } else { "rw" }))
                .collect(),
        ),
        pid_mode: spec.pid_mode.clone(),
        ipc_mode: spec.ipc_mode.clone(),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(def.image.clone()),
        cmd: def.command.clone(),
        entrypoint: def.entry_point.clone(),
        env: non_empty(
            def.environment
                .iter()
                .map(|kv| format!("{}={}", kv.name, kv.value))
                .collect(),
        ),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        working_dir: def.working_directory.clone(),
        user: def.user.clone(),
        hostname: def.hostname.clone(),
        exposed_ports,
        stop_timeout: Some(
            i64::try_from(stop_timeout)
                .map_err(|_| format!("stopTimeout {stop_timeout} s is out of range"))?,
        ),
        healthcheck: def
            .health_check
            .as_ref()
            .filter(|h| !h.command.is_empty())
            .map(|h| HealthConfig {
                test: Some(h.command.clone()),
                interval: Some(secs_to_nanos(h.interval.unwrap_or(30))),
                timeout: Some(secs_to_nanos(h.timeout.unwrap_or(5))),
                retries: Some(i64::try_from(h.retries.unwrap_or(3)).unwrap_or(i64::MAX)),
                start_period: Some(secs_to_nanos(h.start_period.unwrap_or(0))),
                start_interval: None,
            }),
        open_stdin: def.interactive,
        tty: def.pseudo_terminal,
        network_disabled: def.disable_networking,
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// ECS `cpu` units are CPU shares; absent or 0 leaves Docker's default, and
/// values outside the kernel's range are clamped to it, as the ECS agent does.
pub(crate) fn cpu_shares(cpu: Option<u64>) -> Option<i64> {
    match cpu {
        None | Some(0) => None,
        Some(units) => i64::try_from(units.clamp(CPU_SHARES_MIN, CPU_SHARES_MAX)).ok(),
    }
}

fn mib_to_bytes(mib: u64, field: &str) -> Result<i64, String> {
    i64::try_from(mib)
        .ok()
        .and_then(|m| m.checked_mul(MIB))
        .ok_or_else(|| format!("{field} {mib} MiB is out of range"))
}

fn secs_to_nanos(secs: u64) -> i64 {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(NANOS_PER_SEC))
        .unwrap_or(i64::MAX)
}

/// ECS `maxSwap` (MiB on top of `memory`; 0 = no swap) and `swappiness`.
fn swap_settings(
    def: &ContainerDefinition,
    memory: Option<i64>,
) -> Result<(Option<i64>, Option<i64>), String> {
    let Some(linux) = def.linux_parameters.as_ref() else {
        return Ok((None, None));
    };
    let swap = match (linux.max_swap, memory) {
        (Some(max_swap), Some(memory)) if max_swap >= 0 => Some(
            max_swap
                .checked_mul(MIB)
                .and_then(|s| s.checked_add(memory))
                .ok_or_else(|| format!("linuxParameters.maxSwap {max_swap} MiB is out of range"))?,
        ),
        (Some(_), None) => {
            return Err("linuxParameters.maxSwap needs the container's memory".to_owned());
        }
        _ => None,
    };
    Ok((swap, linux.swappiness))
}

/// `ExposedPorts` and `PortBindings`. Host port 0 or absent gets an empty
/// host port: Docker picks a free one. Bindings only apply to `bridge`.
#[allow(clippy::type_complexity)]
fn ports(
    def: &ContainerDefinition,
    network_mode: &str,
) -> Result<(Option<Vec<String>>, Option<PortMap>), String> {
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: PortMap = HashMap::new();
    let publish = !matches!(network_mode, "host" | "none");
    for (index, mapping) in def.port_mappings.iter().enumerate() {
        let protocol = mapping
            .protocol
            .as_deref()
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        let container_ports: Vec<u16> = match (
            mapping.container_port,
            &mapping.container_port_range,
        ) {
            (Some(port), _) => vec![port],
            (None, Some(range)) => {
                let (low, high) = parse_port_range(range).ok_or_else(|| {
                    format!("portMappings[{index}].containerPortRange {range:?} is not a range like 8000-8010")
                })?;
                (low..=high).collect()
            }
            (None, None) => {
                return Err(format!("portMappings[{index}] has no containerPort"));
            }
        };
        for port in container_ports {
            let key = format!("{port}/{protocol}");
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            if publish {
                let host_port = match mapping.host_port {
                    Some(p) if p != 0 && mapping.container_port.is_some() => p.to_string(),
                    _ => String::new(),
                };
                bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(DockerPortBinding {
                        host_ip: None,
                        host_port: Some(host_port),
                    });
            }
        }
    }
    Ok((
        non_empty(exposed),
        (!bindings.is_empty()).then_some(bindings),
    ))
}

/// `HostConfig.Mounts` for host paths (`type=bind`: the Engine refuses a
/// missing host path instead of creating it, as `Binds` would) and Docker
/// volumes.
fn mounts(spec: &ContainerSpec) -> Option<Vec<DockerMount>> {
    let mut mounts = Vec::new();
    for mount in &spec.mounts {
        let (typ, source) = match &mount.source {
            MountSource::Bind(host_path) => (MountType::BIND, host_path),
            MountSource::Volume(name) => (MountType::VOLUME, name),
        };
        mounts.push(DockerMount {
            target: Some(mount.target.clone()),
            source: Some(source.clone()),
            typ: Some(typ),
            read_only: Some(mount.read_only),
            ..Default::default()
        });
    }
    non_empty(mounts)
}

fn parse_port_range(range: &str) -> Option<(u16, u16)> {
    let (low, high) = range.split_once('-')?;
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    (low <= high).then_some((low, high))
}

/// `size=64m,noexec,…` (sizes are MiB in ECS).
fn tmpfs_options(tmpfs: &berth_taskdef::Tmpfs) -> String {
    let mut options = Vec::with_capacity(tmpfs.mount_options.len() + 1);
    if tmpfs.size > 0 {
        options.push(format!("size={}m", tmpfs.size));
    }
    options.extend(tmpfs.mount_options.iter().cloned());
    options.join(",")
}

/// ECS `read`/`write`/`mknod` → cgroup `rwm`; none given means all.
fn device_permissions(permissions: &[String]) -> String {
    if permissions.is_empty() {
        return "rwm".to_owned();
    }
    let mut out = String::new();
    for (flag, name) in [('r', "read"), ('w', "write"), ('m', "mknod")] {
        if permissions.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            out.push(flag);
        }
    }
    out
}

/// An ECS link names a container of the same task (`db` or `db:alias`);
/// Docker needs that container's Docker name. berth names containers
/// `berth-<family>-<container>-<short task id>`, so the sibling's name is
/// derived from this container's; a link that cannot be derived is passed on.
fn docker_link(spec: &ContainerSpec, link: &str) -> String {
    let (target, alias) = link.split_once(':').unwrap_or((link, link));
    let family = spec.labels.get(LABEL_TASK_FAMILY);
    let own = spec.labels.get(LABEL_CONTAINER_NAME);
    if let (Some(family), Some(own)) = (family, own)
        && let Some(short_id) = spec.name.strip_prefix(&format!("berth-{family}-{own}-"))
    {
        return format!("berth-{family}-{target}-{short_id}:{alias}");
    }
    format!("{target}:{alias}")
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

/// Docker's `t`: whole seconds, rounded up so that a sub-second timeout is
/// not a kill without warning.
fn timeout_secs(timeout: Duration) -> i32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

// ---------------------------------------------------------------------------
// Docker inspect → ContainerInfo

/// `Err` only when the Engine's answer lacks the container id.
pub(crate) fn container_info(
    response: ContainerInspectResponse,
    image_digest: String,
) -> Result<ContainerInfo, String> {
    let id = response
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| "the engine's answer has no container id".to_owned())?;
    let name = response
        .name
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let labels: BTreeMap<String, String> = response
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let state = response.state.unwrap_or_default();
    let run_state = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => RunState::Exited,
        Some(
            ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::REMOVING
            | ContainerStateStatusEnum::STOPPING,
        ) => RunState::Other,
        Some(ContainerStateStatusEnum::EMPTY) | None => {
            if state.running == Some(true) {
                RunState::Running
            } else {
                RunState::Other
            }
        }
    };
    let oom_killed = state.oom_killed.unwrap_or(false);
    let error = state
        .error
        .filter(|e| !e.is_empty())
        .or_else(|| oom_killed.then(|| OOM_REASON.to_owned()));
    let health = state
        .health
        .and_then(|h| h.status)
        .and_then(|status| match status {
            HealthStatusEnum::STARTING => Some(Health::Starting),
            HealthStatusEnum::HEALTHY => Some(Health::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
        });
    let ports = response
        .network_settings
        .and_then(|n| n.ports)
        .map(|ports| port_bindings(&ports))
        .unwrap_or_default();
    // A container that failed to start stays `created`, with the engine's
    // error and an exit code (127 for a missing executable).
    let failed_to_start = run_state == RunState::Created && error.is_some();
    let exit_code = (run_state == RunState::Exited || failed_to_start)
        .then_some(state.exit_code)
        .flatten();
    Ok(ContainerInfo {
        id,
        name,
        labels,
        state: run_state,
        exit_code,
        error,
        oom_killed,
        health,
        image_digest,
        ports,
        started_at_ms: state.started_at.as_deref().map_or(0, docker_time_ms),
        finished_at_ms: state.finished_at.as_deref().map_or(0, docker_time_ms),
    })
}

/// Published ports from `NetworkSettings.Ports` (`"80/tcp": [{HostIp,
/// HostPort}]`); exposed-only ports (no binding) are left out. Sorted.
fn port_bindings(ports: &PortMap) -> Vec<PortBinding> {
    let mut out = Vec::new();
    for (key, bindings) in ports {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            out.push(PortBinding {
                container_port,
                host_port,
                protocol: protocol.to_owned(),
                host_ip: binding.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.container_port, &a.protocol, &a.host_ip, a.host_port).cmp(&(
            b.container_port,
            &b.protocol,
            &b.host_ip,
            b.host_port,
        ))
    });
    out
}

/// Prefers the repo digest of the repository the container was created from.
fn pick_repo_digest(repo_digests: &[String], configured: Option<&str>) -> Option<String> {
    let wanted = configured.map(|image| repository_of(&normalize_image_reference(image)));
    wanted
        .and_then(|repo| {
            repo_digests
                .iter()
                .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        })
        .or_else(|| repo_digests.first())
        .cloned()
}

/// Docker's times (`StartedAt`, `FinishedAt`) as unix milliseconds; Docker's
/// zero time and anything unparsable are 0.
pub(crate) fn docker_time_ms(text: &str) -> i64 {
    if text.is_empty() || text.starts_with(ZERO_TIME_PREFIX) {
        return 0;
    }
    match parse_rfc3339_ms(text) {
        Some(ms) => ms.max(0),
        None => {
            debug!(time = text, "cannot parse docker time");
            0
        }
    }
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:34:56.123456789Z`,
/// `…+02:00`) into unix milliseconds. Fractions beyond milliseconds are
/// truncated.
pub(crate) fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0i64, |acc, d| {
            acc.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(0..4)?;
    let month = digits(5..7)?;
    let day = digits(8..10)?;
    let hour = digits(11..13)?;
    let minute = digits(14..16)?;
    let second = digits(17..19)?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if b.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        for (i, d) in b[start..end.min(start + 3)].iter().enumerate() {
            millis += i64::from(d - b'0') * 10i64.pow(2 - i as u32);
        }
        pos = end;
    }
    let offset_secs = match b.get(pos)? {
        b'Z' | b'z' if pos + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let hours = digits(pos + 1..pos + 3)?;
            let minutes = digits(pos + 4..pos + 6)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------
// Image references, sockets, errors

/// Adds `:latest` to a reference with neither tag nor digest.
pub(crate) fn normalize_image_reference(image: &str) -> String {
    let image = image.trim();
    if image.contains('@') {
        return image.to_owned();
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The registry host of a reference: its first component when that looks
/// like a host (has `.` or `:`, or is `localhost`), else Docker Hub.
pub(crate) fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// A credentials key: the host alone, Docker Hub's aliases folded together.
pub(crate) fn registry_key(host: &str) -> String {
    let host = host
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

/// Repository part of a normalised reference (`host/repo:tag` → `host/repo`);
/// Docker Hub names get their implicit `docker.io/library/` dropped as the
/// Engine does in `RepoDigests`.
fn repository_of(reference: &str) -> String {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let repo = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    };
    repo.strip_prefix("docker.io/")
        .map(|r| r.strip_prefix("library/").unwrap_or(r))
        .unwrap_or(repo)
        .to_owned()
}

/// Resolves the socket path from the caller's choice or `DOCKER_HOST`.
fn socket_path(socket: Option<&str>, docker_host: Option<&str>) -> Result<String, RuntimeError> {
    if let Some(socket) = socket {
        return unix_path(socket);
    }
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        Some(host) => unix_path(host),
        None => Ok(DEFAULT_SOCKET.to_owned()),
    }
}

fn unix_path(endpoint: &str) -> Result<String, RuntimeError> {
    if let Some(path) = endpoint.strip_prefix("unix://") {
        return Ok(path.to_owned());
    }
    if endpoint.contains("://") {
        return Err(RuntimeError::Unreachable {
            endpoint: endpoint.to_owned(),
            message: "only unix sockets are supported (unix:///path/to/docker.sock)".to_owned(),
        });
    }
    Ok(endpoint.to_owned())
}

fn status_of(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_transport_error(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)
    )
}

/// An error with its causes: `client error (Connect): Permission denied`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_taskdef::{
        Capabilities, Device, HealthCheck, HostEntry, KeyValuePair, LinuxParameters,
        LogConfiguration, PortMapping, SystemControl, Tmpfs, Ulimit,
    };
    use bollard::models::{EventActor, EventMessage};

    fn spec(def: ContainerDefinition) -> ContainerSpec {
        ContainerSpec {
            name: "berth-web-app-1a2b3c4d".to_owned(),
            labels: BTreeMap::from([
                (LABEL_TASK_FAMILY.to_owned(), "web".to_owned()),
                (LABEL_CONTAINER_NAME.to_owned(), "app".to_owned()),
                (LABEL_INSTANCE_ID.to_owned(), "i-1".to_owned()),
            ]),
            network_mode: "bridge".to_owned(),
            definition: def,
            default_stop_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_volumes_from_and_namespaces_map_to_host_config() -> Result<(), String> {
        use super::super::Mount;
        let mut s = spec(def());
        s.mounts = vec![
            Mount {
                source: MountSource::Bind("/srv/data".to_owned()),
                target: "/data".to_owned(),
                read_only: true,
            },
            Mount {
                source: MountSource::Bind("/srv/logs".to_owned()),
                target: "/logs".to_owned(),
                read_only: false,
            },
            Mount {
                source: MountSource::Volume("berth-web-scratch-1a2b3c4d".to_owned()),
                target: "/scratch".to_owned(),
                read_only: false,
            },
        ];
        s.volumes_from = vec![
            ("berth-web-db-1a2b3c4d".to_owned(), true),
            ("berth-web-cache-1a2b3c4d".to_owned(), false),
        ];
        s.pid_mode = Some("host".to_owned());
        s.ipc_mode = Some("none".to_owned());
        let host = create_body(&s)?.host_config.unwrap_or_default();
        assert_eq!(host.binds, None, "binds go through Mounts, never Binds");
        let mounts = host.mounts.unwrap_or_default();
        let seen: Vec<String> = mounts
            .iter()
            .map(|m| {
                format!(
                    "{:?} {} {} ro={}",
                    m.typ,
                    m.source.as_deref().unwrap_or(""),
                    m.target.as_deref().unwrap_or(""),
                    m.read_only.unwrap_or(false)
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                "Some(BIND) /srv/data /data ro=true",
                "Some(BIND) /srv/logs /logs ro=false",
                "Some(VOLUME) berth-web-scratch-1a2b3c4d /scratch ro=false",
            ]
        );
        assert_eq!(
            host.volumes_from,
            Some(vec![
                "berth-web-db-1a2b3c4d:ro".to_owned(),
                "berth-web-cache-1a2b3c4d:rw".to_owned()
            ])
        );
        assert_eq!(host.pid_mode.as_deref(), Some("host"));
        assert_eq!(host.ipc_mode.as_deref(), Some("none"));

        // Nothing asked for: nothing sent.
        let host = create_body(&spec(def()))?.host_config.unwrap_or_default();
        assert_eq!(
            (host.binds, host.mounts, host.volumes_from),
            (None, None, None)
        );
        assert_eq!((host.pid_mode, host.ipc_mode), (None, None));

        // `Mounts` carries any path, a colon included.
        let mut s = spec(def());
        s.mounts = vec![Mount {
            source: MountSource::Bind("/srv/a:b".to_owned()),
            target: "/data".to_owned(),
            read_only: false,
        }];
        let host = create_body(&s)?.host_config.unwrap_or_default();
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/a:b"));
        Ok(())
    }

    #[test]
    fn log_drivers_include_none_sorted_once() {
        assert_eq!(
            log_driver_list(vec![
                "json-file".to_owned(),
                "syslog".to_owned(),
                String::new(),
                "local".to_owned(),
                "json-file".to_owned(),
            ]),
            vec!["json-file", "local", "none", "syslog"]
        );
        assert_eq!(log_driver_list(Vec::new()), vec!["none"]);
    }

    fn def() -> ContainerDefinition {
        ContainerDefinition {
            name: "app".to_owned(),
            image: "busybox".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn rfc3339_parses_docker_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:34:56.123456789Z"),
            Some(1_714_566_896_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:34:56.5+02:00"),
            Some(1_714_566_896_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T10:04:56-02:30"),
            Some(1_714_566_896_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T23:59:59Z"),
            Some(951_868_799_000)
        );
        assert_eq!(parse_rfc3339_ms("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:34:56"), None);
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:34:56.Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        assert_eq!(docker_time_ms("0001-01-01T00:00:00Z"), 0);
        assert_eq!(docker_time_ms(""), 0);
        assert_eq!(docker_time_ms("not a time"), 0);
        assert_eq!(
            docker_time_ms("2024-05-01T12:34:56.123Z"),
            1_714_566_896_123
        );
    }

    #[test]
    fn event_actions_map_to_runtime_events() {
        let id = || "c1".to_owned();
        assert_eq!(
            event_from_action(id(), "start", None),
            Some(RuntimeEvent::Started { id: id() })
        );
        assert_eq!(
            event_from_action(id(), "die", Some("137")),
            Some(RuntimeEvent::Died {
                id: id(),
                exit_code: Some(137)
            })
        );
        assert_eq!(
            event_from_action(id(), "die", None),
            Some(RuntimeEvent::Died {
                id: id(),
                exit_code: None
            })
        );
        assert_eq!(
            event_from_action(id(), "health_status: healthy", None),
            Some(RuntimeEvent::Health {
                id: id(),
                health: Health::Healthy
            })
        );
        assert_eq!(
            event_from_action(id(), "health_status: unhealthy", None),
            Some(RuntimeEvent::Health {
                id: id(),
                health: Health::Unhealthy
            })
        );
        assert_eq!(
            event_from_action(id(), "health_status: starting", None),
            Some(RuntimeEvent::Health {
                id: id(),
                health: Health::Starting
            })
        );
        assert_eq!(
            event_from_action(id(), "destroy", None),
            Some(RuntimeEvent::Destroyed { id: id() })
        );
        for ignored in [
            "exec_die",
            "exec_start: sh -c true",
            "exec_create: sh -c true",
            "create",
            "kill",
            "stop",
            "attach",
            "health_status: running",
        ] {
            assert_eq!(
                event_from_action(id(), ignored, Some("0")),
                None,
                "{ignored}"
            );
        }
    }

    /// Every container action of moby's `daemon` package, as the Engine
    /// writes it (exec actions carry the command after a colon, except
    /// `exec_die`).
    const ENGINE_CONTAINER_ACTIONS: &[&str] = &[
        "attach",
        "commit",
        "copy",
        "create",
        "destroy",
        "detach",
        "die",
        "exec_create: sh -c true",
        "exec_detach",
        "exec_die",
        "exec_start: sh -c true",
        "export",
        "health_status: healthy",
        "health_status: unhealthy",
        "health_status: starting",
        "kill",
        "oom",
        "pause",
        "rename",
        "resize",
        "restart",
        "start",
        "stop",
        "top",
        "unpause",
        "update",
        "prune",
    ];

    /// The Engine's `event` filter match (moby `daemon/events/filter.go`):
    /// exact, or by prefix when a value is `health_status`, `exec_create`
    /// or `exec_start`.
    fn engine_filter_passes(values: &[String], action: &str) -> bool {
        let fuzzy = values
            .iter()
            .any(|v| ["health_status", "exec_create", "exec_start"].contains(&v.as_str()));
        values
            .iter()
            .any(|v| v == action || (fuzzy && action.starts_with(v.as_str())))
    }

    #[test]
    fn every_mapped_action_passes_the_event_filter() {
        let filters = event_filters("i-1");
        assert_eq!(filters.get("type"), Some(&vec!["container".to_owned()]));
        assert_eq!(
            filters.get("label"),
            Some(&vec![format!("{LABEL_INSTANCE_ID}=i-1")])
        );
        let values = filters.get("event").expect("an event filter");
        assert_eq!(values, &EVENT_ACTIONS.map(str::to_owned).to_vec());
        // The Engine sends exactly the actions the mapping handles: none is
        // lost to the filter, and nothing it would discard is sent.
        for action in ENGINE_CONTAINER_ACTIONS {
            let mapped = event_from_action("c1".to_owned(), action, Some("0")).is_some();
            assert_eq!(
                engine_filter_passes(values, action),
                mapped,
                "{action}: the event filter and event_from_action disagree"
            );
        }
        // And every value of the filter stands for an action that is mapped.
        for value in EVENT_ACTIONS {
            assert!(
                ENGINE_CONTAINER_ACTIONS.iter().any(|action| {
                    action.starts_with(value)
                        && event_from_action("c1".to_owned(), action, None).is_some()
                }),
                "{value} in EVENT_ACTIONS maps no engine action"
            );
        }
    }

    #[test]
    fn engine_messages_map_through_type_and_actor() {
        let message = EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some("die".to_owned()),
            actor: Some(EventActor {
                id: Some("abc".to_owned()),
                attributes: Some(HashMap::from([("exitCode".to_owned(), "3".to_owned())])),
            }),
            ..Default::default()
        };
        assert_eq!(
            runtime_event(&message),
            Some(RuntimeEvent::Died {
                id: "abc".to_owned(),
                exit_code: Some(3)
            })
        );
        let network = EventMessage {
            typ: Some(EventMessageTypeEnum::NETWORK),
            ..message.clone()
        };
        assert_eq!(runtime_event(&network), None);
        let no_actor = EventMessage {
            actor: None,
            ..message
        };
        assert_eq!(runtime_event(&no_actor), None);
    }

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        assert_eq!(
            format_since(1_714_566_896_000_000_001),
            "1714566896.000000001"
        );
        assert_eq!(format_since(0), "0.000000000");
    }

    #[test]
    fn image_references_get_latest_and_a_registry() {
        assert_eq!(normalize_image_reference("busybox"), "busybox:latest");
        assert_eq!(
            normalize_image_reference("127.0.0.1:1/nope"),
            "127.0.0.1:1/nope:latest"
        );
        assert_eq!(
            normalize_image_reference("127.0.0.1:5000/a/b:1.2"),
            "127.0.0.1:5000/a/b:1.2"
        );
        assert_eq!(
            normalize_image_reference("busybox@sha256:abcd"),
            "busybox@sha256:abcd"
        );
        assert_eq!(registry_host("busybox:latest"), "docker.io");
        assert_eq!(registry_host("library/busybox:latest"), "docker.io");
        assert_eq!(registry_host("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("localhost/a:1"), "localhost");
        assert_eq!(registry_host("ghcr.io/x/y:1"), "ghcr.io");
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(
            registry_key("Registry.Example:5000"),
            "registry.example:5000"
        );
        assert_eq!(repository_of("busybox:latest"), "busybox");
        assert_eq!(repository_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b");
        assert_eq!(
            pick_repo_digest(
                &["other/x@sha256:1".to_owned(), "busybox@sha256:2".to_owned()],
                Some("busybox")
            ),
            Some("busybox@sha256:2".to_owned())
        );
        assert_eq!(pick_repo_digest(&[], Some("busybox")), None);
    }

    #[test]
    fn sockets_resolve_from_argument_then_docker_host() {
        assert_eq!(
            socket_path(Some("unix:///tmp/d.sock"), Some("unix:///x")).ok(),
            Some("/tmp/d.sock".to_owned())
        );
        assert_eq!(
            socket_path(None, Some("unix:///run/docker.sock")).ok(),
            Some("/run/docker.sock".to_owned())
        );
        assert_eq!(
            socket_path(None, None).ok(),
            Some(DEFAULT_SOCKET.to_owned())
        );
        assert!(matches!(
            socket_path(None, Some("tcp://1.2.3.4:2375")),
            Err(RuntimeError::Unreachable { endpoint, .. }) if endpoint == "tcp://1.2.3.4:2375"
        ));
    }

    #[test]
    fn cpu_units_become_shares() {
        assert_eq!(cpu_shares(None), None);
        assert_eq!(cpu_shares(Some(0)), None);
        assert_eq!(cpu_shares(Some(1)), Some(2));
        assert_eq!(cpu_shares(Some(256)), Some(256));
        assert_eq!(cpu_shares(Some(1_000_000)), Some(262_144));
    }

    #[test]
    fn definition_maps_to_create_body() -> Result<(), String> {
        let mut d = def();
        d.command = Some(vec!["sh".into(), "-c".into(), "exit 3".into()]);
        d.entry_point = Some(vec!["/bin/env".into()]);
        d.environment = vec![KeyValuePair {
            name: "A".into(),
            value: "b=c".into(),
        }];
        d.cpu = Some(512);
        d.memory = Some(128);
        d.memory_reservation = Some(64);
        d.port_mappings = vec![
            PortMapping {
                container_port: Some(80),
                host_port: Some(0),
                ..Default::default()
            },
            PortMapping {
                container_port: Some(53),
                host_port: Some(5353),
                protocol: Some("UDP".into()),
                ..Default::default()
            },
        ];
        d.health_check = Some(HealthCheck {
            command: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(10),
            ..Default::default()
        });
        d.extra_hosts = vec![HostEntry {
            hostname: "db".into(),
            ip_address: "10.0.0.2".into(),
        }];
        d.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft_limit: 1024,
            hard_limit: 2048,
        }];
        d.linux_parameters = Some(LinuxParameters {
            capabilities: Some(Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec!["MKNOD".into()],
            }),
            devices: vec![Device {
                host_path: "/dev/fuse".into(),
                container_path: None,
                permissions: vec!["read".into(), "write".into()],
            }],
            init_process_enabled: Some(true),
            shared_memory_size: Some(64),
            tmpfs: vec![Tmpfs {
                container_path: "/run".into(),
                size: 16,
                mount_options: vec!["noexec".into()],
            }],
            ..Default::default()
        });
        d.log_configuration = Some(LogConfiguration {
            log_driver: "json-file".into(),
            options: BTreeMap::from([("max-size".into(), "10m".into())]),
            secret_options: None,
        });
        d.system_controls = vec![SystemControl {
            namespace: "net.core.somaxconn".into(),
            value: "1024".into(),
        }];
        d.links = vec!["db:database".into(), "cache".into()];
        d.interactive = Some(true);
        d.pseudo_terminal = Some(true);

        let body = create_body(&spec(d))?;
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(body.image.as_deref(), Some("busybox"));
        assert_eq!(body.env, Some(vec!["A=b=c".to_owned()]));
        assert_eq!(body.entrypoint, Some(vec!["/bin/env".to_owned()]));
        assert_eq!(body.stop_timeout, Some(30));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.tty, Some(true));
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.memory, Some(128 * MIB));
        assert_eq!(host.memory_reservation, Some(64 * MIB));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(
            host.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        let mut exposed = body.exposed_ports.clone().unwrap_or_default();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_owned(), "80/tcp".to_owned()]);
        let bindings = host.port_bindings.unwrap_or_default();
        let host_port = |key: &str| {
            bindings
                .get(key)
                .cloned()
                .flatten()
                .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        };
        assert_eq!(host_port("80/tcp").as_deref(), Some(""));
        assert_eq!(host_port("53/udp").as_deref(), Some("5353"));
        let health = body.healthcheck.unwrap_or_default();
        assert_eq!(health.interval, Some(10 * NANOS_PER_SEC));
        assert_eq!(health.timeout, Some(5 * NANOS_PER_SEC));
        assert_eq!(health.retries, Some(3));
        assert_eq!(health.start_period, Some(0));
        assert_eq!(host.extra_hosts, Some(vec!["db:10.0.0.2".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(host.cap_drop, Some(vec!["MKNOD".to_owned()]));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.shm_size, Some(64 * MIB));
        assert_eq!(
            host.tmpfs
                .unwrap_or_default()
                .get("/run")
                .map(String::as_str),
            Some("size=16m,noexec")
        );
        let devices = host.devices.unwrap_or_default();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rw"));
        assert_eq!(
            host.log_config.and_then(|l| l.typ).as_deref(),
            Some("json-file")
        );
        assert_eq!(
            host.sysctls
                .unwrap_or_default()
                .get("net.core.somaxconn")
                .map(String::as_str),
            Some("1024")
        );
        assert_eq!(
            host.links,
            Some(vec![
                "berth-web-db-1a2b3c4d:database".to_owned(),
                "berth-web-cache-1a2b3c4d:cache".to_owned()
            ])
        );
        Ok(())
    }

    #[test]
    fn host_network_publishes_no_bindings_and_cpu_absent_is_default() -> Result<(), String> {
        let mut d = def();
        d.stop_timeout = Some(5);
        d.port_mappings = vec![PortMapping {
            container_port: Some(8080),
            host_port: Some(8080),
            ..Default::default()
        }];
        let mut s = spec(d);
        s.network_mode = "host".to_owned();
        let body = create_body(&s)?;
        let host = body.host_config.unwrap_or_default();
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.cpu_shares, None);
        assert_eq!(body.stop_timeout, Some(5));
        assert_eq!(body.healthcheck, None);
        Ok(())
    }

    #[test]
    fn max_swap_needs_memory() {
        let mut d = def();
        d.linux_parameters = Some(LinuxParameters {
            max_swap: Some(0),
            ..Default::default()
        });
        assert!(create_body(&spec(d.clone())).is_err());
        d.memory = Some(64);
        let host = create_body(&spec(d))
            .ok()
            .and_then(|b| b.host_config)
            .unwrap_or_default();
        assert_eq!(host.memory_swap, Some(64 * MIB));
    }

    #[test]
    fn published_ports_are_parsed_and_sorted() {
        let ports: PortMap = HashMap::from([
            (
                "80/tcp".to_owned(),
                Some(vec![
                    DockerPortBinding {
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some("49153".into()),
                    },
                    DockerPortBinding {
                        host_ip: Some("::".into()),
                        host_port: Some("49153".into()),
                    },
                ]),
            ),
            ("443/tcp".to_owned(), None),
            (
                "53/udp".to_owned(),
                Some(vec![DockerPortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some("5353".into()),
                }]),
            ),
        ]);
        let parsed = port_bindings(&ports);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].container_port, 53);
        assert_eq!(parsed[0].protocol, "udp");
        assert_eq!(parsed[1].host_port, 49153);
        assert_eq!(parsed[1].host_ip, "0.0.0.0");
        assert_eq!(parsed[2].host_ip, "::");
    }

    #[test]
    fn sub_second_stop_timeouts_round_up() {
        assert_eq!(timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(timeout_secs(Duration::from_secs(0)), 0);
        assert_eq!(timeout_secs(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn debug_output_never_shows_credentials() -> Result<(), BollardError> {
        let runtime = DockerRuntime {
            docker: offline_docker()?,
            endpoint: "/nowhere.sock".to_owned(),
            credentials: Arc::new(HashMap::new()),
            digests: Arc::new(Mutex::new(HashMap::new())),
        }
        .with_credentials(HashMap::from([(
            "https://index.docker.io/v1/".to_owned(),
            DockerCredentials {
                username: Some("user".into()),
                password: Some("hunter2".into()),
                ..Default::default()
            },
        )]));
        let text = format!("{runtime:?}");
        assert!(text.contains("docker.io"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("user"),
            "{text}"
        );
        Ok(())
    }

    fn offline_docker() -> Result<Docker, BollardError> {
        // Never contacted: for code paths that only need a client value.
        Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
    }

    #[test]
    fn replayed_events_are_dropped_once_seen() -> Result<(), BollardError> {
        let mut watch = EventWatch {
            docker: offline_docker()?,
            endpoint: "/nowhere.sock".to_owned(),
            instance_id: "i-1".to_owned(),
            stream: None,
            cursor: Some(100),
            seen_at_cursor: HashSet::new(),
            backoff: BACKOFF_INITIAL,
            delay: None,
            connected_at: None,
            pending: VecDeque::new(),
        };
        let event = |id: &str, action: &str, time_nano: i64| EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: Some(HashMap::from([("exitCode".to_owned(), "0".to_owned())])),
            }),
            time: Some(time_nano / NANOS_PER_SEC),
            time_nano: Some(time_nano),
            ..Default::default()
        };
        watch.accept(event("a", "start", 100));
        watch.accept(event("a", "die", 200));
        watch.accept(event("b", "die", 200));
        // A resubscription with since = 200 replays both events at 200.
        watch.accept(event("a", "die", 200));
        watch.accept(event("b", "die", 200));
        watch.accept(event("a", "destroy", 300));
        let got: Vec<RuntimeEvent> = watch.pending.drain(..).collect();
        assert_eq!(
            got,
            vec![
                RuntimeEvent::Started { id: "a".into() },
                RuntimeEvent::Died {
                    id: "a".into(),
                    exit_code: Some(0)
                },
                RuntimeEvent::Died {
                    id: "b".into(),
                    exit_code: Some(0)
                },
                RuntimeEvent::Destroyed { id: "a".into() },
            ]
        );
        assert_eq!(watch.cursor, Some(300));
        Ok(())
    }

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets_after_a_long_subscription()
    -> Result<(), BollardError> {
        let mut watch = EventWatch {
            docker: offline_docker()?,
            endpoint: "/nowhere.sock".to_owned(),
            instance_id: "i-1".to_owned(),
            stream: None,
            cursor: None,
            seen_at_cursor: HashSet::new(),
            backoff: BACKOFF_INITIAL,
            delay: None,
            connected_at: None,
            pending: VecDeque::new(),
        };
        let mut delays = Vec::new();
        for _ in 0..8 {
            watch.failed();
            delays.extend(watch.delay.take());
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        watch.connected_at = Instant::now().checked_sub(BACKOFF_MAX);
        watch.lost();
        assert_eq!(watch.delay, Some(BACKOFF_INITIAL));
        Ok(())
    }

    #[test]
    fn inspect_maps_state_times_and_oom() -> Result<(), String> {
        use bollard::models::{ContainerConfig, ContainerState};
        let response = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/berth-web-app-1".into()),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(LABEL_INSTANCE_ID.into(), "i-1".into())])),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::EXITED),
                oom_killed: Some(true),
                exit_code: Some(137),
                error: Some(String::new()),
                started_at: Some("2024-05-01T12:34:56.123456789Z".into()),
                finished_at: Some("2024-05-01T12:34:57.5Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = container_info(response, "sha256:img".into())?;
        assert_eq!(info.name, "berth-web-app-1");
        assert_eq!(info.state, RunState::Exited);
        assert_eq!(info.exit_code, Some(137));
        assert!(info.oom_killed);
        assert_eq!(info.error.as_deref(), Some(OOM_REASON));
        assert_eq!(info.started_at_ms, 1_714_566_896_123);
        assert_eq!(info.finished_at_ms, 1_714_566_897_500);
        assert_eq!(
            info.labels.get(LABEL_INSTANCE_ID).map(String::as_str),
            Some("i-1")
        );

        let never_started = ContainerInspectResponse {
            id: Some("def".into()),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(127),
                error: Some("exec: \"/nope\": no such file or directory".into()),
                started_at: Some("0001-01-01T00:00:00Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = container_info(never_started, String::new())?;
        assert_eq!(info.state, RunState::Created);
        assert_eq!(info.exit_code, Some(127));
        assert_eq!((info.started_at_ms, info.finished_at_ms), (0, 0));

        let created = ContainerInspectResponse {
            id: Some("ghi".into()),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(container_info(created, String::new())?.exit_code, None);
        assert!(container_info(ContainerInspectResponse::default(), String::new()).is_err());
        Ok(())
    }
}
