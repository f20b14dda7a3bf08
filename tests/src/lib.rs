//! End-to-end test harness for berth.
//!
//! # Background
//! The tests in `tests/tests/` run the real `berth` and `berth-agent`
//! binaries as separate processes against the real Docker Engine, the way an
//! operator would: a control plane ([`Server`]), agents enrolled with a
//! one-time activation ([`Agent`]), a loopback image registry ([`Registry`])
//! and a tiny busybox image built locally ([`TestImage`]), since no registry is
//! reachable from the test machines.
//!
//! # Design
//! - Every test makes its own [`RunId`]; everything it creates carries it:
//!   image tags, temporary directories, and (through the agent's instance id)
//!   container labels. Tests share one Docker Engine and run in parallel, so a
//!   test touches only what carries its own ids.
//! - Every resource is an owner that cleans up on `Drop`: processes are
//!   stopped by their pid, containers removed by their `berth.instance-id`
//!   label, image tags removed one by one. Declare them in the order
//!   registry → server → agent so that drop (reverse order) stops the agent
//!   and removes its containers before images and registries go.
//! - No sleeps as synchronisation: [`wait_for`] polls a condition until a
//!   generous deadline and panics with the last state it saw.
//! - Faults are made with real things the test owns: a [`Proxy`] that can
//!   blackhole the agent's link, a private [`Dockerd`] that can be stopped
//!   and started, a [`Tmpfs`] that can be filled; what the control plane
//!   applied is read from its log ([`applied_events`]).
//!
//! # What the harness relies on from the binaries
//! - `berth server --data-dir D --listen 127.0.0.1:0 --admin-listen
//!   127.0.0.1:0 --metrics-listen 127.0.0.1:0 --heartbeat-interval 1s`
//!   writes `D/server.json` (`{"fleetAddr": "127.0.0.1:P", "adminAddr":
//!   "127.0.0.1:P", "metricsAddr": "127.0.0.1:P"}`) once its listeners
//!   serve; it exits on SIGTERM. Every server a test starts passes
//!   `--metrics-listen 127.0.0.1:0` and `--ecs-api-listen 127.0.0.1:0`: the
//!   default ports 7422 and 7423 are one per host.
//! - `berth dev --data-dir D [--run FILE]` writes the same `D/server.json`,
//!   keeps its agent's data in `D/agent`, prints `berth task run` on stdout
//!   and exits 0 on SIGTERM.
//! - The CLI reads the admin address from `BERTH_ADDR`; `berth token create
//!   --json` prints `activationId`, `activationCode`, `expiresAt`, `caHash`.
//! - `berth-agent enroll --server https://F --activation-id I
//!   --activation-code C --ca-hash sha256:H --config FILE`; `berth-agent run
//!   --config FILE`; `berth-agent status --json` finds its config through
//!   `BERTH_AGENT_CONFIG`. The config file holds `data_dir`, `api_listen =
//!   "127.0.0.1:0"` and `container_cleanup_delay = "0s"`; the agent writes
//!   `<data_dir>/agent-api.json` (`{"apiAddr": "127.0.0.1:P", "instanceId":
//!   "i-…"}`) once its local API serves.
//! - The agent connects to the `server` of `<data_dir>/identity.json`
//!   ([`Agent::set_server`]); `BERTH_FAILPOINTS=<point>` makes it abort at a
//!   failpoint ([`Agent::start_with_env`]).
//! - The server logs every agent event it applies, at `info`, as `task event
//!   applied sequence=N last_status=S` inside the spans
//!   `session{instance_id=…}` and `task{task_id=…}` ([`applied_events`]).
//!
//! # Limitations
//! The binaries are not built by the tests: run `cargo build --workspace
//! --bins` first (`scripts/test.sh` does). The registry is Debian's
//! `docker-registry` (`scripts/setup.sh` installs it). The fault tests run
//! as root: [`Dockerd`] needs `dockerd` and `unshare` (util-linux),
//! [`Tmpfs`] needs `mount`. A server under an open-file limit
//! ([`ServerOptions::open_file_limit`]) is started through util-linux
//! `prlimit`.

mod agent;
mod applied;
pub mod capture;
mod check;
mod dev;
mod docker;
mod dockerd;
mod fixture;
mod http;
mod packages;
mod postgres;
mod process;
mod proxy;
mod registry;
mod server;
mod taskdef;
pub mod three;
mod tmpfs;
mod wait;

