//! Nothing lost, nothing restarted: agent crashes and restarts, control
//! plane outages, a dead agent seen from the control plane, an offline
//! reboot, a corrupt agent store (SPEC §4).

use berth_e2e::{
    DEADLINE, Fleet, LONG_RUNNING, container_of, containers_of, docker_json, docker_ok, str_field,
    wait_for,
};
use serde_json::{Value, json};

/// Essential `app` and non-essential `side`, both long-running.
fn app_and_side() -> Value {
    json!([
        {"name": "app", "essential": true, "command": LONG_RUNNING},
        {"name": "side", "essential": false, "command": LONG_RUNNING},
    ])
}

/// `(container id, State.StartedAt)` of the docker container `name` of a task.
fn docker_container(fleet: &Fleet, task_id: &str, name: &str) -> (String, String, bool) {
    let all = containers_of(fleet.agent.instance_id());
    let mine: Vec<&Value> = all
        .iter()
        .filter(|c| {
            c["Config"]["Labels"]["berth.task-id"] == task_id
                && c["Config"]["Labels"]["berth.container-name"] == name
        })
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "expected exactly one docker container {name} of task {task_id}, found {}: {}",
        mine.len(),
        Value::Array(all.clone())
    );
    let c = mine[0];
    (
        str_field(c, "Id").to_string(),
        str_field(&c["State"], "StartedAt").to_string(),
        c["State"]["Running"] == true,
    )
}

fn run_app_and_side(fleet: &Fleet, name: &str) -> String {
    let family = fleet.family(name);
    let file = fleet.task_def_file(&family, app_and_side());
    let task = fleet.run_task_wait(&file);
    str_field(&task, "taskId").to_string()
}

#[test]
fn agent_restarts_neither_restart_nor_duplicate_containers() {
    let mut fleet = Fleet::start();
    let task_id = run_app_and_side(&fleet, "restart");
    let before = docker_container(&fleet, &task_id, "app");
    assert!(before.2, "app is not running: {before:?}");

    // A crash (SIGKILL), then a clean stop (SIGTERM).
    fleet.agent.kill();
    fleet.agent.start_connected(&fleet.server);
    let after_kill = docker_container(&fleet, &task_id, "app");
    assert_eq!(after_kill, before, "the agent crash changed the container");

    fleet.agent.stop();
    fleet.agent.start_connected(&fleet.server);
    let task = fleet.server.wait_task_status(&task_id, "RUNNING");
    let after_stop = docker_container(&fleet, &task_id, "app");
    assert_eq!(
        after_stop, before,
        "the agent restart changed the container"
    );
    assert_eq!(
        container_of(&task, "app")["runtimeId"],
        before.0.as_str(),
        "the task reports another container: {task}"
    );
    assert_eq!(containers_of(fleet.agent.instance_id()).len(), 2);
}

#[test]
fn a_control_plane_outage_keeps_tasks_running_and_loses_no_event() {
    let mut fleet = Fleet::start();
    let task_id = run_app_and_side(&fleet, "outage");
    let app_before = docker_container(&fleet, &task_id, "app");
    let (side_id, _, _) = docker_container(&fleet, &task_id, "side");

    fleet.server.kill();
    // While the control plane is away, the non-essential container dies.
    docker_ok(&["kill", &side_id]);
    let local = wait_for("the agent to record side's exit locally", DEADLINE, || {
        let t = fleet.agent.api_get(&format!("/v1/tasks/{task_id}"));
        let side = container_of(&t, "side");
        (str_field(side, "lastStatus") == "STOPPED").then_some(t)
    });
    assert_eq!(str_field(&local, "lastStatus"), "RUNNING", "{local}");
    let meta = fleet.agent.api_get("/v1/metadata");
    assert!(
        meta["pendingEvents"].as_u64().unwrap_or(0) > 0,
        "the exit must wait in the outbox while the control plane is away: {meta}"
    );

    fleet.server.restart();
    let task = fleet.server.wait_task(
        &task_id,
        "side STOPPED (replayed) and the task RUNNING",
        |t| {
            str_field(container_of(t, "side"), "lastStatus") == "STOPPED"
                && str_field(t, "lastStatus") == "RUNNING"
        },
    );
    assert_eq!(container_of(&task, "side")["exitCode"], 137, "{task}");
    wait_for("the outbox to drain", DEADLINE, || {
        let meta = fleet.agent.api_get("/v1/metadata");
        (meta["pendingEvents"] == 0).then_some(())
    });
    assert_eq!(
        docker_container(&fleet, &task_id, "app"),
        app_before,
        "the outage touched the essential container"
    );
}

