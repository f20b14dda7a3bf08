//! The phase of a task, the table of legal edges between phases, and the
//! one function that writes a task's `lastStatus`/`desiredStatus`.
//!
//! | phase        | `lastStatus` | `desiredStatus` |
//! |--------------|--------------|-----------------|
//! | `Preparing`  | PENDING      | RUNNING         |
//! | `Starting`   | PENDING      | RUNNING         |
//! | `Running`    | RUNNING      | RUNNING         |
//! | `Stopping`   | (unchanged)  | STOPPED         |
//! | `Stopped`    | STOPPED      | STOPPED         |
//! | `CleaningUp` | STOPPED      | STOPPED         |
//!
//! Invariants: [`apply`] is the only code that writes either field (the
//! supervisor through `Supervisor::transition`, the manager through the
//! constructors below); an edge not in [`EDGES`] is refused and logged,
//! never applied; a task reaches `Stopped` only through `Stopping`, which
//! needs a stop code.

use berth_proto::status::{Health, Status, StopCode};
use berth_proto::v1::TaskState;
use berth_taskdef::TaskDefinition;
use tracing::{debug, error};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The host's policy, pulls, volumes, creates.
    Preparing,
    /// Containers created; starting them as their dependencies allow.
    Starting,
    /// Every essential container has started.
    Running,
    /// Asked to stop (or failed): stopping its containers.
    Stopping,
    /// Every container stopped; kept for the cleanup delay.
    Stopped,
    /// Removing its containers and task volumes.
    CleaningUp,
}

/// Every legal edge, with what takes it.
pub const EDGES: &[(Phase, Phase, &str)] = &[
    (Phase::Preparing, Phase::Starting, "pulled and created"),
    (
        Phase::Preparing,
        Phase::Stopping,
        "stop or failure to start",
    ),
    (
        Phase::Starting,
        Phase::Running,
        "essential containers started",
    ),
    (Phase::Starting, Phase::Stopping, "stop or failure to start"),
    (Phase::Running, Phase::Stopping, "stop or essential exit"),
    (Phase::Stopping, Phase::Stopped, "containers stopped"),
    (Phase::Stopped, Phase::CleaningUp, "cleanup delay over"),
    // The host rebooted: the manager starts the task again (after_reboot).
    (Phase::Running, Phase::Preparing, "reboot"),
    (Phase::Starting, Phase::Preparing, "reboot"),
];

/// An edge that is not in [`EDGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal task transition {from:?} -> {to:?}")]
pub struct IllegalTransition {
    pub from: Phase,
    pub to: Phase,
}

impl Phase {
    /// The phase a (persisted or reported) state is in. PENDING tasks are
    /// `Preparing`: preparing skips what already exists.
    pub fn of(state: &TaskState) -> Phase {
        if state.last_status == Status::Stopped {
            Phase::Stopped
        } else if state.desired_status == Status::Stopped {
            Phase::Stopping
        } else if state.last_status == Status::Running {
            Phase::Running
        } else {
            Phase::Preparing
        }
    }

    /// Whether `self → to` is in the table.
    pub fn can_go(self, to: Phase) -> bool {
        EDGES.iter().any(|(f, t, _)| *f == self && *t == to)
    }
}

/// Moves `state` from phase `from` to `to`, writing its statuses (and
/// `startedAt`/`stoppedAt` at `now_ms`); refuses an edge not in the table.
pub fn apply(
    state: &mut TaskState,
    from: Phase,
    to: Phase,
    now_ms: i64,
) -> Result<(), IllegalTransition> {
    if !from.can_go(to) {
        error!(task_id = %state.task_id, from = ?from, to = ?to, "illegal task transition refused");
        return Err(IllegalTransition { from, to });
    }
    debug!(task_id = %state.task_id, from = ?from, to = ?to, "task transition");
    match to {
        Phase::Preparing | Phase::Starting => {
            state.last_status = Status::Pending.to_string();
            state.desired_status = Status::Running.to_string();
        }
        Phase::Running => {
            state.last_status = Status::Running.to_string();
            state.started_at_ms = now_ms;
        }
        Phase::Stopping => state.desired_status = Status::Stopped.to_string(),
        Phase::Stopped => {
            state.last_status = Status::Stopped.to_string();
            state.desired_status = Status::Stopped.to_string();
            state.stopped_at_ms = now_ms;
        }
        Phase::CleaningUp => {}
    }
    Ok(())
}

/// A task just handed over: `Preparing`, health unknown.
pub fn new_task(task_id: &str, definition: &TaskDefinition, created_at_ms: i64) -> TaskState {
    TaskState {
        task_id: task_id.to_string(),
        family: definition.family.clone(),
        last_status: Status::Pending.to_string(),
        desired_status: Status::Running.to_string(),
        health_status: Health::Unknown.to_string(),
        created_at_ms,
        ..Default::default()
    }
}

/// A task the control plane wants STOPPED that this agent never ran (or
/// one it cannot run): `Preparing → Stopping → Stopped` with `code` and
/// `reason`.
pub fn stopped_unstarted(
    task_id: &str,
    created_at_ms: i64,
    code: StopCode,
    reason: String,
    now_ms: i64,
) -> TaskState {
    let mut st = new_task(task_id, &TaskDefinition::default(), created_at_ms);
    st.stop_code = code.to_string();
    st.stopped_reason = reason;
    let _ = apply(&mut st, Phase::Preparing, Phase::Stopping, now_ms)
        .and_then(|()| apply(&mut st, Phase::Stopping, Phase::Stopped, now_ms));
    st
}

/// A task whose definition the agent cannot validate: it fails to start,
/// with the reason.
pub fn failed_definition(
    task_id: &str,
    created_at_ms: i64,
    reason: String,
    now_ms: i64,
) -> TaskState {
    let code = StopCode::TaskFailedToStart;
    stopped_unstarted(task_id, created_at_ms, code, reason, now_ms)
}

