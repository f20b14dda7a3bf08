//! The control plane's durable state: activations, instances, tasks, and
//! the admin certificates it issued.
//!
//! [`Store`] is the boundary; [`SqliteStore`] implements it on one SQLite
//! file (`<data-dir>/berth.db`, WAL, foreign keys, `synchronous=FULL` so that
//! an acknowledged event survives a power cut).
//!
//! Layout: this module is the contract (records, [`StoreError`], the
//! trait); `rules` holds the domain rules as pure functions (the desired
//! set, how a report merges, the generation rule); `schema` the schema and
//! migrations as SQL text; `sqlite` and `postgres` the backends;
//! `taskdefs` and `services` the registry's and the services' halves of
//! the contract, each on both backends; `conformance` (tests) the checks
//! every backend passes, concurrency included.
//!
//! Invariants:
//! - every change that touches more than one row runs in one transaction
//!   (enrollment, event application, task creation, stop, deregistration);
//! - an instance's `generation` grows by one in the same transaction as every
//!   change of its desired task set (see [`TaskRecord::in_desired_set`]);
//! - an event is applied at most once: `instances.last_event_seq` only grows
//!   and events at or below it are ignored;
//! - only the SHA-256 of an activation code is stored;
//! - an admin certificate is recorded by serial number, name and dates,
//!   never with key material; its revocation time, once set, never changes;
//! - an instance's registered capacity (`cpu`, `memory_mib`) and hostname
//!   come from enrollment (or, when enrollment gave none, the first Hello)
//!   and change only by `accept_capacity`; a Hello only records what it
//!   reports (`reported_*`), and placement uses the lower of the two
//!   ([`InstanceRecord::capacity`]);
//! - only a registered (ACTIVE or DRAINING) instance's Hello, heartbeat or
//!   event is recorded: the status is checked in the same transaction as
//!   the write; a DRAINING one keeps its session and tasks but placement
//!   gives it no new task;
//! - an event is stored only for a task this server assigned to the
//!   reporting instance; others move the sequence and nothing else;
//! - an instance's `cert_serial` is the newest client certificate it has
//!   used; `pending_cert_serial` the one renewal issued last. Once the
//!   pending one connects it becomes current, and every older certificate
//!   is refused (see [`CertUse`]).
//!
//! Schema versions: 1 is the first; 2 adds `activations.hostname` (an
//! activation bound to one host); 3 adds `admin_certificates`; 4 adds
//! `activations.source_cidrs` (the networks an activation may be used from,
//! comma-separated CIDRs; NULL: any); 5 adds the reported capacity and
//! hostname and the certificate serials of instances (and clamps stored
//! capacities to the plausible range); 6 adds clusters (every instance,
//! activation and task in one, `default` for what existed) and the task
//! columns `task_group`, `started_by`, `task_definition`; 7 adds
//! `task_definitions` (the registry's immutable revisions); 8 adds
//! `services`, `deployments` and `service_events` (see `services`) and the
//! task marks `ever_healthy`, `failure_counted`, `lost`; 9 adds `secrets`
//! (ciphertext only, see `secrets`); 10 adds `access_keys` (the ECS API's
//! keys, the secret encrypted, see `accesskeys`). Older
//! databases are migrated when opened, in the same transaction that records
//! the new version.
//!
//! The schema uses TEXT, BIGINT and INTEGER only, so that it carries over to
//! PostgreSQL unchanged.

mod accesskeys;
#[cfg(test)]
pub(crate) mod conformance;
mod postgres;
mod rules;
mod schema;
mod secrets;
mod services;
mod sql;
mod sqlite;
mod taskdefs;

