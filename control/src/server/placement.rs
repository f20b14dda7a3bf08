//! Placement: which instance runs a new task.
//!
//! Pure functions over a snapshot of the fleet; the caller
//! (`scheduler::place_and_insert`) stores the task only if the chosen
//! instance is still at the generation the snapshot saw, so that two tasks
//! placed at the same time cannot both take the last free memory.
//!
//! Rules: an explicitly named instance must exist, be ACTIVE and have room
//! (it need not be connected: the task is delivered when its agent says
//! Hello). Otherwise, among connected ACTIVE instances with room, the one
//! with the most free memory wins (ties: most free CPU, then the smaller
//! instance id, so that placement is deterministic).

use std::fmt;

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

/// One instance as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub instance_id: String,
    pub active: bool,
    pub connected: bool,
    /// Registered minus reserved.
    pub free: Need,
}

impl Candidate {
    fn fits(&self, need: Need) -> bool {
        self.free.cpu >= need.cpu && self.free.memory_mib >= need.memory_mib
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no instance {0}")]
    NoSuchInstance(String),
    #[error("instance {0} is deregistered (INACTIVE)")]
    Inactive(String),
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
}

/// Picks the instance for a task that needs `need`.
pub fn place(
    need: Need,
    candidates: &[Candidate],
    explicit: Option<&str>,
) -> Result<String, PlacementError> {
    if let Some(id) = explicit {
        let c = candidates
            .iter()
            .find(|c| c.instance_id == id)
            .ok_or_else(|| PlacementError::NoSuchInstance(id.to_owned()))?;
        if !c.active {
            return Err(PlacementError::Inactive(id.to_owned()));
        }
        if !c.fits(need) {
            return Err(PlacementError::NoRoom {
                id: id.to_owned(),
                need,
                free: c.free,
            });
        }
        return Ok(id.to_owned());
    }
    let eligible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.active && c.connected)
        .collect();
    let best_of = |cs: &mut dyn Iterator<Item = &Candidate>| -> Option<Candidate> {
        cs.min_by(|a, b| {
            b.free
                .memory_mib
                .cmp(&a.free.memory_mib)
                .then(b.free.cpu.cmp(&a.free.cpu))
                .then(a.instance_id.cmp(&b.instance_id))
        })
        .cloned()
    };
    if let Some(c) = best_of(&mut eligible.iter().copied().filter(|c| c.fits(need))) {
        return Ok(c.instance_id);
    }
    match best_of(&mut eligible.iter().copied()) {
        None => Err(PlacementError::NoInstances),
        Some(best) => Err(PlacementError::NoneFits {
            need,
            best: best.instance_id,
            free: best.free,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, cpu: i64, mem: i64) -> Candidate {
        Candidate {
            instance_id: id.into(),
            active: true,
            connected: true,
            free: Need {
                cpu,
                memory_mib: mem,
            },
        }
    }

    const NEED: Need = Need {
        cpu: 256,
        memory_mib: 512,
    };

    #[test]
    fn fits_exactly() {
        assert_eq!(place(NEED, &[c("i-a", 256, 512)], None), Ok("i-a".into()));
    }

    #[test]
    fn most_free_memory_wins() {
        let cs = [
            c("i-a", 4096, 1000),
            c("i-b", 1024, 3000),
            c("i-c", 8192, 2000),
            c("i-d", 100, 9000), // not enough CPU
        ];
        assert_eq!(place(NEED, &cs, None), Ok("i-b".into()));
    }

    #[test]
    fn ties_break_on_cpu_then_id() {
        let cs = [
            c("i-b", 1024, 1000),
            c("i-a", 1024, 1000),
            c("i-c", 2048, 1000),
        ];
        assert_eq!(place(NEED, &cs, None), Ok("i-c".into()));
        let cs = [c("i-b", 1024, 1000), c("i-a", 1024, 1000)];
        assert_eq!(place(NEED, &cs, None), Ok("i-a".into()));
    }

    #[test]
    fn disconnected_and_inactive_are_skipped() {
        let mut off = c("i-off", 8192, 8192);
        off.connected = false;
        let mut gone = c("i-gone", 8192, 8192);
        gone.active = false;
        let cs = [off, gone, c("i-on", 512, 1024)];
        assert_eq!(place(NEED, &cs, None), Ok("i-on".into()));
        assert_eq!(
            place(NEED, &cs[..2], None),
            Err(PlacementError::NoInstances)
        );
    }

    #[test]
    fn refusal_names_the_need_and_the_best_instance() {
        let cs = [c("i-a", 4096, 100), c("i-b", 4096, 300)];
        let err = place(NEED, &cs, None).expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "no instance has room for the task: it needs 256 CPU units and 512 MiB; \
             the instance with the most free memory, i-b, has 4096 CPU units and 300 MiB free"
        );
    }

    #[test]
    fn explicit_instance() {
        let mut off = c("i-off", 8192, 8192);
        off.connected = false;
        let mut gone = c("i-gone", 8192, 8192);
        gone.active = false;
        let cs = [off, gone, c("i-small", 100, 100)];
        assert_eq!(place(NEED, &cs, Some("i-off")), Ok("i-off".into()));
        assert_eq!(
            place(NEED, &cs, Some("i-gone")),
            Err(PlacementError::Inactive("i-gone".into()))
        );
        assert_eq!(
            place(NEED, &cs, Some("i-nope")),
            Err(PlacementError::NoSuchInstance("i-nope".into()))
        );
        assert_eq!(
            place(NEED, &cs, Some("i-small")).map_err(|e| e.to_string()),
            Err(
                "instance i-small has no room for the task: it needs 256 CPU units and 512 MiB, \
                 the instance has 100 CPU units and 100 MiB free"
                    .to_owned()
            )
        );
    }
}
