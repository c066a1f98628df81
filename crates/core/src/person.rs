//! The mirror record: one qualified Marketo person with the 13 synced fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sfid::SalesforceId;

/// Whether the person is a Salesforce Lead or Contact (Marketo's `sfdcType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SalesforceType {
    /// A Salesforce Lead.
    Lead,
    /// A Salesforce Contact.
    Contact,
}

impl SalesforceType {
    /// Marketo's spelling (`"Lead"` / `"Contact"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SalesforceType::Lead => "Lead",
            SalesforceType::Contact => "Contact",
        }
    }
}

/// Where the person's Salesforce opportunity id came from.
///
/// Marketo does not reliably return `sfdcOpptyId` (it is documented only as a filter type), so the
/// mapping takes it when present and otherwise leaves the link [`OpportunityRef::Unresolved`] for
/// the engine to fill from Salesforce (OpportunityContactRole for contacts,
/// ConvertedOpportunityId for converted leads).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(tag = "source", content = "id", rename_all = "snake_case")]
pub enum OpportunityRef {
    /// Not known yet: Marketo gave none and Salesforce has not been asked.
    #[default]
    Unresolved,
    /// Marketo returned this id in `sfdcOpptyId`.
    Marketo(SalesforceId),
    /// Looked up in Salesforce; `None` when the person has no opportunity.
    Salesforce(Option<SalesforceId>),
}

impl OpportunityRef {
    /// The opportunity id, when known.
    pub fn id(&self) -> Option<&SalesforceId> {
        match self {
            OpportunityRef::Unresolved | OpportunityRef::Salesforce(None) => None,
            OpportunityRef::Marketo(id) | OpportunityRef::Salesforce(Some(id)) => Some(id),
        }
    }

    /// True when the engine should look the opportunity up in Salesforce.
    pub fn needs_lookup(&self) -> bool {
        matches!(self, OpportunityRef::Unresolved)
    }
}

/// One person in the mirror, keyed by Marketo id.
///
/// The 13 synced fields of the product are: first name, last name, Salesforce contact id,
/// Salesforce lead id, Salesforce account id, Salesforce opportunity id, Marketo id, company,
/// title, email, phone, LinkedIn profile URL and source. (The original product document's
/// heading says "11 fields" but lists these 13; salesync implements the 13.) Beside them the
/// mirror keeps the Salesforce type, the sales owner, Marketo's `updatedAt` and the time the
/// mirror last changed the record.
///
/// Hosts read people; only sync decisions write them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Marketo lead id: the mirror key.
    pub marketo_id: i64,
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Salesforce Contact id.
    pub salesforce_contact_id: Option<SalesforceId>,
    /// Salesforce Lead id.
    pub salesforce_lead_id: Option<SalesforceId>,
    /// Salesforce Account id.
    pub salesforce_account_id: Option<SalesforceId>,
    /// Salesforce Opportunity id, with its provenance.
    pub salesforce_opportunity: OpportunityRef,
    /// Company.
    pub company: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Email address (not unique: duplicates are kept).
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// LinkedIn profile URL.
    pub linkedin_url: Option<String>,
    /// Person source (Marketo `leadSource`).
    pub source: Option<String>,
    /// Salesforce Lead or Contact.
    pub salesforce_type: SalesforceType,
    /// The Salesforce sales owner (a User, or for leads possibly a Queue).
    pub owner_id: SalesforceId,
    /// Marketo's `updatedAt` of the record the mirror last saw.
    pub marketo_updated_at: Option<DateTime<Utc>>,
    /// When the mirror last inserted or changed this record.
    pub mirror_updated_at: DateTime<Utc>,
}

impl Person {
    /// The Salesforce opportunity id, when known.
    pub fn salesforce_opportunity_id(&self) -> Option<&SalesforceId> {
        self.salesforce_opportunity.id()
    }

    /// The Salesforce id activities should be logged against: the contact id for contacts, the
    /// lead id for leads, falling back to whichever is present.
    pub fn salesforce_who_id(&self) -> Option<&SalesforceId> {
        match self.salesforce_type {
            SalesforceType::Contact => self.salesforce_contact_id.as_ref().or(self.salesforce_lead_id.as_ref()),
            SalesforceType::Lead => self.salesforce_lead_id.as_ref().or(self.salesforce_contact_id.as_ref()),
        }
    }
}
