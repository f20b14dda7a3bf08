//! `berth task run|ls|describe|stop`, and `--wait`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_proto::json::task_json;
use berth_proto::text::escape_control;
use berth_proto::v1::{ListTasksRequest, RunTaskRequest, StopTaskRequest, Task};
use serde_json::Value;

use super::args::{TaskCommand, TaskRunArgs};
use super::client::Admin;
use super::print_json;
use crate::view;

/// How often `--wait` asks for the task's state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

fn task_value(t: &Task) -> Value {
    task_json(
        &t.instance_id,
        &t.state.clone().unwrap_or_default(),
        t.last_seen_at_ms,
    )
}

fn task_id(t: &Task) -> String {
    t.state
        .as_ref()
        .map(|s| s.task_id.clone())
        .unwrap_or_default()
}

pub(super) async fn task(
    server: &str,
    admin_cert: Option<&Path>,
    cmd: TaskCommand,
) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Run(args) => task_run(server, admin_cert, args).await,
        TaskCommand::Ls { instance, json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .list_tasks(ListTasksRequest {
                    instance_id: instance.unwrap_or_default(),
                    ..Default::default()
                })
                .await;
            let tasks = r.map_err(|s| admin.status(s))?.into_inner().tasks;
            if json {
                print_json(&Value::Array(tasks.iter().map(task_value).collect()))
            } else {
                print!("{}", view::tasks_table(&tasks));
                Ok(())
            }
        }
        TaskCommand::Describe { id, json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let t = admin.describe_task(&id).await?;
            if json {
                print_json(&task_value(&t))
            } else {
                print!("{}", view::task_detail(&t, berth_proto::now_ms()));
                Ok(())
            }
        }
        TaskCommand::Stop {
            id,
            reason,
            wait,
            wait_timeout,
            json,
        } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .stop_task(StopTaskRequest {
                    task_id: id,
                    reason: reason.unwrap_or_default(),
                })
                .await;
            let mut t = r.map_err(|s| admin.status(s))?.into_inner();
            let id = task_id(&t);
            if wait {
                t = wait_for(&mut admin, &id, Target::Stopped, wait_timeout).await?;
            }
            if json {
                print_json(&task_value(&t))
            } else {
                println!("{}", escape_control(&id));
                Ok(())
            }
        }
    }
}

async fn task_run(
    server: &str,
    admin_cert: Option<&Path>,
    args: TaskRunArgs,
) -> anyhow::Result<()> {
    let path = &args.task_definition;
    let definition = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task definition {}", path.display()))?;
    let parsed =
        berth_taskdef::parse(&definition).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for w in &parsed.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    let mut admin = Admin::connect(server, admin_cert).await?;
    let r = admin
        .client
        .run_task(RunTaskRequest {
            task_definition_json: definition,
            instance_id: args.instance.unwrap_or_default(),
            ..Default::default()
        })
        .await;
    let mut t = r.map_err(|s| admin.status(s))?.into_inner();
    let id = task_id(&t);
    if !args.json {
        println!("{}", escape_control(&id));
    }
    if args.wait {
        t = wait_for(&mut admin, &id, Target::Running, args.wait_timeout).await?;
    }
    if args.json {
        print_json(&task_value(&t))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Running,
    Stopped,
}

/// Polls the task until it reaches `target`. Waiting for RUNNING fails as
/// soon as the task is STOPPED, with its stop code and reason.
async fn wait_for(
    admin: &mut Admin,
    id: &str,
    target: Target,
    timeout: Duration,
) -> anyhow::Result<Task> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = admin.describe_task(id).await?;
        let state = t.state.clone().unwrap_or_default();
        match (target, state.last_status.as_str()) {
            (Target::Running, "RUNNING") | (Target::Stopped, "STOPPED") => return Ok(t),
            (Target::Running, "STOPPED") => {
                let or = |s: &str, d: &str| {
                    if s.is_empty() {
                        d.to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                bail!(
                    "task {id} stopped: {}: {}",
                    or(&state.stop_code, "no stop code"),
                    or(&state.stopped_reason, "no reason given")
                );
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let want = match target {
                Target::Running => "RUNNING",
                Target::Stopped => "STOPPED",
            };
            bail!(
                "timed out after {} waiting for task {id} to be {want} (last status {})",
                humantime::format_duration(timeout),
                if state.last_status.is_empty() {
                    "unknown"
                } else {
                    &state.last_status
                }
            );
        }
    }
}
