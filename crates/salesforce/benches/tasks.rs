//! Throughput of composite Task upserts and of query paging against the in-process emulator.
//!
//! `CARGO_TARGET_DIR=/work/target-sf cargo bench -p salesync-salesforce --bench tasks`
//!
//! The criterion write benchmark measures each call against a fresh org (the setup is not timed),
//! which isolates the connector and the HTTP round trip from the emulator's growing state; the
//! printed summary also writes 5,000 Tasks into one org.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use salesync_core::ports::salesforce::{SalesforceApi, TaskWrite};
use salesync_core::sfid::SalesforceId;
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_salesforce::{SalesforceClient, Soql};
use serde_json::json;

fn task(ext: String, who: &SalesforceId) -> TaskWrite {
    TaskWrite {
        external_id: ext,
        who_id: Some(who.clone()),
        what_id: None,
        owner_id: None,
        subject: "[Sales Insight Actions] - Email".into(),
        status: "Completed".into(),
        priority: "Normal".into(),
        activity_date: NaiveDate::from_ymd_opt(2025, 6, 3),
        description: Some("Hello".into()),
        task_subtype: Some("Email".into()),
        task_type: Some("Email".into()),
        call_duration_secs: None,
        call_disposition: None,
        custom_fields: Vec::new(),
    }
}

fn client_for(emu: &SalesforceEmulator, batch: u32) -> SalesforceClient {
    SalesforceClient::builder()
        .login_url(emu.base_url())
        .client_id(emu.client_id())
        .client_secret(emu.client_secret())
        .query_batch_size(batch)
        .build()
        .unwrap()
}

/// A fresh org with one lead, a client with a session, and 200 new Tasks to write.
async fn fresh() -> (SalesforceEmulator, SalesforceClient, Vec<TaskWrite>) {
    let emu = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
    let lead = emu
        .insert(
            "Lead",
            serde_json::from_value(json!({"LastName": "Bench", "Company": "B", "Status": "Open - Not Contacted"}))
                .unwrap(),
        )
        .unwrap();
    let who = SalesforceId::parse(&lead).unwrap();
    let client = client_for(&emu, 2000);
    client.task_type_values().await.unwrap();
    let tasks = (0..200).map(|i| task(format!("bench-{i}"), &who)).collect();
    (emu, client, tasks)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    // Summary figures.
    rt.block_on(async {
        let (mut written, mut calls, mut busy) = (0usize, 0u64, Duration::ZERO);
        for _ in 0..25 {
            let (emu, client, tasks) = fresh().await;
            let before = client.requests_sent();
            let started = Instant::now();
            written += client.upsert_tasks(&tasks).await.unwrap().len();
            busy += started.elapsed();
            calls += client.requests_sent() - before;
            emu.shutdown().await;
        }
        println!(
            "upsert, fresh org per call: {written} Tasks in {calls} calls ({:.0} per call), {:.0} Tasks/s",
            written as f64 / calls as f64,
            written as f64 / busy.as_secs_f64()
        );
        // Cumulative: 25 calls into one org (5,000 Tasks).
        let (emu, client, tasks) = fresh().await;
        let who = tasks[0].who_id.clone().unwrap();
        let before = client.requests_sent();
        let started = Instant::now();
        let mut written = 0;
        for round in 0..25 {
            let batch: Vec<TaskWrite> = (0..200).map(|i| task(format!("cum-{round}-{i}"), &who)).collect();
            written += client.upsert_tasks(&batch).await.unwrap().len();
        }
        let secs = started.elapsed().as_secs_f64();
        let calls = client.requests_sent() - before;
        println!(
            "upsert into one org: {written} Tasks in {calls} calls ({:.0} per call), {:.0} Tasks/s",
            written as f64 / calls as f64,
            written as f64 / secs
        );
        emu.shutdown().await;

        let emu = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
        emu.seed_world(&salesync_emulator::seed::generate(5000, 3));
        let soql = Soql::new().select(&["Id", "Email", "OwnerId", "SystemModstamp"]).from("Lead");
        for batch in [200u32, 2000] {
            let q = client_for(&emu, batch);
            let started = Instant::now();
            let (mut n, mut pages) = (0, 0);
            let mut stream = q.query_stream(&soql);
            while let Some(p) = stream.next().await {
                n += p.unwrap().items.len();
                pages += 1;
            }
            let secs = started.elapsed().as_secs_f64();
            println!("query (batchSize {batch}): {n} records in {pages} pages, {:.0} records/s", n as f64 / secs);
        }
        emu.shutdown().await;
    });

    let mut g = c.benchmark_group("salesforce");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    g.throughput(Throughput::Elements(200));
    g.bench_function("upsert_200_new_tasks_one_call", |b| {
        b.to_async(&rt).iter_custom(|iters| async move {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (emu, client, tasks) = fresh().await;
                let started = Instant::now();
                let out = client.upsert_tasks(&tasks).await.unwrap();
                total += started.elapsed();
                assert_eq!(out.len(), 200);
                emu.shutdown().await;
            }
            total
        })
    });
    let (emu, client) = rt.block_on(async {
        let emu = SalesforceEmulator::start(SalesforceConfig::default()).await.unwrap();
        emu.seed_world(&salesync_emulator::seed::generate(5000, 3));
        let client = client_for(&emu, 2000);
        (emu, client)
    });
    let leads = emu.records("Lead").len() as u64;
    g.throughput(Throughput::Elements(leads));
    g.bench_function("query_all_leads_batch_2000", |b| {
        b.to_async(&rt).iter(|| {
            let client = client.clone();
            async move {
                let soql = Soql::new().select(&["Id", "Email", "OwnerId", "SystemModstamp"]).from("Lead");
                client.query_all(&soql).await.unwrap().len()
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
