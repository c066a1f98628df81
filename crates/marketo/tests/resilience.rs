//! Failure handling against the emulator: token expiry, rate and concurrency storms, quota,
//! empty pages, dropped connections, malformed bodies, writes of unknown outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use futures::{StreamExt, TryStreamExt};
use salesync_core::Error;
use salesync_core::ports::marketo::{CustomActivityTypeDef, MarketoApi, NewCustomActivity, RecordOutcome};
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoFault, MarketoLimits};
use salesync_emulator::seed;
use salesync_marketo::MarketoClient;
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn fault(code: &str) -> FaultAction<MarketoFault> {
    FaultAction::Error(MarketoFault::code(code))
}

fn plan(rules: Vec<FaultRule<MarketoFault>>) -> FaultPlan<MarketoFault> {
    FaultPlan::new(rules, 1)
}

fn outcomes(emu: &MarketoEmulator, code: &str) -> usize {
    emu.call_log().iter().filter(|c| c.outcome.as_deref() == Some(code)).count()
}

fn calls_to(emu: &MarketoEmulator, fragment: &str) -> usize {
    emu.call_log().iter().filter(|c| c.path.contains(fragment)).count()
}

fn id_fields() -> Vec<String> {
    vec!["id".into(), "email".into()]
}

#[tokio::test]
async fn token_expiry_mid_paging_reauthenticates_once() {
    let emu = common::start(MarketoConfig { scan_block: 5, ..common::manual_config() }).await;
    let ids: Vec<i64> = (0..30).map(|i| emu.create_lead(obj(json!({"email": format!("p{i}@example.com")})))).collect();
    let c = common::client(&emu);
    let token = c.paging_token(common::t0() - TimeDelta::hours(1)).await.unwrap();
    let mut pages = c.lead_changes_stream(token, vec!["email".into()]);
    let first = pages.next().await.unwrap().unwrap();
    assert!(first.more);
    // The server-side token lifetime passes between two pages.
    emu.clock().advance(TimeDelta::seconds(3601));
    let rest: Vec<_> = pages.try_collect().await.unwrap();
    let seen: usize = first.items.len() + rest.iter().map(|p| p.items.len()).sum::<usize>();
    assert_eq!(seen, ids.len());
    assert_eq!(outcomes(&emu, "602"), 1, "exactly one expired-token answer");
    assert_eq!(outcomes(&emu, "601"), 0);
    assert_eq!(calls_to(&emu, "/identity/oauth/token"), 2, "one initial token, one refresh");
    emu.shutdown().await;
}

#[tokio::test]
async fn repeated_601_is_unauthenticated() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::client(&emu);
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, fault("601")).on_path("describe2")]));
    let e = c.lead_schema().await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    assert_eq!(outcomes(&emu, "601"), 2, "one re-authentication, one retry, no more");
    emu.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated_and_secret_free() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::builder(&emu).client_secret("wrong-secret-value").build().unwrap();
    let e = c.lead_schema().await.unwrap_err();
    assert!(matches!(e, Error::Unauthenticated { .. }), "{e:?}");
    let text = format!("{e} {e:?} {c:?}");
    assert!(!text.contains("wrong-secret-value"), "{text}");
    emu.shutdown().await;
}

#[tokio::test]
async fn client_limiter_keeps_every_window_within_the_rate() {
    let limits = MarketoLimits { calls_per_window: 5, window: Duration::from_secs(1), ..MarketoLimits::default() };
    let emu = common::start(MarketoConfig { limits, ..MarketoConfig::default() }).await;
    emu.seed_world(&seed::generate(20, 5));
    let c = common::builder(&emu).rate_limit(5, Duration::from_secs(1)).build().unwrap();
    let tasks: Vec<_> = (0..20i64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.leads_by_ids(&[1001 + i], &id_fields()).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 1);
    }
    assert_eq!(outcomes(&emu, "606"), 0, "the client never tripped the server's limit");
    let max = emu.max_calls_in_any_window();
    assert!((4..=5).contains(&max), "max calls in a window: {max}");
    emu.shutdown().await;
}

