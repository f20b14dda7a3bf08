//! The admin API of clusters (ECS' `CreateCluster`, `ListClusters`,
//! `DescribeClusters`, `DeleteCluster`).
//!
//! A cluster is a named group of instances, activations and tasks;
//! `default` always exists and is never deleted. Deleting one marks it
//! INACTIVE (ECS keeps deleted clusters visible as INACTIVE too) and is
//! refused while any instance not INACTIVE, any task not STOPPED or any
//! service not deleted (INACTIVE) is left in it: the check and the change are one store transaction
//! ([`Store::delete_cluster`](super::store::Store::delete_cluster)).
//! Creating an existing cluster returns it, and makes a deleted one
//! ACTIVE again.
//!
//! Draining (ECS' `UpdateContainerInstancesState`) lives here too: a
//! DRAINING instance stays registered (its session, heartbeats, events and
//! certificate renewal go on as before) but placement gives it no new
//! task; ACTIVE again, it takes tasks. The session is not told: nothing
//! changes for the agent.
//!
//! The handlers here only translate: the rules (names, what blocks a
//! delete) live in the store, and each store error maps to the status a
//! client can act on: INVALID_ARGUMENT for a bad name, NOT_FOUND for an
//! unknown cluster, FAILED_PRECONDITION for a delete that is refused.

use berth_proto::v1::{
    Cluster, ClusterRef, Instance, ListClustersResponse, UpdateInstanceStateRequest,
};
use tonic::Status;
use tracing::info;

use super::admin::instance_message;
use super::core::{Core, store_status};
use super::store::{ACTIVE, ClusterRecord, StoreError};

/// The API's view of a cluster. Counts are clamped into the message's
/// unsigned fields.
pub(crate) fn cluster_message(c: &ClusterRecord) -> Cluster {
    let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    Cluster {
        name: c.name.clone(),
        status: c.status.clone(),
        created_at_ms: c.created_at_ms,
        registered_instances_count: count(c.registered_instances),
        running_tasks_count: count(c.running_tasks),
        pending_tasks_count: count(c.pending_tasks),
        active_services_count: 0,
    }
}

/// The status of a store error from a cluster operation.
pub(crate) fn cluster_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidClusterName(..) => Status::invalid_argument(e.to_string()),
        StoreError::NoCluster(_) => Status::not_found(e.to_string()),
        StoreError::ClusterInactive(_)
        | StoreError::ClusterNotEmpty { .. }
        | StoreError::DefaultCluster
        | StoreError::InstanceInactive(_) => Status::failed_precondition(e.to_string()),
        StoreError::InvalidInstanceStatus(_) => Status::invalid_argument(e.to_string()),
        other => store_status(other),
    }
}

/// The name a request gave, trimmed of surrounding white space.
fn name_of(r: &ClusterRef) -> String {
    r.name.trim().to_owned()
}

pub(crate) async fn create(core: &Core, r: ClusterRef, caller: &str) -> Result<Cluster, Status> {
    let name = name_of(&r);
    let now = berth_proto::now_ms();
    let lookup = name.clone();
    let c = core
        .db("create_cluster", move |s| s.create_cluster(&lookup, now))
        .await
        .map_err(cluster_status)?;
    info!(cluster = %c.name, by = %caller, "cluster created");
    Ok(cluster_message(&c))
}

/// `activeServicesCount`: the services of each cluster that are ACTIVE.
async fn with_services(core: &Core, clusters: &[ClusterRecord]) -> Result<Vec<Cluster>, Status> {
    let services = core
        .db("services", |s| s.services(None))
        .await
        .map_err(cluster_status)?;
    Ok(clusters
        .iter()
        .map(|c| {
            let n = services
                .iter()
                .filter(|s| s.cluster == c.name && s.status == ACTIVE)
                .count();
            Cluster {
                active_services_count: u32::try_from(n).unwrap_or(u32::MAX),
                ..cluster_message(c)
            }
        })
        .collect())
}

pub(crate) async fn list(core: &Core) -> Result<ListClustersResponse, Status> {
    let clusters = core
        .db("list_clusters", |s| s.clusters())
        .await
        .map_err(cluster_status)?;
    Ok(ListClustersResponse {
        clusters: with_services(core, &clusters).await?,
    })
}

pub(crate) async fn describe(core: &Core, r: ClusterRef) -> Result<Cluster, Status> {
    let name = name_of(&r);
    let lookup = name.clone();
    let c = core
        .db("describe_cluster", move |s| s.cluster(&lookup))
        .await
        .map_err(cluster_status)?
        .ok_or_else(|| cluster_status(StoreError::NoCluster(name)))?;
    with_services(core, std::slice::from_ref(&c))
        .await?
        .pop()
        .ok_or_else(|| Status::internal("cluster lost between two reads"))
}

pub(crate) async fn delete(core: &Core, r: ClusterRef, caller: &str) -> Result<Cluster, Status> {
    let name = name_of(&r);
    let lookup = name.clone();
    let c = core
        .db("delete_cluster", move |s| s.delete_cluster(&lookup))
        .await
        .map_err(cluster_status)?;
    info!(cluster = %c.name, by = %caller, "cluster deleted");
    Ok(cluster_message(&c))
}

/// Sets an instance ACTIVE or DRAINING.
pub(crate) async fn update_instance_state(
    core: &Core,
    r: UpdateInstanceStateRequest,
    caller: &str,
) -> Result<Instance, Status> {
    let id = r.instance_id.trim().to_owned();
    let status = r.status.trim().to_ascii_uppercase();
    let (lookup, target) = (id.clone(), status.clone());
    let (instance, usage) = core
        .db("update_instance_state", move |s| {
            let i = s.update_instance_state(&lookup, &target)?;
            let u = s.usage()?.get(&lookup).copied().unwrap_or_default();
            Ok::<_, StoreError>((i, u))
        })
        .await
        .map_err(cluster_status)?;
    info!(instance_id = %id, status = %status, by = %caller, "instance state set");
    core.wake_services();
    let connected = core.sessions().is_connected(&id);
    Ok(instance_message(&instance, usage, connected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_statuses_a_client_can_act_on() {
        let code = |e| cluster_status(e).code();
        assert_eq!(
            code(StoreError::InvalidClusterName("a b".into(), "bad")),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(StoreError::NoCluster("x".into())),
            tonic::Code::NotFound
        );
        assert_eq!(
            code(StoreError::DefaultCluster),
            tonic::Code::FailedPrecondition
        );
        let left = StoreError::ClusterNotEmpty {
            name: "web".into(),
            instances: 2,
            tasks: 3,
            services: 0,
        };
        let status = cluster_status(left);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(
            status.message().contains("2 instance(s)"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("3 task(s)"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn counts_are_clamped_into_the_message() {
        let c = ClusterRecord {
            name: "web".into(),
            status: "ACTIVE".into(),
            created_at_ms: 1,
            registered_instances: -1,
            running_tasks: i64::MAX,
            pending_tasks: 4,
        };
        let m = cluster_message(&c);
        assert_eq!(
            (
                m.registered_instances_count,
                m.running_tasks_count,
                m.pending_tasks_count
            ),
            (0, u32::MAX, 4)
        );
    }
}
