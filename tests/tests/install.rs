//! A real install, the way an operator does it: a Debian host with systemd as
//! PID 1, `packaging/enroll.sh --package` with the freshly built `.deb`
//! against a `berth server`, then restart, a second run, an upgrade and
//! `--uninstall`.
//!
//! # Design
//! - The host is a container: a Debian root file system made with
//!   debootstrap (`packaging/test/systemd-rootfs.sh`, cached in
//!   `target/test-cache/`), imported as an image tagged with the run id and
//!   started with `/sbin/init`. It shares the test machine's network
//!   namespace (`--network host`), so the agent reaches the server on
//!   loopback and nothing leaves the machine; its local API gets a free
//!   loopback port.
//! - The host's Docker socket is mounted at `/run/docker.sock`: the agent in
//!   the container runs its task on the test machine's Docker Engine, which
//!   is how the test sees the containers. The image has Debian's docker.io
//!   installed (the package's dependency) with its own engine masked.
//! - Everything carries the run id: the image tag, the container name and
//!   label, the agent's instance (its containers are removed by their
//!   `berth.instance-id` label), the shared volume.
//!
//! # Limitations
//! Needs root (systemd in a container needs CAP_SYS_ADMIN and the cgroup
//! tree); skipped with a note otherwise. The first run on a machine
//! downloads Debian packages for the root file system (a few minutes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_e2e::{
    DEADLINE, RunId, Scratch, Server, TestImage, command_line, container_of, containers_of,
    describe_output, docker, docker_ok, output_of, packages, remove_labelled, repo_root, str_field,
    target_dir, task_def, wait_for,
};
use serde_json::{Value, json};

/// Where enroll.sh is inside the host.
const ENROLL: &str = "/usr/local/sbin/berth-enroll.sh";
/// Where the packages are inside the host.
const PACKAGES: &str = "/berth-packages";

