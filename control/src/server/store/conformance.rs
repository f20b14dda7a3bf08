//! The store conformance suite: what every backend must do, as functions
//! generic over the store. A backend's tests call each one with an opener
//! that returns a new handle (its own connection) on one database, so that
//! concurrent calls race in the database, not behind one lock.
//!
//! Every check asserts an outcome that a lost update or a half-applied
//! change would break: exactly one winner, a value that only grows, a
//! total that never exceeds a capacity.

use std::collections::{BTreeMap, HashSet};
use std::sync::Barrier;

use berth_proto::v1::{TaskEvent, TaskState};

use super::*;
use crate::server::placement::{Need, PlacementError};
use crate::server::scheduler::{ScheduleError, place_and_insert};

/// Opens a new handle on the database under test.
pub(crate) type Opener<'a> = &'a (dyn Fn() -> Box<dyn Store> + Sync);

/// How many threads race in each concurrent check.
const RACERS: usize = 8;

pub(crate) fn activation(id: &str) -> ActivationRecord {
    ActivationRecord {
        id: id.into(),
        code_hash: "00".repeat(32),
        created_at_ms: 1,
        expires_at_ms: i64::MAX,
        used_at_ms: None,
        instance_id: None,
        hostname: None,
        source_cidrs: Vec::new(),
        cluster: DEFAULT_CLUSTER.into(),
    }
}

fn new_instance(id: &str) -> NewInstance {
    NewInstance {
        instance_id: id.into(),
        hostname: "h".into(),
        registered_at_ms: 10,
        cpu: 4096,
        memory_mib: 1024,
        ..NewInstance::default()
    }
}

/// Enrolls `id` with 4096 CPU units and 1024 MiB, reported by a Hello.
fn enrolled(s: &dyn Store, id: &str) {
    let act = format!("act-{id}");
    s.create_activation(&activation(&act)).expect("activation");
    s.enroll(&act, 10, &new_instance(id)).expect("enroll");
    s.record_hello(
        id,
        &HelloRecord {
            hostname: "h".into(),
            cpu: 4096,
            memory_mib: 1024,
            at_ms: 11,
            ..HelloRecord::default()
        },
    )
    .expect("hello");
}

fn task(id: &str, instance_id: &str, memory_mib: i64) -> TaskRecord {
    TaskRecord {
        task_id: id.into(),
        instance_id: instance_id.into(),
        family: "web".into(),
        definition_json: "{}".into(),
        desired_status: RUNNING.into(),
        last_status: PENDING.into(),
        health_status: "UNKNOWN".into(),
        created_at_ms: 1,
        reserved_cpu: 1,
        reserved_memory_mib: memory_mib,
        ..TaskRecord::default()
    }
}

fn event(seq: u64, task_id: &str, last_status: &str) -> TaskEvent {
    TaskEvent {
        sequence: seq,
        task: Some(TaskState {
            task_id: task_id.into(),
            family: "web".into(),
            last_status: last_status.into(),
            desired_status: RUNNING.into(),
            ..TaskState::default()
        }),
        at_ms: 5,
    }
}

