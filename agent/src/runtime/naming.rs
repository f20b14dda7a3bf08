//! What berth names and labels on the engine: the labels on every container
//! and volume it creates (SPEC §2) and the Docker names of containers.
//!
//! Invariant: a name or label written here is what adoption, cleanup and
//! `volumesFrom` look for, so both the supervisor and the volume resolver
//! take them from this one module (neither imports the other for them).

/// Labels berth puts on every container it creates (SPEC §2).
pub const LABEL_TASK_ID: &str = "berth.task-id";
pub const LABEL_CONTAINER_NAME: &str = "berth.container-name";
pub const LABEL_TASK_FAMILY: &str = "berth.task-family";
pub const LABEL_INSTANCE_ID: &str = "berth.instance-id";
/// Labels berth puts on every task-scoped volume it creates, next to
/// [`LABEL_TASK_ID`] and [`LABEL_INSTANCE_ID`]: the definition's volume name.
pub const LABEL_VOLUME_NAME: &str = "berth.volume-name";
/// Label of every shared volume berth creates (`1`): only such volumes, or
/// those the policy's `allowed_shared_volumes` names, are mounted.
pub const LABEL_SHARED: &str = "berth.shared";
/// The instance id of the agent that created a shared volume.
pub const LABEL_SHARED_BY: &str = "berth.shared-by";

/// Short task id used in container names.
pub fn short_id(task_id: &str) -> &str {
    task_id.get(..12).unwrap_or(task_id)
}

/// `berth-<family>-<container>-<short task id>`.
pub fn container_name(family: &str, container: &str, task_id: &str) -> String {
    format!("berth-{family}-{container}-{}", short_id(task_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_the_spec() {
        assert_eq!(
            container_name("web", "app", "0123456789abcdef0123"),
            "berth-web-app-0123456789ab"
        );
        assert_eq!(short_id("short"), "short");
    }
}
