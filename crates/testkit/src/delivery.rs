//! What a test recorded for delivery, and the check that each item reached its targets exactly
//! once.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use salesync_core::activity::SalesActivityKind;
use salesync_core::ports::store::{OutboxItem, OutboxPayload, OutboxState, Store, Target};
use serde_json::{Map, Value, json};

use crate::mirror::mirror;
use crate::world::World;

/// The Salesforce Task field holding salesync's activity / reminder id.
pub const EXT: &str = "Salesync_Activity_Id__c";

/// The Marketo custom activity attribute holding salesync's activity id.
const ACTIVITY_ID_ATTRIBUTE: &str = "salesyncActivityId";

/// An activity the test recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedActivity {
    /// Its kind (whether it is logged to Salesforce as a Task).
    pub kind: SalesActivityKind,
    /// The Salesforce record its Task must land on, when the test knows it: then the Task must
    /// exist (not be skipped).
    pub who: Option<String>,
}

/// A reminder the test recorded, with what the test knows of its final state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedReminder {
    /// The Salesforce record its Task must land on, when known.
    pub who: Option<String>,
    /// Its last subject, when known (the Task's subject ends with `: <subject>`).
    pub subject: Option<String>,
    /// Whether it was completed last, when known.
    pub completed: Option<bool>,
}

/// Outbound items recorded by a test.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Activities by id.
    pub activities: BTreeMap<String, RecordedActivity>,
    /// Reminders by id.
    pub reminders: BTreeMap<String, RecordedReminder>,
    /// Unsubscribed people (their Salesforce record, as the mirror has it, must be opted out).
    pub unsubscribed: Vec<i64>,
    /// Salesforce records that must be opted out (they must exist).
    pub opted_out: Vec<String>,
}

/// Marketo custom activities by salesync activity id (those without one under `""`).
pub fn marketo_activity_counts(world: &World) -> HashMap<String, usize> {
    world.marketo.custom_activity_counts(ACTIVITY_ID_ATTRIBUTE)
}

/// Live Salesforce Tasks by salesync external id ([`EXT`]).
pub fn tasks_by_external_id(world: &World) -> HashMap<String, Vec<Map<String, Value>>> {
    let mut out: HashMap<String, Vec<Map<String, Value>>> = HashMap::new();
    for t in world.salesforce.records("Task") {
        if let Some(ext) = t.get(EXT).and_then(Value::as_str) {
            out.entry(ext.to_string()).or_default().push(t);
        }
    }
    out
}

