//! Salesforce emulator over real HTTP: OAuth, sessions, sObject CRUD, SOQL, paging, collections,
//! upsert, lead conversion, replication and limits.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use chrono::{Duration, TimeZone, Utc};
use data_encoding::{BASE64, BASE64URL_NOPAD};
use reqwest::Method;
use salesforce_common::{H, clock, code, obj, token, urlencode};
use salesync_emulator::salesforce::{SalesforceConfig, SalesforceEmulator};
use salesync_emulator::seed;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let mut i = Sha256::new();
    i.update(k.map(|b| b ^ 0x36));
    i.update(msg);
    let mut o = Sha256::new();
    o.update(k.map(|b| b ^ 0x5c));
    o.update(i.finalize());
    o.finalize().to_vec()
}

async fn grant(emu: &SalesforceEmulator, form: &[(&str, &str)]) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", emu.base_url()))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn oauth_grants_and_errors() {
    let emu = SalesforceEmulator::start(SalesforceConfig { clock: clock(), ..Default::default() }).await.unwrap();
    let (id, secret) = (emu.client_id().to_string(), emu.client_secret().to_string());

    let (s, b) =
        grant(&emu, &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret)]).await;
    assert_eq!(s, 200);
    assert_eq!(b["instance_url"], emu.base_url());
    assert_eq!(b["token_type"], "Bearer");
    assert!(b.get("expires_in").is_none());
    let ident = b["id"].as_str().unwrap();
    assert!(ident.starts_with(&format!("{}/id/00D", emu.base_url())), "{ident}");
    assert!(ident.rsplit('/').next().unwrap().starts_with("005"));
    let issued = b["issued_at"].as_str().unwrap();
    assert_eq!(issued, "1781535600000");
    let sig = BASE64.decode(b["signature"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(sig, hmac(secret.as_bytes(), format!("{ident}{issued}").as_bytes()));

    // HTTP Basic client authentication.
    let r = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", emu.base_url()))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let cfg = emu.config().clone();
    let (s, _) = grant(
        &emu,
        &[
            ("grant_type", "password"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("username", &cfg.username),
            ("password", &cfg.password),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = grant(
        &emu,
        &[
            ("grant_type", "password"),
            ("client_id", &id),
            ("client_secret", &secret),
            ("username", &cfg.username),
            ("password", "nope"),
        ],
    )
    .await;
    assert_eq!((s, b), (400, json!({"error": "invalid_grant", "error_description": "authentication failure"})));

    let rt = cfg.refresh_token.clone().unwrap();
    let (s, b) = grant(&emu, &[("grant_type", "refresh_token"), ("client_id", &id), ("refresh_token", &rt)]).await;
    assert_eq!(s, 200);
    assert!(b.get("refresh_token").is_none(), "no rotation by default");
    let (s, b) = grant(&emu, &[("grant_type", "refresh_token"), ("client_id", &id), ("refresh_token", "stale")]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));

    let jwt = |iss: &str, exp: i64| {
        let h = BASE64URL_NOPAD.encode(br#"{"alg":"RS256"}"#);
        let p = BASE64URL_NOPAD.encode(
            json!({"iss": iss, "sub": "u@x.com", "aud": "https://login.salesforce.com", "exp": exp})
                .to_string()
                .as_bytes(),
        );
        format!("{h}.{p}.c2lnbmF0dXJl")
    };
    let exp = Utc.with_ymd_and_hms(2026, 6, 15, 15, 3, 0).unwrap().timestamp();
    let gt = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let (s, b) = grant(&emu, &[("grant_type", gt), ("assertion", &jwt(&id, exp))]).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["access_token"].as_str().unwrap().starts_with("00D"));
    let (s, _) = grant(&emu, &[("grant_type", gt), ("assertion", &jwt("someone-else", exp))]).await;
    assert_eq!(s, 400);
    let (s, b) = grant(&emu, &[("grant_type", gt), ("assertion", "not-a-jwt")]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));
    let (s, b) = grant(&emu, &[("grant_type", gt), ("assertion", &jwt(&id, exp - 3600))]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_grant")));

    let (s, b) =
        grant(&emu, &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", "wrong")]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_client")));
    let (s, b) = grant(&emu, &[("grant_type", "magic")]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("unsupported_grant_type")));
    assert_eq!(emu.api_usage(), 0, "token calls are not API calls");
}