/// Runs `f(i)` on [`RACERS`] threads, each with its own handle, released
/// at once.
fn race<T: Send>(open: Opener<'_>, f: impl Fn(&dyn Store, usize) -> T + Sync) -> Vec<T> {
    let stores: Vec<Box<dyn Store>> = (0..RACERS).map(|_| open()).collect();
    let start = Barrier::new(RACERS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (start, f) = (&start, &f);
                scope.spawn(move || {
                    start.wait();
                    f(s.as_ref(), i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer panicked"))
            .collect()
    })
}

pub(crate) fn an_activation_is_used_once_under_concurrency(open: Opener<'_>) {
    let s = open();
    s.create_activation(&activation("act")).expect("activation");
    let results = race(open, |s, i| {
        s.enroll("act", 10, &new_instance(&format!("i-{i}")))
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one enrollment wins: {results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(e, StoreError::ActivationUsed(_)),
            "a loser is told the activation was used: {e}"
        );
    }
    let instances = s.instances().expect("instances");
    assert_eq!(instances.len(), 1, "the losers stored no instance");
    let a = s.activation("act").expect("get").expect("exists");
    assert_eq!(
        a.instance_id.as_deref(),
        Some(instances[0].instance_id.as_str())
    );
}

pub(crate) fn an_event_is_applied_at_most_once_under_concurrency(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    s.insert_task(&task("t1", "i-1", 64)).expect("insert");
    let results = race(open, |s, _| {
        s.apply_event("i-1", &event(1, "t1", RUNNING), 100)
            .expect("event")
    });
    assert_eq!(
        results.iter().filter(|o| o.applied).count(),
        1,
        "{results:?}"
    );
    let i = s.instance("i-1").expect("get").expect("exists");
    assert_eq!(i.last_event_seq, 1);
    let t = s.task("t1").expect("get").expect("exists");
    assert_eq!(t.last_status, RUNNING);
}

pub(crate) fn every_change_of_the_desired_set_bumps_the_generation_once(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    let before = s.assignment("i-1").expect("a").generation;
    let generations = race(open, |s, i| {
        s.insert_task(&task(&format!("t{i}"), "i-1", 1))
            .expect("insert")
    });
    let after = s.assignment("i-1").expect("a");
    assert_eq!(after.generation, before + RACERS as u64);
    assert_eq!(after.tasks.len(), RACERS);
    let distinct: HashSet<u64> = generations.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        RACERS,
        "each insert got its own generation: {generations:?}"
    );
    let stops = race(open, |s, i| {
        s.stop_task(&format!("t{i}"), "UserInitiated", "test")
            .expect("stop")
            .1
    });
    assert!(stops.iter().all(|changed| *changed));
    assert_eq!(
        s.assignment("i-1").expect("a").generation,
        before + 2 * RACERS as u64
    );
}

pub(crate) fn a_stop_racing_an_event_is_not_undone(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    for n in 0..RACERS {
        s.insert_task(&task(&format!("t{n}"), "i-1", 1))
            .expect("insert");
    }
    // Half the racers stop a task, half report it RUNNING.
    let results = race(open, |s, i| {
        let t = format!("t{}", i / 2);
        if i % 2 == 0 {
            s.stop_task(&t, "UserInitiated", "test").map(|_| ())
        } else {
            s.apply_event("i-1", &event(i as u64 + 1, &t, RUNNING), 100)
                .map(|_| ())
        }
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for n in 0..RACERS / 2 {
        let t = s.task(&format!("t{n}")).expect("get").expect("exists");
        assert_eq!(t.desired_status, STOPPED, "the stop of t{n} was undone");
        assert_eq!(t.stop_code, "UserInitiated");
    }
}

pub(crate) fn concurrent_placements_never_over_commit_an_instance(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    let connected: HashSet<String> = ["i-1".to_owned()].into();
    // 1024 MiB: room for four tasks of 256.
    let need = Need {
        cpu: 1,
        memory_mib: 256,
    };
    let results = race(open, |s, i| {
        place_and_insert(
            s,
            task(&format!("t{i}"), "", need.memory_mib),
            need,
            None,
            &connected,
        )
    });
    let placed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(placed, 4, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(e, ScheduleError::Placement(PlacementError::NoneFits { .. })),
            "a refused task is refused for room: {e}"
        );
    }
    let usage = s.usage().expect("usage");
    assert_eq!(usage.get("i-1").map(|u| u.memory_mib), Some(1024));
}

pub(crate) fn deregistration_is_once_and_stops_every_task(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    for n in 0..3 {
        s.insert_task(&task(&format!("t{n}"), "i-1", 1))
            .expect("insert");
    }
    let generation = s.assignment("i-1").expect("a").generation;
    let results = race(open, |s, _| {
        s.deregister_instance("i-1", "UserInitiated", "Instance deregistered")
            .expect("deregister")
    });
    assert!(results.iter().all(|i| i.status == INACTIVE));
    assert_eq!(
        s.assignment("i-1").expect("a").generation,
        generation + 1,
        "one deregistration stopped the tasks, with one bump"
    );
    for t in s.tasks(Some("i-1")).expect("tasks") {
        assert_eq!(t.desired_status, STOPPED);
    }
    assert!(matches!(
        s.record_heartbeat("i-1", 50),
        Err(StoreError::InstanceInactive(_))
    ));
    assert!(matches!(
        s.apply_event("i-1", &event(9, "t0", RUNNING), 100),
        Err(StoreError::InstanceInactive(_))
    ));
}

pub(crate) fn constraint_violations_are_conflicts(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    s.insert_task(&task("t1", "i-1", 1)).expect("insert");
    assert!(matches!(
        s.insert_task(&task("t1", "i-1", 1)),
        Err(StoreError::TaskExists(id)) if id == "t1"
    ));
    // A second enrollment under an instance id already taken.
    s.create_activation(&activation("act-2"))
        .expect("activation");
    let e = s
        .enroll("act-2", 10, &new_instance("i-1"))
        .expect_err("duplicate instance");
    assert!(
        matches!(e, StoreError::Conflict { op: "enroll", .. }),
        "{e}"
    );
    let a = s.activation("act-2").expect("get").expect("exists");
    assert_eq!(a.used_at_ms, None, "the failed enrollment left nothing");
    // Placement against a stale generation.
    let generation = s.assignment("i-1").expect("a").generation;
    s.insert_task(&task("t2", "i-1", 1)).expect("insert");
    let e = s
        .insert_task_at(&task("t3", "i-1", 1), generation)
        .expect_err("stale");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(s.task("t3").expect("get").is_none());
    assert!(matches!(
        s.insert_task_at(&task("t4", "nope", 1), 1),
        Err(StoreError::NoInstance(_))
    ));
}

pub(crate) fn listings_filter_by_instance(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    enrolled(s.as_ref(), "i-2");
    s.insert_task(&task("a", "i-1", 1)).expect("insert");
    s.insert_task(&task("b", "i-2", 1)).expect("insert");
    let ids = |f: Option<&str>| -> Vec<String> {
        let mut v: Vec<String> = s
            .tasks(f)
            .expect("tasks")
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(None), ["a", "b"]);
    assert_eq!(ids(Some("i-2")), ["b"]);
    assert!(ids(Some("i-3")).is_empty());
    let snapshot = s.placement_snapshot().expect("snapshot");
    assert_eq!(snapshot.instances.len(), 2);
    assert_eq!(snapshot.usage.get("i-1").map(|u| u.pending), Some(1));
}

pub(crate) fn registry_revisions_count_up_per_family_and_reuse_equal_content(open: Opener<'_>) {
    let s = open();
    let (a1, reused) = s
        .register_task_definition("web", "{\"v\":1}", true, 100)
        .expect("register");
    assert_eq!(
        (a1.revision, reused, a1.status.as_str()),
        (1, false, ACTIVE)
    );
    assert_eq!(a1.name(), "web:1");
    let (again, reused) = s
        .register_task_definition("web", "{\"v\":1}", true, 200)
        .expect("again");
    assert!(reused, "equal content is the latest revision");
    assert_eq!(again, a1, "a reused revision is returned unchanged");
    let (forced, reused) = s
        .register_task_definition("web", "{\"v\":1}", false, 300)
        .expect("without reuse");
    assert_eq!((forced.revision, reused), (2, false));
    let (other, _) = s
        .register_task_definition("db", "{\"v\":1}", true, 300)
        .expect("another family");
    assert_eq!(other.revision, 1, "revisions count per family");
    let (changed, reused) = s
        .register_task_definition("web", "{\"v\":2}", true, 400)
        .expect("changed");
    assert_eq!((changed.revision, reused), (3, false));
    // The latest ACTIVE revision, or a given one.
    let latest = s
        .task_definition("web", None)
        .expect("get")
        .expect("exists");
    assert_eq!(latest, changed);
    let one = s
        .task_definition("web", Some(1))
        .expect("get")
        .expect("exists");
    assert_eq!(one.definition_json, "{\"v\":1}");
    assert_eq!(one.registered_at_ms, 100);
    assert!(s.task_definition("web", Some(9)).expect("get").is_none());
    assert!(s.task_definition("nope", None).expect("get").is_none());
    // Bad input is refused before anything is stored.
    for bad in ["", "a:b", "a b"] {
        let e = s
            .register_task_definition(bad, "{}", true, 1)
            .expect_err("bad family");
        assert!(
            matches!(e, StoreError::Registry(RegistryError::Family(_))),
            "{e}"
        );
    }
    let big = "x".repeat(berth_taskdef::MAX_DEFINITION_BYTES + 1);
    assert!(matches!(
        s.register_task_definition("web", &big, true, 1),
        Err(StoreError::Registry(RegistryError::TooLarge(_)))
    ));
    assert_eq!(
        s.task_definitions(None, StatusFilter::All)
            .expect("list")
            .len(),
        4
    );
}

pub(crate) fn registry_deregistration_is_idempotent_and_filters_listings(open: Opener<'_>) {
    let s = open();
    for v in 1..=3 {
        s.register_task_definition("web", &format!("{{\"v\":{v}}}"), true, v)
            .expect("register");
    }
    s.register_task_definition("api", "{}", true, 1)
        .expect("register");
    let d = s
        .deregister_task_definition("web", 3, 50)
        .expect("deregister");
    assert_eq!((d.status.as_str(), d.deregistered_at_ms), (INACTIVE, 50));
    let again = s
        .deregister_task_definition("web", 3, 60)
        .expect("deregister again");
    assert_eq!(again.deregistered_at_ms, 50, "the first time is kept");
    assert!(matches!(
        s.deregister_task_definition("web", 7, 60),
        Err(StoreError::Registry(RegistryError::NotFound(n))) if n == "web:7"
    ));
    // The latest ACTIVE revision skips the deregistered one.
    let latest = s
        .task_definition("web", None)
        .expect("get")
        .expect("exists");
    assert_eq!(latest.revision, 2);
    // An INACTIVE revision is still there to describe.
    let three = s
        .task_definition("web", Some(3))
        .expect("get")
        .expect("exists");
    assert_eq!(three.status, INACTIVE);
    let names = |f: Option<&str>, st| -> Vec<String> {
        s.task_definitions(f, st)
            .expect("list")
            .iter()
            .map(TaskDefinitionRecord::name)
            .collect()
    };
    assert_eq!(
        names(None, StatusFilter::Active),
        ["api:1", "web:1", "web:2"]
    );
    assert_eq!(names(None, StatusFilter::Inactive), ["web:3"]);
    assert_eq!(
        names(Some("web"), StatusFilter::All),
        ["web:1", "web:2", "web:3"]
    );
    assert!(names(Some("nope"), StatusFilter::All).is_empty());
    // Equal content to a deregistered revision is a new revision: only an
    // ACTIVE one is reused.
    let (r, reused) = s
        .register_task_definition("web", "{\"v\":3}", true, 70)
        .expect("register");
    assert_eq!((r.revision, reused), (4, false));
    for n in 1..=2 {
        s.deregister_task_definition("web", n, 80)
            .expect("deregister");
    }
    s.deregister_task_definition("web", 4, 80)
        .expect("deregister");
    assert!(
        s.task_definition("web", None).expect("get").is_none(),
        "no ACTIVE revision left"
    );
    let (r, _) = s
        .register_task_definition("web", "{\"v\":3}", true, 90)
        .expect("register");
    assert_eq!(r.revision, 5, "numbering goes on past INACTIVE revisions");
}

pub(crate) fn concurrent_registrations_get_distinct_revisions(open: Opener<'_>) {
    let s = open();
    let results = race(open, |s, i| {
        s.register_task_definition("web", &format!("{{\"racer\":{i}}}"), true, 1)
            .expect("register")
    });
    let mut revisions: Vec<i64> = results.iter().map(|(r, _)| r.revision).collect();
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (1..=RACERS as i64).collect::<Vec<_>>(),
        "every registration got its own revision"
    );
    // The same content at once: one revision, the others reuse it.
    let same = race(open, |s, _| {
        s.register_task_definition("db", "{\"same\":true}", true, 1)
            .expect("register")
    });
    assert_eq!(same.iter().filter(|(_, reused)| !reused).count(), 1);
    assert!(same.iter().all(|(r, _)| r.revision == 1));
    assert_eq!(
        s.task_definitions(None, StatusFilter::All)
            .expect("list")
            .len(),
        RACERS + 1
    );
}

pub(crate) fn tasks_keep_their_definition_group_and_starter(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    let t = TaskRecord {
        task_definition: "web:3".into(),
        group: "family:web".into(),
        started_by: "nightly-job".into(),
        ..task("t1", "i-1", 1)
    };
    s.insert_task(&t).expect("insert");
    let got = s.task("t1").expect("get").expect("exists");
    assert_eq!(
        (
            got.task_definition.as_str(),
            got.group.as_str(),
            got.started_by.as_str()
        ),
        ("web:3", "family:web", "nightly-job")
    );
    let listed = s.tasks(None).expect("tasks");
    assert_eq!(listed[0].task_definition, "web:3");
    assert_eq!(listed[0].started_by, "nightly-job");
}

// ---- Services

const SVC_GROUP: &str = "service:web";

fn service_rec(cluster: &str, name: &str) -> ServiceRecord {
    ServiceRecord {
        cluster: cluster.into(),
        name: name.into(),
        status: ACTIVE.into(),
        config_json: "{\"launchType\":\"EXTERNAL\"}".into(),
        desired_count: 2,
        created_at_ms: 100,
        updated_at_ms: 100,
        ..ServiceRecord::default()
    }
}

fn deployment(id: &str, task_definition: &str) -> DeploymentRecord {
    DeploymentRecord {
        id: id.into(),
        task_definition: task_definition.into(),
        status: "PRIMARY".into(),
        rollout_state: "IN_PROGRESS".into(),
        created_at_ms: 100,
        updated_at_ms: 100,
        ..DeploymentRecord::default()
    }
}

fn svc_event(id: &str, at_ms: i64, message: &str) -> ServiceEventRecord {
    ServiceEventRecord {
        id: id.into(),
        created_at_ms: at_ms,
        message: message.into(),
    }
}

/// `web` in `default`, deployment `ecs-svc/1` of `web:1`, generation 1.
fn web_service(s: &dyn Store) -> ServiceRecord {
    s.create_service(
        &service_rec(DEFAULT_CLUSTER, "web"),
        &deployment("ecs-svc/1", "web:1"),
        &[svc_event("e0", 100, "(service web) was created.")],
    )
    .expect("create")
}

fn svc_task(id: &str, instance_id: &str) -> TaskRecord {
    TaskRecord {
        group: SVC_GROUP.into(),
        started_by: "ecs-svc/1".into(),
        task_definition: "web:1".into(),
        ..task(id, instance_id, 1)
    }
}

fn generation_of(s: &dyn Store, instance_id: &str) -> u64 {
    s.instance(instance_id)
        .expect("get")
        .expect("instance")
        .generation
}

/// A plan that starts `ids` on `instance_id` at its current generation.
fn starting(s: &dyn Store, instance_id: &str, ids: &[&str]) -> ServicePlanRecord {
    let generation = generation_of(s, instance_id);
    ServicePlanRecord {
        new_tasks: ids
            .iter()
            .map(|id| (svc_task(id, instance_id), generation))
            .collect(),
        ..ServicePlanRecord::default()
    }
}

pub(crate) fn services_round_trip_and_are_unique_per_cluster(open: Opener<'_>) {
    let s = open();
    let created = web_service(s.as_ref());
    assert_eq!(created.generation, 1);
    assert_eq!(created.task_definition, "web:1");
    assert_eq!(created.status, ACTIVE);
    assert_eq!(
        s.service(DEFAULT_CLUSTER, "web").expect("get"),
        Some(created.clone())
    );
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.service, created);
    assert_eq!(snap.deployments.len(), 1);
    let d = &snap.deployments[0];
    assert_eq!(
        (
            d.id.as_str(),
            d.cluster.as_str(),
            d.service.as_str(),
            d.status.as_str(),
            d.rollout_state.as_str()
        ),
        (
            "ecs-svc/1",
            DEFAULT_CLUSTER,
            "web",
            "PRIMARY",
            "IN_PROGRESS"
        )
    );
    assert!(snap.tasks.is_empty());
    assert_eq!(
        snap.events,
        vec![svc_event("e0", 100, "(service web) was created.")]
    );
    // One of a name per cluster while ACTIVE.
    let e = s
        .create_service(
            &service_rec(DEFAULT_CLUSTER, "web"),
            &deployment("ecs-svc/2", "web:2"),
            &[],
        )
        .expect_err("twice");
    assert!(
        matches!(e, StoreError::ServiceExists { ref name, .. } if name == "web"),
        "{e}"
    );
    s.create_cluster("edge", 1).expect("cluster");
    // The first deployment is stored PRIMARY and IN_PROGRESS, whatever
    // the caller left in it.
    s.create_service(
        &service_rec("edge", "web"),
        &DeploymentRecord {
            id: "ecs-svc/3".into(),
            task_definition: "web:1".into(),
            ..DeploymentRecord::default()
        },
        &[],
    )
    .expect("same name in another cluster");
    let edge = s
        .service_snapshot("edge", "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(
        (
            edge.deployments[0].status.as_str(),
            edge.deployments[0].rollout_state.as_str(),
            edge.deployments[0].cluster.as_str()
        ),
        ("PRIMARY", "IN_PROGRESS", "edge")
    );
    s.create_service(
        &service_rec(DEFAULT_CLUSTER, "api"),
        &deployment("ecs-svc/4", "api:1"),
        &[],
    )
    .expect("api");
    let names = |c: Option<&str>| -> Vec<(String, String)> {
        s.services(c)
            .expect("list")
            .into_iter()
            .map(|r| (r.cluster, r.name))
            .collect()
    };
    assert_eq!(
        names(None),
        [
            ("default".to_owned(), "api".to_owned()),
            ("default".into(), "web".into()),
            ("edge".into(), "web".into())
        ]
    );
    assert_eq!(names(Some("edge")), [("edge".to_owned(), "web".to_owned())]);
    assert!(s.service(DEFAULT_CLUSTER, "nope").expect("get").is_none());
    assert!(s.service_snapshot("edge", "nope").expect("get").is_none());
    // A deployment id is unique across services.
    let e = s
        .create_service(
            &service_rec(DEFAULT_CLUSTER, "db"),
            &deployment("ecs-svc/1", "db:1"),
            &[],
        )
        .expect_err("deployment id taken");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(s.service(DEFAULT_CLUSTER, "db").expect("get").is_none());
    // Bounds, before anything is stored.
    let big = ServiceRecord {
        config_json: "x".repeat(MAX_SERVICE_CONFIG_BYTES + 1),
        ..service_rec(DEFAULT_CLUSTER, "big")
    };
    assert!(matches!(
        s.create_service(&big, &deployment("ecs-svc/9", "web:1"), &[]),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        s.create_service(
            &service_rec(DEFAULT_CLUSTER, "a:b"),
            &deployment("ecs-svc/9", "web:1"),
            &[]
        ),
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(s.services(None).expect("list").len(), 3);
}

pub(crate) fn a_deleted_service_is_replaced_by_a_new_create(open: Opener<'_>) {
    let s = open();
    web_service(s.as_ref());
    let draining = s
        .update_service(
            DEFAULT_CLUSTER,
            "web",
            1,
            &ServiceUpdate {
                status: Some(SERVICE_DRAINING.into()),
                ..ServiceUpdate::default()
            },
        )
        .expect("delete");
    assert_eq!(
        (draining.status.as_str(), draining.generation),
        (SERVICE_DRAINING, 2)
    );
    assert!(
        matches!(
            s.create_service(
                &service_rec(DEFAULT_CLUSTER, "web"),
                &deployment("ecs-svc/2", "web:2"),
                &[]
            ),
            Err(StoreError::ServiceExists { .. })
        ),
        "a DRAINING service still holds its name"
    );
    let outcome = s
        .apply_service_plan(
            DEFAULT_CLUSTER,
            "web",
            2,
            &ServicePlanRecord {
                status: Some(INACTIVE.into()),
                ..ServicePlanRecord::default()
            },
        )
        .expect("inactive");
    assert_eq!(outcome.generation, 3);
    assert!(matches!(
        s.update_service(DEFAULT_CLUSTER, "web", 3, &ServiceUpdate::default()),
        Err(StoreError::NoService { .. })
    ));
    assert!(matches!(
        s.apply_service_plan(DEFAULT_CLUSTER, "web", 3, &ServicePlanRecord::default()),
        Err(StoreError::NoService { .. })
    ));
    let again = s
        .create_service(
            &service_rec(DEFAULT_CLUSTER, "web"),
            &deployment("ecs-svc/2", "web:2"),
            &[svc_event("e1", 200, "created again")],
        )
        .expect("recreate");
    assert_eq!((again.status.as_str(), again.generation), (ACTIVE, 1));
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    let ids: Vec<&str> = snap.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        ["ecs-svc/2"],
        "the deleted service's deployments went with it"
    );
    assert_eq!(snap.events.len(), 1);
    assert!(matches!(
        s.update_service(DEFAULT_CLUSTER, "nope", 1, &ServiceUpdate::default()),
        Err(StoreError::NoService { .. })
    ));
}

pub(crate) fn a_service_is_created_only_in_an_active_cluster(open: Opener<'_>) {
    let s = open();
    let e = s
        .create_service(
            &service_rec("edge", "web"),
            &deployment("ecs-svc/1", "web:1"),
            &[],
        )
        .expect_err("no cluster");
    assert!(
        matches!(e, StoreError::NoCluster(ref c) if c == "edge"),
        "{e}"
    );
    s.create_cluster("edge", 1).expect("cluster");
    s.delete_cluster("edge").expect("delete");
    let e = s
        .create_service(
            &service_rec("edge", "web"),
            &deployment("ecs-svc/1", "web:1"),
            &[],
        )
        .expect_err("deleted cluster");
    assert!(
        matches!(e, StoreError::ClusterInactive(ref c) if c == "edge"),
        "{e}"
    );
    assert!(s.services(None).expect("list").is_empty());
    // Nothing half-stored: the deployment id is still free.
    s.create_service(
        &service_rec(DEFAULT_CLUSTER, "web"),
        &deployment("ecs-svc/1", "web:1"),
        &[],
    )
    .expect("in default");
    // A cluster with a service not deleted (INACTIVE) stays.
    s.create_cluster("edge", 2).expect("again");
    s.create_service(
        &service_rec("edge", "web"),
        &deployment("ecs-svc/2", "web:1"),
        &[],
    )
    .expect("in edge");
    let drained = s
        .update_service(
            "edge",
            "web",
            1,
            &ServiceUpdate {
                status: Some(SERVICE_DRAINING.into()),
                ..ServiceUpdate::default()
            },
        )
        .expect("delete the service");
    let e = s.delete_cluster("edge").expect_err("a service is left");
    assert!(
        matches!(e, StoreError::ClusterNotEmpty { services: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("1 service(s)"), "{e}");
    s.apply_service_plan(
        "edge",
        "web",
        drained.generation,
        &ServicePlanRecord {
            status: Some(INACTIVE.into()),
            ..ServicePlanRecord::default()
        },
    )
    .expect("inactive");
    assert_eq!(s.delete_cluster("edge").expect("delete").status, INACTIVE);
}

pub(crate) fn a_stale_update_conflicts_and_a_new_deployment_becomes_primary(open: Opener<'_>) {
    let s = open();
    web_service(s.as_ref());
    let up = s
        .update_service(
            DEFAULT_CLUSTER,
            "web",
            1,
            &ServiceUpdate {
                desired_count: Some(5),
                config_json: Some("{\"v\":2}".into()),
                new_deployment: Some(DeploymentRecord {
                    created_at_ms: 300,
                    updated_at_ms: 300,
                    status: String::new(),
                    rollout_state: String::new(),
                    ..deployment("ecs-svc/2", "web:2")
                }),
                events: vec![svc_event("e1", 300, "updated")],
                ..ServiceUpdate::default()
            },
        )
        .expect("update");
    assert_eq!(
        (up.generation, up.desired_count, up.task_definition.as_str()),
        (2, 5, "web:2")
    );
    let e = s
        .update_service(
            DEFAULT_CLUSTER,
            "web",
            1,
            &ServiceUpdate {
                desired_count: Some(9),
                events: vec![svc_event("e2", 400, "lost update")],
                ..ServiceUpdate::default()
            },
        )
        .expect_err("stale");
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                op: "update_service",
                ..
            }
        ),
        "{e}"
    );
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.service, up, "the stale update changed nothing");
    assert_eq!(snap.service.config_json, "{\"v\":2}");
    let ids: Vec<&str> = snap.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e0"]);
    let deployments: Vec<(&str, &str)> = snap
        .deployments
        .iter()
        .map(|d| (d.id.as_str(), d.status.as_str()))
        .collect();
    assert_eq!(
        deployments,
        [("ecs-svc/1", ACTIVE), ("ecs-svc/2", "PRIMARY")],
        "the old PRIMARY is ACTIVE, oldest first"
    );
    assert_eq!(snap.deployments[1].rollout_state, "IN_PROGRESS");
    assert_eq!(snap.deployments[0].updated_at_ms, 300);
}

