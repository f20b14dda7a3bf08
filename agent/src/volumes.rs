//! A task definition's `volumes`, `mountPoints` and `volumesFrom`, resolved
//! into what the runtime creates and mounts.
//!
//! # Background
//! ECS has three kinds of task volume, and berth runs them the same way:
//! - `host.sourcePath`: a bind mount of a host path (the agent's policy
//!   decides which host paths a task may use, see [`crate::policy`]);
//! - `dockerVolumeConfiguration`: a Docker volume, with `scope` `task`
//!   (created for the task, removed with it) or `shared` (outlives the task;
//!   created only when `autoprovision` is set, never removed by berth);
//! - neither, or `host` without `sourcePath`: ECS' "Docker-managed volume",
//!   an empty volume the task's containers share. berth makes it a
//!   task-scoped Docker volume with the default driver.
//!
//! # Design
//! - Task-scoped Docker volumes are named `berth-<family>-<volume>-<short task
//!   id>` (like containers) and labelled `berth.task-id`, `berth.instance-id`
//!   and `berth.volume-name`, next to the definition's own labels (berth's
//!   win on a clash).
//! - Shared volumes use the definition's volume name as the Docker volume name,
//!   as in ECS: several tasks (and agents) may use the same one. One that
//!   berth creates (`autoprovision`) is labelled `berth.shared=1` and
//!   `berth.shared-by=<instance id>` next to the definition's labels
//!   (berth's win); an existing volume without `berth.shared` is mounted only
//!   when the policy's `allowed_shared_volumes` names it, so a task cannot
//!   reach another workload's volume by its name.
//!
//! # Limitations
//! - Everything here is pure: whether a volume exists is for the runtime to
//!   find out.

use std::collections::BTreeMap;

use berth_taskdef::{ContainerDefinition, TaskDefinition, Volume};
use tracing::warn;

use crate::runtime::naming::{container_name, short_id};
use crate::runtime::{
    LABEL_INSTANCE_ID, LABEL_SHARED, LABEL_SHARED_BY, LABEL_TASK_ID, LABEL_VOLUME_NAME, Mount,
    MountSource, VolumeScope, VolumeSpec,
};

/// Docker name of a task-scoped volume: `berth-<family>-<volume>-<short task id>`.
pub fn task_volume_name(family: &str, volume: &str, task_id: &str) -> String {
    format!("berth-{family}-{volume}-{}", short_id(task_id))
}

/// What a task volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A bind mount of this host path.
    Bind(String),
    /// A Docker volume.
    Volume(VolumeSpec),
}

/// Resolves one of the task's volumes.
pub fn resolve(
    def: &TaskDefinition,
    volume: &Volume,
    task_id: &str,
    instance_id: &str,
) -> Resolved {
    if let Some(path) = volume.host.as_ref().and_then(|h| h.source_path.as_deref()) {
        return Resolved::Bind(path.to_owned());
    }
    let config = volume.docker_volume_configuration.as_ref();
    let shared = config.and_then(|c| c.scope.as_deref()) == Some("shared");
    if shared {
        let config = config.cloned().unwrap_or_default();
        let mut labels = config.labels;
        labels.insert(LABEL_SHARED.to_owned(), "1".to_owned());
        labels.insert(LABEL_SHARED_BY.to_owned(), instance_id.to_owned());
        return Resolved::Volume(VolumeSpec {
            name: volume.name.clone(),
            scope: VolumeScope::Shared,
            driver: config.driver,
            driver_opts: config.driver_opts,
            labels,
            autoprovision: config.autoprovision.unwrap_or(false),
            foreign_allowed: false,
        });
    }
    let mut labels: BTreeMap<String, String> = config.map(|c| c.labels.clone()).unwrap_or_default();
    labels.insert(LABEL_TASK_ID.to_owned(), task_id.to_owned());
    labels.insert(LABEL_INSTANCE_ID.to_owned(), instance_id.to_owned());
    labels.insert(LABEL_VOLUME_NAME.to_owned(), volume.name.clone());
    Resolved::Volume(VolumeSpec {
        name: task_volume_name(&def.family, &volume.name, task_id),
        scope: VolumeScope::Task,
        driver: config.and_then(|c| c.driver.clone()),
        driver_opts: config.map(|c| c.driver_opts.clone()).unwrap_or_default(),
        labels,
        autoprovision: true,
        foreign_allowed: false,
    })
}

