//! The placement pipeline: eligibility → fit → constraints → strategies.
//!
//! # Stages
//! A candidate is *eligible* when ACTIVE and connected. Then, in order, it
//! must have the CPU, the memory, every static host port free, every
//! requirement and every constraint; the number of these checks it passes
//! before the first it fails is how *close* it came. When no eligible
//! candidate passes them all, the closest one (most checks passed, then most
//! free memory, then CPU, then the smaller id) and its first failure are
//! the reason ([`Unplaceable`]).
//!
//! # Strategies
//! Each strategy scores the candidates that passed and keeps those with
//! the best score; the next strategy breaks their ties, and the last
//! tie-break is the most free memory, then CPU, then the smaller id.
//! - `spread:instanceId`: the fewest tasks of the request's group.
//! - `spread:attribute:NAME`: the attribute value (instances without it
//!   are one bucket, as in ECS) whose ACTIVE instances hold the fewest
//!   tasks of the group, counted over every ACTIVE candidate given, eligible
//!   or not, so a zone's balance does not change when one of its instances
//!   is full.
//! - `binpack:cpu` / `binpack:memory`: the least of it left after the task.
//! - `random`: a hash of the request's seed, the strategy's position and the
//!   instance id; the same seed gives the same choice.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;

use super::{
    BinpackOn, Candidate, Constraint, InstanceStatus, Need, Protocol, Request, Requirement,
    SpreadOn, Strategy,
};

/// Why the closest instance could not take the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    Cpu,
    Memory,
    HostPort(u16, Protocol),
    Requirement(Requirement),
    Constraint(Constraint),
}

/// The tail of ECS' sentence: `has insufficient memory available`, …
impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::Cpu => f.write_str("has insufficient CPU units available"),
            Shortfall::Memory => f.write_str("has insufficient memory available"),
            Shortfall::HostPort(port, protocol) => {
                write!(f, "has the host port {port}/{protocol} already in use")
            }
            Shortfall::Requirement(r) => write!(f, "does not offer {r}"),
            Shortfall::Constraint(Constraint::DistinctInstance) => {
                f.write_str("does not meet distinctInstance")
            }
            Shortfall::Constraint(c) => write!(f, "does not match the constraint {c}"),
        }
    }
}

/// The instance that came closest, and what it lacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closest {
    pub instance_id: String,
    pub shortfall: Shortfall,
}

/// Why a task fits nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unplaceable {
    /// `None`: no instance is ACTIVE and connected at all.
    pub closest: Option<Closest>,
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no container instance met all of its requirements. ")?;
        match &self.closest {
            None => f.write_str("No container instance of the cluster is ACTIVE and connected."),
            Some(c) => write!(
                f,
                "The closest matching container-instance {} {}.",
                c.instance_id, c.shortfall
            ),
        }
    }
}

impl Unplaceable {
    /// The service event (SPEC §6).
    pub fn service_event(&self, service: &str) -> String {
        format!("service ({service}) was unable to place a task because {self}")
    }
}

/// Why `task run` could not place its task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no instance {0}")]
    NoSuchInstance(String),
    #[error("instance {0} is deregistered (INACTIVE)")]
    Inactive(String),
    #[error(
        "instance {0} is DRAINING: nothing new is placed on it (`berth instance activate {0}` takes it back)"
    )]
    Draining(String),
    #[error(
        "instance {id} has no room for the task: it needs {need}, the instance has {free} free"
    )]
    NoRoom { id: String, need: Need, free: Need },
    #[error(
        "no connected ACTIVE instance to run the task on: enroll one (`berth token create`, then `berth-agent enroll` on the host) or start its agent"
    )]
    NoInstances,
    #[error(
        "no instance has room for the task: it needs {need}; the instance with the most free memory, {best}, has {free} free"
    )]
    NoneFits {
        need: Need,
        best: String,
        free: Need,
    },
    #[error("unable to place the task because {0}")]
    Unplaceable(Unplaceable),
}

fn ports_of(req: &Request) -> Vec<(u16, Protocol)> {
    let mut ports = req.host_ports.clone();
    for r in &req.requirements {
        if let Requirement::HostPort(p, proto) = r {
            ports.push((*p, *proto));
        }
    }
    ports.sort();
    ports.dedup();
    ports
}

/// A failed check, by position (materialized into a [`Shortfall`] only for
/// the closest instance: no clone per refused candidate).
#[derive(Debug, Clone, Copy)]
enum Failed {
    Cpu,
    Memory,
    Port(usize),
    Requirement(usize),
    Constraint(usize),
}

impl Failed {
    fn shortfall(self, req: &Request, ports: &[(u16, Protocol)]) -> Shortfall {
        match self {
            Failed::Cpu => Shortfall::Cpu,
            Failed::Memory => Shortfall::Memory,
            Failed::Port(i) => ports
                .get(i)
                .map_or(Shortfall::Cpu, |p| Shortfall::HostPort(p.0, p.1)),
            Failed::Requirement(i) => req
                .requirements
                .get(i)
                .map_or(Shortfall::Cpu, |r| Shortfall::Requirement(r.clone())),
            Failed::Constraint(i) => req
                .constraints
                .get(i)
                .map_or(Shortfall::Cpu, |k| Shortfall::Constraint(k.clone())),
        }
    }
}

