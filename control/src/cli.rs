//! The `berth` command line: clap definitions and the commands.
//!
//! Every command but `server` is a client of the admin API. Output goes to
//! stdout (tables, or SPEC §2 JSON with `--json`); warnings and errors go
//! to stderr. Exit codes: 0 success, 1 failure, 2 bad usage (clap).

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_agent::cli_docs::{self, ManSections, Shell};
use berth_proto::json::{format_time_ms, instance_json, task_json};
use berth_proto::text::escape_control;
use berth_proto::v1::admin_client::AdminClient;
use berth_proto::v1::{
    AdminCertificateRecord, CreateAdminCertificateRequest, CreateTokenRequest, InstanceRef,
    ListAdminCertificatesRequest, ListInstancesRequest, ListTasksRequest,
    RevokeAdminCertificateRequest, RunTaskRequest, StopTaskRequest, Task, TaskRef, Token,
};
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::info;

use crate::addr::{AdminAddr, DEFAULT_ADMIN_ADDR};
use crate::server::listener::ConnectionLimits;
use crate::server::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_METRICS_LISTEN, Server,
    ServerConfig,
};
use crate::view;

/// Files of an admin certificate directory (`berth admin-cert create --out`).
pub const ADMIN_KEY_FILE: &str = "admin.key";
pub const ADMIN_CERT_FILE: &str = "admin.crt";
pub const ADMIN_CA_FILE: &str = "ca.crt";
/// Largest answer the CLI accepts from the admin API (task lists).
const CLI_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// How often `--wait` asks for the task's state.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

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
            "Data of the control plane: the fleet CA, the SQLite store, server.json; mode 0700, owned by the system user berth.",
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
pub struct ServerArgs {
    /// Where the CA, the database and server.json live (created 0700)
    #[arg(long, env = "BERTH_SERVER_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the fleet's state lives: sqlite://PATH, or postgres://USER@HOST:PORT/DATABASE
    /// (no TLS to PostgreSQL yet: keep it on loopback or a trusted network; one server at
    /// a time). Default: berth.db in the data dir
    #[arg(long, env = "BERTH_SERVER_STORE", value_name = "URL")]
    pub store: Option<crate::server::StoreLocation>,
    /// Fleet API address (agents, TLS); port 0 picks a free port
    #[arg(long, env = "BERTH_SERVER_LISTEN", value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Admin API address (this CLI): plaintext on loopback; on any other
    /// address TLS, and every call needs an admin certificate (`berth admin-cert create`)
    #[arg(long, env = "BERTH_SERVER_ADMIN_LISTEN", value_name = "ADDR", default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// Prometheus endpoint (plain HTTP, read-only, only `GET /metrics`, no
    /// secrets in it); port 0 picks a free port
    #[arg(long, env = "BERTH_SERVER_METRICS_LISTEN", value_name = "ADDR", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// HOST:PORT agents use to reach the fleet API [default: the listen IP, or this host's name, and the bound port]
    #[arg(long, env = "BERTH_SERVER_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// How often agents send heartbeats; three missed ones end a session
    #[arg(long, env = "BERTH_SERVER_HEARTBEAT_INTERVAL", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Extra name or IP for the server certificate (repeatable; comma-separated in the env variable)
    #[arg(
        long = "tls-san",
        env = "BERTH_SERVER_TLS_SAN",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_san: Vec<String>,
    /// Lifetime of agents' client certificates; agents renew at 50–80 % of it
    #[arg(long, env = "BERTH_SERVER_CERT_LIFETIME", value_name = "DURATION", default_value = "30d", value_parser = parse_duration)]
    pub cert_lifetime: Duration,
    /// Log lines on stderr: text or json
    #[arg(long, env = "BERTH_SERVER_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Most connections the fleet API holds at once, from all addresses; one
    /// more is closed at once (lowered to fit the open-file limit, with a warning)
    #[arg(long, env = "BERTH_SERVER_MAX_CONNECTIONS", value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most connections to the fleet API from one address (an IPv6 address
    /// counts by its /64); agents behind one NAT share it
    #[arg(long, env = "BERTH_SERVER_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_address: u32,
    /// A fleet or admin connection without any call in progress for this long
    /// is closed (an agent's session is a call; 1s to 24h)
    #[arg(long, env = "BERTH_SERVER_IDLE_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
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
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn parse_cidr(s: &str) -> Result<crate::server::enroll::Cidr, String> {
    crate::server::enroll::Cidr::parse(s)
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// List instances
    #[command(visible_alias = "list")]
    Ls {
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
    /// ECS task definition (register-task-definition input or describe-task-definition output)
    #[arg(long, value_name = "FILE")]
    pub task_definition: PathBuf,
    /// Run on this instance instead of letting the control plane choose
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Wait until the task is RUNNING; fail if it stops first
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 30s, 5m, 1h)"))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => server(args).await,
        Command::Token(TokenCommand::Create {
            ttl,
            hostname,
            from,
            json,
        }) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            token_create(&mut admin, ttl, hostname, &from, json).await
        }
        Command::Instance(cmd) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            instance(&mut admin, cmd).await
        }
        Command::Task(cmd) => task(&cli.server, cli.admin_cert.as_deref(), cmd).await,
        Command::AdminCert(cmd) => admin_cert(&cli.server, cli.admin_cert.as_deref(), cmd).await,
        Command::Completions { shell } => Ok(cli_docs::print_completions(Cli::command(), shell)?),
        Command::Dev(args) => {
            init_tracing(LogFormat::Text);
            let signal = shutdown_signal()?;
            crate::dev::run(args, signal).await
        }
    }
}

