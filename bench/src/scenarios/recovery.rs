//! Scenario 4, agent restart recovery: N RUNNING tasks, SIGKILL the agent,
//! start it again; time from the new process's spawn until its local API
//! shows all N tasks RUNNING and its session is connected again (Welcome
//! received), and the number of containers restarted or created because
//! of the agent restart (must be 0; by container id, `State.StartedAt` and
//! `RestartCount` of `docker inspect` before and after).
//!
//! Baseline in the same run: the same agent SIGKILLed and started again
//! with no task at all (the fixed cost of a start: config, identity,
//! Docker ping, TLS session).
//!
//! The local API reads the persisted state, so "RUNNING there" alone does
//! not prove the agent watches the containers again. The proof comes
//! last: every container is `docker kill`ed behind the agent's back, and
//! every task must then go STOPPED (EssentialContainerExited) — only an
//! agent that re-attached to each container sees its exit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_e2e::{
    Agent, DEADLINE, Proc, agent_bin, clean_command, containers_of, docker_ok, http_get, str_field,
};
use futures_util::future::try_join_all;
use serde_json::{Value, json};

use crate::Ctx;
use crate::cluster::{
    BenchServer, IDLE, enrolled_agent, one_container_def, run_task, wait_tasks_status,
};
use crate::report::{Metric, Target};

const SCENARIO: &str = "recovery";
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Recovery {
    /// Spawn → `agent-api.json` written (local API serving).
    api_ms: f64,
    /// Spawn → all tasks RUNNING on the local API.
    tasks_ms: f64,
    /// Spawn → session connected (local API `connected: true`).
    connected_ms: f64,
    /// The later of the two.
    total_ms: f64,
}

