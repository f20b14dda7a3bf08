//! Services end to end: one control plane, three real agents on the local
//! Docker Engine (three hosts), real containers. The service controller
//! keeps the desired count, spreads, replaces what dies, rolls out a new
//! revision, rolls back one that fails, runs daemons and replaces the
//! tasks of a lost host (or, with `--lost-after 0`, does not).

use std::collections::{BTreeMap, BTreeSet};

use berth_e2e::three::{
    alive, assert_within_bounds, instances_of, per_instance, primary, saw_side_by_side, serving,
    spread_of, summary, task_ids,
};
use berth_e2e::{
    DEADLINE, LONG_RUNNING, Proxy, Registry, RunId, Three, describe_output, docker, docker_ok,
    list_of, str_field, wait_for,
};
use serde_json::{Value, json};

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

/// Every choice of `n` of `tasks` (all RUNNING and healthy) that SPEC §6
/// "Scale in" allows: one by one from the instance with the most tasks of
/// the service, the newest first (`createdAt`; a tie allows either).
fn scale_in_choices(
    tasks: &[&Value],
    count: &BTreeMap<String, usize>,
    n: usize,
) -> Vec<BTreeSet<String>> {
    if n == 0 {
        return vec![BTreeSet::new()];
    }
    let key = |t: &Value| {
        (
            count.get(str_field(t, "instanceId")).copied().unwrap_or(0),
            str_field(t, "createdAt").to_owned(),
        )
    };
    let Some(best) = tasks.iter().map(|t| key(t)).max() else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        if key(t) != best {
            continue;
        }
        let mut rest = tasks.to_vec();
        rest.remove(i);
        let mut fewer = count.clone();
        if let Some(c) = fewer.get_mut(str_field(t, "instanceId")) {
            *c -= 1;
        }
        for mut choice in scale_in_choices(&rest, &fewer, n - 1) {
            choice.insert(str_field(t, "taskId").to_owned());
            all.push(choice);
        }
    }
    all
}

#[test]
fn scaling_out_and_in_stops_the_newest_tasks_of_the_fullest_instances() {
    let three = Three::start();
    let file = three.definition("scale", "1");
    three.create(&["scale", "--task-definition", &file, "--desired-count", "3"]);
    let first = task_ids(&three.running("scale"));

    // Out to 5: the two new tasks go to two different hosts (spread).
    three.update("scale", &["--desired-count", "5"]);
    let five = three.wait_settled("scale", 5);
    assert_eq!(five.len(), 5, "{:?}", summary(&five));
    assert_eq!(spread_of(&five), vec![1, 2, 2], "{:?}", summary(&five));
    assert!(task_ids(&five).is_superset(&first));

    // In to 2: three stop, the newest of the fullest hosts first.
    let allowed = scale_in_choices(&five.iter().collect::<Vec<_>>(), &per_instance(&five), 3);
    three.update("scale", &["--desired-count", "2"]);
    let left = three.wait_settled("scale", 2);
    let tasks = three.tasks("scale");
    let stopped: BTreeSet<String> = tasks
        .iter()
        .filter(|t| !alive(t))
        .map(|t| str_field(t, "taskId").to_owned())
        .collect();
    assert!(
        allowed.contains(&stopped),
        "stopped {stopped:?}, SPEC allows one of {allowed:?}: {:?}",
        summary(&tasks)
    );
    for t in tasks.iter().filter(|t| !alive(t)) {
        assert!(
            str_field(t, "stoppedReason").starts_with("Scaled in"),
            "{t}"
        );
    }
    assert_eq!(instances_of(&left).len(), 2, "{:?}", summary(&left));
}

/// Removes a local image tag on drop (the one the agents pulled).
struct RemoveTag(String);

impl Drop for RemoveTag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}

