//! Dispatcher behaviour against mocked connectors and a memory store whose calls are counted.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use salesync_core::activity::{ReminderPriority, ReminderStatus, SalesActivityKind as K, UnsubscribeOrigin};
use salesync_core::ports::Page;
use salesync_core::ports::marketo::{Activity, MockMarketoApi, NewCustomActivity, RecordOutcome};
use salesync_core::ports::salesforce::{
    ApiUsage, DeletedRecord, DeletedSince, LeadConversion, OptOutRecord, PersonRef, TaskRecord, TaskWrite,
};
use salesync_core::ports::store::{
    Finished, NewOutboxItem, OutboxPayload, OutboxState, OutboxStore, Outcome, Recording, ReminderStore, Target,
};
use salesync_core::{Error, error::Service, sfid::SalesforceId};
use salesync_delivery::{CanEmail, DeliveryEvent, ManualClock, NewReminder, ReminderChanges, TargetStatus};
use salesync_store::testing::Method;

fn written(n: usize, prefix: &str) -> Vec<RecordOutcome> {
    (0..n).map(|i| RecordOutcome::Written { id: format!("{prefix}{i}") }).collect()
}

/// Marketo that provisions types and accepts every activity.
fn marketo_accepting() -> MockMarketoApi {
    let mut m = marketo_with_types();
    m.expect_add_custom_activities().returning(|items| Ok(written(items.len(), "guid-")));
    m
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>) -> Vec<DeliveryEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

// ---------------------------------------------------------------- recording

#[tokio::test]
async fn unknown_person_is_rejected_and_nothing_is_stored() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let d = dispatcher(MockMarketoApi::new(), salesforce_basic(), &store, &clock);
    let err = d.record_activity(activity("a1", 999, K::SendSalesEmail)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { ref id, .. } if id == "999"), "{err}");
    assert!(err.to_string().contains("not in the mirror"));
    assert!(matches!(d.record_unsubscribe(999).await, Err(Error::NotFound { .. })));
    let r = NewReminder {
        id: None,
        marketo_id: 999,
        subject: "Call back".into(),
        priority: ReminderPriority::Normal,
        due_date: None,
        details: None,
    };
    assert!(matches!(d.create_reminder(r).await, Err(Error::NotFound { .. })));
    assert!(items(&store).await.is_empty());
    assert_eq!(store.calls(Method::Record), 0);
    assert!(unsubscribes(&store).await.is_empty());
}

#[tokio::test]
async fn missing_or_oversize_attributes_are_rejected_and_nothing_is_stored() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let d = dispatcher(MockMarketoApi::new(), salesforce_basic(), &store, &clock);
    let mut a = activity("a1", 1, K::SendSalesEmail);
    a.subject = None;
    assert!(matches!(d.record_activity(a).await, Err(Error::InvalidInput { ref field, .. }) if field == "subject"));
    let mut c = activity("a2", 1, K::SalesCall);
    c.call = None;
    assert!(matches!(d.record_activity(c).await, Err(Error::InvalidInput { ref field, .. }) if field == "call"));
    let mut big = activity("a3", 1, K::ClickSalesEmail);
    big.link = Some("x".repeat(70_000));
    assert!(
        matches!(d.record_activity(big).await, Err(Error::InvalidInput { ref field, .. }) if field == "attributes")
    );
    assert!(items(&store).await.is_empty());
}

#[tokio::test]
async fn recording_enqueues_per_switch_in_one_store_call_and_is_idempotent() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let d = dispatcher(MockMarketoApi::new(), salesforce_basic(), &store, &clock);

    let r = d.record_activity(activity("e1", 1, K::SendSalesEmail)).await.unwrap();
    assert_eq!(r.outbox_ids.len(), 2);
    assert_eq!(store.calls(Method::Record), 1);
    let keys: Vec<String> = d.status(&r).await.unwrap().into_iter().map(|i| i.key).collect();
    assert_eq!(keys, vec!["e1:marketo", "e1:salesforce"]);

    // Opens are not logged to Salesforce.
    assert_eq!(d.record_activity(activity("o1", 1, K::OpenSalesEmail)).await.unwrap().outbox_ids.len(), 1);
    // Calls are (when switched on).
    assert_eq!(d.record_activity(activity("c1", 1, K::SalesCall)).await.unwrap().outbox_ids.len(), 2);
    // Switched off: Marketo only.
    set_settings(&store, |s| {
        s.log_emails_to_salesforce = false;
        s.log_calls_to_salesforce = false;
    })
    .await;
    assert_eq!(d.record_activity(activity("e2", 1, K::SendSalesEmail)).await.unwrap().outbox_ids.len(), 1);
    assert_eq!(d.record_activity(activity("c2", 1, K::SalesCall)).await.unwrap().outbox_ids.len(), 1);
    assert_eq!(d.record_activity(activity("r2", 1, K::RepliedSalesEmail)).await.unwrap().outbox_ids.len(), 2);

    // Same id again: the same items.
    let again = d.record_activity(activity("e1", 1, K::SendSalesEmail)).await.unwrap();
    assert_eq!(again.outbox_ids[0], r.outbox_ids[0]);
    // An empty id gets a generated one.
    let generated = d.record_activity(activity("", 1, K::OpenSalesEmail)).await.unwrap();
    assert_eq!(generated.id.len(), 32);
    assert!(items(&store).await.iter().any(|i| i.key == format!("{}:marketo", generated.id)));
}

#[tokio::test]
async fn a_batch_is_recorded_in_one_store_call_all_or_nothing() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1), contact(2)]).await;
    let d = dispatcher(MockMarketoApi::new(), salesforce_basic(), &store, &clock);

    // One unknown person refuses the whole batch: nothing stored.
    let bad = vec![activity("b1", 1, K::SendSalesEmail), activity("b2", 99, K::OpenSalesEmail)];
    assert!(matches!(d.record_activities(bad).await, Err(Error::NotFound { .. })));
    // So does one invalid activity, named in the error.
    let mut no_subject = activity("b3", 2, K::SendSalesEmail);
    no_subject.subject = None;
    let e = d.record_activities(vec![activity("b4", 1, K::SalesCall), no_subject]).await.unwrap_err();
    assert!(e.to_string().contains("b3"), "{e}");
    assert!(items(&store).await.is_empty());
    assert_eq!(store.calls(Method::Record), 0);

    let batch = vec![
        activity("e1", 1, K::SendSalesEmail),
        activity("o1", 2, K::OpenSalesEmail),
        activity("c1", 2, K::SalesCall),
        activity("", 1, K::ClickSalesEmail),
    ];
    let recorded = d.record_activities(batch).await.unwrap();
    assert_eq!(store.calls(Method::Record), 1, "one transaction for the batch");
    let sizes: Vec<usize> = recorded.iter().map(|r| r.outbox_ids.len()).collect();
    assert_eq!(sizes, vec![2, 1, 2, 1], "emails and calls also go to Salesforce, opens and clicks do not");
    for r in &recorded[..3] {
        let keys: Vec<String> = d.status(r).await.unwrap().into_iter().map(|i| i.key).collect();
        assert!(keys.iter().all(|k| k.starts_with(&format!("{}:", r.id))), "{keys:?} belong to {}", r.id);
    }
    assert_eq!(recorded[3].id.len(), 32, "an empty id gets a generated one");
    assert_eq!(items(&store).await.len(), 6);
    // Recording the batch again returns the same items.
    let again = d.record_activities(vec![activity("e1", 1, K::SendSalesEmail)]).await.unwrap();
    assert_eq!(again[0].outbox_ids, recorded[0].outbox_ids);
}

