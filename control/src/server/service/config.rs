//! A service's configuration: read from the body of `aws ecs create-service`
//! / `update-service` (what `--cli-input-json` takes and what the CLI's
//! flags are turned into), stored as berth's own JSON, and shown in the
//! shape of ECS' `DescribeServices`.
//!
//! Reading follows the task-definition parser's rules: `null` is absent,
//! unknown members are refused naming their JSON path, members ECS has that
//! need AWS are refused naming the path and what they need, and every
//! number is checked against its range ([`ServiceSpec::validate`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::super::placement::strategy::{Constraint, SpreadOn, Strategy};
use super::model::{
    CircuitBreaker, DEFAULT_LOST_AFTER_MS, DEFAULT_MIN_HEALTHY_TIME_MS, SchedulingStrategy,
    ServiceSpec,
};

/// The most placement strategies (ECS: 5) and constraints (ECS: 10).
pub const MAX_STRATEGIES: usize = 5;
pub const MAX_CONSTRAINTS: usize = 10;
/// The longest request body read.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// A refused configuration: the JSON path and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Members of the ECS bodies that need AWS, and what for.
const NEEDS_AWS: &[(&str, &str)] = &[
    (
        "loadBalancers",
        "load balancers are Elastic Load Balancing's (AWS); put a load balancer of your own in front of the hosts",
    ),
    ("serviceRegistries", "service discovery needs AWS Cloud Map"),
    ("networkConfiguration", "awsvpc networking needs an AWS VPC"),
    (
        "capacityProviderStrategy",
        "capacity providers need EC2 Auto Scaling or Fargate (AWS)",
    ),
    ("platformVersion", "platform versions are Fargate's (AWS)"),
    ("role", "service roles are IAM's (AWS)"),
    (
        "serviceConnectConfiguration",
        "Service Connect needs AWS Cloud Map",
    ),
    ("vpcLatticeConfigurations", "VPC Lattice is AWS'"),
    (
        "volumeConfigurations",
        "service-managed volumes are EBS (AWS)",
    ),
    ("availabilityZoneRebalancing", "Availability Zones are AWS'"),
    ("enableExecuteCommand", "ECS Exec needs AWS Systems Manager"),
    ("gatewayConnectors", "gateway connectors are AWS'"),
    ("monitoring", "service monitoring is CloudWatch's (AWS)"),
];

/// Members of `deploymentConfiguration` berth does not take.
const DEPLOYMENT_NEEDS_AWS: &[(&str, &str)] = &[
    ("alarms", "deployment alarms are CloudWatch's (AWS)"),
    (
        "bakeTimeInMinutes",
        "blue/green bake time is not supported by berth: rolling deployments only",
    ),
    (
        "lifecycleHooks",
        "deployment lifecycle hooks call AWS Lambda",
    ),
    (
        "linearConfiguration",
        "linear deployments are not supported by berth: rolling deployments only",
    ),
    (
        "canaryConfiguration",
        "canary deployments are not supported by berth: rolling deployments only",
    ),
    (
        "earlySuccessCriteria",
        "early success criteria are not supported by berth: rolling deployments only",
    ),
];

/// What a create or update sets, as read. `None`: not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceInput {
    pub cluster: Option<String>,
    pub name: Option<String>,
    pub task_definition: Option<String>,
    pub desired_count: Option<i64>,
    pub strategy: Option<SchedulingStrategy>,
    pub min_healthy_percent: Option<i64>,
    pub max_percent: Option<i64>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub placement_strategies: Option<Vec<Strategy>>,
    pub placement_constraints: Option<Vec<Constraint>>,
    pub health_check_grace_period_s: Option<i64>,
    pub force_new_deployment: bool,
}

/// Which body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Create,
    Update,
}

