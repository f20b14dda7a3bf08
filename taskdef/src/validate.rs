//! ECS' rules for task definitions, and berth's refusals.
//!
//! [`check`] walks the whole definition and collects every problem (errors
//! and warnings) with its JSON path relative to the task definition object;
//! nothing stops at the first problem. The rules and their ECS sources are
//! listed in `COMPATIBILITY.md` beside this crate.

use crate::MAX_CONTAINERS;
use crate::error::{Problem, TaskDefError};
use crate::model::NetworkMode;
use crate::path::{index, key};
use crate::types::{ContainerDefinition, TaskDefinition};
use crate::units;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Task-level cpu accepted by ECS for EC2 and external instances, units.
pub const TASK_CPU_RANGE: (u64, u64) = (128, 196_608);
/// Docker's minimum memory for a container (and so a task), MiB.
pub const MIN_MEMORY_MIB: u64 = 6;
/// `stopTimeout` maximum, seconds (ECS).
pub const MAX_STOP_TIMEOUT: u64 = 120;
/// `startTimeout` range, seconds (ECS' minimum; berth's maximum).
pub const START_TIMEOUT_RANGE: (u64, u64) = (2, 600);
/// `restartPolicy.restartAttemptPeriod` range, seconds. ECS requires
/// 60–1800; berth also accepts less, down to 0.
pub const RESTART_ATTEMPT_PERIOD_RANGE: (u64, u64) = (0, 1800);
/// `restartPolicy.ignoredExitCodes` maximum length (ECS).
pub const MAX_IGNORED_EXIT_CODES: usize = 50;

const NAME_RULE: &str = "must be 1 to 255 letters, digits, hyphens or underscores";

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `linuxParameters.capabilities` values accepted by ECS.
const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// `logConfiguration.logDriver` values accepted by ECS.
const LOG_DRIVERS: &[&str] = &[
    "json-file",
    "syslog",
    "journald",
    "gelf",
    "fluentd",
    "awslogs",
    "splunk",
    "awsfirelens",
];

/// `linuxParameters.tmpfs[].mountOptions` accepted by ECS (the part before `=`).
const TMPFS_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// Kernel IPC sysctls that Docker sets per container (besides `fs.mqueue.*`).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Everything [`check`] found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl Report {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem::new(path, message));
    }
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }
    fn range(&mut self, path: String, v: Option<u64>, (lo, hi): (u64, u64), unit: &str) {
        if let Some(x) = v
            && (x < lo || x > hi)
        {
            self.err(
                path,
                format!("must be between {lo} and {hi}{unit}, got {x}"),
            );
        }
    }
    fn refuse(&mut self, path: String, v: &Option<Value>, why: &str) {
        if is_present(v) {
            self.err(path, format!("not supported by berth: {why}"));
        }
    }
}

/// Validates a task definition by ECS' rules and berth's limits.
///
/// Returns the warnings (fields that are accepted but ignored, as
/// `path: message`), or every problem found. Paths are relative to the task
/// definition object (`containerDefinitions[0].image`).
pub fn validate(def: &TaskDefinition) -> Result<Vec<String>, TaskDefError> {
    let report = check(def);
    if report.errors.is_empty() {
        Ok(report.warnings.iter().map(ToString::to_string).collect())
    } else {
        Err(TaskDefError::capped(report.errors, false))
    }
}

/// A value that says something: not absent, `null`, `""`, `[]` or `{}`.
/// Tools that export task definitions write empty values for fields nobody
/// set; those are not refused.
fn is_present(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// ECS' name rule: `[A-Za-z0-9_-]{1,255}`.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `s`, cut to at most `max` characters (marked with `…`), so that a huge
/// value from the input does not flood a message.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// A user's string as shown in a message: quoted, escaped, and cut to 64
/// characters.
fn q(s: &str) -> String {
    format!("{:?}", shorten(s, 64))
}

fn is_absolute(p: &str) -> bool {
    p.starts_with('/')
}

/// What the per-container rules need to know about the task.
struct Task<'a> {
    def: &'a TaskDefinition,
    mode: NetworkMode,
    task_cpu: Option<u64>,
    /// First index of each container name.
    containers: HashMap<&'a str, usize>,
    volumes: HashSet<&'a str>,
}

/// Task-wide state of the per-container rules.
#[derive(Default)]
struct Seen {
    /// (host port, protocol) → path of the mapping that took it.
    host_ports: HashMap<(u16, String), String>,
    /// port mapping `name` → path of the mapping.
    port_names: HashMap<String, String>,
}

/// Runs every rule; see the module docs.
pub(crate) fn check(def: &TaskDefinition) -> Report {
    let mut r = Report::default();
    let mode = check_task_fields(def, &mut r);
    let task_cpu = check_task_cpu(def, &mut r);
    let task_memory = check_task_memory(def, &mut r);
    let volumes = check_volumes(def, &mut r);
    let containers = check_container_list(def, &mut r);

    let task = Task {
        def,
        mode,
        task_cpu,
        containers,
        volumes,
    };
    let mut seen = Seen::default();
    for (i, c) in def.container_definitions.iter().enumerate() {
        check_container(&task, i, c, &mut seen, &mut r);
    }
    check_sums(def, task_cpu, task_memory, &mut r);
    check_cycles(&task, &mut r);
    check_aws_services(def, &mut r);
    r
}

/// The registry host of an image reference (`host[:port]/…`), if it names
/// one: the first component, when it has a `.` or `:` or is `localhost`.
fn registry_of(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// A private Amazon ECR registry: `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.
pub(crate) fn is_ecr_registry(host: &str) -> bool {
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let Some(rest) = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))
    else {
        return false;
    };
    let mut labels = rest.split('.');
    let account = labels.next().unwrap_or_default();
    account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && labels.next() == Some("dkr")
        && matches!(labels.next(), Some("ecr" | "ecr-fips"))
        && labels.next().is_some_and(|region| !region.is_empty())
        && labels.next().is_none()
}

