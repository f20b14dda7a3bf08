//! What the control plane applied: the agent events in its log.
//!
//! # Background
//! SPEC §4 wants every state change seen exactly once (in effect) by the
//! control plane. The server applies an agent event only when its sequence
//! number is above the instance's `last_event_seq` (one transaction) and
//! logs each event it applies, at `info`:
//!
//! ```text
//! … INFO session{instance_id=i-… peer=…}:task{task_id=…}: berth_control::server::fleet: task event applied sequence=7 last_status=RUNNING
//! ```
//!
//! A replay it ignores is logged at `debug` only. So the `task event
//! applied` lines of all the server's logs (one per run) are the history of
//! what changed the control plane's state.
//!
//! # Limitations
//! A log is not an API: a server killed between committing an event and
//! writing its line would hide one applied event (the window is a few
//! microseconds, and the tests kill the server while it is idle). An admin
//! endpoint listing the applied events would be the sturdier observable.

use std::collections::BTreeMap;

use crate::{Agent, DEADLINE, Server, wait_for};

/// One `task event applied` line of the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvent {
    pub sequence: u64,
    pub task_id: String,
    pub last_status: String,
}

/// The events the server applied for `instance_id`, in log order across
/// the server's runs.
pub fn applied_events(server: &Server, instance_id: &str) -> Vec<AppliedEvent> {
    let mut events = Vec::new();
    for path in server.log_paths() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        events.extend(parse_applied(&text, instance_id));
    }
    events
}

fn parse_applied(log: &str, instance_id: &str) -> Vec<AppliedEvent> {
    log.lines()
        .filter(|l| l.contains("task event applied"))
        .filter(|l| field(l, "instance_id") == Some(instance_id))
        .filter_map(|l| {
            Some(AppliedEvent {
                sequence: field(l, "sequence")?.parse().ok()?,
                task_id: field(l, "task_id")?.to_string(),
                last_status: field(l, "last_status")?.to_string(),
            })
        })
        .collect()
}

/// The value of `key=value` in a log line (up to a space, `}` or `,`).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(pos) = line[from..].find(&pat) {
        let at = from + pos;
        // A whole key: not the tail of a longer one.
        let boundary = at == 0
            || !line[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let start = at + pat.len();
        if boundary {
            let rest = &line[start..];
            let end = rest.find([' ', '}', ',']).unwrap_or(rest.len());
            return Some(rest[..end].trim_matches('"'));
        }
        from = start;
    }
    None
}

/// Waits until the agent's outbox is empty (the control plane acknowledged
/// everything), then checks the server's log: the sequences applied for the
/// agent's instance are exactly `1..=lastEventSequence` of the agent, each
/// once, in order. Returns the applied events.
pub fn assert_every_event_applied_once(server: &Server, agent: &Agent) -> Vec<AppliedEvent> {
    let instance_id = agent.instance_id().to_string();
    let last = wait_for(
        "the agent's outbox to drain (every event acknowledged)",
        DEADLINE,
        || {
            let meta = agent.api_get("/v1/metadata");
            if meta["pendingEvents"] == 0 && meta["connected"] == true {
                meta["lastEventSequence"]
                    .as_u64()
                    .ok_or_else(|| format!("no lastEventSequence: {meta}"))
            } else {
                Err(format!("metadata: {meta}"))
            }
        },
    );
    // Acknowledged means applied and logged before the ack was sent.
    let applied = applied_events(server, &instance_id);
    let seqs: Vec<u64> = applied.iter().map(|e| e.sequence).collect();
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &seqs {
        *counts.entry(*s).or_default() += 1;
    }
    let twice: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, _)| *s)
        .collect();
    let missing: Vec<u64> = (1..=last).filter(|s| !counts.contains_key(s)).collect();
    let expected: Vec<u64> = (1..=last).collect();
    assert!(
        seqs == expected,
        "the control plane must apply each of the agent's events 1..={last} exactly once, in order\n\
         applied more than once: {twice:?}\nnever applied: {missing:?}\napplied in log order: {seqs:?}\n\
         server logs: {:?}",
        server.log_paths()
    );
    applied
}

/// The statuses applied for one task, in order.
pub fn statuses_of(applied: &[AppliedEvent], task_id: &str) -> Vec<String> {
    applied
        .iter()
        .filter(|e| e.task_id == task_id)
        .map(|e| e.last_status.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-11-27T08:00:00.000000Z  INFO session{instance_id=i-abc peer=Some(127.0.0.1:40000)}:task{task_id=t1}: berth_control::server::fleet: task event applied sequence=1 last_status=PENDING
2026-11-27T08:00:00.100000Z  INFO session{instance_id=i-other peer=Some(127.0.0.1:40001)}:task{task_id=t9}: berth_control::server::fleet: task event applied sequence=1 last_status=PENDING
2026-11-27T08:00:00.200000Z  INFO session{instance_id=i-abc peer=Some(127.0.0.1:40000)}: berth_control::server::fleet: agent connected
2026-11-27T08:00:00.300000Z  INFO session{instance_id=i-abc peer=Some(127.0.0.1:40000)}:task{task_id=t1}: berth_control::server::fleet: task event applied sequence=2 last_status=RUNNING
";

    #[test]
    fn applied_lines_of_one_instance_are_parsed() {
        let got = parse_applied(LOG, "i-abc");
        assert_eq!(
            got,
            vec![
                AppliedEvent {
                    sequence: 1,
                    task_id: "t1".into(),
                    last_status: "PENDING".into()
                },
                AppliedEvent {
                    sequence: 2,
                    task_id: "t1".into(),
                    last_status: "RUNNING".into()
                },
            ]
        );
    }

    #[test]
    fn fields_match_whole_keys_only() {
        let line = "x last_event_sequence=9 sequence=3 y";
        assert_eq!(field(line, "sequence"), Some("3"));
        assert_eq!(field(line, "last_event_sequence"), Some("9"));
        assert_eq!(field(line, "missing"), None);
    }
}
