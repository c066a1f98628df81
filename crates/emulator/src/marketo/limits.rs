//! Rate window, daily quota and concurrency accounting.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

/// Limits the emulator enforces. All on by default with Marketo's documented values.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketoLimits {
    /// Master switch for rate, concurrency, daily quota and export byte quota (batch, URI and body
    /// limits and the bulk queue sizes always apply).
    pub enabled: bool,
    /// Counted calls allowed per rolling window (606 beyond).
    pub calls_per_window: u32,
    /// The rolling window. A call leaves the window once this much time has passed on the emulator
    /// clock *or* in real time, so a manual clock can roll it instantly and a client that really
    /// waits is never stuck behind a frozen manual clock.
    pub window: std::time::Duration,
    /// Concurrent in-flight API calls allowed (615 beyond).
    pub max_concurrent: u32,
    /// Counted calls per US-Central day (607 beyond).
    pub daily_quota: u64,
    /// Max records per page / batch write.
    pub max_batch: usize,
    /// Max request-target length in bytes (HTTP 414 beyond).
    pub max_uri_bytes: usize,
    /// Max request body in bytes (HTTP 413 beyond).
    pub max_body_bytes: usize,
    /// Bulk export bytes per US-Central day (1029 "Export daily quota exceeded" beyond).
    pub bulk_export_daily_bytes: u64,
}

impl Default for MarketoLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            calls_per_window: 100,
            window: std::time::Duration::from_secs(20),
            max_concurrent: 10,
            daily_quota: 50_000,
            max_batch: 300,
            max_uri_bytes: 8192,
            max_body_bytes: 1024 * 1024,
            bulk_export_daily_bytes: 500 * 1024 * 1024,
        }
    }
}

impl MarketoLimits {
    /// No rate, concurrency, quota or export-byte limits (batch/URI/body limits stay as documented).
    pub fn unlimited() -> Self {
        Self { enabled: false, bulk_export_daily_bytes: u64::MAX, ..Self::default() }
    }
}

/// The other integrations of the instance ("co-tenants"), which share its rate window and its
/// in-flight limit with our clients (reference §3: both are per instance, shared by all
/// integrations).
///
/// The co-tenant is a steady synthetic stream of `calls_per_window` calls evenly spaced over the
/// window, taken to be in its steady state: it occupies exactly `calls_per_window` slots of every
/// rolling window, from the moment it is configured or changed
/// ([`super::MarketoEmulator::set_co_tenant`] takes effect on the next call, so a test can make a
/// co-tenant suddenly take the whole window). Likewise it holds `in_flight` of the
/// [`MarketoLimits::max_concurrent`] slots at all times. Its calls are not logged, do not count
/// against our daily quota ([`super::MarketoEmulator::daily_calls`]) and never show in
/// [`super::MarketoEmulator::max_calls_in_any_window`] or `stats/usage.json`. It has no effect
/// when [`MarketoLimits::enabled`] is false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoTenant {
    /// Calls per rolling window the other integrations make (0: none, the default). With 50 of
    /// the documented 100, our clients get 50 calls per window through and 606 beyond.
    pub calls_per_window: u32,
    /// In-flight slots the other integrations hold (0: none, the default). With 5 of 10, a sixth
    /// concurrent call of ours gets 615.
    pub in_flight: u32,
}

/// Random "instance busy" answers, as the real service gives when other integrations burst:
/// a seeded fraction of API calls is answered 606 (rate) or 615 (concurrency) at random.
///
/// Decided after authentication and after the real concurrency check, before the rate window and
/// daily quota are consulted: such a call does no work and is not counted (not in the window, not
/// in the daily quota). The 615 draw comes first, so the 606 fraction applies to the calls not
/// already answered 615. Applies whether or not [`MarketoLimits::enabled`] is set (it is a fault
/// model, not a limit). Change it at run time with [`super::MarketoEmulator::set_busy`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BusyModel {
    /// Fraction (0.0..=1.0) of API calls answered 606 `Max rate limit … exceeded`.
    pub rate_606_fraction: f64,
    /// Fraction (0.0..=1.0) of API calls answered 615 `Concurrent access limit … reached`.
    pub rate_615_fraction: f64,
    /// Seed of the random draws (the same seed and call sequence give the same answers).
    pub seed: u64,
}

impl BusyModel {
    /// True when neither fraction can fire.
    pub fn is_off(&self) -> bool {
        self.rate_606_fraction <= 0.0 && self.rate_615_fraction <= 0.0
    }
}

/// The US-Central calendar day of `t` (America/Chicago with the US DST rules since 2007).
pub(crate) fn central_day(t: DateTime<Utc>) -> NaiveDate {
    (t + central_offset(t)).date_naive()
}

/// UTC offset of America/Chicago at `t`: −5 h during DST (2nd Sunday of March 02:00 local to the 1st
/// Sunday of November 02:00 local), else −6 h.
pub(crate) fn central_offset(t: DateTime<Utc>) -> Duration {
    let y = t.year();
    let nth_sunday = |month: u32, n: u32| -> Option<NaiveDate> {
        let first = NaiveDate::from_ymd_opt(y, month, 1)?;
        let to_sun = (7 - first.weekday().num_days_from_sunday()) % 7;
        first.checked_add_days(chrono::Days::new(u64::from(to_sun + 7 * (n - 1))))
    };
    let dst = match (nth_sunday(3, 2), nth_sunday(11, 1)) {
        (Some(start), Some(end)) => {
            // 02:00 CST = 08:00 UTC; 02:00 CDT = 07:00 UTC.
            let s = start.and_hms_opt(8, 0, 0).map(|n| Utc.from_utc_datetime(&n));
            let e = end.and_hms_opt(7, 0, 0).map(|n| Utc.from_utc_datetime(&n));
            matches!((s, e), (Some(s), Some(e)) if t >= s && t < e)
        }
        _ => false,
    };
    if dst { Duration::hours(-5) } else { Duration::hours(-6) }
}

