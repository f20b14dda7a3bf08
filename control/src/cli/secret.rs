//! `berth secret create|ls|rotate|delete`: values are read from a file or
//! stdin (never from the command line, where the process list shows them)
//! and never printed.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use berth_proto::json::format_time_ms;
use berth_proto::text::escape_control;
use berth_proto::v1::{ListSecretsRequest, PutSecretRequest, SecretInfo, SecretRef};
use serde_json::{Value, json};

use super::args::{SecretCommand, SecretSource};
use super::client::Admin;
use super::print_json;
use crate::server::store::MAX_SECRET_VALUE_BYTES;
use crate::view::Table;

pub(super) async fn secret(admin: &mut Admin, cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Create { name, source, json } => {
            put(admin, name, &source, false, json).await
        }
        SecretCommand::Rotate { name, source, json } => put(admin, name, &source, true, json).await,
        SecretCommand::Delete { name } => {
            let r = admin.client.delete_secret(SecretRef { name }).await;
            let d = r.map_err(|s| admin.status(s))?.into_inner();
            println!("secret {} deleted", escape_control(&d.name));
            Ok(())
        }
        SecretCommand::Ls { json } => {
            let r = admin.client.list_secrets(ListSecretsRequest {}).await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().secrets;
            if json {
                print_json(&Value::Array(list.iter().map(secret_json).collect()))
            } else {
                print!("{}", secrets_table(&list));
                Ok(())
            }
        }
    }
}

/// `secret create` or (`rotate`) `secret rotate`.
async fn put(
    admin: &mut Admin,
    name: String,
    source: &SecretSource,
    rotate: bool,
    json: bool,
) -> anyhow::Result<()> {
    let req = PutSecretRequest {
        name,
        value: read_value(source)?,
    };
    let r = if rotate {
        admin.client.rotate_secret(req).await
    } else {
        admin.client.create_secret(req).await
    };
    let s = r.map_err(|s| admin.status(s))?.into_inner();
    one(&s, json, if rotate { "rotated" } else { "created" })
}

/// A secret as `--json` shows it: name, version and dates.
pub fn secret_json(s: &SecretInfo) -> Value {
    json!({
        "name": s.name,
        "version": s.version,
        "createdAt": format_time_ms(s.created_at_ms),
        "updatedAt": format_time_ms(s.updated_at_ms),
    })
}

fn secrets_table(list: &[SecretInfo]) -> String {
    let mut t = Table::new(&["NAME", "VERSION", "CREATED", "UPDATED"]);
    for s in list {
        t.row(vec![
            s.name.clone(),
            s.version.to_string(),
            format_time_ms(s.created_at_ms).unwrap_or_default(),
            format_time_ms(s.updated_at_ms).unwrap_or_default(),
        ]);
    }
    t.render()
}

fn one(s: &SecretInfo, json: bool, what: &str) -> anyhow::Result<()> {
    if json {
        print_json(&secret_json(s))
    } else {
        println!(
            "secret {} {what} (version {})",
            escape_control(&s.name),
            s.version
        );
        Ok(())
    }
}

/// The value from the file or stdin, as bytes, at most the cap (read one
/// byte further to tell).
fn read_value(source: &SecretSource) -> anyhow::Result<Vec<u8>> {
    let limit = u64::try_from(MAX_SECRET_VALUE_BYTES + 1).unwrap_or(u64::MAX);
    let mut value = Vec::new();
    let what = match &source.from_file {
        Some(path) => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            f.take(limit)
                .read_to_end(&mut value)
                .with_context(|| format!("cannot read {}", path.display()))?;
            path.display().to_string()
        }
        None => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut value)
                .context("cannot read the value from stdin")?;
            "stdin".to_owned()
        }
    };
    check_value(&value, Path::new(&what))?;
    Ok(value)
}

fn check_value(value: &[u8], from: &Path) -> anyhow::Result<()> {
    if value.is_empty() {
        bail!("the value from {} is empty", from.display());
    }
    if value.len() > MAX_SECRET_VALUE_BYTES {
        bail!(
            "the value from {} is larger than {MAX_SECRET_VALUE_BYTES} bytes (64 KiB), the most a secret holds",
            from.display()
        );
    }
    Ok(())
}
