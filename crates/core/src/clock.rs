//! The injectable source of "now" shared by the engine and the delivery dispatcher.
//!
//! Production uses [`SystemClock`]; tests and simulations inject a [`ManualClock`] or any
//! `Fn() -> DateTime<Utc>` closure, so stamps, lease expiry and backoff windows are under their
//! control. Sleeping is not the clock's business: run loops always sleep on tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

impl<F> Clock for F
where
    F: Fn() -> DateTime<Utc> + Send + Sync + 'static,
{
    fn now(&self) -> DateTime<Utc> {
        self()
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; clones share one time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        match self.0.lock() {
            Ok(mut g) => *g = at,
            Err(p) => *p.into_inner() = at,
        }
    }

    /// Moves the time forward (a duration beyond chrono's range is ignored).
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        match self.0.lock() {
            Ok(mut g) => *g += by,
            Err(p) => *p.into_inner() += by,
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.lock().map(|g| *g).unwrap_or_else(|p| *p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let c = ManualClock::new(t);
        let shared = c.clone();
        assert_eq!(c.now(), t);
        c.advance(Duration::from_secs(90));
        assert_eq!(shared.now(), t + chrono::Duration::seconds(90));
        shared.set(t);
        assert_eq!(c.now(), t);
    }

    #[test]
    fn closures_are_clocks() {
        let t = Utc.with_ymd_and_hms(2030, 5, 6, 7, 8, 9).unwrap();
        let c: Arc<dyn Clock> = Arc::new(move || t);
        assert_eq!(c.now(), t);
        assert!(SystemClock.now() > t - chrono::Duration::days(365 * 10));
    }
}
