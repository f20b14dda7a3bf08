//! Packaging: the deb and rpm packages, their maintainer scripts, the systemd
//! units, the default config and `packaging/enroll.sh`.
//!
//! # Design
//! - The packages are built once per test binary by the harness
//!   (`berth_e2e::packages`: `packaging/build-packages.sh
//!   --bin-dir <the binaries the e2e tests use> --fast`, into
//!   `target/packages-test/`): the release build is not needed to check what
//!   a package holds, and the debug binaries are there already.
//! - Nothing is installed on the host. Installs run in a [`Sandbox`]
//!   (`packaging/test/sandbox.sh`): an overlay of the host's root file system
//!   on a tmpfs, entered with `unshare --mount` + `chroot`, so `dpkg -i`,
//!   `rpm -i` and `enroll.sh` run for real — maintainer scripts, users,
//!   conffiles, `systemd-analyze verify` of the installed units — and the
//!   host sees none of it.
//! - systemd is not PID 1 on the test machines. The sandboxes either keep it
//!   so (the scripts must skip their systemd steps and `systemctl enable`
//!   works offline), or pretend it runs (`/run/systemd/system`) with
//!   `packaging/test/systemctl-stub` as `systemctl`, which records its calls
//!   and can run the agent in the background for `enroll.sh`.
//!
//! # Limitations
//! The units are verified (`systemd-analyze verify`) but not run under a
//! real systemd here: `Type=notify`, the watchdog and the sandboxing
//! directives are exercised by `tests/tests/install.rs`, which installs the
//! deb on a Debian host with systemd as PID 1. The tools (cargo-deb, cargo-generate-rpm, rpm,
//! shellcheck, groff) are installed by
//! `packaging/install-build-deps.sh` when missing, which takes a few minutes
//! the first time on a fresh machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_e2e::{RunId, Server, agent_bin, berth_bin, describe_output, packages, repo_root};

// --- helpers ----------------------------------------------------------------

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed\n{}",
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn script(rel: &str) -> PathBuf {
    repo_root().join(rel)
}

/// A throwaway overlay of the host's root file system (see the module docs
/// and `packaging/test/sandbox.sh`). Removed on drop, after stopping an agent
/// the systemctl stub may have started in it.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    fn new(run: &RunId, name: &str) -> Sandbox {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("berth-e2e-{run}-sandbox-{name}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Sandbox { dir }
    }

    /// Runs `sh -c SCRIPT` in the sandbox with `sandbox.sh` OPTIONS.
    fn run(&self, options: &[&str], script_text: &str) -> Output {
        let mut cmd = Command::new(script("packaging/test/sandbox.sh"));
        cmd.arg(&self.dir).args(options);
        cmd.arg("--").args(["sh", "-c", script_text]);
        run(&mut cmd)
    }

    /// [`Sandbox::run`] that must succeed; returns stdout and stderr.
    fn sh(&self, options: &[&str], script_text: &str) -> String {
        let out = self.run(options, script_text);
        assert!(
            out.status.success(),
            "in the sandbox: {script_text}\n{}",
            describe_output(&out)
        );
        text(&out)
    }

    /// Files of the sandbox's upper layer (what it changed), as paths.
    fn changes(&self) -> BTreeSet<String> {
        let upper = self.dir.join("upper");
        let mut out = BTreeSet::new();
        fn walk(dir: &Path, upper: &Path, out: &mut BTreeSet<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                out.insert(format!(
                    "/{}",
                    p.strip_prefix(upper).unwrap_or(&p).display()
                ));
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&p, upper, out);
                }
            }
        }
        walk(&upper, &upper, &mut out);
        out
    }

    /// The systemctl stub's call log.
    fn systemctl_calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("upper/var/log/systemctl-stub.log"))
            .unwrap_or_default()
    }

    fn clear_systemctl_calls(&self) {
        let _ = std::fs::remove_file(self.dir.join("upper/var/log/systemctl-stub.log"));
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let pid_file = self
            .dir
            .join("upper/var/lib/systemctl-stub/berth-agent.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file)
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if std::env::var_os("BERTH_E2E_KEEP").is_some_and(|v| v == "1") {
            eprintln!("BERTH_E2E_KEEP=1: keeping {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Skips (with a note) a test that needs root for its sandbox.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: the install sandbox needs root (mount namespaces, overlayfs)");
            return;
        }
    };
}

const STUB: &str = "install -m 0755 /work-stub/systemctl-stub /usr/bin/systemctl";

/// `STUB` with the real path of the stub (the host's tree is visible in the
/// sandbox through the overlay's lower layer).
fn install_stub() -> String {
    STUB.replace(
        "/work-stub",
        &script("packaging/test").display().to_string(),
    )
}

