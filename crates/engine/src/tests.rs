//! Engine tests: mockall mocks of the Marketo and Salesforce ports over a small in-test world,
//! a `MemoryStore` under the `salesync-store` test decorators (and `MockStore` where the exact
//! store calls matter).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use salesync_core::mapping::{LeadField, LeadRecord, all_field_names};
use salesync_core::mirror::{Decision, RemovalReason};
use salesync_core::ports::Page;
use salesync_core::ports::marketo::{
    Activity, ActivityType, ExportFilter, ExportJob, ExportState, LeadSchema, MockMarketoApi,
};
use salesync_core::ports::salesforce::{LeadConversion, MockSalesforceApi, OpportunityChanges};
use salesync_core::ports::store::{
    ApplyCounts, CheckpointStore, InstanceBinding, LeaseStore, MirrorPage, MirrorStore, MirrorStoreExt, MockStore,
    Store, StreamId, Tombstone,
};
use salesync_core::{
    error::Service,
    person::{OpportunityRef, Person},
    sfid::SalesforceId,
};
use salesync_store::MemoryStore;
use salesync_store::testing::{FaultyStore, LeaseThief, Method, RecordingStore};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use crate::*;
use salesync_core::mapping::Disqualification as dq;

const OWNER: &str = "0055g00000AbCdE";
const CONTACT: &str = "0035g00000XyZaB";
const CONTACT2: &str = "0035g00000QwErT";
const LEAD: &str = "00Q5g00000QwErT";
const OPP: &str = "0065g00000AbCdE";
const OPP2: &str = "0065g00000ZzZzZ";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

fn sfid(s: &str) -> SalesforceId {
    SalesforceId::parse(s).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The store: a memory store under the test decorators (outermost first: a lease thief, a
// recorder of calls, pages and leases, a fault injector).

type Faults = FaultyStore<MemoryStore>;
type Recorder = RecordingStore<Faults>;
type TestStore = LeaseThief<Recorder>;

fn test_store() -> Arc<TestStore> {
    Arc::new(LeaseThief::new(RecordingStore::new(FaultyStore::new(MemoryStore::new()))))
}

fn recorder(store: &TestStore) -> &Recorder {
    store.inner()
}

fn faults(store: &TestStore) -> &Faults {
    store.inner().inner()
}

async fn position(store: &TestStore, stream: StreamId) -> Option<Value> {
    store.checkpoint(stream).await.unwrap().map(|c| c.position)
}

async fn person(store: &TestStore, id: i64) -> Person {
    store.person(id).await.unwrap().unwrap_or_else(|| panic!("{id} is not in the mirror"))
}

async fn tombstone(store: &TestStore, id: i64) -> Tombstone {
    store.tombstone(id).await.unwrap().unwrap_or_else(|| panic!("{id} has no tombstone"))
}

// ---------------------------------------------------------------------------------------------
// The Marketo world behind MockMarketoApi.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ExportMode {
    #[default]
    Ok,
    Rejected,
    Quota,
}

#[derive(Debug, Default)]
struct World {
    leads: BTreeMap<i64, Value>,
    changes: VecDeque<Page<Activity>>,
    deletes: VecDeque<Page<Activity>>,
    merges: VecDeque<Page<Activity>>,
    /// Fail the next lead-changes call as "token too old".
    reject_token: bool,
    export_mode: ExportMode,
    export_file: Vec<u8>,
    /// Polls answering Processing before Completed.
    export_polls: u32,
    /// Jobs whose status answers Failed.
    failed_jobs: Vec<String>,
    jobs_started: u32,
    /// `start_lead_export` answers QuotaExhausted once this many jobs were started.
    quota_after: Option<u32>,
    /// Filters of the started jobs, in order.
    export_filters: Vec<ExportFilter>,
    /// Per-job files (else `export_file`).
    job_files: HashMap<String, Vec<u8>>,
    /// Jobs whose file was read, in order.
    file_jobs: Vec<String>,
    file_offsets: Vec<u64>,
    filter_starts: Vec<String>,
    paging_token_since: Vec<DateTime<Utc>>,
    activity_calls: Vec<(Vec<i64>, Vec<i64>)>,
    insight: Vec<Activity>,
    unsubscribed: HashMap<i64, bool>,
    /// Moves this clock forward on every `leads_by_filter` call (a slow pull).
    advance_clock: Option<(salesync_core::clock::ManualClock, Duration)>,
    /// What `usage_today` answers.
    usage_today: Option<u64>,
}

type W = Arc<Mutex<World>>;

fn lead(id: i64, owner: Option<&str>, ty: &str) -> Value {
    let mut v = json!({"id": id, "firstName": format!("P{id}"), "email": format!("p{id}@example.com"), "sfdcType": ty});
    if let Some(o) = owner {
        v["sfdcLeadOwnerId"] = json!(o);
    }
    v
}

fn record(v: &Value) -> LeadRecord {
    serde_json::from_value(v.clone()).unwrap()
}

fn act(lead_id: i64, type_id: i64, attrs: Vec<(&str, Value)>) -> Activity {
    Activity {
        guid: format!("g{lead_id}-{type_id}"),
        id: Some(lead_id * 100 + type_id),
        lead_id,
        activity_date: t0(),
        activity_type_id: type_id,
        primary_attribute_value: None,
        attributes: attrs.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        changed_fields: Vec::new(),
    }
}

fn page(items: Vec<Activity>, token: &str, more: bool) -> Page<Activity> {
    Page { items, next_token: Some(token.to_string()), more }
}

fn marketo(world: &W) -> Arc<MockMarketoApi> {
    let mut m = MockMarketoApi::new();
    m.expect_rate_budget().returning(|| None);
    let w = world.clone();
    m.expect_usage_today().returning(move || Ok(w.lock().unwrap().usage_today));
    m.expect_lead_schema().returning(|| {
        Ok(LeadSchema { fields: all_field_names().into_iter().map(String::from).collect(), searchable: vec![] })
    });
    let w = world.clone();
    m.expect_leads_by_filter().returning(move |ft, values, _, _| {
        assert_eq!(ft, "id");
        let mut w = w.lock().unwrap();
        w.filter_starts.push(values[0].clone());
        if let Some((clock, by)) = &w.advance_clock {
            clock.advance(*by);
        }
        let ids: Vec<i64> = values.iter().map(|v| v.parse().unwrap()).collect();
        let items = ids.iter().filter_map(|i| w.leads.get(i)).map(record).collect();
        Ok(Page::last(items, None))
    });
    let w = world.clone();
    m.expect_leads_by_ids().returning(move |ids, _| {
        let w = w.lock().unwrap();
        Ok(ids.iter().filter_map(|i| w.leads.get(i)).map(record).collect())
    });
    let w = world.clone();
    m.expect_paging_token().returning(move |since| {
        w.lock().unwrap().paging_token_since.push(since);
        Ok(format!("tok@{}", since.timestamp()))
    });
    let w = world.clone();
    m.expect_lead_changes().returning(move |token, _| {
        let mut w = w.lock().unwrap();
        if std::mem::take(&mut w.reject_token) {
            return Err(salesync_core::Error::CursorExpired {
                service: Service::Marketo,
                detail: "1003: Invalid next page token: too old".into(),
            });
        }
        Ok(w.changes.pop_front().unwrap_or_else(|| page(vec![], token, false)))
    });
    let w = world.clone();
    m.expect_deleted_leads().returning(move |token| {
        Ok(w.lock().unwrap().deletes.pop_front().unwrap_or_else(|| page(vec![], token, false)))
    });
    let w = world.clone();
    m.expect_activities().returning(move |token, types, leads| {
        let mut w = w.lock().unwrap();
        w.activity_calls.push((types.to_vec(), leads.to_vec()));
        if types == [32] {
            return Ok(w.merges.pop_front().unwrap_or_else(|| page(vec![], token, false)));
        }
        let items = w.insight.iter().filter(|a| types.contains(&a.activity_type_id)).cloned().collect();
        Ok(page(items, token, false))
    });
    let w = world.clone();
    m.expect_start_lead_export().returning(move |fields, filter| {
        let mut w = w.lock().unwrap();
        assert!(fields.iter().any(|f| f == "sfdcLeadOwnerId"));
        let quota = w.quota_after.is_some_and(|n| w.jobs_started >= n);
        match w.export_mode {
            ExportMode::Ok if !quota => {
                w.export_filters.push(filter);
                w.jobs_started += 1;
                Ok(job(&format!("job-{}", w.jobs_started), ExportState::Queued))
            }
            ExportMode::Rejected => Err(salesync_core::Error::Rejected {
                service: Service::Marketo,
                code: "1035".into(),
                message: "Bulk export not enabled".into(),
            }),
            ExportMode::Ok | ExportMode::Quota => Err(salesync_core::Error::QuotaExhausted {
                service: Service::Marketo,
                resets_at: None,
                detail: "Export daily quota exceeded".into(),
            }),
        }
    });
    let w = world.clone();
    m.expect_lead_export_status().returning(move |id| {
        let mut w = w.lock().unwrap();
        if w.failed_jobs.iter().any(|j| j == id) {
            return Ok(ExportJob { error: Some("Export failed".into()), ..job(id, ExportState::Failed) });
        }
        if w.export_polls > 0 {
            w.export_polls -= 1;
            return Ok(job(id, ExportState::Processing));
        }
        Ok(job(id, ExportState::Completed))
    });
    let w = world.clone();
    m.expect_lead_export_file().returning(move |id, offset| {
        let mut w = w.lock().unwrap();
        w.file_offsets.push(offset);
        w.file_jobs.push(id.to_string());
        let file = w.job_files.get(id).unwrap_or(&w.export_file);
        let bytes = file[offset as usize..].to_vec();
        let chunks: Vec<salesync_core::Result<Vec<u8>>> = bytes.chunks(7).map(|c| Ok(c.to_vec())).collect();
        Ok(futures::stream::iter(chunks).boxed())
    });
    m.expect_activity_types().returning(|| {
        Ok(vec![
            ActivityType { id: 1, name: "Visit Webpage".into(), api_name: None },
            ActivityType { id: 6, name: "Send Email".into(), api_name: None },
            ActivityType { id: 46, name: "Interesting Moment".into(), api_name: None },
            ActivityType {
                id: 100_007,
                name: "Sales Call (salesync)".into(),
                api_name: Some("salesyncSalesCall".into()),
            },
        ])
    });
    let w = world.clone();
    m.expect_lead_unsubscribed().returning(move |id| Ok(w.lock().unwrap().unsubscribed.get(&id).copied()));
    Arc::new(m)
}

fn job(id: &str, state: ExportState) -> ExportJob {
    ExportJob { id: id.to_string(), state, records: None, file_size: None, checksum: None, error: None }
}

/// A Salesforce mock that must not be called.
fn no_salesforce() -> Arc<MockSalesforceApi> {
    Arc::new(MockSalesforceApi::new())
}

fn settings(mode: InitialMode) -> EngineSettings {
    EngineSettings {
        instance_id: "123-ABC-456".into(),
        page_size: 3,
        initial_mode: mode,
        opportunity_lookup: false,
        rest_empty_chunks_to_stop: 2,
        oldest_created_at: t0() - chrono::Duration::days(10),
        export_poll: Duration::from_secs(1),
        retry: RetrySettings {
            max_attempts: 2,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        },
        clock: Arc::new(t0),
        ..Default::default()
    }
}

fn engine(world: &W, store: &Arc<TestStore>, settings: EngineSettings) -> SyncEngine {
    SyncEngine::builder()
        .marketo(marketo(world))
        .salesforce(no_salesforce())
        .store(store.clone())
        .settings(settings)
        .build()
        .unwrap()
}

fn world_with(leads: Vec<Value>) -> W {
    let mut w = World::default();
    for l in leads {
        w.leads.insert(l["id"].as_i64().unwrap(), l);
    }
    Arc::new(Mutex::new(w))
}

fn drain<T: Clone>(rx: &mut tokio::sync::broadcast::Receiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(v) => out.push(v),
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => return out,
        }
    }
}

