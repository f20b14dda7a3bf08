//! Fault injection (SPEC §4, issue 4): real processes, the real Docker
//! Engine, and real faults — a control plane SIGKILLed, a blackholed link,
//! the agent aborted at failpoints, a Docker Engine restarted, an offline
//! reboot, a full filesystem under the agent's store.
//!
//! Every case checks three things:
//! - the same containers run (same ids, same `State.StartedAt`) unless the
//!   case itself ends one;
//! - every change reached the control plane exactly once in effect: the
//!   final states, restart counts and exit codes are right, and the
//!   server's log shows each of the agent's event sequences `1..=N` applied
//!   once, in order ([`assert_every_event_applied_once`]);
//! - the instance and its tasks settle to the truth.
//!
//! The matrix and its results are in docs/faults.md.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_e2e::{
    Agent, DEADLINE, Dockerd, Fleet, LONG_RUNNING, Proxy, RunId, Scratch, Server, TestImage, Tmpfs,
    assert_every_event_applied_once, container_of, containers_of, describe_output, docker_ok,
    statuses_of, stdout_json, str_field, task_def, wait_for,
};
use serde_json::{Value, json};

/// SIGABRT: how a failpoint ends the agent.
const SIGABRT: i32 = 6;

/// Deadline for noticing a blackholed link: comfortably above the
/// documented bound (HTTP/2 keepalive 10 s + 10 s timeout on the agent; 3
/// heartbeats of 1 s on the test server).
const DETECTION: Duration = Duration::from_secs(60);

/// Deadline for reconnecting once the control plane is back: comfortably
/// above the agent's back-off cap (30 s, full jitter).
const RECONNECT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Helpers

/// How many lines of a log file contain `needle`.
fn count_in_log(path: &Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// A busybox command that runs until SIGTERM (exit 0), or until
/// `/tmp/trigger` appears: then it removes the file and exits `code`, so a
/// container restarted in place runs on.
fn exits_on_trigger(code: i32) -> Value {
    json!([
        "sh",
        "-c",
        format!(
            "trap 'exit 0' TERM; while true; do if [ -f /tmp/trigger ]; then rm -f /tmp/trigger; exit {code}; fi; sleep 1; done"
        )
    ])
}

/// Essential `app` and non-essential `side`, both long-running.
fn app_and_side() -> Value {
    json!([
        {"name": "app", "essential": true, "command": LONG_RUNNING},
        {"name": "side", "essential": false, "command": LONG_RUNNING},
    ])
}

/// One docker container as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ctr {
    id: String,
    started_at: String,
    running: bool,
}

fn ctr(c: &Value) -> Ctr {
    Ctr {
        id: str_field(c, "Id").to_string(),
        started_at: str_field(&c["State"], "StartedAt").to_string(),
        running: c["State"]["Running"] == true,
    }
}

/// The docker containers (from `docker inspect`) of container `name` of
/// task `task_id`.
fn named(all: &[Value], task_id: &str, name: &str) -> Vec<Ctr> {
    all.iter()
        .filter(|c| {
            c["Config"]["Labels"]["berth.task-id"] == task_id
                && c["Config"]["Labels"]["berth.container-name"] == name
        })
        .map(ctr)
        .collect()
}

/// The one docker container of container `name` of task `task_id`.
fn the(all: &[Value], task_id: &str, name: &str) -> Ctr {
    let found = named(all, task_id, name);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one docker container {name} of task {task_id}, found {}: {}",
        found.len(),
        summary(all)
    );
    found[0].clone()
}

