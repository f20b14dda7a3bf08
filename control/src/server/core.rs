//! The domain core of the control plane: the state every service shares
//! ([`Core`]: the store executor, the session registry, the CA, limits and
//! metrics) and the operations that are not one RPC's business
//! ([`Core::create_token`]).
//!
//! Invariants:
//! - every store access goes through [`Core::db`], which runs one closure
//!   on the blocking pool and times it by operation name; there is no
//!   process-wide store lock: each store method is one transaction, and
//!   what must be atomic across a read and a write is one method or checks
//!   what it read when it writes (placement: `Store::insert_task_at`);
//! - the session registry is the only state that lives in memory only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::Token;
use sha2::{Digest, Sha256};
use tonic::Status;
use tracing::info;

use super::ca::{self, Ca};
use super::sessions::{LocalSessions, SessionRegistry};
use super::store::{ActivationRecord, DEFAULT_CLUSTER, Store, StoreError};
use super::{
    ENROLL_FAILURE_WINDOW, HELLO_TIMEOUT, MAX_TOKEN_TTL, ServerConfig, enroll, limits, metrics,
};

/// Renewals one instance may make at once ...
pub const RENEW_BURST: u32 = 3;
/// ... and at most one per this long (or per a quarter of the certificate
/// lifetime, when that is shorter).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// Shared state of the services.
pub(crate) struct Core {
    store: Arc<dyn Store>,
    sessions: Box<dyn SessionRegistry>,
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
    /// Wakes the service controller (`service::controller`).
    service_wake: tokio::sync::Notify,
    /// What the controller's next round looks at: every service, or only
    /// these `(cluster, name)`.
    service_hints: std::sync::Mutex<ServiceHints>,
    /// The key of secrets at rest (`server::secrets`).
    pub(crate) secrets: super::secrets::SecretKeys,
}

/// The services a wake-up names (see [`Core::wake_service`]).
#[derive(Debug, Default)]
pub(crate) struct ServiceHints {
    pub(crate) all: bool,
    pub(crate) services: std::collections::BTreeSet<(String, String)>,
}

/// More named services than this make the next round a full one.
const MAX_SERVICE_HINTS: usize = 10_000;

impl Core {
    pub(crate) fn new(
        store: Box<dyn Store>,
        ca: Ca,
        advertise: String,
        cfg: &ServerConfig,
    ) -> Core {
        let metrics = Arc::new(metrics::ServerMetrics::default());
        // A legitimate agent renews once per half lifetime at most (retrying
        // a failure every tenth of what is left): a few per hour is plenty.
        let renew_every = (cfg.cert_lifetime / 4).clamp(Duration::from_secs(1), RENEW_INTERVAL);
        Core {
            store: Arc::from(store),
            sessions: Box::new(LocalSessions::new(Arc::clone(&metrics))),
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
            service_wake: tokio::sync::Notify::new(),
            service_hints: std::sync::Mutex::new(ServiceHints {
                all: true,
                ..ServiceHints::default()
            }),
            secrets: super::secrets::SecretKeys::new(
                &cfg.data_dir,
                cfg.secrets_key_file.as_deref(),
            ),
        }
    }

    /// Something services depend on may have changed (a task's state, an
    /// agent's session, an instance's status, a service): the service
    /// controller makes a pass soon. Cheap; wake-ups coalesce.
    pub(crate) fn wake_services(&self) {
        self.hints().all = true;
        self.service_wake.notify_one();
    }

    /// Only one service's state may have changed (an event of one of its
    /// tasks): the controller's next round may look at that service alone.
    pub(crate) fn wake_service(&self, cluster: &str, name: &str) {
        {
            let mut h = self.hints();
            if h.services.len() >= MAX_SERVICE_HINTS {
                h.all = true;
            } else {
                h.services.insert((cluster.to_owned(), name.to_owned()));
            }
        }
        self.service_wake.notify_one();
    }