/// Reads the body of `create-service` or `update-service`.
pub fn read_input(text: &str, body: Body) -> Result<ServiceInput, ConfigError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(err(
            "$",
            format!(
                "the input is {} bytes, at most {MAX_INPUT_BYTES} are read",
                text.len()
            ),
        ));
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| err("$", format!("not valid JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(err("$", "expected a JSON object"));
    };
    let mut input = ServiceInput::default();
    for (key, value) in &m {
        if value.is_null() {
            continue;
        }
        if let Some((_, why)) = NEEDS_AWS.iter().find(|(k, _)| k == key) {
            if is_empty_value(value) {
                continue;
            }
            return Err(err(key.as_str(), format!("not supported: {why}")));
        }
        match (key.as_str(), body) {
            ("cluster", _) => input.cluster = Some(string(key, value)?),
            ("serviceName", Body::Create) | ("service", Body::Update) => {
                input.name = Some(string(key, value)?)
            }
            ("taskDefinition", _) => input.task_definition = Some(string(key, value)?),
            ("desiredCount", _) => input.desired_count = Some(integer(key, value)?),
            ("schedulingStrategy", Body::Create) => {
                input.strategy = Some(match string(key, value)?.as_str() {
                    "REPLICA" => SchedulingStrategy::Replica,
                    "DAEMON" => SchedulingStrategy::Daemon,
                    other => {
                        return Err(err(
                            key.as_str(),
                            format!("{other:?}: expected REPLICA or DAEMON"),
                        ));
                    }
                })
            }
            ("launchType", Body::Create) => {
                let t = string(key, value)?;
                if t != "EXTERNAL" {
                    return Err(err(
                        key.as_str(),
                        format!("{t:?}: berth runs EXTERNAL (your own hosts) only"),
                    ));
                }
            }
            ("deploymentConfiguration", _) => read_deployment(value, &mut input)?,
            ("placementStrategy", _) => input.placement_strategies = Some(strategies(value)?),
            ("placementConstraints", _) => input.placement_constraints = Some(constraints(value)?),
            ("healthCheckGracePeriodSeconds", _) => {
                input.health_check_grace_period_s = Some(integer(key, value)?)
            }
            ("forceNewDeployment", Body::Update) => {
                input.force_new_deployment = boolean(key, value)?
            }
            ("deploymentController", _) => {
                let t = value.get("type").and_then(Value::as_str).unwrap_or("ECS");
                if t != "ECS" {
                    return Err(err(
                        "deploymentController.type",
                        format!("{t:?}: berth deploys with its own rolling deployments (ECS) only"),
                    ));
                }
            }
            // Accepted and not kept: an idempotency token, and tagging
            // switches with nothing to tag.
            ("clientToken", Body::Create) => {
                string(key, value)?;
            }
            ("enableECSManagedTags", _) => {
                if boolean(key, value)? {
                    return Err(err(key.as_str(), "not supported: berth keeps no tags"));
                }
            }
            ("propagateTags", _) => {
                if string(key, value)? != "NONE" {
                    return Err(err(key.as_str(), "not supported: berth keeps no tags"));
                }
            }
            ("tags", Body::Create) => {
                if !is_empty_value(value) {
                    return Err(err(key.as_str(), "not supported: berth keeps no tags"));
                }
            }
            _ => {
                let shown: String = key.chars().take(64).collect();
                return Err(err(shown, "unknown member"));
            }
        }
    }
    Ok(input)
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(b) => !b,
        Value::Null => true,
        _ => false,
    }
}

fn string(path: &str, v: &Value) -> Result<String, ConfigError> {
    match v {
        Value::String(s) if s.len() <= 2048 => Ok(s.clone()),
        Value::String(s) => Err(err(path, format!("{} characters is too long", s.len()))),
        _ => Err(err(path, "expected a string")),
    }
}

fn integer(path: &str, v: &Value) -> Result<i64, ConfigError> {
    v.as_i64()
        .ok_or_else(|| err(path, format!("expected an integer, got {v}")))
}

fn boolean(path: &str, v: &Value) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| err(path, format!("expected true or false, got {v}")))
}

fn object<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object()
        .ok_or_else(|| err(path, "expected a JSON object"))
}

