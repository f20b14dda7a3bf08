//! The agent's local API on `127.0.0.1:51678` (plain HTTP, loopback):
//! `/v1/metadata`, `/v1/tasks`, `/v1/tasks/{id}`, `/metrics`, `/healthz`.
//!
//! Read-only: it renders the manager's [`View`] and the agent's
//! [`AgentMetrics`]; it cannot change anything.
//! Task JSON has the same shape as `berth task describe --json`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::manager::View;
use crate::metrics::AgentMetrics;

#[derive(Clone)]
struct Api {
    view: watch::Receiver<View>,
    metrics: Arc<AgentMetrics>,
    server: String,
}

pub fn router(view: watch::Receiver<View>, metrics: Arc<AgentMetrics>, server: String) -> Router {
    Router::new()
        .route("/v1/metadata", get(metadata))
        .route("/v1/tasks", get(tasks))
        .route("/v1/tasks/{id}", get(task))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Api {
            view,
            metrics,
            server,
        })
}

/// Binds the API; returns the bound address and the serving future.
pub async fn bind(
    addr: SocketAddr,
    view: watch::Receiver<View>,
    metrics: Arc<AgentMetrics>,
    server: String,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<(
    SocketAddr,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(view, metrics, server);
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

async fn prometheus(State(api): State<Api>) -> Response {
    let v = api.view.borrow().clone();
    let body = api.metrics.render(&v);
    ([("content-type", berth_proto::metrics::CONTENT_TYPE)], body).into_response()
}
