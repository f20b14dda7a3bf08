//! The harness itself, against the real Docker Engine and registry (no
//! berth binaries needed): if these fail, the machine is not set up
//! (scripts/setup.sh) and every other e2e test would fail for that reason.

use berth_e2e::{Registry, RunId, TestImage, describe_output, docker, docker_ok, wait_for};
use std::time::Duration;

#[test]
fn test_image_runs_busybox_and_is_removed_on_drop() {
    let run = RunId::new();
    let tag = {
        let image = TestImage::build(&run);
        let name = format!("berth-e2e-harness-{run}");
        let out = docker(&["run", "--rm", "--name", &name, image.tag(), "echo", "hello"]);
        assert!(
            out.status.success(),
            "docker run of the test image failed\n{}",
            describe_output(&out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
        image.tag().to_string()
    };
    let out = docker(&["image", "inspect", &tag]);
    assert!(
        !out.status.success(),
        "{tag} should be gone after TestImage was dropped"
    );
}

#[test]
fn registry_serves_pushes_and_pulls() {
    let run = RunId::new();
    let image = TestImage::build(&run);
    let mut registry = Registry::start(&run);
    let pushed = registry.push(image.tag(), "harness");
    assert!(
        pushed.digest.starts_with("sha256:"),
        "push digest: {pushed:?}"
    );
    // push() removed the local tag of the reference: a pull really fetches.
    let out = docker(&["image", "inspect", &pushed.reference]);
    assert!(
        !out.status.success(),
        "{} should not be tagged locally after push()",
        pushed.reference
    );
    docker_ok(&["pull", &pushed.reference]);
    let digests = docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RepoDigests}}",
        &pushed.reference,
    ]);
    assert!(
        digests.contains(&pushed.digest),
        "pulled image should carry digest {}: {digests}",
        pushed.digest
    );
    // A missing image: the registry's own words.
    let out = docker(&["pull", &registry.reference("nope")]);
    assert!(!out.status.success(), "pulling a missing image should fail");
    let words = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        words.contains("manifest unknown") || words.contains("not found"),
        "{}",
        describe_output(&out)
    );
}

#[test]
fn wait_for_reports_the_last_state_on_timeout() {
    let result = std::panic::catch_unwind(|| {
        let mut n = 0;
        wait_for(
            "a condition that never holds",
            Duration::from_millis(300),
            || {
                n += 1;
                Err::<(), _>(format!("seen {n}"))
            },
        )
    });
    let panic = result.expect_err("wait_for should panic on timeout");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("a condition that never holds") && message.contains("seen"),
        "panic message: {message}"
    );
    assert_eq!(
        wait_for("an immediate value", Duration::from_secs(1), || Some(7)),
        7
    );
}

#[test]
fn a_throwaway_postgres_serves_its_own_databases_and_is_gone_on_drop() {
    let run = RunId::new();
    let (pid, port) = {
        let pg = berth_e2e::Postgres::start(&run);
        let name = format!("harness_{run}");
        let url = pg.create_database(&name);
        assert_eq!(
            url,
            format!("postgres://berth@127.0.0.1:{}/{name}", pg.port())
        );
        assert_eq!(pg.psql(&name, "SELECT 40 + 2"), "42");
        (pg.pid(), pg.port())
    };
    wait_for(
        "postgres to be gone after drop",
        Duration::from_secs(60),
        || (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port} any more"
    );
}
