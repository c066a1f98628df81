//! Delivery to Salesforce: activity Tasks, opt-outs and reminder Tasks.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use salesync_core::activity::{AdminSettings, ReminderTask, SalesActivity, TaskKind};
use salesync_core::outbound::{SubjectContext, TaskPlan, activity_task, reminder_task, render_subject};
use salesync_core::ports::marketo::RecordOutcome;
use salesync_core::ports::salesforce::{LeadConversion, PersonRef, TaskWrite};
use salesync_core::ports::store::{OutboxItem, OutboxPayload, Target};
use salesync_core::{
    Error, Result,
    person::{OpportunityRef, Person, SalesforceType},
    sfid::{SalesforceId, SalesforceObject},
};

use crate::dispatcher::Inner;
use crate::events::TargetReport;
use crate::finish::Finisher;

/// Codes meaning the Task is already gone.
const GONE: [&str; 3] = ["ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_ID_FIELD"];

struct Upsert<'a> {
    item: &'a OutboxItem,
    task: TaskWrite,
    reminder: Option<String>,
}

type Fields = Vec<(String, serde_json::Value)>;
type People = HashMap<i64, Person>;

struct Update<'a> {
    item: &'a OutboxItem,
    task_id: SalesforceId,
    fields: Fields,
}

struct Delete<'a> {
    item: &'a OutboxItem,
    task_id: SalesforceId,
}

struct OptOut<'a> {
    item: &'a OutboxItem,
    who: SalesforceId,
}

/// An item whose Salesforce record is a Lead: its conversion must be checked first.
enum ViaLead<'a> {
    Activity { item: &'a OutboxItem, activity: &'a SalesActivity, person: Person },
    Reminder { item: &'a OutboxItem, task: ReminderTask, person: Person },
    OptOut { item: &'a OutboxItem, person: Person },
}

impl ViaLead<'_> {
    fn item(&self) -> &OutboxItem {
        match self {
            ViaLead::Activity { item, .. } | ViaLead::Reminder { item, .. } | ViaLead::OptOut { item, .. } => item,
        }
    }
    fn lead(&self) -> Option<&SalesforceId> {
        match self {
            ViaLead::Activity { person, .. } | ViaLead::Reminder { person, .. } | ViaLead::OptOut { person, .. } => {
                person.salesforce_who_id()
            }
        }
    }
}

#[derive(Default)]
struct Plan<'a> {
    upserts: Vec<Upsert<'a>>,
    updates: Vec<Update<'a>>,
    deletes: Vec<Delete<'a>>,
    opt_outs: Vec<OptOut<'a>>,
    via_lead: Vec<ViaLead<'a>>,
}

fn is_lead(id: Option<&SalesforceId>) -> bool {
    id.is_some_and(|i| i.object() == SalesforceObject::Lead)
}

/// The person as the contact its lead was converted into (with the conversion's account and
/// opportunity); `None` when Salesforce gave no contact.
fn follow_conversion(person: &Person, conv: &LeadConversion) -> Option<Person> {
    let contact = conv.contact_id.clone()?;
    let mut p = person.clone();
    p.salesforce_contact_id = Some(contact);
    p.salesforce_type = SalesforceType::Contact;
    if conv.account_id.is_some() {
        p.salesforce_account_id = conv.account_id.clone();
    }
    if let Some(o) = &conv.opportunity_id {
        p.salesforce_opportunity = OpportunityRef::Salesforce(Some(o.clone()));
    }
    Some(p)
}

/// The Salesforce record an email lookup settles on: a Contact first, else the contact a
/// converted Lead became, else an unconverted Lead. Returns the id and its account.
pub fn pick_email_match(found: &[PersonRef]) -> Option<(SalesforceId, Option<SalesforceId>)> {
    found
        .iter()
        .find(|r| r.id.object() == SalesforceObject::Contact)
        .map(|r| (r.id.clone(), r.account_id.clone()))
        .or_else(|| found.iter().find_map(|r| r.converted_contact_id.clone().map(|c| (c, r.account_id.clone()))))
        .or_else(|| found.iter().find(|r| r.id.object() == SalesforceObject::Lead).map(|r| (r.id.clone(), None)))
}