pub(crate) fn a_plan_starts_tasks_in_the_service_and_bumps_instance_generations(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    enrolled(s.as_ref(), "i-2");
    web_service(s.as_ref());
    let (g1, g2) = (
        generation_of(s.as_ref(), "i-1"),
        generation_of(s.as_ref(), "i-2"),
    );
    let mut plan = starting(s.as_ref(), "i-1", &["t1", "t2"]);
    plan.new_tasks.push((svc_task("t3", "i-2"), g2));
    plan.events
        .push(svc_event("e1", 200, "has started 3 tasks"));
    let out = s
        .apply_service_plan(DEFAULT_CLUSTER, "web", 1, &plan)
        .expect("apply");
    assert_eq!(out.generation, 2);
    assert_eq!(out.instances_changed, ["i-1", "i-2"]);
    assert_eq!(
        generation_of(s.as_ref(), "i-1"),
        g1 + 2,
        "one bump per new task"
    );
    assert_eq!(generation_of(s.as_ref(), "i-2"), g2 + 1);
    let a = s.assignment("i-1").expect("assignment");
    assert_eq!(a.tasks.len(), 2);
    let t = s.task("t3").expect("get").expect("stored");
    assert_eq!(
        (
            t.cluster.as_str(),
            t.group.as_str(),
            t.started_by.as_str(),
            t.definition_json.as_str()
        ),
        (DEFAULT_CLUSTER, SVC_GROUP, "ecs-svc/1", "{}")
    );
    assert!(!t.ever_healthy && !t.failure_counted && !t.lost);
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    let ids: Vec<&str> = snap.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2", "t3"]);
    assert!(snap.tasks.iter().all(|t| t.definition_json.is_empty()));
    assert_eq!(snap.service.generation, 2);
    // A task outside the service is not in its snapshot.
    s.insert_task(&task("other", "i-1", 1)).expect("insert");
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.tasks.len(), 3);
    // An empty plan changes nothing, not even the generation.
    let out = s
        .apply_service_plan(DEFAULT_CLUSTER, "web", 2, &ServicePlanRecord::default())
        .expect("empty");
    assert_eq!(
        out,
        PlanOutcome {
            generation: 2,
            instances_changed: vec![]
        }
    );
}

