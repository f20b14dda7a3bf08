//! The admin API of services (ECS `CreateService`, `UpdateService`,
//! `ListServices`, `DescribeServices`, `DeleteService`, and berth's
//! rollback).
//!
//! The handlers read the ECS body ([`config::read_input`]), resolve the task
//! definition in the registry, check the configuration
//! ([`ServiceConfig::create`] / [`ServiceConfig::updated`]) and store the
//! change in one transaction; the service controller
//! (`service::controller`) does the rest and is woken at once. An update
//! that starts a deployment (another task definition, or
//! `forceNewDeployment`) creates a new PRIMARY deployment; the one before
//! becomes ACTIVE and is replaced by the rolling rules. A delete sets the
//! service DRAINING (its tasks are stopped; it is INACTIVE once none is
//! left); without `force` a REPLICA service must be scaled to 0 first, as
//! in ECS.
//!
//! The controller bumps a service's generation on every plan it stores, so
//! an operator's change read-modify-writes under the generation and tries
//! again (a few times) when a pass came in between.

use berth_proto::json::{LOCAL_ARN_PREFIX, cluster_arn, time_json};
use berth_proto::v1::{
    CreateServiceRequest, DeleteServiceRequest, ListServicesRequest, ListServicesResponse,
    ServiceDescription, ServiceRef, UpdateServiceRequest,
};
use serde_json::{Value, json};
use tonic::Status;
use tracing::info;

use super::core::{Core, store_status};
use super::scheduler::{self, ScheduleError};
use super::service::config::{Body, ConfigError, ServiceConfig, ServiceInput, read_input};
use super::service::controller::new_deployment_id;
use super::service::model::SchedulingStrategy;
use super::store::{
    ACTIVE, DEFAULT_CLUSTER, DeploymentRecord, INACTIVE, PENDING, RUNNING, SERVICE_DRAINING,
    STOPPED, ServiceEventRecord, ServiceRecord, ServiceSnapshot, ServiceUpdate, StoreError,
    TaskDefinitionRecord,
};
use super::taskdefs::resolve_active;

/// How many times an operator's change is tried again when a controller
/// pass changed the service in between.
const UPDATE_ATTEMPTS: u32 = 10;

fn invalid(e: ConfigError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// The status of a store error from a service operation.
pub(crate) fn service_status(e: StoreError) -> Status {
    match e {
        StoreError::ServiceExists { .. } => Status::already_exists(e.to_string()),
        StoreError::NoService { .. } | StoreError::NoCluster(_) => Status::not_found(e.to_string()),
        StoreError::ClusterInactive(_) => Status::failed_precondition(e.to_string()),
        other => store_status(other),
    }
}

fn cluster_of(body: &Option<String>, req: &str) -> String {
    let c = body.as_deref().unwrap_or(req).trim();
    // A cluster ARN names the cluster after `cluster/`.
    let c = c.rsplit_once(":cluster/").map_or(c, |(_, n)| n);
    if c.is_empty() {
        DEFAULT_CLUSTER.to_owned()
    } else {
        c.to_owned()
    }
}

fn service_name(input: &ServiceInput, member: &str) -> Result<String, Status> {
    let n = input.name.as_deref().map(str::trim).unwrap_or_default();
    // A service ARN names the service last.
    let n = n.rsplit_once('/').map_or(n, |(_, n)| n);
    if n.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{member}: name the service"
        )));
    }
    Ok(n.to_owned())
}

