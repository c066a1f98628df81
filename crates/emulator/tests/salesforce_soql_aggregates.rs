//! SOQL aggregate queries over real HTTP: `GROUP BY`, aggregate functions, aliases and default
//! `exprN` names, `HAVING`, ordering by aggregates, result types, the 2,000-group cap and the
//! errors Salesforce answers for misuse.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use salesforce_common::{H, code, obj};
use serde_json::{Value, json};

/// (LeadSource, Email, Company) of the seeded leads.
const LEADS: &[(Option<&str>, Option<&str>, &str)] = &[
    (Some("Web"), Some("a@x.test"), "Acme"),
    (Some("Web"), Some("b@x.test"), "Acme"),
    (Some("web"), None, "Globex"),
    (Some("Phone"), Some("c@x.test"), "Initech"),
    (Some("Phone"), None, "Initech"),
    (None, None, "Umbrella"),
];

async fn seed_leads(h: &H) {
    for (i, (src, email, company)) in LEADS.iter().enumerate() {
        let mut m = obj(json!({"LastName": format!("L{i}"), "Company": company}));
        if let Some(s) = src {
            m.insert("LeadSource".into(), json!(s));
        }
        if let Some(e) = email {
            m.insert("Email".into(), json!(e));
        }
        h.emu.insert("Lead", m).unwrap();
    }
}

async fn ok(h: &H, q: &str) -> Value {
    let (s, b) = h.query_page(q, false, None).await;
    assert_eq!(s, 200, "{q}: {b}");
    b
}

async fn err(h: &H, q: &str) -> (u16, Value) {
    let (s, b) = h.query_page(q, false, None).await;
    assert!(s >= 400, "{q} should fail: {b}");
    (s, b)
}

