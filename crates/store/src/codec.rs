//! Text forms of domain enums and small helpers shared by the backends.

use chrono::{DateTime, Utc};
use salesync_core::activity::{ReminderPriority, ReminderStatus, UnsubscribeOrigin};
use salesync_core::mirror::{Decision, RemovalReason};
use salesync_core::person::{OpportunityRef, Person, SalesforceType};
use salesync_core::ports::store::{OutboxCounts, OutboxState, Outcome, Recording, Target};
use salesync_core::sfid::SalesforceId;
use salesync_core::{Error, Result};

use crate::error::backend_msg;

/// Truncates a timestamp to whole microseconds, the precision every backend stores.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

pub(crate) fn target_str(t: Target) -> &'static str {
    match t {
        Target::Marketo => "marketo",
        Target::Salesforce => "salesforce",
    }
}

pub(crate) fn parse_target(backend: &'static str, s: &str) -> Result<Target> {
    match s {
        "marketo" => Ok(Target::Marketo),
        "salesforce" => Ok(Target::Salesforce),
        other => Err(backend_msg(backend, format!("unknown outbox target {other:?} in the store"))),
    }
}

pub(crate) fn state_str(s: OutboxState) -> &'static str {
    match s {
        OutboxState::Pending => "pending",
        OutboxState::InFlight => "in_flight",
        OutboxState::Delivered => "delivered",
        OutboxState::Parked => "parked",
        OutboxState::Skipped => "skipped",
    }
}

pub(crate) fn parse_state(backend: &'static str, s: &str) -> Result<OutboxState> {
    Ok(match s {
        "pending" => OutboxState::Pending,
        "in_flight" => OutboxState::InFlight,
        "delivered" => OutboxState::Delivered,
        "parked" => OutboxState::Parked,
        "skipped" => OutboxState::Skipped,
        other => return Err(backend_msg(backend, format!("unknown outbox state {other:?} in the store"))),
    })
}

/// A stored value as JSON text.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(backend: &'static str, what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| crate::error::json(backend, what, e))
}

/// A stored JSON text as a value.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(backend: &'static str, what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| crate::error::json(backend, what, e))
}

/// The JSON payloads of a recording's outbox items, in order.
pub(crate) fn payloads(backend: &'static str, recording: &Recording) -> Result<Vec<String>> {
    recording.outbox.iter().map(|item| to_json(backend, "outbox payload", &item.payload)).collect()
}

/// The JSON reasons of removals, in order.
pub(crate) fn removal_reasons(backend: &'static str, removes: &[(i64, RemovalReason)]) -> Result<Vec<String>> {
    removes.iter().map(|(_, r)| to_json(backend, "removal reason", r)).collect()
}

/// The outbox columns a finished delivery writes; `None` keeps the stored value.
pub(crate) struct OutcomeCols<'a> {
    pub state: OutboxState,
    pub result: Option<&'a str>,
    pub error: Option<&'a str>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Always written.
    pub outcome_unknown: bool,
}

/// What an outcome writes into its outbox item.
pub(crate) fn outcome_cols(o: &Outcome) -> OutcomeCols<'_> {
    let (state, result, error, next_attempt_at, outcome_unknown) = match o {
        Outcome::Delivered { remote_id } => (OutboxState::Delivered, Some(remote_id.as_str()), None, None, false),
        Outcome::Retry { at, error, outcome_unknown } => {
            (OutboxState::Pending, None, Some(error.as_str()), Some(micros(*at)), *outcome_unknown)
        }
        Outcome::Park { error, outcome_unknown } => {
            (OutboxState::Parked, None, Some(error.as_str()), None, *outcome_unknown)
        }
        Outcome::Skip { reason } => (OutboxState::Skipped, Some(reason.as_str()), None, None, false),
    };
    OutcomeCols { state, result, error, next_attempt_at, outcome_unknown }
}

/// Adds `n` items in `state` to the counts.
pub(crate) fn add_count(c: &mut OutboxCounts, state: OutboxState, n: u64) {
    let slot = match state {
        OutboxState::Pending => &mut c.pending,
        OutboxState::InFlight => &mut c.in_flight,
        OutboxState::Delivered => &mut c.delivered,
        OutboxState::Parked => &mut c.parked,
        OutboxState::Skipped => &mut c.skipped,
    };
    *slot += n;
}

