//! Sessions, retries, faults and limits against the in-process Salesforce emulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::time::Instant;

use chrono::{Duration, NaiveDate};
use common::*;
use futures::StreamExt;
use salesync_core::ports::marketo::RecordOutcome;
use salesync_core::ports::salesforce::{SalesforceApi, TaskWrite};
use salesync_core::{Error, sfid::SalesforceId};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceFault};
use salesync_salesforce::{RetryConfig, Soql};
use serde_json::json;

fn task(ext: &str, who: &str) -> TaskWrite {
    TaskWrite {
        external_id: ext.into(),
        who_id: Some(SalesforceId::parse(who).unwrap()),
        what_id: None,
        owner_id: None,
        subject: format!("Call {ext}"),
        status: "Not Started".into(),
        priority: "Normal".into(),
        activity_date: NaiveDate::from_ymd_opt(2025, 6, 3),
        description: None,
        task_subtype: Some("Call".into()),
        task_type: Some("Call".into()),
        call_duration_secs: Some(61),
        call_disposition: Some("Connected".into()),
        custom_fields: Vec::new(),
    }
}

fn plan(rules: Vec<FaultRule<SalesforceFault>>) -> FaultPlan<SalesforceFault> {
    FaultPlan::new(rules, 1)
}

fn live_tasks(emu: &salesync_emulator::salesforce::SalesforceEmulator) -> usize {
    emu.records("Task").into_iter().filter(|t| t.get("IsDeleted") != Some(&json!(true))).count()
}

#[tokio::test]
async fn paging_across_many_pages_and_a_session_expiring_mid_stream() {
    let (emu, c) = setup().await;
    emu.seed_world(&salesync_emulator::seed::generate(5000, 42));
    let leads = emu.records("Lead").len();
    assert!(leads > 1000, "seeded {leads} leads");
    let soql = Soql::new().select(&["Id", "Email", "OwnerId"]).from("Lead").order_by("Id");
    let started = Instant::now();
    let mut pages = c.query_stream(&soql);
    let mut n = 0;
    let mut count = 0;
    let mut ids = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap();
        count += 1;
        n += page.items.len();
        ids.extend(page.items.iter().map(|r| r["Id"].as_str().unwrap().to_string()));
        if count == 2 {
            emu.expire_sessions();
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(n, leads);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), leads, "no duplicates, no gaps");
    assert!(count >= leads / 2000, "{count} pages");
    assert_eq!(token_calls(&emu), 2, "one token at the start, one after the expiry");
    let rejected: Vec<_> = emu.call_log().into_iter().filter(|c| c.status == 401).collect();
    assert_eq!(rejected.len(), 1, "exactly one request saw the expired session");
    eprintln!("read {n} leads in {count} pages in {elapsed:?}");
}

#[tokio::test]
async fn a_write_applied_but_its_response_dropped_is_retried_into_one_task() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::Nth(1), FaultAction::ApplyThenDrop)
            .on_path("/composite/sobjects/Task")
            .on_method("PATCH"),
    ]));
    let out = c.upsert_tasks(&[task("atd-1", &l), task("atd-2", &l)]).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, RecordOutcome::Written { .. })), "{out:?}");
    assert_eq!(live_tasks(&emu), 2, "the repeat upserted, it did not create twice");
    let patches = calls(&emu, Some("PATCH"), "/composite/sobjects/Task");
    // The dropped call, its repeat (which finds the Tasks and refuses the create-only
    // TaskSubtype), and the repeat without TaskSubtype.
    assert_eq!(patches.len(), 3, "{patches:?}");
    assert_eq!(patches[0].fault.as_deref(), Some("apply-then-drop"));
    assert_eq!(emu.records("Task").iter().filter(|t| t["TaskSubtype"] == json!("Call")).count(), 2);

    // The same for a dropped connection before the work, and on a delete.
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Nth(1), FaultAction::DropConnection)]));
    let id = match &c.upsert_tasks(&[task("atd-3", &l)]).await.unwrap()[0] {
        RecordOutcome::Written { id } => id.clone(),
        o => panic!("{o:?}"),
    };
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Nth(1), FaultAction::ApplyThenDrop).on_method("DELETE")]));
    c.delete_task(&SalesforceId::parse(&id).unwrap()).await.unwrap();
    assert_eq!(live_tasks(&emu), 2);
}

