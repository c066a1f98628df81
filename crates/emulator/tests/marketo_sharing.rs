//! Marketo emulator over real HTTP as a shared, busy, slow instance: co-tenant load on the rate
//! window and in-flight limit, random busy 606/615, who caused a 606, latency and per-row bulk
//! processing time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod marketo_common;

use std::time::{Duration, Instant};

use chrono::Duration as ChronoDuration;
use marketo_common::*;
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{
    BusyModel, CoTenant, MarketoConfig, MarketoFault, MarketoLimits, REALISTIC_BULK_PROCESSING_PER_1000_ROWS_MS,
    Refusal,
};
use serde_json::{Value, json};

const DESCRIBE: &str = "/rest/v1/leads/describe.json";

/// Fires `n` sequential calls; returns how many succeeded and the error codes of the others.
async fn fire(h: &Harness, n: usize) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut errors = Vec::new();
    for _ in 0..n {
        let v = h.get(DESCRIBE).await;
        match error_code(&v) {
            None => ok += 1,
            Some(c) => errors.push(c.to_string()),
        }
    }
    (ok, errors)
}

fn refusals(h: &Harness) -> Vec<Refusal> {
    h.emu.call_log().iter().filter_map(|c| c.refusal).collect()
}

#[tokio::test]
async fn co_tenant_of_50_leaves_the_client_50_calls_per_window() {
    let co_tenant = CoTenant { calls_per_window: 50, in_flight: 0 };
    let h = Harness::start(MarketoConfig { co_tenant, ..config() }).await;
    let (ok, errors) = fire(&h, 60).await;
    assert_eq!(ok, 50, "{errors:?}");
    assert_eq!(errors, vec!["606".to_string(); 10]);
    let v = h.get(DESCRIBE).await;
    assert_eq!(v["errors"][0]["message"], "Max rate limit '100' exceeded with in '20' secs");

    let r = h.emu.limit_rejections();
    assert_eq!((r.rate_own, r.rate_shared, r.rate_injected, r.rate), (0, 11, 0, 11));
    assert_eq!(h.emu.max_calls_in_any_window(), 50, "only our calls are in the window statistic");
    assert_eq!(h.emu.max_client_calls_in_any_window(h.emu.client_id()), 50);
    assert_eq!(h.emu.max_client_calls_in_any_window("someone-else"), 0);
    assert_eq!(h.emu.daily_calls(), 50, "the co-tenant is not in our daily quota, refused calls neither");
    let log = h.emu.call_log();
    assert!(log.iter().filter(|c| c.refusal == Some(Refusal::RateShared)).all(|c| !c.counted));
    assert_eq!(log.iter().filter(|c| c.refusal == Some(Refusal::RateShared)).count(), 11);

    // The window rolls: another 50 get through.
    h.emu.clock().advance(ChronoDuration::seconds(20));
    let (ok, _) = fire(&h, 55).await;
    assert_eq!(ok, 50);
    assert_eq!(h.emu.max_calls_in_any_window(), 50);
}

#[tokio::test]
async fn set_co_tenant_at_run_time_can_take_the_whole_window() {
    let h = Harness::start(config()).await;
    assert_eq!(h.emu.co_tenant(), CoTenant::default());
    let (ok, _) = fire(&h, 30).await;
    assert_eq!(ok, 30);

    // The other integrations suddenly take the whole window.
    h.emu.set_co_tenant(100);
    assert_eq!(h.emu.co_tenant().calls_per_window, 100);
    let (ok, errors) = fire(&h, 5).await;
    assert_eq!((ok, errors.len()), (0, 5));
    // 30 of ours + 70 of theirs: still full.
    h.emu.set_co_tenant(70);
    assert_eq!(error_code(&h.get(DESCRIBE).await), Some("606"));
    // 30 + 60: ten more of ours fit.
    h.emu.set_co_tenant(60);
    let (ok, _) = fire(&h, 15).await;
    assert_eq!(ok, 10);
    let r = h.emu.limit_rejections();
    assert_eq!((r.rate_own, r.rate_shared), (0, 11));

    // Gone again: the window is ours up to 100.
    h.emu.set_co_tenant(0);
    let (ok, _) = fire(&h, 65).await;
    assert_eq!(ok, 60);
    assert_eq!(h.emu.limit_rejections().rate_own, 5, "our own 100 calls filled the window");
    assert_eq!(h.emu.max_calls_in_any_window(), 100);
}

