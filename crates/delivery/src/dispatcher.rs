//! The dispatcher: recording API, status, the delivery round and the run loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use salesync_core::activity::{
    ReminderPriority, ReminderStatus, ReminderTask, SalesActivity, UnsubscribeOrigin, UnsubscribeState,
};
use salesync_core::ports::marketo::MarketoApi;
use salesync_core::ports::salesforce::SalesforceApi;
use salesync_core::ports::store::{
    BindOnce, NewOutboxItem, OutboxCounts, OutboxItem, OutboxPayload, OutboxState, Recording, Store, Target,
};
use salesync_core::salesforce_codes::{Category, lookup};
use salesync_core::{Error, Result, error::Service};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell, broadcast};
use tokio_util::sync::CancellationToken;

use crate::events::{DeliveryEvent, DeliveryReport, TargetStatus};
use crate::finish::Finisher;
use crate::settings::DeliverySettings;

/// Longest reminder subject accepted (Salesforce's Subject length).
pub const MAX_REMINDER_SUBJECT_CHARS: usize = 255;
/// Longest reminder details accepted (Salesforce's Task Description length).
pub const MAX_REMINDER_DETAILS_CHARS: usize = 32_000;

/// What a recording call stored: salesync's id and the outbox items it enqueued.
///
/// Keep it to ask [`Dispatcher::status`] later; it serializes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The activity id, reminder id, or unsubscribe key.
    pub id: String,
    /// The outbox items enqueued (none when nothing needed delivering).
    pub outbox_ids: Vec<i64>,
}

/// A new reminder task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewReminder {
    /// salesync id; generated (UUID v4, simple form) when `None` or empty.
    pub id: Option<String>,
    /// The person (must be in the mirror).
    pub marketo_id: i64,
    /// Task name (1–255 characters).
    pub subject: String,
    /// Priority.
    pub priority: ReminderPriority,
    /// Due date.
    pub due_date: Option<NaiveDate>,
    /// Details (≤32,000 characters).
    pub details: Option<String>,
}

/// Changes to a reminder task; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReminderChanges {
    /// New task name.
    pub subject: Option<String>,
    /// New priority.
    pub priority: Option<ReminderPriority>,
    /// New due date (`Some(None)` clears it).
    pub due_date: Option<Option<NaiveDate>>,
    /// New details (`Some(None)` clears them).
    pub details: Option<Option<String>>,
}

/// Whether a sales email may be sent to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum CanEmail {
    /// Nothing blocks the send.
    Allowed,
    /// The person is unsubscribed in salesync.
    Unsubscribed {
        /// Where the unsubscribe came from.
        origin: UnsubscribeOrigin,
        /// When.
        at: DateTime<Utc>,
    },
    /// Marketo's live check says the person is unsubscribed (Marketo Unsubscribe Check on).
    UnsubscribedInMarketo,
}

impl CanEmail {
    /// True when the send may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, CanEmail::Allowed)
    }
}

/// Builds a [`Dispatcher`].
#[derive(Debug, Default)]
pub struct DispatcherBuilder {
    marketo: Option<Arc<dyn MarketoApi>>,
    salesforce: Option<Arc<dyn SalesforceApi>>,
    store: Option<Arc<dyn Store>>,
    settings: DeliverySettings,
    instance_id: Option<String>,
}

impl DispatcherBuilder {
    /// The Marketo connector.
    pub fn marketo(mut self, marketo: Arc<dyn MarketoApi>) -> Self {
        self.marketo = Some(marketo);
        self
    }

    /// The Salesforce connector.
    pub fn salesforce(mut self, salesforce: Arc<dyn SalesforceApi>) -> Self {
        self.salesforce = Some(salesforce);
        self
    }

