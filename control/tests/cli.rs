//! The `berth` binary against the real server (in-process, on loopback),
//! with a fake agent where a task has to change state.

mod common;

use std::process::{Output, Stdio};

use berth_control::{RunningServer, Server, ServerConfig};
use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::{TaskEvent, TaskState};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth(server: &RunningServer, args: &[&str]) -> Result<Child> {
    Ok(Command::new(BERTH)
        .env_remove("BERTH_ADDR")
        .arg("--server")
        .arg(server.admin_addr().to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

async fn finish(child: Child) -> Result<Output> {
    Ok(tokio::time::timeout(DEADLINE, child.wait_with_output()).await??)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn setup() -> Result<(tempfile::TempDir, RunningServer, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let td = dir.path().join("task.json");
    std::fs::write(&td, TASK_DEFINITION)?;
    Ok((dir, server, td))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_run_wait_returns_once_running() -> Result {
    let (_dir, server, td) = setup().await?;
    let mut agent = FakeAgent::start(&server, 2048, 4096).await?;
    let td = td.to_string_lossy().into_owned();
    let child = berth(
        &server,
        &["task", "run", "--task-definition", &td, "--wait", "--json"],
    )?;
    let assignment = next_assignment(&mut agent.inbound).await?;
    let task_id = assignment.tasks[0].task_id.clone();
    agent.tx.send(event(1, &task_id, "RUNNING")).await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 1);
    let out = finish(child).await?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["taskId"], task_id.as_str());
    assert_eq!(v["lastStatus"], "RUNNING");
    assert_eq!(v["instanceId"], agent.instance_id.as_str());

    // ls and describe, human and JSON.
    let out = finish(berth(&server, &["task", "ls"])?).await?;
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(table.starts_with("TASK ID"), "{table}");
    assert!(table.contains(&task_id), "{table}");
    let out = finish(berth(&server, &["task", "describe", &task_id, "--json"])?).await?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["family"], "web");
    let out = finish(berth(&server, &["instance", "ls", "--json"])?).await?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v[0]["instanceId"], agent.instance_id.as_str());
    assert_eq!(v[0]["agentConnected"], true);
    assert_eq!(v[0]["remainingResources"]["memory"], 4096 - 512);

    // stop --wait returns once the agent reports STOPPED.
    let child = berth(&server, &["task", "stop", &task_id, "--wait"])?;
    let a = next_assignment(&mut agent.inbound).await?;
    assert_eq!(a.tasks[0].desired_status, "STOPPED");
    agent.tx.send(event(2, &task_id, "STOPPED")).await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 2);
    let out = finish(child).await?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), task_id);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_run_wait_fails_when_the_task_stops_first() -> Result {
    let (_dir, server, td) = setup().await?;
    let mut agent = FakeAgent::start(&server, 2048, 4096).await?;
    let td = td.to_string_lossy().into_owned();
    let child = berth(
        &server,
        &["task", "run", "--task-definition", &td, "--wait"],
    )?;
    let assignment = next_assignment(&mut agent.inbound).await?;
    let task_id = assignment.tasks[0].task_id.clone();
    agent
        .tx
        .send(agent_event(TaskEvent {
            sequence: 1,
            task: Some(TaskState {
                task_id: task_id.clone(),
                last_status: "STOPPED".into(),
                stop_code: "TaskFailedToStart".into(),
                stopped_reason: "CannotPullContainerError: no such image".into(),
                ..TaskState::default()
            }),
            at_ms: 1,
        }))
        .await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 1);
    let out = finish(child).await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).trim(), task_id);
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: task {task_id} stopped: TaskFailedToStart: CannotPullContainerError: no such image"
        )
    );
    server.shutdown().await?;
    Ok(())
}

