//! What the engine reports: exits, health, removals, and the resync that
//! re-inspects every container; the restart decision.
//!
//! Invariants: an exit is acted on once (by its `FinishedAt`), whether the
//! event or an inspect saw it first; a container is restarted in place
//! only by its restart policy, while the task is wanted RUNNING, when it
//! ran at least `restartAttemptPeriod` (default 300 s) and its exit code is
//! not ignored — and never twice within one second (the restart waits as a
//! deadline of the run loop, which keeps reading commands); an essential
//! container that exits and is not restarted stops the task
//! (EssentialContainerExited).

use std::time::Duration;

use berth_proto::status::{Status, StopCode};
use tracing::{debug, info, warn};

use super::{Phase, Supervisor};
use crate::runtime::{ContainerInfo, RunState, RuntimeError, RuntimeEvent};

/// The shortest time between two starts of one container.
const RESTART_FLOOR_MS: i64 = 1000;

impl Supervisor {
    /// Whether `info` (an exited container) shows an exit not handled yet;
    /// records it as handled.
    pub(super) fn first_sight_of_exit(&mut self, idx: usize, info: &ContainerInfo) -> bool {
        let c = &mut self.containers[idx];
        if info.finished_at_ms != 0 && info.finished_at_ms <= c.handled_exit_ms {
            return false;
        }
        c.handled_exit_ms = info.finished_at_ms;
        true
    }

    /// A `die` event: acted on only if the container is still down and this
    /// exit was not handled already (the event may be older than a restart).
    async fn on_died(&mut self, idx: usize, event_exit_code: Option<i64>) {
        match self
            .rt
            .inspect(&self.containers[idx].state.runtime_id)
            .await
        {
            Ok(Some(info)) if info.state == RunState::Running => {
                debug!(container = %self.containers[idx].def.name, "stale die event: the container runs again");
            }
            Ok(Some(info)) if info.state == RunState::Exited => {
                if self.first_sight_of_exit(idx, &info) {
                    self.on_exit(idx, info.exit_code.or(event_exit_code)).await;
                }
            }
            // The engine is going away (its containers die with it): the
            // resync after it is back sees the exit and handles it once.
            Err(RuntimeError::Unreachable { .. }) => {
                debug!(container = %self.containers[idx].def.name, "die event while the engine is unreachable; handled at the next resync");
            }
            _ => self.on_exit(idx, event_exit_code).await,
        }
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.containers
            .iter()
            .position(|c| !c.state.runtime_id.is_empty() && c.state.runtime_id == id)
    }

    pub(super) async fn on_event(&mut self, ev: RuntimeEvent) {
        match ev {
            RuntimeEvent::Resync => self.resync().await,
            RuntimeEvent::Started { id } => {
                // Every start is the supervisor's own call and recorded when
                // it returns; the event arrives later and may be older than
                // an exit already handled, so it changes nothing. A container
                // started by hand after berth recorded it stopped stays
                // stopped for berth.
                if let Some(i) = self.index_of(&id) {
                    debug!(container = %self.containers[i].def.name, "start event");
                }
            }
            RuntimeEvent::Died { id, exit_code } => {
                if let Some(i) = self.index_of(&id) {
                    self.on_died(i, exit_code).await;
                }
            }
            RuntimeEvent::Health { id, health } => {
                if let Some(i) = self.index_of(&id) {
                    self.containers[i].state.health_status =
                        super::report::health_of(health).to_string();
                    self.publish().await;
                }
            }
            RuntimeEvent::Destroyed { id } => {
                if let Some(i) = self.index_of(&id)
                    && self.containers[i].state.last_status != Status::Stopped
                {
                    self.containers[i].state.reason = "container removed outside berth".into();
                    self.containers[i].state.runtime_id.clear();
                    self.on_exit(i, None).await;
                }
            }
        }
    }

    /// Re-inspects every started container and handles exits that were
    /// missed (agent restart, lost event stream).
    pub(super) async fn resync(&mut self) {
        for i in 0..self.containers.len() {
            let id = self.containers[i].state.runtime_id.clone();
            if self.containers[i].state.last_status == Status::Stopped
                || !self.containers[i].started
            {
                continue;
            }
            if id.is_empty() {
                self.containers[i].state.reason =
                    "container vanished while the agent was not watching".into();
                self.on_exit(i, None).await;
                continue;
            }
            match self.rt.inspect(&id).await {
                Ok(Some(info)) => {
                    self.apply_info(i, Some(&info));
                    match info.state {
                        RunState::Exited if self.first_sight_of_exit(i, &info) => {
                            self.on_exit(i, info.exit_code).await;
                        }
                        RunState::Running
                            if self.containers[i].state.last_status != Status::Running =>
                        {
                            self.containers[i].state.last_status = Status::Running.to_string();
                        }
                        _ => {}
                    }
                }
                Ok(None) => {
                    self.containers[i].state.reason =
                        "container vanished while the agent was not watching".into();
                    self.containers[i].state.runtime_id.clear();
                    self.on_exit(i, None).await;
                }
                Err(e) => warn!(error = %e, "cannot inspect container during resync"),
            }
        }
        self.publish().await;
    }

    /// Whether the task still wants its containers running.
    fn wanted_running(&self) -> bool {
        matches!(
            self.phase,
            Phase::Preparing | Phase::Starting | Phase::Running
        ) && self.stop_seen.is_none()
    }

