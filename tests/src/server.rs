//! The control plane (`berth server`) and the operator CLI.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::{
    DEADLINE, Proc, RunId, berth_bin, clean_command, describe_output, list_of, output_of,
    stdout_json, str_field, wait_for,
};

/// How long a control plane gets to write `server.json`.
const READY: Duration = Duration::from_secs(30);

/// The addresses a control plane writes to `<data-dir>/server.json` once it
/// serves: `{"fleetAddr": "127.0.0.1:PORT", "adminAddr": "127.0.0.1:PORT"}`.
pub fn read_server_json(path: &Path) -> Result<(String, String), String> {
    read_ready_json(path, "fleetAddr", "adminAddr")
}

/// Two non-empty string fields of a JSON file a process writes once it is
/// ready; `Err` says what is missing so far (the file, its JSON, a field).
pub(crate) fn read_ready_json(
    path: &Path,
    first: &str,
    second: &str,
) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{} not readable yet: {e}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON (yet?): {e}: {text:?}", path.display()))?;
    let (a, b) = (str_field(&json, first), str_field(&json, second));
    if a.is_empty() || b.is_empty() {
        return Err(format!(
            "{} lacks {first} or {second}: {text}",
            path.display()
        ));
    }
    Ok((a.to_string(), b.to_string()))
}

/// The metrics address in `server.json`: `{"metricsAddr": "127.0.0.1:PORT"}`.
pub(crate) fn read_metrics_addr(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{} not readable: {e}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}: {text:?}", path.display()))?;
    let addr = str_field(&json, "metricsAddr");
    if addr.is_empty() {
        return Err(format!("{} lacks metricsAddr: {text}", path.display()));
    }
    Ok(addr.to_string())
}

/// The operator CLI pointed at one control plane's admin address.
#[derive(Debug, Clone)]
pub struct Cli {
    admin_addr: String,
}

impl Cli {
    pub fn new(admin_addr: &str) -> Cli {
        Cli {
            admin_addr: admin_addr.to_string(),
        }
    }

    pub fn admin_addr(&self) -> &str {
        &self.admin_addr
    }

    /// Runs `berth ARGS…` with `BERTH_ADDR=<admin address>`.
    pub fn run(&self, args: &[&str]) -> Output {
        output_of(
            clean_command(&berth_bin())
                .args(args)
                .env("BERTH_ADDR", &self.admin_addr),
        )
    }

    /// Runs `berth ARGS…`, asserts it exits 0 (printing its stderr
    /// otherwise) and parses its stdout as JSON.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`berth {}` failed\n{}",
            args.join(" "),
            describe_output(&out)
        );
        stdout_json(&format!("berth {}", args.join(" ")), &out)
    }

    /// A one-time activation from `berth token create --json`.
    pub fn token(&self) -> Activation {
        let json = self.json(&["token", "create", "--json"]);
        let field = |key: &str| {
            let value = str_field(&json, key);
            assert!(
                !value.is_empty(),
                "`berth token create --json` has no string `{key}`: {json}"
            );
            value.to_string()
        };
        crate::capture::record_secret("activation code", &field("activationCode"));
        Activation {
            id: field("activationId"),
            code: field("activationCode"),
            ca_hash: field("caHash"),
        }
    }

    /// `berth instance ls --json` (an array, or an object with `instances`).
    pub fn instances(&self) -> Vec<Value> {
        list_of(&self.json(&["instance", "ls", "--json"]), "instances")
    }

    /// The instance with `instance_id` from `berth instance ls --json`.
    pub fn instance(&self, instance_id: &str) -> Option<Value> {
        self.instances()
            .into_iter()
            .find(|i| str_field(i, "instanceId") == instance_id)
    }

    /// Waits until `berth instance ls` shows the instance with
    /// `agentConnected: true`; returns it.
    pub fn wait_connected(&self, instance_id: &str) -> Value {
        wait_for(
            &format!("instance {instance_id} to show agentConnected: true"),
            DEADLINE,
            || match self.instance(instance_id) {
                Some(i) if i.get("agentConnected") == Some(&Value::Bool(true)) => Ok(i),
                Some(i) => Err(format!("instance: {i}")),
                None => Err(format!("{instance_id} not in `berth instance ls`")),
            },
        )
    }

    /// Waits until `berth instance ls` shows the instance with
    /// `agentConnected: false`; returns it.
    pub fn wait_disconnected(&self, instance_id: &str) -> Value {
        wait_for(
            &format!("instance {instance_id} to show agentConnected: false"),
            DEADLINE,
            || match self.instance(instance_id) {
                Some(i) if i.get("agentConnected") == Some(&Value::Bool(false)) => Ok(i),
                Some(i) => Err(format!("instance: {i}")),
                None => Err(format!("{instance_id} not in `berth instance ls`")),
            },
        )
    }

    /// `berth task ls --json` (an array, or an object with `tasks`).
    pub fn tasks(&self) -> Vec<Value> {
        list_of(&self.json(&["task", "ls", "--json"]), "tasks")
    }

    /// `berth task describe ID --json`.
    pub fn task(&self, task_id: &str) -> Value {
        self.json(&["task", "describe", task_id, "--json"])
    }

    /// Polls `berth task describe` until `done` accepts the task; returns it.
    /// The panic on timeout shows the last task seen.
    pub fn wait_task(&self, task_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("task {task_id}: {what}"), DEADLINE, || {
            let task = self.task(task_id);
            if done(&task) {
                Ok(task)
            } else {
                Err(format!("task: {task}"))
            }
        })
    }

    /// Waits until the task has stopped with `TaskFailedToStart`; returns it
    /// and its reasons (the task's `stoppedReason` and each container's
    /// `reason`), lower case, to look for the cause in.
    pub fn wait_failed_to_start(&self, task_id: &str) -> (Value, String) {
        let task = self.wait_task_status(task_id, "STOPPED");
        assert_eq!(
            str_field(&task, "stopCode"),
            "TaskFailedToStart",
            "task: {task}"
        );
        let mut reasons = str_field(&task, "stoppedReason").to_lowercase();
        for c in task["containers"].as_array().into_iter().flatten() {
            reasons.push(' ');
            reasons.push_str(&str_field(c, "reason").to_lowercase());
        }
        (task, reasons)
    }

    /// Waits until the task's `lastStatus` is `status`.
    pub fn wait_task_status(&self, task_id: &str, status: &str) -> Value {
        self.wait_task(task_id, &format!("lastStatus {status}"), |t| {
            str_field(t, "lastStatus") == status
        })
    }
}

