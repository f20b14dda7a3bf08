//! Scenario 5, fleet scale: K simulated agents (one process, one enrolled
//! identity and one mutual-TLS connection each, the real protocol; see
//! [`crate::sim`]) against one `berth server` with its default heartbeat
//! interval (10 s).
//!
//! 1. Enrollment: K one-time activations and K `Enroll` calls (4 at once:
//!    the server allows 5 unfinished enrollments per source address).
//! 2. For each K of `--sessions` (ascending): connect the sessions that are
//!    missing (256 handshakes at a time; the connect and Hello→Welcome
//!    times and the server's CPU during the ramp go to the JSON), wait
//!    until all K have their Welcome, then measure the server's RSS and CPU
//!    over the window. Reported against targets: every session still up at
//!    the agents and connected on the control plane after the window, and
//!    the age of the oldest heartbeat the control plane stored (within 3
//!    intervals, the server's own grace).
//! 3. Then, at the same K, fan-out: M `RunTask` calls (32 at once, M =
//!    min(K, 500) unless `--fanout`), each targeted at another simulated
//!    instance; latency from the call to the Assignment arriving at the
//!    agent, and to the EventAck of the agent's RUNNING event (the control
//!    plane stored it). Checked: the control plane shows all M RUNNING.
//! 4. Reconnect storm: SIGKILL the server, start it again on the same
//!    addresses and data; the agents back off and reconnect as the real
//!    agent does (full jitter, 250 ms doubling to 30 s). Time until all K
//!    have a new Welcome.
//!
//! The simulated agents share the machine's 2 cores with the server: their
//! TLS and protocol work is on the same CPUs (not counted in the server's
//! figures, but it competes with them).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::{ListInstancesRequest, ListTasksRequest};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use crate::Ctx;
use crate::cluster::{BenchServer, IDLE, one_container_def, run_task};
use crate::procfs::{self, Usage};
use crate::report::{Metric, Target};
use crate::sim::{self, Obs, Shared, SimAgent};
use crate::stats::p50_p99;

const SCENARIO: &str = "fleet";
/// The server's default heartbeat interval (`berth server --help`).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Enrollments at once: the server counts an enrollment as a failure of
/// its source address until it succeeds and refuses a sixth at once
/// (issue 5), and every simulated agent comes from 127.0.0.1.
pub(crate) const ENROLL_PARALLEL: usize = 4;
/// Fan-out tasks per level when `--fanout` is not given (at most K).
const FANOUT: usize = 500;
/// How long the sessions of one level may take to connect.
pub(crate) const RAMP_DEADLINE: Duration = Duration::from_secs(900);

