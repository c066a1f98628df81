//! Turning per-item results into store outcomes and events, with the attempt bookkeeping the
//! exactly-once rule reads back.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use salesync_core::ports::store::{Finished, OutboxItem, Outcome, Target};

use crate::events::{DeliveryEvent, TargetReport};
use crate::settings::DeliverySettings;

/// The stored error text: `[attempt N] error`.
fn tag(attempts: u32, error: &str) -> String {
    format!("[attempt {attempts}] {error}")
}

/// The attempt number a stored error was written by, if salesync wrote it.
fn tagged_attempt(error: &str) -> Option<u32> {
    error.strip_prefix("[attempt ")?.split(']').next()?.parse().ok()
}

/// True when an earlier attempt of this (just claimed) item may have reached the target: it
/// finished with its outcome unknown ([`OutboxItem::outcome_unknown`], kept even when an admin's
/// requeue of a parked item resets `attempts`), or it was claimed before and never finished (a
/// crash or a lost lease: `attempts` ran ahead of the attempt that wrote `last_error`).
pub(crate) fn outcome_unknown(item: &OutboxItem) -> bool {
    if item.outcome_unknown {
        return true;
    }
    match item.last_error.as_deref() {
        _ if item.attempts <= 1 => false,
        None => true,
        Some(e) => tagged_attempt(e).is_none_or(|n| item.attempts > n.saturating_add(1)),
    }
}

/// Collects the outcomes of one claimed batch.
pub(crate) struct Finisher<'a> {
    settings: &'a DeliverySettings,
    target: Target,
    pub(crate) now: DateTime<Utc>,
    finished: Vec<Finished>,
    done: HashSet<i64>,
    pub(crate) events: Vec<DeliveryEvent>,
    pub(crate) report: TargetReport,
}

impl<'a> Finisher<'a> {
    pub(crate) fn new(settings: &'a DeliverySettings, target: Target, now: DateTime<Utc>, claimed: u32) -> Self {
        Self {
            settings,
            target,
            now,
            finished: Vec::new(),
            done: HashSet::new(),
            events: Vec::new(),
            report: TargetReport { claimed, ..TargetReport::default() },
        }
    }

    fn push(&mut self, item: &OutboxItem, outcome: Outcome) -> bool {
        if !self.done.insert(item.id) {
            return false;
        }
        self.finished.push(Finished { id: item.id, worker: self.settings.worker_id.clone(), outcome });
        true
    }

    pub(crate) fn delivered(&mut self, item: &OutboxItem, remote_id: String) {
        if self.push(item, Outcome::Delivered { remote_id: remote_id.clone() }) {
            self.report.delivered += 1;
            self.events.push(DeliveryEvent::Delivered { item_id: item.id, target: self.target, remote_id });
        }
    }

    /// Delivered by an earlier attempt whose response was lost.
    pub(crate) fn recovered(&mut self, item: &OutboxItem, remote_id: String) {
        if !self.done.contains(&item.id) {
            self.report.recovered += 1;
        }
        self.delivered(item, remote_id);
    }

    pub(crate) fn skip(&mut self, item: &OutboxItem, reason: impl Into<String>) {
        let reason = reason.into();
        if self.push(item, Outcome::Skip { reason: reason.clone() }) {
            self.report.skipped += 1;
            self.events.push(DeliveryEvent::Skipped { item_id: item.id, target: self.target, reason });
        }
    }

    pub(crate) fn park(&mut self, item: &OutboxItem, error: impl Into<String>) {
        self.park_tagged(item, error.into(), false);
    }

    fn park_tagged(&mut self, item: &OutboxItem, error: String, unknown: bool) {
        let stored = tag(item.attempts, &error);
        if self.push(item, Outcome::Park { error: stored, outcome_unknown: unknown }) {
            self.report.parked += 1;
            self.events.push(DeliveryEvent::Parked { item_id: item.id, target: self.target, error });
        }
    }

