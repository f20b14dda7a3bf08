//! `berth-agent status`: what the local agent reports, read from its local
//! API (`/v1/status`, `/v1/tasks`) and from the certificate in the data dir.
//!
//! The output is the API's JSON (`--json`: `/v1/status` with the tasks and
//! the certificate added) or a short table. Every request to the API has a
//! deadline ([`API_TIMEOUT`]): an agent that accepts the connection but does
//! not answer makes `status` fail, never hang.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use berth_proto::text::escape_control;

use crate::config::Config;

/// How long one request to the local API may take, connection included.
pub const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints the status of the agent that `config` describes.
pub async fn run(config: &Path, json: bool) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    let certificate = certificate_status(&cfg);
    let addr = api_addr(&cfg).map_err(|e| with_certificate_note(e, &certificate))?;
    let status = http_get_json(&addr, "/v1/status")
        .await
        .with_context(|| format!("cannot reach the agent's local API at {addr}"))
        .map_err(|e| with_certificate_note(e, &certificate))?;
    let tasks = http_get_json(&addr, "/v1/tasks")
        .await
        .with_context(|| format!("cannot reach the agent's local API at {addr}"))?;
    if json {
        let mut out = status;
        out["tasks"] = tasks["tasks"].clone();
        out["certificate"] = certificate;
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let meta = &status;
        let metrics = &status["metrics"];
        // What the API reports comes from the control plane and task
        // definitions: escaped, like every CLI table.
        let field = |v: &serde_json::Value| escape_control(v.as_str().unwrap_or("-")).into_owned();
        println!("instance    {}", field(&meta["instanceId"]));
        println!("server      {}", field(&meta["server"]));
        println!(
            "connected   {}",
            meta["connected"].as_bool().unwrap_or(false)
        );
        println!("certificate {}", certificate_line(&certificate));
        println!("pending events {}", meta["pendingEvents"]);
        for line in metrics_lines(metrics) {
            println!("{line}");
        }
        println!();
        println!(
            "{:<34} {:<20} {:<9} {:<9}",
            "TASK", "FAMILY", "STATUS", "DESIRED"
        );
        for t in tasks["tasks"].as_array().into_iter().flatten() {
            println!(
                "{:<34} {:<20} {:<9} {:<9}",
                field(&t["taskId"]),
                field(&t["family"]),
                field(&t["lastStatus"]),
                field(&t["desiredStatus"]),
            );
        }
    }
    Ok(())
}

/// `{"notBefore", "notAfter", "expired"}` of the client certificate in the
/// data dir, or `{"error": …}` when it cannot be read.
fn certificate_status(cfg: &Config) -> serde_json::Value {
    let path = cfg.data_dir.join(crate::identity::CERT_FILE);
    let validity = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|pem| crate::identity::Validity::of_pem(&pem));
    match validity {
        Ok(v) => {
            let ms = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            };
            serde_json::json!({
                "notBefore": berth_proto::json::time_json(ms(v.not_before)),
                "notAfter": berth_proto::json::time_json(ms(v.not_after)),
                "expired": v.expired_at(std::time::SystemTime::now()),
            })
        }
        Err(e) => serde_json::json!({ "error": e }),
    }
}

fn certificate_line(c: &serde_json::Value) -> String {
    if let Some(e) = c["error"].as_str() {
        return e.to_string();
    }
    let not_after = c["notAfter"].as_str().unwrap_or("-");
    if c["expired"].as_bool() == Some(true) {
        format!(
            "EXPIRED at {not_after}: the control plane refuses it; enroll this host again (berth-agent enroll --force …)"
        )
    } else {
        format!("valid until {not_after} (renewed automatically while connected)")
    }
}

/// Adds what is wrong with the certificate to an error of `status`.
fn with_certificate_note(e: anyhow::Error, c: &serde_json::Value) -> anyhow::Error {
    if c["expired"].as_bool() == Some(true) {
        e.context(format!("certificate {}", certificate_line(c)))
    } else {
        e
    }
}

/// The API address: from the config, or from `agent-api.json` when the
/// config asks for port 0.
fn api_addr(cfg: &Config) -> anyhow::Result<String> {
    let addr = cfg.api_addr();
    if addr.port() != 0 {
        return Ok(addr.to_string());
    }
    let p = cfg.data_dir.join("agent-api.json");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("cannot read {} (is the agent running?)", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("invalid {}", p.display()))?;
    v["apiAddr"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no apiAddr in {}", p.display()))
}

/// The human form of the `metrics` of `/v1/status`: counters since the
/// agent started.
fn metrics_lines(m: &serde_json::Value) -> Vec<String> {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let t = &m["tasksByStatus"];
    vec![
        format!(
            "tasks       {} running, {} pending, {} stopped",
            n(&t["RUNNING"]),
            n(&t["PENDING"]),
            n(&t["STOPPED"])
        ),
        format!(
            "restarts    {} container restarts since the agent started",
            n(&m["containerRestarts"])
        ),
        format!(
            "sessions    {} established, {} reconnect attempts",
            n(&m["sessionsEstablished"]),
            n(&m["sessionReconnects"])
        ),
        format!(
            "images      {} made available (pulled or cached), {} failed; {} Docker API errors",
            n(&m["imagePulls"]),
            n(&m["imagePullFailures"]),
            n(&m["dockerRequestErrors"])
        ),
        format!("state file  {} bytes", n(&m["storeBytes"])),
    ]
}

/// An HTTP/1.1 GET on loopback, parsed as JSON.
async fn http_get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&http_get(addr, path).await?)?)
}

/// An HTTP/1.1 GET on loopback with a deadline of [`API_TIMEOUT`]; the
/// body of a 200 answer.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    http_get_within(API_TIMEOUT, addr, path).await
}

async fn http_get_within(deadline: Duration, addr: &str, path: &str) -> anyhow::Result<String> {
    match tokio::time::timeout(deadline, http_get_unbounded(addr, path)).await {
        Ok(answer) => answer,
        Err(_) => bail!(
            "{path}: no answer within {}",
            humantime::format_duration(deadline)
        ),
    }
}

async fn http_get_unbounded(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_api_that_never_answers_is_an_error_not_a_hang() {
        // Accepts the connection, reads nothing, answers nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let held = tokio::spawn(async move {
            let conn = listener.accept().await;
            std::future::pending::<()>().await;
            drop(conn);
        });
        let err = http_get_within(Duration::from_millis(50), &addr, "/v1/status")
            .await
            .expect_err("no answer");
        assert!(err.to_string().contains("no answer within 50ms"), "{err}");
        held.abort();
    }
}
