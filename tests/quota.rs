//! Daily quotas running out: Marketo 607 and Salesforce REQUEST_LIMIT_EXCEEDED (the emulators'
//! daily limits set small at run time). The affected streams stop cleanly with a status the host
//! can see (Dispatcher `target_status` + `QuotaExhausted` event, the engine's error and warnings),
//! the other streams carry on, and once the quota resets (the emulator's clock moved past the
//! quota day / the rolling 24 hours) everything resumes with nothing lost and nothing doubled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use salesync::core::ports::marketo::MarketoApi;
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::core::ports::store::Store;
use salesync::core::{Error as CoreError, error::Service, person::Person};
use salesync::delivery::{DeliveryEvent, DeliverySettings, Dispatcher, ManualClock, OutboxState, Target, TargetStatus};
use salesync::engine::{EngineSettings, InitialMode, RetrySettings, SyncEngine, SyncEvent};
use salesync_emulator::clock::Clock;
use salesync_emulator::marketo::{MarketoConfig, MarketoLimits};
use salesync_emulator::salesforce::SalesforceConfig;
use salesync_testkit::{
    Outbound, TestStore, World, assert_delivered_exactly_once, assert_mirror_matches, marketo_activity_counts, mirror,
    obj, record_every_kind, tasks_by_external_id,
};
use serde_json::json;
use tokio::sync::broadcast;

struct Rig {
    w: World,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    eng: SyncEngine,
    d: Dispatcher,
    /// The dispatcher's clock.
    clock: ManualClock,
    events: broadcast::Receiver<DeliveryEvent>,
}