/// The Task fields a reminder change updates on an existing Task (TaskSubtype is create-only;
/// WhoId is left as it is; Subject only when the template uses `{{activity_subject}}`).
fn reminder_fields(task: &ReminderTask, admin: &AdminSettings) -> Fields {
    let ctx = SubjectContext {
        activity_type: TaskKind::Reminder.activity_type_label().into(),
        activity_subject: Some(task.subject.clone()),
        ..SubjectContext::default()
    };
    let opt = |v: Option<String>| v.map_or(serde_json::Value::Null, serde_json::Value::String);
    let mut fields: Fields = Vec::with_capacity(5);
    // The task name reaches Salesforce only through `{{activity_subject}}` in the template.
    if admin.subject_template.contains("activity_subject") {
        fields.push(("Subject".into(), render_subject(&admin.subject_template, &ctx).into()));
    }
    fields.extend([
        ("Status".into(), task.status.salesforce_status().into()),
        ("Priority".into(), task.priority.salesforce_priority().into()),
        ("ActivityDate".into(), opt(task.due_date.map(|d| d.format("%Y-%m-%d").to_string()))),
        ("Description".into(), opt(task.details.clone())),
    ]);
    fields
}

impl Inner {
    async fn org_task_types(&self) -> Result<&Vec<String>> {
        self.task_type_values.get_or_try_init(|| self.salesforce.task_type_values()).await
    }

