//! The fleet server: enrollment CA, agent sessions, placement, store.
//!
//! [`Server::start`] opens the data dir, loads (or creates) the CA, opens the
//! store, binds both listeners and serves until [`RunningServer::shutdown`].
//! Two listeners:
//! - the fleet address (TLS; client certificates optional at the TLS layer):
//!   `Enrollment` for hosts without a certificate, `Fleet` for enrolled
//!   agents, which must present one;
//! - the admin address (plaintext gRPC, loopback only): `Admin`, for the CLI.
//!
//! State ownership: the store is the single source of truth for
//! everything durable; [`Core`] adds the one piece of state that lives in
//! memory only, the session registry (which agents are connected right now).

pub mod admin;
pub mod ca;
pub mod enroll;
pub mod fleet;
pub(crate) mod fsutil;
pub mod placement;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::v1::Token;
use berth_proto::v1::admin_server::AdminServer;
use berth_proto::v1::enrollment_server::EnrollmentServer;
use berth_proto::v1::fleet_server::FleetServer;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

use self::ca::Ca;
use self::store::{ActivationRecord, SqliteStore, Store, StoreError};

/// Default fleet listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7420";
/// Default admin listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7421";
/// Default server data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth-server";
/// Default heartbeat interval told to agents.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default lifetime of an activation.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime of an activation.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long an agent has to send Hello after opening its stream.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for connections to drain.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The file the running server describes itself in.
pub const STATE_FILE: &str = "server.json";
/// The database file.
pub const DB_FILE: &str = "berth.db";

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Holds `ca.key`, `ca.crt`, `berth.db`, `server.json`; created 0700.
    pub data_dir: PathBuf,
    /// Fleet API (agents, TLS). Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Admin API (CLI, plaintext); must be a loopback address. Port 0 picks
    /// a free port.
    pub admin_listen: SocketAddr,
    /// `host:port` agents use to reach the fleet API. Default: the listen
    /// IP, or the host name when listening on all addresses, with the bound
    /// port.
    pub advertise: Option<String>,
    /// Heartbeat interval told to agents; a session without any message for
    /// three intervals is closed.
    pub heartbeat_interval: Duration,
    /// Extra DNS names or IPs for the server certificate.
    pub tls_sans: Vec<String>,
    /// Activation lifetime when a token request gives none.
    pub default_token_ttl: Duration,
}

impl ServerConfig {
    /// The defaults of `berth server` with another data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7420)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7421)),
            advertise: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            tls_sans: Vec::new(),
            default_token_ttl: DEFAULT_TOKEN_TTL,
        }
    }

    /// Both listeners on loopback with free ports (tests, `berth dev`).
    pub fn loopback(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::new(data_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to serve the admin API on {0}: it has no authentication yet, so it listens on loopback only (for example 127.0.0.1:7421)"
    )]
    AdminNotLoopback(SocketAddr),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS for the fleet API: {0}")]
    Tls(tonic::transport::Error),
    #[error("cannot write {path}: {source}")]
    StateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} API stopped: {source}")]
    Serve {
        what: &'static str,
        source: tonic::transport::Error,
    },
    #[error("the {what} API task failed: {reason}")]
    Task { what: &'static str, reason: String },
}

/// What a live session accepts from the rest of the server.
#[derive(Debug)]
pub(crate) enum SessionCommand {
    /// The instance's assignment may have changed: send it if it is newer
    /// than the last one sent.
    AssignmentChanged,
    /// End the session with this status.
    Close(Status),
}

#[derive(Debug)]
struct SessionHandle {
    id: u64,
    peer: Option<SocketAddr>,
    tx: mpsc::UnboundedSender<SessionCommand>,
}

/// Shared state of the services.
pub(crate) struct Core {
    store: Arc<Mutex<Box<dyn Store>>>,
    sessions: Mutex<HashMap<String, SessionHandle>>,
    next_session: AtomicU64,
    pub(crate) ca: Ca,
    pub(crate) advertise: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) hello_timeout: Duration,
    default_token_ttl: Duration,
}

