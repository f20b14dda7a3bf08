//! The fixture and cleanup guard shared by the tests against the real Docker
//! Engine (`docker_runtime.rs`, `docker_volumes.rs`).
//!
//! A fixture makes its own image (`scripts/test-image.sh`, from Debian's
//! busybox-static; no registry is reachable) and its own run id; every
//! container and volume a test labels with that run id is removed when the
//! fixture is dropped, even on failure — and nothing else is.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use berth_agent::runtime::docker::DockerRuntime;
use berth_agent::runtime::{
    ContainerSpec, LABEL_CONTAINER_NAME, LABEL_INSTANCE_ID, LABEL_TASK_FAMILY, LABEL_TASK_ID,
    Runtime, RuntimeEvent,
};
use berth_taskdef::ContainerDefinition;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

/// Label that marks everything one test run created, for the cleanup guard.
pub const LABEL_TEST_RUN: &str = "berth.test-run";
/// Upper bound for any single wait on the engine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Removes, on drop, every container and then every volume labelled with this
/// run, and the run's image tag — and nothing else.
struct Cleanup {
    run_id: String,
    image: String,
}

impl Cleanup {
    fn labelled(&self, list: &[&str]) -> Vec<String> {
        Command::new("docker")
            .args(list)
            .arg("--filter")
            .arg(format!("label={LABEL_TEST_RUN}={}", self.run_id))
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        docker_on(
            &["rm", "-f", "-v"],
            &self.labelled(&["ps", "-aq", "--no-trunc"]),
        );
        // After the containers: a volume in use cannot be removed.
        docker_on(
            &["volume", "rm", "-f"],
            &self.labelled(&["volume", "ls", "-q"]),
        );
        let _ = Command::new("docker").args(["rmi", &self.image]).output();
    }
}

/// Runs `docker <command> <ids…>`, unless there are no ids.
fn docker_on(command: &[&str], ids: &[String]) {
    if !ids.is_empty() {
        let _ = Command::new("docker").args(command).args(ids).output();
    }
}

/// One test's runtime, image, run id and instance id, with the guard that
/// removes what the test created.
pub struct Fixture {
    pub runtime: DockerRuntime,
    pub run_id: String,
    pub instance_id: String,
    pub image: String,
    // Last field: dropped after everything else.
    _cleanup: Cleanup,
}

impl Fixture {
    pub async fn new() -> Self {
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let image = format!("berth-test-busybox:{run_id}");
        let cleanup = Cleanup {
            run_id: run_id.clone(),
            image: image.clone(),
        };
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-image.sh");
        let tag = image.clone();
        let out = tokio::task::spawn_blocking(move || Command::new(script).arg(&tag).output())
            .await
            .expect("image build task panicked")
            .expect("cannot run scripts/test-image.sh");
        assert!(
            out.status.success(),
            "scripts/test-image.sh {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let runtime = DockerRuntime::connect(None)
            .await
            .expect("connect to the docker engine");
        Self {
            runtime,
            instance_id: format!("test-{run_id}"),
            run_id,
            image,
            _cleanup: cleanup,
        }
    }

    /// A Docker name unique to this run.
    pub fn name(&self, what: &str) -> String {
        format!("berth-test-{what}-{}", self.run_id)
    }

    /// A spec for `definition` on this fixture's instance.
    pub fn spec(&self, definition: ContainerDefinition) -> ContainerSpec {
        self.spec_for(&self.instance_id, definition)
    }

    /// A spec for `definition` labelled with `instance_id` and this run.
    pub fn spec_for(&self, instance_id: &str, definition: ContainerDefinition) -> ContainerSpec {
        let container = definition.name.clone();
        let labels = BTreeMap::from([
            (LABEL_TASK_ID.to_owned(), format!("task-{}", self.run_id)),
            (LABEL_CONTAINER_NAME.to_owned(), container.clone()),
            (LABEL_TASK_FAMILY.to_owned(), "test".to_owned()),
            (LABEL_INSTANCE_ID.to_owned(), instance_id.to_owned()),
            (LABEL_TEST_RUN.to_owned(), self.run_id.clone()),
        ]);
        ContainerSpec {
            name: self.name(&container),
            labels,
            network_mode: "bridge".to_owned(),
            definition,
            default_stop_timeout: Duration::from_secs(10),
            ..Default::default()
        }
    }

    /// The event stream, once the subscription is in place.
    pub async fn events(&self) -> BoxStream<'static, RuntimeEvent> {
        let mut events = self.runtime.events(&self.instance_id);
        let first = next_event(&mut events, "the first event").await;
        assert_eq!(
            first,
            RuntimeEvent::Resync,
            "the first event must be Resync"
        );
        events
    }
}

/// The next event, within the deadline.
pub async fn next_event(events: &mut BoxStream<'static, RuntimeEvent>, what: &str) -> RuntimeEvent {
    tokio::time::timeout(DEADLINE, events.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
        .expect("the event stream never ends")
}
