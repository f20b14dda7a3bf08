//! [`Store`] on one SQLite file: WAL, foreign keys and `synchronous=FULL`,
//! so that an acknowledged event survives a power cut.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use berth_proto::v1::{Assignment, TaskEvent};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};
use tracing::warn;

use super::rules::{self, merge_state};
use super::schema::{MIGRATIONS, SCHEMA, SCHEMA_VERSION};
use super::sql::*;
use super::*;

/// [`Store`] on SQLite.
pub struct SqliteStore {
    /// One connection: SQLite has one writer at a time anyway. The lock
    /// only serialises this process's use of the connection; atomicity
    /// comes from the transactions (see [`SqliteStore::run`]).
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.conn().path().map(str::to_owned))
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Self::init(conn).map_err(|e| match e {
            StoreError::Sql(source) => open_err(source),
            other => other,
        })
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // `journal_mode` answers with the mode in effect; in-memory databases
        // stay `memory`.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        let found: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .optional()?
            .flatten();
        let version = match found {
            None => {
                tx.execute("INSERT INTO schema_version (version) VALUES (1)", [])?;
                1
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(v) => v.max(1),
        };
        for (from, migration) in (1_i64..).zip(MIGRATIONS) {
            if version <= from {
                tx.execute_batch(migration)?;
            }
        }
        if version < SCHEMA_VERSION {
            tx.execute(
                "UPDATE schema_version SET version = ?1",
                params![SCHEMA_VERSION],
            )?;
        }
        tx.commit()?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }
}

fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<RawInstance> {
    Ok(RawInstance {
        rec: InstanceRecord {
            instance_id: r.get(0)?,
            hostname: r.get(1)?,
            status: r.get(2)?,
            registered_at_ms: r.get(3)?,
            agent_version: r.get(4)?,
            boot_id: r.get(5)?,
            cpu: r.get(6)?,
            memory_mib: r.get(7)?,
            attributes: BTreeMap::new(),
            last_heartbeat_at_ms: r.get(9)?,
            last_event_seq: from_db(r.get(10)?),
            generation: from_db(r.get(11)?),
            acked_generation: from_db(r.get(12)?),
            os: r.get(13)?,
            arch: r.get(14)?,
            reported_cpu: r.get(15)?,
            reported_memory_mib: r.get(16)?,
            reported_hostname: r.get(17)?,
            cert_serial: r.get(18)?,
            pending_cert_serial: r.get(19)?,
            cluster: r.get(20)?,
            custom_attributes: BTreeMap::new(),
        },
        attributes_json: r.get(8)?,
        custom_attributes_json: r.get(21)?,
    })
}

pub(super) fn task_from_row(r: &Row<'_>) -> rusqlite::Result<RawTask> {
    Ok(RawTask {
        rec: TaskRecord {
            task_id: r.get(0)?,
            instance_id: r.get(1)?,
            family: r.get(2)?,
            definition_json: r.get(3)?,
            desired_status: r.get(4)?,
            last_status: r.get(5)?,
            health_status: r.get(6)?,
            stop_code: r.get(7)?,
            stopped_reason: r.get(8)?,
            created_at_ms: r.get(9)?,
            started_at_ms: r.get(10)?,
            stopped_at_ms: r.get(11)?,
            containers: Vec::new(),
            reserved_cpu: r.get(13)?,
            reserved_memory_mib: r.get(14)?,
            last_event_seq: from_db(r.get(15)?),
            last_seen_at_ms: r.get(16)?,
            task_definition: r.get(17)?,
            group: r.get(18)?,
            started_by: r.get(19)?,
            cluster: r.get(20)?,
            ever_healthy: r.get::<_, i64>(21)? != 0,
            failure_counted: r.get::<_, i64>(22)? != 0,
            lost: r.get::<_, i64>(23)? != 0,
        },
        containers_json: r.get(12)?,
    })
}

fn admin_cert_from_row(r: &Row<'_>) -> rusqlite::Result<AdminCertRecord> {
    Ok(AdminCertRecord {
        serial: r.get(0)?,
        name: r.get(1)?,
        issued_at_ms: r.get(2)?,
        not_after_ms: r.get(3)?,
        revoked_at_ms: r.get(4)?,
    })
}

fn get_admin_cert(conn: &Connection, serial: &str) -> Result<Option<AdminCertRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {ADMIN_CERT_COLUMNS} FROM admin_certificates WHERE serial = ?1"),
            params![serial],
            admin_cert_from_row,
        )
        .optional()?)
}

fn cluster_from_row(r: &Row<'_>) -> rusqlite::Result<ClusterRecord> {
    Ok(ClusterRecord {
        name: r.get(0)?,
        status: r.get(1)?,
        created_at_ms: r.get(2)?,
        registered_instances: r.get(3)?,
        running_tasks: r.get(4)?,
        pending_tasks: r.get(5)?,
    })
}

fn get_cluster(conn: &Connection, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("{CLUSTER_SELECT} WHERE c.name = ?1"),
            params![name],
            cluster_from_row,
        )
        .optional()?)
}

fn get_instance(conn: &Connection, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?1"),
        params![id],
        instance_from_row,
    )
    .optional()?
    .map(RawInstance::decode)
    .transpose()
}

/// The instance, if it exists and is registered (ACTIVE or DRAINING):
/// what every write of an agent's session checks in its own transaction.
fn active_instance(conn: &Connection, id: &str) -> Result<InstanceRecord, StoreError> {
    match get_instance(conn, id)? {
        None => Err(StoreError::NoInstance(id.to_owned())),
        Some(i) if i.status == INACTIVE => Err(StoreError::InstanceInactive(id.to_owned())),
        Some(i) => Ok(i),
    }
}

fn get_task(conn: &Connection, id: &str) -> Result<Option<TaskRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1"),
        params![id],
        task_from_row,
    )
    .optional()?
    .map(RawTask::decode)
    .transpose()
}

pub(super) fn bump_generation(tx: &Transaction<'_>, instance_id: &str) -> Result<u64, StoreError> {
    let generation: i64 = tx.query_row(
        "UPDATE instances SET generation = generation + 1 WHERE instance_id = ?1 RETURNING generation",
        params![instance_id],
        |r| r.get(0),
    )?;
    Ok(from_db(generation))
}

/// Writes an agent's report merged into the task. The desired status only
/// ever moves to STOPPED here (never back), so a stop committed since the
/// task was read is not undone.
fn write_task(tx: &Transaction<'_>, t: &TaskRecord) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tasks SET family = ?2, \
         desired_status = CASE WHEN ?3 = 'STOPPED' THEN 'STOPPED' ELSE desired_status END, \
         last_status = ?4, health_status = ?5, \
         stop_code = ?6, stopped_reason = ?7, started_at_ms = ?8, stopped_at_ms = ?9, \
         containers_json = ?10, last_event_seq = ?11, last_seen_at_ms = ?12 WHERE task_id = ?1",
        params![
            t.task_id,
            t.family,
            t.desired_status,
            t.last_status,
            t.health_status,
            t.stop_code,
            t.stopped_reason,
            t.started_at_ms,
            t.stopped_at_ms,
            containers_json(&t.containers),
            to_db(t.last_event_seq),
            t.last_seen_at_ms,
        ],
    )?;
    Ok(())
}

