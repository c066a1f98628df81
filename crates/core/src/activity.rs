//! Sales activities, Salesforce task kinds, reminder tasks, unsubscribes and admin settings.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::sfid::SalesforceId;

/// Marketo's limit on a custom activity's attribute array (error 1049 beyond it).
pub const MAX_ATTRIBUTES_BYTES: usize = 65_536;
/// Salesforce Task Subject length.
pub const MAX_SUBJECT_CHARS: usize = 255;

/// The eight sales activity kinds logged to Marketo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SalesActivityKind {
    /// Send Sales Email.
    SendSalesEmail,
    /// Open Sales Email.
    OpenSalesEmail,
    /// Click Sales Email.
    ClickSalesEmail,
    /// Replied to Sales Email.
    RepliedSalesEmail,
    /// Sales Email Bounced.
    SalesEmailBounced,
    /// Received Sales Call.
    SalesCall,
    /// Add to Sales Campaign.
    AddedToSalesCampaign,
    /// Remove from Sales Campaign.
    RemovedFromSalesCampaign,
}

impl SalesActivityKind {
    /// All eight, in a fixed order.
    pub const ALL: [SalesActivityKind; 8] = [
        Self::SendSalesEmail,
        Self::OpenSalesEmail,
        Self::ClickSalesEmail,
        Self::RepliedSalesEmail,
        Self::SalesEmailBounced,
        Self::SalesCall,
        Self::AddedToSalesCampaign,
        Self::RemovedFromSalesCampaign,
    ];

    /// The product's display name of the activity in Marketo.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::SendSalesEmail => "Send Sales Email",
            Self::OpenSalesEmail => "Open Sales Email",
            Self::ClickSalesEmail => "Click Sales Email",
            Self::RepliedSalesEmail => "Replied to Sales Email",
            Self::SalesEmailBounced => "Sales Email Bounced",
            Self::SalesCall => "Received Sales Call",
            Self::AddedToSalesCampaign => "Add to Sales Campaign",
            Self::RemovedFromSalesCampaign => "Remove from Sales Campaign",
        }
    }

    /// The kebab-case name (`send-sales-email`, …) used by the CLI and serde.
    pub fn slug(self) -> &'static str {
        match self {
            Self::SendSalesEmail => "send-sales-email",
            Self::OpenSalesEmail => "open-sales-email",
            Self::ClickSalesEmail => "click-sales-email",
            Self::RepliedSalesEmail => "replied-sales-email",
            Self::SalesEmailBounced => "sales-email-bounced",
            Self::SalesCall => "sales-call",
            Self::AddedToSalesCampaign => "added-to-sales-campaign",
            Self::RemovedFromSalesCampaign => "removed-from-sales-campaign",
        }
    }

    /// Parses the kebab-case name.
    pub fn from_slug(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.slug() == s)
    }

    /// The Salesforce Task kind this activity is logged as, if any (emails, replies and calls).
    pub fn task_kind(self) -> Option<TaskKind> {
        match self {
            Self::SendSalesEmail => Some(TaskKind::Email),
            Self::RepliedSalesEmail => Some(TaskKind::Reply),
            Self::SalesCall => Some(TaskKind::Call),
            _ => None,
        }
    }
}

/// Kinds of Salesforce Task salesync writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// A sent sales email (TaskSubtype Email, Type Email).
    Email,
    /// A reply to a sales email (TaskSubtype Email, Type Reply, Subject `Reply: <subject>`).
    Reply,
    /// A sales call (TaskSubtype Call, Type Call).
    Call,
    /// A reminder task (TaskSubtype Task, no Type).
    Reminder,
}

impl TaskKind {
    /// The Task `Type` picklist value, `None` for reminders.
    pub fn type_value(self) -> Option<&'static str> {
        match self {
            TaskKind::Email => Some("Email"),
            TaskKind::Reply => Some("Reply"),
            TaskKind::Call => Some("Call"),
            TaskKind::Reminder => None,
        }
    }

    /// The Task `TaskSubtype` value.
    pub fn subtype(self) -> &'static str {
        match self {
            TaskKind::Email | TaskKind::Reply => "Email",
            TaskKind::Call => "Call",
            TaskKind::Reminder => "Task",
        }
    }

    /// `{{activity_type}}` in subject templates.
    pub fn activity_type_label(self) -> &'static str {
        match self {
            TaskKind::Email | TaskKind::Reply => "Email",
            TaskKind::Call => "Call",
            TaskKind::Reminder => "Custom",
        }
    }
}

