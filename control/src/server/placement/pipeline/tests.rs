use super::super::*;
use super::*;
use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as Gen;

fn c(id: &str, cpu: i64, mem: i64) -> Candidate {
    Candidate::new(
        id,
        Need {
            cpu,
            memory_mib: mem,
        },
    )
}

fn with_attr(mut c: Candidate, k: &str, v: &str) -> Candidate {
    c.attributes.insert(k.into(), v.into());
    c
}

const NEED: Need = Need {
    cpu: 256,
    memory_mib: 512,
};

fn req(strategies: &[&str], constraints: &[&str]) -> Request {
    Request {
        strategies: strategies.iter().map(|s| s.parse().expect(s)).collect(),
        constraints: constraints.iter().map(|s| s.parse().expect(s)).collect(),
        ..Request::new(NEED)
    }
}

fn count(placed: &[String], id: &str) -> usize {
    placed.iter().filter(|p| p.as_str() == id).count()
}

// --- task run (place_task): the behaviour it always had -------------------

#[test]
fn fits_exactly() {
    assert_eq!(
        place_task(&Request::new(NEED), &[c("i-a", 256, 512)], None),
        Ok("i-a".into())
    );
}

#[test]
fn most_free_memory_wins() {
    let cs = [
        c("i-a", 4096, 1000),
        c("i-b", 1024, 3000),
        c("i-c", 8192, 2000),
        c("i-d", 100, 9000), // not enough CPU
    ];
    assert_eq!(place_task(&Request::new(NEED), &cs, None), Ok("i-b".into()));
}

#[test]
fn ties_break_on_cpu_then_id() {
    let r = Request::new(NEED);
    let cs = [
        c("i-b", 1024, 1000),
        c("i-a", 1024, 1000),
        c("i-c", 2048, 1000),
    ];
    assert_eq!(place_task(&r, &cs, None), Ok("i-c".into()));
    let cs = [c("i-b", 1024, 1000), c("i-a", 1024, 1000)];
    assert_eq!(place_task(&r, &cs, None), Ok("i-a".into()));
}

#[test]
fn disconnected_draining_and_inactive_are_skipped() {
    let r = Request::new(NEED);
    let mut off = c("i-off", 8192, 8192);
    off.connected = false;
    let mut gone = c("i-gone", 8192, 8192);
    gone.status = InstanceStatus::Inactive;
    let mut drain = c("i-drain", 8192, 8192);
    drain.status = InstanceStatus::Draining;
    let cs = [off, gone, drain, c("i-on", 512, 1024)];
    assert_eq!(place_task(&r, &cs, None), Ok("i-on".into()));
    assert_eq!(
        place_task(&r, &cs[..3], None),
        Err(PlacementError::NoInstances)
    );
    assert_eq!(
        place(&r, &cs[..3]).map_err(|e| e.to_string()),
        Err("no container instance met all of its requirements. No container instance of the cluster is ACTIVE and connected.".into())
    );
}

#[test]
fn refusal_names_the_need_and_the_best_instance() {
    let cs = [c("i-a", 4096, 100), c("i-b", 4096, 300)];
    let err = place_task(&Request::new(NEED), &cs, None).expect_err("nothing fits");
    assert_eq!(
        err.to_string(),
        "no instance has room for the task: it needs 256 CPU units and 512 MiB; \
         the instance with the most free memory, i-b, has 4096 CPU units and 300 MiB free"
    );
}

#[test]
fn explicit_instance() {
    let r = Request::new(NEED);
    let mut off = c("i-off", 8192, 8192);
    off.connected = false;
    let mut gone = c("i-gone", 8192, 8192);
    gone.status = InstanceStatus::Inactive;
    let mut drain = c("i-drain", 8192, 8192);
    drain.status = InstanceStatus::Draining;
    let cs = [off, gone, drain, c("i-small", 100, 100)];
    assert_eq!(place_task(&r, &cs, Some("i-off")), Ok("i-off".into()));
    assert_eq!(
        place_task(&r, &cs, Some("i-gone")),
        Err(PlacementError::Inactive("i-gone".into()))
    );
    assert_eq!(
        place_task(&r, &cs, Some("i-drain")),
        Err(PlacementError::Draining("i-drain".into()))
    );
    assert_eq!(
        place_task(&r, &cs, Some("i-nope")),
        Err(PlacementError::NoSuchInstance("i-nope".into()))
    );
    assert_eq!(
        place_task(&r, &cs, Some("i-small")).map_err(|e| e.to_string()),
        Err(
            "instance i-small has no room for the task: it needs 256 CPU units and 512 MiB, \
             the instance has 100 CPU units and 100 MiB free"
                .to_owned()
        )
    );
    let mut r = Request::new(NEED);
    r.requirements.push(Requirement::Equals {
        attribute: "berth.policy.allow_privileged".into(),
        value: "true".into(),
    });
    assert_eq!(
        place_task(&r, &cs, Some("i-off")).map_err(|e| e.to_string()),
        Err("unable to place the task because no container instance met all of its requirements. The closest matching container-instance i-off does not offer berth.policy.allow_privileged = true.".into())
    );
}

