#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A store is per Marketo instance: a dispatcher told its instance refuses a store bound to
//! another one before recording or delivering anything.

use std::sync::Arc;

use chrono::Utc;
use salesync_core::Error;
use salesync_core::activity::{SalesActivity, SalesActivityKind};
use salesync_core::ports::marketo::MockMarketoApi;
use salesync_core::ports::salesforce::MockSalesforceApi;
use salesync_core::ports::store::Store;
use salesync_delivery::{Dispatcher, NewReminder};
use salesync_store::MemoryStore;
use tokio_util::sync::CancellationToken;

/// A dispatcher whose connectors panic on any call (none may happen here).
fn dispatcher(store: Arc<dyn Store>, instance: Option<&str>) -> Dispatcher {
    let mut b = Dispatcher::builder()
        .marketo(Arc::new(MockMarketoApi::new()))
        .salesforce(Arc::new(MockSalesforceApi::new()))
        .store(store);
    if let Some(i) = instance {
        b = b.instance_id(i);
    }
    b.build().unwrap()
}

fn activity() -> SalesActivity {
    SalesActivity {
        actor_email: Some("rep@example.com".into()),
        subject: Some("Hi".into()),
        ..SalesActivity::new("a1", 7, SalesActivityKind::SendSalesEmail, Utc::now())
    }
}

fn assert_conflict_naming_both(e: &Error) {
    let msg = e.to_string();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    assert!(msg.contains("111-AAA-111") && msg.contains("222-BBB-222"), "{msg}");
}

#[tokio::test]
async fn a_store_bound_to_another_instance_is_refused_before_any_work() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store.bind_instance("111-AAA-111").await.unwrap();
    let d = dispatcher(store.clone(), Some("222-BBB-222"));

    assert_conflict_naming_both(&d.deliver_once().await.unwrap_err());
    assert_conflict_naming_both(&d.record_activity(activity()).await.unwrap_err());
    assert_conflict_naming_both(&d.record_unsubscribe(7).await.unwrap_err());
    let reminder = NewReminder {
        id: None,
        marketo_id: 7,
        subject: "Call back".into(),
        priority: salesync_core::activity::ReminderPriority::Normal,
        due_date: None,
        details: None,
    };
    assert_conflict_naming_both(&d.create_reminder(reminder).await.unwrap_err());
    assert_conflict_naming_both(&d.complete_reminder("r1").await.unwrap_err());
    assert_conflict_naming_both(&d.retry_parked(&[1]).await.unwrap_err());
    assert_conflict_naming_both(&d.check_can_email(7).await.unwrap_err());
    // `run` stops at once instead of polling a store that is not its own.
    tokio::time::timeout(std::time::Duration::from_secs(5), d.run(CancellationToken::new()))
        .await
        .expect("run returns when the store belongs to another instance");

    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(counts.pending + counts.in_flight + counts.delivered + counts.parked + counts.skipped, 0);
    // The binding itself is untouched.
    store.bind_instance("111-AAA-111").await.unwrap();
}

#[tokio::test]
async fn the_own_instance_binds_and_recording_goes_on() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let d = dispatcher(store.clone(), Some("111-AAA-111"));
    // Past the binding: the person is simply not in the (empty) mirror.
    let e = d.record_unsubscribe(7).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    // The dispatcher bound the fresh store to its instance.
    assert!(matches!(store.bind_instance("222-BBB-222").await, Err(Error::Conflict { .. })));
    // Without an instance the binding is not checked.
    let unchecked = dispatcher(store, None);
    assert!(matches!(unchecked.record_unsubscribe(7).await, Err(Error::NotFound { .. })));
    assert!(
        Dispatcher::builder()
            .marketo(Arc::new(MockMarketoApi::new()))
            .salesforce(Arc::new(MockSalesforceApi::new()))
            .store(Arc::new(MemoryStore::new()))
            .instance_id(" ")
            .build()
            .is_err()
    );
}
