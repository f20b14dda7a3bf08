//! What the fuzz targets share: the checks each side of the protocol runs on
//! what it receives, and the invariants that must hold afterwards.
//!
//! # Background
//! The agent runs as root next to the Docker socket and trusts no input; the
//! control plane accepts streams from every agent of a fleet. Both must
//! answer a malformed task definition or message with an error, never with
//! a panic, and must not store anything they cannot read back. The targets
//! in `fuzz_targets/` feed arbitrary bytes to the same functions the
//! binaries call, in the same order, and assert the invariants below.
//!
//! # Design
//! - [`check_definition`] is what every consumer of a task definition does:
//!   `berth_taskdef::parse`, plus the round trip (a definition that parsed,
//!   serialized back to JSON, parses again to the same definition).
//! - [`agent_runs`] is what the agent does with a definition that parsed,
//!   before it talks to Docker: the local policy, the start order, host
//!   ports, volumes and mounts, container names.
//! - [`Fleet`] is the control plane's handling of one agent session
//!   (`control/src/server/fleet.rs`) against an in-memory store, so that the
//!   store's reconciliation and everything it reads back are exercised,
//!   and the operator's calls that no agent may block (run, stop,
//!   deregister) still succeed afterwards.
//! - [`show_task`] is what the CLI prints for a task an agent reported
//!   (`--json` and the tables), since the control plane stores those fields
//!   as the agent sent them.
//!
//! # Limitations
//! - The gRPC framing, TLS and tonic's own limits are not fuzzed, only what
//!   the handlers see after them.
//! - Side effects on Docker and the network are out of scope: the agent's
//!   supervisor and the session's timing are left to the tests.

use std::collections::BTreeSet;
use std::path::PathBuf;

use berth_agent::policy::{self, Policy};
use berth_agent::{ports, supervisor, volumes};
use berth_control::server::store::{
    ActivationRecord, INACTIVE, NewInstance, PENDING, RUNNING, STOPPED, SqliteStore,
    Store, StoreError, TaskRecord,
};
use berth_control::server::protocol::{self, Step};
use berth_proto::v1::{AgentMessage, Assignment, DesiredTask, Task, TaskState};
use berth_taskdef::{MAX_DEFINITION_BYTES, Parsed, TaskDefinition};
use serde_json::Value;

/// Instance ids and task ids the fuzzed fleet knows (the seeds use them).
pub const INSTANCE: &str = "i-00000000000000f0";
pub const OTHER_INSTANCE: &str = "i-00000000000000f1";
pub const OWN_TASK: &str = "t-0000000000000000000000000000000a";
pub const FOREIGN_TASK: &str = "t-0000000000000000000000000000000b";
/// The task the operator runs after the session.
pub const NEW_TASK: &str = "t-0000000000000000000000000000000c";
/// The capacity both instances registered at enrollment (CPU units, MiB).
pub const REGISTERED: (i64, i64) = (2048, 7680);
/// The hostname both instances enrolled with.
pub const HOSTNAME: &str = "host";
/// A fixed "now" (2023-11-14), so runs are reproducible.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// A valid definition, as the admin API stores it for [`OWN_TASK`].
pub const DEFINITION: &str = r#"{"family":"web","containerDefinitions":[{"name":"app","image":"busybox","memory":64,"portMappings":[{"containerPort":80,"hostPort":8080}]}]}"#;

/// Parses a task definition as the CLI, the control plane and the agent do,
/// and checks what must hold for any input: an error names at least one
/// JSON path; an accepted definition validates, and survives a round trip
/// through JSON unchanged.
pub fn check_definition(text: &str) -> Option<Parsed> {
    match berth_taskdef::parse(text) {
        Err(e) => {
            assert!(
                !e.problems.is_empty(),
                "an error without problems for {text:?}"
            );
            for p in &e.problems {
                assert!(!p.path.is_empty(), "a problem without a JSON path: {p:?}");
            }
            let _ = e.to_string();
            None
        }
        Ok(parsed) => {
            if let Err(e) = berth_taskdef::validate(&parsed.definition) {
                panic!("parse accepted what validate refuses: {e}\n{text}");
            }
            round_trip(&parsed.definition);
            Some(parsed)
        }
    }
}

