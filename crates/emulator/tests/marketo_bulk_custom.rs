//! Marketo emulator over real HTTP: custom activity types and records, bulk lead/activity extract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod marketo_common;

use chrono::Duration as ChronoDuration;
use marketo_common::*;
use salesync_emulator::faults::{FaultAction, FaultPlan, FaultRule, Trigger};
use salesync_emulator::marketo::{MarketoConfig, MarketoFault, MarketoLimits};
use salesync_emulator::seed;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn type_body(api: &str) -> Value {
    json!({
        "apiName": api,
        "name": format!("{api} name"),
        "description": "made by a test",
        "triggerName": format!("Is {api}"),
        "filterName": format!("Was {api}"),
        "primaryAttribute": {"apiName": "subject", "name": "Email Subject", "dataType": "string"}
    })
}

#[tokio::test]
async fn custom_activity_type_lifecycle_add_and_read_back() {
    let h = Harness::start(config()).await;
    h.emu.seed_world(&seed::generate(3, 2));
    let v = h.post("/rest/v1/activities/external/type.json", type_body("salesyncSendSalesEmail")).await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["status"], "draft");
    let type_id = v["result"][0]["id"].as_i64().unwrap();
    assert!(type_id >= 100_000);
    let dup = h.post("/rest/v1/activities/external/type.json", type_body("salesyncSendSalesEmail")).await;
    assert_eq!(dup["success"], false);

    let attrs = json!({"attributes": [
        {"apiName": "sentBy", "name": "Sent By", "dataType": "email"},
        {"apiName": "body", "name": "Body", "dataType": "text"}
    ]});
    let v = h.post("/rest/v1/activities/external/type/salesyncSendSalesEmail/attributes/create.json", attrs).await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["attributes"].as_array().unwrap().len(), 2);

    let record = |lead: i64, subject: &str| {
        json!({"leadId": lead, "activityDate": "2026-06-15T17:00:00+02:00", "activityTypeId": type_id,
               "primaryAttributeValue": subject,
               "attributes": [{"apiName": "sentBy", "value": "rep@example.com"}, {"name": "Body", "value": "hi"}]})
    };
    // Not approved yet: skipped.
    let v = h.post("/rest/v1/activities/external.json", json!({"input": [record(1001, "early")]})).await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["status"], "skipped");
    assert_eq!(v["result"][0]["errors"][0]["code"], "1003");
    let listed = h.get("/rest/v1/activities/types.json").await;
    assert!(!listed["result"].as_array().unwrap().iter().any(|t| t["id"] == type_id));

    let v = h.post_empty("/rest/v1/activities/external/type/salesyncSendSalesEmail/approve.json").await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["status"], "approved");
    let d = h.get("/rest/v1/activities/external/type/salesyncSendSalesEmail/describe.json").await;
    assert_eq!(d["result"][0]["primaryAttribute"]["apiName"], "subject");
    let listed = h.get("/rest/v1/activities/types.json").await;
    let t = listed["result"].as_array().unwrap().iter().find(|t| t["id"] == type_id).unwrap().clone();
    assert_eq!(t["apiName"], "salesyncSendSalesEmail");

    let t0 = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-01T00:00:00Z").await;
    let token = t0["nextPageToken"].as_str().unwrap().to_string();
    let mut bad_attr = record(1001, "bad");
    bad_attr["attributes"] = json!([{"apiName": "nope", "value": 1}]);
    let mut huge = record(1002, "huge");
    huge["attributes"] = json!([{"apiName": "body", "value": "x".repeat(70_000)}]);
    let input = json!({"input": [record(1001, "Intro (SIA-1)"), record(999_999, "ghost"), bad_attr, huge, record(1002, "Second")]});
    let v = h.post("/rest/v1/activities/external.json", input).await;
    assert_ok(&v);
    let r = v["result"].as_array().unwrap();
    assert_eq!(r[0]["status"], "added");
    assert!(r[0]["marketoGUID"].is_string());
    assert_eq!(r[1]["status"], "skipped");
    assert_eq!(r[1]["errors"][0]["code"], "1004");
    assert_eq!(r[2]["errors"][0]["code"], "1006");
    assert_eq!(r[3]["errors"][0]["code"], "1049");
    assert_eq!(r[4]["status"], "added");
    let added = h.emu.custom_activities();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["primaryAttributeValue"], "Intro (SIA-1)");
    assert_eq!(added[0]["activityDate"], "2026-06-15T15:00:00Z");

    let v = h.get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds={type_id}")).await;
    let acts = v["result"].as_array().unwrap();
    assert_eq!(acts.len(), 2);
    assert_eq!(acts[0]["leadId"], 1001);
    assert_eq!(acts[0]["primaryAttributeValue"], "Intro (SIA-1)");
    assert_eq!(acts[0]["id"].as_i64(), r[0]["id"].as_i64());
    let sent_by = acts[0]["attributes"].as_array().unwrap().iter().find(|a| a["apiName"] == "sentBy").unwrap();
    assert_eq!(sent_by["name"], "Sent By");
    assert_eq!(sent_by["value"], "rep@example.com");

    // Editing an approved type gives "approved with draft"; the approved version keeps working.
    let v = h
        .post(
            "/rest/v1/activities/external/type/salesyncSendSalesEmail/attributes/create.json",
            json!({"attributes": [{"apiName": "extra", "name": "Extra", "dataType": "string"}]}),
        )
        .await;
    assert_eq!(v["result"][0]["status"], "approved with draft");
    let d = h.get("/rest/v1/activities/external/type/salesyncSendSalesEmail/describe.json?draft=true").await;
    assert_eq!(d["result"][0]["attributes"].as_array().unwrap().len(), 3);
    let d = h.get("/rest/v1/activities/external/type/salesyncSendSalesEmail/describe.json").await;
    assert_eq!(d["result"][0]["attributes"].as_array().unwrap().len(), 2);
    let l = h.get("/rest/v1/activities/external/types.json").await;
    assert_eq!(l["result"].as_array().unwrap().len(), 1);
    assert_eq!(error_code(&h.get("/rest/v1/activities/external/type/unknownType/describe.json").await), Some("1013"));
}

