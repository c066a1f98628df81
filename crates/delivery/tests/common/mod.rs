//! Test fixtures: an in-memory store with the outbox semantics the Store port documents
//! (claims lease and count attempts, finish only under the lease, keys are idempotent), people,
//! activities and mock helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use salesync_core::activity::{
    AdminSettings, CallDetails, CallStatus, ReminderTask, SalesActivity, SalesActivityKind, UnsubscribeState,
};
use salesync_core::mirror::RemovalReason;
use salesync_core::outbound::custom_activity_types;
use salesync_core::ports::marketo::{MockMarketoApi, ProvisionedType};
use salesync_core::ports::salesforce::MockSalesforceApi;
use salesync_core::ports::store::{
    ApplyCounts, Checkpoint, Finished, InboundBatch, MirrorPage, OutboxCounts, OutboxItem, OutboxState, Outcome,
    Recording, StreamId, Target, Tombstone,
};
use salesync_core::{
    Result,
    mirror::Decision,
    person::{OpportunityRef, Person, SalesforceType},
    sfid::SalesforceId,
};
use salesync_delivery::{DeliverySettings, Dispatcher, ManualClock};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

pub fn sfid(s: &str) -> SalesforceId {
    SalesforceId::parse(s).unwrap()
}

pub const CONTACT: &str = "0035g00000XyZaB";
pub const ACCOUNT: &str = "0015g00000AbCdE";
pub const LEAD: &str = "00Q5g00000QwErT";
pub const OWNER: &str = "0055g00000AbCdE";

#[derive(Default, Debug)]
pub struct State {
    pub people: BTreeMap<i64, Person>,
    pub outbox: Vec<OutboxItem>,
    pub reminders: HashMap<String, ReminderTask>,
    pub unsubscribes: HashMap<i64, UnsubscribeState>,
    pub checkpoints: HashMap<StreamId, Checkpoint>,
    pub settings: AdminSettings,
    pub leases: HashMap<String, (String, DateTime<Utc>)>,
    pub record_calls: u32,
}

#[derive(Debug, Default, Clone)]
pub struct FakeStore(pub Arc<Mutex<State>>);

impl FakeStore {
    pub fn with_people(people: Vec<Person>) -> Self {
        let s = FakeStore::default();
        {
            let mut st = s.0.lock().unwrap();
            for p in people {
                st.people.insert(p.marketo_id, p);
            }
        }
        s
    }
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
    pub fn set_settings(&self, f: impl FnOnce(&mut AdminSettings)) {
        f(&mut self.state().settings)
    }
    pub fn items(&self) -> Vec<OutboxItem> {
        self.state().outbox.clone()
    }
    pub fn items_in(&self, target: Target) -> Vec<OutboxItem> {
        self.items().into_iter().filter(|i| i.target == target).collect()
    }
}

#[async_trait]
impl salesync_core::ports::store::InstanceBinding for FakeStore {
    async fn bind_instance(&self, _instance: &str) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl salesync_core::ports::store::MirrorStore for FakeStore {
    async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        let mut st = self.state();
        let mut c = ApplyCounts::default();
        for d in page.decisions {
            match d {
                Decision::Insert { person } => {
                    c.inserted += 1;
                    st.people.insert(person.marketo_id, person);
                }
                Decision::Update { person, .. } => {
                    c.updated += 1;
                    st.people.insert(person.marketo_id, person);
                }
                Decision::Remove { marketo_id, .. } => {
                    c.removed += 1;
                    st.people.remove(&marketo_id);
                }
                _ => c.untouched += 1,
            }
        }
        Ok(c)
    }

    async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
        Ok(self.state().people.get(&marketo_id).cloned())
    }

    async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        let st = self.state();
        Ok(ids.iter().filter_map(|i| st.people.get(i).cloned()).collect())
    }

    async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
        let st = self.state();
        Ok(st
            .people
            .values()
            .filter(|p| p.email.as_deref().is_some_and(|e| e.eq_ignore_ascii_case(email)))
            .cloned()
            .collect())
    }

    async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        let st = self.state();
        Ok(st
            .people
            .values()
            .filter(|p| p.salesforce_contact_id.as_ref() == Some(id) || p.salesforce_lead_id.as_ref() == Some(id))
            .cloned()
            .collect())
    }

    async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        let st = self.state();
        Ok(st
            .people
            .values()
            .filter(|p| &p.owner_id == owner && after.is_none_or(|a| p.marketo_id > a))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        let st = self.state();
        Ok(st
            .people
            .values()
            .filter(|p| after.is_none_or(|a| p.marketo_id > a))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn count_people(&self) -> Result<u64> {
        Ok(self.state().people.len() as u64)
    }

    async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
        let _ = (marketo_id, RemovalReason::Deleted);
        Ok(None)
    }
}

#[async_trait]
impl salesync_core::ports::store::CheckpointStore for FakeStore {
    async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        Ok(self.state().checkpoints.get(&stream).cloned())
    }

    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
        self.state().checkpoints.insert(checkpoint.stream, checkpoint);
        Ok(())
    }
}

