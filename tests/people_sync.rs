//! End-to-end people sync: both emulators over real HTTP → connectors → engine → store.
//! Initial sync equals the oracle exactly; one incremental pass brings every kind of change
//! across; a killed initial sync resumes to the same mirror; a bad record is reported alone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use salesync::core::mapping::Disqualification;
use salesync::core::mirror::RemovalReason;
use salesync::core::ports::store::Store;
use salesync::engine::{EngineSettings, InitialMode, InitialPath, SyncEngine, SyncEvent};
use salesync_testkit::{TestStore, World, assert_mirror_matches, mirror, obj};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn engine(world: &World, store: Arc<dyn Store>, mode: InitialMode) -> SyncEngine {
    engine_with(world, store, EngineSettings { initial_mode: mode, ..EngineSettings::default() })
}

/// An engine on the world's emulators with `settings` (the instance id and fast export polls
/// set here).
fn engine_with(world: &World, store: Arc<dyn Store>, settings: EngineSettings) -> SyncEngine {
    SyncEngine::builder()
        .marketo(world.marketo_client())
        .salesforce(world.salesforce_client())
        .store(store)
        .settings(EngineSettings {
            instance_id: "emulated-marketo".into(),
            export_poll: Duration::from_millis(20),
            export_poll_max: Duration::from_millis(200),
            ..settings
        })
        .build()
        .unwrap()
}