/// A definition that parsed, written back as JSON, parses again to the same
/// definition. (Floating-point values in fields kept as raw JSON may move
/// by one unit in the last place: serde_json reads floats without
/// `float_roundtrip`.)
pub fn round_trip(def: &TaskDefinition) {
    let json = serde_json::to_string(def).expect("a parsed definition serializes");
    if json.len() > MAX_DEFINITION_BYTES {
        // Absent fields are not written, so this needs escapes that grew;
        // the size limit refusing it is right.
        return;
    }
    let again = match berth_taskdef::parse(&json) {
        Ok(p) => p.definition,
        Err(e) => panic!("a definition that parsed does not parse again: {e}\nserialized: {json}"),
    };
    if &again != def {
        let a = rounded(serde_json::to_value(def).expect("serializes"));
        let b = rounded(serde_json::to_value(&again).expect("serializes"));
        assert_eq!(
            a, b,
            "round trip changed the definition\nserialized: {json}"
        );
    }
}

fn rounded(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            Value::String(format!("{:.12e}", n.as_f64().unwrap_or(0.0)))
        }
        Value::Array(items) => Value::Array(items.into_iter().map(rounded).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, rounded(v))).collect()),
        other => other,
    }
}

/// What the agent computes from a definition it accepted, before it calls
/// Docker (`agent/src/manager.rs`, `supervisor.rs`, `volumes.rs`,
/// `ports.rs`, `policy.rs`).
pub fn agent_runs(def: &TaskDefinition, task_id: &str) {
    // The local policy, as shipped and wide open (which resolves every
    // host path). Only reads the file system.
    let _ = policy::check(def, &Policy::default()).map_err(|e| e.to_string());
    let open = Policy {
        allow_privileged: true,
        allow_host_network: true,
        allow_host_pid_ipc: true,
        allowed_capabilities: vec!["ALL".to_owned()],
        allow_devices: true,
        allow_security_options: true,
        allowed_host_paths: vec![PathBuf::from("/")],
        protected_host_paths: vec![PathBuf::from("/var/lib/berth")],
        allowed_volume_drivers: vec!["local".to_owned()],
        allow_volume_driver_opts: true,
        allowed_shared_volumes: Vec::new(),
        allowed_log_drivers: vec!["syslog".to_owned(), "fluentd".to_owned()],
        allow_log_driver_addresses: false,
    };
    let _ = policy::check(def, &open).map_err(|e| e.to_string());
    for i in 0..def.container_definitions.len() {
        let _ = policy::check_container_binds(def, i, &open).map_err(|e| e.to_string());
    }

    // Start order: a permutation in which every container comes after what
    // it depends on (validation refuses unknown targets and cycles).
    let n = def.container_definitions.len();
    let order = supervisor::start_order(def);
    let distinct: BTreeSet<usize> = order.iter().copied().collect();
    assert!(
        order.len() == n && distinct.len() == n && distinct.iter().all(|i| *i < n),
        "start order {order:?} is not a permutation of {n} containers"
    );
    for (pos, &i) in order.iter().enumerate() {
        for d in &def.container_definitions[i].depends_on {
            let j = def
                .container_definitions
                .iter()
                .position(|c| c.name == d.container_name)
                .expect("validation: dependsOn names a container of the task");
            assert!(
                order[..pos].contains(&j),
                "start order {order:?} starts container {i} before its dependency {j}"
            );
        }
    }

    let all: Vec<usize> = (0..n).collect();
    let host_ports = ports::static_host_ports(def, &all);
    let unique: BTreeSet<(u16, &str)> = host_ports
        .iter()
        .map(|p| (p.port, p.protocol.as_str()))
        .collect();
    assert_eq!(
        unique.len(),
        host_ports.len(),
        "duplicate static host ports"
    );

    let _ = def.reservation();
    let _ = def.network_mode();
    for (vol_container, spec) in volumes::docker_volumes(def, task_id, INSTANCE) {
        assert!(vol_container < n.max(1));
        assert!(!spec.name.is_empty());
    }
    for c in &def.container_definitions {
        let _ = supervisor::container_name(&def.family, &c.name, task_id);
        let _ = volumes::mounts(def, c, task_id, INSTANCE);
        let _ = volumes::volumes_from(def, c, task_id);
        let _ = c.is_essential();
        let _ = c.stop_timeout();
    }
}

