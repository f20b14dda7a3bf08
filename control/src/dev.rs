//! `berth dev`: the control plane and one agent in one process, against the
//! local Docker Engine — for a first try and for demos.
//!
//! The server keeps its data in `--data-dir` (so `server.json` there names
//! the admin address), the agent in `<data-dir>/agent`. The agent enrolls
//! in-process on first start; later starts reuse its identity, so tasks from
//! an earlier run are found again by label and adopted, not duplicated.
//! Ctrl-C stops berth; like any agent stop, it leaves containers running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use berth_agent::config::Config as AgentConfig;
use berth_agent::runtime::docker::DockerRuntime;
use berth_proto::v1::RunTaskRequest;
use berth_proto::v1::admin_client::AdminClient;
use clap::Args;
use tracing::info;

use crate::server::{Server, ServerConfig};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the control plane and the agent keep their state
    #[arg(
        long,
        env = "BERTH_DEV_DATA_DIR",
        value_name = "DIR",
        default_value = "./berth-dev"
    )]
    pub data_dir: PathBuf,
    /// Submit this ECS task definition once the agent is connected
    #[arg(long, value_name = "FILE")]
    pub run: Option<PathBuf>,
    /// Admin API address for the CLI (loopback only)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7421")]
    pub admin_listen: SocketAddr,
    /// Fleet API address; port 0 picks a free port
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

pub async fn run(
    args: DevArgs,
    signal: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Check the task definition before starting anything.
    let to_run = match &args.run {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read task definition {}", path.display()))?;
            let parsed =
                berth_taskdef::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            for w in &parsed.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            Some((path.clone(), text))
        }
        None => None,
    };
    if !args.admin_listen.ip().is_loopback() {
        bail!(
            "berth dev serves the admin API on loopback only, not on {}; use `berth server` for an admin API with admin certificates",
            args.admin_listen
        );
    }
    let data_dir = absolute(&args.data_dir)?;
    berth_agent::fsutil::create_private_dir(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;

    let cfg = ServerConfig {
        listen: args.listen,
        admin_listen: args.admin_listen,
        ..ServerConfig::loopback(&data_dir)
    };
    let server = Server::start(cfg).await?;
    let fleet_url = format!("https://{}", server.fleet_addr());

    let agent_dir = data_dir.join("agent");
    let agent_cfg = AgentConfig {
        server: Some(fleet_url.clone()),
        data_dir: agent_dir.clone(),
        api_listen: "127.0.0.1:0".into(),
        ..AgentConfig::default()
    };
    match berth_agent::identity::enrolled(&agent_dir)? {
        Some(_) => berth_agent::identity::set_server(&agent_dir, &fleet_url)?,
        None => {
            let token = server.create_token(None).await?;
            berth_agent::identity::enroll(
                &agent_dir,
                &fleet_url,
                &token.activation_id,
                &token.activation_code,
                &berth_agent::identity::CaPin::Sha256(server.ca_sha256()),
            )
            .await?;
        }
    }
    let docker = DockerRuntime::connect(agent_cfg.docker_socket.as_deref()).await?;
    let agent = berth_agent::start(&agent_cfg, Arc::new(docker)).await?;
    let instance_id = agent.instance_id.clone();

    if !agent.wait_connected(Duration::from_secs(30)).await {
        bail!("the embedded agent {instance_id} did not connect within 30s");
    }

    let admin = server.admin_addr();
    let mut submitted = None;
    if let Some((path, text)) = to_run {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin}"))?
            .connect()
            .await
            .with_context(|| format!("cannot reach the admin API at {admin}"))?;
        let task = AdminClient::new(channel)
            .run_task(RunTaskRequest {
                task_definition_json: text,
                instance_id: instance_id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow!("{}: {}", path.display(), s.message()))?
            .into_inner();
        let id = task
            .tasks
            .into_iter()
            .next()
            .and_then(|t| t.state)
            .map(|s| s.task_id)
            .unwrap_or_default();
        info!(task_id = %id, file = %path.display(), "submitted");
        submitted = Some((id, path));
    }

    println!("berth dev is running");
    println!(
        "  control plane  admin {admin}  fleet {}",
        server.fleet_addr()
    );
    println!(
        "  agent          {instance_id}  local API http://{}",
        agent.api_addr
    );
    println!(
        "  metrics        control plane http://{}/metrics  agent http://{}/metrics",
        server.metrics_addr(),
        agent.api_addr
    );
    println!("  data           {}", data_dir.display());
    if let Some((id, path)) = &submitted {
        println!("  submitted      {} as task {id}", path.display());
    }
    println!();
    println!("Submit a task from another terminal:");
    println!("  export BERTH_ADDR={admin}");
    println!("  berth task run --task-definition examples/two-containers.json --wait");
    println!("  berth task ls");
    println!();
    println!("Ctrl-C stops berth; containers keep running and are adopted on the next start.");

    signal.await;
    agent.shutdown().await;
    server.shutdown().await?;
    Ok(())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}
