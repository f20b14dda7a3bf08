//! `Fleet.Connect`: one long-lived session per agent.
//!
//! The session is a task that owns its stream; the rest of the server talks
//! to it through [`SessionCommand`]s (assignment changed, close). Protocol:
//! 1. the instance id comes from the client certificate's common name;
//! 2. the first message must be Hello (within [`HELLO_TIMEOUT`]) for that
//!    same instance;
//! 3. the server answers Welcome, then the current Assignment;
//! 4. then Heartbeats, TaskEvents (each stored at most once, then
//!    acknowledged) and AssignmentAcks, in any order. A session that sends
//!    nothing for three heartbeat intervals is closed. Each session has a
//!    token bucket for its messages; one over it ends the session with
//!    RESOURCE_EXHAUSTED before the message is applied, so the agent
//!    reconnects and replays it (nothing is lost).
//!
//! `Renew` issues a new certificate for the instance of the caller's
//! current certificate (which the TLS layer checked: signed by the fleet CA
//! and not expired), if the instance is still registered.
//!
//! An admin certificate (`OU=admin`) is never an agent's identity.
//!
//! Assignments are sent only when their generation is newer than the last
//! one sent on this session, so concurrent changes never send an older
//! assignment after a newer one.
//!
//! [`HELLO_TIMEOUT`]: super::HELLO_TIMEOUT

use std::net::SocketAddr;
use std::sync::Arc;

use berth_proto::v1::fleet_server::Fleet;
use berth_proto::v1::server_message::Msg as ServerMsg;
use berth_proto::v1::{
    AgentMessage, EventAck, Hello, RenewRequest, RenewResponse, ServerMessage, TaskEvent, Welcome,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::limits::TokenBucket;
use super::protocol::{self, Step};
use super::store::{INACTIVE, InstanceRecord, StoreError};
use super::{Core, SessionCommand, peer_text, store_status};

pub use super::protocol::MAX_COUNTER;

/// Messages buffered towards one agent before the session waits for it.
const OUTBOUND_BUFFER: usize = 64;

pub struct FleetService {
    core: Arc<Core>,
}

impl FleetService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        FleetService { core }
    }
}

/// The instance id in a client certificate chain: the leaf's common name.
/// An admin certificate is refused.
pub fn instance_id_from_certs(
    certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
) -> Result<String, Status> {
    let leaf = certs.and_then(|c| c.first()).ok_or_else(|| {
        Status::unauthenticated(
            "a client certificate is required: enroll this host with `berth-agent enroll` first",
        )
    })?;
    let subject = super::ca::subject_of(leaf)
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    if subject.admin {
        return Err(Status::permission_denied(format!(
            "the client certificate of {:?} is an admin certificate, not an agent's",
            subject.common_name
        )));
    }
    if subject.common_name.is_empty() {
        return Err(Status::unauthenticated(
            "the client certificate has no common name (instance id)",
        ));
    }
    Ok(subject.common_name)
}

/// The registered, active instance of `instance_id`, or the refusal.
async fn active_instance(
    core: &Core,
    instance_id: &str,
    peer: Option<SocketAddr>,
    what: &str,
) -> Result<InstanceRecord, Status> {
    let found = {
        let id = instance_id.to_owned();
        core.db(move |s| s.instance(&id))
            .await
            .map_err(store_status)?
    };
    match found {
        None => {
            warn!(%instance_id, peer = %peer_text(peer), "{what} refused: unknown instance");
            Err(Status::permission_denied(format!(
                "instance {instance_id} is not registered with this control plane"
            )))
        }
        Some(i) if i.status == INACTIVE => {
            warn!(%instance_id, peer = %peer_text(peer), "{what} refused: instance deregistered");
            Err(Status::permission_denied(format!(
                "instance {instance_id} was deregistered; enroll the host again"
            )))
        }
        Some(i) => Ok(i),
    }
}

