//! Salesforce emulator query planning over real HTTP: index lookups answer exactly what a scan
//! answers, indexes follow every write, lookups examine only their candidates, and paging selects
//! once per cursor.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod salesforce_common;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use salesforce_common::{H, code, in_list, obj};
use salesync_emulator::salesforce::SalesforceQueryStats;
use salesync_emulator::seed::{self, SeedWorld};
use serde_json::json;

/// A seeded org with conversions, tasks (some with external ids), and a few deletions.
async fn org(people: usize, seed_n: u64) -> (H, SeedWorld) {
    let h = H::default().await;
    let world = seed::generate(people, seed_n);
    h.emu.seed_world(&world);
    let leads: Vec<String> = world.people.iter().filter_map(|p| p.sf_lead_id.clone()).collect();
    let contacts: Vec<String> = world.people.iter().filter_map(|p| p.sf_contact_id.clone()).collect();
    for (i, l) in leads.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        // Every fourth lead converts; half of those with an opportunity, some into an existing contact.
        let into = (i % 8 == 0).then(|| contacts[i % contacts.len()].as_str());
        h.emu.convert_lead(l, into, None, i % 3 != 0).unwrap();
    }
    for (i, who) in leads.iter().chain(contacts.iter()).enumerate().filter(|(i, _)| i % 3 == 0) {
        let mut m = obj(json!({"Subject": format!("Call {i}"), "WhoId": who}));
        if i % 2 == 0 {
            m.insert("Salesync_Activity_Id__c".into(), json!(format!("act-{i}")));
        }
        if h.emu.get("Lead", who).is_some_and(|l| l["IsConverted"] == true) {
            continue;
        }
        h.emu.insert("Task", m).unwrap();
    }
    let ocrs = h.emu.records("OpportunityContactRole");
    for r in ocrs.iter().step_by(17) {
        h.emu.delete("OpportunityContactRole", r["Id"].as_str().unwrap()).unwrap();
    }
    (h, world)
}

/// Picks `n` values, mixing in case variants, 15-char ids and ids that do not exist.
fn pick_ids(rng: &mut SmallRng, pool: &[String], n: usize) -> Vec<String> {
    let mut out: Vec<String> = pool.choose_multiple(rng, n.min(pool.len())).cloned().collect();
    for id in out.iter_mut() {
        match rng.gen_range(0..10) {
            0 => *id = id.to_lowercase(),
            1 => *id = id.to_uppercase(),
            2 if id.len() == 18 => *id = id[..15].to_string(),
            _ => {}
        }
    }
    if let Some(first) = pool.first() {
        out.push(format!("{}ZZZZZZAAA", &first[..9]));
    }
    out
}

fn stats(h: &H) -> SalesforceQueryStats {
    h.emu.query_stats()
}

/// Runs a query with indexes on and off, through `query` and `queryAll`, and asserts identical
/// answers; returns whether the indexed run used an index.
async fn same_both_ways(h: &H, q: &str) -> bool {
    let mut used_index = false;
    for all in [false, true] {
        h.emu.set_indexed_queries(true);
        let before = stats(h);
        let (s1, indexed) = h.query_page(q, all, None).await;
        let after = stats(h);
        used_index |= after.indexed > before.indexed;
        h.emu.set_indexed_queries(false);
        let (s2, scanned) = h.query_page(q, all, None).await;
        h.emu.set_indexed_queries(true);
        assert_eq!(s1, 200, "{q}: {indexed}");
        assert_eq!((s1, &indexed), (s2, &scanned), "{q} (queryAll: {all})");
    }
    used_index
}

