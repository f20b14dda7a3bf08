//! `berth server`: the control plane in this process, and its flags (each
//! with its `BERTH_SERVER_*` variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tracing::info;

use super::args::{LogFormat, parse_duration};
use super::{init_tracing, shutdown_signal};
use crate::server::listener::ConnectionLimits;
use crate::server::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_DATA_DIR, DEFAULT_ECS_API_LISTEN, DEFAULT_LISTEN,
    DEFAULT_METRICS_LISTEN, Server, ServerConfig,
};

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
    /// ECS API (`aws ecs --endpoint-url`, boto3; requests signed with a
    /// `berth access-key`): plain HTTP, loopback only for now (HTTPS off
    /// loopback is not there yet); port 0 picks a free port
    #[arg(long, env = "BERTH_SERVER_ECS_API_LISTEN", value_name = "ADDR", default_value = DEFAULT_ECS_API_LISTEN)]
    pub ecs_api_listen: SocketAddr,
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
    /// The key of secrets at rest (32 bytes, or 64 hex digits; mode 0600 or
    /// stricter); default `<data-dir>/secrets.key`, created at the first
    /// `berth secret create`
    #[arg(long, env = "BERTH_SERVER_SECRETS_KEY_FILE", value_name = "FILE")]
    pub secrets_key_file: Option<PathBuf>,
}

pub(super) async fn server(args: ServerArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let cfg = ServerConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        admin_listen: args.admin_listen,
        metrics_listen: args.metrics_listen,
        ecs_api_listen: args.ecs_api_listen,
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
        secrets_key_file: args.secrets_key_file,
        ..ServerConfig::new(DEFAULT_DATA_DIR)
    };
    let signal = shutdown_signal()?;
    let running = Server::start(cfg).await?;
    info!(
        "berth server ready fleet={} admin={} metrics={} ecs-api={} advertise={}",
        running.fleet_addr(),
        running.admin_addr(),
        running.metrics_addr(),
        running.ecs_api_addr(),
        running.advertise_addr()
    );
    running.run_until(signal).await?;
    info!("berth server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn server_flags_and_their_defaults() {
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
                assert_eq!(a.ecs_api_listen.to_string(), "127.0.0.1:7423");
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
    }
}
