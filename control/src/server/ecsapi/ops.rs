//! The ECS API's operations, each on the domain function the admin API
//! calls (`server::clusters`, …): the request's members are read and
//! checked here, the rules stay there. A member ECS has that berth cannot
//! honour is refused with `InvalidParameterException` naming it.
//!
//! Supported: ListClusters, DescribeClusters, CreateCluster, DeleteCluster,
//! RegisterTaskDefinition, DescribeTaskDefinition, ListTaskDefinitions,
//! ListTaskDefinitionFamilies, DeregisterTaskDefinition,
//! CreateService, UpdateService, DescribeServices, ListServices,
//! DeleteService.
//! Every other operation is answered `InvalidParameterException` naming
//! it.

use berth_proto::json::task_definition_arn;
use berth_proto::json::{cluster_arn, cluster_json};
use berth_proto::v1::{
    ClusterRef, CreateServiceRequest, DeleteServiceRequest, ListServicesRequest,
    ListTaskDefinitionsRequest, RegisterTaskDefinitionRequest, ServiceDescription, ServiceRef,
    TaskDefinitionRef, UpdateServiceRequest,
};
use serde_json::{Map, Value, json};
use tonic::{Code, Status};

use super::EcsError;
use crate::server::Core;
use crate::server::clusters;
use crate::server::services::{self, service_arn};
use crate::server::taskdefs::{self, task_definition_json};

/// ECS' largest `maxResults` for list operations.
pub const MAX_RESULTS: usize = 100;
/// Most clusters one DescribeClusters names (ECS: 100).
pub const MAX_DESCRIBE: usize = 100;
/// The cluster ECS uses when a request names none.
const DEFAULT_CLUSTER: &str = "default";

/// Runs `op` with `input` for the access key `caller`.
pub(crate) async fn call(
    core: &Core,
    op: &str,
    input: &Value,
    _region: &str,
    caller: &str,
) -> Result<Value, EcsError> {
    let input = input.as_object().ok_or_else(|| {
        EcsError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "SerializationException",
            "the request body must be a JSON object",
        )
    })?;
    let caller = format!("access key {caller}");
    match op {
        "ListClusters" => {
            list_clusters(core, Members::new(op, input, &["maxResults", "nextToken"])?).await
        }
        "DescribeClusters" => {
            describe_clusters(core, Members::new(op, input, &["clusters", "include"])?).await
        }
        "CreateCluster" => {
            create_cluster(
                core,
                Members::new(op, input, &["clusterName", "tags"])?,
                &caller,
            )
            .await
        }
        "DeleteCluster" => {
            let m = Members::new(op, input, &["cluster"])?;
            let name = m.required("cluster")?;
            let c = clusters::delete(
                core,
                ClusterRef {
                    name: cluster_name(name).to_owned(),
                },
                &caller,
            )
            .await
            .map_err(|s| from_status(&s, CLUSTER_NOT_FOUND))?;
            Ok(json!({ "cluster": cluster_json(&c) }))
        }
        "RegisterTaskDefinition" => register_task_definition(core, input).await,
        "DeregisterTaskDefinition" => {
            let m = Members::new(op, input, &["taskDefinition"])?;
            let name = m.required("taskDefinition")?;
            let r = taskdefs::deregister(core, taskdef_ref(name))
                .await
                .map_err(|s| from_status(&s, NO_TASK_DEFINITION))?;
            Ok(task_definition_json(&r))
        }
        "ListTaskDefinitionFamilies" => {
            list_task_definition_families(
                core,
                Members::new(
                    op,
                    input,
                    &["familyPrefix", "status", "maxResults", "nextToken"],
                )?,
            )
            .await
        }
        "DescribeTaskDefinition" => {
            describe_task_definition(
                core,
                Members::new(op, input, &["taskDefinition", "include"])?,
            )
            .await
        }
        "ListTaskDefinitions" => {
            list_task_definitions(
                core,
                Members::new(
                    op,
                    input,
                    &["familyPrefix", "status", "sort", "maxResults", "nextToken"],
                )?,
            )
            .await
        }
        // The services' parser reads ECS' own bodies and refuses what
        // berth cannot honour, naming the member.
        "CreateService" | "UpdateService" => {
            let cluster = input.get("cluster").and_then(Value::as_str).unwrap_or("");
            known_cluster(core, cluster).await?;
            let input_json = Value::Object(input.clone()).to_string();
            let d = if op == "CreateService" {
                let req = CreateServiceRequest {
                    input_json,
                    ..CreateServiceRequest::default()
                };
                services::create(core, req).await
            } else {
                let req = UpdateServiceRequest {
                    input_json,
                    ..UpdateServiceRequest::default()
                };
                services::update(core, req).await
            };
            service_answer(&d.map_err(|s| from_status(&s, SERVICE_NOT_FOUND))?)
        }
        "DeleteService" => {
            delete_service(
                core,
                Members::new(op, input, &["cluster", "service", "force"])?,
            )
            .await
        }
        "DescribeServices" => {
            describe_services(
                core,
                Members::new(op, input, &["cluster", "services", "include"])?,
            )
            .await
        }
        "ListServices" => {
            list_services(
                core,
                Members::new(
                    op,
                    input,
                    &[
                        "cluster",
                        "maxResults",
                        "nextToken",
                        "launchType",
                        "schedulingStrategy",
                    ],
                )?,
            )
            .await
        }
        other => Err(EcsError::invalid(format!(
            "the operation {other} is not supported by berth's ECS API (see docs/ecs-api.md for the supported ones)"
        ))),
    }
}

