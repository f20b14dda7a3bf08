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
/// line, each indented by two spaces, and a last line counting the problems
/// not listed, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TaskDefError {
    /// At most [`crate::MAX_PROBLEMS`] problems: type errors and unknown
    /// fields first (the top level, then each container, then each volume),
    /// then the broken rules.
    pub problems: Vec<Problem>,
    /// How many more problems were found and not listed.
    pub omitted: usize,
    /// Checking stopped before the end (too many type errors): there may
    /// be problems beyond `problems` and `omitted`.
    pub incomplete: bool,
}

impl fmt::Display for TaskDefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid task definition:")?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        match (self.omitted, self.incomplete) {
            (0, false) => {}
            (0, true) => f.write_str("\n  (checking stopped here: fix these and try again)")?,
            (n, false) => write!(f, "\n  … and {n} more (fix these and try again)")?,
            (n, true) => write!(f, "\n  … and at least {n} more (fix these and try again)")?,
        }
        Ok(())
    }
}

impl TaskDefError {
    pub(crate) fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        TaskDefError::capped(vec![Problem::new(path, message)], false)
    }

    /// `problems`, cut to [`crate::MAX_PROBLEMS`] with the rest counted.
    pub(crate) fn capped(mut problems: Vec<Problem>, incomplete: bool) -> Self {
        let omitted = problems.len().saturating_sub(crate::MAX_PROBLEMS);
        problems.truncate(crate::MAX_PROBLEMS);
        TaskDefError {
            problems,
            omitted,
            incomplete,
        }
    }
}
