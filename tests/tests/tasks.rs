//! Tasks on one agent against the real Docker Engine: start, labels and
//! names, non-essential exits, user stops, essential exits, image pulls.

use berth_e2e::{
    DEADLINE, EXITS_ZERO, Fleet, LONG_RUNNING, Registry, RunId, Scratch, Server, container_of,
    containers_of, describe_output, docker_json, docker_ok, short_id, str_field, task_def,
    wait_for,
};
use serde_json::{Value, json};

/// An essential long-running `app` and a non-essential `init` that exits 0.
fn two_containers() -> Value {
    json!([
        {"name": "app", "essential": true, "command": LONG_RUNNING},
        {"name": "init", "essential": false, "command": EXITS_ZERO},
    ])
}

/// `docker inspect` of the containers of `task_id` on the fleet's agent.
fn docker_containers_of_task(fleet: &Fleet, task_id: &str) -> Vec<Value> {
    containers_of(fleet.agent.instance_id())
        .into_iter()
        .filter(|c| c["Config"]["Labels"]["berth.task-id"] == task_id)
        .collect()
}

fn docker_container_named<'a>(containers: &'a [Value], name: &str) -> &'a Value {
    containers
        .iter()
        .find(|c| c["Config"]["Labels"]["berth.container-name"] == name)
        .unwrap_or_else(|| {
            panic!(
                "no docker container labelled berth.container-name={name}; containers: {}",
                Value::Array(containers.to_vec())
            )
        })
}

#[test]
fn two_container_task_runs_reports_nonessential_exit_and_stops() {
    let fleet = Fleet::start();
    let family = fleet.family("pair");
    let file = fleet.task_def_file(&family, two_containers());

    let task = fleet.run_task_wait(&file);
    assert_eq!(
        str_field(&task, "lastStatus"),
        "RUNNING",
        "`berth task run --wait` returned a task that is not RUNNING: {task}"
    );
    let task_id = str_field(&task, "taskId").to_string();
    let short = short_id(&task_id);
    let instance_id = fleet.agent.instance_id();

    // The non-essential container exits 0; the task runs on.
    let task = fleet
        .server
        .wait_task(&task_id, "container init STOPPED with exitCode 0", |t| {
            let init = container_of(t, "init");
            str_field(init, "lastStatus") == "STOPPED" && init["exitCode"] == 0
        });
    assert_eq!(
        str_field(&task, "lastStatus"),
        "RUNNING",
        "a non-essential container's exit must not stop the task: {task}"
    );
    assert_eq!(
        str_field(container_of(&task, "app"), "lastStatus"),
        "RUNNING",
        "the essential container should still run: {task}"
    );

    // Docker has both containers, labelled and named as the spec says.
    let containers = docker_containers_of_task(&fleet, &task_id);
    assert_eq!(
        containers.len(),
        2,
        "expected 2 containers of task {task_id} in docker: {}",
        Value::Array(containers.clone())
    );
    for name in ["app", "init"] {
        let c = docker_container_named(&containers, name);
        let labels = &c["Config"]["Labels"];
        assert_eq!(
            labels["berth.task-id"],
            task_id.as_str(),
            "labels: {labels}"
        );
        assert_eq!(labels["berth.container-name"], name, "labels: {labels}");
        assert_eq!(
            labels["berth.task-family"],
            family.as_str(),
            "labels: {labels}"
        );
        assert_eq!(labels["berth.instance-id"], instance_id, "labels: {labels}");
        let expected_name = format!("/berth-{family}-{name}-{short}");
        assert_eq!(
            str_field(c, "Name"),
            expected_name,
            "container name should be berth-<family>-<container>-<short task id>"
        );

        // `berth task describe` agrees with docker.
        let described = container_of(&task, name);
        assert_eq!(
            str_field(described, "runtimeId"),
            str_field(c, "Id"),
            "runtimeId of {name} should be the docker container id; task: {task}"
        );
        let state = &c["State"];
        if name == "init" {
            assert_eq!(state["Status"], "exited", "docker state of init: {state}");
            assert_eq!(
                described["exitCode"], state["ExitCode"],
                "exitCode of init should match docker's; task: {task}; docker state: {state}"
            );
        } else {
            assert_eq!(state["Running"], true, "docker state of app: {state}");
            assert!(
                described.get("exitCode").is_none_or(Value::is_null),
                "a running container has no exitCode; task: {task}"
            );
        }
    }

    // A user stop: STOPPED with UserInitiated.
    let out = fleet.server.cli(&["task", "stop", &task_id, "--wait"]);
    assert!(
        out.status.success(),
        "`berth task stop {task_id} --wait` failed\n{}",
        describe_output(&out)
    );
    let task = fleet.server.task(&task_id);
    assert_eq!(str_field(&task, "lastStatus"), "STOPPED", "task: {task}");
    assert_eq!(str_field(&task, "desiredStatus"), "STOPPED", "task: {task}");
    assert_eq!(
        str_field(&task, "stopCode"),
        "UserInitiated",
        "task: {task}"
    );

    // With container_cleanup_delay = 0s the agent removes its containers.
    wait_for(
        &format!("the containers of task {task_id} to be removed from docker"),
        DEADLINE,
        || {
            let left = docker_containers_of_task(&fleet, &task_id);
            if left.is_empty() {
                Ok(())
            } else {
                let names: Vec<&str> = left.iter().map(|c| str_field(c, "Name")).collect();
                Err(format!("still there: {names:?}"))
            }
        },
    );
}

