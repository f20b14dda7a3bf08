//! Simulated agents: many `Fleet.Connect` sessions in one process, each
//! with its own enrolled identity, over real mutual TLS, speaking the real
//! protocol the way `berth-agent`'s session does (agent/src/session.rs):
//! Hello, Welcome, heartbeats at the interval the Welcome gives, every
//! outbox event above the Welcome's `applied_event_sequence` sent at once,
//! Assignments acknowledged, EventAcks trimming the outbox, and on any
//! failure a reconnect after full-jitter exponential back-off (250 ms
//! doubling to 30 s, reset after a minute connected).
//!
//! What a simulated agent does not do: run containers. A task it is
//! assigned goes RUNNING at once (one TaskEvent), a task desired STOPPED is
//! reported STOPPED at once, and a task told to exit ([`SimCommand`]) is
//! reported STOPPED as an essential container that exited: the figures are
//! the control plane's, not Docker's (a Docker that starts and stops in no
//! time).
//!
//! The TLS client, the key and the CSR are the agent's own code
//! (`berth_agent::tls`, `berth_agent::identity`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_agent::{identity, tls};
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::agent_message::Msg as Up;
use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as Down;
use berth_proto::v1::{
    AgentMessage, Assignment, AssignmentAck, ContainerState, CreateTokenRequest, EnrollRequest,
    Heartbeat, Hello, HostFacts, Resources, TaskEvent, TaskState,
};
use futures_util::{StreamExt, TryStreamExt};
use rand::RngExt;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The real agent's constants (private in agent/src/session.rs).
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
const WELCOME_WAIT: Duration = Duration::from_secs(15);

