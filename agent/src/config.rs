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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::{Deserialize, Serialize};

use crate::policy::{
    DEFAULT_ALLOWED_HOST_PATHS, DEFAULT_ALLOWED_LOG_DRIVERS, DEFAULT_ALLOWED_VOLUME_DRIVERS,
    Policy, owned,
};
use crate::runtime::PullPolicy;

pub use crate::paths::{DEFAULT_CONFIG_PATH, DEFAULT_DATA_DIR};
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

    // Agent policy (see `crate::policy`): what a task may ask of the host.
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

    // Registry credentials (see the module docs).
    /// Docker CLI config whose `auths` give credentials for registries
    /// without a `[registries]` table. Unset: `$DOCKER_CONFIG/config.json`,
    /// else `/root/.docker/config.json` (either may be missing); a path set
    /// here must exist; `""` reads none.
    pub docker_config: Option<PathBuf>,
    /// Credentials by registry host (`registry.example:5000`, `docker.io`).
    /// A table: no `BERTH_*` override.
    pub registries: BTreeMap<String, RegistryAuth>,
}

/// `[registries."<host>"]`: the credentials for one registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    pub username: String,
    /// A file holding the password (one trailing newline is ignored); mode
    /// 0600 or stricter, owned by root or the agent's user.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The password itself, for when a file is not practical; never
    /// serialized.
    #[serde(default, skip_serializing)]
    pub password: Option<Password>,
}