#[tokio::test]
async fn custom_activity_type_and_attribute_limits() {
    let h = Harness::start(MarketoConfig { max_custom_activity_types: 2, ..config() }).await;
    assert_ok(&h.post("/rest/v1/activities/external/type.json", type_body("one")).await);
    assert_ok(&h.post("/rest/v1/activities/external/type.json", type_body("two")).await);
    let v = h.post("/rest/v1/activities/external/type.json", type_body("three")).await;
    assert_eq!(error_code(&v), Some("1027"));
    let attrs: Vec<Value> =
        (0..21).map(|i| json!({"apiName": format!("a{i}"), "name": format!("A {i}"), "dataType": "string"})).collect();
    let v = h
        .post("/rest/v1/activities/external/type/one/attributes/create.json", json!({"attributes": attrs[..20]}))
        .await;
    assert_ok(&v);
    let v = h
        .post("/rest/v1/activities/external/type/one/attributes/create.json", json!({"attributes": [attrs[20]]}))
        .await;
    assert_eq!(error_code(&v), Some("1028"));
    let too_many: Vec<Value> = (0..301).map(|_| json!({})).collect();
    let v = h.post("/rest/v1/activities/external.json", json!({"input": too_many})).await;
    assert_eq!(error_code(&v), Some("1003"));
}

async fn create_export(h: &Harness, kind: &str, body: Value) -> Value {
    h.post(&format!("/bulk/v1/{kind}/export/create.json"), body).await
}

