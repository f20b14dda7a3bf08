//! Task-level `cpu` and `memory` enforced: every container of such a task
//! runs under one cgroup parent, `berth/<task id>`, whose limits are the
//! task's (ECS bounds a task's containers the same way on Linux), so a
//! container without its own limit is still bounded by the task's.
//!
//! The agent creates the parent and writes its limits before it creates the
//! task's first container, passes it as Docker's `CgroupParent`, and removes
//! it after the task's containers are removed.
//!
//! - cgroup v1 (`cgroupfs` driver): `<root>/memory/berth/<task>` with
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` the same,
//!   where swap is accounted: no swap beyond the limit); `<root>/cpu/berth/<task>` with
//!   `cpu.cfs_period_us` 100 ms and `cpu.cfs_quota_us` = units / 1024 of
//!   it (1024 units = one CPU, as ECS counts).
//! - cgroup v2 (`cgroupfs` driver): `<root>/berth/<task>` with `memory.max`
//!   (`memory.swap.max` 0) and `cpu.max`; the `cpu` and `memory` controllers are enabled for the
//!   children of `<root>` and `<root>/berth` first.
//! - With the `systemd` cgroup driver, Docker wants a slice as the parent;
//!   berth does not manage slices yet: task-level limits are then reserved
//!   for placement but not enforced, and the agent says so once at start.
//!
//! Task ids are the control plane's (hex); anything else is refused before
//! a path is built from it.

use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// The parent of every task's cgroup, under each hierarchy.
pub const PARENT: &str = "berth";
/// CFS period: 100 ms.
const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel takes: 1 ms.
const MIN_QUOTA_US: u64 = 1_000;

/// How task cgroups are laid out on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V1 { root: PathBuf },
    V2 { root: PathBuf },
}

/// What the engine reports of its cgroups (`docker info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCgroups {
    /// `cgroupfs` or `systemd` ('' when not known).
    pub driver: String,
    /// `1` or `2` ('' when not known).
    pub version: String,
}

impl Layout {
    /// The layout for an engine, with the hierarchies mounted at `root`
    /// (`/sys/fs/cgroup`); `None` (with the reason) when task limits cannot
    /// be enforced.
    pub fn detect(engine: &EngineCgroups, root: &Path) -> Result<Layout, String> {
        if engine.driver != "cgroupfs" {
            return Err(format!(
                "the engine's cgroup driver is {:?}; berth enforces task-level cpu and memory with the cgroupfs driver only",
                engine.driver
            ));
        }
        match engine.version.as_str() {
            "2" => Ok(Layout::V2 {
                root: root.to_owned(),
            }),
            "1" | "" => Ok(Layout::V1 {
                root: root.to_owned(),
            }),
            v => Err(format!("unknown cgroup version {v:?}")),
        }
    }

    /// Creates berth's parent under the hierarchies it writes to: whether
    /// this agent may manage task cgroups at all (not when it lacks the
    /// rights or `/sys/fs/cgroup` is read-only, as in many containers).
    pub fn check(&self) -> io::Result<()> {
        let dirs = match self {
            Layout::V1 { root } => vec![
                root.join("memory").join(PARENT),
                root.join("cpu").join(PARENT),
            ],
            Layout::V2 { root } => vec![root.join(PARENT)],
        };
        for d in dirs {
            std::fs::create_dir_all(&d)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", d.display())))?;
        }
        Ok(())
    }

    /// Creates the task's parent with its limits; returns Docker's
    /// `CgroupParent` (`/berth/<task>`).
    pub fn prepare(
        &self,
        task_id: &str,
        cpu_units: Option<u64>,
        memory_mib: Option<u64>,
    ) -> io::Result<String> {
        check_id(task_id)?;
        let memory = memory_mib.map(|m| m.saturating_mul(1024 * 1024));
        let quota = cpu_units.map(|u| (u.saturating_mul(PERIOD_US) / 1024).max(MIN_QUOTA_US));
        match self {
            Layout::V1 { root } => {
                // Every hierarchy Docker will place the containers in gets
                // the parent; the two with limits get them.
                if let Some(bytes) = memory {
                    let dir = root.join("memory").join(PARENT).join(task_id);
                    std::fs::create_dir_all(&dir)?;
                    write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    // No swap beyond it, where the kernel accounts swap.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes.to_string())?;
                    }
                }
                if let Some(q) = quota {
                    let dir = root.join("cpu").join(PARENT).join(task_id);
                    std::fs::create_dir_all(&dir)?;
                    write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
            Layout::V2 { root } => {
                let parent = root.join(PARENT);
                std::fs::create_dir_all(&parent)?;
                enable_controllers(root)?;
                enable_controllers(&parent)?;
                let dir = parent.join(task_id);
                std::fs::create_dir_all(&dir)?;
                if let Some(bytes) = memory {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, "0")?;
                    }
                }
                if let Some(q) = quota {
                    write(&dir.join("cpu.max"), &format!("{q} {PERIOD_US}"))?;
                }
            }
        }
        Ok(format!("/{PARENT}/{task_id}"))
    }

    /// Removes the task's parent (its containers are gone); what cannot be
    /// removed is logged and left.
    pub fn remove(&self, task_id: &str) {
        if check_id(task_id).is_err() {
            return;
        }
        let dirs: Vec<PathBuf> = match self {
            Layout::V1 { root } => [
                "memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "devices", "freezer",
            ]
            .iter()
            .map(|c| root.join(c).join(PARENT).join(task_id))
            .collect(),
            Layout::V2 { root } => vec![root.join(PARENT).join(task_id)],
        };
        for d in dirs {
            match std::fs::remove_dir(&d) {
                Ok(()) => debug!(cgroup = %d.display(), "task cgroup removed"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(cgroup = %d.display(), error = %e, "cannot remove the task's cgroup")
                }
            }
        }
    }
}

