//! `berth access-key create|ls|revoke`: access keys of the ECS API. The
//! secret access key is printed by `create` only.

use berth_proto::json::format_time_ms;
use berth_proto::text::escape_control;
use berth_proto::v1::{AccessKeyInfo, AccessKeyRef, CreateAccessKeyRequest, ListAccessKeysRequest};
use serde_json::{Value, json};

use super::args::AccessKeyCommand;
use super::client::Admin;
use super::print_json;
use crate::view::Table;

pub(super) async fn access_key(admin: &mut Admin, cmd: AccessKeyCommand) -> anyhow::Result<()> {
    match cmd {
        AccessKeyCommand::Create { name, json } => {
            let r = admin
                .client
                .create_access_key(CreateAccessKeyRequest { name })
                .await;
            let created = r.map_err(|s| admin.status(s))?.into_inner();
            let key = created.key.unwrap_or_default();
            if json {
                let mut v = key_json(&key);
                v["SecretAccessKey"] = Value::String(created.secret_access_key);
                print_json(&v)
            } else {
                println!("AccessKeyId:     {}", key.access_key_id);
                println!("SecretAccessKey: {}", created.secret_access_key);
                println!(
                    "The secret access key is shown only now; store it (e.g. `aws configure`)."
                );
                Ok(())
            }
        }
        AccessKeyCommand::Ls { json } => {
            let r = admin
                .client
                .list_access_keys(ListAccessKeysRequest {})
                .await;
            let keys = r.map_err(|s| admin.status(s))?.into_inner().keys;
            if json {
                print_json(&Value::Array(keys.iter().map(key_json).collect()))
            } else {
                print!("{}", keys_table(&keys));
                Ok(())
            }
        }
        AccessKeyCommand::Revoke { id } => {
            let r = admin
                .client
                .revoke_access_key(AccessKeyRef { access_key_id: id })
                .await;
            let key = r.map_err(|s| admin.status(s))?.into_inner();
            println!("access key {} revoked", escape_control(&key.access_key_id));
            Ok(())
        }
    }
}

fn status(k: &AccessKeyInfo) -> &'static str {
    if k.revoked_at_ms == 0 {
        "Active"
    } else {
        "Revoked"
    }
}

/// A key as `--json` shows it (IAM's member names).
pub fn key_json(k: &AccessKeyInfo) -> Value {
    json!({
        "AccessKeyId": k.access_key_id,
        "Name": k.name,
        "Status": status(k),
        "CreateDate": format_time_ms(k.created_at_ms),
        "RevokeDate": (k.revoked_at_ms != 0).then(|| format_time_ms(k.revoked_at_ms)).flatten(),
    })
}

fn keys_table(keys: &[AccessKeyInfo]) -> String {
    let mut t = Table::new(&["ACCESS KEY ID", "NAME", "STATUS", "CREATED", "REVOKED"]);
    for k in keys {
        t.row(vec![
            k.access_key_id.clone(),
            k.name.clone(),
            status(k).to_owned(),
            format_time_ms(k.created_at_ms).unwrap_or_default(),
            if k.revoked_at_ms == 0 {
                String::new()
            } else {
                format_time_ms(k.revoked_at_ms).unwrap_or_default()
            },
        ]);
    }
    t.render()
}
