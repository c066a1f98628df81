#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A store is per Marketo instance: an engine refuses a store bound to another instance before
//! any port call, in `sync_once` and in `run` (which stops instead of retrying forever).

use std::sync::Arc;
use std::time::Duration;

use salesync_core::ports::marketo::MockMarketoApi;
use salesync_core::ports::salesforce::MockSalesforceApi;
use salesync_core::ports::store::Store;
use salesync_engine::{EngineSettings, Error, SyncEngine};
use salesync_store::MemoryStore;
use tokio_util::sync::CancellationToken;

fn engine(store: Arc<dyn Store>, instance: &str) -> SyncEngine {
    // Mocks without expectations: any Marketo or Salesforce call panics.
    SyncEngine::builder()
        .marketo(Arc::new(MockMarketoApi::new()))
        .salesforce(Arc::new(MockSalesforceApi::new()))
        .store(store)
        .settings(EngineSettings {
            instance_id: instance.into(),
            poll_interval: Duration::from_millis(10),
            ..EngineSettings::default()
        })
        .build()
        .unwrap()
}

fn assert_refused(e: &Error) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Port(salesync_core::Error::Conflict { .. })), "{e:?}");
    assert!(msg.contains("111-AAA-111") && msg.contains("222-BBB-222"), "{msg}");
}

#[tokio::test]
async fn another_instances_store_is_refused_by_sync_once_and_run() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store.bind_instance("111-AAA-111").await.unwrap();
    let eng = engine(store.clone(), "222-BBB-222");
    assert_refused(&eng.sync_once().await.unwrap_err());
    let run = tokio::time::timeout(Duration::from_secs(5), eng.run(CancellationToken::new()))
        .await
        .expect("run stops on a store of another instance instead of retrying");
    assert_refused(&run.unwrap_err());
    assert_eq!(store.count_people().await.unwrap(), 0);
    store.bind_instance("111-AAA-111").await.unwrap();
}
