//! The one agent→server message outside the fleet stream: `EnrollRequest`,
//! served without a client certificate. The server checks the activation
//! first, then has its CA sign the CSR (`control/src/server/enroll.rs`,
//! `ca.rs`); the CSR is attacker-controlled PEM/DER, so it is fed to the CA
//! as the handler does, and a signed certificate must name the instance.
#![no_main]

use std::sync::LazyLock;

use berth_control::server::ca::{Ca, CaError};
use berth_proto::v1::EnrollRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

static CA: LazyLock<Ca> = LazyLock::new(|| Ca::ephemeral().expect("an in-memory CA"));

fuzz_target!(|data: &[u8]| {
    let Ok(req) = EnrollRequest::decode(data) else {
        return;
    };
    let again = EnrollRequest::decode(req.encode_to_vec().as_slice())
        .expect("a decoded message re-encodes to a decodable one");
    assert_eq!(again, req, "decode(encode(m)) != m");
    // enroll.rs: trimmed id and code; an empty CSR is refused before the CA
    let _ = req.activation_id.trim();
    let _ = berth_fuzz::hex_sha256(req.activation_code.trim());
    if req.csr_pem.trim().is_empty() {
        return;
    }
    match CA.issue_client_cert(&req.csr_pem, berth_fuzz::INSTANCE) {
        Ok(pem) => assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}"),
        Err(CaError::BadCsr(e)) => {
            let _ = e.to_string();
        }
        Err(other) => panic!("signing a CSR that parsed failed: {other}"),
    }
});
