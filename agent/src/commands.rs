//! The bodies of `berth-agent run` and `berth-agent enroll` (`status` is
//! [`crate::status`]); `main.rs` holds the clap definitions and dispatches
//! here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_proto::text::escape_control;

use crate::config::Config;
use crate::runtime::docker::DockerRuntime;

/// `berth-agent run`: loads `config`, starts the agent on the local Docker
/// Engine, tells systemd it is ready, feeds the watchdog while the manager
/// answers, and on SIGTERM or SIGINT stops the agent (never its containers).
pub async fn run(config: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(config)?;
    init_logs(&cfg.log_format);
    // Password files and the Docker config are read (and checked)
    // now: a bad one stops the agent before it runs anything.
    let credentials = cfg.registry_credentials(config)?;
    let docker = DockerRuntime::connect(cfg.docker_socket.as_deref())
        .await?
        .with_credentials(credentials.into_docker());
    let agent = crate::start(&cfg, Arc::new(docker)).await?;
    // State loaded and the local API serving: ready for systemd.
    crate::notify::ready();
    // Feeds systemd's watchdog while the manager answers.
    crate::notify::until_signal(|| agent.status_line(Duration::from_secs(5))).await?;
    crate::notify::stopping();
    tracing::info!("shutting down; containers keep running");
    agent.shutdown().await;
    Ok(())
}

/// What `berth-agent enroll` was given besides the config path.
#[derive(Debug, Clone)]
pub struct EnrollArgs {
    /// Fleet address of the control plane, `https://host:7420`.
    pub server: String,
    pub activation_id: String,
    pub activation_code: String,
    /// `sha256:<hex>` of the fleet CA.
    pub ca_hash: Option<String>,
    pub insecure_skip_ca_pin: bool,
    /// Enroll again even if this host already is.
    pub force: bool,
}

/// `berth-agent enroll`: enrolls this host with a one-time activation and
/// writes the server into `config`.
pub async fn enroll(config: &Path, args: &EnrollArgs) -> anyhow::Result<()> {
    let server = args.server.as_str();
    // Checked before anything else: a line without the pin is wrong
    // whether or not this host is enrolled.
    let pin = crate::identity::CaPin::from_args(args.ca_hash.as_deref(), args.insecure_skip_ca_pin)
        .map_err(anyhow::Error::msg)?;
    let cfg = Config::load(config)?;
    if let Some(existing) = crate::identity::enrolled(&cfg.data_dir)?
        && !args.force
    {
        println!(
            "this host is already enrolled as {} with {}; use --force to enroll again",
            escape_control(&existing.instance_id),
            escape_control(&existing.server)
        );
        return Ok(());
    }
    if pin == crate::identity::CaPin::SkipInsecure {
        eprintln!(
            "warning: --insecure-skip-ca-pin: trusting whatever CA {server} presents; the activation code is sent to whoever answers there"
        );
    }
    let id = crate::identity::enroll(
        &cfg.data_dir,
        server,
        &args.activation_id,
        &args.activation_code,
        &pin,
    )
    .await?;
    Config::write_server(config, server)?;
    println!(
        "enrolled as {} with {}; start the agent with `systemctl start berth-agent` or `berth-agent run --config {}`",
        escape_control(&id.instance_id),
        server,
        config.display()
    );
    Ok(())
}

fn init_logs(format: &str) {
    // bollard logs request bodies (container environments) at debug: keep it
    // at info whatever BERTH_LOG says, so no secret reaches the logs.
    let directives = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{directives},bollard=info,h2=info,hyper=info"
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    crate::logs::init(format == "json", filter);
}
