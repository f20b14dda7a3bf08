//! Scenario 1, task start: N single-container tasks (image cached) to
//! RUNNING through berth, versus creating and starting the same containers
//! through the Docker API (bollard) with the same concurrency (all N at
//! once).
//!
//! - berth: N `RunTask` calls on the admin API at once, targeted at one
//!   agent. A task's latency runs from its `RunTask` call to its
//!   `startedAt` (the agent's clock when all essential containers run, as
//!   stored by the control plane); the wall time from the first call to the
//!   last `startedAt`. The time until the control plane shows all N
//!   RUNNING (polled every 20 ms) is reported too.
//! - Docker: N × (create + start) at once; latency from the create call to
//!   the start call's return; wall time from the first create to the last
//!   return.
//!
//! Rounds alternate which side goes first; a warm-up round of 2 on each side
//! is not measured. Checked: every task RUNNING on the control plane and
//! its container running in Docker; every baseline container running.

use std::time::Instant;

use anyhow::ensure;
use berth_e2e::DEADLINE;
use berth_proto::v1::admin_client::AdminClient;
use bollard::Docker;
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::LabelledCleanup;
use crate::Ctx;
use crate::cluster::{
    BenchServer, IDLE, enrolled_agent, now_ms, one_container_def, run_task, stop_tasks,
    wait_tasks_status,
};
use crate::dockerapi::{self, BENCH_LABEL};
use crate::report::{Metric, Target};
use crate::stats::{mean, p50_p99};

const SCENARIO: &str = "task-start";

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Round {
    wall_ms: f64,
    latencies_ms: Vec<f64>,
    /// berth only: until the control plane showed all RUNNING.
    control_plane_ms: Option<f64>,
}

pub fn run(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    let n = ctx.opts.n_or(50);
    let server = BenchServer::start(&ctx.run, None)?;
    let agent = enrolled_agent(&server, &ctx.run, "")?;
    let instance = agent.instance_id().to_string();
    let label = ctx.name("task-start");
    let _cleanup = LabelledCleanup(format!("{BENCH_LABEL}={label}"));
    let image = ctx.image.tag().to_string();
    let rounds = ctx.rt.block_on(async {
        let docker = dockerapi::connect().await?;
        let mut admin = server.admin().await?;
        let warm = n.min(2);
        docker_round(&docker, &image, warm, &label, "warm").await?;
        berth_round(&mut admin, &instance, &image, warm, &ctx.name("warm")).await?;
        let mut rounds = Vec::new();
        for r in 0..ctx.opts.rounds.max(1) {
            let family = ctx.name(&format!("start-r{r}"));
            let tag = format!("r{r}");
            let (d, b) = if r % 2 == 0 {
                let d = docker_round(&docker, &image, n, &label, &tag).await?;
                let b = berth_round(&mut admin, &instance, &image, n, &family).await?;
                (d, b)
            } else {
                let b = berth_round(&mut admin, &instance, &image, n, &family).await?;
                let d = docker_round(&docker, &image, n, &label, &tag).await?;
                (d, b)
            };
            eprintln!(
                "  round {r}: berth {:.0} ms, docker {:.0} ms for {n} tasks",
                b.wall_ms, d.wall_ms
            );
            rounds.push((d, b));
        }
        anyhow::Ok(rounds)
    })?;

    let docker_wall = mean(&rounds.iter().map(|(d, _)| d.wall_ms).collect::<Vec<_>>());
    let berth_wall = mean(&rounds.iter().map(|(_, b)| b.wall_ms).collect::<Vec<_>>());
    let cp_wall = mean(
        &rounds
            .iter()
            .filter_map(|(_, b)| b.control_plane_ms)
            .collect::<Vec<_>>(),
    );
    let d_lat: Vec<f64> = rounds
        .iter()
        .flat_map(|(d, _)| d.latencies_ms.clone())
        .collect();
    let b_lat: Vec<f64> = rounds
        .iter()
        .flat_map(|(_, b)| b.latencies_ms.clone())
        .collect();
    let (d50, d99) = p50_p99(&d_lat);
    let (b50, b99) = p50_p99(&b_lat);
    let note = format!("N={n}, {} round(s), {} samples", rounds.len(), b_lat.len());
    let baseline = "docker API, same concurrency";
    *details = json!({
        "n": n,
        "rounds": rounds.iter().map(|(d, b)| json!({"docker": d, "berth": b})).collect::<Vec<_>>(),
    });
    Ok(vec![
        Metric::versus(
            SCENARIO,
            &format!("wall, {n} tasks to RUNNING"),
            "ms",
            berth_wall,
            docker_wall,
            baseline,
        )
        .target(Target::RatioAtMost(1.10))
        .note(note.clone()),
        Metric::versus(SCENARIO, "per-task latency p50", "ms", b50, d50, baseline)
            .note(note.clone()),
        Metric::versus(SCENARIO, "per-task latency p99", "ms", b99, d99, baseline).note(note),
        Metric::versus(
            SCENARIO,
            "wall until the control plane shows all RUNNING",
            "ms",
            cp_wall,
            docker_wall,
            baseline,
        )
        .note("polled every 20 ms through the admin API"),
    ])
}

