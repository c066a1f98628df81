//! The one, fixed mapping from Marketo REST lead fields to [`Person`], and owner qualification.
//!
//! [`LEAD_FIELDS`] is the single table: it names every field salesync reads in its syncs, drives
//! the list of fields requested from Marketo ([`requested_fields`]) and the parser
//! ([`LeadRecord`], [`MarketoLead::from_text_fields`]), so the two can never disagree. The parser
//! also reads `createdAt` ([`CREATED_AT`]), which is requested only where needed (the bulk
//! initial sync's oldest-lead probe). The mapping is not configurable.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::{RecordError, RecordProblem};
use crate::person::{OpportunityRef, Person, SalesforceType};
use crate::sfid::SalesforceId;

/// A field of a Marketo lead that salesync reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadField {
    /// `id`: the Marketo id (synced field).
    MarketoId,
    /// `firstName` (synced).
    FirstName,
    /// `lastName` (synced).
    LastName,
    /// `sfdcContactId` (synced).
    SalesforceContactId,
    /// `sfdcLeadId` (synced).
    SalesforceLeadId,
    /// `sfdcAccountId` (synced).
    SalesforceAccountId,
    /// `sfdcOpptyId` (synced; often not returnable, see [`OpportunityRef`]).
    SalesforceOpportunityId,
    /// `company` (synced).
    Company,
    /// `title` (synced).
    Title,
    /// `email` (synced).
    Email,
    /// `phone` (synced).
    Phone,
    /// `linkedInProfileURL` (synced).
    LinkedinUrl,
    /// `leadSource` (synced).
    Source,
    /// `sfdcType`: Lead or Contact (qualification).
    SalesforceType,
    /// `sfdcLeadOwnerId`: the sales owner (qualification).
    OwnerId,
    /// `updatedAt`: bookkeeping only, never a change by itself.
    UpdatedAt,
    /// `createdAt`: bookkeeping only (where the bulk initial sync's windows start), not mirrored
    /// and read only on request (not in [`LEAD_FIELDS`]; its spec is [`CREATED_AT`]). Last.
    CreatedAt,
}

/// One row of the mapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// The field.
    pub field: LeadField,
    /// Marketo REST API name.
    pub rest_name: &'static str,
    /// snake_case name used in exports (CLI jsonl/csv).
    pub snake_name: &'static str,
    /// True for the 13 synced person fields.
    pub synced: bool,
    /// True when the field may not exist on an instance (check `describe` before requesting it).
    pub instance_dependent: bool,
}

const fn spec(
    field: LeadField,
    rest_name: &'static str,
    snake_name: &'static str,
    synced: bool,
    dep: bool,
) -> FieldSpec {
    FieldSpec { field, rest_name, snake_name, synced, instance_dependent: dep }
}

/// The mapping table: every Marketo field salesync reads in its syncs, in a fixed order (the
/// enum's, except [`LeadField::CreatedAt`], which is read only on request: see [`CREATED_AT`]).
pub const LEAD_FIELDS: [FieldSpec; 16] = [
    spec(LeadField::MarketoId, "id", "marketo_id", true, false),
    spec(LeadField::FirstName, "firstName", "first_name", true, false),
    spec(LeadField::LastName, "lastName", "last_name", true, false),
    spec(LeadField::SalesforceContactId, "sfdcContactId", "salesforce_contact_id", true, false),
    spec(LeadField::SalesforceLeadId, "sfdcLeadId", "salesforce_lead_id", true, false),
    spec(LeadField::SalesforceAccountId, "sfdcAccountId", "salesforce_account_id", true, false),
    spec(LeadField::SalesforceOpportunityId, "sfdcOpptyId", "salesforce_opportunity_id", true, true),
    spec(LeadField::Company, "company", "company", true, false),
    spec(LeadField::Title, "title", "title", true, false),
    spec(LeadField::Email, "email", "email", true, false),
    spec(LeadField::Phone, "phone", "phone", true, false),
    spec(LeadField::LinkedinUrl, "linkedInProfileURL", "linkedin_url", true, true),
    spec(LeadField::Source, "leadSource", "source", true, false),
    spec(LeadField::SalesforceType, "sfdcType", "salesforce_type", false, false),
    spec(LeadField::OwnerId, "sfdcLeadOwnerId", "owner_id", false, false),
    spec(LeadField::UpdatedAt, "updatedAt", "marketo_updated_at", false, false),
];

/// `createdAt`: bookkeeping read only on request (the bulk initial sync's probe for the oldest
/// lead), so it is not in [`LEAD_FIELDS`] and not among the [`requested_fields`].
pub const CREATED_AT: FieldSpec = spec(LeadField::CreatedAt, "createdAt", "marketo_created_at", false, false);