/// Logs to stderr, as text or JSON lines; `RUST_LOG` overrides the default
/// `info`.
fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,h2=warn"));
    berth_agent::logs::init(format == LogFormat::Json, filter);
}

/// How `berth server` and `berth dev` write their logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (no timestamps under the journal, which adds its own)
    Text,
    /// One JSON object per line
    Json,
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let cfg = ServerConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        admin_listen: args.admin_listen,
        metrics_listen: args.metrics_listen,
        advertise: args.advertise.filter(|a| !a.trim().is_empty()),
        heartbeat_interval: args.heartbeat_interval,
        cert_lifetime: args.cert_lifetime,
        tls_sans: args
            .tls_san
            .into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        connections: ConnectionLimits {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            max_per_address: usize::try_from(args.max_connections_per_address)
                .unwrap_or(usize::MAX),
            idle_timeout: args.idle_timeout,
        },
        store: args.store,
        ..ServerConfig::new(DEFAULT_DATA_DIR)
    };
    let signal = shutdown_signal()?;
    let running = Server::start(cfg).await?;
    info!(
        "berth server ready fleet={} admin={} metrics={} advertise={}",
        running.fleet_addr(),
        running.admin_addr(),
        running.metrics_addr(),
        running.advertise_addr()
    );
    running.run_until(signal).await?;
    info!("berth server stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, so that a signal arriving right after the ready line is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

/// An error and its causes, `: `-separated, leaving out causes whose text
/// is already part of the message (most messages here name their cause),
/// control characters escaped (a control plane's or an agent's message may
/// carry them).
pub fn error_report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    escape_control(&out).into_owned()
}

/// The error chain of `e`, `: `-separated, without repeats.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A connected admin client that turns gRPC errors into readable ones.
struct Admin {
    addr: AdminAddr,
    client: AdminClient<Channel>,
}

