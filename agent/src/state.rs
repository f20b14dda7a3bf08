//! The agent's durable state: `<data_dir>/state.json`.
//!
//! One file, replaced atomically (write temp, fsync, rename, fsync dir) on
//! every change, owned by the manager alone. It holds the last desired set
//! and its generation, the last known state of every task (container ids and
//! restart counts included) and the event outbox with its sequence counter.
//!
//! A file that cannot be parsed is moved aside as `state.json.corrupt-<ms>`
//! (kept for inspection) and the agent starts from an empty state; the
//! containers themselves are never removed because the state was lost.
//!
//! The file carries the [`STATE_VERSION`] of the agent that wrote it. A file
//! of a newer version is refused (the agent does not start, the error names
//! the file and both versions): a newer agent may have written what this one
//! would misread or drop, so it is never silently read as an older format.
//! A file of an older version (or without one: 0) is read as it is and
//! written back with the current version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_proto::v1::{DesiredTask, TaskEvent, TaskState};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// The format of `state.json` this agent writes and understands.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write agent state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read agent state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "agent state {path} is version {found}, newer than this berth-agent understands (version {known}): it was written by a newer berth-agent; run that one again, or move the file aside to start from an empty state (containers keep running)"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
}

/// Only the version of a state file, read before the rest so that a newer
/// format is refused even when this agent could not parse it.
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default)]
    version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistedState {
    pub version: u32,
    /// Generation of the last assignment applied.
    pub generation: u64,
    /// The last desired set, by task id.
    pub desired: BTreeMap<String, DesiredTask>,
    /// The last known state of each task this host runs or ran.
    pub tasks: BTreeMap<String, TaskState>,
    /// The last sequence number given to an event.
    pub last_seq: u64,
    /// Events not yet acknowledged by the control plane, in order.
    pub outbox: Vec<TaskEvent>,
    /// The host's boot id when the state was last loaded; a different one
    /// at start means the host rebooted.
    pub boot_id: String,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// Opens the state in `data_dir`. Returns the state and, when the file
    /// was corrupt, where it was moved.
    pub fn open(data_dir: &Path) -> Result<(Self, PersistedState, Option<PathBuf>), StateError> {
        let path = data_dir.join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let state = PersistedState {
                    version: STATE_VERSION,
                    ..Default::default()
                };
                return Ok((Self { path }, state, None));
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        if let Ok(VersionOnly { version }) = serde_json::from_slice::<VersionOnly>(&bytes)
            && version > STATE_VERSION
        {
            return Err(StateError::TooNew {
                path,
                found: version,
                known: STATE_VERSION,
            });
        }
        match serde_json::from_slice::<PersistedState>(&bytes) {
            Ok(mut state) => {
                // An older format is read as it is; the next save writes
                // the current one.
                state.version = STATE_VERSION;
                Ok((Self { path }, state, None))
            }
            Err(_) => {
                let aside = data_dir.join(format!("state.json.corrupt-{}", berth_proto::now_ms()));
                std::fs::rename(&path, &aside).map_err(|source| StateError::Write {
                    path: aside.clone(),
                    source,
                })?;
                let state = PersistedState {
                    version: STATE_VERSION,
                    ..Default::default()
                };
                Ok((Self { path }, state, Some(aside)))
            }
        }
    }

    /// Replaces the file with `state`; returns the bytes written.
    pub fn save(&self, state: &PersistedState) -> Result<u64, StateError> {
        let json = serde_json::to_vec(state).map_err(|e| StateError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.path, &json, 0o600).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })?;
        Ok(json.len() as u64)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, mut state, aside) = StateFile::open(dir.path()).expect("open");
        assert!(aside.is_none());
        state.generation = 7;
        state.last_seq = 3;
        state.tasks.insert(
            "t1".into(),
            TaskState {
                task_id: "t1".into(),
                last_status: "RUNNING".into(),
                ..Default::default()
            },
        );
        let bytes = file.save(&state).expect("save");
        assert_eq!(
            bytes,
            std::fs::metadata(file.path()).expect("stat").len(),
            "save returns the size of the file"
        );
        let (_, loaded, _) = StateFile::open(dir.path()).expect("reopen");
        assert_eq!(loaded, state);

        std::fs::write(dir.path().join("state.json"), b"{not json").expect("corrupt");
        let (_, fresh, aside) = StateFile::open(dir.path()).expect("open corrupt");
        assert_eq!(fresh.generation, 0);
        let aside = aside.expect("moved aside");
        assert_eq!(std::fs::read(aside).expect("kept"), b"{not json");
    }

    #[test]
    fn a_newer_state_version_is_refused_and_an_older_one_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let newer = format!(
            r#"{{"version":{},"generation":9,"someday":{{"new":"field"}}}}"#,
            STATE_VERSION + 1
        );
        std::fs::write(&path, &newer).expect("write");
        let err = StateFile::open(dir.path())
            .err()
            .expect("a newer version is refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string())
                && msg.contains(&format!("version {}", STATE_VERSION + 1))
                && msg.contains(&format!("(version {STATE_VERSION})")),
            "{msg}"
        );
        // Refused, not moved aside: the file is as the newer agent left it.
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), newer);
        // Even when the rest would not parse as this version's format.
        std::fs::write(&path, r#"{"version":99,"tasks":"a string now"}"#).expect("write");
        assert!(matches!(
            StateFile::open(dir.path()),
            Err(StateError::TooNew { found: 99, .. })
        ));

        // Older (no version at all: 0) is read, and saved as the current one.
        std::fs::write(&path, r#"{"generation":4,"last_seq":2}"#).expect("write");
        let (file, state, aside) = StateFile::open(dir.path()).expect("older is read");
        assert!(aside.is_none());
        assert_eq!((state.generation, state.last_seq), (4, 2));
        assert_eq!(state.version, STATE_VERSION);
        file.save(&state).expect("save");
        let (_, again, _) = StateFile::open(dir.path()).expect("reopen");
        assert_eq!(again.version, STATE_VERSION);
    }
}