/// Number of [`LeadField`] variants.
const FIELD_COUNT: usize = LEAD_FIELDS.len() + 1;

impl LeadField {
    /// The field's row in [`LEAD_FIELDS`] (for [`LeadField::CreatedAt`]: [`CREATED_AT`]).
    pub fn spec(self) -> &'static FieldSpec {
        match self {
            LeadField::CreatedAt => &CREATED_AT,
            // LEAD_FIELDS is ordered like the enum.
            f => &LEAD_FIELDS[f as usize],
        }
    }

    /// Marketo REST API name.
    pub fn rest_name(self) -> &'static str {
        self.spec().rest_name
    }

    /// The field for a Marketo REST name.
    pub fn from_rest_name(name: &str) -> Option<LeadField> {
        Some(match name {
            "id" => LeadField::MarketoId,
            "firstName" => LeadField::FirstName,
            "lastName" => LeadField::LastName,
            "sfdcContactId" => LeadField::SalesforceContactId,
            "sfdcLeadId" => LeadField::SalesforceLeadId,
            "sfdcAccountId" => LeadField::SalesforceAccountId,
            "sfdcOpptyId" => LeadField::SalesforceOpportunityId,
            "company" => LeadField::Company,
            "title" => LeadField::Title,
            "email" => LeadField::Email,
            "phone" => LeadField::Phone,
            "linkedInProfileURL" => LeadField::LinkedinUrl,
            "leadSource" => LeadField::Source,
            "sfdcType" => LeadField::SalesforceType,
            "sfdcLeadOwnerId" => LeadField::OwnerId,
            "updatedAt" => LeadField::UpdatedAt,
            "createdAt" => LeadField::CreatedAt,
            _ => return None,
        })
    }
}

impl fmt::Display for LeadField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rest_name())
    }
}

/// The Marketo REST field names to request, given the names the instance's `describe` lists.
///
/// Instance-dependent fields (`sfdcOpptyId`, `linkedInProfileURL`) are requested only when
/// `available` says they exist (asking for an unknown field fails the whole call with 1006).
pub fn requested_fields(available: impl Fn(&str) -> bool) -> Vec<&'static str> {
    LEAD_FIELDS.iter().filter(|s| !s.instance_dependent || available(s.rest_name)).map(|s| s.rest_name).collect()
}

/// Every field of the table, for instances known to have all of them.
pub fn all_field_names() -> Vec<&'static str> {
    LEAD_FIELDS.iter().map(|s| s.rest_name).collect()
}

/// A Marketo lead parsed through the mapping table, before qualification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketoLead {
    /// Marketo id.
    pub id: i64,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// `sfdcContactId`.
    pub salesforce_contact_id: Option<SalesforceId>,
    /// `sfdcLeadId`.
    pub salesforce_lead_id: Option<SalesforceId>,
    /// `sfdcAccountId`.
    pub salesforce_account_id: Option<SalesforceId>,
    /// `sfdcOpptyId`, when the instance returned it.
    pub salesforce_opportunity_id: Option<SalesforceId>,
    /// Company.
    pub company: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// LinkedIn profile URL.
    pub linkedin_url: Option<String>,
    /// Lead source.
    pub source: Option<String>,
    /// `sfdcType` when it is Lead or Contact.
    pub salesforce_type: Option<SalesforceType>,
    /// `sfdcLeadOwnerId`.
    pub owner_id: Option<SalesforceId>,
    /// `updatedAt`.
    pub updated_at: Option<DateTime<Utc>>,
    /// `createdAt` (bookkeeping: not part of the mirror record).
    pub created_at: Option<DateTime<Utc>>,
}

/// Why a Marketo record does not qualify for the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disqualification {
    /// `sfdcType` is neither Lead nor Contact (the person is not in Salesforce).
    NotInSalesforce,
    /// No sales owner (`sfdcLeadOwnerId` empty).
    NoOwner,
}

impl fmt::Display for Disqualification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Disqualification::NotInSalesforce => "not a Salesforce lead or contact",
            Disqualification::NoOwner => "no sales owner",
        })
    }
}

/// The result of qualifying a lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualification {
    /// The lead qualifies; here is its mirror record.
    Qualified(Person),
    /// The lead does not qualify.
    Unqualified {
        /// Marketo id.
        marketo_id: i64,
        /// Why not.
        reason: Disqualification,
    },
}

impl Qualification {
    /// The Marketo id either way.
    pub fn marketo_id(&self) -> i64 {
        match self {
            Qualification::Qualified(p) => p.marketo_id,
            Qualification::Unqualified { marketo_id, .. } => *marketo_id,
        }
    }
}

