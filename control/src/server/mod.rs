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
//! everything durable; [`Core`] (`core.rs`) adds the one piece of state that
//! lives in memory only, the session registry (`sessions.rs`: which agents
//! are connected right now). Layers: this module is the bootstrap and the
//! configuration; `core` the shared state and domain operations;
//! `scheduler` placing and storing new tasks (over the pure `placement`);
//! `enroll`, `fleet` and `admin` the gRPC adapters; `store` the contract and
//! its backends.

pub(crate) mod accesskeys;
pub mod admin;
pub mod admission;
pub(crate) mod attributes;
pub mod ca;
pub(crate) mod clusters;
pub(crate) mod core;
pub mod ecsapi;
pub mod enroll;
pub mod fleet;
pub(crate) mod fsutil;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod placement;
pub mod protocol;
pub mod scheduler;
pub(crate) mod secrets;
pub(crate) mod service;
pub(crate) mod services;
pub(crate) mod sessions;
pub mod store;
pub mod taskdefs;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::v1::Token;
use berth_proto::v1::admin_server::AdminServer;
use berth_proto::v1::enrollment_server::EnrollmentServer;
use berth_proto::v1::fleet_server::FleetServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::{info, warn};

use self::ca::Ca;
pub(crate) use self::core::{Core, peer_text, store_status, valid_hostname};
pub use self::core::{RENEW_BURST, RENEW_INTERVAL, REPLACED_PREFIX, TokenError};
use self::store::{PostgresStore, SqliteStore, Store, StoreError};

/// Default fleet listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7420";
/// Default admin listen address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7421";
/// Default metrics (Prometheus, plain HTTP, read-only) listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:7422";
/// Default ECS API (JSON 1.1, SigV4, plain HTTP on loopback) listen address.
pub const DEFAULT_ECS_API_LISTEN: &str = "127.0.0.1:7423";
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
    /// The ECS API (`aws ecs`, boto3; SigV4 with `berth access-key` keys).
    /// Loopback only for now: off loopback it would need HTTPS.
    pub ecs_api_listen: SocketAddr,
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
    /// Where the durable state lives; `None`: `<data_dir>/berth.db`. The CA
    /// key and `server.json` stay in the data dir either way (one server at
    /// a time on PostgreSQL, for now).
    pub store: Option<StoreLocation>,
    /// The key of secrets at rest (`--secrets-key-file`); `None`:
    /// `<data_dir>/secrets.key`, created at the first secret.
    pub secrets_key_file: Option<PathBuf>,
}

/// `--store`: `sqlite://PATH` or `postgres://…` (also `postgresql://…`).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    Sqlite(PathBuf),
    /// A libpq-style URL; it may carry a password, so it is never shown.
    Postgres(String),
}

impl std::str::FromStr for StoreLocation {
    type Err = StoreLocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreLocationError(s.to_owned()));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(StoreLocation::Postgres(s.to_owned()));
        }
        Err(StoreLocationError(redacted(s)))
    }
}

