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
//! 4. `null` members removed at every depth (ECS reads `null` as absent);
//! 5. typed deserialization with `serde_path_to_error`, per container and
//!    per volume, and again after each error with the wrong value removed
//!    or replaced by a placeholder, so that every type error and unknown
//!    field is reported, not only the first;
//! 6. [`crate::validate`]'s rules, whose problems are reported too except
//!    where a type error was (a consequence of the placeholder there).
//!
//! At most [`crate::MAX_PROBLEMS`] problems are listed; the error counts
//! the rest.
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
            Value::Object(_) => return Err(TaskDefError::capped(problems, false)),
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
                return Err(TaskDefError::capped(problems, false));
            }
        }
    } else {
        ("", obj)
    };

    let relocate = |p: Problem| Problem::new(path::under(prefix, &p.path), p.message);
    let mut def_value = Value::Object(def_obj);
    drop_nulls(&mut def_value);
    let Value::Object(def_obj) = def_value else {
        return Err(TaskDefError::one(
            prefix_or_root(prefix),
            "expected an object",
        ));
    };
    let (definition, found) = deserialize_parts(def_obj);
    let Some(definition) = definition else {
        // The top level itself could not be read: validating a stand-in
        // would only add noise.
        return Err(TaskDefError::capped(
            found.problems.into_iter().map(relocate).collect(),
            found.exhausted,
        ));
    };
    let report = validate::check(&definition);
    let mut problems = found.problems.clone();
    problems.extend(
        report
            .errors
            .into_iter()
            .filter(|p| !found.shadows(&p.path)),
    );
    if !problems.is_empty() {
        return Err(TaskDefError::capped(
            problems.into_iter().map(relocate).collect(),
            found.exhausted,
        ));
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

fn prefix_or_root(prefix: &str) -> &str {
    if prefix.is_empty() { ROOT } else { prefix }
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

/// How many attempts at deserializing, across the whole definition, the
/// collection of type errors may take: each attempt finds one error and
/// patches it away. Bounds the work on hostile input.
const DESERIALIZE_BUDGET: usize = 120;

/// Type errors found so far, and the paths whose later problems are
/// consequences of them (the value there was removed or replaced).
#[derive(Default)]
struct Found {
    problems: Vec<Problem>,
    /// Relative paths whose validation problems are not reported: a type
    /// error was reported there, or a placeholder stands there.
    shadowed: Vec<String>,
    attempts: usize,
    /// The budget ran out before every part deserialized.
    exhausted: bool,
}

impl Found {
    fn shadows(&self, path: &str) -> bool {
        self.shadowed.iter().any(|s| {
            path == s
                || path
                    .strip_prefix(s.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }
}

/// Removes every object member whose value is `null`, at every depth: ECS'
/// JSON reader treats `null` as absent, and exported definitions are full of
/// them (`"linuxParameters": null`, `"portMappings": null`).
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Deserializes the task definition object, collecting every type error
/// (and unknown field) rather than the first: each part (the top level,
/// each container, each volume) is deserialized, the value at the error is
/// removed or replaced by a placeholder, and the part is tried again.
///
/// Returns the definition (with placeholders where values were wrong) and
/// what was found; validation of that definition is reported only outside
/// the shadowed paths.
fn deserialize_parts(mut obj: Map<String, Value>) -> (Option<TaskDefinition>, Found) {
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

    let mut found = Found::default();
    let top = lenient::<TaskDefinition>(Value::Object(obj), "", "TaskDefinition", &mut found);
    let containers = parts::<ContainerDefinition>(
        containers,
        "containerDefinitions",
        "ContainerDefinition",
        &mut found,
    );
    let volumes = parts::<Volume>(volumes, "volumes", "Volume", &mut found);
    let def = top.map(|mut def| {
        def.container_definitions = containers;
        def.volumes = volumes;
        def
    });
    (def, found)
}

fn parts<T: de::DeserializeOwned + Default>(
    items: Option<Vec<Value>>,
    key: &str,
    shape: &str,
    found: &mut Found,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
        let base = path::index(key, i);
        match lenient::<T>(item, &base, shape, found) {
            Some(t) => out.push(t),
            None => {
                // Keep the indices of the others: a placeholder whose own
                // problems are not reported.
                found.shadowed.push(base);
                out.push(T::default());
            }
        }
    }
    out
}

/// One step into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(p: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    p.iter()
        .map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {
                None
            }
        })
        .collect()
}

fn render(base: &str, segs: &[Seg]) -> String {
    let mut out = base.to_owned();
    for s in segs {
        out = match s {
            Seg::Key(k) => path::key(&out, k),
            Seg::Index(i) => path::index(&out, *i),
        };
    }
    if out.is_empty() { ROOT.to_owned() } else { out }
}

fn at_mut<'a>(mut v: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    for s in segs {
        v = match (s, v) {
            (Seg::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A value of the type serde expected, to stand in for a wrong one.
fn placeholder(expected: &str) -> Option<Value> {
    match expected {
        "u16" | "u32" | "u64" | "i32" | "i64" => Some(Value::from(0)),
        "a string" => Some(Value::String(String::new())),
        "a boolean" => Some(Value::Bool(false)),
        "a sequence" => Some(Value::Array(Vec::new())),
        "a map" => Some(Value::Object(Map::new())),
        e if e.starts_with("struct ") => Some(Value::Object(Map::new())),
        _ => None,
    }
}

/// What a serde error says.
enum Cause<'a> {
    Unknown {
        field: &'a str,
        expected: Vec<&'a str>,
    },
    Missing {
        field: &'a str,
    },
    Type {
        got: &'a str,
        expected: &'a str,
    },
    Other,
}

fn cause(msg: &str) -> Cause<'_> {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        // The key itself may contain backticks: split at serde's own text.
        return if let Some((f, list)) = rest.rsplit_once("`, expected ") {
            Cause::Unknown {
                field: f,
                expected: backticked(list),
            }
        } else if let Some((f, _)) = rest.rsplit_once("`, there are no fields") {
            Cause::Unknown {
                field: f,
                expected: Vec::new(),
            }
        } else {
            Cause::Unknown {
                field: rest.strip_suffix('`').unwrap_or(rest),
                expected: Vec::new(),
            }
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return Cause::Missing {
            field: rest.split('`').next().unwrap_or(rest),
        };
    }
    if let Some(rest) = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
        && let Some((got, expected)) = rest.rsplit_once(", expected ")
    {
        return Cause::Type { got, expected };
    }
    Cause::Other
}

/// Deserializes one part, patching each error away and trying again (see
/// [`deserialize_parts`]); `None` when the part cannot be made to
/// deserialize (its problems are in `found` all the same).
fn lenient<T: de::DeserializeOwned>(
    mut v: Value,
    base: &str,
    shape: &str,
    found: &mut Found,
) -> Option<T> {
    // Paths (relative to the part) where a placeholder was put.
    let mut placed: HashSet<Vec<Seg>> = HashSet::new();
    // Object path → the one name suggested for an unknown key in it.
    let mut suggested: Vec<(Vec<Seg>, String)> = Vec::new();
    // Paths of the type errors reported: a required field removed there is
    // not missing a second time.
    let mut wrong: HashSet<Vec<Seg>> = HashSet::new();
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(&v) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        if found.attempts >= DESERIALIZE_BUDGET {
            found.exhausted = true;
            return None;
        }
        found.attempts += 1;
        let msg = err.inner().to_string();
        let Some(mut segs) = segments(err.path()) else {
            found
                .problems
                .push(Problem::new(render(base, &[]), msg.clone()));
            return None;
        };
        match cause(&msg) {
            Cause::Unknown { field, expected } => {
                // serde_path_to_error records the unknown key as the last
                // segment; add it if a future version does not.
                if segs.last() != Some(&Seg::Key(field.to_owned())) {
                    segs.push(Seg::Key(field.to_owned()));
                }
                let (object, _) = segs.split_at(segs.len().saturating_sub(1));
                let close = suggestion(field, &expected);
                if let Some(c) = close {
                    suggested.push((object.to_vec(), c.to_owned()));
                }
                let owner = shape_of(object).unwrap_or(shape);
                found.problems.push(Problem::new(
                    render(base, &segs),
                    unknown_field_message(field, close, owner),
                ));
                let removed = match at_mut(&mut v, object) {
                    Some(Value::Object(m)) => m.remove(field).is_some(),
                    _ => false,
                };
                if !removed {
                    return None;
                }
            }
            Cause::Missing { field } => {
                let object = segs.clone();
                segs.push(Seg::Key(field.to_owned()));
                let rel = render(base, &segs);
                let typo = suggested
                    .iter()
                    .any(|(o, name)| *o == object && name == field);
                if !typo && !wrong.contains(&segs) {
                    found
                        .problems
                        .push(Problem::new(rel.clone(), "required field is missing"));
                }
                found.shadowed.push(rel);
                if !placed.insert(segs.clone()) {
                    return None;
                }
                match at_mut(&mut v, &object) {
                    Some(Value::Object(m)) => {
                        m.insert(field.to_owned(), Value::String(String::new()));
                    }
                    _ => return None,
                }
            }
            Cause::Type { got, expected } => {
                let rel = render(base, &segs);
                let ours = placed.contains(&segs);
                if !ours {
                    found.problems.push(Problem::new(
                        rel.clone(),
                        format!(
                            "expected {}, got {}",
                            expectation(expected),
                            unexpected(got)
                        ),
                    ));
                    found.shadowed.push(rel);
                    wrong.insert(segs.clone());
                }
                let (last, parent) = segs.split_last()?;
                let in_object = matches!(last, Seg::Key(_));
                if in_object && !ours {
                    // Absent, as if never written; a required field then
                    // gets a placeholder.
                    if let (Some(Value::Object(m)), Seg::Key(k)) = (at_mut(&mut v, parent), last) {
                        m.remove(k);
                    } else {
                        return None;
                    }
                } else {
                    let (Some(slot), Some(p)) = (at_mut(&mut v, &segs), placeholder(expected))
                    else {
                        return None;
                    };
                    if ours && *slot == p {
                        return None;
                    }
                    *slot = p;
                    placed.insert(segs.clone());
                }
            }
            Cause::Other => {
                found
                    .problems
                    .push(Problem::new(render(base, &segs), msg.clone()));
                return None;
            }
        }
    }
}

