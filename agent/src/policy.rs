//! The agent's local policy: what a task may ask of the host.
//!
//! # Background
//! The agent runs as root next to the Docker socket. A task definition comes
//! from the control plane, and whoever controls the control plane (or
//! impersonates it) would own every host if the agent ran whatever it was
//! sent: a privileged container, a bind mount of `/`, `CAP_SYS_ADMIN` or a
//! raw disk device each amount to root on the host. The operator of each
//! host decides in `agent.toml` which of these its tasks may use; the agent
//! refuses the rest before it pulls or creates anything (issue 5).
//!
//! # Design
//! - One rule per config key, named after it ([`Rule`]): `allow_privileged`,
//!   `allow_host_network`, `allow_host_pid_ipc`, `allowed_capabilities`,
//!   `allow_devices`, `allow_security_options`, `allowed_host_paths`,
//!   `allowed_volume_drivers`, `allow_volume_driver_opts`,
//!   `allowed_shared_volumes`, `allowed_log_drivers`,
//!   `allow_log_driver_addresses`.
//! - [`check`] returns the first violation, in definition order (task-level
//!   fields first, then each container); its message names the rule, the
//!   JSON path of the offending field and how to allow it.
//! - A host path is bound only as it exists on the host, walked component
//!   by component below the allowed root it falls under without following
//!   any symbolic link (`openat(O_PATH|O_NOFOLLOW)` from the root's
//!   directory): a missing component, a symbolic link or `..` anywhere below
//!   the root refuses the bind. The root itself (the operator's) may be a
//!   link; of nested roots the outermost is walked, so an inner root that a
//!   task replaced through a bind of the outer one is seen. `/srv2` is not
//!   under `/srv`.
//! - Every way a task can bind a host path is a host path here: a volume's
//!   `host.sourcePath`, and the `device` of a `local` Docker volume whose
//!   `driverOpts` `o` holds `bind` or `rbind` ([`host_binds`]). A `device`
//!   of any other local volume is a host device (`allow_devices`) unless it
//!   names a remote share (`host:/export`, `//server/share`); file system
//!   types that show host paths or the host kernel (`overlay`, `proc`,
//!   `sysfs`, `devtmpfs`, …) and mount options naming a host path are
//!   refused whatever the policy.
//! - A bind that overlaps the agent's data dir (inside it, or a directory
//!   above it) is refused whatever `allowed_host_paths` says: the data dir
//!   holds the agent's private key, and an operator who allows `/srv` may
//!   well have put `data_dir` under it.
//! - Within a task, no bind source may lie inside another one: a container
//!   that can write the outer directory could otherwise replace the inner
//!   source by a symbolic link before the container that binds it starts.
//! - The host-path check runs when the task is prepared and again right
//!   before every container start, restarts in place included
//!   ([`check_container_binds`]): Docker resolves a bind source each time it
//!   starts the container.
//! - `dockerSecurityOptions` `no-new-privileges` only takes privileges away,
//!   so it is always allowed; every other option (`seccomp=…`,
//!   `apparmor=…`, `label:…`) can also loosen confinement and is gated.
//! - Log drivers: `dockerd` itself, as root in the host's namespaces, sends a
//!   container's output where the log options say, so a log address is a
//!   way out of the container's network. Only listed drivers are allowed,
//!   and an address option (`*-address`, `*-url`, `*-endpoint`, `*-host`, or
//!   any `scheme://` value) that names a unix socket, a loopback, link-local
//!   or unspecified address, or `localhost` is refused unless opened.
//!
//! # Limitations
//! - The policy is checked when a task starts; a task already running when
//!   the operator tightens the policy keeps running until it stops.
//! - The walk and Docker's own resolution of the path are two steps: a
//!   process outside the task (another task binding a directory above this
//!   task's source read-write, or anything else on the host) that swaps a
//!   component for a symbolic link between the two is not seen. Mount the
//!   allowed roots with `nosymfollow` (Linux 5.10+) to close that window:
//!   then no symbolic link under them is followed by anyone, `dockerd`
//!   included.
//! - Log addresses are checked as written: a host name that resolves to a
//!   loopback address (other than `localhost`) is not caught; the default
//!   `allowed_log_drivers` has no network driver.
//! - With `allow_volume_driver_opts` on, the options of drivers other than
//!   `local` are passed through as they are: an operator who lists such a
//!   driver trusts what it does with them.

use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use berth_taskdef::{NetworkMode, TaskDefinition};
use serde::{Deserialize, Serialize};

use crate::paths::DEFAULT_DATA_DIR;

/// What the operator allows: the policy keys of `agent.toml`, each also
/// `BERTH_<KEY>` in the environment (see [`crate::config`]). The field names
/// are the key names and `Default` gives the keys' defaults; the config
/// embeds this struct, so both are written only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Allow `privileged: true` containers (root on the host). Default false.
    pub allow_privileged: bool,
    /// Allow `networkMode: host`. Default false: a container on the host
    /// network sees the host's interfaces and every service bound to the
    /// host's loopback (the agent's local API, the admin port of a control
    /// plane on the same host); set true on hosts whose tasks need it.
    pub allow_host_network: bool,
    /// Allow `pidMode: host` and `ipcMode: host`. Default false.
    pub allow_host_pid_ipc: bool,
    /// Capabilities a container may add (`linuxParameters.capabilities.add`),
    /// without `CAP_`; `ALL` allows any. Default empty: none may be added.
    /// Upper case without `CAP_` once the config made the policy
    /// ([`crate::config::Config::policy`]).
    pub allowed_capabilities: Vec<String>,
    /// Allow host devices (`linuxParameters.devices`). Default false.
    pub allow_devices: bool,
    /// Allow `dockerSecurityOptions` other than `no-new-privileges` (which is
    /// always allowed, since it only takes privileges away). Default false.
    pub allow_security_options: bool,
    /// Absolute host paths under which host bind mounts (`host.sourcePath`,
    /// and the `device` of a `local` volume with `o=bind`) are allowed. A
    /// source must exist, and no component below the allowed path may be a
    /// symbolic link (checked before every container start); `..` is
    /// refused. A path that overlaps `data_dir` is refused whatever this
    /// list says. An allowed path itself may be a symbolic link, unless it
    /// lies under another allowed path (the outermost one is walked).
    ///
    /// Default `["/srv", "/var/lib/berth-volumes"]`: ECS task definitions
    /// with host volumes work out of the box when their data lives where
    /// site data conventionally lives (FHS `/srv`) or in berth's own volume
    /// directory, while the paths that make a bind mount root on the host
    /// (`/`, `/etc`, `/var/run/docker.sock`, `/root`, the agent's data dir)
    /// stay refused. `/tmp` is deliberately not in the default: it holds
    /// other users' sockets (ssh-agent, X11) and is shared with everything
    /// on the host. An empty list refuses every host path.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Host paths no bind may overlap, whatever `allowed_host_paths` says:
    /// the agent's data dir. Not a config key: the config sets it from
    /// `data_dir`.
    #[serde(skip)]
    pub protected_host_paths: Vec<PathBuf>,
    /// Docker volume drivers a `dockerVolumeConfiguration.driver` may name
    /// (no driver is `local`). Default `["local"]`.
    pub allowed_volume_drivers: Vec<String>,
    /// Allow `dockerVolumeConfiguration.driverOpts`. Default false: with the
    /// `local` driver they mount any host path (`type=none,o=bind,device=…`)
    /// or block device. When true, a bind `device` is still checked against
    /// `allowed_host_paths` and the data dir, any other local `device`
    /// (not `host:/export` or `//server/share`) needs `allow_devices`, a
    /// tmpfs takes no device, and file system types that show the host
    /// (`overlay`, `proc`, `sysfs`, …) or mount options naming a host path
    /// are refused.
    pub allow_volume_driver_opts: bool,
    /// Existing Docker volumes that `scope: shared` volumes may mount
    /// although berth did not create them (berth labels the shared volumes
    /// it creates `berth.shared=1`). Default empty.
    pub allowed_shared_volumes: Vec<String>,
    /// Log drivers a `logConfiguration.logDriver` may name. Default
    /// `["json-file", "local", "journald", "none"]`: the drivers that write
    /// on the host; the others make the Docker daemon send container output
    /// over the network from the host.
    pub allowed_log_drivers: Vec<String>,
    /// Allow log options (`*-address`, `*-url`, …) that point at a unix
    /// socket or a loopback, link-local or unspecified address of the host.
    /// Default false.
    pub allow_log_driver_addresses: bool,
}

