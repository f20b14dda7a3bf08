//! `Enrollment.Enroll`: an activation (id + code) and a CSR in, a client
//! certificate out.
//!
//! Order matters: the source address is checked against its recent
//! failures first (at most [`DEFAULT_ENROLL_FAILURES`] a minute, then
//! RESOURCE_EXHAUSTED without looking at the request), then the activation
//! (a wrong code learns nothing about the activation; the code's SHA-256 is
//! compared in constant time), its use, expiry and hostname binding, then
//! the CSR (a broken CSR does not burn the activation), then the activation
//! is consumed and the instance created in one transaction (two hosts racing
//! for one activation: one wins). Every attempt counts as a failure of its
//! source address until it succeeds (so parallel attempts cannot slip past
//! the limit together); a refusal changes nothing stored.
//! The activation code is never logged.
//!
//! [`DEFAULT_ENROLL_FAILURES`]: super::DEFAULT_ENROLL_FAILURES

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use berth_proto::v1::enrollment_server::Enrollment;
use berth_proto::v1::{EnrollRequest, EnrollResponse};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span, warn};

use super::protocol;
use super::store::{NewInstance, StoreError};
use super::{Core, store_status};

/// The message for an unknown activation id and for a wrong code alike.
pub const UNKNOWN_ACTIVATION: &str = "unknown activation id or wrong code";

pub struct EnrollmentService {
    core: Arc<Core>,
}

impl EnrollmentService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        EnrollmentService { core }
    }
}

/// `i-` and 16 random hex digits.
pub fn new_instance_id() -> String {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    format!("i-{}", hex::encode(bytes))
}

/// Compares two byte strings in time that depends only on their lengths
/// (both are SHA-256 digests here, so always 32 bytes). `black_box` keeps
/// the optimiser from turning the fold into an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    std::hint::black_box(diff) == 0
}

/// Whether the host's reported name satisfies the activation's binding
/// (host names compare case-insensitively).
fn hostname_matches(bound: &str, reported: &str) -> bool {
    bound.eq_ignore_ascii_case(reported.trim())
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = request.remote_addr();
        // Without a peer address (never over TCP) all such callers share
        // one counter.
        let source = peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.ip());
        let req = request.into_inner();
        let activation_id = req.activation_id.trim().to_owned();
        // The id comes from outside: bounded in logs.
        let logged_id: String = activation_id.chars().take(64).collect();
        let span = info_span!("enroll", activation_id = %logged_id, peer = ?peer);
        async move {
            // Counted as a failure until it succeeds.
            let attempt = match self.core.enroll_failures.begin(source, Instant::now()) {
                Ok(at) => at,
                Err(limited) => {
                warn!(
                    failures = limited.failures,
                    "enrollment refused: too many failed attempts from this address"
                );
                return Err(Status::resource_exhausted(format!(
                    "too many failed enrollment attempts from {source} ({} in the last {}); try again in {}",
                    limited.failures,
                    humantime::format_duration(limited.window),
                    humantime::format_duration(std::time::Duration::from_secs(
                        limited.retry_after.as_secs().max(1)
                    ))
                )));
                }
            };
            let found = {
                let id = activation_id.clone();
                self.core
                    .db(move |s| s.activation(&id))
                    .await
                    .map_err(store_status)?
            };
            let code_hash = Sha256::digest(req.activation_code.trim().as_bytes());
            let Some(activation) = found else {
                // Compare anyway, so that an unknown id takes as long as a
                // wrong code.
                let _ = constant_time_eq(&code_hash, &[0u8; 32]);
                warn!("enrollment refused: unknown activation id");
                return Err(Status::permission_denied(UNKNOWN_ACTIVATION));
            };
            let stored_hash = hex::decode(&activation.code_hash).unwrap_or_default();
            if !constant_time_eq(&code_hash, &stored_hash) {
                warn!("enrollment refused: wrong activation code");
                return Err(Status::permission_denied(UNKNOWN_ACTIVATION));
            }
            if activation.used_at_ms.is_some() {
                warn!(instance_id = ?activation.instance_id, "enrollment refused: activation already used");
                return Err(Status::permission_denied(format!(
                    "activation {activation_id} was already used"
                )));
            }
            let now = berth_proto::now_ms();
            if activation.expires_at_ms <= now {
                let at = berth_proto::json::format_time_ms(activation.expires_at_ms)
                    .unwrap_or_else(|| activation.expires_at_ms.to_string());
                warn!("enrollment refused: activation expired");
                return Err(Status::permission_denied(format!(
                    "activation {activation_id} expired at {at}"
                )));
            }
            let reported = req
                .host
                .as_ref()
                .map(|h| h.hostname.clone())
                .unwrap_or_default();
            if let Some(bound) = activation.hostname.as_deref().filter(|h| !h.is_empty())
                && !hostname_matches(bound, &reported)
            {
                warn!(bound_hostname = %bound, reported_hostname = %reported, "enrollment refused: activation is bound to another hostname");
                return Err(Status::permission_denied(format!(
                    "activation {activation_id} is for host {bound:?}, but this host is {reported:?}; create a token for this host (berth token create --hostname {})",
                    if reported.trim().is_empty() { "NAME" } else { reported.trim() }
                )));
            }
            // The registered hostname and capacity: bounded here, and never
            // raised by a Hello later.
            let registered = protocol::enrolled_host(req.host.as_ref()).map_err(|r| {
                warn!(reason = %r.status().message(), "enrollment refused: implausible host facts");
                r.status()
            })?;
            if req.csr_pem.trim().is_empty() {
                return Err(Status::invalid_argument(
                    "csr_pem is empty: send a PEM certificate signing request",
                ));
            }
            let instance_id = new_instance_id();
            let issued = self
                .core
                .ca
                .issue_client_cert(&req.csr_pem, &instance_id, self.core.cert_lifetime)
                .map_err(|e| e.into_signing_status("a client certificate"))?;
            let host = req.host.unwrap_or_default();
            let new = NewInstance {
                instance_id: instance_id.clone(),
                hostname: registered.hostname.clone(),
                os: host.os.chars().take(protocol::MAX_SHORT_FIELD).collect(),
                arch: host.arch.chars().take(protocol::MAX_SHORT_FIELD).collect(),
                agent_version: host.agent_version.chars().take(protocol::MAX_SHORT_FIELD).collect(),
                registered_at_ms: now,
                cpu: registered.cpu,
                memory_mib: registered.memory_mib,
                cert_serial: Some(issued.serial.clone()),
            };
            let certificate_pem = issued.pem;
            let id = activation_id.clone();
            self.core
                .db(move |s| s.enroll(&id, now, &new))
                .await
                .map_err(|e| match e {
                    StoreError::ActivationUsed(_) => Status::permission_denied(e.to_string()),
                    other => store_status(other),
                })?;
            self.core.enroll_failures.forgive(source, attempt);
            self.core.metrics.enrollments.inc();
            info!(%instance_id, hostname = %registered.hostname, cpu = registered.cpu, memory_mib = registered.memory_mib, "instance enrolled");
            Ok(Response::new(EnrollResponse {
                instance_id,
                certificate_pem,
                ca_pem: self.core.ca.cert_pem().to_owned(),
            }))
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        let id = new_instance_id();
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("i-"));
        assert!(id[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_instance_id());
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn hostnames_compare_case_insensitively() {
        assert!(hostname_matches("Web-1.example", "web-1.EXAMPLE"));
        assert!(hostname_matches("web-1", " web-1\n"));
        assert!(!hostname_matches("web-1", "web-2"));
        assert!(!hostname_matches("web-1", ""));
    }
}