pub(crate) fn a_plan_against_a_moved_instance_stores_nothing(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    enrolled(s.as_ref(), "i-2");
    web_service(s.as_ref());
    let mut plan = starting(s.as_ref(), "i-1", &["t1"]);
    plan.new_tasks
        .extend(starting(s.as_ref(), "i-2", &["t2"]).new_tasks);
    plan.events.push(svc_event("e1", 200, "started"));
    plan.deployments.push(DeploymentRecord {
        rollout_state: "COMPLETED".into(),
        ..deployment("ecs-svc/1", "web:1")
    });
    // i-2 moves after the plan was computed.
    s.insert_task(&task("x", "i-2", 1)).expect("insert");
    let g1 = generation_of(s.as_ref(), "i-1");
    let e = s
        .apply_service_plan(DEFAULT_CLUSTER, "web", 1, &plan)
        .expect_err("stale instance");
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                op: "apply_service_plan",
                ..
            }
        ),
        "{e}"
    );
    assert!(s.task("t1").expect("get").is_none(), "t1 was not kept");
    assert!(s.task("t2").expect("get").is_none());
    assert_eq!(generation_of(s.as_ref(), "i-1"), g1);
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.service.generation, 1);
    assert_eq!(snap.events.len(), 1, "no event was added");
    assert_eq!(snap.deployments[0].rollout_state, "IN_PROGRESS");
    // A DRAINING instance takes no new task either.
    s.update_instance_state("i-1", DRAINING).expect("drain");
    let e = s
        .apply_service_plan(
            DEFAULT_CLUSTER,
            "web",
            1,
            &starting(s.as_ref(), "i-1", &["t1"]),
        )
        .expect_err("draining");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    // Nor one of another cluster.
    s.update_instance_state("i-1", ACTIVE).expect("activate");
    let mut foreign = starting(s.as_ref(), "i-1", &["t1"]);
    foreign.new_tasks[0].0.cluster = "edge".into();
    assert!(
        s.apply_service_plan(DEFAULT_CLUSTER, "web", 1, &foreign)
            .is_err()
    );
    assert!(s.task("t1").expect("get").is_none());
}