#[tokio::test]
async fn bulk_lead_export_full_flow() {
    let cfg = MarketoConfig {
        bulk_processing_time: ChronoDuration::minutes(2),
        additional_clients: vec![("other".into(), "other-secret".into())],
        ..config()
    };
    let h = Harness::start(cfg).await;
    let now = h.emu.clock().now();
    let a =
        h.emu.create_lead(obj(json!({"email": "a@example.com", "firstName": "Ada, \"the\" first", "company": "Acme"})));
    let b = h.emu.create_lead(obj(json!({"email": "b@example.com", "firstName": "Bob"})));
    let body = json!({
        "fields": ["id", "firstName", "email", "title"],
        "format": "CSV",
        "columnHeaderNames": {"id": "Marketo Id"},
        "filter": {"createdAt": {"startAt": "2026-06-01T00:00:00Z", "endAt": "2026-06-30T00:00:00Z"}}
    });
    let v = create_export(&h, "leads", body).await;
    assert_ok(&v);
    assert_eq!(v["result"][0]["status"], "Created");
    let id = v["result"][0]["exportId"].as_str().unwrap().to_string();

    let r =
        h.http.get(h.url(&format!("/bulk/v1/leads/export/{id}/file.json"))).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));

    let v = h.post_empty(&format!("/bulk/v1/leads/export/{id}/enqueue.json")).await;
    assert_eq!(v["result"][0]["status"], "Queued");
    let v = h.post_empty(&format!("/bulk/v1/leads/export/{id}/enqueue.json")).await;
    assert_eq!(error_code(&v), Some("1029"));
    let v = h.get(&format!("/bulk/v1/leads/export/{id}/status.json")).await;
    assert_eq!(v["result"][0]["status"], "Processing");
    assert!(v["result"][0].get("fileSize").is_none());
    // Snapshot taken at processing start: a later lead is not in the file.
    h.emu.create_lead(obj(json!({"email": "late@example.com"})));
    let r =
        h.http.get(h.url(&format!("/bulk/v1/leads/export/{id}/file.json"))).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Another client cannot see the job.
    let other = fetch_token(&h.emu, &h.http, "other", "other-secret").await;
    let v = json_of(h.http.get(h.url(&format!("/bulk/v1/leads/export/{id}/status.json"))).bearer_auth(&other)).await;
    assert_eq!(v["success"], false);
    let v = json_of(h.http.get(h.url("/bulk/v1/leads/export.json")).bearer_auth(&other)).await;
    assert_eq!(v["result"], json!([]));

    h.emu.clock().advance(ChronoDuration::minutes(2));
    let v = h.get(&format!("/bulk/v1/leads/export/{id}/status.json")).await;
    let st = &v["result"][0];
    assert_eq!(st["status"], "Completed");
    assert_eq!(st["numberOfRecords"], 2);
    assert!(st["queuedAt"].is_string() && st["startedAt"].is_string() && st["finishedAt"].is_string());
    let file = h
        .http
        .get(h.url(&format!("/bulk/v1/leads/export/{id}/file.json")))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = String::from_utf8(file.to_vec()).unwrap();
    let expected = format!(
        "Marketo Id,firstName,email,title\n{a},\"Ada, \"\"the\"\" first\",a@example.com,null\n{b},Bob,b@example.com,null\n"
    );
    assert_eq!(text, expected);
    assert_eq!(st["fileSize"], file.len());
    assert_eq!(st["fileChecksum"], format!("sha256:{}", hex::encode(Sha256::digest(&file))));

    let r = h
        .http
        .get(h.url(&format!("/bulk/v1/leads/export/{id}/file.json")))
        .bearer_auth(&h.token)
        .header("Range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 0-9/{}", file.len()).as_str());
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[..10]);
    let r = h
        .http
        .get(h.url(&format!("/bulk/v1/leads/export/{id}/file.json")))
        .bearer_auth(&h.token)
        .header("Range", "bytes=10-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &file[10..]);

    let list = h.get("/bulk/v1/leads/export.json?status=Completed").await;
    assert_eq!(list["result"].as_array().unwrap().len(), 1);
    let v = h.post_empty(&format!("/bulk/v1/leads/export/{id}/cancel.json")).await;
    assert_eq!(v["success"], false);
    let _ = now;
}

