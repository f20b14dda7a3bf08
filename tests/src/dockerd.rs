//! A private Docker Engine for tests that stop and start the Engine.
//!
//! # Background
//! Restarting the machine's Docker Engine would disturb every other test and
//! everything else on the host. A test that needs an Engine restart starts
//! its own `dockerd` instead, with everything it owns under one temporary
//! directory:
//!
//! ```text
//! unshare --net                                        (a network namespace of its own, see below)
//! dockerd --config-file <tmp>/daemon.json            ({}: the host's /etc/docker/daemon.json is not read)
//!         --host unix://<tmp>/docker.sock
//!         --data-root <tmp>/root --exec-root <tmp>/exec --pidfile <tmp>/dockerd.pid
//!         --storage-driver vfs                         (no overlay mounts; the test image is tiny)
//!         --bridge none --iptables=false --ip-masq=false --ip-forward=false
//! ```
//!
//! With no `--containerd`, dockerd (Debian's docker.io 20.10) starts a
//! managed containerd of its own, with its socket and state under
//! `<tmp>/exec/containerd` and its content under `<tmp>/root/containerd`; the
//! host's Engine and containerd are not involved. With `--bridge none` there
//! is no bridge and no iptables rule: tasks run with `networkMode: none`.
//!
//! **The network namespace is not optional.** With `--bridge none`, dockerd
//! deletes any interface called `docker0` at start (moby's
//! `removeDefaultBridgeInterface`): run in the host's namespace it takes the
//! host Engine's bridge away from every other container. `unshare --net`
//! execs dockerd (same pid) in an empty namespace of its own; the agent
//! reaches it through its unix socket, which is a file, not a network
//! address. [`Dockerd::start`] checks the namespace before anything else.
//!
//! # Cleanup
//! Dropping a [`Dockerd`] removes its containers through its socket, stops it
//! (SIGTERM by pid, SIGKILL after a grace period), then, in case it died
//! without cleaning up: kills what is left of its containers (the pids in
//! their cgroups, found by the container ids under its data root) and of its
//! containerd and shims (found by their command lines, which name the
//! private exec root), unmounts everything mounted under its directory and
//! removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{Proc, RunId, describe_output, output_of, wait_for};

/// How long a private Engine gets to answer after it is spawned.
const READY: Duration = Duration::from_secs(60);

/// A private `dockerd` and everything it keeps, under one temporary
/// directory.
pub struct Dockerd {
    // Field order is drop order, but `Drop` does the real work.
    proc: Option<Proc>,
    starts: u32,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts a private Engine and waits until it answers.
    pub fn start(run: &RunId) -> Dockerd {
        let dir = run.temp_dir("dockerd");
        let config = dir.path().join("daemon.json");
        std::fs::write(&config, "{}\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        let mut d = Dockerd {
            proc: None,
            starts: 0,
            dir,
        };
        d.start_again();
        d
    }

