//! The org's limits: the rolling 24-hour counts (API requests, Bulk API 2.0 query jobs), the
//! long-running requests of the concurrency limit, and the longest request URI.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

use crate::http::lock;

/// The longest request URI (path and query) Salesforce accepts, in bytes: longer ones get 414.
pub(crate) const MAX_URI_BYTES: usize = 16_384;

/// Events of the rolling 24 hours, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RollingDay(VecDeque<DateTime<Utc>>);

impl RollingDay {
    /// Counts `n` more events at `now`.
    pub(crate) fn add(&mut self, now: DateTime<Utc>, n: usize) {
        for _ in 0..n {
            self.0.push_back(now);
        }
    }

    /// Events in the 24 hours before `now` (older ones are dropped).
    pub(crate) fn count(&mut self, now: DateTime<Utc>) -> u64 {
        let from = now - Duration::hours(24);
        while self.0.front().is_some_and(|t| *t <= from) {
            self.0.pop_front();
        }
        self.0.len() as u64
    }
}

/// The data requests running now, for `ConcurrentPerOrgLongTxn`.
#[derive(Debug, Default)]
pub(crate) struct LongRunning {
    running: Mutex<HashMap<u64, Instant>>,
    next: AtomicU64,
}

/// Removes a request from the running set when dropped.
pub(crate) struct Running<'a> {
    set: &'a LongRunning,
    id: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(&self.set.running).remove(&self.id);
    }
}

impl LongRunning {
    /// Registers a request (a data request is counted while it runs); returns its guard and how
    /// many running requests have taken `threshold` or longer.
    pub(crate) fn start(&self, data: bool, threshold: StdDuration) -> (Running<'_>, usize) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut running = lock(&self.running);
        let long = running.values().filter(|t| t.elapsed() >= threshold).count();
        if data {
            running.insert(id, Instant::now());
        }
        (Running { set: self, id }, long)
    }
}
