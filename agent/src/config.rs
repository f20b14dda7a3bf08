//! Agent configuration: `/etc/berth/agent.toml`, each key overridable by the
//! environment variable `BERTH_<KEY>` (upper case).
//!
//! Unknown keys are an error naming the key: a typo in a config file must not
//! silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{DEFAULT_ALLOWED_HOST_PATHS, Policy};
use crate::runtime::PullPolicy;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/agent.toml";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";
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

    // Agent policy (see `crate::policy`): what a task may ask of the host.
    /// Allow `privileged: true` containers (root on the host). Default false.
    pub allow_privileged: bool,
    /// Allow `networkMode: host`. Default true: bridge, host and none are all
    /// standard ECS network modes, and a container on the host network gets
    /// no privilege over the host beyond its ports; set false on hosts where
    /// tasks must not see the host's interfaces.
    pub allow_host_network: bool,
    /// Allow `pidMode: host` and `ipcMode: host`. Default false.
    pub allow_host_pid_ipc: bool,
    /// Capabilities a container may add (`linuxParameters.capabilities.add`),
    /// without `CAP_`; `ALL` allows any. Default empty: none may be added.
    pub allowed_capabilities: Vec<String>,
    /// Allow host devices (`linuxParameters.devices`). Default false.
    pub allow_devices: bool,
    /// Allow `dockerSecurityOptions` other than `no-new-privileges` (which is
    /// always allowed, since it only takes privileges away). Default false.
    pub allow_security_options: bool,
    /// Absolute host paths under which `host.sourcePath` bind mounts are
    /// allowed (symbolic links and `..` are resolved before comparing). A
    /// path that overlaps `data_dir` is refused whatever this list says.
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
        }
    }
}

/// Keys that the environment may override, with their kind.
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
    ("allow_privileged", Kind::Bool),
    ("allow_host_network", Kind::Bool),
    ("allow_host_pid_ipc", Kind::Bool),
    ("allowed_capabilities", Kind::List),
    ("allow_devices", Kind::Bool),
    ("allow_security_options", Kind::Bool),
    ("allowed_host_paths", Kind::List),
];

#[derive(Clone, Copy)]
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
        for (key, kind) in ENV_KEYS {
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
            table.insert((*key).to_string(), value);
        }
        let cfg: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            })?;
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
        for path in &self.allowed_host_paths {
            if !path.is_absolute() {
                return Err(format!(
                    "allowed_host_paths {}: must be an absolute path",
                    path.display()
                ));
            }
        }
        for cap in &self.allowed_capabilities {
            let name = crate::policy::normalize_capability(cap);
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
        Ok(())
    }

    /// The agent policy these settings describe.
    pub fn policy(&self) -> Policy {
        Policy {
            allow_privileged: self.allow_privileged,
            allow_host_network: self.allow_host_network,
            allow_host_pid_ipc: self.allow_host_pid_ipc,
            allowed_capabilities: self
                .allowed_capabilities
                .iter()
                .map(|c| crate::policy::normalize_capability(c))
                .collect(),
            allow_devices: self.allow_devices,
            allow_security_options: self.allow_security_options,
            allowed_host_paths: self.allowed_host_paths.clone(),
            protected_host_paths: vec![self.data_dir.clone()],
        }
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 51678)))
    }

    /// Sets `server = "<url>"` in the config file, keeping every other line.
    pub fn write_server(path: &Path, server: &str) -> Result<(), ConfigError> {
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
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let doc: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.message().into()))?;
        if doc.get("server").and_then(toml::Value::as_str) == Some(server) {
            return Ok(());
        }
        let out = with_server_line(&text, server);
        // The edit keeps every other line (the packaged comments included);
        // check that it says what it should before replacing the file.
        let check: toml::Table = toml::from_str(&out).map_err(|e| invalid(e.message().into()))?;
        if check.get("server").and_then(toml::Value::as_str) != Some(server) {
            return Err(invalid(format!("cannot set server = {server:?} in it")));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        }
        crate::fsutil::write_atomic(path, out.as_bytes(), 0o644).map_err(|source| {
            ConfigError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// `text` with its top-level `server = …` line replaced by one for
/// `server`, or such a line added before the first table.
fn with_server_line(text: &str, server: &str) -> String {
    let line = format!("server = {}", toml::Value::String(server.to_string()));
    let mut out: Vec<String> = Vec::new();
    let mut done = false;
    let mut in_table = false;
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('[') {
            if !done {
                out.push(line.clone());
                done = true;
            }
            in_table = true;
        }
        let is_server = !in_table
            && t.strip_prefix("server")
                .is_some_and(|rest| rest.trim_start().starts_with('='));
        if is_server && !done {
            out.push(line.clone());
            done = true;
        } else if !is_server {
            out.push(l.to_string());
        }
    }
    if !done {
        out.push(line);
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
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
    #[test]
    fn setting_the_server_keeps_comments_and_other_keys() {
        let text = "# packaged config\n# server = \"https://example\"\nreserved_memory_mib = 64\nserver = \"https://old:7420\"\n";
        let out = with_server_line(text, "https://new:7420");
        assert!(
            out.starts_with("# packaged config\n# server = \"https://example\"\n"),
            "{out}"
        );
        assert!(out.contains("reserved_memory_mib = 64"), "{out}");
        assert!(out.contains("server = \"https://new:7420\""), "{out}");
        assert!(!out.contains("old"), "{out}");
        let added = with_server_line("# nothing yet\n", "https://a:1");
        assert_eq!(added, "# nothing yet\nserver = \"https://a:1\"\n");
    }

    use super::*;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
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
        assert!(!cfg.allow_privileged && !cfg.allow_host_network && !cfg.allow_host_pid_ipc);
        assert_eq!(
            cfg.allowed_host_paths,
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
        assert!(cfg.allowed_host_paths.is_empty(), "empty = no host paths");
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
    fn bad_duration_is_named() {
        let err = parse("stop_timeout = \"soon\"\n", &[]).expect_err("bad");
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
