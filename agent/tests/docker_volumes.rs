//! Volumes, log drivers and host-port checks against the real Docker Engine.
//!
//! Same conventions as `docker_runtime.rs`: every test makes its own image
//! and run id (`common::Fixture`), labels every container and volume it
//! creates with its run id, and removes exactly those when it ends, even on
//! failure. Nothing waits on a clock: tests wait for the engine's events,
//! with a deadline.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use berth_agent::ports::{self, Protocol};
use berth_agent::runtime::{
    ContainerSpec, LABEL_INSTANCE_ID, LABEL_SHARED, LABEL_VOLUME_NAME, Mount, MountSource, Runtime,
    RuntimeError, RuntimeEvent, VolumeScope, VolumeSpec,
};
use berth_taskdef::{ContainerDefinition, PortMapping, TaskDefinition};
use common::{DEADLINE, Fixture, LABEL_TEST_RUN};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

impl Fixture {
    /// A spec running `command` with `sh -c`, with `mounts`.
    fn shell_spec(&self, container: &str, command: &str, mounts: Vec<Mount>) -> ContainerSpec {
        ContainerSpec {
            mounts,
            ..self.spec(ContainerDefinition {
                name: container.to_owned(),
                image: self.image.clone(),
                command: Some(vec!["sh".to_owned(), "-c".to_owned(), command.to_owned()]),
                ..Default::default()
            })
        }
    }

    /// A volume spec labelled with this run (so the guard removes it).
    fn volume(&self, name: &str, scope: VolumeScope, autoprovision: bool) -> VolumeSpec {
        VolumeSpec {
            name: name.to_owned(),
            scope,
            driver: None,
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::from([
                (LABEL_TEST_RUN.to_owned(), self.run_id.clone()),
                (LABEL_INSTANCE_ID.to_owned(), self.instance_id.clone()),
                (LABEL_VOLUME_NAME.to_owned(), name.to_owned()),
            ]),
            autoprovision,
            foreign_allowed: false,
        }
    }