#[async_trait]
impl salesync_core::ports::store::OutboxStore for FakeStore {
    async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
        let mut st = self.state();
        st.record_calls += 1;
        if let Some(u) = recording.unsubscribe {
            st.unsubscribes.insert(u.marketo_id, u);
        }
        if let Some(r) = recording.reminder {
            st.reminders.insert(r.id.clone(), r);
        }
        let mut ids = Vec::new();
        for new in recording.outbox {
            if let Some(existing) = st.outbox.iter().find(|i| i.key == new.key) {
                ids.push(existing.id);
                continue;
            }
            let id = st.outbox.len() as i64 + 1;
            st.outbox.push(OutboxItem {
                id,
                key: new.key,
                target: new.target,
                payload: new.payload,
                state: OutboxState::Pending,
                attempts: 0,
                next_attempt_at: new.not_before,
                last_error: None,
                outcome_unknown: false,
                result: None,
                lease_owner: None,
                lease_until: None,
                created_at: new.not_before,
            });
            ids.push(id);
        }
        Ok(ids)
    }

    async fn claim(
        &self,
        target: Target,
        limit: u32,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>> {
        let mut st = self.state();
        let mut out = Vec::new();
        for item in st.outbox.iter_mut() {
            if out.len() >= limit as usize {
                break;
            }
            let due = item.target == target
                && ((item.state == OutboxState::Pending && item.next_attempt_at <= now)
                    || (item.state == OutboxState::InFlight && item.lease_until.is_some_and(|l| l <= now)));
            if due {
                item.state = OutboxState::InFlight;
                item.attempts += 1;
                item.lease_owner = Some(worker.to_string());
                item.lease_until = Some(now + chrono::Duration::from_std(lease).unwrap());
                out.push(item.clone());
            }
        }
        Ok(out)
    }

    async fn finish(&self, finished: Vec<Finished>, _now: DateTime<Utc>) -> Result<()> {
        let mut st = self.state();
        for f in finished {
            let Some(item) = st.outbox.iter_mut().find(|i| i.id == f.id) else { continue };
            if item.state != OutboxState::InFlight || item.lease_owner.as_deref() != Some(f.worker.as_str()) {
                continue;
            }
            item.lease_owner = None;
            item.lease_until = None;
            match f.outcome {
                Outcome::Delivered { remote_id } => {
                    item.state = OutboxState::Delivered;
                    item.result = Some(remote_id);
                    item.outcome_unknown = false;
                }
                Outcome::Retry { at, error, outcome_unknown } => {
                    item.state = OutboxState::Pending;
                    item.next_attempt_at = at;
                    item.last_error = Some(error);
                    item.outcome_unknown = outcome_unknown;
                }
                Outcome::Park { error, outcome_unknown } => {
                    item.state = OutboxState::Parked;
                    item.last_error = Some(error);
                    item.outcome_unknown = outcome_unknown;
                }
                Outcome::Skip { reason } => {
                    item.state = OutboxState::Skipped;
                    item.result = Some(reason);
                    item.outcome_unknown = false;
                }
            }
        }
        Ok(())
    }

    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
        Ok(self.state().outbox.iter().find(|i| i.id == id).cloned())
    }

    async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
        Ok(self.state().outbox.iter().filter(|i| i.state == state).take(limit as usize).cloned().collect())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts> {
        let mut c = OutboxCounts::default();
        for i in &self.state().outbox {
            match i.state {
                OutboxState::Pending => c.pending += 1,
                OutboxState::InFlight => c.in_flight += 1,
                OutboxState::Delivered => c.delivered += 1,
                OutboxState::Parked => c.parked += 1,
                OutboxState::Skipped => c.skipped += 1,
            }
        }
        Ok(c)
    }

    async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
        let mut n = 0;
        for i in self.state().outbox.iter_mut() {
            if ids.contains(&i.id) && i.state == OutboxState::Parked {
                i.state = OutboxState::Pending;
                i.next_attempt_at = now;
                i.attempts = 0;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl salesync_core::ports::store::ReminderStore for FakeStore {
    async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
        Ok(self.state().reminders.get(id).cloned())
    }

    async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
        Ok(self.state().reminders.values().find(|r| r.salesforce_task_id.as_ref() == Some(task_id)).cloned())
    }

    async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
        Ok(self.state().reminders.values().filter(|r| r.marketo_id == marketo_id).cloned().collect())
    }

    async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
        self.state().reminders.insert(task.id.clone(), task);
        Ok(())
    }

    async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
        Ok(self.state().reminders.get_mut(id).map(|r| r.salesforce_task_id = Some(task_id.clone())).is_some())
    }
}

#[async_trait]
impl salesync_core::ports::store::InboundStore for FakeStore {
    async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
        Ok(self.state().unsubscribes.get(&marketo_id).cloned())
    }

    async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
        let mut st = self.state();
        for u in batch.unsubscribes {
            st.unsubscribes.insert(u.marketo_id, u);
        }
        for r in batch.reminders {
            st.reminders.insert(r.id.clone(), r);
        }
        if let Some(c) = batch.checkpoint {
            st.checkpoints.insert(c.stream, c);
        }
        Ok(())
    }
}

