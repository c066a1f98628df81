//! Pure rules of outbound delivery: the custom activity types salesync provisions in Marketo,
//! the Marketo activity for a sales activity, the Salesforce Task for an activity or reminder,
//! subject templates, and reminder conflict resolution. No I/O: the engine calls these.

use serde::{Deserialize, Serialize};

use crate::activity::{
    AdminSettings, MAX_SUBJECT_CHARS, ReminderPriority, ReminderStatus, ReminderTask, SalesActivity, SalesActivityKind,
    TaskKind,
};
use crate::person::Person;
use crate::ports::marketo::{CustomActivityTypeDef, NewCustomActivity};
use crate::ports::salesforce::{TaskRecord, TaskWrite};
use crate::sfid::{SalesforceId, SalesforceObject};

/// Namespace prefix of salesync's Marketo custom activity types (≤16 characters, as Marketo
/// recommends).
pub const TYPE_PREFIX: &str = "salesync";

/// The Marketo custom activity type apiName salesync uses for a kind.
pub fn custom_type_api_name(kind: SalesActivityKind) -> String {
    let camel: String = kind
        .slug()
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    format!("{TYPE_PREFIX}{camel}")
}

/// The secondary attributes each type declares `(apiName, display name, dataType)`: the union of
/// what [`SalesActivity::marketo_attributes`] emits for that kind, so every value has a home.
fn type_attributes(kind: SalesActivityKind) -> Vec<(&'static str, &'static str, &'static str)> {
    use SalesActivityKind as K;
    let mut attrs = vec![
        ("salesyncActivityId", "Salesync Activity ID", "string"),
        ("source", "Source", "string"),
        ("salesPersonId", "Marketo Sales Person ID", "string"),
    ];
    match kind {
        K::SendSalesEmail | K::OpenSalesEmail | K::ClickSalesEmail => attrs.extend([
            ("sentBy", "Sent By", "email"),
            ("templateId", "Template ID", "string"),
            ("templateName", "Sales Template Name", "string"),
            ("templateUrl", "Sales Template URL", "link"),
            ("campaignName", "Sales Campaign Name", "string"),
            ("campaignUrl", "Sales Campaign URL", "link"),
            ("link", "Link", "link"),
        ]),
        K::RepliedSalesEmail => attrs.push(("receivedBy", "Received By", "email")),
        K::SalesEmailBounced => attrs.extend([
            ("sentBy", "Sent By", "email"),
            ("details", "Details", "text"),
            ("templateId", "Template ID", "string"),
        ]),
        K::SalesCall => attrs.extend([
            ("callMadeBy", "Sales Call Made By", "email"),
            ("callStatus", "Sales Call Status", "string"),
            ("callDuration", "Sales Call Duration", "integer"),
            ("phoneNumber", "Sales Phone Number Called", "phone"),
            ("recordingUrl", "Sales Call Recording URL", "link"),
            ("answeredBy", "Sales Call Answered By", "string"),
            ("campaignName", "Sales Campaign Name", "string"),
            ("campaignUrl", "Sales Campaign URL", "link"),
        ]),
        K::AddedToSalesCampaign | K::RemovedFromSalesCampaign => attrs.extend([
            ("sentBy", "Sent By", "email"),
            ("campaignId", "Sales Campaign ID", "string"),
            ("campaignUrl", "Sales Campaign URL", "link"),
            ("callStatus", "Sales Call Status", "string"),
        ]),
    }
    attrs
}

