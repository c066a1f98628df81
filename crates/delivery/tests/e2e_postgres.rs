//! Several dispatchers, each with its own connection pool as separate processes would have, on one
//! PostgreSQL store, delivering to the Marketo emulator through the real connector with faults
//! injected, after a worker that crashed between sending and recording the outcome: every activity
//! reaches Marketo exactly once.
//!
//! Needs a server: `SALESYNC_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! Runs in a fresh schema, dropped at the end. When the server is unreachable the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use salesync_core::activity::{AdminSettings, SalesActivityKind as K};
use salesync_core::mirror::Decision;
use salesync_core::outbound::{custom_activity_types, custom_type_api_name, marketo_activity};
use salesync_core::ports::marketo::{MarketoApi, RecordOutcome};
use salesync_core::ports::store::{
    InstanceBinding, MirrorPage, MirrorStore, OutboxPayload, OutboxState, OutboxStore, SettingsStore, Target,
};
use salesync_delivery::{DeliverySettings, Dispatcher, SystemClock};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoFault, MarketoLimits};
use salesync_marketo::{MarketoClient, RetryConfig};
use salesync_store::PostgresStore;
use serde_json::{Map, Value, json};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const N: usize = 120;
const CRASHED_SENT: usize = 5;

fn url() -> String {
    std::env::var("SALESYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

async fn open(schema: &str) -> PostgresStore {
    match PostgresStore::open_in_schema(&url(), schema).await {
        Ok(s) => s,
        Err(e) => panic!(
            "cannot open the test PostgreSQL database ({e}). Start the server with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or set \
             SALESYNC_TEST_POSTGRES_URL (default {DEFAULT_URL})."
        ),
    }
}

fn activity_id_of(a: &Value) -> String {
    a["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["apiName"] == "salesyncActivityId")
        .and_then(|x| x["value"].as_str())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_processes_on_one_postgres_store_deliver_exactly_once_after_a_crash() {
    let schema = format!("salesync_delivery_test_{}", uuid::Uuid::new_v4().simple());
    let outcome = AssertUnwindSafe(scenario(schema.clone())).catch_unwind().await;
    if let Ok(pool) = sqlx::PgPool::connect(&url()).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool).await;
        pool.close().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(schema: String) {
    let emu = MarketoEmulator::start(MarketoConfig {
        scan_block: 40,
        limits: MarketoLimits { calls_per_window: 10_000, ..Default::default() },
        ..MarketoConfig::default()
    })
    .await
    .unwrap();
    let mut people = Vec::new();
    for i in 0..N {
        let mut fields = Map::new();
        fields.insert("email".into(), json!(format!("p{i}@example.com")));
        let id = emu.create_lead(fields);
        people.push(contact(id));
    }
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

    // Three "processes", each with its own pool on the same schema.
    let mut stores: Vec<Arc<PostgresStore>> = Vec::new();
    for _ in 0..3 {
        stores.push(Arc::new(open(&schema).await));
    }
    let s0 = stores[0].clone();
    s0.bind_instance("e2e").await.unwrap();
    let decisions = people.iter().map(|p| Decision::Insert { person: p.clone() }).collect();
    s0.apply_page(MirrorPage { decisions, checkpoint: None, at: chrono::Utc::now() }).await.unwrap();
    s0.put_settings(AdminSettings {
        log_emails_to_salesforce: false,
        log_calls_to_salesforce: false,
        ..AdminSettings::default()
    })
    .await
    .unwrap();

    let dispatchers: Vec<Dispatcher> = stores
        .iter()
        .enumerate()
        .map(|(w, store)| {
            Dispatcher::builder()
                .marketo(Arc::new(client.clone()))
                .salesforce(Arc::new(salesforce_basic()))
                .store(store.clone())
                .settings(DeliverySettings {
                    worker_id: format!("process-{w}"),
                    marketo_batch: 6,
                    lease: Duration::from_secs(2),
                    backoff_base: Duration::from_millis(10),
                    backoff_max: Duration::from_millis(50),
                    max_attempts: 50,
                    opt_out_reconcile: false,
                    clock: Arc::new(SystemClock),
                    ..DeliverySettings::default()
                })
                .build()
                .unwrap()
        })
        .collect();
    let kinds = [K::SendSalesEmail, K::ClickSalesEmail, K::SalesCall, K::SalesEmailBounced];
    for (i, p) in people.iter().enumerate() {
        let mut a = activity(&format!("act-{i}"), p.marketo_id, kinds[i % kinds.len()]);
        a.occurred_at = chrono::Utc::now() - chrono::Duration::minutes(1);
        dispatchers[i % 3].record_activity(a).await.unwrap();
    }

    // A worker claims ten items, writes five of them to Marketo, and dies before finishing.
    let claimed = s0.claim(Target::Marketo, 10, "crashed", Duration::from_secs(2), chrono::Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 10);
    let types: HashMap<String, i64> = client
        .ensure_custom_activity_types(&custom_activity_types())
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.api_name, t.id))
        .collect();
    let crash_batch: Vec<_> = claimed[..CRASHED_SENT]
        .iter()
        .map(|item| {
            let OutboxPayload::Activity { activity } = &item.payload else { panic!() };
            marketo_activity(activity, types[&custom_type_api_name(activity.kind)])
        })
        .collect();
    let crash_outcomes = client.add_custom_activities(&crash_batch).await.unwrap();
    assert!(crash_outcomes.iter().all(|o| matches!(o, RecordOutcome::Written { .. })));

    let writes = "/rest/v1/activities/external.json";
    emu.set_faults(FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Ratio(0.10), FaultAction::ApplyThenDrop).on_path(writes).on_method("POST"),
            FaultRule::new(Trigger::Ratio(0.05), FaultAction::DropConnection).on_path(writes).on_method("POST"),
            FaultRule::new(Trigger::Ratio(0.05), FaultAction::Error(MarketoFault::code("604"))).on_path("/rest/"),
        ],
        11,
    ));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let rounds: Vec<_> =
            dispatchers.iter().cloned().map(|d| tokio::spawn(async move { d.deliver_once().await })).collect();
        for r in rounds {
            r.await.unwrap().unwrap();
        }
        let c = s0.outbox_counts().await.unwrap();
        if c.delivered as usize == N {
            break;
        }
        assert_eq!(c.parked, 0, "parked: {:?}", s0.outbox_items(OutboxState::Parked, 5).await.unwrap());
        assert!(tokio::time::Instant::now() < deadline, "not delivered in time: {c:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let added = emu.custom_activities();
    let mut per_id: HashMap<String, Vec<String>> = HashMap::new();
    for a in &added {
        per_id.entry(activity_id_of(a)).or_default().push(a["marketoGUID"].as_str().unwrap().to_string());
    }
    let dupes: Vec<_> = per_id.iter().filter(|(_, g)| g.len() > 1).collect();
    assert!(dupes.is_empty(), "written more than once: {dupes:?}");
    assert_eq!(per_id.len(), N);
    assert_eq!(added.len(), N);
    // The crashed worker's writes were found, not repeated: their items carry those GUIDs.
    for (item, outcome) in claimed.iter().zip(&crash_outcomes) {
        let RecordOutcome::Written { id } = outcome else { panic!() };
        let now = s0.outbox_item(item.id).await.unwrap().unwrap();
        assert_eq!(now.result.as_deref(), Some(id.as_str()));
        assert!(now.attempts >= 2);
    }
    for item in s0.outbox_items(OutboxState::Delivered, 1000).await.unwrap() {
        let OutboxPayload::Activity { activity } = &item.payload else { panic!() };
        assert_eq!(item.result.as_deref(), Some(per_id[&activity.id][0].as_str()));
    }
    for s in &stores {
        s.pool().close().await;
    }
    emu.shutdown().await;
}