// ---------------------------------------------------------------- Marketo

#[tokio::test]
async fn three_hundred_activities_go_in_one_call_with_the_products_attributes() {
    let clock = ManualClock::new(t0());
    let store = store_with((1..=300).map(contact).collect()).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    let seen: Arc<Mutex<Vec<NewCustomActivity>>> = Arc::default();
    let seen2 = seen.clone();
    m.expect_add_custom_activities().times(1).returning(move |items| {
        seen2.lock().unwrap().extend_from_slice(items);
        Ok(written(items.len(), "guid-"))
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    for i in 1..=300 {
        d.record_activity(activity(&format!("a{i}"), i, K::SendSalesEmail)).await.unwrap();
    }
    let report = d.deliver_once().await.unwrap();
    assert_eq!(report.marketo.claimed, 300);
    assert_eq!(report.marketo.delivered, 300);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 300);
    let first = &seen[0];
    assert_eq!(first.activity_type_id, type_id(K::SendSalesEmail));
    assert_eq!(first.primary_attribute_value, "Intro (SIA-a1)");
    assert!(first.attributes.contains(&("source".into(), "Sales App".into())));
    assert!(first.attributes.contains(&("salesyncActivityId".into(), "a1".into())));
    assert!(items(&store).await.iter().all(|i| i.state == OutboxState::Delivered));
    assert_eq!(items(&store).await[0].result.as_deref(), Some("guid-0"));
}

#[tokio::test]
async fn unknown_lead_1004_is_parked_not_retried() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1), contact(2)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    m.expect_add_custom_activities().times(1).returning(|_| {
        Ok(vec![
            RecordOutcome::Written { id: "g1".into() },
            RecordOutcome::Rejected { code: "1004".into(), message: "Lead not found".into() },
        ])
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let mut rx = d.subscribe();
    d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    let r2 = d.record_activity(activity("a2", 2, K::SendSalesEmail)).await.unwrap();
    let report = d.deliver_once().await.unwrap();
    assert_eq!((report.marketo.delivered, report.marketo.parked), (1, 1));
    let item = &d.status(&r2).await.unwrap()[0];
    assert_eq!(item.state, OutboxState::Parked);
    assert!(item.last_error.as_deref().unwrap().contains("1004: Lead not found"));
    let events = drain(&mut rx);
    assert!(events.iter().any(|e| matches!(e, DeliveryEvent::Parked { error, .. } if error.contains("1004"))));
    // Nothing more is tried.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(d.deliver_once().await.unwrap().marketo.claimed, 0);
    assert_eq!(d.parked(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn rate_limits_back_off_and_park_after_max_attempts() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    m.expect_add_custom_activities().returning(move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
        Err(Error::RateLimited { service: Service::Marketo, retry_after: None })
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let r = d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    let mut delays = Vec::new();
    for _ in 0..4 {
        let before = clock_now(&clock);
        let rep = d.deliver_once().await.unwrap();
        assert_eq!(rep.marketo.claimed, 1);
        let item = d.status(&r).await.unwrap().remove(0);
        if item.state == OutboxState::Pending {
            delays.push((item.next_attempt_at - before).num_seconds());
            // Not due before its time.
            assert_eq!(d.deliver_once().await.unwrap().marketo.claimed, 0);
            clock.set(item.next_attempt_at);
        }
    }
    assert_eq!(delays, vec![10, 20, 40]);
    let item = d.status(&r).await.unwrap().remove(0);
    assert_eq!(item.state, OutboxState::Parked);
    assert!(item.last_error.unwrap().contains("gave up after 4 attempts"));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // An admin retries it.
    assert_eq!(d.retry_parked(&[item.id]).await.unwrap(), 1);
    assert_eq!(d.counts().await.unwrap().pending, 1);
}

fn clock_now(c: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    use salesync_delivery::Clock;
    c.now()
}

fn marketo_activity_found(guid: &str, lead: i64, id: &str, kind: K) -> Activity {
    Activity {
        guid: guid.into(),
        id: None,
        lead_id: lead,
        activity_date: t0(),
        activity_type_id: type_id(kind),
        primary_attribute_value: Some("Intro".into()),
        attributes: vec![
            ("Source".into(), "Sales App".into()),
            ("Salesync Activity ID".into(), serde_json::Value::String(id.into())),
        ],
        changed_fields: vec![],
    }
}

#[tokio::test]
async fn a_lost_response_is_looked_up_and_not_sent_twice() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1), contact(2)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    let sends: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let s2 = sends.clone();
    m.expect_add_custom_activities().returning(move |items| {
        let mut s = s2.lock().unwrap();
        s.push(items.iter().map(|i| i.attributes[0].1.clone()).collect());
        if s.len() == 1 {
            // Marketo wrote both, but the response was lost.
            Err(Error::Transport { service: Service::Marketo, source: "connection reset".into() })
        } else {
            Ok(written(items.len(), "second-"))
        }
    });
    m.expect_paging_token().times(1).returning(|since| {
        assert_eq!(since, t0() - chrono::Duration::hours(1) - chrono::Duration::days(1));
        Ok("tok0".into())
    });
    // Only a1 is found in Marketo (pretend a2 was not written).
    m.expect_activities().times(1).returning(|token, types, leads| {
        assert_eq!(token, "tok0");
        assert_eq!(types, &[type_id(K::SendSalesEmail)]);
        assert_eq!(leads, &[1, 2]);
        Ok(Page::last(vec![marketo_activity_found("guid-a1", 1, "a1", K::SendSalesEmail)], Some("tok1".into())))
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let r1 = d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    let r2 = d.record_activity(activity("a2", 2, K::SendSalesEmail)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.marketo.retried, 2);
    let item = d.status(&r1).await.unwrap().remove(0);
    assert!(item.outcome_unknown, "{:?}", item.last_error);
    clock.set(item.next_attempt_at);
    let rep = d.deliver_once().await.unwrap();
    assert_eq!((rep.marketo.recovered, rep.marketo.delivered), (1, 2));
    assert_eq!(d.status(&r1).await.unwrap()[0].result.as_deref(), Some("guid-a1"));
    assert_eq!(d.status(&r2).await.unwrap()[0].result.as_deref(), Some("second-0"));
    // a1 was sent once, a2 twice (its first send was lost).
    assert_eq!(*sends.lock().unwrap(), vec![vec!["a1".to_string(), "a2".into()], vec!["a2".to_string()]]);
}

#[tokio::test]
async fn an_item_left_by_a_crashed_worker_is_looked_up_before_sending() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    m.expect_add_custom_activities().times(0);
    m.expect_paging_token().returning(|_| Ok("t".into()));
    // An empty page that says more, then the activity.
    let pages = Arc::new(AtomicU32::new(0));
    m.expect_activities().returning(move |_, _, _| {
        if pages.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(Page { items: vec![], next_token: Some("t2".into()), more: true })
        } else {
            Ok(Page::last(vec![marketo_activity_found("guid-x", 1, "a1", K::SendSalesEmail)], None))
        }
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let r = d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    // Another worker claims it and dies.
    let claimed = store.claim(Target::Marketo, 10, "dead", Duration::from_secs(60), t0()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(d.deliver_once().await.unwrap().marketo.claimed, 0);
    clock.advance(Duration::from_secs(61));
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.marketo.recovered, 1);
    assert_eq!(d.status(&r).await.unwrap()[0].result.as_deref(), Some("guid-x"));
}

#[tokio::test]
async fn marketo_quota_pauses_and_auth_failure_stops_until_reconnected() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let reset = t0() + chrono::Duration::hours(6);
    let mut m = marketo_with_types();
    let n = Arc::new(AtomicU32::new(0));
    m.expect_add_custom_activities().returning(move |items| match n.fetch_add(1, Ordering::SeqCst) {
        0 => Err(Error::QuotaExhausted { service: Service::Marketo, resets_at: Some(reset), detail: "607".into() }),
        1 => Err(Error::Unauthenticated { service: Service::Marketo, detail: "601 invalid token".into() }),
        _ => Ok(written(items.len(), "g")),
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let mut rx = d.subscribe();
    let r = d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    d.deliver_once().await.unwrap();
    assert_eq!(d.target_status(Target::Marketo), TargetStatus::Paused { until: reset });
    assert!(
        drain(&mut rx)
            .iter()
            .any(|e| matches!(e, DeliveryEvent::QuotaExhausted { target: Target::Marketo, until } if *until == reset))
    );
    let item = d.status(&r).await.unwrap().remove(0);
    assert_eq!((item.state, item.next_attempt_at), (OutboxState::Pending, reset));
    clock.set(reset);
    d.deliver_once().await.unwrap();
    assert!(matches!(d.target_status(Target::Marketo), TargetStatus::ReconnectRequired { .. }));
    assert!(drain(&mut rx).iter().any(|e| matches!(e, DeliveryEvent::Reconnect { target: Target::Marketo, .. })));
    // Stopped: nothing is claimed, even when due.
    assert_eq!(d.deliver_once().await.unwrap().marketo.claimed, 0);
    assert_eq!(d.status(&r).await.unwrap()[0].state, OutboxState::Pending);
    d.reconnected(Target::Marketo);
    assert_eq!(d.deliver_once().await.unwrap().marketo.delivered, 1);
}

// ---------------------------------------------------------------- Salesforce

type Captured = Arc<Mutex<Vec<TaskWrite>>>;

fn capture_upserts(s: &mut salesync_core::ports::salesforce::MockSalesforceApi) -> Captured {
    let seen: Captured = Arc::default();
    let seen2 = seen.clone();
    s.expect_upsert_tasks().returning(move |tasks| {
        seen2.lock().unwrap().extend_from_slice(tasks);
        Ok(tasks
            .iter()
            .enumerate()
            .map(|(i, _)| RecordOutcome::Written { id: format!("00T5g00000AbC{i:02}") })
            .collect())
    });
    seen
}

#[tokio::test]
async fn salesforce_tasks_go_to_the_stored_contact() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let mut s = salesforce_basic();
    let seen = capture_upserts(&mut s);
    let d = dispatcher(marketo_accepting(), s, &store, &clock);
    let r = d.record_activity(activity("e1", 1, K::SendSalesEmail)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.salesforce.delivered, 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].external_id, "e1");
    assert_eq!(seen[0].who_id, Some(sfid(CONTACT)));
    assert_eq!(seen[0].what_id, Some(sfid(ACCOUNT)));
    assert_eq!(seen[0].task_type.as_deref(), Some("Email"));
    assert!(d.status(&r).await.unwrap().iter().all(|i| i.state == OutboxState::Delivered));
}

#[tokio::test]
async fn emails_without_a_stored_id_are_matched_by_email_and_calls_are_skipped() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![no_sf(1), no_sf(2)]).await;
    let mut s = salesforce_basic();
    s.expect_find_by_email().returning(|email| {
        if email == "p1@example.com" {
            Ok(vec![
                PersonRef { id: sfid(LEAD), converted_contact_id: None, account_id: None },
                PersonRef { id: sfid(CONTACT), converted_contact_id: None, account_id: Some(sfid(ACCOUNT)) },
            ])
        } else {
            Ok(vec![])
        }
    });
    let seen = capture_upserts(&mut s);
    let d = dispatcher(marketo_accepting(), s, &store, &clock);
    let e1 = d.record_activity(activity("e1", 1, K::SendSalesEmail)).await.unwrap();
    let e2 = d.record_activity(activity("e2", 2, K::RepliedSalesEmail)).await.unwrap();
    let c1 = d.record_activity(activity("c1", 1, K::SalesCall)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!((rep.salesforce.delivered, rep.salesforce.skipped), (1, 2));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].who_id, Some(sfid(CONTACT)));
    assert_eq!(seen[0].what_id, Some(sfid(ACCOUNT)));
    let sf = |v: Vec<salesync_core::ports::store::OutboxItem>| {
        v.into_iter().find(|i| i.target == Target::Salesforce).unwrap()
    };
    assert_eq!(sf(d.status(&e1).await.unwrap()).state, OutboxState::Delivered);
    let e2 = sf(d.status(&e2).await.unwrap());
    assert_eq!((e2.state, e2.result.as_deref()), (OutboxState::Skipped, Some("no Salesforce record with this email")));
    let c1 = sf(d.status(&c1).await.unwrap());
    assert_eq!(c1.state, OutboxState::Skipped);
    assert!(c1.result.unwrap().contains("calls are logged only for people with a Salesforce id"));
}

