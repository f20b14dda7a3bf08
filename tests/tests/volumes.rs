//! Volumes and host ports through the whole of berth: host binds read-write
//! and read-only, task-scoped and shared Docker volumes, a host port that is
//! already taken.

use berth_e2e::{
    DEADLINE, Fleet, LONG_RUNNING, container_of, containers_of, docker, short_id, str_field,
    wait_for,
};
use serde_json::{Value, json};

/// A task definition with `volumes`, built like the harness's `task_def`.
fn with_volumes(
    fleet: &Fleet,
    family: &str,
    containers: Value,
    volumes: Value,
) -> std::path::PathBuf {
    let mut def: Value =
        serde_json::from_str(&berth_e2e::task_def(fleet.image.tag(), family, containers))
            .expect("task_def is JSON");
    def["volumes"] = volumes;
    fleet
        .files
        .write(&format!("{family}.json"), &def.to_string())
}

fn wait_stopped_container(fleet: &Fleet, task_id: &str, name: &str) -> Value {
    fleet
        .server
        .wait_task(task_id, &format!("container {name} STOPPED"), |t| {
            str_field(container_of(t, name), "lastStatus") == "STOPPED"
        })
}

#[test]
fn host_binds_are_read_write_or_read_only_as_the_mount_point_says() {
    let mut fleet = Fleet::start();
    let host_dir = fleet.run.temp_dir("bind");
    let host = host_dir.path().to_string_lossy().into_owned();
    fleet
        .agent
        .configure(&format!("allowed_host_paths = [\"{host}\"]"));
    let family = fleet.family("binds");
    let file = with_volumes(
        &fleet,
        &family,
        json!([
            {"name": "app", "essential": true, "command": LONG_RUNNING},
            {"name": "writer", "essential": false,
             "command": ["sh", "-c", "echo written > /data/rw.txt"],
             "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]},
            {"name": "reader", "essential": false,
             "command": ["sh", "-c", "if echo no > /data/ro.txt; then exit 3; else exit 0; fi"],
             "mountPoints": [{"sourceVolume": "data", "containerPath": "/data", "readOnly": true}]},
        ]),
        json!([{"name": "data", "host": {"sourcePath": host}}]),
    );
    let task = fleet.run_task_wait(&file);
    let task_id = str_field(&task, "taskId").to_string();
    let writer = wait_stopped_container(&fleet, &task_id, "writer");
    assert_eq!(container_of(&writer, "writer")["exitCode"], 0, "{writer}");
    let reader = wait_stopped_container(&fleet, &task_id, "reader");
    assert_eq!(
        container_of(&reader, "reader")["exitCode"],
        0,
        "a read-only mount point must refuse writes: {reader}"
    );
    let written = std::fs::read_to_string(host_dir.path().join("rw.txt"))
        .expect("the writer's file on the host");
    assert_eq!(written.trim(), "written");
    assert!(!host_dir.path().join("ro.txt").exists());
}

#[test]
fn a_host_path_outside_the_allow_list_is_refused_up_front_naming_the_rule() {
    let fleet = Fleet::start();
    let family = fleet.family("etc");
    let file = with_volumes(
        &fleet,
        &family,
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING,
                "mountPoints": [{"sourceVolume": "etc", "containerPath": "/host-etc"}]}]),
        json!([{"name": "etc", "host": {"sourcePath": "/etc"}}]),
    );
    // The agent publishes its policy, so the control plane refuses the
    // task at submission (the agent's own refusal is tested in
    // agent/src/policy.rs).
    let out = fleet.run_task(&file, &["--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        berth_e2e::describe_output(&out)
    );
    let said = berth_e2e::said(&out);
    assert!(
        said.contains("berth.policy.allowed_host_paths") && said.contains("/etc"),
        "the refusal must name the rule and the path: {said}"
    );
    assert!(containers_of(fleet.agent.instance_id()).is_empty());
}

