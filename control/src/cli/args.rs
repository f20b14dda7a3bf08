//! The clap definitions of `berth` (the `server` command's flags are in
//! `server.rs`, next to the code that reads them).

use std::path::PathBuf;
use std::time::Duration;

use berth_agent::cli_docs::{ManSections, Shell};
use clap::{Args, Parser, Subcommand};

use super::server::ServerArgs;
use crate::addr::DEFAULT_ADMIN_ADDR;

/// berth: run containers on your own servers the way Amazon ECS Anywhere does.
#[derive(Debug, Parser)]
#[command(name = "berth", version, propagate_version = true)]
pub struct Cli {
    /// Admin API of the control plane: host:port or http://host:port
    #[arg(
        long,
        global = true,
        env = "BERTH_ADDR",
        value_name = "ADDR",
        default_value = DEFAULT_ADMIN_ADDR
    )]
    pub server: String,

    /// Directory with the admin certificate (admin.crt, admin.key, ca.crt)
    /// for an admin API that is not on loopback (https://…)
    #[arg(long, global = true, env = "BERTH_ADMIN_CERT", value_name = "DIR")]
    pub admin_cert: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The parts of `man berth` that clap does not know.
pub const MAN_SECTIONS: ManSections = ManSections {
    files: &[
        (
            "/var/lib/berth-server",
            "Data of the control plane: the fleet CA, the SQLite store, server.json, secrets.key (the key of secrets at rest, 0600); mode 0700, owned by the system user berth.",
        ),
        (
            "/etc/berth/server.env",
            "BERTH_SERVER_* settings read by berth-server.service.",
        ),
        (
            "/usr/lib/systemd/system/berth-server.service",
            "The systemd unit of the control plane.",
        ),
    ],
    environment: &[(
        "RUST_LOG",
        "Log filter of berth server and berth dev (default info).",
    )],
    see_also: &["berth-agent"],
};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (fleet API for agents, admin API for this CLI)
    Server(ServerArgs),
    /// One-time activations that enroll hosts
    #[command(subcommand)]
    Token(TokenCommand),
    /// Hosts enrolled in the fleet
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Tasks: ECS task definitions placed on instances
    #[command(subcommand)]
    Task(TaskCommand),
    /// Registered task definitions: immutable revisions per family
    #[command(subcommand)]
    Taskdef(TaskdefCommand),
    /// Clusters: named groups of instances and tasks (`default` always exists)
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Services: a desired count of tasks (or one per instance) kept
    /// running, rolled out to new task definitions
    Service(ServiceArgs),
    /// Secrets for task definitions' `secrets` and `repositoryCredentials`:
    /// encrypted at rest, never shown again
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Access keys for the ECS API (`aws ecs`, boto3, AWS SDKs signing with
    /// Signature Version 4)
    #[command(subcommand)]
    AccessKey(AccessKeyCommand),
    /// Instance attributes (ECS attributes) for placement constraints and
    /// strategies: the agent's built-in and configured ones, and custom ones
    #[command(subcommand)]
    Attribute(AttributeCommand),
    /// Control plane and one agent in one process, against the local Docker Engine
    Dev(crate::dev::DevArgs),
    /// Client certificates for the admin API when it is not on loopback
    #[command(subcommand, name = "admin-cert")]
    AdminCert(AdminCertCommand),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell
    ///
    /// The packages install the scripts for bash, zsh and fish. From a source
    /// build, write the one for your shell where it looks for completions:
    ///
    /// bash: berth completions bash > ~/.local/share/bash-completion/completions/berth
    ///
    /// zsh: berth completions zsh > ~/.zfunc/_berth (with fpath+=~/.zfunc before
    /// compinit in ~/.zshrc)
    ///
    /// fish: berth completions fish > ~/.config/fish/completions/berth.fish
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCertCommand {
    /// Create an admin certificate: the key is made here and never sent;
    /// the fleet CA signs it (over the admin API, or directly with --data-dir)
    Create {
        /// Where to write admin.key (0600), admin.crt and ca.crt (created 0700)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Who the certificate is for (its common name)
        #[arg(long, value_name = "NAME", default_value = "admin")]
        name: String,
        /// How long the certificate is valid
        #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = parse_duration)]
        lifetime: Duration,
        /// Sign with the CA in this server data dir instead of asking the
        /// admin API (on the control plane host, e.g. before the first
        /// remote admin exists)
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Replace an admin certificate already in --out
        #[arg(long)]
        force: bool,
    },
    /// List the admin certificates the control plane issued (serial number,
    /// name, dates, revocation; never a key)
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke one admin certificate: the admin API refuses it from its next
    /// call on
    Revoke {
        /// Serial number, hex (as `berth admin-cert ls` shows it; ':'
        /// separators and upper case are accepted)
        #[arg(value_name = "SERIAL", value_parser = parse_serial)]
        serial: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The cluster of the service
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default", global = true)]
    pub cluster: String,
    #[command(subcommand)]
    pub command: ServiceCommand,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service (flags, or the body of `aws ecs create-service`
    /// with --cli-input-json; flags given as well win)
    Create(ServiceCreateArgs),
    /// Change a service: a new task definition or --force-new-deployment
    /// starts a rolling deployment; other flags change it in place
    Update(ServiceUpdateArgs),
    /// List the services of the cluster (ACTIVE and DRAINING)
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON (a list of DescribeServices elements)
        #[arg(long)]
        json: bool,
    },
    /// Show one service with its deployments and recent events
    Describe {
        name: String,
        /// Print JSON (the DescribeServices element)
        #[arg(long)]
        json: bool,
    },
    /// The service's events, newest first (at most 100)
    Events {
        name: String,
        /// Print JSON (`[{id, createdAt, message}]`)
        #[arg(long)]
        json: bool,
    },
    /// Delete a service: its tasks are stopped. Without --force a REPLICA
    /// service must be scaled to 0 first, as in ECS
    Delete {
        name: String,
        /// Delete even while the desired count is above 0
        #[arg(long)]
        force: bool,
        /// Print JSON (the DescribeServices element)
        #[arg(long)]
        json: bool,
    },
    /// Start a deployment back to the last completed deployment's task
    /// definition
    Rollback {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Print JSON (the DescribeServices element)
        #[arg(long)]
        json: bool,
    },
}

/// `--wait` of the service commands.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait until the service reaches a steady state; fail with the reason
    /// when its deployment fails
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
}

/// The settings `service create` and `service update` share.
#[derive(Debug, Args)]
pub struct ServiceFlags {
    /// A registered task definition (FAMILY, FAMILY:REVISION) or a task
    /// definition file (registered first, or its equal latest revision used)
    #[arg(long, value_name = "FAMILY[:REV]|FILE")]
    pub task_definition: Option<String>,
    /// REPLICA: how many tasks to keep running (0 to 5000)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub desired_count: Option<i64>,
    /// The fewest healthy tasks during a deployment, in percent of the
    /// desired count [default: REPLICA 100, DAEMON 0]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub min_healthy_percent: Option<i64>,
    /// The most tasks during a deployment, in percent of the desired count
    /// [default: REPLICA 200, DAEMON 100]
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub max_percent: Option<i64>,
    /// The deployment circuit breaker: off, enable (mark a failing
    /// deployment FAILED) or rollback (and go back to the last completed one)
    #[arg(long, value_name = "MODE", value_parser = ["off", "enable", "rollback"])]
    pub circuit_breaker: Option<String>,
    /// A placement strategy: spread:instanceId, spread:attribute:NAME,
    /// binpack:cpu, binpack:memory or random; repeat for several, in order
    #[arg(long = "placement-strategy", value_name = "TYPE[:FIELD]")]
    pub placement_strategy: Vec<String>,
    /// A placement constraint: distinctInstance or memberOf:EXPRESSION
    /// (e.g. 'memberOf:attribute:zone == rack-3'); repeat for several
    #[arg(long = "placement-constraint", value_name = "TYPE[:EXPR]")]
    pub placement_constraint: Vec<String>,
    /// Unhealthy health-check results are ignored this long after a task
    /// starts (healthCheckGracePeriodSeconds)
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub health_check_grace_period: Option<i64>,
    /// A task without a health check counts healthy after RUNNING this
    /// long [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_healthy_time: Option<Duration>,
    /// The tasks of an instance disconnected this long count as lost and
    /// are replaced elsewhere; 0 never [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lost_after: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct ServiceCreateArgs {
    /// The service name (or serviceName in --cli-input-json)
    pub name: Option<String>,
    #[command(flatten)]
    pub flags: ServiceFlags,
    /// REPLICA (a desired count) or DAEMON (one task per instance)
    #[arg(long, value_name = "STRATEGY", value_parser = ["REPLICA", "DAEMON"])]
    pub scheduling_strategy: Option<String>,
    /// The body of `aws ecs create-service` (a JSON file)
    #[arg(long, value_name = "FILE")]
    pub cli_input_json: Option<PathBuf>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Print JSON (the DescribeServices element)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServiceUpdateArgs {
    /// The service name (or service in --cli-input-json)
    pub name: Option<String>,
    #[command(flatten)]
    pub flags: ServiceFlags,
    /// Start a new deployment even with the same task definition
    #[arg(long)]
    pub force_new_deployment: bool,
    /// The body of `aws ecs update-service` (a JSON file)
    #[arg(long, value_name = "FILE")]
    pub cli_input_json: Option<PathBuf>,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Print JSON (the DescribeServices element)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster (or make a deleted one ACTIVE again); an existing
    /// one is left as it is
    Create {
        /// 1–255 letters, digits, '_' and '-'
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List clusters, deleted (INACTIVE) ones included
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one cluster with its counts
    Describe {
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a cluster: refused while it has instances that are not
    /// INACTIVE or tasks that are not STOPPED; `default` is never deleted
    Delete {
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a new secret (version 1); its value is read as bytes, exactly
    /// (a trailing newline is part of it: write the file with `printf %s`)
    Create {
        /// 1–512 letters, digits, '_', '.', '-' and '/' (SSM and Secrets
        /// Manager names)
        name: String,
        #[command(flatten)]
        source: SecretSource,
        /// Print JSON (name, version, dates)
        #[arg(long)]
        json: bool,
    },
    /// List secrets: names, versions and dates, never values
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Replace a secret's value (its version goes up by one); tasks that
    /// start from now on get the new value, running ones keep theirs
    Rotate {
        name: String,
        #[command(flatten)]
        source: SecretSource,
        /// Print JSON (name, version, dates)
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret; tasks that reference it can no longer start
    Delete { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum AccessKeyCommand {
    /// Issue an access key: prints its AccessKeyId and SecretAccessKey; the
    /// secret is shown this once and never again
    Create {
        /// A name to tell keys apart (at most 128 characters)
        #[arg(long, default_value = "")]
        name: String,
        /// Print JSON (AccessKeyId, SecretAccessKey, name, date)
        #[arg(long)]
        json: bool,
    },
    /// List access keys: ids, names, dates and whether revoked, never
    /// secrets
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Revoke an access key: requests signed with it are refused from now
    /// on, for good
    Revoke {
        /// The AccessKeyId
        id: String,
    },
}

/// Where a secret's value comes from: never the command line.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct SecretSource {
    /// Read the value from this file (at most 64 KiB)
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// Read the value from standard input (at most 64 KiB)
    #[arg(long)]
    pub from_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a one-time activation and print the `berth-agent enroll` line
    Create {
        /// How long the activation stays valid
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
        ttl: Duration,
        /// Only a host reporting this hostname may enroll with it. A guard
        /// against enrolling the wrong host by mistake, not against a leaked
        /// code: the host reports its name itself (use --from for that)
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
        /// Only a host connecting from this network may enroll with it
        /// (CIDR, IPv4 or IPv6, e.g. 10.0.3.0/24; a bare address is one
        /// host); repeat for several. The control plane checks the source
        /// address of the connection, so it must see the host's own address
        /// (not a proxy's or a NAT's)
        #[arg(long = "from", value_name = "CIDR", value_parser = parse_cidr)]
        from: Vec<crate::server::enroll::Cidr>,
        /// The cluster the host joins (it must exist: `berth cluster create`)
        #[arg(
            long,
            env = "BERTH_CLUSTER",
            value_name = "NAME",
            default_value = "default"
        )]
        cluster: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn parse_cidr(s: &str) -> Result<crate::server::enroll::Cidr, String> {
    crate::server::enroll::Cidr::parse(s)
}

/// `--cluster NAME` (env `BERTH_CLUSTER`, default `default`).
#[derive(Debug, Args)]
pub struct ClusterArg {
    /// The instance's cluster
    #[arg(
        long,
        env = "BERTH_CLUSTER",
        value_name = "NAME",
        default_value = "default"
    )]
    pub cluster: String,
}

#[derive(Debug, Subcommand)]
pub enum AttributeCommand {
    /// Put custom attributes on an instance (ECS PutAttributes): at most 10
    /// per call, 64 per instance; a name already there takes the new value.
    /// Names and values: 1 to 128 letters, digits, '_', '.', '-', '/' or
    /// ':'; names starting with "ecs." or "berth." are built in and cannot
    /// be put
    Put {
        /// Instance id (i-…)
        instance: String,
        /// The attributes, e.g. zone=rack-3
        #[arg(value_name = "NAME=VALUE", required = true)]
        attributes: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Print the instance as JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete custom attributes of an instance (ECS DeleteAttributes): only
    /// those put with `berth attribute put`; the agent's change in its
    /// config
    Delete {
        /// Instance id (i-…)
        instance: String,
        /// The attribute names
        #[arg(value_name = "NAME", required = true)]
        names: Vec<String>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Print the instance as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the attributes of the cluster's instances (ECS ListAttributes):
    /// built-in, from the agents' config, and custom ones over those
    #[command(visible_alias = "list")]
    Ls {
        /// Only the attributes of this instance
        #[arg(long, value_name = "ID")]
        instance: Option<String>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// List instances
    #[command(visible_alias = "list")]
    Ls {
        /// Only the instances of this cluster [default: every cluster]
        #[arg(long, env = "BERTH_CLUSTER", value_name = "NAME")]
        cluster: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one instance
    Describe {
        /// Instance id (i-…)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Take an instance out of the fleet: its tasks are told to stop and its
    /// certificate is no longer accepted
    Deregister {
        /// Instance id (i-…)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop placing new tasks on an instance (status DRAINING); its tasks
    /// and its agent's session go on
    Drain {
        /// Instance id (i-…)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Let placement use a drained instance again (status ACTIVE)
    Activate {
        /// Instance id (i-…)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Register the capacity the instance's agent reports (after adding
    /// cores or memory): until then placement never uses more than the
    /// capacity registered at enrollment
    AcceptCapacity {
        /// Instance id (i-…)
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Run a task from an ECS task definition file
    Run(TaskRunArgs),
    /// List tasks, newest first
    #[command(visible_alias = "list")]
    Ls {
        /// Only the tasks of this instance
        #[arg(long, value_name = "ID")]
        instance: Option<String>,
        /// Only the tasks of this cluster [default: every cluster]
        #[arg(long, env = "BERTH_CLUSTER", value_name = "NAME")]
        cluster: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one task
    Describe {
        /// Task id
        id: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Stop a task
    Stop {
        /// Task id
        id: String,
        /// Why (shown as stoppedReason) [default: Task stopped by user]
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// Wait until the task is STOPPED
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        wait_timeout: Duration,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// A registered task definition (FAMILY for the latest ACTIVE revision,
    /// or FAMILY:REVISION), or an ECS task definition file
    /// (register-task-definition input or describe-task-definition output),
    /// which is registered first: as a new revision of its family, or as
    /// the latest one when its content is equal
    #[arg(long, value_name = "FAMILY[:REV]|FILE")]
    pub task_definition: String,
    /// Run on this instance instead of letting the control plane choose
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// The cluster to run in: placement chooses among its instances
    #[arg(
        long,
        env = "BERTH_CLUSTER",
        default_value = "default",
        value_name = "NAME"
    )]
    pub cluster: String,
    /// How many tasks to start (1 to 10)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u32,
    /// A tag of who started the tasks (up to 36 letters, digits, -, / and _)
    #[arg(long, value_name = "S")]
    pub started_by: Option<String>,
    /// The task group [default: family:FAMILY]
    #[arg(long, value_name = "G")]
    pub group: Option<String>,
    /// A placement strategy (spread:instanceId, binpack:memory, random, …);
    /// repeat for several, in order
    #[arg(long = "placement-strategy", value_name = "TYPE[:FIELD]")]
    pub placement_strategy: Vec<String>,
    /// A placement constraint (distinctInstance, memberOf:EXPRESSION);
    /// repeat for several
    #[arg(long = "placement-constraint", value_name = "TYPE[:EXPR]")]
    pub placement_constraint: Vec<String>,
    /// Wait until every task is RUNNING; fail if one stops first
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TaskdefCommand {
    /// Register an ECS task definition file as the next revision of its
    /// family; prints FAMILY:REVISION
    Register {
        /// register-task-definition input or describe-task-definition output
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Print JSON (the describe-task-definition shape)
        #[arg(long)]
        json: bool,
    },
    /// List registered revisions by family, then revision
    #[command(visible_alias = "list")]
    Ls {
        /// Only this family
        #[arg(long, value_name = "F")]
        family: Option<String>,
        /// Which revisions: ACTIVE, INACTIVE or ALL
        #[arg(long, value_name = "STATUS", default_value = "ACTIVE", value_parser = ["ACTIVE", "INACTIVE", "ALL"], ignore_case = true)]
        status: String,
        /// Print JSON (the ListTaskDefinitions shape)
        #[arg(long)]
        json: bool,
    },
    /// Show one revision (FAMILY alone: the latest ACTIVE one)
    Describe {
        /// FAMILY or FAMILY:REVISION
        #[arg(value_name = "FAMILY[:REV]")]
        task_definition: String,
        /// Print JSON (the describe-task-definition shape)
        #[arg(long)]
        json: bool,
    },
    /// Mark a revision INACTIVE: running tasks keep it, nothing new may use it
    Deregister {
        /// FAMILY:REVISION
        #[arg(value_name = "FAMILY:REV")]
        task_definition: String,
        /// Print JSON (the describe-task-definition shape)
        #[arg(long)]
        json: bool,
    },
}

/// A valid serial number as typed (the control plane compares it as an
/// integer, and names it in messages as the operator wrote it).
fn parse_serial(s: &str) -> Result<String, String> {
    match crate::server::ca::normalize_serial(s) {
        Some(_) => Ok(crate::server::ca::tidy_serial(s)),
        None => Err(format!(
            "{s:?} is not a serial number: expected hex digits, as `berth admin-cert ls` shows them"
        )),
    }
}

pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 30s, 5m, 1h)"))
}

/// How `berth server` and `berth dev` write their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (no timestamps under the journal, which adds its own)
    Text,
    /// One JSON object per line
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_agent::cli_docs;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_task_run_and_refuses_bad_usage() {
        let cli = Cli::try_parse_from([
            "berth",
            "--server",
            "http://127.0.0.1:9",
            "task",
            "run",
            "--task-definition",
            "td.json",
            "--wait",
            "--wait-timeout",
            "30s",
            "--json",
        ])
        .expect("parse");
        assert_eq!(cli.server, "http://127.0.0.1:9");
        match cli.command {
            Command::Task(TaskCommand::Run(a)) => {
                assert!(a.wait && a.json);
                assert_eq!(a.wait_timeout, Duration::from_secs(30));
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = Cli::try_parse_from(["berth", "task", "run"]).expect_err("missing file");
        assert_eq!(err.exit_code(), 2);
        let cli = Cli::try_parse_from([
            "berth",
            "task",
            "run",
            "--task-definition",
            "web:3",
            "--count",
            "4",
            "--started-by",
            "job",
            "--group",
            "batch",
            "--placement-strategy",
            "spread:attribute:zone",
            "--placement-strategy",
            "binpack:memory",
            "--placement-constraint",
            "distinctInstance",
        ])
        .expect("parse");
        match cli.command {
            Command::Task(TaskCommand::Run(a)) => {
                assert_eq!(a.task_definition, "web:3");
                assert_eq!(a.count, 4);
                assert_eq!(a.started_by.as_deref(), Some("job"));
                assert_eq!(a.group.as_deref(), Some("batch"));
                assert_eq!(
                    a.placement_strategy,
                    ["spread:attribute:zone", "binpack:memory"]
                );
                assert_eq!(a.placement_constraint, ["distinctInstance"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["berth", "taskdef", "ls", "--status", "all"])
            .expect("status in any case");
        assert!(matches!(
            cli.command,
            Command::Taskdef(TaskdefCommand::Ls { status, .. }) if status.eq_ignore_ascii_case("ALL")
        ));
        let err = Cli::try_parse_from(["berth", "taskdef", "ls", "--status", "GONE"])
            .expect_err("unknown status");
        assert_eq!(err.exit_code(), 2);
    }

    /// `berth` and every visible subcommand under it, as man page names.
    #[test]
    fn completions_name_every_subcommand_and_bash_loads_them() {
        let words = [
            "server",
            "token",
            "instance",
            "task",
            "dev",
            "admin-cert",
            "completions",
            "deregister",
            "revoke",
            "task-definition",
            "wait-timeout",
            "taskdef",
            "started-by",
            "placement-strategy",
        ];
        cli_docs::check_completions(Cli::command(), &words).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn man_pages_for_every_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = cli_docs::check_man_pages(Cli::command(), dir.path(), &MAN_SECTIONS)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            dir.path().join("berth-task-run.1").is_file(),
            "no page for task run"
        );
        assert!(top.contains("/var/lib/berth\\-server"), "{top}");
    }
}