fn agent_event(e: TaskEvent) -> berth_proto::v1::AgentMessage {
    agent(AgentMsg::Event(e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_clear() -> Result {
    let (dir, server, _td) = setup().await?;

    // Token JSON has the documented keys and the enroll line.
    let out = finish(berth(&server, &["token", "create", "--json"])?).await?;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    for key in [
        "activationId",
        "activationCode",
        "expiresAt",
        "caHash",
        "enrollCommand",
    ] {
        assert!(v[key].is_string(), "{key} in {v}");
    }
    assert!(
        v["enrollCommand"]
            .as_str()
            .is_some_and(|c| c.starts_with("berth-agent enroll --server https://"))
    );

    // No instance: refused with the reason.
    let td = dir.path().join("task.json").to_string_lossy().into_owned();
    let out = finish(berth(&server, &["task", "run", "--task-definition", &td])?).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: no connected ACTIVE instance"),
        "{}",
        text(&out.stderr)
    );

    // Local validation names the file and the JSON path.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"family": "web", "containerDefinitions": [{"name": "web", "image": "x", "memroy": 5}]}"#,
    )?;
    let bad = bad.to_string_lossy().into_owned();
    let out = finish(berth(&server, &["task", "run", "--task-definition", &bad])?).await?;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&bad) && err.contains("containerDefinitions[0].memroy"),
        "{err}"
    );

    let missing = dir
        .path()
        .join("missing.json")
        .to_string_lossy()
        .into_owned();
    let out = finish(berth(
        &server,
        &["task", "run", "--task-definition", &missing],
    )?)
    .await?;
    assert_eq!(out.status.code(), Some(1));
    // A path that does not exist is read as FAMILY[:REV], which it is not.
    let err = text(&out.stderr);
    assert!(
        err.contains(&missing)
            && err.contains("is neither an existing file nor a registered FAMILY[:REV]"),
        "{err}"
    );

    let out = finish(berth(&server, &["task", "describe", "nope"])?).await?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), "error: no task nope");

    // Usage errors exit 2.
    let out = finish(berth(&server, &["task", "run"])?).await?;
    assert_eq!(out.status.code(), Some(2));

    // Unreachable admin API, through BERTH_ADDR.
    let out = finish(
        Command::new(BERTH)
            .env("BERTH_ADDR", "http://127.0.0.1:1")
            .args(["instance", "ls"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    )
    .await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: cannot reach the berth admin API at 127.0.0.1:1: "),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_command_logs_ready_and_stops_on_sigterm() -> Result {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut child = Command::new(BERTH)
        .arg("server")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--heartbeat-interval", "2s"])
        .env("BERTH_SERVER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("BERTH_SERVER_METRICS_LISTEN", "127.0.0.1:0")
        .env("BERTH_SERVER_ECS_API_LISTEN", "127.0.0.1:0")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let ready = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(i) = line.find("berth server ready ") {
                return Ok::<_, std::io::Error>(Some(line[i..].to_owned()));
            }
        }
        Ok(None)
    })
    .await??
    .ok_or("no ready line")?;
    let field = |name: &str| {
        ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    let fleet = field("fleet=").ok_or("no fleet=")?;
    let admin = field("admin=").ok_or("no admin=")?;
    let metrics = field("metrics=").ok_or("no metrics=")?;
    assert!(
        !fleet.ends_with(":0") && !admin.ends_with(":0") && !metrics.ends_with(":0"),
        "{ready}"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("server.json"))?)?;
    assert_eq!(state["fleetAddr"], fleet.as_str());
    assert_eq!(state["adminAddr"], admin.as_str());
    assert_eq!(state["metricsAddr"], metrics.as_str());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&data)?.permissions().mode() & 0o777,
        0o700
    );

    let pid = child.id().ok_or("no pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, child.wait()).await??;
    assert_eq!(status.code(), Some(0));

    // A non-loopback admin address serves TLS with admin certificates
    // only: the plaintext CLI and a CLI without a certificate are refused.
    let tls_data = dir.path().join("tls");
    let child = Command::new(BERTH)
        .arg("server")
        .arg("--data-dir")
        .arg(&tls_data)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--ecs-api-listen", "127.0.0.1:0"])
        .env("BERTH_SERVER_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let state_file = tls_data.join("server.json");
    let state: serde_json::Value = eventually(
        "server.json from a server with a non-loopback admin address",
        async || {
            // Absent until the server is ready.
            Ok(std::fs::read(&state_file)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
        },
    )
    .await?;
    assert_eq!(state["adminTls"], true, "{state}");
    let port = state["adminAddr"]
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .ok_or("no admin port")?;
    let cli = |server: String| {
        Command::new(BERTH)
            .args(["--server", &server, "instance", "ls"])
            .env_remove("BERTH_ADMIN_CERT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    let out = finish(cli(format!("https://127.0.0.1:{port}"))?).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("needs an admin certificate: pass --admin-cert DIR"),
        "{}",
        text(&out.stderr)
    );
    let out = finish(cli(format!("127.0.0.1:{port}"))?).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach the berth admin API")
            && text(&out.stderr).contains("speaks TLS: use https://"),
        "{}",
        text(&out.stderr)
    );
    let pid = child.id().ok_or("no pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success());
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await??;
    assert_eq!(out.status.code(), Some(0));
    // BERTH_SERVER_LOG_FORMAT=json: every log line is a JSON object.
    let log = text(&out.stderr);
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("log line is not JSON ({e}): {line}"))?;
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("berth server ready ")),
        "no ready line among {messages:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certificates_are_listed_and_revoked_by_serial() -> Result {
    let (dir, server, _td) = setup().await?;
    let out_dir = dir.path().join("alice");
    let out_arg = out_dir.to_string_lossy().into_owned();
    let out = finish(berth(
        &server,
        &["admin-cert", "create", "--name", "alice", "--out", &out_arg],
    )?)
    .await?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let said = text(&out.stdout);

    let out = finish(berth(&server, &["admin-cert", "ls", "--json"])?).await?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let serial = listed[0]["serialNumber"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(serial.len(), 32, "{listed}");
    assert!(said.contains(&serial), "create names the serial: {said}");
    assert_eq!(listed[0]["name"], "alice");
    assert_eq!(listed[0]["status"], "VALID");
    assert!(listed[0]["revokedAt"].is_null(), "{listed}");
    // Never key material.
    let key = std::fs::read_to_string(out_dir.join("admin.key"))?;
    let body = key.lines().nth(1).unwrap_or_default();
    assert!(!body.is_empty());
    assert!(!text(&out.stdout).contains(body));
    assert!(!text(&out.stdout).contains("PRIVATE KEY"));

    let out = finish(berth(&server, &["admin-cert", "revoke", &serial])?).await?;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("admin certificate {serial} of alice revoked at ")),
        "{}",
        text(&out.stdout)
    );
    let out = finish(berth(&server, &["admin-cert", "ls", "--json"])?).await?;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(listed[0]["status"], "REVOKED", "{listed}");
    assert!(listed[0]["revokedAt"].is_string(), "{listed}");
    let out = finish(berth(&server, &["admin-cert", "ls"])?).await?;
    let table = text(&out.stdout);
    assert!(table.starts_with("SERIAL"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&serial) && l.contains("REVOKED")),
        "{table}"
    );

    // Twice: says so, the desired state holds.
    let out = finish(berth(&server, &["admin-cert", "revoke", &serial])?).await?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("is already revoked"),
        "{}",
        text(&out.stdout)
    );
    // An unknown serial: exit 1 naming it; not a serial: usage, exit 2.
    let out = finish(berth(&server, &["admin-cert", "revoke", "ABCDEF0123"])?).await?;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no admin certificate with serial number abcdef0123"),
        "{}",
        text(&out.stderr)
    );
    let out = finish(berth(&server, &["admin-cert", "revoke", "zz-top"])?).await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"zz-top\" is not a serial number"),
        "{}",
        text(&out.stderr)
    );
    server.shutdown().await?;
    Ok(())
}