/// Runs the whole scenario on one store.
async fn scenario(store: Arc<dyn Store>, mode: InitialMode) {
    let world = World::unlimited(1500, 11).await;
    let eng = engine(&world, store.clone(), mode);
    let report = eng.sync_once().await.unwrap();
    assert!(report.record_errors.is_empty(), "{:?}", report.record_errors);
    match mode {
        InitialMode::Rest => assert_eq!(report.initial_path, Some(InitialPath::Rest)),
        _ => assert_eq!(report.initial_path, Some(InitialPath::Bulk)),
    }
    assert_mirror_matches(&world, store.as_ref()).await;

    // Duplicates by email are kept as separate people.
    let m = mirror(store.as_ref()).await;
    let mut by_email = std::collections::HashMap::<String, usize>::new();
    for p in m.values() {
        if let Some(e) = &p.email {
            *by_email.entry(e.clone()).or_default() += 1;
        }
    }
    let dup = by_email.iter().find(|(_, n)| **n > 1).map(|(e, _)| e.clone()).expect("seeded duplicates");
    assert!(store.people_by_email(&dup).await.unwrap().len() > 1);

    // Opportunity ids come from Salesforce (Marketo does not return sfdcOpptyId here).
    for sp in world.seed.people.iter().filter(|p| p.has_owner() && p.sf_opportunity_id.is_some()).take(50) {
        let p = &m[&sp.marketo_id];
        assert_eq!(
            p.salesforce_opportunity_id().map(|i| i.as_str().to_string()),
            sp.sf_opportunity_id,
            "lead {}",
            sp.marketo_id
        );
    }

    // Every kind of change in Marketo.
    let qualified: Vec<i64> = m.keys().copied().collect();
    let leads: Vec<i64> = m.values().filter(|p| p.salesforce_lead_id.is_some()).map(|p| p.marketo_id).collect();
    let unqualified =
        world.seed.people.iter().find(|p| !p.has_owner() && !m.contains_key(&p.marketo_id)).unwrap().marketo_id;
    let owner = world.seed.users[0].id.clone();
    let (renamed, disqualified, deleted, winner, loser) =
        (qualified[0], qualified[1], qualified[2], qualified[3], qualified[4]);
    let converted = *leads.iter().find(|id| ![renamed, disqualified, deleted, winner, loser].contains(id)).unwrap();
    assert!(world.marketo.update_lead(renamed, obj(json!({"firstName": "Renamed Ünïcode"}))));
    assert!(world.marketo.update_lead(disqualified, obj(json!({"sfdcLeadOwnerId": null}))));
    assert!(world.marketo.update_lead(
        unqualified,
        obj(json!({"sfdcType": "Lead", "sfdcLeadId": salesync_emulator::sfid::mint("00Q", 900_001), "sfdcLeadOwnerId": owner}))
    ));
    assert!(world.marketo.delete_lead(deleted));
    assert!(world.marketo.merge_leads(winner, &[loser]));
    assert!(world.marketo.update_lead(
        converted,
        obj(json!({"sfdcType": "Contact", "sfdcLeadId": null,
            "sfdcContactId": salesync_emulator::sfid::mint("003", 900_002),
            "sfdcAccountId": salesync_emulator::sfid::mint("001", 900_003)}))
    ));
    let created = world.marketo.create_lead(obj(json!({
        "firstName": "New", "lastName": "Person", "email": "new.person@example.com",
        "sfdcType": "Contact", "sfdcContactId": salesync_emulator::sfid::mint("003", 900_004), "sfdcLeadOwnerId": owner
    })));

    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.initial_path, None, "second pass is incremental");
    assert_mirror_matches(&world, store.as_ref()).await;
    let m = mirror(store.as_ref()).await;
    assert_eq!(m[&renamed].first_name.as_deref(), Some("Renamed Ünïcode"));
    assert!(m.contains_key(&unqualified) && m.contains_key(&created));
    assert_eq!(m[&converted].salesforce_type, salesync::core::person::SalesforceType::Contact);
    assert_eq!(
        store.tombstone(disqualified).await.unwrap().unwrap().reason,
        RemovalReason::Disqualified { why: Disqualification::NoOwner }
    );
    assert_eq!(store.tombstone(deleted).await.unwrap().unwrap().reason, RemovalReason::Deleted);
    assert_eq!(store.tombstone(loser).await.unwrap().unwrap().reason, RemovalReason::Merged { winner });

    // A third pass with nothing new changes nothing.
    let report = eng.sync_once().await.unwrap();
    assert_eq!((report.inserted, report.updated, report.removed.total()), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_bulk_initial_then_incremental() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    scenario(store, InitialMode::Bulk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rest_initial_then_incremental() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    scenario(store, InitialMode::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bulk_initial_then_incremental() {
    on_postgres(|store| scenario(store, InitialMode::Bulk)).await;
}

/// Runs `scenario` on a PostgreSQL store in a fresh schema, dropped afterwards whatever happens.
async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let pg = TestStore::postgres("e2e").await;
    pg.dropper().around(scenario(pg.store.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_initial_sync_resumes_to_the_same_mirror() {
    let world = World::unlimited(3000, 5).await;
    for (mode, stop_after) in
        [(InitialMode::Rest, 1), (InitialMode::Rest, 4), (InitialMode::Bulk, 1), (InitialMode::Bulk, 3)]
    {
        let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
        let eng = engine(&world, store.clone(), mode);
        let mut events = eng.subscribe();
        let cancel = CancellationToken::new();
        let run = {
            let (eng, cancel) = (eng.clone(), cancel.clone());
            tokio::spawn(async move { eng.sync_once_with(&cancel).await })
        };
        let mut pages = 0;
        while pages < stop_after {
            match events.recv().await {
                Ok(SyncEvent::PageApplied { .. }) => pages += 1,
                Ok(SyncEvent::Finished { .. }) | Err(_) => break,
                Ok(_) => {}
            }
        }
        cancel.cancel();
        let _ = run.await.unwrap();
        let partial = store.count_people().await.unwrap();
        // A fresh engine (as after a restart) finishes from the checkpoint.
        let eng = engine(&world, store.clone(), mode);
        let report = eng.sync_once().await.unwrap();
        assert!(report.record_errors.is_empty());
        assert_mirror_matches(&world, store.as_ref()).await;
        assert!(partial <= store.count_people().await.unwrap(), "{mode:?} after {stop_after} pages");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_is_reported_and_the_rest_applied() {
    let world = World::unlimited(400, 3).await;
    let owner = world.seed.users[0].id.clone();
    let bad = world.marketo.create_lead(obj(json!({
        "firstName": "Broken", "email": "broken@example.com", "sfdcType": "Lead",
        "sfdcLeadId": "not-a-salesforce-id", "sfdcLeadOwnerId": owner
    })));
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    let report = engine(&world, store.clone(), InitialMode::Rest).sync_once().await.unwrap();
    // Reported once per pass (the initial sweep and the incremental step both read it), naming
    // the record and the field.
    assert_eq!(report.record_errors.len(), 1, "{:?}", report.record_errors);
    assert_eq!((report.record_errors[0].record_id, report.record_errors[0].field.as_str()), (Some(bad), "sfdcLeadId"));
    let m = mirror(store.as_ref()).await;
    assert!(!m.contains_key(&bad));
    assert_eq!(m.len(), world.oracle().len() - 1);
}

/// A big initial sync reads the org's opportunity links once instead of looking up every page:
/// every person gets the opportunity the per-person rule gives, none stays unresolved, and
/// Salesforce sees a handful of query pages, not one lookup per page of people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_initial_sync_joins_opportunities_from_one_org_read() {
    for mode in [InitialMode::Bulk, InitialMode::Rest] {
        let world = World::unlimited(4000, 5).await;
        let store: Arc<dyn Store> = Arc::new(salesync::store::MemoryStore::new());
        let report = engine(&world, store.clone(), mode).sync_once().await.unwrap();
        assert_mirror_matches(&world, store.as_ref()).await;
        let m = mirror(store.as_ref()).await;
        let unresolved = m.values().filter(|p| p.salesforce_opportunity.needs_lookup()).count();
        assert_eq!(unresolved, 0, "{mode:?}: people left unresolved");
        let mut with_opportunity = 0;
        for sp in world.seed.people.iter().filter(|p| p.has_owner()) {
            let p = &m[&sp.marketo_id];
            assert_eq!(
                p.salesforce_opportunity_id().map(|i| i.as_str().to_string()),
                sp.sf_opportunity_id,
                "{mode:?}: lead {}",
                sp.marketo_id
            );
            with_opportunity += usize::from(sp.sf_opportunity_id.is_some());
        }
        assert!(with_opportunity > 100, "the seed links people to opportunities");
        // Per-page lookups would take two or more calls per 300 people (≥ 34 here); the org
        // read takes a few query pages, plus lookups for nothing.
        let sf_calls = world.salesforce.call_log().len();
        assert!(sf_calls <= 30, "{mode:?}: {sf_calls} Salesforce calls ({report:?})");
        assert!(report.opportunities_resolved > 0, "{mode:?}: people written before the org read are filled");
    }
}

/// The REST sweep keeps several id chunks in flight against a slow API, and still applies them
/// in order: the mirror equals the oracle and the sweep's checkpoint ends complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_sweep_reads_several_chunks_at_once() {
    let mc = salesync_emulator::marketo::MarketoConfig {
        latency: Some(Duration::from_millis(40)),
        limits: salesync_emulator::marketo::MarketoLimits::unlimited(),
        ..Default::default()
    };
    let world = World::start(3000, 17, mc, salesync_emulator::salesforce::SalesforceConfig::default()).await;
    let store: Arc<dyn Store> = Arc::new(salesync::store::MemoryStore::new());
    let eng = engine_with(
        &world,
        store.clone(),
        EngineSettings {
            initial_mode: InitialMode::Rest,
            rest_reads_in_flight: 4,
            rest_empty_chunks_to_stop: 5,
            ..EngineSettings::default()
        },
    );
    let report = eng.sync_once().await.unwrap();
    assert_eq!(report.initial_path, Some(InitialPath::Rest));
    assert_mirror_matches(&world, store.as_ref()).await;
    let peak = world.marketo.max_concurrent_seen();
    assert!((2..=4).contains(&peak), "{peak} Marketo calls in flight at most");
    // One read per chunk up to the highest id, five empty chunks past it to stop, and at most
    // the reads ahead of the last one (three) spent for nothing.
    let max_id = world.seed.people.iter().map(|p| p.marketo_id).max().unwrap();
    let chunks = usize::try_from(max_id).unwrap().div_ceil(300) + 5;
    let sweep_calls = world.marketo.call_log().iter().filter(|c| c.path.ends_with("/leads.json")).count();
    assert!((chunks..=chunks + 3).contains(&sweep_calls), "{sweep_calls} lead reads for {chunks} chunks");
}

/// Opportunity changes made in Salesforce only (Marketo never hears of them) reach the mirror at
/// the next pass: a new open opportunity on contacts that had none, leads converted with an
/// opportunity, a contact role deleted, the only open opportunity closed. A pass without changes
/// costs a few Salesforce queries and writes nothing.
async fn salesforce_only_changes(store: Arc<dyn Store>) {
    let world = World::unlimited(600, 23).await;
    let eng = engine(&world, store.clone(), InitialMode::Rest);
    eng.sync_once().await.unwrap();
    let sf = &world.salesforce;
    let qualified: Vec<_> = world.seed.people.iter().filter(|p| p.has_owner()).collect();
    let contacts_without: Vec<_> =
        qualified.iter().filter(|p| p.sf_contact_id.is_some() && p.sf_opportunity_id.is_none()).take(2).collect();
    let contacts_with: Vec<_> = qualified.iter().filter(|p| p.sf_opportunity_id.is_some()).take(2).collect();
    let leads: Vec<_> = qualified.iter().filter(|p| p.sf_lead_id.is_some()).take(2).collect();
    assert!(contacts_without.len() == 2 && contacts_with.len() == 2 && leads.len() == 2, "seed too small");
    let mut want: Vec<(i64, Option<String>)> = Vec::new();
    for p in &contacts_without {
        let opp = sf
            .insert(
                "Opportunity",
                obj(json!({"Name": "New deal", "StageName": "Prospecting", "CloseDate": "2027-03-01"})),
            )
            .unwrap();
        let contact = p.sf_contact_id.clone().unwrap();
        sf.insert(
            "OpportunityContactRole",
            obj(json!({"OpportunityId": opp, "ContactId": contact, "IsPrimary": true})),
        )
        .unwrap();
        want.push((p.marketo_id, Some(opp)));
    }
    let mut conversions = Vec::new();
    for p in &leads {
        let converted = sf.convert_lead(p.sf_lead_id.as_deref().unwrap(), None, None, true).unwrap();
        assert!(converted.opportunity_id.is_some());
        want.push((p.marketo_id, converted.opportunity_id.clone()));
        conversions.push((p.marketo_id, converted));
    }
    // One contact loses its role; the other's only open opportunity is closed.
    let contact = contacts_with[0].sf_contact_id.clone().unwrap();
    let roles =
        sf.query(&format!("SELECT Id FROM OpportunityContactRole WHERE ContactId = '{contact}'"), false).unwrap();
    for r in roles {
        sf.delete("OpportunityContactRole", r["Id"].as_str().unwrap()).unwrap();
    }
    want.push((contacts_with[0].marketo_id, None));
    let opp = contacts_with[1].sf_opportunity_id.clone().unwrap();
    sf.update("Opportunity", &opp, obj(json!({"StageName": "Closed Lost"}))).unwrap();
    want.push((contacts_with[1].marketo_id, None));

    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();
    let m = mirror(store.as_ref()).await;
    for (id, opp) in &want {
        assert_eq!(m[id].salesforce_opportunity_id().map(|i| i.as_str().to_string()), *opp, "lead {id} ({report:?})");
    }
    let mut updated = Vec::new();
    while let Ok(c) = changes.try_recv() {
        if let salesync::engine::MirrorChange::Updated { id, .. } = c {
            updated.push(id);
        }
    }
    updated.sort_unstable();
    let mut expected: Vec<i64> = want.iter().map(|(id, _)| *id).collect();
    expected.sort_unstable();
    assert_eq!(updated, expected, "one change per person, nobody else");

    // Nothing changed since: a few queries, nothing written.
    let before = world.salesforce.call_log().len();
    let report = eng.sync_once().await.unwrap();
    assert_eq!((report.updated, report.inserted), (0, 0), "{report:?}");
    let sf_calls = world.salesforce.call_log().len() - before;
    // Three change queries (roles, opportunities, converted leads); the changes above are still
    // inside the five-minute overlap, so their people are read again (the closed opportunity's
    // roles, the contacts' roles and opportunities, the leads' conversions) and found unchanged.
    assert!(
        sf_calls <= 7,
        "{sf_calls} Salesforce calls for a pass without changes: {:?}",
        &world.salesforce.call_log()[before..]
    );

    // Marketo's own CRM sync then follows the conversions: each converted person's row updates
    // once more (now a Contact), keeps the opportunity, and stays one row.
    let count = store.count_people().await.unwrap();
    for (id, c) in &conversions {
        assert!(world.marketo.update_lead(
            *id,
            obj(json!({"sfdcType": "Contact", "sfdcLeadId": null,
                "sfdcContactId": c.contact_id, "sfdcAccountId": c.account_id}))
        ));
    }
    let mut changes = eng.subscribe_changes();
    let report = eng.sync_once().await.unwrap();
    let m = mirror(store.as_ref()).await;
    let mut updated = Vec::new();
    while let Ok(c) = changes.try_recv() {
        match c {
            salesync::engine::MirrorChange::Updated { id, .. } => updated.push(id),
            other => panic!("only updates expected: {other:?}"),
        }
    }
    updated.sort_unstable();
    let mut expected: Vec<i64> = conversions.iter().map(|(id, _)| *id).collect();
    expected.sort_unstable();
    assert_eq!(updated, expected, "one update per converted person: {report:?}");
    for (id, c) in &conversions {
        let p = &m[id];
        assert_eq!(p.salesforce_type, salesync::core::person::SalesforceType::Contact);
        assert_eq!(p.salesforce_contact_id.as_ref().map(|i| i.as_str()), Some(c.contact_id.as_str()));
        assert_eq!(p.salesforce_lead_id, None);
        assert_eq!(
            p.salesforce_opportunity_id().map(|i| i.as_str().to_string()),
            c.opportunity_id,
            "person {id} keeps the opportunity of its conversion"
        );
    }
    assert_eq!(store.count_people().await.unwrap(), count, "nothing doubled");
    assert_mirror_matches(&world, store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_salesforce_only_changes_reach_the_mirror() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    salesforce_only_changes(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_salesforce_only_changes_reach_the_mirror() {
    on_postgres(salesforce_only_changes).await;
}

/// `resync_person` puts one row right from a live read, whatever went wrong: a stale field and a
/// stale opportunity planted in the store, a row missing from the mirror, a person deleted in
/// Marketo. Each is one write with the reason; no checkpoint moves.
async fn resync_one_person(store: Arc<dyn Store>) {
    use salesync::core::mirror::Decision;
    use salesync::core::ports::store::{MirrorPage, StreamId};
    let world = World::unlimited(300, 29).await;
    let eng = engine(&world, store.clone(), InitialMode::Rest);
    eng.sync_once().await.unwrap();
    let checkpoints = |store: Arc<dyn Store>| async move {
        let mut out = Vec::new();
        for s in StreamId::ALL {
            out.push(store.checkpoint(s).await.unwrap().map(|c| c.position));
        }
        out
    };
    let before = checkpoints(store.clone()).await;
    let m = mirror(store.as_ref()).await;
    let with_opp = world.seed.people.iter().find(|p| p.has_owner() && p.sf_opportunity_id.is_some()).unwrap();
    let mut ids = m.keys().copied().filter(|id| *id != with_opp.marketo_id);
    let (stale, missing, deleted) = (ids.next().unwrap(), ids.next().unwrap(), ids.next().unwrap());
    // Plant the drift directly in the store.
    let mut wrong = m[&stale].clone();
    wrong.title = Some("Planted title".into());
    let mut wrong_opp = m[&with_opp.marketo_id].clone();
    wrong_opp.salesforce_opportunity = salesync::core::person::OpportunityRef::Salesforce(None);
    let at = chrono::Utc::now();
    store
        .apply_page(MirrorPage {
            decisions: vec![
                Decision::Update { person: wrong, changed: vec![] },
                Decision::Update { person: wrong_opp, changed: vec![] },
                Decision::Remove { marketo_id: missing, reason: RemovalReason::Vanished },
            ],
            checkpoint: None,
            at,
        })
        .await
        .unwrap();
    assert!(world.marketo.delete_lead(deleted));

    let mut changes = eng.subscribe_changes();
    let r = eng.resync_person(stale).await.unwrap();
    assert_eq!((r.updated, r.inserted, r.removed.total()), (1, 0, 0), "{r:?}");
    let r = eng.resync_person(with_opp.marketo_id).await.unwrap();
    assert_eq!(r.updated, 1, "{r:?}");
    let r = eng.resync_person(missing).await.unwrap();
    assert_eq!(r.inserted, 1, "{r:?}");
    let r = eng.resync_person(deleted).await.unwrap();
    assert_eq!(r.removed.total(), 1, "{r:?}");
    // Right already: nothing written.
    let r = eng.resync_person(stale).await.unwrap();
    assert_eq!((r.updated, r.inserted, r.removed.total(), r.unchanged), (0, 0, 0, 1), "{r:?}");

    let after = mirror(store.as_ref()).await;
    let mut repaired = after[&stale].clone();
    repaired.mirror_updated_at = m[&stale].mirror_updated_at;
    assert_eq!(repaired, m[&stale], "stale field put back");
    assert_eq!(
        after[&with_opp.marketo_id].salesforce_opportunity_id().map(|i| i.as_str().to_string()),
        with_opp.sf_opportunity_id,
        "opportunity looked up again"
    );
    assert_eq!(after[&missing].email, m[&missing].email, "missing row inserted");
    assert!(!after.contains_key(&deleted), "deleted in Marketo: removed");
    let mut seen = Vec::new();
    while let Ok(c) = changes.try_recv() {
        seen.push(c);
    }
    assert!(
        seen.contains(&salesync::engine::MirrorChange::Removed { id: deleted, reason: RemovalReason::Vanished }),
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "one change per repaired person: {seen:?}");
    assert_eq!(checkpoints(store.clone()).await, before, "no checkpoint moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_resync_person_repairs_one_row() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    resync_one_person(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_resync_person_repairs_one_row() {
    on_postgres(resync_one_person).await;
}

/// The scheduled drift repair finds each kind of drift planted directly in the store — a
/// missing row, an extra one, a stale field, a stale opportunity — repairs it, counts it by kind,
/// and leaves the mirror equal to the oracle.
async fn drift_repair(store: Arc<dyn Store>) {
    use salesync::core::mirror::Decision;
    use salesync::core::ports::store::MirrorPage;
    let world = World::unlimited(500, 31).await;
    let settings = |every: Option<Duration>| EngineSettings {
        initial_mode: InitialMode::Rest,
        reconcile_every: every,
        ..EngineSettings::default()
    };
    let build = |s: EngineSettings| engine_with(&world, store.clone(), s);
    let report = build(settings(None)).sync_once().await.unwrap();
    assert!(!report.reconciled);
    let m = mirror(store.as_ref()).await;
    let with_opp = world.seed.people.iter().find(|p| p.has_owner() && p.sf_opportunity_id.is_some()).unwrap();
    let mut ids = m.keys().copied().filter(|id| *id != with_opp.marketo_id);
    let (stale, missing) = (ids.next().unwrap(), ids.next().unwrap());
    let mut wrong = m[&stale].clone();
    wrong.title = Some("Planted title".into());
    let mut wrong_opp = m[&with_opp.marketo_id].clone();
    wrong_opp.salesforce_opportunity = salesync::core::person::OpportunityRef::Salesforce(None);
    let mut extra = m[&stale].clone();
    extra.marketo_id = 9_000_000;
    let plant = |decisions: Vec<Decision>| {
        let store = store.clone();
        async move {
            store.apply_page(MirrorPage { decisions, checkpoint: None, at: chrono::Utc::now() }).await.unwrap();
        }
    };
    plant(vec![
        Decision::Update { person: wrong, changed: vec![] },
        Decision::Remove { marketo_id: missing, reason: RemovalReason::Vanished },
        Decision::Insert { person: extra },
    ])
    .await;

    // Not due yet with the weekly default: an ordinary pass sees nothing of it.
    let report = build(settings(Some(Duration::from_secs(7 * 24 * 3600)))).sync_once().await.unwrap();
    assert!(!report.reconciled && report.drift.is_empty(), "{report:?}");
    assert_eq!(mirror(store.as_ref()).await[&stale].title.as_deref(), Some("Planted title"));
    // (Planted only now: the ordinary pass's Salesforce stream re-reads recently modified
    // contacts, which could repair it before the reconcile sees it.)
    plant(vec![Decision::Update { person: wrong_opp, changed: vec![] }]).await;
    // Due: the pass reconciles and repairs.
    let report = build(settings(Some(Duration::from_millis(1)))).sync_once().await.unwrap();
    assert!(report.reconciled, "{report:?}");
    let d = &report.drift;
    assert_eq!((d.missing, d.extra), (1, 1), "{d:?}");
    assert_eq!(d.stale.get("title"), Some(&1), "{d:?}");
    assert_eq!(d.stale.get("sfdcOpptyId"), Some(&1), "{d:?} {:?} {}", report.warnings, report.opportunities_resolved);
    assert_eq!(d.stale.len(), 2, "nothing else differed: {d:?}");
    assert_mirror_matches(&world, store.as_ref()).await;
    let after = mirror(store.as_ref()).await;
    assert_eq!(
        after[&with_opp.marketo_id].salesforce_opportunity_id().map(|i| i.as_str().to_string()),
        with_opp.sf_opportunity_id
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_drift_repair_finds_and_counts_each_kind() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    drift_repair(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_drift_repair_finds_and_counts_each_kind() {
    on_postgres(drift_repair).await;
}

/// Issue #13 part 4: a rebuild fills a shadow copy while the live mirror stays as it is (killed
/// at several points), carries a change made meanwhile, and swaps in exactly the difference.
async fn rebuild_without_downtime(store: Arc<dyn Store>, mode: InitialMode) {
    use salesync::core::mirror::Decision;
    use salesync::core::ports::store::MirrorPage;
    use salesync::engine::{Error, MirrorChange, Phase};
    let world = World::unlimited(1200, 41).await;
    let eng = engine(&world, store.clone(), mode);
    eng.sync_once().await.unwrap();
    assert_mirror_matches(&world, store.as_ref()).await;
    let m = mirror(store.as_ref()).await;
    let ids: Vec<i64> = m.keys().copied().collect();
    let (stale, missing, changed, later) = (ids[0], ids[1], ids[5], ids[6]);
    let mut wrong = m[&stale].clone();
    wrong.title = Some("Planted title".into());
    let mut extra = m[&stale].clone();
    extra.marketo_id = 9_000_000;
    let decisions = vec![
        Decision::Update { person: wrong, changed: vec![] },
        Decision::Remove { marketo_id: missing, reason: RemovalReason::Vanished },
        Decision::Insert { person: extra },
    ];
    store.apply_page(MirrorPage { decisions, checkpoint: None, at: chrono::Utc::now() }).await.unwrap();
    let planted = mirror(store.as_ref()).await;

    // Killed after a few shadow pages, twice: the live mirror is untouched, the rebuild resumable.
    for stop_after in [1, 3] {
        let mut events = eng.subscribe();
        let cancel = CancellationToken::new();
        let run = {
            let (eng, cancel) = (eng.clone(), cancel.clone());
            tokio::spawn(async move { eng.rebuild_with(&cancel).await })
        };
        let mut pages = 0;
        while pages < stop_after {
            match events.recv().await {
                Ok(SyncEvent::PageApplied { phase: Phase::Rebuild, .. }) => pages += 1,
                Ok(SyncEvent::Finished { .. }) | Err(_) => break,
                Ok(_) => {}
            }
        }
        cancel.cancel();
        let outcome = run.await.unwrap();
        assert!(matches!(outcome, Err(Error::Cancelled)), "{mode:?} stopped after {stop_after}: {outcome:?}");
        assert_eq!(mirror(store.as_ref()).await, planted, "{mode:?}: the live mirror is untouched mid-rebuild");
        assert!(eng.rebuild_started_at().await.unwrap().is_some());
    }

    // A change made in Marketo during the rebuild reaches the mirror and is not undone.
    assert!(world.marketo.update_lead(changed, obj(json!({"title": "Changed during the rebuild"}))));
    let mut changes = eng.subscribe_changes();
    let report = eng.rebuild().await.unwrap();
    let r = report.rebuild.clone().unwrap();
    assert!(r.promoted, "{report:?}");
    assert_eq!((r.inserted, r.updated, r.removed), (1, 1, 1), "{r:?}");
    assert_mirror_matches(&world, store.as_ref()).await;
    let mut published = Vec::new();
    while let Ok(c) = changes.try_recv() {
        published.push(c);
    }
    let title = vec![salesync::core::mapping::LeadField::Title];
    for expected in [
        MirrorChange::Updated { id: changed, changed: title.clone() },
        MirrorChange::Updated { id: stale, changed: title.clone() },
        MirrorChange::Inserted { id: missing },
        MirrorChange::Removed { id: 9_000_000, reason: RemovalReason::Vanished },
    ] {
        assert!(published.contains(&expected), "{expected:?} not in {published:?}");
    }
    assert_eq!(published.len(), 4, "only the difference is published: {published:?}");
    assert_eq!(store.tombstone(9_000_000).await.unwrap().unwrap().reason, RemovalReason::Vanished);
    assert!(eng.rebuild_started_at().await.unwrap().is_none());
    let shadow = store.shadow().unwrap();
    assert!(shadow.list_shadow_people(None, 10).await.unwrap().is_empty(), "the shadow is emptied");

    // The live streams carry on from the shadow's positions: nothing missed, nothing doubled.
    assert!(world.marketo.update_lead(later, obj(json!({"firstName": "After the rebuild"}))));
    let report = eng.sync_once().await.unwrap();
    assert_eq!((report.inserted, report.updated, report.removed.total()), (0, 1, 0), "{report:?}");
    assert!(report.rebuild.is_none());
    assert_mirror_matches(&world, store.as_ref()).await;
    let report = eng.sync_once().await.unwrap();
    assert_eq!((report.inserted, report.updated, report.removed.total()), (0, 0, 0), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_without_downtime_rest() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    rebuild_without_downtime(store, InitialMode::Rest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rebuild_without_downtime_bulk() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    rebuild_without_downtime(store, InitialMode::Bulk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_without_downtime() {
    on_postgres(|store| rebuild_without_downtime(store, InitialMode::Rest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_rebuild_leaves_the_mirror_as_it_was() {
    let TestStore { store, dir: _dir, .. } = TestStore::sqlite().await;
    let world = World::unlimited(600, 43).await;
    let eng = engine_with(
        &world,
        store.clone(),
        EngineSettings {
            initial_mode: InitialMode::Rest,
            // One page of shadow work per pass at most (and few empty chunks to end the sweep).
            rebuild_slice: Duration::from_millis(1),
            // (The seed's ids start at 1001: three empty chunks come first.)
            rest_empty_chunks_to_stop: 5,
            ..EngineSettings::default()
        },
    );
    eng.sync_once().await.unwrap();
    assert_mirror_matches(&world, store.as_ref()).await;
    let before = mirror(store.as_ref()).await;
    assert!(eng.start_rebuild().await.unwrap());
    assert!(!eng.start_rebuild().await.unwrap(), "one rebuild at a time");
    // Passes of one shadow page each (the first id chunks are empty) until the shadow has people.
    let mut written = 0;
    for _ in 0..10 {
        let full = eng.sync_once().await.unwrap();
        let r = full.rebuild.clone().unwrap();
        assert!(!r.promoted, "{full:?}");
        written += r.shadow_written;
        if written > 0 {
            break;
        }
    }
    assert!(written > 0);
    assert!(!store.shadow().unwrap().list_shadow_people(None, 10).await.unwrap().is_empty());
    assert_eq!(mirror(store.as_ref()).await, before, "the live mirror is untouched");
    assert!(eng.discard_rebuild().await.unwrap());
    assert!(!eng.discard_rebuild().await.unwrap());
    assert!(eng.rebuild_started_at().await.unwrap().is_none());
    assert!(store.shadow().unwrap().list_shadow_people(None, 10).await.unwrap().is_empty());
    let report = eng.sync_once().await.unwrap();
    assert!(report.rebuild.is_none());
    assert_eq!(mirror(store.as_ref()).await, before);
    // A rebuild in one-page slices still gets there, pass after pass (its streams catch up in
    // the slice after its initial sync).
    let report = eng.rebuild().await.unwrap();
    assert!(report.rebuild.unwrap().promoted);
    assert_mirror_matches(&world, store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rebuild_without_downtime() {
    rebuild_without_downtime(Arc::new(salesync::store::MemoryStore::new()), InitialMode::Rest).await;
}
