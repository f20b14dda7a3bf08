//! `berth dev`: the control plane and one agent in one process.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::agent::read_agent_api_json;
use crate::server::read_server_json;
use crate::{
    Cli, DEADLINE, Proc, RunId, berth_bin, clean_command, remove_labelled, str_field, wait_for,
};

const READY: Duration = Duration::from_secs(60);

/// A running `berth dev --data-dir <tmp> [--run FILE]`, with stdout kept in
/// `<tmp>/dev.stdout` and stderr in `<tmp>/dev.log`.
///
/// Dropping it stops the process, then removes every container and volume of
/// its embedded agent (by `berth.instance-id`; the id is learnt from
/// `berth instance ls` or from `<data-dir>/agent/`).
pub struct Dev {
    // Field order is drop order: the process before its directory.
    proc: Option<Proc>,
    cli: Cli,
    data_dir: PathBuf,
    instance_id: Option<String>,
    dir: tempfile::TempDir,
}

impl Dev {
    /// Starts `berth dev --data-dir <tmp>/data [--run FILE]` and waits for
    /// `<tmp>/data/server.json`.
    pub fn start(run: &RunId, task_def: Option<&Path>) -> Dev {
        let dir = run.temp_dir("dev");
        let data_dir = dir.path().join("data");
        let mut cmd = clean_command(&berth_bin());
        cmd.arg("dev").arg("--data-dir").arg(&data_dir);
        if let Some(file) = task_def {
            cmd.arg("--run").arg(file);
        }
        let mut proc = Proc::spawn_split(
            "berth dev",
            &mut cmd,
            &dir.path().join("dev.stdout"),
            &dir.path().join("dev.log"),
        );
        let ready = data_dir.join("server.json");
        let (_fleet, admin) = wait_for(
            &format!("berth dev to write {}", ready.display()),
            READY,
            || {
                proc.assert_running("starting");
                read_server_json(&ready)
            },
        );
        Dev {
            proc: Some(proc),
            cli: Cli::new(&admin),
            data_dir,
            instance_id: None,
            dir,
        }
    }

    /// The CLI pointed at the embedded control plane.
    pub fn cli(&self) -> &Cli {
        &self.cli
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What `berth dev` printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.proc
            .as_ref()
            .map(Proc::stdout_so_far)
            .unwrap_or_default()
    }

    /// Panics with the log tail when the process has exited.
    pub fn assert_running(&mut self, while_doing: &str) {
        if let Some(proc) = self.proc.as_mut() {
            proc.assert_running(while_doing);
        }
    }

    /// The embedded agent's instance id: waits until `berth instance ls`
    /// shows exactly one instance.
    pub fn instance_id(&mut self) -> String {
        if let Some(id) = &self.instance_id {
            return id.clone();
        }
        let cli = self.cli.clone();
        let id = wait_for(
            "berth dev's agent to appear in `berth instance ls`",
            DEADLINE,
            || {
                let instances = cli.instances();
                match instances.as_slice() {
                    [one] if !str_field(one, "instanceId").is_empty() => {
                        Ok(str_field(one, "instanceId").to_string())
                    }
                    _ => Err(format!("instances: {instances:?}")),
                }
            },
        );
        self.instance_id = Some(id.clone());
        id
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.proc
            .as_mut()
            .expect("berth dev has been stopped")
            .terminate()
    }

    fn instance_id_for_cleanup(&self) -> Option<String> {
        if let Some(id) = &self.instance_id {
            return Some(id.clone());
        }
        let agent_dir = self.data_dir.join("agent");
        if let Ok((_, id)) = read_agent_api_json(&agent_dir.join("agent-api.json")) {
            return Some(id);
        }
        let text = std::fs::read_to_string(agent_dir.join("identity.json")).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let id = str_field(&json, "instanceId");
        (!id.is_empty()).then(|| id.to_string())
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        drop(self.proc.take());
        match self.instance_id_for_cleanup() {
            Some(id) => remove_labelled(&format!("berth.instance-id={id}")),
            None => eprintln!(
                "cleanup: the instance id of berth dev in {} is unknown; its containers (if any) were not removed",
                self.data_dir.display()
            ),
        }
    }
}