    /// The store holding the mirror and the outbox: any [`Store`], such as a host's
    /// `Arc<dyn Store>` or an `Arc<MemoryStore>` (the store traits forward through `Arc` and
    /// `Box`). Delivery uses every store concern (the mirror's reads, the outbox, reminders,
    /// unsubscribes, settings, checkpoints and leases of its polls, the instance binding).
    pub fn store<S: Store>(mut self, store: S) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Delivery settings (defaults otherwise).
    pub fn settings(mut self, settings: DeliverySettings) -> Self {
        self.settings = settings;
        self
    }

    /// The Marketo instance this dispatcher works for (the engine's `instance_id`). The store is
    /// bound to it ([`InstanceBinding::bind_instance`](salesync_core::ports::store::InstanceBinding::bind_instance)) before the first recording or delivery round; a store
    /// bound to another instance is refused with `Error::Conflict` naming both, and nothing is
    /// recorded or delivered. Without it the store's binding is not checked.
    pub fn instance_id(mut self, instance_id: impl Into<String>) -> Self {
        self.instance_id = Some(instance_id.into());
        self
    }

    /// The dispatcher; fails when a port is missing or a setting is out of range.
    pub fn build(self) -> Result<Dispatcher> {
        let missing = |key: &str| Error::Config { key: key.into(), reason: "not set on the dispatcher builder".into() };
        let marketo = self.marketo.ok_or_else(|| missing("marketo"))?;
        let salesforce = self.salesforce.ok_or_else(|| missing("salesforce"))?;
        let store = self.store.ok_or_else(|| missing("store"))?;
        let s = self.settings;
        let bad = |key: &str, reason: &str| Error::Config { key: key.into(), reason: reason.into() };
        if !(1..=300).contains(&s.marketo_batch) {
            return Err(bad("marketo_batch", "must be 1-300 (Add Custom Activities takes at most 300)"));
        }
        if !(1..=200).contains(&s.salesforce_batch) {
            return Err(bad("salesforce_batch", "must be 1-200 (sObject Collections take at most 200)"));
        }
        if s.max_attempts == 0 {
            return Err(bad("max_attempts", "must be at least 1"));
        }
        if s.lease.is_zero() {
            return Err(bad("lease", "must be longer than zero"));
        }
        if s.worker_id.trim().is_empty() {
            return Err(bad("worker_id", "must not be empty"));
        }
        if self.instance_id.as_deref().is_some_and(|i| i.trim().is_empty()) {
            return Err(bad("instance_id", "must name the Marketo instance"));
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                marketo,
                salesforce,
                store,
                settings: s,
                instance_id: self.instance_id,
                bound: BindOnce::new(),
                events,
                wake: Notify::new(),
                marketo_status: Mutex::new(TargetStatus::Active),
                salesforce_status: Mutex::new(TargetStatus::Active),
                type_ids: OnceCell::new(),
                task_type_values: OnceCell::new(),
                last_reminder_poll: Mutex::new(None),
                last_opt_out_attempt: Mutex::new(None),
                cooldowns: Mutex::new(HashMap::new()),
                reserve_recheck: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

/// salesync's outbound half: records host actions in the store's outbox and delivers them to
/// Marketo and Salesforce. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) marketo: Arc<dyn MarketoApi>,
    pub(crate) salesforce: Arc<dyn SalesforceApi>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) settings: DeliverySettings,
    /// The Marketo instance the store must be bound to, when set.
    instance_id: Option<String>,
    /// Set once the store is bound to `instance_id`.
    bound: BindOnce,
    events: broadcast::Sender<DeliveryEvent>,
    wake: Notify,
    marketo_status: Mutex<TargetStatus>,
    salesforce_status: Mutex<TargetStatus>,
    /// Provisioned custom activity type ids by apiName.
    pub(crate) type_ids: OnceCell<HashMap<String, i64>>,
    /// The org's Task Type picklist values.
    pub(crate) task_type_values: OnceCell<Vec<String>>,
    pub(crate) last_reminder_poll: Mutex<Option<DateTime<Utc>>>,
    pub(crate) last_opt_out_attempt: Mutex<Option<DateTime<Utc>>>,
    /// After a failed preflight call (provisioning, Task Type values), the target is left alone
    /// until this time, so a persistent failure is not retried every poll.
    cooldowns: Mutex<HashMap<Target, DateTime<Utc>>>,
    /// Set when Salesforce delivery paused for the API reserve: the usage it saw only changes
    /// when a call is made, so the next check reads it again with one call first.
    pub(crate) reserve_recheck: std::sync::atomic::AtomicBool,
}

fn person_not_found(marketo_id: i64) -> Error {
    Error::NotFound { what: "person (not in the mirror)", id: marketo_id.to_string() }
}

impl Dispatcher {
    /// A builder.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::default()
    }