impl Core {
    pub(crate) fn new(
        store: Box<dyn Store>,
        ca: Ca,
        advertise: String,
        heartbeat_interval: Duration,
        default_token_ttl: Duration,
    ) -> Core {
        Core {
            store: Arc::new(Mutex::new(store)),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            ca,
            advertise,
            heartbeat_interval,
            hello_timeout: HELLO_TIMEOUT,
            default_token_ttl,
        }
    }

    /// Runs `f` on the store on the blocking pool, under the store lock:
    /// everything `f` does is atomic with respect to other store users.
    pub(crate) async fn db<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut dyn Store) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            // A panic inside `f` rolled its transaction back when it dropped,
            // so the store is consistent even if the lock is poisoned.
            let mut guard = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(guard.as_mut())
        })
        .await
        .map_err(|e| E::from(StoreError::Join(e.to_string())))?
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionHandle>> {
        // The map holds no invariant a panic could break half-way.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session as the current one of its instance; an older
    /// session of the same instance is told to close.
    pub(crate) fn register_session(
        &self,
        instance_id: &str,
        peer: Option<SocketAddr>,
        tx: mpsc::UnboundedSender<SessionCommand>,
    ) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let old = self
            .sessions()
            .insert(instance_id.to_owned(), SessionHandle { id, peer, tx });
        if let Some(old) = old {
            warn!(
                instance_id,
                old_peer = ?old.peer,
                new_peer = ?peer,
                "a newer session of this instance replaces the current one"
            );
            let _ = old.tx.send(SessionCommand::Close(Status::aborted(format!(
                "session replaced by a newer one of instance {instance_id}"
            ))));
        }
        id
    }

    /// Removes the session if it is still the instance's current one.
    pub(crate) fn unregister_session(&self, instance_id: &str, session_id: u64) -> bool {
        let mut sessions = self.sessions();
        if sessions
            .get(instance_id)
            .is_some_and(|s| s.id == session_id)
        {
            sessions.remove(instance_id);
            true
        } else {
            false
        }
    }

    pub(crate) fn is_connected(&self, instance_id: &str) -> bool {
        self.sessions().contains_key(instance_id)
    }

    pub(crate) fn connected_instances(&self) -> std::collections::HashSet<String> {
        self.sessions().keys().cloned().collect()
    }

    /// Tells the instance's live session, if any, that its assignment may
    /// have changed. Without a session the assignment goes out on the next
    /// Hello.
    pub(crate) fn notify_assignment(&self, instance_id: &str) {
        if let Some(s) = self.sessions().get(instance_id) {
            let _ = s.tx.send(SessionCommand::AssignmentChanged);
        }
    }

    /// Closes the instance's live session, if any.
    pub(crate) fn close_session(&self, instance_id: &str, status: Status) {
        if let Some(s) = self.sessions().remove(instance_id) {
            let _ = s.tx.send(SessionCommand::Close(status));
        }
    }

    fn close_all_sessions(&self, status: &Status) {
        for (_, s) in self.sessions().drain() {
            let _ = s.tx.send(SessionCommand::Close(status.clone()));
        }
    }

    /// Creates a one-time activation valid for `ttl` (the default when
    /// `None`). Only the code's hash is stored.
    pub(crate) async fn create_token(&self, ttl: Option<Duration>) -> Result<Token, TokenError> {
        let ttl = ttl.unwrap_or(self.default_token_ttl);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(TokenError::Ttl(ttl));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let code = random_code();
        let now = berth_proto::now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let record = ActivationRecord {
            id: id.clone(),
            code_hash: hex::encode(Sha256::digest(code.as_bytes())),
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms),
            used_at_ms: None,
            instance_id: None,
        };
        let expires_at_ms = record.expires_at_ms;
        self.db(move |s| s.create_activation(&record)).await?;
        info!(activation_id = %id, expires_at_ms, "activation created");
        Ok(Token {
            activation_id: id,
            activation_code: code,
            expires_at_ms,
            ca_sha256: self.ca.sha256_hex(),
            fleet_addresses: vec![self.advertise.clone()],
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "token lifetime {} is out of range: it must be more than 0 and at most 365 days",
        humantime::format_duration(*.0)
    )]
    Ttl(Duration),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// 32 characters from the URL-safe base64 alphabet: 192 bits.