/// The Docker volumes the task needs, in definition order, each with the
/// index of the first container that mounts it (0 when none does): the
/// container a failure is reported on.
pub fn docker_volumes(
    def: &TaskDefinition,
    task_id: &str,
    instance_id: &str,
) -> Vec<(usize, VolumeSpec)> {
    def.volumes
        .iter()
        .filter_map(|v| match resolve(def, v, task_id, instance_id) {
            Resolved::Volume(spec) => Some((first_user(def, &v.name).unwrap_or(0), spec)),
            Resolved::Bind(_) => None,
        })
        .collect()
}

/// Index of the first container with a mount point of `volume`.
pub fn first_user(def: &TaskDefinition, volume: &str) -> Option<usize> {
    def.container_definitions
        .iter()
        .position(|c| c.mount_points.iter().any(|m| m.source_volume == volume))
}

/// A container's `mountPoints`, resolved. A mount point of a volume the task
/// does not declare (validation refuses that) is left out, with a warning.
pub fn mounts(
    def: &TaskDefinition,
    container: &ContainerDefinition,
    task_id: &str,
    instance_id: &str,
) -> Vec<Mount> {
    container
        .mount_points
        .iter()
        .filter_map(|m| {
            let Some(volume) = def.volumes.iter().find(|v| v.name == m.source_volume) else {
                warn!(container = %container.name, volume = %m.source_volume, "mount point of an undeclared volume left out");
                return None;
            };
            let source = match resolve(def, volume, task_id, instance_id) {
                Resolved::Bind(path) => MountSource::Bind(path),
                Resolved::Volume(spec) => MountSource::Volume(spec.name),
            };
            Some(Mount {
                source,
                target: m.container_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            })
        })
        .collect()
}

