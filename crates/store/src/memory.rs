//! The in-memory backend: one mutex around plain collections. Nothing survives a drop.
//!
//! It has the same semantics as the SQL backends (it passes the same conformance suite), so it
//! is the default fake for tests of the engine and of hosts. Its [`shadow`](salesync_core::ports::store::MirrorStore::shadow) is a
//! second handle on the same collections, so a promotion swaps the copies under one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use salesync_core::Result;
use salesync_core::activity::{AdminSettings, ReminderTask, UnsubscribeState};
use salesync_core::person::Person;
use salesync_core::ports::store::{
    ApplyCounts, Checkpoint, CheckpointStore, Claim, Finished, InboundBatch, InboundStore, InstanceBinding, LeaseStore,
    MirrorPage, MirrorStore, OutboxCounts, OutboxItem, OutboxState, OutboxStore, Promotion, Recording, ReminderStore,
    SettingsStore, ShadowStore, StreamId, Tombstone,
};
use salesync_core::sfid::SalesforceId;

use crate::codec::{self, bad_id, lease_end, micros, reduce};
use crate::error::instance_conflict;

/// The in-memory store (`memory:`): a mutex around plain collections.
///
/// It is its own [`ShadowStore`] too: [`shadow`](salesync_core::ports::store::MirrorStore::shadow) hands out another `MemoryStore`
/// on the same collections (the store itself is not `Clone`: a clone sharing its data would be
/// a surprise).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    instance: Option<String>,
    people: BTreeMap<i64, Person>,
    tombstones: HashMap<i64, Tombstone>,
    checkpoints: HashMap<StreamId, Checkpoint>,
    outbox: BTreeMap<i64, OutboxItem>,
    outbox_keys: HashMap<String, i64>,
    next_outbox_id: i64,
    reminders: BTreeMap<String, ReminderTask>,
    unsubscribes: HashMap<i64, UnsubscribeState>,
    settings: Option<AdminSettings>,
    leases: HashMap<String, (String, DateTime<Utc>)>,
    shadow_people: BTreeMap<i64, Person>,
    shadow_checkpoints: HashMap<StreamId, Checkpoint>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied write: every method
        // validates before mutating, so the data behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn norm_reminder(mut r: ReminderTask) -> ReminderTask {
    r.updated_at = micros(r.updated_at);
    r
}

fn norm_unsub(mut u: UnsubscribeState) -> UnsubscribeState {
    u.at = micros(u.at);
    u
}

fn norm_checkpoint(mut c: Checkpoint) -> Checkpoint {
    c.updated_at = micros(c.updated_at);
    c
}

fn page<'a>(iter: impl Iterator<Item = &'a Person>, limit: u32) -> Vec<Person> {
    iter.take(limit as usize).cloned().collect()
}

/// Refuses a page naming a non-positive Marketo id (the SQL schemas' check), before any write.
fn check_page_ids(reduced: &codec::Reduced) -> Result<()> {
    match reduced
        .upserts
        .iter()
        .map(|p| p.marketo_id)
        .chain(reduced.removes.iter().map(|(id, _)| *id))
        .find(|id| *id <= 0)
    {
        Some(bad) => Err(bad_id(bad)),
        None => Ok(()),
    }
}

/// The people of `people` with a distinct id of `ids`, by id.
fn by_ids(people: &BTreeMap<i64, Person>, ids: &[i64]) -> Vec<Person> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids.iter().filter_map(|id| people.get(id).cloned()).collect()
}

/// The people of `people` whose Salesforce lead or contact id is `id`, by id.
fn by_salesforce_id(people: &BTreeMap<i64, Person>, id: &SalesforceId) -> Vec<Person> {
    people
        .values()
        .filter(|p| p.salesforce_lead_id.as_ref() == Some(id) || p.salesforce_contact_id.as_ref() == Some(id))
        .cloned()
        .collect()
}