    /// Starts the Engine again on the same directories (after
    /// [`Dockerd::stop`]) and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(
            self.proc.is_none(),
            "the private dockerd is already running"
        );
        self.starts += 1;
        let dir = self.dir.path();
        let log = dir.join(format!("dockerd-{}.log", self.starts));
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "dockerd"])
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.exec_root())
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args([
                "--storage-driver",
                "vfs",
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--ip-forward=false",
            ])
            .env_remove("DOCKER_HOST");
        let mut proc = Proc::spawn("private dockerd", &mut cmd, &log);
        wait_for(
            &format!("the private dockerd to answer on {}", self.host()),
            READY,
            || {
                proc.assert_running("starting");
                let out = self.docker(&["version", "--format", "{{.Server.Version}}"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(describe_output(&out))
                }
            },
        );
        assert_own_network_namespace(proc.pid());
        self.proc = Some(proc);
    }

    /// Stops the Engine with SIGTERM (by its pid) and waits for it to exit.
    /// Its containers stop with it (no live-restore).
    pub fn stop(&mut self) -> ExitStatus {
        let mut proc = self
            .proc
            .take()
            .expect("the private dockerd is not running");
        let status = proc.terminate();
        drop(proc);
        status
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// `unix://<tmp>/docker.sock`: for `docker -H` and the agent's
    /// `docker_socket`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn exec_root(&self) -> PathBuf {
        self.dir.path().join("exec")
    }

    /// `docker -H <private socket> ARGS…`.
    pub fn docker(&self, args: &[&str]) -> Output {
        output_of(
            Command::new("docker")
                .arg("-H")
                .arg(self.host())
                .args(args)
                .env_remove("DOCKER_CONTEXT"),
        )
    }

    /// [`Dockerd::docker`], which must exit 0; returns stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "`docker -H {} {}` failed\n{}",
            self.host(),
            args.join(" "),
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies `tag` from the host's Engine: `docker save TAG | docker -H
    /// <private> load`.
    pub fn load_image(&self, tag: &str) {
        let mut save = Command::new("docker")
            .args(["save", tag])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker save {tag}: {e}"));
        let stdout = save.stdout.take().expect("docker save has a stdout pipe");
        let load = output_of(
            Command::new("docker")
                .arg("-H")
                .arg(self.host())
                .arg("load")
                .stdin(Stdio::from(stdout)),
        );
        let saved = save
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for docker save {tag}: {e}"));
        assert!(
            saved.status.success(),
            "`docker save {tag}` failed\n{}",
            describe_output(&saved)
        );
        assert!(
            load.status.success(),
            "`docker -H {} load` of {tag} failed\n{}",
            self.host(),
            describe_output(&load)
        );
    }

    /// `docker inspect` of every container of the private Engine labelled
    /// `berth.instance-id=<instance_id>`, running or not.
    pub fn containers_of(&self, instance_id: &str) -> Vec<Value> {
        let filter = format!("label=berth.instance-id={instance_id}");
        let ids: Vec<String> = self
            .docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &filter])
            .split_whitespace()
            .map(String::from)
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec!["inspect"];
        args.extend(ids.iter().map(String::as_str));
        let out = self.docker(&args);
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(Value::Array(items)) => items,
            _ => panic!(
                "`docker -H {} inspect` of the containers of {instance_id} failed\n{}",
                self.host(),
                describe_output(&out)
            ),
        }
    }

    pub fn log_tail(&self) -> String {
        crate::log_tail(
            &self.dir.path().join(format!("dockerd-{}.log", self.starts)),
            60,
        )
    }

    /// Container ids the Engine keeps under its data root.
    fn known_container_ids(&self) -> Vec<String> {
        std::fs::read_dir(self.data_root().join("containers"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Kills what a dead Engine left behind: container processes (by their
    /// cgroups) and its containerd and shims (by command lines naming this
    /// Engine's directory). Never panics.
    fn kill_leftovers(&self) {
        let ids = self.known_container_ids();
        let mut cgroup_dirs = Vec::new();
        for id in &ids {
            // cgroup v1: one directory per controller; v2: one.
            let mut candidates = vec![PathBuf::from("/sys/fs/cgroup/docker").join(id)];
            if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
                for c in controllers.filter_map(Result::ok) {
                    candidates.push(c.path().join("docker").join(id));
                }
            }
            for dir in candidates {
                if dir.is_dir() {
                    cgroup_dirs.push(dir);
                }
            }
        }
        for dir in &cgroup_dirs {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    kill_pid(pid);
                }
            }
        }
        let mine = self.dir.path().to_string_lossy().into_owned();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.filter_map(Result::ok) {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                    continue;
                };
                if String::from_utf8_lossy(&cmdline).contains(&mine) {
                    kill_pid(pid);
                }
            }
        }
        for dir in &cgroup_dirs {
            remove_cgroup(dir);
        }
    }

    /// Unmounts everything mounted under the directory, deepest first.
    fn unmount_all(&self) {
        let mine = self.dir.path().to_string_lossy().into_owned();
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|p| p == &mine || p.starts_with(&format!("{mine}/")))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        points.dedup();
        for p in points {
            let out = Command::new("umount").arg(&p).output();
            if !out.is_ok_and(|o| o.status.success()) {
                let _ = Command::new("umount").arg("-l").arg(&p).output();
            }
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.is_running() {
            let out = self.docker(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let out = self.docker(&args);
                if !out.status.success() {
                    eprintln!(
                        "cleanup: cannot remove the private dockerd's containers\n{}",
                        describe_output(&out)
                    );
                }
            }
        }
        // SIGTERM by pid, SIGKILL after the grace period.
        drop(self.proc.take());
        self.kill_leftovers();
        self.unmount_all();
    }
}

/// Panics unless `pid` runs in another network namespace than the tests.
fn assert_own_network_namespace(pid: u32) {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap_or_else(|e| panic!("cannot read the network namespace of pid {pid}: {e}"));
    let ours = std::fs::read_link("/proc/self/ns/net")
        .unwrap_or_else(|e| panic!("cannot read our network namespace: {e}"));
    assert_ne!(
        theirs, ours,
        "the private dockerd (pid {pid}) runs in the host's network namespace"
    );
}

fn kill_pid(pid: i32) {
    if pid <= 1 || pid == std::process::id() as i32 {
        return;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Removes an (emptied) cgroup directory, retrying for a while as its
/// killed processes are reaped. A plain retry loop, not [`wait_for`]: this
/// runs in `Drop`, where a panic would abort.
fn remove_cgroup(dir: &Path) {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("cleanup: cannot remove cgroup {}", dir.display());
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as
/// octal (`\040`).
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/tmp/plain"), "/tmp/plain");
    }
}