impl Admin {
    /// Connects to the admin API: plaintext for `host:port` and `http://`,
    /// TLS with the admin certificate in `admin_cert` for `https://`.
    async fn connect(addr: &str, admin_cert: Option<&Path>) -> anyhow::Result<Admin> {
        let addr = AdminAddr::parse(addr)?;
        let mut endpoint = Endpoint::from_shared(addr.uri())
            .with_context(|| format!("invalid admin address {addr}"))?
            .connect_timeout(Duration::from_secs(5));
        if addr.tls {
            let dir = admin_cert.ok_or_else(|| {
                anyhow!(
                    "the admin API at {} needs an admin certificate: pass --admin-cert DIR (or set BERTH_ADMIN_CERT); create one on the control plane host with `berth admin-cert create --out DIR`",
                    addr.uri()
                )
            })?;
            let files = AdminCertFiles::load(dir)?;
            // tonic's TLS takes rustls' process-wide provider; berth uses ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&files.ca_pem))
                .identity(Identity::from_pem(&files.cert_pem, &files.key_pem))
                .domain_name(addr.host.clone());
            endpoint = endpoint
                .tls_config(tls)
                .with_context(|| format!("cannot set up TLS for {}", addr.uri()))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let hint = if addr.tls {
                scheme_hint(&addr)
            } else {
                String::new()
            };
            anyhow!(
                "cannot reach the berth admin API at {addr}: {}{hint}",
                error_chain(&e)
            )
        })?;
        Ok(Admin {
            addr,
            client: AdminClient::new(channel)
                .max_decoding_message_size(CLI_MAX_MESSAGE)
                .max_encoding_message_size(crate::server::ADMIN_MAX_MESSAGE),
        })
    }

    fn status(&self, status: tonic::Status) -> anyhow::Error {
        use tonic::Code;
        let message = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_owned()
        };
        // A connection that failed below gRPC: TLS refused, or plaintext
        // and TLS mixed up.
        let transport = status.source().is_some()
            || message.contains("h2 protocol error")
            || message.contains("transport error");
        match status.code() {
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled if transport => {
                anyhow!(
                    "cannot reach the berth admin API at {}: {}{}",
                    self.addr,
                    error_chain(&status),
                    scheme_hint(&self.addr)
                )
            }
            _ => anyhow!(message),
        }
    }

    async fn describe_task(&mut self, id: &str) -> anyhow::Result<Task> {
        let r = self
            .client
            .describe_task(TaskRef {
                task_id: id.to_owned(),
            })
            .await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.status(s))
    }
}

/// What to try when a connection to the admin API fails: the other scheme.
fn scheme_hint(addr: &AdminAddr) -> String {
    if addr.tls {
        " (the admin API on a loopback address speaks plaintext: use http:// or host:port there; off loopback, check --admin-cert)"
            .to_owned()
    } else {
        format!(
            " (an admin API that listens off loopback speaks TLS: use https://{addr} with --admin-cert DIR)"
        )
    }
}

/// An admin certificate directory, read.
struct AdminCertFiles {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl AdminCertFiles {
    /// Reads `dir`; refuses a key readable by group or others.
    fn load(dir: &Path) -> anyhow::Result<AdminCertFiles> {
        use std::os::unix::fs::PermissionsExt;
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).with_context(|| {
                format!(
                    "cannot read {} (an admin certificate directory holds {ADMIN_CERT_FILE}, {ADMIN_KEY_FILE} and {ADMIN_CA_FILE})",
                    p.display()
                )
            })
        };
        let key_path = dir.join(ADMIN_KEY_FILE);
        if let Ok(meta) = std::fs::metadata(&key_path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by group or others (mode {:04o}): it holds a private key; run `chmod 600 {}`",
                    key_path.display(),
                    mode & 0o7777,
                    key_path.display()
                );
            }
        }
        Ok(AdminCertFiles {
            cert_pem: read(ADMIN_CERT_FILE)?,
            key_pem: read(ADMIN_KEY_FILE)?,
            ca_pem: read(ADMIN_CA_FILE)?,
        })
    }
}