/// Up to `limit` people of `people` after `after`, by id.
fn list(people: &BTreeMap<i64, Person>, after: Option<i64>, limit: u32) -> Vec<Person> {
    let start = after.map_or(i64::MIN, |a| a.saturating_add(1));
    page(people.range(start..).map(|(_, p)| p), limit)
}

#[async_trait]
impl InstanceBinding for MemoryStore {
    async fn bind_instance(&self, instance: &str) -> Result<()> {
        let mut g = self.lock();
        match &g.instance {
            Some(bound) if bound != instance => Err(instance_conflict(bound, instance)),
            Some(_) => Ok(()),
            None => {
                g.instance = Some(instance.to_string());
                Ok(())
            }
        }
    }
}

#[async_trait]
impl MirrorStore for MemoryStore {
    async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        let (reduced, counts) = reduce(page.decisions);
        check_page_ids(&reduced)?;
        let at = micros(page.at);
        let mut g = self.lock();
        if let Some(c) = page.checkpoint {
            g.checkpoints.insert(c.stream, norm_checkpoint(c));
        }
        for p in reduced.upserts {
            g.tombstones.remove(&p.marketo_id);
            g.people.insert(p.marketo_id, p);
        }
        for (id, reason) in reduced.removes {
            g.people.remove(&id);
            g.tombstones.insert(id, Tombstone { marketo_id: id, reason, removed_at: at });
        }
        Ok(counts)
    }

    async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
        Ok(self.lock().people.get(&marketo_id).cloned())
    }

    async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        Ok(by_ids(&self.lock().people, ids))
    }

    async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
        let g = self.lock();
        let want = email.to_lowercase();
        Ok(g.people
            .values()
            .filter(|p| p.email.as_deref().is_some_and(|e| e.to_lowercase() == want))
            .cloned()
            .collect())
    }

    async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        Ok(by_salesforce_id(&self.lock().people, id))
    }

    async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        let g = self.lock();
        let start = after.map_or(i64::MIN, |a| a.saturating_add(1));
        Ok(page(g.people.range(start..).map(|(_, p)| p).filter(|p| &p.owner_id == owner), limit))
    }

    async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        Ok(list(&self.lock().people, after, limit))
    }

    async fn count_people(&self) -> Result<u64> {
        Ok(self.lock().people.len() as u64)
    }

    async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
        Ok(self.lock().tombstones.get(&marketo_id).cloned())
    }

    fn shadow(&self) -> Option<Arc<dyn ShadowStore>> {
        Some(Arc::new(MemoryStore { inner: Arc::clone(&self.inner) }))
    }
}

#[async_trait]
impl CheckpointStore for MemoryStore {
    async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        Ok(self.lock().checkpoints.get(&stream).cloned())
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.lock().checkpoints.insert(checkpoint.stream, norm_checkpoint(checkpoint));
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for MemoryStore {
    async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
        let now = micros(Utc::now());
        let mut g = self.lock();
        if let Some(u) = recording.unsubscribe {
            g.unsubscribes.insert(u.marketo_id, norm_unsub(u));
        }
        if let Some(r) = recording.reminder {
            g.reminders.insert(r.id.clone(), norm_reminder(r));
        }
        let mut ids = Vec::with_capacity(recording.outbox.len());
        for item in recording.outbox {
            if let Some(id) = g.outbox_keys.get(&item.key) {
                ids.push(*id);
                continue;
            }
            g.next_outbox_id += 1;
            let id = g.next_outbox_id;
            g.outbox_keys.insert(item.key.clone(), id);
            g.outbox.insert(
                id,
                OutboxItem {
                    id,
                    key: item.key,
                    target: item.target,
                    payload: item.payload,
                    state: OutboxState::Pending,
                    attempts: 0,
                    next_attempt_at: micros(item.not_before),
                    last_error: None,
                    outcome_unknown: false,
                    result: None,
                    lease_owner: None,
                    lease_until: None,
                    created_at: now,
                },
            );
            ids.push(id);
        }
        Ok(ids)
    }

