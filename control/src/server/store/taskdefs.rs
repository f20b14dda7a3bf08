//! The task-definition registry in the store (ECS
//! `RegisterTaskDefinition`, `DescribeTaskDefinition`,
//! `ListTaskDefinitions`, `DeregisterTaskDefinition`).
//!
//! A family's revisions are numbered 1, 2, … and immutable: only their
//! status changes, once, from `ACTIVE` to `INACTIVE` (deregistered). The
//! store keeps each revision's definition as the caller gives it (the
//! server stores a normalized form, see `server::taskdefs`), so "equal
//! content" is equal text.
//!
//! Invariants (both backends, each method one transaction):
//! - revision = the family's highest + 1, also when two registrations of
//!   one family race (on other connections or servers): SQLite's write
//!   transaction holds the database's write lock from its start;
//!   PostgreSQL takes a transaction-scoped advisory lock on the family
//!   before it reads the highest revision (READ COMMITTED alone would let
//!   both read the same one);
//! - with `reuse_latest_if_equal`, a registration whose text equals the
//!   latest ACTIVE revision's returns that revision and stores nothing;
//! - a family name is 1–255 of `[A-Za-z0-9_-]` (ECS), a definition at most
//!   [`berth_taskdef::MAX_DEFINITION_BYTES`], a family at most
//!   [`MAX_REVISIONS`] revisions (ECS' limit), checked before anything is
//!   written;
//! - deregistration is idempotent and keeps the first
//!   `deregistered_at_ms`; tasks and services that use a revision keep
//!   their copy of it (a task stores its definition).

use tokio_postgres::Row;

use super::postgres::PostgresStore;
use super::sqlite::SqliteStore;
use super::{ACTIVE, INACTIVE, StoreError};
use rusqlite::{OptionalExtension, params};

/// ECS' limit on revisions per family.
pub const MAX_REVISIONS: i64 = 1_000_000;
/// ECS' limit on a family name.
pub const MAX_FAMILY_LEN: usize = 255;

/// The advisory lock class of registrations on PostgreSQL (the two-key
/// space, apart from the migration lock's one-key space); the second key
/// is `hashtext(family)`.
const REGISTER_LOCK_CLASS: i32 = 0x6265_7274; // "bert"

/// One stored revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinitionRecord {
    pub family: String,
    pub revision: i64,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    pub definition_json: String,
    pub registered_at_ms: i64,
    /// 0 while ACTIVE.
    pub deregistered_at_ms: i64,
}

impl TaskDefinitionRecord {
    /// `family:revision`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.family, self.revision)
    }
}

/// Which revisions a listing shows (ECS `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusFilter {
    #[default]
    Active,
    Inactive,
    All,
}

impl StatusFilter {
    fn sql(self) -> &'static str {
        match self {
            StatusFilter::Active => "status = 'ACTIVE'",
            StatusFilter::Inactive => "status = 'INACTIVE'",
            StatusFilter::All => "1 = 1",
        }
    }
}

/// What the registry refuses; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "family {0:?}: a family name is 1 to 255 letters, digits, hyphens (-) and underscores (_)"
    )]
    Family(String),
    #[error("the task definition is {0} bytes; at most {max} are accepted", max = berth_taskdef::MAX_DEFINITION_BYTES)]
    TooLarge(usize),
    #[error(
        "family {0} has {MAX_REVISIONS} revisions, the most a family may have; register the definition under another family"
    )]
    TooManyRevisions(String),
    #[error("no task definition {0}")]
    NotFound(String),
}

/// Checks a family name (ECS: up to 255 letters, numbers, hyphens and
/// underscores).
pub fn check_family(family: &str) -> Result<(), RegistryError> {
    let ok = !family.is_empty()
        && family.len() <= MAX_FAMILY_LEN
        && family
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::Family(family.to_owned()))
    }
}

fn check_new(family: &str, definition_json: &str) -> Result<(), RegistryError> {
    check_family(family)?;
    if definition_json.len() > berth_taskdef::MAX_DEFINITION_BYTES {
        return Err(RegistryError::TooLarge(definition_json.len()));
    }
    Ok(())
}

/// The registry's part of the store contract. Every method is one
/// transaction.
pub trait TaskDefinitionStore {
    /// Stores `definition_json` as the next revision of `family`, ACTIVE;
    /// with `reuse_latest_if_equal`, returns the latest ACTIVE revision
    /// instead when its text is equal. Returns the revision and whether it
    /// was reused.
    fn register_task_definition(
        &self,
        family: &str,
        definition_json: &str,
        reuse_latest_if_equal: bool,
        now_ms: i64,
    ) -> Result<(TaskDefinitionRecord, bool), StoreError>;
    /// The revision, or without one the latest ACTIVE revision.
    fn task_definition(
        &self,
        family: &str,
        revision: Option<i64>,
    ) -> Result<Option<TaskDefinitionRecord>, StoreError>;
    /// Revisions by family, then revision; of one family when given.
    fn task_definitions(
        &self,
        family: Option<&str>,
        status: StatusFilter,
    ) -> Result<Vec<TaskDefinitionRecord>, StoreError>;
    /// Marks the revision INACTIVE (idempotent: the first time is kept).
    /// [`RegistryError::NotFound`] for an unknown revision.
    fn deregister_task_definition(
        &self,
        family: &str,
        revision: i64,
        now_ms: i64,
    ) -> Result<TaskDefinitionRecord, StoreError>;
}