/// Sales Call Status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// completed
    Completed,
    /// no answer
    NoAnswer,
    /// cancelled
    Cancelled,
    /// failed
    Failed,
}

impl CallStatus {
    /// The product's wording.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Completed => "completed",
            CallStatus::NoAnswer => "no answer",
            CallStatus::Cancelled => "cancelled",
            CallStatus::Failed => "failed",
        }
    }
}

/// A sales activity recorded by a host, to be logged on a person in Marketo (and, for emails,
/// replies and calls, in Salesforce).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesActivity {
    /// salesync's activity id: unique, carried to Marketo (subject suffix `(SIA-<id>)` and an
    /// attribute) and to Salesforce (the Task external id) so deliveries are idempotent.
    pub id: String,
    /// The person (Marketo id).
    pub marketo_id: i64,
    /// Which of the eight kinds.
    pub kind: SalesActivityKind,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The acting seller's email (Sent By / Sales Call Made By / Received By).
    pub actor_email: Option<String>,
    /// The acting seller's Salesforce user, when mapped (Task OwnerId).
    pub actor_salesforce_user: Option<SalesforceId>,
    /// Email subject (emails, replies; also Sales Call Subject for calls).
    pub subject: Option<String>,
    /// Clicked link (click).
    pub link: Option<String>,
    /// Template id / name / URL.
    pub template: Option<TemplateRef>,
    /// Sales campaign name / id / URL / day / step.
    pub campaign: Option<CampaignRef>,
    /// Call details (sales call).
    pub call: Option<CallDetails>,
    /// Bounce details (bounced).
    pub bounce_details: Option<String>,
    /// Free text for the Task Description.
    pub body: Option<String>,
    /// Marketo Sales Person ID (the actor's id in salesync's host).
    pub sales_person_id: Option<String>,
}

/// A sales template reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TemplateRef {
    /// Template id.
    pub id: Option<String>,
    /// Template name.
    pub name: Option<String>,
    /// Template URL.
    pub url: Option<String>,
}

/// A sales campaign reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CampaignRef {
    /// Campaign id.
    pub id: Option<String>,
    /// Campaign name.
    pub name: Option<String>,
    /// Campaign URL.
    pub url: Option<String>,
    /// Day of the campaign (`{{sales_campaign_day}}`).
    pub day: Option<u32>,
    /// Step of the campaign (`{{sales_campaign_step}}`).
    pub step: Option<u32>,
}

/// Details of a sales call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDetails {
    /// Sales Call Status.
    pub status: CallStatus,
    /// Duration in seconds.
    pub duration_secs: Option<u32>,
    /// Number called.
    pub phone_number: Option<String>,
    /// Recording URL.
    pub recording_url: Option<String>,
    /// Who answered.
    pub answered_by: Option<String>,
    /// Call outcome picked in the dialer (`{{call_outcome}}`).
    pub outcome: Option<String>,
    /// Call reason (`{{call_reason}}`).
    pub reason: Option<String>,
}

impl SalesActivity {
    /// An activity of `kind` on a person with only its required fields: set the optional ones
    /// (actor, subject, call details…) with struct update syntax,
    /// `SalesActivity { subject: Some(…), ..SalesActivity::new(…) }`.
    pub fn new(id: impl Into<String>, marketo_id: i64, kind: SalesActivityKind, occurred_at: DateTime<Utc>) -> Self {
        SalesActivity {
            id: id.into(),
            marketo_id,
            kind,
            occurred_at,
            actor_email: None,
            actor_salesforce_user: None,
            subject: None,
            link: None,
            template: None,
            campaign: None,
            call: None,
            bounce_details: None,
            body: None,
            sales_person_id: None,
        }
    }

