//! The domain rules the store applies, as pure functions over records, so
//! that both backends apply the same ones: which tasks an instance is
//! assigned (the desired set), how an agent's report merges into a stored
//! task (ECS: a task that stopped on its own stays stopped), when an
//! instance's generation grows, what a Hello reconciles, and which client
//! certificate a session or a renewal may use.
//!
//! The desired-set rule is also needed inside SQL (an assignment is read
//! in one query); [`IN_DESIRED_SET_SQL`] is its only SQL spelling, and a
//! backend test checks that the two agree on every combination.

use std::collections::BTreeMap;

use berth_proto::attributes;
use berth_proto::v1::TaskState;

use super::{
    CertUse, HelloOutcome, HelloRecord, InstanceRecord, PENDING, RUNNING, STOPPED, StoreError,
    TaskRecord,
};

/// The custom attributes of an instance after a put of `put` on `current`
/// (ECS `PutAttributes`): 1 to [`MAX_PER_CALL`] of them, each a valid custom
/// attribute, and at most [`MAX_CUSTOM`] on the instance afterwards.
///
/// [`MAX_PER_CALL`]: berth_proto::attributes::MAX_PER_CALL
/// [`MAX_CUSTOM`]: berth_proto::attributes::MAX_CUSTOM
pub fn put_attributes(
    instance: &InstanceRecord,
    put: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StoreError> {
    attribute_call_size(put.len())?;
    for (name, value) in put {
        attributes::check_custom(name, value)?;
    }
    let mut after = instance.custom_attributes.clone();
    after.extend(put.iter().map(|(k, v)| (k.clone(), v.clone())));
    if after.len() > attributes::MAX_CUSTOM {
        return Err(StoreError::TooManyAttributes {
            instance_id: instance.instance_id.clone(),
            count: after.len(),
        });
    }
    Ok(after)
}

/// The custom attributes of an instance after deleting `names` (ECS
/// `DeleteAttributes`): 1 to [`MAX_PER_CALL`] names, each one put before.
///
/// [`MAX_PER_CALL`]: berth_proto::attributes::MAX_PER_CALL
pub fn delete_attributes(
    instance: &InstanceRecord,
    names: &[String],
) -> Result<BTreeMap<String, String>, StoreError> {
    attribute_call_size(names.len())?;
    let mut after = instance.custom_attributes.clone();
    // A name given twice is deleted once.
    let names: std::collections::BTreeSet<&String> = names.iter().collect();
    for name in names {
        attributes::check_custom_name(name)?;
        if after.remove(name).is_none() {
            return Err(StoreError::NoAttribute {
                instance_id: instance.instance_id.clone(),
                name: name.clone(),
            });
        }
    }
    Ok(after)
}

fn attribute_call_size(n: usize) -> Result<(), StoreError> {
    if n == 0 {
        return Err(StoreError::NoAttributesInCall);
    }
    if n > attributes::MAX_PER_CALL {
        return Err(StoreError::TooManyAttributesInCall(n));
    }
    Ok(())
}

/// The cluster an activation's host joins: `default` when none is named.
pub fn activation_cluster(cluster: &str) -> &str {
    if cluster.is_empty() {
        super::DEFAULT_CLUSTER
    } else {
        cluster
    }
}

/// Whether a new activation may name `cluster`, whose stored status is
/// `status` (`None`: no such cluster): only an ACTIVE one.
pub fn cluster_open_for_enrollment(cluster: &str, status: Option<&str>) -> Result<(), StoreError> {
    match status {
        None => Err(StoreError::NoCluster(cluster.to_owned())),
        Some(super::ACTIVE) => Ok(()),
        Some(_) => Err(StoreError::ClusterInactive(cluster.to_owned())),
    }
}

/// The cluster a new task is stored in: its instance's (`instance_cluster`).
/// A task that names another cluster is refused ([`StoreError::Conflict`]
/// under `op`): a task never runs outside its cluster.
pub fn task_cluster<'a>(
    op: &'static str,
    task: &TaskRecord,
    instance_cluster: &'a str,
) -> Result<&'a str, StoreError> {
    if task.cluster.is_empty() || task.cluster == instance_cluster {
        Ok(instance_cluster)
    } else {
        Err(StoreError::Conflict {
            op,
            detail: format!(
                "task {} names cluster {} but its instance {} is in cluster {instance_cluster}",
                task.task_id, task.cluster, task.instance_id
            ),
        })
    }
}

/// ECS' rule for a cluster name: 1–255 of `[A-Za-z0-9_-]`. `Err` says
/// which part of the rule the name breaks.
pub fn check_cluster_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 255 {
        return Err("it is longer than 255 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("only letters, digits, '_' and '-' are allowed");
    }
    Ok(())
}

/// Whether a task belongs in its instance's assignment: every task except
/// those both desired and last STOPPED. A task whose definition the server
/// does not know cannot be assigned.
pub fn in_desired_set(has_definition: bool, desired_status: &str, last_status: &str) -> bool {
    let finished = desired_status == STOPPED && last_status == STOPPED;
    has_definition && !finished
}

