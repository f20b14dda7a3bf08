//! Writes the seed inputs under `fuzz/corpus/<target>/`: encoded protocol
//! messages, and copies of the task definitions in `taskdef/tests/corpus/`
//! and `examples/`.
//!
//!     cd fuzz && cargo run --example seeds
//!
//! Deterministic except for the key pairs in the CSR seeds. Files are named
//! `seed-<what>`; inputs the fuzzer found and that were merged in
//! (`scripts/fuzz.sh --merge`) are named by their SHA-1.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use berth_fuzz::{DEFINITION, FOREIGN_TASK, INSTANCE, OTHER_INSTANCE, OWN_TASK};
use berth_proto::v1::agent_message::Msg as A;
use berth_proto::v1::server_message::Msg as S;
use berth_proto::v1::*;
use prost::Message;

/// 9999-12-31T23:59:59.999Z, the last instant RFC 3339 can write.
const LAST_MS_OF_9999: i64 = 253_402_300_799_999;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    agent_seeds(&fuzz.join("corpus/agent_message_decode"))?;
    server_seeds(&fuzz, &fuzz.join("corpus/server_message_decode"))?;
    certificate_seeds(&fuzz.join("corpus/certificate_request_decode"))?;
    taskdef_seeds(&fuzz, &fuzz.join("corpus/taskdef_parse"))?;
    fixed_findings(&fuzz.join("corpus"))?;
    Ok(())
}

/// Inputs that crashed a target when it was written (see fuzz/README.md,
/// "Findings"). All fixed, so they live in the corpus as `regression-*`,
/// where every fuzzing run replays them first.
fn fixed_findings(dir: &Path) -> std::io::Result<()> {
    let agent = dir.join("agent_message_decode");
    let mut late = task(OWN_TASK, "RUNNING", "RUNNING");
    late.started_at_ms = LAST_MS_OF_9999 + 1;
    fs::create_dir_all(&agent)?;
    fs::write(
        agent.join("regression-started-after-year-9999"),
        session(vec![hello(INSTANCE), event(3, late)]),
    )?;
    fs::write(
        agent.join("regression-sequence-above-i64-max"),
        session(vec![
            hello(INSTANCE),
            event(u64::MAX, task(OWN_TASK, "RUNNING", "RUNNING")),
        ]),
    )?;
    let mut greedy = hello(INSTANCE);
    if let A::Hello(h) = &mut greedy {
        h.applied_generation = u64::MAX;
    }
    fs::write(
        agent.join("regression-generation-i64-max"),
        session(vec![greedy]),
    )?;

    let server = dir.join("server_message_decode");
    let mut late = desired(OWN_TASK, DEFINITION, "RUNNING");
    late.created_at_ms = i64::MAX;
    fs::create_dir_all(&server)?;
    fs::write(
        server.join("regression-created-after-year-9999"),
        assignment(2, vec![late]),
    )?;
    Ok(())
}

/// Larger inputs than this are left out: the oversize case is one `len()`
/// check, and large seeds make every mutation slower.
const MAX_SEED_BYTES: u64 = 8 * 1024;

/// The definitions the repository has, valid and invalid.
fn definitions(fuzz: &Path) -> std::io::Result<Vec<PathBuf>> {
    let root = fuzz.parent().expect("fuzz/ is inside the repository");
    let mut all = Vec::new();
    for sub in [
        "taskdef/tests/corpus/valid",
        "taskdef/tests/corpus/invalid",
        "examples",
    ] {
        let mut files: Vec<PathBuf> = fs::read_dir(root.join(sub))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() <= MAX_SEED_BYTES))
            .collect();
        files.sort();
        all.extend(files);
    }
    Ok(all)
}

fn stem(p: &Path) -> String {
    let dir = p
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
        .unwrap_or("def");
    let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("def");
    format!("{dir}-{name}")
}

fn taskdef_seeds(fuzz: &Path, dir: &Path) -> std::io::Result<()> {
    for f in definitions(fuzz)? {
        write(dir, &format!("{}.json", stem(&f)), &fs::read(&f)?)?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)
}

