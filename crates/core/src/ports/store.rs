//! The store port: the host's database behind one object-safe trait.
//!
//! Methods are atomic units of meaning (apply a page of decisions with its checkpoint; record an
//! outbox entry with its side data; claim a batch; finish a batch). There is no begin/commit:
//! each backend guarantees atomicity its own way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::activity::{AdminSettings, ReminderTask, SalesActivity, UnsubscribeState};
use crate::error::{Result, Service};
use crate::mirror::{Decision, RemovalReason};
use crate::person::Person;
use crate::sfid::SalesforceId;

/// A checkpointed sync stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamId {
    /// Initial full sync progress (bulk job ids / windows / REST position).
    InitialSync,
    /// Marketo lead-changes paging token.
    LeadChanges,
    /// Marketo deleted-leads paging token.
    DeletedLeads,
    /// Salesforce Task high-water mark (SystemModstamp).
    SalesforceTasks,
    /// Salesforce opt-out high-water mark.
    SalesforceOptOuts,
    /// Salesforce changes that bear on people's opportunity (SystemModstamp high-water mark).
    SalesforceOpportunities,
    /// A rebuild in progress (kept among the shadow's checkpoints: see [`ShadowStore`]).
    Rebuild,
}

impl StreamId {
    /// Stable name used as the storage key.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamId::InitialSync => "initial_sync",
            StreamId::LeadChanges => "lead_changes",
            StreamId::DeletedLeads => "deleted_leads",
            StreamId::SalesforceTasks => "salesforce_tasks",
            StreamId::SalesforceOptOuts => "salesforce_opt_outs",
            StreamId::SalesforceOpportunities => "salesforce_opportunities",
            StreamId::Rebuild => "rebuild",
        }
    }

    /// All streams.
    pub const ALL: [StreamId; 7] = [
        Self::InitialSync,
        Self::LeadChanges,
        Self::DeletedLeads,
        Self::SalesforceTasks,
        Self::SalesforceOptOuts,
        Self::SalesforceOpportunities,
        Self::Rebuild,
    ];
}

/// A stream's resume position, as the engine defines it (opaque JSON to the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Which stream.
    pub stream: StreamId,
    /// Position (a paging token, a timestamp, a bulk job id and offset…).
    pub position: serde_json::Value,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
}

/// A page of mirror decisions and the checkpoint that covers them: applied atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPage {
    /// Decisions; `Unchanged` and `Skip` write nothing.
    pub decisions: Vec<Decision>,
    /// The checkpoint to write in the same transaction.
    pub checkpoint: Option<Checkpoint>,
    /// The time removals are stamped with.
    pub at: DateTime<Utc>,
}

/// What applying a page did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplyCounts {
    /// Inserted.
    pub inserted: u64,
    /// Updated.
    pub updated: u64,
    /// Removed.
    pub removed: u64,
    /// Unchanged or skipped.
    pub untouched: u64,
}

/// Why and when a person left the mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// Marketo id.
    pub marketo_id: i64,
    /// Why (includes the merge winner).
    pub reason: RemovalReason,
    /// When.
    pub removed_at: DateTime<Utc>,
}

/// Where an outbox item goes: one of the two external [`Service`]s (never the store), so an item
/// cannot be addressed to a system salesync does not deliver to. `Service::from(target)` names
/// the same system in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Marketo (custom activities).
    Marketo,
    /// Salesforce (Tasks, opt-outs).
    Salesforce,
}

impl From<Target> for Service {
    fn from(target: Target) -> Self {
        match target {
            Target::Marketo => Service::Marketo,
            Target::Salesforce => Service::Salesforce,
        }
    }
}

/// What an outbox item delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboxPayload {
    /// A sales activity.
    Activity {
        /// The activity.
        activity: SalesActivity,
    },
    /// An unsubscribe to push to Salesforce.
    Unsubscribe {
        /// The person.
        marketo_id: i64,
    },
    /// A reminder task change to push to Salesforce (create, edit, complete, reopen, delete).
    Reminder {
        /// The reminder's state after the change.
        task: ReminderTask,
    },
}

/// A new outbox item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOutboxItem {
    /// Idempotency key, unique per item (e.g. `<activity id>:marketo`): recording the same key
    /// twice returns the existing item.
    pub key: String,
    /// Target system.
    pub target: Target,
    /// Payload.
    pub payload: OutboxPayload,
    /// Earliest delivery time.
    pub not_before: DateTime<Utc>,
}

/// Outbox item state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for delivery (or for its next attempt).
    Pending,
    /// Claimed by a worker whose lease has not expired.
    InFlight,
    /// Delivered; never delivered again.
    Delivered,
    /// Parked after a permanent failure or too many attempts; an admin may requeue it.
    Parked,
    /// Not delivered by design (e.g. a call for a person without a Salesforce id).
    Skipped,
}

