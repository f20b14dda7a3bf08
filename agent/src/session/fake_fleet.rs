//! Tests of the session against a fake control plane.
//!
//! The fake implements the generated `Fleet` service on a loopback port with
//! real mutual TLS (a throwaway CA, a server certificate for 127.0.0.1 and a
//! client certificate for the test instance), the way linkerd tests its proxy
//! against a scripted control plane. The agent side is the real one: the
//! manager on the in-memory runtime, a temporary data dir, and
//! [`super::run`]. Each test scripts what the control plane says (the
//! Welcome's applied sequence, assignments, acks, the end of a stream) and
//! checks what the agent sends and what it persisted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use berth_proto::v1::agent_message::Msg as Up;
use berth_proto::v1::fleet_server::{Fleet, FleetServer};
use berth_proto::v1::server_message::Msg as Down;
use berth_proto::v1::{
    AgentMessage, Assignment, DesiredTask, EventAck, RenewRequest, RenewResponse, Resources,
    ServerMessage, Welcome,
};
use futures_util::Stream;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use super::{HostInfo, run};
use crate::identity::{self, Identity};
use crate::manager::{Manager, ManagerHandle};
use crate::metrics::AgentMetrics;
use crate::runtime::fake::FakeRuntime;
use crate::supervisor::Settings;

const RUNNING: &str = berth_proto::status::Status::Running.as_str();

const INSTANCE: &str = "i-0123456789abcdef";
/// Generous: a loaded CI machine is slow, a passing run is fast.
const DEADLINE: Duration = Duration::from_secs(30);

/// A throwaway CA that signs the fake's server certificate and the agent's
/// client certificates.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params
            .distinguished_name
            .push(DnType::CommonName, "berth test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("ca cert").pem();
        TestCa {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn server_cert(&self) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate for `INSTANCE` valid for `lifetime` from now.
    fn client_cert(&self, key: &KeyPair, lifetime: Duration) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, INSTANCE);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(1)).into();
        params.not_after = (now + lifetime).into();
        params
            .signed_by(key, &self.issuer)
            .expect("client cert")
            .pem()
    }

    fn sign_csr(&self, csr_pem: &str, lifetime: Duration) -> Result<String, Status> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Status::invalid_argument(format!("bad csr: {e}")))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("renew params");
        params.distinguished_name.push(DnType::CommonName, INSTANCE);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(1)).into();
        params.not_after = (now + lifetime).into();
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(cert.pem())
    }
}

/// What the fake saw of one stream.
#[derive(Debug)]
enum Seen {
    /// A stream opened: its number, its Hello and the client certificate
    /// it was opened with (DER).
    Opened(u32, berth_proto::v1::Hello, Vec<u8>),
    Message(u32, Up),
    Renewed,
}

/// The control plane's side of one open stream.
struct Stream1 {
    tx: mpsc::Sender<Result<ServerMessage, Status>>,
}

impl Stream1 {
    async fn send(&self, msg: Down) {
        self.tx
            .send(Ok(ServerMessage { msg: Some(msg) }))
            .await
            .expect("stream open");
    }