/// A quiet dpkg: no man-db trigger rebuilding its database.
const QUIET_DPKG: &str = "rm -f /var/lib/man-db/auto-update";

/// `--force-depends` when no Docker Engine package is installed on this host
/// (the Depends line is checked by the package tests instead).
fn dpkg_depends_flag() -> &'static str {
    let out = run(Command::new("dpkg-query").args([
        "-W",
        "-f=${db:Status-Status}\n",
        "docker.io",
        "docker-ce",
        "docker-engine",
    ]));
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == "installed")
    {
        ""
    } else {
        eprintln!(
            "note: no Docker Engine package installed here: dpkg -i runs with --force-depends"
        );
        "--force-depends"
    }
}

// --- the packages -----------------------------------------------------------

/// The man pages (`berth-task-run.1`, …) that `bin man DIR` writes: one per
/// command and subcommand; the packages must ship each, gzip'd.
fn man_pages_of(bin: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let listing = ok(Command::new(bin).arg("man").arg(dir.path()));
    let pages: Vec<String> = listing
        .lines()
        .filter_map(|l| Path::new(l).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert!(
        pages.len() > 2,
        "{} man wrote too few pages:\n{listing}",
        bin.display()
    );
    pages
}

/// The completion files a package of `bin` ships (`zsh_dir`: Debian's
/// vendor-completions or Fedora's site-functions), in the package's
/// listing form (deb: `./usr/…`, rpm: `/usr/…`).
fn completion_files(prefix: &str, bin: &str, zsh_dir: &str) -> [String; 3] {
    [
        format!("{prefix}/usr/share/bash-completion/completions/{bin}"),
        format!("{prefix}/usr/share/zsh/{zsh_dir}/_{bin}"),
        format!("{prefix}/usr/share/fish/vendor_completions.d/{bin}.fish"),
    ]
}

#[test]
fn debs_hold_the_binary_unit_config_and_dependencies() {
    let p = packages();
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&p.agent_deb));
    for path in [
        "./usr/bin/berth-agent",
        "./usr/lib/systemd/system/berth-agent.service",
        "./etc/berth/agent.toml",
        "./usr/share/man/man1/berth-agent.1.gz",
        "./usr/share/man/man1/berth-agent-enroll.1.gz",
        "./usr/share/berth-agent/enroll.sh",
    ] {
        assert!(
            contents.contains(path),
            "agent deb lacks {path}:\n{contents}"
        );
    }
    let docs = man_pages_of(&agent_bin())
        .into_iter()
        .map(|page| format!("./usr/share/man/man1/{page}.gz"))
        .chain(completion_files(".", "berth-agent", "vendor-completions"));
    for path in docs {
        assert!(
            contents.lines().any(|l| l.ends_with(&path)),
            "agent deb lacks {path}:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/berth-agent")),
        "berth-agent must be 0755:\n{contents}"
    );
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&p.agent_deb));
    assert!(info.contains("Package: berth-agent"), "{info}");
    assert!(
        info.contains("docker.io | docker-ce | docker-engine"),
        "agent deb must depend on a Docker Engine:\n{info}"
    );
    let name = ok(Command::new("dpkg-deb")
        .arg("-f")
        .arg(&p.agent_deb)
        .arg("Package"));
    assert_eq!(name.trim(), "berth-agent");
    let ctrl = tempfile::tempdir().expect("tempdir");
    ok(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&p.agent_deb)
        .arg(ctrl.path()));
    let conffiles = std::fs::read_to_string(ctrl.path().join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles.trim(),
        "/etc/berth/agent.toml",
        "conffiles of the agent deb"
    );
    for s in ["postinst", "prerm", "postrm"] {
        let path = ctrl.path().join(s);
        assert!(path.is_file(), "agent deb has no {s}");
        ok(Command::new("sh").arg("-n").arg(&path));
    }

    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&p.server_deb));
    for path in [
        "./usr/bin/berth",
        "./usr/lib/systemd/system/berth-server.service",
        "./etc/berth/server.env",
        "./usr/share/man/man1/berth.1.gz",
        "./usr/share/man/man1/berth-task-run.1.gz",
    ] {
        assert!(
            contents.contains(path),
            "server deb lacks {path}:\n{contents}"
        );
    }
    let docs = man_pages_of(&berth_bin())
        .into_iter()
        .map(|page| format!("./usr/share/man/man1/{page}.gz"))
        .chain(completion_files(".", "berth", "vendor-completions"));
    for path in docs {
        assert!(
            contents.lines().any(|l| l.ends_with(&path)),
            "server deb lacks {path}:\n{contents}"
        );
    }
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&p.server_deb));
    assert!(info.contains("Package: berth-server"), "{info}");
    let ctrl = tempfile::tempdir().expect("tempdir");
    ok(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&p.server_deb)
        .arg(ctrl.path()));
    for s in ["postinst", "prerm", "postrm"] {
        ok(Command::new("sh").arg("-n").arg(ctrl.path().join(s)));
    }
}

