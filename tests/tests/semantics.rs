//! ECS task semantics end to end (SPEC §3, issue 3): one scenario per
//! behaviour, modelled on the ECS agent's integration suite — dependsOn
//! conditions and `startTimeout`, shutdown order, per-container
//! `stopTimeout`, health checks, restart policies, port forwarding and
//! network modes, `dockerLabels`, and task definitions copied from the ECS
//! documentation.
//!
//! The agent of these tests keeps stopped containers
//! (`container_cleanup_delay = "10m"` instead of the harness' `"0s"`), so
//! that `docker inspect` still shows what happened after a task stopped:
//! start and finish times, exit codes, logs. The harness removes everything
//! by label when the test ends, as usual.
//!
//! Orderings are asserted from Docker's own timestamps (`State.StartedAt`,
//! `State.FinishedAt`, the end of a health probe), never from durations.
//! Volumes, host-port conflicts and agent policies have their own tests.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use berth_e2e::{
    Agent, DEADLINE, Fleet, RunId, container_of, containers_of, describe_output, docker, http_get,
    stdout_json, str_field, task_def, wait_for,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Helpers

/// Runs until SIGTERM, then exits 0 within a second (the `sleep 1` ends
/// first: sh runs traps between commands).
const IDLE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// `["sh", "-c", script]`.
fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// Serves `/tmp/index.html` (`ok`) with busybox httpd on `ports` (httpd
/// daemonizes; the shell stays PID 1 and exits 0 on SIGTERM).
fn http_server(ports: &[u16]) -> Value {
    let mut script = String::from("echo ok > /tmp/index.html");
    for port in ports {
        script.push_str(&format!(" && httpd -p {port} -h /tmp"));
    }
    script.push_str(&format!(" && {IDLE}"));
    sh(&script)
}

