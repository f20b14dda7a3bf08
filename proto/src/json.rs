//! The JSON shapes of tasks, containers and instances (SPEC §2).
//!
//! One set of pure functions for everything that prints these objects: the
//! `berth` CLI (`--json`) and the agent's local API. Field names follow the
//! ECS API (`DescribeTasks`, `DescribeContainerInstances`) in camelCase.
//!
//! Conventions:
//! - times are RFC 3339 UTC strings with milliseconds
//!   (`2025-01-02T03:04:05.678Z`), `null` when unset (0 or negative);
//! - optional strings (`stopCode`, `stoppedReason`, `imageDigest`,
//!   `runtimeId`, `reason`, `bindIP`) are `null` when empty;
//! - `healthStatus` is `UNKNOWN` when unset;
//! - tasks carry `lastSeenAt`, which ECS does not have: when the control
//!   plane (or agent) last heard about the task.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::v1::{
    Attribute, Cluster, ContainerState, Instance, NetworkBinding, Resources, Task, TaskState,
};

/// What ARNs start with where no request names a region or an account
/// (the CLI's JSON): `arn:aws:ecs:local:000000000000:`.
pub const LOCAL_ARN_PREFIX: &str = "arn:aws:ecs:local:000000000000:";

/// The ARN of a registered task definition (`family:revision`), `null`
/// for a task whose definition was never registered.
pub fn task_definition_arn(family_revision: &str) -> Value {
    if family_revision.is_empty() {
        Value::Null
    } else {
        Value::String(format!(
            "{LOCAL_ARN_PREFIX}task-definition/{family_revision}"
        ))
    }
}

/// A task of the control plane: [`task_json`] and `taskDefinitionArn`,
/// `group`, `startedBy` (`null` when empty).
pub fn admin_task_json(t: &Task) -> Value {
    let mut v = task_json(
        &t.instance_id,
        &t.state.clone().unwrap_or_default(),
        t.last_seen_at_ms,
    );
    if let Value::Object(m) = &mut v {
        m.insert(
            "taskDefinitionArn".into(),
            task_definition_arn(&t.task_definition),
        );
        m.insert("group".into(), opt_str(&t.group));
        m.insert("startedBy".into(), opt_str(&t.started_by));
    }
    v
}

/// A task: `taskId`, `instanceId`, `family`, `lastStatus`, `desiredStatus`,
/// `healthStatus`, `stopCode`, `stoppedReason`, `createdAt`, `startedAt`,
/// `stoppedAt`, `lastSeenAt`, `containers[]`.
pub fn task_json(instance_id: &str, t: &TaskState, last_seen_at_ms: i64) -> Value {
    json!({
        "taskId": t.task_id,
        "instanceId": instance_id,
        "family": t.family,
        "lastStatus": t.last_status,
        "desiredStatus": t.desired_status,
        "healthStatus": health(&t.health_status),
        "stopCode": opt_str(&t.stop_code),
        "stoppedReason": opt_str(&t.stopped_reason),
        "createdAt": time_json(t.created_at_ms),
        "startedAt": time_json(t.started_at_ms),
        "stoppedAt": time_json(t.stopped_at_ms),
        "lastSeenAt": time_json(last_seen_at_ms),
        "containers": t.containers.iter().map(container_json).collect::<Vec<_>>(),
    })
}

/// A container: `name`, `image`, `imageDigest`, `runtimeId`, `lastStatus`,
/// `exitCode`, `reason`, `healthStatus`, `restartCount`, `networkBindings[]`.
pub fn container_json(c: &ContainerState) -> Value {
    json!({
        "name": c.name,
        "image": c.image,
        "imageDigest": opt_str(&c.image_digest),
        "runtimeId": opt_str(&c.runtime_id),
        "lastStatus": c.last_status,
        "exitCode": c.exit_code,
        "reason": opt_str(&c.reason),
        "healthStatus": health(&c.health_status),
        "restartCount": c.restart_count,
        "networkBindings": c.network_bindings.iter().map(binding_json).collect::<Vec<_>>(),
    })
}

/// A network binding: `containerPort`, `hostPort`, `protocol` (`tcp` when
/// unset), `bindIP`.
pub fn binding_json(b: &NetworkBinding) -> Value {
    let protocol = if b.protocol.is_empty() {
        "tcp"
    } else {
        b.protocol.as_str()
    };
    json!({
        "containerPort": b.container_port,
        "hostPort": b.host_port,
        "protocol": protocol,
        "bindIP": opt_str(&b.bind_ip),
    })
}

