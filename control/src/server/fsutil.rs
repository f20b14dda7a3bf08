//! Crash-safe file writes: the agent's implementation, shared.

pub use berth_agent::fsutil::{create_private_dir, write_atomic};