/// Inserts the task in `cluster` (its instance's), marks as given.
fn insert_task_row(tx: &Transaction<'_>, t: &TaskRecord, cluster: &str) -> Result<(), StoreError> {
    let inserted = tx.execute(
        &format!(
            "INSERT INTO tasks ({TASK_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
        ),
        params![
            t.task_id,
            t.instance_id,
            t.family,
            t.definition_json,
            t.desired_status,
            t.last_status,
            t.health_status,
            t.stop_code,
            t.stopped_reason,
            t.created_at_ms,
            t.started_at_ms,
            t.stopped_at_ms,
            containers_json(&t.containers),
            t.reserved_cpu,
            t.reserved_memory_mib,
            to_db(t.last_event_seq),
            t.last_seen_at_ms,
            t.task_definition,
            t.group,
            t.started_by,
            cluster,
            i64::from(t.ever_healthy),
            i64::from(t.failure_counted),
            i64::from(t.lost),
        ],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(StoreError::TaskExists(t.task_id.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// How many times a transaction that found the database locked (after
/// the busy timeout) is tried before [`StoreError::Busy`].
const BUSY_ATTEMPTS: u32 = 3;

/// Whether `e` is SQLite saying another connection holds the lock.
fn is_busy(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Names the operation in a database error, and turns a constraint
/// violation nothing more specific caught into [`StoreError::Conflict`].
fn classify(op: &'static str, e: StoreError) -> StoreError {
    match e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, msg))
            if f.code == ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict {
                op,
                detail: msg.unwrap_or_else(|| f.to_string()),
            }
        }
        StoreError::Sql(source) => StoreError::Database {
            op,
            source: Box::new(source),
        },
        other => other,
    }
}

/// One try of a transaction: `f` runs inside it; it commits when `f`
/// succeeds and rolls back (on drop) when it fails.
fn attempt<T>(
    conn: &mut Connection,
    behavior: TransactionBehavior,
    f: &mut impl FnMut(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.transaction_with_behavior(behavior)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

impl SqliteStore {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic inside a transaction rolled it back when the transaction
        // dropped, so the connection is consistent even if poisoned.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` as one transaction. A write transaction starts with
    /// `BEGIN IMMEDIATE`: it takes SQLite's write lock before its first
    /// read, so a read-check-write cannot interleave with another writer
    /// (another connection, or another process on the same file), and
    /// `SQLITE_BUSY` can only come before anything was done: such a
    /// transaction is tried again, up to [`BUSY_ATTEMPTS`] times.
    fn run<T>(
        &self,
        op: &'static str,
        behavior: TransactionBehavior,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let mut tries = 1;
        loop {
            match attempt(&mut conn, behavior, &mut f) {
                Err(e) if is_busy(&e) && tries < BUSY_ATTEMPTS => {
                    tries += 1;
                    warn!(
                        operation = op,
                        attempt = tries,
                        "the database is locked by another writer; trying again"
                    );
                }
                Err(e) if is_busy(&e) => return Err(StoreError::Busy(op)),
                other => return other.map_err(|e| classify(op, e)),
            }
        }
    }

    pub(super) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(op, TransactionBehavior::Immediate, f)
    }

    pub(super) fn read<T>(
        &self,
        op: &'static str,
        f: impl FnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(op, TransactionBehavior::Deferred, f)
    }
}

fn all_instances(conn: &Connection) -> Result<Vec<InstanceRecord>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY registered_at_ms, instance_id"
    ))?;
    let rows = stmt.query_map([], instance_from_row)?;
    rows.map(|r| r.map_err(StoreError::from).and_then(RawInstance::decode))
        .collect()
}