    /// The subject with its unique suffix, as logged in Marketo: `My Subject (SIA-<id>)`.
    pub fn marketo_subject(&self) -> String {
        let base = self.subject.as_deref().unwrap_or("").trim();
        if base.is_empty() { format!("(SIA-{})", self.id) } else { format!("{base} (SIA-{})", self.id) }
    }

    /// Checks what each kind requires; errors name the missing or oversize input.
    pub fn validate(&self) -> Result<(), Error> {
        let missing = |field: &str| Error::InvalidInput {
            field: field.into(),
            reason: format!("required for {}", self.kind.slug()),
        };
        if self.id.trim().is_empty() || self.id.len() > 64 {
            return Err(Error::InvalidInput { field: "id".into(), reason: "must be 1-64 characters".into() });
        }
        if self.marketo_id <= 0 {
            return Err(Error::InvalidInput {
                field: "marketo_id".into(),
                reason: "must be a positive Marketo id".into(),
            });
        }
        use SalesActivityKind as K;
        match self.kind {
            K::SendSalesEmail | K::OpenSalesEmail | K::ClickSalesEmail | K::RepliedSalesEmail => {
                if self.subject.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    return Err(missing("subject"));
                }
                if self.kind == K::ClickSalesEmail && self.link.is_none() {
                    return Err(missing("link"));
                }
            }
            K::SalesCall => {
                if self.call.is_none() {
                    return Err(missing("call"));
                }
            }
            K::AddedToSalesCampaign | K::RemovedFromSalesCampaign => {
                if self.campaign.as_ref().and_then(|c| c.name.as_deref()).is_none_or(|s| s.trim().is_empty()) {
                    return Err(missing("campaign.name"));
                }
            }
            K::SalesEmailBounced => {}
        }
        let size: usize = self.marketo_attributes().iter().map(|(k, v)| k.len() + v.len() + 32).sum();
        if size > MAX_ATTRIBUTES_BYTES {
            return Err(Error::InvalidInput {
                field: "attributes".into(),
                reason: format!("{size} bytes of attributes; Marketo allows {MAX_ATTRIBUTES_BYTES}"),
            });
        }
        Ok(())
    }

    /// The primary attribute value logged in Marketo.
    pub fn primary_attribute_value(&self) -> String {
        use SalesActivityKind as K;
        match self.kind {
            K::SendSalesEmail
            | K::OpenSalesEmail
            | K::ClickSalesEmail
            | K::RepliedSalesEmail
            | K::SalesEmailBounced => self.marketo_subject(),
            K::SalesCall => self.subject.clone().unwrap_or_else(|| format!("Sales call (SIA-{})", self.id)),
            K::AddedToSalesCampaign | K::RemovedFromSalesCampaign => {
                self.campaign.as_ref().and_then(|c| c.name.clone()).unwrap_or_default()
            }
        }
    }

    /// The secondary attributes as `(apiName, value)`, absent values left out. Every kind carries
    /// `salesyncActivityId` (for exactly-once lookups) and `source` = "Sales App".
    pub fn marketo_attributes(&self) -> Vec<(&'static str, String)> {
        use SalesActivityKind as K;
        let mut out: Vec<(&'static str, String)> =
            vec![("salesyncActivityId", self.id.clone()), ("source", "Sales App".to_string())];
        let mut put = |k: &'static str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                out.push((k, v.to_string()));
            }
        };
        put("salesPersonId", self.sales_person_id.as_deref());
        let tpl = self.template.as_ref();
        let camp = self.campaign.as_ref();
        match self.kind {
            K::SendSalesEmail | K::OpenSalesEmail | K::ClickSalesEmail => {
                put("sentBy", self.actor_email.as_deref());
                put("templateId", tpl.and_then(|t| t.id.as_deref()));
                put("templateName", tpl.and_then(|t| t.name.as_deref()));
                put("templateUrl", tpl.and_then(|t| t.url.as_deref()));
                put("campaignName", camp.and_then(|c| c.name.as_deref()));
                put("campaignUrl", camp.and_then(|c| c.url.as_deref()));
                put("link", self.link.as_deref());
            }
            K::RepliedSalesEmail => put("receivedBy", self.actor_email.as_deref()),
            K::SalesEmailBounced => {
                put("sentBy", self.actor_email.as_deref());
                put("details", self.bounce_details.as_deref());
                put("templateId", tpl.and_then(|t| t.id.as_deref()));
            }
            K::SalesCall => {
                put("callMadeBy", self.actor_email.as_deref());
                if let Some(c) = &self.call {
                    put("callStatus", Some(c.status.as_str()));
                    let d = c.duration_secs.map(|d| d.to_string());
                    put("callDuration", d.as_deref());
                    put("phoneNumber", c.phone_number.as_deref());
                    put("recordingUrl", c.recording_url.as_deref());
                    put("answeredBy", c.answered_by.as_deref());
                }
                put("campaignName", camp.and_then(|c| c.name.as_deref()));
                put("campaignUrl", camp.and_then(|c| c.url.as_deref()));
            }
            K::AddedToSalesCampaign | K::RemovedFromSalesCampaign => {
                put("sentBy", self.actor_email.as_deref());
                put("campaignId", camp.and_then(|c| c.id.as_deref()));
                put("campaignUrl", camp.and_then(|c| c.url.as_deref()));
                put("callStatus", self.call.as_ref().map(|c| c.status.as_str()));
            }
        }
        out
    }
}

