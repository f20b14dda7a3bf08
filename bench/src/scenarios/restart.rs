//! Scenario 2, restart latency: a container that runs `sh -c 'sleep 2;
//! exit 1'` under berth's `restartPolicy` (enabled, `restartAttemptPeriod`
//! 1 s), versus the same container under Docker's own `on-failure` policy.
//!
//! Both sides are timed by Docker's clock: the `die` event of a container
//! to its next `start` event (`timeNano` of `docker events`), the first R
//! restarts of each of N containers per side. The two sides run at the same
//! time, their containers started alternately and spread over one crash
//! period (~2.3 s), so that both see the same machine load and dockerd, and
//! no two exits coincide (simultaneous `docker start`s queue in dockerd,
//! which would measure dockerd, not the restart policy). Docker's restart manager waits
//! 100 ms before the first restart and doubles the wait for every restart
//! of a container that ran less than 10 s (100, 200, 400 ms, …); berth
//! restarts at once unless the container ran less than one second. The
//! per-restart medians are in the JSON.
//!
//! Checked: every `die` had exit code 1, every container restarted R
//! times, and the control plane shows every berth task still RUNNING with
//! `restartCount` ≥ R (a restart never stops the task).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use berth_e2e::DEADLINE;
use serde_json::{Value, json};

use super::LabelledCleanup;
use crate::Ctx;
use crate::cluster::{
    BenchServer, enrolled_agent, one_container_def, run_task, stop_tasks, tasks_of,
    wait_tasks_status,
};
use crate::dockerapi::{self, BENCH_LABEL, EventLog, Restart};
use crate::report::{Metric, Target};
use crate::stats::{p50_p99, percentile};

const SCENARIO: &str = "restart";
const CRASH: &[&str] = &["sh", "-c", "sleep 2; exit 1"];
/// About how long one crash cycle takes.
const PERIOD: Duration = Duration::from_millis(2300);

