//! The suite-wide secret scan: every log the harness captures and every
//! secret it hands out, kept for one check after the whole suite ran.
//!
//! # Background
//! Issue 5 asks that no activation code, private key or registry password
//! reaches a log. Single tests check their own outputs
//! (`tests/tests/security.rs`); this catches a leak in any test of the suite,
//! on any path, with whatever log level that test chose.
//!
//! # Design
//! - When `BERTH_E2E_CAPTURE=DIR` is set (scripts/test.sh sets it), each
//!   [`crate::Proc`] copies its log (and its separate stdout) into
//!   `DIR/logs/` when it drops, and the harness records each secret it
//!   creates or reads (activation codes, the body lines of every agent and CA
//!   private key, registry passwords) into `DIR/secrets/`, one file per test
//!   process, one `what<TAB>value` line each.
//! - `berth-e2e-secret-scan DIR` (src/bin) reads both and fails naming each
//!   secret found and the log it was found in. It refuses an empty capture
//!   (nothing captured would prove nothing).
//! - Without the variable nothing is written: a developer's single test run
//!   leaves nothing behind.
//!
//! # Limitations
//! What a command prints on purpose (`berth token create` shows the code to
//! the operator) is not a log and is not captured; the single tests check
//! `--json` outputs and the local API.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The variable that turns capturing on.
pub const CAPTURE_ENV: &str = "BERTH_E2E_CAPTURE";

fn dir() -> Option<PathBuf> {
    std::env::var_os(CAPTURE_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Records a secret value the suite must never find in a log.
pub fn record_secret(what: &str, value: &str) {
    let Some(dir) = dir() else { return };
    let value = value.trim();
    if value.is_empty() || value.contains(['\t', '\n']) {
        return;
    }
    let secrets = dir.join("secrets");
    if let Err(e) = std::fs::create_dir_all(&secrets) {
        eprintln!("capture: cannot create {}: {e}", secrets.display());
        return;
    }
    let file = secrets.join(format!("{}.tsv", std::process::id()));
    let line = format!("{}\t{value}\n", what.replace(['\t', '\n'], " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("capture: cannot write {}: {e}", file.display());
    }
}

/// Records the body lines of the PEM private key in `path`, if it exists.
pub fn record_private_key(what: &str, path: &Path) {
    if dir().is_none() {
        return;
    }
    let Ok(pem) = std::fs::read_to_string(path) else {
        return;
    };
    for line in pem_body_lines(&pem) {
        record_secret(what, &line);
    }
}

/// The base64 lines of a PEM text (not the BEGIN/END lines, and only lines
/// long enough not to match by chance).
pub fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(String::from)
        .collect()
}

/// Copies the log at `path` into the capture.
pub fn keep_log(what: &str, path: &Path) {
    let Some(dir) = dir() else { return };
    if !path.is_file() {
        return;
    }
    let logs = dir.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("capture: cannot create {}: {e}", logs.display());
        return;
    }
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let target = logs.join(format!("{name}-{}.log", &unique[..12]));
    if let Err(e) = std::fs::copy(path, &target) {
        eprintln!(
            "capture: cannot copy {} to {}: {e}",
            path.display(),
            target.display()
        );
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub logs: usize,
    pub secrets: usize,
    /// `(what secret, which log)`.
    pub found: Vec<(String, String)>,
}

/// Scans every captured log for every captured secret.
pub fn scan(dir: &Path) -> Result<ScanReport, String> {
    let mut secrets: Vec<(String, String)> = Vec::new();
    for file in files_in(&dir.join("secrets"))? {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for line in text.lines() {
            if let Some((what, value)) = line.split_once('\t') {
                secrets.push((what.to_string(), value.to_string()));
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    let mut report = ScanReport {
        secrets: secrets.len(),
        ..ScanReport::default()
    };
    for file in files_in(&dir.join("logs"))? {
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        report.logs += 1;
        for (what, value) in &secrets {
            if text.contains(value.as_str()) {
                report
                    .found
                    .push((what.clone(), file.display().to_string()));
            }
        }
    }
    Ok(report)
}

fn files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_secret_is_found_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("secrets")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("logs")).expect("mkdir");
        std::fs::write(
            dir.path().join("secrets/1.tsv"),
            "activation code\tQ7x9Zk2LmP4wR8tY\nagent.key\tMC4CAQAwBQYDK2VwBCIEIP\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("logs/clean.log"), "INFO all good\n").expect("write");
        std::fs::write(
            dir.path().join("logs/leaky.log"),
            "DEBUG enrolling with code=Q7x9Zk2LmP4wR8tY\n",
        )
        .expect("write");
        let report = scan(dir.path()).expect("scan");
        assert_eq!(report.logs, 2);
        assert_eq!(report.secrets, 2);
        assert_eq!(report.found.len(), 1, "{report:?}");
        assert_eq!(report.found[0].0, "activation code");
        assert!(report.found[0].1.ends_with("leaky.log"));
    }

    #[test]
    fn pem_bodies_skip_the_armour() {
        let lines = pem_body_lines(
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPabcdefgh\n-----END PRIVATE KEY-----\n",
        );
        assert_eq!(lines, vec!["MC4CAQAwBQYDK2VwBCIEIPabcdefgh".to_string()]);
    }
}
