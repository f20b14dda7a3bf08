//! A control plane and agents for a benchmark, built from the e2e harness.
//!
//! [`BenchServer`] is the e2e harness's `Server` with the server's own
//! defaults: the harness starts every server with a 1 s heartbeat (fast
//! tests), while footprint and fleet figures must be taken at the default
//! interval (10 s). Agents are the harness's [`Agent`], enrolled against a
//! [`BenchServer`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_e2e::{
    Agent, Cli, DEADLINE, Postgres, Proc, RunId, berth_bin, clean_command, describe_output,
    read_server_json, wait_for,
};
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::{ListTasksRequest, RunTaskRequest, StopTaskRequest, TaskState};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::StoreKind;

/// How long a server gets to write `server.json`.
const SERVER_READY: Duration = Duration::from_secs(60);

/// A busybox command that idles without waking up (no fork per second as
/// with a `sleep 1` loop) and exits 0 on SIGTERM.
pub const IDLE: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 2147483647 & wait"];

/// Agent settings of every benchmark: the image is built locally and
/// cached, so the agent must not try a registry first (ECS'
/// `ECS_IMAGE_PULL_BEHAVIOR=prefer-cached`); the Docker baseline does not
/// pull either.
pub const AGENT_CONFIG: &str = "pull_policy = \"prefer-cached\"";

/// `berth server` on loopback ports chosen by the kernel, with the
/// server's default heartbeat interval unless told otherwise.
pub struct BenchServer {
    // Field order is drop order: the process before its directory.
    proc: Proc,
    fleet_addr: String,
    admin_addr: String,
    heartbeat: Option<String>,
    data_dir: PathBuf,
    restarts: u32,
    /// `--store` of the server, kept across respawns.
    store: Option<String>,
    dir: tempfile::TempDir,
    /// The PostgreSQL server of the store, if any: stopped after the
    /// server process.
    _postgres: Option<Postgres>,
}

impl BenchServer {
    /// Starts `berth server` and waits for its `server.json`. It inherits
    /// this process's `RLIMIT_NOFILE` (see [`crate::procfs::raise_nofile`]).
    pub fn start(run: &RunId, heartbeat: Option<&str>) -> anyhow::Result<BenchServer> {
        BenchServer::start_on(run, heartbeat, StoreKind::Sqlite)
    }

    /// [`BenchServer::start`] with its store on `store` (for PostgreSQL a
    /// throwaway server with one database, started here).
    pub fn start_on(
        run: &RunId,
        heartbeat: Option<&str>,
        store: StoreKind,
    ) -> anyhow::Result<BenchServer> {
        let postgres = (store == StoreKind::Postgres).then(|| Postgres::start(run));
        let store = postgres.as_ref().map(|p| p.create_database("berth"));
        let dir = run.temp_dir("bench-server");
        let data_dir = dir.path().join("data");
        // 0700: the server refuses a data dir open to group or others.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let heartbeat = heartbeat.map(str::to_string);
        let (proc, fleet_addr, admin_addr) = spawn(
            &data_dir,
            &dir.path().join("server.log"),
            "127.0.0.1:0",
            "127.0.0.1:0",
            heartbeat.as_deref(),
            store.as_deref(),
        )?;
        Ok(BenchServer {
            proc,
            fleet_addr,
            admin_addr,
            heartbeat,
            data_dir,
            restarts: 0,
            store,
            dir,
            _postgres: postgres,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn fleet_url(&self) -> String {
        format!("https://{}", self.fleet_addr)
    }

    pub fn admin_addr(&self) -> &str {
        &self.admin_addr
    }

    /// The operator CLI pointed at this server.
    pub fn cli(&self) -> Cli {
        Cli::new(&self.admin_addr)
    }

    pub fn log_path(&self) -> PathBuf {
        match self.restarts {
            0 => self.dir.path().join("server.log"),
            n => self.dir.path().join(format!("server-{n}.log")),
        }
    }

    /// A gRPC client of the admin API (plaintext on loopback).
    pub async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        let channel = Channel::from_shared(format!("http://{}", self.admin_addr))?
            .connect()
            .await
            .with_context(|| format!("cannot connect to the admin API at {}", self.admin_addr))?;
        Ok(AdminClient::new(channel).max_decoding_message_size(256 * 1024 * 1024))
    }

    /// SIGKILL: a control-plane crash.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same data dir and addresses (after
    /// [`BenchServer::kill`]) and waits until it serves.
    pub fn respawn(&mut self) -> anyhow::Result<()> {
        self.proc.kill();
        self.restarts += 1;
        let (proc, _, _) = spawn(
            &self.data_dir,
            &self.log_path(),
            &self.fleet_addr,
            &self.admin_addr,
            self.heartbeat.as_deref(),
            self.store.as_deref(),
        )?;
        self.proc = proc;
        Ok(())
    }

    /// Fails with the log tail when the server has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.proc.exited() {
            bail!(
                "berth server exited ({status}); log tail:\n{}",
                berth_e2e::log_tail(&self.log_path(), 40)
            );
        }
        Ok(())
    }
}