pub fn run(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    let n = ctx.opts.n_or(10);
    let r = ctx.opts.restarts.max(1);
    let server = BenchServer::start(&ctx.run, None)?;
    let agent = enrolled_agent(&server, &ctx.run, "")?;
    let instance = agent.instance_id().to_string();
    let label = ctx.name("restart");
    let _cleanup = LabelledCleanup(format!("{BENCH_LABEL}={label}"));
    let image = ctx.image.tag().to_string();
    let deadline = DEADLINE + Duration::from_secs(40) * r as u32;

    let (docker_restarts, berth_restarts) = ctx.rt.block_on(async {
        let docker = dockerapi::connect().await?;
        let mut admin = server.admin().await?;
        let family = ctx.name("restart");
        let def = one_container_def(
            &image,
            &family,
            CRASH,
            json!({"restartPolicy": {"enabled": true, "restartAttemptPeriod": 1}}),
        );
        // Both sides at once, interleaved and spread over one crash period,
        // so that they share the machine's load and no two exits coincide.
        let docker_log = EventLog::start(&docker, &format!("{BENCH_LABEL}={label}"));
        let berth_log = EventLog::start(&docker, &format!("berth.instance-id={instance}"));
        let step =
            (PERIOD / (2 * n as u32)).clamp(Duration::from_millis(20), Duration::from_millis(500));
        let mut ids = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n {
            let body = dockerapi::container_body(&image, CRASH, &label, true);
            ids.push(dockerapi::create_start(&docker, &format!("bench-{label}-{i}"), body).await?);
            tokio::time::sleep(step).await;
            tasks.push(run_task(&mut admin, &def, &instance).await?);
            tokio::time::sleep(step).await;
        }
        let (states, _) =
            wait_tasks_status(&mut admin, &instance, &tasks, "RUNNING", DEADLINE).await?;
        let containers: Vec<String> = states
            .iter()
            .filter_map(|t| t.containers.first().map(|c| c.runtime_id.clone()))
            .filter(|id| !id.is_empty())
            .collect();
        ensure!(
            containers.len() == n,
            "{} of {n} RUNNING tasks report a container id",
            containers.len()
        );
        let docker_restarts = wait_restarts(&docker_log, &ids, r, deadline, "docker").await?;
        let berth_restarts = wait_restarts(&berth_log, &containers, r, deadline, "berth").await?;
        for id in &ids {
            dockerapi::remove(&docker, id).await?;
        }
        // The control plane saw the restarts and the tasks never stopped.
        let start = Instant::now();
        loop {
            let states = tasks_of(&mut admin, &instance).await?;
            let ours: Vec<_> = states
                .iter()
                .filter(|t| tasks.contains(&t.task_id))
                .collect();
            if let Some(t) = ours.iter().find(|t| t.last_status != "RUNNING") {
                bail!(
                    "task {} is {} after its container restarted: {} {}",
                    t.task_id,
                    t.last_status,
                    t.stop_code,
                    t.stopped_reason
                );
            }
            let counted = ours
                .iter()
                .filter(|t| {
                    t.containers
                        .first()
                        .is_some_and(|c| c.restart_count as usize >= r)
                })
                .count();
            if counted == n {
                break;
            }
            if start.elapsed() > DEADLINE {
                bail!("{counted} of {n} tasks show restartCount >= {r} on the control plane");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_tasks(&mut admin, &instance, &tasks).await?;
        anyhow::Ok((docker_restarts, berth_restarts))
    })?;

    let flat = |m: &HashMap<String, Vec<Restart>>| -> Vec<f64> {
        m.values().flat_map(|v| v.iter().map(|x| x.ms)).collect()
    };
    let (d_ms, b_ms) = (flat(&docker_restarts), flat(&berth_restarts));
    let (d50, d99) = p50_p99(&d_ms);
    let (b50, b99) = p50_p99(&b_ms);
    let per_index = |m: &HashMap<String, Vec<Restart>>| -> Vec<f64> {
        (1..=r)
            .map(|i| {
                let at: Vec<f64> = m
                    .values()
                    .flat_map(|v| v.iter().filter(|x| x.index == i).map(|x| x.ms))
                    .collect();
                percentile(&at, 50.0).unwrap_or(0.0)
            })
            .collect()
    };
    *details = json!({
        "containers": n,
        "restartsEach": r,
        "dockerMedianByRestart": per_index(&docker_restarts),
        "berthMedianByRestart": per_index(&berth_restarts),
        "docker": docker_restarts.values().flatten().collect::<Vec<_>>(),
        "berth": berth_restarts.values().flatten().collect::<Vec<_>>(),
    });
    let note = format!("{n} containers x {r} restarts, die->start by docker events");
    let baseline = "docker restart=on-failure";
    Ok(vec![
        Metric::versus(SCENARIO, "exit->running p50", "ms", b50, d50, baseline)
            .target(Target::RatioAtMost(1.20))
            .note(note.clone()),
        Metric::versus(SCENARIO, "exit->running p99", "ms", b99, d99, baseline).note(note),
    ])
}

/// Waits until each of `ids` has restarted `r` times (by its events);
/// returns the first `r` restarts of each. Every `die` must be exit 1.
async fn wait_restarts(
    log: &EventLog,
    ids: &[String],
    r: usize,
    deadline: Duration,
    side: &str,
) -> anyhow::Result<HashMap<String, Vec<Restart>>> {
    let start = Instant::now();
    loop {
        let all = dockerapi::restarts(&log.snapshot());
        let done = ids
            .iter()
            .filter(|id| all.get(*id).is_some_and(|v| v.len() >= r))
            .count();
        if done == ids.len() {
            let mut out = HashMap::new();
            for id in ids {
                let mut list = all.get(id).cloned().unwrap_or_default();
                list.truncate(r);
                if let Some(bad) = list.iter().find(|x| x.exit_code != "1") {
                    bail!(
                        "{side}: container {id} died with exit code {:?}, not 1",
                        bad.exit_code
                    );
                }
                out.insert(id.clone(), list);
            }
            return Ok(out);
        }
        if start.elapsed() > deadline {
            bail!(
                "{side}: after {deadline:?}, {done} of {} containers restarted {r} times",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
