//! Helpers shared by the integration tests: enrollment, the fleet channel
//! over mutual TLS, and a fake agent.
#![allow(dead_code)]

use std::time::Duration;

use berth_control::RunningServer;
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as ServerMsg;
use berth_proto::v1::{
    AgentMessage, Assignment, EnrollRequest, EnrollResponse, Hello, HostFacts, Resources,
    ServerMessage, TaskEvent, TaskRef, TaskState,
};
use rcgen::{CertificateParams, KeyPair};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub const TASK_DEFINITION: &str = r#"{
  "family": "web",
  "containerDefinitions": [
    {"name": "web", "image": "nginx:1", "essential": true, "cpu": 256, "memory": 512}
  ]
}"#;

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Pause between two checks of [`eventually`].
const PAUSE: Duration = Duration::from_millis(20);

/// Checks `check` until it yields `Some`, with a short pause between checks;
/// an error naming `what` once [`DEADLINE`] has passed. An error from
/// `check` ends the wait at once.
pub async fn eventually<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("timed out after {DEADLINE:?} waiting for {what}").into());
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// A temporary directory of mode 0700, as the server wants its data dir (it
/// refuses one open to group or others; `tempfile::tempdir()` gives 0755
/// under the usual umask).
pub fn private_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
}

pub async fn admin_client(addr: std::net::SocketAddr) -> Result<AdminClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(AdminClient::new(channel))
}

pub async fn fleet_channel(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(channel)
}

pub fn csr() -> Result<(KeyPair, String)> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key, csr.pem()?))
}

pub fn enroll_request(id: &str, code: &str, csr_pem: &str) -> EnrollRequest {
    EnrollRequest {
        activation_id: id.into(),
        activation_code: code.into(),
        csr_pem: csr_pem.into(),
        host: Some(HostFacts {
            hostname: "test-host".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            agent_version: "0.0.0-test".into(),
            kernel: "6".into(),
            capacity: None,
        }),
    }
}

/// A host enrolled with the server: its key, certificate and instance id.
pub struct Enrolled {
    pub instance_id: String,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl Enrolled {
    /// The host of `response`, enrolled with the CSR of `key`.
    pub fn new(key: &KeyPair, response: EnrollResponse) -> Self {
        Enrolled {
            instance_id: response.instance_id,
            key_pem: key.serialize_pem(),
            cert_pem: response.certificate_pem,
            ca_pem: response.ca_pem,
        }
    }

    pub fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// A channel to the server's fleet port over mutual TLS, with this
    /// host's certificate, trusting the CA its enrollment returned.
    pub async fn mtls(&self, server: &RunningServer) -> Result<Channel> {
        fleet_channel(server.fleet_addr(), &self.ca_pem, Some(self.identity())).await
    }
}

/// Enrolls a new host with a fresh activation.
pub async fn enroll(server: &RunningServer) -> Result<Enrolled> {
    let token = server.create_token(None).await?;
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let (key, csr_pem) = csr()?;
    let response = EnrollmentClient::new(plain)
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            &csr_pem,
        ))
        .await?
        .into_inner();
    Ok(Enrolled::new(&key, response))
}

/// The next message from the server, within the deadline.
pub async fn next(inbound: &mut Streaming<ServerMessage>) -> Result<ServerMsg> {
    let msg = tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .map_err(|_| "no message from the server within the deadline")??
        .ok_or("the server ended the session")?;
    Ok(msg.msg.ok_or("empty server message")?)
}

pub async fn next_assignment(inbound: &mut Streaming<ServerMessage>) -> Result<Assignment> {
    match next(inbound).await? {
        ServerMsg::Assignment(a) => Ok(a),
        other => Err(format!("expected an Assignment, got {other:?}").into()),
    }
}

pub async fn next_ack(inbound: &mut Streaming<ServerMessage>) -> Result<u64> {
    match next(inbound).await? {
        ServerMsg::EventAck(a) => Ok(a.sequence),
        other => Err(format!("expected an EventAck, got {other:?}").into()),
    }
}

pub fn agent(msg: AgentMsg) -> AgentMessage {
    AgentMessage { msg: Some(msg) }
}

