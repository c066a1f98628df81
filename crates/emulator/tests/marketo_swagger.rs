//! Every Marketo emulator response on the paths salesync and the ecosystem's clients use
//! validates against the response schema of Adobe's Swagger (issue #14 part 4). The Swagger is
//! read in place, never copied (Adobe's licence): `SALESYNC_SWAGGER_DIR`, else
//! `shared/reference/openapi` beside the checkout, else `/work/shared/reference/openapi`; none
//! found is a failure, never a skip.
//!
//! The Swagger differs from the API in known ways, relaxed here and only here (each a line of
//! `relaxed_definitions`):
//! - successful envelopes omit `errors` and `warnings`, which the Swagger marks required, and
//!   `warnings` items are `[]` or strings in practice, not `{code, message}` (reference §2);
//! - an activity attribute's `value` is a string, number, boolean or null in every documented
//!   example; the Swagger types it `object` (its generator's mapping of Java's `Object`);
//! - Add Custom Activities answers `{id, marketoGUID, status}` (or `{status, errors}`) per record
//!   (reference §7.2); the Swagger reuses the request model `CustomActivity`, whose members it
//!   marks required;
//! - standard activity types without a primary attribute carry no `primaryAttribute`, which the
//!   Swagger's `ActivityType` marks required.
//!
//! Not checked here, as their Swagger schema (`ObservableOfInputStream…`) describes no JSON: the
//! bulk files (export `file.json`, import `failures.json` / `warnings.json`), which are CSV/TSV/SSV
//! bodies; their contents are asserted in marketo_bulk_custom.rs and marketo_bulk_import.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod marketo_common;

use std::path::PathBuf;

use marketo_common::*;
use salesync_emulator::seed;
use serde_json::{Value, json};

fn swagger() -> Value {
    let candidates = [
        std::env::var_os("SALESYNC_SWAGGER_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/openapi")),
        Some(PathBuf::from("/work/shared/reference/openapi")),
    ];
    let file = candidates
        .into_iter()
        .flatten()
        .map(|d| d.join("marketo-mapi.swagger.json"))
        .find(|f| f.is_file())
        .unwrap_or_else(|| panic!("Adobe's marketo-mapi.swagger.json not found: set SALESYNC_SWAGGER_DIR"));
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

/// The Swagger's definitions with the documented relaxations applied.
fn relaxed_definitions(swagger: &Value) -> Value {
    let mut defs = swagger["definitions"].clone();
    defs["Attribute"]["properties"]["value"] = json!({});
    // (draft 4: no empty `required`.)
    if let Some(o) = defs["CustomActivity"].as_object_mut() {
        o.remove("required");
    }
    if let Some(req) = defs["ActivityType"]["required"].as_array_mut() {
        req.retain(|r| r != "primaryAttribute");
    }
    for (name, def) in defs.as_object_mut().unwrap() {
        if name.starts_with("ResponseOf") {
            if let Some(req) = def.get_mut("required").and_then(Value::as_array_mut) {
                req.retain(|r| r != "errors" && r != "warnings");
            }
            if let Some(w) = def.pointer_mut("/properties/warnings/items") {
                *w = json!({});
            }
        }
    }
    defs
}

/// Validates responses against their operation's 200 schema; collects violations.
struct Checker {
    swagger: Value,
    definitions: Value,
    checked: Vec<String>,
    violations: Vec<String>,
}

impl Checker {
    fn new() -> Self {
        let swagger = swagger();
        let definitions = relaxed_definitions(&swagger);
        Self { swagger, definitions, checked: Vec::new(), violations: Vec::new() }
    }