/// An instance: `instanceId`, `hostname`, `status`, `cluster`, `agentConnected`,
/// `lastHeartbeatAt`, `agentVersion`, `registeredResources` and
/// `remainingResources` (`cpu` units, `memory` MiB), `runningTasksCount`,
/// `pendingTasksCount`, `attributes` (ECS' `[{name, value}]`, by name),
/// `registeredAt`.
pub fn instance_json(i: &Instance) -> Value {
    let sorted: BTreeMap<&str, &str> = i
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attributes: Vec<Value> = sorted
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({
        "instanceId": i.instance_id,
        "hostname": i.hostname,
        "status": i.status,
        "cluster": i.cluster,
        "agentConnected": i.agent_connected,
        "lastHeartbeatAt": time_json(i.last_heartbeat_at_ms),
        "agentVersion": opt_str(&i.agent_version),
        "registeredResources": resources_json(i.registered.as_ref()),
        "reportedResources": resources_json(i.reported.as_ref()),
        "reportedHostname": opt_str(&i.reported_hostname),
        "remainingResources": resources_json(i.remaining.as_ref()),
        "runningTasksCount": i.running_tasks_count,
        "pendingTasksCount": i.pending_tasks_count,
        "attributes": attributes,
        "registeredAt": time_json(i.registered_at_ms),
    })
}

/// An attribute as ECS' `ListAttributes` shows it: `name`, `value`,
/// `targetType` (`container-instance`), `targetId` (the instance id).
pub fn attribute_json(a: &Attribute) -> Value {
    json!({
        "name": a.name,
        "value": a.value,
        "targetType": "container-instance",
        "targetId": a.instance_id,
    })
}

/// The ARN-shaped name of a cluster, as ECS scripts expect one:
/// `{LOCAL_ARN_PREFIX}cluster/NAME`.
pub fn cluster_arn(name: &str) -> String {
    format!("{LOCAL_ARN_PREFIX}cluster/{name}")
}

/// A cluster in the shape of ECS' `DescribeClusters`: `clusterName`,
/// `clusterArn`, `status`, `registeredContainerInstancesCount`,
/// `runningTasksCount`, `pendingTasksCount`, `activeServicesCount`.
pub fn cluster_json(c: &Cluster) -> Value {
    json!({
        "clusterName": c.name,
        "clusterArn": cluster_arn(&c.name),
        "status": c.status,
        "registeredContainerInstancesCount": c.registered_instances_count,
        "runningTasksCount": c.running_tasks_count,
        "pendingTasksCount": c.pending_tasks_count,
        "activeServicesCount": c.active_services_count,
    })
}

