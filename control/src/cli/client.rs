//! The admin API client of the CLI: connecting (plaintext on loopback, TLS
//! with an admin certificate elsewhere), and errors an operator can act on.

use std::error::Error as StdError;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_proto::text::escape_control;
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::{Task, TaskRef};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::admin_cert::{ADMIN_CA_FILE, ADMIN_CERT_FILE, ADMIN_KEY_FILE};
use crate::addr::AdminAddr;

/// Largest answer the CLI accepts from the admin API (task lists).
const CLI_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// An error and its causes, `: `-separated, leaving out causes whose text
/// is already part of the message (most messages here name their cause),
/// control characters escaped (a control plane's or an agent's message may
/// carry them).
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    escape_control(&out).into_owned()
}

/// The error chain of `e`, `: `-separated, without repeats.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    berth_proto::text::error_chain(e)
}

/// A connected admin client that turns gRPC errors into readable ones.
pub(super) struct Admin {
    addr: AdminAddr,
    pub(super) client: AdminClient<Channel>,
}

impl Admin {
    /// Connects to the admin API: plaintext for `host:port` and `http://`,
    /// TLS with the admin certificate in `admin_cert` for `https://`.
    pub(super) async fn connect(addr: &str, admin_cert: Option<&Path>) -> anyhow::Result<Admin> {
        let addr = AdminAddr::parse(addr)?;
        let mut endpoint = Endpoint::from_shared(addr.uri())
            .with_context(|| format!("invalid admin address {addr}"))?
            .connect_timeout(Duration::from_secs(5));
        if addr.tls {
            let dir = admin_cert.ok_or_else(|| {
                anyhow!(
                    "the admin API at {} needs an admin certificate: pass --admin-cert DIR (or set BERTH_ADMIN_CERT); create one on the control plane host with `berth admin-cert create --out DIR`",
                    addr.uri()
                )
            })?;
            let files = AdminCertFiles::load(dir)?;
            // tonic's TLS takes rustls' process-wide provider; berth uses ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&files.ca_pem))
                .identity(Identity::from_pem(&files.cert_pem, &files.key_pem))
                .domain_name(addr.host.clone());
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("cannot set up TLS for {}", addr.uri()))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let hint = if addr.tls {
                scheme_hint(&addr)
            } else {
                String::new()
            };
            anyhow!(
                "cannot reach the berth admin API at {addr}: {}{hint}",
                error_chain(&e)
            )
        })?;
        Ok(Admin {
            addr,
            client: AdminClient::new(channel)
                .max_decoding_message_size(CLI_MAX_MESSAGE)
                .max_encoding_message_size(crate::server::ADMIN_MAX_MESSAGE),
        })
    }

    pub(super) fn status(&self, status: tonic::Status) -> anyhow::Error {
        use tonic::Code;
        let message = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_owned()
        };
        // A connection that failed below gRPC: TLS refused, or plaintext
        // and TLS mixed up.
        let transport = status.source().is_some()
            || message.contains("h2 protocol error")
            || message.contains("transport error");
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled if transport => {
                anyhow!(
                    "cannot reach the berth admin API at {}: {}{}",
                    self.addr,
                    error_chain(&status),
                    scheme_hint(&self.addr)
                )
            }
            _ => anyhow!(message),
        }
    }

    pub(super) async fn describe_task(&mut self, id: &str) -> anyhow::Result<Task> {
        let r = self
            .client
            .describe_task(TaskRef {
                task_id: id.to_owned(),
            })
            .await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.status(s))
    }
}

/// What to try when a connection to the admin API fails: the other scheme.
fn scheme_hint(addr: &AdminAddr) -> String {
    if addr.tls {
        " (the admin API on a loopback address speaks plaintext: use http:// or host:port there; off loopback, check --admin-cert)"
            .to_owned()
    } else {
        format!(
            " (an admin API that listens off loopback speaks TLS: use https://{addr} with --admin-cert DIR)"
        )
    }
}

/// An admin certificate directory, read.
struct AdminCertFiles {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl AdminCertFiles {
    /// Reads `dir`; refuses a key readable by group or others.
    fn load(dir: &Path) -> anyhow::Result<AdminCertFiles> {
        use std::os::unix::fs::PermissionsExt;
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "cannot read {} (an admin certificate directory holds {ADMIN_CERT_FILE}, {ADMIN_KEY_FILE} and {ADMIN_CA_FILE})",
                    p.display()
                )
            })
        };
        let key_path = dir.join(ADMIN_KEY_FILE);
        if let Ok(meta) = std::fs::metadata(&key_path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by group or others (mode {:04o}): it holds a private key; run `chmod 600 {}`",
                    key_path.display(),
                    mode & 0o7777,
                    key_path.display()
                );
            }
        }
        Ok(AdminCertFiles {
            cert_pem: read(ADMIN_CERT_FILE)?,
            key_pem: read(ADMIN_KEY_FILE)?,
            ca_pem: read(ADMIN_CA_FILE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reports_do_not_repeat_causes() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(crate::server::ServerError::StateFile {
            path: "/x/server.json".into(),
            source: io,
        });
        assert_eq!(
            error_report(&e),
            "cannot write /x/server.json: disk on fire"
        );
        let e = anyhow!("inner").context("outer");
        assert_eq!(error_report(&e), "outer: inner");
        // A message from the control plane carrying escape sequences.
        let e = anyhow!("no task \x1b[2J\x1b]0;title\x07").context("describe");
        assert_eq!(
            error_report(&e),
            "describe: no task \\u{1b}[2J\\u{1b}]0;title\\u{7}"
        );
    }
}