/// A one-time activation: id, code and the fleet CA's SHA-256 hash.
#[derive(Debug, Clone)]
pub struct Activation {
    pub id: String,
    pub code: String,
    /// As the server prints it (with or without a `sha256:` prefix).
    pub ca_hash: String,
}

impl Activation {
    /// `sha256:<hex>`, the form `berth-agent enroll --ca-hash` takes.
    pub fn ca_hash_arg(&self) -> String {
        if self.ca_hash.starts_with("sha256:") {
            self.ca_hash.clone()
        } else {
            format!("sha256:{}", self.ca_hash)
        }
    }
}

/// A running `berth server` on loopback ports chosen by the kernel, with its
/// own data dir. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Server {
    // Field order is drop order: the process before its directory.
    proc: Proc,
    fleet_addr: String,
    metrics_addr: String,
    cli: Cli,
    data_dir: PathBuf,
    restarts: u32,
    store: Option<String>,
    dir: tempfile::TempDir,
}

/// What [`Server::start_with`] adds to the harness's fixed command line.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Extra `berth server` arguments, after the harness's own.
    pub args: Vec<String>,
    /// Run the server under this open-file limit (soft and hard), through
    /// util-linux `prlimit`.
    pub open_file_limit: Option<u64>,
    /// `--store URL` (e.g. a [`crate::Postgres`] database); kept across
    /// restarts. `None`: the data dir's SQLite file.
    pub store: Option<String>,
}

impl ServerOptions {
    /// Options with these extra arguments.
    pub fn args(args: &[&str]) -> ServerOptions {
        ServerOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            open_file_limit: None,
            store: None,
        }
    }
}

impl Server {
    /// Starts `berth server --data-dir <tmp> --listen 127.0.0.1:0
    /// --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
    /// --ecs-api-listen 127.0.0.1:0 --heartbeat-interval 1s` and waits for its `server.json`.
    pub fn start(run: &RunId) -> Server {
        Server::start_with(run, &ServerOptions::default())
    }