/// Mutable limit state (behind a mutex).
#[derive(Debug, Default)]
pub(crate) struct LimitState {
    /// Clock and real times of counted calls inside the current window, with a reservation id.
    pub(crate) window: VecDeque<(DateTime<Utc>, Instant, u64)>,
    pub(crate) day: Option<NaiveDate>,
    pub(crate) day_count: u64,
    pub(crate) next_id: u64,
}

/// Result of asking for a counted slot.
pub(crate) enum Admit {
    /// Admitted; the reservation id (to release when the outcome turns out uncounted).
    Ok(u64),
    /// 606; `own` when our calls alone filled the window (full without the co-tenant too).
    Rate {
        /// Whether our own calls alone reached the limit.
        own: bool,
    },
    /// 607.
    Quota,
}

impl LimitState {
    /// Asks for a counted slot; `co_tenant` slots of the window are held by other integrations.
    pub(crate) fn admit(&mut self, limits: &MarketoLimits, co_tenant: u32, now: DateTime<Utc>, at: Instant) -> Admit {
        let window = Duration::from_std(limits.window).unwrap_or(Duration::seconds(20));
        self.window.retain(|(t, i, _)| now - *t < window && at.saturating_duration_since(*i) < limits.window);
        let day = central_day(now);
        if self.day != Some(day) {
            self.day = Some(day);
            self.day_count = 0;
        }
        if limits.enabled {
            if self.day_count >= limits.daily_quota {
                return Admit::Quota;
            }
            let own = self.window.len();
            let limit = limits.calls_per_window as usize;
            if own >= limit {
                return Admit::Rate { own: true };
            }
            if own.saturating_add(co_tenant as usize) >= limit {
                return Admit::Rate { own: false };
            }
        }
        self.next_id += 1;
        self.window.push_back((now, at, self.next_id));
        self.day_count += 1;
        Admit::Ok(self.next_id)
    }

    /// Gives a slot back (the call ended with a ★ code).
    pub(crate) fn release(&mut self, id: u64) {
        if let Some(pos) = self.window.iter().position(|(_, _, i)| *i == id) {
            self.window.remove(pos);
        }
        self.day_count = self.day_count.saturating_sub(1);
    }
}

/// An in-flight slot; decrements the counter on drop.
pub(crate) struct InFlight(pub(crate) Arc<AtomicU32>);

impl InFlight {
    /// Takes a slot; returns the guard and the in-flight count including this call.
    pub(crate) fn enter(counter: &Arc<AtomicU32>, peak: &AtomicU32) -> (InFlight, u32) {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        (InFlight(Arc::clone(counter)), n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Largest number of calls inside any one window, with the same clock-or-real-time rule as
/// admission (`times` are (clock, real) pairs; need not be sorted).
pub(crate) fn max_in_window(mut times: Vec<(DateTime<Utc>, Instant)>, window: std::time::Duration) -> u32 {
    times.sort_by_key(|(_, i)| *i);
    let cw = Duration::from_std(window).unwrap_or(Duration::seconds(20));
    let mut best = 0usize;
    let mut lo = 0usize;
    for hi in 0..times.len() {
        while lo < hi
            && (times[hi].0 - times[lo].0 >= cw || times[hi].1.saturating_duration_since(times[lo].1) >= window)
        {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    u32::try_from(best).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn central_offsets_follow_dst() {
        let winter = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).single().unwrap_or_default();
        let summer = Utc.with_ymd_and_hms(2026, 7, 15, 12, 0, 0).single().unwrap_or_default();
        assert_eq!(central_offset(winter), Duration::hours(-6));
        assert_eq!(central_offset(summer), Duration::hours(-5));
        // 2026-03-08 is the second Sunday of March.
        let before = Utc.with_ymd_and_hms(2026, 3, 8, 7, 59, 0).single().unwrap_or_default();
        let after = Utc.with_ymd_and_hms(2026, 3, 8, 8, 0, 0).single().unwrap_or_default();
        assert_eq!(central_offset(before), Duration::hours(-6));
        assert_eq!(central_offset(after), Duration::hours(-5));
        // 05:30 UTC in January is still the previous day in Chicago.
        let t = Utc.with_ymd_and_hms(2026, 1, 15, 5, 30, 0).single().unwrap_or_default();
        assert_eq!(central_day(t), NaiveDate::from_ymd_opt(2026, 1, 14).unwrap_or_default());
    }

    #[test]
    fn sliding_max() {
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
        let now = Instant::now();
        let secs = [0, 5, 19, 21];
        let times = secs.iter().map(|s| (base + Duration::seconds(*s), now)).collect();
        assert_eq!(max_in_window(times, std::time::Duration::from_secs(20)), 3);
        // A frozen clock with calls spread over real time: the real-time rule separates them.
        let times = vec![(base, now), (base, now + std::time::Duration::from_secs(25))];
        assert_eq!(max_in_window(times, std::time::Duration::from_secs(20)), 1);
    }
}