    fn check(&mut self, method: &str, template: &str, body: &Value) {
        let op = &self.swagger["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the Swagger");
        let schema = op["responses"]["200"]["schema"].clone();
        assert!(schema.is_object(), "{method} {template} has no 200 schema");
        let doc = json!({"definitions": self.definitions, "allOf": [schema]});
        let validator = jsonschema::draft4::new(&doc).unwrap();
        let name = format!("{} {template}", method.to_uppercase());
        for e in validator.iter_errors(body) {
            self.violations.push(format!("{name}: {e} at {}", e.instance_path()));
        }
        assert_eq!(body["success"], true, "{name} was meant to succeed: {body}");
        self.checked.push(name);
    }
}

/// Checks one bulk export kind (`leads` or `activities`, as in `/bulk/v1/{kind}/export/…`): the
/// create answer for `job`, then its enqueue, status and the job list, and the cancel answer for a
/// second job created from `second`. A job still in Created can be cancelled (this one finished at
/// once).
async fn check_export(h: &Harness, c: &mut Checker, kind: &str, job: Value, second: Value) {
    let base = format!("/bulk/v1/{kind}/export");
    let created = h.post(&format!("{base}/create.json"), job).await;
    c.check("post", &format!("{base}/create.json"), &created);
    let export = created["result"][0]["exportId"].as_str().unwrap().to_string();
    c.check(
        "post",
        &format!("{base}/{{exportId}}/enqueue.json"),
        &h.post_empty(&format!("{base}/{export}/enqueue.json")).await,
    );
    c.check("get", &format!("{base}/{{exportId}}/status.json"), &h.get(&format!("{base}/{export}/status.json")).await);
    c.check("get", &format!("{base}.json"), &h.get(&format!("{base}.json")).await);
    let second = h.post(&format!("{base}/create.json"), second).await;
    let second = second["result"][0]["exportId"].as_str().unwrap().to_string();
    c.check(
        "post",
        &format!("{base}/{{exportId}}/cancel.json"),
        &h.post_empty(&format!("{base}/{second}/cancel.json")).await,
    );
}