/// Reminder task status in salesync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderStatus {
    /// Open ↔ Salesforce "Not Started".
    Open,
    /// Complete ↔ Salesforce "Completed".
    Complete,
}

impl ReminderStatus {
    /// The Salesforce Task Status.
    pub fn salesforce_status(self) -> &'static str {
        match self {
            ReminderStatus::Open => "Not Started",
            ReminderStatus::Complete => "Completed",
        }
    }

    /// From a Salesforce Task Status; other statuses (In Progress, Deferred, …) do not sync.
    pub fn from_salesforce(status: &str) -> Option<Self> {
        match status {
            "Not Started" => Some(ReminderStatus::Open),
            "Completed" => Some(ReminderStatus::Complete),
            _ => None,
        }
    }
}

/// Reminder task priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReminderPriority {
    /// Normal ↔ Normal.
    Normal,
    /// High ↔ High.
    High,
}

impl ReminderPriority {
    /// The Salesforce Priority.
    pub fn salesforce_priority(self) -> &'static str {
        match self {
            ReminderPriority::Normal => "Normal",
            ReminderPriority::High => "High",
        }
    }

    /// From a Salesforce Priority; Low does not sync.
    pub fn from_salesforce(p: &str) -> Option<Self> {
        match p {
            "Normal" => Some(ReminderPriority::Normal),
            "High" => Some(ReminderPriority::High),
            _ => None,
        }
    }
}

/// A reminder task, kept in step with a Salesforce Task when reminder sync is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderTask {
    /// salesync id (also the Task external id).
    pub id: String,
    /// The person.
    pub marketo_id: i64,
    /// Task name (goes to Salesforce only; Salesforce edits never come back).
    pub subject: String,
    /// Status.
    pub status: ReminderStatus,
    /// Priority.
    pub priority: ReminderPriority,
    /// Due date ↔ ActivityDate.
    pub due_date: Option<NaiveDate>,
    /// Details ↔ Description.
    pub details: Option<String>,
    /// The Salesforce Task id once known.
    pub salesforce_task_id: Option<SalesforceId>,
    /// Deleted (kept as a tombstone so the deletion can propagate).
    pub deleted: bool,
    /// Last modification (either side); concurrent edits resolve to the latest.
    pub updated_at: DateTime<Utc>,
}

/// Where an unsubscribe came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsubscribeOrigin {
    /// Recorded by the host (link click, manual entry, bounce…).
    Salesync,
    /// Pulled from the Salesforce opt-out field.
    Salesforce,
}

/// A person's unsubscribe state in salesync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsubscribeState {
    /// The person.
    pub marketo_id: i64,
    /// Unsubscribed?
    pub unsubscribed: bool,
    /// Where it came from.
    pub origin: UnsubscribeOrigin,
    /// When.
    pub at: DateTime<Utc>,
}

