//! The ECS API (SPEC §7) against the real server (in-process, on loopback),
//! the real `berth` binary, and the real AWS CLI and boto3 from the test
//! virtualenv `scripts/setup.sh` makes (target/test-venv, or
//! `$BERTH_TEST_VENV`): access keys, signatures, the cluster operations.

mod common;

use std::path::PathBuf;

use berth_control::{RunningServer, Server, ServerConfig};
use common::*;

/// A program of the test virtualenv; an error saying how to make it when
/// it is missing (nothing is skipped).
fn venv_bin(name: &str) -> Result<PathBuf> {
    let venv = std::env::var_os("BERTH_TEST_VENV").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-venv")),
        PathBuf::from,
    );
    let bin = venv.join("bin").join(name);
    if !bin.is_file() {
        return Err(format!(
            "{} is missing: run scripts/setup.sh, which makes the test virtualenv with the AWS CLI and boto3",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// An access key's id and secret.
struct Key {
    id: String,
    secret: String,
}

async fn create_key(server: &RunningServer) -> Result<Key> {
    let created = json_of(&berth(server, &["access-key", "create", "--json"]).await?)?;
    Ok(Key {
        id: created["AccessKeyId"]
            .as_str()
            .ok_or("no AccessKeyId")?
            .to_owned(),
        secret: created["SecretAccessKey"]
            .as_str()
            .ok_or("no SecretAccessKey")?
            .to_owned(),
    })
}

/// A command of the virtualenv with `key` as the AWS credentials and no
/// AWS configuration of the user's.
fn aws_command(program: PathBuf, key: &Key) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(program);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("AWS_ACCESS_KEY_ID", &key.id)
        .env("AWS_SECRET_ACCESS_KEY", &key.secret)
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

async fn output(mut c: tokio::process::Command) -> Result<std::process::Output> {
    let child = c.spawn()?;
    Ok(tokio::time::timeout(DEADLINE * 3, child.wait_with_output()).await??)
}

/// `aws ecs ARGS --endpoint-url http://ECS_API --output json`.
async fn aws(server: &RunningServer, key: &Key, args: &[&str]) -> Result<std::process::Output> {
    let mut c = aws_command(venv_bin("aws")?, key);
    c.arg("ecs")
        .args(args)
        .arg("--endpoint-url")
        .arg(format!("http://{}", server.ecs_api_addr()))
        .args(["--output", "json"]);
    output(c).await
}

/// `aws ecs ARGS`, which must succeed: what it printed, as JSON.
async fn ecs(server: &RunningServer, key: &Key, args: &[&str]) -> Result<serde_json::Value> {
    aws_json(&aws(server, key, args).await?)
}

/// What a successful `aws` printed, as JSON.
fn aws_json(out: &std::process::Output) -> Result<serde_json::Value> {
    assert!(
        out.status.success(),
        "aws failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Fails unless `aws` failed with the exception `kind` (the CLI prints
/// `An error occurred (KIND) when calling the OP operation: …`).
fn assert_aws_error(out: &std::process::Output, kind: &str) -> String {
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "aws succeeded: {}",
        text(&out.stdout)
    );
    assert!(
        err.contains(&format!("An error occurred ({kind})")),
        "stderr lacks {kind}: {err}"
    );
    err
}

/// Registers [`TASK_DEFINITION`] (family `web`) `times` times with
/// `aws ecs register-task-definition --cli-input-json file://…`; what the
/// first registration answered.
async fn register_web(
    server: &RunningServer,
    key: &Key,
    dir: &std::path::Path,
    times: usize,
) -> Result<serde_json::Value> {
    let file = dir.join("web.json");
    std::fs::write(&file, TASK_DEFINITION)?;
    let input = format!("file://{}", file.display());
    let mut first = serde_json::Value::Null;
    for n in 0..times {
        let out = aws_json(
            &aws(
                server,
                key,
                &["register-task-definition", "--cli-input-json", &input],
            )
            .await?,
        )?;
        if n == 0 {
            first = out;
        }
    }
    Ok(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_are_created_listed_and_revoked_and_the_secret_is_shown_once() -> Result {
    capture_logs();
    let dir = private_dir()?;
    let data = dir.path().join("data");
    let server = Server::start(ServerConfig::loopback(&data)).await?;

    let created =
        json_of(&berth(&server, &["access-key", "create", "--name", "ci", "--json"]).await?)?;
    let id = created["AccessKeyId"]
        .as_str()
        .ok_or("no AccessKeyId")?
        .to_owned();
    let secret = created["SecretAccessKey"]
        .as_str()
        .ok_or("no SecretAccessKey")?
        .to_owned();
    assert_eq!(id.len(), 20, "{id}");
    assert!(id.starts_with("AKIA"), "{id}");
    assert_eq!(secret.len(), 40);
    assert_eq!(created["Name"], "ci");
    assert_eq!(created["Status"], "Active");

    let plain = berth(&server, &["access-key", "create"]).await?;
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let out = text(&plain.stdout);
    assert!(out.contains("AccessKeyId:     AKIA"), "{out}");
    assert!(out.contains("SecretAccessKey: "), "{out}");

    let listed = json_of(&berth(&server, &["access-key", "ls", "--json"]).await?)?;
    let listed = listed.as_array().ok_or("not a list")?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["AccessKeyId"], id.as_str());
    let table = berth(&server, &["access-key", "ls"]).await?;
    let table_text = text(&table.stdout);
    assert!(
        table_text.contains(&id) && table_text.contains("Active"),
        "{table_text}"
    );
    assert!(
        !text(
            &berth(&server, &["access-key", "ls", "--json"])
                .await?
                .stdout
        )
        .contains(&secret)
            && !table_text.contains(&secret),
        "ls never shows a secret"
    );

    let revoked = berth(&server, &["access-key", "revoke", &id]).await?;
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    assert!(text(&revoked.stdout).contains(&format!("access key {id} revoked")));
    let listed = json_of(&berth(&server, &["access-key", "ls", "--json"]).await?)?;
    assert_eq!(listed[0]["Status"], "Revoked");
    assert!(listed[0]["RevokeDate"].is_string(), "{listed}");
    assert_eq!(listed[1]["Status"], "Active");

    assert_refused(
        &berth(&server, &["access-key", "revoke", "AKIA2222222222222222"]).await?,
        "no access key AKIA2222222222222222",
    );
    assert_refused(
        &berth(&server, &["access-key", "revoke", "nope"]).await?,
        "is not an access key id",
    );
    let long = "x".repeat(129);
    assert_refused(
        &berth(&server, &["access-key", "create", "--name", &long]).await?,
        "at most 128 characters",
    );

    let stored = data_dir_bytes(&data)?;
    assert!(
        !contains(&stored, secret.as_bytes()),
        "the secret is stored encrypted only"
    );
    let logs = logged();
    assert!(
        contains(&logs, id.as_bytes()),
        "the server logs the key's id"
    );
    assert!(!contains(&logs, secret.as_bytes()), "no secret in a log");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_lists_creates_and_describes_clusters() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let key = create_key(&server).await?;

    let listed = ecs(&server, &key, &["list-clusters"]).await?;
    assert_eq!(
        listed["clusterArns"],
        serde_json::json!(["arn:aws:ecs:local:000000000000:cluster/default"])
    );

    let created = ecs(&server, &key, &["create-cluster", "--cluster-name", "web"]).await?;
    assert_eq!(created["cluster"]["clusterName"], "web");
    assert_eq!(created["cluster"]["status"], "ACTIVE");
    let again = ecs(&server, &key, &["create-cluster", "--cluster-name", "web"]).await?;
    assert_eq!(
        again["cluster"]["clusterName"], "web",
        "CreateCluster is idempotent"
    );
    for n in 0..3 {
        ecs(
            &server,
            &key,
            &["create-cluster", "--cluster-name", &format!("batch-{n}")],
        )
        .await?;
    }

    // The CLI follows nextToken itself: pages of two give all five.
    let all = ecs(&server, &key, &["list-clusters", "--page-size", "2"]).await?;
    let arns: Vec<&str> = all["clusterArns"]
        .as_array()
        .ok_or("no clusterArns")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        arns.iter()
            .map(|a| a.rsplit('/').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["batch-0", "batch-1", "batch-2", "default", "web"]
    );
    let first = ecs(&server, &key, &["list-clusters", "--max-items", "2"]).await?;
    assert_eq!(first["clusterArns"].as_array().map(Vec::len), Some(2));
    assert!(first["NextToken"].is_string(), "{first}");

    let described = ecs(
        &server,
        &key,
        &[
            "describe-clusters",
            "--clusters",
            "web",
            "arn:aws:ecs:eu-west-1:000000000000:cluster/default",
            "nope",
        ],
    )
    .await?;
    let names: Vec<&str> = described["clusters"]
        .as_array()
        .ok_or("no clusters")?
        .iter()
        .filter_map(|c| c["clusterName"].as_str())
        .collect();
    assert_eq!(names, ["web", "default"]);
    assert_eq!(described["failures"][0]["reason"], "MISSING");
    assert!(
        described["failures"][0]["arn"]
            .as_str()
            .is_some_and(|a| a.ends_with("cluster/nope")),
        "{described}"
    );

    let bad = aws(
        &server,
        &key,
        &["create-cluster", "--cluster-name", "no spaces"],
    )
    .await?;
    assert_aws_error(&bad, "InvalidParameterException");
    let unsupported = aws(&server, &key, &["list-account-settings"]).await?;
    let err = assert_aws_error(&unsupported, "InvalidParameterException");
    assert!(
        err.contains("ListAccountSettings is not supported"),
        "{err}"
    );
    let settings = aws(
        &server,
        &key,
        &[
            "create-cluster",
            "--cluster-name",
            "x",
            "--settings",
            "name=containerInsights,value=enabled",
        ],
    )
    .await?;
    let err = assert_aws_error(&settings, "InvalidParameterException");
    assert!(err.contains("settings"), "{err}");

    let deleted = ecs(&server, &key, &["delete-cluster", "--cluster", "batch-0"]).await?;
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    let default = aws(&server, &key, &["delete-cluster", "--cluster", "default"]).await?;
    assert_aws_error(&default, "ClientException");
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_unknown_and_revoked_keys_are_refused_with_403() -> Result {
    capture_logs();
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let key = create_key(&server).await?;
    ecs(&server, &key, &["list-clusters"]).await?;

    let wrong_secret = Key {
        id: key.id.clone(),
        secret: "x".repeat(40),
    };
    let err = assert_aws_error(
        &aws(
            &server,
            &wrong_secret,
            &["create-cluster", "--cluster-name", "forged"],
        )
        .await?,
        "InvalidSignatureException",
    );
    assert!(err.contains("signature does not match"), "{err}");
    assert!(!err.contains(&key.secret), "no secret in an error");

    let unknown = Key {
        id: "AKIA2222222222222222".to_owned(),
        secret: key.secret.clone(),
    };
    assert_aws_error(
        &aws(&server, &unknown, &["list-clusters"]).await?,
        "UnrecognizedClientException",
    );

    // boto3 with AWS_ENDPOINT_URL_ECS and no endpoint argument.
    let mut py = aws_command(venv_bin("python")?, &key);
    py.env(
        "AWS_ENDPOINT_URL_ECS",
        format!("http://{}", server.ecs_api_addr()),
    )
    .arg("-c")
    .arg(
        "import boto3, json\n\
             ecs = boto3.client('ecs')\n\
             print(json.dumps(ecs.list_clusters()['clusterArns']))\n\
             try:\n\
             \x20   ecs.describe_clusters(clusters=['web'], include=['TAGS'])\n\
             except ecs.exceptions.InvalidParameterException as e:\n\
             \x20   print('refused', e.response['Error']['Code'])\n",
    );
    let out = output(py).await?;
    assert!(out.status.success(), "boto3: {}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.contains("cluster/default"), "{printed}");
    assert!(
        printed.contains("refused InvalidParameterException"),
        "{printed}"
    );

    let revoked = berth(&server, &["access-key", "revoke", &key.id]).await?;
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let err = assert_aws_error(
        &aws(
            &server,
            &key,
            &["create-cluster", "--cluster-name", "after-revoke"],
        )
        .await?,
        "UnrecognizedClientException",
    );
    assert!(err.contains("unknown or revoked"), "{err}");
    assert!(
        !contains(&logged(), key.secret.as_bytes()),
        "no secret in a log, also for refused requests"
    );
    let other = create_key(&server).await?;
    let listed = ecs(&server, &other, &["list-clusters"]).await?;
    assert!(
        !listed.to_string().contains("forged") && !listed.to_string().contains("after-revoke"),
        "refused requests change nothing: {listed}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_api_off_loopback_is_refused_until_https_is_there() -> Result {
    let dir = private_dir()?;
    let cfg = ServerConfig {
        ecs_api_listen: "0.0.0.0:0".parse()?,
        ..ServerConfig::loopback(dir.path().join("data"))
    };
    let e = Server::start(cfg).await.expect_err("refused");
    let text = e.to_string();
    assert!(text.contains("--ecs-api-listen 0.0.0.0:0"), "{text}");
    assert!(text.contains("needs HTTPS"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_unsigned_request_gets_the_ecs_error_shape() -> Result {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let send = |body_len: usize| {
        let addr = server.ecs_api_addr();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let head = format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await?;
            // The server may answer and close before the whole body is sent.
            let _ = s.write_all(&vec![b' '; body_len]).await;
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer).await;
            Result::<String>::Ok(text(&answer))
        }
    };
    let big = tokio::time::timeout(DEADLINE, send(2 * 1024 * 1024)).await??;
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    assert!(big.contains(r#""__type":"ClientException""#), "{big}");
    assert!(big.contains("larger than 1048576 bytes"), "{big}");
    let unsigned = tokio::time::timeout(DEADLINE, send(2)).await??;
    assert!(unsigned.starts_with("HTTP/1.1 403"), "{unsigned}");
    assert!(
        unsigned.contains(r#""__type":"MissingAuthenticationTokenException""#),
        "{unsigned}"
    );
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_registers_describes_and_lists_task_definitions() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let key = create_key(&server).await?;
    let first = register_web(&server, &key, dir.path(), 3).await?;
    assert_eq!(first["taskDefinition"]["family"], "web");
    assert_eq!(first["taskDefinition"]["revision"], 1);
    assert_eq!(first["taskDefinition"]["status"], "ACTIVE");
    assert_eq!(
        first["taskDefinition"]["containerDefinitions"][0]["image"],
        "nginx:1"
    );

    let described = ecs(
        &server,
        &key,
        &["describe-task-definition", "--task-definition", "web"],
    )
    .await?;
    assert_eq!(
        described["taskDefinition"]["revision"], 3,
        "the latest ACTIVE revision"
    );
    let by_arn = ecs(
        &server,
        &key,
        &[
            "describe-task-definition",
            "--task-definition",
            "arn:aws:ecs:local:000000000000:task-definition/web:2",
        ],
    )
    .await?;
    assert_eq!(by_arn["taskDefinition"]["revision"], 2);

    let listed = ecs(
        &server,
        &key,
        &["list-task-definitions", "--page-size", "2"],
    )
    .await?;
    let arns: Vec<&str> = listed["taskDefinitionArns"]
        .as_array()
        .ok_or("no taskDefinitionArns")?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(
        arns,
        [
            "arn:aws:ecs:local:000000000000:task-definition/web:1",
            "arn:aws:ecs:local:000000000000:task-definition/web:2",
            "arn:aws:ecs:local:000000000000:task-definition/web:3",
        ],
        "pages of two give all three"
    );
    let desc = ecs(
        &server,
        &key,
        &[
            "list-task-definitions",
            "--sort",
            "DESC",
            "--family-prefix",
            "web",
            "--max-items",
            "1",
        ],
    )
    .await?;
    assert_eq!(
        desc["taskDefinitionArns"],
        serde_json::json!(["arn:aws:ecs:local:000000000000:task-definition/web:3"])
    );

    let missing = aws(
        &server,
        &key,
        &["describe-task-definition", "--task-definition", "nope"],
    )
    .await?;
    let err = assert_aws_error(&missing, "ClientException");
    assert!(err.contains("nope"), "{err}");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"family": "web", "networkMode": "awsvpc", "containerDefinitions": [{"name": "web", "image": "nginx:1", "memory": 64}]}"#,
    )?;
    let refused = aws(
        &server,
        &key,
        &[
            "register-task-definition",
            "--cli-input-json",
            &format!("file://{}", bad.display()),
        ],
    )
    .await?;
    let err = assert_aws_error(&refused, "InvalidParameterException");
    assert!(
        err.contains("awsvpc") || err.contains("networkMode"),
        "{err}"
    );
    let after = ecs(
        &server,
        &key,
        &["describe-task-definition", "--task-definition", "web"],
    )
    .await?;
    assert_eq!(
        after["taskDefinition"]["revision"], 3,
        "a refused registration adds nothing"
    );

    let families = ecs(&server, &key, &["list-task-definition-families"]).await?;
    assert_eq!(families["families"], serde_json::json!(["web"]));
    for rev in ["web:1", "web:2", "web:3"] {
        let gone = ecs(
            &server,
            &key,
            &["deregister-task-definition", "--task-definition", rev],
        )
        .await?;
        assert_eq!(gone["taskDefinition"]["status"], "INACTIVE");
    }
    let active = ecs(&server, &key, &["list-task-definition-families"]).await?;
    assert_eq!(active["families"], serde_json::json!([]));
    let inactive = ecs(
        &server,
        &key,
        &["list-task-definition-families", "--status", "INACTIVE"],
    )
    .await?;
    assert_eq!(inactive["families"], serde_json::json!(["web"]));
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_creates_describes_lists_updates_and_deletes_a_service() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let _agent = FakeAgent::start(&server, 4096, 8192).await?;
    let key = create_key(&server).await?;
    register_web(&server, &key, dir.path(), 2).await?;

    let create = [
        "create-service",
        "--service-name",
        "api",
        "--task-definition",
        "web:1",
        "--desired-count",
        "0",
    ];
    let created = ecs(&server, &key, &create).await?;
    assert_eq!(created["service"]["serviceName"], "api");
    assert_eq!(created["service"]["status"], "ACTIVE");
    assert_eq!(created["service"]["desiredCount"], 0);
    let dup = aws(&server, &key, &create).await?;
    assert_aws_error(&dup, "ClientException");
    let refused = aws(
        &server,
        &key,
        &[
            "create-service",
            "--service-name",
            "lb",
            "--task-definition",
            "web:1",
            "--load-balancers",
            "targetGroupArn=arn:x,containerName=web,containerPort=80",
        ],
    )
    .await?;
    let err = assert_aws_error(&refused, "InvalidParameterException");
    assert!(err.contains("loadBalancers"), "{err}");

    let listed = ecs(&server, &key, &["list-services"]).await?;
    assert_eq!(
        listed["serviceArns"],
        serde_json::json!(["arn:aws:ecs:local:000000000000:service/default/api"])
    );
    let described = ecs(
        &server,
        &key,
        &["describe-services", "--services", "api", "gone"],
    )
    .await?;
    assert_eq!(described["services"][0]["serviceName"], "api");
    assert_eq!(described["failures"][0]["reason"], "MISSING");
    // Task definitions as ECS writes them: ARNs.
    assert_eq!(
        described["services"][0]["taskDefinition"],
        "arn:aws:ecs:local:000000000000:task-definition/web:1"
    );
    assert_eq!(
        described["services"][0]["deployments"][0]["taskDefinition"],
        "arn:aws:ecs:local:000000000000:task-definition/web:1"
    );
    // A cluster that does not exist is ECS' ClusterNotFoundException.
    let nowhere = aws(
        &server,
        &key,
        &[
            "describe-services",
            "--cluster",
            "nope",
            "--services",
            "api",
        ],
    )
    .await?;
    assert_aws_error(&nowhere, "ClusterNotFoundException");
    let nowhere = aws(
        &server,
        &key,
        &[
            "update-service",
            "--cluster",
            "nope",
            "--service",
            "api",
            "--desired-count",
            "1",
        ],
    )
    .await?;
    assert_aws_error(&nowhere, "ClusterNotFoundException");

    let updated = ecs(
        &server,
        &key,
        &[
            "update-service",
            "--service",
            "api",
            "--task-definition",
            "web:2",
        ],
    )
    .await?;
    assert!(
        updated["service"]["taskDefinition"]
            .as_str()
            .is_some_and(|t| t.ends_with("web:2")),
        "{updated}"
    );
    let missing = aws(
        &server,
        &key,
        &[
            "update-service",
            "--service",
            "nope",
            "--desired-count",
            "1",
        ],
    )
    .await?;
    assert_aws_error(&missing, "ServiceNotFoundException");

    let deleted = ecs(&server, &key, &["delete-service", "--service", "api"]).await?;
    assert_eq!(deleted["service"]["status"], "DRAINING");
    server.shutdown().await?;
    Ok(())
}

/// Sends `body` to the ECS API with `target` (none when empty), signed by
/// botocore's SigV4Auth with `key`; prints the status and the body.
const SIGNED_RAW: &str = r#"
import sys, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
import os
url, target, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
headers = {"Content-Type": "application/x-amz-json-1.1"}
if target:
    headers["X-Amz-Target"] = target
req = AWSRequest(method="POST", url=url, data=body, headers=headers)
SigV4Auth(Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]), "ecs", "eu-west-1").add_auth(req)
r = urllib.request.Request(url, data=body, headers=dict(req.headers.items()), method="POST")
try:
    with urllib.request.urlopen(r) as resp:
        print(resp.status, resp.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_with_bad_json_or_targets_are_refused_naming_the_problem() -> Result {
    let dir = private_dir()?;
    let server = Server::start(ServerConfig::loopback(dir.path().join("data"))).await?;
    let key = create_key(&server).await?;
    let url = format!("http://{}/", server.ecs_api_addr());
    let send = |target: &'static str, body: &'static str| {
        let (url, key) = (url.clone(), &key);
        async move {
            let mut py = aws_command(venv_bin("python")?, key);
            py.arg("-c")
                .arg(SIGNED_RAW)
                .args([url.as_str(), target, body]);
            let out = output(py).await?;
            assert!(out.status.success(), "python: {}", text(&out.stderr));
            Result::<String>::Ok(text(&out.stdout))
        }
    };
    const OP: &str = "AmazonEC2ContainerServiceV20141113.CreateCluster";
    let ok = send(OP, r#"{"clusterName": "signed"}"#).await?;
    assert!(ok.starts_with("200 "), "{ok}");
    for (target, body, status, kind, needle) in [
        (OP, "{not json", "400", "SerializationException", "not JSON"),
        (OP, "[1]", "400", "SerializationException", "JSON object"),
        (
            "",
            "{}",
            "400",
            "InvalidParameterException",
            "X-Amz-Target header is missing",
        ),
        (
            "AmazonSSM.GetParameter",
            "{}",
            "400",
            "InvalidParameterException",
            "not an ECS operation",
        ),
        (
            "AmazonEC2ContainerServiceV20141113.CreateCapacityProvider",
            "{}",
            "400",
            "InvalidParameterException",
            "CreateCapacityProvider is not supported",
        ),
    ] {
        let answer = send(target, body).await?;
        assert!(
            answer.starts_with(&format!("{status} ")),
            "{target} {body}: {answer}"
        );
        let json: serde_json::Value =
            serde_json::from_str(answer.split_once(' ').map_or("", |(_, b)| b))?;
        assert_eq!(json["__type"], kind, "{answer}");
        assert!(
            json["message"].as_str().is_some_and(|m| m.contains(needle)),
            "{answer}"
        );
    }
    server.shutdown().await?;
    Ok(())
}
