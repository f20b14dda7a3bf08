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
            custom_attributes_are_put_and_deleted_whole
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
