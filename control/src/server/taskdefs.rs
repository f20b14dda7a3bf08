//! The admin API of the task-definition registry (`berth taskdef …`) and
//! `RunTask`, which runs a registered definition or registers one first.
//!
//! Background: ECS keeps every task definition as an immutable revision
//! of its family (`web:1`, `web:2`, …); a task or a service names one.
//! berth does the same, and `task run FILE` (like `service create
//! --task-definition FILE`) registers the file first: as a new revision,
//! or as the family's latest ACTIVE revision when the content is equal, so
//! running one file over and over does not pile up revisions.
//!
//! Design:
//! - a definition is checked by [`berth_taskdef::parse`] (every problem in
//!   one INVALID_ARGUMENT, as `RunTask` always did) and stored
//!   *normalized*: the register-task-definition input shape (a
//!   describe-task-definition document is unwrapped), ECS' output-only
//!   members (`taskDefinitionArn`, `revision`, `status`, `registeredAt`,
//!   `registeredBy`, `deregisteredAt`, `deleteRequestedAt`,
//!   `compatibilities`, `requiresAttributes`) dropped, `null`s gone, keys
//!   sorted, no whitespace ([`normalize`]). Parsing the stored form yields
//!   the same definition, and equal definitions have equal text, which is
//!   what the store compares;
//! - a reference is `FAMILY`, `FAMILY:REVISION` or the ARN of one
//!   ([`TaskDefRef::parse`]); `FAMILY` alone is the latest ACTIVE revision;
//! - `RunTask` refuses an INACTIVE revision (FAILED_PRECONDITION: nothing
//!   new may use it) and places its `count` tasks one after another through
//!   `scheduler::run_task`; a task that cannot be placed is a `failure`
//!   with its reason, and when none is placed the first refusal is the
//!   answer, with the status `RunTask` always gave.

use berth_proto::json::{task_definition_arn, time_json};
use berth_proto::v1::{
    ListTaskDefinitionsRequest, ListTaskDefinitionsResponse, RegisterTaskDefinitionRequest,
    RegisteredTaskDefinition, RunTaskRequest, RunTaskResponse, TaskDefinitionRef,
};
use berth_taskdef::TaskDefinition;
use serde_json::{Map, Value, json};
use tonic::Status;
use tracing::info;

use super::admin::{placement_status, task_message};
use super::placement::{Constraint, SpecError, Strategy};
use super::scheduler::{self, Origin, ScheduleError};
use super::store::{
    INACTIVE, MAX_TASK_DEFINITION_REVISIONS, RegistryError, StatusFilter, StoreError,
    TaskDefinitionRecord, check_family,
};
use super::{Core, store_status};

/// ECS' limit on tasks per `RunTask`.
pub const MAX_COUNT: u32 = 10;
/// ECS' limit on `startedBy`.
pub const MAX_STARTED_BY: usize = 36;
/// ECS' limit on a task group name.
pub const MAX_GROUP: usize = 255;

/// A reference to a registered definition: `FAMILY` (the latest ACTIVE
/// revision) or `FAMILY:REVISION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefRef {
    pub family: String,
    pub revision: Option<i64>,
}

impl TaskDefRef {
    /// Parses `FAMILY`, `FAMILY:REVISION` or
    /// `arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION`.
    pub fn parse(s: &str) -> Result<TaskDefRef, String> {
        let s = s.trim();
        let bare = match s.strip_prefix("arn:") {
            Some(rest) => rest
                .split_once(":task-definition/")
                .map(|(_, r)| r)
                .ok_or_else(|| {
                    format!(
                        "{s:?} is not a task definition ARN (arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION)"
                    )
                })?,
            None => s,
        };
        let (family, revision) = match bare.split_once(':') {
            Some((f, r)) => {
                let rev = r
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_TASK_DEFINITION_REVISIONS).contains(n) && r.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        format!(
                            "task definition {s:?}: the revision {r:?} is not a number from 1 to {}",
                            MAX_TASK_DEFINITION_REVISIONS
                        )
                    })?;
                (f, Some(rev))
            }
            None => (bare, None),
        };
        check_family(family).map_err(|e| format!("task definition {s:?}: {e}"))?;
        Ok(TaskDefRef {
            family: family.to_owned(),
            revision,
        })
    }
}

impl std::fmt::Display for TaskDefRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.revision {
            Some(r) => write!(f, "{}:{r}", self.family),
            None => f.write_str(&self.family),
        }
    }
}