/// The eight custom activity types salesync provisions (within Marketo's 10-type and
/// 20-attribute limits).
pub fn custom_activity_types() -> Vec<CustomActivityTypeDef> {
    SalesActivityKind::ALL
        .into_iter()
        .map(|kind| {
            let name = kind.display_name();
            let primary = match kind {
                SalesActivityKind::AddedToSalesCampaign | SalesActivityKind::RemovedFromSalesCampaign => {
                    ("campaignName", "Sales Campaign Name")
                }
                SalesActivityKind::SalesCall => ("callSubject", "Sales Call Subject"),
                _ => ("emailSubject", "Email Subject"),
            };
            CustomActivityTypeDef {
                api_name: custom_type_api_name(kind),
                name: format!("{name} (salesync)"),
                description: format!("{name}, logged by salesync"),
                trigger_name: format!("{name} - salesync"),
                filter_name: format!("Had {name} - salesync"),
                primary_attribute: (primary.0.to_string(), primary.1.to_string()),
                attributes: type_attributes(kind)
                    .into_iter()
                    .map(|(a, n, t)| (a.to_string(), n.to_string(), t.to_string()))
                    .collect(),
            }
        })
        .collect()
}

/// The Marketo custom activity for a sales activity, given the provisioned type id.
pub fn marketo_activity(activity: &SalesActivity, type_id: i64) -> NewCustomActivity {
    NewCustomActivity {
        lead_id: activity.marketo_id,
        activity_date: activity.occurred_at,
        activity_type_id: type_id,
        primary_attribute_value: activity.primary_attribute_value(),
        attributes: activity.marketo_attributes().into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// Values for the subject template's dynamic fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectContext {
    /// `{{activity_type}}`: Email / Call / Custom.
    pub activity_type: String,
    /// `{{activity_subject}}`: the email subject or the reminder's name.
    pub activity_subject: Option<String>,
    /// `{{sales_campaign_name}}`.
    pub sales_campaign_name: Option<String>,
    /// `{{sales_campaign_day}}`.
    pub sales_campaign_day: Option<String>,
    /// `{{sales_campaign_step}}`.
    pub sales_campaign_step: Option<String>,
    /// `{{call_outcome}}`.
    pub call_outcome: Option<String>,
    /// `{{call_reason}}`.
    pub call_reason: Option<String>,
}

/// Renders a subject template: known `{{fields}}` are replaced (missing → empty), unknown
/// placeholders are kept literally, line breaks are stripped and the result is cut to 255
/// characters.
pub fn render_subject(template: &str, ctx: &SubjectContext) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let key = after[..end].trim();
        let value: Option<&str> = match key {
            "activity_type" => Some(ctx.activity_type.as_str()),
            "activity_subject" => Some(ctx.activity_subject.as_deref().unwrap_or("")),
            "sales_campaign_name" => Some(ctx.sales_campaign_name.as_deref().unwrap_or("")),
            "sales_campaign_day" => Some(ctx.sales_campaign_day.as_deref().unwrap_or("")),
            "sales_campaign_step" => Some(ctx.sales_campaign_step.as_deref().unwrap_or("")),
            "call_outcome" => Some(ctx.call_outcome.as_deref().unwrap_or("")),
            "call_reason" => Some(ctx.call_reason.as_deref().unwrap_or("")),
            _ => None,
        };
        match value {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    let flat: String = out.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    flat.chars().take(MAX_SUBJECT_CHARS).collect()
}

/// Where a Task goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskPlan {
    /// Write this Task.
    Write(TaskWrite),
    /// Look the person up in Salesforce by this email first (emails and replies without a
    /// stored Salesforce id), then call [`activity_task`] again with the id found.
    LookupByEmail(String),
    /// Not logged, by design (switched off, a call without a Salesforce id, no match…).
    Skip(String),
}

