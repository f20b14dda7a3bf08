//! `berth-agent`: `run`, `enroll`, `status`, `completions`; hidden `man`.
#![forbid(unsafe_code)]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use berth_agent::cli_docs::{self, ManSections, Shell};
use berth_agent::config::DEFAULT_CONFIG_PATH;
use berth_agent::{commands, status};
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Completions { shell } => Ok(cli_docs::print_completions(Cli::command(), shell)?),
        Command::Run { config } => commands::run(&config).await,
        Command::Enroll {
            server,
            activation_id,
            activation_code,
            ca_hash,
            insecure_skip_ca_pin,
            config,
            force,
        } => {
            let args = commands::EnrollArgs {
                server,
                activation_id,
                activation_code,
                ca_hash,
                insecure_skip_ca_pin,
                force,
            };
            commands::enroll(&config, &args).await
        }
        Command::Status { json, config } => status::run(&config, json).await,
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
