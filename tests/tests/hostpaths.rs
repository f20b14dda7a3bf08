//! Issue 11 end to end: what a task definition can make the agent mount or
//! hand to Docker. Each test replays a way into the host the red-team review
//! found (driver options that bind the agent's data dir, a symbolic link
//! swapped under a bind source, a missing source Docker would create, another
//! workload's volume, a log address on the host) against the real Docker
//! Engine, and checks that the task is refused or stopped with a reason
//! naming the path and the policy key, and that no container ever printed
//! the agent's private key.

use berth_e2e::{
    EXITS_ZERO, Fleet, RunId, container_of, containers_of, describe_output, docker, docker_json,
    docker_ok, short_id, str_field,
};
use serde_json::{Value, json};

/// What `agent.key` starts with; no container log may ever hold it.
const KEY_MARKER: &str = "BEGIN PRIVATE KEY";

/// A fleet whose agent allows host paths under a directory of its own, with
/// `extra` policy lines, and keeps stopped containers (so that their logs
/// can be read).
struct Host {
    // Field order is drop order: the agent and its containers first.
    fleet: Fleet,
    allowed: tempfile::TempDir,
}

impl Host {
    fn start(extra: &str) -> Host {
        let run = RunId::new();
        let allowed = run.temp_dir("allowed");
        let lines = format!(
            "allowed_host_paths = [{}]\n{extra}",
            json!(allowed.path().to_string_lossy())
        );
        let fleet = Fleet::start_custom(run, |server, agent| {
            agent.configure(&lines);
            agent.start_with_env(&[("BERTH_CONTAINER_CLEANUP_DELAY", "10m")]);
            server.wait_connected(agent.instance_id());
        });
        let key = std::fs::read_to_string(fleet.agent.data_dir().join("agent.key"))
            .expect("the agent's key");
        assert!(key.contains(KEY_MARKER), "the marker must be in the key");
        Host { fleet, allowed }
    }

    /// `<allowed>/<rel>`, as a string.
    fn path(&self, rel: &str) -> String {
        self.allowed.path().join(rel).to_string_lossy().into_owned()
    }

    fn data_dir(&self) -> String {
        self.fleet.agent.data_dir().to_string_lossy().into_owned()
    }

    /// Submits a task of `family` with `containers` and `volumes`.
    fn run(&self, family: &str, containers: Value, volumes: Value) -> Submitted {
        submit_task(&self.fleet, family, containers, volumes)
    }

    /// Waits for the task to stop with `code`; asserts its reason holds
    /// every one of `needles` and returns it.
    fn stopped(&self, task_id: &str, code: &str, needles: &[&str]) -> String {
        let task = self.fleet.server.wait_task_status(task_id, "STOPPED");
        assert_eq!(str_field(&task, "stopCode"), code, "task: {task}");
        let reason = str_field(&task, "stoppedReason").to_string();
        for needle in needles {
            assert!(
                reason.contains(needle),
                "the reason must name {needle:?}: {reason}"
            );
        }
        reason
    }

    /// A refusal before anything ran: no container of `family`. The
    /// control plane refuses up front what the agent's published policy
    /// does not allow (naming the policy attribute); what only the agent
    /// can judge on the host, it refuses with TaskFailedToStart and a
    /// reason holding every one of `needles`.
    fn refused(&self, submitted: &Submitted, family: &str, needles: &[&str]) -> String {
        let reason = match &submitted.refusal {
            Some(said) => {
                assert!(
                    said.contains("no container instance met all of its requirements")
                        && said.contains("berth.policy."),
                    "an up-front refusal names the policy attribute: {said}"
                );
                said.clone()
            }
            None => self.stopped(submitted, "TaskFailedToStart", needles),
        };
        let created: Vec<String> = containers_of(self.fleet.agent.instance_id())
            .iter()
            .map(|c| str_field(c, "Name").to_string())
            .filter(|name| name.contains(family))
            .collect();
        assert!(created.is_empty(), "nothing may be created: {created:?}");
        reason
    }

    /// No container of this agent ever printed the agent's key.
    fn assert_key_unread(&self) {
        for c in containers_of(self.fleet.agent.instance_id()) {
            let id = str_field(&c, "Id");
            let out = docker(&["logs", id]);
            let logs = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                !logs.contains(KEY_MARKER),
                "container {} read the agent's key:\n{logs}",
                str_field(&c, "Name")
            );
        }
    }
}