/// An outbox item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Store-assigned id.
    pub id: i64,
    /// Idempotency key.
    pub key: String,
    /// Target.
    pub target: Target,
    /// Payload.
    pub payload: OutboxPayload,
    /// State.
    pub state: OutboxState,
    /// Delivery attempts started so far.
    pub attempts: u32,
    /// Next attempt time.
    pub next_attempt_at: DateTime<Utc>,
    /// Last error, raw.
    pub last_error: Option<String>,
    /// An earlier attempt may have reached the target (its answer was lost): look for its
    /// effect before sending again. Set by a [`Outcome::Retry`] or [`Outcome::Park`] that says
    /// so, kept across claims and requeues, cleared when the item is delivered or skipped.
    pub outcome_unknown: bool,
    /// Remote id once delivered (Marketo activity GUID, Salesforce Task id) or skip reason.
    pub result: Option<String>,
    /// Worker holding the lease.
    pub lease_owner: Option<String>,
    /// Lease expiry.
    pub lease_until: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// How a claimed item ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Delivered; the remote id.
    Delivered {
        /// Remote id.
        remote_id: String,
    },
    /// Try again at `at`.
    Retry {
        /// Next attempt.
        at: DateTime<Utc>,
        /// Raw error.
        error: String,
        /// The attempt may have reached the target ([`OutboxItem::outcome_unknown`]).
        outcome_unknown: bool,
    },
    /// Park for an admin.
    Park {
        /// Raw error.
        error: String,
        /// The attempt may have reached the target ([`OutboxItem::outcome_unknown`]).
        outcome_unknown: bool,
    },
    /// Not delivered by design.
    Skip {
        /// Why.
        reason: String,
    },
}

/// Outcome of one claimed item, applied only while `worker` still holds its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    /// Item id.
    pub id: i64,
    /// The worker that claimed it.
    pub worker: String,
    /// Outcome.
    pub outcome: Outcome,
}

/// Outbox counts by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutboxCounts {
    /// Pending.
    pub pending: u64,
    /// In flight.
    pub in_flight: u64,
    /// Delivered.
    pub delivered: u64,
    /// Parked.
    pub parked: u64,
    /// Skipped.
    pub skipped: u64,
}

/// Host-side writes recorded atomically with their outbox items.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recording {
    /// Unsubscribe state to set.
    pub unsubscribe: Option<UnsubscribeState>,
    /// Reminder task to store.
    pub reminder: Option<ReminderTask>,
    /// Items to enqueue.
    pub outbox: Vec<NewOutboxItem>,
}

/// Data pulled from Salesforce, applied atomically with its checkpoint.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InboundBatch {
    /// Unsubscribe states to set.
    pub unsubscribes: Vec<UnsubscribeState>,
    /// Reminder tasks to store.
    pub reminders: Vec<ReminderTask>,
    /// Checkpoint.
    pub checkpoint: Option<Checkpoint>,
}

/// How a rebuild's shadow copy replaces the live mirror (see [`ShadowStore::promote_shadow`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Promotion {
    /// People whose shadow row enters the live mirror (inserted, or replacing the live row).
    pub upserts: Vec<i64>,
    /// People who leave the live mirror, with a tombstone.
    pub removes: Vec<(i64, RemovalReason)>,
    /// Live checkpoints written in the same transaction (the shadow's stream positions, which
    /// the live streams carry on from).
    pub checkpoints: Vec<Checkpoint>,
    /// The time promoted rows and tombstones are stamped with.
    pub at: DateTime<Utc>,
}

/// The shadow copy of the mirror that a rebuild fills while hosts keep reading the live one:
/// its own people rows and its own stream checkpoints, in the same database as the live
/// mirror so that [`promote_shadow`](Self::promote_shadow) can swap them in one transaction.
/// Hosts never read it; nothing but the engine's rebuild writes it.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait ShadowStore: Send + Sync + 'static {
    /// Applies a page of decisions to the shadow copy and its checkpoint to the shadow's
    /// checkpoints, in one transaction. Removals leave no tombstone.
    async fn apply_shadow_page(&self, page: MirrorPage) -> Result<ApplyCounts>;

    /// Shadow people by Marketo ids (absent ids are left out).
    async fn shadow_people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>>;

    /// Shadow people whose Salesforce lead or contact id is `id`.
    async fn shadow_people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>>;

    /// A page of all shadow people, by Marketo id ascending after `after`.
    async fn list_shadow_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>>;

    /// A shadow stream's checkpoint.
    async fn shadow_checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>>;

    /// Writes a shadow checkpoint on its own.
    async fn put_shadow_checkpoint(&self, checkpoint: Checkpoint) -> Result<()>;

    /// Empties the shadow: its rows and its checkpoints.
    async fn clear_shadow(&self) -> Result<()>;

    /// In one transaction: copies the shadow rows of `upserts` into the live mirror (stamped
    /// `at`, clearing their tombstones), removes `removes` from it with a tombstone, writes
    /// `checkpoints` among the live checkpoints, and empties the shadow. Fails with
    /// [`Error::Conflict`](crate::Error::Conflict), writing nothing, when an id of `upserts`
    /// has no shadow row. Live rows named in neither list are left as they are.
    async fn promote_shadow(&self, promotion: Promotion) -> Result<ApplyCounts>;
}

