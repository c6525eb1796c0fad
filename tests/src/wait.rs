//! Waiting on a condition with a deadline, instead of sleeping for a guessed time.

use std::time::{Duration, Instant};

/// A point in time by which something must have happened.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `secs` seconds from now.
    pub fn in_secs(secs: u64) -> Self {
        Deadline(Instant::now() + Duration::from_secs(secs))
    }

    /// A deadline `duration` from now.
    pub fn after(duration: Duration) -> Self {
        Deadline(Instant::now() + duration)
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Polls `condition` until it returns `Some`, and returns that value; panics with `what` when
/// the deadline passes first.
pub fn wait_until<T>(deadline: Deadline, what: &str, condition: impl FnMut() -> Option<T>) -> T {
    try_wait_until(deadline, condition).unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

/// Polls `condition` until it returns `Some`, and returns that value; `None` when the deadline
/// passes first (for a test that must undo a fault before it fails). The poll interval grows
/// from 10 ms to 250 ms so that fast conditions return fast and slow ones do not spin.
pub fn try_wait_until<T>(deadline: Deadline, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let mut interval = Duration::from_millis(10);
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if deadline.passed() {
            return None;
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(250));
    }
}
