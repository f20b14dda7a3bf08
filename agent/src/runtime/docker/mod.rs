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
//! - Registry credentials are held per registry host and never logged; a
//!   task's own (`repositoryCredentials`, passed to `ensure_image`) win
//!   over them for that pull.
//!
//! # Modules
//! - this module: [`DockerRuntime`], the [`Runtime`] calls and the mapping of
//!   bollard's errors (a transport failure is `Unreachable`, anything the
//!   Engine said is `Engine` in its own words);
//! - `events`: the `/events` subscription that never ends (`EventWatch`),
//!   its filters and the action → [`RuntimeEvent`] mapping;
//! - `create`: an ECS container definition → Docker's create body;
//! - `ports`: port mappings both ways (create body, inspect answer);
//! - `inspect`: the Engine's inspect answer → [`ContainerInfo`];
//! - `reference`: image references and registry keys (the config keys its
//!   registry credentials with them too).
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

mod create;
mod events;
mod inspect;
mod ports;
mod reference;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::text::error_chain;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveVolumeOptions, StopContainerOptionsBuilder,
};
use futures_util::stream::{BoxStream, StreamExt};
use tracing::{debug, info, warn};

use super::{
    ContainerInfo, ContainerSpec, LABEL_SHARED, PullPolicy, Runtime, RuntimeError, RuntimeEvent,
    VolumeScope, VolumeSpec,
};
use create::{create_body, string_map};
use inspect::{container_info, pick_repo_digest};

pub use events::{EVENT_ACTIONS, event_filters};
pub(crate) use reference::registry_key;
use reference::{normalize_image_reference, registry_host};

/// The socket used when neither the caller nor `DOCKER_HOST` names one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long a request may wait for the Engine's answer (response headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Extra time a stop request may take beyond the stop timeout itself.
const STOP_GRACE: Duration = Duration::from_secs(60);
/// The log driver that discards everything: always there, never listed in
/// `docker info`.
const NONE_LOG_DRIVER: &str = "none";
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
    /// Pulls with `task_credentials` (the task's `repositoryCredentials`),
    /// else the agent's credentials for the image's registry.
    async fn pull(
        &self,
        reference: &str,
        task_credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        let from_task = task_credentials.is_some();
        let credentials = task_credentials.or_else(|| {
            self.credentials
                .get(&registry_key(registry_host(reference)))
                .cloned()
        });
        debug!(
            image = reference,
            with_credentials = credentials.is_some(),
            from_task,
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
            driver_opts: string_map(&spec.driver_opts),
            labels: string_map(&spec.labels),
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
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        credentials: Option<&crate::secrets::PullCredentials>,
    ) -> Result<(), RuntimeError> {
        let reference = normalize_image_reference(image);
        let task_credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: Some(registry_host(&reference).to_owned()),
            ..DockerCredentials::default()
        });
        match policy {
            PullPolicy::Always => self.pull(&reference, task_credentials.clone()).await,
            PullPolicy::Once | PullPolicy::PreferCached => {
                if self.image_present(&reference).await? {
                    debug!(image = %reference, "image cached; not pulling");
                    Ok(())
                } else {
                    self.pull(&reference, task_credentials.clone()).await
                }
            }
            PullPolicy::Default => match self.pull(&reference, task_credentials.clone()).await {
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

    fn events(&self, instance_id: &str) -> BoxStream<'static, RuntimeEvent> {
        let watch = events::EventWatch::new(
            self.docker.clone(),
            self.endpoint.clone(),
            instance_id.to_owned(),
        );
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

    async fn engine_cgroups(&self) -> Result<crate::cgroups::EngineCgroups, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.engine_error("describe", "the engine (docker info)", e))?;
        Ok(crate::cgroups::EngineCgroups {
            driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
            version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        })
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

/// Docker's `t`: whole seconds, rounded up so that a sub-second timeout is
/// not a kill without warning.
fn timeout_secs(timeout: Duration) -> i32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A client that is never contacted: for code paths that only need a
    /// client value.
    pub(super) fn offline_docker() -> Result<Docker, BollardError> {
        Docker::connect_with_http("http://127.0.0.1:1", 1, bollard::API_DEFAULT_VERSION)
    }
}
