//! Issue 11, the edges of enrollment and of the local API, end to end with
//! the real binaries: `enroll` keeps agent.toml private (M5), activations
//! bound to source networks (L2), the enrollment lockout per activation
//! (L5), the server's data dir and database modes (L6), the required CA pin
//! (L7), and the Host check of the agent's local API (I4).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use berth_e2e::{
    Activation, Agent, DEADLINE, Proc, RunId, Server, assert_fails, assert_ok, berth_bin, chmod,
    clean_command, describe_output, mode_of, output_of, read_server_json, repo_root, said,
    str_field, wait_for,
};
use serde_json::json;

/// An activation from `berth token create ARGS… --json`.
fn token_with(server: &Server, args: &[&str]) -> Activation {
    let mut all = vec!["token", "create", "--json"];
    all.extend_from_slice(args);
    let t = server.cli_json(&all);
    Activation {
        id: str_field(&t, "activationId").to_string(),
        code: str_field(&t, "activationCode").to_string(),
        ca_hash: str_field(&t, "caHash").to_string(),
    }
}

/// `activation` with another (wrong) code.
fn wrong_code(activation: &Activation, n: usize) -> Activation {
    Activation {
        code: format!("wrong-code-{n}"),
        ..activation.clone()
    }
}

// --- M5 ---------------------------------------------------------------------

#[test]
fn enroll_keeps_a_private_agent_toml_private_with_its_inline_password() {
    let run = RunId::new();
    let server = Server::start(&run);
    let mut agent = Agent::new(&run);
    let password = format!("hunter2-inline-{run}");
    agent.configure(&format!(
        "[registries.\"registry.example:5000\"]\nusername = \"deploy\"\npassword = \"{password}\""
    ));
    chmod(agent.config_path(), 0o600);
    let activation = server.token();
    assert_ok(
        "berth-agent enroll",
        &agent.enroll_with(&server, &activation, &[]),
    );
    assert_eq!(
        mode_of(agent.config_path()),
        0o600,
        "enroll made agent.toml readable by others"
    );
    let text = std::fs::read_to_string(agent.config_path()).expect("agent.toml");
    assert!(
        text.contains(&password) && text.contains(&server.fleet_url()),
        "enroll should keep the password and set the server:\n{text}"
    );

    // A config without a password keeps whatever mode it had (0640 here);
    // one holding a password that others could read becomes 0600.
    let mut plain = Agent::new(&run);
    chmod(plain.config_path(), 0o640);
    assert_ok(
        "berth-agent enroll",
        &plain.enroll_with(&server, &server.token(), &[]),
    );
    assert_eq!(mode_of(plain.config_path()), 0o640);
    let mut open = Agent::new(&run);
    open.configure(&format!(
        "[registries.\"registry.example:5000\"]\nusername = \"deploy\"\npassword = \"{password}\""
    ));
    chmod(open.config_path(), 0o644);
    assert_ok(
        "berth-agent enroll",
        &open.enroll_with(&server, &server.token(), &[]),
    );
    assert_eq!(mode_of(open.config_path()), 0o600);
}

// --- L2 ---------------------------------------------------------------------