/// `{"cpu": units, "memory": MiB}`; zeros when unknown.
pub fn resources_json(r: Option<&Resources>) -> Value {
    let r = r.cloned().unwrap_or_default();
    json!({ "cpu": r.cpu, "memory": r.memory_mib })
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC string with
/// milliseconds, or `null` when unset (≤ 0).
pub fn time_json(ms: i64) -> Value {
    match format_time_ms(ms) {
        Some(s) => Value::String(s),
        None => Value::Null,
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds;
/// `None` when unset (≤ 0).
pub fn format_time_ms(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok().filter(|ms| *ms > 0)?;
    let t = UNIX_EPOCH.checked_add(Duration::from_millis(ms))?;
    // Past the year 9999 humantime cannot format: say nothing rather than panic.
    let mut s = String::new();
    std::fmt::Write::write_fmt(
        &mut s,
        format_args!("{}", humantime::format_rfc3339_millis(t)),
    )
    .ok()?;
    Some(s)
}

fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

fn health(s: &str) -> &str {
    if s.is_empty() { "UNKNOWN" } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> ContainerState {
        ContainerState {
            name: "web".into(),
            image: "nginx:1".into(),
            image_digest: String::new(),
            runtime_id: "abc123".into(),
            last_status: "RUNNING".into(),
            exit_code: None,
            reason: String::new(),
            health_status: String::new(),
            restart_count: 2,
            network_bindings: vec![NetworkBinding {
                container_port: 80,
                host_port: 32768,
                protocol: String::new(),
                bind_ip: "0.0.0.0".into(),
            }],
            essential: true,
        }
    }

    #[test]
    fn control_plane_tasks_name_their_definition_group_and_starter() {
        let t = Task {
            instance_id: "i-1".into(),
            task_definition: "web:3".into(),
            group: "family:web".into(),
            ..Task::default()
        };
        let v = admin_task_json(&t);
        assert_eq!(
            v["taskDefinitionArn"],
            "arn:aws:ecs:local:000000000000:task-definition/web:3"
        );
        assert_eq!(v["group"], "family:web");
        assert_eq!(v["startedBy"], Value::Null);
        assert_eq!(v["instanceId"], "i-1");
        let unregistered = admin_task_json(&Task::default());
        assert_eq!(unregistered["taskDefinitionArn"], Value::Null);
    }

    #[test]
    fn times_are_rfc3339_millis_or_null() {
        assert_eq!(time_json(0), Value::Null);
        assert_eq!(time_json(-5), Value::Null);
        assert_eq!(
            time_json(1_700_000_000_123),
            Value::from("2023-11-14T22:13:20.123Z")
        );
    }

    #[test]
    fn container_shape() {
        let v = container_json(&container());
        assert_eq!(
            v,
            json!({
                "name": "web",
                "image": "nginx:1",
                "imageDigest": null,
                "runtimeId": "abc123",
                "lastStatus": "RUNNING",
                "exitCode": null,
                "reason": null,
                "healthStatus": "UNKNOWN",
                "restartCount": 2,
                "networkBindings": [
                    {"containerPort": 80, "hostPort": 32768, "protocol": "tcp", "bindIP": "0.0.0.0"}
                ],
            })
        );
        let mut c = container();
        c.exit_code = Some(137);
        c.reason = "OOMKilled".into();
        let v = container_json(&c);
        assert_eq!(v["exitCode"], 137);
        assert_eq!(v["reason"], "OOMKilled");
    }

    #[test]
    fn task_shape() {
        let t = TaskState {
            task_id: "0123abcd".into(),
            family: "web".into(),
            last_status: "STOPPED".into(),
            desired_status: "STOPPED".into(),
            health_status: "HEALTHY".into(),
            stop_code: "EssentialContainerExited".into(),
            stopped_reason: String::new(),
            created_at_ms: 1_700_000_000_000,
            started_at_ms: 0,
            stopped_at_ms: 1_700_000_001_000,
            containers: vec![container()],
        };
        let v = task_json("i-0011223344556677", &t, 1_700_000_002_000);
        assert_eq!(v["taskId"], "0123abcd");
        assert_eq!(v["instanceId"], "i-0011223344556677");
        assert_eq!(v["family"], "web");
        assert_eq!(v["lastStatus"], "STOPPED");
        assert_eq!(v["desiredStatus"], "STOPPED");
        assert_eq!(v["healthStatus"], "HEALTHY");
        assert_eq!(v["stopCode"], "EssentialContainerExited");
        assert_eq!(v["stoppedReason"], Value::Null);
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["startedAt"], Value::Null);
        assert_eq!(v["stoppedAt"], "2023-11-14T22:13:21.000Z");
        assert_eq!(v["lastSeenAt"], "2023-11-14T22:13:22.000Z");
        assert_eq!(v["containers"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["containers"][0]["name"], "web");
        let keys: Vec<&String> = v
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 13);
    }

    #[test]
    fn instance_shape() {
        let i = Instance {
            instance_id: "i-0011223344556677".into(),
            hostname: "host1".into(),
            status: "ACTIVE".into(),
            agent_connected: true,
            last_heartbeat_at_ms: 1_700_000_000_000,
            agent_version: "0.1.0".into(),
            registered: Some(Resources {
                cpu: 2048,
                memory_mib: 3900,
            }),
            remaining: Some(Resources {
                cpu: 1024,
                memory_mib: 3388,
            }),
            running_tasks_count: 1,
            pending_tasks_count: 0,
            attributes: [
                ("b".to_owned(), "2".to_owned()),
                ("a".to_owned(), "1".to_owned()),
            ]
            .into_iter()
            .collect(),
            registered_at_ms: 0,
            reported: Some(Resources {
                cpu: 4096,
                memory_mib: 3900,
            }),
            reported_hostname: "host2".into(),
            cluster: "default".into(),
        };
        let v = instance_json(&i);
        assert_eq!(
            v,
            json!({
                "instanceId": "i-0011223344556677",
                "hostname": "host1",
                "status": "ACTIVE",
                "cluster": "default",
                "agentConnected": true,
                "lastHeartbeatAt": "2023-11-14T22:13:20.000Z",
                "agentVersion": "0.1.0",
                "registeredResources": {"cpu": 2048, "memory": 3900},
                "reportedResources": {"cpu": 4096, "memory": 3900},
                "reportedHostname": "host2",
                "remainingResources": {"cpu": 1024, "memory": 3388},
                "runningTasksCount": 1,
                "pendingTasksCount": 0,
                "attributes": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}],
                "registeredAt": null,
            })
        );
        let missing = instance_json(&Instance::default());
        assert_eq!(
            missing["registeredResources"],
            json!({"cpu": 0, "memory": 0})
        );
    }
}

#[cfg(test)]
mod far_future {
    #[test]
    fn times_past_the_year_9999_are_left_out_not_a_panic() {
        assert_eq!(super::format_time_ms(253_402_300_800_000), None);
        assert!(super::format_time_ms(1_700_000_000_000).is_some());
    }
}
