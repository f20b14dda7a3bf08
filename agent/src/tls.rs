//! TLS for the agent's connections to the control plane.
//!
//! Every channel is built here from a rustls `ClientConfig` and a TCP
//! connector, so the same code serves enrollment (server checked against the
//! pinned CA digest from the join line) and the fleet session (mutual TLS with
//! the enrolled identity). The ring provider is used everywhere.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid server address {0:?}: expected https://host:port or host:port")]
    Address(String),
    #[error("invalid {what}: {message}")]
    Pem { what: &'static str, message: String },
    #[error("tls setup failed: {0}")]
    Config(String),
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
}

/// What the enrollment verifier says when the server's CA is not the pinned
/// one; the TLS error that carries it ends the handshake before anything is
/// sent.
pub const CA_MISMATCH: &str = "the server's CA does not match the pinned digest";

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// `host:port` and the host alone from `https://host:port`, `host:port` or
/// `https://host` (port 7420).
pub fn split_server(server: &str) -> Result<(String, String), TlsError> {
    let rest = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server)
        .trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(TlsError::Address(server.to_string()));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (rest.to_string(), "7420".into()),
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (rest.to_string(), "7420".to_string()),
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(TlsError::Address(server.to_string()));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((addr, host))
}

pub fn parse_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        what,
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            message: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// SHA-256 of a certificate's DER bytes, lower-case hex.
pub fn cert_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Mutual TLS with the enrolled identity; the server must chain to `ca_pem`.
pub fn mtls_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(ca_pem, "CA certificate")? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
    }
    let chain = parse_certs(cert_pem, "client certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: "private key",
        message: e.to_string(),
    })?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Enrollment: no client certificate. With `ca_sha256`, the server's chain
/// must contain the CA with that digest and the server certificate must be
/// signed by it; without, any server is accepted (trust on first use).
pub fn enroll_config(ca_sha256: Option<String>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCa {
        digest: ca_sha256.map(|d| d.to_lowercase()),
        provider: provider.clone(),
    });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

#[derive(Debug)]
struct PinnedCa {
    digest: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(digest) = &self.digest else {
            return Ok(ServerCertVerified::assertion());
        };
        let ca = intermediates
            .iter()
            .find(|c| &cert_sha256(c) == digest)
            .ok_or_else(|| rustls::Error::General(format!("{CA_MISMATCH} sha256:{digest}")))?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A gRPC channel to `server` over TLS with `config`. HTTP/2 keepalive
/// notices a silently dead link within `keepalive * 2`.
pub async fn channel(
    server: &str,
    config: ClientConfig,
    keepalive: Duration,
) -> Result<Channel, TlsError> {
    let (addr, host) = split_server(server)?;
    let name = ServerName::try_from(host.clone())
        .map_err(|_| TlsError::Address(server.to_string()))?
        .to_owned();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp_addr = addr.clone();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|_| TlsError::Address(server.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive)
        .keep_alive_while_idle(true);
    let svc = tower::service_fn(move |_: Uri| {
        let connector = connector.clone();
        let name = name.clone();
        let tcp_addr = tcp_addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&tcp_addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    endpoint
        .connect_with_connector(svc)
        .await
        .map_err(|e| TlsError::Connect {
            addr,
            message: error_chain(&e),
        })
}

/// An error and its causes on one line: "a: b: c".
pub use berth_proto::text::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let ok = |s: &str| split_server(s).expect(s);
        assert_eq!(
            ok("https://fleet.example:7420"),
            ("fleet.example:7420".into(), "fleet.example".into())
        );
        assert_eq!(
            ok("10.0.0.1:9000"),
            ("10.0.0.1:9000".into(), "10.0.0.1".into())
        );
        assert_eq!(ok("https://fleet"), ("fleet:7420".into(), "fleet".into()));
        assert_eq!(
            ok("https://[::1]:7420"),
            ("[::1]:7420".into(), "::1".into())
        );
        assert!(split_server("https://a:notaport").is_err());
        assert!(split_server("https://a:1/path").is_err());
        assert!(split_server("").is_err());
    }
}
