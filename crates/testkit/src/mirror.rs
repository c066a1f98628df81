//! The mirror oracle, paging the whole mirror, and the diff between them.

use std::collections::BTreeMap;
use std::fmt;

use salesync_core::mapping::{LEAD_FIELDS, LeadField};
use salesync_core::person::Person;
use salesync_core::ports::store::{MirrorStoreExt, Store};
use salesync_core::sfid::SalesforceId;
use salesync_emulator::marketo::MarketoEmulator;
use serde_json::Value;

/// What the mirror must hold: Marketo id → synced field (by REST name) → its value as text.
pub type Oracle = BTreeMap<i64, BTreeMap<&'static str, Option<String>>>;

/// How many differences a [`MirrorDiff`]'s message lists.
const SHOWN: usize = 10;

/// What the mirror must hold, from the Marketo emulator's own data: every lead that is a
/// Salesforce Lead or Contact with a non-empty owner, with its synced fields as text (Salesforce
/// ids in their 18-character form). The update time and the opportunity id are not compared
/// (Marketo does not return the opportunity; see [`mirror_diff`]'s expected opportunities).
pub fn oracle(marketo: &MarketoEmulator) -> Oracle {
    let mut out = BTreeMap::new();
    for lead in marketo.leads() {
        let text = |k: &str| match lead.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let ty = text("sfdcType");
        let owner = text("sfdcLeadOwnerId");
        if !matches!(ty.as_deref(), Some("Lead") | Some("Contact")) || owner.is_none() {
            continue;
        }
        let id =
            lead.get("id").and_then(Value::as_i64).unwrap_or_else(|| panic!("a Marketo lead without an id: {lead:?}"));
        let mut fields = BTreeMap::new();
        for spec in LEAD_FIELDS.iter() {
            if matches!(spec.field, LeadField::UpdatedAt | LeadField::SalesforceOpportunityId) {
                continue;
            }
            let v = text(spec.rest_name).map(|v| match SalesforceId::parse(&v) {
                Ok(sf) if spec.rest_name.starts_with("sfdc") && spec.rest_name != "sfdcType" => sf.as_str().to_string(),
                _ => v,
            });
            fields.insert(spec.rest_name, v);
        }
        out.insert(id, fields);
    }
    out
}

/// Every person of a store, by Marketo id ([`MirrorStoreExt::all_people`]).
pub async fn all_people(store: &dyn Store) -> salesync_core::Result<BTreeMap<i64, Person>> {
    Ok(store.all_people().await?.into_iter().map(|p| (p.marketo_id, p)).collect())
}

/// [`all_people`], panicking when the store fails.
pub async fn mirror(store: &dyn Store) -> BTreeMap<i64, Person> {
    all_people(store).await.unwrap_or_else(|e| panic!("reading the whole mirror: {e}"))
}

/// One way the mirror differs from what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A person the oracle has is not in the mirror.
    Missing(i64),
    /// A person in the mirror is not qualified in Marketo.
    Extra(i64),
    /// A synced field differs.
    Field {
        /// The person.
        id: i64,
        /// The field's REST name.
        field: &'static str,
        /// What the mirror holds.
        mirror: Option<String>,
        /// What Marketo holds.
        want: Option<String>,
    },
    /// A person's opportunity is not the one given in Salesforce.
    Opportunity {
        /// The person.
        id: i64,
        /// What the mirror holds.
        mirror: Option<String>,
        /// The opportunity given in Salesforce.
        want: String,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing(id) => write!(f, "person {id} missing from the mirror"),
            Difference::Extra(id) => write!(f, "person {id} in the mirror but not qualified in Marketo"),
            Difference::Field { id, field, mirror, want } => {
                write!(f, "person {id} field {field}: mirror {mirror:?}, Marketo {want:?}")
            }
            Difference::Opportunity { id, mirror, want } => {
                write!(f, "person {id} opportunity (given in Salesforce): mirror {mirror:?}, want {want}")
            }
        }
    }
}

/// Every difference between the mirror and the oracle (empty when they agree). Its `Display`
/// says how many there are and lists the first ten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorDiff(pub Vec<Difference>);

impl MirrorDiff {
    /// Whether the mirror is what it must be.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many differences.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok` when empty, else the message.
    pub fn into_result(self) -> Result<(), String> {
        if self.is_empty() { Ok(()) } else { Err(self.to_string()) }
    }
}

impl fmt::Display for MirrorDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "the mirror equals the oracle");
        }
        write!(f, "the mirror differs from the oracle in {} places", self.0.len())?;
        for d in self.0.iter().take(SHOWN) {
            write!(f, "; {d}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, "; …")?;
        }
        Ok(())
    }
}

/// Compares `mirror` with `oracle` field by field, and each `(person, opportunity)` of
/// `opportunities` (given in Salesforce only, which the oracle cannot know) with the person's
/// opportunity in the mirror.
pub fn mirror_diff(oracle: &Oracle, mirror: &BTreeMap<i64, Person>, opportunities: &[(i64, String)]) -> MirrorDiff {
    let mut diff = Vec::new();
    diff.extend(oracle.keys().filter(|k| !mirror.contains_key(k)).map(|k| Difference::Missing(*k)));
    diff.extend(mirror.keys().filter(|k| !oracle.contains_key(k)).map(|k| Difference::Extra(*k)));
    for (id, fields) in oracle {
        let Some(p) = mirror.get(id) else { continue };
        for (rest, want) in fields {
            let f = LeadField::from_rest_name(rest).unwrap_or_else(|| panic!("{rest} is a synced field"));
            let have = p.field_text(f);
            if &have != want {
                diff.push(Difference::Field { id: *id, field: rest, mirror: have, want: want.clone() });
            }
        }
    }
    for (id, want) in opportunities {
        let have = mirror.get(id).and_then(|p| p.salesforce_opportunity_id()).map(|o| o.as_str().to_string());
        if have.as_deref() != Some(want.as_str()) {
            diff.push(Difference::Opportunity { id: *id, mirror: have, want: want.clone() });
        }
    }
    MirrorDiff(diff)
}
