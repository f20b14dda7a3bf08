//! The rules of the fleet stream, as pure functions: what the server accepts
//! from an agent and what it refuses, before anything touches the store.
//!
//! `Fleet.Connect` ([`super::fleet`]), `Enrollment.Enroll` ([`super::enroll`])
//! and the fuzz target for agent messages (`fuzz/`) call these, so the fuzzer
//! checks the server's own order of checks rather than a copy of it.
//!
//! Rules:
//! 1. the first message of a session is a Hello for the instance of the
//!    client certificate, with counters at most [`MAX_COUNTER`], a hostname
//!    of the token-hostname charset (or none), short plain version and boot
//!    id, and at most [`MAX_ATTRIBUTES`] attributes with names of
//!    [`valid_attribute_name`] and values of at most [`MAX_ATTRIBUTE_VALUE`]
//!    bytes; its capacity is clamped to `0..=`[`MAX_CPU_UNITS`] /
//!    [`MAX_MEMORY_MIB`] (the store clamps it further to the registered
//!    figure);
//! 2. after it, Heartbeats, TaskEvents and AssignmentAcks in any order; an
//!    empty message is ignored; a second Hello ends the session;
//! 3. an event's sequence is at most [`MAX_COUNTER`]; its task id, family,
//!    statuses, stop code and containers are checked field by field
//!    ([`next_message`]); reasons (free text from Docker or the operator)
//!    are cut to [`MAX_REASON_BYTES`], and one over [`MAX_TEXT_INPUT`] is
//!    refused.
//!
//! A refusal ends the session with INVALID_ARGUMENT (or PERMISSION_DENIED,
//! FAILED_PRECONDITION) naming the field and the bound; nothing of the
//! refused message is stored. The value itself is quoted only shortened
//! and escaped, so that a hostile value does not reach logs or terminals.

use std::collections::BTreeMap;

use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::{AgentMessage, ContainerState, Hello, HostFacts, TaskEvent, TaskState};
use tonic::Status;

use super::store::HelloRecord;

/// Largest generation or event sequence an agent may send: the store keeps
/// them as signed 64-bit integers and adds to them, so half the range keeps
/// every sum exact (and no agent counts that far).
pub const MAX_COUNTER: u64 = 1 << 62;
/// Largest capacity the control plane registers: 4096 cores of 1024 units.
pub const MAX_CPU_UNITS: i64 = 4096 * 1024;
/// Largest memory the control plane registers: 64 TiB, in MiB.
pub const MAX_MEMORY_MIB: i64 = 64 * 1024 * 1024;
/// Hello attributes: at most this many ...
pub const MAX_ATTRIBUTES: usize = berth_proto::attributes::MAX_HELLO;
/// ... with names of at most this many bytes ...
pub const MAX_ATTRIBUTE_NAME: usize = 128;
/// ... and values of at most this many bytes.
pub const MAX_ATTRIBUTE_VALUE: usize = berth_proto::attributes::MAX_HELLO_VALUE;
/// A stopped reason or container reason is stored cut to this many bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// A free-text field longer than this is refused rather than cut: no agent
/// sends that much by mistake.
pub const MAX_TEXT_INPUT: usize = 64 * 1024;
/// Containers in one event (ECS' limit per task definition).
pub const MAX_CONTAINERS: usize = berth_taskdef::MAX_CONTAINERS;
/// Network bindings of one container.
pub const MAX_BINDINGS: usize = 1024;
/// Longest task id an event may name.
pub const MAX_TASK_ID: usize = 128;
/// Longest agent version, boot id, container runtime id and bind address.
pub const MAX_SHORT_FIELD: usize = 128;
/// Longest image reference and image digest.
pub const MAX_IMAGE: usize = 1024;
/// What is appended to a reason the server cut.
pub const TRUNCATED_MARK: &str = " [truncated by the control plane]";

/// Task and container statuses an agent reports.
pub const LAST_STATUSES: &[&str] = &["PENDING", "RUNNING", "STOPPED"];
/// Desired statuses an agent echoes.
pub const DESIRED_STATUSES: &[&str] = &["RUNNING", "STOPPED"];
/// Health statuses of tasks and containers.
pub const HEALTH_STATUSES: &[&str] = &["HEALTHY", "UNHEALTHY", "UNKNOWN"];
/// ECS stop codes.
pub const STOP_CODES: &[&str] = &[
    "TaskFailedToStart",
    "EssentialContainerExited",
    "UserInitiated",
    "ServiceSchedulerInitiated",
    "SpotInterruption",
    "TerminationNotice",
];
/// Port binding protocols.
pub const PROTOCOLS: &[&str] = &["tcp", "udp"];