// --- strategies -----------------------------------------------------------

#[test]
fn spread_instance_id_balances_the_group() {
    let mut a = c("i-a", 4096, 8192);
    a.group_count = 2;
    let mut b = c("i-b", 4096, 1024);
    b.group_count = 1;
    let cc = c("i-c", 4096, 1024);
    let mut fleet = vec![a, b, cc];
    assert_eq!(
        place(&req(&["spread:instanceId"], &[]), &fleet),
        Ok("i-c".into())
    );
    let (placed, err) = place_many(&req(&["spread:instanceId"], &[]), &mut fleet, 3);
    assert_eq!(err, None);
    // c (0 of the group) first, then b and c (1 each), a never until all have 2
    assert_eq!(placed[0], "i-c");
    assert!(!placed.contains(&"i-a".to_owned()));
    let counts: Vec<u64> = fleet.iter().map(|c| c.group_count).collect();
    assert_eq!(counts, [2, 2, 2]);
}

#[test]
fn binpack_fills_one_instance_first() {
    let mut fleet = vec![
        c("i-a", 4096, 2048),
        c("i-b", 4096, 1536),
        c("i-c", 4096, 4096),
    ];
    let (placed, err) = place_many(&req(&["binpack:memory"], &[]), &mut fleet, 6);
    assert_eq!(err, None);
    // least memory left that still fits: b (3 × 512), then a (4 × 512), …
    assert_eq!(placed, ["i-b", "i-b", "i-b", "i-a", "i-a", "i-a"]);
    let mut cpu = vec![c("i-a", 1024, 8192), c("i-b", 512, 8192)];
    let (placed, _) = place_many(&req(&["binpack:cpu"], &[]), &mut cpu, 3);
    assert_eq!(placed, ["i-b", "i-b", "i-a"]);
}

#[test]
fn random_is_seeded_and_spreads_its_choices() {
    let fleet: Vec<Candidate> = (0..8).map(|i| c(&format!("i-{i}"), 4096, 4096)).collect();
    let r = req(&["random"], &[]);
    let first = place(&r, &fleet);
    assert_eq!(place(&r, &fleet), first, "same seed, same choice");
    let choices: std::collections::BTreeSet<String> = (0..64)
        .map(|seed| {
            let r = Request { seed, ..r.clone() };
            place(&r, &fleet).expect("fits")
        })
        .collect();
    assert!(
        choices.len() >= 4,
        "seeds choose different instances: {choices:?}"
    );
}

#[test]
fn later_strategies_break_ties() {
    // zone a has two instances; spread by zone ties them, binpack picks the fuller
    let fleet = vec![
        with_attr(c("i-a1", 4096, 4096), "zone", "a"),
        with_attr(c("i-a2", 4096, 1024), "zone", "a"),
        {
            let mut b = with_attr(c("i-b1", 4096, 512), "zone", "b");
            b.group_count = 1;
            b
        },
    ];
    assert_eq!(
        place(
            &req(&["spread:attribute:zone", "binpack:memory"], &[]),
            &fleet
        ),
        Ok("i-a2".into())
    );
    // without the second strategy: the default tie-break, most free memory
    assert_eq!(
        place(&req(&["spread:attribute:zone"], &[]), &fleet),
        Ok("i-a1".into())
    );
    // the order matters: binpack first picks b1 outright
    assert_eq!(
        place(
            &req(&["binpack:memory", "spread:attribute:zone"], &[]),
            &fleet
        ),
        Ok("i-b1".into())
    );
}

