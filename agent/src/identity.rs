//! The agent's identity in its data dir, enrollment, and renewal.
//!
//! Files (data dir 0700): `agent.key` (0600, never leaves the host),
//! `agent.crt` (client certificate, CN = instance id), `ca.crt` (the fleet
//! CA), `identity.json` (instance id, server; 0600). The key is written
//! before the CSR is sent; the identity file is written last, so a crash
//! mid-enrollment leaves an agent that is simply not enrolled.
//!
//! Renewal ([`store_renewed`]) writes `agent.key.new` (0600) and
//! `agent.crt.new`, each crash-safely, then renames the key and then the
//! certificate over the old ones. [`load`] finishes or discards a renewal a
//! crash interrupted: both `.new` files → both renamed; only
//! `agent.crt.new` (the key is already in place) → renamed; only
//! `agent.key.new` (its certificate was never written) → removed. So the key
//! and the certificate on disk always belong together.
//!
//! [`load`] refuses secret files (`agent.key`, `identity.json`) that group
//! or others can read, naming the file and the `chmod` that fixes it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto::v1::enrollment_client::EnrollmentClient;
use berth_proto::v1::{EnrollRequest, HostFacts};
use serde::{Deserialize, Serialize};

use crate::fsutil::{create_private_dir, write_atomic};
use crate::tls;

/// File names in the data dir.
pub const KEY_FILE: &str = "agent.key";
pub const CERT_FILE: &str = "agent.crt";
pub const CA_FILE: &str = "ca.crt";
pub const IDENTITY_FILE: &str = "identity.json";
/// A renewed key and certificate before they replace the current ones.
pub const NEW_KEY_FILE: &str = "agent.key.new";
pub const NEW_CERT_FILE: &str = "agent.crt.new";

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
    #[error(
        "{} is readable by group or others (mode {mode:04o}): it holds {what}; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
        what: &'static str,
    },
    #[error("{path}: {message}")]
    Certificate { path: PathBuf, message: String },
}

/// How enrollment trusts the server's CA: pinned to a digest (the
/// `--ca-hash` of the line `berth token create` prints), or — only when the
/// operator says so with `--insecure-skip-ca-pin` — whatever the server
/// presents, which sends the activation code to anyone answering at the
/// address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaPin {
    /// Lowercase hex SHA-256 of the fleet CA certificate (DER).
    Sha256(String),
    /// Trust on first use.
    SkipInsecure,
}

impl CaPin {
    /// From `--ca-hash` (`sha256:<64 hex>` or the bare hex) and
    /// `--insecure-skip-ca-pin`: exactly one of them.
    pub fn from_args(ca_hash: Option<&str>, skip: bool) -> Result<CaPin, String> {
        match (ca_hash, skip) {
            (Some(_), true) => Err(
                "--ca-hash and --insecure-skip-ca-pin contradict each other: give only --ca-hash"
                    .into(),
            ),
            (None, true) => Ok(CaPin::SkipInsecure),
            (None, false) => Err(
                "--ca-hash is required: pass the --ca-hash sha256:… of the line `berth token create` printed, so that the activation code goes only to your control plane; to trust whatever CA the server presents instead, pass --insecure-skip-ca-pin".into(),
            ),
            (Some(h), false) => {
                let hex = h.strip_prefix("sha256:").unwrap_or(h).to_lowercase();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("--ca-hash {h:?}: expected sha256:<64 hex digits>"));
                }
                Ok(CaPin::Sha256(hex))
            }
        }
    }

    fn digest(&self) -> Option<&str> {
        match self {
            CaPin::Sha256(d) => Some(d),
            CaPin::SkipInsecure => None,
        }
    }
}

