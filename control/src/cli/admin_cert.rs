//! `berth admin-cert create|ls|revoke`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_proto::json::format_time_ms;
use berth_proto::text::escape_control;
use berth_proto::v1::{
    AdminCertificateRecord, CreateAdminCertificateRequest, ListAdminCertificatesRequest,
    RevokeAdminCertificateRequest,
};
use serde_json::{Value, json};

use super::args::AdminCertCommand;
use super::client::Admin;
use super::print_json;
use crate::view;

/// Files of an admin certificate directory (`berth admin-cert create --out`).
pub const ADMIN_KEY_FILE: &str = "admin.key";
pub const ADMIN_CERT_FILE: &str = "admin.crt";
pub const ADMIN_CA_FILE: &str = "ca.crt";

/// `berth admin-cert create|ls|revoke`.
pub(super) async fn admin_cert(
    server: &str,
    admin_cert: Option<&Path>,
    cmd: AdminCertCommand,
) -> anyhow::Result<()> {
    match cmd {
        AdminCertCommand::Create {
            out,
            name,
            lifetime,
            data_dir,
            force,
        } => {
            let create = AdminCertCreate {
                out,
                name,
                lifetime,
                data_dir,
                force,
            };
            admin_cert_create(server, admin_cert, create).await
        }
        AdminCertCommand::Ls { json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .list_admin_certificates(ListAdminCertificatesRequest {})
                .await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().certificates;
            let now = berth_proto::now_ms();
            if json {
                print_json(&Value::Array(
                    list.iter().map(|c| admin_cert_json(c, now)).collect(),
                ))
            } else {
                print!("{}", view::admin_certs_table(&list, now));
                Ok(())
            }
        }
        AdminCertCommand::Revoke { serial, json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .revoke_admin_certificate(RevokeAdminCertificateRequest {
                    serial_number: serial,
                })
                .await;
            let r = r.map_err(|s| admin.status(s))?.into_inner();
            let c = r
                .certificate
                .ok_or_else(|| anyhow!("the control plane answered without the certificate"))?;
            if json {
                return print_json(&admin_cert_json(&c, berth_proto::now_ms()));
            }
            let at = format_time_ms(c.revoked_at_ms).unwrap_or_else(|| "-".into());
            if r.already_revoked {
                println!(
                    "admin certificate {} of {} is already revoked (since {at})",
                    escape_control(&c.serial_number),
                    escape_control(&c.name)
                );
            } else {
                println!(
                    "admin certificate {} of {} revoked at {at}",
                    escape_control(&c.serial_number),
                    escape_control(&c.name)
                );
            }
            Ok(())
        }
    }
}

/// `berth admin-cert ls --json`: one object per certificate, no key material.
pub fn admin_cert_json(c: &AdminCertificateRecord, now_ms: i64) -> Value {
    json!({
        "serialNumber": c.serial_number,
        "name": c.name,
        "issuedAt": berth_proto::json::time_json(c.issued_at_ms),
        "notAfter": berth_proto::json::time_json(c.not_after_ms),
        "revokedAt": berth_proto::json::time_json(c.revoked_at_ms),
        "status": view::admin_cert_status(c, now_ms),
    })
}

/// The arguments of `berth admin-cert create`.
struct AdminCertCreate {
    out: PathBuf,
    name: String,
    lifetime: Duration,
    data_dir: Option<PathBuf>,
    force: bool,
}

/// `berth admin-cert create`: a key and CSR made here, signed by the fleet
/// CA (and recorded by the control plane), written to `--out`.
async fn admin_cert_create(
    server: &str,
    admin_cert: Option<&Path>,
    create: AdminCertCreate,
) -> anyhow::Result<()> {
    let AdminCertCreate {
        out,
        name,
        lifetime,
        data_dir,
        force,
    } = create;
    let name = name.trim().to_owned();
    if !crate::server::ca::valid_admin_name(&name) {
        bail!("invalid --name {name:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'");
    }
    if lifetime < Duration::from_secs(60) || lifetime > crate::server::MAX_CERT_LIFETIME {
        bail!(
            "--lifetime {} is out of range (1m to 365 days)",
            humantime::format_duration(lifetime)
        );
    }
    let key_path = out.join(ADMIN_KEY_FILE);
    if key_path.exists() && !force {
        bail!(
            "{} already holds an admin certificate; use --force to replace it",
            out.display()
        );
    }
    let key = rcgen::KeyPair::generate().map_err(|e| anyhow!("cannot create a key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.clone());
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| anyhow!("cannot create a certificate signing request: {e}"))?;
    let (cert_pem, ca_pem, not_after_ms, serial) = match data_dir {
        Some(dir) => {
            let lifetime =
                time::Duration::try_from(lifetime).map_err(|e| anyhow!("--lifetime: {e}"))?;
            let signer = name.clone();
            let (issued, ca_pem) = tokio::task::spawn_blocking(move || {
                crate::server::admin::issue_admin_cert_offline(&dir, &csr_pem, &signer, lifetime)
            })
            .await
            .map_err(|e| anyhow!("cannot sign with the fleet CA: {e}"))??;
            let not_after_ms = issued.not_after_ms();
            (issued.pem, ca_pem, not_after_ms, issued.serial)
        }
        None => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .create_admin_certificate(CreateAdminCertificateRequest {
                    csr_pem,
                    name: name.clone(),
                    lifetime_seconds: lifetime.as_secs(),
                })
                .await;
            let c = r.map_err(|s| admin.status(s))?.into_inner();
            (c.certificate_pem, c.ca_pem, c.not_after_ms, c.serial_number)
        }
    };
    let write = |file: &str, data: &[u8], mode: u32| {
        let p = out.join(file);
        crate::server::fsutil::write_atomic(&p, data, mode)
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let open = crate::server::fsutil::create_private_dir(&out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    if open {
        eprintln!(
            "warning: {} is accessible to group or others; it should be mode 0700",
            out.display()
        );
    }
    write(ADMIN_KEY_FILE, key.serialize_pem().as_bytes(), 0o600)?;
    write(ADMIN_CERT_FILE, cert_pem.as_bytes(), 0o644)?;
    write(ADMIN_CA_FILE, ca_pem.as_bytes(), 0o644)?;
    let expires = format_time_ms(not_after_ms).unwrap_or_else(|| "-".into());
    println!(
        "admin certificate for {name} written to {} (serial number {serial}, expires {expires})",
        out.display()
    );
    println!(
        "use it with: berth --server https://HOST:7421 --admin-cert {} …",
        out.display()
    );
    Ok(())
}