/// The host paths allowed when the config says nothing (see
/// [`Policy::allowed_host_paths`]).
pub const DEFAULT_ALLOWED_HOST_PATHS: &[&str] = &["/srv", "/var/lib/berth-volumes"];
/// `allowed_volume_drivers` when the config says nothing.
pub const DEFAULT_ALLOWED_VOLUME_DRIVERS: &[&str] = &["local"];
/// `allowed_log_drivers` when the config says nothing: the drivers that
/// write on the host itself.
pub const DEFAULT_ALLOWED_LOG_DRIVERS: &[&str] = &["json-file", "local", "journald", "none"];

/// `strs` as owned strings.
pub fn owned<T: From<&'static str>>(strs: &[&'static str]) -> Vec<T> {
    strs.iter().map(|s| T::from(s)).collect()
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_privileged: false,
            allow_host_network: false,
            allow_host_pid_ipc: false,
            allowed_capabilities: Vec::new(),
            allow_devices: false,
            allow_security_options: false,
            allowed_host_paths: owned(DEFAULT_ALLOWED_HOST_PATHS),
            protected_host_paths: vec![PathBuf::from(DEFAULT_DATA_DIR)],
            allowed_volume_drivers: owned(DEFAULT_ALLOWED_VOLUME_DRIVERS),
            allow_volume_driver_opts: false,
            allowed_shared_volumes: Vec::new(),
            allowed_log_drivers: owned(DEFAULT_ALLOWED_LOG_DRIVERS),
            allow_log_driver_addresses: false,
        }
    }
}

/// A policy rule: the config key that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    AllowPrivileged,
    AllowHostNetwork,
    AllowHostPidIpc,
    AllowedCapabilities,
    AllowDevices,
    AllowSecurityOptions,
    AllowedHostPaths,
    AllowedVolumeDrivers,
    AllowVolumeDriverOpts,
    AllowedSharedVolumes,
    AllowedLogDrivers,
    AllowLogDriverAddresses,
}

impl Rule {
    /// The config key, e.g. `allow_privileged`.
    pub fn key(self) -> &'static str {
        match self {
            Rule::AllowPrivileged => "allow_privileged",
            Rule::AllowHostNetwork => "allow_host_network",
            Rule::AllowHostPidIpc => "allow_host_pid_ipc",
            Rule::AllowedCapabilities => "allowed_capabilities",
            Rule::AllowDevices => "allow_devices",
            Rule::AllowSecurityOptions => "allow_security_options",
            Rule::AllowedHostPaths => "allowed_host_paths",
            Rule::AllowedVolumeDrivers => "allowed_volume_drivers",
            Rule::AllowVolumeDriverOpts => "allow_volume_driver_opts",
            Rule::AllowedSharedVolumes => "allowed_shared_volumes",
            Rule::AllowedLogDrivers => "allowed_log_drivers",
            Rule::AllowLogDriverAddresses => "allow_log_driver_addresses",
        }
    }

    /// How the operator opens the rule (for `value`, on list rules).
    fn how_to_allow(self, value: &str) -> String {
        let key = self.key();
        let env = format!("BERTH_{}", key.to_uppercase());
        match self {
            Rule::AllowedCapabilities => format!(
                "add \"{value}\" (or \"ALL\") to {key} in the agent config (or {env}, comma-separated)"
            ),
            Rule::AllowedHostPaths => format!(
                "add {value} or a directory above it to {key} in the agent config (or {env}, comma-separated)"
            ),
            Rule::AllowedVolumeDrivers | Rule::AllowedSharedVolumes | Rule::AllowedLogDrivers => {
                format!("add \"{value}\" to {key} in the agent config (or {env}, comma-separated)")
            }
            _ => format!("set {key} = true in the agent config (or {env}=true)"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A field of a task definition that the agent's policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent policy {rule} refuses {path}: {what}; {how}")]
pub struct PolicyViolation {
    pub rule: Rule,
    /// JSON path in the task definition, e.g. `containerDefinitions[0].privileged`.
    pub path: String,
    /// Index of the container the violation belongs to: the offender, or for
    /// a task-level field the first container it concerns (0 when none).
    pub container: usize,
    what: String,
    how: String,
}

impl PolicyViolation {
    fn new(rule: Rule, path: String, container: usize, what: String, value: &str) -> Self {
        Self {
            rule,
            path,
            container,
            what,
            how: format!("to allow it, {}", rule.how_to_allow(value)),
        }
    }

    /// The rule refuses it, and no setting opens it.
    fn never(rule: Rule, path: String, container: usize, what: String) -> Self {
        Self::with_how(
            rule,
            path,
            container,
            what,
            "bind another directory: no setting allows this one",
        )
    }

    /// The rule refuses it; `how` says what to do instead.
    fn with_how(rule: Rule, path: String, container: usize, what: String, how: &str) -> Self {
        Self {
            rule,
            path,
            container,
            what,
            how: how.to_owned(),
        }
    }
}

/// Checks `def` against `policy`; the first violation in definition order.
/// Host paths are looked at on the host as they are now (see the module
/// docs).
pub fn check(def: &TaskDefinition, policy: &Policy) -> Result<(), PolicyViolation> {
    if def.network_mode() == NetworkMode::Host && !policy.allow_host_network {
        return Err(PolicyViolation::new(
            Rule::AllowHostNetwork,
            "networkMode".to_owned(),
            0,
            "network mode host (the host's network stack) is not allowed on this host".to_owned(),
            "",
        ));
    }
    for (field, value) in [("pidMode", &def.pid_mode), ("ipcMode", &def.ipc_mode)] {
        if value.as_deref() == Some("host") && !policy.allow_host_pid_ipc {
            return Err(PolicyViolation::new(
                Rule::AllowHostPidIpc,
                field.to_owned(),
                0,
                format!("{field} host (the host's namespace) is not allowed on this host"),
                "",
            ));
        }
    }
    check_docker_volumes(def, policy)?;
    check_host_paths(def, policy)?;
    for (i, c) in def.container_definitions.iter().enumerate() {
        let base = format!("containerDefinitions[{i}]");
        if c.privileged == Some(true) && !policy.allow_privileged {
            return Err(PolicyViolation::new(
                Rule::AllowPrivileged,
                format!("{base}.privileged"),
                i,
                format!(
                    "container {} asks to be privileged, which is not allowed on this host",
                    c.name
                ),
                "",
            ));
        }
        let linux = c.linux_parameters.as_ref();
        if let Some(caps) = linux.and_then(|l| l.capabilities.as_ref()) {
            for (k, cap) in caps.add.iter().enumerate() {
                let name = normalize_capability(cap);
                if !capability_allowed(&name, &policy.allowed_capabilities) {
                    return Err(PolicyViolation::new(
                        Rule::AllowedCapabilities,
                        format!("{base}.linuxParameters.capabilities.add[{k}]"),
                        i,
                        format!(
                            "container {} adds capability {name}, which is not among the allowed capabilities ({})",
                            c.name,
                            list_or_none(&policy.allowed_capabilities)
                        ),
                        &name,
                    ));
                }
            }
        }
        if let Some(device) = linux.and_then(|l| l.devices.first())
            && !policy.allow_devices
        {
            return Err(PolicyViolation::new(
                Rule::AllowDevices,
                format!("{base}.linuxParameters.devices[0]"),
                i,
                format!(
                    "container {} asks for host device {}, and host devices are not allowed on this host",
                    c.name, device.host_path
                ),
                "",
            ));
        }
        check_security_options(i, &base, c, policy)?;
        check_log_configuration(i, &base, c, policy)?;
    }
    Ok(())
}

/// `a, b` or `none`.
fn list_or_none<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn check_security_options(
    i: usize,
    base: &str,
    c: &berth_taskdef::ContainerDefinition,
    policy: &Policy,
) -> Result<(), PolicyViolation> {
    if policy.allow_security_options {
        return Ok(());
    }
    for (k, option) in c.docker_security_options.iter().enumerate() {
        if !only_restricts(option) {
            return Err(PolicyViolation::new(
                Rule::AllowSecurityOptions,
                format!("{base}.dockerSecurityOptions[{k}]"),
                i,
                format!(
                    "container {} sets docker security option {option:?}, which can loosen its confinement; only no-new-privileges is allowed on this host",
                    c.name
                ),
                "",
            ));
        }
    }
    Ok(())
}

/// `no-new-privileges` (also `:true` / `=true`) only takes privileges away.
fn only_restricts(option: &str) -> bool {
    matches!(
        option.trim(),
        "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
    )
}

/// `cap_net_admin` → `NET_ADMIN`.
pub fn normalize_capability(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_owned)
        .unwrap_or(upper)
}

fn capability_allowed(name: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .map(|a| normalize_capability(a))
        .any(|a| a == "ALL" || a == name)
}

// ---------------------------------------------------------------------------
// Log drivers (`allowed_log_drivers`, `allow_log_driver_addresses`).

fn check_log_configuration(
    i: usize,
    base: &str,
    c: &berth_taskdef::ContainerDefinition,
    policy: &Policy,
) -> Result<(), PolicyViolation> {
    let Some(log) = &c.log_configuration else {
        return Ok(());
    };
    let driver = log.log_driver.trim();
    if !policy.allowed_log_drivers.iter().any(|d| d == driver) {
        return Err(PolicyViolation::new(
            Rule::AllowedLogDrivers,
            format!("{base}.logConfiguration.logDriver"),
            i,
            format!(
                "container {} logs through driver {driver}, which is not among the allowed log drivers ({}); the docker daemon, not the container, sends what a log driver sends",
                c.name,
                list_or_none(&policy.allowed_log_drivers)
            ),
            driver,
        ));
    }
    if policy.allow_log_driver_addresses {
        return Ok(());
    }
    for (key, value) in &log.options {
        if is_address_option(key, value)
            && let Some(why) = host_local_target(value)
        {
            return Err(PolicyViolation::new(
                Rule::AllowLogDriverAddresses,
                format!("{base}.logConfiguration.options.{key}"),
                i,
                format!(
                    "container {} sends its logs to {value:?}, {why}: the docker daemon connects from the host, where the container's network does not confine it",
                    c.name
                ),
                "",
            ));
        }
    }
    Ok(())
}

/// Whether a log option names where the daemon sends the logs.
fn is_address_option(key: &str, value: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    ["-address", "-url", "-endpoint", "-host"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
        || value.contains("://")
}

/// Why `value` (an address option) reaches the host itself, if it does: a
/// unix socket, a loopback, link-local or unspecified address, `localhost`,
/// or a numeric host that is not a plain address (`127.1`, `0x7f000001`).
pub fn host_local_target(value: &str) -> Option<&'static str> {
    let value = value.trim();
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), value),
    };
    if matches!(scheme.as_str(), "unix" | "unixgram" | "npipe") || value.starts_with('/') {
        return Some("a socket on the host");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else if authority.parse::<IpAddr>().is_ok() {
        authority
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = host.split('%').next().unwrap_or("").parse::<IpAddr>() {
        return host_local_ip(ip).then_some("an address of the host itself");
    }
    if host.is_empty()
        || host == "localhost"
        || host.ends_with(".localhost")
        || host.starts_with("localhost.")
        || host.starts_with("ip6-")
    {
        return Some("the host itself");
    }
    let numeric = host.starts_with("0x") || host.chars().all(|c| c.is_ascii_digit() || c == '.');
    numeric.then_some("a numeric host that is not a plain address")
}

fn host_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return host_local_ip(IpAddr::V4(v4));
            }
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