/// A container's `volumesFrom`: (Docker name of the source container,
/// read-only).
pub fn volumes_from(
    def: &TaskDefinition,
    container: &ContainerDefinition,
    task_id: &str,
) -> Vec<(String, bool)> {
    container
        .volumes_from
        .iter()
        .map(|v| {
            (
                container_name(&def.family, &v.source_container, task_id),
                v.read_only.unwrap_or(false),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_taskdef::{DockerVolumeConfiguration, HostVolume, MountPoint, VolumeFrom};

    const TASK: &str = "0123456789abcdef0123456789abcdef";

    fn volume(name: &str) -> Volume {
        Volume {
            name: name.to_owned(),
            ..Default::default()
        }
    }

    fn mount(volume: &str, path: &str, read_only: Option<bool>) -> MountPoint {
        MountPoint {
            source_volume: volume.to_owned(),
            container_path: path.to_owned(),
            read_only,
        }
    }

    fn task() -> TaskDefinition {
        TaskDefinition {
            family: "web".to_owned(),
            volumes: vec![
                Volume {
                    host: Some(HostVolume {
                        source_path: Some("/srv/web".to_owned()),
                    }),
                    ..volume("site")
                },
                volume("scratch"),
                Volume {
                    host: Some(HostVolume { source_path: None }),
                    ..volume("empty-host")
                },
                Volume {
                    docker_volume_configuration: Some(DockerVolumeConfiguration {
                        scope: Some("task".to_owned()),
                        driver: Some("local".to_owned()),
                        driver_opts: BTreeMap::from([("type".to_owned(), "tmpfs".to_owned())]),
                        labels: BTreeMap::from([
                            ("team".to_owned(), "a".to_owned()),
                            (LABEL_TASK_ID.to_owned(), "forged".to_owned()),
                        ]),
                        ..Default::default()
                    }),
                    ..volume("cache")
                },
                Volume {
                    docker_volume_configuration: Some(DockerVolumeConfiguration {
                        scope: Some("shared".to_owned()),
                        autoprovision: Some(true),
                        labels: BTreeMap::from([("team".to_owned(), "a".to_owned())]),
                        ..Default::default()
                    }),
                    ..volume("db-data")
                },
            ],
            container_definitions: vec![
                ContainerDefinition {
                    name: "app".to_owned(),
                    mount_points: vec![
                        mount("site", "/usr/share/site", Some(true)),
                        mount("scratch", "/scratch", None),
                        mount("db-data", "/data", Some(false)),
                        mount("nowhere", "/nowhere", None),
                    ],
                    volumes_from: vec![VolumeFrom {
                        source_container: "sidecar".to_owned(),
                        read_only: Some(true),
                    }],
                    ..Default::default()
                },
                ContainerDefinition {
                    name: "sidecar".to_owned(),
                    mount_points: vec![mount("cache", "/cache", None)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn task_volumes_are_named_like_containers() {
        assert_eq!(
            task_volume_name("web", "scratch", TASK),
            "berth-web-scratch-0123456789ab"
        );
    }

    #[test]
    fn docker_volumes_skip_binds_and_name_each_scope() {
        let def = task();
        let volumes = docker_volumes(&def, TASK, "i-1");
        let names: Vec<(usize, &str, VolumeScope)> = volumes
            .iter()
            .map(|(i, v)| (*i, v.name.as_str(), v.scope))
            .collect();
        assert_eq!(
            names,
            vec![
                (0, "berth-web-scratch-0123456789ab", VolumeScope::Task),
                (0, "berth-web-empty-host-0123456789ab", VolumeScope::Task),
                (1, "berth-web-cache-0123456789ab", VolumeScope::Task),
                (0, "db-data", VolumeScope::Shared),
            ]
        );
        let cache = &volumes[2].1;
        assert_eq!(cache.driver.as_deref(), Some("local"));
        assert_eq!(
            cache.driver_opts.get("type").map(String::as_str),
            Some("tmpfs")
        );
        assert_eq!(
            cache.labels,
            BTreeMap::from([
                ("team".to_owned(), "a".to_owned()),
                (LABEL_TASK_ID.to_owned(), TASK.to_owned()),
                (LABEL_INSTANCE_ID.to_owned(), "i-1".to_owned()),
                (LABEL_VOLUME_NAME.to_owned(), "cache".to_owned()),
            ]),
            "berth's labels win over the definition's"
        );
        let shared = &volumes[3].1;
        assert!(shared.autoprovision);
        assert_eq!(
            shared.labels,
            BTreeMap::from([
                ("team".to_owned(), "a".to_owned()),
                (LABEL_SHARED.to_owned(), "1".to_owned()),
                (LABEL_SHARED_BY.to_owned(), "i-1".to_owned()),
            ]),
            "shared volumes carry the definition's labels and berth's mark"
        );
    }

    #[test]
    fn shared_volumes_are_not_autoprovisioned_unless_asked() {
        let def = TaskDefinition {
            family: "web".to_owned(),
            volumes: vec![Volume {
                docker_volume_configuration: Some(DockerVolumeConfiguration {
                    scope: Some("shared".to_owned()),
                    ..Default::default()
                }),
                ..volume("data")
            }],
            ..Default::default()
        };
        let volumes = docker_volumes(&def, TASK, "i-1");
        assert_eq!(volumes.len(), 1);
        assert!(!volumes[0].1.autoprovision);
        assert_eq!(volumes[0].1.scope, VolumeScope::Shared);
    }

    #[test]
    fn mounts_resolve_binds_and_volumes() {
        let def = task();
        let app = &def.container_definitions[0];
        assert_eq!(
            mounts(&def, app, TASK, "i-1"),
            vec![
                Mount {
                    source: MountSource::Bind("/srv/web".to_owned()),
                    target: "/usr/share/site".to_owned(),
                    read_only: true,
                },
                Mount {
                    source: MountSource::Volume("berth-web-scratch-0123456789ab".to_owned()),
                    target: "/scratch".to_owned(),
                    read_only: false,
                },
                Mount {
                    source: MountSource::Volume("db-data".to_owned()),
                    target: "/data".to_owned(),
                    read_only: false,
                },
            ]
        );
        assert_eq!(
            volumes_from(&def, app, TASK),
            vec![("berth-web-sidecar-0123456789ab".to_owned(), true)]
        );
        assert_eq!(first_user(&def, "cache"), Some(1));
        assert_eq!(first_user(&def, "empty-host"), None);
    }
}