/// Warnings, once per definition, about what needs AWS off AWS: the
/// awslogs log driver and images in private Amazon ECR registries.
fn check_aws_services(def: &TaskDefinition, r: &mut Report) {
    let awslogs: Vec<String> = def
        .container_definitions
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.log_configuration
                .as_ref()
                .is_some_and(|l| l.log_driver == "awslogs")
        })
        .map(|(i, _)| {
            key(
                &key(&index("containerDefinitions", i), "logConfiguration"),
                "logDriver",
            )
        })
        .collect();
    if let Some((first, rest)) = awslogs.split_first() {
        let also = if rest.is_empty() {
            String::new()
        } else {
            format!("; also {}", rest.join(", "))
        };
        r.warn(
            first.clone(),
            format!("awslogs sends the logs to Amazon CloudWatch Logs: the Docker daemon of every host that runs this task needs AWS credentials of its own for it, since berth gives it none{also}"),
        );
    }
    let mut registries: Vec<&str> = Vec::new();
    for (i, c) in def.container_definitions.iter().enumerate() {
        let Some(host) = registry_of(&c.image).filter(|h| is_ecr_registry(h)) else {
            continue;
        };
        let has_credentials = c
            .repository_credentials
            .as_ref()
            .is_some_and(|rc| rc.credentials_parameter.is_some());
        if has_credentials || registries.contains(&host) {
            continue;
        }
        registries.push(host);
        r.warn(
            key(&index("containerDefinitions", i), "image"),
            format!("{host_q} is an Amazon ECR registry, and berth cannot fetch ECR tokens: supply the registry's credentials with `repositoryCredentials` (a berth secret holding {{\"username\", \"password\"}}) or in the Docker config of every host (`docker login` there, or the agent's `docker_config` and `[registries]`); ECR passwords expire after 12 hours", host_q = q(host)),
        );
    }
}

fn check_task_fields(def: &TaskDefinition, r: &mut Report) -> NetworkMode {
    if !is_name(&def.family) {
        r.err("family", format!("{NAME_RULE}, got {}", q(&def.family)));
    }
    let mode = match def.network_mode.as_deref() {
        None => NetworkMode::Bridge,
        Some(s) => match NetworkMode::from_ecs(s) {
            Some(m) => m,
            None if s == "awsvpc" => {
                r.err(
                    "networkMode",
                    "not supported by berth: awsvpc gives each task an AWS elastic network interface, which exists only on AWS; use bridge (the default), host or none",
                );
                NetworkMode::Bridge
            }
            None => {
                r.err(
                    "networkMode",
                    format!(
                        "must be bridge (the default), host or none, got {s_q}",
                        s_q = q(s)
                    ),
                );
                NetworkMode::Bridge
            }
        },
    };
    match def.pid_mode.as_deref() {
        None | Some("host") | Some("task") => {}
        Some(o) => r.err(
            "pidMode",
            format!("must be host or task, got {o_q}", o_q = q(o)),
        ),
    }
    match def.ipc_mode.as_deref() {
        None | Some("host") | Some("none") | Some("task") => {}
        Some(o) => r.err(
            "ipcMode",
            format!("must be host, task or none, got {o_q}", o_q = q(o)),
        ),
    }
    if let Some(rp) = &def.runtime_platform {
        check_runtime_platform(rp, r);
    }
    if !def.placement_constraints.is_empty() {
        r.warn(
            "placementConstraints",
            "ignored: berth does not place tasks by constraints yet",
        );
    }
    if is_present(&def.task_role_arn) {
        r.warn(
            "taskRoleArn",
            "ignored: berth has no IAM roles, so containers get no AWS credentials from it",
        );
    }
    if is_present(&def.execution_role_arn) {
        r.warn(
            "executionRoleArn",
            "ignored: berth has no IAM roles; registry credentials come from the agent's config",
        );
    }
    r.refuse(
        "proxyConfiguration".into(),
        &def.proxy_configuration,
        "an App Mesh proxy configuration needs the ECS-managed proxy, which exists only on AWS",
    );
    r.refuse(
        "inferenceAccelerators".into(),
        &def.inference_accelerators,
        "Amazon Elastic Inference accelerators exist only on AWS",
    );
    r.refuse(
        "trustedExecutionConfiguration".into(),
        &def.trusted_execution_configuration,
        "trusted execution (isolated and confidential sandboxes) exists only on Amazon ECS Managed Instances",
    );
    r.refuse(
        "ephemeralStorage".into(),
        &def.ephemeral_storage,
        "ephemeral storage is a Fargate setting; on berth containers use the host's disk",
    );
    mode
}

fn check_runtime_platform(v: &Value, r: &mut Report) {
    let Value::Object(m) = v else {
        if !v.is_null() {
            r.err("runtimePlatform", "expected an object");
        }
        return;
    };
    for (k, val) in m {
        let p = key("runtimePlatform", k);
        match (k.as_str(), val.as_str()) {
            ("operatingSystemFamily", Some("LINUX")) => {}
            ("operatingSystemFamily", Some(o)) => r.err(
                p,
                format!(
                    "not supported by berth: berth runs LINUX containers only, got {o_q}",
                    o_q = q(o)
                ),
            ),
            ("cpuArchitecture", Some("X86_64" | "ARM64")) => {}
            ("cpuArchitecture", Some(o)) => {
                r.err(p, format!("must be X86_64 or ARM64, got {o_q}", o_q = q(o)));
            }
            ("operatingSystemFamily" | "cpuArchitecture", None) => {
                r.err(p, "expected a string");
            }
            (other, _) => {
                let close =
                    crate::parse::suggestion(other, &["cpuArchitecture", "operatingSystemFamily"]);
                r.err(
                    p,
                    crate::parse::unknown_field_message(other, close, "RuntimePlatform"),
                );
            }
        }
    }
}