/// Plans the Salesforce Task of a sales activity.
///
/// `who_override` is an id found by email or by following a lead's conversion. Matching
/// follows the product: emails and replies go to the stored lead/contact id, else to one found by
/// email; calls only when the person has a Salesforce id.
pub fn activity_task(
    activity: &SalesActivity,
    person: &Person,
    who_override: Option<&SalesforceId>,
    settings: &AdminSettings,
    org_type_values: &[String],
) -> TaskPlan {
    let Some(kind) = activity.kind.task_kind() else {
        return TaskPlan::Skip(format!("{} is not logged to Salesforce", activity.kind.slug()));
    };
    if !settings.logs_to_salesforce(kind) {
        return TaskPlan::Skip(format!("logging {kind:?} activities to Salesforce is switched off"));
    }
    let who = who_override.cloned().or_else(|| person.salesforce_who_id().cloned());
    let Some(who) = who else {
        return match (kind, person.email.as_deref()) {
            (TaskKind::Call, _) => TaskPlan::Skip("calls are logged only for people with a Salesforce id".into()),
            (_, Some(email)) => TaskPlan::LookupByEmail(email.to_string()),
            (_, None) => TaskPlan::Skip("no Salesforce id and no email to match".into()),
        };
    };
    let what = if who.object() == SalesforceObject::Contact {
        person.salesforce_opportunity_id().or(person.salesforce_account_id.as_ref()).cloned()
    } else {
        None
    };
    let subject = match kind {
        TaskKind::Reply => {
            let s = format!("Reply: {}", activity.subject.as_deref().unwrap_or(""));
            render_subject(&s, &SubjectContext::default())
        }
        _ => render_subject(&settings.subject_template, &subject_context(activity, kind)),
    };
    let type_value = kind.type_value().filter(|t| org_type_values.iter().any(|v| v == t)).map(str::to_string);
    let call = activity.call.as_ref();
    TaskPlan::Write(TaskWrite {
        external_id: activity.id.clone(),
        who_id: Some(who),
        what_id: what,
        owner_id: activity.actor_salesforce_user.clone(),
        subject,
        status: "Completed".into(),
        priority: "Normal".into(),
        activity_date: Some(activity.occurred_at.date_naive()),
        description: activity.body.clone(),
        task_subtype: Some(kind.subtype().into()),
        task_type: type_value,
        call_duration_secs: call.and_then(|c| c.duration_secs),
        call_disposition: call.and_then(|c| c.outcome.clone()),
        custom_fields: Vec::new(),
    })
}

fn subject_context(activity: &SalesActivity, kind: TaskKind) -> SubjectContext {
    let camp = activity.campaign.as_ref();
    SubjectContext {
        activity_type: kind.activity_type_label().into(),
        activity_subject: activity.subject.clone(),
        sales_campaign_name: camp.and_then(|c| c.name.clone()),
        sales_campaign_day: camp.and_then(|c| c.day).map(|d| d.to_string()),
        sales_campaign_step: camp.and_then(|c| c.step).map(|d| d.to_string()),
        call_outcome: activity.call.as_ref().and_then(|c| c.outcome.clone()),
        call_reason: activity.call.as_ref().and_then(|c| c.reason.clone()),
    }
}

/// The Salesforce Task for a reminder task. The subject goes to Salesforce only when the
/// template uses `{{activity_subject}}` (else the rendered template without it).
pub fn reminder_task(reminder: &ReminderTask, person: &Person, settings: &AdminSettings) -> Option<TaskWrite> {
    let who = person.salesforce_who_id()?.clone();
    let ctx = SubjectContext {
        activity_type: TaskKind::Reminder.activity_type_label().into(),
        activity_subject: Some(reminder.subject.clone()),
        ..SubjectContext::default()
    };
    Some(TaskWrite {
        external_id: reminder.id.clone(),
        who_id: Some(who),
        what_id: None,
        owner_id: None,
        subject: render_subject(&settings.subject_template, &ctx),
        status: reminder.status.salesforce_status().into(),
        priority: reminder.priority.salesforce_priority().into(),
        activity_date: reminder.due_date,
        description: reminder.details.clone(),
        task_subtype: Some(TaskKind::Reminder.subtype().into()),
        task_type: None,
        call_duration_secs: None,
        call_disposition: None,
        custom_fields: Vec::new(),
    })
}

