//! Human output of the CLI: aligned tables and key/value blocks. The JSON
//! output lives in `berth_proto::json`, shared with the agent.
//!
//! Every cell and value is printed through
//! [`escape_control`](berth_proto::text::escape_control): what agents report
//! (hostnames, families, reasons) cannot move the cursor or hide rows.

use std::fmt::Write as _;

use berth_proto::json::format_time_ms;
use berth_proto::text::escape_control;
use berth_proto::v1::{
    AdminCertificateRecord, Cluster, Instance, RegisteredTaskDefinition, Task, TaskState,
};

/// A table with left-aligned columns separated by two spaces.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; control characters in the cells are escaped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| escape_control(&c).into_owned())
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(columns) {
                if i + 1 == columns {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `-` for empty strings.
fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// RFC 3339 time or `-`.
pub fn time(ms: i64) -> String {
    format_time_ms(ms).unwrap_or_else(|| "-".to_owned())
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`, or `-`.
pub fn ago(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "-".to_owned();
    }
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 2 * 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn resources(free: i64, total: i64) -> String {
    format!("{free}/{total}")
}

/// What placement uses: the lower of the registered capacity and the one
/// the agent reports (the registered one from a server that does not say).
pub fn usable(i: &Instance) -> berth_proto::v1::Resources {
    let reg = i.registered.unwrap_or_default();
    match i.reported {
        Some(rep) => berth_proto::v1::Resources {
            cpu: reg.cpu.min(rep.cpu),
            memory_mib: reg.memory_mib.min(rep.memory_mib),
        },
        None => reg,
    }
}

/// The agent's last Hello named another host than the one registered.
pub fn hostname_mismatch(i: &Instance) -> bool {
    !i.reported_hostname.is_empty() && !i.reported_hostname.eq_ignore_ascii_case(&i.hostname)
}

pub fn clusters_table(clusters: &[Cluster]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "INSTANCES",
        "RUNNING",
        "PENDING",
        "SERVICES",
    ]);
    for c in clusters {
        t.row(vec![
            c.name.clone(),
            c.status.clone(),
            c.registered_instances_count.to_string(),
            c.running_tasks_count.to_string(),
            c.pending_tasks_count.to_string(),
            c.active_services_count.to_string(),
        ]);
    }
    t.render()
}

pub fn instances_table(instances: &[Instance], now_ms: i64) -> String {
    let mut t = Table::new(&[
        "INSTANCE ID",
        "HOSTNAME",
        "STATUS",
        "CONNECTED",
        "CPU FREE/TOTAL",
        "MEMORY FREE/TOTAL (MiB)",
        "RUNNING",
        "PENDING",
        "AGENT",
        "LAST HEARTBEAT",
    ]);
    for i in instances {
        let reg = usable(i);
        let rem = i.remaining.unwrap_or_default();
        t.row(vec![
            i.instance_id.clone(),
            or_dash(&i.hostname),
            i.status.clone(),
            if i.agent_connected { "yes" } else { "no" }.to_owned(),
            resources(rem.cpu, reg.cpu),
            resources(rem.memory_mib, reg.memory_mib),
            i.running_tasks_count.to_string(),
            i.pending_tasks_count.to_string(),
            or_dash(&i.agent_version),
            ago(i.last_heartbeat_at_ms, now_ms),
        ]);
    }
    t.render()
}

pub fn instance_detail(i: &Instance, now_ms: i64) -> String {
    let reg = i.registered.unwrap_or_default();
    let rem = i.remaining.unwrap_or_default();
    let mut out = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<20}{}", escape_control(&v));
    };
    kv("Instance ID:", i.instance_id.clone());
    kv("Cluster:", i.cluster.clone());
    kv(
        "Hostname:",
        if hostname_mismatch(i) {
            format!(
                "{} (registered; the agent reports {:?}: MISMATCH)",
                or_dash(&i.hostname),
                i.reported_hostname
            )
        } else {
            or_dash(&i.hostname)
        },
    );
    kv("Status:", i.status.clone());
    kv(
        "Agent connected:",
        if i.agent_connected { "yes" } else { "no" }.to_owned(),
    );
    kv(
        "Last heartbeat:",
        match i.last_heartbeat_at_ms {
            0 => "-".to_owned(),
            ms => format!("{} ({})", time(ms), ago(ms, now_ms)),
        },
    );
    kv("Agent version:", or_dash(&i.agent_version));
    kv("Registered at:", time(i.registered_at_ms));
    let rep = i.reported.unwrap_or(reg);
    let clamped = |reported: i64, registered: i64| {
        if reported > registered {
            " (more reported than registered: not used until `berth instance accept-capacity`)"
        } else {
            ""
        }
    };
    kv(
        "CPU:",
        format!(
            "{} units registered, {} reported, {} remaining{}",
            reg.cpu,
            rep.cpu,
            rem.cpu,
            clamped(rep.cpu, reg.cpu)
        ),
    );
    kv(
        "Memory:",
        format!(
            "{} MiB registered, {} MiB reported, {} MiB remaining{}",
            reg.memory_mib,
            rep.memory_mib,
            rem.memory_mib,
            clamped(rep.memory_mib, reg.memory_mib)
        ),
    );
    kv(
        "Tasks:",
        format!(
            "{} running, {} pending",
            i.running_tasks_count, i.pending_tasks_count
        ),
    );
    if i.attributes.is_empty() {
        kv("Attributes:", "-".to_owned());
    } else {
        kv("Attributes:", String::new());
        let mut attrs: Vec<_> = i.attributes.iter().collect();
        attrs.sort();
        for (k, v) in attrs {
            let _ = writeln!(out, "  {}={}", escape_control(k), escape_control(v));
        }
    }
    out
}

/// The tasks of an instance not STOPPED, counted by task group
/// (`service:NAME`, `family:FAMILY`, …): running and pending.
pub fn tasks_by_group(tasks: &[Task]) -> String {
    let mut groups: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
    for t in tasks {
        let status = t.state.as_ref().map_or("", |s| s.last_status.as_str());
        let group = if t.group.is_empty() {
            "-"
        } else {
            t.group.as_str()
        };
        let e = groups.entry(group).or_default();
        match status {
            "RUNNING" => e.0 += 1,
            "STOPPED" => {}
            _ => e.1 += 1,
        }
    }
    groups.retain(|_, (r, p)| *r + *p > 0);
    let mut out = String::new();
    if groups.is_empty() {
        let _ = writeln!(out, "{:<20}-", "Tasks by group:");
        return out;
    }
    let _ = writeln!(out, "Tasks by group:");
    for (g, (r, p)) in groups {
        let _ = writeln!(out, "  {}: {r} running, {p} pending", escape_control(g));
    }
    out
}

pub fn tasks_table(tasks: &[Task]) -> String {
    let mut t = Table::new(&[
        "TASK ID", "FAMILY", "INSTANCE", "LAST", "DESIRED", "HEALTH", "CREATED",
    ]);
    for task in tasks {
        let s = task.state.clone().unwrap_or_default();
        t.row(vec![
            s.task_id,
            or_dash(&s.family),
            task.instance_id.clone(),
            or_dash(&s.last_status),
            or_dash(&s.desired_status),
            if s.health_status.is_empty() {
                "UNKNOWN".to_owned()
            } else {
                s.health_status
            },
            time(s.created_at_ms),
        ]);
    }
    t.render()
}

pub fn task_detail(task: &Task, now_ms: i64) -> String {
    let s: TaskState = task.state.clone().unwrap_or_default();
    let mut out = String::new();
    {
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<17}{}", escape_control(&v));
        };
        kv("Task ID:", s.task_id.clone());
        kv("Family:", or_dash(&s.family));
        kv("Definition:", or_dash(&task.task_definition));
        kv("Group:", or_dash(&task.group));
        kv("Started by:", or_dash(&task.started_by));
        kv("Instance:", task.instance_id.clone());
        kv("Last status:", or_dash(&s.last_status));
        kv("Desired status:", or_dash(&s.desired_status));
        kv(
            "Health:",
            if s.health_status.is_empty() {
                "UNKNOWN".to_owned()
            } else {
                s.health_status.clone()
            },
        );
        kv("Stop code:", or_dash(&s.stop_code));
        kv("Stopped reason:", or_dash(&s.stopped_reason));
        kv("Created:", time(s.created_at_ms));
        kv("Started:", time(s.started_at_ms));
        kv("Stopped:", time(s.stopped_at_ms));
        kv(
            "Last seen:",
            match task.last_seen_at_ms {
                0 => "-".to_owned(),
                ms => format!("{} ({})", time(ms), ago(ms, now_ms)),
            },
        );
    }
    if !s.containers.is_empty() {
        out.push('\n');
        let mut t = Table::new(&[
            "CONTAINER",
            "IMAGE",
            "STATUS",
            "EXIT",
            "HEALTH",
            "RESTARTS",
            "PORTS",
            "REASON",
        ]);
        for c in &s.containers {
            let ports: Vec<String> = c
                .network_bindings
                .iter()
                .map(|b| {
                    let proto = if b.protocol.is_empty() {
                        "tcp"
                    } else {
                        b.protocol.as_str()
                    };
                    format!("{}->{}/{}", b.host_port, b.container_port, proto)
                })
                .collect();
            t.row(vec![
                c.name.clone(),
                c.image.clone(),
                or_dash(&c.last_status),
                c.exit_code
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                if c.health_status.is_empty() {
                    "UNKNOWN".to_owned()
                } else {
                    c.health_status.clone()
                },
                c.restart_count.to_string(),
                if ports.is_empty() {
                    "-".to_owned()
                } else {
                    ports.join(",")
                },
                or_dash(&c.reason),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// The state of an admin certificate: `REVOKED`, `EXPIRED` or `VALID`.
pub fn admin_cert_status(c: &AdminCertificateRecord, now_ms: i64) -> &'static str {
    if c.revoked_at_ms > 0 {
        "REVOKED"
    } else if c.not_after_ms <= now_ms {
        "EXPIRED"
    } else {
        "VALID"
    }
}

/// `berth admin-cert ls`.
pub fn admin_certs_table(certs: &[AdminCertificateRecord], now_ms: i64) -> String {
    let mut t = Table::new(&["SERIAL", "NAME", "STATUS", "ISSUED", "EXPIRES", "REVOKED"]);
    for c in certs {
        t.row(vec![
            c.serial_number.clone(),
            or_dash(&c.name),
            admin_cert_status(c, now_ms).to_owned(),
            time(c.issued_at_ms),
            time(c.not_after_ms),
            time(c.revoked_at_ms),
        ]);
    }
    t.render()
}

/// A registered revision: name, status, dates, its containers and the
/// definition's warnings.
pub fn task_definition_detail(r: &RegisteredTaskDefinition) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<17}{}", escape_control(&v));
    };
    kv("Task definition:", format!("{}:{}", r.family, r.revision));
    kv("Status:", r.status.clone());
    kv("Registered:", time(r.registered_at_ms));
    kv("Deregistered:", time(r.deregistered_at_ms));
    let parsed = berth_taskdef::parse(&r.task_definition_json).ok();
    if let Some(p) = &parsed {
        let need = p.definition.reservation();
        kv(
            "Reserves:",
            format!("{} CPU units, {} MiB", need.cpu, need.memory_mib),
        );
    }
    for w in &r.warnings {
        kv("Warning:", w.clone());
    }
    if let Some(p) = parsed {
        out.push('\n');
        let mut t = Table::new(&["CONTAINER", "IMAGE", "ESSENTIAL"]);
        for c in &p.definition.container_definitions {
            t.row(vec![
                c.name.clone(),
                c.image.clone(),
                if c.is_essential() { "yes" } else { "no" }.to_owned(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_by_group_counts_running_and_pending_and_leaves_out_stopped() {
        let task = |group: &str, status: &str| Task {
            group: group.into(),
            state: Some(berth_proto::v1::TaskState {
                last_status: status.into(),
                ..Default::default()
            }),
            ..Task::default()
        };
        let out = tasks_by_group(&[
            task("service:web", "RUNNING"),
            task("service:web", "PENDING"),
            task("service:web", "RUNNING"),
            task("family:x", "STOPPED"),
            task("", "RUNNING"),
        ]);
        assert_eq!(
            out,
            "Tasks by group:\n  -: 1 running, 0 pending\n  service:web: 2 running, 1 pending\n"
        );
        assert_eq!(tasks_by_group(&[]), "Tasks by group:     -\n");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "LONG HEADER", "C"]);
        t.row(vec!["xxxx".into(), "y".into(), "z".into()]);
        assert_eq!(t.render(), "A     LONG HEADER  C\nxxxx  y            z\n");
    }

    #[test]
    fn what_agents_report_reaches_the_terminal_escaped() {
        let hostile = "evil\x1b]0;pwned-title\x07\x1b[2K\x1b[1A\x1b[31mOK\x1b[0m";
        let mut attributes = std::collections::HashMap::new();
        attributes.insert("k\x1b[8m".to_owned(), "v\u{9b}2J".to_owned());
        let instance = Instance {
            instance_id: "i-1".into(),
            hostname: hostile.into(),
            attributes,
            ..Instance::default()
        };
        let task = Task {
            instance_id: "i-1".into(),
            state: Some(TaskState {
                task_id: "t-1".into(),
                family: "fam\x1b[8mhidden\x1b[0m".into(),
                stopped_reason: "line1\nline2\r".into(),
                ..TaskState::default()
            }),
            ..Task::default()
        };
        for out in [
            instances_table(std::slice::from_ref(&instance), 0),
            instance_detail(&instance, 0),
            tasks_table(std::slice::from_ref(&task)),
            task_detail(&task, 0),
        ] {
            assert!(
                !out.chars().any(|c| c != '\n' && c.is_control()),
                "a control character reaches the terminal: {out:?}"
            );
        }
        let table = instances_table(std::slice::from_ref(&instance), 0);
        assert!(table.contains("evil\\u{1b}]0;pwned-title\\u{7}"), "{table}");
        assert_eq!(table.lines().count(), 2, "{table}");
        let detail = task_detail(&task, 0);
        assert!(detail.contains("fam\\u{1b}[8mhidden"), "{detail}");
        assert!(detail.contains("line1\\u{a}line2\\u{d}"), "{detail}");
        assert!(instance_detail(&instance, 0).contains("k\\u{1b}[8m=v\\u{9b}2J"));
    }

    #[test]
    fn instance_detail_shows_registered_and_reported() {
        let i = Instance {
            instance_id: "i-1".into(),
            hostname: "vm".into(),
            reported_hostname: "evil".into(),
            registered: Some(berth_proto::v1::Resources {
                cpu: 2048,
                memory_mib: 4000,
            }),
            reported: Some(berth_proto::v1::Resources {
                cpu: 4096,
                memory_mib: 1000,
            }),
            remaining: Some(berth_proto::v1::Resources {
                cpu: 2048,
                memory_mib: 1000,
            }),
            ..Instance::default()
        };
        let out = instance_detail(&i, 0);
        assert!(
            out.contains("vm (registered; the agent reports \"evil\": MISMATCH)"),
            "{out}"
        );
        assert!(
            out.contains("2048 units registered, 4096 reported, 2048 remaining (more reported"),
            "{out}"
        );
        assert!(
            out.contains("4000 MiB registered, 1000 MiB reported, 1000 MiB remaining\n"),
            "{out}"
        );
        assert_eq!(
            usable(&i),
            berth_proto::v1::Resources {
                cpu: 2048,
                memory_mib: 1000
            }
        );
        let table = instances_table(&[i], 0);
        assert!(table.contains("2048/2048       1000/1000"), "{table}");
    }

    #[test]
    fn ago_is_coarse() {
        assert_eq!(ago(0, 10_000), "-");
        assert_eq!(ago(5_000, 10_000), "5s ago");
        assert_eq!(ago(1, 3_600_000), "59m ago");
        assert_eq!(ago(1, 3 * 86_400_000), "2d ago");
    }

    #[test]
    fn admin_certificates_show_their_state() {
        let valid = AdminCertificateRecord {
            serial_number: "0a11ce".into(),
            name: "alice".into(),
            issued_at_ms: 1_000,
            not_after_ms: 10_000,
            revoked_at_ms: 0,
        };
        let revoked = AdminCertificateRecord {
            serial_number: "0b0b".into(),
            name: "bob".into(),
            revoked_at_ms: 5_000,
            ..valid.clone()
        };
        assert_eq!(admin_cert_status(&valid, 9_999), "VALID");
        assert_eq!(admin_cert_status(&valid, 10_000), "EXPIRED");
        assert_eq!(admin_cert_status(&revoked, 6_000), "REVOKED");
        let table = admin_certs_table(&[valid, revoked], 6_000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("SERIAL  "), "{table}");
        assert!(lines[1].starts_with("0a11ce  alice  VALID"), "{table}");
        assert!(lines[1].ends_with('-'), "not revoked: {table}");
        assert!(
            lines[2].starts_with("0b0b    bob    REVOKED") && lines[2].ends_with("00:00:05.000Z"),
            "{table}"
        );
    }
}