/// A task id as a path component: 1–64 of `[A-Za-z0-9_-]`.
fn check_id(task_id: &str) -> io::Result<()> {
    let ok = (1..=64).contains(&task_id.len())
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("task id {task_id:?} cannot name a cgroup"),
        ))
    }
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// cgroup v2: lets the children of `dir` use the cpu and memory
/// controllers (those this kernel has).
fn enable_controllers(dir: &Path) -> io::Result<()> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    for c in ["cpu", "memory"] {
        let has = |list: &str| list.split_whitespace().any(|x| x == c);
        if has(&available) && !has(&enabled) {
            write(&control, &format!("+{c}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(driver: &str, version: &str) -> EngineCgroups {
        EngineCgroups {
            driver: driver.into(),
            version: version.into(),
        }
    }

    #[test]
    fn only_the_cgroupfs_driver_is_managed() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            Layout::detect(&engine("cgroupfs", "1"), root),
            Ok(Layout::V1 { root: root.into() })
        );
        assert_eq!(
            Layout::detect(&engine("cgroupfs", "2"), root),
            Ok(Layout::V2 { root: root.into() })
        );
        let e = Layout::detect(&engine("systemd", "2"), root).expect_err("systemd");
        assert!(e.contains("systemd"), "{e}");
    }

    #[test]
    fn v1_writes_the_memory_limit_and_the_cpu_quota() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let l = Layout::V1 {
            root: dir.path().into(),
        };
        let parent = l.prepare("abc123", Some(512), Some(128))?;
        assert_eq!(parent, "/berth/abc123");
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap_or_default();
        assert_eq!(
            read("memory/berth/abc123/memory.limit_in_bytes"),
            "134217728"
        );
        assert_eq!(read("cpu/berth/abc123/cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu/berth/abc123/cpu.cfs_quota_us"), "50000");
        // A real hierarchy has no files of its own in the task dir; the
        // test's must go before it can be removed.
        for f in [
            "memory/berth/abc123/memory.limit_in_bytes",
            "cpu/berth/abc123/cpu.cfs_period_us",
            "cpu/berth/abc123/cpu.cfs_quota_us",
        ] {
            std::fs::remove_file(dir.path().join(f))?;
        }
        l.remove("abc123");
        assert!(!dir.path().join("memory/berth/abc123").exists());
        assert!(!dir.path().join("cpu/berth/abc123").exists());
        Ok(())
    }

    #[test]
    fn v2_enables_the_controllers_and_writes_max_files() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )?;
        std::fs::write(dir.path().join("cgroup.subtree_control"), "")?;
        let l = Layout::V2 {
            root: dir.path().into(),
        };
        // The kernel would fill in berth/cgroup.controllers; here it has none.
        l.prepare("t1", Some(2048), Some(64))?;
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap_or_default();
        // The last write wins in a plain file; the kernel keeps both.
        assert_eq!(read("cgroup.subtree_control"), "+memory");
        assert_eq!(read("berth/t1/memory.max"), "67108864");
        assert_eq!(read("berth/t1/cpu.max"), "200000 100000");
        Ok(())
    }

    #[test]
    fn ids_that_are_not_plain_names_are_refused() {
        let l = Layout::V1 {
            root: PathBuf::from("/nonexistent"),
        };
        for id in ["", "../x", "a/b", &"a".repeat(65)] {
            assert!(l.prepare(id, Some(1), None).is_err(), "{id:?}");
        }
    }
}