#[test]
fn killing_the_essential_container_stops_the_task() {
    let fleet = Fleet::start();
    let family = fleet.family("essential");
    let file = fleet.task_def_file(&family, two_containers());
    let task = fleet.run_task_wait(&file);
    let task_id = str_field(&task, "taskId").to_string();

    let containers = docker_containers_of_task(&fleet, &task_id);
    let app = docker_container_named(&containers, "app");
    let app_id = str_field(app, "Id").to_string();
    docker_ok(&["kill", &app_id]);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(
        str_field(&task, "stopCode"),
        "EssentialContainerExited",
        "task: {task}"
    );
    assert!(
        str_field(&task, "stoppedReason").contains("app"),
        "stoppedReason should name the essential container `app`: {task}"
    );
    assert_eq!(
        str_field(container_of(&task, "app"), "lastStatus"),
        "STOPPED",
        "task: {task}"
    );
}

#[test]
fn a_missing_image_fails_the_task_with_the_registrys_words() {
    let run = RunId::new();
    let registry = Registry::start(&run);
    let fleet = Fleet::start_with(run);
    let family = fleet.family("noimage");
    let missing = registry.reference("nope");
    let def = task_def(
        &missing,
        &family,
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
    );
    let file = fleet.files.write("noimage.json", &def);

    // Without --wait: the task id comes back, and the task ends STOPPED.
    let out = fleet.run_task(&file, &["--json"]);
    assert!(
        out.status.success(),
        "`berth task run --json` (no --wait) should accept the task\n{}",
        describe_output(&out)
    );
    let task = berth_e2e::stdout_json("berth task run --json", &out);
    let task_id = str_field(&task, "taskId").to_string();
    let (task, reasons) = fleet.server.wait_failed_to_start(&task_id);
    assert!(
        reasons.contains("manifest unknown") || reasons.contains("not found"),
        "the reason should carry the registry's answer (manifest unknown / not found): {task}"
    );

    // With --wait: non-zero, with the reason.
    let out = fleet.run_task(&file, &["--wait"]);
    assert!(
        !out.status.success(),
        "`berth task run --wait` of a task that cannot start should fail\n{}",
        describe_output(&out)
    );
    let words = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        words.contains("manifest unknown") || words.contains("not found"),
        "`berth task run --wait` should say why the task stopped\n{}",
        describe_output(&out)
    );
}

#[test]
fn an_image_is_pulled_from_a_registry_and_its_digest_reported() {
    let run = RunId::new();
    let mut registry = Registry::start(&run);
    let fleet = Fleet::start_with(run);
    // push() removes the local tag of the reference: the agent must pull it.
    let pushed = registry.push(fleet.image.tag(), "busybox");
    let family = fleet.family("pulled");
    let def = task_def(
        &pushed.reference,
        &family,
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
    );
    let file = fleet.files.write("pulled.json", &def);

    let task = fleet.run_task_wait(&file);
    assert_eq!(str_field(&task, "lastStatus"), "RUNNING", "task: {task}");
    let task_id = str_field(&task, "taskId").to_string();
    // The digest may be reported a moment after RUNNING.
    let task = fleet
        .server
        .wait_task(&task_id, "container app to report its imageDigest", |t| {
            !str_field(container_of(t, "app"), "imageDigest").is_empty()
        });
    let app = container_of(&task, "app");
    assert_eq!(
        str_field(app, "imageDigest"),
        pushed.digest,
        "imageDigest should be the digest the registry gave the pushed image; task: {task}"
    );
    assert_eq!(str_field(app, "image"), pushed.reference, "task: {task}");

    // And docker really has the image under the pulled reference.
    let image = docker_json(&["image", "inspect", &pushed.reference]);
    assert!(
        image.to_string().contains(&pushed.digest),
        "docker should know {} by digest {}: {image}",
        pushed.reference,
        pushed.digest
    );
}

#[test]
fn a_bad_task_definition_is_rejected_naming_the_field() {
    let run = RunId::new();
    let server = Server::start(&run);
    let files = Scratch::new(&run);
    let def = json!({
        "family": format!("typo-{run}"),
        "containerDefinitions": [
            {"name": "app", "imagee": "busybox", "memory": 64, "essential": true}
        ]
    });
    let file = files.write("typo.json", &def.to_string());
    let file_arg = file.to_string_lossy();
    let out = server.cli(&["task", "run", "--task-definition", &file_arg]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a task definition with an unknown field should be rejected with exit 1\n{}",
        describe_output(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("containerDefinitions[0].imagee"),
        "the error should name the JSON path containerDefinitions[0].imagee\n{}",
        describe_output(&out)
    );
    let tasks = server.tasks();
    assert!(
        tasks.is_empty(),
        "a rejected definition must not create a task: {}",
        Value::Array(tasks.clone())
    );
}

#[test]
fn a_missing_task_definition_file_is_named() {
    let run = RunId::new();
    let server = Server::start(&run);
    let files = Scratch::new(&run);
    let missing = files.path().join("does-not-exist.json");
    let missing_arg = missing.to_string_lossy();
    let out = server.cli(&["task", "run", "--task-definition", &missing_arg]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a task definition file that does not exist should fail with exit 1\n{}",
        describe_output(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(missing_arg.as_ref()),
        "the error should name the path {missing_arg}\n{}",
        describe_output(&out)
    );
}
