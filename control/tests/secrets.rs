//! `berth secret …` and secrets in tasks, against the real server
//! (in-process, on loopback) and the real `berth` binary.

mod common;

use std::os::unix::fs::PermissionsExt;

use berth_control::{Server, ServerConfig};
use common::*;
use tokio::io::AsyncWriteExt;

/// Runs `berth --server ADMIN args` with `stdin` on its standard input.
async fn berth_stdin(
    server: &berth_control::RunningServer,
    args: &[&str],
    stdin: &[u8],
) -> Result<std::process::Output> {
    let mut child = tokio::process::Command::new(BERTH)
        .env_remove("BERTH_ADDR")
        .arg("--server")
        .arg(server.admin_addr().to_string())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    Ok(tokio::time::timeout(DEADLINE, child.wait_with_output()).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_created_listed_rotated_and_deleted_without_showing_values() -> Result {
    let dir = private_dir()?;
    let data = dir.path().join("data");
    let server = Server::start(ServerConfig::loopback(&data)).await?;
    let value = "s3cr3t-value-from-file-7f1c";
    let file = dir.path().join("value");
    std::fs::write(&file, value)?;

    let created = json_of(
        &berth(
            &server,
            &[
                "secret",
                "create",
                "prod/db.password",
                "--from-file",
                &file.to_string_lossy(),
                "--json",
            ],
        )
        .await?,
    )?;
    assert_eq!(created["name"], "prod/db.password");
    assert_eq!(created["version"], 1);
    let key = data.join("secrets.key");
    assert_eq!(
        std::fs::metadata(&key)?.permissions().mode() & 0o777,
        0o600,
        "the key is created 0600 at the first secret"
    );

    let stdin_value = b"from-stdin-\x00-bytes-93ad";
    let out = berth_stdin(
        &server,
        &["secret", "create", "api", "--from-stdin"],
        stdin_value,
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("secret api created (version 1)"));

    assert_refused(
        &berth(
            &server,
            &[
                "secret",
                "create",
                "api",
                "--from-file",
                &file.to_string_lossy(),
            ],
        )
        .await?,
        "already exists",
    );
    assert_refused(
        &berth(
            &server,
            &[
                "secret",
                "create",
                "a:b",
                "--from-file",
                &file.to_string_lossy(),
            ],
        )
        .await?,
        "':' is not allowed",
    );
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 64 * 1024 + 1])?;
    assert_refused(
        &berth(
            &server,
            &[
                "secret",
                "create",
                "big",
                "--from-file",
                &big.to_string_lossy(),
            ],
        )
        .await?,
        "larger than 65536 bytes",
    );
    let usage = berth(&server, &["secret", "create", "x"]).await?;
    assert_eq!(usage.status.code(), Some(2), "a source is required");

    let rotated = json_of(
        &berth_stdin(
            &server,
            &["secret", "rotate", "api", "--from-stdin", "--json"],
            b"rotated-value-5be0",
        )
        .await?,
    )?;
    assert_eq!(rotated["version"], 2);
    assert_refused(
        &berth_stdin(&server, &["secret", "rotate", "nope", "--from-stdin"], b"x").await?,
        "no secret nope",
    );

    let ls = berth(&server, &["secret", "ls", "--json"]).await?;
    let listed = json_of(&ls)?;
    let rows: Vec<(String, u64)> = listed
        .as_array()
        .ok_or("an array")?
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["version"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("api".to_owned(), 2), ("prod/db.password".to_owned(), 1)]
    );
    let table = berth(&server, &["secret", "ls"]).await?;
    for out in [&ls, &table] {
        let shown = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        for v in [value.as_bytes(), stdin_value, b"rotated-value-5be0"] {
            assert!(!contains(&shown, v), "a value in `secret ls`");
        }
    }

    // Only ciphertext is stored: no value in any file of the data dir.
    let stored = data_dir_bytes(&data)?;
    for v in [value.as_bytes(), stdin_value, b"rotated-value-5be0"] {
        assert!(!contains(&stored, v), "a value in clear in the data dir");
    }

    let out = berth(&server, &["secret", "delete", "api"]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_refused(
        &berth(&server, &["secret", "delete", "api"]).await?,
        "no secret api",
    );
    let listed = json_of(&berth(&server, &["secret", "ls", "--json"]).await?)?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secrets_key_readable_by_others_stops_the_server() -> Result {
    let dir = private_dir()?;
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32)))?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640))?;
    let cfg = ServerConfig {
        secrets_key_file: Some(key.clone()),
        ..ServerConfig::loopback(dir.path().join("data"))
    };
    let e = Server::start(cfg.clone())
        .await
        .err()
        .ok_or("the server started")?;
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let server = Server::start(cfg).await?;
    let out = berth_stdin(&server, &["secret", "create", "db", "--from-stdin"], b"v").await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !dir.path().join("data").join("secrets.key").exists(),
        "with --secrets-key-file no key is created in the data dir"
    );
    Ok(())
}

