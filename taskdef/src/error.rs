//! Problems and the error that carries them.

use std::fmt;

/// One problem: a JSON path such as
/// `containerDefinitions[1].portMappings[0].hostPort` (or `$` for the whole
/// document) and what is wrong there.
///
/// Messages are lower-case, have no trailing period and never repeat the
/// path, so that `{path}: {message}` reads as one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A task definition that is refused, with every problem that was found
/// (at least one).
///
/// Displayed as `invalid task definition:` followed by one problem per
/// line, each indented by two spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TaskDefError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for TaskDefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid task definition:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl TaskDefError {
    pub(crate) fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        TaskDefError {
            problems: vec![Problem::new(path, message)],
        }
    }
}