    /// Claims and delivers one batch of Salesforce items.
    pub(crate) async fn deliver_salesforce(&self, errors: &mut Vec<String>) -> Result<TargetReport> {
        let idle = |s: &Self| TargetReport { status: s.status_of(Target::Salesforce), ..TargetReport::default() };
        if let Some(status) = self.gate(Target::Salesforce) {
            return Ok(TargetReport { status, ..TargetReport::default() });
        }
        let s = &self.settings;
        let now = self.now();
        let below_reserve = |u: &salesync_core::ports::salesforce::ApiUsage| u.remaining() < s.salesforce_api_reserve;
        let mut usage = self.salesforce.api_usage();
        if usage.as_ref().is_some_and(below_reserve) && self.reserve_recheck.swap(false, Ordering::SeqCst) {
            // `Sforce-Limit-Info` only moves when a call is made: after a reserve pause, one
            // cheap call (the Task Type describe) reads the allocation again before deciding.
            match self.salesforce.task_type_values().await {
                Ok(_) => usage = self.salesforce.api_usage(),
                Err(e) => {
                    self.target_error(Target::Salesforce, &e, errors);
                    self.cool_down(Target::Salesforce);
                    return Ok(idle(self));
                }
            }
        }
        if let Some(usage) = usage.filter(below_reserve) {
            let until =
                now + chrono::Duration::from_std(s.salesforce_reserve_pause).unwrap_or(chrono::Duration::hours(1));
            tracing::warn!(used = usage.used, max = usage.max, "Salesforce API reserve reached; pausing delivery");
            self.pause(Target::Salesforce, until);
            self.reserve_recheck.store(true, Ordering::SeqCst);
            return Ok(idle(self));
        }
        if self.cooling_down(Target::Salesforce) {
            return Ok(idle(self));
        }
        let types = match self.org_task_types().await {
            Ok(t) => t,
            Err(e) => {
                self.target_error(Target::Salesforce, &e, errors);
                self.cool_down(Target::Salesforce);
                return Ok(idle(self));
            }
        };
        let admin = self.store.settings().await?;
        let claimed = self.store.claim(Target::Salesforce, s.salesforce_batch, &s.worker_id, s.lease, now).await?;
        if claimed.is_empty() {
            return Ok(idle(self));
        }
        let mut fin = Finisher::new(s, Target::Salesforce, now, claimed.len() as u32);
        let mut ids: Vec<i64> = claimed
            .iter()
            .map(|i| match &i.payload {
                OutboxPayload::Activity { activity } => activity.marketo_id,
                OutboxPayload::Unsubscribe { marketo_id } => *marketo_id,
                OutboxPayload::Reminder { task } => task.marketo_id,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let people: People = self.store.people_by_ids(&ids).await?.into_iter().map(|p| (p.marketo_id, p)).collect();
        let mut plan = Plan::default();
        let mut by_email: HashMap<String, Result<Vec<PersonRef>, Error>> = HashMap::new();
        for item in &claimed {
            match &item.payload {
                OutboxPayload::Activity { activity } => {
                    self.plan_activity(&mut fin, &mut plan, &mut by_email, &people, item, activity, &admin, types).await
                }
                OutboxPayload::Unsubscribe { marketo_id } => {
                    let Some(person) = people.get(marketo_id).cloned() else {
                        fin.skip(item, format!("person {marketo_id} is no longer in the mirror"));
                        continue;
                    };
                    match person.salesforce_who_id().cloned() {
                        None => fin.skip(item, "the person has no Salesforce id"),
                        Some(who) if who.object() == SalesforceObject::Lead => {
                            plan.via_lead.push(ViaLead::OptOut { item, person })
                        }
                        Some(who) => plan.opt_outs.push(OptOut { item, who }),
                    }
                }
                OutboxPayload::Reminder { task } => {
                    self.plan_reminder(&mut fin, &mut plan, &people, item, task, &admin).await?
                }
            }
        }
        self.resolve_conversions(&mut fin, &mut plan, &admin, types).await;
        self.write_salesforce(&mut fin, plan, &admin).await;
        self.commit(fin, &claimed).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn plan_activity<'a>(
        &self,
        fin: &mut Finisher<'_>,
        plan: &mut Plan<'a>,
        by_email: &mut HashMap<String, Result<Vec<PersonRef>, Error>>,
        people: &People,
        item: &'a OutboxItem,
        activity: &'a SalesActivity,
        admin: &AdminSettings,
        types: &[String],
    ) {
        let Some(person) = people.get(&activity.marketo_id).cloned() else {
            fin.skip(item, format!("person {} is no longer in the mirror", activity.marketo_id));
            return;
        };
        match activity_task(activity, &person, None, admin, types) {
            TaskPlan::Skip(reason) => fin.skip(item, reason),
            TaskPlan::Write(task) if is_lead(task.who_id.as_ref()) => {
                plan.via_lead.push(ViaLead::Activity { item, activity, person })
            }
            TaskPlan::Write(task) => plan.upserts.push(Upsert { item, task, reminder: None }),
            TaskPlan::LookupByEmail(email) => {
                let key = email.to_ascii_lowercase();
                if !by_email.contains_key(&key) {
                    let found = self.salesforce.find_by_email(&email).await;
                    by_email.insert(key.clone(), found);
                }
                match by_email.get(&key) {
                    Some(Ok(found)) => match pick_email_match(found) {
                        None => fin.skip(item, "no Salesforce record with this email"),
                        Some((who, account)) => {
                            let mut p = person.clone();
                            if p.salesforce_account_id.is_none() {
                                p.salesforce_account_id = account;
                            }
                            match activity_task(activity, &p, Some(&who), admin, types) {
                                TaskPlan::Write(task) => plan.upserts.push(Upsert { item, task, reminder: None }),
                                TaskPlan::Skip(reason) => fin.skip(item, reason),
                                TaskPlan::LookupByEmail(_) => fin.skip(item, "no Salesforce record with this email"),
                            }
                        }
                    },
                    Some(Err(e)) => self.fail_items(fin, &[item], e, false),
                    None => fin.backoff(item, "email lookup result missing", false),
                }
            }
        }
    }

    async fn plan_reminder<'a>(
        &self,
        fin: &mut Finisher<'_>,
        plan: &mut Plan<'a>,
        people: &People,
        item: &'a OutboxItem,
        task: &ReminderTask,
        admin: &AdminSettings,
    ) -> Result<()> {
        let current = self.store.reminder(&task.id).await?;
        if let Some(cur) = &current
            && cur.updated_at > task.updated_at
        {
            fin.skip(item, "superseded by a later change of this reminder");
            return Ok(());
        }
        let mut task = task.clone();
        if task.salesforce_task_id.is_none() {
            task.salesforce_task_id = current.and_then(|c| c.salesforce_task_id);
        }
        if task.deleted {
            match task.salesforce_task_id {
                Some(task_id) => plan.deletes.push(Delete { item, task_id }),
                None => fin.skip(item, "the reminder never reached Salesforce"),
            }
            return Ok(());
        }
        if let Some(task_id) = task.salesforce_task_id.clone() {
            plan.updates.push(Update { item, task_id, fields: reminder_fields(&task, admin) });
            return Ok(());
        }
        let Some(person) = people.get(&task.marketo_id).cloned() else {
            fin.skip(item, format!("person {} is no longer in the mirror", task.marketo_id));
            return Ok(());
        };
        match reminder_task(&task, &person, admin) {
            None => fin.skip(item, "the person has no Salesforce id"),
            Some(w) if is_lead(w.who_id.as_ref()) => plan.via_lead.push(ViaLead::Reminder { item, task, person }),
            Some(w) => plan.upserts.push(Upsert { item, task: w, reminder: Some(task.id) }),
        }
        Ok(())
    }

    /// Never writes to a converted lead: asks Salesforce about every lead in the batch at once
    /// and re-plans converted ones against their contact.
    async fn resolve_conversions<'a>(
        &self,
        fin: &mut Finisher<'_>,
        plan: &mut Plan<'a>,
        admin: &AdminSettings,
        types: &[String],
    ) {
        let pending = std::mem::take(&mut plan.via_lead);
        if pending.is_empty() {
            return;
        }
        let mut leads: Vec<SalesforceId> = pending.iter().filter_map(|p| p.lead().cloned()).collect();
        leads.sort();
        leads.dedup();
        let conversions = match self.salesforce.lead_conversions(&leads).await {
            Ok(c) => c,
            Err(e) => {
                let items: Vec<&OutboxItem> = pending.iter().map(ViaLead::item).collect();
                self.fail_items(fin, &items, &e, false);
                return;
            }
        };
        let by_lead: HashMap<&SalesforceId, &LeadConversion> = conversions.iter().map(|c| (&c.lead_id, c)).collect();
        for p in pending {
            let conv = p.lead().and_then(|l| by_lead.get(l)).filter(|c| c.converted);
            let person = match (&p, conv) {
                (
                    ViaLead::Activity { person, .. }
                    | ViaLead::Reminder { person, .. }
                    | ViaLead::OptOut { person, .. },
                    None,
                ) => person.clone(),
                (
                    ViaLead::Activity { person, .. }
                    | ViaLead::Reminder { person, .. }
                    | ViaLead::OptOut { person, .. },
                    Some(c),
                ) => match follow_conversion(person, c) {
                    Some(p) => p,
                    None => {
                        fin.skip(p.item(), "the lead was converted but Salesforce names no contact");
                        continue;
                    }
                },
            };
            match p {
                ViaLead::Activity { item, activity, .. } => {
                    match activity_task(activity, &person, None, admin, types) {
                        TaskPlan::Write(task) => plan.upserts.push(Upsert { item, task, reminder: None }),
                        TaskPlan::Skip(reason) => fin.skip(item, reason),
                        TaskPlan::LookupByEmail(_) => fin.skip(item, "no Salesforce record for this person"),
                    }
                }
                ViaLead::Reminder { item, task, .. } => match reminder_task(&task, &person, admin) {
                    Some(w) => plan.upserts.push(Upsert { item, task: w, reminder: Some(task.id) }),
                    None => fin.skip(item, "the person has no Salesforce id"),
                },
                ViaLead::OptOut { item, .. } => match person.salesforce_who_id() {
                    Some(who) => plan.opt_outs.push(OptOut { item, who: who.clone() }),
                    None => fin.skip(item, "the person has no Salesforce id"),
                },
            }
        }
    }

