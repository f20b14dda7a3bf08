//! The fleet server: enrollment CA, agent sessions, placement, store.
//!
//! [`Server::start`] opens the data dir, loads (or creates) the CA, opens the
//! store, binds both listeners and serves until [`RunningServer::shutdown`].
//! Two listeners (and a third, read-only one for Prometheus, see
//! [`metrics`]):
//! - the fleet address (TLS; client certificates optional at the TLS layer):
//!   `Enrollment` for hosts without a certificate, `Fleet` for enrolled
//!   agents, which must present one;
//! - the admin address: `Admin`, for the CLI. On a loopback address it is
//!   plaintext; on any other address it is TLS and every call must present
//!   an admin certificate of the fleet CA (`OU=admin`, see [`ca::ADMIN_OU`])
//!   that the store records as issued and not revoked
//!   (`admin::AdminGate`): an agent's certificate is refused.
//!
//! Limits (see [`limits`]): gRPC messages are bounded per service
//! ([`ENROLL_MAX_MESSAGE`], [`FLEET_MAX_MESSAGE`], [`ADMIN_MAX_MESSAGE`]);
//! failed enrollments are counted per source address; every instance has
//! one token bucket for its sessions and messages, and one for renewals.
//!
//! Connections (see [`listener`] and [`admission`]): both gRPC listeners
//! accept through [`listener::incoming`], which caps connections per source
//! and in total (fitted into the open-file limit) and closes a connection
//! without a call in progress after an idle timeout. HTTP/2 is bounded per
//! connection ([`MAX_CONCURRENT_STREAMS`], [`MAX_HEADER_LIST_SIZE`],
//! keepalive pings) and every unary call has a deadline
//! ([`FLEET_REQUEST_TIMEOUT`], [`ADMIN_REQUEST_TIMEOUT`]); `Enrollment`
//! calls in progress are capped per source and `Fleet` calls without a
//! client certificate are refused before their body is read.
//!
//! State ownership: the store is the single source of truth for
//! everything durable; [`Core`] adds the one piece of state that lives in
//! memory only, the session registry (which agents are connected right now).

pub mod admin;
pub mod admission;
pub mod ca;
pub mod enroll;
pub mod fleet;
pub(crate) mod fsutil;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod placement;
pub mod protocol;
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
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

use self::ca::Ca;
use self::store::{ActivationRecord, SqliteStore, Store, StoreError};

