//! Where service tasks go, end to end: one control plane, three real agents
//! on the local Docker Engine. Strategies (binpack), constraints (memberOf
//! on a custom attribute, distinctInstance), the agents' policy published
//! as attributes, and draining.

use berth_e2e::three::{
    alive, assert_within_bounds, instances_of, per_instance, primary, spread_of, summary, task_ids,
};
use berth_e2e::{DEADLINE, LONG_RUNNING, Three, list_of, str_field, task_def, wait_for};
use serde_json::{Value, json};

#[test]
fn binpack_memory_fills_one_instance_before_the_next() {
    let three = Three::start();
    let free = three
        .fleet
        .server
        .instances()
        .iter()
        .map(|i| i["remainingResources"]["memory"].as_i64().unwrap_or(0))
        .min()
        .unwrap_or(0);
    assert!(free >= 500, "instances with {free} MiB free");
    // Two such tasks fit on an instance, three do not.
    let memory = free * 2 / 5;
    let file = three.definition_of(
        "pack",
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING, "memory": memory}]),
    );
    three.create(&[
        "pack",
        "--task-definition",
        &file,
        "--desired-count",
        "3",
        "--placement-strategy",
        "binpack:memory",
    ]);
    let running = three.running("pack");
    assert_eq!(spread_of(&running), vec![1, 2], "{:?}", summary(&running));
    let d = three.describe("pack");
    assert_eq!(
        d["placementStrategy"],
        json!([{"type": "binpack", "field": "memory"}]),
        "{d}"
    );
}

#[test]
fn member_of_a_custom_attribute_places_only_on_the_instances_that_have_it() {
    let three = Three::start();
    let ids = three.instance_ids();
    three.ok(&["attribute", "put", &ids[0], "zone=a"]);
    three.ok(&["attribute", "put", &ids[1], "zone=a"]);
    three.ok(&["attribute", "put", &ids[2], "zone=b"]);
    let listed = three.json(&["attribute", "ls", "--instance", &ids[2], "--json"]);
    assert!(
        list_of(&listed, "attributes")
            .iter()
            .any(|a| str_field(a, "name") == "zone" && str_field(a, "value") == "b"),
        "{listed}"
    );

    let file = three.definition("zoned", "1");
    three.create(&[
        "zoned",
        "--task-definition",
        &file,
        "--desired-count",
        "4",
        "--placement-constraint",
        "memberOf:attribute:zone == a",
    ]);
    let running = three.running("zoned");
    let per = per_instance(&running);
    // Spread over the two of zone a, none on zone b.
    assert_eq!(
        per.keys().cloned().collect::<Vec<_>>(),
        {
            let mut a = vec![ids[0].clone(), ids[1].clone()];
            a.sort();
            a
        },
        "{:?}",
        summary(&running)
    );
    assert!(per.values().all(|&n| n == 2), "{:?}", summary(&running));
}

#[test]
fn distinct_instance_with_more_tasks_than_instances_places_one_on_each_and_says_why() {
    let three = Three::start();
    let file = three.definition("distinct", "1");
    three.ok(&[
        "service",
        "create",
        "distinct",
        "--task-definition",
        &file,
        "--desired-count",
        "4",
        "--placement-constraint",
        "distinctInstance",
        "--min-healthy-time",
        "1s",
    ]);
    let event = three.wait_event("distinct", "unable to place", |m| {
        m.starts_with(
            "service (distinct) was unable to place a task because no container instance met all of its requirements.",
        )
    });
    assert!(event.contains("distinctInstance"), "{event}");
    let running = three.wait_settled("distinct", 3);
    assert_eq!(instances_of(&running).len(), 3, "{:?}", summary(&running));
    let d = three.describe("distinct");
    assert_eq!(d["desiredCount"], 4, "{d}");
    assert_eq!(d["runningCount"], 3, "{d}");
    assert_eq!(
        str_field(&primary(&d), "rolloutState"),
        "IN_PROGRESS",
        "{d}"
    );
    // Said once, not at every pass.
    let events = three.events("distinct");
    assert_eq!(
        events
            .iter()
            .filter(|m| m.contains("unable to place"))
            .count(),
        1,
        "{events:?}"
    );
}