const COLUMNS: &str =
    "family, revision, status, definition_json, registered_at_ms, deregistered_at_ms";

fn not_found(family: &str, revision: i64) -> StoreError {
    RegistryError::NotFound(format!("{family}:{revision}")).into()
}

/// What a registration does, given the latest revision and the latest
/// ACTIVE one: `Ok(Some(latest_active))` to reuse, `Ok(None)` to insert
/// `latest + 1`.
fn decide(
    family: &str,
    definition_json: &str,
    reuse: bool,
    latest: i64,
    latest_active: Option<TaskDefinitionRecord>,
) -> Result<Option<TaskDefinitionRecord>, StoreError> {
    if reuse
        && let Some(active) = latest_active
        && active.definition_json == definition_json
    {
        return Ok(Some(active));
    }
    if latest >= MAX_REVISIONS {
        return Err(RegistryError::TooManyRevisions(family.to_owned()).into());
    }
    Ok(None)
}

// ---- SQLite

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskDefinitionRecord> {
    Ok(TaskDefinitionRecord {
        family: r.get(0)?,
        revision: r.get(1)?,
        status: r.get(2)?,
        definition_json: r.get(3)?,
        registered_at_ms: r.get(4)?,
        deregistered_at_ms: r.get(5)?,
    })
}

fn sqlite_get(
    conn: &rusqlite::Connection,
    family: &str,
    revision: Option<i64>,
) -> Result<Option<TaskDefinitionRecord>, StoreError> {
    Ok(match revision {
        Some(rev) => conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM task_definitions WHERE family = ?1 AND revision = ?2"),
                params![family, rev],
                sqlite_row,
            )
            .optional()?,
        None => conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM task_definitions WHERE family = ?1 AND status = 'ACTIVE' \
                     ORDER BY revision DESC LIMIT 1"
                ),
                params![family],
                sqlite_row,
            )
            .optional()?,
    })
}

impl TaskDefinitionStore for SqliteStore {
    fn register_task_definition(
        &self,
        family: &str,
        definition_json: &str,
        reuse: bool,
        now_ms: i64,
    ) -> Result<(TaskDefinitionRecord, bool), StoreError> {
        check_new(family, definition_json)?;
        // A write transaction: the write lock is held from the first read.
        self.write("register_task_definition", |tx| {
            let latest: i64 = tx.query_row(
                "SELECT COALESCE(MAX(revision), 0) FROM task_definitions WHERE family = ?1",
                params![family],
                |r| r.get(0),
            )?;
            let active = sqlite_get(tx, family, None)?;
            if let Some(same) = decide(family, definition_json, reuse, latest, active)? {
                return Ok((same, true));
            }
            let rec = TaskDefinitionRecord {
                family: family.to_owned(),
                revision: latest + 1,
                status: ACTIVE.to_owned(),
                definition_json: definition_json.to_owned(),
                registered_at_ms: now_ms,
                deregistered_at_ms: 0,
            };
            tx.execute(
                &format!("INSERT INTO task_definitions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, 0)"),
                params![
                    rec.family,
                    rec.revision,
                    rec.status,
                    rec.definition_json,
                    rec.registered_at_ms
                ],
            )?;
            Ok((rec, false))
        })
    }

    fn task_definition(
        &self,
        family: &str,
        revision: Option<i64>,
    ) -> Result<Option<TaskDefinitionRecord>, StoreError> {
        self.read("task_definition", |tx| sqlite_get(tx, family, revision))
    }

    fn task_definitions(
        &self,
        family: Option<&str>,
        status: StatusFilter,
    ) -> Result<Vec<TaskDefinitionRecord>, StoreError> {
        self.read("task_definitions", |tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM task_definitions \
                 WHERE (?1 IS NULL OR family = ?1) AND {} ORDER BY family, revision",
                status.sql()
            ))?;
            let rows = stmt.query_map(params![family], sqlite_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn deregister_task_definition(
        &self,
        family: &str,
        revision: i64,
        now_ms: i64,
    ) -> Result<TaskDefinitionRecord, StoreError> {
        self.write("deregister_task_definition", |tx| {
            tx.execute(
                "UPDATE task_definitions SET status = ?3, deregistered_at_ms = ?4 \
                 WHERE family = ?1 AND revision = ?2 AND status = ?5",
                params![family, revision, INACTIVE, now_ms, ACTIVE],
            )?;
            sqlite_get(tx, family, Some(revision))?.ok_or_else(|| not_found(family, revision))
        })
    }
}

// ---- PostgreSQL

fn pg_row(r: &Row) -> Result<TaskDefinitionRecord, StoreError> {
    Ok(TaskDefinitionRecord {
        family: r.try_get(0)?,
        revision: r.try_get(1)?,
        status: r.try_get(2)?,
        definition_json: r.try_get(3)?,
        registered_at_ms: r.try_get(4)?,
        deregistered_at_ms: r.try_get(5)?,
    })
}

async fn pg_get(
    tx: &tokio_postgres::Transaction<'_>,
    family: &str,
    revision: Option<i64>,
) -> Result<Option<TaskDefinitionRecord>, StoreError> {
    let row = match revision {
        Some(rev) => {
            tx.query_opt(
                &format!("SELECT {COLUMNS} FROM task_definitions WHERE family = $1 AND revision = $2"),
                &[&family, &rev],
            )
            .await?
        }
        None => {
            tx.query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM task_definitions WHERE family = $1 AND status = 'ACTIVE' \
                     ORDER BY revision DESC LIMIT 1"
                ),
                &[&family],
            )
            .await?
        }
    };
    row.as_ref().map(pg_row).transpose()
}

