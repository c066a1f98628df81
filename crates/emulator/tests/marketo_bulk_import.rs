//! Marketo emulator over HTTP: bulk lead import (multipart upload, batch status on the emulator
//! clock, failures / warnings files, limits and bad input).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod marketo_common;

use chrono::Duration as ChronoDuration;
use marketo_common::*;
use salesync_emulator::marketo::{MarketoConfig, MarketoLimits};
use salesync_emulator::seed;
use serde_json::Value;

const MULTIPART: &str = "multipart/form-data; boundary=salesyncBoundary42";

async fn seeded(cfg: MarketoConfig) -> (Harness, String, i64) {
    let h = Harness::start(cfg).await;
    let world = seed::generate(10, 3);
    h.emu.seed_world(&world);
    let p = world.people.iter().find(|p| p.email.is_some()).unwrap();
    (h, p.email.clone().unwrap(), p.marketo_id)
}

fn batch(v: &Value) -> i64 {
    v["result"][0]["batchId"].as_i64().unwrap_or_else(|| panic!("no batchId: {v}"))
}

#[tokio::test]
async fn an_import_writes_leads_like_sync_and_reports_failures_and_warnings() {
    let (h, email, existing) = seeded(config()).await;
    let long_title = "T".repeat(300);
    let file = format!(
        "email,firstName,leadScore,title\n\
         imported.one@example.com,Ione,10,Engineer\n\
         {email},Renamed,,\n\
         bad.score@example.com,Bad,lots,\n\
         long.title@example.com,Long,,{long_title}\n\
         \"quoted, name@example.com\",\"Q, Uoted\",3,\n\
         ,NoEmail,,\n"
    );
    let created = h.upload("/bulk/v1/leads.json?format=csv&lookupField=email", &[], file.as_bytes()).await;
    assert_ok(&created);
    assert_eq!(created["result"][0]["status"], "Queued");
    let id = batch(&created);

    let status = h.get(&format!("/bulk/v1/leads/batch/{id}.json")).await;
    assert_ok(&status);
    let r = &status["result"][0];
    assert_eq!(r["status"], "Complete", "{status}");
    assert_eq!(r["batchId"], id);
    assert_eq!(r["numOfLeadsProcessed"], 4);
    assert_eq!(r["numOfRowsFailed"], 2);
    assert_eq!(r["numOfRowsWithWarning"], 1);
    assert!(r["message"].as_str().unwrap().contains("2 rows failed"), "{r}");

    // Leads written, with the same activities Sync Leads produces.
    let one = h.get("/rest/v1/leads.json?filterType=email&filterValues=imported.one@example.com&fields=firstName,leadScore,title").await;
    assert_eq!(one["result"][0]["firstName"], "Ione");
    assert_eq!(one["result"][0]["leadScore"], 10);
    let one_id = one["result"][0]["id"].as_i64().unwrap();
    let acts = h.activities_of("12", &one_id.to_string()).await;
    assert_eq!(acts.len(), 1);
    let renamed = h.get(&format!("/rest/v1/lead/{existing}.json?fields=firstName")).await;
    assert_eq!(renamed["result"][0]["firstName"], "Renamed");
    let changes = h.activities_of("13", &existing.to_string()).await;
    assert!(changes.iter().any(|a| a["primaryAttributeValue"] == "First Name"), "{changes:?}");
    let newest = h.get(&format!("/rest/v1/lead/{}.json?fields=email,firstName", one_id + 2)).await;
    assert_eq!(newest["result"][0]["email"], "quoted, name@example.com", "quoted cells keep their delimiter");
    assert_eq!(newest["result"][0]["firstName"], "Q, Uoted");
    let long = h.get("/rest/v1/leads.json?filterType=email&filterValues=long.title@example.com&fields=title").await;
    assert_eq!(long["result"][0]["title"].as_str().unwrap().len(), 255);

    // Failures and warnings: the rows with a reason column, in the import's format.
    let (code, ct, failures) = h.get_text(&format!("/bulk/v1/leads/batch/{id}/failures.json")).await;
    assert_eq!(code, 200);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let lines: Vec<&str> = failures.lines().collect();
    assert_eq!(lines[0], "email,firstName,leadScore,title,Import Failure Reason");
    assert_eq!(lines.len(), 3, "{failures}");
    assert!(lines[1].starts_with("bad.score@example.com,Bad,lots,,") && lines[1].contains("leadScore"), "{failures}");
    assert!(lines[2].starts_with(",NoEmail,,,"), "{failures}");
    let (code, _, warnings) = h.get_text(&format!("/bulk/v1/leads/batch/{id}/warnings.json")).await;
    assert_eq!(code, 200);
    let lines: Vec<&str> = warnings.lines().collect();
    assert_eq!(lines[0], "email,firstName,leadScore,title,Import Warning Reason");
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with("long.title@example.com,Long,,TTT") && lines[1].contains("truncated"), "{warnings}");

    // Unknown batch.
    assert_eq!(error_code(&h.get("/bulk/v1/leads/batch/424242.json").await), Some("1003"));
}

