//! Services end to end: one control plane, three real agents on the local
//! Docker Engine (three hosts), real containers. The service controller
//! keeps the desired count, spreads, replaces what dies, rolls out a new
//! revision, rolls back one that fails, runs daemons and replaces the
//! tasks of a lost host.

use std::collections::BTreeSet;

use berth_e2e::{
    Agent, DEADLINE, Fleet, LONG_RUNNING, describe_output, docker_ok, list_of, said, str_field,
    wait_for,
};
use serde_json::{Value, json};

/// A fleet of three agents on one control plane. The extra agents drop
/// (and take their containers with them) before the fleet.
struct Three {
    more: Vec<Agent>,
    fleet: Fleet,
}

impl Three {
    fn start() -> Three {
        let fleet = Fleet::start();
        let mut more = Vec::new();
        for _ in 0..2 {
            let mut a = Agent::enroll(&fleet.server, &fleet.run);
            a.start_connected(&fleet.server);
            more.push(a);
        }
        Three { more, fleet }
    }

    fn agent(&mut self, instance_id: &str) -> &mut Agent {
        if self.fleet.agent.instance_id() == instance_id {
            return &mut self.fleet.agent;
        }
        self.more
            .iter_mut()
            .find(|a| a.instance_id() == instance_id)
            .unwrap_or_else(|| panic!("no agent of instance {instance_id}"))
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.fleet.server.cli(args)
    }

    fn json(&self, args: &[&str]) -> Value {
        self.fleet.server.cli_json(args)
    }

    /// A long-running task definition of a family unique to this run, with
    /// `env` as its environment (a new revision when it changes).
    fn definition(&self, name: &str, env: &str) -> String {
        let family = self.fleet.family(name);
        let file = self.fleet.task_def_file(
            &family,
            json!([{"name": "app", "essential": true, "command": LONG_RUNNING,
                    "environment": [{"name": "VERSION", "value": env}]}]),
        );
        file.to_string_lossy().into_owned()
    }

    fn describe(&self, service: &str) -> Value {
        self.json(&["service", "describe", service, "--json"])
    }