#[test]
fn an_activation_bound_to_source_networks_refuses_other_peers() {
    let run = RunId::new();
    let server = Server::start(&run);
    let json = server.cli_json(&[
        "token",
        "create",
        "--json",
        "--from",
        "10.9.0.0/24",
        "--from",
        "2001:db8::/64",
    ]);
    assert_eq!(
        json["from"],
        json!(["10.9.0.0/24", "2001:db8::/64"]),
        "{json}"
    );
    let elsewhere = Activation {
        id: str_field(&json, "activationId").to_string(),
        code: str_field(&json, "activationCode").to_string(),
        ca_hash: str_field(&json, "caHash").to_string(),
    };
    let mut agent = Agent::new(&run);
    let out = agent.enroll_with(&server, &elsewhere, &[]);
    assert_fails("enroll from 127.0.0.1 with --from 10.9.0.0/24", &out);
    let text = said(&out);
    assert!(
        text.contains("may be used only from 10.9.0.0/24, 2001:db8::/64")
            && text.contains("this request comes from 127.0.0.1"),
        "the refusal should name the networks and the peer\n{}",
        describe_output(&out)
    );
    assert!(server.instances().is_empty(), "a refusal stores nothing");
    assert!(!agent.data_dir().join("identity.json").exists());

    // The human output says it too; a bad network is a usage error.
    let out = server.cli(&["token", "create", "--from", "10.9.0.0/24"]);
    assert_ok("berth token create --from", &out);
    assert!(
        said(&out).contains("Only from:       10.9.0.0/24"),
        "{}",
        said(&out)
    );
    let out = server.cli(&["token", "create", "--from", "10.9.0.0/33"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe_output(&out));
    assert!(said(&out).contains("\"10.9.0.0/33\" is not a network in CIDR notation"));

    // From loopback's own network: enrolled.
    let here = token_with(&server, &["--from", "127.0.0.0/8"]);
    assert_ok(
        "enroll from 127.0.0.1 with --from 127.0.0.0/8",
        &agent.enroll_with(&server, &here, &[]),
    );
    agent.start_connected(&server);
}

// --- L5 ---------------------------------------------------------------------

#[test]
fn wrong_codes_lock_their_activation_not_the_address() {
    let run = RunId::new();
    let server = Server::start(&run);
    let mine = server.token();
    let other = server.token();

    // Five wrong codes for one activation from 127.0.0.1 …
    let mut typo = Agent::new(&run);
    for n in 0..5 {
        let out = typo.enroll_with(&server, &wrong_code(&other, n), &[]);
        assert_fails("enroll with a wrong code", &out);
        assert!(
            said(&out).contains("unknown activation id or wrong code"),
            "{}",
            describe_output(&out)
        );
    }
    // … do not lock out another host behind the same address.
    let mut host = Agent::new(&run);
    assert_ok(
        "enroll with the right code after five wrong ones from the same address",
        &host.enroll_with(&server, &mine, &[]),
    );

    // Ten failed attempts lock the activation: the right code is refused.
    let target = server.token();
    for n in 0..10 {
        assert_fails(
            "enroll with a wrong code",
            &typo.enroll_with(&server, &wrong_code(&target, n), &[]),
        );
    }
    let out = typo.enroll_with(&server, &target, &[]);
    assert_fails("enroll with the right code of a locked activation", &out);
    assert!(
        said(&out).contains(&format!(
            "activation {} is locked: 10 failed attempts in the last 1h",
            target.id
        )) && said(&out).contains("berth token create"),
        "the refusal should say the activation is locked and what to do\n{}",
        describe_output(&out)
    );
    assert!(!typo.data_dir().join("identity.json").exists());
    // Another activation still works from the same address.
    assert_ok(
        "enroll with a fresh activation",
        &typo.enroll_with(&server, &server.token(), &[]),
    );
    assert_eq!(server.instances().len(), 2);
}

// --- L6 ---------------------------------------------------------------------

/// `berth server --data-dir DATA` on loopback ports, its log in `log`.
fn spawn_server(data_dir: &Path, log: &Path) -> Proc {
    let mut cmd = clean_command(&berth_bin());
    cmd.arg("server").arg("--data-dir").arg(data_dir).args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--ecs-api-listen",
        "127.0.0.1:0",
    ]);
    Proc::spawn("berth server", &mut cmd, log)
}