#[tokio::test]
async fn index_results_equal_scan_results_for_random_queries() {
    let (h, world) = org(900, 11).await;
    let mut rng = SmallRng::seed_from_u64(5);
    let ids =
        |ty: &str| -> Vec<String> { h.emu.records(ty).iter().map(|r| r["Id"].as_str().unwrap().to_string()).collect() };
    let (leads, contacts, opps, accounts) = (ids("Lead"), ids("Contact"), ids("Opportunity"), ids("Account"));
    let emails: Vec<String> = world.people.iter().filter_map(|p| p.email.clone()).collect();
    let ext: Vec<String> = h
        .emu
        .records("Task")
        .iter()
        .filter_map(|t| t["Salesync_Activity_Id__c"].as_str().map(str::to_string))
        .collect();
    let mut indexed_queries = 0;
    for round in 0..25 {
        let n = rng.gen_range(1..60);
        let c = in_list(&pick_ids(&mut rng, &contacts, n));
        let l = in_list(&pick_ids(&mut rng, &leads, n));
        let o = in_list(&pick_ids(&mut rng, &opps, n));
        let a = pick_ids(&mut rng, &accounts, 1)[0].clone();
        let e = emails.choose(&mut rng).unwrap().to_uppercase();
        let x = in_list(&ext.choose_multiple(&mut rng, 5).cloned().collect::<Vec<_>>());
        let lim = rng.gen_range(1..30);
        let indexable = [
            format!(
                "SELECT Id, ContactId, OpportunityId, IsPrimary FROM OpportunityContactRole WHERE ContactId IN {c} ORDER BY Id"
            ),
            format!(
                "SELECT Id, ContactId, IsDeleted FROM OpportunityContactRole WHERE ContactId IN {c} AND IsPrimary = true"
            ),
            format!(
                "SELECT Id, Opportunity.IsClosed, Contact.Email FROM OpportunityContactRole WHERE OpportunityId IN {o} OR ContactId IN {c}"
            ),
            format!(
                "SELECT Id, IsConverted, ConvertedContactId, ConvertedAccountId, ConvertedOpportunityId FROM Lead WHERE Id IN {l} ORDER BY Id"
            ),
            format!(
                "SELECT Id, ConvertedOpportunityId FROM Lead WHERE IsConverted = true ORDER BY ConvertedDate DESC, Id LIMIT {lim}"
            ),
            format!("SELECT Id FROM Lead WHERE IsConverted = true AND ConvertedOpportunityId != null AND Id IN {l}"),
            format!("SELECT Id FROM Lead WHERE ConvertedOpportunityId IN {o}"),
            format!("SELECT Id, Email FROM Lead WHERE Email = '{e}'"),
            format!("SELECT Id, AccountId FROM Contact WHERE Email = '{e}' ORDER BY Id"),
            format!("SELECT Id, LastModifiedDate FROM Opportunity WHERE Id IN {o} AND IsClosed = false"),
            format!("SELECT Id, Name FROM Contact WHERE AccountId = '{a}' AND (Email LIKE '%a%' OR Title = null)"),
            format!(
                "SELECT Id, WhoId, Who.Name FROM Task WHERE WhoId IN {c} OR WhoId IN {l} ORDER BY Subject LIMIT {lim}"
            ),
            format!("SELECT Id, Salesync_Activity_Id__c FROM Task WHERE Salesync_Activity_Id__c IN {x}"),
            format!("SELECT COUNT() FROM OpportunityContactRole WHERE ContactId IN {c}"),
            format!(
                "SELECT Id, (SELECT Id, OpportunityId FROM OpportunityContactRoles), (SELECT Id FROM Tasks) FROM Contact WHERE Id IN {c}"
            ),
            format!("SELECT Id FROM Lead WHERE ConvertedContactId IN {c} AND NOT IsConverted = false"),
        ];
        let scans = [
            format!("SELECT Id FROM OpportunityContactRole WHERE NOT ContactId IN {c} ORDER BY Id LIMIT {lim}"),
            format!("SELECT Id FROM Lead WHERE Id IN {l} OR Company LIKE '%Acme%' ORDER BY Id LIMIT {lim}"),
            format!("SELECT Id FROM Lead WHERE ConvertedOpportunityId = null ORDER BY Id LIMIT {lim}"),
        ];
        for q in &indexable {
            assert!(same_both_ways(&h, q).await, "round {round}: expected an index for {q}");
            indexed_queries += 1;
        }
        for q in &scans {
            assert!(!same_both_ways(&h, q).await, "round {round}: expected a scan for {q}");
        }
    }
    assert!(indexed_queries >= 400);
    // Lookups actually find rows (the comparison above is not between two empty answers).
    let c = in_list(&contacts[..100]);
    let b = h.query_page(&format!("SELECT Id FROM OpportunityContactRole WHERE ContactId IN {c}"), false, None).await.1;
    assert!(b["totalSize"].as_u64().unwrap() > 10, "{b}");
    let b = h.query_page("SELECT Id FROM Lead WHERE IsConverted = true", false, None).await.1;
    assert!(b["totalSize"].as_u64().unwrap() > 20, "{b}");
}

