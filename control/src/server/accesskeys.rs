//! Access keys of the ECS API (`berth access-key create|ls|revoke`, SPEC
//! §7): the admin API's handlers and the lookup SigV4 verification uses.
//!
//! An access key id is `AKIA` and 16 characters of `[A-Z2-7]` (80 random
//! bits); the secret access key is 40 characters of `[A-Za-z0-9]` (about
//! 238 random bits). SigV4 derives its signing key from the secret itself,
//! so the store keeps the secret sealed with the secrets key
//! (`server::secrets`, associated data `access-key/<id>`), never in
//! plaintext.
//!
//! Invariants:
//! - the secret is returned by `CreateAccessKey` only, and never logged;
//!   logs name the id;
//! - a revoked or unknown key has no secret ([`valid_secret`] answers
//!   `None`), whatever the request.

use berth_proto::v1::{
    AccessKeyInfo, AccessKeyRef, CreateAccessKeyRequest, CreatedAccessKey, ListAccessKeysResponse,
};
use tonic::Status;
use tracing::info;

use super::core::{Core, store_status};
use super::secrets::crypto_status;
use super::store::{AccessKeyRecord, StoreError, access_key_id_problem, access_key_name_problem};

const ID_PREFIX: &str = "AKIA";
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Length of a secret access key.
pub const SECRET_LEN: usize = 40;

/// `len` characters drawn uniformly from `alphabet` (at most 256 long):
/// random bytes at or above the largest multiple of its length are
/// dropped, so no character is more likely than another.
fn random_text(alphabet: &[u8], len: usize) -> String {
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rand::fill(&mut buf);
        for &b in &buf {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(b) % n]));
            }
        }
    }
    out
}

/// A new access key id.
pub(crate) fn new_id() -> String {
    format!("{ID_PREFIX}{}", random_text(ID_ALPHABET, 16))
}

/// A new secret access key.
pub(crate) fn new_secret() -> String {
    random_text(SECRET_ALPHABET, SECRET_LEN)
}

/// The associated data a key's secret is sealed with.
fn sealed_name(id: &str) -> String {
    format!("access-key/{id}")
}

fn info_message(r: &AccessKeyRecord) -> AccessKeyInfo {
    AccessKeyInfo {
        access_key_id: r.id.clone(),
        name: r.name.clone(),
        created_at_ms: r.created_at_ms,
        revoked_at_ms: r.revoked_at_ms.unwrap_or(0),
    }
}

pub(crate) async fn create(
    core: &Core,
    r: CreateAccessKeyRequest,
    caller: &str,
) -> Result<CreatedAccessKey, Status> {
    if let Some(p) = access_key_name_problem(&r.name) {
        return Err(Status::invalid_argument(p));
    }
    let id = new_id();
    let secret = new_secret();
    let ciphertext = core
        .secrets
        .seal(&sealed_name(&id), secret.as_bytes())
        .map_err(crypto_status)?;
    let record = AccessKeyRecord {
        id,
        name: r.name,
        ciphertext,
        created_at_ms: berth_proto::now_ms(),
        revoked_at_ms: None,
    };
    let rec = record.clone();
    core.db("create_access_key", move |s| s.create_access_key(&rec))
        .await
        .map_err(store_status)?;
    info!(access_key = %record.id, name = %record.name, by = %caller, "access key created");
    Ok(CreatedAccessKey {
        key: Some(info_message(&record)),
        secret_access_key: secret,
    })
}

pub(crate) async fn list(core: &Core) -> Result<ListAccessKeysResponse, Status> {
    let all = core
        .db("list_access_keys", |s| s.access_keys())
        .await
        .map_err(store_status)?;
    Ok(ListAccessKeysResponse {
        keys: all.iter().map(info_message).collect(),
    })
}

pub(crate) async fn revoke(
    core: &Core,
    r: AccessKeyRef,
    caller: &str,
) -> Result<AccessKeyInfo, Status> {
    let id = r.access_key_id.trim().to_owned();
    if let Some(p) = access_key_id_problem(&id) {
        return Err(Status::invalid_argument(p));
    }
    let now = berth_proto::now_ms();
    let key = id.clone();
    let rec = core
        .db("revoke_access_key", move |s| s.revoke_access_key(&key, now))
        .await
        .map_err(store_status)?;
    info!(access_key = %id, by = %caller, "access key revoked");
    Ok(info_message(&rec))
}

/// The secret of a valid (known, not revoked) key; `None` otherwise. An id
/// that is not well formed is unknown.
pub(crate) async fn valid_secret(core: &Core, id: &str) -> Result<Option<String>, StoreError> {
    if access_key_id_problem(id).is_some() {
        return Ok(None);
    }
    let key = id.to_owned();
    let Some(rec) = core.db("access_key", move |s| s.access_key(&key)).await? else {
        return Ok(None);
    };
    if rec.revoked_at_ms.is_some() {
        return Ok(None);
    }
    match core
        .secrets
        .open_sealed(&sealed_name(&rec.id), &rec.ciphertext)
    {
        Ok(bytes) => Ok(String::from_utf8(bytes).ok()),
        Err(e) => {
            tracing::error!(access_key = %rec.id, error = %e, "access key");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_have_the_aws_shape() {
        let id = new_id();
        assert_eq!(access_key_id_problem(&id), None, "{id}");
        assert!(id.starts_with("AKIA"), "{id}");
        let secret = new_secret();
        assert_eq!(secret.len(), 40);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(new_id(), id);
        assert_ne!(new_secret(), secret);
    }
}
