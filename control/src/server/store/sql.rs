//! What both SQL backends share: the column lists, the rows before their
//! JSON columns are decoded, the stored format of container state, and the
//! conversions of unsigned counters to BIGINT.

use std::collections::BTreeMap;

use berth_proto::v1::{ContainerState, NetworkBinding};
use serde::{Deserialize, Serialize};

use super::{InstanceRecord, StoreError, TaskRecord};

pub(super) const INSTANCE_COLUMNS: &str = "instance_id, hostname, status, registered_at_ms, agent_version, \
     boot_id, cpu, memory_mib, attributes_json, last_heartbeat_at_ms, last_event_seq, \
     generation, acked_generation, os, arch, reported_cpu, reported_memory_mib, \
     reported_hostname, cert_serial, pending_cert_serial, cluster, custom_attributes_json";

pub(super) const TASK_COLUMNS: &str = "task_id, instance_id, family, definition_json, desired_status, \
     last_status, health_status, stop_code, stopped_reason, created_at_ms, started_at_ms, \
     stopped_at_ms, containers_json, reserved_cpu, reserved_memory_mib, last_event_seq, \
     last_seen_at_ms, task_definition, task_group, started_by, cluster, ever_healthy, \
     failure_counted, lost";

/// A cluster with its counts; the caller appends `WHERE c.name = …` or an
/// `ORDER BY`. Columns in [`super::ClusterRecord`]'s order.
pub(super) const CLUSTER_SELECT: &str = "SELECT c.name, c.status, c.created_at_ms, \
     (SELECT COUNT(*) FROM instances i WHERE i.cluster = c.name AND i.status <> 'INACTIVE'), \
     (SELECT COUNT(*) FROM tasks t WHERE t.cluster = c.name AND t.last_status = 'RUNNING'), \
     (SELECT COUNT(*) FROM tasks t WHERE t.cluster = c.name \
        AND t.last_status <> 'RUNNING' AND t.last_status <> 'STOPPED') \
     FROM clusters c";

/// What is left in a cluster that keeps it from being deleted: instances
/// not INACTIVE, tasks not STOPPED, services not INACTIVE. One parameter,
/// the cluster's name.
pub(super) const CLUSTER_LEFT_SQLITE: &str = "SELECT \
     (SELECT COUNT(*) FROM instances WHERE cluster = ?1 AND status <> 'INACTIVE'), \
     (SELECT COUNT(*) FROM tasks WHERE cluster = ?1 AND last_status <> 'STOPPED'), \
     (SELECT COUNT(*) FROM services WHERE cluster = ?1 AND status <> 'INACTIVE')";
pub(super) const CLUSTER_LEFT_PG: &str = "SELECT \
     (SELECT COUNT(*) FROM instances WHERE cluster = $1 AND status <> 'INACTIVE'), \
     (SELECT COUNT(*) FROM tasks WHERE cluster = $1 AND last_status <> 'STOPPED'), \
     (SELECT COUNT(*) FROM services WHERE cluster = $1 AND status <> 'INACTIVE')";

/// A row read before its JSON columns are decoded.
pub(super) struct RawInstance {
    pub(super) rec: InstanceRecord,
    pub(super) attributes_json: String,
    pub(super) custom_attributes_json: String,
}

impl RawInstance {
    pub(super) fn decode(self) -> Result<InstanceRecord, StoreError> {
        let mut rec = self.rec;
        rec.attributes =
            serde_json::from_str(&self.attributes_json).map_err(|source| StoreError::Corrupt {
                what: "attributes",
                id: rec.instance_id.clone(),
                source,
            })?;
        rec.custom_attributes =
            serde_json::from_str(&self.custom_attributes_json).map_err(|source| {
                StoreError::Corrupt {
                    what: "custom attributes",
                    id: rec.instance_id.clone(),
                    source,
                }
            })?;
        Ok(rec)
    }
}

/// Custom attributes as the `custom_attributes_json` column holds them.
pub(super) fn attributes_json(attributes: &BTreeMap<String, String>) -> String {
    // Serialising a map of strings cannot fail.
    serde_json::to_string(attributes).unwrap_or_else(|_| "{}".to_owned())
}

pub(super) struct RawTask {
    pub(super) rec: TaskRecord,
    pub(super) containers_json: String,
}

impl RawTask {
    pub(super) fn decode(self) -> Result<TaskRecord, StoreError> {
        let mut rec = self.rec;
        let stored: Vec<StoredContainer> =
            serde_json::from_str(&self.containers_json).map_err(|source| StoreError::Corrupt {
                what: "containers",
                id: rec.task_id.clone(),
                source,
            })?;
        rec.containers = stored.into_iter().map(ContainerState::from).collect();
        Ok(rec)
    }
}

/// The database's own format for container state, so that the table does
/// not change when the protocol's Rust types do.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StoredContainer {
    name: String,
    image: String,
    image_digest: String,
    runtime_id: String,
    last_status: String,
    exit_code: Option<i32>,
    reason: String,
    health_status: String,
    restart_count: u32,
    network_bindings: Vec<StoredBinding>,
    essential: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct StoredBinding {
    container_port: u32,
    host_port: u32,
    protocol: String,
    bind_ip: String,
}

impl From<&ContainerState> for StoredContainer {
    fn from(c: &ContainerState) -> Self {
        StoredContainer {
            name: c.name.clone(),
            image: c.image.clone(),
            image_digest: c.image_digest.clone(),
            runtime_id: c.runtime_id.clone(),
            last_status: c.last_status.clone(),
            exit_code: c.exit_code,
            reason: c.reason.clone(),
            health_status: c.health_status.clone(),
            restart_count: c.restart_count,
            network_bindings: c
                .network_bindings
                .iter()
                .map(|b| StoredBinding {
                    container_port: b.container_port,
                    host_port: b.host_port,
                    protocol: b.protocol.clone(),
                    bind_ip: b.bind_ip.clone(),
                })
                .collect(),
            essential: c.essential,
        }
    }
}

impl From<StoredContainer> for ContainerState {
    fn from(c: StoredContainer) -> Self {
        ContainerState {
            name: c.name,
            image: c.image,
            image_digest: c.image_digest,
            runtime_id: c.runtime_id,
            last_status: c.last_status,
            exit_code: c.exit_code,
            reason: c.reason,
            health_status: c.health_status,
            restart_count: c.restart_count,
            network_bindings: c
                .network_bindings
                .into_iter()
                .map(|b| NetworkBinding {
                    container_port: b.container_port,
                    host_port: b.host_port,
                    protocol: b.protocol,
                    bind_ip: b.bind_ip,
                })
                .collect(),
            essential: c.essential,
        }
    }
}

pub(super) fn containers_json(containers: &[ContainerState]) -> String {
    let stored: Vec<StoredContainer> = containers.iter().map(StoredContainer::from).collect();
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".to_owned())
}

/// Sequence numbers and generations are u64 in the protocol and BIGINT in
/// the database; values beyond i64::MAX never occur in practice and are
/// clamped rather than wrapped.
pub(super) fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) const ADMIN_CERT_COLUMNS: &str =
    "serial, name, issued_at_ms, not_after_ms, revoked_at_ms";
