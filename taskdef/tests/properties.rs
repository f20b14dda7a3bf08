//! Property tests.
//!
//! - Any valid definition (generated within ECS' rules: 1–10 containers, at
//!   least one essential, no duplicate ports, dependsOn/links/volumesFrom
//!   forming a DAG, health checks in range, ...) serialized to JSON is
//!   accepted by `parse`, in both input shapes, and round-trips unchanged.
//! - Arbitrary JSON, arbitrary text and random mutations of valid
//!   definitions never make `parse` panic, and whatever `parse` accepts,
//!   `validate` accepts too.

use berth_taskdef::*;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// (CMD-SHELL?, command, interval, timeout, retries, startPeriod)
type HealthSeed = (
    bool,
    String,
    Option<u64>,
    Option<u64>,
    Option<u64>,
    Option<u64>,
);

/// The per-container choices; turned into a valid container by [`build`].
#[derive(Debug, Clone)]
struct Seed {
    image: String,
    essential: Option<bool>,
    cpu: Option<u64>,
    memory: u64,
    /// 0: memory, 1: memoryReservation, 2: both, 3: neither (only with task memory)
    memory_kind: u8,
    reservation_pct: u64,
    /// (host port kind, udp)
    ports: Vec<(u8, bool)>,
    depends: Vec<(Index, u8)>,
    links: Vec<(Index, bool)>,
    volumes_from: Vec<Index>,
    health: Option<HealthSeed>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    stop_timeout: Option<u64>,
    start_timeout: Option<u64>,
    restart: Option<(bool, Vec<i64>, Option<u64>)>,
    command: Option<Vec<String>>,
    mounts: Vec<Index>,
    hostname: Option<String>,
    ulimit: Option<(u8, i64, i64)>,
}

fn seed() -> impl Strategy<Value = Seed> {
    let a = (
        "[a-z0-9]{1,10}(/[a-z0-9_-]{1,10}){0,2}(:[a-z0-9._-]{1,8})?",
        prop::option::of(any::<bool>()),
        prop::option::of(0u64..4096),
        6u64..8192,
        0u8..4,
        0u64..=100,
        prop::collection::vec((0u8..3, any::<bool>()), 0..4),
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        prop::collection::vec((any::<Index>(), any::<bool>()), 0..3),
        prop::collection::vec(any::<Index>(), 0..2),
    );
    let b = (
        prop::option::of((
            any::<bool>(),
            "[a-z][a-z /._-]{0,20}",
            prop::option::of(5u64..=300),
            prop::option::of(2u64..=60),
            prop::option::of(1u64..=10),
            prop::option::of(0u64..=300),
        )),
        prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_.]{0,8}", "[^\\x00]{0,12}", 0..4),
        prop::collection::btree_map("com\\.example\\.[a-z]{1,8}", ".{0,8}", 0..3),
        prop::option::of(0u64..=120),
        prop::option::of(2u64..=600),
        prop::option::of((
            any::<bool>(),
            prop::collection::vec(-5i64..300, 0..=50),
            prop::option::of(0u64..=1800),
        )),
        prop::option::of(prop::collection::vec(".{0,10}", 0..4)),
        prop::collection::vec(any::<Index>(), 0..3),
        prop::option::of("[a-z][a-z0-9-]{0,20}"),
        prop::option::of((0u8..15, -1i64..100_000, -1i64..100_000)),
    );
    (a, b).prop_map(
        |(
            (
                image,
                essential,
                cpu,
                memory,
                memory_kind,
                reservation_pct,
                ports,
                depends,
                links,
                volumes_from,
            ),
            (
                health,
                env,
                labels,
                stop_timeout,
                start_timeout,
                restart,
                command,
                mounts,
                hostname,
                ulimit,
            ),
        )| Seed {
            image,
            essential,
            cpu,
            memory,
            memory_kind,
            reservation_pct,
            ports,
            depends,
            links,
            volumes_from,
            health,
            env,
            labels,
            stop_timeout,
            start_timeout,
            restart,
            command,
            mounts,
            hostname,
            ulimit,
        },
    )
}

const ULIMITS: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

#[derive(Debug, Clone)]
struct TaskSeed {
    family: String,
    names: BTreeSet<String>,
    seeds: Vec<Seed>,
    must_be_essential: Index,
    /// 0: absent (bridge), 1: bridge, 2: host, 3: none
    mode: u8,
    task_cpu: Option<(u64, bool)>,
    task_memory: Option<(u64, bool)>,
    volumes: Vec<(u8, String)>,
    port_base: u16,
}

fn task_seed() -> impl Strategy<Value = TaskSeed> {
    prop::collection::btree_set("[A-Za-z0-9_-]{1,12}", 1..=MAX_CONTAINERS).prop_flat_map(|names| {
        let n = names.len();
        (
            "[A-Za-z0-9_-]{1,40}",
            Just(names),
            prop::collection::vec(seed(), n),
            any::<Index>(),
            0u8..4,
            prop::option::of((0u64..1024, any::<bool>())),
            prop::option::of((0u64..1024, any::<bool>())),
            prop::collection::vec((0u8..4, "[a-z]{1,8}"), 0..3),
            1u16..20_000,
        )
            .prop_map(
                |(
                    family,
                    names,
                    seeds,
                    must_be_essential,
                    mode,
                    task_cpu,
                    task_memory,
                    volumes,
                    port_base,
                )| {
                    TaskSeed {
                        family,
                        names,
                        seeds,
                        must_be_essential,
                        mode,
                        task_cpu,
                        task_memory,
                        volumes,
                        port_base,
                    }
                },
            )
    })
}