/// A password from the config: `Debug` shows no more than that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the Docker Engine's pull request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Password {
    // Through `toml::Value` so that a wrongly typed value (`password =
    // 1234`) is refused without the value in the message.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d) {
            Ok(toml::Value::String(s)) => Ok(Self(s)),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
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
            allowed_host_paths: owned(DEFAULT_ALLOWED_HOST_PATHS),
            allowed_volume_drivers: owned(DEFAULT_ALLOWED_VOLUME_DRIVERS),
            allow_volume_driver_opts: false,
            allowed_shared_volumes: Vec::new(),
            allowed_log_drivers: owned(DEFAULT_ALLOWED_LOG_DRIVERS),
            allow_log_driver_addresses: false,
            docker_config: None,
            registries: BTreeMap::new(),
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
    ("allowed_volume_drivers", Kind::List),
    ("allow_volume_driver_opts", Kind::Bool),
    ("allowed_shared_volumes", Kind::List),
    ("allowed_log_drivers", Kind::List),
    ("allow_log_driver_addresses", Kind::Bool),
    ("docker_config", Kind::Str),
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
        let cfg: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let at = key_path(e.path());
                let message = e.inner().message();
                ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: if at.is_empty() {
                        message.to_string()
                    } else {
                        format!("{at}: {message}")
                    },
                }
            },
        )?;
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
        for (key, list) in [
            ("allowed_volume_drivers", &self.allowed_volume_drivers),
            ("allowed_shared_volumes", &self.allowed_shared_volumes),
            ("allowed_log_drivers", &self.allowed_log_drivers),
        ] {
            if let Some(bad) = list.iter().find(|item| !is_plain_name(item.trim())) {
                return Err(format!(
                    "{key} {bad:?}: expected a name of letters, digits, '.', '_', '-', ':' or '/'"
                ));
            }
        }
        let mut hosts: BTreeMap<String, &str> = BTreeMap::new();
        for (name, auth) in &self.registries {
            let at = format!("registries.{}", toml_key(name));
            let host = registry_host_key(name).map_err(|e| format!("{at}: {e}"))?;
            if let Some(other) = hosts.insert(host.clone(), name) {
                return Err(format!(
                    "{at}: the same registry ({host}) as registries.{}",
                    toml_key(other)
                ));
            }
            if auth.username.trim().is_empty() {
                return Err(format!("{at}.username: must not be empty"));
            }
            match (&auth.password_file, &auth.password) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: set password_file or password, not both"));
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: set password_file (a file of mode 0600) or password"
                    ));
                }
                (Some(file), None) if !file.is_absolute() => {
                    return Err(format!(
                        "{at}.password_file {}: must be an absolute path",
                        file.display()
                    ));
                }
                (None, Some(p)) if p.expose().is_empty() => {
                    return Err(format!("{at}.password: must not be empty"));
                }
                _ => {}
            }
        }
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

    /// The credentials for image pulls: the `[registries]` tables of the
    /// config at `config_path` (password files read and checked now), and
    /// for every other registry the `auths` of the Docker config. Logs, at
    /// info, which registries have credentials and where from, and once that
    /// Docker credential helpers are ignored. Errors name the registry and
    /// the file, never a secret.
    pub fn registry_credentials(
        &self,
        config_path: &Path,
    ) -> Result<RegistryCredentials, ConfigError> {
        let mut creds = RegistryCredentials::default();
        if let Some((docker_path, explicit)) =
            self.docker_config_path(std::env::var_os("DOCKER_CONFIG"))
        {
            for (host, entry) in read_docker_config(&docker_path, explicit)? {
                creds.insert(host, entry, docker_path.display().to_string());
            }
        }
        for (name, auth) in &self.registries {
            let at = format!("registries.{}", toml_key(name));
            let invalid = |message: String| ConfigError::Invalid {
                path: config_path.to_path_buf(),
                message: format!("{at}{message}"),
            };
            let host = registry_host_key(name).map_err(|e| invalid(format!(": {e}")))?;
            let password = match (&auth.password_file, &auth.password) {
                (Some(file), _) => {
                    read_password_file(file).map_err(|e| invalid(format!(".password_file: {e}")))?
                }
                (None, Some(p)) => {
                    warn_if_readable(config_path, &at);
                    p.clone()
                }
                (None, None) => return Err(invalid(": no password_file or password".into())),
            };
            let entry = DockerCredentials {
                username: Some(auth.username.clone()),
                password: Some(password.0),
                serveraddress: Some(host.clone()),
                ..Default::default()
            };
            creds.insert(host, entry, config_path.display().to_string());
        }
        for (registry, (_, source)) in &creds.by_registry {
            tracing::info!(registry = %registry, source = %source, "registry credentials loaded");
        }
        Ok(creds)
    }

    /// Where the Docker config is, and whether the operator named it:
    /// `docker_config`, else `$DOCKER_CONFIG/config.json`, else
    /// `/root/.docker/config.json`; `None` for `docker_config = ""`.
    fn docker_config_path(&self, env_dir: Option<std::ffi::OsString>) -> Option<(PathBuf, bool)> {
        match &self.docker_config {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some((p.clone(), true)),
            None => match env_dir.filter(|d| !d.is_empty()) {
                Some(dir) => Some((PathBuf::from(dir).join("config.json"), false)),
                None => Some((PathBuf::from(DEFAULT_DOCKER_CONFIG), false)),
            },
        }
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
            allowed_volume_drivers: trimmed(&self.allowed_volume_drivers),
            allow_volume_driver_opts: self.allow_volume_driver_opts,
            allowed_shared_volumes: trimmed(&self.allowed_shared_volumes),
            allowed_log_drivers: trimmed(&self.allowed_log_drivers),
            allow_log_driver_addresses: self.allow_log_driver_addresses,
        }
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 51678)))
    }

    /// Sets `server = "<url>"` in the config file, keeping every other line,
    /// the file's mode and its owner. A file that holds an inline registry
    /// `password` is written 0600 whatever its mode was (a new file too); a
    /// new file without one is 0644.
    pub fn write_server(path: &Path, server: &str) -> Result<(), ConfigError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let (text, old) = match std::fs::File::open(path) {
            Ok(mut f) => {
                // Mode, owner and text from one open file.
                let meta = f.metadata().map_err(read_err)?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f, &mut text).map_err(read_err)?;
                (
                    text,
                    Some((meta.permissions().mode() & 0o7777, meta.uid(), meta.gid())),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
            Err(source) => return Err(read_err(source)),
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
        let (mode, owner) = config_file_mode(old, holds_inline_password(&check));
        crate::fsutil::write_atomic_owned(path, out.as_bytes(), mode, owner).map_err(|source| {
            ConfigError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// The credentials of [`Config::registry_credentials`], by registry host.
/// `Debug` shows the registries and where their credentials came from,
/// never a user name or a password.
#[derive(Clone, Default)]
pub struct RegistryCredentials {
    /// Normalised registry host → (credentials, source file).
    by_registry: BTreeMap<String, (DockerCredentials, String)>,
}

impl RegistryCredentials {
    fn insert(&mut self, host: String, creds: DockerCredentials, source: String) {
        self.by_registry.insert(host, (creds, source));
    }

    /// The registries that have credentials.
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_registry.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_registry.is_empty()
    }

    /// For [`crate::runtime::docker::DockerRuntime::with_credentials`].
    pub fn into_docker(self) -> HashMap<String, DockerCredentials> {
        self.by_registry
            .into_iter()
            .map(|(host, (creds, _))| (host, creds))
            .collect()
    }
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.by_registry
                    .iter()
                    .map(|(host, (_, source))| (host, source)),
            )
            .finish()
    }
}

/// The Docker CLI's config when neither `docker_config` nor `DOCKER_CONFIG`
/// says otherwise (the agent runs as root).
pub const DEFAULT_DOCKER_CONFIG: &str = "/root/.docker/config.json";

/// A registry name as the runtime keys it (`https://Reg.example:5000/v1/` →
/// `reg.example:5000`), or why it is not one.
fn registry_host_key(name: &str) -> Result<String, String> {
    let host = crate::runtime::docker::registry_key(name);
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'));
    if ok {
        Ok(host)
    } else {
        Err("expected a registry host such as registry.example:5000".to_string())
    }
}

/// Reads a password file after checking that only root or the agent's user
/// can read it: owned by one of them, mode 0600 or stricter (the check of
/// the agent's own key). The message names the file, never its contents.
fn read_password_file(path: &Path) -> Result<Password, String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let owner = meta.uid();
    let agent_uid = nix::unistd::geteuid().as_raw();
    if owner != 0 && owner != agent_uid {
        return Err(format!(
            "{} is owned by uid {owner}: it holds a registry password and must be owned by root or the agent's user (uid {agent_uid}); run `chown root {}`",
            path.display(),
            path.display()
        ));
    }
    crate::identity::check_secret_mode(path, "a registry password").map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let secret = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Password::new(secret))
}

