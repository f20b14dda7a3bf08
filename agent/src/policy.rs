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
//!   `allow_devices`, `allow_security_options`, `allowed_host_paths`.
//! - [`check`] returns the first violation, in definition order (task-level
//!   fields first, then each container); its message names the rule, the
//!   JSON path of the offending field and how to allow it.
//! - Host paths are compared after resolving `.`, `..` and symbolic links
//!   (of the longest prefix that exists), component by component: `/srv2` is
//!   not under `/srv`, and neither is `/srv/../etc` or a symlink in `/srv`
//!   that points to `/etc`.
//! - A bind that overlaps the agent's data dir (inside it, or a directory
//!   above it) is refused whatever `allowed_host_paths` says: the data dir
//!   holds the agent's private key, and an operator who allows `/srv` may
//!   well have put `data_dir` under it.
//! - `dockerSecurityOptions` `no-new-privileges` only takes privileges away,
//!   so it is always allowed; every other option (`seccomp=…`,
//!   `apparmor=…`, `label:…`) can also loosen confinement and is gated.
//!
//! # Limitations
//! - The policy is checked when a task starts; a task already running when
//!   the operator tightens the policy keeps running until it stops.
//! - A symbolic link created under an allowed path between the check and the
//!   container's creation is not seen (the check is not atomic with Docker's
//!   mount).

use std::fmt;
use std::path::{Component, Path, PathBuf};

use berth_taskdef::{NetworkMode, TaskDefinition};

/// What the operator allows. The defaults are those of the config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub allow_privileged: bool,
    pub allow_host_network: bool,
    pub allow_host_pid_ipc: bool,
    /// Capability names without `CAP_`, upper case; `ALL` allows any.
    pub allowed_capabilities: Vec<String>,
    pub allow_devices: bool,
    pub allow_security_options: bool,
    /// Absolute host paths under which `host.sourcePath` binds are allowed.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Host paths no bind may overlap, whatever `allowed_host_paths` says:
    /// the agent's data dir.
    pub protected_host_paths: Vec<PathBuf>,
}

/// The host paths allowed when the config says nothing (see
/// [`crate::config::Config::allowed_host_paths`]).
pub const DEFAULT_ALLOWED_HOST_PATHS: &[&str] = &["/srv", "/var/lib/berth-volumes"];