/// Builds a definition that satisfies every rule from the seeds.
fn build(t: TaskSeed) -> TaskDefinition {
    let names: Vec<String> = t.names.into_iter().collect();
    let n = names.len();
    let mode = match t.mode {
        0 => None,
        1 => Some("bridge"),
        2 => Some("host"),
        _ => Some("none"),
    };
    let host = mode == Some("host");
    let bridge = matches!(mode, None | Some("bridge"));

    let volumes: Vec<Volume> = t
        .volumes
        .iter()
        .enumerate()
        .map(|(k, (kind, word))| {
            let name = format!("v{k}-{word}");
            match kind {
                0 => Volume {
                    name,
                    ..Default::default()
                },
                1 => Volume {
                    name,
                    host: Some(HostVolume {
                        source_path: Some(format!("/srv/{word}")),
                    }),
                    ..Default::default()
                },
                2 => Volume {
                    name,
                    docker_volume_configuration: Some(DockerVolumeConfiguration {
                        scope: Some("task".into()),
                        driver: Some("local".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                _ => Volume {
                    name,
                    docker_volume_configuration: Some(DockerVolumeConfiguration {
                        scope: Some("shared".into()),
                        autoprovision: Some(true),
                        labels: BTreeMap::from([("team".to_owned(), word.clone())]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            }
        })
        .collect();

    // Essential flags first: dependency conditions depend on them.
    let mut essential: Vec<Option<bool>> = t.seeds.iter().map(|s| s.essential).collect();
    if !essential.iter().any(|e| e.unwrap_or(true)) {
        let i = t.must_be_essential.index(n);
        essential[i] = Some(true);
    }
    let is_essential = |i: usize| essential[i].unwrap_or(true);
    let has_health: Vec<bool> = t.seeds.iter().map(|s| s.health.is_some()).collect();
    let task_memory_set = t.task_memory.is_some();

    let mut next_port = t.port_base;
    let mut containers = Vec::new();
    for (i, s) in t.seeds.iter().enumerate() {
        let mut c = ContainerDefinition {
            name: names[i].clone(),
            image: s.image.clone(),
            essential: essential[i],
            cpu: s.cpu,
            command: s.command.clone(),
            stop_timeout: s.stop_timeout,
            start_timeout: s.start_timeout,
            docker_labels: s.labels.clone(),
            ..Default::default()
        };
        let reservation = (s.memory * s.reservation_pct / 100).max(6);
        match s.memory_kind {
            0 => c.memory = Some(s.memory),
            1 => c.memory_reservation = Some(reservation),
            3 if task_memory_set => {}
            _ => {
                c.memory = Some(s.memory);
                c.memory_reservation = Some(reservation.min(s.memory));
            }
        }
        c.environment = s
            .env
            .iter()
            .map(|(k, v)| KeyValuePair {
                name: k.clone(),
                value: v.clone(),
            })
            .collect();
        if mode != Some("none") {
            for (kind, udp) in &s.ports {
                let cp = next_port;
                next_port += 1;
                let host_port = match (host, kind) {
                    (true, 0) => None,
                    (true, _) => Some(cp),
                    (false, 0) => None,
                    (false, 1) => Some(0),
                    (false, _) => Some(cp + 20_000),
                };
                c.port_mappings.push(PortMapping {
                    container_port: Some(cp),
                    host_port,
                    protocol: udp.then(|| "udp".to_owned()),
                    ..Default::default()
                });
            }
        }
        // Edges only to earlier containers: a DAG by construction.
        if i > 0 {
            let mut seen = BTreeSet::new();
            for (idx, cond) in &s.depends {
                let j = idx.index(i);
                if !seen.insert(j) {
                    continue;
                }
                let mut allowed = vec!["START"];
                if has_health[j] {
                    allowed.push("HEALTHY");
                }
                if !is_essential(j) {
                    allowed.extend(["COMPLETE", "SUCCESS"]);
                }
                c.depends_on.push(ContainerDependency {
                    container_name: names[j].clone(),
                    condition: allowed[usize::from(*cond) % allowed.len()].to_owned(),
                });
            }
            if bridge {
                for (idx, alias) in &s.links {
                    let j = idx.index(i);
                    c.links.push(if *alias {
                        format!("{}:alias{j}", names[j])
                    } else {
                        names[j].clone()
                    });
                }
            }
            for idx in &s.volumes_from {
                c.volumes_from.push(VolumeFrom {
                    source_container: names[idx.index(i)].clone(),
                    read_only: Some(true),
                });
            }
        }
        if !volumes.is_empty() {
            let mut used = BTreeSet::new();
            for idx in &s.mounts {
                let k = idx.index(volumes.len());
                if used.insert(k) {
                    c.mount_points.push(MountPoint {
                        source_volume: volumes[k].name.clone(),
                        container_path: format!("/mnt/{k}"),
                        read_only: None,
                    });
                }
            }
        }
        if let Some((shell, cmd, interval, timeout, retries, start_period)) = &s.health {
            let command = if *shell {
                vec!["CMD-SHELL".to_owned(), cmd.clone()]
            } else {
                vec!["CMD".to_owned(), cmd.clone(), "--check".to_owned()]
            };
            c.health_check = Some(HealthCheck {
                command,
                interval: *interval,
                timeout: *timeout,
                retries: *retries,
                start_period: *start_period,
            });
        }
        if let Some((enabled, codes, period)) = &s.restart {
            c.restart_policy = Some(RestartPolicy {
                enabled: *enabled,
                ignored_exit_codes: codes.clone(),
                restart_attempt_period: *period,
            });
        }
        if !host {
            c.hostname = s.hostname.clone();
        }
        if let Some((k, a, b)) = s.ulimit {
            let (soft, hard) = match (a, b) {
                (-1, _) | (_, -1) => (-1, -1),
                _ => (a.min(b), a.max(b)),
            };
            c.ulimits.push(Ulimit {
                name: ULIMITS[usize::from(k) % ULIMITS.len()].to_owned(),
                soft_limit: soft,
                hard_limit: hard,
            });
        }
        containers.push(c);
    }

    let sum_cpu: u64 = containers.iter().map(|c| c.cpu.unwrap_or(0)).sum();
    let sum_mem: u64 = containers
        .iter()
        .map(|c| c.memory.or(c.memory_reservation).unwrap_or(0))
        .sum();
    let cpu = t.task_cpu.map(|(extra, as_string)| {
        let units = (sum_cpu + extra).max(128);
        if as_string {
            Value::String(units.to_string())
        } else {
            Value::from(units)
        }
    });
    let memory = t.task_memory.map(|(extra, as_gb)| {
        let mib = (sum_mem + extra).max(6);
        if as_gb {
            // Round up to whole GB so that the string form is exact.
            Value::String(format!("{} GB", mib.div_ceil(1024)))
        } else {
            Value::String(mib.to_string())
        }
    });

    TaskDefinition {
        family: t.family,
        cpu,
        memory,
        network_mode: mode.map(str::to_owned),
        container_definitions: containers,
        volumes,
        ..Default::default()
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    const KEYS: &[&str] = &[
        "family",
        "containerDefinitions",
        "name",
        "image",
        "memory",
        "cpu",
        "portMappings",
        "containerPort",
        "hostPort",
        "dependsOn",
        "containerName",
        "condition",
        "healthCheck",
        "command",
        "volumes",
        "taskDefinition",
        "networkMode",
        "links",
        "essential",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "START",
            "HEALTHY",
            "host",
            "CMD",
            "CMD-SHELL",
            "1 vCPU",
            "2GB"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 128, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,8}"],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Walks into `v` by the random indices of `walk` and replaces the node
/// reached with `with`.
fn mutate(v: &mut Value, walk: &[Index], with: Value) {
    let Some((idx, rest)) = walk.split_first() else {
        *v = with;
        return;
    };
    match v {
        Value::Array(a) if !a.is_empty() => {
            let i = idx.index(a.len());
            if let Some(n) = a.get_mut(i) {
                mutate(n, rest, with);
            }
        }
        Value::Object(m) if !m.is_empty() => {
            let i = idx.index(m.len());
            if let Some(n) = m.values_mut().nth(i) {
                mutate(n, rest, with);
            }
        }
        _ => *v = with,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_definitions_parse_and_round_trip(t in task_seed(), describe in any::<bool>()) {
        let def = build(t);
        let json = if describe {
            serde_json::to_string_pretty(&json!({ "taskDefinition": def, "tags": [] }))
        } else {
            serde_json::to_string_pretty(&def)
        };
        let json = json.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assume!(json.len() <= MAX_DEFINITION_BYTES);
        match parse(&json) {
            Ok(parsed) => {
                prop_assert_eq!(&parsed.definition, &def);
                prop_assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
                prop_assert!(validate(&def).is_ok());
                let r = def.reservation();
                if def.memory.is_none() {
                    prop_assert!(r.memory_mib >= 6);
                }
            }
            Err(e) => prop_assert!(false, "refused a valid definition: {}\n{}", e, json),
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let text = v.to_string();
        if let Ok(p) = parse(&text) {
            prop_assert!(validate(&p.definition).is_ok());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_definitions_never_panic(
        t in task_seed(),
        walk in prop::collection::vec(any::<Index>(), 0..6),
        with in arb_json(),
    ) {
        let def = build(t);
        let mut v = serde_json::to_value(&def).map_err(|e| TestCaseError::fail(e.to_string()))?;
        mutate(&mut v, &walk, with);
        if let Ok(p) = parse(&v.to_string()) {
            prop_assert!(validate(&p.definition).is_ok());
            let _ = p.definition.reservation();
            let _ = p.definition.network_mode();
        }
    }
}
