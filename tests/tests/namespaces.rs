//! What containers of one task share on the real Docker Engine: with
//! `ipcMode` / `pidMode` `task` one IPC namespace (`/dev/shm`) and one PID
//! namespace, the first container's; through `links`, a name — also when
//! the linking container is listed before its target.

use berth_e2e::{Fleet, container_of, describe_output, docker, str_field};
use serde_json::json;

/// A container that writes a marker into `/dev/shm` and then runs until
/// SIGTERM.
const WRITER: &str =
    "echo shared-by-ipc > /dev/shm/probe; trap 'exit 0' TERM; while true; do sleep 1; done";
const READER: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

#[test]
fn task_ipc_and_pid_modes_share_the_first_containers_namespaces() {
    let fleet = Fleet::start();
    let family = fleet.family("shared-ns");
    let file = fleet.files.write(
        &format!("{family}.json"),
        &serde_json::to_string(&json!({
            "family": family,
            "networkMode": "bridge",
            "ipcMode": "task",
            "pidMode": "task",
            "containerDefinitions": [
                {"name": "writer", "image": fleet.image.tag(), "memory": 64, "essential": true,
                 "command": ["sh", "-c", WRITER]},
                {"name": "reader", "image": fleet.image.tag(), "memory": 64, "essential": true,
                 "command": ["sh", "-c", READER]},
            ],
        }))
        .unwrap_or_default(),
    );
    let task = fleet.run_task_wait(&file);
    let reader = str_field(container_of(&task, "reader"), "runtimeId").to_owned();

    // The reader sees the writer's /dev/shm …
    let out = docker(&["exec", &reader, "cat", "/dev/shm/probe"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "shared-by-ipc");
    // … and its processes.
    let out = docker(&["exec", &reader, "ps"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let ps = String::from_utf8_lossy(&out.stdout);
    assert!(
        ps.contains("/dev/shm/probe"),
        "the writer is not in the reader's ps:\n{ps}"
    );
}

#[test]
fn a_container_listed_before_the_one_it_links_to_reaches_it_by_its_alias() {
    let fleet = Fleet::start();
    let family = fleet.family("links");
    let file = fleet.files.write(
        &format!("{family}.json"),
        &serde_json::to_string(&json!({
            "family": family,
            "networkMode": "bridge",
            "containerDefinitions": [
                {"name": "client", "image": fleet.image.tag(), "memory": 64, "essential": true,
                 "links": ["server:backend"], "command": ["sh", "-c", READER]},
                {"name": "server", "image": fleet.image.tag(), "memory": 64, "essential": true,
                 "command": ["sh", "-c", READER]},
            ],
        }))
        .unwrap_or_default(),
    );
    let task = fleet.run_task_wait(&file);
    let client = str_field(container_of(&task, "client"), "runtimeId").to_owned();
    let out = docker(&["exec", &client, "cat", "/etc/hosts"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let hosts = String::from_utf8_lossy(&out.stdout);
    assert!(
        hosts.split_whitespace().any(|w| w == "backend"),
        "no alias backend in the client's /etc/hosts:\n{hosts}"
    );
}