#[async_trait]
impl salesync_core::ports::store::SettingsStore for FakeStore {
    async fn settings(&self) -> Result<AdminSettings> {
        Ok(self.state().settings.clone())
    }

    async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
        self.state().settings = settings;
        Ok(())
    }
}

#[async_trait]
impl salesync_core::ports::store::LeaseStore for FakeStore {
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
        let mut st = self.state();
        if let Some((h, until)) = st.leases.get(name)
            && h != holder
            && *until > now
        {
            return Ok(false);
        }
        st.leases.insert(name.to_string(), (holder.to_string(), now + chrono::Duration::from_std(ttl).unwrap()));
        Ok(true)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut st = self.state();
        if st.leases.get(name).is_some_and(|(h, _)| h == holder) {
            st.leases.remove(name);
        }
        Ok(())
    }
}

fn base_person(marketo_id: i64) -> Person {
    Person {
        marketo_id,
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        salesforce_contact_id: None,
        salesforce_lead_id: None,
        salesforce_account_id: None,
        salesforce_opportunity: OpportunityRef::Unresolved,
        company: None,
        title: None,
        email: Some(format!("p{marketo_id}@example.com")),
        phone: None,
        linkedin_url: None,
        source: None,
        salesforce_type: SalesforceType::Lead,
        owner_id: sfid(OWNER),
        marketo_updated_at: None,
        mirror_updated_at: t0(),
    }
}

/// A contact with account.
pub fn contact(marketo_id: i64) -> Person {
    let mut p = base_person(marketo_id);
    p.salesforce_contact_id = Some(sfid(CONTACT));
    p.salesforce_account_id = Some(sfid(ACCOUNT));
    p.salesforce_type = SalesforceType::Contact;
    p
}

/// A lead.
pub fn lead(marketo_id: i64) -> Person {
    let mut p = base_person(marketo_id);
    p.salesforce_lead_id = Some(sfid(LEAD));
    p
}

/// A person without Salesforce ids.
pub fn no_sf(marketo_id: i64) -> Person {
    base_person(marketo_id)
}

pub fn activity(id: &str, marketo_id: i64, kind: SalesActivityKind) -> SalesActivity {
    SalesActivity {
        id: id.into(),
        marketo_id,
        kind,
        occurred_at: t0() - chrono::Duration::hours(1),
        actor_email: Some("rep@example.com".into()),
        actor_salesforce_user: None,
        subject: Some("Intro".into()),
        link: Some("https://example.com".into()),
        template: None,
        campaign: None,
        call: Some(CallDetails {
            status: CallStatus::Completed,
            duration_secs: Some(60),
            phone_number: None,
            recording_url: None,
            answered_by: None,
            outcome: None,
            reason: None,
        }),
        bounce_details: None,
        body: None,
        sales_person_id: None,
    }
}

/// Marketo mock that provisions the eight types (ids 100001..) once.
pub fn marketo_with_types() -> MockMarketoApi {
    let mut m = MockMarketoApi::new();
    m.expect_ensure_custom_activity_types().times(1).returning(|defs| {
        Ok(defs
            .iter()
            .enumerate()
            .map(|(i, d)| ProvisionedType { api_name: d.api_name.clone(), id: 100_001 + i as i64, created: true })
            .collect())
    });
    m
}

/// The type id `marketo_with_types` gives a kind.
pub fn type_id(kind: SalesActivityKind) -> i64 {
    let api = salesync_core::outbound::custom_type_api_name(kind);
    100_001 + custom_activity_types().iter().position(|d| d.api_name == api).unwrap() as i64
}

/// Salesforce mock with plenty of API left and the three Type values.
pub fn salesforce_basic() -> MockSalesforceApi {
    let mut s = MockSalesforceApi::new();
    s.expect_api_usage().returning(|| None);
    s.expect_task_type_values().returning(|| Ok(vec!["Email".into(), "Call".into(), "Reply".into()]));
    s
}

pub fn settings(clock: &ManualClock) -> DeliverySettings {
    DeliverySettings {
        worker_id: "w1".into(),
        clock: Arc::new(clock.clone()),
        backoff_base: Duration::from_secs(10),
        backoff_max: Duration::from_secs(600),
        max_attempts: 4,
        opt_out_reconcile: false,
        ..DeliverySettings::default()
    }
}

pub fn dispatcher(
    marketo: MockMarketoApi,
    salesforce: MockSalesforceApi,
    store: &FakeStore,
    clock: &ManualClock,
) -> Dispatcher {
    Dispatcher::builder()
        .marketo(Arc::new(marketo))
        .salesforce(Arc::new(salesforce))
        .store(Arc::new(store.clone()))
        .settings(settings(clock))
        .build()
        .unwrap()
}