/// `CreateService`.
pub(crate) async fn create(
    core: &Core,
    req: CreateServiceRequest,
) -> Result<ServiceDescription, Status> {
    let input = read_input(&req.input_json, Body::Create).map_err(invalid)?;
    let cluster = cluster_of(&input.cluster, &req.cluster);
    let name = service_name(&input, "serviceName")?;
    let config = ServiceConfig::create(
        &cluster,
        &name,
        &input,
        req.min_healthy_time_ms,
        req.lost_after_ms,
    )
    .map_err(invalid)?;
    let Some(td) = input.task_definition.as_deref() else {
        return Err(Status::invalid_argument(
            "taskDefinition: name the task definition the service runs (FAMILY, FAMILY:REVISION or a file)",
        ));
    };
    let td = resolve_active(core, td).await?;
    refuse_unplaceable(core, &cluster, &td).await?;
    let now = berth_proto::now_ms();
    let record = ServiceRecord {
        cluster: cluster.clone(),
        name: name.clone(),
        status: ACTIVE.to_owned(),
        config_json: config.to_json(),
        desired_count: config.spec.desired(),
        task_definition: td.name(),
        generation: 0,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let first = new_deployment(&record, &td.name(), now);
    let created = core
        .db("create_service", move |s| {
            s.create_service(&record, &first, &[])
        })
        .await
        .map_err(service_status)?;
    info!(cluster = %created.cluster, service = %created.name, task_definition = %created.task_definition, desired_count = created.desired_count, "service created");
    core.wake_services();
    describe_named(core, &created.cluster, &created.name).await
}

/// Refuses a task definition that no ACTIVE instance of the cluster could
/// ever run (SPEC §6: refused up front, not PENDING forever).
async fn refuse_unplaceable(
    core: &Core,
    cluster: &str,
    td: &TaskDefinitionRecord,
) -> Result<(), Status> {
    super::secrets::refuse_unresolvable(core, &td.definition_json).await?;
    match scheduler::never_placeable(core, cluster, &td.definition_json).await {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(Status::failed_precondition(format!(
            "task definition {} can never be placed in cluster {cluster}: {why}",
            td.name()
        ))),
        Err(ScheduleError::Store(e)) => Err(service_status(e)),
        Err(e) => Err(Status::invalid_argument(e.to_string())),
    }
}

fn new_deployment(svc: &ServiceRecord, task_definition: &str, now: i64) -> DeploymentRecord {
    DeploymentRecord {
        id: new_deployment_id(),
        cluster: svc.cluster.clone(),
        service: svc.name.clone(),
        task_definition: task_definition.to_owned(),
        status: "PRIMARY".to_owned(),
        rollout_state: "IN_PROGRESS".to_owned(),
        rollout_state_reason: "ECS deployment in progress.".to_owned(),
        created_at_ms: now,
        updated_at_ms: now,
        ..DeploymentRecord::default()
    }
}

async fn snapshot(core: &Core, cluster: &str, name: &str) -> Result<ServiceSnapshot, Status> {
    let (c, n) = (cluster.to_owned(), name.to_owned());
    core.db("service_snapshot", move |s| s.service_snapshot(&c, &n))
        .await
        .map_err(service_status)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "no service {name} in cluster {cluster}: `berth service ls --cluster {cluster}` lists them"
            ))
        })
}

fn not_active(snap: &ServiceSnapshot) -> Result<(), Status> {
    if snap.service.status == ACTIVE {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "service {} was deleted ({}): nothing may change it; create it again",
        snap.service.name, snap.service.status
    )))
}

/// Reads the service, computes a change and stores it under the
/// generation it read; again when a controller pass came in between.
async fn change<F>(
    core: &Core,
    cluster: &str,
    name: &str,
    op: &'static str,
    mut f: F,
) -> Result<ServiceRecord, Status>
where
    F: FnMut(&ServiceSnapshot) -> Result<ServiceUpdate, Status>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let snap = snapshot(core, cluster, name).await?;
        let update = f(&snap)?;
        let (c, n, g) = (cluster.to_owned(), name.to_owned(), snap.service.generation);
        match core
            .db(op, move |s| s.update_service(&c, &n, g, &update))
            .await
        {
            Ok(rec) => {
                core.wake_services();
                return Ok(rec);
            }
            Err(StoreError::Conflict { .. }) if tries < UPDATE_ATTEMPTS => continue,
            Err(e) => return Err(service_status(e)),
        }
    }
}

fn stored_config(svc: &ServiceRecord) -> Result<ServiceConfig, Status> {
    ServiceConfig::from_stored(&svc.cluster, &svc.name, svc.desired_count, &svc.config_json)
        .map_err(Status::internal)
}

