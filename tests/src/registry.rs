//! A private image registry on loopback: Debian's `docker-registry` (the
//! distribution registry, 2.x). Docker treats 127.0.0.0/8 registries as
//! insecure, so plain HTTP works without daemon configuration.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{Proc, RunId, describe_output, docker, docker_ok, http_get, wait_for};

const READY: Duration = Duration::from_secs(30);

/// An image pushed to a [`Registry`].
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `127.0.0.1:<port>/<repo>:<runid>`
    pub reference: String,
    /// The manifest digest the registry reported, `sha256:<hex>`.
    pub digest: String,
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
        // HTTP listen address; no auth, no health checks.
        let text = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        std::fs::write(&config, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let log = dir.path().join("registry.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg(&config);
        let mut proc = Proc::spawn("docker-registry", &mut cmd, &log);
        wait_for(
            &format!("the registry at {addr} to answer GET /v2/ with 200"),
            READY,
            || {
                proc.assert_running("starting");
                match http_get(&addr, "/v2/") {
                    Ok((200, _)) => Ok(()),
                    Ok((status, body)) => Err(format!("GET /v2/ answered {status}: {body}")),
                    Err(e) => Err(e),
                }
            },
        );
        Registry {
            proc,
            addr,
            run: run.clone(),
            pushed: Vec::new(),
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
        let out = docker(&["push", &reference]);
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
