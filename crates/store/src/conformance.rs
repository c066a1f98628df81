//! The conformance suite every [`Store`] backend must pass.
//!
//! **Unstable and destructive.** This module is exported with the `testing` feature so that other
//! crates (and host-written stores) can run it, but its API may change in any release, and every
//! check writes to the store it is given: run it only on a fresh, empty, throw-away store.
//!
//! Each check is a `pub async fn name(store: &dyn Store)` (the concurrency checks take an
//! `Arc<dyn Store>` so they can spawn tasks). [`run_all`] runs every check against fresh stores,
//! and [`conformance_tests!`](crate::conformance_tests) generates one `#[tokio::test]` per check.
//! Checks that need to reopen a store ([`populate`] / [`verify_populated`]) are driven by the
//! backend's own tests, because only they know how to reopen the same database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use futures::future::BoxFuture;
use salesync_core::Error;
use salesync_core::activity::{
    AdminSettings, ReminderPriority, ReminderStatus, ReminderTask, SalesActivity, SalesActivityKind, UnsubscribeOrigin,
    UnsubscribeState,
};
use salesync_core::mapping::Disqualification;
use salesync_core::mirror::{Decision, RemovalReason};
use salesync_core::person::{OpportunityRef, Person, SalesforceType};
use salesync_core::ports::store::{
    ApplyCounts, Checkpoint, Claim, Finished, InboundBatch, MirrorPage, NewOutboxItem, OutboxCounts, OutboxPayload,
    OutboxState, Outcome, Promotion, Recording, ShadowStore, Store, StreamId, Target, Tombstone,
};
use salesync_core::sfid::SalesforceId;
use serde_json::json;

/// A boxed check, as listed by [`all_checks`].
pub type Check = fn(Arc<dyn Store>) -> BoxFuture<'static, ()>;

macro_rules! registry {
    (ref: [$($r:ident),* $(,)?], arc: [$($a:ident),* $(,)?] $(,)?) => {
        /// Boxed entry points of the checks (used by [`conformance_tests!`](crate::conformance_tests)).
        #[doc(hidden)]
        pub mod entry {
            use super::*;
            $(pub fn $r(s: Arc<dyn Store>) -> BoxFuture<'static, ()> { Box::pin(async move { super::$r(&*s).await }) })*
            $(pub fn $a(s: Arc<dyn Store>) -> BoxFuture<'static, ()> { Box::pin(super::$a(s)) })*
        }

        /// Every check with its name.
        pub fn all_checks() -> Vec<(&'static str, Check)> {
            vec![$((stringify!($r), entry::$r as Check),)* $((stringify!($a), entry::$a as Check),)*]
        }
    };
}

registry! {
    ref: [
        apply_decisions,
        duplicates_by_email_are_kept,
        people_lookups,
        tombstones_with_merge_winner,
        failed_page_leaves_neither_data_nor_checkpoint,
        checkpoints_per_stream,
        outbox_record_is_idempotent,
        outbox_claim_and_ack,
        outbox_claim_order_targets_and_limits,
        outbox_retry_backoff,
        outbox_park_and_requeue,
        outbox_outcome_unknown_mark,
        outbox_skip,
        outbox_redelivery_after_lease_expiry,
        outbox_stale_finish_is_ignored,
        reminders_and_unsubscribes,
        inbound_batches,
        settings_round_trip,
        leases,
        bind_instance,
        populate_then_verify,
        shadow_is_available,
        shadow_is_separate_from_live,
        shadow_lookups,
        shadow_removal_leaves_no_tombstone,
        shadow_promotion,
        failed_promotion_changes_nothing,
        clear_shadow_empties_rows_and_checkpoints,
        shadow_promotion_of_many,
    ],
    arc: [concurrent_claimers, concurrent_lease_takers],
}

/// Generates one `#[tokio::test]` per conformance check.
///
/// `$run` is an `async fn(salesync_store::conformance::Check)` that opens a fresh store, runs the
/// check on it and cleans up.
///
/// ```ignore
/// async fn run(check: salesync_store::conformance::Check) {
///     check(std::sync::Arc::new(salesync_store::MemoryStore::new())).await;
/// }
/// salesync_store::conformance_tests!(run);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($run:path) => {
        $crate::conformance_tests!(@gen $run;
            apply_decisions,
            duplicates_by_email_are_kept,
            people_lookups,
            tombstones_with_merge_winner,
            failed_page_leaves_neither_data_nor_checkpoint,
            checkpoints_per_stream,
            outbox_record_is_idempotent,
            outbox_claim_and_ack,
            outbox_claim_order_targets_and_limits,
            outbox_retry_backoff,
            outbox_park_and_requeue,
            outbox_outcome_unknown_mark,
            outbox_skip,
            outbox_redelivery_after_lease_expiry,
            outbox_stale_finish_is_ignored,
            reminders_and_unsubscribes,
            inbound_batches,
            settings_round_trip,
            leases,
            bind_instance,
            populate_then_verify,
            shadow_is_available,
            shadow_is_separate_from_live,
            shadow_lookups,
            shadow_removal_leaves_no_tombstone,
            shadow_promotion,
            failed_promotion_changes_nothing,
            clear_shadow_empties_rows_and_checkpoints,
            shadow_promotion_of_many,
            concurrent_claimers,
            concurrent_lease_takers,
        );
    };
    (@gen $run:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $run($crate::conformance::entry::$name).await;
            }
        )*

        /// How many checks this invocation generated tests for.
        #[allow(dead_code)]
        const CONFORMANCE_TEST_COUNT: usize = [$(stringify!($name)),*].len();
    };
}

/// Runs every check, each on a fresh store from `open`.
pub async fn run_all<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, check) in all_checks() {
        tracing::info!(check = name, "conformance");
        let store = open().await;
        check(store).await;
    }
}

// ---------------------------------------------------------------- fixtures

/// 2026-11-29T00:00:00Z plus `secs` seconds (whole microseconds, as every backend stores).
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// A valid Salesforce id with key prefix `prefix` (3 characters) and number `n`.
pub fn sfid(prefix: &str, n: u64) -> SalesforceId {
    SalesforceId::parse(&format!("{prefix}5g{n:010}")).unwrap()
}

/// The owner used by most fixtures.
pub fn owner(n: u64) -> SalesforceId {
    sfid("005", n)
}

/// A qualified lead with every field set.
pub fn person(id: i64, email: &str, owner_n: u64) -> Person {
    Person {
        marketo_id: id,
        first_name: Some(format!("First{id}")),
        last_name: Some("Ünïcödé-Last".into()),
        salesforce_contact_id: None,
        salesforce_lead_id: Some(sfid("00Q", id.unsigned_abs() % 10_000_000_000)),
        salesforce_account_id: None,
        salesforce_opportunity: OpportunityRef::Unresolved,
        company: Some("Acme".into()),
        title: Some("CTO".into()),
        email: Some(email.to_string()),
        phone: Some("+1 555 0100".into()),
        linkedin_url: Some(format!("https://www.linkedin.com/in/p{id}")),
        source: Some("Web".into()),
        salesforce_type: SalesforceType::Lead,
        owner_id: owner(owner_n),
        marketo_updated_at: Some(t(-3600) + chrono::Duration::microseconds(123_456)),
        mirror_updated_at: t(0) + chrono::Duration::microseconds(654_321),
    }
}

/// A contact with a Salesforce-resolved opportunity and sparse optional fields.
pub fn contact(id: i64, owner_n: u64) -> Person {
    Person {
        marketo_id: id,
        first_name: None,
        last_name: Some("Contact".into()),
        salesforce_contact_id: Some(sfid("003", id as u64)),
        salesforce_lead_id: Some(sfid("00Q", id as u64)),
        salesforce_account_id: Some(sfid("001", 7)),
        salesforce_opportunity: OpportunityRef::Salesforce(Some(sfid("006", 9))),
        company: None,
        title: None,
        email: None,
        phone: None,
        linkedin_url: None,
        source: None,
        salesforce_type: SalesforceType::Contact,
        owner_id: owner(owner_n),
        marketo_updated_at: None,
        mirror_updated_at: t(1),
    }
}

fn insert(p: Person) -> Decision {
    Decision::Insert { person: p }
}

fn page(decisions: Vec<Decision>, checkpoint: Option<Checkpoint>) -> MirrorPage {
    MirrorPage { decisions, checkpoint, at: t(100) }
}

fn cp(stream: StreamId, token: &str) -> Checkpoint {
    Checkpoint { stream, position: json!({"token": token, "n": 5}), updated_at: t(50) }
}

fn ids(people: &[Person]) -> Vec<i64> {
    people.iter().map(|p| p.marketo_id).collect()
}

fn item(key: &str, target: Target, not_before: DateTime<Utc>) -> NewOutboxItem {
    NewOutboxItem { key: key.into(), target, payload: OutboxPayload::Unsubscribe { marketo_id: 1 }, not_before }
}

async fn enqueue(store: &dyn Store, items: Vec<NewOutboxItem>) -> Vec<i64> {
    store.record(Recording { outbox: items, ..Default::default() }).await.unwrap()
}

fn done(id: i64, worker: &str, outcome: Outcome) -> Finished {
    Finished { id, worker: worker.into(), outcome }
}

fn delivered(id: i64, worker: &str) -> Finished {
    done(id, worker, Outcome::Delivered { remote_id: format!("remote-{id}") })
}

const LEASE: Duration = Duration::from_secs(30);

