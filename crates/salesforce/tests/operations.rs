//! Every `SalesforceApi` operation against the in-process Salesforce emulator over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{Duration, NaiveDate, Utc};
use common::*;
use futures::TryStreamExt;
use salesync_core::ports::marketo::RecordOutcome;
use salesync_core::ports::salesforce::{SalesforceApi, TaskWrite};
use salesync_core::salesforce_codes::{Category, lookup};
use salesync_core::sfid::SalesforceId;
use salesync_emulator::salesforce::SalesforceConfig;
use salesync_salesforce::Soql;
use serde_json::json;

fn sid(s: &str) -> SalesforceId {
    SalesforceId::parse(s).unwrap()
}

fn task(ext: &str, who: &str) -> TaskWrite {
    TaskWrite {
        external_id: ext.into(),
        who_id: Some(sid(who)),
        what_id: None,
        owner_id: None,
        subject: format!("Email: hello {ext}"),
        status: "Completed".into(),
        priority: "Normal".into(),
        activity_date: NaiveDate::from_ymd_opt(2025, 6, 3),
        description: Some("Body\nline two".into()),
        task_subtype: Some("Email".into()),
        task_type: Some("Email".into()),
        call_duration_secs: None,
        call_disposition: None,
        custom_fields: Vec::new(),
    }
}

fn written(o: &RecordOutcome) -> String {
    match o {
        RecordOutcome::Written { id } => id.clone(),
        other => panic!("expected Written, got {other:?}"),
    }
}

fn live_tasks(
    emu: &salesync_emulator::salesforce::SalesforceEmulator,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    emu.records("Task").into_iter().filter(|t| t.get("IsDeleted") != Some(&json!(true))).collect()
}