    async fn claim(&self, claim: Claim) -> Result<Vec<OutboxItem>> {
        let Claim { target, limit, worker, lease, now } = claim;
        let until = lease_end(now, lease);
        let mut g = self.lock();
        let mut out = Vec::new();
        for item in g.outbox.values_mut() {
            if out.len() >= limit as usize {
                break;
            }
            let due = item.target == target
                && match item.state {
                    OutboxState::Pending => item.next_attempt_at <= now,
                    OutboxState::InFlight => item.lease_until.is_some_and(|u| u <= now),
                    _ => false,
                };
            if due {
                item.state = OutboxState::InFlight;
                item.lease_owner = Some(worker.to_string());
                item.lease_until = Some(until);
                item.attempts = item.attempts.saturating_add(1);
                out.push(item.clone());
            }
        }
        Ok(out)
    }

    async fn finish(&self, finished: Vec<Finished>, _now: DateTime<Utc>) -> Result<()> {
        let mut g = self.lock();
        for f in finished {
            let Some(item) = g.outbox.get_mut(&f.id) else { continue };
            if item.state != OutboxState::InFlight || item.lease_owner.as_deref() != Some(f.worker.as_str()) {
                continue;
            }
            item.lease_owner = None;
            item.lease_until = None;
            // Like the SQL backends' `coalesce`: a column the outcome leaves out keeps its value.
            let cols = codec::outcome_cols(&f.outcome);
            item.state = cols.state;
            if let Some(result) = cols.result {
                item.result = Some(result.to_string());
            }
            if let Some(error) = cols.error {
                item.last_error = Some(error.to_string());
            }
            if let Some(next) = cols.next_attempt_at {
                item.next_attempt_at = next;
            }
            item.outcome_unknown = cols.outcome_unknown;
        }
        Ok(())
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        Ok(self.lock().outbox.get(&id).cloned())
    }

    async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
        let g = self.lock();
        Ok(g.outbox.values().filter(|i| i.state == state).take(limit as usize).cloned().collect())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let g = self.lock();
        let mut c = OutboxCounts::default();
        for i in g.outbox.values() {
            codec::add_count(&mut c, i.state, 1);
        }
        Ok(c)
    }

    async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        let mut g = self.lock();
        let mut n = 0;
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            if let Some(item) = g.outbox.get_mut(&id).filter(|i| i.state == OutboxState::Parked) {
                item.state = OutboxState::Pending;
                item.next_attempt_at = micros(now);
                item.attempts = 0;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl ReminderStore for MemoryStore {
    async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
        Ok(self.lock().reminders.get(id).cloned())
    }

    async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
        let g = self.lock();
        Ok(g.reminders.values().find(|r| r.salesforce_task_id.as_ref() == Some(task_id)).cloned())
    }

    async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
        let g = self.lock();
        Ok(g.reminders.values().filter(|r| r.marketo_id == marketo_id).cloned().collect())
    }

    async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
        self.lock().reminders.insert(task.id.clone(), norm_reminder(task));
        Ok(())
    }

    async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
        Ok(match self.lock().reminders.get_mut(id) {
            Some(r) => {
                r.salesforce_task_id = Some(task_id.clone());
                true
            }
            None => false,
        })
    }
}

#[async_trait]
impl InboundStore for MemoryStore {
    async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
        Ok(self.lock().unsubscribes.get(&marketo_id).cloned())
    }

    async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
        let mut g = self.lock();
        for u in batch.unsubscribes {
            g.unsubscribes.insert(u.marketo_id, norm_unsub(u));
        }
        for r in batch.reminders {
            g.reminders.insert(r.id.clone(), norm_reminder(r));
        }
        if let Some(c) = batch.checkpoint {
            g.checkpoints.insert(c.stream, norm_checkpoint(c));
        }
        Ok(())
    }
}

#[async_trait]
impl SettingsStore for MemoryStore {
    async fn settings(&self) -> Result<AdminSettings> {
        Ok(self.lock().settings.clone().unwrap_or_default())
    }

    async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
        self.lock().settings = Some(settings);
        Ok(())
    }
}

