//! Marketo emulator over real HTTP: identity, envelope, limits, leads, incremental endpoints, faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod marketo_common;

use std::time::Duration;

use chrono::Duration as ChronoDuration;
use marketo_common::*;
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoEmulator, MarketoFault, MarketoLimits};
use salesync_emulator::seed;
use serde_json::{Value, json};

#[tokio::test]
async fn token_lifecycle_follows_the_documented_semantics() {
    let h = Harness::start(config()).await;
    let clock = h.emu.clock().clone();
    let identity = |id: &str, secret: &str| {
        h.http
            .post(h.url("/identity/oauth/token"))
            .query(&[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)])
            .send()
    };
    clock.advance(ChronoDuration::seconds(100));
    let again: Value = identity(h.emu.client_id(), h.emu.client_secret()).await.unwrap().json().await.unwrap();
    assert_eq!(again["access_token"], h.token.as_str(), "same token until expiry");
    assert_eq!(again["token_type"], "bearer");
    assert_eq!(again["expires_in"], 3500);
    assert!(again["scope"].is_string());

    let bad = identity(h.emu.client_id(), "wrong").await.unwrap();
    assert_eq!(bad.status(), 401);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].is_string());

    let ok = h.get("/rest/v1/leads/describe2.json").await;
    assert_ok(&ok);

    // Missing / garbage tokens and the query parameter are 601.
    let missing = json_of(h.http.get(h.url("/rest/v1/leads/describe2.json"))).await;
    assert_eq!(error_code(&missing), Some("601"));
    assert!(missing.get("result").is_none());
    let garbage = json_of(h.http.get(h.url("/rest/v1/leads/describe2.json")).bearer_auth("nope:emu")).await;
    assert_eq!(error_code(&garbage), Some("601"));
    let query = json_of(h.http.get(h.url(&format!("/rest/v1/leads/describe2.json?access_token={}", h.token)))).await;
    assert_eq!(error_code(&query), Some("601"));

    clock.advance(ChronoDuration::seconds(3500));
    let first = h.get("/rest/v1/leads/describe2.json").await;
    assert_eq!(error_code(&first), Some("602"));
    assert_eq!(first["errors"][0]["message"], "Access token expired");
    let second = h.get("/rest/v1/leads/describe2.json").await;
    assert_eq!(error_code(&second), Some("601"));

    let fresh = fetch_token(&h.emu, &h.http, h.emu.client_id(), h.emu.client_secret()).await;
    assert_ne!(fresh, h.token);
    // None of the token failures counted.
    let log = h.emu.call_log();
    assert!(log.iter().filter(|c| matches!(c.outcome.as_deref(), Some("601" | "602"))).all(|c| !c.counted));
    assert!(log.iter().filter(|c| c.path.starts_with("/identity")).all(|c| !c.counted));
    assert_eq!(log.iter().filter(|c| c.counted).count(), 1);
}

#[tokio::test]
async fn envelope_shape() {
    let h = Harness::start(config()).await;
    let v = h.get("/rest/v1/leads.json?filterType=email&filterValues=nobody@example.com").await;
    assert_ok(&v);
    assert_eq!(v["result"], json!([]));
    let rid = v["requestId"].as_str().unwrap();
    let (a, b) = rid.split_once('#').unwrap();
    assert!((4..=5).contains(&a.len()) && a.chars().all(|c| c.is_ascii_hexdigit()), "{rid}");
    assert!(b.len() == 11 && b.chars().all(|c| c.is_ascii_hexdigit()), "{rid}");
    let e = h.get("/rest/v1/leads.json?filterType=firstName&filterValues=Ada").await;
    assert_eq!(e["success"], false);
    assert!(e.get("result").is_none());
    assert_eq!(error_code(&e), Some("1011"));
    assert!(e["errors"][0]["code"].is_string());
}

#[tokio::test]
async fn rate_window_returns_606_and_rolls_with_the_clock() {
    let limits = MarketoLimits { calls_per_window: 5, ..MarketoLimits::default() };
    let h = Harness::start(MarketoConfig { limits, ..config() }).await;
    for _ in 0..5 {
        assert_ok(&h.get("/rest/v1/leads/describe.json").await);
        // Identity never counts.
        fetch_token(&h.emu, &h.http, h.emu.client_id(), h.emu.client_secret()).await;
    }
    let sixth = h.get("/rest/v1/leads/describe.json").await;
    assert_eq!(error_code(&sixth), Some("606"));
    assert_eq!(sixth["errors"][0]["message"], "Max rate limit '5' exceeded with in '20' secs");
    h.emu.clock().advance(ChronoDuration::seconds(20));
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);
    assert_eq!(h.emu.max_calls_in_any_window(), 5);
}

