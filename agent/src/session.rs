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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_proto::v1::agent_message::Msg as Up;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as Down;
use berth_proto::v1::{AgentMessage, AssignmentAck, Heartbeat, Hello, Resources};
use rand::RngExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, info, info_span, warn};

use crate::identity::Identity;
use crate::manager::ManagerHandle;
use crate::tls;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// HTTP/2 keepalive: a silently dead link is noticed within twice this.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("control plane refused the session: {0}")]
    Status(String),
    #[error("control plane closed the session")]
    Closed,
    #[error("no welcome from the control plane within {0:?}")]
    NoWelcome(Duration),
    #[error("agent is shutting down")]
    Shutdown,
}

/// Facts sent in every Hello.
#[derive(Debug, Clone)]
pub struct HostInfo {
    pub hostname: String,
    pub boot_id: String,
    pub capacity: Resources,
    pub attributes: HashMap<String, String>,
}

/// Runs sessions until `shutdown` turns true.
pub async fn run(
    identity: Identity,
    host: HostInfo,
    manager: ManagerHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_START;
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        let started = Instant::now();
        let span = info_span!("session", instance_id = %identity.instance_id, attempt);
        let result = once(&identity, &host, &manager, &mut shutdown)
            .instrument(span)
            .await;
        manager.set_connected(false).await;
        match result {
            Err(SessionError::Shutdown) => return,
            Err(e) => warn!(server = %identity.server, error = %e, "session ended"),
            Ok(()) => {}
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = BACKOFF_START;
        }
        // Full jitter: anywhere between zero and the current step.
        let wait = Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
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

async fn once(
    identity: &Identity,
    host: &HostInfo,
    manager: &ManagerHandle,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let cfg = tls::mtls_config(&identity.ca_pem, &identity.cert_pem, &identity.key_pem)?;
    let channel = tls::channel(&identity.server, cfg, KEEPALIVE).await?;
    let mut client = FleetClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
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
        .map_err(|s| SessionError::Status(s.message().to_string()))?
        .into_inner();

    let welcome_wait = Duration::from_secs(15);
    let welcome = match tokio::time::timeout(welcome_wait, inbound.message()).await {
        Err(_) => return Err(SessionError::NoWelcome(welcome_wait)),
        Ok(Err(s)) => return Err(SessionError::Status(s.message().to_string())),
        Ok(Ok(None)) => return Err(SessionError::Closed),
        Ok(Ok(Some(m))) => match m.msg {
            Some(Down::Welcome(w)) => w,
            _ => return Err(SessionError::Status("expected Welcome first".into())),
        },
    };
    info!(
        heartbeat_ms = welcome.heartbeat_interval_ms,
        applied_event_sequence = welcome.applied_event_sequence,
        "connected to the control plane"
    );
    manager.set_connected(true).await;
    manager.ack(welcome.applied_event_sequence).await;
    let mut sent = welcome.applied_event_sequence;
    let interval = Duration::from_millis(u64::from(welcome.heartbeat_interval_ms).max(200));
    let mut heartbeat = tokio::time::interval(interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // Replay whatever the server has not applied yet.
    let outbox = view_rx.borrow_and_update().outbox.clone();
    sent = flush(&tx, &outbox, sent).await?;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                send(&tx, Up::Heartbeat(Heartbeat { sent_at_ms: berth_proto::now_ms() })).await?;
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
                Err(s) => return Err(SessionError::Status(s.message().to_string())),
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