async fn ids(store: &TestStore) -> Vec<i64> {
    store.all_people().await.unwrap().into_iter().map(|p| p.marketo_id).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn builder_validates() {
    let world = world_with(vec![]);
    let err = SyncEngine::builder().marketo(marketo(&world)).build().unwrap_err();
    assert!(matches!(err, Error::Config { field: "salesforce", .. }));
    let err = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(no_salesforce())
        .store(test_store())
        .settings(EngineSettings { page_size: 301, ..settings(InitialMode::Rest) })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { field: "page_size", .. }));
    let err = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(no_salesforce())
        .store(test_store())
        .settings(EngineSettings { instance_id: " ".into(), ..settings(InitialMode::Rest) })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { field: "instance_id", .. }));
}

#[tokio::test]
async fn rest_initial_sync_qualifies_reports_bad_records_and_positions_streams() {
    let mut bad = lead(5, Some(OWNER), "Lead");
    bad["sfdcLeadOwnerId"] = json!("not-an-id");
    let world = world_with(vec![
        lead(1, Some(OWNER), "Lead"),
        lead(2, Some(OWNER), "Contact"),
        lead(3, None, "Lead"),
        json!({"id": 4, "sfdcType": "none", "sfdcLeadOwnerId": OWNER}),
        bad,
        lead(7, Some(OWNER), "Lead"),
    ]);
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    let mut events = eng.subscribe();
    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();

    assert_eq!(report.initial_path, Some(InitialPath::Rest));
    assert_eq!(report.inserted, 3);
    assert_eq!(report.skipped_unqualified, 2);
    assert_eq!(report.record_errors.len(), 1);
    assert_eq!(report.record_errors[0].record_id, Some(5));
    assert_eq!(report.record_errors[0].field, "sfdcLeadOwnerId");
    assert!(!report.reconciled);
    assert_eq!(ids(&store).await, vec![1, 2, 7]);
    // chunks 1-3, 4-6, 7-9, then two empty ones
    assert_eq!(world.lock().unwrap().filter_starts, vec!["1", "4", "7", "10", "13"]);
    // unqualified people never touch the store
    assert!(recorder(&store).pages().iter().all(|p| p.decisions.iter().all(|d| d.marketo_id() != 3)));
    // Bound to the engine's instance: another is refused, the same one accepted.
    assert!(matches!(store.bind_instance("other").await, Err(salesync_core::Error::Conflict { .. })));
    store.bind_instance("123-ABC-456").await.unwrap();
    // streams positioned at the initial sync's start
    // (a margin earlier, for a host clock ahead of Marketo's)
    let from = t0() - chrono::Duration::minutes(crate::incremental::CLOCK_SKEW_MARGIN_MINUTES);
    assert_eq!(world.lock().unwrap().paging_token_since, vec![t0() - chrono::Duration::days(7), from]);
    let lc = position(&store, StreamId::LeadChanges).await.unwrap();
    assert_eq!(lc["token"], json!(format!("tok@{}", from.timestamp())));
    assert_eq!(position(&store, StreamId::InitialSync).await.unwrap()["status"], json!("done"));
    assert!(report.api_calls.marketo >= 9, "{:?}", report.api_calls);
    assert_eq!(report.api_calls.salesforce, 0);

    let changes = drain(&mut changes);
    assert_eq!(
        changes,
        vec![MirrorChange::Inserted { id: 1 }, MirrorChange::Inserted { id: 2 }, MirrorChange::Inserted { id: 7 }]
    );
    let events = drain(&mut events);
    assert!(events.contains(&SyncEvent::PhaseChanged { phase: Phase::Initial(InitialPath::Rest) }));
    assert!(events.iter().any(|e| matches!(e, SyncEvent::RecordFailed { error } if error.record_id == Some(5))));
    // The pass finishes, then releases the leader lease it took.
    assert!(matches!(&events[events.len() - 2..], [SyncEvent::Finished { .. }, SyncEvent::LeaderLost { .. }]));
    assert!(matches!(events.first(), Some(SyncEvent::LeaderAcquired { .. })));

    // A second pass runs no initial sync and finds nothing new.
    let again = eng.sync_once().await.unwrap();
    assert_eq!(again.initial_path, None);
    assert_eq!(again.inserted, 0);
}

#[tokio::test]
async fn checkpoint_travels_with_its_page_and_does_not_advance_when_apply_fails() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead"), lead(4, Some(OWNER), "Lead")]);
    let pages: Arc<Mutex<Vec<MirrorPage>>> = Arc::default();
    let mut store = MockStore::new();
    store.expect_bind_instance().returning(|_| Ok(()));
    store.expect_checkpoint().returning(|_| Ok(None));
    store.expect_list_people().returning(|_, _| Ok(vec![]));
    store.expect_people_by_ids().returning(|_| Ok(vec![]));
    let seen = pages.clone();
    let mut calls = 0;
    store.expect_apply_page().returning(move |page| {
        calls += 1;
        seen.lock().unwrap().push(page);
        if calls == 2 {
            return Err(salesync_core::Error::Backend { backend: "mock", source: "lost connection".into() });
        }
        Ok(ApplyCounts { inserted: 1, ..Default::default() })
    });
    store.expect_put_checkpoint().never();
    store.expect_try_lease().returning(|_, _, _, _| Ok(true));
    store.expect_release_lease().times(1).returning(|_, _| Ok(()));
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(no_salesforce())
        .store(Arc::new(store))
        .settings(settings(InitialMode::Rest))
        .build()
        .unwrap();
    let mut changes = eng.subscribe_changes();
    let err = eng.sync_once().await.unwrap_err();
    assert!(matches!(err, Error::Port(salesync_core::Error::Backend { .. })), "{err}");

    let pages = pages.lock().unwrap();
    assert_eq!(pages.len(), 2, "nothing after the failed page");
    let first = &pages[0];
    assert!(matches!(&first.decisions[..], [Decision::Insert { person }] if person.marketo_id == 1));
    let cp = first.checkpoint.as_ref().unwrap();
    assert_eq!(cp.stream, StreamId::InitialSync);
    assert_eq!(cp.position["rest"]["next_id"], json!(4));
    let second = &pages[1];
    assert!(matches!(&second.decisions[..], [Decision::Insert { person }] if person.marketo_id == 4));
    assert_eq!(second.checkpoint.as_ref().unwrap().position["rest"]["next_id"], json!(7));
    // Only the committed page was announced.
    assert_eq!(drain(&mut changes), vec![MirrorChange::Inserted { id: 1 }]);
}

