//! The rules of the fleet stream, as pure functions: what the server accepts
//! from an agent and what it refuses, before anything touches the store.
//!
//! `Fleet.Connect` ([`super::fleet`]) and the fuzz target for agent messages
//! (`fuzz/`) both call these, so the fuzzer checks the server's own order of
//! checks rather than a copy of it.
//!
//! Rules:
//! 1. the first message of a session is a Hello for the instance of the
//!    client certificate, with counters at most [`MAX_COUNTER`];
//! 2. after it, Heartbeats, TaskEvents and AssignmentAcks in any order; an
//!    empty message is ignored; a second Hello ends the session;
//! 3. an event's sequence is at most [`MAX_COUNTER`].

use std::collections::BTreeMap;

use berth_proto::v1::agent_message::Msg as AgentMsg;
use berth_proto::v1::{AgentMessage, Hello, TaskEvent};
use tonic::Status;

use super::store::HelloRecord;

/// Largest generation or event sequence an agent may send: the store keeps
/// them as signed 64-bit integers and adds to them, so half the range keeps
/// every sum exact (and no agent counts that far).
pub const MAX_COUNTER: u64 = 1 << 62;

/// Why the server ends a session on a message.
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
}

impl Refusal {
    /// The gRPC status the session ends with.
    pub fn status(&self) -> Status {
        match self {
            Refusal::FirstMessageNotHello => {
                Status::failed_precondition("the first message of a session must be Hello")
            }
            Refusal::WrongInstance { named, certificate } => Status::permission_denied(format!(
                "Hello names instance {named:?} but the client certificate is for {certificate}"
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
        }
    }
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
    Ok(hello)
}

/// What the store records of a Hello received at `at_ms`.
pub fn hello_record(hello: &Hello, at_ms: i64) -> HelloRecord {
    let capacity = hello.capacity.unwrap_or_default();
    HelloRecord {
        hostname: hello.hostname.clone(),
        agent_version: hello.agent_version.clone(),
        boot_id: hello.boot_id.clone(),
        cpu: capacity.cpu.max(0),
        memory_mib: capacity.memory_mib.max(0),
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

/// What to do with a message after the Hello.
#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    /// An empty message: nothing.
    Ignore,
    Heartbeat,
    /// The agent applied the assignment of this generation.
    AssignmentAck(u64),
    /// Store the event (at most once), then acknowledge its sequence.
    Event(&'a TaskEvent),
}

/// Checks a message after the Hello.
pub fn next_message(msg: &AgentMessage) -> Result<Step<'_>, Refusal> {
    match &msg.msg {
        None => Ok(Step::Ignore),
        Some(AgentMsg::Hello(_)) => Err(Refusal::SecondHello),
        Some(AgentMsg::Heartbeat(_)) => Ok(Step::Heartbeat),
        Some(AgentMsg::AssignmentAck(ack)) => Ok(Step::AssignmentAck(ack.generation)),
        Some(AgentMsg::Event(event)) => {
            if event.sequence > MAX_COUNTER {
                Err(Refusal::EventSequenceOutOfRange(event.sequence))
            } else {
                Ok(Step::Event(event))
            }
        }
    }
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
