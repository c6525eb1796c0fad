//! Time as a value: the board's retry logic asks a [`Clock`] instead of reading the time itself,
//! so that tests move time by hand instead of sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A monotonic clock on the time base of [`crate::buttons::monotonic`].
pub trait Clock: Send {
    /// Now.
    fn now(&self) -> Duration;
}

/// The real clock: [`crate::buttons::monotonic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        crate::buttons::monotonic()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<Mutex<Duration>>);

impl ManualClock {
    /// A clock at `start`.
    pub fn new(start: Duration) -> Self {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