#[tokio::test]
async fn group_by_counts_with_aliases_and_default_names() {
    let h = H::default().await;
    seed_leads(&h).await;
    let b = ok(
        &h,
        "SELECT LeadSource, COUNT(Id), COUNT(Email) withEmail, COUNT_DISTINCT(Company) FROM Lead GROUP BY LeadSource",
    )
    .await;
    // Expected groups, computed from the seed: text groups case-insensitively, null is a group.
    let mut expect: BTreeMap<Option<String>, (usize, usize, BTreeSet<&str>)> = BTreeMap::new();
    for (src, email, company) in LEADS {
        let e = expect.entry(src.map(|s| s.to_lowercase())).or_default();
        e.0 += 1;
        e.1 += usize::from(email.is_some());
        e.2.insert(company);
    }
    let records = b["records"].as_array().unwrap();
    assert_eq!(b["totalSize"], json!(expect.len()));
    assert_eq!(b["done"], true);
    assert!(b.get("nextRecordsUrl").is_none());
    assert_eq!(records.len(), expect.len());
    for r in records {
        assert_eq!(r["attributes"], json!({"type": "AggregateResult"}), "{r}");
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["attributes", "LeadSource", "expr0", "withEmail", "expr1"]), "{r}");
        let src = r["LeadSource"].as_str().map(str::to_lowercase);
        let (n, with_email, companies) = &expect[&src];
        assert_eq!(r["expr0"], json!(n), "{r}");
        assert_eq!(r["withEmail"], json!(with_email), "{r}");
        assert_eq!(r["expr1"], json!(companies.len()), "{r}");
        assert!(r["expr0"].is_u64(), "COUNT answers integers: {r}");
    }
    // Grouped values come back as stored (the first row of a group seen, in id order).
    let sources: Vec<Value> = records.iter().map(|r| r["LeadSource"].clone()).collect();
    assert!(sources.contains(&Value::Null));
    assert!(sources.contains(&json!("Web")));

    // Several group fields and ORDER BY an aggregate.
    let b = ok(&h, "SELECT LeadSource, Company, COUNT(Id) n FROM Lead GROUP BY LeadSource, Company ORDER BY COUNT(Id) DESC, Company").await;
    let records = b["records"].as_array().unwrap();
    let counts: Vec<u64> = records.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    let mut sorted = counts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(counts, sorted);
    let mut pairs: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (src, _, company) in LEADS {
        *pairs.entry((src.unwrap_or("").to_lowercase(), company.to_string())).or_default() += 1;
    }
    assert_eq!(records.len(), pairs.len());
    for r in records {
        let k = (r["LeadSource"].as_str().unwrap_or("").to_lowercase(), r["Company"].as_str().unwrap().to_string());
        assert_eq!(r["n"].as_u64().unwrap(), pairs[&k], "{r}");
    }

    // GROUP BY without aggregate functions lists the distinct values; WHERE filters first.
    let b = ok(&h, "SELECT Company FROM Lead WHERE Email != null GROUP BY Company").await;
    let got: BTreeSet<&str> = b["records"].as_array().unwrap().iter().map(|r| r["Company"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = LEADS.iter().filter(|l| l.1.is_some()).map(|l| l.2).collect();
    assert_eq!(got, want);

    // COUNT() keeps its own shape; with GROUP BY its totalSize is the number of groups.
    let b = ok(&h, "SELECT COUNT() FROM Lead").await;
    assert_eq!(b, json!({"totalSize": LEADS.len(), "done": true, "records": []}));
    let b = ok(&h, "SELECT COUNT() FROM Lead GROUP BY Company").await;
    let companies: BTreeSet<&str> = LEADS.iter().map(|l| l.2).collect();
    assert_eq!(b["totalSize"], json!(companies.len()));
    assert_eq!(b["records"], json!([]));
}

#[tokio::test]
async fn numeric_and_date_aggregates_having_and_types() {
    let h = H::default().await;
    let opps: &[(&str, f64, &str)] = &[
        ("Prospecting", 100.0, "2026-07-01"),
        ("Prospecting", 250.5, "2026-06-20"),
        ("Prospecting", 49.5, "2026-08-11"),
        ("Closed Won", 1000.0, "2026-05-02"),
        ("Closed Won", 10.0, "2026-05-30"),
        ("Negotiation", 75.0, "2026-09-09"),
    ];
    for (i, (stage, amount, close)) in opps.iter().enumerate() {
        h.emu
            .insert(
                "Opportunity",
                obj(json!({"Name": format!("O{i}"), "StageName": stage, "Amount": amount, "CloseDate": close})),
            )
            .unwrap();
    }
    let b = ok(
        &h,
        "SELECT StageName, SUM(Amount), AVG(Amount) avgAmount, MIN(CloseDate), MAX(Amount) FROM Opportunity \
         GROUP BY StageName HAVING COUNT(Id) > 1 ORDER BY SUM(Amount) DESC",
    )
    .await;
    let records = b["records"].as_array().unwrap();
    let mut by_stage: BTreeMap<&str, Vec<(f64, &str)>> = BTreeMap::new();
    for (stage, amount, close) in opps {
        by_stage.entry(stage).or_default().push((*amount, close));
    }
    by_stage.retain(|_, v| v.len() > 1);
    let mut want: Vec<(&str, f64)> = by_stage.iter().map(|(s, v)| (*s, v.iter().map(|x| x.0).sum())).collect();
    want.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let got: Vec<&str> = records.iter().map(|r| r["StageName"].as_str().unwrap()).collect();
    assert_eq!(got, want.iter().map(|w| w.0).collect::<Vec<_>>());
    assert_eq!(b["totalSize"], json!(want.len()));
    for r in records {
        let rows = &by_stage[r["StageName"].as_str().unwrap()];
        let sum: f64 = rows.iter().map(|x| x.0).sum();
        assert_eq!(r["expr0"].as_f64().unwrap(), sum, "{r}");
        assert!(r["avgAmount"].is_f64(), "AVG is a float: {r}");
        assert!((r["avgAmount"].as_f64().unwrap() - sum / rows.len() as f64).abs() < 1e-9, "{r}");
        assert_eq!(r["expr1"], json!(rows.iter().map(|x| x.1).min().unwrap()), "MIN of a date is a date: {r}");
        assert_eq!(r["expr2"].as_f64().unwrap(), rows.iter().map(|x| x.0).fold(f64::MIN, f64::max), "{r}");
    }

    // HAVING on a grouped field and with OR; SUM of an integer field is an integer.
    for (i, secs) in [30, 45, 60, 5].iter().enumerate() {
        let ty = if i % 2 == 0 { "Call" } else { "Email" };
        h.emu
            .insert("Task", obj(json!({"Subject": format!("t{i}"), "Type": ty, "CallDurationInSeconds": secs})))
            .unwrap();
    }
    let b = ok(&h, "SELECT Type, SUM(CallDurationInSeconds) total FROM Task GROUP BY Type HAVING Type = 'Call' OR SUM(CallDurationInSeconds) > 1000").await;
    assert_eq!(b["totalSize"], 1);
    let r = &b["records"][0];
    assert_eq!(r["Type"], "Call");
    assert!(r["total"].is_i64() || r["total"].is_u64(), "{r}");
    assert_eq!(r["total"], json!(30 + 60));

    // Aggregates without GROUP BY answer exactly one row, even over no rows.
    let b = ok(&h, "SELECT COUNT(Id), MAX(Amount), SUM(Amount) FROM Opportunity WHERE StageName = 'Nope'").await;
    assert_eq!(b["totalSize"], 1);
    assert_eq!(
        b["records"],
        json!([{"attributes": {"type": "AggregateResult"}, "expr0": 0, "expr1": null, "expr2": null}])
    );
    let b = ok(&h, "SELECT COUNT(Id) n, MAX(CloseDate) latest FROM Opportunity").await;
    assert_eq!(b["records"][0]["n"], json!(opps.len()));
    assert_eq!(b["records"][0]["latest"], json!(opps.iter().map(|o| o.2).max().unwrap()));
}

#[tokio::test]
async fn grouping_by_a_parent_field_names_the_column_by_its_last_field() {
    let h = H::default().await;
    let mut owners = Vec::new();
    for (first, last) in [("Ana", "Ng"), ("Bo", "Li")] {
        let id = h
            .emu
            .insert(
                "User",
                obj(json!({"FirstName": first, "LastName": last, "Username": format!("{first}@x.test"), "Email": format!("{first}@x.test")})),
            )
            .unwrap();
        owners.push((id, format!("{first} {last}")));
    }
    let per_owner = [3usize, 1];
    for (k, (id, _)) in owners.iter().enumerate() {
        for i in 0..per_owner[k] {
            h.emu.insert("Lead", obj(json!({"LastName": format!("L{k}{i}"), "Company": "C", "OwnerId": id}))).unwrap();
        }
    }
    let b = ok(&h, "SELECT Owner.Name, COUNT(Id) FROM Lead GROUP BY Owner.Name ORDER BY Owner.Name").await;
    let want: Vec<Value> = owners
        .iter()
        .zip(per_owner)
        .map(|((_, name), n)| json!({"attributes": {"type": "AggregateResult"}, "Name": name, "expr0": n}))
        .collect();
    assert_eq!(b["records"], json!(want));
    // An alias on a grouped field renames it.
    let b = ok(&h, "SELECT OwnerId o, COUNT(Id) FROM Lead GROUP BY OwnerId ORDER BY COUNT(Id)").await;
    let first = &b["records"][0];
    assert_eq!(first["o"], json!(owners[1].0));
    assert_eq!(first["expr0"], 1);
}

#[tokio::test]
async fn misuse_gets_salesforce_errors() {
    let h = H::default().await;
    seed_leads(&h).await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "SELECT LeadSource, Company, COUNT(Id) FROM Lead GROUP BY LeadSource",
            "MALFORMED_QUERY",
            "Field must be grouped or aggregated: Company",
        ),
        ("SELECT Company, COUNT(Id) FROM Lead", "MALFORMED_QUERY", "Field must be grouped or aggregated: Company"),
        ("SELECT SUM(Company) FROM Lead", "MALFORMED_QUERY", "field Company does not support aggregate operator SUM"),
        (
            "SELECT AVG(CreatedDate) FROM Lead",
            "MALFORMED_QUERY",
            "field CreatedDate does not support aggregate operator AVG",
        ),
        (
            "SELECT COUNT(IsConverted) FROM Lead",
            "MALFORMED_QUERY",
            "field IsConverted does not support aggregate operator COUNT",
        ),
        (
            "SELECT Description, COUNT(Id) FROM Task GROUP BY Description",
            "MALFORMED_QUERY",
            "field 'Description' can not be grouped in a query call",
        ),
        (
            "SELECT CreatedDate FROM Lead GROUP BY CreatedDate",
            "MALFORMED_QUERY",
            "field 'CreatedDate' can not be grouped in a query call",
        ),
        (
            "SELECT LeadSource, COUNT(Id) FROM Lead GROUP BY LeadSource ORDER BY Company",
            "MALFORMED_QUERY",
            "Ordered field must be grouped or aggregated: Company",
        ),
        ("SELECT LeadSource x, COUNT(Id) x FROM Lead GROUP BY LeadSource", "MALFORMED_QUERY", "duplicate alias: x"),
        (
            "SELECT LeadSource, COUNT(Id) FROM Lead GROUP BY LeadSource HAVING Company = 'Acme'",
            "MALFORMED_QUERY",
            "Field must be grouped or aggregated: Company",
        ),
        ("SELECT MAX(Nope__c) FROM Lead", "INVALID_FIELD", "No such column 'Nope__c'"),
        (
            "SELECT LeadSource, COUNT(Id) FROM Lead GROUP BY LeadSource HAVING COUNT(Id) > 'x'",
            "INVALID_FIELD",
            "must be of type number",
        ),
    ];
    for (q, want_code, want_msg) in cases {
        let (s, b) = err(&h, q).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(code(&b), *want_code, "{q}: {b}");
        assert!(b[0]["message"].as_str().unwrap().contains(want_msg), "{q}: {b}");
    }
}