/// `berth admin-cert create|ls|revoke`.
async fn admin_cert(
    server: &str,
    admin_cert: Option<&Path>,
    cmd: AdminCertCommand,
) -> anyhow::Result<()> {
    match cmd {
        AdminCertCommand::Create {
            out,
            name,
            lifetime,
            data_dir,
            force,
        } => {
            let create = AdminCertCreate {
                out,
                name,
                lifetime,
                data_dir,
                force,
            };
            admin_cert_create(server, admin_cert, create).await
        }
        AdminCertCommand::Ls { json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .list_admin_certificates(ListAdminCertificatesRequest {})
                .await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().certificates;
            let now = berth_proto::now_ms();
            if json {
                print_json(&Value::Array(
                    list.iter().map(|c| admin_cert_json(c, now)).collect(),
                ))
            } else {
                print!("{}", view::admin_certs_table(&list, now));
                Ok(())
            }
        }
        AdminCertCommand::Revoke { serial, json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .revoke_admin_certificate(RevokeAdminCertificateRequest {
                    serial_number: serial,
                })
                .await;
            let r = r.map_err(|s| admin.status(s))?.into_inner();
            let c = r
                .certificate
                .ok_or_else(|| anyhow!("the control plane answered without the certificate"))?;
            if json {
                return print_json(&admin_cert_json(&c, berth_proto::now_ms()));
            }
            let at = format_time_ms(c.revoked_at_ms).unwrap_or_else(|| "-".into());
            if r.already_revoked {
                println!(
                    "admin certificate {} of {} is already revoked (since {at})",
                    escape_control(&c.serial_number),
                    escape_control(&c.name)
                );
            } else {
                println!(
                    "admin certificate {} of {} revoked at {at}",
                    escape_control(&c.serial_number),
                    escape_control(&c.name)
                );
            }
            Ok(())
        }
    }
}

/// `berth admin-cert ls --json`: one object per certificate, no key material.
pub fn admin_cert_json(c: &AdminCertificateRecord, now_ms: i64) -> Value {
    json!({
        "serialNumber": c.serial_number,
        "name": c.name,
        "issuedAt": berth_proto::json::time_json(c.issued_at_ms),
        "notAfter": berth_proto::json::time_json(c.not_after_ms),
        "revokedAt": berth_proto::json::time_json(c.revoked_at_ms),
        "status": view::admin_cert_status(c, now_ms),
    })
}

/// The arguments of `berth admin-cert create`.
struct AdminCertCreate {
    out: PathBuf,
    name: String,
    lifetime: Duration,
    data_dir: Option<PathBuf>,
    force: bool,
}

