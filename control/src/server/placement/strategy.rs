//! Placement strategies and constraints: their command-line and ECS JSON
//! forms.
//!
//! On the command line a strategy is `spread:instanceId`,
//! `spread:attribute:NAME`, `binpack:cpu`, `binpack:memory` or `random`; a
//! constraint is `distinctInstance` or `memberOf:EXPRESSION`. In ECS JSON
//! they are `{type, field}` and `{type, expression}` (`spread` on `host` is
//! ECS' synonym of `instanceId`). What the strategies and constraints do is
//! in [`super::pipeline`].

use std::fmt;
use std::str::FromStr;

use super::query::Query;

/// What `spread` balances over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpreadOn {
    InstanceId,
    /// The values of an attribute; instances without it are one bucket.
    Attribute(String),
}

/// What `binpack` packs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinpackOn {
    Cpu,
    Memory,
}

/// A placement strategy; a request's strategies apply in order, each later
/// one breaking the ties of those before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Spread(SpreadOn),
    Binpack(BinpackOn),
    Random,
}

/// A strategy or constraint that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

const STRATEGY_FORMS: &str =
    "spread:instanceId, spread:attribute:NAME, binpack:cpu, binpack:memory or random";
const CONSTRAINT_FORMS: &str = "distinctInstance or memberOf:EXPRESSION";

/// An attribute name: 1–128 characters of `[A-Za-z0-9_.\-/:]` (SPEC §6).
pub use berth_proto::attributes::valid_text as valid_attribute_name;

fn spread_field(field: &str, shown: &str) -> Result<SpreadOn, SpecError> {
    if field.eq_ignore_ascii_case("instanceId") || field.eq_ignore_ascii_case("host") {
        return Ok(SpreadOn::InstanceId);
    }
    if let Some(name) = field.strip_prefix("attribute:") {
        if valid_attribute_name(name) {
            return Ok(SpreadOn::Attribute(name.to_owned()));
        }
        return Err(SpecError(format!(
            "placement strategy {shown:?}: the attribute name must be 1-128 characters of A-Z a-z 0-9 _ . - / :"
        )));
    }
    Err(SpecError(format!(
        "placement strategy {shown:?}: spread takes instanceId or attribute:NAME, not {field:?}"
    )))
}

fn binpack_field(field: &str, shown: &str) -> Result<BinpackOn, SpecError> {
    if field.eq_ignore_ascii_case("cpu") {
        Ok(BinpackOn::Cpu)
    } else if field.eq_ignore_ascii_case("memory") {
        Ok(BinpackOn::Memory)
    } else {
        Err(SpecError(format!(
            "placement strategy {shown:?}: binpack takes cpu or memory, not {field:?}"
        )))
    }
}

impl FromStr for Strategy {
    type Err = SpecError;

    /// The command-line form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() > 200 {
            return Err(SpecError(format!(
                "placement strategy of {} characters: expected {STRATEGY_FORMS}",
                s.len()
            )));
        }
        let (kind, field) = match s.split_once(':') {
            Some((k, f)) => (k, Some(f)),
            None => (s, None),
        };
        match (kind, field) {
            ("spread", Some(f)) => Ok(Strategy::Spread(spread_field(f, s)?)),
            ("binpack", Some(f)) => Ok(Strategy::Binpack(binpack_field(f, s)?)),
            ("random", None) => Ok(Strategy::Random),
            ("random", Some(_)) => Err(SpecError(format!(
                "placement strategy {s:?}: random takes no field"
            ))),
            ("spread" | "binpack", None) => Err(SpecError(format!(
                "placement strategy {s:?}: {kind} needs a field; expected {STRATEGY_FORMS}"
            ))),
            _ => Err(SpecError(format!(
                "placement strategy {s:?}: unknown type {kind:?}; expected {STRATEGY_FORMS}"
            ))),
        }
    }
}