pub use accesskeys::{
    ACCESS_KEY_ID_LEN, AccessKeyRecord, AccessKeyStore, MAX_ACCESS_KEY_NAME_LEN,
    access_key_id_problem, access_key_name_problem,
};
pub use postgres::PostgresStore;
pub use rules::in_desired_set;
pub use schema::SCHEMA_VERSION;
pub use secrets::{
    MAX_SECRET_NAME_LEN, MAX_SECRET_VALUE_BYTES, SecretRecord, SecretStore, secret_name_problem,
};
pub use services::{
    DeploymentRecord, MAX_EVENT_MESSAGE, MAX_EVENTS, MAX_SERVICE_CONFIG_BYTES, PlanOutcome,
    SERVICE_DRAINING, ServiceEventRecord, ServicePlanRecord, ServiceRecord, ServiceSnapshot,
    ServiceStore, ServiceUpdate, TaskMarkKind,
};
pub use sqlite::SqliteStore;
pub use taskdefs::{
    MAX_REVISIONS as MAX_TASK_DEFINITION_REVISIONS, RegistryError, StatusFilter,
    TaskDefinitionRecord, TaskDefinitionStore, check_family,
};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use berth_proto::v1::{Assignment, ContainerState, DesiredTask, TaskEvent, TaskState};

pub const RUNNING: &str = "RUNNING";
pub const PENDING: &str = "PENDING";
pub const STOPPED: &str = "STOPPED";
pub const ACTIVE: &str = "ACTIVE";
pub const INACTIVE: &str = "INACTIVE";
/// A registered instance that keeps its tasks and session but gets no new
/// placements (`berth instance drain`).
pub const DRAINING: &str = "DRAINING";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the database was written by a newer berth (schema version {found}, this build knows {supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored {what} of {id} is not valid JSON: {source}")]
    Corrupt {
        what: &'static str,
        id: String,
        source: serde_json::Error,
    },
    #[error("activation {0} was already used")]
    ActivationUsed(String),
    #[error("no instance {0}")]
    NoInstance(String),
    #[error("instance {0} was deregistered; enroll the host again")]
    InstanceInactive(String),
    #[error("no task {0}")]
    NoTask(String),
    #[error("task {0} already exists")]
    TaskExists(String),
    #[error("no admin certificate with serial number {0}")]
    NoAdminCertificate(String),
    #[error("an admin certificate with serial number {0} is already recorded")]
    AdminCertificateExists(String),
    #[error("a store operation failed: {0}")]
    Join(String),
    #[error("status {0:?} is not one an instance can be set to: ACTIVE or DRAINING")]
    InvalidInstanceStatus(String),
    #[error("no cluster {0}")]
    NoCluster(String),
    #[error("cluster {0} was deleted (INACTIVE); create it again first")]
    ClusterInactive(String),
    #[error("cluster name {0:?} is not valid: {1}")]
    InvalidClusterName(String, &'static str),
    #[error("the cluster default cannot be deleted")]
    DefaultCluster,
    #[error(
        "cluster {name} is not empty: {instances} instance(s) not INACTIVE, {tasks} task(s) not STOPPED and {services} service(s) not deleted are left"
    )]
    ClusterNotEmpty {
        name: String,
        instances: i64,
        tasks: i64,
        /// Services not INACTIVE (DRAINING ones included).
        services: i64,
    },
    #[error("{0}: the database stayed locked by another writer; nothing was changed, try again")]
    Busy(&'static str),
    #[error("{op}: the change conflicts with the stored state ({detail}); nothing was changed")]
    Conflict { op: &'static str, detail: String },
    #[error("{op}: database error: {source}; nothing was changed")]
    Database {
        op: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
    #[error("cannot open the PostgreSQL store: {detail}")]
    OpenPostgres { detail: String },
    #[error("{op}: the database cannot be reached: {detail}; nothing was changed")]
    Unavailable { op: &'static str, detail: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("service {name} already exists in cluster {cluster}")]
    ServiceExists { cluster: String, name: String },
    #[error("no service {name} in cluster {cluster}")]
    NoService { cluster: String, name: String },
    #[error("a secret {0} already exists; change it with `berth secret rotate {0}`")]
    SecretExists(String),
    #[error("no secret {0}")]
    NoSecret(String),
    #[error("no access key {0}; `berth access-key ls` lists them")]
    NoAccessKey(String),
    /// Input the store refuses before anything is written: a name, a
    /// length or a count out of bounds.
    #[error("{op}: {detail}; nothing was changed")]
    Invalid { op: &'static str, detail: String },
    #[error(transparent)]
    InvalidAttribute(#[from] berth_proto::attributes::AttributeError),
    #[error("{0} attributes in one call, at most {max} are allowed", max = berth_proto::attributes::MAX_PER_CALL)]
    TooManyAttributesInCall(usize),
    #[error("no attribute named in the call; name at least one")]
    NoAttributesInCall,
    #[error(
        "instance {instance_id} would have {count} custom attributes, at most {max} are allowed; delete some first",
        max = berth_proto::attributes::MAX_CUSTOM
    )]
    TooManyAttributes { instance_id: String, count: usize },
    #[error(
        "instance {instance_id} is not in cluster {cluster} (it is in {actual}); name its cluster (--cluster {actual})"
    )]
    WrongCluster {
        instance_id: String,
        cluster: String,
        actual: String,
    },
    #[error(
        "instance {instance_id} has no attribute {name} put with `berth attribute put` (attributes from the agent's config change only there)"
    )]
    NoAttribute { instance_id: String, name: String },
}

