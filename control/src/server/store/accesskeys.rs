//! Access keys of the ECS API (`berth access-key create|ls|revoke`, SPEC
//! §7).
//!
//! SigV4 verification needs the secret itself (the signing key is derived
//! from it per date, region and service), so the store keeps the secret
//! encrypted with the server's secrets key (`server::secrets`), as hex
//! text; nothing here sees the secret or the key.
//!
//! Invariants (both backends, each method one transaction):
//! - an id is [`ACCESS_KEY_ID_LEN`] of `[A-Z0-9]`, unique; a name is at
//!   most [`MAX_ACCESS_KEY_NAME_LEN`] printable characters; a ciphertext at
//!   most [`MAX_ACCESS_KEY_CIPHERTEXT`] bytes; checked before anything is
//!   written;
//! - a revocation sets `revoked_at_ms` once: revoking again keeps the first
//!   time; a revoked key stays listed and is never valid again.

use rusqlite::{OptionalExtension, params};
use tokio_postgres::Row;

use super::StoreError;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;

/// Length of an access key id (`AKIA` and 16 more, as AWS writes them).
pub const ACCESS_KEY_ID_LEN: usize = 20;
/// Longest access key name.
pub const MAX_ACCESS_KEY_NAME_LEN: usize = 128;
/// Largest stored ciphertext of a secret access key.
pub const MAX_ACCESS_KEY_CIPHERTEXT: usize = 256;

/// One access key: id, name, dates and the encrypted secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeyRecord {
    pub id: String,
    pub name: String,
    /// As `server::secrets` seals it.
    pub ciphertext: Vec<u8>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl std::fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("created_at_ms", &self.created_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish()
    }
}

/// What is wrong with an access key id, if anything.
pub fn access_key_id_problem(id: &str) -> Option<String> {
    if id.len() != ACCESS_KEY_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some(format!(
            "{:.40} is not an access key id: {ACCESS_KEY_ID_LEN} upper-case letters and digits",
            berth_proto::text::escape_control(id)
        ));
    }
    None
}

/// What is wrong with an access key name, if anything.
pub fn access_key_name_problem(name: &str) -> Option<String> {
    if name.chars().count() > MAX_ACCESS_KEY_NAME_LEN {
        return Some(format!(
            "an access key name is at most {MAX_ACCESS_KEY_NAME_LEN} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("an access key name may not hold control characters".to_owned());
    }
    None
}

fn check_id(op: &'static str, id: &str) -> Result<(), StoreError> {
    match access_key_id_problem(id) {
        Some(detail) => Err(StoreError::Invalid { op, detail }),
        None => Ok(()),
    }
}

fn check_new(r: &AccessKeyRecord) -> Result<(), StoreError> {
    const OP: &str = "create_access_key";
    check_id(OP, &r.id)?;
    if let Some(detail) = access_key_name_problem(&r.name) {
        return Err(StoreError::Invalid { op: OP, detail });
    }
    if r.ciphertext.is_empty() || r.ciphertext.len() > MAX_ACCESS_KEY_CIPHERTEXT {
        return Err(StoreError::Invalid {
            op: OP,
            detail: format!(
                "the encrypted secret of {} is {} bytes, 1 to {MAX_ACCESS_KEY_CIPHERTEXT} are stored",
                r.id,
                r.ciphertext.len()
            ),
        });
    }
    Ok(())
}

/// The access keys' part of the store contract. Every method is one
/// transaction.
pub trait AccessKeyStore {
    /// Stores a new key. [`StoreError::Conflict`] when the id is taken
    /// (nothing changes).
    fn create_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError>;
    /// Marks the key revoked at `now_ms` (or keeps an earlier revocation).
    /// [`StoreError::NoAccessKey`] for an unknown id.
    fn revoke_access_key(&self, id: &str, now_ms: i64) -> Result<AccessKeyRecord, StoreError>;
    fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError>;
    /// Every key, oldest first, revoked ones included.
    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError>;
}

const COLUMNS: &str = "id, name, ciphertext, created_at_ms, revoked_at_ms";
const INSERT: &str = "INSERT INTO access_keys (id, name, ciphertext, created_at_ms) \
     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING";
const REVOKE: &str =
    "UPDATE access_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?2) WHERE id = ?1";

type Columns = (String, String, String, i64, Option<i64>);

fn record(
    (id, name, text, created_at_ms, revoked_at_ms): Columns,
) -> Result<AccessKeyRecord, StoreError> {
    let ciphertext = hex::decode(&text).map_err(|e| StoreError::Invalid {
        op: "access_key",
        detail: format!("the stored secret of access key {id} is not hex: {e}"),
    })?;
    Ok(AccessKeyRecord {
        id,
        name,
        ciphertext,
        created_at_ms,
        revoked_at_ms,
    })
}

fn taken(id: &str) -> StoreError {
    StoreError::Conflict {
        op: "create_access_key",
        detail: format!("access key {id} already exists"),
    }
}

fn no_key(id: &str) -> StoreError {
    StoreError::NoAccessKey(id.to_owned())
}

// ---- SQLite

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Columns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn sqlite_get(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<AccessKeyRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM access_keys WHERE id = ?1"),
        params![id],
        sqlite_row,
    )
    .optional()?
    .map(record)
    .transpose()
}

impl AccessKeyStore for SqliteStore {
    fn create_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        check_new(key)?;
        let text = hex::encode(&key.ciphertext);
        self.write("create_access_key", |tx| {
            match tx.execute(INSERT, params![key.id, key.name, text, key.created_at_ms])? {
                0 => Err(taken(&key.id)),
                _ => Ok(()),
            }
        })
    }

    fn revoke_access_key(&self, id: &str, now_ms: i64) -> Result<AccessKeyRecord, StoreError> {
        check_id("revoke_access_key", id)?;
        self.write("revoke_access_key", |tx| {
            if tx.execute(REVOKE, params![id, now_ms])? == 0 {
                return Err(no_key(id));
            }
            sqlite_get(tx, id)?.ok_or_else(|| no_key(id))
        })
    }

    fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        check_id("access_key", id)?;
        self.read("access_key", |tx| sqlite_get(tx, id))
    }

    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        self.read("access_keys", |tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM access_keys ORDER BY created_at_ms, id"
            ))?;
            let rows = stmt.query_map([], sqlite_row)?;
            rows.map(|r| record(r?)).collect()
        })
    }
}