/// A request's members, checked against what the operation reads.
pub struct Members<'a> {
    op: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Members<'a> {
    /// Refuses any member not in `known` (null ones are absent).
    pub fn new(op: &'a str, map: &'a Map<String, Value>, known: &[&str]) -> Result<Self, EcsError> {
        if let Some((k, _)) = map
            .iter()
            .find(|(k, v)| !v.is_null() && !known.contains(&k.as_str()))
        {
            return Err(EcsError::invalid(format!(
                "{op}: the member {:.64} is not supported by berth",
                berth_proto::text::escape_control(k)
            )));
        }
        Ok(Members { op, map })
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, what: &str) -> EcsError {
        EcsError::invalid(format!("{}: {key} must be {what}", self.op))
    }

    pub fn boolean(&self, key: &str) -> Result<bool, EcsError> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong_type(key, "true or false")),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&'a str>, EcsError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    /// A string member the operation cannot do without.
    pub fn required(&self, key: &str) -> Result<&'a str, EcsError> {
        self.string(key)?
            .ok_or_else(|| EcsError::invalid(format!("{}: {key} is required", self.op)))
    }

    pub fn strings(&self, key: &str, max: usize) -> Result<Vec<&'a str>, EcsError> {
        let list = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(self.wrong_type(key, "a list of strings")),
        };
        if list.len() > max {
            return Err(EcsError::invalid(format!(
                "{}: {key} names {} items, at most {max} are accepted",
                self.op,
                list.len()
            )));
        }
        list.iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong_type(key, "a list of strings"))
            })
            .collect()
    }

    /// `maxResults`: 1 to [`MAX_RESULTS`], [`MAX_RESULTS`] when absent.
    pub fn max_results(&self) -> Result<usize, EcsError> {
        match self.get("maxResults") {
            None => Ok(MAX_RESULTS),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_RESULTS).contains(n))
                .ok_or_else(|| self.wrong_type("maxResults", "an integer from 1 to 100")),
        }
    }

    /// Refuses a non-empty list member berth does not honour yet.
    pub fn refuse_non_empty(&self, key: &str) -> Result<(), EcsError> {
        match self.get(key) {
            Some(Value::Array(a)) if !a.is_empty() => Err(EcsError::invalid(format!(
                "{}: {key} is not supported by berth",
                self.op
            ))),
            Some(Value::Array(_)) | None => Ok(()),
            Some(_) => Err(self.wrong_type(key, "a list")),
        }
    }
}

