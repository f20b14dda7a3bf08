//! The hostile-agent findings of SECURITY.md ("The red-team review of
//! e213b60", ids below) against the real server in-process: an enrolled
//! agent turned hostile (it holds its instance's own key and certificate)
//! and what it can no longer do. Each test fails on e213b60.
//! - H1: a huge capacity or another host's name in the Hello lures no task;
//! - M1: events for tasks the server never assigned create nothing, and
//!   reasons are bounded;
//! - M2: reconnecting does not refill the instance's rate, renewals are
//!   limited;
//! - M4: a stream opened before deregistration is closed by it;
//! - L8: once a renewed certificate is used, the old one is refused;
//! - I6: megabytes of Hello attributes are refused;
//! - L3: hostnames and families with terminal escapes are refused.

mod common;

use common::*;

use std::time::{Duration, Instant};

use berth_control::{RunningServer, Server, ServerConfig};
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::fleet_client::FleetClient;
use berth_proto::v1::server_message::Msg as ServerMsg;
use berth_proto::v1::{
    AgentMessage, Hello, HostFacts, Instance, InstanceRef, ListTasksRequest, RenewRequest,
    Resources, RunTaskRequest, ServerMessage, TaskEvent, TaskRef, TaskState,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Identity};
use tonic::{Code, Status, Streaming};

type Session = (mpsc::Sender<AgentMessage>, Streaming<ServerMessage>);

/// Enrolls a host reporting `hostname` and `capacity` at enrollment.
async fn enroll_host(
    server: &RunningServer,
    hostname: &str,
    capacity: Option<Resources>,
) -> Result<Enrolled> {
    let token = server.create_token(None).await?;
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let (key, csr_pem) = csr()?;
    let mut request = enroll_request(&token.activation_id, &token.activation_code, &csr_pem);
    request.host = Some(HostFacts {
        hostname: hostname.into(),
        capacity,
        ..request.host.unwrap_or_default()
    });
    let response = EnrollmentClient::new(plain)
        .enroll(request)
        .await?
        .into_inner();
    Ok(Enrolled::new(&key, response))
}

/// A server issuing certificates for an hour: renewals are one per 15
/// minutes after the burst.
async fn hour_certificates(dir: &std::path::Path) -> Result<RunningServer> {
    let mut cfg = ServerConfig::loopback(dir);
    cfg.cert_lifetime = Duration::from_secs(3600);
    Ok(Server::start(cfg).await?)
}

fn hello(instance_id: &str, cpu: i64, memory_mib: i64) -> Hello {
    Hello {
        instance_id: instance_id.into(),
        hostname: "test-host".into(),
        capacity: Some(Resources { cpu, memory_mib }),
        ..Hello::default()
    }
}

