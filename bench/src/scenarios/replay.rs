//! Scenario 6, event replay: an agent comes back after an outage with E
//! queued events; time until the control plane has acknowledged them all.
//!
//! A simulated agent ([`crate::sim`]) runs T = min(10, E) tasks the control
//! plane assigned to it, loses its session (the outage), and queues E
//! events meanwhile: its containers kept restarting, so event `i` reports
//! task `i mod T` RUNNING with a restart count one higher. Then it connects
//! and does what `berth-agent` does: Hello with its last sequence, every
//! event above the Welcome's `applied_event_sequence` sent at once, the
//! outbox trimmed by EventAcks, and on a session end a reconnect with
//! full-jitter back-off, replaying the rest.
//!
//! The control plane limits each agent stream to 200 messages a second
//! (burst 1000) and ends a session that sends faster with
//! RESOURCE_EXHAUSTED (nothing is lost: the agent replays what was not
//! acknowledged). So E = 10,000 takes at least (E − 1000) / 200 = 45 s
//! whatever the store does; the number of sessions it took is reported.
//!
//! Checked: a new session's Welcome says the server applied the last
//! sequence, and every task's `restartCount` on the control plane is the
//! one of its last event.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_e2e::DEADLINE;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Ctx;
use crate::cluster::{BenchServer, IDLE, one_container_def, run_task, tasks_of, wait_tasks_status};
use crate::report::Metric;
use crate::sim::{self, Obs, Shared, SimAgent};

const SCENARIO: &str = "replay";
const REPLAY_DEADLINE: Duration = Duration::from_secs(900);

