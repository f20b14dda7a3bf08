//! The fleet CA: signs the server certificate and every agent's client
//! certificate.
//!
//! Invariants:
//! - `ca.key` is created with mode 0600 (never chmod-ed afterwards) and is
//!   never logged; `ca.crt` is public.
//! - the server certificate and its key live in memory only and are issued
//!   fresh at every start, so SAN changes (`--tls-san`, `--advertise`) take
//!   effect with a restart;
//! - client certificates carry the instance id as their common name: that is
//!   the only identity the fleet service trusts;
//! - admin certificates carry `OU=admin` ([`ADMIN_OU`]); agent certificates
//!   never do (their subject is the common name alone, whatever the CSR
//!   asked for), so an agent's certificate is never an admin's and an
//!   admin's is never accepted as an agent's;
//! - `ca.key` readable by group or others is refused at start, naming the
//!   file and the fix;
//! - every certificate gets a random 128-bit serial number (top bit clear,
//!   never zero); [`Issued::serial`] and [`Subject::serial`] give it in
//!   the form the store records admin certificates under: lowercase hex of
//!   the integer, left-padded with zeros to 32 digits ([`normalize_serial`],
//!   so that serials compare as integers whatever leading zeros they were
//!   typed or encoded with).

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Common name of the fleet CA certificate.
pub const CA_COMMON_NAME: &str = "berth fleet CA";
/// Validity of the fleet CA certificate.
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// Validity of an agent's client certificate (default of `--cert-lifetime`).
pub const CLIENT_CERT_VALIDITY: Duration = Duration::days(30);
/// Validity of an admin certificate unless asked otherwise.
pub const ADMIN_CERT_VALIDITY: Duration = Duration::days(90);
/// The organizational unit that marks an admin certificate.
pub const ADMIN_OU: &str = "admin";
/// The organization of every certificate the fleet CA issues to people.
pub const ADMIN_ORG: &str = "berth";
/// Tolerated clock skew between the server and its agents. Short lifetimes
/// (tests) are backdated by at most a quarter of their lifetime, so that the
/// agent's renewal point (50–80 % of notBefore..notAfter) stays ahead.
const BACKDATE: Duration = Duration::minutes(5);

/// File names inside the data dir.
pub const CA_KEY_FILE: &str = "ca.key";
pub const CA_CERT_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is not a usable CA key: {source}")]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("{path} is not a usable CA certificate: {reason}")]
    BadCert { path: PathBuf, reason: String },
    #[error(
        "{cert} exists but {key} does not: restore the CA key, or move both away to create a new CA (every agent then has to enroll again)"
    )]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("invalid certificate signing request: {0}")]
    BadCsr(rcgen::Error),
    #[error("cannot issue a certificate: {0}")]
    Issue(rcgen::Error),
    #[error(
        "{} is readable by group or others (mode {mode:04o}): it holds the fleet CA's private key; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("no fleet CA in {0}: start `berth server --data-dir` there once to create it")]
    NoCa(PathBuf),
    #[error("invalid admin name {0:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'")]
    AdminName(String),
}

impl CaError {
    /// The gRPC status for a failed signing of `what` (a client or admin
    /// certificate): the caller's request is at fault for a bad CSR or name,
    /// the server (logged here) for anything else.
    pub fn into_signing_status(self, what: &str) -> tonic::Status {
        match self {
            CaError::BadCsr(_) | CaError::AdminName(_) => {
                tonic::Status::invalid_argument(self.to_string())
            }
            other => {
                tracing::error!(error = %other, "cannot sign {what}");
                tonic::Status::internal(other.to_string())
            }
        }
    }
}

/// A certificate the CA issued: PEM, expiry and serial number.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub not_after: OffsetDateTime,
    /// Serial number, lowercase hex.
    pub serial: String,
}

