//! Scenarios 7 and 8, the service scheduler (issue 13): services on fleets
//! of simulated agents ([`crate::sim`]) against one `berth server` with its
//! default heartbeat interval. A simulated agent answers every Assignment
//! at once: a new task is reported RUNNING, a task desired STOPPED is
//! reported STOPPED — a Docker that starts and stops containers in no
//! time. So wall times here are the control plane's own (scheduler, store,
//! sessions); what Docker adds on real hosts is not in them.
//!
//! **services** (7): one REPLICA service of N tasks (1,000) on I instances
//! (100), `--min-healthy-time 0s`, the default deployment configuration
//! (100 % / 200 %) and placement (`spread:instanceId`).
//! 1. `CreateService` through the admin API (the CLI's call); time until
//!    `DescribeService` says steady (the deployment COMPLETED, nothing else
//!    left) with N RUNNING, and until the last Assignment arrived at an
//!    agent. The server's CPU time (`/proc`) over the phase divided by the
//!    tasks placed is its CPU per placement decision; it includes everything
//!    the server did meanwhile (sessions, the N RUNNING events, this
//!    benchmark's `DescribeService` every 200 ms), so it is an upper bound
//!    of the scheduler's own.
//! 2. `UpdateService` to a new revision (a rolling deployment: N new
//!    tasks, N old ones stopped), the same figures until steady again.
//! 3. The server's CPU at rest over 10 s with the same polling, to read the
//!    figures above against.
//!
//! **services-scale** (8): S services (500) of D tasks (20) each on K
//! instances (10,000).
//! 1. `CreateService` × S (8 calls at once); placement decisions per
//!    second = S × D / (first call → last Assignment at an agent), the
//!    server's CPU per decision, time until all S × D RUNNING events are
//!    stored, then until every service says steady.
//! 2. Stops: one RUNNING task of every service exits (its agent reports it
//!    STOPPED, as a container that died), 20 per second; latency from that
//!    event leaving the agent to the replacement's Assignment arriving at
//!    an agent (p50, p99). Checked: every service steady again with D
//!    RUNNING.
//! 3. The server's CPU at rest over 10 s: every service steady, no request.
//!
//! The simulated agents share the machine's cores with the server (their
//! TLS and protocol work competes with it, but is not in its CPU figures).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::{
    CreateServiceRequest, RegisterTaskDefinitionRequest, ServiceDescription, ServiceRef,
    UpdateServiceRequest,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::fleet::{CpuSplit, ENROLL_PARALLEL, RAMP_DEADLINE, StopOnDrop, drain, wait_connected};
use crate::Ctx;
use crate::cluster::{BenchServer, IDLE, one_container_def};
use crate::procfs;
use crate::report::{Metric, Target};
use crate::sim::{self, Obs, Shared, SimAgent, SimCommand};
use crate::stats::p50_p99;

/// How long a phase (create, rollout, stops) may take to reach steady
/// state.
const STEADY_DEADLINE: Duration = Duration::from_secs(1_200);
/// How often `services` asks `DescribeService` whether it is steady.
const POLL: Duration = Duration::from_millis(200);
/// `CreateService` calls at once in `services-scale`.
const CREATE_PARALLEL: usize = 8;
/// Task exits per second in the stop phase of `services-scale`.
const STOP_RATE: f64 = 20.0;
/// What one container start costs on a real host: the Docker baseline of
/// `task-start` (50 concurrent create + start through the Docker API on
/// this machine took 5,536 ms, run `1872ed5eae6a`), per task. Only used to
/// model the scheduler's share of a real deployment's wall time.
const DOCKER_START_MS: f64 = 5_536.0 / 50.0;

/// How long the server is watched at rest: the measuring window, at most
/// 10 s.
fn rest_window(ctx: &Ctx) -> Duration {
    ctx.opts.window.min(Duration::from_secs(10))
}

/// A control plane with K connected simulated agents, each of which takes
/// commands.
struct SimFleet {
    // Field order is drop order: the agents stop before the server.
    stop_all: StopOnDrop,
    handles: Vec<tokio::task::JoinHandle<SimAgent>>,
    commands: Vec<mpsc::UnboundedSender<SimCommand>>,
    obs: mpsc::UnboundedReceiver<Obs>,
    admin: AdminClient<Channel>,
    server: BenchServer,
    enroll_s: f64,
}