/// One page of `items` from `token` on, and the token of the next. A
/// token is the hex of the offset the next page starts at; one this
/// server did not give is refused.
pub fn page<'a>(
    items: &'a [String],
    token: Option<&str>,
    max: usize,
) -> Result<(&'a [String], Option<String>), EcsError> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => hex::decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| EcsError::invalid("nextToken is not one this server gave"))?,
    };
    let end = start.saturating_add(max).min(items.len());
    let slice = items.get(start..end).unwrap_or(&[]);
    let next = (end < items.len()).then(|| hex::encode(end.to_string()));
    Ok((slice, next))
}

/// A list operation's answer: one [`page`] of `items` as `member`, each
/// shown by `show`, and `nextToken` when more follow.
fn listed(
    member: &str,
    items: &[String],
    token: Option<&str>,
    max: usize,
    show: impl Fn(&String) -> Value,
) -> Result<Value, EcsError> {
    let (slice, next) = page(items, token, max)?;
    let mut out = Map::new();
    out.insert(member.to_owned(), slice.iter().map(show).collect());
    if let Some(t) = next {
        out.insert("nextToken".to_owned(), Value::String(t));
    }
    Ok(Value::Object(out))
}

/// A cluster's name from a name or an ARN (`…:cluster/NAME`).
pub fn cluster_name(name_or_arn: &str) -> &str {
    let s = name_or_arn.trim();
    match s.strip_prefix("arn:") {
        Some(rest) => rest.rsplit_once(":cluster/").map_or(s, |(_, n)| n),
        None => s,
    }
}

/// The ECS exception for an admin API status; `not_found` names the
/// exception of the operation's object.
pub fn from_status(s: &Status, not_found: &'static str) -> EcsError {
    let m = s.message().to_owned();
    match s.code() {
        Code::NotFound => EcsError::new(axum::http::StatusCode::BAD_REQUEST, not_found, m),
        Code::InvalidArgument | Code::OutOfRange => EcsError::invalid(m),
        Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::ResourceExhausted => EcsError::client(m),
        Code::PermissionDenied | Code::Unauthenticated => EcsError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            m,
        ),
        _ => EcsError::server(m),
    }
}

const CLUSTER_NOT_FOUND: &str = "ClusterNotFoundException";

async fn list_clusters(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    let max = m.max_results()?;
    let token = m.string("nextToken")?;
    let all = clusters::list(core)
        .await
        .map_err(|s| from_status(&s, CLUSTER_NOT_FOUND))?;
    let mut names: Vec<String> = all.clusters.into_iter().map(|c| c.name).collect();
    names.sort();
    listed("clusterArns", &names, token, max, |n| {
        Value::String(cluster_arn(n))
    })
}

async fn describe_clusters(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    let mut named = m.strings("clusters", MAX_DESCRIBE)?;
    m.refuse_non_empty("include")?;
    if named.is_empty() {
        named.push(DEFAULT_CLUSTER);
    }
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for n in named {
        let name = cluster_name(n);
        match clusters::describe(
            core,
            ClusterRef {
                name: name.to_owned(),
            },
        )
        .await
        {
            Ok(c) => found.push(cluster_json(&c)),
            Err(s) if s.code() == Code::NotFound || s.code() == Code::InvalidArgument => {
                failures.push(json!({ "arn": cluster_arn(name), "reason": "MISSING" }));
            }
            Err(s) => return Err(from_status(&s, CLUSTER_NOT_FOUND)),
        }
    }
    Ok(json!({ "clusters": found, "failures": failures }))
}

async fn create_cluster(core: &Core, m: Members<'_>, caller: &str) -> Result<Value, EcsError> {
    m.refuse_non_empty("tags")?;
    let name = m.string("clusterName")?.unwrap_or(DEFAULT_CLUSTER);
    let c = clusters::create(
        core,
        ClusterRef {
            name: name.to_owned(),
        },
        caller,
    )
    .await
    .map_err(|s| from_status(&s, CLUSTER_NOT_FOUND))?;
    Ok(json!({ "cluster": cluster_json(&c) }))
}