fn container(name: &str, status: &str, exit: Option<i32>) -> ContainerState {
    ContainerState {
        name: name.into(),
        image: "busybox:latest".into(),
        image_digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            .into(),
        runtime_id: "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee".into(),
        last_status: status.into(),
        exit_code: exit,
        reason: if exit.is_some() {
            "exited".into()
        } else {
            String::new()
        },
        health_status: "HEALTHY".into(),
        restart_count: 1,
        network_bindings: vec![NetworkBinding {
            container_port: 80,
            host_port: 8080,
            protocol: "tcp".into(),
            bind_ip: "0.0.0.0".into(),
        }],
        essential: true,
    }
}

fn task(id: &str, status: &str, desired: &str) -> TaskState {
    let stopped = status == "STOPPED";
    TaskState {
        task_id: id.into(),
        family: "web".into(),
        last_status: status.into(),
        desired_status: desired.into(),
        health_status: "HEALTHY".into(),
        stop_code: if stopped {
            "EssentialContainerExited".into()
        } else {
            String::new()
        },
        stopped_reason: if stopped {
            "Essential container in task exited".into()
        } else {
            String::new()
        },
        created_at_ms: 1_700_000_000_000,
        started_at_ms: 1_700_000_001_000,
        stopped_at_ms: if stopped { 1_700_000_002_000 } else { 0 },
        containers: vec![container("app", status, stopped.then_some(1))],
    }
}

fn hello(instance: &str) -> A {
    A::Hello(Hello {
        instance_id: instance.into(),
        agent_version: "0.1.0".into(),
        boot_id: "5a1b9c2d-0000-4000-8000-000000000000".into(),
        capacity: Some(Resources {
            cpu: 2048,
            memory_mib: 7680,
        }),
        attributes: HashMap::from([("ecs.os-type".to_owned(), "linux".to_owned())]),
        applied_generation: 1,
        tasks: vec![task(OWN_TASK, "RUNNING", "RUNNING")],
        hostname: "host-a".into(),
        last_event_sequence: 2,
    })
}

fn event(seq: u64, t: TaskState) -> A {
    A::Event(TaskEvent {
        sequence: seq,
        task: Some(t),
        at_ms: 1_700_000_003_000,
    })
}

fn msg(m: A) -> AgentMessage {
    AgentMessage { msg: Some(m) }
}

fn session(msgs: Vec<A>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        msg(m)
            .encode_length_delimited(&mut out)
            .expect("a Vec grows");
    }
    out
}