#[tokio::test]
async fn default_limit_is_100_per_20_seconds() {
    let h = Harness::start(config()).await;
    for i in 0..100 {
        let v = h.get("/rest/v1/activities/types.json").await;
        assert_eq!(v["success"], true, "call {i}");
    }
    let v = h.get("/rest/v1/activities/types.json").await;
    assert_eq!(error_code(&v), Some("606"));
    assert_eq!(v["errors"][0]["message"], "Max rate limit '100' exceeded with in '20' secs");
}

#[tokio::test]
async fn concurrency_limit_returns_615() {
    let limits = MarketoLimits { max_concurrent: 3, ..MarketoLimits::default() };
    let cfg = MarketoConfig { limits, latency: Some(Duration::from_millis(300)), ..config() };
    let h = Harness::start(cfg).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let http = h.http.clone();
        let url = h.url("/rest/v1/leads/describe.json");
        let token = h.token.clone();
        tasks.push(tokio::spawn(async move { json_of(http.get(url).bearer_auth(token)).await }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(error_code(&t.await.unwrap()).map(str::to_string));
    }
    let rejected = codes.iter().filter(|c| c.as_deref() == Some("615")).count();
    assert_eq!(rejected, 3, "{codes:?}");
    assert!(h.emu.max_concurrent_seen() >= 4);
    let log = h.emu.call_log();
    let msg_ok = log.iter().any(|c| c.outcome.as_deref() == Some("615") && !c.counted);
    assert!(msg_ok);
}

#[tokio::test]
async fn daily_quota_returns_607_until_midnight_central() {
    let limits = MarketoLimits { daily_quota: 3, ..MarketoLimits::default() };
    let h = Harness::start(MarketoConfig { limits, ..config() }).await;
    for _ in 0..3 {
        assert_ok(&h.get("/rest/v1/leads/describe.json").await);
        h.emu.clock().advance(ChronoDuration::seconds(30));
    }
    assert_eq!(error_code(&h.get("/rest/v1/leads/describe.json").await), Some("607"));
    // 15:01:30 UTC on 2026-06-15 is 10:01 CDT; midnight Chicago is 05:00 UTC next day.
    let call = |token: String| {
        let req = h.http.get(h.url("/rest/v1/leads/describe.json")).bearer_auth(token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    h.emu.clock().advance(ChronoDuration::hours(13));
    let token = fetch_token(&h.emu, &h.http, h.emu.client_id(), h.emu.client_secret()).await;
    assert_eq!(error_code(&call(token.clone()).await), Some("607"), "04:01 UTC is still 23:01 in Chicago");
    h.emu.clock().advance(ChronoDuration::minutes(59));
    assert_ok(&call(token).await);
}

#[tokio::test]
async fn leads_by_filter_pages_defaults_and_errors() {
    let h = Harness::start(config()).await;
    let world = seed::generate(40, 11);
    h.emu.seed_world(&world);
    let ids: Vec<String> = (1001..1021).map(|i| i.to_string()).collect();
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut q = format!("/rest/v1/leads.json?filterType=id&filterValues={}&batchSize=7", ids.join(","));
        if let Some(t) = &token {
            q.push_str(&format!("&nextPageToken={t}"));
        }
        let v = h.get(&q).await;
        assert_ok(&v);
        pages += 1;
        for r in v["result"].as_array().unwrap() {
            seen.push(r["id"].as_i64().unwrap());
            let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
            for k in keys {
                assert!(
                    ["id", "email", "updatedAt", "createdAt", "firstName", "lastName"].contains(&k.as_str()),
                    "{k}"
                );
            }
        }
        if v["moreResult"] == true {
            token = Some(v["nextPageToken"].as_str().unwrap().to_string());
        } else {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1001..1021).collect::<Vec<i64>>());

    // Null fields are omitted.
    let id = h.emu.create_lead(obj(json!({"email": "nulls@example.com", "firstName": "Nil"})));
    let v = h.get(&format!("/rest/v1/lead/{id}.json?fields=email,title,phone,firstName")).await;
    assert_eq!(v["result"], json!([{"id": id, "email": "nulls@example.com", "firstName": "Nil"}]));

    // Owner filter, sfdc fields.
    let person = world.people.iter().find(|p| p.has_owner()).unwrap();
    let owner = person.owner_id.clone().unwrap();
    let v = h
        .get(&format!(
            "/rest/v1/leads.json?filterType=sfdcLeadOwnerId&filterValues={owner}&fields=sfdcType,sfdcLeadOwnerId"
        ))
        .await;
    let n = world.people.iter().filter(|p| p.owner_id.as_deref() == Some(owner.as_str())).count();
    assert_eq!(v["result"].as_array().unwrap().len(), n);
    assert!(v["result"].as_array().unwrap().iter().all(|r| r["sfdcLeadOwnerId"] == owner.as_str()));

    assert_eq!(
        error_code(&h.get("/rest/v1/leads.json?filterType=id&filterValues=1001&fields=bogus").await),
        Some("1006")
    );
    assert_eq!(error_code(&h.get("/rest/v1/leads.json?filterType=firstName&filterValues=x").await), Some("1011"));
    // sfdcOpptyId: a filterType, but not a returnable field by default.
    assert_ok(&h.get("/rest/v1/leads.json?filterType=sfdcOpptyId&filterValues=006x").await);
    assert_eq!(
        error_code(&h.get("/rest/v1/leads.json?filterType=id&filterValues=1001&fields=sfdcOpptyId").await),
        Some("1006")
    );
    let many: Vec<String> = (0..301).map(|i| i.to_string()).collect();
    let v = h.get(&format!("/rest/v1/leads.json?filterType=id&filterValues={}", many.join(","))).await;
    assert_eq!(error_code(&v), Some("1003"));
    assert_eq!(
        error_code(&h.get("/rest/v1/leads.json?filterType=id&filterValues=1&batchSize=301").await),
        Some("1003")
    );
}

#[tokio::test]
async fn oppty_and_linkedin_fields_follow_configuration() {
    let cfg = MarketoConfig { expose_oppty_id: true, linkedin_field: false, ..config() };
    let h = Harness::start(cfg).await;
    let id = h.emu.create_lead(obj(json!({"email": "o@example.com", "sfdcOpptyId": "006000000000001AAA"})));
    let v = h.get(&format!("/rest/v1/lead/{id}.json?fields=sfdcOpptyId")).await;
    assert_eq!(v["result"][0]["sfdcOpptyId"], "006000000000001AAA");
    let d = h.get("/rest/v1/leads/describe2.json").await;
    let fields = d["result"][0]["fields"].as_array().unwrap();
    assert!(fields.iter().any(|f| f["name"] == "sfdcOpptyId" && f["crmManaged"] == true));
    assert!(!fields.iter().any(|f| f["name"] == "linkedInProfileURL"));
    assert!(d["result"][0]["searchableFields"].as_array().unwrap().contains(&json!(["sfdcLeadOwnerId"])));
    let h2 = Harness::start(config()).await;
    let d = h2.get("/rest/v1/leads/describe2.json").await;
    let fields = d["result"][0]["fields"].as_array().unwrap();
    assert!(fields.iter().any(|f| f["name"] == "linkedInProfileURL"));
    assert!(!fields.iter().any(|f| f["name"] == "sfdcOpptyId"));
    let d1 = h2.get("/rest/v1/leads/describe.json").await;
    assert!(d1["result"].as_array().unwrap().iter().any(|f| f["rest"]["name"] == "sfdcContactId"));

    // Hidden sfdcOpptyId: stored (Rust API sees it), never reported through a Change Data Value.
    let t = h2.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-01T00:00:00Z").await;
    let id = h2.emu.create_lead(obj(json!({"id": 5000, "email": "h@example.com", "sfdcOpptyId": "006A"})));
    assert_eq!(id, 5000);
    assert_ne!(h2.emu.create_lead(obj(json!({"id": 5000, "email": "dup-id@example.com"}))), 5000);
    assert!(h2.emu.update_lead(5000, obj(json!({"sfdcOpptyId": "006B", "title": "VP"}))));
    assert_eq!(h2.emu.lead(5000).unwrap()["sfdcOpptyId"], "006B");
    let v = h2
        .get(&format!(
            "/rest/v1/activities.json?nextPageToken={}&activityTypeIds=13",
            t["nextPageToken"].as_str().unwrap()
        ))
        .await;
    let changes = v["result"].as_array().unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["primaryAttributeValue"], "Job Title");
}

#[tokio::test]
async fn method_get_override_and_http_size_limits() {
    let h = Harness::start(config()).await;
    h.emu.seed_world(&seed::generate(5, 3));
    let v = h
        .post_form("/rest/v1/leads.json?_method=GET", "filterType=id&filterValues=1001,1002&fields=email,company")
        .await;
    assert_ok(&v);
    assert_eq!(v["result"].as_array().unwrap().len(), 2);
    assert!(v["result"][0]["company"].is_string());
    assert_eq!(h.emu.call_log().last().unwrap().method, "GET");

    let long = "1,".repeat(5000);
    let r = h
        .http
        .get(h.url(&format!("/rest/v1/leads.json?filterType=id&filterValues={long}")))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    let big = json!({"input": [{"email": "x".repeat(1_100_000)}]});
    let r = h.http.post(h.url("/rest/v1/leads.json")).bearer_auth(&h.token).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn content_type_json_path_and_method_errors() {
    let h = Harness::start(config()).await;
    let v = h.post_raw("/rest/v1/leads.json", "text/plain", "{\"input\":[]}".into()).await.1;
    assert_eq!(error_code(&v), Some("612"));
    let v = h.post_raw("/rest/v1/leads.json", "application/json", "{\"input\":[".into()).await.1;
    assert_eq!(error_code(&v), Some("609"));
    assert_eq!(error_code(&h.get("/rest/v1/nothing.json").await), Some("610"));
    let v = h.post_empty("/rest/v1/leads/describe.json").await;
    assert_eq!(error_code(&v), Some("605"));
    let log = h.emu.call_log();
    let c605 = log.iter().find(|c| c.outcome.as_deref() == Some("605")).unwrap();
    assert!(!c605.counted);
    let r = h.http.get(h.url("/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn sync_delete_and_merge_over_http() {
    let h = Harness::start(config()).await;
    let v = h
        .post(
            "/rest/v1/leads.json",
            json!({"action": "createOrUpdate", "input": [
                {"email": "a@example.com", "firstName": "A"},
                {"email": "b@example.com", "firstName": "B"},
                {"email": "c@example.com", "bogus": 1}
            ]}),
        )
        .await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["status"], "created");
    assert_eq!(v["result"][1]["status"], "created");
    assert_eq!(v["result"][2]["status"], "skipped");
    assert_eq!(v["result"][2]["reasons"][0]["code"], "1006");
    let a = v["result"][0]["id"].as_i64().unwrap();
    let b = v["result"][1]["id"].as_i64().unwrap();
    let v = h
        .post(
            "/rest/v1/leads.json",
            json!({"action": "createOnly", "input": [{"email": "a@example.com"}, {"id": 5, "email": "z@example.com"}]}),
        )
        .await;
    assert_eq!(v["result"][0]["reasons"][0]["code"], "1005");
    assert_eq!(v["result"][1]["reasons"][0]["code"], "1003");
    let v = h
        .post(
            "/rest/v1/leads.json",
            json!({"action": "updateOnly", "lookupField": "id", "input": [{"id": a, "title": "CTO"}, {"id": 999999, "title": "x"}]}),
        )
        .await;
    assert_eq!(v["result"][0], json!({"id": a, "status": "updated"}));
    assert_eq!(v["result"][1]["reasons"][0]["code"], "1004");
    assert_eq!(h.emu.lead(a).unwrap()["title"], "CTO");
    h.emu.create_lead(obj(json!({"email": "dup@example.com"})));
    h.emu.create_lead(obj(json!({"email": "dup@example.com"})));
    let v = h.post("/rest/v1/leads.json", json!({"input": [{"email": "dup@example.com", "title": "x"}]})).await;
    assert_eq!(v["result"][0]["reasons"][0]["code"], "1007");

    let token = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-01T00:00:00Z").await;
    let token = token["nextPageToken"].as_str().unwrap().to_string();
    let m = h.post_empty(&format!("/rest/v1/leads/{a}/merge.json?leadId={b}")).await;
    assert_ok(&m);
    assert!(h.emu.lead(b).is_none());
    let acts = h.get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds=32")).await;
    let merges = acts["result"].as_array().unwrap();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0]["leadId"], a);
    let merge_ids = merges[0]["attributes"].as_array().unwrap().iter().find(|x| x["name"] == "Merge IDs").unwrap();
    assert_eq!(merge_ids["value"], b.to_string());
    assert_eq!(error_code(&h.post_empty(&format!("/rest/v1/leads/{a}/merge.json?leadId=424242")).await), Some("1004"));

    let d = h.post("/rest/v1/leads/delete.json", json!({"input": [{"id": a}, {"id": 777777}]})).await;
    assert_eq!(d["result"][0], json!({"id": a, "status": "deleted"}));
    assert_eq!(d["result"][1]["status"], "skipped");
    assert_eq!(d["result"][1]["reasons"][0]["code"], "1004");
    assert!(h.emu.lead(a).is_none());
}

#[tokio::test]
async fn lead_changes_report_updates_filtered_to_requested_fields() {
    let h = Harness::start(config()).await;
    h.emu.seed_world(&seed::generate(10, 5));
    let t = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-15T14:00:00Z").await;
    assert_ok(&t);
    assert!(t.get("result").is_none());
    let token = t["nextPageToken"].as_str().unwrap().to_string();
    // Seeded New Lead activities are dated at createdAt (2024–2025) so they are before the token.
    let before = h.emu.lead(1003).unwrap();
    h.emu.clock().advance(ChronoDuration::seconds(5));
    assert!(h.emu.update_lead(1003, obj(json!({"firstName": "Renamed", "title": null, "company": before["company"]}))));
    let new_id = h.emu.create_lead(obj(json!({"email": "new@example.com"})));
    assert!(!h.emu.update_lead(424242, obj(json!({"firstName": "x"}))));

    let v = h.get(&format!("/rest/v1/activities/leadchanges.json?nextPageToken={token}&fields=firstName")).await;
    assert_ok(&v);
    assert_eq!(v["moreResult"], false);
    let r = v["result"].as_array().unwrap();
    assert_eq!(r.len(), 2, "{v}");
    assert_eq!(r[0]["activityTypeId"], 13);
    assert_eq!(r[0]["leadId"], 1003);
    assert_eq!(r[0]["fields"][0]["name"], "firstName");
    assert_eq!(r[0]["fields"][0]["newValue"], "Renamed");
    assert_eq!(r[0]["fields"][0]["oldValue"], before.get("firstName").cloned().unwrap_or(Value::Null));
    assert_eq!(r[1]["activityTypeId"], 12);
    assert_eq!(r[1]["leadId"], new_id);
    assert!(r[0]["marketoGUID"].is_string());

    // The resume token sees nothing new, and reports moreResult false with a token.
    let next = v["nextPageToken"].as_str().unwrap();
    let again = h.get(&format!("/rest/v1/activities/leadchanges.json?nextPageToken={next}&fields=firstName")).await;
    assert!(again["result"].as_array().is_none_or(|a| a.is_empty()));
    assert!(again["nextPageToken"].is_string());

    // Title was cleared (if it was set): a 13 with newValue null shows under fields=title.
    let t2 = h.get(&format!("/rest/v1/activities/leadchanges.json?nextPageToken={token}&fields=title")).await;
    let title_changes = t2["result"].as_array().unwrap().iter().filter(|a| a["activityTypeId"] == 13).count();
    assert_eq!(title_changes, usize::from(before.contains_key("title")));

    assert_eq!(
        error_code(&h.get(&format!("/rest/v1/activities/leadchanges.json?nextPageToken={token}")).await),
        Some("1003")
    );
    assert_eq!(error_code(&h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=yesterday").await), Some("704"));

    // activities.json shows the same change with New/Old Value attributes.
    let v = h.get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds=13,12")).await;
    let first = &v["result"][0];
    assert_eq!(first["primaryAttributeValue"], "First Name");
    assert!(
        first["attributes"].as_array().unwrap().iter().any(|a| a["name"] == "New Value" && a["value"] == "Renamed")
    );
    let too_many = h
        .get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds=1,2,3,6,7,8,9,10,11,12,13"))
        .await;
    assert_eq!(error_code(&too_many), Some("1003"));
    let leads: Vec<String> = (0..31).map(|i| i.to_string()).collect();
    let v = h
        .get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds=13&leadIds={}", leads.join(",")))
        .await;
    assert_eq!(error_code(&v), Some("1003"));
}

#[tokio::test]
async fn scan_blocks_give_short_and_empty_pages() {
    let h = Harness::start(MarketoConfig { scan_block: 3, ..config() }).await;
    let t = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-01T00:00:00Z").await;
    let mut token = t["nextPageToken"].as_str().unwrap().to_string();
    let a = h.emu.create_lead(obj(json!({"email": "a@example.com"})));
    for i in 0..6 {
        h.emu.update_lead(a, obj(json!({"title": format!("t{i}")})));
    }
    h.emu.delete_lead(a);
    let mut pages = Vec::new();
    loop {
        let v = h.get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds=37")).await;
        assert_ok(&v);
        assert!(v["nextPageToken"].is_string());
        pages.push(v["result"].as_array().map_or(0, Vec::len));
        token = v["nextPageToken"].as_str().unwrap().to_string();
        if v["moreResult"] == false {
            break;
        }
    }
    assert_eq!(pages, vec![0, 0, 1]);
}

#[tokio::test]
async fn deleted_leads_are_reported_then_pruned_after_14_days() {
    let h = Harness::start(config()).await;
    h.emu.seed_world(&seed::generate(3, 1));
    let t = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-15T00:00:00Z").await;
    let token = t["nextPageToken"].as_str().unwrap().to_string();
    assert!(h.emu.delete_lead(1002));
    assert!(!h.emu.delete_lead(1002));
    assert_eq!(h.emu.leads().len(), 2);
    let v = h.get(&format!("/rest/v1/activities/deletedleads.json?nextPageToken={token}")).await;
    assert_eq!(v["result"].as_array().unwrap().len(), 1);
    assert_eq!(v["result"][0]["leadId"], 1002);
    assert_eq!(v["result"][0]["activityTypeId"], 37);
    h.emu.clock().advance(ChronoDuration::days(15));
    let token2 = fetch_token(&h.emu, &h.http, h.emu.client_id(), h.emu.client_secret()).await;
    let v = json_of(
        h.http.get(h.url(&format!("/rest/v1/activities/deletedleads.json?nextPageToken={token}"))).bearer_auth(token2),
    )
    .await;
    assert_ok(&v);
    assert!(v["result"].as_array().is_none_or(|a| a.is_empty()), "{v}");
}

#[tokio::test]
async fn activity_types_include_standard_and_sales_types() {
    let h = Harness::start(config()).await;
    let t = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-01T00:00:00Z").await;
    let lead = h.emu.create_lead(obj(json!({"email": "s@example.com"})));
    let id = h.emu.add_activity(lead, 39, Some("Hello (SIA-1)"), vec![("Sent by".into(), json!("rep@example.com"))]);
    let v = h
        .get(&format!(
            "/rest/v1/activities.json?nextPageToken={}&activityTypeIds=39",
            t["nextPageToken"].as_str().unwrap()
        ))
        .await;
    assert_eq!(v["result"][0]["id"], id);
    assert_eq!(v["result"][0]["primaryAttributeValue"], "Hello (SIA-1)");
    assert_eq!(v["result"][0]["attributes"], json!([{"name": "Sent by", "value": "rep@example.com"}]));
    let v = h.get("/rest/v1/activities/types.json").await;
    let types = v["result"].as_array().unwrap();
    for (id, name) in [
        (12, "New Lead"),
        (13, "Change Data Value"),
        (37, "Delete Lead"),
        (39, "Send Sales Email"),
        (46, "Interesting Moment"),
        (48, "Sales Email Bounced"),
    ] {
        assert!(types.iter().any(|t| t["id"] == id && t["name"] == name), "{id} {name}");
    }
}

#[tokio::test]
async fn usage_stats_count_calls() {
    let h = Harness::start(config()).await;
    h.get("/rest/v1/leads/describe.json").await;
    h.get("/rest/v1/leads/describe.json").await;
    let v = h.get("/rest/v1/stats/usage.json").await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["total"], 3);
    assert_eq!(v["result"][0]["users"][0]["count"], 3);
    assert_eq!(error_code(&h.get("/rest/v1/leads.json?filterType=firstName&filterValues=x").await), Some("1011"));
    let v = h.get("/rest/v1/stats/errors.json").await;
    assert_eq!(v["result"][0]["errors"], json!([{"errorCode": "1011", "count": 1}]));
    let v = h.get("/rest/v1/stats/usage/last7days.json").await;
    assert_eq!(v["result"].as_array().unwrap().len(), 7);
    assert_eq!(v["result"][0]["total"], 6);
    assert_eq!(v["result"][1]["total"], 0);
}

#[tokio::test]
async fn faults_error_drop_malformed_and_apply_then_drop() {
    let h = Harness::start(config()).await;
    let plan = FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Nth(2), FaultAction::Error(MarketoFault::code("606"))).on_path("/describe.json"),
            FaultRule::new(Trigger::Nth(1), FaultAction::DropConnection).on_path("/describe2.json"),
            FaultRule::new(Trigger::Nth(1), FaultAction::MalformedBody).on_path("/types.json"),
            FaultRule::new(Trigger::Nth(1), FaultAction::ApplyThenDrop).on_path("/leads.json").on_method("POST"),
            FaultRule::new(Trigger::Nth(1), FaultAction::Error(MarketoFault::code("502"))).on_path("/usage.json"),
            FaultRule::new(Trigger::Nth(1), FaultAction::Error(MarketoFault::code("608"))).on_path("/leadchanges.json"),
        ],
        9,
    );
    h.emu.set_faults(plan);
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);
    let v = h.get("/rest/v1/leads/describe.json").await;
    assert_eq!(error_code(&v), Some("606"));
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);

    let dropped = async {
        let r = h.http.get(h.url("/rest/v1/leads/describe2.json")).bearer_auth(&h.token).send().await?;
        r.bytes().await
    }
    .await;
    assert!(dropped.is_err(), "connection should be dropped");
    assert_ok(&h.get("/rest/v1/leads/describe2.json").await);

    let text = h.get_text("/rest/v1/activities/types.json").await.2;
    assert!(serde_json::from_str::<Value>(&text).is_err());

    let applied = async {
        let r = h
            .http
            .post(h.url("/rest/v1/leads.json"))
            .bearer_auth(&h.token)
            .json(&json!({"input": [{"email": "ghost@example.com"}]}))
            .send()
            .await?;
        r.bytes().await
    }
    .await;
    assert!(applied.is_err());
    assert!(h.emu.leads().iter().any(|l| l["email"] == "ghost@example.com"), "the write was applied");

    let r = h.http.get(h.url("/rest/v1/stats/usage.json")).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), Some("502"));

    let t = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-01T00:00:00Z").await;
    let v = h
        .get(&format!(
            "/rest/v1/activities/leadchanges.json?nextPageToken={}&fields=email",
            t["nextPageToken"].as_str().unwrap()
        ))
        .await;
    assert_eq!(error_code(&v), Some("608"));
    let log = h.emu.call_log();
    assert!(log.iter().any(|c| c.outcome.as_deref() == Some("dropped") && c.http_status == 0));
    assert!(log.iter().any(|c| c.outcome.as_deref() == Some("608") && !c.counted));
    assert!(log.iter().any(|c| c.outcome.as_deref() == Some("606") && c.counted));
}

