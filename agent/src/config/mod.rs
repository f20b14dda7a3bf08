//! Agent configuration: `/etc/berth/agent.toml`, each scalar or list key
//! overridable by the environment variable `BERTH_<KEY>` (upper case).
//!
//! Unknown keys are an error naming the key: a typo in a config file must not
//! silently fall back to a default.
//!
//! # Registry credentials
//! `[registries."<host[:port]>"]` tables give `username` and either
//! `password_file` (preferred) or `password` for image pulls from that
//! registry. Tables have no environment override. A password file must be
//! owned by root or the agent's user and readable by nobody else (the mode
//! check is [`crate::identity::check_secret_mode`], the one of the agent's own
//! key), else the agent does not start. For a registry without a table, the
//! `auths` of the host's Docker config (`docker_config`; unset:
//! `$DOCKER_CONFIG/config.json`, else `/root/.docker/config.json`) are the
//! fallback; credential helpers (`credsStore`, `credHelpers`) are not run.
//! [`Config::registry_credentials`] reads all of it once, at `run`. Passwords
//! never reach a log line, an error or `Debug` output: [`Password`] and
//! [`RegistryCredentials`] print no secret.
//!
//! # Modules
//! - this module: [`Config`], its file and environment overlay, its checks;
//!   the policy keys are [`Policy`]'s fields, embedded (the names, defaults
//!   and docs are written there only);
//! - [`registries`]: registry credentials;
//! - `edit`: editing the file in place ([`Config::write_server`]).

mod edit;
pub mod registries;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{Policy, normalize_capability};
use crate::runtime::PullPolicy;

pub use crate::paths::{DEFAULT_CONFIG_PATH, DEFAULT_DATA_DIR};
pub use registries::{DEFAULT_DOCKER_CONFIG, Password, RegistryAuth, RegistryCredentials};
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:51678";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("invalid value for {var}: {message}")]
    Env { var: String, message: String },
    #[error("cannot write config {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid Docker config {path}: {message}")]
    DockerConfig { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Fleet address of the control plane, `https://host:7420`.
    pub server: Option<String>,
    pub data_dir: PathBuf,
    /// Local API address; port 0 picks a free port (written to
    /// `<data_dir>/agent-api.json`).
    pub api_listen: String,
    /// Memory kept for the host and the agent, not offered to tasks.
    pub reserved_memory_mib: u64,
    /// Docker Engine socket; default `/var/run/docker.sock` or `DOCKER_HOST`.
    pub docker_socket: Option<String>,
    pub pull_policy: PullPolicy,
    /// SIGTERM → SIGKILL grace when a container definition has no `stopTimeout`.
    #[serde(with = "humantime_serde_compat")]
    pub stop_timeout: Duration,
    /// How long stopped containers are kept (for `docker logs`) before removal.
    #[serde(with = "humantime_serde_compat")]
    pub container_cleanup_delay: Duration,
    /// After a host reboot with the control plane out of reach, start the
    /// tasks of the last desired set without waiting for it.
    pub start_tasks_offline: bool,
    /// `text` or `json` (stderr); the journal reads either.
    pub log_format: String,
    /// Agent policy (see [`crate::policy`]): what a task may ask of the
    /// host. Its keys (`allow_*`, `allowed_*`) sit at the top level of the
    /// file; [`Config::policy`] is the policy the supervisors enforce.
    #[serde(flatten)]
    pub policy: Policy,

    // Registry credentials (see the module docs).
    /// Docker CLI config whose `auths` give credentials for registries
    /// without a `[registries]` table. Unset: `$DOCKER_CONFIG/config.json`,
    /// else `/root/.docker/config.json` (either may be missing); a path set
    /// here must exist; `""` reads none.
    pub docker_config: Option<PathBuf>,
    /// Credentials by registry host (`registry.example:5000`, `docker.io`).
    /// A table: no `BERTH_*` override.
    pub registries: BTreeMap<String, RegistryAuth>,
    /// Custom instance attributes the agent publishes (`zone = "rack-3"`),
    /// next to the built-in ones ([`crate::attributes`]). A table: no
    /// `BERTH_*` override.
    pub attributes: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            api_listen: DEFAULT_API_LISTEN.to_string(),
            reserved_memory_mib: 0,
            docker_socket: None,
            pull_policy: PullPolicy::Default,
            stop_timeout: Duration::from_secs(30),
            container_cleanup_delay: Duration::from_secs(600),
            start_tasks_offline: true,
            log_format: "text".to_string(),
            policy: Policy::default(),
            docker_config: None,
            registries: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }
}