/// The cluster every instance, activation and task belongs to unless it
/// names another. It always exists and is never deleted.
pub const DEFAULT_CLUSTER: &str = "default";

/// A cluster with the counts ECS' `DescribeClusters` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    pub name: String,
    /// `ACTIVE`, or `INACTIVE` once deleted.
    pub status: String,
    pub created_at_ms: i64,
    /// Instances whose status is not `INACTIVE`.
    pub registered_instances: i64,
    /// Tasks whose last status is `RUNNING`.
    pub running_tasks: i64,
    /// Tasks neither `RUNNING` nor `STOPPED`.
    pub pending_tasks: i64,
}

/// A one-time activation. Only the code's SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationRecord {
    pub id: String,
    /// Hex SHA-256 of the activation code.
    pub code_hash: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub used_at_ms: Option<i64>,
    pub instance_id: Option<String>,
    /// Only a host reporting this hostname may enroll with it.
    pub hostname: Option<String>,
    /// Networks (CIDR notation, as `enroll::Cidr` prints them) the
    /// activation may be used from; empty: any source address.
    pub source_cidrs: Vec<String>,
    /// The cluster the host joins; empty: `default`.
    pub cluster: String,
}

/// An admin certificate the control plane issued. No key material: the key
/// never leaves the operator, and the certificate itself is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminCertRecord {
    /// Serial number, lowercase hex (see `ca::normalize_serial`).
    pub serial: String,
    /// Its common name: who it was issued for.
    pub name: String,
    pub issued_at_ms: i64,
    pub not_after_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// What enrollment knows about a new instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewInstance {
    pub instance_id: String,
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub agent_version: String,
    pub registered_at_ms: i64,
    /// Registered capacity from the host facts; 0 and 0: none given (the
    /// first Hello's is registered).
    pub cpu: i64,
    pub memory_mib: i64,
    /// Serial number (lowercase hex) of the certificate enrollment issued.
    pub cert_serial: Option<String>,
}