/// A health check that passes: CMD-SHELL, every 5 s (the minimum), one
/// probe decides.
fn passing_check() -> Value {
    json!({"command": ["CMD-SHELL", "exit 0"], "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0})
}

/// A fleet whose agent keeps stopped containers for 10 minutes, so that
/// docker inspect still sees them after their task stopped.
fn fleet() -> Fleet {
    fleet_with_config("")
}

/// [`fleet`], with `extra` (TOML lines) added to the agent's config.
fn fleet_with_config(extra: &str) -> Fleet {
    Fleet::start_custom(RunId::new(), |server, agent| {
        keep_stopped_containers(agent);
        if !extra.is_empty() {
            agent.configure(extra);
        }
        agent.start_connected(server);
    })
}

/// Replaces the harness' `container_cleanup_delay = "0s"` in the agent's
/// config (before it starts) with 10 minutes.
fn keep_stopped_containers(agent: &Agent) {
    let path = agent.config_path();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let harness_default = "container_cleanup_delay = \"0s\"";
    assert!(
        text.contains(harness_default),
        "the agent config {} no longer holds `{harness_default}`:\n{text}",
        path.display()
    );
    let text = text.replace(harness_default, "container_cleanup_delay = \"10m\"");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Writes a task definition of `family` with `containers` (see
/// [`task_def`]) and the top-level fields of `task_fields` on top.
fn def_file(fleet: &Fleet, family: &str, task_fields: Value, containers: Value) -> PathBuf {
    let text = task_def(fleet.image.tag(), family, containers);
    let mut def: Value = serde_json::from_str(&text).expect("task_def prints JSON");
    let Value::Object(fields) = task_fields else {
        panic!("def_file: task_fields must be an object, got {task_fields}");
    };
    for (key, value) in fields {
        def[key.as_str()] = value;
    }
    fleet
        .files
        .write(&format!("{family}.json"), &def.to_string())
}

/// `berth task run --json` without `--wait`: the task id.
fn submit(fleet: &Fleet, file: &Path) -> String {
    let out = fleet.run_task(file, &["--json"]);
    assert!(
        out.status.success(),
        "`berth task run --task-definition {} --json` failed\n{}",
        file.display(),
        describe_output(&out)
    );
    let task = stdout_json("berth task run --json", &out);
    let task_id = str_field(&task, "taskId").to_string();
    assert!(!task_id.is_empty(), "no taskId in {task}");
    task_id
}

/// `berth task run --wait --json`: the task id of a RUNNING task.
fn submit_running(fleet: &Fleet, file: &Path) -> String {
    let task = fleet.run_task_wait(file);
    assert_eq!(
        str_field(&task, "lastStatus"),
        "RUNNING",
        "`berth task run --wait` returned a task that is not RUNNING: {task}"
    );
    str_field(&task, "taskId").to_string()
}

/// `berth task stop ID --wait` (must exit 0); returns `berth task describe`,
/// which must show the task STOPPED.
fn stop_task(fleet: &Fleet, task_id: &str) -> Value {
    let out = fleet.server.cli(&["task", "stop", task_id, "--wait"]);
    assert!(
        out.status.success(),
        "`berth task stop {task_id} --wait` failed\n{}",
        describe_output(&out)
    );
    let task = fleet.server.task(task_id);
    assert_eq!(
        str_field(&task, "lastStatus"),
        "STOPPED",
        "after `berth task stop --wait` the task should be STOPPED: {task}"
    );
    task
}

/// `docker inspect` of container `name` of task `task_id` (exactly one).
fn docker_container(fleet: &Fleet, task_id: &str, name: &str) -> Value {
    let found: Vec<Value> = containers_of(fleet.agent.instance_id())
        .into_iter()
        .filter(|c| {
            let labels = &c["Config"]["Labels"];
            labels["berth.task-id"] == task_id && labels["berth.container-name"] == name
        })
        .collect();
    match found.as_slice() {
        [c] => c.clone(),
        _ => panic!(
            "expected exactly one docker container {name} of task {task_id}, found {}: {}",
            found.len(),
            Value::Array(found.clone())
        ),
    }
}

/// A Docker timestamp (RFC 3339 in UTC; Docker trims trailing zeros of the
/// nanoseconds) as a string that sorts in time order.
fn instant(what: &str, text: &str) -> String {
    assert!(
        !text.is_empty() && !text.starts_with("0001-"),
        "{what}: never happened ({text:?})"
    );
    let utc = text
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("{what}: {text:?} is not a UTC time"));
    let (secs, frac) = utc.split_once('.').unwrap_or((utc, ""));
    assert!(
        secs.len() == 19 && frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit()),
        "{what}: {text:?} is not a Docker timestamp"
    );
    format!("{secs}.{frac:0<9}")
}

fn started_at(c: &Value) -> String {
    instant(
        &format!("State.StartedAt of {}", str_field(c, "Name")),
        str_field(&c["State"], "StartedAt"),
    )
}

fn finished_at(c: &Value) -> String {
    instant(
        &format!("State.FinishedAt of {}", str_field(c, "Name")),
        str_field(&c["State"], "FinishedAt"),
    )
}

/// Docker never started the container.
fn never_started(c: &Value) -> bool {
    str_field(&c["State"], "StartedAt").starts_with("0001-")
}

/// The passing health probes in Docker's health log of `c` (Docker keeps
/// the last five), by the time each ended.
fn passing_probe_ends(c: &Value) -> Vec<String> {
    c["State"]["Health"]["Log"]
        .as_array()
        .map(|log| {
            log.iter()
                .filter(|p| p["ExitCode"] == 0)
                .map(|p| instant("End of a health probe", str_field(p, "End")))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `stopped_reason` names every one of `names`.
fn assert_reason_names(task: &Value, names: &[&str]) {
    let reason = str_field(task, "stoppedReason");
    for name in names {
        assert!(
            reason.contains(name),
            "stoppedReason should name container `{name}`: {reason:?}\ntask: {task}"
        );
    }
}

/// The stop codes a task that failed before it ran may carry.
fn assert_failed_to_run(task: &Value) {
    let code = str_field(task, "stopCode");
    assert!(
        matches!(code, "TaskFailedToStart" | "EssentialContainerExited"),
        "stopCode should say the task failed (TaskFailedToStart or EssentialContainerExited), got {code:?}: {task}"
    );
    assert_eq!(str_field(task, "desiredStatus"), "STOPPED", "task: {task}");
}

/// Container `name` of a task, once the task lists it.
fn find_container<'a>(task: &'a Value, name: &str) -> Option<&'a Value> {
    task["containers"]
        .as_array()?
        .iter()
        .find(|c| str_field(c, "name") == name)
}

/// A string field of container `name` of a task; "" until the task lists it.
fn field_of<'a>(task: &'a Value, name: &str, key: &str) -> &'a str {
    find_container(task, name).map_or("", |c| str_field(c, key))
}

fn exit_code(container: &Value) -> Option<i64> {
    container["exitCode"].as_i64()
}

/// A TCP port that nobody listens on right now (on all addresses).
fn free_port() -> u16 {
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// `preferred` if nobody listens on it, else a free port.
fn port_or_free(preferred: u16) -> u16 {
    match TcpListener::bind(("0.0.0.0", preferred)) {
        Ok(_) => preferred,
        Err(e) => {
            let port = free_port();
            eprintln!("port {preferred} is taken on this host ({e}): using {port} instead");
            port
        }
    }
}

/// Waits for an HTTP 200 on `addr` (`127.0.0.1:PORT`); returns the body.
fn http_body(addr: &str) -> String {
    wait_for(
        &format!("an HTTP 200 answer on {addr}"),
        DEADLINE,
        || match http_get(addr, "/") {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("{status}: {body}")),
            Err(e) => Err(e),
        },
    )
}

/// The host port of the binding of `container_port` of `container`, once
/// the task reports one.
fn wait_host_port(fleet: &Fleet, task_id: &str, container: &str, container_port: u64) -> u64 {
    let task = fleet.server.wait_task(
        task_id,
        &format!("{container} to report a networkBinding for containerPort {container_port}"),
        |t| binding(t, container, container_port).is_some(),
    );
    binding(&task, container, container_port)
        .and_then(|b| b["hostPort"].as_u64())
        .unwrap_or_else(|| panic!("the binding of {container_port} has no hostPort: {task}"))
}

fn binding(task: &Value, container: &str, container_port: u64) -> Option<Value> {
    find_container(task, container)?["networkBindings"]
        .as_array()?
        .iter()
        .find(|b| b["containerPort"] == container_port)
        .cloned()
}

// ---------------------------------------------------------------------------
// dependsOn

#[test]
fn depends_on_healthy_starts_the_dependent_once_its_dependency_is_healthy() {
    let fleet = fleet();
    let family = fleet.family("dep-healthy");
    // The dependent comes first: definition order alone would start it first.
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE),
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
            {"name": "db", "essential": true, "command": sh(IDLE), "healthCheck": passing_check()},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let db = docker_container(&fleet, &task_id, "db");
    let app = docker_container(&fleet, &task_id, "app");
    let app_started = started_at(&app);
    let healthy_before_app: Vec<String> = passing_probe_ends(&db)
        .into_iter()
        .filter(|end| *end < app_started)
        .collect();
    assert!(
        !healthy_before_app.is_empty(),
        "app started ({app_started}) before a health probe of db had passed; db's health: {}",
        db["State"]["Health"]
    );
    assert!(started_at(&db) < app_started, "db must start before app");

    let task = fleet.server.wait_task(&task_id, "db HEALTHY", |t| {
        field_of(t, "db", "healthStatus") == "HEALTHY"
    });
    assert_eq!(
        str_field(container_of(&task, "app"), "lastStatus"),
        "RUNNING",
        "task: {task}"
    );
}

