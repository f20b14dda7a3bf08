//! Secrets in the store (`berth secret create|ls|rotate|delete`).
//!
//! The store keeps ciphertext only: the server encrypts a value before it
//! calls [`SecretStore::create_secret`] or [`SecretStore::rotate_secret`]
//! and decrypts after it reads one (`server::secrets`); nothing here sees
//! a value or the key. The ciphertext is stored as hex text (the schema
//! uses TEXT, BIGINT and INTEGER only).
//!
//! Invariants (both backends, each method one transaction):
//! - a name is 1–[`MAX_SECRET_NAME_LEN`] of `[A-Za-z0-9_.\-/]` (the
//!   character set of SSM parameter and Secrets Manager secret names),
//!   unique; checked before anything is written;
//! - a ciphertext is at most [`MAX_CIPHERTEXT_BYTES`];
//! - `version` is 1 at creation and grows by one with every rotation, also
//!   when rotations race (the update increments the stored value);
//!   `created_at_ms` never changes, `updated_at_ms` is the last rotation's;
//! - a delete removes the row; creating the name again starts at version 1.

use tokio_postgres::Row;

use super::StoreError;
use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use rusqlite::{OptionalExtension, params};

pub use berth_taskdef::secrets::{MAX_SECRET_NAME_LEN, secret_name_problem};

/// Largest secret value (Secrets Manager's limit, 64 KiB).
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
/// Largest stored ciphertext: a value, its nonce and its tag, with room.
pub const MAX_CIPHERTEXT_BYTES: usize = MAX_SECRET_VALUE_BYTES + 256;

/// One stored secret: its name, version, dates and ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    pub name: String,
    pub version: i64,
    /// Nonce, ciphertext and tag, as `server::secrets` writes them.
    pub ciphertext: Vec<u8>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("ciphertext_len", &self.ciphertext.len())
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .finish()
    }
}

fn check_name(op: &'static str, name: &str) -> Result<(), StoreError> {
    match secret_name_problem(name) {
        Some(detail) => Err(StoreError::Invalid { op, detail }),
        None => Ok(()),
    }
}

fn check_new(op: &'static str, name: &str, ciphertext: &[u8]) -> Result<(), StoreError> {
    check_name(op, name)?;
    if ciphertext.len() > MAX_CIPHERTEXT_BYTES {
        return Err(StoreError::Invalid {
            op,
            detail: format!(
                "the encrypted value of {name} is {} bytes, at most {MAX_CIPHERTEXT_BYTES} are stored",
                ciphertext.len()
            ),
        });
    }
    Ok(())
}

/// The secrets' part of the store contract. Every method is one
/// transaction.
pub trait SecretStore {
    /// Stores a new secret at version 1. [`StoreError::SecretExists`] when
    /// the name is taken (nothing changes).
    fn create_secret(
        &self,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError>;
    /// Replaces the value and raises the version by one.
    /// [`StoreError::NoSecret`] for an unknown name.
    fn rotate_secret(
        &self,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError>;
    /// Removes the secret. [`StoreError::NoSecret`] for an unknown name.
    fn delete_secret(&self, name: &str) -> Result<(), StoreError>;
    fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError>;
    /// Every secret by name, ciphertext included (callers that list drop
    /// it).
    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError>;
}

const COLUMNS: &str = "name, version, ciphertext, created_at_ms, updated_at_ms";

/// A create or a rotation: one statement with the parameters name,
/// ciphertext (hex) and time; no row changed means the name was taken
/// (create) or unknown (rotate).
#[derive(Clone, Copy)]
enum Put {
    Create,
    Rotate,
}

impl Put {
    fn op(self) -> &'static str {
        match self {
            Put::Create => "create_secret",
            Put::Rotate => "rotate_secret",
        }
    }

    /// With SQLite's `?N` placeholders (PostgreSQL: `$N`).
    fn sql(self) -> String {
        match self {
            Put::Create => format!(
                "INSERT INTO secrets ({COLUMNS}) VALUES (?1, 1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING"
            ),
            Put::Rotate => "UPDATE secrets SET version = version + 1, ciphertext = ?2, \
                 updated_at_ms = ?3 WHERE name = ?1"
                .to_owned(),
        }
    }

    fn unchanged(self, name: &str) -> StoreError {
        match self {
            Put::Create => StoreError::SecretExists(name.to_owned()),
            Put::Rotate => no_secret(name),
        }
    }
}

fn no_secret(name: &str) -> StoreError {
    StoreError::NoSecret(name.to_owned())
}

fn decode(name: &str, hex_text: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(hex_text).map_err(|e| StoreError::Invalid {
        op: "secret",
        detail: format!("the stored ciphertext of {name} is not hex: {e}"),
    })
}

// ---- SQLite

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, String, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn record(
    (name, version, text, created_at_ms, updated_at_ms): (String, i64, String, i64, i64),
) -> Result<SecretRecord, StoreError> {
    let ciphertext = decode(&name, &text)?;
    Ok(SecretRecord {
        name,
        version,
        ciphertext,
        created_at_ms,
        updated_at_ms,
    })
}

fn sqlite_get(conn: &rusqlite::Connection, name: &str) -> Result<Option<SecretRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM secrets WHERE name = ?1"),
        params![name],
        sqlite_row,
    )
    .optional()?
    .map(record)
    .transpose()
}

