#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Text full of SQL and SOQL metacharacters — quotes, backslashes, `%`, `_`, `;`, comments —
//! is data, never syntax: it round-trips through every store backend (people, email lookups,
//! reminders, outbox payloads) and through the Salesforce queries that carry user text (the
//! email lookup that picks a Task's WhoId, the external-id lookup of an activity).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use salesync::core::activity::{AdminSettings, ReminderPriority, SalesActivity, SalesActivityKind};
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::core::ports::store::{MirrorPage, OutboxPayload, OutboxState, Store};
use salesync::core::{mirror::Decision, person::Person, sfid::SalesforceId};
use salesync::delivery::{DeliverySettings, Dispatcher, NewReminder};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_testkit::{TestStore, obj};
use serde_json::{Value, json};

/// An email that is valid enough for Salesforce yet full of metacharacters.
const EMAIL: &str = r#"o'brien\"_%';--/*x*/@ex-ample.com"#;
/// Would match [`EMAIL`] if `%`/`_` were wildcards or the quote ended the literal.
const DECOYS: [&str; 3] = [r#"o'brien\"X12';--/*x*/@ex-ample.com"#, "o@ex-ample.com", r#"o'brien\"_%@ex-ample.com"#];
const NAME: &str = r#"Robert'); DROP TABLE people;-- \ "Bobby" 50% _x_"#;
const SUBJECT: &str = r#"Re: 100% off' OR '1'='1 \' \\ _%_ "quoted" ; -- /* */"#;
/// An activity id (≤ 64 characters) with the same mix.
const ACTIVITY_ID: &str = r#"act-'\"%_;--1"#;

fn sfid(s: &str) -> SalesforceId {
    SalesforceId::parse(s).unwrap()
}

fn person(marketo_id: i64, email: &str) -> Person {
    Person {
        first_name: Some(NAME.into()),
        last_name: Some(format!("{NAME} {marketo_id}")),
        company: Some(SUBJECT.into()),
        title: Some("\\'%_".into()),
        phone: Some("+1 (555) 'x'".into()),
        source: Some("%".into()),
        ..salesync_testkit::person(marketo_id, email)
    }
}

/// People, email lookups, reminders and outbox payloads keep the text exactly.
async fn store_round_trip(store: Arc<dyn Store>) {
    let mut people = vec![person(1, EMAIL)];
    people.extend(DECOYS.iter().enumerate().map(|(i, e)| person(i as i64 + 2, e)));
    let decisions = people.iter().cloned().map(|person| Decision::Insert { person }).collect();
    store.apply_page(MirrorPage { decisions, checkpoint: None, at: Utc::now() }).await.unwrap();

    assert_eq!(store.person(1).await.unwrap().as_ref(), Some(&people[0]));
    let found = store.people_by_email(EMAIL).await.unwrap();
    assert_eq!(found.iter().map(|p| p.marketo_id).collect::<Vec<_>>(), vec![1], "{found:?}");
    assert_eq!(found[0], people[0]);
    let found = store.people_by_email(&EMAIL.to_uppercase()).await.unwrap();
    assert_eq!(found.iter().map(|p| p.marketo_id).collect::<Vec<_>>(), vec![1], "case-insensitive, still exact");
    for pattern in ["%", "_", "o%", "%' OR '1'='1", "' OR 1=1 --"] {
        assert!(store.people_by_email(pattern).await.unwrap().is_empty(), "{pattern:?} matched someone");
    }
    assert_eq!(store.count_people().await.unwrap(), 4, "nothing dropped");
}

/// The same through a dispatcher: reminder subject/details and activity payloads.
async fn recording_round_trip(store: Arc<dyn Store>, dispatcher: &Dispatcher, marketo_id: i64, reminder_for: i64) {
    let recorded = dispatcher.record_activity(activity(marketo_id)).await.unwrap();
    assert_eq!(recorded.id, ACTIVITY_ID);
    let reminder = dispatcher
        .create_reminder(NewReminder {
            id: Some(r#"rem-'%_\"#.into()),
            marketo_id: reminder_for,
            subject: SUBJECT.into(),
            priority: ReminderPriority::Normal,
            due_date: None,
            details: Some(NAME.into()),
        })
        .await
        .unwrap();
    let stored = store.reminder(&reminder.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.id.as_str(), stored.subject.as_str(), stored.details.as_deref()),
        (reminder.id.as_str(), SUBJECT, Some(NAME))
    );
    let items = dispatcher.status(&recorded).await.unwrap();
    assert!(!items.is_empty());
    for item in items {
        match &item.payload {
            OutboxPayload::Activity { activity } => {
                assert_eq!((activity.id.as_str(), activity.subject.as_deref()), (ACTIVITY_ID, Some(SUBJECT)))
            }
            other => panic!("unexpected payload {other:?}"),
        }
    }
}

fn activity(marketo_id: i64) -> SalesActivity {
    SalesActivity {
        subject: Some(SUBJECT.into()),
        link: None,
        campaign: None,
        call: None,
        bounce_details: None,
        ..salesync_testkit::activity(ACTIVITY_ID, marketo_id, SalesActivityKind::SendSalesEmail)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_sqlite_stores_keep_hostile_text_exact() {
    store_round_trip(Arc::new(salesync::store::MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hostile'%_;--.db").display());
    store_round_trip(salesync::store::open(&url).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_keeps_hostile_text_exact() {
    let pg = TestStore::postgres("hostile").await;
    pg.dropper().around(store_round_trip(pg.store.clone())).await;
}

/// Salesforce: the email lookup finds exactly the Contact with the hostile email (not the
/// decoys), and the delivered Task keeps the hostile subject and external id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_queries_carry_hostile_text_as_data() {
    let mkto = MarketoEmulator::start(MarketoConfig { limits: MarketoLimits::unlimited(), ..MarketoConfig::default() })
        .await
        .unwrap();
    let sf = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
    let account = sf.insert("Account", obj(json!({"Name": SUBJECT}))).unwrap();
    let contact = sf.insert("Contact", obj(json!({"LastName": NAME, "Email": EMAIL, "AccountId": account}))).unwrap();
    for (i, d) in DECOYS.iter().enumerate() {
        sf.insert("Contact", obj(json!({"LastName": format!("Decoy {i}"), "Email": d}))).unwrap();
        sf.insert("Lead", obj(json!({"LastName": format!("Decoy {i}"), "Company": "X", "Email": d}))).unwrap();
    }
    let client = SalesforceClient::builder()
        .login_url(sf.base_url())
        .client_id(sf.client_id())
        .client_secret(sf.client_secret())
        .build()
        .unwrap();
    let found = client.find_by_email(EMAIL).await.unwrap();
    assert_eq!(found.iter().map(|r| r.id.as_str().to_string()).collect::<Vec<_>>(), vec![contact.clone()], "{found:?}");
    for pattern in ["%", "o%", "' OR Email != '", r"\'"] {
        assert!(client.find_by_email(pattern).await.unwrap().is_empty(), "{pattern:?} matched a record");
    }

    // A person without Salesforce ids: delivery finds the Contact by the hostile email.
    let marketo_id = mkto.create_lead(obj(json!({"email": EMAIL, "firstName": NAME})));
    let dir = tempfile::tempdir().unwrap();
    let store = salesync::store::open(&format!("sqlite://{}", dir.path().join("m.db").display())).await.unwrap();
    // The reminder goes to a second person, linked to the Contact (reminders need a WhoId).
    let linked_id = mkto.create_lead(obj(json!({"email": "linked@ex-ample.com"})));
    let linked = Person {
        salesforce_contact_id: Some(sfid(&contact)),
        salesforce_account_id: Some(sfid(&account)),
        ..person(linked_id, "linked@ex-ample.com")
    };
    let decisions = vec![Decision::Insert { person: person(marketo_id, EMAIL) }, Decision::Insert { person: linked }];
    store.apply_page(MirrorPage { decisions, checkpoint: None, at: Utc::now() }).await.unwrap();
    store.put_settings(AdminSettings { reminder_task_sync: true, ..AdminSettings::default() }).await.unwrap();
    let marketo = MarketoClient::builder()
        .base_url(mkto.base_url())
        .client_id(mkto.client_id())
        .client_secret(mkto.client_secret())
        .build()
        .unwrap();
    let dispatcher = Dispatcher::builder()
        .marketo(Arc::new(marketo))
        .salesforce(Arc::new(client.clone()))
        .store(store.clone())
        .settings(DeliverySettings {
            backoff_base: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    recording_round_trip(store.clone(), &dispatcher, marketo_id, linked_id).await;
    let mut delivered = 0;
    for _ in 0..20 {
        let report = dispatcher.deliver_once().await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        delivered += report.salesforce.delivered;
        if store.outbox_items(OutboxState::Pending, 10).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(delivered >= 2, "the activity's Task and the reminder's Task");
    let tasks = sf.records("Task");
    let email_task = tasks
        .iter()
        .find(|t| t.get("Salesync_Activity_Id__c").and_then(Value::as_str) == Some(ACTIVITY_ID))
        .unwrap_or_else(|| panic!("no Task with the hostile external id: {tasks:?}"));
    assert_eq!(email_task.get("WhoId").and_then(Value::as_str), Some(contact.as_str()), "{email_task:?}");
    let subject = email_task.get("Subject").and_then(Value::as_str).unwrap();
    assert!(subject.contains(SUBJECT), "{subject:?}");
    // The reminder's Task too, under the admin subject template.
    let subjects: Vec<&str> = tasks.iter().filter_map(|t| t.get("Subject").and_then(Value::as_str)).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.iter().all(|s| s.ends_with(&format!(": {SUBJECT}"))), "{subjects:?}");
    // The external-id lookup (used when an outcome is unknown) finds the Task by the hostile id.
    let soql = salesync::salesforce::Soql::new()
        .select(&["Id", "Subject"])
        .from("Task")
        .where_eq("Salesync_Activity_Id__c", ACTIVITY_ID);
    let rows = client.query_all(&soql).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["Subject"].as_str(), Some(subject));
}