/// An enrolled identity: the instance id and its client certificate and key.
#[derive(Clone)]
pub struct SimIdentity {
    pub instance_id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Enrolls `count` identities with as many one-time activations (Admin
/// `CreateToken`, then `Enrollment.Enroll` with a new key's CSR), `parallel`
/// at a time. Returns them and the fleet CA.
pub async fn enroll(
    admin: &AdminClient<Channel>,
    fleet_url: &str,
    prefix: &str,
    count: usize,
    parallel: usize,
) -> anyhow::Result<(Vec<SimIdentity>, String)> {
    let first = admin
        .clone()
        .create_token(CreateTokenRequest::default())
        .await
        .context("CreateToken")?
        .into_inner();
    let config = tls::enroll_config(Some(first.ca_sha256.clone()))?;
    let channel = tls::channel(fleet_url, config, Duration::from_secs(30)).await?;
    let ca_pem = Arc::new(tokio::sync::OnceCell::<String>::new());
    let enrolled: Vec<SimIdentity> = futures_util::stream::iter(0..count)
        .map(|i| {
            let (mut admin, channel, ca_pem) =
                (admin.clone(), channel.clone(), Arc::clone(&ca_pem));
            async move {
                let token = admin
                    .create_token(CreateTokenRequest::default())
                    .await
                    .context("CreateToken")?
                    .into_inner();
                let (key, csr_pem) = identity::new_key_and_csr()?;
                let resp = EnrollmentClient::new(channel)
                    .enroll(EnrollRequest {
                        activation_id: token.activation_id,
                        activation_code: token.activation_code,
                        csr_pem,
                        host: Some(HostFacts {
                            hostname: format!("{prefix}-{i}"),
                            os: "simulated".into(),
                            arch: std::env::consts::ARCH.into(),
                            agent_version: "sim".into(),
                            kernel: String::new(),
                            capacity: None,
                        }),
                    })
                    .await
                    .with_context(|| format!("Enroll of simulated agent {i}"))?
                    .into_inner();
                let _ = ca_pem.set(resp.ca_pem.clone());
                anyhow::Ok(SimIdentity {
                    instance_id: resp.instance_id,
                    cert_pem: resp.certificate_pem,
                    key_pem: key.serialize_pem(),
                })
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    let ca = ca_pem.get().cloned().unwrap_or_default();
    Ok((enrolled, ca))
}

/// What the simulated agents tell the benchmark, with the time it happened.
#[derive(Debug)]
pub enum Obs {
    /// A session got its Welcome.
    Welcome {
        agent: usize,
        at: Instant,
        applied: u64,
        /// How long the TCP + TLS + HTTP/2 connection took.
        connect_ms: f64,
        /// From sending Hello to the Welcome.
        welcome_ms: f64,
    },
    /// A task first appeared in an Assignment.
    Assigned {
        agent: usize,
        task_id: String,
        /// The family of its task definition.
        family: String,
        at: Instant,
    },
    /// The agent reported a task STOPPED after a [`SimCommand::Exit`] (its
    /// essential container exited); `at` is when the event was sent.
    Exited {
        task_id: String,
        family: String,
        at: Instant,
    },
    /// The control plane acknowledged the event that reported the task
    /// RUNNING (it is stored).
    Running { task_id: String, at: Instant },
    /// An EventAck (only from agents made with `report_acks`).
    Acked { agent: usize, seq: u64, at: Instant },
    /// A session ended.
    Ended {
        agent: usize,
        code: Option<tonic::Code>,
        error: String,
    },
}

/// Counters shared by all simulated agents of a run.
pub struct Shared {
    /// Sessions that have their Welcome and are still up.
    pub connected: AtomicUsize,
    pub welcomes: AtomicU64,
    pub ended: AtomicU64,
    /// Bounds the number of connections being set up at once (a ramp);
    /// `None`: no bound (a storm).
    pub ramp: Option<Semaphore>,
    obs: mpsc::UnboundedSender<Obs>,
}

impl Shared {
    pub fn new(ramp: Option<usize>) -> (Arc<Shared>, mpsc::UnboundedReceiver<Obs>) {
        let (obs, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Shared {
                connected: AtomicUsize::new(0),
                welcomes: AtomicU64::new(0),
                ended: AtomicU64::new(0),
                ramp: ramp.map(Semaphore::new),
                obs,
            }),
            rx,
        )
    }

    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::SeqCst)
    }

    fn tell(&self, o: Obs) {
        let _ = self.obs.send(o);
    }
}

/// Counts a welcomed session as connected until it ends.
struct Connected<'a>(&'a Shared);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the benchmark can tell one simulated agent to do while it runs
/// (see [`SimAgent::commands`]).
#[derive(Debug)]
pub enum SimCommand {
    /// The task's essential container exits with code 1: the agent reports
    /// it STOPPED (`EssentialContainerExited`), as the real agent does when
    /// a container dies.
    Exit { task_id: String },
}

#[derive(Debug)]
enum SessionEnd {
    Stop,
    Error(Option<tonic::Code>, String),
}

/// One simulated agent host.
pub struct SimAgent {
    pub index: usize,
    pub identity: SimIdentity,
    fleet_url: String,
    ca_pem: String,
    shared: Arc<Shared>,
    report_acks: bool,
    generation: u64,
    tasks: HashMap<String, TaskState>,
    outbox: VecDeque<TaskEvent>,
    last_seq: u64,
    /// seq → task whose RUNNING event waits for its EventAck.
    awaiting_running: BTreeMap<u64, String>,
    /// Sessions started, for the report.
    pub sessions: u64,
    /// Whether the first connection went through the ramp already.
    ramped: bool,
    /// From the last Welcome.
    heartbeat_ms: u32,
    welcome_applied: u64,
    /// Commands of the benchmark, taken by [`SimAgent::run`].
    commands: Option<mpsc::UnboundedReceiver<SimCommand>>,
}

impl SimAgent {
    pub fn new(
        index: usize,
        identity: SimIdentity,
        fleet_url: &str,
        ca_pem: &str,
        shared: Arc<Shared>,
    ) -> SimAgent {
        SimAgent {
            index,
            identity,
            fleet_url: fleet_url.to_string(),
            ca_pem: ca_pem.to_string(),
            shared,
            report_acks: false,
            generation: 0,
            tasks: HashMap::new(),
            outbox: VecDeque::new(),
            last_seq: 0,
            awaiting_running: BTreeMap::new(),
            sessions: 0,
            ramped: false,
            heartbeat_ms: 10_000,
            welcome_applied: 0,
            commands: None,
        }
    }

    /// A channel of [`SimCommand`]s to this agent, served by its sessions
    /// (a command that comes while it has no session waits for the next).
    pub fn commands(&mut self) -> mpsc::UnboundedSender<SimCommand> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.commands = Some(rx);
        tx
    }

