//! Typed views of a task definition for the agent and the control plane.

use crate::types::{ContainerDefinition, TaskDefinition};
use crate::units;
use std::time::Duration;

/// The network modes berth runs. ECS' `awsvpc` is refused by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    /// Docker's bridge network, the ECS default on Linux.
    Bridge,
    /// The host's network namespace.
    Host,
    /// A network namespace with only a loopback interface.
    None,
}

impl NetworkMode {
    /// The ECS (and Docker) spelling: `bridge`, `host`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
    }

    /// Parses the ECS spelling; `None` for anything berth does not run.
    pub fn from_ecs(s: &str) -> Option<Self> {
        match s {
            "bridge" => Some(NetworkMode::Bridge),
            "host" => Some(NetworkMode::Host),
            "none" => Some(NetworkMode::None),
            _ => None,
        }
    }
}

/// What placing a task reserves on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reservation {
    /// CPU units (1024 per core).
    pub cpu: u64,
    /// MiB.
    pub memory_mib: u64,
}

impl TaskDefinition {
    /// The network mode; `bridge` when absent, as in ECS on Linux.
    ///
    /// Only meaningful for a definition that passed [`crate::validate`]: an
    /// unknown mode (which validation refuses) also reads as `Bridge`.
    pub fn network_mode(&self) -> NetworkMode {
        self.network_mode
            .as_deref()
            .and_then(NetworkMode::from_ecs)
            .unwrap_or(NetworkMode::Bridge)
    }

    /// Task-level `cpu` in CPU units (`"256"`, `256`, `"1 vCPU"`, `"0.25 vcpu"`);
    /// `None` when absent or not understood.
    pub fn task_cpu_units(&self) -> Option<u64> {
        self.cpu.as_ref().and_then(|v| units::parse_cpu(v).ok())
    }

    /// Task-level `memory` in MiB (`"512"`, `512`, `"1 GB"`, `"2GB"`); `None`
    /// when absent or not understood.
    pub fn task_memory_mib(&self) -> Option<u64> {
        self.memory
            .as_ref()
            .and_then(|v| units::parse_memory(v).ok())
    }

    /// What placement reserves: task-level cpu and memory when set, else the
    /// sum over the containers (cpu: the container's `cpu` or 0; memory: the
    /// container's `memory`, else its `memoryReservation`, else 0). Sums
    /// saturate instead of overflowing.
    pub fn reservation(&self) -> Reservation {
        let cpu = self.task_cpu_units().unwrap_or_else(|| {
            self.container_definitions
                .iter()
                .fold(0u64, |acc, c| acc.saturating_add(c.cpu.unwrap_or(0)))
        });
        let memory_mib = self.task_memory_mib().unwrap_or_else(|| {
            self.container_definitions.iter().fold(0u64, |acc, c| {
                acc.saturating_add(c.memory.or(c.memory_reservation).unwrap_or(0))
            })
        });
        Reservation { cpu, memory_mib }
    }

    /// The container definition named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }
}

impl ContainerDefinition {
    /// The GPUs the container asks for (`resourceRequirements` of type
    /// `GPU`; 0 when none or not a count).
    pub fn gpu_count(&self) -> u32 {
        self.resource_requirements
            .iter()
            .filter(|r| r.kind == "GPU")
            .filter_map(|r| r.value.trim().parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    }

    /// `essential`, which defaults to `true` as in ECS.
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// `stopTimeout` as a duration; `None` means the agent's default.
    pub fn stop_timeout(&self) -> Option<Duration> {
        self.stop_timeout.map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(
        name: &str,
        cpu: Option<u64>,
        mem: Option<u64>,
        res: Option<u64>,
    ) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: "busybox".into(),
            cpu,
            memory: mem,
            memory_reservation: res,
            ..Default::default()
        }
    }

    #[test]
    fn reservation_sums_containers_without_task_level_values() {
        let def = TaskDefinition {
            family: "f".into(),
            container_definitions: vec![
                container("a", Some(256), Some(128), Some(64)),
                container("b", None, None, Some(32)),
                container("c", Some(10), None, None),
            ],
            ..Default::default()
        };
        assert_eq!(
            def.reservation(),
            Reservation {
                cpu: 266,
                memory_mib: 160
            }
        );
    }

    #[test]
    fn reservation_prefers_task_level_values() {
        let def = TaskDefinition {
            family: "f".into(),
            cpu: Some(json!("1 vCPU")),
            memory: Some(json!("2 GB")),
            container_definitions: vec![container("a", Some(256), Some(128), None)],
            ..Default::default()
        };
        assert_eq!(
            def.reservation(),
            Reservation {
                cpu: 1024,
                memory_mib: 2048
            }
        );
        // Only one of them set: the other is summed.
        let def = TaskDefinition {
            memory: None,
            ..def
        };
        assert_eq!(def.reservation().memory_mib, 128);
        assert_eq!(def.reservation().cpu, 1024);
    }

    #[test]
    fn defaults() {
        let def = TaskDefinition::default();
        assert_eq!(def.network_mode(), NetworkMode::Bridge);
        assert_eq!(def.task_cpu_units(), None);
        let c = ContainerDefinition::default();
        assert!(c.is_essential());
        assert_eq!(c.stop_timeout(), None);
        let c = ContainerDefinition {
            essential: Some(false),
            stop_timeout: Some(7),
            ..Default::default()
        };
        assert!(!c.is_essential());
        assert_eq!(c.stop_timeout(), Some(Duration::from_secs(7)));
    }
}
