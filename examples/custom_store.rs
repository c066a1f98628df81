//! Plugging your own database in: implement the store traits (`Store` is their union).
//!
//! `CountingStore` wraps `salesync::store::MemoryStore`: it implements `MirrorStore` itself, to
//! log and count `apply_page`, and forwards the other traits to it. A real host store implements
//! the same traits against its own tables (each write is one atomic unit: a page of decisions
//! with its checkpoint, an outbox recording, a claim…); the `salesync-store` crate's
//! `conformance` module (feature `testing`) checks such an implementation.
//!
//! The example runs one `sync_once` against both emulators (1,000 people) through the wrapper
//! and prints how many pages went through it.
//!
//! Run: `cargo run --example custom_store`
#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use salesync::core::activity::{AdminSettings, ReminderTask, UnsubscribeState};
use salesync::core::ports::store::{
    ApplyCounts, Checkpoint, CheckpointStore, Finished, InboundBatch, InboundStore, InstanceBinding, LeaseStore,
    MirrorPage, MirrorStore, OutboxCounts, OutboxItem, OutboxState, OutboxStore, Recording, ReminderStore,
    SettingsStore, StreamId, Target, Tombstone,
};
use salesync::core::{Result, person::Person, sfid::SalesforceId};
use salesync::engine::{EngineSettings, InitialMode, SyncEngine};
use salesync::marketo::MarketoClient;
use salesync::salesforce::SalesforceClient;
use salesync::store::MemoryStore;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The host's store: here a memory store that counts the pages the engine applies.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    pages: AtomicU64,
    inserted: AtomicU64,
}

/// Writes, for each store trait listed, an impl for `$ty` whose methods call the same method of
/// `self.$field`.
macro_rules! forward {
    ($ty:ty => $field:ident { $( $tr:ident { $( fn $name:ident(&self $(, $arg:ident: $argty:ty)*) -> $ret:ty; )* } )* }) => {
        $(
            #[async_trait]
            impl $tr for $ty {
                $(
                    async fn $name(&self $(, $arg: $argty)*) -> Result<$ret> {
                        self.$field.$name($($arg),*).await
                    }
                )*
            }
        )*
    };
}

/// The one trait this store changes: `apply_page` logs and counts; the other mirror reads pass
/// through.
#[async_trait]
impl MirrorStore for CountingStore {
    async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
        let n = self.pages.fetch_add(1, Ordering::Relaxed) + 1;
        let stream = page.checkpoint.as_ref().map_or("-", |c| c.stream.as_str());
        let decisions = page.decisions.len();
        let counts = self.inner.apply_page(page).await?;
        let before = self.inserted.fetch_add(counts.inserted, Ordering::Relaxed);
        if decisions > 0 && before < 600 {
            println!(
                "  apply_page #{n} ({stream}): {decisions} decisions -> {} inserted, {} updated, {} removed, {} untouched",
                counts.inserted, counts.updated, counts.removed, counts.untouched
            );
        }
        Ok(counts)
    }
    async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
        self.inner.person(marketo_id).await
    }
    async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        self.inner.people_by_ids(ids).await
    }
    async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
        self.inner.people_by_email(email).await
    }
    async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        self.inner.people_by_salesforce_id(id).await
    }
    async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        self.inner.people_by_owner(owner, after, limit).await
    }
    async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        self.inner.list_people(after, limit).await
    }
    async fn count_people(&self) -> Result<u64> {
        self.inner.count_people().await
    }
    async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
        self.inner.tombstone(marketo_id).await
    }
}

// The other concerns, unchanged: each trait is small, so a wrapper forwards only what it wraps.
forward! {
    CountingStore => inner {
        InstanceBinding {
            fn bind_instance(&self, instance: &str) -> ();
        }
        CheckpointStore {
            fn checkpoint(&self, stream: StreamId) -> Option<Checkpoint>;
            fn put_checkpoint(&self, checkpoint: Checkpoint) -> ();
        }
        OutboxStore {
            fn record(&self, recording: Recording) -> Vec<i64>;
            fn claim(&self, target: Target, limit: u32, worker: &str, lease: Duration, now: DateTime<Utc>) -> Vec<OutboxItem>;
            fn finish(&self, finished: Vec<Finished>, now: DateTime<Utc>) -> ();
            fn outbox_item(&self, id: i64) -> Option<OutboxItem>;
            fn outbox_items(&self, state: OutboxState, limit: u32) -> Vec<OutboxItem>;
            fn outbox_counts(&self) -> OutboxCounts;
            fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> u64;
        }
        ReminderStore {
            fn reminder(&self, id: &str) -> Option<ReminderTask>;
            fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Option<ReminderTask>;
            fn reminders_for(&self, marketo_id: i64) -> Vec<ReminderTask>;
            fn put_reminder(&self, task: ReminderTask) -> ();
            fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> bool;
        }
        InboundStore {
            fn unsubscribe(&self, marketo_id: i64) -> Option<UnsubscribeState>;
            fn apply_inbound(&self, batch: InboundBatch) -> ();
        }
        SettingsStore {
            fn settings(&self) -> AdminSettings;
            fn put_settings(&self, settings: AdminSettings) -> ();
        }
        LeaseStore {
            fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> bool;
            fn release_lease(&self, name: &str, holder: &str) -> ();
        }
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), BoxError> {
    const PEOPLE: usize = 1_000;
    let world = salesync_emulator::seed::generate(PEOPLE, 3);
    let marketo_emu =
        MarketoEmulator::start(MarketoConfig { limits: MarketoLimits::unlimited(), ..MarketoConfig::default() })
            .await?;
    let salesforce_emu = SalesforceEmulator::start(SalesforceConfig::default()).await?;
    marketo_emu.seed_world(&world);
    salesforce_emu.seed_world(&world);

    let store = Arc::new(CountingStore::default());
    let engine = SyncEngine::builder()
        .marketo(Arc::new(
            MarketoClient::builder()
                .base_url(marketo_emu.base_url())
                .client_id(marketo_emu.client_id())
                .client_secret(marketo_emu.client_secret())
                .build()?,
        ))
        .salesforce(Arc::new(
            SalesforceClient::builder()
                .login_url(salesforce_emu.base_url())
                .client_id(salesforce_emu.client_id())
                .client_secret(salesforce_emu.client_secret())
                .build()?,
        ))
        // Any store goes here (an `Arc<dyn Store>`, an `Arc` of your own): the engine sees only
        // the traits it uses (`EngineStore`).
        .store(store.clone())
        .settings(EngineSettings {
            instance_id: marketo_emu.base_url(),
            initial_mode: InitialMode::Rest,
            ..EngineSettings::default()
        })
        .build()?;

    println!("sync_once against {PEOPLE} emulated Marketo people through CountingStore:");
    let report = engine.sync_once().await?;
    println!(
        "{} pages applied through CountingStore ({} people inserted by them); the engine reported {} pages, {} inserted, {} unqualified skipped; {} people in the store",
        store.pages.load(Ordering::Relaxed),
        store.inserted.load(Ordering::Relaxed),
        report.pages,
        report.inserted,
        report.skipped_unqualified,
        store.count_people().await?
    );
    marketo_emu.shutdown().await;
    salesforce_emu.shutdown().await;
    Ok(())
}
