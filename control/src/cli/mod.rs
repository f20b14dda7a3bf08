//! The `berth` command line: clap definitions and the commands.
//!
//! Every command but `server` is a client of the admin API. Output goes to
//! stdout (tables, or with `--json` the ECS-shaped objects of
//! `berth_proto::json`); warnings and errors go to stderr. Exit codes: 0
//! success, 1 failure, 2 bad usage (clap).
//!
//! | module | what it holds |
//! |---|---|
//! | `args` | the clap definitions of every command but `server` |
//! | `client` | `Admin`, the admin API client, and the error reports |
//! | `server` | `berth server`: its flags and the embedded control plane |
//! | `admin_cert`, `token`, `instance`, `task`, `taskdef`, `cluster`, `attribute`, `secret` | one handler per command |

mod access_key;
mod admin_cert;
mod args;
mod attribute;
mod client;
mod cluster;
mod instance;
mod secret;
mod server;
mod service;
mod task;
mod taskdef;
mod token;

use anyhow::Context;
use berth_agent::cli_docs;
use clap::CommandFactory;
use serde_json::Value;
use tracing::info;

pub use admin_cert::{ADMIN_CA_FILE, ADMIN_CERT_FILE, ADMIN_KEY_FILE, admin_cert_json};
pub use args::{
    AdminCertCommand, AttributeCommand, Cli, ClusterCommand, Command, InstanceCommand, LogFormat,
    MAN_SECTIONS, TaskCommand, TaskRunArgs, TaskdefCommand, TokenCommand,
};
pub use client::error_report;
pub use server::ServerArgs;
pub use token::{enroll_command, token_json};

use access_key::access_key;
use admin_cert::admin_cert;
use attribute::attribute;
use client::Admin;
use cluster::cluster;
use instance::instance;
use secret::secret;
use server::server;
use service::service;
use task::task;
use taskdef::taskdef;
use token::token_create;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Server(args) => server(args).await,
        Command::Token(TokenCommand::Create {
            ttl,
            hostname,
            from,
            cluster,
            json,
        }) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            token_create(&mut admin, ttl, hostname, &from, &cluster, json).await
        }
        Command::Instance(cmd) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            instance(&mut admin, cmd).await
        }
        Command::Cluster(cmd) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            cluster(&mut admin, cmd).await
        }
        Command::Service(args) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            service(&mut admin, args).await
        }
        Command::Secret(cmd) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            secret(&mut admin, cmd).await
        }
        Command::AccessKey(cmd) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            access_key(&mut admin, cmd).await
        }
        Command::Attribute(cmd) => {
            // Bad input is refused before anything is sent.
            let cmd = attribute::checked(cmd)?;
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            attribute(&mut admin, cmd).await
        }
        Command::Task(cmd) => task(&cli.server, cli.admin_cert.as_deref(), cmd).await,
        Command::Taskdef(cmd) => {
            let mut admin = Admin::connect(&cli.server, cli.admin_cert.as_deref()).await?;
            taskdef(&mut admin, cmd).await
        }
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

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