/// Why the server ends a session on a message (or refuses an enrollment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    FirstMessageNotHello,
    /// The Hello names another instance than the client certificate.
    WrongInstance {
        named: String,
        certificate: String,
    },
    HelloCounterOutOfRange {
        applied_generation: u64,
        last_event_sequence: u64,
    },
    SecondHello,
    EventSequenceOutOfRange(u64),
    /// A field out of its bounds: `field` is its path in the message
    /// (`Hello.attributes["k"]`, `event 7: task.containers[2].name`),
    /// `problem` says what is wrong and what is allowed.
    Invalid {
        field: String,
        problem: String,
    },
}

impl Refusal {
    /// The gRPC status the session ends with.
    pub fn status(&self) -> Status {
        match self {
            Refusal::FirstMessageNotHello => {
                Status::failed_precondition("the first message of a session must be Hello")
            }
            Refusal::WrongInstance { named, certificate } => Status::permission_denied(format!(
                "Hello names instance {} but the client certificate is for {certificate}",
                shown(named)
            )),
            Refusal::HelloCounterOutOfRange {
                applied_generation,
                last_event_sequence,
            } => Status::invalid_argument(format!(
                "Hello: applied_generation {applied_generation} / last_event_sequence {last_event_sequence} out of range (at most {MAX_COUNTER})"
            )),
            Refusal::SecondHello => {
                Status::failed_precondition("Hello may only be the first message of a session")
            }
            Refusal::EventSequenceOutOfRange(sequence) => Status::invalid_argument(format!(
                "event sequence {sequence} out of range (at most {MAX_COUNTER})"
            )),
            Refusal::Invalid { field, problem } => {
                Status::invalid_argument(format!("{field}: {problem}"))
            }
        }
    }
}

/// A value from an agent as messages and logs quote it: at most 64
/// characters, escaped (`"evil\u{1b}]0;…"`), so that control characters
/// never reach a log or a terminal.
pub use berth_proto::text::shown;

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Whether `s` is a task family or container name: 1 to 255 ASCII letters,
/// digits, `_` and `-` (the ECS rule).
pub fn valid_family(s: &str) -> bool {
    (1..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `s` may be a Hello attribute name: 1 to [`MAX_ATTRIBUTE_NAME`]
/// ASCII letters, digits and `_ - . @ / :` (the ECS attribute rule).
pub fn valid_attribute_name(s: &str) -> bool {
    (1..=MAX_ATTRIBUTE_NAME).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@/:".contains(&b))
}

/// A task id: 1 to [`MAX_TASK_ID`] ASCII letters, digits, `_ - .`.
fn valid_task_id(s: &str) -> bool {
    (1..=MAX_TASK_ID).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// At most `max` bytes and no control characters.
fn check_plain(field: &str, s: &str, max: usize) -> Result<(), Refusal> {
    if s.len() > max {
        return Err(invalid(
            field,
            format!("{} bytes, at most {max} are allowed", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("{} holds control characters", shown(s)),
        ));
    }
    Ok(())
}

/// Empty or one of `allowed`.
fn check_enum(field: &str, s: &str, allowed: &[&str]) -> Result<(), Refusal> {
    if s.is_empty() || allowed.contains(&s) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{} is not one of {}", shown(s), allowed.join(", ")),
        ))
    }
}

/// A host name as enrollment and Hello accept it: empty (not reported) or
/// the token-hostname charset (1 to 253 letters, digits, `.`, `-`, `_`).
fn check_hostname(field: &str, s: &str) -> Result<(), Refusal> {
    if s.is_empty() || super::valid_hostname(s) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{} is not a host name: use 1 to 253 letters, digits, '.', '-' or '_'",
                shown(s)
            ),
        ))
    }
}

