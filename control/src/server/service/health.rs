//! Health as SPEC §6 defines it, and the failures the circuit breaker counts.
//!
//! Healthy: RUNNING, and every essential container with a health check
//! HEALTHY, or — when no essential container has one — RUNNING for at least
//! the service's min healthy time. An UNHEALTHY result inside the health
//! check grace period after the start is ignored (the task is not healthy,
//! but not failed either).

use super::model::{Health, LastStatus, ServiceSpec, TaskView};

/// Whether `t` is healthy at `now_ms`.
pub fn is_healthy(t: &TaskView, spec: &ServiceSpec, now_ms: i64) -> bool {
    if t.last_status != LastStatus::Running {
        return false;
    }
    if t.has_health_check {
        return t.health == Health::Healthy;
    }
    match t.started_at_ms {
        Some(s) => now_ms >= s.saturating_add(spec.min_healthy_time_ms),
        None => false,
    }
}

/// The end of the grace period of a started task.
fn grace_end(t: &TaskView, spec: &ServiceSpec) -> Option<i64> {
    t.started_at_ms
        .map(|s| s.saturating_add(spec.health_check_grace_period_s.saturating_mul(1000)))
}

/// Whether `t` is RUNNING and UNHEALTHY outside its grace period.
pub fn is_unhealthy(t: &TaskView, spec: &ServiceSpec, now_ms: i64) -> bool {
    t.last_status == LastStatus::Running
        && t.has_health_check
        && t.health == Health::Unhealthy
        && grace_end(t, spec).is_none_or(|end| now_ms >= end)
}

/// Whether the circuit breaker counts `t` as failed: stopped before RUNNING,
/// or stopped or UNHEALTHY before it was ever healthy.
pub fn is_failed(t: &TaskView, spec: &ServiceSpec, now_ms: i64) -> bool {
    if t.ever_healthy {
        return false;
    }
    match t.last_status {
        LastStatus::Stopped => true,
        LastStatus::Running => is_unhealthy(t, spec, now_ms) && !is_healthy(t, spec, now_ms),
        LastStatus::Pending | LastStatus::Unknown => false,
    }
}

/// Whether `t` stopped without ever reaching RUNNING (the retry throttle
/// counts those).
pub fn failed_to_start(t: &TaskView) -> bool {
    t.last_status == LastStatus::Stopped && t.started_at_ms.is_none()
}

/// The next time `t`'s health changes by the clock alone: its min healthy
/// time passing, or its grace period ending while it reports UNHEALTHY.
pub fn next_change(t: &TaskView, spec: &ServiceSpec, now_ms: i64) -> Option<i64> {
    if t.last_status != LastStatus::Running {
        return None;
    }
    let at = if t.has_health_check {
        if t.health != Health::Unhealthy {
            return None;
        }
        grace_end(t, spec)?
    } else {
        t.started_at_ms?.saturating_add(spec.min_healthy_time_ms)
    };
    (at > now_ms).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::super::model::{DesiredStatus, ServiceSpec};
    use super::*;

    fn task(status: LastStatus, hc: bool, health: Health, started: Option<i64>) -> TaskView {
        TaskView {
            id: "t".into(),
            deployment_id: "d".into(),
            instance_id: "i".into(),
            last_status: status,
            desired_status: DesiredStatus::Running,
            has_health_check: hc,
            health,
            created_at_ms: 0,
            started_at_ms: started,
            stopped_reason: None,
            ever_healthy: false,
            failure_counted: false,
        }
    }

    #[test]
    fn without_health_check_healthy_after_min_healthy_time() {
        let spec = ServiceSpec::replica("s", "default", 1);
        let t = task(LastStatus::Running, false, Health::Unknown, Some(1_000));
        assert!(!is_healthy(&t, &spec, 10_999));
        assert!(is_healthy(&t, &spec, 11_000));
        assert_eq!(next_change(&t, &spec, 5_000), Some(11_000));
        assert_eq!(next_change(&t, &spec, 11_000), None);
    }

    #[test]
    fn with_health_check_only_healthy_counts() {
        let spec = ServiceSpec::replica("s", "default", 1);
        let t = task(LastStatus::Running, true, Health::Unknown, Some(0));
        assert!(!is_healthy(&t, &spec, 1_000_000));
        let t = task(LastStatus::Running, true, Health::Healthy, Some(0));
        assert!(is_healthy(&t, &spec, 0));
        let t = task(LastStatus::Pending, true, Health::Healthy, None);
        assert!(!is_healthy(&t, &spec, 0));
    }

    #[test]
    fn unhealthy_inside_grace_is_ignored() {
        let mut spec = ServiceSpec::replica("s", "default", 1);
        spec.health_check_grace_period_s = 30;
        let t = task(LastStatus::Running, true, Health::Unhealthy, Some(1_000));
        assert!(!is_unhealthy(&t, &spec, 30_999));
        assert!(!is_failed(&t, &spec, 30_999));
        assert_eq!(next_change(&t, &spec, 2_000), Some(31_000));
        assert!(is_unhealthy(&t, &spec, 31_000));
        assert!(is_failed(&t, &spec, 31_000));
        let mut healthy_once = t.clone();
        healthy_once.ever_healthy = true;
        assert!(!is_failed(&healthy_once, &spec, 31_000));
    }

    #[test]
    fn failures() {
        let spec = ServiceSpec::replica("s", "default", 1);
        let never_started = task(LastStatus::Stopped, false, Health::Unknown, None);
        assert!(is_failed(&never_started, &spec, 0));
        assert!(failed_to_start(&never_started));
        let crashed = task(LastStatus::Stopped, false, Health::Unknown, Some(0));
        assert!(is_failed(&crashed, &spec, 0));
        assert!(!failed_to_start(&crashed));
        let pending = task(LastStatus::Pending, false, Health::Unknown, None);
        assert!(!is_failed(&pending, &spec, 0));
    }
}
