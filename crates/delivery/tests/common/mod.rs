//! Test fixtures: a memory store whose calls are counted, read and seeded through the store
//! traits; people, activities and mock helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use salesync_core::activity::{
    AdminSettings, CallDetails, CallStatus, ReminderTask, SalesActivity, SalesActivityKind, UnsubscribeState,
};
use salesync_core::outbound::custom_activity_types;
use salesync_core::ports::marketo::{MockMarketoApi, ProvisionedType};
use salesync_core::ports::salesforce::MockSalesforceApi;
use salesync_core::ports::store::{
    InboundBatch, InboundStore, MirrorPage, MirrorStore, MirrorStoreExt, OutboxItem, OutboxState, OutboxStore,
    ReminderStore, SettingsStore, Target,
};
use salesync_core::{
    mirror::Decision,
    person::{OpportunityRef, Person, SalesforceType},
    sfid::SalesforceId,
};
use salesync_delivery::{DeliverySettings, Dispatcher, ManualClock};
use salesync_store::MemoryStore;
use salesync_store::testing::RecordingStore;

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

/// The tests' store: a memory store whose calls are counted (`salesync-store`'s test
/// decorators).
pub type TestStore = RecordingStore<MemoryStore>;

/// An empty store.
pub fn empty_store() -> Arc<TestStore> {
    Arc::new(RecordingStore::new(MemoryStore::new()))
}

/// A store whose mirror holds `people` (written through `apply_page` on the memory store
/// itself, so no call is counted).
pub async fn store_with(people: Vec<Person>) -> Arc<TestStore> {
    let store = empty_store();
    let decisions = people.into_iter().map(|person| Decision::Insert { person }).collect();
    store.inner().apply_page(MirrorPage { decisions, checkpoint: None, at: t0() }).await.unwrap();
    store
}

/// Changes the admin settings through the store.
pub async fn set_settings(store: &TestStore, f: impl FnOnce(&mut AdminSettings)) {
    let mut settings = store.settings().await.unwrap();
    f(&mut settings);
    store.put_settings(settings).await.unwrap();
}

/// Every outbox item, by id.
pub async fn items(store: &TestStore) -> Vec<OutboxItem> {
    let mut all = Vec::new();
    for state in
        [OutboxState::Pending, OutboxState::InFlight, OutboxState::Delivered, OutboxState::Parked, OutboxState::Skipped]
    {
        all.extend(store.outbox_items(state, u32::MAX).await.unwrap());
    }
    all.sort_by_key(|i| i.id);
    all
}

/// The outbox items for `target`, by id.
pub async fn items_in(store: &TestStore, target: Target) -> Vec<OutboxItem> {
    items(store).await.into_iter().filter(|i| i.target == target).collect()
}

/// A person's unsubscribe state (panics when there is none).
pub async fn unsubscribe(store: &TestStore, marketo_id: i64) -> UnsubscribeState {
    store.unsubscribe(marketo_id).await.unwrap().unwrap_or_else(|| panic!("no unsubscribe state for {marketo_id}"))
}

async fn mirror_ids(store: &TestStore) -> Vec<i64> {
    store.all_people().await.unwrap().into_iter().map(|p| p.marketo_id).collect()
}

/// Every unsubscribe state of the mirror's people.
pub async fn unsubscribes(store: &TestStore) -> Vec<UnsubscribeState> {
    let mut all = Vec::new();
    for id in mirror_ids(store).await {
        all.extend(store.unsubscribe(id).await.unwrap());
    }
    all
}

/// Sets an unsubscribe state as a poll would have (no outbox item).
pub async fn put_unsubscribe(store: &TestStore, state: UnsubscribeState) {
    store.apply_inbound(InboundBatch { unsubscribes: vec![state], ..InboundBatch::default() }).await.unwrap();
}

/// A reminder task (panics when there is none).
pub async fn reminder(store: &TestStore, id: &str) -> ReminderTask {
    store.reminder(id).await.unwrap().unwrap_or_else(|| panic!("no reminder {id}"))
}

/// Every reminder task of the mirror's people.
pub async fn reminders(store: &TestStore) -> Vec<ReminderTask> {
    let mut all = Vec::new();
    for id in mirror_ids(store).await {
        all.extend(store.reminders_for(id).await.unwrap());
    }
    all
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
    store: &Arc<TestStore>,
    clock: &ManualClock,
) -> Dispatcher {
    Dispatcher::builder()
        .marketo(Arc::new(marketo))
        .salesforce(Arc::new(salesforce))
        .store(store.clone())
        .settings(settings(clock))
        .build()
        .unwrap()
}
