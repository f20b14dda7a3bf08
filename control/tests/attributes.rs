//! `berth attribute put|delete|ls` with the real `berth` binary against the
//! real server (in-process, on loopback), a fake agent's Hello giving the
//! agent's attributes.

mod common;

use berth_control::{Server, ServerConfig};
use common::*;
use serde_json::Value;

/// `(name, value)` of the attributes of `id` in `berth attribute ls --json`.
fn of(list: &Value, id: &str) -> Vec<(String, String)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|x| x["targetId"] == id)
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or_default().to_owned(),
                        x["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const AGENT_ATTRIBUTES: &[(&str, &str)] = &[
    ("ecs.os-type", "linux"),
    ("ecs.cpu-architecture", "x86_64"),
    ("berth.policy.allow_privileged", "false"),
    ("zone", "from-agent"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_are_put_listed_deleted_and_kept_across_a_restart() -> Result {
    let dir = private_dir()?;
    let data = dir.path().join("data");
    let server = Server::start(ServerConfig::loopback(&data)).await?;
    let agent = FakeAgent::start_with_attributes(&server, 2048, 4096, AGENT_ATTRIBUTES).await?;
    let id = agent.instance_id.clone();

    let put = berth(
        &server,
        &["attribute", "put", &id, "zone=rack-3", "team=web"],
    )
    .await?;
    assert!(put.status.success(), "stderr: {}", text(&put.stderr));
    assert_eq!(
        text(&put.stdout),
        format!("instance {id}: attributes zone, team put\n")
    );
    let listed = json_of(&berth(&server, &["attribute", "ls", "--json"]).await?)?;
    // The agent's, with the custom ones over them, by name.
    assert_eq!(
        of(&listed, &id),
        pairs(&[
            ("berth.policy.allow_privileged", "false"),
            ("ecs.cpu-architecture", "x86_64"),
            ("ecs.os-type", "linux"),
            ("team", "web"),
            ("zone", "rack-3"),
        ])
    );
    assert_eq!(listed[0]["targetType"], "container-instance");
    let described = json_of(&berth(&server, &["instance", "describe", &id, "--json"]).await?)?;
    let zone: Vec<&Value> = described["attributes"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["name"] == "zone").collect())
        .unwrap_or_default();
    assert_eq!(zone.len(), 1, "{described}");
    assert_eq!(zone[0]["value"], "rack-3");
    let table = berth(&server, &["attribute", "ls", "--instance", &id]).await?;
    assert!(table.status.success(), "stderr: {}", text(&table.stderr));
    assert!(
        text(&table.stdout).starts_with("INSTANCE")
            && text(&table.stdout).contains("team")
            && text(&table.stdout).contains("rack-3"),
        "{}",
        text(&table.stdout)
    );

    // Bad input: named, exit 1, nothing of the call stored.
    for (args, needle) in [
        (
            vec!["ok=1", "zone"],
            "attribute \"zone\": expected NAME=VALUE",
        ),
        (
            vec!["ok=1", "zone=rack 4"],
            "attribute zone: value \"rack 4\"",
        ),
        (vec!["ecs.os-type=windows"], "built-in attributes"),
        (vec!["berth.hostname=x"], "built-in attributes"),
    ] {
        let mut argv = vec!["attribute", "put", id.as_str()];
        argv.extend(args.iter().copied());
        assert_refused(&berth(&server, &argv).await?, needle);
    }
    let long = format!("zone={}", "v".repeat(129));
    assert_refused(
        &berth(&server, &["attribute", "put", &id, &long]).await?,
        "use 1 to 128",
    );
    let eleven: Vec<String> = (0..11).map(|n| format!("a{n}=v")).collect();
    let mut argv = vec!["attribute", "put", id.as_str()];
    argv.extend(eleven.iter().map(String::as_str));
    assert_refused(&berth(&server, &argv).await?, "at most 10");
    // The control plane's own refusals.
    assert_refused(
        &berth(&server, &["attribute", "put", "i-nope", "zone=a"]).await?,
        "no instance i-nope",
    );
    assert!(
        berth(&server, &["cluster", "create", "edge"])
            .await?
            .status
            .success()
    );
    assert_refused(
        &berth(
            &server,
            &["attribute", "put", &id, "zone=a", "--cluster", "edge"],
        )
        .await?,
        &format!("instance {id} is not in cluster edge (it is in default)"),
    );
    assert_refused(
        &berth(&server, &["attribute", "delete", &id, "team", "nope"]).await?,
        &format!("instance {id} has no attribute nope"),
    );
    assert_refused(
        &berth(&server, &["attribute", "ls", "--cluster", "nope"]).await?,
        "no cluster nope",
    );
    let edge =
        json_of(&berth(&server, &["attribute", "ls", "--cluster", "edge", "--json"]).await?)?;
    assert_eq!(edge, serde_json::json!([]));
    let listed =
        json_of(&berth(&server, &["attribute", "ls", "--instance", &id, "--json"]).await?)?;
    let custom: Vec<(String, String)> = of(&listed, &id)
        .into_iter()
        .filter(|(k, _)| k == "team" || k == "zone" || k == "ok")
        .collect();
    assert_eq!(
        custom,
        pairs(&[("team", "web"), ("zone", "rack-3")]),
        "nothing of a refused call was stored"
    );

    // Deleting the custom zone shows the agent's again.
    let deleted = json_of(&berth(&server, &["attribute", "delete", &id, "zone", "--json"]).await?)?;
    let zone: Vec<&Value> = deleted["attributes"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["name"] == "zone").collect())
        .unwrap_or_default();
    assert_eq!(zone[0]["value"], "from-agent");

    // Kept across a restart of the control plane.
    drop(agent);
    server.shutdown().await?;
    let server = Server::start(ServerConfig::loopback(&data)).await?;
    let listed =
        json_of(&berth(&server, &["attribute", "ls", "--instance", &id, "--json"]).await?)?;
    let got = of(&listed, &id);
    assert!(got.contains(&("team".into(), "web".into())), "{got:?}");
    assert!(
        got.contains(&("zone".into(), "from-agent".into())),
        "{got:?}"
    );

    // Never on a deregistered instance.
    assert!(
        berth(&server, &["instance", "deregister", &id])
            .await?
            .status
            .success()
    );
    assert_refused(
        &berth(&server, &["attribute", "put", &id, "zone=a"]).await?,
        "deregistered",
    );
    let listed = json_of(&berth(&server, &["attribute", "ls", "--json"]).await?)?;
    assert!(of(&listed, &id).is_empty(), "{listed}");
    server.shutdown().await?;
    Ok(())
}