fn agent_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // single messages, as one gRPC frame carries them
    write(dir, "hello", &msg(hello(INSTANCE)).encode_to_vec())?;
    write(
        dir,
        "heartbeat",
        &msg(A::Heartbeat(Heartbeat {
            sent_at_ms: 1_700_000_000_000,
        }))
        .encode_to_vec(),
    )?;
    write(
        dir,
        "event-running",
        &msg(event(3, task(OWN_TASK, "RUNNING", "RUNNING"))).encode_to_vec(),
    )?;
    write(
        dir,
        "event-stopped",
        &msg(event(4, task(OWN_TASK, "STOPPED", "STOPPED"))).encode_to_vec(),
    )?;
    write(
        dir,
        "assignment-ack",
        &msg(A::AssignmentAck(AssignmentAck { generation: 2 })).encode_to_vec(),
    )?;
    write(dir, "empty", &AgentMessage { msg: None }.encode_to_vec())?;

    // sessions: length-delimited messages, Hello first
    write(
        dir,
        "session-lifecycle",
        &session(vec![
            hello(INSTANCE),
            A::Heartbeat(Heartbeat { sent_at_ms: 1 }),
            event(3, task(OWN_TASK, "RUNNING", "RUNNING")),
            A::AssignmentAck(AssignmentAck { generation: 2 }),
            event(4, task(OWN_TASK, "STOPPED", "STOPPED")),
            event(4, task(OWN_TASK, "STOPPED", "STOPPED")),
            A::AssignmentAck(AssignmentAck { generation: 3 }),
        ]),
    )?;
    write(
        dir,
        "session-foreign-task",
        &session(vec![
            hello(INSTANCE),
            event(3, task(FOREIGN_TASK, "STOPPED", "STOPPED")),
        ]),
    )?;
    write(
        dir,
        "session-unknown-task",
        &session(vec![
            hello(INSTANCE),
            event(
                3,
                task("t-ffffffffffffffffffffffffffffffff", "RUNNING", "RUNNING"),
            ),
            event(5, task("t-ffffffffffffffffffffffffffffffff", "STOPPED", "")),
        ]),
    )?;
    let mut reset = hello(INSTANCE);
    if let A::Hello(h) = &mut reset {
        // an agent whose state was reset, with a newer generation than the server
        h.last_event_sequence = 0;
        h.applied_generation = 9;
        h.tasks.clear();
    }
    write(
        dir,
        "session-reset-agent",
        &session(vec![reset, event(1, task(OWN_TASK, "PENDING", "RUNNING"))]),
    )?;
    // near the edges of what the store and the CLI convert (the values one
    // step further are the regressions in fuzz/regressions/)
    let mut high = hello(INSTANCE);
    if let A::Hello(h) = &mut high {
        h.last_event_sequence = i64::MAX as u64 - 3;
        h.applied_generation = i64::MAX as u64 - 16;
    }
    let mut far = task(OWN_TASK, "STOPPED", "STOPPED");
    far.started_at_ms = LAST_MS_OF_9999 - 1;
    far.stopped_at_ms = LAST_MS_OF_9999;
    far.containers[0].exit_code = Some(i32::MIN);
    far.containers[0].restart_count = u32::MAX;
    far.containers[0].network_bindings[0].host_port = u32::MAX;
    write(
        dir,
        "session-edges",
        &session(vec![
            high,
            event(i64::MAX as u64 - 2, far),
            A::AssignmentAck(AssignmentAck {
                generation: u64::MAX,
            }),
        ]),
    )?;
    write(
        dir,
        "session-wrong-instance",
        &session(vec![
            hello(OTHER_INSTANCE),
            event(3, task(OWN_TASK, "RUNNING", "RUNNING")),
        ]),
    )?;
    write(
        dir,
        "session-second-hello",
        &session(vec![hello(INSTANCE), hello(INSTANCE)]),
    )?;
    // issue 11: what a hostile agent sends (refused, cut or clamped)
    let mut lure = hello(INSTANCE);
    if let A::Hello(h) = &mut lure {
        h.capacity = Some(Resources {
            cpu: 1 << 62,
            memory_mib: 1 << 62,
        });
        h.hostname = "web-1".into();
    }
    write(
        dir,
        "session-huge-capacity",
        &session(vec![lure, A::Heartbeat(Heartbeat { sent_at_ms: 1 })]),
    )?;
    let mut escapes = hello(INSTANCE);
    if let A::Hello(h) = &mut escapes {
        h.hostname = "evil\x1b]0;pwned\x07\x1b[2K".into();
    }
    write(dir, "session-escaped-hostname", &session(vec![escapes]))?;
    let mut attributes = hello(INSTANCE);
    if let A::Hello(h) = &mut attributes {
        h.attributes = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    }
    write(dir, "session-too-many-attributes", &session(vec![attributes]))?;
    let mut long = task(OWN_TASK, "STOPPED", "STOPPED");
    long.stopped_reason = "é".repeat(1_500);
    long.containers[0].reason = "r".repeat(1_100);
    let mut bad_family = task(OWN_TASK, "RUNNING", "RUNNING");
    bad_family.family = "fam\x1b[8mhidden".into();
    let mut bad_status = task(OWN_TASK, "BOGUS", "RUNNING");
    bad_status.health_status = "GREAT".into();
    write(
        dir,
        "session-long-reason",
        &session(vec![hello(INSTANCE), event(3, long)]),
    )?;
    write(
        dir,
        "session-escaped-family",
        &session(vec![hello(INSTANCE), event(3, bad_family)]),
    )?;
    write(
        dir,
        "session-bad-status",
        &session(vec![hello(INSTANCE), event(3, bad_status)]),
    )?;
    write(
        dir,
        "session-no-hello",
        &session(vec![event(3, task(OWN_TASK, "RUNNING", "RUNNING"))]),
    )?;
    Ok(())
}

