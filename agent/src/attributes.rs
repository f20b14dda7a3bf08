//! The instance attributes the agent publishes in its Hello (SPEC §6).
//!
//! - Built in ([`berth_proto::attributes`] names them): `ecs.os-type`
//!   (`linux`), `ecs.cpu-architecture` (`x86_64`, `arm64`),
//!   `berth.hostname`, `berth.agent-version`, and one
//!   `berth.policy.<key>` per policy key of `agent.toml`, as the
//!   supervisors enforce it ([`crate::config::Config::policy`]): booleans
//!   `true` / `false`, lists their entries joined by `,` (empty: none).
//!   Placement reads these (`control/src/server/placement/requirements.rs`)
//!   to send a task only where the policy allows it.
//! - Custom: the `[attributes]` table of `agent.toml`, checked when the
//!   config loads ([`check_config`]): names and values as
//!   [`berth_proto::attributes::check_custom`] wants them, no built-in name,
//!   and no more than fit in a Hello next to the built-in ones.
//!
//! # Bounds
//! The control plane refuses a Hello with more than
//! [`MAX_HELLO`] attributes or a value over [`MAX_HELLO_VALUE`] bytes or
//! with control characters. A policy list longer than that is cut after the
//! last entry that fits, with a warning: placement then sees fewer allowed
//! entries than the agent allows, so it may keep a task away from this host
//! that the host would run, never the other way round. An entry holding a
//! `,` or a control character cannot be published and is left out, with a
//! warning, for the same reason.

use std::collections::BTreeMap;
use std::path::Path;

use berth_proto::attributes::{
    AGENT_VERSION, CPU_ARCHITECTURE, GPUS, HOSTNAME, MAX_HELLO, MAX_HELLO_VALUE, OS_TYPE,
    POLICY_PREFIX, check_custom, ecs_architecture, is_reserved,
};
use tracing::warn;

use crate::policy::Policy;

