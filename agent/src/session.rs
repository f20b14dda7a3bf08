//! The session with the control plane: one `Fleet.Connect` stream at a time.
//!
//! Connect over mutual TLS, send Hello (identity, capacity, applied
//! generation, actual tasks), read Welcome (heartbeat interval, the last event
//! sequence the server applied), then: heartbeats, every outbox event not yet
//! sent, each Assignment handed to the manager and acknowledged once
//! persisted, EventAcks handed to the manager to trim the outbox. On any
//! failure: reconnect with full-jitter exponential back-off (250 ms doubling,
//! capped at 30 s, reset after a minute connected). Running tasks are never
//! touched because the session is down.
//!
//! Certificate renewal: for every certificate the session picks a random
//! point between 50 % and 80 % of its lifetime (notBefore..notAfter; the
//! randomness spreads a fleet's renewals). At that point, while connected, it
//! makes a new key and CSR, calls `Fleet.Renew` over the live mTLS
//! connection, checks the answer (same instance, the new key, the same CA)
//! and swaps the files ([`identity::store_renewed`]); the session goes on,
//! and the next connection uses the new identity. A failed renewal is
//! retried after a tenth of the remaining lifetime (5 s to 5 min). An expired
//! certificate is refused by the control plane: the session says so in the
//! log at every attempt, and the host has to enroll again.
//!
//! A session closed because a newer session of the same instance replaced
//! it means another process with this identity connected (a cloned host):
//! the agent logs it as an error and waits [`REPLACED_BACKOFF`] before it
//! tries again, so that the two do not take the session from each other
//! all the time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use berth_proto::v1::agent_message::Msg as Up;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as Down;
use berth_proto::v1::{AgentMessage, AssignmentAck, Heartbeat, Hello, RenewRequest, Resources};
use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use tracing::{Instrument, error, info, info_span, warn};

use crate::identity::{self, Identity, Validity};
use crate::manager::ManagerHandle;
use crate::metrics::AgentMetrics;
use crate::tls;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// HTTP/2 keepalive: a silently dead link is noticed within twice this.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long the agent waits after a newer session of its instance replaced
/// its own.
pub const REPLACED_BACKOFF: Duration = Duration::from_secs(300);
/// Renewal happens at a random point in this part of the lifetime.
pub const RENEW_WINDOW: (f64, f64) = (0.5, 0.8);
/// How long a renewal call may take.
const RENEW_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("control plane refused the session: {message}")]
    Status { code: Code, message: String },
    #[error("control plane closed the session")]
    Closed,
    #[error("no welcome from the control plane within {0:?}")]
    NoWelcome(Duration),
    #[error("agent is shutting down")]
    Shutdown,
}

