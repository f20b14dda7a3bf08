//! The Docker CLI, and the test image.

use std::process::{Command, Output};

use serde_json::Value;

use crate::{RunId, describe_output, output_of, repo_root};

/// Runs `docker ARGS…` to completion.
pub fn docker(args: &[&str]) -> Output {
    output_of(Command::new("docker").args(args))
}

/// Runs `docker ARGS…`, panics (with its stderr) unless it exits 0, returns
/// its stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed\n{}",
        args.join(" "),
        describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `docker ARGS…` (which must exit 0) and parses its stdout as JSON.
pub fn docker_json(args: &[&str]) -> Value {
    let text = docker_ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "`docker {}` did not print JSON ({e}):\n{text}",
            args.join(" ")
        )
    })
}

/// Ids of all containers (running or not) that carry `label` (`key=value`).
fn ids_labelled(label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    docker_ok(&["ps", "-aq", "--no-trunc", "--filter", &filter])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// `docker inspect` of every container labelled
/// `berth.instance-id=<instance_id>`, running or not.
pub fn containers_of(instance_id: &str) -> Vec<Value> {
    assert!(!instance_id.is_empty(), "containers_of: empty instance id");
    let ids = ids_labelled(&format!("berth.instance-id={instance_id}"));
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["inspect"];
    args.extend(ids.iter().map(String::as_str));
    let out = docker(&args);
    // A container removed between `ps` and `inspect` makes inspect exit 1
    // while still printing the others.
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(Value::Array(items)) => items,
        _ => panic!(
            "`docker inspect` of the containers of {instance_id} failed\n{}",
            describe_output(&out)
        ),
    }
}

/// Removes (forcibly) every container and volume labelled `label`
/// (`key=value`); never panics, for `Drop`.
pub fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    let out = docker(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.iter().map(String::as_str));
        let out = docker(&args);
        if !out.status.success() {
            eprintln!(
                "cleanup: cannot remove containers labelled {label}\n{}",
                describe_output(&out)
            );
        }
    }
    let out = docker(&["volume", "ls", "-q", "--filter", &filter]);
    let volumes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes.iter().map(String::as_str));
        let out = docker(&args);
        if !out.status.success() {
            eprintln!(
                "cleanup: cannot remove volumes labelled {label}\n{}",
                describe_output(&out)
            );
        }
    }
}

/// The first 12 characters of a task id: the suffix of container names.
pub fn short_id(task_id: &str) -> &str {
    task_id.get(..12).unwrap_or(task_id)
}

/// A tiny busybox image `berth-test-busybox:<runid>`, built locally by
/// `scripts/test-image.sh`. Dropping it removes exactly that tag.
pub struct TestImage {
    tag: String,
}

impl TestImage {
    pub fn build(run: &RunId) -> TestImage {
        Self::build_tag(&format!("berth-test-busybox:{run}"))
    }

    /// Builds the image under `tag` (which should carry a run id).
    pub fn build_tag(tag: &str) -> TestImage {
        let script = repo_root().join("scripts").join("test-image.sh");
        let out = output_of(Command::new(&script).arg(tag));
        assert!(
            out.status.success(),
            "{} {tag} failed (is Docker running? scripts/setup.sh prepares the machine)\n{}",
            script.display(),
            describe_output(&out)
        );
        TestImage {
            tag: tag.to_string(),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let out = docker(&["rmi", &self.tag]);
        if !out.status.success() {
            eprintln!(
                "cleanup: cannot remove image {}\n{}",
                self.tag,
                describe_output(&out)
            );
        }
    }
}