/// A definition whose `app` container takes `DB_PASSWORD` from `value_from`
/// and pulls with `credentials` (when given).
fn definition(value_from: &str, credentials: Option<&str>) -> String {
    let creds = credentials
        .map(|c| format!(r#","repositoryCredentials":{{"credentialsParameter":"{c}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"family":"app","containerDefinitions":[{{"name":"app","image":"busybox:1","memory":64,
            "secrets":[{{"name":"DB_PASSWORD","valueFrom":"{value_from}"}}]{creds}}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_naming_a_missing_or_unresolvable_secret_is_refused_and_stores_nothing()
-> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let _agent = FakeAgent::start(&server, 4096, 4096).await?;
    let write = |name: &str, text: &str| -> Result<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p.to_string_lossy().into_owned())
    };
    let ssm = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db-password";
    let missing = write("missing.json", &definition(ssm, None))?;
    assert_refused(
        &berth(&server, &["task", "run", "--task-definition", &missing]).await?,
        "containerDefinitions[0].secrets[0].valueFrom: no secret prod/db-password (berth secret create prod/db-password …)",
    );
    let listed = json_of(&berth(&server, &["taskdef", "ls", "--json"]).await?)?;
    assert_eq!(
        listed["taskDefinitionArns"],
        serde_json::json!([]),
        "a refused run registers no revision"
    );
    let out = berth_stdin(
        &server,
        &["secret", "create", "/prod/db-password", "--from-stdin"],
        b"not json",
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A JSON key needs a JSON object with that key; credentials need
    // {"username", "password"}.
    let keyed = write(
        "keyed.json",
        &definition(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-password-AbC123:password::",
            Some("registry"),
        ),
    )?;
    let out = berth(&server, &["task", "run", "--task-definition", &keyed]).await?;
    assert_refused(
        &out,
        "containerDefinitions[0].secrets[0].valueFrom: secret prod/db-password is not a JSON object, so it has no key \"password\"",
    );
    assert_refused(
        &out,
        "containerDefinitions[0].repositoryCredentials.credentialsParameter: no secret registry",
    );
    let out = berth_stdin(
        &server,
        &["secret", "create", "registry", "--from-stdin"],
        br#"{"username":"u"}"#,
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = berth_stdin(
        &server,
        &["secret", "rotate", "prod/db-password", "--from-stdin"],
        br#"{"password":"pw-1"}"#,
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_refused(
        &berth(&server, &["task", "run", "--task-definition", &keyed]).await?,
        "secret registry is not registry credentials",
    );
    let out = berth_stdin(
        &server,
        &["secret", "rotate", "registry", "--from-stdin"],
        br#"{"username":"u","password":"p"}"#,
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ran = json_of(
        &berth(
            &server,
            &["task", "run", "--task-definition", &keyed, "--json"],
        )
        .await?,
    )?;
    let task_id = ran["taskId"].as_str().or(ran[0]["taskId"].as_str());
    assert!(task_id.is_some_and(|t| !t.is_empty()), "{ran}");

    // Services are checked the same way, on create and update.
    let register = |file: &str| {
        let file = file.to_owned();
        let server = &server;
        async move { json_of(&berth(server, &["taskdef", "register", &file, "--json"]).await?) }
    };
    let other = write(
        "other.json",
        &definition("other-secret", None).replace("\"app\"", "\"svc\""),
    )?;
    register(&other).await?;
    assert_refused(
        &berth(
            &server,
            &[
                "service",
                "create",
                "svc",
                "--task-definition",
                "svc",
                "--desired-count",
                "1",
            ],
        )
        .await?,
        "containerDefinitions[0].secrets[0].valueFrom: no secret other-secret",
    );
    assert_refused(
        &berth(&server, &["service", "describe", "svc"]).await?,
        "no service svc",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_s_secrets_go_only_to_its_instance_while_it_is_desired_running() -> Result {
    capture_logs();
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let mut runs = FakeAgent::start(&server, 4096, 4096).await?;
    let mut other = FakeAgent::start(&server, 4096, 4096).await?;
    let password = b"pw-only-for-its-instance-41d2";
    let creds = br#"{"username":"puller","password":"reg-pw-88e0"}"#;
    for (name, value) in [("prod/db", &password[..]), ("registry", &creds[..])] {
        let out = berth_stdin(&server, &["secret", "create", name, "--from-stdin"], value).await?;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let file = dir.path().join("app.json");
    std::fs::write(
        &file,
        definition(
            "arn:aws:ssm:us-east-1:123456789012:parameter/prod/db",
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:registry-AbC123"),
        ),
    )?;
    let ran = json_of(
        &berth(
            &server,
            &[
                "task",
                "run",
                "--task-definition",
                &file.to_string_lossy(),
                "--instance",
                &runs.instance_id,
                "--json",
            ],
        )
        .await?,
    )?;
    let task_id = ran["taskId"]
        .as_str()
        .or(ran[0]["taskId"].as_str())
        .ok_or("a task id")?
        .to_owned();

    let a = next_assignment(&mut runs.inbound).await?;
    let t = a
        .tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .ok_or("the task")?;
    assert_eq!(t.secrets.len(), 1);
    assert_eq!(
        (t.secrets[0].container.as_str(), t.secrets[0].name.as_str()),
        ("app", "DB_PASSWORD")
    );
    assert_eq!(t.secrets[0].value, password);
    assert_eq!(t.registry_credentials.len(), 1);
    assert_eq!(t.registry_credentials[0].username, "puller");
    assert_eq!(t.registry_credentials[0].password, "reg-pw-88e0");
    assert!(
        !format!("{a:?}").contains("pw-only-for-its-instance"),
        "the assignment's Debug shows no value"
    );

    // The other instance's next assignment (it gets a task of its own)
    // has neither the task nor any value.
    let plain = dir.path().join("plain.json");
    std::fs::write(&plain, TASK_DEFINITION)?;
    let out = berth(
        &server,
        &[
            "task",
            "run",
            "--task-definition",
            &plain.to_string_lossy(),
            "--instance",
            &other.instance_id,
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let theirs = next_assignment(&mut other.inbound).await?;
    assert_eq!(theirs.tasks.len(), 1);
    assert!(theirs.tasks.iter().all(|t| t.task_id != task_id
        && t.secrets.is_empty()
        && t.registry_credentials.is_empty()));

    // Nothing shows a value: describe, ls, the stored definition.
    for args in [
        vec!["task", "describe", task_id.as_str(), "--json"],
        vec!["task", "ls", "--json"],
        vec!["secret", "ls", "--json"],
        vec!["taskdef", "describe", "app", "--json"],
    ] {
        let out = berth(&server, &args).await?;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let shown = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
        for v in [&password[..], b"reg-pw-88e0"] {
            assert!(!contains(&shown, v), "{args:?} shows a secret value");
        }
    }

    // Once the task is desired STOPPED its values are not sent any more.
    let out = berth(&server, &["task", "stop", &task_id]).await?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stopping = next_assignment(&mut runs.inbound).await?;
    let t = stopping
        .tasks
        .iter()
        .find(|t| t.task_id == task_id)
        .ok_or("the stopping task")?;
    assert_eq!(t.desired_status, "STOPPED");
    assert!(t.secrets.is_empty() && t.registry_credentials.is_empty());

    // The server's log at trace level names the secrets, never a value.
    let logs = logged();
    assert!(
        contains(&logs, b"secret created") && contains(&logs, b"sending assignment"),
        "the server's log was captured"
    );
    for v in [&password[..], b"reg-pw-88e0", creds] {
        assert!(!contains(&logs, v), "a secret value in the server's log");
    }
    Ok(())
}