fn random_code() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect()
}

/// Maps store errors to gRPC statuses; internal details go to the log.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NoInstance(_) | StoreError::NoTask(_) => Status::not_found(e.to_string()),
        StoreError::ActivationUsed(_) => Status::permission_denied(e.to_string()),
        other => {
            tracing::error!(error = %other, "store failure");
            Status::internal(format!("the control plane's store failed: {other}"))
        }
    }
}

/// Entry point: see [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Starts the control plane: data dir, CA, store, both listeners. When it
    /// returns, both listeners accept connections and `<data-dir>/server.json`
    /// names their addresses.
    pub async fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
        if !cfg.admin_listen.ip().is_loopback() {
            return Err(ServerError::AdminNotLoopback(cfg.admin_listen));
        }
        if cfg.heartbeat_interval < Duration::from_millis(100)
            || cfg.heartbeat_interval > Duration::from_secs(3600)
        {
            return Err(ServerError::Config(format!(
                "heartbeat interval {} is out of range (100ms to 1h)",
                humantime::format_duration(cfg.heartbeat_interval)
            )));
        }
        if let Some(adv) = &cfg.advertise {
            validate_advertise(adv)?;
        }
        // tonic builds its rustls configs from the process default; there
        // must be exactly one, and berth uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let dir = cfg.data_dir.clone();
        let state_path = dir.join(STATE_FILE);
        let (ca, store) = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || open_data_dir(&dir)
        })
        .await
        .map_err(|e| ServerError::Task {
            what: "startup",
            reason: e.to_string(),
        })??;

        let fleet_listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "fleet API",
                addr: cfg.listen,
                source,
            })?;
        let fleet_addr = local_addr(&fleet_listener, cfg.listen, "fleet API")?;
        let admin_listener = tokio::net::TcpListener::bind(cfg.admin_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admin API",
                addr: cfg.admin_listen,
                source,
            })?;
        let admin_addr = local_addr(&admin_listener, cfg.admin_listen, "admin API")?;

        let hostname = hostname();
        let advertise = cfg
            .advertise
            .clone()
            .unwrap_or_else(|| default_advertise(fleet_addr, hostname.as_deref()));

        let mut sans = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
        sans.extend(hostname.clone());
        if !fleet_addr.ip().is_unspecified() {
            sans.push(fleet_addr.ip().to_string());
        }
        sans.push(host_of(&advertise).to_owned());
        sans.extend(cfg.tls_sans.iter().cloned());
        let identity = ca.issue_server_cert(&sans)?;
        for skipped in &identity.skipped_sans {
            warn!(san = %skipped, "name left out of the server certificate");
        }
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&identity.chain_pem, &identity.key_pem))
            .client_ca_root(Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true);

        let core = Arc::new(Core::new(
            store,
            ca,
            advertise,
            cfg.heartbeat_interval,
            cfg.default_token_ttl,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);

        let fleet_router = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(ServerError::Tls)?
            .tcp_nodelay(true)
            .add_service(EnrollmentServer::new(enroll::EnrollmentService::new(
                Arc::clone(&core),
            )))
            .add_service(FleetServer::new(fleet::FleetService::new(Arc::clone(
                &core,
            ))));
        let fleet_task = tokio::spawn(fleet_router.serve_with_incoming_shutdown(
            TcpIncoming::from(fleet_listener),
            stopped(stop_rx.clone()),
        ));
        let admin_router = tonic::transport::Server::builder().add_service(AdminServer::new(
            admin::AdminService::new(Arc::clone(&core)),
        ));
        let admin_task = tokio::spawn(
            admin_router
                .serve_with_incoming_shutdown(TcpIncoming::from(admin_listener), stopped(stop_rx)),
        );

        let state = serde_json::json!({
            "fleetAddr": fleet_addr.to_string(),
            "adminAddr": admin_addr.to_string(),
            "advertise": core.advertise,
            "pid": std::process::id(),
        });
        let state_bytes = serde_json::to_vec_pretty(&state).unwrap_or_default();
        let write_path = state_path.clone();
        tokio::task::spawn_blocking(move || fsutil::write_atomic(&write_path, &state_bytes, 0o644))
            .await
            .map_err(|e| ServerError::Task {
                what: "startup",
                reason: e.to_string(),
            })?
            .map_err(|source| ServerError::StateFile {
                path: state_path.clone(),
                source,
            })?;

        Ok(RunningServer {
            core,
            fleet_addr,
            admin_addr,
            state_path,
            stop_tx,
            fleet_task: Some(fleet_task),
            admin_task: Some(admin_task),
        })
    }
}

type ServeTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A started control plane.
pub struct RunningServer {
    core: Arc<Core>,
    fleet_addr: SocketAddr,
    admin_addr: SocketAddr,
    state_path: PathBuf,
    stop_tx: watch::Sender<bool>,
    fleet_task: Option<ServeTask>,
    admin_task: Option<ServeTask>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("fleet_addr", &self.fleet_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl RunningServer {
    /// The bound fleet (agent, TLS) address.
    pub fn fleet_addr(&self) -> SocketAddr {
        self.fleet_addr
    }

    /// The bound admin (CLI) address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `host:port` that agents are told to use.
    pub fn advertise_addr(&self) -> &str {
        &self.core.advertise
    }

    /// The fleet CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.core.ca.cert_pem()
    }

    /// Hex SHA-256 of the fleet CA certificate (DER).
    pub fn ca_sha256(&self) -> String {
        self.core.ca.sha256_hex()
    }

    /// Creates a one-time activation in-process (what `berth token create`
    /// does over the admin API). `None`: the default lifetime.
    pub async fn create_token(&self, ttl: Option<Duration>) -> Result<Token, TokenError> {
        self.core.create_token(ttl).await
    }

    /// Whether the instance has a live session right now.
    pub fn is_connected(&self, instance_id: &str) -> bool {
        self.core.is_connected(instance_id)
    }

    /// Serves until `signal` completes or a listener fails, then shuts down.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServerError> {
        let failure = {
            let fleet = self.fleet_task.as_mut();
            let admin = self.admin_task.as_mut();
            match (fleet, admin) {
                (Some(fleet), Some(admin)) => {
                    tokio::select! {
                        () = signal => None,
                        r = fleet => Some(("fleet", r)),
                        r = admin => Some(("admin", r)),
                    }
                }
                _ => None,
            }
        };
        match failure {
            None => self.shutdown().await,
            Some((what, r)) => {
                if what == "fleet" {
                    self.fleet_task = None;
                } else {
                    self.admin_task = None;
                }
                let _ = self.shutdown().await;
                match r {
                    Ok(Ok(())) => Err(ServerError::Task {
                        what,
                        reason: "it stopped unexpectedly".into(),
                    }),
                    Ok(Err(source)) => Err(ServerError::Serve { what, source }),
                    Err(e) => Err(ServerError::Task {
                        what,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }

    /// Closes every agent session, stops accepting, and waits (at most
    /// [`DRAIN_TIMEOUT`]) for open requests to finish.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        info!("shutting down");
        self.core
            .close_all_sessions(&Status::unavailable("the control plane is shutting down"));
        let _ = self.stop_tx.send(true);
        let mut result = Ok(());
        for (what, task) in [
            ("fleet", self.fleet_task.take()),
            ("admin", self.admin_task.take()),
        ] {
            let Some(mut task) = task else { continue };
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(source))) => result = Err(ServerError::Serve { what, source }),
                Ok(Err(e)) => {
                    result = Err(ServerError::Task {
                        what,
                        reason: e.to_string(),
                    })
                }
                Err(_) => {
                    warn!(
                        api = what,
                        "connections did not drain in time; closing them"
                    );
                    task.abort();
                }
            }
        }
        let _ = std::fs::remove_file(&self.state_path);
        result
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Dropped without shutdown(): stop serving anyway.
        let _ = self.stop_tx.send(true);
        for task in [self.fleet_task.take(), self.admin_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn open_data_dir(dir: &Path) -> Result<(Ca, Box<dyn Store>), ServerError> {
    let open = fsutil::create_private_dir(dir).map_err(|source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    })?;
    if open {
        warn!(path = %dir.display(), "the data dir is accessible to group or others; it should be mode 0700");
    }
    // A stale description of an earlier run must not be mistaken for this one.
    let _ = std::fs::remove_file(dir.join(STATE_FILE));
    let (ca, created) = Ca::load_or_create(dir)?;
    if created {
        info!(path = %dir.join(ca::CA_CERT_FILE).display(), sha256 = %ca.sha256_hex(), "created the fleet CA");
    }
    if ca.not_after() < time::OffsetDateTime::now_utc() + time::Duration::days(90) {
        warn!(not_after = %ca.not_after(), "the fleet CA expires soon; agents will have to enroll again with a new CA");
    }
    let store = SqliteStore::open(&dir.join(DB_FILE))?;
    Ok((ca, Box::new(store)))
}

fn local_addr(
    l: &tokio::net::TcpListener,
    addr: SocketAddr,
    what: &'static str,
) -> Result<SocketAddr, ServerError> {
    l.local_addr()
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn validate_advertise(adv: &str) -> Result<(), ServerError> {
    let bad = || {
        ServerError::Config(format!(
            "advertise address {adv:?} is not HOST:PORT (for example berth.example.com:7420)"
        ))
    };
    let (host, port) = adv.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) || adv.contains('/') {
        return Err(bad());
    }
    Ok(())
}

/// `[v6]:port` → `v6`, `host:port` → `host`.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn default_advertise(bound: SocketAddr, hostname: Option<&str>) -> String {
    let port = bound.port();
    match bound.ip() {
        ip if !ip.is_unspecified() => SocketAddr::new(ip, port).to_string(),
        _ => match hostname {
            Some(h) => format!("{h}:{port}"),
            None => SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port).to_string(),
        },
    }
}

/// The host's name, from the kernel.
pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_defaults() {
        let any: SocketAddr = "0.0.0.0:7420".parse().expect("addr");
        assert_eq!(default_advertise(any, Some("h1")), "h1:7420");
        assert_eq!(default_advertise(any, None), "127.0.0.1:7420");
        let v6: SocketAddr = "[::1]:9".parse().expect("addr");
        assert_eq!(default_advertise(v6, Some("h1")), "[::1]:9");
        assert_eq!(host_of("[::1]:9"), "::1");
        assert_eq!(host_of("berth.example:7420"), "berth.example");
    }

    #[test]
    fn advertise_is_validated() {
        assert!(validate_advertise("berth.example:7420").is_ok());
        assert!(validate_advertise("[::1]:7420").is_ok());
        assert!(validate_advertise("berth.example").is_err());
        assert!(validate_advertise("https://berth.example:7420").is_err());
        assert!(validate_advertise("h:0").is_err());
    }

    #[test]
    fn codes_are_url_safe_and_random() {
        let a = random_code();
        let b = random_code();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