#[tokio::test]
async fn bulk_filters_are_validated() {
    let h = Harness::start(MarketoConfig { bulk_updated_at_filter: false, ..config() }).await;
    let range = |s: &str, e: &str| json!({"startAt": s, "endAt": e});
    let v = create_export(
        &h,
        "leads",
        json!({"fields": ["id"], "filter": {"updatedAt": range("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z")}}),
    )
    .await;
    assert_eq!(error_code(&v), Some("1035"));
    let v = create_export(
        &h,
        "leads",
        json!({"fields": ["id"], "filter": {"createdAt": range("2026-05-01T00:00:00Z", "2026-06-02T00:00:00Z")}}),
    )
    .await;
    assert_eq!(error_code(&v), Some("1003"), "more than 31 days");
    let v = create_export(
        &h,
        "leads",
        json!({"fields": ["id"], "filter": {"createdAt": range("2026-06-01T00:00:00.000Z", "2026-06-02T00:00:00Z")}}),
    )
    .await;
    assert_eq!(error_code(&v), Some("1003"), "milliseconds");
    let v = create_export(
        &h,
        "leads",
        json!({"fields": ["id"], "filter": {
            "createdAt": range("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"),
            "staticListId": 5}}),
    )
    .await;
    assert_eq!(error_code(&v), Some("1003"), "two filters");
    let v = create_export(
        &h,
        "leads",
        json!({"fields": ["id", "nope"], "filter": {"createdAt": range("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z")}}),
    )
    .await;
    assert_eq!(error_code(&v), Some("1006"));
    let h2 = Harness::start(config()).await;
    let v = create_export(
        &h2,
        "leads",
        json!({"fields": ["id"], "filter": {"updatedAt": range("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z")}}),
    )
    .await;
    assert_ok(&v);
    let v = create_export(
        &h2,
        "activities",
        json!({"filter": {"createdAt": range("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"), "activityTypeIds": [37]}}),
    )
    .await;
    assert_eq!(error_code(&v), Some("1003"), "Delete Lead is not exportable");
}

#[tokio::test]
async fn bulk_queue_and_daily_quota_limits() {
    let limits = MarketoLimits { bulk_export_daily_bytes: 10, ..MarketoLimits::default() };
    let cfg = MarketoConfig { limits, bulk_processing_time: ChronoDuration::hours(1), ..config() };
    let h = Harness::start(cfg).await;
    h.emu.create_lead(obj(json!({"email": "a@example.com"})));
    let body = json!({"fields": ["id", "email"], "filter": {"createdAt": {"startAt": "2026-06-01T00:00:00Z", "endAt": "2026-06-30T00:00:00Z"}}});
    let mut ids = Vec::new();
    for _ in 0..11 {
        let v = create_export(&h, "leads", body.clone()).await;
        ids.push(v["result"][0]["exportId"].as_str().unwrap().to_string());
    }
    for id in &ids[..10] {
        assert_ok(&h.post_empty(&format!("/bulk/v1/leads/export/{id}/enqueue.json")).await);
    }
    let v = h.post_empty(&format!("/bulk/v1/leads/export/{}/enqueue.json", ids[10])).await;
    assert_eq!(error_code(&v), Some("1029"));
    let list = h.get("/bulk/v1/leads/export.json").await;
    let states: Vec<&str> = list["result"].as_array().unwrap().iter().map(|j| j["status"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|s| **s == "Processing").count(), 2, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "Queued").count(), 8);
    // Cancel the queued ones; the two processing finish and use up the tiny byte quota.
    for id in &ids[2..10] {
        let v = h.post_empty(&format!("/bulk/v1/leads/export/{id}/cancel.json")).await;
        assert_eq!(v["result"][0]["status"], "Cancelled");
    }
    let list = h.get("/bulk/v1/leads/export.json?status=Canceled").await;
    assert_eq!(list["result"].as_array().unwrap().len(), 8);
    assert_eq!(list["result"][0]["status"], "Canceled");
    h.emu.clock().advance(ChronoDuration::minutes(61));
    let token = fetch_token(&h.emu, &h.http, h.emu.client_id(), h.emu.client_secret()).await;
    let v = json_of(h.http.post(h.url(&format!("/bulk/v1/leads/export/{}/enqueue.json", ids[10]))).bearer_auth(token))
        .await;
    assert_eq!(error_code(&v), Some("1029"));
    assert_eq!(v["errors"][0]["message"], "Export daily quota exceeded");
}

