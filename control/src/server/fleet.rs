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
//!    nothing for three heartbeat intervals is closed.
//!
//! Limits: every instance has one token bucket ([`Core::instance_rate`])
//! across all its sessions, so reconnecting does not refill it. Connect
//! takes a token (refused with RESOURCE_EXHAUSTED when empty, before the
//! store is read), and so does every message, the Hello included. A
//! message over the rate waits for its token (at most [`MAX_RATE_WAIT`]):
//! the server reads the stream more slowly and HTTP/2 flow control slows
//! the agent down, so a legitimate replay keeps its session. A message
//! that would wait longer ends the session with RESOURCE_EXHAUSTED before
//! it is applied, so the agent reconnects and replays it (nothing is lost).
//!
//! Deregistration: a session is registered as pending from its Connect on,
//! so deregistration closes it even before its Hello; and every write of a
//! session (Hello, heartbeat, event) checks in its own transaction that the
//! instance is still ACTIVE, and ends the session otherwise.
//!
//! Certificates: the store records each instance's current certificate
//! (the one it enrolled with, then each renewed one once it connects) and
//! the one renewal issued last. Connect and Renew refuse a certificate older
//! than the current one (PERMISSION_DENIED), so a renewal retires the
//! previous certificate as soon as the renewed one is in use.
//!
//! `Renew` issues a new certificate for the instance of the caller's
//! current certificate (which the TLS layer checked: signed by the fleet CA
//! and not expired), if the instance is still registered, at most
//! [`RENEW_BURST`] at once and then one per [`RENEW_INTERVAL`] (or a
//! quarter of the certificate lifetime, if shorter) per instance.
//!
//! Events name a task; one this server did not assign to the instance is
//! acknowledged and ignored (nothing is stored), with a warning at most
//! every [`WARN_EVERY`] per session (debug otherwise).
//!
//! An admin certificate (`OU=admin`) is never an agent's identity.
//!
//! Assignments are sent only when their generation is newer than the last
//! one sent on this session, so concurrent changes never send an older
//! assignment after a newer one.
//!
//! [`HELLO_TIMEOUT`]: super::HELLO_TIMEOUT
//! [`RENEW_BURST`]: super::RENEW_BURST
//! [`RENEW_INTERVAL`]: super::RENEW_INTERVAL
//! [`Core::instance_rate`]: super::Core

use std::net::SocketAddr;
use std::sync::Arc;

use berth_proto::v1::fleet_server::Fleet;
use berth_proto::v1::server_message::Msg as ServerMsg;
use berth_proto::v1::{
    AgentMessage, EventAck, Hello, RenewRequest, RenewResponse, ServerMessage, Welcome,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::protocol::{self, CheckedEvent, Step, shown};
use super::sessions::SessionCommand;
use super::store::{CertUse, INACTIVE, InstanceRecord, StoreError};
use super::{Core, peer_text, store_status};

pub use super::protocol::MAX_COUNTER;

/// Messages buffered towards one agent before the session waits for it.
const OUTBOUND_BUFFER: usize = 64;
/// A session warns about ignored or cut events at most this often; the
/// rest go to the debug log (and are counted in the next warning).
pub const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// A message over the instance's rate waits this long at most for its
/// token; longer (a rate under one message every two seconds) ends the
/// session with RESOURCE_EXHAUSTED.
pub const MAX_RATE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    agent_subject(certs).map(|s| s.common_name)
}

/// The subject (instance id and serial number) of an agent's client
/// certificate chain. An admin certificate is refused.
fn agent_subject(
    certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
) -> Result<super::ca::Subject, Status> {
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
    Ok(subject)
}

/// Takes a token of the instance's bucket for `what` (a Connect), or the
/// refusal.
fn charge(
    core: &Core,
    instance_id: &str,
    peer: Option<SocketAddr>,
    what: &str,
) -> Result<(), Status> {
    core.instance_rate
        .take(instance_id, std::time::Instant::now())
        .map_err(|e| {
            warn!(%instance_id, peer = %peer_text(peer), "{what} refused: the instance sends too fast");
            rate_status(core, instance_id, e.retry_after)
        })
}