#[tokio::test]
async fn rest_sync_resumes_from_its_checkpoint() {
    let world = world_with((1..=8).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    faults(&store).fail_nth(Method::ApplyPage, 2);
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    assert!(eng.sync_once().await.is_err());
    assert_eq!(ids(&store).await, vec![1, 2, 3]);
    assert_eq!(position(&store, StreamId::InitialSync).await.unwrap()["rest"]["next_id"], json!(4));

    world.lock().unwrap().filter_starts.clear();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(world.lock().unwrap().filter_starts[0], "4", "resumed after the applied page");
    assert_eq!(report.inserted, 5);
    assert_eq!(ids(&store).await, (1..=8).collect::<Vec<_>>());
}

fn csv_file(rows: &[&str]) -> Vec<u8> {
    let mut s = String::from("id,firstName,email,sfdcType,sfdcLeadOwnerId,sfdcContactId\n");
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s.into_bytes()
}

#[tokio::test(start_paused = true)]
async fn bulk_sync_reuses_its_job_after_a_restart_and_skips_applied_rows() {
    let world = world_with(vec![]);
    {
        let mut w = world.lock().unwrap();
        w.export_polls = 2;
        w.export_file = csv_file(&[
            &format!("1,Ann,a@x.com,Lead,{OWNER},null"),
            "2,Bob,b@x.com,Lead,null,null",
            &format!("3,\"Cy, Jr\",c@x.com,Contact,{OWNER},{CONTACT}"),
            &format!("4,Di,d@x.com,Lead,{OWNER},bogus"),
            &format!("5,Ed,e@x.com,Lead,{OWNER},null"),
        ]);
    }
    let store = test_store();
    faults(&store).fail_nth(Method::ApplyPage, 2);
    let mut s = settings(InitialMode::Bulk);
    s.page_size = 2;
    let eng = engine(&world, &store, s);
    let mut events = eng.subscribe();
    assert!(eng.sync_once().await.is_err());
    assert_eq!(ids(&store).await, vec![1]);
    let pos = position(&store, StreamId::InitialSync).await.unwrap();
    assert_eq!(pos["bulk"]["export_id"], json!("job-1"));
    assert_eq!(pos["bulk"]["rows_applied"], json!(2));
    let offset = pos["bulk"]["offset"].as_u64().unwrap();
    assert!(drain(&mut events).iter().any(|e| matches!(e, SyncEvent::Backoff { .. })), "status polls back off");

    let report = eng.sync_once().await.unwrap();
    {
        let w = world.lock().unwrap();
        assert_eq!(w.jobs_started, 1, "the restarted run reused the export job");
        assert_eq!(w.file_offsets, vec![0, offset], "second run resumed after the applied rows");
        assert_eq!(report.initial_path, Some(InitialPath::Bulk));
        assert_eq!(report.inserted, 2);
        assert_eq!(report.record_errors.len(), 1);
        assert_eq!(report.record_errors[0].record_id, Some(4));
    }
    assert_eq!(ids(&store).await, vec![1, 3, 5]);
    assert_eq!(person(&store, 3).await.first_name.as_deref(), Some("Cy, Jr"));
    let pos = position(&store, StreamId::InitialSync).await.unwrap();
    assert_eq!(pos["status"], json!("done"));
    assert_eq!(pos["bulk"]["window"], json!(1));
}

#[tokio::test(start_paused = true)]
async fn a_failed_export_job_is_replaced_and_repeated_failures_stop_the_pass() {
    let world = world_with(vec![]);
    {
        let mut w = world.lock().unwrap();
        w.failed_jobs.push("job-1".into());
        w.export_file = csv_file(&[&format!("1,Ann,a@x.com,Lead,{OWNER},null")]);
    }
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Bulk));
    let report = eng.sync_once().await.unwrap();
    assert_eq!(world.lock().unwrap().jobs_started, 2);
    assert_eq!(report.inserted, 1);

    let world = world_with(vec![]);
    world.lock().unwrap().failed_jobs = vec!["job-1".into(), "job-2".into(), "job-3".into()];
    let eng = engine(&world, &test_store(), settings(InitialMode::Bulk));
    let err = eng.sync_once().await.unwrap_err();
    assert!(matches!(err, Error::Export { ref export_id, .. } if export_id == "job-3"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn bulk_windows_cover_oldest_created_at_to_start() {
    let world = world_with(vec![]);
    world.lock().unwrap().export_file = csv_file(&[]);
    let store = test_store();
    let mut s = settings(InitialMode::Bulk);
    s.oldest_created_at = t0() - chrono::Duration::days(70);
    let eng = engine(&world, &store, s);
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Bulk));
    assert_eq!(world.lock().unwrap().jobs_started, 3, "70 days = three 31-day windows");
}

#[tokio::test(start_paused = true)]
async fn auto_mode_takes_the_path_with_fewer_calls() {
    // Five people, ids 1-5: two chunks of 3 ids (+2 empty ones to stop) against ten 31-day
    // windows of four calls each: REST.
    let world = world_with((1..=5).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    let mut s = settings(InitialMode::Auto);
    s.oldest_created_at = t0() - chrono::Duration::days(300);
    let report = engine(&world, &store, s).sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Rest));
    let reason = report.initial_path_reason.unwrap_or_default();
    assert!(reason.starts_with("Rest: REST ≈ 4 calls"), "{reason}");
    assert!(reason.contains("bulk ≈ 40 calls (10 windows"), "{reason}");
    assert_eq!(ids(&store).await, vec![1, 2, 3, 4, 5]);

    // Ninety people (30 chunks) against one window: bulk.
    let world = world_with((1..=90).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    world.lock().unwrap().export_file = csv_file(&[]);
    let store = test_store();
    let report = engine(&world, &store, settings(InitialMode::Auto)).sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Bulk));
    let reason = report.initial_path_reason.unwrap_or_default();
    assert!(
        reason.starts_with("Bulk: bulk ≈ 4 calls (1 windows of 31 days); REST costs more (leads found past"),
        "{reason}"
    );
    assert_eq!(world.lock().unwrap().jobs_started, 1);

    // Ids that do not start at 1 (the first leads deleted) are still found: eleven people at
    // ids 20-30 are ten chunks and two empty ones for the sweep, not an empty instance.
    let world = world_with((20..=30).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    let mut s = settings(InitialMode::Auto);
    s.oldest_created_at = t0() - chrono::Duration::days(300);
    let report = engine(&world, &store, s).sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Rest));
    let reason = report.initial_path_reason.unwrap_or_default();
    assert!(reason.starts_with("Rest: REST ≈ 12 calls (ids up to about 30,"), "{reason}");
    assert_eq!(ids(&store).await, (20..=30).collect::<Vec<_>>());

    // Bulk and REST modes do not probe or explain.
    let world = world_with(vec![lead(1, Some(OWNER), "Lead")]);
    let report = engine(&world, &test_store(), settings(InitialMode::Rest)).sync_once().await.unwrap();
    assert_eq!(report.initial_path_reason, None);
}

#[tokio::test]
async fn auto_mode_uses_rest_when_bulk_is_refused() {
    let world = world_with(vec![lead(2, Some(OWNER), "Lead")]);
    world.lock().unwrap().export_mode = ExportMode::Rejected;
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Auto));
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Rest));
    assert_eq!(ids(&store).await, vec![2]);

    // Bulk mode does not fall back.
    let world = world_with(vec![]);
    world.lock().unwrap().export_mode = ExportMode::Rejected;
    let eng = engine(&world, &test_store(), settings(InitialMode::Bulk));
    assert!(matches!(eng.sync_once().await, Err(Error::Port(salesync_core::Error::Rejected { .. }))));
}

#[tokio::test(start_paused = true)]
async fn bulk_quota_exhausted_falls_back_or_waits_as_configured() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead")]);
    world.lock().unwrap().export_mode = ExportMode::Quota;
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Bulk));
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Rest));
    assert_eq!(report.bulk_quota_action, Some(BulkQuotaAction::FellBackToRest));
    assert_eq!(ids(&store).await, vec![1]);

    // Wait: the engine backs off, then the quota is back.
    let world = world_with(vec![]);
    {
        let mut w = world.lock().unwrap();
        w.export_mode = ExportMode::Quota;
        w.export_file = csv_file(&[&format!("9,Zed,z@x.com,Lead,{OWNER},null")]);
    }
    let store = test_store();
    let mut s = settings(InitialMode::Bulk);
    s.bulk_quota = BulkQuotaPolicy::Wait { retry_after: Duration::from_secs(3600) };
    let eng = engine(&world, &store, s);
    let mut events = eng.subscribe();
    let w2 = world.clone();
    let run = tokio::spawn(async move { eng.sync_once().await });
    // Let the engine hit the quota, then restore it.
    loop {
        if let Ok(SyncEvent::Backoff { delay, .. }) = events.recv().await {
            assert_eq!(delay, Duration::from_secs(3600));
            w2.lock().unwrap().export_mode = ExportMode::Ok;
            break;
        }
    }
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Bulk));
    assert_eq!(report.bulk_quota_action, Some(BulkQuotaAction::Waited));
    assert_eq!(ids(&store).await, vec![9]);
}

fn created(id: i64, at: DateTime<Utc>) -> Value {
    let mut v = lead(id, Some(OWNER), "Lead");
    v["createdAt"] = json!(at.to_rfc3339());
    v
}

fn filter_start(f: &ExportFilter) -> DateTime<Utc> {
    match f {
        ExportFilter::CreatedAt { start, .. } | ExportFilter::UpdatedAt { start, .. } => *start,
    }
}

#[tokio::test(start_paused = true)]
async fn bulk_windows_start_at_the_probed_oldest_lead() {
    let day = |d: i64| t0() - chrono::Duration::days(d);
    // Ids 7..9 are the first chunk with leads (page size 3: chunks 1-3, 4-6 are empty); the
    // earliest createdAt among them is 40 days ago (at 15:00).
    let world = world_with(vec![
        created(7, day(30)),
        created(8, day(40) + chrono::Duration::hours(3)),
        created(9, day(35)),
        created(20, day(1)),
    ]);
    world.lock().unwrap().export_file = csv_file(&[]);
    let store = test_store();
    let mut s = settings(InitialMode::Bulk);
    s.oldest_created_at = t0() - chrono::Duration::days(3650);
    s.probe_slack = Duration::from_secs(24 * 3600);
    let eng = engine(&world, &store, s.clone());
    eng.sync_once().await.unwrap();
    let (probed, starts) = {
        let w = world.lock().unwrap();
        (w.filter_starts[..3].to_vec(), w.export_filters.iter().map(filter_start).collect::<Vec<_>>())
    };
    assert_eq!(probed, ["1", "4", "7"], "the probe walks id chunks from 1 to the first lead");
    // 2026-10-20 15:00 truncated to the day, minus the day of slack.
    let origin = Utc.with_ymd_and_hms(2026, 10, 19, 0, 0, 0).unwrap();
    assert_eq!(starts, vec![origin, origin + chrono::Duration::days(31)], "two windows instead of 118");
    let pos = position(&store, StreamId::InitialSync).await.unwrap();
    assert_eq!(pos["bulk"]["origin"], json!(origin));

    // No lead within the probe's reach, or leads without createdAt: oldest_created_at.
    for leads in [vec![], vec![lead(2, Some(OWNER), "Lead")]] {
        let world = world_with(leads);
        world.lock().unwrap().export_file = csv_file(&[]);
        let mut s = settings(InitialMode::Bulk);
        s.oldest_created_at = t0() - chrono::Duration::days(70);
        engine(&world, &test_store(), s).sync_once().await.unwrap();
        let w = world.lock().unwrap();
        assert_eq!(filter_start(&w.export_filters[0]), t0() - chrono::Duration::days(70));
        assert_eq!(w.jobs_started, 3);
        assert!(w.filter_starts.len() <= 100, "the probe is capped");
    }
}

/// A Marketo bulk queue: at most 10 jobs queued (processing included), 2 processing, the rest
/// of the service occupied by `foreign` jobs of another integration.
#[derive(Debug, Default)]
struct BulkQueue {
    /// Our jobs: (id, state, status polls left while processing).
    jobs: Vec<(String, ExportState, u32)>,
    /// Foreign jobs queued or processing; one finishes per status poll.
    foreign: usize,
    max_queued: usize,
    max_processing: usize,
    queue_full_answers: u32,
    files: Vec<String>,
}