fn check_task_cpu(def: &TaskDefinition, r: &mut Report) -> Option<u64> {
    let v = def.cpu.as_ref()?;
    match units::parse_cpu(v) {
        Ok(u) if u >= TASK_CPU_RANGE.0 && u <= TASK_CPU_RANGE.1 => Some(u),
        Ok(u) => {
            r.err(
                "cpu",
                format!(
                    "must be between {} and {} cpu units (0.125 to 192 vCPU), got {u}",
                    TASK_CPU_RANGE.0, TASK_CPU_RANGE.1
                ),
            );
            None
        }
        Err(m) => {
            r.err("cpu", m);
            None
        }
    }
}

fn check_task_memory(def: &TaskDefinition, r: &mut Report) -> Option<u64> {
    let v = def.memory.as_ref()?;
    match units::parse_memory(v) {
        Ok(m) if m >= MIN_MEMORY_MIB => Some(m),
        Ok(m) => {
            r.err(
                "memory",
                format!("must be at least {MIN_MEMORY_MIB} MiB, got {m}"),
            );
            None
        }
        Err(m) => {
            r.err("memory", m);
            None
        }
    }
}

fn check_volumes<'a>(def: &'a TaskDefinition, r: &mut Report) -> HashSet<&'a str> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, v) in def.volumes.iter().enumerate() {
        let p = index("volumes", i);
        if !is_name(&v.name) {
            r.err(key(&p, "name"), format!("{NAME_RULE}, got {}", q(&v.name)));
        } else if let Some(j) = names.get(v.name.as_str()) {
            r.err(
                key(&p, "name"),
                format!("duplicate volume name {} (also volumes[{j}])", q(&v.name)),
            );
        } else {
            names.insert(&v.name, i);
        }
        if v.host.is_some() && v.docker_volume_configuration.is_some() {
            r.err(
                p.clone(),
                "a volume has either `host` or `dockerVolumeConfiguration`, not both",
            );
        }
        if let Some(src) = v.host.as_ref().and_then(|h| h.source_path.as_deref())
            && !is_absolute(src)
        {
            r.err(
                key(&key(&p, "host"), "sourcePath"),
                format!("must be an absolute path, got {src_q}", src_q = q(src)),
            );
        }
        if let Some(d) = &v.docker_volume_configuration {
            let dp = key(&p, "dockerVolumeConfiguration");
            let scope = d.scope.as_deref().unwrap_or("task");
            if !matches!(scope, "task" | "shared") {
                r.err(
                    key(&dp, "scope"),
                    format!("must be task or shared, got {scope_q}", scope_q = q(scope)),
                );
            }
            if d.autoprovision == Some(true) && scope != "shared" {
                r.err(
                    key(&dp, "autoprovision"),
                    "only allowed with scope shared (a task-scoped volume is always created)",
                );
            }
            if d.driver.as_deref() == Some("") {
                r.err(key(&dp, "driver"), "must not be empty");
            }
            if scope == "shared" && v.name.starts_with("berth-") {
                r.err(
                    key(&p, "name"),
                    "a shared volume is the Docker volume of that name, and berth- names are berth's own task volumes; pick a name without the berth- prefix",
                );
            }
            for k in d.labels.keys().filter(|k| k.starts_with("berth.")) {
                r.err(
                    key(&key(&dp, "labels"), k),
                    "label names starting with `berth.` are reserved for the labels the agent sets",
                );
            }
        }
        r.refuse(
            key(&p, "efsVolumeConfiguration"),
            &v.efs_volume_configuration,
            "Amazon EFS volumes exist only on AWS; mount the file system on the host and use a host volume",
        );
        r.refuse(
            key(&p, "s3filesVolumeConfiguration"),
            &v.s3files_volume_configuration,
            "Amazon S3 Files volumes exist only on AWS; mount the file system on the host and use a host volume",
        );
        r.refuse(
            key(&p, "fsxWindowsFileServerVolumeConfiguration"),
            &v.fsx_windows_file_server_volume_configuration,
            "Amazon FSx for Windows File Server volumes exist only on AWS",
        );
        if v.configured_at_launch == Some(true) {
            r.err(
                key(&p, "configuredAtLaunch"),
                "not supported by berth: volumes configured at launch are Amazon EBS volumes that ECS attaches",
            );
        }
    }
    names.into_keys().collect()
}

fn check_container_list<'a>(def: &'a TaskDefinition, r: &mut Report) -> HashMap<&'a str, usize> {
    let n = def.container_definitions.len();
    if n == 0 {
        r.err(
            "containerDefinitions",
            "at least one container definition is required",
        );
    } else if n > MAX_CONTAINERS {
        r.err(
            "containerDefinitions",
            format!(
                "at most {MAX_CONTAINERS} container definitions are allowed (ECS' limit), got {n}"
            ),
        );
    }
    if n > 0 && !def.container_definitions.iter().any(|c| c.is_essential()) {
        r.err(
            "containerDefinitions",
            "at least one container must be essential (`essential` defaults to true)",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, c) in def.container_definitions.iter().enumerate() {
        let p = key(&index("containerDefinitions", i), "name");
        if !is_name(&c.name) {
            r.err(p, format!("{NAME_RULE}, got {}", q(&c.name)));
        } else if let Some(j) = names.get(c.name.as_str()) {
            r.err(
                p,
                format!(
                    "duplicate container name {} (also containerDefinitions[{j}])",
                    q(&c.name)
                ),
            );
        } else {
            names.insert(&c.name, i);
        }
    }
    names
}

fn check_sums(
    def: &TaskDefinition,
    task_cpu: Option<u64>,
    task_memory: Option<u64>,
    r: &mut Report,
) {
    let cs = &def.container_definitions;
    if let Some(tm) = task_memory {
        let hard = cs
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.memory.unwrap_or(0)));
        let soft = cs.iter().fold(0u64, |a, c| {
            a.saturating_add(c.memory_reservation.or(c.memory).unwrap_or(0))
        });
        if hard > tm {
            r.err(
                "memory",
                format!(
                    "the containers' memory adds up to {hard} MiB, more than the task's {tm} MiB"
                ),
            );
        } else if soft > tm {
            r.err(
                "memory",
                format!("the containers' memoryReservation adds up to {soft} MiB, more than the task's {tm} MiB"),
            );
        }
    }
    if let Some(tc) = task_cpu {
        let any_single = cs.iter().any(|c| c.cpu.is_some_and(|x| x > tc));
        let sum = cs
            .iter()
            .fold(0u64, |a, c| a.saturating_add(c.cpu.unwrap_or(0)));
        if sum > tc && !any_single {
            r.err(
                "cpu",
                format!("the containers' cpu adds up to {sum} units, more than the task's {tc}"),
            );
        }
    }
}