#[tokio::test]
async fn upsert_creates_then_updates_the_same_task() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    let tasks = vec![task("act-1", &l), task("act-2", &l), task("act-3", &l)];
    let first = c.upsert_tasks(&tasks).await.unwrap();
    assert_eq!(first.len(), 3);
    let ids: Vec<String> = first.iter().map(written).collect();
    assert!(ids.iter().all(|i| i.starts_with("00T")), "{ids:?}");
    assert_eq!(live_tasks(&emu).len(), 3);

    let mut again = tasks.clone();
    again[1].subject = "Email: changed".into();
    let second = c.upsert_tasks(&again).await.unwrap();
    assert_eq!(second.iter().map(written).collect::<Vec<_>>(), ids, "same Tasks, same order");
    assert_eq!(live_tasks(&emu).len(), 3, "an upsert by external id never makes a second Task");
    let t = emu.get("Task", &ids[1]).unwrap();
    assert_eq!(t["Subject"], json!("Email: changed"));
    assert_eq!(t["Salesync_Activity_Id__c"], json!("act-2"));
    assert_eq!(t["WhoId"].as_str().map(|s| &s[..15]), Some(&l[..15]));
    assert_eq!(t["TaskSubtype"], json!("Email"), "set at creation, kept");
    // PATCHes on the external-id upsert resource, never a POST create: one for the first upsert;
    // two for the second, whose TaskSubtype (create-only) is refused on the existing Tasks and
    // which is re-sent without it.
    let patches = calls(&emu, Some("PATCH"), "/composite/sobjects/Task/Salesync_Activity_Id__c");
    assert_eq!(patches.len(), 3, "{patches:?}");
    assert!(calls(&emu, Some("POST"), "/composite/sobjects").is_empty());
    assert!(c.upsert_tasks(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn upsert_reports_partial_failures_per_record_in_order() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    let a = account(&emu, "Acme");
    let mut bad_who = task("bad-who", &l);
    bad_who.who_id = Some(sid(&a)); // an Account is not a valid WhoId
    let mut bad_type = task("bad-type", &l);
    bad_type.task_type = Some("NoSuchType".into());
    let out = c.upsert_tasks(&[task("ok-1", &l), bad_who, task("ok-2", &l), bad_type]).await.unwrap();
    assert_eq!(out.len(), 4);
    written(&out[0]);
    written(&out[2]);
    for o in [&out[1], &out[3]] {
        match o {
            RecordOutcome::Rejected { code, message } => {
                assert!(!code.is_empty() && !message.is_empty(), "{code} {message}");
                assert_eq!(lookup(code, message).category, Category::AccessValidation, "{code}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(live_tasks(&emu).len(), 2, "allOrNone=false keeps the good records");
}

#[tokio::test]
async fn large_upserts_are_chunked_by_200() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    let tasks: Vec<TaskWrite> = (0..450).map(|i| task(&format!("bulk-{i}"), &l)).collect();
    let out = c.upsert_tasks(&tasks).await.unwrap();
    assert_eq!(out.len(), 450);
    out.iter().for_each(|o| {
        written(o);
    });
    assert_eq!(calls(&emu, Some("PATCH"), "/composite/sobjects/Task/").len(), 3);
    assert_eq!(live_tasks(&emu).len(), 450);
}

#[tokio::test]
async fn update_tasks_by_id() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    let ids: Vec<String> =
        c.upsert_tasks(&[task("u-1", &l), task("u-2", &l)]).await.unwrap().iter().map(written).collect();
    emu.delete("Task", &ids[1]).unwrap();
    let out = c
        .update_tasks(&[
            (sid(&ids[0]), vec![("Status".into(), json!("Not Started")), ("Priority".into(), json!("High"))]),
            (sid(&ids[1]), vec![("Status".into(), json!("Completed"))]),
        ])
        .await
        .unwrap();
    assert_eq!(written(&out[0])[..15], ids[0][..15]);
    assert!(matches!(&out[1], RecordOutcome::Rejected { code, .. } if code == "ENTITY_IS_DELETED"), "{out:?}");
    let t = emu.get("Task", &ids[0]).unwrap();
    assert_eq!(t["Status"], json!("Not Started"));
    assert_eq!(t["Priority"], json!("High"));
    // Field names are validated before anything is sent.
    let e = c.update_tasks(&[(sid(&ids[0]), vec![("Bad Field".into(), json!(1))])]).await.unwrap_err();
    assert!(matches!(e, salesync_core::Error::InvalidInput { .. }));
}

#[tokio::test]
async fn delete_task_and_read_deletions() {
    let clock = salesync_emulator::clock::Clock::manual(Utc::now());
    let emu = emulator_with(SalesforceConfig { clock: clock.clone(), ..SalesforceConfig::default() }).await;
    let c = client(&emu);
    let l = lead(&emu, "ada@example.com");
    let start = clock.now() - Duration::minutes(5);
    let id = written(&c.upsert_tasks(&[task("d-1", &l)]).await.unwrap()[0]);
    c.delete_task(&sid(&id)).await.unwrap();
    // Deleting again (e.g. after a lost response) is not an error.
    c.delete_task(&sid(&id)).await.unwrap();
    let missing = sid("00T000000000001");
    assert!(matches!(c.delete_task(&missing).await, Err(salesync_core::Error::NotFound { .. })));

    // getDeleted covers whole minutes up to the present one.
    clock.advance(Duration::minutes(2));
    let end = clock.now();
    let d = c.tasks_deleted_between(start, end).await.unwrap();
    assert!(d.records.iter().any(|r| r.id == sid(&id)), "{d:?}");
    assert!(d.earliest_available.is_some_and(|e| e <= start), "{d:?}");
    assert!(d.latest_covered.is_some());
}

#[tokio::test]
async fn tasks_modified_since_pages_with_next_records_url() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    let since = emu.clock().now() - Duration::minutes(1);
    let tasks: Vec<TaskWrite> = (0..450).map(|i| task(&format!("m-{i}"), &l)).collect();
    c.upsert_tasks(&tasks).await.unwrap();

    let mut token = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = c.tasks_modified_since(since, token.clone()).await.unwrap();
        pages += 1;
        seen.extend(page.items);
        if !page.more {
            assert!(page.next_token.is_none());
            break;
        }
        let t = page.next_token.clone().unwrap();
        assert!(t.starts_with("/services/data/"), "{t}");
        token = Some(t);
    }
    assert!(pages >= 3, "batchSize 200 gives several pages, got {pages}");
    assert_eq!(seen.len(), 450);
    let mut exts: Vec<String> = seen.iter().map(|t| t.external_id.clone().unwrap()).collect();
    exts.sort();
    exts.dedup();
    assert_eq!(exts.len(), 450);
    assert!(seen.windows(2).all(|w| w[0].modified_at <= w[1].modified_at), "oldest first");
    let t = &seen[0];
    assert_eq!(t.status.as_deref(), Some("Completed"));
    assert_eq!(t.task_subtype.as_deref(), Some("Email"));
    assert_eq!(t.activity_date, NaiveDate::from_ymd_opt(2025, 6, 3));
    assert!(!t.deleted);

    // The stream form yields the same.
    let streamed: usize = c
        .tasks_modified_stream(since)
        .map_ok(|p| p.items.len())
        .try_fold(0, |a, n| async move { Ok(a + n) })
        .await
        .unwrap();
    assert_eq!(streamed, 450);
    // Nothing after the future.
    let later = c.tasks_modified_since(emu.clock().now() + Duration::hours(1), None).await.unwrap();
    assert!(later.items.is_empty() && !later.more);
}

#[tokio::test]
async fn opt_outs_are_set_and_listed() {
    let (emu, c) = setup().await;
    let since = emu.clock().now() - Duration::minutes(1);
    let l1 = lead(&emu, "l1@example.com");
    let l2 = lead(&emu, "l2@example.com");
    let a = account(&emu, "Acme");
    let c1 = contact(&emu, "c1@example.com", Some(&a));
    let _c2 = contact(&emu, "c2@example.com", Some(&a));
    let out = c.set_opted_out(&[sid(&c1), sid(&a), sid(&l1)], "HasOptedOutOfEmail").await.unwrap();
    written(&out[0]);
    assert!(matches!(&out[1], RecordOutcome::Rejected { .. }));
    written(&out[2]);
    assert_eq!(emu.get("Lead", &l1).unwrap()["HasOptedOutOfEmail"], json!(true));
    assert_eq!(emu.get("Contact", &c1).unwrap()["HasOptedOutOfEmail"], json!(true));
    assert_ne!(emu.get("Lead", &l2).unwrap()["HasOptedOutOfEmail"], json!(true));

    let mut token = None;
    let mut ids = Vec::new();
    loop {
        let p = c.opted_out_since("HasOptedOutOfEmail", since, token).await.unwrap();
        assert!(p.items.iter().all(|r| r.opted_out));
        ids.extend(p.items.into_iter().map(|r| r.id));
        if !p.more {
            break;
        }
        token = p.next_token;
    }
    ids.sort();
    let mut want = vec![sid(&l1), sid(&c1)];
    want.sort();
    assert_eq!(ids, want);
    assert!(c.opted_out_since("Bad Field", since, None).await.is_err());
}

#[tokio::test]
async fn opportunities_prefer_primary_open_roles() {
    let (emu, c) = setup().await;
    let a = account(&emu, "Acme");
    let with_roles = contact(&emu, "c1@example.com", Some(&a));
    let closed_only = contact(&emu, "c2@example.com", Some(&a));
    let none = contact(&emu, "c3@example.com", Some(&a));
    let opp = |name: &str, stage: &str| {
        emu.insert(
            "Opportunity",
            obj(json!({"Name": name, "StageName": stage, "CloseDate": "2026-12-31", "AccountId": a})),
        )
        .unwrap()
    };
    let open_secondary = opp("Open secondary", "Prospecting");
    let open_primary = opp("Open primary", "Prospecting");
    let closed = opp("Closed", "Closed Won");
    let role = |contact: &str, o: &str, primary: bool| {
        emu.insert(
            "OpportunityContactRole",
            obj(json!({"ContactId": contact, "OpportunityId": o, "IsPrimary": primary, "Role": "Decision Maker"})),
        )
        .unwrap();
    };
    role(&with_roles, &open_secondary, false);
    role(&with_roles, &open_primary, true);
    role(&with_roles, &closed, false);
    role(&closed_only, &closed, true);
    let out = c.opportunities_for_contacts(&[sid(&with_roles), sid(&closed_only), sid(&none)]).await.unwrap();
    assert_eq!(out, vec![(sid(&with_roles), Some(sid(&open_primary))), (sid(&closed_only), None), (sid(&none), None)]);
}

#[tokio::test]
async fn lead_conversions_report_converted_ids() {
    let (emu, c) = setup().await;
    let converted = lead(&emu, "conv@example.com");
    let plain = lead(&emu, "plain@example.com");
    let r = emu.convert_lead(&converted, None, None, true).unwrap();
    let mut out = c.lead_conversions(&[sid(&converted), sid(&plain)]).await.unwrap();
    out.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
    let conv = out.iter().find(|l| l.lead_id == sid(&converted)).unwrap();
    assert!(conv.converted);
    assert_eq!(conv.contact_id, Some(sid(&r.contact_id)));
    assert_eq!(conv.account_id, Some(sid(&r.account_id)));
    assert_eq!(conv.opportunity_id, r.opportunity_id.as_deref().map(sid));
    let p = out.iter().find(|l| l.lead_id == sid(&plain)).unwrap();
    assert!(!p.converted && p.contact_id.is_none());

    // find_by_email sees the converted lead with its contact, and the contact itself.
    let found = c.find_by_email("conv@example.com").await.unwrap();
    let lead_ref = found.iter().find(|p| p.id == sid(&converted)).unwrap();
    assert_eq!(lead_ref.converted_contact_id, Some(sid(&r.contact_id)));
}

#[tokio::test]
async fn hostile_literals_find_exactly_the_intended_record() {
    let (emu, c) = setup().await;
    // Emails Salesforce accepts that carry SOQL's quote.
    let emails = ["o'brien@example.com", "d'arcy.o'neil+x@example.com"];
    let mut by_email = Vec::new();
    for e in emails {
        by_email.push(lead(&emu, e));
    }
    for decoy in ["obrien@example.com", "o@example.com", "darcy.oneil+x@example.com"] {
        lead(&emu, decoy);
    }
    let a = account(&emu, "Acme");
    let ct = contact(&emu, "o'brien@example.com", Some(&a));
    for (e, id) in emails.iter().zip(&by_email) {
        let found = c.find_by_email(e).await.unwrap();
        let mut got: Vec<SalesforceId> = found.iter().map(|p| p.id.clone()).collect();
        let mut want = vec![sid(id)];
        if *e == "o'brien@example.com" {
            want.push(sid(&ct));
            assert_eq!(found.iter().find(|p| p.id == sid(&ct)).unwrap().account_id, Some(sid(&a)));
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "{e:?}");
    }
    assert!(c.find_by_email("nobody@example.com").await.unwrap().is_empty());

    // Any text in a plain string field: quotes, backslashes, injection attempts, unicode, controls.
    let hostile = [
        "O'Brien & Sons",
        "back\\slash",
        "trailing backslash\\",
        "quote\"d",
        "x' OR Company != '",
        "\\' OR Name != '",
        "ünïcødé 名前 ✉",
        "tab\there",
        "new\nline",
        "pct%_under",
    ];
    let mut ids = Vec::new();
    for h in hostile {
        let m = obj(json!({"LastName": "Hostile", "Company": h, "Status": "Open - Not Contacted"}));
        ids.push(emu.insert("Lead", m).unwrap());
    }
    for decoy in ["OBrien & Sons", "backslash", "x", "pctX_under", "quoted", "tab"] {
        emu.insert("Lead", obj(json!({"LastName": "Decoy", "Company": decoy, "Status": "Open - Not Contacted"})))
            .unwrap();
    }
    for (h, id) in hostile.iter().zip(&ids) {
        let soql = Soql::new().select(&["Id", "Company"]).from("Lead").where_eq("Company", *h);
        let rows = c.query_all(&soql).await.unwrap();
        assert_eq!(rows.len(), 1, "{h:?}: {rows:?}");
        assert_eq!(rows[0]["Id"].as_str().map(|s| &s[..15]), Some(&id[..15]), "{h:?}");
        assert_eq!(rows[0]["Company"], json!(h));
    }
}

#[tokio::test]
async fn users_task_types_and_usage() {
    let (emu, c) = setup().await;
    let world = salesync_emulator::seed::generate(50, 7);
    emu.seed_world(&world);
    assert_eq!(c.api_usage(), None, "no call yet");
    let users = c.active_users().await.unwrap();
    for u in &world.users {
        assert!(users.iter().any(|x| x.id == sid(&u.id)), "user {} listed", u.id);
    }
    let types = c.task_type_values().await.unwrap();
    for t in ["Email", "Call", "Reply"] {
        assert!(types.iter().any(|v| v == t), "{types:?}");
    }
    let usage = c.api_usage().expect("usage after calls");
    assert_eq!(usage.max, 100_000);
    assert!(usage.used >= 2, "{usage:?}");
    assert!(usage.used <= emu.api_usage(), "{usage:?} vs {}", emu.api_usage());
}

#[tokio::test]
async fn malformed_soql_and_unknown_fields_keep_the_raw_code() {
    let (emu, c) = setup().await;
    let e = c.query_stream_static("SELECT Id FROM Lead WHERE").try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(&e, salesync_core::Error::Rejected { code, .. } if code == "MALFORMED_QUERY"), "{e:?}");
    let e = c.query_all(&Soql::new().select(&["NoSuchField__c"]).from("Lead")).await.unwrap_err();
    assert!(matches!(&e, salesync_core::Error::Rejected { code, .. } if code == "INVALID_FIELD"), "{e:?}");
    // Neither was retried.
    assert_eq!(calls(&emu, Some("GET"), "/query").len(), 2);
}