#[test]
fn rpms_hold_the_binary_unit_config_and_dependencies() {
    let p = packages();
    let files = ok(Command::new("rpm").arg("-qlp").arg(&p.agent_rpm));
    for path in [
        "/usr/bin/berth-agent",
        "/usr/lib/systemd/system/berth-agent.service",
        "/etc/berth/agent.toml",
        "/usr/share/man/man1/berth-agent.1.gz",
        "/usr/share/man/man1/berth-agent-enroll.1.gz",
    ] {
        assert!(
            files.lines().any(|l| l == path),
            "agent rpm lacks {path}:\n{files}"
        );
    }
    let docs = man_pages_of(&agent_bin())
        .into_iter()
        .map(|page| format!("/usr/share/man/man1/{page}.gz"))
        .chain(completion_files("", "berth-agent", "site-functions"));
    for path in docs {
        assert!(
            files.lines().any(|l| l == path),
            "agent rpm lacks {path}:\n{files}"
        );
    }
    let verbose = ok(Command::new("rpm").arg("-qlvp").arg(&p.agent_rpm));
    assert!(
        verbose
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("/usr/bin/berth-agent")),
        "berth-agent must be 0755:\n{verbose}"
    );
    let config = ok(Command::new("rpm")
        .arg("-qp")
        .arg("--configfiles")
        .arg(&p.agent_rpm));
    assert_eq!(config.trim(), "/etc/berth/agent.toml");
    // noreplace: an upgrade keeps the administrator's file.
    let flags = ok(Command::new("rpm")
        .args(["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]"])
        .arg(&p.agent_rpm));
    assert!(
        flags
            .lines()
            .any(|l| l.starts_with("/etc/berth/agent.toml ") && l.contains('n') && l.contains('c')),
        "agent.toml must be %config(noreplace):\n{flags}"
    );
    let requires = ok(Command::new("rpm")
        .arg("-qp")
        .arg("--requires")
        .arg(&p.agent_rpm));
    assert!(
        requires
            .lines()
            .any(|l| l.trim() == "(docker-ce or moby-engine or docker)"),
        "agent rpm must require a Docker Engine:\n{requires}"
    );
    let scripts = ok(Command::new("rpm")
        .arg("-qp")
        .arg("--scripts")
        .arg(&p.agent_rpm));
    for s in [
        "postinstall scriptlet",
        "preuninstall scriptlet",
        "postuninstall scriptlet",
    ] {
        assert!(scripts.contains(s), "agent rpm lacks its {s}:\n{scripts}");
    }

    let files = ok(Command::new("rpm").arg("-qlp").arg(&p.server_rpm));
    for path in [
        "/usr/bin/berth",
        "/usr/lib/systemd/system/berth-server.service",
        "/etc/berth/server.env",
        "/usr/share/man/man1/berth.1.gz",
        "/usr/share/man/man1/berth-task-run.1.gz",
    ] {
        assert!(
            files.lines().any(|l| l == path),
            "server rpm lacks {path}:\n{files}"
        );
    }
    let docs = man_pages_of(&berth_bin())
        .into_iter()
        .map(|page| format!("/usr/share/man/man1/{page}.gz"))
        .chain(completion_files("", "berth", "site-functions"));
    for path in docs {
        assert!(
            files.lines().any(|l| l == path),
            "server rpm lacks {path}:\n{files}"
        );
    }
    let scripts = ok(Command::new("rpm")
        .arg("-qp")
        .arg("--scripts")
        .arg(&p.server_rpm));
    assert!(
        scripts.contains("preinstall scriptlet") && scripts.contains("useradd"),
        "{scripts}"
    );
}