impl Strategy {
    /// From ECS' `{type, field}`.
    pub fn from_ecs(kind: &str, field: Option<&str>) -> Result<Self, SpecError> {
        let shown = match field {
            Some(f) => format!("{kind}:{f}"),
            None => kind.to_owned(),
        };
        if shown.len() > 200 {
            return Err(SpecError(format!(
                "placement strategy of {} characters: expected type spread (field instanceId, host or attribute:NAME), binpack (field cpu or memory) or random",
                shown.len()
            )));
        }
        let field = field.filter(|f| !f.is_empty());
        match (kind, field) {
            ("spread", Some(f)) => Ok(Strategy::Spread(spread_field(f, &shown)?)),
            ("binpack", Some(f)) => Ok(Strategy::Binpack(binpack_field(f, &shown)?)),
            ("random", None) => Ok(Strategy::Random),
            ("random", Some(_)) => Err(SpecError(format!(
                "placement strategy {shown:?}: random takes no field"
            ))),
            ("spread" | "binpack", None) => Err(SpecError(format!(
                "placement strategy {kind:?} needs a field: spread takes instanceId, host or attribute:NAME, binpack cpu or memory"
            ))),
            _ => Err(SpecError(format!(
                "placement strategy type {kind:?}: expected spread, binpack or random"
            ))),
        }
    }

    /// ECS' `(type, field)`.
    pub fn to_ecs(&self) -> (&'static str, Option<String>) {
        match self {
            Strategy::Spread(SpreadOn::InstanceId) => ("spread", Some("instanceId".to_owned())),
            Strategy::Spread(SpreadOn::Attribute(n)) => ("spread", Some(format!("attribute:{n}"))),
            Strategy::Binpack(BinpackOn::Cpu) => ("binpack", Some("cpu".to_owned())),
            Strategy::Binpack(BinpackOn::Memory) => ("binpack", Some("memory".to_owned())),
            Strategy::Random => ("random", None),
        }
    }
}

/// The command-line form.
impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_ecs() {
            (kind, Some(field)) => write!(f, "{kind}:{field}"),
            (kind, None) => f.write_str(kind),
        }
    }
}

/// A placement constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// No two tasks of the group on one instance.
    DistinctInstance,
    /// Only instances the expression matches.
    MemberOf(Query),
}

fn member_of(expression: &str) -> Result<Constraint, SpecError> {
    Query::parse(expression)
        .map(Constraint::MemberOf)
        .map_err(|e| SpecError(format!("memberOf expression: {e}")))
}

impl FromStr for Constraint {
    type Err = SpecError;

    /// The command-line form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t == "distinctInstance" {
            return Ok(Constraint::DistinctInstance);
        }
        if let Some(expr) = t.strip_prefix("memberOf:") {
            return member_of(expr);
        }
        let shown: String = t.chars().take(40).collect();
        Err(SpecError(format!(
            "placement constraint {shown:?}: expected {CONSTRAINT_FORMS}"
        )))
    }
}

impl Constraint {
    /// From ECS' `{type, expression}`.
    pub fn from_ecs(kind: &str, expression: Option<&str>) -> Result<Self, SpecError> {
        let expression = expression.filter(|e| !e.trim().is_empty());
        match (kind, expression) {
            ("distinctInstance", None) => Ok(Constraint::DistinctInstance),
            ("distinctInstance", Some(_)) => Err(SpecError(
                "placement constraint distinctInstance takes no expression".to_owned(),
            )),
            ("memberOf", Some(e)) => member_of(e),
            ("memberOf", None) => Err(SpecError(
                "placement constraint memberOf needs an expression".to_owned(),
            )),
            _ => {
                let shown: String = kind.chars().take(40).collect();
                Err(SpecError(format!(
                    "placement constraint type {shown:?}: expected distinctInstance or memberOf"
                )))
            }
        }
    }

    /// ECS' `(type, expression)`.
    pub fn to_ecs(&self) -> (&'static str, Option<String>) {
        match self {
            Constraint::DistinctInstance => ("distinctInstance", None),
            Constraint::MemberOf(q) => ("memberOf", Some(q.to_string())),
        }
    }

    /// The command-line form (`memberOf:EXPR`).
    pub fn cli(&self) -> String {
        match self {
            Constraint::DistinctInstance => "distinctInstance".to_owned(),
            Constraint::MemberOf(q) => format!("memberOf:{q}"),
        }
    }
}

