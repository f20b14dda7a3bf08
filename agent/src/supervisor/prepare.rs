//! Before anything starts: adopting containers that already exist, then
//! the host's policy, log drivers, host ports, pulls, volumes and creates.
//!
//! Invariants: a bad image or a bad setting fails the task (TaskFailedToStart)
//! before anything starts; nothing is pulled before the policy allows the
//! task; a stop read during a pull or a volume creation abandons it, and
//! one read during a create lets that create finish (its id is recorded, so
//! cleanup removes it) and creates nothing more.

use std::collections::BTreeMap;

use berth_proto::status::{Status, StopCode};
use berth_taskdef::ContainerDefinition;
use tracing::{debug, info, warn};

use super::Supervisor;
use crate::runtime::{
    ContainerInfo, ContainerSpec, LABEL_CONTAINER_NAME, LABEL_INSTANCE_ID, LABEL_TASK_FAMILY,
    LABEL_TASK_ID, RuntimeError, container_name,
};

impl Supervisor {
    pub(super) fn spec(&self, def: &ContainerDefinition) -> ContainerSpec {
        let mut labels: BTreeMap<String, String> = def.docker_labels.clone();
        labels.insert(LABEL_TASK_ID.into(), self.state.task_id.clone());
        labels.insert(LABEL_CONTAINER_NAME.into(), def.name.clone());
        labels.insert(LABEL_TASK_FAMILY.into(), self.definition.family.clone());
        labels.insert(LABEL_INSTANCE_ID.into(), self.settings.instance_id.clone());
        ContainerSpec {
            name: container_name(&self.definition.family, &def.name, &self.state.task_id),
            labels,
            network_mode: self.definition.network_mode().as_str().into(),
            definition: def.clone(),
            default_stop_timeout: self.settings.default_stop_timeout,
            mounts: crate::volumes::mounts(
                &self.definition,
                def,
                &self.state.task_id,
                &self.settings.instance_id,
            ),
            volumes_from: crate::volumes::volumes_from(&self.definition, def, &self.state.task_id),
            pid_mode: self.shared_namespace(def, self.definition.pid_mode.as_deref(), None),
            ipc_mode: self.shared_namespace(
                def,
                self.definition.ipc_mode.as_deref(),
                Some("shareable"),
            ),
            cgroup_parent: self
                .task_limits()
                .map(|_| format!("/{}/{}", crate::cgroups::PARENT, self.state.task_id)),
            secret_env: self.secrets.env_of(def),
        }
    }

    /// The task-level `(cpu units, memory MiB)` to enforce, when the host
    /// enforces them and the task has either.
    pub(super) fn task_limits(&self) -> Option<(Option<u64>, Option<u64>)> {
        self.settings.task_cgroups.as_ref()?;
        let cpu = self.definition.task_cpu_units();
        let memory = self.definition.task_memory_mib();
        (cpu.is_some() || memory.is_some()).then_some((cpu, memory))
    }

    /// The container whose namespaces the others join under `pidMode` /
    /// `ipcMode` `task`: the first to start (the first of the start
    /// order), as ECS shares the first container's on Linux.
    pub(super) fn namespace_anchor(&self) -> Option<usize> {
        let shares = |m: &Option<String>| m.as_deref() == Some("task");
        (shares(&self.definition.pid_mode) || shares(&self.definition.ipc_mode))
            .then(|| self.order.first().copied())
            .flatten()
    }

    /// Docker's mode for one container: `task` becomes `anchor_mode` for
    /// the anchor (`shareable` for IPC, Docker's default for PID) and
    /// `container:<anchor>` for the others; other modes apply to every
    /// container as they are.
    fn shared_namespace(
        &self,
        def: &ContainerDefinition,
        mode: Option<&str>,
        anchor_mode: Option<&str>,
    ) -> Option<String> {
        if mode != Some("task") {
            return mode.map(str::to_owned);
        }
        let anchor = &self.containers[self.namespace_anchor()?].def;
        if anchor.name == def.name {
            anchor_mode.map(str::to_owned)
        } else {
            Some(format!(
                "container:{}",
                container_name(&self.definition.family, &anchor.name, &self.state.task_id)
            ))
        }
    }