#[tokio::test]
async fn a_converted_lead_is_never_written_its_contact_is() {
    let clock = ManualClock::new(t0());
    let other_lead = "00Q5g00000QwErU";
    let mut unconverted = lead(2);
    unconverted.salesforce_lead_id = Some(sfid(other_lead));
    let store = store_with(vec![lead(1), unconverted]).await;
    let mut s = salesforce_basic();
    s.expect_lead_conversions().times(1).returning(move |ids| {
        assert_eq!(ids.len(), 2);
        Ok(vec![
            LeadConversion {
                lead_id: sfid(LEAD),
                converted: true,
                contact_id: Some(sfid(CONTACT)),
                account_id: Some(sfid(ACCOUNT)),
                opportunity_id: None,
            },
            LeadConversion {
                lead_id: sfid(other_lead),
                converted: false,
                contact_id: None,
                account_id: None,
                opportunity_id: None,
            },
        ])
    });
    let seen = capture_upserts(&mut s);
    let d = dispatcher(marketo_accepting(), s, &store, &clock);
    d.record_activity(activity("c1", 1, K::SalesCall)).await.unwrap();
    d.record_activity(activity("c2", 2, K::SalesCall)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.salesforce.delivered, 2);
    let seen = seen.lock().unwrap().clone();
    let c1 = seen.iter().find(|t| t.external_id == "c1").unwrap();
    assert_eq!(c1.who_id, Some(sfid(CONTACT)));
    assert_eq!(c1.what_id, Some(sfid(ACCOUNT)));
    let c2 = seen.iter().find(|t| t.external_id == "c2").unwrap();
    assert_eq!(c2.who_id, Some(sfid(other_lead)));
    assert_eq!(c2.what_id, None);
}