/// What the agent does with an assignment: every desired task's definition
/// is parsed again (it trusts no input) and, when it parses, planned.
/// The agent persists desired tasks as JSON (`state.rs`); that must round
/// trip as well.
pub fn agent_receives(assignment: &Assignment) {
    for d in &assignment.tasks {
        desired_task(d);
    }
}

fn desired_task(d: &DesiredTask) {
    let json = serde_json::to_string(d).expect("a desired task serializes");
    let back: DesiredTask =
        serde_json::from_str(&json).expect("a persisted desired task reads back");
    assert_eq!(
        &back, d,
        "desired task changed through the agent's state file"
    );
    let parsed = check_definition(&d.task_definition_json);
    if let Some(parsed) = &parsed {
        agent_runs(&parsed.definition, &d.task_id);
    }
    let _ = supervisor::short_id(&d.task_id);
    // The task's state carries the server's `created_at_ms`; the agent's
    // local API (`/v1/tasks`, `berth-agent status`) shows it.
    let state = TaskState {
        task_id: d.task_id.clone(),
        family: parsed.map(|p| p.definition.family).unwrap_or_default(),
        last_status: PENDING.to_owned(),
        desired_status: d.desired_status.clone(),
        stop_code: d.stop_code.clone(),
        stopped_reason: d.stopped_reason.clone(),
        created_at_ms: d.created_at_ms,
        ..TaskState::default()
    };
    let _ = berth_proto::json::task_json(INSTANCE, &state, 0).to_string();
}

/// What the CLI prints for a task: `--json` and the tables.
pub fn show_task(instance_id: &str, state: &TaskState, last_seen_at_ms: i64) {
    let v = berth_proto::json::task_json(instance_id, state, last_seen_at_ms);
    let _ = v.to_string();
    let task = Task {
        instance_id: instance_id.to_owned(),
        state: Some(state.clone()),
        last_seen_at_ms,
        ..Default::default()
    };
    let _ = berth_control::view::task_detail(&task, NOW_MS);
    let _ = berth_control::view::tasks_table(std::slice::from_ref(&task));
}

/// A control plane store with two enrolled instances and one task on each,
/// driven the way `Fleet.Connect` drives it for [`INSTANCE`].
pub struct Fleet {
    store: SqliteStore,
    /// The session has received Hello.
    welcomed: bool,
}

/// Why the server ends a session: the server's own rules
/// (`berth_control::server::protocol`).
pub use berth_control::server::protocol::Refusal as Refused;

impl Fleet {
    pub fn new() -> Fleet {
        let mut store = SqliteStore::open_in_memory().expect("in-memory store");
        for (act, id) in [("act-f0", INSTANCE), ("act-f1", OTHER_INSTANCE)] {
            store
                .create_activation(&ActivationRecord {
                    id: act.to_owned(),
                    code_hash: hex_sha256("code"),
                    created_at_ms: 1,
                    expires_at_ms: i64::MAX,
                    used_at_ms: None,
                    instance_id: None,
                    hostname: None,
                    source_cidrs: Vec::new(),
                    cluster: String::new(),
                })
                .expect("activation");
            store
                .enroll(
                    act,
                    10,
                    &NewInstance {
                        instance_id: id.to_owned(),
                        hostname: HOSTNAME.to_owned(),
                        os: "linux".to_owned(),
                        arch: "x86_64".to_owned(),
                        agent_version: "0.1.0".to_owned(),
                        registered_at_ms: 10,
                        cpu: REGISTERED.0,
                        memory_mib: REGISTERED.1,
                        cert_serial: Some("01".to_owned()),
                    },
                )
                .expect("enroll");
        }
        for (task, id) in [(OWN_TASK, INSTANCE), (FOREIGN_TASK, OTHER_INSTANCE)] {
            store
                .insert_task(&TaskRecord {
                    task_id: task.to_owned(),
                    instance_id: id.to_owned(),
                    family: "web".to_owned(),
                    definition_json: DEFINITION.to_owned(),
                    desired_status: RUNNING.to_owned(),
                    last_status: PENDING.to_owned(),
                    health_status: "UNKNOWN".to_owned(),
                    created_at_ms: 100,
                    reserved_cpu: 0,
                    reserved_memory_mib: 64,
                    ..TaskRecord::default()
                })
                .expect("task");
        }
        Fleet {
            store,
            welcomed: false,
        }
    }