    /// [`Server::start`] with extra arguments and limits. A restart
    /// ([`Server::restart`]) runs without them.
    pub fn start_with(run: &RunId, options: &ServerOptions) -> Server {
        let dir = run.temp_dir("server");
        let data_dir = dir.path().join("data");
        // 0700: the server refuses a data dir open to group or others.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let log = dir.path().join("server.log");
        let mut cmd = match options.open_file_limit {
            // prlimit sets its own limits, then executes the server: the pid
            // is the server's.
            Some(n) => {
                let mut cmd = clean_command(Path::new("prlimit"));
                cmd.arg(format!("--nofile={n}:{n}"))
                    .arg("--")
                    .arg(berth_bin());
                cmd
            }
            None => clean_command(&berth_bin()),
        };
        cmd.arg("server").arg("--data-dir").arg(&data_dir).args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--ecs-api-listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "1s",
        ]);
        if let Some(store) = &options.store {
            cmd.args(["--store", store]);
        }
        cmd.args(&options.args);
        let mut proc = Proc::spawn("berth server", &mut cmd, &log);
        let ready = data_dir.join("server.json");
        let (fleet_addr, admin_addr) = wait_for(
            &format!("berth server to write {}", ready.display()),
            READY,
            || {
                proc.assert_running("starting");
                read_server_json(&ready)
            },
        );
        let metrics_addr = read_metrics_addr(&ready).unwrap_or_else(|e| panic!("{e}"));
        Server {
            proc,
            fleet_addr,
            metrics_addr,
            cli: Cli::new(&admin_addr),
            data_dir,
            restarts: 0,
            store: options.store.clone(),
            dir,
        }
    }

    /// The fleet (agent) API address, `127.0.0.1:PORT`.
    pub fn fleet_addr(&self) -> &str {
        &self.fleet_addr
    }

    /// The fleet URL agents enroll with: `https://127.0.0.1:PORT`.
    pub fn fleet_url(&self) -> String {
        format!("https://{}", self.fleet_addr)
    }

    /// The admin (CLI) address, `127.0.0.1:PORT`.
    pub fn admin_addr(&self) -> &str {
        self.cli.admin_addr()
    }

    /// The metrics (`GET /metrics`) address, `127.0.0.1:PORT`.
    pub fn metrics_addr(&self) -> &str {
        &self.metrics_addr
    }

    /// `GET /metrics` of the server; panics unless it answers 200.
    pub fn scrape_metrics(&self) -> String {
        match crate::http_get(&self.metrics_addr, "/metrics") {
            Ok((200, body)) => body,
            Ok((status, body)) => {
                panic!(
                    "GET http://{}/metrics: HTTP {status}: {body}",
                    self.metrics_addr
                )
            }
            Err(e) => panic!("GET http://{}/metrics: {e}", self.metrics_addr),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server process's pid (for /proc/PID).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        self.proc.log_path()
    }

    /// The CLI pointed at this server (also reachable through `Deref`).
    pub fn client(&self) -> &Cli {
        &self.cli
    }

    /// Runs `berth ARGS…` against this server (`BERTH_ADDR` = admin address).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli.run(args)
    }

    /// Runs `berth ARGS…` against this server, asserts exit 0, parses stdout.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        self.cli.json(args)
    }

    /// A one-time activation from `berth token create --json`.
    pub fn token(&self) -> Activation {
        self.cli.token()
    }

    /// Kills the server (SIGKILL): a control-plane crash or outage.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Starts the server again on the same data dir and the same addresses
    /// (agents keep their configured fleet URL), and waits until it is ready.
    pub fn restart(&mut self) {
        self.proc.kill();
        let ready = self.data_dir.join("server.json");
        let _ = std::fs::remove_file(&ready);
        self.restarts += 1;
        let log = self
            .dir
            .path()
            .join(format!("server-{}.log", self.restarts));
        let mut cmd = clean_command(&berth_bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.fleet_addr])
            .args(["--admin-listen", self.cli.admin_addr()])
            .args(["--metrics-listen", &self.metrics_addr])
            .args(["--ecs-api-listen", "127.0.0.1:0"])
            .args(["--heartbeat-interval", "1s"]);
        if let Some(store) = &self.store {
            cmd.args(["--store", store]);
        }
        let mut proc = Proc::spawn("berth server", &mut cmd, &log);
        wait_for(
            &format!("restarted berth server to write {}", ready.display()),
            READY,
            || {
                proc.assert_running("restarting");
                read_server_json(&ready)
            },
        );
        self.proc = proc;
    }

    /// The server's log files, oldest first: `server.log`, then one
    /// `server-N.log` per [`Server::restart`].
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.dir.path().join("server.log")];
        paths.extend((1..=self.restarts).map(|n| self.dir.path().join(format!("server-{n}.log"))));
        paths
    }

    /// Panics with the log tail when the server has exited.
    pub fn assert_running(&mut self) {
        self.proc.assert_running("the test ran");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        crate::capture::record_private_key("ca.key", &self.data_dir.join("ca.key"));
    }
}

impl std::ops::Deref for Server {
    type Target = Cli;

    fn deref(&self) -> &Cli {
        &self.cli
    }
}