    fn release_if_stopped(&self, fin: &mut Finisher<'_>, items: &[&OutboxItem]) -> bool {
        if self.gate(Target::Salesforce).is_none() {
            return false;
        }
        for i in items {
            fin.release(i, "Salesforce delivery is stopped", fin.now, false);
        }
        true
    }

    async fn write_salesforce(&self, fin: &mut Finisher<'_>, plan: Plan<'_>, admin: &AdminSettings) {
        let Plan { upserts, updates, deletes, opt_outs, .. } = plan;
        // Task upserts (activities and new reminders), idempotent by external id.
        let items: Vec<&OutboxItem> = upserts.iter().map(|u| u.item).collect();
        if !upserts.is_empty() && !self.release_if_stopped(fin, &items) {
            let tasks: Vec<TaskWrite> = upserts.iter().map(|u| u.task.clone()).collect();
            match self.salesforce.upsert_tasks(&tasks).await {
                Ok(outcomes) => {
                    for (i, u) in upserts.iter().enumerate() {
                        match outcomes.get(i) {
                            Some(RecordOutcome::Written { id }) => {
                                if let Some(rid) = &u.reminder {
                                    self.remember_task_id(rid, id).await;
                                }
                                fin.delivered(u.item, id.clone());
                            }
                            Some(RecordOutcome::Rejected { code, message }) => {
                                self.salesforce_record_failure(fin, u.item, code, message);
                            }
                            None => fin.backoff(u.item, "Salesforce returned no result for this Task", false),
                        }
                    }
                }
                Err(e) => self.fail_items(fin, &items, &e, false),
            }
        }
        // Reminder edits of Tasks Salesforce already has.
        let items: Vec<&OutboxItem> = updates.iter().map(|u| u.item).collect();
        if !updates.is_empty() && !self.release_if_stopped(fin, &items) {
            let batch: Vec<(SalesforceId, Fields)> =
                updates.iter().map(|u| (u.task_id.clone(), u.fields.clone())).collect();
            match self.salesforce.update_tasks(&batch).await {
                Ok(outcomes) => {
                    for (i, u) in updates.iter().enumerate() {
                        match outcomes.get(i) {
                            Some(RecordOutcome::Written { .. }) => fin.delivered(u.item, u.task_id.to_string()),
                            Some(RecordOutcome::Rejected { code, .. }) if GONE.contains(&code.as_str()) => {
                                fin.skip(u.item, "the Salesforce Task was deleted in Salesforce")
                            }
                            Some(RecordOutcome::Rejected { code, message }) => {
                                self.salesforce_record_failure(fin, u.item, code, message);
                            }
                            None => fin.backoff(u.item, "Salesforce returned no result for this Task", false),
                        }
                    }
                }
                Err(e) => self.fail_items(fin, &items, &e, false),
            }
        }
        // Reminder deletions.
        for d in &deletes {
            if self.release_if_stopped(fin, &[d.item]) {
                continue;
            }
            match self.salesforce.delete_task(&d.task_id).await {
                Ok(()) | Err(Error::NotFound { .. }) => fin.delivered(d.item, d.task_id.to_string()),
                Err(Error::Rejected { code, .. }) if GONE.contains(&code.as_str()) => {
                    fin.delivered(d.item, d.task_id.to_string())
                }
                Err(e) => self.fail_items(fin, &[d.item], &e, false),
            }
        }
        // Unsubscribes, to the configured opt-out field.
        let items: Vec<&OutboxItem> = opt_outs.iter().map(|o| o.item).collect();
        if !opt_outs.is_empty() && !self.release_if_stopped(fin, &items) {
            let ids: Vec<SalesforceId> = opt_outs.iter().map(|o| o.who.clone()).collect();
            match self.salesforce.set_opted_out(&ids, &admin.salesforce_opt_out_field).await {
                Ok(outcomes) => {
                    for (i, o) in opt_outs.iter().enumerate() {
                        match outcomes.get(i) {
                            Some(RecordOutcome::Written { .. }) => fin.delivered(o.item, o.who.to_string()),
                            Some(RecordOutcome::Rejected { code, message }) => {
                                self.salesforce_record_failure(fin, o.item, code, message);
                            }
                            None => fin.backoff(o.item, "Salesforce returned no result for this record", false),
                        }
                    }
                }
                Err(e) => self.fail_items(fin, &items, &e, false),
            }
        }
    }

