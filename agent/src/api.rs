//! The agent's local API on `127.0.0.1:51678` (plain HTTP, loopback):
//! `/v1/metadata`, `/v1/status`, `/v1/tasks`, `/v1/tasks/{id}`, `/metrics`,
//! `/healthz`.
//!
//! `/v1/status` is what `berth-agent status` shows: the fields of
//! `/v1/metadata` and a `metrics` object (tasks by status, the outbox, the
//! counters since the agent started), as JSON, so the command never parses
//! the Prometheus text.
//!
//! Read-only: it renders the manager's [`View`] and the agent's
//! [`AgentMetrics`]; it cannot change anything.
//! Task JSON has the same shape as `berth task describe --json`.
//!
//! Only requests addressed to the agent are answered: the `Host` header must
//! name the bound address (its IP, or any IP when bound to an unspecified
//! address) or `localhost`, with the bound port if it has one; others get
//! `421 Misdirected Request` and the reason. That keeps a web page on the
//! host from reading task metadata through DNS rebinding (its requests carry
//! the page's own host name).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
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

/// The API's routes for a listener bound to `bound`.
pub fn router(
    bound: SocketAddr,
    view: watch::Receiver<View>,
    metrics: Arc<AgentMetrics>,
    server: String,
) -> Router {
    Router::new()
        .route("/v1/metadata", get(metadata))
        .route("/v1/status", get(status))
        .route("/v1/tasks", get(tasks))
        .route("/v1/tasks/{id}", get(task))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Api {
            view,
            metrics,
            server,
        })
        .layer(middleware::from_fn_with_state(bound, check_host))
}

/// Refuses a request whose `Host` is not the bound address or `localhost`.
async fn check_host(State(bound): State<SocketAddr>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    match host {
        Some(host) if !host_allowed(&host, bound) => {
            let shown: String = host.chars().take(100).collect();
            (
                StatusCode::MISDIRECTED_REQUEST,
                Json(json!({
                    "error": format!(
                        "Host {shown:?} is not this agent's address: the local API answers only requests to {bound} or localhost:{}",
                        bound.port()
                    )
                })),
            )
                .into_response()
        }
        // No Host at all (HTTP/1.0): not a browser's request.
        _ => next.run(request).await,
    }
}

/// Whether `host` (a `Host` header: `name`, `name:port`, `[v6]:port`)
/// addresses a listener bound to `bound`.
fn host_allowed(host: &str, bound: SocketAddr) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        // `[::1]:80` or `127.0.0.1:80` or `localhost:80`; not a bare `::1`.
        Some((name, port)) if !name.contains(':') || name.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    if port.is_some_and(|p| p.parse::<u16>() != Ok(bound.port())) {
        return false;
    }
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip == bound.ip() || bound.ip().is_unspecified())
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
    let app = router(bound, view, metrics, server);
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
    Json(metadata_json(&api, &v))
}

async fn status(State(api): State<Api>) -> Json<serde_json::Value> {
    let v = api.view.borrow().clone();
    let mut out = metadata_json(&api, &v);
    out["metrics"] = status_metrics(&api.metrics, &v);
    Json(out)
}

/// The task statuses `/v1/status` counts, as `berth_agent_tasks` does.
const TASK_STATUSES: [&str; 3] = ["PENDING", "RUNNING", "STOPPED"];

/// The numbers `berth-agent status` shows (camelCase, as the rest of
/// `status --json`): the view's gauges and the counters since the agent
/// started, the same values `/metrics` has.
fn status_metrics(metrics: &AgentMetrics, v: &View) -> serde_json::Value {
    let tasks_by_status: serde_json::Map<String, serde_json::Value> = TASK_STATUSES
        .iter()
        .map(|status| {
            let n = v.tasks.iter().filter(|t| t.last_status == *status).count();
            ((*status).to_owned(), json!(n))
        })
        .collect();
    json!({
        "tasksByStatus": tasks_by_status,
        "containerRestarts": metrics.container_restarts.get(),
        "outboxEvents": v.outbox.len(),
        "sessionsEstablished": metrics.sessions_established.get(),
        "sessionReconnects": metrics.session_reconnects.get(),
        "imagePulls": metrics.image_pulls_succeeded.get(),
        "imagePullFailures": metrics.image_pulls_failed.get(),
        "dockerRequestErrors": docker_request_errors(metrics, v),
        "storeBytes": metrics.store_bytes(),
    })
}