/// An inline `password` in a config file that others can read: said once
/// at start, with the fix.
fn warn_if_readable(config_path: &Path, at: &str) {
    if crate::identity::check_secret_mode(config_path, "a registry password").is_err() {
        tracing::warn!(
            config = %config_path.display(),
            registry = at,
            "the config holds a registry password and is readable by group or others; move it to a password_file (mode 0600) or chmod 600 the config"
        );
    }
}

/// The `auths` of a Docker CLI config (`{"auths": {"<registry>": {"auth":
/// "<base64 of user:password>"}}}`), keyed by normalised registry host.
/// Entries without `auth` (those of a credential helper) are skipped; a
/// missing file is no credentials unless the operator named it.
fn read_docker_config(
    path: &Path,
    explicit: bool,
) -> Result<Vec<(String, DockerCredentials)>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            tracing::debug!(path = %path.display(), "no Docker config: no fallback registry credentials");
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let (entries, helpers) =
        parse_docker_config(&text).map_err(|message| ConfigError::DockerConfig {
            path: path.to_path_buf(),
            message,
        })?;
    if helpers {
        tracing::info!(
            path = %path.display(),
            "the Docker config names credential helpers (credsStore/credHelpers); berth-agent does not run them: give those registries' credentials in agent.toml [registries]"
        );
    }
    Ok(entries)
}

