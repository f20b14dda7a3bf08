//! The `berth.v1` protocol.
//!
//! Generated from `proto/berth/v1/berth.proto` at build time. Three services:
//! `Enrollment` (no client certificate), `Fleet` (mutual TLS, one stream per
//! agent, certificate renewal) and `Admin` (the CLI: plaintext on loopback,
//! TLS with an admin certificate elsewhere).
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("berth.v1");

    /// Names the secret and the value's length, never the value.
    impl std::fmt::Debug for PutSecretRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("PutSecretRequest")
                .field("name", &self.name)
                .field("value_len", &self.value.len())
                .finish()
        }
    }

    /// Names the container and the variable, never the value.
    impl std::fmt::Debug for TaskSecret {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("TaskSecret")
                .field("container", &self.container)
                .field("name", &self.name)
                .field("value_len", &self.value.len())
                .finish()
        }
    }

    /// Names the container only.
    impl std::fmt::Debug for RegistryCredentials {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RegistryCredentials")
                .field("container", &self.container)
                .finish_non_exhaustive()
        }
    }
}

pub use v1::*;

pub mod attributes;
pub mod json;
pub mod metrics;
pub mod status;
pub mod text;

/// Largest message an agent sends on `Fleet` (the server refuses larger).
pub const FLEET_MAX_AGENT_MESSAGE: usize = 4 * 1024 * 1024;
/// Largest message the server sends on `Fleet` (an assignment: every task
/// of a host with its definition); the agent accepts up to this size.
pub const FLEET_MAX_SERVER_MESSAGE: usize = 32 * 1024 * 1024;
/// How the status that ends a session replaced by a newer session of the
/// same instance begins (code ABORTED). An agent that reads it knows another
/// process with its identity connected: a cloned host.
pub const SESSION_REPLACED: &str = "session replaced by a newer one";

/// Milliseconds since the Unix epoch; the protocol's time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