fn rate_status(core: &Core, instance_id: &str, retry_after: std::time::Duration) -> Status {
    Status::resource_exhausted(format!(
        "instance {instance_id} sends more than {} messages per second (burst {}) across its sessions; try again in {}",
        core.stream_rate,
        core.stream_burst,
        humantime::format_duration(std::time::Duration::from_millis(
            u64::try_from(retry_after.as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
        ))
    ))
}

/// The refusal of a certificate older than the instance's current one.
fn retired_status(instance_id: &str, serial: &str) -> Status {
    Status::permission_denied(format!(
        "the client certificate {serial} of instance {instance_id} was replaced by a renewed one; use the renewed certificate (the agent keeps it in its data dir), or enroll the host again"
    ))
}

/// Connect: whether the presented certificate may open a session (see the
/// module comment), promoting a renewed one.
async fn check_certificate(
    core: &Core,
    instance_id: &str,
    serial: &str,
    peer: Option<SocketAddr>,
) -> Result<(), Status> {
    let used = {
        let (id, serial) = (instance_id.to_owned(), serial.to_owned());
        core.db("use_certificate", move |s| s.use_certificate(&id, &serial))
            .await
            .map_err(store_status)?
    };
    match used {
        CertUse::Accepted => Ok(()),
        CertUse::Promoted { retired } => {
            info!(%instance_id, serial, retired = retired.as_deref().unwrap_or("-"), "renewed client certificate in use; the previous one is refused from now on");
            Ok(())
        }
        CertUse::Retired { current } => {
            warn!(%instance_id, serial, current = %current, peer = %peer_text(peer), "session refused: a client certificate older than the instance's current one");
            Err(retired_status(instance_id, serial))
        }
    }
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
        core.db("instance", move |s| s.instance(&id))
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
        let subject = agent_subject(certs.as_deref().map(Vec::as_slice))?;
        let instance_id = subject.common_name;
        // Before the store is read: a reconnect loop costs a token each.
        charge(&self.core, &instance_id, peer, "session")?;
        active_instance(&self.core, &instance_id, peer, "session").await?;
        check_certificate(&self.core, &instance_id, &subject.serial, peer).await?;
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        // Registered before the Hello, so that deregistration closes it.
        let (cmd_tx, commands) = mpsc::unbounded_channel();
        let session_id = self.core.sessions().register_pending(&instance_id, cmd_tx);
        let registration = Registration {
            core: Arc::clone(&self.core),
            instance_id: instance_id.clone(),
            session_id,
        };
        let span = info_span!("session", %instance_id, peer = ?peer);
        let session = Session {
            core: Arc::clone(&self.core),
            instance_id,
            peer,
            out: tx,
            last_sent_generation: 0,
            warnings: RateLimitedWarning::default(),
        };
        tokio::spawn(
            session
                .run(request.into_inner(), commands, registration)
                .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let peer = request.remote_addr();
        let certs = request.peer_certs();
        let subject = agent_subject(certs.as_deref().map(Vec::as_slice))?;
        let instance_id = subject.common_name;
        let presented_serial = subject.serial;
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
            if let Err(e) = self
                .core
                .renewals
                .take(&instance_id, std::time::Instant::now())
            {
                warn!("certificate renewal refused: too many renewals of this instance");
                return Err(Status::resource_exhausted(format!(
                    "instance {instance_id} renewed its certificate {} times recently (at most {} at once, then one per {}); try again in {}",
                    super::RENEW_BURST,
                    super::RENEW_BURST,
                    humantime::format_duration(self.core.renew_interval()),
                    humantime::format_duration(std::time::Duration::from_secs(
                        e.retry_after.as_secs().max(1)
                    ))
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
            // Recorded as the pending certificate before it is handed out;
            // refused (and forgotten) when the presented one is retired.
            let recorded = {
                let (id, presented, new) = (
                    instance_id.clone(),
                    presented_serial.clone(),
                    issued.serial.clone(),
                );
                self.core
                    .db("record_renewal", move |s| s.record_renewal(&id, &presented, &new))
                    .await
                    .map_err(store_status)?
            };
            if let CertUse::Retired { current } = recorded {
                warn!(serial = %presented_serial, current = %current, "certificate renewal refused: a client certificate older than the instance's current one");
                return Err(retired_status(&instance_id, &presented_serial));
            }
            let not_after_ms = issued.not_after_ms();
            info!(
                serial = %issued.serial,
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
    warnings: RateLimitedWarning,
}

/// Warnings about what a session's agent sends wrong (events for tasks
/// that are not its own, reasons cut): at most one per [`WARN_EVERY`].
#[derive(Debug, Default)]
struct RateLimitedWarning {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    /// `Some(n)`: warn now, `n` earlier ones were logged at debug only.
    fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Removes the session from the registry (pending or current) when it
/// ends, however it ends.
struct Registration {
    core: Arc<Core>,
    instance_id: String,
    session_id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self
            .core
            .sessions()
            .unregister_session(&self.instance_id, self.session_id)
        {
            info!("agent disconnected");
            self.core.wake_services();
        }
    }
}

/// A store error of a session's write: an instance deregistered meanwhile
/// ends the session as refused.
fn store_end(e: StoreError) -> End {
    match e {
        StoreError::InstanceInactive(_) => End::Refused(Status::permission_denied(e.to_string())),
        other => End::Store(other),
    }
}

type Commands = mpsc::UnboundedReceiver<SessionCommand>;

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<AgentMessage>,
        mut commands: Commands,
        registration: Registration,
    ) {
        let end = self.serve(&mut inbound, &mut commands, &registration).await;
        drop(registration);
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

    /// Takes a token of the instance's bucket for one message, waiting
    /// for it (the agent's stream is read more slowly, so HTTP/2 flow
    /// control slows the agent) when it comes within [`MAX_RATE_WAIT`];
    /// otherwise the session ends.
    async fn charge(&self) -> Result<(), End> {
        loop {
            match self
                .core
                .instance_rate
                .take(&self.instance_id, std::time::Instant::now())
            {
                Ok(()) => return Ok(()),
                Err(e) if e.retry_after <= MAX_RATE_WAIT => {
                    tokio::time::sleep(e.retry_after).await;
                }
                // Not applied and not acknowledged: the agent replays it on
                // its next session.
                Err(e) => {
                    return Err(End::RateLimited(rate_status(
                        &self.core,
                        &self.instance_id,
                        e.retry_after,
                    )));
                }
            }
        }
    }

    async fn serve(
        &mut self,
        inbound: &mut Streaming<AgentMessage>,
        commands: &mut Commands,
        registration: &Registration,
    ) -> End {
        let first = tokio::select! {
            first = tokio::time::timeout(self.core.hello_timeout, inbound.message()) => match first {
                Err(_) => {
                    return End::Refused(Status::deadline_exceeded(format!(
                        "no Hello within {}",
                        humantime::format_duration(self.core.hello_timeout)
                    )));
                }
                Ok(Err(status)) => return End::Stream(status),
                Ok(Ok(None)) => return End::AgentClosed,
                Ok(Ok(Some(first))) => first,
            },
            // Deregistration (or shutdown) before the Hello.
            cmd = commands.recv() => match cmd {
                Some(SessionCommand::Close(status)) => return End::Closed(status),
                Some(SessionCommand::AssignmentChanged) | None => {
                    return End::Closed(Status::aborted("session closed before its Hello"));
                }
            },
        };
        if let Err(end) = self.charge().await {
            return end;
        }
        let hello = match protocol::first_message(&first, &self.instance_id) {
            Ok(hello) => hello,
            Err(refusal) => return End::Refused(refusal.status()),
        };
        let instance = match self.record_hello(hello).await {
            Ok(outcome) => {
                self.log_hello(hello, &outcome);
                outcome.instance
            }
            Err(e) => return store_end(e),
        };
        if !self.core.sessions().promote_session(
            &self.instance_id,
            registration.session_id,
            self.peer,
        ) {
            return End::Closed(Status::permission_denied(format!(
                "instance {} was deregistered",
                self.instance_id
            )));
        }
        self.core.wake_services();
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
            debug!(task_id = %shown(&t.task_id), last_status = %shown(&t.last_status), "reported by Hello");
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
        loop {
            tokio::select! {
                msg = tokio::time::timeout_at(deadline, inbound.message()) => {
                    let msg = match msg {
                        Err(_) => return End::Silent,
                        Ok(Err(status)) => return End::Stream(status),
                        Ok(Ok(None)) => return End::AgentClosed,
                        Ok(Ok(Some(msg))) => msg,
                    };
                    if let Err(end) = self.charge().await {
                        return end;
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

    /// Logs what recording the Hello changed or refused to change.
    fn log_hello(&self, hello: &Hello, outcome: &super::store::HelloOutcome) {
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
        let i = &outcome.instance;
        if outcome.capacity_clamped {
            warn!(
                instance_id = %self.instance_id,
                registered_cpu = i.cpu,
                registered_memory_mib = i.memory_mib,
                reported_cpu = i.reported_cpu,
                reported_memory_mib = i.reported_memory_mib,
                "the agent reports more capacity than registered; placement keeps the registered capacity until an operator runs `berth instance accept-capacity {}`",
                self.instance_id
            );
        }
        if outcome.capacity_registered {
            info!(
                cpu = i.cpu,
                memory_mib = i.memory_mib,
                "no capacity was registered at enrollment (an older agent); registered what the first Hello reports"
            );
        }
        if i.hostname_mismatch() {
            warn!(
                instance_id = %self.instance_id,
                registered_hostname = %i.hostname,
                reported_hostname = %i.reported_hostname,
                "the agent reports another hostname than the one registered at enrollment; the registered one stays (another host using this identity?)"
            );
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
                    .db("record_heartbeat", move |s| s.record_heartbeat(&id, now))
                    .await
                    .map_err(store_end)
            }
            Step::AssignmentAck(generation) => {
                debug!(generation, "assignment acknowledged");
                let id = self.instance_id.clone();
                self.core
                    .db("record_assignment_ack", move |s| {
                        s.record_assignment_ack(&id, generation)
                    })
                    .await
                    .map_err(store_end)
            }
            Step::Event(checked) => self.apply_event(*checked).await,
        }
    }

    async fn apply_event(&mut self, checked: CheckedEvent) -> Result<(), End> {
        let CheckedEvent { event, truncated } = checked;
        let sequence = event.sequence;
        // Checked by the protocol rules: short and of a plain charset.
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
            .db("apply_event", move |s| s.apply_event(&id, &event, now))
            .instrument(span.clone())
            .await
            .map_err(store_end)?;
        self.core.metrics.event(&outcome);
        if outcome.applied
            && let Some(service) = outcome.group.strip_prefix("service:")
        {
            // Only that service's state moved: it is looked at first.
            self.core.wake_service(&outcome.cluster, service);
        } else if outcome.applied {
            self.core.wake_services();
        }
        let ignored = if outcome.foreign_task {
            Some("event names a task of another instance; ignored")
        } else if outcome.unknown_task {
            Some("event names a task this control plane did not assign to the instance; ignored")
        } else {
            None
        };
        let noted = ignored.is_some() || (outcome.applied && !truncated.is_empty());
        let warn_now = if noted {
            self.warnings.allow(std::time::Instant::now())
        } else {
            None
        };
        span.in_scope(|| {
            if !outcome.applied {
                debug!(sequence, "replayed event ignored");
            } else if let Some(why) = ignored {
                match warn_now {
                    Some(suppressed) => warn!(sequence, suppressed, "{why}"),
                    None => debug!(sequence, "{why}"),
                }
            } else {
                // Kept at INFO: the end-to-end harness (tests/src/applied.rs)
                // reads it; its volume is bounded by the instance's rate.
                info!(sequence, %last_status, "task event applied");
                if !truncated.is_empty() {
                    let fields = truncated.join(", ");
                    match warn_now {
                        Some(suppressed) => warn!(sequence, %fields, suppressed, max_bytes = protocol::MAX_REASON_BYTES, "reasons longer than the limit were cut"),
                        None => debug!(sequence, %fields, "reasons longer than the limit were cut"),
                    }
                }
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
        self.core
            .db("record_hello", move |s| s.record_hello(&id, &record))
            .await
    }

    /// Sends the current assignment if `always` or if it is newer than the
    /// last one sent.
    async fn send_assignment(&mut self, always: bool) -> Result<(), End> {
        let id = self.instance_id.clone();
        let mut assignment = self
            .core
            .db("assignment", move |s| s.assignment(&id))
            .await
            .map_err(End::Store)?;
        if !always && assignment.generation <= self.last_sent_generation {
            return Ok(());
        }
        // Only this instance's own tasks are in it: their secrets go to
        // this session alone.
        super::secrets::attach(&self.core, &mut assignment)
            .await
            .map_err(End::Store)?;
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