#[tokio::test]
async fn stats_tell_own_shared_and_injected_606_apart() {
    let limits = MarketoLimits { calls_per_window: 5, ..MarketoLimits::default() };
    let h = Harness::start(MarketoConfig { limits, ..config() }).await;

    // Our own calls overflow the window: the client's fault.
    let (ok, _) = fire(&h, 6).await;
    assert_eq!(ok, 5);
    assert_eq!(refusals(&h), vec![Refusal::RateOwn]);

    // With a co-tenant of 2 in a fresh window: 3 of ours, then the co-tenant's fault.
    h.emu.clock().advance(ChronoDuration::seconds(20));
    h.emu.set_co_tenant(2);
    let (ok, _) = fire(&h, 4).await;
    assert_eq!(ok, 3);
    assert_eq!(refusals(&h), vec![Refusal::RateOwn, Refusal::RateShared]);

    // Injected: a random busy 606 (not counted) and a fault-plan 606 (counted, as before).
    h.emu.clock().advance(ChronoDuration::seconds(20));
    h.emu.set_co_tenant(0);
    h.emu.set_busy(BusyModel { rate_606_fraction: 1.0, ..BusyModel::default() });
    assert_eq!(h.emu.busy().rate_606_fraction, 1.0);
    let v = h.get(DESCRIBE).await;
    assert_eq!(error_code(&v), Some("606"));
    assert_eq!(v["errors"][0]["message"], "Max rate limit '5' exceeded with in '20' secs");
    h.emu.set_busy(BusyModel::default());
    h.emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::Error(MarketoFault::code("606")))],
        1,
    ));
    assert_eq!(error_code(&h.get(DESCRIBE).await), Some("606"));
    assert_ok(&h.get(DESCRIBE).await);

    let log = h.emu.call_log();
    let injected: Vec<bool> =
        log.iter().filter(|c| c.refusal == Some(Refusal::RateInjected)).map(|c| c.counted).collect();
    assert_eq!(injected, vec![false, true]);
    let r = h.emu.limit_rejections();
    assert_eq!((r.rate_own, r.rate_shared, r.rate_injected), (1, 1, 2));
    assert_eq!(r.rate, 2, "`rate` counts window-full 606s only");
    assert_eq!(r.concurrency + r.concurrency_injected + r.quota, 0);
    assert!(log.iter().filter_map(|c| c.refusal).all(|r| r.code() == "606"));
}

#[tokio::test]
async fn busy_fractions_are_seeded_and_within_tolerance() {
    let busy = BusyModel { rate_606_fraction: 0.2, rate_615_fraction: 0.1, seed: 42 };
    // The busy model is a fault model: it applies with the limits off too.
    let run = || async {
        let h = Harness::start(MarketoConfig { limits: MarketoLimits::unlimited(), busy, ..config() }).await;
        let (ok, errors) = fire(&h, 600).await;
        (h, ok, errors)
    };
    let (h, ok, errors) = run().await;
    let n615 = errors.iter().filter(|c| *c == "615").count();
    let n606 = errors.iter().filter(|c| *c == "606").count();
    assert_eq!(ok + n615 + n606, 600, "{errors:?}");
    // Expected 60 × 615 and 0.9 × 0.2 × 600 = 108 × 606.
    assert!((35..=85).contains(&n615), "{n615} × 615 of 600 at 0.1");
    assert!((75..=145).contains(&n606), "{n606} × 606 of 600 at 0.2 of the rest");
    let r = h.emu.limit_rejections();
    assert_eq!((r.rate_injected, r.concurrency_injected), (n606 as u64, n615 as u64));
    assert_eq!((r.rate, r.concurrency, r.rate_own, r.rate_shared), (0, 0, 0, 0));
    assert_eq!(h.emu.daily_calls(), ok as u64, "busy answers are not counted");

    // Same seed, same answers.
    let (_h2, ok2, errors2) = run().await;
    assert_eq!((ok2, errors2), (ok, errors));
}

#[tokio::test]
async fn busy_answers_do_no_work_and_are_not_counted() {
    let busy = BusyModel { rate_606_fraction: 0.3, rate_615_fraction: 0.2, seed: 7 };
    let h = Harness::start(MarketoConfig { busy, ..config() }).await;
    let mut ok = 0u64;
    for i in 0..150 {
        let v = h.post("/rest/v1/leads.json", json!({"input": [{"email": format!("p{i}@example.com")}]})).await;
        match error_code(&v) {
            None => ok += 1,
            Some(c) => assert!(c == "606" || c == "615", "{v}"),
        }
    }
    assert!(ok > 40 && ok < 100, "{ok} of 150 got through");
    assert_eq!(h.emu.leads().len() as u64, ok, "refused writes were not applied");
    assert_eq!(h.emu.daily_calls(), ok);
    assert_eq!(u64::from(h.emu.max_calls_in_any_window()), ok, "refused calls are not in the window");
    let log = h.emu.call_log();
    assert!(log.iter().filter(|c| c.refusal.is_some()).all(|c| !c.counted));
    let usage = h.get("/rest/v1/stats/usage.json").await;
    assert_eq!(usage["result"][0]["total"], ok + 1);
    let r = h.emu.limit_rejections();
    assert_eq!(r.rate_injected + r.concurrency_injected, 150 - ok);
    assert_eq!(r.rate_own + r.rate_shared + r.concurrency_own + r.concurrency_shared, 0);

    // Switched off at run time.
    h.emu.set_busy(BusyModel::default());
    assert_eq!(fire(&h, 10).await.0, 10);
}

