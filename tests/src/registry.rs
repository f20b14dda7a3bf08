//! A private image registry on loopback: Debian's `docker-registry` (the
//! distribution registry, 2.x). Docker treats 127.0.0.0/8 registries as
//! insecure, so plain HTTP works without daemon configuration.
//!
//! [`Registry::start_with_auth`] turns on HTTP basic auth (an htpasswd file
//! with a bcrypt hash); the harness then pushes with a `docker login` kept in
//! a Docker config directory of its own, so the host's `~/.docker` is never
//! read or written.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proc, RunId, command_line, describe_output, docker, docker_ok, http_get, wait_for};

const READY: Duration = Duration::from_secs(30);

/// An image pushed to a [`Registry`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:<port>/<repo>:<runid>`
    pub reference: String,
    /// The manifest digest the registry reported, `sha256:<hex>`.
    pub digest: String,
}

/// The user and password of a registry with basic auth. `Debug` hides the
/// password, so a failing assertion does not print it.
#[derive(Clone)]
pub struct RegistryLogin {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A running registry with its storage in a temporary directory. Dropping it
/// stops it and removes the local tags of the images pushed to it (pulled
/// again by agents).
pub struct Registry {
    // Field order is drop order: the process before its directory.
    proc: Proc,
    addr: String,
    run: RunId,
    pushed: Vec<String>,
    /// With basic auth: the login, and the Docker config directory that
    /// `docker login` wrote (used by `push`).
    auth: Option<(RegistryLogin, PathBuf)>,
    dir: tempfile::TempDir,
}

impl Registry {
    /// The registry binary: `$BERTH_TEST_REGISTRY_BIN`, else
    /// `/usr/bin/docker-registry`.
    pub fn binary() -> PathBuf {
        let bin = std::env::var_os("BERTH_TEST_REGISTRY_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
        assert!(
            bin.is_file(),
            "the registry binary {} is missing: run scripts/setup.sh (it installs Debian's docker-registry)",
            bin.display()
        );
        bin
    }

    /// Starts a registry on `127.0.0.1:<free port>` and waits until
    /// `GET /v2/` answers 200.
    pub fn start(run: &RunId) -> Registry {
        Self::launch(run, None)
    }

    /// [`Registry::start`] with HTTP basic auth for `login` (an htpasswd
    /// file with its bcrypt hash): `GET /v2/` answers 401 without it, and so
    /// does every pull. Logs in with `docker login` into a Docker config
    /// directory of the registry's own, which [`Registry::push`] uses.
    pub fn start_with_auth(run: &RunId, login: RegistryLogin) -> Registry {
        crate::capture::record_secret("registry password", &login.password);
        Self::launch(run, Some(login))
    }

    fn launch(run: &RunId, login: Option<RegistryLogin>) -> Registry {
        let bin = Self::binary();
        let dir = run.temp_dir("registry");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", storage.display()));
        // The registry cannot report a port it chose itself: take a free one
        // from the kernel and hand it over (another process could take it in
        // between; the readiness check would then fail with the log).
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"));
            listener
                .local_addr()
                .unwrap_or_else(|e| panic!("cannot read the free port: {e}"))
                .port()
        };
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        // Distribution 2.x configuration: version 0.1, filesystem storage,
        // HTTP listen address; basic auth from an htpasswd file when asked
        // for; no health checks.
        let mut text = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some(login) = &login {
            let htpasswd = dir.path().join("htpasswd");
            write_htpasswd(&htpasswd, login);
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-e2e-{run}\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = dir.path().join("registry.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg(&config);
        let mut proc = Proc::spawn("docker-registry", &mut cmd, &log);
        // Without credentials, a registry with auth answers 401.
        let ready_status = if login.is_some() { 401 } else { 200 };
        wait_for(
            &format!("the registry at {addr} to answer GET /v2/ with {ready_status}"),
            READY,
            || {
                proc.assert_running("starting");
                match http_get(&addr, "/v2/") {
                    Ok((status, _)) if status == ready_status => Ok(()),
                    Ok((status, body)) => Err(format!("GET /v2/ answered {status}: {body}")),
                    Err(e) => Err(e),
                }
            },
        );
        let auth = login.map(|login| {
            let config_dir = dir.path().join("docker-config");
            docker_login(&config_dir, &addr, &login, proc.log_path());
            (login, config_dir)
        });
        Registry {
            proc,
            addr,
            run: run.clone(),
            pushed: Vec::new(),
            auth,
            dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:<port>/<repo>:<runid>`, pushed or not.
    pub fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}:{}", self.addr, self.run)
    }

    /// Tags `local_tag` as `127.0.0.1:<port>/<repo>:<runid>`, pushes it, and
    /// removes that extra local tag again (so a later `docker run` of the
    /// reference must pull it).
    pub fn push(&mut self, local_tag: &str, repo: &str) -> PushedImage {
        let reference = self.reference(repo);
        docker_ok(&["tag", local_tag, &reference]);
        self.pushed.push(reference.clone());
        // With auth, the login of this registry's own Docker config.
        let config_dir = self
            .auth
            .as_ref()
            .map(|(_, dir)| dir.to_string_lossy().into_owned());
        let mut args: Vec<&str> = Vec::new();
        if let Some(dir) = &config_dir {
            args.extend(["--config", dir]);
        }
        args.extend(["push", &reference]);
        let out = docker(&args);
        assert!(
            out.status.success(),
            "`docker push {reference}` failed\n{}\nregistry log tail:\n{}",
            describe_output(&out),
            crate::log_tail(self.proc.log_path(), 40)
        );
        // "<tag>: digest: sha256:<hex> size: <n>"
        let stdout = String::from_utf8_lossy(&out.stdout);
        let digest = stdout
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("`docker push {reference}` printed no digest:\n{stdout}"))
            .to_string();
        docker_ok(&["rmi", &reference]);
        PushedImage { reference, digest }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The user and password of a registry started with
    /// [`Registry::start_with_auth`].
    pub fn login(&self) -> Option<&RegistryLogin> {
        self.auth.as_ref().map(|(login, _)| login)
    }

    /// The registry's log so far (`docker-registry serve`'s stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.proc.log_path())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.proc.log_path().display()))
    }
}

/// `<user>:<bcrypt hash>`, as `htpasswd -B` writes it; the registry accepts
/// bcrypt only. Cost 5 keeps every authenticated request cheap.
fn write_htpasswd(path: &Path, login: &RegistryLogin) {
    let hash = bcrypt::hash_with_result(&login.password, 5)
        .unwrap_or_else(|e| panic!("cannot hash the registry password: {e}"))
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(path, format!("{}:{hash}\n", login.username))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// `docker --config <config_dir> login --username … --password-stdin
/// <addr>`: the login lands in `<config_dir>/config.json`, never in the
/// host's `~/.docker`; the password goes through stdin, not the process
/// list.
fn docker_login(config_dir: &Path, addr: &str, login: &RegistryLogin, registry_log: &Path) {
    std::fs::create_dir_all(config_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", config_dir.display()));
    let mut cmd = Command::new("docker");
    cmd.arg("--config")
        .arg(config_dir)
        .args([
            "login",
            "--username",
            &login.username,
            "--password-stdin",
            addr,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(&cmd)));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(login.password.as_bytes())
            .unwrap_or_else(|e| panic!("cannot give `docker login` the password: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", command_line(&cmd)));
    assert!(
        out.status.success(),
        "`{}` failed\n{}\nregistry log tail:\n{}",
        command_line(&cmd),
        describe_output(&out),
        crate::log_tail(registry_log, 40)
    );
}

impl Drop for Registry {
    fn drop(&mut self) {
        for reference in &self.pushed {
            let exists = docker(&["image", "inspect", reference]);
            if !exists.status.success() {
                continue;
            }
            let out = docker(&["rmi", reference]);
            if !out.status.success() {
                eprintln!(
                    "cleanup: cannot remove image {reference}\n{}",
                    describe_output(&out)
                );
            }
        }
    }
}
