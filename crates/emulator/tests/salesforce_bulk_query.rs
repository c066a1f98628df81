//! Bulk API 2.0 query jobs over real HTTP: create, poll, CSV results with locators, abort,
//! delete, errors and API usage.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use reqwest::Method;
use salesforce_common::{H, clock, code, obj, parse_csv};
use salesync_emulator::salesforce::SalesforceConfig;
use salesync_emulator::seed;
use serde_json::{Value, json};

async fn create_job(h: &H, body: Value) -> Value {
    let (s, v) = h.call(Method::POST, "/jobs/query", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Polls until JobComplete; returns the final info and the number of polls.
async fn wait(h: &H, id: &str) -> (Value, usize) {
    for n in 1..10 {
        let (s, v) = h.get(&format!("/jobs/query/{id}")).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] == "JobComplete" {
            return (v, n);
        }
        assert_eq!(v["state"], "InProgress");
    }
    panic!("job {id} never completed");
}

/// Every result set of a job: (header, rows, number of requests).
async fn all_results(h: &H, id: &str, max: Option<usize>) -> (Vec<String>, Vec<Vec<String>>, usize) {
    let mut locator: Option<String> = None;
    let mut header = None;
    let mut rows = Vec::new();
    let mut requests = 0;
    loop {
        let mut p = format!("/jobs/query/{id}/results?");
        if let Some(m) = max {
            p.push_str(&format!("maxRecords={m}&"));
        }
        if let Some(l) = &locator {
            p.push_str(&format!("locator={l}"));
        }
        let r = h.raw(Method::GET, &p, None, &[]).await;
        requests += 1;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.header("content-type").unwrap().starts_with("text/csv"));
        let mut set = parse_csv(&r.text, ',');
        let head = set.remove(0);
        assert_eq!(*header.get_or_insert_with(|| head.clone()), head, "every set starts with the header");
        let n: usize = r.header("sforce-numberofrecords").unwrap().parse().unwrap();
        assert_eq!(n, set.len());
        if let Some(m) = max {
            assert!(n <= m);
        }
        rows.extend(set);
        match r.header("sforce-locator").unwrap() {
            "null" => break,
            l => locator = Some(l.to_string()),
        }
    }
    (header.unwrap_or_default(), rows, requests)
}

#[tokio::test]
async fn contact_roles_and_converted_leads_end_to_end() {
    let h = H::default().await;
    let world = seed::generate(3_000, 9);
    h.emu.seed_world(&world);
    let leads: Vec<String> = world.people.iter().filter_map(|p| p.sf_lead_id.clone()).collect();
    for l in leads.iter().step_by(3) {
        h.emu.convert_lead(l, None, None, true).unwrap();
    }
    let usage0 = h.emu.api_usage();

    // All contact roles, in sets of at most 700.
    let q =
        "SELECT Id, ContactId, OpportunityId, IsPrimary, Opportunity.IsClosed FROM OpportunityContactRole ORDER BY Id";
    let job = create_job(&h, json!({"operation": "query", "query": q})).await;
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("750") && id.len() == 18, "{job}");
    assert_eq!(
        (job["state"].clone(), job["operation"].clone(), job["object"].clone(), job["contentType"].clone()),
        (json!("UploadComplete"), json!("query"), json!("OpportunityContactRole"), json!("CSV"))
    );
    assert_eq!(
        (job["apiVersion"].clone(), job["columnDelimiter"].clone(), job["lineEnding"].clone()),
        (json!(60.0), json!("COMMA"), json!("LF"))
    );
    // Results are not available before the job completes.
    let (s, v) = h.get(&format!("/jobs/query/{id}/results")).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOBSTATE"), "{v}");
    let (info, polls) = wait(&h, &id).await;
    assert_eq!(polls, 2, "one InProgress answer, then JobComplete");
    assert_eq!(info["jobType"], "V2Query");
    let (header, rows, requests) = all_results(&h, &id, Some(700)).await;
    assert_eq!(header, ["Id", "ContactId", "OpportunityId", "IsPrimary", "Opportunity.IsClosed"]);
    let rest: Vec<Value> = h.emu.query(q, false).unwrap();
    assert!(rest.len() > 1_000, "{}", rest.len());
    assert_eq!(info["numberRecordsProcessed"], rest.len());
    assert_eq!(rows.len(), rest.len());
    assert_eq!(requests, rest.len().div_ceil(700));
    for (row, rec) in rows.iter().zip(&rest) {
        assert_eq!(row[0], rec["Id"].as_str().unwrap());
        assert_eq!(row[1], rec["ContactId"].as_str().unwrap());
        assert_eq!(row[2], rec["OpportunityId"].as_str().unwrap());
        assert_eq!(row[3], rec["IsPrimary"].to_string());
        assert_eq!(row[4], rec["Opportunity"]["IsClosed"].to_string());
    }
    // A locator can be used again; the default set holds everything here.
    let (_, again, one) = all_results(&h, &id, None).await;
    assert_eq!((again.len(), one), (rows.len(), 1));

    // Converted leads, through the IsConverted index.
    let before = h.emu.query_stats();
    let q =
        "SELECT Id, ConvertedContactId, ConvertedAccountId, ConvertedOpportunityId FROM Lead WHERE IsConverted = true";
    let job = create_job(&h, json!({"operation": "query", "query": q})).await;
    let after = h.emu.query_stats();
    assert_eq!(after.indexed - before.indexed, 1);
    let id2 = job["id"].as_str().unwrap().to_string();
    wait(&h, &id2).await;
    let (_, rows, _) = all_results(&h, &id2, Some(2_000)).await;
    assert_eq!(rows.len(), leads.iter().step_by(3).count());
    assert!(rows.iter().all(|r| r[1].starts_with("003") && r[2].starts_with("001") && r[3].starts_with("006")));
    assert_eq!(after.rows_examined - before.rows_examined, rows.len() as u64);

    // Jobs are listed, count against the daily allocation and DailyBulkV2QueryJobs.
    let (_, list) = h.get("/jobs/query").await;
    let listed: Vec<&str> = list["records"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert!(listed.contains(&id.as_str()) && listed.contains(&id2.as_str()));
    let (_, limits) = h.get("/limits").await;
    assert_eq!(limits["DailyBulkV2QueryJobs"]["Remaining"], 10_000 - 2);
    let calls =
        h.emu.call_log().iter().filter(|c| c.path.contains("/jobs/query") || c.path.ends_with("/limits")).count();
    assert_eq!(h.emu.api_usage() - usage0, calls as u64);

    // Delete: gone afterwards.
    h.delete_gone(&format!("/jobs/query/{id}")).await;
}