#[test]
fn scaling_in_stops_a_task_not_yet_running_before_the_newest_of_the_fullest_instance() {
    let run = RunId::new();
    let mut registry = Registry::start(&run);
    let proxy = Proxy::start(registry.addr());
    let three = Three::start_with(run);
    // The image through a proxy that can hold a pull forever.
    let pushed = registry.push(three.fleet.image.tag(), "busybox");
    let image = pushed
        .reference
        .replacen(registry.addr(), &proxy.addr().to_string(), 1);
    let _pulled = RemoveTag(image.clone());
    let ids = three.instance_ids();
    three.ok(&["attribute", "put", &ids[0], "zone=a"]);
    three.ok(&["attribute", "put", &ids[1], "zone=a"]);
    three.ok(&["attribute", "put", &ids[2], "zone=b"]);
    let file = three.definition_of(
        "pending",
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING, "image": image}]),
    );
    three.create(&[
        "pending",
        "--task-definition",
        &file,
        "--desired-count",
        "4",
        "--placement-constraint",
        "memberOf:attribute:zone == a",
    ]);
    let four = three.running("pending");
    assert_eq!(spread_of(&four), vec![2, 2], "{:?}", summary(&four));

    // The third host joins the zone; its pulls hang: a fifth task there
    // stays PENDING, on the host with the fewest tasks, and is the newest.
    three.ok(&["attribute", "put", &ids[2], "zone=a"]);
    proxy.blackhole();
    three.ok(&["service", "update", "pending", "--desired-count", "5"]);
    let fifth = wait_for("a fifth task PENDING on the third host", DEADLINE, || {
        let tasks = three.tasks("pending");
        match tasks
            .iter()
            .find(|t| str_field(t, "instanceId") == ids[2] && alive(t))
        {
            Some(t) if str_field(t, "lastStatus") == "PENDING" => Ok(t.clone()),
            _ => Err(format!("{:?}", summary(&tasks))),
        }
    });
    let fifth_id = str_field(&fifth, "taskId").to_owned();

    // Back to 4: the task not yet RUNNING goes, not the newest of a host
    // with two.
    three.ok(&["service", "update", "pending", "--desired-count", "4"]);
    let t = three
        .fleet
        .server
        .wait_task(&fifth_id, "desired STOPPED", |t| {
            str_field(t, "desiredStatus") == "STOPPED"
        });
    // (The agent may have given up the pull already.)
    assert!(t["startedAt"].is_null(), "{t}");
    let tasks = three.tasks("pending");
    let others: Vec<&Value> = tasks
        .iter()
        .filter(|t| str_field(t, "taskId") != fifth_id)
        .collect();
    assert!(
        others.len() == 4 && others.iter().all(|t| serving(t)),
        "{:?}",
        summary(&tasks)
    );
    proxy.heal();
    let t = three.fleet.server.wait_task_status(&fifth_id, "STOPPED");
    assert!(
        str_field(&t, "stoppedReason").starts_with("Scaled in"),
        "{t}"
    );
    let left = three.wait_settled("pending", 4);
    assert_eq!(task_ids(&left), task_ids(&four), "{:?}", summary(&left));
}

/// After `--wait` returned: the primary deployment on `revision` is
/// COMPLETED and alone, `desired` tasks of it run, and the newest event is
/// the steady state.
fn assert_steady(three: &Three, service: &str, revision: &str, desired: usize) {
    let d = three.wait_service(service, "one COMPLETED deployment", |d| {
        list_of(d, "deployments").len() == 1
    });
    assert_eq!(str_field(&d, "taskDefinition"), revision, "{d}");
    let p = primary(&d);
    assert_eq!(str_field(&p, "rolloutState"), "COMPLETED", "{d}");
    assert_eq!(str_field(&p, "taskDefinition"), revision, "{d}");
    let running = three.running(service);
    assert_eq!(running.len(), desired, "{:?}", summary(&running));
    assert!(
        running
            .iter()
            .all(|t| str_field(t, "taskDefinitionArn").ends_with(revision)),
        "{:?}",
        summary(&running)
    );
    let events = three.events(service);
    assert_eq!(
        events.first().map(String::as_str),
        Some(format!("service ({service}) has reached a steady state.").as_str()),
        "{events:?}"
    );
}

#[test]
fn rolling_deployments_stay_within_their_minimum_and_maximum() {
    let three = Three::start();
    let family = three.fleet.family("bounds");
    let v1 = three.definition("bounds", "1");
    three.create(&[
        "bounds",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--min-healthy-percent",
        "50",
        "--max-percent",
        "100",
    ]);

    // min 50 / max 100 of 2: at most 2 alive, at least 1 running: an old
    // task stops before a new one starts.
    let v2 = three.definition("bounds", "2");
    let ((), samples) = three.watch("bounds", || {
        three.update("bounds", &["--task-definition", &v2])
    });
    assert_within_bounds(&samples, 1, 2);
    assert!(saw_side_by_side(&samples, &format!("{family}:2")));
    assert_steady(&three, "bounds", &format!("{family}:2"), 2);

    // min 100 / max 200 of 2: at most 4 alive, never fewer than 2 running:
    // new tasks start first.
    let v3 = three.definition("bounds", "3");
    let ((), samples) = three.watch("bounds", || {
        three.update(
            "bounds",
            &[
                "--task-definition",
                &v3,
                "--min-healthy-percent",
                "100",
                "--max-percent",
                "200",
            ],
        )
    });
    assert_within_bounds(&samples, 2, 4);
    assert!(saw_side_by_side(&samples, &format!("{family}:3")));
    let most = samples
        .iter()
        .map(|s| s.iter().filter(|t| alive(t)).count())
        .max();
    assert!(most > Some(2), "new tasks did not start first");
    assert_steady(&three, "bounds", &format!("{family}:3"), 2);
}