fn read_deployment(v: &Value, input: &mut ServiceInput) -> Result<(), ConfigError> {
    const P: &str = "deploymentConfiguration";
    for (key, value) in object(P, v)? {
        if value.is_null() {
            continue;
        }
        let path = format!("{P}.{key}");
        if let Some((_, why)) = DEPLOYMENT_NEEDS_AWS.iter().find(|(k, _)| k == key) {
            if is_empty_value(value) {
                continue;
            }
            return Err(err(path, format!("not supported: {why}")));
        }
        match key.as_str() {
            "minimumHealthyPercent" => input.min_healthy_percent = Some(integer(&path, value)?),
            "maximumPercent" => input.max_percent = Some(integer(&path, value)?),
            "strategy" => {
                let s = string(&path, value)?;
                if s != "ROLLING" {
                    return Err(err(path, format!("{s:?}: berth deploys ROLLING only")));
                }
            }
            "deploymentCircuitBreaker" => {
                let mut enable = false;
                let mut rollback = false;
                for (k, b) in object(&path, value)? {
                    if b.is_null() {
                        continue;
                    }
                    let p = format!("{path}.{k}");
                    match k.as_str() {
                        "enable" => enable = boolean(&p, b)?,
                        "rollback" => rollback = boolean(&p, b)?,
                        _ => {
                            let shown: String = k.chars().take(64).collect();
                            return Err(err(format!("{path}.{shown}"), "unknown member"));
                        }
                    }
                }
                input.circuit_breaker = Some(match (enable, rollback) {
                    (false, _) => CircuitBreaker::Off,
                    (true, false) => CircuitBreaker::Enable,
                    (true, true) => CircuitBreaker::Rollback,
                });
            }
            _ => {
                let shown: String = key.chars().take(64).collect();
                return Err(err(format!("{P}.{shown}"), "unknown member"));
            }
        }
    }
    Ok(())
}

fn list<'a>(path: &str, v: &'a Value, max: usize) -> Result<&'a Vec<Value>, ConfigError> {
    let a = v.as_array().ok_or_else(|| err(path, "expected a list"))?;
    if a.len() > max {
        return Err(err(
            path,
            format!("{} entries, at most {max} are allowed", a.len()),
        ));
    }
    Ok(a)
}

/// `[{type, field}]`.
fn strategies(v: &Value) -> Result<Vec<Strategy>, ConfigError> {
    const P: &str = "placementStrategy";
    let mut out = Vec::new();
    for (i, s) in list(P, v, MAX_STRATEGIES)?.iter().enumerate() {
        let path = format!("{P}[{i}]");
        let (kind, field) = pair(&path, s, "field")?;
        out.push(Strategy::from_ecs(&kind, field.as_deref()).map_err(|e| err(&path, e.0))?);
    }
    Ok(out)
}

/// `[{type, expression}]`.
fn constraints(v: &Value) -> Result<Vec<Constraint>, ConfigError> {
    const P: &str = "placementConstraints";
    let mut out = Vec::new();
    for (i, s) in list(P, v, MAX_CONSTRAINTS)?.iter().enumerate() {
        let path = format!("{P}[{i}]");
        let (kind, expression) = pair(&path, s, "expression")?;
        out.push(Constraint::from_ecs(&kind, expression.as_deref()).map_err(|e| err(&path, e.0))?);
    }
    Ok(out)
}

fn pair(path: &str, v: &Value, second: &str) -> Result<(String, Option<String>), ConfigError> {
    let mut kind = None;
    let mut other = None;
    for (k, x) in object(path, v)? {
        if x.is_null() {
            continue;
        }
        let p = format!("{path}.{k}");
        if k == "type" {
            kind = Some(string(&p, x)?);
        } else if k == second {
            other = Some(string(&p, x)?);
        } else {
            let shown: String = k.chars().take(64).collect();
            return Err(err(format!("{path}.{shown}"), "unknown member"));
        }
    }
    let kind = kind.ok_or_else(|| err(format!("{path}.type"), "missing"))?;
    Ok((kind, other))
}

/// A service's configuration as stored (`services.config_json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredConfig {
    pub scheduling_strategy: String,
    pub minimum_healthy_percent: Option<i64>,
    pub maximum_percent: Option<i64>,
    /// `off`, `enable` or `rollback`.
    pub circuit_breaker: String,
    /// CLI forms (`spread:instanceId`, `memberOf:EXPR`), in order.
    pub placement_strategy: Vec<String>,
    pub placement_constraints: Vec<String>,
    pub health_check_grace_period_seconds: i64,
    pub min_healthy_time_ms: i64,
    pub lost_after_ms: i64,
}

/// A service's configuration, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub spec: ServiceSpec,
    pub strategies: Vec<Strategy>,
    pub constraints: Vec<Constraint>,
}

fn breaker_str(c: CircuitBreaker) -> &'static str {
    match c {
        CircuitBreaker::Off => "off",
        CircuitBreaker::Enable => "enable",
        CircuitBreaker::Rollback => "rollback",
    }
}