impl SqliteStore {
    fn put_secret(
        &self,
        put: Put,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError> {
        check_new(put.op(), name, ciphertext)?;
        let text = hex::encode(ciphertext);
        self.write(put.op(), |tx| {
            if tx.execute(&put.sql(), params![name, text, now_ms])? == 0 {
                return Err(put.unchanged(name));
            }
            sqlite_get(tx, name)?.ok_or_else(|| no_secret(name))
        })
    }
}

impl SecretStore for SqliteStore {
    fn create_secret(
        &self,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError> {
        self.put_secret(Put::Create, name, ciphertext, now_ms)
    }

    fn rotate_secret(
        &self,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError> {
        self.put_secret(Put::Rotate, name, ciphertext, now_ms)
    }

    fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        check_name("delete_secret", name)?;
        self.write("delete_secret", |tx| {
            match tx.execute("DELETE FROM secrets WHERE name = ?1", params![name])? {
                0 => Err(no_secret(name)),
                _ => Ok(()),
            }
        })
    }

    fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.read("secret", |tx| sqlite_get(tx, name))
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.read("secrets", |tx| {
            let mut stmt = tx.prepare(&format!("SELECT {COLUMNS} FROM secrets ORDER BY name"))?;
            let rows = stmt.query_map([], sqlite_row)?;
            rows.map(|r| record(r?)).collect()
        })
    }
}

// ---- PostgreSQL

fn pg_row(r: &Row) -> Result<SecretRecord, StoreError> {
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
    name: &str,
) -> Result<Option<SecretRecord>, StoreError> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM secrets WHERE name = $1"),
        &[&name],
    )
    .await?
    .as_ref()
    .map(pg_row)
    .transpose()
}

impl PostgresStore {
    fn put_secret(
        &self,
        put: Put,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError> {
        check_new(put.op(), name, ciphertext)?;
        let text = hex::encode(ciphertext);
        self.run(put.op(), async |tx| {
            let sql = put.sql().replace('?', "$");
            if tx.execute(&sql, &[&name, &text, &now_ms]).await? == 0 {
                return Err(put.unchanged(name));
            }
            pg_get(tx, name).await?.ok_or_else(|| no_secret(name))
        })
    }
}

impl SecretStore for PostgresStore {
    fn create_secret(
        &self,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError> {
        self.put_secret(Put::Create, name, ciphertext, now_ms)
    }

    fn rotate_secret(
        &self,
        name: &str,
        ciphertext: &[u8],
        now_ms: i64,
    ) -> Result<SecretRecord, StoreError> {
        self.put_secret(Put::Rotate, name, ciphertext, now_ms)
    }

    fn delete_secret(&self, name: &str) -> Result<(), StoreError> {
        check_name("delete_secret", name)?;
        self.run("delete_secret", async |tx| {
            match tx
                .execute("DELETE FROM secrets WHERE name = $1", &[&name])
                .await?
            {
                0 => Err(no_secret(name)),
                _ => Ok(()),
            }
        })
    }

    fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.run("secret", async |tx| pg_get(tx, name).await)
    }

    fn secrets(&self) -> Result<Vec<SecretRecord>, StoreError> {
        self.run("secrets", async |tx| {
            tx.query(&format!("SELECT {COLUMNS} FROM secrets ORDER BY name"), &[])
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
    fn names_follow_the_ssm_and_secrets_manager_charset() {
        for ok in [
            "db",
            "a/b/c",
            "/prod/db.password",
            "x_y-z.1",
            &"x".repeat(512),
        ] {
            assert_eq!(secret_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "a b", "a:b", "wé", "a\n", &"x".repeat(513)] {
            assert!(secret_name_problem(bad).is_some(), "{bad:?}");
        }
        let e = check_new("create_secret", "db", &vec![0; MAX_CIPHERTEXT_BYTES + 1])
            .expect_err("too large");
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn a_record_s_debug_shows_no_ciphertext() {
        let r = SecretRecord {
            name: "db".into(),
            version: 1,
            ciphertext: vec![0xab; 40],
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        let text = format!("{r:?}");
        assert!(!text.contains("abab") && !text.contains("171"), "{text}");
    }
}