/// The ECS shape of the object at `object` (a path inside a part), from
/// the key that holds it; `None` for the part itself.
fn shape_of(object: &[Seg]) -> Option<&'static str> {
    let key = object.iter().rev().find_map(|s| match s {
        Seg::Key(k) => Some(k.as_str()),
        Seg::Index(_) => None,
    })?;
    Some(match key {
        "containerDefinitions" => "ContainerDefinition",
        "portMappings" => "PortMapping",
        "environment" => "KeyValuePair",
        "dependsOn" => "ContainerDependency",
        "healthCheck" => "HealthCheck",
        "restartPolicy" => "ContainerRestartPolicy",
        "mountPoints" => "MountPoint",
        "volumesFrom" => "VolumeFrom",
        "extraHosts" => "HostEntry",
        "ulimits" => "Ulimit",
        "systemControls" => "SystemControl",
        "logConfiguration" => "LogConfiguration",
        "linuxParameters" => "LinuxParameters",
        "capabilities" => "KernelCapabilities",
        "devices" => "Device",
        "tmpfs" => "Tmpfs",
        "volumes" => "Volume",
        "host" => "HostVolumeProperties",
        "dockerVolumeConfiguration" => "DockerVolumeConfiguration",
        "runtimePlatform" => "RuntimePlatform",
        _ => return None,
    })
}