#[tokio::test]
async fn indexes_follow_inserts_updates_deletes_and_rollbacks() {
    let h = H::default().await;
    let lead = |n: &str| {
        h.emu
            .insert("Lead", obj(json!({"LastName": n, "Company": "C", "Email": format!("{n}@x.example.com")})))
            .unwrap()
    };
    let (a, b) = (lead("a"), lead("b"));
    let count = |q: String| {
        let h = &h;
        async move {
            let (s, v) = h.query_page(&q, false, None).await;
            assert_eq!(s, 200, "{q}: {v}");
            let n = v["totalSize"].as_u64().unwrap();
            h.emu.set_indexed_queries(false);
            let scanned = h.query_page(&q, false, None).await.1["totalSize"].as_u64().unwrap();
            h.emu.set_indexed_queries(true);
            assert_eq!(n, scanned, "{q}");
            n
        }
    };
    let who = |id: &str| format!("SELECT Id FROM Task WHERE WhoId = '{id}'");
    // REST create, then update moves the task from one index entry to another.
    let (s, t) = h
        .call(
            Method::POST,
            "/sobjects/Task",
            Some(json!({"Subject": "s", "WhoId": a, "Salesync_Activity_Id__c": "K-1"})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let task = t["id"].as_str().unwrap().to_string();
    assert_eq!(count(who(&a)).await, 1);
    let (s, _) = h.call(Method::PATCH, &format!("/sobjects/Task/{task}"), Some(json!({"WhoId": b}))).await;
    assert_eq!(s, 204);
    assert_eq!((count(who(&a)).await, count(who(&b)).await), (0, 1));
    // Clearing a reference removes it; external id changes are followed (case-insensitively).
    let (s, _) = h
        .call(
            Method::PATCH,
            &format!("/sobjects/Task/{task}"),
            Some(json!({"WhoId": null, "Salesync_Activity_Id__c": "K-2"})),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(count(who(&b)).await, 0);
    assert_eq!(count("SELECT Id FROM Task WHERE Salesync_Activity_Id__c = 'K-1'".into()).await, 0);
    assert_eq!(count("SELECT Id FROM Task WHERE Salesync_Activity_Id__c = 'k-2'".into()).await, 1);
    // Upsert by external id finds the updated value.
    let (s, _) =
        h.call(Method::PATCH, "/sobjects/Task/Salesync_Activity_Id__c/K-2", Some(json!({"Subject": "again"}))).await;
    assert_eq!(s, 204);
    // Deletes: query no longer sees it, queryAll does, and the external id is free again.
    let (s, _) = h.call(Method::DELETE, &format!("/sobjects/Task/{task}"), None).await;
    assert_eq!(s, 204);
    let q = format!("SELECT Id FROM Task WHERE Id = '{task}'");
    assert_eq!(count(q.clone()).await, 0);
    let all = h.query_page(&q, true, None).await.1;
    assert_eq!(all["totalSize"], 1);
    let (s, v) =
        h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "s", "Salesync_Activity_Id__c": "K-2"}))).await;
    assert_eq!(s, 201, "{v}");
    // A rolled-back allOrNone insert leaves nothing in the index.
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Task"}, "Subject": "x", "WhoId": a, "Salesync_Activity_Id__c": "R-1"},
        {"attributes": {"type": "Task"}, "Subject": "bad", "WhoId": "001000000000000AAA"}
    ]});
    let (s, v) = h.call(Method::POST, "/composite/sobjects", Some(body)).await;
    assert_eq!(s, 200);
    assert_eq!(v[0]["success"], false, "{v}");
    assert_eq!(count(who(&a)).await, 0);
    assert_eq!(count("SELECT Id FROM Task WHERE Salesync_Activity_Id__c = 'R-1'".into()).await, 0);
    // Lead conversion: IsConverted, Converted*Id and the moved tasks are all findable.
    h.emu.insert("Task", obj(json!({"Subject": "t", "WhoId": a}))).unwrap();
    let conv = h.emu.convert_lead(&a, None, None, true).unwrap();
    let opp = conv.opportunity_id.unwrap();
    assert_eq!(count(format!("SELECT Id FROM Lead WHERE IsConverted = true AND Id = '{a}'")).await, 1);
    assert_eq!(count(format!("SELECT Id FROM Lead WHERE ConvertedOpportunityId = '{opp}'")).await, 1);
    assert_eq!(count(format!("SELECT Id FROM Lead WHERE ConvertedContactId = '{}'", conv.contact_id)).await, 1);
    assert_eq!(
        count(format!("SELECT Id FROM OpportunityContactRole WHERE ContactId = '{}'", conv.contact_id)).await,
        1
    );
    assert_eq!(count(who(&a)).await, 0);
    assert_eq!(count(who(&conv.contact_id)).await, 1);
    assert_eq!(count("SELECT Id FROM Lead WHERE IsConverted = false".into()).await, 1);
    // Email changes move between index entries; lookups are case-insensitive.
    let (s, _) =
        h.call(Method::PATCH, &format!("/sobjects/Lead/{b}"), Some(json!({"Email": "New@X.example.com"}))).await;
    assert_eq!(s, 204);
    assert_eq!(count("SELECT Id FROM Lead WHERE Email = 'b@x.example.com'".into()).await, 0);
    assert_eq!(count("SELECT Id FROM Lead WHERE Email = 'new@x.EXAMPLE.com'".into()).await, 1);
    // A duplicate external id is still rejected through the index.
    let (s, v) =
        h.call(Method::POST, "/sobjects/Task", Some(json!({"Subject": "d", "Salesync_Activity_Id__c": "k-2"}))).await;
    assert_eq!((s, code(&v)), (400, "DUPLICATE_VALUE"), "{v}");
}

