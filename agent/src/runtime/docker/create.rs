//! An ECS container definition → Docker's create body ([`create_body`]).
//!
//! Invariants: Docker's restart policy is always `no` (berth's supervisor
//! decides restarts); host paths and volumes go through `Mounts`, never
//! `Binds` (a missing host path is refused, not created); nothing the
//! definition does not ask for is sent; a value Docker cannot hold (MiB or
//! seconds out of range) is an error naming the field, never a wrap-around.

use std::collections::{BTreeMap, HashMap};

use berth_taskdef::ContainerDefinition;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount as DockerMount, MountType, ResourcesUlimits, RestartPolicy,
    RestartPolicyNameEnum,
};

use super::NANOS_PER_SEC;
use super::ports::{non_empty, ports};
use crate::runtime::{ContainerSpec, LABEL_CONTAINER_NAME, LABEL_TASK_FAMILY, MountSource};

/// Linux bounds for CPU shares; ECS passes values below 2 as 2.
const CPU_SHARES_MIN: u64 = 2;
const CPU_SHARES_MAX: u64 = 262_144;
const MIB: i64 = 1024 * 1024;

/// Docker's create body for `spec`. `Err` names the field that cannot be
/// expressed.
pub(crate) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, String> {
    let def = &spec.definition;
    let network_mode = if spec.network_mode.is_empty() {
        "bridge"
    } else {
        spec.network_mode.as_str()
    };
    let linux = def.linux_parameters.as_ref();

    let memory = def.memory.map(|m| mib_to_bytes(m, "memory")).transpose()?;
    let memory_reservation = def
        .memory_reservation
        .map(|m| mib_to_bytes(m, "memoryReservation"))
        .transpose()?;
    let (memory_swap, memory_swappiness) = swap_settings(def, memory)?;

    let (exposed_ports, port_bindings) = ports(def, network_mode)?;
    let mounts = mounts(spec);

    let stop_timeout = def
        .stop_timeout
        .unwrap_or(spec.default_stop_timeout.as_secs());

    let host_config = HostConfig {
        cpu_shares: cpu_shares(def.cpu),
        memory,
        memory_reservation,
        memory_swap,
        memory_swappiness,
        network_mode: Some(network_mode.to_owned()),
        port_bindings,
        // berth restarts containers itself (SPEC §3).
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        dns: non_empty(def.dns_servers.clone()),
        dns_search: non_empty(def.dns_search_domains.clone()),
        extra_hosts: non_empty(
            def.extra_hosts
                .iter()
                .map(|h| format!("{}:{}", h.hostname, h.ip_address))
                .collect(),
        ),
        ulimits: non_empty(
            def.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft_limit),
                    hard: Some(u.hard_limit),
                })
                .collect(),
        ),
        readonly_rootfs: def.readonly_root_filesystem,
        privileged: def.privileged,
        cap_add: linux
            .and_then(|l| l.capabilities.as_ref())
            .and_then(|c| non_empty(c.add.clone())),
        cap_drop: linux
            .and_then(|l| l.capabilities.as_ref())
            .and_then(|c| non_empty(c.drop.clone())),
        init: linux.and_then(|l| l.init_process_enabled),
        shm_size: linux
            .and_then(|l| l.shared_memory_size)
            .map(|m| mib_to_bytes(m, "linuxParameters.sharedMemorySize"))
            .transpose()?,
        tmpfs: linux.and_then(|l| {
            (!l.tmpfs.is_empty()).then(|| {
                l.tmpfs
                    .iter()
                    .map(|t| (t.container_path.clone(), tmpfs_options(t)))
                    .collect()
            })
        }),
        devices: linux.and_then(|l| {
            non_empty(
                l.devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.host_path.clone()),
                        path_in_container: Some(
                            d.container_path
                                .clone()
                                .unwrap_or_else(|| d.host_path.clone()),
                        ),
                        cgroup_permissions: Some(device_permissions(&d.permissions)),
                    })
                    .collect(),
            )
        }),
        log_config: def.log_configuration.as_ref().map(|l| HostConfigLogConfig {
            typ: Some(l.log_driver.clone()),
            config: string_map(&l.options),
        }),
        sysctls: (!def.system_controls.is_empty()).then(|| {
            def.system_controls
                .iter()
                .map(|s| (s.namespace.clone(), s.value.clone()))
                .collect()
        }),
        security_opt: non_empty(def.docker_security_options.clone()),
        links: non_empty(def.links.iter().map(|l| docker_link(spec, l)).collect()),
        mounts,
        volumes_from: non_empty(
            spec.volumes_from
                .iter()
                .map(|(name, read_only)| format!("{name}:{}", if *read_only { "ro" } else { "rw" }))
                .collect(),
        ),
        pid_mode: spec.pid_mode.clone(),
        ipc_mode: spec.ipc_mode.clone(),
        device_requests: gpu_request(def),
        cgroup_parent: spec.cgroup_parent.clone(),
        ..Default::default()
    };

    Ok(ContainerCreateBody {
        image: Some(def.image.clone()),
        cmd: def.command.clone(),
        entrypoint: def.entry_point.clone(),
        env: non_empty(
            def.environment
                .iter()
                .map(|kv| (&kv.name, &kv.value))
                .chain(spec.secret_env.0.iter().map(|(n, v)| (n, v)))
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
        ),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        working_dir: def.working_directory.clone(),
        user: def.user.clone(),
        hostname: def.hostname.clone(),
        exposed_ports,
        stop_timeout: Some(
            i64::try_from(stop_timeout)
                .map_err(|_| format!("stopTimeout {stop_timeout} s is out of range"))?,
        ),
        healthcheck: def
            .health_check
            .as_ref()
            .filter(|h| !h.command.is_empty())
            .map(|h| HealthConfig {
                test: Some(h.command.clone()),
                interval: Some(secs_to_nanos(h.interval.unwrap_or(30))),
                timeout: Some(secs_to_nanos(h.timeout.unwrap_or(5))),
                retries: Some(i64::try_from(h.retries.unwrap_or(3)).unwrap_or(i64::MAX)),
                start_period: Some(secs_to_nanos(h.start_period.unwrap_or(0))),
                start_interval: None,
            }),
        open_stdin: def.interactive,
        tty: def.pseudo_terminal,
        network_disabled: def.disable_networking,
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// ECS `cpu` units are CPU shares; absent or 0 leaves Docker's default, and
/// values outside the kernel's range are clamped to it, as the ECS agent does.
pub(crate) fn cpu_shares(cpu: Option<u64>) -> Option<i64> {
    match cpu {
        None | Some(0) => None,
        Some(units) => i64::try_from(units.clamp(CPU_SHARES_MIN, CPU_SHARES_MAX)).ok(),
    }
}

fn mib_to_bytes(mib: u64, field: &str) -> Result<i64, String> {
    i64::try_from(mib)
        .ok()
        .and_then(|m| m.checked_mul(MIB))
        .ok_or_else(|| format!("{field} {mib} MiB is out of range"))
}

fn secs_to_nanos(secs: u64) -> i64 {
    i64::try_from(secs)
        .ok()
        .and_then(|s| s.checked_mul(NANOS_PER_SEC))
        .unwrap_or(i64::MAX)
}

/// ECS `maxSwap` (MiB on top of `memory`; 0 = no swap) and `swappiness`.
fn swap_settings(
    def: &ContainerDefinition,
    memory: Option<i64>,
) -> Result<(Option<i64>, Option<i64>), String> {
    let Some(linux) = def.linux_parameters.as_ref() else {
        return Ok((None, None));
    };
    let swap = match (linux.max_swap, memory) {
        (Some(max_swap), Some(memory)) if max_swap >= 0 => Some(
            max_swap
                .checked_mul(MIB)
                .and_then(|s| s.checked_add(memory))
                .ok_or_else(|| format!("linuxParameters.maxSwap {max_swap} MiB is out of range"))?,
        ),
        (Some(_), None) => {
            return Err("linuxParameters.maxSwap needs the container's memory".to_owned());
        }
        _ => None,
    };
    Ok((swap, linux.swappiness))
}
/// `HostConfig.Mounts` for host paths (`type=bind`: the Engine refuses a
/// missing host path instead of creating it, as `Binds` would) and Docker
/// volumes.
fn mounts(spec: &ContainerSpec) -> Option<Vec<DockerMount>> {
    let mut mounts = Vec::new();
    for mount in &spec.mounts {
        let (typ, source) = match &mount.source {
            MountSource::Bind(host_path) => (MountType::BIND, host_path),
            MountSource::Volume(name) => (MountType::VOLUME, name),
        };
        mounts.push(DockerMount {
            target: Some(mount.target.clone()),
            source: Some(source.clone()),
            typ: Some(typ),
            read_only: Some(mount.read_only),
            ..Default::default()
        });
    }
    non_empty(mounts)
}

/// `size=64m,noexec,…` (sizes are MiB in ECS).
fn tmpfs_options(tmpfs: &berth_taskdef::Tmpfs) -> String {
    let mut options = Vec::with_capacity(tmpfs.mount_options.len() + 1);
    if tmpfs.size > 0 {
        options.push(format!("size={}m", tmpfs.size));
    }
    options.extend(tmpfs.mount_options.iter().cloned());
    options.join(",")
}

/// ECS `read`/`write`/`mknod` → cgroup `rwm`; none given means all.
fn device_permissions(permissions: &[String]) -> String {
    if permissions.is_empty() {
        return "rwm".to_owned();
    }
    let mut out = String::new();
    for (flag, name) in [('r', "read"), ('w', "write"), ('m', "mknod")] {
        if permissions.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            out.push(flag);
        }
    }
    out
}

/// An ECS link names a container of the same task (`db` or `db:alias`);
/// Docker needs that container's Docker name. berth names containers
/// `berth-<family>-<container>-<short task id>`, so the sibling's name is
/// derived from this container's; a link that cannot be derived is passed on.
fn docker_link(spec: &ContainerSpec, link: &str) -> String {
    let (target, alias) = link.split_once(':').unwrap_or((link, link));
    let family = spec.labels.get(LABEL_TASK_FAMILY);
    let own = spec.labels.get(LABEL_CONTAINER_NAME);
    if let (Some(family), Some(own)) = (family, own)
        && let Some(short_id) = spec.name.strip_prefix(&format!("berth-{family}-{own}-"))
    {
        return format!("berth-{family}-{target}-{short_id}:{alias}");
    }
    format!("{target}:{alias}")
}

/// A copy of `map` for Docker's create body; `None` when it is empty, so
/// that nothing is sent for nothing asked.
pub(super) fn string_map(map: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// `resourceRequirements` `GPU`: that many GPUs of the NVIDIA driver, as
/// `docker run --gpus N` asks for them.
fn gpu_request(def: &ContainerDefinition) -> Option<Vec<DeviceRequest>> {
    let n = def.gpu_count();
    (n > 0).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            count: Some(i64::from(n)),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..Default::default()
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_taskdef::{
        Capabilities, Device, HealthCheck, HostEntry, KeyValuePair, LinuxParameters,
        LogConfiguration, PortMapping, SystemControl, Tmpfs, Ulimit,
    };
    use std::time::Duration;

    use crate::runtime::LABEL_INSTANCE_ID;

    fn spec(def: ContainerDefinition) -> ContainerSpec {
        ContainerSpec {
            name: "berth-web-app-1a2b3c4d".to_owned(),
            labels: BTreeMap::from([
                (LABEL_TASK_FAMILY.to_owned(), "web".to_owned()),
                (LABEL_CONTAINER_NAME.to_owned(), "app".to_owned()),
                (LABEL_INSTANCE_ID.to_owned(), "i-1".to_owned()),
            ]),
            network_mode: "bridge".to_owned(),
            definition: def,
            default_stop_timeout: Duration::from_secs(30),
            ..Default::default()
        }
    }

    fn def() -> ContainerDefinition {
        ContainerDefinition {
            name: "app".to_owned(),
            image: "busybox".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_volumes_from_and_namespaces_map_to_host_config() -> Result<(), String> {
        use crate::runtime::Mount;
        let mut s = spec(def());
        s.mounts = vec![
            Mount {
                source: MountSource::Bind("/srv/data".to_owned()),
                target: "/data".to_owned(),
                read_only: true,
            },
            Mount {
                source: MountSource::Bind("/srv/logs".to_owned()),
                target: "/logs".to_owned(),
                read_only: false,
            },
            Mount {
                source: MountSource::Volume("berth-web-scratch-1a2b3c4d".to_owned()),
                target: "/scratch".to_owned(),
                read_only: false,
            },
        ];
        s.volumes_from = vec![
            ("berth-web-db-1a2b3c4d".to_owned(), true),
            ("berth-web-cache-1a2b3c4d".to_owned(), false),
        ];
        s.pid_mode = Some("host".to_owned());
        s.ipc_mode = Some("none".to_owned());
        let host = create_body(&s)?.host_config.unwrap_or_default();
        assert_eq!(host.binds, None, "binds go through Mounts, never Binds");
        let mounts = host.mounts.unwrap_or_default();
        let seen: Vec<String> = mounts
            .iter()
            .map(|m| {
                format!(
                    "{:?} {} {} ro={}",
                    m.typ,
                    m.source.as_deref().unwrap_or(""),
                    m.target.as_deref().unwrap_or(""),
                    m.read_only.unwrap_or(false)
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                "Some(BIND) /srv/data /data ro=true",
                "Some(BIND) /srv/logs /logs ro=false",
                "Some(VOLUME) berth-web-scratch-1a2b3c4d /scratch ro=false",
            ]
        );
        assert_eq!(
            host.volumes_from,
            Some(vec![
                "berth-web-db-1a2b3c4d:ro".to_owned(),
                "berth-web-cache-1a2b3c4d:rw".to_owned()
            ])
        );
        assert_eq!(host.pid_mode.as_deref(), Some("host"));
        assert_eq!(host.ipc_mode.as_deref(), Some("none"));

        // Nothing asked for: nothing sent.
        let host = create_body(&spec(def()))?.host_config.unwrap_or_default();
        assert_eq!(
            (host.binds, host.mounts, host.volumes_from),
            (None, None, None)
        );
        assert_eq!((host.pid_mode, host.ipc_mode), (None, None));

        // `Mounts` carries any path, a colon included.
        let mut s = spec(def());
        s.mounts = vec![Mount {
            source: MountSource::Bind("/srv/a:b".to_owned()),
            target: "/data".to_owned(),
            read_only: false,
        }];
        let host = create_body(&s)?.host_config.unwrap_or_default();
        let mounts = host.mounts.unwrap_or_default();
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/a:b"));
        Ok(())
    }

    #[test]
    fn cpu_units_become_shares() {
        assert_eq!(cpu_shares(None), None);
        assert_eq!(cpu_shares(Some(0)), None);
        assert_eq!(cpu_shares(Some(1)), Some(2));
        assert_eq!(cpu_shares(Some(256)), Some(256));
        assert_eq!(cpu_shares(Some(1_000_000)), Some(262_144));
    }

    #[test]
    fn definition_maps_to_create_body() -> Result<(), String> {
        let mut d = def();
        d.command = Some(vec!["sh".into(), "-c".into(), "exit 3".into()]);
        d.entry_point = Some(vec!["/bin/env".into()]);
        d.environment = vec![KeyValuePair {
            name: "A".into(),
            value: "b=c".into(),
        }];
        d.cpu = Some(512);
        d.memory = Some(128);
        d.memory_reservation = Some(64);
        d.port_mappings = vec![
            PortMapping {
                container_port: Some(80),
                host_port: Some(0),
                ..Default::default()
            },
            PortMapping {
                container_port: Some(53),
                host_port: Some(5353),
                protocol: Some("UDP".into()),
                ..Default::default()
            },
        ];
        d.health_check = Some(HealthCheck {
            command: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(10),
            ..Default::default()
        });
        d.extra_hosts = vec![HostEntry {
            hostname: "db".into(),
            ip_address: "10.0.0.2".into(),
        }];
        d.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft_limit: 1024,
            hard_limit: 2048,
        }];
        d.linux_parameters = Some(LinuxParameters {
            capabilities: Some(Capabilities {
                add: vec!["NET_ADMIN".into()],
                drop: vec!["MKNOD".into()],
            }),
            devices: vec![Device {
                host_path: "/dev/fuse".into(),
                container_path: None,
                permissions: vec!["read".into(), "write".into()],
            }],
            init_process_enabled: Some(true),
            shared_memory_size: Some(64),
            tmpfs: vec![Tmpfs {
                container_path: "/run".into(),
                size: 16,
                mount_options: vec!["noexec".into()],
            }],
            ..Default::default()
        });
        d.log_configuration = Some(LogConfiguration {
            log_driver: "json-file".into(),
            options: BTreeMap::from([("max-size".into(), "10m".into())]),
            secret_options: None,
        });
        d.system_controls = vec![SystemControl {
            namespace: "net.core.somaxconn".into(),
            value: "1024".into(),
        }];
        d.links = vec!["db:database".into(), "cache".into()];
        d.interactive = Some(true);
        d.pseudo_terminal = Some(true);

        let mut s = spec(d);
        s.secret_env = crate::secrets::SecretEnv(vec![("S".into(), "v=1".into())]);
        let body = create_body(&s)?;
        let host = body.host_config.clone().unwrap_or_default();
        assert_eq!(body.image.as_deref(), Some("busybox"));
        assert_eq!(
            body.env,
            Some(vec!["A=b=c".to_owned(), "S=v=1".to_owned()]),
            "secrets after the plain environment"
        );
        assert_eq!(body.entrypoint, Some(vec!["/bin/env".to_owned()]));
        assert_eq!(body.stop_timeout, Some(30));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.tty, Some(true));
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.memory, Some(128 * MIB));
        assert_eq!(host.memory_reservation, Some(64 * MIB));
        assert_eq!(host.network_mode.as_deref(), Some("bridge"));
        assert_eq!(
            host.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::NO)
        );
        let mut exposed = body.exposed_ports.clone().unwrap_or_default();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp".to_owned(), "80/tcp".to_owned()]);
        let bindings = host.port_bindings.unwrap_or_default();
        let host_port = |key: &str| {
            bindings
                .get(key)
                .cloned()
                .flatten()
                .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        };
        assert_eq!(host_port("80/tcp").as_deref(), Some(""));
        assert_eq!(host_port("53/udp").as_deref(), Some("5353"));
        let health = body.healthcheck.unwrap_or_default();
        assert_eq!(health.interval, Some(10 * NANOS_PER_SEC));
        assert_eq!(health.timeout, Some(5 * NANOS_PER_SEC));
        assert_eq!(health.retries, Some(3));
        assert_eq!(health.start_period, Some(0));
        assert_eq!(host.extra_hosts, Some(vec!["db:10.0.0.2".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(host.cap_drop, Some(vec!["MKNOD".to_owned()]));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.shm_size, Some(64 * MIB));
        assert_eq!(
            host.tmpfs
                .unwrap_or_default()
                .get("/run")
                .map(String::as_str),
            Some("size=16m,noexec")
        );
        let devices = host.devices.unwrap_or_default();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].path_in_container.as_deref(), Some("/dev/fuse"));
        assert_eq!(devices[0].cgroup_permissions.as_deref(), Some("rw"));
        assert_eq!(
            host.log_config.and_then(|l| l.typ).as_deref(),
            Some("json-file")
        );
        assert_eq!(
            host.sysctls
                .unwrap_or_default()
                .get("net.core.somaxconn")
                .map(String::as_str),
            Some("1024")
        );
        assert_eq!(
            host.links,
            Some(vec![
                "berth-web-db-1a2b3c4d:database".to_owned(),
                "berth-web-cache-1a2b3c4d:cache".to_owned()
            ])
        );
        Ok(())
    }

    #[test]
    fn host_network_publishes_no_bindings_and_cpu_absent_is_default() -> Result<(), String> {
        let mut d = def();
        d.stop_timeout = Some(5);
        d.port_mappings = vec![PortMapping {
            container_port: Some(8080),
            host_port: Some(8080),
            ..Default::default()
        }];
        let mut s = spec(d);
        s.network_mode = "host".to_owned();
        let body = create_body(&s)?;
        let host = body.host_config.unwrap_or_default();
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.cpu_shares, None);
        assert_eq!(body.stop_timeout, Some(5));
        assert_eq!(body.healthcheck, None);
        Ok(())
    }

    #[test]
    fn max_swap_needs_memory() {
        let mut d = def();
        d.linux_parameters = Some(LinuxParameters {
            max_swap: Some(0),
            ..Default::default()
        });
        assert!(create_body(&spec(d.clone())).is_err());
        d.memory = Some(64);
        let host = create_body(&spec(d))
            .ok()
            .and_then(|b| b.host_config)
            .unwrap_or_default();
        assert_eq!(host.memory_swap, Some(64 * MIB));
    }

    #[test]
    fn a_gpu_count_becomes_a_device_request_of_the_nvidia_driver() {
        let host = |d: ContainerDefinition| {
            create_body(&spec(d))
                .ok()
                .and_then(|b| b.host_config)
                .unwrap_or_default()
        };
        assert_eq!(host(def()).device_requests, None);
        let mut d = def();
        d.resource_requirements = vec![berth_taskdef::ResourceRequirement {
            kind: "GPU".to_owned(),
            value: "2".to_owned(),
            sharing_strategy: None,
        }];
        assert_eq!(
            host(d).device_requests,
            Some(vec![DeviceRequest {
                driver: Some("nvidia".to_owned()),
                count: Some(2),
                capabilities: Some(vec![vec!["gpu".to_owned()]]),
                ..Default::default()
            }])
        );
    }
}