#[tonic::async_trait]
impl Fleet for FleetService {
    type ConnectStream = ReceiverStream<Result<ServerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let peer = request.remote_addr();
        let certs = request.peer_certs();
        let instance_id = instance_id_from_certs(certs.as_deref().map(Vec::as_slice))?;
        active_instance(&self.core, &instance_id, peer, "session").await?;
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        let span = info_span!("session", %instance_id, peer = ?peer);
        let session = Session {
            core: Arc::clone(&self.core),
            instance_id,
            peer,
            out: tx,
            last_sent_generation: 0,
        };
        tokio::spawn(session.run(request.into_inner()).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let peer = request.remote_addr();
        let certs = request.peer_certs();
        let instance_id = instance_id_from_certs(certs.as_deref().map(Vec::as_slice))?;
        // A session may outlive its certificate; a renewal may not: the
        // certificate presented must still be valid now.
        let presented_not_after = certs
            .as_deref()
            .and_then(|c| c.first())
            .map(|leaf| super::ca::not_after_ms_of(leaf))
            .transpose()
            .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?
            .unwrap_or(0);
        let span = info_span!("renew", %instance_id, peer = %peer_text(peer));
        async move {
            if presented_not_after <= berth_proto::now_ms() {
                warn!("certificate renewal refused: the presented certificate expired");
                return Err(Status::permission_denied(format!(
                    "the client certificate of instance {instance_id} expired at {}; enroll the host again",
                    berth_proto::json::format_time_ms(presented_not_after).unwrap_or_default()
                )));
            }
            active_instance(&self.core, &instance_id, peer, "certificate renewal").await?;
            let req = request.into_inner();
            if req.csr_pem.trim().is_empty() {
                return Err(Status::invalid_argument(
                    "csr_pem is empty: send a PEM certificate signing request",
                ));
            }
            let issued = self
                .core
                .ca
                .issue_client_cert(&req.csr_pem, &instance_id, self.core.cert_lifetime)
                .map_err(|e| e.into_signing_status("a client certificate"))?;
            let not_after_ms = issued.not_after_ms();
            info!(
                not_after = %berth_proto::json::format_time_ms(not_after_ms).unwrap_or_default(),
                "client certificate renewed"
            );
            Ok(Response::new(RenewResponse {
                certificate_pem: issued.pem,
                ca_pem: self.core.ca.cert_pem().to_owned(),
                not_after_ms,
            }))
        }
        .instrument(span)
        .await
    }
}

/// Why a session ended, for the log.
enum End {
    AgentClosed,
    Stream(Status),
    RateLimited(Status),
    Closed(Status),
    Refused(Status),
    Silent,
    OutboundGone,
    Store(StoreError),
}

impl End {
    /// The `reason` label of `berth_server_sessions_closed_total`.
    fn metric(&self) -> super::metrics::SessionEnd {
        use super::metrics::SessionEnd;
        match self {
            End::AgentClosed => SessionEnd::AgentClosed,
            End::Stream(_) => SessionEnd::StreamError,
            End::RateLimited(_) => SessionEnd::RateLimited,
            End::Closed(_) => SessionEnd::ClosedByServer,
            End::Refused(_) => SessionEnd::Refused,
            End::Silent => SessionEnd::Silent,
            End::OutboundGone => SessionEnd::AgentGone,
            End::Store(_) => SessionEnd::StoreError,
        }
    }
}

struct Session {
    core: Arc<Core>,
    instance_id: String,
    peer: Option<SocketAddr>,
    out: mpsc::Sender<Result<ServerMessage, Status>>,
    last_sent_generation: u64,
}