// ---------------------------------------------------------------------------
// Docker volumes (`allowed_volume_drivers`, `allow_volume_driver_opts`,
// `allowed_shared_volumes`).

/// The driver of a Docker volume whose configuration names none.
const DEFAULT_VOLUME_DRIVER: &str = "local";

/// Whether the `o` of local-driver options makes the volume a bind mount.
fn opts_bind(opts: &std::collections::BTreeMap<String, String>) -> bool {
    opts.get("o")
        .is_some_and(|o| o.split(',').any(|f| matches!(f.trim(), "bind" | "rbind")))
}

fn check_docker_volumes(def: &TaskDefinition, policy: &Policy) -> Result<(), PolicyViolation> {
    for (i, v) in def.volumes.iter().enumerate() {
        let Some(config) = &v.docker_volume_configuration else {
            continue;
        };
        let container = crate::volumes::first_user(def, &v.name).unwrap_or(0);
        let base = format!("volumes[{i}].dockerVolumeConfiguration");
        let driver = config
            .driver
            .as_deref()
            .map(str::trim)
            .unwrap_or(DEFAULT_VOLUME_DRIVER);
        if !policy.allowed_volume_drivers.iter().any(|d| d == driver) {
            return Err(PolicyViolation::new(
                Rule::AllowedVolumeDrivers,
                format!("{base}.driver"),
                container,
                format!(
                    "volume {} uses volume driver {driver}, which is not among the allowed volume drivers ({})",
                    v.name,
                    list_or_none(&policy.allowed_volume_drivers)
                ),
                driver,
            ));
        }
        if config.scope.as_deref() == Some("shared") && v.name.starts_with("berth-") {
            return Err(PolicyViolation::with_how(
                Rule::AllowedSharedVolumes,
                format!("volumes[{i}].name"),
                container,
                format!(
                    "shared volume {} has a name of berth's own task volumes (berth-…)",
                    v.name
                ),
                "name the shared volume without the berth- prefix: no setting allows this one",
            ));
        }
        if config.driver_opts.is_empty() {
            continue;
        }
        let keys: Vec<&str> = config.driver_opts.keys().map(String::as_str).collect();
        if !policy.allow_volume_driver_opts {
            // The values may hold credentials (cifs): the keys only.
            return Err(PolicyViolation::new(
                Rule::AllowVolumeDriverOpts,
                format!("{base}.driverOpts"),
                container,
                format!(
                    "volume {} sets driver options ({}), which can mount any host path or device",
                    v.name,
                    keys.join(", ")
                ),
                "",
            ));
        }
        if driver != DEFAULT_VOLUME_DRIVER {
            continue;
        }
        check_local_driver_opts(&base, v, container, policy)?;
    }
    Ok(())
}

/// The options of a `local` volume, once options are allowed: a bind
/// `device` is a host path ([`check_host_paths`] checks it), any other
/// absolute `device` a host device, a tmpfs takes none, and no mount option
/// may name a host path (`overlay`'s `lowerdir=…`).
fn check_local_driver_opts(
    base: &str,
    v: &berth_taskdef::Volume,
    container: usize,
    policy: &Policy,
) -> Result<(), PolicyViolation> {
    let Some(config) = &v.docker_volume_configuration else {
        return Ok(());
    };
    let opts = &config.driver_opts;
    let fs_type = opts.get("type").map(|t| t.trim().to_ascii_lowercase());
    let device = opts.get("device").map(|d| d.trim());
    let refuse = |what: String, field: &str| {
        Err(PolicyViolation::with_how(
            Rule::AllowVolumeDriverOpts,
            format!("{base}.driverOpts.{field}"),
            container,
            format!("volume {} {what}", v.name),
            "use a host volume (host.sourcePath) for host paths: no setting allows this one",
        ))
    };
    if opts_bind(opts) {
        return match device {
            Some(d) if d.starts_with('/') => Ok(()),
            _ => refuse(
                "is a bind mount without an absolute host path as its device".to_owned(),
                "device",
            ),
        };
    }
    if let Some(o) = opts.get("o")
        && let Some(option) = o
            .split(',')
            .find(|f| f.split_once('=').is_some_and(|(_, v)| v.contains('/')))
    {
        let name = option.split_once('=').map_or(option, |(k, _)| k);
        return refuse(
            format!("names a host path in its mount option {}", name.trim()),
            "o",
        );
    }
    match fs_type.as_deref() {
        Some(t) if HOST_VIEW_TYPES.contains(&t) => {
            return refuse(
                format!("mounts file system type {t}, a view of host paths or of the host kernel"),
                "type",
            );
        }
        Some("tmpfs") => {
            return match device {
                None | Some("tmpfs") => Ok(()),
                Some(_) => refuse(
                    "is a tmpfs with a device; a tmpfs takes none (or \"tmpfs\")".to_owned(),
                    "device",
                ),
            };
        }
        _ => {}
    }
    // `server:/export` (nfs) and `//server/share` (cifs) are remote; any
    // other device is a path on the host, relative ones to dockerd's `/`.
    let remote = |d: &str| d.contains(':') || d.starts_with("//");
    if let Some(d) = device
        && !remote(d)
        && !policy.allow_devices
    {
        return Err(PolicyViolation::new(
            Rule::AllowDevices,
            format!("{base}.driverOpts.device"),
            container,
            format!(
                "volume {} mounts host device {d}, and host devices are not allowed on this host",
                v.name
            ),
            "",
        ));
    }
    Ok(())
}