/// A submitted task: its id, or the control plane's refusal of it.
struct Submitted {
    id: Option<String>,
    refusal: Option<String>,
}

/// The task id; a refused submission fails the test here, saying why.
impl std::ops::Deref for Submitted {
    type Target = str;
    fn deref(&self) -> &str {
        match (&self.id, &self.refusal) {
            (Some(id), _) => id,
            (None, refusal) => panic!("the task was refused up front: {refusal:?}"),
        }
    }
}

/// Submits a task of `family` with `containers` and `volumes` to the
/// fleet's agent.
fn submit_task(fleet: &Fleet, family: &str, containers: Value, volumes: Value) -> Submitted {
    let mut def: Value =
        serde_json::from_str(&berth_e2e::task_def(fleet.image.tag(), family, containers))
            .expect("task_def is JSON");
    def["volumes"] = volumes;
    let file = fleet
        .files
        .write(&format!("{family}.json"), &def.to_string());
    let out = fleet.run_task(&file, &["--json"]);
    if out.status.code() == Some(1) {
        return Submitted {
            id: None,
            refusal: Some(berth_e2e::said(&out)),
        };
    }
    assert!(out.status.success(), "{}", describe_output(&out));
    let task: Value = serde_json::from_slice(&out.stdout).expect("task JSON");
    Submitted {
        id: Some(str_field(&task, "taskId").to_string()),
        refusal: None,
    }
}

/// Runs a task of `family` with `containers` and `volumes` on the fleet's
/// agent; its id.
fn run_task(fleet: &Fleet, family: &str, containers: Value, volumes: Value) -> String {
    submit_task(fleet, family, containers, volumes).to_string()
}

fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).status.success()
}

/// A container that shows what it has at `/h`, the key above all.
fn reader(volume: &str) -> Value {
    json!({"name": "c", "essential": true,
           "command": ["sh", "-c", "ls -la /h; head -c 64 /h/agent.key; sleep 120"],
           "mountPoints": [{"sourceVolume": volume, "containerPath": "/h", "readOnly": true}]})
}

fn driver_volume(name: &str, scope: &str, opts: Value) -> Value {
    let mut config = json!({"scope": scope, "driver": "local", "driverOpts": opts});
    if scope == "shared" {
        config["autoprovision"] = json!(true);
    }
    json!([{"name": name, "dockerVolumeConfiguration": config}])
}

#[test]
fn c1_a_driver_option_bind_of_the_data_dir_is_refused_by_default() {
    let host = Host::start("");
    let family = host.fleet.family("volbind");
    let opts = json!({"type": "none", "o": "bind", "device": host.data_dir()});
    let task_id = host.run(
        &family,
        json!([reader("v")]),
        driver_volume("v", "task", opts),
    );
    let reason = host.refused(
        &task_id,
        &family,
        &[
            "allow_volume_driver_opts",
            "volumes[0].dockerVolumeConfiguration.driverOpts",
        ],
    );
    assert!(
        !reason.contains(&host.data_dir()),
        "option values stay out of the reason: {reason}"
    );
    // Refused up front, there is no task and so no volume of it.
    if let Some(id) = &task_id.id {
        assert!(!volume_exists(&format!(
            "berth-{family}-v-{}",
            short_id(id)
        )));
    }
    host.assert_key_unread();
}

