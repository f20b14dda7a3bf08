//! `berth cluster …` against the real server (in-process, on loopback).

mod common;

use berth_control::{Server, ServerConfig};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_created_listed_and_deleted() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;

    let web = json_of(&berth(&server, &["cluster", "create", "web", "--json"]).await?)?;
    assert_eq!(web["clusterName"], "web");
    assert_eq!(
        web["clusterArn"],
        "arn:aws:ecs:local:000000000000:cluster/web"
    );
    assert_eq!(web["status"], "ACTIVE");
    assert_eq!(web["registeredContainerInstancesCount"], 0);
    assert_eq!(web["runningTasksCount"], 0);

    let all = json_of(&berth(&server, &["cluster", "ls", "--json"]).await?)?;
    let names: Vec<&str> = all
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["clusterName"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["default", "web"]);

    let table = berth(&server, &["cluster", "ls"]).await?;
    assert!(table.status.success());
    assert!(
        text(&table.stdout).contains("web"),
        "{}",
        text(&table.stdout)
    );

    assert_refused(
        &berth(&server, &["cluster", "create", "a b"]).await?,
        "only letters, digits, '_' and '-' are allowed",
    );
    assert_refused(
        &berth(&server, &["cluster", "delete", "default"]).await?,
        "default cannot be deleted",
    );
    assert_refused(
        &berth(&server, &["cluster", "describe", "nope"]).await?,
        "no cluster nope",
    );

    let gone = json_of(&berth(&server, &["cluster", "delete", "web", "--json"]).await?)?;
    assert_eq!(gone["status"], "INACTIVE");
    let described = json_of(&berth(&server, &["cluster", "describe", "web", "--json"]).await?)?;
    assert_eq!(described["status"], "INACTIVE");
    let again = json_of(&berth(&server, &["cluster", "create", "web", "--json"]).await?)?;
    assert_eq!(again["status"], "ACTIVE");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_instance_gets_no_new_task_until_activated() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut agent = FakeAgent::start(&server, 2048, 4096).await?;
    let id = agent.instance_id.clone();
    let td = dir.path().join("task.json");
    std::fs::write(&td, TASK_DEFINITION)?;
    let td = td.to_string_lossy().into_owned();

    let drained = json_of(&berth(&server, &["instance", "drain", &id, "--json"]).await?)?;
    assert_eq!(drained["status"], "DRAINING");
    assert_eq!(drained["cluster"], "default");
    let human = berth(&server, &["instance", "drain", &id]).await?;
    assert!(human.status.success(), "stderr: {}", text(&human.stderr));
    assert_eq!(text(&human.stdout), format!("instance {id} is DRAINING\n"));

    assert_refused(
        &berth(&server, &["task", "run", "--task-definition", &td]).await?,
        "no connected ACTIVE instance",
    );

    let active = json_of(&berth(&server, &["instance", "activate", &id, "--json"]).await?)?;
    assert_eq!(active["status"], "ACTIVE");
    let run = berth(
        &server,
        &["task", "run", "--task-definition", &td, "--json"],
    )
    .await?;
    let task = json_of(&run)?;
    assert_eq!(task["instanceId"], id.as_str());
    // The session went on all along: the new task reaches the agent.
    let assignment = next_assignment(&mut agent.inbound).await?;
    assert_eq!(assignment.tasks.len(), 1);

    assert_refused(
        &berth(&server, &["instance", "drain", "i-nope"]).await?,
        "no instance i-nope",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_a_cluster_enrolls_the_host_into_it() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    assert_refused(
        &berth(&server, &["token", "create", "--cluster", "edge"]).await?,
        "no cluster edge",
    );
    assert!(
        berth(&server, &["cluster", "create", "edge"])
            .await?
            .status
            .success()
    );
    let token =
        json_of(&berth(&server, &["token", "create", "--cluster", "edge", "--json"]).await?)?;
    assert_eq!(token["cluster"], "edge");
    let human = berth(&server, &["token", "create", "--cluster", "edge"]).await?;
    assert!(text(&human.stdout).contains("Cluster:         edge"));

    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let (_key, csr_pem) = csr()?;
    let enrolled = berth_proto::v1::enrollment_client::EnrollmentClient::new(plain)
        .enroll(enroll_request(
            token["activationId"].as_str().unwrap_or_default(),
            token["activationCode"].as_str().unwrap_or_default(),
            &csr_pem,
        ))
        .await?
        .into_inner();
    let id = enrolled.instance_id;
    let described = json_of(&berth(&server, &["instance", "describe", &id, "--json"]).await?)?;
    assert_eq!(described["cluster"], "edge");
    let edge = json_of(&berth(&server, &["cluster", "describe", "edge", "--json"]).await?)?;
    assert_eq!(edge["registeredContainerInstancesCount"], 1);
    assert_refused(
        &berth(&server, &["cluster", "delete", "edge"]).await?,
        "edge",
    );
    // Deregistered, the host no longer keeps the cluster alive.
    assert!(
        berth(&server, &["instance", "deregister", &id])
            .await?
            .status
            .success()
    );
    let gone = json_of(&berth(&server, &["cluster", "delete", "edge", "--json"]).await?)?;
    assert_eq!(gone["status"], "INACTIVE");
    assert_refused(
        &berth(&server, &["token", "create", "--cluster", "edge"]).await?,
        "cluster edge was deleted",
    );
    Ok(())
}