#[test]
fn depends_on_complete_starts_the_dependent_after_its_dependency_exits_with_any_code() {
    let fleet = fleet();
    let family = fleet.family("dep-complete");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE),
             "dependsOn": [{"containerName": "init", "condition": "COMPLETE"}]},
            {"name": "init", "essential": false, "command": sh("echo setting up; exit 1")},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = fleet
        .server
        .wait_task(&task_id, "init STOPPED with exitCode 1, app RUNNING", |t| {
            field_of(t, "init", "lastStatus") == "STOPPED"
                && find_container(t, "init").and_then(exit_code) == Some(1)
                && field_of(t, "app", "lastStatus") == "RUNNING"
        });
    assert_eq!(str_field(&task, "lastStatus"), "RUNNING", "task: {task}");

    let init = docker_container(&fleet, &task_id, "init");
    let app = docker_container(&fleet, &task_id, "app");
    assert_eq!(init["State"]["ExitCode"], 1, "init: {}", init["State"]);
    assert!(
        finished_at(&init) < started_at(&app),
        "app must start after init exited: init {}, app {}",
        init["State"],
        app["State"]
    );
}

#[test]
fn depends_on_start_starts_the_dependency_first() {
    let fleet = fleet();
    let family = fleet.family("dep-start");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE),
             "dependsOn": [{"containerName": "sidecar", "condition": "START"}]},
            {"name": "sidecar", "essential": true, "command": sh(IDLE)},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = fleet.server.task(&task_id);
    for name in ["app", "sidecar"] {
        assert_eq!(
            str_field(container_of(&task, name), "lastStatus"),
            "RUNNING",
            "task: {task}"
        );
    }
    let sidecar = docker_container(&fleet, &task_id, "sidecar");
    let app = docker_container(&fleet, &task_id, "app");
    assert!(
        started_at(&sidecar) < started_at(&app),
        "sidecar must start before app: sidecar {}, app {}",
        sidecar["State"],
        app["State"]
    );
}

#[test]
fn depends_on_success_starts_the_dependent_after_its_dependency_exits_zero() {
    let fleet = fleet();
    let family = fleet.family("dep-success");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE),
             "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}]},
            {"name": "migrate", "essential": false, "command": sh("echo migrated")},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = fleet.server.wait_task(
        &task_id,
        "migrate STOPPED with exitCode 0, app RUNNING",
        |t| {
            field_of(t, "migrate", "lastStatus") == "STOPPED"
                && find_container(t, "migrate").and_then(exit_code) == Some(0)
                && field_of(t, "app", "lastStatus") == "RUNNING"
        },
    );
    assert_eq!(str_field(&task, "lastStatus"), "RUNNING", "task: {task}");

    let migrate = docker_container(&fleet, &task_id, "migrate");
    let app = docker_container(&fleet, &task_id, "app");
    assert!(
        finished_at(&migrate) < started_at(&app),
        "app must start after migrate succeeded: migrate {}, app {}",
        migrate["State"],
        app["State"]
    );
}

#[test]
fn depends_on_success_with_a_failing_dependency_never_starts_the_dependent_and_stops_the_task() {
    let fleet = fleet();
    let family = fleet.family("dep-success-fails");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE),
             "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}]},
            {"name": "migrate", "essential": false, "command": sh("echo migration failed; exit 1")},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_failed_to_run(&task);
    assert_reason_names(&task, &["app", "migrate"]);
    let migrate = container_of(&task, "migrate");
    assert_eq!(exit_code(migrate), Some(1), "task: {task}");
    let app = container_of(&task, "app");
    assert_eq!(str_field(app, "lastStatus"), "STOPPED", "task: {task}");
    assert_eq!(
        exit_code(app),
        None,
        "app never ran, so it has no exit code: {task}"
    );

    // Docker agrees: the app container was created but never started.
    let app = docker_container(&fleet, &task_id, "app");
    assert!(
        never_started(&app),
        "app must never start when its SUCCESS dependency failed: {}",
        app["State"]
    );
}