/// `name (status)` of each container, for messages.
fn summary(all: &[Value]) -> String {
    let items: Vec<String> = all
        .iter()
        .map(|c| {
            format!(
                "{} {} ({})",
                str_field(c, "Name").trim_start_matches('/'),
                str_field(c, "Id").get(..12).unwrap_or(""),
                str_field(&c["State"], "Status")
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The docker containers of one task.
fn of_task(all: &[Value], task_id: &str) -> Vec<Value> {
    all.iter()
        .filter(|c| c["Config"]["Labels"]["berth.task-id"] == task_id)
        .cloned()
        .collect()
}

fn task_id_of(task: &Value) -> String {
    let id = str_field(task, "taskId");
    assert!(!id.is_empty(), "no taskId in {task}");
    id.to_string()
}

/// Runs a task of `fleet`'s agent and waits until it is RUNNING.
fn run_task(fleet: &Fleet, name: &str, containers: Value) -> String {
    let family = fleet.family(name);
    let file = fleet.task_def_file(&family, containers);
    task_id_of(&fleet.run_task_wait(&file))
}

/// `docker exec ID touch /tmp/trigger` (see [`exits_on_trigger`]).
fn trigger(id: &str) {
    docker_ok(&["exec", id, "touch", "/tmp/trigger"]);
}

/// The agent's local view of a task.
fn local_task(agent: &Agent, task_id: &str) -> Value {
    agent.api_get(&format!("/v1/tasks/{task_id}"))
}

fn restart_count(task: &Value, name: &str) -> u64 {
    container_of(task, name)["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

fn container_status<'a>(task: &'a Value, name: &str) -> &'a str {
    str_field(container_of(task, name), "lastStatus")
}

/// The task and its container `app` RUNNING after exactly one restart.
fn restarted_once_and_running(t: &Value) -> bool {
    restart_count(t, "app") == 1
        && container_status(t, "app") == "RUNNING"
        && str_field(t, "lastStatus") == "RUNNING"
}

/// Waits until `done` accepts the control plane's view of a task that
/// should (go on) running; fails at once if the task is STOPPED instead (a
/// stopped task never runs again).
fn wait_task_running(
    server: &Server,
    task_id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("task {task_id}: {what}"), DEADLINE, || {
        let task = server.task(task_id);
        if done(&task) {
            return Ok(task);
        }
        assert_ne!(
            str_field(&task, "lastStatus"),
            "STOPPED",
            "task {task_id} STOPPED instead of: {what}\n{task}"
        );
        Err(format!("task: {task}"))
    })
}

/// Asserts the agent process has not exited.
fn assert_agent_alive(agent: &mut Agent, what: &str) {
    if let Some(status) = agent.exited() {
        panic!(
            "the agent exited ({status}) {what}; log tail:\n{}",
            agent.log_tail()
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Control plane SIGKILLed while things happen on the host

#[test]
fn a_control_plane_crash_loses_no_change_made_on_the_host_meanwhile() {
    let mut fleet = Fleet::start();
    let instance = fleet.agent.instance_id().to_string();
    let restart_policy = json!({"enabled": true, "restartAttemptPeriod": 0});
    let crashy = run_task(
        &fleet,
        "crashy",
        json!([{"name": "app", "essential": true, "command": exits_on_trigger(1),
                "restartPolicy": restart_policy}]),
    );
    let quits = run_task(
        &fleet,
        "quits",
        json!([
            {"name": "app", "essential": true, "command": exits_on_trigger(3)},
            {"name": "side", "essential": false, "command": LONG_RUNNING},
        ]),
    );
    let steady = run_task(
        &fleet,
        "steady",
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
    );
    let all = containers_of(&instance);
    let crashy_app = the(&all, &crashy, "app");
    let quits_app = the(&all, &quits, "app");
    let quits_side = the(&all, &quits, "side");
    let steady_app = the(&all, &steady, "app");

    // The control plane dies; on the host, a container with a restart
    // policy crashes and an essential container of another task exits.
    let ended_before = count_in_log(fleet.agent.log_path(), "session ended");
    fleet.server.kill();
    trigger(&crashy_app.id);
    trigger(&quits_app.id);
    wait_for(
        "the agent to restart crashy/app and stop quits, with no control plane",
        DEADLINE,
        || {
            let c = local_task(&fleet.agent, &crashy);
            let q = local_task(&fleet.agent, &quits);
            if restart_count(&c, "app") == 1
                && container_status(&c, "app") == "RUNNING"
                && str_field(&q, "lastStatus") == "STOPPED"
            {
                Ok(())
            } else {
                Err(format!("crashy: {c}\nquits: {q}"))
            }
        },
    );
    let meta = fleet.agent.api_get("/v1/metadata");
    assert_eq!(meta["connected"], false, "{meta}");
    assert!(
        meta["pendingEvents"].as_u64().unwrap_or(0) > 0,
        "the changes must wait in the outbox while the control plane is away: {meta}"
    );
    let all = containers_of(&instance);
    let crashy_after = the(&all, &crashy, "app");
    assert_eq!(
        crashy_after.id, crashy_app.id,
        "the restart policy must restart the container in place"
    );
    assert!(crashy_after.running, "crashy/app is not running");
    assert_ne!(
        crashy_after.started_at, crashy_app.started_at,
        "crashy/app was not started again"
    );
    assert_eq!(the(&all, &steady, "app"), steady_app);

    // The outage lasts until the agent's reconnection back-off has reached
    // its cap: 8 failed sessions (250 ms doubling to 30 s).
    wait_for(
        "the agent's reconnection back-off to reach its cap (8 failed sessions)",
        DEADLINE,
        || {
            let ended = count_in_log(fleet.agent.log_path(), "session ended") - ended_before;
            (ended >= 8)
                .then_some(())
                .ok_or(format!("{ended} sessions ended since the kill"))
        },
    );
    assert_agent_alive(&mut fleet.agent, "during the control plane outage");

    // The control plane comes back on the same addresses; the agent's next
    // attempt is at most one capped back-off step away.
    fleet.server.restart();
    let back = Instant::now();
    wait_for(
        "the agent to reconnect within its back-off cap",
        RECONNECT,
        || match fleet.server.instance(&instance) {
            Some(i) if i["agentConnected"] == true => Ok(()),
            other => Err(format!("instance: {other:?}")),
        },
    );
    eprintln!(
        "the agent reconnected {:?} after the control plane returned",
        back.elapsed()
    );
    let c = wait_task_running(
        &fleet.server,
        &crashy,
        "app restarted once and RUNNING",
        restarted_once_and_running,
    );
    assert_eq!(container_of(&c, "app")["exitCode"], 1, "{c}");
    assert_eq!(container_of(&c, "app")["runtimeId"], crashy_app.id.as_str());
    let q = fleet.server.wait_task_status(&quits, "STOPPED");
    assert_eq!(str_field(&q, "stopCode"), "EssentialContainerExited", "{q}");
    assert_eq!(container_of(&q, "app")["exitCode"], 3, "{q}");
    assert_eq!(container_status(&q, "side"), "STOPPED", "{q}");
    assert_eq!(container_of(&q, "app")["runtimeId"], quits_app.id.as_str());
    assert_eq!(
        container_of(&q, "side")["runtimeId"],
        quits_side.id.as_str()
    );
    let s = fleet.server.wait_task_status(&steady, "RUNNING");
    assert_eq!(container_of(&s, "app")["runtimeId"], steady_app.id.as_str());

    // Once each: every event applied once, the stop seen once; the replay
    // restarted nothing.
    let applied = assert_every_event_applied_once(&fleet.server, &fleet.agent);
    let stops = statuses_of(&applied, &quits)
        .iter()
        .filter(|s| *s == "STOPPED")
        .count();
    assert_eq!(stops, 1, "quits STOPPED applied {stops} times: {applied:?}");
    let c = fleet.server.task(&crashy);
    assert_eq!(restart_count(&c, "app"), 1, "{c}");
    let all = containers_of(&instance);
    assert_eq!(the(&all, &crashy, "app"), crashy_after);
    assert_eq!(the(&all, &steady, "app"), steady_app);
    let quits_left = of_task(&all, &quits);
    assert!(
        quits_left.iter().all(|c| c["State"]["Running"] == false) && quits_left.len() <= 2,
        "quits must have no running and no new container: {}",
        summary(&quits_left)
    );
}

// ---------------------------------------------------------------------------
// 2. A blackholed link

#[test]
fn a_blackholed_link_is_noticed_on_both_sides_and_heals() {
    // Enrolled with the server's own address (the certificate's names are
    // 127.0.0.1), then pointed at the proxy. The proxy outlives the fleet.
    let mut proxy = None;
    let mut fleet = Fleet::start_custom(RunId::new(), |server, agent| {
        let started = Proxy::start(server.fleet_addr());
        agent.set_server(&started.url());
        agent.start_connected(server);
        proxy = Some(started);
    });
    let proxy = proxy.expect("start_custom ran the start closure");
    let instance = fleet.agent.instance_id().to_string();
    let meta = fleet.agent.api_get("/v1/metadata");
    assert_eq!(meta["server"], proxy.url().as_str(), "{meta}");
    assert!(proxy.connections() > 0, "the agent did not use the proxy");

    let task_id = run_task(&fleet, "link", app_and_side());
    let all = containers_of(&instance);
    let before = (the(&all, &task_id, "app"), the(&all, &task_id, "side"));

    proxy.blackhole();
    let cut = Instant::now();
    wait_for(
        "the control plane to show the instance disconnected",
        DETECTION,
        || match fleet.server.instance(&instance) {
            Some(i) if i["agentConnected"] == false => Ok(()),
            other => Err(format!("instance: {other:?}")),
        },
    );
    let server_noticed = cut.elapsed();
    let task = fleet.server.wait_task_status(&task_id, "UNKNOWN");
    assert_eq!(str_field(&task, "desiredStatus"), "RUNNING", "{task}");
    wait_for(
        "the agent to notice the dead link (/v1/metadata connected false)",
        DETECTION,
        || {
            let meta = fleet.agent.api_get("/v1/metadata");
            (meta["connected"] == false).then_some(()).ok_or(meta)
        },
    );
    let agent_noticed = cut.elapsed();
    eprintln!(
        "blackhole noticed by the control plane after {server_noticed:?}, by the agent after {agent_noticed:?}"
    );
    assert_agent_alive(&mut fleet.agent, "while the link was blackholed");
    let all = containers_of(&instance);
    assert_eq!(
        (the(&all, &task_id, "app"), the(&all, &task_id, "side")),
        before,
        "a dead link must not touch the containers"
    );

    proxy.heal();
    let healed = Instant::now();
    fleet.server.wait_connected(&instance);
    wait_for("the agent to reconnect", DEADLINE, || {
        let meta = fleet.agent.api_get("/v1/metadata");
        (meta["connected"] == true).then_some(()).ok_or(meta)
    });
    eprintln!("reconnected {:?} after the link healed", healed.elapsed());
    let task = fleet.server.wait_task_status(&task_id, "RUNNING");
    assert_eq!(
        container_of(&task, "app")["runtimeId"],
        before.0.id.as_str()
    );
    let all = containers_of(&instance);
    assert_eq!(
        (the(&all, &task_id, "app"), the(&all, &task_id, "side")),
        before
    );
    assert_eq!(all.len(), 2, "no other container may appear");
    assert_every_event_applied_once(&fleet.server, &fleet.agent);
    drop(fleet);
    drop(proxy);
}

// ---------------------------------------------------------------------------
// 3. The agent killed at failpoints, restarted without them

/// A fleet whose agent runs with `BERTH_FAILPOINTS=<point>`.
fn fleet_with_failpoint(point: &str) -> Fleet {
    Fleet::start_custom(RunId::new(), |server, agent| {
        agent.start_with_env(&[("BERTH_FAILPOINTS", point)]);
        server.wait_connected(agent.instance_id());
    })
}

/// Waits for the agent to abort at failpoint `point`; panics if it does not
/// or if `too_far` says the agent went past the point without aborting.
fn wait_for_abort(fleet: &mut Fleet, point: &str, too_far: impl Fn(&[Value]) -> bool) {
    let instance = fleet.agent.instance_id().to_string();
    let status = wait_for(
        &format!("the agent to abort at failpoint {point}"),
        DEADLINE,
        || {
            if let Some(status) = fleet.agent.exited() {
                return Ok(status);
            }
            let all = containers_of(&instance);
            assert!(
                !too_far(&all),
                "failpoint {point}: the agent went past the point without aborting; containers: {}\nagent log tail:\n{}",
                summary(&all),
                fleet.agent.log_tail()
            );
            Err(format!("agent still running; containers: {}", all.len()))
        },
    );
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "the agent should abort at {point}, it ended with {status}; log tail:\n{}",
        fleet.agent.log_tail()
    );
    assert!(
        std::fs::read_to_string(fleet.agent.log_path())
            .unwrap_or_default()
            .contains(&format!("failpoint {point} reached")),
        "the agent log does not say it reached {point}:\n{}",
        fleet.agent.log_tail()
    );
}

/// Runs app+side with the agent armed at `point`, waits for the abort,
/// checks the Engine's state then with `after_crash`, restarts the agent
/// without failpoints and checks the task runs with exactly one container
/// per definition. Returns the fleet, the task id, and what `after_crash`
/// returned.
fn crash_while_starting<T>(
    point: &str,
    too_far: impl Fn(&[Value]) -> bool,
    after_crash: impl FnOnce(&[Value]) -> T,
) -> (Fleet, String, T) {
    let mut fleet = fleet_with_failpoint(point);
    let instance = fleet.agent.instance_id().to_string();
    let family = fleet.family(&format!("fp-{point}"));
    let file = fleet.task_def_file(&family, app_and_side());
    let out = fleet.run_task(&file, &["--json"]);
    assert!(
        out.status.success(),
        "berth task run failed\n{}",
        describe_output(&out)
    );
    let task_id = task_id_of(&stdout_json("berth task run --json", &out));
    wait_for_abort(&mut fleet, point, too_far);
    let seen = after_crash(&containers_of(&instance));

    fleet.agent.start_connected(&fleet.server);
    let task = wait_task_running(
        &fleet.server,
        &task_id,
        "RUNNING, app and side RUNNING",
        |t| {
            str_field(t, "lastStatus") == "RUNNING"
                && container_status(t, "app") == "RUNNING"
                && container_status(t, "side") == "RUNNING"
        },
    );
    let all = containers_of(&instance);
    let app = the(&all, &task_id, "app");
    let side = the(&all, &task_id, "side");
    assert_eq!(all.len(), 2, "leftover containers: {}", summary(&all));
    assert!(app.running && side.running, "{app:?} {side:?}");
    assert_eq!(container_of(&task, "app")["runtimeId"], app.id.as_str());
    assert_eq!(container_of(&task, "side")["runtimeId"], side.id.as_str());
    assert_eq!(restart_count(&task, "app"), 0, "{task}");
    assert_every_event_applied_once(&fleet.server, &fleet.agent);
    (fleet, task_id, seen)
}

#[test]
fn an_agent_killed_after_pulling_starts_the_task_once_restarted() {
    let (_fleet, _task, created) = crash_while_starting(
        "after-pull",
        // Images pulled, nothing created: a container means the point was
        // passed.
        |all| !all.is_empty(),
        <[Value]>::len,
    );
    assert_eq!(created, 0, "nothing may be created before the abort");
}

#[test]
fn an_agent_killed_between_create_and_start_adopts_the_created_container() {
    let (fleet, task_id, created) = crash_while_starting(
        "after-create",
        |all| all.iter().any(|c| c["State"]["Running"] == true),
        |all| {
            assert_eq!(
                all.len(),
                1,
                "one container created before the abort: {}",
                summary(all)
            );
            ctr(&all[0])
        },
    );
    assert!(!created.running, "created, not started: {created:?}");
    let all = containers_of(fleet.agent.instance_id());
    assert_eq!(
        the(&all, &task_id, "app").id,
        created.id,
        "the container created before the crash must be adopted, not doubled"
    );
}

#[test]
fn an_agent_killed_right_after_start_keeps_the_started_container() {
    let (fleet, task_id, started) = crash_while_starting(
        "after-start",
        |all| all.iter().filter(|c| c["State"]["Running"] == true).count() > 1,
        |all| {
            let running: Vec<Ctr> = all.iter().map(ctr).filter(|c| c.running).collect();
            assert_eq!(
                running.len(),
                1,
                "one container started before the abort: {}",
                summary(all)
            );
            running[0].clone()
        },
    );
    let all = containers_of(fleet.agent.instance_id());
    let app = the(&all, &task_id, "app");
    let side = the(&all, &task_id, "side");
    let same = if app.id == started.id { app } else { side };
    assert_eq!(
        same, started,
        "the container started before the crash must run on, not be started again"
    );
}

#[test]
fn an_agent_killed_while_stopping_finishes_the_stop_once_restarted() {
    let mut fleet = Fleet::start();
    let instance = fleet.agent.instance_id().to_string();
    let task_id = run_task(&fleet, "fp-stop", app_and_side());
    let all = containers_of(&instance);
    let before = (the(&all, &task_id, "app"), the(&all, &task_id, "side"));

    fleet.agent.stop();
    fleet
        .agent
        .start_with_env(&[("BERTH_FAILPOINTS", "before-stop")]);
    fleet.server.wait_connected(&instance);
    fleet.server.wait_task_status(&task_id, "RUNNING");
    let out = fleet.server.cli(&["task", "stop", &task_id]);
    assert!(
        out.status.success(),
        "berth task stop failed\n{}",
        describe_output(&out)
    );
    wait_for_abort(&mut fleet, "before-stop", |_| false);
    let all = containers_of(&instance);
    assert_eq!(
        (the(&all, &task_id, "app"), the(&all, &task_id, "side")),
        before,
        "no container is stopped before the failpoint"
    );

    fleet.agent.start_connected(&fleet.server);
    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(str_field(&task, "desiredStatus"), "STOPPED", "{task}");
    assert_eq!(str_field(&task, "stopCode"), "UserInitiated", "{task}");
    for (name, c) in [("app", &before.0), ("side", &before.1)] {
        let reported = container_of(&task, name);
        assert_eq!(str_field(reported, "lastStatus"), "STOPPED", "{task}");
        assert_eq!(reported["runtimeId"], c.id.as_str(), "{task}");
        assert_eq!(reported["exitCode"], 0, "stopped with SIGTERM: {task}");
    }
    // Stopped containers are removed after the cleanup delay (0 s here):
    // nothing is left behind.
    wait_for(
        "the stopped task's containers to be removed",
        DEADLINE,
        || {
            let left = containers_of(&instance);
            left.is_empty().then_some(()).ok_or(summary(&left))
        },
    );
    let applied = assert_every_event_applied_once(&fleet.server, &fleet.agent);
    let stops = statuses_of(&applied, &task_id)
        .iter()
        .filter(|s| *s == "STOPPED")
        .count();
    assert_eq!(stops, 1, "STOPPED applied {stops} times: {applied:?}");
}

// ---------------------------------------------------------------------------
// 4 and 5. A private Docker Engine: restarted, and an offline reboot

/// A control plane and an agent whose Docker Engine is a private `dockerd`.
/// Fields drop in order: the agent, the server, the Engine (and its
/// containers), the image, the scratch files.
struct EngineFleet {
    agent: Agent,
    server: Server,
    dockerd: Dockerd,
    image: TestImage,
    files: Scratch,
    run: RunId,
}

impl EngineFleet {
    fn start() -> EngineFleet {
        let run = RunId::new();
        let files = Scratch::new(&run);
        let image = TestImage::build(&run);
        let dockerd = Dockerd::start(&run);
        dockerd.load_image(image.tag());
        let server = Server::start(&run);
        let mut agent = Agent::enroll(&server, &run);
        agent.configure(&format!("docker_socket = \"{}\"", dockerd.host()));
        agent.start_connected(&server);
        EngineFleet {
            agent,
            server,
            dockerd,
            image,
            files,
            run,
        }
    }

    /// Runs a task (`networkMode: none`: the private Engine has no bridge)
    /// and waits until it is RUNNING.
    fn run_task(&self, name: &str, containers: Value) -> String {
        let family = format!("{name}-{}", self.run);
        let mut def: Value = serde_json::from_str(&task_def(self.image.tag(), &family, containers))
            .expect("task_def prints JSON");
        def["networkMode"] = json!("none");
        let file = self
            .files
            .write(&format!("{family}.json"), &def.to_string());
        let file = file.to_string_lossy();
        let task = self.server.cli_json(&[
            "task",
            "run",
            "--task-definition",
            &file,
            "--instance",
            self.agent.instance_id(),
            "--wait",
            "--json",
        ]);
        task_id_of(&task)
    }

    fn containers(&self) -> Vec<Value> {
        self.dockerd.containers_of(self.agent.instance_id())
    }
}

/// Stops the private Engine (its containers stop with it) while the agent
/// runs, checks the agent lives through it, and starts the Engine again.
fn restart_engine(fleet: &mut EngineFleet) {
    let status = fleet.dockerd.stop();
    assert!(status.success(), "dockerd exited with {status} on SIGTERM");
    assert_agent_alive(&mut fleet.agent, "while the Docker Engine was down");
    let meta = fleet.agent.api_get("/v1/metadata");
    assert_eq!(meta["connected"], true, "{meta}");
    fleet.dockerd.start_again();
}

#[test]
fn a_docker_engine_restart_stops_a_task_whose_essential_container_exited() {
    let mut fleet = EngineFleet::start();
    let task_id = fleet.run_task("engine-essential", app_and_side());
    let all = fleet.containers();
    let app = the(&all, &task_id, "app");
    let side = the(&all, &task_id, "side");

    restart_engine(&mut fleet);

    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(
        str_field(&task, "stopCode"),
        "EssentialContainerExited",
        "{task}"
    );
    assert_eq!(container_of(&task, "app")["runtimeId"], app.id.as_str());
    assert_eq!(container_of(&task, "side")["runtimeId"], side.id.as_str());
    assert_eq!(container_status(&task, "side"), "STOPPED", "{task}");
    let all = fleet.containers();
    let left = of_task(&all, &task_id);
    assert!(
        left.iter().all(|c| c["State"]["Running"] == false) && left.len() <= 2,
        "the stopped task must have no running and no new container: {}",
        summary(&left)
    );
    assert_every_event_applied_once(&fleet.server, &fleet.agent);
    // Stopped containers are removed after the cleanup delay (0 s here),
    // also when the Engine was away when the task stopped.
    wait_for(
        "the stopped task's containers to be removed",
        DEADLINE,
        || {
            let left = of_task(&fleet.containers(), &task_id);
            if left.is_empty() {
                return Ok(());
            }
            let (status, _) = fleet.agent.api_request(&format!("/v1/tasks/{task_id}"));
            assert_ne!(
                status,
                404,
                "the agent is done with the task (cleaned up, forgotten) but its containers are left: {}\nagent log tail:\n{}",
                summary(&left),
                fleet.agent.log_tail()
            );
            Err(summary(&left))
        },
    );
}

#[test]
fn a_docker_engine_restart_restarts_a_container_with_a_restart_policy_in_place() {
    let mut fleet = EngineFleet::start();
    let task_id = fleet.run_task(
        "engine-restart",
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING,
                "restartPolicy": {"enabled": true, "restartAttemptPeriod": 0}}]),
    );
    let before = the(&fleet.containers(), &task_id, "app");

    restart_engine(&mut fleet);

    let task = wait_task_running(
        &fleet.server,
        &task_id,
        "app restarted in place once, RUNNING",
        restarted_once_and_running,
    );
    assert_eq!(container_of(&task, "app")["runtimeId"], before.id.as_str());
    let all = fleet.containers();
    let after = the(&all, &task_id, "app");
    assert!(after.running, "{after:?}");
    assert_eq!(after.id, before.id, "restarted in place");
    assert_ne!(after.started_at, before.started_at, "started again");
    assert_eq!(all.len(), 1, "no other container: {}", summary(&all));
    assert_every_event_applied_once(&fleet.server, &fleet.agent);
    let task = fleet.server.task(&task_id);
    assert_eq!(restart_count(&task, "app"), 1, "restarted once: {task}");
    assert_eq!(the(&fleet.containers(), &task_id, "app"), after);
}

#[test]
fn after_an_offline_reboot_with_the_engine_down_tasks_run_again_in_place() {
    let mut fleet = EngineFleet::start();
    let task_id = fleet.run_task("reboot", app_and_side());
    let all = fleet.containers();
    let before = (the(&all, &task_id, "app"), the(&all, &task_id, "side"));

    // The host goes down while the control plane is out of reach: the
    // agent stops, the Engine stops and its containers exit; the host comes
    // back with a new boot id, the Engine first.
    fleet.server.kill();
    fleet.agent.stop();
    fleet.dockerd.stop();
    fleet.dockerd.start_again();
    let all = fleet.containers();
    for (name, c) in [("app", &before.0), ("side", &before.1)] {
        let now = the(&all, &task_id, name);
        assert_eq!(now.id, c.id);
        assert!(!now.running, "{name} must have exited with the Engine");
    }
    rewrite_boot_id(&fleet.agent.data_dir().join("state.json"));

    fleet.agent.start();
    wait_for(
        "the task to run again with no control plane",
        DEADLINE,
        || {
            let t = local_task(&fleet.agent, &task_id);
            (str_field(&t, "lastStatus") == "RUNNING"
                && container_status(&t, "app") == "RUNNING"
                && container_status(&t, "side") == "RUNNING")
                .then_some(())
                .ok_or(t)
        },
    );
    let meta = fleet.agent.api_get("/v1/metadata");
    assert_eq!(meta["connected"], false, "{meta}");
    let all = fleet.containers();
    let after = (the(&all, &task_id, "app"), the(&all, &task_id, "side"));
    for (c, b) in [(&after.0, &before.0), (&after.1, &before.1)] {
        assert_eq!(c.id, b.id, "restarted in place");
        assert!(c.running, "{c:?}");
        assert_ne!(c.started_at, b.started_at, "started again");
    }
    assert_eq!(all.len(), 2, "no other container may appear");

    fleet.server.restart();
    fleet.server.wait_connected(fleet.agent.instance_id());
    let task = wait_task_running(
        &fleet.server,
        &task_id,
        "RUNNING, app and side RUNNING",
        |t| {
            str_field(t, "lastStatus") == "RUNNING"
                && container_status(t, "app") == "RUNNING"
                && container_status(t, "side") == "RUNNING"
        },
    );
    assert_eq!(
        container_of(&task, "app")["runtimeId"],
        before.0.id.as_str()
    );
    assert_eq!(
        restart_count(&task, "app"),
        0,
        "a reboot is not a restart: {task}"
    );
    assert_every_event_applied_once(&fleet.server, &fleet.agent);
    let all = fleet.containers();
    assert_eq!(
        (the(&all, &task_id, "app"), the(&all, &task_id, "side")),
        after,
        "the control plane's return must not touch the containers"
    );
}

/// Makes the agent believe the host rebooted since it last ran.
fn rewrite_boot_id(state_path: &Path) {
    let mut state: Value = serde_json::from_str(
        &std::fs::read_to_string(state_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", state_path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", state_path.display()));
    state["boot_id"] = json!("the-boot-before");
    std::fs::write(state_path, state.to_string())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", state_path.display()));
}

// ---------------------------------------------------------------------------
// 6. The agent's store on a full filesystem

#[test]
fn a_full_store_is_reported_keeps_containers_running_and_catches_up() {
    let run = RunId::new();
    let small_dir = run.temp_dir("small");
    let small = Tmpfs::mount(small_dir.path(), "2m");
    // The agent drops (stops) before the tmpfs is unmounted.
    let fleet = Fleet::start_custom(run, |server, agent| {
        agent.set_data_dir(small.path());
        agent.start_connected(server);
    });
    let instance = fleet.agent.instance_id().to_string();
    let state_path = small.path().join("state.json");

    let task_id = run_task(&fleet, "store", app_and_side());
    let all = containers_of(&instance);
    let app = the(&all, &task_id, "app");
    let side = the(&all, &task_id, "side");

    small.fill();
    docker_ok(&["kill", &side.id]);
    let meta = wait_for("the agent to report its store error", DEADLINE, || {
        let meta = fleet.agent.api_get("/v1/metadata");
        if meta["storeError"].is_string() {
            Ok(meta)
        } else {
            Err(meta)
        }
    });
    let store_error = str_field(&meta, "storeError");
    eprintln!("storeError: {store_error}");
    assert!(
        store_error.contains(&state_path.to_string_lossy().into_owned())
            && store_error.contains("No space left"),
        "storeError must name {} and the cause: {store_error:?}",
        state_path.display()
    );
    let (_, metrics) = fleet.agent.api_request("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.trim() == "berth_agent_store_healthy 0"),
        "metrics:\n{metrics}"
    );
    let local = local_task(&fleet.agent, &task_id);
    assert_eq!(container_status(&local, "side"), "STOPPED", "{local}");
    assert_eq!(str_field(&local, "lastStatus"), "RUNNING", "{local}");
    let all = containers_of(&instance);
    assert_eq!(the(&all, &task_id, "app"), app, "app must keep running");

    // Space again: the next change is written with everything before it.
    small.unfill();
    let next = run_task(
        &fleet,
        "store-next",
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
    );
    let meta = wait_for("the store error to clear", DEADLINE, || {
        let meta = fleet.agent.api_get("/v1/metadata");
        meta["storeError"]
            .is_null()
            .then_some(meta.clone())
            .ok_or(meta)
    });
    let (_, metrics) = fleet.agent.api_request("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.trim() == "berth_agent_store_healthy 1"),
        "metrics:\n{metrics}"
    );
    let task = fleet
        .server
        .wait_task(&task_id, "side STOPPED, task RUNNING", |t| {
            container_status(t, "side") == "STOPPED" && str_field(t, "lastStatus") == "RUNNING"
        });
    assert_eq!(container_of(&task, "side")["exitCode"], 137, "{task}");
    assert_every_event_applied_once(&fleet.server, &fleet.agent);

    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(&state_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", state_path.display())),
    )
    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", state_path.display()));
    let saved_side = saved["tasks"][&task_id]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "side"))
        .unwrap_or_else(|| panic!("no side of {task_id} in state.json: {saved}"));
    assert_eq!(
        saved_side["last_status"], "STOPPED",
        "the change made while the disk was full must be on disk now: {saved}"
    );
    assert!(
        saved["tasks"].get(&next).is_some(),
        "the next task must be on disk: {saved}"
    );
    assert!(
        saved["last_seq"].as_u64() >= meta["lastEventSequence"].as_u64(),
        "state.json last_seq {} behind the agent's {}",
        saved["last_seq"],
        meta["lastEventSequence"]
    );
    let all = containers_of(&instance);
    assert_eq!(the(&all, &task_id, "app"), app);
    drop(fleet);
    drop(small);
    drop(small_dir);
}