fn usage_by_instance(conn: &Connection) -> Result<HashMap<String, Usage>, StoreError> {
    // CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
    let mut stmt = conn.prepare(
        "SELECT instance_id, \
           CAST(SUM(CASE WHEN last_status <> 'STOPPED' THEN reserved_cpu ELSE 0 END) AS BIGINT), \
           CAST(SUM(CASE WHEN last_status <> 'STOPPED' THEN reserved_memory_mib ELSE 0 END) AS BIGINT), \
           CAST(SUM(CASE WHEN last_status = 'RUNNING' THEN 1 ELSE 0 END) AS BIGINT), \
           CAST(SUM(CASE WHEN last_status = 'PENDING' THEN 1 ELSE 0 END) AS BIGINT) \
         FROM tasks GROUP BY instance_id",
    )?;
    let rows = stmt.query_map([], |r| {
        let running: i64 = r.get(3)?;
        let pending: i64 = r.get(4)?;
        Ok((
            r.get::<_, String>(0)?,
            Usage {
                cpu: r.get(1)?,
                memory_mib: r.get(2)?,
                running: u32::try_from(running).unwrap_or(u32::MAX),
                pending: u32::try_from(pending).unwrap_or(u32::MAX),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a task in its instance's cluster and bumps the instance's
/// generation; with `expected`, only if the instance is ACTIVE and still at
/// that generation. `op` names the operation in a conflict.
pub(super) fn insert_task_checked(
    tx: &Transaction<'_>,
    op: &'static str,
    t: &TaskRecord,
    expected: Option<u64>,
) -> Result<u64, StoreError> {
    let Some(instance) = get_instance(tx, &t.instance_id)? else {
        return Err(StoreError::NoInstance(t.instance_id.clone()));
    };
    let cluster = rules::task_cluster(op, t, &instance.cluster)?;
    let generation = match expected {
        None => bump_generation(tx, &t.instance_id)?,
        Some(expected) => {
            let moved: Option<i64> = tx
                .query_row(
                    "UPDATE instances SET generation = generation + 1 \
                     WHERE instance_id = ?1 AND generation = ?2 AND status = 'ACTIVE' \
                     RETURNING generation",
                    params![t.instance_id, to_db(expected)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(generation) = moved else {
                return Err(StoreError::Conflict {
                    op,
                    detail: format!(
                        "instance {} is no longer ACTIVE at generation {expected}",
                        t.instance_id
                    ),
                });
            };
            from_db(generation)
        }
    };
    insert_task_row(tx, t, cluster)?;
    Ok(generation)
}

impl Store for SqliteStore {
    fn create_activation(&self, a: &ActivationRecord) -> Result<(), StoreError> {
        let cluster = rules::activation_cluster(&a.cluster);
        self.write("create_activation", |tx| {
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM clusters WHERE name = ?1",
                    params![cluster],
                    |r| r.get(0),
                )
                .optional()?;
            rules::cluster_open_for_enrollment(cluster, status.as_deref())?;
            tx.execute(
                "INSERT INTO activations (id, code_hash, created_at_ms, expires_at_ms, used_at_ms, instance_id, hostname, source_cidrs, cluster) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    a.id,
                    a.code_hash,
                    a.created_at_ms,
                    a.expires_at_ms,
                    a.used_at_ms,
                    a.instance_id,
                    a.hostname,
                    (!a.source_cidrs.is_empty()).then(|| a.source_cidrs.join(",")),
                    cluster
                ],
            )?;
            Ok(())
        })
    }

    fn activation(&self, id: &str) -> Result<Option<ActivationRecord>, StoreError> {
        self.read("activation", |tx| {
            Ok(tx
                .query_row(
                    "SELECT id, code_hash, created_at_ms, expires_at_ms, used_at_ms, instance_id, hostname, source_cidrs, cluster \
                     FROM activations WHERE id = ?1",
                    params![id],
                    |r| {
                        Ok(ActivationRecord {
                            id: r.get(0)?,
                            code_hash: r.get(1)?,
                            created_at_ms: r.get(2)?,
                            expires_at_ms: r.get(3)?,
                            used_at_ms: r.get(4)?,
                            instance_id: r.get(5)?,
                            hostname: r.get(6)?,
                            source_cidrs: r
                                .get::<_, Option<String>>(7)?
                                .map(|s| s.split(',').map(str::to_owned).collect())
                                .unwrap_or_default(),
                            cluster: r.get(8)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn enroll(&self, activation_id: &str, now_ms: i64, i: &NewInstance) -> Result<(), StoreError> {
        self.write("enroll", |tx| {
            // The conditional update first: of two enrollments of one
            // activation, the second finds it used and stores nothing.
            let updated = tx.execute(
                "UPDATE activations SET used_at_ms = ?2 \
                 WHERE id = ?1 AND used_at_ms IS NULL",
                params![activation_id, now_ms],
            )?;
            if updated != 1 {
                return Err(StoreError::ActivationUsed(activation_id.to_owned()));
            }
            // The host joins the activation's cluster, if it is still there.
            let (cluster, status): (String, Option<String>) = tx.query_row(
                "SELECT a.cluster, c.status FROM activations a \
                 LEFT JOIN clusters c ON c.name = a.cluster WHERE a.id = ?1",
                params![activation_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if status.as_deref() != Some(ACTIVE) {
                return Err(StoreError::ClusterInactive(cluster));
            }
            tx.execute(
                &format!(
                    "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, '', ?8, ?9, '{{}}', 0, 0, 1, 0, ?6, ?7, 0, 0, '', ?10, NULL, ?11, '{{}}')"
                ),
                params![
                    i.instance_id,
                    i.hostname,
                    ACTIVE,
                    i.registered_at_ms,
                    i.agent_version,
                    i.os,
                    i.arch,
                    i.cpu,
                    i.memory_mib,
                    i.cert_serial,
                    cluster,
                ],
            )?;
            tx.execute(
                "UPDATE activations SET instance_id = ?2 WHERE id = ?1",
                params![activation_id, i.instance_id],
            )?;
            Ok(())
        })
    }

    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.read("instance", |tx| get_instance(tx, id))
    }

    fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.read("instances", |tx| all_instances(tx))
    }

    fn usage(&self) -> Result<HashMap<String, Usage>, StoreError> {
        self.read("usage", |tx| usage_by_instance(tx))
    }

    fn placement_snapshot(&self) -> Result<PlacementSnapshot, StoreError> {
        self.read("placement_snapshot", |tx| {
            Ok(PlacementSnapshot {
                instances: all_instances(tx)?,
                usage: usage_by_instance(tx)?,
            })
        })
    }

    fn record_hello(&self, id: &str, h: &HelloRecord) -> Result<HelloOutcome, StoreError> {
        let attributes = serde_json::to_string(&h.attributes).unwrap_or_else(|_| "{}".into());
        // A read-check-write of the instance row: safe because the write
        // transaction holds the write lock from its start.
        self.write("record_hello", |tx| {
            let before = active_instance(tx, id)?;
            let rules::HelloChange {
                mut outcome,
                hostname,
                cpu,
                memory_mib,
                last_event_seq,
                generation,
            } = rules::reconcile_hello(&before, h);
            tx.execute(
                "UPDATE instances SET hostname = ?2, agent_version = ?3, boot_id = ?4, \
                 reported_cpu = ?5, reported_memory_mib = ?6, attributes_json = ?7, \
                 last_heartbeat_at_ms = ?8, last_event_seq = ?9, generation = ?10, \
                 reported_hostname = ?11, cpu = ?12, memory_mib = ?13 WHERE instance_id = ?1",
                params![
                    id,
                    hostname,
                    h.agent_version,
                    h.boot_id,
                    h.cpu,
                    h.memory_mib,
                    attributes,
                    h.at_ms,
                    to_db(last_event_seq),
                    to_db(generation),
                    h.hostname,
                    cpu,
                    memory_mib,
                ],
            )?;
            outcome.instance =
                get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            Ok(outcome)
        })
    }

    fn record_heartbeat(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.write("record_heartbeat", |tx| {
            let updated = tx.execute(
                "UPDATE instances SET last_heartbeat_at_ms = ?2 \
                 WHERE instance_id = ?1 AND status <> 'INACTIVE'",
                params![id, at_ms],
            )?;
            if updated == 0 {
                // Says which: missing or deregistered.
                active_instance(tx, id)?;
            }
            Ok(())
        })
    }

    fn accept_capacity(&self, id: &str) -> Result<(InstanceRecord, InstanceRecord), StoreError> {
        self.write("accept_capacity", |tx| {
            let before =
                get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            tx.execute(
                "UPDATE instances SET cpu = reported_cpu, memory_mib = reported_memory_mib \
                 WHERE instance_id = ?1",
                params![id],
            )?;
            let after =
                get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            Ok((before, after))
        })
    }

    fn use_certificate(&self, id: &str, serial: &str) -> Result<CertUse, StoreError> {
        self.write("use_certificate", |tx| {
            let inst =
                get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            let used = rules::certificate_use(&inst, serial);
            if matches!(used, CertUse::Promoted { .. }) {
                tx.execute(
                    "UPDATE instances SET cert_serial = pending_cert_serial, \
                     pending_cert_serial = NULL WHERE instance_id = ?1",
                    params![id],
                )?;
            }
            Ok(used)
        })
    }

    fn record_renewal(
        &self,
        id: &str,
        presented: &str,
        issued: &str,
    ) -> Result<CertUse, StoreError> {
        self.write("record_renewal", |tx| {
            let inst = active_instance(tx, id)?;
            let allowed = rules::renewal_allowed(&inst, presented);
            if !allowed {
                return Ok(CertUse::Retired {
                    current: inst.cert_serial.unwrap_or_default(),
                });
            }
            tx.execute(
                "UPDATE instances SET pending_cert_serial = ?2 WHERE instance_id = ?1",
                params![id, issued],
            )?;
            Ok(CertUse::Accepted)
        })
    }

    fn record_assignment_ack(&self, id: &str, generation: u64) -> Result<(), StoreError> {
        self.write("record_assignment_ack", |tx| {
            // Never beyond what was sent, never backwards.
            tx.execute(
                "UPDATE instances SET acked_generation = ?2 \
                 WHERE instance_id = ?1 AND acked_generation < ?2 AND generation >= ?2",
                params![id, to_db(generation)],
            )?;
            Ok(())
        })
    }

    fn deregister_instance(
        &self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<InstanceRecord, StoreError> {
        self.write("deregister_instance", |tx| {
            // Conditional: of two deregistrations, one stops the tasks.
            let changed = tx.execute(
                "UPDATE instances SET status = ?2 WHERE instance_id = ?1 AND status <> ?2",
                params![id, INACTIVE],
            )?;
            if changed == 1 {
                let stopped = tx.execute(
                    "UPDATE tasks SET desired_status = 'STOPPED', stop_code = ?2, stopped_reason = ?3 \
                     WHERE instance_id = ?1 AND desired_status <> 'STOPPED'",
                    params![id, stop_code, reason],
                )?;
                if stopped > 0 {
                    bump_generation(tx, id)?;
                }
            }
            get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))
        })
    }

    fn apply_event(
        &self,
        instance_id: &str,
        event: &TaskEvent,
        now_ms: i64,
    ) -> Result<EventOutcome, StoreError> {
        self.write("apply_event", |tx| {
            // Claims the sequence number first, conditionally: of two
            // applications of one event, the second changes nothing.
            let claimed = tx.execute(
                "UPDATE instances SET last_event_seq = ?2 \
                 WHERE instance_id = ?1 AND status <> 'INACTIVE' AND last_event_seq < ?2",
                params![instance_id, to_db(event.sequence)],
            )?;
            if claimed == 0 {
                // A replay, or (the check says which) no such ACTIVE instance.
                active_instance(tx, instance_id)?;
                return Ok(EventOutcome::default());
            }
            let mut outcome = EventOutcome {
                applied: true,
                ..EventOutcome::default()
            };
            let st = event.task.clone().unwrap_or_default();
            if !st.task_id.is_empty() {
                match get_task(tx, &st.task_id)? {
                    Some(t) if t.instance_id != instance_id => outcome.foreign_task = true,
                    Some(mut t) => {
                        outcome.assignment_changed = merge_state(&mut t, &st);
                        outcome.cluster = t.cluster.clone();
                        outcome.group = t.group.clone();
                        t.last_event_seq = event.sequence;
                        t.last_seen_at_ms = now_ms;
                        write_task(tx, &t)?;
                    }
                    // A task this server never assigned to anyone (another
                    // control plane's, a restored database's, or invented):
                    // nothing is stored, so that an agent cannot create rows.
                    None => outcome.unknown_task = true,
                }
            }
            if outcome.assignment_changed {
                bump_generation(tx, instance_id)?;
            }
            Ok(outcome)
        })
    }

    fn assignment(&self, instance_id: &str) -> Result<Assignment, StoreError> {
        self.read("assignment", |tx| {
            let generation: i64 = tx
                .query_row(
                    "SELECT generation FROM instances WHERE instance_id = ?1",
                    params![instance_id],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| StoreError::NoInstance(instance_id.to_owned()))?;
            let mut stmt = tx.prepare(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = ?1 \
                 AND {} ORDER BY created_at_ms, task_id",
                rules::IN_DESIRED_SET_SQL
            ))?;
            let rows = stmt.query_map(params![instance_id], task_from_row)?;
            let mut tasks = Vec::new();
            for row in rows {
                tasks.push(row?.decode()?.desired_task());
            }
            Ok(Assignment {
                generation: from_db(generation),
                tasks,
            })
        })
    }

    fn insert_task(&self, t: &TaskRecord) -> Result<u64, StoreError> {
        self.write("insert_task", |tx| {
            insert_task_checked(tx, "insert_task", t, None)
        })
    }

    fn insert_task_at(&self, t: &TaskRecord, generation: u64) -> Result<u64, StoreError> {
        self.write("insert_task_at", |tx| {
            insert_task_checked(tx, "insert_task_at", t, Some(generation))
        })
    }

    fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.read("task", |tx| get_task(tx, id))
    }

    fn tasks(&self, instance_id: Option<&str>) -> Result<Vec<TaskRecord>, StoreError> {
        // A listing does not carry definitions (up to 64 KiB each).
        let columns = TASK_COLUMNS.replacen("definition_json", "'' AS definition_json", 1);
        self.read("tasks", |tx| {
            // Two queries rather than `?1 IS NULL OR …`, whose parameter
            // type PostgreSQL cannot infer.
            let mut stmt;
            let rows = match instance_id {
                Some(id) => {
                    stmt = tx.prepare(&format!(
                        "SELECT {columns} FROM tasks WHERE instance_id = ?1 \
                         ORDER BY created_at_ms DESC, task_id DESC"
                    ))?;
                    stmt.query_map(params![id], task_from_row)?
                }
                None => {
                    stmt = tx.prepare(&format!(
                        "SELECT {columns} FROM tasks ORDER BY created_at_ms DESC, task_id DESC"
                    ))?;
                    stmt.query_map([], task_from_row)?
                }
            };
            rows.map(|r| r.map_err(StoreError::from).and_then(RawTask::decode))
                .collect()
        })
    }

    fn stop_task(
        &self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<(TaskRecord, bool), StoreError> {
        self.write("stop_task", |tx| {
            // Conditional: a task already stopping or stopped is left as it
            // is, whatever was read before.
            let changed = tx.execute(
                "UPDATE tasks SET desired_status = 'STOPPED', stop_code = ?2, stopped_reason = ?3 \
                 WHERE task_id = ?1 AND desired_status <> 'STOPPED' AND last_status <> 'STOPPED'",
                params![id, stop_code, reason],
            )? == 1;
            let t = get_task(tx, id)?.ok_or_else(|| StoreError::NoTask(id.to_owned()))?;
            if changed {
                bump_generation(tx, &t.instance_id)?;
            }
            Ok((t, changed))
        })
    }

    fn record_admin_cert(&self, c: &AdminCertRecord) -> Result<(), StoreError> {
        self.write("record_admin_cert", |tx| {
            let inserted = tx.execute(
                &format!(
                    "INSERT INTO admin_certificates ({ADMIN_CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                ),
                params![
                    c.serial,
                    c.name,
                    c.issued_at_ms,
                    c.not_after_ms,
                    c.revoked_at_ms
                ],
            );
            match inserted {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    Err(StoreError::AdminCertificateExists(c.serial.clone()))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn admin_cert(&self, serial: &str) -> Result<Option<AdminCertRecord>, StoreError> {
        self.read("admin_cert", |tx| get_admin_cert(tx, serial))
    }

    fn admin_certs(&self) -> Result<Vec<AdminCertRecord>, StoreError> {
        self.read("admin_certs", |tx| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {ADMIN_CERT_COLUMNS} FROM admin_certificates ORDER BY issued_at_ms, serial"
            ))?;
            let rows = stmt.query_map([], admin_cert_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn revoke_admin_cert(
        &self,
        serial: &str,
        now_ms: i64,
    ) -> Result<(AdminCertRecord, bool), StoreError> {
        self.write("revoke_admin_cert", |tx| {
            let changed = tx.execute(
                "UPDATE admin_certificates SET revoked_at_ms = ?2 \
                 WHERE serial = ?1 AND revoked_at_ms IS NULL",
                params![serial, now_ms],
            )? == 1;
            let cert = get_admin_cert(tx, serial)?
                .ok_or_else(|| StoreError::NoAdminCertificate(serial.to_owned()))?;
            Ok((cert, changed))
        })
    }

    fn create_cluster(&self, name: &str, now_ms: i64) -> Result<ClusterRecord, StoreError> {
        rules::check_cluster_name(name)
            .map_err(|why| StoreError::InvalidClusterName(name.to_owned(), why))?;
        self.write("create_cluster", |tx| {
            tx.execute(
                "INSERT INTO clusters (name, status, created_at_ms) VALUES (?1, 'ACTIVE', ?2) \
                 ON CONFLICT (name) DO UPDATE SET status = 'ACTIVE'",
                params![name, now_ms],
            )?;
            get_cluster(tx, name)?.ok_or_else(|| StoreError::NoCluster(name.to_owned()))
        })
    }

    fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.read("clusters", |tx| {
            let mut stmt = tx.prepare(&format!("{CLUSTER_SELECT} ORDER BY c.name"))?;
            let rows = stmt.query_map([], cluster_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.read("cluster", |tx| get_cluster(tx, name))
    }

    fn delete_cluster(&self, name: &str) -> Result<ClusterRecord, StoreError> {
        if name == DEFAULT_CLUSTER {
            return Err(StoreError::DefaultCluster);
        }
        self.write("delete_cluster", |tx| {
            if get_cluster(tx, name)?.is_none() {
                return Err(StoreError::NoCluster(name.to_owned()));
            }
            let (instances, tasks, services): (i64, i64, i64) =
                tx.query_row(CLUSTER_LEFT_SQLITE, params![name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            if instances > 0 || tasks > 0 || services > 0 {
                return Err(StoreError::ClusterNotEmpty {
                    name: name.to_owned(),
                    instances,
                    tasks,
                    services,
                });
            }
            tx.execute(
                "UPDATE clusters SET status = 'INACTIVE' WHERE name = ?1",
                params![name],
            )?;
            get_cluster(tx, name)?.ok_or_else(|| StoreError::NoCluster(name.to_owned()))
        })
    }

    fn update_instance_state(&self, id: &str, status: &str) -> Result<InstanceRecord, StoreError> {
        if status != ACTIVE && status != DRAINING {
            return Err(StoreError::InvalidInstanceStatus(status.to_owned()));
        }
        self.write("update_instance_state", |tx| {
            let changed = tx.execute(
                "UPDATE instances SET status = ?2 WHERE instance_id = ?1 AND status <> 'INACTIVE'",
                params![id, status],
            )?;
            if changed == 0 {
                // Says which: missing or deregistered.
                active_instance(tx, id)?;
            }
            get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))
        })
    }

    fn put_attributes(
        &self,
        id: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<InstanceRecord, StoreError> {
        // The write transaction holds the write lock from its start: the
        // read, the rules and the write are one step.
        self.write("put_attributes", |tx| {
            let before = active_instance(tx, id)?;
            let after = rules::put_attributes(&before, attributes)?;
            set_custom_attributes(tx, id, &after)
        })
    }

    fn delete_attributes(&self, id: &str, names: &[String]) -> Result<InstanceRecord, StoreError> {
        self.write("delete_attributes", |tx| {
            let before = active_instance(tx, id)?;
            let after = rules::delete_attributes(&before, names)?;
            set_custom_attributes(tx, id, &after)
        })
    }
}

/// Stores an instance's custom attributes; returns the instance.
fn set_custom_attributes(
    tx: &Transaction<'_>,
    id: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<InstanceRecord, StoreError> {
    tx.execute(
        "UPDATE instances SET custom_attributes_json = ?2 WHERE instance_id = ?1",
        params![id, attributes_json(attributes)],
    )?;
    get_instance(tx, id)?.ok_or_else(|| StoreError::NoInstance(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("berth.db")).expect("open");
        (dir, s)
    }

    fn activation(id: &str, expires_at_ms: i64) -> ActivationRecord {
        ActivationRecord {
            id: id.into(),
            code_hash: "00".repeat(32),
            created_at_ms: 1,
            expires_at_ms,
            used_at_ms: None,
            instance_id: None,
            hostname: None,
            source_cidrs: Vec::new(),
            cluster: DEFAULT_CLUSTER.into(),
        }
    }

    fn enrolled(s: &SqliteStore, instance_id: &str) {
        enrolled_as(
            s,
            NewInstance {
                instance_id: instance_id.into(),
                hostname: "h".into(),
                registered_at_ms: 10,
                ..NewInstance::default()
            },
        );
    }

    fn enrolled_as(s: &SqliteStore, new: NewInstance) {
        let act = format!("act-{}", new.instance_id);
        s.create_activation(&activation(&act, i64::MAX))
            .expect("activation");
        s.enroll(&act, 10, &new).expect("enroll");
    }

    fn task(id: &str, instance_id: &str, created_at_ms: i64) -> TaskRecord {
        TaskRecord {
            task_id: id.into(),
            instance_id: instance_id.into(),
            family: "web".into(),
            definition_json: "{}".into(),
            desired_status: RUNNING.into(),
            last_status: PENDING.into(),
            health_status: "UNKNOWN".into(),
            created_at_ms,
            reserved_cpu: 256,
            reserved_memory_mib: 512,
            ..TaskRecord::default()
        }
    }

    fn event(seq: u64, task_id: &str, last_status: &str) -> TaskEvent {
        TaskEvent {
            sequence: seq,
            task: Some(TaskState {
                task_id: task_id.into(),
                family: "web".into(),
                last_status: last_status.into(),
                desired_status: RUNNING.into(),
                ..TaskState::default()
            }),
            at_ms: 5,
        }
    }

    #[test]
    fn activation_is_single_use() {
        let (_d, s) = store();
        s.create_activation(&activation("a1", i64::MAX))
            .expect("create");
        let new = |id: &str| NewInstance {
            instance_id: id.into(),
            hostname: "h".into(),
            registered_at_ms: 1,
            ..NewInstance::default()
        };
        s.enroll("a1", 100, &new("i-1")).expect("first use");
        let a = s.activation("a1").expect("get").expect("exists");
        assert_eq!(a.used_at_ms, Some(100));
        assert_eq!(a.instance_id.as_deref(), Some("i-1"));
        let err = s.enroll("a1", 101, &new("i-2")).expect_err("second use");
        assert!(matches!(err, StoreError::ActivationUsed(ref id) if id == "a1"));
        assert_eq!(err.to_string(), "activation a1 was already used");
        // The refused enrollment left no instance behind.
        assert!(s.instance("i-2").expect("get").is_none());
        assert_eq!(s.instances().expect("list").len(), 1);
    }

    #[test]
    fn activation_keeps_its_expiry_and_code_hash() {
        let (_d, s) = store();
        s.create_activation(&activation("a1", 1_000))
            .expect("create");
        let a = s.activation("a1").expect("get").expect("exists");
        assert_eq!(a.expires_at_ms, 1_000);
        assert_eq!(a.code_hash, "00".repeat(32));
        assert!(s.activation("nope").expect("get").is_none());
    }

    #[test]
    fn new_instance_starts_at_generation_one_with_empty_assignment() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        let a = s.assignment("i-1").expect("assignment");
        assert_eq!(a.generation, 1);
        assert!(a.tasks.is_empty());
        assert!(matches!(
            s.assignment("i-x"),
            Err(StoreError::NoInstance(_))
        ));
    }

    #[test]
    fn task_changes_bump_the_generation() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        assert_eq!(s.insert_task(&task("t1", "i-1", 1)).expect("insert"), 2);
        let a = s.assignment("i-1").expect("assignment");
        assert_eq!(a.generation, 2);
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].desired_status, RUNNING);

        let (t, changed) = s
            .stop_task("t1", "UserInitiated", "Task stopped by user")
            .expect("stop");
        assert!(changed);
        assert_eq!(t.desired_status, STOPPED);
        let a = s.assignment("i-1").expect("assignment");
        assert_eq!(a.generation, 3);
        // Desired STOPPED but still running: still in the set, to be stopped.
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].desired_status, STOPPED);
        assert_eq!(a.tasks[0].stop_code, "UserInitiated");

        // Stopping twice changes nothing.
        let (_, changed) = s.stop_task("t1", "UserInitiated", "again").expect("stop");
        assert!(!changed);
        assert_eq!(s.assignment("i-1").expect("a").generation, 3);

        // The agent reports it stopped: it leaves the set.
        let out = s
            .apply_event("i-1", &event(1, "t1", STOPPED), 50)
            .expect("event");
        assert!(out.applied && out.assignment_changed);
        let a = s.assignment("i-1").expect("assignment");
        assert_eq!(a.generation, 4);
        assert!(a.tasks.is_empty());
        assert!(matches!(
            s.stop_task("nope", "x", "y"),
            Err(StoreError::NoTask(_))
        ));
    }

    #[test]
    fn events_are_applied_at_most_once() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("insert");
        let out = s
            .apply_event("i-1", &event(1, "t1", RUNNING), 77)
            .expect("event");
        assert!(out.applied);
        assert!(!out.assignment_changed);
        let t = s.task("t1").expect("get").expect("exists");
        assert_eq!(t.last_status, RUNNING);
        assert_eq!(t.last_event_seq, 1);
        assert_eq!(t.last_seen_at_ms, 77);

        // A replay of seq 1 with another state changes nothing.
        let out = s
            .apply_event("i-1", &event(1, "t1", STOPPED), 78)
            .expect("replay");
        assert!(!out.applied);
        let t = s.task("t1").expect("get").expect("exists");
        assert_eq!(t.last_status, RUNNING);
        assert_eq!(t.last_seen_at_ms, 77);
        assert_eq!(s.instance("i-1").expect("i").expect("i").last_event_seq, 1);

        // An older sequence is a replay too.
        let out = s
            .apply_event("i-1", &event(0, "t1", STOPPED), 79)
            .expect("old");
        assert!(!out.applied);
    }

    #[test]
    fn task_stopping_on_its_own_follows_desired_status() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("insert");
        let mut ev = event(3, "t1", STOPPED);
        if let Some(t) = ev.task.as_mut() {
            t.stop_code = "EssentialContainerExited".into();
            t.stopped_reason = "Essential container in task exited".into();
            t.stopped_at_ms = 99;
        }
        let out = s.apply_event("i-1", &ev, 100).expect("event");
        assert!(out.assignment_changed);
        let t = s.task("t1").expect("get").expect("exists");
        assert_eq!(t.desired_status, STOPPED);
        assert_eq!(t.stop_code, "EssentialContainerExited");
        assert_eq!(t.stopped_at_ms, 99);
        assert!(s.assignment("i-1").expect("a").tasks.is_empty());
    }

    #[test]
    fn unknown_and_foreign_tasks() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        enrolled(&s, "i-2");
        s.insert_task(&task("t2", "i-2", 1)).expect("insert");
        // i-1 reports a task of i-2: only the sequence moves.
        let out = s
            .apply_event("i-1", &event(1, "t2", STOPPED), 5)
            .expect("foreign");
        assert!(out.applied && out.foreign_task);
        assert_eq!(s.task("t2").expect("t").expect("t").last_status, PENDING);
        // i-1 reports a task nobody assigned: only the sequence moves, no
        // row is made up.
        let out = s
            .apply_event("i-1", &event(2, "tx", RUNNING), 6)
            .expect("unknown");
        assert!(out.applied && out.unknown_task && !out.assignment_changed);
        assert!(s.task("tx").expect("t").is_none());
        assert_eq!(s.tasks(None).expect("tasks").len(), 1);
        assert_eq!(s.instance("i-1").expect("i").expect("i").last_event_seq, 2);
        assert!(s.assignment("i-1").expect("a").tasks.is_empty());
    }

    fn hello(hostname: &str, cpu: i64, memory_mib: i64) -> HelloRecord {
        HelloRecord {
            hostname: hostname.into(),
            cpu,
            memory_mib,
            ..HelloRecord::default()
        }
    }

    #[test]
    fn a_hello_never_raises_the_registered_capacity_or_renames_the_host() {
        let (_d, s) = store();
        enrolled_as(
            &s,
            NewInstance {
                instance_id: "i-1".into(),
                hostname: "vm".into(),
                cpu: 2048,
                memory_mib: 4000,
                ..NewInstance::default()
            },
        );
        // Less than registered: placement uses the lower figure.
        let out = s
            .record_hello("i-1", &hello("vm", 1024, 3000))
            .expect("hello");
        assert!(!out.capacity_clamped && !out.instance.hostname_mismatch());
        assert_eq!(out.instance.capacity(), (1024, 3000));
        // More, under another name: clamped, and the name stays.
        let out = s
            .record_hello("i-1", &hello("other", 1 << 40, 1 << 40))
            .expect("hello");
        assert!(out.capacity_clamped);
        let i = out.instance;
        assert_eq!((i.cpu, i.memory_mib), (2048, 4000));
        assert_eq!((i.reported_cpu, i.reported_memory_mib), (1 << 40, 1 << 40));
        assert_eq!(i.capacity(), (2048, 4000));
        assert_eq!(i.hostname, "vm");
        assert_eq!(i.reported_hostname, "other");
        assert!(i.hostname_mismatch());
        // The operator accepts the new size.
        let (before, after) = s.accept_capacity("i-1").expect("accept");
        assert_eq!(before.cpu, 2048);
        assert_eq!(after.capacity(), (1 << 40, 1 << 40));
        assert!(matches!(
            s.accept_capacity("i-x"),
            Err(StoreError::NoInstance(_))
        ));
        // Enrolled without a capacity (an older agent): the first Hello's
        // is registered, later ones are clamped to it.
        enrolled(&s, "i-2");
        let out = s.record_hello("i-2", &hello("h", 512, 100)).expect("hello");
        assert!(out.capacity_registered);
        assert_eq!(out.instance.capacity(), (512, 100));
        let out = s
            .record_hello("i-2", &hello("h", 4096, 100))
            .expect("hello");
        assert!(out.capacity_clamped && !out.capacity_registered);
        assert_eq!(out.instance.capacity(), (512, 100));
    }

    #[test]
    fn writes_of_a_deregistered_instance_are_refused_and_change_nothing() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("t1");
        s.deregister_instance("i-1", "UserInitiated", "gone")
            .expect("deregister");
        let before = s.instance("i-1").expect("i").expect("i");
        let inactive =
            |e: StoreError| matches!(e, StoreError::InstanceInactive(ref id) if id == "i-1");
        assert!(inactive(
            s.record_hello("i-1", &hello("h", 1, 1)).expect_err("hello")
        ));
        assert!(inactive(
            s.record_heartbeat("i-1", 99).expect_err("heartbeat")
        ));
        assert!(inactive(
            s.apply_event("i-1", &event(1, "t1", RUNNING), 99)
                .expect_err("event")
        ));
        assert!(inactive(
            s.record_renewal("i-1", "aa", "bb").expect_err("renewal")
        ));
        assert_eq!(s.instance("i-1").expect("i").expect("i"), before);
        assert_eq!(s.task("t1").expect("t").expect("t").last_status, PENDING);
        assert!(matches!(
            s.record_heartbeat("i-x", 1),
            Err(StoreError::NoInstance(_))
        ));
    }

    #[test]
    fn a_renewed_certificate_in_use_retires_the_older_ones() {
        let (_d, s) = store();
        enrolled_as(
            &s,
            NewInstance {
                instance_id: "i-1".into(),
                hostname: "h".into(),
                cert_serial: Some("c1".into()),
                ..NewInstance::default()
            },
        );
        assert_eq!(
            s.use_certificate("i-1", "c1").expect("use"),
            CertUse::Accepted
        );
        assert_eq!(
            s.use_certificate("i-1", "zz").expect("use"),
            CertUse::Retired {
                current: "c1".into()
            }
        );
        // A renewal: until the new one connects, the old one still works.
        assert_eq!(
            s.record_renewal("i-1", "c1", "c2").expect("renew"),
            CertUse::Accepted
        );
        assert_eq!(
            s.use_certificate("i-1", "c1").expect("use"),
            CertUse::Accepted
        );
        assert_eq!(
            s.use_certificate("i-1", "c2").expect("use"),
            CertUse::Promoted {
                retired: Some("c1".into())
            }
        );
        // From now on c1 is refused, at Connect and at Renew.
        assert_eq!(
            s.use_certificate("i-1", "c1").expect("use"),
            CertUse::Retired {
                current: "c2".into()
            }
        );
        assert_eq!(
            s.record_renewal("i-1", "c1", "c3").expect("renew"),
            CertUse::Retired {
                current: "c2".into()
            }
        );
        let i = s.instance("i-1").expect("i").expect("i");
        assert_eq!(i.cert_serial.as_deref(), Some("c2"));
        assert_eq!(
            i.pending_cert_serial, None,
            "the refused renewal stored nothing"
        );
        // An instance from before schema 4 (no serial): anything goes until a
        // renewed certificate is used.
        enrolled(&s, "i-2");
        assert_eq!(
            s.use_certificate("i-2", "old").expect("use"),
            CertUse::Accepted
        );
        s.record_renewal("i-2", "old", "new").expect("renew");
        assert!(matches!(
            s.use_certificate("i-2", "new").expect("use"),
            CertUse::Promoted { retired: None }
        ));
        assert!(matches!(
            s.use_certificate("i-2", "old").expect("use"),
            CertUse::Retired { .. }
        ));
    }

    #[test]
    fn listings_leave_definitions_out() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("t1");
        assert_eq!(s.tasks(None).expect("tasks")[0].definition_json, "");
        assert_eq!(s.task("t1").expect("t").expect("t").definition_json, "{}");
    }

    #[test]
    fn usage_counts_tasks_not_stopped() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("t1");
        s.insert_task(&task("t2", "i-1", 2)).expect("t2");
        s.insert_task(&task("t3", "i-1", 3)).expect("t3");
        s.apply_event("i-1", &event(1, "t2", RUNNING), 5)
            .expect("e1");
        s.apply_event("i-1", &event(2, "t3", STOPPED), 5)
            .expect("e2");
        let u = s.usage().expect("usage");
        let u = u.get("i-1").copied().expect("i-1");
        assert_eq!(u.cpu, 512);
        assert_eq!(u.memory_mib, 1024);
        assert_eq!(u.running, 1);
        assert_eq!(u.pending, 1);
        let ids: Vec<String> = s
            .tasks(Some("i-1"))
            .expect("tasks")
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        assert_eq!(ids, ["t3", "t2", "t1"]);
        assert!(s.tasks(Some("i-9")).expect("tasks").is_empty());
        assert_eq!(s.tasks(None).expect("tasks").len(), 3);
    }

    #[test]
    fn hello_and_deregistration() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("t1");
        let out = s
            .record_hello(
                "i-1",
                &HelloRecord {
                    hostname: "host-a".into(),
                    agent_version: "0.1.0".into(),
                    boot_id: "b".into(),
                    cpu: 2048,
                    memory_mib: 4000,
                    attributes: [("k".to_owned(), "v".to_owned())].into(),
                    at_ms: 42,
                    applied_generation: 1,
                    last_event_sequence: 0,
                },
            )
            .expect("hello");
        assert_eq!(out.event_seq_lowered_from, None);
        assert_eq!(out.generation_raised_from, None);
        let rec = out.instance;
        assert_eq!(rec.cpu, 2048);
        assert_eq!(rec.attributes.get("k").map(String::as_str), Some("v"));
        assert_eq!(rec.last_heartbeat_at_ms, 42);
        s.record_assignment_ack("i-1", 2).expect("ack");
        s.record_assignment_ack("i-1", 99).expect("ack beyond");
        assert_eq!(
            s.instance("i-1").expect("i").expect("i").acked_generation,
            2
        );

        let rec = s
            .deregister_instance("i-1", "UserInitiated", "Instance deregistered")
            .expect("deregister");
        assert_eq!(rec.status, INACTIVE);
        assert_eq!(rec.generation, 3);
        let t = s.task("t1").expect("t").expect("t");
        assert_eq!(t.desired_status, STOPPED);
        // Twice: unchanged.
        let again = s
            .deregister_instance("i-1", "UserInitiated", "x")
            .expect("again");
        assert_eq!(again.generation, 3);
    }

    #[test]
    fn hello_reconciles_sequence_and_generation_with_the_agent() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("t1");
        s.apply_event("i-1", &event(5, "t1", RUNNING), 1)
            .expect("e5");
        // An agent that remembers everything changes nothing.
        let hello = |seq, generation| HelloRecord {
            last_event_sequence: seq,
            applied_generation: generation,
            ..HelloRecord::default()
        };
        let out = s.record_hello("i-1", &hello(5, 2)).expect("hello");
        assert_eq!(out.instance.last_event_seq, 5);
        assert_eq!(out.instance.generation, 2);
        assert_eq!(out.instance.hostname, "h");
        // An agent that lost its events: its next event 3 must not be a replay.
        let out = s.record_hello("i-1", &hello(2, 2)).expect("hello");
        assert_eq!(out.event_seq_lowered_from, Some(5));
        assert_eq!(out.instance.last_event_seq, 2);
        assert!(
            s.apply_event("i-1", &event(3, "t1", STOPPED), 2)
                .expect("e3")
                .applied
        );
        // A server database older than the agent's state: the next
        // assignment must be newer than what the agent has.
        let out = s.record_hello("i-1", &hello(3, 9)).expect("hello");
        assert_eq!(out.generation_raised_from, Some(3));
        assert_eq!(s.assignment("i-1").expect("a").generation, 10);
    }

    #[test]
    fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        {
            let s = SqliteStore::open(&path).expect("open");
            enrolled(&s, "i-1");
        }
        let s = SqliteStore::open(&path).expect("reopen");
        assert!(s.instance("i-1").expect("get").is_some());
        let versions: i64 = s
            .conn()
            .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
            .expect("count");
        assert_eq!(versions, 1);
    }

    /// A database at schema `version` (its tables as that version made
    /// them) holding `rows` (SQL), opened (so migrated) by this build.
    fn migrated_from(version: i64, rows: &str) -> (tempfile::TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("v1 schema");
            let steps = usize::try_from(version - 1).expect("version");
            for m in &MIGRATIONS[..steps] {
                conn.execute_batch(m).expect("migration");
            }
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![version],
            )
            .expect("version");
            conn.execute_batch(rows).expect("rows");
        }
        let s = SqliteStore::open(&path).expect("migrate");
        (dir, path, s)
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let (_dir, path, s) = migrated_from(
            1,
            "INSERT INTO activations (id, code_hash, created_at_ms, expires_at_ms) \
             VALUES ('a1', 'ff', 1, 2);",
        );
        let a = s.activation("a1").expect("get").expect("kept");
        assert_eq!(a.hostname, None);
        let version: i64 = s
            .conn()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let bound = ActivationRecord {
            hostname: Some("web-1".into()),
            ..activation("a2", i64::MAX)
        };
        s.create_activation(&bound).expect("create");
        assert_eq!(s.activation("a2").expect("get"), Some(bound));
        // Version 3: the table of admin certificates exists, empty.
        assert!(s.admin_certs().expect("list").is_empty());
        s.record_admin_cert(&admin_cert("01", "alice", 1))
            .expect("record");
        drop(s);
        // Opening again does not migrate twice, and keeps the record.
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(s.admin_certs().expect("list").len(), 1);
    }

    #[test]
    fn a_version_2_database_gains_the_admin_certificates_table() {
        let (_dir, _, s) = migrated_from(
            2,
            "INSERT INTO activations (id, code_hash, created_at_ms, expires_at_ms, hostname) \
             VALUES ('a1', 'ff', 1, 2, 'web-1');",
        );
        let a = s.activation("a1").expect("get").expect("kept");
        assert_eq!(a.hostname.as_deref(), Some("web-1"));
        let version: i64 = s
            .conn()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        s.record_admin_cert(&admin_cert("01", "alice", 1))
            .expect("record");
        assert_eq!(s.admin_certs().expect("list").len(), 1);
    }

    #[test]
    fn a_version_3_database_gains_the_source_networks_of_activations() {
        let (_dir, _, s) = migrated_from(
            3,
            "INSERT INTO activations (id, code_hash, created_at_ms, expires_at_ms) \
             VALUES ('a1', 'ff', 1, 2);",
        );
        let a = s.activation("a1").expect("get").expect("kept");
        assert!(a.source_cidrs.is_empty(), "{a:?}");
        let bound = ActivationRecord {
            source_cidrs: vec!["10.9.0.0/24".into(), "2001:db8::/64".into()],
            ..activation("a2", i64::MAX)
        };
        s.create_activation(&bound).expect("create");
        assert_eq!(s.activation("a2").expect("get"), Some(bound));
    }

    #[test]
    fn a_version_7_database_gains_services_and_task_marks() {
        let (_dir, path, s) = migrated_from(7, crate::server::store::conformance::VERSION_7_ROWS);
        crate::server::store::conformance::a_migrated_version_7_database(&s);
        let version: i64 = s
            .conn()
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        drop(s);
        let s = SqliteStore::open(&path).expect("reopen");
        assert_eq!(s.services(None).expect("services").len(), 1);
    }

    #[test]
    fn a_version_3_database_keeps_its_instances_with_bounded_capacities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("v1 schema");
            conn.execute_batch(MIGRATIONS[0]).expect("v2");
            conn.execute_batch(MIGRATIONS[1]).expect("v3");
            conn.execute_batch(
                "INSERT INTO schema_version (version) VALUES (3); \
                 INSERT INTO instances VALUES ('i-1', 'vm', 'ACTIVE', 1, '0.1', 'b', \
                   4611686018427387904, 2048, '{}', 0, 0, 1, 0, 'linux', 'x86_64');",
            )
            .expect("v3 rows");
        }
        let s = SqliteStore::open(&path).expect("migrate");
        let i = s.instance("i-1").expect("get").expect("kept");
        assert_eq!(i.cpu, crate::server::protocol::MAX_CPU_UNITS);
        assert_eq!(i.memory_mib, 2048);
        assert_eq!((i.reported_cpu, i.reported_memory_mib), (i.cpu, 2048));
        assert_eq!(i.reported_hostname, "vm");
        assert_eq!(i.cert_serial, None);
    }

    fn admin_cert(serial: &str, name: &str, issued_at_ms: i64) -> AdminCertRecord {
        AdminCertRecord {
            serial: serial.into(),
            name: name.into(),
            issued_at_ms,
            not_after_ms: issued_at_ms + 3_600_000,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn admin_certificates_are_recorded_listed_and_looked_up() {
        let (_d, s) = store();
        assert!(s.admin_certs().expect("list").is_empty());
        let bob = admin_cert("0b0b", "bob", 20);
        let alice = admin_cert("0a11ce", "alice", 10);
        s.record_admin_cert(&bob).expect("bob");
        s.record_admin_cert(&alice).expect("alice");
        // Oldest first.
        assert_eq!(
            s.admin_certs().expect("list"),
            vec![alice.clone(), bob.clone()]
        );
        assert_eq!(s.admin_cert("0b0b").expect("get"), Some(bob));
        assert_eq!(s.admin_cert("ffff").expect("get"), None);
        // A serial is recorded once; the first record stays.
        let err = s
            .record_admin_cert(&admin_cert("0a11ce", "mallory", 30))
            .expect_err("duplicate serial");
        assert!(
            matches!(err, StoreError::AdminCertificateExists(ref serial) if serial == "0a11ce"),
            "{err}"
        );
        assert_eq!(s.admin_cert("0a11ce").expect("get"), Some(alice));
    }

    #[test]
    fn revoking_an_admin_certificate_is_once_and_names_unknown_serials() {
        let (_d, s) = store();
        s.record_admin_cert(&admin_cert("0a11ce", "alice", 10))
            .expect("alice");
        s.record_admin_cert(&admin_cert("0b0b", "bob", 20))
            .expect("bob");
        let (cert, changed) = s.revoke_admin_cert("0b0b", 500).expect("revoke");
        assert!(changed);
        assert_eq!(cert.revoked_at_ms, Some(500));
        // Twice: unchanged, the first revocation time stays.
        let (cert, changed) = s.revoke_admin_cert("0b0b", 900).expect("again");
        assert!(!changed);
        assert_eq!(cert.revoked_at_ms, Some(500));
        assert_eq!(
            s.admin_cert("0b0b")
                .expect("get")
                .and_then(|c| c.revoked_at_ms),
            Some(500)
        );
        // The other one is untouched.
        assert_eq!(
            s.admin_cert("0a11ce")
                .expect("get")
                .map(|c| c.revoked_at_ms),
            Some(None)
        );
        let err = s.revoke_admin_cert("dead", 1).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no admin certificate with serial number dead"
        );
        // Nothing was recorded for the unknown serial.
        assert_eq!(s.admin_certs().expect("list").len(), 2);
    }

    #[test]
    fn the_sql_desired_set_agrees_with_the_rule() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        let statuses = [PENDING, RUNNING, STOPPED];
        let mut n = 0;
        for has_definition in [true, false] {
            for desired in statuses {
                for last in statuses {
                    n += 1;
                    let mut t = task(&format!("t{n}"), "i-1", n);
                    t.desired_status = desired.into();
                    t.last_status = last.into();
                    if !has_definition {
                        t.definition_json.clear();
                    }
                    s.insert_task(&t).expect("insert");
                }
            }
        }
        let assigned: Vec<String> = s
            .assignment("i-1")
            .expect("assignment")
            .tasks
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        let mut expected = Vec::new();
        let mut n = 0;
        for has_definition in [true, false] {
            for desired in statuses {
                for last in statuses {
                    n += 1;
                    if rules::in_desired_set(has_definition, desired, last) {
                        expected.push(format!("t{n}"));
                    }
                }
            }
        }
        assert!(!expected.is_empty());
        assert_eq!(assigned, expected);
    }

    type Fresh = (tempfile::TempDir, Box<dyn Fn() -> Box<dyn Store> + Sync>);

    /// A new database file, and an opener of new connections to it.
    fn fresh() -> Fresh {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        SqliteStore::open(&path).expect("create");
        let open = move || -> Box<dyn Store> { Box::new(SqliteStore::open(&path).expect("open")) };
        (dir, Box::new(open))
    }

    mod conformance {
        use super::fresh;
        crate::server::store::conformance::store_conformance!(fresh);
    }

    #[test]
    fn a_write_while_another_process_holds_the_lock_is_busy_naming_the_operation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("berth.db");
        let s = SqliteStore::open(&path).expect("open");
        enrolled(&s, "i-1");
        s.conn()
            .busy_timeout(Duration::from_millis(1))
            .expect("timeout");
        let other = Connection::open(&path).expect("other");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let e = s.insert_task(&task("t1", "i-1", 1)).expect_err("locked");
        assert!(matches!(e, StoreError::Busy("insert_task")), "{e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        other.execute_batch("ROLLBACK").expect("unlock");
        assert!(s.task("t1").expect("get").is_none(), "nothing was stored");
        s.insert_task(&task("t1", "i-1", 1))
            .expect("insert once free");
    }

    #[test]
    fn containers_round_trip() {
        let (_d, s) = store();
        enrolled(&s, "i-1");
        s.insert_task(&task("t1", "i-1", 1)).expect("t1");
        let mut ev = event(1, "t1", RUNNING);
        if let Some(t) = ev.task.as_mut() {
            t.containers = vec![ContainerState {
                name: "web".into(),
                exit_code: Some(3),
                restart_count: 2,
                network_bindings: vec![berth_proto::v1::NetworkBinding {
                    container_port: 80,
                    host_port: 32000,
                    protocol: "tcp".into(),
                    bind_ip: "0.0.0.0".into(),
                }],
                ..ContainerState::default()
            }];
        }
        s.apply_event("i-1", &ev, 1).expect("event");
        let t = s.task("t1").expect("t").expect("t");
        assert_eq!(Some(&t.containers), ev.task.as_ref().map(|t| &t.containers));
    }
}