#[tokio::test]
async fn batches_progress_on_the_emulator_clock_and_the_queue_is_capped() {
    let cfg = MarketoConfig { bulk_processing_time: ChronoDuration::seconds(60), ..config() };
    let (h, _, _) = seeded(cfg).await;
    let first =
        h.upload("/bulk/v1/leads.json", &[("format", "tsv")], b"email\tcity\nclock.one@example.com\tTicktown\n").await;
    let id = batch(&first);
    let s = h.get(&format!("/bulk/v1/leads/batch/{id}.json")).await;
    assert_eq!(s["result"][0]["status"], "Importing");
    assert_eq!(s["result"][0]["numOfLeadsProcessed"], 0);
    let (code, _, _) = h.get_text(&format!("/bulk/v1/leads/batch/{id}/failures.json")).await;
    assert_eq!(code, 404, "no failures file before the batch finished");
    let none = h.get("/rest/v1/leads.json?filterType=email&filterValues=clock.one@example.com").await;
    assert_eq!(none["result"], serde_json::json!([]));

    // Ten queued or importing at most (1016).
    for i in 1..10 {
        let ok = h
            .upload("/bulk/v1/leads.json?format=ssv", &[], format!("email;city\nq{i}@example.com;Q\n").as_bytes())
            .await;
        assert_ok(&ok);
    }
    let refused = h.upload("/bulk/v1/leads.json?format=csv", &[], b"email\nq10@example.com\n").await;
    assert_eq!(error_code(&refused), Some("1016"), "{refused}");

    h.emu.clock().advance(ChronoDuration::seconds(61));
    let s = h.get(&format!("/bulk/v1/leads/batch/{id}.json")).await;
    assert_eq!(s["result"][0]["status"], "Complete", "{s}");
    assert_eq!(s["result"][0]["numOfLeadsProcessed"], 1);
    let one = h.get("/rest/v1/leads.json?filterType=email&filterValues=clock.one@example.com&fields=city").await;
    assert_eq!(one["result"][0]["city"], "Ticktown");
    // Two import at a time: the second (importing since the start) finished too, the next two
    // started, the rest still queued.
    let state = |i: i64| {
        let h = &h;
        async move { h.get(&format!("/bulk/v1/leads/batch/{}.json", id + i)).await["result"][0]["status"].clone() }
    };
    assert_eq!(state(1).await, "Complete");
    assert_eq!((state(2).await, state(3).await), ("Importing".into(), "Importing".into()));
    assert_eq!(state(4).await, "Queued");
}

#[tokio::test]
async fn bad_uploads_get_the_real_error_codes() {
    let limits = MarketoLimits { max_body_bytes: 1000, ..MarketoLimits::default() };
    let (h, _, _) = seeded(MarketoConfig { limits, ..config() }).await;
    let body = |file: &[u8]| multipart_body("salesyncBoundary42", &[("format", "csv")], "l.csv", file);

    let (status, v) = h.post_raw("/bulk/v1/leads.json?format=csv", "text/csv", b"email\na@b.c\n".to_vec()).await;
    assert_eq!((status, error_code(&v)), (200, Some("612")));
    let (_, v) = h.post_raw("/bulk/v1/leads.json", "multipart/form-data", body(b"email\n")).await;
    assert_eq!(error_code(&v), Some("613"), "no boundary");
    let (_, v) = h.post_raw("/bulk/v1/leads.json", MULTIPART, b"garbage".to_vec()).await;
    assert_eq!(error_code(&v), Some("613"));
    let no_format = h.upload("/bulk/v1/leads.json", &[], b"email\na@b.c\n").await;
    assert_eq!(error_code(&no_format), Some("1003"));
    let bad_format = h.upload("/bulk/v1/leads.json?format=xls", &[], b"email\na@b.c\n").await;
    assert_eq!(error_code(&bad_format), Some("1003"));
    let unknown_column = h.upload("/bulk/v1/leads.json?format=csv", &[], b"email,shoeSize\na@b.c,9\n").await;
    assert_eq!(error_code(&unknown_column), Some("1006"));
    let bad_lookup = h.upload("/bulk/v1/leads.json?format=csv&lookupField=nope", &[], b"email\na@b.c\n").await;
    assert_eq!(error_code(&bad_lookup), Some("1006"));
    let bad_partition = h.upload("/bulk/v1/leads.json?format=csv&partitionName=Mars", &[], b"email\na@b.c\n").await;
    assert_eq!(error_code(&bad_partition), Some("1009"));
    let (_, v) = h.post_raw("/bulk/v1/leads.json?format=csv", MULTIPART, body(b"")).await;
    assert_eq!(error_code(&v), Some("1003"), "empty file: {v}");

    // 10× the REST body limit for an import (10 MB by default); REST calls keep the 1× limit.
    let mut big = b"email\n".to_vec();
    while big.len() < 5000 {
        big.extend_from_slice(b"someone.with.a.long.address@example.com\n");
    }
    let (status, v) = h.post_raw("/bulk/v1/leads.json", MULTIPART, body(&big)).await;
    assert_eq!(status, 200);
    assert_ok(&v);
    while big.len() < 10_100 {
        big.extend_from_slice(b"someone.with.a.long.address@example.com\n");
    }
    let (status, _) = h.post_raw("/bulk/v1/leads.json", MULTIPART, body(&big)).await;
    assert_eq!(status, 413);
    let (status, _) = h.post_raw("/rest/v1/leads.json", "application/json", vec![b' '; 2000]).await;
    assert_eq!(status, 413);
}