fn check_container(
    t: &Task<'_>,
    i: usize,
    c: &ContainerDefinition,
    seen: &mut Seen,
    r: &mut Report,
) {
    let p = index("containerDefinitions", i);
    let at = |k: &str| key(&p, k);

    // image
    if c.image.is_empty() {
        r.err(at("image"), "must not be empty");
    } else if c.image.len() > 255 {
        r.err(
            at("image"),
            format!("must have at most 255 characters, has {}", c.image.len()),
        );
    }
    if c.image
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        r.err(
            at("image"),
            format!("must not contain whitespace, got {}", q(&c.image)),
        );
    }

    // resources
    if t.def.memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
        r.err(
            at("memory"),
            "`memory` or `memoryReservation` is required when the task has no task-level `memory`",
        );
    }
    for (field, v) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(m) = v.filter(|m| *m < MIN_MEMORY_MIB) {
            r.err(
                at(field),
                format!("must be at least {MIN_MEMORY_MIB} MiB (docker's minimum), got {m}"),
            );
        }
    }
    if let (Some(hard), Some(soft)) = (c.memory, c.memory_reservation)
        && soft > hard
    {
        r.err(
            at("memoryReservation"),
            format!("must not exceed `memory` ({hard} MiB), got {soft}"),
        );
    }
    if let (Some(cpu), Some(tc)) = (c.cpu, t.task_cpu)
        && cpu > tc
    {
        r.err(
            at("cpu"),
            format!("must not exceed the task's cpu ({tc} units), got {cpu}"),
        );
    }

    // timeouts and restarts
    if let Some(s) = c.stop_timeout.filter(|s| *s > MAX_STOP_TIMEOUT) {
        r.err(
            at("stopTimeout"),
            format!("must be at most {MAX_STOP_TIMEOUT} seconds, got {s}"),
        );
    }
    r.range(
        at("startTimeout"),
        c.start_timeout,
        START_TIMEOUT_RANGE,
        " seconds",
    );
    if let Some(rp) = &c.restart_policy {
        let rp_path = at("restartPolicy");
        r.range(
            key(&rp_path, "restartAttemptPeriod"),
            rp.restart_attempt_period,
            RESTART_ATTEMPT_PERIOD_RANGE,
            " seconds",
        );
        if rp.ignored_exit_codes.len() > MAX_IGNORED_EXIT_CODES {
            r.err(
                key(&rp_path, "ignoredExitCodes"),
                format!(
                    "must have at most {MAX_IGNORED_EXIT_CODES} entries, has {}",
                    rp.ignored_exit_codes.len()
                ),
            );
        }
    }

    check_environment(&at("environment"), c, r);
    check_ports(t, &at("portMappings"), c, seen, r);
    check_depends_on(t, i, &at("dependsOn"), c, r);
    if let Some(h) = &c.health_check {
        check_health_check(&at("healthCheck"), h, r);
    }
    check_mounts(t, i, &p, c, r);
    check_networking(t, i, &p, c, r);
    check_limits(&p, c, r);
    if let Some(lp) = &c.linux_parameters {
        check_linux_parameters(&at("linuxParameters"), lp, r);
    }
    check_system_controls(t, &at("systemControls"), c, r);
    check_logging(&at("logConfiguration"), c, r);

    // labels and process
    for k in c.docker_labels.keys() {
        let lp = key(&at("dockerLabels"), k);
        if k.is_empty() {
            r.err(lp, "label names must not be empty");
        } else if k.starts_with("berth.") {
            r.err(
                lp,
                "label names starting with `berth.` are reserved for the labels the agent sets",
            );
        }
    }
    if let Some(w) = c.working_directory.as_deref().filter(|w| !is_absolute(w)) {
        r.err(
            at("workingDirectory"),
            format!("must be an absolute path, got {w_q}", w_q = q(w)),
        );
    }
    for (k, o) in c.docker_security_options.iter().enumerate() {
        let op = index(&at("dockerSecurityOptions"), k);
        if o.is_empty() {
            r.err(op, "must not be empty");
        } else if o.starts_with("credentialspec:") {
            r.err(
                op,
                "not supported by berth: credential specs (Active Directory gMSA) are a Windows feature",
            );
        }
    }
    match &c.version_consistency {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "enabled" || s == "disabled" => {}
        Some(other) => r.err(
            at("versionConsistency"),
            format!(
                "must be \"enabled\" or \"disabled\", got {}",
                shorten(&other.to_string(), 64)
            ),
        ),
    }

    check_repository_credentials(&at("repositoryCredentials"), c, r);

    // refused off AWS
    r.refuse(
        at("environmentFiles"),
        &c.environment_files,
        "environment files are read from Amazon S3; pass values in `environment` instead",
    );
    r.refuse(
        at("firelensConfiguration"),
        &c.firelens_configuration,
        "FireLens is an AWS log router integration; use logConfiguration with fluentd instead",
    );
    check_resource_requirements(&at("resourceRequirements"), c, r);
    r.refuse(
        at("credentialSpecs"),
        &c.credential_specs,
        "credential specs (Active Directory gMSA) are not supported",
    );
}

/// The most GPUs one container may ask for.
pub const MAX_GPUS: u32 = 64;

