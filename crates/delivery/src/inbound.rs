//! What salesync pulls from Salesforce: reminder Task changes and opt-outs.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use salesync_core::Result;
use salesync_core::activity::{ReminderTask, UnsubscribeOrigin, UnsubscribeState};
use salesync_core::outbound::{ReminderMerge, import_reminder, merge_reminder};
use salesync_core::ports::salesforce::TaskRecord;
use salesync_core::ports::store::{
    Checkpoint, InboundBatch, LeaseStoreExt, NewOutboxItem, OutboxPayload, OutboxState, Recording, StreamId, Target,
};
use serde::{Deserialize, Serialize};

use crate::dispatcher::Inner;
use crate::events::InboundReport;

/// Store lease that keeps the reminder poll to one process at a time.
pub const REMINDER_LEASE: &str = "salesync-delivery:reminder-sync";
/// Store lease that keeps the opt-out reconcile to one process at a time.
pub const OPT_OUT_LEASE: &str = "salesync-delivery:opt-out-reconcile";
/// Salesforce keeps deletions this long.
const DELETED_WINDOW_DAYS: i64 = 15;
/// Overlap when re-reading by SystemModstamp, so records sharing the high-water second are not
/// missed (re-reading is idempotent).
const OVERLAP_SECS: i64 = 1;

