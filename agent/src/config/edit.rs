//! Editing `agent.toml` in place: `berth-agent enroll` sets `server`
//! ([`Config::write_server`]).
//!
//! Invariants: every other line of the file is kept (the packaged comments
//! included), and the edit is parsed back before it replaces the file; the
//! file keeps its mode and owner, except that a file holding an inline
//! registry `password` is made 0600; the file is replaced atomically.

use std::path::Path;

use super::{Config, ConfigError};

impl Config {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::write_secret;

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

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o7777
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
}
