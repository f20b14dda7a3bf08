//! Secrets end to end (SPEC §8): `berth secret create`, a task definition
//! whose `secrets` come from an SSM parameter ARN and a Secrets Manager ARN
//! with a JSON key, the values in the container's environment, and a scan
//! of everything captured — logs, the local API, the CLI's output, the
//! agent's state file, the containers' labels — for the values; and a
//! private loopback registry with basic auth pulled through
//! `repositoryCredentials`.

use std::path::Path;

use berth_e2e::{
    Fleet, LONG_RUNNING, Registry, RegistryLogin, RunId, capture::record_secret, container_of,
    describe_output, docker, docker_json, http_get, said, str_field,
};
use serde_json::{Value, json};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `berth secret create NAME --from-file` with `value`; the value is
/// recorded for the suite's secret scan first.
fn create_secret(fleet: &Fleet, name: &str, value: &str) {
    record_secret(&format!("berth secret {name}"), value);
    let file = fleet
        .files
        .write(&format!("secret-{}", name.replace('/', "_")), value);
    let out = fleet.server.cli(&[
        "secret",
        "create",
        name,
        "--from-file",
        &file.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "`berth secret create {name}` failed\n{}",
        describe_output(&out)
    );
    std::fs::remove_file(&file).unwrap_or_else(|e| panic!("cannot remove {}: {e}", file.display()));
}

/// Everything a user or operator can see: logs, the local API, the CLI's
/// JSON, the agent's state file, the task's containers' labels.
fn capture(fleet: &Fleet, task_id: &str) -> Vec<(String, String)> {
    let mut out = vec![("agent log".to_string(), read(fleet.agent.log_path()))];
    for path in fleet.server.log_paths() {
        out.push((path.display().to_string(), read(&path)));
    }
    let state = fleet.agent.data_dir().join("state.json");
    out.push((state.display().to_string(), read(&state)));
    for path in [
        "/v1/metadata".to_string(),
        "/v1/tasks".to_string(),
        format!("/v1/tasks/{task_id}"),
        "/metrics".to_string(),
    ] {
        let (code, body) =
            http_get(fleet.agent.api_addr(), &path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        out.push((format!("GET {path}"), body));
    }
    for args in [
        vec!["task", "describe", task_id, "--json"],
        vec!["task", "ls", "--json"],
        vec!["secret", "ls", "--json"],
        vec!["secret", "ls"],
    ] {
        let output = fleet.server.cli(&args);
        assert!(
            output.status.success(),
            "{args:?}\n{}",
            describe_output(&output)
        );
        out.push((format!("berth {}", args.join(" ")), said(&output)));
    }
    let status = fleet.agent.agent_cli(&["status", "--json"]);
    assert!(status.status.success(), "{}", describe_output(&status));
    out.push(("berth-agent status --json".into(), said(&status)));
    out
}

#[test]
fn secrets_from_ssm_and_secrets_manager_arns_reach_the_container_and_nothing_else() {
    let run = RunId::new();
    let fleet = Fleet::start_with(run);
    let db_password = format!("db-pw-{}-{}", RunId::new(), RunId::new());
    let api_key = format!("api-key-{}-{}", RunId::new(), RunId::new());
    create_secret(&fleet, "prod/db-password", &db_password);
    // The JSON key's value is what reaches the container: scanned for too.
    record_secret("the apiKey of berth secret app/api", &api_key);
    let api = json!({"apiKey": api_key, "region": "eu"}).to_string();
    create_secret(&fleet, "app/api", &api);

    let family = fleet.family("secrets");
    let file = fleet.task_def_file(
        &family,
        json!([{
            "name": "app",
            "essential": true,
            "command": LONG_RUNNING,
            "environment": [{"name": "PLAIN", "value": "plain"}],
            "secrets": [
                {"name": "DB_PASSWORD",
                 "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db-password"},
                {"name": "API_KEY",
                 "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/api-AbC123:apiKey::"}
            ]
        }]),
    );
    let task = fleet.run_task_wait(&file);
    let task_id = str_field(&task, "taskId").to_string();
    let container = str_field(container_of(&task, "app"), "runtimeId").to_string();

    // The container sees the values (the JSON key's value, not the JSON).
    let out = docker(&["exec", &container, "env"]);
    assert!(
        out.status.success(),
        "docker exec env\n{}",
        describe_output(&out)
    );
    let env = String::from_utf8_lossy(&out.stdout).into_owned();
    for (name, want) in [
        ("DB_PASSWORD", db_password.as_str()),
        ("API_KEY", api_key.as_str()),
        ("PLAIN", "plain"),
    ] {
        let got = env
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='));
        assert_eq!(got, Some(want), "{name} in the container's environment");
    }

    // Nowhere else: not in the labels, logs, API, CLI output or state.
    let inspect: Value = docker_json(&["inspect", &container]);
    let labels = inspect[0]["Config"]["Labels"].to_string();
    let mut captured = capture(&fleet, &task_id);
    captured.push(("docker inspect labels".into(), labels));
    let secrets = [
        ("the SSM secret", db_password.as_str()),
        ("the JSON key's value", api_key.as_str()),
        ("the Secrets Manager secret", api.as_str()),
    ];
    let found: Vec<String> = captured
        .iter()
        .flat_map(|(what, text)| {
            secrets
                .iter()
                .filter(|(_, v)| text.contains(v))
                .map(move |(s, _)| format!("{s} in {what}"))
        })
        .collect();
    assert!(found.is_empty(), "secret values found: {found:?}");
    assert!(
        captured
            .iter()
            .any(|(what, text)| what == "berth secret ls --json"
                && text.contains("prod/db-password")),
        "the scan saw the listing"
    );
}

#[test]
fn repository_credentials_from_a_secret_pull_from_a_private_registry() {
    let run = RunId::new();
    let login = RegistryLogin {
        username: format!("puller-{run}"),
        password: format!("reg-pw-{}-{}", RunId::new(), RunId::new()),
    };
    // Registry::start_with_auth records the password for the suite's scan.
    let mut registry = Registry::start_with_auth(&run, login.clone());
    let mut fleet = Fleet::start_with(run);
    let pushed = registry.push(fleet.image.tag(), "private");
    // The host's Docker config must not decide this test: one of our own,
    // without credentials; agent.toml names no registry.
    let docker_config = fleet.files.write("docker-config.json", r#"{"auths": {}}"#);
    fleet.agent.configure(&format!(
        "docker_config = {}",
        serde_json::to_string(&docker_config.to_string_lossy()).unwrap_or_default()
    ));
    fleet.server.wait_connected(fleet.agent.instance_id());
    let credentials = json!({"username": login.username, "password": login.password}).to_string();
    create_secret(&fleet, "registry/private", &credentials);

    let run_with = |name: &str, container: Value| {
        let family = fleet.family(name);
        let file = fleet.files.write(
            &format!("{name}.json"),
            &berth_e2e::task_def(&pushed.reference, &family, json!([container])),
        );
        let out = fleet.run_task(&file, &["--json"]);
        assert!(out.status.success(), "task run\n{}", describe_output(&out));
        str_field(&berth_e2e::stdout_json("task run", &out), "taskId").to_string()
    };
    // Without repositoryCredentials the registry refuses the pull.
    let denied = run_with(
        "denied",
        json!({"name": "app", "essential": true, "command": LONG_RUNNING}),
    );
    let (task, reasons) = fleet.server.wait_failed_to_start(&denied);
    assert!(
        [
            "no basic auth credentials",
            "unauthorized",
            "authentication required"
        ]
        .iter()
        .any(|w| reasons.contains(w)),
        "the registry's refusal: {task}"
    );
    // With them, through a Secrets Manager ARN, it pulls and runs.
    let allowed = run_with(
        "allowed",
        json!({
            "name": "app", "essential": true, "command": LONG_RUNNING,
            "repositoryCredentials": {"credentialsParameter":
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:registry/private"}
        }),
    );
    let task = fleet.server.wait_task(&allowed, "RUNNING or STOPPED", |t| {
        matches!(str_field(t, "lastStatus"), "RUNNING" | "STOPPED")
    });
    assert_eq!(
        str_field(&task, "lastStatus"),
        "RUNNING",
        "pulled with the secret's credentials: {task}\nagent log tail:\n{}",
        fleet.agent.log_tail()
    );
    let captured = capture(&fleet, &allowed);
    let found: Vec<&String> = captured
        .iter()
        .filter(|(_, text)| text.contains(&login.password) || text.contains(&credentials))
        .map(|(what, _)| what)
        .collect();
    assert!(found.is_empty(), "the registry password in {found:?}");
}

#[test]
fn an_offline_restart_without_the_secrets_fails_the_task_naming_the_secret() {
    // The agent aborts once the image is pulled, before any container
    // exists: the assignment (without its secrets) is all it kept.
    let mut fleet = Fleet::start_custom(RunId::new(), |server, agent| {
        agent.start_with_env(&[("BERTH_FAILPOINTS", "after-pull")]);
        server.wait_connected(agent.instance_id());
    });
    let value = format!("offline-pw-{}-{}", RunId::new(), RunId::new());
    create_secret(&fleet, "offline/db", &value);
    let family = fleet.family("offline");
    let file = fleet.task_def_file(
        &family,
        json!([{
            "name": "app", "essential": true, "command": LONG_RUNNING,
            "secrets": [{"name": "DB_PASSWORD",
                         "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/offline/db"}]
        }]),
    );
    let out = fleet.run_task(&file, &["--json"]);
    assert!(out.status.success(), "task run\n{}", describe_output(&out));
    let task_id = str_field(&berth_e2e::stdout_json("task run", &out), "taskId").to_string();
    let status = berth_e2e::wait_for(
        "the agent to abort after the pull",
        berth_e2e::DEADLINE,
        || fleet.agent.exited().ok_or("still running"),
    );
    assert!(
        !status.success(),
        "the failpoint aborts the agent: {status}"
    );

    // The control plane is out of reach when the agent comes back.
    fleet.server.kill();
    fleet.agent.start();
    let task = berth_e2e::wait_for(
        "the agent to refuse the task offline",
        berth_e2e::DEADLINE,
        || {
            let t = fleet.agent.api_get(&format!("/v1/tasks/{task_id}"));
            (str_field(&t, "lastStatus") == "STOPPED")
                .then_some(t)
                .ok_or("not stopped yet")
        },
    );
    assert_eq!(str_field(&task, "stopCode"), "TaskFailedToStart", "{task}");
    let reason = str_field(&task, "stoppedReason");
    for part in [
        "secret DB_PASSWORD",
        "parameter/offline/db",
        "in memory only",
    ] {
        assert!(reason.contains(part), "{part:?} in the reason: {task}");
    }
    assert!(
        berth_e2e::containers_of(fleet.agent.instance_id()).is_empty(),
        "nothing was created"
    );

    // Back online, the control plane learns why.
    fleet.server.restart();
    let (task, _) = fleet.server.wait_failed_to_start(&task_id);
    assert!(
        str_field(&task, "stoppedReason").contains("secret DB_PASSWORD"),
        "{task}"
    );
    let log = read(fleet.agent.log_path());
    assert!(!log.contains(&value), "the value in the agent's log");
}
