//! salesync's outbound half: sales activities to Marketo (custom activities) and Salesforce
//! (Tasks), unsubscribes to Salesforce, and two-way reminder task sync. The Salesforce side of
//! those two-way streams (reminder Task edits and opt-out changes polled back) lives here too,
//! beside the outbox whose rules it must agree with; the people mirror is the engine's.
//!
//! # Recording
//!
//! A host records through a [`Dispatcher`]: [`Dispatcher::record_activity`] (a batch in one
//! transaction: [`Dispatcher::record_activities`]),
//! [`Dispatcher::record_unsubscribe`] and the reminder calls ([`Dispatcher::create_reminder`],
//! [`Dispatcher::edit_reminder`], [`Dispatcher::complete_reminder`],
//! [`Dispatcher::reopen_reminder`], [`Dispatcher::delete_reminder`]). Each validates first (the
//! person must be in the mirror; each activity kind's required attributes; Marketo's 64 KiB
//! attribute limit) and then writes everything, host data and outbox items, in **one**
//! `OutboxStore::record` call: on any error nothing is stored. Each returns a [`Recorded`] with the
//! outbox ids, whose progress [`Dispatcher::status`] and [`Dispatcher::subscribe`] show.
//!
//! Outbox keys are idempotency keys: `<activity id>:marketo`, `<activity id>:salesforce`,
//! `unsub:<marketo id>:<nanos>`, `<reminder id>:<updated_at nanos>`. Recording an activity id
//! twice returns the existing items.
//!
//! # Delivery guarantees
//!
//! - **At least once, with exactly-once effect.** Items leave the outbox only through
//!   `OutboxStore::claim`, which leases them to one worker; several dispatchers (processes) on one
//!   PostgreSQL store never deliver an item twice at the same time. A worker that dies between
//!   claim and finish loses its lease and the item is delivered again, so every write is made
//!   safe to repeat:
//!   - Marketo custom activities cannot be upserted, so each carries salesync's activity id
//!     (attribute `salesyncActivityId` and the `(SIA-<id>)` subject suffix). Before re-sending an
//!     item whose earlier attempt may have been written (claimed before and never finished, or
//!     failed with a timeout/transport/unreadable-response error), the dispatcher looks for it
//!     with Get Lead Activities (from a day before it happened, its type, its lead) and, when
//!     found, marks it delivered with the GUID found instead of sending it again.
//!   - Salesforce Tasks are upserted on the external-id field (salesync's activity or reminder
//!     id); opt-outs set a flag; deletions of an already deleted Task count as done. Repeating
//!     any of them changes nothing.
//! - **Retries.** Rate limits, outages and intermittent Salesforce errors (UNABLE_TO_LOCK_ROW,
//!   SERVER_UNAVAILABLE, QUERY_TIMEOUT, …) are retried with exponential backoff
//!   ([`DeliverySettings::backoff`]); after [`DeliverySettings::max_attempts`] an item is
//!   **parked** with its raw error. Permanent failures park at once: Marketo per-record
//!   rejections (1004 "lead not found" included) and Salesforce access/validation errors
//!   (REQUIRED_FIELD_MISSING, INSUFFICIENT_ACCESS…, FIELD_CUSTOM_VALIDATION_EXCEPTION, …; see
//!   see [`salesforce_codes`](salesync_core::salesforce_codes)). An admin retries parked items with [`Dispatcher::retry_parked`].
//! - **Quotas.** Marketo's daily quota (607) pauses Marketo delivery until it resets (midnight US
//!   Central, the time the connector reports); Salesforce's (REQUEST_LIMIT_EXCEEDED) pauses
//!   Salesforce delivery, and so does a daily allocation left (from `Sforce-Limit-Info`) below
//!   [`DeliverySettings::salesforce_api_reserve`] — after such a pause one call re-reads the
//!   allocation before deciding again. Both emit [`DeliveryEvent::QuotaExhausted`] and show in
//!   [`Dispatcher::target_status`]; the other target is delivered to meanwhile, and paused items
//!   keep their place (nothing is parked for a quota).
//! - **Authentication** failures stop that target's delivery (items are released untouched) and
//!   emit [`DeliveryEvent::Reconnect`] until [`Dispatcher::reconnected`] is called.
//!
//! # Salesforce rules
//!
//! Emails and replies are logged to the person's stored Lead/Contact id, else to a record found
//! by email (a Contact first, else a converted Lead's contact, else a Lead; none → skipped).
//! Calls are logged only for people with a Salesforce id (else skipped: reported, not an error).
//! Before writing to a Lead, its conversion is checked (batched `lead_conversions`) and a
//! converted lead is replaced by its contact (with the conversion's account and opportunity):
//! salesync never writes to a converted lead. Unsubscribes are pushed at once to the configured
//! opt-out field (`HasOptedOutOfEmail` by default) whatever the logging switches say; nothing is
//! ever written to Marketo about unsubscribes.
//!
//! # Inbound from Salesforce
//!
//! Within [`Dispatcher::deliver_once`], one process at a time (store leases [`REMINDER_LEASE`],
//! [`OPT_OUT_LEASE`]):
//! - **Reminder sync** (admin setting, off by default): the first poll imports Tasks modified in
//!   the last 24 hours; later polls follow the SystemModstamp high-water mark (checkpoint
//!   `SalesforceTasks`), merging known reminders by latest modification time (ties keep
//!   salesync's version) and importing new Tasks on mirror people whose status maps (id
//!   `sf-<Task id>`). Salesforce deletions (15-day window) mark the reminder deleted. Only Tasks
//!   with TaskSubtype `Task` (or none) whose external id is empty or a reminder id are considered,
//!   so salesync's own activity Tasks are never imported.
//! - **Opt-out reconcile** (daily by default): opted-out Leads/Contacts modified since the
//!   checkpoint (`SalesforceOptOuts`) unsubscribe their mirror people (origin Salesforce). A
//!   cleared box (a re-subscribe) never propagates.
//!
//! Delivery runs in the host's task: [`Dispatcher::run`] loops [`Dispatcher::deliver_once`]
//! until cancelled; there are no hidden threads or globals.
//!
//! # Known limits
//!
//! - Reminder changes are enqueued whenever reminder sync is on. A reminder created *before*
//!   sync was enabled and edited afterwards is therefore created in Salesforce on that edit (the
//!   product only pushes reminders created after enabling). Items enqueued while sync was on are
//!   delivered even if it is switched off before they go out.
//! - An older reminder change whose reminder has changed since (locally or by a merged
//!   Salesforce edit) is skipped as superseded; the newest state is what reaches Salesforce.
//! - While a host change of a reminder is waiting in the outbox, the reminder poll keeps the
//!   host's version: a newer-looking Task is then usually the echo of salesync's own earlier
//!   write, stamped by Salesforce after the host's change. A Salesforce edit made in that window
//!   is overwritten by the host's change. With more than 100,000 undelivered items the poll
//!   waits (it cannot tell echoes from edits) and resumes from its high-water mark.
//! - The first opt-out reconcile reads every opted-out Lead and Contact of the org (paged);
//!   later ones read only changes since the high-water mark.
//! - Stop states (reconnect required, quota pause) are per process; other processes find out
//!   on their own next call.
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod dispatcher;
mod events;
mod finish;
mod inbound;
mod marketo;
mod salesforce;
mod settings;

pub use dispatcher::{
    CanEmail, Dispatcher, DispatcherBuilder, MAX_REMINDER_DETAILS_CHARS, MAX_REMINDER_SUBJECT_CHARS, NewReminder,
    Recorded, ReminderChanges,
};
pub use events::{DeliveryEvent, DeliveryReport, InboundReport, TargetReport, TargetStatus};
pub use inbound::{OPT_OUT_LEASE, REMINDER_LEASE, imported_reminder_id};
pub use marketo::{LEAD_NOT_FOUND, salesync_activity_id};
pub use salesforce::pick_email_match;
pub use settings::{Clock, DeliverySettings, ManualClock, SystemClock};

/// The ports and outbox types hosts use with the dispatcher.
pub use salesync_core::ports::store::{OutboxCounts, OutboxItem, OutboxState, Target};
/// The error type of every fallible call (core's), and its result alias.
pub use salesync_core::{Error, Result};