#[test]
fn c1_allowed_driver_options_still_hold_to_the_host_path_and_device_rules() {
    let host = Host::start("allow_volume_driver_opts = true");
    let data = host.data_dir();
    let device = "volumes[0].dockerVolumeConfiguration.driverOpts.device";

    // `o: rbind`, task scope: the data dir rule, which nothing opens.
    let family = host.fleet.family("rbind");
    let opts = json!({"type": "none", "o": "rbind", "device": data});
    let task_id = host.run(
        &family,
        json!([reader("v")]),
        driver_volume("v", "task", opts),
    );
    host.refused(
        &task_id,
        &family,
        &["allowed_host_paths", device, "data dir", &data],
    );

    // A block device: allow_devices.
    let family = host.fleet.family("ext4");
    let opts = json!({"type": "ext4", "device": "/dev/sda1"});
    let task_id = host.run(
        &family,
        json!([reader("v")]),
        driver_volume("v", "task", opts),
    );
    host.refused(&task_id, &family, &["allow_devices", device, "/dev/sda1"]);

    // Shared scope, autoprovisioned: refused, and no volume is left behind.
    let family = host.fleet.family("sharedbind");
    let shared = format!("e2e-bind-{}", host.fleet.run);
    let opts = json!({"type": "none", "o": "bind", "device": data});
    let task_id = host.run(
        &family,
        json!([reader(&shared)]),
        driver_volume(&shared, "shared", opts),
    );
    host.refused(&task_id, &family, &["allowed_host_paths", device, &data]);
    assert!(!volume_exists(&shared), "no shared bind volume may be made");

    // Within the policy, a driver-option bind works.
    std::fs::create_dir(host.allowed.path().join("www")).expect("www");
    std::fs::write(host.allowed.path().join("www/hello.txt"), "hello\n").expect("hello");
    let family = host.fleet.family("okbind");
    let opts = json!({"type": "none", "o": "bind", "device": host.path("www")});
    let task_id = host.run(
        &family,
        json!([{"name": "c", "essential": true, "command": ["grep", "-q", "hello", "/h/hello.txt"],
                "mountPoints": [{"sourceVolume": "v", "containerPath": "/h", "readOnly": true}]}]),
        driver_volume("v", "task", opts),
    );
    let task = host.fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(container_of(&task, "c")["exitCode"], 0, "{task}");
    host.assert_key_unread();
}

/// The report's two-container swap: `a` plants `x/flip -> <data dir>`, then
/// `b` binds `x/flip`.
fn run_swap(host: &Host, family: &str) -> Submitted {
    let planter = format!("rm -rf /x/flip; ln -s {} /x/flip", host.data_dir());
    host.run(
        family,
        json!([
            {"name": "a", "essential": false, "command": ["sh", "-c", planter],
             "mountPoints": [{"sourceVolume": "x", "containerPath": "/x"}]},
            {"name": "b", "essential": true,
             "dependsOn": [{"containerName": "a", "condition": "SUCCESS"}],
             "command": ["sh", "-c", "ls -la /h; head -c 64 /h/agent.key; sleep 120"],
             "mountPoints": [{"sourceVolume": "flip", "containerPath": "/h", "readOnly": true}]},
        ]),
        json!([
            {"name": "x", "host": {"sourcePath": host.path("x")}},
            {"name": "flip", "host": {"sourcePath": host.path("x/flip")}},
        ]),
    )
}

#[test]
fn c2_a_link_planted_by_a_container_of_the_task_is_never_mounted() {
    let host = Host::start("");
    std::fs::create_dir(host.allowed.path().join("x")).expect("x");
    let flip = host.path("x/flip");
    let field = "volumes[1].host.sourcePath";

    // As reported: `x/flip` does not exist yet, so Docker would have made it.
    let family = host.fleet.family("swap");
    let task_id = run_swap(&host, &family);
    host.refused(
        &task_id,
        &family,
        &["allowed_host_paths", field, &flip, "does not exist"],
    );
    assert!(
        std::fs::symlink_metadata(host.allowed.path().join("x/flip")).is_err(),
        "container a never ran"
    );

    // With `x/flip` there: one bind inside another of the same task.
    std::fs::create_dir(host.allowed.path().join("x/flip")).expect("x/flip");
    let family = host.fleet.family("swap2");
    let task_id = run_swap(&host, &family);
    host.refused(
        &task_id,
        &family,
        &["allowed_host_paths", field, &flip, "lies inside"],
    );
    assert!(
        std::fs::symlink_metadata(host.allowed.path().join("x/flip"))
            .is_ok_and(|m| m.file_type().is_dir()),
        "container a never ran"
    );
    host.assert_key_unread();
}