/// What the debs ship as docs works: every man page renders without a
/// warning (`groff -ww`, as `man` would run it), and bash loads the
/// completion script and registers it for the binary.
#[test]
fn packaged_man_pages_render_and_bash_completions_load() {
    let p = packages();
    for (deb, bin) in [(&p.agent_deb, "berth-agent"), (&p.server_deb, "berth")] {
        let root = tempfile::tempdir().expect("tempdir");
        ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
        let man1 = root.path().join("usr/share/man/man1");
        let mut pages = 0;
        for e in std::fs::read_dir(&man1)
            .unwrap_or_else(|e| panic!("{}: {e}", man1.display()))
            .flatten()
        {
            let page = e.path();
            let out = run(Command::new("sh")
                .arg("-c")
                .arg(r#"gzip -dc "$1" | groff -k -man -Tutf8 -ww -z"#)
                .arg("sh")
                .arg(&page));
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "{} does not render cleanly:\n{}",
                page.display(),
                text(&out)
            );
            pages += 1;
        }
        assert!(pages > 2, "{bin}: only {pages} man pages");
        let bash = root
            .path()
            .join("usr/share/bash-completion/completions")
            .join(bin);
        let out = ok(Command::new("bash")
            .arg("-c")
            .arg(r#"source "$1" && complete -p "$2""#)
            .arg("bash")
            .arg(&bash)
            .arg(bin));
        assert!(out.contains(bin), "complete -p {bin}: {out}");
    }
}

#[test]
fn scripts_pass_shellcheck() {
    // installs shellcheck when missing
    let _ = packages();
    let root = repo_root();
    // Every *.sh of the repository's script folders, found rather than
    // listed, so a new script cannot be missed.
    let mut shell_scripts: Vec<PathBuf> = Vec::new();
    for dir in ["packaging", "packaging/test", "scripts"] {
        for e in std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "sh") {
                shell_scripts.push(e.path());
            }
        }
    }
    for expected in [
        "packaging/enroll.sh",
        "packaging/test/systemd-rootfs.sh",
        "scripts/test.sh",
    ] {
        assert!(
            shell_scripts.contains(&root.join(expected)),
            "{expected} was not found among {shell_scripts:?}"
        );
    }
    ok(Command::new("shellcheck")
        .current_dir(&root)
        .args(&shell_scripts));
    let mut sh_scripts: Vec<PathBuf> = vec![root.join("packaging/test/systemctl-stub")];
    for dir in [
        "packaging/deb/berth-agent",
        "packaging/deb/berth-server",
        "packaging/rpm/berth-agent",
        "packaging/rpm/berth-server",
    ] {
        for e in std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten()
        {
            sh_scripts.push(e.path());
        }
    }
    for s in &sh_scripts {
        ok(Command::new("sh").arg("-n").arg(s));
    }
    ok(Command::new("shellcheck")
        .args(["-s", "sh"])
        .args(&sh_scripts));
}

#[test]
fn default_config_documents_every_key_and_loads() {
    // The config's own keys (its ENV_KEYS) and the policy keys (the fields
    // of `Policy`, which the config embeds; `#[serde(skip)]` ones are not
    // keys).
    let config_rs = std::fs::read_to_string(repo_root().join("agent/src/config/mod.rs"))
        .expect("config/mod.rs");
    let start = config_rs
        .find("const ENV_KEYS")
        .expect("ENV_KEYS in config/mod.rs");
    let end = start + config_rs[start..].find("];").expect("end of ENV_KEYS");
    let mut keys: Vec<&str> = config_rs[start..end]
        .split("(\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    let policy_rs =
        std::fs::read_to_string(repo_root().join("agent/src/policy.rs")).expect("policy.rs");
    let start = policy_rs
        .find("pub struct Policy {")
        .expect("Policy in policy.rs");
    let end = start + policy_rs[start..].find("\n}\n").expect("end of Policy");
    let mut skipped = false;
    for line in policy_rs[start..end].lines().map(str::trim) {
        if line.starts_with("#[serde(skip") {
            skipped = true;
        } else if let Some(field) = line.strip_prefix("pub ").and_then(|l| l.split_once(':')) {
            if !skipped {
                keys.push(field.0);
            }
            skipped = false;
        }
    }
    assert!(
        keys.len() >= 20 && keys.contains(&"allow_privileged") && keys.contains(&"server"),
        "parsed too few keys from ENV_KEYS and Policy: {keys:?}"
    );
    let toml =
        std::fs::read_to_string(repo_root().join("packaging/agent.toml")).expect("agent.toml");
    for key in &keys {
        assert!(
            toml.lines().any(|l| l.starts_with(&format!("#{key} = "))),
            "packaging/agent.toml does not document `{key}` (as `#{key} = <default>`)"
        );
    }
    // As shipped (all commented) and with every line uncommented, the agent
    // accepts the file.
    let dir = tempfile::tempdir().expect("tempdir");
    let uncommented: String = toml
        .lines()
        .map(|l| {
            keys.iter()
                .find(|k| l.starts_with(&format!("#{k} = ")))
                .map_or(l.to_string(), |_| l[1..].to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (name, body) in [
        ("shipped.toml", toml.clone()),
        ("uncommented.toml", uncommented),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write config");
        // `status` loads the config first, then fails to reach the (absent)
        // agent: any config error would come first.
        let out = run(berth_e2e::clean_command(&agent_bin())
            .args(["status", "--config"])
            .arg(&path)
            .env("BERTH_API_LISTEN", "127.0.0.1:9"));
        let t = text(&out);
        assert!(
            !t.contains("invalid config") && !t.contains("cannot read config"),
            "{name}: {t}"
        );
    }
}

// --- enroll.sh without installing anything -----------------------------------

fn enroll_sh() -> Command {
    Command::new(script("packaging/enroll.sh"))
}

#[test]
fn enroll_sh_help_and_usage_errors() {
    let out = run(enroll_sh().arg("--help"));
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let help = text(&out);
    for word in [
        "--server",
        "--activation-id",
        "--activation-code",
        "--package",
        "--dry-run",
        "--uninstall",
        "--purge",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }

    let out = run(enroll_sh().arg("--bogus-flag"));
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(
        text(&out).contains("--bogus-flag"),
        "{}",
        describe_output(&out)
    );

    let out = run(enroll_sh().args(["--server"]));
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));

    let out = run(enroll_sh().args(["--purge"]));
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));

    let out = run(enroll_sh().args(["--activation-id", "a", "--activation-code", "c"]));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let t = text(&out);
    assert!(
        t.contains("step 'check arguments'") && t.contains("--server"),
        "{t}"
    );
    assert!(
        t.contains("fix:"),
        "the failure must say how to fix it: {t}"
    );
}

