//! Where the CLI finds the admin API: `--server` / `BERTH_ADDR`.
//!
//! Accepted: `host:port`, `host` (port 7421), `[v6]:port`,
//! `http://host[:port][/]`, `https://host[:port][/]`. The admin API speaks
//! plaintext on loopback and TLS (with an admin certificate) anywhere else:
//! `https://` selects TLS.

use std::fmt;

/// Port of the admin API when an address names none.
pub const DEFAULT_ADMIN_PORT: u16 = 7421;
/// The default admin address.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:7421";

/// A parsed admin address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAddr {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The address was an `https://` URL.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("admin address is empty")]
    Empty,
    #[error("admin address {0:?} has an unsupported scheme (use host:port, http:// or https://)")]
    Scheme(String),
    #[error("admin address {0:?} has an invalid port")]
    Port(String),
    #[error("admin address {0:?} has no host")]
    Host(String),
    #[error("admin address {0:?} has a path; give only host:port")]
    Path(String),
}

impl AdminAddr {
    /// Parses `host:port` or an `http(s)://` URL.
    pub fn parse(input: &str) -> Result<AdminAddr, AddrError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        let (tls, rest) = if let Some(rest) = strip_prefix_ci(s, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ci(s, "https://") {
            (true, rest)
        } else if s.contains("://") {
            return Err(AddrError::Scheme(s.to_owned()));
        } else {
            (false, s)
        };
        let authority = match rest.split_once('/') {
            Some((a, "")) => a,
            Some(_) => return Err(AddrError::Path(s.to_owned())),
            None => rest,
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| AddrError::Host(s.to_owned()))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| AddrError::Port(s.to_owned()))?,
                ),
            };
            (host, port)
        } else if authority.matches(':').count() > 1 {
            // A bare IPv6 address without port.
            (authority, None)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(AddrError::Host(s.to_owned()));
        }
        let port = match port {
            None => DEFAULT_ADMIN_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AddrError::Port(s.to_owned()))?,
        };
        Ok(AdminAddr {
            host: host.to_owned(),
            port,
            tls,
        })
    }

    /// The URI for the gRPC channel.
    pub fn uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{self}")
    }
}

impl fmt::Display for AdminAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> (String, u16, bool) {
        let a = AdminAddr::parse(s).expect(s);
        (a.host, a.port, a.tls)
    }

    #[test]
    fn host_port() {
        assert_eq!(ok("127.0.0.1:7421"), ("127.0.0.1".into(), 7421, false));
        assert_eq!(ok("berth.local:9000"), ("berth.local".into(), 9000, false));
        assert_eq!(ok("localhost"), ("localhost".into(), 7421, false));
        assert_eq!(ok(" [::1]:8000 "), ("::1".into(), 8000, false));
        assert_eq!(ok("::1"), ("::1".into(), 7421, false));
    }

    #[test]
    fn urls() {
        assert_eq!(
            ok("http://127.0.0.1:7421"),
            ("127.0.0.1".into(), 7421, false)
        );
        assert_eq!(ok("http://localhost/"), ("localhost".into(), 7421, false));
        assert_eq!(ok("HTTP://h:1"), ("h".into(), 1, false));
        assert_eq!(
            ok("https://berth.example:443"),
            ("berth.example".into(), 443, true)
        );
        assert_eq!(ok("https://[::1]:7421/"), ("::1".into(), 7421, true));
    }

    #[test]
    fn uri_and_display() {
        let a = AdminAddr::parse("[::1]:7421").expect("v6");
        assert_eq!(a.to_string(), "[::1]:7421");
        assert_eq!(a.uri(), "http://[::1]:7421");
        let a = AdminAddr::parse("https://h:1").expect("https");
        assert_eq!(a.uri(), "https://h:1");
    }

    #[test]
    fn refusals() {
        assert_eq!(AdminAddr::parse(""), Err(AddrError::Empty));
        assert!(matches!(
            AdminAddr::parse("ftp://h:1"),
            Err(AddrError::Scheme(_))
        ));
        assert!(matches!(
            AdminAddr::parse("h:port"),
            Err(AddrError::Port(_))
        ));
        assert!(matches!(AdminAddr::parse("h:0"), Err(AddrError::Port(_))));
        assert!(matches!(
            AdminAddr::parse("h:70000"),
            Err(AddrError::Port(_))
        ));
        assert!(matches!(AdminAddr::parse(":7421"), Err(AddrError::Host(_))));
        assert!(matches!(
            AdminAddr::parse("http://h:1/v1"),
            Err(AddrError::Path(_))
        ));
    }
}
