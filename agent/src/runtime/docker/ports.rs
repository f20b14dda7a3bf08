//! Port mappings both ways: ECS `portMappings` → Docker's `ExposedPorts` and
//! `PortBindings` ([`ports`]), and the Engine's `NetworkSettings.Ports` →
//! the published [`PortBinding`]s ([`port_bindings`]).
//!
//! Invariants: bindings are made only on `bridge`-like networks (`host` and
//! `none` publish nothing); a host port 0 or absent lets Docker pick one;
//! exposed-only ports are never reported as published; reported bindings
//! are sorted.

use std::collections::HashMap;

use berth_taskdef::ContainerDefinition;
use bollard::models::{PortBinding as DockerPortBinding, PortMap};

use crate::runtime::PortBinding;

/// `ExposedPorts` and `PortBindings`. Host port 0 or absent gets an empty
/// host port: Docker picks a free one. Bindings only apply to `bridge`.
#[allow(clippy::type_complexity)]
pub(super) fn ports(
    def: &ContainerDefinition,
    network_mode: &str,
) -> Result<(Option<Vec<String>>, Option<PortMap>), String> {
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: PortMap = HashMap::new();
    let publish = !matches!(network_mode, "host" | "none");
    for (index, mapping) in def.port_mappings.iter().enumerate() {
        let protocol = mapping
            .protocol
            .as_deref()
            .unwrap_or("tcp")
            .to_ascii_lowercase();
        let container_ports: Vec<u16> = match (
            mapping.container_port,
            &mapping.container_port_range,
        ) {
            (Some(port), _) => vec![port],
            (None, Some(range)) => {
                let (low, high) = parse_port_range(range).ok_or_else(|| {
                    format!("portMappings[{index}].containerPortRange {range:?} is not a range like 8000-8010")
                })?;
                (low..=high).collect()
            }
            (None, None) => {
                return Err(format!("portMappings[{index}] has no containerPort"));
            }
        };
        for port in container_ports {
            let key = format!("{port}/{protocol}");
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            if publish {
                let host_port = match mapping.host_port {
                    Some(p) if p != 0 && mapping.container_port.is_some() => p.to_string(),
                    _ => String::new(),
                };
                bindings
                    .entry(key)
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(DockerPortBinding {
                        host_ip: None,
                        host_port: Some(host_port),
                    });
            }
        }
    }
    Ok((
        non_empty(exposed),
        (!bindings.is_empty()).then_some(bindings),
    ))
}

fn parse_port_range(range: &str) -> Option<(u16, u16)> {
    let (low, high) = range.split_once('-')?;
    let low: u16 = low.trim().parse().ok()?;
    let high: u16 = high.trim().parse().ok()?;
    (low <= high).then_some((low, high))
}

/// Published ports from `NetworkSettings.Ports` (`"80/tcp": [{HostIp,
/// HostPort}]`); exposed-only ports (no binding) are left out. Sorted.
pub(super) fn port_bindings(ports: &PortMap) -> Vec<PortBinding> {
    let mut out = Vec::new();
    for (key, bindings) in ports {
        let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            let Some(host_port) = binding
                .host_port
                .as_deref()
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            out.push(PortBinding {
                container_port,
                host_port,
                protocol: protocol.to_owned(),
                host_ip: binding.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.container_port, &a.protocol, &a.host_ip, a.host_port).cmp(&(
            b.container_port,
            &b.protocol,
            &b.host_ip,
            b.host_port,
        ))
    });
    out
}

pub(super) fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_ports_are_parsed_and_sorted() {
        let ports: PortMap = HashMap::from([
            (
                "80/tcp".to_owned(),
                Some(vec![
                    DockerPortBinding {
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some("49153".into()),
                    },
                    DockerPortBinding {
                        host_ip: Some("::".into()),
                        host_port: Some("49153".into()),
                    },
                ]),
            ),
            ("443/tcp".to_owned(), None),
            (
                "53/udp".to_owned(),
                Some(vec![DockerPortBinding {
                    host_ip: Some("0.0.0.0".into()),
                    host_port: Some("5353".into()),
                }]),
            ),
        ]);
        let parsed = port_bindings(&ports);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].container_port, 53);
        assert_eq!(parsed[0].protocol, "udp");
        assert_eq!(parsed[1].host_port, 49153);
        assert_eq!(parsed[1].host_ip, "0.0.0.0");
        assert_eq!(parsed[2].host_ip, "::");
    }
}