#[tokio::test]
async fn refresh_token_rotation_invalidates_the_old_one() {
    let emu =
        SalesforceEmulator::start(SalesforceConfig { rotate_refresh_token: true, ..Default::default() }).await.unwrap();
    let id = emu.client_id().to_string();
    let rt = emu.config().refresh_token.clone().unwrap();
    let (s, b) = grant(&emu, &[("grant_type", "refresh_token"), ("client_id", &id), ("refresh_token", &rt)]).await;
    assert_eq!(s, 200);
    let new = b["refresh_token"].as_str().unwrap().to_string();
    let (s, _) = grant(&emu, &[("grant_type", "refresh_token"), ("client_id", &id), ("refresh_token", &rt)]).await;
    assert_eq!(s, 400);
    let (s, _) = grant(&emu, &[("grant_type", "refresh_token"), ("client_id", &id), ("refresh_token", &new)]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn sessions_expire_with_the_clock_and_on_demand() {
    let h = H::default().await;
    assert_eq!(h.get("/limits").await.0, 200);
    h.emu.clock().advance(Duration::minutes(119));
    assert_eq!(h.get("/limits").await.0, 200);
    h.emu.clock().advance(Duration::minutes(1));
    let (s, b) = h.get("/limits").await;
    assert_eq!((s, b), (401, json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])));
    let fresh = token(&h.emu, &h.http).await;
    let h = H { token: fresh, ..h };
    assert_eq!(h.get("/limits").await.0, 200);
    h.emu.expire_sessions();
    assert_eq!(h.get("/limits").await.0, 401);
    let r = h.http.get(h.api("/limits")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no Authorization header");
}

#[tokio::test]
async fn sobject_crud_validation_and_derived_fields() {
    let h = H::default().await;
    let user = h.emu.integration_user_id().to_string();
    let (s, b) = h
        .call(
            Method::POST,
            "/sobjects/Lead/",
            Some(json!({"LastName": "Ng", "Company": "Acme", "Email": "ng@acme.test"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["success"], true);
    let lead = b["id"].as_str().unwrap().to_string();
    assert_eq!(lead.len(), 18);
    assert!(lead.starts_with("00Q"));
    let (s, rec) = h.get(&format!("/sobjects/Lead/{}", &lead[..15])).await;
    assert_eq!(s, 200);
    assert_eq!(rec["attributes"]["type"], "Lead");
    assert_eq!(rec["attributes"]["url"], format!("/services/data/v60.0/sobjects/Lead/{lead}"));
    assert_eq!(rec["Status"], "Open - Not Contacted");
    assert_eq!(rec["OwnerId"], user.as_str());
    assert_eq!(rec["IsConverted"], false);
    assert_eq!(rec["HasOptedOutOfEmail"], false);
    assert_eq!(rec["LastModifiedDate"], "2026-06-15T15:00:00.000+0000");

    h.emu.clock().advance(Duration::minutes(5));
    let (s, _) =
        h.call(Method::PATCH, &format!("/sobjects/Lead/{lead}"), Some(json!({"HasOptedOutOfEmail": true}))).await;
    assert_eq!(s, 204);
    let (_, rec) = h.get(&format!("/sobjects/Lead/{lead}?fields=HasOptedOutOfEmail,SystemModstamp")).await;
    assert_eq!(rec["HasOptedOutOfEmail"], true);
    assert_eq!(rec["SystemModstamp"], "2026-06-15T15:05:00.000+0000");
    assert!(rec.get("Email").is_none(), "fields= restricts the answer");

    // Validation errors in Salesforce's format.
    let (s, b) = h.call(Method::POST, "/sobjects/Lead", Some(json!({"Company": "Acme"}))).await;
    assert_eq!(
        (s, b.clone()),
        (
            400,
            json!([{"message": "Required fields are missing: [LastName]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}])
        )
    );
    let (s, b) =
        h.call(Method::POST, "/sobjects/Lead", Some(json!({"LastName": "X", "Company": "Y", "Nope__c": 1}))).await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    let (s, b) = h
        .call(Method::POST, "/sobjects/Lead", Some(json!({"LastName": "X", "Company": "Y", "Email": "not an email"})))
        .await;
    assert_eq!((s, code(&b)), (400, "INVALID_EMAIL_ADDRESS"));
    let (s, b) = h
        .call(Method::POST, "/sobjects/Lead", Some(json!({"LastName": "X", "Company": "Y", "IsConverted": true})))
        .await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD_FOR_INSERT_UPDATE"));
    let (s, b) = h.call(Method::GET, "/sobjects/Lead/00Q5g000000000000A", None).await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));
    let (s, b) = h.call(Method::GET, "/sobjects/Widget/00Q5g000000000000A", None).await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));
    let (s, b) = h.call(Method::POST, "/sobjects/Lead", None).await;
    assert_eq!((s, code(&b)), (400, "JSON_PARSER_ERROR"));

    // Tasks: defaults, derived fields, picklists, reference checks.
    let acct = h.emu.insert("Account", obj(json!({"Name": "Acme"}))).unwrap();
    let contact = h.emu.insert("Contact", obj(json!({"LastName": "Ng", "AccountId": acct}))).unwrap();
    let (s, b) = h
        .call(
            Method::POST,
            "/sobjects/Task",
            Some(json!({"Subject": "Call", "WhoId": contact, "Type": "Call", "TaskSubtype": "Call", "Priority": "High", "Salesync_Activity_Id__c": "a-1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let task = b["id"].as_str().unwrap().to_string();
    assert!(task.starts_with("00T"));
    let t = h.emu.get("Task", &task).unwrap();
    assert_eq!(t["Status"], "Not Started");
    assert_eq!(t["IsClosed"], false);
    assert_eq!(t["CompletedDateTime"], Value::Null);
    assert_eq!(t["IsHighPriority"], true);
    assert_eq!(t["AccountId"], acct.as_str());
    assert_eq!(t["OwnerId"], user.as_str());
    h.emu.clock().advance(Duration::minutes(1));
    let (s, _) = h.call(Method::PATCH, &format!("/sobjects/Task/{task}"), Some(json!({"Status": "Completed"}))).await;
    assert_eq!(s, 204);
    let t = h.emu.get("Task", &task).unwrap();
    assert_eq!(t["IsClosed"], true);
    assert_eq!(t["CompletedDateTime"], "2026-06-15T15:06:00.000+0000");
    let (s, b) = h.call(Method::PATCH, &format!("/sobjects/Task/{task}"), Some(json!({"TaskSubtype": "Email"}))).await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD_FOR_INSERT_UPDATE"));
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "Type": "email"}))).await;
    assert_eq!((s, code(&b)), (400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"), "picklist values are case-sensitive");
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "WhoId": acct}))).await;
    assert_eq!((s, code(&b), b[0]["fields"].clone()), (400, "FIELD_INTEGRITY_EXCEPTION", json!(["WhoId"])));
    let (s, b) =
        h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "WhoId": "00Q5g000000000000A"}))).await;
    assert_eq!((s, code(&b)), (400, "INVALID_CROSS_REFERENCE_KEY"));
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "OwnerId": contact}))).await;
    assert_eq!((s, code(&b)), (400, "FIELD_INTEGRITY_EXCEPTION"));
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "MSE_Viewed__c": true}))).await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"), "unregistered custom field");
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "Status": null}))).await;
    assert_eq!((s, code(&b)), (400, "REQUIRED_FIELD_MISSING"));
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "y".repeat(256)}))).await;
    assert_eq!((s, code(&b)), (400, "STRING_TOO_LONG"));
    let (s, b) =
        h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "dup", "Salesync_Activity_Id__c": "A-1"}))).await;
    assert_eq!((s, code(&b)), (400, "DUPLICATE_VALUE"), "external ids are unique and case-insensitive");

    // Soft delete.
    let (s, _) = h.call(Method::DELETE, &format!("/sobjects/Task/{task}"), None).await;
    assert_eq!(s, 204);
    let (s, b) = h.get(&format!("/sobjects/Task/{task}")).await;
    assert_eq!((s, code(&b)), (404, "ENTITY_IS_DELETED"));
    let (s, b) = h.call(Method::PATCH, &format!("/sobjects/Task/{task}"), Some(json!({"Subject": "z"}))).await;
    assert_eq!((s, code(&b)), (404, "ENTITY_IS_DELETED"));
    assert_eq!(h.emu.get("Task", &task).unwrap()["IsDeleted"], true);
    assert!(h.emu.records("Task").is_empty());
    let (s, b) =
        h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "WhatId": acct, "WhoId": contact}))).await;
    assert_eq!(s, 201, "{b}");
    h.emu.delete("Contact", &contact).unwrap();
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "WhoId": contact}))).await;
    assert_eq!((s, code(&b)), (400, "ENTITY_IS_DELETED"));
}