    /// The settings in force.
    pub fn settings(&self) -> &DeliverySettings {
        &self.inner.settings
    }

    /// Binds the store to the configured instance, once (see [`DispatcherBuilder::instance_id`]).
    async fn ensure_bound(&self) -> Result<()> {
        let inner = &self.inner;
        let Some(instance) = inner.instance_id.as_deref() else { return Ok(()) };
        inner.bound.bind(&*inner.store, instance).await
    }

    /// Subscribes to delivery events (a lagging receiver loses the oldest events).
    pub fn subscribe(&self) -> broadcast::Receiver<DeliveryEvent> {
        self.inner.events.subscribe()
    }

    /// Records a sales activity for delivery: a Marketo custom activity (key `<id>:marketo`)
    /// and, when the kind is logged to Salesforce and its admin switch is on, a Salesforce Task
    /// (key `<id>:salesforce`). An empty id is replaced by a new UUID v4 (simple form).
    ///
    /// Validates first (person in the mirror, required attributes, attribute size); on error
    /// nothing is stored. Recording the same id twice returns the existing items.
    pub async fn record_activity(&self, activity: SalesActivity) -> Result<Recorded> {
        let mut recorded = self.record_activities(vec![activity]).await?;
        recorded.pop().ok_or_else(|| Error::InvalidInput { field: "activity".into(), reason: "not recorded".into() })
    }

    /// Records many sales activities in one store transaction (a host importing history, or
    /// flushing a queue): all of them or, on any error, none. Each is validated and resolved as
    /// [`record_activity`](Self::record_activity) does; an error names the activity. Returns one
    /// [`Recorded`] per activity, in order. Much faster than one call per activity on a store
    /// that makes each transaction durable.
    pub async fn record_activities(&self, mut activities: Vec<SalesActivity>) -> Result<Vec<Recorded>> {
        for a in &mut activities {
            if a.id.trim().is_empty() {
                a.id = uuid::Uuid::new_v4().simple().to_string();
            }
            a.validate().map_err(|e| match e {
                Error::InvalidInput { field, reason } => {
                    Error::InvalidInput { field, reason: format!("{reason} (activity {})", a.id) }
                }
                other => other,
            })?;
        }
        self.ensure_bound().await?;
        let inner = &self.inner;
        let mut ids: Vec<i64> = activities.iter().map(|a| a.marketo_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut known = std::collections::HashSet::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            known.extend(inner.store.people_by_ids(chunk).await?.into_iter().map(|p| p.marketo_id));
        }
        if let Some(missing) = activities.iter().find(|a| !known.contains(&a.marketo_id)) {
            return Err(person_not_found(missing.marketo_id));
        }
        let admin = inner.store.settings().await?;
        let now = inner.now();
        let mut outbox = Vec::with_capacity(activities.len() * 2);
        let mut per_activity = Vec::with_capacity(activities.len());
        for activity in activities {
            let id = activity.id.clone();
            let to_salesforce = activity.kind.task_kind().is_some_and(|k| admin.logs_to_salesforce(k));
            outbox.push(NewOutboxItem {
                key: format!("{id}:marketo"),
                target: Target::Marketo,
                payload: OutboxPayload::Activity { activity: activity.clone() },
                not_before: now,
            });
            if to_salesforce {
                outbox.push(NewOutboxItem {
                    key: format!("{id}:salesforce"),
                    target: Target::Salesforce,
                    payload: OutboxPayload::Activity { activity },
                    not_before: now,
                });
            }
            per_activity.push((id, if to_salesforce { 2 } else { 1 }));
        }
        let outbox_ids = inner.store.record(Recording { outbox, ..Recording::default() }).await?;
        inner.wake.notify_one();
        let mut ids = outbox_ids.into_iter();
        Ok(per_activity
            .into_iter()
            .map(|(id, n)| Recorded { id, outbox_ids: ids.by_ref().take(n).collect() })
            .collect())
    }