/// Parses a Docker CLI config: its `auths` entries, and whether it names
/// credential helpers. Messages name the entry, never the secret (a base64
/// error would show part of it, so it is not passed on).
fn parse_docker_config(text: &str) -> Result<(Vec<(String, DockerCredentials)>, bool), String> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let top = json
        .as_object()
        .ok_or_else(|| "expected a JSON object".to_string())?;
    let helpers = top
        .get("credsStore")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|s| !s.is_empty())
        || top
            .get("credHelpers")
            .and_then(serde_json::Value::as_object)
            .is_some_and(|m| !m.is_empty());
    let auths = match top.get("auths") {
        None | Some(serde_json::Value::Null) => return Ok((Vec::new(), helpers)),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => return Err("auths: expected an object".to_string()),
    };
    let mut out = Vec::new();
    for (name, entry) in auths {
        let at = format!("auths.{name:?}");
        let host = registry_host_key(name).map_err(|e| format!("{at}: {e}"))?;
        let entry = entry
            .as_object()
            .ok_or_else(|| format!("{at}: expected an object"))?;
        let auth = match entry.get("auth") {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) if s.is_empty() => continue,
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(format!("{at}.auth: expected a string")),
        };
        let malformed = || format!("{at}.auth: expected base64 of user:password");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
        if user.is_empty() {
            return Err(format!("{at}.auth: the user name is empty"));
        }
        out.push((
            host.clone(),
            DockerCredentials {
                username: Some(user.to_string()),
                password: Some(password.to_string()),
                serveraddress: Some(host),
                ..Default::default()
            },
        ));
    }
    Ok((out, helpers))
}

/// A TOML key as written in a file: bare when it can be, else quoted.
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

/// Whether a parsed config holds an inline `[registries."…"] password`.
fn holds_inline_password(doc: &toml::Table) -> bool {
    doc.get("registries")
        .and_then(toml::Value::as_table)
        .is_some_and(|registries| {
            registries.values().any(|r| {
                r.as_table()
                    .is_some_and(|auth| auth.contains_key("password"))
            })
        })
}

