//! `berth service create|update|ls|describe|events|delete|rollback`, and
//! `--wait`.
//!
//! The flags are turned into the body of `aws ecs create-service` /
//! `update-service` (merged over `--cli-input-json`, flags winning), so the
//! control plane reads one shape whatever the client.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_proto::text::escape_control;
use berth_proto::v1::{
    CreateServiceRequest, DeleteServiceRequest, ListServicesRequest, RegisterTaskDefinitionRequest,
    ServiceDescription, ServiceRef, UpdateServiceRequest,
};
use serde_json::{Map, Value, json};

use super::args::{ServiceArgs, ServiceCommand, ServiceFlags, WaitArgs};
use super::client::Admin;
use super::print_json;
use crate::server::placement::strategy::{Constraint, Strategy};
use crate::server::service::config::{MAX_INPUT_BYTES, constraints_json, strategies_json};

/// How often `--wait` asks for the service's state.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub(super) async fn service(admin: &mut Admin, args: ServiceArgs) -> anyhow::Result<()> {
    let cluster = args.cluster;
    match args.command {
        ServiceCommand::Create(a) => {
            let mut body = input_file(a.cli_input_json.as_deref())?;
            if let Some(n) = a.name {
                body.insert("serviceName".into(), json!(n));
            }
            if let Some(s) = a.scheduling_strategy {
                body.insert("schedulingStrategy".into(), json!(s));
            }
            let (min_healthy, lost_after) = apply_flags(admin, &mut body, &a.flags).await?;
            let req = CreateServiceRequest {
                cluster: cluster.clone(),
                input_json: Value::Object(body).to_string(),
                min_healthy_time_ms: min_healthy,
                lost_after_ms: lost_after,
            };
            let r = admin.client.create_service(req).await;
            let d = r.map_err(|s| admin.status(s))?.into_inner();
            finish(admin, d, &a.wait, a.json, "created").await
        }
        ServiceCommand::Update(a) => {
            let mut body = input_file(a.cli_input_json.as_deref())?;
            if let Some(n) = a.name {
                body.insert("service".into(), json!(n));
            }
            if a.force_new_deployment {
                body.insert("forceNewDeployment".into(), json!(true));
            }
            let (min_healthy, lost_after) = apply_flags(admin, &mut body, &a.flags).await?;
            let req = UpdateServiceRequest {
                cluster: cluster.clone(),
                input_json: Value::Object(body).to_string(),
                min_healthy_time_ms: min_healthy,
                lost_after_ms: lost_after,
            };
            let r = admin.client.update_service(req).await;
            let d = r.map_err(|s| admin.status(s))?.into_inner();
            finish(admin, d, &a.wait, a.json, "updated").await
        }
        ServiceCommand::Ls { json } => {
            let r = admin
                .client
                .list_services(ListServicesRequest { cluster })
                .await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().services;
            let values: Vec<Value> = list.iter().map(value).collect();
            if json {
                print_json(&Value::Array(values))
            } else {
                print!("{}", table(&values));
                Ok(())
            }
        }
        ServiceCommand::Describe { name, json } => {
            let d = describe(admin, &cluster, &name).await?;
            if json {
                print_json(&value(&d))
            } else {
                print!("{}", details(&value(&d)));
                Ok(())
            }
        }
        ServiceCommand::Events { name, json } => {
            let d = describe(admin, &cluster, &name).await?;
            let v = value(&d);
            let events = v.get("events").cloned().unwrap_or(json!([]));
            if json {
                print_json(&events)
            } else {
                for e in events.as_array().into_iter().flatten() {
                    println!(
                        "{}  {}",
                        str_of(e, "createdAt"),
                        escape_control(str_of(e, "message"))
                    );
                }
                Ok(())
            }
        }
        ServiceCommand::Delete { name, force, json } => {
            let r = admin
                .client
                .delete_service(DeleteServiceRequest {
                    cluster,
                    name,
                    force,
                })
                .await;
            let d = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&value(&d))
            } else {
                println!(
                    "service {} deleted: its tasks are being stopped",
                    escape_control(&d.name)
                );
                Ok(())
            }
        }
        ServiceCommand::Rollback { name, wait, json } => {
            let r = admin
                .client
                .rollback_service(ServiceRef { cluster, name })
                .await;
            let d = r.map_err(|s| admin.status(s))?.into_inner();
            finish(admin, d, &wait, json, "rolling back").await
        }
    }
}