    /// Whether `info` is a container of this task made by this agent: both
    /// `berth.task-id` and `berth.instance-id` are ours (another agent on a
    /// shared engine may run a task of the same id, SPEC §2).
    fn is_own(&self, info: &ContainerInfo) -> bool {
        info.labels.get(LABEL_TASK_ID).map(String::as_str) == Some(self.task_id())
            && info.labels.get(LABEL_INSTANCE_ID).map(String::as_str)
                == Some(self.settings.instance_id.as_str())
    }

    /// Finds containers that already exist: by recorded id, else by name;
    /// either only when it carries this task's and this agent's labels.
    pub(super) async fn adopt(&mut self) {
        for i in 0..self.containers.len() {
            let name = self.spec(&self.containers[i].def).name;
            let recorded = self.containers[i].state.runtime_id.clone();
            let mut found = None;
            if !recorded.is_empty() {
                found = self.rt.inspect(&recorded).await.ok().flatten();
            }
            if found.is_none() {
                found = self.rt.inspect(&name).await.ok().flatten();
            }
            let foreign = found.take_if(|info| !self.is_own(info));
            if let Some(info) = &foreign {
                warn!(container = %self.containers[i].def.name, id = %info.id, "a container of this name or id belongs to another task or agent; not adopted");
            }
            match found {
                None if foreign.is_some() => {
                    // Never ours: forget the id, so nothing here touches it.
                    self.containers[i].state.runtime_id.clear();
                }
                Some(info) => {
                    debug!(container = %self.containers[i].def.name, id = %info.id, "adopted existing container");
                    // Whether it still has to be started is the prior
                    // state's call (PENDING: never started, or the host
                    // rebooted); start_container skips a running one.
                    let c = &mut self.containers[i];
                    c.state.runtime_id = info.id.clone();
                    c.last_start_ms = info.started_at_ms;
                }
                None if !recorded.is_empty()
                    && self.containers[i].state.last_status == Status::Running =>
                {
                    // It ran, and is gone: removed behind the agent's back.
                    // The resync below handles it like an exit.
                }
                None => {
                    self.containers[i].state.runtime_id.clear();
                }
            }
        }
    }

