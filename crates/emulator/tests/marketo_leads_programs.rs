//! Marketo emulator over HTTP: custom lead fields, program membership, push leads, submit form,
//! lead partitions and the program member describe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod marketo_common;

use marketo_common::*;
use salesync_emulator::seed;
use serde_json::{Value, json};

async fn seeded() -> (Harness, Vec<i64>, String) {
    let h = Harness::start(config()).await;
    let world = seed::generate(12, 5);
    h.emu.seed_world(&world);
    let ids: Vec<i64> = world.people.iter().map(|p| p.marketo_id).collect();
    let email = world.people.iter().find_map(|p| p.email.clone()).unwrap();
    (h, ids, email)
}

fn statuses(v: &Value) -> Vec<String> {
    v["result"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect()
}

fn reason(v: &Value, i: usize) -> &str {
    v["result"][i]["reasons"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn custom_lead_fields_are_created_updated_and_then_usable() {
    let (h, ids, _) = seeded().await;
    let created = h
        .post(
            "/rest/v1/leads/schema/fields.json",
            json!({"input": [
                {"name": "salesyncTier", "displayName": "Salesync Tier", "dataType": "string", "description": "CI tier"},
                {"name": "salesyncSeats", "displayName": "Salesync Seats", "dataType": "integer", "isSensitive": true},
                {"name": "email", "displayName": "Another Email", "dataType": "email"},
                {"name": "badType", "displayName": "Bad Type", "dataType": "blob"},
                {"name": "9lives", "displayName": "Nine Lives", "dataType": "string"},
                {"name": "noDisplay", "dataType": "string"}
            ]}),
        )
        .await;
    assert_ok(&created);
    assert_eq!(statuses(&created), ["created", "created", "skipped", "skipped", "skipped", "skipped"]);
    assert_eq!(created["result"][0]["name"], "salesyncTier");
    assert!((2..6).all(|i| reason(&created, i) == "1003"), "{created}");

    // Shown by every describe.
    let describe = h.get("/rest/v1/leads/describe.json").await;
    assert!(describe["result"].as_array().unwrap().iter().any(|f| f["rest"]["name"] == "salesyncTier"));
    let d2 = h.get("/rest/v1/leads/describe2.json").await;
    let f2 = d2["result"][0]["fields"].as_array().unwrap().iter().find(|f| f["name"] == "salesyncSeats").unwrap();
    assert_eq!(f2["dataType"], "integer");
    assert_eq!(f2["updateable"], true);
    assert!(d2["result"][0]["searchableFields"].as_array().unwrap().contains(&json!(["salesyncTier"])));
    let schema = h.get("/rest/v1/leads/schema/fields/salesyncSeats.json").await;
    assert_eq!(schema["result"][0]["isCustom"], true);
    assert_eq!(schema["result"][0]["isApiCreated"], true);
    assert_eq!(schema["result"][0]["isSensitive"], true);

    // Usable in sync, get and filter, with lead-change activities.
    let synced = h
        .post(
            "/rest/v1/leads.json",
            json!({"action": "updateOnly", "lookupField": "id",
                                           "input": [{"id": ids[0], "salesyncTier": "gold", "salesyncSeats": 12}]}),
        )
        .await;
    assert_eq!(statuses(&synced), ["updated"]);
    let got = h.get(&format!("/rest/v1/lead/{}.json?fields=salesyncTier,salesyncSeats", ids[0])).await;
    assert_eq!(got["result"][0]["salesyncTier"], "gold");
    assert_eq!(got["result"][0]["salesyncSeats"], 12);
    let by_tier = h.get("/rest/v1/leads.json?filterType=salesyncTier&filterValues=gold&fields=id").await;
    assert_eq!(by_tier["result"][0]["id"], ids[0]);
    let t = h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-06-15T00:00:00Z").await;
    let changes = h
        .get(&format!(
            "/rest/v1/activities/leadchanges.json?nextPageToken={}&fields=salesyncTier&leadIds={}",
            t["nextPageToken"].as_str().unwrap(),
            ids[0]
        ))
        .await;
    assert!(
        changes["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["fields"][0]["name"] == "salesyncTier" && a["fields"][0]["newValue"] == "gold"),
        "{changes}"
    );

    // Update: display name and flags.
    let updated = h
        .post(
            "/rest/v1/leads/schema/fields/salesyncTier.json",
            json!({"input": [{"displayName": "Customer Tier", "isHidden": true}]}),
        )
        .await;
    assert_ok(&updated);
    assert_eq!(updated["result"][0], json!({"name": "salesyncTier", "status": "updated"}));
    let schema = h.get("/rest/v1/leads/schema/fields/salesyncTier.json").await;
    assert_eq!(schema["result"][0]["displayName"], "Customer Tier");
    assert_eq!(schema["result"][0]["isHidden"], true);
    assert_eq!(schema["result"][0]["description"], "CI tier");
    let dup = h
        .post("/rest/v1/leads/schema/fields/salesyncTier.json", json!({"input": [{"displayName": "Email Address"}]}))
        .await;
    assert_eq!(error_code(&dup), Some("1003"));
    let missing =
        h.post("/rest/v1/leads/schema/fields/noSuchField.json", json!({"input": [{"displayName": "X"}]})).await;
    assert_eq!(error_code(&missing), Some("1006"));

    // Bad input: content type, JSON, missing input.
    let (status, v) = h.post_raw("/rest/v1/leads/schema/fields.json", "text/plain", b"{}".to_vec()).await;
    assert_eq!((status, error_code(&v)), (200, Some("612")));
    let (_, v) = h.post_raw("/rest/v1/leads/schema/fields.json", "application/json", b"{\"input\":[".to_vec()).await;
    assert_eq!(error_code(&v), Some("609"));
    assert_eq!(error_code(&h.post("/rest/v1/leads/schema/fields.json", json!({})).await), Some("1003"));
}

#[tokio::test]
async fn program_status_membership_and_leads_by_program() {
    let (h, ids, _) = seeded().await;
    assert_eq!(h.get("/rest/v1/leads/programs/1001.json").await["result"], json!([]));
    let changed = h
        .post(
            "/rest/v1/leads/programs/1001/status.json",
            json!({"status": "Registered", "input": [{"id": ids[0]}, {"id": ids[1]}, {"id": 99999999}]}),
        )
        .await;
    assert_ok(&changed);
    assert_eq!(statuses(&changed), ["updated", "updated", "skipped"]);
    assert_eq!(changed["result"][2]["id"], 99999999);
    assert_eq!(reason(&changed, 2), "1004");

    // Forward only: Attended (a success) then back to Registered is refused per lead.
    let attended = h
        .post("/rest/v1/leads/programs/1001/status.json", json!({"status": "Attended", "input": [{"id": ids[0]}]}))
        .await;
    assert_eq!(statuses(&attended), ["updated"]);
    let back = h
        .post("/rest/v1/leads/programs/1001/status.json", json!({"status": "registered", "input": [{"id": ids[0]}]}))
        .await;
    assert_eq!(statuses(&back), ["skipped"]);
    assert_eq!(reason(&back, 0), "1003");

    let members = h.get("/rest/v1/leads/programs/1001.json?fields=email,firstName").await;
    assert_ok(&members);
    let result = members["result"].as_array().unwrap();
    assert_eq!(result.iter().map(|m| m["id"].as_i64().unwrap()).collect::<Vec<_>>(), [ids[0], ids[1]]);
    assert_eq!(result[0]["membership"]["progressionStatus"], "Attended");
    assert_eq!(result[0]["membership"]["reachedSuccess"], true);
    assert_eq!(result[1]["membership"]["progressionStatus"], "Registered");
    assert_eq!(result[1]["membership"]["reachedSuccess"], false);
    assert!(result[0]["membership"]["membershipDate"].is_string());

    // Paged, and the long form (`POST …?_method=GET` with a form body) answers the same.
    let first = h.get("/rest/v1/leads/programs/1001.json?batchSize=1").await;
    assert_eq!(first["result"].as_array().unwrap().len(), 1);
    assert_eq!(first["moreResult"], true);
    let next = first["nextPageToken"].as_str().unwrap();
    let second = h.post_form("/rest/v1/leads/programs/1001.json?_method=GET", &format!("nextPageToken={next}")).await;
    assert_eq!(second["result"][0]["id"], ids[1]);
    assert!(second.get("nextPageToken").is_none(), "{second}");
    let long = h.post_form("/rest/v1/leads/programs/1001.json", "_method=GET&fields=email").await;
    assert_eq!(long["result"].as_array().unwrap().len(), 2, "{long}");

    // The lead's own program membership.
    let pm = h.get(&format!("/rest/v1/leads/{}/programMembership.json", ids[0])).await;
    assert_eq!(pm["result"][0]["id"], 1001);
    assert_eq!(pm["result"][0]["progressionStatus"], "Attended");

    // Change Status in Progression activities.
    let acts = h.activities_of("104", &ids[0].to_string()).await;
    let news: Vec<&str> = acts
        .iter()
        .map(|a| {
            a["attributes"].as_array().unwrap().iter().find(|x| x["name"] == "New Status").unwrap()["value"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(news, ["Registered", "Attended"]);
    assert_eq!(acts[0]["primaryAttributeValueId"], 1001);

    // Errors.
    let unknown = h
        .post("/rest/v1/leads/programs/4242/status.json", json!({"status": "Member", "input": [{"id": ids[0]}]}))
        .await;
    assert_eq!(error_code(&unknown), Some("1013"));
    assert_eq!(error_code(&h.get("/rest/v1/leads/programs/4242.json").await), Some("1013"));
    let bad = h
        .post("/rest/v1/leads/programs/1001/status.json", json!({"status": "Sleeping", "input": [{"id": ids[0]}]}))
        .await;
    assert_eq!(error_code(&bad), Some("1003"));
    let no_status = h.post("/rest/v1/leads/programs/1001/status.json", json!({"input": [{"id": ids[0]}]})).await;
    assert_eq!(error_code(&no_status), Some("1003"));
    assert_eq!(error_code(&h.get("/rest/v1/leads/programs/1001.json?fields=nope").await), Some("1006"));
    let (_, v) = h.post_raw("/rest/v1/leads/programs/1001/status.json", "text/plain", b"{}".to_vec()).await;
    assert_eq!(error_code(&v), Some("612"));
}

#[tokio::test]
async fn push_leads_upserts_with_lead_change_activities_and_joins_the_program() {
    let (h, ids, email) = seeded().await;
    let pushed = h
        .post(
            "/rest/v1/leads/push.json",
            json!({"programName": "Salesync Newsletter", "lookupField": "email", "source": "CI", "reason": "Pushed by CI",
                   "input": [{"email": "pushed.new@example.com", "firstName": "Pia"},
                             {"email": email, "title": "Pushed Title"},
                             {"email": "x@example.com", "noSuchField": 1},
                             {"firstName": "No email"}]}),
        )
        .await;
    assert_ok(&pushed);
    assert_eq!(statuses(&pushed), ["created", "updated", "skipped", "skipped"]);
    assert_eq!(reason(&pushed, 2), "1006");
    assert_eq!(reason(&pushed, 3), "1003");
    let new_id = pushed["result"][0]["id"].as_i64().unwrap();
    let old_id = pushed["result"][1]["id"].as_i64().unwrap();
    assert!(ids.contains(&old_id));

    // Same lead-change activities as Sync Leads, plus Push Lead to Marketo.
    let new_acts = h.activities_of("12,13,145", &new_id.to_string()).await;
    let types: Vec<i64> = new_acts.iter().map(|a| a["activityTypeId"].as_i64().unwrap()).collect();
    assert_eq!(types, [12, 145]);
    let old_changes = h.activities_of("13", &old_id.to_string()).await;
    assert!(old_changes.iter().any(|a| a["primaryAttributeValue"] == "Job Title"), "{old_changes:?}");
    let push_act = &new_acts[1];
    assert_eq!(push_act["primaryAttributeValue"], "Salesync Newsletter");
    assert!(push_act["attributes"].as_array().unwrap().contains(&json!({"name": "Source", "value": "CI"})));
    let got = h.get(&format!("/rest/v1/lead/{old_id}.json?fields=title")).await;
    assert_eq!(got["result"][0]["title"], "Pushed Title");

    // Members of the program, the new lead acquired by it.
    let members = h.get("/rest/v1/leads/programs/1002.json").await;
    let m = members["result"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    let new_member = m.iter().find(|x| x["id"] == new_id).unwrap();
    assert_eq!(new_member["membership"]["acquiredBy"], true);
    assert_eq!(new_member["membership"]["progressionStatus"], "Member");

    // With a programStatus.
    let engaged = h
        .post(
            "/rest/v1/leads/push.json",
            json!({"programName": "Salesync Newsletter", "programStatus": "Engaged", "input": [{"email": "pushed.new@example.com"}]}),
        )
        .await;
    assert_eq!(statuses(&engaged), ["updated"]);
    let members = h.get("/rest/v1/leads/programs/1002.json").await;
    let new_member = members["result"].as_array().unwrap().iter().find(|x| x["id"] == new_id).cloned().unwrap();
    assert_eq!(new_member["membership"]["progressionStatus"], "Engaged");

    // Errors.
    let no_program = h.post("/rest/v1/leads/push.json", json!({"input": [{"email": "a@b.c"}]})).await;
    assert_eq!(error_code(&no_program), Some("1003"));
    let unknown =
        h.post("/rest/v1/leads/push.json", json!({"programName": "Nope", "input": [{"email": "a@b.c"}]})).await;
    assert_eq!(error_code(&unknown), Some("1013"));
    let bad_status = h
        .post(
            "/rest/v1/leads/push.json",
            json!({"programName": "Salesync Newsletter", "programStatus": "Zzz", "input": []}),
        )
        .await;
    assert_eq!(error_code(&bad_status), Some("1003"));
    let bad_lookup = h
        .post(
            "/rest/v1/leads/push.json",
            json!({"programName": "Salesync Newsletter", "lookupField": "nope", "input": []}),
        )
        .await;
    assert_eq!(error_code(&bad_lookup), Some("1006"));
    let (_, v) = h.post_raw("/rest/v1/leads/push.json", "application/json", b"not json".to_vec()).await;
    assert_eq!(error_code(&v), Some("609"));
}

#[tokio::test]
async fn submit_form_upserts_the_lead_logs_the_fill_out_and_joins_the_program() {
    let (h, _, email) = seeded().await;
    let submitted = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1001, "input": [{
                "leadFormFields": {"email": "form.fill@example.com", "firstName": "Fran", "company": "Forms Inc"},
                "visitorData": {"pageURL": "https://example.com/webinar", "queryString": "utm=ci",
                                "leadClientIpAddress": "192.0.2.7", "userAgentString": "CI/1.0"},
                "cookie": "id:123-ABC-456&token:_mch-example.com-1-2"}]}),
        )
        .await;
    assert_ok(&submitted);
    assert_eq!(statuses(&submitted), ["created"]);
    let id = submitted["result"][0]["id"].as_i64().unwrap();
    let acts = h.activities_of("2,12", &id.to_string()).await;
    assert_eq!(acts.iter().map(|a| a["activityTypeId"].as_i64().unwrap()).collect::<Vec<_>>(), [12, 2]);
    let fill = &acts[1];
    assert_eq!(fill["primaryAttributeValueId"], 1001);
    let attrs = fill["attributes"].as_array().unwrap();
    assert!(attrs.contains(&json!({"name": "Client IP Address", "value": "192.0.2.7"})), "{attrs:?}");
    assert!(attrs.contains(&json!({"name": "Referrer URL", "value": "https://example.com/webinar"})));
    let members = h.get("/rest/v1/leads/programs/1001.json").await;
    assert_eq!(members["result"][0]["id"], id);
    assert_eq!(members["result"][0]["membership"]["progressionStatus"], "Invited");

    // An existing email is updated (Change Data Value), on a form without a program.
    let again = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1002, "input": [{"leadFormFields": {"email": email, "city": "Formville"}}]}),
        )
        .await;
    assert_eq!(statuses(&again), ["updated"]);
    let updated = again["result"][0]["id"].as_i64().unwrap();
    let changes = h.activities_of("13", &updated.to_string()).await;
    assert!(changes.iter().any(|a| a["primaryAttributeValue"] == "City"), "{changes:?}");

    // Errors.
    let unknown = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 9999, "input": [{"leadFormFields": {"email": "a@b.c"}}]}),
        )
        .await;
    assert_eq!(error_code(&unknown), Some("1013"));
    let no_form =
        h.post("/rest/v1/leads/submitForm.json", json!({"input": [{"leadFormFields": {"email": "a@b.c"}}]})).await;
    assert_eq!(error_code(&no_form), Some("1003"));
    let two = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1002, "input": [{"leadFormFields": {"email": "a@b.c"}}, {"leadFormFields": {"email": "d@e.f"}}]}),
        )
        .await;
    assert_eq!(error_code(&two), Some("1003"));
    let bad_program = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1002, "programId": 777, "input": [{"leadFormFields": {"email": "a@b.c"}}]}),
        )
        .await;
    assert_eq!(error_code(&bad_program), Some("1013"));
    let no_email = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1002, "input": [{"leadFormFields": {"firstName": "X"}}]}),
        )
        .await;
    assert_eq!(statuses(&no_email), ["skipped"]);
    let unknown_field = h
        .post(
            "/rest/v1/leads/submitForm.json",
            json!({"formId": 1002, "input": [{"leadFormFields": {"email": "a@b.c", "shoeSize": 9}}]}),
        )
        .await;
    assert_eq!(reason(&unknown_field, 0), "1006");
}

