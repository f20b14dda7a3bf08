//! The ECS API (SPEC §7) against the real server (in-process, on loopback)
//! and the real `berth` binary: access keys.

mod common;

use berth_control::{Server, ServerConfig};
use common::*;

/// Every file of the data dir, as one byte string.
fn data_dir_bytes(dir: &std::path::Path) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            all.extend(std::fs::read(&path)?);
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_are_created_listed_and_revoked_and_the_secret_is_shown_once() -> Result {
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
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is stored encrypted only"
    );
    server.shutdown().await?;
    Ok(())
}
