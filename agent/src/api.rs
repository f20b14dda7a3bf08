//! The agent's local API on `127.0.0.1:51678` (plain HTTP, loopback):
//! `/v1/metadata`, `/v1/tasks`, `/v1/tasks/{id}`, `/metrics`, `/healthz`.
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
}