#[tokio::test]
async fn leads_move_between_partitions() {
    let (h, ids, _) = seeded().await;
    let parts = h.get("/rest/v1/leads/partitions.json").await;
    let names: Vec<&str> = parts["result"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Default", "EMEA"]);
    let moved = h
        .post(
            "/rest/v1/leads/partitions.json",
            json!({"input": [{"id": ids[0], "partitionName": "EMEA"}, {"id": ids[1], "partitionName": "Mars"},
                             {"id": 99999999, "partitionName": "EMEA"}]}),
        )
        .await;
    assert_ok(&moved);
    assert_eq!(statuses(&moved), ["updated", "skipped", "skipped"]);
    assert_eq!(reason(&moved, 1), "1009");
    assert_eq!(reason(&moved, 2), "1004");
    let lead = h.get(&format!("/rest/v1/lead/{}.json?fields=leadPartitionId", ids[0])).await;
    assert_eq!(lead["result"][0]["leadPartitionId"], 2);
    let by_partition = h.get("/rest/v1/leads.json?filterType=leadPartitionId&filterValues=2&fields=id").await;
    assert_eq!(by_partition["result"], json!([{"id": ids[0]}]));
    let acts = h.activities_of("100", &ids[0].to_string()).await;
    assert_eq!(acts.len(), 1);
    assert!(acts[0]["attributes"].as_array().unwrap().contains(&json!({"name": "New Partition ID", "value": 2})));
    assert_eq!(error_code(&h.post("/rest/v1/leads/partitions.json", json!({})).await), Some("1003"));
}

#[tokio::test]
async fn program_member_fields_are_described_on_both_paths() {
    let (h, _, _) = seeded().await;
    for path in ["/rest/v1/program/members/describe.json", "/rest/v1/programs/members/describe.json"] {
        let d = h.get(path).await;
        assert_ok(&d);
        assert_eq!(d["result"][0]["name"], "API Program Member");
        let names: Vec<&str> =
            d["result"][0]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert!(
            ["leadId", "programId", "progressionStatus", "membershipDate", "reachedSuccess"]
                .iter()
                .all(|n| names.contains(n))
        );
    }
}