fn assignment(generation: u64, tasks: Vec<DesiredTask>) -> Vec<u8> {
    ServerMessage {
        msg: Some(S::Assignment(Assignment { generation, tasks })),
    }
    .encode_to_vec()
}

fn desired(id: &str, json: &str, status: &str) -> DesiredTask {
    DesiredTask {
        task_id: id.into(),
        task_definition_json: json.into(),
        desired_status: status.into(),
        created_at_ms: 1_700_000_000_000,
        stop_code: if status == "STOPPED" {
            "UserInitiated".into()
        } else {
            String::new()
        },
        stopped_reason: if status == "STOPPED" {
            "stopped by the operator".into()
        } else {
            String::new()
        },
        ..DesiredTask::default()
    }
}

fn server_seeds(fuzz: &Path, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let welcome = ServerMessage {
        msg: Some(S::Welcome(Welcome {
            instance_id: INSTANCE.into(),
            heartbeat_interval_ms: 10_000,
            applied_event_sequence: 7,
        })),
    };
    write(dir, "welcome", &welcome.encode_to_vec())?;
    let ack = ServerMessage {
        msg: Some(S::EventAck(EventAck { sequence: 7 })),
    };
    write(dir, "event-ack", &ack.encode_to_vec())?;
    write(dir, "assignment-empty", &assignment(5, Vec::new()))?;
    let mut late = desired(OWN_TASK, DEFINITION, "RUNNING");
    late.created_at_ms = LAST_MS_OF_9999;
    write(dir, "assignment-edges", &assignment(u64::MAX, vec![late]))?;
    write(
        dir,
        "assignment-one",
        &assignment(2, vec![desired(OWN_TASK, DEFINITION, "RUNNING")]),
    )?;
    write(
        dir,
        "assignment-stop",
        &assignment(3, vec![desired(OWN_TASK, DEFINITION, "STOPPED")]),
    )?;
    write(
        dir,
        "assignment-invalid-definition",
        &assignment(
            4,
            vec![desired(
                OWN_TASK,
                r#"{"family":"web","containerDefinitions":[]}"#,
                "RUNNING",
            )],
        ),
    )?;
    // one assignment per valid definition the repository has
    let mut n = 0;
    for f in definitions(fuzz)? {
        if f.to_string_lossy().contains("/invalid/") {
            continue;
        }
        let json = fs::read_to_string(&f)?;
        n += 1;
        let id = format!("t-{n:032x}");
        write(
            dir,
            &format!("assignment-{}", stem(&f)),
            &assignment(10 + n, vec![desired(&id, &json, "RUNNING")]),
        )?;
    }
    Ok(())
}

fn certificate_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let request = |csr: String| {
        EnrollRequest {
            activation_id: "0f8a1c2e-activation".into(),
            activation_code: "c0de-c0de-c0de".into(),
            csr_pem: csr,
            host: Some(HostFacts {
                hostname: "host-a".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                agent_version: "0.1.0".into(),
                kernel: "6.1.0".into(),
                capacity: Some(Resources {
                    cpu: 2048,
                    memory_mib: 7680,
                }),
            }),
        }
        .encode_to_vec()
    };
    // what berth-agent sends (agent/src/identity.rs): P-256, CN berth-agent
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth-agent");
    let csr = params.serialize_request(&key)?.pem()?;
    write(dir, "csr-agent", &request(csr.clone()))?;
    // the renewal berth-agent sends over its mTLS session
    write(
        dir,
        "renew-agent",
        &RenewRequest {
            csr_pem: csr.clone(),
        }
        .encode_to_vec(),
    )?;
    // a CSR that asks for more than it gets: SANs, a CA flag, another
    // instance, the admin OU
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["evil.example".to_owned(), "10.0.0.1".to_owned()])?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "i-00000000000000f1");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "admin");
    write(
        dir,
        "csr-greedy-ed25519",
        &request(params.serialize_request(&key)?.pem()?),
    )?;
    // broken ones
    let truncated: String = csr.chars().take(csr.len() / 2).collect();
    write(dir, "csr-truncated", &request(truncated))?;
    write(
        dir,
        "csr-not-base64",
        &request(
            "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n".into(),
        ),
    )?;
    write(dir, "csr-empty", &request(String::new()))?;
    Ok(())
}