    /// Records that a person unsubscribed in salesync and enqueues the push of the opt-out to
    /// Salesforce (key `unsub:<marketo id>:<nanos>`). The push happens whatever the activity
    /// logging switches say; nothing is ever written to Marketo.
    pub async fn record_unsubscribe(&self, marketo_id: i64) -> Result<Recorded> {
        self.ensure_bound().await?;
        let inner = &self.inner;
        if inner.store.person(marketo_id).await?.is_none() {
            return Err(person_not_found(marketo_id));
        }
        let now = inner.now();
        let key = format!("unsub:{marketo_id}:{}", now.timestamp_nanos_opt().unwrap_or_else(|| now.timestamp_micros()));
        let recording = Recording {
            unsubscribe: Some(UnsubscribeState {
                marketo_id,
                unsubscribed: true,
                origin: UnsubscribeOrigin::Salesync,
                at: now,
            }),
            reminder: None,
            outbox: vec![NewOutboxItem {
                key: key.clone(),
                target: Target::Salesforce,
                payload: OutboxPayload::Unsubscribe { marketo_id },
                not_before: now,
            }],
        };
        let outbox_ids = inner.store.record(recording).await?;
        inner.wake.notify_one();
        Ok(Recorded { id: key, outbox_ids })
    }

    /// Creates a reminder task; when reminder task sync is on, enqueues its Salesforce Task.
    pub async fn create_reminder(&self, new: NewReminder) -> Result<Recorded> {
        validate_subject(&new.subject)?;
        validate_details(new.details.as_deref())?;
        self.ensure_bound().await?;
        if self.inner.store.person(new.marketo_id).await?.is_none() {
            return Err(person_not_found(new.marketo_id));
        }
        let id = new.id.filter(|i| !i.trim().is_empty()).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if id.len() > 64 {
            return Err(Error::InvalidInput { field: "id".into(), reason: "must be 1-64 characters".into() });
        }
        if self.inner.store.reminder(&id).await?.is_some() {
            return Err(Error::Conflict { what: "reminder", detail: format!("a reminder with id {id} exists") });
        }
        let task = ReminderTask {
            id,
            marketo_id: new.marketo_id,
            subject: new.subject,
            status: ReminderStatus::Open,
            priority: new.priority,
            due_date: new.due_date,
            details: new.details,
            salesforce_task_id: None,
            deleted: false,
            updated_at: self.inner.now(),
        };
        self.store_reminder(task).await
    }

    /// Edits a reminder task.
    pub async fn edit_reminder(&self, id: &str, changes: ReminderChanges) -> Result<Recorded> {
        if let Some(s) = &changes.subject {
            validate_subject(s)?;
        }
        if let Some(d) = &changes.details {
            validate_details(d.as_deref())?;
        }
        self.change_reminder(id, |t| {
            if let Some(s) = changes.subject {
                t.subject = s;
            }
            if let Some(p) = changes.priority {
                t.priority = p;
            }
            if let Some(d) = changes.due_date {
                t.due_date = d;
            }
            if let Some(d) = changes.details {
                t.details = d;
            }
        })
        .await
    }

    /// Marks a reminder task complete.
    pub async fn complete_reminder(&self, id: &str) -> Result<Recorded> {
        self.change_reminder(id, |t| t.status = ReminderStatus::Complete).await
    }