/// A stored `schedulingStrategy`.
fn strategy_of(s: &str) -> SchedulingStrategy {
    match s {
        "DAEMON" => SchedulingStrategy::Daemon,
        _ => SchedulingStrategy::Replica,
    }
}

/// Parses `--circuit-breaker off|enable|rollback`.
pub fn parse_breaker(s: &str) -> Result<CircuitBreaker, String> {
    match s {
        "off" => Ok(CircuitBreaker::Off),
        "enable" => Ok(CircuitBreaker::Enable),
        "rollback" => Ok(CircuitBreaker::Rollback),
        other => Err(format!("{other:?}: expected off, enable or rollback")),
    }
}

impl ServiceConfig {
    /// A new service's configuration from a create body (the name and
    /// cluster given, the berth-only durations from their flags).
    pub fn create(
        cluster: &str,
        name: &str,
        input: &ServiceInput,
        min_healthy_time_ms: Option<i64>,
        lost_after_ms: Option<i64>,
    ) -> Result<ServiceConfig, ConfigError> {
        let strategy = input.strategy.unwrap_or(SchedulingStrategy::Replica);
        let strategies = input.placement_strategies.clone().unwrap_or_default();
        let spec = ServiceSpec {
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            strategy,
            desired_count: input.desired_count,
            min_healthy_percent: input.min_healthy_percent,
            max_percent: input.max_percent,
            circuit_breaker: input.circuit_breaker.unwrap_or(CircuitBreaker::Off),
            placement_strategies: strategies.len(),
            health_check_grace_period_s: input.health_check_grace_period_s.unwrap_or(0),
            min_healthy_time_ms: min_healthy_time_ms.unwrap_or(DEFAULT_MIN_HEALTHY_TIME_MS),
            lost_after_ms: lost_after_ms.unwrap_or(DEFAULT_LOST_AFTER_MS),
        };
        let c = ServiceConfig {
            spec,
            strategies,
            constraints: input.placement_constraints.clone().unwrap_or_default(),
        };
        c.check()?;
        Ok(c)
    }

    /// This configuration with an update's changes.
    pub fn updated(
        &self,
        input: &ServiceInput,
        min_healthy_time_ms: Option<i64>,
        lost_after_ms: Option<i64>,
    ) -> Result<ServiceConfig, ConfigError> {
        let mut c = self.clone();
        if input.desired_count.is_some() {
            c.spec.desired_count = input.desired_count;
        }
        if input.min_healthy_percent.is_some() {
            c.spec.min_healthy_percent = input.min_healthy_percent;
        }
        if input.max_percent.is_some() {
            c.spec.max_percent = input.max_percent;
        }
        if let Some(b) = input.circuit_breaker {
            c.spec.circuit_breaker = b;
        }
        if let Some(s) = &input.placement_strategies {
            c.strategies = s.clone();
            c.spec.placement_strategies = s.len();
        }
        if let Some(k) = &input.placement_constraints {
            c.constraints = k.clone();
        }
        if let Some(g) = input.health_check_grace_period_s {
            c.spec.health_check_grace_period_s = g;
        }
        if let Some(t) = min_healthy_time_ms {
            c.spec.min_healthy_time_ms = t;
        }
        if let Some(t) = lost_after_ms {
            c.spec.lost_after_ms = t;
        }
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.spec.validate().map_err(|e| err(e.field, e.reason))
    }

    /// The stored form.
    pub fn to_stored(&self) -> StoredConfig {
        StoredConfig {
            scheduling_strategy: self.spec.strategy.as_str().to_owned(),
            minimum_healthy_percent: self.spec.min_healthy_percent,
            maximum_percent: self.spec.max_percent,
            circuit_breaker: breaker_str(self.spec.circuit_breaker).to_owned(),
            placement_strategy: self.strategies.iter().map(Strategy::to_string).collect(),
            placement_constraints: self.constraints.iter().map(Constraint::cli).collect(),
            health_check_grace_period_seconds: self.spec.health_check_grace_period_s,
            min_healthy_time_ms: self.spec.min_healthy_time_ms,
            lost_after_ms: self.spec.lost_after_ms,
        }
    }

    /// The stored JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_stored()).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The scheduling strategy of a stored configuration alone; `None`
    /// when it cannot be read.
    pub fn stored_strategy(json: &str) -> Option<SchedulingStrategy> {
        let s: StoredConfig = serde_json::from_str(json).ok()?;
        Some(strategy_of(&s.scheduling_strategy))
    }

