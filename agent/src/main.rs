//! `berth-agent`: `run`, `enroll`, `status`, `completions`; hidden `man`.
#![forbid(unsafe_code)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_agent::cli_docs::{self, ManSections, Shell};
use berth_agent::config::{Config, DEFAULT_CONFIG_PATH};
use berth_agent::runtime::docker::DockerRuntime;
use berth_proto::text::escape_control;
use clap::{CommandFactory, Parser, Subcommand};

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
        /// SHA-256 of the fleet CA, sha256:<hex> (from the line `berth token
        /// create` prints); the server must present that CA or nothing is
        /// sent. Required unless --insecure-skip-ca-pin.
        #[arg(long, value_name = "sha256:HEX")]
        ca_hash: Option<String>,
        /// Enroll without --ca-hash: trust whatever CA the server presents
        /// (the activation code goes to whoever answers at --server).
        #[arg(long)]
        insecure_skip_ca_pin: bool,
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
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// The packages install the scripts for bash, zsh and fish. From a source
    /// build, write the one for your shell where it looks for completions:
    ///
    /// bash: berth-agent completions bash > ~/.local/share/bash-completion/completions/berth-agent
    ///
    /// zsh: berth-agent completions zsh > ~/.zfunc/_berth-agent (with fpath+=~/.zfunc before
    /// compinit in ~/.zshrc)
    ///
    /// fish: berth-agent completions fish > ~/.config/fish/completions/berth-agent.fish
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The parts of `man berth-agent` that clap does not know.
const MAN_SECTIONS: ManSections = ManSections {
    files: &[
        (
            "/etc/berth/agent.toml",
            "Configuration; the packaged file lists every key, commented out, with its default. Each key can be overridden by the environment variable BERTH_<KEY> in upper case.",
        ),
        (
            "/var/lib/berth",
            "Identity (agent.key, agent.crt, ca.crt, identity.json) and state (state.json), mode 0700.",
        ),
        (
            "/usr/lib/systemd/system/berth-agent.service",
            "The systemd unit; it starts once the host is enrolled.",
        ),
        (
            "/usr/share/berth-agent/enroll.sh",
            "Fleet enrollment script: installs Docker and this package, enrolls, starts the service; also --uninstall.",
        ),
    ],
    environment: &[
        (
            "BERTH_AGENT_CONFIG",
            "Path of the configuration file (default /etc/berth/agent.toml).",
        ),
        (
            "BERTH_<KEY>",
            "Overrides the configuration key <key>, e.g. BERTH_RESERVED_MEMORY_MIB=512.",
        ),
        ("BERTH_LOG", "Log filter (default info)."),
    ],
    see_also: &["berth", "systemctl", "journalctl"],
};