    /// Stores the Salesforce Task id on a reminder (best effort: without it, later edits still
    /// upsert the same Task by external id).
    async fn remember_task_id(&self, reminder_id: &str, task_id: &str) {
        let Ok(id) = SalesforceId::parse(task_id) else {
            tracing::warn!(reminder_id, task_id, "Salesforce returned an invalid Task id");
            return;
        };
        // Only the id column: a change the host recorded since this write started stays.
        match self.store.set_reminder_task_id(reminder_id, &id).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(reminder_id, "the reminder of a written Task is gone"),
            Err(e) => tracing::warn!(reminder_id, error = %e, "could not store the reminder's Salesforce Task id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SalesforceId {
        SalesforceId::parse(s).unwrap()
    }

    #[test]
    fn email_match_prefers_contacts_then_conversions() {
        let lead = PersonRef { id: id("00Q5g00000QwErT"), converted_contact_id: None, account_id: None };
        let converted = PersonRef {
            id: id("00Q5g00000QwErU"),
            converted_contact_id: Some(id("0035g00000XyZaC")),
            account_id: Some(id("0015g00000AbCdE")),
        };
        let contact = PersonRef { id: id("0035g00000XyZaB"), converted_contact_id: None, account_id: None };
        assert_eq!(pick_email_match(&[lead.clone(), contact.clone()]).unwrap().0, contact.id);
        assert_eq!(pick_email_match(&[lead.clone(), converted.clone()]).unwrap().0, id("0035g00000XyZaC"));
        assert_eq!(pick_email_match(std::slice::from_ref(&lead)).unwrap().0, lead.id);
        assert_eq!(pick_email_match(&[]), None);
    }

    #[test]
    fn reminder_updates_send_the_subject_only_through_the_template() {
        let task = ReminderTask {
            id: "r1".into(),
            marketo_id: 1,
            subject: "Call back".into(),
            status: salesync_core::activity::ReminderStatus::Complete,
            priority: salesync_core::activity::ReminderPriority::High,
            due_date: chrono::NaiveDate::from_ymd_opt(2026, 12, 1),
            details: None,
            salesforce_task_id: None,
            deleted: false,
            updated_at: chrono::Utc::now(),
        };
        let mut admin = AdminSettings::default();
        let f = reminder_fields(&task, &admin);
        assert!(f.contains(&("Subject".into(), "[Sales Insight Actions] - Custom: Call back".into())));
        assert!(f.contains(&("ActivityDate".into(), "2026-12-01".into())));
        assert!(f.contains(&("Priority".into(), "High".into())));
        admin.subject_template = "[Sales Insight Actions] - {{activity_type}}".into();
        let f = reminder_fields(&task, &admin);
        assert!(!f.iter().any(|(k, _)| k == "Subject"));
        assert!(f.contains(&("Status".into(), "Completed".into())));
    }
}
