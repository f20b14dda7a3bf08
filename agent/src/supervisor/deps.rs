//! `dependsOn`: the start order, the conditions (START, COMPLETE, SUCCESS,
//! HEALTHY), `startTimeout`, and starting containers.
//!
//! Invariants: a container starts only once every condition it depends on
//! holds; a condition that can no longer hold, or a `startTimeout` passed
//! (read on the supervisor's clock), stops the container with
//! `DependencyConditionFailed` and, for an essential one, fails the task;
//! the task is RUNNING once every essential container has started.

use std::time::Duration;

use berth_proto::status::{Health, Status, StopCode};
use berth_taskdef::TaskDefinition;
use tracing::{debug, info, warn};

use super::{Phase, Supervisor};
use crate::runtime::RunState;

/// Outcome of checking a container's `dependsOn`.
enum Deps {
    Met,
    Wait,
    Failed(String),
}

impl Supervisor {
    /// Checks one container's `dependsOn` against the others' states.
    fn deps(&self, idx: usize) -> Deps {
        let me = &self.containers[idx].def.name;
        let mut result = Deps::Met;
        // A link's target must run before the container linking to it starts.
        for l in &self.containers[idx].def.links {
            let target = link_target(l);
            if let Some(dep) = self.containers.iter().find(|c| c.def.name == target)
                && !dep.started
            {
                if dep.state.last_status == Status::Stopped {
                    return Deps::Failed(format!(
                        "{me} links to {target}, which stopped without starting"
                    ));
                }
                result = Deps::Wait;
            }
        }
        // pidMode/ipcMode `task`: the others join the anchor's namespaces,
        // which exist only once it runs.
        if let Some(a) = self.namespace_anchor()
            && a != idx
        {
            let anchor = &self.containers[a];
            if !anchor.started {
                if anchor.state.last_status == Status::Stopped {
                    return Deps::Failed(format!(
                        "{me} shares the namespaces of {} (pidMode/ipcMode task), which stopped without starting",
                        anchor.def.name
                    ));
                }
                result = Deps::Wait;
            }
        }
        for d in &self.containers[idx].def.depends_on {
            let Some(dep) = self
                .containers
                .iter()
                .find(|c| c.def.name == d.container_name)
            else {
                return Deps::Failed(format!(
                    "{me} depends on {}, which is not in the task",
                    d.container_name
                ));
            };
            let stopped = dep.state.last_status == Status::Stopped;
            let code = dep.state.exit_code;
            let met = match d.condition.as_str() {
                "START" => {
                    if dep.started {
                        true
                    } else if stopped {
                        return Deps::Failed(format!(
                            "{me} depends on {} to START, but it stopped without starting",
                            dep.def.name
                        ));
                    } else {
                        false
                    }
                }
                "COMPLETE" => stopped && dep.started,
                "SUCCESS" => {
                    if stopped && dep.started && code == Some(0) {
                        true
                    } else if stopped {
                        return Deps::Failed(format!(
                            "{me} depends on {} to SUCCEED, but it exited with code {}",
                            dep.def.name,
                            code.map(|c| c.to_string())
                                .unwrap_or_else(|| "unknown".into())
                        ));
                    } else {
                        false
                    }
                }
                "HEALTHY" => {
                    if dep.state.health_status == Health::Healthy {
                        true
                    } else if stopped {
                        return Deps::Failed(format!(
                            "{me} depends on {} to be HEALTHY, but it stopped",
                            dep.def.name
                        ));
                    } else {
                        false
                    }
                }
                other => {
                    return Deps::Failed(format!(
                        "{me} has an unknown dependency condition {other}"
                    ));
                }
            };
            if !met {
                result = Deps::Wait;
            }
        }
        result
    }