    /// Reopens a completed reminder task.
    pub async fn reopen_reminder(&self, id: &str) -> Result<Recorded> {
        self.change_reminder(id, |t| t.status = ReminderStatus::Open).await
    }

    /// Deletes a reminder task (kept as a tombstone so the deletion reaches Salesforce).
    pub async fn delete_reminder(&self, id: &str) -> Result<Recorded> {
        self.change_reminder(id, |t| t.deleted = true).await
    }

    /// A reminder task.
    pub async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
        self.inner.store.reminder(id).await
    }

    /// A person's reminder tasks (deleted ones included).
    pub async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
        self.inner.store.reminders_for(marketo_id).await
    }

    async fn change_reminder(&self, id: &str, change: impl FnOnce(&mut ReminderTask)) -> Result<Recorded> {
        self.ensure_bound().await?;
        let Some(mut task) = self.inner.store.reminder(id).await? else {
            return Err(Error::NotFound { what: "reminder", id: id.to_string() });
        };
        if task.deleted {
            return Err(Error::InvalidInput { field: "id".into(), reason: format!("reminder {id} is deleted") });
        }
        let before = task.updated_at;
        change(&mut task);
        // Strictly later than the last change, so keys stay unique and the latest edit wins.
        task.updated_at = self.inner.now().max(before + chrono::Duration::milliseconds(1));
        self.store_reminder(task).await
    }

    async fn store_reminder(&self, task: ReminderTask) -> Result<Recorded> {
        let inner = &self.inner;
        let admin = inner.store.settings().await?;
        let id = task.id.clone();
        let mut outbox = Vec::new();
        if admin.reminder_task_sync {
            let nanos = task.updated_at.timestamp_nanos_opt().unwrap_or_else(|| task.updated_at.timestamp_micros());
            outbox.push(NewOutboxItem {
                key: format!("{id}:{nanos}"),
                target: Target::Salesforce,
                payload: OutboxPayload::Reminder { task: task.clone() },
                not_before: inner.now(),
            });
        }
        let outbox_ids = inner.store.record(Recording { unsubscribe: None, reminder: Some(task), outbox }).await?;
        inner.wake.notify_one();
        Ok(Recorded { id, outbox_ids })
    }

    /// The outbox items of a recording, in the order enqueued.
    pub async fn status(&self, recorded: &Recorded) -> Result<Vec<OutboxItem>> {
        let mut out = Vec::with_capacity(recorded.outbox_ids.len());
        for id in &recorded.outbox_ids {
            if let Some(item) = self.inner.store.outbox_item(*id).await? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// One outbox item.
    pub async fn item(&self, outbox_id: i64) -> Result<Option<OutboxItem>> {
        self.inner.store.outbox_item(outbox_id).await
    }

    /// Outbox counts by state.
    pub async fn counts(&self) -> Result<OutboxCounts> {
        self.inner.store.outbox_counts().await
    }

    /// Parked items, oldest first, with their raw errors.
    pub async fn parked(&self, limit: u32) -> Result<Vec<OutboxItem>> {
        self.inner.store.outbox_items(OutboxState::Parked, limit).await
    }

    /// Moves parked items back to pending (an admin's "retry the message"); returns how many.
    pub async fn retry_parked(&self, ids: &[i64]) -> Result<u64> {
        self.ensure_bound().await?;
        let n = self.inner.store.requeue(ids, self.inner.now()).await?;
        self.inner.wake.notify_one();
        Ok(n)
    }

    /// Whether a sales email may go to this person: salesync's own unsubscribe state and, when
    /// the Marketo Unsubscribe Check admin setting is on, Marketo's live `unsubscribed` flag.
    /// Marketo is only read, never written.
    pub async fn check_can_email(&self, marketo_id: i64) -> Result<CanEmail> {
        // It asks Marketo about a mirror id: both must be the same instance's.
        self.ensure_bound().await?;
        let inner = &self.inner;
        if inner.store.person(marketo_id).await?.is_none() {
            return Err(person_not_found(marketo_id));
        }
        if let Some(u) = inner.store.unsubscribe(marketo_id).await?
            && u.unsubscribed
        {
            return Ok(CanEmail::Unsubscribed { origin: u.origin, at: u.at });
        }
        if inner.store.settings().await?.marketo_unsubscribe_check
            && inner.marketo.lead_unsubscribed(marketo_id).await? == Some(true)
        {
            return Ok(CanEmail::UnsubscribedInMarketo);
        }
        Ok(CanEmail::Allowed)
    }

    /// Whether a target is being delivered to.
    pub fn target_status(&self, target: Target) -> TargetStatus {
        self.inner.status_of(target)
    }

    /// Resumes a target stopped for a reconnect (call after fixing the credentials) or paused
    /// for its quota.
    pub fn reconnected(&self, target: Target) {
        self.inner.set_status(target, TargetStatus::Active);
        self.inner.wake.notify_one();
    }

    /// One round: delivers due items of each target that is not stopped, then (when enabled
    /// and due) polls Salesforce for reminder task changes and runs the opt-out reconcile.
    ///
    /// Connector failures are handled per item (retry, park, stop) and reported; only store
    /// failures are returned as errors. Safe to cancel at any await: claimed items come back
    /// when their lease expires and are re-delivered without duplicates.
    pub async fn deliver_once(&self) -> Result<DeliveryReport> {
        self.ensure_bound().await?;
        let inner = &self.inner;
        let mut report = DeliveryReport::default();
        let (mut marketo_errors, mut salesforce_errors) = (Vec::new(), Vec::new());
        let (marketo, salesforce) =
            tokio::join!(inner.deliver_marketo(&mut marketo_errors), inner.deliver_salesforce(&mut salesforce_errors));
        report.errors.extend(marketo_errors);
        report.errors.extend(salesforce_errors);
        report.marketo = marketo?;
        report.salesforce = salesforce?;
        if inner.gate(Target::Salesforce).is_none() {
            let admin = inner.store.settings().await?;
            if admin.reminder_task_sync && inner.reminder_poll_due() {
                report.reminders = inner.poll_reminders(&mut report.errors).await?;
            }
            if inner.settings.opt_out_reconcile && inner.gate(Target::Salesforce).is_none() {
                report.opt_outs = inner.reconcile_opt_outs(&admin.salesforce_opt_out_field, &mut report.errors).await?;
            }
        }
        Ok(report)
    }

    /// Delivers until `cancel` fires: a round, then (when nothing more is due) waits for the
    /// poll interval or a new recording. Store failures are logged and retried after the poll
    /// interval. A store bound to another Marketo instance stops it at once (logged as an error).
    pub async fn run(&self, cancel: CancellationToken) {
        let s = &self.inner.settings;
        loop {
            let bound = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.ensure_bound() => r,
            };
            match bound {
                Ok(()) => break,
                Err(e @ Error::Conflict { .. }) => {
                    tracing::error!(error = %e, "delivery not started: the store belongs to another Marketo instance");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "binding the store failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(s.poll_interval) => {},
                    }
                }
            }
        }
        loop {
            let more = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.deliver_once() => match r {
                    Ok(report) => report.more_due(s.marketo_batch, s.salesforce_batch),
                    Err(e) => {
                        tracing::warn!(error = %e, "delivery round failed");
                        false
                    }
                },
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(s.poll_interval) => {},
                _ = self.inner.wake.notified() => {},
            }
        }
    }
}