pub(crate) fn a_plan_stops_and_marks_only_its_own_tasks(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    web_service(s.as_ref());
    s.apply_service_plan(
        DEFAULT_CLUSTER,
        "web",
        1,
        &starting(s.as_ref(), "i-1", &["t1", "t2"]),
    )
    .expect("start");
    s.insert_task(&task("other", "i-1", 1)).expect("insert");
    let before = generation_of(s.as_ref(), "i-1");
    let out = s
        .apply_service_plan(
            DEFAULT_CLUSTER,
            "web",
            2,
            &ServicePlanRecord {
                stops: vec![(
                    "t1".into(),
                    "ServiceSchedulerInitiated".into(),
                    "Scaling activity initiated by deployment ecs-svc/1".into(),
                )],
                marks: vec![("t2".into(), TaskMarkKind::EverHealthy)],
                ..ServicePlanRecord::default()
            },
        )
        .expect("stop");
    assert_eq!(out.generation, 3);
    assert_eq!(out.instances_changed, ["i-1"]);
    assert_eq!(
        generation_of(s.as_ref(), "i-1"),
        before + 1,
        "the stop bumped, the mark did not"
    );
    let t1 = s.task("t1").expect("get").expect("t1");
    assert_eq!(
        (
            t1.desired_status.as_str(),
            t1.stop_code.as_str(),
            t1.stopped_reason.as_str()
        ),
        (
            STOPPED,
            "ServiceSchedulerInitiated",
            "Scaling activity initiated by deployment ecs-svc/1"
        )
    );
    // A second stop of it is left as it is: no bump, the first reason stays.
    let out = s
        .apply_service_plan(
            DEFAULT_CLUSTER,
            "web",
            3,
            &ServicePlanRecord {
                stops: vec![("t1".into(), "Other".into(), "again".into())],
                marks: vec![
                    ("t2".into(), TaskMarkKind::Lost),
                    ("t1".into(), TaskMarkKind::FailureCounted),
                ],
                ..ServicePlanRecord::default()
            },
        )
        .expect("again");
    assert!(out.instances_changed.is_empty());
    assert_eq!(generation_of(s.as_ref(), "i-1"), before + 1);
    assert_eq!(
        s.task("t1").expect("get").expect("t1").stop_code,
        "ServiceSchedulerInitiated"
    );
    let t2 = s.task("t2").expect("get").expect("t2");
    assert!(
        t2.ever_healthy && t2.lost && !t2.failure_counted,
        "marks add up: {t2:?}"
    );
    assert!(s.task("t1").expect("get").expect("t1").failure_counted);
    // A task of no service, or of another, is refused, and the plan with it.
    for plan in [
        ServicePlanRecord {
            stops: vec![("other".into(), "x".into(), "y".into())],
            ..ServicePlanRecord::default()
        },
        ServicePlanRecord {
            marks: vec![("nope".into(), TaskMarkKind::Lost)],
            events: vec![svc_event("e9", 1, "never")],
            ..ServicePlanRecord::default()
        },
    ] {
        let e = s
            .apply_service_plan(DEFAULT_CLUSTER, "web", 4, &plan)
            .expect_err("not its task");
        assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    }
    assert_eq!(
        s.task("other").expect("get").expect("other").desired_status,
        RUNNING
    );
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.service.generation, 4);
    assert_eq!(snap.events.len(), 1);
}

pub(crate) fn events_keep_the_newest_hundred_with_bounded_messages(open: Opener<'_>) {
    let s = open();
    web_service(s.as_ref());
    let long = format!("{}€€€", "x".repeat(MAX_EVENT_MESSAGE - 2));
    let events = |from: usize, n: usize| -> Vec<ServiceEventRecord> {
        (from..from + n)
            .map(|i| svc_event(&format!("e{i:03}"), 1_000 + i as i64, &long))
            .collect()
    };
    let out = s
        .apply_service_plan(
            DEFAULT_CLUSTER,
            "web",
            1,
            &ServicePlanRecord {
                events: events(1, 70),
                ..ServicePlanRecord::default()
            },
        )
        .expect("first");
    // Two in one millisecond keep their order.
    let mut more = events(71, 60);
    more.push(svc_event("same-a", 2_000, "a"));
    more.push(svc_event("same-b", 2_000, "b"));
    s.apply_service_plan(
        DEFAULT_CLUSTER,
        "web",
        out.generation,
        &ServicePlanRecord {
            events: more,
            ..ServicePlanRecord::default()
        },
    )
    .expect("second");
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.events.len(), MAX_EVENTS);
    assert_eq!(snap.events[0].id, "same-b");
    assert_eq!(snap.events[1].id, "same-a");
    assert_eq!(snap.events[2].id, "e130");
    assert_eq!(
        snap.events[MAX_EVENTS - 1].id,
        "e033",
        "the oldest were deleted"
    );
    let m = &snap.events[2].message;
    assert_eq!(
        m.len(),
        MAX_EVENT_MESSAGE - 2,
        "cut before the euro sign that straddles"
    );
    assert!(m.chars().all(|c| c == 'x'));
}

pub(crate) fn plans_from_one_generation_have_one_winner(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    web_service(s.as_ref());
    let generation = generation_of(s.as_ref(), "i-1");
    let results = race(open, |s, i| {
        s.apply_service_plan(
            DEFAULT_CLUSTER,
            "web",
            1,
            &ServicePlanRecord {
                new_tasks: vec![(svc_task(&format!("t{i}"), "i-1"), generation)],
                events: vec![svc_event(&format!("e{i}"), 200, "started")],
                ..ServicePlanRecord::default()
            },
        )
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one plan wins: {results:?}"
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(e, StoreError::Conflict { .. }),
            "a loser conflicts: {e}"
        );
    }
    let snap = s
        .service_snapshot(DEFAULT_CLUSTER, "web")
        .expect("snapshot")
        .expect("exists");
    assert_eq!(snap.service.generation, 2);
    assert_eq!(snap.tasks.len(), 1);
    assert_eq!(snap.events.len(), 2);
    assert_eq!(generation_of(s.as_ref(), "i-1"), generation + 1);
}

pub(crate) fn concurrent_creates_of_one_service_have_one_winner(open: Opener<'_>) {
    let s = open();
    let create = |s: &dyn Store, i: usize| {
        s.create_service(
            &service_rec(DEFAULT_CLUSTER, "web"),
            &deployment(&format!("ecs-svc/{i}"), "web:1"),
            &[svc_event(&format!("e{i}"), 100, "created")],
        )
    };
    for round in 0..2 {
        let results = race(open, |s, i| create(s, round * RACERS + i));
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: exactly one create wins: {results:?}"
        );
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(e, StoreError::ServiceExists { .. }),
                "a loser is told the service exists: {e}"
            );
        }
        let snap = s
            .service_snapshot(DEFAULT_CLUSTER, "web")
            .expect("snapshot")
            .expect("exists");
        assert_eq!(snap.deployments.len(), 1, "the losers stored nothing");
        assert_eq!(snap.events.len(), 1);
        // Deleted: the next round races over an INACTIVE service.
        s.update_service(
            DEFAULT_CLUSTER,
            "web",
            1,
            &ServiceUpdate {
                status: Some(INACTIVE.into()),
                ..ServiceUpdate::default()
            },
        )
        .expect("inactive");
    }
}

pub(crate) fn a_task_is_in_its_instance_cluster(open: Opener<'_>) {
    let s = open();
    s.create_cluster("edge", 1).expect("cluster");
    s.create_activation(&ActivationRecord {
        cluster: "edge".into(),
        ..activation("a-edge")
    })
    .expect("activation");
    s.enroll("a-edge", 10, &new_instance("i-edge"))
        .expect("enroll");
    s.insert_task(&task("t1", "i-edge", 1)).expect("insert");
    assert_eq!(s.task("t1").expect("get").expect("t1").cluster, "edge");
    assert_eq!(s.tasks(None).expect("tasks")[0].cluster, "edge");
    let e = s
        .insert_task(&TaskRecord {
            cluster: DEFAULT_CLUSTER.into(),
            ..task("t2", "i-edge", 1)
        })
        .expect_err("another cluster");
    assert!(
        matches!(
            e,
            StoreError::Conflict {
                op: "insert_task",
                ..
            }
        ),
        "{e}"
    );
    assert!(s.task("t2").expect("get").is_none());
    let edge = s.cluster("edge").expect("get").expect("edge");
    assert_eq!(edge.pending_tasks, 1);
    let default = s.cluster(DEFAULT_CLUSTER).expect("get").expect("default");
    assert_eq!(default.pending_tasks, 0);
}