#[tokio::test]
async fn salesforce_failures_are_retried_parked_or_stop_for_reconnect() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let mut s = salesforce_basic();
    let n = Arc::new(AtomicU32::new(0));
    s.expect_upsert_tasks().returning(move |tasks| match n.fetch_add(1, Ordering::SeqCst) {
        0 => Ok(vec![
            RecordOutcome::Rejected { code: "UNABLE_TO_LOCK_ROW".into(), message: "unable to obtain lock".into() },
            RecordOutcome::Rejected {
                code: "REQUIRED_FIELD_MISSING".into(),
                message: "Required fields are missing: [Region__c]".into(),
            },
            RecordOutcome::Written { id: "00T5g00000AbC01".into() },
        ]),
        1 => Err(Error::Unauthenticated { service: Service::Salesforce, detail: "invalid_grant: expired".into() }),
        _ => Ok(written(tasks.len(), "00T5g00000AbC1")),
    });
    let d = dispatcher(marketo_accepting(), s, &store, &clock);
    let mut rx = d.subscribe();
    let a = d.record_activity(activity("e1", 1, K::SendSalesEmail)).await.unwrap();
    let b = d.record_activity(activity("e2", 1, K::SendSalesEmail)).await.unwrap();
    d.record_activity(activity("e3", 1, K::SendSalesEmail)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!((rep.salesforce.retried, rep.salesforce.parked, rep.salesforce.delivered), (1, 1, 1));
    let sf = |v: Vec<salesync_core::ports::store::OutboxItem>| {
        v.into_iter().find(|i| i.target == Target::Salesforce).unwrap()
    };
    let parked = sf(d.status(&b).await.unwrap());
    assert_eq!(parked.state, OutboxState::Parked);
    assert!(
        parked
            .last_error
            .as_deref()
            .unwrap()
            .contains("[access/validation] REQUIRED_FIELD_MISSING: Required fields are missing: [Region__c]"),
        "{:?}",
        parked.last_error
    );
    let retrying = sf(d.status(&a).await.unwrap());
    assert_eq!(retrying.state, OutboxState::Pending);
    assert!(retrying.last_error.unwrap().contains("UNABLE_TO_LOCK_ROW"));

    // The retry meets an expired session: stop and ask for a reconnect.
    clock.set(retrying.next_attempt_at);
    d.deliver_once().await.unwrap();
    assert!(matches!(d.target_status(Target::Salesforce), TargetStatus::ReconnectRequired { .. }));
    assert!(drain(&mut rx).iter().any(|e| matches!(e, DeliveryEvent::Reconnect { target: Target::Salesforce, .. })));
    assert_eq!(sf(d.status(&a).await.unwrap()).state, OutboxState::Pending);
    assert_eq!(d.deliver_once().await.unwrap().salesforce.claimed, 0);

    // Reconnected, and the admin retries the parked one.
    d.reconnected(Target::Salesforce);
    d.retry_parked(&[parked.id]).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.salesforce.delivered, 2);
    assert_eq!(d.counts().await.unwrap().parked, 0);
}

#[tokio::test]
async fn salesforce_pauses_before_the_daily_limit() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let mut s = salesync_core::ports::salesforce::MockSalesforceApi::new();
    s.expect_api_usage().returning(|| Some(ApiUsage { used: 14_800, max: 15_000 }));
    s.expect_upsert_tasks().times(0);
    let d = dispatcher(marketo_accepting(), s, &store, &clock);
    let mut rx = d.subscribe();
    d.record_activity(activity("e1", 1, K::SendSalesEmail)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.salesforce.claimed, 0);
    assert!(matches!(rep.salesforce.status, TargetStatus::Paused { .. }));
    assert!(
        drain(&mut rx).iter().any(|e| matches!(e, DeliveryEvent::QuotaExhausted { target: Target::Salesforce, .. }))
    );
    assert_eq!(d.counts().await.unwrap().pending, 1);
}

// ---------------------------------------------------------------- unsubscribes

#[tokio::test]
async fn unsubscribes_are_pushed_to_salesforce_only() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1), no_sf(2)]).await;
    set_settings(&store, |s| {
        s.salesforce_opt_out_field = "MSE_Opt_Out__c".into();
        s.log_emails_to_salesforce = false;
    })
    .await;
    let mut s = salesforce_basic();
    s.expect_set_opted_out().times(1).returning(|ids, field| {
        assert_eq!(ids, &[sfid(CONTACT)]);
        assert_eq!(field, "MSE_Opt_Out__c");
        Ok(vec![RecordOutcome::Written { id: CONTACT.into() }])
    });
    // Marketo is provisioned but never written for unsubscribes.
    let m = marketo_with_types();
    let d = dispatcher(m, s, &store, &clock);
    let r1 = d.record_unsubscribe(1).await.unwrap();
    let r2 = d.record_unsubscribe(2).await.unwrap();
    assert!(r1.id.starts_with("unsub:1:"));
    assert_eq!(unsubscribe(&store, 1).await.origin, UnsubscribeOrigin::Salesync);
    assert!(items(&store).await.iter().all(|i| i.target == Target::Salesforce));
    let rep = d.deliver_once().await.unwrap();
    assert_eq!((rep.salesforce.delivered, rep.salesforce.skipped), (1, 1));
    assert_eq!(d.status(&r2).await.unwrap()[0].result.as_deref(), Some("the person has no Salesforce id"));
    assert_eq!(
        d.check_can_email(1).await.unwrap(),
        CanEmail::Unsubscribed { origin: UnsubscribeOrigin::Salesync, at: t0() }
    );
}