/// The stored form of a definition (see the module docs).
pub fn normalize(definition: &TaskDefinition) -> Result<String, String> {
    let mut d = definition.clone();
    d.task_definition_arn = None;
    d.revision = None;
    d.status = None;
    d.registered_at = None;
    d.registered_by = None;
    d.deregistered_at = None;
    d.delete_requested_at = None;
    d.compatibilities = None;
    d.requires_attributes = None;
    // Through a `Value`: its maps are sorted, so equal definitions are
    // equal text whatever order their free-form members came in.
    serde_json::to_value(&d)
        .and_then(|v| serde_json::to_string(&v))
        .map_err(|e| format!("cannot store the task definition: {e}"))
}

/// Parses and normalizes a submitted definition: `(family, stored form,
/// warnings)`, or INVALID_ARGUMENT listing every problem.
fn checked(definition_json: &str) -> Result<(String, String, Vec<String>), Status> {
    let parsed = berth_taskdef::parse(definition_json)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let stored = normalize(&parsed.definition).map_err(Status::internal)?;
    Ok((parsed.definition.family, stored, parsed.warnings))
}

/// The warnings of a stored definition (empty if it no longer parses,
/// which `RunTask` reports when it runs it).
fn warnings_of(rec: &TaskDefinitionRecord) -> Vec<String> {
    berth_taskdef::parse(&rec.definition_json)
        .map(|p| p.warnings)
        .unwrap_or_default()
}

fn message(rec: &TaskDefinitionRecord, warnings: Vec<String>) -> RegisteredTaskDefinition {
    RegisteredTaskDefinition {
        family: rec.family.clone(),
        revision: rec.revision,
        status: rec.status.clone(),
        task_definition_json: rec.definition_json.clone(),
        registered_at_ms: rec.registered_at_ms,
        deregistered_at_ms: rec.deregistered_at_ms,
        warnings,
    }
}

/// The `describe-task-definition` shape of a registered revision: the
/// stored definition with ECS' bookkeeping members.
pub fn task_definition_json(r: &RegisteredTaskDefinition) -> Value {
    let mut def: Map<String, Value> = serde_json::from_str(&r.task_definition_json)
        .ok()
        .and_then(|v: Value| v.as_object().cloned())
        .unwrap_or_default();
    let name = format!("{}:{}", r.family, r.revision);
    def.insert("taskDefinitionArn".into(), task_definition_arn(&name));
    def.insert("family".into(), Value::from(r.family.clone()));
    def.insert("revision".into(), Value::from(r.revision));
    def.insert("status".into(), Value::from(r.status.clone()));
    def.insert("compatibilities".into(), json!(["EC2", "EXTERNAL"]));
    def.insert("registeredAt".into(), time_json(r.registered_at_ms));
    if r.deregistered_at_ms > 0 {
        def.insert("deregisteredAt".into(), time_json(r.deregistered_at_ms));
    }
    json!({ "taskDefinition": def })
}

/// The status of a registry error (others as every store error).
pub(crate) fn registry_status(e: StoreError) -> Status {
    match e {
        StoreError::Registry(r) => match r {
            RegistryError::Family(_) | RegistryError::TooLarge(_) => {
                Status::invalid_argument(r.to_string())
            }
            RegistryError::TooManyRevisions(_) => Status::failed_precondition(r.to_string()),
            RegistryError::NotFound(_) => Status::not_found(r.to_string()),
        },
        other => store_status(other),
    }
}

async fn register_checked(
    core: &Core,
    family: String,
    stored: String,
    reuse: bool,
) -> Result<(TaskDefinitionRecord, bool), Status> {
    let now = berth_proto::now_ms();
    let (rec, reused) = core
        .db("register_task_definition", move |s| {
            s.register_task_definition(&family, &stored, reuse, now)
        })
        .await
        .map_err(registry_status)?;
    if !reused {
        info!(task_definition = %rec.name(), "task definition registered");
    }
    Ok((rec, reused))
}

/// `RegisterTaskDefinition`.
pub(crate) async fn register(
    core: &Core,
    req: RegisterTaskDefinitionRequest,
) -> Result<RegisteredTaskDefinition, Status> {
    let (family, stored, warnings) = checked(&req.task_definition_json)?;
    let (rec, _) = register_checked(core, family, stored, req.reuse_latest_if_equal).await?;
    Ok(message(&rec, warnings))
}

fn parse_ref(s: &str) -> Result<TaskDefRef, Status> {
    if s.trim().is_empty() {
        return Err(Status::invalid_argument(
            "task_definition: name a task definition as FAMILY or FAMILY:REVISION",
        ));
    }
    TaskDefRef::parse(s).map_err(Status::invalid_argument)
}