const NO_TASK_DEFINITION: &str = "ClientException";

/// The whole request is the task definition: the registry's parser
/// checks every member (and refuses what berth cannot honour, naming it).
async fn register_task_definition(
    core: &Core,
    input: &Map<String, Value>,
) -> Result<Value, EcsError> {
    let mut def = input.clone();
    if let Some(tags) = def.remove("tags")
        && tags.as_array().is_some_and(|a| !a.is_empty())
    {
        return Err(EcsError::invalid(
            "RegisterTaskDefinition: tags is not supported by berth",
        ));
    }
    let r = taskdefs::register(
        core,
        RegisterTaskDefinitionRequest {
            task_definition_json: Value::Object(def).to_string(),
            reuse_latest_if_equal: false,
        },
    )
    .await
    .map_err(|s| from_status(&s, NO_TASK_DEFINITION))?;
    Ok(task_definition_json(&r))
}

fn taskdef_ref(name: &str) -> TaskDefinitionRef {
    TaskDefinitionRef {
        task_definition: name.to_owned(),
    }
}

async fn describe_task_definition(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    m.refuse_non_empty("include")?;
    let name = m.required("taskDefinition")?;
    let r = taskdefs::describe(core, taskdef_ref(name))
        .await
        .map_err(|s| from_status(&s, NO_TASK_DEFINITION))?;
    Ok(task_definition_json(&r))
}

async fn list_task_definitions(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    let max = m.max_results()?;
    let token = m.string("nextToken")?;
    let descending = match m.string("sort")? {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => {
            return Err(EcsError::invalid(
                "ListTaskDefinitions: sort must be ASC or DESC",
            ));
        }
    };
    let status = match m.string("status")? {
        None | Some("ACTIVE") => "ACTIVE",
        Some("INACTIVE") => "INACTIVE",
        Some(_) => {
            return Err(EcsError::invalid(
                "ListTaskDefinitions: status must be ACTIVE or INACTIVE",
            ));
        }
    };
    let r = taskdefs::list(
        core,
        ListTaskDefinitionsRequest {
            // ECS' familyPrefix matches the whole family name.
            family: m.string("familyPrefix")?.unwrap_or("").to_owned(),
            status: status.to_owned(),
        },
    )
    .await
    .map_err(|s| from_status(&s, NO_TASK_DEFINITION))?;
    let mut names = r.task_definitions;
    if descending {
        names.reverse();
    }
    listed("taskDefinitionArns", &names, token, max, |n| {
        task_definition_arn(n)
    })
}

const SERVICE_NOT_FOUND: &str = "ServiceNotFoundException";
/// Most services one DescribeServices names (ECS: 10).
pub const MAX_DESCRIBE_SERVICES: usize = 10;

/// A service's DescribeServices element (`services::description`), with
/// its task definitions as ARNs, as ECS writes them (the CLI's JSON keeps
/// `family:revision`, SPEC §6).
fn service_element(d: &ServiceDescription) -> Result<Value, EcsError> {
    let mut v: Value = serde_json::from_str(&d.service_json).map_err(|e| {
        EcsError::server(format!(
            "service {}: its description is not JSON: {e}",
            d.name
        ))
    })?;
    let arn = |t: &mut Value| {
        if let Some(name) = t.as_str() {
            *t = task_definition_arn(name);
        }
    };
    arn(&mut v["taskDefinition"]);
    if let Some(ds) = v.get_mut("deployments").and_then(Value::as_array_mut) {
        for d in ds {
            arn(&mut d["taskDefinition"]);
        }
    }
    Ok(v)
}

