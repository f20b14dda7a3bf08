//! Registry credentials: the `[registries."<host>"]` tables of the config
//! ([`RegistryAuth`], with a [`Password`] or a password file) and the
//! `auths` of the host's Docker config, read once at start into
//! [`RegistryCredentials`].
//!
//! Invariants: no secret reaches a log line, an error or `Debug` output
//! ([`Password`] and [`RegistryCredentials`] print none, a malformed Docker
//! `auth` is reported without its value); a password file is read only when
//! root or the agent's user owns it and nobody else can read it; a
//! `[registries]` table wins over the Docker config's entry for the same
//! registry; registries are keyed as the Docker runtime keys them
//! ([`crate::runtime::docker`]'s `registry_key`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, toml_key};

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

impl Config {
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
}

/// Checks the `[registries]` tables: one table per registry, a user name,
/// and exactly one of an absolute `password_file` or a non-empty `password`.
pub(super) fn check_registries(registries: &BTreeMap<String, RegistryAuth>) -> Result<(), String> {
    let mut hosts: BTreeMap<String, &str> = BTreeMap::new();
    for (name, auth) in registries {
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{parse, write_secret};

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