#[tokio::test]
async fn storm_606_is_waited_out() {
    let limits = MarketoLimits { calls_per_window: 10, window: Duration::from_millis(500), ..MarketoLimits::default() };
    let emu = common::start(MarketoConfig { limits, ..MarketoConfig::default() }).await;
    emu.seed_world(&seed::generate(5, 5));
    let c = common::builder(&emu).rate_limit(10, Duration::from_millis(500)).build().unwrap();
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::FromNth { n: 3, count: 4 }, fault("606")).on_path("/rest/v1/leads.json"),
    ]));
    for i in 0..15 {
        c.leads_by_ids(&[1001 + i % 5], &id_fields()).await.unwrap();
    }
    assert_eq!(outcomes(&emu, "606"), 4);
    assert!(emu.max_calls_in_any_window() <= 10, "{}", emu.max_calls_in_any_window());
    // A storm longer than the retry budget becomes a typed RateLimited.
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, fault("606")).on_path("/rest/v1/leads.json")]));
    let e = c.leads_by_ids(&[1001], &id_fields()).await.unwrap_err();
    assert!(matches!(e, Error::RateLimited { .. }), "{e:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn concurrency_is_bounded_and_615_is_retried() {
    let limits = MarketoLimits { max_concurrent: 3, ..MarketoLimits::default() };
    let emu =
        common::start(MarketoConfig { limits, latency: Some(Duration::from_millis(50)), ..MarketoConfig::default() })
            .await;
    emu.seed_world(&seed::generate(12, 5));
    let c = common::builder(&emu).max_concurrent(3).build().unwrap();
    let tasks: Vec<_> = (0..12i64)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.leads_by_ids(&[1001 + i], &id_fields()).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(outcomes(&emu, "615"), 0);
    let seen = emu.max_concurrent_seen();
    assert!((2..=3).contains(&seen), "max concurrent seen: {seen}");

    emu.set_faults(plan(vec![FaultRule::new(Trigger::FromNth { n: 1, count: 3 }, fault("615"))]));
    c.leads_by_ids(&[1001], &id_fields()).await.unwrap();
    assert_eq!(outcomes(&emu, "615"), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn daily_quota_is_typed() {
    let limits = MarketoLimits { daily_quota: 3, ..MarketoLimits::default() };
    let emu = common::start(MarketoConfig { limits, ..common::manual_config() }).await;
    emu.seed_world(&seed::generate(3, 5));
    let c = common::client(&emu);
    for _ in 0..3 {
        c.leads_by_ids(&[1001], &id_fields()).await.unwrap();
    }
    let e = c.leads_by_ids(&[1001], &id_fields()).await.unwrap_err();
    assert!(matches!(e, Error::QuotaExhausted { .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(outcomes(&emu, "607"), 1, "607 is not retried");
    emu.shutdown().await;
}

#[tokio::test]
async fn client_side_daily_budget() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::builder(&emu).daily_budget(2).build().unwrap();
    c.activity_types().await.unwrap();
    c.activity_types().await.unwrap();
    let e = c.activity_types().await.unwrap_err();
    assert!(matches!(e, Error::QuotaExhausted { .. }), "{e:?}");
    assert_eq!(calls_to(&emu, "types.json"), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn empty_pages_with_more_result_are_followed() {
    let emu = common::start(MarketoConfig { scan_block: 1, ..common::manual_config() }).await;
    let ids: Vec<i64> = (0..12).map(|i| emu.create_lead(obj(json!({"email": format!("e{i}@example.com")})))).collect();
    emu.clock().advance(TimeDelta::minutes(1));
    assert!(emu.update_lead(ids[11], obj(json!({"firstName": "Zed"}))));
    let c = common::client(&emu);
    let token = c.paging_token(common::t0() - TimeDelta::hours(1)).await.unwrap();
    let page = c.activities(&token, &[13], &[]).await.unwrap();
    assert_eq!(page.items.len(), 1, "{page:?}");
    assert_eq!(page.items[0].lead_id, ids[11]);
    assert!(calls_to(&emu, "/rest/v1/activities.json") >= 12, "empty pages were followed");
    // The token carried forward resumes after the change.
    let next = page.next_token.clone().unwrap();
    let rest: Vec<_> = c.activities_stream(next, vec![13], vec![]).try_collect().await.unwrap();
    assert!(rest.iter().all(|p| p.items.is_empty()));
    assert!(rest.last().unwrap().next_token.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn transient_errors_are_retried_then_typed() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::client(&emu);
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::Nth(1), fault("604")).on_path("types.json"),
        FaultRule::new(Trigger::Nth(2), fault("502")).on_path("types.json"),
        FaultRule::new(Trigger::Nth(3), fault("713")).on_path("types.json"),
        FaultRule::new(Trigger::Nth(4), FaultAction::DropConnection).on_path("types.json"),
    ]));
    assert!(!c.activity_types().await.unwrap().is_empty());
    assert_eq!(calls_to(&emu, "types.json"), 5);
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, fault("608")).on_path("types.json")]));
    let e = c.activity_types().await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { ref code, .. } if code == "608"), "{e:?}");
    // Permanent codes are not retried.
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, fault("603")).on_path("types.json")]));
    let before = calls_to(&emu, "types.json");
    let e = c.activity_types().await.unwrap_err();
    assert!(matches!(e, Error::AccessDenied { ref code, .. } if code == "603"), "{e:?}");
    assert_eq!(calls_to(&emu, "types.json"), before + 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::client(&emu);
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Always, FaultAction::MalformedBody).on_path("describe2")]));
    let e = c.lead_schema().await.unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
    emu.shutdown().await;
}