impl SimFleet {
    fn start(ctx: &Ctx, k: usize) -> anyhow::Result<SimFleet> {
        procfs::check_nofile(ctx.nofile, k)?;
        let mut server = BenchServer::start_on(&ctx.run, None, ctx.opts.store)?;
        let rt = &ctx.rt;
        let admin = rt.block_on(server.admin())?;
        let t = Instant::now();
        eprintln!("  enrolling {k} simulated agents");
        let (identities, ca_pem) = rt.block_on(sim::enroll(
            &admin,
            &server.fleet_url(),
            &ctx.name("sim"),
            k,
            ENROLL_PARALLEL,
        ))?;
        let enroll_s = t.elapsed().as_secs_f64();
        let (shared, mut obs) = Shared::new(Some(256));
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop = StopOnDrop(stop_tx);
        let mut handles = Vec::new();
        let mut commands = Vec::new();
        {
            let _enter = rt.enter();
            for (i, identity) in identities.into_iter().enumerate() {
                let mut agent = SimAgent::new(
                    i,
                    identity,
                    &server.fleet_url(),
                    &ca_pem,
                    Arc::clone(&shared),
                );
                commands.push(agent.commands());
                handles.push(tokio::spawn(agent.run(stop_rx.clone())));
            }
        }
        wait_connected(&shared, k, RAMP_DEADLINE, &mut server)?;
        drain(&mut obs);
        eprintln!("  {k} simulated agents connected");
        Ok(SimFleet {
            stop_all: stop,
            handles,
            commands,
            obs,
            admin,
            server,
            enroll_s,
        })
    }

    /// Stops the simulated agents and waits for them (bounded).
    fn stop(self, ctx: &Ctx) {
        let SimFleet {
            stop_all, handles, ..
        } = self;
        drop(stop_all);
        ctx.rt.block_on(async {
            for h in handles {
                let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
            }
        });
    }

    fn cpu(&self) -> anyhow::Result<f64> {
        procfs::cpu_seconds(self.server.pid())
    }
}

/// Registers a task definition of `family` whose environment names
/// `revision` (so that each call is a new revision); returns
/// `family:revision`.
async fn register(
    ctx: &Ctx,
    admin: &mut AdminClient<Channel>,
    family: &str,
    revision: u32,
) -> anyhow::Result<String> {
    let def = one_container_def(
        ctx.image.tag(),
        family,
        IDLE,
        json!({"environment": [{"name": "BENCH_REVISION", "value": revision.to_string()}]}),
    );
    let reg = admin
        .register_task_definition(RegisterTaskDefinitionRequest {
            task_definition_json: def,
            reuse_latest_if_equal: false,
        })
        .await
        .with_context(|| format!("RegisterTaskDefinition of {family}"))?
        .into_inner();
    Ok(format!("{}:{}", reg.family, reg.revision))
}

fn create_request(name: &str, task_definition: &str, count: usize) -> CreateServiceRequest {
    CreateServiceRequest {
        cluster: String::new(),
        input_json: json!({
            "serviceName": name,
            "taskDefinition": task_definition,
            "desiredCount": count,
            "launchType": "EXTERNAL",
        })
        .to_string(),
        min_healthy_time_ms: Some(0),
        lost_after_ms: None,
    }
}

async fn describe(
    admin: &mut AdminClient<Channel>,
    name: &str,
) -> anyhow::Result<ServiceDescription> {
    Ok(admin
        .describe_service(ServiceRef {
            cluster: String::new(),
            name: name.to_string(),
        })
        .await
        .with_context(|| format!("DescribeService {name}"))?
        .into_inner())
}

/// Steady with `count` RUNNING tasks of `task_definition`: `None`, or what
/// is missing.
fn not_steady(d: &ServiceDescription, task_definition: &str, count: usize) -> Option<String> {
    let v: Value = serde_json::from_str(&d.service_json).unwrap_or(Value::Null);
    let running = v["runningCount"].as_u64().unwrap_or(0);
    let td = v["taskDefinition"].as_str().unwrap_or_default();
    if d.steady && running == count as u64 && td == task_definition {
        return None;
    }
    Some(format!(
        "steady {}, rollout {} ({}), runningCount {running} of {count}, taskDefinition {td}",
        d.steady, d.rollout_state, d.rollout_state_reason
    ))
}