    /// Handles one message as the session would (`control/src/server/fleet.rs`
    /// with the checks of `protocol`). `Err` ends the session.
    pub fn handle(&mut self, msg: &AgentMessage) -> Result<(), Refused> {
        if !self.welcomed {
            let hello = protocol::first_message(msg, INSTANCE)?;
            let record = protocol::hello_record(hello, NOW_MS);
            let outcome = self
                .store
                .record_hello(INSTANCE, &record)
                .expect("record_hello");
            // H1: a Hello never raises the registered capacity nor renames
            // the host; I6: what is stored of it is bounded.
            let i = &outcome.instance;
            assert_eq!(
                (i.cpu, i.memory_mib),
                REGISTERED,
                "a Hello changed the registered capacity"
            );
            let (cpu, memory_mib) = i.capacity();
            assert!(cpu <= REGISTERED.0 && memory_mib <= REGISTERED.1);
            assert_eq!(i.hostname, HOSTNAME, "a Hello renamed the host");
            assert!(i.attributes.len() <= protocol::MAX_ATTRIBUTES);
            for (k, v) in &i.attributes {
                assert!(protocol::valid_attribute_name(k), "attribute name {k:?}");
                assert!(v.len() <= protocol::MAX_ATTRIBUTE_VALUE);
            }
            assert!(
                i.reported_hostname.is_empty()
                    || i
                        .reported_hostname
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)),
                "hostname {:?} stored",
                i.reported_hostname
            );
            // The agent must accept the next assignment (for generations an
            // agent can reach; what the server does at the edge is checked
            // by `finish`).
            assert!(
                outcome.instance.generation >= hello.applied_generation
                    || hello.applied_generation >= protocol::MAX_COUNTER,
                "after Hello the server's generation {} is below the agent's {}",
                outcome.instance.generation,
                hello.applied_generation
            );
            self.welcomed = true;
            // Hello.tasks is only logged by the server.
            self.assignment();
            return Ok(());
        }
        match protocol::next_message(msg)? {
            Step::Ignore => {}
            Step::Heartbeat => {
                self.store
                    .record_heartbeat(INSTANCE, NOW_MS)
                    .expect("record_heartbeat");
            }
            Step::AssignmentAck(generation) => {
                self.store
                    .record_assignment_ack(INSTANCE, generation)
                    .expect("record_assignment_ack");
            }
            Step::Event(checked) => {
                let event = &checked.event;
                check_bounded(event.task.as_ref());
                let outcome = self
                    .store
                    .apply_event(INSTANCE, event, NOW_MS)
                    .expect("apply_event");
                // M1: no event creates a task row.
                let ids: Vec<String> = self
                    .store
                    .tasks(None)
                    .expect("tasks")
                    .into_iter()
                    .map(|t| t.task_id)
                    .collect();
                assert_eq!(
                    ids.len(),
                    2,
                    "an event of {INSTANCE} created a task row: {ids:?}"
                );
                if outcome.applied {
                    // SPEC §4: a replayed event changes nothing twice.
                    let again = self
                        .store
                        .apply_event(INSTANCE, event, NOW_MS)
                        .expect("apply_event");
                    assert!(
                        !again.applied,
                        "event {} was applied twice (replay not idempotent)",
                        event.sequence
                    );
                }
                if outcome.foreign_task {
                    let t = self
                        .store
                        .task(FOREIGN_TASK)
                        .expect("task")
                        .expect("foreign task still there");
                    assert_eq!(t.instance_id, OTHER_INSTANCE);
                    assert_eq!(
                        t.last_status, PENDING,
                        "an event of {INSTANCE} changed a task of {OTHER_INSTANCE}"
                    );
                }
                if outcome.assignment_changed {
                    self.assignment();
                }
            }
        }
        Ok(())
    }

    /// The assignment the server would send now; the agent must be able to
    /// take it.
    fn assignment(&self) -> Assignment {
        let a = self.store.assignment(INSTANCE).expect("assignment");
        for d in &a.tasks {
            assert!(
                berth_taskdef::parse(&d.task_definition_json).is_ok(),
                "the server assigns a definition that does not parse: {d:?}"
            );
        }
        a
    }

    /// After the session: everything the admin API reads back must decode
    /// and the CLI must be able to show it; and whatever the agent sent, the
    /// operator can still run a task on the instance, stop one, and
    /// deregister the instance (issue 5: revocation).
    pub fn finish(mut self) {
        for t in self.store.tasks(None).expect("tasks") {
            show_task(&t.instance_id, &t.state(), t.last_seen_at_ms);
        }
        let _ = self
            .store
            .tasks(Some(INSTANCE))
            .expect("tasks of the instance");
        let inst = self
            .store
            .instance(INSTANCE)
            .expect("instance")
            .expect("instance exists");
        let _ = self.store.instances().expect("instances");
        let _ = self.store.usage().expect("usage");
        let _ = berth_control::view::time(inst.last_heartbeat_at_ms);
        let _ = berth_control::view::ago(inst.last_heartbeat_at_ms, NOW_MS);
        if self.welcomed {
            agent_receives(&self.assignment());
        }

        self.store
            .insert_task(&TaskRecord {
                task_id: NEW_TASK.to_owned(),
                instance_id: INSTANCE.to_owned(),
                family: "web".to_owned(),
                definition_json: DEFINITION.to_owned(),
                desired_status: RUNNING.to_owned(),
                last_status: PENDING.to_owned(),
                health_status: "UNKNOWN".to_owned(),
                created_at_ms: NOW_MS,
                reserved_memory_mib: 64,
                ..TaskRecord::default()
            })
            .expect("the operator runs a task on the instance");
        self.store
            .stop_task(OWN_TASK, "UserInitiated", "stopped by the operator")
            .expect("the operator stops a task of the instance");
        let gone = self
            .store
            .deregister_instance(INSTANCE, "UserInitiated", "instance deregistered")
            .expect("the operator deregisters the instance");
        assert_eq!(gone.status, INACTIVE);
        // M4: the deregistered instance's session can write nothing more.
        assert!(matches!(
            self.store.record_heartbeat(INSTANCE, NOW_MS),
            Err(StoreError::InstanceInactive(_))
        ));
        let a = self.assignment();
        assert!(
            a.tasks.iter().all(|t| t.desired_status == STOPPED),
            "a deregistered instance is still assigned a running task: {a:?}"
        );
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

/// What the protocol rules let through is within the bounds the store
/// relies on (M1, L3): reasons cut, enums and names checked.
fn check_bounded(task: Option<&TaskState>) {
    let Some(t) = task else { return };
    assert!(t.stopped_reason.len() <= protocol::MAX_REASON_BYTES);
    assert!(t.family.is_empty() || protocol::valid_family(&t.family));
    for (value, allowed) in [
        (&t.last_status, protocol::LAST_STATUSES),
        (&t.desired_status, protocol::DESIRED_STATUSES),
        (&t.health_status, protocol::HEALTH_STATUSES),
        (&t.stop_code, protocol::STOP_CODES),
    ] {
        assert!(
            value.is_empty() || allowed.contains(&value.as_str()),
            "{value:?} passed as one of {allowed:?}"
        );
    }
    assert!(t.containers.len() <= protocol::MAX_CONTAINERS);
    for c in &t.containers {
        assert!(c.reason.len() <= protocol::MAX_REASON_BYTES);
        assert!(c.name.is_empty() || protocol::valid_family(&c.name));
        assert!(c.network_bindings.len() <= protocol::MAX_BINDINGS);
    }
}

/// Hex SHA-256, as activations store their codes.
pub fn hex_sha256(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}