/// File system types whose mount shows host paths or the host kernel's
/// objects (`proc` mounted by dockerd is the host's `/proc`): refused in
/// driver options whatever the policy.
const HOST_VIEW_TYPES: &[&str] = &[
    "overlay",
    "aufs",
    "bind",
    "rbind",
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "efivarfs",
    "pstore",
    "binfmt_misc",
    "fusectl",
    "nsfs",
];

// ---------------------------------------------------------------------------
// Host paths (`allowed_host_paths` and the data dir).

/// A host path a task binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind<'a> {
    /// Index in `volumes`.
    pub volume: usize,
    /// JSON path of the field that names it.
    pub field: String,
    pub source: &'a str,
}

/// Every host path `def` binds, in volume order: `host.sourcePath`, and the
/// `device` of a local volume whose `driverOpts` `o` has `bind`/`rbind`.
pub fn host_binds(def: &TaskDefinition) -> Vec<HostBind<'_>> {
    let mut out = Vec::new();
    for (i, v) in def.volumes.iter().enumerate() {
        if let Some(source) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            out.push(HostBind {
                volume: i,
                field: format!("volumes[{i}].host.sourcePath"),
                source,
            });
        }
        if let Some(config) = &v.docker_volume_configuration
            && config
                .driver
                .as_deref()
                .is_none_or(|d| d.trim() == DEFAULT_VOLUME_DRIVER)
            && opts_bind(&config.driver_opts)
            && let Some(device) = config.driver_opts.get("device")
        {
            out.push(HostBind {
                volume: i,
                field: format!("volumes[{i}].dockerVolumeConfiguration.driverOpts.device"),
                source: device.trim(),
            });
        }
    }
    out
}

/// The allowed roots and protected paths, resolved once per check.
struct Roots<'a> {
    /// (lexical, resolved when it exists, as configured).
    allowed: Vec<(PathBuf, Option<PathBuf>, &'a PathBuf)>,
    /// (lexical, resolved, as configured).
    protected: Vec<(PathBuf, PathBuf, &'a PathBuf)>,
}

impl<'a> Roots<'a> {
    fn of(policy: &'a Policy) -> Self {
        Self {
            allowed: policy
                .allowed_host_paths
                .iter()
                .map(|p| (normalize(p), std::fs::canonicalize(p).ok(), p))
                .collect(),
            protected: policy
                .protected_host_paths
                .iter()
                .map(|p| (normalize(p), resolve(p), p))
                .collect(),
        }
    }

    /// The protected path `path` overlaps, if any.
    fn protected_overlap(&self, path: &Path) -> Option<&'a PathBuf> {
        self.protected
            .iter()
            .find(|(lexical, resolved, _)| {
                [lexical, resolved]
                    .iter()
                    .any(|p| path.starts_with(p) || p.starts_with(path))
            })
            .map(|(_, _, configured)| *configured)
    }
}

/// Checks every host path `def` binds, on the host as it is now, and that
/// none lies inside another.
fn check_host_paths(def: &TaskDefinition, policy: &Policy) -> Result<(), PolicyViolation> {
    let roots = Roots::of(policy);
    let binds = host_binds(def);
    let mut real: Vec<(PathBuf, &HostBind<'_>)> = Vec::with_capacity(binds.len());
    for bind in &binds {
        let path = check_bind(def, bind, policy, &roots)?;
        real.push((path, bind));
    }
    for (a, bind_a) in &real {
        for (b, bind_b) in &real {
            if a != b && b.starts_with(a) {
                let (va, vb) = (
                    &def.volumes[bind_a.volume].name,
                    &def.volumes[bind_b.volume].name,
                );
                return Err(PolicyViolation::with_how(
                    Rule::AllowedHostPaths,
                    bind_b.field.clone(),
                    crate::volumes::first_user(def, vb).unwrap_or(0),
                    format!(
                        "host path {} of volume {vb} lies inside host path {} of volume {va} of the same task, so a container that writes the one could redirect the other",
                        bind_b.source, bind_a.source
                    ),
                    "bind the outer directory only and use the inner one through it, or bind directories that do not contain each other: no setting allows this one",
                ));
            }
        }
    }
    Ok(())
}

/// Checks the host binds of container `container` of `def` right before it
/// is (re)started: Docker resolves them again at every start. They are its
/// own mount points' and those it takes through `volumesFrom` (from
/// containers of the task, transitively).
pub fn check_container_binds(
    def: &TaskDefinition,
    container: usize,
    policy: &Policy,
) -> Result<(), PolicyViolation> {
    let containers = &def.container_definitions;
    let mut reached = vec![false; containers.len()];
    let mut todo = vec![container];
    while let Some(i) = todo.pop() {
        if i >= containers.len() || std::mem::replace(&mut reached[i], true) {
            continue;
        }
        for from in &containers[i].volumes_from {
            if let Some(j) = containers
                .iter()
                .position(|c| c.name == from.source_container)
            {
                todo.push(j);
            }
        }
    }
    let mounted = |volume: &str| {
        containers
            .iter()
            .zip(&reached)
            .filter(|(_, r)| **r)
            .any(|(c, _)| c.mount_points.iter().any(|m| m.source_volume == volume))
    };
    let roots = Roots::of(policy);
    for bind in host_binds(def) {
        if mounted(&def.volumes[bind.volume].name) {
            check_bind(def, &bind, policy, &roots).map_err(|mut v| {
                v.container = container;
                v
            })?;
        }
    }
    Ok(())
}

/// One host bind: absolute, without `..`, clear of the data dir, below an
/// allowed root, and present there without a symbolic link below the root.
/// Returns the path as the host resolves it.
fn check_bind(
    def: &TaskDefinition,
    bind: &HostBind<'_>,
    policy: &Policy,
    roots: &Roots<'_>,
) -> Result<PathBuf, PolicyViolation> {
    let name = &def.volumes[bind.volume].name;
    let container = crate::volumes::first_user(def, name).unwrap_or(0);
    let source = bind.source;
    let path = Path::new(source);
    let refuse = |what: String, how: &str| {
        PolicyViolation::with_how(
            Rule::AllowedHostPaths,
            bind.field.clone(),
            container,
            format!("host path {source} of volume {name} {what}"),
            how,
        )
    };
    let data_dir = |dir: &PathBuf| {
        PolicyViolation::never(
            Rule::AllowedHostPaths,
            bind.field.clone(),
            container,
            format!(
                "host path {source} of volume {name} overlaps the agent's data dir {}, which holds its private key",
                dir.display()
            ),
        )
    };
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(refuse(
            "contains `..`".to_owned(),
            "name the directory without `..`: no setting allows it",
        ));
    }
    let lexical = normalize(path);
    if let Some(dir) = roots.protected_overlap(&lexical) {
        return Err(data_dir(dir));
    }
    // The outermost allowed root the path is under: were an inner one a
    // symbolic link a task swapped in through a bind of the outer one, the
    // walk from the outer one sees it.
    let root = path
        .is_absolute()
        .then(|| {
            roots
                .allowed
                .iter()
                .filter_map(|(lex, real, configured)| {
                    let below = [Some(lex), real.as_ref()]
                        .into_iter()
                        .flatten()
                        .find_map(|r| lexical.strip_prefix(r).ok())?;
                    Some((lex.components().count(), below, real, configured))
                })
                .min_by_key(|(depth, ..)| *depth)
        })
        .flatten();
    let Some((_, below, real_root, configured)) = root else {
        return Err(PolicyViolation::new(
            Rule::AllowedHostPaths,
            bind.field.clone(),
            container,
            format!(
                "host path {source} of volume {name} is not under an allowed host path ({})",
                list_or_none(
                    &policy
                        .allowed_host_paths
                        .iter()
                        .map(|p| p.display())
                        .collect::<Vec<_>>()
                )
            ),
            source,
        ));
    };
    let Some(real_root) = real_root else {
        return Err(refuse(
            format!(
                "does not exist: the allowed host path {} is missing on this host",
                configured.display()
            ),
            "create it on the host (berth does not create host directories)",
        ));
    };
    walk_below(real_root, below).map_err(|e| match e {
        WalkError::Missing(at) => refuse(
            format!("does not exist on this host ({} is missing)", real_root.join(at).display()),
            "create it on the host first (berth does not create host directories, so that a task cannot make one appear through a symbolic link)",
        ),
        WalkError::Symlink(at) => refuse(
            format!(
                "goes through a symbolic link ({}) below the allowed host path {}",
                real_root.join(at).display(),
                configured.display()
            ),
            "bind the directory the link points to by its own path: no setting allows a symbolic link below an allowed host path",
        ),
        WalkError::NotADirectory(at) => refuse(
            format!("goes through {}, which is not a directory", real_root.join(at).display()),
            "bind an existing directory or file",
        ),
        WalkError::Device(at) => refuse(
            format!("is a device node ({})", real_root.join(at).display()),
            "give the device to the container with linuxParameters.devices (allow_devices)",
        ),
        WalkError::Io(at, err) => refuse(
            format!("cannot be checked ({}: {err})", real_root.join(at).display()),
            "make it readable by the agent",
        ),
    })?;
    let actual = real_root.join(below);
    if let Some(dir) = roots.protected_overlap(&actual) {
        return Err(data_dir(dir));
    }
    Ok(actual)
}