#[tokio::test]
async fn intermittent_errors_are_retried_and_then_typed() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    c.task_type_values().await.unwrap(); // a session first: these faults are about data calls
    // Lock contention, a busy server and a query timeout: each retried once, then fine.
    let faults = [SalesforceFault::UnableToLockRow, SalesforceFault::ServerUnavailable, SalesforceFault::QueryTimeout];
    for (i, fault) in faults.into_iter().enumerate() {
        emu.set_faults(plan(vec![FaultRule::new(Trigger::Nth(1), FaultAction::Error(fault.clone()))]));
        let before = emu.call_log().len();
        let out = c.upsert_tasks(&[task(&format!("r-{i}"), &l)]).await.unwrap();
        assert!(matches!(out[0], RecordOutcome::Written { .. }), "{fault:?}");
        assert_eq!(emu.call_log().len() - before, 2, "{fault:?}: one failure, one success");
    }
    // Concurrency limit: retried, and when it persists it is a rate limit.
    emu.set_faults(plan(vec![FaultRule::new(
        Trigger::Always,
        FaultAction::Error(SalesforceFault::RequestLimitExceeded),
    )]));
    let before = emu.call_log().len();
    let e = c.active_users().await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
    assert_eq!(emu.call_log().len() - before, 4, "max_attempts = 4");
    // A busy server that stays busy: Unavailable, retryable later.
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, FaultAction::Error(SalesforceFault::ServerUnavailable))]));
    let e = c.task_type_values().await.unwrap_err();
    assert!(matches!(&e, Error::Unavailable { code, .. } if code == "SERVER_UNAVAILABLE"), "{e:?}");
    assert!(e.is_retryable());
    // UNKNOWN_EXCEPTION is not retried.
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, FaultAction::Error(SalesforceFault::UnknownException))]));
    let before = emu.call_log().len();
    let e = c.task_type_values().await.unwrap_err();
    assert!(matches!(&e, Error::Unavailable { code, .. } if code == "UNKNOWN_EXCEPTION"), "{e:?}");
    assert_eq!(emu.call_log().len() - before, 1);
}

