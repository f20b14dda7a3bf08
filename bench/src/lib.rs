//! berth-bench: berth side by side with raw Docker, in the same run.
//!
//! # Background
//! A node agent is overhead on every host of a fleet: its memory, its CPU
//! and the latency it adds between "run this" and "it runs". Issue 7 sets
//! the targets; `BENCHMARKS.md` at the repository root has the method and
//! the latest figures. The machines are shared and noisy, so every figure
//! that can be a ratio is one, against a baseline measured in the same run
//! (raw Docker through bollard, Docker's own restart policy, …).
//!
//! # Design
//! - Eight scenarios ([`Scenario`]), each a function that sets up what it
//!   needs with the e2e harness (`berth-e2e`: the real `berth` and
//!   `berth-agent` binaries as processes, the locally built busybox image,
//!   run ids, cleanup on drop), measures, checks its own correctness (all
//!   tasks really running, all events really applied) and returns
//!   [`report::Metric`]s. A failed check is an error: the scenario is
//!   reported FAILED and the run exits non-zero.
//! - Fleet-scale, replay and service scenarios use simulated agents ([`sim`]): many
//!   sessions in this process with real identities, real mutual TLS and the
//!   real protocol, built on the agent's own TLS and CSR code.
//! - Everything created carries the run id: containers through the agent's
//!   instance label (or `berth.bench-run` for the baseline), images by tag,
//!   temporary directories by name; all of it is removed on drop, also
//!   when a scenario fails.
//!
//! # Limitations
//! - Absolute figures depend on the machine and its load; compare ratios.
//! - The binaries are not built here: the `berth-bench` binary builds them
//!   (`cargo build` of the same profile) unless `BERTH_BIN_DIR` is set; the
//!   smoke test uses the ones `cargo test --workspace` built.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod dockerapi;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod sim;
pub mod stats;

use std::time::{Duration, Instant};

use berth_e2e::{RunId, TestImage};
use serde_json::Value;

use crate::report::ScenarioReport;

/// The scenarios of issue 7 (1–6) and of the service scheduler (7, 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 1: N single-container tasks to RUNNING vs create+start through the
    /// Docker API with the same concurrency.
    TaskStart,
    /// 2: exit→running under berth's restartPolicy vs Docker's on-failure.
    Restart,
    /// 3: agent RSS and CPU idle, with 10 and N tasks, with health checks.
    Footprint,
    /// 4: SIGKILL the agent with N tasks; time to re-attach, containers
    /// restarted (must be 0).
    Recovery,
    /// 5: K simulated agents on one control plane: memory and CPU per
    /// 1,000 sessions, assignment fan-out, reconnect storm.
    Fleet,
    /// 6: an agent comes back with thousands of queued events.
    Replay,
    /// 7 (issue 13): one service of N tasks on I simulated instances:
    /// create to steady state, a rolling deployment to steady state, the
    /// server's CPU per placement decision.
    Services,
    /// 8 (issue 13): S services on K simulated instances: placement
    /// decisions per second, task stop to its replacement's assignment.
    ServicesScale,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::TaskStart,
        Scenario::Restart,
        Scenario::Footprint,
        Scenario::Recovery,
        Scenario::Fleet,
        Scenario::Replay,
        Scenario::Services,
        Scenario::ServicesScale,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::TaskStart => "task-start",
            Scenario::Restart => "restart",
            Scenario::Footprint => "footprint",
            Scenario::Recovery => "recovery",
            Scenario::Fleet => "fleet",
            Scenario::Replay => "replay",
            Scenario::Services => "services",
            Scenario::ServicesScale => "services-scale",
        }
    }
}

/// Sizes of a run. `None` means the scenario's default (issue 7's sizes).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Tasks (task-start 50, footprint 100, recovery 100) or containers
    /// (restart 10).
    pub n: Option<usize>,
    /// Rounds of task-start (berth and Docker alternate who goes first).
    pub rounds: usize,
    /// Restarts measured per container (restart).
    pub restarts: usize,
    /// Measuring window of footprint and fleet.
    pub window: Duration,
    /// Session counts of fleet, ascending.
    pub sessions: Vec<usize>,
    /// Tasks of the fleet fan-out (default min(K, 1000)).
    pub fanout: Option<usize>,
    /// Queued events of replay.
    pub events: usize,
    /// The control plane's store in fleet.
    pub store: StoreKind,
    /// Tasks of the service of `services`.
    pub service_tasks: usize,
    /// Simulated instances of `services`.
    pub service_instances: usize,
    /// Simulated instances of `services-scale`.
    pub scale_instances: usize,
    /// Services of `services-scale`.
    pub scale_services: usize,
    /// Tasks of each service of `services-scale`.
    pub scale_tasks: usize,
}