/// `UpdateService`.
pub(crate) async fn update(
    core: &Core,
    req: UpdateServiceRequest,
) -> Result<ServiceDescription, Status> {
    let input = read_input(&req.input_json, Body::Update).map_err(invalid)?;
    let cluster = cluster_of(&input.cluster, &req.cluster);
    let name = service_name(&input, "service")?;
    let td = match input.task_definition.as_deref() {
        Some(t) => {
            let rec = resolve_active(core, t).await?;
            refuse_unplaceable(core, &cluster, &rec).await?;
            Some(rec.name())
        }
        None => None,
    };
    let rec = change(core, &cluster, &name, "update_service", |snap| {
        not_active(snap)?;
        let old = stored_config(&snap.service)?;
        let new = old
            .updated(&input, req.min_healthy_time_ms, req.lost_after_ms)
            .map_err(invalid)?;
        let now = berth_proto::now_ms();
        let deploy = input.force_new_deployment
            || td
                .as_deref()
                .is_some_and(|t| t != snap.service.task_definition);
        let new_deployment = deploy.then(|| {
            new_deployment(
                &snap.service,
                td.as_deref().unwrap_or(&snap.service.task_definition),
                now,
            )
        });
        Ok(ServiceUpdate {
            config_json: Some(new.to_json()),
            desired_count: Some(new.spec.desired()),
            new_deployment,
            status: None,
            events: Vec::new(),
        })
    })
    .await?;
    info!(cluster = %rec.cluster, service = %rec.name, task_definition = %rec.task_definition, desired_count = rec.desired_count, "service updated");
    describe_named(core, &cluster, &name).await
}

/// `DeleteService`.
pub(crate) async fn delete(
    core: &Core,
    req: DeleteServiceRequest,
) -> Result<ServiceDescription, Status> {
    let cluster = cluster_of(&None, &req.cluster);
    let name = req.name.trim().to_owned();
    change(core, &cluster, &name, "delete_service", |snap| {
        not_active(snap)?;
        let daemon = stored_config(&snap.service)?.spec.strategy == SchedulingStrategy::Daemon;
        if !daemon && snap.service.desired_count > 0 && !req.force {
            return Err(Status::failed_precondition(format!(
                "the service cannot be deleted while it is scaled above 0 (desired count {}): `berth service update {} --desired-count 0` first, or delete with --force",
                snap.service.desired_count, snap.service.name
            )));
        }
        Ok(ServiceUpdate {
            desired_count: Some(0),
            status: Some(SERVICE_DRAINING.to_owned()),
            ..ServiceUpdate::default()
        })
    })
    .await?;
    info!(%cluster, service = %name, "service deleted; its tasks are stopped");
    describe_named(core, &cluster, &name).await
}

/// The deployment a rollback goes back to: the newest COMPLETED one that
/// is not the PRIMARY and runs another task definition.
fn rollback_target(snap: &ServiceSnapshot) -> Option<&DeploymentRecord> {
    let primary = snap
        .deployments
        .iter()
        .rev()
        .find(|d| d.status == "PRIMARY");
    snap.deployments
        .iter()
        .rev()
        .filter(|d| d.rollout_state == "COMPLETED")
        .find(|d| primary.is_none_or(|p| p.id != d.id && p.task_definition != d.task_definition))
}

/// `berth service rollback`: a new deployment of the last completed
/// deployment's task definition.
pub(crate) async fn rollback(core: &Core, req: ServiceRef) -> Result<ServiceDescription, Status> {
    let cluster = cluster_of(&None, &req.cluster);
    let name = req.name.trim().to_owned();
    change(core, &cluster, &name, "rollback_service", |snap| {
        not_active(snap)?;
        let Some(target) = rollback_target(snap) else {
            return Err(Status::failed_precondition(format!(
                "service {} has no completed deployment of another task definition to roll back to",
                snap.service.name
            )));
        };
        let now = berth_proto::now_ms();
        let mut d = new_deployment(&snap.service, &target.task_definition, now);
        d.rollout_state_reason = format!("Rolled back by an operator to deployment {}.", target.id);
        let message = format!(
            "service ({}) rolling back to deployment {}.",
            snap.service.name, target.id
        );
        Ok(ServiceUpdate {
            new_deployment: Some(d),
            events: vec![ServiceEventRecord {
                id: uuid::Uuid::new_v4().to_string(),
                created_at_ms: now,
                message,
            }],
            ..ServiceUpdate::default()
        })
    })
    .await?;
    info!(%cluster, service = %name, "service rolled back");
    describe_named(core, &cluster, &name).await
}