/// Removes the session from the registry when it ends, however it ends.
struct Registration {
    core: Arc<Core>,
    instance_id: String,
    session_id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self
            .core
            .unregister_session(&self.instance_id, self.session_id)
        {
            info!("agent disconnected");
        }
    }
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<AgentMessage>) {
        let end = self.serve(&mut inbound).await;
        self.core.metrics.session_closed(end.metric());
        let status = match end {
            End::AgentClosed => {
                info!("agent closed the session");
                None
            }
            End::Stream(s) => {
                info!(error = %s.message(), code = ?s.code(), "session stream ended");
                // A message the server could not read (too large, not
                // protobuf): tell the agent why, if it still listens.
                Some(s)
            }
            End::RateLimited(s) => {
                warn!(reason = %s.message(), "session closed: the agent sends too fast");
                Some(s)
            }
            End::Closed(s) => {
                info!(reason = %s.message(), "session closed by the server");
                Some(s)
            }
            End::Refused(s) => {
                warn!(reason = %s.message(), "session refused");
                Some(s)
            }
            End::Silent => {
                let grace = self.core.heartbeat_interval * 3;
                warn!(
                    grace = %humantime::format_duration(grace),
                    "no message from the agent within three heartbeat intervals; closing the session"
                );
                Some(Status::deadline_exceeded(format!(
                    "no message for {}",
                    humantime::format_duration(grace)
                )))
            }
            End::OutboundGone => {
                info!("agent stopped reading; session over");
                None
            }
            End::Store(e) => Some(store_status(e)),
        };
        if let Some(status) = status {
            let _ = self.out.send(Err(status)).await;
        }
    }

    async fn serve(&mut self, inbound: &mut Streaming<AgentMessage>) -> End {
        let first = match tokio::time::timeout(self.core.hello_timeout, inbound.message()).await {
            Err(_) => {
                return End::Refused(Status::deadline_exceeded(format!(
                    "no Hello within {}",
                    humantime::format_duration(self.core.hello_timeout)
                )));
            }
            Ok(Err(status)) => return End::Stream(status),
            Ok(Ok(None)) => return End::AgentClosed,
            Ok(Ok(Some(first))) => first,
        };
        let hello = match protocol::first_message(&first, &self.instance_id) {
            Ok(hello) => hello,
            Err(refusal) => return End::Refused(refusal.status()),
        };
        let instance = match self.record_hello(hello).await {
            Ok(outcome) => {
                if let Some(from) = outcome.event_seq_lowered_from {
                    warn!(
                        server_sequence = from,
                        agent_sequence = hello.last_event_sequence,
                        "the agent has assigned fewer events than the server applied (its state was reset?); following the agent's sequence"
                    );
                }
                if let Some(from) = outcome.generation_raised_from {
                    warn!(
                        server_generation = from,
                        agent_generation = hello.applied_generation,
                        "the agent has a newer assignment than the server (database restored from an older copy?); raising the generation"
                    );
                }
                outcome.instance
            }
            Err(e) => return End::Store(e),
        };
        let (cmd_tx, mut commands) = mpsc::unbounded_channel();
        let session_id = self
            .core
            .register_session(&self.instance_id, self.peer, cmd_tx);
        let _registration = Registration {
            core: Arc::clone(&self.core),
            instance_id: self.instance_id.clone(),
            session_id,
        };
        info!(
            agent_version = %hello.agent_version,
            applied_generation = hello.applied_generation,
            last_event_sequence = hello.last_event_sequence,
            applied_event_sequence = instance.last_event_seq,
            reported_tasks = hello.tasks.len(),
            "agent connected"
        );
        // Hello.tasks (what runs on the host) is only logged: the agent
        // replays every event the server has not acknowledged, and those
        // events are authoritative. Applying the snapshot as well could
        // overwrite a newer event-applied state with an older one.
        for t in &hello.tasks {
            debug!(task_id = %t.task_id, last_status = %t.last_status, "reported by Hello");
        }
        let heartbeat_ms =
            u32::try_from(self.core.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        let welcome = ServerMsg::Welcome(Welcome {
            instance_id: self.instance_id.clone(),
            heartbeat_interval_ms: heartbeat_ms,
            applied_event_sequence: instance.last_event_seq,
        });
        if let Err(end) = self.send(welcome).await {
            return end;
        }
        if let Err(end) = self.send_assignment(true).await {
            return end;
        }

        let grace = self.core.heartbeat_interval * 3;
        let mut deadline = Instant::now() + grace;
        let mut bucket = TokenBucket::new(
            self.core.stream_rate,
            self.core.stream_burst,
            std::time::Instant::now(),
        );
        loop {
            tokio::select! {
                msg = tokio::time::timeout_at(deadline, inbound.message()) => {
                    let msg = match msg {
                        Err(_) => return End::Silent,
                        Ok(Err(status)) => return End::Stream(status),
                        Ok(Ok(None)) => return End::AgentClosed,
                        Ok(Ok(Some(msg))) => msg,
                    };
                    if !bucket.take(std::time::Instant::now()) {
                        // Not applied and not acknowledged: the agent
                        // replays it on its next session.
                        return End::RateLimited(Status::resource_exhausted(format!(
                            "more than {} messages per second (burst {}) on this session; reconnect and send the rest more slowly",
                            self.core.stream_rate, self.core.stream_burst
                        )));
                    }
                    deadline = Instant::now() + grace;
                    if let Err(end) = self.handle(msg).await {
                        return end;
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(SessionCommand::AssignmentChanged) => {
                        if let Err(end) = self.send_assignment(false).await {
                            return end;
                        }
                    }
                    Some(SessionCommand::Close(status)) => return End::Closed(status),
                    // The registry dropped this session.
                    None => return End::Closed(Status::aborted("session closed")),
                },
            }
        }
    }

    async fn handle(&mut self, msg: AgentMessage) -> Result<(), End> {
        let step = protocol::next_message(&msg).map_err(|r| End::Refused(r.status()))?;
        match step {
            Step::Ignore => {
                debug!("empty agent message ignored");
                Ok(())
            }
            Step::Heartbeat => {
                let id = self.instance_id.clone();
                let now = berth_proto::now_ms();
                self.core
                    .db(move |s| s.record_heartbeat(&id, now))
                    .await
                    .map_err(End::Store)
            }
            Step::AssignmentAck(generation) => {
                debug!(generation, "assignment acknowledged");
                let id = self.instance_id.clone();
                self.core
                    .db(move |s| s.record_assignment_ack(&id, generation))
                    .await
                    .map_err(End::Store)
            }
            Step::Event(event) => self.apply_event(event.clone()).await,
        }
    }

    async fn apply_event(&mut self, event: TaskEvent) -> Result<(), End> {
        let sequence = event.sequence;
        let task_id = event
            .task
            .as_ref()
            .map(|t| t.task_id.clone())
            .unwrap_or_default();
        let last_status = event
            .task
            .as_ref()
            .map(|t| t.last_status.clone())
            .unwrap_or_default();
        let span = info_span!("task", %task_id);
        let id = self.instance_id.clone();
        let now = berth_proto::now_ms();
        let outcome = self
            .core
            .db(move |s| s.apply_event(&id, &event, now))
            .instrument(span.clone())
            .await
            .map_err(End::Store)?;
        self.core.metrics.event(&outcome);
        span.in_scope(|| {
            if !outcome.applied {
                debug!(sequence, "replayed event ignored");
            } else if outcome.foreign_task {
                warn!(sequence, "event names a task of another instance; ignored");
            } else {
                info!(sequence, %last_status, "task event applied");
            }
        });
        self.send(ServerMsg::EventAck(EventAck { sequence }))
            .await?;
        if outcome.assignment_changed {
            self.send_assignment(false).await?;
        }
        Ok(())
    }

    async fn record_hello(&self, hello: &Hello) -> Result<super::store::HelloOutcome, StoreError> {
        let record = protocol::hello_record(hello, berth_proto::now_ms());
        let id = self.instance_id.clone();
        self.core.db(move |s| s.record_hello(&id, &record)).await
    }

    /// Sends the current assignment if `always` or if it is newer than the
    /// last one sent.
    async fn send_assignment(&mut self, always: bool) -> Result<(), End> {
        let id = self.instance_id.clone();
        let assignment = self
            .core
            .db(move |s| s.assignment(&id))
            .await
            .map_err(End::Store)?;
        if !always && assignment.generation <= self.last_sent_generation {
            return Ok(());
        }
        self.last_sent_generation = assignment.generation;
        info!(
            generation = assignment.generation,
            tasks = assignment.tasks.len(),
            "sending assignment"
        );
        self.send(ServerMsg::Assignment(assignment)).await?;
        self.core.metrics.assignments_sent.inc();
        Ok(())
    }

    async fn send(&self, msg: ServerMsg) -> Result<(), End> {
        self.out
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .await
            .map_err(|_| End::OutboundGone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    #[test]
    fn instance_id_comes_from_the_leaf_common_name() {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "i-0123456789abcdef");
        let cert = params.self_signed(&key).expect("cert");
        let chain = vec![cert.der().clone()];
        assert_eq!(
            instance_id_from_certs(Some(&chain)).expect("cn"),
            "i-0123456789abcdef"
        );
        let err = instance_id_from_certs(None).expect_err("no cert");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = instance_id_from_certs(Some(&[])).expect_err("empty chain");
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}