    /// Another attempt at `at`, unless the item has used up its attempts (then it is parked).
    pub(crate) fn retry(&mut self, item: &OutboxItem, error: &str, at: DateTime<Utc>, unknown: bool) {
        if item.attempts >= self.settings.max_attempts {
            let error = format!("gave up after {} attempts: {error}", item.attempts);
            self.park_tagged(item, error, unknown);
            return;
        }
        self.release(item, error, at, unknown);
    }

    /// Another attempt at the usual backoff for this item.
    pub(crate) fn backoff(&mut self, item: &OutboxItem, error: &str, unknown: bool) {
        let at = self.settings.backoff(item.attempts, self.now);
        self.retry(item, error, at, unknown);
    }

    /// Gives the item back without counting against its attempts (target stopped or paused).
    pub(crate) fn release(&mut self, item: &OutboxItem, error: &str, at: DateTime<Utc>, unknown: bool) {
        let stored = tag(item.attempts, error);
        if self.push(item, Outcome::Retry { at, error: stored, outcome_unknown: unknown }) {
            self.report.retried += 1;
            self.events.push(DeliveryEvent::Retrying {
                item_id: item.id,
                target: self.target,
                error: error.to_string(),
                at,
            });
        }
    }

    /// Releases every claimed item that got no outcome (a safety net: none should be left).
    pub(crate) fn release_rest(&mut self, claimed: &[OutboxItem]) {
        for item in claimed {
            if !self.done.contains(&item.id) {
                tracing::warn!(item = item.id, "outbox item got no outcome; released for another attempt");
                self.release(item, "released without an outcome", self.now, outcome_unknown(item));
            }
        }
    }

    pub(crate) fn into_parts(self) -> (Vec<Finished>, Vec<DeliveryEvent>, TargetReport) {
        (self.finished, self.events, self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use salesync_core::ports::store::{OutboxPayload, OutboxState};

    fn item(attempts: u32, last_error: Option<&str>, unknown: bool) -> OutboxItem {
        OutboxItem {
            id: 1,
            key: "k".into(),
            target: Target::Marketo,
            payload: OutboxPayload::Unsubscribe { marketo_id: 1 },
            state: OutboxState::InFlight,
            attempts,
            next_attempt_at: Utc::now(),
            last_error: last_error.map(str::to_string),
            outcome_unknown: unknown,
            result: None,
            lease_owner: None,
            lease_until: None,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn outcome_unknown_rules() {
        assert!(!outcome_unknown(&item(1, None, false)));
        // Claimed before, never finished: a crash.
        assert!(outcome_unknown(&item(2, None, false)));
        // Finished with a known failure by the previous attempt.
        assert!(!outcome_unknown(&item(3, Some("[attempt 2] Marketo rate limit reached"), false)));
        // Finished by attempt 2, then attempt 3 crashed.
        assert!(outcome_unknown(&item(4, Some("[attempt 2] Marketo rate limit reached"), false)));
        // The previous attempt timed out.
        assert!(outcome_unknown(&item(3, Some("[attempt 2] Marketo add: timeout"), true)));
        // An error salesync did not write.
        assert!(outcome_unknown(&item(2, Some("something"), false)));
        // Parked while unknown, then requeued by an admin (the store reset its attempts).
        assert!(outcome_unknown(&item(1, Some("[attempt 8] gave up after 8 attempts: timeout"), true)));
        assert!(!outcome_unknown(&item(1, Some("[attempt 8] 1004: Lead not found"), false)));
    }

    #[test]
    fn the_mark_travels_in_the_outcome_not_the_text() {
        let settings = DeliverySettings::default();
        let mut fin = Finisher::new(&settings, Target::Marketo, Utc::now(), 2);
        fin.release(&item(1, None, false), "timeout", Utc::now(), true);
        let mut other = item(1, None, false);
        other.id = 2;
        fin.park(&other, "1004: Lead not found");
        let (finished, _, _) = fin.into_parts();
        assert!(matches!(
            &finished[0].outcome,
            Outcome::Retry { error, outcome_unknown: true, .. } if error == "[attempt 1] timeout"
        ));
        assert!(matches!(&finished[1].outcome, Outcome::Park { outcome_unknown: false, .. }));
    }
}