/// `berth admin-cert create`: a key and CSR made here, signed by the fleet
/// CA (and recorded by the control plane), written to `--out`.
async fn admin_cert_create(
    server: &str,
    admin_cert: Option<&Path>,
    create: AdminCertCreate,
) -> anyhow::Result<()> {
    let AdminCertCreate {
        out,
        name,
        lifetime,
        data_dir,
        force,
    } = create;
    let name = name.trim().to_owned();
    if !crate::server::ca::valid_admin_name(&name) {
        bail!("invalid --name {name:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'");
    }
    if lifetime < Duration::from_secs(60) || lifetime > crate::server::MAX_CERT_LIFETIME {
        bail!(
            "--lifetime {} is out of range (1m to 365 days)",
            humantime::format_duration(lifetime)
        );
    }
    let key_path = out.join(ADMIN_KEY_FILE);
    if key_path.exists() && !force {
        bail!(
            "{} already holds an admin certificate; use --force to replace it",
            out.display()
        );
    }
    let key = rcgen::KeyPair::generate().map_err(|e| anyhow!("cannot create a key: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.clone());
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| anyhow!("cannot create a certificate signing request: {e}"))?;
    let (cert_pem, ca_pem, not_after_ms, serial) = match data_dir {
        Some(dir) => {
            let lifetime =
                time::Duration::try_from(lifetime).map_err(|e| anyhow!("--lifetime: {e}"))?;
            let signer = name.clone();
            let (issued, ca_pem) = tokio::task::spawn_blocking(move || {
                crate::server::admin::issue_admin_cert_offline(&dir, &csr_pem, &signer, lifetime)
            })
            .await
            .map_err(|e| anyhow!("cannot sign with the fleet CA: {e}"))??;
            let not_after_ms = issued.not_after_ms();
            (issued.pem, ca_pem, not_after_ms, issued.serial)
        }
        None => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .create_admin_certificate(CreateAdminCertificateRequest {
                    csr_pem,
                    name: name.clone(),
                    lifetime_seconds: lifetime.as_secs(),
                })
                .await;
            let c = r.map_err(|s| admin.status(s))?.into_inner();
            (c.certificate_pem, c.ca_pem, c.not_after_ms, c.serial_number)
        }
    };
    let write = |file: &str, data: &[u8], mode: u32| {
        let p = out.join(file);
        crate::server::fsutil::write_atomic(&p, data, mode)
            .with_context(|| format!("cannot write {}", p.display()))
    };
    let open = crate::server::fsutil::create_private_dir(&out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    if open {
        eprintln!(
            "warning: {} is accessible to group or others; it should be mode 0700",
            out.display()
        );
    }
    write(ADMIN_KEY_FILE, key.serialize_pem().as_bytes(), 0o600)?;
    write(ADMIN_CERT_FILE, cert_pem.as_bytes(), 0o644)?;
    write(ADMIN_CA_FILE, ca_pem.as_bytes(), 0o644)?;
    let expires = format_time_ms(not_after_ms).unwrap_or_else(|| "-".into());
    println!(
        "admin certificate for {name} written to {} (serial number {serial}, expires {expires})",
        out.display()
    );
    println!(
        "use it with: berth --server https://HOST:7421 --admin-cert {} …",
        out.display()
    );
    Ok(())
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn task_value(t: &Task) -> Value {
    task_json(
        &t.instance_id,
        &t.state.clone().unwrap_or_default(),
        t.last_seen_at_ms,
    )
}

fn task_id(t: &Task) -> String {
    t.state
        .as_ref()
        .map(|s| s.task_id.clone())
        .unwrap_or_default()
}

/// The exact command that enrolls a host with this token.
pub fn enroll_command(token: &Token) -> anyhow::Result<String> {
    let fleet = token
        .fleet_addresses
        .first()
        .ok_or_else(|| anyhow!("the control plane advertises no fleet address"))?;
    Ok(format!(
        "berth-agent enroll --server https://{fleet} --activation-id {} --activation-code {} --ca-hash sha256:{}",
        token.activation_id, token.activation_code, token.ca_sha256
    ))
}

/// `berth token create --json`.
pub fn token_json(token: &Token) -> anyhow::Result<Value> {
    Ok(json!({
        "activationId": token.activation_id,
        "activationCode": token.activation_code,
        "expiresAt": berth_proto::json::time_json(token.expires_at_ms),
        "caHash": format!("sha256:{}", token.ca_sha256),
        "hostname": (!token.hostname.is_empty()).then_some(&token.hostname),
        "from": (!token.source_cidrs.is_empty()).then_some(&token.source_cidrs),
        "enrollCommand": enroll_command(token)?,
    }))
}

async fn token_create(
    admin: &mut Admin,
    ttl: Duration,
    hostname: Option<String>,
    from: &[crate::server::enroll::Cidr],
    json: bool,
) -> anyhow::Result<()> {
    if ttl < Duration::from_secs(1) {
        bail!("--ttl must be at least 1s");
    }
    if from.len() > crate::server::enroll::MAX_SOURCE_CIDRS {
        bail!(
            "--from given {} times: an activation takes at most {} networks",
            from.len(),
            crate::server::enroll::MAX_SOURCE_CIDRS
        );
    }
    let r = admin
        .client
        .create_token(CreateTokenRequest {
            ttl_seconds: ttl.as_secs(),
            hostname: hostname.unwrap_or_default(),
            source_cidrs: from.iter().map(ToString::to_string).collect(),
        })
        .await;
    let token = r.map_err(|s| admin.status(s))?.into_inner();
    if json {
        return print_json(&token_json(&token)?);
    }
    let expires = format_time_ms(token.expires_at_ms).unwrap_or_else(|| "-".into());
    println!("Activation ID:   {}", escape_control(&token.activation_id));
    println!(
        "Activation code: {}",
        escape_control(&token.activation_code)
    );
    println!(
        "Expires at:      {expires} (in {})",
        humantime::format_duration(Duration::from_secs(ttl.as_secs()))
    );
    if !token.hostname.is_empty() {
        println!("Only for host:   {}", escape_control(&token.hostname));
    }
    if !token.source_cidrs.is_empty() {
        println!(
            "Only from:       {}",
            escape_control(&token.source_cidrs.join(", "))
        );
    }
    println!();
    println!("Enroll a host by running this on it (the code works once):");
    println!();
    println!("{}", escape_control(&enroll_command(&token)?));
    Ok(())
}

async fn instance(admin: &mut Admin, cmd: InstanceCommand) -> anyhow::Result<()> {
    let now = berth_proto::now_ms();
    match cmd {
        InstanceCommand::Ls { json } => {
            let r = admin.client.list_instances(ListInstancesRequest {}).await;
            let list = r.map_err(|s| admin.status(s))?.into_inner().instances;
            if json {
                print_json(&Value::Array(list.iter().map(instance_json).collect()))
            } else {
                print!("{}", view::instances_table(&list, now));
                Ok(())
            }
        }
        InstanceCommand::Describe { id, json } => {
            let r = admin
                .client
                .describe_instance(InstanceRef { instance_id: id })
                .await;
            let i = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&instance_json(&i))
            } else {
                print!("{}", view::instance_detail(&i, now));
                Ok(())
            }
        }
        InstanceCommand::Deregister { id, json } => {
            let r = admin
                .client
                .deregister_instance(InstanceRef { instance_id: id })
                .await;
            let i = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&instance_json(&i))
            } else {
                println!("instance {} deregistered", escape_control(&i.instance_id));
                Ok(())
            }
        }
        InstanceCommand::AcceptCapacity { id, json } => {
            let r = admin
                .client
                .accept_instance_capacity(InstanceRef { instance_id: id })
                .await;
            let i = r.map_err(|s| admin.status(s))?.into_inner();
            if json {
                print_json(&instance_json(&i))
            } else {
                let reg = i.registered.unwrap_or_default();
                println!(
                    "instance {} registered with {} CPU units and {} MiB",
                    i.instance_id, reg.cpu, reg.memory_mib
                );
                Ok(())
            }
        }
    }
}