#[test]
fn the_server_refuses_an_open_data_dir_and_keeps_its_files_private() {
    let run = RunId::new();
    let tmp = run.temp_dir("data-dirs");

    // An existing data dir open to others: refused, naming the fix.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    chmod(&open, 0o755);
    let log = tmp.path().join("open.log");
    let mut proc = spawn_server(&open, &log);
    let status = wait_for("berth server to exit", DEADLINE, || proc.exited());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("chmod 700 {}", open.display())) && text.contains("mode 0755"),
        "the refusal should name the dir, its mode and the chmod:\n{text}"
    );
    assert_eq!(
        std::fs::read_dir(&open).expect("ls").count(),
        0,
        "a refused start writes nothing"
    );

    // A new one: 0700, and every file in it private (server.json holds
    // only addresses).
    let fresh = tmp.path().join("fresh");
    let log = tmp.path().join("fresh.log");
    let mut proc = spawn_server(&fresh, &log);
    let ready = fresh.join("server.json");
    let (_fleet, admin) = wait_for("berth server to write server.json", DEADLINE, || {
        proc.assert_running("starting");
        read_server_json(&ready)
    });
    // A write, so that SQLite has its -wal and -shm files.
    let out = output_of(
        clean_command(&berth_bin())
            .args(["token", "create", "--json"])
            .env("BERTH_ADDR", &admin),
    );
    assert_ok("berth token create", &out);
    assert_eq!(mode_of(&fresh), 0o700, "data dir");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&fresh).expect("ls").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mode = mode_of(&entry.path());
        if name != "server.json" && name != "ca.crt" {
            assert_eq!(mode & 0o077, 0, "{name} is mode {mode:o}");
        }
        seen.push(name);
    }
    for expected in ["berth.db", "berth.db-wal", "berth.db-shm", "ca.key"] {
        assert!(
            seen.iter().any(|n| n == expected),
            "no {expected} in {seen:?}"
        );
    }
    let status = proc.terminate();
    assert!(status.success(), "berth server exited with {status}");
}

// --- L7 ---------------------------------------------------------------------

#[test]
fn enrolling_without_the_ca_pin_needs_an_explicit_insecure_flag() {
    let run = RunId::new();
    let server = Server::start(&run);
    let activation = server.token();
    let unpinned = Activation {
        ca_hash: String::new(),
        ..activation.clone()
    };
    let mut agent = Agent::new(&run);
    let out = agent.enroll_with(&server, &unpinned, &[]);
    assert_fails("enroll without --ca-hash", &out);
    let text = said(&out);
    assert!(
        text.contains("--ca-hash is required") && text.contains("--insecure-skip-ca-pin"),
        "the refusal should name the flag and the way out\n{}",
        describe_output(&out)
    );
    // Nothing was sent: the server saw no attempt, the code still works.
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(
        !log.contains("enroll{"),
        "the server saw an attempt:\n{log}"
    );

    let out = agent.enroll_with(&server, &unpinned, &["--insecure-skip-ca-pin"]);
    assert_ok("enroll with --insecure-skip-ca-pin", &out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: --insecure-skip-ca-pin"),
        "skipping the pin should warn\n{}",
        describe_output(&out)
    );
    agent.start_connected(&server);

    // Both at once contradict each other.
    let mut both = Agent::new(&run);
    let out = both.enroll_with(&server, &server.token(), &["--insecure-skip-ca-pin"]);
    assert_fails("enroll with --ca-hash and --insecure-skip-ca-pin", &out);

    // enroll.sh refuses too, before it changes anything (no root needed).
    let out = output_of(
        clean_command(&repo_root().join("packaging/enroll.sh")).args([
            "--server",
            "https://127.0.0.1:9",
            "--activation-id",
            "a",
            "--activation-code",
            "c",
        ]),
    );
    assert_fails("enroll.sh without --ca-hash", &out);
    let text = said(&out);
    assert!(
        text.contains("--ca-hash is missing") && text.contains("--insecure-skip-ca-pin"),
        "{}",
        describe_output(&out)
    );
}

// --- I4 ---------------------------------------------------------------------

/// `GET /v1/tasks` to `addr` with `Host: host`: the status and the body.
fn get_with_host(addr: &str, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /v1/tasks HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

#[test]
fn the_local_api_answers_only_requests_addressed_to_it() {
    let run = RunId::new();
    let server = Server::start(&run);
    let mut agent = Agent::enroll(&server, &run);
    agent.start_connected(&server);
    let addr = agent.api_addr().to_string();
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();

    let (status, body) = get_with_host(&addr, "attacker.example");
    assert_eq!(status, 421, "{body}");
    assert!(
        body.contains("attacker.example") && body.contains(&addr),
        "the refusal should name the Host and the address: {body}"
    );
    let (status, _) = get_with_host(&addr, &format!("attacker.example:{port}"));
    assert_eq!(status, 421);
    let (status, body) = get_with_host(&addr, &addr);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_with_host(&addr, &format!("localhost:{port}"));
    assert_eq!(status, 200, "{body}");
    // berth-agent status still works.
    let st = agent.status_json();
    assert_eq!(str_field(&st, "instanceId"), agent.instance_id(), "{st}");
}