    /// Reads a stored configuration back (with the record's name, cluster
    /// and desired count).
    pub fn from_stored(
        cluster: &str,
        name: &str,
        desired_count: i64,
        json: &str,
    ) -> Result<ServiceConfig, String> {
        let s: StoredConfig = serde_json::from_str(json)
            .map_err(|e| format!("stored configuration of service {name}: {e}"))?;
        let strategy = strategy_of(&s.scheduling_strategy);
        let strategies = s
            .placement_strategy
            .iter()
            .map(|x| x.parse::<Strategy>().map_err(|e| e.0))
            .collect::<Result<Vec<_>, _>>()?;
        let constraints = s
            .placement_constraints
            .iter()
            .map(|x| x.parse::<Constraint>().map_err(|e| e.0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceConfig {
            spec: ServiceSpec {
                name: name.to_owned(),
                cluster: cluster.to_owned(),
                strategy,
                desired_count: match strategy {
                    SchedulingStrategy::Replica => Some(desired_count),
                    SchedulingStrategy::Daemon => None,
                },
                min_healthy_percent: s.minimum_healthy_percent,
                max_percent: s.maximum_percent,
                circuit_breaker: parse_breaker(&s.circuit_breaker).unwrap_or(CircuitBreaker::Off),
                placement_strategies: strategies.len(),
                health_check_grace_period_s: s.health_check_grace_period_seconds,
                min_healthy_time_ms: s.min_healthy_time_ms,
                lost_after_ms: s.lost_after_ms,
            },
            strategies,
            constraints,
        })
    }

    /// `deploymentConfiguration` as ECS shows it.
    pub fn deployment_configuration_json(&self) -> Value {
        json!({
            "deploymentCircuitBreaker": {
                "enable": self.spec.circuit_breaker != CircuitBreaker::Off,
                "rollback": self.spec.circuit_breaker == CircuitBreaker::Rollback,
            },
            "maximumPercent": self.spec.max_percent(),
            "minimumHealthyPercent": self.spec.min_percent(),
        })
    }

    /// `placementStrategy` as ECS shows it (a REPLICA service without one
    /// spreads on instanceId, which is shown).
    pub fn placement_strategy_json(&self) -> Value {
        strategies_json(&self.placement_strategies())
    }

    /// The strategies placement uses: the configured ones, or for a
    /// REPLICA service without any `spread:instanceId` (SPEC §6).
    pub fn placement_strategies(&self) -> Vec<Strategy> {
        if self.strategies.is_empty() && self.spec.strategy == SchedulingStrategy::Replica {
            vec![Strategy::Spread(SpreadOn::InstanceId)]
        } else {
            self.strategies.clone()
        }
    }

    /// `placementConstraints` as ECS shows it.
    pub fn placement_constraints_json(&self) -> Value {
        constraints_json(&self.constraints)
    }
}

/// Strategies as ECS writes them: `[{type, field}]`.
pub fn strategies_json(strategies: &[Strategy]) -> Value {
    Value::Array(
        strategies
            .iter()
            .map(|s| match s.to_ecs() {
                (kind, Some(f)) => json!({"type": kind, "field": f}),
                (kind, None) => json!({"type": kind}),
            })
            .collect(),
    )
}

/// Constraints as ECS writes them: `[{type, expression}]`.
pub fn constraints_json(constraints: &[Constraint]) -> Value {
    Value::Array(
        constraints
            .iter()
            .map(|c| match c.to_ecs() {
                (kind, Some(e)) => json!({"type": kind, "expression": e}),
                (kind, None) => json!({"type": kind}),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(s: &str) -> Result<ServiceInput, ConfigError> {
        read_input(s, Body::Create)
    }

    #[test]
    fn a_create_body_reads_every_member_berth_takes() {
        let i = create(
            r#"{"serviceName":"web","cluster":"prod","taskDefinition":"web:3","desiredCount":4,
                "launchType":"EXTERNAL","schedulingStrategy":"REPLICA",
                "deploymentConfiguration":{"minimumHealthyPercent":50,"maximumPercent":150,
                  "deploymentCircuitBreaker":{"enable":true,"rollback":true}},
                "placementStrategy":[{"type":"spread","field":"attribute:zone"},{"type":"binpack","field":"memory"}],
                "placementConstraints":[{"type":"memberOf","expression":"attribute:zone == rack-3"},{"type":"distinctInstance"}],
                "healthCheckGracePeriodSeconds":30,"loadBalancers":[],"tags":null,"clientToken":"x"}"#,
        )
        .expect("accepted");
        assert_eq!(i.name.as_deref(), Some("web"));
        assert_eq!(i.cluster.as_deref(), Some("prod"));
        assert_eq!(i.desired_count, Some(4));
        assert_eq!(i.circuit_breaker, Some(CircuitBreaker::Rollback));
        assert_eq!(i.placement_strategies.as_ref().map(Vec::len), Some(2));
        assert_eq!(i.placement_constraints.as_ref().map(Vec::len), Some(2));
        let c = ServiceConfig::create("prod", "web", &i, None, None).expect("accepted");
        assert_eq!(c.spec.min_percent(), 50);
        let back = ServiceConfig::from_stored("prod", "web", 4, &c.to_json()).expect("accepted");
        assert_eq!(back, c);
        assert_eq!(
            c.placement_constraints_json()[0]["expression"],
            "attribute:zone == rack-3"
        );
    }

    #[test]
    fn members_that_need_aws_are_refused_naming_the_path() {
        let e = create(r#"{"serviceName":"w","loadBalancers":[{"targetGroupArn":"x"}]}"#)
            .expect_err("refused");
        assert_eq!(e.path, "loadBalancers");
        assert!(e.reason.contains("Elastic Load Balancing"), "{e}");
        let e = create(r#"{"serviceName":"w","networkConfiguration":{"awsvpcConfiguration":{}}}"#)
            .expect_err("refused");
        assert_eq!(e.path, "networkConfiguration");
        let e = create(r#"{"deploymentConfiguration":{"alarms":{"enable":true}}}"#)
            .expect_err("refused");
        assert_eq!(e.path, "deploymentConfiguration.alarms");
        let e = create(r#"{"launchType":"FARGATE"}"#).expect_err("refused");
        assert_eq!(e.path, "launchType");
    }

    #[test]
    fn unknown_members_and_wrong_types_are_refused() {
        assert_eq!(
            create(r#"{"serviceNmae":"w"}"#).expect_err("refused").path,
            "serviceNmae"
        );
        assert_eq!(
            create(r#"{"desiredCount":"3"}"#).expect_err("refused").path,
            "desiredCount"
        );
        assert_eq!(
            create(r#"{"placementStrategy":[{"type":"spread"}]}"#)
                .expect_err("refused")
                .path,
            "placementStrategy[0]"
        );
        assert_eq!(
            create(r#"{"deploymentConfiguration":{"deploymentCircuitBreaker":{"enabled":true}}}"#)
                .expect_err("refused")
                .path,
            "deploymentConfiguration.deploymentCircuitBreaker.enabled"
        );
        assert_eq!(create("[1]").expect_err("refused").path, "$");
        assert_eq!(create("{").expect_err("refused").path, "$");
        let big = format!(r#"{{"serviceName":"{}"}}"#, "a".repeat(MAX_INPUT_BYTES));
        assert!(
            create(&big)
                .expect_err("refused")
                .reason
                .contains("at most")
        );
        // The update body names the service `service`.
        assert_eq!(
            read_input(r#"{"serviceName":"w"}"#, Body::Update)
                .expect_err("refused")
                .path,
            "serviceName"
        );
    }

    #[test]
    fn ranges_are_checked_with_the_member_named() {
        let i = create(r#"{"desiredCount":-1}"#).expect("accepted");
        let e = ServiceConfig::create("default", "w", &i, None, None).expect_err("refused");
        assert_eq!(e.path, "desiredCount");
        let i = create(r#"{"schedulingStrategy":"DAEMON","desiredCount":2}"#).expect("accepted");
        assert_eq!(
            ServiceConfig::create("default", "w", &i, None, None)
                .expect_err("refused")
                .path,
            "desiredCount"
        );
        let i = create(r#"{"desiredCount":1}"#).expect("accepted");
        let c = ServiceConfig::create("default", "w", &i, None, None).expect("accepted");
        let u = read_input(
            r#"{"deploymentConfiguration":{"maximumPercent":50}}"#,
            Body::Update,
        )
        .expect("accepted");
        assert_eq!(
            c.updated(&u, None, None).expect_err("refused").path,
            "deploymentConfiguration.maximumPercent"
        );
    }
}