fn validate_subject(subject: &str) -> Result<()> {
    let n = subject.trim().chars().count();
    if n == 0 || subject.chars().count() > MAX_REMINDER_SUBJECT_CHARS {
        return Err(Error::InvalidInput {
            field: "subject".into(),
            reason: format!("must be 1-{MAX_REMINDER_SUBJECT_CHARS} characters"),
        });
    }
    Ok(())
}

fn validate_details(details: Option<&str>) -> Result<()> {
    if details.is_some_and(|d| d.chars().count() > MAX_REMINDER_DETAILS_CHARS) {
        return Err(Error::InvalidInput {
            field: "details".into(),
            reason: format!("at most {MAX_REMINDER_DETAILS_CHARS} characters"),
        });
    }
    Ok(())
}

impl Inner {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.settings.clock.now()
    }

    fn slot(&self, target: Target) -> &Mutex<TargetStatus> {
        match target {
            Target::Marketo => &self.marketo_status,
            Target::Salesforce => &self.salesforce_status,
        }
    }

    pub(crate) fn status_of(&self, target: Target) -> TargetStatus {
        self.slot(target).lock().map(|g| g.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_status(&self, target: Target, status: TargetStatus) {
        match self.slot(target).lock() {
            Ok(mut g) => *g = status,
            Err(p) => *p.into_inner() = status,
        }
    }

    pub(crate) fn emit(&self, event: DeliveryEvent) {
        // No receivers is fine.
        let _ = self.events.send(event);
    }

    /// `Some(status)` when the target must not be delivered to now; lifts expired pauses.
    pub(crate) fn gate(&self, target: Target) -> Option<TargetStatus> {
        match self.status_of(target) {
            TargetStatus::Active => None,
            TargetStatus::Paused { until } if until <= self.now() => {
                self.set_status(target, TargetStatus::Active);
                None
            }
            other => Some(other),
        }
    }

    /// True while a target cools down after a failed preflight call.
    pub(crate) fn cooling_down(&self, target: Target) -> bool {
        let now = self.now();
        self.cooldowns.lock().map(|g| g.get(&target).is_some_and(|until| *until > now)).unwrap_or(false)
    }

    /// Leaves a target alone for a while after a failed preflight call.
    pub(crate) fn cool_down(&self, target: Target) {
        let until = self.settings.backoff(3, self.now());
        if let Ok(mut g) = self.cooldowns.lock() {
            g.insert(target, until);
        }
    }

    /// Stops a target until [`Dispatcher::reconnected`]; emits `Reconnect` once.
    pub(crate) fn stop_for_reconnect(&self, target: Target, detail: &str) {
        if matches!(self.status_of(target), TargetStatus::ReconnectRequired { .. }) {
            return;
        }
        tracing::warn!(?target, detail, "authentication failed; delivery stopped until reconnected");
        self.set_status(target, TargetStatus::ReconnectRequired { detail: detail.to_string() });
        self.emit(DeliveryEvent::Reconnect { target, detail: detail.to_string() });
    }

    /// Pauses a target until `until`; emits `QuotaExhausted`.
    pub(crate) fn pause(&self, target: Target, until: DateTime<Utc>) {
        if matches!(self.status_of(target), TargetStatus::ReconnectRequired { .. }) {
            return;
        }
        tracing::warn!(?target, %until, "quota exhausted; delivery paused");
        self.set_status(target, TargetStatus::Paused { until });
        self.emit(DeliveryEvent::QuotaExhausted { target, until });
    }

    /// Handles a connector failure that concerns no item (provisioning, polls).
    pub(crate) fn target_error(&self, target: Target, err: &Error, errors: &mut Vec<String>) {
        match err {
            Error::Unauthenticated { detail, .. } => self.stop_for_reconnect(target, detail),
            Error::QuotaExhausted { resets_at, .. } => {
                self.pause(target, resets_at.unwrap_or_else(|| self.now() + chrono::Duration::hours(1)))
            }
            Error::Rejected { code, message, .. }
                if target == Target::Salesforce && lookup(code, message).category == Category::Authentication =>
            {
                self.stop_for_reconnect(target, &format!("{code}: {message}"))
            }
            _ => {}
        }
        tracing::warn!(?target, error = %err, "connector call failed");
        errors.push(format!("{target:?}: {err}"));
    }

    /// Applies a whole-call failure to `items`. `known_unknown` marks items whose outcome was
    /// already unknown before this call, so they keep needing a lookup.
    pub(crate) fn fail_items(&self, fin: &mut Finisher<'_>, items: &[&OutboxItem], err: &Error, known_unknown: bool) {
        let now = fin.now;
        let text = err.to_string();
        let unknown = known_unknown || outcome_may_have_happened(err);
        let target = match err {
            Error::Unauthenticated { service: Service::Salesforce, .. } => Target::Salesforce,
            _ if items.first().is_some_and(|i| i.target == Target::Salesforce) => Target::Salesforce,
            _ => Target::Marketo,
        };
        match err {
            Error::Unauthenticated { detail, .. } => {
                self.stop_for_reconnect(target, detail);
                for i in items {
                    fin.release(i, &text, now, unknown);
                }
            }
            Error::QuotaExhausted { resets_at, .. } => {
                let until = resets_at.unwrap_or_else(|| now + chrono::Duration::hours(1));
                self.pause(target, until);
                for i in items {
                    fin.release(i, &text, until, unknown);
                }
            }
            Error::RateLimited { retry_after, .. } => {
                for i in items {
                    let mut at = self.settings.backoff(i.attempts, now);
                    if let Some(d) = retry_after.and_then(|d| chrono::Duration::from_std(d).ok()) {
                        at = at.max(now + d);
                    }
                    fin.retry(i, &text, at, unknown);
                }
            }
            Error::AccessDenied { code, message, .. } => {
                for i in items {
                    if unknown {
                        // The write may have happened: keep it alive for the lookup.
                        fin.backoff(i, &text, true);
                    } else {
                        fin.park(i, format!("[access/validation] {code}: {message}"));
                    }
                }
            }
            Error::Rejected { code, message, .. } if target == Target::Salesforce => {
                for i in items {
                    self.salesforce_record_failure(fin, i, code, message);
                }
            }
            _ => {
                for i in items {
                    fin.backoff(i, &text, unknown);
                }
            }
        }
    }

    /// Applies one Salesforce per-record (or whole-call) failure by its code's entry in the
    /// Salesforce code table: Authentication stops delivery for a reconnect, what may pass later
    /// is retried with a backoff, the rest is parked under its diagnostics category.
    pub(crate) fn salesforce_record_failure(
        &self,
        fin: &mut Finisher<'_>,
        item: &OutboxItem,
        code: &str,
        message: &str,
    ) {
        let info = lookup(code, message);
        let raw = format!("{code}: {message}");
        if info.category == Category::Authentication {
            self.stop_for_reconnect(Target::Salesforce, &raw);
            fin.release(item, &raw, fin.now, false);
        } else if info.retried() {
            fin.backoff(item, &raw, false);
        } else {
            fin.park(item, format!("[{}] {raw}", info.category.label()));
        }
    }

    /// Writes a batch's outcomes, then emits its events.
    pub(crate) async fn commit(
        &self,
        mut fin: Finisher<'_>,
        claimed: &[OutboxItem],
    ) -> Result<crate::events::TargetReport> {
        fin.release_rest(claimed);
        let now = fin.now;
        let (finished, events, mut report) = fin.into_parts();
        if !finished.is_empty() {
            self.store.finish(finished, now).await?;
        }
        for e in events {
            self.emit(e);
        }
        report.status = self.status_of(claimed.first().map_or(Target::Marketo, |i| i.target));
        Ok(report)
    }

    fn reminder_poll_due(&self) -> bool {
        let now = self.now();
        let last = self.last_reminder_poll.lock().map(|g| *g).unwrap_or(None);
        let interval = chrono::Duration::from_std(self.settings.reminder_poll_interval)
            .unwrap_or_else(|_| chrono::Duration::minutes(1));
        last.is_none_or(|l| now - l >= interval)
    }
}

/// True when a failed call may still have been applied by the service (the response was lost).
pub(crate) fn outcome_may_have_happened(err: &Error) -> bool {
    matches!(
        err,
        Error::OutcomeUnknown { .. } | Error::Unavailable { .. } | Error::Transport { .. } | Error::Protocol { .. }
    )
}
