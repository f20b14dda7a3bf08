//! `berth token create`.

use std::time::Duration;

use anyhow::{anyhow, bail};
use berth_proto::json::format_time_ms;
use berth_proto::text::escape_control;
use berth_proto::v1::{CreateTokenRequest, Token};
use serde_json::{Value, json};

use super::client::Admin;
use super::print_json;

/// The exact command that enrolls a host with this token.
pub fn enroll_command(token: &Token) -> anyhow::Result<String> {
    let fleet = token
        .fleet_addresses
        .first()
        .ok_or_else(|| anyhow!("the control plane advertises no fleet address"))?;
    Ok(format!(
        "berth-agent enroll --server https://{fleet} --activation-id {} --activation-code {} --ca-hash sha256:{}",
        token.activation_id, token.activation_code, token.ca_sha256
    ))
}

/// `berth token create --json`.
pub fn token_json(token: &Token) -> anyhow::Result<Value> {
    Ok(json!({
        "activationId": token.activation_id,
        "activationCode": token.activation_code,
        "expiresAt": berth_proto::json::time_json(token.expires_at_ms),
        "caHash": format!("sha256:{}", token.ca_sha256),
        "hostname": (!token.hostname.is_empty()).then_some(&token.hostname),
        "from": (!token.source_cidrs.is_empty()).then_some(&token.source_cidrs),
        "cluster": (!token.cluster.is_empty()).then_some(&token.cluster),
        "enrollCommand": enroll_command(token)?,
    }))
}

pub(super) async fn token_create(
    admin: &mut Admin,
    ttl: Duration,
    hostname: Option<String>,
    from: &[crate::server::enroll::Cidr],
    cluster: &str,
    json: bool,
) -> anyhow::Result<()> {
    if ttl < Duration::from_secs(1) {
        bail!("--ttl must be at least 1s");
    }
    if from.len() > crate::server::enroll::MAX_SOURCE_CIDRS {
        bail!(
            "--from given {} times: an activation takes at most {} networks",
            from.len(),
            crate::server::enroll::MAX_SOURCE_CIDRS
        );
    }
    let r = admin
        .client
        .create_token(CreateTokenRequest {
            ttl_seconds: ttl.as_secs(),
            hostname: hostname.unwrap_or_default(),
            source_cidrs: from.iter().map(ToString::to_string).collect(),
            cluster: cluster.to_owned(),
        })
        .await;
    let token = r.map_err(|s| admin.status(s))?.into_inner();
    if json {
        return print_json(&token_json(&token)?);
    }
    let expires = format_time_ms(token.expires_at_ms).unwrap_or_else(|| "-".into());
    println!("Activation ID:   {}", escape_control(&token.activation_id));
    println!(
        "Activation code: {}",
        escape_control(&token.activation_code)
    );
    println!(
        "Expires at:      {expires} (in {})",
        humantime::format_duration(Duration::from_secs(ttl.as_secs()))
    );
    if !token.hostname.is_empty() {
        println!("Only for host:   {}", escape_control(&token.hostname));
    }
    if !token.cluster.is_empty() {
        println!("Cluster:         {}", escape_control(&token.cluster));
    }
    if !token.source_cidrs.is_empty() {
        println!(
            "Only from:       {}",
            escape_control(&token.source_cidrs.join(", "))
        );
    }
    println!();
    println!("Enroll a host by running this on it (the code works once):");
    println!();
    println!("{}", escape_control(&enroll_command(&token)?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_line() {
        let t = Token {
            activation_id: "id1".into(),
            activation_code: "code1".into(),
            expires_at_ms: 1_700_000_000_000,
            ca_sha256: "ab".into(),
            fleet_addresses: vec!["berth.example:7420".into()],
            hostname: String::new(),
            source_cidrs: vec!["10.9.0.0/24".into()],
            cluster: String::new(),
        };
        assert_eq!(
            enroll_command(&t).expect("line"),
            "berth-agent enroll --server https://berth.example:7420 --activation-id id1 --activation-code code1 --ca-hash sha256:ab"
        );
        let v = token_json(&t).expect("json");
        assert_eq!(v["expiresAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["caHash"], "sha256:ab");
        assert_eq!(v["from"], json!(["10.9.0.0/24"]));
    }
}