/// Instances and tasks as a version 7 database holds them, for the
/// backends' migration tests (SQL both accept): `t2` runs on an instance of
/// `edge` but was stored in `default`, as version 7 did.
pub(crate) const VERSION_7_ROWS: &str = "\
    INSERT INTO instances (instance_id, hostname, status, registered_at_ms, agent_version, \
      boot_id, cpu, memory_mib, attributes_json, last_heartbeat_at_ms, last_event_seq, \
      generation, acked_generation, os, arch, cluster) \
    VALUES ('i-1', 'vm', 'ACTIVE', 1, '0.1', 'b', 1024, 1024, '{}', 0, 0, 1, 0, 'linux', \
      'x86_64', 'default'), ('i-2', 'vm2', 'ACTIVE', 1, '0.1', 'b', 1024, 1024, '{}', 0, 0, 1, \
      0, 'linux', 'x86_64', 'edge'); \
    INSERT INTO clusters (name, status, created_at_ms) VALUES ('edge', 'ACTIVE', 1); \
    INSERT INTO tasks (task_id, instance_id, family, definition_json, desired_status, \
      last_status, health_status, stop_code, stopped_reason, created_at_ms, started_at_ms, \
      stopped_at_ms, containers_json, reserved_cpu, reserved_memory_mib, last_event_seq, \
      last_seen_at_ms, task_group) \
    VALUES ('t1', 'i-1', 'web', '{}', 'RUNNING', 'RUNNING', 'UNKNOWN', '', '', 1, 2, 0, '[]', \
      1, 1, 0, 0, 'family:web'), ('t2', 'i-2', 'web', '{}', 'RUNNING', 'RUNNING', 'UNKNOWN', \
      '', '', 1, 2, 0, '[]', 1, 1, 0, 0, 'family:web');";

/// A database that held [`VERSION_7_ROWS`], migrated: the tasks kept, in
/// their instances' clusters, with no marks, and services can be stored.
pub(crate) fn a_migrated_version_7_database(s: &dyn Store) {
    let t = s.task("t1").expect("get").expect("kept");
    assert_eq!(
        (t.cluster.as_str(), t.group.as_str()),
        (DEFAULT_CLUSTER, "family:web")
    );
    assert!(!t.ever_healthy && !t.failure_counted && !t.lost);
    let t2 = s.task("t2").expect("get").expect("kept");
    assert_eq!(t2.cluster, "edge", "moved to its instance's cluster");
    let edge = s.cluster("edge").expect("get").expect("edge");
    assert_eq!(edge.running_tasks, 1);
    assert!(s.services(None).expect("services").is_empty());
    let created = web_service(s);
    assert_eq!(s.services(None).expect("services"), vec![created]);
}

/// One check of the suite.
pub(crate) type Check = for<'a> fn(Opener<'a>);

/// DRAINING is still registered: heartbeats, Hellos and events of its
/// tasks are recorded; placement puts nothing new on it; ACTIVE again, it
/// takes tasks. A deregistered instance's status cannot be changed.
pub(crate) fn a_draining_instance_keeps_its_session_but_gets_no_placement(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    let connected: HashSet<String> = ["i-1".to_owned()].into();
    let need = Need {
        cpu: 1,
        memory_mib: 256,
    };
    place_and_insert(s.as_ref(), task("t1", "", 256), need, None, &connected).expect("placed");
    let drained = s.update_instance_state("i-1", DRAINING).expect("drain");
    assert_eq!(drained.status, DRAINING);
    assert_eq!(drained.cluster, DEFAULT_CLUSTER);
    let default = s.cluster(DEFAULT_CLUSTER).expect("get").expect("default");
    assert_eq!(
        (default.registered_instances, default.pending_tasks),
        (1, 1)
    );
    // Again: nothing changes.
    assert_eq!(
        s.update_instance_state("i-1", DRAINING)
            .expect("again")
            .status,
        DRAINING
    );
    s.record_heartbeat("i-1", 50)
        .expect("heartbeat while draining");
    assert_eq!(
        s.instance("i-1")
            .expect("get")
            .expect("i-1")
            .last_heartbeat_at_ms,
        50
    );
    s.record_hello(
        "i-1",
        &HelloRecord {
            hostname: "h".into(),
            cpu: 4096,
            memory_mib: 1024,
            at_ms: 51,
            ..HelloRecord::default()
        },
    )
    .expect("hello while draining");
    s.apply_event("i-1", &event(1, "t1", RUNNING), 52)
        .expect("event while draining");
    assert_eq!(s.task("t1").expect("get").expect("t1").last_status, RUNNING);
    let refused = place_and_insert(s.as_ref(), task("t2", "", 256), need, None, &connected);
    assert!(
        matches!(
            refused,
            Err(ScheduleError::Placement(PlacementError::NoInstances))
        ),
        "{refused:?}"
    );
    assert!(matches!(
        s.update_instance_state("i-1", "PAUSED"),
        Err(StoreError::InvalidInstanceStatus(_))
    ));
    assert_eq!(
        s.update_instance_state("i-1", ACTIVE)
            .expect("activate")
            .status,
        ACTIVE
    );
    place_and_insert(s.as_ref(), task("t2", "", 256), need, None, &connected)
        .expect("placed again");
    s.deregister_instance("i-1", "UserInitiated", "gone")
        .expect("deregister");
    assert!(matches!(
        s.update_instance_state("i-1", ACTIVE),
        Err(StoreError::InstanceInactive(_))
    ));
    assert!(matches!(
        s.update_instance_state("i-9", DRAINING),
        Err(StoreError::NoInstance(_))
    ));
}

/// Create is idempotent and revives a deleted cluster; `default` exists
/// from the start and is never deleted; names follow ECS' rule.
pub(crate) fn clusters_lifecycle(open: Opener<'_>) {
    let s = open();
    let all = s.clusters().expect("clusters");
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].name.as_str(), all[0].status.as_str()),
        ("default", ACTIVE)
    );
    assert!(matches!(
        s.delete_cluster(DEFAULT_CLUSTER),
        Err(StoreError::DefaultCluster)
    ));
    let web = s.create_cluster("web-1_a", 5).expect("create");
    assert_eq!((web.status.as_str(), web.created_at_ms), (ACTIVE, 5));
    assert_eq!(
        (
            web.registered_instances,
            web.running_tasks,
            web.pending_tasks
        ),
        (0, 0, 0)
    );
    // Creating it again returns the one there is.
    assert_eq!(s.create_cluster("web-1_a", 9).expect("again"), web);
    for bad in ["", "a b", "a.b", &"x".repeat(256)] {
        assert!(
            matches!(
                s.create_cluster(bad, 1),
                Err(StoreError::InvalidClusterName(..))
            ),
            "{bad:?} accepted"
        );
    }
    assert!(s.create_cluster(&"x".repeat(255), 1).is_ok());
    assert!(matches!(
        s.delete_cluster("nope"),
        Err(StoreError::NoCluster(n)) if n == "nope"
    ));
    let gone = s.delete_cluster("web-1_a").expect("delete");
    assert_eq!(gone.status, INACTIVE);
    assert_eq!(
        s.cluster("web-1_a").expect("get").expect("kept").status,
        INACTIVE
    );
    assert_eq!(s.cluster("nope").expect("get"), None);
    let back = s.create_cluster("web-1_a", 20).expect("revive");
    assert_eq!(back.status, ACTIVE);
    let names: Vec<String> = s
        .clusters()
        .expect("clusters")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        vec!["default".to_owned(), "web-1_a".into(), "x".repeat(255)]
    );
}

