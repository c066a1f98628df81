//! Mirror rules: pure functions from (current mirror record, incoming record or event) to a
//! [`Decision`]. The store applies decisions; nothing else writes people.
//!
//! Duplicates are preserved: the mirror is keyed by Marketo id only, and no rule ever looks at
//! email.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::mapping::{Disqualification, LeadField, Qualification};
use crate::person::{OpportunityRef, Person};

/// Something the sync learned about one Marketo id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The current Marketo record, qualified or not.
    Lead(Qualification),
    /// The lead was deleted in Marketo (activity 37).
    Deleted {
        /// Marketo id.
        marketo_id: i64,
    },
    /// The lead lost a merge (activity 32) and now lives on as `winner`.
    Merged {
        /// The losing Marketo id.
        marketo_id: i64,
        /// The surviving Marketo id.
        winner: i64,
    },
}

impl Incoming {
    /// The Marketo id the event is about.
    pub fn marketo_id(&self) -> i64 {
        match self {
            Incoming::Lead(q) => q.marketo_id(),
            Incoming::Deleted { marketo_id } | Incoming::Merged { marketo_id, .. } => *marketo_id,
        }
    }
}

/// Why a person left the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RemovalReason {
    /// The record no longer qualifies (lost its owner, or left Salesforce).
    Disqualified {
        /// Which rule it failed.
        why: Disqualification,
    },
    /// Deleted in Marketo.
    Deleted,
    /// Merged into another Marketo record.
    Merged {
        /// The surviving Marketo id.
        winner: i64,
    },
    /// Absent from Marketo at a reconciling resync (e.g. its deletion was pruned from history).
    Vanished,
}

impl RemovalReason {
    /// A short stable label (`disqualified`, `deleted`, `merged`, `vanished`).
    pub fn label(&self) -> &'static str {
        match self {
            RemovalReason::Disqualified { .. } => "disqualified",
            RemovalReason::Deleted => "deleted",
            RemovalReason::Merged { .. } => "merged",
            RemovalReason::Vanished => "vanished",
        }
    }
}

/// What to do with one Marketo id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Add a person that was not in the mirror.
    Insert {
        /// The new record.
        person: Person,
    },
    /// Replace a person's record; `changed` lists what differs.
    Update {
        /// The new record.
        person: Person,
        /// The fields that changed.
        changed: Vec<LeadField>,
    },
    /// Nothing to write.
    Unchanged {
        /// Marketo id.
        marketo_id: i64,
    },
    /// Remove the person and leave a tombstone.
    Remove {
        /// Marketo id.
        marketo_id: i64,
        /// Why.
        reason: RemovalReason,
    },
    /// Not in the mirror and should not be: nothing to write (an unqualified record, or an event
    /// about someone the mirror never had).
    Skip {
        /// Marketo id.
        marketo_id: i64,
    },
}

impl Decision {
    /// The Marketo id the decision is about.
    pub fn marketo_id(&self) -> i64 {
        match self {
            Decision::Insert { person } | Decision::Update { person, .. } => person.marketo_id,
            Decision::Unchanged { marketo_id }
            | Decision::Remove { marketo_id, .. }
            | Decision::Skip { marketo_id } => *marketo_id,
        }
    }

    /// True when the store must write something.
    pub fn is_write(&self) -> bool {
        matches!(self, Decision::Insert { .. } | Decision::Update { .. } | Decision::Remove { .. })
    }
}

/// Decides what the mirror does with `incoming`, given its current record for that id.
///
/// `now` stamps `mirror_updated_at` on inserts and updates. Rules:
/// - a qualified record absent from the mirror is inserted; present, it is updated when any of
///   the 13 fields, the Salesforce type or the owner differ, else unchanged (a newer `updatedAt`
///   alone is not a change);
/// - an unqualified record present in the mirror is removed as disqualified; absent, skipped;
/// - deletions and merge losses remove the person (skipped when the mirror never had them);
/// - the opportunity link keeps a Salesforce-resolved id while Marketo gives none, and is reset to
///   unresolved when the account, owner or Salesforce type changes, so the engine looks it up again.
pub fn decide(current: Option<&Person>, incoming: Incoming, now: DateTime<Utc>) -> Decision {
    match (current, incoming) {
        (None, Incoming::Lead(Qualification::Qualified(mut person))) => {
            person.mirror_updated_at = now;
            Decision::Insert { person }
        }
        (Some(cur), Incoming::Lead(Qualification::Qualified(mut person))) => {
            person.salesforce_opportunity = merge_opportunity(cur, &person);
            let changed = changed_fields(cur, &person);
            if changed.is_empty() {
                Decision::Unchanged { marketo_id: cur.marketo_id }
            } else {
                person.mirror_updated_at = now;
                Decision::Update { person, changed }
            }
        }
        (Some(cur), Incoming::Lead(Qualification::Unqualified { reason, .. })) => {
            Decision::Remove { marketo_id: cur.marketo_id, reason: RemovalReason::Disqualified { why: reason } }
        }
        (Some(cur), Incoming::Deleted { .. }) => {
            Decision::Remove { marketo_id: cur.marketo_id, reason: RemovalReason::Deleted }
        }
        (Some(cur), Incoming::Merged { winner, .. }) => {
            Decision::Remove { marketo_id: cur.marketo_id, reason: RemovalReason::Merged { winner } }
        }
        (None, other) => Decision::Skip { marketo_id: other.marketo_id() },
    }
}