/// The sum of `berth_agent_docker_request_errors_total` over its operations.
/// `AgentMetrics` keeps the per-operation counters private, so they are read
/// back from its own rendering; an accessor on `AgentMetrics` would replace
/// this.
fn docker_request_errors(metrics: &AgentMetrics, v: &View) -> u64 {
    metrics
        .render(v)
        .lines()
        .filter(|l| l.starts_with("berth_agent_docker_request_errors_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

fn metadata_json(api: &Api, v: &View) -> serde_json::Value {
    json!({
        "instanceId": v.instance_id,
        "agentVersion": env!("CARGO_PKG_VERSION"),
        "server": api.server,
        "connected": v.connected,
        "generation": v.generation,
        "lastEventSequence": v.last_seq,
        "pendingEvents": v.outbox.len(),
        "storeError": v.store_error,
        "hostname": crate::identity::hostname(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bound_address_and_localhost_are_hosts_of_the_api() {
        let v4: SocketAddr = "127.0.0.1:51678".parse().expect("addr");
        for ok in [
            "127.0.0.1:51678",
            "127.0.0.1",
            "localhost:51678",
            "LOCALHOST",
        ] {
            assert!(host_allowed(ok, v4), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:51678",
            "127.0.0.1:80",
            "127.0.0.2:51678",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:51678",
            "",
        ] {
            assert!(!host_allowed(bad, v4), "{bad}");
        }
        let v6: SocketAddr = "[::1]:51678".parse().expect("addr");
        assert!(host_allowed("[::1]:51678", v6));
        assert!(host_allowed("[::1]", v6));
        assert!(!host_allowed("[::2]:51678", v6));
        let any: SocketAddr = "0.0.0.0:51678".parse().expect("addr");
        assert!(host_allowed("10.1.2.3:51678", any));
        assert!(!host_allowed("attacker.example:51678", any));
    }

    #[tokio::test]
    async fn a_request_for_another_host_gets_421() {
        use tower::ServiceExt;
        let bound: SocketAddr = "127.0.0.1:51678".parse().expect("addr");
        let (_tx, view) = watch::channel(View::default());
        let app = router(
            bound,
            view,
            Arc::new(AgentMetrics::default()),
            "https://s".into(),
        );
        let get = |host: &'static str| {
            axum::http::Request::get("/v1/tasks")
                .header(header::HOST, host)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let refused = app
            .clone()
            .oneshot(get("attacker.example"))
            .await
            .expect("call");
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        let body = axum::body::to_bytes(refused.into_body(), 4096)
            .await
            .expect("body");
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("attacker.example") && body.contains("127.0.0.1:51678"),
            "{body}"
        );
        let served = app.oneshot(get("127.0.0.1:51678")).await.expect("call");
        assert_eq!(served.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn status_counts_tasks_and_reads_the_counters() {
        use crate::metrics::DockerOp;
        use berth_proto::v1::{TaskEvent, TaskState};
        use tower::ServiceExt;
        let bound: SocketAddr = "127.0.0.1:51678".parse().expect("addr");
        let task = |id: &str, status: &str| TaskState {
            task_id: id.into(),
            last_status: status.into(),
            ..Default::default()
        };
        let view = View {
            instance_id: "i-1".into(),
            generation: 7,
            tasks: vec![
                task("a", "RUNNING"),
                task("b", "RUNNING"),
                task("c", "STOPPED"),
            ],
            outbox: vec![TaskEvent::default(); 2],
            connected: true,
            store_error: Some("disk full".into()),
            ..Default::default()
        };
        let metrics = Arc::new(AgentMetrics::default());
        metrics.container_restarts.inc();
        metrics.session_reconnects.inc();
        metrics.set_store_bytes(1234);
        let took = std::time::Duration::from_millis(1);
        metrics.docker_call(DockerOp::Start, took, true);
        metrics.docker_call(DockerOp::Stop, took, true);
        metrics.docker_call(DockerOp::Stop, took, false);
        let (_tx, view) = watch::channel(view);
        let app = router(bound, view, metrics, "https://s".into());
        let request = axum::http::Request::get("/v1/status")
            .header(header::HOST, "127.0.0.1:51678")
            .body(axum::body::Body::empty())
            .expect("request");
        let answer = app.oneshot(request).await.expect("call");
        assert_eq!(answer.status(), StatusCode::OK);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .expect("body");
        let status: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(status["instanceId"], "i-1", "{status}");
        assert_eq!(status["connected"], true, "{status}");
        assert_eq!(status["generation"], 7, "{status}");
        assert_eq!(status["pendingEvents"], 2, "{status}");
        assert_eq!(status["storeError"], "disk full", "{status}");
        assert_eq!(
            status["metrics"],
            json!({
                "tasksByStatus": {"PENDING": 0, "RUNNING": 2, "STOPPED": 1},
                "containerRestarts": 1,
                "outboxEvents": 2,
                "sessionsEstablished": 0,
                "sessionReconnects": 1,
                "imagePulls": 0,
                "imagePullFailures": 0,
                "dockerRequestErrors": 2,
                "storeBytes": 1234,
            }),
            "{status}"
        );
    }
}
