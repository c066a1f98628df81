//! Bulk API 2.0 ingest jobs over real HTTP, in the wire form simple-salesforce's `sf.bulk2.<T>`
//! uses (issue #14: its `insert` got 404 NOT_FOUND): create (JSON), upload (`PUT …/batches`,
//! `text/csv`, 201), close (`PATCH {"state":"UploadComplete"}`), poll, and the three result CSVs;
//! update, upsert by external id, delete, abort, and the errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use reqwest::Method;
use salesforce_common::{H, code, parse_csv};
use salesync_emulator::seed;
use serde_json::{Value, json};

/// The body and headers simple-salesforce 1.12 sends for `create_job` of an ingest operation.
async fn create(h: &H, object: &str, operation: &str, ext: Option<&str>) -> Value {
    let mut body = json!({"operation": operation, "columnDelimiter": "COMMA", "lineEnding": "LF", "object": object, "contentType": "CSV"});
    if let Some(f) = ext {
        body["externalIdFieldName"] = json!(f);
    }
    let r = h.raw(Method::POST, "/jobs/ingest", Some(body), &[("Accept", "application/json")]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["state"], "Open", "{v}");
    assert_eq!(v["jobType"], "V2Ingest", "{v}");
    v
}

async fn upload(h: &H, id: &str, csv: &str) -> (u16, String) {
    let r = h
        .http
        .put(h.api(&format!("/jobs/ingest/{id}/batches")))
        .bearer_auth(&h.token)
        .header("Content-Type", "text/csv")
        .header("Accept", "application/json")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn close(h: &H, id: &str, state: &str) -> (u16, Value) {
    h.call(Method::PATCH, &format!("/jobs/ingest/{id}"), Some(json!({"state": state}))).await
}

/// Polls until JobComplete, as `wait_for_job` does.
async fn wait(h: &H, id: &str) -> Value {
    for _ in 0..10 {
        let (s, v) = h.get(&format!("/jobs/ingest/{id}")).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] == "JobComplete" {
            return v;
        }
        assert_eq!(v["state"], "InProgress", "{v}");
    }
    panic!("job {id} never completed");
}

async fn results(h: &H, id: &str, kind: &str) -> Vec<Vec<String>> {
    let r = h.raw(Method::GET, &format!("/jobs/ingest/{id}/{kind}/"), None, &[("Accept", "text/csv")]).await;
    assert_eq!(r.status, 200, "{kind}: {}", r.text);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    parse_csv(&r.text, ',')
}

/// One whole job: create, upload, close, wait.
async fn run(h: &H, object: &str, operation: &str, ext: Option<&str>, csv: &str) -> (String, Value) {
    let job = create(h, object, operation, ext).await;
    let id = job["id"].as_str().unwrap().to_string();
    let (s, t) = upload(h, &id, csv).await;
    assert_eq!(s, 201, "{t}");
    let (s, v) = close(h, &id, "UploadComplete").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "UploadComplete", "{v}");
    (id.clone(), wait(h, &id).await)
}

#[tokio::test]
async fn ingest_insert_in_simple_salesforce_wire_form() {
    let h = H::default().await;
    h.emu.seed_world(&seed::generate(20, 2));
    let before = h.emu.records("Contact").len();
    let csv = "LastName,Email,Title\nOne,one@ingest.example.com,\"Head, \"\"Ops\"\"\"\nTwo,two@ingest.example.com,\n,nolast@ingest.example.com,x\n";
    let (id, done) = run(&h, "Contact", "insert", None, csv).await;
    assert_eq!(
        (done["numberRecordsProcessed"].as_u64(), done["numberRecordsFailed"].as_u64()),
        (Some(3), Some(1)),
        "{done}"
    );
    let ok = results(&h, &id, "successfulResults").await;
    assert_eq!(ok[0], ["sf__Id", "sf__Created", "LastName", "Email", "Title"]);
    assert_eq!(ok.len(), 3, "{ok:?}");
    assert!(ok[1][0].starts_with("003") && ok[1][1] == "true", "{ok:?}");
    assert_eq!(ok[1][4], "Head, \"Ops\"", "quoting kept");
    let bad = results(&h, &id, "failedResults").await;
    assert_eq!(bad[0], ["sf__Id", "sf__Error", "LastName", "Email", "Title"]);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad[1][1].starts_with("REQUIRED_FIELD_MISSING:") && bad[1][1].ends_with(" --"), "{bad:?}");
    assert_eq!(results(&h, &id, "unprocessedrecords").await, vec![vec!["LastName", "Email", "Title"]]);
    assert_eq!(h.emu.records("Contact").len(), before + 2);
    let c = h.emu.records("Contact").into_iter().find(|c| c["Id"] == ok[1][0].as_str()).unwrap();
    assert_eq!(c["Title"], "Head, \"Ops\"");
    // An empty value leaves the field unset.
    let two = h.emu.records("Contact").into_iter().find(|c| c["Id"] == ok[2][0].as_str()).unwrap();
    assert!(two["Title"].is_null(), "{two:?}");

    // The job list and the job info.
    let (s, list) = h.get("/jobs/ingest").await;
    assert_eq!(s, 200);
    assert!(list["records"].as_array().unwrap().iter().any(|j| j["id"] == id.as_str()), "{list}");
    h.delete_gone(&format!("/jobs/ingest/{id}")).await;
}

