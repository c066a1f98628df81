//! The Salesforce port.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::Page;
use super::marketo::RecordOutcome;
use crate::error::Result;
use crate::sfid::SalesforceId;

/// A Task to create or upsert (by the external-id field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskWrite {
    /// salesync's id, written to the external-id field: a retried upsert never makes a second Task.
    pub external_id: String,
    /// WhoId (Lead or Contact).
    pub who_id: Option<SalesforceId>,
    /// WhatId (Opportunity or Account).
    pub what_id: Option<SalesforceId>,
    /// OwnerId (the acting seller), when mapped.
    pub owner_id: Option<SalesforceId>,
    /// Subject (≤255).
    pub subject: String,
    /// Status ("Completed", "Not Started").
    pub status: String,
    /// Priority ("Normal", "High").
    pub priority: String,
    /// ActivityDate.
    pub activity_date: Option<NaiveDate>,
    /// Description.
    pub description: Option<String>,
    /// TaskSubtype (Email, Call, Task): create-only in Salesforce.
    pub task_subtype: Option<String>,
    /// Type (Email, Call, Reply), when the org has the value.
    pub task_type: Option<String>,
    /// CallDurationInSeconds.
    pub call_duration_secs: Option<u32>,
    /// CallDisposition.
    pub call_disposition: Option<String>,
    /// Extra custom fields (API name → value), filled when configured.
    pub custom_fields: Vec<(String, serde_json::Value)>,
}

/// A Task as read from Salesforce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task id.
    pub id: SalesforceId,
    /// The external id, when salesync wrote it.
    pub external_id: Option<String>,
    /// WhoId.
    pub who_id: Option<SalesforceId>,
    /// Subject.
    pub subject: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Priority.
    pub priority: Option<String>,
    /// ActivityDate.
    pub activity_date: Option<NaiveDate>,
    /// Description.
    pub description: Option<String>,
    /// TaskSubtype.
    pub task_subtype: Option<String>,
    /// CreatedDate.
    pub created_at: DateTime<Utc>,
    /// SystemModstamp.
    pub modified_at: DateTime<Utc>,
    /// IsDeleted.
    pub deleted: bool,
}

/// A Lead or Contact with its opt-out flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOutRecord {
    /// Lead or Contact id.
    pub id: SalesforceId,
    /// Email.
    pub email: Option<String>,
    /// The opt-out field's value.
    pub opted_out: bool,
    /// SystemModstamp.
    pub modified_at: DateTime<Utc>,
}

/// A Lead or Contact found by email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonRef {
    /// Lead or Contact id.
    pub id: SalesforceId,
    /// For converted leads: the contact it became.
    pub converted_contact_id: Option<SalesforceId>,
    /// Account id (contacts).
    pub account_id: Option<SalesforceId>,
}

/// A lead's conversion, if it was converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadConversion {
    /// The lead.
    pub lead_id: SalesforceId,
    /// IsConverted.
    pub converted: bool,
    /// ConvertedContactId.
    pub contact_id: Option<SalesforceId>,
    /// ConvertedAccountId.
    pub account_id: Option<SalesforceId>,
    /// ConvertedOpportunityId.
    pub opportunity_id: Option<SalesforceId>,
}

/// One OpportunityContactRole of an open opportunity, as the opportunity rule weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleCandidate<'a> {
    /// IsPrimary.
    pub primary: bool,
    /// The opportunity's LastModifiedDate (SystemModstamp when absent).
    pub modified_at: DateTime<Utc>,
    /// The opportunity.
    pub opportunity: &'a SalesforceId,
}

/// The opportunity rule for a contact: among its roles on *open* opportunities, a primary role
/// first, then the most recently modified opportunity, then the smallest id. `None` when it has
/// no role on an open opportunity.
pub fn choose_opportunity<'a>(roles: impl IntoIterator<Item = RoleCandidate<'a>>) -> Option<&'a SalesforceId> {
    roles
        .into_iter()
        .max_by(|a, b| (a.primary, a.modified_at, b.opportunity).cmp(&(b.primary, b.modified_at, a.opportunity)))
        .map(|r| r.opportunity)
}

/// Every contact's and converted lead's opportunity in an org (see
/// [`SalesforceApi::opportunity_links`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityLinks {
    /// Contacts with an open opportunity, and the one the rule chose.
    pub contacts: std::collections::HashMap<SalesforceId, SalesforceId>,
    /// Converted leads, and the opportunity created by the conversion (`None`: converted
    /// without one).
    pub converted_leads: std::collections::HashMap<SalesforceId, Option<SalesforceId>>,
}

impl OpportunityLinks {
    /// A contact's opportunity (`None`: it has none).
    pub fn contact(&self, id: &SalesforceId) -> Option<SalesforceId> {
        self.contacts.get(id).cloned()
    }

    /// A lead's opportunity: that of its conversion (`None`: not converted, or without one).
    pub fn lead(&self, id: &SalesforceId) -> Option<SalesforceId> {
        self.converted_leads.get(id).cloned().flatten()
    }
}