#[test]
fn c2_a_link_swapped_in_before_a_restart_in_place_stops_the_task() {
    let host = Host::start("");
    std::fs::create_dir_all(host.allowed.path().join("x/flip")).expect("x/flip");
    // The victim: restarts in place when it exits 1, which it does once
    // `go` appears in its bind.
    let victim = host.fleet.family("victim");
    let victim_id = host.run(
        &victim,
        json!([{"name": "b", "essential": true,
                "restartPolicy": {"enabled": true, "restartAttemptPeriod": 0},
                "command": ["sh", "-c",
                    "head -c 64 /h/agent.key 2>/dev/null; while [ ! -e /h/go ]; do sleep 0.2; done; exit 1"],
                "mountPoints": [{"sourceVolume": "flip", "containerPath": "/h", "readOnly": true}]}]),
        json!([{"name": "flip", "host": {"sourcePath": host.path("x/flip")}}]),
    );
    host.fleet.server.wait_task_status(&victim_id, "RUNNING");

    // Another task, which may write the directory above, swaps the source
    // for a link to the data dir, then lets the victim exit.
    let swapper = host.fleet.family("swapper");
    let swap = format!(
        "mv /x/flip /x/old && ln -s {} /x/flip && touch /x/old/go",
        host.data_dir()
    );
    let swapper_id = host.run(
        &swapper,
        json!([{"name": "a", "essential": true, "command": ["sh", "-c", swap],
                "mountPoints": [{"sourceVolume": "x", "containerPath": "/x"}]}]),
        json!([{"name": "x", "host": {"sourcePath": host.path("x")}}]),
    );
    let swapped = host.fleet.server.wait_task_status(&swapper_id, "STOPPED");
    assert_eq!(container_of(&swapped, "a")["exitCode"], 0, "{swapped}");
    assert!(
        std::fs::symlink_metadata(host.allowed.path().join("x/flip"))
            .is_ok_and(|m| m.file_type().is_symlink()),
        "the swap happened"
    );

    host.stopped(
        &victim_id,
        "EssentialContainerExited",
        &[
            "not restarted",
            "allowed_host_paths",
            "symbolic link",
            &host.path("x/flip"),
        ],
    );
    let task = host.fleet.server.task(&victim_id);
    assert_eq!(container_of(&task, "b")["restartCount"], json!(0), "{task}");
    host.assert_key_unread();
}

#[test]
fn c2_a_missing_source_directory_is_refused_never_created() {
    let host = Host::start("");
    let family = host.fleet.family("missing");
    let task_id = host.run(
        &family,
        json!([reader("v")]),
        json!([{"name": "v", "host": {"sourcePath": host.path("new/dir")}}]),
    );
    host.refused(
        &task_id,
        &family,
        &[
            "allowed_host_paths",
            "volumes[0].host.sourcePath",
            "does not exist",
            &host.path("new"),
        ],
    );
    assert!(
        !host.allowed.path().join("new").exists(),
        "neither berth nor Docker may create it"
    );
    host.assert_key_unread();
}

/// Removes a Docker volume the test made or made berth make.
struct VolumeGuard(String);

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// A task of `family` whose container mounts the shared volume `volume`
/// at `/d` and exits 0.
fn run_shared(fleet: &Fleet, family: &str, volume: &str, autoprovision: bool) -> String {
    run_task(
        fleet,
        family,
        json!([{"name": "c", "essential": true, "command": EXITS_ZERO,
                "mountPoints": [{"sourceVolume": volume, "containerPath": "/d"}]}]),
        json!([{"name": volume, "dockerVolumeConfiguration": {
            "scope": "shared", "autoprovision": autoprovision,
            "labels": {"berth-e2e-run": fleet.run.to_string()}}}]),
    )
}

