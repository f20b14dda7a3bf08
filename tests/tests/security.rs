//! Issue 5 end to end, with the real binaries: the pinned CA, activations
//! bound to a host, certificate renewal and expiry, revocation, cloned
//! hosts, the admin API off loopback and revoked admin certificates, secret
//! files, and a scan of every log and output for secrets.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use berth_e2e::{
    Activation, Agent, Cli, DEADLINE, LONG_RUNNING, Proc, RunId, Scratch, Server, TestImage,
    agent_bin, berth_bin, clean_command, describe_output, http_get, output_of, read_server_json,
    said, stdout_json, str_field, task_def, wait_for,
};
use serde_json::{Value, json};

/// How long a control plane gets to write `server.json`.
const READY: Duration = Duration::from_secs(30);

/// A `berth server` with extra flags and environment (the harness's
/// [`Server`] has fixed ones). Dropping it stops it.
struct CustomServer {
    // Field order is drop order: the process before its directory.
    proc: Proc,
    fleet_addr: String,
    admin_addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl CustomServer {
    /// `berth server --data-dir <tmp>/data --listen 127.0.0.1:0
    /// [--admin-listen 127.0.0.1:0] --metrics-listen 127.0.0.1:0 ARGS…` with
    /// `ENV`; the server creates its data dir itself.
    fn start(run: &RunId, args: &[&str], env: &[(&str, &str)]) -> CustomServer {
        let dir = run.temp_dir("server");
        let data_dir = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut cmd = clean_command(&berth_bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0"]);
        if !args.contains(&"--admin-listen") {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
        }
        cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        cmd.args(["--ecs-api-listen", "127.0.0.1:0"]);
        cmd.args(args).envs(env.iter().copied());
        let mut proc = Proc::spawn("berth server", &mut cmd, &log);
        let ready = data_dir.join("server.json");
        let (fleet_addr, admin_addr) = wait_for(
            &format!("berth server to write {}", ready.display()),
            READY,
            || {
                proc.assert_running("starting");
                read_server_json(&ready)
            },
        );
        CustomServer {
            proc,
            fleet_addr,
            admin_addr,
            data_dir,
            log,
            dir,
        }
    }

    fn fleet_url(&self) -> String {
        format!("https://{}", self.fleet_addr)
    }

    /// The CLI on the plaintext (loopback) admin address.
    fn cli(&self) -> Cli {
        Cli::new(&self.admin_addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server (SIGTERM) and waits for its exit.
    fn stop(&mut self) {
        let status = self.proc.terminate();
        assert!(status.success(), "berth server exited with {status}");
    }
}

/// `berth-agent enroll` of `agent` against `fleet_url` (any server).
fn enroll_agent(agent: &Agent, fleet_url: &str, activation: &Activation) -> Output {
    let ca_hash = activation.ca_hash_arg();
    agent.agent_cli(&[
        "enroll",
        "--server",
        fleet_url,
        "--activation-id",
        &activation.id,
        "--activation-code",
        &activation.code,
        "--ca-hash",
        &ca_hash,
    ])
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed\n{}",
        describe_output(out)
    );
}

fn assert_fails(what: &str, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} should exit 1\n{}",
        describe_output(out)
    );
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (what `--json` prints) as a time.
fn parse_utc(s: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(s)
        .unwrap_or_else(|e| panic!("not an RFC 3339 UTC time: {s:?}: {e}"))
}

/// `certificate.notAfter` of `berth-agent status --json`.
fn cert_not_after(agent: &Agent) -> String {
    let status = agent.status_json();
    let not_after = str_field(&status["certificate"], "notAfter").to_string();
    assert!(
        !not_after.is_empty(),
        "`berth-agent status --json` has no certificate.notAfter: {status}"
    );
    not_after
}

/// Lines of `text` that contain every one of `needles`.
fn lines_with<'a>(text: &'a str, needles: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

fn log_of(agent: &Agent) -> String {
    std::fs::read_to_string(agent.log_path()).unwrap_or_default()
}

#[test]
fn a_mismatching_ca_is_refused_before_the_code_is_sent() {
    let run = RunId::new();
    let first = Server::start(&run);
    let second = Server::start(&run);
    let activation = first.token();
    let other_ca = second.token().ca_hash;
    assert_ne!(activation.ca_hash, other_ca);

    // The first server's address and activation, the second server's CA.
    let mut agent = Agent::new(&run);
    let pinned_wrong = Activation {
        ca_hash: other_ca,
        ..activation.clone()
    };
    let out = agent.enroll_with(&first, &pinned_wrong, &[]);
    assert_fails("enroll with another server's CA hash", &out);
    let text = said(&out);
    assert!(
        text.contains("presents a CA that does not match --ca-hash")
            && text.contains("nothing was sent"),
        "the refusal should name the CA mismatch\n{}",
        describe_output(&out)
    );
    assert!(
        !agent.data_dir().join("identity.json").exists(),
        "a refused enrollment leaves no identity"
    );

    // The first server never saw an attempt: no log line names the
    // activation, and the activation still works.
    let log = std::fs::read_to_string(first.log_path()).unwrap_or_default();
    assert!(
        lines_with(&log, &["enroll"]).is_empty()
            && !log.contains(&format!("enroll{{activation_id={}", activation.id)),
        "the server logged an enrollment attempt:\n{log}"
    );
    let out = agent.enroll_with(&first, &activation, &[]);
    assert_ok("enroll with the right CA hash", &out);
    agent.start_connected(&first);
}

#[test]
fn an_activation_bound_to_a_hostname_refuses_other_hosts() {
    let run = RunId::new();
    let server = Server::start(&run);
    let other = format!("not-this-host-{run}");
    let bound = server.cli_json(&["token", "create", "--hostname", &other, "--json"]);
    assert_eq!(str_field(&bound, "hostname"), other, "{bound}");
    let activation = Activation {
        id: str_field(&bound, "activationId").to_string(),
        code: str_field(&bound, "activationCode").to_string(),
        ca_hash: str_field(&bound, "caHash").to_string(),
    };
    let mut agent = Agent::new(&run);
    let out = agent.enroll_with(&server, &activation, &[]);
    assert_fails("enroll on another host", &out);
    assert!(
        said(&out).contains(&format!("is for host \"{other}\"")),
        "the refusal should name the bound hostname\n{}",
        describe_output(&out)
    );
    assert!(server.instances().is_empty(), "a refusal stores nothing");

    // A token for this host's name works.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_else(|e| panic!("cannot read the hostname: {e}"))
        .trim()
        .to_string();
    let mine = server.cli_json(&["token", "create", "--hostname", &hostname, "--json"]);
    let activation = Activation {
        id: str_field(&mine, "activationId").to_string(),
        code: str_field(&mine, "activationCode").to_string(),
        ca_hash: str_field(&mine, "caHash").to_string(),
    };
    let out = agent.enroll_with(&server, &activation, &[]);
    assert_ok("enroll on the bound host", &out);
}

#[test]
fn certificates_renew_before_expiry_and_the_session_stays_up() {
    let run = RunId::new();
    let server = CustomServer::start(&run, &["--cert-lifetime", "20s"], &[]);
    let cli = server.cli();
    let mut agent = Agent::new(&run);
    assert_ok(
        "berth-agent enroll",
        &enroll_agent(&agent, &server.fleet_url(), &cli.token()),
    );
    agent.start();
    let id = agent.instance_id().to_string();
    cli.wait_connected(&id);
    let first = cert_not_after(&agent);

    // Renewed at 50–80 % of the lifetime: notAfter moves.
    let renewed = wait_for(
        "the agent to renew its certificate (certificate.notAfter changes)",
        DEADLINE,
        || {
            let now = cert_not_after(&agent);
            if now != first {
                Ok(now)
            } else {
                Err(format!("notAfter still {now}"))
            }
        },
    );
    assert!(
        parse_utc(&renewed) > parse_utc(&first),
        "{first} → {renewed}"
    );
    assert!(
        !lines_with(&log_of(&agent), &["client certificate renewed"]).is_empty(),
        "the agent log should say it renewed; tail:\n{}",
        agent.log_tail()
    );
    assert!(
        !lines_with(&server.log_text(), &["client certificate renewed", &id]).is_empty(),
        "the server log should name the renewal:\n{}",
        server.log_text()
    );
    assert_eq!(
        mode_of(&agent.data_dir().join("agent.key")),
        0o600,
        "the renewed key is 0600"
    );
    for leftover in ["agent.key.new", "agent.crt.new"] {
        assert!(
            !agent.data_dir().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
    // Still the one session it opened.
    cli.wait_connected(&id);
    let connects = lines_with(&server.log_text(), &["agent connected", &id]).len();
    assert_eq!(
        connects,
        1,
        "the renewal should not cost the session:\n{}",
        server.log_text()
    );

    // Once the first certificate has expired, a new connection works: it
    // uses the renewed identity.
    let expiry = parse_utc(&first);
    wait_for("the first certificate to expire", DEADLINE, || {
        (SystemTime::now() > expiry + Duration::from_secs(1)).then_some(())
    });
    agent.restart();
    cli.wait_connected(&id);
}

#[test]
fn an_expired_certificate_can_no_longer_connect() {
    let run = RunId::new();
    let server = CustomServer::start(&run, &["--cert-lifetime", "10s"], &[]);
    let cli = server.cli();
    let mut agent = Agent::new(&run);
    let out = enroll_agent(&agent, &server.fleet_url(), &cli.token());
    let enrolled = SystemTime::now();
    assert_ok("berth-agent enroll", &out);

    // The agent is not running while its certificate expires.
    wait_for("the certificate to expire", DEADLINE, || {
        (SystemTime::now() > enrolled + Duration::from_secs(12)).then_some(())
    });
    agent.start();
    let id = agent.instance_id().to_string();
    wait_for(
        "the agent to report its expired certificate",
        DEADLINE,
        || {
            let log = log_of(&agent);
            let expired = !lines_with(&log, &["client certificate expired"]).is_empty();
            let refused = !lines_with(&log, &["control plane refused the session"]).is_empty();
            if expired && refused {
                Ok(())
            } else {
                Err(format!("log so far:\n{log}"))
            }
        },
    );
    let status = agent.status_json();
    assert_eq!(status["certificate"]["expired"], true, "{status}");
    assert_eq!(status["connected"], false, "{status}");
    let out = agent.agent_cli(&["status"]);
    assert!(
        said(&out).contains("EXPIRED"),
        "`berth-agent status` should say the certificate expired\n{}",
        describe_output(&out)
    );
    let instance = cli
        .instance(&id)
        .unwrap_or_else(|| panic!("{id} not listed"));
    assert_eq!(instance["agentConnected"], false, "{instance}");
}

#[test]
fn deregistration_ends_the_session_and_the_certificate_stays_refused() {
    let run = RunId::new();
    let server = Server::start(&run);
    let mut agent = Agent::enroll(&server, &run);
    agent.start_connected(&server);
    let id = agent.instance_id().to_string();

    let out = server.cli(&["instance", "deregister", &id]);
    assert_ok("berth instance deregister", &out);
    wait_for("the session to end", DEADLINE, || {
        let i = server.instance(&id)?;
        (i["agentConnected"] == false).then_some(())
    });
    wait_for("the agent to log the deregistration", DEADLINE, || {
        let log = log_of(&agent);
        (!lines_with(&log, &["deregistered"]).is_empty()).then_some(())
    });

    // A restarted agent is refused again, at once.
    let before = lines_with(&log_of(&agent), &["was deregistered"]).len();
    agent.restart();
    wait_for("the restarted agent to be refused", DEADLINE, || {
        let log = log_of(&agent);
        let now = lines_with(&log, &["was deregistered"]).len();
        if now > before {
            Ok(())
        } else {
            Err(format!("log tail:\n{}", agent.log_tail()))
        }
    });
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(
        !lines_with(&log, &["session refused: instance deregistered", &id]).is_empty(),
        "the server should log the refusal:\n{log}"
    );
    let i = server
        .instance(&id)
        .unwrap_or_else(|| panic!("{id} not listed"));
    assert_eq!(str_field(&i, "status"), "INACTIVE", "{i}");
    assert_eq!(i["agentConnected"], false, "{i}");
}

#[test]
fn a_cloned_host_loses_its_session_to_the_newer_one_with_an_alert() {
    let run = RunId::new();
    let server = Server::start(&run);
    let mut original = Agent::enroll(&server, &run);
    original.start_connected(&server);
    let id = original.instance_id().to_string();

    // A second host with a copy of the first one's data dir.
    let mut clone = Agent::new(&run);
    std::fs::create_dir_all(clone.data_dir()).expect("clone data dir");
    chmod(clone.data_dir(), 0o700);
    for name in [
        "identity.json",
        "agent.key",
        "agent.crt",
        "ca.crt",
        "state.json",
    ] {
        let from = original.data_dir().join(name);
        if from.exists() {
            std::fs::copy(&from, clone.data_dir().join(name))
                .unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
        }
    }
    clone.start();
    assert_eq!(clone.instance_id(), id);

    // The server warns, naming both addresses.
    let alert = wait_for("the server to warn about two sessions", DEADLINE, || {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        lines_with(&log, &["two sessions for one instance", &id])
            .first()
            .map(|l| l.to_string())
    });
    let peer = |key: &str| {
        alert
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in the alert: {alert}"))
            .to_string()
    };
    let (old, new) = (peer("old_peer"), peer("new_peer"));
    assert!(
        old.starts_with("127.0.0.1:") && new.starts_with("127.0.0.1:") && old != new,
        "the alert should carry both addresses: {alert}"
    );

    // Exactly one of them is connected: the newer one.
    wait_for("exactly one agent to be connected", DEADLINE, || {
        let a = original.status_json()["connected"] == true;
        let b = clone.status_json()["connected"] == true;
        if !a && b {
            Ok(())
        } else {
            Err(format!("original connected: {a}, clone connected: {b}"))
        }
    });
    server.wait_connected(&id);
    assert!(
        !lines_with(
            &log_of(&original),
            &["another agent with this host's identity"]
        )
        .is_empty(),
        "the replaced agent should say why; tail:\n{}",
        original.log_tail()
    );
}

#[test]
fn the_admin_api_off_loopback_takes_admin_certificates_only() {
    let run = RunId::new();
    let server = CustomServer::start(&run, &["--admin-listen", "0.0.0.0:0"], &[]);
    let port = server
        .admin_addr
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| panic!("no port in {}", server.admin_addr));
    let url = format!("https://127.0.0.1:{port}");
    let berth = |args: &[&str]| {
        output_of(
            clean_command(&berth_bin())
                .args(["--server", &url])
                .args(args),
        )
    };

    // Without a certificate, and in plaintext: refused.
    let out = berth(&["token", "create"]);
    assert_fails("token create without an admin certificate", &out);
    assert!(
        said(&out).contains("needs an admin certificate"),
        "{}",
        describe_output(&out)
    );
    let out = output_of(clean_command(&berth_bin()).args([
        "--server",
        &format!("127.0.0.1:{port}"),
        "token",
        "create",
    ]));
    assert_fails("plaintext token create", &out);

    // An admin certificate, signed on the control plane host.
    let certs = run.temp_dir("admin");
    let admin_dir = certs.path().join("alice");
    let out = output_of(
        clean_command(&berth_bin())
            .args(["admin-cert", "create", "--name", "alice", "--out"])
            .arg(&admin_dir)
            .arg("--data-dir")
            .arg(&server.data_dir),
    );
    assert_ok("berth admin-cert create --data-dir", &out);
    assert_eq!(mode_of(&admin_dir), 0o700);
    assert_eq!(mode_of(&admin_dir.join("admin.key")), 0o600);
    let with_cert = |dir: &Path, args: &[&str]| {
        output_of(
            clean_command(&berth_bin())
                .args(["--server", &url])
                .env("BERTH_ADMIN_CERT", dir)
                .args(args),
        )
    };
    let out = with_cert(&admin_dir, &["token", "create", "--json"]);
    assert_ok("token create with an admin certificate", &out);
    let token = stdout_json("berth token create --json", &out);
    let activation = Activation {
        id: str_field(&token, "activationId").to_string(),
        code: str_field(&token, "activationCode").to_string(),
        ca_hash: str_field(&token, "caHash").to_string(),
    };
    // A second admin certificate, asked for over the remote admin API.
    let bob = certs.path().join("bob");
    let out = with_cert(
        &admin_dir,
        &[
            "admin-cert",
            "create",
            "--name",
            "bob",
            "--out",
            &bob.to_string_lossy(),
        ],
    );
    assert_ok("admin-cert create over the admin API", &out);
    assert_ok("instance ls as bob", &with_cert(&bob, &["instance", "ls"]));

    // Both are recorded; the list shows serial numbers, never a key.
    let ls = |dir: &Path| {
        let out = with_cert(dir, &["admin-cert", "ls", "--json"]);
        assert_ok("admin-cert ls --json", &out);
        stdout_json("berth admin-cert ls --json", &out)
    };
    let listed = ls(&admin_dir);
    let by_name = |listed: &Value, name: &str| -> Value {
        listed
            .as_array()
            .and_then(|l| l.iter().find(|c| str_field(c, "name") == name))
            .cloned()
            .unwrap_or_else(|| panic!("no admin certificate of {name} in {listed}"))
    };
    let alice_serial = str_field(&by_name(&listed, "alice"), "serialNumber").to_string();
    let bob_serial = str_field(&by_name(&listed, "bob"), "serialNumber").to_string();
    assert!(
        !alice_serial.is_empty() && alice_serial != bob_serial,
        "{listed}"
    );
    assert_eq!(by_name(&listed, "bob")["status"], "VALID", "{listed}");
    assert!(!listed.to_string().contains("PRIVATE KEY"), "{listed}");

    // Revoke bob's certificate: its next call is refused, alice's still
    // works, and what bob tries changes nothing stored.
    let out = with_cert(&admin_dir, &["admin-cert", "revoke", &bob_serial]);
    assert_ok("admin-cert revoke bob", &out);
    let out = with_cert(&bob, &["instance", "ls"]);
    assert_fails("instance ls with a revoked certificate", &out);
    assert!(
        said(&out).contains("revoked") && said(&out).contains(&bob_serial),
        "{}",
        describe_output(&out)
    );
    let out = with_cert(&bob, &["admin-cert", "revoke", &alice_serial]);
    assert_fails("admin-cert revoke with a revoked certificate", &out);
    let listed = ls(&admin_dir);
    assert_eq!(by_name(&listed, "bob")["status"], "REVOKED", "{listed}");
    assert!(by_name(&listed, "bob")["revokedAt"].is_string(), "{listed}");
    assert_eq!(by_name(&listed, "alice")["status"], "VALID", "{listed}");
    assert!(by_name(&listed, "alice")["revokedAt"].is_null(), "{listed}");
    let log = server.log_text();
    let refusals = lines_with(
        &log,
        &["revoked admin certificate", &bob_serial, "peer=127.0.0.1:"],
    );
    assert!(
        !refusals.is_empty(),
        "the server logs the refusal with the peer address:\n{log}"
    );
    // Twice: already revoked; an unknown serial: exit 1 naming it.
    let out = with_cert(&admin_dir, &["admin-cert", "revoke", &bob_serial]);
    assert_ok("admin-cert revoke bob again", &out);
    assert!(
        said(&out).contains("already revoked"),
        "{}",
        describe_output(&out)
    );
    let out = with_cert(&admin_dir, &["admin-cert", "revoke", "0123456789abcdef"]);
    assert_fails("admin-cert revoke of an unknown serial", &out);
    assert!(
        said(&out).contains("no admin certificate with serial number 0123456789abcdef"),
        "{}",
        describe_output(&out)
    );

    // An agent's certificate is not an admin's.
    let agent = Agent::new(&run);
    assert_ok(
        "berth-agent enroll",
        &enroll_agent(&agent, &server.fleet_url(), &activation),
    );
    let as_agent = certs.path().join("agent");
    std::fs::create_dir_all(&as_agent).expect("dir");
    for (from, to) in [
        ("agent.crt", "admin.crt"),
        ("agent.key", "admin.key"),
        ("ca.crt", "ca.crt"),
    ] {
        std::fs::copy(agent.data_dir().join(from), as_agent.join(to)).expect("copy");
    }
    chmod(&as_agent.join("admin.key"), 0o600);
    let out = with_cert(&as_agent, &["token", "create"]);
    assert_fails("token create with an agent's certificate", &out);
    assert!(
        said(&out).contains("not an admin certificate"),
        "{}",
        describe_output(&out)
    );
    // A group-readable admin key is refused by the CLI, naming the fix.
    chmod(&admin_dir.join("admin.key"), 0o640);
    let out = with_cert(&admin_dir, &["instance", "ls"]);
    assert_fails("instance ls with an open admin key", &out);
    assert!(
        said(&out).contains(&format!(
            "chmod 600 {}",
            admin_dir.join("admin.key").display()
        )),
        "{}",
        describe_output(&out)
    );
}

/// Waits for a process that must exit by itself; returns its log.
fn exits_with_failure(name: &str, mut proc: Proc, log: &Path) -> String {
    let status = wait_for(&format!("{name} to exit"), DEADLINE, || proc.exited());
    assert_eq!(
        status.code(),
        Some(1),
        "{name} should exit 1:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    std::fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn secret_files_have_private_modes_and_open_ones_stop_both_daemons() {
    let run = RunId::new();
    let mut server = CustomServer::start(&run, &[], &[]);
    let cli = server.cli();
    assert_eq!(mode_of(&server.data_dir), 0o700, "server data dir");
    assert_eq!(mode_of(&server.data_dir.join("ca.key")), 0o600, "ca.key");
    let mut agent = Agent::new(&run);
    assert_ok(
        "berth-agent enroll",
        &enroll_agent(&agent, &server.fleet_url(), &cli.token()),
    );
    assert_eq!(mode_of(agent.data_dir()), 0o700, "agent data dir");
    assert_eq!(
        mode_of(&agent.data_dir().join("agent.key")),
        0o600,
        "agent.key"
    );
    assert_eq!(
        mode_of(&agent.data_dir().join("identity.json")),
        0o600,
        "identity.json"
    );

    // agent.key readable by others: the agent does not start.
    let key = agent.data_dir().join("agent.key");
    chmod(&key, 0o644);
    let log = agent.dir().join("refused.log");
    let mut cmd = clean_command(&agent_bin());
    cmd.arg("run").arg("--config").arg(agent.config_path());
    let text = exits_with_failure(
        "berth-agent run",
        Proc::spawn("berth-agent", &mut cmd, &log),
        &log,
    );
    assert!(
        text.contains(&format!("chmod 600 {}", key.display())),
        "the agent should name the file and the fix:\n{text}"
    );
    chmod(&key, 0o600);
    agent.start();

    // ca.key readable by others: the server does not start.
    server.stop();
    let ca_key = server.data_dir.join("ca.key");
    chmod(&ca_key, 0o640);
    let log = server.dir.path().join("refused.log");
    let mut cmd = clean_command(&berth_bin());
    cmd.arg("server")
        .arg("--data-dir")
        .arg(&server.data_dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let text = exits_with_failure(
        "berth server",
        Proc::spawn("berth server", &mut cmd, &log),
        &log,
    );
    assert!(
        text.contains(&format!("chmod 600 {}", ca_key.display())),
        "the server should name the file and the fix:\n{text}"
    );
}

/// The base64 body of a PEM block: the lines between BEGIN and END.
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .map(String::from)
        .collect()
}

#[test]
fn no_secret_reaches_a_log_an_output_or_the_local_api() {
    let run = RunId::new();
    let files = Scratch::new(&run);
    let image = TestImage::build(&run);
    let server = CustomServer::start(
        &run,
        &["--cert-lifetime", "20s", "--heartbeat-interval", "1s"],
        &[("RUST_LOG", "debug")],
    );
    let cli = server.cli();
    let mut outputs: Vec<(String, String)> = Vec::new();
    fn keep(outputs: &mut Vec<(String, String)>, what: &str, out: &Output) {
        outputs.push((what.to_string(), said(out)));
    }

    let activation = cli.token();
    let plain_token = cli.run(&["token", "create"]);
    assert_ok("token create", &plain_token);
    let mut agent = Agent::new(&run);
    let out = enroll_agent(&agent, &server.fleet_url(), &activation);
    assert_ok("berth-agent enroll", &out);
    keep(&mut outputs, "berth-agent enroll", &out);
    let first_key = std::fs::read_to_string(agent.data_dir().join("agent.key")).expect("agent.key");
    agent.start_with_env(&[("BERTH_LOG", "debug")]);
    let id = agent.instance_id().to_string();
    cli.wait_connected(&id);

    // A task, start to finish.
    let family = format!("secrets-{run}");
    let file = files.write(
        "secrets.json",
        &task_def(
            image.tag(),
            &family,
            json!([{"name": "app", "command": LONG_RUNNING, "environment": [{"name": "MODE", "value": "test"}]}]),
        ),
    );
    let out = cli.run(&[
        "task",
        "run",
        "--task-definition",
        &file.to_string_lossy(),
        "--instance",
        &id,
        "--wait",
        "--json",
    ]);
    assert_ok("task run", &out);
    keep(&mut outputs, "task run --json", &out);
    let task_id = str_field(&stdout_json("task run", &out), "taskId").to_string();
    for args in [
        vec!["task", "ls", "--json"],
        vec!["task", "describe", &task_id, "--json"],
        vec!["instance", "ls", "--json"],
        vec!["instance", "describe", &id, "--json"],
        vec!["instance", "ls"],
    ] {
        let out = cli.run(&args);
        assert_ok(&args.join(" "), &out);
        keep(&mut outputs, &args.join(" "), &out);
    }
    let out = agent.agent_cli(&["status", "--json"]);
    assert_ok("status --json", &out);
    keep(&mut outputs, "berth-agent status --json", &out);
    for path in ["/v1/metadata", "/v1/tasks", "/metrics", "/healthz"] {
        let (code, body) =
            http_get(agent.api_addr(), path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(code, 200, "{path}: {body}");
        outputs.push((format!("GET {path}"), body));
    }
    // A renewal happens under the 20 s lifetime: its new key must not leak
    // either.
    wait_for("a certificate renewal", DEADLINE, || {
        (!lines_with(&log_of(&agent), &["client certificate renewed"]).is_empty()).then_some(())
    });
    let out = cli.run(&["task", "stop", &task_id, "--wait"]);
    assert_ok("task stop", &out);
    keep(&mut outputs, "task stop", &out);
    // Errors too: a wrong code and a used activation.
    let other = Agent::new(&run);
    let wrong = Activation {
        code: "wrong-code".into(),
        ..activation.clone()
    };
    keep(
        &mut outputs,
        "enroll with a wrong code",
        &enroll_agent(&other, &server.fleet_url(), &wrong),
    );
    keep(
        &mut outputs,
        "enroll with a used activation",
        &enroll_agent(&other, &server.fleet_url(), &activation),
    );
    agent.stop();

    let mut secrets: Vec<(String, String)> =
        vec![("activation code".into(), activation.code.clone())];
    let second_code = said(&plain_token)
        .lines()
        .find_map(|l| {
            l.strip_prefix("Activation code:")
                .map(|c| c.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no code in `token create`:\n{}", said(&plain_token)));
    secrets.push(("second activation code".into(), second_code));
    let current_key =
        std::fs::read_to_string(agent.data_dir().join("agent.key")).expect("agent.key");
    assert_ne!(current_key, first_key, "the renewal made a new key");
    let ca_key = std::fs::read_to_string(server.data_dir.join("ca.key")).expect("ca.key");
    for (what, pem) in [
        ("agent.key (enrolled)", &first_key),
        ("agent.key (renewed)", &current_key),
        ("ca.key", &ca_key),
    ] {
        for line in pem_body_lines(pem) {
            secrets.push((what.to_string(), line));
        }
    }
    outputs.push(("server log".into(), server.log_text()));
    outputs.push(("agent log".into(), log_of(&agent)));
    outputs.push(("other agent log".into(), log_of(&other)));
    assert!(
        outputs
            .iter()
            .any(|(w, t)| w == "server log" && t.contains("DEBUG")),
        "the server ran with debug logs"
    );
    assert!(
        outputs
            .iter()
            .any(|(w, t)| w == "agent log" && t.contains("DEBUG")),
        "the agent ran with debug logs"
    );
    let mut found = Vec::new();
    for (what, text) in &outputs {
        for (secret, value) in &secrets {
            if text.contains(value.as_str()) {
                found.push(format!("{secret} in {what}"));
            }
        }
    }
    assert!(found.is_empty(), "secrets found: {found:?}");
}