#[tokio::test]
async fn co_tenant_in_flight_share_gives_615() {
    let cfg = MarketoConfig {
        co_tenant: CoTenant { calls_per_window: 0, in_flight: 8 },
        latency: Some(Duration::from_millis(400)),
        ..config()
    };
    let h = Harness::start(cfg).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let http = h.http.clone();
        let url = h.url(DESCRIBE);
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move {
            let v = json_of(http.get(url).bearer_auth(token)).await;
            error_code(&v).map(str::to_string)
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| c.as_deref() == Some("615")).count(), 2, "{codes:?}");
    let r = h.emu.limit_rejections();
    assert_eq!((r.concurrency_shared, r.concurrency_own, r.concurrency), (2, 0, 2));
    assert!(refusals(&h).iter().all(|r| *r == Refusal::ConcurrencyShared));

    h.emu.set_co_tenant_in_flight(0);
    assert_eq!(h.emu.co_tenant().in_flight, 0);
    assert_ok(&h.get(DESCRIBE).await);
}

#[tokio::test]
async fn latency_is_spent_concurrently() {
    let latency = Duration::from_millis(400);
    let h = Harness::start(MarketoConfig { latency: Some(latency), ..config() }).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let http = h.http.clone();
        let url = h.url(DESCRIBE);
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move { json_of(http.get(url).bearer_auth(token)).await }));
    }
    for t in tasks {
        assert_ok(&t.await.unwrap());
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= latency, "{elapsed:?}");
    assert!(elapsed < latency * 5, "8 calls of {latency:?} took {elapsed:?}: latency is not spent concurrently");
    assert!(h.emu.max_concurrent_seen() >= 2);
}

async fn export(h: &Harness, body: Value) -> String {
    let v = h.post("/bulk/v1/leads/export/create.json", body).await;
    assert_ok(&v);
    let id = v["result"][0]["exportId"].as_str().unwrap().to_string();
    assert_ok(&h.post_empty(&format!("/bulk/v1/leads/export/{id}/enqueue.json")).await);
    id
}

async fn status(h: &Harness, id: &str) -> Value {
    h.get(&format!("/bulk/v1/leads/export/{id}/status.json")).await["result"][0].clone()
}

#[tokio::test]
async fn bulk_processing_time_grows_with_rows() {
    let cfg = MarketoConfig {
        limits: MarketoLimits::unlimited(),
        bulk_processing_time: ChronoDuration::minutes(1),
        bulk_processing_per_1000_rows: ChronoDuration::minutes(10),
        ..config()
    };
    let h = Harness::start(cfg).await;
    for i in 0..2500 {
        h.emu.create_lead(obj(json!({"email": format!("p{i}@example.com")})));
    }
    h.emu.clock().advance(ChronoDuration::seconds(1));
    let tiny = h.emu.create_lead(obj(json!({"email": "late@example.com"})));
    let range = |start: &str| json!({"startAt": start, "endAt": "2026-06-16T00:00:00Z"});
    // 2,501 rows: 1 min + 25.01 min. 1 row: 1 min + 0.6 s.
    let big =
        export(&h, json!({"fields": ["id", "email"], "filter": {"createdAt": range("2026-06-15T00:00:00Z")}})).await;
    let small = export(&h, json!({"fields": ["id"], "filter": {"createdAt": range("2026-06-15T15:00:01Z")}})).await;
    assert_eq!(status(&h, &big).await["status"], "Processing");
    assert_eq!(status(&h, &small).await["status"], "Processing");

    h.emu.clock().advance(ChronoDuration::seconds(61));
    let s = status(&h, &small).await;
    assert_eq!((s["status"].as_str(), s["numberOfRecords"].as_u64()), (Some("Completed"), Some(1)));
    let text = h.get_text(&format!("/bulk/v1/leads/export/{small}/file.json")).await.2;
    assert_eq!(text, format!("id\n{tiny}\n"));
    assert_eq!(status(&h, &big).await["status"], "Processing");

    // 26 min 0 s after the start: 0.6 s short.
    h.emu.clock().advance(ChronoDuration::seconds(24 * 60 + 59));
    assert_eq!(status(&h, &big).await["status"], "Processing");
    h.emu.clock().advance(ChronoDuration::seconds(1));
    let s = status(&h, &big).await;
    assert_eq!((s["status"].as_str(), s["numberOfRecords"].as_u64()), (Some("Completed"), Some(2501)));
    // The documented bench value: minutes per million rows.
    let million = ChronoDuration::milliseconds(REALISTIC_BULK_PROCESSING_PER_1000_ROWS_MS) * 1000;
    assert!(million >= ChronoDuration::minutes(1) && million <= ChronoDuration::minutes(10), "{million}");
}