/// An activation names an ACTIVE cluster; its host joins it, and the
/// cluster cannot be deleted while the host is registered.
pub(crate) fn an_activation_joins_its_cluster(open: Opener<'_>) {
    let s = open();
    let in_edge = ActivationRecord {
        cluster: "edge".into(),
        ..activation("a-edge")
    };
    assert!(matches!(
        s.create_activation(&in_edge),
        Err(StoreError::NoCluster(c)) if c == "edge"
    ));
    assert_eq!(s.activation("a-edge").expect("get"), None);
    s.create_cluster("edge", 1).expect("cluster");
    s.create_activation(&in_edge).expect("activation");
    assert_eq!(s.activation("a-edge").expect("get"), Some(in_edge));
    s.enroll("a-edge", 10, &new_instance("i-edge"))
        .expect("enroll");
    let i = s.instance("i-edge").expect("get").expect("stored");
    assert_eq!(i.cluster, "edge");
    assert!(matches!(
        s.delete_cluster("edge"),
        Err(StoreError::ClusterNotEmpty { .. })
    ));
    // An empty cluster name is `default`.
    let unnamed = ActivationRecord {
        cluster: String::new(),
        ..activation("a-default")
    };
    s.create_activation(&unnamed).expect("activation");
    assert_eq!(
        s.activation("a-default")
            .expect("get")
            .expect("stored")
            .cluster,
        DEFAULT_CLUSTER
    );
    s.create_cluster("gone", 1).expect("cluster");
    s.delete_cluster("gone").expect("delete");
    assert!(matches!(
        s.create_activation(&ActivationRecord {
            cluster: "gone".into(),
            ..activation("a-gone")
        }),
        Err(StoreError::ClusterInactive(c)) if c == "gone"
    ));
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Custom attributes: put and deleted whole or not at all, kept apart from
/// (and over) the agent's, kept across Hellos, bounded, never built in,
/// never on a deregistered instance; concurrent puts lose nothing.
pub(crate) fn custom_attributes_are_put_and_deleted_whole(open: Opener<'_>) {
    let s = open();
    enrolled(s.as_ref(), "i-1");
    let hello = |zone: &str| HelloRecord {
        hostname: "h".into(),
        cpu: 4096,
        memory_mib: 1024,
        at_ms: 20,
        attributes: attrs(&[("zone", zone), ("ecs.os-type", "linux")]),
        ..HelloRecord::default()
    };
    s.record_hello("i-1", &hello("agent")).expect("hello");
    let i = s
        .put_attributes("i-1", &attrs(&[("zone", "rack-3"), ("team", "web")]))
        .expect("put");
    assert_eq!(
        i.custom_attributes,
        attrs(&[("team", "web"), ("zone", "rack-3")])
    );
    assert_eq!(i.attributes["zone"], "agent", "the agent's are kept apart");
    let all = i.all_attributes();
    assert_eq!(
        (all["zone"].as_str(), all["ecs.os-type"].as_str()),
        ("rack-3", "linux")
    );
    // A Hello replaces the agent's attributes, not the custom ones.
    s.record_hello("i-1", &hello("agent-2"))
        .expect("hello again");
    let i = s.instance("i-1").expect("get").expect("i-1");
    assert_eq!(i.attributes["zone"], "agent-2");
    assert_eq!(
        i.custom_attributes,
        attrs(&[("team", "web"), ("zone", "rack-3")])
    );
    // A name put again takes the new value.
    let i = s
        .put_attributes("i-1", &attrs(&[("team", "api")]))
        .expect("put");
    assert_eq!(i.custom_attributes["team"], "api");
    // A call with one bad attribute stores nothing of it.
    let before = s
        .instance("i-1")
        .expect("get")
        .expect("i-1")
        .custom_attributes;
    for (bad, what) in [
        (
            attrs(&[("ok", "1"), ("ecs.os-type", "windows")]),
            "built in",
        ),
        (
            attrs(&[("ok", "1"), ("berth.policy.allow_privileged", "true")]),
            "built in",
        ),
        (attrs(&[("ok", "1"), ("rack", "a b")]), "value"),
        (attrs(&[("ok", "1"), ("a b", "1")]), "name"),
        (attrs(&[("ok", &"x".repeat(129))]), "long value"),
    ] {
        assert!(
            matches!(
                s.put_attributes("i-1", &bad),
                Err(StoreError::InvalidAttribute(_))
            ),
            "{what}: {bad:?}"
        );
    }
    let eleven: BTreeMap<String, String> =
        (0..11).map(|n| (format!("a{n}"), "v".to_owned())).collect();
    assert!(matches!(
        s.put_attributes("i-1", &eleven),
        Err(StoreError::TooManyAttributesInCall(11))
    ));
    assert!(matches!(
        s.put_attributes("i-1", &BTreeMap::new()),
        Err(StoreError::NoAttributesInCall)
    ));
    assert_eq!(
        s.instance("i-1")
            .expect("get")
            .expect("i-1")
            .custom_attributes,
        before,
        "nothing of a refused put is stored"
    );
    // At most 64 custom attributes on an instance.
    for batch in 0..7 {
        let ten: BTreeMap<String, String> = (0..10)
            .map(|n| (format!("k{batch}-{n}"), "v".to_owned()))
            .take(if batch == 6 { 2 } else { 10 })
            .collect();
        s.put_attributes("i-1", &ten).expect("room");
    }
    assert_eq!(
        s.instance("i-1")
            .expect("get")
            .expect("i-1")
            .custom_attributes
            .len(),
        64
    );
    assert!(matches!(
        s.put_attributes("i-1", &attrs(&[("one-more", "v")])),
        Err(StoreError::TooManyAttributes { count: 65, .. })
    ));
    s.put_attributes("i-1", &attrs(&[("zone", "rack-4")]))
        .expect("a new value for a name there is needs no room");
    // A delete naming one attribute that was never put deletes nothing.
    assert!(matches!(
        s.delete_attributes("i-1", &["team".into(), "nope".into()]),
        Err(StoreError::NoAttribute { name, .. }) if name == "nope"
    ));
    assert!(matches!(
        s.delete_attributes("i-1", &["ecs.os-type".into()]),
        Err(StoreError::InvalidAttribute(_))
    ));
    assert_eq!(
        s.instance("i-1")
            .expect("get")
            .expect("i-1")
            .custom_attributes["team"],
        "api"
    );
    let i = s
        .delete_attributes("i-1", &["team".into(), "zone".into(), "team".into()])
        .expect("delete");
    assert!(!i.custom_attributes.contains_key("team"));
    assert_eq!(i.custom_attributes.len(), 62);
    assert_eq!(
        i.all_attributes()["zone"],
        "agent-2",
        "the agent's shows again"
    );
    // Concurrent puts of different names on one instance: none is lost.
    enrolled(s.as_ref(), "i-2");
    let results = race(open, |s, n| {
        s.put_attributes("i-2", &attrs(&[(&format!("racer-{n}"), "v")]))
    });
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let i = s.instance("i-2").expect("get").expect("i-2");
    assert_eq!(
        i.custom_attributes.len(),
        RACERS,
        "{:?}",
        i.custom_attributes
    );
    // Never on a deregistered or unknown instance.
    s.deregister_instance("i-2", "UserInitiated", "gone")
        .expect("deregister");
    assert!(matches!(
        s.put_attributes("i-2", &attrs(&[("zone", "a")])),
        Err(StoreError::InstanceInactive(_))
    ));
    assert!(matches!(
        s.delete_attributes("i-2", &["racer-0".into()]),
        Err(StoreError::InstanceInactive(_))
    ));
    assert!(matches!(
        s.put_attributes("i-9", &attrs(&[("zone", "a")])),
        Err(StoreError::NoInstance(_))
    ));
}

/// Every check, by name, for a backend that runs them in one test (one
/// server for the run, a new database per check).
pub(crate) fn secrets_round_trip_rotate_and_delete(open: Opener<'_>) {
    let s = open();
    assert!(s.secrets().expect("list").is_empty());
    let c = s.create_secret("db/password", b"ct-1", 10).expect("create");
    assert_eq!((c.version, c.created_at_ms, c.updated_at_ms), (1, 10, 10));
    assert_eq!(c.ciphertext, b"ct-1");
    let e = s
        .create_secret("db/password", b"other", 11)
        .expect_err("taken");
    assert!(matches!(e, StoreError::SecretExists(_)), "{e}");
    assert_eq!(
        s.secret("db/password")
            .expect("get")
            .expect("kept")
            .ciphertext,
        b"ct-1",
        "a refused create changes nothing"
    );
    let r = s.rotate_secret("db/password", b"ct-2", 20).expect("rotate");
    assert_eq!((r.version, r.created_at_ms, r.updated_at_ms), (2, 10, 20));
    assert_eq!(r.ciphertext, b"ct-2");
    s.create_secret("api", &[0, 255, 7], 30).expect("second");
    let names: Vec<_> = s
        .secrets()
        .expect("list")
        .into_iter()
        .map(|r| (r.name, r.version))
        .collect();
    assert_eq!(
        names,
        [("api".to_owned(), 1), ("db/password".to_owned(), 2)]
    );
    assert_eq!(
        s.secret("api").expect("get").expect("kept").ciphertext,
        [0, 255, 7],
        "bytes round-trip"
    );
    let e = s.rotate_secret("nope", b"x", 1).expect_err("unknown");
    assert!(matches!(e, StoreError::NoSecret(_)), "{e}");
    s.delete_secret("db/password").expect("delete");
    assert!(s.secret("db/password").expect("get").is_none());
    let e = s.delete_secret("db/password").expect_err("gone");
    assert!(matches!(e, StoreError::NoSecret(_)), "{e}");
    let again = s.create_secret("db/password", b"ct-3", 40).expect("again");
    assert_eq!(again.version, 1, "a new secret starts at version 1");
    for bad in ["", "a b", "a:b"] {
        let e = s.create_secret(bad, b"x", 1).expect_err("bad name");
        assert!(matches!(e, StoreError::Invalid { .. }), "{bad:?}: {e}");
    }
}

pub(crate) fn access_keys_are_created_once_and_revoked_for_good(open: Opener<'_>) {
    let s = open();
    assert!(s.access_keys().expect("list").is_empty());
    let key = |id: &str, at: i64| AccessKeyRecord {
        id: id.to_owned(),
        name: format!("key {id}"),
        ciphertext: vec![1, 0, 255, 7],
        created_at_ms: at,
        revoked_at_ms: None,
    };
    let a = key("AKIA0000000000000001", 10);
    s.create_access_key(&a).expect("create");
    let e = s
        .create_access_key(&AccessKeyRecord {
            ciphertext: vec![9],
            ..a.clone()
        })
        .expect_err("taken");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert_eq!(
        s.access_key(&a.id).expect("get").expect("kept"),
        a,
        "the first create stays, ciphertext and all"
    );
    s.create_access_key(&key("AKIA0000000000000002", 20))
        .expect("second");
    let r = s.revoke_access_key(&a.id, 30).expect("revoke");
    assert_eq!(r.revoked_at_ms, Some(30));
    let again = s.revoke_access_key(&a.id, 40).expect("revoke again");
    assert_eq!(again.revoked_at_ms, Some(30), "the first revocation stays");
    let all = s.access_keys().expect("list");
    assert_eq!(
        all.iter()
            .map(|k| (k.id.as_str(), k.revoked_at_ms))
            .collect::<Vec<_>>(),
        vec![
            ("AKIA0000000000000001", Some(30)),
            ("AKIA0000000000000002", None)
        ]
    );
    let e = s
        .revoke_access_key("AKIA000000000000000X", 1)
        .expect_err("unknown");
    assert!(matches!(e, StoreError::NoAccessKey(_)), "{e}");
    for bad in [
        AccessKeyRecord {
            id: "short".to_owned(),
            ..key("x", 1)
        },
        AccessKeyRecord {
            name: "a\nb".to_owned(),
            ..key("AKIA0000000000000003", 1)
        },
        AccessKeyRecord {
            ciphertext: vec![0; 257],
            ..key("AKIA0000000000000003", 1)
        },
    ] {
        let e = s.create_access_key(&bad).expect_err("refused");
        assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
    }
    assert_eq!(s.access_keys().expect("list").len(), 2, "nothing was added");
}

pub(crate) fn concurrent_secret_writes_lose_nothing(open: Opener<'_>) {
    let results = race(open, |s, i| s.create_secret("one", &[i as u8], 1));
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(e, StoreError::SecretExists(_)), "{e}");
    }
    let rotated = race(open, |s, i| s.rotate_secret("one", &[i as u8, 1], 2));
    let mut versions: Vec<i64> = rotated
        .into_iter()
        .map(|r| r.expect("rotate").version)
        .collect();
    versions.sort_unstable();
    let expected: Vec<i64> = (2..2 + RACERS as i64).collect();
    assert_eq!(versions, expected, "every rotation counts once");
    let s = open();
    assert_eq!(
        s.secret("one").expect("get").expect("kept").version,
        1 + RACERS as i64
    );
}

