//! `DockerRuntime` against the real Docker Engine.
//!
//! Every test makes its own image and run id (`common::Fixture`), labels
//! every container it creates with them and its instance id, and removes what
//! it created when it ends, even on failure. Nothing waits on a clock: tests
//! wait for the engine's events, with a deadline.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_agent::runtime::docker::{DockerRuntime, EVENT_ACTIONS, event_filters};
use berth_agent::runtime::{Health, PullPolicy, RunState, Runtime, RuntimeError, RuntimeEvent};
use berth_taskdef::{ContainerDefinition, HealthCheck, KeyValuePair, PortMapping};
use bollard::query_parameters::EventsOptionsBuilder;
use common::{DEADLINE, Fixture, next_event};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

impl Fixture {
    fn definition(&self, container: &str, command: &[&str]) -> ContainerDefinition {
        ContainerDefinition {
            name: container.to_owned(),
            image: self.image.clone(),
            essential: Some(true),
            command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
            ..Default::default()
        }
    }
}

/// Waits for the first event that `wanted` accepts, skipping others.
async fn wait_for(
    events: &mut BoxStream<'static, RuntimeEvent>,
    what: &str,
    wanted: impl Fn(&RuntimeEvent) -> bool,
) -> RuntimeEvent {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return Some(event);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"));
    found.expect("the event stream never ends")
}

