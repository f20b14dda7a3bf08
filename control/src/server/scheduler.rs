//! The scheduler: turns a task definition into a placed, stored task and
//! tells the chosen instance's agent. `RunTask` calls [`run_task`]; the
//! service controller places with [`candidates`] and the pipeline itself.
//!
//! Steps: validate (parse the definition, compute its reservation and
//! requirements) → place ([`placement::place_task`], pure, over a snapshot
//! of the fleet, with the group counts of the task's group when a
//! constraint or strategy needs them) →
//! insert (the task, with the instance's generation bump) → notify (the
//! instance's live session, if any).
//!
//! Invariant (the placement critical section, [`place_and_insert`]): the
//! insert holds only if the chosen instance is still at the generation the
//! snapshot saw, so two tasks placed at once (on this server or another)
//! cannot both take an instance's last free capacity.

use std::collections::HashSet;

use tracing::{Instrument, debug, info, info_span};

use super::Core;
use super::placement::{self, Candidate, InstanceStatus, Need, PlacementError, Request};
use super::store::{
    InstanceRecord, PENDING, RUNNING, STOPPED, Store, StoreError, TaskRecord, Usage,
};

/// The health status of a task nothing has reported on yet.
const UNKNOWN_HEALTH: &str = "UNKNOWN";

/// Why a task was not scheduled.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Definition(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A task the scheduler placed and stored.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub task: TaskRecord,
    /// Whether the chosen instance has a live session right now.
    pub connected: bool,
}

/// What a task reserves, from its parsed definition.
fn need_of(definition: &berth_taskdef::TaskDefinition) -> Need {
    let reservation = definition.reservation();
    Need {
        cpu: i64::try_from(reservation.cpu).unwrap_or(i64::MAX),
        memory_mib: i64::try_from(reservation.memory_mib).unwrap_or(i64::MAX),
    }
}

/// The fleet as placement sees it: every instance with what is left of its
/// capacity (the lower of registered and reported, minus the reservations
/// of its tasks not STOPPED) and all its attributes
/// ([`InstanceRecord::all_attributes`]).
pub fn candidates(
    instances: &[InstanceRecord],
    usage: &std::collections::HashMap<String, Usage>,
    connected: &HashSet<String>,
) -> Vec<Candidate> {
    instances
        .iter()
        .map(|i| {
            let u = usage.get(&i.instance_id).copied().unwrap_or_default();
            // Never more than registered, whatever a Hello said.
            let (cpu, memory_mib) = i.capacity();
            // The agent's, the platform recorded at enrollment, the
            // operator's custom ones over them.
            let attributes = i.all_attributes();
            Candidate {
                instance_id: i.instance_id.clone(),
                status: InstanceStatus::from_store(&i.status),
                connected: connected.contains(&i.instance_id),
                free: Need {
                    cpu: cpu - u.cpu,
                    memory_mib: memory_mib - u.memory_mib,
                },
                attributes,
                agent_version: i.agent_version.clone(),
                running_tasks_count: u64::from(u.running),
                ..Candidate::default()
            }
        })
        .collect()
}

/// How many times placement runs again when the chosen instance changed
/// between its snapshot and the insert (another task was placed on it).
pub const PLACEMENT_ATTEMPTS: u32 = 8;

/// The placement critical section: a snapshot of the fleet (one
/// transaction), a choice ([`placement::place_task`]), and an insert that holds
/// only if the chosen instance is still at the generation the snapshot saw
/// ([`Store::insert_task_at`]). Every change that raises an instance's
/// reservations bumps its generation, so two placements at once cannot
/// both take its last free capacity: the later one sees a conflict and
/// places again against a fresh snapshot.
pub fn place_and_insert(
    s: &dyn Store,
    task: TaskRecord,
    need: Need,
    explicit: Option<&str>,
    connected: &HashSet<String>,
) -> Result<TaskRecord, ScheduleError> {
    place_request_and_insert(s, task, &Request::new(need), explicit, connected)
}

/// Whether placing `req` needs to know how many tasks of the task's group
/// each instance runs (`distinctInstance`, `spread`).
fn uses_group_counts(req: &Request) -> bool {
    req.constraints
        .iter()
        .any(|c| matches!(c, placement::Constraint::DistinctInstance))
        || req
            .strategies
            .iter()
            .any(|s| matches!(s, placement::Strategy::Spread(_)))
}