    fn starting(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Running) && self.stop_seen.is_none()
    }

    /// Starts every container whose dependencies are met, fails those whose
    /// dependencies cannot be met any more, and moves the task to RUNNING
    /// once every essential container has started.
    pub(super) async fn advance(&mut self) {
        let mut progress = true;
        while progress && self.starting() {
            progress = false;
            for pos in 0..self.order.len() {
                let i = self.order[pos];
                if self.containers[i].started
                    || self.containers[i].state.last_status == Status::Stopped
                    || self.containers[i].state.runtime_id.is_empty()
                {
                    continue;
                }
                if self.stop_requested() {
                    return;
                }
                match self.deps(i) {
                    Deps::Wait => {
                        let now = self.clock.now();
                        let c = &mut self.containers[i];
                        let since = *c.waiting_since.get_or_insert(now);
                        if let Some(secs) = c.def.start_timeout
                            && now >= since + Duration::from_secs(secs)
                        {
                            let reason = format!(
                                "{} timed out after {secs}s waiting for its dependencies ({})",
                                c.def.name,
                                c.def
                                    .depends_on
                                    .iter()
                                    .map(|d| format!("{} {}", d.container_name, d.condition))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                            self.dependency_failed(i, reason).await;
                            progress = true;
                        }
                    }
                    Deps::Failed(reason) => {
                        self.dependency_failed(i, reason).await;
                        progress = true;
                    }
                    Deps::Met => {
                        self.start_container(i).await;
                        progress = true;
                    }
                }
                if !self.starting() {
                    return;
                }
            }
        }
        let all_essential_started = self
            .containers
            .iter()
            .filter(|c| c.state.essential)
            .all(|c| c.started);
        if self.phase == Phase::Starting && all_essential_started && self.transition(Phase::Running)
        {
            info!("task running");
        }
        self.publish().await;
    }

    async fn dependency_failed(&mut self, idx: usize, reason: String) {
        warn!(container = %self.containers[idx].def.name, %reason, "dependency failed");
        let c = &mut self.containers[idx];
        c.state.last_status = Status::Stopped.to_string();
        c.state.reason = format!("DependencyConditionFailed: {reason}");
        // No longer waiting: its startTimeout is no deadline any more.
        c.waiting_since = None;
        if c.state.essential {
            self.stop_all(StopCode::TaskFailedToStart, &reason).await;
        } else {
            self.publish().await;
        }
    }

    async fn start_container(&mut self, i: usize) {
        let id = self.containers[i].state.runtime_id.clone();
        let name = self.containers[i].def.name.clone();
        let running = self
            .rt
            .inspect(&id)
            .await
            .ok()
            .flatten()
            .is_some_and(|info| info.state == RunState::Running);
        // Already running (adopted after a crash between start and record).
        if running {
            debug!(container = %name, "container already running");
        } else if let Err(violation) = self.check_binds(i).await {
            self.fail_to_start(i, violation.to_string()).await;
            return;
        } else if let Err(e) = self.rt.start(&id).await {
            self.fail_to_start(i, format!("CannotStartContainerError: {e}"))
                .await;
            return;
        }
        crate::failpoint::hit("after-start");
        debug!(container = %name, "container started");
        let info = self.rt.inspect(&id).await.ok().flatten();
        {
            let now_ms = self.clock.now_ms();
            let c = &mut self.containers[i];
            c.started = true;
            c.waiting_since = None;
            c.state.last_status = Status::Running.to_string();
            c.last_start_ms = info
                .as_ref()
                .map(|i| i.started_at_ms)
                .filter(|ms| *ms > 0)
                .unwrap_or(now_ms);
        }
        self.apply_info(i, info.as_ref());
        self.publish().await;
        if let Some(info) = &info
            && info.state == RunState::Exited
            && self.first_sight_of_exit(i, info)
        {
            // It ended before we looked: handled like the event.
            self.on_exit(i, info.exit_code).await;
        }
    }
}

/// The containers `c` must follow: its `dependsOn`, the targets of its
/// `links` (Docker links only to a container that exists and runs) and
/// the sources of its `volumesFrom` (which must exist when it is created).
fn predecessors(c: &berth_taskdef::ContainerDefinition) -> impl Iterator<Item = &str> {
    c.depends_on
        .iter()
        .map(|d| d.container_name.as_str())
        .chain(c.links.iter().map(|l| link_target(l)))
        .chain(c.volumes_from.iter().map(|v| v.source_container.as_str()))
}

/// The container a link names (`name` or `name:alias`).
pub fn link_target(link: &str) -> &str {
    link.split_once(':').map_or(link, |(n, _)| n)
}

/// Container indexes with every container after the ones it depends on,
/// links to or takes volumes from (definition order otherwise). Validation
/// rejects cycles; should one slip through, the remaining containers keep
/// definition order. Containers are created and started in this order.
pub fn start_order(def: &TaskDefinition) -> Vec<usize> {
    let names: Vec<&str> = def
        .container_definitions
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let mut placed = vec![false; names.len()];
    let mut order = Vec::with_capacity(names.len());
    while order.len() < names.len() {
        let before = order.len();
        for (i, c) in def.container_definitions.iter().enumerate() {
            if placed[i] {
                continue;
            }
            let ready = predecessors(c).all(|d| {
                names
                    .iter()
                    .position(|n| *n == d)
                    .is_none_or(|j| j == i || placed[j])
            });
            if ready {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            order.extend((0..names.len()).filter(|i| !placed[*i]));
            break;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_taskdef::{ContainerDefinition, ContainerDependency};

    fn c(name: &str, deps: &[(&str, &str)]) -> ContainerDefinition {
        ContainerDefinition {
            name: name.into(),
            image: "img".into(),
            memory: Some(8),
            depends_on: deps
                .iter()
                .map(|(n, cond)| ContainerDependency {
                    container_name: (*n).into(),
                    condition: (*cond).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn dependencies_start_first() {
        let def = TaskDefinition {
            family: "f".into(),
            container_definitions: vec![
                c("app", &[("db", "HEALTHY"), ("migrate", "SUCCESS")]),
                c("migrate", &[("db", "START")]),
                c("db", &[]),
            ],
            ..Default::default()
        };
        assert_eq!(start_order(&def), vec![2, 1, 0]);
    }

    #[test]
    fn links_and_volumes_from_order_like_dependencies() {
        let mut web = c("web", &[]);
        web.links = vec!["db:database".into()];
        let mut logs = c("logs", &[]);
        logs.volumes_from = vec![berth_taskdef::VolumeFrom {
            source_container: "web".into(),
            read_only: None,
        }];
        let def = TaskDefinition {
            family: "f".into(),
            container_definitions: vec![logs, web, c("db", &[])],
            ..Default::default()
        };
        assert_eq!(start_order(&def), vec![2, 1, 0]);
    }

    #[test]
    fn a_cycle_keeps_definition_order_for_the_rest() {
        let def = TaskDefinition {
            family: "f".into(),
            container_definitions: vec![c("a", &[("b", "START")]), c("b", &[("a", "START")])],
            ..Default::default()
        };
        assert_eq!(start_order(&def), vec![0, 1]);
    }
}