#[test]
fn enroll_sh_dry_run_prints_the_steps_and_changes_nothing() {
    require_root!();
    let p = packages();
    let run_id = RunId::new();
    let sb = Sandbox::new(&run_id, "dry-run");
    sb.sh(&[], &install_stub());
    let before = sb.changes();
    let code = format!("secret-{run_id}");
    let cmd = format!(
        "{} --dry-run --server https://x:7420 --activation-id a --activation-code {code} --ca-hash sha256:{} --package {} --reserved-memory 256",
        script("packaging/enroll.sh").display(),
        "ab".repeat(32),
        p.agent_deb.display()
    );
    let out = sb.run(
        &["--systemd", "--bind", &p.dir().display().to_string()],
        &cmd,
    );
    let t = text(&out);
    assert!(
        out.status.success(),
        "dry run failed\n{}",
        describe_output(&out)
    );
    for step in [
        "check arguments",
        "check systemd",
        "check architecture",
        "detect distribution",
        "docker",
        "install berth-agent",
        "write config",
        "enroll",
        "start agent",
        "wait for agent",
    ] {
        assert!(
            t.contains(&format!("==> [{step}]")),
            "dry run does not show step '{step}':\n{t}"
        );
    }
    assert!(
        t.contains(&format!(
            "would run: env DEBIAN_FRONTEND=noninteractive apt-get install -y -q {}",
            p.agent_deb.display()
        )),
        "{t}"
    );
    assert!(t.contains("would run: berth-agent enroll --server https://x:7420 --activation-id a --activation-code ********"), "{t}");
    assert!(
        t.contains("would set in /etc/berth/agent.toml: reserved_memory_mib = 256"),
        "{t}"
    );
    assert!(
        t.contains("would run: systemctl enable berth-agent.service")
            || t.contains("berth-agent.service is enabled"),
        "{t}"
    );
    assert!(!t.contains(&code), "the activation code was printed:\n{t}");

    // Nothing changed but the stub's own call log.
    let after: BTreeSet<String> = sb
        .changes()
        .into_iter()
        .filter(|p| {
            !p.starts_with("/var/log/systemctl-stub.log")
                && !p.starts_with("/var/lib/systemctl-stub")
        })
        .collect();
    let before: BTreeSet<String> = before
        .into_iter()
        .filter(|p| !p.starts_with("/var/lib/systemctl-stub"))
        .collect();
    // A directory that exists on the host was only copied up (its mtime
    // changed, e.g. /tmp for dpkg-deb's scratch dir), not created.
    let new: Vec<&String> = after
        .difference(&before)
        .filter(|p| !Path::new(p.as_str()).is_dir())
        .collect();
    assert!(new.is_empty(), "the dry run changed files: {new:?}");
    let calls = sb.systemctl_calls();
    for verb in ["enable ", "start ", "restart ", "stop ", "disable "] {
        assert!(
            !calls.lines().any(|l| l.starts_with(verb)),
            "the dry run called systemctl {verb}:\n{calls}"
        );
    }
    let status = sb.run(&[], "dpkg-query -W berth-agent");
    assert!(
        !status.status.success(),
        "berth-agent got installed by a dry run"
    );
}

