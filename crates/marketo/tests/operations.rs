//! Every operation of the connector against the in-process Marketo emulator over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta};
use futures::TryStreamExt;
use salesync_core::mapping::{LeadRecord, requested_fields};
use salesync_core::ports::marketo::{
    CustomActivityTypeDef, ExportFilter, ExportState, MarketoApi, NewCustomActivity, RecordOutcome,
};
use salesync_emulator::seed;
use salesync_marketo::bulk_csv_leads;
use serde_json::{Map, Value, json};

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn fields_of(c: &salesync_marketo::MarketoClient) -> Vec<String> {
    let schema = c.lead_schema().await.unwrap();
    requested_fields(|f| schema.has(f)).into_iter().map(String::from).collect()
}

#[tokio::test]
async fn schema_and_lead_reads() {
    let emu = common::start(common::manual_config()).await;
    let world = seed::generate(60, 7);
    emu.seed_world(&world);
    let c = common::client(&emu);

    let schema = c.lead_schema().await.unwrap();
    for f in ["id", "email", "firstName", "sfdcLeadOwnerId", "sfdcType"] {
        assert!(schema.has(f), "describe2 lacks {f}");
    }
    assert!(schema.searchable.iter().any(|s| s == "id"));
    assert!(schema.searchable.iter().any(|s| s == "email"));
    let fields = fields_of(&c).await;

    // By ids: every requested id comes back, mapped through the core table.
    let ids: Vec<i64> = world.people.iter().take(25).map(|p| p.marketo_id).collect();
    let recs = c.leads_by_ids(&ids, &fields).await.unwrap();
    let got: HashSet<i64> = recs.iter().map(|r| r.0.as_ref().unwrap().id).collect();
    assert_eq!(got, ids.iter().copied().collect::<HashSet<_>>());
    let p = &world.people[0];
    let lead = recs.iter().map(|r| r.0.as_ref().unwrap()).find(|l| l.id == p.marketo_id).unwrap();
    assert_eq!(lead.first_name, p.first_name);
    assert_eq!(lead.email, p.email);
    assert!(c.leads_by_ids(&[], &fields).await.unwrap().is_empty());
    let too_many: Vec<i64> = (1..=301).collect();
    assert!(matches!(c.leads_by_ids(&too_many, &fields).await, Err(salesync_core::Error::InvalidInput { .. })));

    // By filter, through the stream with small pages: the owner's people, all of them.
    let owner = world.people.iter().find_map(|p| p.owner_id.clone()).unwrap();
    let expect: HashSet<i64> =
        world.people.iter().filter(|p| p.owner_id.as_deref() == Some(owner.as_str())).map(|p| p.marketo_id).collect();
    let pages: Vec<_> = c
        .leads_by_filter_stream("sfdcLeadOwnerId".into(), vec![owner.clone()], fields.clone())
        .try_collect()
        .await
        .unwrap();
    let got: HashSet<i64> =
        pages.iter().flat_map(|p| p.items.iter()).map(|r: &LeadRecord| r.0.as_ref().unwrap().id).collect();
    assert_eq!(got, expect);
    let page = c.leads_by_filter("sfdcLeadOwnerId", &[owner], &fields, None).await.unwrap();
    assert_eq!(page.items.len(), expect.len().min(300));

    // Unknown filter type → Rejected with Marketo's code.
    let e = c.leads_by_filter("firstName", &["Ada".into()], &fields, None).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::Rejected { ref code, .. } if code == "1011"), "{e:?}");
    // Unknown field → 1006.
    let e = c.leads_by_ids(&ids[..1], &["noSuchField".into()]).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::Rejected { ref code, .. } if code == "1006"), "{e:?}");

    // Unsubscribed flag.
    let unsub = world.people.iter().find(|p| p.unsubscribed).unwrap();
    assert_eq!(c.lead_unsubscribed(unsub.marketo_id).await.unwrap(), Some(true));
    let sub = world.people.iter().find(|p| !p.unsubscribed).unwrap();
    assert_eq!(c.lead_unsubscribed(sub.marketo_id).await.unwrap(), Some(false));
    assert_eq!(c.lead_unsubscribed(99_999_999).await.unwrap(), None);

    // The instance's calls today, by Marketo's own count (the usage call counts too).
    let counted = emu.call_log().iter().filter(|call| call.counted).count() as u64;
    let used = c.usage_today().await.unwrap().unwrap();
    assert!(used > counted.saturating_sub(1) && used <= counted + 1, "{used} vs {counted} counted calls");
    emu.shutdown().await;
}

