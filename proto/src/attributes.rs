//! Instance attributes (ECS `attributes`): the names of the built-in ones
//! and the rules of custom ones, shared by the agent (its `[attributes]`
//! table), the `berth attribute` commands and the control plane
//! (`PutAttributes`, `DeleteAttributes`), so that all three accept and
//! refuse the same names and values.
//!
//! - Built in, sent by the agent in its Hello: [`OS_TYPE`],
//!   [`CPU_ARCHITECTURE`], [`HOSTNAME`], [`AGENT_VERSION`] and one
//!   [`POLICY_PREFIX`]`<key>` per agent policy key. Every name in the
//!   [`RESERVED_PREFIXES`] namespaces is berth's: no custom attribute may
//!   take one.
//! - Custom: a name and a value of 1 to [`MAX_LEN`] characters of
//!   `[A-Za-z0-9_.\-/:]` ([`check_custom`]); at most [`MAX_PER_CALL`] in one
//!   `PutAttributes` or `DeleteAttributes` (as in ECS) and at most
//!   [`MAX_CUSTOM`] put on one instance.
//! - A Hello carries at most [`MAX_HELLO`] attributes (built-in and those of
//!   the agent's config), each value at most [`MAX_HELLO_VALUE`] bytes.

use std::fmt;

use crate::text::shown;

/// The operating system (`linux`).
pub const OS_TYPE: &str = "ecs.os-type";
/// The CPU architecture, as ECS names it: `x86_64` or `arm64`.
pub const CPU_ARCHITECTURE: &str = "ecs.cpu-architecture";
/// The host name the agent reports.
pub const HOSTNAME: &str = "berth.hostname";
/// The agent's version.
pub const AGENT_VERSION: &str = "berth.agent-version";
/// The prefix of the agent policy attributes: `berth.policy.<key>`.
pub const POLICY_PREFIX: &str = "berth.policy.";
/// How many GPUs the host has (`/dev/nvidia<N>` device files), a count.
pub const GPUS: &str = "berth.gpus";
/// Namespaces of the built-in attributes.
pub const RESERVED_PREFIXES: &[&str] = &["ecs.", "berth."];
/// Longest custom attribute name or value, in characters (all ASCII).
pub const MAX_LEN: usize = 128;
/// Most attributes one `PutAttributes` or `DeleteAttributes` names.
pub const MAX_PER_CALL: usize = 10;
/// Most custom attributes put on one instance (`berth attribute put`).
pub const MAX_CUSTOM: usize = 64;
/// Most attributes one Hello may carry (the control plane refuses more)...
pub const MAX_HELLO: usize = 64;
/// ... and the longest value there, in bytes: a built-in policy list may be
/// longer than [`MAX_LEN`].
pub const MAX_HELLO_VALUE: usize = 1024;

/// Whether `name` is in a built-in namespace (`ecs.…`, `berth.…`; any case).
pub fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// 1 to [`MAX_LEN`] characters of `[A-Za-z0-9_.\-/:]`.
pub fn valid_text(s: &str) -> bool {
    (1..=MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/:".contains(&b))
}

/// The ECS CPU architecture of a Rust target architecture
/// (`std::env::consts::ARCH`): `aarch64` is `arm64`; others as they are.
pub fn ecs_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "aarch64" => "arm64",
        other => other,
    }
}

/// A custom attribute that may not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error(
        "attribute name {}: use 1 to {MAX_LEN} letters, digits, '_', '.', '-', '/' or ':'",
        shown(.0)
    )]
    Name(String),
    #[error(
        "attribute {name}: value {}: use 1 to {MAX_LEN} letters, digits, '_', '.', '-', '/' or ':'",
        shown(.value)
    )]
    Value { name: String, value: String },
    #[error(
        "attribute {0}: names beginning with {prefixes} are berth's built-in attributes and cannot be set or deleted",
        prefixes = Prefixes
    )]
    Reserved(String),
}

/// The reserved prefixes, as an error message lists them.
struct Prefixes;

impl fmt::Display for Prefixes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted: Vec<String> = RESERVED_PREFIXES.iter().map(|p| format!("{p:?}")).collect();
        f.write_str(&quoted.join(" or "))
    }
}

/// A name a custom attribute may have: valid, and not built in.
pub fn check_custom_name(name: &str) -> Result<(), AttributeError> {
    if !valid_text(name) {
        return Err(AttributeError::Name(name.to_owned()));
    }
    if is_reserved(name) {
        return Err(AttributeError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// A custom attribute that may be stored: [`check_custom_name`] and a valid
/// value.
pub fn check_custom(name: &str, value: &str) -> Result<(), AttributeError> {
    check_custom_name(name)?;
    if !valid_text(value) {
        return Err(AttributeError::Value {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_attributes_follow_the_ecs_charset_and_keep_out_of_berths_namespaces() {
        assert_eq!(check_custom("zone", "rack-3"), Ok(()));
        assert_eq!(
            check_custom("a/b:c_d.e-f", "x".repeat(MAX_LEN).as_str()),
            Ok(())
        );
        assert_eq!(
            check_custom(&"n".repeat(MAX_LEN + 1), "v"),
            Err(AttributeError::Name("n".repeat(MAX_LEN + 1)))
        );
        for bad in ["", "a b", "zone@x", "z\u{1b}]0;"] {
            assert!(
                matches!(check_custom(bad, "v"), Err(AttributeError::Name(_))),
                "{bad:?}"
            );
        }
        for bad in ["", "rack 3", "r=3", &"v".repeat(MAX_LEN + 1)] {
            assert!(
                matches!(check_custom("zone", bad), Err(AttributeError::Value { .. })),
                "{bad:?}"
            );
        }
        for reserved in [
            "ecs.os-type",
            "berth.policy.allow_privileged",
            "ECS.x",
            "Berth.y",
        ] {
            assert_eq!(
                check_custom(reserved, "v"),
                Err(AttributeError::Reserved(reserved.to_owned()))
            );
        }
        assert_eq!(check_custom("ecsx", "v"), Ok(()), "only the namespace");
        let msg = check_custom("ecs.os-type", "v")
            .expect_err("reserved")
            .to_string();
        assert!(
            msg.contains("ecs.os-type") && msg.contains("\"ecs.\" or \"berth.\""),
            "{msg}"
        );
        let msg = check_custom("zone", "rack 3")
            .expect_err("space")
            .to_string();
        assert!(msg.contains("zone") && msg.contains("\"rack 3\""), "{msg}");
    }

    #[test]
    fn the_architecture_is_named_as_ecs_names_it() {
        assert_eq!(ecs_architecture("aarch64"), "arm64");
        assert_eq!(ecs_architecture("x86_64"), "x86_64");
    }
}
