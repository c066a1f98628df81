//! The quickstart flow on the PostgreSQL store: both API emulators seeded with 2,000 people, an
//! initial sync and one incremental pass into a mirror kept in its own schema, a sales email
//! delivered to both systems, counts printed, and the schema dropped at the end.
//!
//! Needs a PostgreSQL server: `SALESYNC_STORE` (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! Run: `cargo run --features postgres --example postgres`
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use salesync::core::activity::{SalesActivity, SalesActivityKind};
use salesync::core::ports::store::Store;
use salesync::delivery::{DeliverySettings, Dispatcher};
use salesync::engine::{EngineSettings, SyncEngine};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync::store::PostgresStore;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    const PEOPLE: usize = 2_000;
    let url = std::env::var("SALESYNC_STORE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("salesync_example_{}", std::process::id());

    let world = salesync_emulator::seed::generate(PEOPLE, 42);
    let marketo_emu =
        MarketoEmulator::start(MarketoConfig { limits: MarketoLimits::unlimited(), ..MarketoConfig::default() })
            .await?;
    let salesforce_emu = SalesforceEmulator::start(SalesforceConfig::default()).await?;
    marketo_emu.seed_world(&world);
    salesforce_emu.seed_world(&world);

    // The mirror lives in its own schema of the host's database.
    let pg = PostgresStore::open_in_schema(&url, &schema).await?;
    let pool = pg.pool().clone();
    println!("Mirror: PostgreSQL schema {schema}");
    let outcome = run(&marketo_emu, &salesforce_emu, Arc::new(pg), &world).await;

    // Clean up whatever happened.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await?;
    pool.close().await;
    println!("Dropped schema {schema}");
    marketo_emu.shutdown().await;
    salesforce_emu.shutdown().await;
    outcome
}

async fn run(
    marketo_emu: &MarketoEmulator,
    salesforce_emu: &SalesforceEmulator,
    store: Arc<dyn Store>,
    world: &salesync_emulator::seed::SeedWorld,
) -> Result<(), BoxError> {
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
    let engine = SyncEngine::builder()
        .marketo(marketo.clone())
        .salesforce(salesforce.clone())
        .store(store.clone())
        .settings(EngineSettings {
            instance_id: marketo_emu.base_url(),
            export_poll: Duration::from_millis(200),
            export_poll_max: Duration::from_secs(1),
            ..EngineSettings::default()
        })
        .build()?;

    // Initial sync.
    let t = Instant::now();
    let report = engine.sync_once().await?;
    let qualified = world.people.iter().filter(|p| p.has_owner()).count();
    println!(
        "Initial sync via {:?}: {} inserted, {} unqualified skipped, {} in the mirror (expected {qualified}) in {:.1} s",
        report.initial_path,
        report.inserted,
        report.skipped_unqualified,
        store.count_people().await?,
        t.elapsed().as_secs_f64()
    );

    // A few changes in Marketo, then an incremental pass.
    let owned: Vec<_> = world.people.iter().filter(|p| p.has_owner()).collect();
    let (first, second) = match owned.as_slice() {
        [a, b, ..] => (a.marketo_id, b.marketo_id),
        _ => return Err("the seeded world has fewer than two qualified people".into()),
    };
    let mut change = serde_json::Map::new();
    change.insert("title".into(), "Chief Revenue Officer".into());
    marketo_emu.update_lead(first, change);
    marketo_emu.delete_lead(second);
    let inc = engine.sync_once().await?;
    println!(
        "Incremental pass: {} updated, {} removed; {} people in the mirror",
        inc.updated,
        inc.removed.total(),
        store.count_people().await?
    );

    // One sales email, delivered to both systems.
    let dispatcher = Dispatcher::builder()
        .marketo(marketo)
        .salesforce(salesforce)
        .store(store.clone())
        .settings(DeliverySettings::default())
        .build()?;
    let recorded = dispatcher
        .record_activity(SalesActivity {
            actor_email: Some("rep0@sales.example.com".into()),
            subject: Some("Pricing for next year".into()),
            ..SalesActivity::new("", first, SalesActivityKind::SendSalesEmail, Utc::now())
        })
        .await?;
    let delivered = dispatcher.deliver_once().await?;
    let counts = store.outbox_counts().await?;
    println!(
        "Sales email {}: {} to Marketo, {} to Salesforce; outbox {} delivered, {} pending, {} parked",
        recorded.id,
        delivered.marketo.delivered,
        delivered.salesforce.delivered,
        counts.delivered,
        counts.pending,
        counts.parked
    );
    Ok(())
}