/// `resourceRequirements`: at most one `GPU` entry with a count from 1 to
/// [`MAX_GPUS`]; `InferenceAccelerator` needs AWS.
fn check_resource_requirements(base: &str, c: &ContainerDefinition, r: &mut Report) {
    let mut gpus = 0;
    for (k, req) in c.resource_requirements.iter().enumerate() {
        let p = index(base, k);
        r.refuse(
            format!("{p}.sharingStrategy"),
            &req.sharing_strategy,
            "GPU sharing (NVIDIA MPS) is not supported; each GPU task gets whole devices",
        );
        match req.kind.as_str() {
            "GPU" => {
                gpus += 1;
                if gpus > 1 {
                    r.err(format!("{p}.type"), "GPU is given twice: give one count");
                }
                match req.value.trim().parse::<u32>() {
                    Ok(n) if (1..=MAX_GPUS).contains(&n) => {}
                    _ => r.err(
                        format!("{p}.value"),
                        format!(
                            "{v_q} is not a GPU count: expected a whole number from 1 to {MAX_GPUS}",
                            v_q = q(&shorten(&req.value, 32))
                        ),
                    ),
                }
            }
            "InferenceAccelerator" => r.err(
                format!("{p}.type"),
                "not supported by berth: inference accelerators are Amazon Elastic Inference's",
            ),
            other => r.err(
                format!("{p}.type"),
                format!(
                    "must be GPU or InferenceAccelerator, got {o_q}",
                    o_q = q(&shorten(other, 32))
                ),
            ),
        }
    }
}

fn check_environment(base: &str, c: &ContainerDefinition, r: &mut Report) {
    // Environment variables and secrets share one name space: the path of
    // the first entry of each name.
    let mut names: HashMap<&str, String> = HashMap::new();
    for (k, e) in c.environment.iter().enumerate() {
        let ep = index(base, k);
        check_env_name(&mut names, &ep, &e.name, r);
        if e.value.contains('\0') {
            r.err(key(&ep, "value"), "must not contain NUL");
        }
    }
    let secrets_base = format!(
        "{}secrets",
        base.strip_suffix("environment").unwrap_or(base)
    );
    for (k, s) in c.secrets.iter().enumerate() {
        let ep = index(&secrets_base, k);
        check_env_name(&mut names, &ep, &s.name, r);
        if let Err(e) = crate::secrets::secret_reference(&s.value_from) {
            r.err(key(&ep, "valueFrom"), e);
        }
    }
}

/// An environment variable's name (of `environment[]` or `secrets[]` at
/// `ep`): not empty, no `=` or NUL, not taken by an earlier entry.
fn check_env_name<'a>(
    names: &mut HashMap<&'a str, String>,
    ep: &str,
    name: &'a str,
    r: &mut Report,
) {
    let np = key(ep, "name");
    if name.is_empty() {
        r.err(np, "must not be empty");
    } else if name.contains('=') || name.contains('\0') {
        r.err(np, format!("must not contain `=` or NUL, got {}", q(name)));
    } else if let Some(other) = names.get(name) {
        r.err(
            np,
            format!("duplicate environment variable {} (also {other})", q(name)),
        );
    } else {
        let short = ep.rsplit_once('.').map_or(ep, |(_, s)| s);
        names.insert(name, short.to_owned());
    }
}

fn check_repository_credentials(base: &str, c: &ContainerDefinition, r: &mut Report) {
    let Some(p) = c
        .repository_credentials
        .as_ref()
        .and_then(|rc| rc.credentials_parameter.as_deref())
    else {
        return;
    };
    let pp = key(base, "credentialsParameter");
    match crate::secrets::secret_reference(p) {
        Err(e) => r.err(pp, e),
        Ok(s) if s.json_key.is_some() => r.err(
            pp,
            "the whole secret is the credentials, {\"username\": …, \"password\": …}: leave JSON-KEY empty",
        ),
        Ok(_) => {}
    }
}

fn check_ports(t: &Task<'_>, base: &str, c: &ContainerDefinition, seen: &mut Seen, r: &mut Report) {
    if c.port_mappings.is_empty() {
        return;
    }
    if t.mode == NetworkMode::None {
        r.err(
            base,
            "port mappings need network mode bridge or host; this task's network mode is none",
        );
        return;
    }
    let mut own: HashMap<(u16, &str), usize> = HashMap::new();
    for (j, m) in c.port_mappings.iter().enumerate() {
        let mp = index(base, j);
        let proto = m.protocol.as_deref().unwrap_or("tcp");
        if !matches!(proto, "tcp" | "udp") {
            r.err(
                key(&mp, "protocol"),
                format!("must be tcp or udp, got {proto_q}", proto_q = q(proto)),
            );
        }
        if let Some(a) = m.app_protocol.as_deref()
            && !matches!(a, "http" | "http2" | "grpc")
        {
            r.err(
                key(&mp, "appProtocol"),
                format!("must be http, http2 or grpc, got {a_q}", a_q = q(a)),
            );
        }
        if let Some(n) = m.name.as_deref() {
            if n.is_empty() {
                r.err(key(&mp, "name"), "must not be empty");
            } else if let Some(prev) = seen.port_names.get(n) {
                r.err(
                    key(&mp, "name"),
                    format!(
                        "duplicate port mapping name {n_q} (also {prev})",
                        n_q = q(n)
                    ),
                );
            } else {
                seen.port_names.insert(n.to_owned(), mp.clone());
            }
        }
        if m.container_port_range
            .as_deref()
            .is_some_and(|s| !s.is_empty())
        {
            r.err(
                key(&mp, "containerPortRange"),
                "not supported by berth yet: map each port with `containerPort`",
            );
            continue;
        }
        let cp = match m.container_port {
            None => {
                r.err(key(&mp, "containerPort"), "required field is missing");
                continue;
            }
            Some(0) => {
                r.err(
                    key(&mp, "containerPort"),
                    "must be between 1 and 65535, got 0",
                );
                continue;
            }
            Some(cp) => cp,
        };
        if t.mode == NetworkMode::Host
            && let Some(h) = m.host_port.filter(|h| *h != cp)
        {
            r.err(
                    key(&mp, "hostPort"),
                    format!("with network mode host, hostPort must equal containerPort ({cp}) or be left out, got {h}"),
                );
        }
        if let Some(k) = own.get(&(cp, proto)) {
            r.err(
                key(&mp, "containerPort"),
                format!("container port {cp}/{proto} is mapped twice (also portMappings[{k}])"),
            );
            continue;
        }
        own.insert((cp, proto), j);
        let (host, host_path) = if t.mode == NetworkMode::Host {
            let field = if m.host_port.is_some() {
                "hostPort"
            } else {
                "containerPort"
            };
            (Some(cp), key(&mp, field))
        } else {
            (m.host_port.filter(|h| *h != 0), key(&mp, "hostPort"))
        };
        if let Some(h) = host {
            let slot = (h, proto.to_owned());
            if let Some(prev) = seen.host_ports.get(&slot) {
                r.err(
                    host_path,
                    format!("host port {h}/{proto} is already mapped by {prev}"),
                );
            } else {
                seen.host_ports.insert(slot, mp);
            }
        }
    }
}

