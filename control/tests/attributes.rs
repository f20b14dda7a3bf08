//! `berth attribute put|delete|ls` with the real `berth` binary against the
//! real server (in-process, on loopback), a fake agent's Hello giving the
//! agent's attributes.

mod common;

use std::process::Output;

use berth_control::{Server, ServerConfig};
use common::*;
use serde_json::Value;

fn json(out: &Output) -> Result<Value> {
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Fails unless the command exited 1 with `needle` on stderr.
fn refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(needle),
        "stderr lacks {needle:?}: {}",
        text(&out.stderr)
    );
}

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
    let listed = json(&berth(&server, &["attribute", "ls", "--json"]).await?)?;
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
    let described = json(&berth(&server, &["instance", "describe", &id, "--json"]).await?)?;
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
        refused(&berth(&server, &argv).await?, needle);
    }
    let long = format!("zone={}", "v".repeat(129));
    refused(
        &berth(&server, &["attribute", "put", &id, &long]).await?,
        "use 1 to 128",
    );
    let eleven: Vec<String> = (0..11).map(|n| format!("a{n}=v")).collect();
    let mut argv = vec!["attribute", "put", id.as_str()];
    argv.extend(eleven.iter().map(String::as_str));
    refused(&berth(&server, &argv).await?, "at most 10");
    // The control plane's own refusals.
    refused(
        &berth(&server, &["attribute", "put", "i-nope", "zone=a"]).await?,
        "no instance i-nope",
    );
    assert!(
        berth(&server, &["cluster", "create", "edge"])
            .await?
            .status
            .success()
    );
    refused(
        &berth(
            &server,
            &["attribute", "put", &id, "zone=a", "--cluster", "edge"],
        )
        .await?,
        &format!("instance {id} is not in cluster edge (it is in default)"),
    );
    refused(
        &berth(&server, &["attribute", "delete", &id, "team", "nope"]).await?,
        &format!("instance {id} has no attribute nope"),
    );
    refused(
        &berth(&server, &["attribute", "ls", "--cluster", "nope"]).await?,
        "no cluster nope",
    );
    let edge = json(&berth(&server, &["attribute", "ls", "--cluster", "edge", "--json"]).await?)?;
    assert_eq!(edge, serde_json::json!([]));
    let listed = json(&berth(&server, &["attribute", "ls", "--instance", &id, "--json"]).await?)?;
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
    let deleted = json(&berth(&server, &["attribute", "delete", &id, "zone", "--json"]).await?)?;
    let zone: Vec<&Value> = deleted["attributes"]
        .as_array()
        .map(|a| a.iter().filter(|x| x["name"] == "zone").collect())
        .unwrap_or_default();
    assert_eq!(zone[0]["value"], "from-agent");

    // Kept across a restart of the control plane.
    drop(agent);
    server.shutdown().await?;
    let server = Server::start(ServerConfig::loopback(&data)).await?;
    let listed = json(&berth(&server, &["attribute", "ls", "--instance", &id, "--json"]).await?)?;
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
    refused(
        &berth(&server, &["attribute", "put", &id, "zone=a"]).await?,
        "deregistered",
    );
    let listed = json(&berth(&server, &["attribute", "ls", "--json"]).await?)?;
    assert!(of(&listed, &id).is_empty(), "{listed}");
    server.shutdown().await?;
    Ok(())
}