fn reminder(id: &str, marketo_id: i64, task: Option<SalesforceId>) -> ReminderTask {
    ReminderTask {
        id: id.into(),
        marketo_id,
        subject: format!("Call back {id}"),
        status: ReminderStatus::Open,
        priority: ReminderPriority::High,
        due_date: NaiveDate::from_ymd_opt(2026, 12, 24),
        details: Some("details".into()),
        salesforce_task_id: task,
        deleted: false,
        updated_at: t(5) + chrono::Duration::microseconds(42),
    }
}

fn activity(id: &str) -> SalesActivity {
    SalesActivity {
        actor_email: Some("rep@example.com".into()),
        actor_salesforce_user: Some(owner(1)),
        subject: Some("Intro".into()),
        body: Some("Hello".into()),
        ..SalesActivity::new(id, 1, SalesActivityKind::SendSalesEmail, t(3))
    }
}

// ---------------------------------------------------------------- mirror

/// Insert, update, remove, unchanged and skip decisions applied as one page.
pub async fn apply_decisions(store: &dyn Store) {
    let counts = store
        .apply_page(page(
            vec![insert(person(1, "a@example.com", 1)), insert(person(2, "b@example.com", 1)), insert(contact(3, 2))],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { inserted: 3, updated: 0, removed: 0, untouched: 0 });
    assert_eq!(store.person(1).await.unwrap(), Some(person(1, "a@example.com", 1)), "every field round-trips");
    assert_eq!(store.person(3).await.unwrap(), Some(contact(3, 2)), "sparse contact round-trips");

    let mut changed = person(1, "a.new@example.com", 2);
    changed.salesforce_opportunity = OpportunityRef::Marketo(sfid("006", 1));
    changed.mirror_updated_at = t(200);
    let mut unresolved_none = contact(3, 2);
    unresolved_none.salesforce_opportunity = OpportunityRef::Salesforce(None);
    let counts = store
        .apply_page(page(
            vec![
                Decision::Update { person: changed.clone(), changed: vec![] },
                Decision::Update { person: unresolved_none.clone(), changed: vec![] },
                Decision::Remove { marketo_id: 2, reason: RemovalReason::Deleted },
                Decision::Unchanged { marketo_id: 3 },
                Decision::Skip { marketo_id: 99 },
            ],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { inserted: 0, updated: 2, removed: 1, untouched: 2 });
    assert_eq!(store.person(1).await.unwrap(), Some(changed));
    assert_eq!(store.person(3).await.unwrap(), Some(unresolved_none));
    assert_eq!(store.person(2).await.unwrap(), None);
    assert_eq!(store.person(99).await.unwrap(), None);
    assert_eq!(store.count_people().await.unwrap(), 2);

    // Several decisions about one id in a page: the last one wins.
    store
        .apply_page(page(
            vec![
                insert(person(10, "x@example.com", 1)),
                Decision::Remove { marketo_id: 10, reason: RemovalReason::Vanished },
                Decision::Remove { marketo_id: 11, reason: RemovalReason::Deleted },
                insert(person(11, "y@example.com", 1)),
            ],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(store.person(10).await.unwrap(), None);
    assert_eq!(store.tombstone(10).await.unwrap().unwrap().reason, RemovalReason::Vanished);
    assert_eq!(store.person(11).await.unwrap(), Some(person(11, "y@example.com", 1)));
    assert_eq!(store.tombstone(11).await.unwrap(), None);

    // An empty page is fine; a page of 1,000 people (several SQL statements) too.
    assert_eq!(store.apply_page(page(vec![], None)).await.unwrap(), ApplyCounts::default());
    let many: Vec<Decision> = (1000..2000).map(|i| insert(person(i, &format!("p{i}@example.com"), 3))).collect();
    assert_eq!(store.apply_page(page(many, None)).await.unwrap().inserted, 1000);
    assert_eq!(store.count_people().await.unwrap(), 1003);
    assert_eq!(store.person(1999).await.unwrap(), Some(person(1999, "p1999@example.com", 3)));
}

/// Two people sharing an email stay two people; email lookups return both.
pub async fn duplicates_by_email_are_kept(store: &dyn Store) {
    store
        .apply_page(page(
            vec![
                insert(person(1, "same@example.com", 1)),
                insert(person(2, "Same@Example.COM", 1)),
                insert(person(3, "other@example.com", 1)),
            ],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(store.count_people().await.unwrap(), 3);
    let found = store.people_by_email("SAME@example.com").await.unwrap();
    assert_eq!(ids(&found), vec![1, 2], "case-insensitive, all duplicates, by id");
    assert_eq!(found[1].email.as_deref(), Some("Same@Example.COM"), "the stored spelling is kept");
    assert!(store.people_by_email("nobody@example.com").await.unwrap().is_empty());
}

/// Lookups by id(s), email, Salesforce id, owner (paged), listing (paged) and counting.
pub async fn people_lookups(store: &dyn Store) {
    assert_eq!(store.count_people().await.unwrap(), 0);
    assert!(store.list_people(None, 10).await.unwrap().is_empty());
    let mut decisions: Vec<Decision> =
        (1..=20).map(|i| insert(person(i, &format!("p{i}@example.com"), (i % 2) as u64))).collect();
    decisions.push(insert(contact(21, 1)));
    store.apply_page(page(decisions, None)).await.unwrap();

    assert_eq!(store.person(5).await.unwrap().unwrap().email.as_deref(), Some("p5@example.com"));
    assert_eq!(store.person(500).await.unwrap(), None);
    assert_eq!(ids(&store.people_by_ids(&[7, 3, 500, 3]).await.unwrap()), vec![3, 7], "absent ids left out");
    assert!(store.people_by_ids(&[]).await.unwrap().is_empty());
    assert_eq!(ids(&store.people_by_email("P7@EXAMPLE.com").await.unwrap()), vec![7]);

    // Salesforce id: lead id or contact id.
    assert_eq!(ids(&store.people_by_salesforce_id(&sfid("00Q", 4)).await.unwrap()), vec![4]);
    assert_eq!(ids(&store.people_by_salesforce_id(&sfid("003", 21)).await.unwrap()), vec![21]);
    assert_eq!(ids(&store.people_by_salesforce_id(&sfid("00Q", 21)).await.unwrap()), vec![21]);
    assert!(store.people_by_salesforce_id(&sfid("003", 4)).await.unwrap().is_empty());

    // Owner paging.
    let odd = owner(1);
    let first = store.people_by_owner(&odd, None, 4).await.unwrap();
    assert_eq!(ids(&first), vec![1, 3, 5, 7]);
    let next = store.people_by_owner(&odd, Some(7), 4).await.unwrap();
    assert_eq!(ids(&next), vec![9, 11, 13, 15]);
    let last = store.people_by_owner(&odd, Some(15), 100).await.unwrap();
    assert_eq!(ids(&last), vec![17, 19, 21]);
    assert!(store.people_by_owner(&odd, Some(21), 100).await.unwrap().is_empty());
    assert!(store.people_by_owner(&owner(77), None, 10).await.unwrap().is_empty());
    assert!(store.people_by_owner(&odd, None, 0).await.unwrap().is_empty());

    // Listing.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let chunk = store.list_people(after, 6).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        after = chunk.last().map(|p| p.marketo_id);
        all.extend(ids(&chunk));
    }
    assert_eq!(all, (1..=21).collect::<Vec<_>>());
    assert_eq!(store.count_people().await.unwrap(), 21);
}

/// Removal leaves a tombstone (with the merge winner); a later insert clears it.
pub async fn tombstones_with_merge_winner(store: &dyn Store) {
    store
        .apply_page(page(
            vec![insert(person(1, "a@x.io", 1)), insert(person(2, "b@x.io", 1)), insert(person(3, "c@x.io", 1))],
            None,
        ))
        .await
        .unwrap();
    let reasons =
        [(1, RemovalReason::Merged { winner: 2 }), (3, RemovalReason::Disqualified { why: Disqualification::NoOwner })];
    let decisions = reasons.iter().map(|(id, r)| Decision::Remove { marketo_id: *id, reason: *r }).collect();
    let counts = store.apply_page(MirrorPage { decisions, checkpoint: None, at: t(300) }).await.unwrap();
    assert_eq!(counts.removed, 2);
    for (id, reason) in reasons {
        let ts = store.tombstone(id).await.unwrap().expect("tombstone");
        assert_eq!((ts.marketo_id, ts.reason, ts.removed_at), (id, reason, t(300)));
        assert_eq!(store.person(id).await.unwrap(), None);
    }
    assert_eq!(store.tombstone(2).await.unwrap(), None);
    assert_eq!(store.people_by_email("a@x.io").await.unwrap(), vec![]);

    // Removed again later: the newest reason and time win.
    store
        .apply_page(MirrorPage {
            decisions: vec![Decision::Remove { marketo_id: 1, reason: RemovalReason::Deleted }],
            checkpoint: None,
            at: t(400),
        })
        .await
        .unwrap();
    let ts = store.tombstone(1).await.unwrap().unwrap();
    assert_eq!((ts.reason, ts.removed_at), (RemovalReason::Deleted, t(400)));

    // Re-inserted: the tombstone goes.
    store.apply_page(page(vec![insert(person(1, "a@x.io", 1))], None)).await.unwrap();
    assert_eq!(store.tombstone(1).await.unwrap(), None);
    assert!(store.person(1).await.unwrap().is_some());
}

/// A page that fails part-way (a non-positive Marketo id violates the schema) writes nothing:
/// no people, no removals, no tombstones, no checkpoint.
pub async fn failed_page_leaves_neither_data_nor_checkpoint(store: &dyn Store) {
    store
        .apply_page(page(vec![insert(person(1, "keep@x.io", 1))], Some(cp(StreamId::LeadChanges, "old"))))
        .await
        .unwrap();
    let before = store.checkpoint(StreamId::LeadChanges).await.unwrap();

    // A bad insert after many good ones (beyond one SQL statement's worth of rows).
    let mut decisions: Vec<Decision> = (100..1400).map(|i| insert(person(i, "n@x.io", 1))).collect();
    decisions.push(Decision::Remove { marketo_id: 1, reason: RemovalReason::Deleted });
    decisions.push(insert(person(-5, "bad@x.io", 1)));
    let err = store.apply_page(page(decisions, Some(cp(StreamId::LeadChanges, "new")))).await;
    assert!(matches!(err, Err(Error::InvalidInput { .. })), "a negative Marketo id must be refused: {err:?}");

    // A bad removal after good inserts and removals.
    let decisions = vec![
        insert(person(200, "n@x.io", 1)),
        Decision::Remove { marketo_id: 1, reason: RemovalReason::Deleted },
        Decision::Remove { marketo_id: 0, reason: RemovalReason::Deleted },
    ];
    let err = store.apply_page(page(decisions, Some(cp(StreamId::LeadChanges, "new")))).await;
    assert!(matches!(err, Err(Error::InvalidInput { .. })), "a zero Marketo id must be refused: {err:?}");

    assert_eq!(store.count_people().await.unwrap(), 1);
    assert!(store.person(1).await.unwrap().is_some(), "the removal was rolled back");
    assert_eq!(store.tombstone(1).await.unwrap(), None);
    assert_eq!(store.person(100).await.unwrap(), None);
    assert_eq!(store.person(200).await.unwrap(), None);
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap(), before, "checkpoint unchanged");
    // And the store still works.
    store
        .apply_page(page(vec![insert(person(2, "ok@x.io", 1))], Some(cp(StreamId::LeadChanges, "next"))))
        .await
        .unwrap();
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap().unwrap().position["token"], "next");
}

/// Checkpoints are kept per stream, written with pages or alone, and overwritten.
pub async fn checkpoints_per_stream(store: &dyn Store) {
    for s in StreamId::ALL {
        assert_eq!(store.checkpoint(s).await.unwrap(), None);
    }
    store
        .apply_page(page(vec![insert(person(1, "a@x.io", 1))], Some(cp(StreamId::InitialSync, "bulk-1"))))
        .await
        .unwrap();
    assert_eq!(store.checkpoint(StreamId::InitialSync).await.unwrap(), Some(cp(StreamId::InitialSync, "bulk-1")));
    // A page of only unchanged decisions still moves its checkpoint.
    store
        .apply_page(page(vec![Decision::Unchanged { marketo_id: 1 }], Some(cp(StreamId::InitialSync, "bulk-2"))))
        .await
        .unwrap();
    assert_eq!(store.checkpoint(StreamId::InitialSync).await.unwrap().unwrap().position["token"], "bulk-2");
    for (i, s) in StreamId::ALL.into_iter().enumerate() {
        let c = Checkpoint {
            stream: s,
            position: json!({"i": i, "nested": {"list": [1, 2, 3]}, "s": "ünï"}),
            updated_at: t(i as i64) + chrono::Duration::microseconds(7),
        };
        store.put_checkpoint(c.clone()).await.unwrap();
        assert_eq!(store.checkpoint(s).await.unwrap(), Some(c));
    }
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap().unwrap().position["i"], 1);
}

// ---------------------------------------------------------------- outbox

/// Recording the same key twice returns the same id; side data is stored with the items.
pub async fn outbox_record_is_idempotent(store: &dyn Store) {
    let unsub = UnsubscribeState { marketo_id: 1, unsubscribed: true, origin: UnsubscribeOrigin::Salesync, at: t(2) };
    let rem = reminder("r1", 1, None);
    let items = vec![
        NewOutboxItem {
            key: "a1:marketo".into(),
            target: Target::Marketo,
            payload: OutboxPayload::Activity { activity: activity("a1") },
            not_before: t(0),
        },
        NewOutboxItem {
            key: "r1:salesforce".into(),
            target: Target::Salesforce,
            payload: OutboxPayload::Reminder { task: rem.clone() },
            not_before: t(0),
        },
        // The same key twice in one recording: one item.
        item("a1:marketo", Target::Marketo, t(0)),
    ];
    let ids = store
        .record(Recording { unsubscribe: Some(unsub.clone()), reminder: Some(rem.clone()), outbox: items })
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    assert_eq!(store.unsubscribe(1).await.unwrap(), Some(unsub));
    assert_eq!(store.reminder("r1").await.unwrap(), Some(rem.clone()));

    let first = store.outbox_item(ids[0]).await.unwrap().unwrap();
    assert_eq!(first.key, "a1:marketo");
    assert_eq!(first.target, Target::Marketo);
    assert_eq!(first.payload, OutboxPayload::Activity { activity: activity("a1") }, "payload round-trips");
    assert_eq!(first.state, OutboxState::Pending);
    assert_eq!(first.attempts, 0);
    assert_eq!(first.next_attempt_at, t(0));
    assert_eq!((first.last_error, first.result, first.lease_owner, first.lease_until), (None, None, None, None));
    assert_eq!(store.outbox_item(ids[1]).await.unwrap().unwrap().payload, OutboxPayload::Reminder { task: rem });

    // Recorded again later, even after delivery: the existing id, no new item.
    let again =
        enqueue(store, vec![item("r1:salesforce", Target::Salesforce, t(9)), item("new", Target::Marketo, t(0))]).await;
    assert_eq!(again[0], ids[1]);
    assert!(again[1] != ids[0] && again[1] != ids[1]);
    assert_eq!(store.outbox_counts().await.unwrap().pending, 3);
    assert_eq!(store.outbox_item(ids[1]).await.unwrap().unwrap().next_attempt_at, t(0), "existing item untouched");
    assert_eq!(store.outbox_item(123_456).await.unwrap(), None);
    assert_eq!(store.record(Recording::default()).await.unwrap(), Vec::<i64>::new());
}

/// Claim sets the lease and counts the attempt; Delivered is final.
pub async fn outbox_claim_and_ack(store: &dyn Store) {
    let ids = enqueue(store, vec![item("k1", Target::Marketo, t(0)), item("k2", Target::Marketo, t(0))]).await;
    let claimed = store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w1".into(), lease: LEASE, now: t(10) })
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
    for c in &claimed {
        assert_eq!(c.state, OutboxState::InFlight);
        assert_eq!(c.lease_owner.as_deref(), Some("w1"));
        assert_eq!(c.lease_until, Some(t(40)));
        assert_eq!(c.attempts, 1);
    }
    assert_eq!(store.outbox_counts().await.unwrap(), OutboxCounts { in_flight: 2, ..Default::default() });
    assert!(
        store
            .claim(Claim { target: Target::Marketo, limit: 10, worker: "w2".into(), lease: LEASE, now: t(11) })
            .await
            .unwrap()
            .is_empty(),
        "leased items are not claimable"
    );

    store.finish(vec![delivered(ids[0], "w1"), delivered(ids[1], "w1")], t(12)).await.unwrap();
    let d = store.outbox_item(ids[0]).await.unwrap().unwrap();
    assert_eq!(d.state, OutboxState::Delivered);
    assert_eq!(d.result.as_deref(), Some(&*format!("remote-{}", ids[0])));
    assert_eq!((d.lease_owner, d.lease_until), (None, None));
    assert_eq!(store.outbox_counts().await.unwrap(), OutboxCounts { delivered: 2, ..Default::default() });
    // Never claimed again, however late.
    assert!(
        store
            .claim(Claim { target: Target::Marketo, limit: 10, worker: "w1".into(), lease: LEASE, now: t(1_000_000) })
            .await
            .unwrap()
            .is_empty()
    );
    // Finishing a delivered item again changes nothing.
    store
        .finish(vec![done(ids[0], "w1", Outcome::Park { error: "late".into(), outcome_unknown: false })], t(13))
        .await
        .unwrap();
    assert_eq!(store.outbox_item(ids[0]).await.unwrap().unwrap().state, OutboxState::Delivered);
    let listed = store.outbox_items(OutboxState::Delivered, 10).await.unwrap();
    assert_eq!(listed.iter().map(|i| i.id).collect::<Vec<_>>(), ids);
}

/// Claims are by id, per target, honour `not_before` and the limit.
pub async fn outbox_claim_order_targets_and_limits(store: &dyn Store) {
    const LONG: Duration = Duration::from_secs(1000);
    let ids = enqueue(
        store,
        vec![
            item("m1", Target::Marketo, t(0)),
            item("s1", Target::Salesforce, t(0)),
            item("m2", Target::Marketo, t(0)),
            item("m3", Target::Marketo, t(100)),
            item("m4", Target::Marketo, t(0)),
        ],
    )
    .await;
    assert!(
        store
            .claim(Claim { target: Target::Marketo, limit: 0, worker: "w".into(), lease: LONG, now: t(10) })
            .await
            .unwrap()
            .is_empty()
    );
    let a = store
        .claim(Claim { target: Target::Marketo, limit: 2, worker: "w".into(), lease: LONG, now: t(10) })
        .await
        .unwrap();
    assert_eq!(a.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[0], ids[2]]);
    let b = store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LONG, now: t(10) })
        .await
        .unwrap();
    assert_eq!(b.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[4]], "m3 is not due yet");
    let s = store
        .claim(Claim { target: Target::Salesforce, limit: 10, worker: "w".into(), lease: LONG, now: t(10) })
        .await
        .unwrap();
    assert_eq!(s.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[1]]);
    let later = store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LONG, now: t(100) })
        .await
        .unwrap();
    assert_eq!(later.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[3]], "due exactly at not_before");
    let pending = store.outbox_items(OutboxState::Pending, 10).await.unwrap();
    assert!(pending.is_empty());
    let in_flight = store.outbox_items(OutboxState::InFlight, 3).await.unwrap();
    assert_eq!(in_flight.iter().map(|i| i.id).collect::<Vec<_>>(), ids[..3].to_vec(), "oldest first, limited");
}