/// The revision a reference names; NOT_FOUND naming it when there is none.
async fn lookup(core: &Core, r: &TaskDefRef) -> Result<TaskDefinitionRecord, Status> {
    let (family, revision) = (r.family.clone(), r.revision);
    let found = core
        .db("task_definition", move |s| {
            s.task_definition(&family, revision)
        })
        .await
        .map_err(registry_status)?;
    found.ok_or_else(|| match r.revision {
        Some(_) => Status::not_found(format!(
            "no task definition {r}: `berth taskdef ls --family {} --status ALL` lists its revisions",
            r.family
        )),
        None => Status::not_found(format!(
            "no ACTIVE revision of task definition family {r}: register one with `berth taskdef register FILE`"
        )),
    })
}

/// The ACTIVE revision `s` names (`FAMILY`, `FAMILY:REVISION` or an ARN)
/// for something new to use: NOT_FOUND naming it when there is none,
/// FAILED_PRECONDITION when it was deregistered.
pub(crate) async fn resolve_active(core: &Core, s: &str) -> Result<TaskDefinitionRecord, Status> {
    let r = parse_ref(s)?;
    let rec = lookup(core, &r).await?;
    if rec.status == INACTIVE {
        return Err(Status::failed_precondition(format!(
            "task definition {} is INACTIVE (deregistered): nothing new may use it; use an ACTIVE revision or register it again",
            rec.name()
        )));
    }
    Ok(rec)
}

/// `DescribeTaskDefinition`.
pub(crate) async fn describe(
    core: &Core,
    req: TaskDefinitionRef,
) -> Result<RegisteredTaskDefinition, Status> {
    let r = parse_ref(&req.task_definition)?;
    let rec = lookup(core, &r).await?;
    let warnings = warnings_of(&rec);
    Ok(message(&rec, warnings))
}

/// `ListTaskDefinitions`.
pub(crate) async fn list(
    core: &Core,
    req: ListTaskDefinitionsRequest,
) -> Result<ListTaskDefinitionsResponse, Status> {
    let status = match req.status.trim().to_ascii_uppercase().as_str() {
        "" | "ACTIVE" => StatusFilter::Active,
        "INACTIVE" => StatusFilter::Inactive,
        "ALL" => StatusFilter::All,
        other => {
            return Err(Status::invalid_argument(format!(
                "status {other:?}: expected ACTIVE, INACTIVE or ALL"
            )));
        }
    };
    let family = Some(req.family.trim().to_owned()).filter(|f| !f.is_empty());
    if let Some(f) = &family {
        check_family(f).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    let recs = core
        .db("task_definitions", move |s| {
            s.task_definitions(family.as_deref(), status)
        })
        .await
        .map_err(registry_status)?;
    Ok(ListTaskDefinitionsResponse {
        task_definitions: recs.iter().map(TaskDefinitionRecord::name).collect(),
    })
}

/// `DeregisterTaskDefinition`: the revision must be named.
pub(crate) async fn deregister(
    core: &Core,
    req: TaskDefinitionRef,
) -> Result<RegisteredTaskDefinition, Status> {
    let r = parse_ref(&req.task_definition)?;
    let Some(revision) = r.revision else {
        return Err(Status::invalid_argument(format!(
            "task definition {r}: deregistration needs a revision (FAMILY:REVISION)"
        )));
    };
    let family = r.family.clone();
    let now = berth_proto::now_ms();
    let rec = core
        .db("deregister_task_definition", move |s| {
            s.deregister_task_definition(&family, revision, now)
        })
        .await
        .map_err(registry_status)?;
    info!(task_definition = %rec.name(), "task definition deregistered");
    let warnings = warnings_of(&rec);
    Ok(message(&rec, warnings))
}

/// `count`: 0 is 1, at most [`MAX_COUNT`].
fn task_count(count: u32) -> Result<u32, Status> {
    match count {
        0 => Ok(1),
        n if n <= MAX_COUNT => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "count: {n} tasks asked for; RunTask starts 1 to {MAX_COUNT} at once"
        ))),
    }
}

/// `startedBy`: up to 36 letters, digits, `-`, `/` and `_` (ECS).
fn check_started_by(s: &str) -> Result<(), Status> {
    let ok = s.len() <= MAX_STARTED_BY
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "started_by {s:?}: up to {MAX_STARTED_BY} letters, digits, hyphens (-), slashes (/) and underscores (_)"
        )))
    }
}