// --- installs in a sandbox ------------------------------------------------------

fn mode_owner(sb: &Sandbox, path: &str) -> String {
    sb.sh(&[], &format!("stat -c '%a %U' {path}"))
        .trim()
        .to_string()
}

#[test]
fn deb_install_upgrade_remove_purge_without_systemd() {
    require_root!();
    let p = packages();
    let run_id = RunId::new();
    let sb = Sandbox::new(&run_id, "deb");
    let bind = ["--bind", p.dir().to_str().expect("utf-8 path")];
    let force = dpkg_depends_flag();
    let install = format!(
        "{QUIET_DPKG}; dpkg -i {force} {} {}",
        p.agent_deb.display(),
        p.server_deb.display()
    );
    let t = sb.sh(&bind, &install);
    assert!(
        t.contains("systemd is not running: not starting berth-agent.service"),
        "{t}"
    );

    // Files, modes, users, enablement (systemctl enable works offline).
    assert_eq!(mode_owner(&sb, "/var/lib/berth"), "700 root");
    assert_eq!(mode_owner(&sb, "/var/lib/berth-server"), "700 berth");
    assert_eq!(mode_owner(&sb, "/usr/bin/berth-agent"), "755 root");
    sb.sh(
        &[],
        "getent passwd berth | grep -q ':/var/lib/berth-server:/usr/sbin/nologin$'",
    );
    sb.sh(
        &[],
        "test -L /etc/systemd/system/multi-user.target.wants/berth-agent.service",
    );
    sb.sh(
        &[],
        "test -L /etc/systemd/system/multi-user.target.wants/berth-server.service",
    );
    let conffiles = sb.sh(&[], "dpkg-query -W -f='${Conffiles}' berth-agent");
    assert!(conffiles.contains("/etc/berth/agent.toml"), "{conffiles}");

    // The installed units, with the installed binaries and man pages.
    let verify = sb.run(&[], "systemd-analyze verify /usr/lib/systemd/system/berth-agent.service /usr/lib/systemd/system/berth-server.service");
    assert!(
        verify.status.success() && !text(&verify).contains("berth"),
        "systemd-analyze verify:\n{}",
        describe_output(&verify)
    );

    // Upgrade (same package again): the administrator's config and the
    // identity stay.
    sb.sh(&[], "echo 'reserved_memory_mib = 512' >> /etc/berth/agent.toml && echo '{\"instanceId\":\"i-test\"}' > /var/lib/berth/identity.json");
    sb.sh(
        &bind,
        &format!("{QUIET_DPKG}; dpkg -i {force} {}", p.agent_deb.display()),
    );
    sb.sh(&[], "grep -qx 'reserved_memory_mib = 512' /etc/berth/agent.toml && test -f /var/lib/berth/identity.json");

    // Remove keeps data and config; purge deletes the agent's own data only.
    sb.sh(
        &[],
        "mkdir -p /var/lib/berth-volumes/app && echo data > /var/lib/berth-volumes/app/file",
    );
    sb.sh(&[], &format!("{QUIET_DPKG}; dpkg -r berth-agent"));
    sb.sh(&[], "test ! -e /usr/bin/berth-agent && test -f /var/lib/berth/identity.json && test -f /etc/berth/agent.toml");
    sb.sh(&[], &format!("{QUIET_DPKG}; dpkg -P berth-agent"));
    sb.sh(&[], "test ! -e /var/lib/berth && test ! -e /etc/berth/agent.toml && test ! -e /etc/systemd/system/multi-user.target.wants/berth-agent.service");
    sb.sh(
        &[],
        "grep -qx data /var/lib/berth-volumes/app/file && test -f /etc/berth/server.env",
    );
    sb.sh(&[], &format!("{QUIET_DPKG}; dpkg -P berth-server"));
    sb.sh(
        &[],
        "test ! -e /var/lib/berth-server && test ! -e /etc/berth",
    );
}

