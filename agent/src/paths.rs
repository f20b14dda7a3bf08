//! Where the agent keeps its files when the config says nothing.
//!
//! A leaf module: the config takes its defaults from here, and so does the
//! policy (the data dir no bind mount may overlap), without either importing
//! the other.

/// The config file `berth-agent run`, `enroll` and `status` read.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/agent.toml";
/// The data dir: identity, key, `state.json`, `agent-api.json` (mode 0700).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";