/// An instance as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub hostname: String,
    /// `ACTIVE`, `DRAINING` or `INACTIVE`.
    pub status: String,
    pub registered_at_ms: i64,
    pub agent_version: String,
    pub boot_id: String,
    /// Registered CPU units: from enrollment, or accepted by an operator.
    pub cpu: i64,
    /// Registered memory, MiB.
    pub memory_mib: i64,
    pub attributes: BTreeMap<String, String>,
    pub last_heartbeat_at_ms: i64,
    pub last_event_seq: u64,
    pub generation: u64,
    pub acked_generation: u64,
    pub os: String,
    pub arch: String,
    /// What the last Hello reported (clamped to the plausible range).
    pub reported_cpu: i64,
    pub reported_memory_mib: i64,
    /// The hostname the last Hello reported ('' before any).
    pub reported_hostname: String,
    /// The newest client certificate the instance has connected with (or
    /// enrolled with); `None` for instances enrolled before schema 4 that
    /// have not used a renewed certificate yet.
    pub cert_serial: Option<String>,
    /// The certificate the last renewal issued, until it connects.
    pub pending_cert_serial: Option<String>,
    /// The cluster it joined at enrollment: its activation's.
    pub cluster: String,
    /// Attributes an operator put (`berth attribute put`, ECS
    /// `PutAttributes`): never in the built-in namespaces, kept apart from
    /// what the agent reports in [`Self::attributes`].
    pub custom_attributes: BTreeMap<String, String>,
}

impl InstanceRecord {
    /// Every attribute of the instance, as placement and the API see it:
    /// the agent's (built-in and from its config), the platform recorded at
    /// enrollment where the agent sent none, and the custom ones put by an
    /// operator over them (a custom attribute never has a built-in name, so
    /// it wins only over an agent's config attribute of the same name).
    pub fn all_attributes(&self) -> BTreeMap<String, String> {
        let mut all = self.attributes.clone();
        for (name, value) in [
            (berth_proto::attributes::OS_TYPE, &self.os),
            (berth_proto::attributes::CPU_ARCHITECTURE, &self.arch),
        ] {
            if !value.is_empty() {
                all.entry(name.to_owned()).or_insert_with(|| value.clone());
            }
        }
        all.extend(
            self.custom_attributes
                .iter()
                .filter(|(name, _)| !berth_proto::attributes::is_reserved(name))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        all
    }

    /// What placement may use: the lower of the registered capacity and
    /// what the agent reports (a Hello may lower it, never raise it).
    pub fn capacity(&self) -> (i64, i64) {
        (
            self.cpu.min(self.reported_cpu),
            self.memory_mib.min(self.reported_memory_mib),
        )
    }

    /// The last Hello reported another hostname than the registered one.
    pub fn hostname_mismatch(&self) -> bool {
        !self.reported_hostname.is_empty()
            && !self.reported_hostname.eq_ignore_ascii_case(&self.hostname)
    }
}

/// What a presented client certificate is, for `Fleet.Connect` and
/// `Fleet.Renew` (see `use_certificate`, `record_renewal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertUse {
    /// The current certificate, or any while none is recorded yet.
    Accepted,
    /// The renewed certificate connected for the first time: it is current
    /// now, and `retired` (the one before) is refused from now on.
    Promoted { retired: Option<String> },
    /// An older certificate than the current one: refused.
    Retired { current: String },
}

/// What a Hello tells about an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelloRecord {
    pub hostname: String,
    pub agent_version: String,
    pub boot_id: String,
    pub cpu: i64,
    pub memory_mib: i64,
    pub attributes: BTreeMap<String, String>,
    pub at_ms: i64,
    /// The generation of the last assignment the agent persisted.
    pub applied_generation: u64,
    /// The highest event sequence the agent has assigned.
    pub last_event_sequence: u64,
}

/// What recording a Hello did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HelloOutcome {
    /// The instance after the update.
    pub instance: InstanceRecord,
    /// The agent has assigned fewer events than the server applied (it lost
    /// its state): the server's sequence was lowered from this value so that
    /// the agent's new events are not mistaken for replays.
    pub event_seq_lowered_from: Option<u64>,
    /// The agent persisted a newer generation than the server has (the
    /// server's database is older than the agent's state): the generation
    /// was raised from this value so that the agent accepts the next
    /// assignment.
    pub generation_raised_from: Option<u64>,
    /// The Hello reported more than the registered capacity: placement
    /// keeps using the registered figure until an operator accepts the
    /// new one.
    pub capacity_clamped: bool,
    /// Enrollment registered no capacity: this Hello's was registered.
    pub capacity_registered: bool,
}