pub use agent::Agent;
pub use applied::{AppliedEvent, applied_events, assert_every_event_applied_once, statuses_of};
pub use check::{assert_fails, assert_ok, chmod, mode_of};
pub use dev::Dev;
pub use docker::{
    TestImage, containers_of, docker, docker_json, docker_ok, remove_labelled, short_id,
};
pub use dockerd::Dockerd;
pub use fixture::Fleet;
pub use http::http_get;
pub use packages::{Packages, packages, target_dir};
pub use postgres::Postgres;
pub use process::Proc;
pub use proxy::Proxy;
pub use registry::{PushedImage, Registry, RegistryLogin};
pub use server::{Activation, Cli, Server, ServerOptions, read_server_json};
pub use taskdef::{EXITS_ZERO, LONG_RUNNING, Scratch, container_of, task_def};
pub use three::Three;
pub use tmpfs::Tmpfs;
pub use wait::{DEADLINE, Observe, wait_for};

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A random hex id that names everything one test creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    pub fn new() -> RunId {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        RunId(hex[..12].to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A temporary directory whose name carries the run id; removed on drop
    /// unless `BERTH_E2E_KEEP=1`.
    pub fn temp_dir(&self, what: &str) -> tempfile::TempDir {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("berth-e2e-{}-{what}-", self.0))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for {what}: {e}"));
        if std::env::var_os("BERTH_E2E_KEEP").is_some_and(|v| v == "1") {
            dir.disable_cleanup(true);
            eprintln!("BERTH_E2E_KEEP=1: keeping {}", dir.path().display());
        }
        dir
    }
}

impl Default for RunId {
    fn default() -> Self {
        RunId::new()
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the `berth` and `berth-agent` binaries are: `$BERTH_BIN_DIR`, else
/// the target directory this test binary was built into, else
/// `$CARGO_TARGET_DIR/debug`, else `<repo>/target/debug`.
pub fn bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("BERTH_BIN_DIR") {
        // An explicit choice is the only candidate.
        return check_bin_dir(&[PathBuf::from(dir)]);
    }
    // target/debug/deps/<test binary>
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.to_path_buf());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let target = PathBuf::from(target);
        let target = if target.is_absolute() {
            target
        } else {
            repo_root().join(target)
        };
        candidates.push(target.join("debug"));
    }
    candidates.push(repo_root().join("target").join("debug"));
    candidates.dedup();
    check_bin_dir(&candidates)
}

fn check_bin_dir(candidates: &[PathBuf]) -> PathBuf {
    for dir in candidates {
        if dir.join("berth").is_file() && dir.join("berth-agent").is_file() {
            return dir.clone();
        }
    }
    let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "the berth and berth-agent binaries were not found in {}: run `cargo build --workspace --bins` first (or set BERTH_BIN_DIR)",
        searched.join(", ")
    );
}

/// Path of the `berth` binary (control plane and CLI).
pub fn berth_bin() -> PathBuf {
    bin_dir().join("berth")
}

/// Path of the `berth-agent` binary.
pub fn agent_bin() -> PathBuf {
    bin_dir().join("berth-agent")
}

/// A command for one of our binaries with no `BERTH_*` variables inherited
/// from the caller's environment (a developer's `BERTH_ADDR` must not leak
/// into a test).
pub fn clean_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BERTH_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs a command to completion, panicking only when it cannot be started.
pub fn output_of(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(cmd)))
}

/// `program arg arg …`, for messages.
pub fn command_line(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Exit status, stdout and stderr of a finished command, for messages.
pub fn describe_output(out: &Output) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}", out.status);
    let _ = writeln!(
        s,
        "stdout:\n{}",
        String::from_utf8_lossy(&out.stdout).trim_end()
    );
    let _ = write!(
        s,
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
    s
}

/// stdout and stderr together, for checking what a command said.
pub fn said(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The exit code of a finished command (`None` when killed by a signal).
pub fn exit_code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// Parses a command's stdout as JSON, panicking with the whole output when it
/// is not JSON.
pub fn stdout_json(what: &str, out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON ({e})\n{}", describe_output(out)))
}

/// The items of a JSON list answer: either an array, or an object holding
/// the array under `key` (`{"tasks": [...]}`).
pub fn list_of(value: &serde_json::Value, key: &str) -> Vec<serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => items.clone(),
        serde_json::Value::Object(map) => match map.get(key) {
            Some(serde_json::Value::Array(items)) => items.clone(),
            _ => panic!("expected a JSON array or an object with an array `{key}`, got {value}"),
        },
        _ => panic!("expected a JSON array or an object with an array `{key}`, got {value}"),
    }
}

/// A string field of a JSON object, or "" when absent or not a string.
pub fn str_field<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

/// The number of logical CPUs the kernel has online, as the agent counts
/// them (`cpuN` lines of /proc/stat; not limited by affinity or quotas).
pub fn logical_cpus() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat")
        .unwrap_or_else(|e| panic!("cannot read /proc/stat: {e}"));
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64
}

/// The last `lines` lines of a log file, for messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