    /// Report every EventAck ([`Obs::Acked`]).
    pub fn report_acks(mut self) -> SimAgent {
        self.report_acks = true;
        self
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn task_ids(&self) -> Vec<String> {
        self.tasks.keys().cloned().collect()
    }

    /// Queues `count` events as if the host's containers kept restarting
    /// while the control plane was away: event `i` reports task `i mod T`
    /// RUNNING with its restart count one higher. Returns the restart
    /// count each task ends with.
    pub fn queue_restarts(&mut self, count: usize) -> HashMap<String, u32> {
        let mut ids: Vec<String> = self.tasks.keys().cloned().collect();
        ids.sort();
        if ids.is_empty() {
            return HashMap::new();
        }
        for i in 0..count {
            let id = &ids[i % ids.len()];
            let Some(task) = self.tasks.get_mut(id) else {
                continue;
            };
            for c in &mut task.containers {
                c.restart_count += 1;
                c.exit_code = Some(1);
            }
            let task = task.clone();
            self.push_event(task);
        }
        self.tasks
            .iter()
            .map(|(id, t)| {
                let n = t.containers.first().map(|c| c.restart_count).unwrap_or(0);
                (id.clone(), n)
            })
            .collect()
    }

    fn push_event(&mut self, task: TaskState) -> u64 {
        self.last_seq += 1;
        self.outbox.push_back(TaskEvent {
            sequence: self.last_seq,
            task: Some(task),
            at_ms: berth_proto::now_ms(),
        });
        self.last_seq
    }

    /// Runs sessions until `stop` turns true; returns the agent with its
    /// state (outbox, tasks, sequence) for a later run.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> SimAgent {
        let mut backoff = BACKOFF_START;
        let mut commands = self.commands.take();
        loop {
            if *stop.borrow() {
                self.commands = commands;
                return self;
            }
            let started = Instant::now();
            let end = self.session(&mut stop, &mut commands).await;
            match end {
                SessionEnd::Stop => {
                    self.commands = commands;
                    return self;
                }
                SessionEnd::Error(code, error) => {
                    self.shared.ended.fetch_add(1, Ordering::SeqCst);
                    self.shared.tell(Obs::Ended {
                        agent: self.index,
                        code,
                        error,
                    });
                }
            }
            if started.elapsed() >= STABLE_AFTER {
                backoff = BACKOFF_START;
            }
            let jitter =
                Duration::from_millis(rand::rng().random_range(0..=backoff.as_millis() as u64));
            backoff = (backoff * 2).min(BACKOFF_CAP);
            tokio::select! {
                _ = tokio::time::sleep(jitter) => {}
                _ = stop.changed() => {
                    self.commands = commands;
                    return self;
                }
            }
        }
    }