#[test]
fn depends_on_success_that_times_out_stops_the_task_naming_both() {
    let fleet = fleet();
    let family = fleet.family("dep-success-timeout");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE), "startTimeout": 2,
             "dependsOn": [{"containerName": "migrate", "condition": "SUCCESS"}]},
            // Never finishes.
            {"name": "migrate", "essential": false, "command": sh(IDLE)},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_failed_to_run(&task);
    assert_reason_names(&task, &["app", "migrate"]);
    for name in ["app", "migrate"] {
        assert_eq!(
            str_field(container_of(&task, name), "lastStatus"),
            "STOPPED",
            "every container of a stopped task is stopped: {task}"
        );
    }
    let app = docker_container(&fleet, &task_id, "app");
    assert!(
        never_started(&app),
        "app must never start: {}",
        app["State"]
    );
    let migrate = docker_container(&fleet, &task_id, "migrate");
    assert_eq!(
        migrate["State"]["Running"], false,
        "the dependency is stopped with its task: {}",
        migrate["State"]
    );
}

#[test]
fn depends_on_healthy_that_times_out_stops_the_task_naming_both() {
    let fleet = fleet();
    let family = fleet.family("dep-healthy-timeout");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE), "startTimeout": 2,
             "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
            // Its probe fails; with 10 retries Docker keeps it `starting`
            // for ~50 s, far past app's startTimeout.
            {"name": "db", "essential": true, "command": sh(IDLE),
             "healthCheck": {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2,
                             "retries": 10, "startPeriod": 0}},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_failed_to_run(&task);
    assert_reason_names(&task, &["app", "db"]);
    let app = docker_container(&fleet, &task_id, "app");
    assert!(
        never_started(&app),
        "app must never start: {}",
        app["State"]
    );
    let db = docker_container(&fleet, &task_id, "db");
    assert_eq!(
        db["State"]["Running"], false,
        "db is stopped with its task: {}",
        db["State"]
    );
}

// ---------------------------------------------------------------------------
// Stopping

#[test]
fn stopping_a_task_stops_dependents_before_their_dependencies() {
    let fleet = fleet();
    let family = fleet.family("stop-order");
    // app is defined first, so reverse definition order would stop db
    // first; app also takes a moment to exit, so stopping both at once would
    // finish db first.
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true,
             "command": sh("trap 'sleep 2; exit 0' TERM; while true; do sleep 1; done"),
             "dependsOn": [{"containerName": "db", "condition": "START"}]},
            {"name": "db", "essential": true, "command": sh(IDLE)},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = stop_task(&fleet, &task_id);
    assert_eq!(
        str_field(&task, "stopCode"),
        "UserInitiated",
        "task: {task}"
    );

    let app = docker_container(&fleet, &task_id, "app");
    let db = docker_container(&fleet, &task_id, "db");
    assert_eq!(
        app["State"]["ExitCode"], 0,
        "app exits on SIGTERM: {}",
        app["State"]
    );
    assert_eq!(
        db["State"]["ExitCode"], 0,
        "db exits on SIGTERM: {}",
        db["State"]
    );
    assert!(
        finished_at(&app) < finished_at(&db),
        "app (which depends on db) must stop before db: app {}, db {}",
        app["State"],
        db["State"]
    );
}