/// A free-text reason: refused over [`MAX_TEXT_INPUT`], cut to
/// [`MAX_REASON_BYTES`] (at a character boundary, marked) otherwise.
/// Returns whether it was cut.
fn bound_reason(field: &str, s: &mut String) -> Result<bool, Refusal> {
    if s.len() > MAX_TEXT_INPUT {
        return Err(invalid(
            field,
            format!(
                "{} bytes, at most {MAX_TEXT_INPUT} are accepted (and {MAX_REASON_BYTES} kept)",
                s.len()
            ),
        ));
    }
    if s.len() <= MAX_REASON_BYTES {
        return Ok(false);
    }
    let mut end = MAX_REASON_BYTES - TRUNCATED_MARK.len();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(TRUNCATED_MARK);
    Ok(true)
}

/// What enrollment registers of a host: its name and its capacity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrolledHost {
    pub hostname: String,
    /// CPU units; 0 when the agent did not say (an older agent): the first
    /// Hello's figure is registered then.
    pub cpu: i64,
    /// MiB; 0 when the agent did not say.
    pub memory_mib: i64,
}

/// Checks the host facts of an enrollment: the host name (token-hostname
/// charset) and the capacity (`0..=`[`MAX_CPU_UNITS`] units and
/// `0..=`[`MAX_MEMORY_MIB`] MiB). Out of range is refused, not clamped:
/// enrollment is where the registered capacity comes from.
pub fn enrolled_host(host: Option<&HostFacts>) -> Result<EnrolledHost, Refusal> {
    let Some(host) = host else {
        return Ok(EnrolledHost::default());
    };
    let hostname = host.hostname.trim();
    check_hostname("host.hostname", hostname)?;
    let capacity = host.capacity.unwrap_or_default();
    for (field, value, max, unit) in [
        (
            "host.capacity.cpu",
            capacity.cpu,
            MAX_CPU_UNITS,
            "CPU units (4096 cores)",
        ),
        (
            "host.capacity.memory_mib",
            capacity.memory_mib,
            MAX_MEMORY_MIB,
            "MiB (64 TiB)",
        ),
    ] {
        if !(0..=max).contains(&value) {
            return Err(invalid(
                field,
                format!("{value} is out of range: 0 to {max} {unit}"),
            ));
        }
    }
    Ok(EnrolledHost {
        hostname: hostname.to_owned(),
        cpu: capacity.cpu,
        memory_mib: capacity.memory_mib,
    })
}

/// Checks the first message of a session from `instance_id` (the client
/// certificate's); returns its Hello.
pub fn first_message<'a>(msg: &'a AgentMessage, instance_id: &str) -> Result<&'a Hello, Refusal> {
    let Some(AgentMsg::Hello(hello)) = &msg.msg else {
        return Err(Refusal::FirstMessageNotHello);
    };
    if hello.instance_id != instance_id {
        return Err(Refusal::WrongInstance {
            named: hello.instance_id.clone(),
            certificate: instance_id.to_owned(),
        });
    }
    if hello.applied_generation > MAX_COUNTER || hello.last_event_sequence > MAX_COUNTER {
        return Err(Refusal::HelloCounterOutOfRange {
            applied_generation: hello.applied_generation,
            last_event_sequence: hello.last_event_sequence,
        });
    }
    check_hostname("Hello.hostname", &hello.hostname)?;
    check_plain("Hello.agent_version", &hello.agent_version, MAX_SHORT_FIELD)?;
    check_plain("Hello.boot_id", &hello.boot_id, MAX_SHORT_FIELD)?;
    if hello.attributes.len() > MAX_ATTRIBUTES {
        return Err(invalid(
            "Hello.attributes",
            format!(
                "{} attributes, at most {MAX_ATTRIBUTES} are allowed",
                hello.attributes.len()
            ),
        ));
    }
    for (name, value) in &hello.attributes {
        if !valid_attribute_name(name) {
            return Err(invalid(
                format!("Hello.attributes[{}]", shown(name)),
                format!(
                    "not an attribute name: use 1 to {MAX_ATTRIBUTE_NAME} letters, digits, '_', '-', '.', '@', '/' or ':'"
                ),
            ));
        }
        check_plain(
            &format!("Hello.attributes[{name:?}]"),
            value,
            MAX_ATTRIBUTE_VALUE,
        )?;
    }
    Ok(hello)
}

