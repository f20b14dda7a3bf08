//! Scenario 3, footprint: the agent's RSS (`VmRSS`, sampled every second)
//! and CPU (`utime + stime` over the window, all threads) at steady state:
//! idle, with 10 and with N running tasks, and the same with a health check
//! on every container (`CMD-SHELL true` every 5 s, the shortest interval
//! ECS allows). The control plane runs with its default heartbeat interval
//! (10 s), as in production.
//!
//! Before each window the tasks are RUNNING (and HEALTHY, with checks) on
//! the control plane, and 2 s have passed. dockerd's CPU over the same
//! window is recorded in the JSON for context (health checks cost dockerd,
//! not the agent). Checked: the agent process stays up and every task
//! stays RUNNING through each window.

use std::time::Duration;

use anyhow::{Context, bail};
use berth_e2e::DEADLINE;
use berth_proto::v1::admin_client::AdminClient;
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::Ctx;
use crate::cluster::{
    BenchServer, IDLE, enrolled_agent, one_container_def, run_task, stop_tasks, tasks_of,
    wait_tasks_status,
};
use crate::procfs::{self, Usage};
use crate::report::{Metric, Target};

const SCENARIO: &str = "footprint";
const SETTLE: Duration = Duration::from_secs(2);

struct Level {
    name: String,
    tasks: usize,
    health: bool,
}

pub fn run(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    let big = ctx.opts.n_or(100);
    let small = big.min(10);
    let window = ctx.opts.window;
    let server = BenchServer::start(&ctx.run, None)?;
    let agent = enrolled_agent(&server, &ctx.run, "")?;
    let instance = agent.instance_id().to_string();
    let config = agent.config_path().to_string_lossy().into_owned();
    let pid = procfs::pid_with_arg("berth-agent", &config)
        .with_context(|| format!("no berth-agent process with --config {config}"))?;
    let dockerd = procfs::pid_of("dockerd");
    let image = ctx.image.tag().to_string();

    let mut levels = vec![Level {
        name: "idle".into(),
        tasks: 0,
        health: false,
    }];
    for (tasks, health) in [(small, false), (big, false), (small, true), (big, true)] {
        if levels
            .iter()
            .any(|l| l.tasks == tasks && l.health == health)
        {
            continue;
        }
        let name = if health {
            format!("{tasks} tasks + health checks")
        } else {
            format!("{tasks} tasks")
        };
        levels.push(Level {
            name,
            tasks,
            health,
        });
    }

    let mut metrics = Vec::new();
    let mut level_details = Vec::new();
    let mut plain: Vec<String> = Vec::new();
    let mut checked: Vec<String> = Vec::new();
    for level in &levels {
        ctx.rt.block_on(async {
            let mut admin = server.admin().await?;
            if level.health && !plain.is_empty() {
                stop_tasks(&mut admin, &instance, &plain).await?;
                plain.clear();
            }
            let ids = if level.health { &mut checked } else { &mut plain };
            let family = ctx.name(if level.health { "fp-health" } else { "fp" });
            let extra = if level.health {
                json!({"healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0}})
            } else {
                json!({})
            };
            let def = one_container_def(&image, &family, IDLE, extra);
            let more = level.tasks.saturating_sub(ids.len());
            let new = try_join_all((0..more).map(|_| {
                let mut admin = admin.clone();
                let (def, instance) = (&def, &instance);
                async move { run_task(&mut admin, def, instance).await }
            }))
            .await?;
            ids.extend(new);
            wait_tasks_status(&mut admin, &instance, ids, "RUNNING", DEADLINE * 3).await?;
            if level.health {
                wait_healthy(&mut admin, &instance, ids).await?;
            }
            anyhow::Ok(())
        })?;
        std::thread::sleep(SETTLE);
        eprintln!("  {}: measuring for {window:?}", level.name);
        let mut pids = vec![pid];
        pids.extend(dockerd);
        let usage = procfs::measure_many(&pids, window)
            .context("the agent process exited during the window")?;
        let agent_usage: Usage = usage[0];
        let dockerd_usage = usage.get(1).copied();
        // Every task is still RUNNING after the window.
        ctx.rt.block_on(async {
            let mut admin = server.admin().await?;
            let ids = if level.health { &checked } else { &plain };
            let states = tasks_of(&mut admin, &instance).await?;
            let running = states
                .iter()
                .filter(|t| ids.contains(&t.task_id) && t.last_status == "RUNNING")
                .count();
            if running != ids.len() {
                bail!("{running} of {} tasks RUNNING after the window", ids.len());
            }
            anyhow::Ok(())
        })?;
        let note = format!(
            "mean of 1 s samples over {:.0} s; max {:.1} MiB",
            agent_usage.window_s, agent_usage.rss_max_mib
        );
        let rss_target = if level.tasks == 0 { 15.0 } else { 30.0 };
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("agent RSS, {}", level.name),
                "MiB",
                agent_usage.rss_mean_mib,
            )
            .target(Target::AtMost(rss_target))
            .note(note),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("agent CPU, {}", level.name),
                "% core",
                agent_usage.cpu_percent,
            )
            .target(Target::AtMost(0.5))
            .note(format!("utime+stime over {:.0} s", agent_usage.window_s)),
        );
        level_details.push(json!({
            "level": level.name,
            "tasks": level.tasks,
            "healthChecks": level.health,
            "agent": agent_usage,
            "dockerd": dockerd_usage,
        }));
    }
    *details = json!({ "agentPid": pid, "levels": level_details });
    Ok(metrics)
}

/// Waits until the control plane shows every task of `ids` HEALTHY.
async fn wait_healthy(
    admin: &mut AdminClient<Channel>,
    instance: &str,
    ids: &[String],
) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let states = tasks_of(admin, instance).await?;
        let healthy = states
            .iter()
            .filter(|t| ids.contains(&t.task_id) && t.health_status == "HEALTHY")
            .count();
        if healthy == ids.len() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE * 2 {
            bail!("{healthy} of {} tasks HEALTHY", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
