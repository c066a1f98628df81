//! End-to-end initial sync: Marketo and Salesforce emulators (limits off, so salesync itself is
//! measured) → connectors → engine → SQLite, via the REST sweep and via bulk extract.
//!
//! Run: `cargo bench --bench initial_sync` (people per second = elements per second).
//! `SALESYNC_BENCH_PEOPLE` sets the population (default 10,000).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use salesync::engine::{EngineSettings, InitialMode, SyncEngine};
use salesync_testkit::World;

fn bench(c: &mut Criterion) {
    let people: usize = std::env::var("SALESYNC_BENCH_PEOPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let world = rt.block_on(World::unlimited(people, 9));
    let qualified = world.seed.people.iter().filter(|p| p.has_owner()).count();
    let mut g = c.benchmark_group("initial_sync");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(qualified as u64));
    for (name, mode) in [("rest", InitialMode::Rest), ("bulk", InitialMode::Bulk)] {
        g.bench_function(BenchmarkId::new(name, people), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = tempfile::tempdir().unwrap();
                        let store = salesync::store::open(&format!("sqlite://{}", dir.path().join("m.db").display()))
                            .await
                            .unwrap();
                        let engine = SyncEngine::builder()
                            .marketo(world.marketo_client())
                            .salesforce(world.salesforce_client())
                            .store(store.clone())
                            .settings(EngineSettings {
                                instance_id: "bench".into(),
                                initial_mode: mode,
                                export_poll: Duration::from_millis(5),
                                ..EngineSettings::default()
                            })
                            .build()
                            .unwrap();
                        let start = std::time::Instant::now();
                        let report = engine.sync_once().await.unwrap();
                        total += start.elapsed();
                        assert_eq!(report.inserted as usize, qualified);
                    }
                    total
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