#[async_trait]
impl LeaseStore for MemoryStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
        let until = lease_end(now, ttl);
        let mut g = self.lock();
        match g.leases.get(name) {
            Some((h, u)) if h != holder && *u > now => Ok(false),
            _ => {
                g.leases.insert(name.to_string(), (holder.to_string(), until));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut g = self.lock();
        if g.leases.get(name).is_some_and(|(h, _)| h == holder) {
            g.leases.remove(name);
        }
        Ok(())
    }
}

#[async_trait]
impl ShadowStore for MemoryStore {
    async fn apply_shadow_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        let (reduced, counts) = reduce(page.decisions);
        check_page_ids(&reduced)?;
        let mut g = self.lock();
        if let Some(c) = page.checkpoint {
            g.shadow_checkpoints.insert(c.stream, norm_checkpoint(c));
        }
        for p in reduced.upserts {
            g.shadow_people.insert(p.marketo_id, p);
        }
        for (id, _) in reduced.removes {
            g.shadow_people.remove(&id);
        }
        Ok(counts)
    }

    async fn shadow_people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        Ok(by_ids(&self.lock().shadow_people, ids))
    }

    async fn shadow_people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        Ok(by_salesforce_id(&self.lock().shadow_people, id))
    }

    async fn list_shadow_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        Ok(list(&self.lock().shadow_people, after, limit))
    }

    async fn shadow_checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        Ok(self.lock().shadow_checkpoints.get(&stream).cloned())
    }

    async fn put_shadow_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.lock().shadow_checkpoints.insert(checkpoint.stream, norm_checkpoint(checkpoint));
        Ok(())
    }

    async fn clear_shadow(&self) -> Result<()> {
        let mut g = self.lock();
        g.shadow_people.clear();
        g.shadow_checkpoints.clear();
        Ok(())
    }

    async fn promote_shadow(&self, promotion: Promotion) -> Result<ApplyCounts> {
        let plan = codec::plan_promotion(&promotion)?;
        let at = micros(promotion.at);
        let mut g = self.lock();
        let missing: Vec<i64> = plan.upserts.iter().copied().filter(|id| !g.shadow_people.contains_key(id)).collect();
        if !missing.is_empty() {
            let first = &missing[..missing.len().min(codec::MISSING_SHOWN)];
            return Err(codec::missing_shadow_rows(missing.len(), plan.upserts.len(), first));
        }
        let mut counts = ApplyCounts::default();
        let mut shadow = std::mem::take(&mut g.shadow_people);
        for id in plan.upserts {
            let Some(mut p) = shadow.remove(&id) else { continue };
            p.mirror_updated_at = at;
            g.tombstones.remove(&id);
            match g.people.insert(id, p) {
                Some(_) => counts.updated += 1,
                None => counts.inserted += 1,
            }
        }
        for (id, reason) in plan.removes {
            if g.people.remove(&id).is_some() {
                counts.removed += 1;
            }
            g.tombstones.insert(id, Tombstone { marketo_id: id, reason, removed_at: at });
        }
        for c in promotion.checkpoints {
            g.checkpoints.insert(c.stream, norm_checkpoint(c));
        }
        g.shadow_checkpoints.clear();
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    async fn run(check: crate::conformance::Check) {
        check(Arc::new(MemoryStore::new())).await;
    }

    crate::conformance_tests!(run);

    #[test]
    fn every_check_has_a_generated_test() {
        assert_eq!(crate::conformance::all_checks().len(), CONFORMANCE_TEST_COUNT);
    }

    #[tokio::test]
    async fn run_all_through_box_and_arc() {
        use salesync_core::ports::store::Store;
        crate::conformance::run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
        let boxed: Box<dyn Store> = Box::new(MemoryStore::new());
        crate::conformance::settings_round_trip(&*boxed).await;
    }

    #[tokio::test]
    async fn open_memory_url() {
        let store = crate::open("memory:").await.unwrap();
        crate::conformance::people_lookups(&*store).await;
    }
}
