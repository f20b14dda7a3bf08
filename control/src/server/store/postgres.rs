//! [`Store`] on PostgreSQL (`berth server --store postgres://…`).
//!
//! tokio-postgres connections in a deadpool pool, driven by a small runtime
//! this store owns: the [`Store`] contract is synchronous (`Core::db` runs it
//! on the blocking pool), and each method blocks on its transaction there.
//! No TLS to the database (for now): use it on loopback or a trusted
//! network.
//!
//! Transactions are READ COMMITTED. Every read-check-write either is one
//! conditional `UPDATE` (enrollment, an event's sequence, stop,
//! deregistration, placement's insert at a generation, revocation) or first
//! locks the instance row with `SELECT … FOR UPDATE` (Hello, certificate use
//! and renewal, capacity). A transaction that fails with a serialization
//! failure (40001) or a deadlock (40P01) was rolled back whole and is tried
//! again; unique and foreign-key violations (23505, 23503) are
//! [`StoreError::Conflict`].
//!
//! Migrations run at open, in one transaction under an advisory lock, so
//! two servers starting at once migrate once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use berth_proto::v1::{Assignment, TaskEvent};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Transaction};
use tracing::warn;

use super::rules::{self, merge_state};
use super::schema::{MIGRATIONS, SCHEMA, SCHEMA_VERSION};
use super::sql::*;
use super::*;

/// How many times a transaction the database rolled back for a conflict
/// of its own (serialization failure, deadlock) is tried.
const ATTEMPTS: u32 = 5;
/// Connections in the pool.
const POOL_SIZE: usize = 16;
/// The advisory lock key that migrations hold ("berth" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_6572_7468;
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Store`] on PostgreSQL.
pub struct PostgresStore {
    pool: Pool,
    /// Drives the connections; shut down in the background on drop (the
    /// store may be dropped inside the server's runtime).
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

fn db_error(op: &'static str, e: StoreError) -> StoreError {
    match e {
        StoreError::Pg(source) => match source.code() {
            Some(c)
                if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::FOREIGN_KEY_VIOLATION =>
            {
                StoreError::Conflict {
                    op,
                    detail: source
                        .as_db_error()
                        .map_or_else(|| source.to_string(), |d| d.message().to_owned()),
                }
            }
            _ => StoreError::Database {
                op,
                source: Box::new(source),
            },
        },
        other => other,
    }
}

fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Pg(source) if source.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    }))
}

pub(super) fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`), and brings the
    /// schema up to date.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let open_err = |detail: String| StoreError::OpenPostgres { detail };
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| open_err(e.to_string()))?;
        cfg.connect_timeout(CONNECT_TIMEOUT);
        cfg.application_name("berth-server");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("berth-postgres")
            .enable_all()
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _guard = rt.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| open_err(e.to_string()))?
        };
        let store = PostgresStore { pool, rt: Some(rt) };
        store.migrate().map_err(|e| open_err(e.to_string()))?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        self.run("migrate", async |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(SCHEMA).await?;
            let found: Option<i32> = tx
                .query_one("SELECT MAX(version) FROM schema_version", &[])
                .await?
                .try_get(0)?;
            let version = match found.map(i64::from) {
                None => {
                    tx.execute("INSERT INTO schema_version (version) VALUES (1)", &[])
                        .await?;
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
                    tx.batch_execute(migration).await?;
                }
            }
            if version < SCHEMA_VERSION {
                let v = i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX);
                tx.execute("UPDATE schema_version SET version = $1", &[&v])
                    .await?;
            }
            Ok(())
        })
    }

    /// Runs `f` as one transaction, tried again when the database rolled
    /// it back for a conflict of its own.
    pub(super) fn run<T>(
        &self,
        op: &'static str,
        mut f: impl AsyncFnMut(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // The runtime is taken only by `Drop`, after which nothing runs.
        let Some(rt) = &self.rt else {
            return Err(StoreError::Unavailable {
                op,
                detail: "the store is closed".into(),
            });
        };
        rt.block_on(async {
            let mut tries = 1;
            loop {
                let result = async {
                    let mut client = self
                        .pool
                        .get()
                        .await
                        .map_err(|e| StoreError::Unavailable {
                            op,
                            detail: e.to_string(),
                        })?;
                    let tx = client.transaction().await?;
                    let out = f(&tx).await?;
                    tx.commit().await?;
                    Ok(out)
                }
                .await;
                match result {
                    Err(e) if retryable(&e) && tries < ATTEMPTS => {
                        tries += 1;
                        warn!(operation = op, attempt = tries, error = %e, "the database rolled the transaction back; trying again");
                    }
                    other => return other.map_err(|e| db_error(op, e)),
                }
            }
        })
    }
}

fn text(r: &Row, i: usize) -> Result<String, StoreError> {
    Ok(r.try_get(i)?)
}