/// The checks after eligibility, in order: `Err((passed, failed))`.
fn check(req: &Request, ports: &[(u16, Protocol)], c: &Candidate) -> Result<(), (usize, Failed)> {
    let mut passed = 0;
    if c.free.cpu < req.need.cpu {
        return Err((passed, Failed::Cpu));
    }
    passed += 1;
    if c.free.memory_mib < req.need.memory_mib {
        return Err((passed, Failed::Memory));
    }
    passed += 1;
    for (i, p) in ports.iter().enumerate() {
        if c.used_host_ports.contains(p) {
            return Err((passed, Failed::Port(i)));
        }
        passed += 1;
    }
    for (i, r) in req.requirements.iter().enumerate() {
        if !r.met_by(&c.attributes) {
            return Err((passed, Failed::Requirement(i)));
        }
        passed += 1;
    }
    for (i, k) in req.constraints.iter().enumerate() {
        let ok = match k {
            Constraint::DistinctInstance => c.group_count == 0,
            Constraint::MemberOf(q) => q.matches(&c.facts()),
        };
        if !ok {
            return Err((passed, Failed::Constraint(i)));
        }
        passed += 1;
    }
    Ok(())
}

/// Whether `c` could take a task of `req` now (ACTIVE, connected, fit,
/// requirements, constraints), and if not, its first shortfall: what a
/// DAEMON service asks of every instance. `None` in the error: not ACTIVE
/// and connected.
pub fn check_candidate(req: &Request, c: &Candidate) -> Result<(), Option<Shortfall>> {
    if !eligible(c) {
        return Err(None);
    }
    let ports = ports_of(req);
    check(req, &ports, c).map_err(|(_, why)| Some(why.shortfall(req, &ports)))
}

fn eligible(c: &Candidate) -> bool {
    c.status == InstanceStatus::Active && c.connected
}

/// Most free memory, then CPU, then the smaller id: the greatest wins.
fn roomiest_key(c: &Candidate) -> (i64, i64, Reverse<&str>) {
    (
        c.free.memory_mib,
        c.free.cpu,
        Reverse(c.instance_id.as_str()),
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn random_key(seed: u64, position: usize, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(h ^ splitmix(seed ^ splitmix(position as u64)))
}

/// Applies the strategies to the candidates that passed; the chosen one.
fn choose<'a>(
    req: &Request,
    seed: u64,
    mut set: Vec<&'a Candidate>,
    all: &[Candidate],
) -> Option<&'a Candidate> {
    for (position, strategy) in req.strategies.iter().enumerate() {
        if set.len() <= 1 {
            break;
        }
        let score: Box<dyn Fn(&Candidate) -> i128> = match strategy {
            Strategy::Spread(SpreadOn::InstanceId) => Box::new(|c| i128::from(c.group_count)),
            Strategy::Spread(SpreadOn::Attribute(name)) => {
                let mut buckets: BTreeMap<Option<&str>, u64> = BTreeMap::new();
                for c in all.iter().filter(|c| c.status == InstanceStatus::Active) {
                    *buckets
                        .entry(c.attributes.get(name).map(String::as_str))
                        .or_default() += c.group_count;
                }
                Box::new(move |c| {
                    let b = c.attributes.get(name).map(String::as_str);
                    i128::from(buckets.get(&b).copied().unwrap_or(0))
                })
            }
            Strategy::Binpack(BinpackOn::Cpu) => {
                Box::new(|c| i128::from(c.free.cpu) - i128::from(req.need.cpu))
            }
            Strategy::Binpack(BinpackOn::Memory) => {
                Box::new(|c| i128::from(c.free.memory_mib) - i128::from(req.need.memory_mib))
            }
            Strategy::Random => {
                Box::new(move |c| i128::from(random_key(seed, position, &c.instance_id)))
            }
        };
        let best = set.iter().map(|c| score(c)).min()?;
        set.retain(|c| score(c) == best);
    }
    set.into_iter()
        .max_by(|a, b| roomiest_key(a).cmp(&roomiest_key(b)))
}

fn place_seeded(req: &Request, candidates: &[Candidate], seed: u64) -> Result<String, Unplaceable> {
    let ports = ports_of(req);
    let mut passed = Vec::new();
    let mut closest: Option<(usize, &Candidate, Failed)> = None;
    for c in candidates.iter().filter(|c| eligible(c)) {
        match check(req, &ports, c) {
            Ok(()) => passed.push(c),
            Err((n, why)) => {
                let closer = closest
                    .as_ref()
                    .is_none_or(|(m, best, _)| (n, roomiest_key(c)) > (*m, roomiest_key(best)));
                if closer {
                    closest = Some((n, c, why));
                }
            }
        }
    }
    if let Some(c) = choose(req, seed, passed, candidates) {
        return Ok(c.instance_id.clone());
    }
    Err(Unplaceable {
        closest: closest.map(|(_, c, failed)| Closest {
            instance_id: c.instance_id.clone(),
            shortfall: failed.shortfall(req, &ports),
        }),
    })
}

