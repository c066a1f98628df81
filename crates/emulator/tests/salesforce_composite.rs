//! The composite resources over real HTTP: `composite` with references and all-or-none
//! rollback, `composite/batch` with haltOnError, `composite/tree`, their request errors and how
//! they count against the API allocation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use reqwest::Method;
use salesforce_common::{H, code, obj};
use serde_json::{Value, json};

const V: &str = "/services/data/v60.0";

async fn composite(h: &H, body: Value) -> (u16, Value) {
    h.call(Method::POST, "/composite", Some(body)).await
}

async fn batch(h: &H, body: Value) -> (u16, Value) {
    h.call(Method::POST, "/composite/batch", Some(body)).await
}

async fn account_tree(h: &H, body: Value) -> (u16, Value) {
    h.call(Method::POST, "/composite/tree/Account", Some(body)).await
}

fn results(b: &Value) -> &Vec<Value> {
    b["compositeResponse"].as_array().unwrap()
}

#[tokio::test]
async fn a_series_passes_references_and_counts_one_call() {
    let h = H::default().await;
    let before = h.emu.api_usage();
    let (s, b) = composite(
        &h,
        json!({"allOrNone": false, "collateSubrequests": false, "compositeRequest": [
            {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "NewAccount",
             "body": {"Name": "Acme"}},
            {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "NewContact",
             "body": {"LastName": "Ng", "AccountId": "@{NewAccount.id}"}},
            {"method": "GET", "referenceId": "Q",
             "url": format!("{V}/query?q=SELECT+Id,AccountId+FROM+Contact+WHERE+AccountId='@{{NewAccount.id}}'")},
            {"method": "PATCH", "url": format!("{V}/sobjects/Contact/@{{Q.records[0].Id}}"), "referenceId": "Upd",
             "body": {"Title": "CTO"}},
            {"method": "GET", "url": format!("{V}/sobjects/Contact/@{{NewContact.id}}?fields=Title,AccountId"),
             "referenceId": "Read"}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let r = results(&b);
    let statuses: Vec<u64> = r.iter().map(|x| x["httpStatusCode"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 201, 200, 204, 200], "{b}");
    let refs: Vec<&str> = r.iter().map(|x| x["referenceId"].as_str().unwrap()).collect();
    assert_eq!(refs, vec!["NewAccount", "NewContact", "Q", "Upd", "Read"]);
    let acct = r[0]["body"]["id"].as_str().unwrap();
    let contact = r[1]["body"]["id"].as_str().unwrap();
    assert_eq!(r[0]["body"]["success"], true);
    assert_eq!(r[0]["httpHeaders"]["Location"], json!(format!("{V}/sobjects/Account/{acct}")));
    assert_eq!(r[2]["body"]["totalSize"], 1);
    assert_eq!(r[2]["body"]["records"][0]["Id"], json!(contact));
    assert_eq!(r[3]["body"], Value::Null);
    assert_eq!(r[4]["body"]["Title"], "CTO");
    assert_eq!(r[4]["body"]["AccountId"], json!(acct));
    // The writes are real.
    let stored = h.emu.get("Contact", contact).unwrap();
    assert_eq!(stored["AccountId"], json!(acct));
    assert_eq!(stored["Title"], "CTO");
    // The whole series is one API call.
    assert_eq!(h.emu.api_usage(), before + 1);
}

#[tokio::test]
async fn all_or_none_rolls_back_and_halts_the_others() {
    let h = H::default().await;
    let subs = json!([
        {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "A", "body": {"Name": "Acme"}},
        {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "C",
         "body": {"FirstName": "No last name", "AccountId": "@{A.id}"}},
        {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "B", "body": {"Name": "Later"}}
    ]);
    let (s, b) = composite(&h, json!({"allOrNone": true, "compositeRequest": subs})).await;
    assert_eq!(s, 200, "{b}");
    let r = results(&b);
    assert_eq!(r.len(), 3);
    assert_eq!(r[1]["httpStatusCode"], 400);
    assert_eq!(code(&r[1]["body"]), "REQUIRED_FIELD_MISSING", "{b}");
    for i in [0, 2] {
        assert_eq!(r[i]["httpStatusCode"], 400, "{b}");
        assert_eq!(code(&r[i]["body"]), "PROCESSING_HALTED", "{b}");
        assert!(r[i]["body"][0]["message"].as_str().unwrap().contains("rolled back"), "{b}");
    }
    assert_eq!(r[2]["referenceId"], "B");
    assert!(h.emu.records("Account").is_empty(), "the account was rolled back");

    // Without allOrNone the good writes stay, and a reference to a failed result is an error.
    let (s, b) = composite(
        &h,
        json!({"allOrNone": false, "compositeRequest": [
            {"method": "POST", "url": format!("{V}/sobjects/Account"), "referenceId": "A", "body": {"Name": "Acme"}},
            {"method": "POST", "url": format!("{V}/sobjects/Contact"), "referenceId": "C",
             "body": {"FirstName": "No last name"}},
            {"method": "GET", "url": format!("{V}/sobjects/Contact/@{{C.id}}"), "referenceId": "ReadC"},
            {"method": "GET", "url": format!("{V}/sobjects/Account/@{{A.id}}"), "referenceId": "ReadA"}
        ]}),
    )
    .await;
    assert_eq!(s, 200);
    let r = results(&b);
    let statuses: Vec<u64> = r.iter().map(|x| x["httpStatusCode"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 400, 400, 200], "{b}");
    assert_eq!(code(&r[2]["body"]), "PROCESSING_HALTED");
    assert!(r[2]["body"][0]["message"].as_str().unwrap().contains("C.id"), "{b}");
    assert_eq!(r[3]["body"]["Name"], "Acme");
    assert_eq!(h.emu.records("Account").len(), 1);
}

#[tokio::test]
async fn all_or_none_covers_collection_subrequests() {
    let h = H::default().await;
    let (s, b) = composite(
        &h,
        json!({"allOrNone": true, "compositeRequest": [
            {"method": "POST", "url": format!("{V}/composite/sobjects"), "referenceId": "Coll",
             "body": {"allOrNone": false, "records": [
                 {"attributes": {"type": "Account"}, "Name": "Good"},
                 {"attributes": {"type": "Account"}, "Name": null}
             ]}},
            {"method": "POST", "url": format!("{V}/sobjects/Lead"), "referenceId": "L",
             "body": {"LastName": "Ng", "Company": "Acme"}}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let r = results(&b);
    assert_eq!(r[0]["httpStatusCode"], 200, "{b}");
    assert_eq!(r[0]["body"][1]["success"], false, "{b}");
    assert_eq!(code(&r[1]["body"]), "PROCESSING_HALTED", "{b}");
    assert!(h.emu.records("Account").is_empty(), "{:?}", h.emu.records("Account"));
    assert!(h.emu.records("Lead").is_empty());
}

#[tokio::test]
async fn composite_request_errors() {
    let h = H::default().await;
    let get = |rid: &str| json!({"method": "GET", "url": format!("{V}/limits"), "referenceId": rid});
    let many: Vec<Value> = (0..26).map(|i| get(&format!("r{i}"))).collect();
    let cases = [
        (json!({"compositeRequest": many}), "LIMIT_EXCEEDED"),
        (json!({"compositeRequest": [get("a"), get("A")]}), "INVALID_INPUT"),
        (json!({"compositeRequest": [get("1abc")]}), "INVALID_INPUT"),
        (json!({"compositeRequest": [{"method": "GET", "url": format!("{V}/limits")}]}), "INVALID_INPUT"),
    ];
    for (body, want) in cases {
        let (s, b) = composite(&h, body).await;
        assert_eq!(s, 200, "{b}");
        let r = results(&b);
        assert_eq!(r.len(), 1, "{b}");
        assert_eq!(r[0]["httpStatusCode"], 400, "{b}");
        assert_eq!(r[0]["referenceId"], Value::Null, "{b}");
        assert_eq!(code(&r[0]["body"]), want, "{b}");
    }
    // Exactly 25 is fine.
    let ok: Vec<Value> = (0..25).map(|i| get(&format!("r{i}"))).collect();
    let (s, b) = composite(&h, json!({"compositeRequest": ok})).await;
    assert_eq!(s, 200);
    assert!(results(&b).iter().all(|x| x["httpStatusCode"] == 200), "{b}");
    // Not JSON, or no compositeRequest: the request itself fails.
    let r = h.raw(Method::POST, "/composite", None, &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 400);
    assert_eq!(code(&r.json()), "JSON_PARSER_ERROR");
    let (s, b) = composite(&h, json!({"allOrNone": true})).await;
    assert_eq!(s, 400, "{b}");
    // A subrequest may not be another composite request or a Bulk job.
    let (_, b) = composite(
        &h,
        json!({"compositeRequest": [
            {"method": "POST", "url": format!("{V}/composite"), "referenceId": "nested", "body": {"compositeRequest": []}},
            {"method": "GET", "url": format!("{V}/jobs/query"), "referenceId": "jobs"},
            {"method": "GET", "url": "/services/data/sobjects", "referenceId": "nover"}
        ]}),
    )
    .await;
    let r = results(&b);
    assert_eq!(code(&r[0]["body"]), "INVALID_INPUT", "{b}");
    assert_eq!(code(&r[1]["body"]), "INVALID_INPUT", "{b}");
    assert_eq!(r[2]["httpStatusCode"], 404, "{b}");
}

#[tokio::test]
async fn batch_runs_independent_subrequests_and_counts_each() {
    let h = H::default().await;
    let acct = h.emu.insert("Account", obj(json!({"Name": "Acme"}))).unwrap();
    let before = h.emu.api_usage();
    let (s, b) = batch(
        &h,
        json!({"haltOnError": false, "batchRequests": [
            {"method": "PATCH", "url": format!("v60.0/sobjects/Account/{acct}"), "richInput": {"Name": "Acme 2"}},
            {"method": "GET", "url": format!("v60.0/sobjects/Account/{acct}?fields=Name")},
            {"method": "GET", "url": "v60.0/sobjects/Account/001000000000000AAA"},
            {"method": "GET", "url": "v60.0/query?q=SELECT+COUNT()+FROM+Account"}
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["hasErrors"], true);
    let r = b["results"].as_array().unwrap();
    let statuses: Vec<u64> = r.iter().map(|x| x["statusCode"].as_u64().unwrap()).collect();
    assert_eq!(statuses, vec![204, 200, 404, 200], "{b}");
    assert_eq!(r[0]["result"], Value::Null);
    assert_eq!(r[1]["result"]["Name"], "Acme 2");
    assert_eq!(code(&r[2]["result"]), "NOT_FOUND");
    assert_eq!(r[3]["result"]["totalSize"], 1);
    assert_eq!(h.emu.api_usage(), before + 4, "each batch subrequest counts");

    // haltOnError: after the first failure the rest are not run.
    let (s, b) = batch(
        &h,
        json!({"haltOnError": true, "batchRequests": [
            {"method": "POST", "url": "v60.0/sobjects/Account", "richInput": {"Name": null}},
            {"method": "POST", "url": "v60.0/sobjects/Account", "richInput": {"Name": "Never"}}
        ]}),
    )
    .await;
    assert_eq!(s, 200);
    let r = b["results"].as_array().unwrap();
    assert_eq!(r[0]["statusCode"], 400, "{b}");
    assert_eq!(r[1]["statusCode"], 412, "{b}");
    assert_eq!(code(&r[1]["result"]), "BATCH_PROCESSING_HALTED");
    assert!(h.emu.records("Account").iter().all(|a| a["Name"] != "Never"));

    let many: Vec<Value> = (0..26).map(|_| json!({"method": "GET", "url": "v60.0/limits"})).collect();
    let (s, b) = batch(&h, json!({"batchRequests": many})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(code(&b), "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn tree_creates_parents_and_children_in_one_transaction() {
    let h = H::default().await;
    let (s, b) = account_tree(
        &h,
        json!({"records": [
            {"attributes": {"type": "Account", "referenceId": "acme"}, "Name": "Acme",
             "Contacts": {"records": [
                 {"attributes": {"type": "Contact", "referenceId": "ana"}, "LastName": "Ng"},
                 {"attributes": {"type": "Contact", "referenceId": "bo"}, "LastName": "Li"}
             ]}}
        ]}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["hasErrors"], false);
    let r = b["results"].as_array().unwrap();
    let refs: Vec<&str> = r.iter().map(|x| x["referenceId"].as_str().unwrap()).collect();
    assert_eq!(refs, vec!["acme", "ana", "bo"]);
    let acct = r[0]["id"].as_str().unwrap();
    for c in &r[1..] {
        let rec = h.emu.get("Contact", c["id"].as_str().unwrap()).unwrap();
        assert_eq!(rec["AccountId"], json!(acct));
    }

    let (s, b) = account_tree(
        &h,
        json!({"records": [
            {"attributes": {"type": "Account", "referenceId": "globex"}, "Name": "Globex",
             "Contacts": {"records": [{"attributes": {"type": "Contact", "referenceId": "bad"}, "FirstName": "x"}]}}
        ]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["hasErrors"], true);
    assert_eq!(b["results"][0]["referenceId"], "bad");
    assert_eq!(b["results"][0]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert!(h.emu.records("Account").iter().all(|a| a["Name"] != "Globex"), "rolled back");
}