/// The task group: given (at most 255 characters, none a control
/// character), or `family:FAMILY` as in ECS.
fn group_of(group: &str, family: &str) -> Result<String, Status> {
    let group = group.trim();
    if group.is_empty() {
        return Ok(format!("family:{family}"));
    }
    if group.chars().count() > MAX_GROUP || group.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "group: {} characters; a task group is at most {MAX_GROUP} characters without control characters",
            group.chars().count()
        )));
    }
    Ok(group.to_owned())
}

fn schedule_status(e: ScheduleError) -> Status {
    match e {
        ScheduleError::Definition(e) => Status::invalid_argument(e),
        ScheduleError::Placement(e) => placement_status(e),
        ScheduleError::Store(e) => store_status(e),
    }
}

/// ECS' limits on the placement strategies and constraints of one
/// `RunTask`.
pub const MAX_STRATEGIES: usize = 5;
pub const MAX_CONSTRAINTS: usize = 10;

/// The placement of `RunTask`: its strategies and constraints in their
/// command-line forms (`spread:attribute:zone`, `memberOf:…`), in order.
fn placement_of(
    strategies: &[String],
    constraints: &[String],
) -> Result<scheduler::Placement, Status> {
    if strategies.len() > MAX_STRATEGIES {
        return Err(Status::invalid_argument(format!(
            "placement strategies: {} given, at most {MAX_STRATEGIES} are allowed",
            strategies.len()
        )));
    }
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(Status::invalid_argument(format!(
            "placement constraints: {} given, at most {MAX_CONSTRAINTS} are allowed",
            constraints.len()
        )));
    }
    let invalid = |e: SpecError| Status::invalid_argument(e.to_string());
    Ok(scheduler::Placement {
        cluster: String::new(),
        strategies: strategies
            .iter()
            .map(|s| s.parse::<Strategy>().map_err(invalid))
            .collect::<Result<_, _>>()?,
        constraints: constraints
            .iter()
            .map(|c| c.parse::<Constraint>().map_err(invalid))
            .collect::<Result<_, _>>()?,
    })
}