impl TaskDefinitionStore for PostgresStore {
    fn register_task_definition(
        &self,
        family: &str,
        definition_json: &str,
        reuse: bool,
        now_ms: i64,
    ) -> Result<(TaskDefinitionRecord, bool), StoreError> {
        check_new(family, definition_json)?;
        self.run("register_task_definition", async |tx| {
            // Registrations of one family take turns from here to the
            // commit: the second reads the first's revision.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&REGISTER_LOCK_CLASS, &family],
            )
            .await?;
            let latest: i64 = tx
                .query_one(
                    "SELECT CAST(COALESCE(MAX(revision), 0) AS BIGINT) FROM task_definitions WHERE family = $1",
                    &[&family],
                )
                .await?
                .try_get(0)?;
            let active = pg_get(tx, family, None).await?;
            if let Some(same) = decide(family, definition_json, reuse, latest, active)? {
                return Ok((same, true));
            }
            let rec = TaskDefinitionRecord {
                family: family.to_owned(),
                revision: latest + 1,
                status: ACTIVE.to_owned(),
                definition_json: definition_json.to_owned(),
                registered_at_ms: now_ms,
                deregistered_at_ms: 0,
            };
            tx.execute(
                &format!("INSERT INTO task_definitions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, 0)"),
                &[
                    &rec.family,
                    &rec.revision,
                    &rec.status,
                    &rec.definition_json,
                    &rec.registered_at_ms,
                ],
            )
            .await?;
            Ok((rec, false))
        })
    }

    fn task_definition(
        &self,
        family: &str,
        revision: Option<i64>,
    ) -> Result<Option<TaskDefinitionRecord>, StoreError> {
        self.run("task_definition", async |tx| {
            pg_get(tx, family, revision).await
        })
    }

    fn task_definitions(
        &self,
        family: Option<&str>,
        status: StatusFilter,
    ) -> Result<Vec<TaskDefinitionRecord>, StoreError> {
        self.run("task_definitions", async |tx| {
            tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM task_definitions \
                     WHERE ($1::TEXT IS NULL OR family = $1) AND {} ORDER BY family, revision",
                    status.sql()
                ),
                &[&family],
            )
            .await?
            .iter()
            .map(pg_row)
            .collect()
        })
    }

    fn deregister_task_definition(
        &self,
        family: &str,
        revision: i64,
        now_ms: i64,
    ) -> Result<TaskDefinitionRecord, StoreError> {
        self.run("deregister_task_definition", async |tx| {
            tx.execute(
                "UPDATE task_definitions SET status = $3, deregistered_at_ms = $4 \
                 WHERE family = $1 AND revision = $2 AND status = $5",
                &[&family, &revision, &INACTIVE, &now_ms, &ACTIVE],
            )
            .await?;
            pg_get(tx, family, Some(revision))
                .await?
                .ok_or_else(|| not_found(family, revision))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_follow_ecs() {
        for ok in ["web", "a", "A-b_9", &"x".repeat(255)] {
            assert_eq!(check_family(ok), Ok(()), "{ok}");
        }
        for bad in ["", "we b", "web:1", "wéb", "a/b", &"x".repeat(256)] {
            assert!(check_family(bad).is_err(), "{bad:?}");
        }
        let e = check_new("web", &"x".repeat(berth_taskdef::MAX_DEFINITION_BYTES + 1))
            .expect_err("too large");
        assert!(e.to_string().contains("at most 65536"), "{e}");
    }

    #[test]
    fn the_revision_limit_refuses_a_new_revision_but_still_reuses() {
        let latest = TaskDefinitionRecord {
            family: "web".into(),
            revision: MAX_REVISIONS,
            status: ACTIVE.into(),
            definition_json: "{}".into(),
            registered_at_ms: 1,
            deregistered_at_ms: 0,
        };
        let reused = decide("web", "{}", true, MAX_REVISIONS, Some(latest.clone()))
            .expect("reuse is no new revision");
        assert_eq!(reused, Some(latest.clone()));
        let e = decide("web", "{\"x\":1}", true, MAX_REVISIONS, Some(latest)).expect_err("full");
        assert!(
            matches!(e, StoreError::Registry(RegistryError::TooManyRevisions(_))),
            "{e}"
        );
        assert_eq!(decide("web", "{}", false, 3, None).expect("new"), None);
    }
}