// ---- PostgreSQL

fn pg_row(r: &Row) -> Result<AccessKeyRecord, StoreError> {
    record((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
    ))
}

async fn pg_get(
    tx: &tokio_postgres::Transaction<'_>,
    id: &str,
) -> Result<Option<AccessKeyRecord>, StoreError> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM access_keys WHERE id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(pg_row)
    .transpose()
}

impl AccessKeyStore for PostgresStore {
    fn create_access_key(&self, key: &AccessKeyRecord) -> Result<(), StoreError> {
        check_new(key)?;
        let text = hex::encode(&key.ciphertext);
        self.run("create_access_key", async |tx| {
            let sql = INSERT.replace('?', "$");
            match tx
                .execute(&sql, &[&key.id, &key.name, &text, &key.created_at_ms])
                .await?
            {
                0 => Err(taken(&key.id)),
                _ => Ok(()),
            }
        })
    }

    fn revoke_access_key(&self, id: &str, now_ms: i64) -> Result<AccessKeyRecord, StoreError> {
        check_id("revoke_access_key", id)?;
        self.run("revoke_access_key", async |tx| {
            let sql = REVOKE.replace('?', "$");
            if tx.execute(&sql, &[&id, &now_ms]).await? == 0 {
                return Err(no_key(id));
            }
            pg_get(tx, id).await?.ok_or_else(|| no_key(id))
        })
    }

    fn access_key(&self, id: &str) -> Result<Option<AccessKeyRecord>, StoreError> {
        check_id("access_key", id)?;
        self.run("access_key", async |tx| pg_get(tx, id).await)
    }

    fn access_keys(&self) -> Result<Vec<AccessKeyRecord>, StoreError> {
        self.run("access_keys", async |tx| {
            tx.query(
                &format!("SELECT {COLUMNS} FROM access_keys ORDER BY created_at_ms, id"),
                &[],
            )
            .await?
            .iter()
            .map(pg_row)
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_bounded() {
        assert_eq!(access_key_id_problem("AKIA0123456789ABCDEF"), None);
        for bad in [
            "",
            "AKIA",
            "akia0123456789abcdef",
            "AKIA0123456789ABCDEFG",
            "AKIA0123456789ABCDE/",
        ] {
            assert!(access_key_id_problem(bad).is_some(), "{bad}");
        }
        assert_eq!(access_key_name_problem(""), None);
        assert_eq!(access_key_name_problem(&"é".repeat(128)), None);
        assert!(access_key_name_problem(&"x".repeat(129)).is_some());
        assert!(access_key_name_problem("a\nb").is_some());
    }

    #[test]
    fn a_record_s_debug_shows_no_ciphertext() {
        let r = AccessKeyRecord {
            id: "AKIA0123456789ABCDEF".into(),
            name: "ci".into(),
            ciphertext: vec![0xab; 40],
            created_at_ms: 1,
            revoked_at_ms: None,
        };
        let text = format!("{r:?}");
        assert!(!text.contains("abab") && !text.contains("171"), "{text}");
    }
}