/// Retry puts the item back with a backoff and the error; attempts keep counting.
pub async fn outbox_retry_backoff(store: &dyn Store) {
    let id = enqueue(store, vec![item("k", Target::Salesforce, t(0))]).await[0];
    store
        .claim(Claim { target: Target::Salesforce, limit: 1, worker: "w".into(), lease: LEASE, now: t(1) })
        .await
        .unwrap();
    store
        .finish(
            vec![done(id, "w", Outcome::Retry { at: t(60), error: "503 busy".into(), outcome_unknown: false })],
            t(2),
        )
        .await
        .unwrap();
    let i = store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!(i.state, OutboxState::Pending);
    assert_eq!(i.next_attempt_at, t(60));
    assert_eq!(i.last_error.as_deref(), Some("503 busy"));
    assert_eq!((i.lease_owner, i.lease_until), (None, None));
    assert!(
        store
            .claim(Claim { target: Target::Salesforce, limit: 1, worker: "w".into(), lease: LEASE, now: t(59) })
            .await
            .unwrap()
            .is_empty(),
        "backing off"
    );
    let again = store
        .claim(Claim { target: Target::Salesforce, limit: 1, worker: "w".into(), lease: LEASE, now: t(60) })
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].last_error.as_deref(), Some("503 busy"), "the last error stays visible while in flight");
    store.finish(vec![delivered(id, "w")], t(61)).await.unwrap();
    let i = store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((i.state, i.attempts), (OutboxState::Delivered, 2));
}