/// As messages name it: `distinctInstance`, `memberOf(EXPR)`.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::DistinctInstance => f.write_str("distinctInstance"),
            Constraint::MemberOf(q) => write!(f, "memberOf({q})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert_eq, proptest};

    proptest! {
        #[test]
        fn parsing_never_panics_and_round_trips(s in "\\PC{0,60}") {
            if let Ok(st) = s.parse::<Strategy>() {
                prop_assert_eq!(st.to_string().parse::<Strategy>(), Ok(st.clone()));
                let (kind, field) = st.to_ecs();
                prop_assert_eq!(Strategy::from_ecs(kind, field.as_deref()), Ok(st));
            }
            if let Ok(c) = s.parse::<Constraint>() {
                prop_assert_eq!(c.cli().parse::<Constraint>(), Ok(c.clone()));
                let (kind, expr) = c.to_ecs();
                prop_assert_eq!(Constraint::from_ecs(kind, expr.as_deref()), Ok(c));
            }
            let _ = Strategy::from_ecs("spread", Some(&s));
            let _ = Constraint::from_ecs("memberOf", Some(&s));
        }
    }

    #[test]
    fn strategies_parse_in_both_forms_and_round_trip() {
        for (cli, want) in [
            ("spread:instanceId", Strategy::Spread(SpreadOn::InstanceId)),
            (
                "spread:attribute:zone",
                Strategy::Spread(SpreadOn::Attribute("zone".into())),
            ),
            ("binpack:memory", Strategy::Binpack(BinpackOn::Memory)),
            ("binpack:cpu", Strategy::Binpack(BinpackOn::Cpu)),
            ("random", Strategy::Random),
        ] {
            let s: Strategy = cli.parse().expect(cli);
            assert_eq!(s, want);
            assert_eq!(s.to_string(), cli);
            let (kind, field) = s.to_ecs();
            assert_eq!(Strategy::from_ecs(kind, field.as_deref()), Ok(want));
        }
        assert_eq!(
            Strategy::from_ecs("spread", Some("host")),
            Ok(Strategy::Spread(SpreadOn::InstanceId))
        );
        assert_eq!(
            Strategy::from_ecs("binpack", Some("MEMORY")),
            Ok(Strategy::Binpack(BinpackOn::Memory))
        );
    }

    #[test]
    fn bad_strategies_name_the_value_and_the_forms() {
        let e = |s: &str| s.parse::<Strategy>().expect_err(s).to_string();
        assert_eq!(
            e("spreed:instanceId"),
            "placement strategy \"spreed:instanceId\": unknown type \"spreed\"; expected spread:instanceId, spread:attribute:NAME, binpack:cpu, binpack:memory or random"
        );
        assert_eq!(
            e("binpack:disk"),
            "placement strategy \"binpack:disk\": binpack takes cpu or memory, not \"disk\""
        );
        assert!(e("spread").contains("spread needs a field"));
        assert!(e("random:x").contains("random takes no field"));
        assert!(e("spread:attribute:").contains("attribute name"));
        assert!(e("spread:attribute:a b").contains("attribute name"));
        assert!(e(&"x".repeat(500)).starts_with("placement strategy of 500 characters"));
        assert!(
            Strategy::from_ecs("spread", None)
                .expect_err("no field")
                .to_string()
                .contains("needs a field")
        );
        assert!(
            Strategy::from_ecs("pack", Some("cpu"))
                .expect_err("bad type")
                .to_string()
                .contains("expected spread, binpack or random")
        );
    }

    #[test]
    fn constraints_parse_in_both_forms() {
        assert_eq!(
            "distinctInstance".parse::<Constraint>(),
            Ok(Constraint::DistinctInstance)
        );
        let c: Constraint = "memberOf:attribute:zone == rack-3".parse().expect("parses");
        assert_eq!(c.to_string(), "memberOf(attribute:zone == rack-3)");
        assert_eq!(c.cli(), "memberOf:attribute:zone == rack-3");
        let (kind, expr) = c.to_ecs();
        assert_eq!(kind, "memberOf");
        assert_eq!(Constraint::from_ecs(kind, expr.as_deref()), Ok(c));
        assert_eq!(
            Constraint::from_ecs("distinctInstance", None),
            Ok(Constraint::DistinctInstance)
        );
        assert!(Constraint::from_ecs("distinctInstance", Some("x")).is_err());
        assert!(Constraint::from_ecs("memberOf", None).is_err());
        assert_eq!(
            "memberOf:attribute:zone ==".parse::<Constraint>(),
            Err(SpecError(
                "memberOf expression: column 18: expected a value after \"==\"".into()
            ))
        );
        assert_eq!(
            "sameZone".parse::<Constraint>(),
            Err(SpecError(
                "placement constraint \"sameZone\": expected distinctInstance or memberOf:EXPRESSION"
                    .into()
            ))
        );
    }
}