/// Whether every outbox item reached a final state (nothing pending or in flight).
pub async fn outbox_drained(store: &dyn Store) -> bool {
    let c = store.outbox_counts().await.expect("outbox counts");
    c.pending == 0 && c.in_flight == 0
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Every recorded item was delivered exactly once to each target it was meant for (with the
/// default logging switches): the outbox is drained with nothing parked; one Marketo custom
/// activity per recorded activity and nothing else; one Salesforce Task per activity of a Task
/// kind that was not skipped (on `who` when known, then never skipped), none for the other
/// kinds; one Task per reminder whose last change is not a delete (on `who`, with the subject and
/// status, when known); no stray Tasks; every unsubscribe and opted-out record pushed.
pub async fn check_delivered_exactly_once(world: &World, store: &dyn Store, out: &Outbound) -> Result<(), String> {
    let c = store.outbox_counts().await.map_err(|e| e.to_string())?;
    let parked: Vec<_> = store
        .outbox_items(OutboxState::Parked, 10)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|i| (i.key, i.attempts, i.last_error))
        .collect();
    ensure!((c.pending, c.in_flight, c.parked) == (0, 0, 0), "outbox not drained: {c:?}, parked {parked:?}");
    let mut items = store.outbox_items(OutboxState::Delivered, 100_000).await.map_err(|e| e.to_string())?;
    let skipped = store.outbox_items(OutboxState::Skipped, 100_000).await.map_err(|e| e.to_string())?;

    let marketo = marketo_activity_counts(world);
    let tasks = tasks_by_external_id(world);
    let dup_m: Vec<_> = marketo.iter().filter(|(_, n)| **n > 1).collect();
    let dup_s: Vec<_> = tasks.iter().filter(|(_, t)| t.len() > 1).map(|(id, t)| (id, t.len())).collect();
    ensure!(dup_m.is_empty(), "activities doubled in Marketo: {dup_m:?}");
    ensure!(dup_s.is_empty(), "Tasks doubled in Salesforce: {dup_s:?}");

    // What the store says was delivered; a reminder's last delivered change decides whether its
    // Task must exist.
    let (mut want_m, mut want_s) = (BTreeSet::new(), BTreeSet::new());
    let mut reminder_deleted: BTreeMap<String, bool> = BTreeMap::new();
    items.sort_by_key(|i| i.id);
    for item in &items {
        match (&item.payload, item.target) {
            (OutboxPayload::Activity { activity }, Target::Marketo) => _ = want_m.insert(activity.id.clone()),
            (OutboxPayload::Activity { activity }, Target::Salesforce) => _ = want_s.insert(activity.id.clone()),
            (OutboxPayload::Reminder { task }, Target::Salesforce) => {
                reminder_deleted.insert(task.id.clone(), task.deleted);
            }
            _ => {}
        }
    }
    want_s.extend(reminder_deleted.iter().filter(|(_, deleted)| !**deleted).map(|(id, _)| id.clone()));

    let to_salesforce = |id: &str, among: &[OutboxItem]| {
        among.iter().any(|i| {
            i.target == Target::Salesforce
                && matches!(&i.payload, OutboxPayload::Activity { activity } if activity.id == id)
        })
    };
    for (id, a) in &out.activities {
        ensure!(want_m.contains(id), "activity {id} not delivered to Marketo");
        if a.kind.task_kind().is_some() {
            ensure!(
                to_salesforce(id, &items) || to_salesforce(id, &skipped),
                "activity {id} has no Salesforce outcome"
            );
        } else {
            ensure!(!to_salesforce(id, &items), "activity {id} ({:?}) must not be logged to Salesforce", a.kind);
            ensure!(!tasks.contains_key(id), "activity {id} ({:?}) must not be logged to Salesforce", a.kind);
        }
        if let (Some(who), Some(_)) = (&a.who, a.kind.task_kind()) {
            let found = tasks.get(id).ok_or_else(|| format!("no Task for {id}"))?;
            ensure!(found.len() == 1, "{id} logged {} times", found.len());
            ensure!(
                found[0]["WhoId"].as_str() == Some(who.as_str()),
                "{id}: WhoId {:?}, want {who}",
                found[0]["WhoId"]
            );
        }
    }
    for (id, r) in &out.reminders {
        if reminder_deleted.get(id) == Some(&true) {
            ensure!(!tasks.contains_key(id), "reminder {id} deleted, yet its Task is in Salesforce");
            continue;
        }
        ensure!(want_s.contains(id), "reminder {id} not delivered to Salesforce");
        let found = tasks.get(id).ok_or_else(|| format!("no Task for reminder {id}"))?;
        ensure!(found.len() == 1, "reminder {id} has {} Tasks", found.len());
        let task = &found[0];
        if let Some(who) = &r.who {
            ensure!(
                task["WhoId"].as_str() == Some(who.as_str()),
                "reminder {id}: WhoId {:?}, want {who}",
                task["WhoId"]
            );
        }
        if let Some(subject) = &r.subject {
            let got = task["Subject"].as_str().unwrap_or_default();
            ensure!(got.ends_with(&format!(": {subject}")), "reminder {id}: subject {got:?}, want {subject:?}");
        }
        if let Some(done) = r.completed {
            let want = json!(if done { "Completed" } else { "Not Started" });
            ensure!(task["Status"] == want, "reminder {id}: status {:?}, want {want}", task["Status"]);
        }
    }
    for id in &want_m {
        ensure!(marketo.get(id) == Some(&1), "activity {id} in Marketo {:?} times", marketo.get(id));
    }
    for id in &want_s {
        let n = tasks.get(id).map_or(0, Vec::len);
        ensure!(n == 1, "{id} in Salesforce {n} times");
    }
    ensure!(
        marketo.len() == want_m.len(),
        "stray Marketo activities: {} for {} delivered",
        marketo.len(),
        want_m.len()
    );
    ensure!(
        marketo.len() == out.activities.len(),
        "Marketo activities: {} for {} recorded",
        marketo.len(),
        out.activities.len()
    );
    ensure!(tasks.len() == want_s.len(), "stray Salesforce Tasks: {} for {} delivered", tasks.len(), want_s.len());
    for item in &skipped {
        if let OutboxPayload::Activity { activity } = &item.payload {
            ensure!(item.target != Target::Marketo, "activity {} skipped for Marketo", activity.id);
            ensure!(!tasks.contains_key(&activity.id), "skipped activity {} has a Task", activity.id);
        }
    }
    // Unsubscribes: the person's Salesforce record opted out.
    let m = mirror(store).await;
    for id in &out.unsubscribed {
        let Some(p) = m.get(id) else { continue };
        let (object, sf) = match (&p.salesforce_contact_id, &p.salesforce_lead_id) {
            (Some(c), _) => ("Contact", c.as_str().to_string()),
            (None, Some(l)) => ("Lead", l.as_str().to_string()),
            _ => continue,
        };
        if let Some(rec) = world.salesforce.get(object, &sf) {
            ensure!(rec.get("HasOptedOutOfEmail") == Some(&json!(true)), "{object} {sf} of person {id} not opted out");
        }
    }
    for who in &out.opted_out {
        let object = if who.starts_with("003") { "Contact" } else { "Lead" };
        let rec = world.salesforce.get(object, who).ok_or_else(|| format!("{object} {who} not in Salesforce"))?;
        ensure!(rec.get("HasOptedOutOfEmail") == Some(&json!(true)), "{object} {who} not opted out");
    }
    Ok(())
}

/// Asserts [`check_delivered_exactly_once`].
pub async fn assert_delivered_exactly_once(world: &World, store: &dyn Store, out: &Outbound) {
    if let Err(e) = check_delivered_exactly_once(world, store, out).await {
        panic!("{e}");
    }
}

/// Records `n` activities (emails and calls), and a few unsubscribes and reminders, through
/// `d` for people of the mirror still in Marketo, picked with `rng`.
#[cfg(feature = "delivery")]
pub async fn record_round(
    world: &World,
    d: &salesync_delivery::Dispatcher,
    store: &dyn Store,
    rng: &mut crate::Rng,
    n: usize,
    out: &mut Outbound,
) {
    use salesync_core::activity::{ReminderPriority, SalesActivity};
    // People of the mirror still in Marketo (an activity for a person deleted in Marketo but not
    // yet removed from the mirror is parked by design: "1004 Lead not found").
    let oracle = world.oracle();
    let people: Vec<i64> = mirror(store).await.keys().copied().filter(|id| oracle.contains_key(id)).collect();
    assert!(!people.is_empty(), "nobody in the mirror to record for");
    for i in 0..n {
        let call = i % 3 == 2;
        let kind = if call { SalesActivityKind::SalesCall } else { SalesActivityKind::SendSalesEmail };
        let activity = SalesActivity {
            occurred_at: chrono::Utc::now(),
            actor_email: Some("seller@example.com".into()),
            subject: Some(format!("Round item {i}")),
            link: None,
            campaign: None,
            call: call.then(|| crate::completed_call(60)),
            bounce_details: None,
            ..crate::activity(String::new(), rng.pick(&people), kind)
        };
        let id = d.record_activity(activity).await.expect("recorded").id;
        out.activities.insert(id, RecordedActivity { kind, who: None });
    }
    for _ in 0..2 {
        let p = rng.pick(&people);
        d.record_unsubscribe(p).await.expect("recorded");
        out.unsubscribed.push(p);
    }
    for i in 0..2 {
        let subject = format!("Follow up {i}");
        let r = d
            .create_reminder(salesync_delivery::NewReminder {
                id: None,
                marketo_id: rng.pick(&people),
                subject: subject.clone(),
                priority: ReminderPriority::Normal,
                due_date: None,
                details: None,
            })
            .await
            .expect("recorded");
        out.reminders.insert(r.id, RecordedReminder { who: None, subject: Some(subject), completed: Some(false) });
    }
}

/// Records one [`activity`](crate::activity) of every kind for `person` (ids
/// `<prefix>-<kind slug>`), each expected on the person's Salesforce record (its contact, else its
/// lead), and, when `unsubscribe`, the person's unsubscribe (that record opted out). Returns the
/// record's id.
#[cfg(feature = "delivery")]
pub async fn record_every_kind(
    d: &salesync_delivery::Dispatcher,
    person: &salesync_core::person::Person,
    prefix: &str,
    unsubscribe: bool,
    out: &mut Outbound,
) -> String {
    let who = person
        .salesforce_contact_id
        .as_ref()
        .or(person.salesforce_lead_id.as_ref())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| panic!("person {} has no Salesforce record", person.marketo_id));
    for kind in SalesActivityKind::ALL {
        let id = format!("{prefix}-{}", kind.slug());
        d.record_activity(crate::activity(id.clone(), person.marketo_id, kind)).await.expect("recorded");
        out.activities.insert(id, RecordedActivity { kind, who: Some(who.clone()) });
    }
    if unsubscribe {
        d.record_unsubscribe(person.marketo_id).await.expect("recorded");
        out.opted_out.push(who.clone());
    }
    who
}