#[test]
fn a_container_that_ignores_sigterm_is_killed_after_its_stop_timeout() {
    let fleet = fleet();
    let family = fleet.family("stop-timeout");
    let file = fleet.task_def_file(
        &family,
        json!([
            // Notes SIGTERM and carries on: only SIGKILL ends it.
            {"name": "stubborn", "essential": true, "stopTimeout": 3,
             "command": sh("trap 'echo TERM received, ignoring it' TERM; while true; do sleep 1; done")},
            {"name": "polite", "essential": true, "stopTimeout": 3,
             "command": sh("trap 'echo TERM received, exiting; exit 0' TERM; while true; do sleep 1; done")},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = stop_task(&fleet, &task_id);
    assert_eq!(
        str_field(&task, "stopCode"),
        "UserInitiated",
        "task: {task}"
    );
    assert_eq!(
        exit_code(container_of(&task, "stubborn")),
        Some(137),
        "a container that ignores SIGTERM is killed (137): {task}"
    );
    let polite_code = exit_code(container_of(&task, "polite"));
    assert!(
        matches!(polite_code, Some(0 | 143)),
        "a container that exits on SIGTERM exits 0 or 143, got {polite_code:?}: {task}"
    );

    let stubborn = docker_container(&fleet, &task_id, "stubborn");
    assert_eq!(
        stubborn["Config"]["StopTimeout"], 3,
        "the container's stopTimeout is handed to Docker: {}",
        stubborn["Config"]
    );
    assert_eq!(stubborn["State"]["ExitCode"], 137, "{}", stubborn["State"]);
    assert_eq!(
        stubborn["State"]["OOMKilled"], false,
        "killed by the stop, not by memory: {}",
        stubborn["State"]
    );
    // It got SIGTERM first and lived on long enough to say so.
    let id = str_field(&stubborn, "Id");
    let logs = docker(&["logs", id]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        said.contains("TERM received, ignoring it"),
        "stubborn should have received SIGTERM before SIGKILL; its log:\n{said}"
    );
}

// ---------------------------------------------------------------------------
// Health checks

#[test]
fn health_checks_that_pass_make_containers_and_task_healthy() {
    let fleet = fleet();
    let family = fleet.family("healthy");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "web", "essential": true, "command": sh(IDLE),
             "healthCheck": {"command": ["CMD-SHELL", "test -x /bin/sh"], "interval": 5,
                             "timeout": 2, "retries": 1, "startPeriod": 0}},
            {"name": "api", "essential": true, "command": sh(IDLE),
             "healthCheck": {"command": ["CMD", "true"], "interval": 5, "timeout": 2,
                             "retries": 1, "startPeriod": 0}},
            // Non-essential containers do not count for the task's health.
            {"name": "side", "essential": false, "command": sh(IDLE),
             "healthCheck": {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2,
                             "retries": 1, "startPeriod": 0}},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = fleet
        .server
        .wait_task(&task_id, "web and api HEALTHY, side UNHEALTHY", |t| {
            field_of(t, "web", "healthStatus") == "HEALTHY"
                && field_of(t, "api", "healthStatus") == "HEALTHY"
                && field_of(t, "side", "healthStatus") == "UNHEALTHY"
        });
    assert_eq!(
        str_field(&task, "healthStatus"),
        "HEALTHY",
        "every essential container is healthy, so the task is (side is not essential): {task}"
    );
    assert_eq!(str_field(&task, "lastStatus"), "RUNNING", "task: {task}");
    for (name, docker_health) in [
        ("web", "healthy"),
        ("api", "healthy"),
        ("side", "unhealthy"),
    ] {
        let c = docker_container(&fleet, &task_id, name);
        assert_eq!(
            c["State"]["Health"]["Status"], docker_health,
            "docker's health of {name}: {}",
            c["State"]
        );
    }
}

#[test]
fn a_failing_health_check_makes_the_container_and_task_unhealthy() {
    let fleet = fleet();
    let family = fleet.family("unhealthy");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "web", "essential": true, "command": sh(IDLE),
             "healthCheck": {"command": ["CMD-SHELL", "exit 1"], "interval": 5, "timeout": 2,
                             "retries": 1, "startPeriod": 0}},
            {"name": "api", "essential": true, "command": sh(IDLE), "healthCheck": passing_check()},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let task = fleet
        .server
        .wait_task(&task_id, "web UNHEALTHY and api HEALTHY", |t| {
            field_of(t, "web", "healthStatus") == "UNHEALTHY"
                && field_of(t, "api", "healthStatus") == "HEALTHY"
        });
    assert_eq!(
        str_field(&task, "healthStatus"),
        "UNHEALTHY",
        "an unhealthy essential container makes the task UNHEALTHY: {task}"
    );
    assert_eq!(
        str_field(&task, "lastStatus"),
        "RUNNING",
        "an unhealthy container does not stop its task: {task}"
    );
    let web = docker_container(&fleet, &task_id, "web");
    assert_eq!(
        web["State"]["Health"]["Status"], "unhealthy",
        "{}",
        web["State"]
    );
}

// ---------------------------------------------------------------------------
// Restart policy

/// First run: leaves a marker and exits 1. Later runs (same container, so
/// the marker is there): `then`.
fn fail_once_then(then: &str) -> Value {
    sh(&format!(
        "if [ -e /tmp/ran-before ]; then {then}; fi; touch /tmp/ran-before; echo first run fails; exit 1"
    ))
}

#[test]
fn restart_policy_restarts_an_essential_container_in_place() {
    let fleet = fleet();
    let family = fleet.family("restart");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true,
             "command": fail_once_then(&format!("echo running again; {IDLE}")),
             "restartPolicy": {"enabled": true, "restartAttemptPeriod": 0}},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let first = fleet
        .server
        .wait_task(&task_id, "app to have a runtimeId", |t| {
            !field_of(t, "app", "runtimeId").is_empty()
        });
    let runtime_id = str_field(container_of(&first, "app"), "runtimeId").to_string();

    let task = fleet.server.wait_task(
        &task_id,
        "app restarted (restartCount >= 1) and RUNNING",
        |t| {
            find_container(t, "app")
                .and_then(|app| app["restartCount"].as_u64())
                .is_some_and(|n| n >= 1)
                && field_of(t, "app", "lastStatus") == "RUNNING"
        },
    );
    assert_eq!(str_field(&task, "lastStatus"), "RUNNING", "task: {task}");
    assert_eq!(str_field(&task, "desiredStatus"), "RUNNING", "task: {task}");
    assert_eq!(str_field(&task, "stopCode"), "", "task: {task}");
    assert_eq!(
        str_field(container_of(&task, "app"), "runtimeId"),
        runtime_id,
        "a restart is in place: same container: {task}"
    );

    // One container, running, with the marker of its first run.
    let app = docker_container(&fleet, &task_id, "app");
    assert_eq!(str_field(&app, "Id"), runtime_id, "docker: {app}");
    assert_eq!(app["State"]["Running"], true, "{}", app["State"]);
    let out = docker(&["exec", &runtime_id, "test", "-e", "/tmp/ran-before"]);
    assert!(
        out.status.success(),
        "the restarted container should still have the file of its first run\n{}",
        describe_output(&out)
    );
}

