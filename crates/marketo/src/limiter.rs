//! Client-side limits shared by every clone of a client: a sliding-window call limiter, an
//! in-flight semaphore and an optional daily budget.
//!
//! The window limiter is a log, not a GCRA: governor's GCRA with a burst of N lets N calls through
//! at once and then one per `window / N`, so a 20-second window right after a burst would see
//! almost 2N calls. Here a call holds a *slot* from the moment it is admitted until its response
//! headers arrive, and the slot stays occupied for one full window after that. Whatever the network
//! latency, the server then sees at most N calls arrive in any window.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc, Weekday};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::MkError;

#[derive(Debug)]
struct WindowState {
    /// Release times of finished calls still inside the window, oldest first.
    log: VecDeque<Instant>,
    /// Admitted calls whose responses have not arrived.
    in_flight: usize,
    /// Nobody is admitted before this (set after a 606).
    paused_until: Option<Instant>,
}

/// At most `max` calls in any `window`, measured from admission to release plus one window.
#[derive(Debug)]
pub(crate) struct WindowLimiter {
    max: usize,
    window: Duration,
    state: Mutex<WindowState>,
    released: Notify,
}

/// An admitted call. Dropping it starts the slot's cool-down window.
#[derive(Debug)]
pub(crate) struct RateSlot {
    limiter: Arc<WindowLimiter>,
}

impl Drop for RateSlot {
    fn drop(&mut self) {
        let mut st = self.limiter.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.log.push_back(Instant::now());
        drop(st);
        self.limiter.released.notify_waiters();
    }
}

impl WindowLimiter {
    pub(crate) fn new(max: usize, window: Duration) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            window,
            state: Mutex::new(WindowState { log: VecDeque::new(), in_flight: 0, paused_until: None }),
            released: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, WindowState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The configured window.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Waits for a slot.
    pub(crate) async fn acquire(self: &Arc<Self>) -> RateSlot {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            let wait_until = {
                let mut st = self.lock();
                let now = Instant::now();
                while st.log.front().is_some_and(|t| *t + self.window <= now) {
                    st.log.pop_front();
                }
                match st.paused_until {
                    Some(p) if p > now => Some(p),
                    _ => {
                        st.paused_until = None;
                        if st.log.len() + st.in_flight < self.max {
                            st.in_flight += 1;
                            return RateSlot { limiter: Arc::clone(self) };
                        }
                        // Full: the oldest logged slot frees first; with none logged, wait for a release.
                        st.log.front().map(|t| *t + self.window)
                    }
                }
            };
            match wait_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => {
                    notified.as_mut().enable();
                    // Re-check after registering, in case a release happened in between.
                    let all_in_flight = {
                        let st = self.lock();
                        st.log.is_empty() && st.in_flight >= self.max
                    };
                    if all_in_flight {
                        notified.await;
                    }
                }
            }
        }
    }

    /// Admits nobody for `d` (after a 606 the whole client waits out the window).
    pub(crate) fn pause_for(&self, d: Duration) {
        let mut st = self.lock();
        let until = Instant::now() + d;
        if st.paused_until.is_none_or(|p| p < until) {
            st.paused_until = Some(until);
        }
    }
}

/// A client-side daily call budget, reset at midnight US Central like Marketo's quota.
#[derive(Debug)]
pub(crate) struct DailyBudget {
    limit: u64,
    state: Mutex<(NaiveDate, u64)>,
}

impl DailyBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, state: Mutex::new((central_date(Utc::now()), 0)) }
    }

    /// Counts one call, or fails when the budget of the current Central day is used up.
    pub(crate) fn charge(&self, now: DateTime<Utc>) -> Result<(), MkError> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let today = central_date(now);
        if st.0 != today {
            *st = (today, 0);
        }
        if st.1 >= self.limit {
            return Err(MkError::Quota {
                detail: format!(
                    "client-side daily budget of {} calls used (resets at midnight US Central)",
                    self.limit
                ),
            });
        }
        st.1 += 1;
        Ok(())
    }
}

/// The calendar date in US Central time (CST, UTC−6; CDT, UTC−5 from the second Sunday of March to
/// the first Sunday of November), when Marketo's daily quota resets.
pub(crate) fn central_date(now: DateTime<Utc>) -> NaiveDate {
    let year = now.year();
    // DST starts 2:00 CST = 08:00 UTC; ends 2:00 CDT = 07:00 UTC.
    let start = nth_sunday(year, 3, 2).and_then(|d| d.and_hms_opt(8, 0, 0)).map(|t| Utc.from_utc_datetime(&t));
    let end = nth_sunday(year, 11, 1).and_then(|d| d.and_hms_opt(7, 0, 0)).map(|t| Utc.from_utc_datetime(&t));
    let dst = matches!((start, end), (Some(s), Some(e)) if now >= s && now < e);
    let offset = if dst { chrono::Duration::hours(5) } else { chrono::Duration::hours(6) };
    (now - offset).date_naive()
}

