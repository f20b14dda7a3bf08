//! The agent's local API on `127.0.0.1:51678` (plain HTTP, loopback):
//! `/v1/metadata`, `/v1/tasks`, `/v1/tasks/{id}`, `/metrics`, `/healthz`.
//!
//! Read-only: it renders the manager's [`View`]; it cannot change anything.
//! Task JSON has the same shape as `berth task describe --json`.

use std::net::SocketAddr;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::manager::View;

#[derive(Clone)]
struct Api {
    view: watch::Receiver<View>,
    server: String,
}

pub fn router(view: watch::Receiver<View>, server: String) -> Router {
    Router::new()
        .route("/v1/metadata", get(metadata))
        .route("/v1/tasks", get(tasks))
        .route("/v1/tasks/{id}", get(task))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Api { view, server })
}

/// Binds the API; returns the bound address and the serving future.
pub async fn bind(
    addr: SocketAddr,
    view: watch::Receiver<View>,
    server: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(view, server);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await
    };
    Ok((bound, fut))
}

async fn metadata(State(api): State<Api>) -> Json<serde_json::Value> {
    let v = api.view.borrow().clone();
    Json(json!({
        "instanceId": v.instance_id,
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "server": api.server,
        "connected": v.connected,
        "generation": v.generation,
        "lastEventSequence": v.last_seq,
        "pendingEvents": v.outbox.len(),
        "storeError": v.store_error,
        "hostname": crate::identity::hostname(),
    }))
}

async fn tasks(State(api): State<Api>) -> Json<serde_json::Value> {
    let v = api.view.borrow().clone();
    let tasks: Vec<serde_json::Value> = v
        .tasks
        .iter()
        .map(|t| berth_proto::json::task_json(&v.instance_id, t, 0))
        .collect();
    Json(json!({ "tasks": tasks }))
}

async fn task(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let v = api.view.borrow().clone();
    match v.tasks.iter().find(|t| t.task_id == id) {
        Some(t) => Json(berth_proto::json::task_json(&v.instance_id, t, 0)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no task {id} on this instance") })),
        )
            .into_response(),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let v = api.view.borrow().clone();
    let mut out = String::new();
    out.push_str("# HELP berth_agent_connected 1 when the session with the control plane is up.\n");
    out.push_str("# TYPE berth_agent_connected gauge\n");
    out.push_str(&format!(
        "berth_agent_connected {}\n",
        u8::from(v.connected)
    ));
    out.push_str("# HELP berth_agent_tasks Tasks known to the agent by last status.\n");
    out.push_str("# TYPE berth_agent_tasks gauge\n");
    for status in ["PENDING", "RUNNING", "STOPPED"] {
        let n = v.tasks.iter().filter(|t| t.last_status == status).count();
        out.push_str(&format!("berth_agent_tasks{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP berth_agent_container_restarts_total Container restarts by the restart policy.\n",
    );
    out.push_str("# TYPE berth_agent_container_restarts_total counter\n");
    let restarts: u64 = v
        .tasks
        .iter()
        .flat_map(|t| t.containers.iter())
        .map(|c| u64::from(c.restart_count))
        .sum();
    out.push_str(&format!(
        "berth_agent_container_restarts_total {restarts}\n"
    ));
    out.push_str("# HELP berth_agent_outbox_events Events waiting for the control plane's acknowledgement.\n");
    out.push_str("# TYPE berth_agent_outbox_events gauge\n");
    out.push_str(&format!("berth_agent_outbox_events {}\n", v.outbox.len()));
    out.push_str(
        "# HELP berth_agent_assignment_generation Generation of the last applied assignment.\n",
    );
    out.push_str("# TYPE berth_agent_assignment_generation gauge\n");
    out.push_str(&format!(
        "berth_agent_assignment_generation {}\n",
        v.generation
    ));
    out.push_str("# HELP berth_agent_store_healthy 0 while the agent cannot write its state (see storeError in /v1/metadata).\n");
    out.push_str("# TYPE berth_agent_store_healthy gauge\n");
    out.push_str(&format!(
        "berth_agent_store_healthy {}\n",
        u8::from(v.store_error.is_none())
    ));
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
