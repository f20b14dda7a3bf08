//! The Engine's `/events` stream as a stream of [`RuntimeEvent`]s that never
//! ends ([`EventWatch`]), the filters of its subscription and the mapping of
//! event actions.
//!
//! Invariants: `Resync` is yielded after every (re)subscription, before any
//! event of it; an event replayed by a resubscription (same time, container
//! and action as one already seen) is dropped, so a container exit is
//! reported once; the Engine is asked only for [`EVENT_ACTIONS`], and every
//! action [`event_from_action`] maps is one of them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_proto::text::error_chain;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::stream::{BoxStream, StreamExt};
use tracing::{debug, warn};

use super::NANOS_PER_SEC;
use crate::runtime::{Health, LABEL_INSTANCE_ID, RuntimeEvent};

/// Event-stream reconnection backoff: 100 ms doubling to 5 s.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

type EngineEvents = BoxStream<'static, Result<EventMessage, BollardError>>;

/// The state of one `events()` stream: the subscription, where to resume
/// it, and what to yield next.
pub(super) struct EventWatch {
    docker: Docker,
    endpoint: String,
    instance_id: String,
    stream: Option<EngineEvents>,
    /// Unix nanoseconds: `since` of the next subscription. Set just before
    /// the first subscription, then the time of the newest event seen.
    cursor: Option<i64>,
    /// `(container id, action)` of the events seen at exactly `cursor`, to
    /// drop them when a resubscription replays them.
    seen_at_cursor: HashSet<(String, String)>,
    backoff: Duration,
    delay: Option<Duration>,
    connected_at: Option<Instant>,
    pending: VecDeque<RuntimeEvent>,
}

impl EventWatch {
    /// A watch of the containers labelled `instance_id`, not subscribed yet:
    /// the first [`EventWatch::next_event`] subscribes.
    pub(super) fn new(docker: Docker, endpoint: String, instance_id: String) -> Self {
        Self {
            docker,
            endpoint,
            instance_id,
            stream: None,
            cursor: None,
            seen_at_cursor: HashSet::new(),
            backoff: BACKOFF_INITIAL,
            delay: None,
            connected_at: None,
            pending: VecDeque::new(),
        }
    }