#[test]
fn spread_by_attribute_across_uneven_zones() {
    let mut fleet = vec![
        with_attr(c("i-a1", 4096, 8192), "zone", "a"),
        with_attr(c("i-a2", 4096, 8192), "zone", "a"),
        with_attr(c("i-a3", 4096, 8192), "zone", "a"),
        with_attr(c("i-b1", 4096, 8192), "zone", "b"),
        c("i-none", 4096, 8192), // the absent bucket
    ];
    let (placed, err) = place_many(&req(&["spread:attribute:zone"], &[]), &mut fleet, 9);
    assert_eq!(err, None);
    let zone_a = ["i-a1", "i-a2", "i-a3"]
        .iter()
        .map(|id| count(&placed, id))
        .sum::<usize>();
    assert_eq!(zone_a, 3);
    assert_eq!(count(&placed, "i-b1"), 3);
    assert_eq!(count(&placed, "i-none"), 3);
    // inside zone a: one each (the default tie-break moves to the emptier)
    for id in ["i-a1", "i-a2", "i-a3"] {
        assert_eq!(count(&placed, id), 1, "{id}");
    }
}

#[test]
fn spread_counts_tasks_on_instances_that_cannot_take_more() {
    // a1 is full but holds 2 tasks of the group: zone a is the fuller zone
    let mut a1 = with_attr(c("i-a1", 0, 0), "zone", "a");
    a1.group_count = 2;
    let fleet = vec![
        a1,
        with_attr(c("i-a2", 4096, 8192), "zone", "a"),
        with_attr(c("i-b1", 4096, 1024), "zone", "b"),
    ];
    assert_eq!(
        place(&req(&["spread:attribute:zone"], &[]), &fleet),
        Ok("i-b1".into())
    );
}

// --- constraints ----------------------------------------------------------

#[test]
fn distinct_instance_with_more_tasks_than_instances() {
    let mut fleet = vec![c("i-a", 4096, 8192), c("i-b", 4096, 4096)];
    let (placed, err) = place_many(&req(&[], &["distinctInstance"]), &mut fleet, 3);
    assert_eq!(placed, ["i-a", "i-b"]);
    let err = err.expect("the third fits nowhere");
    assert_eq!(
        err.to_string(),
        "no container instance met all of its requirements. The closest matching container-instance i-a does not meet distinctInstance."
    );
    assert_eq!(
        err.service_event("web"),
        "service (web) was unable to place a task because no container instance met all of its requirements. The closest matching container-instance i-a does not meet distinctInstance."
    );
}

#[test]
fn member_of_only_on_matching_instances() {
    let mut fleet = vec![
        with_attr(c("i-a1", 4096, 1024), "zone", "a"),
        with_attr(c("i-b1", 4096, 8192), "zone", "b"),
        with_attr(c("i-a2", 4096, 1024), "zone", "a"),
    ];
    let r = req(&[], &["memberOf:attribute:zone == a"]);
    let (placed, err) = place_many(&r, &mut fleet, 5);
    assert_eq!(placed.len(), 4);
    assert!(placed.iter().all(|p| p != "i-b1"));
    // the a's are full (they pass the CPU check only); b1 passes CPU and
    // memory and fails the constraint: it came closest
    assert_eq!(
        err.map(|e| e.to_string()),
        Some("no container instance met all of its requirements. The closest matching container-instance i-b1 does not match the constraint memberOf(attribute:zone == a).".into())
    );
}

#[test]
fn shortfalls_of_the_closest_instance() {
    let full = c("i-full", 4096, 100);
    let low_cpu = c("i-cpu", 10, 8192);
    assert_eq!(
        place(&Request::new(NEED), std::slice::from_ref(&full)).map_err(|e| e.to_string()),
        Err("no container instance met all of its requirements. The closest matching container-instance i-full has insufficient memory available.".into())
    );
    assert_eq!(
        place(&Request::new(NEED), &[low_cpu]).map_err(|e| e.to_string()),
        Err("no container instance met all of its requirements. The closest matching container-instance i-cpu has insufficient CPU units available.".into())
    );
    let mut busy = c("i-busy", 4096, 8192);
    busy.used_host_ports.insert((8080, Protocol::Tcp));
    let mut r = Request::new(NEED);
    r.host_ports.push((8080, Protocol::Tcp));
    assert_eq!(
        place(&r, &[busy.clone(), full]).map_err(|e| e.to_string()),
        Err("no container instance met all of its requirements. The closest matching container-instance i-busy has the host port 8080/tcp already in use.".into())
    );
    let mut r = Request::new(NEED);
    r.host_ports.push((8080, Protocol::Udp));
    assert_eq!(
        place(&r, &[busy]),
        Ok("i-busy".into()),
        "udp is another port"
    );
}