/// The cached Debian root file system with systemd.
fn rootfs() -> PathBuf {
    let tar = target_dir().join("test-cache/debian-bookworm-systemd.tar");
    let script = repo_root().join("packaging/test/systemd-rootfs.sh");
    let out = output_of(Command::new(&script).arg(&tar));
    assert!(
        out.status.success(),
        "{} failed\n{}",
        script.display(),
        describe_output(&out)
    );
    tar
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// A Debian host with systemd as PID 1, in a container. Dropping it removes
/// the container and its image.
struct Host {
    name: String,
    image: String,
}

impl Host {
    fn boot(run: &RunId, rootfs: &Path, package_dir: &Path) -> Host {
        let image = format!("berth-e2e-host:{run}");
        let label = format!("berth-e2e-run={run}");
        let rootfs = rootfs.display().to_string();
        docker_ok(&[
            "import",
            "--change",
            r#"CMD ["/sbin/init"]"#,
            "--change",
            &format!("LABEL {label}"),
            &rootfs,
            &image,
        ]);
        let host = Host {
            name: format!("berth-e2e-{run}-host"),
            image,
        };
        let enroll = repo_root().join("packaging/enroll.sh");
        docker_ok(&[
            "run",
            "--detach",
            "--name",
            &host.name,
            "--label",
            &label,
            "--network",
            "host",
            // What systemd as PID 1 needs; the test machine's engine may
            // refuse --privileged (not every capability is in its bounding
            // set).
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--cgroupns",
            "host",
            "--volume",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "--stop-signal",
            "SIGRTMIN+3",
            "--volume",
            "/var/run/docker.sock:/run/docker.sock",
            "--volume",
            &format!("{}:{PACKAGES}:ro", package_dir.display()),
            "--volume",
            &format!("{}:{ENROLL}:ro", enroll.display()),
            &host.image,
        ]);
        // systemctl answers once systemd and dbus are up; --wait then
        // returns when the boot is over.
        let state = wait_for("systemd in the host to finish booting", DEADLINE, || {
            let out = host.exec(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match state.as_str() {
                "running" | "degraded" => Ok(state),
                _ => Err(format!("is-system-running: {}", describe_output(&out))),
            }
        });
        if state == "degraded" {
            eprintln!(
                "note: the host booted degraded:\n{}",
                host.sh("systemctl --failed --no-pager || true")
            );
        }
        host
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args(["exec", &self.name]).args(args);
        output_of(&mut cmd)
    }

    /// `sh -c SCRIPT` in the host, which must succeed; its stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in the host: {script}\n{}\n{}",
            describe_output(&out),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agent's journal, for failure messages.
    fn journal(&self) -> String {
        let out = self.exec(&["journalctl", "-u", "berth-agent", "-n", "40", "--no-pager"]);
        format!(
            "journal of berth-agent:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    }

    /// `systemctl show -p PROPERTY --value berth-agent`.
    fn unit(&self, property: &str) -> String {
        self.sh(&format!(
            "systemctl show -p {property} --value berth-agent.service"
        ))
        .trim()
        .to_string()
    }

    /// Runs enroll.sh with `args`; the whole output, asserting exit 0.
    fn enroll_sh(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("docker");
        cmd.args(["exec", &self.name, ENROLL]).args(args);
        let out = output_of(&mut cmd);
        assert!(
            out.status.success(),
            "{} failed\n{}\n{}",
            command_line(&cmd),
            describe_output(&out),
            self.journal()
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::env::var_os("BERTH_E2E_KEEP").is_some_and(|v| v == "1") {
            eprintln!("BERTH_E2E_KEEP=1: keeping container {}", self.name);
            return;
        }
        let out = docker(&["rm", "--force", "--volumes", &self.name]);
        if !out.status.success() {
            eprintln!(
                "cleanup: docker rm {}\n{}",
                self.name,
                describe_output(&out)
            );
        }
        let out = docker(&["rmi", &self.image]);
        if !out.status.success() {
            eprintln!(
                "cleanup: docker rmi {}\n{}",
                self.image,
                describe_output(&out)
            );
        }
    }
}

/// Removes the task's containers (by the instance's label) and the shared
/// volume, whatever happens to the test.
struct Leftovers {
    instance_id: Option<String>,
    volume: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(id) = &self.instance_id {
            remove_labelled(&format!("berth.instance-id={id}"));
        }
        let _ = docker(&["volume", "rm", "--force", &self.volume]);
    }
}

/// `(container id, StartedAt)` of every container of the instance.
fn containers_started(instance_id: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = containers_of(instance_id)
        .iter()
        .map(|c| {
            (
                str_field(c, "Id").to_string(),
                str_field(&c["State"], "StartedAt").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn enroll_sh_installs_the_deb_under_systemd_and_runs_tasks() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: systemd in a container needs root");
        return;
    }
    let run = RunId::new();
    let image = TestImage::build(&run);
    let server = Server::start(&run);
    let files = Scratch::new(&run);
    let deb = &packages().agent_deb;
    let deb_name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let host = Host::boot(&run, &rootfs(), packages().dir());
    let mut leftovers = Leftovers {
        instance_id: None,
        volume: format!("e2e-install-{run}"),
    };

    // --- enroll ---------------------------------------------------------
    let activation = server.token();
    let api = format!("127.0.0.1:{}", free_port());
    let package = format!("{PACKAGES}/{deb_name}");
    let ca_hash = activation.ca_hash_arg();
    let fleet_url = server.fleet_url();
    let args = [
        "--package",
        package.as_str(),
        "--server",
        fleet_url.as_str(),
        "--activation-id",
        activation.id.as_str(),
        "--activation-code",
        activation.code.as_str(),
        "--ca-hash",
        ca_hash.as_str(),
        "--api-listen",
        api.as_str(),
        "--no-docker-install",
    ];
    let said = host.enroll_sh(&args);
    assert!(
        said.contains("This host is enrolled"),
        "enroll.sh did not say the host is enrolled:\n{said}"
    );
    assert!(
        !said.contains(&activation.code),
        "enroll.sh printed the activation code:\n{said}"
    );
    let identity: Value = serde_json::from_str(&host.sh("cat /var/lib/berth/identity.json"))
        .unwrap_or_else(|e| panic!("identity.json is not JSON: {e}"));
    let instance_id = str_field(&identity, "instanceId").to_string();
    assert!(
        instance_id.starts_with("i-"),
        "identity.json has no instance id: {identity}"
    );
    leftovers.instance_id = Some(instance_id.clone());
    assert!(
        said.contains(&instance_id),
        "the summary does not name instance {instance_id}:\n{said}"
    );

    // The service runs under systemd: notify type reached READY=1.
    assert_eq!(host.unit("ActiveState"), "active", "{}", host.journal());
    assert_eq!(host.unit("SubState"), "running", "{}", host.journal());
    assert_eq!(host.unit("UnitFileState"), "enabled");
    let status = host.sh("systemctl status berth-agent.service --no-pager || true");
    assert!(
        status.contains("active (running)"),
        "systemctl status does not say active (running):\n{status}"
    );
    let mode = host.sh("stat -c %a /var/lib/berth").trim().to_string();
    assert_eq!(mode, "700", "/var/lib/berth must be 0700");
    server.wait_connected(&instance_id);
    // Its logs go to the journal, which stamps them: the agent's own text
    // lines carry no second timestamp.
    let line = wait_for("the agent's connection in the journal", DEADLINE, || {
        let journal = host.sh("journalctl -u berth-agent.service -o cat --no-pager");
        journal
            .lines()
            .find(|l| l.contains("connected to the control plane"))
            .map(str::to_owned)
            .ok_or(journal)
    });
    assert!(
        line.trim_start().starts_with("INFO"),
        "a journal line should start with its level, not a timestamp: {line:?}"
    );

    // --- a task -----------------------------------------------------------
    let family = format!("install-{run}");
    let mut def: Value = serde_json::from_str(&task_def(
        image.tag(),
        &family,
        json!([{
            "name": "app",
            "essential": true,
            "command": ["sh", "-c",
                "echo kept > /data/marker; trap 'exit 0' TERM; while true; do sleep 1; done"],
            "mountPoints": [{"sourceVolume": "data", "containerPath": "/data"}],
        }]),
    ))
    .unwrap_or_else(|e| panic!("task_def is JSON: {e}"));
    def["volumes"] = json!([{
        "name": leftovers.volume,
        "dockerVolumeConfiguration": {
            "scope": "shared", "autoprovision": true, "driver": "local",
            "labels": {"berth-e2e-run": run.to_string()}},
    }]);
    def["containerDefinitions"][0]["mountPoints"][0]["sourceVolume"] = json!(leftovers.volume);
    let file = files.write(&format!("{family}.json"), &def.to_string());
    let file_arg = file.display().to_string();
    let out = server.cli(&[
        "task",
        "run",
        "--task-definition",
        &file_arg,
        "--instance",
        &instance_id,
        "--wait",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "berth task run --wait\n{}\n{}",
        describe_output(&out),
        host.journal()
    );
    let task: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("task run --json: {e}\n{}", describe_output(&out)));
    let task_id = str_field(&task, "taskId").to_string();
    assert_eq!(
        str_field(container_of(&task, "app"), "lastStatus"),
        "RUNNING"
    );
    wait_for("the app to write its marker", DEADLINE, || {
        let cs = containers_of(&instance_id);
        let id = cs.first().map(|c| str_field(c, "Id").to_string())?;
        let out = docker(&["exec", &id, "cat", "/data/marker"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "kept")
            .then_some(())
    });
    let before = containers_started(&instance_id);
    assert_eq!(before.len(), 1, "one container expected: {before:?}");

    // The agent's STATUS= line reaches systemd (notify socket, NotifyAccess).
    wait_for(
        "the unit's status text to show the running task",
        DEADLINE,
        || {
            let text = host.unit("StatusText");
            if text.starts_with("connected, 1 tasks running") {
                Ok(())
            } else {
                Err(format!("StatusText={text:?}"))
            }
        },
    );
    assert_eq!(
        host.unit("WatchdogUSec"),
        "30s",
        "the unit arms the watchdog"
    );

    // --- systemctl restart restarts no container ---------------------------
    // A short watchdog for the rest of the test (a drop-in, as an operator
    // would add with `systemctl edit`), so its pings are seen soon.
    host.sh(
        "mkdir -p /etc/systemd/system/berth-agent.service.d && \
         printf '[Service]\\nWatchdogSec=4s\\n' > /etc/systemd/system/berth-agent.service.d/watchdog.conf && \
         systemctl daemon-reload",
    );
    let pid_before = host.unit("MainPID");
    host.sh("systemctl restart berth-agent.service");
    assert_eq!(host.unit("WatchdogUSec"), "4s");
    // systemd records every WATCHDOG=1 it gets: two distinct ping times
    // mean the agent's main loop keeps feeding it.
    let first = wait_for("a first watchdog ping", DEADLINE, || {
        let t = host.unit("WatchdogTimestampMonotonic");
        (t != "0" && !t.is_empty()).then_some(t)
    });
    wait_for("a second watchdog ping", DEADLINE, || {
        let t = host.unit("WatchdogTimestampMonotonic");
        if t != first {
            Ok(())
        } else {
            Err(format!("still {t}"))
        }
    });
    assert_eq!(host.unit("ActiveState"), "active", "{}", host.journal());
    let pid_after = host.unit("MainPID");
    assert_ne!(
        pid_before, pid_after,
        "systemctl restart must start a new agent"
    );
    server.wait_connected(&instance_id);
    wait_for(
        "the restarted agent to report the task RUNNING",
        DEADLINE,
        || {
            let out = host.exec(&["curl", "-fsS", &format!("http://{api}/v1/tasks/{task_id}")]);
            let t: Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("/v1/tasks/{task_id}: {e}: {}", describe_output(&out)))?;
            if str_field(&t, "lastStatus") == "RUNNING" {
                Ok(())
            } else {
                Err(format!("task: {t}"))
            }
        },
    );
    assert_eq!(
        containers_started(&instance_id),
        before,
        "systemctl restart berth-agent must not restart or replace a container"
    );

    // --- a second enroll.sh run changes nothing ---------------------------
    let identity_before = host.sh("sha256sum /var/lib/berth/identity.json /etc/berth/agent.toml");
    let said = host.enroll_sh(&args);
    assert!(
        said.contains("Nothing changed"),
        "a second enroll.sh run must say nothing changed:\n{said}"
    );
    assert_eq!(
        host.sh("sha256sum /var/lib/berth/identity.json /etc/berth/agent.toml"),
        identity_before,
        "a second enroll.sh run changed the identity or the config"
    );
    assert_eq!(
        host.unit("MainPID"),
        pid_after,
        "a second enroll.sh run restarted the agent"
    );
    assert_eq!(containers_started(&instance_id), before);

    // --- an upgrade (the package again) keeps identity and containers ------
    let said = host.sh(&format!("dpkg -i {package} 2>&1"));
    assert!(
        !said.contains("warning"),
        "the upgrade warned:\n{said}\n{}",
        host.journal()
    );
    assert_eq!(host.unit("ActiveState"), "active", "{}", host.journal());
    let pid_upgraded = host.unit("MainPID");
    assert_ne!(
        pid_upgraded, pid_after,
        "the upgrade must restart the running agent (try-restart)"
    );
    assert_eq!(
        host.sh("sha256sum /var/lib/berth/identity.json /etc/berth/agent.toml"),
        identity_before,
        "the upgrade changed the identity or the config"
    );
    server.wait_connected(&instance_id);
    assert_eq!(
        containers_started(&instance_id),
        before,
        "the upgrade must not restart or replace a container"
    );

    // --- --uninstall keeps the containers and their data --------------------
    let said = host.enroll_sh(&["--uninstall"]);
    assert!(said.contains("uninstalled"), "{said}");
    let status = host.sh("dpkg-query -W -f='${db:Status-Status}' berth-agent 2>/dev/null || true");
    assert_ne!(
        status.trim(),
        "installed",
        "berth-agent is still installed after --uninstall"
    );
    let out = host.exec(&["systemctl", "is-active", "berth-agent.service"]);
    assert!(
        !out.status.success(),
        "berth-agent.service is still active after --uninstall"
    );
    host.sh("test -s /var/lib/berth/identity.json");
    assert_eq!(
        containers_started(&instance_id),
        before,
        "--uninstall must leave the task's container running"
    );
    let id = &before[0].0;
    let out = docker(&["exec", id, "cat", "/data/marker"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "kept",
        "the container's data must be untouched by --uninstall: {}",
        describe_output(&out)
    );
}