#[tokio::test]
async fn emulator_responses_validate_against_the_swagger() {
    let h = Harness::start(config()).await;
    let world = seed::generate(40, 17);
    h.emu.seed_world(&world);
    let mut c = Checker::new();
    let p = &world.people[0];
    let id = p.marketo_id;
    let email = world.people.iter().find_map(|p| p.email.clone()).unwrap();

    // Leads.
    c.check("get", "/rest/v1/leads/describe.json", &h.get("/rest/v1/leads/describe.json").await);
    c.check("get", "/rest/v1/leads/describe2.json", &h.get("/rest/v1/leads/describe2.json").await);
    c.check(
        "get",
        "/rest/v1/leads.json",
        &h.get(&format!("/rest/v1/leads.json?filterType=id&filterValues={id}&fields=id,email,createdAt")).await,
    );
    c.check(
        "get",
        "/rest/v1/leads.json",
        &h.get(&format!("/rest/v1/leads.json?filterType=email&filterValues={email}")).await,
    );
    c.check(
        "get",
        "/rest/v1/lead/{leadId}.json",
        &h.get(&format!("/rest/v1/lead/{id}.json?fields=email,firstName")).await,
    );
    let synced = h
        .post(
            "/rest/v1/leads.json",
            json!({"action": "createOrUpdate", "lookupField": "email",
                   "input": [{"email": "swagger.check@example.com", "firstName": "Swagger"}, {"email": email, "title": "Checked"}]}),
        )
        .await;
    c.check("post", "/rest/v1/leads.json", &synced);
    let new_id = synced["result"][0]["id"].as_i64().unwrap();
    let loser = world.people[1].marketo_id;
    c.check(
        "post",
        "/rest/v1/leads/{leadId}/merge.json",
        &h.post_empty(&format!("/rest/v1/leads/{new_id}/merge.json?leadId={loser}")).await,
    );
    c.check(
        "post",
        "/rest/v1/leads/delete.json",
        &h.post("/rest/v1/leads/delete.json", json!({"input": [{"id": new_id}]})).await,
    );

    c.check("get", "/rest/v1/leads/partitions.json", &h.get("/rest/v1/leads/partitions.json").await);
    let fields = h.get("/rest/v1/leads/schema/fields.json?batchSize=5").await;
    c.check("get", "/rest/v1/leads/schema/fields.json", &fields);
    assert_eq!(fields["result"].as_array().unwrap().len(), 5);
    let next = fields["nextPageToken"].as_str().unwrap();
    let rest = h.get(&format!("/rest/v1/leads/schema/fields.json?nextPageToken={next}")).await;
    c.check("get", "/rest/v1/leads/schema/fields.json", &rest);
    assert!(rest["result"].as_array().unwrap().len() > 5 && rest.get("nextPageToken").is_none(), "{rest}");
    let email_field = h.get("/rest/v1/leads/schema/fields/email.json").await;
    c.check("get", "/rest/v1/leads/schema/fields/{fieldApiName}.json", &email_field);
    assert_eq!(email_field["result"][0]["name"], "email");
    assert_eq!(error_code(&h.get("/rest/v1/leads/schema/fields/noSuchField.json").await), Some("1006"));
    for kind in ["listMembership", "programMembership", "smartCampaignMembership"] {
        let template = format!("/rest/v1/leads/{{leadId}}/{kind}.json");
        c.check("get", &template, &h.get(&format!("/rest/v1/leads/{id}/{kind}.json")).await);
        assert_eq!(error_code(&h.get(&format!("/rest/v1/leads/99999999/{kind}.json")).await), Some("1004"));
    }
    c.check(
        "post",
        "/rest/v1/leads/{leadId}/associate.json",
        &h.post_empty(&format!(
            "/rest/v1/leads/{id}/associate.json?cookie=id:561-HYG-937%26token:_mch-marketo.com-1427205775289-40768"
        ))
        .await,
    );
    assert_eq!(error_code(&h.post_empty(&format!("/rest/v1/leads/{id}/associate.json")).await), Some("1003"));

    // Custom lead fields, programs, push, forms, partitions.
    c.check(
        "post",
        "/rest/v1/leads/schema/fields.json",
        &h.post(
            "/rest/v1/leads/schema/fields.json",
            json!({"input": [{"name": "swaggerTier", "displayName": "Swagger Tier", "dataType": "string"}]}),
        )
        .await,
    );
    c.check(
        "post",
        "/rest/v1/leads/schema/fields/{fieldApiName}.json",
        &h.post("/rest/v1/leads/schema/fields/swaggerTier.json", json!({"input": [{"displayName": "Swagger Level"}]}))
            .await,
    );
    c.check("get", "/rest/v1/leads/schema/fields.json", &h.get("/rest/v1/leads/schema/fields.json").await);
    c.check("get", "/rest/v1/program/members/describe.json", &h.get("/rest/v1/program/members/describe.json").await);
    c.check("get", "/rest/v1/programs/members/describe.json", &h.get("/rest/v1/programs/members/describe.json").await);
    c.check(
        "post",
        "/rest/v1/leads/partitions.json",
        &h.post("/rest/v1/leads/partitions.json", json!({"input": [{"id": id, "partitionName": "EMEA"}]})).await,
    );
    c.check(
        "post",
        "/rest/v1/leads/programs/{programId}/status.json",
        &h.post("/rest/v1/leads/programs/1001/status.json", json!({"status": "Registered", "input": [{"id": id}]}))
            .await,
    );
    let members = h.get("/rest/v1/leads/programs/1001.json?fields=email,swaggerTier").await;
    assert_eq!(members["result"][0]["membership"]["progressionStatus"], "Registered");
    c.check("get", "/rest/v1/leads/programs/{programId}.json", &members);
    c.check(
        "get",
        "/rest/v1/leads/{leadId}/programMembership.json",
        &h.get(&format!("/rest/v1/leads/{id}/programMembership.json")).await,
    );
    c.check(
        "post",
        "/rest/v1/leads/push.json",
        &h.post(
            "/rest/v1/leads/push.json",
            json!({"programName": "Salesync Newsletter", "lookupField": "email",
                   "input": [{"email": "swagger.push@example.com", "firstName": "Push"}, {"email": email}]}),
        )
        .await,
    );
    c.check(
        "post",
        "/rest/v1/leads/submitForm.json",
        &h.post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1001, "input": [{"leadFormFields": {"email": "swagger.form@example.com"},
                                              "visitorData": {"pageURL": "https://example.com/f"}}]}),
        )
        .await,
    );

    // Bulk lead import (the failures / warnings files are CSV, not JSON: checked in
    // marketo_bulk_import.rs, not here).
    let import = h
        .upload(
            "/bulk/v1/leads.json?format=csv",
            &[],
            b"email,firstName
swagger.import@example.com,Imp
,NoEmail
",
        )
        .await;
    c.check("post", "/bulk/v1/leads.json", &import);
    let batch = import["result"][0]["batchId"].as_i64().unwrap();
    let batch_status = h.get(&format!("/bulk/v1/leads/batch/{batch}.json")).await;
    assert_eq!(batch_status["result"][0]["status"], "Complete");
    c.check("get", "/bulk/v1/leads/batch/{batchId}.json", &batch_status);

    // Activities.
    let token = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2020-01-01T00:00:00Z").await;
    c.check("get", "/rest/v1/activities/pagingtoken.json", &token);
    let token = token["nextPageToken"].as_str().unwrap().to_string();
    c.check("get", "/rest/v1/activities/types.json", &h.get("/rest/v1/activities/types.json").await);
    c.check(
        "get",
        "/rest/v1/activities.json",
        &h.get(&format!("/rest/v1/activities.json?nextPageToken={token}&activityTypeIds=1,12,13")).await,
    );
    c.check(
        "get",
        "/rest/v1/activities/leadchanges.json",
        &h.get(&format!("/rest/v1/activities/leadchanges.json?nextPageToken={token}&fields=email,title")).await,
    );
    c.check(
        "get",
        "/rest/v1/activities/deletedleads.json",
        &h.get(&format!("/rest/v1/activities/deletedleads.json?nextPageToken={token}")).await,
    );

    // Custom activities.
    let ty = h
        .post(
            "/rest/v1/activities/external/type.json",
            json!({"apiName": "swaggerCheck", "name": "Swagger check", "triggerName": "Swagger checked",
                   "filterName": "Was swagger checked", "primaryAttribute": {"apiName": "subject", "name": "Subject", "dataType": "string"}}),
        )
        .await;
    c.check("post", "/rest/v1/activities/external/type.json", &ty);
    c.check("get", "/rest/v1/activities/external/types.json", &h.get("/rest/v1/activities/external/types.json").await);
    c.check(
        "get",
        "/rest/v1/activities/external/type/{apiName}/describe.json",
        &h.get("/rest/v1/activities/external/type/swaggerCheck/describe.json").await,
    );
    c.check(
        "post",
        "/rest/v1/activities/external/type/{apiName}/attributes/create.json",
        &h.post(
            "/rest/v1/activities/external/type/swaggerCheck/attributes/create.json",
            json!({"attributes": [{"apiName": "body", "name": "Body", "dataType": "string"}]}),
        )
        .await,
    );
    c.check(
        "post",
        "/rest/v1/activities/external/type/{apiName}/approve.json",
        &h.post_empty("/rest/v1/activities/external/type/swaggerCheck/approve.json").await,
    );
    c.check(
        "post",
        "/rest/v1/activities/external.json",
        &h.post(
            "/rest/v1/activities/external.json",
            json!({"input": [{"leadId": id, "activityDate": "2026-11-30T10:00:00Z", "apiName": "swaggerCheck",
                              "primaryAttributeValue": "Hello", "attributes": [{"apiName": "body", "value": "Hi"}]}]}),
        )
        .await,
    );

    // The rest of the custom activity type lifecycle: update (a draft of the approved type),
    // attribute update and delete, discard the draft, delete the type.
    c.check(
        "post",
        "/rest/v1/activities/external/type/{apiName}.json",
        &h.post("/rest/v1/activities/external/type/swaggerCheck.json", json!({"description": "Updated"})).await,
    );
    let attr_updated = h
        .post(
            "/rest/v1/activities/external/type/swaggerCheck/attributes/update.json",
            json!({"attributes": [{"apiName": "body", "name": "Message body", "dataType": "text"}]}),
        )
        .await;
    assert_eq!(attr_updated["result"][0]["status"], "approved with draft");
    c.check("post", "/rest/v1/activities/external/type/{apiName}/attributes/update.json", &attr_updated);
    c.check(
        "post",
        "/rest/v1/activities/external/type/{apiName}/attributes/delete.json",
        &h.post(
            "/rest/v1/activities/external/type/swaggerCheck/attributes/delete.json",
            json!({"attributes": [{"apiName": "body"}]}),
        )
        .await,
    );
    let discarded = h.post_empty("/rest/v1/activities/external/type/swaggerCheck/discardDraft.json").await;
    assert_eq!(discarded["result"][0]["status"], "approved");
    assert_eq!(discarded["result"][0]["attributes"][0]["name"], "Body", "the approved version is back");
    c.check("post", "/rest/v1/activities/external/type/{apiName}/discardDraft.json", &discarded);
    let deleted = h.post_empty("/rest/v1/activities/external/type/swaggerCheck/delete.json").await;
    c.check("post", "/rest/v1/activities/external/type/{apiName}/delete.json", &deleted);
    assert_eq!(error_code(&h.get("/rest/v1/activities/external/type/swaggerCheck/describe.json").await), Some("1013"));

    // Usage.
    c.check("get", "/rest/v1/stats/usage.json", &h.get("/rest/v1/stats/usage.json").await);
    c.check("get", "/rest/v1/stats/errors.json", &h.get("/rest/v1/stats/errors.json").await);

    // Bulk lead and activity exports.
    check_export(
        &h,
        &mut c,
        "leads",
        json!({"fields": ["id", "email"], "format": "CSV",
               "filter": {"createdAt": {"startAt": "2020-01-01T00:00:00Z", "endAt": "2020-01-31T00:00:00Z"}}}),
        json!({"fields": ["id"], "filter": {"createdAt": {"startAt": "2020-02-01T00:00:00Z", "endAt": "2020-02-28T00:00:00Z"}}}),
    )
    .await;
    check_export(
        &h,
        &mut c,
        "activities",
        json!({"format": "CSV", "filter": {"createdAt": {"startAt": "2026-06-01T00:00:00Z", "endAt": "2026-06-30T00:00:00Z"},
                                          "activityTypeIds": [12, 13]}}),
        json!({"filter": {"createdAt": {"startAt": "2026-05-01T00:00:00Z", "endAt": "2026-05-31T00:00:00Z"}}}),
    )
    .await;

    // The checker does catch a wrong answer: a numeric requestId and a string lead id.
    let before = c.violations.len();
    c.check("get", "/rest/v1/leads.json", &json!({"requestId": 1, "success": true, "result": [{"id": "x"}]}));
    assert_eq!(c.violations.len() - before, 2, "{:?}", &c.violations[before..]);
    c.violations.truncate(before);
    c.checked.pop();

    let mut ops = c.checked.clone();
    ops.sort();
    ops.dedup();
    eprintln!("{} responses of {} Swagger operations checked: {ops:?}", c.checked.len(), ops.len());
    assert!(c.violations.is_empty(), "{} violations:\n{}", c.violations.len(), c.violations.join("\n"));
    assert!(ops.len() >= 53, "{} operations", ops.len());
}