#[tokio::test]
async fn long_queries_go_as_post_method_get() {
    let emu = common::start(common::manual_config()).await;
    let world = seed::generate(10, 3);
    emu.seed_world(&world);
    let sniffer = common::sniff(emu.addr()).await;
    let c = common::builder_for(&emu, &sniffer.base_url()).build().unwrap();
    // 300 long emails push the URI past 8 KB.
    let mut emails: Vec<String> = world.people.iter().filter_map(|p| p.email.clone()).collect();
    let real = emails.len();
    emails.extend((0..300 - real).map(|i| format!("nobody.with.a.long.address.{i:04}@unknown.example.com")));
    let fields = fields_of(&c).await;
    let page = c.leads_by_filter("email", &emails, &fields, None).await.unwrap();
    assert!(page.items.len() >= real, "{} of {real}", page.items.len());
    assert!(
        sniffer.requests().iter().any(|(m, t)| m == "POST" && t == "/rest/v1/leads.json?_method=GET"),
        "{:?}",
        sniffer.requests()
    );
    assert!(emu.call_log().iter().all(|call| call.http_status != 414));
    emu.shutdown().await;
}

#[tokio::test]
async fn incremental_activities() {
    let emu = common::start(common::manual_config()).await;
    let c = common::client(&emu);
    let since = common::t0() - TimeDelta::hours(1);
    let a = emu.create_lead(obj(json!({"email": "a@example.com", "firstName": "Ada", "lastName": "L"})));
    let b = emu.create_lead(obj(json!({"email": "b@example.com", "firstName": "Bob", "lastName": "M"})));
    emu.clock().advance(TimeDelta::minutes(1));
    assert!(emu.update_lead(a, obj(json!({"firstName": "Adah", "title": "CTO"}))));
    emu.clock().advance(TimeDelta::minutes(1));
    assert!(emu.delete_lead(b));

    let token = c.paging_token(since).await.unwrap();
    assert!(!token.is_empty());
    let fields: Vec<String> = ["firstName", "lastName", "email", "title"].map(String::from).to_vec();
    let pages: Vec<_> = c.lead_changes_stream(token.clone(), fields.clone()).try_collect().await.unwrap();
    let acts: Vec<_> = pages.iter().flat_map(|p| p.items.clone()).collect();
    assert!(pages.last().unwrap().next_token.is_some(), "the last page keeps a token");
    assert!(acts.iter().any(|x| x.activity_type_id == 12 && x.lead_id == a), "{acts:?}");
    let change = acts.iter().find(|x| x.activity_type_id == 13 && x.lead_id == a).expect("a change of lead a");
    let first = change.changed_fields.iter().find(|f| f.name == "firstName").expect("firstName changed");
    assert_eq!(first.new_value, Some(json!("Adah")));
    assert_eq!(first.old_value, Some(json!("Ada")));
    assert!(acts.iter().all(|x| !x.guid.is_empty()));

    // One-page method.
    let page = c.lead_changes(&token, &fields).await.unwrap();
    assert!(!page.items.is_empty());
    assert!(page.next_token.is_some());

    let deleted: Vec<_> = c.deleted_leads_stream(token.clone()).try_collect().await.unwrap();
    let del: Vec<_> = deleted.iter().flat_map(|p| p.items.clone()).collect();
    assert!(del.iter().any(|x| x.lead_id == b && x.activity_type_id == 37), "{del:?}");
    let page = c.deleted_leads(&token).await.unwrap();
    assert!(page.items.iter().any(|x| x.lead_id == b));

    let pages: Vec<_> = c.activities_stream(token.clone(), vec![12, 13], vec![a]).try_collect().await.unwrap();
    let acts: Vec<_> = pages.iter().flat_map(|p| p.items.clone()).collect();
    assert!(!acts.is_empty());
    assert!(acts.iter().all(|x| x.lead_id == a && [12, 13].contains(&x.activity_type_id)));
    let one = c.activities(&token, &[12], &[]).await.unwrap();
    assert!(one.items.iter().all(|x| x.activity_type_id == 12));

    // Client-side validation of Marketo's per-call limits.
    let e = c.activities(&token, &(1..=11).collect::<Vec<_>>(), &[]).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::InvalidInput { .. }));
    let e = c.activities(&token, &[1], &(1..=31).collect::<Vec<_>>()).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::InvalidInput { .. }));
    let e = c.activities(&token, &[], &[]).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::InvalidInput { .. }));

    let types = c.activity_types().await.unwrap();
    for id in [1, 12, 13, 37] {
        assert!(types.iter().any(|t| t.id == id), "type {id} missing");
    }
    assert!(types.iter().any(|t| t.name == "Change Data Value"));
    emu.shutdown().await;
}