/// Outbox counts from `(state, count)` rows.
pub(crate) fn outbox_counts(backend: &'static str, rows: Vec<(String, i64)>) -> Result<OutboxCounts> {
    let mut c = OutboxCounts::default();
    for (state, n) in rows {
        add_count(&mut c, parse_state(backend, &state)?, u64::try_from(n).unwrap_or(0));
    }
    Ok(c)
}

/// The lease expiry `d` after `now`, in whole microseconds.
pub(crate) fn lease_end(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    micros(now.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

pub(crate) fn sf_type_str(t: SalesforceType) -> &'static str {
    t.as_str()
}

pub(crate) fn parse_sf_type(backend: &'static str, s: &str) -> Result<SalesforceType> {
    match s {
        "Lead" => Ok(SalesforceType::Lead),
        "Contact" => Ok(SalesforceType::Contact),
        other => Err(backend_msg(backend, format!("unknown Salesforce type {other:?} in the store"))),
    }
}

/// `(source, id)` columns of an opportunity link.
pub(crate) fn opportunity_cols(o: &OpportunityRef) -> (&'static str, Option<&str>) {
    match o {
        OpportunityRef::Unresolved => ("unresolved", None),
        OpportunityRef::Marketo(id) => ("marketo", Some(id.as_str())),
        OpportunityRef::Salesforce(id) => ("salesforce", id.as_ref().map(SalesforceId::as_str)),
    }
}

pub(crate) fn parse_opportunity(backend: &'static str, source: &str, id: Option<&str>) -> Result<OpportunityRef> {
    let id = id.map(|s| parse_sfid(backend, "salesforce_opportunity_id", s)).transpose()?;
    match (source, id) {
        ("unresolved", _) => Ok(OpportunityRef::Unresolved),
        ("marketo", Some(id)) => Ok(OpportunityRef::Marketo(id)),
        ("salesforce", id) => Ok(OpportunityRef::Salesforce(id)),
        (other, _) => Err(backend_msg(backend, format!("invalid opportunity source {other:?} in the store"))),
    }
}

pub(crate) fn parse_sfid(backend: &'static str, column: &str, s: &str) -> Result<SalesforceId> {
    SalesforceId::parse(s).map_err(|e| backend_msg(backend, format!("column {column}: {e}")))
}

pub(crate) fn opt_sfid(backend: &'static str, column: &str, s: Option<String>) -> Result<Option<SalesforceId>> {
    s.map(|s| parse_sfid(backend, column, &s)).transpose()
}

pub(crate) fn status_str(s: ReminderStatus) -> &'static str {
    match s {
        ReminderStatus::Open => "open",
        ReminderStatus::Complete => "complete",
    }
}

pub(crate) fn parse_status(backend: &'static str, s: &str) -> Result<ReminderStatus> {
    match s {
        "open" => Ok(ReminderStatus::Open),
        "complete" => Ok(ReminderStatus::Complete),
        other => Err(backend_msg(backend, format!("unknown reminder status {other:?} in the store"))),
    }
}

pub(crate) fn priority_str(p: ReminderPriority) -> &'static str {
    match p {
        ReminderPriority::Normal => "normal",
        ReminderPriority::High => "high",
    }
}

pub(crate) fn parse_priority(backend: &'static str, s: &str) -> Result<ReminderPriority> {
    match s {
        "normal" => Ok(ReminderPriority::Normal),
        "high" => Ok(ReminderPriority::High),
        other => Err(backend_msg(backend, format!("unknown reminder priority {other:?} in the store"))),
    }
}

pub(crate) fn origin_str(o: UnsubscribeOrigin) -> &'static str {
    match o {
        UnsubscribeOrigin::Salesync => "salesync",
        UnsubscribeOrigin::Salesforce => "salesforce",
    }
}

pub(crate) fn parse_origin(backend: &'static str, s: &str) -> Result<UnsubscribeOrigin> {
    match s {
        "salesync" => Ok(UnsubscribeOrigin::Salesync),
        "salesforce" => Ok(UnsubscribeOrigin::Salesforce),
        other => Err(backend_msg(backend, format!("unknown unsubscribe origin {other:?} in the store"))),
    }
}

/// A page reduced to the final action per Marketo id (a later decision about the same id wins).
#[derive(Debug, Default)]
pub(crate) struct Reduced {
    /// People to insert or replace.
    pub upserts: Vec<Person>,
    /// People to remove, with their tombstone reason.
    pub removes: Vec<(i64, RemovalReason)>,
}