/// A store URL without the user information (which may hold a password).
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreLocation::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid store {0:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE")]
pub struct StoreLocationError(String);

impl ServerConfig {
    /// The defaults of `berth server` with another data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], 7420)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 7421)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 7422)),
            ecs_api_listen: SocketAddr::from(([127, 0, 0, 1], 7423)),
            advertise: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            tls_sans: Vec::new(),
            default_token_ttl: DEFAULT_TOKEN_TTL,
            cert_lifetime: DEFAULT_CERT_LIFETIME,
            enroll_failures_per_minute: DEFAULT_ENROLL_FAILURES,
            stream_rate: DEFAULT_STREAM_RATE,
            stream_burst: DEFAULT_STREAM_BURST,
            connections: listener::ConnectionLimits::default(),
            store: None,
            secrets_key_file: None,
        }
    }

    /// Both listeners on loopback with free ports (tests, `berth dev`).
    pub fn loopback(data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ecs_api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
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
    #[error(transparent)]
    SecretsKey(#[from] secrets::SecretKeyError),
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
        if !cfg.ecs_api_listen.ip().is_loopback() {
            return Err(ServerError::Config(format!(
                "--ecs-api-listen {}: the ECS API listens on loopback only for now; off loopback it needs HTTPS, which berth does not serve yet (see docs/ecs-api.md)",
                cfg.ecs_api_listen
            )));
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
            let location = cfg.store.clone();
            move || open_data_dir(&dir, location.as_ref())
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
        let ecs_api_listener = tokio::net::TcpListener::bind(cfg.ecs_api_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "ECS API",
                addr: cfg.ecs_api_listen,
                source,
            })?;
        let ecs_api_addr = local_addr(&ecs_api_listener, cfg.ecs_api_listen, "ECS API")?;

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
        core.secrets.check_at_start()?;
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
        let services_task = tokio::spawn(service::controller::run(
            Arc::clone(&core),
            stop_tx.subscribe(),
        ));
        let metrics_task = tokio::spawn(async move {
            if let Err(e) = metrics_serve.await {
                tracing::error!(error = %e, "the metrics endpoint stopped");
            }
        });
        let ecs_api_serve = ecsapi::serve(ecs_api_listener, Arc::clone(&core), stop_tx.subscribe());
        let ecs_api_task = tokio::spawn(async move {
            if let Err(e) = ecs_api_serve.await {
                tracing::error!(error = %e, "the ECS API stopped");
            }
        });

        let state = serde_json::json!({
            "fleetAddr": fleet_addr.to_string(),
            "adminAddr": admin_addr.to_string(),
            "adminTls": admin_tls,
            "metricsAddr": metrics_addr.to_string(),
            "ecsApiAddr": ecs_api_addr.to_string(),
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
            ecs_api_addr,
            state_path,
            stop_tx,
            fleet_task: Some(fleet_task),
            admin_task: Some(admin_task),
            metrics_task,
            ecs_api_task,
            services_task,
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
    ecs_api_addr: SocketAddr,
    state_path: PathBuf,
    stop_tx: watch::Sender<bool>,
    fleet_task: Option<ServeTask>,
    admin_task: Option<ServeTask>,
    /// Read-only; aborted at shutdown rather than drained.
    metrics_task: JoinHandle<()>,
    /// The ECS API; aborted at shutdown like the metrics endpoint (its
    /// requests are each one store transaction per change).
    ecs_api_task: JoinHandle<()>,
    /// The service controller; aborted at shutdown (it keeps nothing in
    /// memory that a pass after a restart would not compute again).
    services_task: JoinHandle<()>,
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

    /// The bound ECS API (plain HTTP, loopback) address.
    pub fn ecs_api_addr(&self) -> SocketAddr {
        self.ecs_api_addr
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
        self.core.create_token(ttl, None, &[], None).await
    }

    /// Like [`RunningServer::create_token`], bound to one hostname.
    pub async fn create_token_for_host(
        &self,
        ttl: Option<Duration>,
        hostname: &str,
    ) -> Result<Token, TokenError> {
        self.core.create_token(ttl, Some(hostname), &[], None).await
    }

    /// Like [`RunningServer::create_token`], usable only from `sources`.
    pub async fn create_token_from(
        &self,
        ttl: Option<Duration>,
        sources: &[enroll::Cidr],
    ) -> Result<Token, TokenError> {
        self.core.create_token(ttl, None, sources, None).await
    }

    /// Like [`RunningServer::create_token`]: the host joins `cluster`.
    pub async fn create_token_in_cluster(
        &self,
        ttl: Option<Duration>,
        cluster: &str,
    ) -> Result<Token, TokenError> {
        self.core.create_token(ttl, None, &[], Some(cluster)).await
    }

    /// Whether the admin API speaks TLS (it is not on loopback).
    pub fn admin_tls(&self) -> bool {
        !self.admin_addr.ip().is_loopback()
    }

    /// Whether the instance has a live session right now.
    pub fn is_connected(&self, instance_id: &str) -> bool {
        self.core.sessions().is_connected(instance_id)
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
            .sessions()
            .close_all_sessions(&Status::unavailable("the control plane is shutting down"));
        let _ = self.stop_tx.send(true);
        self.metrics_task.abort();
        self.ecs_api_task.abort();
        self.services_task.abort();
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
        self.ecs_api_task.abort();
        self.services_task.abort();
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
fn open_data_dir(
    dir: &Path,
    location: Option<&StoreLocation>,
) -> Result<(Ca, Box<dyn Store>), ServerError> {
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
    let db = match location {
        Some(StoreLocation::Postgres(url)) => {
            let store = PostgresStore::open(url)?;
            info!(store = %redacted(url), "store: PostgreSQL");
            return Ok((ca, Box::new(store)));
        }
        Some(StoreLocation::Sqlite(path)) => path.clone(),
        None => dir.join(DB_FILE),
    };
    private_db_files(&db).map_err(|source| ServerError::DataDir {
        path: db.clone(),
        source,
    })?;
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
        let (_ca, store) = open_data_dir(&dir, None).expect("open");
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
        let err = open_data_dir(&dir, None).err().expect("refused");
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
    fn store_locations_parse_and_never_show_a_password() {
        let pg: StoreLocation = "postgres://berth:s3cret@db.example:5432/berth"
            .parse()
            .expect("postgres");
        assert!(matches!(pg, StoreLocation::Postgres(_)));
        assert_eq!(pg.to_string(), "postgres://…@db.example:5432/berth");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let lite: StoreLocation = "sqlite:///var/lib/berth/x.db".parse().expect("sqlite");
        assert_eq!(
            lite,
            StoreLocation::Sqlite(PathBuf::from("/var/lib/berth/x.db"))
        );
        assert!("postgresql://h/db".parse::<StoreLocation>().is_ok());
        for bad in ["sqlite://", "mysql://u:pw@h/db", "/var/lib/berth.db"] {
            let e = bad.parse::<StoreLocation>().expect_err(bad).to_string();
            assert!(e.contains("sqlite://PATH or postgres://"), "{e}");
            assert!(!e.contains("pw@"), "{e}");
        }
    }
}
