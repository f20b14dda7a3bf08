//! `Enrollment.Enroll`: an activation (id + code) and a CSR in, a client
//! certificate out.
//!
//! Order matters: the activation is checked first (a wrong code learns
//! nothing about the activation), then the CSR (a broken CSR does not burn
//! the activation), then the activation is consumed and the instance created
//! in one transaction (two hosts racing for one activation: one wins).
//! The activation code is never logged.

use std::sync::Arc;

use berth_proto::v1::enrollment_server::Enrollment;
use berth_proto::v1::{EnrollRequest, EnrollResponse};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span, warn};

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

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        let activation_id = req.activation_id.trim().to_owned();
        let span = info_span!("enroll", %activation_id, peer = ?peer);
        async move {
            let found = {
                let id = activation_id.clone();
                self.core
                    .db(move |s| s.activation(&id))
                    .await
                    .map_err(store_status)?
            };
            let code_hash = Sha256::digest(req.activation_code.trim().as_bytes());
            let Some(activation) = found else {
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
            if req.csr_pem.trim().is_empty() {
                return Err(Status::invalid_argument(
                    "csr_pem is empty: send a PEM certificate signing request",
                ));
            }
            let instance_id = new_instance_id();
            let certificate_pem = self
                .core
                .ca
                .issue_client_cert(&req.csr_pem, &instance_id)
                .map_err(|e| match e {
                    super::ca::CaError::BadCsr(_) => Status::invalid_argument(e.to_string()),
                    other => {
                        tracing::error!(error = %other, "cannot sign a client certificate");
                        Status::internal(other.to_string())
                    }
                })?;
            let host = req.host.unwrap_or_default();
            let new = NewInstance {
                instance_id: instance_id.clone(),
                hostname: host.hostname.clone(),
                os: host.os,
                arch: host.arch,
                agent_version: host.agent_version,
                registered_at_ms: now,
            };
            let id = activation_id.clone();
            self.core
                .db(move |s| s.enroll(&id, now, &new))
                .await
                .map_err(|e| match e {
                    StoreError::ActivationUsed(_) => Status::permission_denied(e.to_string()),
                    other => store_status(other),
                })?;
            info!(%instance_id, hostname = %host.hostname, "instance enrolled");
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
}
