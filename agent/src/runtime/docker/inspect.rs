//! The Engine's inspect answer → [`ContainerInfo`] ([`container_info`]),
//! and Docker's times.
//!
//! Invariants: a container that failed to start (still `created`, with an
//! error) carries its exit code; an OOM kill carries ECS's reason; Docker's
//! zero time (`0001-01-01T00:00:00Z`: never started / never finished) and
//! any unparsable time are 0, never an error.

use std::collections::BTreeMap;

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::debug;

use super::ports::port_bindings;
use super::reference::{normalize_image_reference, repository_of};
use crate::runtime::{ContainerInfo, Health, RunState};

/// What ECS reports for a container the kernel killed for memory.
const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// Docker's zero time: the container never started / never finished.
const ZERO_TIME_PREFIX: &str = "0001-01-01T00:00:00";

/// `Err` only when the Engine's answer lacks the container id.
pub(crate) fn container_info(
    response: ContainerInspectResponse,
    image_digest: String,
) -> Result<ContainerInfo, String> {
    let id = response
        .id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| "the engine's answer has no container id".to_owned())?;
    let name = response
        .name
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let labels: BTreeMap<String, String> = response
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let state = response.state.unwrap_or_default();
    let run_state = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => RunState::Exited,
        Some(
            ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::REMOVING
            | ContainerStateStatusEnum::STOPPING,
        ) => RunState::Other,
        Some(ContainerStateStatusEnum::EMPTY) | None => {
            if state.running == Some(true) {
                RunState::Running
            } else {
                RunState::Other
            }
        }
    };
    let oom_killed = state.oom_killed.unwrap_or(false);
    let error = state
        .error
        .filter(|e| !e.is_empty())
        .or_else(|| oom_killed.then(|| OOM_REASON.to_owned()));
    let health = state
        .health
        .and_then(|h| h.status)
        .and_then(|status| match status {
            HealthStatusEnum::STARTING => Some(Health::Starting),
            HealthStatusEnum::HEALTHY => Some(Health::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
            HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
        });
    let ports = response
        .network_settings
        .and_then(|n| n.ports)
        .map(|ports| port_bindings(&ports))
        .unwrap_or_default();
    // A container that failed to start stays `created`, with the engine's
    // error and an exit code (127 for a missing executable).
    let failed_to_start = run_state == RunState::Created && error.is_some();
    let exit_code = (run_state == RunState::Exited || failed_to_start)
        .then_some(state.exit_code)
        .flatten();
    Ok(ContainerInfo {
        id,
        name,
        labels,
        state: run_state,
        exit_code,
        error,
        oom_killed,
        health,
        image_digest,
        ports,
        started_at_ms: state.started_at.as_deref().map_or(0, docker_time_ms),
        finished_at_ms: state.finished_at.as_deref().map_or(0, docker_time_ms),
    })
}

/// Prefers the repo digest of the repository the container was created from.
pub(super) fn pick_repo_digest(
    repo_digests: &[String],
    configured: Option<&str>,
) -> Option<String> {
    let wanted = configured.map(|image| repository_of(&normalize_image_reference(image)));
    wanted
        .and_then(|repo| {
            repo_digests
                .iter()
                .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
        })
        .or_else(|| repo_digests.first())
        .cloned()
}

/// Docker's times (`StartedAt`, `FinishedAt`) as unix milliseconds; Docker's
/// zero time and anything unparsable are 0.
pub(crate) fn docker_time_ms(text: &str) -> i64 {
    if text.is_empty() || text.starts_with(ZERO_TIME_PREFIX) {
        return 0;
    }
    match parse_rfc3339_ms(text) {
        Some(ms) => ms.max(0),
        None => {
            debug!(time = text, "cannot parse docker time");
            0
        }
    }
}

/// Parses an RFC 3339 date-time (`2024-05-01T12:34:56.123456789Z`,
/// `…+02:00`) into unix milliseconds. Fractions beyond milliseconds are
/// truncated.
pub(crate) fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::runtime::LABEL_INSTANCE_ID;

    #[test]
    fn rfc3339_parses_docker_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:34:56.123456789Z"),
            Some(1_714_566_896_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T14:34:56.5+02:00"),
            Some(1_714_566_896_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T10:04:56-02:30"),
            Some(1_714_566_896_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T23:59:59Z"),
            Some(951_868_799_000)
        );
        assert_eq!(parse_rfc3339_ms("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:34:56"), None);
        assert_eq!(parse_rfc3339_ms("2024-05-01T12:34:56.Z"), None);
        assert_eq!(parse_rfc3339_ms("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        assert_eq!(docker_time_ms("0001-01-01T00:00:00Z"), 0);
        assert_eq!(docker_time_ms(""), 0);
        assert_eq!(docker_time_ms("not a time"), 0);
        assert_eq!(
            docker_time_ms("2024-05-01T12:34:56.123Z"),
            1_714_566_896_123
        );
    }

    #[test]
    fn inspect_maps_state_times_and_oom() -> Result<(), String> {
        use bollard::models::{ContainerConfig, ContainerState};
        let response = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/berth-web-app-1".into()),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(LABEL_INSTANCE_ID.into(), "i-1".into())])),
                ..Default::default()
            }),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::EXITED),
                oom_killed: Some(true),
                exit_code: Some(137),
                error: Some(String::new()),
                started_at: Some("2024-05-01T12:34:56.123456789Z".into()),
                finished_at: Some("2024-05-01T12:34:57.5Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = container_info(response, "sha256:img".into())?;
        assert_eq!(info.name, "berth-web-app-1");
        assert_eq!(info.state, RunState::Exited);
        assert_eq!(info.exit_code, Some(137));
        assert!(info.oom_killed);
        assert_eq!(info.error.as_deref(), Some(OOM_REASON));
        assert_eq!(info.started_at_ms, 1_714_566_896_123);
        assert_eq!(info.finished_at_ms, 1_714_566_897_500);
        assert_eq!(
            info.labels.get(LABEL_INSTANCE_ID).map(String::as_str),
            Some("i-1")
        );

        let never_started = ContainerInspectResponse {
            id: Some("def".into()),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(127),
                error: Some("exec: \"/nope\": no such file or directory".into()),
                started_at: Some("0001-01-01T00:00:00Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let info = container_info(never_started, String::new())?;
        assert_eq!(info.state, RunState::Created);
        assert_eq!(info.exit_code, Some(127));
        assert_eq!((info.started_at_ms, info.finished_at_ms), (0, 0));

        let created = ContainerInspectResponse {
            id: Some("ghi".into()),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::CREATED),
                exit_code: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(container_info(created, String::new())?.exit_code, None);
        assert!(container_info(ContainerInspectResponse::default(), String::new()).is_err());
        Ok(())
    }

    #[test]
    fn the_digest_of_the_configured_repository_is_preferred() {
        assert_eq!(
            pick_repo_digest(
                &["other/x@sha256:1".to_owned(), "busybox@sha256:2".to_owned()],
                Some("busybox")
            ),
            Some("busybox@sha256:2".to_owned())
        );
        assert_eq!(pick_repo_digest(&[], Some("busybox")), None);
    }
}
