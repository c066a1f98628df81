//! salesync in one process, against the embedded defaults: both API emulators (with Marketo's
//! real rate limits) seeded with 10,000 people, and an embedded SQLite mirror.
//!
//! Run: `cargo run --release --example quickstart`
//!
//! It runs the initial sync with a progress line, shows what landed (qualified vs. total,
//! duplicates kept), changes a few people in Marketo and runs an incremental pass, records a
//! sales email, a call and a reminder task and shows them arriving in the emulated Marketo and
//! Salesforce, then prints a summary.
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use salesync::core::activity::{
    AdminSettings, CallDetails, CallStatus, ReminderPriority, SalesActivity, SalesActivityKind,
};
use salesync::core::ports::store::Store;
use salesync::delivery::{DeliverySettings, Dispatcher, NewReminder};
use salesync::engine::{EngineSettings, SyncEngine, SyncEvent};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    const PEOPLE: usize = 10_000;

    // 1. Two emulated instances describing one world.
    let world = salesync_emulator::seed::generate(PEOPLE, 42);
    let marketo_emu = MarketoEmulator::start(MarketoConfig::default()).await?;
    let salesforce_emu = SalesforceEmulator::start(SalesforceConfig::default()).await?;
    marketo_emu.seed_world(&world);
    salesforce_emu.seed_world(&world);
    println!(
        "Marketo emulator    {}  ({PEOPLE} people, real limits: 100 calls/20 s, 10 concurrent)",
        marketo_emu.base_url()
    );
    println!("Salesforce emulator {}", salesforce_emu.base_url());

    // 2. The connectors and an embedded SQLite mirror.
    let marketo = Arc::new(
        MarketoClient::builder()
            .base_url(marketo_emu.base_url())
            .client_id(marketo_emu.client_id())
            .client_secret(marketo_emu.client_secret())
            .build()?,
    );
    let salesforce = Arc::new(
        SalesforceClient::builder()
            .login_url(salesforce_emu.base_url())
            .client_id(salesforce_emu.client_id())
            .client_secret(salesforce_emu.client_secret())
            .build()?,
    );
    let db = std::env::temp_dir().join(format!("salesync-quickstart-{}.db", std::process::id()));
    let store: Arc<dyn Store> = salesync::store::open(&format!("sqlite://{}", db.display())).await?;
    println!("Mirror              sqlite://{}", db.display());

    let engine = SyncEngine::builder()
        .marketo(marketo.clone())
        .salesforce(salesforce.clone())
        .store(store.clone())
        .settings(EngineSettings {
            instance_id: marketo_emu.base_url(),
            export_poll: Duration::from_millis(200),
            ..EngineSettings::default()
        })
        .build()?;

    // 3. Initial sync, with a progress line fed by the engine's events.
    let mut events = engine.subscribe();
    let progress = tokio::spawn(async move {
        let mut landed = 0u64;
        while let Ok(ev) = events.recv().await {
            if let SyncEvent::PageApplied { counts, .. } = ev {
                landed += counts.inserted + counts.updated;
                eprint!("\r  initial sync: {landed} people in the mirror");
                let _ = std::io::stderr().flush();
            }
        }
    });
    let t = Instant::now();
    let report = engine.sync_once().await?;
    progress.abort();
    eprintln!();
    let in_mirror = store.count_people().await?;
    let qualified = world.people.iter().filter(|p| p.has_owner()).count();
    println!(
        "\nInitial sync via {:?}: {} of {PEOPLE} Marketo people qualify (a Salesforce lead or contact with a sales owner); \
         {} in the mirror, {} skipped, {} Marketo + {} Salesforce API calls, {:.1} s",
        report.initial_path.unwrap_or(salesync::engine::InitialPath::Rest),
        qualified,
        in_mirror,
        report.skipped_unqualified,
        report.api_calls.marketo,
        report.api_calls.salesforce,
        t.elapsed().as_secs_f64()
    );
    let mut emails: HashMap<&str, usize> = HashMap::new();
    for p in world.people.iter().filter(|p| p.has_owner()) {
        if let Some(e) = &p.email {
            *emails.entry(e).or_default() += 1;
        }
    }
    let (dup_email, n) = emails.iter().find(|(_, n)| **n > 1).map(|(e, n)| (e.to_string(), *n)).unwrap_or_default();
    let kept = store.people_by_email(&dup_email).await?.len();
    println!("Duplicates are kept: {dup_email} belongs to {n} Marketo records → {kept} mirror records");

    // 4. Changes in Marketo, then one incremental pass.
    let owned: Vec<_> = world.people.iter().filter(|p| p.has_owner()).collect();
    let mut rename = serde_json::Map::new();
    rename.insert("title".into(), "Chief Revenue Officer".into());
    marketo_emu.update_lead(owned[0].marketo_id, rename);
    let mut disown = serde_json::Map::new();
    disown.insert("sfdcLeadOwnerId".into(), serde_json::Value::Null);
    marketo_emu.update_lead(owned[1].marketo_id, disown);
    marketo_emu.delete_lead(owned[2].marketo_id);
    let t = Instant::now();
    let inc = engine.sync_once().await?;
    println!(
        "\nIncremental pass: {} updated, {} removed ({} disqualified, {} deleted) in {:.2} s",
        inc.updated,
        inc.removed.total(),
        inc.removed.disqualified,
        inc.removed.deleted,
        t.elapsed().as_secs_f64()
    );

    // 5. Sales activity and a reminder task, delivered to both systems.
    store.put_settings(AdminSettings { reminder_task_sync: true, ..AdminSettings::default() }).await?;
    let dispatcher = Dispatcher::builder()
        .marketo(marketo.clone())
        .salesforce(salesforce.clone())
        .store(store.clone())
        .settings(DeliverySettings::default())
        .build()?;
    let person = owned
        .iter()
        .skip(3)
        .find(|p| p.sf_contact_id.is_some())
        .map(|p| p.marketo_id)
        .ok_or("no contact in the seeded world")?;
    let email = SalesActivity {
        actor_email: Some("rep0@sales.example.com".into()),
        subject: Some("Pricing for next year".into()),
        body: Some("Sent from the quickstart".into()),
        ..SalesActivity::new("", person, SalesActivityKind::SendSalesEmail, Utc::now())
    };
    let call = SalesActivity {
        kind: SalesActivityKind::SalesCall,
        subject: Some("Discovery call".into()),
        call: Some(CallDetails {
            status: CallStatus::Completed,
            duration_secs: Some(420),
            phone_number: None,
            recording_url: None,
            answered_by: None,
            outcome: Some("Interested".into()),
            reason: Some("Follow-up".into()),
        }),
        ..email.clone()
    };
    let e = dispatcher.record_activity(email).await?;
    let c = dispatcher.record_activity(call).await?;
    let r = dispatcher
        .create_reminder(NewReminder {
            id: None,
            marketo_id: person,
            subject: "Send the contract".into(),
            priority: ReminderPriority::High,
            due_date: Some(Utc::now().date_naive() + chrono::Days::new(2)),
            details: None,
        })
        .await?;
    println!("\nRecorded sales email {}, call {} and reminder {} for Marketo person {person}", e.id, c.id, r.id);
    let delivered = dispatcher.deliver_once().await?;
    println!("Delivered: {} to Marketo, {} to Salesforce", delivered.marketo.delivered, delivered.salesforce.delivered);
    for a in marketo_emu.custom_activities() {
        println!("  in Marketo:    activity {}", a);
    }
    for t in salesforce_emu.records("Task") {
        if t.get("Salesync_Activity_Id__c").is_some_and(|v| !v.is_null()) {
            println!(
                "  in Salesforce: Task {} {:?} status {:?}",
                t.get("Id").and_then(|v| v.as_str()).unwrap_or("?"),
                t.get("Subject").and_then(|v| v.as_str()).unwrap_or(""),
                t.get("Status").and_then(|v| v.as_str()).unwrap_or("")
            );
        }
    }

    println!(
        "\nSummary: {in_mirror} people mirrored, {} changes applied incrementally, 3 outbound items delivered, {:.1} s in all.",
        inc.updated + inc.removed.total(),
        started.elapsed().as_secs_f64()
    );
    marketo_emu.shutdown().await;
    salesforce_emu.shutdown().await;
    let _ = std::fs::remove_file(&db);
    Ok(())
}