/// Keys of [`Config`]'s own that the environment may override, with their
/// kind; the policy keys ([`policy_keys`]) may be overridden too.
const ENV_KEYS: &[(&str, Kind)] = &[
    ("server", Kind::Str),
    ("data_dir", Kind::Str),
    ("api_listen", Kind::Str),
    ("reserved_memory_mib", Kind::Int),
    ("docker_socket", Kind::Str),
    ("pull_policy", Kind::Str),
    ("stop_timeout", Kind::Str),
    ("container_cleanup_delay", Kind::Str),
    ("start_tasks_offline", Kind::Bool),
    ("log_format", Kind::Str),
    ("docker_config", Kind::Str),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated in the environment (`/srv,/data`); empty = empty list.
    List,
}

impl Config {
    /// Reads the file (a missing file is an empty config), then the
    /// environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::from_parts(path, &text, |k| std::env::var(k).ok())
    }

    fn from_parts(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        let policy_keys = policy_keys();
        let env_keys = ENV_KEYS
            .iter()
            .copied()
            .chain(policy_keys.iter().map(|(key, kind)| (key.as_str(), *kind)));
        for (key, kind) in env_keys {
            let var = format!("BERTH_{}", key.to_uppercase());
            let Some(raw) = env(&var) else { continue };
            let value = match kind {
                Kind::Str => toml::Value::String(raw),
                Kind::Int => {
                    toml::Value::Integer(raw.trim().parse().map_err(|_| ConfigError::Env {
                        var: var.clone(),
                        message: format!("expected a whole number, got {raw:?}"),
                    })?)
                }
                Kind::Bool => {
                    toml::Value::Boolean(raw.trim().parse().map_err(|_| ConfigError::Env {
                        var: var.clone(),
                        message: format!("expected true or false, got {raw:?}"),
                    })?)
                }
                Kind::List => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(|item| toml::Value::String(item.to_string()))
                        .collect(),
                ),
            };
            table.insert(key.to_string(), value);
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // Named here rather than by serde, which names no alternatives for
        // a struct with an embedded one.
        let known = known_keys(&policy_keys);
        if let Some(unknown) = table.keys().find(|k| !known.contains(&k.as_str())) {
            let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            return Err(invalid(format!(
                "unknown field `{unknown}`, expected one of {}",
                expected.join(", ")
            )));
        }
        // The policy keys first, on their own: an error inside an embedded
        // struct would lose the key it is about.
        let policy_table: toml::Table = table
            .iter()
            .filter(|(k, _)| policy_keys.iter().any(|(key, _)| key == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_path_to_error::deserialize::<_, Policy>(toml::Value::Table(policy_table))
            .map_err(|e| invalid(deserialize_error(&e)))?;
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| invalid(deserialize_error(&e)))?;
        cfg.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        self.api_listen
            .parse::<SocketAddr>()
            .map_err(|e| format!("api_listen {:?}: {e}", self.api_listen))?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(format!(
                "log_format {:?}: expected text or json",
                self.log_format
            ));
        }
        if !self.data_dir.is_absolute() {
            return Err(format!(
                "data_dir {}: must be an absolute path",
                self.data_dir.display()
            ));
        }
        for path in &self.policy.allowed_host_paths {
            if !path.is_absolute() {
                return Err(format!(
                    "allowed_host_paths {}: must be an absolute path",
                    path.display()
                ));
            }
        }
        for cap in &self.policy.allowed_capabilities {
            let name = normalize_capability(cap);
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!(
                    "allowed_capabilities {cap:?}: expected a capability name such as NET_ADMIN, or ALL"
                ));
            }
        }
        for (key, list) in [
            (
                "allowed_volume_drivers",
                &self.policy.allowed_volume_drivers,
            ),
            (
                "allowed_shared_volumes",
                &self.policy.allowed_shared_volumes,
            ),
            ("allowed_log_drivers", &self.policy.allowed_log_drivers),
        ] {
            if let Some(bad) = list.iter().find(|item| !is_plain_name(item.trim())) {
                return Err(format!(
                    "{key} {bad:?}: expected a name of letters, digits, '.', '_', '-', ':' or '/'"
                ));
            }
        }
        registries::check_registries(&self.registries)?;
        crate::attributes::check_config(&self.attributes)?;
        if let Some(p) = &self.docker_config
            && !p.as_os_str().is_empty()
            && !p.is_absolute()
        {
            return Err(format!(
                "docker_config {}: must be an absolute path (or \"\" for none)",
                p.display()
            ));
        }
        Ok(())
    }

    /// The agent policy these settings describe, as the supervisors
    /// enforce it: capability names normalised, name lists trimmed, the
    /// data dir protected.
    pub fn policy(&self) -> Policy {
        let p = &self.policy;
        Policy {
            allowed_capabilities: p
                .allowed_capabilities
                .iter()
                .map(|c| normalize_capability(c))
                .collect(),
            protected_host_paths: vec![self.data_dir.clone()],
            allowed_volume_drivers: trimmed(&p.allowed_volume_drivers),
            allowed_shared_volumes: trimmed(&p.allowed_shared_volumes),
            allowed_log_drivers: trimmed(&p.allowed_log_drivers),
            ..p.clone()
        }
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 51678)))
    }
}

