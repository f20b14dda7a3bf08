//! Registry credentials end to end (SPEC §3 Images): a loopback registry
//! with basic auth, agents with and without its credentials, from
//! `agent.toml` (`[registries]` with a `password_file`) and from the host's
//! Docker config; then a scan of everything captured for the password.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use berth_e2e::{
    DEADLINE, Fleet, LONG_RUNNING, Proc, Registry, RegistryLogin, RunId, agent_bin, clean_command,
    container_of, describe_output, http_get, said, str_field, task_def, wait_for,
};
use serde_json::{Value, json};

/// A login whose user and password carry the run id, so that the scan finds
/// this run's secrets only.
fn login_for(run: &RunId) -> RegistryLogin {
    RegistryLogin {
        username: format!("deploy-{run}"),
        password: format!("pw-{}-{}", RunId::new(), RunId::new()),
    }
}

/// `user:password` as a Docker config `auth`.
fn docker_auth(login: &RegistryLogin) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", login.username, login.password))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

/// A TOML basic string of a path.
fn toml_path(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes a task definition of one long-running essential container of
/// `image` and runs it without waiting; returns the task id.
fn submit(fleet: &Fleet, name: &str, image: &str) -> String {
    let family = fleet.family(name);
    let file = fleet.files.write(
        &format!("{name}.json"),
        &task_def(
            image,
            &family,
            json!([{"name": "app", "essential": true, "command": LONG_RUNNING}]),
        ),
    );
    let out = fleet.run_task(&file, &["--json"]);
    assert!(
        out.status.success(),
        "`berth task run --json` should accept the task\n{}",
        describe_output(&out)
    );
    let task = berth_e2e::stdout_json("berth task run --json", &out);
    let id = str_field(&task, "taskId").to_string();
    assert!(!id.is_empty(), "no taskId: {task}");
    id
}

/// Waits until `task_id` is RUNNING; panics with the agent log if it
/// stops instead.
fn wait_running(fleet: &Fleet, task_id: &str) -> Value {
    let task = fleet.server.wait_task(task_id, "RUNNING or STOPPED", |t| {
        matches!(str_field(t, "lastStatus"), "RUNNING" | "STOPPED")
    });
    assert_eq!(
        str_field(&task, "lastStatus"),
        "RUNNING",
        "the task should run with the registry's credentials: {task}\nagent log tail:\n{}",
        fleet.agent.log_tail()
    );
    task
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Everything a user or operator can see of the fleet: the agent's and the
/// server's logs, the local API, `berth-agent status --json`, `berth task
/// ls/describe --json`; `(what, text)` pairs.
fn capture(fleet: &Fleet, task_ids: &[&str], extra_logs: &[PathBuf]) -> Vec<(String, String)> {
    let mut out = vec![("agent log".to_string(), read(fleet.agent.log_path()))];
    for path in fleet.server.log_paths().iter().chain(extra_logs) {
        out.push((path.display().to_string(), read(path)));
    }
    for path in ["/v1/metadata", "/v1/tasks", "/metrics"] {
        let (code, body) =
            http_get(fleet.agent.api_addr(), path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        out.push((format!("GET {path}"), body));
    }
    for id in task_ids {
        // A task that stopped and was cleaned up is 404 here: its body is
        // scanned all the same.
        let path = format!("/v1/tasks/{id}");
        let (code, body) =
            http_get(fleet.agent.api_addr(), &path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(matches!(code, 200 | 404), "GET {path}: {code} {body}");
        out.push((format!("GET {path}"), body));
    }
    let mut commands: Vec<(String, Output)> = vec![(
        "berth-agent status --json".to_string(),
        fleet.agent.agent_cli(&["status", "--json"]),
    )];
    commands.push((
        "berth task ls --json".to_string(),
        fleet.server.cli(&["task", "ls", "--json"]),
    ));
    for id in task_ids {
        commands.push((
            format!("berth task describe {id} --json"),
            fleet.server.cli(&["task", "describe", id, "--json"]),
        ));
    }
    for (what, output) in commands {
        assert!(
            output.status.success(),
            "`{what}` failed\n{}",
            describe_output(&output)
        );
        out.push((what, said(&output)));
    }
    out
}

/// `"<secret> in <what>"` for every captured text that holds one of
/// `secrets`.
fn find_secrets(captured: &[(String, String)], secrets: &[(&str, &str)]) -> Vec<String> {
    captured
        .iter()
        .flat_map(|(what, text)| {
            secrets
                .iter()
                .filter(|(_, value)| text.contains(value))
                .map(move |(secret, _)| format!("{secret} in {what}"))
        })
        .collect()
}

/// Panics naming every captured text that holds one of `secrets`, after
/// checking that the scan finds a secret where there is one.
fn assert_no_secret(captured: &[(String, String)], secrets: &[(&str, &str)]) {
    for (name, value) in secrets {
        let control = [("control".to_string(), format!("x {value} x"))];
        assert_eq!(
            find_secrets(&control, secrets).len(),
            1,
            "the scan misses {name}"
        );
    }
    let found = find_secrets(captured, secrets);
    assert!(found.is_empty(), "secrets found: {found:?}");
}

#[test]
fn pulls_use_the_credentials_of_agent_toml_and_never_show_them() {
    let run = RunId::new();
    let login = login_for(&run);
    let mut registry = Registry::start_with_auth(&run, login.clone());
    let mut fleet = Fleet::start_with(run);
    // push() removes the local tags: every task below must pull.
    let denied = registry.push(fleet.image.tag(), "denied");
    let allowed = registry.push(fleet.image.tag(), "allowed");

    // 1. No credentials: a Docker config of our own (the host's must not
    //    decide this test) that names only a credential helper.
    let docker_config = fleet.files.write(
        "docker-config.json",
        r#"{"auths": {}, "credsStore": "berth-e2e-none"}"#,
    );
    fleet
        .agent
        .configure(&format!("docker_config = {}", toml_path(&docker_config)));
    fleet.server.wait_connected(fleet.agent.instance_id());
    assert!(
        read(fleet.agent.log_path()).contains("does not run them"),
        "the agent should say that it ignores credential helpers:\n{}",
        fleet.agent.log_tail()
    );
    let denied_id = submit(&fleet, "denied", &denied.reference);
    let (task, reasons) = fleet.server.wait_failed_to_start(&denied_id);
    assert!(
        [
            "no basic auth credentials",
            "unauthorized",
            "authentication required"
        ]
        .iter()
        .any(|words| reasons.contains(words)),
        "the reason should carry the registry's refusal: {task}"
    );

    // 2. A password file others can read: the agent refuses to start,
    //    naming the registry, the file and the fix.
    let password_file = fleet.files.path().join("registry.password");
    std::fs::write(&password_file, format!("{}\n", login.password))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", password_file.display()));
    chmod(&password_file, 0o644);
    let status = fleet.agent.stop();
    assert!(status.success(), "berth-agent on SIGTERM: {status}");
    fleet.agent.configure(&format!(
        "[registries.\"{}\"]\nusername = \"{}\"\npassword_file = {}",
        registry.addr(),
        login.username,
        toml_path(&password_file)
    ));
    let refused_log = fleet.agent.dir().join("refused.log");
    let mut cmd = clean_command(&agent_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(fleet.agent.config_path());
    let mut proc = Proc::spawn("berth-agent", &mut cmd, &refused_log);
    let status = wait_for(
        "berth-agent with an open password file to exit",
        DEADLINE,
        || proc.exited(),
    );
    let text = read(&refused_log);
    assert_eq!(status.code(), Some(1), "berth-agent should exit 1:\n{text}");
    for words in [
        format!("registries.\"{}\".password_file", registry.addr()),
        format!("chmod 600 {}", password_file.display()),
    ] {
        assert!(text.contains(&words), "{words:?} missing from:\n{text}");
    }

    // 3. Mode 0600: the agent starts (debug logs, to scan them too) and
    //    the image is pulled with the credentials.
    chmod(&password_file, 0o600);
    fleet.agent.start_with_env(&[("BERTH_LOG", "debug")]);
    fleet.server.wait_connected(fleet.agent.instance_id());
    let log = read(fleet.agent.log_path());
    assert!(
        log.lines()
            .any(|l| l.contains("registry credentials loaded")
                && l.contains(registry.addr())
                && l.contains(&fleet.agent.config_path().display().to_string())),
        "the agent should say which registry has credentials from where:\n{}",
        fleet.agent.log_tail()
    );
    let allowed_id = submit(&fleet, "allowed", &allowed.reference);
    let task = wait_running(&fleet, &allowed_id);
    assert_eq!(
        str_field(container_of(&task, "app"), "image"),
        allowed.reference,
        "task: {task}"
    );
    let denied_task = fleet.server.task(&denied_id);
    assert_eq!(
        str_field(&denied_task, "lastStatus"),
        "STOPPED",
        "{denied_task}"
    );

    // 4. Nothing shows the password, nor the base64 form Docker uses.
    let captured = capture(&fleet, &[&denied_id, &allowed_id], &[refused_log]);
    assert!(
        captured
            .iter()
            .any(|(what, text)| what == "agent log" && text.contains("DEBUG")),
        "the agent ran with debug logs"
    );
    let auth = docker_auth(&login);
    assert_no_secret(
        &captured,
        &[
            ("the registry password", &login.password),
            ("the base64 user:password", &auth),
        ],
    );
}

#[test]
fn the_hosts_docker_config_is_the_fallback() {
    let run = RunId::new();
    let login = login_for(&run);
    let mut registry = Registry::start_with_auth(&run, login.clone());
    let mut fleet = Fleet::start_with(run);
    let pushed = registry.push(fleet.image.tag(), "fallback");

    // A Docker config as `docker login` writes it, found through
    // $DOCKER_CONFIG as the Docker CLI would; agent.toml names no registry.
    let docker_dir = fleet.files.path().join("docker");
    std::fs::create_dir_all(&docker_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", docker_dir.display()));
    let auth = docker_auth(&login);
    let config = docker_dir.join("config.json");
    std::fs::write(
        &config,
        json!({"auths": {registry.addr(): {"auth": auth}}}).to_string(),
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
    chmod(&config, 0o600);
    let status = fleet.agent.stop();
    assert!(status.success(), "berth-agent on SIGTERM: {status}");
    fleet.agent.start_with_env(&[
        ("DOCKER_CONFIG", &docker_dir.to_string_lossy()),
        ("BERTH_LOG", "debug"),
    ]);
    fleet.server.wait_connected(fleet.agent.instance_id());
    assert!(
        read(fleet.agent.log_path())
            .lines()
            .any(|l| l.contains("registry credentials loaded")
                && l.contains(registry.addr())
                && l.contains(&config.display().to_string())),
        "the agent should say that the credentials come from {}:\n{}",
        config.display(),
        fleet.agent.log_tail()
    );

    let task_id = submit(&fleet, "fallback", &pushed.reference);
    wait_running(&fleet, &task_id);

    let captured = capture(&fleet, &[&task_id], &[]);
    assert_no_secret(
        &captured,
        &[
            ("the registry password", &login.password),
            ("the base64 user:password", &auth),
        ],
    );
}
