//! Scale check, ignored by default (minutes in debug builds): seeds both worlds with
//! `SEED_PEOPLE` people (default 1,000,000), prints how long each step takes, then times 200-id
//! lookups, a converted-lead page walk and a Bulk API 2.0 job over real HTTP, asserting through
//! the query counters that lookups examine only their candidates.
//!
//! `cargo test --release -p salesync-emulator --all-features --test salesforce_scale -- --ignored --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

mod salesforce_common;

use std::time::{Duration, Instant};

use reqwest::Method;
use salesforce_common::{H, in_list};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator};
use salesync_emulator::seed;
use serde_json::json;

fn people() -> usize {
    std::env::var("SEED_PEOPLE").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
#[ignore = "scale timing; run with --release -- --ignored --nocapture"]
async fn seed_and_look_up_at_scale() {
    let n = people();
    let t = Instant::now();
    let world = seed::generate(n, 42);
    println!("seed::generate({n}): {:?}", t.elapsed());
    let mkto = MarketoEmulator::start(MarketoConfig::default()).await.unwrap();
    let t = Instant::now();
    mkto.seed_world(&world);
    println!("MarketoEmulator::seed_world({n}): {:?}", t.elapsed());
    let h = H::default().await;
    let t = Instant::now();
    h.emu.seed_world(&world);
    println!("SalesforceEmulator::seed_world({n}): {:?}", t.elapsed());
    let total: usize = ["Lead", "Contact", "Account", "Opportunity", "OpportunityContactRole"]
        .iter()
        .map(|ty| h.emu.records(ty).len())
        .sum();
    println!("Salesforce records: {total}");

    // Convert every 50th lead so `IsConverted = true` has something to find.
    let leads: Vec<String> = world.people.iter().filter_map(|p| p.sf_lead_id.clone()).collect();
    let contacts: Vec<String> = world.people.iter().filter_map(|p| p.sf_contact_id.clone()).collect();
    let t = Instant::now();
    let mut converted = 0;
    for l in leads.iter().step_by(50) {
        h.emu.convert_lead(l, None, None, true).unwrap();
        converted += 1;
    }
    println!("convert_lead x{converted}: {:?}", t.elapsed());

    let lookups = [
        (
            "OpportunityContactRole WHERE ContactId IN (200 ids)",
            contacts.iter().step_by(contacts.len() / 200).take(200).cloned().collect::<Vec<_>>(),
            "SELECT Id, ContactId, OpportunityId, IsPrimary FROM OpportunityContactRole WHERE ContactId IN {} ORDER BY Id",
        ),
        (
            "Lead WHERE Id IN (200 ids)",
            leads.iter().step_by(leads.len() / 200).take(200).cloned().collect(),
            "SELECT Id, IsConverted, ConvertedContactId, ConvertedAccountId, ConvertedOpportunityId FROM Lead WHERE Id IN {} ORDER BY Id",
        ),
    ];
    for (label, ids, template) in lookups {
        let q = template.replace("{}", &in_list(&ids));
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..21 {
            let before = h.emu.query_stats();
            let t = Instant::now();
            let (s, b) = h.query_page(&q, false, None).await;
            times.push(t.elapsed());
            let after = h.emu.query_stats();
            assert_eq!(s, 200);
            rows = b["totalSize"].as_u64().unwrap();
            assert_eq!(after.indexed - before.indexed, 1);
            assert!(after.rows_examined - before.rows_examined <= 400, "{label}: examined too many rows");
        }
        println!(
            "HTTP {label}: {rows} rows, median {:?}, max {:?}",
            median(times.clone()),
            times.iter().max().unwrap()
        );
    }

    // Walk every converted lead through REST pages of 2,000.
    let t = Instant::now();
    let (_, recs, pages) = h
        .query_all_pages(
            "SELECT Id, ConvertedContactId FROM Lead WHERE IsConverted = true ORDER BY Id",
            false,
            Some(2_000),
        )
        .await;
    println!("HTTP converted leads: {} rows in {pages} pages, {:?}", recs.len(), t.elapsed());
    assert_eq!(recs.len(), converted);

    // Every contact role through one Bulk API 2.0 query job.
    let t = Instant::now();
    let (s, job) = h
        .call(
            Method::POST,
            "/jobs/query",
            Some(json!({"operation": "query", "query": "SELECT Id, ContactId, OpportunityId, IsPrimary FROM OpportunityContactRole"})),
        )
        .await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    while h.get(&format!("/jobs/query/{id}")).await.1["state"] != "JobComplete" {}
    let mut locator = String::new();
    let (mut rows, mut calls) = (0usize, 0);
    loop {
        let r = h.raw(Method::GET, &format!("/jobs/query/{id}/results?locator={locator}"), None, &[]).await;
        calls += 1;
        rows += r.header("sforce-numberofrecords").unwrap().parse::<usize>().unwrap();
        match r.header("sforce-locator").unwrap() {
            "null" => break,
            l => locator = l.to_string(),
        }
    }
    println!("Bulk API 2.0 OpportunityContactRole: {rows} rows, {calls} results requests, {:?}", t.elapsed());
    mkto.shutdown().await;
}
