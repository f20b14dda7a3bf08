//! `berth task run|ls|describe|stop`, and `--wait`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_proto::json::admin_task_json;
use berth_proto::text::escape_control;
use berth_proto::v1::{ListTasksRequest, RunTaskRequest, RunTaskResponse, StopTaskRequest, Task};
use serde_json::{Value, json};

use super::args::{TaskCommand, TaskRunArgs};
use super::client::Admin;
use super::print_json;
use crate::server::taskdefs::{MAX_COUNT, TaskDefRef};
use crate::view;

/// How often `--wait` asks for the task's state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

fn task_value(t: &Task) -> Value {
    admin_task_json(t)
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
        TaskCommand::Ls {
            instance,
            cluster,
            json,
        } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .list_tasks(ListTasksRequest {
                    instance_id: instance.unwrap_or_default(),
                    cluster: cluster.unwrap_or_default(),
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
                let ids = [id.clone()];
                let stopped = wait_for(&mut admin, &ids, Target::Stopped, wait_timeout).await?;
                t = stopped.into_iter().next().unwrap_or(t);
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

/// What `--task-definition` names: a file that exists, else a registered
/// FAMILY[:REV].
fn definition_source(arg: &str) -> anyhow::Result<RunTaskRequest> {
    let path = Path::new(arg);
    if path.exists() {
        let definition = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read task definition {}", path.display()))?;
        let parsed =
            berth_taskdef::parse(&definition).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        for w in &parsed.warnings {
            eprintln!("warning: {}: {w}", path.display());
        }
        return Ok(RunTaskRequest {
            task_definition_json: definition,
            ..Default::default()
        });
    }
    match TaskDefRef::parse(arg) {
        Ok(r) => Ok(RunTaskRequest {
            task_definition: r.to_string(),
            ..Default::default()
        }),
        Err(e) => bail!(
            "--task-definition {arg:?} is neither an existing file nor a registered FAMILY[:REV] ({e})"
        ),
    }
}

async fn task_run(
    server: &str,
    admin_cert: Option<&Path>,
    args: TaskRunArgs,
) -> anyhow::Result<()> {
    if !(1..=MAX_COUNT).contains(&args.count) {
        bail!(
            "--count {}: berth task run starts 1 to {MAX_COUNT} tasks at once",
            args.count
        );
    }
    let request = RunTaskRequest {
        instance_id: args.instance.unwrap_or_default(),
        cluster: args.cluster,
        count: args.count,
        started_by: args.started_by.unwrap_or_default(),
        group: args.group.unwrap_or_default(),
        placement_strategies: args.placement_strategy,
        placement_constraints: args.placement_constraint,
        ..definition_source(&args.task_definition)?
    };
    let mut admin = Admin::connect(server, admin_cert).await?;
    let r = admin.client.run_task(request).await;
    let RunTaskResponse {
        mut tasks,
        failures,
    } = r.map_err(|s| admin.status(s))?.into_inner();
    let ids: Vec<String> = tasks.iter().map(task_id).collect();
    if !args.json {
        for id in &ids {
            println!("{}", escape_control(id));
        }
    }
    if args.wait && !ids.is_empty() {
        tasks = wait_for(&mut admin, &ids, Target::Running, args.wait_timeout).await?;
    }
    if args.json {
        if args.count > 1 {
            // Several tasks: ECS' RunTask answer.
            print_json(&json!({
                "tasks": tasks.iter().map(task_value).collect::<Vec<_>>(),
                "failures": failures.iter().map(|f| json!({ "reason": f })).collect::<Vec<_>>(),
            }))?;
        } else if let Some(t) = tasks.first() {
            print_json(&task_value(t))?;
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} tasks could not be started: {}",
            failures.len(),
            args.count,
            failures.join("; ")
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Running,
    Stopped,
}

/// Polls the tasks until every one has reached `target` (returned in the
/// order of `ids`). Waiting for RUNNING fails as soon as one is STOPPED,
/// with its stop code and reason.
async fn wait_for(
    admin: &mut Admin,
    ids: &[String],
    target: Target,
    timeout: Duration,
) -> anyhow::Result<Vec<Task>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reached: Vec<Option<Task>> = vec![None; ids.len()];
    loop {
        tick.tick().await;
        let mut waiting = None;
        for (id, done) in ids.iter().zip(reached.iter_mut()) {
            if done.is_some() {
                continue;
            }
            let t = admin.describe_task(id).await?;
            let state = t.state.clone().unwrap_or_default();
            match (target, state.last_status.as_str()) {
                (Target::Running, "RUNNING") | (Target::Stopped, "STOPPED") => *done = Some(t),
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
                _ => {
                    waiting.get_or_insert((id, state.last_status));
                }
            }
        }
        let Some((id, last_status)) = waiting else {
            return Ok(reached.into_iter().flatten().collect());
        };
        if tokio::time::Instant::now() >= deadline {
            let want = match target {
                Target::Running => "RUNNING",
                Target::Stopped => "STOPPED",
            };
            bail!(
                "timed out after {} waiting for task {id} to be {want} (last status {})",
                humantime::format_duration(timeout),
                if last_status.is_empty() {
                    "unknown"
                } else {
                    &last_status
                }
            );
        }
    }
}