/// ClusterNotFoundException unless `cluster` (a name or an ARN; empty:
/// `default`) is an ACTIVE cluster.
async fn known_cluster(core: &Core, cluster: &str) -> Result<(), EcsError> {
    let name = match cluster_name(cluster) {
        "" => DEFAULT_CLUSTER.to_owned(),
        c => c.to_owned(),
    };
    let lookup = name.clone();
    let found = core
        .db("cluster", move |s| s.cluster(&lookup))
        .await
        .map_err(|e| EcsError::server(e.to_string()))?;
    match found {
        Some(c) if c.status == "ACTIVE" => Ok(()),
        _ => Err(EcsError::new(
            axum::http::StatusCode::BAD_REQUEST,
            CLUSTER_NOT_FOUND,
            format!("Cluster not found: {name}"),
        )),
    }
}

fn service_answer(d: &ServiceDescription) -> Result<Value, EcsError> {
    Ok(json!({ "service": service_element(d)? }))
}

/// A service's name from a name or an ARN (`…:service/CLUSTER/NAME`).
fn service_name(name_or_arn: &str) -> &str {
    let s = name_or_arn.trim();
    match s.strip_prefix("arn:") {
        Some(_) => s.rsplit_once('/').map_or(s, |(_, n)| n),
        None => s,
    }
}

async fn delete_service(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    let name = m.required("service")?;
    known_cluster(core, m.string("cluster")?.unwrap_or("")).await?;
    let d = services::delete(
        core,
        DeleteServiceRequest {
            cluster: m.string("cluster")?.unwrap_or("").to_owned(),
            name: service_name(name).to_owned(),
            force: m.boolean("force")?,
        },
    )
    .await
    .map_err(|s| from_status(&s, SERVICE_NOT_FOUND))?;
    service_answer(&d)
}

async fn describe_services(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    m.refuse_non_empty("include")?;
    let cluster = m.string("cluster")?.unwrap_or("").to_owned();
    let named = m.strings("services", MAX_DESCRIBE_SERVICES)?;
    if named.is_empty() {
        return Err(EcsError::invalid(
            "DescribeServices: services names at least one service",
        ));
    }
    known_cluster(core, &cluster).await?;
    let cluster_name_ = match cluster_name(&cluster) {
        "" => DEFAULT_CLUSTER,
        c => c,
    };
    let (mut found, mut failures) = (Vec::new(), Vec::new());
    for n in named {
        let name = service_name(n);
        let r = services::describe(
            core,
            ServiceRef {
                cluster: cluster.clone(),
                name: name.to_owned(),
            },
        )
        .await;
        match r {
            Ok(d) => found.push(service_element(&d)?),
            Err(s) if s.code() == Code::NotFound => failures.push(json!({
                "arn": service_arn(cluster_name_, name),
                "reason": "MISSING",
            })),
            Err(s) => return Err(from_status(&s, SERVICE_NOT_FOUND)),
        }
    }
    Ok(json!({ "services": found, "failures": failures }))
}

async fn list_services(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    let max = match m.get("maxResults") {
        None => 10,
        Some(_) => m.max_results()?,
    };
    let token = m.string("nextToken")?;
    let launch_type = m.string("launchType")?;
    if launch_type.is_some_and(|l| l != "EXTERNAL" && l != "EC2") {
        return Ok(json!({ "serviceArns": [] }));
    }
    let strategy = m.string("schedulingStrategy")?;
    let list = services::list(
        core,
        ListServicesRequest {
            cluster: m.string("cluster")?.unwrap_or("").to_owned(),
        },
    )
    .await
    .map_err(|s| from_status(&s, CLUSTER_NOT_FOUND))?;
    let mut arns = Vec::new();
    for d in &list.services {
        let element = service_element(d)?;
        if strategy.is_some_and(|s| element["schedulingStrategy"].as_str() != Some(s)) {
            continue;
        }
        arns.push(service_arn(&d.cluster, &d.name));
    }
    arns.sort();
    listed("serviceArns", &arns, token, max, |a| {
        Value::String(a.clone())
    })
}