/// [`in_desired_set`] as a SQL predicate over the `tasks` columns.
pub const IN_DESIRED_SET_SQL: &str = "definition_json <> '' \
     AND NOT (desired_status = 'STOPPED' AND last_status = 'STOPPED')";

/// The generation rule: an instance's generation grows by one (in the same
/// transaction) whenever a change of one of its tasks moves the task into
/// or out of the desired set, or changes its desired status.
/// `was_in_set` and `desired_before` describe the task before the change.
pub fn assignment_changed(was_in_set: bool, desired_before: &str, after: &TaskRecord) -> bool {
    was_in_set != after.in_desired_set() || desired_before != after.desired_status
}

/// Merges an agent's report into the stored task. Returns whether the
/// task's place in the desired set or its desired status changed.
pub fn merge_state(t: &mut TaskRecord, st: &TaskState) -> bool {
    let was_in_set = t.in_desired_set();
    let desired_before = t.desired_status.clone();
    if matches!(st.last_status.as_str(), PENDING | RUNNING | STOPPED) {
        t.last_status = st.last_status.clone();
    }
    if !st.health_status.is_empty() {
        t.health_status = st.health_status.clone();
    }
    if !st.stop_code.is_empty() {
        t.stop_code = st.stop_code.clone();
    }
    if !st.stopped_reason.is_empty() {
        t.stopped_reason = st.stopped_reason.clone();
    }
    if st.started_at_ms > 0 {
        t.started_at_ms = st.started_at_ms;
    }
    if st.stopped_at_ms > 0 {
        t.stopped_at_ms = st.stopped_at_ms;
    }
    if !st.family.is_empty() && t.family.is_empty() {
        t.family = st.family.clone();
    }
    t.containers = st.containers.clone();
    // ECS: a task that stopped on its own is not started again; its desired
    // status follows.
    if t.last_status == STOPPED && t.desired_status == RUNNING {
        t.desired_status = STOPPED.to_owned();
    }
    assignment_changed(was_in_set, &desired_before, t)
}

/// What a Hello changes of the stored instance (see [`HelloOutcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloChange {
    /// The outcome, without the instance after the update.
    pub outcome: HelloOutcome,
    pub hostname: String,
    pub cpu: i64,
    pub memory_mib: i64,
    pub last_event_seq: u64,
    pub generation: u64,
}

/// The Hello rule: sequence and generation are reconciled with the
/// agent's (an agent that lost its state lowers the sequence; one with a
/// newer generation than the server's raises it past its own); the
/// registered hostname and capacity stay, except that an instance
/// enrolled without them takes the first reported.
pub fn reconcile_hello(before: &InstanceRecord, h: &HelloRecord) -> HelloChange {
    let mut outcome = HelloOutcome::default();
    let mut last_event_seq = before.last_event_seq;
    if h.last_event_sequence < last_event_seq {
        outcome.event_seq_lowered_from = Some(last_event_seq);
        last_event_seq = h.last_event_sequence;
    }
    let mut generation = before.generation;
    if h.applied_generation > generation {
        outcome.generation_raised_from = Some(generation);
        generation = h.applied_generation.saturating_add(1);
    }
    let hostname = if before.hostname.is_empty() {
        h.hostname.clone()
    } else {
        before.hostname.clone()
    };
    let (mut cpu, mut memory_mib) = (before.cpu, before.memory_mib);
    if cpu == 0 && memory_mib == 0 {
        outcome.capacity_registered = h.cpu > 0 || h.memory_mib > 0;
        (cpu, memory_mib) = (h.cpu, h.memory_mib);
    } else if h.cpu > cpu || h.memory_mib > memory_mib {
        outcome.capacity_clamped = true;
    }
    HelloChange {
        outcome,
        hostname,
        cpu,
        memory_mib,
        last_event_seq,
        generation,
    }
}

/// The certificate rule: which client certificate (by serial) a session
/// may use. [`CertUse::Promoted`] asks the store to make the pending
/// certificate current.
pub fn certificate_use(inst: &InstanceRecord, serial: &str) -> CertUse {
    match (&inst.cert_serial, &inst.pending_cert_serial) {
        (Some(current), _) if current == serial => CertUse::Accepted,
        (current, Some(pending)) if pending == serial => CertUse::Promoted {
            retired: current.clone(),
        },
        (None, _) => CertUse::Accepted,
        (Some(current), _) => CertUse::Retired {
            current: current.clone(),
        },
    }
}

