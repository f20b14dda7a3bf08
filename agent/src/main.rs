//! `berth-agent`: `run`, `enroll`, `status`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_agent::config::{Config, DEFAULT_CONFIG_PATH};
use berth_agent::runtime::docker::DockerRuntime;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "berth node agent: runs ECS task groups on the local Docker Engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (the systemd service runs this).
    Run {
        #[arg(long, env = "BERTH_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Enroll this host into a fleet with a one-time activation.
    Enroll {
        /// Fleet address of the control plane, https://host:7420.
        #[arg(long)]
        server: String,
        #[arg(long)]
        activation_id: String,
        #[arg(long)]
        activation_code: String,
        /// SHA-256 of the fleet CA (from `berth token create`); the server
        /// must present that CA or nothing is sent.
        #[arg(long)]
        ca_hash: Option<String>,
        #[arg(long, env = "BERTH_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Enroll again even if this host already is.
        #[arg(long)]
        force: bool,
    },
    /// Show what the local agent reports.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, env = "BERTH_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logs(format: &str) {
    // bollard logs request bodies (container environments) at debug: keep it
    // at info whatever BERTH_LOG says, so no secret reaches the logs.
    let directives = std::env::var("BERTH_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(format!(
        "{directives},bollard=info,h2=info,hyper=info"
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logs(&cfg.log_format);
            let docker = DockerRuntime::connect(cfg.docker_socket.as_deref()).await?;
            let agent = berth_agent::start(&cfg, Arc::new(docker)).await?;
            // State loaded and the local API serving: ready for systemd.
            berth_agent::notify::ready();
            wait_for_signal(&agent).await?;
            berth_agent::notify::stopping();
            tracing::info!("shutting down; containers keep running");
            agent.shutdown().await;
            Ok(())
        }
        Command::Enroll {
            server,
            activation_id,
            activation_code,
            ca_hash,
            config,
            force,
        } => {
            let cfg = Config::load(&config)?;
            if let Some(existing) = berth_agent::identity::enrolled(&cfg.data_dir)?
                && !force
            {
                println!(
                    "this host is already enrolled as {} with {}; use --force to enroll again",
                    existing.instance_id, existing.server
                );
                return Ok(());
            }
            let pin = match ca_hash {
                Some(h) => {
                    let hex = h.strip_prefix("sha256:").unwrap_or(&h).to_lowercase();
                    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                        bail!("--ca-hash {h:?}: expected sha256:<64 hex digits>");
                    }
                    Some(hex)
                }
                None => {
                    eprintln!("warning: no --ca-hash given; trusting the server's CA on first use");
                    None
                }
            };
            let id = berth_agent::identity::enroll(
                &cfg.data_dir,
                &server,
                &activation_id,
                &activation_code,
                pin,
            )
            .await?;
            Config::write_server(&config, &server)?;
            println!(
                "enrolled as {} with {}; start the agent with `systemctl start berth-agent` or `berth-agent run --config {}`",
                id.instance_id,
                server,
                config.display()
            );
            Ok(())
        }
        Command::Status { json, config } => {
            let cfg = Config::load(&config)?;
            let certificate = certificate_status(&cfg);
            let addr = api_addr(&cfg).map_err(|e| with_certificate_note(e, &certificate))?;
            let meta = http_get_json(&addr, "/v1/metadata")
                .await
                .with_context(|| format!("cannot reach the agent's local API at {addr}"))
                .map_err(|e| with_certificate_note(e, &certificate))?;
            let tasks = http_get_json(&addr, "/v1/tasks")
                .await
                .with_context(|| format!("cannot reach the agent's local API at {addr}"))?;
            if json {
                let mut out = meta.clone();
                out["tasks"] = tasks["tasks"].clone();
                out["certificate"] = certificate.clone();
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!("instance    {}", meta["instanceId"].as_str().unwrap_or("-"));
                println!("server      {}", meta["server"].as_str().unwrap_or("-"));
                println!(
                    "connected   {}",
                    meta["connected"].as_bool().unwrap_or(false)
                );
                println!("certificate {}", certificate_line(&certificate));
                println!("pending events {}", meta["pendingEvents"]);
                println!();
                println!(
                    "{:<34} {:<20} {:<9} {:<9}",
                    "TASK", "FAMILY", "STATUS", "DESIRED"
                );
                for t in tasks["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<34} {:<20} {:<9} {:<9}",
                        t["taskId"].as_str().unwrap_or("-"),
                        t["family"].as_str().unwrap_or("-"),
                        t["lastStatus"].as_str().unwrap_or("-"),
                        t["desiredStatus"].as_str().unwrap_or("-"),
                    );
                }
            }
            Ok(())
        }
    }
}

// ---- certificate status (issue 5): what `status` says about agent.crt ----

/// `{"notBefore", "notAfter", "expired"}` of the client certificate in the
/// data dir, or `{"error": …}` when it cannot be read.
fn certificate_status(cfg: &Config) -> serde_json::Value {
    let path = cfg.data_dir.join(berth_agent::identity::CERT_FILE);
    let validity = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|pem| berth_agent::identity::Validity::of_pem(&pem));
    match validity {
        Ok(v) => {
            let ms = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            };
            serde_json::json!({
                "notBefore": berth_proto::json::time_json(ms(v.not_before)),
                "notAfter": berth_proto::json::time_json(ms(v.not_after)),
                "expired": v.expired_at(std::time::SystemTime::now()),
            })
        }
        Err(e) => serde_json::json!({ "error": e }),
    }
}

fn certificate_line(c: &serde_json::Value) -> String {
    if let Some(e) = c["error"].as_str() {
        return e.to_string();
    }
    let not_after = c["notAfter"].as_str().unwrap_or("-");
    if c["expired"].as_bool() == Some(true) {
        format!(
            "EXPIRED at {not_after}: the control plane refuses it; enroll this host again (berth-agent enroll --force …)"
        )
    } else {
        format!("valid until {not_after} (renewed automatically while connected)")
    }
}

/// Adds what is wrong with the certificate to an error of `status`.
fn with_certificate_note(e: anyhow::Error, c: &serde_json::Value) -> anyhow::Error {
    if c["expired"].as_bool() == Some(true) {
        e.context(format!("certificate {}", certificate_line(c)))
    } else {
        e
    }
}

/// The API address: from the config, or from `agent-api.json` when the
/// config asks for port 0.
fn api_addr(cfg: &Config) -> anyhow::Result<String> {
    let addr = cfg.api_addr();
    if addr.port() != 0 {
        return Ok(addr.to_string());
    }
    let p = cfg.data_dir.join("agent-api.json");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("cannot read {} (is the agent running?)", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("invalid {}", p.display()))?;
    v["apiAddr"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no apiAddr in {}", p.display()))
}

/// A minimal HTTP/1.1 GET on loopback.
async fn http_get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(serde_json::from_str(body)?)
}

/// Waits for SIGTERM or SIGINT; meanwhile feeds systemd's watchdog and
/// `STATUS=` line, but only while the manager answers, so a hung agent is
/// restarted by systemd.
async fn wait_for_signal(agent: &berth_agent::Running) -> anyhow::Result<()> {
    use std::time::Duration;
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let every = berth_agent::notify::watchdog_interval().unwrap_or(Duration::from_secs(15));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = tick.tick() => {
                if let Some(line) = agent.status_line(Duration::from_secs(5)).await {
                    berth_agent::notify::watchdog();
                    berth_agent::notify::status(&line);
                }
            }
        }
    }
}