/// ACTIVE: families with an ACTIVE revision; INACTIVE: families with
/// none; ALL: every family (ECS' rules). `familyPrefix` is a prefix here.
async fn list_task_definition_families(core: &Core, m: Members<'_>) -> Result<Value, EcsError> {
    let max = m.max_results()?;
    let token = m.string("nextToken")?;
    let prefix = m.string("familyPrefix")?.unwrap_or("");
    let status = m.string("status")?.unwrap_or("ACTIVE");
    if !matches!(status, "ACTIVE" | "INACTIVE" | "ALL") {
        return Err(EcsError::invalid(
            "ListTaskDefinitionFamilies: status must be ACTIVE, INACTIVE or ALL",
        ));
    }
    let families_with = |status: &str| {
        let status = status.to_owned();
        async move {
            let r = taskdefs::list(
                core,
                ListTaskDefinitionsRequest {
                    family: String::new(),
                    status,
                },
            )
            .await
            .map_err(|s| from_status(&s, NO_TASK_DEFINITION))?;
            let set: std::collections::BTreeSet<String> = r
                .task_definitions
                .iter()
                .filter_map(|n| n.rsplit_once(':').map(|(f, _)| f.to_owned()))
                .filter(|f| f.starts_with(prefix))
                .collect();
            Ok::<_, EcsError>(set)
        }
    };
    let active = families_with("ACTIVE").await?;
    let families: Vec<String> = match status {
        "ACTIVE" => active.into_iter().collect(),
        all_or_inactive => {
            let all = families_with("ALL").await?;
            if all_or_inactive == "ALL" {
                all.into_iter().collect()
            } else {
                all.difference(&active).cloned().collect()
            }
        }
    };
    listed("families", &families, token, max, |f| {
        Value::String(f.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i:03}")).collect()
    }

    #[test]
    fn pages_cover_every_item_once() {
        let all = names(7);
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10 {
            let (slice, next) = page(&all, token.as_deref(), 3).expect("page");
            seen.extend_from_slice(slice);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, all);
        let (slice, next) = page(&all, None, 7).expect("one page");
        assert_eq!((slice.len(), next), (7, None));
        let e = page(&all, Some("zz"), 3).expect_err("bad token");
        assert_eq!(e.kind, "InvalidParameterException");
    }

    #[test]
    fn members_are_checked_by_name_and_type() {
        let input = json!({"clusterName": "a", "settings": [{"name": "containerInsights"}]});
        let map = input.as_object().expect("object");
        let e = Members::new("CreateCluster", map, &["clusterName"])
            .err()
            .expect("refused");
        assert!(
            e.message
                .contains("CreateCluster: the member settings is not supported"),
            "{}",
            e.message
        );
        let input = json!({"maxResults": 0, "clusters": ["a", 1], "settings": null});
        let map = input.as_object().expect("object");
        let m = Members::new("X", map, &["maxResults", "clusters"]).expect("null is absent");
        assert!(m.max_results().expect_err("0").message.contains("1 to 100"));
        assert!(
            m.strings("clusters", 10)
                .expect_err("1")
                .message
                .contains("list of strings")
        );
        assert!(
            m.strings("clusters", 1)
                .expect_err("2")
                .message
                .contains("at most 1")
        );
    }

    #[test]
    fn clusters_are_named_by_name_or_arn() {
        assert_eq!(cluster_name("web"), "web");
        assert_eq!(
            cluster_name("arn:aws:ecs:us-east-1:123456789012:cluster/web"),
            "web"
        );
        assert_eq!(cluster_name(" web "), "web");
    }

    #[test]
    fn admin_statuses_map_to_ecs_exceptions() {
        let cases = [
            (Status::not_found("x"), "ClusterNotFoundException", 400),
            (
                Status::invalid_argument("x"),
                "InvalidParameterException",
                400,
            ),
            (Status::failed_precondition("x"), "ClientException", 400),
            (Status::already_exists("x"), "ClientException", 400),
            (Status::unavailable("x"), "ServerException", 500),
            (Status::internal("x"), "ServerException", 500),
        ];
        for (s, kind, code) in cases {
            let e = from_status(&s, "ClusterNotFoundException");
            assert_eq!((e.kind, e.status.as_u16()), (kind, code), "{s:?}");
        }
    }
}