impl MarketoLead {
    /// Qualifies the lead: a Salesforce Lead or Contact with a non-empty sales owner (any user or
    /// queue) qualifies. `now` becomes the record's `mirror_updated_at`.
    pub fn qualify(self, now: DateTime<Utc>) -> Qualification {
        let Some(salesforce_type) = self.salesforce_type else {
            return Qualification::Unqualified { marketo_id: self.id, reason: Disqualification::NotInSalesforce };
        };
        let Some(owner_id) = self.owner_id else {
            return Qualification::Unqualified { marketo_id: self.id, reason: Disqualification::NoOwner };
        };
        Qualification::Qualified(Person {
            marketo_id: self.id,
            first_name: self.first_name,
            last_name: self.last_name,
            salesforce_contact_id: self.salesforce_contact_id,
            salesforce_lead_id: self.salesforce_lead_id,
            salesforce_account_id: self.salesforce_account_id,
            salesforce_opportunity: self
                .salesforce_opportunity_id
                .map_or(OpportunityRef::Unresolved, OpportunityRef::Marketo),
            company: self.company,
            title: self.title,
            email: self.email,
            phone: self.phone,
            linkedin_url: self.linkedin_url,
            source: self.source,
            salesforce_type,
            owner_id,
            marketo_updated_at: self.updated_at,
            mirror_updated_at: now,
        })
    }

    /// Parses a lead from textual fields (a bulk-export CSV row): `(rest_name, value)` pairs where
    /// the literal `null` and the empty string mean absent. Unknown columns are ignored.
    pub fn from_text_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<MarketoLead, RecordError> {
        let mut raw = RawLead::default();
        for (name, value) in fields {
            if let Some(f) = LeadField::from_rest_name(name) {
                let v = if value == "null" { Val::Null } else { Val::Str(value.to_string()) };
                raw.set(f, v);
            }
        }
        raw.into_lead()
    }
}

impl Person {
    /// The value of one mapped field as text (Salesforce ids in 18-character form, the type as
    /// `Lead`/`Contact`, `updatedAt` in RFC 3339), for exports such as CSV or JSON lines.
    pub fn field_text(&self, field: LeadField) -> Option<String> {
        let id = |v: &Option<SalesforceId>| v.as_ref().map(|i| i.as_str().to_string());
        match field {
            LeadField::MarketoId => Some(self.marketo_id.to_string()),
            LeadField::FirstName => self.first_name.clone(),
            LeadField::LastName => self.last_name.clone(),
            LeadField::SalesforceContactId => id(&self.salesforce_contact_id),
            LeadField::SalesforceLeadId => id(&self.salesforce_lead_id),
            LeadField::SalesforceAccountId => id(&self.salesforce_account_id),
            LeadField::SalesforceOpportunityId => self.salesforce_opportunity.id().map(|i| i.as_str().to_string()),
            LeadField::Company => self.company.clone(),
            LeadField::Title => self.title.clone(),
            LeadField::Email => self.email.clone(),
            LeadField::Phone => self.phone.clone(),
            LeadField::LinkedinUrl => self.linkedin_url.clone(),
            LeadField::Source => self.source.clone(),
            LeadField::SalesforceType => Some(self.salesforce_type.as_str().to_string()),
            LeadField::OwnerId => Some(self.owner_id.as_str().to_string()),
            LeadField::UpdatedAt => self.marketo_updated_at.map(|t| t.to_rfc3339()),
            // Not kept in the mirror.
            LeadField::CreatedAt => None,
        }
    }
}

/// A lenient JSON value: reading one never fails, so one bad field can be reported per record.
#[derive(Debug, Clone, PartialEq, Default)]
enum Val {
    #[default]
    Absent,
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array,
    Object,
    /// A valid Salesforce id, parsed straight from the borrowed string (no allocation).
    Sfid(SalesforceId),
    /// A parsed `sfdcType` (`None`: neither Lead nor Contact).
    Type(Option<SalesforceType>),
    /// A parsed datetime.
    Time(DateTime<Utc>),
}

/// How a field's string values are read: parsed in place where the target type allows.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    Sfid,
    Type,
    Time,
}

impl Kind {
    fn of(f: LeadField) -> Kind {
        match f {
            LeadField::SalesforceContactId
            | LeadField::SalesforceLeadId
            | LeadField::SalesforceAccountId
            | LeadField::SalesforceOpportunityId
            | LeadField::OwnerId => Kind::Sfid,
            LeadField::SalesforceType => Kind::Type,
            LeadField::UpdatedAt | LeadField::CreatedAt => Kind::Time,
            _ => Kind::Text,
        }
    }
}