fn merge_opportunity(cur: &Person, new: &Person) -> OpportunityRef {
    if let OpportunityRef::Marketo(_) = new.salesforce_opportunity {
        return new.salesforce_opportunity.clone();
    }
    let relinked = cur.salesforce_account_id != new.salesforce_account_id
        || cur.owner_id != new.owner_id
        || cur.salesforce_type != new.salesforce_type
        || cur.salesforce_contact_id != new.salesforce_contact_id;
    match &cur.salesforce_opportunity {
        OpportunityRef::Salesforce(_) if !relinked => cur.salesforce_opportunity.clone(),
        _ => OpportunityRef::Unresolved,
    }
}

/// The fields in which two records of the same person differ (bookkeeping fields excluded).
pub fn changed_fields(a: &Person, b: &Person) -> Vec<LeadField> {
    let mut out = Vec::new();
    let mut check = |differs: bool, f: LeadField| {
        if differs {
            out.push(f);
        }
    };
    check(a.first_name != b.first_name, LeadField::FirstName);
    check(a.last_name != b.last_name, LeadField::LastName);
    check(a.salesforce_contact_id != b.salesforce_contact_id, LeadField::SalesforceContactId);
    check(a.salesforce_lead_id != b.salesforce_lead_id, LeadField::SalesforceLeadId);
    check(a.salesforce_account_id != b.salesforce_account_id, LeadField::SalesforceAccountId);
    check(a.salesforce_opportunity != b.salesforce_opportunity, LeadField::SalesforceOpportunityId);
    check(a.company != b.company, LeadField::Company);
    check(a.title != b.title, LeadField::Title);
    check(a.email != b.email, LeadField::Email);
    check(a.phone != b.phone, LeadField::Phone);
    check(a.linkedin_url != b.linkedin_url, LeadField::LinkedinUrl);
    check(a.source != b.source, LeadField::Source);
    check(a.salesforce_type != b.salesforce_type, LeadField::SalesforceType);
    check(a.owner_id != b.owner_id, LeadField::OwnerId);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::LeadRecord;
    use crate::person::SalesforceType;
    use crate::sfid::SalesforceId;
    use chrono::TimeZone;
    use serde_json::json;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, h, 0, 0).unwrap()
    }

    fn q(v: serde_json::Value) -> Qualification {
        serde_json::from_value::<LeadRecord>(v).unwrap().0.unwrap().qualify(t(0))
    }

    fn person(v: serde_json::Value) -> Person {
        match q(v) {
            Qualification::Qualified(p) => p,
            other => panic!("not qualified: {other:?}"),
        }
    }

    const OWNER: &str = "0055g00000AbCdE";

    #[test]
    fn two_records_sharing_an_email_stay_two() {
        let a = person(json!({"id": 1, "email": "same@example.com", "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER}));
        let b = person(json!({"id": 2, "email": "same@example.com", "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER}));
        // Inserting b with a already in the mirror is judged on b's own id only.
        let d = decide(None, Incoming::Lead(Qualification::Qualified(b.clone())), t(1));
        assert!(matches!(d, Decision::Insert { ref person } if person.marketo_id == 2));
        assert_ne!(a.marketo_id, b.marketo_id);
    }

    #[test]
    fn owner_removed_means_remove_disqualified() {
        let cur = person(json!({"id": 1, "sfdcType": "Contact", "sfdcLeadOwnerId": OWNER}));
        let d = decide(
            Some(&cur),
            Incoming::Lead(q(json!({"id": 1, "sfdcType": "Contact", "sfdcLeadOwnerId": null}))),
            t(1),
        );
        assert_eq!(
            d,
            Decision::Remove { marketo_id: 1, reason: RemovalReason::Disqualified { why: Disqualification::NoOwner } }
        );
        let d = decide(None, Incoming::Lead(q(json!({"id": 1, "sfdcType": "Contact"}))), t(1));
        assert_eq!(d, Decision::Skip { marketo_id: 1 });
    }

    #[test]
    fn owner_given_means_insert() {
        let d = decide(None, Incoming::Lead(q(json!({"id": 3, "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER}))), t(2));
        let Decision::Insert { person } = d else { panic!() };
        assert_eq!(person.mirror_updated_at, t(2));
    }

    #[test]
    fn contact_and_lead_are_distinguished_and_conversion_is_an_update() {
        let lead =
            person(json!({"id": 7, "sfdcType": "Lead", "sfdcLeadId": "00Q5g00000QwErT", "sfdcLeadOwnerId": OWNER}));
        assert_eq!(lead.salesforce_type, SalesforceType::Lead);
        let converted = q(json!({"id": 7, "sfdcType": "Contact", "sfdcContactId": "0035g00000XyZaB",
            "sfdcAccountId": "0015g00000AbCdE", "sfdcLeadOwnerId": OWNER}));
        let Decision::Update { person, changed } = decide(Some(&lead), Incoming::Lead(converted), t(3)) else {
            panic!()
        };
        assert_eq!(person.salesforce_type, SalesforceType::Contact);
        assert_eq!(person.salesforce_lead_id, None);
        assert_eq!(
            changed,
            vec![
                LeadField::SalesforceContactId,
                LeadField::SalesforceLeadId,
                LeadField::SalesforceAccountId,
                LeadField::SalesforceType
            ]
        );
        assert_eq!(person.mirror_updated_at, t(3));
    }

    #[test]
    fn unchanged_when_only_updated_at_moves() {
        let cur = person(
            json!({"id": 1, "firstName": "A", "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER, "updatedAt": "2026-01-01T00:00:00Z"}),
        );
        let d = decide(
            Some(&cur),
            Incoming::Lead(q(
                json!({"id": 1, "firstName": "A", "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER, "updatedAt": "2026-02-01T00:00:00Z"}),
            )),
            t(4),
        );
        assert_eq!(d, Decision::Unchanged { marketo_id: 1 });
    }

    #[test]
    fn field_changes_are_listed() {
        let cur =
            person(json!({"id": 1, "firstName": "A", "title": "CTO", "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER}));
        let d = decide(
            Some(&cur),
            Incoming::Lead(q(
                json!({"id": 1, "firstName": "Ä", "sfdcType": "Lead", "sfdcLeadOwnerId": "0055g00000ZzZzZ"}),
            )),
            t(4),
        );
        let Decision::Update { changed, .. } = d else { panic!() };
        assert_eq!(changed, vec![LeadField::FirstName, LeadField::Title, LeadField::OwnerId]);
    }

    #[test]
    fn deletions_and_merges_remove_with_reason() {
        let cur = person(json!({"id": 1, "sfdcType": "Lead", "sfdcLeadOwnerId": OWNER}));
        assert_eq!(
            decide(Some(&cur), Incoming::Deleted { marketo_id: 1 }, t(1)),
            Decision::Remove { marketo_id: 1, reason: RemovalReason::Deleted }
        );
        assert_eq!(
            decide(Some(&cur), Incoming::Merged { marketo_id: 1, winner: 9 }, t(1)),
            Decision::Remove { marketo_id: 1, reason: RemovalReason::Merged { winner: 9 } }
        );
        assert_eq!(decide(None, Incoming::Deleted { marketo_id: 1 }, t(1)), Decision::Skip { marketo_id: 1 });
    }

    #[test]
    fn salesforce_resolved_opportunity_survives_until_relinked() {
        let mut cur = person(
            json!({"id": 1, "sfdcType": "Contact", "sfdcContactId": "0035g00000XyZaB", "sfdcAccountId": "0015g00000AbCdE", "sfdcLeadOwnerId": OWNER}),
        );
        let opp = SalesforceId::parse("0065g00000AbCdE").unwrap();
        cur.salesforce_opportunity = OpportunityRef::Salesforce(Some(opp.clone()));
        let same = q(
            json!({"id": 1, "sfdcType": "Contact", "sfdcContactId": "0035g00000XyZaB", "sfdcAccountId": "0015g00000AbCdE", "sfdcLeadOwnerId": OWNER}),
        );
        assert_eq!(decide(Some(&cur), Incoming::Lead(same), t(1)), Decision::Unchanged { marketo_id: 1 });
        let moved = q(
            json!({"id": 1, "sfdcType": "Contact", "sfdcContactId": "0035g00000XyZaB", "sfdcAccountId": "0015g00000ZzZzZ", "sfdcLeadOwnerId": OWNER}),
        );
        let Decision::Update { person, changed } = decide(Some(&cur), Incoming::Lead(moved), t(1)) else { panic!() };
        assert!(person.salesforce_opportunity.needs_lookup());
        assert!(changed.contains(&LeadField::SalesforceOpportunityId));
    }
}