    /// Takes what the wake-ups since the last call named.
    pub(crate) fn take_service_hints(&self) -> ServiceHints {
        std::mem::take(&mut *self.hints())
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, ServiceHints> {
        self.service_hints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the service controller waits on.
    pub(crate) fn service_wake(&self) -> &tokio::sync::Notify {
        &self.service_wake
    }

    /// Runs `f` on the store on the blocking pool. Each store method is one
    /// transaction (see [`Store`]); `f` may call several, and nothing
    /// makes them atomic together: an operation that must be (placement)
    /// is one method, or checks what it read when it writes
    /// ([`Store::insert_task_at`]). `op` names the operation in
    /// `berth_server_store_latency_seconds`, `berth_server_store_errors_total`
    /// and the log (one name per kind of call site).
    pub(crate) async fn db<R, E, F>(&self, op: &'static str, f: F) -> Result<R, E>
    where
        F: FnOnce(&dyn Store) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + std::fmt::Display + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| E::from(StoreError::Join(e.to_string())))
            .and_then(|r| r);
        self.metrics
            .store_call(op, started.elapsed(), result.is_err());
        if let Err(e) = &result {
            tracing::debug!(operation = op, error = %e, "store operation failed");
        }
        result
    }

    /// The session registry: which agents are connected to this server.
    pub(crate) fn sessions(&self) -> &dyn SessionRegistry {
        self.sessions.as_ref()
    }

    /// How often an instance may renew its certificate, after the burst.
    pub(crate) fn renew_interval(&self) -> Duration {
        self.renew_every
    }

    /// Creates a one-time activation valid for `ttl` (the default when
    /// `None`), for any host or only for `hostname`, from any address or
    /// only from `sources`. Only the code's hash is stored.
    pub(crate) async fn create_token(
        &self,
        ttl: Option<Duration>,
        hostname: Option<&str>,
        sources: &[enroll::Cidr],
        cluster: Option<&str>,
    ) -> Result<Token, TokenError> {
        let cluster = cluster
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or(DEFAULT_CLUSTER)
            .to_owned();
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
            cluster: cluster.clone(),
        };
        let expires_at_ms = record.expires_at_ms;
        self.db("create_activation", move |s| s.create_activation(&record))
            .await?;
        let from = if source_cidrs.is_empty() {
            "(any)".to_owned()
        } else {
            source_cidrs.join(",")
        };
        info!(activation_id = %id, expires_at_ms, hostname = hostname.as_deref().unwrap_or("(any)"), from = %from, %cluster, "activation created");
        Ok(Token {
            activation_id: id,
            activation_code: code,
            expires_at_ms,
            ca_sha256: self.ca.sha256_hex(),
            fleet_addresses: vec![self.advertise.clone()],
            hostname: hostname.unwrap_or_default(),
            source_cidrs,
            cluster,
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
        StoreError::NoInstance(_)
        | StoreError::NoTask(_)
        | StoreError::NoService { .. }
        | StoreError::NoSecret(_)
        | StoreError::NoAccessKey(_) => Status::not_found(e.to_string()),
        StoreError::ServiceExists { .. } | StoreError::SecretExists(_) => {
            Status::already_exists(e.to_string())
        }
        StoreError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        StoreError::InstanceInactive(_) => Status::permission_denied(e.to_string()),
        StoreError::ActivationUsed(_) => Status::permission_denied(e.to_string()),
        // Nothing was changed; the same call may succeed when tried again.
        StoreError::Conflict { .. } => Status::aborted(e.to_string()),
        StoreError::Busy(_) | StoreError::Unavailable { .. } => {
            tracing::warn!(error = %e, "store unavailable");
            Status::unavailable(format!("the control plane's store is unavailable: {e}"))
        }
        other => {
            tracing::error!(error = %other, "store failure");
            Status::internal(format!("the control plane's store failed: {other}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses_a_client_can_act_on() {
        let conflict = StoreError::Conflict {
            op: "insert_task_at",
            detail: "instance i-1 moved".into(),
        };
        assert_eq!(store_status(conflict).code(), tonic::Code::Aborted);
        let busy = store_status(StoreError::Busy("stop_task"));
        assert_eq!(busy.code(), tonic::Code::Unavailable);
        assert!(busy.message().contains("stop_task"), "{}", busy.message());
        let missing = store_status(StoreError::NoTask("t1".into()));
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let taken = StoreError::ServiceExists {
            cluster: "default".into(),
            name: "web".into(),
        };
        assert_eq!(store_status(taken).code(), tonic::Code::AlreadyExists);
        let bad = store_status(StoreError::Invalid {
            op: "apply_service_plan",
            detail: "10001 marks in one change".into(),
        });
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().contains("10001 marks"), "{}", bad.message());
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