struct FieldSeed(Kind);

impl<'de> de::DeserializeSeed<'de> for FieldSeed {
    type Value = Val;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        d.deserialize_any(ValVisitor(self.0))
    }
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Absent | Val::Null => "null",
            Val::Str(_) | Val::Sfid(_) | Val::Type(_) | Val::Time(_) => "a string",
            Val::Int(_) | Val::Float(_) => "a number",
            Val::Bool(_) => "a boolean",
            Val::Array => "an array",
            Val::Object => "an object",
        }
    }

    fn display(&self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s.clone()),
            Val::Int(i) => Some(i.to_string()),
            Val::Float(f) => Some(f.to_string()),
            Val::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor(Kind::Text))
    }
}

struct ValVisitor(Kind);

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_none<E>(self) -> Result<Val, E> {
        Ok(Val::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Val, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Val, E> {
        Ok(Val::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Val, E> {
        Ok(Val::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Val, E> {
        Ok(i64::try_from(v).map_or(Val::Float(v as f64), Val::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Val, E> {
        Ok(Val::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Val, E> {
        let t = v.trim();
        Ok(match self.0 {
            Kind::Text => Val::Str(v.to_owned()),
            _ if t.is_empty() => Val::Null,
            Kind::Sfid => SalesforceId::parse(t).map_or_else(|_| Val::Str(v.to_owned()), Val::Sfid),
            Kind::Type if t.eq_ignore_ascii_case("lead") => Val::Type(Some(SalesforceType::Lead)),
            Kind::Type if t.eq_ignore_ascii_case("contact") => Val::Type(Some(SalesforceType::Contact)),
            Kind::Type => Val::Type(None),
            Kind::Time => parse_datetime(t).map_or_else(|| Val::Str(v.to_owned()), Val::Time),
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Val::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Val, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Object)
    }
}

/// Field values as read, before validation.
#[derive(Debug, Default)]
struct RawLead {
    vals: [Val; FIELD_COUNT],
}

impl RawLead {
    fn set(&mut self, f: LeadField, v: Val) {
        self.vals[f as usize] = v;
    }

    fn take(&mut self, f: LeadField) -> Val {
        std::mem::take(&mut self.vals[f as usize])
    }

    fn id(&self) -> Option<i64> {
        match &self.vals[LeadField::MarketoId as usize] {
            Val::Int(i) => Some(*i),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn into_lead(mut self) -> Result<MarketoLead, RecordError> {
        let id = match self.id() {
            Some(i) if i > 0 => i,
            Some(i) => {
                return Err(RecordError::new(
                    Some(i),
                    "id",
                    Some(&i.to_string()),
                    RecordProblem::Invalid("not a positive integer".into()),
                ));
            }
            None => {
                let v = self.take(LeadField::MarketoId);
                let problem = match &v {
                    Val::Absent | Val::Null => RecordProblem::Missing,
                    Val::Str(_) => RecordProblem::Invalid("not an integer".into()),
                    other => RecordProblem::WrongType { expected: "an integer".into(), found: other.kind().into() },
                };
                return Err(RecordError::new(None, "id", v.display().as_deref(), problem));
            }
        };
        let rid = Some(id);
        let salesforce_type = match self.take(LeadField::SalesforceType) {
            // Trimmed as the JSON reader trims (found by fuzz/lead_fields: " Lead" in a CSV row).
            Val::Str(s) if s.trim().eq_ignore_ascii_case("lead") => Some(SalesforceType::Lead),
            Val::Str(s) if s.trim().eq_ignore_ascii_case("contact") => Some(SalesforceType::Contact),
            Val::Type(t) => t,
            Val::Str(_) | Val::Absent | Val::Null => None,
            other => return Err(wrong(rid, LeadField::SalesforceType, &other, "a string")),
        };
        let updated_at = self.time(rid, LeadField::UpdatedAt)?;
        let created_at = self.time(rid, LeadField::CreatedAt)?;
        Ok(MarketoLead {
            id,
            first_name: self.text(rid, LeadField::FirstName)?,
            last_name: self.text(rid, LeadField::LastName)?,
            salesforce_contact_id: self.sfid(rid, LeadField::SalesforceContactId)?,
            salesforce_lead_id: self.sfid(rid, LeadField::SalesforceLeadId)?,
            salesforce_account_id: self.sfid(rid, LeadField::SalesforceAccountId)?,
            salesforce_opportunity_id: self.sfid(rid, LeadField::SalesforceOpportunityId)?,
            company: self.text(rid, LeadField::Company)?,
            title: self.text(rid, LeadField::Title)?,
            email: self.text(rid, LeadField::Email)?,
            phone: self.text(rid, LeadField::Phone)?,
            linkedin_url: self.text(rid, LeadField::LinkedinUrl)?,
            source: self.text(rid, LeadField::Source)?,
            salesforce_type,
            owner_id: self.sfid(rid, LeadField::OwnerId)?,
            updated_at,
            created_at,
        })
    }

    /// A datetime field: ISO-8601 strings parsed, empty → absent.
    fn time(&mut self, rid: Option<i64>, f: LeadField) -> Result<Option<DateTime<Utc>>, RecordError> {
        match self.take(f) {
            Val::Time(t) => Ok(Some(t)),
            Val::Str(s) if s.trim().is_empty() => Ok(None),
            Val::Str(s) => parse_datetime(&s).map(Some).ok_or_else(|| {
                RecordError::new(
                    rid,
                    f.rest_name(),
                    Some(&s),
                    RecordProblem::Invalid("not an ISO-8601 datetime".into()),
                )
            }),
            Val::Absent | Val::Null => Ok(None),
            other => Err(wrong(rid, f, &other, "a datetime string")),
        }
    }

    /// A text field: strings kept as-is (unicode intact), empty or whitespace-only → absent.
    fn text(&mut self, rid: Option<i64>, f: LeadField) -> Result<Option<String>, RecordError> {
        match self.take(f) {
            Val::Str(s) if s.trim().is_empty() => Ok(None),
            Val::Str(s) => Ok(Some(s)),
            Val::Absent | Val::Null => Ok(None),
            other => Err(wrong(rid, f, &other, "a string")),
        }
    }

    fn sfid(&mut self, rid: Option<i64>, f: LeadField) -> Result<Option<SalesforceId>, RecordError> {
        match self.take(f) {
            Val::Sfid(id) => Ok(Some(id)),
            Val::Str(s) if s.trim().is_empty() => Ok(None),
            Val::Str(s) => SalesforceId::parse(s.trim())
                .map(Some)
                .map_err(|e| RecordError::new(rid, f.rest_name(), Some(&s), RecordProblem::Invalid(e.to_string()))),
            Val::Absent | Val::Null => Ok(None),
            other => Err(wrong(rid, f, &other, "a Salesforce id string")),
        }
    }
}

fn wrong(rid: Option<i64>, f: LeadField, v: &Val, expected: &str) -> RecordError {
    RecordError::new(
        rid,
        f.rest_name(),
        v.display().as_deref(),
        RecordProblem::WrongType { expected: expected.into(), found: v.kind().into() },
    )
}

/// Parses the datetime forms Marketo uses: `2016-05-17T22:11:45Z`, `…+0000`, `…-08:00`, with or
/// without fractional seconds, and a bare `YYYY-MM-DDTHH:MM:SS` taken as UTC.
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::<FixedOffset>::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// The four hex digits of a `\u` escape starting at `at`.
fn hex4(body: &[u8], at: usize) -> Option<u16> {
    let digits = body.get(at..at + 4)?;
    u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A JSON text with every lone UTF-16 surrogate escape (`\uD800`–`\uDFFF` not forming a pair)
/// replaced by `\uFFFD`, or `None` when it has none.
///
/// `serde_json` refuses such escapes (`"\ud83d"`: a Java server cut a string inside an emoji).
/// Connectors read a failed body again through this, so one such value does not fail its whole
/// page on every retry. Escapes are found without tracking strings: a backslash outside a string
/// is invalid JSON anyway.
pub fn repair_lone_surrogates(body: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            i += 1;
            continue;
        }
        if body.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(unit) = hex4(body, i + 2) else {
            i += 2;
            continue;
        };
        let paired = (0xD800..=0xDBFF).contains(&unit)
            && body.get(i + 6) == Some(&b'\\')
            && body.get(i + 7) == Some(&b'u')
            && hex4(body, i + 8).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
        if paired {
            i += 12;
        } else if (0xD800..=0xDFFF).contains(&unit) {
            let o = out.get_or_insert_with(|| Vec::with_capacity(body.len()));
            o.extend_from_slice(&body[copied..i]);
            o.extend_from_slice(b"\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    out.map(|mut o| {
        o.extend_from_slice(&body[copied..]);
        o
    })
}

/// One element of a Marketo `result` array, mapped through the table.
///
/// Deserializing a `LeadRecord` never fails on any JSON value: a record with a bad field (wrong
/// type, invalid Salesforce id, unreadable datetime) or a non-object becomes `Err` with a
/// [`RecordError`] naming the record, field and value, so one bad record never fails its page.
/// Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadRecord(pub Result<MarketoLead, RecordError>);

impl<'de> Deserialize<'de> for LeadRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LeadRecord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Marketo lead record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<LeadRecord, A::Error> {
                let mut raw = RawLead::default();
                while let Some(key) = a.next_key::<Key>()? {
                    match key.0 {
                        Some(f) => raw.set(f, a.next_value_seed(FieldSeed(Kind::of(f)))?),
                        None => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(LeadRecord(raw.into_lead()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<LeadRecord, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(not_object())
            }
            fn visit_unit<E: de::Error>(self) -> Result<LeadRecord, E> {
                Ok(not_object())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<LeadRecord, E> {
                Ok(not_object())
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<LeadRecord, E> {
                Ok(not_object())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<LeadRecord, E> {
                Ok(not_object())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<LeadRecord, E> {
                Ok(not_object())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<LeadRecord, E> {
                Ok(not_object())
            }
        }
        d.deserialize_any(V)
    }
}

fn not_object() -> LeadRecord {
    LeadRecord(Err(RecordError::new(None, "(record)", None, RecordProblem::NotAnObject)))
}

/// A map key matched against the table without allocating.
struct Key(Option<LeadField>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(LeadField::from_rest_name(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<MarketoLead, RecordError> {
        serde_json::from_value::<LeadRecord>(v).unwrap().0
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    #[test]
    fn table_is_ordered_like_the_enum_and_round_trips_names() {
        for (i, s) in LEAD_FIELDS.iter().enumerate() {
            assert_eq!(s.field as usize, i);
            assert_eq!(LeadField::from_rest_name(s.rest_name), Some(s.field));
        }
        assert_eq!(LEAD_FIELDS.iter().filter(|s| s.synced).count(), 13);
        assert_eq!(LeadField::CreatedAt as usize, LEAD_FIELDS.len());
        assert_eq!(LeadField::from_rest_name("createdAt"), Some(LeadField::CreatedAt));
        assert_eq!(LeadField::CreatedAt.spec().rest_name, "createdAt");
    }

    #[test]
    fn requested_fields_follow_instance_describe() {
        let without = requested_fields(|_| false);
        assert!(!without.contains(&"sfdcOpptyId") && !without.contains(&"linkedInProfileURL"));
        assert!(without.contains(&"sfdcLeadOwnerId") && without.contains(&"sfdcType") && without.contains(&"id"));
        let with = requested_fields(|n| n == "linkedInProfileURL");
        assert!(with.contains(&"linkedInProfileURL") && !with.contains(&"sfdcOpptyId"));
        assert_eq!(all_field_names().len(), 16);
        assert!(!requested_fields(|_| true).contains(&"createdAt"));
    }

    #[test]
    fn maps_a_full_contact() {
        let lead = parse(json!({
            "id": 1001, "firstName": "Zoë", "lastName": "Müller", "email": "zoe@example.com",
            "sfdcType": "Contact", "sfdcContactId": "003d000000Yp8Uz", "sfdcAccountId": "001A0000006Vm9rIAC",
            "sfdcLeadOwnerId": "0055g00000AbCdE", "company": "Acme", "title": "CTO", "phone": "+1 415",
            "linkedInProfileURL": "https://www.linkedin.com/in/zoe", "leadSource": "Web",
            "updatedAt": "2026-02-17T22:31:49Z", "someCustomField__c": {"nested": [1, 2]}
        }))
        .unwrap();
        assert_eq!(lead.first_name.as_deref(), Some("Zoë"));
        assert_eq!(lead.salesforce_contact_id.as_ref().unwrap().as_str(), "003d000000Yp8UzAAJ");
        let Qualification::Qualified(p) = lead.qualify(now()) else { panic!("should qualify") };
        assert_eq!(p.salesforce_type, SalesforceType::Contact);
        assert_eq!(p.salesforce_opportunity, OpportunityRef::Unresolved);
        assert_eq!(p.mirror_updated_at, now());
        assert_eq!(p.marketo_updated_at, Some(Utc.with_ymd_and_hms(2026, 2, 17, 22, 31, 49).unwrap()));
    }

    #[test]
    fn reads_created_at_as_bookkeeping() {
        let lead = parse(json!({"id": 7, "createdAt": "2024-03-05T10:20:30Z"})).unwrap();
        assert_eq!(lead.created_at, Some(Utc.with_ymd_and_hms(2024, 3, 5, 10, 20, 30).unwrap()));
        let csv = MarketoLead::from_text_fields([("id", "7"), ("createdAt", "null")]).unwrap();
        assert_eq!(csv.created_at, None);
        assert!(parse(json!({"id": 7, "createdAt": "yesterday"})).is_err());
        assert!(!LeadField::CreatedAt.spec().synced && !LeadField::CreatedAt.spec().instance_dependent);
    }

    #[test]
    fn field_text_covers_the_table() {
        let lead =
            parse(json!({"id": 5, "firstName": "Zoë", "sfdcType": "Contact", "sfdcLeadOwnerId": "0055g00000AbCdE"}))
                .unwrap();
        let Qualification::Qualified(p) = lead.qualify(now()) else { panic!() };
        assert_eq!(p.field_text(LeadField::MarketoId).as_deref(), Some("5"));
        assert_eq!(p.field_text(LeadField::FirstName).as_deref(), Some("Zoë"));
        assert_eq!(p.field_text(LeadField::SalesforceType).as_deref(), Some("Contact"));
        assert_eq!(p.field_text(LeadField::OwnerId).as_deref(), Some("0055g00000AbCdEAAV"));
        assert_eq!(p.field_text(LeadField::Email), None);
    }

    #[test]
    fn opportunity_from_marketo_when_present() {
        let lead = parse(json!({"id": 5, "sfdcType": "Contact", "sfdcLeadOwnerId": "0055g00000AbCdE", "sfdcOpptyId": "0065g00000AbCdE"})).unwrap();
        let Qualification::Qualified(p) = lead.qualify(now()) else { panic!() };
        assert!(matches!(p.salesforce_opportunity, OpportunityRef::Marketo(_)));
        assert!(!p.salesforce_opportunity.needs_lookup());
    }

    #[test]
    fn qualification_rules() {
        let no_owner = parse(json!({"id": 1, "sfdcType": "Lead", "sfdcLeadId": "00Q5g00000QwErT"})).unwrap();
        assert_eq!(
            no_owner.qualify(now()),
            Qualification::Unqualified { marketo_id: 1, reason: Disqualification::NoOwner }
        );
        let empty_owner = parse(json!({"id": 2, "sfdcType": "Lead", "sfdcLeadOwnerId": ""})).unwrap();
        assert_eq!(
            empty_owner.qualify(now()),
            Qualification::Unqualified { marketo_id: 2, reason: Disqualification::NoOwner }
        );
        let not_sf = parse(json!({"id": 3, "sfdcLeadOwnerId": "0055g00000AbCdE"})).unwrap();
        assert_eq!(
            not_sf.qualify(now()),
            Qualification::Unqualified { marketo_id: 3, reason: Disqualification::NotInSalesforce }
        );
        let queue_owner = parse(json!({"id": 4, "sfdcType": "Lead", "sfdcLeadOwnerId": "00G5g00000AbCdE"})).unwrap();
        assert!(matches!(queue_owner.qualify(now()), Qualification::Qualified(_)));
    }

    #[test]
    fn nulls_missing_and_empty_strings_are_absent() {
        let lead = parse(json!({"id": "77", "firstName": null, "lastName": "", "email": "   "})).unwrap();
        assert_eq!(lead.id, 77);
        assert_eq!((lead.first_name, lead.last_name, lead.email), (None, None, None));
    }

    #[test]
    fn bad_records_fail_alone_with_clear_errors() {
        let e = parse(json!({"firstName": "x"})).unwrap_err();
        assert_eq!((e.record_id, e.field.as_str(), &e.problem), (None, "id", &RecordProblem::Missing));
        let e = parse(json!({"id": 9, "firstName": 12})).unwrap_err();
        assert_eq!(e.record_id, Some(9));
        assert_eq!(e.field, "firstName");
        assert!(matches!(e.problem, RecordProblem::WrongType { .. }));
        let e = parse(json!({"id": 9, "sfdcLeadId": "short"})).unwrap_err();
        assert_eq!(e.field, "sfdcLeadId");
        assert_eq!(e.value.as_deref(), Some("short"));
        let e = parse(json!({"id": 9, "updatedAt": "yesterday"})).unwrap_err();
        assert_eq!(e.field, "updatedAt");
        let e = parse(json!({"id": -3})).unwrap_err();
        assert_eq!(e.field, "id");
        assert_eq!(parse(json!([1, 2])).unwrap_err().problem, RecordProblem::NotAnObject);
        assert_eq!(parse(json!("x")).unwrap_err().problem, RecordProblem::NotAnObject);
    }

    #[test]
    fn one_bad_record_never_fails_the_page() {
        #[derive(Deserialize)]
        struct Page {
            result: Vec<LeadRecord>,
        }
        let body = r#"{"result":[{"id":1,"firstName":"A"},{"id":"x"},7,{"id":3,"title":["no"]},{"id":4}]}"#;
        let page: Page = serde_json::from_str(body).unwrap();
        let oks: Vec<i64> = page.result.iter().filter_map(|r| r.0.as_ref().ok().map(|l| l.id)).collect();
        assert_eq!(oks, vec![1, 4]);
        assert_eq!(page.result.iter().filter(|r| r.0.is_err()).count(), 3);
    }

    #[test]
    fn lenient_datetimes() {
        let want = Utc.with_ymd_and_hms(2026, 2, 17, 22, 31, 49).unwrap();
        for s in [
            "2026-02-17T22:31:49Z",
            "2026-02-17T22:31:49+0000",
            "2026-02-17T14:31:49-08:00",
            "2026-02-17T22:31:49.000Z",
            "2026-02-17T22:31:49",
        ] {
            assert_eq!(parse_datetime(s), Some(want), "{s}");
        }
        assert_eq!(parse_datetime("17/02/2026"), None);
    }

    #[test]
    fn csv_text_fields_use_null_literal() {
        let lead = MarketoLead::from_text_fields([
            ("id", "12"),
            ("firstName", "null"),
            ("lastName", "O'Brien"),
            ("sfdcType", "Lead"),
            ("sfdcLeadOwnerId", "0055g00000AbCdE"),
            ("unknownColumn", "whatever"),
        ])
        .unwrap();
        assert_eq!(lead.id, 12);
        assert_eq!(lead.first_name, None);
        assert_eq!(lead.last_name.as_deref(), Some("O'Brien"));
        assert!(matches!(lead.qualify(now()), Qualification::Qualified(_)));
    }

    /// Regression (fuzz/lead_fields): a bulk CSV `sfdcType` padded with blanks read as "not in
    /// Salesforce", while the same value in REST JSON read as Lead.
    #[test]
    fn csv_and_json_read_padded_sfdc_type_alike() {
        for (text, want) in [(" Lead", SalesforceType::Lead), ("contact ", SalesforceType::Contact)] {
            let csv = MarketoLead::from_text_fields([("id", "12"), ("sfdcType", text)]).unwrap();
            let json = parse(json!({"id": 12, "sfdcType": text})).unwrap();
            assert_eq!(csv.salesforce_type, Some(want), "{text:?}");
            assert_eq!(csv, json);
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
                ".{0,20}".prop_map(serde_json::Value::from),
                "[0-9A-Za-z]{15,18}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(2, 8, 4, |inner| prop::collection::vec(inner, 0..3).prop_map(serde_json::Value::from))
        }

        fn arb_record() -> impl Strategy<Value = serde_json::Value> {
            let names = prop::sample::select(vec![
                "id",
                "firstName",
                "lastName",
                "email",
                "sfdcType",
                "sfdcLeadOwnerId",
                "sfdcLeadId",
                "sfdcContactId",
                "sfdcAccountId",
                "sfdcOpptyId",
                "company",
                "title",
                "phone",
                "linkedInProfileURL",
                "leadSource",
                "updatedAt",
                "extra",
            ]);
            prop::collection::vec((names, arb_json()), 0..12)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        }

        proptest! {
            #[test]
            fn mapping_never_panics(v in prop_oneof![arb_record(), arb_json()]) {
                let text = serde_json::to_string(&v).unwrap();
                let rec: LeadRecord = serde_json::from_str(&text).unwrap();
                if let Ok(lead) = rec.0 {
                    let _ = lead.qualify(Utc::now());
                }
            }

            #[test]
            fn mapping_then_serializing_round_trips(
                id in 1i64..i64::MAX, first in proptest::option::of(".{1,20}"), email in proptest::option::of("[a-z]{1,8}@[a-z]{1,8}\\.com"),
                lead_type in prop::bool::ANY, owner in "[0-9A-Za-z]{15}",
            ) {
                let first = first.filter(|s| !s.trim().is_empty());
                let v = json!({"id": id, "firstName": first, "email": email, "sfdcType": if lead_type {"Lead"} else {"Contact"}, "sfdcLeadOwnerId": owner});
                let lead = serde_json::from_value::<LeadRecord>(v).unwrap().0.unwrap();
                let back: MarketoLead = serde_json::from_str(&serde_json::to_string(&lead).unwrap()).unwrap();
                prop_assert_eq!(&back, &lead);
                if let Qualification::Qualified(p) = lead.qualify(now()) {
                    let back: Person = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
                    prop_assert_eq!(back, p);
                } else {
                    prop_assert!(false, "a record with type and owner qualifies");
                }
            }
        }
    }
}