#[tokio::test]
async fn more_than_2000_groups_is_an_error_and_never_a_cursor() {
    let h = H::default().await;
    for i in 0..2001 {
        h.emu.insert("Lead", obj(json!({"LastName": "L", "Company": format!("Co{i:05}")}))).unwrap();
    }
    let (s, b) = err(&h, "SELECT Company, COUNT(Id) FROM Lead GROUP BY Company").await;
    assert_eq!(s, 400);
    assert_eq!(code(&b), "MALFORMED_QUERY");
    assert!(b[0]["message"].as_str().unwrap().contains("Aggregate query does not support queryMore()"), "{b}");
    // Within the cap every group comes back in one batch, whatever batchSize asks.
    let (s, b) =
        h.query_page("SELECT Company, COUNT(Id) FROM Lead GROUP BY Company LIMIT 2000", false, Some(200)).await;
    assert_eq!(s, 200);
    assert_eq!(b["totalSize"], 2000);
    assert_eq!(b["done"], true);
    assert!(b.get("nextRecordsUrl").is_none());
    assert_eq!(b["records"].as_array().unwrap().len(), 2000);
    assert_eq!(b["records"][0]["Company"], "Co00000", "groups sort by their values by default");
}

#[tokio::test]
async fn bulk_query_jobs_refuse_aggregate_queries() {
    let h = H::default().await;
    seed_leads(&h).await;
    for q in [
        "SELECT LeadSource, COUNT(Id) FROM Lead GROUP BY LeadSource",
        "SELECT MAX(CreatedDate) FROM Lead",
        "SELECT LeadSource FROM Lead GROUP BY LeadSource",
    ] {
        let (s, b) = h.call(Method::POST, "/jobs/query", Some(json!({"operation": "query", "query": q}))).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(code(&b), "FEATURENOTENABLED", "{q}: {b}");
    }
    let (s, _) =
        h.call(Method::POST, "/jobs/query", Some(json!({"operation": "query", "query": "SELECT Id FROM Lead"}))).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn the_rust_query_api_answers_aggregates_too() {
    let h = H::default().await;
    seed_leads(&h).await;
    let rows = h.emu.query("SELECT COUNT(Id) n FROM Lead WHERE LeadSource = 'phone'", false).unwrap();
    let phones = LEADS.iter().filter(|l| l.0 == Some("Phone")).count();
    assert_eq!(rows, vec![json!({"attributes": {"type": "AggregateResult"}, "n": phones})]);
}