#[test]
fn place_many_respects_capacity_and_ports() {
    let mut fleet = vec![c("i-a", 1024, 1024), c("i-b", 1024, 2048)];
    let (placed, err) = place_many(&Request::new(NEED), &mut fleet, 10);
    assert_eq!(placed.len(), 6, "2 + 4 tasks of 512 MiB");
    assert_eq!(count(&placed, "i-a"), 2);
    assert_eq!(
        err.map(|e| e.to_string()),
        Some("no container instance met all of its requirements. The closest matching container-instance i-a has insufficient memory available.".into())
    );
    assert!(fleet.iter().all(|c| c.free.memory_mib == 0));
    assert_eq!(fleet[1].running_tasks_count, 4);

    let mut fleet = vec![c("i-a", 4096, 8192), c("i-b", 4096, 8192)];
    let mut r = Request::new(NEED);
    r.requirements
        .push(Requirement::HostPort(80, Protocol::Tcp));
    let (placed, err) = place_many(&r, &mut fleet, 3);
    assert_eq!(placed, ["i-a", "i-b"]);
    assert!(
        err.expect("no third port")
            .to_string()
            .contains("host port 80/tcp already in use")
    );
}

#[test]
fn requirements_filter_and_refuse_up_front() {
    let def = berth_taskdef::parse(
        r#"{"family":"p","containerDefinitions":[{"name":"a","image":"busybox","memory":64,"privileged":true,
            "portMappings":[{"containerPort":80,"hostPort":8080}]}]}"#,
    )
    .expect("parses")
    .definition;
    let r = Request::for_definition(&def);
    assert_eq!(r.host_ports, [(8080, Protocol::Tcp)]);
    assert_eq!(r.need.memory_mib, 64);
    let plain = c("i-plain", 4096, 8192);
    let allowed = with_attr(
        c("i-priv", 1024, 1024),
        "berth.policy.allow_privileged",
        "true",
    );
    assert_eq!(
        place(&r, &[plain.clone(), allowed.clone()]),
        Ok("i-priv".into())
    );
    assert_eq!(
        place(&r, std::slice::from_ref(&plain)).map_err(|e| e.to_string()),
        Err("no container instance met all of its requirements. The closest matching container-instance i-plain does not offer berth.policy.allow_privileged = true.".into())
    );
    assert_eq!(
        unplaceable_anywhere(&r.requirements, &[plain.clone(), allowed.clone()]),
        None
    );
    let mut off = allowed;
    off.connected = false;
    off.free = Need::default();
    assert_eq!(
        unplaceable_anywhere(&r.requirements, &[plain.clone(), off.clone()]),
        None,
        "a disconnected or full instance could still run it later"
    );
    off.status = InstanceStatus::Draining;
    let refused = unplaceable_anywhere(&r.requirements, &[plain, off]).expect("nowhere");
    assert_eq!(
        refused
            .closest
            .map(|c| (c.instance_id, c.shortfall.to_string())),
        Some((
            "i-plain".into(),
            "does not offer berth.policy.allow_privileged = true".into()
        ))
    );
    assert_eq!(unplaceable_anywhere(&r.requirements, &[]), None);
}

// --- properties -----------------------------------------------------------

fn arb_candidate() -> impl Gen<Value = Candidate> {
    (
        0u8..12,
        0u8..3,
        any::<bool>(),
        0i64..3000,
        0i64..3000,
        proptest::collection::btree_set(
            (prop_oneof![Just(80u16), Just(8080u16)], Just(Protocol::Tcp)),
            0..2,
        ),
        prop_oneof![Just(None), Just(Some("a")), Just(Some("b"))],
        any::<bool>(),
        0u64..3,
    )
        .prop_map(
            |(id, status, connected, cpu, mem, ports, zone, privileged, group)| {
                let mut c = Candidate::new(
                    &format!("i-{id}"),
                    Need {
                        cpu,
                        memory_mib: mem,
                    },
                );
                c.status = [
                    InstanceStatus::Active,
                    InstanceStatus::Draining,
                    InstanceStatus::Inactive,
                ][usize::from(status)];
                c.connected = connected;
                c.used_host_ports = ports;
                if let Some(z) = zone {
                    c.attributes.insert("zone".into(), z.into());
                }
                if privileged {
                    c.attributes
                        .insert("berth.policy.allow_privileged".into(), "true".into());
                }
                c.group_count = group;
                c.running_tasks_count = group;
                c
            },
        )
}