/// Why a walk below an allowed root failed, with the part walked so far.
#[derive(Debug)]
enum WalkError {
    Missing(PathBuf),
    Symlink(PathBuf),
    NotADirectory(PathBuf),
    Device(PathBuf),
    Io(PathBuf, nix::Error),
}

/// Opens every component of `below` from `root`'s directory, none followed
/// if it is a symbolic link.
fn walk_below(root: &Path, below: &Path) -> Result<(), WalkError> {
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut at = PathBuf::new();
    let mut dir = open(root, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| WalkError::Io(at.clone(), e))?;
    let parts: Vec<_> = below.components().collect();
    for (k, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            continue;
        };
        at.push(name);
        let fd = match openat(&dir, *name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::Error::ENOENT) => return Err(WalkError::Missing(at)),
            Err(nix::Error::ENOTDIR) => return Err(WalkError::NotADirectory(at)),
            Err(e) => return Err(WalkError::Io(at, e)),
        };
        let stat = fstat(&fd).map_err(|e| WalkError::Io(at.clone(), e))?;
        let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            return Err(WalkError::Symlink(at));
        }
        if kind != SFlag::S_IFDIR && k + 1 < parts.len() {
            return Err(WalkError::NotADirectory(at));
        }
        if kind == SFlag::S_IFBLK || kind == SFlag::S_IFCHR {
            return Err(WalkError::Device(at));
        }
        dir = fd;
    }
    Ok(())
}

/// `path` with `.` and `..` resolved and the symbolic links of its longest
/// existing prefix followed; parts that do not exist are appended as they
/// are. For the operator's own paths (the data dir).
pub fn resolve(path: &Path) -> PathBuf {
    let lexical = normalize(path);
    let mut existing = lexical.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return lexical,
        }
    }
}