/// `RunTask`.
pub(crate) async fn run_task(core: &Core, req: RunTaskRequest) -> Result<RunTaskResponse, Status> {
    let mut placement = placement_of(&req.placement_strategies, &req.placement_constraints)?;
    placement.cluster = req.cluster.trim().to_owned();
    let count = task_count(req.count)?;
    let started_by = req.started_by.trim().to_owned();
    check_started_by(&started_by)?;
    let has_json = !req.task_definition_json.trim().is_empty();
    let has_ref = !req.task_definition.trim().is_empty();
    let rec = match (has_json, has_ref) {
        (true, true) => {
            return Err(Status::invalid_argument(
                "give either task_definition_json or task_definition, not both",
            ));
        }
        (false, false) => {
            return Err(Status::invalid_argument(
                "no task definition: give task_definition_json or task_definition (FAMILY[:REVISION])",
            ));
        }
        (true, false) => {
            let (family, stored, _) = checked(&req.task_definition_json)?;
            // Before the revision is registered: a refusal stores nothing.
            super::secrets::refuse_unresolvable(core, &stored).await?;
            register_checked(core, family, stored, true).await?.0
        }
        (false, true) => {
            let rec = resolve_active(core, &req.task_definition).await?;
            super::secrets::refuse_unresolvable(core, &rec.definition_json).await?;
            rec
        }
    };
    let group = group_of(&req.group, &rec.family)?;
    let origin = Origin {
        task_definition: rec.name(),
        group,
        started_by,
    };
    let explicit = Some(req.instance_id.trim().to_owned()).filter(|s| !s.is_empty());
    let mut tasks = Vec::new();
    let mut failures = Vec::new();
    let mut first_error = None;
    for _ in 0..count {
        match scheduler::run_task(
            core,
            rec.definition_json.clone(),
            explicit.clone(),
            origin.clone(),
            placement.clone(),
        )
        .await
        {
            Ok(scheduled) => tasks.push(task_message(&scheduled.task, scheduled.connected)),
            Err(e) => {
                failures.push(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    if tasks.is_empty()
        && let Some(e) = first_error
    {
        return Err(schedule_status(e));
    }
    Ok(RunTaskResponse { tasks, failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(family: &str, revision: Option<i64>) -> TaskDefRef {
        TaskDefRef {
            family: family.into(),
            revision,
        }
    }

    #[test]
    fn references_are_family_family_revision_or_an_arn() {
        assert_eq!(TaskDefRef::parse("web"), Ok(r("web", None)));
        assert_eq!(TaskDefRef::parse(" web:12 "), Ok(r("web", Some(12))));
        assert_eq!(
            TaskDefRef::parse("arn:aws:ecs:us-east-1:123456789012:task-definition/a_b-c:3"),
            Ok(r("a_b-c", Some(3)))
        );
        assert_eq!(
            TaskDefRef::parse("web:1000000"),
            Ok(r("web", Some(1_000_000)))
        );
        assert_eq!(r("web", Some(2)).to_string(), "web:2");
        for bad in [
            "",
            "web:",
            "web:0",
            "web:-1",
            "web:+1",
            "web:1x",
            "web:1000001",
            "web:1:2",
            "we b",
            "./task.json",
            "task.json",
            "arn:aws:ecs:x:y:task/web:1",
        ] {
            let e = TaskDefRef::parse(bad).expect_err(bad);
            assert!(e.contains("task definition"), "{bad}: {e}");
        }
        // A file name with a dot is not a family.
        assert!(TaskDefRef::parse("task.json").is_err());
    }

    #[test]
    fn run_task_placement_is_parsed_and_bounded() {
        let p = placement_of(
            &["spread:attribute:zone".into(), "binpack:memory".into()],
            &[
                "distinctInstance".into(),
                "memberOf:attribute:zone == rack-3".into(),
            ],
        )
        .expect("valid");
        assert_eq!(p.strategies.len(), 2);
        assert_eq!(p.constraints[0], Constraint::DistinctInstance);
        let e = placement_of(&["spread:disk".into()], &[]).expect_err("bad");
        assert!(e.message().contains("spread:disk"), "{}", e.message());
        let e = placement_of(&[], &["memberOf:(".into()]).expect_err("bad");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let six = vec!["random".to_owned(); 6];
        let e = placement_of(&six, &[]).expect_err("too many");
        assert!(
            e.message().contains("6 given, at most 5"),
            "{}",
            e.message()
        );
        let eleven = vec!["distinctInstance".to_owned(); 11];
        let e = placement_of(&[], &eleven).expect_err("too many");
        assert!(
            e.message().contains("11 given, at most 10"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn run_task_bounds_count_started_by_and_group() {
        assert_eq!(task_count(0).ok(), Some(1));
        assert_eq!(task_count(10).ok(), Some(10));
        let e = task_count(11).expect_err("too many");
        assert!(e.message().starts_with("count: 11"), "{}", e.message());
        assert!(check_started_by("nightly-job_1/a").is_ok());
        assert!(check_started_by("").is_ok());
        assert!(check_started_by(&"a".repeat(36)).is_ok());
        assert!(check_started_by(&"a".repeat(37)).is_err());
        assert!(check_started_by("a b").is_err());
        assert_eq!(group_of("", "web").ok().as_deref(), Some("family:web"));
        assert_eq!(group_of("batch", "web").ok().as_deref(), Some("batch"));
        assert!(group_of(&"g".repeat(256), "web").is_err());
        assert!(group_of("a\u{1b}[2J", "web").is_err());
    }

    /// Every example and test definition: the stored form parses to the
    /// same definition, and normalizing it again changes nothing.
    #[test]
    fn the_stored_form_parses_to_the_same_definition() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let parsed = berth_taskdef::parse(&text).expect("example parses");
            let stored = normalize(&parsed.definition).expect("normalize");
            let again = berth_taskdef::parse(&stored).expect("stored form parses");
            assert_eq!(
                normalize(&again.definition).expect("normalize"),
                stored,
                "{}",
                path.display()
            );
            assert_eq!(again.warnings, parsed.warnings, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 2, "examples found: {seen}");
    }

    #[test]
    fn bookkeeping_and_layout_do_not_change_the_stored_form() {
        let plain = r#"{"family":"web","containerDefinitions":[{"name":"web","image":"nginx:1","memory":64,"essential":true,"dockerLabels":{"b":"2","a":"1"}}]}"#;
        let described = r#"{"taskDefinition": {
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:7",
            "revision": 7, "status": "ACTIVE", "compatibilities": ["EC2"],
            "requiresAttributes": [{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}],
            "registeredAt": "2024-01-01T00:00:00Z", "registeredBy": "arn:aws:iam::1:user/x",
            "containerDefinitions": [{"essential": true, "memory": 64, "image": "nginx:1",
                "dockerLabels": {"a": "1", "b": "2"}, "name": "web", "cpu": null}],
            "family": "web", "networkMode": null}}"#;
        let norm = |s: &str| normalize(&berth_taskdef::parse(s).expect("parse").definition);
        assert_eq!(norm(plain), norm(described));
        let changed = plain.replace("nginx:1", "nginx:2");
        assert_ne!(norm(plain), norm(&changed));
    }
}