fn int(r: &Row, i: usize) -> Result<i64, StoreError> {
    Ok(r.try_get(i)?)
}

/// An INTEGER (PostgreSQL `int4`) column holding 0 or 1.
fn flag(r: &Row, i: usize) -> Result<bool, StoreError> {
    Ok(r.try_get::<_, i32>(i)? != 0)
}

fn instance_from_row(r: &Row) -> Result<InstanceRecord, StoreError> {
    RawInstance {
        rec: InstanceRecord {
            instance_id: text(r, 0)?,
            hostname: text(r, 1)?,
            status: text(r, 2)?,
            registered_at_ms: int(r, 3)?,
            agent_version: text(r, 4)?,
            boot_id: text(r, 5)?,
            cpu: int(r, 6)?,
            memory_mib: int(r, 7)?,
            attributes: BTreeMap::new(),
            last_heartbeat_at_ms: int(r, 9)?,
            last_event_seq: from_db(int(r, 10)?),
            generation: from_db(int(r, 11)?),
            acked_generation: from_db(int(r, 12)?),
            os: text(r, 13)?,
            arch: text(r, 14)?,
            reported_cpu: int(r, 15)?,
            reported_memory_mib: int(r, 16)?,
            reported_hostname: text(r, 17)?,
            cert_serial: r.try_get(18)?,
            pending_cert_serial: r.try_get(19)?,
            cluster: text(r, 20)?,
            custom_attributes: BTreeMap::new(),
        },
        attributes_json: text(r, 8)?,
        custom_attributes_json: text(r, 21)?,
    }
    .decode()
}

pub(super) fn task_from_row(r: &Row) -> Result<TaskRecord, StoreError> {
    RawTask {
        rec: TaskRecord {
            task_id: text(r, 0)?,
            instance_id: text(r, 1)?,
            family: text(r, 2)?,
            definition_json: text(r, 3)?,
            desired_status: text(r, 4)?,
            last_status: text(r, 5)?,
            health_status: text(r, 6)?,
            stop_code: text(r, 7)?,
            stopped_reason: text(r, 8)?,
            created_at_ms: int(r, 9)?,
            started_at_ms: int(r, 10)?,
            stopped_at_ms: int(r, 11)?,
            containers: Vec::new(),
            reserved_cpu: int(r, 13)?,
            reserved_memory_mib: int(r, 14)?,
            last_event_seq: from_db(int(r, 15)?),
            last_seen_at_ms: int(r, 16)?,
            task_definition: text(r, 17)?,
            group: text(r, 18)?,
            started_by: text(r, 19)?,
            cluster: text(r, 20)?,
            ever_healthy: flag(r, 21)?,
            failure_counted: flag(r, 22)?,
            lost: flag(r, 23)?,
        },
        containers_json: text(r, 12)?,
    }
    .decode()
}

fn admin_cert_from_row(r: &Row) -> Result<AdminCertRecord, StoreError> {
    Ok(AdminCertRecord {
        serial: text(r, 0)?,
        name: text(r, 1)?,
        issued_at_ms: int(r, 2)?,
        not_after_ms: int(r, 3)?,
        revoked_at_ms: r.try_get(4)?,
    })
}

fn cluster_from_row(r: &Row) -> Result<ClusterRecord, StoreError> {
    Ok(ClusterRecord {
        name: text(r, 0)?,
        status: text(r, 1)?,
        created_at_ms: int(r, 2)?,
        registered_instances: int(r, 3)?,
        running_tasks: int(r, 4)?,
        pending_tasks: int(r, 5)?,
    })
}

async fn get_cluster(
    tx: &Transaction<'_>,
    name: &str,
) -> Result<Option<ClusterRecord>, StoreError> {
    tx.query_opt(&format!("{CLUSTER_SELECT} WHERE c.name = $1"), &[&name])
        .await?
        .as_ref()
        .map(cluster_from_row)
        .transpose()
}

async fn get_instance(
    tx: &Transaction<'_>,
    id: &str,
    lock: bool,
) -> Result<Option<InstanceRecord>, StoreError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    tx.query_opt(
        &format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = $1{lock}"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(instance_from_row)
    .transpose()
}

/// The instance, locked, if it exists and is registered (ACTIVE or
/// DRAINING).
async fn active_instance(tx: &Transaction<'_>, id: &str) -> Result<InstanceRecord, StoreError> {
    match get_instance(tx, id, true).await? {
        None => Err(StoreError::NoInstance(id.to_owned())),
        Some(i) if i.status == INACTIVE => Err(StoreError::InstanceInactive(id.to_owned())),
        Some(i) => Ok(i),
    }
}