async fn describe(
    admin: &mut Admin,
    cluster: &str,
    name: &str,
) -> anyhow::Result<ServiceDescription> {
    let r = admin
        .client
        .describe_service(ServiceRef {
            cluster: cluster.to_owned(),
            name: name.to_owned(),
        })
        .await;
    Ok(r.map_err(|s| admin.status(s))?.into_inner())
}

/// The body in `--cli-input-json`, or an empty one.
fn input_file(path: Option<&Path>) -> anyhow::Result<Map<String, Value>> {
    let Some(path) = path else {
        return Ok(Map::new());
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read --cli-input-json {}", path.display()))?;
    if meta.len() > MAX_INPUT_BYTES as u64 {
        bail!(
            "--cli-input-json {}: {} bytes, at most {MAX_INPUT_BYTES} are read",
            path.display(),
            meta.len()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --cli-input-json {}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!(
            "--cli-input-json {}: expected a JSON object",
            path.display()
        ),
        Err(e) => bail!("--cli-input-json {}: not valid JSON: {e}", path.display()),
    }
}

fn millis(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Puts the flags into the body; returns berth's own durations.
async fn apply_flags(
    admin: &mut Admin,
    body: &mut Map<String, Value>,
    f: &ServiceFlags,
) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    if let Some(td) = &f.task_definition {
        let name = task_definition(admin, td).await?;
        body.insert("taskDefinition".into(), json!(name));
    }
    if let Some(n) = f.desired_count {
        body.insert("desiredCount".into(), json!(n));
    }
    let has_deployment =
        f.min_healthy_percent.is_some() || f.max_percent.is_some() || f.circuit_breaker.is_some();
    if has_deployment {
        let dc = body
            .entry("deploymentConfiguration")
            .or_insert_with(|| json!({}));
        let Value::Object(dc) = dc else {
            bail!("--cli-input-json: deploymentConfiguration: expected a JSON object");
        };
        if let Some(p) = f.min_healthy_percent {
            dc.insert("minimumHealthyPercent".into(), json!(p));
        }
        if let Some(p) = f.max_percent {
            dc.insert("maximumPercent".into(), json!(p));
        }
        if let Some(b) = &f.circuit_breaker {
            dc.insert(
                "deploymentCircuitBreaker".into(),
                json!({"enable": b != "off", "rollback": b == "rollback"}),
            );
        }
    }
    if !f.placement_strategy.is_empty() {
        let list = f
            .placement_strategy
            .iter()
            .map(|s| {
                s.parse::<Strategy>()
                    .map_err(|e| anyhow!("--placement-strategy {s:?}: {}", e.0))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        body.insert("placementStrategy".into(), strategies_json(&list));
    }
    if !f.placement_constraint.is_empty() {
        let list = f
            .placement_constraint
            .iter()
            .map(|c| {
                c.parse::<Constraint>()
                    .map_err(|e| anyhow!("--placement-constraint {c:?}: {}", e.0))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        body.insert("placementConstraints".into(), constraints_json(&list));
    }
    if let Some(g) = f.health_check_grace_period {
        body.insert("healthCheckGracePeriodSeconds".into(), json!(g));
    }
    Ok((millis(f.min_healthy_time), millis(f.lost_after)))
}

/// A `--task-definition` that names a file is registered (or its equal
/// latest revision used): `family:revision`.
async fn task_definition(admin: &mut Admin, arg: &str) -> anyhow::Result<String> {
    let path = Path::new(arg);
    if !path.exists() {
        return Ok(arg.to_owned());
    }
    let definition = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task definition {}", path.display()))?;
    let parsed =
        berth_taskdef::parse(&definition).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for w in &parsed.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    let r = admin
        .client
        .register_task_definition(RegisterTaskDefinitionRequest {
            task_definition_json: definition,
            reuse_latest_if_equal: true,
        })
        .await;
    let rec = r.map_err(|s| admin.status(s))?.into_inner();
    Ok(format!("{}:{}", rec.family, rec.revision))
}

/// The DescribeServices element of a description.
fn value(d: &ServiceDescription) -> Value {
    serde_json::from_str(&d.service_json).unwrap_or(Value::Null)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Prints the result of a change, after `--wait` when asked.
async fn finish(
    admin: &mut Admin,
    d: ServiceDescription,
    wait: &WaitArgs,
    json: bool,
    what: &str,
) -> anyhow::Result<()> {
    let d = if wait.wait {
        wait_steady(admin, d, wait.wait_timeout).await?
    } else {
        d
    };
    if json {
        print_json(&value(&d))
    } else {
        let v = value(&d);
        let primary = primary_id(&d);
        let state = if d.steady { "steady" } else { what };
        println!(
            "service {} {state}: {} desired {}, deployment {primary}",
            escape_control(&d.name),
            escape_control(str_of(&v, "taskDefinition")),
            num_of(&v, "desiredCount"),
        );
        Ok(())
    }
}

/// Polls until the service is steady; fails when the deployment this
/// change started fails (or is rolled back), naming the reason.
async fn wait_steady(
    admin: &mut Admin,
    first: ServiceDescription,
    timeout: Duration,
) -> anyhow::Result<ServiceDescription> {
    let started = primary_id(&first);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut d = first;
    let progress = std::io::stderr().is_terminal();
    let done = |progress: bool| {
        if progress {
            eprintln!();
        }
    };
    loop {
        if primary_id(&d) != started {
            done(progress);
            let v = value(&d);
            let failed = v
                .get("deployments")
                .and_then(|x| x.as_array())
                .and_then(|x| x.iter().find(|x| str_of(x, "id") == started))
                .map(|x| str_of(x, "rolloutStateReason").to_owned())
                .unwrap_or_default();
            bail!(
                "service {}: deployment {started} did not complete{}; deployment {} replaced it",
                d.name,
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({failed})")
                },
                primary_id(&d)
            );
        }
        if d.rollout_state == "FAILED" {
            done(progress);
            bail!(
                "service {}: deployment {started} failed: {}",
                d.name,
                d.rollout_state_reason
            );
        }
        if d.steady {
            done(progress);
            return Ok(d);
        }
        if d.status != "ACTIVE" {
            done(progress);
            bail!("service {} was deleted while waiting", d.name);
        }
        if tokio::time::Instant::now() >= deadline {
            done(progress);
            let v = value(&d);
            bail!(
                "timed out after {} waiting for service {} to reach a steady state ({} running of {} desired; last event: {})",
                humantime::format_duration(timeout),
                d.name,
                num_of(&v, "runningCount"),
                num_of(&v, "desiredCount"),
                v.get("events")
                    .and_then(|e| e.get(0))
                    .map(|e| str_of(e, "message").to_owned())
                    .unwrap_or_else(|| "none".to_owned())
            );
        }
        if progress {
            eprint!("\r\x1b[2K{}", progress_line(&d));
        }
        tick.tick().await;
        let (cluster, name) = (d.cluster.clone(), d.name.clone());
        d = describe(admin, &cluster, &name).await?;
    }
}

/// One line of `--wait`'s progress on a terminal: each deployment's
/// desired, running and pending counts.
fn progress_line(d: &ServiceDescription) -> String {
    let v = value(d);
    let mut line = format!("{}:", escape_control(&d.name));
    for x in v
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        line.push_str(&format!(
            " {} {} {}/{} running, {} pending;",
            str_of(x, "status"),
            escape_control(str_of(x, "taskDefinition")),
            num_of(x, "runningCount"),
            num_of(x, "desiredCount"),
            num_of(x, "pendingCount"),
        ));
    }
    line.pop();
    line
}

fn primary_id(d: &ServiceDescription) -> String {
    value(d)
        .get("deployments")
        .and_then(|x| x.as_array())
        .and_then(|x| x.iter().find(|x| str_of(x, "status") == "PRIMARY"))
        .map(|x| str_of(x, "id").to_owned())
        .unwrap_or_default()
}

/// `service ls`: one line per service.
fn table(services: &[Value]) -> String {
    let mut out = format!(
        "{:<28} {:<9} {:<8} {:<24} {:>7} {:>7} {:>7}\n",
        "NAME", "STATUS", "TYPE", "TASK DEFINITION", "DESIRED", "RUNNING", "PENDING"
    );
    for s in services {
        out.push_str(&format!(
            "{:<28} {:<9} {:<8} {:<24} {:>7} {:>7} {:>7}\n",
            escape_control(str_of(s, "serviceName")),
            str_of(s, "status"),
            str_of(s, "schedulingStrategy"),
            escape_control(str_of(s, "taskDefinition")),
            num_of(s, "desiredCount"),
            num_of(s, "runningCount"),
            num_of(s, "pendingCount"),
        ));
    }
    out
}

/// `service describe`: the service, its deployments and its last events.
fn details(s: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<18} {v}\n"));
    line(
        &mut out,
        "Service",
        escape_control(str_of(s, "serviceName")).into_owned(),
    );
    line(
        &mut out,
        "Cluster",
        escape_control(str_of(s, "clusterName")).into_owned(),
    );
    line(&mut out, "Status", str_of(s, "status").to_owned());
    line(
        &mut out,
        "Scheduling",
        str_of(s, "schedulingStrategy").to_owned(),
    );
    line(
        &mut out,
        "Task definition",
        escape_control(str_of(s, "taskDefinition")).into_owned(),
    );
    line(
        &mut out,
        "Tasks",
        format!(
            "{} desired, {} running, {} pending",
            num_of(s, "desiredCount"),
            num_of(s, "runningCount"),
            num_of(s, "pendingCount")
        ),
    );
    let dc = s
        .get("deploymentConfiguration")
        .cloned()
        .unwrap_or_default();
    let cb = dc
        .get("deploymentCircuitBreaker")
        .cloned()
        .unwrap_or_default();
    line(
        &mut out,
        "Deployment",
        format!(
            "minimum healthy {}%, maximum {}%, circuit breaker {}",
            num_of(&dc, "minimumHealthyPercent"),
            num_of(&dc, "maximumPercent"),
            match (
                cb.get("enable").and_then(Value::as_bool),
                cb.get("rollback").and_then(Value::as_bool)
            ) {
                (Some(true), Some(true)) => "rollback",
                (Some(true), _) => "enable",
                _ => "off",
            }
        ),
    );
    out.push_str("\nDEPLOYMENT                    STATUS   ROLLOUT      TASK DEFINITION          DESIRED RUNNING PENDING FAILED\n");
    for d in s
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "{:<29} {:<8} {:<12} {:<24} {:>7} {:>7} {:>7} {:>6}\n",
            str_of(d, "id"),
            str_of(d, "status"),
            str_of(d, "rolloutState"),
            escape_control(str_of(d, "taskDefinition")),
            num_of(d, "desiredCount"),
            num_of(d, "runningCount"),
            num_of(d, "pendingCount"),
            num_of(d, "failedTasks"),
        ));
    }
    out.push_str("\nEVENTS\n");
    for e in s
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(10)
    {
        out.push_str(&format!(
            "{}  {}\n",
            str_of(e, "createdAt"),
            escape_control(str_of(e, "message"))
        ));
    }
    out
}