/// Which store the fleet scenario's server runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The data dir's SQLite file (the default store).
    #[default]
    Sqlite,
    /// A throwaway PostgreSQL server started for the run
    /// (`berth server --store postgres://…`).
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n: None,
            rounds: 2,
            restarts: 3,
            window: Duration::from_secs(60),
            sessions: vec![1_000, 5_000, 10_000],
            fanout: None,
            events: 10_000,
            store: StoreKind::Sqlite,
            service_tasks: 1_000,
            service_instances: 100,
            scale_instances: 10_000,
            scale_services: 500,
            scale_tasks: 20,
        }
    }
}

impl Options {
    /// The smoke run of CI: every scenario with tiny sizes. It checks
    /// correctness only; its figures mean nothing.
    pub fn smoke() -> Options {
        Options {
            n: Some(2),
            rounds: 1,
            restarts: 1,
            window: Duration::from_secs(5),
            sessions: vec![20],
            fanout: None,
            events: 200,
            store: StoreKind::Sqlite,
            service_tasks: 20,
            service_instances: 4,
            scale_instances: 10,
            scale_services: 3,
            scale_tasks: 4,
        }
    }

    pub fn n_or(&self, default: usize) -> usize {
        self.n.unwrap_or(default).max(1)
    }
}

/// What every scenario gets: the run id, the test image, a tokio runtime
/// for the async parts, the options and the file-descriptor limit.
pub struct Ctx {
    pub run: RunId,
    pub image: TestImage,
    pub rt: tokio::runtime::Runtime,
    pub opts: Options,
    pub nofile: u64,
}

impl Ctx {
    /// Builds the test image `berth-test-busybox:<run id>` and a runtime.
    pub fn new(opts: Options) -> anyhow::Result<Ctx> {
        let nofile = procfs::raise_nofile()?;
        let run = RunId::new();
        let image = TestImage::build(&run);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        Ok(Ctx {
            run,
            image,
            rt,
            opts,
            nofile,
        })
    }

    /// `<what>-<run id>`: a task family or label unique to this run.
    pub fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.run)
    }
}

/// Runs `scenario`; a failed check or a panic (the e2e harness panics with
/// the state it saw) becomes the report's error.
pub fn run_scenario(ctx: &Ctx, scenario: Scenario) -> ScenarioReport {
    let start = Instant::now();
    eprintln!("berth-bench: scenario {} …", scenario.name());
    let mut details = Value::Null;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenarios::run(ctx, scenario, &mut details)
    }));
    let (metrics, error) = match result {
        Ok(Ok(metrics)) => (metrics, None),
        Ok(Err(e)) => (Vec::new(), Some(format!("{e:#}"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            (Vec::new(), Some(msg))
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    match &error {
        None => eprintln!(
            "berth-bench: scenario {} done in {seconds:.1} s",
            scenario.name()
        ),
        Some(e) => eprintln!(
            "berth-bench: scenario {} FAILED after {seconds:.1} s: {e}",
            scenario.name()
        ),
    }
    ScenarioReport {
        scenario: scenario.name().to_string(),
        seconds,
        metrics,
        details,
        error,
    }
}

/// The whole run as JSON: machine, options, every scenario's report.
pub fn run_json(ctx: &Ctx, reports: &[ScenarioReport], docker_version: &str) -> Value {
    let mut machine = procfs::machine();
    machine["dockerVersion"] = Value::String(docker_version.to_string());
    serde_json::json!({
        "runId": ctx.run.as_str(),
        "finishedAtMs": berth_proto::now_ms(),
        "machine": machine,
        "options": ctx.opts,
        "nofile": ctx.nofile,
        "scenarios": reports,
    })
}

/// `docker version`'s server version and API version, for the report.
pub fn docker_version(ctx: &Ctx) -> String {
    ctx.rt
        .block_on(async {
            let docker = dockerapi::connect().await?;
            let v = docker.version().await?;
            anyhow::Ok(format!(
                "{} (API {})",
                v.version.unwrap_or_default(),
                v.api_version.unwrap_or_default()
            ))
        })
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