pub fn run(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    let mut levels = ctx.opts.sessions.clone();
    levels.sort_unstable();
    levels.dedup();
    let kmax = *levels.last().context("no session count given")?;
    procfs::check_nofile(ctx.nofile, kmax)?;
    let mut server = BenchServer::start_on(&ctx.run, None, ctx.opts.store)?;
    details["store"] = json!(ctx.opts.store.as_str());
    eprintln!("  store: {}", ctx.opts.store.as_str());
    let fleet_url = server.fleet_url();
    let window = ctx.opts.window;
    let mut metrics = Vec::new();
    let mut level_details = Vec::new();

    let base = procfs::measure(server.pid(), Duration::from_secs(2))?;
    let rt = &ctx.rt;
    let admin = rt.block_on(server.admin())?;

    let t = Instant::now();
    eprintln!("  enrolling {kmax} simulated agents");
    let (identities, ca_pem) = rt.block_on(sim::enroll(
        &admin,
        &fleet_url,
        &ctx.name("sim"),
        kmax,
        ENROLL_PARALLEL,
    ))?;
    let enroll_s = t.elapsed().as_secs_f64();
    metrics.push(
        Metric::figure(
            SCENARIO,
            &format!("enrollments, {kmax} agents"),
            "/s",
            kmax as f64 / enroll_s,
        )
        .note(format!(
            "{enroll_s:.1} s for {kmax}: CreateToken + Enroll (CSR signed), {ENROLL_PARALLEL} at once"
        )),
    );

    let (shared, mut obs) = Shared::new(Some(256));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let guard = StopOnDrop(stop_tx);

    for (li, &k) in levels.iter().enumerate() {
        let t = Instant::now();
        {
            let _enter = rt.enter();
            for (i, identity) in identities.iter().enumerate().take(k).skip(handles.len()) {
                let agent = SimAgent::new(
                    i,
                    identity.clone(),
                    &fleet_url,
                    &ca_pem,
                    Arc::clone(&shared),
                );
                handles.push(tokio::spawn(agent.run(stop_rx.clone())));
            }
        }
        let cpu = CpuSplit::start(server.pid())?;
        wait_connected(&shared, k, RAMP_DEADLINE, &mut server)?;
        let ramp_s = t.elapsed().as_secs_f64();
        let ramp_cpu = cpu.finish(server.pid())?;
        let server_threads = procfs::threads(server.pid())?;
        let (connect_ms, welcome_ms) = connect_times(&mut obs);
        eprintln!("  {k} sessions connected in {ramp_s:.1} s; measuring for {window:?}");
        let ended = shared.ended.load(Ordering::SeqCst);
        let usage: Usage = procfs::measure(server.pid(), window)?;
        let ended_in_window = shared.ended.load(Ordering::SeqCst) - ended;
        let held = shared.connected();
        let (connected_cp, oldest_hb_s) = rt.block_on(async {
            let list = admin
                .clone()
                .list_instances(ListInstancesRequest::default())
                .await?
                .into_inner();
            let now = berth_proto::now_ms();
            let connected: Vec<_> = list
                .instances
                .iter()
                .filter(|i| i.agent_connected)
                .collect();
            let oldest = connected
                .iter()
                .map(|i| (now - i.last_heartbeat_at_ms) as f64 / 1000.0)
                .fold(0.0, f64::max);
            anyhow::Ok((connected.len(), oldest))
        })?;
        let per_k = 1000.0 / k as f64;
        let rss_delta = (usage.rss_mean_mib - base.rss_mean_mib).max(0.0);
        metrics.push(
            Metric::figure(SCENARIO, &format!("sessions held, K={k}"), "", connected_cp.min(held) as f64)
                .target(Target::AtLeast(k as f64))
                .note(format!(
                    "connected in {ramp_s:.1} s (256 handshakes at a time); after {:.0} s: {held} up at the agents, {connected_cp} connected on the control plane, {ended_in_window} dropped",
                    usage.window_s
                )),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("server RSS per 1,000 sessions, K={k}"),
                "MiB",
                rss_delta * per_k,
            )
            .note(format!(
                "server RSS {:.1} MiB, {:.1} MiB before any session",
                usage.rss_mean_mib, base.rss_mean_mib
            )),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("server CPU per 1,000 sessions, K={k}"),
                "% core",
                usage.cpu_percent * per_k,
            )
            .note(format!(
                "server CPU {:.1} % of a core over {:.0} s",
                usage.cpu_percent, usage.window_s
            )),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("oldest stored heartbeat, K={k}"),
                "s",
                oldest_hb_s,
            )
            .target(Target::AtMost(3.0 * HEARTBEAT.as_secs_f64()))
            .note("age of the oldest lastHeartbeatAt of a connected instance after the window"),
        );
        let m = ctx.opts.fanout.unwrap_or(k.min(FANOUT)).clamp(1, k);
        eprintln!("  fan-out: {m} tasks at K={k}");
        let (assigned, running) = fanout(ctx, &admin, &identities[..k], m, li, &mut obs)?;
        let (a50, a99) = p50_p99(&assigned);
        let (r50, r99) = p50_p99(&running);
        let note = format!("{m} RunTask calls, 32 at once, each on another simulated instance");
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("fan-out RunTask -> assignment at agent p50, K={k}"),
                "ms",
                a50,
            )
            .note(note.clone()),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("fan-out RunTask -> assignment at agent p99, K={k}"),
                "ms",
                a99,
            )
            .note(note.clone()),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("fan-out RunTask -> RUNNING stored p50, K={k}"),
                "ms",
                r50,
            )
            .note(note.clone()),
        );
        metrics.push(
            Metric::figure(
                SCENARIO,
                &format!("fan-out RunTask -> RUNNING stored p99, K={k}"),
                "ms",
                r99,
            )
            .note(note),
        );
        let fan = json!({"tasks": m, "assignedP50Ms": a50, "assignedP99Ms": a99, "runningP50Ms": r50, "runningP99Ms": r99});
        level_details.push(json!({
            "sessions": k,
            "held": held,
            "connectedOnControlPlane": connected_cp,
            "droppedInWindow": ended_in_window,
            "rampSeconds": ramp_s,
            "rampCpu": ramp_cpu,
            "rampConnectMsP50P99": connect_ms,
            "rampHelloToWelcomeMsP50P99": welcome_ms,
            "serverThreadsAfterRamp": server_threads,
            "fanout": fan,
            "server": usage,
            "oldestHeartbeatSeconds": oldest_hb_s,
        }));
    }

    // Reconnect storm.
    eprintln!("  reconnect storm: killing and restarting the server");
    let welcomes = shared.welcomes.load(Ordering::SeqCst);
    let killed = Instant::now();
    server.kill();
    let gone_deadline = Instant::now() + Duration::from_secs(120);
    while shared.connected() > 0 {
        if Instant::now() > gone_deadline {
            bail!(
                "{} sessions still up 120 s after the server was killed",
                shared.connected()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let respawned = Instant::now();
    server.respawn()?;
    let cpu = CpuSplit::start(server.pid())?;
    wait_connected(&shared, kmax, RAMP_DEADLINE, &mut server)?;
    let back = Instant::now();
    let storm_cpu = cpu.finish(server.pid())?;
    let storm_s = back.duration_since(respawned).as_secs_f64();
    let storm_kill_s = back.duration_since(killed).as_secs_f64();
    let attempts = shared.welcomes.load(Ordering::SeqCst) - welcomes;
    let after = procfs::measure(server.pid(), Duration::from_secs(2))?;
    metrics.push(
        Metric::figure(SCENARIO, &format!("reconnect storm, K={kmax} back"), "s", storm_s).note(format!(
            "from the new server process; {storm_kill_s:.1} s from the kill; {attempts} Welcomes; server RSS after {:.1} MiB",
            after.rss_mean_mib
        )),
    );

    // Stop the simulated agents.
    drop(guard);
    let errors = rt.block_on(async {
        for h in handles {
            let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        }
        let mut errors: HashMap<String, u64> = HashMap::new();
        while let Ok(o) = obs.try_recv() {
            if let Obs::Ended { code, error, .. } = o {
                *errors.entry(format!("{code:?}: {error}")).or_default() += 1;
            }
        }
        errors
    });
    *details = json!({
        "levels": level_details,
        "serverBefore": base,
        "enrollSeconds": enroll_s,
        "storm": {"fromRespawnSeconds": storm_s, "fromKillSeconds": storm_kill_s, "welcomes": attempts, "cpu": storm_cpu},
        "sessionEndReasons": errors,
    });
    Ok(metrics)
}

/// M `RunTask` calls (32 at once), one per simulated instance of
/// `identities` (spread evenly, shifted by `shift` so that each level picks
/// other instances), and the latencies to the assignment at the agent and
/// to the stored RUNNING event, in ms. Checked: the control plane shows all
/// M RUNNING.
fn fanout(
    ctx: &Ctx,
    admin: &AdminClient<Channel>,
    identities: &[sim::SimIdentity],
    m: usize,
    shift: usize,
    obs: &mut mpsc::UnboundedReceiver<Obs>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let k = identities.len();
    let family = ctx.name("fanout");
    let def = one_container_def(ctx.image.tag(), &family, IDLE, json!({}));
    let targets: Vec<String> = (0..m)
        .map(|i| identities[(i * k / m + shift) % k].instance_id.clone())
        .collect();
    drain(obs);
    ctx.rt.block_on(async {
        let submitted: Vec<(String, Instant)> = futures_util::stream::iter(targets.iter())
            .map(|instance| {
                let mut admin = admin.clone();
                let def = &def;
                async move {
                    let at = Instant::now();
                    let id = run_task(&mut admin, def, instance).await?;
                    anyhow::Ok((id, at))
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let submitted: HashMap<String, Instant> = submitted.into_iter().collect();
        let (mut assigned, mut running) = (HashMap::new(), HashMap::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while running.len() < m || assigned.len() < m {
            match tokio::time::timeout_at(deadline, obs.recv()).await {
                Ok(Some(Obs::Assigned { task_id, at, .. })) if submitted.contains_key(&task_id) => {
                    assigned.insert(task_id, at);
                }
                Ok(Some(Obs::Running { task_id, at })) if submitted.contains_key(&task_id) => {
                    running.insert(task_id, at);
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the simulated agents are gone"),
                Err(_) => bail!(
                    "fan-out: after 600 s, {} of {m} tasks assigned, {} RUNNING",
                    assigned.len(),
                    running.len()
                ),
            }
        }
        let tasks = admin
            .clone()
            .list_tasks(ListTasksRequest::default())
            .await?
            .into_inner()
            .tasks;
        let on_cp = tasks
            .iter()
            .filter_map(|t| t.state.as_ref())
            .filter(|s| submitted.contains_key(&s.task_id) && s.last_status == "RUNNING")
            .count();
        ensure!(
            on_cp == m,
            "the control plane shows {on_cp} of {m} fan-out tasks RUNNING"
        );
        let lat = |seen: &HashMap<String, Instant>| -> Vec<f64> {
            seen.iter()
                .map(|(id, at)| at.duration_since(submitted[id]).as_secs_f64() * 1000.0)
                .collect()
        };
        anyhow::Ok((lat(&assigned), lat(&running)))
    })
}

/// CPU used by the server and by this process (the simulated agents) over
/// a phase, in percent of one core: which side a ramp or storm waits for.
pub(crate) struct CpuSplit {
    at: Instant,
    server: f64,
    agents: f64,
    pressure: Option<(u64, u64)>,
}

impl CpuSplit {
    pub(crate) fn start(server: u32) -> anyhow::Result<CpuSplit> {
        Ok(CpuSplit {
            at: Instant::now(),
            server: procfs::cpu_seconds(server)?,
            agents: procfs::cpu_seconds(std::process::id())?,
            pressure: procfs::pressure_us(),
        })
    }

    pub(crate) fn finish(self, server: u32) -> anyhow::Result<Value> {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        // Share of the phase some task of the machine stalled on CPU or
        // I/O (PSI): a slow phase with idle processes waited for the disk.
        let stalled = match (self.pressure, procfs::pressure_us()) {
            (Some((c0, i0)), Some((c1, i1))) => json!({
                "cpuSomePercent": (c1.saturating_sub(c0)) as f64 / (secs * 1e4),
                "ioSomePercent": (i1.saturating_sub(i0)) as f64 / (secs * 1e4),
            }),
            _ => Value::Null,
        };
        Ok(json!({
            "pressure": stalled,
            "serverCpuPercent": 100.0 * (procfs::cpu_seconds(server)? - self.server) / secs,
            "simulatedAgentsCpuPercent": 100.0 * (procfs::cpu_seconds(std::process::id())? - self.agents) / secs,
            "loadAverage": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        }))
    }
}

/// Tells every simulated agent to stop when dropped (also on failure).
pub(crate) struct StopOnDrop(pub(crate) watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

pub(crate) fn drain(obs: &mut mpsc::UnboundedReceiver<Obs>) {
    while obs.try_recv().is_ok() {}
}

/// p50/p99 of the connection and Hello→Welcome times of the Welcomes
/// waiting in `obs` (the sessions of one ramp); drains `obs`.
fn connect_times(obs: &mut mpsc::UnboundedReceiver<Obs>) -> ([f64; 2], [f64; 2]) {
    let (mut connect, mut welcome) = (Vec::new(), Vec::new());
    while let Ok(o) = obs.try_recv() {
        if let Obs::Welcome {
            connect_ms,
            welcome_ms,
            ..
        } = o
        {
            connect.push(connect_ms);
            welcome.push(welcome_ms);
        }
    }
    let (c50, c99) = p50_p99(&connect);
    let (w50, w99) = p50_p99(&welcome);
    ([c50, c99], [w50, w99])
}

/// Waits until `k` sessions are connected, printing progress.
pub(crate) fn wait_connected(
    shared: &Shared,
    k: usize,
    deadline: Duration,
    server: &mut BenchServer,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut said = Instant::now();
    while shared.connected() < k {
        server.check_running()?;
        if start.elapsed() > deadline {
            bail!(
                "after {deadline:?}, {} of {k} sessions connected ({} ended so far)",
                shared.connected(),
                shared.ended.load(Ordering::SeqCst)
            );
        }
        if said.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "    {} of {k} connected after {:.0} s ({} session ends)",
                shared.connected(),
                start.elapsed().as_secs_f64(),
                shared.ended.load(Ordering::SeqCst)
            );
            said = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