/// Default fleet listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7420";
/// Default admin listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7421";
/// Default metrics (Prometheus, plain HTTP, read-only) listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:7422";
/// Default server data dir.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth-server";
/// Default heartbeat interval told to agents.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Default lifetime of an activation.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Longest lifetime of an activation.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of an agent's client certificate (`--cert-lifetime`).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest and longest `--cert-lifetime`.
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(10);
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of an admin certificate.
pub const DEFAULT_ADMIN_CERT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Failed enrollments allowed per source address (IPv4, or IPv6 /64) in
/// [`ENROLL_FAILURE_WINDOW`]; each activation id has its own, stricter limit
/// (`enroll::ACTIVATION_FAILURES`).
pub const DEFAULT_ENROLL_FAILURES: u32 = 20;
pub const ENROLL_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Messages per second one instance may send on average across all its
/// sessions (each Connect counts as one), and at once.
pub const DEFAULT_STREAM_RATE: u32 = 200;
pub const DEFAULT_STREAM_BURST: u32 = 1000;
/// Largest message `Enrollment` accepts: an activation and a CSR.
pub const ENROLL_MAX_MESSAGE: usize = 64 * 1024;
/// Largest message `Fleet` accepts from an agent.
pub const FLEET_MAX_MESSAGE: usize = berth_proto::FLEET_MAX_AGENT_MESSAGE;
/// Largest message `Fleet` sends (an assignment: every task of a host with
/// its definition). The agent accepts up to the same size.
pub const FLEET_MAX_SEND: usize = berth_proto::FLEET_MAX_SERVER_MESSAGE;
/// Largest message `Admin` accepts (a task definition is at most
/// `berth_taskdef::MAX_DEFINITION_BYTES`).
pub const ADMIN_MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// How long a client has to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an agent has to send Hello after opening its stream.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 streams one connection may have open at once (fleet and admin).
pub const MAX_CONCURRENT_STREAMS: u32 = 64;
/// Largest header block of a request (gRPC metadata is small).
pub const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// HTTP/2 pings: how often, and how long an answer may take before the
/// connection is closed.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a fleet API call until its response starts: a unary call
/// (Enroll, Renew) must have sent its whole request and been answered by
/// then; a session (Connect) is answered at once and then bounded by
/// [`HELLO_TIMEOUT`] and its heartbeats.
pub const FLEET_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of an admin API call (all unary).
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections the admin API holds at once (per source and in all); its
/// clients are operators' CLIs.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;
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
    /// Admin API (CLI). Loopback: plaintext. Any other address: TLS, and
    /// every call needs an admin certificate. Port 0 picks a free port.
    pub admin_listen: SocketAddr,
    /// `GET /metrics` (Prometheus text, plain HTTP, no secrets in it).
    /// Port 0 picks a free port.
    pub metrics_listen: SocketAddr,
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
    /// Lifetime of the client certificates issued to agents, at enrollment
    /// and at every renewal.
    pub cert_lifetime: Duration,
    /// Failed enrollments allowed per source address (IPv6: per /64) and
    /// minute; 0: no limit.
    pub enroll_failures_per_minute: u32,
    /// Messages per second one instance may send on average, across all
    /// its sessions (each Connect counts as one); 0: no
    /// limit.
    pub stream_rate: u32,
    /// Messages one instance may send at once.
    pub stream_burst: u32,
    /// Connection caps and idle timeout of the fleet API; the idle timeout
    /// also applies to the admin API.
    pub connections: listener::ConnectionLimits,
}

impl ServerConfig {
    /// The defaults of `berth server` with another data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7420)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7421)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 7422)),
            advertise: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            tls_sans: Vec::new(),
            default_token_ttl: DEFAULT_TOKEN_TTL,
            cert_lifetime: DEFAULT_CERT_LIFETIME,
            enroll_failures_per_minute: DEFAULT_ENROLL_FAILURES,
            stream_rate: DEFAULT_STREAM_RATE,
            stream_burst: DEFAULT_STREAM_BURST,
            connections: listener::ConnectionLimits::default(),
        }
    }

    /// Both listeners on loopback with free ports (tests, `berth dev`).
    pub fn loopback(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::new(data_dir)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data dir {} is open to group or others (mode {mode:04o}): it holds the fleet CA key and the database (task definitions with their environments); run `chmod 700 {}`",
        path.display(),
        path.display()
    )]
    DataDirOpen { path: PathBuf, mode: u32 },
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
    #[error("cannot set up TLS for the {what} API: {source}")]
    Tls {
        what: &'static str,
        source: tonic::transport::Error,
    },
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

/// A session before its Hello: known so that deregistration closes it.
#[derive(Debug)]
struct PendingSession {
    instance_id: String,
    tx: mpsc::UnboundedSender<SessionCommand>,
}

/// Renewals one instance may make at once ...
pub const RENEW_BURST: u32 = 3;
/// ... and at most one per this long (or per a quarter of the certificate
/// lifetime, when that is shorter).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Shared state of the services.
pub(crate) struct Core {
    store: Arc<Mutex<Box<dyn Store>>>,
    sessions: Mutex<HashMap<String, SessionHandle>>,
    /// Sessions waiting for their Hello, by session id.
    pending: Mutex<HashMap<u64, PendingSession>>,
    next_session: AtomicU64,
    pub(crate) ca: Ca,
    pub(crate) advertise: String,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) hello_timeout: Duration,
    default_token_ttl: Duration,
    /// Lifetime of agent certificates.
    pub(crate) cert_lifetime: time::Duration,
    /// Failed enrollments per source address.
    pub(crate) enroll_failures: limits::FailureLimiter,
    /// Token bucket parameters of every instance's sessions.
    pub(crate) stream_rate: u32,
    pub(crate) stream_burst: u32,
    /// One bucket per instance, across its sessions: each Connect and each
    /// message takes a token.
    pub(crate) instance_rate: limits::InstanceBuckets,
    /// One bucket per instance for `Fleet.Renew`.
    pub(crate) renewals: limits::InstanceBuckets,
    /// A renewal token comes back after this long.
    renew_every: Duration,
    /// Counters and histograms for `/metrics`.
    pub(crate) metrics: Arc<metrics::ServerMetrics>,
}