/// Opens a session that sends `hello` first; the stream or the refusal of
/// the Connect itself.
async fn open(channel: Channel, hello: Hello) -> std::result::Result<Session, Status> {
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    tx.send(agent(AgentMsg::Hello(hello)))
        .await
        .map_err(|_| Status::internal("cannot queue Hello"))?;
    let inbound = FleetClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

/// A session past Welcome and the first assignment.
async fn welcomed(channel: Channel, hello: Hello) -> Result<Session> {
    let (tx, mut inbound) = open(channel, hello).await?;
    match next(&mut inbound).await? {
        ServerMsg::Welcome(_) => {}
        other => return Err(format!("expected Welcome, got {other:?}").into()),
    }
    next_assignment(&mut inbound).await?;
    Ok((tx, inbound))
}

/// The status the server ends the stream with (skipping what it sends
/// before), within the deadline.
async fn ended_with(inbound: &mut Streaming<ServerMessage>) -> Result<Status> {
    loop {
        match tokio::time::timeout(DEADLINE, inbound.message()).await? {
            Ok(Some(_)) => continue,
            Ok(None) => return Err("the stream ended without a status".into()),
            Err(status) => return Ok(status),
        }
    }
}

/// The status a session opened with `hello` ends with.
async fn refused_hello(server: &RunningServer, host: &Enrolled, hello: Hello) -> Result<Status> {
    let (_tx, mut inbound) = open(host.mtls(server).await?, hello).await?;
    ended_with(&mut inbound).await
}

async fn describe(admin: &mut AdminClient<Channel>, id: &str) -> Result<Instance> {
    Ok(admin
        .describe_instance(InstanceRef {
            instance_id: id.into(),
        })
        .await?
        .into_inner())
}

fn small_task() -> String {
    TASK_DEFINITION.replace("\"memory\": 512", "\"memory\": 64")
}

async fn run_task(admin: &mut AdminClient<Channel>, instance_id: &str) -> Result<String> {
    let task = admin
        .run_task(RunTaskRequest {
            task_definition_json: small_task(),
            instance_id: instance_id.into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0);
    Ok(task.state.map(|s| s.task_id).unwrap_or_default())
}

fn event_with(seq: u64, task: TaskState) -> AgentMessage {
    agent(AgentMsg::Event(TaskEvent {
        sequence: seq,
        task: Some(task),
        at_ms: berth_proto::now_ms(),
    }))
}

fn running(task_id: &str) -> TaskState {
    TaskState {
        task_id: task_id.into(),
        family: "web".into(),
        last_status: "RUNNING".into(),
        desired_status: "RUNNING".into(),
        ..TaskState::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_a_huge_capacity_and_a_stolen_hostname_lure_no_task() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let honest = enroll_host(
        &server,
        "web-1",
        Some(Resources {
            cpu: 2048,
            memory_mib: 4096,
        }),
    )
    .await?;
    let thief = enroll_host(
        &server,
        "vm",
        Some(Resources {
            cpu: 1024,
            memory_mib: 1024,
        }),
    )
    .await?;
    let _honest_session = welcomed(
        honest.mtls(&server).await?,
        Hello {
            hostname: "web-1".into(),
            ..hello(&honest.instance_id, 2048, 4096)
        },
    )
    .await?;
    // 2^62 of everything, under the honest host's name.
    let _thief_session = welcomed(
        thief.mtls(&server).await?,
        Hello {
            hostname: "web-1".into(),
            ..hello(&thief.instance_id, 1 << 62, 1 << 62)
        },
    )
    .await?;

    let shown = describe(&mut admin, &thief.instance_id).await?;
    assert_eq!(
        shown.registered,
        Some(Resources {
            cpu: 1024,
            memory_mib: 1024
        }),
        "the registered capacity is enrollment's: {shown:?}"
    );
    let reported = shown.reported.unwrap_or_default();
    assert_eq!(
        (reported.cpu, reported.memory_mib),
        (
            berth_control::server::protocol::MAX_CPU_UNITS,
            berth_control::server::protocol::MAX_MEMORY_MIB
        ),
        "what it reports is shown, within the plausible range"
    );
    assert_eq!(shown.hostname, "vm", "the enrolled hostname stays");
    assert_eq!(shown.reported_hostname, "web-1", "the mismatch is shown");
    assert_eq!(
        shown.remaining,
        Some(Resources {
            cpu: 1024,
            memory_mib: 1024
        })
    );

    // Unpinned tasks go where the real room is.
    for _ in 0..3 {
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
        assert_eq!(
            task.instance_id, honest.instance_id,
            "the task went to the instance that lied about its capacity"
        );
    }

    // The operator accepts the reported size: from then on it counts.
    let accepted = admin
        .accept_instance_capacity(InstanceRef {
            instance_id: thief.instance_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(accepted.registered, accepted.reported);
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
    assert_eq!(task.instance_id, thief.instance_id);
    let missing = admin
        .accept_instance_capacity(InstanceRef {
            instance_id: "i-0000000000000000".into(),
        })
        .await
        .expect_err("unknown instance");
    assert_eq!(missing.code(), Code::NotFound);

    // Enrollment itself refuses implausible figures.
    let token = server.create_token(None).await?;
    let (_, csr_pem) = csr()?;
    let mut request = enroll_request(&token.activation_id, &token.activation_code, &csr_pem);
    request.host = Some(HostFacts {
        capacity: Some(Resources {
            cpu: 1 << 40,
            memory_mib: 1,
        }),
        ..request.host.unwrap_or_default()
    });
    let plain = fleet_channel(server.fleet_addr(), server.ca_pem(), None).await?;
    let refused = EnrollmentClient::new(plain)
        .enroll(request)
        .await
        .expect_err("implausible capacity");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("host.capacity.cpu"),
        "{refused:?}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m1_events_for_unassigned_tasks_and_huge_reasons_store_nothing() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let mut a = FakeAgent::start(&server, 1024, 1024).await?;

    // Phantom tasks: acknowledged (the agent's outbox moves on), not stored.
    for seq in 1..=5 {
        a.tx.send(event_with(
            seq,
            TaskState {
                family: "ghost".into(),
                stopped_reason: "A".repeat(10_000),
                ..running(&format!("phantom-{seq}"))
            },
        ))
        .await?;
        assert_eq!(next_ack(&mut a.inbound).await?, seq);
    }
    let tasks = admin
        .list_tasks(ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    assert!(tasks.is_empty(), "phantom rows: {tasks:?}");
    let shown = describe(&mut admin, &a.instance_id).await?;
    assert_eq!(shown.running_tasks_count, 0);

    // A long reason on a real task is cut to 1 KiB.
    let task_id = run_task(&mut admin, &a.instance_id).await?;
    next_assignment(&mut a.inbound).await?;
    a.tx.send(event_with(
        6,
        TaskState {
            stopped_reason: "é".repeat(2_000),
            ..running(&task_id)
        },
    ))
    .await?;
    assert_eq!(next_ack(&mut a.inbound).await?, 6);
    let stored = admin
        .describe_task(TaskRef {
            task_id: task_id.clone(),
        })
        .await?
        .into_inner()
        .state
        .unwrap_or_default();
    assert_eq!(stored.last_status, "RUNNING");
    assert!(
        stored.stopped_reason.len() <= berth_control::server::protocol::MAX_REASON_BYTES,
        "{} bytes stored",
        stored.stopped_reason.len()
    );
    assert!(
        stored
            .stopped_reason
            .ends_with(berth_control::server::protocol::TRUNCATED_MARK)
    );

    // 3.5 MB: refused, the session ends naming the field, nothing changes.
    a.tx.send(event_with(
        7,
        TaskState {
            last_status: "STOPPED".into(),
            stopped_reason: "A".repeat(3_500_000),
            ..running(&task_id)
        },
    ))
    .await?;
    let status = ended_with(&mut a.inbound).await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("event 7: task.stopped_reason"),
        "{status:?}"
    );
    let after = admin
        .describe_task(TaskRef { task_id })
        .await?
        .into_inner()
        .state
        .unwrap_or_default();
    assert_eq!(after.stopped_reason, stored.stopped_reason);
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_reconnecting_does_not_refill_the_instance_rate_and_loses_nothing() -> Result {
    const RATE: u32 = 2;
    const BURST: u32 = 10;
    const TASKS: u64 = 8;
    const RECONNECTS: u32 = 30;
    let dir = private_dir()?;
    let mut cfg = ServerConfig::loopback(dir.path());
    cfg.stream_rate = RATE;
    cfg.stream_burst = BURST;
    let server = Server::start(cfg).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let host = enroll(&server).await?;
    let started = Instant::now();
    // Connect and Hello take a token each, of one bucket per instance.
    let mut tokens: u64 = 0;

    // A reconnect loop, as fast as the client can: the instance's bucket
    // runs dry and Connect is refused, naming the instance.
    let mut limited = 0u32;
    for _ in 0..RECONNECTS {
        match open(
            host.mtls(&server).await?,
            hello(&host.instance_id, 4096, 1024),
        )
        .await
        {
            Ok((_tx, mut inbound)) => match next(&mut inbound).await? {
                ServerMsg::Welcome(_) => tokens += 2,
                other => return Err(format!("expected Welcome, got {other:?}").into()),
            },
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.message().contains(&host.instance_id),
                    "the refusal names the instance: {status:?}"
                );
                limited += 1;
            }
        }
    }
    assert!(limited >= 1, "{RECONNECTS} reconnects and none refused");
    let elapsed = started.elapsed().as_secs_f64();
    let budget = f64::from(BURST) + f64::from(RATE) * elapsed + 2.0;
    assert!(
        (tokens as f64) <= budget,
        "{tokens} messages accepted in {elapsed:.1}s; the instance's budget was {budget:.1}"
    );

    // Events over the rate wait for their tokens: a replay in one session
    // loses nothing (the agent backs off while Connect is refused).
    let mut tasks = Vec::new();
    let (tx, mut inbound) = loop {
        match open(
            host.mtls(&server).await?,
            hello(&host.instance_id, 4096, 1024),
        )
        .await
        {
            Ok(session) => break session,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                // The agent's shortest back-off.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    tokens += 2;
    match next(&mut inbound).await? {
        ServerMsg::Welcome(_) => {}
        other => return Err(format!("expected Welcome, got {other:?}").into()),
    }
    next_assignment(&mut inbound).await?;
    for _ in 0..TASKS {
        tasks.push(run_task(&mut admin, &host.instance_id).await?);
    }
    for (seq, task) in (1..).zip(&tasks) {
        tx.send(event_with(seq, running(task))).await?;
    }
    let mut applied = 0;
    while applied < TASKS {
        match next(&mut inbound).await? {
            ServerMsg::EventAck(ack) => applied = ack.sequence,
            ServerMsg::Assignment(_) => {}
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    tokens += TASKS;
    let elapsed = started.elapsed().as_secs_f64();
    let budget = f64::from(BURST) + f64::from(RATE) * elapsed + 2.0;
    assert!(
        (tokens as f64) <= budget,
        "{tokens} messages accepted in {elapsed:.1}s; the instance's budget was {budget:.1}"
    );
    let listed = admin
        .list_tasks(ListTasksRequest {
            instance_id: host.instance_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks;
    assert_eq!(listed.len() as u64, TASKS);
    assert!(
        listed
            .iter()
            .all(|t| t.state.as_ref().is_some_and(|s| s.last_status == "RUNNING")),
        "every event was applied: {listed:?}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m2_renewals_are_limited_per_instance() -> Result {
    let dir = private_dir()?;
    let server = hour_certificates(dir.path()).await?;
    let host = enroll(&server).await?;
    let mut fleet = FleetClient::new(host.mtls(&server).await?);
    for _ in 0..berth_control::server::RENEW_BURST {
        let (_, csr_pem) = csr()?;
        fleet.renew(RenewRequest { csr_pem }).await?;
    }
    let (_, csr_pem) = csr()?;
    let limited = fleet
        .renew(RenewRequest { csr_pem })
        .await
        .expect_err("one renewal too many");
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited.message().contains(&host.instance_id) && limited.message().contains("try again"),
        "{limited:?}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_a_stream_opened_before_deregistration_is_closed_by_it() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let host = enroll(&server).await?;
    // Connect, and hold the Hello back.
    let (tx, rx) = mpsc::channel::<AgentMessage>(4);
    let mut inbound = FleetClient::new(host.mtls(&server).await?)
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    admin
        .deregister_instance(InstanceRef {
            instance_id: host.instance_id.clone(),
        })
        .await?;
    // The Hello comes too late: no Welcome, the session is over.
    let _ = tx
        .send(agent(AgentMsg::Hello(hello(&host.instance_id, 1024, 1024))))
        .await;
    let status = ended_with(&mut inbound).await?;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("deregistered"), "{status:?}");
    assert!(!server.is_connected(&host.instance_id));
    let shown = describe(&mut admin, &host.instance_id).await?;
    assert_eq!(shown.status, "INACTIVE");
    assert!(!shown.agent_connected);
    assert_eq!(
        shown.last_heartbeat_at_ms, 0,
        "the late Hello was not recorded"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l8_the_old_certificate_is_refused_once_the_renewed_one_is_used() -> Result {
    let dir = private_dir()?;
    let server = hour_certificates(dir.path()).await?;
    let host = enroll(&server).await?;
    let old = host.mtls(&server).await?;
    let (key, csr_pem) = csr()?;
    let renewed = FleetClient::new(old.clone())
        .renew(RenewRequest { csr_pem })
        .await?
        .into_inner();
    let new_identity = || Identity::from_pem(&renewed.certificate_pem, key.serialize_pem());

    // Until the renewed certificate is used, the old one still works (the
    // agent may have lost the answer).
    drop(welcomed(old.clone(), hello(&host.instance_id, 1024, 1024)).await?);
    let new = fleet_channel(server.fleet_addr(), &host.ca_pem, Some(new_identity())).await?;
    let _session = welcomed(new.clone(), hello(&host.instance_id, 1024, 1024)).await?;

    // From now on the old one is refused, at Connect and at Renew.
    let fresh_old = host.mtls(&server).await?;
    let refused = match open(fresh_old.clone(), hello(&host.instance_id, 1024, 1024)).await {
        Err(status) => status,
        Ok((_tx, mut inbound)) => ended_with(&mut inbound).await?,
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("replaced by a renewed one"),
        "{refused:?}"
    );
    let (_, csr_pem) = csr()?;
    let refused = FleetClient::new(fresh_old)
        .renew(RenewRequest { csr_pem })
        .await
        .expect_err("renewal with the old certificate");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // The renewed one renews.
    let (_, csr_pem) = csr()?;
    FleetClient::new(new)
        .renew(RenewRequest { csr_pem })
        .await?;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i6_megabytes_of_hello_attributes_are_refused() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let host = enroll(&server).await?;
    let status = refused_hello(
        &server,
        &host,
        Hello {
            attributes: [("blob".to_owned(), "x".repeat(2_000_000))].into(),
            ..hello(&host.instance_id, 1024, 1024)
        },
    )
    .await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("Hello.attributes[\"blob\"]")
            && status.message().contains("at most 1024"),
        "{status:?}"
    );
    let status = refused_hello(
        &server,
        &host,
        Hello {
            attributes: (0..1000).map(|i| (format!("k{i}"), "v".into())).collect(),
            ..hello(&host.instance_id, 1024, 1024)
        },
    )
    .await?;
    assert!(status.message().contains("at most 64"), "{status:?}");
    let shown = describe(&mut admin, &host.instance_id).await?;
    // Only the platform recorded at enrollment: nothing of the Hellos.
    assert!(
        shown
            .attributes
            .keys()
            .all(|k| k == "ecs.os-type" || k == "ecs.cpu-architecture"),
        "{:?}",
        shown.attributes.keys().take(3).collect::<Vec<_>>()
    );
    assert_eq!(
        shown.last_heartbeat_at_ms, 0,
        "nothing of the Hellos was stored"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l3_hostnames_and_families_with_terminal_escapes_are_refused() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path())).await?;
    let mut admin = admin_client(server.admin_addr()).await?;
    let host = enroll(&server).await?;
    let status = refused_hello(
        &server,
        &host,
        Hello {
            hostname: "evil\x1b]0;pwned-title\x07\x1b[2K\x1b[1A\x1b[31mOK\x1b[0m".into(),
            ..hello(&host.instance_id, 1024, 1024)
        },
    )
    .await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("Hello.hostname: "),
        "{status:?}"
    );
    assert!(
        !status.message().contains('\x1b'),
        "quoted escaped: {status:?}"
    );
    let shown = describe(&mut admin, &host.instance_id).await?;
    assert_eq!(shown.hostname, "test-host");
    assert!(shown.reported_hostname.is_empty());

    // A family with escapes, on a task the instance really has.
    let (tx, mut inbound) = welcomed(
        host.mtls(&server).await?,
        hello(&host.instance_id, 1024, 1024),
    )
    .await?;
    let task_id = run_task(&mut admin, &host.instance_id).await?;
    next_assignment(&mut inbound).await?;
    tx.send(event_with(
        1,
        TaskState {
            family: "fam\x1b[8mhidden\x1b[0m".into(),
            ..running(&task_id)
        },
    ))
    .await?;
    let status = ended_with(&mut inbound).await?;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("event 1: task.family: "),
        "{status:?}"
    );
    let task = admin.describe_task(TaskRef { task_id }).await?.into_inner();
    assert_eq!(task.last_seen_at_ms, 0, "the refused event was not applied");
    assert_eq!(task.state.unwrap_or_default().family, "web");
    server.shutdown().await?;
    Ok(())
}