impl BulkQueue {
    fn queued(&self) -> usize {
        self.foreign + self.jobs.iter().filter(|j| matches!(j.1, ExportState::Queued | ExportState::Processing)).count()
    }
    fn processing(&self) -> usize {
        self.foreign.min(2) + self.jobs.iter().filter(|j| j.1 == ExportState::Processing).count()
    }
    fn tick(&mut self) {
        for j in self.jobs.iter_mut().filter(|j| j.1 == ExportState::Processing) {
            j.2 -= 1;
            if j.2 == 0 {
                j.1 = ExportState::Completed;
            }
        }
        self.foreign = self.foreign.saturating_sub(1);
        self.settle();
    }
    fn settle(&mut self) {
        while self.processing() < 2 {
            let Some(j) = self.jobs.iter_mut().find(|j| j.1 == ExportState::Queued) else { break };
            j.1 = ExportState::Processing;
        }
        self.max_queued = self.max_queued.max(self.queued());
        self.max_processing = self.max_processing.max(self.processing());
    }
}

fn queue_marketo(queue: &Arc<Mutex<BulkQueue>>) -> Arc<MockMarketoApi> {
    let mut m = MockMarketoApi::new();
    m.expect_rate_budget().returning(|| None);
    m.expect_lead_schema().returning(|| {
        Ok(LeadSchema { fields: all_field_names().into_iter().map(String::from).collect(), searchable: vec![] })
    });
    m.expect_paging_token().returning(|since| Ok(format!("tok@{}", since.timestamp())));
    m.expect_lead_changes().returning(|token, _| Ok(page(vec![], token, false)));
    m.expect_deleted_leads().returning(|token| Ok(page(vec![], token, false)));
    m.expect_activities().returning(|token, _, _| Ok(page(vec![], token, false)));
    let q = queue.clone();
    m.expect_start_lead_export().returning(move |_, _| {
        let mut q = q.lock().unwrap();
        if q.queued() >= 10 {
            q.queue_full_answers += 1;
            return Err(salesync_core::Error::RateLimited { service: Service::Marketo, retry_after: None });
        }
        let id = format!("job-{}", q.jobs.len() + 1);
        q.jobs.push((id.clone(), ExportState::Queued, 2));
        q.settle();
        Ok(job(&id, ExportState::Queued))
    });
    let q = queue.clone();
    m.expect_lead_export_status().returning(move |id| {
        let mut q = q.lock().unwrap();
        q.tick();
        let state = q.jobs.iter().find(|j| j.0 == id).map(|j| j.1).unwrap();
        Ok(job(id, state))
    });
    let q = queue.clone();
    m.expect_lead_export_file().returning(move |id, _| {
        let mut q = q.lock().unwrap();
        let j = q.jobs.iter().find(|j| j.0 == id).unwrap();
        assert_eq!(j.1, ExportState::Completed, "files are read once complete");
        q.files.push(id.to_string());
        let n: i64 = id.trim_start_matches("job-").parse().unwrap();
        let bytes = csv_file(&[&format!("{n},P{n},p{n}@x.com,Lead,{OWNER},null")]);
        Ok(futures::stream::iter(vec![Ok(bytes)]).boxed())
    });
    Arc::new(m)
}

#[tokio::test(start_paused = true)]
async fn bulk_pipeline_stays_within_marketo_job_limits_and_applies_in_order() {
    let queue = Arc::new(Mutex::new(BulkQueue { foreign: 7, ..Default::default() }));
    let store = test_store();
    let mut s = settings(InitialMode::Bulk);
    s.probe_oldest = false;
    s.bulk_jobs_ahead = 10;
    s.oldest_created_at = t0() - chrono::Duration::days(31 * 12);
    let eng = SyncEngine::builder()
        .marketo(queue_marketo(&queue))
        .salesforce(no_salesforce())
        .store(store.clone())
        .settings(s)
        .build()
        .unwrap();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Bulk));
    {
        let q = queue.lock().unwrap();
        assert_eq!(q.jobs.len(), 13, "twelve 31-day windows and the last second");
        assert!(q.max_queued <= 10, "{} queued", q.max_queued);
        assert!(q.max_processing <= 2, "{} processing", q.max_processing);
        assert!(q.max_queued >= 9, "jobs were created ahead ({} queued)", q.max_queued);
        assert!(q.queue_full_answers > 0, "the foreign jobs filled the queue once");
        let want: Vec<String> = (1..=13).map(|n| format!("job-{n}")).collect();
        assert_eq!(q.files, want, "windows are applied in order");
    }
    assert_eq!(ids(&store).await, (1..=13).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_restart_reuses_the_jobs_in_flight_and_applies_them_in_order() {
    let world = world_with(vec![]);
    {
        let mut w = world.lock().unwrap();
        w.export_polls = 1;
        for n in 1..=3 {
            w.job_files.insert(format!("job-{n}"), csv_file(&[&format!("{n},P{n},p{n}@x.com,Lead,{OWNER},null")]));
        }
    }
    let store = test_store();
    faults(&store).fail_nth(Method::ApplyPage, 2);
    let mut s = settings(InitialMode::Bulk);
    s.oldest_created_at = t0() - chrono::Duration::days(70);
    let eng = engine(&world, &store, s);
    assert!(eng.sync_once().await.is_err(), "the second window's page fails");
    assert_eq!(ids(&store).await, vec![1]);
    let pos = position(&store, StreamId::InitialSync).await.unwrap();
    assert_eq!(pos["bulk"]["window"], json!(1));
    assert_eq!(pos["bulk"]["export_id"], json!("job-2"));
    assert_eq!(pos["bulk"]["ahead"], json!(["job-3"]));
    assert_eq!(world.lock().unwrap().jobs_started, 3, "all three windows were in flight");

    world.lock().unwrap().file_jobs.clear();
    let report = eng.sync_once().await.unwrap();
    {
        let w = world.lock().unwrap();
        assert_eq!(w.jobs_started, 3, "the restarted run created no job");
        assert_eq!(w.file_jobs, ["job-2", "job-3"]);
        assert_eq!(report.inserted, 2);
    }
    assert_eq!(ids(&store).await, vec![1, 2, 3]);
    let pos = position(&store, StreamId::InitialSync).await.unwrap();
    assert_eq!(pos["status"], json!("done"));
    assert_eq!(pos["bulk"]["window"], json!(3));
}

#[tokio::test(start_paused = true)]
async fn quota_exhausted_while_creating_ahead_finishes_the_jobs_held_then_falls_back() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead"), lead(2, Some(OWNER), "Contact")]);
    {
        let mut w = world.lock().unwrap();
        w.quota_after = Some(2);
        w.export_file = csv_file(&[&format!("1,P1,p1@x.com,Lead,{OWNER},null")]);
    }
    let store = test_store();
    let mut s = settings(InitialMode::Bulk);
    s.oldest_created_at = t0() - chrono::Duration::days(100);
    let eng = engine(&world, &store, s);
    let report = eng.sync_once().await.unwrap();
    {
        let w = world.lock().unwrap();
        assert_eq!(w.jobs_started, 2);
        assert_eq!(w.file_jobs, ["job-1", "job-2"], "the jobs already created were used");
        assert_eq!(report.initial_path, Some(InitialPath::Rest));
        assert_eq!(report.bulk_quota_action, Some(BulkQuotaAction::FellBackToRest));
    }
    assert_eq!(ids(&store).await, vec![1, 2]);
}

/// A store and engine whose initial sync is done with people 1..=4 (1, 2 Leads; 3, 4 Contacts).
async fn synced(extra: Vec<Value>) -> (W, Arc<TestStore>, SyncEngine) {
    let mut leads: Vec<Value> = vec![
        lead(1, Some(OWNER), "Lead"),
        lead(2, Some(OWNER), "Lead"),
        lead(3, Some(OWNER), "Contact"),
        lead(4, Some(OWNER), "Contact"),
    ];
    leads.extend(extra);
    let world = world_with(leads);
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    eng.sync_once().await.unwrap();
    (world, store, eng)
}

#[tokio::test]
async fn incremental_updates_disqualifies_and_requalifies() {
    let (world, store, eng) = synced(vec![lead(6, None, "Lead")]).await;
    assert_eq!(ids(&store).await, vec![1, 2, 3, 4]);
    {
        let mut w = world.lock().unwrap();
        w.leads.insert(1, lead(1, None, "Lead")); // lost its owner
        let mut two = lead(2, Some(OWNER), "Lead");
        two["title"] = json!("CTO");
        w.leads.insert(2, two);
        w.leads.insert(6, lead(6, Some(OWNER), "Lead")); // gained one
        w.leads.remove(&4); // gone from Marketo: left to the deleted-leads stream
        w.changes.push_back(page(vec![act(1, 13, vec![]), act(2, 13, vec![])], "lc-1", true));
        w.changes.push_back(page(vec![act(6, 13, vec![]), act(4, 13, vec![]), act(6, 13, vec![])], "lc-2", false));
    }
    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.removed.disqualified, 1);
    assert_eq!(report.updated, 1);
    assert_eq!(report.inserted, 1);
    assert_eq!(ids(&store).await, vec![2, 3, 4, 6]);
    assert_eq!(person(&store, 2).await.title.as_deref(), Some("CTO"));
    assert_eq!(tombstone(&store, 1).await.reason, RemovalReason::Disqualified { why: dq::NoOwner });
    assert_eq!(
        drain(&mut changes),
        vec![
            MirrorChange::Removed { id: 1, reason: RemovalReason::Disqualified { why: dq::NoOwner } },
            MirrorChange::Updated { id: 2, changed: vec![LeadField::Title] },
            MirrorChange::Inserted { id: 6 },
        ]
    );
    // Requalifies later: back in the mirror.
    world.lock().unwrap().leads.insert(1, lead(1, Some(OWNER), "Lead"));
    world.lock().unwrap().changes.push_back(page(vec![act(1, 13, vec![])], "lc-3", false));
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.inserted, 1);
    assert_eq!(drain(&mut changes), vec![MirrorChange::Inserted { id: 1 }]);
    let lc = position(&store, StreamId::LeadChanges).await.unwrap();
    assert_eq!(lc["token"], json!("lc-3"));
    assert_eq!(lc["as_of"], json!(t0()));
    // each page's token went into the page's own apply
    let pages = recorder(&store).pages();
    let tokens: Vec<Value> = pages
        .iter()
        .filter_map(|p| p.checkpoint.as_ref())
        .filter(|c| c.stream == StreamId::LeadChanges)
        .map(|c| c.position["token"].clone())
        .collect();
    assert!(tokens.windows(2).any(|w| w == [json!("lc-1"), json!("lc-2")]), "{tokens:?}");
}

