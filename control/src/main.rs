//! `berth`: the control plane and operator CLI. See the library docs.
#![forbid(unsafe_code)]

use std::ops::ControlFlow;
use std::process::ExitCode;

use berth_agent::cli_docs;
use berth_control::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit 2 (and --help/--version 0); `man DIR` is done here.
    let args = match cli_docs::parse::<Cli>(&cli::MAN_SECTIONS) {
        ControlFlow::Continue(args) => args,
        ControlFlow::Break(code) => return code,
    };
    if matches!(args.command, cli::Command::Server(_) | cli::Command::Dev(_)) {
        // Before the store is opened: SQLite creates its files with the
        // umask, and they hold task definitions with their environments.
        berth_agent::fsutil::private_umask();
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::error_report(&e));
            ExitCode::from(1)
        }
    }
}

fn run(args: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(cli::run(args))
}
