//! The fleet and task lifecycle with the control plane's store on
//! PostgreSQL (`berth server --store postgres://…`, a throwaway server and
//! database per test): enrollment of two agents, tasks run and stopped,
//! a control plane outage and an agent restart whose events are replayed
//! (the store applies each sequence at most once; the conformance suite
//! races that), and a control plane restart that keeps everything. The
//! other suites run on SQLite.

use berth_e2e::{
    Agent, DEADLINE, Fleet, LONG_RUNNING, container_of, containers_of, describe_output, docker_ok,
    str_field, wait_for,
};
use serde_json::{Value, json};

fn app_and_side() -> Value {
    json!([
        {"name": "app", "essential": true, "command": LONG_RUNNING},
        {"name": "side", "essential": false, "command": LONG_RUNNING},
    ])
}

fn run_on(fleet: &Fleet, name: &str, instance: &str) -> String {
    let family = fleet.family(name);
    let file = fleet.task_def_file(&family, app_and_side());
    let file = file.to_string_lossy();
    let task = fleet.server.cli_json(&[
        "task",
        "run",
        "--task-definition",
        &file,
        "--instance",
        instance,
        "--wait",
        "--json",
    ]);
    str_field(&task, "taskId").to_string()
}

fn stop(fleet: &Fleet, task_id: &str) {
    let out = fleet.server.cli(&["task", "stop", task_id]);
    assert!(
        out.status.success(),
        "berth task stop failed\n{}",
        describe_output(&out)
    );
    fleet.server.wait_task_status(task_id, "STOPPED");
}

#[test]
fn two_agents_enroll_run_and_stop_tasks_on_postgres() {
    let fleet = Fleet::start_on_postgres();
    let mut second = Agent::enroll(&fleet.server, &fleet.run);
    second.start_connected(&fleet.server);
    for id in [fleet.agent.instance_id(), second.instance_id()] {
        let instance = fleet.server.instance(id);
        assert!(instance.is_some(), "{id} is not listed");
    }

    let one = run_on(&fleet, "pg-one", fleet.agent.instance_id());
    let two = run_on(&fleet, "pg-two", second.instance_id());
    assert_eq!(
        fleet.server.wait_task_status(&two, "RUNNING")["instanceId"],
        second.instance_id()
    );
    stop(&fleet, &one);
    stop(&fleet, &two);
    for agent in [&fleet.agent, &second] {
        wait_for("the task's containers to go", DEADLINE, || {
            containers_of(agent.instance_id())
                .iter()
                .all(|c| c["State"]["Running"] != true)
                .then_some(())
        });
    }
}

#[test]
fn events_of_a_control_plane_outage_and_an_agent_restart_are_replayed_on_postgres() {
    let mut fleet = Fleet::start_on_postgres();
    let instance = fleet.agent.instance_id().to_string();
    let task_id = run_on(&fleet, "pg-replay", &instance);
    let side = containers_of(&instance)
        .into_iter()
        .find(|c| {
            c["Config"]["Labels"]["berth.task-id"] == task_id.as_str()
                && c["Config"]["Labels"]["berth.container-name"] == "side"
        })
        .unwrap_or_else(|| panic!("no side container of {task_id}"));

    // The control plane goes away; the side container dies meanwhile.
    fleet.server.kill();
    docker_ok(&["kill", str_field(&side, "Id")]);
    wait_for("the agent to record side's exit", DEADLINE, || {
        let t = fleet.agent.api_get(&format!("/v1/tasks/{task_id}"));
        (str_field(container_of(&t, "side"), "lastStatus") == "STOPPED").then_some(())
    });
    // The agent restarts too, with the event still in its outbox.
    fleet.agent.stop();
    fleet.server.restart();
    fleet.agent.start_connected(&fleet.server);
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
    // The restarted control plane kept the task (it is in PostgreSQL, not
    // in the data dir) and still stops it.
    assert!(
        !fleet.server.data_dir().join("berth.db").exists(),
        "a server on PostgreSQL writes no SQLite file"
    );
    stop(&fleet, &task_id);
}

#[test]
fn a_service_is_kept_rolled_out_and_deleted_on_postgres() {
    let mut fleet = Fleet::start_on_postgres();
    let mut second = Agent::enroll(&fleet.server, &fleet.run);
    second.start_connected(&fleet.server);
    let family = fleet.family("svc");
    let v1 = fleet.task_def_file(&family, app_and_side());
    let v1 = v1.to_string_lossy().into_owned();
    let out = fleet.server.cli(&[
        "service",
        "create",
        "web",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--min-healthy-time",
        "1s",
        "--wait",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let running = |fleet: &Fleet| -> Vec<Value> {
        let all = fleet.server.cli_json(&["task", "ls", "--json"]);
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                str_field(t, "group") == "service:web"
                    && str_field(t, "lastStatus") == "RUNNING"
                    && str_field(t, "desiredStatus") == "RUNNING"
            })
            .cloned()
            .collect()
    };
    let first = running(&fleet);
    assert_eq!(first.len(), 2, "{first:?}");
    let instances: std::collections::BTreeSet<&str> =
        first.iter().map(|t| str_field(t, "instanceId")).collect();
    assert_eq!(instances.len(), 2, "spread over both agents: {first:?}");

    // A new revision rolls out.
    let v2 = fleet.task_def_file(
        &family,
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING,
                "environment": [{"name": "V", "value": "2"}]}]),
    );
    let v2 = v2.to_string_lossy().into_owned();
    let out = fleet.server.cli(&[
        "service",
        "update",
        "web",
        "--task-definition",
        &v2,
        "--wait",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let now = running(&fleet);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.iter()
            .all(|t| str_field(t, "taskDefinitionArn").ends_with(&format!("{family}:2"))),
        "{now:?}"
    );

    // The control plane restarts: the service is still there and steady.
    fleet.server.restart();
    fleet.server.wait_connected(fleet.agent.instance_id());
    fleet.server.wait_connected(second.instance_id());
    let d = fleet
        .server
        .cli_json(&["service", "describe", "web", "--json"]);
    assert_eq!(d["runningCount"], 2, "{d}");

    let out = fleet.server.cli(&["service", "delete", "web", "--force"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    wait_for("service web INACTIVE", DEADLINE, || {
        let d = fleet
            .server
            .cli_json(&["service", "describe", "web", "--json"]);
        if str_field(&d, "status") == "INACTIVE" {
            Ok(())
        } else {
            Err(format!("{d}"))
        }
    });
    assert!(running(&fleet).is_empty());
    drop(second);
}