fn spawn(
    data_dir: &std::path::Path,
    log: &std::path::Path,
    listen: &str,
    admin: &str,
    heartbeat: Option<&str>,
    store: Option<&str>,
) -> anyhow::Result<(Proc, String, String)> {
    let ready = data_dir.join("server.json");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = clean_command(&berth_bin());
    cmd.arg("server").arg("--data-dir").arg(data_dir).args([
        "--listen",
        listen,
        "--admin-listen",
        admin,
        "--metrics-listen",
        "127.0.0.1:0",
        "--ecs-api-listen",
        "127.0.0.1:0",
        // Every simulated host connects from the same loopback address:
        // lift the per-address cap (256 by default) and the total one
        // above the largest fleet measured.
        "--max-connections-per-address",
        "20000",
        "--max-connections",
        "20000",
    ]);
    if let Some(h) = heartbeat {
        cmd.args(["--heartbeat-interval", h]);
    }
    if let Some(store) = store {
        cmd.args(["--store", store]);
    }
    let mut proc = Proc::spawn("berth server", &mut cmd, log);
    let (fleet, admin) = wait_for(
        &format!("berth server to write {}", ready.display()),
        SERVER_READY,
        || {
            proc.assert_running("starting");
            read_server_json(&ready)
        },
    );
    Ok((proc, fleet, admin))
}

/// A new agent host enrolled into `server` with `berth-agent enroll`, its
/// config extended by `extra` (TOML lines) and [`AGENT_CONFIG`], started,
/// and connected (its local API says so).
pub fn enrolled_agent(server: &BenchServer, run: &RunId, extra: &str) -> anyhow::Result<Agent> {
    let mut agent = Agent::new(run);
    let activation = server.cli().token();
    let out = agent.enroll_at(&server.fleet_url(), &activation, &[]);
    ensure!(
        out.status.success(),
        "berth-agent enroll failed\n{}",
        describe_output(&out)
    );
    agent.configure(&format!("{AGENT_CONFIG}\n{extra}"));
    agent.start();
    wait_for("the agent's session to connect", DEADLINE, || {
        let meta = agent.api_get("/v1/metadata");
        (meta["connected"] == json!(true))
            .then_some(())
            .ok_or_else(|| format!("metadata: {meta}"))
    });
    Ok(agent)
}

/// The JSON of a task definition of `family` with one essential container
/// `app` of the test image running `command`, plus `extra` fields merged
/// into the container definition.
pub fn one_container_def(image: &str, family: &str, command: &[&str], extra: Value) -> String {
    let mut container = json!({
        "name": "app",
        "command": command,
        "essential": true,
        "stopTimeout": 5,
    });
    if let (Value::Object(c), Value::Object(e)) = (&mut container, extra) {
        c.extend(e);
    }
    berth_e2e::task_def(image, family, json!([container]))
}

/// Milliseconds since the Unix epoch, as a float (the protocol's clock).
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// `RunTask` of `def` on `instance`; returns the task id.
pub async fn run_task(
    admin: &mut AdminClient<Channel>,
    def: &str,
    instance: &str,
) -> anyhow::Result<String> {
    let task = admin
        .run_task(RunTaskRequest {
            task_definition_json: def.to_string(),
            instance_id: instance.to_string(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("RunTask on {instance}"))?
        .into_inner();
    let id = task
        .tasks
        .into_iter()
        .next()
        .and_then(|t| t.state)
        .map(|s| s.task_id)
        .unwrap_or_default();
    ensure!(!id.is_empty(), "RunTask answered a task without an id");
    Ok(id)
}

/// The control plane's view of the tasks of `instance`.
pub async fn tasks_of(
    admin: &mut AdminClient<Channel>,
    instance: &str,
) -> anyhow::Result<Vec<TaskState>> {
    let list = admin
        .list_tasks(ListTasksRequest {
            instance_id: instance.to_string(),
            ..Default::default()
        })
        .await
        .context("ListTasks")?
        .into_inner();
    Ok(list.tasks.into_iter().filter_map(|t| t.state).collect())
}

/// Waits until the control plane shows every task of `ids` on `instance`
/// with `lastStatus` `status`; fails as soon as one of them is STOPPED
/// when another status is awaited. Returns their states and when the
/// condition was first seen.
pub async fn wait_tasks_status(
    admin: &mut AdminClient<Channel>,
    instance: &str,
    ids: &[String],
    status: &str,
    deadline: Duration,
) -> anyhow::Result<(Vec<TaskState>, Instant)> {
    let start = Instant::now();
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    loop {
        let tasks: Vec<TaskState> = tasks_of(admin, instance)
            .await?
            .into_iter()
            .filter(|t| wanted.contains(t.task_id.as_str()))
            .collect();
        if status != "STOPPED"
            && let Some(t) = tasks.iter().find(|t| t.last_status == "STOPPED")
        {
            bail!(
                "task {} stopped while waiting for {status}: {} {}",
                t.task_id,
                t.stop_code,
                t.stopped_reason
            );
        }
        let done = tasks.iter().filter(|t| t.last_status == status).count();
        if done == ids.len() {
            return Ok((tasks, Instant::now()));
        }
        if start.elapsed() > deadline {
            bail!(
                "after {deadline:?}, {done} of {} tasks on {instance} are {status}",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the tasks `ids` and waits until the control plane shows them
/// STOPPED and no container of `instance` is left (the agents of the
/// benchmarks remove stopped containers at once).
pub async fn stop_tasks(
    admin: &mut AdminClient<Channel>,
    instance: &str,
    ids: &[String],
) -> anyhow::Result<()> {
    for id in ids {
        admin
            .stop_task(StopTaskRequest {
                task_id: id.clone(),
                reason: "benchmark done".into(),
            })
            .await
            .with_context(|| format!("StopTask {id}"))?;
    }
    wait_tasks_status(admin, instance, ids, "STOPPED", DEADLINE * 2).await?;
    let start = Instant::now();
    loop {
        let left = tokio::task::spawn_blocking({
            let instance = instance.to_string();
            move || berth_e2e::containers_of(&instance).len()
        })
        .await?;
        if left == 0 {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("{left} containers of {instance} are left after their tasks stopped");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