/// `berth.policy.allow_host_network` of every instance, from `berth
/// attribute ls --json`.
fn host_network_policy(three: &Three) -> Vec<(String, String)> {
    let listed = three.json(&["attribute", "ls", "--json"]);
    let mut v: Vec<(String, String)> = list_of(&listed, "attributes")
        .iter()
        .filter(|a| str_field(a, "name") == "berth.policy.allow_host_network")
        .map(|a| {
            (
                str_field(a, "targetId").to_owned(),
                str_field(a, "value").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A task that needs a policy switch goes only to the hosts whose agent
/// allows it. (`networkMode: host` and `allow_host_network` rather than
/// `privileged`: a privileged container cannot start where the test
/// machine's Docker Engine itself runs without every capability.)
#[test]
fn a_task_the_policy_refuses_by_default_goes_only_where_the_agent_allows_it() {
    let mut three = Three::start();
    let ids = three.instance_ids();
    let allowed = ids[1].clone();
    three.agent(&allowed).configure("allow_host_network = true");
    three.fleet.server.wait_connected(&allowed);
    let mut expected: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            let v = if *id == allowed { "true" } else { "false" };
            (id.clone(), v.to_owned())
        })
        .collect();
    expected.sort();
    wait_for("the policy published as attributes", DEADLINE, || {
        let now = host_network_policy(&three);
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });

    let family = three.fleet.family("hostnet");
    let mut def: Value = serde_json::from_str(&task_def(
        three.fleet.image.tag(),
        &family,
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
    ))
    .unwrap_or_else(|e| panic!("task_def: {e}"));
    def["networkMode"] = json!("host");
    let file = three
        .fleet
        .files
        .write("hostnet.json", &def.to_string())
        .to_string_lossy()
        .into_owned();
    three.create(&[
        "hostnet",
        "--task-definition",
        &file,
        "--desired-count",
        "2",
    ]);
    // Both on the one host that allows it (spread would use two), and none
    // ever tried elsewhere (no task refused by an agent's policy).
    let tasks = three.tasks("hostnet");
    assert_eq!(tasks.len(), 2, "{:?}", summary(&tasks));
    assert!(
        tasks
            .iter()
            .all(|t| str_field(t, "instanceId") == allowed
                && str_field(t, "lastStatus") == "RUNNING"),
        "{:?}",
        summary(&tasks)
    );
}

#[test]
fn draining_moves_service_tasks_within_the_bounds_and_leaves_a_standalone_task() {
    let three = Three::start();
    let file = three.definition("moving", "1");
    three.create(&[
        "moving",
        "--task-definition",
        &file,
        "--desired-count",
        "3",
        "--min-healthy-percent",
        "50",
        "--max-percent",
        "100",
    ]);
    // A standalone task on the host that is drained next.
    let drained = three.fleet.agent.instance_id().to_owned();
    let standalone_file = three.fleet.task_def_file(
        &three.fleet.family("alone"),
        json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
    );
    let standalone = three.fleet.run_task_wait(&standalone_file);
    let standalone_id = str_field(&standalone, "taskId").to_owned();
    let before = three.running("moving");
    let leaving: Vec<Value> = before
        .iter()
        .filter(|t| str_field(t, "instanceId") == drained)
        .cloned()
        .collect();
    assert_eq!(leaving.len(), 1, "{:?}", summary(&before));

    // min 50 / max 100 of 3: at most 3 alive, at least 2 running while the
    // task moves.
    let (moved, samples) = three.watch("moving", || {
        three.ok(&["instance", "drain", &drained]);
        wait_for("the service's tasks off the drained host", DEADLINE, || {
            let tasks = three.tasks("moving");
            let alive: Vec<Value> = tasks.iter().filter(|t| alive(t)).cloned().collect();
            let on_drained = alive.iter().any(|t| str_field(t, "instanceId") == drained);
            if alive.len() == 3 && !on_drained && alive.iter().all(berth_e2e::three::serving) {
                Ok(alive)
            } else {
                Err(format!("{:?}", summary(&tasks)))
            }
        })
    });
    assert_within_bounds(&samples, 2, 3);
    assert_eq!(instances_of(&moved).len(), 2, "{:?}", summary(&moved));
    let gone = three.fleet.server.task(str_field(&leaving[0], "taskId"));
    assert_eq!(str_field(&gone, "lastStatus"), "STOPPED", "{gone}");
    assert!(
        str_field(&gone, "stoppedReason").contains("draining"),
        "{gone}"
    );
    // The other two kept running throughout.
    let stayed: Vec<String> = before
        .iter()
        .filter(|t| str_field(t, "instanceId") != drained)
        .map(|t| str_field(t, "taskId").to_owned())
        .collect();
    assert!(
        stayed.iter().all(|id| task_ids(&moved).contains(id)),
        "{:?}",
        summary(&moved)
    );

    // The standalone task stays where it is.
    let t = three.fleet.server.task(&standalone_id);
    assert_eq!(str_field(&t, "lastStatus"), "RUNNING", "{t}");
    assert_eq!(str_field(&t, "desiredStatus"), "RUNNING", "{t}");
    let host = three.fleet.server.instance(&drained);
    assert_eq!(
        host.as_ref().map(|i| str_field(i, "status")),
        Some("DRAINING"),
        "{host:?}"
    );
}
