//! Mapping throughput: raw Marketo `leads.json` pages (300 records, realistic values, ~10%
//! unqualified) → qualified, mapped `Person`s, against a baseline that only deserializes the same
//! bytes into a plain typed struct with serde_json.
//!
//! Run: `cargo bench --bench mapping`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use salesync::core::mapping::{LeadRecord, Qualification};
use salesync::core::sfid::SalesforceId;
use serde::Deserialize;

const PAGE: usize = 300;
const PAGES: usize = 20;

/// Builds `PAGES` response bodies of `PAGE` leads each.
fn pages() -> Vec<Vec<u8>> {
    // 18-character ids as Marketo returns them (suffix derived, so they are valid).
    let id18 = |s: &str| SalesforceId::parse(s).unwrap().as_str().to_string();
    let (owner, contact_id, account_id, lead_id) =
        (id18("0055g00000AbCdE"), id18("0035g00000XyZaB"), id18("0015g00000AbCdE"), id18("00Q5g00000QwErT"));
    let first = ["Ada", "Zoë", "José", "Łukasz", "Grace", "Søren", "美咲", "Linus"];
    let last = ["Lovelace", "Müller", "García", "Hopper", "O'Brien", "Ødegaard"];
    let mut out = Vec::new();
    let mut n: u64 = 0;
    for p in 0..PAGES {
        let mut result = Vec::with_capacity(PAGE);
        for _ in 0..PAGE {
            n += 1;
            let f = first[(n % 8) as usize];
            let l = last[(n % 6) as usize];
            let qualified = !n.is_multiple_of(10);
            let contact = !n.is_multiple_of(3);
            let mut rec = serde_json::json!({
                "id": 1000 + n,
                "firstName": f,
                "lastName": l,
                "email": format!("{}.{}{}@example.com", f.to_lowercase(), l.to_lowercase(), n),
                "company": "Acme Corporation",
                "title": if n.is_multiple_of(5) { serde_json::Value::Null } else { "VP Sales".into() },
                "phone": "+1 415 555 0134",
                "linkedInProfileURL": format!("https://www.linkedin.com/in/person-{n}"),
                "leadSource": "Web",
                "updatedAt": "2026-02-17T22:31:49Z",
                "createdAt": "2025-01-03T08:00:00Z",
            });
            let obj = rec.as_object_mut().unwrap();
            if qualified {
                obj.insert("sfdcLeadOwnerId".into(), owner.clone().into());
            }
            if contact {
                obj.insert("sfdcType".into(), "Contact".into());
                obj.insert("sfdcContactId".into(), contact_id.clone().into());
                obj.insert("sfdcAccountId".into(), account_id.clone().into());
            } else {
                obj.insert("sfdcType".into(), "Lead".into());
                obj.insert("sfdcLeadId".into(), lead_id.clone().into());
            }
            result.push(rec);
        }
        let body = serde_json::json!({
            "requestId": format!("1c2d#{p:011x}"), "success": true, "result": result,
            "moreResult": true, "nextPageToken": "PS5VL5WD4UOWGOUCJR6VY7JQO2KUXL7B===="
        });
        out.push(serde_json::to_vec(&body).unwrap());
    }
    out
}

// Baseline: the same bytes into a plain typed struct, nothing else.
#[derive(Deserialize)]
#[allow(non_snake_case, dead_code)]
struct PlainLead {
    id: i64,
    firstName: Option<String>,
    lastName: Option<String>,
    email: Option<String>,
    company: Option<String>,
    title: Option<String>,
    phone: Option<String>,
    linkedInProfileURL: Option<String>,
    leadSource: Option<String>,
    sfdcType: Option<String>,
    sfdcContactId: Option<String>,
    sfdcLeadId: Option<String>,
    sfdcAccountId: Option<String>,
    sfdcOpptyId: Option<String>,
    sfdcLeadOwnerId: Option<String>,
    updatedAt: Option<String>,
}

#[derive(Deserialize)]
#[allow(non_snake_case, dead_code)]
struct PlainPage {
    requestId: String,
    success: bool,
    result: Vec<PlainLead>,
    moreResult: Option<bool>,
    nextPageToken: Option<String>,
}

#[derive(Deserialize)]
#[allow(non_snake_case, dead_code)]
struct MappedPage {
    requestId: String,
    success: bool,
    result: Vec<LeadRecord>,
    moreResult: Option<bool>,
    nextPageToken: Option<String>,
}

fn bench(c: &mut Criterion) {
    let pages = pages();
    let bytes: usize = pages.iter().map(Vec::len).sum();
    // Sanity: the bench measures real mapping, not error paths: 90% qualify, none fail.
    let mut ok = 0usize;
    for p in &pages {
        let page: MappedPage = serde_json::from_slice(p).unwrap();
        for rec in page.result {
            match rec.0.map(|l| l.qualify(Utc::now())) {
                Ok(Qualification::Qualified(_)) => ok += 1,
                Ok(Qualification::Unqualified { .. }) => {}
                Err(e) => panic!("bench data must map: {e}"),
            }
        }
    }
    assert_eq!(ok, PAGE * PAGES * 9 / 10);
    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements((PAGE * PAGES) as u64));
    g.bench_with_input(BenchmarkId::new("baseline_serde_typed", bytes), &pages, |b, pages| {
        b.iter(|| {
            let mut n = 0usize;
            for p in pages {
                let page: PlainPage = serde_json::from_slice(p).unwrap();
                n += page.result.len();
            }
            black_box(n)
        })
    });
    g.bench_with_input(BenchmarkId::new("map_and_qualify", bytes), &pages, |b, pages| {
        let now = Utc::now();
        b.iter(|| {
            let mut people = Vec::with_capacity(PAGE);
            let mut unqualified = 0usize;
            for p in pages {
                people.clear();
                let page: MappedPage = serde_json::from_slice(p).unwrap();
                for rec in page.result {
                    match rec.0.map(|l| l.qualify(now)) {
                        Ok(Qualification::Qualified(person)) => people.push(person),
                        Ok(Qualification::Unqualified { .. }) | Err(_) => unqualified += 1,
                    }
                }
                black_box(&people);
            }
            black_box(unqualified)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