/// What the store records of a Hello received at `at_ms`. The capacity is
/// clamped to the plausible range here, and to the registered capacity by
/// the store.
pub fn hello_record(hello: &Hello, at_ms: i64) -> HelloRecord {
    let capacity = hello.capacity.unwrap_or_default();
    HelloRecord {
        hostname: hello.hostname.clone(),
        agent_version: hello.agent_version.clone(),
        boot_id: hello.boot_id.clone(),
        cpu: capacity.cpu.clamp(0, MAX_CPU_UNITS),
        memory_mib: capacity.memory_mib.clamp(0, MAX_MEMORY_MIB),
        attributes: hello
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        at_ms,
        applied_generation: hello.applied_generation,
        last_event_sequence: hello.last_event_sequence,
    }
}

/// An event that passed the checks, as it may be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedEvent {
    /// The event with its reasons cut to [`MAX_REASON_BYTES`].
    pub event: TaskEvent,
    /// The fields that were cut (`task.stopped_reason`,
    /// `task.containers[0].reason`).
    pub truncated: Vec<String>,
}

/// What to do with a message after the Hello.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// An empty message: nothing.
    Ignore,
    Heartbeat,
    /// The agent applied the assignment of this generation.
    AssignmentAck(u64),
    /// Store the event (at most once), then acknowledge its sequence.
    Event(Box<CheckedEvent>),
}

/// Checks a message after the Hello.
pub fn next_message(msg: &AgentMessage) -> Result<Step, Refusal> {
    match &msg.msg {
        None => Ok(Step::Ignore),
        Some(AgentMsg::Hello(_)) => Err(Refusal::SecondHello),
        Some(AgentMsg::Heartbeat(_)) => Ok(Step::Heartbeat),
        Some(AgentMsg::AssignmentAck(ack)) => Ok(Step::AssignmentAck(ack.generation)),
        Some(AgentMsg::Event(event)) => {
            if event.sequence > MAX_COUNTER {
                return Err(Refusal::EventSequenceOutOfRange(event.sequence));
            }
            let mut event = event.clone();
            let mut truncated = Vec::new();
            if let Some(task) = event.task.as_mut() {
                check_task(event.sequence, task, &mut truncated)?;
            }
            Ok(Step::Event(Box::new(CheckedEvent { event, truncated })))
        }
    }
}

/// Field by field checks of an event's task state; cuts its reasons.
fn check_task(
    sequence: u64,
    t: &mut TaskState,
    truncated: &mut Vec<String>,
) -> Result<(), Refusal> {
    let at = |field: &str| format!("event {sequence}: task.{field}");
    if !t.task_id.is_empty() && !valid_task_id(&t.task_id) {
        return Err(invalid(
            at("task_id"),
            format!(
                "{} is not a task id: 1 to {MAX_TASK_ID} letters, digits, '_', '-' or '.'",
                shown(&t.task_id)
            ),
        ));
    }
    if !t.family.is_empty() && !valid_family(&t.family) {
        return Err(invalid(
            at("family"),
            format!(
                "{} is not a family: 1 to 255 letters, digits, '_' or '-'",
                shown(&t.family)
            ),
        ));
    }
    check_enum(&at("last_status"), &t.last_status, LAST_STATUSES)?;
    check_enum(&at("desired_status"), &t.desired_status, DESIRED_STATUSES)?;
    check_enum(&at("health_status"), &t.health_status, HEALTH_STATUSES)?;
    check_enum(&at("stop_code"), &t.stop_code, STOP_CODES)?;
    if bound_reason(&at("stopped_reason"), &mut t.stopped_reason)? {
        truncated.push("task.stopped_reason".to_owned());
    }
    if t.containers.len() > MAX_CONTAINERS {
        return Err(invalid(
            at("containers"),
            format!(
                "{} containers, at most {MAX_CONTAINERS} are allowed",
                t.containers.len()
            ),
        ));
    }
    for (i, c) in t.containers.iter_mut().enumerate() {
        check_container(&at(&format!("containers[{i}]")), c, i, truncated)?;
    }
    Ok(())
}