/// Whether a renewal presented with `presented` may be issued: with the
/// current certificate or the pending one (a renewal whose answer was
/// lost), or any while none is recorded.
pub fn renewal_allowed(inst: &InstanceRecord, presented: &str) -> bool {
    match &inst.cert_serial {
        None => true,
        Some(current) => {
            current == presented || inst.pending_cert_serial.as_deref() == Some(presented)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(desired: &str, last: &str) -> TaskRecord {
        TaskRecord {
            task_id: "t1".into(),
            instance_id: "i-1".into(),
            definition_json: "{}".into(),
            desired_status: desired.into(),
            last_status: last.into(),
            ..TaskRecord::default()
        }
    }

    fn report(last: &str) -> TaskState {
        TaskState {
            task_id: "t1".into(),
            last_status: last.into(),
            ..TaskState::default()
        }
    }

    #[test]
    fn only_finished_or_undefined_tasks_leave_the_desired_set() {
        assert!(in_desired_set(true, RUNNING, PENDING));
        assert!(in_desired_set(true, RUNNING, RUNNING));
        assert!(in_desired_set(true, STOPPED, RUNNING));
        assert!(in_desired_set(true, RUNNING, STOPPED));
        assert!(!in_desired_set(true, STOPPED, STOPPED));
        assert!(!in_desired_set(false, RUNNING, PENDING));
    }

    #[test]
    fn a_task_stopping_on_its_own_becomes_desired_stopped_and_changes_the_assignment() {
        let mut t = task(RUNNING, RUNNING);
        let mut st = report(STOPPED);
        st.stop_code = "EssentialContainerExited".into();
        assert!(merge_state(&mut t, &st));
        assert_eq!(t.desired_status, STOPPED);
        assert_eq!(t.last_status, STOPPED);
        assert_eq!(t.stop_code, "EssentialContainerExited");
    }

    #[test]
    fn a_status_report_inside_the_set_does_not_change_the_assignment() {
        let mut t = task(RUNNING, PENDING);
        assert!(!merge_state(&mut t, &report(RUNNING)));
        assert_eq!(t.last_status, RUNNING);
        assert_eq!(t.desired_status, RUNNING);
    }

    #[test]
    fn a_stopped_report_of_a_task_being_stopped_finishes_it() {
        let mut t = task(STOPPED, RUNNING);
        assert!(merge_state(&mut t, &report(STOPPED)));
        assert!(!t.in_desired_set());
    }

    #[test]
    fn unknown_statuses_and_empty_fields_keep_what_is_stored() {
        let mut t = task(RUNNING, RUNNING);
        t.health_status = "HEALTHY".into();
        t.family = "web".into();
        let mut st = report("EXPLODED");
        st.family = "other".into();
        assert!(!merge_state(&mut t, &st));
        assert_eq!(t.last_status, RUNNING);
        assert_eq!(t.health_status, "HEALTHY");
        assert_eq!(t.family, "web", "a stored family is never renamed");
    }

    #[test]
    fn the_generation_rule() {
        let t = task(STOPPED, RUNNING);
        assert!(
            assignment_changed(true, RUNNING, &t),
            "desired status moved"
        );
        assert!(!assignment_changed(true, STOPPED, &t), "nothing moved");
        let done = task(STOPPED, STOPPED);
        assert!(assignment_changed(true, STOPPED, &done), "left the set");
    }

    #[test]
    fn a_hello_reconciles_with_the_agent_and_keeps_what_was_registered() {
        let before = InstanceRecord {
            hostname: "web-1".into(),
            cpu: 2048,
            memory_mib: 4096,
            last_event_seq: 9,
            generation: 3,
            ..InstanceRecord::default()
        };
        let h = HelloRecord {
            hostname: "renamed".into(),
            cpu: 4096,
            memory_mib: 4096,
            last_event_sequence: 2,
            applied_generation: 7,
            ..HelloRecord::default()
        };
        let c = reconcile_hello(&before, &h);
        assert_eq!(c.outcome.event_seq_lowered_from, Some(9));
        assert_eq!(c.last_event_seq, 2);
        assert_eq!(c.outcome.generation_raised_from, Some(3));
        assert_eq!(c.generation, 8);
        assert_eq!(c.hostname, "web-1");
        assert_eq!((c.cpu, c.memory_mib), (2048, 4096));
        assert!(c.outcome.capacity_clamped);
        let unregistered = InstanceRecord::default();
        let c = reconcile_hello(&unregistered, &h);
        assert!(c.outcome.capacity_registered);
        assert_eq!((c.cpu, c.hostname.as_str()), (4096, "renamed"));
    }

    #[test]
    fn certificates_are_current_pending_or_retired() {
        let inst = InstanceRecord {
            cert_serial: Some("aa".into()),
            pending_cert_serial: Some("bb".into()),
            ..InstanceRecord::default()
        };
        assert_eq!(certificate_use(&inst, "aa"), CertUse::Accepted);
        assert_eq!(
            certificate_use(&inst, "bb"),
            CertUse::Promoted {
                retired: Some("aa".into())
            }
        );
        assert_eq!(
            certificate_use(&inst, "cc"),
            CertUse::Retired {
                current: "aa".into()
            }
        );
        assert!(renewal_allowed(&inst, "aa") && renewal_allowed(&inst, "bb"));
        assert!(!renewal_allowed(&inst, "cc"));
        assert!(renewal_allowed(&InstanceRecord::default(), "any"));
    }
}
