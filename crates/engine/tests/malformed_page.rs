//! A malformed Marketo page never reaches the store: the REST initial sync fails on a truncated
//! page with the mirror and its checkpoint exactly as the last good page left them, fails the same
//! way while the page stays broken, and completes once Marketo answers properly again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use salesync_core::Error;
use salesync_core::ports::marketo::MarketoApi;
use salesync_core::ports::salesforce::MockSalesforceApi;
use salesync_core::ports::store::{Checkpoint, CheckpointStore, MirrorStore, StreamId};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoFault};
use salesync_engine::{EngineSettings, InitialMode, SyncEngine};
use salesync_marketo::RetryConfig;
use salesync_store::MemoryStore;

async fn mirror(store: &MemoryStore) -> (Vec<salesync_core::person::Person>, Option<Checkpoint>) {
    let people = store.list_people(None, 10_000).await.unwrap();
    (people, store.checkpoint(StreamId::InitialSync).await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_page_leaves_mirror_and_checkpoint_unchanged() {
    let marketo = MarketoEmulator::start(MarketoConfig::default()).await.unwrap();
    let seed = salesync_emulator::seed::generate(500, 11);
    marketo.seed_world(&seed);
    let client: Arc<dyn MarketoApi> = Arc::new(
        salesync_marketo::MarketoClient::builder()
            .base_url(marketo.base_url())
            .client_id(marketo.client_id())
            .client_secret(marketo.client_secret())
            .retry(RetryConfig {
                max_attempts: 2,
                base_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(10),
            })
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
            initial_mode: InitialMode::Rest,
            opportunity_lookup: false,
            page_size: 100,
            // The fault below counts calls in order: one chunk in flight keeps that order.
            rest_reads_in_flight: 1,
            ..EngineSettings::default()
        })
        .build()
        .unwrap();

    // Every lead page from the nth on is cut short (`{"requestId":…,"success":true,"result":[{"id":`).
    let broken = |n| {
        FaultPlan::<MarketoFault>::new(
            vec![
                FaultRule::new(Trigger::FromNth { n, count: u64::MAX }, FaultAction::MalformedBody)
                    .on_path("leads.json"),
            ],
            1,
        )
    };
    // The sweep reads 100 ids per call from id 1: break it two calls after the first seeded id.
    let first = seed.people.iter().map(|p| p.marketo_id).min().unwrap();
    let first_call = u64::try_from((first - 1) / 100 + 1).unwrap();
    marketo.set_faults(broken(first_call + 2));
    let e = engine.sync_once().await.unwrap_err();
    assert!(matches!(e, salesync_engine::Error::Port(Error::Protocol { .. })), "{e:?}");
    let (people, checkpoint) = mirror(&store).await;
    assert!(!people.is_empty(), "the good pages were applied");
    let checkpoint = checkpoint.expect("the good pages were checkpointed");

    // Still broken: nothing moves.
    marketo.set_faults(broken(1));
    engine.sync_once().await.unwrap_err();
    let (again, again_checkpoint) = mirror(&store).await;
    assert_eq!(again, people, "a malformed page changed the mirror");
    assert_eq!(
        again_checkpoint.map(|c| c.position),
        Some(checkpoint.position),
        "a malformed page moved the checkpoint"
    );

    // Fixed: the sync resumes and the mirror is complete and right.
    marketo.set_faults(FaultPlan::<MarketoFault>::new(Vec::new(), 1));
    engine.sync_once().await.unwrap();
    let want: BTreeSet<i64> = seed.people.iter().filter(|p| p.has_owner()).map(|p| p.marketo_id).collect();
    let got: BTreeSet<i64> = mirror(&store).await.0.iter().map(|p| p.marketo_id).collect();
    assert_eq!(got, want);
}
