//! A child process the harness started, with its output in a log file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{command_line, log_tail, wait_for};

/// How long a process gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// A running child process. Dropping it stops it (SIGTERM, then SIGKILL) and,
/// when the test is failing, prints the tail of its log.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// Where stdout goes when it is kept apart from the log.
    stdout_log: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let file = open_log(log);
        let err = file
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot duplicate log file {}: {e}", log.display()));
        Self::spawn_with(name, cmd, log, None, Stdio::from(file), Stdio::from(err))
    }

    /// Spawns `cmd` with stdout to `stdout_log` and stderr to `log`.
    pub fn spawn_split(name: &str, cmd: &mut Command, stdout_log: &Path, log: &Path) -> Proc {
        let out = open_log(stdout_log);
        let err = open_log(log);
        Self::spawn_with(
            name,
            cmd,
            log,
            Some(stdout_log.to_path_buf()),
            Stdio::from(out),
            Stdio::from(err),
        )
    }

    fn spawn_with(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        stdout_log: Option<PathBuf>,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", command_line(cmd)));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stdout_log,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The stdout kept apart by [`Proc::spawn_split`], as written so far.
    pub fn stdout_so_far(&self) -> String {
        match &self.stdout_log {
            Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
            None => String::new(),
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.status = status,
                Err(e) => panic!("cannot check whether {} exited: {e}", self.name),
            }
        }
        self.status
    }

    /// Panics with the log tail when the process has exited.
    pub fn assert_running(&mut self, while_doing: &str) {
        if let Some(status) = self.exited() {
            // The log tail is printed when the Proc drops during the panic.
            panic!(
                "{} exited ({status}) while {while_doing}; see its log {} (tail below)",
                self.name,
                self.log.display(),
            );
        }
    }

    /// Sends `signal` to the process by its pid, unless it has exited.
    pub fn signal(&mut self, signal: Signal) {
        if self.exited().is_some() {
            return;
        }
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        if let Err(e) = kill(Pid::from_raw(raw), signal) {
            // ESRCH: it exited between the check and the signal.
            if e != nix::errno::Errno::ESRCH {
                panic!("cannot send {signal} to {} (pid {raw}): {e}", self.name);
            }
        }
    }

    /// SIGTERM, then waits for the exit; panics if it does not exit within
    /// the grace period (after killing it).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        let name = self.name.clone();
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(&format!("{name} to exit after SIGTERM"), STOP_GRACE, || {
                self.exited()
            })
        }));
        match waited {
            Ok(status) => status,
            Err(panic) => {
                self.kill();
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("cannot wait for {} after SIGKILL: {e}", self.name));
        self.status = Some(status);
        status
    }

    /// Stops the process without panicking (for `Drop`): SIGTERM, a grace
    /// period, then SIGKILL.
    fn stop_quietly(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < STOP_GRACE {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{} did not exit within {STOP_GRACE:?} of SIGTERM: killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_quietly();
        crate::capture::keep_log(&self.name, &self.log);
        if let Some(out) = &self.stdout_log {
            crate::capture::keep_log(&format!("{} stdout", self.name), out);
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {} log ({}) -----\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 120)
            );
            if let Some(out) = &self.stdout_log {
                eprintln!(
                    "----- last lines of {} stdout ({}) -----\n{}",
                    self.name,
                    out.display(),
                    log_tail(out, 40)
                );
            }
        }
    }
}

fn open_log(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log file {}: {e}", path.display()))
}