pub(crate) enum Final {
    Upsert(Person),
    Remove(RemovalReason),
}

/// Reduces decisions to one final write per id and counts them as decided.
pub(crate) fn reduce(decisions: Vec<Decision>) -> (Reduced, salesync_core::ports::store::ApplyCounts) {
    use std::collections::HashMap;
    let mut counts = salesync_core::ports::store::ApplyCounts::default();
    let mut order: Vec<i64> = Vec::new();
    let mut last: HashMap<i64, Final> = HashMap::new();
    for d in decisions {
        let (id, action) = match d {
            Decision::Insert { mut person } => {
                counts.inserted += 1;
                person.mirror_updated_at = micros(person.mirror_updated_at);
                person.marketo_updated_at = person.marketo_updated_at.map(micros);
                (person.marketo_id, Final::Upsert(person))
            }
            Decision::Update { mut person, .. } => {
                counts.updated += 1;
                person.mirror_updated_at = micros(person.mirror_updated_at);
                person.marketo_updated_at = person.marketo_updated_at.map(micros);
                (person.marketo_id, Final::Upsert(person))
            }
            Decision::Remove { marketo_id, reason } => {
                counts.removed += 1;
                (marketo_id, Final::Remove(reason))
            }
            Decision::Unchanged { .. } | Decision::Skip { .. } => {
                counts.untouched += 1;
                continue;
            }
        };
        if last.insert(id, action).is_none() {
            order.push(id);
        }
    }
    let mut out = Reduced::default();
    for id in order {
        match last.remove(&id) {
            Some(Final::Upsert(p)) => out.upserts.push(p),
            Some(Final::Remove(r)) => out.removes.push((id, r)),
            None => {}
        }
    }
    (out, counts)
}

/// The error for a non-positive Marketo id (checked by the schema on SQL backends).
pub(crate) fn bad_id(id: i64) -> Error {
    Error::InvalidInput { field: "marketo_id".into(), reason: format!("{id} is not a positive Marketo id") }
}

/// How many missing ids a failed promotion names.
pub(crate) const MISSING_SHOWN: usize = 5;

/// A [`Promotion`](salesync_core::ports::store::Promotion)'s id lists, checked and reduced.
#[derive(Debug, Default)]
pub(crate) struct PromotionPlan {
    /// Distinct ids to copy from the shadow, ascending.
    pub upserts: Vec<i64>,
    /// Distinct ids to remove, ascending, each with its last reason in the promotion.
    pub removes: Vec<(i64, RemovalReason)>,
}

/// Checks and reduces a promotion's id lists before anything is written: removals need positive
/// ids (like a page's), and an id cannot be both promoted and removed.
pub(crate) fn plan_promotion(p: &salesync_core::ports::store::Promotion) -> Result<PromotionPlan> {
    let mut upserts = p.upserts.clone();
    upserts.sort_unstable();
    upserts.dedup();
    let removes: std::collections::BTreeMap<i64, RemovalReason> = p.removes.iter().copied().collect();
    if let Some(bad) = removes.keys().copied().find(|id| *id <= 0) {
        return Err(bad_id(bad));
    }
    if let Some(both) = upserts.iter().copied().find(|id| removes.contains_key(id)) {
        return Err(Error::InvalidInput {
            field: "promotion".into(),
            reason: format!("Marketo id {both} is both promoted and removed"),
        });
    }
    Ok(PromotionPlan { upserts, removes: removes.into_iter().collect() })
}

/// The conflict of a promotion naming `missing` ids (of `promoted` distinct ones) that have no
/// shadow row; `first` lists the first few of them, ascending.
pub(crate) fn missing_shadow_rows(missing: usize, promoted: usize, first: &[i64]) -> Error {
    let shown = first.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    let more = if missing > first.len() { ", …" } else { "" };
    Error::Conflict {
        what: "shadow promotion",
        detail: format!(
            "{missing} of the {promoted} Marketo ids to promote have no shadow row ({shown}{more}); \
             nothing was promoted"
        ),
    }
}

/// Refuses removals of non-positive Marketo ids, which a shadow page checks before writing (a
/// live page's tombstones are checked by the schema; a shadow removal writes none).
pub(crate) fn check_removal_ids(removes: &[(i64, RemovalReason)]) -> Result<()> {
    match removes.iter().map(|(id, _)| *id).find(|id| *id <= 0) {
        Some(bad) => Err(bad_id(bad)),
        None => Ok(()),
    }
}