    async fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        commands: &mut Option<mpsc::UnboundedReceiver<SimCommand>>,
    ) -> SessionEnd {
        // The first connection of a ramp waits for a slot; it is released
        // once the session has its Welcome or failed.
        let shared = Arc::clone(&self.shared);
        let permit = match (&shared.ramp, self.ramped) {
            (Some(sem), false) => sem.acquire().await.ok(),
            _ => None,
        };
        self.sessions += 1;
        let result = self.connect().await;
        self.ramped = true;
        drop(permit);
        let (tx, mut inbound) = match result {
            Ok(pair) => pair,
            Err(end) => return end,
        };
        let _connected = Connected(&shared);
        let interval = Duration::from_millis(u64::from(self.heartbeat_ms).max(200));
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent = self.welcome_applied;
        // Replay: everything above what the server applied, at once.
        match self.flush(&tx, sent).await {
            Ok(s) => sent = s,
            Err(end) => return self.why_closed(&mut inbound, end).await,
        }
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let hb = Up::Heartbeat(Heartbeat { sent_at_ms: berth_proto::now_ms() });
                    if let Err(end) = send(&tx, hb).await {
                        return self.why_closed(&mut inbound, end).await;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => match m.msg {
                        Some(Down::Assignment(a)) => {
                            let generation = a.generation;
                            self.assign(a);
                            let ack = Up::AssignmentAck(AssignmentAck { generation });
                            if let Err(end) = send(&tx, ack).await {
                                return self.why_closed(&mut inbound, end).await;
                            }
                            match self.flush(&tx, sent).await {
                                Ok(s) => sent = s,
                                Err(end) => return self.why_closed(&mut inbound, end).await,
                            }
                        }
                        Some(Down::EventAck(ack)) => self.ack(ack.sequence),
                        Some(Down::Welcome(_)) | None => {}
                    },
                    Ok(None) => return SessionEnd::Error(None, "the control plane closed the session".into()),
                    Err(s) => return SessionEnd::Error(Some(s.code()), s.message().to_string()),
                },
                Some(cmd) = next_command(commands) => {
                    self.command(cmd);
                    match self.flush(&tx, sent).await {
                        Ok(s) => sent = s,
                        Err(end) => return self.why_closed(&mut inbound, end).await,
                    }
                }
                _ = stop.changed() => return SessionEnd::Stop,
            }
        }
    }

    /// Carries out a command of the benchmark (its events go out with the
    /// next flush).
    fn command(&mut self, cmd: SimCommand) {
        match cmd {
            SimCommand::Exit { task_id } => {
                let Some(t) = self.tasks.get_mut(&task_id) else {
                    return;
                };
                if t.last_status == "STOPPED" {
                    return;
                }
                t.last_status = "STOPPED".into();
                t.stop_code = "EssentialContainerExited".into();
                t.stopped_reason = "Essential container in task exited".into();
                t.stopped_at_ms = berth_proto::now_ms();
                for c in &mut t.containers {
                    c.last_status = "STOPPED".into();
                    c.exit_code = Some(1);
                }
                let (t, family) = (t.clone(), t.family.clone());
                self.push_event(t);
                self.shared.tell(Obs::Exited {
                    task_id,
                    family,
                    at: Instant::now(),
                });
            }
        }
    }

    /// TLS, Hello, Welcome.
    async fn connect(
        &mut self,
    ) -> Result<
        (
            mpsc::Sender<AgentMessage>,
            tonic::Streaming<berth_proto::v1::ServerMessage>,
        ),
        SessionEnd,
    > {
        let err = |e: String| SessionEnd::Error(None, e);
        let started = Instant::now();
        let cfg = tls::mtls_config(
            &self.ca_pem,
            &self.identity.cert_pem,
            &self.identity.key_pem,
        )
        .map_err(|e| err(e.to_string()))?;
        let channel = tls::channel(&self.fleet_url, cfg, berth_agent::session::KEEPALIVE)
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut client = FleetClient::new(channel)
            .max_decoding_message_size(berth_proto::FLEET_MAX_SERVER_MESSAGE)
            .max_encoding_message_size(berth_proto::FLEET_MAX_AGENT_MESSAGE);
        let connected = Instant::now();
        let (tx, rx) = mpsc::channel::<AgentMessage>(256);
        let hello = Hello {
            instance_id: self.identity.instance_id.clone(),
            agent_version: "sim".into(),
            boot_id: format!("sim-boot-{}", self.index),
            capacity: Some(Resources {
                cpu: 4096,
                memory_mib: 16384,
            }),
            attributes: HashMap::new(),
            applied_generation: self.generation,
            tasks: self.tasks.values().cloned().collect(),
            hostname: format!("sim-{}", self.index),
            last_event_sequence: self.last_seq,
        };
        send(&tx, Up::Hello(hello)).await?;
        let mut inbound = client
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|s| SessionEnd::Error(Some(s.code()), s.message().to_string()))?
            .into_inner();
        let welcome = match tokio::time::timeout(WELCOME_WAIT, inbound.message()).await {
            Err(_) => return Err(err(format!("no Welcome within {WELCOME_WAIT:?}"))),
            Ok(Err(s)) => return Err(SessionEnd::Error(Some(s.code()), s.message().to_string())),
            Ok(Ok(None)) => return Err(err("closed before Welcome".into())),
            Ok(Ok(Some(m))) => match m.msg {
                Some(Down::Welcome(w)) => w,
                other => return Err(err(format!("expected Welcome, got {other:?}"))),
            },
        };
        self.shared.connected.fetch_add(1, Ordering::SeqCst);
        self.shared.welcomes.fetch_add(1, Ordering::SeqCst);
        let at = Instant::now();
        self.shared.tell(Obs::Welcome {
            agent: self.index,
            at,
            applied: welcome.applied_event_sequence,
            connect_ms: connected.duration_since(started).as_secs_f64() * 1000.0,
            welcome_ms: at.duration_since(connected).as_secs_f64() * 1000.0,
        });
        self.heartbeat_ms = welcome.heartbeat_interval_ms;
        self.welcome_applied = welcome.applied_event_sequence;
        self.ack(welcome.applied_event_sequence);
        Ok((tx, inbound))
    }

    /// When sending failed because the stream is closed: the status the
    /// server closed it with (if it says so within a second), else `end`.
    /// EventAcks still in flight are taken (they only trim the outbox; the
    /// next Welcome says where to resume either way).
    async fn why_closed(
        &mut self,
        inbound: &mut tonic::Streaming<berth_proto::v1::ServerMessage>,
        end: SessionEnd,
    ) -> SessionEnd {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, inbound.message()).await {
                Ok(Ok(Some(m))) => {
                    if let Some(Down::EventAck(ack)) = m.msg {
                        self.ack(ack.sequence);
                    }
                }
                Ok(Err(s)) => return SessionEnd::Error(Some(s.code()), s.message().to_string()),
                _ => return end,
            }
        }
    }

    /// Sends every outbox event after `sent`; returns the new mark.
    async fn flush(&self, tx: &mpsc::Sender<AgentMessage>, sent: u64) -> Result<u64, SessionEnd> {
        let mut mark = sent;
        let pending: Vec<TaskEvent> = self
            .outbox
            .iter()
            .filter(|e| e.sequence > sent)
            .cloned()
            .collect();
        for ev in pending {
            mark = ev.sequence;
            send(tx, Up::Event(ev)).await?;
        }
        Ok(mark)
    }

    /// Takes an Assignment: new tasks desired RUNNING go RUNNING at once
    /// (one event each); tasks desired STOPPED are reported STOPPED.
    fn assign(&mut self, a: Assignment) {
        self.generation = self.generation.max(a.generation);
        let now = Instant::now();
        for d in a.tasks {
            let known = self.tasks.get(&d.task_id).map(|t| t.last_status.clone());
            match (d.desired_status.as_str(), known.as_deref()) {
                ("RUNNING", None) => {
                    let family = serde_json::from_str::<serde_json::Value>(&d.task_definition_json)
                        .ok()
                        .and_then(|v| {
                            v.get("family")
                                .or_else(|| v.pointer("/taskDefinition/family"))
                                .and_then(|f| f.as_str())
                                .map(str::to_string)
                        })
                        .unwrap_or_default();
                    self.shared.tell(Obs::Assigned {
                        agent: self.index,
                        task_id: d.task_id.clone(),
                        family: family.clone(),
                        at: now,
                    });
                    let state = TaskState {
                        task_id: d.task_id.clone(),
                        family,
                        last_status: "RUNNING".into(),
                        desired_status: "RUNNING".into(),
                        health_status: "UNKNOWN".into(),
                        created_at_ms: d.created_at_ms,
                        started_at_ms: berth_proto::now_ms(),
                        containers: vec![ContainerState {
                            name: "app".into(),
                            image: "simulated".into(),
                            runtime_id: format!("sim-{}-{}", self.index, d.task_id),
                            last_status: "RUNNING".into(),
                            health_status: "UNKNOWN".into(),
                            essential: true,
                            ..ContainerState::default()
                        }],
                        ..TaskState::default()
                    };
                    self.tasks.insert(d.task_id.clone(), state.clone());
                    let seq = self.push_event(state);
                    self.awaiting_running.insert(seq, d.task_id);
                }
                ("STOPPED", Some(status)) if status != "STOPPED" => {
                    let Some(t) = self.tasks.get_mut(&d.task_id) else {
                        continue;
                    };
                    t.last_status = "STOPPED".into();
                    t.desired_status = "STOPPED".into();
                    t.stop_code = d.stop_code.clone();
                    t.stopped_reason = d.stopped_reason.clone();
                    t.stopped_at_ms = berth_proto::now_ms();
                    for c in &mut t.containers {
                        c.last_status = "STOPPED".into();
                        c.exit_code = Some(0);
                    }
                    let t = t.clone();
                    self.push_event(t);
                }
                _ => {}
            }
        }
    }

    /// Trims the outbox up to `seq` (inclusive).
    fn ack(&mut self, seq: u64) {
        while self.outbox.front().is_some_and(|e| e.sequence <= seq) {
            self.outbox.pop_front();
        }
        let now = Instant::now();
        let done: Vec<u64> = self
            .awaiting_running
            .range(..=seq)
            .map(|(s, _)| *s)
            .collect();
        for s in done {
            if let Some(task_id) = self.awaiting_running.remove(&s) {
                self.shared.tell(Obs::Running { task_id, at: now });
            }
        }
        if self.report_acks && seq > 0 {
            self.shared.tell(Obs::Acked {
                agent: self.index,
                seq,
                at: now,
            });
        }
    }
}

/// The next command, or never when there is no channel (or it is closed).
async fn next_command(
    commands: &mut Option<mpsc::UnboundedReceiver<SimCommand>>,
) -> Option<SimCommand> {
    if let Some(rx) = commands
        && let Some(cmd) = rx.recv().await
    {
        return Some(cmd);
    }
    std::future::pending().await
}

async fn send(tx: &mpsc::Sender<AgentMessage>, msg: Up) -> Result<(), SessionEnd> {
    tx.send(AgentMessage { msg: Some(msg) })
        .await
        .map_err(|_| SessionEnd::Error(None, "the session's stream is closed".into()))
}