#[tokio::test]
async fn lead_changes_token_is_not_advanced_when_the_page_fails() {
    let (world, store, eng) = synced(vec![]).await;
    world.lock().unwrap().changes.push_back(page(vec![act(2, 13, vec![])], "lc-1", false));
    let before = position(&store, StreamId::LeadChanges).await.unwrap();
    faults(&store).fail_nth(Method::ApplyPage, 1);
    assert!(eng.sync_once().await.is_err());
    assert_eq!(position(&store, StreamId::LeadChanges).await.unwrap(), before);
}

#[tokio::test]
async fn deletes_and_merges_remove_with_reasons_and_refetch_the_winner() {
    let (world, store, eng) = synced(vec![]).await;
    {
        let mut w = world.lock().unwrap();
        w.leads.remove(&2);
        w.leads.remove(&4);
        let mut winner = lead(3, Some(OWNER), "Contact");
        winner["phone"] = json!("+1 555");
        w.leads.insert(3, winner);
        w.deletes.push_back(page(vec![act(2, 37, vec![]), act(99, 37, vec![])], "del-1", false));
        w.merges.push_back(page(vec![act(3, 32, vec![("Merge IDs", json!("[4]"))])], "mrg-1", false));
    }
    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.removed.deleted, 1);
    assert_eq!(report.removed.merged, 1);
    assert_eq!(report.skipped_not_in_mirror, 1, "deletion of someone the mirror never had");
    assert_eq!(report.updated, 1);
    assert_eq!(ids(&store).await, vec![1, 3]);
    assert_eq!(tombstone(&store, 4).await.reason, RemovalReason::Merged { winner: 3 });
    assert_eq!(person(&store, 3).await.phone.as_deref(), Some("+1 555"));
    let got = drain(&mut changes);
    assert!(got.contains(&MirrorChange::Removed { id: 2, reason: RemovalReason::Deleted }));
    assert!(got.contains(&MirrorChange::Removed { id: 4, reason: RemovalReason::Merged { winner: 3 } }));
    assert_eq!(position(&store, StreamId::DeletedLeads).await.unwrap()["token"], json!("del-1"));
    let lc = position(&store, StreamId::LeadChanges).await.unwrap();
    assert_eq!(lc["merges_token"], json!("mrg-1"));
    assert!(world.lock().unwrap().activity_calls.iter().any(|(t, _)| t == &[32]));
}

#[test]
fn merge_ids_are_read_leniently() {
    use crate::incremental::merge_losers;
    let a = |v: Value| act(10, 32, vec![("Merge IDs", v)]);
    assert_eq!(merge_losers(&a(json!("[11, 12]"))), vec![11, 12]);
    assert_eq!(merge_losers(&a(json!("11,12,10"))), vec![11, 12]);
    assert_eq!(merge_losers(&a(json!([11, "12"]))), vec![11, 12]);
    assert_eq!(merge_losers(&a(json!(13))), vec![13]);
    assert!(merge_losers(&act(10, 32, vec![])).is_empty());
}

#[tokio::test]
async fn stale_deleted_leads_position_triggers_a_reconciling_resync() {
    let (world, store, _) = synced(vec![]).await;
    world.lock().unwrap().leads.remove(&3); // deleted long ago, deletion pruned
    let mut s = settings(InitialMode::Rest);
    s.clock = Arc::new(|| t0() + chrono::Duration::days(15));
    let eng = engine(&world, &store, s);
    let report = eng.sync_once().await.unwrap();
    assert!(report.reconciled);
    assert_eq!(report.removed.vanished, 1);
    assert_eq!(tombstone(&store, 3).await.reason, RemovalReason::Vanished);
    assert_eq!(ids(&store).await, vec![1, 2, 4]);
    assert_eq!(
        position(&store, StreamId::DeletedLeads).await.unwrap()["as_of"],
        json!(t0() + chrono::Duration::days(15)),
        "streams restarted at the resync"
    );
}

#[tokio::test]
async fn rejected_token_triggers_a_reconciling_resync() {
    let (world, store, eng) = synced(vec![]).await;
    {
        let mut w = world.lock().unwrap();
        w.reject_token = true;
        w.leads.remove(&1);
        w.leads.insert(1000, lead(1000, Some(OWNER), "Lead")); // far beyond a gap
    }
    // The mirror knows nobody that high, so the sweep stops at its gap: 1000 is found by the
    // incremental pass that follows the resync (New Lead activity).
    world.lock().unwrap().changes.push_back(page(vec![act(1000, 12, vec![])], "lc-9", false));
    let report = eng.sync_once().await.unwrap();
    assert!(report.reconciled);
    assert_eq!(report.removed.vanished, 1);
    assert_eq!(ids(&store).await, vec![2, 3, 4, 1000]);
}

#[tokio::test]
async fn rest_sweep_jumps_to_mirror_people_beyond_a_gap() {
    let (world, store, eng) = synced(vec![]).await;
    // Someone in the mirror far beyond the sweep's stop distance is still checked.
    let mut p = person(&store, 1).await;
    p.marketo_id = 500;
    store
        .apply_page(MirrorPage { decisions: vec![Decision::Insert { person: p }], checkpoint: None, at: t0() })
        .await
        .unwrap();
    world.lock().unwrap().reject_token = true;
    let report = eng.sync_once().await.unwrap();
    assert!(report.reconciled);
    assert_eq!(tombstone(&store, 500).await.reason, RemovalReason::Vanished);
    assert!(world.lock().unwrap().filter_starts.contains(&"500".to_string()));
}

#[tokio::test]
async fn opportunities_are_filled_from_salesforce() {
    let mut c = lead(1, Some(OWNER), "Contact");
    c["sfdcContactId"] = json!(CONTACT);
    let mut l = lead(2, Some(OWNER), "Lead");
    l["sfdcLeadId"] = json!(LEAD);
    let mut m = lead(3, Some(OWNER), "Contact");
    m["sfdcOpptyId"] = json!(OPP2); // Marketo gave it: no lookup
    let world = world_with(vec![c, l, m, lead(4, Some(OWNER), "Contact")]);
    let mut sf = MockSalesforceApi::new();
    sf.expect_opportunities_for_contacts().times(1).returning(|ids| {
        assert_eq!(ids, &[sfid(CONTACT)]);
        Ok(vec![(sfid(CONTACT), Some(sfid(OPP)))])
    });
    sf.expect_lead_conversions().times(1).returning(|ids| {
        assert_eq!(ids, &[sfid(LEAD)]);
        Ok(vec![LeadConversion {
            lead_id: sfid(LEAD),
            converted: true,
            contact_id: Some(sfid(CONTACT)),
            account_id: None,
            opportunity_id: Some(sfid(OPP2)),
        }])
    });
    // The Salesforce stream runs after the Marketo streams: nothing changed there.
    sf.expect_opportunity_changes().times(1).returning(|_, _| Ok(OpportunityChanges::default()));
    sf.expect_api_usage().returning(|| None);
    let store = test_store();
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(Arc::new(sf))
        .store(store.clone())
        .settings(EngineSettings { opportunity_lookup: true, ..settings(InitialMode::Rest) })
        .build()
        .unwrap();
    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.opportunities_resolved, 2);
    assert_eq!(report.api_calls.salesforce, 3);
    assert_eq!(person(&store, 1).await.salesforce_opportunity, OpportunityRef::Salesforce(Some(sfid(OPP))));
    assert_eq!(person(&store, 2).await.salesforce_opportunity, OpportunityRef::Salesforce(Some(sfid(OPP2))));
    assert_eq!(person(&store, 3).await.salesforce_opportunity, OpportunityRef::Marketo(sfid(OPP2)));
    assert_eq!(
        person(&store, 4).await.salesforce_opportunity,
        OpportunityRef::Unresolved,
        "contact without contact id"
    );
    assert!(
        drain(&mut changes)
            .contains(&MirrorChange::Updated { id: 1, changed: vec![LeadField::SalesforceOpportunityId] })
    );
}

#[tokio::test]
async fn opportunity_lookup_failure_is_a_warning() {
    let mut c = lead(1, Some(OWNER), "Contact");
    c["sfdcContactId"] = json!(CONTACT);
    let world = world_with(vec![c]);
    let mut sf = MockSalesforceApi::new();
    sf.expect_opportunities_for_contacts().returning(|_| {
        Err(salesync_core::Error::AccessDenied {
            service: Service::Salesforce,
            code: "INSUFFICIENT_ACCESS".into(),
            message: "no".into(),
        })
    });
    sf.expect_opportunity_changes().returning(|_, _| Ok(OpportunityChanges::default()));
    sf.expect_api_usage().returning(|| None);
    let store = test_store();
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(Arc::new(sf))
        .store(store.clone())
        .settings(EngineSettings { opportunity_lookup: true, ..settings(InitialMode::Rest) })
        .build()
        .unwrap();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.inserted, 1);
    assert_eq!(report.warnings.len(), 1);
    assert!(person(&store, 1).await.salesforce_opportunity.needs_lookup());

    // Later, Salesforce answers: the sweep fills what is still unresolved.
    let mut sf = MockSalesforceApi::new();
    sf.expect_opportunities_for_contacts().times(1).returning(|_| Ok(vec![(sfid(CONTACT), None)]));
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(Arc::new(sf))
        .store(store.clone())
        .settings(EngineSettings { opportunity_lookup: true, ..settings(InitialMode::Rest) })
        .build()
        .unwrap();
    let report = eng.resolve_opportunities().await.unwrap();
    assert_eq!(report.opportunities_resolved, 1);
    assert_eq!(person(&store, 1).await.salesforce_opportunity, OpportunityRef::Salesforce(None));
}

