//! The task-definition registry through the `berth` binary: `taskdef
//! register|ls|describe|deregister` and `task run` by FAMILY[:REV] or by
//! file, against the real server (in-process, on loopback) with a fake
//! agent.

mod common;

use std::process::Stdio;

use berth_control::{RunningServer, Server, ServerConfig};
use common::*;
use serde_json::Value;
use tokio::process::Command;

/// Runs `berth args`, which must succeed, and parses its JSON.
async fn json(server: &RunningServer, args: &[&str]) -> Result<Value> {
    let out = berth(server, args).await?;
    if !out.status.success() {
        return Err(format!("berth {args:?}: {}", text(&out.stderr)).into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `berth args` must fail with exit 1; returns its stderr.
async fn refused(server: &RunningServer, args: &[&str]) -> Result<String> {
    let out = berth(server, args).await?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "berth {args:?}: stdout {} stderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(text(&out.stderr))
}

fn arn(name: &str) -> String {
    format!("arn:aws:ecs:local:000000000000:task-definition/{name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_register_revisions_and_families_run_by_name() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut agent = FakeAgent::start(&server, 4096, 8192).await?;
    let v1 = dir.path().join("web.json");
    std::fs::write(&v1, TASK_DEFINITION)?;
    let v1 = v1.to_string_lossy().into_owned();
    let v2 = dir.path().join("web-2.json");
    std::fs::write(&v2, TASK_DEFINITION.replace("nginx:1", "nginx:2"))?;
    let v2 = v2.to_string_lossy().into_owned();

    // The same file twice: one revision.
    let first = json(
        &server,
        &["task", "run", "--task-definition", &v1, "--json"],
    )
    .await?;
    assert_eq!(first["taskDefinitionArn"], arn("web:1").as_str());
    assert_eq!(first["group"], "family:web");
    assert_eq!(first["startedBy"], Value::Null);
    let first_id = first["taskId"].as_str().unwrap_or_default().to_owned();
    next_assignment(&mut agent.inbound).await?;
    agent.tx.send(event(1, &first_id, "RUNNING")).await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 1);
    let again = json(
        &server,
        &["task", "run", "--task-definition", &v1, "--json"],
    )
    .await?;
    assert_eq!(again["taskDefinitionArn"], arn("web:1").as_str());
    next_assignment(&mut agent.inbound).await?;

    // Changed content: revision 2, which is now the latest.
    let changed = json(
        &server,
        &["task", "run", "--task-definition", &v2, "--json"],
    )
    .await?;
    assert_eq!(changed["taskDefinitionArn"], arn("web:2").as_str());
    next_assignment(&mut agent.inbound).await?;
    let latest = json(&server, &["taskdef", "describe", "web", "--json"]).await?;
    let td = &latest["taskDefinition"];
    assert_eq!(td["revision"], 2);
    assert_eq!(td["status"], "ACTIVE");
    assert_eq!(td["containerDefinitions"][0]["image"], "nginx:2");
    assert_eq!(
        td["compatibilities"],
        serde_json::json!(["EC2", "EXTERNAL"])
    );
    let listed = json(&server, &["taskdef", "ls", "--json"]).await?;
    assert_eq!(
        listed["taskDefinitionArns"],
        serde_json::json!([arn("web:1"), arn("web:2")])
    );

    // What describe prints runs as the revision it describes.
    let described = dir.path().join("described.json");
    std::fs::write(&described, latest.to_string())?;
    let described = described.to_string_lossy().into_owned();
    let rerun = json(
        &server,
        &["task", "run", "--task-definition", &described, "--json"],
    )
    .await?;
    assert_eq!(rerun["taskDefinitionArn"], arn("web:2").as_str());
    next_assignment(&mut agent.inbound).await?;

    // `taskdef register` always adds a revision, as in ECS.
    let out = berth(&server, &["taskdef", "register", &v2]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "web:3");

    // Deregistered: nothing new may use it; its running task runs on.
    let out = berth(&server, &["taskdef", "deregister", "web:1"]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "web:1");
    let out = berth(&server, &["taskdef", "ls", "--status", "INACTIVE"]).await?;
    assert_eq!(text(&out.stdout).trim(), "web:1");
    let err = refused(&server, &["task", "run", "--task-definition", "web:1"]).await?;
    assert!(err.contains("web:1") && err.contains("INACTIVE"), "{err}");
    let described = json(&server, &["taskdef", "describe", "web:1", "--json"]).await?;
    assert_eq!(described["taskDefinition"]["status"], "INACTIVE");
    assert!(described["taskDefinition"]["deregisteredAt"].is_string());
    let out = berth(&server, &["taskdef", "describe", "web:1"]).await?;
    let human = text(&out.stdout);
    assert!(human.contains("Task definition: web:1"), "{human}");
    assert!(human.contains("Status:          INACTIVE"), "{human}");
    assert!(human.contains("nginx:1"), "{human}");
    let task = json(&server, &["task", "describe", &first_id, "--json"]).await?;
    assert_eq!(task["lastStatus"], "RUNNING");
    assert_eq!(task["desiredStatus"], "RUNNING");
    assert_eq!(task["taskDefinitionArn"], arn("web:1").as_str());

    // Several tasks by family name, with a starter and a group.
    let many = json(
        &server,
        &[
            "task",
            "run",
            "--task-definition",
            "web",
            "--count",
            "3",
            "--started-by",
            "nightly-job",
            "--group",
            "batch",
            "--json",
        ],
    )
    .await?;
    let tasks = many["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 3, "{many}");
    assert_eq!(many["failures"], serde_json::json!([]));
    for t in &tasks {
        assert_eq!(t["taskDefinitionArn"], arn("web:3").as_str());
        assert_eq!(t["startedBy"], "nightly-job");
        assert_eq!(t["group"], "batch");
    }
    let out = berth(&server, &["task", "ls"]).await?;
    assert_eq!(
        text(&out.stdout).lines().count(),
        1 + 4 + 3,
        "{}",
        text(&out.stdout)
    );

    // Bad input exits 1 naming what is wrong.
    let err = refused(
        &server,
        &["task", "run", "--task-definition", "web", "--count", "11"],
    )
    .await?;
    assert!(err.contains("--count 11"), "{err}");
    let err = refused(&server, &["task", "run", "--task-definition", "nope"]).await?;
    assert!(
        err.contains("no ACTIVE revision of task definition family nope"),
        "{err}"
    );
    let err = refused(&server, &["task", "run", "--task-definition", "web:9"]).await?;
    assert!(err.contains("no task definition web:9"), "{err}");
    let err = refused(&server, &["taskdef", "deregister", "web"]).await?;
    assert!(err.contains("needs a revision"), "{err}");
    let err = refused(
        &server,
        &[
            "task",
            "run",
            "--task-definition",
            "web",
            "--placement-strategy",
            "binpack:disk",
        ],
    )
    .await?;
    assert!(
        err.contains("placement strategy \"binpack:disk\": binpack takes cpu or memory"),
        "{err}"
    );
    let err = refused(
        &server,
        &[
            "task",
            "run",
            "--task-definition",
            "web",
            "--started-by",
            "a b",
        ],
    )
    .await?;
    assert!(err.contains("started_by"), "{err}");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_that_do_not_fit_are_failures_and_the_rest_runs() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    // Room for two tasks of 512 MiB.
    let mut agent = FakeAgent::start(&server, 4096, 1024).await?;
    let file = dir.path().join("web.json");
    std::fs::write(&file, TASK_DEFINITION)?;
    let file = file.to_string_lossy().into_owned();
    let out = berth(
        &server,
        &[
            "task",
            "run",
            "--task-definition",
            &file,
            "--count",
            "3",
            "--json",
        ],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v["failures"].as_array().map(Vec::len), Some(1), "{v}");
    let err = text(&out.stderr);
    assert!(err.contains("1 of 3 tasks could not be started"), "{err}");
    next_assignment(&mut agent.inbound).await?;
    // None fits: the refusal of today, with its reason.
    let err = refused(&server, &["task", "run", "--task-definition", "web"]).await?;
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("could not be started"), "{err}");
    server.shutdown().await?;
    Ok(())
}

/// The first assignment with `n` tasks (the server may send one for each
/// task placed, or one for several).
async fn assignment_of(agent: &mut FakeAgent, n: usize) -> Result<berth_proto::v1::Assignment> {
    loop {
        let a = next_assignment(&mut agent.inbound).await?;
        if a.tasks.len() >= n {
            return Ok(a);
        }
    }
}

fn spawn(server: &RunningServer, args: &[&str]) -> Result<tokio::process::Child> {
    Ok(Command::new(BERTH)
        .env_remove("BERTH_ADDR")
        .arg("--server")
        .arg(server.admin_addr().to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_covers_every_task_of_a_run() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut agent = FakeAgent::start(&server, 4096, 8192).await?;
    let file = dir.path().join("web.json");
    std::fs::write(&file, TASK_DEFINITION)?;
    let file = file.to_string_lossy().into_owned();
    let args = [
        "task",
        "run",
        "--task-definition",
        &file,
        "--count",
        "2",
        "--wait",
        "--json",
    ];

    // Both RUNNING: done, with both in the answer.
    let child = spawn(&server, &args)?;
    let both = assignment_of(&mut agent, 2).await?;
    let ids: Vec<String> = both.tasks.iter().map(|t| t.task_id.clone()).collect();
    assert_eq!(ids.len(), 2);
    // The second RUNNING first: the wait is for all of them, in any order.
    agent.tx.send(event(1, &ids[1], "RUNNING")).await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 1);
    agent.tx.send(event(2, &ids[0], "RUNNING")).await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 2);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await??;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let statuses: Vec<&str> = v["tasks"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["lastStatus"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(statuses, ["RUNNING", "RUNNING"], "{v}");

    // One stops before RUNNING: exit 1 naming it.
    let child = spawn(&server, &args)?;
    let four = assignment_of(&mut agent, 4).await?;
    let new: Vec<String> = four
        .tasks
        .iter()
        .map(|t| t.task_id.clone())
        .filter(|id| !ids.contains(id))
        .collect();
    assert_eq!(new.len(), 2);
    agent.tx.send(event(3, &new[1], "STOPPED")).await?;
    assert_eq!(next_ack(&mut agent.inbound).await?, 3);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await??;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("task {} stopped", new[1])), "{err}");
    server.shutdown().await?;
    Ok(())
}
