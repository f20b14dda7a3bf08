//! An agent host: `berth-agent` with its own config and data dir.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::Duration;

use serde_json::Value;

use crate::{
    Activation, Proc, RunId, Server, agent_bin, clean_command, describe_output, http_get,
    output_of, remove_labelled, stdout_json, str_field, wait_for,
};

/// How long `berth-agent run` gets to write `agent-api.json`.
const READY: Duration = Duration::from_secs(60);

/// One agent host. The config file `<tmp>/agent.toml` holds
/// `data_dir = "<tmp>/data"`, `api_listen = "127.0.0.1:0"` and
/// `container_cleanup_delay = "0s"`.
///
/// Dropping it stops the agent (SIGTERM, then SIGKILL), then removes every
/// container and volume labelled `berth.instance-id=<its instance id>`.
pub struct Agent {
    // Field order is drop order: the process before its directory.
    proc: Option<Proc>,
    instance_id: Option<String>,
    api_addr: Option<String>,
    activation: Option<Activation>,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Agent {
    /// A host that is not enrolled yet: a temporary directory with a config
    /// file and no process.
    pub fn new(run: &RunId) -> Agent {
        let dir = run.temp_dir("agent");
        let data_dir = dir.path().join("data");
        let config = dir.path().join("agent.toml");
        let text = format!(
            "# written by the berth e2e harness\n\
             data_dir = {}\n\
             api_listen = \"127.0.0.1:0\"\n\
             container_cleanup_delay = \"0s\"\n",
            toml_string(&data_dir.to_string_lossy())
        );
        std::fs::write(&config, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = dir.path().join("agent.log");
        Agent {
            proc: None,
            instance_id: None,
            api_addr: None,
            activation: None,
            config,
            data_dir,
            log,
            dir,
        }
    }

    /// Appends `lines` (TOML) to the agent's config, e.g. a policy switch
    /// such as `allow_host_network = true`; restarts the agent when it runs.
    pub fn configure(&mut self, lines: &str) {
        let mut text = std::fs::read_to_string(&self.config)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.config.display()));
        text.push_str(lines);
        text.push('\n');
        std::fs::write(&self.config, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.config.display()));
        if self.proc.is_some() {
            self.restart();
        }
    }

    /// A new host enrolled into `server` with a fresh activation (asserts
    /// `berth-agent enroll` exits 0). Not started: call [`Agent::start`].
    pub fn enroll(server: &Server, run: &RunId) -> Agent {
        let activation = server.token();
        let mut agent = Agent::new(run);
        let out = agent.enroll_with(server, &activation, &[]);
        assert!(
            out.status.success(),
            "berth-agent enroll failed\n{}",
            describe_output(&out)
        );
        agent
    }

    /// Runs `berth-agent enroll --server https://<fleet> --activation-id …
    /// --activation-code … --ca-hash sha256:<hex> --config <tmp>/agent.toml
    /// EXTRA…` and returns its output, whatever it is (an activation with
    /// an empty `ca_hash` gives no `--ca-hash`: pass
    /// `--insecure-skip-ca-pin` in EXTRA, or see it refused). Remembers the
    /// activation when the command succeeds.
    pub fn enroll_with(
        &mut self,
        server: &Server,
        activation: &Activation,
        extra: &[&str],
    ) -> Output {
        self.enroll_at(&server.fleet_url(), activation, extra)
    }

    /// [`Agent::enroll_with`] against the fleet URL of any control plane.
    pub fn enroll_at(
        &mut self,
        fleet_url: &str,
        activation: &Activation,
        extra: &[&str],
    ) -> Output {
        let mut cmd = clean_command(&agent_bin());
        cmd.args([
            "enroll",
            "--server",
            fleet_url,
            "--activation-id",
            &activation.id,
            "--activation-code",
            &activation.code,
        ]);
        if !activation.ca_hash.is_empty() {
            cmd.args(["--ca-hash", &activation.ca_hash_arg()]);
        }
        cmd.arg("--config").arg(&self.config).args(extra);
        let out = output_of(&mut cmd);
        if out.status.success() && self.activation.is_none() {
            self.activation = Some(activation.clone());
        }
        out
    }

    /// The activation this host enrolled with.
    pub fn activation(&self) -> &Activation {
        self.activation
            .as_ref()
            .expect("this agent host has not enrolled")
    }

    /// Spawns `berth-agent run --config <tmp>/agent.toml` (output appended to
    /// `<tmp>/agent.log`) and waits for `<data_dir>/agent-api.json`
    /// (`{"apiAddr": "127.0.0.1:PORT", "instanceId": "i-…"}`).
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// [`Agent::start`] with extra environment variables for this run only,
    /// e.g. `[("BERTH_FAILPOINTS", "after-create")]`. A later
    /// [`Agent::start`] runs without them.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.proc.is_none(), "the agent is already running");
        let ready = self.data_dir.join("agent-api.json");
        // A file left by a previous run would name a port nobody listens on.
        match std::fs::remove_file(&ready) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", ready.display()),
        }
        let mut cmd = clean_command(&agent_bin());
        cmd.arg("run").arg("--config").arg(&self.config);
        cmd.envs(env.iter().copied());
        let mut proc = Proc::spawn("berth-agent", &mut cmd, &self.log);
        let (api_addr, instance_id) = wait_for(
            &format!("berth-agent to write {}", ready.display()),
            READY,
            || {
                proc.assert_running("starting");
                read_agent_api_json(&ready)
            },
        );
        if let Some(known) = &self.instance_id {
            assert_eq!(
                known, &instance_id,
                "the agent came back with another instance id"
            );
        }
        self.proc = Some(proc);
        self.api_addr = Some(api_addr);
        self.instance_id = Some(instance_id);
    }

    /// [`Agent::start`], then waits until the control plane shows the
    /// instance connected.
    pub fn start_connected(&mut self, server: &Server) {
        self.start();
        server.wait_connected(self.instance_id());
    }

    /// The instance id (known once the agent has started).
    pub fn instance_id(&self) -> &str {
        self.instance_id
            .as_deref()
            .expect("the instance id is known once the agent has started")
    }

    /// The local API address, `127.0.0.1:PORT`.
    pub fn api_addr(&self) -> &str {
        self.api_addr
            .as_deref()
            .expect("the API address is known once the agent has started")
    }

    /// GETs `path` from the local API: status code and body.
    pub fn api_request(&self, path: &str) -> (u16, String) {
        http_get(self.api_addr(), path).unwrap_or_else(|e| {
            panic!("agent local API: {e}\nagent log tail:\n{}", self.log_tail())
        })
    }

    /// GETs `path` from the local API, asserts 200 and parses the JSON body.
    pub fn api_get(&self, path: &str) -> Value {
        let (status, body) = self.api_request(path);
        assert_eq!(
            status, 200,
            "GET {path} from the agent's local API answered {status}: {body}"
        );
        serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("GET {path} from the agent's local API is not JSON ({e}): {body}")
        })
    }

    /// Runs `berth-agent ARGS…` with `BERTH_AGENT_CONFIG=<tmp>/agent.toml`.
    pub fn agent_cli(&self, args: &[&str]) -> Output {
        output_of(
            clean_command(&agent_bin())
                .args(args)
                .env("BERTH_AGENT_CONFIG", &self.config),
        )
    }

    /// `berth-agent status --json` (must exit 0).
    pub fn status_json(&self) -> Value {
        let out = self.agent_cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "`berth-agent status --json` failed\n{}",
            describe_output(&out)
        );
        stdout_json("berth-agent status --json", &out)
    }

    /// Kills the agent with SIGKILL (a crash); its containers keep running.
    pub fn kill(&mut self) -> ExitStatus {
        let mut proc = self.proc.take().expect("the agent is not running");
        let status = proc.kill();
        drop(proc);
        status
    }

    /// Stops the agent with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut proc = self.proc.take().expect("the agent is not running");
        let status = proc.terminate();
        drop(proc);
        status
    }

    /// Stops the agent (SIGTERM) and starts it again with the same config.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "berth-agent exited with {status} on SIGTERM; log tail:\n{}",
            self.log_tail()
        );
        self.start();
    }

    /// `Some(status)` once the agent process has exited by itself (a
    /// failpoint abort, a crash); the process is then forgotten, so
    /// [`Agent::start`] can run the agent again. `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.proc.as_mut()?.exited()?;
        drop(self.proc.take());
        Some(status)
    }

    /// Points the enrolled identity at another fleet address of the same
    /// control plane (a proxy in front of it): rewrites the `server` field
    /// of `<data_dir>/identity.json`, which the agent connects to. Takes
    /// effect at the next start.
    pub fn set_server(&self, url: &str) {
        let path = self.data_dir.join("identity.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        assert!(
            json.get("server").is_some(),
            "{} has no server field: {text}",
            path.display()
        );
        json["server"] = Value::String(url.to_string());
        std::fs::write(&path, json.to_string())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Moves the agent's data (identity, state; regular files only) to
    /// `dir` and points the config's `data_dir` at it, e.g. a small
    /// filesystem the test can fill. The agent must not be running.
    pub fn set_data_dir(&mut self, dir: &Path) {
        assert!(self.proc.is_none(), "stop the agent before moving its data");
        for entry in std::fs::read_dir(&self.data_dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", self.data_dir.display()))
            .filter_map(Result::ok)
        {
            let from = entry.path();
            if !from.is_file() {
                continue;
            }
            let to = dir.join(entry.file_name());
            std::fs::copy(&from, &to).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", from.display(), to.display())
            });
        }
        let text = std::fs::read_to_string(&self.config)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.config.display()));
        let line = format!("data_dir = {}", toml_string(&dir.to_string_lossy()));
        let mut replaced = false;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("data_dir") {
                    replaced = true;
                    line.clone()
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(replaced, "{} has no data_dir line", self.config.display());
        std::fs::write(&self.config, lines.join("\n") + "\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.config.display()));
        self.data_dir = dir.to_path_buf();
    }

    /// Whether the agent process is running (started and not exited).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self) -> String {
        crate::log_tail(&self.log, 80)
    }

    /// The instance id for cleanup: known from a start, or read from what the
    /// agent left in its data dir.
    fn instance_id_for_cleanup(&self) -> Option<String> {
        if let Some(id) = &self.instance_id {
            return Some(id.clone());
        }
        if let Ok((_, id)) = read_agent_api_json(&self.data_dir.join("agent-api.json")) {
            return Some(id);
        }
        let text = std::fs::read_to_string(self.data_dir.join("identity.json")).ok()?;
        let json: Value = serde_json::from_str(&text).ok()?;
        let id = str_field(&json, "instanceId");
        (!id.is_empty()).then(|| id.to_string())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Stop the process first, so it does not recreate what we remove.
        drop(self.proc.take());
        // Its key (the last one, after any renewal) must be in no log.
        crate::capture::record_private_key("agent.key", &self.data_dir().join("agent.key"));
        if let Some(id) = self.instance_id_for_cleanup() {
            remove_labelled(&format!("berth.instance-id={id}"));
        }
    }
}

/// `<data_dir>/agent-api.json`: `(apiAddr, instanceId)`.
pub(crate) fn read_agent_api_json(path: &Path) -> Result<(String, String), String> {
    crate::server::read_ready_json(path, "apiAddr", "instanceId")
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