    pub(super) async fn next_event(&mut self) -> RuntimeEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let Some(stream) = self.stream.as_mut() else {
                self.subscribe().await;
                continue;
            };
            match stream.next().await {
                Some(Ok(message)) => self.accept(message),
                Some(Err(e)) => {
                    warn!(endpoint = %self.endpoint, instance_id = %self.instance_id, error = %error_chain(&e), "docker event stream failed; resubscribing");
                    self.lost();
                }
                None => {
                    warn!(endpoint = %self.endpoint, instance_id = %self.instance_id, "docker event stream ended; resubscribing");
                    self.lost();
                }
            }
        }
    }

    /// One subscription attempt. On success `Resync` is queued; on failure
    /// the next attempt waits for the backoff.
    async fn subscribe(&mut self) {
        if let Some(delay) = self.delay.take() {
            tokio::time::sleep(delay).await;
        }
        // The Engine must answer before we claim a subscription.
        if let Err(e) = self.docker.ping().await {
            // Warn once per outage; the retries of a long outage are debug.
            if self.backoff <= BACKOFF_INITIAL * 2 {
                warn!(endpoint = %self.endpoint, error = %error_chain(&e), "docker engine unreachable for events; retrying");
            } else {
                debug!(endpoint = %self.endpoint, error = %error_chain(&e), retry_in_ms = self.backoff.as_millis() as u64, "docker engine still unreachable for events");
            }
            self.failed();
            return;
        }
        let since = *self.cursor.get_or_insert_with(unix_nanos_now);
        let filters = event_filters(&self.instance_id);
        let options = EventsOptionsBuilder::new()
            .since(&format_since(since))
            .filters(&filters)
            .build();
        let mut stream = self.docker.events(Some(options)).boxed();
        // Send the request now; an immediate refusal is not a subscription.
        // Anything from `since` on is replayed, so once the request is on its
        // way nothing the caller does after `Resync` can be missed.
        match futures_util::poll!(stream.next()) {
            Poll::Ready(Some(Err(e))) => {
                warn!(endpoint = %self.endpoint, error = %error_chain(&e), "docker refused the event subscription");
                self.failed();
                return;
            }
            Poll::Ready(None) => {
                self.failed();
                return;
            }
            Poll::Ready(Some(Ok(message))) => {
                self.pending.push_back(RuntimeEvent::Resync);
                self.accept(message);
            }
            Poll::Pending => self.pending.push_back(RuntimeEvent::Resync),
        }
        debug!(endpoint = %self.endpoint, instance_id = %self.instance_id, since = %format_since(since), "subscribed to docker events");
        self.stream = Some(stream);
        self.connected_at = Some(Instant::now());
    }

    fn accept(&mut self, message: EventMessage) {
        let time = message
            .time_nano
            .or_else(|| message.time.map(|s| s.saturating_mul(NANOS_PER_SEC)));
        if let Some(time) = time {
            let key = (
                message
                    .actor
                    .as_ref()
                    .and_then(|a| a.id.clone())
                    .unwrap_or_default(),
                message.action.clone().unwrap_or_default(),
            );
            match self.cursor {
                Some(cursor) if time == cursor => {
                    if !self.seen_at_cursor.insert(key) {
                        debug!(time, "dropping replayed docker event");
                        return;
                    }
                }
                Some(cursor) if time < cursor => {}
                _ => {
                    self.cursor = Some(time);
                    self.seen_at_cursor.clear();
                    self.seen_at_cursor.insert(key);
                }
            }
        }
        if let Some(event) = runtime_event(&message) {
            debug!(?event, "docker event");
            self.pending.push_back(event);
        }
    }

    fn lost(&mut self) {
        self.stream = None;
        // A subscription that lived a while starts the backoff afresh.
        if self
            .connected_at
            .take()
            .is_some_and(|at| at.elapsed() >= BACKOFF_MAX)
        {
            self.backoff = BACKOFF_INITIAL;
        }
        self.failed();
    }

    fn failed(&mut self) {
        self.delay = Some(self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

const ACTION_START: &str = "start";
const ACTION_DIE: &str = "die";
const ACTION_DESTROY: &str = "destroy";
/// Docker's actions are `health_status: healthy`, `: unhealthy` and
/// `: starting`; as an `event` filter value this prefix matches them all.
const ACTION_HEALTH_STATUS: &str = "health_status";

/// The container event actions `event_from_action` maps, and the only ones
/// the event subscription asks the Engine for (its `event` filter): the
/// Engine sends nothing else, in particular not the `exec_create`,
/// `exec_start` and `exec_die` of every health-check probe.
///
/// When the values of an `event` filter include `health_status`,
/// `exec_create` or `exec_start` without a colon, the Engine matches every
/// value as a prefix of the action (moby's `daemon/events/filter.go`, moby
/// issue 25798), so `health_status` stands for the three health actions; no
/// other container action starts with `start`, `die` or `destroy`.
pub const EVENT_ACTIONS: [&str; 4] = [
    ACTION_START,
    ACTION_DIE,
    ACTION_DESTROY,
    ACTION_HEALTH_STATUS,
];

/// The Engine `/events` filters of an instance's subscription: containers
/// labelled with `instance_id`, actions [`EVENT_ACTIONS`] only.
pub fn event_filters(instance_id: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "label".to_owned(),
            vec![format!("{LABEL_INSTANCE_ID}={instance_id}")],
        ),
        (
            "event".to_owned(),
            EVENT_ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
        ),
    ])
}

/// What an Engine event means for berth; `None` for events berth ignores
/// (`exec_*`, `create`, `kill`, `stop`, `attach`, …), which
/// [`EVENT_ACTIONS`] keeps the Engine from sending in the first place.
pub(crate) fn runtime_event(message: &EventMessage) -> Option<RuntimeEvent> {
    if let Some(typ) = message.typ
        && typ != EventMessageTypeEnum::CONTAINER
    {
        return None;
    }
    let actor = message.actor.as_ref()?;
    let id = actor.id.clone().filter(|id| !id.is_empty())?;
    let exit_code = actor
        .attributes
        .as_ref()
        .and_then(|a| a.get("exitCode"))
        .map(String::as_str);
    event_from_action(id, message.action.as_deref()?, exit_code)
}

