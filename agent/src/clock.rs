//! The clock a supervisor reads: wall-clock milliseconds (what the engine
//! reports a start as, and what the task's timestamps are) and tokio's
//! [`Instant`] (deadlines: `startTimeout`, the restart floor).
//!
//! The agent runs on [`SystemClock`]. Unit tests run under
//! `tokio::time::pause` with [`PausedClock`], whose wall clock moves with
//! tokio's paused time, so restart periods and dependency timeouts are
//! tested in milliseconds without sleeping.

use tokio::time::Instant;

/// Time as a supervisor sees it.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;

    /// Now, for deadlines.
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The host's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        berth_proto::now_ms()
    }
}

/// A wall clock that moves only with tokio's (paused) time: `now_ms` is the
/// start's wall time plus the tokio time elapsed since.
#[cfg(any(test, feature = "fake-runtime"))]
#[derive(Debug, Clone, Copy)]
pub struct PausedClock {
    base_ms: i64,
    base: Instant,
}

#[cfg(any(test, feature = "fake-runtime"))]
impl PausedClock {
    pub fn new() -> Self {
        Self {
            base_ms: 1_700_000_000_000,
            base: Instant::now(),
        }
    }
}

#[cfg(any(test, feature = "fake-runtime"))]
impl Default for PausedClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "fake-runtime"))]
impl Clock for PausedClock {
    fn now_ms(&self) -> i64 {
        self.base_ms + i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_paused_clock_moves_with_tokio_time() {
        let clock = PausedClock::new();
        let before = clock.now_ms();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ms() - before, 1500);
    }
}