#[tokio::test]
async fn opt_out_reconcile_only_unsubscribes_and_runs_daily() {
    let clock = ManualClock::new(t0());
    let mut other = lead(2);
    other.salesforce_lead_id = Some(sfid("00Q5g00000QwErU"));
    let store = store_with(vec![contact(1), other, contact(3)]).await;
    // Person 3 shares the contact id of person 1 (a Marketo duplicate); person 2 is subscribed.
    let mut s = salesforce_basic();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    s.expect_opted_out_since().returning(move |field, since, token| {
        assert_eq!(field, "HasOptedOutOfEmail");
        match c2.fetch_add(1, Ordering::SeqCst) {
            0 => {
                assert!(since < t0() - chrono::Duration::days(365));
                assert!(token.is_none());
                Ok(Page {
                    items: vec![OptOutRecord {
                        id: sfid(CONTACT),
                        email: None,
                        opted_out: true,
                        modified_at: t0() - chrono::Duration::hours(2),
                    }],
                    next_token: Some("p2".into()),
                    more: true,
                })
            }
            1 => {
                assert_eq!(token.as_deref(), Some("p2"));
                Ok(Page::last(
                    vec![OptOutRecord {
                        id: sfid("00Q5g00000QwErU"),
                        email: None,
                        opted_out: false, // a re-subscribe: never propagated
                        modified_at: t0() - chrono::Duration::hours(1),
                    }],
                    None,
                ))
            }
            _ => {
                assert_eq!(since, t0() - chrono::Duration::hours(1) - chrono::Duration::seconds(1));
                Ok(Page::last(vec![], None))
            }
        }
    });
    let d = salesync_delivery::Dispatcher::builder()
        .marketo(Arc::new(marketo_with_types()))
        .salesforce(Arc::new(s))
        .store(store.clone())
        .settings(salesync_delivery::DeliverySettings { opt_out_reconcile: true, ..settings(&clock) })
        .build()
        .unwrap();
    // Person 2 had unsubscribed in salesync: the cleared box in Salesforce does not undo it.
    put_unsubscribe(
        &store,
        salesync_core::activity::UnsubscribeState {
            marketo_id: 2,
            unsubscribed: true,
            origin: UnsubscribeOrigin::Salesync,
            at: t0(),
        },
    )
    .await;
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.opt_outs.as_ref().unwrap().applied, 2);
    assert_eq!(unsubscribe(&store, 1).await.origin, UnsubscribeOrigin::Salesforce);
    assert!(unsubscribe(&store, 3).await.unsubscribed);
    assert!(unsubscribe(&store, 2).await.unsubscribed);
    assert_eq!(unsubscribe(&store, 2).await.origin, UnsubscribeOrigin::Salesync);
    // Not due again within the day.
    clock.advance(Duration::from_secs(3600));
    assert!(d.deliver_once().await.unwrap().opt_outs.is_none());
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(d.deliver_once().await.unwrap().opt_outs.unwrap().read, 0);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Nothing went to Marketo or the outbox.
    assert!(items(&store).await.is_empty());
}

#[tokio::test]
async fn can_email_honours_salesync_and_optionally_marketo() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1), contact(2)]).await;
    let mut m = MockMarketoApi::new();
    m.expect_lead_unsubscribed().times(2).returning(|id| Ok(Some(id == 2)));
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    // Check off: Marketo is not asked.
    assert!(d.check_can_email(2).await.unwrap().is_allowed());
    set_settings(&store, |s| s.marketo_unsubscribe_check = true).await;
    assert_eq!(d.check_can_email(1).await.unwrap(), CanEmail::Allowed);
    assert_eq!(d.check_can_email(2).await.unwrap(), CanEmail::UnsubscribedInMarketo);
    assert!(matches!(d.check_can_email(42).await, Err(Error::NotFound { .. })));
}

// ---------------------------------------------------------------- reminders

fn new_reminder(marketo_id: i64) -> NewReminder {
    NewReminder {
        id: Some("rem1".into()),
        marketo_id,
        subject: "Call back".into(),
        priority: ReminderPriority::High,
        due_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1),
        details: Some("ask about pricing".into()),
    }
}

#[tokio::test]
async fn reminders_are_stored_but_not_pushed_while_sync_is_off() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    let d = dispatcher(MockMarketoApi::new(), salesforce_basic(), &store, &clock);
    let r = d.create_reminder(new_reminder(1)).await.unwrap();
    assert!(r.outbox_ids.is_empty());
    assert_eq!(d.reminder("rem1").await.unwrap().unwrap().status, ReminderStatus::Open);
    let mut bad = new_reminder(1);
    bad.subject = " ".into();
    assert!(matches!(d.create_reminder(bad).await, Err(Error::InvalidInput { .. })));
    assert!(matches!(d.create_reminder(new_reminder(1)).await, Err(Error::Conflict { .. })));
    assert!(matches!(d.edit_reminder("nope", ReminderChanges::default()).await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn reminder_changes_propagate_create_edit_complete_delete() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.reminder_task_sync = true).await;
    let task_id = "00T5g00000TaSk1";
    let mut s = salesforce_basic();
    let seen = Arc::new(Mutex::new(Vec::<TaskWrite>::new()));
    let seen2 = seen.clone();
    s.expect_upsert_tasks().times(1).returning(move |tasks| {
        seen2.lock().unwrap().extend_from_slice(tasks);
        Ok(vec![RecordOutcome::Written { id: task_id.into() }])
    });
    let updates = Arc::new(Mutex::new(Vec::new()));
    let u2 = updates.clone();
    s.expect_update_tasks().returning(move |ups| {
        u2.lock().unwrap().extend_from_slice(ups);
        Ok(written(ups.len(), task_id))
    });
    s.expect_delete_task().times(1).returning(move |id| {
        assert_eq!(id, &sfid(task_id));
        Ok(())
    });
    // The reminder poll runs each round while sync is on: nothing new in Salesforce.
    s.expect_tasks_modified_since().returning(|_, _| Ok(Page::last(vec![], None)));
    s.expect_tasks_deleted_between()
        .returning(|_, end| Ok(DeletedSince { records: vec![], earliest_available: None, latest_covered: Some(end) }));
    let d = dispatcher(marketo_with_types(), s, &store, &clock);
    let created = d.create_reminder(new_reminder(1)).await.unwrap();
    assert_eq!(created.outbox_ids.len(), 1);
    d.deliver_once().await.unwrap();
    {
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].external_id, "rem1");
        assert_eq!(seen[0].status, "Not Started");
        assert_eq!(seen[0].priority, "High");
        assert_eq!(seen[0].task_subtype.as_deref(), Some("Task"));
        assert_eq!(seen[0].task_type, None);
        assert_eq!(seen[0].subject, "[Sales Insight Actions] - Custom: Call back");
    }
    assert_eq!(d.reminder("rem1").await.unwrap().unwrap().salesforce_task_id, Some(sfid(task_id)));

    clock.advance(Duration::from_secs(1));
    d.edit_reminder("rem1", ReminderChanges { details: Some(None), ..Default::default() }).await.unwrap();
    d.complete_reminder("rem1").await.unwrap();
    d.deliver_once().await.unwrap();
    {
        let ups = updates.lock().unwrap();
        // The edit is superseded by the completion; only the latest state is written.
        assert_eq!(ups.len(), 1);
        let fields = &ups[0].1;
        assert!(fields.contains(&("Status".into(), "Completed".into())));
        assert!(fields.contains(&("Description".into(), serde_json::Value::Null)));
    }
    d.reopen_reminder("rem1").await.unwrap();
    d.delete_reminder("rem1").await.unwrap();
    d.deliver_once().await.unwrap();
    assert!(d.reminder("rem1").await.unwrap().unwrap().deleted);
    assert!(matches!(d.complete_reminder("rem1").await, Err(Error::InvalidInput { .. })));
    let c = d.counts().await.unwrap();
    assert_eq!((c.delivered, c.skipped, c.pending), (3, 2, 0));
}

