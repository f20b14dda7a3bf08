//! `berth service …` against the real server (in-process, on loopback)
//! with fake agents: the service controller places, replaces, scales and
//! rolls out tasks as the agents report them.

mod common;

use berth_control::{RunningServer, Server, ServerConfig};
use berth_proto::v1::server_message::Msg as ServerMsg;
use common::*;
use serde_json::Value;

/// Runs `berth args`, which must succeed, and parses its JSON.
async fn json(server: &RunningServer, args: &[&str]) -> Result<Value> {
    let out = berth(server, args).await?;
    if !out.status.success() {
        return Err(format!("berth {args:?}: {}", text(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `berth args` must fail with exit 1 and say `needle`.
async fn refused(server: &RunningServer, args: &[&str], needle: &str) -> Result {
    let out = berth(server, args).await?;
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "berth {args:?}: stdout {} stderr {err}",
        text(&out.stdout)
    );
    assert!(
        err.contains(needle),
        "berth {args:?}: stderr lacks {needle:?}: {err}"
    );
    Ok(())
}

async fn describe(server: &RunningServer, name: &str) -> Result<Value> {
    json(server, &["service", "describe", name, "--json"]).await
}

/// Waits until the service's description satisfies `done`.
async fn wait_service(
    server: &RunningServer,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let mut last = Value::Null;
    let r = eventually(what, async || {
        let d = describe(server, name).await?;
        if done(&d) {
            return Ok(Some(d));
        }
        last = d;
        Ok(None)
    })
    .await;
    r.map_err(|e| format!("{e}; last description: {last}").into())
}

/// The task ids desired RUNNING in the agent's next assignment (event
/// acknowledgements before it are skipped).
async fn next_tasks(agent: &mut FakeAgent) -> Result<Vec<String>> {
    loop {
        match next(&mut agent.inbound).await? {
            ServerMsg::Assignment(a) => {
                return Ok(a
                    .tasks
                    .into_iter()
                    .filter(|t| t.desired_status == "RUNNING")
                    .map(|t| t.task_id)
                    .collect());
            }
            ServerMsg::EventAck(_) => continue,
            other => return Err(format!("expected an Assignment, got {other:?}").into()),
        }
    }
}

/// Waits for an assignment that desires exactly `n` tasks running.
async fn tasks_until(agent: &mut FakeAgent, n: usize) -> Result<Vec<String>> {
    loop {
        let t = next_tasks(agent).await?;
        if t.len() == n {
            return Ok(t);
        }
    }
}

/// `service create web --task-definition FILE --desired-count N
/// --min-healthy-time 0s --json`.
async fn create_web(server: &RunningServer, file: &str, desired: &str) -> Result<Value> {
    json(
        server,
        &[
            "service",
            "create",
            "web",
            "--task-definition",
            file,
            "--desired-count",
            desired,
            "--min-healthy-time",
            "0s",
            "--json",
        ],
    )
    .await
}

/// Two revisions of the test definition in `dir`: web:1 and web:2 once
/// registered.
fn two_revisions(dir: &tempfile::TempDir) -> Result<(String, String)> {
    Ok((
        write(dir, "v1.json", TASK_DEFINITION)?,
        write(
            dir,
            "v2.json",
            &TASK_DEFINITION.replace("nginx:1", "nginx:2"),
        )?,
    ))
}

fn steady(d: &Value) -> bool {
    d["deployments"]
        .as_array()
        .is_some_and(|ds| ds.len() == 1 && ds[0]["rolloutState"] == "COMPLETED")
        && d["runningCount"] == d["desiredCount"]
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> Result<String> {
    let p = dir.path().join(name);
    std::fs::write(&p, body)?;
    Ok(p.to_string_lossy().into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_service_spreads_replaces_a_stopped_task_and_scales_in() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut a = FakeAgent::start(&server, 4096, 8192).await?;
    let mut b = FakeAgent::start(&server, 4096, 8192).await?;
    let file = write(&dir, "web.json", TASK_DEFINITION)?;

    let created = create_web(&server, &file, "2").await?;
    assert_eq!(created["serviceName"], "web");
    assert_eq!(created["clusterName"], "default");
    assert_eq!(
        created["serviceArn"],
        "arn:aws:ecs:local:000000000000:service/default/web"
    );
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["desiredCount"], 2);
    assert_eq!(created["taskDefinition"], "web:1");
    assert_eq!(created["schedulingStrategy"], "REPLICA");
    assert_eq!(created["launchType"], "EXTERNAL");
    assert_eq!(created["deploymentConfiguration"]["maximumPercent"], 200);
    assert_eq!(
        created["deploymentConfiguration"]["minimumHealthyPercent"],
        100
    );
    assert_eq!(
        created["placementStrategy"],
        serde_json::json!([{"type": "spread", "field": "instanceId"}])
    );
    let deployment = created["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(deployment.starts_with("ecs-svc/"), "{created}");
    assert_eq!(created["deployments"][0]["status"], "PRIMARY");
    assert_eq!(created["deployments"][0]["rolloutState"], "IN_PROGRESS");

    // Spread on instanceId: one task on each agent.
    let on_a = tasks_until(&mut a, 1).await?;
    let on_b = tasks_until(&mut b, 1).await?;
    a.tx.send(event(1, &on_a[0], "RUNNING")).await?;
    b.tx.send(event(1, &on_b[0], "RUNNING")).await?;
    let d = wait_service(&server, "web", "steady", steady).await?;
    assert_eq!(d["runningCount"], 2);
    let first = d["events"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(first, "service (web) has reached a steady state.", "{d}");

    // The service's tasks carry its group and the deployment.
    let t = json(&server, &["task", "describe", &on_a[0], "--json"]).await?;
    assert_eq!(t["group"], "service:web");
    assert_eq!(t["startedBy"], deployment.as_str());

    // A task that stops is replaced (on either agent).
    a.tx.send(event(2, &on_a[0], "STOPPED")).await?;
    let replacement = eventually("a replacement task", async || {
        let tasks = json(&server, &["task", "ls", "--json"]).await?;
        Ok(tasks.as_array().and_then(|ts| {
            ts.iter()
                .find(|t| {
                    t["lastStatus"] == "PENDING"
                        && t["taskId"] != on_a[0].as_str()
                        && t["taskId"] != on_b[0].as_str()
                })
                .map(|t| {
                    (
                        t["taskId"].as_str().unwrap_or_default().to_owned(),
                        t["instanceId"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        }))
    })
    .await?;
    let (id, instance) = replacement;
    let on_a = instance == a.instance_id;
    let (agent, seq) = if on_a { (&mut a, 3) } else { (&mut b, 2) };
    agent.tx.send(event(seq, &id, "RUNNING")).await?;
    // The next event sequence of each agent.
    let (mut next_a, mut next_b) = if on_a { (4, 2) } else { (3, 3) };
    wait_service(&server, "web", "running 2 again", |d| {
        d["runningCount"] == 2 && d["pendingCount"] == 0
    })
    .await?;

    // Scale in to 1: one task is stopped with the reason.
    let out = berth(
        &server,
        &["service", "update", "web", "--desired-count", "1"],
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopped = eventually("a task desired STOPPED", async || {
        let tasks = json(&server, &["task", "ls", "--json"]).await?;
        Ok(tasks.as_array().and_then(|ts| {
            ts.iter()
                .find(|t| t["desiredStatus"] == "STOPPED" && t["lastStatus"] == "RUNNING")
                .cloned()
        }))
    })
    .await?;
    let reason = stopped["stoppedReason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("Scaled in"), "{stopped}");
    assert_eq!(
        stopped["stopCode"], "ServiceSchedulerInitiated",
        "{stopped}"
    );
    // --wait returns once the stop is done, not while the primary is
    // merely COMPLETED.
    let stopped_id = stopped["taskId"].as_str().unwrap_or_default().to_owned();
    let report = async {
        let (agent, seq) = if stopped["instanceId"] == a.instance_id.as_str() {
            (&mut a, &mut next_a)
        } else {
            (&mut b, &mut next_b)
        };
        *seq += 1;
        agent.tx.send(event(*seq - 1, &stopped_id, "STOPPED")).await
    };
    let (waited, sent) = tokio::join!(
        berth(
            &server,
            &["service", "update", "web", "--desired-count", "1", "--wait"],
        ),
        report
    );
    sent?;
    let waited = waited?;
    assert!(waited.status.success(), "{}", text(&waited.stderr));
    let t = json(&server, &["task", "describe", &stopped_id, "--json"]).await?;
    assert_eq!(
        t["lastStatus"], "STOPPED",
        "--wait returned before the stop: {t}"
    );

    // Delete: refused above 0 without --force, then the service drains.
    refused(&server, &["service", "delete", "web"], "scaled above 0").await?;
    let deleted = json(&server, &["service", "delete", "web", "--force", "--json"]).await?;
    assert_eq!(deleted["status"], "DRAINING");
    let ls = json(&server, &["service", "ls", "--json"]).await?;
    assert_eq!(ls.as_array().map(Vec::len), Some(1), "{ls}");
    refused(
        &server,
        &["service", "update", "web", "--desired-count", "3"],
        "was deleted",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_service_runs_one_task_on_every_instance_and_leaves_a_drained_one() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut a = FakeAgent::start(&server, 4096, 8192).await?;
    let mut b = FakeAgent::start(&server, 4096, 8192).await?;
    let file = write(&dir, "web.json", TASK_DEFINITION)?;
    let created = json(
        &server,
        &[
            "service",
            "create",
            "agentd",
            "--task-definition",
            &file,
            "--scheduling-strategy",
            "DAEMON",
            "--min-healthy-time",
            "0s",
            "--json",
        ],
    )
    .await?;
    assert_eq!(created["schedulingStrategy"], "DAEMON");
    assert_eq!(created["placementStrategy"], serde_json::json!([]));
    assert_eq!(created["deploymentConfiguration"]["maximumPercent"], 100);
    assert_eq!(
        created["deploymentConfiguration"]["minimumHealthyPercent"],
        0
    );
    let on_a = tasks_until(&mut a, 1).await?;
    let on_b = tasks_until(&mut b, 1).await?;
    a.tx.send(event(1, &on_a[0], "RUNNING")).await?;
    b.tx.send(event(1, &on_b[0], "RUNNING")).await?;
    let d = wait_service(&server, "agentd", "steady", steady).await?;
    assert_eq!(d["desiredCount"], 2, "{d}");

    // Draining b: its daemon task is stopped (it has nothing else).
    let out = berth(&server, &["instance", "drain", &b.instance_id]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    tasks_until(&mut b, 0).await?;
    let t = json(&server, &["task", "describe", &on_b[0], "--json"]).await?;
    assert_eq!(t["desiredStatus"], "STOPPED");
    assert!(
        t["stoppedReason"]
            .as_str()
            .unwrap_or_default()
            .contains("draining"),
        "{t}"
    );
    // Active again: it gets a new one.
    b.tx.send(event(2, &on_b[0], "STOPPED")).await?;
    let out = berth(&server, &["instance", "activate", &b.instance_id]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = tasks_until(&mut b, 1).await?;
    assert_ne!(again[0], on_b[0]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_definition_rolls_out_and_a_rollback_goes_back() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut a = FakeAgent::start(&server, 4096, 8192).await?;
    let (v1, v2) = two_revisions(&dir)?;
    create_web(&server, &v1, "1").await?;
    let mut seq = 0;
    let first = tasks_until(&mut a, 1).await?;
    seq += 1;
    a.tx.send(event(seq, &first[0], "RUNNING")).await?;
    wait_service(&server, "web", "steady on web:1", steady).await?;

    // v2: a second deployment; at most 200 % means the new task starts
    // before the old one stops.
    let updated = json(
        &server,
        &[
            "service",
            "update",
            "web",
            "--task-definition",
            &v2,
            "--json",
        ],
    )
    .await?;
    assert_eq!(updated["taskDefinition"], "web:2");
    assert_eq!(updated["deployments"].as_array().map(Vec::len), Some(2));
    let both = tasks_until(&mut a, 2).await?;
    let new: Vec<&String> = both.iter().filter(|t| **t != first[0]).collect();
    assert_eq!(new.len(), 1, "{both:?}");
    seq += 1;
    a.tx.send(event(seq, new[0], "RUNNING")).await?;
    // The old task is stopped once the new one is healthy.
    let only = tasks_until(&mut a, 1).await?;
    assert_eq!(&only[0], new[0]);
    seq += 1;
    a.tx.send(event(seq, &first[0], "STOPPED")).await?;
    let d = wait_service(&server, "web", "steady on web:2", steady).await?;
    assert_eq!(d["deployments"][0]["taskDefinition"], "web:2");
    let old = json(&server, &["task", "describe", &first[0], "--json"]).await?;
    assert!(
        old["stoppedReason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Replaced by a task of deployment"),
        "{old}"
    );

    // Rollback: back to web:1.
    let back = json(&server, &["service", "rollback", "web", "--json"]).await?;
    assert_eq!(back["taskDefinition"], "web:1");
    let msg = back["events"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("rolling back to deployment"), "{back}");
    let both = tasks_until(&mut a, 2).await?;
    let newest: Vec<&String> = both.iter().filter(|t| *t != new[0]).collect();
    seq += 1;
    a.tx.send(event(seq, newest[0], "RUNNING")).await?;
    tasks_until(&mut a, 1).await?;
    seq += 1;
    a.tx.send(event(seq, new[0], "STOPPED")).await?;
    let d = wait_service(&server, "web", "steady on web:1 again", steady).await?;
    assert_eq!(d["taskDefinition"], "web:1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_service_input_is_refused_naming_what_is_wrong() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let file = write(&dir, "web.json", TASK_DEFINITION)?;
    let create = |extra: &'static [&'static str]| {
        let mut args = vec![
            "service",
            "create",
            "web",
            "--task-definition",
            file.as_str(),
        ];
        args.extend_from_slice(extra);
        args
    };
    refused(
        &server,
        &create(&[]),
        "desiredCount: a REPLICA service needs a desired count",
    )
    .await?;
    refused(
        &server,
        &create(&["--desired-count", "-1"]),
        "desiredCount: -1 is out of range",
    )
    .await?;
    refused(
        &server,
        &create(&["--desired-count", "1", "--max-percent", "50"]),
        "deploymentConfiguration.maximumPercent",
    )
    .await?;
    refused(
        &server,
        &create(&["--desired-count", "1", "--placement-strategy", "spread"]),
        "--placement-strategy",
    )
    .await?;
    refused(
        &server,
        &[
            "service",
            "create",
            "web",
            "--task-definition",
            "nope:1",
            "--desired-count",
            "1",
        ],
        "no task definition nope:1",
    )
    .await?;
    refused(
        &server,
        &["service", "create", "web", "--desired-count", "1"],
        "taskDefinition",
    )
    .await?;
    let aws = write(
        &dir,
        "aws.json",
        r#"{"serviceName":"web","taskDefinition":"web","desiredCount":1,
            "loadBalancers":[{"targetGroupArn":"arn:aws:elasticloadbalancing:x","containerName":"web","containerPort":80}]}"#,
    )?;
    refused(
        &server,
        &["service", "create", "--cli-input-json", &aws],
        "loadBalancers: not supported",
    )
    .await?;
    let typo = write(
        &dir,
        "typo.json",
        r#"{"serviceName":"web","desiredCont":1}"#,
    )?;
    refused(
        &server,
        &["service", "create", "--cli-input-json", &typo],
        "desiredCont: unknown member",
    )
    .await?;
    refused(
        &server,
        &["service", "describe", "nope"],
        "no service nope in cluster default",
    )
    .await?;
    refused(
        &server,
        &[
            "service",
            "create",
            "web",
            "--task-definition",
            &file,
            "--desired-count",
            "1",
            "--cluster",
            "nope",
        ],
        "no cluster nope",
    )
    .await?;

    // From --cli-input-json: stored, and a second create is refused.
    let body = write(
        &dir,
        "svc.json",
        r#"{"serviceName":"web","taskDefinition":"web","desiredCount":0,"launchType":"EXTERNAL",
                "deploymentConfiguration":{"deploymentCircuitBreaker":{"enable":true,"rollback":true},"maximumPercent":150,"minimumHealthyPercent":50},
                "placementConstraints":[{"type":"memberOf","expression":"attribute:zone == rack-3"}],
                "placementStrategy":[{"type":"binpack","field":"memory"}],"tags":[],"networkConfiguration":null}"#,
    )?;
    // The family must be registered first for a name to resolve.
    json(&server, &["taskdef", "register", &file, "--json"]).await?;
    let d = json(
        &server,
        &["service", "create", "--cli-input-json", &body, "--json"],
    )
    .await?;
    assert_eq!(
        d["deploymentConfiguration"],
        serde_json::json!({"deploymentCircuitBreaker":{"enable":true,"rollback":true},"maximumPercent":150,"minimumHealthyPercent":50})
    );
    assert_eq!(
        d["placementConstraints"],
        serde_json::json!([{"type":"memberOf","expression":"attribute:zone == rack-3"}])
    );
    assert_eq!(
        d["placementStrategy"],
        serde_json::json!([{"type":"binpack","field":"memory"}])
    );
    refused(
        &server,
        &["service", "create", "--cli-input-json", &body],
        "already exists",
    )
    .await?;
    // Desired 0: deleted without --force, and INACTIVE once no task is left.
    let gone = json(&server, &["service", "delete", "web", "--json"]).await?;
    assert_eq!(gone["status"], "DRAINING");
    wait_service(&server, "web", "INACTIVE", |d| d["status"] == "INACTIVE").await?;
    let ls = json(&server, &["service", "ls", "--json"]).await?;
    assert_eq!(ls, serde_json::json!([]));
    // A deleted service's name may be used again.
    json(
        &server,
        &["service", "create", "--cli-input-json", &body, "--json"],
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_instances_says_why_its_tasks_are_not_placed_and_survives_a_restart()
-> Result {
    let dir = private_dir()?;
    let data = dir.path().join("data");
    let server = Server::start(ServerConfig::loopback(data.clone())).await?;
    let file = write(&dir, "web.json", TASK_DEFINITION)?;
    json(
        &server,
        &[
            "service",
            "create",
            "web",
            "--task-definition",
            &file,
            "--desired-count",
            "2",
            "--json",
        ],
    )
    .await?;
    let d = wait_service(&server, "web", "a placement event", |d| {
        d["events"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("service (web) was unable to place a task because no container instance met all of its requirements.")
            })
        })
    })
    .await?;
    // The same message is not repeated.
    let n = d["events"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(n, 1, "{d}");
    let events = json(&server, &["service", "events", "web", "--json"]).await?;
    assert_eq!(events, d["events"]);
    server.shutdown().await?;

    let server = Server::start(ServerConfig::loopback(data)).await?;
    let d = describe(&server, "web").await?;
    assert_eq!(d["desiredCount"], 2);
    assert_eq!(d["taskDefinition"], "web:1");
    assert_eq!(d["events"].as_array().map(Vec::len), Some(1), "{d}");
    // An agent joins: the tasks are placed (perhaps already in the first
    // assignment, which FakeAgent::start reads, so the store is asked).
    let a = FakeAgent::start(&server, 4096, 8192).await?;
    eventually("two tasks placed on the new agent", async || {
        let tasks = json(&server, &["task", "ls", "--json"]).await?;
        let n = tasks.as_array().map_or(0, |ts| {
            ts.iter()
                .filter(|t| t["instanceId"] == a.instance_id.as_str())
                .count()
        });
        Ok((n == 2).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_no_instance_may_run_is_refused_up_front() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    // An agent that publishes no policy: nothing privileged may run there.
    let _a = FakeAgent::start(&server, 4096, 8192).await?;
    let file = write(
        &dir,
        "priv.json",
        &TASK_DEFINITION.replace(
            r#""essential": true"#,
            r#""essential": true, "privileged": true"#,
        ),
    )?;
    refused(
        &server,
        &[
            "service",
            "create",
            "web",
            "--task-definition",
            &file,
            "--desired-count",
            "1",
        ],
        "can never be placed in cluster default",
    )
    .await?;
    refused(&server, &["service", "describe", "web"], "no service web").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_resumes_after_a_control_plane_restart_with_nothing_doubled() -> Result {
    let dir = private_dir()?;
    let data = dir.path().join("data");
    let server = Server::start(ServerConfig::loopback(data.clone())).await?;
    let host = enroll(&server).await?;
    let mut a = FakeAgent::connect(&server, &host, 4096, 8192, &[]).await?;
    let (v1, v2) = two_revisions(&dir)?;
    create_web(&server, &v1, "2").await?;
    let old = tasks_until(&mut a, 2).await?;
    a.tx.send(event(1, &old[0], "RUNNING")).await?;
    a.tx.send(event(2, &old[1], "RUNNING")).await?;
    wait_service(&server, "web", "steady on web:1", steady).await?;
    json(
        &server,
        &[
            "service",
            "update",
            "web",
            "--task-definition",
            &v2,
            "--json",
        ],
    )
    .await?;
    // Up to 200 %: two new tasks beside the old two.
    let four = tasks_until(&mut a, 4).await?;
    server.shutdown().await?;
    drop(a);

    let server = Server::start(ServerConfig::loopback(data)).await?;
    let d = describe(&server, "web").await?;
    assert_eq!(d["deployments"].as_array().map(Vec::len), Some(2), "{d}");
    assert_eq!(d["deployments"][0]["taskDefinition"], "web:2");
    let mut a = FakeAgent::connect(&server, &host, 4096, 8192, &[]).await?;
    let new: Vec<&String> = four.iter().filter(|t| !old.contains(t)).collect();
    a.tx.send(event(3, new[0], "RUNNING")).await?;
    a.tx.send(event(4, new[1], "RUNNING")).await?;
    let left = tasks_until(&mut a, 2).await?;
    assert_eq!(
        left.iter().collect::<std::collections::BTreeSet<_>>(),
        new.iter().copied().collect(),
    );
    a.tx.send(event(5, &old[0], "STOPPED")).await?;
    a.tx.send(event(6, &old[1], "STOPPED")).await?;
    let d = wait_service(&server, "web", "steady on web:2", steady).await?;
    assert_eq!(d["taskDefinition"], "web:2");
    // Nothing was started twice: the four tasks of before, no more.
    let tasks = json(&server, &["task", "ls", "--json"]).await?;
    assert_eq!(tasks.as_array().map(Vec::len), Some(4), "{tasks}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_counts_its_services_and_is_not_deleted_under_one() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let file = write(&dir, "web.json", TASK_DEFINITION)?;
    json(&server, &["cluster", "create", "edge", "--json"]).await?;
    let d = json(
        &server,
        &[
            "service",
            "create",
            "web",
            "--cluster",
            "edge",
            "--task-definition",
            &file,
            "--desired-count",
            "0",
            "--json",
        ],
    )
    .await?;
    assert_eq!(d["clusterName"], "edge");
    let c = json(&server, &["cluster", "describe", "edge", "--json"]).await?;
    assert_eq!(c["activeServicesCount"], 1, "{c}");
    // Not in the default cluster.
    refused(
        &server,
        &["service", "describe", "web"],
        "no service web in cluster default",
    )
    .await?;
    refused(&server, &["cluster", "delete", "edge"], "service").await?;
    json(
        &server,
        &["service", "delete", "web", "--cluster", "edge", "--json"],
    )
    .await?;
    eventually("service web INACTIVE", async || {
        let d = json(
            &server,
            &["service", "describe", "web", "--cluster", "edge", "--json"],
        )
        .await?;
        Ok((d["status"] == "INACTIVE").then_some(()))
    })
    .await?;
    let c = json(&server, &["cluster", "describe", "edge", "--json"]).await?;
    assert_eq!(c["activeServicesCount"], 0, "{c}");
    let gone = json(&server, &["cluster", "delete", "edge", "--json"]).await?;
    assert_eq!(gone["status"], "INACTIVE");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_service_is_refused_without_gpus_and_placed_where_they_are() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let gpu = TASK_DEFINITION.replace(
        r#""essential": true"#,
        r#""essential": true, "resourceRequirements": [{"type": "GPU", "value": "1"}]"#,
    );
    let file = write(&dir, "gpu.json", &gpu)?;
    let _plain =
        FakeAgent::start_with_attributes(&server, 4096, 8192, &[("berth.gpus", "0")]).await?;
    let create = [
        "service",
        "create",
        "ml",
        "--task-definition",
        file.as_str(),
        "--desired-count",
        "1",
    ];
    refused(&server, &create, "1 GPU(s) (berth.gpus at least 1)").await?;
    let mut with_gpu =
        FakeAgent::start_with_attributes(&server, 4096, 8192, &[("berth.gpus", "1")]).await?;
    json(&server, &[&create[..], &["--json"]].concat()).await?;
    let placed = tasks_until(&mut with_gpu, 1).await?;
    let t = json(&server, &["task", "describe", &placed[0], "--json"]).await?;
    assert_eq!(t["instanceId"], with_gpu.instance_id.as_str());
    Ok(())
}
