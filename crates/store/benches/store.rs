//! Store throughput: people upserted per second in pages of 300 (SQLite on a temp file,
//! PostgreSQL in its own schema), outbox claim+ack items per second, and the on-disk size of a
//! large SQLite mirror.
//!
//! ```text
//! cargo bench -p salesync-store --all-features --bench store -- --sample-size 10 --measurement-time 5
//! SALESYNC_BENCH_MIRROR_PEOPLE=1000000 cargo bench -p salesync-store --all-features --bench store -- mirror_size
//! ```
//!
//! PostgreSQL comes from `SALESYNC_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use salesync_core::mirror::Decision;
use salesync_core::person::{OpportunityRef, Person, SalesforceType};
use salesync_core::ports::store::{
    Claim, Finished, MirrorPage, MirrorStore, NewOutboxItem, OutboxPayload, Outcome, Recording, Store, Target,
};
use salesync_core::sfid::SalesforceId;
use salesync_store::{PostgresStore, SqliteStore};

const PAGE: usize = 300;
const CLAIM: u32 = 100;

fn sfid(prefix: &str, n: i64) -> SalesforceId {
    SalesforceId::parse(&format!("{prefix}5g{:010}", n.unsigned_abs() % 10_000_000_000)).unwrap()
}

fn person(id: i64) -> Person {
    let now = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
    let contact = id % 3 == 0;
    Person {
        marketo_id: id,
        first_name: Some(format!("First{id}")),
        last_name: Some(format!("Last{}", id % 9973)),
        salesforce_contact_id: contact.then(|| sfid("003", id)),
        salesforce_lead_id: (!contact).then(|| sfid("00Q", id)),
        salesforce_account_id: contact.then(|| sfid("001", id / 10)),
        salesforce_opportunity: OpportunityRef::Unresolved,
        company: Some(format!("Company {}", id % 5000)),
        title: Some("Director of Engineering".into()),
        email: Some(format!("person{id}@company{}.example.com", id % 5000)),
        phone: Some(format!("+1 555 {:07}", id % 10_000_000)),
        linkedin_url: Some(format!("https://www.linkedin.com/in/person-{id}")),
        source: Some("Web Form".into()),
        salesforce_type: if contact { SalesforceType::Contact } else { SalesforceType::Lead },
        owner_id: sfid("005", id % 50),
        marketo_updated_at: Some(now),
        mirror_updated_at: now,
    }
}

fn page(next: &AtomicI64) -> MirrorPage {
    let start = next.fetch_add(PAGE as i64, Ordering::Relaxed);
    let decisions = (start..start + PAGE as i64).map(|id| Decision::Insert { person: person(id) }).collect();
    MirrorPage { decisions, checkpoint: None, at: Utc::now() }
}

fn pg_url() -> String {
    std::env::var("SALESYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

struct Backends {
    sqlite: Arc<dyn Store>,
    postgres: Arc<dyn Store>,
    schema: String,
    _dir: tempfile::TempDir,
}

async fn backends() -> Backends {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
    let schema = format!("salesync_bench_{:016x}", rand::random::<u64>());
    let postgres = PostgresStore::open_in_schema(&pg_url(), &schema).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL unreachable ({e}); start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    });
    Backends { sqlite: Arc::new(sqlite), postgres: Arc::new(postgres), schema, _dir: dir }
}

async fn drop_schema(schema: &str) {
    let pool = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&pool).await.unwrap();
}

