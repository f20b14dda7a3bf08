//! Waiting for an event with a deadline.

use std::time::{Duration, Instant};

/// The default deadline for anything that involves containers or the
/// control plane. Generous on purpose: tests never assert durations, a
/// deadline only turns a hang into a failure with a message.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Pause between two checks of a condition.
const PAUSE: Duration = Duration::from_millis(200);

/// What one check of a condition saw: done with a value, or not yet (with a
/// description of the state seen, when there is one).
pub trait Observe<T> {
    fn observe(self) -> Result<T, Option<String>>;
}

impl<T> Observe<T> for Option<T> {
    fn observe(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// `Err(state)` says what was seen instead; the last one is in the panic
/// message on timeout.
impl<T, E: std::fmt::Display> Observe<T> for Result<T, E> {
    fn observe(self) -> Result<T, Option<String>> {
        self.map_err(|e| Some(e.to_string()))
    }
}

/// Checks `check` until it yields a value, with a short pause between
/// checks; panics naming `what` and the last observed state once `deadline`
/// has passed.
///
/// `check` returns an `Option<T>` (no state to report) or a
/// `Result<T, impl Display>` whose error describes what was seen.
pub fn wait_for<T, O: Observe<T>>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> O,
) -> T {
    let start = Instant::now();
    let mut last: Option<String> = None;
    loop {
        match check().observe() {
            Ok(value) => return value,
            Err(state) => {
                if state.is_some() {
                    last = state;
                }
            }
        }
        if start.elapsed() > deadline {
            panic!(
                "timed out after {deadline:?} waiting for {what}; last observed state: {}",
                last.as_deref().unwrap_or("(none reported)")
            );
        }
        std::thread::sleep(PAUSE);
    }
}