fn one_def() -> CustomActivityTypeDef {
    CustomActivityTypeDef {
        api_name: "salesyncSendSalesEmail".into(),
        name: "Send Sales Email (salesync)".into(),
        description: "Sales email sent by a rep".into(),
        trigger_name: "Is Sent Sales Email - salesync".into(),
        filter_name: "Was Sent Sales Email - salesync".into(),
        primary_attribute: ("subject".into(), "Email Subject".into()),
        attributes: vec![("outboxId".into(), "Outbox Id".into(), "string".into())],
    }
}

async fn provisioned(emu: &MarketoEmulator, c: &MarketoClient) -> (i64, i64) {
    let lead = emu.create_lead(obj(json!({"email": "ada@example.com"})));
    let t = c.ensure_custom_activity_types(&[one_def()]).await.unwrap();
    (lead, t[0].id)
}

fn activity(lead: i64, type_id: i64, outbox: &str) -> NewCustomActivity {
    NewCustomActivity {
        lead_id: lead,
        activity_date: common::t0(),
        activity_type_id: type_id,
        primary_attribute_value: "Hello".into(),
        attributes: vec![("outboxId".into(), outbox.into())],
    }
}

#[tokio::test]
async fn custom_activity_write_of_unknown_outcome_is_not_repeated() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::client(&emu);
    let (lead, type_id) = provisioned(&emu, &c).await;
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::Nth(1), FaultAction::ApplyThenDrop).on_path("activities/external.json"),
    ]));
    let e = c.add_custom_activities(&[activity(lead, type_id, "ob-1")]).await.unwrap_err();
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(emu.custom_activities().len(), 1, "applied once, never re-sent");
    assert_eq!(calls_to(&emu, "activities/external.json"), 1);

    // A 604 (may have been applied) is not repeated either.
    emu.set_faults(plan(vec![FaultRule::new(Trigger::Nth(1), fault("604")).on_path("activities/external.json")]));
    let e = c.add_custom_activities(&[activity(lead, type_id, "ob-2")]).await.unwrap_err();
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
    emu.shutdown().await;
}