/// Reservations and task counts of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU units reserved by tasks that are not STOPPED.
    pub cpu: i64,
    /// MiB reserved by tasks that are not STOPPED.
    pub memory_mib: i64,
    pub running: u32,
    pub pending: u32,
}

/// A task as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRecord {
    pub task_id: String,
    pub instance_id: String,
    pub family: String,
    /// The definition as submitted; empty for a task the server learned
    /// about only from an agent's event.
    pub definition_json: String,
    pub desired_status: String,
    pub last_status: String,
    pub health_status: String,
    pub stop_code: String,
    pub stopped_reason: String,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub stopped_at_ms: i64,
    pub containers: Vec<ContainerState>,
    pub reserved_cpu: i64,
    pub reserved_memory_mib: i64,
    pub last_event_seq: u64,
    pub last_seen_at_ms: i64,
    /// `family:revision` of the registered definition ('' before the
    /// registry), the task group (`family:NAME`, `service:NAME`, …) and
    /// who started it.
    pub task_definition: String,
    pub group: String,
    pub started_by: String,
    /// The cluster of its instance (`default` before clusters).
    pub cluster: String,
    /// Service bookkeeping (schema 8), each only ever set: the reconciler
    /// saw the task healthy once; its failure was counted by the circuit
    /// breaker and the retry throttle; its instance was lost and the task
    /// counts as UNKNOWN (not running) from then on.
    pub ever_healthy: bool,
    pub failure_counted: bool,
    pub lost: bool,
}

impl TaskRecord {
    /// Whether the task belongs in its instance's assignment: every task
    /// except those both desired and last STOPPED. A task whose definition
    /// the server does not know cannot be assigned.
    pub fn in_desired_set(&self) -> bool {
        rules::in_desired_set(
            !self.definition_json.is_empty(),
            &self.desired_status,
            &self.last_status,
        )
    }

    /// The protocol's view of the task's state.
    pub fn state(&self) -> TaskState {
        TaskState {
            task_id: self.task_id.clone(),
            family: self.family.clone(),
            last_status: self.last_status.clone(),
            desired_status: self.desired_status.clone(),
            health_status: self.health_status.clone(),
            stop_code: self.stop_code.clone(),
            stopped_reason: self.stopped_reason.clone(),
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms,
            stopped_at_ms: self.stopped_at_ms,
            containers: self.containers.clone(),
        }
    }

    pub(crate) fn desired_task(&self) -> DesiredTask {
        DesiredTask {
            task_id: self.task_id.clone(),
            task_definition_json: self.definition_json.clone(),
            desired_status: self.desired_status.clone(),
            created_at_ms: self.created_at_ms,
            stop_code: self.stop_code.clone(),
            stopped_reason: self.stopped_reason.clone(),
            // Resolved by the server when it sends the assignment
            // (`server::secrets::attach`): the store holds no values.
            secrets: Vec::new(),
            registry_credentials: Vec::new(),
        }
    }
}

/// Instances and their reservations, as one transaction saw them.
#[derive(Debug, Clone, Default)]
pub struct PlacementSnapshot {
    pub instances: Vec<InstanceRecord>,
    pub usage: HashMap<String, Usage>,
}

/// What applying an agent's event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventOutcome {
    /// False for a replay (sequence at or below the last applied one).
    pub applied: bool,
    /// The instance's desired set changed: a new assignment is due.
    pub assignment_changed: bool,
    /// The event named a task of another instance; only the sequence moved.
    pub foreign_task: bool,
    /// The event named a task this server never assigned; only the
    /// sequence moved.
    pub unknown_task: bool,
    /// The cluster and task group of the task it changed (`service:NAME`
    /// for a service's task), so that the service controller looks at that
    /// service first; empty when it changed none.
    pub cluster: String,
    pub group: String,
}

