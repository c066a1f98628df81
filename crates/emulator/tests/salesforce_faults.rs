//! Salesforce emulator fault injection over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use std::time::{Duration, Instant};

use salesforce_common::H;
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator, SalesforceFault};
use serde_json::{Value, json};

async fn start() -> (SalesforceEmulator, reqwest::Client, String) {
    let h = H::start(SalesforceConfig::default()).await;
    (h.emu, h.http, h.token)
}

async fn create_task(
    emu: &SalesforceEmulator,
    http: &reqwest::Client,
    token: &str,
    subject: &str,
) -> reqwest::Result<(u16, Value)> {
    let r = http
        .post(format!("{}/services/data/v60.0/sobjects/Task", emu.base_url()))
        .bearer_auth(token)
        .json(&json!({"Subject": subject}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.bytes().await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

#[tokio::test]
async fn nth_call_gets_unable_to_lock_row_then_recovers() {
    let (emu, http, token) = start().await;
    emu.set_faults(FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Nth(2), FaultAction::Error(SalesforceFault::UnableToLockRow))
                .on_path("/sobjects/Task")
                .on_method("POST"),
        ],
        1,
    ));
    assert_eq!(create_task(&emu, &http, &token, "one").await.unwrap().0, 201);
    let (s, b) = create_task(&emu, &http, &token, "two").await.unwrap();
    assert_eq!(
        (s, b),
        (
            400,
            json!([{"message": "unable to obtain exclusive access to this record", "errorCode": "UNABLE_TO_LOCK_ROW"}])
        )
    );
    assert_eq!(create_task(&emu, &http, &token, "two again").await.unwrap().0, 201);
    let subjects: Vec<String> =
        emu.records("Task").iter().map(|t| t["Subject"].as_str().unwrap().to_string()).collect();
    assert_eq!(subjects.len(), 2);
    assert!(!subjects.contains(&"two".to_string()), "the failed call did no work");
    let log = emu.call_log();
    let failed = log.iter().find(|c| c.error_code.as_deref() == Some("UNABLE_TO_LOCK_ROW")).unwrap();
    assert_eq!((failed.method.as_str(), failed.status, failed.fault.as_deref()), ("POST", 400, Some("error")));
}

#[tokio::test]
async fn error_flavours_render_with_their_statuses() {
    let (emu, http, token) = start().await;
    let cases = [
        (SalesforceFault::ServerUnavailable, 503, "SERVER_UNAVAILABLE"),
        (SalesforceFault::UnknownException, 500, "UNKNOWN_EXCEPTION"),
        (SalesforceFault::RequestLimitExceeded, 403, "REQUEST_LIMIT_EXCEEDED"),
        (SalesforceFault::QueryTimeout, 400, "QUERY_TIMEOUT"),
        (SalesforceFault::InvalidSessionId, 401, "INVALID_SESSION_ID"),
    ];
    for (fault, status, code) in cases {
        emu.set_faults(FaultPlan::new(vec![FaultRule::new(Trigger::Always, FaultAction::Error(fault))], 0));
        let (s, b) = create_task(&emu, &http, &token, "x").await.unwrap();
        assert_eq!((s, b[0]["errorCode"].as_str().unwrap()), (status, code));
    }
    emu.set_faults(FaultPlan::default());
    assert!(emu.records("Task").is_empty());
}

#[tokio::test]
async fn apply_then_drop_persists_the_write_but_the_client_sees_a_transport_error() {
    let (emu, http, token) = start().await;
    emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::ApplyThenDrop).on_method("POST").on_path("/sobjects/")],
        0,
    ));
    let res = create_task(&emu, &http, &token, "ghost").await;
    assert!(res.is_err(), "client must not see a response: {res:?}");
    let tasks = emu.records("Task");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["Subject"], "ghost");
    let last = emu.call_log().pop().unwrap();
    assert_eq!((last.status, last.fault.as_deref()), (0, Some("apply-then-drop")));
}

#[tokio::test]
async fn drop_connection_does_no_work_and_malformed_bodies_do_not_parse() {
    let (emu, http, token) = start().await;
    emu.set_faults(FaultPlan::new(vec![FaultRule::new(Trigger::Nth(1), FaultAction::DropConnection)], 0));
    assert!(create_task(&emu, &http, &token, "lost").await.is_err());
    assert!(emu.records("Task").is_empty());

    emu.set_faults(FaultPlan::new(vec![FaultRule::new(Trigger::Nth(1), FaultAction::MalformedBody)], 0));
    let r = http
        .get(format!("{}/services/data/v60.0/query?q=SELECT+Id+FROM+Task", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.is_err());
    assert!(emu.records("Task").is_empty());
}

#[tokio::test]
async fn delay_and_ratio_faults() {
    let (emu, http, token) = start().await;
    emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::Delay(Duration::from_millis(300)))],
        0,
    ));
    let t = Instant::now();
    assert_eq!(create_task(&emu, &http, &token, "slow").await.unwrap().0, 201);
    assert!(t.elapsed() >= Duration::from_millis(300));

    emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Ratio(0.5), FaultAction::Error(SalesforceFault::ServerUnavailable))],
        42,
    ));
    let mut failures = 0;
    for i in 0..40 {
        let (s, _) = create_task(&emu, &http, &token, &format!("r{i}")).await.unwrap();
        if s == 503 {
            failures += 1;
        } else {
            assert_eq!(s, 201);
        }
    }
    assert!((8..=32).contains(&failures), "{failures} failures");
    assert_eq!(emu.records("Task").len(), 1 + 40 - failures);
    emu.shutdown().await;
}

#[tokio::test]
async fn long_running_requests_hit_the_concurrency_limit() {
    let cfg = SalesforceConfig {
        long_running_limit: 1,
        long_running_threshold: Duration::from_millis(100),
        ..SalesforceConfig::default()
    };
    let H { emu, http, token } = H::start(cfg).await;
    emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::Delay(Duration::from_millis(600))).on_path("/limits")],
        0,
    ));
    let slow = {
        let (http, url, token) =
            (http.clone(), format!("{}/services/data/v60.0/limits", emu.base_url()), token.clone());
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, b) = create_task(&emu, &http, &token, "blocked").await.unwrap();
    assert_eq!(
        (s, b),
        (403, json!([{"message": "ConcurrentPerOrgLongTxn Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]))
    );
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(create_task(&emu, &http, &token, "fine").await.unwrap().0, 201);
}