#[test]
fn deb_scripts_enable_but_start_only_an_enrolled_agent() {
    require_root!();
    let p = packages();
    let run_id = RunId::new();
    let sb = Sandbox::new(&run_id, "deb-systemd");
    let opts = ["--systemd", "--bind", p.dir().to_str().expect("utf-8 path")];
    let force = dpkg_depends_flag();
    sb.sh(&[], &install_stub());
    let install_agent = format!("{QUIET_DPKG}; dpkg -i {force} {}", p.agent_deb.display());

    // First install, not enrolled: reload, enable, no start.
    let t = sb.sh(&opts, &install_agent);
    let calls = sb.systemctl_calls();
    assert!(calls.lines().any(|l| l == "daemon-reload"), "{calls}");
    assert!(
        calls.lines().any(|l| l == "enable berth-agent.service"),
        "{calls}"
    );
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("start") || l.starts_with("restart")),
        "started before enrollment:\n{calls}"
    );
    assert!(t.contains("it starts once this host is enrolled"), "{t}");

    // Upgrade of a stopped agent: no start; of a running one: try-restart.
    sb.sh(
        &[],
        "echo '{\"instanceId\":\"i-test\"}' > /var/lib/berth/identity.json",
    );
    sb.clear_systemctl_calls();
    sb.sh(&opts, &install_agent);
    let calls = sb.systemctl_calls();
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("start") || l.starts_with("try-restart")),
        "{calls}"
    );
    assert!(
        !calls.lines().any(|l| l.starts_with("enable")),
        "an upgrade must keep the admin's enablement:\n{calls}"
    );
    sb.sh(&opts, "systemctl start berth-agent.service");
    sb.clear_systemctl_calls();
    sb.sh(&opts, &install_agent);
    let calls = sb.systemctl_calls();
    assert!(
        calls
            .lines()
            .any(|l| l == "try-restart berth-agent.service"),
        "{calls}"
    );

    // Remove stops it.
    sb.clear_systemctl_calls();
    sb.sh(&opts, &format!("{QUIET_DPKG}; dpkg -r berth-agent"));
    let calls = sb.systemctl_calls();
    assert!(
        calls.lines().any(|l| l == "stop berth-agent.service"),
        "{calls}"
    );

    // A fresh install on an enrolled host (identity pre-seeded) starts it.
    sb.sh(&opts, &format!("{QUIET_DPKG}; dpkg -P berth-agent; mkdir -p /var/lib/berth; echo '{{}}' > /var/lib/berth/identity.json"));
    sb.clear_systemctl_calls();
    sb.sh(&opts, &install_agent);
    let calls = sb.systemctl_calls();
    assert!(
        calls.lines().any(|l| l == "start berth-agent.service"),
        "{calls}"
    );

    // The server is enabled and started on a first install.
    sb.clear_systemctl_calls();
    sb.sh(
        &opts,
        &format!("{QUIET_DPKG}; dpkg -i {}", p.server_deb.display()),
    );
    let calls = sb.systemctl_calls();
    assert!(
        calls.lines().any(|l| l == "enable berth-server.service"),
        "{calls}"
    );
    assert!(
        calls.lines().any(|l| l == "start berth-server.service"),
        "{calls}"
    );
}

#[test]
fn deb_scripts_work_without_systemctl() {
    require_root!();
    let p = packages();
    let run_id = RunId::new();
    let sb = Sandbox::new(&run_id, "deb-nosystemctl");
    let bind = ["--bind", p.dir().to_str().expect("utf-8 path")];
    let force = dpkg_depends_flag();
    sb.sh(&[], "rm -f /usr/bin/systemctl /bin/systemctl");
    let t = sb.sh(
        &bind,
        &format!(
            "{QUIET_DPKG}; dpkg -i {force} {} {}",
            p.agent_deb.display(),
            p.server_deb.display()
        ),
    );
    assert!(t.contains("berth-agent: systemctl not found"), "{t}");
    assert!(t.contains("berth-server: systemctl not found"), "{t}");
    assert_eq!(mode_owner(&sb, "/var/lib/berth"), "700 root");
    let t = sb.sh(
        &[],
        &format!("{QUIET_DPKG}; dpkg -P berth-agent berth-server"),
    );
    assert!(t.contains("nothing to stop"), "{t}");
}

#[test]
fn rpm_install_and_erase() {
    require_root!();
    let p = packages();
    let run_id = RunId::new();
    let sb = Sandbox::new(&run_id, "rpm");
    let opts = ["--systemd", "--bind", p.dir().to_str().expect("utf-8 path")];
    sb.sh(&[], &install_stub());
    // --nodeps: this Debian host has no rpm database of its dependencies.
    let t = sb.sh(
        &opts,
        &format!(
            "rpm -i --nodeps {} {}",
            p.agent_rpm.display(),
            p.server_rpm.display()
        ),
    );
    assert!(t.contains("it starts once this host is enrolled"), "{t}");
    let calls = sb.systemctl_calls();
    assert!(
        calls.lines().any(|l| l == "enable berth-agent.service"),
        "{calls}"
    );
    assert!(
        !calls.lines().any(|l| l == "start berth-agent.service"),
        "{calls}"
    );
    assert!(
        calls.lines().any(|l| l == "start berth-server.service"),
        "{calls}"
    );
    assert_eq!(mode_owner(&sb, "/var/lib/berth"), "700 root");
    assert_eq!(mode_owner(&sb, "/var/lib/berth-server"), "700 berth");
    sb.sh(&[], "echo '{}' > /var/lib/berth/identity.json");
    sb.clear_systemctl_calls();
    sb.sh(&opts, "rpm -e --nodeps berth-agent");
    let calls = sb.systemctl_calls();
    assert!(
        calls
            .lines()
            .any(|l| l.contains("disable --now berth-agent.service")),
        "{calls}"
    );
    sb.sh(
        &[],
        "test ! -e /usr/bin/berth-agent && test -f /var/lib/berth/identity.json",
    );
}