#[tokio::test]
async fn validation_and_access_errors_are_never_retried() {
    let (emu, c) = setup().await;
    c.task_type_values().await.unwrap();
    for (status, code, want_access) in
        [(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", false), (403, "INSUFFICIENT_ACCESS_OR_READONLY", true)]
    {
        emu.set_faults(plan(vec![FaultRule::new(
            Trigger::Always,
            FaultAction::Error(SalesforceFault::Custom { status, error_code: code.into(), message: "nope".into() }),
        )]));
        let before = emu.call_log().len();
        let e = c.active_users().await.unwrap_err();
        if want_access {
            assert!(
                matches!(&e, Error::AccessDenied { code: c, message, .. } if c == code && message == "nope"),
                "{e:?}"
            );
        } else {
            assert!(matches!(&e, Error::Rejected { code: c, message, .. } if c == code && message == "nope"), "{e:?}");
        }
        assert_eq!(emu.call_log().len() - before, 1);
    }
}

#[tokio::test]
async fn daily_limit_is_quota_exhausted_without_retries() {
    let emu = emulator_with(SalesforceConfig { daily_api_limit: 3, ..SalesforceConfig::default() }).await;
    let c = client(&emu);
    let mut last = None;
    for _ in 0..6 {
        match c.task_type_values().await {
            Ok(_) => {}
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let e = last.expect("the allocation runs out");
    assert!(matches!(e, Error::QuotaExhausted { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let limited =
        emu.call_log().into_iter().filter(|c| c.error_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED")).count();
    assert_eq!(limited, 1, "TotalRequests is not retried");
    let usage = c.api_usage().unwrap();
    assert_eq!(usage.max, 3);

    // Injected, with the TotalRequests wording: on the token endpoint, then on data calls.
    let (emu, c) = setup().await;
    emu.set_faults(plan(vec![FaultRule::new(
        Trigger::Always,
        FaultAction::Error(SalesforceFault::Custom {
            status: 403,
            error_code: "REQUEST_LIMIT_EXCEEDED".into(),
            message: "TotalRequests Limit exceeded.".into(),
        }),
    )]));
    assert!(matches!(c.active_users().await, Err(Error::QuotaExhausted { .. })));
    emu.set_faults(plan(vec![]));
    c.active_users().await.unwrap();
    emu.set_faults(plan(vec![FaultRule::new(
        Trigger::Always,
        FaultAction::Error(SalesforceFault::Custom {
            status: 403,
            error_code: "REQUEST_LIMIT_EXCEEDED".into(),
            message: "TotalRequests Limit exceeded.".into(),
        }),
    )]));
    assert!(matches!(c.active_users().await, Err(Error::QuotaExhausted { .. })));
}

#[tokio::test]
async fn malformed_bodies_are_protocol_errors() {
    let (emu, c) = setup().await;
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, FaultAction::MalformedBody).on_path("/query")]));
    let e = c.active_users().await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    // A tiny body cap turns a normal answer into a protocol error too.
    emu.set_faults(plan(vec![]));
    let c = builder(&emu).max_body_bytes(64).build().unwrap();
    assert!(matches!(c.task_type_values().await, Err(Error::Protocol { .. })));
}

#[tokio::test]
async fn refresh_token_grant_and_reconnect_required() {
    let emu = emulator().await;
    let good = builder(&emu).refresh_token("salesync-emulator-refresh-token").build().unwrap();
    good.task_type_values().await.unwrap();
    emu.expire_sessions();
    good.task_type_values().await.unwrap();
    assert_eq!(token_calls(&emu), 2);

    let bad = builder(&emu).refresh_token("revoked-refresh-token-value").build().unwrap();
    let e = bad.task_type_values().await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("reconnect required"), "{text}");
    assert!(!text.contains("revoked-refresh-token-value") && !text.contains(emu.client_secret()), "{text}");

    let wrong_secret = builder(&emu).client_secret("wrong-secret-value").build().unwrap();
    let e = wrong_secret.active_users().await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert!(!e.to_string().contains("wrong-secret-value"));
    assert!(!format!("{wrong_secret:?}").contains("wrong-secret-value"));
}

#[tokio::test]
async fn a_session_that_cannot_be_renewed_is_reconnect_required() {
    // The token endpoint accepts the first grant, then the org revokes everything: the data call
    // answers 401, the refresh answers invalid_grant, and the error says "reconnect required".
    let emu = emulator_with(SalesforceConfig { rotate_refresh_token: true, ..SalesforceConfig::default() }).await;
    let c = builder(&emu).refresh_token("salesync-emulator-refresh-token").build().unwrap();
    c.task_type_values().await.unwrap();
    // A second client with the same (now rotated-away) refresh token cannot get a session.
    let stale = builder(&emu).refresh_token("salesync-emulator-refresh-token").build().unwrap();
    let e = stale.task_type_values().await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    // The first client follows the rotation across an expiry.
    emu.expire_sessions();
    c.task_type_values().await.unwrap();
    emu.expire_sessions();
    c.task_type_values().await.unwrap();
}

#[tokio::test]
async fn clones_share_one_session_and_renew_it_once() {
    let (emu, c) = setup().await;
    c.task_type_values().await.unwrap();
    emu.expire_sessions();
    let mut handles = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        handles.push(tokio::spawn(async move { c.task_type_values().await }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(token_calls(&emu), 2, "one initial token, one renewal shared by every clone");
}

#[tokio::test]
async fn injected_invalid_session_renews_once_then_gives_up() {
    let (emu, c) = setup().await;
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::Always, FaultAction::Error(SalesforceFault::InvalidSessionId))
            .on_path("/services/data"),
    ]));
    let e = c.task_type_values().await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert_eq!(calls(&emu, None, "/sobjects/Task/describe").len(), 2, "the call is repeated once");
    assert_eq!(token_calls(&emu), 2);
}

#[tokio::test]
async fn page_tokens_are_checked_before_use() {
    let (_emu, c) = setup().await;
    let since = chrono::Utc::now() - Duration::hours(1);
    for bad in ["https://evil.example/services/data/v60.0/query/x", "/etc/passwd"] {
        let e = c.tasks_modified_since(since, Some(bad.into())).await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    }
}

#[tokio::test]
async fn no_retries_means_one_attempt() {
    let (emu, _) = setup().await;
    let c = builder(&emu).retry(RetryConfig::none()).build().unwrap();
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Nth(1), FaultAction::Error(SalesforceFault::ServerUnavailable))]));
    assert!(matches!(c.active_users().await, Err(Error::Unavailable { .. })));
}
