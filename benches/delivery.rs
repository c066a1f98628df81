//! Outbound delivery throughput: sales emails recorded by the host → the outbox (SQLite) → one
//! Marketo custom activity and one Salesforce Task each, against both emulators over HTTP with
//! their limits off (so salesync itself is measured).
//!
//! Three measurements in one run:
//! - `direct`: the baseline — the same activities written straight through the connectors
//!   (`add_custom_activities` in batches of 300, `upsert_tasks` in batches of 200), no outbox;
//! - `record`: `Dispatcher::record_activity` of every item (validation + one outbox transaction);
//! - `record_batch`: `Dispatcher::record_activities` in batches of 1,000 (one transaction each);
//! - `deliver`: `Dispatcher::deliver_once` rounds until the outbox is empty (claims, writes,
//!   per-item results, acknowledgements).
//!
//! Run: `cargo bench --bench delivery`. `SALESYNC_BENCH_ACTIVITIES` sets the items per iteration
//! (default 3,000), `SALESYNC_BENCH_PEOPLE` the mirror size (default 2,000).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use salesync::core::activity::{AdminSettings, SalesActivity, SalesActivityKind};
use salesync::core::outbound::{TaskPlan, activity_task, custom_activity_types, marketo_activity};
use salesync::core::person::Person;
use salesync::core::ports::marketo::MarketoApi;
use salesync::core::ports::salesforce::SalesforceApi;
use salesync::core::ports::store::MirrorStoreExt;
use salesync::delivery::{DeliverySettings, Dispatcher};
use salesync::engine::{EngineSettings, InitialMode, SyncEngine};
use salesync_testkit::World;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A sales email on `person`, unique per `seq`.
fn email(person: &Person, seq: u64) -> SalesActivity {
    SalesActivity {
        actor_email: Some("rep@example.com".into()),
        subject: Some(format!("Following up #{seq}")),
        body: Some("Hi, following up on our call.".into()),
        sales_person_id: Some("rep-1".into()),
        ..SalesActivity::new(
            format!("bench-{seq}"),
            person.marketo_id,
            SalesActivityKind::SendSalesEmail,
            chrono::Utc::now() - chrono::Duration::minutes(5),
        )
    }
}

fn bench(c: &mut Criterion) {
    let people = env_usize("SALESYNC_BENCH_PEOPLE", 2_000);
    let items = env_usize("SALESYNC_BENCH_ACTIVITIES", 3_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_world, store, marketo, salesforce, targets) = rt.block_on(async {
        let world = World::unlimited(people, 21).await;
        let store = salesync::store::open(&format!("sqlite://{}", dir.path().join("d.db").display())).await.unwrap();
        let marketo: Arc<dyn MarketoApi> =
            Arc::new(world.marketo_builder().rate_limit(1_000_000, Duration::from_secs(20)).build().unwrap());
        let salesforce: Arc<dyn SalesforceApi> = world.salesforce_client();
        // The mirror the deliveries resolve people against.
        let engine = SyncEngine::builder()
            .marketo(marketo.clone())
            .salesforce(salesforce.clone())
            .store(store.clone())
            .settings(EngineSettings {
                instance_id: "bench".into(),
                initial_mode: InitialMode::Rest,
                ..EngineSettings::default()
            })
            .build()
            .unwrap();
        engine.sync_once().await.unwrap();
        // People with a stored Salesforce id: each email makes exactly one activity and one Task.
        let targets: Vec<_> =
            store.all_people().await.unwrap().into_iter().filter(|p| p.salesforce_who_id().is_some()).collect();
        assert!(targets.len() > people / 2, "the seeded world has Salesforce ids for most people");
        (world, store, marketo, salesforce, targets)
    });
    let dispatcher = Dispatcher::builder()
        .marketo(marketo.clone())
        .salesforce(salesforce.clone())
        .store(store.clone())
        .settings(DeliverySettings {
            worker_id: "bench".into(),
            opt_out_reconcile: false,
            reminder_poll_interval: Duration::from_secs(3600),
            ..DeliverySettings::default()
        })
        .build()
        .unwrap();
    let seq = AtomicU64::new(0);
    let next_batch = || -> Vec<SalesActivity> {
        (0..items)
            .map(|i| {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                email(&targets[i % targets.len()], n)
            })
            .collect()
    };
    // Type ids for the baseline (the same provisioning the dispatcher does once).
    let type_id = rt.block_on(async {
        let types = marketo.ensure_custom_activity_types(&custom_activity_types()).await.unwrap();
        let want = salesync::core::outbound::custom_type_api_name(SalesActivityKind::SendSalesEmail);
        types.into_iter().find(|t| t.api_name == want).unwrap().id
    });
    let type_values = rt.block_on(salesforce.task_type_values()).unwrap();
    let settings = AdminSettings::default();

    let mut g = c.benchmark_group("delivery");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(items as u64));
    g.bench_function(BenchmarkId::new("direct", items), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = next_batch();
                    let acts: Vec<_> = batch.iter().map(|a| marketo_activity(a, type_id)).collect();
                    let tasks: Vec<_> = batch
                        .iter()
                        .zip(targets.iter().cycle())
                        .filter_map(|(a, p)| match activity_task(a, p, None, &settings, &type_values) {
                            TaskPlan::Write(t) => Some(t),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(tasks.len(), items);
                    let start = Instant::now();
                    for chunk in acts.chunks(300) {
                        marketo.add_custom_activities(chunk).await.unwrap();
                    }
                    for chunk in tasks.chunks(200) {
                        salesforce.upsert_tasks(chunk).await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.bench_function(BenchmarkId::new("record", items), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = next_batch();
                    let start = Instant::now();
                    for a in batch {
                        dispatcher.record_activity(a).await.unwrap();
                    }
                    total += start.elapsed();
                    // Drain outside the measurement so the outbox does not grow across samples.
                    drain(&dispatcher, items).await;
                }
                total
            })
        })
    });
    g.bench_function(BenchmarkId::new("record_batch", items), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = next_batch();
                    let start = Instant::now();
                    for chunk in batch.chunks(1_000) {
                        dispatcher.record_activities(chunk.to_vec()).await.unwrap();
                    }
                    total += start.elapsed();
                    drain(&dispatcher, items).await;
                }
                total
            })
        })
    });
    g.bench_function(BenchmarkId::new("deliver", items), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for a in next_batch() {
                        dispatcher.record_activity(a).await.unwrap();
                    }
                    let start = Instant::now();
                    drain(&dispatcher, items).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

/// Delivers until `items` activities reached each target; panics on anything else.
async fn drain(d: &Dispatcher, items: usize) {
    let (mut to_marketo, mut to_salesforce) = (0u64, 0u64);
    while to_marketo < items as u64 || to_salesforce < items as u64 {
        let r = d.deliver_once().await.unwrap();
        assert!(r.errors.is_empty(), "delivery errors: {:?}", r.errors);
        assert_eq!(r.marketo.parked + r.salesforce.parked, 0, "nothing parks in the bench");
        if r.marketo.claimed == 0 && r.salesforce.claimed == 0 {
            panic!("outbox empty after {to_marketo} Marketo / {to_salesforce} Salesforce deliveries of {items}");
        }
        to_marketo += u64::from(r.marketo.delivered);
        to_salesforce += u64::from(r.salesforce.delivered);
    }
    assert_eq!((to_marketo, to_salesforce), (items as u64, items as u64));
}

criterion_group!(benches, bench);
criterion_main!(benches);