/// Which Marketo instance the store belongs to.
#[async_trait]
pub trait InstanceBinding: Send + Sync {
    /// Binds the store to one Marketo instance on first use; refuses a store bound to another
    /// (two tenants' mirrors never mix).
    async fn bind_instance(&self, instance: &str) -> Result<()>;
}

/// The people mirror: pages of decisions written atomically with their checkpoint, and the
/// reads hosts and the engine make.
#[async_trait]
pub trait MirrorStore: Send + Sync {
    /// Applies a page of decisions and its checkpoint in one transaction.
    async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts>;

    /// One person by Marketo id.
    async fn person(&self, marketo_id: i64) -> Result<Option<Person>>;

    /// People by Marketo ids (absent ids are left out).
    async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>>;

    /// Every person with this email (case-insensitive); duplicates are all returned.
    async fn people_by_email(&self, email: &str) -> Result<Vec<Person>>;

    /// People whose Salesforce lead or contact id is `id`.
    async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>>;

    /// A page of people owned by `owner`, by Marketo id ascending after `after`.
    async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>>;

    /// A page of all people, by Marketo id ascending after `after`.
    async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>>;

    /// Number of people in the mirror.
    async fn count_people(&self) -> Result<u64>;

    /// The tombstone of a removed person.
    async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>>;

    /// The shadow copy a rebuild fills, when this store keeps one (the bundled backends do);
    /// `None` (the default) means the store cannot rebuild without downtime.
    fn shadow(&self) -> Option<Arc<dyn ShadowStore>> {
        None
    }
}

/// Stream positions written on their own (positions of mirror streams travel with their page).
#[async_trait]
pub trait CheckpointStore: Send + Sync {
    /// A stream's checkpoint.
    async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>>;

    /// Writes a checkpoint on its own (for streams whose data lives elsewhere).
    async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()>;
}

/// The outbox: host writes recorded with their items, claims, outcomes and an admin's requeue.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Records host writes and their outbox items atomically; returns the item ids (existing
    /// ids for keys already recorded).
    async fn record(&self, recording: Recording) -> Result<Vec<i64>>;

    /// Claims up to `limit` due items for `target`: pending items whose time has come, and
    /// in-flight items whose lease expired. Safe with several workers on one database.
    async fn claim(
        &self,
        target: Target,
        limit: u32,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxItem>>;

    /// Applies outcomes of claimed items; ignores items no longer leased to their worker.
    async fn finish(&self, finished: Vec<Finished>, now: DateTime<Utc>) -> Result<()>;

    /// One outbox item.
    async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>>;

    /// Items in a state, oldest first.
    async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>>;

    /// Counts by state.
    async fn outbox_counts(&self) -> Result<OutboxCounts>;

    /// Moves parked items back to pending (an admin's "retry").
    async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64>;
}

/// Reminder tasks.
#[async_trait]
pub trait ReminderStore: Send + Sync {
    /// A reminder task.
    async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>>;

    /// The reminder task synced with a Salesforce Task.
    async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>>;

    /// Reminder tasks of a person (deleted ones included).
    async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>>;

    /// Stores a reminder task.
    async fn put_reminder(&self, task: ReminderTask) -> Result<()>;

    /// Sets a reminder's Salesforce Task id and nothing else, so a change recorded meanwhile is
    /// not overwritten; false when there is no such reminder.
    async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool>;
}

/// What salesync pulls from Salesforce (reminder Task changes, opt-outs) and the unsubscribe
/// state it keeps.
#[async_trait]
pub trait InboundStore: Send + Sync {
    /// A person's unsubscribe state.
    async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>>;

    /// Applies data pulled from Salesforce with its checkpoint, atomically.
    async fn apply_inbound(&self, batch: InboundBatch) -> Result<()>;
}

/// Admin settings.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// Admin settings (defaults when never written).
    async fn settings(&self) -> Result<AdminSettings>;

    /// Writes admin settings.
    async fn put_settings(&self, settings: AdminSettings) -> Result<()>;
}

/// Named leases (the leader election of the Marketo pull, the inbound polls).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Acquires or renews the named lease for `holder` until `now + ttl`; false when another
    /// holder's lease is still valid.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool>;

    /// Releases the named lease if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
}

