//! Every agent→server message of the fleet stream (`AgentMessage`: Hello,
//! Heartbeat, TaskEvent, AssignmentAck), as the control plane handles it.
//!
//! The input is read twice:
//! 1. as one `AgentMessage` (what a gRPC frame carries): it must decode or
//!    fail cleanly, and re-encode to a message that decodes to the same;
//! 2. as a session: a sequence of length-delimited `AgentMessage`s driven
//!    through `berth_fuzz::Fleet`, which applies them to an in-memory store
//!    exactly as `control/src/server/fleet.rs` does (Hello first and for this
//!    instance, events at most once, acks, heartbeats), then reads back
//!    everything the admin API and the CLI would show, and checks that the
//!    operator can still run, stop and deregister.
#![no_main]

use berth_proto::v1::AgentMessage;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// More messages than this add time, not coverage.
const MAX_MESSAGES: usize = 32;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = AgentMessage::decode(data) {
        let again = AgentMessage::decode(msg.encode_to_vec().as_slice())
            .expect("a decoded message re-encodes to a decodable one");
        assert_eq!(again, msg, "decode(encode(m)) != m");
    }

    let mut buf = data;
    let mut session = Vec::new();
    while !buf.is_empty() && session.len() < MAX_MESSAGES {
        match AgentMessage::decode_length_delimited(&mut buf) {
            Ok(m) => session.push(m),
            Err(_) => break,
        }
    }
    // The server refuses a session whose first message is not a Hello
    // before it touches the store; so does this target, cheaply.
    if !matches!(
        session.first(),
        Some(AgentMessage {
            msg: Some(berth_proto::v1::agent_message::Msg::Hello(_))
        })
    ) {
        return;
    }
    let mut fleet = berth_fuzz::Fleet::new();
    for m in &session {
        if fleet.handle(m).is_err() {
            break;
        }
    }
    fleet.finish();
});
