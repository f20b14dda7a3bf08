//! COMPATIBILITY.md against the published ECS API model.
//!
//! The model is the one the `botocore` package ships
//! (`botocore/data/ecs/2014-11-13/service-2.json.gz`), from the Python
//! virtualenv that `scripts/setup.sh` makes (`target/test-venv`, or
//! `$BERTH_TEST_VENV`). `scripts/test.sh` exports its `data` directory as
//! `BERTH_BOTOCORE_DATA`; without it the test asks the virtualenv's Python
//! where botocore is. No model is a failure, not a skip: the table must be
//! checked on every run.
//!
//! Every member of `RegisterTaskDefinitionRequest` and of every structure
//! under it, of `DescribeTaskDefinitionResponse`, and the members of the
//! described `TaskDefinition` that the request does not have, must have a
//! row in the section of COMPATIBILITY.md whose heading names the shape; and
//! every row must name members the shape has.

use flate2::read::GzDecoder;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

const MODEL: &str = "ecs/2014-11-13/service-2.json.gz";
const SETUP: &str = "run scripts/setup.sh (it makes the test virtualenv with botocore)";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("taskdef has no parent directory"))
}

/// botocore's `data` directory.
fn botocore_data() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BOTOCORE_DATA") {
        return PathBuf::from(dir);
    }
    let venv = std::env::var_os("BERTH_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/test-venv"));
    let python = venv.join("bin/python");
    let out = Command::new(&python)
        .args([
            "-c",
            "import botocore, os; print(os.path.dirname(botocore.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} to find botocore ({e}): {SETUP}",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "{} cannot import botocore ({}): {SETUP}",
        python.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("data")
}

fn model() -> Value {
    let path = botocore_data().join(MODEL);
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("the ECS API model {}: {e}: {SETUP}", path.display()));
    let mut text = String::new();
    GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn members(shapes: &Value, shape: &str) -> Vec<(String, String)> {
    shapes[shape]["members"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v["shape"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The structures reachable from `shape` (itself included), through lists
/// and maps.
fn structures(shapes: &Value, shape: &str, out: &mut Vec<String>) {
    let s = &shapes[shape];
    match s["type"].as_str() {
        Some("structure") => {
            if out.iter().any(|o| o == shape) {
                return;
            }
            out.push(shape.to_owned());
            for (_, target) in members(shapes, shape) {
                structures(shapes, &target, out);
            }
        }
        Some("list") => {
            if let Some(m) = s["member"]["shape"].as_str() {
                structures(shapes, m, out);
            }
        }
        Some("map") => {
            if let Some(v) = s["value"]["shape"].as_str() {
                structures(shapes, v, out);
            }
        }
        _ => {}
    }
}

/// The members each shape must have a row for.
fn expected(model: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let shapes = &model["shapes"];
    assert!(
        shapes.is_object(),
        "the ECS API model has no shapes: {SETUP}"
    );
    let mut names = Vec::new();
    structures(shapes, "RegisterTaskDefinitionRequest", &mut names);
    structures(shapes, "DescribeTaskDefinitionResponse", &mut names);
    let mut out: BTreeMap<String, BTreeSet<String>> = names
        .iter()
        .filter(|n| n.as_str() != "TaskDefinition")
        .map(|n| {
            (
                n.clone(),
                members(shapes, n).into_iter().map(|(k, _)| k).collect(),
            )
        })
        .collect();
    // The described TaskDefinition repeats the request; only its own
    // bookkeeping members get rows of their own.
    let request: BTreeSet<String> = out
        .get("RegisterTaskDefinitionRequest")
        .cloned()
        .unwrap_or_default();
    out.insert(
        "TaskDefinition".into(),
        members(shapes, "TaskDefinition")
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !request.contains(k))
            .collect(),
    );
    for must in [
        "RegisterTaskDefinitionRequest",
        "ContainerDefinition",
        "Volume",
    ] {
        assert!(
            out.get(must).is_some_and(|m| !m.is_empty()),
            "the ECS API model has no {must}: is {MODEL} the ECS model?"
        );
    }
    out
}

fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// Shape → the members named in the first cell of its table rows, from
/// COMPATIBILITY.md. A heading names its shape in backticks, as
/// `` ## Volumes (`Volume`) `` or `` #### `Secret` ``; a heading without one
/// ends the previous shape's section.
fn table(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            current = backticked(line)
                .into_iter()
                .rev()
                .find(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
                .map(str::to_owned);
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
            continue;
        }
        let (Some(shape), Some(row)) = (&current, line.strip_prefix('|')) else {
            continue;
        };
        let first = row.split('|').next().unwrap_or_default();
        if let Some(set) = out.get_mut(shape) {
            set.extend(backticked(first).into_iter().map(str::to_owned));
        }
    }
    out
}

#[test]
fn compatibility_md_has_a_row_for_every_member_of_the_ecs_api() {
    let model = model();
    let want = expected(&model);
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("COMPATIBILITY.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let have = table(&doc);

    let mut failures = Vec::new();
    for (shape, fields) in &want {
        match have.get(shape) {
            None => failures.push(format!(
                "no section for the shape {shape} (a heading naming `{shape}`), with rows for {}",
                fields.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(rows) => {
                for f in fields.difference(rows) {
                    failures.push(format!(
                        "{shape}.{f}: in the ECS API model, no row in COMPATIBILITY.md"
                    ));
                }
            }
        }
    }
    for (shape, rows) in &have {
        match want.get(shape) {
            None => failures.push(format!(
                "COMPATIBILITY.md has a section for {shape}, which is no shape under RegisterTaskDefinitionRequest"
            )),
            Some(fields) => {
                for r in rows.difference(fields) {
                    failures.push(format!(
                        "{shape}.{r}: a row in COMPATIBILITY.md, but the ECS API model has no such member"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "COMPATIBILITY.md and the ECS API model ({}) disagree:\n  {}",
        botocore_data().join(MODEL).display(),
        failures.join("\n  ")
    );
}

#[test]
fn the_table_reader_finds_sections_and_rows() {
    let doc = "# Title\n\n| status | meaning |\n|---|---|\n| `x` | y |\n\n## Volumes (`Volume`)\n\n| field | berth | notes |\n|---|---|---|\n| `name` | supported | `a`, `b` |\n| `host`, `efs` | refused | |\n\n## Other\n\n| `stray` | x | |\n";
    let t = table(doc);
    assert_eq!(t.len(), 1, "{t:?}");
    let v: Vec<&str> = t["Volume"].iter().map(String::as_str).collect();
    assert_eq!(v, ["efs", "host", "name"]);
}