    /// Ends the stream with an error, as a server that goes away would.
    async fn fail(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}

#[derive(Clone)]
struct FakeFleet {
    /// The `applied_event_sequence` of the next Welcome.
    applied: Arc<Mutex<u64>>,
    seen: mpsc::UnboundedSender<Seen>,
    streams: mpsc::UnboundedSender<(u32, Stream1)>,
    count: Arc<Mutex<u32>>,
    ca: Arc<TestCa>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Fleet for FakeFleet {
    type ConnectStream = Outbound;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        let peer_cert = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(AgentMessage {
                msg: Some(Up::Hello(h)),
            }) => h,
            _ => return Err(Status::invalid_argument("Hello first")),
        };
        let number = {
            let mut c = self.count.lock().expect("count");
            *c += 1;
            *c
        };
        let applied = *self.applied.lock().expect("applied");
        let (tx, rx) = mpsc::channel(64);
        tx.send(Ok(ServerMessage {
            msg: Some(Down::Welcome(Welcome {
                instance_id: hello.instance_id.clone(),
                heartbeat_interval_ms: 200,
                applied_event_sequence: applied,
            })),
        }))
        .await
        .map_err(|_| Status::internal("closed"))?;
        let _ = self.seen.send(Seen::Opened(number, hello, peer_cert));
        let _ = self.streams.send((number, Stream1 { tx }));
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if let Some(msg) = m.msg {
                    let _ = seen.send(Seen::Message(number, msg));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let cert = self
            .ca
            .sign_csr(&request.into_inner().csr_pem, Duration::from_secs(3600))?;
        let _ = self.seen.send(Seen::Renewed);
        Ok(Response::new(RenewResponse {
            certificate_pem: cert,
            ca_pem: self.ca.pem.clone(),
            not_after_ms: 0,
        }))
    }
}

/// A fake control plane, an agent (manager + session) connected to it, and
/// what the fake sees.
struct Rig {
    fleet: FakeFleet,
    seen: mpsc::UnboundedReceiver<Seen>,
    streams: mpsc::UnboundedReceiver<(u32, Stream1)>,
    rt: FakeRuntime,
    manager: ManagerHandle,
    dir: tempfile::TempDir,
    shutdown: watch::Sender<bool>,
    _server: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// `lifetime`: of the agent's client certificate (renewal happens at
    /// 50–80 % of it).
    async fn start(lifetime: Duration) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Arc::new(TestCa::new());
        let (server_cert, server_key) = ca.server_cert();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let fleet = FakeFleet {
            applied: Arc::new(Mutex::new(0)),
            seen: seen_tx,
            streams: streams_tx,
            count: Arc::new(Mutex::new(0)),
            ca: Arc::clone(&ca),
        };
        let tls = ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                server_cert,
                server_key,
            ))
            .client_ca_root(Certificate::from_pem(&ca.pem));
        let svc = FleetServer::new(fleet.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tls)
                .expect("tls config")
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });

        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("agent key");
        let identity = Identity {
            instance_id: INSTANCE.into(),
            server: format!("https://{addr}"),
            ca_pem: ca.pem.clone(),
            cert_pem: ca.client_cert(&key, lifetime),
            key_pem: key.serialize_pem(),
            data_dir: dir.path().to_path_buf(),
        };
        let rt = FakeRuntime::new();
        let metrics = Arc::new(AgentMetrics::default());
        let settings = Settings {
            instance_id: INSTANCE.into(),
            pull_policy: crate::runtime::PullPolicy::Default,
            default_stop_timeout: Duration::from_secs(1),
            cleanup_delay: Duration::from_secs(3600),
            policy: crate::policy::Policy::default(),
            check_host_ports: false,
            task_cgroups: None,
        };
        let manager = Manager::start(
            Arc::new(rt.clone()),
            settings,
            dir.path(),
            true,
            "boot-1",
            Arc::clone(&metrics),
        )
        .await
        .expect("manager");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let host = HostInfo {
            hostname: "fake-host".into(),
            boot_id: "boot-1".into(),
            capacity: Resources {
                cpu: 2048,
                memory_mib: 4096,
            },
            attributes: HashMap::new(),
        };
        tokio::spawn(run(identity, host, manager.clone(), metrics, shutdown_rx));
        Rig {
            fleet,
            seen,
            streams,
            rt,
            manager,
            dir,
            shutdown,
            _server: server,
        }
    }

    /// The next thing the fake sees that `pick` accepts; what it skips
    /// (heartbeats, …) is dropped.
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.seen.recv()).await {
                Ok(Some(s)) => {
                    if let Some(t) = pick(s) {
                        return t;
                    }
                }
                Ok(None) => panic!("fake control plane gone while waiting for {what}"),
                Err(_) => panic!("no {what} within {DEADLINE:?}"),
            }
        }
    }

    async fn stream(&mut self) -> (u32, Stream1) {
        tokio::time::timeout(DEADLINE, self.streams.recv())
            .await
            .expect("a stream within the deadline")
            .expect("fake alive")
    }

    /// How many containers the agent created on the fake engine.
    fn creates(&self) -> usize {
        self.rt
            .calls()
            .iter()
            .filter(|c| c.starts_with("create"))
            .count()
    }

    fn persisted(&self) -> crate::state::PersistedState {
        let bytes = std::fs::read(self.dir.path().join("state.json")).expect("state.json");
        serde_json::from_slice(&bytes).expect("state.json parses")
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

fn task(id: &str) -> DesiredTask {
    DesiredTask {
        task_id: id.into(),
        task_definition_json: r#"{"family":"web","containerDefinitions":[
            {"name":"app","image":"img/app","memory":64,"essential":true}]}"#
            .into(),
        desired_status: RUNNING.into(),
        created_at_ms: berth_proto::now_ms(),
        stop_code: String::new(),
        stopped_reason: String::new(),
        ..DesiredTask::default()
    }
}