fn upserts(c: &mut Criterion) {
    let rt = rt();
    let b = rt.block_on(backends());
    let mut group = c.benchmark_group("upsert_people_page_300");
    group.throughput(Throughput::Elements(PAGE as u64));
    for (name, store) in [("sqlite", &b.sqlite), ("postgres", &b.postgres)] {
        let next = AtomicI64::new(1);
        group.bench_function(name, |bench| {
            bench.to_async(&rt).iter_batched(
                || page(&next),
                |p| async move {
                    store.apply_page(p).await.unwrap();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    rt.block_on(drop_schema(&b.schema));
}

fn claims(c: &mut Criterion) {
    let rt = rt();
    let b = rt.block_on(backends());
    let mut group = c.benchmark_group("outbox_claim_ack_100");
    group.throughput(Throughput::Elements(u64::from(CLAIM)));
    for (name, store) in [("sqlite", &b.sqlite), ("postgres", &b.postgres)] {
        let next = AtomicI64::new(0);
        group.bench_function(name, |bench| {
            bench.to_async(&rt).iter_custom(|iters| {
                let store = Arc::clone(store);
                let start_key = next.fetch_add(iters as i64 * i64::from(CLAIM), Ordering::Relaxed);
                async move {
                    let now = Utc::now();
                    let items: Vec<NewOutboxItem> = (0..iters as i64 * i64::from(CLAIM))
                        .map(|i| NewOutboxItem {
                            key: format!("k{}", start_key + i),
                            target: Target::Marketo,
                            payload: OutboxPayload::Unsubscribe { marketo_id: i + 1 },
                            not_before: now,
                        })
                        .collect();
                    for chunk in items.chunks(1000) {
                        store.record(Recording { outbox: chunk.to_vec(), ..Default::default() }).await.unwrap();
                    }
                    let started = Instant::now();
                    for _ in 0..iters {
                        let got = store
                            .claim(Claim {
                                target: Target::Marketo,
                                limit: CLAIM,
                                worker: "bench".into(),
                                lease: Duration::from_secs(60),
                                now,
                            })
                            .await
                            .unwrap();
                        let fin = got
                            .iter()
                            .map(|i| Finished {
                                id: i.id,
                                worker: "bench".into(),
                                outcome: Outcome::Delivered { remote_id: format!("r{}", i.id) },
                            })
                            .collect();
                        store.finish(fin, now).await.unwrap();
                    }
                    started.elapsed()
                }
            })
        });
    }
    group.finish();
    rt.block_on(drop_schema(&b.schema));
}

/// Fills a SQLite mirror with `SALESYNC_BENCH_MIRROR_PEOPLE` people (default 100,000) and prints its
/// size on disk after a WAL checkpoint.
fn mirror_size(c: &mut Criterion) {
    let _ = c;
    let n: i64 = std::env::var("SALESYNC_BENCH_MIRROR_PEOPLE").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let rt = rt();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mirror.db");
        let url = format!("sqlite://{}", path.display());
        let store = SqliteStore::open(&url).await.unwrap();
        let next = AtomicI64::new(1);
        let started = Instant::now();
        let cpu_started = process_cpu_secs();
        while next.load(Ordering::Relaxed) <= n {
            store.apply_page(page(&next)).await.unwrap();
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu_secs() - cpu_started;
        let people = store.count_people().await.unwrap();
        drop(store);
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
        pool.close().await;
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let db = size(&path);
        let wal = size(&dir.path().join("mirror.db-wal"));
        println!(
            "mirror_size: {people} people in {:.1}s ({:.0} people/s; {cpu:.1} CPU-s, {:.0} people per CPU-second \
             incl. generating them); SQLite file {db} bytes (+{wal} WAL) = {:.0} bytes/person; \
             1,000,000 people ≈ {:.0} MiB",
            elapsed.as_secs_f64(),
            people as f64 / elapsed.as_secs_f64(),
            people as f64 / cpu.max(0.001),
            db as f64 / people as f64,
            db as f64 / people as f64 * 1_000_000.0 / 1_048_576.0
        );
    });
}

/// User + system CPU seconds of this process (Linux; 0 elsewhere), for figures on a busy machine.
fn process_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

criterion_group!(benches, upserts, claims);
criterion_group!(size, mirror_size);

fn main() {
    let filter_size = std::env::args().any(|a| a == "mirror_size");
    if !filter_size {
        benches();
    }
    if filter_size || std::env::var_os("SALESYNC_BENCH_MIRROR_PEOPLE").is_some() {
        size();
    }
    Criterion::default().configure_from_args().final_summary();
}