#[test]
fn restart_policy_does_not_restart_on_an_ignored_exit_code() {
    let fleet = fleet();
    let family = fleet.family("restart-ignored");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh("echo done; exit 3"),
             "restartPolicy": {"enabled": true, "ignoredExitCodes": [3], "restartAttemptPeriod": 0}},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(
        str_field(&task, "stopCode"),
        "EssentialContainerExited",
        "task: {task}"
    );
    assert_reason_names(&task, &["app"]);
    let app = container_of(&task, "app");
    assert_eq!(exit_code(app), Some(3), "task: {task}");
    assert_eq!(
        app["restartCount"], 0,
        "an ignored exit code is not restarted: {task}"
    );
}

#[test]
fn restart_policy_does_not_restart_within_the_attempt_period() {
    let fleet = fleet();
    let family = fleet.family("restart-period");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh("echo too soon; exit 1"),
             "restartPolicy": {"enabled": true, "restartAttemptPeriod": 60}},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(
        str_field(&task, "stopCode"),
        "EssentialContainerExited",
        "a container that ran less than restartAttemptPeriod is not restarted: {task}"
    );
    assert_reason_names(&task, &["app"]);
    let app = container_of(&task, "app");
    assert_eq!(exit_code(app), Some(1), "task: {task}");
    assert_eq!(app["restartCount"], 0, "task: {task}");
}

#[test]
fn restart_policy_does_not_restart_after_a_user_stop() {
    let fleet = fleet();
    let family = fleet.family("restart-user-stop");
    // Exits 1 on SIGTERM: a code the policy would restart.
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true,
             "command": sh("trap 'exit 1' TERM; while true; do sleep 1; done"),
             "restartPolicy": {"enabled": true, "restartAttemptPeriod": 0}},
        ]),
    );
    let task_id = submit_running(&fleet, &file);
    let before = docker_container(&fleet, &task_id, "app");

    let task = stop_task(&fleet, &task_id);
    assert_eq!(
        str_field(&task, "stopCode"),
        "UserInitiated",
        "task: {task}"
    );
    let app = container_of(&task, "app");
    assert_eq!(str_field(app, "lastStatus"), "STOPPED", "task: {task}");
    assert_eq!(
        app["restartCount"], 0,
        "a user stop is not restarted: {task}"
    );
    assert_eq!(exit_code(app), Some(1), "task: {task}");

    let after = docker_container(&fleet, &task_id, "app");
    assert_eq!(after["State"]["Running"], false, "{}", after["State"]);
    assert_eq!(
        started_at(&after),
        started_at(&before),
        "the container was started again after the user stop: {}",
        after["State"]
    );
}

#[test]
fn a_restarted_container_that_then_exits_with_an_ignored_code_stops_the_task() {
    let fleet = fleet();
    let family = fleet.family("restart-then-ignored");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true,
             "command": fail_once_then("echo second run gives up; exit 3"),
             "restartPolicy": {"enabled": true, "ignoredExitCodes": [3], "restartAttemptPeriod": 0}},
        ]),
    );
    let task_id = submit(&fleet, &file);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(
        str_field(&task, "stopCode"),
        "EssentialContainerExited",
        "task: {task}"
    );
    assert_reason_names(&task, &["app"]);
    let app = container_of(&task, "app");
    assert_eq!(
        app["restartCount"], 1,
        "restarted once, after exit 1: {task}"
    );
    assert_eq!(exit_code(app), Some(3), "task: {task}");
    let docker_app = docker_container(&fleet, &task_id, "app");
    assert_eq!(
        str_field(&docker_app, "Id"),
        str_field(app, "runtimeId"),
        "the restart was in place"
    );
}

// ---------------------------------------------------------------------------
// Ports and network modes

#[test]
fn dynamic_host_ports_are_reported_and_forward_to_the_container() {
    let fleet = fleet();
    let family = fleet.family("dynamic-port");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "web", "essential": true, "command": http_server(&[8080, 8081]),
             "portMappings": [
                 {"containerPort": 8080, "hostPort": 0, "protocol": "tcp"},
                 {"containerPort": 8081},
             ]},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    for container_port in [8080, 8081] {
        let host_port = wait_host_port(&fleet, &task_id, "web", container_port);
        assert!(
            host_port > 0 && host_port != container_port,
            "containerPort {container_port} should get a dynamic host port, got {host_port}"
        );
        let body = http_body(&format!("127.0.0.1:{host_port}"));
        assert_eq!(
            body.trim(),
            "ok",
            "the body served by web on {container_port}"
        );
    }
}