/// `task run` places by the instances' attributes: a `memberOf` constraint
/// on a custom attribute put by the operator, `distinctInstance`, a spread
/// over an attribute, and the agent's policy attributes for what the
/// definition needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_run_places_by_attributes_constraints_and_strategies() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    // a: the most free memory, no privileged containers; b: privileged ones.
    let a = FakeAgent::start_with_attributes(
        &server,
        4096,
        8192,
        &[
            ("berth.policy.allow_privileged", "false"),
            ("zone", "rack-1"),
        ],
    )
    .await?;
    let b = FakeAgent::start_with_attributes(
        &server,
        4096,
        4096,
        &[
            ("berth.policy.allow_privileged", "true"),
            ("zone", "rack-1"),
        ],
    )
    .await?;
    let (a_id, b_id) = (a.instance_id.clone(), b.instance_id.clone());
    let td = dir.path().join("task.json");
    std::fs::write(&td, TASK_DEFINITION)?;
    let td = td.to_string_lossy().into_owned();
    let run = |extra: &[&str]| {
        let mut argv = vec!["task", "run", "--task-definition", td.as_str(), "--json"];
        argv.extend_from_slice(extra);
        argv.iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<String>>()
    };
    let run_on = async |extra: &[&str]| -> Result<String> {
        let argv = run(extra);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let t = json_of(&berth(&server, &argv).await?)?;
        Ok(t["instanceId"].as_str().unwrap_or_default().to_owned())
    };

    // Without a constraint: the most free memory.
    assert_eq!(run_on(&[]).await?, a_id);
    // The operator's custom zone wins over the agent's.
    let put = berth(&server, &["attribute", "put", &b_id, "zone=rack-3"]).await?;
    assert!(put.status.success(), "stderr: {}", text(&put.stderr));
    let rack3 = [
        "--placement-constraint",
        "memberOf:attribute:zone == rack-3",
    ];
    assert_eq!(run_on(&rack3).await?, b_id);
    assert_eq!(run_on(&rack3).await?, b_id);
    let argv = run(&[
        "--placement-constraint",
        "memberOf:attribute:zone == rack-9",
    ]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_refused(
        &berth(&server, &argv).await?,
        "no container instance met all of its requirements",
    );
    // Refused up front: a strategy that does not parse, too many of them.
    let argv = run(&["--placement-strategy", "spread:nothing"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_refused(&berth(&server, &argv).await?, "placement strategy");
    let mut argv = run(&[]);
    for _ in 0..6 {
        argv.extend(["--placement-strategy".to_owned(), "random".to_owned()]);
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    assert_refused(&berth(&server, &argv).await?, "at most 5");

    // distinctInstance: one task of a new group per instance, so the third
    // of three fits nowhere.
    let argv = run(&[
        "--group",
        "batch",
        "--count",
        "3",
        "--placement-constraint",
        "distinctInstance",
    ]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = berth(&server, &argv).await?;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let body: Value = serde_json::from_slice(&out.stdout)?;
    let mut placed: Vec<&str> = body["tasks"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["instanceId"].as_str()).collect())
        .unwrap_or_default();
    placed.sort_unstable();
    let mut both = vec![a_id.as_str(), b_id.as_str()];
    both.sort_unstable();
    assert_eq!(placed, both, "{body}");
    assert!(
        text(&out.stderr).contains("1 of 3 tasks could not be started"),
        "{}",
        text(&out.stderr)
    );
    // spread over the zone: rack-1 (a) and rack-3 (b) take turns.
    let mut zones = Vec::new();
    for _ in 0..2 {
        zones.push(
            run_on(&[
                "--group",
                "spread",
                "--placement-strategy",
                "spread:attribute:zone",
            ])
            .await?,
        );
    }
    zones.sort_unstable();
    assert_eq!(zones, both);

    // A privileged definition goes only where the agent's policy allows it,
    // although a has more free memory.
    let privileged = dir.path().join("privileged.json");
    std::fs::write(
        &privileged,
        r#"{"family": "root", "containerDefinitions": [
            {"name": "root", "image": "busybox", "essential": true, "memory": 64, "privileged": true}
        ]}"#,
    )?;
    let privileged = privileged.to_string_lossy().into_owned();
    let t = json_of(
        &berth(
            &server,
            &["task", "run", "--task-definition", &privileged, "--json"],
        )
        .await?,
    )?;
    assert_eq!(t["instanceId"], b_id.as_str());
    assert_refused(
        &berth(
            &server,
            &[
                "task",
                "run",
                "--task-definition",
                &privileged,
                "--instance",
                &a_id,
            ],
        )
        .await?,
        "berth.policy.allow_privileged = true",
    );
    server.shutdown().await?;
    Ok(())
}