/// Salesforce changes reach the mirror with no Marketo change: the people the stream names are
/// looked up again, those whose opportunity differs are written with the stream's new mark, a
/// Marketo-given opportunity is kept, and a pass without changes writes nothing.
#[tokio::test]
async fn salesforce_opportunity_changes_reach_the_mirror_without_marketo() {
    let mut c = lead(1, Some(OWNER), "Contact");
    c["sfdcContactId"] = json!(CONTACT);
    let mut m = lead(3, Some(OWNER), "Contact");
    m["sfdcContactId"] = json!(CONTACT2);
    m["sfdcOpptyId"] = json!(OPP2);
    let world = world_with(vec![c, m]);
    let stamp = t0() + chrono::Duration::minutes(3);
    let calls = Arc::new(Mutex::new(Vec::<DateTime<Utc>>::new()));
    let mut sf = MockSalesforceApi::new();
    let pass = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let p = pass.clone();
    sf.expect_opportunities_for_contacts().returning(move |ids| {
        // Initial fill: no opportunity yet; after the Salesforce change: OPP.
        let opp = (p.load(std::sync::atomic::Ordering::SeqCst) > 0).then(|| sfid(OPP));
        Ok(ids.iter().map(|id| (id.clone(), opp.clone())).collect())
    });
    let (p, seen) = (pass.clone(), calls.clone());
    sf.expect_opportunity_changes().returning(move |since, _| {
        seen.lock().unwrap().push(since);
        Ok(match p.load(std::sync::atomic::Ordering::SeqCst) {
            1 => OpportunityChanges {
                contacts: vec![sfid(CONTACT), sfid(CONTACT2)],
                converted_leads: vec![],
                newest: Some(stamp),
                truncated: false,
            },
            _ => OpportunityChanges::default(),
        })
    });
    // The org's daily allocation: plenty left until the last pass.
    let p = pass.clone();
    sf.expect_api_usage().returning(move || {
        let used = if p.load(std::sync::atomic::Ordering::SeqCst) >= 3 { 95_000 } else { 10 };
        Some(salesync_core::ports::salesforce::ApiUsage { used, max: 100_000 })
    });
    let store = test_store();
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(Arc::new(sf))
        .store(store.clone())
        .settings(EngineSettings { opportunity_lookup: true, ..settings(InitialMode::Rest) })
        .build()
        .unwrap();
    eng.sync_once().await.unwrap();
    assert_eq!(person(&store, 1).await.salesforce_opportunity, OpportunityRef::Salesforce(None));

    pass.store(1, std::sync::atomic::Ordering::SeqCst);
    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.updated, 1, "{report:?}");
    assert_eq!(person(&store, 1).await.salesforce_opportunity, OpportunityRef::Salesforce(Some(sfid(OPP))));
    assert_eq!(person(&store, 3).await.salesforce_opportunity, OpportunityRef::Marketo(sfid(OPP2)));
    assert_eq!(
        drain(&mut changes),
        vec![MirrorChange::Updated { id: 1, changed: vec![LeadField::SalesforceOpportunityId] }]
    );
    assert_eq!(
        position(&store, StreamId::SalesforceOpportunities).await.unwrap()["since"],
        json!(stamp.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    );

    pass.store(2, std::sync::atomic::Ordering::SeqCst);
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.updated, 0);
    // Each read starts five minutes before the mark: first the initial sync's start less the
    // clock margin, then the newest SystemModstamp seen.
    let seen = calls.lock().unwrap().clone();
    let margin = chrono::Duration::minutes(crate::incremental::CLOCK_SKEW_MARGIN_MINUTES + 5);
    assert_eq!(seen[0], t0() - margin);
    assert_eq!(seen[2], stamp - chrono::Duration::minutes(5));

    // With 95 % of the org's daily allocation used, the stream reads nothing and says so.
    pass.store(3, std::sync::atomic::Ordering::SeqCst);
    let report = eng.sync_once().await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 3, "no read once the allocation is nearly used");
    assert!(report.warnings.iter().any(|w| w.contains("95000 of the org's 100000")), "{:?}", report.warnings);
}

/// A mass change in Salesforce (more people than the stream looks up one by one) is compared
/// with one org-wide read instead, and the stream resumes from before that read.
#[tokio::test]
async fn a_mass_salesforce_change_is_compared_with_an_org_wide_read() {
    let mut c = lead(1, Some(OWNER), "Contact");
    c["sfdcContactId"] = json!(CONTACT);
    let world = world_with(vec![c]);
    let mut sf = MockSalesforceApi::new();
    sf.expect_opportunities_for_contacts().returning(|ids| Ok(ids.iter().map(|id| (id.clone(), None)).collect()));
    sf.expect_api_usage().returning(|| None);
    let initial_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = initial_done.clone();
    sf.expect_opportunity_changes().returning(move |_, limit| {
        assert!(limit >= 1000, "{limit}");
        let truncated = done.load(std::sync::atomic::Ordering::SeqCst);
        Ok(OpportunityChanges { truncated, ..Default::default() })
    });
    sf.expect_opportunity_links().times(1).returning(|| {
        Ok(salesync_core::ports::salesforce::OpportunityLinks {
            contacts: [(sfid(CONTACT), sfid(OPP))].into_iter().collect(),
            converted_leads: Default::default(),
        })
    });
    let store = test_store();
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(Arc::new(sf))
        .store(store.clone())
        .settings(EngineSettings { opportunity_lookup: true, ..settings(InitialMode::Rest) })
        .build()
        .unwrap();
    eng.sync_once().await.unwrap();
    initial_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.updated, 1, "{report:?}");
    assert_eq!(person(&store, 1).await.salesforce_opportunity, OpportunityRef::Salesforce(Some(sfid(OPP))));
    assert!(position(&store, StreamId::SalesforceOpportunities).await.is_some());
}

#[tokio::test]
async fn rest_sweep_reaches_recent_new_leads_beyond_a_gap() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead"), lead(2000, Some(OWNER), "Lead")]);
    world.lock().unwrap().insight.push(act(2000, 12, vec![]));
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    eng.sync_once().await.unwrap();
    assert_eq!(ids(&store).await, vec![1, 2000]);
    let pos = position(&store, StreamId::InitialSync).await.unwrap();
    assert_eq!(pos["rest"]["probed_max"], json!(2000));
    assert!(world.lock().unwrap().activity_calls.iter().any(|(t, _)| t == &[12]));
}

#[tokio::test]
async fn run_stops_when_credentials_need_an_operator() {
    let mut m = MockMarketoApi::new();
    m.expect_rate_budget().returning(|| None);
    m.expect_lead_schema().returning(|| {
        Err(salesync_core::Error::Unauthenticated { service: Service::Marketo, detail: "invalid_client".into() })
    });
    m.expect_paging_token().returning(|_| Ok("t".into()));
    m.expect_activities().returning(|t, _, _| Ok(page(vec![], t, false)));
    let eng = SyncEngine::builder()
        .marketo(Arc::new(m))
        .salesforce(no_salesforce())
        .store(test_store())
        .settings(settings(InitialMode::Rest))
        .build()
        .unwrap();
    let err = eng.run(CancellationToken::new()).await.unwrap_err();
    assert!(matches!(err, Error::Port(salesync_core::Error::Unauthenticated { .. })));
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead")]);
    let mut m = MockMarketoApi::new();
    m.expect_rate_budget().returning(|| None);
    let mut failed = false;
    m.expect_lead_schema().returning(move || {
        if !failed {
            failed = true;
            return Err(salesync_core::Error::RateLimited {
                service: Service::Marketo,
                retry_after: Some(Duration::from_millis(1)),
            });
        }
        Ok(LeadSchema { fields: vec![], searchable: vec![] })
    });
    let inner = marketo(&world);
    let w = world.clone();
    m.expect_leads_by_filter().returning(move |_, values, _, _| {
        let w = w.lock().unwrap();
        let items = values.iter().filter_map(|v| w.leads.get(&v.parse::<i64>().unwrap())).map(record).collect();
        Ok(Page::last(items, None))
    });
    m.expect_paging_token().returning(|_| Ok("t".into()));
    m.expect_lead_changes().returning(|t, _| Ok(page(vec![], t, false)));
    m.expect_deleted_leads().returning(|t| Ok(page(vec![], t, false)));
    m.expect_activities().returning(|t, _, _| Ok(page(vec![], t, false)));
    drop(inner);
    let store = test_store();
    let eng = SyncEngine::builder()
        .marketo(Arc::new(m))
        .salesforce(no_salesforce())
        .store(store.clone())
        .settings(settings(InitialMode::Rest))
        .build()
        .unwrap();
    let mut events = eng.subscribe();
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.inserted, 1);
    assert!(drain(&mut events).iter().any(|e| matches!(e, SyncEvent::Backoff { .. })));
}