impl SessionError {
    fn status(s: &tonic::Status) -> SessionError {
        let mut message = s.message().to_string();
        if let Some(source) = std::error::Error::source(s) {
            let chain = tls::error_chain(source);
            if !message.contains(&chain) {
                message = if message.is_empty() {
                    chain
                } else {
                    format!("{message}: {chain}")
                };
            }
        }
        SessionError::Status {
            code: s.code(),
            message,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RenewError {
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("the control plane refused the renewal: {0}")]
    Refused(String),
    #[error("no answer to the renewal within {0:?}")]
    Timeout(Duration),
    #[error("the renewed certificate is unusable: {0}")]
    Invalid(String),
    #[error("cannot store the renewed identity: {0}")]
    Join(String),
    #[error("the renewal task failed: {0}")]
    Task(String),
}

/// Facts sent in every Hello.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub boot_id: String,
    pub capacity: Resources,
    pub attributes: HashMap<String, String>,
}

/// When the current certificate is renewed.
#[derive(Debug, Clone, Copy)]
struct RenewPlan {
    validity: Option<Validity>,
    renew_at: Option<SystemTime>,
}

impl RenewPlan {
    fn for_identity(identity: &Identity) -> RenewPlan {
        match identity.validity() {
            Ok(v) => {
                let fraction = rand::rng().random_range(RENEW_WINDOW.0..=RENEW_WINDOW.1);
                RenewPlan {
                    validity: Some(v),
                    renew_at: Some(v.point(fraction)),
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot read the client certificate's validity; it will not be renewed");
                RenewPlan {
                    validity: None,
                    renew_at: None,
                }
            }
        }
    }

    /// After a failed renewal: try again after a tenth of what is left of
    /// the lifetime, between 5 s and 5 min; not at all once it has expired
    /// (the control plane refuses to renew an expired certificate).
    fn retry(&mut self, now: SystemTime) {
        let left = self
            .validity
            .and_then(|v| v.not_after.duration_since(now).ok())
            .unwrap_or_default();
        if left.is_zero() {
            self.renew_at = None;
            return;
        }
        let wait = (left / 10).clamp(Duration::from_secs(5), Duration::from_secs(300));
        self.renew_at = Some(now + wait);
    }
}

/// Runs sessions until `shutdown` turns true.
pub async fn run(
    mut identity: Identity,
    host: HostInfo,
    manager: ManagerHandle,
    metrics: Arc<AgentMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_START;
    let mut attempt: u64 = 0;
    let mut plan = RenewPlan::for_identity(&identity);
    loop {
        attempt += 1;
        if attempt > 1 {
            metrics.session_reconnects.inc();
        }
        if let Some(v) = plan.validity
            && v.expired_at(SystemTime::now())
        {
            error!(
                certificate = %identity.data_dir.join(identity::CERT_FILE).display(),
                expired_at = %berth_proto::json::format_time_ms(v.not_after_ms()).unwrap_or_default(),
                "the client certificate expired, so the control plane refuses it; enroll this host again with `berth-agent enroll --force …` (running tasks keep running)"
            );
        }
        let started = Instant::now();
        let span = info_span!("session", instance_id = %identity.instance_id, attempt);
        let result = once(
            &mut identity,
            &mut plan,
            &host,
            &manager,
            &metrics,
            &mut shutdown,
        )
        .instrument(span)
        .await;
        manager.set_connected(false).await;
        let mut wait_at_least = Duration::ZERO;
        match result {
            Err(SessionError::Shutdown) => return,
            Err(SessionError::Status { code, message })
                if code == Code::Aborted && message.starts_with(berth_proto::SESSION_REPLACED) =>
            {
                error!(
                    server = %identity.server,
                    reason = %message,
                    retry_in = %humantime::format_duration(REPLACED_BACKOFF),
                    "another agent with this host's identity connected and took over the session; two hosts share one identity (a cloned disk or data dir?)"
                );
                wait_at_least = REPLACED_BACKOFF;
            }
            Err(SessionError::Status {
                code: Code::PermissionDenied | Code::Unauthenticated,
                message,
            }) => error!(
                server = %identity.server,
                error = %message,
                "the control plane refuses this host; running tasks keep running"
            ),
            Err(e) => warn!(server = %identity.server, error = %e, "session ended"),
            Ok(()) => {}
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        // Full jitter: anywhere between zero and the current step.
        let jitter =
            Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
        let wait = jitter.max(wait_at_least);
        backoff = (backoff * 2).min(BACKOFF_CAP);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// A renewed key and certificate, checked but not stored yet.
struct Renewed {
    key_pem: String,
    cert_pem: String,
}

/// Makes a new key and CSR, asks the control plane to sign it and checks
/// the answer. Storing it is the session's job, so that ending the session
/// (which aborts this task) never interrupts a swap of the files.
async fn renew(
    mut client: FleetClient<Channel>,
    identity: Identity,
) -> Result<Renewed, RenewError> {
    let (key, csr_pem) = identity::new_key_and_csr()?;
    let response = tokio::time::timeout(RENEW_TIMEOUT, client.renew(RenewRequest { csr_pem }))
        .await
        .map_err(|_| RenewError::Timeout(RENEW_TIMEOUT))?
        .map_err(|s| RenewError::Refused(s.message().to_string()))?
        .into_inner();
    if response.ca_pem.trim() != identity.ca_pem.trim() {
        return Err(RenewError::Invalid(
            "it comes with another CA than the one this host enrolled with".into(),
        ));
    }
    let der = tls::parse_certs(&response.certificate_pem, "renewed certificate")
        .map_err(|e| RenewError::Invalid(e.to_string()))?;
    let leaf = der
        .first()
        .ok_or_else(|| RenewError::Invalid("no certificate".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| RenewError::Invalid(format!("not an X.509 certificate: {e}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    if cn != identity.instance_id {
        return Err(RenewError::Invalid(format!(
            "it is for {cn:?}, not for instance {}",
            identity.instance_id
        )));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(RenewError::Invalid("it is not for the new key".into()));
    }
    // The files are only swapped once the whole identity checks out.
    tls::mtls_config(
        &identity.ca_pem,
        &response.certificate_pem,
        &key.serialize_pem(),
    )
    .map_err(|e| RenewError::Invalid(e.to_string()))?;
    Ok(Renewed {
        key_pem: key.serialize_pem(),
        cert_pem: response.certificate_pem,
    })
}

/// Swaps the identity files for the renewed ones (a few writes and fsyncs).
async fn store(identity: &Identity, renewed: &Renewed) -> Result<(), RenewError> {
    let (dir, key_pem, cert_pem) = (
        identity.data_dir.clone(),
        renewed.key_pem.clone(),
        renewed.cert_pem.clone(),
    );
    tokio::task::spawn_blocking(move || identity::store_renewed(&dir, &key_pem, &cert_pem))
        .await
        .map_err(|e| RenewError::Join(e.to_string()))??;
    Ok(())
}

/// The renewal task of a session; aborted when the session ends.
struct RenewalTask(Option<JoinHandle<Result<Renewed, RenewError>>>);

impl Drop for RenewalTask {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Waits for the renewal task, if one runs.
async fn renewal_done(
    task: &mut Option<JoinHandle<Result<Renewed, RenewError>>>,
) -> Result<Renewed, RenewError> {
    match task.as_mut() {
        Some(handle) => handle
            .await
            .map_err(|e| RenewError::Task(e.to_string()))
            .and_then(|r| r),
        None => std::future::pending().await,
    }
}

/// A tokio deadline for a wall-clock time (now, if it has passed).
fn deadline_of(at: SystemTime) -> tokio::time::Instant {
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + wait
}

async fn once(
    identity: &mut Identity,
    plan: &mut RenewPlan,
    host: &HostInfo,
    manager: &ManagerHandle,
    metrics: &AgentMetrics,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let cfg = tls::mtls_config(&identity.ca_pem, &identity.cert_pem, &identity.key_pem)?;
    let channel = tls::channel(&identity.server, cfg, KEEPALIVE).await?;
    let mut client = FleetClient::new(channel)
        .max_decoding_message_size(berth_proto::FLEET_MAX_SERVER_MESSAGE)
        .max_encoding_message_size(berth_proto::FLEET_MAX_AGENT_MESSAGE);
    let renew_client = client.clone();
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    let mut view_rx = manager.view();
    let view = view_rx.borrow_and_update().clone();
    let hello = Hello {
        instance_id: identity.instance_id.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        boot_id: host.boot_id.clone(),
        capacity: Some(host.capacity),
        attributes: host.attributes.clone(),
        applied_generation: view.generation,
        tasks: view.tasks.clone(),
        hostname: host.hostname.clone(),
        last_event_sequence: view.last_seq,
    };
    send(&tx, Up::Hello(hello)).await?;
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| SessionError::status(&s))?
        .into_inner();

    let welcome_wait = Duration::from_secs(15);
    let welcome = match tokio::time::timeout(welcome_wait, inbound.message()).await {
        Err(_) => return Err(SessionError::NoWelcome(welcome_wait)),
        Ok(Err(s)) => return Err(SessionError::status(&s)),
        Ok(Ok(None)) => return Err(SessionError::Closed),
        Ok(Ok(Some(m))) => match m.msg {
            Some(Down::Welcome(w)) => w,
            _ => {
                return Err(SessionError::Status {
                    code: Code::Internal,
                    message: "expected Welcome first".into(),
                });
            }
        },
    };
    info!(
        heartbeat_ms = welcome.heartbeat_interval_ms,
        applied_event_sequence = welcome.applied_event_sequence,
        "connected to the control plane"
    );
    metrics.sessions_established.inc();
    manager.set_connected(true).await;
    manager.ack(welcome.applied_event_sequence).await;
    let mut sent = welcome.applied_event_sequence;
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms).max(200));
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // The renewal task runs beside the stream, so heartbeats go on while it
    // waits for its answer; it ends with the session at the latest.
    let mut renewal = RenewalTask(None);
    let mut renew_deadline = plan.renew_at.map(deadline_of);

    // Replay whatever the server has not applied yet.
    let outbox = view_rx.borrow_and_update().outbox.clone();
    sent = flush(&tx, &outbox, sent).await?;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                send(&tx, Up::Heartbeat(Heartbeat { sent_at_ms: berth_proto::now_ms() })).await?;
            }
            () = async {
                match renew_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if renewal.0.is_none() => {
                renew_deadline = None;
                info!("renewing the client certificate");
                renewal.0 = Some(tokio::spawn(
                    renew(renew_client.clone(), identity.clone()).in_current_span(),
                ));
            }
            done = renewal_done(&mut renewal.0) => {
                renewal.0 = None;
                let stored = match done {
                    Ok(renewed) => store(identity, &renewed).await.map(|()| renewed),
                    Err(e) => Err(e),
                };
                match stored {
                    Ok(renewed) => {
                        identity.key_pem = renewed.key_pem;
                        identity.cert_pem = renewed.cert_pem;
                        *plan = RenewPlan::for_identity(identity);
                        let not_after = plan
                            .validity
                            .and_then(|v| berth_proto::json::format_time_ms(v.not_after_ms()))
                            .unwrap_or_default();
                        info!(%not_after, "client certificate renewed; the next connection uses it");
                    }
                    Err(e) => {
                        plan.retry(SystemTime::now());
                        warn!(error = %e, "certificate renewal failed; trying again later");
                    }
                }
                renew_deadline = plan.renew_at.map(deadline_of);
            }
            changed = view_rx.changed() => {
                if changed.is_err() {
                    return Err(SessionError::Shutdown);
                }
                let outbox = view_rx.borrow_and_update().outbox.clone();
                sent = flush(&tx, &outbox, sent).await?;
            }
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match m.msg {
                    Some(Down::Assignment(a)) => {
                        if let Some(generation) = manager.assign(a).await {
                            send(&tx, Up::AssignmentAck(AssignmentAck { generation })).await?;
                        }
                    }
                    Some(Down::EventAck(ack)) => manager.ack(ack.sequence).await,
                    Some(Down::Welcome(_)) | None => {}
                },
                Ok(None) => return Err(SessionError::Closed),
                Err(s) => return Err(SessionError::status(&s)),
            },
            _ = shutdown.changed() => return Err(SessionError::Shutdown),
        }
    }
}

async fn send(tx: &mpsc::Sender<AgentMessage>, msg: Up) -> Result<(), SessionError> {
    tx.send(AgentMessage { msg: Some(msg) })
        .await
        .map_err(|_| SessionError::Closed)
}

/// Sends every outbox event after `sent`; returns the new high-water mark.
async fn flush(
    tx: &mpsc::Sender<AgentMessage>,
    outbox: &[berth_proto::v1::TaskEvent],
    mut sent: u64,
) -> Result<u64, SessionError> {
    let start = sent;
    for ev in outbox.iter().filter(|e| e.sequence > start) {
        send(tx, Up::Event(ev.clone())).await?;
        sent = ev.sequence;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_renewals_are_retried_within_bounds() {
        let now = SystemTime::now();
        let mut plan = RenewPlan {
            validity: Some(Validity {
                not_before: now - Duration::from_secs(1000),
                not_after: now + Duration::from_secs(1000),
            }),
            renew_at: None,
        };
        plan.retry(now);
        assert_eq!(plan.renew_at, Some(now + Duration::from_secs(100)));
        plan.validity = Some(Validity {
            not_before: now - Duration::from_secs(10),
            not_after: now + Duration::from_secs(10),
        });
        plan.retry(now);
        assert_eq!(plan.renew_at, Some(now + Duration::from_secs(5)));
        plan.validity = Some(Validity {
            not_before: now - Duration::from_secs(20),
            not_after: now - Duration::from_secs(1),
        });
        plan.retry(now);
        assert_eq!(plan.renew_at, None, "an expired certificate is not renewed");
    }

    #[test]
    fn statuses_keep_their_code_and_cause() {
        let s = tonic::Status::aborted(format!(
            "{} from 127.0.0.1:1",
            berth_proto::SESSION_REPLACED
        ));
        match SessionError::status(&s) {
            SessionError::Status { code, message } => {
                assert_eq!(code, Code::Aborted);
                assert!(message.starts_with(berth_proto::SESSION_REPLACED));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[cfg(test)]
mod fake_fleet;