fn docker_inspect(id: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", "--type", "container", id])
        .output()
        .expect("run docker inspect");
    assert!(
        out.status.success(),
        "docker inspect {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    all.pop().expect("docker inspect prints one container")
}

#[tokio::test]
async fn connect_negotiates_the_engine_api_version() {
    let runtime = DockerRuntime::connect(None)
        .await
        .expect("connect to the docker engine");
    runtime.ping().await.expect("ping the engine");

    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .expect("run docker version");
    let engine = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let parse = |v: &str| -> (u32, u32) {
        let (major, minor) = v.split_once('.').expect("version is major.minor");
        (
            major.parse().expect("major version"),
            minor.parse().expect("minor version"),
        )
    };
    assert!(
        parse(&runtime.api_version()) <= parse(&engine),
        "client speaks {} but the engine only {engine}",
        runtime.api_version()
    );

    let missing = "/nonexistent/berth-test/docker.sock";
    match DockerRuntime::connect(Some(missing)).await {
        Err(RuntimeError::Unreachable { endpoint, message }) => {
            assert_eq!(endpoint, missing);
            assert!(!message.is_empty());
        }
        other => panic!("connect to a missing socket: {other:?}"),
    }
}

#[tokio::test]
async fn resync_comes_first() {
    let fx = Fixture::new().await;
    let mut events = fx.runtime.events(&fx.instance_id);
    assert_eq!(
        next_event(&mut events, "Resync").await,
        RuntimeEvent::Resync
    );
}

#[tokio::test]
async fn create_start_exit_and_remove() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;

    let mut def = fx.definition("exit3", &["sh", "-c", "exit 3"]);
    def.environment = vec![KeyValuePair {
        name: "GREETING".to_owned(),
        value: "hello world".to_owned(),
    }];
    def.memory = Some(64);
    let spec = fx.spec(def);
    let id = fx.runtime.create(&spec).await.expect("create");

    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    assert_eq!(info.id, id);
    assert_eq!(info.name, spec.name);
    assert_eq!(info.state, RunState::Created);
    assert_eq!(info.exit_code, None);
    assert_eq!(info.started_at_ms, 0);
    for (key, value) in &spec.labels {
        assert_eq!(info.labels.get(key), Some(value), "label {key}");
    }
    assert!(
        info.image_digest.starts_with("sha256:"),
        "{}",
        info.image_digest
    );

    let raw = docker_inspect(&id);
    let env: Vec<&str> = raw["Config"]["Env"]
        .as_array()
        .expect("Config.Env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert_eq!(
        raw["Config"]["Cmd"],
        serde_json::json!(["sh", "-c", "exit 3"])
    );
    assert_eq!(raw["HostConfig"]["RestartPolicy"]["Name"], "no");
    assert_eq!(raw["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(raw["Config"]["StopTimeout"], 10);

    fx.runtime.start(&id).await.expect("start");
    wait_for(&mut events, "Started", |e| {
        *e == RuntimeEvent::Started { id: id.clone() }
    })
    .await;
    let died = wait_for(
        &mut events,
        "Died",
        |e| matches!(e, RuntimeEvent::Died { id: d, .. } if *d == id),
    )
    .await;
    assert_eq!(
        died,
        RuntimeEvent::Died {
            id: id.clone(),
            exit_code: Some(3)
        }
    );

    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    assert_eq!(info.state, RunState::Exited);
    assert_eq!(info.exit_code, Some(3));
    assert!(info.started_at_ms > 0);
    // Both times are read; their order is not asserted: for a process that
    // exits at once, Docker may record FinishedAt a hair before StartedAt.
    assert!(info.finished_at_ms > 0);
    assert!(!info.oom_killed);

    fx.runtime.remove(&id).await.expect("remove");
    wait_for(&mut events, "Destroyed", |e| {
        *e == RuntimeEvent::Destroyed { id: id.clone() }
    })
    .await;
    assert_eq!(fx.runtime.inspect(&id).await.expect("inspect"), None);
}

#[tokio::test]
async fn stop_kills_a_container_that_ignores_sigterm() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;

    let def = fx.definition("stubborn", &["sh", "-c", "trap '' TERM; sleep 1000 & wait"]);
    let id = fx.runtime.create(&fx.spec(def)).await.expect("create");
    fx.runtime.start(&id).await.expect("start");
    wait_for(&mut events, "Started", |e| {
        *e == RuntimeEvent::Started { id: id.clone() }
    })
    .await;

    fx.runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    let died = wait_for(
        &mut events,
        "Died",
        |e| matches!(e, RuntimeEvent::Died { id: d, .. } if *d == id),
    )
    .await;
    assert_eq!(
        died,
        RuntimeEvent::Died {
            id: id.clone(),
            exit_code: Some(137)
        }
    );
    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    assert_eq!(info.state, RunState::Exited);
    assert_eq!(info.exit_code, Some(137));

    // Stopping what is not running is not an error.
    fx.runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop a stopped container");
}

#[tokio::test]
async fn dynamic_host_port_is_reported() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;

    let mut def = fx.definition("web", &["sleep", "1000"]);
    def.port_mappings = vec![PortMapping {
        container_port: Some(80),
        host_port: Some(0),
        ..Default::default()
    }];
    let id = fx.runtime.create(&fx.spec(def)).await.expect("create");
    fx.runtime.start(&id).await.expect("start");
    wait_for(&mut events, "Started", |e| {
        *e == RuntimeEvent::Started { id: id.clone() }
    })
    .await;

    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    assert_eq!(info.state, RunState::Running);
    assert!(!info.ports.is_empty(), "no published ports: {info:?}");
    for port in &info.ports {
        assert_eq!(port.container_port, 80);
        assert_eq!(port.protocol, "tcp");
        assert_ne!(port.host_port, 0);
    }

    fx.runtime
        .remove(&id)
        .await
        .expect("remove a running container");
    assert_eq!(fx.runtime.inspect(&id).await.expect("inspect"), None);
}

/// A long-running container whose health probe (`true`) runs every second,
/// below ECS' 5 s minimum interval: the runtime passes what it is given.
fn health_checked(fx: &Fixture, name: &str) -> ContainerDefinition {
    let mut def = fx.definition(name, &["sleep", "1000"]);
    def.health_check = Some(HealthCheck {
        command: vec!["CMD-SHELL".to_owned(), "true".to_owned()],
        interval: Some(1),
        timeout: Some(2),
        retries: Some(1),
        start_period: None,
    });
    def
}

