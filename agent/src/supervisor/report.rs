//! What the supervisor tells the manager: the task's snapshot, with each
//! container's ports, image digest and health, and the task's health.
//!
//! Invariants: a snapshot is sent only when it differs from the last one
//! sent; task health is UNHEALTHY if any essential container is unhealthy,
//! HEALTHY if every essential container with a check is healthy (and there
//! is at least one), else UNKNOWN (SPEC §3).

use berth_proto::status::Health;
use berth_proto::v1::NetworkBinding;
use berth_taskdef::ContainerDefinition;

use super::{Report, Supervisor};
use crate::runtime::{ContainerInfo, RunState};

impl Supervisor {
    /// Sends the current state to the manager if it changed.
    pub(super) async fn publish(&mut self) {
        self.state.containers = self.containers.iter().map(|c| c.state.clone()).collect();
        self.state.health_status = task_health(self.containers.iter().map(|c| {
            (
                c.state.essential,
                c.def.health_check.is_some(),
                c.state.health_status.parse().unwrap_or(Health::Unknown),
            )
        }))
        .to_string();
        if self.last_sent.as_ref() == Some(&self.state) {
            return;
        }
        self.last_sent = Some(self.state.clone());
        let _ = self.reports.send(Report::State(self.state.clone())).await;
    }

    pub(super) fn apply_info(&mut self, idx: usize, info: Option<&ContainerInfo>) {
        let Some(info) = info else { return };
        let host_mode = self.definition.network_mode() == berth_taskdef::NetworkMode::Host;
        let host_bindings: Vec<NetworkBinding> = if host_mode {
            host_bindings(&self.containers[idx].def)
        } else {
            Vec::new()
        };
        let c = &mut self.containers[idx].state;
        if !info.image_digest.is_empty() {
            // ECS reports the manifest digest alone: `sha256:…`.
            let digest = info.image_digest.as_str();
            c.image_digest = digest
                .rsplit_once('@')
                .map_or(digest, |(_, d)| d)
                .to_string();
        }
        if host_mode {
            // Docker reports no bindings in host mode: the ports are the
            // definition's own.
            c.network_bindings = host_bindings;
        } else if info.state == RunState::Running || !info.ports.is_empty() {
            // Docker lists a dynamic port once per address family; ECS
            // reports one binding per mapping.
            let mut bindings: Vec<NetworkBinding> = Vec::new();
            for p in &info.ports {
                let b = NetworkBinding {
                    container_port: p.container_port.into(),
                    host_port: p.host_port.into(),
                    protocol: p.protocol.clone(),
                    bind_ip: p.host_ip.clone(),
                };
                if !bindings.iter().any(|x| {
                    x.container_port == b.container_port
                        && x.host_port == b.host_port
                        && x.protocol == b.protocol
                }) {
                    bindings.push(b);
                }
            }
            c.network_bindings = bindings;
        }
        if let Some(h) = info.health {
            c.health_status = health_of(h).to_string();
        }
    }
}

fn host_bindings(def: &ContainerDefinition) -> Vec<NetworkBinding> {
    def.port_mappings
        .iter()
        .filter_map(|m| {
            let port = m.container_port?;
            Some(NetworkBinding {
                container_port: port.into(),
                host_port: m.host_port.filter(|p| *p != 0).unwrap_or(port).into(),
                protocol: m.protocol.clone().unwrap_or_else(|| "tcp".into()),
                bind_ip: "0.0.0.0".into(),
            })
        })
        .collect()
}

/// A container's health as ECS words it (a check still starting is UNKNOWN).
pub(super) fn health_of(h: crate::runtime::Health) -> Health {
    match h {
        crate::runtime::Health::Healthy => Health::Healthy,
        crate::runtime::Health::Unhealthy => Health::Unhealthy,
        crate::runtime::Health::Starting => Health::Unknown,
    }
}

/// Task health (SPEC §3): UNHEALTHY if any essential container is unhealthy,
/// HEALTHY if every essential container with a check is healthy (and there is
/// at least one), else UNKNOWN. Items: (essential, has a check, health).
pub fn task_health(containers: impl Iterator<Item = (bool, bool, Health)>) -> Health {
    let mut checked = 0;
    let mut healthy = 0;
    for (essential, has_check, health) in containers {
        if !essential {
            continue;
        }
        if health == Health::Unhealthy {
            return Health::Unhealthy;
        }
        if has_check {
            checked += 1;
            if health == Health::Healthy {
                healthy += 1;
            }
        }
    }
    if checked > 0 && healthy == checked {
        Health::Healthy
    } else {
        Health::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Healthy, Unhealthy, Unknown};

    #[test]
    fn task_health_rules() {
        assert_eq!(
            task_health([(true, true, Healthy), (false, true, Unhealthy)].into_iter()),
            Healthy
        );
        assert_eq!(
            task_health([(true, true, Healthy), (true, true, Unhealthy)].into_iter()),
            Unhealthy
        );
        assert_eq!(
            task_health([(true, true, Healthy), (true, true, Unknown)].into_iter()),
            Unknown
        );
        assert_eq!(task_health([(true, false, Unknown)].into_iter()), Unknown);
    }
}
