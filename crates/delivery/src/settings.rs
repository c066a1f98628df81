//! Dispatcher settings and the injectable clock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use salesync_core::clock::{Clock, ManualClock, SystemClock};

/// How a [`Dispatcher`](crate::Dispatcher) delivers.
#[derive(Clone)]
pub struct DeliverySettings {
    /// This process's identity in outbox leases; unique per process (default: random).
    pub worker_id: String,
    /// Marketo items per claim and per Add Custom Activities call (≤300).
    pub marketo_batch: u32,
    /// Salesforce items per claim and per upsert call (≤200).
    pub salesforce_batch: u32,
    /// How long a claim holds its items; a crashed worker's items come back after it.
    pub lease: Duration,
    /// Attempts after which a failing item is parked for an admin.
    pub max_attempts: u32,
    /// First retry delay; doubles with each attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Idle delay of [`Dispatcher::run`](crate::Dispatcher::run) between rounds.
    pub poll_interval: Duration,
    /// How often Salesforce is polled for reminder task changes (when reminder sync is on).
    pub reminder_poll_interval: Duration,
    /// How often the Salesforce opt-out reconcile runs (daily by default).
    pub opt_out_reconcile_interval: Duration,
    /// Run the opt-out reconcile at all.
    pub opt_out_reconcile: bool,
    /// Salesforce daily API calls to leave untouched: delivery pauses below this many.
    pub salesforce_api_reserve: u64,
    /// How long Salesforce delivery pauses when the reserve is reached.
    pub salesforce_reserve_pause: Duration,
    /// Pages scanned when looking for an activity whose outcome is unknown before giving up
    /// for this attempt.
    pub lookup_max_pages: u32,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for DeliverySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliverySettings")
            .field("worker_id", &self.worker_id)
            .field("marketo_batch", &self.marketo_batch)
            .field("salesforce_batch", &self.salesforce_batch)
            .field("lease", &self.lease)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("poll_interval", &self.poll_interval)
            .field("reminder_poll_interval", &self.reminder_poll_interval)
            .field("opt_out_reconcile_interval", &self.opt_out_reconcile_interval)
            .field("opt_out_reconcile", &self.opt_out_reconcile)
            .field("salesforce_api_reserve", &self.salesforce_api_reserve)
            .field("salesforce_reserve_pause", &self.salesforce_reserve_pause)
            .field("lookup_max_pages", &self.lookup_max_pages)
            .finish_non_exhaustive()
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            worker_id: format!("salesync-delivery-{}", uuid::Uuid::new_v4().simple()),
            marketo_batch: 300,
            salesforce_batch: 200,
            lease: Duration::from_secs(60),
            max_attempts: 8,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(1),
            reminder_poll_interval: Duration::from_secs(60),
            opt_out_reconcile_interval: Duration::from_secs(24 * 3600),
            opt_out_reconcile: true,
            salesforce_api_reserve: 500,
            salesforce_reserve_pause: Duration::from_secs(15 * 60),
            lookup_max_pages: 200,
            clock: Arc::new(SystemClock),
        }
    }
}

impl DeliverySettings {
    /// The retry time after `attempts` attempts: `backoff_base × 2^(attempts-1)`, capped at
    /// `backoff_max`.
    pub fn backoff(&self, attempts: u32, now: DateTime<Utc>) -> DateTime<Utc> {
        let exp = attempts.saturating_sub(1).min(30);
        let delay = self.backoff_base.saturating_mul(1u32 << exp).min(self.backoff_max);
        now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = DeliverySettings {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..Default::default()
        };
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!((s.backoff(1, t) - t).num_seconds(), 1);
        assert_eq!((s.backoff(2, t) - t).num_seconds(), 2);
        assert_eq!((s.backoff(4, t) - t).num_seconds(), 8);
        assert_eq!((s.backoff(9, t) - t).num_seconds(), 10);
        assert_eq!((s.backoff(100, t) - t).num_seconds(), 10);
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let c = ManualClock::new(t);
        c.advance(Duration::from_secs(5));
        assert_eq!((c.now() - t).num_seconds(), 5);
    }
}
