//! Small assertions on command outputs and file modes that the suites share.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use crate::describe_output;

/// Asserts that a command exited 0, printing its output otherwise.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed\n{}",
        describe_output(out)
    );
}

/// Asserts that a command exited 1 (a refusal, not a usage error).
pub fn assert_fails(what: &str, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what} should exit 1\n{}",
        describe_output(out)
    );
}

/// The permission bits of `path` (`0o600`).
pub fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}