#[test]
fn min_100_and_max_100_deadlock_a_deployment_until_the_maximum_is_raised() {
    let three = Three::start();
    let family = three.fleet.family("stuck");
    let v1 = three.definition("stuck", "1");
    three.create(&[
        "stuck",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--min-healthy-percent",
        "100",
        "--max-percent",
        "100",
    ]);
    let before = task_ids(&three.running("stuck"));

    let v2 = three.definition("stuck", "2");
    three.ok(&["service", "update", "stuck", "--task-definition", &v2]);
    three.wait_event("stuck", "deadlock", |m| {
        m == "service (stuck) was unable to stop or start tasks during a deployment because of the service deployment configuration. Update the minimumHealthyPercent or maximumPercent value and try again."
    });
    // Nothing moved: the same two tasks run, no task of revision 2 exists.
    let tasks = three.tasks("stuck");
    assert_eq!(task_ids(&tasks), before, "{:?}", summary(&tasks));
    assert!(tasks.iter().all(serving), "{:?}", summary(&tasks));
    let d = three.describe("stuck");
    let p = primary(&d);
    assert_eq!(
        str_field(&p, "taskDefinition"),
        format!("{family}:2"),
        "{d}"
    );
    assert_eq!(str_field(&p, "rolloutState"), "IN_PROGRESS", "{d}");
    assert_eq!(p["runningCount"], 0, "{d}");

    // Room for one more: the deployment goes through.
    three.update("stuck", &["--max-percent", "150"]);
    assert_steady(&three, "stuck", &format!("{family}:2"), 2);
}