impl Default for Policy {
    fn default() -> Self {
        Self {
            allow_privileged: false,
            allow_host_network: false,
            allow_host_pid_ipc: false,
            allowed_capabilities: Vec::new(),
            allow_devices: false,
            allow_security_options: false,
            allowed_host_paths: DEFAULT_ALLOWED_HOST_PATHS
                .iter()
                .map(PathBuf::from)
                .collect(),
            protected_host_paths: vec![PathBuf::from(crate::config::DEFAULT_DATA_DIR)],
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
        Self {
            rule,
            path,
            container,
            what,
            how: "bind another directory: no setting allows this one".to_owned(),
        }
    }
}

/// Checks `def` against `policy`; the first violation in definition order.
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
                    let allowed = if policy.allowed_capabilities.is_empty() {
                        "none".to_owned()
                    } else {
                        policy.allowed_capabilities.join(", ")
                    };
                    return Err(PolicyViolation::new(
                        Rule::AllowedCapabilities,
                        format!("{base}.linuxParameters.capabilities.add[{k}]"),
                        i,
                        format!(
                            "container {} adds capability {name}, which is not among the allowed capabilities ({allowed})",
                            c.name
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
    }
    Ok(())
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

fn check_host_paths(def: &TaskDefinition, policy: &Policy) -> Result<(), PolicyViolation> {
    let roots: Vec<PathBuf> = policy
        .allowed_host_paths
        .iter()
        .map(|p| resolve(p))
        .collect();
    let protected: Vec<(PathBuf, &PathBuf)> = policy
        .protected_host_paths
        .iter()
        .map(|p| (resolve(p), p))
        .collect();
    for (i, v) in def.volumes.iter().enumerate() {
        let Some(source) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) else {
            continue;
        };
        let path = Path::new(source);
        let container = crate::volumes::first_user(def, &v.name).unwrap_or(0);
        let resolved = path.is_absolute().then(|| resolve(path));
        if let Some(resolved) = &resolved
            && let Some((_, dir)) = protected
                .iter()
                .find(|(p, _)| resolved.starts_with(p) || p.starts_with(resolved))
        {
            return Err(PolicyViolation::never(
                Rule::AllowedHostPaths,
                format!("volumes[{i}].host.sourcePath"),
                container,
                format!(
                    "host path {source} of volume {} overlaps the agent's data dir {}, which holds its private key",
                    v.name,
                    dir.display()
                ),
            ));
        }
        let allowed = resolved
            .as_ref()
            .is_some_and(|resolved| roots.iter().any(|root| resolved.starts_with(root)));
        if !allowed {
            let list = if policy.allowed_host_paths.is_empty() {
                "none".to_owned()
            } else {
                policy
                    .allowed_host_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(PolicyViolation::new(
                Rule::AllowedHostPaths,
                format!("volumes[{i}].host.sourcePath"),
                container,
                format!(
                    "host path {source} of volume {} is not under an allowed host path ({list})",
                    v.name
                ),
                source,
            ));
        }
    }
    Ok(())
}

/// `path` with `.` and `..` resolved and the symbolic links of its longest
/// existing prefix followed. Parts that do not exist yet (Docker creates a
/// missing bind source) are appended as they are.
pub fn resolve(path: &Path) -> PathBuf {
    let lexical = normalize(path);
    let mut existing = lexical.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            // A missing part may itself become a symlink later; `..` was
            // already resolved, so the rest can only go deeper.
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
        Capabilities, ContainerDefinition, Device, HostVolume, LinuxParameters, MountPoint, Volume,
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

    #[test]
    fn host_paths_must_be_under_an_allowed_path() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed)?;
        std::fs::create_dir(dir.path().join("secret"))?;
        let policy = Policy {
            allowed_host_paths: vec![allowed.clone()],
            ..Policy::default()
        };
        let path = |p: &str| format!("{}/{p}", dir.path().display());

        // Inside (existing or not yet) and the root itself are fine.
        for ok in [
            "allowed",
            "allowed/sub",
            "allowed/not/yet/there",
            "allowed/./x",
        ] {
            assert_eq!(check(&bind_task(&path(ok)), &policy), Ok(()), "{ok}");
        }
        // Outside, a sibling with the same prefix, and `..` out of it are not.
        for bad in [
            "secret",
            "allowed-not",
            "allowed/../secret",
            "allowed/x/../../secret",
        ] {
            let v = violation(&bind_task(&path(bad)), &policy);
            assert_names(&v, "allowed_host_paths", "volumes[1].host.sourcePath");
            assert_eq!(v.container, 1, "the container that mounts it");
            assert!(v.to_string().contains(&path(bad)), "{v}");
            assert!(
                v.to_string().contains(&allowed.display().to_string()),
                "{v}"
            );
        }
        // A symlink inside the allowed path that leads out of it.
        std::os::unix::fs::symlink(dir.path().join("secret"), allowed.join("escape"))?;
        let v = violation(&bind_task(&path("allowed/escape/sub")), &policy);
        assert_eq!(v.rule, Rule::AllowedHostPaths);
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
        assert_eq!(check(&bind_task("/srv/www"), &Policy::default()), Ok(()));
        assert_eq!(
            check(&bind_task("/var/lib/berth-volumes/app"), &Policy::default()),
            Ok(())
        );
        let none = Policy {
            allowed_host_paths: Vec::new(),
            ..Policy::default()
        };
        let v = violation(&bind_task("/srv/www"), &none);
        assert!(v.to_string().contains("(none)"), "{v}");
    }

    #[test]
    fn binds_overlapping_the_data_dir_are_refused_even_when_allowed() {
        let policy = Policy {
            allowed_host_paths: vec![PathBuf::from("/srv")],
            protected_host_paths: vec![PathBuf::from("/srv/berth")],
            ..Policy::default()
        };
        for bad in ["/srv", "/srv/berth", "/srv/berth/identity", "/srv/./berth"] {
            let v = violation(&bind_task(bad), &policy);
            assert_eq!(v.rule, Rule::AllowedHostPaths, "{bad}");
            let text = v.to_string();
            assert!(text.contains("data dir /srv/berth"), "{text}");
            assert!(text.contains("no setting allows"), "{text}");
        }
        assert_eq!(check(&bind_task("/srv/www"), &policy), Ok(()));
        assert_eq!(check(&bind_task("/srv/berth-www"), &policy), Ok(()));
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