fn check_depends_on(t: &Task<'_>, i: usize, base: &str, c: &ContainerDefinition, r: &mut Report) {
    let mut targets: HashMap<&str, usize> = HashMap::new();
    for (k, d) in c.depends_on.iter().enumerate() {
        let dp = index(base, k);
        let cond = d.condition.as_str();
        if !matches!(cond, "START" | "COMPLETE" | "SUCCESS" | "HEALTHY") {
            r.err(
                key(&dp, "condition"),
                format!(
                    "must be START, COMPLETE, SUCCESS or HEALTHY, got {cond_q}",
                    cond_q = q(cond)
                ),
            );
        }
        let name = d.container_name.as_str();
        let Some(&ti) = t.containers.get(name) else {
            r.err(
                key(&dp, "containerName"),
                format!(
                    "no container named {name_q} in this task definition",
                    name_q = q(name)
                ),
            );
            continue;
        };
        if ti == i {
            r.err(
                key(&dp, "containerName"),
                "a container cannot depend on itself",
            );
            continue;
        }
        if let Some(prev) = targets.get(name) {
            r.err(
                key(&dp, "containerName"),
                format!(
                    "container {name_q} is listed twice (also dependsOn[{prev}])",
                    name_q = q(name)
                ),
            );
        } else {
            targets.insert(name, k);
        }
        let Some(target) = t.def.container_definitions.get(ti) else {
            continue;
        };
        match cond {
            "HEALTHY" if target.health_check.is_none() => r.err(
                key(&dp, "condition"),
                format!("HEALTHY needs container {name_q} to have a healthCheck", name_q = q(name)),
            ),
            "COMPLETE" | "SUCCESS" if target.is_essential() => r.err(
                key(&dp, "condition"),
                format!("{cond} cannot wait for essential container {name_q}: the task stops when an essential container exits (mark it \"essential\": false)", name_q = q(name)),
            ),
            _ => {}
        }
    }
}

fn check_health_check(base: &str, h: &crate::types::HealthCheck, r: &mut Report) {
    let cp = key(base, "command");
    match h.command.split_first() {
        None => r.err(
            cp,
            "must not be empty: use [\"CMD\", \"executable\", ...] or [\"CMD-SHELL\", \"shell command\"]",
        ),
        Some((first, rest)) => match first.as_str() {
            "CMD" => {
                if rest.first().is_none_or(|s| s.is_empty()) {
                    r.err(cp, "CMD needs the executable to run as the next element");
                }
            }
            "CMD-SHELL" => {
                if rest.len() != 1 {
                    r.err(
                        cp,
                        format!("CMD-SHELL takes exactly one more element, the shell command, got {}", rest.len()),
                    );
                } else if rest.first().is_some_and(|s| s.trim().is_empty()) {
                    r.err(index(&cp, 1), "the shell command must not be empty");
                }
            }
            other => r.err(
                index(&cp, 0),
                format!("must be CMD or CMD-SHELL, got {other_q}", other_q = q(other)),
            ),
        },
    }
    r.range(key(base, "interval"), h.interval, (5, 300), " seconds");
    r.range(key(base, "timeout"), h.timeout, (2, 60), " seconds");
    r.range(key(base, "retries"), h.retries, (1, 10), "");
    r.range(
        key(base, "startPeriod"),
        h.start_period,
        (0, 300),
        " seconds",
    );
}

fn check_mounts(t: &Task<'_>, i: usize, p: &str, c: &ContainerDefinition, r: &mut Report) {
    let base = key(p, "mountPoints");
    let mut paths: HashMap<&str, usize> = HashMap::new();
    for (k, m) in c.mount_points.iter().enumerate() {
        let mp = index(&base, k);
        if !t.volumes.contains(m.source_volume.as_str()) {
            r.err(
                key(&mp, "sourceVolume"),
                format!(
                    "no volume named {} in the task's volumes",
                    q(&m.source_volume)
                ),
            );
        }
        if !is_absolute(&m.container_path) {
            r.err(
                key(&mp, "containerPath"),
                format!("must be an absolute path, got {}", q(&m.container_path)),
            );
        } else if let Some(prev) = paths.get(m.container_path.as_str()) {
            r.err(
                key(&mp, "containerPath"),
                format!(
                    "{} is mounted twice (also mountPoints[{prev}])",
                    q(&m.container_path)
                ),
            );
        } else {
            paths.insert(&m.container_path, k);
        }
    }
    let base = key(p, "volumesFrom");
    for (k, v) in c.volumes_from.iter().enumerate() {
        let vp = key(&index(&base, k), "sourceContainer");
        match t.containers.get(v.source_container.as_str()) {
            None => r.err(
                vp,
                format!(
                    "no container named {} in this task definition",
                    q(&v.source_container)
                ),
            ),
            Some(&j) if j == i => r.err(vp, "a container cannot take volumes from itself"),
            Some(_) => {}
        }
    }
}

/// `name` or `name:alias` of a link.
fn link_target(link: &str) -> (&str, Option<&str>) {
    match link.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (link, None),
    }
}