#[tokio::test]
async fn bulk_activity_export_writes_attributes_as_json() {
    let h = Harness::start(config()).await;
    let a = h.emu.create_lead(obj(json!({"email": "a@example.com", "title": "Old"})));
    h.emu.clock().advance(ChronoDuration::seconds(10));
    h.emu.update_lead(a, obj(json!({"title": "New"})));
    h.emu.delete_lead(a);
    let v = create_export(
        &h,
        "activities",
        json!({"format": "TSV", "filter": {"createdAt": {"startAt": "2026-06-15T00:00:00Z", "endAt": "2026-06-16T00:00:00Z"}, "activityTypeIds": [12, 13]}}),
    )
    .await;
    assert_ok(&v);
    let id = v["result"][0]["exportId"].as_str().unwrap().to_string();
    assert_ok(&h.post_empty(&format!("/bulk/v1/activities/export/{id}/enqueue.json")).await);
    let st = h.get(&format!("/bulk/v1/activities/export/{id}/status.json")).await;
    assert_eq!(st["result"][0]["status"], "Completed");
    assert_eq!(st["result"][0]["numberOfRecords"], 2);
    let text = h.get_text(&format!("/bulk/v1/activities/export/{id}/file.json")).await.2;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "marketoGUID\tleadId\tactivityDate\tactivityTypeId\tcampaignId\tprimaryAttributeValueId\tprimaryAttributeValue\tattributes"
    );
    let cols: Vec<&str> = lines[2].split('\t').collect();
    assert_eq!(cols[3], "13");
    assert_eq!(cols[4], "null");
    let attrs: Value = serde_json::from_str(&cols[7].trim_matches('"').replace("\"\"", "\"")).unwrap();
    assert_eq!(attrs["New Value"], "New");
    assert_eq!(attrs["Old Value"], "Old");
}

#[tokio::test]
async fn bulk_download_can_break_off_midway_and_resume_with_range() {
    let h = Harness::start(config()).await;
    for i in 0..50 {
        h.emu.create_lead(obj(json!({"email": format!("p{i}@example.com"), "firstName": format!("P{i}")})));
    }
    let v = create_export(
        &h,
        "leads",
        json!({"fields": ["id", "email", "firstName"], "filter": {"createdAt": {"startAt": "2026-06-15T00:00:00Z", "endAt": "2026-06-16T00:00:00Z"}}}),
    )
    .await;
    let id = v["result"][0]["exportId"].as_str().unwrap().to_string();
    h.post_empty(&format!("/bulk/v1/leads/export/{id}/enqueue.json")).await;
    let st = h.get(&format!("/bulk/v1/leads/export/{id}/status.json")).await;
    let size = st["result"][0]["fileSize"].as_u64().unwrap() as usize;
    h.emu.set_faults(FaultPlan::new(
        vec![FaultRule::new(Trigger::Nth(1), FaultAction::<MarketoFault>::ApplyThenDrop).on_path("/file.json")],
        3,
    ));
    let url = h.url(&format!("/bulk/v1/leads/export/{id}/file.json"));
    let mut resp = h.http.get(&url).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    let broke = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(broke, "download should break off");
    assert_eq!(got.len(), size / 2);
    let rest =
        h.http.get(&url).bearer_auth(&h.token).header("Range", format!("bytes={}-", got.len())).send().await.unwrap();
    assert_eq!(rest.status(), 206);
    got.extend_from_slice(&rest.bytes().await.unwrap());
    assert_eq!(got.len(), size);
    assert_eq!(st["result"][0]["fileChecksum"], format!("sha256:{}", hex::encode(Sha256::digest(&got))));
    assert!(h.emu.call_log().iter().any(|c| c.outcome.as_deref() == Some("dropped-partial")));
}