/// Where one task of `req` goes, among `candidates`.
pub fn place(req: &Request, candidates: &[Candidate]) -> Result<String, Unplaceable> {
    place_seeded(req, candidates, req.seed)
}

/// Places `n` tasks of `req` one after another, taking each one's capacity,
/// host ports, group and running count off `candidates` before the next:
/// the instances chosen, and why the rest fit nowhere (the first that did
/// not fit; none after it is tried).
pub fn place_many(
    req: &Request,
    candidates: &mut [Candidate],
    n: usize,
) -> (Vec<String>, Option<Unplaceable>) {
    let ports = ports_of(req);
    let mut placed = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let seed = req.seed.wrapping_add(i as u64);
        match place_seeded(req, candidates, seed) {
            Ok(id) => {
                if let Some(c) = candidates.iter_mut().find(|c| c.instance_id == id) {
                    c.free.cpu = c.free.cpu.saturating_sub(req.need.cpu);
                    c.free.memory_mib = c.free.memory_mib.saturating_sub(req.need.memory_mib);
                    c.used_host_ports.extend(ports.iter().copied());
                    c.group_count = c.group_count.saturating_add(1);
                    c.running_tasks_count = c.running_tasks_count.saturating_add(1);
                }
                placed.push(id);
            }
            Err(e) => return (placed, Some(e)),
        }
    }
    (placed, None)
}

/// Whether no ACTIVE instance (connected or not, whatever its free
/// capacity and ports) offers every requirement: then the definition can
/// never be placed on this fleet and the caller may refuse it up front.
/// `None` when some instance offers them all, or when there is no ACTIVE
/// instance at all (nothing to judge by: a service created before its
/// hosts enroll waits for them).
pub fn unplaceable_anywhere(
    requirements: &[Requirement],
    candidates: &[Candidate],
) -> Option<Unplaceable> {
    let mut closest: Option<(usize, &Candidate, &Requirement)> = None;
    let mut any = false;
    for c in candidates
        .iter()
        .filter(|c| c.status == InstanceStatus::Active)
    {
        any = true;
        let failed = requirements
            .iter()
            .enumerate()
            .find(|(_, r)| !r.met_by(&c.attributes));
        // One instance offers them all: placeable.
        let (n, r) = failed?;
        let closer = closest
            .as_ref()
            .is_none_or(|(m, best, _)| (n, roomiest_key(c)) > (*m, roomiest_key(best)));
        if closer {
            closest = Some((n, c, r));
        }
    }
    if !any {
        return None;
    }
    closest.map(|(_, c, r)| Unplaceable {
        closest: Some(Closest {
            instance_id: c.instance_id.clone(),
            shortfall: Shortfall::Requirement(r.clone()),
        }),
    })
}

/// `task run`'s placement: on `explicit` when given (it must exist, not be
/// INACTIVE or DRAINING, have room and meet the rest of the request; it
/// need not be connected), else [`place`]. A request of capacity only that
/// fits nowhere is [`PlacementError::NoneFits`], naming the instance with
/// the most free memory, as `task run` always said.
pub fn place_task(
    req: &Request,
    candidates: &[Candidate],
    explicit: Option<&str>,
) -> Result<String, PlacementError> {
    if let Some(id) = explicit {
        let c = candidates
            .iter()
            .find(|c| c.instance_id == id)
            .ok_or_else(|| PlacementError::NoSuchInstance(id.to_owned()))?;
        match c.status {
            InstanceStatus::Inactive => return Err(PlacementError::Inactive(id.to_owned())),
            InstanceStatus::Draining => return Err(PlacementError::Draining(id.to_owned())),
            InstanceStatus::Active => {}
        }
        if !c.fits(req.need) {
            return Err(PlacementError::NoRoom {
                id: id.to_owned(),
                need: req.need,
                free: c.free,
            });
        }
        let ports = ports_of(req);
        return match check(req, &ports, c) {
            Ok(()) => Ok(id.to_owned()),
            Err((_, failed)) => Err(PlacementError::Unplaceable(Unplaceable {
                closest: Some(Closest {
                    instance_id: id.to_owned(),
                    shortfall: failed.shortfall(req, &ports),
                }),
            })),
        };
    }
    match place(req, candidates) {
        Ok(id) => Ok(id),
        Err(Unplaceable { closest: None }) => Err(PlacementError::NoInstances),
        Err(u) => {
            let capacity_only = ports_of(req).is_empty()
                && req.requirements.is_empty()
                && req.constraints.is_empty();
            let best = candidates
                .iter()
                .filter(|c| eligible(c))
                .max_by(|a, b| roomiest_key(a).cmp(&roomiest_key(b)));
            match best {
                Some(best) if capacity_only => Err(PlacementError::NoneFits {
                    need: req.need,
                    best: best.instance_id.clone(),
                    free: best.free,
                }),
                _ => Err(PlacementError::Unplaceable(u)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