    /// Creates and starts `spec`, waits for its exit, and returns the code.
    async fn run_to_exit(
        &self,
        events: &mut BoxStream<'static, RuntimeEvent>,
        spec: &ContainerSpec,
    ) -> Option<i64> {
        let id = self.runtime.create(spec).await.expect("create");
        self.runtime.start(&id).await.expect("start");
        let died = tokio::time::timeout(DEADLINE, async {
            while let Some(event) = events.next().await {
                if let RuntimeEvent::Died { id: d, exit_code } = event
                    && d == id
                {
                    return Some(exit_code);
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("{} did not exit within {DEADLINE:?}", spec.name));
        died.expect("the event stream never ends")
    }
}

fn docker_json(args: &[&str]) -> Option<serde_json::Value> {
    let out = Command::new("docker").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    all.pop()
}

fn volume_exists(name: &str) -> bool {
    docker_json(&["volume", "inspect", name]).is_some()
}

#[tokio::test]
async fn a_task_volume_is_shared_between_containers_and_removed() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;
    let name = fx.name("scratch");
    let spec = fx.volume(&name, VolumeScope::Task, false);
    fx.runtime.ensure_volume(&spec).await.expect("create");
    // Again, as after an agent restart: the same volume, no error.
    fx.runtime.ensure_volume(&spec).await.expect("create again");

    let inspected = docker_json(&["volume", "inspect", &name]).expect("the volume exists");
    assert_eq!(inspected["Labels"][LABEL_VOLUME_NAME], name.as_str());
    assert_eq!(
        inspected["Labels"][LABEL_INSTANCE_ID],
        fx.instance_id.as_str()
    );
    assert_eq!(inspected["Driver"], "local");

    let mount = |read_only: bool| Mount {
        source: MountSource::Volume(name.clone()),
        target: "/scratch".to_owned(),
        read_only,
    };
    let writer = fx.shell_spec(
        "writer",
        "echo hello > /scratch/greeting",
        vec![mount(false)],
    );
    assert_eq!(fx.run_to_exit(&mut events, &writer).await, Some(0));
    let reader = fx.shell_spec(
        "reader",
        "test \"$(cat /scratch/greeting)\" = hello && ! touch /scratch/nope 2>/dev/null",
        vec![mount(true)],
    );
    assert_eq!(
        fx.run_to_exit(&mut events, &reader).await,
        Some(0),
        "the reader sees the writer's file and cannot write"
    );
    // volumesFrom: the writer's mounts, read-only.
    let mut borrower = fx.shell_spec(
        "borrower",
        "test \"$(cat /scratch/greeting)\" = hello && ! touch /scratch/nope 2>/dev/null",
        Vec::new(),
    );
    borrower.volumes_from = vec![(writer.name.clone(), true)];
    assert_eq!(fx.run_to_exit(&mut events, &borrower).await, Some(0));

    // In use: the engine refuses, and says so.
    match fx.runtime.remove_volume(&name).await {
        Err(RuntimeError::Engine { target, .. }) => assert_eq!(target, name),
        other => panic!("removing a volume in use: {other:?}"),
    }
    for spec in [&writer, &reader, &borrower] {
        fx.runtime
            .remove(&spec.name)
            .await
            .expect("remove container");
    }
    fx.runtime
        .remove_volume(&name)
        .await
        .expect("remove volume");
    assert!(!volume_exists(&name));
}

#[tokio::test]
async fn host_binds_are_writable_or_read_only() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let host = dir.path().to_str().expect("utf-8 path").to_owned();
    let bind = |read_only: bool| {
        vec![Mount {
            source: MountSource::Bind(host.clone()),
            target: "/host".to_owned(),
            read_only,
        }]
    };

    let rw = fx.shell_spec("rw", "echo written > /host/rw.txt", bind(false));
    assert_eq!(fx.run_to_exit(&mut events, &rw).await, Some(0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rw.txt")).expect("the container's file"),
        "written\n"
    );

    let ro = fx.shell_spec(
        "ro",
        "cat /host/rw.txt && echo nope > /host/ro.txt",
        bind(true),
    );
    let code = fx.run_to_exit(&mut events, &ro).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "a write to a read-only bind must fail: {code:?}"
    );
    assert!(!dir.path().join("ro.txt").exists());
    let raw = docker_json(&["inspect", "--type", "container", &ro.name]).expect("inspect");
    assert!(
        raw["HostConfig"]["Binds"].is_null(),
        "{}",
        raw["HostConfig"]
    );
    assert_eq!(raw["HostConfig"]["Mounts"][0]["Type"], "bind");
    assert_eq!(raw["HostConfig"]["Mounts"][0]["Source"], host.as_str());
    assert_eq!(raw["HostConfig"]["Mounts"][0]["ReadOnly"], true);

    // A missing host path is refused by the engine, never created.
    let missing = dir.path().join("missing").to_string_lossy().into_owned();
    let spec = fx.shell_spec(
        "missing",
        "true",
        vec![Mount {
            source: MountSource::Bind(missing.clone()),
            target: "/host".to_owned(),
            read_only: false,
        }],
    );
    match fx.runtime.create(&spec).await {
        Err(e) => assert!(e.to_string().contains(&missing), "{e}"),
        Ok(id) => panic!("a bind of a missing path was created: {id}"),
    }
    assert!(!dir.path().join("missing").exists(), "never created");
}

#[tokio::test]
async fn shared_volumes_are_used_created_or_refused() {
    let fx = Fixture::new().await;

    // Made by the operator beforehand: used as it is.
    let existing = fx.name("existing");
    let out = Command::new("docker")
        .args(["volume", "create", "--label"])
        .arg(format!("{LABEL_TEST_RUN}={}", fx.run_id))
        .arg(&existing)
        .output()
        .expect("docker volume create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not berth's (no berth.shared label): refused unless the policy names it.
    let mut spec = fx.volume(&existing, VolumeScope::Shared, false);
    match fx.runtime.ensure_volume(&spec).await {
        Err(e @ RuntimeError::ForeignSharedVolume(_)) => {
            let text = e.to_string();
            assert!(
                text.contains(&existing) && text.contains("allowed_shared_volumes"),
                "{text}"
            );
        }
        other => panic!("a foreign shared volume: {other:?}"),
    }
    spec.foreign_allowed = true;
    fx.runtime
        .ensure_volume(&spec)
        .await
        .expect("existing shared volume the policy names");
    spec.driver = Some("local".to_owned());
    fx.runtime.ensure_volume(&spec).await.expect("same driver");
    spec.driver = Some("berth-test-no-such-driver".to_owned());
    match fx.runtime.ensure_volume(&spec).await {
        Err(e @ RuntimeError::VolumeDriverMismatch { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&existing) && text.contains("local"), "{text}");
        }
        other => panic!("another driver: {other:?}"),
    }

    // Missing and not to be provisioned: a clear error naming it.
    let missing = fx.name("missing");
    match fx
        .runtime
        .ensure_volume(&fx.volume(&missing, VolumeScope::Shared, false))
        .await
    {
        Err(e @ RuntimeError::NoSuchVolume(_)) => {
            let text = e.to_string();
            assert!(text.contains(&missing), "{text}");
            assert!(text.contains("autoprovision"), "{text}");
        }
        other => panic!("missing shared volume: {other:?}"),
    }
    assert!(!volume_exists(&missing));

    // Missing and to be provisioned: created with the definition's labels.
    let provisioned = fx.name("provisioned");
    let mut spec = fx.volume(&provisioned, VolumeScope::Shared, true);
    spec.labels.insert("team".to_owned(), "a".to_owned());
    spec.labels.insert(LABEL_SHARED.to_owned(), "1".to_owned());
    fx.runtime
        .ensure_volume(&spec)
        .await
        .expect("autoprovision");
    let inspected = docker_json(&["volume", "inspect", &provisioned]).expect("provisioned");
    assert_eq!(inspected["Labels"]["team"], "a");
    // Labelled as berth's: the next task uses it as it is.
    fx.runtime
        .ensure_volume(&spec)
        .await
        .expect("a shared volume berth created");
}

#[tokio::test]
async fn removing_a_missing_volume_is_not_an_error() {
    let fx = Fixture::new().await;
    fx.runtime
        .remove_volume(&fx.name("never-created"))
        .await
        .expect("remove a missing volume");
}

#[tokio::test]
async fn log_drivers_come_from_the_engine() {
    let fx = Fixture::new().await;
    let drivers = fx.runtime.log_drivers().await.expect("log drivers");
    assert!(drivers.iter().any(|d| d == "json-file"), "{drivers:?}");
    assert!(drivers.iter().any(|d| d == "none"), "{drivers:?}");
}

#[tokio::test]
async fn a_port_held_by_this_process_names_it() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a port");
    let port = listener.local_addr().expect("local address").port();
    let def = TaskDefinition {
        family: "test".to_owned(),
        container_definitions: vec![ContainerDefinition {
            name: "web".to_owned(),
            image: "busybox".to_owned(),
            port_mappings: vec![PortMapping {
                container_port: Some(80),
                host_port: Some(port),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = ports::check_task(&def, &[0]).expect_err("the port is held");
    assert_eq!(
        (err.port, err.protocol, err.container),
        (port, Protocol::Tcp, 0)
    );
    let holder = err.holder.clone().expect("the holder is found");
    assert_eq!(holder.pid, std::process::id());
    let comm = std::fs::read_to_string("/proc/self/comm").expect("own comm");
    assert_eq!(holder.command, comm.trim_end());
    assert_eq!(
        err.to_string(),
        format!(
            "host port {port}/tcp is already in use by {} (pid {})",
            holder.command, holder.pid
        )
    );
    drop(listener);
    // Free once released. Another process may take the same port for a
    // moment in between (the kernel hands it out again), so wait for the
    // check to pass rather than expect it at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match ports::check_task(&def, &[0]) {
            Ok(()) => break,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("port {port} still reported in use after it was released: {e}"),
        }
    }
}
