//! Placement: which instance runs a new task.
//!
//! # Background
//! ECS places a task in stages: the cluster's instances, those that can take
//! it (resources, ports, attributes), those the placement constraints let
//! in, and then the placement strategies pick among them, in order. berth
//! does the same, and says why a task fits nowhere with ECS' sentence (`…
//! no container instance met all of its requirements. The closest matching
//! container-instance i-abc has insufficient memory available.`).
//!
//! # Design
//! - Pure functions over a snapshot of the fleet: no store, no I/O, no
//!   clock. The caller (`scheduler::place_and_insert`, the service
//!   reconciler) stores the task only if the chosen instance is still at the
//!   generation the snapshot saw, so two tasks placed at once cannot both
//!   take the last free memory.
//! - [`pipeline::place`]: ACTIVE and connected → fit (CPU, memory, static
//!   host ports, [`requirements`] of the definition: platform and agent
//!   policy attributes) → constraints → strategies. Each strategy keeps the
//!   candidates with its best score; the next one breaks their ties; the
//!   last tie-break is the most free memory, then CPU, then the smaller
//!   instance id, so placement is deterministic (`random` takes its seed
//!   from the request).
//! - [`pipeline::place_many`] places tasks one after another on a working
//!   copy of the fleet (capacity, ports, group and running counts updated
//!   in between), as a service scaling out does.
//! - [`pipeline::place_task`] is `task run`'s entry: an explicitly named
//!   instance must exist, be ACTIVE and have room (it need not be
//!   connected: the task is delivered at its agent's Hello); errors keep
//!   the texts `task run` has always printed.
//!
//! # Invariants
//! A placed instance is ACTIVE and connected (unless named explicitly), has
//! the CPU, memory and host ports, offers every requirement and meets every
//! constraint. No input makes placement panic: queries are bounded in
//! length, depth and pattern size ([`query`]).

pub mod pipeline;
pub mod query;
pub mod requirements;
pub mod strategy;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use berth_agent::ports::Protocol;
pub use pipeline::{
    Closest, PlacementError, Shortfall, Unplaceable, check_candidate, place, place_many,
    place_task, unplaceable_anywhere,
};
pub use query::{Facts, Query, QueryError};
pub use requirements::{Requirement, requirements};
pub use strategy::{BinpackOn, Constraint, SpecError, SpreadOn, Strategy};

/// What a task reserves: CPU units and MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Need {
    pub cpu: i64,
    pub memory_mib: i64,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} CPU units and {} MiB", self.cpu, self.memory_mib)
    }
}

/// An instance's status (ECS `status`): only ACTIVE ones get new tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InstanceStatus {
    #[default]
    Active,
    Draining,
    Inactive,
}

impl InstanceStatus {
    /// The stored word; anything unknown reads as INACTIVE (never placed on).
    pub fn from_store(s: &str) -> Self {
        match s {
            "ACTIVE" => InstanceStatus::Active,
            "DRAINING" => InstanceStatus::Draining,
            _ => InstanceStatus::Inactive,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Active => "ACTIVE",
            InstanceStatus::Draining => "DRAINING",
            InstanceStatus::Inactive => "INACTIVE",
        }
    }
}

/// One instance as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Candidate {
    pub instance_id: String,
    pub status: InstanceStatus,
    pub connected: bool,
    /// Registered minus reserved.
    pub free: Need,
    /// Static host ports its tasks not STOPPED hold.
    pub used_host_ports: BTreeSet<(u16, Protocol)>,
    /// Built-in and custom attributes, merged by the caller.
    pub attributes: BTreeMap<String, String>,
    pub agent_version: String,
    pub running_tasks_count: u64,
    /// Tasks of the request's group on it.
    pub group_count: u64,
}

impl Candidate {
    /// An ACTIVE, connected instance with `free` capacity and nothing else.
    pub fn new(instance_id: &str, free: Need) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            status: InstanceStatus::Active,
            connected: true,
            free,
            ..Self::default()
        }
    }

    /// What a `memberOf` query sees of it.
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            instance_id: &self.instance_id,
            agent_connected: self.connected,
            agent_version: &self.agent_version,
            running_tasks_count: self.running_tasks_count,
            attributes: &self.attributes,
        }
    }

    fn fits(&self, need: Need) -> bool {
        self.free.cpu >= need.cpu && self.free.memory_mib >= need.memory_mib
    }
}

/// What one task asks of placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub need: Need,
    /// Static host ports the task binds.
    pub host_ports: Vec<(u16, Protocol)>,
    /// What the instance must offer (host-port requirements are checked
    /// like `host_ports`).
    pub requirements: Vec<Requirement>,
    pub constraints: Vec<Constraint>,
    /// In order: the first is primary, later ones break ties.
    pub strategies: Vec<Strategy>,
    /// For `random` (and nothing else): the same seed, the same choice.
    pub seed: u64,
}

impl Request {
    /// A request for `need` and nothing else.
    pub fn new(need: Need) -> Self {
        Self {
            need,
            ..Self::default()
        }
    }

    /// A request for a task of `def`: its reservation, static host ports
    /// and requirements; no constraints, no strategies.
    pub fn for_definition(def: &berth_taskdef::TaskDefinition) -> Self {
        let reservation = def.reservation();
        let need = Need {
            cpu: i64::try_from(reservation.cpu).unwrap_or(i64::MAX),
            memory_mib: i64::try_from(reservation.memory_mib).unwrap_or(i64::MAX),
        };
        let mut host_ports = Vec::new();
        let mut reqs = Vec::new();
        for r in requirements(def) {
            match r {
                Requirement::HostPort(port, protocol) => host_ports.push((port, protocol)),
                other => reqs.push(other),
            }
        }
        Self {
            need,
            host_ports,
            requirements: reqs,
            ..Self::default()
        }
    }
}