async fn get_task(tx: &Transaction<'_>, id: &str) -> Result<Option<TaskRecord>, StoreError> {
    tx.query_opt(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = $1"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(task_from_row)
    .transpose()
}

async fn get_admin_cert(
    tx: &Transaction<'_>,
    serial: &str,
) -> Result<Option<AdminCertRecord>, StoreError> {
    tx.query_opt(
        &format!("SELECT {ADMIN_CERT_COLUMNS} FROM admin_certificates WHERE serial = $1"),
        &[&serial],
    )
    .await?
    .as_ref()
    .map(admin_cert_from_row)
    .transpose()
}

pub(super) async fn bump_generation(
    tx: &Transaction<'_>,
    instance_id: &str,
) -> Result<u64, StoreError> {
    let row = tx
        .query_one(
            "UPDATE instances SET generation = generation + 1 WHERE instance_id = $1 RETURNING generation",
            &[&instance_id],
        )
        .await?;
    Ok(from_db(int(&row, 0)?))
}

async fn all_instances(tx: &Transaction<'_>) -> Result<Vec<InstanceRecord>, StoreError> {
    tx.query(
        &format!("SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY registered_at_ms, instance_id"),
        &[],
    )
    .await?
    .iter()
    .map(instance_from_row)
    .collect()
}

async fn usage_by_instance(tx: &Transaction<'_>) -> Result<HashMap<String, Usage>, StoreError> {
    let rows = tx
        .query(
            "SELECT instance_id, \
               CAST(SUM(CASE WHEN last_status <> 'STOPPED' THEN reserved_cpu ELSE 0 END) AS BIGINT), \
               CAST(SUM(CASE WHEN last_status <> 'STOPPED' THEN reserved_memory_mib ELSE 0 END) AS BIGINT), \
               CAST(SUM(CASE WHEN last_status = 'RUNNING' THEN 1 ELSE 0 END) AS BIGINT), \
               CAST(SUM(CASE WHEN last_status = 'PENDING' THEN 1 ELSE 0 END) AS BIGINT) \
             FROM tasks GROUP BY instance_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                text(r, 0)?,
                Usage {
                    cpu: int(r, 1)?,
                    memory_mib: int(r, 2)?,
                    running: u32::try_from(int(r, 3)?).unwrap_or(u32::MAX),
                    pending: u32::try_from(int(r, 4)?).unwrap_or(u32::MAX),
                },
            ))
        })
        .collect()
}

async fn write_task(tx: &Transaction<'_>, t: &TaskRecord) -> Result<(), StoreError> {
    let containers = containers_json(&t.containers);
    let seq = to_db(t.last_event_seq);
    let params: Params<'_> = &[
        &t.task_id,
        &t.family,
        &t.desired_status,
        &t.last_status,
        &t.health_status,
        &t.stop_code,
        &t.stopped_reason,
        &t.started_at_ms,
        &t.stopped_at_ms,
        &containers,
        &seq,
        &t.last_seen_at_ms,
    ];
    tx.execute(
        "UPDATE tasks SET family = $2, \
         desired_status = CASE WHEN $3 = 'STOPPED' THEN 'STOPPED' ELSE desired_status END, \
         last_status = $4, health_status = $5, \
         stop_code = $6, stopped_reason = $7, started_at_ms = $8, stopped_at_ms = $9, \
         containers_json = $10, last_event_seq = $11, last_seen_at_ms = $12 WHERE task_id = $1",
        params,
    )
    .await?;
    Ok(())
}

/// Stores a task in its instance's cluster and bumps the instance's
/// generation; with `expected`, only if the instance is ACTIVE and still at
/// that generation (one conditional `UPDATE`). `op` names the operation in
/// a conflict.
pub(super) async fn insert_task_checked(
    tx: &Transaction<'_>,
    op: &'static str,
    t: &TaskRecord,
    expected: Option<u64>,
) -> Result<u64, StoreError> {
    // An instance's cluster never changes: no lock needed to read it.
    let Some(instance) = get_instance(tx, &t.instance_id, false).await? else {
        return Err(StoreError::NoInstance(t.instance_id.clone()));
    };
    let cluster = rules::task_cluster(op, t, &instance.cluster)?;
    let generation = match expected {
        None => bump_generation(tx, &t.instance_id).await?,
        Some(expected) => {
            let row = tx
                .query_opt(
                    "UPDATE instances SET generation = generation + 1 \
                     WHERE instance_id = $1 AND generation = $2 AND status = 'ACTIVE' \
                     RETURNING generation",
                    &[&t.instance_id, &to_db(expected)],
                )
                .await?;
            let Some(row) = row else {
                return Err(StoreError::Conflict {
                    op,
                    detail: format!(
                        "instance {} is no longer ACTIVE at generation {expected}",
                        t.instance_id
                    ),
                });
            };
            from_db(int(&row, 0)?)
        }
    };
    let containers = containers_json(&t.containers);
    let seq = to_db(t.last_event_seq);
    let params: Params<'_> = &[
        &t.task_id,
        &t.instance_id,
        &t.family,
        &t.definition_json,
        &t.desired_status,
        &t.last_status,
        &t.health_status,
        &t.stop_code,
        &t.stopped_reason,
        &t.created_at_ms,
        &t.started_at_ms,
        &t.stopped_at_ms,
        &containers,
        &t.reserved_cpu,
        &t.reserved_memory_mib,
        &seq,
        &t.last_seen_at_ms,
        &t.task_definition,
        &t.group,
        &t.started_by,
        &cluster,
        &i32::from(t.ever_healthy),
        &i32::from(t.failure_counted),
        &i32::from(t.lost),
    ];
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO tasks ({TASK_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                 $18, $19, $20, $21, $22, $23, $24)"
            ),
            params,
        )
        .await;
    match inserted {
        Ok(_) => Ok(generation),
        Err(e) if is_unique_violation(&e) => Err(StoreError::TaskExists(t.task_id.clone())),
        Err(e) => Err(e.into()),
    }
}

