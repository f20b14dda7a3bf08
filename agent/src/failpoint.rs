//! Failpoints for the fault-injection tests: `BERTH_FAILPOINTS=name,name`
//! makes the agent abort (as a SIGKILL would end it) when it reaches one of
//! the named points. Unset in production, it costs one environment lookup
//! at start.
//!
//! Points: `after-pull` (images pulled, nothing created), `after-create`
//! (a container created and recorded, not started), `after-start` (a
//! container started, not yet recorded as running), `before-stop` (a stop
//! begun, no container stopped yet).

use std::sync::OnceLock;

fn armed() -> &'static Vec<String> {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("BERTH_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Aborts the process if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|n| n == name) {
        eprintln!("berth-agent: failpoint {name} reached; aborting");
        std::process::abort();
    }
}
