//! From JSON text to a validated [`TaskDefinition`].
//!
//! The steps, each of which can refuse the document with problems at JSON
//! paths:
//!
//! 1. size (at most [`MAX_DEFINITION_BYTES`]) and JSON syntax, at `$`;
//! 2. duplicate object keys anywhere (`serde_json` would silently keep the
//!    last one, and a typo must not pass silently);
//! 3. the shape: a task definition object, or the output of
//!    `aws ecs describe-task-definition` (`{"taskDefinition": {...}, "tags": [...]}`);
//! 4. typed deserialization with `serde_path_to_error`, done per container
//!    and per volume so that type errors in several of them are all reported;
//! 5. [`crate::validate`]'s rules.
//!
//! For the describe shape every path is prefixed with `taskDefinition.`, so
//! that it names the place in the document the user wrote.

use crate::error::{Problem, TaskDefError};
use crate::path::{self, ROOT};
use crate::types::{ContainerDefinition, TaskDefinition, Volume};
use crate::validate;
use crate::{MAX_DEFINITION_BYTES, Parsed};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

/// The key of the task definition in `describe-task-definition` output.
const DESCRIBE_KEY: &str = "taskDefinition";

/// Parses and validates a task definition (see the crate docs for the
/// accepted shapes and how paths are written).
pub fn parse(json: &str) -> Result<Parsed, TaskDefError> {
    if json.len() > MAX_DEFINITION_BYTES {
        return Err(TaskDefError::one(
            ROOT,
            format!(
                "the document has {} bytes; a task definition may have at most {} bytes (the limit of ECS)",
                json.len(),
                MAX_DEFINITION_BYTES
            ),
        ));
    }
    let root: Value = serde_json::from_str(json)
        .map_err(|e| TaskDefError::one(ROOT, format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = root else {
        return Err(TaskDefError::one(
            ROOT,
            format!(
                "expected a JSON object (a task definition), got {}",
                kind(&root)
            ),
        ));
    };
    if let Some(dup) = duplicate_key(json) {
        return Err(TaskDefError::one(
            dup,
            "duplicate key: the object names this field more than once",
        ));
    }

    let (prefix, def_obj) = if obj.contains_key(DESCRIBE_KEY) {
        let mut problems = Vec::new();
        for k in obj.keys() {
            if k != DESCRIBE_KEY && k != "tags" {
                problems.push(Problem::new(
                    path::key(ROOT, k),
                    "unknown field (beside `taskDefinition`, describe-task-definition output has only `tags`)",
                ));
            }
        }
        let inner = obj.remove(DESCRIBE_KEY).unwrap_or(Value::Null);
        match inner {
            Value::Object(m) if problems.is_empty() => (DESCRIBE_KEY, m),
            Value::Object(_) => return Err(TaskDefError { problems }),
            other => {
                problems.insert(
                    0,
                    Problem::new(
                        DESCRIBE_KEY,
                        format!(
                            "expected an object (the task definition), got {}",
                            kind(&other)
                        ),
                    ),
                );
                return Err(TaskDefError { problems });
            }
        }
    } else {
        ("", obj)
    };

    let relocate = |p: Problem| Problem::new(path::under(prefix, &p.path), p.message);
    let definition = deserialize_parts(def_obj).map_err(|problems| TaskDefError {
        problems: problems.into_iter().map(relocate).collect(),
    })?;
    let report = validate::check(&definition);
    if !report.errors.is_empty() {
        return Err(TaskDefError {
            problems: report.errors.into_iter().map(relocate).collect(),
        });
    }
    Ok(Parsed {
        definition,
        warnings: report
            .warnings
            .into_iter()
            .map(|w| relocate(w).to_string())
            .collect(),
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserializes the task definition object. Containers and volumes are
/// deserialized one by one, so that one bad container does not hide the
/// problems of the next.
fn deserialize_parts(mut obj: Map<String, Value>) -> Result<TaskDefinition, Vec<Problem>> {
    let mut take_array = |key: &str| -> Option<Vec<Value>> {
        if matches!(obj.get(key), Some(Value::Array(_))) {
            match obj.remove(key) {
                Some(Value::Array(items)) => Some(items),
                _ => None,
            }
        } else {
            None
        }
    };
    let containers = take_array("containerDefinitions");
    let volumes = take_array("volumes");

    let mut problems = Vec::new();
    let top = match typed::<TaskDefinition>(Value::Object(obj)) {
        Ok(def) => Some(def),
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let containers =
        parts::<ContainerDefinition>(containers, "containerDefinitions", &mut problems);
    let volumes = parts::<Volume>(volumes, "volumes", &mut problems);
    match top {
        Some(mut def) if problems.is_empty() => {
            def.container_definitions = containers;
            def.volumes = volumes;
            Ok(def)
        }
        _ => Err(problems),
    }
}

fn parts<T: de::DeserializeOwned>(
    items: Option<Vec<Value>>,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
        match typed::<T>(item) {
            Ok(t) => out.push(t),
            Err(p) => {
                let base = path::index(key, i);
                problems.push(Problem::new(path::under(&base, &p.path), p.message));
            }
        }
    }
    out
}

/// Deserializes `v`, turning the first error into a problem at its path.
fn typed<T: de::DeserializeOwned>(v: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let at = path::from_serde(e.path());
        explain(&at, &e.inner().to_string())
    })
}

/// Rewrites a serde error message into a berth problem.
fn explain(at: &str, msg: &str) -> Problem {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        // The key itself may contain backticks: split at serde's own text.
        let (field, expected) = if let Some((f, list)) = rest.rsplit_once("`, expected ") {
            (f, backticked(list))
        } else if let Some((f, _)) = rest.rsplit_once("`, there are no fields") {
            (f, Vec::new())
        } else {
            (rest.strip_suffix('`').unwrap_or(rest), Vec::new())
        };
        // serde_path_to_error records the unknown key as the last segment;
        // add it if a future version does not.
        let seg = path::key("", field);
        let named = at == seg
            || at.ends_with(&format!(".{seg}"))
            || (seg.starts_with('[') && at.ends_with(&seg));
        let at = if named {
            at.to_owned()
        } else {
            path::key(at, field)
        };
        return Problem::new(at, unknown_field_message(field, &expected));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return Problem::new(path::key(at, field), "required field is missing");
    }
    if let Some(rest) = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
        && let Some((got, expected)) = rest.rsplit_once(", expected ")
    {
        return Problem::new(
            at,
            format!(
                "expected {}, got {}",
                expectation(expected),
                unexpected(got)
            ),
        );
    }
    Problem::new(at, msg)
}

fn expectation(e: &str) -> String {
    match e {
        "u16" => "an integer from 0 to 65535".into(),
        "u64" => "a non-negative integer".into(),
        "i64" => "an integer".into(),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        "a boolean" | "a string" => e.into(),
        "any valid JSON value" => "a JSON value".into(),
        _ if e.starts_with("struct ") => "an object".into(),
        _ => e.into(),
    }
}

fn unexpected(u: &str) -> String {
    match u {
        "map" => "an object".into(),
        "sequence" => "an array".into(),
        _ => crate::validate::shorten(&u.replace("floating point", "a number"), 120),
    }
}

/// The names between backticks in serde's "expected one of `a`, `b`".
fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

fn unknown_field_message(field: &str, expected: &[&str]) -> String {
    let close = suggestions(field, expected);
    if !close.is_empty() {
        let names: Vec<String> = close.iter().map(|n| format!("`{n}`")).collect();
        return format!(
            "unknown field (a typo? did you mean {}?)",
            names.join(" or ")
        );
    }
    if expected.is_empty() {
        return "unknown field (this object takes no fields)".into();
    }
    let names: Vec<String> = expected.iter().map(|n| format!("`{n}`")).collect();
    format!(
        "unknown field (a typo? the ECS fields here are {})",
        names.join(", ")
    )
}

/// The expected names close to `field`, closest first (at most three).
fn suggestions<'a>(field: &str, expected: &[&'a str]) -> Vec<&'a str> {
    let lower = field.to_ascii_lowercase();
    let chars = lower.chars().count();
    let mut scored: Vec<(usize, &str)> = expected
        .iter()
        .filter_map(|&cand| {
            let limit = match cand.len() {
                0..=4 => 1,
                5..=11 => 2,
                _ => 3,
            };
            // The distance is at least the difference in length: skip the
            // quadratic comparison for hopeless (and huge) keys.
            if chars.abs_diff(cand.len()) > limit {
                return None;
            }
            let d = levenshtein(&lower, &cand.to_ascii_lowercase());
            (d <= limit).then_some((d, cand))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The path of the first key that an object of `json` names twice.
/// `json` must already be known to be valid JSON.
fn duplicate_key(json: &str) -> Option<String> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(json);
    let seed = DupSeed {
        path: String::new(),
        found: &mut found,
    };
    // Syntax errors were reported before; nothing to add here.
    let _ = seed.deserialize(&mut de);
    found
}

struct DupSeed<'a> {
    path: String,
    found: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for DupSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DupSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let DupSeed { path: base, found } = self;
        let mut i = 0;
        while seq
            .next_element_seed(DupSeed {
                path: path::index(&base, i),
                found: &mut *found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let DupSeed { path: base, found } = self;
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            let at = path::key(&base, &k);
            if !seen.insert(k) && found.is_none() {
                *found = Some(at.clone());
            }
            map.next_value_seed(DupSeed {
                path: at,
                found: &mut *found,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_with_backticks_keep_their_path() {
        let p = explain(
            "containerDefinitions[0][\"a`b\"]",
            "unknown field `a`b`, expected `name` or `image`",
        );
        assert_eq!(p.path, "containerDefinitions[0][\"a`b\"]");
        let p = explain(
            "x.imagee",
            "unknown field `imagee`, expected one of `name`, `image`",
        );
        assert_eq!(p.path, "x.imagee");
        assert!(p.message.contains("`image`"));
        let p = explain("x", "unknown field `imagee`, there are no fields");
        assert_eq!(p.path, "x.imagee");
    }

    #[test]
    fn levenshtein_distances() {
        assert_eq!(levenshtein("imagee", "image"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("essentail", "essential"), 2);
    }

    #[test]
    fn finds_duplicate_keys_with_their_path() {
        assert_eq!(duplicate_key(r#"{"a": 1, "b": 2}"#), None);
        assert_eq!(
            duplicate_key(r#"{"a": [{"x": 1}, {"x": 1, "x": 2}]}"#).as_deref(),
            Some("a[1].x")
        );
        assert_eq!(
            duplicate_key(r#"{"l": {"com.x": "1", "com.x": "2"}}"#).as_deref(),
            Some("l[\"com.x\"]")
        );
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggestions("imagee", &["name", "image"]), vec!["image"]);
        assert_eq!(
            suggestions("ContainerDefinitions", &["containerDefinitions", "family"]),
            vec!["containerDefinitions"]
        );
        assert!(suggestions("zzzzzz", &["name", "image"]).is_empty());
    }
}