#[tokio::test]
async fn cancellation_stops_between_pages_and_run_returns() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead")]);
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    let cancel = CancellationToken::new();
    cancel.cancel();
    assert!(matches!(eng.sync_once_with(&cancel).await, Err(Error::Cancelled)));
    assert_eq!(recorder(&store).calls(Method::ApplyPage), 0);
    eng.run(cancel).await.unwrap();

    // Cancelled after the first page: the checkpoint matches what was applied, and the next
    // pass resumes from it.
    let world = world_with((1..=6).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    let cancel = CancellationToken::new();
    let mut changes = eng.subscribe_changes();
    let (e2, c2) = (eng.clone(), cancel.clone());
    let task = tokio::spawn(async move { e2.sync_once_with(&c2).await });
    let _ = changes.recv().await;
    cancel.cancel();
    let result = task.await.unwrap();
    if result.is_err() {
        let pos = position(&store, StreamId::InitialSync).await.unwrap();
        let next = pos["rest"]["next_id"].as_i64().unwrap();
        assert!(ids(&store).await.iter().all(|i| *i < next), "nothing applied beyond the checkpoint");
    }
    eng.sync_once().await.unwrap();
    assert_eq!(ids(&store).await, (1..=6).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn run_polls_until_cancelled() {
    let world = world_with(vec![lead(1, Some(OWNER), "Lead")]);
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    let mut events = eng.subscribe();
    let cancel = CancellationToken::new();
    let (e2, c2) = (eng.clone(), cancel.clone());
    let task = tokio::spawn(async move { e2.run(c2).await });
    let mut finished = 0;
    while finished < 3 {
        if let Ok(SyncEvent::Finished { .. }) = events.recv().await {
            finished += 1;
        }
    }
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(ids(&store).await, vec![1]);
}

#[tokio::test]
async fn lagging_subscribers_see_lagged_and_never_block() {
    let world = world_with((1..=9).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    let eng = engine(&world, &store, EngineSettings { channel_capacity: 2, ..settings(InitialMode::Rest) });
    let mut changes = eng.subscribe_changes();
    eng.sync_once().await.unwrap();
    assert!(matches!(changes.try_recv(), Err(TryRecvError::Lagged(_))));
    assert_eq!(changes.try_recv().unwrap(), MirrorChange::Inserted { id: 8 });
}

#[tokio::test]
async fn store_bound_to_another_instance_is_refused() {
    let world = world_with(vec![]);
    let store = test_store();
    store.bind_instance("other").await.unwrap();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    assert!(matches!(eng.sync_once().await, Err(Error::Port(salesync_core::Error::Conflict { .. }))));
}

#[tokio::test]
async fn mirror_reader_pages_and_finds_duplicates() {
    let mut a = lead(1, Some(OWNER), "Lead");
    a["email"] = json!("same@x.com");
    let mut b = lead(2, Some(OWNER), "Lead");
    b["email"] = json!("SAME@x.com");
    let world = world_with(vec![a, b, lead(3, Some(OWNER), "Lead")]);
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    eng.sync_once().await.unwrap();
    let mirror = eng.mirror();
    assert_eq!(mirror.count().await.unwrap(), 3);
    assert_eq!(mirror.by_email("same@x.com").await.unwrap().len(), 2);
    assert_eq!(mirror.get(3).await.unwrap().unwrap().marketo_id, 3);
    let p1 = mirror.list(PageRequest::first(2)).await.unwrap();
    assert_eq!(p1.people.len(), 2);
    let p2 = mirror.list(p1.next.unwrap()).await.unwrap();
    assert_eq!(p2.people.iter().map(|p| p.marketo_id).collect::<Vec<_>>(), vec![3]);
    assert!(p2.next.is_none());
    let owned = mirror.by_owner(&sfid(OWNER), PageRequest::first(10)).await.unwrap();
    assert_eq!(owned.people.len(), 3);
    assert!(mirror.tombstone(1).await.unwrap().is_none());
}

#[tokio::test]
async fn insight_activities_resolve_types_by_name_newest_first() {
    let world = world_with(vec![]);
    {
        let mut w = world.lock().unwrap();
        let mut old = act(7, 1, vec![]);
        old.activity_date = t0() - chrono::Duration::hours(2);
        let mut new = act(7, 46, vec![]);
        new.activity_date = t0();
        let mut call = act(7, 100_007, vec![]);
        call.activity_date = t0() - chrono::Duration::hours(1);
        w.insight = vec![old, new, call, act(8, 6, vec![])];
    }
    let store = test_store();
    let eng = engine(&world, &store, settings(InitialMode::Rest));
    let got = eng.insight_activities(7, t0() - chrono::Duration::days(30), &InsightKind::ALL).await.unwrap();
    assert_eq!(got.iter().map(|a| a.activity_type_id).collect::<Vec<_>>(), vec![46, 100_007, 1]);
    let got = eng.insight_activities(7, t0(), &[InsightKind::Web]).await.unwrap();
    assert_eq!(got.len(), 1);
    let calls = world.lock().unwrap().activity_calls.clone();
    assert!(calls.iter().all(|(types, leads)| types.len() <= 10 && leads == &[7]));
    assert_eq!(calls.last().unwrap().0, vec![1]);
}

/// The whole life of a mirror against salesync-store's `MemoryStore`: initial sync, changes,
/// deletes, merges, a reconciling resync, restart with a new engine on the same store.
#[tokio::test]
async fn full_lifecycle_on_the_memory_store() {
    let mut dup = lead(3, Some(OWNER), "Contact");
    dup["email"] = json!("p1@example.com"); // same email as 1: two people
    let world =
        world_with(vec![lead(1, Some(OWNER), "Lead"), lead(2, Some(OWNER), "Lead"), dup, lead(4, None, "Lead")]);
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let make = |s: EngineSettings| {
        SyncEngine::builder()
            .marketo(marketo(&world))
            .salesforce(no_salesforce())
            .store(store.clone())
            .settings(s)
            .build()
            .unwrap()
    };
    let eng = make(settings(InitialMode::Rest));
    let report = eng.sync_once().await.unwrap();
    assert_eq!((report.inserted, report.skipped_unqualified), (3, 1));
    let mirror = eng.mirror();
    assert_eq!(mirror.count().await.unwrap(), 3);
    assert_eq!(mirror.by_email("P1@example.com").await.unwrap().len(), 2);

    {
        let mut w = world.lock().unwrap();
        w.leads.insert(4, lead(4, Some(OWNER), "Lead"));
        w.leads.insert(1, lead(1, None, "Lead"));
        w.leads.remove(&2);
        w.changes.push_back(page(vec![act(4, 13, vec![]), act(1, 13, vec![])], "lc-1", false));
        w.deletes.push_back(page(vec![act(2, 37, vec![])], "del-1", false));
        w.merges.push_back(page(vec![act(4, 32, vec![("Merge IDs", json!([3]))])], "m-1", false));
        w.leads.remove(&3);
    }
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.inserted, 1);
    assert_eq!(report.removed, RemovedCounts { disqualified: 1, deleted: 1, merged: 1, vanished: 0 });
    assert_eq!(mirror.count().await.unwrap(), 1);
    assert_eq!(mirror.tombstone(3).await.unwrap().unwrap().reason, RemovalReason::Merged { winner: 4 });
    assert_eq!(mirror.tombstone(2).await.unwrap().unwrap().reason, RemovalReason::Deleted);

    // A new engine on the same store (a restart) does not redo the initial sync.
    let eng2 = make(settings(InitialMode::Rest));
    let report = eng2.sync_once().await.unwrap();
    assert_eq!(report.initial_path, None);
    assert_eq!(report.pages, 3, "one empty page per stream");

    // Two weeks later the deletions may be pruned: reconcile.
    world.lock().unwrap().leads.remove(&4);
    let later =
        make(EngineSettings { clock: Arc::new(|| t0() + chrono::Duration::days(20)), ..settings(InitialMode::Rest) });
    let report = later.sync_once().await.unwrap();
    assert!(report.reconciled);
    assert_eq!(report.removed.vanished, 1);
    assert_eq!(mirror.count().await.unwrap(), 0);
    let cp = store.checkpoint(StreamId::InitialSync).await.unwrap().unwrap();
    assert_eq!(cp.position["status"], json!("done"));
    assert_eq!(cp.position["reconcile"], json!(true));

    // The store stays bound to its instance.
    let other = make(EngineSettings { instance_id: "999-XYZ-000".into(), ..settings(InitialMode::Rest) });
    assert!(other.sync_once().await.is_err());
}

// ---------------------------------------------------------------------------------------------
// Leader lease.

fn leader_events(events: &[SyncEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::LeaderAcquired { holder } => Some(format!("acquired {holder}")),
            SyncEvent::LeaderLost { holder, reason } => Some(format!("lost {holder}: {reason}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn sync_once_fails_fast_while_another_process_leads_then_takes_and_releases_the_lease() {
    let world = world_with((1..=4).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    assert!(store.try_lease(MARKETO_PULL_LEASE, "other", Duration::from_secs(30), t0()).await.unwrap());
    let clock = salesync_core::clock::ManualClock::new(t0());
    let s = EngineSettings { worker_id: "me".into(), clock: Arc::new(clock.clone()), ..settings(InitialMode::Rest) };
    let eng = engine(&world, &store, s);
    let mut events = eng.subscribe();

    let err = eng.sync_once().await.unwrap_err();
    assert!(matches!(&err, Error::NotLeader { lease: "marketo-pull", holder } if holder == "me"), "{err}");
    assert!(err.is_retryable());
    // Nothing pulled, nothing written, the leader's lease untouched.
    assert!(world.lock().unwrap().filter_starts.is_empty());
    assert!(world.lock().unwrap().paging_token_since.is_empty());
    assert_eq!(recorder(&store).calls(Method::ApplyPage), 0);
    assert_eq!(recorder(&store).lease(MARKETO_PULL_LEASE).unwrap().0, "other");
    assert!(leader_events(&drain(&mut events)).is_empty());

    // The other process's lease runs out: this one pulls, then releases the lease.
    clock.advance(Duration::from_secs(30));
    eng.sync_once().await.unwrap();
    assert_eq!(ids(&store).await, vec![1, 2, 3, 4]);
    assert!(recorder(&store).lease(MARKETO_PULL_LEASE).is_none(), "released after the pass");
    assert_eq!(leader_events(&drain(&mut events)), vec!["acquired me", "lost me: released"]);
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_before_committing_another_page() {
    let world = world_with((1..=9).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let clock = salesync_core::clock::ManualClock::new(t0());
    // Each chunk read takes 25 s of a 60 s lease: the lease is renewed before each page.
    world.lock().unwrap().advance_clock = Some((clock.clone(), Duration::from_secs(25)));
    let store = test_store();
    store.steal_after(MARKETO_PULL_LEASE, 1, "thief", Duration::from_secs(24 * 3600));
    let s = EngineSettings { worker_id: "me".into(), clock: Arc::new(clock.clone()), ..settings(InitialMode::Rest) };
    let eng = engine(&world, &store, s);
    let mut events = eng.subscribe();

    let err = eng.sync_once().await.unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    // Page 1 and its checkpoint were committed; page 2 (read, but the renewal failed) was not.
    assert_eq!(recorder(&store).calls(Method::ApplyPage), 1);
    assert_eq!(ids(&store).await, vec![1, 2, 3]);
    assert_eq!(position(&store, StreamId::InitialSync).await.unwrap()["rest"]["next_id"], json!(4));
    assert_eq!(world.lock().unwrap().filter_starts, vec!["1", "4"]);
    // The thief's lease is not released by the loser.
    assert_eq!(recorder(&store).lease(MARKETO_PULL_LEASE).unwrap().0, "thief");
    assert_eq!(
        leader_events(&drain(&mut events)),
        vec!["acquired me".to_string(), "lost me: another process took the lease".into()]
    );
}

#[tokio::test]
async fn a_lapsed_lease_stops_the_pass_even_when_nobody_took_it() {
    // mockall: the store would renew (try_lease answers true), but the lease lapsed while the
    // pull was stalled (a chunk read took longer than the TTL): another process may have led and
    // left meanwhile, so the page read before the lapse is never committed.
    let world = world_with((1..=6).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let clock = salesync_core::clock::ManualClock::new(t0());
    world.lock().unwrap().advance_clock = Some((clock.clone(), Duration::from_secs(61)));
    let mut store = MockStore::new();
    store.expect_bind_instance().returning(|_| Ok(()));
    store.expect_checkpoint().returning(|_| Ok(None));
    store.expect_people_by_ids().returning(|_| Ok(vec![]));
    store.expect_list_people().returning(|_, _| Ok(vec![]));
    store
        .expect_try_lease()
        .withf(|name, holder, ttl, now| {
            name == MARKETO_PULL_LEASE && holder == "me" && *ttl == Duration::from_secs(60) && *now == t0()
        })
        .times(1)
        .returning(|_, _, _, _| Ok(true));
    store.expect_apply_page().never();
    store.expect_put_checkpoint().never();
    // Not held any more: nothing to release.
    store.expect_release_lease().never();
    let eng = SyncEngine::builder()
        .marketo(marketo(&world))
        .salesforce(no_salesforce())
        .store(Arc::new(store))
        .settings(EngineSettings {
            worker_id: "me".into(),
            clock: Arc::new(clock.clone()),
            ..settings(InitialMode::Rest)
        })
        .build()
        .unwrap();
    let mut events = eng.subscribe();
    let err = eng.sync_once().await.unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err}");
    assert_eq!(
        leader_events(&drain(&mut events)),
        vec!["acquired me".to_string(), "lost me: the lease lapsed before it was renewed".into()]
    );
}

#[tokio::test]
async fn lease_settings_are_validated() {
    let world = world_with(vec![]);
    let build = |s: EngineSettings| {
        SyncEngine::builder()
            .marketo(marketo(&world))
            .salesforce(no_salesforce())
            .store(test_store())
            .settings(s)
            .build()
    };
    let err = build(EngineSettings { worker_id: "".into(), ..settings(InitialMode::Rest) }).unwrap_err();
    assert!(matches!(err, Error::Config { field: "worker_id", .. }));
    let err = build(EngineSettings { leader_lease_ttl: Duration::ZERO, ..settings(InitialMode::Rest) }).unwrap_err();
    assert!(matches!(err, Error::Config { field: "leader_lease_ttl", .. }));
    let err = build(EngineSettings { leader_poll: Duration::ZERO, ..settings(InitialMode::Rest) }).unwrap_err();
    assert!(matches!(err, Error::Config { field: "leader_poll", .. }));
    // Default holder ids differ between engines (and so between processes).
    assert_ne!(EngineSettings::default().worker_id, EngineSettings::default().worker_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_until_the_lease_frees_then_leads_renews_and_releases_on_cancel() {
    let world = world_with((1..=4).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    let ttl = Duration::from_millis(300);
    let other_since = Utc::now();
    assert!(store.try_lease(MARKETO_PULL_LEASE, "other", Duration::from_millis(250), other_since).await.unwrap());
    let other_until = other_since + chrono::Duration::milliseconds(250);
    let s = EngineSettings {
        worker_id: "me".into(),
        clock: Arc::new(SystemClock),
        leader_lease_ttl: ttl,
        leader_poll: Duration::from_millis(20),
        poll_interval: Duration::from_millis(400),
        ..settings(InitialMode::Rest)
    };
    let eng = engine(&world, &store, s);
    let mut events = eng.subscribe();
    let cancel = CancellationToken::new();
    let run = tokio::spawn({
        let (eng, cancel) = (eng.clone(), cancel.clone());
        async move { eng.run(cancel).await }
    });

    // Follower while the other process's lease is valid.
    let acquired_at = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await.unwrap() {
                SyncEvent::LeaderAcquired { holder } => return (holder, Utc::now()),
                SyncEvent::PageApplied { .. } => panic!("pulled before taking the lease"),
                _ => {}
            }
        }
    })
    .await
    .expect("took over after the other lease expired");
    assert_eq!(acquired_at.0, "me");
    assert!(acquired_at.1 >= other_until, "took the lease before it expired");

    // Leader: across several TTLs and passes, a competitor never gets the lease.
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < until {
        assert!(!store.try_lease(MARKETO_PULL_LEASE, "competitor", ttl, Utc::now()).await.unwrap(), "lease lapsed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ids(&store).await, vec![1, 2, 3, 4]);
    assert!(!run.is_finished(), "run returned while leading");

    // Cancelled: released at once, so a competitor takes over without waiting out the TTL.
    cancel.cancel();
    run.await.unwrap().unwrap();
    assert!(store.try_lease(MARKETO_PULL_LEASE, "competitor", ttl, Utc::now()).await.unwrap());
    let seen = leader_events(&drain(&mut events));
    assert_eq!(seen.last().map(String::as_str), Some("lost me: released"), "{seen:?}");
    assert!(!seen.iter().any(|e| e.contains("another process")), "{seen:?}");
}

#[tokio::test]
async fn a_clock_that_goes_back_renews_the_lease_at_once() {
    // The renewal time is in the future of a clock set back: how long ago it was is unknown, so
    // the next check renews (a stale expiry in the old clock's terms could otherwise lapse
    // unnoticed while this engine goes on pulling).
    let world = world_with((1..=6).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let clock = salesync_core::clock::ManualClock::new(t0());
    let store = test_store();
    let s = EngineSettings { worker_id: "me".into(), clock: Arc::new(clock.clone()), ..settings(InitialMode::Rest) };
    let eng = engine(&world, &store, s);
    eng.inner.try_lead().await.unwrap();
    assert_eq!(recorder(&store).lease(MARKETO_PULL_LEASE).unwrap().1, t0() + chrono::Duration::seconds(60));
    // Within the first third: no renewal.
    clock.advance(Duration::from_secs(5));
    eng.inner.keep_lead(false).await.unwrap();
    assert_eq!(recorder(&store).lease(MARKETO_PULL_LEASE).unwrap().1, t0() + chrono::Duration::seconds(60));
    // Set back an hour: renewed at once, in the new terms.
    clock.set(t0() - chrono::Duration::hours(1));
    eng.inner.keep_lead(false).await.unwrap();
    assert_eq!(
        recorder(&store).lease(MARKETO_PULL_LEASE).unwrap().1,
        t0() - chrono::Duration::hours(1) + chrono::Duration::seconds(60)
    );
    // A third of the TTL later: renewed again.
    clock.advance(Duration::from_secs(20));
    eng.inner.keep_lead(false).await.unwrap();
    assert_eq!(
        recorder(&store).lease(MARKETO_PULL_LEASE).unwrap().1,
        t0() - chrono::Duration::hours(1) + chrono::Duration::seconds(80)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_one_shot_passes_on_one_engine_all_succeed_and_leave_the_lease_released() {
    let world = world_with((1..=9).map(|i| lead(i, Some(OWNER), "Lead")).collect());
    let store = test_store();
    let eng = engine(&world, &store, EngineSettings { worker_id: "me".into(), ..settings(InitialMode::Rest) });
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let eng = eng.clone();
            tokio::spawn(async move { eng.sync_once().await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(ids(&store).await, (1..=9).collect::<Vec<_>>());
    assert!(recorder(&store).lease(MARKETO_PULL_LEASE).is_none(), "released after the last pass");
}

#[tokio::test(start_paused = true)]
async fn run_waits_for_the_quota_reset_instead_of_polling() {
    let mut m = MockMarketoApi::new();
    m.expect_rate_budget().returning(|| None);
    m.expect_lead_schema().returning(|| {
        Err(salesync_core::Error::QuotaExhausted {
            service: Service::Marketo,
            resets_at: Some(t0() + chrono::Duration::hours(5)),
            detail: "607 Daily quota reached".into(),
        })
    });
    m.expect_paging_token().returning(|_| Ok("t".into()));
    m.expect_activities().returning(|t, _, _| Ok(page(vec![], t, false)));
    let eng = SyncEngine::builder()
        .marketo(Arc::new(m))
        .salesforce(no_salesforce())
        .store(test_store())
        .settings(settings(InitialMode::Rest))
        .build()
        .unwrap();
    let mut events = eng.subscribe();
    let cancel = CancellationToken::new();
    let (e2, c2) = (eng.clone(), cancel.clone());
    let task = tokio::spawn(async move { e2.run(c2).await });
    let delay = loop {
        if let Ok(SyncEvent::Backoff { reason, delay }) = events.recv().await
            && reason.contains("quota")
        {
            break delay;
        }
    };
    assert_eq!(delay, Duration::from_secs(5 * 3600 + 60), "waits for the reset (+1 min), not one poll interval");
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_store_without_a_shadow_copy_cannot_rebuild() {
    let (_world, store, eng) = synced(vec![]).await;
    faults(&store).hide_shadow(true);
    match eng.start_rebuild().await {
        Err(Error::Config { field: "store", reason }) => assert!(reason.contains("shadow"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(eng.rebuild_started_at().await.unwrap(), None);
    // Passes go on as before.
    let report = eng.sync_once().await.unwrap();
    assert!(report.rebuild.is_none() && report.warnings.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_due_drift_repair_waits_while_the_instance_is_busy_today() {
    let (world, store, _eng) = synced(vec![]).await;
    let later = |usage: Option<u64>| {
        world.lock().unwrap().usage_today = usage;
        engine(
            &world,
            &store,
            EngineSettings {
                clock: Arc::new(|| t0() + chrono::Duration::days(8)),
                // Keep the deleted-leads stream fresh enough: only the schedule is due.
                deleted_leads_retention: Duration::from_secs(30 * 24 * 3600),
                ..settings(InitialMode::Rest)
            },
        )
    };
    // 24,990 calls today + the sweep's estimate pass half of 50,000: it waits.
    let report = later(Some(24_990)).sync_once().await.unwrap();
    assert!(!report.reconciled, "{report:?}");
    let warning = report.warnings.iter().find(|w| w.contains("drift repair deferred")).unwrap();
    assert!(warning.contains("(24990)") && warning.contains("25000"), "{warning}");
    // A quiet day: it runs.
    let report = later(Some(1_000)).sync_once().await.unwrap();
    assert!(report.reconciled, "{report:?}");
    assert!(report.warnings.iter().all(|w| !w.contains("deferred")), "{:?}", report.warnings);
    // The full read it ran was the reconcile.
    let cp = store.checkpoint(StreamId::InitialSync).await.unwrap().unwrap();
    assert_eq!(cp.position["reconcile"], json!(true));
}