/// Maps an event action (`start`, `die`, `health_status: healthy`, …).
pub(crate) fn event_from_action(
    id: String,
    action: &str,
    exit_code: Option<&str>,
) -> Option<RuntimeEvent> {
    // Every action matched here must be one of `EVENT_ACTIONS`, or the
    // Engine never sends it (`every_mapped_action_passes_the_event_filter`).
    match action {
        ACTION_START => Some(RuntimeEvent::Started { id }),
        ACTION_DIE => Some(RuntimeEvent::Died {
            id,
            exit_code: exit_code.and_then(|c| c.trim().parse().ok()),
        }),
        ACTION_DESTROY => Some(RuntimeEvent::Destroyed { id }),
        _ => {
            let status = action.strip_prefix(ACTION_HEALTH_STATUS)?;
            let status = status.strip_prefix(':').unwrap_or(status).trim();
            let health = match status {
                "healthy" => Health::Healthy,
                "unhealthy" => Health::Unhealthy,
                "starting" => Health::Starting,
                _ => return None,
            };
            Some(RuntimeEvent::Health { id, health })
        }
    }
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Docker's `since`: `seconds.nanoseconds`.
fn format_since(unix_nanos: i64) -> String {
    format!(
        "{}.{:09}",
        unix_nanos.div_euclid(NANOS_PER_SEC),
        unix_nanos.rem_euclid(NANOS_PER_SEC)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::docker::tests::offline_docker;
    use bollard::models::EventActor;

    #[test]
    fn event_actions_map_to_runtime_events() {
        let id = || "c1".to_owned();
        assert_eq!(
            event_from_action(id(), "start", None),
            Some(RuntimeEvent::Started { id: id() })
        );
        assert_eq!(
            event_from_action(id(), "die", Some("137")),
            Some(RuntimeEvent::Died {
                id: id(),
                exit_code: Some(137)
            })
        );
        assert_eq!(
            event_from_action(id(), "die", None),
            Some(RuntimeEvent::Died {
                id: id(),
                exit_code: None
            })
        );
        assert_eq!(
            event_from_action(id(), "health_status: healthy", None),
            Some(RuntimeEvent::Health {
                id: id(),
                health: Health::Healthy
            })
        );
        assert_eq!(
            event_from_action(id(), "health_status: unhealthy", None),
            Some(RuntimeEvent::Health {
                id: id(),
                health: Health::Unhealthy
            })
        );
        assert_eq!(
            event_from_action(id(), "health_status: starting", None),
            Some(RuntimeEvent::Health {
                id: id(),
                health: Health::Starting
            })
        );
        assert_eq!(
            event_from_action(id(), "destroy", None),
            Some(RuntimeEvent::Destroyed { id: id() })
        );
        for ignored in [
            "exec_die",
            "exec_start: sh -c true",
            "exec_create: sh -c true",
            "create",
            "kill",
            "stop",
            "attach",
            "health_status: running",
        ] {
            assert_eq!(
                event_from_action(id(), ignored, Some("0")),
                None,
                "{ignored}"
            );
        }
    }

    /// Every container action of moby's `daemon` package, as the Engine
    /// writes it (exec actions carry the command after a colon, except
    /// `exec_die`).
    const ENGINE_CONTAINER_ACTIONS: &[&str] = &[
        "attach",
        "commit",
        "copy",
        "create",
        "destroy",
        "detach",
        "die",
        "exec_create: sh -c true",
        "exec_detach",
        "exec_die",
        "exec_start: sh -c true",
        "export",
        "health_status: healthy",
        "health_status: unhealthy",
        "health_status: starting",
        "kill",
        "oom",
        "pause",
        "rename",
        "resize",
        "restart",
        "start",
        "stop",
        "top",
        "unpause",
        "update",
        "prune",
    ];

    /// The Engine's `event` filter match (moby `daemon/events/filter.go`):
    /// exact, or by prefix when a value is `health_status`, `exec_create`
    /// or `exec_start`.
    fn engine_filter_passes(values: &[String], action: &str) -> bool {
        let fuzzy = values
            .iter()
            .any(|v| ["health_status", "exec_create", "exec_start"].contains(&v.as_str()));
        values
            .iter()
            .any(|v| v == action || (fuzzy && action.starts_with(v.as_str())))
    }

    #[test]
    fn every_mapped_action_passes_the_event_filter() {
        let filters = event_filters("i-1");
        assert_eq!(filters.get("type"), Some(&vec!["container".to_owned()]));
        assert_eq!(
            filters.get("label"),
            Some(&vec![format!("{LABEL_INSTANCE_ID}=i-1")])
        );
        let values = filters.get("event").expect("an event filter");
        assert_eq!(values, &EVENT_ACTIONS.map(str::to_owned).to_vec());
        // The Engine sends exactly the actions the mapping handles: none is
        // lost to the filter, and nothing it would discard is sent.
        for action in ENGINE_CONTAINER_ACTIONS {
            let mapped = event_from_action("c1".to_owned(), action, Some("0")).is_some();
            assert_eq!(
                engine_filter_passes(values, action),
                mapped,
                "{action}: the event filter and event_from_action disagree"
            );
        }
        // And every value of the filter stands for an action that is mapped.
        for value in EVENT_ACTIONS {
            assert!(
                ENGINE_CONTAINER_ACTIONS.iter().any(|action| {
                    action.starts_with(value)
                        && event_from_action("c1".to_owned(), action, None).is_some()
                }),
                "{value} in EVENT_ACTIONS maps no engine action"
            );
        }
    }

    #[test]
    fn engine_messages_map_through_type_and_actor() {
        let message = EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some("die".to_owned()),
            actor: Some(EventActor {
                id: Some("abc".to_owned()),
                attributes: Some(HashMap::from([("exitCode".to_owned(), "3".to_owned())])),
            }),
            ..Default::default()
        };
        assert_eq!(
            runtime_event(&message),
            Some(RuntimeEvent::Died {
                id: "abc".to_owned(),
                exit_code: Some(3)
            })
        );
        let network = EventMessage {
            typ: Some(EventMessageTypeEnum::NETWORK),
            ..message.clone()
        };
        assert_eq!(runtime_event(&network), None);
        let no_actor = EventMessage {
            actor: None,
            ..message
        };
        assert_eq!(runtime_event(&no_actor), None);
    }

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        assert_eq!(
            format_since(1_714_566_896_000_000_001),
            "1714566896.000000001"
        );
        assert_eq!(format_since(0), "0.000000000");
    }

    #[test]
    fn replayed_events_are_dropped_once_seen() -> Result<(), BollardError> {
        let mut watch = EventWatch {
            docker: offline_docker()?,
            endpoint: "/nowhere.sock".to_owned(),
            instance_id: "i-1".to_owned(),
            stream: None,
            cursor: Some(100),
            seen_at_cursor: HashSet::new(),
            backoff: BACKOFF_INITIAL,
            delay: None,
            connected_at: None,
            pending: VecDeque::new(),
        };
        let event = |id: &str, action: &str, time_nano: i64| EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: Some(HashMap::from([("exitCode".to_owned(), "0".to_owned())])),
            }),
            time: Some(time_nano / NANOS_PER_SEC),
            time_nano: Some(time_nano),
            ..Default::default()
        };
        watch.accept(event("a", "start", 100));
        watch.accept(event("a", "die", 200));
        watch.accept(event("b", "die", 200));
        // A resubscription with since = 200 replays both events at 200.
        watch.accept(event("a", "die", 200));
        watch.accept(event("b", "die", 200));
        watch.accept(event("a", "destroy", 300));
        let got: Vec<RuntimeEvent> = watch.pending.drain(..).collect();
        assert_eq!(
            got,
            vec![
                RuntimeEvent::Started { id: "a".into() },
                RuntimeEvent::Died {
                    id: "a".into(),
                    exit_code: Some(0)
                },
                RuntimeEvent::Died {
                    id: "b".into(),
                    exit_code: Some(0)
                },
                RuntimeEvent::Destroyed { id: "a".into() },
            ]
        );
        assert_eq!(watch.cursor, Some(300));
        Ok(())
    }

    #[test]
    fn backoff_doubles_to_five_seconds_and_resets_after_a_long_subscription()
    -> Result<(), BollardError> {
        let mut watch = EventWatch {
            docker: offline_docker()?,
            endpoint: "/nowhere.sock".to_owned(),
            instance_id: "i-1".to_owned(),
            stream: None,
            cursor: None,
            seen_at_cursor: HashSet::new(),
            backoff: BACKOFF_INITIAL,
            delay: None,
            connected_at: None,
            pending: VecDeque::new(),
        };
        let mut delays = Vec::new();
        for _ in 0..8 {
            watch.failed();
            delays.extend(watch.delay.take());
        }
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        watch.connected_at = Instant::now().checked_sub(BACKOFF_MAX);
        watch.lost();
        assert_eq!(watch.delay, Some(BACKOFF_INITIAL));
        Ok(())
    }
}