/// The validity period of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Reads the validity of the first certificate in `pem`.
    pub fn of_pem(pem: &str) -> Result<Validity, String> {
        let der = tls::parse_certs(pem, "certificate").map_err(|e| e.to_string())?;
        let first = der.first().ok_or("no certificate")?;
        let (_, cert) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let at = |secs: i64| {
            u64::try_from(secs)
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                .unwrap_or(UNIX_EPOCH)
        };
        Ok(Validity {
            not_before: at(cert.validity().not_before.timestamp()),
            not_after: at(cert.validity().not_after.timestamp()),
        })
    }

    /// Whether the certificate has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The point `fraction` (0..=1) of the way from notBefore to notAfter.
    pub fn point(&self, fraction: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// notAfter in ms since the Unix epoch.
    pub fn not_after_ms(&self) -> i64 {
        self.not_after
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
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
    /// Where it was loaded from; renewals are written there.
    pub data_dir: PathBuf,
}

impl Identity {
    /// The validity of the client certificate.
    pub fn validity(&self) -> Result<Validity, IdentityError> {
        Validity::of_pem(&self.cert_pem).map_err(|message| IdentityError::Certificate {
            path: self.data_dir.join(CERT_FILE),
            message,
        })
    }
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
    let p = path(data_dir, IDENTITY_FILE);
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

/// Refuses a secret file that group or others may read.
pub fn check_secret_mode(p: &Path, what: &'static str) -> Result<(), IdentityError> {
    match std::fs::metadata(p) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions {
                    path: p.to_path_buf(),
                    mode: mode & 0o7777,
                    what,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IdentityError::Read {
            path: p.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Loads the enrolled identity, after finishing a renewal that a crash
/// interrupted. Secret files readable by others are refused.
pub fn load(data_dir: &Path) -> Result<Identity, IdentityError> {
    check_secret_mode(&path(data_dir, IDENTITY_FILE), "the agent's identity")?;
    let file = enrolled(data_dir)?
        .ok_or_else(|| IdentityError::NotEnrolled(path(data_dir, IDENTITY_FILE)))?;
    recover_renewal(data_dir)?;
    for secret in [KEY_FILE, NEW_KEY_FILE] {
        check_secret_mode(&path(data_dir, secret), "the agent's private key")?;
    }
    Ok(Identity {
        instance_id: file.instance_id,
        server: file.server,
        ca_pem: read(&path(data_dir, CA_FILE))?,
        cert_pem: read(&path(data_dir, CERT_FILE))?,
        key_pem: read(&path(data_dir, KEY_FILE))?,
        data_dir: data_dir.to_path_buf(),
    })
}

fn rename(from: &Path, to: &Path) -> Result<(), IdentityError> {
    std::fs::rename(from, to).map_err(|source| IdentityError::Write {
        path: to.to_path_buf(),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| IdentityError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Finishes or discards a renewal a crash interrupted (see the module
/// docs). Returns whether anything was done.
pub fn recover_renewal(data_dir: &Path) -> Result<bool, IdentityError> {
    let new_key = path(data_dir, NEW_KEY_FILE);
    let new_cert = path(data_dir, NEW_CERT_FILE);
    let done = match (new_key.exists(), new_cert.exists()) {
        (false, false) => false,
        (true, true) => {
            rename(&new_key, &path(data_dir, KEY_FILE))?;
            rename(&new_cert, &path(data_dir, CERT_FILE))?;
            true
        }
        (false, true) => {
            rename(&new_cert, &path(data_dir, CERT_FILE))?;
            true
        }
        (true, false) => {
            std::fs::remove_file(&new_key).map_err(|source| IdentityError::Write {
                path: new_key.clone(),
                source,
            })?;
            true
        }
    };
    if done {
        sync_dir(data_dir)?;
        tracing::warn!(data_dir = %data_dir.display(), "finished a certificate renewal that was interrupted");
    }
    Ok(done)
}

/// Replaces the identity's key and certificate with renewed ones: both
/// `.new` files are written crash-safely, then the key and then the
/// certificate are renamed into place (see the module docs).
pub fn store_renewed(data_dir: &Path, key_pem: &str, cert_pem: &str) -> Result<(), IdentityError> {
    let w = |name: &str, data: &[u8], mode: u32| {
        let p = path(data_dir, name);
        write_atomic(&p, data, mode).map_err(|source| IdentityError::Write { path: p, source })
    };
    w(NEW_KEY_FILE, key_pem.as_bytes(), 0o600)?;
    w(NEW_CERT_FILE, cert_pem.as_bytes(), 0o644)?;
    rename(&path(data_dir, NEW_KEY_FILE), &path(data_dir, KEY_FILE))?;
    rename(&path(data_dir, NEW_CERT_FILE), &path(data_dir, CERT_FILE))?;
    sync_dir(data_dir)
}

/// A new key and a CSR for it (the subject is set by the control plane).
pub fn new_key_and_csr() -> Result<(rcgen::KeyPair, String), IdentityError> {
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
    Ok((key, csr))
}

/// Points an enrolled identity at another fleet address of the same control
/// plane (its CA is unchanged), e.g. when `berth dev` picked a new port.
pub fn set_server(data_dir: &Path, server: &str) -> Result<(), IdentityError> {
    let p = path(data_dir, IDENTITY_FILE);
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
        arch: berth_proto::attributes::ecs_architecture(std::env::consts::ARCH).to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        // The whole host, before `reserved_memory_mib`: the control plane
        // registers it as the most this host may ever be given.
        capacity: Some(crate::capacity(0)),
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
    pin: &CaPin,
) -> Result<IdentityFile, IdentityError> {
    let ca_sha256 = pin.digest().map(str::to_owned);
    create_private_dir(data_dir).map_err(|source| IdentityError::Write {
        path: data_dir.to_path_buf(),
        source,
    })?;
    let (key, csr) = new_key_and_csr()?;

    let config = tls::enroll_config(ca_sha256.clone())?;
    let channel = tls::channel(server, config, std::time::Duration::from_secs(30))
        .await
        .map_err(|e| match (&ca_sha256, e) {
            (Some(pin), tls::TlsError::Connect { addr, message })
                if message.contains(tls::CA_MISMATCH) =>
            {
                IdentityError::Refused {
                    server: server.to_string(),
                    message: format!(
                        "the server at {addr} presents a CA that does not match --ca-hash sha256:{pin}; nothing was sent to it (check the address, or the hash printed by `berth token create`)"
                    ),
                }
            }
            (_, e) => IdentityError::Tls(e),
        })?;
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
    // A renewal of an earlier identity that a crash left half-done must not
    // be finished over this one.
    for stale in [NEW_KEY_FILE, NEW_CERT_FILE] {
        let p = path(data_dir, stale);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(IdentityError::Write { path: p, source }),
        }
    }
    w(KEY_FILE, key.serialize_pem().as_bytes(), 0o600)?;
    w(CERT_FILE, resp.certificate_pem.as_bytes(), 0o644)?;
    w(CA_FILE, resp.ca_pem.as_bytes(), 0o644)?;
    let file = IdentityFile {
        instance_id: resp.instance_id,
        server: server.to_string(),
        ca_sha256: ca_digest,
        enrolled_at_ms: berth_proto::now_ms(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| IdentityError::Key(e.to_string()))?;
    w(IDENTITY_FILE, &json, 0o600)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_pin_is_required_unless_skipping_it_is_explicit() {
        let hex = "ab".repeat(32);
        let err = CaPin::from_args(None, false).expect_err("no pin");
        assert!(
            err.contains("--ca-hash is required") && err.contains("--insecure-skip-ca-pin"),
            "{err}"
        );
        assert_eq!(CaPin::from_args(None, true), Ok(CaPin::SkipInsecure));
        let with_prefix = format!("sha256:{}", hex.to_uppercase());
        assert_eq!(
            CaPin::from_args(Some(&with_prefix), false),
            Ok(CaPin::Sha256(hex.clone()))
        );
        assert_eq!(
            CaPin::from_args(Some(&hex), false),
            Ok(CaPin::Sha256(hex.clone()))
        );
        assert!(CaPin::from_args(Some(&hex), true).is_err());
        let err = CaPin::from_args(Some("sha256:abc"), false).expect_err("short");
        assert!(err.contains("64 hex digits"), "{err}");
    }

    fn cert(key: &rcgen::KeyPair, cn: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(key).expect("cert").pem()
    }

    /// An enrolled data dir with a self-signed identity.
    fn enrolled_dir() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let crt = cert(&key, "i-1");
        let d = dir.path();
        write_atomic(&d.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600).expect("key");
        write_atomic(&d.join(CERT_FILE), crt.as_bytes(), 0o644).expect("crt");
        write_atomic(&d.join(CA_FILE), crt.as_bytes(), 0o644).expect("ca");
        let file = IdentityFile {
            instance_id: "i-1".into(),
            server: "https://127.0.0.1:7420".into(),
            ca_sha256: String::new(),
            enrolled_at_ms: 1,
        };
        let json = serde_json::to_vec(&file).expect("json");
        write_atomic(&d.join(IDENTITY_FILE), &json, 0o600).expect("identity");
        (dir, key.serialize_pem(), crt)
    }

    #[test]
    fn renewal_replaces_key_and_certificate_together() {
        let (dir, _, _) = enrolled_dir();
        let key = rcgen::KeyPair::generate().expect("key");
        let crt = cert(&key, "i-1");
        store_renewed(dir.path(), &key.serialize_pem(), &crt).expect("renew");
        let id = load(dir.path()).expect("load");
        assert_eq!(id.key_pem, key.serialize_pem());
        assert_eq!(id.cert_pem, crt);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join(NEW_KEY_FILE).exists());
        assert!(!dir.path().join(NEW_CERT_FILE).exists());
    }

    #[test]
    fn an_interrupted_renewal_is_finished_or_discarded() {
        let new_key = rcgen::KeyPair::generate().expect("key");
        let new_crt = cert(&new_key, "i-1");
        let w = |d: &Path, name: &str, data: &str, mode: u32| {
            write_atomic(&d.join(name), data.as_bytes(), mode).expect("write")
        };

        // Crash after both .new files: both are renamed.
        let (dir, _, _) = enrolled_dir();
        w(dir.path(), NEW_KEY_FILE, &new_key.serialize_pem(), 0o600);
        w(dir.path(), NEW_CERT_FILE, &new_crt, 0o644);
        let id = load(dir.path()).expect("load");
        assert_eq!(
            (id.key_pem, id.cert_pem),
            (new_key.serialize_pem(), new_crt.clone())
        );

        // Crash after the key was renamed: the certificate follows.
        let (dir, _, _) = enrolled_dir();
        w(dir.path(), KEY_FILE, &new_key.serialize_pem(), 0o600);
        w(dir.path(), NEW_CERT_FILE, &new_crt, 0o644);
        let id = load(dir.path()).expect("load");
        assert_eq!(
            (id.key_pem, id.cert_pem),
            (new_key.serialize_pem(), new_crt.clone())
        );

        // Crash before the certificate was written: the new key goes.
        let (dir, old_key, old_crt) = enrolled_dir();
        w(dir.path(), NEW_KEY_FILE, &new_key.serialize_pem(), 0o600);
        let id = load(dir.path()).expect("load");
        assert_eq!((id.key_pem, id.cert_pem), (old_key, old_crt));
        assert!(!dir.path().join(NEW_KEY_FILE).exists());
    }

    #[test]
    fn secret_files_open_to_others_are_refused_naming_the_fix() {
        for file in [KEY_FILE, IDENTITY_FILE] {
            let (dir, _, _) = enrolled_dir();
            let p = dir.path().join(file);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let msg = load(dir.path()).expect_err("refused").to_string();
            assert!(msg.contains(&p.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
        }
    }

    #[test]
    fn validity_and_renewal_points() {
        let (dir, _, _) = enrolled_dir();
        let id = load(dir.path()).expect("load");
        let v = id.validity().expect("validity");
        assert!(v.not_before < v.not_after);
        assert_eq!(v.point(0.0), v.not_before);
        assert_eq!(v.point(1.0), v.not_after);
        assert!(v.point(0.5) < v.point(0.8));
        assert!(!v.expired_at(v.not_before));
        assert!(v.expired_at(v.not_after));
    }
}