async fn task(server: &str, admin_cert: Option<&Path>, cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::Run(args) => task_run(server, admin_cert, args).await,
        TaskCommand::Ls { instance, json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .list_tasks(ListTasksRequest {
                    instance_id: instance.unwrap_or_default(),
                })
                .await;
            let tasks = r.map_err(|s| admin.status(s))?.into_inner().tasks;
            if json {
                print_json(&Value::Array(tasks.iter().map(task_value).collect()))
            } else {
                print!("{}", view::tasks_table(&tasks));
                Ok(())
            }
        }
        TaskCommand::Describe { id, json } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let t = admin.describe_task(&id).await?;
            if json {
                print_json(&task_value(&t))
            } else {
                print!("{}", view::task_detail(&t, berth_proto::now_ms()));
                Ok(())
            }
        }
        TaskCommand::Stop {
            id,
            reason,
            wait,
            wait_timeout,
            json,
        } => {
            let mut admin = Admin::connect(server, admin_cert).await?;
            let r = admin
                .client
                .stop_task(StopTaskRequest {
                    task_id: id,
                    reason: reason.unwrap_or_default(),
                })
                .await;
            let mut t = r.map_err(|s| admin.status(s))?.into_inner();
            let id = task_id(&t);
            if wait {
                t = wait_for(&mut admin, &id, Target::Stopped, wait_timeout).await?;
            }
            if json {
                print_json(&task_value(&t))
            } else {
                println!("{}", escape_control(&id));
                Ok(())
            }
        }
    }
}