#[tokio::test]
async fn bulk_export_round_trip() {
    let emu = common::start(salesync_emulator::marketo::MarketoConfig {
        bulk_processing_time: TimeDelta::minutes(10),
        ..common::manual_config()
    })
    .await;
    let world = seed::generate(300, 11);
    emu.seed_world(&world);
    let c = common::client(&emu);
    let fields = fields_of(&c).await;

    let start = world.people.iter().map(|p| p.created_at).min().unwrap().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let end = start + TimeDelta::days(30);
    let expect: HashSet<i64> =
        world.people.iter().filter(|p| p.created_at >= start && p.created_at <= end).map(|p| p.marketo_id).collect();
    assert!(!expect.is_empty());

    // Client-side validation: > 31 days, milliseconds.
    let e = c
        .start_lead_export(&fields, ExportFilter::CreatedAt { start, end: start + TimeDelta::days(32) })
        .await
        .unwrap_err();
    assert!(matches!(e, salesync_core::Error::InvalidInput { .. }));
    let e = c
        .start_lead_export(&fields, ExportFilter::CreatedAt { start: start + TimeDelta::milliseconds(5), end })
        .await
        .unwrap_err();
    assert!(matches!(e, salesync_core::Error::InvalidInput { .. }));

    let job = c.start_lead_export(&fields, ExportFilter::CreatedAt { start, end }).await.unwrap();
    assert!(matches!(job.state, ExportState::Queued | ExportState::Processing | ExportState::Completed), "{job:?}");
    let mut status = c.lead_export_status(&job.id).await.unwrap();
    for _ in 0..100 {
        if status.state == ExportState::Completed {
            break;
        }
        emu.clock().advance(TimeDelta::minutes(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = c.lead_export_status(&job.id).await.unwrap();
    }
    assert_eq!(status.state, ExportState::Completed, "{status:?}");
    assert_eq!(status.records, Some(expect.len() as u64));

    let bytes: Vec<Vec<u8>> = c.lead_export_file(&job.id, 0).await.unwrap().try_collect().await.unwrap();
    let whole: Vec<u8> = bytes.concat();
    assert_eq!(Some(whole.len() as u64), status.file_size);
    let rows: Vec<LeadRecord> =
        bulk_csv_leads(c.lead_export_file(&job.id, 0).await.unwrap()).try_collect().await.unwrap();
    let got: HashSet<i64> = rows.iter().map(|r| r.0.as_ref().unwrap().id).collect();
    assert_eq!(got, expect);

    // Resume from an offset: exactly the tail.
    let off = whole.len() as u64 / 3;
    let tail: Vec<u8> = c.lead_export_file(&job.id, off).await.unwrap().try_collect::<Vec<_>>().await.unwrap().concat();
    assert_eq!(tail, whole[off as usize..]);
    // At the end: nothing.
    let none: Vec<Vec<u8>> =
        c.lead_export_file(&job.id, whole.len() as u64).await.unwrap().try_collect().await.unwrap();
    assert!(none.concat().is_empty());

    // An open download does not hold an in-flight slot: other calls proceed even at 1.
    let single = common::builder(&emu).max_concurrent(1).build().unwrap();
    let open = single.lead_export_file(&job.id, 0).await.unwrap();
    let st = tokio::time::timeout(Duration::from_secs(5), single.lead_export_status(&job.id)).await;
    assert!(st.expect("no deadlock").is_ok());
    assert_eq!(open.try_collect::<Vec<_>>().await.unwrap().concat(), whole);

    // Cancel another job.
    let job2 = c.start_lead_export(&fields, ExportFilter::CreatedAt { start, end }).await.unwrap();
    c.cancel_lead_export(&job2.id).await.unwrap();
    assert_eq!(c.lead_export_status(&job2.id).await.unwrap().state, ExportState::Cancelled);
    // A cancelled job has no file: typed "not ready".
    let e = c.lead_export_file(&job2.id, 0).await.err().expect("no file for a cancelled job");
    assert!(
        matches!(e, salesync_core::Error::Unavailable { ref code, .. } if code == salesync_marketo::FILE_NOT_READY),
        "{e:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn bulk_updated_at_unsupported_is_1035() {
    let emu = common::start(salesync_emulator::marketo::MarketoConfig {
        bulk_updated_at_filter: false,
        ..common::manual_config()
    })
    .await;
    let c = common::client(&emu);
    let start = common::t0() - TimeDelta::days(2);
    let e = c
        .start_lead_export(&["id".to_string()], ExportFilter::UpdatedAt { start, end: common::t0() })
        .await
        .unwrap_err();
    assert!(matches!(e, salesync_core::Error::Rejected { ref code, .. } if code == "1035"), "{e:?}");
    emu.shutdown().await;
}

fn defs() -> Vec<CustomActivityTypeDef> {
    vec![
        CustomActivityTypeDef {
            api_name: "salesyncSendSalesEmail".into(),
            name: "Send Sales Email (salesync)".into(),
            description: "Sales email sent by a rep".into(),
            trigger_name: "Is Sent Sales Email - salesync".into(),
            filter_name: "Was Sent Sales Email - salesync".into(),
            primary_attribute: ("subject".into(), "Email Subject".into()),
            attributes: vec![
                ("sentBy".into(), "Sent By".into(), "string".into()),
                ("outboxId".into(), "Outbox Id".into(), "string".into()),
            ],
        },
        CustomActivityTypeDef {
            api_name: "salesyncSalesCall".into(),
            name: "Sales Call (salesync)".into(),
            description: "Call made by a rep".into(),
            trigger_name: "Had Sales Call - salesync".into(),
            filter_name: "Was Sales Call - salesync".into(),
            primary_attribute: ("subject".into(), "Call Subject".into()),
            attributes: vec![("duration".into(), "Duration".into(), "integer".into())],
        },
    ]
}

#[tokio::test]
async fn custom_activity_types_and_activities() {
    let emu = common::start(common::manual_config()).await;
    let c = common::client(&emu);
    let lead = emu.create_lead(obj(json!({"email": "ada@example.com", "firstName": "Ada"})));

    let first = c.ensure_custom_activity_types(&defs()).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|t| t.created));
    let again = c.ensure_custom_activity_types(&defs()).await.unwrap();
    assert!(again.iter().all(|t| !t.created));
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), again.iter().map(|t| t.id).collect::<Vec<_>>());
    // A new attribute on an approved type is added and approved.
    let mut more = defs();
    more[1].attributes.push(("status".into(), "Call Status".into(), "string".into()));
    let third = c.ensure_custom_activity_types(&more).await.unwrap();
    assert_eq!(third[1].id, first[1].id);

    // Too many attributes: a clear 1028 before anything is sent.
    let mut wide = defs();
    wide[0].attributes = (0..21).map(|i| (format!("a{i}"), format!("A{i}"), "string".into())).collect();
    let e = c.ensure_custom_activity_types(&wide).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::Rejected { ref code, .. } if code == "1028"));

    let type_id = first[0].id;
    let when = common::t0() - TimeDelta::minutes(5);
    let items = vec![
        NewCustomActivity {
            lead_id: lead,
            activity_date: when,
            activity_type_id: type_id,
            primary_attribute_value: "Intro call follow-up".into(),
            attributes: vec![("sentBy".into(), "rep@example.com".into()), ("outboxId".into(), "ob-1".into())],
        },
        NewCustomActivity {
            lead_id: 99_999_999,
            activity_date: when,
            activity_type_id: type_id,
            primary_attribute_value: "Intro call follow-up".into(),
            attributes: vec![],
        },
    ];
    let out = c.add_custom_activities(&items).await.unwrap();
    assert_eq!(out.len(), 2);
    let RecordOutcome::Written { id } = &out[0] else { panic!("{out:?}") };
    assert!(!id.is_empty());
    assert!(matches!(&out[1], RecordOutcome::Rejected { code, .. } if code == "1004"), "{out:?}");
    assert_eq!(emu.custom_activities().len(), 1);
    assert!(c.add_custom_activities(&[]).await.unwrap().is_empty());

    // Read back through activities.json with the custom type id.
    let token = c.paging_token(common::t0() - TimeDelta::hours(1)).await.unwrap();
    let acts: Vec<_> =
        c.activities_stream(token, vec![type_id], vec![lead]).map_ok(|p| p.items).try_concat().await.unwrap();
    assert_eq!(acts.len(), 1, "{acts:?}");
    assert_eq!(acts[0].primary_attribute_value.as_deref(), Some("Intro call follow-up"));
    emu.shutdown().await;
}

#[tokio::test]
async fn custom_type_limit_is_1027() {
    let emu = common::start(salesync_emulator::marketo::MarketoConfig {
        max_custom_activity_types: 1,
        ..common::manual_config()
    })
    .await;
    let c = common::client(&emu);
    let e = c.ensure_custom_activity_types(&defs()).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::Rejected { ref code, .. } if code == "1027"), "{e:?}");
    emu.shutdown().await;
}
