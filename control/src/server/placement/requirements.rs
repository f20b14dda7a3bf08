//! What an instance must offer to run a task definition: static host
//! ports, the `runtimePlatform`, and the agent policy the definition needs.
//!
//! # The policy contract
//! An agent publishes its policy as instance attributes: one
//! `berth.policy.<key>` per key of the agent's `Policy` (the keys of
//! `agent.toml`). Booleans are `true` / `false`; lists are their entries
//! joined by `,`. An absent boolean means false, an absent list empty, so
//! an agent that publishes nothing is taken to allow nothing beyond what no
//! key guards.
//!
//! # Mirroring the agent
//! [`requirements`] maps a definition's features to keys the way the
//! agent's `policy::check` does, reusing its pieces where they are public
//! (`host_binds`, `normalize_capability`, `host_local_target`,
//! `ports::static_host_ports`). The agent stays the authority: what it
//! checks on the host itself (a bind source's symbolic links, the data dir,
//! whether a shared volume exists and who created it, file system types and
//! mount options refused whatever the policy) is not a requirement here,
//! and a task placed on an instance that offers every requirement can still
//! be refused there.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};

use berth_agent::policy::{host_binds, host_local_target, normalize_capability};
use berth_agent::ports::{Protocol, static_host_ports};
use berth_taskdef::{NetworkMode, TaskDefinition};

/// The prefix of the policy attributes.
pub const POLICY_PREFIX: &str = berth_proto::attributes::POLICY_PREFIX;
/// The built-in attribute of the CPU architecture (`x86_64`, `arm64`).
pub const ARCH_ATTRIBUTE: &str = berth_proto::attributes::CPU_ARCHITECTURE;
/// The built-in attribute of the operating system (`linux`).
pub const OS_ATTRIBUTE: &str = berth_proto::attributes::OS_TYPE;

/// Something an instance must offer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requirement {
    /// A static host port, free on the instance.
    HostPort(u16, Protocol),
    /// An attribute with this value (booleans `true`; architectures compared
    /// with their synonyms: `aarch64` is `arm64`, `amd64` is `x86_64`).
    Equals { attribute: String, value: String },
    /// A list attribute that includes the value.
    Includes { attribute: String, value: String },
    /// `berth.policy.allowed_capabilities` includes the capability or `ALL`.
    Capability(String),
    /// A list attribute of absolute paths one of which is the path or a
    /// directory above it (at a component boundary: `/srv2` is not under
    /// `/srv`).
    PathUnder { attribute: String, path: String },
    /// At least this many GPUs (`berth.gpus`; GPUs other tasks use are not
    /// subtracted).
    Gpus(u32),
}

/// `berth.policy.<key>`.
pub fn policy_attribute(key: &str) -> String {
    format!("{POLICY_PREFIX}{key}")
}

fn policy_true(key: &str) -> Requirement {
    Requirement::Equals {
        attribute: policy_attribute(key),
        value: "true".to_owned(),
    }
}

fn policy_includes(key: &str, value: &str) -> Requirement {
    Requirement::Includes {
        attribute: policy_attribute(key),
        value: value.to_owned(),
    }
}

/// `aarch64` → `arm64`, `amd64` → `x86_64`, lower case.
fn normalize_arch(v: &str) -> String {
    let v = v.trim().to_ascii_lowercase();
    match v.as_str() {
        "aarch64" => "arm64".to_owned(),
        "amd64" | "x86-64" => "x86_64".to_owned(),
        _ => v,
    }
}

fn list(attributes: &BTreeMap<String, String>, name: &str) -> Vec<String> {
    attributes
        .get(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `path` lexically without `.`, repeated or trailing `/`.
fn lexical(path: &str) -> Option<std::path::PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    Some(p.components().collect())
}

impl Requirement {
    /// Whether an instance with `attributes` offers it (host ports are the
    /// pipeline's, against the instance's used ports: always true here).
    pub fn met_by(&self, attributes: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::HostPort(..) => true,
            Requirement::Gpus(n) => attributes
                .get(berth_proto::attributes::GPUS)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .is_some_and(|have| have >= *n),
            Requirement::Equals { attribute, value } => {
                attributes.get(attribute).is_some_and(|have| {
                    if attribute == ARCH_ATTRIBUTE {
                        normalize_arch(have) == normalize_arch(value)
                    } else {
                        have.trim().eq_ignore_ascii_case(value)
                    }
                })
            }
            Requirement::Includes { attribute, value } => {
                list(attributes, attribute).iter().any(|v| v == value)
            }
            Requirement::Capability(cap) => {
                list(attributes, &policy_attribute("allowed_capabilities"))
                    .iter()
                    .map(|a| normalize_capability(a))
                    .any(|a| a == "ALL" || a == *cap)
            }
            Requirement::PathUnder { attribute, path } => {
                let Some(path) = lexical(path) else {
                    return false;
                };
                list(attributes, attribute)
                    .iter()
                    .filter_map(|root| lexical(root))
                    .any(|root| path.starts_with(root))
            }
        }
    }
}