    /// Pulls every image and creates every container that does not exist
    /// yet, so a bad image or a bad setting fails the task before anything
    /// starts. Returns early when a stop is seen (`stop_seen`), leaving it
    /// to the run loop.
    pub(super) async fn prepare(&mut self) {
        info!("preparing task");
        if self.stop_requested() {
            return;
        }
        // What the host refuses, before anything is pulled or created.
        if let Err(violation) = crate::policy::check(&self.definition, &self.settings.policy) {
            self.fail_to_start(violation.container, violation.to_string())
                .await;
            return;
        }
        let pending: Vec<usize> = (0..self.containers.len())
            .filter(|&i| self.containers[i].state.runtime_id.is_empty())
            .collect();
        // Secrets the assignment did not deliver (an agent that restarted
        // offline no longer has them): refused before anything is pulled.
        if let Some((i, why)) = pending
            .iter()
            .find_map(|&i| Some((i, self.secrets.problem(&self.containers[i].def)?)))
        {
            self.fail_to_start(i, why).await;
            return;
        }
        let log_drivers: Vec<(usize, String)> = pending
            .iter()
            .filter_map(|&i| {
                let config = self.containers[i].def.log_configuration.as_ref()?;
                Some((i, config.log_driver.clone()))
            })
            .collect();
        if !log_drivers.is_empty() {
            let rt = self.rt.clone();
            let Some(listed) = self
                .guarded(true, async move { rt.log_drivers().await })
                .await
            else {
                return;
            };
            match listed {
                Ok(available) => {
                    if let Some((i, driver)) =
                        log_drivers.iter().find(|(_, d)| !available.contains(d))
                    {
                        let reason = format!(
                            "CannotCreateContainerError: log driver {driver} is not available on this docker engine; it has {}",
                            available.join(", ")
                        );
                        self.fail_to_start(*i, reason).await;
                        return;
                    }
                }
                // Docker's create will say it if the driver is missing.
                Err(e) => warn!(error = %e, "cannot list the engine's log drivers"),
            }
        }
        if self.settings.check_host_ports && !pending.is_empty() {
            // Binds and a /proc walk: off the async threads.
            let (def, containers) = (self.definition.clone(), pending.clone());
            let check =
                tokio::task::spawn_blocking(move || crate::ports::check_task(&def, &containers));
            let Some(checked) = self.guarded(true, check).await else {
                return;
            };
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(in_use)) => {
                    self.fail_to_start(in_use.container, in_use.to_string())
                        .await;
                    return;
                }
                Err(e) => warn!(error = %e, "host port check did not complete"),
            }
        }
        for i in 0..self.containers.len() {
            if !self.containers[i].state.runtime_id.is_empty() {
                continue;
            }
            let image = self.containers[i].def.image.clone();
            let (rt, policy, img) = (self.rt.clone(), self.settings.pull_policy, image.clone());
            let credentials = self
                .secrets
                .pull_credentials(&self.containers[i].def.name)
                .cloned();
            let Some(pulled) = self
                .guarded(true, async move {
                    rt.ensure_image(&img, policy, credentials.as_ref()).await
                })
                .await
            else {
                info!(image = %image, "pull abandoned: the task is stopping");
                return;
            };
            if let Err(e) = pulled {
                let msg = match e {
                    RuntimeError::Pull { message, .. } => message,
                    other => other.to_string(),
                };
                self.fail_to_start(
                    i,
                    format!("CannotPullContainerError: pull image {image}: {msg}"),
                )
                .await;
                return;
            }
        }
        crate::failpoint::hit("after-pull");
        let volumes = crate::volumes::docker_volumes(
            &self.definition,
            &self.state.task_id,
            &self.settings.instance_id,
        );
        for (i, mut volume) in volumes {
            volume.foreign_allowed = self
                .settings
                .policy
                .allowed_shared_volumes
                .contains(&volume.name);
            let rt = self.rt.clone();
            let Some(ensured) = self
                .guarded(true, async move { rt.ensure_volume(&volume).await })
                .await
            else {
                return;
            };
            if let Err(e) = ensured {
                self.fail_to_start(i, format!("CannotCreateVolumeError: {e}"))
                    .await;
                return;
            }
        }
        // The task's cgroup and its limits, before any container is in it.
        if let (Some(layout), Some((cpu, memory))) =
            (self.settings.task_cgroups.clone(), self.task_limits())
        {
            let task_id = self.state.task_id.clone();
            if let Err(e) = layout.prepare(&task_id, cpu, memory) {
                self.fail_to_start(
                    0,
                    format!("cannot set the task's cpu and memory limits: {e}"),
                )
                .await;
                return;
            }
        }
        // In start order: what a container links to, takes volumes from or
        // shares namespaces with (the anchor, first) exists when it is
        // created.
        for i in self.order.clone() {
            if self.stop_requested() {
                return;
            }
            if !self.containers[i].state.runtime_id.is_empty() {
                continue;
            }
            let spec = self.spec(&self.containers[i].def);
            let rt = self.rt.clone();
            // Not abandoned once asked: the engine may have made it.
            let Some(created) = self
                .guarded(false, async move { rt.create(&spec).await })
                .await
            else {
                return;
            };
            match created {
                Ok(id) => {
                    crate::failpoint::hit("after-create");
                    self.containers[i].state.runtime_id = id;
                    // Record the id before starting, so a crash adopts it.
                    self.publish().await;
                }
                Err(e) => {
                    self.fail_to_start(i, format!("CannotCreateContainerError: {e}"))
                        .await;
                    return;
                }
            }
        }
    }

    /// The host binds of container `idx`, checked on the host right before
    /// the engine (re)starts it (off the async threads: it walks paths).
    pub(super) async fn check_binds(
        &self,
        idx: usize,
    ) -> Result<(), crate::policy::PolicyViolation> {
        let (def, policy) = (self.definition.clone(), self.settings.policy.clone());
        if crate::policy::host_binds(&def).is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || {
            crate::policy::check_container_binds(&def, idx, &policy)
        })
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "host path check did not complete");
            crate::policy::check_container_binds(&self.definition, idx, &self.settings.policy)
        })
    }

    pub(super) async fn fail_to_start(&mut self, idx: usize, reason: String) {
        warn!(container = %self.containers[idx].def.name, %reason, "task failed to start");
        self.containers[idx].state.reason = reason.clone();
        self.containers[idx].state.last_status = Status::Stopped.to_string();
        let name = self.containers[idx].def.name.clone();
        self.stop_all(StopCode::TaskFailedToStart, &format!("{name}: {reason}"))
            .await;
    }
}

/// `prepare()`'s refusals (policy, log driver, host ports) and the task's
/// volumes, against the fake runtime.
#[cfg(test)]
mod tests {
    use berth_proto::status::{Status, StopCode};
    use berth_taskdef::{ContainerDefinition, TaskDefinition};

