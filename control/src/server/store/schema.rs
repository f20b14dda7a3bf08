//! The schema and its versioned migrations, as SQL text. The runner that
//! applies them lives with each backend; the text is written in the subset
//! both SQLite and PostgreSQL accept unless a migration says otherwise.

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 10;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT NOT NULL PRIMARY KEY,
    hostname TEXT NOT NULL,
    status TEXT NOT NULL,
    registered_at_ms BIGINT NOT NULL,
    agent_version TEXT NOT NULL,
    boot_id TEXT NOT NULL,
    cpu BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    attributes_json TEXT NOT NULL,
    last_heartbeat_at_ms BIGINT NOT NULL,
    last_event_seq BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    acked_generation BIGINT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activations (
    id TEXT NOT NULL PRIMARY KEY,
    code_hash TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms BIGINT,
    instance_id TEXT REFERENCES instances (instance_id)
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT NOT NULL PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES instances (instance_id),
    family TEXT NOT NULL,
    definition_json TEXT NOT NULL,
    desired_status TEXT NOT NULL,
    last_status TEXT NOT NULL,
    health_status TEXT NOT NULL,
    stop_code TEXT NOT NULL,
    stopped_reason TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    stopped_at_ms BIGINT NOT NULL,
    containers_json TEXT NOT NULL,
    reserved_cpu BIGINT NOT NULL,
    reserved_memory_mib BIGINT NOT NULL,
    last_event_seq BIGINT NOT NULL,
    last_seen_at_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_instance ON tasks (instance_id, created_at_ms);
CREATE INDEX IF NOT EXISTS tasks_by_created ON tasks (created_at_ms);
";

/// Migrations: `MIGRATIONS[i]` takes a database from version `i + 1` to
/// `i + 2`. [`SCHEMA`] creates version 1 tables.
pub(super) const MIGRATIONS: &[&str] = &[
    "ALTER TABLE activations ADD COLUMN hostname TEXT",
    "CREATE TABLE admin_certificates (
        serial TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        issued_at_ms BIGINT NOT NULL,
        not_after_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    )",
    "ALTER TABLE activations ADD COLUMN source_cidrs TEXT",
    "ALTER TABLE instances ADD COLUMN reported_cpu BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN reported_memory_mib BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE instances ADD COLUMN reported_hostname TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN cert_serial TEXT;
    ALTER TABLE instances ADD COLUMN pending_cert_serial TEXT;
    UPDATE instances SET
        cpu = CASE WHEN cpu < 0 THEN 0 WHEN cpu > 4194304 THEN 4194304 ELSE cpu END,
        memory_mib = CASE WHEN memory_mib < 0 THEN 0 WHEN memory_mib > 67108864 THEN 67108864 ELSE memory_mib END;
    UPDATE instances SET reported_cpu = cpu, reported_memory_mib = memory_mib,
        reported_hostname = hostname",
    // 6: clusters; every instance, activation and task in one (`default`
    // for what existed before); attributes an operator put
    // (`berth attribute put`), kept apart from what the agent reports.
    "CREATE TABLE clusters (
        name TEXT NOT NULL PRIMARY KEY,
        status TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    INSERT INTO clusters (name, status, created_at_ms) VALUES ('default', 'ACTIVE', 0);
    ALTER TABLE instances ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE instances ADD COLUMN custom_attributes_json TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE activations ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE tasks ADD COLUMN cluster TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE tasks ADD COLUMN task_group TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN started_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE tasks ADD COLUMN task_definition TEXT NOT NULL DEFAULT '';
    CREATE INDEX tasks_by_cluster ON tasks (cluster, created_at_ms)",
    // 7: the task-definition registry: immutable revisions per family.
    "CREATE TABLE task_definitions (
        family TEXT NOT NULL,
        revision BIGINT NOT NULL,
        status TEXT NOT NULL,
        definition_json TEXT NOT NULL,
        registered_at_ms BIGINT NOT NULL,
        deregistered_at_ms BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (family, revision)
    )",
    // 8: services (their record, deployments and events) and the marks
    // the service reconciler keeps on tasks. `position` orders a service's
    // events that share a millisecond. Tasks stored before took the
    // column's default cluster: they move to their instance's.
    "CREATE TABLE services (
        cluster TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        config_json TEXT NOT NULL,
        desired_count BIGINT NOT NULL,
        task_definition TEXT NOT NULL,
        generation BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (cluster, name)
    );
    CREATE TABLE deployments (
        id TEXT NOT NULL PRIMARY KEY,
        cluster TEXT NOT NULL,
        service TEXT NOT NULL,
        task_definition TEXT NOT NULL,
        status TEXT NOT NULL,
        rollout_state TEXT NOT NULL,
        rollout_state_reason TEXT NOT NULL,
        failed_tasks BIGINT NOT NULL,
        consecutive_failures BIGINT NOT NULL,
        next_retry_at_ms BIGINT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX deployments_by_service ON deployments (cluster, service);
    CREATE TABLE service_events (
        id TEXT NOT NULL PRIMARY KEY,
        cluster TEXT NOT NULL,
        service TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        position BIGINT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX service_events_by_service ON service_events (cluster, service, created_at_ms);
    ALTER TABLE tasks ADD COLUMN ever_healthy INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN failure_counted INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_by_group ON tasks (cluster, task_group);
    UPDATE tasks SET cluster = COALESCE(
        (SELECT i.cluster FROM instances i WHERE i.instance_id = tasks.instance_id), cluster)",
    // 9: secrets (`berth secret`): ciphertext only, as hex.
    "CREATE TABLE secrets (
        name TEXT NOT NULL PRIMARY KEY,
        version BIGINT NOT NULL,
        ciphertext TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    )",
    // 10: access keys of the ECS API (`berth access-key`): the secret
    // encrypted with the secrets key, as hex.
    "CREATE TABLE access_keys (
        id TEXT NOT NULL PRIMARY KEY,
        name TEXT NOT NULL,
        ciphertext TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    )",
];
