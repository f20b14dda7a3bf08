//! A throwaway PostgreSQL server on loopback, for the store's conformance
//! suite and the end-to-end runs on PostgreSQL.
//!
//! Debian's `postgresql` package ships the server binaries under
//! `/usr/lib/postgresql/<major>/bin`; `scripts/setup.sh` installs it. Each
//! [`Postgres`] is a cluster of its own: `initdb` into a temporary directory
//! that carries the run id, `postgres` on a free loopback port with its
//! socket in that directory, and every database a test asks for created in
//! it. Dropping it stops the server (by its pid) and removes the directory.
//!
//! PostgreSQL refuses to run as root: under root the cluster runs as the
//! `postgres` system user the package creates (the directory is given to
//! it); as anyone else, as that user.
//!
//! Durability settings are relaxed (`fsync=off`, `synchronous_commit=off`,
//! `full_page_writes=off`): a test cluster only has to survive a server
//! restart, never a machine crash, and the suite runs several at once on two
//! cores.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::unistd::{Uid, User};

use crate::process::Proc;
use crate::{RunId, command_line, describe_output, wait_for};

/// Where Debian keeps the server binaries, newest major version first.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not installed ({}: {e}); scripts/setup.sh installs Debian's postgresql",
                root.display()
            )
        })
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors
        .pop()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| panic!("no initdb under {}/*/bin", root.display()))
}

/// The user the cluster runs as when the tests run as root.
fn run_as() -> Option<User> {
    if !Uid::effective().is_root() {
        return None;
    }
    let user = User::from_name("postgres")
        .unwrap_or_else(|e| panic!("cannot look up the postgres user: {e}"))
        .unwrap_or_else(|| {
            panic!("no postgres system user: install Debian's postgresql (scripts/setup.sh)")
        });
    Some(user)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind: {e}"));
    l.local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

/// A PostgreSQL server of one test (or one test binary).
pub struct Postgres {
    // Declared first: dropped (stopped) before the directory goes.
    server: Proc,
    port: u16,
    bin: PathBuf,
    user: Option<User>,
    socket_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Creates and starts a cluster; returns once it accepts connections.
    pub fn start(run: &RunId) -> Postgres {
        let bin = bin_dir();
        let user = run_as();
        let dir = run.temp_dir("postgres");
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        for d in [&data, &socket_dir] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        }
        if let Some(u) = &user {
            for d in [dir.path(), &data, &socket_dir] {
                nix::unistd::chown(d, Some(u.uid), Some(u.gid))
                    .unwrap_or_else(|e| panic!("cannot give {} to postgres: {e}", d.display()));
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["--auth=trust", "--username=berth", "--encoding=UTF8"])
            .args(["--no-sync", "--no-instructions", "-D"])
            .arg(&data);
        as_user(&mut initdb, &user);
        let out = initdb
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(&initdb)));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            describe_output(&out)
        );

        let log = dir.path().join("postgres.log");
        // The log file is written by this process, so it may stay root's.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(bin.join("postgres"));
            cmd.arg("-D").arg(&data).args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("port={port}"),
                "-c",
                &format!("unix_socket_directories={}", socket_dir.display()),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ]);
            as_user(&mut cmd, &user);
            let mut server = Proc::spawn("postgres", &mut cmd, &log);
            let ready = wait_for(
                "postgres to accept connections",
                Duration::from_secs(60),
                || {
                    if let Some(status) = server.exited() {
                        return Ok(Err(format!("postgres exited ({status})")));
                    }
                    let mut probe = Command::new(bin.join("pg_isready"));
                    probe.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "berth"]);
                    match probe.output() {
                        Ok(o) if o.status.success() => Ok(Ok(())),
                        Ok(o) => Err(describe_output(&o)),
                        Err(e) => Err(e.to_string()),
                    }
                },
            );
            match ready {
                Ok(()) => {
                    return Postgres {
                        server,
                        port,
                        bin,
                        user,
                        socket_dir,
                        _dir: dir,
                    };
                }
                // Most likely the port was taken between the probe and
                // the bind: try another.
                Err(e) => last_error = format!("{e}; log: {}", crate::log_tail(&log, 20)),
            }
        }
        panic!("postgres did not start: {last_error}")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// `postgres://berth@127.0.0.1:PORT/NAME`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://berth@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database names here are [A-Za-z0-9_]: {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// Runs one SQL statement with `psql` and returns what it printed.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut cmd = Command::new(self.bin.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "berth",
                "-d",
                database,
                "-c",
                sql,
            ]);
        as_user(&mut cmd, &self.user);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", command_line(&cmd)));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn as_user(cmd: &mut Command, user: &Option<User>) {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
        cmd.env("HOME", &u.dir);
    }
}