/// What to do with a reminder after seeing its Salesforce Task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderMerge {
    /// Salesforce is newer: store this updated reminder (status/priority/due date/details from
    /// Salesforce where they map; the subject never comes back).
    TakeRemote(ReminderTask),
    /// salesync is newer (or nothing maps): keep ours; push it if it differs.
    KeepLocal,
}

/// Resolves a reminder against its Salesforce Task by latest modification time (ties keep
/// salesync's version). Unmapped Salesforce values (other statuses, Low priority) leave the
/// salesync value unchanged.
pub fn merge_reminder(local: &ReminderTask, remote: &TaskRecord) -> ReminderMerge {
    if remote.modified_at <= local.updated_at {
        return ReminderMerge::KeepLocal;
    }
    let mut next = local.clone();
    if let Some(s) = remote.status.as_deref().and_then(ReminderStatus::from_salesforce) {
        next.status = s;
    }
    if let Some(p) = remote.priority.as_deref().and_then(ReminderPriority::from_salesforce) {
        next.priority = p;
    }
    next.due_date = remote.activity_date;
    next.details = remote.description.clone();
    next.deleted = next.deleted || remote.deleted;
    next.updated_at = remote.modified_at;
    if next.status == local.status
        && next.priority == local.priority
        && next.due_date == local.due_date
        && next.details == local.details
        && next.deleted == local.deleted
    {
        return ReminderMerge::KeepLocal;
    }
    ReminderMerge::TakeRemote(next)
}