/// The salesync database: the union of the store traits, split along their concerns so that a
/// double or a decorator implements only what it needs to. Implemented by `salesync-store`
/// (memory, SQLite, PostgreSQL); every type that implements all of them is a `Store`, and hosts
/// keep passing one `Arc<dyn Store>` (which coerces to `Arc<dyn MirrorStore>` and the others).
pub trait Store:
    InstanceBinding
    + MirrorStore
    + CheckpointStore
    + OutboxStore
    + ReminderStore
    + InboundStore
    + SettingsStore
    + LeaseStore
    + std::fmt::Debug
    + 'static
{
}

impl<T> Store for T where
    T: InstanceBinding
        + MirrorStore
        + CheckpointStore
        + OutboxStore
        + ReminderStore
        + InboundStore
        + SettingsStore
        + LeaseStore
        + std::fmt::Debug
        + 'static
{
}

#[cfg(any(test, feature = "mock"))]
mockall::mock! {
    /// A mock [`Store`] (mockall), for tests where the exact store calls matter.
    pub Store {}
    impl std::fmt::Debug for Store {
        fn fmt<'a>(&self, f: &mut std::fmt::Formatter<'a>) -> std::fmt::Result;
    }
    #[async_trait]
    impl InstanceBinding for Store {
        async fn bind_instance(&self, instance: &str) -> Result<()>;
    }
    #[async_trait]
    impl MirrorStore for Store {
        async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts>;
        async fn person(&self, marketo_id: i64) -> Result<Option<Person>>;
        async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>>;
        async fn people_by_email(&self, email: &str) -> Result<Vec<Person>>;
        async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>>;
        async fn people_by_owner(&self, owner: &SalesforceId, after: Option<i64>, limit: u32) -> Result<Vec<Person>>;
        async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>>;
        async fn count_people(&self) -> Result<u64>;
        async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>>;
        fn shadow(&self) -> Option<Arc<dyn ShadowStore>>;
    }
    #[async_trait]
    impl CheckpointStore for Store {
        async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>>;
        async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()>;
    }
    #[async_trait]
    impl OutboxStore for Store {
        async fn record(&self, recording: Recording) -> Result<Vec<i64>>;
        async fn claim(&self, target: Target, limit: u32, worker: &str, lease: Duration, now: DateTime<Utc>) -> Result<Vec<OutboxItem>>;
        async fn finish(&self, finished: Vec<Finished>, now: DateTime<Utc>) -> Result<()>;
        async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>>;
        async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>>;
        async fn outbox_counts(&self) -> Result<OutboxCounts>;
        async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64>;
    }
    #[async_trait]
    impl ReminderStore for Store {
        async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>>;
        async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>>;
        async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>>;
        async fn put_reminder(&self, task: ReminderTask) -> Result<()>;
        async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool>;
    }
    #[async_trait]
    impl InboundStore for Store {
        async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>>;
        async fn apply_inbound(&self, batch: InboundBatch) -> Result<()>;
    }
    #[async_trait]
    impl SettingsStore for Store {
        async fn settings(&self) -> Result<AdminSettings>;
        async fn put_settings(&self, settings: AdminSettings) -> Result<()>;
    }
    #[async_trait]
    impl LeaseStore for Store {
        async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool>;
        async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every store trait is object safe, and a host's one `Arc<dyn Store>` hands each concern
    /// out as its own trait object (trait upcasting).
    #[tokio::test]
    async fn one_store_upcasts_to_each_concern() {
        let mut mock = MockStore::new();
        mock.expect_shadow().returning(|| None);
        mock.expect_count_people().returning(|| Ok(3));
        mock.expect_outbox_counts().returning(|| Ok(OutboxCounts { parked: 2, ..OutboxCounts::default() }));
        mock.expect_try_lease().returning(|name, _, _, _| Ok(name == "pull"));
        let store: Arc<dyn Store> = Arc::new(mock);
        let mirror: Arc<dyn MirrorStore> = store.clone();
        let outbox: Arc<dyn OutboxStore> = store.clone();
        let leases: Arc<dyn LeaseStore> = store.clone();
        let _: Arc<dyn InstanceBinding> = store.clone();
        let _: Arc<dyn CheckpointStore> = store.clone();
        let _: Arc<dyn ReminderStore> = store.clone();
        let _: Arc<dyn InboundStore> = store.clone();
        let _: Arc<dyn SettingsStore> = store.clone();
        assert!(mirror.shadow().is_none());
        assert_eq!(mirror.count_people().await.unwrap(), 3);
        assert_eq!(outbox.outbox_counts().await.unwrap().parked, 2);
        assert!(leases.try_lease("pull", "w", Duration::from_secs(1), Utc::now()).await.unwrap());
        let boxed: Box<dyn Store> = Box::new(MockStore::new());
        let _: Box<dyn MirrorStore> = boxed;
    }
}