fn main() -> ExitCode {
    let cli = match cli_docs::parse::<Cli>(&MAN_SECTIONS) {
        ControlFlow::Continue(c) => c,
        ControlFlow::Break(code) => return code,
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
            // A control plane's refusal is part of the message: escaped.
            eprintln!("error: {}", escape_control(&format!("{e:#}")));
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
    berth_agent::logs::init(format == "json", filter);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { shell } => Ok(cli_docs::print_completions(Cli::command(), shell)?),
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            init_logs(&cfg.log_format);
            // Password files and the Docker config are read (and checked)
            // now: a bad one stops the agent before it runs anything.
            let credentials = cfg.registry_credentials(&config)?;
            let docker = DockerRuntime::connect(cfg.docker_socket.as_deref())
                .await?
                .with_credentials(credentials.into_docker());
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
            insecure_skip_ca_pin,
            config,
            force,
        } => {
            // Checked before anything else: a line without the pin is wrong
            // whether or not this host is enrolled.
            let pin =
                berth_agent::identity::CaPin::from_args(ca_hash.as_deref(), insecure_skip_ca_pin)
                    .map_err(anyhow::Error::msg)?;
            let cfg = Config::load(&config)?;
            if let Some(existing) = berth_agent::identity::enrolled(&cfg.data_dir)?
                && !force
            {
                println!(
                    "this host is already enrolled as {} with {}; use --force to enroll again",
                    escape_control(&existing.instance_id),
                    escape_control(&existing.server)
                );
                return Ok(());
            }
            if pin == berth_agent::identity::CaPin::SkipInsecure {
                eprintln!(
                    "warning: --insecure-skip-ca-pin: trusting whatever CA {server} presents; the activation code is sent to whoever answers there"
                );
            }
            let id = berth_agent::identity::enroll(
                &cfg.data_dir,
                &server,
                &activation_id,
                &activation_code,
                &pin,
            )
            .await?;
            Config::write_server(&config, &server)?;
            println!(
                "enrolled as {} with {}; start the agent with `systemctl start berth-agent` or `berth-agent run --config {}`",
                escape_control(&id.instance_id),
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
            let metrics = http_get(&addr, "/metrics")
                .await
                .map(|text| metrics_summary(&text))
                .with_context(|| format!("cannot reach the agent's local API at {addr}"))?;
            if json {
                let mut out = meta.clone();
                out["tasks"] = tasks["tasks"].clone();
                out["certificate"] = certificate.clone();
                out["metrics"] = metrics;
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                // What the API reports comes from the control plane and
                // task definitions: escaped, like every CLI table.
                let field =
                    |v: &serde_json::Value| escape_control(v.as_str().unwrap_or("-")).into_owned();
                println!("instance    {}", field(&meta["instanceId"]));
                println!("server      {}", field(&meta["server"]));
                println!(
                    "connected   {}",
                    meta["connected"].as_bool().unwrap_or(false)
                );
                println!("certificate {}", certificate_line(&certificate));
                println!("pending events {}", meta["pendingEvents"]);
                for line in metrics_lines(&metrics) {
                    println!("{line}");
                }
                println!();
                println!(
                    "{:<34} {:<20} {:<9} {:<9}",
                    "TASK", "FAMILY", "STATUS", "DESIRED"
                );
                for t in tasks["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<34} {:<20} {:<9} {:<9}",
                        field(&t["taskId"]),
                        field(&t["family"]),
                        field(&t["lastStatus"]),
                        field(&t["desiredStatus"]),
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

/// The numbers of `/metrics` that `status` shows, as JSON (camelCase, as
/// the rest of `status --json`).
fn metrics_summary(text: &str) -> serde_json::Value {
    // `name{labels} value` lines; comments and anything unreadable skipped.
    let values: std::collections::HashMap<&str, u64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, v)| Some((series, v.parse::<f64>().ok()? as u64)))
        .collect();
    let get = |series: &str| values.get(series).copied().unwrap_or(0);
    serde_json::json!({
        "tasksByStatus": {
            "PENDING": get("berth_agent_tasks{status=\"PENDING\"}"),
            "RUNNING": get("berth_agent_tasks{status=\"RUNNING\"}"),
            "STOPPED": get("berth_agent_tasks{status=\"STOPPED\"}"),
        },
        "containerRestarts": get("berth_agent_container_restarts_total"),
        "outboxEvents": get("berth_agent_outbox_events"),
        "sessionsEstablished": get("berth_agent_sessions_established_total"),
        "sessionReconnects": get("berth_agent_session_reconnects_total"),
        "imagePulls": get("berth_agent_image_pulls_total{result=\"success\"}"),
        "imagePullFailures": get("berth_agent_image_pulls_total{result=\"failure\"}"),
        "dockerRequestErrors": values
            .iter()
            .filter(|(k, _)| k.starts_with("berth_agent_docker_request_errors_total{"))
            .map(|(_, v)| v)
            .sum::<u64>(),
        "storeBytes": get("berth_agent_store_bytes"),
    })
}

/// The human form of [`metrics_summary`]: counters since the agent started.
fn metrics_lines(m: &serde_json::Value) -> Vec<String> {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let t = &m["tasksByStatus"];
    vec![
        format!(
            "tasks       {} running, {} pending, {} stopped",
            n(&t["RUNNING"]),
            n(&t["PENDING"]),
            n(&t["STOPPED"])
        ),
        format!(
            "restarts    {} container restarts since the agent started",
            n(&m["containerRestarts"])
        ),
        format!(
            "sessions    {} established, {} reconnect attempts",
            n(&m["sessionsEstablished"]),
            n(&m["sessionReconnects"])
        ),
        format!(
            "images      {} made available (pulled or cached), {} failed; {} Docker API errors",
            n(&m["imagePulls"]),
            n(&m["imagePullFailures"]),
            n(&m["dockerRequestErrors"])
        ),
        format!("state file  {} bytes", n(&m["storeBytes"])),
    ]
}

/// A minimal HTTP/1.1 GET on loopback, parsed as JSON.
async fn http_get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&http_get(addr, path).await?)?)
}

/// A minimal HTTP/1.1 GET on loopback; the body of a 200 answer.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
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
    Ok(body.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_every_subcommand_and_bash_loads_them() {
        let words = [
            "run",
            "enroll",
            "status",
            "completions",
            "activation-code",
            "ca-hash",
        ];
        cli_docs::check_completions(Cli::command(), &words).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn man_pages_for_every_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = cli_docs::check_man_pages(Cli::command(), dir.path(), &MAN_SECTIONS)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            dir.path().join("berth-agent-enroll.1").is_file(),
            "no page for enroll"
        );
        for s in [
            "FILES",
            "/etc/berth/agent.toml",
            "BERTH_AGENT_CONFIG",
            "EXIT STATUS",
        ] {
            assert!(top.contains(s), "berth-agent.1 lacks {s}");
        }
    }
}