/// Admin settings stored with the mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    /// Log sent sales emails to Salesforce as Tasks.
    pub log_emails_to_salesforce: bool,
    /// Log replies to Salesforce as Tasks.
    pub log_replies_to_salesforce: bool,
    /// Log calls to Salesforce as Tasks.
    pub log_calls_to_salesforce: bool,
    /// Two-way reminder task sync (off by default, as in the product).
    pub reminder_task_sync: bool,
    /// Ask Marketo whether a person is unsubscribed before a send.
    pub marketo_unsubscribe_check: bool,
    /// The Salesforce opt-out field (default `HasOptedOutOfEmail`).
    pub salesforce_opt_out_field: String,
    /// Task subject template.
    pub subject_template: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            log_emails_to_salesforce: true,
            log_replies_to_salesforce: true,
            log_calls_to_salesforce: true,
            reminder_task_sync: false,
            marketo_unsubscribe_check: false,
            salesforce_opt_out_field: "HasOptedOutOfEmail".into(),
            subject_template: "[Sales Insight Actions] - {{activity_type}}: {{activity_subject}}".into(),
        }
    }
}

impl AdminSettings {
    /// Whether a task kind is logged to Salesforce under these settings.
    pub fn logs_to_salesforce(&self, kind: TaskKind) -> bool {
        match kind {
            TaskKind::Email => self.log_emails_to_salesforce,
            TaskKind::Reply => self.log_replies_to_salesforce,
            TaskKind::Call => self.log_calls_to_salesforce,
            TaskKind::Reminder => self.reminder_task_sync,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> SalesActivity {
        SalesActivity {
            actor_email: Some("rep@example.com".into()),
            subject: Some("Intro".into()),
            ..SalesActivity::new("a1", 1001, SalesActivityKind::SendSalesEmail, Utc::now())
        }
    }

    #[test]
    fn slugs_round_trip_and_task_kinds() {
        for k in SalesActivityKind::ALL {
            assert_eq!(SalesActivityKind::from_slug(k.slug()), Some(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.slug()));
        }
        assert_eq!(SalesActivityKind::SalesCall.task_kind(), Some(TaskKind::Call));
        assert_eq!(SalesActivityKind::OpenSalesEmail.task_kind(), None);
        assert_eq!(TaskKind::Reminder.type_value(), None);
    }

    #[test]
    fn subject_carries_unique_suffix_and_attributes_carry_id_and_source() {
        let a = email();
        assert_eq!(a.marketo_subject(), "Intro (SIA-a1)");
        let attrs = a.marketo_attributes();
        assert!(attrs.contains(&("salesyncActivityId", "a1".into())));
        assert!(attrs.contains(&("source", "Sales App".into())));
        assert!(attrs.contains(&("sentBy", "rep@example.com".into())));
    }

    #[test]
    fn validation_names_what_is_missing() {
        let mut a = email();
        a.subject = None;
        assert!(matches!(a.validate(), Err(Error::InvalidInput { ref field, .. }) if field == "subject"));
        let mut c = email();
        c.kind = SalesActivityKind::SalesCall;
        assert!(matches!(c.validate(), Err(Error::InvalidInput { ref field, .. }) if field == "call"));
        let mut big = email();
        big.body = None;
        big.link = Some("x".repeat(70_000));
        big.kind = SalesActivityKind::ClickSalesEmail;
        assert!(matches!(big.validate(), Err(Error::InvalidInput { ref field, .. }) if field == "attributes"));
        assert!(email().validate().is_ok());
    }

    #[test]
    fn reminder_mappings_ignore_other_values() {
        assert_eq!(ReminderStatus::from_salesforce("In Progress"), None);
        assert_eq!(ReminderStatus::from_salesforce("Completed"), Some(ReminderStatus::Complete));
        assert_eq!(ReminderPriority::from_salesforce("Low"), None);
        assert_eq!(ReminderPriority::High.salesforce_priority(), "High");
    }

    #[test]
    fn default_settings_match_the_product() {
        let s = AdminSettings::default();
        assert!(!s.reminder_task_sync);
        assert_eq!(s.salesforce_opt_out_field, "HasOptedOutOfEmail");
        assert!(s.logs_to_salesforce(TaskKind::Email));
        let back: AdminSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(back, s);
    }
}
