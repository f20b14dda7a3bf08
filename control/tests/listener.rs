//! The listener layer in the real server: a connection without a call in
//! progress is closed after the idle timeout, while an agent's session (one
//! call for as long as it lasts) keeps its connection past it.

mod common;

use common::*;

use std::time::Duration;

use berth_control::{Server, ServerConfig};
use berth_proto::v1::RunTaskRequest;
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_connection_past_the_idle_timeout_an_idle_one_is_closed() -> Result {
    let dir = private_dir()?;
    let mut cfg = ServerConfig::loopback(dir.path());
    cfg.connections.idle_timeout = Duration::from_secs(1);
    let server = Server::start(cfg).await?;
    let mut agent = FakeAgent::start(&server, 1024, 1024).await?;

    // Opened after the session's connection, so its idle deadline is the
    // later one; it never even starts TLS.
    let mut idle = tokio::net::TcpStream::connect(server.fleet_addr()).await?;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the idle connection is closed by the server: {read:?}"
    );

    // The session's connection has passed its idle deadline too, yet it
    // still carries the session: an assignment reaches the agent.
    let mut admin = admin_client(server.admin_addr()).await?;
    let task = admin
        .run_task(RunTaskRequest {
            task_definition_json: TASK_DEFINITION.into(),
            instance_id: agent.instance_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tasks
        .remove(0);
    let assigned = next_assignment(&mut agent.inbound).await?;
    let task_id = task.state.map(|s| s.task_id).unwrap_or_default();
    assert!(
        assigned.tasks.iter().any(|t| t.task_id == task_id),
        "the session still works: {assigned:?}"
    );
    Ok(())
}
