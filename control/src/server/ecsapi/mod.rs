//! The ECS API (SPEC §7): `POST /` with `X-Amz-Target:
//! AmazonEC2ContainerServiceV20141113.<Operation>` and a JSON 1.1 body,
//! signed with AWS Signature Version 4 ([`sigv4`]) by an access key berth
//! issued (`berth access-key`, `server::accesskeys`). The operations
//! ([`ops`]) call the same domain functions as the admin API.
//!
//! Plain HTTP, loopback only for now (`--ecs-api-listen`; off loopback the
//! server refuses to start: HTTPS is not there yet).
//!
//! Order of checks, each answered in ECS' error shape
//! (`{"__type": "...", "message": "..."}`, [`EcsError`]) with nothing
//! changed: the body at most [`MAX_BODY_BYTES`] (read no further); the
//! signature (403: `MissingAuthenticationTokenException`,
//! `InvalidSignatureException`, `UnrecognizedClientException` for an
//! unknown or revoked key or a session token); then method, target and
//! JSON (400).

pub mod ops;
pub mod sigv4;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{info, warn};

use super::Core;
use super::accesskeys;

/// Largest request body read (ECS' own requests are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The `X-Amz-Target` prefix of ECS' operations.
pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
/// The SigV4 service name of ECS.
pub const SERVICE: &str = "ecs";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Longest operation name read from `X-Amz-Target`.
const MAX_OPERATION_LEN: usize = 64;

/// An ECS error: HTTP status, exception name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl EcsError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        EcsError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// `InvalidParameterException` (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterException",
            message,
        )
    }

    /// `ClientException` (400).
    pub fn client(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ClientException", message)
    }

    /// `ServerException` (500).
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            message,
        )
    }

    /// A 403 from signature verification.
    pub fn auth(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, message)
    }

    /// The JSON 1.1 body.
    pub fn body(&self) -> Value {
        json!({ "__type": self.kind, "message": self.message })
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    (
        status,
        [
            ("content-type", CONTENT_TYPE.to_owned()),
            ("x-amzn-requestid", request_id),
        ],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for EcsError {
    fn into_response(self) -> Response {
        let mut r = json_response(self.status, &self.body());
        if let Ok(v) = axum::http::HeaderValue::from_str(self.kind) {
            r.headers_mut().insert("x-amzn-errortype", v);
        }
        r
    }
}

/// Serves the ECS API on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(handle).with_state(core);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

fn now_secs() -> i64 {
    berth_proto::now_ms() / 1000
}

async fn handle(
    State(core): State<Arc<Core>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match answer(&core, &method, &uri, &headers, body).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => e.into_response(),
    }
}

/// The operation's name from `X-Amz-Target`.
pub fn operation_of(target: Option<&str>) -> Result<&str, EcsError> {
    let target = target.ok_or_else(|| {
        EcsError::invalid(format!(
            "the X-Amz-Target header is missing: it names the operation, {TARGET_PREFIX}<Operation>"
        ))
    })?;
    let op = target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
        EcsError::invalid(format!(
            "X-Amz-Target {:.80} is not an ECS operation: expected {TARGET_PREFIX}<Operation>",
            berth_proto::text::escape_control(target)
        ))
    })?;
    if op.is_empty()
        || op.len() > MAX_OPERATION_LEN
        || !op.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(EcsError::invalid(format!(
            "X-Amz-Target names no operation: {:.80}",
            berth_proto::text::escape_control(target)
        )));
    }
    Ok(op)
}

async fn answer(
    core: &Core,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, EcsError> {
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        EcsError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ClientException",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes (1 MiB), the most the ECS API reads"),
        )
    })?;
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let req = sigv4::HttpRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body: &body,
    };
    let signed = sigv4::SignedRequest::parse(&req, now_secs(), SERVICE).map_err(|e| {
        info!(error = %e, "ECS API request refused");
        EcsError::auth(e.exception(), e.to_string())
    })?;
    let id = signed.authorization.access_key_id.clone();
    let secret = accesskeys::valid_secret(core, &id).await.map_err(|e| {
        warn!(error = %e, "ECS API: cannot read access keys");
        EcsError::server("the control plane's store is unavailable; try again")
    })?;
    let Some(secret) = secret else {
        info!(access_key = %id, "ECS API request refused: unknown or revoked access key");
        return Err(EcsError::auth(
            "UnrecognizedClientException",
            "The security token included in the request is invalid: the access key is unknown or revoked (`berth access-key ls`)",
        ));
    };
    signed.verify(&secret).map_err(|e| {
        info!(access_key = %id, "ECS API request refused: signature mismatch");
        EcsError::auth(e.exception(), e.to_string())
    })?;
    if method != Method::POST || uri.path() != "/" {
        return Err(EcsError::invalid(format!(
            "the ECS API takes POST / only, not {method} {:.80}",
            uri.path()
        )));
    }
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    let op = operation_of(target)?;
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            EcsError::new(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                format!("the request body is not JSON: {e}"),
            )
        })?
    };
    let region = signed.authorization.region.clone();
    let result = ops::call(core, op, &input, &region, &id).await;
    match &result {
        Ok(_) => info!(operation = op, access_key = %id, "ECS API"),
        Err(e) => {
            info!(operation = op, access_key = %id, error = e.kind, message = %e.message, "ECS API")
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_names_an_ecs_operation() {
        assert_eq!(
            operation_of(Some("AmazonEC2ContainerServiceV20141113.ListClusters")),
            Ok("ListClusters")
        );
        for (bad, needle) in [
            (None, "missing"),
            (Some("AmazonSSM.GetParameter"), "not an ECS operation"),
            (
                Some("AmazonEC2ContainerServiceV20141113."),
                "names no operation",
            ),
            (
                Some("AmazonEC2ContainerServiceV20141113.a/b"),
                "names no operation",
            ),
        ] {
            let e = operation_of(bad).expect_err("refused");
            assert_eq!(e.kind, "InvalidParameterException");
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    #[test]
    fn errors_have_the_json_1_1_shape() {
        let e = EcsError::auth("InvalidSignatureException", "no");
        assert_eq!(
            e.body(),
            json!({"__type": "InvalidSignatureException", "message": "no"})
        );
        assert_eq!(e.clone().into_response().status(), StatusCode::FORBIDDEN);
        assert_eq!(
            e.into_response().headers()["x-amzn-errortype"],
            "InvalidSignatureException"
        );
    }
}
