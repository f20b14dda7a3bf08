//! `berth-bench`: runs the benchmarks of issue 7 (and of the service
//! scheduler, issue 13) and prints a table
//! (scenario, metric, berth, baseline, ratio, target, verdict).
//!
//! ```text
//! cargo run --release -p berth-bench -- all [--n N] [--window 60s] [--json out.json]
//! cargo run --release -p berth-bench -- task-start restart --n 20
//! cargo run --release -p berth-bench -- services services-scale --scale-instances 1000 --scale-services 50
//! ```
//!
//! Exit codes: 0 when every scenario ran and passed its correctness
//! checks (a missed target is a result, not a failure), 1 when one failed,
//! 2 on bad usage.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_bench::{Ctx, Options, Scenario, StoreKind, report};
use clap::Parser;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    All,
    TaskStart,
    Restart,
    Footprint,
    Recovery,
    Fleet,
    Replay,
    Services,
    ServicesScale,
}

/// Benchmarks of berth against raw Docker in the same run (see BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "berth-bench", version)]
struct Args {
    /// Scenarios to run, in order (`all`: every one).
    #[arg(value_enum, required = true, value_name = "SCENARIO")]
    scenarios: Vec<Which>,
    /// Tasks (task-start 50, footprint 100, recovery 100) or crashing
    /// containers (restart 10).
    #[arg(long)]
    n: Option<usize>,
    /// Rounds of task-start.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Restarts measured per container (restart).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Measuring window of footprint and fleet.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Session counts of fleet, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    sessions: Vec<usize>,
    /// Tasks of the fleet fan-out (default: min(K, 1000)).
    #[arg(long)]
    fanout: Option<usize>,
    /// Queued events of replay.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// The store of fleet's server: sqlite (the data dir's file) or postgres
    /// (a throwaway PostgreSQL server started for the run; needs Debian's
    /// postgresql, see scripts/setup.sh).
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// Tasks of the service of `services`.
    #[arg(long, default_value_t = 1_000)]
    service_tasks: usize,
    /// Simulated instances of `services`.
    #[arg(long, default_value_t = 100)]
    service_instances: usize,
    /// Simulated instances of `services-scale`.
    #[arg(long, default_value_t = 10_000)]
    scale_instances: usize,
    /// Services of `services-scale`.
    #[arg(long, default_value_t = 500)]
    scale_services: usize,
    /// Tasks of each service of `services-scale`.
    #[arg(long, default_value_t = 20)]
    scale_tasks: usize,
    /// The smoke sizes of CI (2 tasks, 1 restart, 5 s window, 20 sessions,
    /// 200 events, a service of 20 tasks on 4 instances, 3 services of 4
    /// tasks on 10); other size flags are ignored.
    #[arg(long)]
    smoke: bool,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Do not build `berth` and `berth-agent` first (use `BERTH_BIN_DIR`
    /// or the binaries next to this one).
    #[arg(long)]
    no_build: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(code) = binaries(args.no_build)? {
        return Ok(code);
    }
    let opts = if args.smoke {
        Options {
            store: args.store,
            ..Options::smoke()
        }
    } else {
        Options {
            n: args.n,
            rounds: args.rounds.max(1),
            restarts: args.restarts.max(1),
            window: args.window,
            sessions: args.sessions.clone(),
            fanout: args.fanout,
            events: args.events.max(1),
            store: args.store,
            service_tasks: args.service_tasks.max(1),
            service_instances: args.service_instances.max(1),
            scale_instances: args.scale_instances.max(1),
            scale_services: args.scale_services.max(1),
            scale_tasks: args.scale_tasks.max(1),
        }
    };
    let mut scenarios = Vec::new();
    for w in &args.scenarios {
        let chosen: &[Scenario] = match w {
            Which::All => &Scenario::ALL,
            Which::TaskStart => &[Scenario::TaskStart],
            Which::Restart => &[Scenario::Restart],
            Which::Footprint => &[Scenario::Footprint],
            Which::Recovery => &[Scenario::Recovery],
            Which::Fleet => &[Scenario::Fleet],
            Which::Replay => &[Scenario::Replay],
            Which::Services => &[Scenario::Services],
            Which::ServicesScale => &[Scenario::ServicesScale],
        };
        for s in chosen {
            if !scenarios.contains(s) {
                scenarios.push(*s);
            }
        }
    }

    let ctx = Ctx::new(opts)?;
    let docker = berth_bench::docker_version(&ctx);
    let machine = berth_bench::procfs::machine();
    eprintln!(
        "berth-bench: run {} on {} cores, {} MiB, kernel {}, docker {docker}, load {}; RLIMIT_NOFILE {}",
        ctx.run,
        machine["nproc"],
        machine["memTotalMib"],
        machine["kernel"].as_str().unwrap_or_default(),
        machine["loadAverage"].as_str().unwrap_or_default(),
        ctx.nofile
    );
    let mut reports = Vec::new();
    for s in scenarios {
        reports.push(berth_bench::run_scenario(&ctx, s));
    }
    println!("\n{}", report::table(&reports));
    if let Some(path) = &args.json {
        let json = berth_bench::run_json(&ctx, &reports, &docker);
        let text = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("berth-bench: results written to {}", path.display());
    }
    Ok(if reports.iter().any(|r| r.error.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Makes sure the harness runs binaries of this build's profile: unless
/// `BERTH_BIN_DIR` is set, builds `berth` and `berth-agent` with cargo into
/// this binary's directory and runs this program again with
/// `BERTH_BIN_DIR` pointing there (the harness reads it; a process cannot
/// set its own environment safely). Returns the exit code of that run.
fn binaries(no_build: bool) -> anyhow::Result<Option<ExitCode>> {
    if std::env::var_os("BERTH_BIN_DIR").is_some() {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let dir = exe
        .parent()
        .context("this program's path has no directory")?
        .to_path_buf();
    if !no_build {
        let manifest = berth_e2e::repo_root().join("Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--bins",
            "-p",
            "berth-agent",
            "-p",
            "berth-control",
        ])
        .arg("--manifest-path")
        .arg(&manifest);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        eprintln!(
            "berth-bench: building berth and berth-agent ({})",
            berth_e2e::command_line(&cmd)
        );
        let status = cmd.status().context("cannot run cargo")?;
        if !status.success() {
            bail!("building berth and berth-agent failed ({status})");
        }
    }
    for bin in ["berth", "berth-agent"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} is missing: build it (cargo build --release --bins) or set BERTH_BIN_DIR",
                dir.join(bin).display()
            );
        }
    }
    let status = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("BERTH_BIN_DIR", &dir)
        .status()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    Ok(Some(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    }))
}
