//! `Enrollment.Enroll`: an activation (id + code) and a CSR in, a client
//! certificate out.
//!
//! Order matters: the source address is checked against its recent
//! failures first (at most [`DEFAULT_ENROLL_FAILURES`] a minute per IPv4
//! address or IPv6 /64, then RESOURCE_EXHAUSTED without looking further),
//! then the activation id against its own (after [`ACTIVATION_FAILURES`]
//! failed attempts in [`ACTIVATION_FAILURE_WINDOW`] the activation is
//! locked: the right code is refused too, whatever the source), then the
//! activation (a wrong code learns nothing about the activation; the code's
//! SHA-256 is compared in constant time), its use, expiry and hostname
//! binding, then the CSR (a broken CSR does not burn the activation), then
//! the activation is consumed and the instance created in one transaction
//! (two hosts racing for one activation: one wins). Every attempt counts as
//! a failure of its source address and of its activation id until it
//! succeeds (so parallel attempts cannot slip past the limits together); a
//! refusal changes nothing stored. Counting per activation as well is what
//! lets the per-address limit be generous: hosts behind one NAT or load
//! balancer share an address, and one of them typing a wrong code must not
//! lock the others out.
//! The activation code is never logged.
//!
//! [`DEFAULT_ENROLL_FAILURES`]: super::DEFAULT_ENROLL_FAILURES

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_proto::v1::enrollment_server::Enrollment;
use berth_proto::v1::{EnrollRequest, EnrollResponse};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::{Instrument, info, info_span, warn};

use super::limits::{FailureLimiter, Limited, source_key, source_text};
use super::protocol;
use super::store::{NewInstance, StoreError};
use super::{Core, store_status};

/// The message for an unknown activation id and for a wrong code alike.
pub const UNKNOWN_ACTIVATION: &str = "unknown activation id or wrong code";

/// Failed attempts one activation id allows in [`ACTIVATION_FAILURE_WINDOW`]
/// before it is locked for the rest of the window.
pub const ACTIVATION_FAILURES: u32 = 10;
/// The window of [`ACTIVATION_FAILURES`]: the default activation lifetime.
pub const ACTIVATION_FAILURE_WINDOW: Duration = super::DEFAULT_TOKEN_TTL;
/// Characters of an activation id that are counted (and logged).
const MAX_ID_CHARS: usize = 64;

pub struct EnrollmentService {
    core: Arc<Core>,
    /// Failed attempts per activation id (unknown ids too, so that a lock
    /// does not tell which ids exist).
    activation_failures: FailureLimiter<String>,
}

impl EnrollmentService {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        EnrollmentService {
            core,
            activation_failures: FailureLimiter::new(
                ACTIVATION_FAILURES,
                ACTIVATION_FAILURE_WINDOW,
            ),
        }
    }
}

/// `limited` as a human duration: "50s", never "0s".
fn retry_text(limited: &Limited) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(limited.retry_after.as_secs().max(1)))
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

/// Most source networks one activation may name (`--from`).
pub const MAX_SOURCE_CIDRS: usize = 32;

