//! The raw-Docker baseline (bollard, the same client library the agent
//! uses) and Docker's own event timestamps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

/// The label that marks the baseline's containers: `berth.bench-run=<id>`.
pub const BENCH_LABEL: &str = "berth.bench-run";

pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context("cannot reach the Docker Engine")?;
    docker
        .negotiate_version()
        .await
        .context("cannot negotiate the Docker API version")
}

/// What a baseline container looks like: the same image, command and
/// memory limit as the agent's container, on the bridge network, labelled
/// `berth.bench-run=<label>`.
pub fn container_body(
    image: &str,
    command: &[&str],
    label: &str,
    restart_on_failure: bool,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(command.iter().map(|s| s.to_string()).collect()),
        labels: Some(HashMap::from([(
            BENCH_LABEL.to_string(),
            label.to_string(),
        )])),
        stop_timeout: Some(5),
        host_config: Some(HostConfig {
            memory: Some(64 * 1024 * 1024),
            network_mode: Some("bridge".into()),
            restart_policy: Some(RestartPolicy {
                name: Some(if restart_on_failure {
                    RestartPolicyNameEnum::ON_FAILURE
                } else {
                    RestartPolicyNameEnum::NO
                }),
                maximum_retry_count: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// Creates and starts a container; returns its id.
pub async fn create_start(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> anyhow::Result<String> {
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("docker create {name}"))?;
    docker
        .start_container(&created.id, None)
        .await
        .with_context(|| format!("docker start {name}"))?;
    Ok(created.id)
}

/// Whether the container runs now.
pub async fn is_running(docker: &Docker, id: &str) -> anyhow::Result<bool> {
    let info = docker
        .inspect_container(id, None)
        .await
        .with_context(|| format!("docker inspect {id}"))?;
    Ok(info.state.and_then(|s| s.running).unwrap_or(false))
}

/// `docker rm -f`.
pub async fn remove(docker: &Docker, id: &str) -> anyhow::Result<()> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    docker
        .remove_container(id, Some(options))
        .await
        .with_context(|| format!("docker rm -f {id}"))
}

/// One container event as Docker timestamped it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub action: String,
    /// Nanoseconds since the epoch, Docker's clock.
    pub time_nano: i64,
    pub attributes: HashMap<String, String>,
}

/// Container events matching a label, collected in the background from
/// the moment of the call until drop.
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventLog {
    /// Subscribes to container events with `label` (`key=value`).
    pub fn start(docker: &Docker, label: &str) -> EventLog {
        Self::with_filters(
            docker,
            HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("label".to_owned(), vec![label.to_owned()]),
            ]),
        )
    }

    /// Subscribes to exactly the events the agent of `instance_id` asks
    /// Docker for (its own filter, `event_filters`).
    pub fn as_agent(docker: &Docker, instance_id: &str) -> EventLog {
        Self::with_filters(
            docker,
            berth_agent::runtime::docker::event_filters(instance_id),
        )
    }

    fn with_filters(docker: &Docker, filters: HashMap<String, Vec<String>>) -> EventLog {
        // From a second ago: nothing between this call and the subscription
        // is missed (Docker replays events since then).
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1))
            .unwrap_or(0)
            .to_string();
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let mut stream = docker.events(Some(options)).boxed();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let task = tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let actor = m.actor.unwrap_or_default();
                let time_nano = m
                    .time_nano
                    .or_else(|| m.time.map(|s| s * 1_000_000_000))
                    .unwrap_or(0);
                let ev = Event {
                    id: actor.id.unwrap_or_default(),
                    action: m.action.unwrap_or_default(),
                    time_nano,
                    attributes: actor.attributes.unwrap_or_default(),
                };
                if let Ok(mut v) = sink.lock() {
                    v.push(ev);
                }
            }
        });
        EventLog { events, task }
    }

    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One restart: how long from the `die` of a container to its next
/// `start`, in ms, with its index (1 = first restart) and the exit code.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restart {
    pub container: String,
    pub index: usize,
    pub exit_code: String,
    pub ms: f64,
}

/// Every die→start pair per container, in order.
pub fn restarts(events: &[Event]) -> HashMap<String, Vec<Restart>> {
    let mut by_id: HashMap<String, Vec<&Event>> = HashMap::new();
    for e in events {
        if e.action == "die" || e.action == "start" {
            by_id.entry(e.id.clone()).or_default().push(e);
        }
    }
    let mut out = HashMap::new();
    for (id, mut evs) in by_id {
        evs.sort_by_key(|e| e.time_nano);
        let mut list = Vec::new();
        let mut died: Option<&Event> = None;
        for e in evs {
            match e.action.as_str() {
                "die" => died = Some(e),
                "start" => {
                    if let Some(d) = died.take() {
                        list.push(Restart {
                            container: id.clone(),
                            index: list.len() + 1,
                            exit_code: d.attributes.get("exitCode").cloned().unwrap_or_default(),
                            ms: (e.time_nano - d.time_nano) as f64 / 1e6,
                        });
                    }
                }
                _ => {}
            }
        }
        out.insert(id, list);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, action: &str, ms: i64) -> Event {
        Event {
            id: id.into(),
            action: action.into(),
            time_nano: ms * 1_000_000,
            attributes: HashMap::from([("exitCode".to_string(), "1".to_string())]),
        }
    }

    #[test]
    fn pairs_each_die_with_the_next_start() {
        let events = vec![
            ev("a", "start", 0),
            ev("a", "die", 2000),
            ev("b", "start", 10),
            ev("a", "start", 2100),
            ev("a", "die", 4100),
            ev("a", "start", 4400),
            ev("b", "die", 2010),
        ];
        let r = restarts(&events);
        let a: Vec<(usize, f64)> = r["a"].iter().map(|x| (x.index, x.ms)).collect();
        assert_eq!(a, vec![(1, 100.0), (2, 300.0)]);
        assert!(r["b"].is_empty());
    }
}
