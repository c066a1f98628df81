//! End to end against the Marketo emulator through the real connector, with faults injected:
//! every recorded activity ends up in Marketo exactly once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use salesync_core::activity::AdminSettings;
use salesync_core::activity::SalesActivityKind as K;
use salesync_core::mirror::Decision;
use salesync_core::ports::store::{InstanceBinding, MirrorPage, MirrorStore, OutboxState, OutboxStore, SettingsStore};
use salesync_delivery::{DeliverySettings, Dispatcher, SystemClock};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoFault};
use salesync_marketo::{MarketoClient, RetryConfig};
use salesync_store::MemoryStore;
use serde_json::{Map, Value, json};

const N: i64 = 240;

fn guid_attr(a: &Value) -> Option<String> {
    a.get("attributes")?
        .as_array()?
        .iter()
        .find(|x| x.get("apiName").and_then(Value::as_str) == Some("salesyncActivityId"))
        .and_then(|x| x.get("value"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_activity_reaches_marketo_exactly_once_despite_lost_responses() {
    let emu = MarketoEmulator::start(MarketoConfig {
        scan_block: 50,
        limits: salesync_emulator::marketo::MarketoLimits { calls_per_window: 10_000, ..Default::default() },
        ..MarketoConfig::default()
    })
    .await
    .unwrap();
    let mut people = Vec::new();
    for i in 0..N {
        let mut fields = Map::new();
        fields.insert("email".into(), json!(format!("p{i}@example.com")));
        fields.insert("lastName".into(), json!(format!("Person {i}")));
        let id = emu.create_lead(fields);
        people.push(contact(id));
    }
    // The in-memory store backend, its mirror seeded by applying decisions.
    let store = Arc::new(MemoryStore::new());
    store.bind_instance("e2e").await.unwrap();
    let decisions = people.iter().map(|p| Decision::Insert { person: p.clone() }).collect();
    store.apply_page(MirrorPage { decisions, checkpoint: None, at: chrono::Utc::now() }).await.unwrap();
    store
        .put_settings(AdminSettings {
            log_emails_to_salesforce: false,
            log_calls_to_salesforce: false,
            ..AdminSettings::default()
        })
        .await
        .unwrap();

    // Small batches make many write calls: 10% of them are applied but their answer is lost, 5%
    // are dropped before being applied, and 5% of all REST calls answer a transient 604.
    let writes = "/rest/v1/activities/external.json";
    emu.set_faults(FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Ratio(0.10), FaultAction::ApplyThenDrop).on_path(writes).on_method("POST"),
            FaultRule::new(Trigger::Ratio(0.05), FaultAction::DropConnection).on_path(writes).on_method("POST"),
            FaultRule::new(Trigger::Ratio(0.05), FaultAction::Error(MarketoFault::code("604"))).on_path("/rest/"),
        ],
        42,
    ));
    let client = MarketoClient::builder()
        .base_url(emu.base_url())
        .client_id(emu.client_id())
        .client_secret(emu.client_secret())
        .allow_insecure_http(true)
        .rate_limit(10_000, Duration::from_secs(20))
        .retry(RetryConfig {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        })
        .build()
        .unwrap();

    // Two dispatchers on one store, as two processes would be.
    let mut dispatchers = Vec::new();
    for w in 0..2 {
        let d = Dispatcher::builder()
            .marketo(Arc::new(client.clone()))
            .salesforce(Arc::new(salesforce_basic()))
            .store(store.clone())
            .settings(DeliverySettings {
                worker_id: format!("worker-{w}"),
                marketo_batch: 4,
                backoff_base: Duration::from_millis(10),
                backoff_max: Duration::from_millis(50),
                max_attempts: 50,
                opt_out_reconcile: false,
                clock: Arc::new(SystemClock),
                ..DeliverySettings::default()
            })
            .build()
            .unwrap();
        dispatchers.push(d);
    }
    let kinds = [K::SendSalesEmail, K::OpenSalesEmail, K::SalesCall, K::AddedToSalesCampaign];
    for (i, p) in people.iter().enumerate() {
        let mut a = activity(&format!("act-{i}"), p.marketo_id, kinds[i % kinds.len()]);
        a.occurred_at = chrono::Utc::now() - chrono::Duration::minutes(5);
        a.campaign = Some(salesync_core::activity::CampaignRef { name: Some("Q4".into()), ..Default::default() });
        dispatchers[i % 2].record_activity(a).await.unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut rounds = Vec::new();
        for d in dispatchers.clone() {
            rounds.push(tokio::spawn(async move { d.deliver_once().await }));
        }
        for r in rounds {
            r.await.unwrap().unwrap();
        }
        let c = dispatchers[0].counts().await.unwrap();
        if c.delivered as i64 == N {
            break;
        }
        assert_eq!(c.parked, 0, "parked: {:?}", dispatchers[0].parked(5).await.unwrap());
        assert!(tokio::time::Instant::now() < deadline, "not delivered in time: {c:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let added = emu.custom_activities();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for a in &added {
        *per_id.entry(guid_attr(a).unwrap()).or_default() += 1;
    }
    assert_eq!(per_id.len() as i64, N);
    let dupes: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "written more than once: {dupes:?}");
    assert_eq!(added.len() as i64, N);
    // Each delivered item carries the GUID Marketo gave its activity.
    let guids: HashMap<String, String> = added
        .iter()
        .map(|a| (guid_attr(a).unwrap(), a.get("marketoGUID").and_then(Value::as_str).unwrap().to_string()))
        .collect();
    for item in store.outbox_items(OutboxState::Delivered, 1000).await.unwrap() {
        let salesync_core::ports::store::OutboxPayload::Activity { activity } = &item.payload else { panic!() };
        assert_eq!(item.result.as_deref(), Some(guids[&activity.id].as_str()), "{}", activity.id);
    }
    let dropped = emu
        .call_log()
        .into_iter()
        .filter(|c| c.path.ends_with("external.json") && c.outcome.as_deref().is_some_and(|o| o.starts_with("dropped")))
        .count();
    assert!(dropped >= 3, "only {dropped} writes were dropped");
    emu.shutdown().await;
}