#[tokio::test]
async fn ingest_update_upsert_delete_and_abort() {
    let h = H::default().await;
    h.emu.seed_world(&seed::generate(20, 2));
    let contacts = h.emu.records("Contact");
    let (a, b) = (contacts[0]["Id"].as_str().unwrap(), contacts[1]["Id"].as_str().unwrap());

    // update: by Id; #N/A clears a field; an unknown id fails alone.
    let csv = format!("Id,Title,Phone\n{a},Boss,#N/A\n{b},Deputy,\n003000000000000AAA,Nobody,\n");
    let (id, done) = run(&h, "Contact", "update", None, &csv).await;
    assert_eq!(
        (done["numberRecordsProcessed"].as_u64(), done["numberRecordsFailed"].as_u64()),
        (Some(3), Some(1)),
        "{done}"
    );
    let ok = results(&h, &id, "successfulResults").await;
    assert_eq!(ok.len(), 3);
    assert!(ok[1..].iter().all(|r| r[1] == "false"), "{ok:?}");
    let after = h.emu.records("Contact");
    let ra = after.iter().find(|c| c["Id"] == a).unwrap();
    assert_eq!(ra["Title"], "Boss");
    assert!(ra["Phone"].is_null());

    // upsert of Tasks by the external id field: one created, then the same key updates.
    let owner = h.emu.records("User")[0]["Id"].as_str().unwrap().to_string();
    let csv = format!(
        "Salesync_Activity_Id__c,Subject,Status,Priority,OwnerId,WhoId\nbulk-1,Call,Completed,Normal,{owner},{a}\n"
    );
    let (id, done) = run(&h, "Task", "upsert", Some("Salesync_Activity_Id__c"), &csv).await;
    assert_eq!(done["numberRecordsFailed"], 0, "{done}");
    assert_eq!(done["externalIdFieldName"], "Salesync_Activity_Id__c");
    let first = results(&h, &id, "successfulResults").await;
    assert_eq!(first[1][1], "true", "{first:?}");
    let csv = "Salesync_Activity_Id__c,Subject\nbulk-1,Call again\n";
    let (id, _) = run(&h, "Task", "upsert", Some("Salesync_Activity_Id__c"), csv).await;
    let second = results(&h, &id, "successfulResults").await;
    assert_eq!((second[1][0].as_str(), second[1][1].as_str()), (first[1][0].as_str(), "false"), "{second:?}");
    let tasks: Vec<_> =
        h.emu.records("Task").into_iter().filter(|t| t["Salesync_Activity_Id__c"] == "bulk-1").collect();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["Subject"], "Call again");

    // delete.
    let csv = format!("Id\n{b}\n");
    let (_, done) = run(&h, "Contact", "delete", None, &csv).await;
    assert_eq!(done["numberRecordsFailed"], 0, "{done}");
    let (s, _) = h.get(&format!("/sobjects/Contact/{b}")).await;
    assert_eq!(s, 404);

    // abort before closing: nothing applied, every row unprocessed.
    let job = create(&h, "Contact", "insert", None).await;
    let id = job["id"].as_str().unwrap();
    assert_eq!(upload(&h, id, "LastName\nNever\n").await.0, 201);
    let (s, v) = close(&h, id, "Aborted").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("Aborted")), "{v}");
    assert_eq!(results(&h, id, "unprocessedrecords").await, vec![vec!["LastName"], vec!["Never"]]);
    assert!(h.emu.records("Contact").iter().all(|c| c["LastName"] != "Never"));
}

#[tokio::test]
async fn ingest_errors() {
    let h = H::default().await;
    let bad = |body: Value| {
        let h = &h;
        async move { h.call(Method::POST, "/jobs/ingest", Some(body)).await }
    };
    let (s, v) = bad(json!({"object": "Contact", "operation": "merge"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"), "{v}");
    let (s, v) = bad(json!({"object": "Nope", "operation": "insert"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"), "{v}");
    let (s, v) = bad(json!({"object": "Task", "operation": "upsert"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"), "externalIdFieldName missing: {v}");
    let (s, v) = bad(json!({"object": "Task", "operation": "upsert", "externalIdFieldName": "Subject"})).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOB"), "not an external id: {v}");

    let job = create(&h, "Contact", "insert", None).await;
    let id = job["id"].as_str().unwrap();
    // results before the job completes; a ragged row; a closed job takes no upload.
    let r = h.raw(Method::GET, &format!("/jobs/ingest/{id}/successfulResults"), None, &[]).await;
    assert_eq!((r.status, code(&r.json())), (400, "INVALIDJOBSTATE"), "{}", r.text);
    let (s, t) = upload(&h, id, "LastName,Email\nA\n").await;
    assert_eq!(s, 400, "{t}");
    assert_eq!(upload(&h, id, "LastName\nA\n").await.0, 201);
    let (s, _) = close(&h, id, "UploadComplete").await;
    assert_eq!(s, 200);
    let (s, t) = upload(&h, id, "LastName\nB\n").await;
    assert_eq!(s, 400, "{t}");
    let (s, v) = close(&h, id, "UploadComplete").await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOBSTATE"), "{v}");
    // a job closed with no data fails.
    let job = create(&h, "Contact", "insert", None).await;
    let id = job["id"].as_str().unwrap();
    let (s, _) = close(&h, id, "UploadComplete").await;
    assert_eq!(s, 200);
    let (s, v) = h.get(&format!("/jobs/ingest/{id}")).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("Failed")), "{v}");
    assert!(v["errorMessage"].is_string(), "{v}");
}
