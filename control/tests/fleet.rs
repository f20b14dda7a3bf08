//! The real server on loopback, with a tonic client over mutual TLS playing
//! the agent. Every wait is for a message or a state, with a deadline.

mod common;

use common::*;

use std::time::Duration;

use berth_control::{Server, ServerConfig};
use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as ServerMsg;
use berth_proto::v1::{
    AgentMessage, AssignmentAck, CreateTokenRequest, Heartbeat, Hello, InstanceRef,
    ListTasksRequest, Resources, RunTaskRequest, StopTaskRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_connect_run_and_replay() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;

    // server.json names the bound ports.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("server.json"))?)?;
    assert_eq!(state["fleetAddr"], server.fleet_addr().to_string());
    assert_eq!(state["adminAddr"], server.admin_addr().to_string());

    let mut admin = admin_client(server.admin_addr()).await?;
    let token = admin
        .create_token(CreateTokenRequest {
            ttl_seconds: 0,
            ..CreateTokenRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(token.ca_sha256, server.ca_sha256());
    assert_eq!(token.fleet_addresses, vec![server.fleet_addr().to_string()]);
    assert_eq!(token.activation_code.len(), 32);

    // Enrollment over TLS without a client certificate.
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let mut enrollment = EnrollmentClient::new(plain.clone());
    let (key, csr_pem) = csr()?;

    let wrong = enrollment
        .enroll(enroll_request(&token.activation_id, "wrong-code", &csr_pem))
        .await
        .expect_err("wrong code");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    assert_eq!(wrong.message(), "unknown activation id or wrong code");
    let unknown = enrollment
        .enroll(enroll_request(
            "no-such-id",
            &token.activation_code,
            &csr_pem,
        ))
        .await
        .expect_err("unknown id");
    assert_eq!(unknown.message(), wrong.message());
    let bad_csr = enrollment
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            "garbage",
        ))
        .await
        .expect_err("bad csr");
    assert_eq!(bad_csr.code(), Code::InvalidArgument);

    let host = Enrolled::new(
        &key,
        enrollment
            .enroll(enroll_request(
                &token.activation_id,
                &token.activation_code,
                &csr_pem,
            ))
            .await?
            .into_inner(),
    );
    let instance_id = host.instance_id.clone();
    assert!(instance_id.starts_with("i-") && instance_id.len() == 18);
    assert_eq!(host.ca_pem, server.ca_pem());

    // The activation works once.
    let (_, other_csr) = csr()?;
    let again = enrollment
        .enroll(enroll_request(
            &token.activation_id,
            &token.activation_code,
            &other_csr,
        ))
        .await
        .expect_err("second enrollment");
    assert_eq!(again.code(), Code::PermissionDenied);
    assert_eq!(
        again.message(),
        format!("activation {} was already used", token.activation_id)
    );

    // Fleet.Connect without a client certificate is refused.
    let (_tx0, rx0) = mpsc::channel::<AgentMessage>(1);
    let refused = FleetClient::new(plain)
        .connect(ReceiverStream::new(rx0))
        .await
        .expect_err("no client certificate");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // The agent's session over mutual TLS.
    let mtls = host.mtls(&server).await?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    tx.send(agent(AgentMsg::Hello(Hello {
        instance_id: instance_id.clone(),
        agent_version: "0.0.0-test".into(),
        boot_id: "boot-1".into(),
        capacity: Some(Resources {
            cpu: 2048,
            memory_mib: 4096,
        }),
        attributes: [("zone".to_owned(), "lab".to_owned())].into(),
        applied_generation: 0,
        tasks: vec![],
        hostname: "test-host".into(),
        last_event_sequence: 0,
    })))
    .await?;
    let mut inbound = FleetClient::new(mtls)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match next(&mut inbound).await? {
        ServerMsg::Welcome(w) => {
            assert_eq!(w.instance_id, instance_id);
            assert_eq!(w.heartbeat_interval_ms, 10_000);
            assert_eq!(w.applied_event_sequence, 0);
        }
        other => return Err(format!("expected Welcome, got {other:?}").into()),
    }
    let first = next_assignment(&mut inbound).await?;
    assert!(first.tasks.is_empty());
    tx.send(agent(AgentMsg::AssignmentAck(AssignmentAck {
        generation: first.generation,
    })))
    .await?;
    tx.send(agent(AgentMsg::Heartbeat(Heartbeat {
        sent_at_ms: berth_proto::now_ms(),
    })))
    .await?;

    // The instance is connected, with the capacity from Hello.
    let inst = admin
        .describe_instance(InstanceRef {
            instance_id: instance_id.clone(),
        })
        .await?
        .into_inner();
    assert!(inst.agent_connected);
    assert_eq!(inst.status, "ACTIVE");
    assert_eq!(inst.hostname, "test-host");
    assert_eq!(inst.registered.map(|r| r.memory_mib), Some(4096));

    // RunTask: placed on the only instance and pushed to its session.
    let task = admin
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.into(),
            instance_id: String::new(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0);
    assert_eq!(task.instance_id, instance_id);
    let state = task.state.clone().unwrap_or_default();
    let task_id = state.task_id.clone();
    assert_eq!(task_id.len(), 32);
    assert_eq!(state.last_status, "PENDING");
    assert_eq!(state.desired_status, "RUNNING");
    let assigned = next_assignment(&mut inbound).await?;
    assert!(assigned.generation > first.generation);
    assert_eq!(assigned.tasks.len(), 1);
    assert_eq!(assigned.tasks[0].task_id, task_id);
    assert_eq!(assigned.tasks[0].desired_status, "RUNNING");
    // The registered (normalized) form of the definition: the same
    // definition.
    assert_eq!(
        berth_taskdef::parse(&assigned.tasks[0].task_definition_json)?.definition,
        berth_taskdef::parse(TASK_DEFINITION)?.definition
    );
    assert_eq!(task.task_definition, "web:1");
    assert_eq!(task.group, "family:web");

    let inst = admin
        .describe_instance(InstanceRef {
            instance_id: instance_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        inst.remaining,
        Some(Resources {
            cpu: 2048 - 256,
            memory_mib: 4096 - 512
        })
    );
    assert_eq!(inst.pending_tasks_count, 1);

    // A task that does not fit is refused with a reason.
    let too_big = admin
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.replace("512", "100000"),
            instance_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("does not fit");
    assert_eq!(too_big.code(), Code::FailedPrecondition);
    assert!(
        too_big.message().contains("100000 MiB"),
        "{}",
        too_big.message()
    );
    let invalid = admin
        .run_task(RunTaskRequest {
            task_definition_json: r#"{"family": "x", "containerDefinitions": [{"name": "a", "image": "b", "memroy": 5}]}"#.into(),
            instance_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("containerDefinitions[0]"),
        "{}",
        invalid.message()
    );

    // Event 1: RUNNING.
    tx.send(event(1, &task_id, "RUNNING")).await?;
    assert_eq!(next_ack(&mut inbound).await?, 1);
    assert_eq!(last_status(&mut admin, &task_id).await?, "RUNNING");

    // A replay of event 1 with another state is acknowledged and ignored.
    tx.send(event(1, &task_id, "STOPPED")).await?;
    assert_eq!(next_ack(&mut inbound).await?, 1);
    assert_eq!(last_status(&mut admin, &task_id).await?, "RUNNING");

    // Stop: the assignment says so.
    let stopped = admin
        .stop_task(StopTaskRequest {
            task_id: task_id.clone(),
            reason: String::new(),
        })
        .await?
        .into_inner()
        .state
        .unwrap_or_default();
    assert_eq!(stopped.desired_status, "STOPPED");
    assert_eq!(stopped.stop_code, "UserInitiated");
    assert_eq!(stopped.stopped_reason, "Task stopped by user");
    let stopping = next_assignment(&mut inbound).await?;
    assert!(stopping.generation > assigned.generation);
    assert_eq!(stopping.tasks.len(), 1);
    assert_eq!(stopping.tasks[0].desired_status, "STOPPED");

    // Event 2: STOPPED; the task leaves the desired set.
    tx.send(event(2, &task_id, "STOPPED")).await?;
    assert_eq!(next_ack(&mut inbound).await?, 2);
    let done = next_assignment(&mut inbound).await?;
    assert!(done.generation > stopping.generation);
    assert!(done.tasks.is_empty());
    assert_eq!(last_status(&mut admin, &task_id).await?, "STOPPED");

    // A second task stays RUNNING; when the agent goes away it shows UNKNOWN.
    let second = admin
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.into(),
            instance_id: instance_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0)
        .state
        .unwrap_or_default()
        .task_id;
    assert_eq!(next_assignment(&mut inbound).await?.tasks.len(), 1);
    tx.send(event(3, &second, "RUNNING")).await?;
    assert_eq!(next_ack(&mut inbound).await?, 3);
    drop(tx);
    assert!(
        tokio::time::timeout(DEADLINE, inbound.message())
            .await?
            .ok()
            .flatten()
            .is_none(),
        "session should end when the agent closes its stream"
    );
    eventually("the instance to show as disconnected", async || {
        let inst = admin
            .describe_instance(InstanceRef {
                instance_id: instance_id.clone(),
            })
            .await?
            .into_inner();
        Ok((!inst.agent_connected).then_some(()))
    })
    .await?;
    assert_eq!(last_status(&mut admin, &second).await?, "UNKNOWN");
    assert_eq!(last_status(&mut admin, &task_id).await?, "STOPPED");
    let listed = admin
        .list_tasks(ListTasksRequest {
            instance_id: instance_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 2);
    assert_eq!(
        listed[0].state.as_ref().map(|s| s.task_id.clone()),
        Some(second.clone())
    );

    // Reconnect: Welcome says which events are stored.
    let mtls = host.mtls(&server).await?;
    let (tx, rx) = mpsc::channel::<AgentMessage>(16);
    tx.send(agent(AgentMsg::Hello(Hello {
        instance_id: instance_id.clone(),
        capacity: Some(Resources {
            cpu: 2048,
            memory_mib: 4096,
        }),
        applied_generation: done.generation + 1,
        last_event_sequence: 3,
        ..Hello::default()
    })))
    .await?;
    let mut inbound = FleetClient::new(mtls.clone())
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match next(&mut inbound).await? {
        ServerMsg::Welcome(w) => assert_eq!(w.applied_event_sequence, 3),
        other => return Err(format!("expected Welcome, got {other:?}").into()),
    }
    let current = next_assignment(&mut inbound).await?;
    assert_eq!(current.tasks.len(), 1);
    assert_eq!(last_status(&mut admin, &second).await?, "RUNNING");

    // Deregistration: the session ends and the certificate is refused.
    let gone = admin
        .deregister_instance(InstanceRef {
            instance_id: instance_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(gone.status, "INACTIVE");
    let last = next_assignment(&mut inbound).await?;
    assert_eq!(last.tasks.len(), 1);
    assert_eq!(last.tasks[0].desired_status, "STOPPED");
    let end = tokio::time::timeout(DEADLINE, inbound.message()).await?;
    assert_eq!(end.expect_err("closed").code(), Code::PermissionDenied);
    let (_tx2, rx2) = mpsc::channel::<AgentMessage>(1);
    let refused = FleetClient::new(mtls)
        .connect(ReceiverStream::new(rx2))
        .await
        .expect_err("deregistered");
    assert_eq!(refused.code(), Code::PermissionDenied);
    drop(tx);

    server.shutdown().await?;
    assert!(!dir.path().join("server.json").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_must_match_the_certificate() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let enrolled = enroll(&server).await?;
    let mtls = enrolled.mtls(&server).await?;

    // Hello for another instance.
    let (tx, rx) = mpsc::channel::<AgentMessage>(4);
    tx.send(agent(AgentMsg::Hello(Hello {
        instance_id: "i-ffffffffffffffff".into(),
        ..Hello::default()
    })))
    .await?;
    let mut inbound = FleetClient::new(mtls.clone())
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let end = tokio::time::timeout(DEADLINE, inbound.message()).await?;
    assert_eq!(end.expect_err("refused").code(), Code::PermissionDenied);

    // Something other than Hello first.
    let (tx, rx) = mpsc::channel::<AgentMessage>(4);
    tx.send(agent(AgentMsg::Heartbeat(Heartbeat { sent_at_ms: 1 })))
        .await?;
    let mut inbound = FleetClient::new(mtls.clone())
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let end = tokio::time::timeout(DEADLINE, inbound.message()).await?;
    assert_eq!(end.expect_err("refused").code(), Code::FailedPrecondition);

    // A newer session replaces an older one of the same instance.
    let hello = || {
        agent(AgentMsg::Hello(Hello {
            instance_id: enrolled.instance_id.clone(),
            ..Hello::default()
        }))
    };
    let (tx1, rx1) = mpsc::channel::<AgentMessage>(4);
    tx1.send(hello()).await?;
    let mut first = FleetClient::new(mtls.clone())
        .connect(ReceiverStream::new(rx1))
        .await?
        .into_inner();
    assert!(matches!(next(&mut first).await?, ServerMsg::Welcome(_)));
    next_assignment(&mut first).await?;
    let (tx2, rx2) = mpsc::channel::<AgentMessage>(4);
    tx2.send(hello()).await?;
    let mut second = FleetClient::new(mtls)
        .connect(ReceiverStream::new(rx2))
        .await?
        .into_inner();
    assert!(matches!(next(&mut second).await?, ServerMsg::Welcome(_)));
    next_assignment(&mut second).await?;
    let end = tokio::time::timeout(DEADLINE, first.message()).await?;
    assert_eq!(end.expect_err("replaced").code(), Code::Aborted);
    assert!(server.is_connected(&enrolled.instance_id));
    drop((tx, tx1, tx2));

    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sessions_are_closed_after_three_heartbeat_intervals() -> Result {
    let dir = private_dir()?;
    let mut cfg = ServerConfig::loopback(dir.path());
    cfg.heartbeat_interval = Duration::from_millis(100);
    let server = Server::start(cfg).await?;
    let mut agent = FakeAgent::start(&server, 1024, 1024).await?;
    assert!(server.is_connected(&agent.instance_id));
    let end = tokio::time::timeout(DEADLINE, agent.inbound.message()).await?;
    assert_eq!(end.expect_err("closed").code(), Code::DeadlineExceeded);
    assert!(!server.is_connected(&agent.instance_id));
    server.shutdown().await?;
    Ok(())
}