/// Both emulators run on manual clocks that stand still unless a test moves them, so Marketo's
/// clock falls behind the host's as the test runs (a skew the incremental sync must survive:
/// changes dated before the host's initial-sync start are still read).
async fn rig(seed: u64, salesforce_api_reserve: u64) -> Rig {
    let start = Utc::now();
    let marketo = MarketoConfig {
        clock: Clock::manual(start),
        limits: MarketoLimits { calls_per_window: 1000, ..MarketoLimits::default() },
        ..MarketoConfig::default()
    };
    let salesforce = SalesforceConfig { clock: Clock::manual(start), ..SalesforceConfig::default() };
    let w = World::start(300, seed, marketo, salesforce).await;

    let mkto: Arc<dyn MarketoApi> = Arc::new(
        w.marketo_builder()
            .rate_limit(1000, Duration::from_secs(20))
            .retry(salesync::marketo::RetryConfig {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            })
            .build()
            .unwrap(),
    );
    let sf: Arc<dyn SalesforceApi> = Arc::new(
        w.salesforce_builder()
            .retry(salesync::salesforce::RetryConfig {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            })
            .build()
            .unwrap(),
    );
    let TestStore { store, dir, .. } = TestStore::sqlite().await;
    let eng = SyncEngine::builder()
        .marketo(mkto.clone())
        .salesforce(sf.clone())
        .store(store.clone())
        .settings(EngineSettings {
            instance_id: "quota".into(),
            initial_mode: InitialMode::Rest,
            poll_interval: Duration::from_millis(50),
            retry: RetrySettings {
                max_attempts: 3,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
            },
            ..EngineSettings::default()
        })
        .build()
        .unwrap();
    let clock = ManualClock::new(start);
    let d = Dispatcher::builder()
        .marketo(mkto)
        .salesforce(sf)
        .store(store.clone())
        .settings(DeliverySettings {
            worker_id: "quota".into(),
            marketo_batch: 8,
            salesforce_batch: 4,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            max_attempts: 20,
            opt_out_reconcile: false,
            salesforce_api_reserve,
            clock: Arc::new(clock.clone()),
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    let events = d.subscribe();
    Rig { w, store, _dir: dir, eng, d, clock, events }
}

/// Records all eight kinds for `people`, and unsubscribes every third.
async fn record(d: &Dispatcher, people: &[Person]) -> Outbound {
    let mut rec = Outbound::default();
    for (i, p) in people.iter().enumerate() {
        record_every_kind(d, p, &format!("q{i}"), i % 3 == 0, &mut rec).await;
    }
    rec
}

/// Outbox items of a target in a state.
async fn items(store: &dyn Store, state: OutboxState, target: Target) -> usize {
    store.outbox_items(state, 10_000).await.unwrap().iter().filter(|i| i.target == target).count()
}

/// Rounds (moving the dispatcher's clock on) until `done` holds; nothing may be parked.
async fn deliver_until(r: &Rig, what: &str, mut done: impl AsyncFnMut(&Rig) -> bool) {
    for _ in 0..300 {
        r.d.deliver_once().await.unwrap();
        let c = r.d.counts().await.unwrap();
        assert_eq!(c.parked, 0, "{what}: parked {:?}", r.d.parked(5).await.unwrap());
        if done(r).await {
            return;
        }
        r.clock.advance(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{what}: not reached; counts {:?}; statuses {:?} {:?}; now {}; pending {:?}",
        r.d.counts().await.unwrap(),
        r.d.target_status(Target::Marketo),
        r.d.target_status(Target::Salesforce),
        r.clock_now(),
        r.store
            .outbox_items(OutboxState::Pending, 5)
            .await
            .unwrap()
            .iter()
            .map(|i| (i.key.clone(), i.next_attempt_at, i.last_error.clone()))
            .collect::<Vec<_>>()
    );
}

fn quota_events(rx: &mut broadcast::Receiver<DeliveryEvent>, target: Target) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let DeliveryEvent::QuotaExhausted { target: t, until } = e
            && t == target
        {
            out.push(until);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marketo_daily_quota_pauses_marketo_streams_salesforce_carries_on_then_resumes() {
    let mut r = rig(71, 0).await;
    r.eng.sync_once().await.unwrap();
    assert_mirror_matches(&r.w, r.store.as_ref()).await;
    let m = mirror(r.store.as_ref()).await;
    let people: Vec<Person> = m.values().skip(20).take(8).cloned().collect();
    let rec = record(&r.d, &people).await;

    // One round provisions the activity types and delivers a first batch; then only two more
    // Marketo calls are left today, so delivery runs out part way.
    r.d.deliver_once().await.unwrap();
    let first = items(r.store.as_ref(), OutboxState::Delivered, Target::Marketo).await;
    assert!(first > 0 && first < rec.activities.len(), "{first} delivered in the first round");
    let used = r.w.marketo.daily_calls();
    r.w.marketo.set_daily_quota(used + 2);
    deliver_until(&r, "Marketo paused, Salesforce delivered", async |r: &Rig| {
        matches!(r.d.target_status(Target::Marketo), TargetStatus::Paused { .. })
            && items(r.store.as_ref(), OutboxState::Pending, Target::Salesforce).await == 0
            && items(r.store.as_ref(), OutboxState::InFlight, Target::Salesforce).await == 0
    })
    .await;
    let TargetStatus::Paused { until } = r.d.target_status(Target::Marketo) else { unreachable!() };
    let now = r.clock_now();
    assert!(until > now && until - now <= chrono::Duration::hours(25), "paused until the quota day ends: {until}");
    // That is midnight in Chicago (05:00 or 06:00 UTC).
    assert!(matches!(until.hour(), 5 | 6) && until.minute() == 0 && until.second() == 0, "{until}");
    assert_eq!(quota_events(&mut r.events, Target::Marketo), vec![until], "one QuotaExhausted event");
    assert_eq!(r.d.target_status(Target::Salesforce), TargetStatus::Active);
    let waiting = items(r.store.as_ref(), OutboxState::Pending, Target::Marketo).await;
    assert!(waiting > 0, "some Marketo items wait for the reset");
    assert!(r.w.marketo.limit_rejections().quota > 0, "607 was answered");
    // Salesforce got everything already, exactly once.
    let tasks = tasks_by_external_id(&r.w);
    assert_eq!(tasks.len(), rec.activities.iter().filter(|(_, a)| a.kind.task_kind().is_some()).count());
    // Rounds while paused make no Marketo calls at all.
    let calls = r.w.marketo.call_log().len();
    for _ in 0..3 {
        let report = r.d.deliver_once().await.unwrap();
        assert_eq!(report.marketo.status, TargetStatus::Paused { until });
    }
    assert_eq!(r.w.marketo.call_log().len(), calls, "a paused target is left alone");

    // The people sync stops with a clear, non-retryable quota error; changes wait in Marketo.
    let ids: Vec<i64> = m.keys().copied().collect();
    assert!(r.w.marketo.update_lead(ids[0], obj(json!({"firstName": "After Quota"}))));
    assert!(r.w.marketo.delete_lead(ids[1]));
    let e = r.eng.sync_once().await.unwrap_err();
    assert!(!e.is_retryable(), "{e}");
    assert!(
        matches!(
            &e,
            salesync::engine::Error::Port(CoreError::QuotaExhausted {
                service: Service::Marketo,
                resets_at: Some(_),
                ..
            })
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("daily quota"), "{e}");
    // A host running the engine's loop sees it in the events.
    let mut events = r.eng.subscribe();
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (eng, cancel) = (r.eng.clone(), cancel.clone());
        async move { eng.run(cancel).await }
    });
    let reason = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(SyncEvent::Backoff { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("a Backoff event from the loop");
    assert!(reason.contains("Marketo daily quota exhausted"), "{reason}");
    cancel.cancel();
    running.await.unwrap().unwrap();

    // The quota day ends: Marketo's clock passes midnight US Central, the dispatcher's the pause.
    r.w.marketo.clock().advance(chrono::Duration::hours(25));
    r.clock.advance(Duration::from_secs(25 * 3600));
    assert_eq!(r.w.marketo.daily_calls(), 0);
    r.eng.sync_once().await.unwrap();
    assert_mirror_matches(&r.w, r.store.as_ref()).await;
    deliver_until(&r, "everything delivered", async |r: &Rig| {
        let c = r.d.counts().await.unwrap();
        c.pending == 0 && c.in_flight == 0
    })
    .await;
    assert_eq!(r.d.target_status(Target::Marketo), TargetStatus::Active);
    assert_delivered_exactly_once(&r.w, r.store.as_ref(), &rec).await;
    eprintln!("marketo quota: {used} calls before, quota {}, {first} delivered first, {waiting} waited", used + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_daily_limit_pauses_salesforce_marketo_and_people_sync_carry_on_then_resume() {
    let mut r = rig(72, 0).await;
    r.eng.sync_once().await.unwrap();
    let m = mirror(r.store.as_ref()).await;
    let people: Vec<Person> = m.values().skip(20).take(8).cloned().collect();
    let rec = record(&r.d, &people).await;

    // A few Salesforce calls are left in the 24-hour allocation.
    let used = r.w.salesforce.api_usage();
    r.w.salesforce.set_daily_api_limit(used + 4);
    deliver_until(&r, "Salesforce paused, Marketo delivered", async |r: &Rig| {
        matches!(r.d.target_status(Target::Salesforce), TargetStatus::Paused { .. })
            && items(r.store.as_ref(), OutboxState::Pending, Target::Marketo).await == 0
            && items(r.store.as_ref(), OutboxState::InFlight, Target::Marketo).await == 0
    })
    .await;
    let TargetStatus::Paused { until } = r.d.target_status(Target::Salesforce) else { unreachable!() };
    assert!(until > r.clock_now());
    assert_eq!(quota_events(&mut r.events, Target::Salesforce), vec![until], "one QuotaExhausted event");
    assert_eq!(r.d.target_status(Target::Marketo), TargetStatus::Active);
    let waiting = items(r.store.as_ref(), OutboxState::Pending, Target::Salesforce).await;
    assert!(waiting > 0, "some Salesforce items wait for the reset");
    assert!(
        r.w.salesforce.call_log().iter().any(|c| c.error_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED")),
        "REQUEST_LIMIT_EXCEEDED was answered"
    );
    // Marketo got every activity already, exactly once.
    let mk = marketo_activity_counts(&r.w);
    assert_eq!(mk.len(), rec.activities.len());
    assert!(mk.values().all(|n| *n == 1));

    // The people sync carries on; the opportunity lookup it cannot make is a warning.
    let owner = r.w.seed.users[0].id.clone();
    let with_opp = r.w.seed.people.iter().find(|p| p.sf_opportunity_id.is_some()).unwrap().clone();
    let ids: Vec<i64> = m.keys().copied().collect();
    assert!(r.w.marketo.update_lead(ids[0], obj(json!({"firstName": "During Limit"}))));
    assert!(r.w.marketo.delete_lead(ids[1]));
    let created = r.w.marketo.create_lead(obj(json!({
        "firstName": "Second", "lastName": "Record", "email": "second.record@example.com",
        "sfdcType": "Contact", "sfdcContactId": with_opp.sf_contact_id, "sfdcLeadOwnerId": owner
    })));
    let report = r.eng.sync_once().await.unwrap();
    assert_mirror_matches(&r.w, r.store.as_ref()).await;
    assert!(report.inserted >= 1 && report.removed.total() >= 1, "{report:?}");
    assert!(
        report.warnings.iter().any(|w| w.contains("quota") || w.contains("REQUEST_LIMIT")),
        "the failed opportunity lookup is reported: {:?}",
        report.warnings
    );
    let p = r.store.person(created).await.unwrap().unwrap();
    assert!(p.salesforce_opportunity.needs_lookup(), "{:?}", p.salesforce_opportunity);

    // The rolling 24 hours pass: Salesforce resumes; the opportunity is filled.
    // Each time the small allocation runs out again, another day passes.
    let mut days = 0;
    deliver_until(&r, "everything delivered", async |r: &Rig| {
        if let TargetStatus::Paused { until } = r.d.target_status(Target::Salesforce) {
            r.w.salesforce.clock().advance(chrono::Duration::hours(24) + chrono::Duration::minutes(1));
            assert_eq!(r.w.salesforce.api_usage(), 0, "the rolling 24 hours are free again");
            r.clock.set(until + chrono::Duration::seconds(1));
            days += 1;
        }
        let c = r.d.counts().await.unwrap();
        c.pending == 0 && c.in_flight == 0
    })
    .await;
    assert!(days >= 1);
    assert_eq!(r.d.target_status(Target::Salesforce), TargetStatus::Active);
    assert_delivered_exactly_once(&r.w, r.store.as_ref(), &rec).await;
    let filled = r.eng.resolve_opportunities().await.unwrap();
    assert!(filled.opportunities_resolved >= 1, "{filled:?}");
    let p = r.store.person(created).await.unwrap().unwrap();
    assert_eq!(p.salesforce_opportunity_id().map(|i| i.as_str().to_string()), with_opp.sf_opportunity_id);
    eprintln!("salesforce limit: {used} calls before, limit {}, {waiting} waited, {days} days", used + 4);
}

/// With an API reserve, Salesforce delivery pauses before the allocation is used up (the org's
/// other integrations keep their share) and resumes once the rolling 24 hours free calls again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_reserve_pauses_before_the_limit_and_resumes_when_calls_free_up() {
    const RESERVE: u64 = 20;
    let mut r = rig(73, RESERVE).await;
    r.eng.sync_once().await.unwrap();
    let m = mirror(r.store.as_ref()).await;
    let people: Vec<Person> = m.values().skip(20).take(8).cloned().collect();
    let rec = record(&r.d, &people).await;
    let used = r.w.salesforce.api_usage();
    r.w.salesforce.set_daily_api_limit(used + RESERVE + 6);
    deliver_until(&r, "Salesforce paused at the reserve", async |r: &Rig| {
        matches!(r.d.target_status(Target::Salesforce), TargetStatus::Paused { .. })
            && items(r.store.as_ref(), OutboxState::Pending, Target::Marketo).await == 0
    })
    .await;
    assert!(!quota_events(&mut r.events, Target::Salesforce).is_empty());
    assert!(
        !r.w.salesforce.call_log().iter().any(|c| c.error_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED")),
        "the reserve is kept: the limit itself is never hit"
    );
    assert!(items(r.store.as_ref(), OutboxState::Pending, Target::Salesforce).await > 0);

    let mut days = 0;
    deliver_until(&r, "everything delivered", async |r: &Rig| {
        if let TargetStatus::Paused { until } = r.d.target_status(Target::Salesforce) {
            r.w.salesforce.clock().advance(chrono::Duration::hours(24) + chrono::Duration::minutes(1));
            r.clock.set(until + chrono::Duration::seconds(1));
            days += 1;
            assert!(days < 20, "Salesforce delivery never resumed");
        }
        let c = r.d.counts().await.unwrap();
        c.pending == 0 && c.in_flight == 0
    })
    .await;
    assert_delivered_exactly_once(&r.w, r.store.as_ref(), &rec).await;
    assert!(
        !r.w.salesforce.call_log().iter().any(|c| c.error_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED")),
        "the reserve is kept: the limit itself is never hit"
    );
    eprintln!("salesforce reserve: {used} calls before, limit {}, {days} days", used + RESERVE + 6);
}

impl Rig {
    fn clock_now(&self) -> DateTime<Utc> {
        use salesync::delivery::Clock as _;
        self.clock.now()
    }
}
