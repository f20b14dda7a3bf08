//! Every server→agent message (`ServerMessage`: Welcome, Assignment,
//! EventAck), as the agent handles it: it trusts no input, so every
//! `DesiredTask.task_definition_json` is parsed again, and what parses is
//! planned (policy, start order, ports, volumes) as the manager and the
//! supervisor do before they call Docker. Desired tasks must also survive
//! the agent's JSON state file unchanged.
#![no_main]

use berth_proto::v1::ServerMessage;
use berth_proto::v1::server_message::Msg;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = ServerMessage::decode(data) else {
        return;
    };
    let again = ServerMessage::decode(msg.encode_to_vec().as_slice())
        .expect("a decoded message re-encodes to a decodable one");
    assert_eq!(again, msg, "decode(encode(m)) != m");
    match &msg.msg {
        Some(Msg::Assignment(a)) => berth_fuzz::agent_receives(a),
        Some(Msg::Welcome(w)) => {
            // session.rs: the heartbeat interval comes from the server
            let _ = std::time::Duration::from_millis(u64::from(w.heartbeat_interval_ms));
        }
        Some(Msg::EventAck(_)) | None => {}
    }
});