fn sf_task(id: &str, who: &str, status: &str, modified: chrono::DateTime<chrono::Utc>) -> TaskRecord {
    TaskRecord {
        id: sfid(id),
        external_id: None,
        who_id: Some(sfid(who)),
        subject: Some("From Salesforce".into()),
        status: Some(status.into()),
        priority: Some("Normal".into()),
        activity_date: None,
        description: Some("sf details".into()),
        task_subtype: Some("Task".into()),
        created_at: modified,
        modified_at: modified,
        deleted: false,
    }
}

#[tokio::test]
async fn reminder_sync_imports_merges_by_latest_change_and_follows_deletions() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.reminder_task_sync = true).await;
    // A salesync reminder already synced, last changed locally at t0 - 30 min.
    let local_task = "00T5g00000TaSk1";
    store
        .put_reminder(salesync_core::activity::ReminderTask {
            id: "rem1".into(),
            marketo_id: 1,
            subject: "Call back".into(),
            status: ReminderStatus::Open,
            priority: ReminderPriority::High,
            due_date: None,
            details: None,
            salesforce_task_id: Some(sfid(local_task)),
            deleted: false,
            updated_at: t0() - chrono::Duration::minutes(30),
        })
        .await
        .unwrap();
    let polls = Arc::new(AtomicU32::new(0));
    let p2 = polls.clone();
    let mut s = salesforce_basic();
    s.expect_tasks_modified_since().returning(move |since, _| {
        match p2.fetch_add(1, Ordering::SeqCst) {
            0 => {
                // First enable: the last 24 hours.
                assert_eq!(since, t0() - chrono::Duration::hours(24) - chrono::Duration::seconds(1));
                let mut completed = sf_task(local_task, CONTACT, "Completed", t0() - chrono::Duration::minutes(10));
                completed.external_id = Some("rem1".into());
                let mut activity_task = sf_task("00T5g00000TaSk3", CONTACT, "Completed", t0());
                activity_task.task_subtype = Some("Email".into());
                activity_task.external_id = Some("e1".into());
                Ok(Page::last(
                    vec![
                        completed,
                        sf_task("00T5g00000TaSk2", CONTACT, "Not Started", t0() - chrono::Duration::hours(3)),
                        sf_task("00T5g00000TaSk4", CONTACT, "In Progress", t0() - chrono::Duration::hours(3)),
                        sf_task("00T5g00000TaSk5", "0035g00000ZzZzZ", "Not Started", t0()),
                        activity_task,
                    ],
                    None,
                ))
            }
            _ => {
                // Next poll starts at the high-water mark.
                assert_eq!(since, t0() - chrono::Duration::seconds(1));
                // An older Salesforce edit loses to the newer local state.
                let stale = sf_task(local_task, CONTACT, "Not Started", t0() - chrono::Duration::minutes(20));
                Ok(Page::last(vec![stale], None))
            }
        }
    });
    let deletes = Arc::new(AtomicU32::new(0));
    let d2 = deletes.clone();
    s.expect_tasks_deleted_between().returning(move |start, end| {
        let n = d2.fetch_add(1, Ordering::SeqCst);
        let records = if n == 1 {
            assert_eq!(start, t0());
            vec![DeletedRecord { id: sfid("00T5g00000TaSk2"), deleted_at: end - chrono::Duration::seconds(5) }]
        } else {
            vec![]
        };
        Ok(DeletedSince { records, earliest_available: None, latest_covered: Some(end) })
    });
    let d = dispatcher(marketo_with_types(), s, &store, &clock);
    let rep = d.deliver_once().await.unwrap();
    let r = rep.reminders.unwrap();
    assert_eq!((r.read, r.applied), (5, 2));
    {
        // Salesforce was newer: completed, details from Salesforce, subject kept.
        let rem1 = &reminder(&store, "rem1").await;
        assert_eq!(rem1.status, ReminderStatus::Complete);
        assert_eq!(rem1.details.as_deref(), Some("sf details"));
        assert_eq!(rem1.subject, "Call back");
        assert_eq!(rem1.priority, ReminderPriority::Normal);
        // Imported: the Not Started Task on a mirror person; not In Progress, not the unknown
        // person's, not salesync's own email Task.
        let imported = &reminder(&store, &format!("sf-{}", sfid("00T5g00000TaSk2"))).await;
        assert_eq!(imported.status, ReminderStatus::Open);
        // Nothing else: the mirror's one person has the two reminders, and the unknown person's
        // Task is stored for nobody.
        assert_eq!(reminders(&store).await.len(), 2);
        assert!(store.reminder_by_salesforce_id(&sfid("00T5g00000TaSk5")).await.unwrap().is_none());
    }
    // Within the poll interval, no poll.
    clock.advance(Duration::from_secs(10));
    assert!(d.deliver_once().await.unwrap().reminders.is_none());
    clock.advance(Duration::from_secs(60));
    let rep = d.deliver_once().await.unwrap();
    assert_eq!(rep.reminders.unwrap().applied, 1);
    assert_eq!(reminder(&store, "rem1").await.status, ReminderStatus::Complete);
    assert!(reminder(&store, &format!("sf-{}", sfid("00T5g00000TaSk2"))).await.deleted);
    // Nothing was pushed back.
    assert!(items(&store).await.is_empty());
}