#[test]
fn a_dead_agent_shows_disconnected_and_its_tasks_unknown_not_stopped() {
    let mut fleet = Fleet::start();
    let task_id = run_app_and_side(&fleet, "dead");
    let before = docker_container(&fleet, &task_id, "app");
    let instance_id = fleet.agent.instance_id().to_string();

    fleet.agent.kill();
    wait_for("the instance to show disconnected", DEADLINE, || {
        let i = fleet.server.instance(&instance_id)?;
        (i["agentConnected"] == false).then_some(())
    });
    let task = fleet.server.wait_task_status(&task_id, "UNKNOWN");
    assert_eq!(str_field(&task, "desiredStatus"), "RUNNING", "{task}");
    assert!(docker_container(&fleet, &task_id, "app").2, "app stopped");

    fleet.agent.start_connected(&fleet.server);
    fleet.server.wait_task_status(&task_id, "RUNNING");
    assert_eq!(docker_container(&fleet, &task_id, "app"), before);
}

#[test]
fn after_an_offline_reboot_the_agent_starts_its_tasks_without_the_control_plane() {
    let mut fleet = Fleet::start();
    let task_id = run_app_and_side(&fleet, "reboot");
    let (app_id, started_before, _) = docker_container(&fleet, &task_id, "app");

    // The control plane is out of reach; the host goes down: the agent
    // stops, the containers stop, and the host comes back with a new boot id.
    fleet.server.kill();
    fleet.agent.stop();
    for c in containers_of(fleet.agent.instance_id()) {
        docker_ok(&["stop", "-t", "1", str_field(&c, "Id")]);
    }
    let state_path = fleet.agent.data_dir().join("state.json");
    let mut state: Value = serde_json::from_str(
        &std::fs::read_to_string(&state_path).expect("agent state.json readable"),
    )
    .expect("agent state.json is JSON");
    state["boot_id"] = json!("the-boot-before");
    std::fs::write(&state_path, state.to_string()).expect("rewrite state.json");

    fleet.agent.start();
    let task = wait_for(
        "the task to run again with no control plane",
        DEADLINE,
        || {
            let t = fleet.agent.api_get(&format!("/v1/tasks/{task_id}"));
            (str_field(&t, "lastStatus") == "RUNNING"
                && str_field(container_of(&t, "app"), "lastStatus") == "RUNNING")
                .then_some(t)
        },
    );
    let (app_after, started_after, running) = docker_container(&fleet, &task_id, "app");
    assert!(running, "app is not running after the reboot: {task}");
    assert_eq!(
        app_after, app_id,
        "the container must be restarted in place"
    );
    assert_ne!(started_after, started_before, "app was not started again");

    fleet.server.restart();
    fleet.server.wait_task_status(&task_id, "RUNNING");
}

#[test]
fn a_corrupt_agent_store_is_moved_aside_and_no_container_is_lost() {
    let mut fleet = Fleet::start();
    let task_id = run_app_and_side(&fleet, "corrupt");
    let before = docker_container(&fleet, &task_id, "app");

    fleet.agent.stop();
    let state_path = fleet.agent.data_dir().join("state.json");
    std::fs::write(&state_path, b"{ this is not json").expect("corrupt state.json");
    fleet.agent.start_connected(&fleet.server);

    let task = fleet.server.wait_task_status(&task_id, "RUNNING");
    assert_eq!(docker_container(&fleet, &task_id, "app"), before, "{task}");
    let kept: Vec<String> = std::fs::read_dir(fleet.agent.data_dir())
        .expect("data dir readable")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the corrupt store must be kept aside: {kept:?}"
    );
    let local = fleet.agent.api_get(&format!("/v1/tasks/{task_id}"));
    assert_eq!(str_field(&local, "lastStatus"), "RUNNING", "{local}");
    let inspect = docker_json(&["inspect", &before.0]);
    assert_eq!(inspect[0]["RestartCount"], 0, "{inspect}");
}