/// The mode and owner for rewriting a config file whose old mode and owner
/// were `old` (`None`: a new file): the old ones kept, and group and others
/// denied when the file holds a password. `None` for the owner: leave it to
/// the creating process.
fn config_file_mode(old: Option<(u32, u32, u32)>, password: bool) -> (u32, Option<(u32, u32)>) {
    let (mode, owner) = match old {
        Some((mode, uid, gid)) => (mode, Some((uid, gid))),
        None => (0o644, None),
    };
    let mode = if password {
        (mode & !0o077) | 0o600
    } else {
        mode
    };
    (mode, owner)
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

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o7777
    }

    #[test]
    fn the_packaged_config_shows_the_policy_defaults() {
        // Every `#key = value` line of the packaged file, uncommented, is
        // the default: the agent's policy comes out as with an empty file.
        let packaged = include_str!("../../packaging/agent.toml");
        let uncommented: Vec<&str> = packaged
            .lines()
            .filter_map(|l| {
                let key = l.strip_prefix('#')?.split(" = ").next()?;
                ENV_KEYS
                    .iter()
                    .any(|(k, _)| *k == key && k.starts_with("allow"))
                    .then(|| &l[1..])
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

    #[test]
    fn setting_the_server_keeps_the_file_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.toml");
        write_secret(&p, "reserved_memory_mib = 64\n", 0o640);
        Config::write_server(&p, "https://a:7420").expect("write");
        assert_eq!(mode_of(&p), 0o640);
        assert!(
            std::fs::read_to_string(&p)
                .expect("read")
                .contains("https://a:7420")
        );
        write_secret(&p, "reserved_memory_mib = 64\n", 0o600);
        Config::write_server(&p, "https://b:7420").expect("write");
        assert_eq!(mode_of(&p), 0o600);
    }

    #[test]
    fn setting_the_server_makes_a_file_with_a_password_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agent.toml");
        let text =
            "[registries.\"registry.example:5000\"]\nusername = \"u\"\npassword = \"hunter2\"\n";
        write_secret(&p, text, 0o600);
        Config::write_server(&p, "https://a:7420").expect("write");
        assert_eq!(mode_of(&p), 0o600);
        // A password in a file others could read: no longer readable after.
        write_secret(&p, text, 0o644);
        Config::write_server(&p, "https://b:7420").expect("write");
        assert_eq!(mode_of(&p), 0o600);
        let out = std::fs::read_to_string(&p).expect("read");
        assert!(
            out.contains("hunter2") && out.contains("https://b:7420"),
            "{out}"
        );
        // A new file: 0644 without a password.
        let fresh = dir.path().join("new.toml");
        Config::write_server(&fresh, "https://a:7420").expect("write");
        assert_eq!(mode_of(&fresh), 0o644);
    }

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
    fn bad_duration_is_named() {
        let err = parse("stop_timeout = \"soon\"\n", &[]).expect_err("bad");
        assert!(err.to_string().contains("soon"), "{err}");
    }

    // ---- registry credentials ----

    const SECRET: &str = "s3cret-pa55";

    /// A config in `dir` with `text`, loaded, and its credentials.
    fn credentials(dir: &Path, text: &str) -> Result<(Config, RegistryCredentials), ConfigError> {
        let path = dir.join("agent.toml");
        std::fs::write(&path, text).expect("write config");
        let cfg = Config::from_parts(&path, text, |_| None)?;
        let creds = cfg.registry_credentials(&path)?;
        Ok((cfg, creds))
    }

    fn write_secret(path: &Path, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn toml_path(p: &Path) -> String {
        toml::Value::String(p.display().to_string()).to_string()
    }

    /// `user:password` as a Docker config `auth`.
    fn auth(user_pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    }

    fn user_pass(creds: &RegistryCredentials, host: &str) -> Option<(String, String)> {
        let map = creds.clone().into_docker();
        let c = map.get(host)?;
        Some((c.username.clone()?, c.password.clone()?))
    }

    #[test]
    fn registries_parse_and_debug_shows_no_password() {
        let cfg = parse(
            "[registries.\"registry.example:5000\"]\nusername = \"deploy\"\npassword = \"s3cret-pa55\"\n\n[registries.\"ghcr.io\"]\nusername = \"bot\"\npassword_file = \"/etc/berth/ghcr.password\"\n",
            &[],
        )
        .expect("valid");
        let example = &cfg.registries["registry.example:5000"];
        assert_eq!(example.username, "deploy");
        assert_eq!(
            example.password.as_ref().map(Password::expose),
            Some(SECRET)
        );
        assert_eq!(
            cfg.registries["ghcr.io"].password_file,
            Some(PathBuf::from("/etc/berth/ghcr.password"))
        );
        let debug = format!("{cfg:?}");
        assert!(debug.contains("registry.example:5000"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
        // Serializing skips the password too.
        let text = toml::to_string(&cfg.registries).expect("serialize");
        assert!(!text.contains(SECRET), "{text}");
    }

    #[test]
    fn bad_registry_tables_are_named() {
        let cases = [
            (
                "[registries.\"reg:5000\"]\nusername = \"u\"\npasword = \"x\"\n",
                "registries.\"reg:5000\".pasword",
            ),
            (
                "[registries.\"reg:5000\"]\nusername = \"u\"\n",
                "set password_file (a file of mode 0600) or password",
            ),
            (
                "[registries.\"reg:5000\"]\nusername = \"u\"\npassword = \"p\"\npassword_file = \"/p\"\n",
                "not both",
            ),
            (
                "[registries.\"reg:5000\"]\nusername = \"u\"\npassword_file = \"p\"\n",
                "registries.\"reg:5000\".password_file p: must be an absolute path",
            ),
            (
                "[registries.\"reg:5000\"]\nusername = \"\"\npassword = \"p\"\n",
                "registries.\"reg:5000\".username: must not be empty",
            ),
            (
                "[registries.\"reg 5000\"]\nusername = \"u\"\npassword = \"p\"\n",
                "registries.\"reg 5000\": expected a registry host",
            ),
            (
                "[registries.\"docker.io\"]\nusername = \"u\"\npassword = \"p\"\n[registries.\"https://index.docker.io/v1/\"]\nusername = \"u\"\npassword = \"p\"\n",
                "the same registry (docker.io)",
            ),
            ("registries = 3\n", "registries"),
            ("docker_config = \"relative.json\"\n", "docker_config"),
        ];
        for (text, expected) in cases {
            let err = parse(text, &[]).expect_err(text);
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn a_wrongly_typed_password_is_refused_without_its_value() {
        let err = parse(
            "[registries.\"reg:5000\"]\nusername = \"u\"\npassword = 987654321\n",
            &[],
        )
        .expect_err("integer");
        let msg = err.to_string();
        assert!(msg.contains("registries.\"reg:5000\".password"), "{msg}");
        assert!(!msg.contains("987654321"), "{msg}");
    }

    #[test]
    fn a_password_file_is_read_and_its_newline_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("reg.password");
        write_secret(&pw, &format!("{SECRET}\n"), 0o600);
        let (_, creds) = credentials(
            dir.path(),
            &format!(
                "docker_config = \"\"\n[registries.\"Reg.Example:5000\"]\nusername = \"deploy\"\npassword_file = {}\n",
                toml_path(&pw)
            ),
        )
        .expect("valid");
        assert_eq!(
            user_pass(&creds, "reg.example:5000"),
            Some(("deploy".to_string(), SECRET.to_string()))
        );
        let debug = format!("{creds:?}");
        assert!(debug.contains("reg.example:5000"), "{debug}");
        assert!(
            !debug.contains(SECRET) && !debug.contains("deploy"),
            "{debug}"
        );
    }

    #[test]
    fn an_open_missing_or_empty_password_file_stops_the_agent_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("reg.password");
        let text = format!(
            "docker_config = \"\"\n[registries.\"reg:5000\"]\nusername = \"u\"\npassword_file = {}\n",
            toml_path(&pw)
        );
        let err = credentials(dir.path(), &text).expect_err("missing");
        let msg = err.to_string();
        assert!(
            msg.contains("registries.\"reg:5000\".password_file")
                && msg.contains(&pw.display().to_string()),
            "{msg}"
        );
        for mode in [0o640, 0o604, 0o644] {
            write_secret(&pw, SECRET, mode);
            let msg = credentials(dir.path(), &text)
                .expect_err("open mode")
                .to_string();
            assert!(
                msg.contains("registries.\"reg:5000\"")
                    && msg.contains(&format!("chmod 600 {}", pw.display())),
                "{mode:o}: {msg}"
            );
            assert!(!msg.contains(SECRET), "{msg}");
        }
        write_secret(&pw, "\n", 0o400);
        let msg = credentials(dir.path(), &text)
            .expect_err("empty")
            .to_string();
        assert!(msg.contains("is empty"), "{msg}");
        write_secret(&pw, SECRET, 0o400);
        credentials(dir.path(), &text).expect("0400 is stricter than 0600");
    }

    #[test]
    fn a_password_file_of_another_user_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            // Only root can give a file away; the check runs where the
            // agent does (as root).
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("reg.password");
        write_secret(&pw, SECRET, 0o600);
        std::os::unix::fs::chown(&pw, Some(4242), None).expect("chown");
        let text = format!(
            "docker_config = \"\"\n[registries.\"reg:5000\"]\nusername = \"u\"\npassword_file = {}\n",
            toml_path(&pw)
        );
        let msg = credentials(dir.path(), &text)
            .expect_err("foreign owner")
            .to_string();
        assert!(
            msg.contains("owned by uid 4242")
                && msg.contains(&format!("chown root {}", pw.display())),
            "{msg}"
        );
    }

    #[test]
    fn the_docker_config_is_the_fallback_and_agent_toml_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = dir.path().join("config.json");
        std::fs::write(
            &docker,
            serde_json::json!({
                "auths": {
                    "reg:5000": {"auth": auth("docker-user:docker-pass")},
                    "https://index.docker.io/v1/": {"auth": auth("hub:pa:ss")},
                    "helper.example": {},
                    "other.example": {"auth": auth("other:pw")},
                },
                "credsStore": "desktop",
                "HttpHeaders": {"User-Agent": "x"},
            })
            .to_string(),
        )
        .expect("write");
        let (_, creds) = credentials(
            dir.path(),
            &format!(
                "docker_config = {}\n[registries.\"other.example\"]\nusername = \"toml\"\npassword = \"toml-pw\"\n",
                toml_path(&docker)
            ),
        )
        .expect("valid");
        assert_eq!(
            user_pass(&creds, "reg:5000"),
            Some(("docker-user".into(), "docker-pass".into()))
        );
        assert_eq!(
            user_pass(&creds, "docker.io"),
            Some(("hub".into(), "pa:ss".into())),
            "the password is everything after the first colon"
        );
        assert_eq!(
            user_pass(&creds, "other.example"),
            Some(("toml".into(), "toml-pw".into()))
        );
        assert_eq!(user_pass(&creds, "helper.example"), None);
        assert_eq!(
            creds.registries().collect::<Vec<_>>(),
            vec!["docker.io", "other.example", "reg:5000"]
        );
    }

    #[test]
    fn a_malformed_docker_config_is_an_error_naming_the_registry_and_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = dir.path().join("config.json");
        let text = format!("docker_config = {}\n", toml_path(&docker));
        let not_base64 = "%%%c2VjcmV0LXZhbHVl";
        let cases = [
            (
                serde_json::json!({"auths": {"reg:5000": {"auth": not_base64}}}).to_string(),
                "auths.\"reg:5000\".auth: expected base64 of user:password",
            ),
            (
                serde_json::json!({"auths": {"reg:5000": {"auth": auth("no-colon")}}}).to_string(),
                "auths.\"reg:5000\".auth: expected base64 of user:password",
            ),
            (
                serde_json::json!({"auths": {"reg:5000": {"auth": auth(":pw")}}}).to_string(),
                "auths.\"reg:5000\".auth: the user name is empty",
            ),
            (
                serde_json::json!({"auths": {"reg:5000": {"auth": 7}}}).to_string(),
                "auths.\"reg:5000\".auth: expected a string",
            ),
            (
                serde_json::json!({"auths": {"reg:5000": "x"}}).to_string(),
                "auths.\"reg:5000\": expected an object",
            ),
            (
                serde_json::json!({"auths": []}).to_string(),
                "auths: expected an object",
            ),
            ("{\"auths\": {".to_string(), "not JSON"),
        ];
        for (json, expected) in cases {
            std::fs::write(&docker, &json).expect("write");
            let err = credentials(dir.path(), &text).expect_err(&json);
            let msg = err.to_string();
            assert!(
                msg.contains(expected) && msg.contains(&docker.display().to_string()),
                "{json}: {msg}"
            );
            assert!(
                !msg.contains(not_base64) && !msg.contains("no-colon"),
                "{msg}"
            );
        }
    }

    #[test]
    fn where_the_docker_config_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Named but missing: an error naming it.
        let missing = dir.path().join("missing.json");
        let err = credentials(
            dir.path(),
            &format!("docker_config = {}\n", toml_path(&missing)),
        )
        .expect_err("missing");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
        // "" reads none.
        let (_, creds) = credentials(dir.path(), "docker_config = \"\"\n").expect("none");
        assert!(creds.is_empty());
        // Not named: $DOCKER_CONFIG/config.json, else root's.
        let cfg = Config::default();
        assert_eq!(
            cfg.docker_config_path(Some("/home/ci/.docker".into())),
            Some((PathBuf::from("/home/ci/.docker/config.json"), false))
        );
        assert_eq!(
            cfg.docker_config_path(None),
            Some((PathBuf::from(DEFAULT_DOCKER_CONFIG), false))
        );
        assert_eq!(
            cfg.docker_config_path(Some("".into())),
            Some((PathBuf::from(DEFAULT_DOCKER_CONFIG), false))
        );
        // A missing default file is simply no credentials.
        assert!(
            read_docker_config(&dir.path().join("nope.json"), false)
                .expect("missing default")
                .is_empty()
        );
        // From the environment too.
        let cfg = parse("", &[("BERTH_DOCKER_CONFIG", "/etc/berth/docker.json")]).expect("env");
        assert_eq!(
            cfg.docker_config,
            Some(PathBuf::from("/etc/berth/docker.json"))
        );
    }
}