#[tokio::test]
async fn csv_quoting_delimiters_query_all_abort_and_errors() {
    let h = H::start(SalesforceConfig { clock: clock(), bulk_query_polls: 0, ..Default::default() }).await;
    let a = h
        .emu
        .insert(
            "Lead",
            obj(json!({"LastName": "O'Neil \"Bob\"", "Company": "Acme, Inc.\nWest", "Email": "o@x.example.com"})),
        )
        .unwrap();
    let b = h.emu.insert("Lead", obj(json!({"LastName": "Plain", "Company": "B|C"}))).unwrap();
    h.emu.delete("Lead", &b).unwrap();

    let q = "SELECT Id, LastName, Company, Email, Owner.Name FROM Lead ORDER BY LastName";
    let job =
        create_job(&h, json!({"operation": "queryAll", "query": q, "columnDelimiter": "PIPE", "lineEnding": "CRLF"}))
            .await;
    let id = job["id"].as_str().unwrap().to_string();
    let (info, polls) = wait(&h, &id).await;
    assert_eq!((polls, info["numberRecordsProcessed"].clone()), (1, json!(2)));
    let r = h.raw(Method::GET, &format!("/jobs/query/{id}/results"), None, &[]).await;
    assert_eq!((r.header("sforce-locator"), r.header("sforce-numberofrecords")), (Some("null"), Some("2")));
    assert!(r.text.contains("\r\n"));
    let rows = parse_csv(&r.text, '|');
    assert_eq!(rows[0], ["Id", "LastName", "Company", "Email", "Owner.Name"]);
    assert_eq!(rows[1], [a.as_str(), "O'Neil \"Bob\"", "Acme, Inc.\nWest", "o@x.example.com", "Integration User"]);
    assert_eq!(rows[2], [b.as_str(), "Plain", "B|C", "", "Integration User"], "queryAll includes the deleted lead");
    // `query` leaves it out.
    let job = create_job(&h, json!({"operation": "query", "query": q})).await;
    assert_eq!(wait(&h, job["id"].as_str().unwrap()).await.0["numberRecordsProcessed"], 1);

    // Abort: an unfinished job can be aborted, a finished one cannot.
    let h2 = H::default().await;
    let job = create_job(&h2, json!({"operation": "query", "query": "SELECT Id FROM Lead"})).await;
    let jid = job["id"].as_str().unwrap();
    let (s, v) = h2.call(Method::PATCH, &format!("/jobs/query/{jid}"), Some(json!({"state": "Aborted"}))).await;
    assert_eq!((s, v["state"].clone()), (200, json!("Aborted")));
    let (s, v) = h2.get(&format!("/jobs/query/{jid}/results")).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOBSTATE"));
    let (s, v) = h.call(Method::PATCH, &format!("/jobs/query/{id}"), Some(json!({"state": "Aborted"}))).await;
    assert_eq!((s, code(&v)), (400, "INVALIDJOBSTATE"), "{v}");

    // Errors.
    for (body, status, error) in [
        (json!({"operation": "query", "query": "SELECT Nope FROM Lead"}), 400, "INVALID_FIELD"),
        (json!({"operation": "query", "query": "SELECT Id FROM Nope"}), 400, "INVALID_TYPE"),
        (json!({"operation": "query", "query": "SELECT COUNT() FROM Lead"}), 400, "FEATURENOTENABLED"),
        (
            json!({"operation": "query", "query": "SELECT Id, (SELECT Id FROM Tasks) FROM Lead"}),
            400,
            "FEATURENOTENABLED",
        ),
        (json!({"operation": "insert", "query": "SELECT Id FROM Lead"}), 400, "INVALIDJOB"),
        (json!({"operation": "query"}), 400, "INVALIDJOB"),
        (json!({"operation": "query", "query": "SELECT Id FROM Lead", "columnDelimiter": "SPACE"}), 400, "INVALIDJOB"),
    ] {
        let (s, v) = h.call(Method::POST, "/jobs/query", Some(body.clone())).await;
        assert_eq!((s, code(&v)), (status, error), "{body}: {v}");
    }
    let (s, v) = h.get(&format!("/jobs/query/{id}/results?locator=bm9wZQ")).await;
    assert_eq!((s, code(&v)), (400, "INVALID_LOCATOR"));
    let (s, v) = h.get(&format!("/jobs/query/{id}/results?maxRecords=0")).await;
    assert_eq!((s, code(&v)), (400, "INVALIDREQUEST"));
    let (s, v) = h.get(&format!("/services/data/v59.0/jobs/query/{id}/results")).await;
    assert_eq!((s, code(&v)), (409, "INVALIDJOBSTATE"));
    let (s, v) = h.get("/jobs/query/750000000000000AAA").await;
    assert_eq!((s, code(&v)), (404, "NOT_FOUND"));
}