/// What changed in Salesforce after a moment that can change people's opportunity (see
/// [`SalesforceApi::opportunity_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpportunityChanges {
    /// Contacts with an OpportunityContactRole created, changed or deleted, or a role on an
    /// Opportunity that changed (closed, reopened, re-dated), each once.
    pub contacts: Vec<SalesforceId>,
    /// Converted leads whose record changed (a conversion included), each once.
    pub converted_leads: Vec<SalesforceId>,
    /// The newest SystemModstamp among the records read (`None`: nothing changed).
    pub newest: Option<DateTime<Utc>>,
    /// More than the asked-for number of people changed: reading stopped early, and the lists
    /// are incomplete (a mass change; compare everyone with [`SalesforceApi::opportunity_links`]
    /// instead).
    pub truncated: bool,
}

/// A deleted record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedRecord {
    /// Id.
    pub id: SalesforceId,
    /// When it was deleted.
    pub deleted_at: DateTime<Utc>,
}

/// The answer of the `deleted` replication endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedSince {
    /// Deleted records.
    pub records: Vec<DeletedRecord>,
    /// The earliest date the org still has deletions for; a start before it means a gap.
    pub earliest_available: Option<DateTime<Utc>>,
    /// The end of the covered window.
    pub latest_covered: Option<DateTime<Utc>>,
}

/// A Salesforce user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: SalesforceId,
    /// Email.
    pub email: Option<String>,
    /// Full name.
    pub name: Option<String>,
}

/// Daily API usage from `Sforce-Limit-Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUsage {
    /// Calls used in the last 24 hours.
    pub used: u64,
    /// Daily allocation.
    pub max: u64,
}

impl ApiUsage {
    /// Calls left.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// Everything salesync needs from Salesforce. Implemented by `salesync-salesforce`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SalesforceApi: Send + Sync + std::fmt::Debug {
    /// Upserts up to 200 Tasks by the external-id field; one outcome per input, in order.
    async fn upsert_tasks(&self, tasks: &[TaskWrite]) -> Result<Vec<RecordOutcome>>;

    /// Updates fields of existing Tasks by id (≤200); one outcome per input, in order.
    async fn update_tasks(
        &self,
        updates: &[(SalesforceId, Vec<(String, serde_json::Value)>)],
    ) -> Result<Vec<RecordOutcome>>;

    /// Deletes a Task.
    async fn delete_task(&self, id: &SalesforceId) -> Result<()>;

    /// One page of Tasks whose SystemModstamp is after `since` (oldest first).
    async fn tasks_modified_since(&self, since: DateTime<Utc>, page_token: Option<String>) -> Result<Page<TaskRecord>>;

    /// Tasks deleted in `[start, end)`.
    async fn tasks_deleted_between(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<DeletedSince>;

    /// Sets the opt-out field to true on Leads/Contacts (≤200); one outcome per input.
    async fn set_opted_out(&self, ids: &[SalesforceId], field: &str) -> Result<Vec<RecordOutcome>>;

    /// One page of Leads and Contacts opted out in `field` and modified after `since`.
    async fn opted_out_since(
        &self,
        field: &str,
        since: DateTime<Utc>,
        page_token: Option<String>,
    ) -> Result<Page<OptOutRecord>>;

    /// For each contact, its opportunity: the most recently modified open one through
    /// OpportunityContactRole, primary first (`None` when it has none).
    async fn opportunities_for_contacts(
        &self,
        contact_ids: &[SalesforceId],
    ) -> Result<Vec<(SalesforceId, Option<SalesforceId>)>>;

    /// Conversion state of leads.
    async fn lead_conversions(&self, lead_ids: &[SalesforceId]) -> Result<Vec<LeadConversion>>;

    /// The opportunity of every contact and converted lead of the org, read in a few large
    /// pages instead of one lookup per person (the initial sync of a big org joins against it).
    /// Contacts are chosen by the same rule as [`opportunities_for_contacts`](Self::opportunities_for_contacts)
    /// ([`choose_opportunity`]); a contact or lead that is not listed has none.
    async fn opportunity_links(&self) -> Result<OpportunityLinks>;

    /// The contacts and converted leads whose opportunity may have changed since `since`: contact
    /// roles created, changed or deleted (deleted ones through `queryAll`), opportunities whose
    /// record changed (their roles' contacts), and converted leads, all by SystemModstamp after
    /// `since`. The caller recomputes each with [`opportunities_for_contacts`](Self::opportunities_for_contacts)
    /// / [`lead_conversions`](Self::lead_conversions). Reading stops once more than `limit`
    /// contacts and leads are named (`truncated`).
    async fn opportunity_changes(&self, since: DateTime<Utc>, limit: usize) -> Result<OpportunityChanges>;

    /// Leads and Contacts with this email.
    async fn find_by_email(&self, email: &str) -> Result<Vec<PersonRef>>;

    /// Active users.
    async fn active_users(&self) -> Result<Vec<User>>;

    /// The Task `Type` picklist values of the org.
    async fn task_type_values(&self) -> Result<Vec<String>>;

    /// Daily API usage as last reported by `Sforce-Limit-Info`, if any call was made.
    fn api_usage(&self) -> Option<ApiUsage>;
}