fn check_networking(t: &Task<'_>, i: usize, p: &str, c: &ContainerDefinition, r: &mut Report) {
    let base = key(p, "links");
    if !c.links.is_empty() && t.mode != NetworkMode::Bridge {
        r.err(
            base.clone(),
            format!(
                "links need network mode bridge; this task's network mode is {}",
                t.mode.as_str()
            ),
        );
    }
    for (k, l) in c.links.iter().enumerate() {
        let lp = index(&base, k);
        let (name, alias) = link_target(l);
        if alias.is_some_and(|a| !is_name(a)) {
            r.err(
                lp.clone(),
                format!("the alias after `:` {NAME_RULE}, got {l_q}", l_q = q(l)),
            );
        }
        match t.containers.get(name) {
            None => r.err(
                lp,
                format!(
                    "no container named {name_q} in this task definition",
                    name_q = q(name)
                ),
            ),
            Some(&j) if j == i => r.err(lp, "a container cannot link to itself"),
            Some(_) => {}
        }
    }
    if c.hostname.is_some() && t.mode == NetworkMode::Host {
        r.err(
            key(p, "hostname"),
            "not allowed with network mode host: the container has the host's hostname",
        );
    }
    for (k, e) in c.extra_hosts.iter().enumerate() {
        let ep = index(&key(p, "extraHosts"), k);
        if e.hostname.is_empty() || e.hostname.chars().any(char::is_whitespace) {
            r.err(
                key(&ep, "hostname"),
                format!(
                    "must be a host name without whitespace, got {}",
                    q(&e.hostname)
                ),
            );
        }
        if e.ip_address.parse::<IpAddr>().is_err() {
            r.err(
                key(&ep, "ipAddress"),
                format!("not an IP address: {}", q(&e.ip_address)),
            );
        }
    }
    for (k, d) in c.dns_servers.iter().enumerate() {
        if d.parse::<IpAddr>().is_err() {
            r.err(
                index(&key(p, "dnsServers"), k),
                format!("not an IP address: {d_q}", d_q = q(d)),
            );
        }
    }
    for (k, d) in c.dns_search_domains.iter().enumerate() {
        if d.is_empty() || d.chars().any(char::is_whitespace) {
            r.err(
                index(&key(p, "dnsSearchDomains"), k),
                format!(
                    "must be a domain name without whitespace, got {d_q}",
                    d_q = q(d)
                ),
            );
        }
    }
}

fn check_limits(p: &str, c: &ContainerDefinition, r: &mut Report) {
    let base = key(p, "ulimits");
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (k, u) in c.ulimits.iter().enumerate() {
        let up = index(&base, k);
        if !ULIMITS.contains(&u.name.as_str()) {
            r.err(
                key(&up, "name"),
                format!(
                    "unknown ulimit {}; the names are {}",
                    q(&u.name),
                    ULIMITS.join(", ")
                ),
            );
        } else if let Some(prev) = names.get(u.name.as_str()) {
            r.err(
                key(&up, "name"),
                format!("ulimit {} is set twice (also ulimits[{prev}])", q(&u.name)),
            );
        } else {
            names.insert(&u.name, k);
        }
        let mut ok = true;
        for (field, v) in [("softLimit", u.soft_limit), ("hardLimit", u.hard_limit)] {
            if v < -1 {
                ok = false;
                r.err(
                    key(&up, field),
                    format!("must be -1 (unlimited) or more, got {v}"),
                );
            }
        }
        // -1 is unlimited.
        let lim = |v: i64| if v == -1 { i64::MAX } else { v };
        if ok && lim(u.soft_limit) > lim(u.hard_limit) {
            r.err(
                key(&up, "softLimit"),
                format!(
                    "must not exceed hardLimit ({}), got {}",
                    u.hard_limit, u.soft_limit
                ),
            );
        }
    }
}

fn check_linux_parameters(base: &str, lp: &crate::types::LinuxParameters, r: &mut Report) {
    if let Some(caps) = &lp.capabilities {
        let cp = key(base, "capabilities");
        for (field, list) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (k, cap) in list.iter().enumerate() {
                if !CAPABILITIES.contains(&cap.as_str()) {
                    let hint = if cap.starts_with("CAP_") {
                        " (write it without the CAP_ prefix)"
                    } else {
                        ""
                    };
                    r.err(
                        index(&key(&cp, field), k),
                        format!("unknown capability {cap_q}{hint}", cap_q = q(cap)),
                    );
                }
            }
        }
    }
    for (k, d) in lp.devices.iter().enumerate() {
        let dp = index(&key(base, "devices"), k);
        if !is_absolute(&d.host_path) {
            r.err(
                key(&dp, "hostPath"),
                format!("must be an absolute path, got {}", q(&d.host_path)),
            );
        }
        if let Some(cp) = d.container_path.as_deref().filter(|cp| !is_absolute(cp)) {
            r.err(
                key(&dp, "containerPath"),
                format!("must be an absolute path, got {cp_q}", cp_q = q(cp)),
            );
        }
        for (j, perm) in d.permissions.iter().enumerate() {
            if !matches!(perm.as_str(), "read" | "write" | "mknod") {
                r.err(
                    index(&key(&dp, "permissions"), j),
                    format!(
                        "must be read, write or mknod, got {perm_q}",
                        perm_q = q(perm)
                    ),
                );
            }
        }
    }
    if lp.shared_memory_size == Some(0) {
        r.err(key(base, "sharedMemorySize"), "must be more than 0 MiB");
    }
    for (k, t) in lp.tmpfs.iter().enumerate() {
        let tp = index(&key(base, "tmpfs"), k);
        if !is_absolute(&t.container_path) {
            r.err(
                key(&tp, "containerPath"),
                format!("must be an absolute path, got {}", q(&t.container_path)),
            );
        }
        if t.size == 0 {
            r.err(key(&tp, "size"), "must be more than 0 MiB");
        }
        for (j, o) in t.mount_options.iter().enumerate() {
            let name = o.split_once('=').map_or(o.as_str(), |(n, _)| n);
            if !TMPFS_OPTIONS.contains(&name) {
                r.err(
                    index(&key(&tp, "mountOptions"), j),
                    format!("unknown tmpfs mount option {o_q}", o_q = q(o)),
                );
            }
        }
    }
    if let Some(s) = lp.max_swap.filter(|s| *s < 0) {
        r.err(
            key(base, "maxSwap"),
            format!("must be 0 or more (MiB), got {s}"),
        );
    }
    if let Some(s) = lp.swappiness.filter(|s| !(0..=100).contains(s)) {
        r.err(
            key(base, "swappiness"),
            format!("must be between 0 and 100, got {s}"),
        );
    }
}

