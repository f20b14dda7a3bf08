//! The corpus of task definitions under `tests/corpus/`.
//!
//! - `invalid/NNN-name.json` must be refused. Its sibling `NNN-name.expect`
//!   is the expected list of problems, two lines each: the JSON path, then a
//!   substring of the message. The refusal must have exactly these problems,
//!   in any order (so a definition with several mistakes is reported whole
//!   in one run, and nothing is reported twice). A last line `+N` expects
//!   N more problems counted but not listed.
//! - `valid/NAME.json` must be accepted. Among them are the shapes real
//!   exports have: a console export with `null` for every unset field
//!   (012), describe-task-definition output with every bookkeeping member
//!   (013), and every field ECS accepts for EC2 and EXTERNAL that berth runs
//!   or ignores (014; the refused ones each have an invalid case). An optional sibling `NAME.warnings`
//!   lists, one per line, prefixes of the expected warnings, in order; without
//!   it the definition must parse without warnings.

use berth_taskdef::parse;
use std::fs;
use std::path::{Path, PathBuf};

fn corpus(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn invalid_definitions_are_refused_at_the_expected_path() {
    let files = corpus("invalid");
    assert!(files.len() >= 45, "only {} invalid cases", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let expect = read(&file.with_extension("expect"));
        let mut lines: Vec<&str> = expect.lines().collect();
        let omitted = match lines.last().and_then(|l| l.strip_prefix('+')) {
            Some(n) => {
                let n: usize = n
                    .parse()
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                lines.pop();
                n
            }
            None => 0,
        };
        assert!(
            !lines.is_empty() && lines.len().is_multiple_of(2),
            "{}: the .expect file needs pairs of lines, a path and a message",
            file.display()
        );
        let wanted: Vec<(&str, &str)> = lines.chunks(2).map(|p| (p[0], p[1])).collect();
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        match parse(&read(file)) {
            Ok(p) => failures.push(format!("{name:?}: accepted ({:?})", p.warnings)),
            Err(e) => {
                let mut unmatched: Vec<&berth_taskdef::Problem> = e.problems.iter().collect();
                let mut missing = Vec::new();
                for (path, needle) in &wanted {
                    match unmatched
                        .iter()
                        .position(|p| p.path == *path && p.message.contains(needle))
                    {
                        Some(k) => {
                            unmatched.remove(k);
                        }
                        None => missing.push(format!("{path}: …{needle}…")),
                    }
                }
                if !missing.is_empty() || !unmatched.is_empty() || e.omitted != omitted {
                    let unexpected: Vec<String> =
                        unmatched.iter().map(ToString::to_string).collect();
                    failures.push(format!(
                        "{name:?}: missing {missing:?}, unexpected {unexpected:?}, {} omitted (expected {omitted}); got\n{e}",
                        e.omitted
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_definitions_are_accepted() {
    let files = corpus("valid");
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let warnings_file = file.with_extension("warnings");
        let expected: Vec<String> = if warnings_file.exists() {
            read(&warnings_file).lines().map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        match parse(&read(file)) {
            Err(e) => failures.push(format!("{name:?}: {e}")),
            Ok(p) => {
                let ok = p.warnings.len() == expected.len()
                    && p.warnings
                        .iter()
                        .zip(&expected)
                        .all(|(got, want)| got.starts_with(want.as_str()));
                if !ok {
                    failures.push(format!(
                        "{name:?}: warnings {:?}, expected {expected:?}",
                        p.warnings
                    ));
                }
                // What parses also survives a round trip through serde.
                let json = serde_json::to_string(&p.definition)
                    .unwrap_or_else(|e| panic!("{name:?}: {e}"));
                match parse(&json) {
                    Ok(again) if again.definition == p.definition => {}
                    Ok(_) => failures.push(format!("{name:?}: round trip changed the definition")),
                    Err(e) => failures.push(format!("{name:?}: round trip refused: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