pub fn run(ctx: &Ctx, details: &mut Value) -> anyhow::Result<Vec<Metric>> {
    let events = ctx.opts.events.max(1);
    let tasks = events.min(10);
    let server = BenchServer::start(&ctx.run, None)?;
    let fleet_url = server.fleet_url();
    let image = ctx.image.tag().to_string();
    let family = ctx.name("replay");

    let out = ctx.rt.block_on(async {
        let mut admin = server.admin().await?;
        let (ids, ca_pem) = sim::enroll(&admin, &fleet_url, &ctx.name("replay"), 1, 1).await?;
        let identity = ids.into_iter().next().context("no identity enrolled")?;
        let instance = identity.instance_id.clone();
        let (shared, mut obs) = Shared::new(None);
        let agent = SimAgent::new(0, identity, &fleet_url, &ca_pem, shared).report_acks();

        // Before the outage: T tasks RUNNING.
        let (stop, running) = spawn(agent);
        // The instance has capacity once its Hello is stored.
        loop {
            match tokio::time::timeout(DEADLINE, obs.recv()).await {
                Ok(Some(Obs::Welcome { .. })) => break,
                Ok(Some(_)) => {}
                _ => bail!("the simulated agent got no Welcome"),
            }
        }
        let def = one_container_def(&image, &family, IDLE, json!({}));
        let mut task_ids = Vec::new();
        for _ in 0..tasks {
            task_ids.push(run_task(&mut admin, &def, &instance).await?);
        }
        wait_tasks_status(&mut admin, &instance, &task_ids, "RUNNING", DEADLINE).await?;
        let _ = stop.send(true);
        let mut agent = running.await?;

        // The outage: E events queue up.
        let expected = agent.queue_restarts(events);
        let last = agent.last_seq();
        ensure!(
            agent.outbox_len() >= events,
            "the simulated agent queued {} events, not {events}",
            agent.outbox_len()
        );
        while obs.try_recv().is_ok() {}

        // Back: replay until the last event is acknowledged.
        let t0 = Instant::now();
        let (stop, running) = spawn(agent);
        let (mut sessions, mut ends) = (0u64, Vec::new());
        // Per session: when its Welcome came, the sequence it resumed from,
        // the last acknowledgement and its sequence.
        let mut spans: Vec<Span> = Vec::new();
        let deadline = tokio::time::Instant::now() + REPLAY_DEADLINE;
        let done = loop {
            match tokio::time::timeout_at(deadline, obs.recv()).await {
                Ok(Some(Obs::Welcome { at, applied, .. })) => {
                    sessions += 1;
                    spans.push(Span { welcome: at, from: applied, last_ack: at, acked: applied });
                }
                Ok(Some(Obs::Ended { code, error, .. })) => ends.push(format!("{code:?}: {error}")),
                Ok(Some(Obs::Acked { seq, at, .. })) => {
                    if let Some(span) = spans.last_mut() {
                        span.last_ack = at;
                        span.acked = seq;
                    }
                    if seq >= last {
                        break at;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => bail!("the simulated agent is gone"),
                Err(_) => bail!("after {REPLAY_DEADLINE:?} the last event ({last}) is not acknowledged; {sessions} sessions"),
            }
        };
        let elapsed = done.duration_since(t0).as_secs_f64();
        // While a session streams, the control plane applies at this rate;
        // the rest of the time is reconnecting.
        let streaming: f64 = spans
            .iter()
            .map(|s| s.last_ack.duration_since(s.welcome).as_secs_f64())
            .sum();
        let streamed: u64 = spans.iter().map(|s| s.acked.saturating_sub(s.from)).sum();
        let per_session: Vec<Value> = spans
            .iter()
            .map(|s| json!({"from": s.from, "acked": s.acked, "seconds": s.last_ack.duration_since(s.welcome).as_secs_f64()}))
            .collect();
        let _ = stop.send(true);
        let agent = running.await?;
        ensure!(agent.outbox_len() == 0, "{} events left in the outbox", agent.outbox_len());

        // What the server applied: a new session's Welcome, and the tasks.
        let (stop, running) = spawn(agent);
        let applied = loop {
            match tokio::time::timeout(DEADLINE, obs.recv()).await {
                Ok(Some(Obs::Welcome { applied, .. })) => break applied,
                Ok(Some(_)) => {}
                _ => bail!("no Welcome for the check session"),
            }
        };
        let _ = stop.send(true);
        let _ = running.await?;
        ensure!(applied == last, "the server applied sequence {applied}, the agent sent up to {last}");
        let states = tasks_of(&mut admin, &instance).await?;
        for (id, want) in &expected {
            let got = states
                .iter()
                .find(|t| &t.task_id == id)
                .and_then(|t| t.containers.first())
                .map(|c| c.restart_count)
                .with_context(|| format!("task {id} not on the control plane"))?;
            ensure!(got == *want, "task {id}: restartCount {got} on the control plane, {want} in the last event");
        }
        anyhow::Ok((elapsed, sessions, ends, last, streaming, streamed, per_session))
    })?;
    let (elapsed, sessions, ends, last, streaming, streamed, per_session) = out;
    let rate_limited = ends
        .iter()
        .filter(|e| e.contains("ResourceExhausted"))
        .count();
    *details = json!({
        "events": events,
        "tasks": tasks,
        "lastSequence": last,
        "seconds": elapsed,
        "sessions": sessions,
        "sessionEnds": ends,
        "streamingSeconds": streaming,
        "perSession": per_session,
    });
    Ok(vec![
        Metric::figure(SCENARIO, &format!("deliver + acknowledge {events} queued events"), "s", elapsed).note(format!(
            "{sessions} session(s), {rate_limited} ended by the 200/s (burst 1000) stream limit; all applied (last sequence {last})"
        )),
        Metric::figure(SCENARIO, "replay throughput", "events/s", events as f64 / elapsed),
        Metric::figure(
            SCENARIO,
            "control plane apply rate while a session streams",
            "events/s",
            if streaming > 0.0 { streamed as f64 / streaming } else { 0.0 },
        )
        .note(format!("{streaming:.1} s of {elapsed:.1} s streaming; the rest reconnect back-off")),
    ])
}

struct Span {
    welcome: Instant,
    from: u64,
    last_ack: Instant,
    acked: u64,
}

fn spawn(agent: SimAgent) -> (watch::Sender<bool>, tokio::task::JoinHandle<SimAgent>) {
    let (stop, rx) = watch::channel(false);
    (stop, tokio::spawn(agent.run(rx)))
}
