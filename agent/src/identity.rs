//! The agent's identity in its data dir, and enrollment.
//!
//! Files (data dir 0700): `agent.key` (0600, never leaves the host),
//! `agent.crt` (client certificate, CN = instance id), `ca.crt` (the fleet
//! CA), `identity.json` (instance id, server). The key is written before the
//! CSR is sent; the identity file is written last, so a crash mid-enrollment
//! leaves an agent that is simply not enrolled.

use std::path::{Path, PathBuf};

use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::{EnrollRequest, HostFacts};
use serde::{Deserialize, Serialize};

use crate::fsutil::{create_private_dir, write_atomic};
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("this host is not enrolled (no {0}): run `berth-agent enroll` first")]
    NotEnrolled(PathBuf),
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a key or CSR: {0}")]
    Key(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("enrollment refused by {server}: {message}")]
    Refused { server: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityFile {
    pub instance_id: String,
    pub server: String,
    pub ca_sha256: String,
    pub enrolled_at_ms: i64,
}

/// An enrolled identity, loaded.
#[derive(Clone)]
pub struct Identity {
    pub instance_id: String,
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("instance_id", &self.instance_id)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn read(p: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(p).map_err(|e| IdentityError::Read {
        path: p.to_path_buf(),
        message: e.to_string(),
    })
}

/// The identity file, if the host is enrolled.
pub fn enrolled(data_dir: &Path) -> Result<Option<IdentityFile>, IdentityError> {
    let p = path(data_dir, "identity.json");
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| IdentityError::Read {
                path: p,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IdentityError::Read {
            path: p,
            message: e.to_string(),
        }),
    }
}

pub fn load(data_dir: &Path) -> Result<Identity, IdentityError> {
    let file = enrolled(data_dir)?
        .ok_or_else(|| IdentityError::NotEnrolled(path(data_dir, "identity.json")))?;
    Ok(Identity {
        instance_id: file.instance_id,
        server: file.server,
        ca_pem: read(&path(data_dir, "ca.crt"))?,
        cert_pem: read(&path(data_dir, "agent.crt"))?,
        key_pem: read(&path(data_dir, "agent.key"))?,
    })
}

/// Points an enrolled identity at another fleet address of the same control
/// plane (its CA is unchanged), e.g. when `berth dev` picked a new port.
pub fn set_server(data_dir: &Path, server: &str) -> Result<(), IdentityError> {
    let p = path(data_dir, "identity.json");
    let mut file = enrolled(data_dir)?.ok_or_else(|| IdentityError::NotEnrolled(p.clone()))?;
    if file.server == server {
        return Ok(());
    }
    file.server = server.to_string();
    let json = serde_json::to_vec_pretty(&file).map_err(|e| IdentityError::Key(e.to_string()))?;
    write_atomic(&p, &json, 0o600).map_err(|source| IdentityError::Write { path: p, source })
}

pub fn host_facts() -> HostFacts {
    HostFacts {
        hostname: hostname(),
        os: sysinfo::System::long_os_version().unwrap_or_default(),
        arch: std::env::consts::ARCH.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
    }
}

pub fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|_| "unknown".into())
}

/// Trades an activation for a certificate and writes the identity.
pub async fn enroll(
    data_dir: &Path,
    server: &str,
    activation_id: &str,
    activation_code: &str,
    ca_sha256: Option<String>,
) -> Result<IdentityFile, IdentityError> {
    create_private_dir(data_dir).map_err(|source| IdentityError::Write {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let key = rcgen::KeyPair::generate().map_err(|e| IdentityError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth-agent");
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| IdentityError::Key(e.to_string()))?;

    let config = tls::enroll_config(ca_sha256.clone())?;
    let channel = tls::channel(server, config, std::time::Duration::from_secs(30)).await?;
    let mut client = EnrollmentClient::new(channel);
    let resp = client
        .enroll(EnrollRequest {
            activation_id: activation_id.to_string(),
            activation_code: activation_code.to_string(),
            csr_pem: csr,
            host: Some(host_facts()),
        })
        .await
        .map_err(|s| IdentityError::Refused {
            server: server.to_string(),
            message: s.message().to_string(),
        })?
        .into_inner();

    // The CA we got must be the one we pinned.
    let ca_der = tls::parse_certs(&resp.ca_pem, "CA certificate")?;
    let ca_digest = ca_der
        .first()
        .map(|c| tls::cert_sha256(c))
        .unwrap_or_default();
    if let Some(pin) = &ca_sha256
        && pin.to_lowercase() != ca_digest
    {
        return Err(IdentityError::Refused {
            server: server.to_string(),
            message: format!(
                "returned CA sha256:{ca_digest} does not match the pinned sha256:{pin}"
            ),
        });
    }
    tls::parse_certs(&resp.certificate_pem, "client certificate")?;

    let w = |name: &str, data: &[u8], mode: u32| {
        let p = path(data_dir, name);
        write_atomic(&p, data, mode).map_err(|source| IdentityError::Write { path: p, source })
    };
    w("agent.key", key.serialize_pem().as_bytes(), 0o600)?;
    w("agent.crt", resp.certificate_pem.as_bytes(), 0o644)?;
    w("ca.crt", resp.ca_pem.as_bytes(), 0o644)?;
    let file = IdentityFile {
        instance_id: resp.instance_id,
        server: server.to_string(),
        ca_sha256: ca_digest,
        enrolled_at_ms: berth_proto::now_ms(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| IdentityError::Key(e.to_string()))?;
    w("identity.json", &json, 0o600)?;
    Ok(file)
}