#[tokio::test]
async fn custom_activity_write_is_repeated_after_rate_answers() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::builder(&emu).rate_limit(100, Duration::from_millis(200)).build().unwrap();
    let (lead, type_id) = provisioned(&emu, &c).await;
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::Nth(1), fault("606")).on_path("activities/external.json"),
        FaultRule::new(Trigger::Nth(2), fault("615")).on_path("activities/external.json"),
        FaultRule::new(Trigger::Nth(3), fault("602")).on_path("activities/external.json"),
    ]));
    let out = c
        .add_custom_activities(&[activity(lead, type_id, "ob-1"), activity(99_999_999, type_id, "ob-2")])
        .await
        .unwrap();
    assert!(matches!(out[0], RecordOutcome::Written { .. }));
    assert!(matches!(&out[1], RecordOutcome::Rejected { code, .. } if code == "1004"));
    assert_eq!(emu.custom_activities().len(), 1);
    assert_eq!(calls_to(&emu, "activities/external.json"), 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn bulk_download_resumes_after_a_dropped_connection() {
    let emu = common::start(common::manual_config()).await;
    let world = seed::generate(400, 9);
    emu.seed_world(&world);
    let c = common::client(&emu);
    let start = world.people.iter().map(|p| p.created_at).min().unwrap();
    let start = chrono::DurationRound::duration_trunc(start, TimeDelta::seconds(1)).unwrap();
    let fields: Vec<String> =
        ["id", "firstName", "lastName", "email", "company", "sfdcLeadOwnerId"].map(String::from).to_vec();
    let job = c
        .start_lead_export(
            &fields,
            salesync_core::ports::marketo::ExportFilter::CreatedAt { start, end: start + TimeDelta::days(31) },
        )
        .await
        .unwrap();
    let mut status = c.lead_export_status(&job.id).await.unwrap();
    for _ in 0..50 {
        if status.state == salesync_core::ports::marketo::ExportState::Completed {
            break;
        }
        emu.clock().advance(TimeDelta::minutes(1));
        status = c.lead_export_status(&job.id).await.unwrap();
    }
    let whole: Vec<u8> = c.lead_export_file(&job.id, 0).await.unwrap().try_collect::<Vec<_>>().await.unwrap().concat();
    assert!(whole.len() > 1000);

    emu.set_faults(plan(vec![FaultRule::new(Trigger::Nth(1), FaultAction::ApplyThenDrop).on_path("file.json")]));
    let before = calls_to(&emu, "file.json");
    let again: Vec<u8> = c.lead_export_file(&job.id, 0).await.unwrap().try_collect::<Vec<_>>().await.unwrap().concat();
    assert_eq!(again, whole, "the resumed download is byte-identical");
    assert_eq!(calls_to(&emu, "file.json"), before + 2, "one broken download, one resumed");
    let file_calls: Vec<_> = emu.call_log().into_iter().filter(|c| c.path.contains("file.json")).collect();
    let n = file_calls.len();
    assert!(file_calls[n - 2].outcome.is_some(), "the broken download is logged: {:?}", file_calls[n - 2]);
    assert_eq!(file_calls[n - 1].http_status, 206, "resumed with Range");
    emu.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_without_secrets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = MarketoClient::builder()
        .base_url(format!("http://{addr}"))
        .client_id("id")
        .client_secret("very-secret-value")
        .retry(common::fast_retry())
        .build()
        .unwrap();
    let e = c.activity_types().await.unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    let text = format!("{e} {e:?} {:?}", std::error::Error::source(&e));
    assert!(!text.contains("very-secret-value"), "{text}");
}

#[tokio::test]
async fn identity_outages_are_retried() {
    let emu = common::start(MarketoConfig::default()).await;
    emu.set_identity_faults(plan(vec![
        FaultRule::new(Trigger::Nth(1), fault("502")),
        FaultRule::new(Trigger::Nth(2), FaultAction::DropConnection),
    ]));
    let c = common::client(&emu);
    assert!(!c.activity_types().await.unwrap().is_empty());
    assert_eq!(calls_to(&emu, "/identity/oauth/token"), 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn timeouts_retry_reads_but_not_writes() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::builder(&emu).timeout(Duration::from_millis(400)).build().unwrap();
    let (lead, type_id) = provisioned(&emu, &c).await;
    emu.set_faults(plan(vec![
        FaultRule::new(Trigger::Nth(1), FaultAction::Delay(Duration::from_millis(1500))).on_path("types.json"),
        FaultRule::new(Trigger::Nth(1), FaultAction::Delay(Duration::from_millis(1500)))
            .on_path("activities/external.json"),
    ]));
    // The first attempt times out (400 ms < 1.5 s); only a repeat can succeed.
    let started = std::time::Instant::now();
    assert!(!c.activity_types().await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));
    let e = c.add_custom_activities(&[activity(lead, type_id, "ob-9")]).await.unwrap_err();
    assert!(matches!(e, Error::OutcomeUnknown { .. }), "{e:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(calls_to(&emu, "activities/external.json") <= 1, "the write was not repeated");
    assert!(emu.custom_activities().len() <= 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn oversize_body_is_a_typed_413() {
    let emu = common::start(MarketoConfig::default()).await;
    let c = common::client(&emu);
    let (lead, type_id) = provisioned(&emu, &c).await;
    let big = "x".repeat(4_000);
    let items: Vec<_> = (0..300).map(|i| activity(lead, type_id, &format!("{i}{big}"))).collect();
    let e = c.add_custom_activities(&items).await.unwrap_err();
    assert!(matches!(e, Error::Rejected { ref code, .. } if code == "413"), "{e:?}");
    assert!(emu.custom_activities().is_empty());
    emu.shutdown().await;
}