/// Lexical normalisation: `/a/./b/../c` → `/a/c`; `..` never climbs above `/`.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => out.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_taskdef::{
        Capabilities, ContainerDefinition, Device, DockerVolumeConfiguration, HostVolume,
        LinuxParameters, LogConfiguration, MountPoint, Volume,
    };

    fn container(name: &str) -> ContainerDefinition {
        ContainerDefinition {
            name: name.to_owned(),
            image: "busybox".to_owned(),
            memory: Some(16),
            ..Default::default()
        }
    }

    fn task(containers: Vec<ContainerDefinition>) -> TaskDefinition {
        TaskDefinition {
            family: "web".to_owned(),
            container_definitions: containers,
            ..Default::default()
        }
    }

    fn violation(def: &TaskDefinition, policy: &Policy) -> PolicyViolation {
        match check(def, policy) {
            Err(v) => v,
            Ok(()) => panic!("expected a policy violation"),
        }
    }

    fn assert_names(v: &PolicyViolation, rule: &str, path: &str) {
        let text = v.to_string();
        assert_eq!(v.rule.key(), rule);
        assert_eq!(v.path, path);
        assert!(text.contains(rule), "{text}");
        assert!(text.contains(path), "{text}");
        assert!(text.contains("to allow it"), "{text}");
        assert!(text.starts_with("agent policy"), "{text}");
    }

    #[test]
    fn a_plain_task_passes_the_default_policy() {
        let def = task(vec![container("app")]);
        assert_eq!(check(&def, &Policy::default()), Ok(()));
    }

    #[test]
    fn privileged_is_refused_by_default_and_allowed_when_opened() {
        let mut app = container("app");
        app.privileged = Some(true);
        let def = task(vec![container("init"), app]);
        let v = violation(&def, &Policy::default());
        assert_names(&v, "allow_privileged", "containerDefinitions[1].privileged");
        assert_eq!(v.container, 1);
        assert!(v.to_string().contains("allow_privileged = true"), "{v}");
        assert!(v.to_string().contains("BERTH_ALLOW_PRIVILEGED=true"), "{v}");
        let policy = Policy {
            allow_privileged: true,
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
        // privileged: false is no privilege at all.
        let mut app = container("app");
        app.privileged = Some(false);
        assert_eq!(check(&task(vec![app]), &Policy::default()), Ok(()));
    }

    #[test]
    fn host_network_is_refused_by_default_and_allowed_when_opened() {
        let mut def = task(vec![container("app")]);
        def.network_mode = Some("host".to_owned());
        let v = violation(&def, &Policy::default());
        assert_names(&v, "allow_host_network", "networkMode");
        assert_eq!(v.container, 0);
        let open = Policy {
            allow_host_network: true,
            ..Policy::default()
        };
        assert_eq!(check(&def, &open), Ok(()));
        def.network_mode = Some("bridge".to_owned());
        assert_eq!(check(&def, &Policy::default()), Ok(()));
    }

    #[test]
    fn host_pid_and_ipc_are_refused_by_default() {
        let mut def = task(vec![container("app")]);
        def.pid_mode = Some("host".to_owned());
        assert_names(
            &violation(&def, &Policy::default()),
            "allow_host_pid_ipc",
            "pidMode",
        );
        def.pid_mode = None;
        def.ipc_mode = Some("host".to_owned());
        assert_names(
            &violation(&def, &Policy::default()),
            "allow_host_pid_ipc",
            "ipcMode",
        );
        // ipcMode none takes something away: always fine.
        def.ipc_mode = Some("none".to_owned());
        assert_eq!(check(&def, &Policy::default()), Ok(()));
        def.ipc_mode = Some("host".to_owned());
        def.pid_mode = Some("host".to_owned());
        let policy = Policy {
            allow_host_pid_ipc: true,
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
    }

    #[test]
    fn added_capabilities_must_be_listed() {
        let mut app = container("app");
        app.linux_parameters = Some(LinuxParameters {
            capabilities: Some(Capabilities {
                add: vec!["CHOWN".to_owned(), "NET_ADMIN".to_owned()],
                drop: vec!["ALL".to_owned()],
            }),
            ..Default::default()
        });
        let def = task(vec![app]);
        let v = violation(&def, &Policy::default());
        assert_names(
            &v,
            "allowed_capabilities",
            "containerDefinitions[0].linuxParameters.capabilities.add[0]",
        );
        assert!(v.to_string().contains("CHOWN"), "{v}");
        assert!(v.to_string().contains("(none)"), "{v}");

        let policy = Policy {
            allowed_capabilities: vec!["chown".to_owned()],
            ..Policy::default()
        };
        let v = violation(&def, &policy);
        assert_eq!(
            v.path,
            "containerDefinitions[0].linuxParameters.capabilities.add[1]"
        );
        assert!(v.to_string().contains("add \"NET_ADMIN\""), "{v}");

        let policy = Policy {
            allowed_capabilities: vec!["CAP_CHOWN".to_owned(), "NET_ADMIN".to_owned()],
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
        let policy = Policy {
            allowed_capabilities: vec!["ALL".to_owned()],
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
    }

    #[test]
    fn adding_all_capabilities_needs_all() {
        let mut app = container("app");
        app.linux_parameters = Some(LinuxParameters {
            capabilities: Some(Capabilities {
                add: vec!["ALL".to_owned()],
                drop: Vec::new(),
            }),
            ..Default::default()
        });
        let def = task(vec![app]);
        let policy = Policy {
            allowed_capabilities: vec!["NET_ADMIN".to_owned()],
            ..Policy::default()
        };
        assert_eq!(violation(&def, &policy).rule, Rule::AllowedCapabilities);
    }

    #[test]
    fn dropping_capabilities_is_always_allowed() {
        let mut app = container("app");
        app.linux_parameters = Some(LinuxParameters {
            capabilities: Some(Capabilities {
                add: Vec::new(),
                drop: vec!["NET_RAW".to_owned()],
            }),
            ..Default::default()
        });
        assert_eq!(check(&task(vec![app]), &Policy::default()), Ok(()));
    }

    #[test]
    fn devices_are_refused_by_default() {
        let mut app = container("app");
        app.linux_parameters = Some(LinuxParameters {
            devices: vec![Device {
                host_path: "/dev/sda".to_owned(),
                container_path: None,
                permissions: Vec::new(),
            }],
            ..Default::default()
        });
        let def = task(vec![app]);
        let v = violation(&def, &Policy::default());
        assert_names(
            &v,
            "allow_devices",
            "containerDefinitions[0].linuxParameters.devices[0]",
        );
        assert!(v.to_string().contains("/dev/sda"), "{v}");
        let policy = Policy {
            allow_devices: true,
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
    }

    #[test]
    fn security_options_are_refused_except_no_new_privileges() {
        let mut app = container("app");
        app.docker_security_options = vec![
            "no-new-privileges".to_owned(),
            "seccomp=unconfined".to_owned(),
        ];
        let def = task(vec![app]);
        let v = violation(&def, &Policy::default());
        assert_names(
            &v,
            "allow_security_options",
            "containerDefinitions[0].dockerSecurityOptions[1]",
        );
        assert!(v.to_string().contains("seccomp=unconfined"), "{v}");
        let policy = Policy {
            allow_security_options: true,
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));

        let mut app = container("app");
        app.docker_security_options = vec!["no-new-privileges:true".to_owned()];
        assert_eq!(check(&task(vec![app]), &Policy::default()), Ok(()));
    }

    fn bind_task(source: &str) -> TaskDefinition {
        let mut app = container("app");
        app.mount_points = vec![MountPoint {
            source_volume: "data".to_owned(),
            container_path: "/data".to_owned(),
            read_only: None,
        }];
        let mut def = task(vec![container("init"), app]);
        def.volumes = vec![
            Volume {
                name: "scratch".to_owned(),
                ..Default::default()
            },
            Volume {
                name: "data".to_owned(),
                host: Some(HostVolume {
                    source_path: Some(source.to_owned()),
                }),
                ..Default::default()
            },
        ];
        def
    }

    /// A policy allowing `<dir>/allowed`, with the data dir `<dir>/allowed/data`.
    fn allowing(dir: &Path) -> std::io::Result<Policy> {
        let allowed = dir.join("allowed");
        std::fs::create_dir_all(allowed.join("data"))?;
        std::fs::create_dir(dir.join("secret"))?;
        Ok(Policy {
            allowed_host_paths: vec![allowed.clone()],
            protected_host_paths: vec![allowed.join("data")],
            ..Policy::default()
        })
    }

    #[test]
    fn host_paths_must_be_under_an_allowed_path() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = allowing(dir.path())?;
        let allowed = dir.path().join("allowed");
        std::fs::create_dir_all(allowed.join("sub/x"))?;
        let path = |p: &str| format!("{}/{p}", dir.path().display());

        // Inside and the root itself are fine.
        for ok in ["allowed/sub", "allowed/./sub/x"] {
            assert_eq!(check(&bind_task(&path(ok)), &policy), Ok(()), "{ok}");
        }
        // Outside, and a sibling with the same prefix, are not.
        for bad in ["secret", "allowed-not"] {
            let v = violation(&bind_task(&path(bad)), &policy);
            assert_names(&v, "allowed_host_paths", "volumes[1].host.sourcePath");
            assert_eq!(v.container, 1, "the container that mounts it");
            assert!(v.to_string().contains(&path(bad)), "{v}");
            assert!(
                v.to_string().contains(&allowed.display().to_string()),
                "{v}"
            );
        }
        // `..` is refused outright, even when it stays inside.
        for bad in [
            "allowed/../secret",
            "allowed/sub/../sub",
            "allowed/x/../../secret",
        ] {
            let v = violation(&bind_task(&path(bad)), &policy);
            assert_eq!(v.rule, Rule::AllowedHostPaths, "{bad}");
            assert!(v.to_string().contains("`..`"), "{v}");
        }
        Ok(())
    }

    #[test]
    fn host_paths_must_exist_without_a_symlink_below_the_root() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = allowing(dir.path())?;
        let allowed = dir.path().join("allowed");
        let path = |p: &str| format!("{}/{p}", dir.path().display());

        // Missing: refused, never created (Docker would create it).
        let v = violation(&bind_task(&path("allowed/not/yet")), &policy);
        assert_eq!(v.rule, Rule::AllowedHostPaths);
        assert_eq!(v.path, "volumes[1].host.sourcePath");
        let text = v.to_string();
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains(&path("allowed/not")), "{text}");
        assert!(!allowed.join("not").exists());

        // A symlink anywhere below the root, pointing out or in, last or not.
        std::os::unix::fs::symlink(dir.path().join("secret"), allowed.join("escape"))?;
        std::fs::create_dir(allowed.join("real"))?;
        std::os::unix::fs::symlink(allowed.join("real"), allowed.join("inside"))?;
        std::os::unix::fs::symlink(allowed.join("data"), allowed.join("flip"))?;
        for bad in [
            "allowed/escape",
            "allowed/escape/sub",
            "allowed/inside",
            "allowed/flip",
        ] {
            let v = violation(&bind_task(&path(bad)), &policy);
            assert_eq!(v.rule, Rule::AllowedHostPaths, "{bad}");
            assert!(v.to_string().contains("symbolic link"), "{bad}: {v}");
        }
        // A file is fine; a device node is not.
        std::fs::write(allowed.join("real/file"), "x")?;
        assert_eq!(
            check(&bind_task(&path("allowed/real/file")), &policy),
            Ok(())
        );
        let v = violation(&bind_task(&path("allowed/real/file/below")), &policy);
        assert!(v.to_string().contains("not a directory"), "{v}");

        // The root itself may be the operator's symlink.
        std::os::unix::fs::symlink(&allowed, dir.path().join("root-link"))?;
        let linked = Policy {
            allowed_host_paths: vec![dir.path().join("root-link")],
            ..policy.clone()
        };
        assert_eq!(check(&bind_task(&path("root-link/real")), &linked), Ok(()));
        assert_eq!(check(&bind_task(&path("allowed/real")), &linked), Ok(()));
        // Nested roots: the outer one is walked, so an inner root that a
        // task replaced by a link (through a bind of the outer) is seen.
        std::os::unix::fs::symlink(dir.path().join("secret"), allowed.join("inner"))?;
        let nested = Policy {
            allowed_host_paths: vec![allowed.clone(), allowed.join("inner")],
            ..policy.clone()
        };
        let v = violation(&bind_task(&path("allowed/inner")), &nested);
        assert!(v.to_string().contains("symbolic link"), "{v}");
        // A missing root is named.
        let missing = Policy {
            allowed_host_paths: vec![dir.path().join("nowhere")],
            ..policy
        };
        let v = violation(&bind_task(&path("nowhere/x")), &missing);
        assert!(v.to_string().contains("is missing on this host"), "{v}");
        Ok(())
    }

    #[test]
    fn a_link_planted_after_the_check_is_seen_before_the_start() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = allowing(dir.path())?;
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(allowed.join("flip"))?;
        let def = bind_task(&format!("{}/flip", allowed.display()));
        assert_eq!(check(&def, &policy), Ok(()));
        assert_eq!(check_container_binds(&def, 1, &policy), Ok(()));
        // Container 0 mounts nothing: nothing to check for it.
        assert_eq!(check_container_binds(&def, 0, &policy), Ok(()));

        // Swapped for a link into the data dir before a (re)start.
        std::fs::remove_dir(allowed.join("flip"))?;
        std::os::unix::fs::symlink(allowed.join("data"), allowed.join("flip"))?;
        let v = match check_container_binds(&def, 1, &policy) {
            Err(v) => v,
            Ok(()) => panic!("a swapped link must be refused"),
        };
        assert_eq!(v.rule, Rule::AllowedHostPaths);
        assert_eq!(v.container, 1);
        assert!(v.to_string().contains("symbolic link"), "{v}");
        assert_eq!(check_container_binds(&def, 0, &policy), Ok(()));
        // Removed: refused too, never created.
        std::fs::remove_file(allowed.join("flip"))?;
        let v = check_container_binds(&def, 1, &policy).err();
        assert!(
            v.is_some_and(|v| v.to_string().contains("does not exist")),
            "missing at start"
        );
        Ok(())
    }

    #[test]
    fn binds_taken_through_volumes_from_are_checked_at_the_taker_start() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = allowing(dir.path())?;
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(allowed.join("flip"))?;
        let mut def = bind_task(&format!("{}/flip", allowed.display()));
        // init takes app's volumes, and a third container takes init's.
        def.container_definitions[0].volumes_from = vec![berth_taskdef::VolumeFrom {
            source_container: "app".to_owned(),
            read_only: Some(true),
        }];
        let mut third = container("third");
        third.volumes_from = vec![berth_taskdef::VolumeFrom {
            source_container: "init".to_owned(),
            read_only: None,
        }];
        def.container_definitions.push(third);
        assert_eq!(check(&def, &policy), Ok(()));
        std::fs::remove_dir(allowed.join("flip"))?;
        std::os::unix::fs::symlink(allowed.join("data"), allowed.join("flip"))?;
        for taker in [0, 1, 2] {
            let v = check_container_binds(&def, taker, &policy).err();
            assert!(
                v.as_ref().is_some_and(
                    |v| v.container == taker && v.to_string().contains("symbolic link")
                ),
                "container {taker}: {v:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_bind_inside_another_bind_of_the_task_is_refused() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = allowing(dir.path())?;
        let allowed = dir.path().join("allowed");
        std::fs::create_dir_all(allowed.join("x/flip"))?;
        std::fs::create_dir_all(allowed.join("y"))?;
        let mut def = bind_task(&format!("{}/x", allowed.display()));
        def.volumes.push(Volume {
            name: "flip".to_owned(),
            host: Some(HostVolume {
                source_path: Some(format!("{}/x/flip", allowed.display())),
            }),
            ..Default::default()
        });
        def.container_definitions[0].mount_points = vec![MountPoint {
            source_volume: "flip".to_owned(),
            container_path: "/h".to_owned(),
            read_only: Some(true),
        }];
        let v = violation(&def, &policy);
        assert_eq!(v.rule, Rule::AllowedHostPaths);
        assert_eq!(v.path, "volumes[2].host.sourcePath");
        assert_eq!(v.container, 0, "the container that mounts the inner one");
        let text = v.to_string();
        assert!(text.contains("lies inside host path"), "{text}");
        assert!(text.contains("no setting allows"), "{text}");
        // Siblings, and the same directory twice, are fine.
        def.volumes[2].host = Some(HostVolume {
            source_path: Some(format!("{}/y", allowed.display())),
        });
        assert_eq!(check(&def, &policy), Ok(()));
        def.volumes[2].host = Some(HostVolume {
            source_path: Some(format!("{}/x", allowed.display())),
        });
        assert_eq!(check(&def, &policy), Ok(()));
        Ok(())
    }

    #[test]
    fn default_host_paths_refuse_system_directories() {
        for bad in [
            "/",
            "/etc",
            "/var/run/docker.sock",
            "/var/lib/berth",
            "/tmp",
            "/srv2",
        ] {
            let v = violation(&bind_task(bad), &Policy::default());
            assert_eq!(v.rule, Rule::AllowedHostPaths, "{bad}");
        }
        let none = Policy {
            allowed_host_paths: Vec::new(),
            ..Policy::default()
        };
        let v = violation(&bind_task("/srv/www"), &none);
        assert!(v.to_string().contains("(none)"), "{v}");
    }

    #[test]
    fn binds_overlapping_the_data_dir_are_refused_even_when_allowed() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = allowing(dir.path())?;
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(allowed.join("data-www"))?;
        std::fs::create_dir(allowed.join("data/identity"))?;
        let data = allowed.join("data");
        for bad in ["", "/data", "/data/identity", "/./data"] {
            let v = violation(&bind_task(&format!("{}{bad}", allowed.display())), &policy);
            assert_eq!(v.rule, Rule::AllowedHostPaths, "{bad}");
            let text = v.to_string();
            assert!(
                text.contains(&format!("data dir {}", data.display())),
                "{text}"
            );
            assert!(text.contains("no setting allows"), "{text}");
        }
        assert_eq!(
            check(
                &bind_task(&format!("{}/data-www", allowed.display())),
                &policy
            ),
            Ok(())
        );
        Ok(())
    }

    /// A task whose volume `v` (mounted by its only container) is a Docker
    /// volume with `driver` and `opts`.
    fn opts_task(driver: Option<&str>, opts: &[(&str, &str)], scope: &str) -> TaskDefinition {
        let mut app = container("app");
        app.mount_points = vec![MountPoint {
            source_volume: "v".to_owned(),
            container_path: "/h".to_owned(),
            read_only: Some(true),
        }];
        let mut def = task(vec![app]);
        def.volumes = vec![Volume {
            name: "v".to_owned(),
            docker_volume_configuration: Some(DockerVolumeConfiguration {
                scope: Some(scope.to_owned()),
                autoprovision: (scope == "shared").then_some(true),
                driver: driver.map(str::to_owned),
                driver_opts: opts
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }];
        def
    }

    #[test]
    fn driver_options_are_refused_by_default_without_their_values() {
        for scope in ["task", "shared"] {
            let def = opts_task(
                Some("local"),
                &[
                    ("type", "none"),
                    ("o", "bind"),
                    ("device", "/var/lib/berth"),
                ],
                scope,
            );
            let v = violation(&def, &Policy::default());
            assert_names(
                &v,
                "allow_volume_driver_opts",
                "volumes[0].dockerVolumeConfiguration.driverOpts",
            );
            let text = v.to_string();
            assert!(text.contains("device, o, type"), "{text}");
            assert!(!text.contains("/var/lib/berth"), "values stay out: {text}");
            assert!(
                text.contains("BERTH_ALLOW_VOLUME_DRIVER_OPTS=true"),
                "{text}"
            );
        }
        // No options: a plain local volume.
        assert_eq!(
            check(&opts_task(Some("local"), &[], "task"), &Policy::default()),
            Ok(())
        );
        assert_eq!(
            check(&opts_task(None, &[], "task"), &Policy::default()),
            Ok(())
        );
    }

    #[test]
    fn volume_drivers_must_be_listed() {
        let def = opts_task(Some("vieux/sshfs"), &[], "task");
        let v = violation(&def, &Policy::default());
        assert_names(
            &v,
            "allowed_volume_drivers",
            "volumes[0].dockerVolumeConfiguration.driver",
        );
        assert!(v.to_string().contains("(local)"), "{v}");
        assert!(v.to_string().contains("add \"vieux/sshfs\""), "{v}");
        let policy = Policy {
            allowed_volume_drivers: vec!["local".to_owned(), "vieux/sshfs".to_owned()],
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
        // Not `local`, opts allowed: passed through, not read as local ones.
        let def = opts_task(
            Some("vieux/sshfs"),
            &[("o", "bind"), ("device", "/")],
            "task",
        );
        let open = Policy {
            allow_volume_driver_opts: true,
            ..policy
        };
        assert_eq!(check(&def, &open), Ok(()));
    }

    #[test]
    fn allowed_driver_options_still_follow_the_host_path_and_device_rules() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = Policy {
            allow_volume_driver_opts: true,
            ..allowing(dir.path())?
        };
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(allowed.join("www"))?;
        let data = allowed.join("data").display().to_string();
        let www = allowed.join("www").display().to_string();
        let secret = dir.path().join("secret").display().to_string();
        let device = "volumes[0].dockerVolumeConfiguration.driverOpts.device";
        for scope in ["task", "shared"] {
            // A bind of the data dir, in each spelling of `o`.
            for o in ["bind", "rbind", "ro,bind", " rbind ,nosuid"] {
                let def = opts_task(
                    Some("local"),
                    &[("type", "none"), ("o", o), ("device", &data)],
                    scope,
                );
                let v = violation(&def, &policy);
                assert_eq!((v.rule, v.path.as_str()), (Rule::AllowedHostPaths, device));
                assert!(v.to_string().contains("data dir"), "{o}: {v}");
            }
            // Outside the allow-list; inside it.
            let def = opts_task(None, &[("o", "bind"), ("device", &secret)], scope);
            let v = violation(&def, &policy);
            assert_eq!((v.rule, v.path.as_str()), (Rule::AllowedHostPaths, device));
            assert!(
                v.to_string().contains("not under an allowed host path"),
                "{v}"
            );
            let def = opts_task(
                None,
                &[("type", "none"), ("o", "bind"), ("device", &www)],
                scope,
            );
            assert_eq!(check(&def, &policy), Ok(()));
            // A bind without a path device.
            let def = opts_task(None, &[("o", "bind")], scope);
            assert_eq!(violation(&def, &policy).rule, Rule::AllowVolumeDriverOpts);
        }
        // A block device needs allow_devices.
        let def = opts_task(None, &[("type", "ext4"), ("device", "/dev/sda1")], "task");
        let v = violation(&def, &policy);
        assert_names(&v, "allow_devices", device);
        assert!(v.to_string().contains("/dev/sda1"), "{v}");
        let devices = Policy {
            allow_devices: true,
            ..policy.clone()
        };
        assert_eq!(check(&def, &devices), Ok(()));
        // tmpfs: without a device (or the conventional "tmpfs") only.
        for ok in [
            vec![("type", "tmpfs")],
            vec![("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=64m")],
        ] {
            assert_eq!(check(&opts_task(None, &ok, "task"), &policy), Ok(()));
        }
        let def = opts_task(None, &[("type", "tmpfs"), ("device", &data)], "task");
        assert_eq!(violation(&def, &devices).path, device);
        // Host paths in mount options, and overlays.
        let def = opts_task(
            None,
            &[
                ("type", "overlay"),
                ("device", "overlay"),
                (
                    "o",
                    &format!("lowerdir={data},upperdir={www}/u,workdir={www}/w"),
                ),
            ],
            "task",
        );
        let v = violation(&def, &devices);
        assert_eq!(v.rule, Rule::AllowVolumeDriverOpts);
        assert!(v.to_string().contains("lowerdir"), "{v}");
        let def = opts_task(None, &[("type", "overlay"), ("o", "lowerdir=etc")], "task");
        assert_eq!(violation(&def, &devices).rule, Rule::AllowVolumeDriverOpts);
        // A relative device is a host path too (dockerd's cwd is `/`), and
        // kernel views are refused whatever the policy.
        let def = opts_task(None, &[("type", "ext4"), ("device", "dev/sda1")], "task");
        assert_eq!(violation(&def, &policy).rule, Rule::AllowDevices);
        for fs in ["proc", "sysfs", "devtmpfs", "cgroup2"] {
            let def = opts_task(None, &[("type", fs), ("device", fs)], "task");
            let v = violation(&def, &devices);
            assert_eq!(v.rule, Rule::AllowVolumeDriverOpts, "{fs}");
            assert_eq!(
                v.path,
                "volumes[0].dockerVolumeConfiguration.driverOpts.type"
            );
        }
        // A network file system: the operator opened options.
        let def = opts_task(
            None,
            &[
                ("type", "nfs"),
                ("o", "addr=10.0.0.1,rw"),
                ("device", ":/export"),
            ],
            "task",
        );
        assert_eq!(check(&def, &policy), Ok(()));
        Ok(())
    }

    #[test]
    fn a_driver_option_bind_is_checked_again_before_each_start() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let policy = Policy {
            allow_volume_driver_opts: true,
            ..allowing(dir.path())?
        };
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(allowed.join("flip"))?;
        let flip = allowed.join("flip").display().to_string();
        let def = opts_task(None, &[("o", "bind"), ("device", &flip)], "task");
        assert_eq!(check(&def, &policy), Ok(()));
        std::fs::remove_dir(allowed.join("flip"))?;
        std::os::unix::fs::symlink(allowed.join("data"), allowed.join("flip"))?;
        let v = check_container_binds(&def, 0, &policy).err();
        assert!(v.is_some_and(|v| v.to_string().contains("symbolic link")));
        Ok(())
    }

    #[test]
    fn shared_volumes_may_not_take_berth_names() {
        let def = opts_task(None, &[], "shared");
        assert_eq!(check(&def, &Policy::default()), Ok(()));
        let mut def = def;
        def.volumes[0].name = "berth-web-scratch-0123456789ab".to_owned();
        def.container_definitions[0].mount_points[0].source_volume = def.volumes[0].name.clone();
        let v = violation(&def, &Policy::default());
        assert_eq!(v.rule, Rule::AllowedSharedVolumes);
        assert_eq!(v.path, "volumes[0].name");
        assert!(v.to_string().contains("berth-"), "{v}");
        // A task-scoped one is named by berth anyway.
        let mut def = opts_task(None, &[], "task");
        def.volumes[0].name = "berth-x".to_owned();
        def.container_definitions[0].mount_points[0].source_volume = "berth-x".to_owned();
        assert_eq!(check(&def, &Policy::default()), Ok(()));
    }

    fn logging(driver: &str, options: &[(&str, &str)]) -> TaskDefinition {
        let mut app = container("app");
        app.log_configuration = Some(LogConfiguration {
            log_driver: driver.to_owned(),
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secret_options: None,
        });
        task(vec![container("init"), app])
    }

    #[test]
    fn log_drivers_must_be_listed() {
        for ok in ["json-file", "local", "journald", "none"] {
            assert_eq!(check(&logging(ok, &[]), &Policy::default()), Ok(()), "{ok}");
        }
        for bad in ["syslog", "gelf", "fluentd", "splunk", "awslogs"] {
            let v = violation(&logging(bad, &[]), &Policy::default());
            assert_names(
                &v,
                "allowed_log_drivers",
                "containerDefinitions[1].logConfiguration.logDriver",
            );
            assert_eq!(v.container, 1);
            assert!(v.to_string().contains(&format!("add \"{bad}\"")), "{v}");
        }
    }

    #[test]
    fn log_addresses_on_the_host_are_refused_unless_opened() {
        let policy = Policy {
            allowed_log_drivers: owned(&["syslog", "gelf", "fluentd", "splunk", "json-file"]),
            ..Policy::default()
        };
        for (driver, key, value) in [
            ("syslog", "syslog-address", "tcp://127.0.0.1:27499"),
            ("syslog", "syslog-address", "udp://[::1]:514"),
            ("syslog", "syslog-address", "unix:///run/some.sock"),
            ("syslog", "syslog-address", "unixgram:///dev/log"),
            ("gelf", "gelf-address", "udp://169.254.169.254:12201"),
            ("gelf", "gelf-address", "tcp://0.0.0.0:12201"),
            ("fluentd", "fluentd-address", "localhost:24224"),
            ("fluentd", "fluentd-address", "unix:///var/run/fluent.sock"),
            ("fluentd", "fluentd-address", "127.0.0.2:24224"),
            ("splunk", "splunk-url", "https://127.1:8088"),
            ("splunk", "splunk-url", "http://user@LOCALHOST.:8088/x"),
            ("splunk", "splunk-url", "https://[::ffff:127.0.0.1]:8088"),
            ("syslog", "syslog-address", "tcp://[fe80::1%eth0]:514"),
            ("json-file", "max-size", "unix:///x"),
        ] {
            let def = logging(driver, &[("tag", "x"), (key, value)]);
            let v = violation(&def, &policy);
            assert_names(
                &v,
                "allow_log_driver_addresses",
                &format!("containerDefinitions[1].logConfiguration.options.{key}"),
            );
            assert!(v.to_string().contains(value), "{v}");
            let open = Policy {
                allow_log_driver_addresses: true,
                ..policy.clone()
            };
            assert_eq!(check(&def, &open), Ok(()), "{value}");
        }
        for (driver, key, value) in [
            ("syslog", "syslog-address", "tcp://10.0.3.4:514"),
            ("gelf", "gelf-address", "udp://logs.example:12201"),
            ("fluentd", "fluentd-address", "192.0.2.1:24224"),
            ("splunk", "splunk-url", "https://splunk.example:8088"),
            ("syslog", "syslog-address", "udp://[2001:db8::1]:514"),
        ] {
            let def = logging(driver, &[(key, value)]);
            assert_eq!(check(&def, &policy), Ok(()), "{value}");
        }
    }

    #[test]
    fn host_volumes_without_a_source_path_are_not_binds() {
        let mut def = task(vec![container("app")]);
        def.volumes = vec![Volume {
            name: "scratch".to_owned(),
            host: Some(HostVolume { source_path: None }),
            ..Default::default()
        }];
        let policy = Policy {
            allowed_host_paths: Vec::new(),
            ..Policy::default()
        };
        assert_eq!(check(&def, &policy), Ok(()));
    }

    #[test]
    fn task_level_rules_come_first() {
        let mut app = container("app");
        app.privileged = Some(true);
        let mut def = task(vec![app]);
        def.pid_mode = Some("host".to_owned());
        assert_eq!(
            violation(&def, &Policy::default()).rule,
            Rule::AllowHostPidIpc
        );
    }

    #[test]
    fn normalisation_never_climbs_above_the_root() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../../etc")), PathBuf::from("/etc"));
        assert_eq!(normalize_capability(" cap_net_admin "), "NET_ADMIN");
    }
}