#[test]
fn m3_a_foreign_volume_is_refused_until_the_policy_names_it() {
    let run = RunId::new();
    let foreign = format!("e2e-foreign-{run}");
    let mine = format!("e2e-mine-{run}");
    // Declared before the fleet: removed after the agent's containers.
    let _guards = (VolumeGuard(foreign.clone()), VolumeGuard(mine.clone()));
    docker_ok(&[
        "volume",
        "create",
        "--label",
        &format!("berth-e2e-run={run}"),
        &foreign,
    ]);
    let mut fleet = Fleet::start_with(run);

    let family = fleet.family("foreign");
    let task_id = run_shared(&fleet, &family, &foreign, false);
    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(str_field(&task, "stopCode"), "TaskFailedToStart", "{task}");
    let reason = str_field(&task, "stoppedReason");
    for needle in [
        "berth did not create it",
        "allowed_shared_volumes",
        &foreign,
    ] {
        assert!(reason.contains(needle), "{needle}: {reason}");
    }
    assert!(containers_of(fleet.agent.instance_id()).is_empty());

    // One berth makes is marked as berth's, and used as it is.
    let family = fleet.family("mine");
    let task_id = run_shared(&fleet, &family, &mine, true);
    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(container_of(&task, "c")["exitCode"], 0, "{task}");
    let labels = &docker_json(&["volume", "inspect", &mine])[0]["Labels"];
    assert_eq!(labels["berth.shared"], "1", "{labels}");
    assert_eq!(
        labels["berth.shared-by"],
        fleet.agent.instance_id(),
        "{labels}"
    );

    // Named by the operator: mounted.
    fleet
        .agent
        .configure(&format!("allowed_shared_volumes = [{}]", json!(foreign)));
    fleet.server.wait_connected(fleet.agent.instance_id());
    let family = fleet.family("named");
    let task_id = run_shared(&fleet, &family, &foreign, false);
    let task = fleet.server.wait_task_status(&task_id, "STOPPED");
    assert_eq!(container_of(&task, "c")["exitCode"], 0, "{task}");
}

/// A task of `family` that logs through syslog to `address`.
fn run_syslog(host: &Host, family: &str, address: &str) -> Submitted {
    host.run(
        family,
        json!([{"name": "c", "essential": true,
                "command": ["sh", "-c", "echo LEAK-FROM-CONTAINER"],
                "logConfiguration": {"logDriver": "syslog",
                                     "options": {"syslog-address": address}}}]),
        json!([]),
    )
}

#[test]
fn l1_a_log_address_on_the_host_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = format!(
        "tcp://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let mut host = Host::start("");
    let family = host.fleet.family("syslog");
    let task_id = run_syslog(&host, &family, &address);
    host.refused(
        &task_id,
        &family,
        &[
            "allowed_log_drivers",
            "containerDefinitions[0].logConfiguration.logDriver",
        ],
    );

    host.fleet
        .agent
        .configure("allowed_log_drivers = [\"json-file\", \"syslog\"]");
    host.fleet
        .server
        .wait_connected(host.fleet.agent.instance_id());
    let family = host.fleet.family("loopback");
    let task_id = run_syslog(&host, &family, &address);
    host.refused(
        &task_id,
        &family,
        &[
            "allow_log_driver_addresses",
            "containerDefinitions[0].logConfiguration.options.syslog-address",
            &address,
        ],
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("nothing may have connected to the host listener: {other:?}"),
    }
}

#[test]
fn a_host_path_task_is_refused_up_front_where_no_host_allows_it_and_placed_where_one_does() {
    // The fleet's agent allows no host path.
    let fleet = Fleet::start();
    let allowed = fleet.run.temp_dir("allowed-hp");
    let family = fleet.family("hostpath");
    let mut def: Value = serde_json::from_str(&berth_e2e::task_def(
        fleet.image.tag(),
        &family,
        json!([{"name": "app", "essential": true, "command": berth_e2e::LONG_RUNNING,
                "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}]}]),
    ))
    .expect("task_def is JSON");
    def["volumes"] = json!([{"name": "data", "host": {"sourcePath": allowed.path()}}]);
    let file = fleet
        .files
        .write(&format!("{family}.json"), &def.to_string());
    let file = file.to_string_lossy().into_owned();
    let out = fleet
        .server
        .cli(&["task", "run", "--task-definition", &file, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let said = berth_e2e::said(&out);
    assert!(
        said.contains("berth.policy.allowed_host_paths"),
        "the refusal should name the policy attribute: {said}"
    );

    // A host that allows the path joins: the task goes there.
    let mut second = berth_e2e::Agent::enroll(&fleet.server, &fleet.run);
    second.configure(&format!(
        "allowed_host_paths = [{}]\n",
        json!(allowed.path().to_string_lossy())
    ));
    second.start_connected(&fleet.server);
    let out = fleet.server.cli(&[
        "task",
        "run",
        "--task-definition",
        &file,
        "--wait",
        "--json",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let task: Value = serde_json::from_slice(&out.stdout).expect("task JSON");
    assert_eq!(
        str_field(&task, "instanceId"),
        second.instance_id(),
        "{task}"
    );
}