    use super::super::Settings;
    use super::super::harness::{Harness, settings};
    use crate::runtime::fake::FakeRuntime;
    use crate::runtime::{Mount, MountSource, VolumeScope, VolumeSpec};
    use berth_taskdef::{
        DockerVolumeConfiguration, HostVolume, LogConfiguration, MountPoint, PortMapping, Volume,
        VolumeFrom,
    };

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: format!("img/{name}"),
            memory: Some(16),
            ..Default::default()
        }
    }

    fn task(containers: Vec<ContainerDefinition>) -> TaskDefinition {
        TaskDefinition {
            family: "web".into(),
            container_definitions: containers,
            ..Default::default()
        }
    }

    /// A supervisor for a new task (no prior state).
    fn run(rt: &FakeRuntime, settings: Settings, def: TaskDefinition) -> Harness {
        Harness::start(rt, settings, def, None)
    }

    fn nothing_pulled_or_created(rt: &FakeRuntime) {
        let calls = rt.calls();
        assert!(
            !calls.iter().any(|c| c.starts_with("pull")
                || c.starts_with("create")
                || c.starts_with("volume")),
            "{calls:?}"
        );
    }

    fn with_secret(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            secrets: vec![berth_taskdef::Secret {
                name: "DB_PASSWORD".into(),
                value_from: "arn:aws:ssm:r:1:parameter/db".into(),
            }],
            ..container(name)
        }
    }

    #[tokio::test]
    async fn a_secret_that_was_not_delivered_fails_the_task_naming_it() {
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(false), task(vec![with_secret("app")]));
        let st = r.until_status(Status::Stopped).await;
        assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
        for part in [
            "app:",
            "secret DB_PASSWORD",
            "parameter/db",
            "in memory only",
        ] {
            assert!(
                st.stopped_reason.contains(part),
                "{part}: {}",
                st.stopped_reason
            );
        }
        nothing_pulled_or_created(&rt);
    }

    #[tokio::test]
    async fn delivered_secrets_are_in_the_container_s_create_spec() {
        let rt = FakeRuntime::new();
        let secrets = crate::secrets::TaskSecrets::from_desired(&berth_proto::v1::DesiredTask {
            secrets: vec![berth_proto::v1::TaskSecret {
                container: "app".into(),
                name: "DB_PASSWORD".into(),
                value: b"pw-3b9".to_vec(),
            }],
            ..Default::default()
        });
        let mut r = Harness::start_with_secrets(
            &rt,
            settings(false),
            task(vec![with_secret("app")]),
            secrets,
        );
        let st = r.until_status(Status::Running).await;
        let id = &st.containers[0].runtime_id;
        let spec = rt.spec(id).expect("created");
        assert_eq!(
            spec.secret_env.0,
            [("DB_PASSWORD".to_owned(), "pw-3b9".to_owned())]
        );
        assert!(
            !spec.labels.values().any(|v| v.contains("pw-3b9")),
            "not in labels"
        );
        assert!(!format!("{spec:?}").contains("pw-3b9"), "not in Debug");
    }

    #[tokio::test]
    async fn delivered_registry_credentials_go_with_that_container_s_pull() {
        let rt = FakeRuntime::new();
        let private = ContainerDefinition {
            repository_credentials: Some(berth_taskdef::RepositoryCredentials {
                credentials_parameter: Some("registry".into()),
            }),
            ..container("private")
        };
        let secrets = crate::secrets::TaskSecrets::from_desired(&berth_proto::v1::DesiredTask {
            registry_credentials: vec![berth_proto::v1::RegistryCredentials {
                container: "private".into(),
                username: "puller".into(),
                password: "pw".into(),
            }],
            ..Default::default()
        });
        let mut r = Harness::start_with_secrets(
            &rt,
            settings(false),
            task(vec![container("public"), private]),
            secrets,
        );
        r.until_status(Status::Running).await;
        let calls = rt.calls();
        let pulls: Vec<&str> = calls
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with("pull"))
            .collect();
        assert_eq!(
            pulls,
            [
                "pull img/public",
                "pull img/private",
                "pull credentials puller"
            ],
            "only the container with repositoryCredentials pulls with them"
        );
    }

    #[tokio::test]
    async fn task_namespaces_are_the_first_started_containers_and_it_goes_first() {
        // `late` depends on `anchor`, so `anchor` starts first and owns the
        // namespaces, although it is second in the definition.
        let mut late = container("late");
        late.depends_on = vec![berth_taskdef::ContainerDependency {
            container_name: "anchor".into(),
            condition: "START".into(),
        }];
        let side = container("side");
        let mut def = task(vec![late, container("anchor"), side]);
        def.ipc_mode = Some("task".into());
        def.pid_mode = Some("task".into());
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(false), def);
        r.until_status(Status::Running).await;
        let spec_of = |n: &str| rt.spec(&rt.id_of(n).expect("created")).expect("spec");
        let anchor = spec_of("anchor");
        assert_eq!(anchor.ipc_mode.as_deref(), Some("shareable"));
        assert_eq!(anchor.pid_mode, None);
        for joiner in ["late", "side"] {
            let s = spec_of(joiner);
            let want = "container:berth-web-anchor-0123456789ab";
            assert_eq!(s.ipc_mode.as_deref(), Some(want), "{joiner}");
            assert_eq!(s.pid_mode.as_deref(), Some(want), "{joiner}");
        }
        let calls = rt.calls();
        let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or(usize::MAX);
        assert!(at("create anchor") < at("create late"), "{calls:?}");
        assert!(at("start anchor") < at("start side"), "{calls:?}");
        assert!(at("start anchor") < at("start late"), "{calls:?}");
        r.handle
            .stop(StopCode::UserInitiated, "Task stopped by user")
            .await;
        r.until_status(Status::Stopped).await;
    }

    #[tokio::test]
    async fn a_policy_violation_fails_the_task_before_anything_is_pulled() {
        let mut app = container("app");
        app.privileged = Some(true);
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(false), task(vec![container("init"), app]));
        let st = r.until_status(Status::Stopped).await;
        assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
        for part in [
            "app:",
            "allow_privileged",
            "containerDefinitions[1].privileged",
        ] {
            assert!(
                st.stopped_reason.contains(part),
                "{part}: {}",
                st.stopped_reason
            );
        }
        let app = st.containers.iter().find(|c| c.name == "app").expect("app");
        assert!(app.reason.contains("allow_privileged"), "{}", app.reason);
        nothing_pulled_or_created(&rt);
    }

    #[tokio::test]
    async fn a_missing_log_driver_is_refused_with_the_list() {
        let mut app = container("app");
        app.log_configuration = Some(LogConfiguration {
            log_driver: "fluentd".into(),
            ..Default::default()
        });
        let rt = FakeRuntime::new();
        rt.set_log_drivers(&["json-file", "none"]);
        let mut s = settings(false);
        s.policy.allowed_log_drivers.push("fluentd".into());
        let mut r = run(&rt, s, task(vec![app]));
        let st = r.until_status(Status::Stopped).await;
        assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
        assert!(
            st.stopped_reason.contains(
                "log driver fluentd is not available on this docker engine; it has json-file, none"
            ),
            "{}",
            st.stopped_reason
        );
        nothing_pulled_or_created(&rt);
    }

    #[tokio::test]
    async fn an_available_log_driver_runs() {
        let mut app = container("app");
        app.log_configuration = Some(LogConfiguration {
            log_driver: "json-file".into(),
            ..Default::default()
        });
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(false), task(vec![app]));
        r.until_status(Status::Running).await;
    }

    #[tokio::test]
    async fn a_taken_host_port_fails_the_task_naming_the_holder() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let mut app = container("app");
        app.port_mappings = vec![PortMapping {
            container_port: Some(80),
            host_port: Some(port),
            ..Default::default()
        }];
        let rt = FakeRuntime::new();
        let mut r = run(&rt, settings(true), task(vec![container("init"), app]));
        let st = r.until_status(Status::Stopped).await;
        assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
        let expected = format!(
            "app: host port {port}/tcp is already in use by {} (pid {})",
            std::fs::read_to_string("/proc/self/comm")?.trim_end(),
            std::process::id()
        );
        assert_eq!(st.stopped_reason, expected);
        nothing_pulled_or_created(&rt);
        drop(listener);
        Ok(())
    }

    /// Settings whose policy allows host paths under `dir` (an existing
    /// `dir/site` included).
    fn allowing(dir: &std::path::Path) -> Settings {
        let mut s = settings(false);
        s.policy.allowed_host_paths = vec![dir.to_path_buf()];
        s
    }

    fn volume_task_in(dir: &std::path::Path) -> TaskDefinition {
        let mut def = volume_task();
        def.volumes[1].host = Some(HostVolume {
            source_path: Some(format!("{}/site", dir.display())),
        });
        def
    }

    fn volume_task() -> TaskDefinition {
        let mount = |volume: &str, path: &str, read_only: bool| MountPoint {
            source_volume: volume.into(),
            container_path: path.into(),
            read_only: Some(read_only),
        };
        let mut writer = container("writer");
        writer.mount_points = vec![
            mount("scratch", "/scratch", false),
            mount("site", "/site", true),
            mount("db", "/db", false),
        ];
        let mut reader = container("reader");
        reader.volumes_from = vec![VolumeFrom {
            source_container: "writer".into(),
            read_only: Some(true),
        }];
        let mut def = task(vec![writer, reader]);
        def.pid_mode = Some("host".into());
        def.volumes = vec![
            Volume {
                name: "scratch".into(),
                ..Default::default()
            },
            Volume {
                name: "site".into(),
                host: Some(HostVolume {
                    source_path: Some("/srv/site".into()),
                }),
                ..Default::default()
            },
            Volume {
                name: "db".into(),
                docker_volume_configuration: Some(DockerVolumeConfiguration {
                    scope: Some("shared".into()),
                    autoprovision: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ];
        def
    }

    #[tokio::test]
    async fn volumes_are_created_before_containers_and_task_ones_removed_after()
    -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("site"))?;
        let site = format!("{}/site", dir.path().display());
        let rt = FakeRuntime::new();
        let mut s = allowing(dir.path());
        s.policy.allow_host_pid_ipc = true;
        let mut r = run(&rt, s, volume_task_in(dir.path()));
        r.until_status(Status::Running).await;

        let scratch = "berth-web-scratch-0123456789ab";
        let volumes = rt.volumes();
        assert_eq!(
            volumes.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![scratch, "db"]
        );
        assert_eq!(
            volumes.get(scratch).map(|v| v.scope),
            Some(VolumeScope::Task)
        );
        let calls = rt.calls();
        let last_volume = calls.iter().rposition(|c| c.starts_with("volume"));
        let first_create = calls.iter().position(|c| c.starts_with("create"));
        assert!(last_volume < first_create, "{calls:?}");

        let writer = rt.spec(&rt.id_of("writer").expect("writer")).expect("spec");
        assert_eq!(
            writer.mounts,
            vec![
                Mount {
                    source: MountSource::Volume(scratch.into()),
                    target: "/scratch".into(),
                    read_only: false,
                },
                Mount {
                    source: MountSource::Bind(site.clone()),
                    target: "/site".into(),
                    read_only: true,
                },
                Mount {
                    source: MountSource::Volume("db".into()),
                    target: "/db".into(),
                    read_only: false,
                },
            ]
        );
        assert_eq!(writer.pid_mode.as_deref(), Some("host"));
        let reader = rt.spec(&rt.id_of("reader").expect("reader")).expect("spec");
        assert_eq!(
            reader.volumes_from,
            vec![("berth-web-writer-0123456789ab".to_owned(), true)]
        );

        r.handle
            .stop(StopCode::UserInitiated, "Task stopped by user")
            .await;
        r.finished().await;
        let left: Vec<String> = rt.volumes().into_keys().collect();
        assert_eq!(left, vec!["db".to_owned()], "the shared volume stays");
        let calls = rt.calls();
        let removed_volume = calls
            .iter()
            .position(|c| c == &format!("remove volume {scratch}"));
        let last_container_removal = calls
            .iter()
            .rposition(|c| c.starts_with("remove ") && !c.starts_with("remove volume"));
        assert!(removed_volume > last_container_removal, "{calls:?}");
        let db = rt.volumes().get("db").map(|v| v.labels.clone());
        assert_eq!(
            db.and_then(|l| l.get(crate::runtime::LABEL_SHARED).cloned())
                .as_deref(),
            Some("1"),
            "an autoprovisioned shared volume is marked as berth's"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_shared_volume_without_autoprovision_fails_the_task() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("site"))?;
        let settings = |_| allowing(dir.path());
        let mut def = volume_task_in(dir.path());
        def.pid_mode = None;
        if let Some(config) = def.volumes[2].docker_volume_configuration.as_mut() {
            config.autoprovision = Some(false);
        }
        // Fails to start with a reason holding `needles`; nothing created.
        async fn refused(rt: &FakeRuntime, s: Settings, def: TaskDefinition, needles: &[&str]) {
            let mut r = run(rt, s, def);
            let st = r.until_status(Status::Stopped).await;
            assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
            for needle in needles {
                assert!(st.stopped_reason.contains(needle), "{}", st.stopped_reason);
            }
            assert!(!rt.calls().iter().any(|c| c.starts_with("create")));
        }
        /// An engine where the shared volume `db` exists with `labels`.
        fn with_db(labels: &[(&str, &str)]) -> FakeRuntime {
            let rt = FakeRuntime::new();
            rt.add_volume(VolumeSpec {
                name: "db".into(),
                scope: VolumeScope::Shared,
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            });
            rt
        }
        let missing = "writer: CannotCreateVolumeError: shared volume db does not exist";
        refused(
            &FakeRuntime::new(),
            settings(false),
            def.clone(),
            &[missing],
        )
        .await;

        // Once the operator has created it, it is still not berth's: refused
        // until the policy names it.
        let foreign = ["berth did not create it", "allowed_shared_volumes"];
        refused(&with_db(&[]), settings(false), def.clone(), &foreign).await;
        let mut s = settings(false);
        s.policy.allowed_shared_volumes = vec!["db".into()];
        run(&with_db(&[]), s, def.clone())
            .until_status(Status::Running)
            .await;

        // One berth created (labelled) is used as it is.
        let rt = with_db(&[(crate::runtime::LABEL_SHARED, "1")]);
        run(&rt, settings(false), def)
            .until_status(Status::Running)
            .await;
        Ok(())
    }

    #[tokio::test]
    async fn a_link_swapped_in_before_a_restart_stops_the_task_unrestarted() -> std::io::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let (allowed, data) = (dir.path().join("allowed"), dir.path().join("data"));
        std::fs::create_dir_all(allowed.join("flip"))?;
        std::fs::create_dir(&data)?;
        let mut s = allowing(&allowed);
        s.policy.protected_host_paths = vec![data.clone()];
        let mut app = container("app");
        app.restart_policy = Some(berth_taskdef::RestartPolicy {
            enabled: true,
            ignored_exit_codes: Vec::new(),
            restart_attempt_period: Some(0),
        });
        app.mount_points = vec![MountPoint {
            source_volume: "flip".into(),
            container_path: "/h".into(),
            read_only: Some(true),
        }];
        let mut def = task(vec![app]);
        def.volumes = vec![Volume {
            name: "flip".into(),
            host: Some(HostVolume {
                source_path: Some(format!("{}/flip", allowed.display())),
            }),
            ..Default::default()
        }];
        let rt = FakeRuntime::new();
        let mut r = run(&rt, s, def);
        r.until_status(Status::Running).await;
        let id = rt.id_of("app").expect("app");
        // The checked start, then one restart while the link is a directory.
        rt.exit(&id, 1);
        r.until("a restart", |s| s.containers[0].restart_count == 1)
            .await;

        std::fs::remove_dir(allowed.join("flip"))?;
        std::os::unix::fs::symlink(&data, allowed.join("flip"))?;
        rt.exit(&id, 1);
        let st = r.until_status(Status::Stopped).await;
        assert_eq!(st.stop_code, StopCode::EssentialContainerExited);
        for part in [
            "not restarted",
            "allowed_host_paths",
            "symbolic link",
            "/flip",
        ] {
            assert!(
                st.stopped_reason.contains(part),
                "{part}: {}",
                st.stopped_reason
            );
        }
        let starts = rt
            .calls()
            .iter()
            .filter(|c| c.as_str() == "start app")
            .count();
        assert_eq!(starts, 2, "not started again: {:?}", rt.calls());
        Ok(())
    }

    #[tokio::test]
    async fn a_bind_missing_at_the_first_start_fails_the_task() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut def = volume_task_in(dir.path());
        def.pid_mode = None;
        let rt = FakeRuntime::new();
        let mut r = run(&rt, allowing(dir.path()), def);
        let st = r.until_status(Status::Stopped).await;
        assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
        assert!(
            st.stopped_reason.contains("does not exist")
                && st.stopped_reason.contains("allowed_host_paths"),
            "{}",
            st.stopped_reason
        );
        assert!(!dir.path().join("site").exists(), "never created");
        nothing_pulled_or_created(&rt);
        Ok(())
    }
}