    /// The tasks of the service, any status.
    fn tasks(&self, service: &str) -> Vec<Value> {
        let all = self.json(&["task", "ls", "--json"]);
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|t| str_field(t, "group") == format!("service:{service}"))
            .cloned()
            .collect()
    }

    /// Its tasks RUNNING and desired RUNNING.
    fn running(&self, service: &str) -> Vec<Value> {
        self.tasks(service)
            .into_iter()
            .filter(|t| {
                str_field(t, "lastStatus") == "RUNNING"
                    && str_field(t, "desiredStatus") == "RUNNING"
            })
            .collect()
    }

    fn wait_service(&self, service: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("service {service}: {what}"), DEADLINE, || {
            let d = self.describe(service);
            if done(&d) {
                Ok(d)
            } else {
                Err(format!("service: {d}"))
            }
        })
    }

    /// `service create … --wait --json`, which must succeed.
    fn create(&self, args: &[&str]) -> Value {
        let mut all = vec!["service", "create"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--min-healthy-time", "1s", "--wait", "--json"]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "`berth {}` failed\n{}",
            all.join(" "),
            describe_output(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", said(&out)))
    }
}

fn instances_of(tasks: &[Value]) -> BTreeSet<String> {
    tasks
        .iter()
        .map(|t| str_field(t, "instanceId").to_owned())
        .collect()
}

fn primary(d: &Value) -> Value {
    list_of(d, "deployments")
        .into_iter()
        .find(|x| str_field(x, "status") == "PRIMARY")
        .unwrap_or_else(|| panic!("no PRIMARY deployment: {d}"))
}

#[test]
fn a_replica_service_spreads_replaces_what_dies_and_scales_in() {
    let three = Three::start();
    let file = three.definition("web", "1");
    let d = three.create(&["web", "--task-definition", &file, "--desired-count", "3"]);
    assert_eq!(d["runningCount"], 3, "{d}");
    assert_eq!(str_field(&primary(&d), "rolloutState"), "COMPLETED", "{d}");
    let steady = list_of(&d, "events");
    assert!(
        str_field(&steady[0], "message").ends_with("has reached a steady state."),
        "{d}"
    );
    // Spread on instanceId: one task on each of the three hosts.
    let running = three.running("web");
    assert_eq!(running.len(), 3, "{running:?}");
    assert_eq!(instances_of(&running).len(), 3, "{running:?}");
    let deployment = str_field(&primary(&d), "id").to_owned();
    assert!(
        running
            .iter()
            .all(|t| str_field(t, "startedBy") == deployment)
    );

    // A container killed outside berth: its task stops and a new one
    // takes its place.
    let victim = running[0].clone();
    let victim_id = str_field(&victim, "taskId").to_owned();
    let runtime = str_field(&list_of(&victim, "containers")[0], "runtimeId").to_owned();
    docker_ok(&["kill", &runtime]);
    three.fleet.server.wait_task_status(&victim_id, "STOPPED");
    wait_for("a replacement task RUNNING", DEADLINE, || {
        let now = three.running("web");
        let ids: Vec<&str> = now.iter().map(|t| str_field(t, "taskId")).collect();
        if now.len() == 3 && !ids.contains(&victim_id.as_str()) {
            Ok(())
        } else {
            Err(format!("running: {ids:?}"))
        }
    });

    // Scale in to 1.
    let out = three.cli(&["service", "update", "web", "--desired-count", "1", "--wait"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    wait_for("one task running", DEADLINE, || {
        let n = three.running("web").len();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} running"))
        }
    });
    let scaled: Vec<Value> = three
        .tasks("web")
        .into_iter()
        .filter(|t| str_field(t, "stoppedReason").starts_with("Scaled in"))
        .collect();
    assert_eq!(scaled.len(), 2, "{:?}", three.tasks("web"));

    // Delete: the last task stops, the service becomes INACTIVE.
    let out = three.cli(&["service", "delete", "web", "--force"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    three.wait_service("web", "INACTIVE", |d| str_field(d, "status") == "INACTIVE");
    assert!(three.running("web").is_empty());
}

#[test]
fn a_new_revision_rolls_out_and_a_failing_one_is_rolled_back_by_the_circuit_breaker() {
    let three = Three::start();
    let v1 = three.definition("roll", "1");
    three.create(&[
        "roll",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--circuit-breaker",
        "rollback",
    ]);
    let family = three.fleet.family("roll");

    // Revision 2: every task replaced, the old ones stopped with the reason.
    let v2 = three.definition("roll", "2");
    let out = three.cli(&[
        "service",
        "update",
        "roll",
        "--task-definition",
        &v2,
        "--wait",
        "--json",
    ]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let running = three.running("roll");
    assert_eq!(running.len(), 2, "{running:?}");
    for t in &running {
        assert!(
            str_field(t, "taskDefinitionArn").ends_with(&format!("{family}:2")),
            "{t}"
        );
    }
    let replaced = three
        .tasks("roll")
        .into_iter()
        .filter(|t| str_field(t, "stoppedReason").starts_with("Replaced by a task of deployment"))
        .count();
    assert_eq!(replaced, 2);

    // Revision 3 exits at once: the breaker fails the deployment and goes
    // back to revision 2; --wait says so and exits non-zero.
    let bad = three.fleet.task_def_file(
        &family,
        json!([{"name": "app", "essential": true, "command": ["sh", "-c", "exit 3"]}]),
    );
    let bad = bad.to_string_lossy().into_owned();
    let out = three.cli(&[
        "service",
        "update",
        "roll",
        "--task-definition",
        &bad,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("did not complete") || err.contains("failed"),
        "{err}"
    );
    let d = three.wait_service("roll", "steady on revision 2 again", |d| {
        str_field(d, "taskDefinition") == format!("{family}:2")
            && str_field(&primary(d), "rolloutState") == "COMPLETED"
            && d["runningCount"] == 2
    });
    let failed = list_of(&d, "events")
        .iter()
        .any(|e| str_field(e, "message").contains("deployment failed"));
    assert!(failed, "no failure event: {d}");
}

#[test]
fn a_daemon_runs_on_every_host_and_leaves_a_drained_one() {
    let three = Three::start();
    let file = three.definition("daemon", "1");
    let d = three.create(&[
        "daemon",
        "--task-definition",
        &file,
        "--scheduling-strategy",
        "DAEMON",
    ]);
    assert_eq!(d["runningCount"], 3, "{d}");
    let running = three.running("daemon");
    assert_eq!(instances_of(&running).len(), 3, "{running:?}");

    let drained = three.more[0].instance_id().to_owned();
    let out = three.cli(&["instance", "drain", &drained]);
    assert!(out.status.success(), "{}", describe_output(&out));
    wait_for("the drained host's daemon task stopped", DEADLINE, || {
        let on: Vec<Value> = three
            .tasks("daemon")
            .into_iter()
            .filter(|t| str_field(t, "instanceId") == drained)
            .collect();
        if on.iter().all(|t| str_field(t, "lastStatus") == "STOPPED") {
            Ok(())
        } else {
            Err(format!("{on:?}"))
        }
    });
    assert_eq!(three.running("daemon").len(), 2);
    let out = three.cli(&["instance", "activate", &drained]);
    assert!(out.status.success(), "{}", describe_output(&out));
    wait_for("a daemon task on the host again", DEADLINE, || {
        let on = three
            .running("daemon")
            .into_iter()
            .filter(|t| str_field(t, "instanceId") == drained)
            .count();
        if on == 1 {
            Ok(())
        } else {
            Err(format!("{on} running there"))
        }
    });
}

#[test]
fn the_tasks_of_a_lost_host_are_replaced_and_stopped_when_it_returns() {
    let mut three = Three::start();
    let file = three.definition("lost", "1");
    three.create(&[
        "lost",
        "--task-definition",
        &file,
        "--desired-count",
        "2",
        "--lost-after",
        "2s",
    ]);
    let before = three.running("lost");
    let gone = str_field(&before[0], "instanceId").to_owned();
    let orphan = str_field(&before[0], "taskId").to_owned();
    // The agent crashes; its container keeps running, unseen.
    three.agent(&gone).kill();
    three.fleet.server.wait_disconnected(&gone);
    wait_for(
        "two tasks running away from the lost host",
        DEADLINE,
        || {
            let now = three.running("lost");
            let elsewhere = now
                .iter()
                .filter(|t| str_field(t, "instanceId") != gone)
                .count();
            if elsewhere == 2 {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    );
    // The host comes back: the surplus task it still runs is stopped.
    three.agent(&gone).start();
    three.fleet.server.wait_connected(&gone);
    let t = three.fleet.server.wait_task_status(&orphan, "STOPPED");
    assert!(str_field(&t, "stoppedReason").contains("came back"), "{t}");
    wait_for("two tasks running", DEADLINE, || {
        let n = three.running("lost").len();
        if n == 2 { Ok(()) } else { Err(format!("{n}")) }
    });
}