    /// Whether the restart policy restarts a container that exited with
    /// `exit_code` now.
    fn should_restart(&self, idx: usize, exit_code: Option<i64>) -> bool {
        let c = &self.containers[idx];
        let Some(policy) = &c.def.restart_policy else {
            return false;
        };
        if !policy.enabled || !self.wanted_running() || c.state.runtime_id.is_empty() {
            return false;
        }
        if let Some(code) = exit_code
            && policy.ignored_exit_codes.contains(&code)
        {
            return false;
        }
        let period_ms = policy.restart_attempt_period.unwrap_or(300) as i64 * 1000;
        let ran_ms = self.clock.now_ms() - c.last_start_ms;
        ran_ms >= period_ms
    }

    /// A container's process ended.
    pub(super) async fn on_exit(&mut self, idx: usize, exit_code: Option<i64>) {
        self.containers[idx].restart_at = None;
        if self.containers[idx].state.last_status == Status::Stopped {
            return;
        }
        let name = self.containers[idx].def.name.clone();
        if self.should_restart(idx, exit_code) {
            info!(container = %name, exit_code = ?exit_code, "restarting container in place");
            // Never twice within one second, whatever the attempt period:
            // the restart waits as a deadline of the run loop.
            let ran_ms = self.clock.now_ms() - self.containers[idx].last_start_ms;
            if ran_ms < RESTART_FLOOR_MS {
                let wait = Duration::from_millis((RESTART_FLOOR_MS - ran_ms).max(0) as u64);
                self.containers[idx].restart_at = Some((self.clock.now() + wait, exit_code));
                return;
            }
            if self.restart(idx, exit_code).await {
                return;
            }
        }
        self.exited(idx, exit_code).await;
    }

    /// Restarts whose one-second floor is over.
    pub(super) async fn restart_due(&mut self) {
        let now = self.clock.now();
        for idx in 0..self.containers.len() {
            let Some((at, exit_code)) = self.containers[idx].restart_at else {
                continue;
            };
            if at > now {
                continue;
            }
            self.containers[idx].restart_at = None;
            if !self.wanted_running() || self.stop_requested() {
                continue;
            }
            if !self.restart(idx, exit_code).await {
                self.exited(idx, exit_code).await;
            }
        }
    }

    /// Starts container `idx` again after it exited with `exit_code`;
    /// `false` when it did not start, and the exit stands.
    async fn restart(&mut self, idx: usize, exit_code: Option<i64>) -> bool {
        let name = self.containers[idx].def.name.clone();
        let id = self.containers[idx].state.runtime_id.clone();
        if let Err(violation) = self.check_binds(idx).await {
            // Docker would resolve the host paths again: a path that
            // changed under the task is never mounted.
            let reason = format!("{name}: not restarted: {violation}");
            warn!(container = %name, %reason, "restart refused by the agent policy");
            let c = &mut self.containers[idx].state;
            c.last_status = Status::Stopped.to_string();
            c.exit_code = exit_code.map(|c| c as i32);
            c.reason = violation.to_string();
            self.publish().await;
            self.stop_all(StopCode::EssentialContainerExited, &reason)
                .await;
            return true;
        }
        match self.rt.start(&id).await {
            Ok(()) => {
                let now_ms = self.clock.now_ms();
                self.containers[idx].state.exit_code = exit_code.map(|c| c as i32);
                self.containers[idx].state.restart_count += 1;
                let info = self.rt.inspect(&id).await.ok().flatten();
                self.containers[idx].last_start_ms = info
                    .as_ref()
                    .map(|i| i.started_at_ms)
                    .filter(|ms| *ms > 0)
                    .unwrap_or(now_ms);
                self.containers[idx].state.last_status = Status::Running.to_string();
                self.apply_info(idx, info.as_ref());
                self.publish().await;
                if let Some(info) = info
                    && info.state == RunState::Exited
                    && self.first_sight_of_exit(idx, &info)
                {
                    Box::pin(self.on_exit(idx, info.exit_code)).await;
                }
                true
            }
            Err(RuntimeError::Unreachable { .. }) => {
                // Forget this exit: the resync after the engine is back
                // sees the container exited and restarts it then.
                warn!(container = %name, "engine unreachable; restarting when it is back");
                self.containers[idx].handled_exit_ms = 0;
                true
            }
            Err(e) => {
                warn!(container = %name, error = %e, "restart failed");
                self.containers[idx].state.reason = format!("restart failed: {e}");
                false
            }
        }
    }

    /// Records that container `idx` is down for good; an essential one
    /// stops the task.
    async fn exited(&mut self, idx: usize, exit_code: Option<i64>) {
        let name = self.containers[idx].def.name.clone();
        {
            let c = &mut self.containers[idx].state;
            c.last_status = Status::Stopped.to_string();
            c.exit_code = exit_code.map(|c| c as i32);
        }
        info!(container = %name, exit_code = ?exit_code, "container exited");
        self.publish().await;
        if self.wanted_running() && self.containers[idx].state.essential {
            let reason = exit_reason(&name, exit_code);
            self.stop_all(StopCode::EssentialContainerExited, &reason)
                .await;
        }
    }
}

fn exit_reason(name: &str, code: Option<i64>) -> String {
    match code {
        Some(code) => format!("Essential container in task exited: {name} exited with code {code}"),
        None => format!("Essential container in task exited: {name} is gone"),
    }
}