#[test]
fn an_image_that_cannot_be_pulled_fails_the_deployment_and_a_rollback_returns_to_the_last_completed()
 {
    let three = Three::start();
    let family = three.fleet.family("pull");
    let v1 = three.definition("pull", "1");
    let first = three.create(&[
        "pull",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--circuit-breaker",
        "enable",
    ]);
    let completed = str_field(&primary(&first), "id").to_owned();
    let before = task_ids(&three.running("pull"));

    // Revision 2 names a registry port nothing listens on.
    let bad = three.definition_of(
        "pull",
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING,
                "image": "127.0.0.1:1/berth-e2e-missing:1"}]),
    );
    let out = three.cli(&[
        "service",
        "update",
        "pull",
        "--task-definition",
        &bad,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let d = three.describe("pull");
    let p = primary(&d);
    assert_eq!(
        str_field(&p, "taskDefinition"),
        format!("{family}:2"),
        "{d}"
    );
    assert_eq!(str_field(&p, "rolloutState"), "FAILED", "{d}");
    assert!(
        str_field(&p, "rolloutStateReason").contains("tasks failed"),
        "{d}"
    );
    // `enable` only: no rollback, and revision 1 keeps running.
    let events = three.events("pull");
    assert!(
        events.iter().any(|m| m.contains("deployment failed")),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|m| m.contains("rolling back")),
        "{events:?}"
    );
    let running = three.running("pull");
    assert_eq!(task_ids(&running), before, "{:?}", summary(&running));
    let failed = three
        .tasks("pull")
        .into_iter()
        .filter(|t| str_field(t, "taskDefinitionArn").ends_with(&format!("{family}:2")))
        .collect::<Vec<_>>();
    assert!(failed.len() >= 3, "{:?}", summary(&failed));
    assert!(
        failed
            .iter()
            .all(|t| str_field(t, "lastStatus") == "STOPPED"),
        "{:?}",
        summary(&failed)
    );

    // With `rollback`, a new deployment of revision 2 fails again and the
    // service goes back to revision 1's deployment.
    let out = three.cli(&[
        "service",
        "update",
        "pull",
        "--circuit-breaker",
        "rollback",
        "--force-new-deployment",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let d = three.wait_service("pull", "back on revision 1, COMPLETED", |d| {
        str_field(d, "taskDefinition") == format!("{family}:1")
            && str_field(&primary(d), "rolloutState") == "COMPLETED"
            && list_of(d, "deployments").len() == 1
    });
    assert_eq!(primary(&d)["runningCount"], 2, "{d}");
    let events = three.events("pull");
    assert!(
        events
            .iter()
            .any(|m| m == &format!("service (pull) rolling back to deployment {completed}.")),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|m| m.contains("deployment failed"))
            .count(),
        2,
        "{events:?}"
    );
    let running = three.running("pull");
    assert_eq!(running.len(), 2, "{:?}", summary(&running));
    assert!(
        running
            .iter()
            .all(|t| str_field(t, "taskDefinitionArn").ends_with(&format!("{family}:1"))),
        "{:?}",
        summary(&running)
    );
}

#[test]
fn a_daemon_gets_a_task_on_a_new_host_and_a_new_revision_replaces_it_on_every_host() {
    let mut three = Three::start();
    let family = three.fleet.family("agents");
    let v1 = three.definition("agents", "1");
    three.create(&[
        "agents",
        "--task-definition",
        &v1,
        "--scheduling-strategy",
        "DAEMON",
    ]);
    let fourth = three.add_agent();
    wait_for("a daemon task on the fourth host", DEADLINE, || {
        let running = three.running("agents");
        if instances_of(&running).contains(&fourth) && running.len() == 4 {
            Ok(())
        } else {
            Err(format!("{:?}", summary(&running)))
        }
    });
    let d = three.wait_service("agents", "desired 4", |d| d["desiredCount"] == 4);
    assert_eq!(str_field(&primary(&d), "rolloutState"), "COMPLETED", "{d}");

    // Revision 2: on every host the new task starts before the old one
    // stops (the hosts have room for both), so no host is ever without a
    // running task and none ever has more than two.
    let v2 = three.definition("agents", "2");
    let ((), samples) = three.watch("agents", || {
        three.update("agents", &["--task-definition", &v2])
    });
    let hosts = three.instance_ids();
    for (i, s) in samples.iter().enumerate() {
        for h in &hosts {
            let here: Vec<Value> = s
                .iter()
                .filter(|t| str_field(t, "instanceId") == h)
                .cloned()
                .collect();
            let alive_here = here.iter().filter(|t| alive(t)).count();
            let serving_here = here.iter().filter(|t| serving(t)).count();
            assert!(
                alive_here <= 2 && serving_here >= 1,
                "sample {i}, host {h}: {:?}",
                summary(&here)
            );
        }
    }
    assert!(saw_side_by_side(&samples, &format!("{family}:2")));
    assert_steady(&three, "agents", &format!("{family}:2"), 4);
    let running = three.running("agents");
    assert_eq!(instances_of(&running).len(), 4, "{:?}", summary(&running));
}

#[test]
fn with_lost_after_0_the_tasks_of_a_killed_agent_are_not_replaced() {
    let mut three = Three::start();
    let file = three.definition("stay", "1");
    three.create(&[
        "stay",
        "--task-definition",
        &file,
        "--desired-count",
        "2",
        "--lost-after",
        "0",
    ]);
    let before = three.running("stay");
    let gone = str_field(&before[0], "instanceId").to_owned();
    let events_before = three.events("stay");
    three.agent(&gone).kill();
    three.fleet.server.wait_disconnected(&gone);

    // Controller passes happen meanwhile: another service reaches its
    // steady state, which takes its 5 s minimum healthy time (the
    // controller passes at least every 2 s).
    let marker = three.definition("marker", "1");
    three.ok(&[
        "service",
        "create",
        "marker",
        "--task-definition",
        &marker,
        "--desired-count",
        "1",
        "--min-healthy-time",
        "5s",
        "--wait",
    ]);
    let marker_on = instances_of(&three.running("marker"));
    assert!(!marker_on.contains(&gone), "{marker_on:?}");

    // Nothing replaced, nothing stopped, nothing said. (The API shows the
    // task of the disconnected host UNKNOWN.)
    let after = three.tasks("stay");
    assert_eq!(task_ids(&after), task_ids(&before), "{:?}", summary(&after));
    for t in &after {
        let expected = if str_field(t, "instanceId") == gone {
            "UNKNOWN"
        } else {
            "RUNNING"
        };
        assert_eq!(
            str_field(t, "lastStatus"),
            expected,
            "{:?}",
            summary(&after)
        );
        assert_eq!(
            str_field(t, "desiredStatus"),
            "RUNNING",
            "{:?}",
            summary(&after)
        );
    }
    let d = three.describe("stay");
    assert_eq!(str_field(&primary(&d), "rolloutState"), "COMPLETED", "{d}");
    assert_eq!(three.events("stay"), events_before);
    let host = three.fleet.server.instance(&gone);
    assert_eq!(
        host.as_ref().and_then(|i| i.get("agentConnected")),
        Some(&Value::Bool(false)),
        "{host:?}"
    );
}