pub(crate) const CHECKS: &[(&str, Check)] = &[
    (
        "custom_attributes_are_put_and_deleted_whole",
        custom_attributes_are_put_and_deleted_whole,
    ),
    ("clusters_lifecycle", clusters_lifecycle),
    (
        "an_activation_joins_its_cluster",
        an_activation_joins_its_cluster,
    ),
    (
        "a_draining_instance_keeps_its_session_but_gets_no_placement",
        a_draining_instance_keeps_its_session_but_gets_no_placement,
    ),
    (
        "an_activation_is_used_once_under_concurrency",
        an_activation_is_used_once_under_concurrency,
    ),
    (
        "an_event_is_applied_at_most_once_under_concurrency",
        an_event_is_applied_at_most_once_under_concurrency,
    ),
    (
        "every_change_of_the_desired_set_bumps_the_generation_once",
        every_change_of_the_desired_set_bumps_the_generation_once,
    ),
    (
        "a_stop_racing_an_event_is_not_undone",
        a_stop_racing_an_event_is_not_undone,
    ),
    (
        "concurrent_placements_never_over_commit_an_instance",
        concurrent_placements_never_over_commit_an_instance,
    ),
    (
        "deregistration_is_once_and_stops_every_task",
        deregistration_is_once_and_stops_every_task,
    ),
    (
        "constraint_violations_are_conflicts",
        constraint_violations_are_conflicts,
    ),
    ("listings_filter_by_instance", listings_filter_by_instance),
    (
        "registry_revisions_count_up_per_family_and_reuse_equal_content",
        registry_revisions_count_up_per_family_and_reuse_equal_content,
    ),
    (
        "registry_deregistration_is_idempotent_and_filters_listings",
        registry_deregistration_is_idempotent_and_filters_listings,
    ),
    (
        "concurrent_registrations_get_distinct_revisions",
        concurrent_registrations_get_distinct_revisions,
    ),
    (
        "tasks_keep_their_definition_group_and_starter",
        tasks_keep_their_definition_group_and_starter,
    ),
    (
        "services_round_trip_and_are_unique_per_cluster",
        services_round_trip_and_are_unique_per_cluster,
    ),
    (
        "a_deleted_service_is_replaced_by_a_new_create",
        a_deleted_service_is_replaced_by_a_new_create,
    ),
    (
        "a_service_is_created_only_in_an_active_cluster",
        a_service_is_created_only_in_an_active_cluster,
    ),
    (
        "a_stale_update_conflicts_and_a_new_deployment_becomes_primary",
        a_stale_update_conflicts_and_a_new_deployment_becomes_primary,
    ),
    (
        "a_plan_starts_tasks_in_the_service_and_bumps_instance_generations",
        a_plan_starts_tasks_in_the_service_and_bumps_instance_generations,
    ),
    (
        "a_plan_against_a_moved_instance_stores_nothing",
        a_plan_against_a_moved_instance_stores_nothing,
    ),
    (
        "a_plan_stops_and_marks_only_its_own_tasks",
        a_plan_stops_and_marks_only_its_own_tasks,
    ),
    (
        "events_keep_the_newest_hundred_with_bounded_messages",
        events_keep_the_newest_hundred_with_bounded_messages,
    ),
    (
        "plans_from_one_generation_have_one_winner",
        plans_from_one_generation_have_one_winner,
    ),
    (
        "a_task_is_in_its_instance_cluster",
        a_task_is_in_its_instance_cluster,
    ),
    (
        "concurrent_creates_of_one_service_have_one_winner",
        concurrent_creates_of_one_service_have_one_winner,
    ),
    (
        "secrets_round_trip_rotate_and_delete",
        secrets_round_trip_rotate_and_delete,
    ),
    (
        "concurrent_secret_writes_lose_nothing",
        concurrent_secret_writes_lose_nothing,
    ),
    (
        "access_keys_are_created_once_and_revoked_for_good",
        access_keys_are_created_once_and_revoked_for_good,
    ),
];

/// One `#[test]` per check above, each on a fresh database: `$fresh()`
/// returns what keeps the database alive and its opener.
macro_rules! store_conformance {
    ($fresh:expr) => {
        $crate::server::store::conformance::store_conformance!(@ $fresh;
            an_activation_is_used_once_under_concurrency,
            an_event_is_applied_at_most_once_under_concurrency,
            every_change_of_the_desired_set_bumps_the_generation_once,
            a_stop_racing_an_event_is_not_undone,
            concurrent_placements_never_over_commit_an_instance,
            deregistration_is_once_and_stops_every_task,
            constraint_violations_are_conflicts,
            listings_filter_by_instance,
            registry_revisions_count_up_per_family_and_reuse_equal_content,
            registry_deregistration_is_idempotent_and_filters_listings,
            concurrent_registrations_get_distinct_revisions,
            tasks_keep_their_definition_group_and_starter,
            clusters_lifecycle,
            an_activation_joins_its_cluster,
            a_draining_instance_keeps_its_session_but_gets_no_placement,
            services_round_trip_and_are_unique_per_cluster,
            a_deleted_service_is_replaced_by_a_new_create,
            a_service_is_created_only_in_an_active_cluster,
            a_stale_update_conflicts_and_a_new_deployment_becomes_primary,
            a_plan_starts_tasks_in_the_service_and_bumps_instance_generations,
            a_plan_against_a_moved_instance_stores_nothing,
            a_plan_stops_and_marks_only_its_own_tasks,
            events_keep_the_newest_hundred_with_bounded_messages,
            plans_from_one_generation_have_one_winner,
            a_task_is_in_its_instance_cluster,
            concurrent_creates_of_one_service_have_one_winner,
            custom_attributes_are_put_and_deleted_whole,
            secrets_round_trip_rotate_and_delete,
            concurrent_secret_writes_lose_nothing,
            access_keys_are_created_once_and_revoked_for_good
        );
    };
    (@ $fresh:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let (_keep, open) = $fresh();
                $crate::server::store::conformance::$name(&open);
            }
        )*
    };
}
pub(crate) use store_conformance;