fn check_system_controls(t: &Task<'_>, base: &str, c: &ContainerDefinition, r: &mut Report) {
    let ipc_host = t.def.ipc_mode.as_deref() == Some("host");
    for (k, s) in c.system_controls.iter().enumerate() {
        let np = key(&index(base, k), "namespace");
        let ns = s.namespace.as_str();
        if ns.is_empty() {
            r.err(np, "must not be empty");
        } else if ns.starts_with("net.") {
            if t.mode == NetworkMode::Host {
                r.err(
                    np,
                    format!("{ns_q} cannot be set with network mode host: it would change the host's network settings", ns_q = q(ns)),
                );
            }
        } else if IPC_SYSCTLS.contains(&ns) || ns.starts_with("fs.mqueue.") {
            if ipc_host {
                r.err(
                    np,
                    format!("{ns_q} cannot be set with ipcMode host: it would change the host's ipc settings", ns_q = q(ns)),
                );
            }
        } else {
            r.err(
                np,
                format!("{ns_q} cannot be set per container; docker allows net.*, fs.mqueue.* and the kernel ipc settings (kernel.msg*, kernel.sem, kernel.shm*)", ns_q = q(ns)),
            );
        }
    }
}

fn check_logging(base: &str, c: &ContainerDefinition, r: &mut Report) {
    let Some(l) = &c.log_configuration else {
        return;
    };
    let dp = key(base, "logDriver");
    match l.log_driver.as_str() {
        "awsfirelens" => r.err(
            dp,
            "not supported by berth: awsfirelens needs a FireLens log router (see firelensConfiguration); use fluentd, json-file, journald, syslog, gelf, splunk or awslogs",
        ),
        // Warned once for the whole definition, in check_aws_services.
        "awslogs" => {}
        d if LOG_DRIVERS.contains(&d) => {}
        d => r.err(
            dp,
            format!("unknown log driver {d_q}; ECS allows {}", LOG_DRIVERS.join(", "), d_q = q(d)),
        ),
    }
    r.refuse(
        key(base, "secretOptions"),
        &l.secret_options,
        "secret options come from AWS Secrets Manager or SSM Parameter Store; put the values in `options`",
    );
}

/// Start-order edges: `dependsOn`, `links` and `volumesFrom` each make a
/// container wait for another. A cycle can never start.
fn check_cycles(t: &Task<'_>, r: &mut Report) {
    let cs = &t.def.container_definitions;
    let n = cs.len();
    // More containers than ECS allows is already an error; the search below
    // recurses once per container, so keep it small.
    if n > MAX_CONTAINERS {
        return;
    }
    let mut edges: Vec<Vec<(usize, String)>> = vec![Vec::new(); n];
    for (i, (c, out)) in cs.iter().zip(edges.iter_mut()).enumerate() {
        let p = index("containerDefinitions", i);
        let mut add = |name: &str, path: String| {
            if let Some(&j) = t.containers.get(name)
                && j != i
            {
                out.push((j, path));
            }
        };
        for (k, d) in c.depends_on.iter().enumerate() {
            add(&d.container_name, index(&key(&p, "dependsOn"), k));
        }
        for (k, l) in c.links.iter().enumerate() {
            add(link_target(l).0, index(&key(&p, "links"), k));
        }
        for (k, v) in c.volumes_from.iter().enumerate() {
            add(&v.source_container, index(&key(&p, "volumesFrom"), k));
        }
    }
    let mut state = Dfs {
        edges: &edges,
        color: vec![Color::White; n],
        stack: Vec::new(),
        cycles: Vec::new(),
    };
    for u in 0..n {
        if state.color.get(u) == Some(&Color::White) {
            state.visit(u);
        }
    }
    for (path, cycle) in state.cycles {
        let names: Vec<&str> = cycle
            .iter()
            .filter_map(|&j| cs.get(j).map(|c| c.name.as_str()))
            .collect();
        r.err(
            path,
            format!(
                "dependency cycle: {} (each waits for the next through dependsOn, links or volumesFrom)",
                names.join(" -> ")
            ),
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Color {
    White,
    Grey,
    Black,
}

struct Dfs<'a> {
    edges: &'a [Vec<(usize, String)>],
    color: Vec<Color>,
    stack: Vec<usize>,
    /// (path of the edge that closes the cycle, the containers in order with
    /// the first repeated at the end).
    cycles: Vec<(String, Vec<usize>)>,
}

impl Dfs<'_> {
    fn visit(&mut self, u: usize) {
        if let Some(c) = self.color.get_mut(u) {
            *c = Color::Grey;
        }
        self.stack.push(u);
        let edges = self.edges;
        for (v, path) in edges.get(u).map(Vec::as_slice).unwrap_or_default() {
            match self.color.get(*v) {
                Some(Color::White) => self.visit(*v),
                Some(Color::Grey) => {
                    if let Some(pos) = self.stack.iter().position(|x| x == v) {
                        let mut cycle = self.stack.get(pos..).unwrap_or_default().to_vec();
                        cycle.push(*v);
                        self.cycles.push((path.clone(), cycle));
                    }
                }
                _ => {}
            }
        }
        self.stack.pop();
        if let Some(c) = self.color.get_mut(u) {
            *c = Color::Black;
        }
    }
}