#[tokio::test]
async fn health_check_reports_healthy() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;

    let def = health_checked(&fx, "checked");
    let id = fx.runtime.create(&fx.spec(def)).await.expect("create");
    fx.runtime.start(&id).await.expect("start");
    wait_for(&mut events, "Health Healthy", |e| {
        *e == RuntimeEvent::Health {
            id: id.clone(),
            health: Health::Healthy,
        }
    })
    .await;

    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    assert_eq!(info.health, Some(Health::Healthy));
    let raw = docker_inspect(&id);
    assert_eq!(
        raw["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(raw["Config"]["Healthcheck"]["Interval"], 1_000_000_000i64);
}

/// Collects, in a task of its own, the actions of the Engine's own event
/// stream for `filters` (one container's) from `since` (unix seconds) until
/// the container's `die`.
fn engine_actions_until_die(
    engine: &bollard::Docker,
    since: u64,
    filters: HashMap<String, Vec<String>>,
) -> JoinHandle<Vec<String>> {
    let options = EventsOptionsBuilder::new()
        .since(&since.to_string())
        .filters(&filters)
        .build();
    let mut stream = engine.events(Some(options));
    tokio::spawn(async move {
        let collect = async {
            let mut actions = Vec::new();
            while let Some(message) = stream.next().await {
                let action = message.expect("an engine event").action;
                let action = action.expect("an engine event has an action");
                let done = action == "die";
                actions.push(action);
                if done {
                    return actions;
                }
            }
            panic!("the engine's event stream ended before a die: {actions:?}");
        };
        tokio::time::timeout(DEADLINE, collect)
            .await
            .unwrap_or_else(|_| panic!("no die from the engine within {DEADLINE:?}"))
    })
}

#[tokio::test]
async fn health_events_arrive_and_exec_events_are_not_sent() {
    let fx = Fixture::new().await;
    // The Engine's own streams, with the runtime's filters and without its
    // `event` filter, collected from before the container exists (the
    // Engine replays from `since`) while the test goes on.
    let engine = bollard::Docker::connect_with_unix(
        fx.runtime.endpoint(),
        DEADLINE.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
    .expect("connect to the engine")
    .negotiate_version()
    .await
    .expect("negotiate the API version");
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let filters = event_filters(&fx.instance_id);
    let mut without_event_filter = filters.clone();
    assert!(without_event_filter.remove("event").is_some());
    let filtered = engine_actions_until_die(&engine, since, filters);
    let unfiltered = engine_actions_until_die(&engine, since, without_event_filter);
    let mut events = fx.events().await;

    let def = health_checked(&fx, "probed");
    let id = fx.runtime.create(&fx.spec(def)).await.expect("create");
    fx.runtime.start(&id).await.expect("start");
    assert_eq!(
        next_event(&mut events, "Started").await,
        RuntimeEvent::Started { id: id.clone() }
    );
    // Health probes are execs; a health event is delivered all the same.
    wait_for(&mut events, "Health Healthy", |e| match e {
        RuntimeEvent::Health { id: h, .. } if *h == id => {
            *e == RuntimeEvent::Health {
                id: id.clone(),
                health: Health::Healthy,
            }
        }
        other => panic!("only health events before Healthy, got {other:?}"),
    })
    .await;

    let out = Command::new("docker")
        .args(["exec", &id, "true"])
        .output()
        .expect("run docker exec");
    assert!(
        out.status.success(),
        "docker exec {id} true: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fx.runtime
        .stop(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    // The marker: nothing but health events of this container comes first.
    wait_for(&mut events, "Died", |e| match e {
        RuntimeEvent::Died { id: d, .. } if *d == id => true,
        RuntimeEvent::Health { id: h, .. } if *h == id => false,
        other => panic!("an event before Died that is not a health event: {other:?}"),
    })
    .await;

    // The Engine sent the runtime's subscription no exec event…
    let filtered = filtered.await.expect("the filtered collector");
    for action in &filtered {
        assert!(
            EVENT_ACTIONS.iter().any(|a| action.starts_with(a)),
            "the engine sent {action:?}, not one of {EVENT_ACTIONS:?}: {filtered:?}"
        );
    }
    for wanted in ["start", "health_status: healthy", "die"] {
        assert!(
            filtered.iter().any(|a| a == wanted),
            "no {wanted:?} from the engine: {filtered:?}"
        );
    }
    // …though the probes and `docker exec` made some.
    let unfiltered = unfiltered.await.expect("the unfiltered collector");
    for exec in ["exec_create: true", "exec_start: true", "exec_die"] {
        assert!(
            unfiltered.iter().any(|a| a.starts_with(exec)),
            "no {exec:?} without the event filter: {unfiltered:?}"
        );
    }
}

#[tokio::test]
async fn pull_failures_carry_the_engine_message() {
    let fx = Fixture::new().await;

    for policy in [PullPolicy::Always, PullPolicy::Default, PullPolicy::Once] {
        match fx
            .runtime
            .ensure_image("127.0.0.1:1/nope", policy, None)
            .await
        {
            Err(RuntimeError::Pull { image, message }) => {
                assert_eq!(image, "127.0.0.1:1/nope:latest");
                assert!(
                    message.contains("127.0.0.1:1")
                        && (message.contains("connection refused") || message.contains("dial")),
                    "{policy:?}: {message}"
                );
            }
            other => panic!("{policy:?}: pulling from a closed port: {other:?}"),
        }
    }

    // A cached image: used without pulling, or after a failed pull.
    for policy in [
        PullPolicy::Once,
        PullPolicy::PreferCached,
        PullPolicy::Default,
    ] {
        fx.runtime
            .ensure_image(&fx.image, policy, None)
            .await
            .unwrap_or_else(|e| panic!("{policy:?} with a cached image: {e}"));
    }
    // `always` insists on the registry, which does not have our image.
    assert!(matches!(
        fx.runtime
            .ensure_image(&fx.image, PullPolicy::Always, None)
            .await,
        Err(RuntimeError::Pull { .. })
    ));
}

#[tokio::test]
async fn missing_containers_are_not_errors() {
    let fx = Fixture::new().await;
    let missing = format!("berth-test-missing-{}", fx.run_id);
    assert_eq!(fx.runtime.inspect(&missing).await.expect("inspect"), None);
    fx.runtime.remove(&missing).await.expect("remove");
    fx.runtime
        .stop(&missing, Duration::from_secs(1))
        .await
        .expect("stop");
    assert!(matches!(
        fx.runtime.start(&missing).await,
        Err(RuntimeError::NotFound(id)) if id == missing
    ));
}

#[tokio::test]
async fn name_conflict_names_the_container() {
    let fx = Fixture::new().await;
    let spec = fx.spec(fx.definition("twice", &["true"]));
    fx.runtime.create(&spec).await.expect("first create");
    match fx.runtime.create(&spec).await {
        Err(RuntimeError::Engine {
            target, message, ..
        }) => {
            assert_eq!(target, spec.name);
            assert!(message.contains("already in use"), "{message}");
        }
        other => panic!("second create with the same name: {other:?}"),
    }
}

#[tokio::test]
async fn start_failure_is_an_engine_error_and_inspect_keeps_it() {
    let fx = Fixture::new().await;
    let spec = fx.spec(fx.definition("noexec", &["/nonexistent"]));
    let id = fx.runtime.create(&spec).await.expect("create");
    match fx.runtime.start(&id).await {
        Err(RuntimeError::Engine {
            target, message, ..
        }) => {
            assert_eq!(target, id);
            assert!(message.contains("/nonexistent"), "{message}");
        }
        other => panic!("start of a missing executable: {other:?}"),
    }
    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    // The engine leaves it `created`, with its error and exit code 127.
    assert_eq!(info.state, RunState::Created);
    assert_eq!(info.exit_code, Some(127));
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.contains("/nonexistent")),
        "{info:?}"
    );
    assert_eq!(info.started_at_ms, 0);
}

#[tokio::test]
async fn out_of_memory_is_reported() {
    let fx = Fixture::new().await;
    let mut events = fx.events().await;

    let mut def = fx.definition("hog", &["sh", "-c", "x=a; while true; do x=$x$x; done"]);
    def.memory = Some(8);
    let id = fx.runtime.create(&fx.spec(def)).await.expect("create");
    fx.runtime.start(&id).await.expect("start");
    let died = wait_for(
        &mut events,
        "Died",
        |e| matches!(e, RuntimeEvent::Died { id: d, .. } if *d == id),
    )
    .await;
    assert_eq!(
        died,
        RuntimeEvent::Died {
            id: id.clone(),
            exit_code: Some(137)
        }
    );
    let info = fx
        .runtime
        .inspect(&id)
        .await
        .expect("inspect")
        .expect("the container exists");
    assert!(info.oom_killed, "{info:?}");
    assert!(
        info.error
            .as_deref()
            .is_some_and(|e| e.starts_with("OutOfMemoryError")),
        "{info:?}"
    );
}

/// A unix-socket proxy in front of the engine that the test can cut, to
/// make the runtime's event subscription fail as an engine restart would.
fn start_proxy(listen: &std::path::Path, engine: &str) -> JoinHandle<()> {
    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen).expect("bind the proxy socket");
    let engine = engine.to_owned();
    tokio::spawn(async move {
        // Aborting this task drops the set, which closes every connection.
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let engine = engine.clone();
            connections.spawn(async move {
                if let Ok(mut outbound) = UnixStream::connect(&engine).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test]
async fn events_resubscribe_and_replay_the_gap_once() {
    let fx = Fixture::new().await;
    let mut direct = fx.events().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("engine.sock");
    let proxy = start_proxy(&socket, fx.runtime.endpoint());

    let proxied_runtime = DockerRuntime::connect(Some(socket.to_str().expect("utf-8 path")))
        .await
        .expect("connect through the proxy");
    // Drive the proxied stream all the time, as the supervisor would.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut source = proxied_runtime.events(&fx.instance_id);
    let forwarder = tokio::spawn(async move {
        while let Some(event) = source.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let mut proxied: BoxStream<'static, RuntimeEvent> =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed();
    assert_eq!(
        next_event(&mut proxied, "Resync").await,
        RuntimeEvent::Resync
    );

    // An event seen before the cut: the replay after it must not repeat it.
    let before = fx
        .runtime
        .create(&fx.spec(fx.definition("before", &["true"])))
        .await
        .expect("create");
    fx.runtime.start(&before).await.expect("start");
    wait_for(
        &mut proxied,
        "Died before the cut",
        |e| matches!(e, RuntimeEvent::Died { id, .. } if *id == before),
    )
    .await;

    proxy.abort();
    let _ = proxy.await;

    let gap = fx
        .runtime
        .create(&fx.spec(fx.definition("gap", &["sh", "-c", "exit 5"])))
        .await
        .expect("create");
    fx.runtime.start(&gap).await.expect("start");
    wait_for(
        &mut direct,
        "Died in the gap",
        |e| matches!(e, RuntimeEvent::Died { id, .. } if *id == gap),
    )
    .await;

    let proxy = start_proxy(&socket, fx.runtime.endpoint());
    assert_eq!(
        next_event(&mut proxied, "Resync after the cut").await,
        RuntimeEvent::Resync
    );
    assert_eq!(
        next_event(&mut proxied, "replayed Started").await,
        RuntimeEvent::Started { id: gap.clone() }
    );
    assert_eq!(
        next_event(&mut proxied, "replayed Died").await,
        RuntimeEvent::Died {
            id: gap.clone(),
            exit_code: Some(5)
        }
    );

    // Nothing is delivered twice: the next exit seen is a new container's.
    let after = fx
        .runtime
        .create(&fx.spec(fx.definition("after", &["true"])))
        .await
        .expect("create");
    fx.runtime.start(&after).await.expect("start");
    let next_died = wait_for(&mut proxied, "Died after the cut", |e| {
        matches!(e, RuntimeEvent::Died { .. })
    })
    .await;
    assert_eq!(
        next_died,
        RuntimeEvent::Died {
            id: after,
            exit_code: Some(0)
        }
    );

    forwarder.abort();
    proxy.abort();
}