/// Polls `DescribeService` every [`POLL`] until [`not_steady`] is `None`;
/// returns when it was first seen.
async fn wait_steady(
    admin: &mut AdminClient<Channel>,
    name: &str,
    task_definition: &str,
    count: usize,
    deadline: Duration,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    loop {
        let d = describe(admin, name).await?;
        match not_steady(&d, task_definition, count) {
            None => return Ok(Instant::now()),
            Some(why) if start.elapsed() > deadline => {
                bail!("service {name} not steady after {deadline:?}: {why}")
            }
            Some(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// The new tasks the agents were assigned: task id → (family, agent, when
/// the Assignment arrived).
type Assigned = HashMap<String, (String, usize, Instant)>;

/// Takes observations from `obs` until `count` new tasks of `families`
/// arrived at an agent in an Assignment and the RUNNING event of each was
/// stored (its agent had the EventAck); returns them and when each RUNNING
/// was stored. Fails after `deadline`; says how far it is every 10 s. Other
/// observations are dropped.
async fn collect_running(
    obs: &mut mpsc::UnboundedReceiver<Obs>,
    families: &HashSet<String>,
    count: usize,
    deadline: Duration,
) -> anyhow::Result<(Assigned, HashMap<String, Instant>)> {
    let (mut assigned, mut running) = (Assigned::new(), HashMap::new());
    // Tasks both assigned and RUNNING stored.
    let mut both = 0;
    let start = Instant::now();
    let mut said = Instant::now();
    let until = tokio::time::Instant::now() + deadline;
    while both < count {
        match tokio::time::timeout_at(until, obs.recv()).await {
            Ok(Some(Obs::Assigned {
                agent,
                task_id,
                family,
                at,
            })) if families.contains(&family) => {
                if running.contains_key(&task_id) {
                    both += 1;
                }
                assigned.insert(task_id, (family, agent, at));
            }
            Ok(Some(Obs::Running { task_id, at })) => {
                if assigned.contains_key(&task_id) {
                    both += 1;
                }
                running.insert(task_id, at);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the simulated agents are gone"),
            Err(_) => bail!(
                "after {deadline:?}, {} of {count} new tasks assigned to the agents, {both} of them RUNNING stored",
                assigned.len()
            ),
        }
        if said.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "    {} of {count} assigned, {both} RUNNING after {:.0} s",
                assigned.len(),
                start.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
    }
    running.retain(|id, _| assigned.contains_key(id));
    ensure!(
        assigned.len() == count,
        "{} new tasks were assigned to the agents, {count} expected",
        assigned.len()
    );
    Ok((assigned, running))
}

/// The latest of `times` in seconds after `t0` (0 without any).
fn last_after<'a>(t0: Instant, times: impl Iterator<Item = &'a Instant>) -> f64 {
    times
        .max()
        .map_or(0.0, |at| at.duration_since(t0).as_secs_f64())
}

/// What one phase of `services` measured.
struct Phase {
    wall_s: f64,
    placed: usize,
    last_assigned_s: f64,
    last_running_s: f64,
    cpu_s: f64,
    cpu: Value,
}

/// Runs `call`, waits until the service is steady on `task_definition` and
/// counts the new tasks the agents were assigned.
fn phase<F>(
    ctx: &Ctx,
    fleet: &mut SimFleet,
    name: &str,
    family: &str,
    task_definition: &str,
    count: usize,
    call: F,
) -> anyhow::Result<Phase>
where
    F: AsyncFnOnce(&mut AdminClient<Channel>) -> anyhow::Result<()>,
{
    drain(&mut fleet.obs);
    let mut admin = fleet.admin.clone();
    let split = CpuSplit::start(fleet.server.pid())?;
    let cpu0 = fleet.cpu()?;
    let t0 = Instant::now();
    let steady_at = ctx.rt.block_on(async {
        call(&mut admin).await?;
        wait_steady(&mut admin, name, task_definition, count, STEADY_DEADLINE).await
    })?;
    let cpu_s = fleet.cpu()? - cpu0;
    let cpu = split.finish(fleet.server.pid())?;
    // The service is steady: these are in flight at most.
    let families = HashSet::from([family.to_string()]);
    let (assigned, running) = ctx.rt.block_on(collect_running(
        &mut fleet.obs,
        &families,
        count,
        Duration::from_secs(30),
    ))?;
    Ok(Phase {
        wall_s: steady_at.duration_since(t0).as_secs_f64(),
        placed: assigned.len(),
        last_assigned_s: last_after(t0, assigned.values().map(|(_, _, at)| at)),
        last_running_s: last_after(t0, running.values()),
        cpu_s,
        cpu,
    })
}

/// The figures of one phase of `services`.
fn phase_metrics(
    scenario: &str,
    what: &str,
    p: &Phase,
    instances: usize,
    rest_cpu_percent: Option<f64>,
) -> Vec<Metric> {
    let per_host = p.placed as f64 / instances as f64;
    let docker_s = per_host * DOCKER_START_MS / 1000.0;
    // Real hosts start their tasks in parallel with each other, so
    // Docker adds one host's starts; the control plane's time is added to
    // it whole (no overlap: pessimistic) or only the placement's.
    let share = 100.0 * p.wall_s / (p.wall_s + docker_s);
    let placing = 100.0 * p.last_assigned_s / (p.last_assigned_s + docker_s);
    let rest = rest_cpu_percent.map_or(String::new(), |r| {
        format!("; at rest the server uses {r:.1} % of a core with this polling")
    });
    vec![
        Metric::figure(scenario, &format!("{what} -> steady"), "s", p.wall_s).note(format!(
            "{} tasks on {instances} instances; last Assignment at an agent after {:.2} s, last RUNNING stored after {:.2} s",
            p.placed, p.last_assigned_s, p.last_running_s
        )),
        Metric::figure(
            scenario,
            &format!("{what}: placement decisions/s"),
            "/s",
            p.placed as f64 / p.last_assigned_s.max(1e-3),
        )
        .note("tasks placed / time to the last Assignment at an agent"),
        Metric::figure(
            scenario,
            &format!("{what}: server CPU per placement"),
            "ms",
            1000.0 * p.cpu_s / p.placed.max(1) as f64,
        )
        .note(format!(
            "{:.2} CPU s of the whole server until steady / {} tasks placed{rest}",
            p.cpu_s, p.placed
        )),
        Metric::figure(
            scenario,
            &format!("{what}: server CPU / wall"),
            "% core",
            100.0 * p.cpu_s / p.wall_s.max(1e-3),
        )
        .note("agents answer at once, so the wall time is the control plane's own"),
        Metric::figure(
            scenario,
            &format!("{what}: modelled scheduler share of a real deployment"),
            "%",
            share,
        )
        .target(Target::AtMost(10.0))
        .note(format!(
            "wall to steady / (that + {per_host:.0} Docker starts per host × {DOCKER_START_MS:.0} ms, task-start's baseline): a model, not a measurement"
        )),
        Metric::figure(
            scenario,
            &format!("{what}: modelled share of the placement alone"),
            "%",
            placing,
        )
        .note("as above with the time to the last Assignment at an agent instead of steady"),
    ]
}

/// Scenario 7: one service of N tasks on I instances.
pub fn run_one(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    const SCENARIO: &str = "services";
    let (n, k) = (ctx.opts.service_tasks, ctx.opts.service_instances);
    let mut fleet = SimFleet::start(ctx, k)?;
    let family = ctx.name("svc");
    let name = ctx.name("web");
    let mut admin = fleet.admin.clone();
    let (td1, td2) = ctx.rt.block_on(async {
        let a = register(ctx, &mut admin, &family, 1).await?;
        let b = register(ctx, &mut admin, &family, 2).await?;
        anyhow::Ok((a, b))
    })?;

    eprintln!("  create: service of {n} tasks on {k} instances");
    let create = phase(ctx, &mut fleet, &name, &family, &td1, n, async |a| {
        a.create_service(create_request(&name, &td1, n))
            .await
            .context("CreateService")?;
        Ok(())
    })?;
    eprintln!(
        "  steady after {:.2} s; rolling deployment to {td2}",
        create.wall_s
    );
    let rollout = phase(ctx, &mut fleet, &name, &family, &td2, n, async |a| {
        a.update_service(UpdateServiceRequest {
            cluster: String::new(),
            input_json: json!({"service": name, "taskDefinition": td2}).to_string(),
            min_healthy_time_ms: None,
            lost_after_ms: None,
        })
        .await
        .context("UpdateService")?;
        Ok(())
    })?;
    eprintln!("  steady after {:.2} s", rollout.wall_s);

    // The server at rest with the same polling.
    let rest = {
        let cpu0 = fleet.cpu()?;
        let t = Instant::now();
        ctx.rt.block_on(async {
            while t.elapsed() < rest_window(ctx) {
                describe(&mut admin, &name).await?;
                tokio::time::sleep(POLL).await;
            }
            anyhow::Ok(())
        })?;
        100.0 * (fleet.cpu()? - cpu0) / t.elapsed().as_secs_f64()
    };

    let mut metrics = phase_metrics(SCENARIO, "create", &create, k, Some(rest));
    metrics.extend(phase_metrics(
        SCENARIO,
        "rolling deployment",
        &rollout,
        k,
        Some(rest),
    ));
    *details = json!({
        "tasks": n,
        "instances": k,
        "enrollSeconds": fleet.enroll_s,
        "restCpuPercent": rest,
        "create": {"wallSeconds": create.wall_s, "lastAssignedSeconds": create.last_assigned_s, "lastRunningSeconds": create.last_running_s, "placed": create.placed, "serverCpuSeconds": create.cpu_s, "cpu": create.cpu},
        "rollout": {"wallSeconds": rollout.wall_s, "lastAssignedSeconds": rollout.last_assigned_s, "lastRunningSeconds": rollout.last_running_s, "placed": rollout.placed, "serverCpuSeconds": rollout.cpu_s, "cpu": rollout.cpu},
    });
    fleet.stop(ctx);
    Ok(metrics)
}

/// Scenario 8: S services of D tasks on K instances.
pub fn run_scale(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    const SCENARIO: &str = "services-scale";
    let (k, s, d) = (
        ctx.opts.scale_instances,
        ctx.opts.scale_services,
        ctx.opts.scale_tasks,
    );
    let total = s * d;
    let mut fleet = SimFleet::start(ctx, k)?;
    let rt = &ctx.rt;
    let mut admin = fleet.admin.clone();
    // One family (and task definition) per service: a task's family names
    // its service.
    let services: Vec<(String, String, String)> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..s {
            let family = ctx.name(&format!("svc{i}"));
            let td = register(ctx, &mut admin, &family, 1).await?;
            out.push((ctx.name(&format!("web{i}")), family, td));
        }
        anyhow::Ok(out)
    })?;
    let families: HashSet<String> = services.iter().map(|(_, f, _)| f.clone()).collect();

    // 1. Create every service; wait for every task RUNNING (stored).
    eprintln!("  creating {s} services of {d} tasks on {k} instances");
    drain(&mut fleet.obs);
    let split = CpuSplit::start(fleet.server.pid())?;
    let cpu0 = fleet.cpu()?;
    let t0 = Instant::now();
    let (assigned, running) = rt.block_on(async {
        futures_util::stream::iter(services.iter())
            .map(|(name, _, td)| {
                let mut admin = admin.clone();
                async move {
                    admin
                        .create_service(create_request(name, td, d))
                        .await
                        .with_context(|| format!("CreateService {name}"))?;
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(CREATE_PARALLEL)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        let created_s = t0.elapsed().as_secs_f64();
        eprintln!("  {s} CreateService calls done after {created_s:.1} s");
        collect_running(&mut fleet.obs, &families, total, STEADY_DEADLINE).await
    })?;
    let cpu_s = fleet.cpu()? - cpu0;
    let place_cpu = split.finish(fleet.server.pid())?;
    let place_s = last_after(t0, assigned.values().map(|(_, _, at)| at));
    let running_s = last_after(t0, running.values());
    eprintln!("  all {total} tasks assigned after {place_s:.1} s; waiting for steady");
    let steady_s = rt
        .block_on(all_steady(&mut admin, &services, d))?
        .duration_since(t0)
        .as_secs_f64();

    // 2. One task of every service exits, STOP_RATE a second.
    eprintln!("  stops: one task of each of {s} services, {STOP_RATE} a second");
    let mut victim_of: HashMap<&str, (String, usize)> = HashMap::new();
    for (task_id, (family, agent, _)) in &assigned {
        victim_of
            .entry(family.as_str())
            .or_insert_with(|| (task_id.clone(), *agent));
    }
    drain(&mut fleet.obs);
    let stop_cpu0 = fleet.cpu()?;
    let stop_t0 = Instant::now();
    let latencies = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / STOP_RATE));
        for (_, family, _) in &services {
            tick.tick().await;
            let (task_id, agent) = victim_of
                .get(family.as_str())
                .with_context(|| format!("no task of {family} was assigned"))?;
            fleet.commands[*agent]
                .send(SimCommand::Exit {
                    task_id: task_id.clone(),
                })
                .map_err(|_| anyhow::anyhow!("simulated agent {agent} is gone"))?;
        }
        let mut exited: HashMap<String, Instant> = HashMap::new();
        let mut replaced: HashMap<String, f64> = HashMap::new();
        // Assignments of a family seen before its exit was (not yet seen):
        // none can be a replacement, as every task was assigned before.
        let deadline = tokio::time::Instant::now() + STEADY_DEADLINE;
        while replaced.len() < s {
            match tokio::time::timeout_at(deadline, fleet.obs.recv()).await {
                Ok(Some(Obs::Exited { family, at, .. })) => {
                    exited.insert(family, at);
                }
                Ok(Some(Obs::Assigned { family, at, .. })) => {
                    if let Some(gone) = exited.get(&family)
                        && !replaced.contains_key(&family)
                    {
                        replaced.insert(family, at.duration_since(*gone).as_secs_f64() * 1000.0);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the simulated agents are gone"),
                Err(_) => bail!(
                    "after {STEADY_DEADLINE:?}, {} of {s} exited tasks replaced ({} exits seen)",
                    replaced.len(),
                    exited.len()
                ),
            }
        }
        anyhow::Ok(replaced.into_values().collect::<Vec<f64>>())
    })?;
    let stop_wall = stop_t0.elapsed().as_secs_f64();
    let stop_cpu = fleet.cpu()? - stop_cpu0;
    rt.block_on(all_steady(&mut admin, &services, d))?;
    let (l50, l99) = p50_p99(&latencies);
    // 3. At rest: nothing changes, nobody asks.
    let rest = procfs::measure(fleet.server.pid(), rest_window(ctx))?;

    let shape = format!("{s} services × {d} tasks on {k} instances");
    let metrics = vec![
        Metric::figure(SCENARIO, "placement decisions/s", "/s", total as f64 / place_s.max(1e-3))
            .note(format!(
                "{shape}: first CreateService ({CREATE_PARALLEL} at once) -> last Assignment at an agent, {place_s:.1} s"
            )),
        Metric::figure(SCENARIO, "server CPU per placement", "ms", 1000.0 * cpu_s / total as f64)
            .note(format!(
                "{cpu_s:.1} CPU s of the whole server until every task RUNNING was stored / {total} tasks"
            )),
        Metric::figure(SCENARIO, "server CPU / wall while placing", "% core", 100.0 * cpu_s / running_s.max(1e-3))
            .note(format!("all {total} RUNNING stored after {running_s:.1} s")),
        Metric::figure(SCENARIO, "create -> every service steady", "s", steady_s)
            .note(format!("{shape}; DescribeService of each service once a second from when all tasks RUNNING")),
        Metric::figure(SCENARIO, "task stop -> replacement assigned p50", "ms", l50)
            .note(format!("{} stops, one per service, {STOP_RATE} a second: the agent sends STOPPED -> the new task's Assignment arrives at an agent", latencies.len())),
        Metric::figure(SCENARIO, "task stop -> replacement assigned p99", "ms", l99)
            .note(format!("server CPU {:.1} % of a core over the {stop_wall:.1} s of the stop phase", 100.0 * stop_cpu / stop_wall.max(1e-3))),
        Metric::figure(SCENARIO, "server CPU at rest, every service steady", "% core", rest.cpu_percent)
            .note(format!("{shape}, over {:.0} s without a request; server RSS {:.0} MiB", rest.window_s, rest.rss_mean_mib)),
    ];
    *details = json!({
        "instances": k,
        "services": s,
        "tasksPerService": d,
        "enrollSeconds": fleet.enroll_s,
        "placeSeconds": place_s,
        "runningSeconds": running_s,
        "steadySeconds": steady_s,
        "placeServerCpuSeconds": cpu_s,
        "placeCpu": place_cpu,
        "stopLatenciesMs": latencies,
        "stopPhaseSeconds": stop_wall,
        "stopPhaseServerCpuSeconds": stop_cpu,
        "rest": rest,
    });
    fleet.stop(ctx);
    Ok(metrics)
}

/// Waits until every service of `services` (name, family, definition) is
/// steady with `count` RUNNING; asks each one at most once a second.
async fn all_steady(
    admin: &mut AdminClient<Channel>,
    services: &[(String, String, String)],
    count: usize,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    let mut left: Vec<&(String, String, String)> = services.iter().collect();
    loop {
        let round = Instant::now();
        let mut still = Vec::new();
        let mut why = String::new();
        for svc in left {
            let d = describe(admin, &svc.0).await?;
            if let Some(w) = not_steady(&d, &svc.2, count) {
                why = format!("service {}: {w}", svc.0);
                still.push(svc);
            }
        }
        if still.is_empty() {
            return Ok(Instant::now());
        }
        if start.elapsed() > STEADY_DEADLINE {
            bail!(
                "after {STEADY_DEADLINE:?}, {} of {} services are not steady; {why}",
                still.len(),
                services.len()
            );
        }
        left = still;
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(round.elapsed())).await;
    }
}
