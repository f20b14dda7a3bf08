//! A small tmpfs mounted over a directory: a filesystem the test can fill.
//!
//! Mounting needs root (the e2e machines run the tests as root). The mount
//! is taken off the directory on drop.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{describe_output, output_of};

/// A tmpfs mounted on `path`. Dropping it unmounts it (lazily if busy).
pub struct Tmpfs {
    path: PathBuf,
    filler: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `2m`) with mode
    /// 0700 on `path`, which must exist (and should be empty: what it holds
    /// is hidden until the mount goes).
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        let out = output_of(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
                .arg(format!("berth-e2e-tmpfs-{size}"))
                .arg(path),
        );
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the e2e tests run as root)\n{}",
            path.display(),
            describe_output(&out)
        );
        Tmpfs {
            path: path.to_path_buf(),
            filler: path.join("berth-e2e-filler"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a file until the filesystem is full (ENOSPC); returns its
    /// size in bytes.
    pub fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(&self.filler)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.filler.display()));
        let chunk = vec![0u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("cannot fill {}: {e}", self.filler.display()),
            }
        }
        written
    }

    /// Removes the file [`Tmpfs::fill`] wrote.
    pub fn unfill(&self) {
        std::fs::remove_file(&self.filler)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", self.filler.display()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.path).output();
        if !out.is_ok_and(|o| o.status.success()) {
            let out = Command::new("umount").arg("-l").arg(&self.path).output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("cleanup: cannot unmount {}", self.path.display());
            }
        }
    }
}