fn arb_request() -> impl Gen<Value = Request> {
    let strategies = proptest::collection::vec(
        prop_oneof![
            Just("spread:instanceId"),
            Just("spread:attribute:zone"),
            Just("binpack:cpu"),
            Just("binpack:memory"),
            Just("random"),
        ],
        0..3,
    );
    let constraints = proptest::collection::vec(
        prop_oneof![
            Just("distinctInstance"),
            Just("memberOf:attribute:zone == a"),
            Just("memberOf:attribute:zone in (a, b) and not runningTasksCount > 1"),
            Just("memberOf:attribute:zone !exists or instanceId =~ 'i-[0-5]'"),
        ],
        0..2,
    );
    (
        0i64..1500,
        0i64..1500,
        proptest::option::of(prop_oneof![Just(80u16), Just(8080u16)]),
        any::<bool>(),
        strategies,
        constraints,
        any::<u64>(),
    )
        .prop_map(|(cpu, mem, port, privileged, s, k, seed)| Request {
            need: Need {
                cpu,
                memory_mib: mem,
            },
            host_ports: port.map(|p| (p, Protocol::Tcp)).into_iter().collect(),
            requirements: if privileged {
                vec![Requirement::Equals {
                    attribute: "berth.policy.allow_privileged".into(),
                    value: "true".into(),
                }]
            } else {
                Vec::new()
            },
            strategies: s.iter().map(|s| s.parse().expect("valid")).collect(),
            constraints: k.iter().map(|s| s.parse().expect("valid")).collect(),
            seed,
        })
}

fn satisfies(r: &Request, c: &Candidate) -> bool {
    c.status == InstanceStatus::Active
        && c.connected
        && c.free.cpu >= r.need.cpu
        && c.free.memory_mib >= r.need.memory_mib
        && r.host_ports.iter().all(|p| !c.used_host_ports.contains(p))
        && r.requirements.iter().all(|q| q.met_by(&c.attributes))
        && r.constraints.iter().all(|k| match k {
            Constraint::DistinctInstance => c.group_count == 0,
            Constraint::MemberOf(q) => q.matches(&c.facts()),
        })
}

proptest! {
    #[test]
    fn a_placed_instance_satisfies_the_request(
        fleet in proptest::collection::vec(arb_candidate(), 0..10),
        r in arb_request(),
    ) {
        // unique ids, as in a real snapshot
        let mut seen = std::collections::BTreeSet::new();
        let fleet: Vec<Candidate> = fleet.into_iter().filter(|c| seen.insert(c.instance_id.clone())).collect();
        match place(&r, &fleet) {
            Ok(id) => {
                let c = fleet.iter().find(|c| c.instance_id == id).expect("placed on a candidate");
                prop_assert!(satisfies(&r, c), "{id} does not satisfy the request");
            }
            Err(e) => {
                prop_assert!(!fleet.iter().any(|c| satisfies(&r, c)), "refused though one fits: {e}");
                let eligible = fleet.iter().any(|c| c.status == InstanceStatus::Active && c.connected);
                prop_assert_eq!(e.closest.is_some(), eligible);
            }
        }
    }

    #[test]
    fn place_many_keeps_every_task_within_capacity_and_ports(
        fleet in proptest::collection::vec(arb_candidate(), 0..8),
        r in arb_request(),
        n in 0usize..12,
    ) {
        let mut seen = std::collections::BTreeSet::new();
        let mut fleet: Vec<Candidate> = fleet.into_iter().filter(|c| seen.insert(c.instance_id.clone())).collect();
        let before = fleet.clone();
        let (placed, err) = place_many(&r, &mut fleet, n);
        prop_assert!(placed.len() == n || (placed.len() < n && err.is_some()));
        for c in &fleet {
            let b = before.iter().find(|b| b.instance_id == c.instance_id).expect("same fleet");
            let k = placed.iter().filter(|p| **p == c.instance_id).count() as i64;
            prop_assert!(k == 0 || (b.status == InstanceStatus::Active && b.connected));
            prop_assert_eq!(c.free.memory_mib, b.free.memory_mib - k * r.need.memory_mib);
            prop_assert_eq!(c.free.cpu, b.free.cpu - k * r.need.cpu);
            prop_assert!(c.free.memory_mib >= 0 && c.free.cpu >= 0);
            if !r.host_ports.is_empty() {
                prop_assert!(k <= 1, "one static port, at most one task per instance");
            }
            if r.constraints.contains(&Constraint::DistinctInstance) {
                prop_assert!(k <= 1);
            }
        }
    }

    #[test]
    fn placing_never_panics_on_random_queries(expr in "\\PC{0,60}", fleet in proptest::collection::vec(arb_candidate(), 0..4)) {
        if let Ok(k) = format!("memberOf:{expr}").parse::<Constraint>() {
            let r = Request { constraints: vec![k], ..Request::new(Need::default()) };
            let _ = place(&r, &fleet);
        }
    }
}
