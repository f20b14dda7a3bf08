//! Stopping a task and removing what is left of it.
//!
//! Invariants: the first stop's code and reason are the ones kept;
//! containers stop dependents first (reverse start order), each with its
//! own stop timeout; a container never created is simply marked STOPPED;
//! removal takes the task's containers, then its task-scoped volumes
//! (shared ones are never berth's to remove), and fails only when the
//! engine is unreachable (then it is tried again when the engine is back).

use berth_proto::status::{Status, StopCode};
use tracing::{info, warn};

use super::{Phase, Supervisor};
use crate::runtime::{RuntimeError, VolumeScope};

impl Supervisor {
    /// Stops every container — dependents before their dependencies — and
    /// the task.
    pub(super) async fn stop_all(&mut self, stop_code: StopCode, reason: &str) {
        if matches!(self.phase, Phase::Stopped | Phase::CleaningUp) {
            return;
        }
        if self.phase != Phase::Stopping || self.state.stop_code.is_empty() {
            self.state.stop_code = stop_code.to_string();
            self.state.stopped_reason = reason.into();
        }
        if !self.transition(Phase::Stopping) {
            return;
        }
        info!(stop_code = %stop_code, reason, "stopping task");
        for c in &mut self.containers {
            c.restart_at = None;
        }
        self.publish().await;
        crate::failpoint::hit("before-stop");
        for pos in (0..self.order.len()).rev() {
            let i = self.order[pos];
            let id = self.containers[i].state.runtime_id.clone();
            if id.is_empty() {
                self.containers[i].state.last_status = Status::Stopped.to_string();
                continue;
            }
            if self.containers[i].state.last_status != Status::Stopped {
                let timeout = self.containers[i]
                    .def
                    .stop_timeout()
                    .unwrap_or(self.settings.default_stop_timeout);
                if let Err(e) = self.rt.stop(&id, timeout).await {
                    warn!(container = %self.containers[i].def.name, error = %e, "cannot stop container");
                }
                let info = self.rt.inspect(&id).await.ok().flatten();
                let c = &mut self.containers[i].state;
                c.last_status = Status::Stopped.to_string();
                if let Some(info) = info {
                    c.exit_code = info.exit_code.map(|c| c as i32);
                }
                self.publish().await;
            }
        }
        self.transition(Phase::Stopped);
        info!("task stopped");
        self.publish().await;
    }

    /// Removes the task's containers, then its task-scoped volumes (shared
    /// ones are never berth's to remove). Fails only when the engine is
    /// unreachable; other refusals are logged and passed over.
    pub(super) async fn remove_all(&mut self) -> Result<(), RuntimeError> {
        for i in 0..self.containers.len() {
            let id = self.containers[i].state.runtime_id.clone();
            if id.is_empty() {
                continue;
            }
            match self.rt.remove(&id).await {
                Ok(()) => {}
                Err(e @ RuntimeError::Unreachable { .. }) => return Err(e),
                Err(e) => {
                    warn!(container = %self.containers[i].def.name, error = %e, "cannot remove container")
                }
            }
        }
        if let Some(layout) = &self.settings.task_cgroups
            && self.task_limits().is_some()
        {
            layout.remove(&self.state.task_id);
        }
        let volumes = crate::volumes::docker_volumes(
            &self.definition,
            &self.state.task_id,
            &self.settings.instance_id,
        );
        for (_, volume) in volumes {
            if volume.scope != VolumeScope::Task {
                continue;
            }
            match self.rt.remove_volume(&volume.name).await {
                Ok(()) => {}
                Err(e @ RuntimeError::Unreachable { .. }) => return Err(e),
                Err(e) => warn!(volume = %volume.name, error = %e, "cannot remove task volume"),
            }
        }
        Ok(())
    }
}