/// The next midnight in US Central time after `now` (when Marketo's daily quota resets), in UTC.
pub(crate) fn next_central_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = central_date(now).succ_opt().unwrap_or(NaiveDate::MAX);
    let midnight = tomorrow.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t));
    // Local midnight is 05:00 or 06:00 UTC: the first of the two that falls on `tomorrow`.
    [5, 6]
        .into_iter()
        .filter_map(|h| midnight.map(|m| m + chrono::Duration::hours(h)))
        .find(|t| central_date(*t) == tomorrow)
        .unwrap_or_else(|| now + chrono::Duration::hours(24))
}

fn nth_sunday(year: i32, month: u32, n: u8) -> Option<NaiveDate> {
    NaiveDate::from_weekday_of_month_opt(year, month, Weekday::Sun, n)
}

/// Every limit of one Marketo instance, shared by all clones of the client.
#[derive(Debug)]
pub(crate) struct Limits {
    pub window: Arc<WindowLimiter>,
    pub concurrency: Arc<tokio::sync::Semaphore>,
    pub max_concurrent: usize,
    pub budget: Option<DailyBudget>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_window_ever_sees_more_than_max() {
        let lim = WindowLimiter::new(5, Duration::from_secs(20));
        let start = Instant::now();
        let mut admitted = Vec::new();
        for _ in 0..23 {
            let slot = lim.acquire().await;
            admitted.push(Instant::now() - start);
            // Each call takes 100 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(slot);
        }
        // The first 5 go at once, the next 5 one window after each release, and so on.
        assert_eq!(admitted[4], Duration::from_millis(400));
        assert!(admitted[5] >= Duration::from_millis(20_100));
        for (i, a) in admitted.iter().enumerate() {
            let in_window = admitted.iter().filter(|b| **b >= *a && **b < *a + Duration::from_secs(20)).count();
            assert!(in_window <= 5, "{in_window} calls in the window starting at call {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_wait_for_releases() {
        let lim = WindowLimiter::new(2, Duration::from_secs(1));
        let a = lim.acquire().await;
        let b = lim.acquire().await;
        let lim2 = Arc::clone(&lim);
        let waiter = tokio::spawn(async move {
            let _c = lim2.acquire().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let released_at = Instant::now();
        drop(a);
        let got = waiter.await.unwrap();
        assert!(got >= released_at + Duration::from_secs(1), "admitted before the released slot's window ended");
        drop(b);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_holds_everyone() {
        let lim = WindowLimiter::new(100, Duration::from_secs(20));
        let start = Instant::now();
        lim.pause_for(Duration::from_secs(20));
        let _s = lim.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(20));
    }

    #[test]
    fn next_central_midnights() {
        let at = |y, m, d, h, mi| Utc.with_ymd_and_hms(y, m, d, h, mi, 0).single().unwrap_or_default();
        // Winter (CST, UTC-6): 2026-01-15 12:00 UTC is 06:00 CST; midnight is 2026-01-16 06:00 UTC.
        assert_eq!(next_central_midnight(at(2026, 1, 15, 12, 0)), at(2026, 1, 16, 6, 0));
        // 05:30 UTC is still the 14th in Chicago.
        assert_eq!(next_central_midnight(at(2026, 1, 15, 5, 30)), at(2026, 1, 15, 6, 0));
        // Summer (CDT, UTC-5).
        assert_eq!(next_central_midnight(at(2026, 7, 15, 12, 0)), at(2026, 7, 16, 5, 0));
        // The day DST ends (2026-11-01): midnight of the 2nd is CST again.
        assert_eq!(next_central_midnight(at(2026, 11, 1, 12, 0)), at(2026, 11, 2, 6, 0));
    }

    #[test]
    fn central_dates() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Winter: UTC-6.
        assert_eq!(central_date(t("2026-01-10T05:59:00Z")).to_string(), "2026-01-09");
        assert_eq!(central_date(t("2026-01-10T06:00:00Z")).to_string(), "2026-01-10");
        // Summer: UTC-5.
        assert_eq!(central_date(t("2026-07-10T04:59:00Z")).to_string(), "2026-07-09");
        assert_eq!(central_date(t("2026-07-10T05:00:00Z")).to_string(), "2026-07-10");
    }

    #[test]
    fn budget_runs_out_and_resets_next_central_day() {
        let b = DailyBudget::new(2);
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let day1 = t("2026-01-10T12:00:00Z");
        b.charge(day1).unwrap();
        b.charge(day1).unwrap();
        assert!(matches!(b.charge(day1), Err(MkError::Quota { .. })));
        b.charge(t("2026-01-11T06:00:01Z")).unwrap();
    }
}
