//! Log output of both binaries (`berth-agent` and `berth`): `tracing` events
//! on stderr, as text or as one JSON object per line.
//!
//! Under systemd stderr goes to the journal, which stamps every line itself:
//! text lines then carry no timestamp of their own (systemd sets
//! `JOURNAL_STREAM` for a service whose stderr is the journal). Colours only
//! on a terminal.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `json` selects JSON lines. A second call
/// changes nothing.
pub fn init(json: bool, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