/// Park stops delivery until an admin requeues the item.
pub async fn outbox_park_and_requeue(store: &dyn Store) {
    let ids = enqueue(
        store,
        vec![item("p1", Target::Marketo, t(0)), item("p2", Target::Marketo, t(0)), item("p3", Target::Marketo, t(0))],
    )
    .await;
    store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LEASE, now: t(1) })
        .await
        .unwrap();
    store
        .finish(
            vec![
                done(ids[0], "w", Outcome::Park { error: "1003 invalid".into(), outcome_unknown: false }),
                done(ids[1], "w", Outcome::Park { error: "too many attempts".into(), outcome_unknown: false }),
                delivered(ids[2], "w"),
            ],
            t(2),
        )
        .await
        .unwrap();
    let parked = store.outbox_items(OutboxState::Parked, 10).await.unwrap();
    assert_eq!(parked.iter().map(|i| i.id).collect::<Vec<_>>(), ids[..2].to_vec());
    assert_eq!(parked[0].last_error.as_deref(), Some("1003 invalid"));
    assert_eq!(store.outbox_counts().await.unwrap(), OutboxCounts { parked: 2, delivered: 1, ..Default::default() });
    assert!(
        store
            .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LEASE, now: t(1_000) })
            .await
            .unwrap()
            .is_empty(),
        "parked items wait"
    );

    // Only parked items move; unknown and delivered ids are ignored.
    assert_eq!(store.requeue(&[ids[0], ids[2], 999_999], t(500)).await.unwrap(), 1);
    let i = store.outbox_item(ids[0]).await.unwrap().unwrap();
    assert_eq!((i.state, i.next_attempt_at), (OutboxState::Pending, t(500)));
    assert_eq!(i.attempts, 0, "requeue gives a fresh attempt budget");
    assert_eq!(store.outbox_item(ids[2]).await.unwrap().unwrap().state, OutboxState::Delivered);
    let c = store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LEASE, now: t(500) })
        .await
        .unwrap();
    assert_eq!(c.iter().map(|i| i.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert_eq!(store.requeue(&[], t(500)).await.unwrap(), 0);
}

/// The outcome-unknown mark: written by a retry or park that says so, kept while the item is
/// claimed again and across an admin's requeue, cleared by a delivery; a later known failure
/// clears it too.
pub async fn outbox_outcome_unknown_mark(store: &dyn Store) {
    let ids = enqueue(store, vec![item("u1", Target::Marketo, t(0)), item("u2", Target::Marketo, t(0))]).await;
    let fresh = store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LEASE, now: t(1) })
        .await
        .unwrap();
    assert!(fresh.iter().all(|i| !i.outcome_unknown), "new items are known");
    let unknown = |at: i64| Outcome::Retry { at: t(at), error: "timeout".into(), outcome_unknown: true };
    let parked = Outcome::Park { error: "gave up: timeout".into(), outcome_unknown: true };
    store.finish(vec![done(ids[0], "w", unknown(10)), done(ids[1], "w", parked)], t(2)).await.unwrap();
    assert!(store.outbox_item(ids[0]).await.unwrap().unwrap().outcome_unknown);
    assert!(store.outbox_item(ids[1]).await.unwrap().unwrap().outcome_unknown, "parked keeps it");
    assert_eq!(store.requeue(&[ids[1]], t(3)).await.unwrap(), 1);
    assert!(store.outbox_item(ids[1]).await.unwrap().unwrap().outcome_unknown, "requeue keeps it");
    let again = store
        .claim(Claim { target: Target::Marketo, limit: 10, worker: "w".into(), lease: LEASE, now: t(10) })
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|i| i.outcome_unknown), "claimed again with the mark: {again:?}");
    let known = Outcome::Retry { at: t(20), error: "606".into(), outcome_unknown: false };
    store.finish(vec![delivered(ids[0], "w"), done(ids[1], "w", known)], t(11)).await.unwrap();
    assert!(!store.outbox_item(ids[0]).await.unwrap().unwrap().outcome_unknown, "delivered clears it");
    assert!(!store.outbox_item(ids[1]).await.unwrap().unwrap().outcome_unknown, "a known failure clears it");
}

/// Skip is final and records why.
pub async fn outbox_skip(store: &dyn Store) {
    let id = enqueue(store, vec![item("s", Target::Salesforce, t(0))]).await[0];
    store
        .claim(Claim { target: Target::Salesforce, limit: 1, worker: "w".into(), lease: LEASE, now: t(1) })
        .await
        .unwrap();
    store.finish(vec![done(id, "w", Outcome::Skip { reason: "no Salesforce id".into() })], t(2)).await.unwrap();
    let i = store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((i.state, i.result.as_deref()), (OutboxState::Skipped, Some("no Salesforce id")));
    assert_eq!(store.outbox_counts().await.unwrap(), OutboxCounts { skipped: 1, ..Default::default() });
    assert!(
        store
            .claim(Claim { target: Target::Salesforce, limit: 1, worker: "w".into(), lease: LEASE, now: t(1_000_000) })
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.requeue(&[id], t(3)).await.unwrap(), 0, "skipped items are not requeued");
}

/// An item whose worker died is claimed again once its lease expires.
pub async fn outbox_redelivery_after_lease_expiry(store: &dyn Store) {
    let id = enqueue(store, vec![item("k", Target::Marketo, t(0))]).await[0];
    assert_eq!(
        store
            .claim(Claim { target: Target::Marketo, limit: 5, worker: "w1".into(), lease: LEASE, now: t(0) })
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .claim(Claim { target: Target::Marketo, limit: 5, worker: "w2".into(), lease: LEASE, now: t(29) })
            .await
            .unwrap()
            .is_empty(),
        "lease still valid"
    );
    let again = store
        .claim(Claim { target: Target::Marketo, limit: 5, worker: "w2".into(), lease: LEASE, now: t(30) })
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "lease expired");
    assert_eq!((again[0].id, again[0].attempts, again[0].lease_owner.as_deref()), (id, 2, Some("w2")));
    assert_eq!(again[0].lease_until, Some(t(60)));
    store.finish(vec![delivered(id, "w2")], t(31)).await.unwrap();
    assert_eq!(store.outbox_item(id).await.unwrap().unwrap().state, OutboxState::Delivered);
}

/// A worker whose lease was taken over cannot finish the item.
pub async fn outbox_stale_finish_is_ignored(store: &dyn Store) {
    let ids =
        enqueue(store, vec![item("k", Target::Marketo, t(0)), item("never-claimed", Target::Marketo, t(1_000))]).await;
    let id = ids[0];
    store
        .claim(Claim { target: Target::Marketo, limit: 1, worker: "w1".into(), lease: LEASE, now: t(0) })
        .await
        .unwrap();
    store
        .claim(Claim { target: Target::Marketo, limit: 1, worker: "w2".into(), lease: LEASE, now: t(100) })
        .await
        .unwrap();
    store.finish(vec![delivered(id, "w1"), delivered(ids[1], "w1")], t(101)).await.unwrap();
    let i = store.outbox_item(id).await.unwrap().unwrap();
    assert_eq!((i.state, i.lease_owner.as_deref(), i.result), (OutboxState::InFlight, Some("w2"), None));
    assert_eq!(store.outbox_item(ids[1]).await.unwrap().unwrap().state, OutboxState::Pending, "never claimed: ignored");
    store
        .finish(vec![done(id, "w2", Outcome::Retry { at: t(200), error: "e".into(), outcome_unknown: false })], t(102))
        .await
        .unwrap();
    // A retry by the stale worker after the item went back to pending is ignored too.
    store.finish(vec![delivered(id, "w2")], t(103)).await.unwrap();
    assert_eq!(store.outbox_item(id).await.unwrap().unwrap().state, OutboxState::Pending);
    store.finish(vec![], t(104)).await.unwrap();
}

