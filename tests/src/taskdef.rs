//! ECS task definitions for tests, and a scratch directory to put them in.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::{RunId, str_field};

/// A busybox command that runs until SIGTERM and then exits 0 promptly
/// (a plain `sleep` as PID 1 ignores SIGTERM and waits for SIGKILL).
pub const LONG_RUNNING: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 1; done",
];

/// A busybox command that prints a line and exits 0.
pub const EXITS_ZERO: &[&str] = &["sh", "-c", "echo hello from init"];

/// The JSON text of an ECS task definition (the body of
/// `register-task-definition`) of `family`, whose containers are
/// `containers` (a JSON array of container definitions). A container without
/// `image` gets `image`; one without `memory` or `memoryReservation` gets
/// `memory: 64`.
pub fn task_def(image: &str, family: &str, containers: Value) -> String {
    let Value::Array(mut containers) = containers else {
        panic!("task_def: containers must be a JSON array, got {containers}");
    };
    for c in &mut containers {
        let Value::Object(map) = c else {
            panic!("task_def: a container definition must be an object, got {c}");
        };
        map.entry("image").or_insert_with(|| json!(image));
        if !map.contains_key("memory") && !map.contains_key("memoryReservation") {
            map.insert("memory".into(), json!(64));
        }
    }
    let def = json!({
        "family": family,
        "networkMode": "bridge",
        "containerDefinitions": containers,
    });
    serde_json::to_string_pretty(&def).unwrap_or_else(|e| panic!("task_def: {e}"))
}

/// The container called `name` in a task object (`containers[]`).
pub fn container_of<'a>(task: &'a Value, name: &str) -> &'a Value {
    task.get("containers")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| str_field(c, "name") == name))
        .unwrap_or_else(|| panic!("task has no container {name:?}: {task}"))
}

/// A temporary directory for a test's files (task definitions, …).
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new(run: &RunId) -> Scratch {
        Scratch {
            dir: run.temp_dir("files"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `<scratch>/<name>`; returns the path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_image_and_memory() {
        let text = task_def(
            "img:1",
            "fam",
            json!([{"name": "a"}, {"name": "b", "image": "other", "memoryReservation": 8}]),
        );
        let def: Value = serde_json::from_str(&text).expect("task_def prints JSON");
        assert_eq!(def["family"], "fam");
        assert_eq!(def["containerDefinitions"][0]["image"], "img:1");
        assert_eq!(def["containerDefinitions"][0]["memory"], 64);
        assert_eq!(def["containerDefinitions"][1]["image"], "other");
        assert!(def["containerDefinitions"][1].get("memory").is_none());
    }
}