async fn task_run(
    server: &str,
    admin_cert: Option<&Path>,
    args: TaskRunArgs,
) -> anyhow::Result<()> {
    let path = &args.task_definition;
    let definition = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read task definition {}", path.display()))?;
    let parsed =
        berth_taskdef::parse(&definition).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for w in &parsed.warnings {
        eprintln!("warning: {}: {w}", path.display());
    }
    let mut admin = Admin::connect(server, admin_cert).await?;
    let r = admin
        .client
        .run_task(RunTaskRequest {
            task_definition_json: definition,
            instance_id: args.instance.unwrap_or_default(),
        })
        .await;
    let mut t = r.map_err(|s| admin.status(s))?.into_inner();
    let id = task_id(&t);
    if !args.json {
        println!("{}", escape_control(&id));
    }
    if args.wait {
        t = wait_for(&mut admin, &id, Target::Running, args.wait_timeout).await?;
    }
    if args.json {
        print_json(&task_value(&t))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Running,
    Stopped,
}

/// Polls the task until it reaches `target`. Waiting for RUNNING fails as
/// soon as the task is STOPPED, with its stop code and reason.
async fn wait_for(
    admin: &mut Admin,
    id: &str,
    target: Target,
    timeout: Duration,
) -> anyhow::Result<Task> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t = admin.describe_task(id).await?;
        let state = t.state.clone().unwrap_or_default();
        match (target, state.last_status.as_str()) {
            (Target::Running, "RUNNING") | (Target::Stopped, "STOPPED") => return Ok(t),
            (Target::Running, "STOPPED") => {
                let or = |s: &str, d: &str| {
                    if s.is_empty() {
                        d.to_owned()
                    } else {
                        s.to_owned()
                    }
                };
                bail!(
                    "task {id} stopped: {}: {}",
                    or(&state.stop_code, "no stop code"),
                    or(&state.stopped_reason, "no reason given")
                );
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let want = match target {
                Target::Running => "RUNNING",
                Target::Stopped => "STOPPED",
            };
            bail!(
                "timed out after {} waiting for task {id} to be {want} (last status {})",
                humantime::format_duration(timeout),
                if state.last_status.is_empty() {
                    "unknown"
                } else {
                    &state.last_status
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_spec_commands() {
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
        let cli = Cli::try_parse_from([
            "berth",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--tls-san",
            "a",
            "--tls-san",
            "b",
        ])
        .expect("parse");
        match cli.command {
            Command::Server(a) => {
                assert_eq!(a.tls_san, ["a", "b"]);
                assert_eq!(a.heartbeat_interval, Duration::from_secs(10));
                assert_eq!(a.cert_lifetime, crate::server::DEFAULT_CERT_LIFETIME);
                assert_eq!(a.admin_listen.to_string(), "127.0.0.1:7421");
                assert_eq!(a.metrics_listen.to_string(), "127.0.0.1:7422");
                // The flags' defaults are the library's.
                let limits = ConnectionLimits::default();
                assert_eq!(a.max_connections as usize, limits.max_connections);
                assert_eq!(
                    a.max_connections_per_address as usize,
                    limits.max_per_address
                );
                assert_eq!(a.idle_timeout, limits.idle_timeout);
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = Cli::try_parse_from(["berth", "task", "run"]).expect_err("missing file");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn error_reports_do_not_repeat_causes() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(crate::server::ServerError::StateFile {
            path: "/x/server.json".into(),
            source: io,
        });
        assert_eq!(
            error_report(&e),
            "cannot write /x/server.json: disk on fire"
        );
        let e = anyhow!("inner").context("outer");
        assert_eq!(error_report(&e), "outer: inner");
        // A message from the control plane carrying escape sequences.
        let e = anyhow!("no task \x1b[2J\x1b]0;title\x07").context("describe");
        assert_eq!(
            error_report(&e),
            "describe: no task \\u{1b}[2J\\u{1b}]0;title\\u{7}"
        );
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

    #[test]
    fn enroll_line() {
        let t = Token {
            activation_id: "id1".into(),
            activation_code: "code1".into(),
            expires_at_ms: 1_700_000_000_000,
            ca_sha256: "ab".into(),
            fleet_addresses: vec!["berth.example:7420".into()],
            hostname: String::new(),
            source_cidrs: vec!["10.9.0.0/24".into()],
        };
        assert_eq!(
            enroll_command(&t).expect("line"),
            "berth-agent enroll --server https://berth.example:7420 --activation-id id1 --activation-code code1 --ca-hash sha256:ab"
        );
        let v = token_json(&t).expect("json");
        assert_eq!(v["expiresAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["caHash"], "sha256:ab");
        assert_eq!(v["from"], json!(["10.9.0.0/24"]));
    }
}