impl Issued {
    /// Expiry in ms since the Unix epoch.
    pub fn not_after_ms(&self) -> i64 {
        i64::try_from(self.not_after.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// What the fleet trusts in a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The leaf's common name: the instance id of an agent, the name of an
    /// admin.
    pub common_name: String,
    /// `OU=admin` is in the subject.
    pub admin: bool,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// Reads the subject and serial number of a client certificate (DER).
pub fn subject_of(der: &[u8]) -> Result<Subject, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let admin = cert
        .subject()
        .iter_organizational_unit()
        .any(|ou| ou.as_str().is_ok_and(|ou| ou == ADMIN_OU));
    Ok(Subject {
        common_name,
        admin,
        serial: canonical_serial(&hex::encode(cert.raw_serial())),
    })
}

/// Hex digits of a serial number berth issues (128 bits): the width every
/// serial is padded to, so that one integer has one spelling.
const SERIAL_DIGITS: usize = 32;

/// A serial number as an operator may type it (hex, any case, optionally
/// with `:` separators as `openssl` prints it, with or without leading
/// zeros) in the form the store keeps: lowercase hex of the integer without
/// separators, left-padded with zeros to 32 digits. `None` when it is not
/// hex.
pub fn normalize_serial(s: &str) -> Option<String> {
    let hex = tidy_serial(s);
    let valid = (1..=64).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| canonical_serial(&hex))
}

/// A serial number as messages repeat it: as typed, lowercase, without
/// separators (its leading zeros kept).
pub fn tidy_serial(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// `hex` (hex digits only) as the integer's lowercase digits, padded to
/// [`SERIAL_DIGITS`].
fn canonical_serial(hex: &str) -> String {
    let digits = hex.trim_start_matches('0').to_ascii_lowercase();
    format!("{digits:0>SERIAL_DIGITS$}")
}

/// When a certificate (DER) expires, in ms since the Unix epoch.
pub fn not_after_ms_of(der: &[u8]) -> Result<i64, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable: {e}"))?;
    Ok(cert.validity().not_after.timestamp().saturating_mul(1000))
}

/// Whether `name` may be an admin certificate's common name.
pub fn valid_admin_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

/// A server identity: certificate chain (server certificate, then the CA)
/// and private key, both PEM.
pub struct ServerIdentity {
    pub chain_pem: String,
    pub key_pem: String,
    /// SANs that could not be put in the certificate (not ASCII), with why.
    pub skipped_sans: Vec<String>,
}

/// The fleet CA, loaded from (or created in) the data dir.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("sha256", &self.sha256_hex())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `ca.key` + `ca.crt` from `dir`, creating them on first start.
    /// Returns the CA and whether it was created now.
    pub fn load_or_create(dir: &Path) -> Result<(Ca, bool), CaError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let key_exists = key_path.exists();
        let cert_exists = cert_path.exists();
        match (key_exists, cert_exists) {
            (true, true) => Ok((Self::load(&key_path, &cert_path)?, false)),
            (false, true) => Err(CaError::MissingKey {
                cert: cert_path,
                key: key_path,
            }),
            (true, false) => {
                // A crash between writing the key and the certificate: the
                // key was never used, so a certificate for it is all we need.
                let key = read_key(&key_path)?;
                let ca = Self::create_cert(key, &cert_path)?;
                Ok((ca, true))
            }
            (false, false) => {
                let key = KeyPair::generate().map_err(CaError::Issue)?;
                write_secret(&key_path, key.serialize_pem().as_bytes())?;
                let ca = Self::create_cert(key, &cert_path)?;
                Ok((ca, true))
            }
        }
    }

    /// Loads an existing CA from `dir` without creating one (signing offline,
    /// e.g. `berth admin-cert create --data-dir`).
    pub fn load_existing(dir: &Path) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        if !key_path.exists() || !cert_path.exists() {
            return Err(CaError::NoCa(dir.to_owned()));
        }
        Self::load(&key_path, &cert_path)
    }

    /// Creates an in-memory CA that is never written anywhere (tests).
    pub fn ephemeral() -> Result<Ca, CaError> {
        let key = KeyPair::generate().map_err(CaError::Issue)?;
        let params = ca_params();
        let cert = params.self_signed(&key).map_err(CaError::Issue)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    fn create_cert(key: KeyPair, cert_path: &Path) -> Result<Ca, CaError> {
        let params = ca_params();
        let cert = params.self_signed(&key).map_err(CaError::Issue)?;
        let pem = cert.pem();
        write_atomic(cert_path, pem.as_bytes(), 0o644)?;
        Ok(Ca {
            cert_pem: pem,
            cert_der: cert.der().to_vec(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<Ca, CaError> {
        let key = read_key(key_path)?;
        let cert_pem = fs::read_to_string(cert_path).map_err(|source| CaError::Read {
            path: cert_path.to_owned(),
            source,
        })?;
        let bad = |reason: String| CaError::BadCert {
            path: cert_path.to_owned(),
            reason,
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| bad(format!("not PEM: {e}")))?;
        let cert_der = pem.contents.clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(bad(format!(
                "it does not belong to the key in {}",
                key_path.display()
            )));
        }
        let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
            .map_err(|e| bad(format!("bad expiry: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), key)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Ca {
            issuer,
            cert_pem,
            cert_der,
            not_after,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Hex SHA-256 of the CA certificate's DER: what `--ca-hash sha256:…` pins.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.cert_der))
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Issues a server certificate for `sans` (DNS names or IP addresses).
    /// Names that cannot go into a certificate are skipped and reported.
    pub fn issue_server_cert(&self, sans: &[String]) -> Result<ServerIdentity, CaError> {
        let key = KeyPair::generate().map_err(CaError::Issue)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "berth server");
        params.distinguished_name = dn;
        let mut skipped_sans = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for san in sans {
            let san = san.trim().trim_start_matches('[').trim_end_matches(']');
            if san.is_empty() || !seen.insert(san.to_owned()) {
                continue;
            }
            match san.parse::<IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => match san.to_owned().try_into() {
                    Ok(name) => params.subject_alt_names.push(SanType::DnsName(name)),
                    Err(e) => skipped_sans.push(format!("{san}: {e}")),
                },
            }
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        // The key never leaves memory and is replaced at every start, so the
        // certificate may live as long as the CA.
        params.not_after = self.not_after;
        params.serial_number = Some(random_serial());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Issue)?;
        Ok(ServerIdentity {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            skipped_sans,
        })
    }

    /// Signs an agent's CSR: common name = `instance_id` (and nothing else
    /// in the subject), client authentication only, valid for `lifetime`
    /// (never beyond the CA). Everything the CSR asks for besides its public
    /// key is ignored.
    pub fn issue_client_cert(
        &self,
        csr_pem: &str,
        instance_id: &str,
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, instance_id);
        self.sign_client(csr_pem, dn, lifetime)
    }

    /// Signs an operator's CSR as an admin certificate: `CN=<name>,
    /// OU=admin, O=berth`, client authentication only, valid for `lifetime`.
    pub fn issue_admin_cert(
        &self,
        csr_pem: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        if !valid_admin_name(name) {
            return Err(CaError::AdminName(name.to_owned()));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, ADMIN_OU);
        dn.push(DnType::OrganizationName, ADMIN_ORG);
        self.sign_client(csr_pem, dn, lifetime)
    }

    fn sign_client(
        &self,
        csr_pem: &str,
        dn: DistinguishedName,
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        let mut csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE.min(lifetime / 4);
        params.not_after = (now + lifetime).min(self.not_after);
        let serial = random_serial();
        let serial_hex = canonical_serial(&hex::encode(serial.as_ref()));
        params.serial_number = Some(serial);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after = params.not_after;
        csr.params = params;
        let cert = csr.signed_by(&self.issuer).map_err(CaError::Issue)?;
        Ok(Issued {
            pem: cert.pem(),
            not_after,
            serial: serial_hex,
        })
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    params
}

/// 16 random bytes, positive (top bit clear), never zero.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    let mode = fs::metadata(path)
        .map_err(|source| CaError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let pem = fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.to_owned(),
        source,
    })?;
    KeyPair::from_pem(&pem).map_err(|source| CaError::BadKey {
        path: path.to_owned(),
        source,
    })
}

/// Writes a secret file that never exists with a wider mode than 0600.
fn write_secret(path: &Path, contents: &[u8]) -> Result<(), CaError> {
    write_atomic(path, contents, 0o600)
}

/// Crash-safe write: temporary file created with `mode`, fsync, rename,
/// fsync of the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Write {
        path: path.to_owned(),
        source,
    };
    crate::server::fsutil::write_atomic(path, contents, mode).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::ParsedExtension;

    fn csr(cn: &str) -> (KeyPair, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let csr = params.serialize_request(&key).expect("csr");
        (key, csr.pem().expect("pem"))
    }

    fn parse_pem(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
        p.contents
    }

    #[test]
    fn client_cert_has_instance_cn_and_chains_to_the_ca() {
        let ca = Ca::ephemeral().expect("ca");
        let (key, csr_pem) = csr("something-the-agent-chose");
        let pem = ca
            .issue_client_cert(&csr_pem, "i-0123456789abcdef", CLIENT_CERT_VALIDITY)
            .expect("issue")
            .pem;
        let der = parse_pem(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let cn: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .filter_map(|c| c.as_str().ok())
            .collect();
        assert_eq!(cn, vec!["i-0123456789abcdef"]);
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );

        // Chains to the CA: issuer name matches and the CA key verifies it.
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("ca x509");
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
        // Client auth only.
        let eku = cert
            .extended_key_usage()
            .expect("eku parse")
            .expect("eku present");
        assert!(eku.value.client_auth);
        assert!(!eku.value.server_auth);
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 30);
        assert!(cert.extensions().iter().all(
            |e| !matches!(e.parsed_extension(), ParsedExtension::BasicConstraints(b) if b.ca)
        ));
    }

    #[test]
    fn garbage_csr_is_refused() {
        let ca = Ca::ephemeral().expect("ca");
        let err = ca
            .issue_client_cert("not a csr", "i-0000000000000000", CLIENT_CERT_VALIDITY)
            .expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("invalid certificate signing request")
        );
    }

    #[test]
    fn ca_persists_with_private_key_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, created) = Ca::load_or_create(dir.path()).expect("create");
        assert!(created);
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, created) = Ca::load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(ca.sha256_hex(), again.sha256_hex());
        // A certificate issued after reloading still chains to the same CA.
        let (_, csr_pem) = csr("x");
        let pem = again
            .issue_client_cert(&csr_pem, "i-1", CLIENT_CERT_VALIDITY)
            .expect("issue")
            .pem;
        let der = parse_pem(&pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("ca");
        cert.verify_signature(Some(ca_cert.public_key()))
            .expect("signed by the CA");
    }

    #[test]
    fn a_ca_key_open_to_others_is_refused_naming_the_file_and_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        Ca::load_or_create(dir.path()).expect("create");
        let key = dir.path().join(CA_KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
        let msg = Ca::load_or_create(dir.path())
            .expect_err("must refuse")
            .to_string();
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains("0640"), "{msg}");
    }

    #[test]
    fn short_lifetimes_are_backdated_by_a_quarter_at_most() {
        let ca = Ca::ephemeral().expect("ca");
        let (_, csr_pem) = csr("x");
        let issued = ca
            .issue_client_cert(&csr_pem, "i-1", Duration::seconds(20))
            .expect("issue");
        let der = parse_pem(&issued.pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let v = cert.validity();
        assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 25);
        assert_eq!(v.not_after.timestamp(), issued.not_after.unix_timestamp());
    }

    #[test]
    fn admin_certs_are_marked_and_agent_certs_never_are() {
        let ca = Ca::ephemeral().expect("ca");
        // An agent asking for OU=admin in its CSR does not get it.
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ADMIN_OU);
        let sneaky = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let agent = ca
            .issue_client_cert(&sneaky, "i-1", CLIENT_CERT_VALIDITY)
            .expect("issue");
        let subject = subject_of(&parse_pem(&agent.pem)).expect("subject");
        assert_eq!(
            subject,
            Subject {
                common_name: "i-1".into(),
                admin: false,
                serial: agent.serial.clone(),
            }
        );
        let admin = ca
            .issue_admin_cert(&sneaky, "alice", ADMIN_CERT_VALIDITY)
            .expect("issue");
        let subject = subject_of(&parse_pem(&admin.pem)).expect("subject");
        assert_eq!(
            subject,
            Subject {
                common_name: "alice".into(),
                admin: true,
                serial: admin.serial.clone(),
            }
        );
        // 16 random bytes, a different serial number for each certificate.
        assert_eq!(admin.serial.len(), 32, "{}", admin.serial);
        assert_ne!(admin.serial, agent.serial);
        let err = ca
            .issue_admin_cert(&sneaky, "no spaces", ADMIN_CERT_VALIDITY)
            .expect_err("bad name");
        assert!(err.to_string().contains("\"no spaces\""), "{err}");
    }

    #[test]
    fn serial_numbers_are_normalized_as_operators_type_them() {
        let padded = format!("{:0>32}", "3fa201");
        assert_eq!(normalize_serial(" 3F:a2:01 "), Some(padded.clone()));
        assert_eq!(normalize_serial("3FA201"), Some(padded.clone()));
        assert_eq!(normalize_serial("00:3f:a2:01"), Some(padded));
        // As an integer prints it (no leading zero) and as the store and
        // `openssl` show it (with one): the same serial.
        let stored = "0b2e0c4d5e6f708192a3b4c5d6e7f809";
        assert_eq!(normalize_serial(stored).as_deref(), Some(stored));
        assert_eq!(normalize_serial(&stored[1..]).as_deref(), Some(stored));
        assert_eq!(
            normalize_serial(&format!("00{stored}")).as_deref(),
            Some(stored)
        );
        assert_eq!(
            canonical_serial(&hex::encode([0u8, 0x0b, 0x2e])),
            format!("{:0>32}", "b2e")
        );
        assert_eq!(tidy_serial(" 0B:2E "), "0b2e");
        assert_eq!(normalize_serial(""), None);
        assert_eq!(normalize_serial(":"), None);
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(&"a".repeat(65)), None);
    }

    #[test]
    fn missing_key_is_an_error_naming_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        Ca::load_or_create(dir.path()).expect("create");
        fs::remove_file(dir.path().join(CA_KEY_FILE)).expect("rm");
        let err = Ca::load_or_create(dir.path()).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("ca.crt") && msg.contains("ca.key"), "{msg}");
    }

    #[test]
    fn server_cert_has_sans() {
        let ca = Ca::ephemeral().expect("ca");
        let id = ca
            .issue_server_cert(&[
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                "[::1]".into(),
                "berth.example".into(),
            ])
            .expect("issue");
        assert!(id.skipped_sans.is_empty());
        let first = id
            .chain_pem
            .split("-----END CERTIFICATE-----")
            .next()
            .expect("first");
        let der = parse_pem(&format!("{first}-----END CERTIFICATE-----\n"));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
        let san = cert
            .subject_alternative_name()
            .expect("san parse")
            .expect("san present");
        assert_eq!(san.value.general_names.len(), 4);
        assert_eq!(id.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
    }
}