fn check_container(
    at: &str,
    c: &mut ContainerState,
    index: usize,
    truncated: &mut Vec<String>,
) -> Result<(), Refusal> {
    let field = |name: &str| format!("{at}.{name}");
    if !c.name.is_empty() && !valid_family(&c.name) {
        return Err(invalid(
            field("name"),
            format!(
                "{} is not a container name: 1 to 255 letters, digits, '_' or '-'",
                shown(&c.name)
            ),
        ));
    }
    check_plain(&field("image"), &c.image, MAX_IMAGE)?;
    check_plain(&field("image_digest"), &c.image_digest, MAX_IMAGE)?;
    check_plain(&field("runtime_id"), &c.runtime_id, MAX_SHORT_FIELD)?;
    check_enum(&field("last_status"), &c.last_status, LAST_STATUSES)?;
    check_enum(&field("health_status"), &c.health_status, HEALTH_STATUSES)?;
    if bound_reason(&field("reason"), &mut c.reason)? {
        truncated.push(format!("task.containers[{index}].reason"));
    }
    if c.network_bindings.len() > MAX_BINDINGS {
        return Err(invalid(
            field("network_bindings"),
            format!(
                "{} bindings, at most {MAX_BINDINGS} are allowed",
                c.network_bindings.len()
            ),
        ));
    }
    for (j, b) in c.network_bindings.iter().enumerate() {
        check_enum(
            &field(&format!("network_bindings[{j}].protocol")),
            &b.protocol,
            PROTOCOLS,
        )?;
        check_plain(
            &field(&format!("network_bindings[{j}].bind_ip")),
            &b.bind_ip,
            MAX_SHORT_FIELD,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{AssignmentAck, Heartbeat};

    fn hello(instance: &str, generation: u64, sequence: u64) -> AgentMessage {
        AgentMessage {
            msg: Some(AgentMsg::Hello(Hello {
                instance_id: instance.to_owned(),
                applied_generation: generation,
                last_event_sequence: sequence,
                ..Hello::default()
            })),
        }
    }

    #[test]
    fn the_first_message_must_be_a_hello_for_the_certificates_instance() {
        assert_eq!(
            first_message(&hello("i-1", 3, 4), "i-1").map(|h| h.applied_generation),
            Ok(3)
        );
        assert_eq!(
            first_message(&hello("i-2", 0, 0), "i-1"),
            Err(Refusal::WrongInstance {
                named: "i-2".into(),
                certificate: "i-1".into()
            })
        );
        let heartbeat = AgentMessage {
            msg: Some(AgentMsg::Heartbeat(Heartbeat::default())),
        };
        assert_eq!(
            first_message(&heartbeat, "i-1"),
            Err(Refusal::FirstMessageNotHello)
        );
        assert_eq!(
            first_message(&AgentMessage { msg: None }, "i-1"),
            Err(Refusal::FirstMessageNotHello)
        );
    }

    #[test]
    fn counters_past_the_limit_are_refused() {
        assert!(first_message(&hello("i-1", MAX_COUNTER, MAX_COUNTER), "i-1").is_ok());
        assert!(matches!(
            first_message(&hello("i-1", MAX_COUNTER + 1, 0), "i-1"),
            Err(Refusal::HelloCounterOutOfRange { .. })
        ));
        assert!(matches!(
            first_message(&hello("i-1", 0, u64::MAX), "i-1"),
            Err(Refusal::HelloCounterOutOfRange { .. })
        ));
        let event = |sequence| AgentMessage {
            msg: Some(AgentMsg::Event(TaskEvent {
                sequence,
                ..TaskEvent::default()
            })),
        };
        assert!(matches!(
            next_message(&event(MAX_COUNTER)),
            Ok(Step::Event(_))
        ));
        assert_eq!(
            next_message(&event(MAX_COUNTER + 1)),
            Err(Refusal::EventSequenceOutOfRange(MAX_COUNTER + 1))
        );
    }

    fn with_hello(f: impl FnOnce(&mut Hello)) -> AgentMessage {
        let mut msg = hello("i-1", 0, 0);
        if let Some(AgentMsg::Hello(h)) = msg.msg.as_mut() {
            f(h);
        }
        msg
    }

    fn field_of(r: Result<impl std::fmt::Debug, Refusal>) -> String {
        match r {
            Err(Refusal::Invalid { field, .. }) => field,
            other => panic!("expected a refused field, got {other:?}"),
        }
    }

    #[test]
    fn hello_hostnames_use_the_token_hostname_charset() {
        for ok in ["", "vm", "web-1.example_a"] {
            let m = with_hello(|h| h.hostname = ok.into());
            assert!(first_message(&m, "i-1").is_ok(), "{ok:?}");
        }
        let escaped = with_hello(|h| h.hostname = "evil\x1b]0;pwned\x07".into());
        let refusal = first_message(&escaped, "i-1").expect_err("escape");
        assert_eq!(field_of(Err::<(), _>(refusal.clone())), "Hello.hostname");
        // The message quotes the value escaped, never raw.
        let message = refusal.status().message().to_owned();
        assert!(!message.contains('\x1b'), "{message:?}");
        assert!(message.contains("\\u{1b}"), "{message:?}");
        let long = with_hello(|h| h.hostname = "a".repeat(254));
        assert_eq!(field_of(first_message(&long, "i-1")), "Hello.hostname");
    }

    #[test]
    fn hello_attributes_are_bounded() {
        let many = with_hello(|h| {
            h.attributes = (0..=MAX_ATTRIBUTES)
                .map(|i| (format!("k{i}"), "v".to_owned()))
                .collect();
        });
        let r = first_message(&many, "i-1").expect_err("too many");
        assert!(
            r.status().message().contains("65 attributes, at most 64"),
            "{r:?}"
        );
        let big = with_hello(|h| {
            h.attributes = [("k".to_owned(), "v".repeat(2_000_000))].into();
        });
        assert_eq!(
            field_of(first_message(&big, "i-1")),
            "Hello.attributes[\"k\"]"
        );
        let name = with_hello(|h| {
            h.attributes = [("a b\n".to_owned(), "v".to_owned())].into();
        });
        assert!(field_of(first_message(&name, "i-1")).starts_with("Hello.attributes["));
        let fine = with_hello(|h| {
            h.attributes = [
                ("ecs.os-type".to_owned(), "linux".to_owned()),
                ("zone".to_owned(), "v".repeat(MAX_ATTRIBUTE_VALUE)),
            ]
            .into();
            h.agent_version = "0.1.0".into();
            h.boot_id = "0b5e6a4c-1b2a-4c55-9a43-1f0e0d9c8b7a".into();
        });
        assert!(first_message(&fine, "i-1").is_ok());
        let version = with_hello(|h| h.agent_version = "x".repeat(MAX_SHORT_FIELD + 1));
        assert_eq!(
            field_of(first_message(&version, "i-1")),
            "Hello.agent_version"
        );
    }

    #[test]
    fn hello_capacity_is_clamped_to_the_plausible_range() {
        let m = with_hello(|h| {
            h.capacity = Some(berth_proto::v1::Resources {
                cpu: 1 << 62,
                memory_mib: -5,
            });
        });
        let Some(AgentMsg::Hello(h)) = &m.msg else {
            panic!("hello")
        };
        let r = hello_record(h, 1);
        assert_eq!((r.cpu, r.memory_mib), (MAX_CPU_UNITS, 0));
    }

    #[test]
    fn enrollment_capacity_and_hostname_are_bounded() {
        let facts = |hostname: &str, cpu, memory_mib| HostFacts {
            hostname: hostname.into(),
            capacity: Some(berth_proto::v1::Resources { cpu, memory_mib }),
            ..HostFacts::default()
        };
        assert_eq!(
            enrolled_host(Some(&facts(" vm\n", 4096, 8000))),
            Ok(EnrolledHost {
                hostname: "vm".into(),
                cpu: 4096,
                memory_mib: 8000
            })
        );
        assert_eq!(enrolled_host(None), Ok(EnrolledHost::default()));
        assert_eq!(
            field_of(enrolled_host(Some(&facts("vm", MAX_CPU_UNITS + 1, 1)))),
            "host.capacity.cpu"
        );
        assert_eq!(
            field_of(enrolled_host(Some(&facts("vm", 1, -1)))),
            "host.capacity.memory_mib"
        );
        assert_eq!(
            field_of(enrolled_host(Some(&facts("e\x1b[2K", 1, 1)))),
            "host.hostname"
        );
    }

    fn task_event(f: impl FnOnce(&mut TaskState)) -> AgentMessage {
        let mut task = TaskState {
            task_id: "0123456789abcdef0123456789abcdef".into(),
            family: "web".into(),
            last_status: "RUNNING".into(),
            desired_status: "RUNNING".into(),
            health_status: "HEALTHY".into(),
            containers: vec![ContainerState {
                name: "web".into(),
                image: "nginx:1".into(),
                last_status: "RUNNING".into(),
                network_bindings: vec![berth_proto::v1::NetworkBinding {
                    container_port: 80,
                    host_port: 8080,
                    protocol: "tcp".into(),
                    bind_ip: "0.0.0.0".into(),
                }],
                ..ContainerState::default()
            }],
            ..TaskState::default()
        };
        f(&mut task);
        AgentMessage {
            msg: Some(AgentMsg::Event(TaskEvent {
                sequence: 7,
                task: Some(task),
                at_ms: 1,
            })),
        }
    }

    #[test]
    fn event_fields_are_checked_before_anything_is_stored() {
        assert!(matches!(
            next_message(&task_event(|_| {})),
            Ok(Step::Event(_))
        ));
        type Change = Box<dyn Fn(&mut TaskState)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "event 7: task.task_id",
                Box::new(|t| t.task_id = "x".repeat(129)),
            ),
            (
                "event 7: task.task_id",
                Box::new(|t| t.task_id = "a\nb".into()),
            ),
            (
                "event 7: task.family",
                Box::new(|t| t.family = "fam\x1b[8m".into()),
            ),
            (
                "event 7: task.family",
                Box::new(|t| t.family = "f".repeat(256)),
            ),
            (
                "event 7: task.last_status",
                Box::new(|t| t.last_status = "BOGUS".into()),
            ),
            (
                "event 7: task.desired_status",
                Box::new(|t| t.desired_status = "PENDING".into()),
            ),
            (
                "event 7: task.health_status",
                Box::new(|t| t.health_status = "GREAT".into()),
            ),
            (
                "event 7: task.stop_code",
                Box::new(|t| t.stop_code = "Whatever".into()),
            ),
            (
                "event 7: task.stopped_reason",
                Box::new(|t| t.stopped_reason = "A".repeat(3_500_000)),
            ),
            (
                "event 7: task.containers",
                Box::new(|t| {
                    let c = t.containers[0].clone();
                    t.containers = vec![c; MAX_CONTAINERS + 1];
                }),
            ),
            (
                "event 7: task.containers[0].name",
                Box::new(|t| t.containers[0].name = "a b".into()),
            ),
            (
                "event 7: task.containers[0].image",
                Box::new(|t| t.containers[0].image = "i".repeat(MAX_IMAGE + 1)),
            ),
            (
                "event 7: task.containers[0].health_status",
                Box::new(|t| t.containers[0].health_status = "?".into()),
            ),
            (
                "event 7: task.containers[0].network_bindings",
                Box::new(|t| {
                    let b = t.containers[0].network_bindings[0].clone();
                    t.containers[0].network_bindings = vec![b; MAX_BINDINGS + 1];
                }),
            ),
            (
                "event 7: task.containers[0].network_bindings[0].protocol",
                Box::new(|t| t.containers[0].network_bindings[0].protocol = "sctp".into()),
            ),
        ];
        for (field, change) in cases {
            assert_eq!(field_of(next_message(&task_event(change))), field);
        }
    }

    #[test]
    fn long_reasons_are_cut_and_marked() {
        let m = task_event(|t| {
            t.stopped_reason = "é".repeat(5_000);
            t.containers[0].reason = "r".repeat(MAX_REASON_BYTES);
        });
        let Ok(Step::Event(checked)) = next_message(&m) else {
            panic!("accepted")
        };
        let t = checked.event.task.expect("task");
        assert!(t.stopped_reason.len() <= MAX_REASON_BYTES);
        assert!(t.stopped_reason.ends_with(TRUNCATED_MARK));
        // Exactly at the bound: kept as it is.
        assert_eq!(t.containers[0].reason.len(), MAX_REASON_BYTES);
        assert_eq!(checked.truncated, vec!["task.stopped_reason".to_owned()]);
    }

    #[test]
    fn after_the_hello() {
        assert_eq!(next_message(&hello("i-1", 0, 0)), Err(Refusal::SecondHello));
        assert_eq!(next_message(&AgentMessage { msg: None }), Ok(Step::Ignore));
        let ack = AgentMessage {
            msg: Some(AgentMsg::AssignmentAck(AssignmentAck { generation: 7 })),
        };
        assert_eq!(next_message(&ack), Ok(Step::AssignmentAck(7)));
        assert_eq!(
            Refusal::SecondHello.status().code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            Refusal::EventSequenceOutOfRange(1).status().code(),
            tonic::Code::InvalidArgument
        );
    }
}
