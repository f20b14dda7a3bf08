//! Task-definition parsing and validation (`berth_taskdef::parse`), as the
//! CLI, the control plane and the agent run it on text they did not write.
//!
//! Any bytes: not UTF-8 is what the callers refuse before parsing (they hold
//! a `String`). Must never panic; an accepted definition must round-trip
//! through JSON (see `berth_fuzz::check_definition`) and must be something
//! the agent can plan without panicking (`berth_fuzz::agent_runs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(parsed) = berth_fuzz::check_definition(text) {
        berth_fuzz::agent_runs(&parsed.definition, berth_fuzz::OWN_TASK);
    }
});