/// A reminder imported from a Salesforce Task (first enable: tasks created or updated in the last
/// 24 hours). `None` when the Task has no person in the mirror or its status doesn't map.
pub fn import_reminder(remote: &TaskRecord, person: &Person, id: String) -> Option<ReminderTask> {
    let status = ReminderStatus::from_salesforce(remote.status.as_deref()?)?;
    Some(ReminderTask {
        id,
        marketo_id: person.marketo_id,
        subject: remote.subject.clone().unwrap_or_default(),
        status,
        priority: remote
            .priority
            .as_deref()
            .and_then(ReminderPriority::from_salesforce)
            .unwrap_or(ReminderPriority::Normal),
        due_date: remote.activity_date,
        details: remote.description.clone(),
        salesforce_task_id: Some(remote.id.clone()),
        deleted: remote.deleted,
        updated_at: remote.modified_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{CallDetails, CallStatus, CampaignRef};
    use crate::person::{OpportunityRef, SalesforceType};
    use chrono::{NaiveDate, TimeZone, Utc};

    fn id(s: &str) -> SalesforceId {
        SalesforceId::parse(s).unwrap()
    }

    fn contact() -> Person {
        Person {
            marketo_id: 1001,
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            salesforce_contact_id: Some(id("0035g00000XyZaB")),
            salesforce_lead_id: None,
            salesforce_account_id: Some(id("0015g00000AbCdE")),
            salesforce_opportunity: OpportunityRef::Salesforce(Some(id("0065g00000AbCdE"))),
            company: None,
            title: None,
            email: Some("ada@example.com".into()),
            phone: None,
            linkedin_url: None,
            source: None,
            salesforce_type: SalesforceType::Contact,
            owner_id: id("0055g00000AbCdE"),
            marketo_updated_at: None,
            mirror_updated_at: Utc::now(),
        }
    }

    fn activity(kind: SalesActivityKind) -> SalesActivity {
        SalesActivity {
            id: "act-1".into(),
            marketo_id: 1001,
            kind,
            occurred_at: Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap(),
            actor_email: Some("rep@example.com".into()),
            actor_salesforce_user: None,
            subject: Some("Pricing\nfollow-up".into()),
            link: None,
            template: None,
            campaign: Some(CampaignRef {
                name: Some("Q4 push".into()),
                day: Some(3),
                step: Some(2),
                ..Default::default()
            }),
            call: Some(CallDetails {
                status: CallStatus::Completed,
                duration_secs: Some(95),
                phone_number: None,
                recording_url: None,
                answered_by: None,
                outcome: Some("Interested".into()),
                reason: Some("Demo".into()),
            }),
            bounce_details: None,
            body: Some("notes".into()),
            sales_person_id: None,
        }
    }

    #[test]
    fn api_names_are_namespaced_and_within_limits() {
        let types = custom_activity_types();
        assert_eq!(types.len(), 8);
        assert!(types.len() <= 10);
        assert_eq!(types[0].api_name, "salesyncSendSalesEmail");
        for t in &types {
            assert!(t.attributes.len() <= 20, "{} has {}", t.api_name, t.attributes.len());
            assert!(t.api_name.chars().all(|c| c.is_ascii_alphanumeric()));
        }
        // Every attribute an activity emits is declared on its type.
        for kind in SalesActivityKind::ALL {
            let declared: Vec<String> = type_attributes(kind).iter().map(|a| a.0.to_string()).collect();
            let mut a = activity(kind);
            a.link = Some("https://x".into());
            a.bounce_details = Some("mailbox full".into());
            for (k, _) in a.marketo_attributes() {
                assert!(declared.iter().any(|d| d == k), "{k} not declared for {kind:?}");
            }
        }
    }

    #[test]
    fn subject_template_rules() {
        let ctx = SubjectContext {
            activity_type: "Email".into(),
            activity_subject: Some("Hi\r\nthere".into()),
            call_outcome: None,
            ..Default::default()
        };
        assert_eq!(
            render_subject("[SIA] - {{activity_type}}: {{activity_subject}} {{call_outcome}}|{{nope}}", &ctx),
            "[SIA] - Email: Hithere |{{nope}}"
        );
        assert_eq!(render_subject(&"x".repeat(300), &ctx).chars().count(), 255);
        assert_eq!(render_subject("unclosed {{activity_type", &ctx), "unclosed {{activity_type");
    }

    #[test]
    fn email_task_goes_to_contact_with_opportunity() {
        let a = activity(SalesActivityKind::SendSalesEmail);
        let TaskPlan::Write(t) =
            activity_task(&a, &contact(), None, &AdminSettings::default(), &["Email".into(), "Call".into()])
        else {
            panic!()
        };
        assert_eq!(t.who_id, Some(id("0035g00000XyZaB")));
        assert_eq!(t.what_id, Some(id("0065g00000AbCdE")));
        assert_eq!(t.task_type.as_deref(), Some("Email"));
        assert_eq!(t.subject, "[Sales Insight Actions] - Email: Pricingfollow-up");
        assert_eq!(t.status, "Completed");
        assert_eq!(t.external_id, "act-1");
        assert_eq!(t.activity_date, Some(NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()));
    }

    #[test]
    fn reply_subject_skips_template_and_missing_type_value_is_left_out() {
        let a = activity(SalesActivityKind::RepliedSalesEmail);
        let TaskPlan::Write(t) = activity_task(&a, &contact(), None, &AdminSettings::default(), &["Email".into()])
        else {
            panic!()
        };
        assert_eq!(t.subject, "Reply: Pricingfollow-up");
        assert_eq!(t.task_type, None);
    }

    #[test]
    fn calls_need_a_salesforce_id_emails_fall_back_to_email() {
        let mut p = contact();
        p.salesforce_contact_id = None;
        let call = activity(SalesActivityKind::SalesCall);
        assert!(matches!(activity_task(&call, &p, None, &AdminSettings::default(), &[]), TaskPlan::Skip(_)));
        let email = activity(SalesActivityKind::SendSalesEmail);
        assert_eq!(
            activity_task(&email, &p, None, &AdminSettings::default(), &[]),
            TaskPlan::LookupByEmail("ada@example.com".into())
        );
        let found = id("00Q5g00000QwErT");
        let TaskPlan::Write(t) = activity_task(&email, &p, Some(&found), &AdminSettings::default(), &[]) else {
            panic!()
        };
        assert_eq!((t.who_id, t.what_id), (Some(found), None));
    }

    #[test]
    fn switches_turn_kinds_off() {
        let settings = AdminSettings { log_calls_to_salesforce: false, ..AdminSettings::default() };
        let call = activity(SalesActivityKind::SalesCall);
        assert!(matches!(activity_task(&call, &contact(), None, &settings, &[]), TaskPlan::Skip(_)));
        let open = activity(SalesActivityKind::OpenSalesEmail);
        assert!(matches!(activity_task(&open, &contact(), None, &AdminSettings::default(), &[]), TaskPlan::Skip(_)));
        let TaskPlan::Write(t) = activity_task(&call, &contact(), None, &AdminSettings::default(), &["Call".into()])
        else {
            panic!()
        };
        assert_eq!(
            (t.call_duration_secs, t.call_disposition.as_deref(), t.task_subtype.as_deref()),
            (Some(95), Some("Interested"), Some("Call"))
        );
    }

    fn reminder() -> ReminderTask {
        ReminderTask {
            id: "rem-1".into(),
            marketo_id: 1001,
            subject: "Call back".into(),
            status: ReminderStatus::Open,
            priority: ReminderPriority::High,
            due_date: NaiveDate::from_ymd_opt(2026, 12, 1),
            details: None,
            salesforce_task_id: Some(id("00T5g00000AbCdE")),
            deleted: false,
            updated_at: Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap(),
        }
    }

    fn remote(status: &str, priority: &str, at_hour: u32) -> TaskRecord {
        TaskRecord {
            id: id("00T5g00000AbCdE"),
            external_id: Some("rem-1".into()),
            who_id: None,
            subject: Some("Edited in SF".into()),
            status: Some(status.into()),
            priority: Some(priority.into()),
            activity_date: NaiveDate::from_ymd_opt(2026, 12, 3),
            description: Some("moved".into()),
            task_subtype: Some("Task".into()),
            created_at: Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap(),
            modified_at: Utc.with_ymd_and_hms(2026, 11, 29, at_hour, 0, 0).unwrap(),
            deleted: false,
        }
    }

    #[test]
    fn reminder_task_maps_status_priority_and_no_type() {
        let t = reminder_task(&reminder(), &contact(), &AdminSettings::default()).unwrap();
        assert_eq!((t.status.as_str(), t.priority.as_str(), t.task_type.clone()), ("Not Started", "High", None));
        assert!(t.subject.contains("Call back"));
    }

    #[test]
    fn reminder_conflicts_resolve_by_latest_modification() {
        assert_eq!(merge_reminder(&reminder(), &remote("Completed", "Low", 9)), ReminderMerge::KeepLocal);
        let ReminderMerge::TakeRemote(r) = merge_reminder(&reminder(), &remote("Completed", "Low", 11)) else {
            panic!()
        };
        assert_eq!(r.status, ReminderStatus::Complete);
        assert_eq!(r.priority, ReminderPriority::High, "Low does not sync");
        assert_eq!(r.subject, "Call back", "subject never comes back");
        assert_eq!(r.due_date, NaiveDate::from_ymd_opt(2026, 12, 3));
        let ReminderMerge::TakeRemote(r) = merge_reminder(&reminder(), &remote("In Progress", "Normal", 11)) else {
            panic!()
        };
        assert_eq!((r.status, r.priority), (ReminderStatus::Open, ReminderPriority::Normal));
    }

    #[test]
    fn marketo_activity_carries_id_and_subject_suffix() {
        let a = activity(SalesActivityKind::SendSalesEmail);
        let m = marketo_activity(&a, 100_001);
        assert_eq!(m.primary_attribute_value, "Pricing\nfollow-up (SIA-act-1)");
        assert!(m.attributes.contains(&("salesyncActivityId".to_string(), "act-1".to_string())));
        assert_eq!((m.lead_id, m.activity_type_id), (1001, 100_001));
    }
}