/// The id a reminder imported from a Salesforce Task gets: deterministic, so importing twice
/// (or from two processes) yields one reminder.
pub fn imported_reminder_id(task: &TaskRecord) -> String {
    format!("sf-{}", task.id)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TasksPosition {
    /// Highest SystemModstamp seen.
    modstamp: DateTime<Utc>,
    /// Deletions are read up to here.
    deleted_until: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OptOutPosition {
    /// Highest SystemModstamp seen.
    since: DateTime<Utc>,
    /// When the last complete reconcile started.
    last_run: Option<DateTime<Utc>>,
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(1))
}

impl Inner {
    /// Polls Salesforce for reminder Task changes (reminder task sync on). Returns `None` when
    /// another process holds the poll lease or the poll failed (the failure is in `errors`).
    pub(crate) async fn poll_reminders(&self, errors: &mut Vec<String>) -> Result<Option<InboundReport>> {
        let now = self.now();
        let ttl = self.settings.lease.max(self.settings.reminder_poll_interval);
        let work = async {
            if let Ok(mut g) = self.last_reminder_poll.lock() {
                *g = Some(now);
            }
            self.poll_reminders_leased(now).await
        };
        let Some(result) = self.store.with_lease(REMINDER_LEASE, &self.settings.worker_id, ttl, now, work).await?
        else {
            return Ok(None);
        };
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if matches!(e, salesync_core::Error::Backend { .. }) => Err(e),
            Err(e) => {
                self.target_error(Target::Salesforce, &e, errors);
                Ok(None)
            }
        }
    }

    async fn poll_reminders_leased(&self, now: DateTime<Utc>) -> Result<InboundReport> {
        let mut report = InboundReport::default();
        let position = self
            .store
            .checkpoint(StreamId::SalesforceTasks)
            .await?
            .and_then(|c| serde_json::from_value::<TasksPosition>(c.position).ok());
        // First enable: Tasks created or updated in the last 24 hours.
        let mut pos = position.unwrap_or(TasksPosition {
            modstamp: now - chrono::Duration::hours(24),
            deleted_until: now - chrono::Duration::hours(24),
        });
        let since = pos.modstamp - chrono::Duration::seconds(OVERLAP_SECS);
        let Some(unsent) = self.reminders_with_unsent_changes().await? else {
            tracing::info!("reminder poll deferred: the outbox backlog is too long to tell echoes from edits");
            return Ok(report);
        };
        let mut token = None;
        loop {
            let page = self.salesforce.tasks_modified_since(since, token).await?;
            let mut reminders = Vec::new();
            for task in &page.items {
                report.read += 1;
                pos.modstamp = pos.modstamp.max(task.modified_at);
                if let Some(r) = self.reminder_from_task(task, &reminders, &unsent).await? {
                    if r.deleted && !task.deleted && !unsent.contains(&r.id) {
                        self.purge_surviving_task(&r, task).await?;
                    }
                    reminders.retain(|x: &ReminderTask| x.id != r.id);
                    reminders.push(r);
                }
            }
            report.applied += reminders.len() as u32;
            self.store
                .apply_inbound(InboundBatch {
                    unsubscribes: Vec::new(),
                    reminders,
                    checkpoint: Some(self.tasks_checkpoint(&pos, now)?),
                })
                .await?;
            match (page.more, page.next_token) {
                (true, Some(t)) => token = Some(t),
                _ => break,
            }
        }
        // Deletions in Salesforce (within its 15-day window) remove the salesync task.
        let start =
            pos.deleted_until.max(now - chrono::Duration::days(DELETED_WINDOW_DAYS) + chrono::Duration::minutes(1));
        if start < now {
            let deleted = self.salesforce.tasks_deleted_between(start, now).await?;
            let mut reminders = Vec::new();
            for rec in &deleted.records {
                report.read += 1;
                if let Some(mut r) = self.store.reminder_by_salesforce_id(&rec.id).await?
                    && !r.deleted
                {
                    r.deleted = true;
                    r.updated_at = r.updated_at.max(rec.deleted_at);
                    reminders.push(r);
                }
            }
            report.applied += reminders.len() as u32;
            pos.deleted_until = deleted.latest_covered.filter(|t| *t < now && *t > start).unwrap_or(now);
            self.store
                .apply_inbound(InboundBatch {
                    unsubscribes: Vec::new(),
                    reminders,
                    checkpoint: Some(self.tasks_checkpoint(&pos, now)?),
                })
                .await?;
        }
        Ok(report)
    }

    fn tasks_checkpoint(&self, pos: &TasksPosition, now: DateTime<Utc>) -> Result<Checkpoint> {
        let position = serde_json::to_value(pos)
            .map_err(|e| salesync_core::Error::Backend { backend: "checkpoint", source: Box::new(e) })?;
        Ok(Checkpoint { stream: StreamId::SalesforceTasks, position, updated_at: now })
    }

    /// A reminder deleted in salesync whose Task is still alive in Salesforce (its create landed
    /// but the answer was lost, so the deletion was skipped as never having reached Salesforce):
    /// the deletion is enqueued again, now with the Task id. Keyed by Task, so re-reading the same
    /// page enqueues it once.
    async fn purge_surviving_task(&self, reminder: &ReminderTask, task: &TaskRecord) -> Result<()> {
        tracing::info!(reminder = %reminder.id, task = %task.id, "deleted reminder's Task is alive; deleting it again");
        let mut deleted = reminder.clone();
        deleted.salesforce_task_id = Some(task.id.clone());
        let item = NewOutboxItem {
            key: format!("{}:purge:{}", reminder.id, task.id),
            target: Target::Salesforce,
            payload: OutboxPayload::Reminder { task: deleted.clone() },
            not_before: self.now(),
        };
        self.store.record(Recording { unsubscribe: None, reminder: Some(deleted), outbox: vec![item] }).await?;
        Ok(())
    }

    /// Reminders with a change recorded by the host and not yet written to Salesforce (pending
    /// or in-flight outbox items); `None` when the backlog is too long to list.
    ///
    /// While such a change is on its way, a newer-looking Task is most likely the echo of
    /// salesync's own earlier write (its SystemModstamp is stamped when the write lands, after
    /// the host's later change was recorded); taking it would revert the host's change and
    /// then skip it as superseded. The host's pending change wins: it is about to overwrite
    /// the Task anyway.
    async fn reminders_with_unsent_changes(&self) -> Result<Option<HashSet<String>>> {
        const SCAN: u32 = 100_000;
        let mut ids = HashSet::new();
        for state in [OutboxState::Pending, OutboxState::InFlight] {
            let items = self.store.outbox_items(state, SCAN).await?;
            if items.len() as u64 >= u64::from(SCAN) {
                return Ok(None);
            }
            ids.extend(items.into_iter().filter_map(|i| match i.payload {
                OutboxPayload::Reminder { task } => Some(task.id),
                _ => None,
            }));
        }
        Ok(Some(ids))
    }

    /// What a Salesforce Task changes in salesync.
    ///
    /// A Task is a reminder candidate when its TaskSubtype is `Task` or absent, and its external
    /// id is empty or names a salesync reminder. salesync's own activity Tasks (TaskSubtype
    /// Email/Call, external id = an activity id) are therefore never imported.
    /// - Known reminder (by Task id, else by external id): merged by latest modification time
    ///   ([`merge_reminder`]), unless a host change of it is still `unsent` (then the host's
    ///   version stays); Salesforce's subject never comes back.
    /// - Unknown Task on a mirror person whose status maps: imported with id `sf-<Task id>`.
    async fn reminder_from_task(
        &self,
        task: &TaskRecord,
        pending: &[ReminderTask],
        unsent: &HashSet<String>,
    ) -> Result<Option<ReminderTask>> {
        if task.task_subtype.as_deref().is_some_and(|s| s != "Task") {
            return Ok(None);
        }
        let mut local = match pending.iter().find(|r| r.salesforce_task_id.as_ref() == Some(&task.id)) {
            Some(r) => Some(r.clone()),
            None => self.store.reminder_by_salesforce_id(&task.id).await?,
        };
        if local.is_none()
            && let Some(ext) = task.external_id.as_deref().filter(|e| !e.is_empty())
        {
            local = self.store.reminder(ext).await?;
            if local.is_none() {
                // salesync wrote this Task for something that is not a reminder.
                return Ok(None);
            }
        }
        if let Some(local) = local {
            let merged =
                if unsent.contains(&local.id) { ReminderMerge::KeepLocal } else { merge_reminder(&local, task) };
            return Ok(match merged {
                ReminderMerge::TakeRemote(mut next) => {
                    next.salesforce_task_id = Some(task.id.clone());
                    Some(next)
                }
                ReminderMerge::KeepLocal if local.salesforce_task_id.is_none() => {
                    let mut l = local;
                    l.salesforce_task_id = Some(task.id.clone());
                    Some(l)
                }
                ReminderMerge::KeepLocal => None,
            });
        }
        if task.deleted {
            return Ok(None);
        }
        let Some(who) = &task.who_id else { return Ok(None) };
        let people = self.store.people_by_salesforce_id(who).await?;
        let Some(person) = people.iter().min_by_key(|p| p.marketo_id) else { return Ok(None) };
        let id = imported_reminder_id(task);
        if self.store.reminder(&id).await?.is_some() {
            return Ok(None);
        }
        Ok(import_reminder(task, person, id))
    }

    /// Runs the opt-out reconcile when it is due (never ran, or ran longer than the interval
    /// ago). Only the unsubscribe direction: opted-out Leads/Contacts unsubscribe their mirror
    /// people (origin Salesforce); a cleared box changes nothing.
    pub(crate) async fn reconcile_opt_outs(
        &self,
        field: &str,
        errors: &mut Vec<String>,
    ) -> Result<Option<InboundReport>> {
        let now = self.now();
        // Checked at most once per reminder poll interval (so a failing reconcile is not retried
        // every round).
        let retry = chrono_of(self.settings.reminder_poll_interval);
        if let Ok(mut last) = self.last_opt_out_attempt.lock() {
            if last.is_some_and(|l| now - l < retry) {
                return Ok(None);
            }
            *last = Some(now);
        }
        let position = self
            .store
            .checkpoint(StreamId::SalesforceOptOuts)
            .await?
            .and_then(|c| serde_json::from_value::<OptOutPosition>(c.position).ok());
        let interval = chrono_of(self.settings.opt_out_reconcile_interval);
        if position.as_ref().and_then(|p| p.last_run).is_some_and(|l| now - l < interval) {
            return Ok(None);
        }
        let ttl = self.settings.lease.max(Duration::from_secs(600));
        let work = self.reconcile_leased(field, position, now);
        let Some(result) = self.store.with_lease(OPT_OUT_LEASE, &self.settings.worker_id, ttl, now, work).await? else {
            return Ok(None);
        };
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) if matches!(e, salesync_core::Error::Backend { .. }) => Err(e),
            Err(e) => {
                self.target_error(Target::Salesforce, &e, errors);
                Ok(None)
            }
        }
    }

    async fn reconcile_leased(
        &self,
        field: &str,
        position: Option<OptOutPosition>,
        now: DateTime<Utc>,
    ) -> Result<InboundReport> {
        let mut report = InboundReport::default();
        let mut pos = position.unwrap_or(OptOutPosition { since: DateTime::UNIX_EPOCH, last_run: None });
        let since = pos.since - chrono::Duration::seconds(OVERLAP_SECS);
        let mut token = None;
        loop {
            let page = self.salesforce.opted_out_since(field, since, token).await?;
            let mut unsubscribes: Vec<UnsubscribeState> = Vec::new();
            for rec in &page.items {
                report.read += 1;
                pos.since = pos.since.max(rec.modified_at);
                if !rec.opted_out {
                    continue; // re-subscribes never propagate
                }
                for person in self.store.people_by_salesforce_id(&rec.id).await? {
                    let already = self.store.unsubscribe(person.marketo_id).await?.is_some_and(|u| u.unsubscribed);
                    if already || unsubscribes.iter().any(|u| u.marketo_id == person.marketo_id) {
                        continue;
                    }
                    unsubscribes.push(UnsubscribeState {
                        marketo_id: person.marketo_id,
                        unsubscribed: true,
                        origin: UnsubscribeOrigin::Salesforce,
                        at: rec.modified_at,
                    });
                }
            }
            report.applied += unsubscribes.len() as u32;
            let last = !(page.more && page.next_token.is_some());
            if last {
                pos.last_run = Some(now);
            }
            let position = serde_json::to_value(&pos)
                .map_err(|e| salesync_core::Error::Backend { backend: "checkpoint", source: Box::new(e) })?;
            self.store
                .apply_inbound(InboundBatch {
                    unsubscribes,
                    reminders: Vec::new(),
                    checkpoint: Some(Checkpoint { stream: StreamId::SalesforceOptOuts, position, updated_at: now }),
                })
                .await?;
            if last {
                break;
            }
            token = page.next_token;
        }
        Ok(report)
    }
}
