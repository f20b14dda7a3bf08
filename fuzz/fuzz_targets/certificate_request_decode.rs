//! The agent→server messages outside the fleet stream that carry a CSR:
//! `EnrollRequest` (served without a client certificate, after the
//! activation check) and `RenewRequest` (`Fleet.Renew`, over mutual TLS).
//! Both hand the attacker-controlled PEM to the CA's `issue_client_cert`
//! (`control/src/server/enroll.rs`, `fleet.rs`, `ca.rs`).
//!
//! The input is decoded as each message. A CSR the CA refuses must be
//! `BadCsr`; a certificate it signs must carry the instance id as its only
//! identity, not be a CA, have no SANs and not be an admin certificate,
//! whatever the CSR asked for ("everything the CSR asks for besides its
//! public key is ignored").
#![no_main]

use std::sync::LazyLock;

use berth_control::server::ca::{self, Ca, CaError};
use berth_proto::v1::{EnrollRequest, RenewRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

static CA: LazyLock<Ca> = LazyLock::new(|| Ca::ephemeral().expect("an in-memory CA"));

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = EnrollRequest::decode(data) {
        let again = EnrollRequest::decode(req.encode_to_vec().as_slice())
            .expect("a decoded message re-encodes to a decodable one");
        assert_eq!(again, req, "decode(encode(m)) != m");
        // enroll.rs: trimmed id and code, hashed; then the CSR
        let _ = req.activation_id.trim();
        let _ = berth_fuzz::hex_sha256(req.activation_code.trim());
        sign(&req.csr_pem);
    }
    if let Ok(req) = RenewRequest::decode(data) {
        let again = RenewRequest::decode(req.encode_to_vec().as_slice())
            .expect("a decoded message re-encodes to a decodable one");
        assert_eq!(again, req, "decode(encode(m)) != m");
        sign(&req.csr_pem);
    }
});

/// What both handlers do with the CSR.
fn sign(csr_pem: &str) {
    // an empty CSR is refused before the CA
    if csr_pem.trim().is_empty() {
        return;
    }
    let lifetime = time::Duration::try_from(berth_control::server::DEFAULT_CERT_LIFETIME)
        .expect("the default lifetime fits");
    let issued = match CA.issue_client_cert(csr_pem, berth_fuzz::INSTANCE, lifetime) {
        Ok(issued) => issued,
        Err(CaError::BadCsr(e)) => {
            let _ = e.to_string();
            return;
        }
        Err(other) => panic!("the CA accepted a CSR but could not sign it: {other}"),
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).expect("the CA writes PEM");
    let subject = ca::subject_of(&pem.contents).expect("the CA's certificate reads back");
    assert_eq!(subject.common_name, berth_fuzz::INSTANCE, "{csr_pem}");
    assert!(!subject.admin, "a CSR got an admin certificate: {csr_pem}");
    let not_after = ca::not_after_ms_of(&pem.contents).expect("expiry reads back");
    assert!((not_after - issued.not_after_ms()).abs() < 1000);
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).expect("DER");
    assert!(!cert.is_ca(), "a CSR got a CA certificate: {csr_pem}");
    assert!(
        matches!(cert.subject_alternative_name(), Ok(None)),
        "a CSR got its SANs: {csr_pem}"
    );
}