/// A network in CIDR notation (`10.0.3.0/24`, `2001:db8::/48`; a bare
/// address is its own /32 or /128) that an activation may be used from.
/// The address is kept with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `s`; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let bad = |why: &str| {
            format!(
                "{s:?} is not a network in CIDR notation ({why}); for example 10.0.3.0/24 or 2001:db8::/64"
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
            },
        };
        Ok(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in the
    /// network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

/// Parses the networks an activation is bound to: at most
/// [`MAX_SOURCE_CIDRS`], each valid, duplicates dropped.
pub fn parse_source_cidrs<S: AsRef<str>>(list: &[S]) -> Result<Vec<Cidr>, String> {
    if list.len() > MAX_SOURCE_CIDRS {
        return Err(format!(
            "{} source networks given: an activation takes at most {MAX_SOURCE_CIDRS}",
            list.len()
        ));
    }
    let mut out: Vec<Cidr> = Vec::new();
    for s in list {
        let c = Cidr::parse(s.as_ref())?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    Ok(out)
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
        let source = source_key(peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.ip()));
        let req = request.into_inner();
        let activation_id = req.activation_id.trim().to_owned();
        // The id comes from outside: bounded in logs and counters.
        let logged_id: String = activation_id.chars().take(MAX_ID_CHARS).collect();
        let span = info_span!("enroll", activation_id = %logged_id, peer = ?peer);
        async move {
            // Counted as a failure until it succeeds.
            let attempt = match self.core.enroll_failures.begin(&source, Instant::now()) {
                Ok(at) => at,
                Err(limited) => {
                warn!(
                    failures = limited.failures,
                    source = %source_text(source),
                    "enrollment refused: too many failed attempts from this address"
                );
                return Err(Status::resource_exhausted(format!(
                    "too many failed enrollment attempts from {} ({} in the last {}); try again in {}",
                    source_text(source),
                    limited.failures,
                    humantime::format_duration(limited.window),
                    retry_text(&limited)
                )));
                }
            };
            let id_attempt = match self.activation_failures.begin(&logged_id, Instant::now()) {
                Ok(at) => at,
                Err(limited) => {
                    warn!(
                        failures = limited.failures,
                        "enrollment refused: the activation is locked after too many failed attempts"
                    );
                    return Err(Status::resource_exhausted(format!(
                        "activation {logged_id} is locked: {} failed attempts in the last {}; it refuses every code, the right one too, for {}: create a new activation with `berth token create`",
                        limited.failures,
                        humantime::format_duration(limited.window),
                        retry_text(&limited)
                    )));
                }
            };
            let found = {
                let id = activation_id.clone();
                self.core
                    .db("activation", move |s| s.activation(&id))
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
            if !activation.source_cidrs.is_empty() {
                // Parsed when stored; one that no longer parses matches nothing.
                let allowed = activation
                    .source_cidrs
                    .iter()
                    .filter_map(|c| Cidr::parse(c).ok())
                    .any(|c| peer.is_some_and(|p| c.contains(p.ip())));
                if !allowed {
                    let from = activation.source_cidrs.join(", ");
                    let shown = peer.map_or("an unknown address".to_owned(), |p| p.ip().to_canonical().to_string());
                    warn!(allowed_sources = %from, "enrollment refused: the activation is bound to other source networks");
                    return Err(Status::permission_denied(format!(
                        "activation {activation_id} may be used only from {from}, but this request comes from {shown}; create a token for this host's network (berth token create --from {}) or check that no proxy or NAT sits between the host and the control plane",
                        peer.map_or("CIDR".to_owned(), |p| p.ip().to_canonical().to_string())
                    )));
                }
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
                .db("enroll", move |s| s.enroll(&id, now, &new))
                .await
                .map_err(|e| match e {
                    StoreError::ActivationUsed(_) => Status::permission_denied(e.to_string()),
                    other => store_status(other),
                })?;
            self.core.enroll_failures.forgive(&source, attempt);
            self.activation_failures.forgive(&logged_id, id_attempt);
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
    fn source_networks_parse_and_match_ipv4_and_ipv6() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let lan = Cidr::parse(" 10.9.0.7/24 ").expect("v4");
        assert_eq!(lan.to_string(), "10.9.0.0/24");
        assert!(lan.contains(ip("10.9.0.200")));
        assert!(lan.contains(ip("::ffff:10.9.0.1")), "IPv4-mapped");
        assert!(!lan.contains(ip("10.9.1.1")));
        assert!(!lan.contains(ip("127.0.0.1")));
        let lo = Cidr::parse("127.0.0.0/8").expect("v4");
        assert!(lo.contains(ip("127.0.0.1")));
        let one = Cidr::parse("192.0.2.1").expect("bare address");
        assert_eq!(one.to_string(), "192.0.2.1/32");
        assert!(one.contains(ip("192.0.2.1")) && !one.contains(ip("192.0.2.2")));
        let any = Cidr::parse("0.0.0.0/0").expect("any v4");
        assert!(any.contains(ip("203.0.113.9")) && !any.contains(ip("2001:db8::1")));
        let v6 = Cidr::parse("2001:db8:1::/48").expect("v6");
        assert_eq!(v6.to_string(), "2001:db8:1::/48");
        assert!(v6.contains(ip("2001:db8:1:ffff::1")));
        assert!(!v6.contains(ip("2001:db8:2::1")));
        assert!(!v6.contains(ip("10.9.0.1")));
        assert!(Cidr::parse("::/0").expect("any v6").contains(ip("::1")));
        for bad in [
            "",
            "10.9.0.0/33",
            "2001:db8::/129",
            "10.9.0.0/",
            "10.9.0.0/+8",
            "web-1/24",
            "10.9.0/24",
        ] {
            let err = Cidr::parse(bad).expect_err(bad);
            assert!(err.contains("CIDR"), "{err}");
        }
        let list = parse_source_cidrs(&["10.9.0.0/24", "10.9.0.1/24", "::1"]).expect("list");
        assert_eq!(list.len(), 2, "duplicates dropped: {list:?}");
        let many: Vec<String> = (0..=MAX_SOURCE_CIDRS)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert!(
            parse_source_cidrs(&many)
                .expect_err("too many")
                .contains("at most 32")
        );
    }

    #[test]
    fn hostnames_compare_case_insensitively() {
        assert!(hostname_matches("Web-1.example", "web-1.EXAMPLE"));
        assert!(hostname_matches("web-1", " web-1\n"));
        assert!(!hostname_matches("web-1", "web-2"));
        assert!(!hostname_matches("web-1", ""));
    }
}
