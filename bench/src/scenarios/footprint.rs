//! Scenario 3, footprint: the agent's RSS (`VmRSS`, sampled every second)
//! and CPU (`utime + stime` over the window, all threads) at steady state:
//! idle, with 10 and with N running tasks, and the same with a health check
//! on every container (`CMD-SHELL true` every 5 s, the shortest interval
//! ECS allows). The control plane runs with its default heartbeat interval
//! (10 s), as in production.
//!
//! The plain levels and the health-check levels each get a fresh agent
//! (the allocator keeps what 100 tasks needed). Before each window the
//! tasks are RUNNING (and HEALTHY, with checks) on
//! the control plane, and 2 s have passed. dockerd's CPU over the same
//! window is recorded in the JSON for context (health checks cost dockerd,
//! not the agent), and so are the Docker events the agent's subscription
//! (its own containers) delivered in the window, by action: the profile of
//! what the agent had to read. Checked: the agent process stays up and every task
//! stays RUNNING through each window.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_e2e::{Agent, DEADLINE};
use berth_proto::v1::admin_client::AdminClient;
use futures_util::future::try_join_all;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::Ctx;
use crate::cluster::{
    BenchServer, IDLE, enrolled_agent, one_container_def, run_task, tasks_of, wait_tasks_status,
};
use crate::dockerapi::{self, EventLog};
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
    // One agent per phase (plain, then health checks), so that the
    // health-check figures do not carry the memory the allocator kept from
    // the 100 plain tasks. Dropping an agent removes its containers.
    let mut agent: Option<(Agent, u32, bool)> = None;
    let mut ids: Vec<String> = Vec::new();
    for level in &levels {
        if agent
            .as_ref()
            .is_none_or(|(_, _, health)| *health != level.health)
        {
            drop(agent.take());
            ids.clear();
            let a = enrolled_agent(&server, &ctx.run, "")?;
            let config = a.config_path().to_string_lossy().into_owned();
            let pid = procfs::pid_with_arg("berth-agent", &config)
                .with_context(|| format!("no berth-agent process with --config {config}"))?;
            agent = Some((a, pid, level.health));
        }
        let Some((a, pid, _)) = &agent else {
            bail!("no agent");
        };
        let (instance, pid) = (a.instance_id().to_string(), *pid);
        ctx.rt.block_on(async {
            let mut admin = server.admin().await?;
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
            wait_tasks_status(&mut admin, &instance, &ids, "RUNNING", DEADLINE * 3).await?;
            if level.health {
                wait_healthy(&mut admin, &instance, &ids).await?;
            }
            anyhow::Ok(())
        })?;
        std::thread::sleep(SETTLE);
        eprintln!("  {}: measuring for {window:?}", level.name);
        // What the agent's event subscription delivers during the window
        // (its own filter: its containers, the actions it uses), by action.
        let events = {
            let _enter = ctx.rt.enter();
            let docker = ctx.rt.block_on(dockerapi::connect())?;
            EventLog::as_agent(&docker, &instance)
        };
        let mut pids = vec![pid];
        pids.extend(dockerd);
        let usage = procfs::measure_many(&pids, window)
            .context("the agent process exited during the window")?;
        let seen = events.snapshot();
        drop(events);
        let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
        for e in &seen {
            let action = e.action.split(':').next().unwrap_or_default().to_string();
            *by_action.entry(action).or_default() += 1;
        }
        let agent_usage: Usage = usage[0];
        let dockerd_usage = usage.get(1).copied();
        // Every task is still RUNNING after the window.
        ctx.rt.block_on(async {
            let mut admin = server.admin().await?;
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
        let events_per_s = seen.len() as f64 / agent_usage.window_s;
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("agent CPU, {}", level.name),
                "% core",
                agent_usage.cpu_percent,
            )
            .target(Target::AtMost(0.5))
            .note(format!(
                "utime+stime over {:.0} s; {events_per_s:.1} docker events/s on the agent's subscription",
                agent_usage.window_s
            )),
        );
        level_details.push(json!({
            "level": level.name,
            "tasks": level.tasks,
            "healthChecks": level.health,
            "agentPid": pid,
            "agent": agent_usage,
            "dockerd": dockerd_usage,
            "dockerEventsPerSecond": events_per_s,
            "dockerEventsByAction": by_action,
        }));
    }
    drop(agent);
    *details = json!({ "levels": level_details });
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
