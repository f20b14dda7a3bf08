//! The `berth.v1` protocol.
//!
//! Generated from `proto/berth/v1/berth.proto` at build time. Three services:
//! `Enrollment` (no client certificate), `Fleet` (mutual TLS, one stream per
//! agent) and `Admin` (the CLI, loopback).
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("berth.v1");
}

pub use v1::*;

pub mod json;

/// Milliseconds since the Unix epoch; the protocol's time unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