/// Found by the soak run: the host completes a reminder while salesync's write of its earlier
/// state is still on its way; that write lands later, so Salesforce stamps it after the host's
/// completion. The poll must not take salesync's own echo for a newer Salesforce edit (which
/// would revert the completion and then skip it as superseded): the pending completion wins and
/// is written.
#[tokio::test]
async fn the_echo_of_salesyncs_own_write_does_not_revert_a_pending_host_change() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.reminder_task_sync = true).await;
    let task_id = "00T5g00000TaSk1";
    let completed = salesync_core::activity::ReminderTask {
        id: "rem1".into(),
        marketo_id: 1,
        subject: "Call back".into(),
        status: ReminderStatus::Complete,
        priority: ReminderPriority::High,
        due_date: None,
        details: None,
        salesforce_task_id: Some(sfid(task_id)),
        deleted: false,
        updated_at: t0() - chrono::Duration::minutes(5),
    };
    store.put_reminder(completed.clone()).await.unwrap();
    // The completion waits in the outbox (its first attempt failed; next try in 10 min).
    let recorded = t0() - chrono::Duration::minutes(5);
    let ids = store
        .record(Recording {
            outbox: vec![NewOutboxItem {
                key: "rem1:2".into(),
                target: Target::Salesforce,
                payload: OutboxPayload::Reminder { task: completed },
                not_before: recorded,
            }],
            ..Recording::default()
        })
        .await
        .unwrap();
    let claimed = store.claim(Target::Salesforce, 1, "w0", Duration::from_secs(60), recorded).await.unwrap();
    assert_eq!(claimed.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    let retry = Outcome::Retry {
        at: t0() + chrono::Duration::minutes(10),
        error: "UNABLE_TO_LOCK_ROW".into(),
        outcome_unknown: false,
    };
    store.finish(vec![Finished { id: ids[0], worker: "w0".into(), outcome: retry }], recorded).await.unwrap();
    let seeded = store.outbox_item(ids[0]).await.unwrap().unwrap();
    assert_eq!((seeded.state, seeded.attempts), (OutboxState::Pending, 1));
    let polls = Arc::new(AtomicU32::new(0));
    let p2 = polls.clone();
    let mut s = salesforce_basic();
    s.expect_tasks_modified_since().returning(move |_, _| {
        let mut task = match p2.fetch_add(1, Ordering::SeqCst) {
            // The echo of the earlier (open) state, stamped after the host's completion.
            0 => sf_task(task_id, CONTACT, "Not Started", t0() - chrono::Duration::minutes(1)),
            // Later: the completion salesync wrote.
            _ => sf_task(task_id, CONTACT, "Completed", t0() + chrono::Duration::minutes(10)),
        };
        task.external_id = Some("rem1".into());
        task.priority = Some("High".into());
        task.description = None;
        Ok(Page::last(vec![task], None))
    });
    s.expect_tasks_deleted_between()
        .returning(|_, end| Ok(DeletedSince { records: vec![], earliest_available: None, latest_covered: Some(end) }));
    let updates = Arc::new(Mutex::new(Vec::new()));
    let u2 = updates.clone();
    s.expect_update_tasks().returning(move |ups| {
        u2.lock().unwrap().extend_from_slice(ups);
        Ok(written(ups.len(), task_id))
    });
    let d = dispatcher(marketo_with_types(), s, &store, &clock);

    d.deliver_once().await.unwrap();
    assert_eq!(polls.load(Ordering::SeqCst), 1, "the poll ran");
    let rem = d.reminder("rem1").await.unwrap().unwrap();
    assert_eq!(rem.status, ReminderStatus::Complete, "the echo did not revert the pending completion");
    assert!(updates.lock().unwrap().is_empty(), "the completion is still waiting for its retry");

    clock.advance(Duration::from_secs(11 * 60));
    d.deliver_once().await.unwrap();
    let ups = updates.lock().unwrap().clone();
    assert_eq!(ups.len(), 1, "the completion is written, not skipped as superseded");
    assert!(ups[0].1.contains(&("Status".into(), "Completed".into())), "{:?}", ups[0]);
    assert_eq!(d.reminder("rem1").await.unwrap().unwrap().status, ReminderStatus::Complete);
    let c = d.counts().await.unwrap();
    assert_eq!((c.delivered, c.skipped, c.pending), (1, 0, 0));
}

/// A reminder's create reached Salesforce but its answer was lost; the host deleted the reminder
/// before the retry, so the deletion was skipped as "never reached Salesforce". When the poll
/// then sees the Task alive, salesync deletes it.
#[tokio::test]
async fn a_deleted_reminders_surviving_task_is_deleted_when_the_poll_finds_it() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.reminder_task_sync = true).await;
    let task_id = "00T5g00000TaSk1";
    store
        .put_reminder(salesync_core::activity::ReminderTask {
            id: "rem1".into(),
            marketo_id: 1,
            subject: "Call back".into(),
            status: ReminderStatus::Open,
            priority: ReminderPriority::High,
            due_date: None,
            details: None,
            salesforce_task_id: None,
            deleted: true,
            updated_at: t0() - chrono::Duration::minutes(5),
        })
        .await
        .unwrap();
    let mut s = salesforce_basic();
    s.expect_tasks_modified_since().returning(move |_, _| {
        let mut task = sf_task(task_id, CONTACT, "Not Started", t0() - chrono::Duration::minutes(10));
        task.external_id = Some("rem1".into());
        Ok(Page::last(vec![task], None))
    });
    s.expect_tasks_deleted_between()
        .returning(|_, end| Ok(DeletedSince { records: vec![], earliest_available: None, latest_covered: Some(end) }));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let d2 = deleted.clone();
    s.expect_delete_task().returning(move |id| {
        d2.lock().unwrap().push(id.clone());
        Ok(())
    });
    let d = dispatcher(marketo_with_types(), s, &store, &clock);
    d.deliver_once().await.unwrap();
    let rem = d.reminder("rem1").await.unwrap().unwrap();
    assert!(rem.deleted, "still deleted");
    assert_eq!(rem.salesforce_task_id, Some(sfid(task_id)), "the poll learnt the Task id");
    assert!(deleted.lock().unwrap().is_empty(), "the deletion goes through the outbox");
    d.deliver_once().await.unwrap();
    assert_eq!(*deleted.lock().unwrap(), vec![sfid(task_id)], "the surviving Task is deleted once");
    // The next poll reads the same Task again (overlap): no second deletion is enqueued.
    clock.advance(Duration::from_secs(120));
    d.deliver_once().await.unwrap();
    d.deliver_once().await.unwrap();
    assert_eq!(deleted.lock().unwrap().len(), 1);
    let c = d.counts().await.unwrap();
    assert_eq!((c.delivered, c.pending), (1, 0));
}