/// The attributes of this host: the built-in ones, then the config's.
pub fn host_attributes(
    policy: &Policy,
    hostname: &str,
    custom: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(OS_TYPE.to_owned(), std::env::consts::OS.to_owned());
    out.insert(
        CPU_ARCHITECTURE.to_owned(),
        ecs_architecture(std::env::consts::ARCH).to_owned(),
    );
    out.insert(HOSTNAME.to_owned(), hostname.to_owned());
    out.insert(
        AGENT_VERSION.to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    out.insert(GPUS.to_owned(), gpu_count(Path::new("/dev")).to_string());
    out.extend(policy_attributes(policy));
    for (name, value) in custom {
        // The config check refused built-in names; never let one through.
        if !is_reserved(name) {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

/// How many built-in attributes the agent sends.
fn built_in_count() -> usize {
    5 + policy_attributes(&Policy::default()).len()
}

/// The NVIDIA GPUs of the host: the device files `nvidia0`, `nvidia1`, …
/// in `dev` (the driver creates one per GPU; `nvidiactl`, `nvidia-uvm` and
/// the like are not GPUs). 0 when there are none or `dev` cannot be read.
pub fn gpu_count(dev: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return 0;
    };
    let n = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_prefix("nvidia")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `berth.policy.<key>` for every key of `policy`, as its serialized form
/// names them (`protected_host_paths` is not a key).
pub fn policy_attributes(policy: &Policy) -> BTreeMap<String, String> {
    let Ok(serde_json::Value::Object(keys)) = serde_json::to_value(policy) else {
        return BTreeMap::new();
    };
    keys.into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Array(items) => {
                    let items: Vec<String> = items
                        .into_iter()
                        .map(|i| match i {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .collect();
                    joined_list(&key, &items)
                }
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (format!("{POLICY_PREFIX}{key}"), text)
        })
        .collect()
}

/// The entries joined by `,`, at most [`MAX_HELLO_VALUE`] bytes: entries
/// that cannot be told apart in the list (a `,` or a control character in
/// them) and those after the last that fits are left out, with a warning.
fn joined_list(key: &str, items: &[String]) -> String {
    let mut out = String::new();
    let mut left_out = 0usize;
    for item in items {
        if item.contains(',') || item.chars().any(char::is_control) {
            warn!(
                key,
                entry = %item.escape_debug(),
                "this policy entry holds a ',' or a control character and is not published as an attribute: placement will not count on it"
            );
            continue;
        }
        let extra = if out.is_empty() { 0 } else { 1 } + item.len();
        if out.len() + extra > MAX_HELLO_VALUE {
            left_out += 1;
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(item);
    }
    if left_out > 0 {
        warn!(
            key,
            left_out,
            max_bytes = MAX_HELLO_VALUE,
            "the policy list is too long for one attribute and was cut: placement will not count on the entries left out"
        );
    }
    out
}

/// The `[attributes]` table of `agent.toml`: every name and value valid,
/// none built in, and no more than fit in a Hello next to the built-in ones.
pub fn check_config(custom: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in custom {
        check_custom(name, value).map_err(|e| format!("attributes: {e}"))?;
    }
    let room = MAX_HELLO.saturating_sub(built_in_count());
    if custom.len() > room {
        return Err(format!(
            "attributes: {} custom attributes, at most {room} are allowed (a host publishes at most {MAX_HELLO}, {} of them built in)",
            custom.len(),
            built_in_count()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_the_numbered_nvidia_device_files() {
        let dev = tempfile::tempdir().expect("tempdir");
        assert_eq!(gpu_count(dev.path()), 0);
        for name in [
            "nvidia0",
            "nvidia1",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia",
            "null",
        ] {
            std::fs::write(dev.path().join(name), b"").expect("write");
        }
        assert_eq!(gpu_count(dev.path()), 2);
        assert_eq!(gpu_count(&dev.path().join("missing")), 0);
    }

    #[test]
    fn the_built_in_attributes_name_the_platform_the_agent_and_every_policy_key() {
        let policy = Policy {
            allow_privileged: true,
            allowed_capabilities: vec!["NET_ADMIN".into(), "SYS_TIME".into()],
            ..Policy::default()
        };
        let custom = [("zone".to_owned(), "rack-3".to_owned())].into();
        let a = host_attributes(&policy, "web-1", &custom);
        assert_eq!(a["ecs.os-type"], "linux");
        let arch = &a["ecs.cpu-architecture"];
        assert!(arch == "x86_64" || arch == "arm64", "{arch}");
        assert_eq!(a["berth.hostname"], "web-1");
        assert_eq!(a["berth.agent-version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(a["berth.policy.allow_privileged"], "true");
        assert_eq!(a["berth.policy.allow_host_network"], "false");
        assert_eq!(a["berth.policy.allowed_capabilities"], "NET_ADMIN,SYS_TIME");
        assert_eq!(
            a["berth.policy.allowed_host_paths"],
            "/srv,/var/lib/berth-volumes"
        );
        assert_eq!(a["berth.policy.allowed_shared_volumes"], "");
        assert_eq!(a["zone"], "rack-3");
        assert!(!a.contains_key("berth.policy.protected_host_paths"));
        let policy_keys = a.keys().filter(|k| k.starts_with(POLICY_PREFIX)).count();
        assert_eq!(policy_keys, 12, "{a:?}");
        assert_eq!(a.len(), built_in_count() + 1);
    }

    #[test]
    fn what_the_agent_publishes_passes_the_hello_bounds() {
        // The longest config the checks let through.
        let custom: BTreeMap<String, String> = (0..MAX_HELLO - built_in_count())
            .map(|i| (format!("{i:0>128}"), "v".repeat(128)))
            .collect();
        check_config(&custom).expect("fits");
        let policy = Policy {
            allowed_host_paths: (0..500)
                .map(|i| std::path::PathBuf::from(format!("/srv/{i:04}")))
                .collect(),
            ..Policy::default()
        };
        let a = host_attributes(&policy, "h", &custom);
        assert_eq!(a.len(), MAX_HELLO);
        let paths = &a["berth.policy.allowed_host_paths"];
        assert!(paths.len() <= MAX_HELLO_VALUE, "{}", paths.len());
        // Cut on an entry boundary: the entries there are whole.
        let entries: Vec<&str> = paths.split(',').collect();
        assert_eq!(entries.len(), MAX_HELLO_VALUE / 10, "{paths}");
        assert!(
            entries
                .iter()
                .all(|e| e.len() == 9 && e.starts_with("/srv/"))
        );
        for (name, value) in &a {
            assert!(berth_proto::attributes::valid_text(name), "{name}");
            assert!(!value.chars().any(char::is_control), "{name}");
        }
    }

    #[test]
    fn an_entry_that_cannot_be_listed_is_left_out() {
        let policy = Policy {
            allowed_shared_volumes: vec!["a,b".into(), "c\n".into(), "d".into()],
            ..Policy::default()
        };
        let a = policy_attributes(&policy);
        assert_eq!(a["berth.policy.allowed_shared_volumes"], "d");
    }

    #[test]
    fn bad_config_attributes_are_named() {
        let check = |pairs: &[(&str, &str)]| {
            let m: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            check_config(&m)
        };
        assert_eq!(check(&[("zone", "rack-3")]), Ok(()));
        let e = check(&[("ecs.os-type", "windows")]).expect_err("built in");
        assert!(e.contains("ecs.os-type") && e.contains("built-in"), "{e}");
        let e = check(&[("berth.policy.allow_privileged", "true")]).expect_err("built in");
        assert!(e.contains("berth.policy.allow_privileged"), "{e}");
        let e = check(&[("rack", "a b")]).expect_err("space");
        assert!(
            e.starts_with("attributes: attribute rack: value \"a b\""),
            "{e}"
        );
        let e = check(&[("", "x")]).expect_err("empty");
        assert!(e.contains("attribute name \"\""), "{e}");
        let too_many: Vec<(String, String)> = (0..=MAX_HELLO - built_in_count())
            .map(|i| (format!("a{i}"), "v".to_owned()))
            .collect();
        let m: BTreeMap<String, String> = too_many.into_iter().collect();
        let e = check_config(&m).expect_err("too many");
        assert!(e.contains("at most 47"), "{e}");
    }
}