impl Core {
    pub(crate) fn new(
        store: Box<dyn Store>,
        ca: Ca,
        advertise: String,
        cfg: &ServerConfig,
    ) -> Core {
        let metrics = Arc::new(metrics::ServerMetrics::default());
        // Every store call is timed for berth_server_store_latency_seconds.
        let store: Box<dyn Store> = Box::new(metrics::TimedStore::new(store, Arc::clone(&metrics)));
        // A legitimate agent renews once per half lifetime at most (retrying
        // a failure every tenth of what is left): a few per hour is plenty.
        let renew_every = (cfg.cert_lifetime / 4).clamp(Duration::from_secs(1), RENEW_INTERVAL);
        Core {
            store: Arc::new(Mutex::new(store)),
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            ca,
            advertise,
            heartbeat_interval: cfg.heartbeat_interval,
            hello_timeout: HELLO_TIMEOUT,
            default_token_ttl: cfg.default_token_ttl,
            cert_lifetime: time::Duration::try_from(cfg.cert_lifetime)
                .unwrap_or(ca::CLIENT_CERT_VALIDITY),
            enroll_failures: limits::FailureLimiter::new(
                cfg.enroll_failures_per_minute,
                ENROLL_FAILURE_WINDOW,
            ),
            stream_rate: cfg.stream_rate,
            stream_burst: cfg.stream_burst,
            instance_rate: limits::InstanceBuckets::new(
                f64::from(cfg.stream_rate),
                cfg.stream_burst,
            ),
            renewals: limits::InstanceBuckets::new(1.0 / renew_every.as_secs_f64(), RENEW_BURST),
            renew_every,
            metrics,
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

    /// How often an instance may renew its certificate, after the burst.
    pub(crate) fn renew_interval(&self) -> Duration {
        self.renew_every
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PendingSession>> {
        // The map holds no invariant a panic could break half-way.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a session that has not sent its Hello yet, so that
    /// deregistration (and shutdown) can close it. Returns its id.
    pub(crate) fn register_pending(
        &self,
        instance_id: &str,
        tx: mpsc::UnboundedSender<SessionCommand>,
    ) -> u64 {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        self.pending().insert(
            id,
            PendingSession {
                instance_id: instance_id.to_owned(),
                tx,
            },
        );
        id
    }

    /// The pending session `session_id` said Hello: it becomes the current
    /// session of its instance (an older one is told to close). `false`
    /// when it was closed meanwhile (the instance was deregistered).
    pub(crate) fn promote_session(
        &self,
        instance_id: &str,
        session_id: u64,
        peer: Option<SocketAddr>,
    ) -> bool {
        let Some(pending) = self.pending().remove(&session_id) else {
            return false;
        };
        self.register_session(instance_id, session_id, peer, pending.tx);
        true
    }

    /// Registers a session as the current one of its instance; an older
    /// session of the same instance is told to close.
    fn register_session(
        &self,
        instance_id: &str,
        id: u64,
        peer: Option<SocketAddr>,
        tx: mpsc::UnboundedSender<SessionCommand>,
    ) {
        let old = self
            .sessions()
            .insert(instance_id.to_owned(), SessionHandle { id, peer, tx });
        self.metrics.sessions_opened.inc();
        if let Some(old) = old {
            self.metrics.sessions_replaced.inc();
            // Either a reconnect the server had not noticed the end of yet,
            // or two hosts with one identity (a cloned disk or data dir).
            warn!(
                instance_id,
                old_peer = %peer_text(old.peer),
                new_peer = %peer_text(peer),
                "two sessions for one instance: the newer one replaces the older; if both agents keep running, two hosts share this identity (cloned data dir?)"
            );
            let _ = old.tx.send(SessionCommand::Close(Status::aborted(format!(
                "{REPLACED_PREFIX} from {} for instance {instance_id}; if that is not this host, two hosts share this identity: enroll each host on its own",
                peer_text(peer)
            ))));
        }
    }

    /// Removes the session if it is still the instance's current one (or
    /// still pending). `true` when it was the current one.
    pub(crate) fn unregister_session(&self, instance_id: &str, session_id: u64) -> bool {
        self.pending().remove(&session_id);
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

    /// Closes the instance's live session and the sessions still waiting
    /// for their Hello, if any.
    pub(crate) fn close_session(&self, instance_id: &str, status: Status) {
        self.pending().retain(|_, p| {
            if p.instance_id == instance_id {
                let _ = p.tx.send(SessionCommand::Close(status.clone()));
                false
            } else {
                true
            }
        });
        if let Some(s) = self.sessions().remove(instance_id) {
            let _ = s.tx.send(SessionCommand::Close(status));
        }
    }

    fn close_all_sessions(&self, status: &Status) {
        for (_, p) in self.pending().drain() {
            let _ = p.tx.send(SessionCommand::Close(status.clone()));
        }
        for (_, s) in self.sessions().drain() {
            let _ = s.tx.send(SessionCommand::Close(status.clone()));
        }
    }

    /// Creates a one-time activation valid for `ttl` (the default when
    /// `None`), for any host or only for `hostname`, from any address or
    /// only from `sources`. Only the code's hash is stored.
    pub(crate) async fn create_token(
        &self,
        ttl: Option<Duration>,
        hostname: Option<&str>,
        sources: &[enroll::Cidr],
    ) -> Result<Token, TokenError> {
        let source_cidrs: Vec<String> = sources.iter().map(ToString::to_string).collect();
        let ttl = ttl.unwrap_or(self.default_token_ttl);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(TokenError::Ttl(ttl));
        }
        let hostname = match hostname.map(str::trim).filter(|h| !h.is_empty()) {
            Some(h) if valid_hostname(h) => Some(h.to_owned()),
            Some(h) => return Err(TokenError::Hostname(h.to_owned())),
            None => None,
        };
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
            hostname: hostname.clone(),
            source_cidrs: source_cidrs.clone(),
        };
        let expires_at_ms = record.expires_at_ms;
        self.db(move |s| s.create_activation(&record)).await?;
        let from = if source_cidrs.is_empty() {
            "(any)".to_owned()
        } else {
            source_cidrs.join(",")
        };
        info!(activation_id = %id, expires_at_ms, hostname = hostname.as_deref().unwrap_or("(any)"), from = %from, "activation created");
        Ok(Token {
            activation_id: id,
            activation_code: code,
            expires_at_ms,
            ca_sha256: self.ca.sha256_hex(),
            fleet_addresses: vec![self.advertise.clone()],
            hostname: hostname.unwrap_or_default(),
            source_cidrs,
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
    #[error(
        "invalid hostname {0:?}: use 1 to 253 letters, digits, '.', '-' or '_' (the name the host reports, as `hostname` prints it)"
    )]
    Hostname(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The start of the status that tells an agent a newer session of its
/// instance replaced its own; the agent recognises it.
pub const REPLACED_PREFIX: &str = berth_proto::SESSION_REPLACED;

/// A peer address for logs and messages.
pub(crate) fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "an unknown address".to_owned(), |p| p.to_string())
}

/// Whether `h` may be a host's name: the name an activation is bound to,
/// and the name an agent reports at enrollment and in its Hello.
pub(crate) fn valid_hostname(h: &str) -> bool {
    (1..=253).contains(&h.len())
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// 32 letters and digits, each equally likely: about 190 bits (32 × log2 62).
/// No `-` or `_` (unlike URL-safe base64): a code starting with `-`
/// would read as a flag on the `berth-agent enroll` command line.
fn random_code() -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(32);
    while out.len() < 32 {
        let mut bytes = [0u8; 64];
        rand::fill(&mut bytes);
        // Rejection sampling keeps every character equally likely.
        for b in bytes.iter().map(|b| usize::from(b & 63)) {
            if let Some(c) = ALPHABET.get(b)
                && out.len() < 32
            {
                out.push(char::from(*c));
            }
        }
    }
    out
}

/// Maps store errors to gRPC statuses; internal details go to the log.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NoInstance(_) | StoreError::NoTask(_) => Status::not_found(e.to_string()),
        StoreError::InstanceInactive(_) => Status::permission_denied(e.to_string()),
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
        // Off loopback the admin API is reachable by others: TLS with admin
        // certificates only.
        let admin_tls = !cfg.admin_listen.ip().is_loopback();
        if cfg.cert_lifetime < MIN_CERT_LIFETIME || cfg.cert_lifetime > MAX_CERT_LIFETIME {
            return Err(ServerError::Config(format!(
                "certificate lifetime {} is out of range (10s to 365 days)",
                humantime::format_duration(cfg.cert_lifetime)
            )));
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
        cfg.connections.validate().map_err(ServerError::Config)?;
        let budget = listener::open_file_budget(
            listener::raise_open_file_limit(),
            cfg.connections.max_connections,
            ADMIN_MAX_CONNECTIONS,
        )
        .map_err(ServerError::Config)?;
        if budget.fleet < cfg.connections.max_connections {
            warn!(
                open_file_limit = budget.open_file_limit,
                configured = cfg.connections.max_connections,
                allowed = budget.fleet,
                "the fleet API holds fewer connections than --max-connections asks: that many do not fit in the open-file limit; raise it (LimitNOFILE=, ulimit -n)"
            );
        }
        let fleet_limits = listener::ConnectionLimits {
            max_connections: budget.fleet,
            max_per_address: cfg.connections.max_per_address.min(budget.fleet),
            idle_timeout: cfg.connections.idle_timeout,
        };
        let admin_limits = listener::ConnectionLimits {
            max_connections: budget.admin,
            max_per_address: budget.admin,
            idle_timeout: cfg.connections.idle_timeout,
        };
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
        let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "metrics endpoint",
                addr: cfg.metrics_listen,
                source,
            })?;
        let metrics_addr = local_addr(&metrics_listener, cfg.metrics_listen, "metrics endpoint")?;

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
        if admin_tls && !admin_addr.ip().is_unspecified() {
            sans.push(admin_addr.ip().to_string());
        }
        sans.push(host_of(&advertise).to_owned());
        sans.extend(cfg.tls_sans.iter().cloned());
        let identity = ca.issue_server_cert(&sans)?;
        for skipped in &identity.skipped_sans {
            warn!(san = %skipped, "name left out of the server certificate");
        }
        let server_identity = Identity::from_pem(&identity.chain_pem, &identity.key_pem);
        // Client certificates are optional at the TLS layer (Enrollment has
        // none); Fleet refuses a call without one.
        let tls = ServerTlsConfig::new()
            .identity(server_identity.clone())
            .client_ca_root(Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true)
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        let admin_tls_config = ServerTlsConfig::new()
            .identity(server_identity)
            .client_ca_root(Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(false)
            .timeout(TLS_HANDSHAKE_TIMEOUT);

        let core = Arc::new(Core::new(store, ca, advertise, &cfg));
        let (stop_tx, stop_rx) = watch::channel(false);

        let fleet_conns = listener::Connections::new(
            "fleet API",
            fleet_limits,
            "raise --max-connections-per-address or --max-connections (BERTH_SERVER_MAX_CONNECTIONS_PER_ADDRESS, BERTH_SERVER_MAX_CONNECTIONS) if these are legitimate peers",
        );
        let admin_conns = listener::Connections::new(
            "admin API",
            admin_limits,
            "close idle CLI connections (the admin API's cap is fixed)",
        );
        let fleet_router = grpc_server(&fleet_conns, FLEET_REQUEST_TIMEOUT)
            .tls_config(tls)
            .map_err(|source| ServerError::Tls {
                what: "fleet",
                source,
            })?
            .add_service(admission::Admit::new(
                EnrollmentServer::new(enroll::EnrollmentService::new(Arc::clone(&core)))
                    .max_decoding_message_size(ENROLL_MAX_MESSAGE),
                admission::InFlightLimit::new(
                    "enrollments",
                    admission::ENROLL_IN_FLIGHT_PER_SOURCE,
                    admission::ENROLL_IN_FLIGHT_TOTAL,
                ),
            ))
            .add_service(admission::Admit::new(
                FleetServer::new(fleet::FleetService::new(Arc::clone(&core)))
                    .max_decoding_message_size(FLEET_MAX_MESSAGE)
                    .max_encoding_message_size(FLEET_MAX_SEND),
                admission::RequireClientCert,
            ));
        let fleet_task = tokio::spawn(fleet_router.serve_with_incoming_shutdown(
            listener::incoming(fleet_listener, fleet_conns),
            stopped(stop_rx.clone()),
        ));
        let admin_service = AdminServer::new(admin::AdminService::new(Arc::clone(&core)))
            .max_decoding_message_size(ADMIN_MAX_MESSAGE);
        let admin_router = if admin_tls {
            grpc_server(&admin_conns, ADMIN_REQUEST_TIMEOUT)
                .tls_config(admin_tls_config)
                .map_err(|source| ServerError::Tls {
                    what: "admin",
                    source,
                })?
                .add_service(admin::AdminGate::new(admin_service, Arc::clone(&core)))
        } else {
            grpc_server(&admin_conns, ADMIN_REQUEST_TIMEOUT).add_service(admin_service)
        };
        let admin_task = tokio::spawn(admin_router.serve_with_incoming_shutdown(
            listener::incoming(admin_listener, admin_conns),
            stopped(stop_rx),
        ));
        if admin_tls {
            info!(admin = %admin_addr, "the admin API is not on loopback: it speaks TLS and accepts admin certificates only");
        }
        let metrics_serve =
            metrics::serve(metrics_listener, Arc::clone(&core), stop_tx.subscribe());
        if !metrics_addr.ip().is_loopback() {
            info!(metrics = %metrics_addr, "the metrics endpoint is not on loopback: anyone who reaches it can read the fleet's counters (no secrets)");
        }
        let metrics_task = tokio::spawn(async move {
            if let Err(e) = metrics_serve.await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });

        let state = serde_json::json!({
            "fleetAddr": fleet_addr.to_string(),
            "adminAddr": admin_addr.to_string(),
            "adminTls": admin_tls,
            "metricsAddr": metrics_addr.to_string(),
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
            metrics_addr,
            state_path,
            stop_tx,
            fleet_task: Some(fleet_task),
            admin_task: Some(admin_task),
            metrics_task,
        })
    }
}

type ServeTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A started control plane.
pub struct RunningServer {
    core: Arc<Core>,
    fleet_addr: SocketAddr,
    admin_addr: SocketAddr,
    metrics_addr: SocketAddr,
    state_path: PathBuf,
    stop_tx: watch::Sender<bool>,
    fleet_task: Option<ServeTask>,
    admin_task: Option<ServeTask>,
    /// Read-only; aborted at shutdown rather than drained.
    metrics_task: JoinHandle<()>,
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

    /// The bound metrics (`GET /metrics`, plain HTTP) address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
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
        self.core.create_token(ttl, None, &[]).await
    }

    /// Like [`RunningServer::create_token`], bound to one hostname.
    pub async fn create_token_for_host(
        &self,
        ttl: Option<Duration>,
        hostname: &str,
    ) -> Result<Token, TokenError> {
        self.core.create_token(ttl, Some(hostname), &[]).await
    }

    /// Like [`RunningServer::create_token`], usable only from `sources`.
    pub async fn create_token_from(
        &self,
        ttl: Option<Duration>,
        sources: &[enroll::Cidr],
    ) -> Result<Token, TokenError> {
        self.core.create_token(ttl, None, sources).await
    }

    /// Whether the admin API speaks TLS (it is not on loopback).
    pub fn admin_tls(&self) -> bool {
        !self.admin_addr.ip().is_loopback()
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
        self.metrics_task.abort();
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
        self.metrics_task.abort();
        for task in [self.fleet_task.take(), self.admin_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// A gRPC server builder with the bounds every listener shares: HTTP/2
/// streams and headers per connection, keepalive pings, a deadline per
/// call, and each call counted on its connection for the idle timeout.
fn grpc_server(
    conns: &Arc<listener::Connections>,
    request_timeout: Duration,
) -> tonic::transport::Server<
    tower::layer::util::Stack<listener::TrackStreams, tower::layer::util::Identity>,
> {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .timeout(request_timeout)
        .layer(listener::TrackStreams::new(Arc::clone(conns)))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Creates the data dir 0700 or checks that it is no wider; opens the CA
/// and the store (its files 0600).
fn open_data_dir(dir: &Path) -> Result<(Ca, Box<dyn Store>), ServerError> {
    use std::os::unix::fs::PermissionsExt;
    let io_err = |source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    };
    if fsutil::create_private_dir(dir).map_err(io_err)? {
        let mode = std::fs::metadata(dir).map_err(io_err)?.permissions().mode() & 0o7777;
        return Err(ServerError::DataDirOpen {
            path: dir.to_owned(),
            mode,
        });
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
    let db = dir.join(DB_FILE);
    private_db_files(&db).map_err(io_err)?;
    let store = SqliteStore::open(&db)?;
    Ok((ca, Box::new(store)))
}

/// Creates the database file 0600 when missing (SQLite gives its `-wal`
/// and `-shm` files the database's mode), and takes group and others off
/// database files an earlier version left wider (inside a 0700 dir, which
/// kept them private).
fn private_db_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode() & 0o7777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o077))?;
            warn!(path = %path.display(), old_mode = format!("{mode:04o}"), "database file was open to group or others; made it private");
        }
    }
    Ok(())
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

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o7777
    }

    #[test]
    fn the_data_dir_is_created_0700_and_its_database_0600() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let (_ca, store) = open_data_dir(&dir).expect("open");
        assert_eq!(mode_of(&dir), 0o700);
        // Whatever the umask of the test process, SQLite's files included.
        let files: Vec<String> = std::fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(DB_FILE))
            .collect();
        assert!(files.len() >= 2, "{files:?}");
        for name in &files {
            assert_eq!(mode_of(&dir.join(name)) & 0o077, 0, "{name}");
        }
        drop(store);
    }

    #[test]
    fn a_data_dir_open_to_others_is_refused_naming_the_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = open_data_dir(&dir).err().expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("mode 0755") && text.contains(&format!("chmod 700 {}", dir.display())),
            "{text}"
        );
        assert_eq!(
            std::fs::read_dir(&dir).expect("ls").count(),
            0,
            "nothing written"
        );
    }

    #[test]
    fn database_files_left_wider_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join(DB_FILE);
        std::fs::write(&db, b"").expect("write");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        private_db_files(&db).expect("private");
        assert_eq!(mode_of(&db), 0o600);
    }

    #[test]
    fn codes_are_letters_and_digits_and_random() {
        let a = random_code();
        let b = random_code();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        for _ in 0..500 {
            let c = random_code();
            assert_eq!(c.len(), 32);
            assert!(c.chars().all(|c| c.is_ascii_alphanumeric()), "{c}");
        }
    }
}