// --- enroll.sh for real --------------------------------------------------------

#[test]
fn enroll_sh_enrolls_is_idempotent_and_uninstalls() {
    require_root!();
    let p = packages();
    let run_id = RunId::new();
    let server = Server::start(&run_id);
    let activation = server.token();
    let sb = Sandbox::new(&run_id, "enroll");
    let opts = [
        "--systemd",
        "--docker",
        "--bind",
        p.dir().to_str().expect("utf-8 path"),
    ];
    // A free loopback port for the agent's local API (51678 may be taken).
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    sb.sh(
        &opts,
        &format!(
            "{stub} && mkdir -p /var/lib/systemctl-stub && touch /var/lib/systemctl-stub/run-agent && {QUIET_DPKG}",
            stub = install_stub(),
        ),
    );
    // enroll.sh installs the .deb with apt-get (offline: its dependencies
    // are installed on this host; else it would fetch them).
    assert!(
        dpkg_depends_flag().is_empty(),
        "this test needs a Docker Engine package (docker.io) on the host: run scripts/setup.sh"
    );
    let enroll = format!(
        "{} --server {} --activation-id {} --activation-code {} --ca-hash {} --package {} --reserved-memory 128 --api-listen 127.0.0.1:{api_port} --timeout 60",
        script("packaging/enroll.sh").display(),
        server.fleet_url(),
        activation.id,
        activation.code,
        activation.ca_hash_arg(),
        p.agent_deb.display()
    );
    let out = sb.run(&opts, &enroll);
    let t = text(&out);
    assert!(
        out.status.success(),
        "enroll.sh failed\n{}",
        describe_output(&out)
    );
    assert!(
        !t.contains(&activation.code),
        "the activation code was printed:\n{t}"
    );
    assert!(
        t.contains("This host is enrolled into the berth fleet."),
        "{t}"
    );
    assert!(
        t.contains("apt-get install -y -q /"),
        "enroll.sh did not install the package: {t}"
    );
    let instance_id = t
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("instance")
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no instance line in the summary:\n{t}"));
    assert!(instance_id.starts_with("i-"), "{instance_id}");
    server.client().wait_connected(&instance_id);
    sb.sh(&[], &format!("grep -qx 'reserved_memory_mib = 128' /etc/berth/agent.toml && grep -qx 'api_listen = \"127.0.0.1:{api_port}\"' /etc/berth/agent.toml"));
    sb.sh(
        &[],
        "dpkg-query -W -f='${db:Status-Status}' berth-agent | grep -qx installed",
    );

    // Second run: nothing changes, no restart.
    sb.clear_systemctl_calls();
    let out = sb.run(&opts, &enroll);
    let t = text(&out);
    assert!(
        out.status.success(),
        "second enroll.sh failed\n{}",
        describe_output(&out)
    );
    assert!(
        t.contains("Nothing changed: this host is already enrolled as"),
        "{t}"
    );
    let calls = sb.systemctl_calls();
    assert!(
        !calls
            .lines()
            .any(|l| l.starts_with("start") || l.starts_with("restart") || l.starts_with("enable")),
        "a second run must not touch the service:\n{calls}"
    );

    // Uninstall: stopped, disabled, package removed, identity kept.
    let out = sb.run(
        &opts,
        &format!("{} --uninstall", script("packaging/enroll.sh").display()),
    );
    assert!(
        out.status.success(),
        "--uninstall failed\n{}",
        describe_output(&out)
    );
    let calls = sb.systemctl_calls();
    assert!(
        calls
            .lines()
            .any(|l| l == "disable --now berth-agent.service"),
        "{calls}"
    );
    sb.sh(
        &[],
        "test ! -e /usr/bin/berth-agent && test -f /var/lib/berth/identity.json",
    );
    server.client().wait_disconnected(&instance_id);
    // A second --uninstall is a no-op.
    let out = sb.run(
        &opts,
        &format!("{} --uninstall", script("packaging/enroll.sh").display()),
    );
    assert!(
        out.status.success() && text(&out).contains("not installed"),
        "{}",
        describe_output(&out)
    );
}