/// N × (create + start) through the Docker API at once.
async fn docker_round(
    docker: &Docker,
    image: &str,
    n: usize,
    label: &str,
    tag: &str,
) -> anyhow::Result<Round> {
    let t0 = now_ms();
    let runs = try_join_all((0..n).map(|i| async move {
        let name = format!("bench-{label}-{tag}-{i}");
        let body = dockerapi::container_body(image, IDLE, label, false);
        let submitted = now_ms();
        let id = dockerapi::create_start(docker, &name, body).await?;
        anyhow::Ok((id, submitted, now_ms()))
    }))
    .await?;
    for (id, _, _) in &runs {
        ensure!(
            dockerapi::is_running(docker, id).await?,
            "baseline container {id} is not running after its start returned"
        );
    }
    for (id, _, _) in &runs {
        dockerapi::remove(docker, id).await?;
    }
    Ok(Round {
        wall_ms: runs.iter().map(|(_, _, r)| r - t0).fold(0.0, f64::max),
        latencies_ms: runs.iter().map(|(_, s, r)| r - s).collect(),
        control_plane_ms: None,
    })
}

/// N `RunTask` calls at once; waits until all are RUNNING, checks their
/// containers in Docker, then stops them.
async fn berth_round(
    admin: &mut AdminClient<Channel>,
    instance: &str,
    image: &str,
    n: usize,
    family: &str,
) -> anyhow::Result<Round> {
    let def = one_container_def(image, family, IDLE, json!({}));
    let t0 = now_ms();
    let t0_instant = Instant::now();
    let submitted = try_join_all((0..n).map(|_| {
        let mut admin = admin.clone();
        let def = &def;
        async move {
            let at = now_ms();
            let id = run_task(&mut admin, def, instance).await?;
            anyhow::Ok((id, at))
        }
    }))
    .await?;
    let ids: Vec<String> = submitted.iter().map(|(id, _)| id.clone()).collect();
    let (tasks, seen) = wait_tasks_status(admin, instance, &ids, "RUNNING", DEADLINE * 2).await?;
    let mut latencies = Vec::new();
    let mut last = 0.0f64;
    for (id, at) in &submitted {
        let task = tasks
            .iter()
            .find(|t| &t.task_id == id)
            .ok_or_else(|| anyhow::anyhow!("task {id} missing from ListTasks"))?;
        ensure!(
            task.started_at_ms > 0,
            "task {id} is RUNNING without startedAt"
        );
        let started = task.started_at_ms as f64;
        latencies.push(started - at);
        last = last.max(started);
    }
    // Every task's container really runs.
    let containers = tokio::task::spawn_blocking({
        let instance = instance.to_string();
        move || berth_e2e::containers_of(&instance)
    })
    .await?;
    let running = containers
        .iter()
        .filter(|c| c["Config"]["Labels"]["berth.task-family"] == json!(family))
        .filter(|c| c["State"]["Running"] == json!(true))
        .count();
    ensure!(
        running == n,
        "{running} of {n} containers of family {family} run in Docker while the control plane shows all tasks RUNNING"
    );
    stop_tasks(admin, instance, &ids).await?;
    Ok(Round {
        wall_ms: last - t0,
        latencies_ms: latencies,
        control_plane_ms: Some(seen.duration_since(t0_instant).as_secs_f64() * 1000.0),
    })
}
