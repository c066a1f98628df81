//! End to end: the bulk initial sync against the Marketo emulator with its real limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use salesync_core::ports::marketo::MarketoApi;
use salesync_core::ports::salesforce::MockSalesforceApi;
use salesync_core::ports::store::MirrorStoreExt;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator};
use salesync_engine::{EngineSettings, InitialMode, InitialPath, SyncEngine};
use salesync_store::MemoryStore;

struct Run {
    calls: usize,
    secs: f64,
}

async fn bulk_initial_sync(people: usize, settings: EngineSettings) -> Run {
    let marketo = MarketoEmulator::start(MarketoConfig::default()).await.unwrap();
    let seed = salesync_emulator::seed::generate(people, 7);
    marketo.seed_world(&seed);
    let client: Arc<dyn MarketoApi> = Arc::new(
        salesync_marketo::MarketoClient::builder()
            .base_url(marketo.base_url())
            .client_id(marketo.client_id())
            .client_secret(marketo.client_secret())
            .build()
            .unwrap(),
    );
    let store = Arc::new(MemoryStore::new());
    let engine = SyncEngine::builder()
        .marketo(client)
        .salesforce(Arc::new(MockSalesforceApi::new()))
        .store(store.clone())
        .settings(EngineSettings {
            instance_id: "123-ABC-456".into(),
            initial_mode: InitialMode::Bulk,
            opportunity_lookup: false,
            ..settings
        })
        .build()
        .unwrap();
    let started = Instant::now();
    let report = engine.sync_once().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.initial_path, Some(InitialPath::Bulk));
    let calls = marketo.call_log().iter().filter(|c| c.counted).count();

    let want: BTreeSet<i64> = seed.people.iter().filter(|p| p.has_owner()).map(|p| p.marketo_id).collect();
    let got: BTreeSet<i64> = store.all_people().await.unwrap().iter().map(|p| p.marketo_id).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    if !missing.is_empty() {
        let p = seed.people.iter().find(|p| p.marketo_id == *missing[0]).unwrap();
        eprintln!(
            "first missing: {p:?}\nrecord errors: {:?}",
            &report.record_errors[..report.record_errors.len().min(3)]
        );
    }
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    Run { calls, secs }
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_initial_sync_probes_the_oldest_lead_and_pipelines_jobs() {
    let run = bulk_initial_sync(2_000, EngineSettings::default()).await;
    eprintln!("bulk initial sync (probe + pipeline): {} Marketo calls, {:.2} s", run.calls, run.secs);
    assert!(run.calls < 200, "{} calls", run.calls);
}

/// The previous behaviour (windows from 2006, one job at a time) for comparison: ~750 calls,
/// about three minutes under the real rate limit. `cargo test -- --ignored` to run.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "slow: rate-limit bound"]
async fn bulk_initial_sync_without_probe_or_pipeline() {
    let run =
        bulk_initial_sync(2_000, EngineSettings { probe_oldest: false, bulk_jobs_ahead: 1, ..Default::default() })
            .await;
    eprintln!("bulk initial sync (no probe, no pipeline): {} Marketo calls, {:.2} s", run.calls, run.secs);
}