/// Sets each candidate's `group_count`: the tasks of `group` not STOPPED
/// on it.
fn count_group(s: &dyn Store, group: &str, fleet: &mut [Candidate]) -> Result<(), StoreError> {
    let mut counts: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for t in s.tasks(None)? {
        if t.group == group && t.last_status != STOPPED {
            *counts.entry(t.instance_id).or_default() += 1;
        }
    }
    for c in fleet {
        c.group_count = counts.get(&c.instance_id).copied().unwrap_or(0);
    }
    Ok(())
}

/// [`place_and_insert`] for a whole placement request: the definition's
/// requirements, constraints and strategies ([`Request`]); the candidates'
/// group counts are those of `task.group`. The snapshot, the choice and
/// the insert under the generation check are the same.
pub fn place_request_and_insert(
    s: &dyn Store,
    task: TaskRecord,
    req: &Request,
    explicit: Option<&str>,
    connected: &HashSet<String>,
) -> Result<TaskRecord, ScheduleError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let snapshot = s.placement_snapshot()?;
        let mut fleet = candidates(&snapshot.instances, &snapshot.usage, connected);
        if uses_group_counts(req) {
            // Read after the snapshot: a task of the group inserted since
            // bumped its instance's generation, so choosing that instance
            // is a conflict below and placement runs again.
            count_group(s, &task.group, &mut fleet)?;
        }
        let instance_id = placement::place_task(req, &fleet, explicit)?;
        let generation = snapshot
            .instances
            .iter()
            .find(|i| i.instance_id == instance_id)
            .map_or(0, |i| i.generation);
        let placed = TaskRecord {
            instance_id,
            ..task.clone()
        };
        match s.insert_task_at(&placed, generation) {
            Ok(_) => return Ok(placed),
            Err(StoreError::Conflict { .. }) if tries < PLACEMENT_ATTEMPTS => {
                debug!(instance_id = %placed.instance_id, attempt = tries, "instance changed during placement; placing again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where a task comes from: its registered definition (`family:revision`,
/// '' for none), its task group and who started it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub task_definition: String,
    pub group: String,
    pub started_by: String,
}

/// How `task run` places, beyond the definition's requirements: the
/// constraints and strategies of the command line, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub constraints: Vec<placement::Constraint>,
    pub strategies: Vec<placement::Strategy>,
}

/// Schedules one task of `definition_json`, on `instance_id` when given
/// (it must exist, be ACTIVE, have room and meet the requirements and
/// constraints) or by the placement pipeline: the definition's
/// requirements ([`Request::for_definition`]), then `placement`'s
/// constraints and strategies (`random` seeded by the task id; without a
/// strategy, the connected ACTIVE instance with the most free memory).
pub(crate) async fn run_task(
    core: &Core,
    definition_json: String,
    instance_id: Option<String>,
    origin: Origin,
    placement: Placement,
) -> Result<Scheduled, ScheduleError> {
    let parsed = berth_taskdef::parse(&definition_json)
        .map_err(|e| ScheduleError::Definition(e.to_string()))?;
    let need = need_of(&parsed.definition);
    let task_id = uuid::Uuid::new_v4().simple().to_string();
    let span = info_span!("task", %task_id, family = %parsed.definition.family);
    let task = TaskRecord {
        task_id,
        instance_id: String::new(),
        family: parsed.definition.family.clone(),
        definition_json,
        desired_status: RUNNING.to_owned(),
        last_status: PENDING.to_owned(),
        health_status: UNKNOWN_HEALTH.to_owned(),
        created_at_ms: berth_proto::now_ms(),
        reserved_cpu: need.cpu,
        reserved_memory_mib: need.memory_mib,
        task_definition: origin.task_definition,
        group: origin.group,
        started_by: origin.started_by,
        ..TaskRecord::default()
    };
    let request = Request {
        constraints: placement.constraints,
        strategies: placement.strategies,
        seed: seed_of(&task.task_id),
        ..Request::for_definition(&parsed.definition)
    };
    let connected = core.sessions().connected_instances();
    let placed = core
        .db("place_task", move |s| {
            place_request_and_insert(s, task, &request, instance_id.as_deref(), &connected)
        })
        .instrument(span.clone())
        .await;
    let placed = match placed {
        Ok(t) => t,
        Err(ScheduleError::Placement(e)) => {
            span.in_scope(|| info!(reason = %e, "task refused"));
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    span.in_scope(|| {
        info!(instance_id = %placed.instance_id, cpu = need.cpu, memory_mib = need.memory_mib, "task placed");
        for w in &parsed.warnings {
            info!(warning = %w, "task definition warning");
        }
    });
    core.sessions().notify_assignment(&placed.instance_id);
    let connected = core.sessions().is_connected(&placed.instance_id);
    Ok(Scheduled {
        task: placed,
        connected,
    })
}

/// A `random` seed from a task id (a random UUID's hex): its first 16 hex
/// digits.
fn seed_of(task_id: &str) -> u64 {
    let digits: String = task_id.chars().take(16).collect();
    u64::from_str_radix(&digits, 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::store::ACTIVE;
    use super::*;

    fn instance(id: &str, status: &str, cpu: i64, memory_mib: i64) -> InstanceRecord {
        InstanceRecord {
            instance_id: id.into(),
            status: status.into(),
            cpu,
            memory_mib,
            reported_cpu: cpu,
            reported_memory_mib: memory_mib,
            ..InstanceRecord::default()
        }
    }

    #[test]
    fn candidates_subtract_usage_and_mark_connected_and_active() {
        let instances = vec![
            instance("i-1", ACTIVE, 1024, 2048),
            instance("i-2", super::super::store::INACTIVE, 1024, 2048),
        ];
        let mut usage = std::collections::HashMap::new();
        usage.insert(
            "i-1".to_owned(),
            Usage {
                cpu: 256,
                memory_mib: 512,
                running: 1,
                pending: 0,
            },
        );
        let connected: HashSet<String> = ["i-1".to_owned()].into();
        let c = candidates(&instances, &usage, &connected);
        assert_eq!(
            c[0],
            Candidate {
                instance_id: "i-1".into(),
                status: InstanceStatus::Active,
                connected: true,
                free: Need {
                    cpu: 768,
                    memory_mib: 1536
                },
                running_tasks_count: 1,
                ..Candidate::default()
            }
        );
        assert!(c[1].status == InstanceStatus::Inactive && !c[1].connected);
        assert_eq!(c[1].free.memory_mib, 2048);
    }

    #[test]
    fn a_reported_capacity_below_the_registered_one_is_what_placement_sees() {
        let mut i = instance("i-1", ACTIVE, 1024, 2048);
        i.reported_memory_mib = 1024;
        let c = candidates(&[i], &Default::default(), &HashSet::new());
        assert_eq!(c[0].free.memory_mib, 1024);
    }

    #[test]
    fn candidates_carry_the_platform_attributes_unless_the_agent_sent_them() {
        let mut i = instance("i-1", ACTIVE, 1024, 2048);
        i.os = "linux".into();
        i.arch = "x86_64".into();
        i.agent_version = "0.13.0".into();
        let mut j = i.clone();
        j.instance_id = "i-2".into();
        j.attributes
            .insert("ecs.cpu-architecture".into(), "arm64".into());
        let c = candidates(&[i, j], &Default::default(), &HashSet::new());
        assert_eq!(c[0].attributes["ecs.os-type"], "linux");
        assert_eq!(c[0].attributes["ecs.cpu-architecture"], "x86_64");
        assert_eq!(c[0].agent_version, "0.13.0");
        assert_eq!(c[1].attributes["ecs.cpu-architecture"], "arm64");
    }

    #[test]
    fn candidates_see_custom_attributes_over_the_agents_but_never_over_built_in_ones() {
        let mut i = instance("i-1", ACTIVE, 1024, 1024);
        i.attributes = [
            ("zone".to_owned(), "rack-1".to_owned()),
            ("team".to_owned(), "web".to_owned()),
            (
                "berth.policy.allow_privileged".to_owned(),
                "false".to_owned(),
            ),
        ]
        .into();
        i.custom_attributes = [
            ("zone".to_owned(), "rack-3".to_owned()),
            // Never stored (the store refuses it); ignored if it were.
            (
                "berth.policy.allow_privileged".to_owned(),
                "true".to_owned(),
            ),
        ]
        .into();
        let c = candidates(&[i], &Default::default(), &HashSet::new());
        assert_eq!(c[0].attributes["zone"], "rack-3");
        assert_eq!(c[0].attributes["team"], "web");
        assert_eq!(c[0].attributes["berth.policy.allow_privileged"], "false");
    }
}