#[tokio::test]
async fn task_custom_fields_are_opt_in() {
    let h = H::start(SalesforceConfig { task_custom_fields: vec!["MSE_Viewed__c".into()], ..Default::default() }).await;
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "MSE_Viewed__c": 3}))).await;
    assert_eq!(s, 201, "{b}");
    let b = h.query_ok("SELECT MSE_Viewed__c FROM Task WHERE MSE_Viewed__c = 3").await;
    assert_eq!(b["totalSize"], 1);
    let (_, d) = h.get("/sobjects/Task/describe").await;
    let ty = d["fields"].as_array().unwrap().iter().find(|f| f["name"] == "Type").unwrap();
    let values: Vec<&str> =
        ty["picklistValues"].as_array().unwrap().iter().map(|v| v["value"].as_str().unwrap()).collect();
    assert_eq!(values, ["Email", "Call", "Meeting", "Other", "Reply"]);
}

#[tokio::test]
async fn soql_features_and_errors() {
    let h = H::default().await;
    let world = seed::generate(300, 11);
    h.emu.seed_world(&world);
    let leads = world.people.iter().filter(|p| p.sf_lead_id.is_some()).count();
    let b = h.query_ok("SELECT COUNT() FROM Lead").await;
    assert_eq!((b["totalSize"].as_u64().unwrap() as usize, b["records"].as_array().unwrap().len()), (leads, 0));

    // Hostile literals.
    let nasty = "O'Brien \\ \"q\" 山田 é%_\nline";
    let id = h
        .emu
        .insert("Lead", obj(json!({"LastName": nasty, "Company": "Ünïcode Ltd", "Email": "nasty@x.test"})))
        .unwrap();
    let lit = r#"'O\'Brien \\ \"q\" 山田 é\%\_\nline'"#;
    let b = h.query_ok(&format!("SELECT Id, LastName FROM Lead WHERE LastName = {lit}")).await;
    assert_eq!(b["totalSize"], 1, "{b}");
    assert_eq!(b["records"][0]["Id"], id.as_str());
    assert_eq!(b["records"][0]["LastName"], nasty);
    let b = h.query_ok(r"SELECT Id FROM Lead WHERE LastName LIKE 'o\'brien%\%\_%'").await;
    assert_eq!(b["totalSize"], 1);
    let b = h.query_ok(r"SELECT Id FROM Lead WHERE Company = '\u00dcn\u00efcode ltd'").await;
    assert_eq!(b["totalSize"], 1, "unicode escapes and case-insensitive equality");
    let (s, b) = h.query(r"SELECT Id FROM Lead WHERE LastName = 'a\qb'").await;
    assert_eq!((s, code(&b)), (400, "MALFORMED_QUERY"));
    let (s, b) = h.query("SELECT Id FROM Lead WHERE LastName = 'unterminated").await;
    assert_eq!((s, code(&b)), (400, "MALFORMED_QUERY"));
    let (s, b) = h.query("SELECT Id, FROM Lead").await;
    assert_eq!((s, code(&b)), (400, "MALFORMED_QUERY"));
    let (s, b) = h.query("SELECT Id FROM Lead WHERE").await;
    assert_eq!((s, code(&b)), (400, "MALFORMED_QUERY"));
    let (s, b) = h.query("SELECT Id FROM Lead LIMIT 5 garbage").await;
    assert_eq!((s, code(&b)), (400, "MALFORMED_QUERY"));
    let (s, b) = h.query("SELECT FullName FROM Lead").await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    assert!(b[0]["message"].as_str().unwrap().contains("No such column 'FullName' on entity 'Lead'"));
    let (s, b) = h.query("SELECT Id FROM Lead WHERE Bogus.Name = 'x'").await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    let (s, b) = h.query("SELECT Id FROM Lead WHERE IsConverted = 'false'").await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    let (s, b) = h.query("SELECT Id FROM Widget__c").await;
    assert_eq!((s, code(&b)), (400, "INVALID_TYPE"));

    // Boolean logic, IN, NOT IN, null, relationship fields.
    let first_lead = world.people.iter().find(|p| p.sf_lead_id.is_some()).unwrap();
    let email = first_lead.email.clone().unwrap();
    let b = h
        .query_ok(&format!(
            "SELECT Id, Email, Owner.Name, Owner.Email FROM Lead WHERE (Email = '{}' OR Email IN ('nobody@x.test')) AND NOT IsConverted = true",
            email.to_uppercase()
        ))
        .await;
    let expected =
        world.people.iter().filter(|p| p.sf_lead_id.is_some() && p.email.as_deref() == Some(email.as_str())).count();
    assert_eq!(b["totalSize"].as_u64().unwrap() as usize, expected);
    let r0 = &b["records"][0];
    let owner = world.users.iter().find(|u| Some(&u.id) == first_lead.owner_id.as_ref()).unwrap();
    assert_eq!(r0["Owner"]["Email"], owner.email.as_str());
    assert_eq!(r0["Owner"]["Name"], format!("{} {}", owner.first_name, owner.last_name));
    assert_eq!(r0["Owner"]["attributes"]["type"], "User");
    let all = h.query_ok("SELECT Id FROM Lead").await["totalSize"].as_u64().unwrap();
    let b = h.query_ok(&format!("SELECT Id FROM Lead WHERE Id NOT IN ('{id}')")).await;
    assert_eq!(b["totalSize"].as_u64().unwrap(), all - 1);
    let b = h.query_ok(&format!("SELECT Id FROM Lead WHERE Id = '{}'", &id[..15])).await;
    assert_eq!(b["totalSize"], 1, "15-char ids match");
    let no_title = world.people.iter().filter(|p| p.sf_lead_id.is_some() && p.title.is_none()).count();
    let b = h.query_ok("SELECT Id FROM Lead WHERE Title = null AND Id != null").await;
    assert_eq!(b["totalSize"].as_u64().unwrap() as usize, no_title + 1);

    // Contact → Account parent, OCR → Contact, subqueries.
    let c = world.people.iter().find(|p| p.sf_opportunity_id.is_some()).unwrap();
    let cid = c.sf_contact_id.clone().unwrap();
    let b = h
        .query_ok(&format!(
            "SELECT Id, Account.Name, (SELECT Id, IsPrimary FROM OpportunityContactRoles), (SELECT Id FROM Tasks) FROM Contact WHERE Id = '{cid}'"
        ))
        .await;
    let r = &b["records"][0];
    let account = h.emu.get("Account", c.sf_account_id.as_deref().unwrap()).unwrap();
    assert_eq!(r["Account"]["Name"], account["Name"]);
    assert_eq!(r["Account"]["attributes"]["type"], "Account");
    assert_eq!(r["OpportunityContactRoles"]["totalSize"], 1);
    assert_eq!(r["OpportunityContactRoles"]["records"][0]["IsPrimary"], true);
    assert_eq!(r["Tasks"], Value::Null);
    let b = h
        .query_ok(&format!(
            "SELECT Contact.AccountId, Opportunity.StageName FROM OpportunityContactRole WHERE ContactId = '{cid}'"
        ))
        .await;
    assert_eq!(b["records"][0]["Contact"]["AccountId"], c.sf_account_id.clone().unwrap().as_str());
    assert_eq!(b["records"][0]["Opportunity"]["StageName"], "Prospecting");

    // Tasks: Who.Email, dates, order, limit, offset.
    for (i, (d, subj)) in [("2026-06-01", "b"), ("2026-06-03", "a"), ("2026-06-02", "c")].iter().enumerate() {
        h.emu.clock().advance(Duration::minutes(1));
        h.emu
            .insert("Task", obj(json!({"Subject": subj, "ActivityDate": d, "WhoId": cid, "Priority": if i == 0 { "High" } else { "Low" }})))
            .unwrap();
    }
    h.emu.insert("Task", obj(json!({"Subject": null, "WhoId": id}))).unwrap();
    let b = h.query_ok("SELECT Subject, Who.Email FROM Task ORDER BY Subject ASC NULLS LAST").await;
    let subjects: Vec<Value> = b["records"].as_array().unwrap().iter().map(|r| r["Subject"].clone()).collect();
    assert_eq!(subjects, vec![json!("a"), json!("b"), json!("c"), Value::Null]);
    assert_eq!(b["records"][0]["Who"]["Email"], c.email.clone().unwrap().as_str());
    assert_eq!(b["records"][3]["Who"]["attributes"]["type"], "Lead");
    let b = h.query_ok("SELECT Subject FROM Task ORDER BY Subject DESC").await;
    assert_eq!(b["records"][3]["Subject"], Value::Null, "DESC puts nulls last by default");
    let b = h
        .query_ok("SELECT Subject FROM Task WHERE ActivityDate >= 2026-06-02 ORDER BY ActivityDate DESC LIMIT 1")
        .await;
    assert_eq!((b["totalSize"].clone(), b["records"][0]["Subject"].clone()), (json!(1), json!("a")));
    let b =
        h.query_ok("SELECT Subject FROM Task WHERE Subject != null ORDER BY Priority ASC, Subject DESC OFFSET 1").await;
    let subjects: Vec<&str> = b["records"].as_array().unwrap().iter().map(|r| r["Subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["c", "a"], "High < Low, then Subject DESC, first skipped");
    let b = h.query_ok("SELECT Id FROM Task WHERE SystemModstamp > 2026-06-15T15:01:30Z AND CreatedDate <= 2026-06-15T17:03:00.000+0200").await;
    assert_eq!(b["totalSize"], 3, "{b}");
    let b = h.query_ok("SELECT Id FROM Task WHERE SystemModstamp > 2026-06-15T15:01:30Z AND CreatedDate < 2026-06-15T17:03:00+02:00").await;
    assert_eq!(b["totalSize"], 1, "{b}");
    let b = h.query_ok("SELECT Id FROM Task WHERE LastModifiedDate = TODAY AND CreatedDate = LAST_N_DAYS:2").await;
    assert_eq!(b["totalSize"], 4);
    let (s, b) = h.query("SELECT Id FROM Task WHERE CreatedDate > '2026-01-01'").await;
    assert_eq!((s, code(&b)), (400, "INVALID_FIELD"));
    let b = h.query_ok("SELECT Id FROM Lead WHERE Email LIKE '%@ACME.example.com' OR (NOT Company LIKE '%a%')").await;
    assert!(b["totalSize"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn paging_with_batch_size_and_query_all() {
    let h = H::default().await;
    for i in 0..1050 {
        h.emu.insert("Task", obj(json!({"Subject": format!("t{i:04}")}))).unwrap();
    }
    let r = h
        .http
        .get(h.api(&format!("/query?q={}", urlencode("SELECT Id, Subject FROM Task ORDER BY Subject"))))
        .bearer_auth(&h.token)
        .header("Sforce-Query-Options", "batchSize=200")
        .send()
        .await
        .unwrap();
    let mut page: Value = r.json().await.unwrap();
    let mut subjects = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert_eq!(page["totalSize"], 1050);
        for rec in page["records"].as_array().unwrap() {
            subjects.push(rec["Subject"].as_str().unwrap().to_string());
        }
        if page["done"] == true {
            assert!(page.get("nextRecordsUrl").is_none());
            break;
        }
        let next = page["nextRecordsUrl"].as_str().unwrap().to_string();
        assert!(next.starts_with("/services/data/v60.0/query/01g"), "{next}");
        page = h.get(&next).await.1;
    }
    assert_eq!(pages, 6);
    let expected: Vec<String> = (0..1050).map(|i| format!("t{i:04}")).collect();
    assert_eq!(subjects, expected);

    // Default batch is 2000; batchSize below 200 is raised to 200.
    let b = h.query_ok("SELECT Id FROM Task").await;
    assert_eq!((b["done"].clone(), b["records"].as_array().unwrap().len()), (json!(true), 1050));
    let (s, b) = h.get("/query/01gBOGUS-200").await;
    assert_eq!((s, code(&b)), (400, "INVALID_QUERY_LOCATOR"));

    // queryAll sees soft-deleted records; query doesn't.
    let first = h.emu.records("Task")[0]["Id"].as_str().unwrap().to_string();
    h.emu.delete("Task", &first).unwrap();
    let q = format!("SELECT Id, IsDeleted FROM Task WHERE Id = '{first}'");
    assert_eq!(h.query_ok(&q).await["totalSize"], 0);
    let b = h.get(&format!("/queryAll?q={}", urlencode(&q))).await.1;
    assert_eq!((b["totalSize"].clone(), b["records"][0]["IsDeleted"].clone()), (json!(1), json!(true)));
    h.emu.clock().advance(Duration::days(16));
    let fresh = token(&h.emu, &h.http).await;
    let h = H { token: fresh, ..h };
    let b = h.get(&format!("/queryAll?q={}", urlencode(&q))).await.1;
    assert_eq!(b["totalSize"], 0, "purged after 15 days");
}

#[tokio::test]
async fn collections_create_update_delete_and_all_or_none() {
    let h = H::default().await;
    let acct = h.emu.insert("Account", obj(json!({"Name": "Acme"}))).unwrap();
    let lead = h.emu.insert("Lead", obj(json!({"LastName": "L", "Company": "C"}))).unwrap();
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Task"}, "Subject": "ok", "WhoId": lead, "Status": "Not Started", "Priority": "Normal", "ActivityDate": "2025-06-03", "TaskSubtype": "Call"},
        {"attributes": {"type": "Task"}, "Subject": "Bad", "WhoId": acct},
        {"attributes": {"type": "Lead"}, "LastName": "M", "Company": "D"}
    ]});
    let (s, b) = h.call(Method::POST, "/composite/sobjects", Some(body)).await;
    assert_eq!(s, 200);
    assert_eq!(b[0]["success"], true);
    assert!(b[0]["id"].as_str().unwrap().starts_with("00T"));
    assert_eq!(b[1]["success"], false);
    assert_eq!(b[1]["errors"][0]["statusCode"], "FIELD_INTEGRITY_EXCEPTION");
    assert_eq!(b[1]["errors"][0]["fields"], json!(["WhoId"]));
    assert!(b[2]["id"].as_str().unwrap().starts_with("00Q"));
    assert_eq!(h.emu.records("Task").len(), 1);

    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Task"}, "Subject": "rolled back"},
        {"attributes": {"type": "Task"}, "Subject": "bad", "Type": "Nope"}
    ]});
    let (s, b) = h.call(Method::POST, "/composite/sobjects", Some(body)).await;
    assert_eq!(s, 200);
    assert_eq!(b[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    assert_eq!(b[1]["errors"][0]["statusCode"], "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
    assert_eq!(h.emu.records("Task").len(), 1, "nothing persisted");

    let task = h.emu.records("Task")[0]["Id"].as_str().unwrap().to_string();
    let body = json!({"records": [
        {"attributes": {"type": "Task"}, "id": task, "Status": "Completed"},
        {"attributes": {"type": "Task"}, "Subject": "no id"}
    ]});
    let (s, b) = h.call(Method::PATCH, "/composite/sobjects", Some(body)).await;
    assert_eq!(s, 200);
    assert_eq!(b[0], json!({"id": task, "success": true, "errors": []}));
    assert_eq!(b[1]["errors"][0]["statusCode"], "MISSING_ARGUMENT");
    assert_eq!(h.emu.get("Task", &task).unwrap()["IsClosed"], true);

    let (s, b) = h.call(Method::DELETE, &format!("/composite/sobjects?ids={task},{lead}"), None).await;
    assert_eq!(s, 200);
    assert_eq!((b[0]["success"].clone(), b[1]["success"].clone()), (json!(true), json!(true)));
    let (_, b) = h.call(Method::DELETE, &format!("/composite/sobjects?ids={task}"), None).await;
    assert_eq!(b[0]["errors"][0]["statusCode"], "ENTITY_IS_DELETED");

    let (s, b) = h.get(&format!("/composite/sobjects/Task?ids={task},00T5g000000000000A&fields=Id,IsDeleted")).await;
    assert_eq!(s, 200);
    assert_eq!(b[1], Value::Null);
    let live = h.emu.insert("Task", obj(json!({"Subject": "live"}))).unwrap();
    let (_, b) = h.get(&format!("/composite/sobjects/Task?ids={live}&fields=Subject")).await;
    assert_eq!(b[0]["Subject"], "live");
    assert!(b[0].get("Status").is_none());
    let rows = h.emu.query(&format!("SELECT Id, IsDeleted FROM Task WHERE Id = '{task}'"), true).unwrap();
    assert_eq!(rows[0]["IsDeleted"], true);
    assert!(h.emu.query(&format!("SELECT Id FROM Task WHERE Id = '{task}'"), false).unwrap().is_empty());
    assert_eq!(h.emu.query("SELECT Nope FROM Task", false).unwrap_err().error_code, "INVALID_FIELD");

    let too_many: Vec<Value> = (0..201).map(|_| json!({"attributes": {"type": "Task"}})).collect();
    let (s, b) = h.call(Method::POST, "/composite/sobjects", Some(json!({"records": too_many}))).await;
    assert_eq!((s, code(&b)), (400, "EXCEEDED_ID_LIMIT"));
    let (s, _) = h.call(Method::POST, "/composite/sobjects", Some(json!({"records": [{"Subject": "untyped"}]}))).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn upsert_by_external_id_twice_keeps_one_task() {
    let h = H::default().await;
    let lead = h.emu.insert("Lead", obj(json!({"LastName": "L", "Company": "C"}))).unwrap();
    let path = "/composite/sobjects/Task/Salesync_Activity_Id__c";
    let rec = |subj: &str| {
        json!({"allOrNone": false, "records": [
            {"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "act-1", "Subject": subj, "WhoId": lead},
            {"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "act-2", "Subject": subj}
        ]})
    };
    let (s, b) = h.call(Method::PATCH, path, Some(rec("first"))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!((b[0]["created"].clone(), b[1]["created"].clone()), (json!(true), json!(true)));
    let id = b[0]["id"].as_str().unwrap().to_string();
    let (_, b) = h.call(Method::PATCH, path, Some(rec("second"))).await;
    assert_eq!(b[0], json!({"id": id, "success": true, "errors": [], "created": false}));
    assert_eq!(h.emu.records("Task").len(), 2);
    assert_eq!(h.emu.get("Task", &id).unwrap()["Subject"], "second");

    let dup = json!({"records": [
        {"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "x"},
        {"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "X"},
        {"attributes": {"type": "Task"}, "Subject": "no ext id"}
    ]});
    let (_, b) = h.call(Method::PATCH, path, Some(dup)).await;
    assert_eq!(b[0]["errors"][0]["statusCode"], "DUPLICATE_EXTERNAL_ID");
    assert_eq!(b[1]["errors"][0]["statusCode"], "DUPLICATE_EXTERNAL_ID");
    assert_eq!(b[2]["success"], false);

    // A rolled-back upsert leaves no trace; a deleted record frees its external id.
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "r-1"},
        {"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "r-2", "Type": "Nope"}
    ]});
    let (_, b) = h.call(Method::PATCH, path, Some(body)).await;
    assert_eq!(b[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    let one = json!({"records": [{"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "r-1"}]});
    let (_, b) = h.call(Method::PATCH, path, Some(one.clone())).await;
    assert_eq!(b[0]["created"], true, "{b}");
    h.emu.delete("Task", b[0]["id"].as_str().unwrap()).unwrap();
    let (_, b) = h.call(Method::PATCH, path, Some(one)).await;
    assert_eq!(b[0]["created"], true, "{b}");
    h.emu.delete("Task", b[0]["id"].as_str().unwrap()).unwrap();

    // Single-record upsert: 201 then 204.
    let p = "/sobjects/Task/Salesync_Activity_Id__c/act-3";
    let (s, b) = h.call(Method::PATCH, p, Some(json!({"Subject": "one"}))).await;
    assert_eq!((s, b["created"].clone()), (201, json!(true)));
    let (s, _) = h.call(Method::PATCH, p, Some(json!({"Subject": "two"}))).await;
    assert_eq!(s, 204);
    let (s, b) = h.get(p).await;
    assert_eq!((s, b["Subject"].clone()), (200, json!("two")));
    assert_eq!(h.emu.records("Task").len(), 3);
    let (s, b) = h.call(Method::PATCH, "/sobjects/Task/Subject/two", Some(json!({}))).await;
    assert_eq!((s, code(&b)), (404, "NOT_FOUND"));
}

#[tokio::test]
async fn upsert_with_several_matches_answers_300() {
    let h = H::start(SalesforceConfig { task_external_id_unique: false, ..Default::default() }).await;
    for _ in 0..2 {
        h.emu.insert("Task", obj(json!({"Subject": "s", "Salesync_Activity_Id__c": "same"}))).unwrap();
    }
    let (s, b) =
        h.call(Method::PATCH, "/sobjects/Task/Salesync_Activity_Id__c/same", Some(json!({"Subject": "t"}))).await;
    assert_eq!(s, 300);
    assert_eq!(b.as_array().unwrap().len(), 2);
    let body = json!({"records": [{"attributes": {"type": "Task"}, "Salesync_Activity_Id__c": "same"}]});
    let (_, b) = h.call(Method::PATCH, "/composite/sobjects/Task/Salesync_Activity_Id__c", Some(body)).await;
    assert_eq!(b[0]["errors"][0]["statusCode"], "DUPLICATE_EXTERNAL_ID");
}

#[tokio::test]
async fn lead_conversion_makes_the_lead_read_only() {
    let h = H::default().await;
    let queue = h.emu.insert("Group", obj(json!({"Name": "Inbound", "Type": "Queue"}))).unwrap();
    assert!(queue.starts_with("00G"));
    let lead = h
        .emu
        .insert("Lead", obj(json!({"LastName": "Ng", "FirstName": "Ana", "Company": "Acme", "Email": "ana@acme.test", "OwnerId": queue})))
        .unwrap();
    let task = h.emu.insert("Task", obj(json!({"Subject": "hi", "WhoId": lead}))).unwrap();
    let (s, b) = h.call(Method::POST, "/sobjects/Contact", Some(json!({"LastName": "X", "OwnerId": queue}))).await;
    assert_eq!((s, code(&b)), (400, "FIELD_INTEGRITY_EXCEPTION"), "contact owners are users");
    h.emu.clock().advance(Duration::hours(1));
    let res = h.emu.convert_lead(&lead, None, None, true).unwrap();
    let l = h.emu.get("Lead", &lead).unwrap();
    assert_eq!(l["IsConverted"], true);
    assert_eq!(l["ConvertedDate"], "2026-06-15");
    assert_eq!(l["ConvertedContactId"], res.contact_id.as_str());
    assert_eq!(l["ConvertedAccountId"], res.account_id.as_str());
    assert_eq!(l["ConvertedOpportunityId"], res.opportunity_id.clone().unwrap().as_str());
    let c = h.emu.get("Contact", &res.contact_id).unwrap();
    assert_eq!((c["Email"].clone(), c["AccountId"].clone()), (json!("ana@acme.test"), json!(res.account_id)));
    let t = h.emu.get("Task", &task).unwrap();
    assert_eq!((t["WhoId"].clone(), t["AccountId"].clone()), (json!(res.contact_id), json!(res.account_id)));
    let (s, b) =
        h.call(Method::PATCH, &format!("/sobjects/Lead/{lead}"), Some(json!({"HasOptedOutOfEmail": true}))).await;
    assert_eq!((s, code(&b)), (400, "CANNOT_UPDATE_CONVERTED_LEAD"));
    let (s, b) = h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "x", "WhoId": lead}))).await;
    assert_eq!((s, code(&b)), (400, "CANNOT_UPDATE_CONVERTED_LEAD"));
    let b = h.query_ok("SELECT Id, ConvertedContactId FROM Lead WHERE IsConverted = true").await;
    assert_eq!(b["records"][0]["ConvertedContactId"], res.contact_id.as_str());
    assert!(h.emu.convert_lead(&lead, None, None, false).is_err());

    // Merge into an existing contact and account.
    let acct = h.emu.insert("Account", obj(json!({"Name": "Existing"}))).unwrap();
    let contact = h.emu.insert("Contact", obj(json!({"LastName": "Keep", "AccountId": acct}))).unwrap();
    let lead2 = h.emu.insert("Lead", obj(json!({"LastName": "Other", "Company": "C", "Title": "CTO"}))).unwrap();
    let res = h.emu.convert_lead(&lead2, Some(&contact), Some(&acct), false).unwrap();
    assert_eq!(
        (res.contact_id.as_str(), res.account_id.as_str(), res.opportunity_id),
        (contact.as_str(), acct.as_str(), None)
    );
    let c = h.emu.get("Contact", &contact).unwrap();
    assert_eq!((c["LastName"].clone(), c["Title"].clone()), (json!("Keep"), json!("CTO")));
}

#[tokio::test]
async fn replication_updated_and_deleted() {
    let h = H::default().await;
    let a = h.emu.insert("Task", obj(json!({"Subject": "a"}))).unwrap();
    h.emu.clock().advance(Duration::seconds(90));
    let b_id = h.emu.insert("Task", obj(json!({"Subject": "b"}))).unwrap();
    h.emu.clock().advance(Duration::minutes(10));
    h.emu.delete("Task", &a).unwrap();
    h.emu.clock().advance(Duration::minutes(10));

    let (s, b) = h.get("/sobjects/Task/updated/?start=2026-06-15T14:00:00Z&end=2026-06-15T16:00:00Z").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["ids"], json!([b_id]), "deleted records are not 'updated'");
    assert_eq!(b["latestDateCovered"], "2026-06-15T15:21:00.000+0000", "clamped to now, seconds truncated");
    let (_, b) = h.get("/sobjects/Task/updated/?start=2026-06-15T15:00:59Z&end=2026-06-15T15:01:30%2B00:00").await;
    assert_eq!(b["ids"], json!([]), "window is [15:00, 15:01) after truncation");
    let (_, b) = h.get("/sobjects/Task/updated/?start=2026-06-15T15:01:00Z&end=2026-06-15T15:02:00Z").await;
    assert_eq!(b["ids"], json!([b_id]));

    let (s, b) = h.get("/sobjects/Task/deleted/?start=2026-06-15T14:00:00Z&end=2026-06-15T16:00:00Z").await;
    assert_eq!(s, 200);
    assert_eq!(b["deletedRecords"], json!([{"id": a, "deletedDate": "2026-06-15T15:11:30.000+0000"}]));
    assert_eq!(b["earliestDateAvailable"], "2026-05-31T15:21:00.000+0000");
    assert_eq!(b["latestDateCovered"], "2026-06-15T15:21:00.000+0000");

    let (s, b) = h.get("/sobjects/Task/updated/?start=2026-06-15T15:00:10Z&end=2026-06-15T15:00:50Z").await;
    assert_eq!((s, code(&b)), (400, "INVALID_REPLICATION_DATE"), "start == end after truncation");
    let (s, b) = h.get("/sobjects/Task/updated/?start=2026-05-01T00:00:00Z&end=2026-06-15T00:00:00Z").await;
    assert_eq!((s, code(&b)), (400, "INVALID_REPLICATION_DATE"), "older than 30 days");
    let (s, b) = h.get("/sobjects/Task/deleted/?start=2026-06-15T16:00:00Z&end=2026-06-15T14:00:00Z").await;
    assert_eq!((s, code(&b)), (400, "INVALID_REPLICATION_DATE"));
    let (s, b) = h.get("/sobjects/Task/deleted/?start=2026-06-15T14:00:00Z").await;
    assert_eq!((s, code(&b)), (400, "MISSING_ARGUMENT"));
}

#[tokio::test]
async fn limits_header_and_daily_allocation() {
    let h = H::start(SalesforceConfig { daily_api_limit: 4, clock: clock(), ..Default::default() }).await;
    let r = h.http.get(h.api("/limits")).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(r.headers()["sforce-limit-info"], "api-usage=1/4");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["DailyApiRequests"], json!({"Max": 4, "Remaining": 3}));
    let r = h.http.get(h.api("/sobjects/Lead/00Q5g000000000000A")).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["sforce-limit-info"].to_str().unwrap()), (404, "api-usage=2/4"));
    h.query_ok("SELECT Id FROM Lead").await;
    h.query_ok("SELECT Id FROM Lead").await;
    assert_eq!(h.emu.api_usage(), 4);
    let r = h.http.get(h.api("/limits")).bearer_auth(&h.token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["sforce-limit-info"], "api-usage=4/4");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b, json!([{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]));
    // The window is rolling.
    h.emu.clock().advance(Duration::hours(24));
    let fresh = token(&h.emu, &h.http).await;
    let h = H { token: fresh, ..h };
    assert_eq!(h.get("/limits").await.0, 200);
    assert_eq!(h.emu.api_usage(), 1);
    let log = h.emu.call_log();
    assert!(log.iter().any(|c| c.status == 403 && c.error_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED")));
}

#[tokio::test]
async fn seed_world_uses_the_seeded_ids_and_history() {
    let h = H::default().await;
    let world = seed::generate(400, 3);
    h.emu.seed_world(&world);
    h.emu.seed_world(&world);
    for p in &world.people {
        match (&p.sf_lead_id, &p.sf_contact_id) {
            (Some(l), None) => {
                let r = h.emu.get("Lead", l).unwrap();
                assert_eq!(r["Email"], json!(p.email));
                assert_eq!(r["OwnerId"], json!(p.owner_id));
                assert_eq!(r["IsConverted"], false);
                assert_eq!(r["HasOptedOutOfEmail"], p.unsubscribed);
                assert_eq!(r["CreatedDate"], p.created_at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string());
            }
            (None, Some(c)) => {
                let r = h.emu.get("Contact", c).unwrap();
                assert_eq!(r["AccountId"], json!(p.sf_account_id));
                if let Some(o) = &p.sf_opportunity_id {
                    let opp = h.emu.get("Opportunity", o).unwrap();
                    assert_eq!(
                        (opp["IsClosed"].clone(), opp["AccountId"].clone()),
                        (json!(false), json!(p.sf_account_id))
                    );
                }
            }
            _ => assert!(p.sf_type.is_none()),
        }
    }
    let people = world.people.iter().filter(|p| p.sf_type.is_some()).count();
    assert_eq!(h.emu.records("Lead").len() + h.emu.records("Contact").len(), people);
    let opps = world.people.iter().filter(|p| p.sf_opportunity_id.is_some()).count();
    assert_eq!(h.emu.records("OpportunityContactRole").len(), opps);
    assert_eq!(h.emu.records("User").len(), world.users.len() + 1, "plus the integration user");
}

#[tokio::test]
async fn seeding_five_thousand_people_is_quick() {
    let h = H::default().await;
    let t = std::time::Instant::now();
    h.emu.seed_world(&seed::generate(5000, 3));
    let b = h.query_ok("SELECT COUNT() FROM Contact WHERE HasOptedOutOfEmail = false").await;
    assert!(b["totalSize"].as_u64().unwrap() > 2000);
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
}

/// Semi- and anti-joins (issue #14: simple-salesforce users' `... FROM OpportunityContactRole
/// WHERE ContactId IN (SELECT Id FROM Contact) ORDER BY Opportunity.LastModifiedDate DESC` was
/// answered MALFORMED_QUERY), with the errors Salesforce gives for the forms it refuses.
#[tokio::test]
async fn soql_semi_and_anti_joins() {
    let h = H::default().await;
    let world = seed::generate(300, 13);
    h.emu.seed_world(&world);
    let roles = h.emu.records("OpportunityContactRole").len();
    assert!(roles > 0);
    let b = h
        .query_ok(
            "SELECT Id, ContactId, Opportunity.LastModifiedDate FROM OpportunityContactRole \
             WHERE ContactId IN (SELECT Id FROM Contact) ORDER BY Opportunity.LastModifiedDate DESC",
        )
        .await;
    assert_eq!(b["totalSize"].as_u64().unwrap() as usize, roles);
    let dates: Vec<&str> = b["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Opportunity"]["LastModifiedDate"].as_str().unwrap())
        .collect();
    let mut sorted = dates.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(dates, sorted, "ordered by the parent's date, newest first");

    // A filtered semi-join: contacts of one account only.
    let c = world.people.iter().find(|p| p.sf_opportunity_id.is_some()).unwrap();
    let account = c.sf_account_id.clone().unwrap();
    let b = h
        .query_ok(&format!(
            "SELECT ContactId FROM OpportunityContactRole WHERE ContactId IN (SELECT Id FROM Contact WHERE AccountId = '{account}')"
        ))
        .await;
    let in_account: Vec<String> = h
        .emu
        .records("Contact")
        .into_iter()
        .filter(|r| r["AccountId"].as_str() == Some(account.as_str()))
        .map(|r| r["Id"].as_str().unwrap().to_string())
        .collect();
    let got = b["records"].as_array().unwrap();
    assert!(!got.is_empty());
    assert!(got.iter().all(|r| in_account.iter().any(|id| r["ContactId"] == id.as_str())), "{b}");

    // Anti-join: contacts without any role.
    let all = h.query_ok("SELECT COUNT() FROM Contact").await["totalSize"].as_u64().unwrap();
    let with = h
        .query_ok("SELECT COUNT() FROM Contact WHERE Id IN (SELECT ContactId FROM OpportunityContactRole)")
        .await["totalSize"]
        .as_u64()
        .unwrap();
    let without = h
        .query_ok("SELECT COUNT() FROM Contact WHERE Id NOT IN (SELECT ContactId FROM OpportunityContactRole)")
        .await["totalSize"]
        .as_u64()
        .unwrap();
    assert!(with > 0 && without > 0, "{with} {without}");
    assert_eq!(with + without, all);

    // What Salesforce refuses.
    for (q, words) in [
        ("SELECT Id FROM Contact WHERE Id IN (SELECT Name FROM Account)", "must be an id or a reference"),
        ("SELECT Id FROM Contact WHERE Email IN (SELECT Id FROM Account)", "left operand"),
        ("SELECT Id FROM Contact WHERE Id IN (SELECT Id, Name FROM Contact)", "one field"),
        ("SELECT Id FROM Contact WHERE Id IN (SELECT ContactId FROM OpportunityContactRole) OR Email = 'x'", "'OR'"),
        (
            "SELECT Id FROM Contact WHERE Id IN (SELECT ContactId FROM OpportunityContactRole WHERE OpportunityId IN (SELECT Id FROM Opportunity))",
            "Nesting",
        ),
    ] {
        let (s, b) = h.query(q).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(b[0]["errorCode"], "MALFORMED_QUERY", "{q}: {b}");
        assert!(b[0]["message"].as_str().unwrap().contains(words), "{q}: {b}");
    }
}

/// Parent paths of several hops (issue #14: simple-salesforce users' `SELECT Account.Owner.Email
/// FROM Contact` was answered MALFORMED_QUERY "unsupported field path"): in SELECT (nested parent
/// objects, each with its `attributes`), WHERE and ORDER BY, a missing parent anywhere on the path
/// rendered `null`, and the errors for an unknown relationship or more than five hops.
#[tokio::test]
async fn soql_parent_paths_of_several_hops() {
    let h = H::default().await;
    let world = seed::generate(200, 5);
    h.emu.seed_world(&world);
    let users = h.emu.records("User");
    let accounts = h.emu.records("Account");
    let owner_email = |account_id: &str| -> Option<String> {
        let a = accounts.iter().find(|a| a["Id"] == account_id)?;
        let u = users.iter().find(|u| u["Id"] == a["OwnerId"])?;
        u["Email"].as_str().map(str::to_string)
    };
    let with_account: Vec<Map<String, Value>> =
        h.emu.records("Contact").into_iter().filter(|c| c["AccountId"].is_string()).collect();
    assert!(!with_account.is_empty());

    // SELECT: one nested object per hop.
    let c = &with_account[0];
    let id = c["Id"].as_str().unwrap();
    let b = h
        .query_ok(&format!(
            "SELECT Id, Account.Name, Account.Owner.Email, Account.Owner.Name FROM Contact WHERE Id = '{id}'"
        ))
        .await;
    let rec = &b["records"][0];
    let email = owner_email(c["AccountId"].as_str().unwrap()).expect("the seeded account has an owner with an email");
    assert_eq!(rec["Account"]["attributes"]["type"], "Account", "{b}");
    assert!(rec["Account"]["Name"].is_string(), "{b}");
    assert_eq!(rec["Account"]["Owner"]["attributes"]["type"], "User", "{b}");
    assert_eq!(rec["Account"]["Owner"]["Email"], email.as_str(), "{b}");
    assert!(rec["Account"]["Owner"]["Name"].is_string(), "{b}");

    // WHERE and ORDER BY through two hops.
    let expected = with_account
        .iter()
        .filter(|c| owner_email(c["AccountId"].as_str().unwrap()).as_deref() == Some(email.as_str()))
        .count();
    let b = h.query_ok(&format!("SELECT COUNT() FROM Contact WHERE Account.Owner.Email = '{email}'")).await;
    assert_eq!(b["totalSize"].as_u64().unwrap() as usize, expected, "{b}");
    let b = h.query_ok("SELECT Id, Account.Owner.Email FROM Contact WHERE Account.Owner.Email != null ORDER BY Account.Owner.Email DESC, Id").await;
    let got: Vec<&str> =
        b["records"].as_array().unwrap().iter().map(|r| r["Account"]["Owner"]["Email"].as_str().unwrap()).collect();
    assert_eq!(got.len(), with_account.len(), "every seeded account has an owner");
    let mut sorted = got.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got, sorted);

    // A contact without an account: the first hop is null.
    let (s, v) = h.call(Method::POST, "/sobjects/Contact", Some(json!({"LastName": "Loner"}))).await;
    assert_eq!(s, 201, "{v}");
    let loner = v["id"].as_str().unwrap();
    let b = h.query_ok(&format!("SELECT Id, Account.Owner.Email FROM Contact WHERE Id = '{loner}'")).await;
    assert!(b["records"][0]["Account"].is_null(), "{b}");

    // Refused as Salesforce does.
    let (s, b) = h.query("SELECT Id, Account.Boss.Email FROM Contact").await;
    assert_eq!((s, b[0]["errorCode"].as_str()), (400, Some("INVALID_FIELD")), "{b}");
    assert!(b[0]["message"].as_str().unwrap().contains("Didn't understand relationship 'Boss'"), "{b}");
    let (s, b) = h.query("SELECT Id, Account.Owner.Nope FROM Contact").await;
    assert_eq!((s, b[0]["errorCode"].as_str()), (400, Some("INVALID_FIELD")), "{b}");
    let (s, b) = h.query("SELECT Id, Account.Owner.Account.Owner.Account.Owner.Email FROM Contact").await;
    assert_eq!((s, b[0]["errorCode"].as_str()), (400, Some("MALFORMED_QUERY")), "{b}");
}