#[tokio::test]
async fn starts_on_a_given_port_and_shuts_down() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let cfg = MarketoConfig { bind: ([127, 0, 0, 1], port).into(), ..config() };
    let emu = MarketoEmulator::start(cfg).await.unwrap();
    assert_eq!(emu.base_url(), format!("http://127.0.0.1:{port}"));
    let http = reqwest::Client::new();
    let tok = fetch_token(&emu, &http, "salesync-emulator-client", "salesync-emulator-secret").await;
    assert!(tok.ends_with(":emu"));
    emu.clone().shutdown().await;
    let r = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/identity/oauth/token")).send().await;
    assert!(r.is_err());
}

#[tokio::test]
async fn identity_has_its_own_fault_plan() {
    let h = Harness::start(config()).await;
    h.emu.set_identity_faults(FaultPlan::new(
        vec![
            FaultRule::new(Trigger::Nth(1), FaultAction::Error(MarketoFault::code("502"))),
            FaultRule::new(Trigger::Nth(2), FaultAction::DropConnection),
        ],
        1,
    ));
    let q = [
        ("grant_type", "client_credentials"),
        ("client_id", h.emu.client_id()),
        ("client_secret", h.emu.client_secret()),
    ];
    let r = h.http.get(h.url("/identity/oauth/token")).query(&q).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let dropped = async { h.http.get(h.url("/identity/oauth/token")).query(&q).send().await?.bytes().await }.await;
    assert!(dropped.is_err());
    let ok = fetch_token(&h.emu, &h.http, h.emu.client_id(), h.emu.client_secret()).await;
    assert_eq!(ok, h.token);
    // The API plan is untouched by identity calls.
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);
}

