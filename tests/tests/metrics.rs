//! `/metrics` of the agent (local API) and of the control plane
//! (`--metrics-listen`): both parse as Prometheus text, and their counters
//! move when a task runs, its container is restarted by the restart policy
//! and the agent reconnects.
//!
//! The parser here is deliberately strict and independent of the encoder
//! in `berth-proto`: every line is `# HELP`, `# TYPE` or a sample
//! `name{labels} value`; every sample belongs to a family declared before
//! it; counters end in `_total`; histogram buckets are cumulative and end
//! with `le="+Inf"`, equal to `_count`.

use std::collections::{BTreeMap, BTreeSet};

use berth_e2e::{DEADLINE, Fleet, describe_output, str_field, wait_for};
use serde_json::{Value, json};

/// Idles until SIGTERM (then exits 0).
const IDLE: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` body.
#[derive(Debug)]
struct Scrape {
    /// Family name → type.
    families: BTreeMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// `{k="v",…}` → labels; the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (key, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("label without =\" in {s:?}"))?;
        if !is_name(key, false) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in {s:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice in {s:?}"));
        }
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} after a label in {s:?}"));
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v
            .parse::<f64>()
            .map_err(|e| format!("value {v:?} is not a number: {e}")),
    }
}

/// Parses `text` strictly; the error names the offending line.
fn parse(text: &str) -> Result<Scrape, String> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("the body does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            if !is_name(name, true) || help.trim().is_empty() {
                return Err(at("bad HELP".into()));
            }
            if !helped.insert(name.to_string()) {
                return Err(at("second HELP".into()));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type".into()))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(at(format!("counter {name} does not end in _total")));
            }
            if families
                .insert(name.to_string(), kind.to_string())
                .is_some()
            {
                return Err(at("second TYPE".into()));
            }
        } else if line.starts_with('#') || line.is_empty() {
            return Err(at("neither HELP, TYPE nor a sample".into()));
        } else {
            let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
            let name = &line[..name_end];
            if !is_name(name, true) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let (labels, rest) = match line[name_end..].strip_prefix('{') {
                Some(l) => parse_labels(l).map_err(at)?,
                None => (BTreeMap::new(), &line[name_end..]),
            };
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| at("no space before the value".into()))?;
            if value.contains(' ') {
                return Err(at(
                    "more than one value (timestamps are not expected)".into()
                ));
            }
            let value = parse_value(value).map_err(at)?;
            let family = families
                .get(name)
                .map(|kind| (name, kind.as_str()))
                .or_else(|| {
                    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
                        let base = name.strip_suffix(suffix)?;
                        families
                            .get(base)
                            .filter(|k| *k == "histogram")
                            .map(|k| (base, k.as_str()))
                    })
                })
                .ok_or_else(|| at(format!("{name} belongs to no family declared before it")))?;
            if family.1 == "counter" && (value.is_nan() || value < 0.0) {
                return Err(at("a counter below 0, or NaN".into()));
            }
            if name.ends_with("_bucket") != labels.contains_key("le") && family.1 == "histogram" {
                return Err(at("le on a bucket, and only on a bucket".into()));
            }
            let series = format!("{name}{labels:?}");
            if !seen.insert(series) {
                return Err(at("the same series twice".into()));
            }
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    for (name, kind) in &families {
        if !helped.contains(name) {
            return Err(format!("family {name} has no HELP"));
        }
        let mine = |s: &&Sample| {
            s.name == *name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| s.name == format!("{name}{suffix}")))
        };
        if !samples.iter().any(|s| mine(&s)) {
            return Err(format!("family {name} has no sample"));
        }
    }
    let scrape = Scrape {
        families,
        samples,
        text: text.to_string(),
    };
    scrape.check_histograms()?;
    Ok(scrape)
}

impl Scrape {
    /// Buckets cumulative, ending with `+Inf` = `_count`, for every
    /// histogram and label set.
    fn check_histograms(&self) -> Result<(), String> {
        for (name, kind) in &self.families {
            if kind != "histogram" {
                continue;
            }
            let bucket = format!("{name}_bucket");
            let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.samples.iter().filter(|s| s.name == bucket) {
                let mut key = s.labels.clone();
                let le = key.remove("le").unwrap_or_default();
                let le = parse_value(&le)?;
                series.entry(key).or_default().push((le, s.value));
            }
            if series.is_empty() {
                return Err(format!("histogram {name} has no buckets"));
            }
            for (labels, buckets) in series {
                let cumulative = buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
                let last = buckets.last().copied().unwrap_or((0.0, 0.0));
                let count = self.get(&format!("{name}_count"), &labels);
                let sum = self.get(&format!("{name}_sum"), &labels);
                if !cumulative || last.0 != f64::INFINITY || Some(last.1) != count || sum.is_none()
                {
                    return Err(format!(
                        "histogram {name}{labels:?}: buckets {buckets:?}, count {count:?}, sum {sum:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    fn get(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && &s.labels == labels)
            .map(|s| s.value)
    }

    /// The value of one series; panics (with the scrape) when it is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.get(name, &labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    fn has_family(&self, name: &str, kind: &str) -> bool {
        self.families.get(name).is_some_and(|k| k == kind)
    }
}

fn scrape_agent(fleet: &Fleet) -> Scrape {
    let (status, body) = fleet.agent.api_request("/metrics");
    assert_eq!(status, 200, "agent GET /metrics: {body}");
    parse(&body).unwrap_or_else(|e| panic!("agent /metrics is not Prometheus text: {e}\n{body}"))
}

fn scrape_server(fleet: &Fleet) -> Scrape {
    let body = fleet.server.scrape_metrics();
    parse(&body).unwrap_or_else(|e| panic!("server /metrics is not Prometheus text: {e}\n{body}"))
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 2\n";
    let parsed = parse(ok).expect("valid text");
    assert_eq!(parsed.value("a_total", &[("x", "1\"")]), 2.0);
    for bad in [
        "a_total 1\n",                             // no TYPE
        "# HELP a A.\n# TYPE a counter\na 1\n",    // counter without _total
        "# HELP a A.\n# TYPE a gauge\na one\n",    // not a number
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n", // unquoted label
        "# HELP a A.\n# TYPE a gauge\na 1",        // no final newline
        "# HELP a A.\n# TYPE a gauge\n",           // no sample
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn metrics_parse_and_move_when_a_task_runs_restarts_and_the_agent_reconnects() {
    let mut fleet = Fleet::start();

    // Both endpoints parse, with the families the docs name.
    let agent0 = scrape_agent(&fleet);
    for (name, kind) in [
        ("berth_agent_connected", "gauge"),
        ("berth_agent_tasks", "gauge"),
        ("berth_agent_container_restarts_total", "counter"),
        ("berth_agent_image_pulls_total", "counter"),
        ("berth_agent_image_pull_duration_seconds", "histogram"),
        ("berth_agent_docker_request_duration_seconds", "histogram"),
        ("berth_agent_session_reconnects_total", "counter"),
        ("berth_agent_outbox_events", "gauge"),
        ("berth_agent_store_bytes", "gauge"),
    ] {
        assert!(
            agent0.has_family(name, kind),
            "agent /metrics lacks the {kind} {name}:\n{}",
            agent0.text
        );
    }
    let server0 = scrape_server(&fleet);
    for (name, kind) in [
        ("berth_server_connected_instances", "gauge"),
        ("berth_server_instances", "gauge"),
        ("berth_server_sessions_opened_total", "counter"),
        ("berth_server_events_applied_total", "counter"),
        ("berth_server_assignments_sent_total", "counter"),
        ("berth_server_store_latency_seconds", "histogram"),
    ] {
        assert!(
            server0.has_family(name, kind),
            "server /metrics lacks the {kind} {name}:\n{}",
            server0.text
        );
    }
    assert_eq!(agent0.value("berth_agent_connected", &[]), 1.0);
    assert!(
        agent0.value("berth_agent_store_bytes", &[]) > 0.0,
        "{}",
        agent0.text
    );
    assert_eq!(
        server0.value("berth_server_connected_instances", &[]),
        1.0,
        "{}",
        server0.text
    );
    assert_eq!(
        server0.value("berth_server_instances", &[("status", "ACTIVE")]),
        1.0,
        "{}",
        server0.text
    );
    // Only GET /metrics is served.
    let (status, _) = berth_e2e::http_get(fleet.server.metrics_addr(), "/")
        .unwrap_or_else(|e| panic!("GET / of the metrics endpoint: {e}"));
    assert_eq!(status, 404, "the metrics endpoint serves /metrics only");

    // A container that fails its first run: the restart policy restarts
    // it in place, and then it runs.
    let family = fleet.family("metrics");
    let file = fleet.task_def_file(
        &family,
        json!([{
            "name": "app",
            "essential": true,
            "command": ["sh", "-c", format!(
                "if [ -e /tmp/ran-before ]; then {IDLE}; fi; touch /tmp/ran-before; echo first run fails; exit 1"
            )],
            "restartPolicy": {"enabled": true, "restartAttemptPeriod": 0},
        }]),
    );
    let out = fleet.run_task(&file, &["--json"]);
    assert!(
        out.status.success(),
        "berth task run\n{}",
        describe_output(&out)
    );
    let task: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "berth task run --json is not JSON: {e}\n{}",
            describe_output(&out)
        )
    });
    let task_id = str_field(&task, "taskId").to_string();
    fleet
        .server
        .wait_task(&task_id, "app restarted once and RUNNING", |t| {
            // The task has no containers until the agent reports them.
            t["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["name"] == "app")
                .is_some_and(|app| {
                    app["restartCount"].as_u64().is_some_and(|n| n >= 1)
                        && str_field(app, "lastStatus") == "RUNNING"
                })
        });

    // The agent's counters moved.
    let delta = |after: &Scrape, name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - agent0.value(name, labels)
    };
    let agent1 = wait_for("the agent's metrics to count the restart", DEADLINE, || {
        let s = scrape_agent(&fleet);
        if delta(&s, "berth_agent_container_restarts_total", &[]) >= 1.0 {
            Ok(s)
        } else {
            Err(s.text)
        }
    });
    let pulls = delta(
        &agent1,
        "berth_agent_image_pulls_total",
        &[("result", "success")],
    ) + delta(
        &agent1,
        "berth_agent_image_pulls_total",
        &[("result", "failure")],
    );
    assert!(pulls >= 1.0, "no image pull counted:\n{}", agent1.text);
    assert!(
        delta(
            &agent1,
            "berth_agent_image_pull_duration_seconds_count",
            &[]
        ) >= 1.0,
        "no pull duration observed:\n{}",
        agent1.text
    );
    let docker = |op: &str| {
        delta(
            &agent1,
            "berth_agent_docker_request_duration_seconds_count",
            &[("operation", op)],
        )
    };
    assert!(docker("create") >= 1.0, "no create timed:\n{}", agent1.text);
    assert!(
        docker("start") >= 2.0,
        "the first start and the restart are both Docker starts:\n{}",
        agent1.text
    );
    assert!(
        delta(&agent1, "berth_agent_events_total", &[]) >= 3.0,
        "PENDING, RUNNING, the exit and the restart are events:\n{}",
        agent1.text
    );
    assert!(
        agent1.value("berth_agent_tasks", &[("status", "RUNNING")]) >= 1.0,
        "{}",
        agent1.text
    );

    // The server's counters moved: it sent the assignment with the task
    // and applied the task's events.
    let server1 = wait_for(
        "the server's metrics to count the task's events",
        DEADLINE,
        || {
            let s = scrape_server(&fleet);
            let applied = s.value("berth_server_events_applied_total", &[])
                - server0.value("berth_server_events_applied_total", &[]);
            if applied >= 3.0 { Ok(s) } else { Err(s.text) }
        },
    );
    assert!(
        server1.value("berth_server_assignments_sent_total", &[])
            > server0.value("berth_server_assignments_sent_total", &[]),
        "the assignment with the task was not counted:\n{}",
        server1.text
    );
    // An operation's series appears with its first call.
    let store_calls = |s: &Scrape, op: &str| {
        let labels = BTreeMap::from([("operation".to_owned(), op.to_owned())]);
        s.get("berth_server_store_latency_seconds_count", &labels)
            .unwrap_or(0.0)
    };
    assert!(
        store_calls(&server1, "apply_event") > store_calls(&server0, "apply_event"),
        "{}",
        server1.text
    );
    assert!(
        store_calls(&server1, "place_task") > store_calls(&server0, "place_task"),
        "{}",
        server1.text
    );

    // `berth-agent status` shows the same at a glance.
    let restarts = agent1.value("berth_agent_container_restarts_total", &[]);
    let status = fleet.agent.status_json();
    assert_eq!(
        status["metrics"]["containerRestarts"].as_f64(),
        Some(restarts),
        "{status}"
    );
    assert!(
        status["metrics"]["tasksByStatus"]["RUNNING"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{status}"
    );
    let out = fleet.agent.agent_cli(&["status"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("restarts")
                && l.contains(&format!(" {restarts} container restarts"))),
        "`berth-agent status` does not show the restarts:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("sessions") && l.contains("reconnect")),
        "`berth-agent status` does not show the reconnects:\n{text}"
    );

    // A control-plane restart: the agent reconnects and says so.
    let established = agent1.value("berth_agent_sessions_established_total", &[]);
    let reconnects = agent1.value("berth_agent_session_reconnects_total", &[]);
    fleet.server.restart();
    let agent2 = wait_for("the agent to count its reconnect", DEADLINE, || {
        let s = scrape_agent(&fleet);
        if s.value("berth_agent_sessions_established_total", &[]) > established
            && s.value("berth_agent_connected", &[]) == 1.0
        {
            Ok(s)
        } else {
            Err(s.text)
        }
    });
    assert!(
        agent2.value("berth_agent_session_reconnects_total", &[]) > reconnects,
        "{}",
        agent2.text
    );
    // The restarted server has its own counters, and sees the agent again.
    wait_for("the restarted server to see the agent", DEADLINE, || {
        let s = scrape_server(&fleet);
        if s.value("berth_server_connected_instances", &[]) == 1.0
            && s.value("berth_server_sessions_opened_total", &[]) >= 1.0
        {
            Ok(())
        } else {
            Err(s.text)
        }
    });
}