// ---------------------------------------------------------------- reminders, unsubscribes, settings

/// Reminders by id, Salesforce task id and person (deleted ones included); unsubscribe states.
pub async fn reminders_and_unsubscribes(store: &dyn Store) {
    assert_eq!(store.reminder("r1").await.unwrap(), None);
    assert!(store.reminders_for(1).await.unwrap().is_empty());
    let task = sfid("00T", 1);
    store.put_reminder(reminder("r1", 1, None)).await.unwrap();
    let mut r2 = reminder("r2", 1, Some(task.clone()));
    r2.deleted = true;
    r2.status = ReminderStatus::Complete;
    r2.priority = ReminderPriority::Normal;
    r2.due_date = None;
    r2.details = None;
    store.put_reminder(r2.clone()).await.unwrap();
    store.put_reminder(reminder("r3", 2, None)).await.unwrap();
    assert_eq!(store.reminder("r2").await.unwrap(), Some(r2.clone()));
    assert_eq!(store.reminder_by_salesforce_id(&task).await.unwrap(), Some(r2.clone()));
    assert_eq!(store.reminder_by_salesforce_id(&sfid("00T", 2)).await.unwrap(), None);
    let mine = store.reminders_for(1).await.unwrap();
    assert_eq!(mine.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r1", "r2"]);

    // Replacing keeps one row.
    let mut r1 = reminder("r1", 1, Some(sfid("00T", 3)));
    r1.subject = "Edited".into();
    store.put_reminder(r1.clone()).await.unwrap();
    assert_eq!(store.reminder("r1").await.unwrap(), Some(r1.clone()));
    assert_eq!(store.reminder_by_salesforce_id(&sfid("00T", 3)).await.unwrap(), Some(r1));
    assert_eq!(store.reminders_for(1).await.unwrap().len(), 2);

    // Setting the Task id touches only the Task id: a change stored since is kept.
    let mut r3 = reminder("r3", 2, None);
    r3.status = ReminderStatus::Complete;
    r3.details = Some("changed since".into());
    store.put_reminder(r3.clone()).await.unwrap();
    assert!(store.set_reminder_task_id("r3", &sfid("00T", 4)).await.unwrap());
    r3.salesforce_task_id = Some(sfid("00T", 4));
    assert_eq!(store.reminder("r3").await.unwrap(), Some(r3.clone()));
    assert_eq!(store.reminder_by_salesforce_id(&sfid("00T", 4)).await.unwrap(), Some(r3));
    assert!(!store.set_reminder_task_id("nobody", &sfid("00T", 5)).await.unwrap());
    assert_eq!(store.reminder("nobody").await.unwrap(), None);

    assert_eq!(store.unsubscribe(1).await.unwrap(), None);
    let u = UnsubscribeState { marketo_id: 1, unsubscribed: true, origin: UnsubscribeOrigin::Salesforce, at: t(7) };
    store.record(Recording { unsubscribe: Some(u.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(store.unsubscribe(1).await.unwrap(), Some(u));
    let back = UnsubscribeState { marketo_id: 1, unsubscribed: false, origin: UnsubscribeOrigin::Salesync, at: t(8) };
    store.record(Recording { unsubscribe: Some(back.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(store.unsubscribe(1).await.unwrap(), Some(back));
}

/// Inbound batches apply unsubscribes, reminders and their checkpoint together.
pub async fn inbound_batches(store: &dyn Store) {
    let us: Vec<UnsubscribeState> = (1..=3)
        .map(|i| UnsubscribeState {
            marketo_id: i,
            unsubscribed: i != 2,
            origin: UnsubscribeOrigin::Salesforce,
            at: t(i),
        })
        .collect();
    let rs = vec![reminder("a", 1, Some(sfid("00T", 1))), reminder("b", 2, Some(sfid("00T", 2)))];
    store
        .apply_inbound(InboundBatch {
            unsubscribes: us.clone(),
            reminders: rs.clone(),
            checkpoint: Some(cp(StreamId::SalesforceOptOuts, "2026-11-29T00:00:00Z")),
        })
        .await
        .unwrap();
    for u in &us {
        assert_eq!(store.unsubscribe(u.marketo_id).await.unwrap().as_ref(), Some(u));
    }
    for r in &rs {
        assert_eq!(store.reminder(&r.id).await.unwrap().as_ref(), Some(r));
    }
    assert_eq!(
        store.checkpoint(StreamId::SalesforceOptOuts).await.unwrap().unwrap().position["token"],
        "2026-11-29T00:00:00Z"
    );
    store.apply_inbound(InboundBatch::default()).await.unwrap();
    assert_eq!(store.checkpoint(StreamId::SalesforceTasks).await.unwrap(), None);
}

/// Settings are defaults until written, then round-trip.
pub async fn settings_round_trip(store: &dyn Store) {
    assert_eq!(store.settings().await.unwrap(), AdminSettings::default());
    let s = AdminSettings {
        log_emails_to_salesforce: false,
        log_replies_to_salesforce: true,
        log_calls_to_salesforce: false,
        reminder_task_sync: true,
        marketo_unsubscribe_check: true,
        salesforce_opt_out_field: "Custom_Opt_Out__c".into(),
        subject_template: "{{activity_type}} – {{activity_subject}}".into(),
    };
    store.put_settings(s.clone()).await.unwrap();
    assert_eq!(store.settings().await.unwrap(), s);
    store.put_settings(AdminSettings::default()).await.unwrap();
    assert_eq!(store.settings().await.unwrap(), AdminSettings::default());
}

/// Leases: acquire, refuse while valid, renew, take over after expiry, release.
pub async fn leases(store: &dyn Store) {
    let ttl = Duration::from_secs(60);
    assert!(store.try_lease("leader", "a", ttl, t(0)).await.unwrap());
    assert!(!store.try_lease("leader", "b", ttl, t(30)).await.unwrap(), "valid lease refused");
    assert!(store.try_lease("other", "b", ttl, t(30)).await.unwrap(), "leases are per name");
    assert!(store.try_lease("leader", "a", ttl, t(50)).await.unwrap(), "holder renews");
    assert!(!store.try_lease("leader", "b", ttl, t(100)).await.unwrap(), "renewed until 110");
    assert!(store.try_lease("leader", "b", ttl, t(110)).await.unwrap(), "taken over after expiry");
    assert!(!store.try_lease("leader", "a", ttl, t(111)).await.unwrap());
    store.release_lease("leader", "a").await.unwrap();
    assert!(!store.try_lease("leader", "a", ttl, t(112)).await.unwrap(), "a non-holder cannot release");
    store.release_lease("leader", "b").await.unwrap();
    assert!(store.try_lease("leader", "a", ttl, t(113)).await.unwrap(), "released");
    store.release_lease("nothing", "a").await.unwrap();
}

/// The first instance binds the store; another one is refused with both names.
pub async fn bind_instance(store: &dyn Store) {
    store.bind_instance("123-ABC-456").await.unwrap();
    store.bind_instance("123-ABC-456").await.unwrap();
    let err = store.bind_instance("999-XYZ-000").await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("123-ABC-456") && msg.contains("999-XYZ-000"), "{msg}");
    store.bind_instance("123-ABC-456").await.unwrap();
}

// ---------------------------------------------------------------- shadow copy

fn shadow_of(store: &dyn Store) -> Arc<dyn ShadowStore> {
    store.shadow().expect("the bundled backends keep a shadow copy: MirrorStore::shadow must be Some")
}

/// Everything a store holds about ids `1..=max` and every stream, live and shadow: two equal
/// snapshots mean nothing changed.
#[derive(Debug, PartialEq)]
struct Snapshot {
    people: Vec<Person>,
    tombstones: Vec<Option<Tombstone>>,
    checkpoints: Vec<Option<Checkpoint>>,
    shadow_people: Vec<Person>,
    shadow_checkpoints: Vec<Option<Checkpoint>>,
}

async fn snapshot(store: &dyn Store, shadow: &dyn ShadowStore, max: i64) -> Snapshot {
    let mut s = Snapshot {
        people: store.list_people(None, 100_000).await.unwrap(),
        tombstones: Vec::new(),
        checkpoints: Vec::new(),
        shadow_people: shadow.list_shadow_people(None, 100_000).await.unwrap(),
        shadow_checkpoints: Vec::new(),
    };
    for id in 1..=max {
        s.tombstones.push(store.tombstone(id).await.unwrap());
    }
    for stream in StreamId::ALL {
        s.checkpoints.push(store.checkpoint(stream).await.unwrap());
        s.shadow_checkpoints.push(shadow.shadow_checkpoint(stream).await.unwrap());
    }
    s
}

fn stamped(mut p: Person, at: DateTime<Utc>) -> Person {
    p.mirror_updated_at = at;
    p
}

/// The store keeps a shadow copy; every handle on it sees the same data, empty at first.
pub async fn shadow_is_available(store: &dyn Store) {
    let a = shadow_of(store);
    let b = shadow_of(store);
    assert!(a.list_shadow_people(None, 10).await.unwrap().is_empty());
    for s in StreamId::ALL {
        assert_eq!(a.shadow_checkpoint(s).await.unwrap(), None, "{s:?}");
    }
    let counts = a
        .apply_shadow_page(page(vec![insert(person(1, "a@x.io", 1))], Some(cp(StreamId::Rebuild, "r1"))))
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { inserted: 1, ..Default::default() });
    assert_eq!(b.shadow_people_by_ids(&[1]).await.unwrap(), vec![person(1, "a@x.io", 1)]);
    assert_eq!(b.shadow_checkpoint(StreamId::Rebuild).await.unwrap(), Some(cp(StreamId::Rebuild, "r1")));
    assert_eq!(shadow_of(store).list_shadow_people(None, 10).await.unwrap(), vec![person(1, "a@x.io", 1)]);
}

/// Shadow pages and checkpoints leave the live mirror and its checkpoints alone, and the other
/// way round; a failing shadow page writes nothing.
pub async fn shadow_is_separate_from_live(store: &dyn Store) {
    let shadow = shadow_of(store);
    store
        .apply_page(page(
            vec![insert(person(1, "a@x.io", 1)), insert(person(2, "b@x.io", 1))],
            Some(cp(StreamId::LeadChanges, "live")),
        ))
        .await
        .unwrap();
    store
        .apply_page(page(vec![Decision::Remove { marketo_id: 9, reason: RemovalReason::Deleted }], None))
        .await
        .unwrap();

    let mut changed = person(1, "a.shadow@x.io", 2);
    changed.mirror_updated_at = t(250);
    let counts = shadow
        .apply_shadow_page(page(
            vec![
                insert(person(3, "c@x.io", 1)),
                Decision::Update { person: changed.clone(), changed: vec![] },
                insert(contact(4, 2)),
                Decision::Remove { marketo_id: 2, reason: RemovalReason::Vanished },
                insert(person(9, "i@x.io", 1)),
                Decision::Unchanged { marketo_id: 5 },
                Decision::Skip { marketo_id: 6 },
            ],
            Some(cp(StreamId::LeadChanges, "shadow")),
        ))
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { inserted: 3, updated: 1, removed: 1, untouched: 2 }, "as apply_page counts");
    shadow.put_shadow_checkpoint(cp(StreamId::Rebuild, "rebuilding")).await.unwrap();

    // The live mirror did not move.
    assert_eq!(store.list_people(None, 10).await.unwrap(), vec![person(1, "a@x.io", 1), person(2, "b@x.io", 1)]);
    assert_eq!(store.tombstone(2).await.unwrap(), None);
    assert_eq!(store.tombstone(9).await.unwrap().unwrap().reason, RemovalReason::Deleted, "a shadow insert keeps it");
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap(), Some(cp(StreamId::LeadChanges, "live")));
    assert_eq!(store.checkpoint(StreamId::Rebuild).await.unwrap(), None);
    assert_eq!(store.count_people().await.unwrap(), 2);
    // The shadow holds its own rows and positions.
    assert_eq!(
        shadow.list_shadow_people(None, 10).await.unwrap(),
        vec![changed.clone(), person(3, "c@x.io", 1), contact(4, 2), person(9, "i@x.io", 1)]
    );
    assert_eq!(
        shadow.shadow_checkpoint(StreamId::LeadChanges).await.unwrap(),
        Some(cp(StreamId::LeadChanges, "shadow"))
    );
    assert_eq!(shadow.shadow_checkpoint(StreamId::Rebuild).await.unwrap(), Some(cp(StreamId::Rebuild, "rebuilding")));

    // Live writes leave the shadow alone.
    store
        .apply_page(page(
            vec![insert(person(5, "e@x.io", 1)), Decision::Remove { marketo_id: 1, reason: RemovalReason::Deleted }],
            Some(cp(StreamId::LeadChanges, "live-2")),
        ))
        .await
        .unwrap();
    store.put_checkpoint(cp(StreamId::DeletedLeads, "live-deleted")).await.unwrap();
    assert_eq!(
        shadow.list_shadow_people(None, 10).await.unwrap(),
        vec![changed.clone(), person(3, "c@x.io", 1), contact(4, 2), person(9, "i@x.io", 1)]
    );
    assert_eq!(
        shadow.shadow_checkpoint(StreamId::LeadChanges).await.unwrap(),
        Some(cp(StreamId::LeadChanges, "shadow"))
    );
    assert_eq!(shadow.shadow_checkpoint(StreamId::DeletedLeads).await.unwrap(), None);
    shadow.put_shadow_checkpoint(cp(StreamId::DeletedLeads, "shadow-deleted")).await.unwrap();
    assert_eq!(
        store.checkpoint(StreamId::DeletedLeads).await.unwrap(),
        Some(cp(StreamId::DeletedLeads, "live-deleted"))
    );
    assert_eq!(
        shadow.shadow_checkpoint(StreamId::DeletedLeads).await.unwrap(),
        Some(cp(StreamId::DeletedLeads, "shadow-deleted"))
    );

    // A shadow page that fails part-way writes neither rows nor checkpoint.
    let before = snapshot(store, &*shadow, 10).await;
    let mut decisions: Vec<Decision> = (100..1400).map(|i| insert(person(i, "n@x.io", 1))).collect();
    decisions.push(Decision::Remove { marketo_id: 3, reason: RemovalReason::Deleted });
    decisions.push(insert(person(-5, "bad@x.io", 1)));
    let err = shadow.apply_shadow_page(page(decisions, Some(cp(StreamId::LeadChanges, "bad")))).await;
    assert!(matches!(err, Err(Error::InvalidInput { .. })), "a negative Marketo id must be refused: {err:?}");
    // A bad removal too, though a shadow removal writes no tombstone for the schema to check.
    let decisions = vec![
        insert(person(200, "n@x.io", 1)),
        Decision::Remove { marketo_id: 3, reason: RemovalReason::Deleted },
        Decision::Remove { marketo_id: 0, reason: RemovalReason::Deleted },
    ];
    let err = shadow.apply_shadow_page(page(decisions, Some(cp(StreamId::LeadChanges, "bad")))).await;
    assert!(matches!(err, Err(Error::InvalidInput { .. })), "a zero Marketo id must be refused: {err:?}");
    assert_eq!(snapshot(store, &*shadow, 10).await, before);
}

/// Shadow reads: by ids, by Salesforce id, and listing (paged, `after` exclusive).
pub async fn shadow_lookups(store: &dyn Store) {
    let shadow = shadow_of(store);
    assert!(shadow.shadow_people_by_ids(&[1, 2]).await.unwrap().is_empty());
    assert!(shadow.shadow_people_by_salesforce_id(&sfid("00Q", 4)).await.unwrap().is_empty());
    let mut decisions: Vec<Decision> =
        (1..=20).map(|i| insert(person(i, &format!("p{i}@example.com"), (i % 2) as u64))).collect();
    decisions.push(insert(contact(21, 1)));
    shadow.apply_shadow_page(page(decisions, None)).await.unwrap();

    let found = shadow.shadow_people_by_ids(&[7, 3, 500, 3]).await.unwrap();
    assert_eq!(found, vec![person(3, "p3@example.com", 1), person(7, "p7@example.com", 1)], "absent ids left out");
    assert!(shadow.shadow_people_by_ids(&[]).await.unwrap().is_empty());
    assert_eq!(shadow.shadow_people_by_ids(&[21]).await.unwrap(), vec![contact(21, 1)], "sparse contact round-trips");

    // Salesforce id: lead id or contact id.
    assert_eq!(ids(&shadow.shadow_people_by_salesforce_id(&sfid("00Q", 4)).await.unwrap()), vec![4]);
    assert_eq!(ids(&shadow.shadow_people_by_salesforce_id(&sfid("003", 21)).await.unwrap()), vec![21]);
    assert_eq!(ids(&shadow.shadow_people_by_salesforce_id(&sfid("00Q", 21)).await.unwrap()), vec![21]);
    assert!(shadow.shadow_people_by_salesforce_id(&sfid("003", 4)).await.unwrap().is_empty());

    // Listing.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let chunk = shadow.list_shadow_people(after, 6).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 6);
        after = chunk.last().map(|p| p.marketo_id);
        all.extend(ids(&chunk));
    }
    assert_eq!(all, (1..=21).collect::<Vec<_>>());
    assert_eq!(ids(&shadow.list_shadow_people(Some(5), 3).await.unwrap()), vec![6, 7, 8], "after is exclusive");
    assert_eq!(shadow.list_shadow_people(Some(20), 5).await.unwrap(), vec![contact(21, 1)]);
    assert!(shadow.list_shadow_people(Some(21), 5).await.unwrap().is_empty());
    assert!(shadow.list_shadow_people(None, 0).await.unwrap().is_empty());

    // None of it is live.
    assert_eq!(store.count_people().await.unwrap(), 0);
    assert!(store.people_by_salesforce_id(&sfid("00Q", 4)).await.unwrap().is_empty());
    assert!(store.people_by_ids(&[3, 7]).await.unwrap().is_empty());
}

/// A shadow removal deletes the shadow row and leaves no tombstone (nor touches the live row);
/// the last decision about an id in a shadow page wins.
pub async fn shadow_removal_leaves_no_tombstone(store: &dyn Store) {
    let shadow = shadow_of(store);
    store.apply_page(page(vec![insert(person(1, "a@x.io", 1))], None)).await.unwrap();
    shadow
        .apply_shadow_page(page(vec![insert(person(1, "a@x.io", 1)), insert(person(2, "b@x.io", 1))], None))
        .await
        .unwrap();
    let counts = shadow
        .apply_shadow_page(MirrorPage {
            decisions: vec![
                Decision::Remove { marketo_id: 1, reason: RemovalReason::Deleted },
                Decision::Remove { marketo_id: 2, reason: RemovalReason::Merged { winner: 1 } },
            ],
            checkpoint: None,
            at: t(300),
        })
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { removed: 2, ..Default::default() });
    assert!(shadow.list_shadow_people(None, 10).await.unwrap().is_empty());
    assert!(shadow.shadow_people_by_ids(&[1, 2]).await.unwrap().is_empty());
    assert_eq!(store.tombstone(1).await.unwrap(), None);
    assert_eq!(store.tombstone(2).await.unwrap(), None);
    assert_eq!(store.person(1).await.unwrap(), Some(person(1, "a@x.io", 1)), "the live row stays");

    shadow
        .apply_shadow_page(page(
            vec![
                insert(person(3, "c@x.io", 1)),
                Decision::Remove { marketo_id: 3, reason: RemovalReason::Vanished },
                Decision::Remove { marketo_id: 4, reason: RemovalReason::Deleted },
                insert(person(4, "d@x.io", 1)),
            ],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(shadow.list_shadow_people(None, 10).await.unwrap(), vec![person(4, "d@x.io", 1)]);
    assert_eq!(store.tombstone(3).await.unwrap(), None);
    assert_eq!(store.tombstone(4).await.unwrap(), None);
}

/// A promotion inserts, replaces (stamped with its time) and removes live rows with the right
/// counts, clears the promoted ids' tombstones, writes tombstones for removals (absent ids
/// included, as `apply_page` does), writes its checkpoints, and empties the shadow.
pub async fn shadow_promotion(store: &dyn Store) {
    let shadow = shadow_of(store);
    store
        .apply_page(page(
            vec![
                insert(person(1, "a@x.io", 1)),
                insert(person(2, "b@x.io", 1)),
                insert(person(3, "c@x.io", 1)),
                insert(contact(8, 2)),
            ],
            Some(cp(StreamId::LeadChanges, "live")),
        ))
        .await
        .unwrap();
    store
        .apply_page(page(vec![Decision::Remove { marketo_id: 4, reason: RemovalReason::Deleted }], None))
        .await
        .unwrap();
    store.put_checkpoint(cp(StreamId::SalesforceTasks, "tasks")).await.unwrap();
    assert!(store.tombstone(4).await.unwrap().is_some());

    let changed = person(1, "a.rebuilt@x.io", 2);
    shadow
        .apply_shadow_page(page(
            vec![insert(changed.clone()), insert(person(4, "d@x.io", 1)), insert(person(6, "f@x.io", 1))],
            Some(cp(StreamId::Rebuild, "done")),
        ))
        .await
        .unwrap();
    shadow.put_shadow_checkpoint(cp(StreamId::LeadChanges, "shadow")).await.unwrap();

    // Nanoseconds are dropped, as every backend stores microseconds.
    let at = t(500) + chrono::Duration::nanoseconds(789);
    let counts = shadow
        .promote_shadow(Promotion {
            upserts: vec![4, 1, 4],
            removes: vec![
                (2, RemovalReason::Vanished),
                (7, RemovalReason::Merged { winner: 1 }),
                (2, RemovalReason::Vanished),
            ],
            checkpoints: vec![cp(StreamId::LeadChanges, "from-shadow"), cp(StreamId::DeletedLeads, "deleted")],
            at,
        })
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { inserted: 1, updated: 1, removed: 1, untouched: 0 });

    assert_eq!(store.person(1).await.unwrap(), Some(stamped(changed, t(500))), "replaced, stamped `at`");
    assert_eq!(store.person(4).await.unwrap(), Some(stamped(person(4, "d@x.io", 1), t(500))), "inserted");
    assert_eq!(store.tombstone(4).await.unwrap(), None, "a promoted id's tombstone goes");
    assert_eq!(store.person(2).await.unwrap(), None);
    assert_eq!(
        store.tombstone(2).await.unwrap(),
        Some(Tombstone { marketo_id: 2, reason: RemovalReason::Vanished, removed_at: t(500) })
    );
    assert_eq!(
        store.tombstone(7).await.unwrap(),
        Some(Tombstone { marketo_id: 7, reason: RemovalReason::Merged { winner: 1 }, removed_at: t(500) }),
        "an absent id is tombstoned, as apply_page does"
    );
    assert_eq!(store.person(3).await.unwrap(), Some(person(3, "c@x.io", 1)), "named in neither list: untouched");
    assert_eq!(store.person(8).await.unwrap(), Some(contact(8, 2)));
    assert_eq!(store.person(6).await.unwrap(), None, "a shadow row not promoted stays out");
    assert_eq!(ids(&store.list_people(None, 10).await.unwrap()), vec![1, 3, 4, 8]);
    assert_eq!(ids(&store.people_by_salesforce_id(&sfid("00Q", 4)).await.unwrap()), vec![4]);
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap(), Some(cp(StreamId::LeadChanges, "from-shadow")));
    assert_eq!(store.checkpoint(StreamId::DeletedLeads).await.unwrap(), Some(cp(StreamId::DeletedLeads, "deleted")));
    assert_eq!(
        store.checkpoint(StreamId::SalesforceTasks).await.unwrap(),
        Some(cp(StreamId::SalesforceTasks, "tasks"))
    );
    assert_eq!(store.checkpoint(StreamId::Rebuild).await.unwrap(), None, "only the listed checkpoints go live");

    // The shadow is empty: rows and checkpoints.
    assert!(shadow.list_shadow_people(None, 10).await.unwrap().is_empty());
    assert!(shadow.shadow_people_by_ids(&[1, 4, 6]).await.unwrap().is_empty());
    for s in StreamId::ALL {
        assert_eq!(shadow.shadow_checkpoint(s).await.unwrap(), None, "{s:?}");
    }

    // An empty promotion only empties the shadow.
    shadow
        .apply_shadow_page(page(vec![insert(person(10, "j@x.io", 1))], Some(cp(StreamId::Rebuild, "r"))))
        .await
        .unwrap();
    let counts = shadow.promote_shadow(Promotion { at: t(600), ..Default::default() }).await.unwrap();
    assert_eq!(counts, ApplyCounts::default());
    assert!(shadow.list_shadow_people(None, 10).await.unwrap().is_empty());
    assert_eq!(shadow.shadow_checkpoint(StreamId::Rebuild).await.unwrap(), None);
    assert_eq!(ids(&store.list_people(None, 10).await.unwrap()), vec![1, 3, 4, 8]);
    assert_eq!(store.person(1).await.unwrap().unwrap().mirror_updated_at, t(500));
}

/// A promotion naming an id without a shadow row fails with `Conflict` naming it, and changes
/// neither the live mirror nor the shadow; so do invalid removals. The store still works after.
pub async fn failed_promotion_changes_nothing(store: &dyn Store) {
    let shadow = shadow_of(store);
    store
        .apply_page(page(
            vec![insert(person(1, "a@x.io", 1)), insert(person(2, "b@x.io", 1))],
            Some(cp(StreamId::LeadChanges, "live")),
        ))
        .await
        .unwrap();
    store
        .apply_page(page(vec![Decision::Remove { marketo_id: 3, reason: RemovalReason::Deleted }], None))
        .await
        .unwrap();
    shadow
        .apply_shadow_page(page(
            vec![insert(person(1, "a.new@x.io", 1)), insert(person(5, "e@x.io", 1))],
            Some(cp(StreamId::Rebuild, "r")),
        ))
        .await
        .unwrap();
    let before = snapshot(store, &*shadow, 60).await;

    let err = shadow
        .promote_shadow(Promotion {
            upserts: vec![1, 52, 50, 5, 51, 53, 54, 55, 56, 3],
            removes: vec![(2, RemovalReason::Deleted)],
            checkpoints: vec![cp(StreamId::LeadChanges, "new")],
            at: t(700),
        })
        .await
        .unwrap_err();
    match &err {
        Error::Conflict { what, detail } => {
            assert_eq!(*what, "shadow promotion");
            assert!(detail.contains("8 of the 10"), "{detail}");
            assert!(detail.contains("3, 50, 51, 52, 53"), "the first missing ids, ascending: {detail}");
            assert!(!detail.contains("56"), "only the first few: {detail}");
        }
        other => panic!("expected a Conflict, got {other:?}"),
    }
    assert_eq!(snapshot(store, &*shadow, 60).await, before, "nothing written");

    let err = shadow
        .promote_shadow(Promotion {
            upserts: vec![1, 5],
            removes: vec![(2, RemovalReason::Deleted), (0, RemovalReason::Deleted)],
            checkpoints: vec![cp(StreamId::LeadChanges, "new")],
            at: t(700),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "a zero Marketo id must be refused: {err:?}");
    let err = shadow
        .promote_shadow(Promotion {
            upserts: vec![1, 5],
            removes: vec![(5, RemovalReason::Deleted)],
            checkpoints: vec![],
            at: t(700),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "an id both promoted and removed is refused: {err:?}");
    assert_eq!(snapshot(store, &*shadow, 60).await, before, "nothing written");

    let counts = shadow
        .promote_shadow(Promotion {
            upserts: vec![1, 5],
            removes: vec![(2, RemovalReason::Deleted)],
            checkpoints: vec![cp(StreamId::LeadChanges, "new")],
            at: t(700),
        })
        .await
        .unwrap();
    assert_eq!(counts, ApplyCounts { inserted: 1, updated: 1, removed: 1, untouched: 0 });
    assert_eq!(store.person(1).await.unwrap(), Some(stamped(person(1, "a.new@x.io", 1), t(700))));
    assert_eq!(ids(&store.list_people(None, 10).await.unwrap()), vec![1, 5]);
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap(), Some(cp(StreamId::LeadChanges, "new")));
}

/// `clear_shadow` empties the shadow's rows and checkpoints and nothing else.
pub async fn clear_shadow_empties_rows_and_checkpoints(store: &dyn Store) {
    let shadow = shadow_of(store);
    shadow.clear_shadow().await.unwrap();
    store
        .apply_page(page(vec![insert(person(1, "a@x.io", 1))], Some(cp(StreamId::LeadChanges, "live"))))
        .await
        .unwrap();
    store
        .apply_page(page(vec![Decision::Remove { marketo_id: 2, reason: RemovalReason::Deleted }], None))
        .await
        .unwrap();
    shadow
        .apply_shadow_page(page(
            (1..=3).map(|i| insert(person(i, &format!("s{i}@x.io"), 1))).collect(),
            Some(cp(StreamId::LeadChanges, "shadow")),
        ))
        .await
        .unwrap();
    shadow.put_shadow_checkpoint(cp(StreamId::Rebuild, "r")).await.unwrap();
    assert_eq!(shadow.list_shadow_people(None, 10).await.unwrap().len(), 3);

    shadow.clear_shadow().await.unwrap();
    assert!(shadow.list_shadow_people(None, 10).await.unwrap().is_empty());
    assert!(shadow.shadow_people_by_ids(&[1, 2, 3]).await.unwrap().is_empty());
    for s in StreamId::ALL {
        assert_eq!(shadow.shadow_checkpoint(s).await.unwrap(), None, "{s:?}");
    }
    assert_eq!(store.list_people(None, 10).await.unwrap(), vec![person(1, "a@x.io", 1)]);
    assert_eq!(store.tombstone(2).await.unwrap().unwrap().reason, RemovalReason::Deleted);
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap(), Some(cp(StreamId::LeadChanges, "live")));

    // The shadow fills again after.
    shadow.apply_shadow_page(page(vec![insert(person(9, "i@x.io", 1))], None)).await.unwrap();
    assert_eq!(ids(&shadow.list_shadow_people(None, 10).await.unwrap()), vec![9]);
}

/// A promotion of many people (beyond SQLite's 32,766 bound parameters per statement).
pub async fn shadow_promotion_of_many(store: &dyn Store) {
    promote_at_scale(store, 34_000).await;
}

/// Live people `1..=n`, shadow people `n/2+1..=n+n/2`; promotes the `n` shadow ids and removes
/// the `n/2` live ids absent from the shadow, then checks the counts and a sample of rows.
/// Exported for scale tests (e.g. `n` = 1,000,000), which run it on their own.
pub async fn promote_at_scale(store: &dyn Store, n: i64) {
    const PAGE: i64 = 10_000;
    let shadow = shadow_of(store);
    let half = n / 2;
    let fill = |from: i64, to: i64, email: &'static str| {
        (from..=to).step_by(PAGE as usize).map(move |start| {
            let end = (start + PAGE - 1).min(to);
            (start..=end).map(|i| insert(person(i, email, 1))).collect::<Vec<_>>()
        })
    };
    for decisions in fill(1, n, "live@x.io") {
        store.apply_page(page(decisions, None)).await.unwrap();
    }
    for decisions in fill(half + 1, n + half, "shadow@x.io") {
        shadow.apply_shadow_page(page(decisions, None)).await.unwrap();
    }
    // A live tombstone among the ids to promote.
    store
        .apply_page(page(vec![Decision::Remove { marketo_id: n + 1, reason: RemovalReason::Deleted }], None))
        .await
        .unwrap();

    let counts = shadow
        .promote_shadow(Promotion {
            upserts: (half + 1..=n + half).collect(),
            removes: (1..=half).map(|id| (id, RemovalReason::Vanished)).collect(),
            checkpoints: vec![cp(StreamId::InitialSync, "rebuilt")],
            at: t(900),
        })
        .await
        .unwrap();
    let (n_u, half_u) = (n as u64, half as u64);
    assert_eq!(counts, ApplyCounts { inserted: half_u, updated: n_u - half_u, removed: half_u, untouched: 0 });
    assert_eq!(store.count_people().await.unwrap(), n_u);
    for id in [1, half] {
        assert_eq!(store.person(id).await.unwrap(), None);
        assert_eq!(store.tombstone(id).await.unwrap().unwrap().reason, RemovalReason::Vanished);
    }
    for id in [half + 1, n, n + 1, n + half] {
        assert_eq!(store.person(id).await.unwrap(), Some(stamped(person(id, "shadow@x.io", 1), t(900))), "{id}");
        assert_eq!(store.tombstone(id).await.unwrap(), None, "{id}");
    }
    assert_eq!(store.checkpoint(StreamId::InitialSync).await.unwrap(), Some(cp(StreamId::InitialSync, "rebuilt")));
    assert!(shadow.list_shadow_people(None, 1).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- reopening

/// Writes one of everything (to check with [`verify_populated`] after reopening).
pub async fn populate(store: &dyn Store) {
    store.bind_instance("111-AAA-222").await.unwrap();
    store
        .apply_page(page(
            vec![insert(person(1, "a@x.io", 1)), insert(contact(2, 1)), insert(person(3, "c@x.io", 1))],
            Some(cp(StreamId::LeadChanges, "tok")),
        ))
        .await
        .unwrap();
    store
        .apply_page(page(vec![Decision::Remove { marketo_id: 3, reason: RemovalReason::Merged { winner: 1 } }], None))
        .await
        .unwrap();
    let ids = enqueue(store, vec![item("o1", Target::Marketo, t(0)), item("o2", Target::Salesforce, t(0))]).await;
    store
        .claim(Claim { target: Target::Marketo, limit: 1, worker: "w".into(), lease: LEASE, now: t(1) })
        .await
        .unwrap();
    store.finish(vec![delivered(ids[0], "w")], t(2)).await.unwrap();
    store.put_reminder(reminder("r", 1, Some(sfid("00T", 1)))).await.unwrap();
    store
        .record(Recording {
            unsubscribe: Some(UnsubscribeState {
                marketo_id: 1,
                unsubscribed: true,
                origin: UnsubscribeOrigin::Salesync,
                at: t(3),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    store.put_settings(AdminSettings { reminder_task_sync: true, ..Default::default() }).await.unwrap();
    assert!(store.try_lease("leader", "a", Duration::from_secs(3600), t(0)).await.unwrap());
}

/// Checks what [`populate`] wrote.
pub async fn verify_populated(store: &dyn Store) {
    assert!(store.bind_instance("other").await.is_err());
    store.bind_instance("111-AAA-222").await.unwrap();
    assert_eq!(store.person(1).await.unwrap(), Some(person(1, "a@x.io", 1)));
    assert_eq!(store.person(2).await.unwrap(), Some(contact(2, 1)));
    assert_eq!(store.count_people().await.unwrap(), 2);
    assert_eq!(store.tombstone(3).await.unwrap().unwrap().reason, RemovalReason::Merged { winner: 1 });
    assert_eq!(store.checkpoint(StreamId::LeadChanges).await.unwrap(), Some(cp(StreamId::LeadChanges, "tok")));
    assert_eq!(store.outbox_counts().await.unwrap(), OutboxCounts { pending: 1, delivered: 1, ..Default::default() });
    let ids = enqueue(store, vec![item("o1", Target::Marketo, t(0))]).await;
    assert_eq!(store.outbox_item(ids[0]).await.unwrap().unwrap().state, OutboxState::Delivered, "same id after reopen");
    assert_eq!(store.reminder("r").await.unwrap(), Some(reminder("r", 1, Some(sfid("00T", 1)))));
    assert!(store.unsubscribe(1).await.unwrap().unwrap().unsubscribed);
    assert!(store.settings().await.unwrap().reminder_task_sync);
    assert!(!store.try_lease("leader", "b", Duration::from_secs(1), t(10)).await.unwrap());
}

/// [`populate`] then [`verify_populated`] on the same handle.
pub async fn populate_then_verify(store: &dyn Store) {
    populate(store).await;
    verify_populated(store).await;
}

// ---------------------------------------------------------------- concurrency

/// Two workers claiming concurrently never get the same item, and every item is delivered once.
pub async fn concurrent_claimers(store: Arc<dyn Store>) {
    for round in 0..3 {
        let n = 150;
        let items = (0..n).map(|i| item(&format!("c{round}-{i}"), Target::Marketo, t(0))).collect();
        let ids: HashSet<i64> = enqueue(&*store, items).await.into_iter().collect();
        assert_eq!(ids.len(), n);
        let mut tasks = Vec::new();
        for w in 0..2 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let worker = format!("w{w}");
                let mut got = Vec::new();
                loop {
                    let batch = store
                        .claim(Claim {
                            target: Target::Marketo,
                            limit: 7,
                            worker: worker.clone(),
                            lease: Duration::from_secs(600),
                            now: t(1),
                        })
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        if store.outbox_counts().await.unwrap().pending == 0 {
                            break;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for i in &batch {
                        assert_eq!(i.lease_owner.as_deref(), Some(worker.as_str()));
                        assert_eq!(i.attempts, 1, "item {} claimed twice", i.id);
                    }
                    got.extend(batch.iter().map(|i| i.id));
                    let fin = batch.iter().map(|i| delivered(i.id, &worker)).collect();
                    store.finish(fin, t(2)).await.unwrap();
                }
                got
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let unique: HashSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "an item was claimed by two workers");
        assert_eq!(unique, ids, "every item delivered");
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!(counts.delivered, (n * (round + 1)) as u64);
        assert_eq!(counts.in_flight + counts.pending, 0);
    }
}

/// Many concurrent takers of one free lease: exactly one wins.
pub async fn concurrent_lease_takers(store: Arc<dyn Store>) {
    for round in 0..10 {
        let name = format!("lease-{round}");
        let mut tasks = Vec::new();
        for h in 0..8 {
            let store = Arc::clone(&store);
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                store.try_lease(&name, &format!("h{h}"), Duration::from_secs(60), t(0)).await.unwrap()
            }));
        }
        let mut winners = 0;
        for task in tasks {
            winners += usize::from(task.await.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}
