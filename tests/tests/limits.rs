//! Task-level `cpu` and `memory` on the real Docker Engine: the task's
//! containers run under one cgroup parent with the task's limits, so a
//! container without a limit of its own is bounded by the task's.

use berth_e2e::{Fleet, container_of, describe_output, docker_json, str_field};
use serde_json::{Value, json};

/// Runs `command` in a task with task-level `cpu` 512 and `memory` 64 MiB,
/// its only container without limits of its own.
fn bounded_task(fleet: &Fleet, name: &str, command: &str) -> std::path::PathBuf {
    let family = fleet.family(name);
    fleet.files.write(
        &format!("{family}.json"),
        &serde_json::to_string(&json!({
            "family": family,
            "networkMode": "bridge",
            "cpu": "512",
            "memory": "64",
            "containerDefinitions": [
                {"name": "app", "image": fleet.image.tag(), "essential": true,
                 "command": ["sh", "-c", command]},
            ],
        }))
        .unwrap_or_default(),
    )
}

#[test]
fn a_task_level_limit_bounds_a_container_without_its_own() {
    let fleet = Fleet::start();
    let file = bounded_task(
        &fleet,
        "bounded",
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    );
    let task = fleet.run_task_wait(&file);
    let task_id = str_field(&task, "taskId").to_owned();
    let id = str_field(container_of(&task, "app"), "runtimeId").to_owned();
    let inspect = docker_json(&["inspect", &id]);
    let host = &inspect[0]["HostConfig"];
    assert_eq!(
        host["CgroupParent"],
        Value::from(format!("/berth/{task_id}")),
        "{host}"
    );
    // The container has no limit of its own; its parent has the task's.
    assert_eq!(host["Memory"], 0, "{host}");
    let v1 = format!("/sys/fs/cgroup/memory/berth/{task_id}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/berth/{task_id}/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("no task cgroup at {v1} or {v2}: {e}"));
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string());

    // The cgroup goes with the task.
    let out = fleet.server.cli(&["task", "stop", &task_id, "--wait"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    berth_e2e::wait_for("the task's cgroup removed", berth_e2e::DEADLINE, || {
        if std::path::Path::new(&v1).exists() || std::path::Path::new(&v2).exists() {
            Err("still there".to_owned())
        } else {
            Ok(())
        }
    });
}

#[test]
fn a_container_that_exceeds_the_task_memory_is_killed() {
    let fleet = Fleet::start();
    // The shell holds 150 MB in a variable: more than the task's 64 MiB.
    let file = bounded_task(
        &fleet,
        "oom",
        "x=$(head -c 150000000 /dev/zero | tr '\\0' a); echo ${#x}",
    );
    let out = fleet.run_task(&file, &["--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let task: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let task_id = str_field(&task, "taskId").to_owned();
    let stopped = fleet.server.wait_task_status(&task_id, "STOPPED");
    let app = container_of(&stopped, "app");
    // The shell is killed by the OOM killer (SIGKILL: 128 + 9); without the
    // task's limit it would print the length and exit 0.
    assert_eq!(
        str_field(&stopped, "stopCode"),
        "EssentialContainerExited",
        "{stopped}"
    );
    assert_eq!(app["exitCode"], 137, "{stopped}");
}