/// `DescribeServices` of one service.
pub(crate) async fn describe(core: &Core, req: ServiceRef) -> Result<ServiceDescription, Status> {
    let cluster = cluster_of(&None, &req.cluster);
    describe_named(core, &cluster, req.name.trim()).await
}

async fn describe_named(
    core: &Core,
    cluster: &str,
    name: &str,
) -> Result<ServiceDescription, Status> {
    let snap = snapshot(core, cluster, name).await?;
    // Only a DAEMON service's desired count is its instances'.
    let daemon = stored_config(&snap.service)?.spec.strategy == SchedulingStrategy::Daemon;
    let active_instances = if daemon {
        let c = cluster.to_owned();
        core.db("instances", move |s| s.instances())
            .await
            .map_err(store_status)?
            .iter()
            .filter(|i| i.cluster == c && i.status == ACTIVE)
            .count()
    } else {
        0
    };
    description(&snap, active_instances)
}

/// `ListServices` (ACTIVE and DRAINING ones, as ECS), described.
pub(crate) async fn list(
    core: &Core,
    req: ListServicesRequest,
) -> Result<ListServicesResponse, Status> {
    let cluster = cluster_of(&None, &req.cluster);
    let c = cluster.clone();
    let records = core
        .db("services", move |s| s.services(Some(&c)))
        .await
        .map_err(service_status)?;
    let mut services = Vec::new();
    for r in records.iter().filter(|r| r.status != INACTIVE) {
        match describe_named(core, &cluster, &r.name).await {
            Ok(d) => services.push(d),
            // Gone between the listing and the snapshot.
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
    }
    Ok(ListServicesResponse { services })
}

/// `arn:aws:ecs:local:000000000000:service/CLUSTER/NAME`.
pub fn service_arn(cluster: &str, name: &str) -> String {
    format!("{LOCAL_ARN_PREFIX}service/{cluster}/{name}")
}

fn counts(snap: &ServiceSnapshot, deployment: Option<&str>) -> (usize, usize) {
    let mine = snap
        .tasks
        .iter()
        .filter(|t| deployment.is_none_or(|d| t.started_by == d) && !t.lost);
    let (mut running, mut pending) = (0, 0);
    for t in mine {
        match t.last_status.as_str() {
            RUNNING => running += 1,
            PENDING if t.desired_status != STOPPED => pending += 1,
            _ => {}
        }
    }
    (running, pending)
}

/// The service in the shape of one element of ECS' `DescribeServices`
/// `services[]` (SPEC §6).
pub(crate) fn description(
    snap: &ServiceSnapshot,
    active_instances: usize,
) -> Result<ServiceDescription, Status> {
    let svc = &snap.service;
    let config = stored_config(svc)?;
    let daemon = config.spec.strategy == SchedulingStrategy::Daemon;
    let desired = if daemon {
        active_instances as i64
    } else {
        svc.desired_count
    };
    let (running, pending) = counts(snap, None);
    let primary = snap
        .deployments
        .iter()
        .rev()
        .find(|d| d.status == "PRIMARY");
    let deployments: Vec<Value> = snap
        .deployments
        .iter()
        .rev()
        .filter(|d| d.status != INACTIVE)
        .map(|d| {
            let (r, p) = counts(snap, Some(&d.id));
            let d_desired = if d.status == "PRIMARY" {
                desired
            } else {
                (r + p) as i64
            };
            json!({
                "id": d.id,
                "status": d.status,
                "taskDefinition": d.task_definition,
                "desiredCount": d_desired,
                "runningCount": r,
                "pendingCount": p,
                "failedTasks": d.failed_tasks,
                "launchType": "EXTERNAL",
                "rolloutState": d.rollout_state,
                "rolloutStateReason": d.rollout_state_reason,
                "createdAt": time_json(d.created_at_ms),
                "updatedAt": time_json(d.updated_at_ms),
            })
        })
        .collect();
    let events: Vec<Value> = snap
        .events
        .iter()
        .take(100)
        .map(|e| {
            json!({
                "id": e.id,
                "createdAt": time_json(e.created_at_ms),
                "message": e.message,
            })
        })
        .collect();
    let placement_strategy = config.placement_strategy_json();
    let v = json!({
        "serviceArn": service_arn(&svc.cluster, &svc.name),
        "serviceName": svc.name,
        "clusterArn": cluster_arn(&svc.cluster),
        "clusterName": svc.cluster,
        "status": svc.status,
        "desiredCount": desired,
        "runningCount": running,
        "pendingCount": pending,
        "launchType": "EXTERNAL",
        "taskDefinition": svc.task_definition,
        "schedulingStrategy": config.spec.strategy.as_str(),
        "deploymentConfiguration": config.deployment_configuration_json(),
        "placementStrategy": placement_strategy,
        "placementConstraints": config.placement_constraints_json(),
        "healthCheckGracePeriodSeconds": config.spec.health_check_grace_period_s,
        "deploymentController": {"type": "ECS"},
        "createdAt": time_json(svc.created_at_ms),
        "deployments": deployments,
        "events": events,
    });
    let others_alive = snap.tasks.iter().any(|t| {
        primary.is_none_or(|p| t.started_by != p.id) && t.last_status != STOPPED && !t.lost
    });
    // Settled too: a count change keeps the primary COMPLETED, so the
    // steady state also needs the desired count running (REPLICA) and no
    // task still on its way out.
    let stopping = snap
        .tasks
        .iter()
        .any(|t| t.desired_status == STOPPED && t.last_status != STOPPED && !t.lost);
    let counted = daemon
        || primary.is_some_and(|p| {
            counts(snap, Some(&p.id)) == (usize::try_from(svc.desired_count).unwrap_or(0), 0)
        });
    let steady = primary.is_some_and(|p| p.rollout_state == "COMPLETED")
        && !others_alive
        && !stopping
        && counted;
    Ok(ServiceDescription {
        name: svc.name.clone(),
        cluster: svc.cluster.clone(),
        status: svc.status.clone(),
        service_json: serde_json::to_string(&v).map_err(|e| Status::internal(e.to_string()))?,
        rollout_state: primary.map(|p| p.rollout_state.clone()).unwrap_or_default(),
        rollout_state_reason: primary
            .map(|p| p.rollout_state_reason.clone())
            .unwrap_or_default(),
        steady,
        generation: i64::try_from(svc.generation).unwrap_or(i64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(id: &str, td: &str, status: &str, rollout: &str) -> DeploymentRecord {
        DeploymentRecord {
            id: id.into(),
            task_definition: td.into(),
            status: status.into(),
            rollout_state: rollout.into(),
            ..DeploymentRecord::default()
        }
    }

    #[test]
    fn a_rollback_goes_to_the_newest_completed_deployment_of_another_definition() {
        let mut snap = ServiceSnapshot {
            deployments: vec![
                deployment("d1", "web:1", INACTIVE, "COMPLETED"),
                deployment("d2", "web:2", INACTIVE, "COMPLETED"),
                deployment("d3", "web:3", "PRIMARY", "FAILED"),
            ],
            ..ServiceSnapshot::default()
        };
        assert_eq!(rollback_target(&snap).map(|d| d.id.as_str()), Some("d2"));
        snap.deployments[2] = deployment("d3", "web:2", "PRIMARY", "COMPLETED");
        assert_eq!(rollback_target(&snap).map(|d| d.id.as_str()), Some("d1"));
        snap.deployments.truncate(1);
        snap.deployments[0].status = "PRIMARY".into();
        assert!(rollback_target(&snap).is_none());
    }

    #[test]
    fn names_and_clusters_may_be_arns() {
        assert_eq!(cluster_of(&None, ""), DEFAULT_CLUSTER);
        assert_eq!(
            cluster_of(
                &Some("arn:aws:ecs:local:000000000000:cluster/prod".into()),
                "x"
            ),
            "prod"
        );
        let input = ServiceInput {
            name: Some("arn:aws:ecs:local:000000000000:service/prod/web".into()),
            ..ServiceInput::default()
        };
        assert_eq!(service_name(&input, "service").expect("accepted"), "web");
        assert!(service_name(&ServiceInput::default(), "service").is_err());
    }
}