/// The policy keys and their kinds: the fields of [`Policy`], as its
/// defaults serialize (`protected_host_paths` is not a key).
fn policy_keys() -> Vec<(String, Kind)> {
    let Ok(defaults) = toml::Table::try_from(Policy::default()) else {
        return Vec::new();
    };
    defaults
        .into_iter()
        .map(|(key, value)| {
            let kind = match value {
                toml::Value::Boolean(_) => Kind::Bool,
                toml::Value::Integer(_) => Kind::Int,
                toml::Value::Array(_) => Kind::List,
                _ => Kind::Str,
            };
            (key, kind)
        })
        .collect()
}

/// Every key of the file: [`Config`]'s own (those of [`ENV_KEYS`], the
/// `registries` and `attributes` tables) and the policy keys.
fn known_keys(policy_keys: &[(String, Kind)]) -> Vec<&str> {
    ENV_KEYS
        .iter()
        .map(|(key, _)| *key)
        .chain(policy_keys.iter().map(|(key, _)| key.as_str()))
        .chain(["registries", "attributes"])
        .collect()
}

/// A deserialization error as the config reports it: `key.path: message`.
fn deserialize_error(e: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let at = key_path(e.path());
    let message = e.inner().message();
    if at.is_empty() {
        message.to_string()
    } else {
        format!("{at}: {message}")
    }
}

/// The items of a policy name list, trimmed.
fn trimmed(items: &[String]) -> Vec<String> {
    items.iter().map(|i| i.trim().to_owned()).collect()
}

/// A driver or volume name: `local`, `vieux/sshfs:latest`, `db-data`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
}

/// A TOML key as written in a file: bare when it can be, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        toml::Value::String(key.to_string()).to_string()
    }
}

/// The key path of a deserialization error, `registries."reg:5000".pasword`
/// (empty at the top level).
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        let part = match segment {
            Segment::Map { key } => toml_key(key),
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Enum { variant } => variant.clone(),
            Segment::Unknown => continue,
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&part);
    }
    out
}