pub fn run(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    let n = ctx.opts.n_or(100);
    let server = BenchServer::start(&ctx.run, None)?;
    let mut agent = enrolled_agent(&server, &ctx.run, "")?;
    let instance = agent.instance_id().to_string();
    let image = ctx.image.tag().to_string();

    // Baseline: kill and start the agent with nothing to recover.
    agent.kill();
    let (idle, mut proc) = restart(&agent, 0, "idle")?;

    // N tasks.
    let family = ctx.name("recovery");
    let def = one_container_def(&image, &family, IDLE, json!({}));
    let ids = ctx.rt.block_on(async {
        let admin = server.admin().await?;
        let ids = try_join_all((0..n).map(|_| {
            let mut admin = admin.clone();
            let (def, instance) = (&def, &instance);
            async move { run_task(&mut admin, def, instance).await }
        }))
        .await?;
        let mut admin = admin.clone();
        wait_tasks_status(&mut admin, &instance, &ids, "RUNNING", DEADLINE * 3).await?;
        anyhow::Ok(ids)
    })?;
    let before = snapshot(&instance);
    ensure!(
        before.len() == n && before.values().all(|c| c.running),
        "before the kill: {} containers, {} running, for {n} tasks",
        before.len(),
        before.values().filter(|c| c.running).count()
    );

    // The crash and the recovery.
    proc.kill();
    drop(proc);
    let (loaded, proc) = restart(&agent, n, "loaded")?;
    let after = snapshot(&instance);
    let restarted = before
        .iter()
        .filter(|(id, c)| {
            after.get(*id).is_none_or(|a| {
                a.started_at != c.started_at || a.restart_count != c.restart_count || !a.running
            })
        })
        .count();
    let duplicated = after.keys().filter(|id| !before.contains_key(*id)).count();
    // The control plane sees the instance connected again.
    ctx.rt.block_on(async {
        let mut admin = server.admin().await?;
        let start = Instant::now();
        loop {
            let i = admin
                .describe_instance(berth_proto::v1::InstanceRef {
                    instance_id: instance.clone(),
                })
                .await?
                .into_inner();
            if i.agent_connected {
                return anyhow::Ok(());
            }
            if start.elapsed() > DEADLINE {
                bail!("the control plane does not show {instance} connected after the restart");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    prove_watching(ctx, &server, &instance, &before, &ids)?;
    drop(proc);

    *details = json!({ "n": n, "idle": idle, "loaded": loaded, "restarted": restarted, "duplicated": duplicated });
    Ok(vec![
        Metric::versus(
            SCENARIO,
            &format!("agent start -> {n} tasks re-attached, session up"),
            "ms",
            loaded.total_ms,
            idle.total_ms,
            "same agent, no task",
        )
        .note(format!(
            "local API up {:.0} ms, tasks {:.0} ms, session {:.0} ms",
            loaded.api_ms, loaded.tasks_ms, loaded.connected_ms
        )),
        Metric::figure(
            SCENARIO,
            "containers restarted by the agent restart",
            "",
            restarted as f64,
        )
        .target(Target::Equals(0.0))
        .note(format!(
            "{n} containers, docker inspect StartedAt/RestartCount"
        )),
        Metric::figure(SCENARIO, "containers created twice", "", duplicated as f64)
            .target(Target::Equals(0.0)),
    ])
}

/// Spawns `berth-agent run` with the agent's config and waits until its
/// local API shows `n` tasks RUNNING and its session is connected.
fn restart(agent: &Agent, n: usize, what: &str) -> anyhow::Result<(Recovery, Proc)> {
    let ready = agent.data_dir().join("agent-api.json");
    match std::fs::remove_file(&ready) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", ready.display())),
    }
    let log = agent.dir().join(format!("agent-{what}.log"));
    let mut cmd = clean_command(&agent_bin());
    cmd.arg("run").arg("--config").arg(agent.config_path());
    let t0 = Instant::now();
    let mut proc = Proc::spawn("berth-agent", &mut cmd, &log);
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
    let addr = loop {
        if let Some(status) = proc.exited() {
            bail!(
                "berth-agent exited ({status}) while starting; log tail:\n{}",
                berth_e2e::log_tail(&log, 40)
            );
        }
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(json) = serde_json::from_str::<Value>(&text)
            && !str_field(&json, "apiAddr").is_empty()
        {
            break str_field(&json, "apiAddr").to_string();
        }
        if t0.elapsed() > DEADLINE {
            bail!(
                "berth-agent did not write {} within {DEADLINE:?}",
                ready.display()
            );
        }
        std::thread::sleep(POLL);
    };
    let api = Instant::now();
    let (mut tasks_at, mut connected_at) = (None, None);
    while tasks_at.is_none() || connected_at.is_none() {
        if tasks_at.is_none() {
            let tasks = get_json(&addr, "/v1/tasks")?;
            let running = tasks["tasks"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .filter(|t| str_field(t, "lastStatus") == "RUNNING")
                        .count()
                })
                .unwrap_or(0);
            if running == n {
                tasks_at = Some(Instant::now());
            }
        }
        if connected_at.is_none() && get_json(&addr, "/v1/metadata")?["connected"] == json!(true) {
            connected_at = Some(Instant::now());
        }
        if t0.elapsed() > DEADLINE {
            bail!(
                "after {DEADLINE:?} the restarted agent shows tasks_ready={} connected={}",
                tasks_at.is_some(),
                connected_at.is_some()
            );
        }
        std::thread::sleep(POLL);
    }
    let (tasks_at, connected_at) = (tasks_at.unwrap_or(api), connected_at.unwrap_or(api));
    let r = Recovery {
        api_ms: ms(api),
        tasks_ms: ms(tasks_at),
        connected_ms: ms(connected_at),
        total_ms: ms(tasks_at.max(connected_at)),
    };
    eprintln!("  {what}: {r:?}");
    Ok((r, proc))
}

fn get_json(addr: &str, path: &str) -> anyhow::Result<Value> {
    let (status, body) = http_get(addr, path).map_err(anyhow::Error::msg)?;
    ensure!(status == 200, "GET {path}: {status} {body}");
    serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
}

struct Seen {
    started_at: String,
    restart_count: i64,
    running: bool,
}

/// The agent's containers by id.
fn snapshot(instance: &str) -> HashMap<String, Seen> {
    containers_of(instance)
        .into_iter()
        .map(|c| {
            (
                str_field(&c, "Id").to_string(),
                Seen {
                    started_at: str_field(&c["State"], "StartedAt").to_string(),
                    restart_count: c["RestartCount"].as_i64().unwrap_or(-1),
                    running: c["State"]["Running"] == json!(true),
                },
            )
        })
        .collect()
}

/// Kills every container behind the agent's back; each task must stop
/// with EssentialContainerExited on the control plane (the agent forgets a
/// task once the control plane stops assigning it, so its local API is not
/// the place to look).
fn prove_watching(
    ctx: &Ctx,
    server: &BenchServer,
    instance: &str,
    containers: &HashMap<String, Seen>,
    ids: &[String],
) -> anyhow::Result<()> {
    let mut args = vec!["kill"];
    args.extend(containers.keys().map(String::as_str));
    docker_ok(&args);
    ctx.rt.block_on(async {
        let mut admin = server.admin().await?;
        let (states, _) = wait_tasks_status(&mut admin, instance, ids, "STOPPED", DEADLINE)
            .await
            .context("after every container was killed behind its back, the restarted agent did not stop every task: it does not watch them all")?;
        if let Some(t) = states.iter().find(|t| t.stop_code != "EssentialContainerExited") {
            bail!(
                "task {} stopped with {:?} ({}), not EssentialContainerExited",
                t.task_id,
                t.stop_code,
                t.stopped_reason
            );
        }
        anyhow::Ok(())
    })
}