/// Rewrites a serde error message into a berth problem (for a part at the
/// top of the document, in the task definition shape).
#[cfg(test)]
fn explain(at: &str, msg: &str) -> Problem {
    match cause(msg) {
        Cause::Unknown { field, expected } => {
            let seg = path::key("", field);
            let named = at == seg
                || at.ends_with(&format!(".{seg}"))
                || (seg.starts_with('[') && at.ends_with(&seg));
            let at = if named {
                at.to_owned()
            } else {
                path::key(at, field)
            };
            let close = suggestion(field, &expected);
            Problem::new(at, unknown_field_message(field, close, "TaskDefinition"))
        }
        Cause::Missing { field } => Problem::new(path::key(at, field), "required field is missing"),
        Cause::Type { got, expected } => Problem::new(
            at,
            format!(
                "expected {}, got {}",
                expectation(expected),
                unexpected(got)
            ),
        ),
        Cause::Other => Problem::new(at, msg),
    }
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

/// The message for an unknown key `field` in an object of ECS shape
/// `shape`, given the close known name if there is one. Never lists the
/// known names: COMPATIBILITY.md does.
pub(crate) fn unknown_field_message(field: &str, close: Option<&str>, shape: &str) -> String {
    match close {
        Some(c) if c.eq_ignore_ascii_case(field) => {
            format!("unknown field (did you mean `{c}`? field names are case-sensitive)")
        }
        Some(c) => format!("unknown field (a typo? did you mean `{c}`?)"),
        None => format!(
            "unknown field: berth knows no such field in {shape} (taskdef/COMPATIBILITY.md lists every field of the ECS task definition and what berth does with it)"
        ),
    }
}

/// The one known name close to `field`: the same but for case, or at most
/// two edits away (one for names of four characters or fewer); the closest
/// wins, the first listed among equals.
pub(crate) fn suggestion<'a>(field: &str, expected: &[&'a str]) -> Option<&'a str> {
    let lower = field.to_ascii_lowercase();
    let chars = lower.chars().count();
    let mut best: Option<(usize, &str)> = None;
    for &cand in expected {
        let limit = if cand.len() <= 4 { 1 } else { 2 };
        // The distance is at least the difference in length: skip the
        // quadratic comparison for hopeless (and huge) keys.
        if chars.abs_diff(cand.len()) > limit {
            continue;
        }
        let d = levenshtein(&lower, &cand.to_ascii_lowercase());
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
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
    fn suggests_only_close_names() {
        assert_eq!(suggestion("imagee", &["name", "image"]), Some("image"));
        assert_eq!(
            suggestion("ContainerDefinitions", &["containerDefinitions", "family"]),
            Some("containerDefinitions")
        );
        assert_eq!(suggestion("zzzzzz", &["name", "image"]), None);
        // Three edits away is not close, however long the name.
        assert_eq!(suggestion("dockerLabelz_x", &["dockerLabels"]), None);
        assert_eq!(suggestion("cpus", &["cpu", "memory"]), Some("cpu"));
        assert_eq!(suggestion("gpuCount", &["cpu", "command"]), None);
    }

    #[test]
    fn unknown_field_messages_never_list_the_known_names() {
        let m = unknown_field_message("gpuCount", None, "ContainerDefinition");
        assert!(m.contains("ContainerDefinition"), "{m}");
        assert!(m.contains("COMPATIBILITY.md"), "{m}");
        assert!(!m.contains('`'), "{m}");
        let m = unknown_field_message("Image", Some("image"), "ContainerDefinition");
        assert!(
            m.contains("did you mean `image`") && m.contains("case-sensitive"),
            "{m}"
        );
    }

    #[test]
    fn nulls_are_dropped_at_every_depth() {
        let mut v: Value =
            serde_json::json!({"a": null, "b": [{"c": null, "d": 1}, null], "e": {"f": null}});
        drop_nulls(&mut v);
        assert_eq!(v, serde_json::json!({"b": [{"d": 1}, null], "e": {}}));
    }
}