pub fn event(seq: u64, task_id: &str, last_status: &str) -> AgentMessage {
    agent(AgentMsg::Event(TaskEvent {
        sequence: seq,
        task: Some(TaskState {
            task_id: task_id.into(),
            family: "web".into(),
            last_status: last_status.into(),
            desired_status: "RUNNING".into(),
            started_at_ms: 1_700_000_000_000,
            ..TaskState::default()
        }),
        at_ms: berth_proto::now_ms(),
    }))
}

pub async fn last_status(admin: &mut AdminClient<Channel>, task_id: &str) -> Result<String> {
    let t = admin
        .describe_task(TaskRef {
            task_id: task_id.into(),
        })
        .await?
        .into_inner();
    Ok(t.state.map(|s| s.last_status).unwrap_or_default())
}

/// A fake agent: enrolled with a fresh activation, connected, past Welcome
/// and the first Assignment.
pub struct FakeAgent {
    pub instance_id: String,
    pub tx: mpsc::Sender<AgentMessage>,
    pub inbound: Streaming<ServerMessage>,
}

impl FakeAgent {
    pub async fn start(server: &RunningServer, cpu: i64, memory_mib: i64) -> Result<FakeAgent> {
        Self::start_with_attributes(server, cpu, memory_mib, &[]).await
    }

    /// [`FakeAgent::start`] with these attributes in its Hello.
    pub async fn start_with_attributes(
        server: &RunningServer,
        cpu: i64,
        memory_mib: i64,
        attributes: &[(&str, &str)],
    ) -> Result<FakeAgent> {
        let enrolled = enroll(server).await?;
        FakeAgent::connect(server, &enrolled, cpu, memory_mib, attributes).await
    }

    /// Connects an enrolled host (again, after a server restart).
    pub async fn connect(
        server: &RunningServer,
        enrolled: &Enrolled,
        cpu: i64,
        memory_mib: i64,
        attributes: &[(&str, &str)],
    ) -> Result<FakeAgent> {
        let mtls = enrolled.mtls(server).await?;
        let (tx, rx) = mpsc::channel::<AgentMessage>(16);
        tx.send(agent(AgentMsg::Hello(Hello {
            instance_id: enrolled.instance_id.clone(),
            capacity: Some(Resources { cpu, memory_mib }),
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Hello::default()
        })))
        .await?;
        let mut inbound = FleetClient::new(mtls)
            .connect(ReceiverStream::new(rx))
            .await?
            .into_inner();
        match next(&mut inbound).await? {
            ServerMsg::Welcome(_) => {}
            other => return Err(format!("expected Welcome, got {other:?}").into()),
        }
        next_assignment(&mut inbound).await?;
        Ok(FakeAgent {
            instance_id: enrolled.instance_id.clone(),
            tx,
            inbound,
        })
    }
}

/// The `berth` binary of this build.
pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Runs `berth --server ADMIN args` to its end, within the deadline.
pub async fn berth(server: &RunningServer, args: &[&str]) -> Result<std::process::Output> {
    let child = tokio::process::Command::new(BERTH)
        .env_remove("BERTH_ADDR")
        .arg("--server")
        .arg(server.admin_addr().to_string())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    Ok(tokio::time::timeout(DEADLINE, child.wait_with_output()).await??)
}

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON a command printed; fails unless it succeeded.
pub fn json_of(out: &std::process::Output) -> Result<serde_json::Value> {
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Fails unless the command exited 1 with `needle` on stderr.
pub fn assert_refused(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(needle),
        "stderr lacks {needle:?}: {}",
        text(&out.stderr)
    );
}

/// Every file of the data dir, as one byte string.
pub fn data_dir_bytes(dir: &std::path::Path) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            all.extend(std::fs::read(&path)?);
        }
    }
    Ok(all)
}

/// What the in-process server logged, at every level, for every test of
/// the test binary (one subscriber for the process).
pub static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

pub struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the server's logs (trace level) to [`LOGS`]; once per process.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(|| LogSink)
            .with_ansi(false)
            .try_init();
    });
}

pub fn logged() -> Vec<u8> {
    LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