/// Durations as humantime strings ("30s", "10m").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_shows_the_policy_defaults() {
        // Every `#key = value` line of the packaged file, uncommented, is
        // the default: the agent's policy comes out as with an empty file.
        let packaged = include_str!("../../../packaging/agent.toml");
        let uncommented: Vec<&str> = packaged
            .lines()
            .filter_map(|l| {
                let key = l.strip_prefix('#')?.split(" = ").next()?;
                policy_keys().iter().any(|(k, _)| k == key).then(|| &l[1..])
            })
            .collect();
        assert!(
            uncommented
                .iter()
                .any(|l| l.starts_with("allow_host_network")),
            "{uncommented:?}"
        );
        let cfg = parse(&uncommented.join("\n"), &[]).expect("packaged config");
        assert_eq!(cfg.policy(), Config::default().policy(), "{uncommented:?}");
    }

    pub(super) fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(Path::new("/etc/berth/agent.toml"), text, |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse("", &[]).expect("defaults");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn env_overrides_file() {
        let cfg = parse(
            "data_dir = \"/srv/berth\"\nreserved_memory_mib = 10\n",
            &[
                ("BERTH_RESERVED_MEMORY_MIB", "256"),
                ("BERTH_STOP_TIMEOUT", "5s"),
            ],
        )
        .expect("valid");
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/berth"));
        assert_eq!(cfg.reserved_memory_mib, 256);
        assert_eq!(cfg.stop_timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("data_dri = \"/x\"\n", &[]).expect_err("typo");
        assert!(err.to_string().contains("data_dri"), "{err}");
    }

    #[test]
    fn bad_env_value_is_named() {
        let err = parse("", &[("BERTH_RESERVED_MEMORY_MIB", "lots")]).expect_err("bad");
        assert!(
            err.to_string().contains("BERTH_RESERVED_MEMORY_MIB"),
            "{err}"
        );
    }

    #[test]
    fn policy_defaults_match_the_policy_module() {
        let cfg = parse("", &[]).expect("defaults");
        assert_eq!(cfg.policy(), Policy::default());
        assert!(
            !cfg.policy.allow_privileged
                && !cfg.policy.allow_host_network
                && !cfg.policy.allow_host_pid_ipc
        );
        assert_eq!(
            cfg.policy.allowed_host_paths,
            vec![
                PathBuf::from("/srv"),
                PathBuf::from("/var/lib/berth-volumes")
            ]
        );
    }

    #[test]
    fn policy_keys_come_from_file_and_env() {
        let cfg = parse(
            "allow_privileged = true\nallowed_capabilities = [\"cap_net_admin\"]\nallowed_host_paths = [\"/data\"]\n",
            &[
                ("BERTH_ALLOW_DEVICES", "true"),
                ("BERTH_ALLOW_HOST_NETWORK", "false"),
                ("BERTH_ALLOWED_HOST_PATHS", "/srv, /mnt/data ,"),
            ],
        )
        .expect("valid");
        let policy = cfg.policy();
        assert!(policy.allow_privileged && policy.allow_devices && !policy.allow_host_network);
        assert_eq!(policy.allowed_capabilities, vec!["NET_ADMIN".to_owned()]);
        assert_eq!(
            policy.allowed_host_paths,
            vec![PathBuf::from("/srv"), PathBuf::from("/mnt/data")]
        );
        let cfg = parse("", &[("BERTH_ALLOWED_HOST_PATHS", "")]).expect("valid");
        assert!(
            cfg.policy.allowed_host_paths.is_empty(),
            "empty = no host paths"
        );
    }

    #[test]
    fn volume_and_log_policy_keys_come_from_file_and_env() {
        let cfg = parse("", &[]).expect("defaults");
        let policy = cfg.policy();
        assert_eq!(policy.allowed_volume_drivers, vec!["local".to_owned()]);
        assert!(!policy.allow_volume_driver_opts && !policy.allow_log_driver_addresses);
        assert!(policy.allowed_shared_volumes.is_empty());
        assert_eq!(
            policy.allowed_log_drivers,
            vec!["json-file", "local", "journald", "none"]
        );
        let cfg = parse(
            "allowed_volume_drivers = [\"local\", \"vieux/sshfs:latest\"]\nallow_volume_driver_opts = true\nallowed_log_drivers = [\"syslog\"]\n",
            &[
                ("BERTH_ALLOWED_SHARED_VOLUMES", "pgdata, cache"),
                ("BERTH_ALLOW_LOG_DRIVER_ADDRESSES", "true"),
            ],
        )
        .expect("valid");
        let policy = cfg.policy();
        assert_eq!(
            policy.allowed_volume_drivers,
            vec!["local".to_owned(), "vieux/sshfs:latest".to_owned()]
        );
        assert!(policy.allow_volume_driver_opts && policy.allow_log_driver_addresses);
        assert_eq!(policy.allowed_shared_volumes, vec!["pgdata", "cache"]);
        assert_eq!(policy.allowed_log_drivers, vec!["syslog"]);
        let err = parse("allowed_log_drivers = [\"json file\"]\n", &[]).expect_err("space");
        assert!(err.to_string().contains("allowed_log_drivers"), "{err}");
    }

    #[test]
    fn bad_policy_values_are_named() {
        let err = parse("allowed_host_paths = [\"srv\"]\n", &[]).expect_err("relative");
        assert!(err.to_string().contains("allowed_host_paths"), "{err}");
        let err = parse("", &[("BERTH_ALLOWED_CAPABILITIES", "NET ADMIN")]).expect_err("bad");
        assert!(err.to_string().contains("allowed_capabilities"), "{err}");
        let err = parse("", &[("BERTH_ALLOW_DEVICES", "yes")]).expect_err("bad");
        assert!(err.to_string().contains("BERTH_ALLOW_DEVICES"), "{err}");
    }

    #[test]
    fn the_attributes_table_is_read_and_checked_at_load() {
        let cfg = parse(
            "allow_privileged = true\n[attributes]\nzone = \"rack-3\"\n\"team/x\" = \"a:b\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(cfg.attributes["zone"], "rack-3");
        assert_eq!(cfg.attributes["team/x"], "a:b");
        let a = crate::attributes::host_attributes(&cfg.policy(), "h", &cfg.attributes);
        assert_eq!(a["zone"], "rack-3");
        assert_eq!(a["berth.policy.allow_privileged"], "true");
        let err =
            parse("[attributes]\n\"ecs.os-type\" = \"windows\"\n", &[]).expect_err("built in");
        assert!(
            err.to_string()
                .contains("attributes: attribute ecs.os-type"),
            "{err}"
        );
        let err = parse("[attributes]\nzone = \"rack 3\"\n", &[]).expect_err("space");
        assert!(
            err.to_string().contains("attribute zone: value \"rack 3\""),
            "{err}"
        );
        let err = parse("[attributes]\nzone = 3\n", &[]).expect_err("number");
        assert!(err.to_string().contains("attributes.zone"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let err = parse("stop_timeout = \"soon\"\n", &[]).expect_err("bad");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    pub(super) fn write_secret(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn the_policy_keys_are_the_fields_of_the_policy() {
        let keys = policy_keys();
        let kind = |name: &str| keys.iter().find(|(k, _)| k == name).map(|(_, kind)| *kind);
        assert_eq!(keys.len(), 12, "{keys:?}");
        assert_eq!(kind("allow_privileged"), Some(Kind::Bool));
        assert_eq!(kind("allowed_host_paths"), Some(Kind::List));
        assert_eq!(kind("allow_log_driver_addresses"), Some(Kind::Bool));
        assert_eq!(kind("protected_host_paths"), None, "not a key");
        // Every key of a full config is known, and nothing else is.
        let full = Config {
            server: Some("https://s:7420".into()),
            docker_socket: Some("/run/docker.sock".into()),
            docker_config: Some(PathBuf::from("/etc/berth/docker.json")),
            ..Config::default()
        };
        let written = toml::Table::try_from(&full).expect("serialize");
        let mut written: Vec<&str> = written.keys().map(String::as_str).collect();
        let mut known = known_keys(&keys);
        written.sort_unstable();
        known.sort_unstable();
        assert_eq!(written, known);
    }

    #[test]
    fn the_packaged_config_documents_every_key() {
        let packaged = include_str!("../../../packaging/agent.toml");
        for key in known_keys(&policy_keys()) {
            let documented = if key == "registries" {
                packaged.lines().any(|l| l.starts_with("#[registries."))
            } else if key == "attributes" {
                packaged.lines().any(|l| l == "#[attributes]")
            } else {
                packaged
                    .lines()
                    .any(|l| l.starts_with(&format!("#{key} = ")))
            };
            assert!(documented, "packaging/agent.toml does not document `{key}`");
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_the_keys_there_are() {
        let err = parse("alow_privileged = true\n", &[]).expect_err("typo");
        let msg = err.to_string();
        assert!(
            msg.contains("unknown field `alow_privileged`, expected one of `server`")
                && msg.contains("`allow_privileged`")
                && msg.contains("`registries`"),
            "{msg}"
        );
        // A wrongly typed policy key is named, as any other key.
        let err = parse("allow_privileged = 3\n", &[]).expect_err("integer");
        assert!(
            err.to_string().contains("allow_privileged: invalid type"),
            "{err}"
        );
        let err = parse("allowed_host_paths = [1]\n", &[]).expect_err("integer");
        assert!(err.to_string().contains("allowed_host_paths[0]"), "{err}");
    }
}