#[tokio::test]
async fn rate_window_also_rolls_in_real_time_under_a_frozen_clock() {
    let limits = MarketoLimits { calls_per_window: 2, window: Duration::from_millis(300), ..MarketoLimits::default() };
    let h = Harness::start(MarketoConfig { limits, ..config() }).await;
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);
    assert_eq!(error_code(&h.get("/rest/v1/leads/describe.json").await), Some("606"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_ok(&h.get("/rest/v1/leads/describe.json").await);
    assert_eq!(h.emu.max_calls_in_any_window(), 2);
}

/// Leads by id answer in id order whatever order the values come in, each lead once, unknown ids
/// and non-canonical spellings matching nothing; other filters match case-insensitively.
#[tokio::test]
async fn leads_by_id_and_email_filters_match_like_marketo() {
    let h = Harness::start(config()).await;
    let world = seed::generate(30, 5);
    h.emu.seed_world(&world);
    let v = h.get("/rest/v1/leads.json?filterType=id&filterValues=1010,1002,1010,99999,01003,1005").await;
    assert_ok(&v);
    let ids: Vec<i64> = v["result"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![1002, 1005, 1010]);
    let email = world.people[3].email.clone().unwrap();
    let v = h.get(&format!("/rest/v1/leads.json?filterType=email&filterValues={}", email.to_uppercase())).await;
    assert_ok(&v);
    let hits: Vec<i64> = v["result"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(hits.contains(&world.people[3].marketo_id), "{email}: {hits:?}");
}

/// The wire forms marketorestpython sends (issue #14): leads by filter as a form body carrying
/// `_method=GET` with repeated `fields` keys, lead by id with repeated `fields`, and
/// `DELETE /rest/v1/leads.json` with a JSON `input`.
#[tokio::test]
async fn marketorestpython_wire_forms() {
    let h = Harness::start(config()).await;
    let world = seed::generate(10, 5);
    h.emu.seed_world(&world);
    let person = world.people.iter().find(|p| p.email.is_some()).unwrap();
    let (id, email) = (person.marketo_id, person.email.clone().unwrap());

    // get_multiple_leads_by_filter_type, long form: everything in the form body.
    let body = format!(
        "_method=GET&filterType=email&filterValues={}&fields=id&fields=email&fields=createdAt",
        email.replace('@', "%40")
    );
    let v = h
        .post_raw("/rest/v1/leads.json", "application/x-www-form-urlencoded; charset=utf-8", body.into_bytes())
        .await
        .1;
    assert_ok(&v);
    let found = v["result"].as_array().unwrap();
    assert!(found.iter().any(|r| r["id"] == id), "{v}");
    for r in found {
        assert_eq!(r["email"].as_str().map(str::to_lowercase), Some(email.to_lowercase()), "{r}");
        assert!(r["createdAt"].is_string(), "every repeated field is returned: {r}");
    }
    // `_method=GET` in the query string with the rest in the body still works.
    let v = h
        .post_form(
            "/rest/v1/leads.json?_method=GET",
            &format!("filterType=id&filterValues={id}&fields=email,firstName"),
        )
        .await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["id"], id);
    assert!(v["result"][0].get("firstName").is_some(), "{v}");

    // get_lead_by_id with a list of fields: repeated query keys.
    let v = h.get(&format!("/rest/v1/lead/{id}.json?fields=id&fields=email&fields=createdAt")).await;
    assert_ok(&v);
    let r = &v["result"][0];
    assert_eq!(r["id"], id);
    assert!(r["email"].is_string() && r["createdAt"].is_string(), "{r}");
    // A scalar given twice is not silently one of them.
    let v = h.get("/rest/v1/leads.json?filterType=id&filterValues=1&batchSize=1&batchSize=2").await;
    assert_eq!(error_code(&v), Some("1003"), "{v}");

    // delete_lead: DELETE /rest/v1/leads.json with a JSON input, like leads/delete.json.
    let v = json_of(
        h.http
            .delete(h.url("/rest/v1/leads.json"))
            .bearer_auth(&h.token)
            .json(&json!({"input": [{"id": id}, {"id": 99_999_999}]})),
    )
    .await;
    assert_ok(&v);
    assert_eq!(v["result"][0], json!({"id": id, "status": "deleted"}));
    assert_eq!(v["result"][1]["status"], "skipped");
    assert_eq!(v["result"][1]["reasons"][0]["code"], "1004");
    assert!(h.emu.lead(id).is_none());
    // Other methods on leads.json are still refused with 605.
    let v = json_of(h.http.put(h.url("/rest/v1/leads.json")).bearer_auth(&h.token)).await;
    assert_eq!(error_code(&v), Some("605"), "{v}");
}
