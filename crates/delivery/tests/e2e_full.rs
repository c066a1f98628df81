//! End to end against both emulators through the real connectors, on the in-memory store with a
//! mirror seeded by decisions, with faults injected on both sides: one Marketo activity per
//! activity, one Salesforce Task per loggable activity on the right record (a converted lead's
//! contact, a record found by email), opt-outs pushed, reminders synced, skips reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use salesync_core::activity::{AdminSettings, ReminderPriority, SalesActivityKind as K};
use salesync_core::ports::store::{
    InstanceBinding, MirrorPage, MirrorStore, OutboxPayload, OutboxState, OutboxStore, SettingsStore, Target,
};
use salesync_core::{
    mirror::Decision,
    person::{Person, SalesforceType},
};
use salesync_delivery::{DeliverySettings, Dispatcher, NewReminder, SystemClock};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoFault, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator, SalesforceFault};
use salesync_marketo::MarketoClient;
use salesync_salesforce::SalesforceClient;
use salesync_store::MemoryStore;
use serde_json::{Map, Value, json};

const PEOPLE: usize = 40;
const EXT: &str = "Salesync_Activity_Id__c";

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// What the mirror knows, and where Salesforce Tasks for the person must land.
struct Case {
    person: Person,
    /// The WhoId emails must be logged on (`None`: not logged).
    email_who: Option<String>,
    /// The WhoId calls must be logged on.
    call_who: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn activities_unsubscribes_and_reminders_reach_both_systems_once_despite_faults() {
    let mkto = MarketoEmulator::start(MarketoConfig {
        scan_block: 40,
        limits: MarketoLimits { calls_per_window: 10_000, ..Default::default() },
        ..MarketoConfig::default()
    })
    .await
    .unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();

    // The world: A contacts with ids in the mirror; B leads in the mirror, half converted in
    // Salesforce since; C no ids in the mirror but a Salesforce contact with the email; D nobody.
    let account = sf.insert("Account", fields(json!({"Name": "Acme"}))).unwrap();
    let mut cases = Vec::new();
    for i in 0..PEOPLE {
        let email = format!("p{i}@example.com");
        let marketo_id = mkto.create_lead(fields(json!({"email": email, "lastName": format!("P{i}")})));
        let mut person = no_sf(marketo_id);
        person.email = Some(email.clone());
        let case = match i % 4 {
            0 => {
                let c = sf
                    .insert(
                        "Contact",
                        fields(json!({"LastName": format!("P{i}"), "Email": email, "AccountId": account})),
                    )
                    .unwrap();
                person.salesforce_contact_id = Some(sfid(&c));
                person.salesforce_account_id = Some(sfid(&account));
                person.salesforce_type = SalesforceType::Contact;
                Case { person, email_who: Some(c.clone()), call_who: Some(c) }
            }
            1 => {
                let l = sf
                    .insert("Lead", fields(json!({"LastName": format!("P{i}"), "Company": "Acme", "Email": email})))
                    .unwrap();
                person.salesforce_lead_id = Some(sfid(&l));
                person.salesforce_type = SalesforceType::Lead;
                let who = if i % 8 == 1 { sf.convert_lead(&l, None, None, true).unwrap().contact_id } else { l };
                Case { person, email_who: Some(who.clone()), call_who: Some(who) }
            }
            2 => {
                let c = sf.insert("Contact", fields(json!({"LastName": format!("P{i}"), "Email": email}))).unwrap();
                Case { person, email_who: Some(c), call_who: None }
            }
            _ => Case { person, email_who: None, call_who: None },
        };
        cases.push(case);
    }
    let store = Arc::new(MemoryStore::new());
    store.bind_instance("e2e").await.unwrap();
    let decisions = cases.iter().map(|c| Decision::Insert { person: c.person.clone() }).collect();
    store.apply_page(MirrorPage { decisions, checkpoint: None, at: chrono::Utc::now() }).await.unwrap();
    store.put_settings(AdminSettings { reminder_task_sync: true, ..AdminSettings::default() }).await.unwrap();

    let marketo = MarketoClient::builder()
        .base_url(mkto.base_url())
        .client_id(mkto.client_id())
        .client_secret(mkto.client_secret())
        .allow_insecure_http(true)
        .rate_limit(10_000, Duration::from_secs(20))
        .retry(salesync_marketo::RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    let salesforce = SalesforceClient::builder()
        .login_url(sf.base_url())
        .client_id(sf.client_id())
        .client_secret(sf.client_secret())
        .allow_http(true)
        .retry(salesync_salesforce::RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    let d = Dispatcher::builder()
        .marketo(Arc::new(marketo))
        .salesforce(Arc::new(salesforce))
        .store(store.clone())
        .settings(DeliverySettings {
            worker_id: "e2e".into(),
            marketo_batch: 7,
            salesforce_batch: 9,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            max_attempts: 50,
            reminder_poll_interval: Duration::from_millis(200),
            clock: Arc::new(SystemClock),
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();

    let mut activity_ids = Vec::new();
    let mut reminders = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let m = c.person.marketo_id;
        for (prefix, kind) in [("e", K::SendSalesEmail), ("c", K::SalesCall), ("o", K::OpenSalesEmail)] {
            let mut a = activity(&format!("{prefix}{i}"), m, kind);
            a.occurred_at = chrono::Utc::now() - chrono::Duration::minutes(2);
            d.record_activity(a).await.unwrap();
            activity_ids.push(format!("{prefix}{i}"));
        }
        if i % 5 == 0 {
            d.record_unsubscribe(m).await.unwrap();
        }
        if i % 4 == 0 && i < 12 {
            let r = d
                .create_reminder(NewReminder {
                    id: Some(format!("rem{i}")),
                    marketo_id: m,
                    subject: "Call back".into(),
                    priority: ReminderPriority::High,
                    due_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 24),
                    details: Some("pricing".into()),
                })
                .await
                .unwrap();
            reminders.push(r.id);
        }
    }

    // Faults on both sides: lost responses on writes, transient errors everywhere.
    mkto.set_faults(FaultPlan::new(
        vec![
            // The second write always loses its response, then 10% at random.
            FaultRule::new(Trigger::Nth(2), FaultAction::ApplyThenDrop)
                .on_path("/activities/external.json")
                .on_method("POST"),
            FaultRule::new(Trigger::Ratio(0.10), FaultAction::ApplyThenDrop)
                .on_path("/activities/external.json")
                .on_method("POST"),
            FaultRule::new(Trigger::Ratio(0.05), FaultAction::Error(MarketoFault::code("604"))).on_path("/rest/"),
        ],
        5,
    ));
    sf.set_faults(FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Nth(2), FaultAction::ApplyThenDrop).on_path("/composite/sobjects"),
            FaultRule::new(Trigger::Ratio(0.10), FaultAction::ApplyThenDrop).on_path("/composite/sobjects"),
            FaultRule::new(Trigger::Ratio(0.05), FaultAction::Error(SalesforceFault::UnableToLockRow))
                .on_path("/services/data"),
            FaultRule::new(Trigger::Ratio(0.03), FaultAction::Error(SalesforceFault::ServerUnavailable))
                .on_path("/services/data"),
        ],
        6,
    ));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut completed = false;
    loop {
        let report = d.deliver_once().await.unwrap();
        assert!(
            matches!(report.salesforce.status, salesync_delivery::TargetStatus::Active)
                || matches!(report.salesforce.status, salesync_delivery::TargetStatus::Paused { .. }),
            "{report:?}"
        );
        let c = d.counts().await.unwrap();
        assert_eq!(c.parked, 0, "parked: {:?}", d.parked(5).await.unwrap());
        if c.pending == 0 && c.in_flight == 0 {
            if completed {
                break;
            }
            // Complete one reminder once the first round of everything is through.
            d.complete_reminder(&reminders[0]).await.unwrap();
            completed = true;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered in time: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more poll so the reminder sync has seen salesync's own Tasks.
    tokio::time::sleep(Duration::from_millis(250)).await;
    d.deliver_once().await.unwrap();

    // Marketo: exactly one custom activity per activity.
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for a in mkto.custom_activities() {
        let id = a["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["apiName"] == "salesyncActivityId")
            .and_then(|x| x["value"].as_str())
            .unwrap()
            .to_string();
        *per_id.entry(id).or_default() += 1;
    }
    assert_eq!(per_id.len(), activity_ids.len());
    assert!(per_id.values().all(|n| *n == 1), "duplicates in Marketo: {per_id:?}");

    // Salesforce: one Task per loggable activity, on the expected record; none on a converted lead.
    let tasks = sf.records("Task");
    let mut by_ext: HashMap<String, Vec<Map<String, Value>>> = HashMap::new();
    for t in &tasks {
        if let Some(ext) = t.get(EXT).and_then(Value::as_str) {
            by_ext.entry(ext.to_string()).or_default().push(t.clone());
        }
    }
    for (i, c) in cases.iter().enumerate() {
        for (prefix, who) in [("e", &c.email_who), ("c", &c.call_who)] {
            let id = format!("{prefix}{i}");
            match who {
                Some(who) => {
                    let found = by_ext.get(&id).unwrap_or_else(|| panic!("no Task for {id}"));
                    assert_eq!(found.len(), 1, "{id} logged {} times", found.len());
                    assert_eq!(found[0]["WhoId"].as_str(), Some(who.as_str()), "{id}");
                }
                None => assert!(!by_ext.contains_key(&id), "{id} should not be logged"),
            }
        }
        assert!(!by_ext.contains_key(&format!("o{i}")), "opens are not logged to Salesforce");
    }
    for t in &tasks {
        let who = t["WhoId"].as_str().unwrap_or("");
        if who.starts_with("00Q") {
            assert_eq!(sf.get("Lead", who).unwrap()["IsConverted"], json!(false), "Task on a converted lead");
        }
    }
    // Reminders: one Task each, the completed one Completed.
    for (n, r) in reminders.iter().enumerate() {
        let found = &by_ext[r];
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["TaskSubtype"], json!("Task"));
        assert_eq!(found[0]["Status"], json!(if n == 0 { "Completed" } else { "Not Started" }));
        let local = d.reminder(r).await.unwrap().unwrap();
        assert_eq!(local.salesforce_task_id.map(|s| s.to_string()).as_deref(), found[0]["Id"].as_str());
    }

    // Unsubscribes: pushed to the record the person's id leads to (the contact of a converted lead).
    for (i, c) in cases.iter().enumerate().filter(|(i, _)| i % 5 == 0) {
        let target = match i % 4 {
            0 | 1 => c.call_who.clone(),
            _ => None,
        };
        if let Some(id) = target {
            let object = if id.starts_with("003") { "Contact" } else { "Lead" };
            assert_eq!(sf.get(object, &id).unwrap()["HasOptedOutOfEmail"], json!(true), "person {i}");
        }
    }

    // Skips are reported with their reasons.
    let skipped = store.outbox_items(OutboxState::Skipped, 1000).await.unwrap();
    let reason = |key: &str| skipped.iter().find(|s| s.key == key).and_then(|s| s.result.clone());
    assert_eq!(reason("e3:salesforce").as_deref(), Some("no Salesforce record with this email"));
    assert!(reason("c2:salesforce").unwrap().contains("only for people with a Salesforce id"));
    assert!(skipped.iter().all(|s| s.target == Target::Salesforce));
    for s in &skipped {
        if let OutboxPayload::Unsubscribe { .. } = s.payload {
            assert_eq!(s.result.as_deref(), Some("the person has no Salesforce id"));
        }
    }
    // Nothing imported back: the only reminders are salesync's own.
    let mut all_reminders = Vec::new();
    for c in &cases {
        all_reminders.extend(d.reminders_for(c.person.marketo_id).await.unwrap());
    }
    assert_eq!(all_reminders.len(), reminders.len());
    // The faults did fire, on writes too.
    let sf_log = sf.call_log();
    let lost = sf_log.iter().filter(|c| c.fault.as_deref() == Some("apply-then-drop")).count();
    let errors = sf_log.iter().filter(|c| c.fault.as_deref() == Some("error")).count();
    assert!(lost >= 1 && errors >= 1, "Salesforce faults: {lost} lost responses, {errors} errors");
    let mk_lost =
        mkto.call_log().iter().filter(|c| c.outcome.as_deref().is_some_and(|o| o.starts_with("dropped"))).count();
    assert!(mk_lost >= 1, "no Marketo write lost its response");
    sf.shutdown().await;
    mkto.shutdown().await;
}