impl Store for PostgresStore {
    fn create_activation(&self, a: &ActivationRecord) -> Result<(), StoreError> {
        let cidrs = (!a.source_cidrs.is_empty()).then(|| a.source_cidrs.join(","));
        let cluster = rules::activation_cluster(&a.cluster).to_owned();
        self.run("create_activation", async |tx| {
            // FOR SHARE: a delete of the cluster waits for this activation
            // (or this one for the delete), as enroll does.
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM clusters WHERE name = $1 FOR SHARE",
                    &[&cluster],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
            rules::cluster_open_for_enrollment(&cluster, status.as_deref())?;
            tx.execute(
                "INSERT INTO activations (id, code_hash, created_at_ms, expires_at_ms, used_at_ms, instance_id, hostname, source_cidrs, cluster) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &a.id,
                    &a.code_hash,
                    &a.created_at_ms,
                    &a.expires_at_ms,
                    &a.used_at_ms,
                    &a.instance_id,
                    &a.hostname,
                    &cidrs,
                    &cluster,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn activation(&self, id: &str) -> Result<Option<ActivationRecord>, StoreError> {
        self.run("activation", async |tx| {
            let Some(r) = tx
                .query_opt(
                    "SELECT id, code_hash, created_at_ms, expires_at_ms, used_at_ms, instance_id, hostname, source_cidrs, cluster \
                     FROM activations WHERE id = $1",
                    &[&id],
                )
                .await?
            else {
                return Ok(None);
            };
            Ok(Some(ActivationRecord {
                id: text(&r, 0)?,
                code_hash: text(&r, 1)?,
                created_at_ms: int(&r, 2)?,
                expires_at_ms: int(&r, 3)?,
                used_at_ms: r.try_get(4)?,
                instance_id: r.try_get(5)?,
                hostname: r.try_get(6)?,
                source_cidrs: r
                    .try_get::<_, Option<String>>(7)?
                    .map(|s| s.split(',').map(str::to_owned).collect())
                    .unwrap_or_default(),
                cluster: text(&r, 8)?,
            }))
        })
    }

    fn enroll(&self, activation_id: &str, now_ms: i64, i: &NewInstance) -> Result<(), StoreError> {
        self.run("enroll", async |tx| {
            // The conditional update first: of two enrollments of one
            // activation, the second waits for the first's row lock, then
            // finds it used and stores nothing.
            let updated = tx
                .execute(
                    "UPDATE activations SET used_at_ms = $2 WHERE id = $1 AND used_at_ms IS NULL",
                    &[&activation_id, &now_ms],
                )
                .await?;
            if updated != 1 {
                return Err(StoreError::ActivationUsed(activation_id.to_owned()));
            }
            // The host joins the activation's cluster, if it is still there;
            // the share lock orders this against a delete of the cluster.
            let row = tx
                .query_one("SELECT cluster FROM activations WHERE id = $1", &[&activation_id])
                .await?;
            let cluster = text(&row, 0)?;
            let status = tx
                .query_opt("SELECT status FROM clusters WHERE name = $1 FOR SHARE", &[&cluster])
                .await?
                .map(|r| text(&r, 0))
                .transpose()?;
            if status.as_deref() != Some(ACTIVE) {
                return Err(StoreError::ClusterInactive(cluster));
            }
            let params: Params<'_> = &[
                &i.instance_id,
                &i.hostname,
                &ACTIVE,
                &i.registered_at_ms,
                &i.agent_version,
                &i.os,
                &i.arch,
                &i.cpu,
                &i.memory_mib,
                &i.cert_serial,
                &cluster,
            ];
            tx.execute(
                &format!(
                    "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, '', $8, $9, '{{}}', 0, 0, 1, 0, $6, $7, 0, 0, '', $10, NULL, $11, '{{}}')"
                ),
                params,
            )
            .await?;
            tx.execute(
                "UPDATE activations SET instance_id = $2 WHERE id = $1",
                &[&activation_id, &i.instance_id],
            )
            .await?;
            Ok(())
        })
    }

    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError> {
        self.run("instance", async |tx| get_instance(tx, id, false).await)
    }

    fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.run("instances", async |tx| all_instances(tx).await)
    }

    fn usage(&self) -> Result<HashMap<String, Usage>, StoreError> {
        self.run("usage", async |tx| usage_by_instance(tx).await)
    }

    fn placement_snapshot(&self) -> Result<PlacementSnapshot, StoreError> {
        self.run("placement_snapshot", async |tx| {
            // Instances first: a generation read before the usage can only
            // be older than it, never newer (the insert then conflicts).
            Ok(PlacementSnapshot {
                instances: all_instances(tx).await?,
                usage: usage_by_instance(tx).await?,
            })
        })
    }

    fn record_hello(&self, id: &str, h: &HelloRecord) -> Result<HelloOutcome, StoreError> {
        let attributes = serde_json::to_string(&h.attributes).unwrap_or_else(|_| "{}".into());
        self.run("record_hello", async |tx| {
            let before = active_instance(tx, id).await?;
            let rules::HelloChange {
                mut outcome,
                hostname,
                cpu,
                memory_mib,
                last_event_seq,
                generation,
            } = rules::reconcile_hello(&before, h);
            let (seq, generation) = (to_db(last_event_seq), to_db(generation));
            let params: Params<'_> = &[
                &id,
                &hostname,
                &h.agent_version,
                &h.boot_id,
                &h.cpu,
                &h.memory_mib,
                &attributes,
                &h.at_ms,
                &seq,
                &generation,
                &h.hostname,
                &cpu,
                &memory_mib,
            ];
            tx.execute(
                "UPDATE instances SET hostname = $2, agent_version = $3, boot_id = $4, \
                 reported_cpu = $5, reported_memory_mib = $6, attributes_json = $7, \
                 last_heartbeat_at_ms = $8, last_event_seq = $9, generation = $10, \
                 reported_hostname = $11, cpu = $12, memory_mib = $13 WHERE instance_id = $1",
                params,
            )
            .await?;
            outcome.instance = get_instance(tx, id, false)
                .await?
                .ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            Ok(outcome)
        })
    }

    fn record_heartbeat(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.run("record_heartbeat", async |tx| {
            let updated = tx
                .execute(
                    "UPDATE instances SET last_heartbeat_at_ms = $2 \
                     WHERE instance_id = $1 AND status <> 'INACTIVE'",
                    &[&id, &at_ms],
                )
                .await?;
            if updated == 0 {
                active_instance(tx, id).await?;
            }
            Ok(())
        })
    }

    fn record_assignment_ack(&self, id: &str, generation: u64) -> Result<(), StoreError> {
        self.run("record_assignment_ack", async |tx| {
            tx.execute(
                "UPDATE instances SET acked_generation = $2 \
                 WHERE instance_id = $1 AND acked_generation < $2 AND generation >= $2",
                &[&id, &to_db(generation)],
            )
            .await?;
            Ok(())
        })
    }

    fn accept_capacity(&self, id: &str) -> Result<(InstanceRecord, InstanceRecord), StoreError> {
        self.run("accept_capacity", async |tx| {
            let before = get_instance(tx, id, true)
                .await?
                .ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            tx.execute(
                "UPDATE instances SET cpu = reported_cpu, memory_mib = reported_memory_mib \
                 WHERE instance_id = $1",
                &[&id],
            )
            .await?;
            let after = get_instance(tx, id, false)
                .await?
                .ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            Ok((before, after))
        })
    }

    fn use_certificate(&self, id: &str, serial: &str) -> Result<CertUse, StoreError> {
        self.run("use_certificate", async |tx| {
            let inst = get_instance(tx, id, true)
                .await?
                .ok_or_else(|| StoreError::NoInstance(id.to_owned()))?;
            let used = rules::certificate_use(&inst, serial);
            if matches!(used, CertUse::Promoted { .. }) {
                tx.execute(
                    "UPDATE instances SET cert_serial = pending_cert_serial, \
                     pending_cert_serial = NULL WHERE instance_id = $1",
                    &[&id],
                )
                .await?;
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
        self.run("record_renewal", async |tx| {
            let inst = active_instance(tx, id).await?;
            let allowed = rules::renewal_allowed(&inst, presented);
            if !allowed {
                return Ok(CertUse::Retired {
                    current: inst.cert_serial.unwrap_or_default(),
                });
            }
            tx.execute(
                "UPDATE instances SET pending_cert_serial = $2 WHERE instance_id = $1",
                &[&id, &issued],
            )
            .await?;
            Ok(CertUse::Accepted)
        })
    }

    fn deregister_instance(
        &self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<InstanceRecord, StoreError> {
        self.run("deregister_instance", async |tx| {
            let changed = tx
                .execute(
                    "UPDATE instances SET status = $2 WHERE instance_id = $1 AND status <> $2",
                    &[&id, &INACTIVE],
                )
                .await?;
            if changed == 1 {
                let stopped = tx
                    .execute(
                        "UPDATE tasks SET desired_status = 'STOPPED', stop_code = $2, stopped_reason = $3 \
                         WHERE instance_id = $1 AND desired_status <> 'STOPPED'",
                        &[&id, &stop_code, &reason],
                    )
                    .await?;
                if stopped > 0 {
                    bump_generation(tx, id).await?;
                }
            }
            get_instance(tx, id, false)
                .await?
                .ok_or_else(|| StoreError::NoInstance(id.to_owned()))
        })
    }

    fn apply_event(
        &self,
        instance_id: &str,
        event: &TaskEvent,
        now_ms: i64,
    ) -> Result<EventOutcome, StoreError> {
        self.run("apply_event", async |tx| {
            // Claims the sequence (and the instance row's lock) first.
            let claimed = tx
                .execute(
                    "UPDATE instances SET last_event_seq = $2 \
                     WHERE instance_id = $1 AND status <> 'INACTIVE' AND last_event_seq < $2",
                    &[&instance_id, &to_db(event.sequence)],
                )
                .await?;
            if claimed == 0 {
                active_instance(tx, instance_id).await?;
                return Ok(EventOutcome::default());
            }
            let mut outcome = EventOutcome {
                applied: true,
                ..EventOutcome::default()
            };
            let st = event.task.clone().unwrap_or_default();
            if !st.task_id.is_empty() {
                match get_task(tx, &st.task_id).await? {
                    Some(t) if t.instance_id != instance_id => outcome.foreign_task = true,
                    Some(mut t) => {
                        outcome.assignment_changed = merge_state(&mut t, &st);
                        outcome.cluster = t.cluster.clone();
                        outcome.group = t.group.clone();
                        t.last_event_seq = event.sequence;
                        t.last_seen_at_ms = now_ms;
                        write_task(tx, &t).await?;
                    }
                    None => outcome.unknown_task = true,
                }
            }
            if outcome.assignment_changed {
                bump_generation(tx, instance_id).await?;
            }
            Ok(outcome)
        })
    }

    fn assignment(&self, instance_id: &str) -> Result<Assignment, StoreError> {
        self.run("assignment", async |tx| {
            let generation = tx
                .query_opt(
                    "SELECT generation FROM instances WHERE instance_id = $1",
                    &[&instance_id],
                )
                .await?
                .ok_or_else(|| StoreError::NoInstance(instance_id.to_owned()))?;
            let generation = from_db(int(&generation, 0)?);
            let rows = tx
                .query(
                    &format!(
                        "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = $1 \
                         AND {} ORDER BY created_at_ms, task_id",
                        rules::IN_DESIRED_SET_SQL
                    ),
                    &[&instance_id],
                )
                .await?;
            let mut tasks = Vec::new();
            for row in &rows {
                tasks.push(task_from_row(row)?.desired_task());
            }
            Ok(Assignment { generation, tasks })
        })
    }

    fn insert_task(&self, t: &TaskRecord) -> Result<u64, StoreError> {
        self.run("insert_task", async |tx| {
            insert_task_checked(tx, "insert_task", t, None).await
        })
    }

    fn insert_task_at(&self, t: &TaskRecord, generation: u64) -> Result<u64, StoreError> {
        self.run("insert_task_at", async |tx| {
            insert_task_checked(tx, "insert_task_at", t, Some(generation)).await
        })
    }

    fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.run("task", async |tx| get_task(tx, id).await)
    }

    fn tasks(&self, instance_id: Option<&str>) -> Result<Vec<TaskRecord>, StoreError> {
        let columns = TASK_COLUMNS.replacen("definition_json", "'' AS definition_json", 1);
        self.run("tasks", async |tx| {
            let rows = match instance_id {
                Some(id) => {
                    tx.query(
                        &format!(
                            "SELECT {columns} FROM tasks WHERE instance_id = $1 \
                             ORDER BY created_at_ms DESC, task_id DESC"
                        ),
                        &[&id],
                    )
                    .await?
                }
                None => {
                    tx.query(
                        &format!(
                            "SELECT {columns} FROM tasks ORDER BY created_at_ms DESC, task_id DESC"
                        ),
                        &[],
                    )
                    .await?
                }
            };
            rows.iter().map(task_from_row).collect()
        })
    }

    fn stop_task(
        &self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<(TaskRecord, bool), StoreError> {
        self.run("stop_task", async |tx| {
            let changed = tx
                .execute(
                    "UPDATE tasks SET desired_status = 'STOPPED', stop_code = $2, stopped_reason = $3 \
                     WHERE task_id = $1 AND desired_status <> 'STOPPED' AND last_status <> 'STOPPED'",
                    &[&id, &stop_code, &reason],
                )
                .await?
                == 1;
            let t = get_task(tx, id)
                .await?
                .ok_or_else(|| StoreError::NoTask(id.to_owned()))?;
            if changed {
                bump_generation(tx, &t.instance_id).await?;
            }
            Ok((t, changed))
        })
    }

    fn record_admin_cert(&self, c: &AdminCertRecord) -> Result<(), StoreError> {
        self.run("record_admin_cert", async |tx| {
            let inserted = tx
                .execute(
                    &format!(
                        "INSERT INTO admin_certificates ({ADMIN_CERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
                    ),
                    &[
                        &c.serial,
                        &c.name,
                        &c.issued_at_ms,
                        &c.not_after_ms,
                        &c.revoked_at_ms,
                    ],
                )
                .await;
            match inserted {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    Err(StoreError::AdminCertificateExists(c.serial.clone()))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn admin_cert(&self, serial: &str) -> Result<Option<AdminCertRecord>, StoreError> {
        self.run("admin_cert", async |tx| get_admin_cert(tx, serial).await)
    }

    fn admin_certs(&self) -> Result<Vec<AdminCertRecord>, StoreError> {
        self.run("admin_certs", async |tx| {
            tx.query(
                &format!(
                    "SELECT {ADMIN_CERT_COLUMNS} FROM admin_certificates ORDER BY issued_at_ms, serial"
                ),
                &[],
            )
            .await?
            .iter()
            .map(admin_cert_from_row)
            .collect()
        })
    }

    fn revoke_admin_cert(
        &self,
        serial: &str,
        now_ms: i64,
    ) -> Result<(AdminCertRecord, bool), StoreError> {
        self.run("revoke_admin_cert", async |tx| {
            let changed = tx
                .execute(
                    "UPDATE admin_certificates SET revoked_at_ms = $2 \
                     WHERE serial = $1 AND revoked_at_ms IS NULL",
                    &[&serial, &now_ms],
                )
                .await?
                == 1;
            let cert = get_admin_cert(tx, serial)
                .await?
                .ok_or_else(|| StoreError::NoAdminCertificate(serial.to_owned()))?;
            Ok((cert, changed))
        })
    }

    fn create_cluster(&self, name: &str, now_ms: i64) -> Result<ClusterRecord, StoreError> {
        rules::check_cluster_name(name)
            .map_err(|why| StoreError::InvalidClusterName(name.to_owned(), why))?;
        self.run("create_cluster", async |tx| {
            tx.execute(
                "INSERT INTO clusters (name, status, created_at_ms) VALUES ($1, 'ACTIVE', $2) \
                 ON CONFLICT (name) DO UPDATE SET status = 'ACTIVE'",
                &[&name, &now_ms],
            )
            .await?;
            get_cluster(tx, name)
                .await?
                .ok_or_else(|| StoreError::NoCluster(name.to_owned()))
        })
    }

    fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError> {
        self.run("clusters", async |tx| {
            tx.query(&format!("{CLUSTER_SELECT} ORDER BY c.name"), &[])
                .await?
                .iter()
                .map(cluster_from_row)
                .collect()
        })
    }

    fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError> {
        self.run("cluster", async |tx| get_cluster(tx, name).await)
    }

    fn delete_cluster(&self, name: &str) -> Result<ClusterRecord, StoreError> {
        if name == DEFAULT_CLUSTER {
            return Err(StoreError::DefaultCluster);
        }
        self.run("delete_cluster", async |tx| {
            // The row lock orders this against an enrollment into the cluster.
            if tx
                .query_opt(
                    "SELECT name FROM clusters WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .await?
                .is_none()
            {
                return Err(StoreError::NoCluster(name.to_owned()));
            }
            let left = tx.query_one(CLUSTER_LEFT_PG, &[&name]).await?;
            let (instances, tasks, services) = (int(&left, 0)?, int(&left, 1)?, int(&left, 2)?);
            if instances > 0 || tasks > 0 || services > 0 {
                return Err(StoreError::ClusterNotEmpty {
                    name: name.to_owned(),
                    instances,
                    tasks,
                    services,
                });
            }
            tx.execute(
                "UPDATE clusters SET status = 'INACTIVE' WHERE name = $1",
                &[&name],
            )
            .await?;
            get_cluster(tx, name)
                .await?
                .ok_or_else(|| StoreError::NoCluster(name.to_owned()))
        })
    }

    fn update_instance_state(&self, id: &str, status: &str) -> Result<InstanceRecord, StoreError> {
        if status != ACTIVE && status != DRAINING {
            return Err(StoreError::InvalidInstanceStatus(status.to_owned()));
        }
        self.run("update_instance_state", async |tx| {
            let changed = tx
                .execute(
                    "UPDATE instances SET status = $2 WHERE instance_id = $1 AND status <> 'INACTIVE'",
                    &[&id, &status],
                )
                .await?;
            if changed == 0 {
                // Says which: missing or deregistered.
                active_instance(tx, id).await?;
            }
            get_instance(tx, id, false)
                .await?
                .ok_or_else(|| StoreError::NoInstance(id.to_owned()))
        })
    }

    fn put_attributes(
        &self,
        id: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<InstanceRecord, StoreError> {
        self.run("put_attributes", async |tx| {
            // Locks the row: the read, the rules and the write are one step.
            let before = active_instance(tx, id).await?;
            let after = rules::put_attributes(&before, attributes)?;
            set_custom_attributes(tx, id, &after).await
        })
    }

    fn delete_attributes(&self, id: &str, names: &[String]) -> Result<InstanceRecord, StoreError> {
        self.run("delete_attributes", async |tx| {
            let before = active_instance(tx, id).await?;
            let after = rules::delete_attributes(&before, names)?;
            set_custom_attributes(tx, id, &after).await
        })
    }
}

/// Stores an instance's custom attributes; returns the instance.
async fn set_custom_attributes(
    tx: &Transaction<'_>,
    id: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<InstanceRecord, StoreError> {
    tx.execute(
        "UPDATE instances SET custom_attributes_json = $2 WHERE instance_id = $1",
        &[&id, &attributes_json(attributes)],
    )
    .await?;
    get_instance(tx, id, false)
        .await?
        .ok_or_else(|| StoreError::NoInstance(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::conformance;

    /// Every check of the conformance suite on a real PostgreSQL server:
    /// one cluster for the run, one new database per check.
    #[test]
    fn conformance_on_postgres() {
        let pg = berth_e2e::Postgres::start(&berth_e2e::RunId::new());
        for (n, (name, check)) in conformance::CHECKS.iter().enumerate() {
            let url = pg.create_database(&format!("conformance_{n}"));
            PostgresStore::open(&url).unwrap_or_else(|e| panic!("{name}: open: {e}"));
            let open =
                move || -> Box<dyn Store> { Box::new(PostgresStore::open(&url).expect("open")) };
            eprintln!("conformance on PostgreSQL: {name}");
            check(&open);
        }
    }

    #[test]
    fn migrations_run_once_from_an_empty_database_and_again_change_nothing() {
        let pg = berth_e2e::Postgres::start(&berth_e2e::RunId::new());
        let url = pg.create_database("migrations");
        // Two servers starting at once: the advisory lock lets one migrate.
        let opened: Vec<Result<PostgresStore, StoreError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| PostgresStore::open(&url)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("opener panicked"))
                .collect()
        });
        for o in &opened {
            assert!(o.is_ok(), "{:?}", o.as_ref().err().map(ToString::to_string));
        }
        let versions = pg.psql("migrations", "SELECT version FROM schema_version");
        assert_eq!(
            versions.trim(),
            SCHEMA_VERSION.to_string(),
            "one row, the current version"
        );
        let s = PostgresStore::open(&url).expect("reopen");
        s.create_activation(&conformance::activation("a"))
            .expect("activation");
        drop(s);
        let s = PostgresStore::open(&url).expect("reopen again");
        assert!(
            s.activation("a").expect("get").is_some(),
            "reopening keeps data"
        );
        pg.psql("migrations", "UPDATE schema_version SET version = 99");
        let e = PostgresStore::open(&url).expect_err("too new");
        assert!(e.to_string().contains("99"), "{e}");
    }

    #[test]
    fn a_version_7_database_migrates_to_services_and_task_marks() {
        let pg = berth_e2e::Postgres::start(&berth_e2e::RunId::new());
        let url = pg.create_database("from_v7");
        let mut v7 = String::from(SCHEMA);
        for m in &MIGRATIONS[..6] {
            v7.push_str(m);
            v7.push_str(";\n");
        }
        v7.push_str("INSERT INTO schema_version (version) VALUES (7);\n");
        v7.push_str(conformance::VERSION_7_ROWS);
        pg.psql("from_v7", &v7);
        let s = PostgresStore::open(&url).expect("migrate");
        assert_eq!(
            pg.psql("from_v7", "SELECT version FROM schema_version"),
            SCHEMA_VERSION.to_string()
        );
        conformance::a_migrated_version_7_database(&s);
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error() {
        let e = PostgresStore::open("postgres://berth@127.0.0.1:1/berth").expect_err("refused");
        assert!(
            e.to_string().contains("cannot open the PostgreSQL store"),
            "{e}"
        );
    }
}
