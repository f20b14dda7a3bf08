//! The deb and rpm packages, built once per test binary for the tests that
//! install them.
//!
//! `packaging/build-packages.sh --bin-dir <the binaries the e2e tests use>
//! --fast` packages the debug binaries into `target/packages-test/`: the
//! release build is not needed to check or install a package. The build
//! tools (cargo-deb, cargo-generate-rpm, rpm, shellcheck) come from
//! `packaging/install-build-deps.sh`, which installs what is missing (a few
//! minutes on a fresh machine). Test binaries run one after another, so two
//! never write the directory at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{bin_dir, command_line, describe_output, output_of, repo_root};

/// The four packages.
pub struct Packages {
    pub agent_deb: PathBuf,
    pub server_deb: PathBuf,
    pub agent_rpm: PathBuf,
    pub server_rpm: PathBuf,
}

impl Packages {
    /// The directory that holds them.
    pub fn dir(&self) -> &Path {
        self.agent_deb.parent().unwrap_or(Path::new("."))
    }
}

/// The cargo target directory (`$CARGO_TARGET_DIR`, else `<repo>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => repo_root().join(d),
        None => repo_root().join("target"),
    }
}

/// Runs a command that must succeed; returns its stdout.
fn stdout_of(cmd: &mut Command) -> String {
    let out = output_of(cmd);
    assert!(
        out.status.success(),
        "{} failed\n{}",
        command_line(cmd),
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packages of the binaries under test, built on first use.
pub fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Packages> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        stdout_of(&mut Command::new(
            repo_root().join("packaging/install-build-deps.sh"),
        ));
        let out_dir = target_dir().join("packages-test");
        let listing = stdout_of(
            Command::new(repo_root().join("packaging/build-packages.sh"))
                .arg("--bin-dir")
                .arg(bin_dir())
                .arg("--out")
                .arg(&out_dir)
                .arg("--fast"),
        );
        let find = |prefix: &str, suffix: &str| -> PathBuf {
            listing
                .lines()
                .map(PathBuf::from)
                .find(|p| {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    name.starts_with(prefix) && name.ends_with(suffix)
                })
                .unwrap_or_else(|| {
                    panic!("build-packages.sh printed no {prefix}*{suffix}:\n{listing}")
                })
        };
        let p = Packages {
            agent_deb: find("berth-agent_", ".deb"),
            server_deb: find("berth-server_", ".deb"),
            agent_rpm: find("berth-agent-", ".rpm"),
            server_rpm: find("berth-server-", ".rpm"),
        };
        for f in [&p.agent_deb, &p.server_deb, &p.agent_rpm, &p.server_rpm] {
            assert!(f.is_file(), "{} was not written", f.display());
            assert!(
                f.starts_with(&out_dir),
                "{} is not in {}",
                f.display(),
                out_dir.display()
            );
        }
        p
    })
}