/// After a reboot the containers of a running task have exited (berth
/// gives them no Docker restart policy): the task goes back to `Preparing`
/// (the reboot edge), its containers to PENDING with unknown health, so it
/// starts again in dependency order, reusing its containers. A task that
/// is stopped or stopping is left as it is.
pub fn after_reboot(task: &mut TaskState, now_ms: i64) {
    let from = Phase::of(task);
    if !matches!(from, Phase::Running | Phase::Preparing) {
        return;
    }
    if from == Phase::Running && apply(task, from, Phase::Preparing, now_ms).is_err() {
        return;
    }
    for c in &mut task.containers {
        c.last_status = Status::Pending.to_string();
        c.health_status = Health::Unknown.to_string();
    }
}

impl super::Supervisor {
    /// The supervisor's one way to change its task's phase (and so its
    /// statuses); `false` when the edge is refused.
    pub(super) fn transition(&mut self, to: Phase) -> bool {
        if self.phase == to {
            return true;
        }
        let now_ms = self.clock.now_ms();
        match apply(&mut self.state, self.phase, to, now_ms) {
            Ok(()) => {
                self.phase = to;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Phase; 6] = [
        Phase::Preparing,
        Phase::Starting,
        Phase::Running,
        Phase::Stopping,
        Phase::Stopped,
        Phase::CleaningUp,
    ];

    #[test]
    fn the_table_is_the_lifecycle() {
        let legal: Vec<(Phase, Phase)> = ALL
            .iter()
            .flat_map(|f| ALL.iter().map(move |t| (*f, *t)))
            .filter(|(f, t)| f.can_go(*t))
            .collect();
        assert_eq!(legal.len(), EDGES.len(), "no edge twice");
        // Nothing leaves Stopped but cleanup, nothing leaves CleaningUp,
        // nothing goes back to Running once stopping.
        for to in ALL {
            assert_eq!(Phase::Stopped.can_go(to), to == Phase::CleaningUp, "{to:?}");
            assert!(!Phase::CleaningUp.can_go(to), "{to:?}");
            assert!(
                !Phase::Stopping.can_go(to) || to == Phase::Stopped,
                "{to:?}"
            );
        }
        assert!(
            !Phase::Preparing.can_go(Phase::Stopped),
            "only through Stopping"
        );
        assert!(
            !Phase::Preparing.can_go(Phase::Running),
            "only through Starting"
        );
    }

    #[test]
    fn an_illegal_edge_is_refused_and_changes_nothing() {
        let mut st = new_task("t", &TaskDefinition::default(), 1);
        apply(&mut st, Phase::Preparing, Phase::Stopping, 5).expect("legal");
        apply(&mut st, Phase::Stopping, Phase::Stopped, 6).expect("legal");
        let before = st.clone();
        let e = apply(&mut st, Phase::Stopped, Phase::Running, 7).expect_err("illegal");
        assert_eq!(e.to_string(), "illegal task transition Stopped -> Running");
        assert_eq!(st, before);
        assert_eq!(st.stopped_at_ms, 6);
    }

    #[test]
    fn the_statuses_follow_the_phase() {
        let mut st = new_task("t", &TaskDefinition::default(), 1);
        assert_eq!(Phase::of(&st), Phase::Preparing);
        for (from, to) in [
            (Phase::Preparing, Phase::Starting),
            (Phase::Starting, Phase::Running),
            (Phase::Running, Phase::Stopping),
            (Phase::Stopping, Phase::Stopped),
        ] {
            apply(&mut st, from, to, 9).expect("legal");
            let seen = Phase::of(&st);
            let expected = if to == Phase::Starting {
                Phase::Preparing
            } else {
                to
            };
            assert_eq!(seen, expected, "{st:?}");
        }
        assert_eq!(st.started_at_ms, 9);
    }

    #[test]
    fn constructors_make_stopped_tasks_with_a_stop_code() {
        let st = failed_definition("t", 3, "bad json".into(), 10);
        assert_eq!(
            (st.last_status.as_str(), st.desired_status.as_str()),
            ("STOPPED", "STOPPED")
        );
        assert_eq!(st.stop_code, StopCode::TaskFailedToStart);
        assert_eq!((st.created_at_ms, st.stopped_at_ms), (3, 10));
        assert_eq!(st.health_status, Health::Unknown);
        let st = stopped_unstarted("t", 3, StopCode::UserInitiated, "bye".into(), 10);
        assert_eq!(st.stop_code, StopCode::UserInitiated);
        assert_eq!(st.stopped_reason, "bye");
        assert_eq!(st.family, "", "as before: a task never run has no family");
    }

    #[test]
    fn a_reboot_takes_running_tasks_back_to_pending_only() {
        let mut running = new_task("t", &TaskDefinition::default(), 1);
        apply(&mut running, Phase::Preparing, Phase::Starting, 2).expect("legal");
        apply(&mut running, Phase::Starting, Phase::Running, 2).expect("legal");
        running.containers = vec![berth_proto::v1::ContainerState {
            last_status: "RUNNING".into(),
            health_status: "HEALTHY".into(),
            ..Default::default()
        }];
        after_reboot(&mut running, 3);
        assert_eq!(running.last_status, Status::Pending);
        assert_eq!(running.desired_status, Status::Running);
        assert_eq!(running.containers[0].last_status, Status::Pending);
        assert_eq!(running.containers[0].health_status, Health::Unknown);

        let mut stopped = stopped_unstarted("s", 1, StopCode::UserInitiated, "x".into(), 2);
        let before = stopped.clone();
        after_reboot(&mut stopped, 3);
        assert_eq!(stopped, before);
    }
}