#[tokio::test]
async fn a_page_token_resumes_the_query_in_another_client() {
    let (emu, c) = setup().await;
    let l = lead(&emu, "ada@example.com");
    let since = emu.clock().now() - Duration::minutes(1);
    let tasks: Vec<TaskWrite> = (0..300).map(|i| task(&format!("res-{i}"), &l)).collect();
    c.upsert_tasks(&tasks).await.unwrap();
    let first = c.tasks_modified_since(since, None).await.unwrap();
    assert!(first.more);
    let token = first.next_token.clone().unwrap();

    // A restarted process with a checkpointed token and a fresh session.
    let other = client(&emu);
    let mut rest = 0;
    let mut pages = other.query_stream_from(&token);
    while let Some(p) = futures::StreamExt::next(&mut pages).await {
        rest += p.unwrap().items.len();
    }
    assert_eq!(first.items.len() + rest, 300);
}

/// The hard cases of the opportunity rule (issue #13): a contact with ten roles, a role whose
/// opportunity was deleted, a contact with closed opportunities only, a lead converted without
/// an opportunity. The per-contact lookup, the org-wide read and the conversion lookup all give
/// the rule's answer: the open opportunity of a primary role first, then the most recently
/// modified.
#[tokio::test]
async fn lookups_and_the_org_wide_read_agree_on_the_hard_cases() {
    let clock = salesync_emulator::clock::Clock::manual(Utc::now());
    let emu = emulator_with(SalesforceConfig { clock, ..SalesforceConfig::default() }).await;
    let c = client(&emu);
    let a = account(&emu, "Acme");
    let ten = contact(&emu, "ten@example.com", Some(&a));
    let orphaned = contact(&emu, "orphan@example.com", Some(&a));
    let closed_only = contact(&emu, "closed@example.com", Some(&a));
    let opp = |name: String, stage: &str| {
        emu.clock().advance(Duration::minutes(1));
        emu.insert(
            "Opportunity",
            obj(json!({"Name": name, "StageName": stage, "CloseDate": "2027-12-31", "AccountId": a})),
        )
        .unwrap()
    };
    let role = |contact: &str, o: &str, primary: bool| {
        emu.insert(
            "OpportunityContactRole",
            obj(json!({"ContactId": contact, "OpportunityId": o, "IsPrimary": primary})),
        )
        .unwrap();
    };
    // Ten roles: closed ones (one primary, the newest of all), open secondary ones, and two
    // open primary ones of which the later-modified must win.
    let mut opps = Vec::new();
    for i in 0..10 {
        let (stage, primary) = match i {
            0 | 3 | 5 => ("Prospecting", false),
            1 | 6 => ("Prospecting", true),
            _ => ("Closed Lost", i == 9),
        };
        let o = opp(format!("Deal {i}"), stage);
        role(&ten, &o, primary);
        opps.push(o);
    }
    // Modify the first open primary after the second: it is now the more recent.
    emu.clock().advance(Duration::minutes(1));
    emu.update("Opportunity", &opps[1], obj(json!({"Name": "Deal 1, touched"}))).unwrap();
    let gone = opp("Gone".into(), "Prospecting");
    role(&orphaned, &gone, true);
    emu.delete("Opportunity", &gone).unwrap();
    let closed = opp("Lost".into(), "Closed Won");
    role(&closed_only, &closed, true);

    let expected = vec![(sid(&ten), Some(sid(&opps[1]))), (sid(&orphaned), None), (sid(&closed_only), None)];
    let looked_up = c.opportunities_for_contacts(&[sid(&ten), sid(&orphaned), sid(&closed_only)]).await.unwrap();
    let picked = looked_up[0].1.as_ref().and_then(|o| opps.iter().position(|x| sid(x) == *o));
    assert_eq!(looked_up, expected, "picked deal {picked:?}");
    let links = c.opportunity_links().await.unwrap();
    for (contact, opp) in &expected {
        assert_eq!(&links.contact(contact), opp, "org-wide read for {contact}");
    }

    // Leads converted with and without an opportunity.
    let bare = lead(&emu, "bare@example.com");
    let with = lead(&emu, "with@example.com");
    let bare_conv = emu.convert_lead(&bare, None, None, false).unwrap();
    let with_conv = emu.convert_lead(&with, None, None, true).unwrap();
    assert!(bare_conv.opportunity_id.is_none() && with_conv.opportunity_id.is_some());
    let conversions = c.lead_conversions(&[sid(&bare), sid(&with)]).await.unwrap();
    let of = |l: &str| conversions.iter().find(|x| x.lead_id == sid(l)).unwrap();
    assert!(of(&bare).converted && of(&bare).opportunity_id.is_none());
    assert_eq!(of(&with).opportunity_id, with_conv.opportunity_id.as_deref().map(sid));
    let links = c.opportunity_links().await.unwrap();
    assert_eq!(links.lead(&sid(&bare)), None);
    assert_eq!(links.lead(&sid(&with)), with_conv.opportunity_id.as_deref().map(sid));
    assert!(links.converted_leads.contains_key(&sid(&bare)), "converted without an opportunity is still converted");
}