const TASK: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_are_persisted_before_their_ack_and_applied_once() {
    let mut rig = Rig::start(Duration::from_secs(3600)).await;
    let hello = rig
        .next("Hello", |s| match s {
            Seen::Opened(_, h, _) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(hello.instance_id, INSTANCE);
    assert_eq!(hello.applied_generation, 0);
    let (_, stream) = rig.stream().await;

    let assignment = Assignment {
        generation: 7,
        tasks: vec![task(TASK)],
    };
    stream.send(Down::Assignment(assignment.clone())).await;
    let acked = rig
        .next("AssignmentAck", |s| match s {
            Seen::Message(_, Up::AssignmentAck(a)) => Some(a.generation),
            _ => None,
        })
        .await;
    assert_eq!(acked, 7);
    // The ack was sent after the manager persisted the set.
    let on_disk = rig.persisted();
    assert_eq!(on_disk.generation, 7);
    assert!(on_disk.desired.contains_key(TASK));

    rig.next("the task RUNNING", |s| match s {
        Seen::Message(_, Up::Event(e))
            if e.task.as_ref().is_some_and(|t| t.last_status == RUNNING) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(rig.creates(), 1, "calls: {:?}", rig.rt.calls());

    // The same set again: acknowledged, nothing created twice.
    stream.send(Down::Assignment(assignment)).await;
    let again = rig
        .next("the second AssignmentAck", |s| match s {
            Seen::Message(_, Up::AssignmentAck(a)) => Some(a.generation),
            _ => None,
        })
        .await;
    assert_eq!(again, 7);
    assert_eq!(rig.creates(), 1, "calls: {:?}", rig.rt.calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_replays_what_the_welcome_did_not_apply_and_acks_trim() {
    let mut rig = Rig::start(Duration::from_secs(3600)).await;
    let (_, first) = rig.stream().await;
    first
        .send(Down::Assignment(Assignment {
            generation: 1,
            tasks: vec![task(TASK)],
        }))
        .await;
    // Every event up to the task's RUNNING one, on the first stream.
    let mut sent = Vec::new();
    loop {
        let e = rig
            .next("an event", |s| match s {
                Seen::Message(1, Up::Event(e)) => Some(e),
                _ => None,
            })
            .await;
        sent.push(e.sequence);
        if e.task.is_some_and(|t| t.last_status == RUNNING) {
            break;
        }
    }
    assert!(
        sent.windows(2).all(|w| w[1] == w[0] + 1),
        "sequences follow each other: {sent:?}"
    );
    assert!(sent.len() >= 2, "PENDING then RUNNING at least: {sent:?}");
    let first_seq = sent[0];
    let last_seq = *sent.last().expect("events");

    // An ack trims the outbox up to it, and no further.
    first
        .send(Down::EventAck(EventAck {
            sequence: first_seq,
        }))
        .await;
    let mut view = rig.manager.view();
    tokio::time::timeout(
        DEADLINE,
        view.wait_for(|v| v.outbox.iter().all(|e| e.sequence > first_seq)),
    )
    .await
    .expect("outbox trimmed within the deadline")
    .expect("manager alive");
    assert_eq!(
        view.borrow().outbox.first().map(|e| e.sequence),
        Some(first_seq + 1)
    );

    // The server says it applied only the first event, then the stream
    // breaks: the agent reconnects and replays exactly the rest, in order.
    *rig.fleet.applied.lock().expect("applied") = first_seq;
    first
        .fail(Status::unavailable("control plane restarting"))
        .await;
    let hello = rig
        .next("the second Hello", |s| match s {
            Seen::Opened(2, h, _) => Some(h),
            _ => None,
        })
        .await;
    assert_eq!(hello.applied_generation, 1);
    assert_eq!(hello.last_event_sequence, last_seq);
    assert!(hello.tasks.iter().any(|t| t.task_id == TASK));
    let mut replayed = Vec::new();
    while replayed.len() < sent.len() - 1 {
        let e = rig
            .next("a replayed event", |s| match s {
                Seen::Message(2, Up::Event(e)) => Some(e.sequence),
                _ => None,
            })
            .await;
        replayed.push(e);
    }
    assert_eq!(replayed, sent[1..].to_vec());

    // A Welcome that applied everything trims the whole outbox.
    *rig.fleet.applied.lock().expect("applied") = last_seq;
    let (_, second) = rig.stream().await;
    second.fail(Status::unavailable("once more")).await;
    rig.next("the third Hello", |s| match s {
        Seen::Opened(3, _, _) => Some(()),
        _ => None,
    })
    .await;
    tokio::time::timeout(DEADLINE, view.wait_for(|v| v.outbox.is_empty()))
        .await
        .expect("outbox empty within the deadline")
        .expect("manager alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_swaps_the_identity_files_and_the_next_session_uses_them() {
    // Renewal happens at 50–80 % of the lifetime: within seconds here.
    let mut rig = Rig::start(Duration::from_secs(4)).await;
    let first_cert = rig
        .next("Hello", |s| match s {
            Seen::Opened(1, _, cert) => Some(cert),
            _ => None,
        })
        .await;
    let (_, stream) = rig.stream().await;
    rig.next("a Renew call", |s| matches!(s, Seen::Renewed).then_some(()))
        .await;
    // The files are swapped before the new certificate is used; wait for
    // the certificate on disk to be the renewed one.
    let cert_path = rig.dir.path().join(identity::CERT_FILE);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let renewed = loop {
        let on_disk = std::fs::read_to_string(&cert_path)
            .ok()
            .and_then(|pem| crate::tls::parse_certs(&pem, "agent.crt").ok())
            .and_then(|ders| ders.into_iter().next());
        match on_disk {
            Some(der) => break der.as_ref().to_vec(),
            None if tokio::time::Instant::now() > deadline => {
                panic!("{} not written within {DEADLINE:?}", cert_path.display())
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_ne!(renewed, first_cert, "a new certificate on disk");
    let key = std::fs::read_to_string(rig.dir.path().join(identity::KEY_FILE))
        .expect("agent.key written with the certificate");
    assert!(key.contains("PRIVATE KEY"));

    // The session went on; the next one is opened with the renewed
    // certificate.
    stream.fail(Status::unavailable("reconnect")).await;
    let used = rig
        .next("a Hello on a later stream", |s| match s {
            Seen::Opened(n, _, cert) if n >= 2 => Some(cert),
            _ => None,
        })
        .await;
    assert_eq!(
        used, renewed,
        "the next session presents the renewed certificate"
    );
}