/// Names the attribute and what it must hold.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::HostPort(port, protocol) => write!(f, "host port {port}/{protocol} free"),
            Requirement::Equals { attribute, value } => write!(f, "{attribute} = {value}"),
            Requirement::Includes { attribute, value } => {
                write!(f, "{attribute} including {value}")
            }
            Requirement::Capability(cap) => write!(
                f,
                "{POLICY_PREFIX}allowed_capabilities including {cap} (or ALL)"
            ),
            Requirement::PathUnder { attribute, path } => {
                write!(f, "{attribute} including {path} or a directory above it")
            }
            Requirement::Gpus(n) => write!(
                f,
                "{n} GPU(s) ({} at least {n})",
                berth_proto::attributes::GPUS
            ),
        }
    }
}

/// `no-new-privileges` (also `:true` / `=true`) only takes privileges away
/// (as the agent's policy has it).
fn only_restricts(option: &str) -> bool {
    matches!(
        option.trim(),
        "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
    )
}

/// Whether a log option names where the daemon sends the logs (as the
/// agent's policy has it).
fn is_address_option(key: &str, value: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    ["-address", "-url", "-endpoint", "-host"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
        || value.contains("://")
}

/// The driver of a Docker volume whose configuration names none.
const DEFAULT_VOLUME_DRIVER: &str = "local";

/// What an instance must offer to run `def`, sorted, without duplicates
/// (host ports first).
pub fn requirements(def: &TaskDefinition) -> Vec<Requirement> {
    let mut out = Vec::new();
    let all: Vec<usize> = (0..def.container_definitions.len()).collect();
    for p in static_host_ports(def, &all) {
        out.push(Requirement::HostPort(p.port, p.protocol));
    }
    if let Some(platform) = def.runtime_platform.as_ref().and_then(|v| v.as_object()) {
        if let Some(arch) = platform.get("cpuArchitecture").and_then(|v| v.as_str()) {
            out.push(Requirement::Equals {
                attribute: ARCH_ATTRIBUTE.to_owned(),
                value: normalize_arch(arch),
            });
        }
        if let Some(os) = platform
            .get("operatingSystemFamily")
            .and_then(|v| v.as_str())
        {
            out.push(Requirement::Equals {
                attribute: OS_ATTRIBUTE.to_owned(),
                value: os.trim().to_ascii_lowercase(),
            });
        }
    }
    if def.network_mode() == NetworkMode::Host {
        out.push(policy_true("allow_host_network"));
    }
    let gpus: u32 = def
        .container_definitions
        .iter()
        .map(|c| c.gpu_count())
        .fold(0, u32::saturating_add);
    if gpus > 0 {
        out.push(Requirement::Gpus(gpus));
    }
    if def.pid_mode.as_deref() == Some("host") || def.ipc_mode.as_deref() == Some("host") {
        out.push(policy_true("allow_host_pid_ipc"));
    }
    for v in &def.volumes {
        let Some(config) = &v.docker_volume_configuration else {
            continue;
        };
        let driver = config
            .driver
            .as_deref()
            .map(str::trim)
            .unwrap_or(DEFAULT_VOLUME_DRIVER);
        out.push(policy_includes("allowed_volume_drivers", driver));
        let opts = &config.driver_opts;
        if !opts.is_empty() {
            out.push(policy_true("allow_volume_driver_opts"));
        }
        let bind = opts
            .get("o")
            .is_some_and(|o| o.split(',').any(|f| matches!(f.trim(), "bind" | "rbind")));
        let tmpfs = opts
            .get("type")
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("tmpfs"));
        if driver == DEFAULT_VOLUME_DRIVER
            && !bind
            && !tmpfs
            && let Some(device) = opts.get("device").map(|d| d.trim())
            && !(device.contains(':') || device.starts_with("//"))
        {
            out.push(policy_true("allow_devices"));
        }
    }
    for bind in host_binds(def) {
        out.push(Requirement::PathUnder {
            attribute: policy_attribute("allowed_host_paths"),
            path: bind.source.to_owned(),
        });
    }
    for c in &def.container_definitions {
        if c.privileged == Some(true) {
            out.push(policy_true("allow_privileged"));
        }
        let linux = c.linux_parameters.as_ref();
        if let Some(caps) = linux.and_then(|l| l.capabilities.as_ref()) {
            for cap in &caps.add {
                out.push(Requirement::Capability(normalize_capability(cap)));
            }
        }
        if linux.is_some_and(|l| !l.devices.is_empty()) {
            out.push(policy_true("allow_devices"));
        }
        if c.docker_security_options.iter().any(|o| !only_restricts(o)) {
            out.push(policy_true("allow_security_options"));
        }
        if let Some(log) = &c.log_configuration {
            out.push(policy_includes(
                "allowed_log_drivers",
                log.log_driver.trim(),
            ));
            if log
                .options
                .iter()
                .any(|(k, v)| is_address_option(k, v) && host_local_target(v).is_some())
            {
                out.push(policy_true("allow_log_driver_addresses"));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> TaskDefinition {
        berth_taskdef::parse(json)
            .unwrap_or_else(|e| panic!("{e}"))
            .definition
    }

    fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn names(rs: &[Requirement]) -> Vec<String> {
        rs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn gpus_of_every_container_are_required_together() {
        let d = def(r#"{"family":"g","containerDefinitions":[
                {"name":"a","image":"busybox","memory":64,"resourceRequirements":[{"type":"GPU","value":"2"}]},
                {"name":"b","image":"busybox","memory":64,"resourceRequirements":[{"type":"GPU","value":"1"}]}]}"#);
        let r = requirements(&d);
        assert_eq!(r, vec![Requirement::Gpus(3)]);
        assert_eq!(names(&r), ["3 GPU(s) (berth.gpus at least 3)"]);
        assert!(!r[0].met_by(&attrs(&[])));
        assert!(!r[0].met_by(&attrs(&[("berth.gpus", "2")])));
        assert!(!r[0].met_by(&attrs(&[("berth.gpus", "many")])));
        assert!(r[0].met_by(&attrs(&[("berth.gpus", "4")])));
    }

    #[test]
    fn a_plain_definition_requires_nothing() {
        let d = def(
            r#"{"family":"web","containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#,
        );
        assert_eq!(requirements(&d), Vec::new());
    }

    #[test]
    fn privileged_and_its_attribute() {
        let d = def(r#"{"family":"p","containerDefinitions":[
                {"name":"a","image":"busybox","memory":64,"privileged":true},
                {"name":"b","image":"busybox","memory":64,"privileged":true}]}"#);
        let rs = requirements(&d);
        assert_eq!(names(&rs), ["berth.policy.allow_privileged = true"]);
        assert!(rs[0].met_by(&attrs(&[("berth.policy.allow_privileged", "true")])));
        assert!(!rs[0].met_by(&attrs(&[("berth.policy.allow_privileged", "false")])));
        assert!(!rs[0].met_by(&attrs(&[])), "absent boolean is false");
    }

    #[test]
    fn host_paths_must_be_under_an_allowed_root() {
        let d = def(
            r#"{"family":"h","volumes":[{"name":"d","host":{"sourcePath":"/srv/data/"}}],
                "containerDefinitions":[{"name":"a","image":"busybox","memory":64,
                "mountPoints":[{"sourceVolume":"d","containerPath":"/d"}]}]}"#,
        );
        let rs = requirements(&d);
        assert_eq!(
            names(&rs),
            ["berth.policy.allowed_host_paths including /srv/data/ or a directory above it"]
        );
        let r = &rs[0];
        let key = "berth.policy.allowed_host_paths";
        assert!(r.met_by(&attrs(&[(key, "/srv,/var/lib/berth-volumes")])));
        assert!(r.met_by(&attrs(&[(key, "/var/lib/berth-volumes, /srv/data")])));
        assert!(r.met_by(&attrs(&[(key, "/srv/")])));
        assert!(!r.met_by(&attrs(&[(key, "/sr")])), "component boundary");
        assert!(!r.met_by(&attrs(&[(key, "/srv/data/x")])));
        assert!(!r.met_by(&attrs(&[])), "absent list is empty");
        let dotdot = Requirement::PathUnder {
            attribute: key.into(),
            path: "/srv/../etc".into(),
        };
        assert!(!dotdot.met_by(&attrs(&[(key, "/")])));
    }

    #[test]
    fn capabilities_are_normalized_and_all_allows_any() {
        let d = def(
            r#"{"family":"c","containerDefinitions":[{"name":"a","image":"busybox","memory":64,
                "linuxParameters":{"capabilities":{"add":["NET_ADMIN","SYS_TIME"]}}}]}"#,
        );
        let rs = requirements(&d);
        assert_eq!(
            names(&rs),
            [
                "berth.policy.allowed_capabilities including NET_ADMIN (or ALL)",
                "berth.policy.allowed_capabilities including SYS_TIME (or ALL)"
            ]
        );
        let key = "berth.policy.allowed_capabilities";
        assert!(rs[0].met_by(&attrs(&[(key, "cap_net_admin")])));
        assert!(!rs[1].met_by(&attrs(&[(key, "NET_ADMIN")])));
        assert!(rs[1].met_by(&attrs(&[(key, "all")])));
    }

    #[test]
    fn log_drivers_and_addresses() {
        let d = def(
            r#"{"family":"l","containerDefinitions":[{"name":"a","image":"busybox","memory":64,
                "logConfiguration":{"logDriver":"syslog","options":{"syslog-address":"udp://127.0.0.1:514"}}},
                {"name":"b","image":"busybox","memory":64,
                "logConfiguration":{"logDriver":"json-file"}}]}"#,
        );
        let rs = requirements(&d);
        assert_eq!(
            names(&rs),
            [
                "berth.policy.allow_log_driver_addresses = true",
                "berth.policy.allowed_log_drivers including json-file",
                "berth.policy.allowed_log_drivers including syslog",
            ]
        );
        let defaults = attrs(&[(
            "berth.policy.allowed_log_drivers",
            "json-file,local,journald,none",
        )]);
        assert!(rs[1].met_by(&defaults));
        assert!(!rs[2].met_by(&defaults));
        // a remote address needs no key
        let remote = def(
            r#"{"family":"l","containerDefinitions":[{"name":"a","image":"busybox","memory":64,
                "logConfiguration":{"logDriver":"syslog","options":{"syslog-address":"udp://logs.example.com:514"}}}]}"#,
        );
        assert_eq!(
            names(&requirements(&remote)),
            ["berth.policy.allowed_log_drivers including syslog"]
        );
    }

    #[test]
    fn ports_platform_network_and_volumes() {
        let d = def(r#"{"family":"x","networkMode":"host","pidMode":"host",
                "runtimePlatform":{"cpuArchitecture":"ARM64","operatingSystemFamily":"LINUX"},
                "volumes":[{"name":"v","dockerVolumeConfiguration":{"scope":"task","driverOpts":{"type":"ext4","device":"/dev/sdb1"}}}],
                "containerDefinitions":[{"name":"a","image":"busybox","memory":64,
                "portMappings":[{"containerPort":8080},{"containerPort":53,"protocol":"udp"}],
                "dockerSecurityOptions":["no-new-privileges","seccomp=unconfined"],
                "linuxParameters":{"devices":[{"hostPath":"/dev/fuse"}]},
                "mountPoints":[{"sourceVolume":"v","containerPath":"/v"}]}]}"#);
        let rs = requirements(&d);
        assert_eq!(
            names(&rs),
            [
                "host port 53/udp free",
                "host port 8080/tcp free",
                "berth.policy.allow_devices = true",
                "berth.policy.allow_host_network = true",
                "berth.policy.allow_host_pid_ipc = true",
                "berth.policy.allow_security_options = true",
                "berth.policy.allow_volume_driver_opts = true",
                "ecs.cpu-architecture = arm64",
                "ecs.os-type = linux",
                "berth.policy.allowed_volume_drivers including local",
            ]
        );
        let arch = &rs[7];
        assert!(arch.met_by(&attrs(&[("ecs.cpu-architecture", "aarch64")])));
        assert!(!arch.met_by(&attrs(&[("ecs.cpu-architecture", "x86_64")])));
    }

    #[test]
    fn bridge_mode_static_host_ports_only() {
        let d = def(
            r#"{"family":"b","containerDefinitions":[{"name":"a","image":"busybox","memory":64,
                "portMappings":[{"containerPort":80,"hostPort":8080},{"containerPort":81},{"containerPort":82,"hostPort":0}]}]}"#,
        );
        assert_eq!(names(&requirements(&d)), ["host port 8080/tcp free"]);
    }
}