/// The control plane's durable state.
///
/// Every method is one database transaction: it is applied whole or not at
/// all, whatever runs at the same time on other connections, other
/// threads or another process (read-check-writes use conditional updates
/// or a write lock the backend takes at the start). Methods are
/// synchronous; callers on the async runtime go through `Core::db`, which
/// runs them on the blocking pool.
///
/// Errors: a transaction the database refused for a moment (SQLite's
/// `SQLITE_BUSY`) is tried again by the backend, since nothing of it was
/// applied; what is left is [`StoreError::Busy`] or
/// [`StoreError::Database`], both naming the operation, and never a
/// half-applied change. A constraint violation is a
/// [`StoreError::Conflict`] (or one of the specific `…Exists` errors).
pub trait Store:
    TaskDefinitionStore + ServiceStore + SecretStore + AccessKeyStore + Send + Sync
{
    /// Stores a new activation.
    fn create_activation(&self, activation: &ActivationRecord) -> Result<(), StoreError>;
    fn activation(&self, id: &str) -> Result<Option<ActivationRecord>, StoreError>;
    /// Marks the activation used and creates the instance, in one
    /// transaction. [`StoreError::ActivationUsed`] when someone was faster.
    fn enroll(
        &self,
        activation_id: &str,
        now_ms: i64,
        instance: &NewInstance,
    ) -> Result<(), StoreError>;

    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, StoreError>;
    /// All instances, oldest registration first.
    fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;
    /// Reservations and counts per instance id.
    fn usage(&self) -> Result<HashMap<String, Usage>, StoreError>;
    /// Stores what a Hello says and reconciles sequence and generation with
    /// the agent's (see [`HelloOutcome`]).
    fn record_hello(&self, id: &str, hello: &HelloRecord) -> Result<HelloOutcome, StoreError>;
    fn record_heartbeat(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;
    fn record_assignment_ack(&self, id: &str, generation: u64) -> Result<(), StoreError>;
    /// Registers the capacity the last Hello reported. Returns the instance
    /// before and after.
    fn accept_capacity(&self, id: &str) -> Result<(InstanceRecord, InstanceRecord), StoreError>;
    /// A session opens with the certificate of serial `serial` (lowercase
    /// hex): whether it is accepted, and the promotion of a renewed one.
    fn use_certificate(&self, id: &str, serial: &str) -> Result<CertUse, StoreError>;
    /// A renewal presented `presented` and is about to hand out `issued`:
    /// refused ([`CertUse::Retired`], nothing stored) when `presented` is
    /// older than the current certificate; otherwise `issued` becomes the
    /// pending one.
    fn record_renewal(
        &self,
        id: &str,
        presented: &str,
        issued: &str,
    ) -> Result<CertUse, StoreError>;
    /// Marks the instance INACTIVE and every task on it desired STOPPED.
    fn deregister_instance(
        &self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<InstanceRecord, StoreError>;

    /// Applies an agent's task event at most once (see [`EventOutcome`]).
    fn apply_event(
        &self,
        instance_id: &str,
        event: &TaskEvent,
        now_ms: i64,
    ) -> Result<EventOutcome, StoreError>;
    /// The instance's current assignment.
    fn assignment(&self, instance_id: &str) -> Result<Assignment, StoreError>;

    /// Stores a new task and bumps its instance's generation. Returns the
    /// new generation.
    fn insert_task(&self, task: &TaskRecord) -> Result<u64, StoreError>;
    /// [`Store::insert_task`] only if the instance is ACTIVE and still at
    /// `generation` (the one a placement snapshot saw): otherwise
    /// [`StoreError::Conflict`] and nothing is stored. Every change that
    /// raises an instance's reservations bumps its generation, so a
    /// placement that checked room against a snapshot cannot over-commit.
    fn insert_task_at(&self, task: &TaskRecord, generation: u64) -> Result<u64, StoreError>;
    /// What placement needs, read in one transaction: every instance (with
    /// its generation) and the reservations per instance.
    fn placement_snapshot(&self) -> Result<PlacementSnapshot, StoreError>;
    fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// Tasks, newest first, optionally of one instance; without their
    /// definitions (`definition_json` is empty): a listing shows states.
    fn tasks(&self, instance_id: Option<&str>) -> Result<Vec<TaskRecord>, StoreError>;
    /// Sets the task's desired status to STOPPED. Returns the task and
    /// whether anything changed (a task already STOPPED, or already desired
    /// STOPPED, is returned unchanged).
    fn stop_task(
        &self,
        id: &str,
        stop_code: &str,
        reason: &str,
    ) -> Result<(TaskRecord, bool), StoreError>;

    /// Records a newly issued admin certificate.
    /// [`StoreError::AdminCertificateExists`] for a serial already recorded.
    fn record_admin_cert(&self, cert: &AdminCertRecord) -> Result<(), StoreError>;
    /// The admin certificate with this serial number (lowercase hex).
    fn admin_cert(&self, serial: &str) -> Result<Option<AdminCertRecord>, StoreError>;
    /// Every recorded admin certificate, oldest first.
    fn admin_certs(&self) -> Result<Vec<AdminCertRecord>, StoreError>;
    /// Revokes an admin certificate at `now_ms`. Returns it and whether
    /// anything changed (one already revoked keeps its first revocation
    /// time). [`StoreError::NoAdminCertificate`] for an unknown serial.
    fn revoke_admin_cert(
        &self,
        serial: &str,
        now_ms: i64,
    ) -> Result<(AdminCertRecord, bool), StoreError>;

    /// Creates the cluster (ACTIVE), or makes a deleted one ACTIVE again;
    /// an ACTIVE one is returned as it is (ECS' `CreateCluster`).
    /// [`StoreError::InvalidClusterName`] unless the name is 1–255 of
    /// `[A-Za-z0-9_-]`.
    fn create_cluster(&self, name: &str, now_ms: i64) -> Result<ClusterRecord, StoreError>;
    /// Every cluster, INACTIVE ones included, by name.
    fn clusters(&self) -> Result<Vec<ClusterRecord>, StoreError>;
    fn cluster(&self, name: &str) -> Result<Option<ClusterRecord>, StoreError>;
    /// Marks the cluster INACTIVE, in one transaction with the check that
    /// no instance but INACTIVE ones, no task but STOPPED ones and no
    /// service but INACTIVE ones is left in it
    /// ([`StoreError::ClusterNotEmpty`]). `default` is never deleted
    /// ([`StoreError::DefaultCluster`]); [`StoreError::NoCluster`] for an
    /// unknown name.
    fn delete_cluster(&self, name: &str) -> Result<ClusterRecord, StoreError>;

    /// Sets a registered instance's status to ACTIVE or DRAINING (ECS'
    /// `UpdateContainerInstancesState`); setting the status it has changes
    /// nothing. [`StoreError::InstanceInactive`] for a deregistered one,
    /// [`StoreError::InvalidInstanceStatus`] for any other status.
    fn update_instance_state(&self, id: &str, status: &str) -> Result<InstanceRecord, StoreError>;

    /// Puts custom attributes on a registered instance (ECS
    /// `PutAttributes`): a name already there takes the new value. In one
    /// transaction with the rules of [`rules::put_attributes`] (1 to 10
    /// per call, valid names and values outside the built-in namespaces,
    /// at most 64 on the instance); nothing is stored when one fails.
    /// [`StoreError::InstanceInactive`] for a deregistered instance.
    fn put_attributes(
        &self,
        id: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<InstanceRecord, StoreError>;

    /// Deletes custom attributes of a registered instance (ECS
    /// `DeleteAttributes`), in one transaction: every name must be one put
    /// before ([`StoreError::NoAttribute`], nothing deleted).
    fn delete_attributes(&self, id: &str, names: &[String]) -> Result<InstanceRecord, StoreError>;
}