#[tokio::test]
async fn run_delivers_soon_after_recording_and_stops_on_cancel() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let d = dispatcher(marketo_accepting(), salesforce_basic(), &store, &clock);
    let mut rx = d.subscribe();
    let cancel = tokio_util::sync::CancellationToken::new();
    let runner = tokio::spawn({
        let d = d.clone();
        let cancel = cancel.clone();
        async move { d.run(cancel).await }
    });
    d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(matches!(ev, DeliveryEvent::Delivered { target: Target::Marketo, .. }));
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), runner).await.unwrap().unwrap();
}

#[test]
fn builder_requires_ports_and_sane_batches() {
    let err = salesync_delivery::Dispatcher::builder().build().unwrap_err();
    assert!(matches!(err, Error::Config { ref key, .. } if key == "marketo"));
    let err = salesync_delivery::Dispatcher::builder()
        .marketo(Arc::new(MockMarketoApi::new()))
        .salesforce(Arc::new(salesforce_basic()))
        .store(empty_store())
        .settings(salesync_delivery::DeliverySettings { marketo_batch: 301, ..Default::default() })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { ref key, .. } if key == "marketo_batch"));
    let _ = SalesforceId::parse(CONTACT).unwrap();
    let _ = OutboxPayload::Unsubscribe { marketo_id: 1 };
}

#[test]
fn dispatcher_is_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<salesync_delivery::Dispatcher>();
    check::<salesync_delivery::DeliverySettings>();
}

#[tokio::test]
async fn other_marketo_rejections_park_with_the_raw_code() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    m.expect_add_custom_activities().times(1).returning(|_| {
        Ok(vec![RecordOutcome::Rejected { code: "1049".into(), message: "Attribute array too large".into() }])
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let r = d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    d.deliver_once().await.unwrap();
    let item = d.status(&r).await.unwrap().remove(0);
    assert_eq!(item.state, OutboxState::Parked);
    assert_eq!(item.last_error.as_deref(), Some("[attempt 1] 1049: Attribute array too large"));
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_item_unknown_until_it_succeeds() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = marketo_with_types();
    let sends = Arc::new(AtomicU32::new(0));
    let s2 = sends.clone();
    m.expect_add_custom_activities().returning(move |items| {
        if s2.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(Error::Unavailable {
                service: Service::Marketo,
                code: "604".into(),
                message: "Request timed out".into(),
                persistent: true,
            })
        } else {
            Ok(written(items.len(), "g"))
        }
    });
    m.expect_paging_token().returning(|_| Ok("t".into()));
    let lookups = Arc::new(AtomicU32::new(0));
    let l2 = lookups.clone();
    m.expect_activities().returning(move |_, _, _| {
        if l2.fetch_add(1, Ordering::SeqCst) == 0 {
            // A rate limit on the lookup says nothing about the write.
            Err(Error::RateLimited { service: Service::Marketo, retry_after: Some(Duration::from_secs(20)) })
        } else {
            Ok(Page::last(vec![], None))
        }
    });
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    let r = d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    d.deliver_once().await.unwrap(); // send: timeout
    let item = d.status(&r).await.unwrap().remove(0);
    clock.set(item.next_attempt_at);
    d.deliver_once().await.unwrap(); // lookup: rate limited
    let item = d.status(&r).await.unwrap().remove(0);
    assert_eq!(item.state, OutboxState::Pending);
    assert!(item.outcome_unknown, "{:?}", item.last_error);
    assert_eq!(sends.load(Ordering::SeqCst), 1);
    clock.set(item.next_attempt_at);
    let rep = d.deliver_once().await.unwrap(); // lookup: not there → send
    assert_eq!(rep.marketo.delivered, 1);
    assert_eq!(sends.load(Ordering::SeqCst), 2);
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_dispatchers_on_one_store_deliver_each_item_once() {
    let clock = ManualClock::new(t0());
    let store = store_with((1..=50).map(contact).collect()).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut dispatchers = Vec::new();
    for w in 0..4 {
        let mut m = marketo_with_types();
        let sent = sent.clone();
        m.expect_add_custom_activities().returning(move |items| {
            sent.lock().unwrap().extend(items.iter().map(|i| i.attributes[0].1.clone()));
            Ok(written(items.len(), "g"))
        });
        let d = salesync_delivery::Dispatcher::builder()
            .marketo(Arc::new(m))
            .salesforce(Arc::new(salesforce_basic()))
            .store(store.clone())
            .settings(salesync_delivery::DeliverySettings {
                worker_id: format!("w{w}"),
                marketo_batch: 7,
                ..settings(&clock)
            })
            .build()
            .unwrap();
        dispatchers.push(d);
    }
    for i in 1..=50 {
        dispatchers[0].record_activity(activity(&format!("a{i}"), i, K::SendSalesEmail)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for d in dispatchers.clone() {
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                d.deliver_once().await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut sent = sent.lock().unwrap().clone();
    sent.sort();
    let before = sent.len();
    sent.dedup();
    assert_eq!((before, sent.len()), (50, 50));
    assert_eq!(dispatchers[1].counts().await.unwrap().delivered, 50);
}

#[tokio::test]
async fn a_failing_provisioning_is_reported_and_not_retried_every_round() {
    let clock = ManualClock::new(t0());
    let store = store_with(vec![contact(1)]).await;
    set_settings(&store, |s| s.log_emails_to_salesforce = false).await;
    let mut m = MockMarketoApi::new();
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    m.expect_ensure_custom_activity_types().returning(move |defs| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(Error::AccessDenied {
                service: Service::Marketo,
                code: "603".into(),
                message: "Access denied: Read-Write Activity Metadata".into(),
            })
        } else {
            Ok(defs
                .iter()
                .enumerate()
                .map(|(i, d)| salesync_core::ports::marketo::ProvisionedType {
                    api_name: d.api_name.clone(),
                    id: 100_001 + i as i64,
                    created: false,
                })
                .collect())
        }
    });
    m.expect_add_custom_activities().times(1).returning(|items| Ok(written(items.len(), "g")));
    let d = dispatcher(m, salesforce_basic(), &store, &clock);
    d.record_activity(activity("a1", 1, K::SendSalesEmail)).await.unwrap();
    let rep = d.deliver_once().await.unwrap();
    assert!(rep.errors.iter().any(|e| e.contains("603")), "{:?}", rep.errors);
    assert_eq!(rep.marketo.claimed, 0);
    assert_eq!(d.deliver_once().await.unwrap().marketo.claimed, 0);
    assert_eq!(n.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(d.deliver_once().await.unwrap().marketo.delivered, 1);
    // Cached from then on.
    d.deliver_once().await.unwrap();
    assert_eq!(n.load(Ordering::SeqCst), 2);
}