#[test]
fn a_shared_volume_outlives_its_task_and_a_task_volume_does_not() {
    let fleet = Fleet::start();
    let family = fleet.family("vols");
    let shared = format!("e2e-shared-{}", fleet.run);
    let _cleanup = VolumeGuard(shared.clone());
    let file = with_volumes(
        &fleet,
        &family,
        json!([
            {"name": "app", "essential": true, "command": LONG_RUNNING,
             "mountPoints": [
                 {"sourceVolume": "scratch", "containerPath": "/scratch"},
                 {"sourceVolume": shared, "containerPath": "/shared"}]},
            {"name": "writer", "essential": false,
             "command": ["sh", "-c", "echo one > /scratch/f && echo two > /shared/f"],
             "mountPoints": [
                 {"sourceVolume": "scratch", "containerPath": "/scratch"},
                 {"sourceVolume": shared, "containerPath": "/shared"}]},
            {"name": "reader", "essential": false,
             "dependsOn": [{"containerName": "writer", "condition": "SUCCESS"}],
             "command": ["sh", "-c", "grep -q one /scratch/f && grep -q two /shared/f"],
             "mountPoints": [
                 {"sourceVolume": "scratch", "containerPath": "/scratch"},
                 {"sourceVolume": shared, "containerPath": "/shared", "readOnly": true}]},
        ]),
        json!([
            {"name": "scratch"},
            {"name": shared, "dockerVolumeConfiguration": {
                "scope": "shared", "autoprovision": true, "driver": "local",
                "labels": {"berth-e2e-run": fleet.run.to_string()}}},
        ]),
    );
    let task = fleet.run_task_wait(&file);
    let task_id = str_field(&task, "taskId").to_string();
    let reader = wait_stopped_container(&fleet, &task_id, "reader");
    assert_eq!(
        container_of(&reader, "reader")["exitCode"],
        0,
        "the reader must see what the writer wrote in both volumes: {reader}"
    );
    let task_volume = format!("berth-{family}-scratch-{}", short_id(&task_id));
    assert!(
        docker(&["volume", "inspect", &task_volume])
            .status
            .success()
    );

    let out = fleet.server.cli(&["task", "stop", &task_id, "--wait"]);
    assert!(out.status.success(), "{}", berth_e2e::describe_output(&out));
    wait_for(
        "the task-scoped volume to be removed with the task",
        DEADLINE,
        || {
            (!docker(&["volume", "inspect", &task_volume])
                .status
                .success())
            .then_some(())
        },
    );
    assert!(
        docker(&["volume", "inspect", &shared]).status.success(),
        "the shared volume must outlive the task"
    );
}

#[test]
fn a_host_port_already_taken_is_refused_before_any_container_is_created() {
    let fleet = Fleet::start();
    let holder = std::net::TcpListener::bind("0.0.0.0:0").expect("bind a port to hold");
    let port = holder.local_addr().expect("local addr").port();
    let family = fleet.family("taken");
    let file = fleet.task_def_file(
        &family,
        json!([{"name": "web", "essential": true, "command": LONG_RUNNING,
                "portMappings": [{"containerPort": 8080, "hostPort": port}]}]),
    );
    let out = fleet.run_task(&file, &["--json"]);
    assert!(out.status.success(), "{}", berth_e2e::describe_output(&out));
    let task: Value = serde_json::from_slice(&out.stdout).expect("task JSON");
    let task_id = str_field(&task, "taskId").to_string();
    let (task, _) = fleet.server.wait_failed_to_start(&task_id);
    let reason = str_field(&task, "stoppedReason");
    assert!(
        reason.contains(&format!("{port}/tcp")) && reason.contains("already in use"),
        "the reason must name the port: {reason}"
    );
    assert!(
        containers_of(fleet.agent.instance_id()).is_empty(),
        "no container may be created"
    );
    drop(holder);
}

/// Removes a shared volume the test made berth create.
struct VolumeGuard(String);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}
