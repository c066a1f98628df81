//! Throughput of the connector: leads fetched per second over REST from the in-process emulator,
//! and bulk export CSV parsing (people per second).
//!
//! `CARGO_TARGET_DIR=/work/target-mkto cargo bench -p salesync-marketo --bench leads`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use salesync_core::mapping::all_field_names;
use salesync_core::ports::marketo::MarketoApi;
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoLimits};
use salesync_emulator::seed;
use salesync_marketo::{MarketoClient, bulk_csv_leads, bulk_csv_leads_from_reader};

const PEOPLE: usize = 3_000;

fn rest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (emu, client, ids, fields) = rt.block_on(async {
        let emu =
            MarketoEmulator::start(MarketoConfig { limits: MarketoLimits::unlimited(), ..MarketoConfig::default() })
                .await
                .unwrap();
        let world = seed::generate(PEOPLE, 42);
        emu.seed_world(&world);
        let client = MarketoClient::builder()
            .base_url(emu.base_url())
            .client_id(emu.client_id())
            .client_secret(emu.client_secret())
            .rate_limit(1_000_000, Duration::from_secs(1))
            .build()
            .unwrap();
        let schema = client.lead_schema().await.unwrap();
        let fields: Vec<String> = all_field_names().into_iter().filter(|f| schema.has(f)).map(String::from).collect();
        let ids: Vec<i64> = world.people.iter().map(|p| p.marketo_id).collect();
        (emu, client, ids, fields)
    });
    let mut g = c.benchmark_group("rest_leads");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(PEOPLE as u64));
    for concurrency in [1usize, 4] {
        g.bench_with_input(BenchmarkId::new("leads_by_ids_300", concurrency), &concurrency, |b, &conc| {
            b.to_async(&rt).iter(|| {
                let client = client.clone();
                let chunks: Vec<Vec<i64>> = ids.chunks(300).map(<[i64]>::to_vec).collect();
                let fields = fields.clone();
                async move {
                    let n: usize = futures::stream::iter(chunks)
                        .map(|chunk| {
                            let (client, fields) = (client.clone(), fields.clone());
                            async move { client.leads_by_ids(&chunk, &fields).await.map(|r| r.len()) }
                        })
                        .buffer_unordered(conc)
                        .try_fold(0, |acc, n| async move { Ok(acc + n) })
                        .await
                        .unwrap();
                    assert_eq!(n, PEOPLE);
                }
            });
        });
    }
    g.finish();
    rt.block_on(emu.shutdown());
}

fn csv_file(rows: usize) -> Vec<u8> {
    let mut s = String::from(
        "id,firstName,lastName,email,company,title,phone,leadSource,sfdcType,sfdcLeadId,sfdcContactId,sfdcAccountId,sfdcLeadOwnerId,linkedInProfileURL,updatedAt\n",
    );
    for i in 0..rows {
        let contact = i % 2 == 0;
        s.push_str(&format!(
            "{id},Ada{i},\"Lovelace, {i}\",ada{i}@example.com,Analytical Engines {m},Engineer,+1 555 {i:07},Web,{t},{lead},{contact_id},{acct},0055g00000AbCdE,null,2026-01-16T23:32:19Z\n",
            id = 1001 + i,
            m = i % 97,
            t = if contact { "Contact" } else { "Lead" },
            lead = if contact { "null" } else { "00Q5g00000QwErT" },
            contact_id = if contact { "0035g00000XyZaB" } else { "null" },
            acct = if contact { "0015g00000AbCdE" } else { "null" },
        ));
    }
    s.into_bytes()
}

fn csv(c: &mut Criterion) {
    const ROWS: usize = 50_000;
    let file = csv_file(ROWS);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut g = c.benchmark_group("bulk_csv");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("reader", |b| {
        b.iter(|| {
            let n = bulk_csv_leads_from_reader(&file[..]).filter(|r| matches!(r, Ok(l) if l.0.is_ok())).count();
            assert_eq!(n, ROWS);
        });
    });
    g.bench_function("stream_64k_chunks", |b| {
        b.iter(|| {
            let chunks: Vec<salesync_core::Result<Vec<u8>>> = file.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            let n = rt.block_on(async {
                bulk_csv_leads(futures::stream::iter(chunks))
                    .try_fold(0usize, |acc, r| async move { Ok(acc + usize::from(r.0.is_ok())) })
                    .await
                    .unwrap()
            });
            assert_eq!(n, ROWS);
        });
    });
    g.finish();
}

use futures::StreamExt;

criterion_group!(benches, rest, csv);
criterion_main!(benches);