#[test]
fn a_static_host_port_forwards_to_the_container() {
    let fleet = fleet();
    let family = fleet.family("static-port");
    let port = free_port();
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "web", "essential": true, "command": http_server(&[8080]),
             "portMappings": [{"containerPort": 8080, "hostPort": port, "protocol": "tcp"}]},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let host_port = wait_host_port(&fleet, &task_id, "web", 8080);
    assert_eq!(host_port, u64::from(port), "networkBindings of web");
    let body = http_body(&format!("127.0.0.1:{port}"));
    assert_eq!(body.trim(), "ok");
    let web = docker_container(&fleet, &task_id, "web");
    let bound = &web["HostConfig"]["PortBindings"]["8080/tcp"];
    assert!(
        bound.as_array().is_some_and(|bs| bs
            .iter()
            .any(|b| str_field(b, "HostPort").parse::<u16>().ok() == Some(port))),
        "docker should publish 8080/tcp on host port {port}: {bound}"
    );
}

#[test]
fn host_network_mode_serves_on_the_hosts_port() {
    // The agent's policy lets tasks use the host's network only when the
    // operator allows it.
    let fleet = fleet_with_config("allow_host_network = true");
    let family = fleet.family("host-net");
    let port = free_port();
    let file = def_file(
        &fleet,
        &family,
        json!({"networkMode": "host"}),
        json!([
            {"name": "web", "essential": true, "command": http_server(&[port]),
             "portMappings": [{"containerPort": port, "hostPort": port, "protocol": "tcp"}]},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let body = http_body(&format!("127.0.0.1:{port}"));
    assert_eq!(body.trim(), "ok");
    let host_port = wait_host_port(&fleet, &task_id, "web", u64::from(port));
    assert_eq!(
        host_port,
        u64::from(port),
        "host mode binds the container's own port"
    );
    let web = docker_container(&fleet, &task_id, "web");
    assert_eq!(
        web["HostConfig"]["NetworkMode"], "host",
        "{}",
        web["HostConfig"]
    );
}

#[test]
fn none_network_mode_gives_the_container_only_loopback() {
    let fleet = fleet();
    let family = fleet.family("none-net");
    let file = def_file(
        &fleet,
        &family,
        json!({"networkMode": "none"}),
        json!([
            {"name": "box", "essential": true,
             "command": sh(&format!("cat /proc/net/dev > /tmp/netdev; {IDLE}"))},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let c = docker_container(&fleet, &task_id, "box");
    assert_eq!(
        c["HostConfig"]["NetworkMode"], "none",
        "{}",
        c["HostConfig"]
    );
    let id = str_field(&c, "Id").to_string();
    let netdev = wait_for("/tmp/netdev in the container", DEADLINE, || {
        let out = docker(&["exec", &id, "cat", "/tmp/netdev"]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(describe_output(&out))
        }
    });
    let interfaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "a container in network mode none has only lo; /proc/net/dev:\n{netdev}"
    );
}

// ---------------------------------------------------------------------------
// Labels

#[test]
fn docker_labels_sit_next_to_berths_labels() {
    let fleet = fleet();
    let family = fleet.family("labels");
    let file = fleet.task_def_file(
        &family,
        json!([
            {"name": "app", "essential": true, "command": sh(IDLE),
             "dockerLabels": {"com.example.team": "payments", "com.example.tier": "backend"}},
        ]),
    );
    let task_id = submit_running(&fleet, &file);

    let app = docker_container(&fleet, &task_id, "app");
    let labels = &app["Config"]["Labels"];
    assert_eq!(labels["com.example.team"], "payments", "labels: {labels}");
    assert_eq!(labels["com.example.tier"], "backend", "labels: {labels}");
    assert_eq!(
        labels["berth.task-id"],
        task_id.as_str(),
        "labels: {labels}"
    );
    assert_eq!(labels["berth.container-name"], "app", "labels: {labels}");
    assert_eq!(
        labels["berth.task-family"],
        family.as_str(),
        "labels: {labels}"
    );
    assert_eq!(
        labels["berth.instance-id"],
        fleet.agent.instance_id(),
        "labels: {labels}"
    );
}

// ---------------------------------------------------------------------------
// Task definitions from the ECS documentation

/// "Example: Container dependency" from the "Example task definitions"
/// page of the Amazon ECS Developer Guide, registered for an external
/// (ECS Anywhere) instance. Changes from the page, and why:
/// - both images → the test image; the containers get busybox commands
///   where the docs' images bring their own: `envoy` idles, `app` serves
///   HTTP on its port 9080;
/// - `networkMode` `awsvpc` → `bridge`, and `proxyConfiguration` (App Mesh)
///   left out: external instances have neither, and ECS refuses them with
///   `requiresCompatibilities: ["EXTERNAL"]`, which is added;
/// - task `memory` `"512"` added: ECS wants memory for EC2 and EXTERNAL
///   tasks;
/// - the family carries the run id; host port 9080 only moves when another
///   program holds it on this host.
///
/// Everything else is the docs' text: `runtimePlatform`,
/// `executionRoleArn`, the `environment`, the `HEALTHY` dependency and the
/// health check (`echo hello`, interval 5, timeout 2, retries 3).
fn ecs_docs_container_dependency(image: &str, family: &str, host_port: u16) -> Value {
    json!({
      "family": family,
      "requiresCompatibilities": ["EXTERNAL"],
      "runtimePlatform": {
            "operatingSystemFamily": "LINUX"
      },
      "memory": "512",
      "containerDefinitions": [
        {
          "name": "app",
          "image": image,
          "command": http_server(&[9080]),
          "portMappings": [
            {
              "containerPort": 9080,
              "hostPort": host_port,
              "protocol": "tcp"
            }
          ],
          "essential": true,
          "dependsOn": [
            {
              "containerName": "envoy",
              "condition": "HEALTHY"
            }
          ]
        },
        {
          "name": "envoy",
          "image": image,
          "command": sh(IDLE),
          "essential": true,
          "environment": [
            {
              "name": "APPMESH_VIRTUAL_NODE_NAME",
              "value": "mesh/meshName/virtualNode/virtualNodeName"
            },
            {
              "name": "ENVOY_LOG_LEVEL",
              "value": "info"
            }
          ],
          "healthCheck": {
            "command": [
              "CMD-SHELL",
              "echo hello"
            ],
            "interval": 5,
            "timeout": 2,
            "retries": 3
          }
        }
      ],
      "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
      "networkMode": "bridge"
    })
}

#[test]
fn the_ecs_docs_container_dependency_example_runs() {
    let fleet = fleet();
    let family = fleet.family("appmesh-gateway");
    let host_port = port_or_free(9080);
    let def = ecs_docs_container_dependency(fleet.image.tag(), &family, host_port);
    let file = fleet.files.write("appmesh-gateway.json", &def.to_string());
    let task_id = submit_running(&fleet, &file);

    // app started only once envoy was healthy.
    let envoy = docker_container(&fleet, &task_id, "envoy");
    let app = docker_container(&fleet, &task_id, "app");
    let app_started = started_at(&app);
    assert!(
        passing_probe_ends(&envoy)
            .iter()
            .any(|end| *end < app_started),
        "app started ({app_started}) before envoy was healthy; envoy's health: {}",
        envoy["State"]["Health"]
    );
    let env = envoy["Config"]["Env"].to_string();
    assert!(
        env.contains("ENVOY_LOG_LEVEL=info"),
        "envoy's environment: {env}"
    );

    // app answers on its static host port.
    assert_eq!(
        wait_host_port(&fleet, &task_id, "app", 9080),
        u64::from(host_port)
    );
    let body = http_body(&format!("127.0.0.1:{host_port}"));
    assert_eq!(body.trim(), "ok");
    let task = fleet.server.wait_task(&task_id, "envoy HEALTHY", |t| {
        field_of(t, "envoy", "healthStatus") == "HEALTHY"
    });
    assert_eq!(str_field(&task, "lastStatus"), "RUNNING", "task: {task}");
}

/// The Linux task definition of "Running workloads on external instances"
/// (ECS Anywhere) in the Amazon ECS Developer Guide. Changes: the image →
/// the test image, with a busybox command standing in for nginx's own
/// (serve HTTP on port 80); the family carries the run id; host port 8080
/// only moves when another program holds it on this host.
fn ecs_anywhere_docs_example(image: &str, family: &str, host_port: u16) -> Value {
    json!({
        "requiresCompatibilities": [
            "EXTERNAL"
        ],
        "containerDefinitions": [{
            "name": "nginx",
            "image": image,
            "command": http_server(&[80]),
            "memory": 256,
            "cpu": 256,
            "essential": true,
            "portMappings": [{
                "containerPort": 80,
                "hostPort": host_port,
                "protocol": "tcp"
            }]
        }],
        "networkMode": "bridge",
        "family": family
    })
}

#[test]
fn the_ecs_anywhere_docs_example_runs() {
    let fleet = fleet();
    let family = fleet.family("nginx");
    let host_port = port_or_free(8080);
    let def = ecs_anywhere_docs_example(fleet.image.tag(), &family, host_port);
    let file = fleet.files.write("nginx.json", &def.to_string());
    let task_id = submit_running(&fleet, &file);

    assert_eq!(
        wait_host_port(&fleet, &task_id, "nginx", 80),
        u64::from(host_port)
    );
    let body = http_body(&format!("127.0.0.1:{host_port}"));
    assert_eq!(body.trim(), "ok");
    let nginx = docker_container(&fleet, &task_id, "nginx");
    assert_eq!(
        nginx["HostConfig"]["CpuShares"], 256,
        "cpu units become CPU shares: {}",
        nginx["HostConfig"]
    );
    assert_eq!(
        nginx["HostConfig"]["Memory"],
        256 * 1024 * 1024,
        "memory is the hard limit: {}",
        nginx["HostConfig"]
    );
}