#[tokio::test]
async fn a_200_id_lookup_examines_only_its_candidates() {
    let h = H::default().await;
    let world = seed::generate(6_000, 3);
    h.emu.seed_world(&world);
    let contacts: Vec<String> = world.people.iter().filter_map(|p| p.sf_contact_id.clone()).collect();
    let leads: Vec<String> = world.people.iter().filter_map(|p| p.sf_lead_id.clone()).collect();
    let total_roles = h.emu.records("OpportunityContactRole").len() as u64;
    assert!(total_roles > 1_000);

    let ids: Vec<&String> = contacts.iter().step_by(7).take(200).collect();
    let q = format!(
        "SELECT Id, ContactId, OpportunityId, IsPrimary FROM OpportunityContactRole WHERE ContactId IN {} ORDER BY Id",
        in_list(&ids)
    );
    let before = h.emu.query_stats();
    let (s, b) = h.query_page(&q, false, None).await;
    let after = h.emu.query_stats();
    assert_eq!(s, 200);
    let found = b["totalSize"].as_u64().unwrap();
    assert!(found > 50, "{found}");
    assert_eq!((after.queries - before.queries, after.indexed - before.indexed), (1, 1));
    assert_eq!(after.rows_examined - before.rows_examined, found, "only the matching roles are examined");

    let ids: Vec<&String> = leads.iter().step_by(5).take(200).collect();
    let q = format!("SELECT Id, IsConverted, ConvertedContactId FROM Lead WHERE Id IN {} ORDER BY Id", in_list(&ids));
    let before = h.emu.query_stats();
    let (_, b) = h.query_page(&q, false, None).await;
    let after = h.emu.query_stats();
    assert_eq!(b["totalSize"], 200);
    assert_eq!(after.rows_examined - before.rows_examined, 200);

    // A scan examines every role (soft-deleted ones included).
    let before = h.emu.query_stats();
    h.query_page("SELECT Id FROM OpportunityContactRole WHERE IsPrimary = true", false, None).await;
    let after = h.emu.query_stats();
    assert_eq!(after.indexed, before.indexed);
    assert_eq!(after.rows_examined - before.rows_examined, total_roles);
}

#[tokio::test]
async fn paging_selects_once_and_renders_each_page() {
    let h = H::default().await;
    let lead = h.emu.insert("Lead", obj(json!({"LastName": "P", "Company": "C"}))).unwrap();
    for i in 0..4_500 {
        h.emu
            .insert(
                "Task",
                obj(json!({"Subject": format!("t{i:05}"), "WhoId": if i % 2 == 0 { Some(&lead) } else { None }})),
            )
            .unwrap();
    }
    // Default batch 2,000.
    let before = h.emu.query_stats();
    let (first, records, pages) =
        h.query_all_pages("SELECT Id, Subject FROM Task ORDER BY Subject DESC", false, None).await;
    let after = h.emu.query_stats();
    assert_eq!((first["totalSize"].clone(), pages, records.len()), (json!(4_500), 3, 4_500));
    assert_eq!(first["records"].as_array().unwrap().len(), 2_000);
    assert_eq!(after.queries - before.queries, 1, "later pages do not run the query again");
    assert_eq!(after.rows_examined - before.rows_examined, 4_500);
    let subjects: Vec<&str> = records.iter().map(|r| r["Subject"].as_str().unwrap()).collect();
    let mut want: Vec<String> = (0..4_500).map(|i| format!("t{i:05}")).collect();
    want.reverse();
    assert_eq!(subjects, want);
    // batchSize=2000 explicitly, through an index.
    let q = format!("SELECT Id, Subject FROM Task WHERE WhoId = '{lead}' ORDER BY Subject");
    let before = h.emu.query_stats();
    let (first, records, pages) = h.query_all_pages(&q, false, Some(2_000)).await;
    let after = h.emu.query_stats();
    assert_eq!((first["totalSize"].clone(), pages, records.len()), (json!(2_250), 2, 2_250));
    assert_eq!((after.queries - before.queries, after.indexed - before.indexed), (1, 1));
    assert_eq!(after.rows_examined - before.rows_examined, 2_250);
    // A page fetched again answers the same rows; locators past the end are rejected.
    let (_, p1) = h.query_page(&q, false, Some(1_000)).await;
    let next = p1["nextRecordsUrl"].as_str().unwrap().to_string();
    let (a, b) = (h.get(&next).await.1, h.get(&next).await.1);
    assert_eq!(a, b);
    assert_eq!(a["records"].as_array().unwrap().len(), 1_000);
    let (cursor, _) = next.rsplit_once('-').unwrap();
    let (s, v) = h.get(&format!("{cursor}-99999")).await;
    assert_eq!((s, code(&v)), (400, "INVALID_QUERY_LOCATOR"));
}
