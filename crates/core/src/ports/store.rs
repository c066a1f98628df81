//! The store port: the host's database behind one object-safe trait.
//!
//! Methods are atomic units of meaning (apply a page of decisions with its checkpoint; record an
//! outbox entry with its side data; claim a batch; finish a batch). There is no begin/commit:
//! each backend guarantees atomicity its own way.

use std::future::Future;
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

/// Binds a store to its Marketo instance once ([`InstanceBinding::bind_instance`] on first
/// use): callers that bind before their first store work keep one and call
/// [`bind`](Self::bind) each time. Concurrent first calls wait for one bind; a failed bind is
/// not remembered, so the next call tries again.
#[derive(Debug, Default)]
pub struct BindOnce {
    bound: futures::lock::Mutex<bool>,
}

impl BindOnce {
    /// Not bound yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds `store` to `instance` unless an earlier call of this `BindOnce` did.
    pub async fn bind<S: InstanceBinding + ?Sized>(&self, store: &S, instance: &str) -> Result<()> {
        let mut bound = self.bound.lock().await;
        if !*bound {
            store.bind_instance(instance).await?;
            *bound = true;
        }
        Ok(())
    }
}

/// How many people [`MirrorStoreExt::all_people`] reads per call to the store.
pub const PEOPLE_PAGE: u32 = 1000;

/// A walk over the mirror's people (all of them, or one owner's), page by page by Marketo id
/// ascending: made by [`MirrorStoreExt::people_pages`]. Each page starts after the last id of
/// the page before; the walk ends at the first empty page.
#[derive(Debug)]
pub struct PeoplePages<'a, S: ?Sized> {
    store: &'a S,
    owner: Option<&'a SalesforceId>,
    after: Option<i64>,
    limit: u32,
    done: bool,
}

impl<S: MirrorStore + ?Sized> PeoplePages<'_, S> {
    /// The next page (at most `limit` people); `None` once the walk is over.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Person>>> {
        if self.done {
            return Ok(None);
        }
        let page = match self.owner {
            Some(owner) => self.store.people_by_owner(owner, self.after, self.limit).await?,
            None => self.store.list_people(self.after, self.limit).await?,
        };
        match page.last() {
            Some(last) => {
                self.after = Some(last.marketo_id);
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// Conveniences over [`MirrorStore`], for every mirror store (blanket impl): the paging loops
/// callers would otherwise write around [`list_people`](MirrorStore::list_people) and
/// [`people_by_owner`](MirrorStore::people_by_owner).
pub trait MirrorStoreExt: MirrorStore {
    /// Walks the mirror's people, `limit` per page: everyone, or the people `owner` owns.
    fn people_pages<'a>(&'a self, owner: Option<&'a SalesforceId>, limit: u32) -> PeoplePages<'a, Self> {
        PeoplePages { store: self, owner, after: None, limit, done: false }
    }

    /// Every person in the mirror, by Marketo id ascending, read [`PEOPLE_PAGE`] at a time
    /// (for checks and small mirrors: the whole mirror is held in memory).
    fn all_people(&self) -> impl Future<Output = Result<Vec<Person>>> + Send {
        async move {
            let mut pages = self.people_pages(None, PEOPLE_PAGE);
            let mut all = Vec::new();
            while let Some(page) = pages.next_page().await? {
                all.extend(page);
            }
            Ok(all)
        }
    }
}

impl<T: MirrorStore + ?Sized> MirrorStoreExt for T {}

/// Conveniences over [`LeaseStore`], for every lease store (blanket impl).
pub trait LeaseStoreExt: LeaseStore {
    /// Runs `work` while `holder` holds the named lease: takes it (for `ttl` from `now`), runs
    /// `work`, then releases it whatever `work` answered.
    ///
    /// - `Ok(None)`: another holder's lease is still valid; `work` did not run.
    /// - `Ok(Some(answer))`: `work` ran and answered `answer`. When `answer` is an error, an
    ///   error releasing the lease is dropped (the lease then expires after `ttl`).
    /// - `Err(e)`: taking the lease failed (`work` did not run), or `work` succeeded and
    ///   releasing the lease failed.
    fn with_lease<'a, T, F>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
        now: DateTime<Utc>,
        work: F,
    ) -> impl Future<Output = Result<Option<Result<T>>>> + Send + 'a
    where
        F: Future<Output = Result<T>> + Send + 'a,
        T: Send + 'a,
    {
        async move {
            if !self.try_lease(name, holder, ttl, now).await? {
                return Ok(None);
            }
            let answer = work.await;
            let released = self.release_lease(name, holder).await;
            match answer {
                Ok(value) => released.map(|()| Some(Ok(value))),
                Err(e) => Ok(Some(Err(e))),
            }
        }
    }
}

impl<T: LeaseStore + ?Sized> LeaseStoreExt for T {}

/// Writes, for a smart pointer `$ptr<T>` (`Arc`, `Box`), an impl of every store trait that
/// calls the same method of the `T` it points to, so `Arc<dyn Store>`, `Arc<MemoryStore>` or
/// `Box<dyn MirrorStore>` are stores themselves (and pass where a generic `S: Store` is asked).
macro_rules! forward_through {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: ShadowStore + ?Sized> ShadowStore for $ptr<T> {
            async fn apply_shadow_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
                (**self).apply_shadow_page(page).await
            }
            async fn shadow_people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
                (**self).shadow_people_by_ids(ids).await
            }
            async fn shadow_people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
                (**self).shadow_people_by_salesforce_id(id).await
            }
            async fn list_shadow_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
                (**self).list_shadow_people(after, limit).await
            }
            async fn shadow_checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
                (**self).shadow_checkpoint(stream).await
            }
            async fn put_shadow_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
                (**self).put_shadow_checkpoint(checkpoint).await
            }
            async fn clear_shadow(&self) -> Result<()> {
                (**self).clear_shadow().await
            }
            async fn promote_shadow(&self, promotion: Promotion) -> Result<ApplyCounts> {
                (**self).promote_shadow(promotion).await
            }
        }

        #[async_trait]
        impl<T: InstanceBinding + ?Sized> InstanceBinding for $ptr<T> {
            async fn bind_instance(&self, instance: &str) -> Result<()> {
                (**self).bind_instance(instance).await
            }
        }

        #[async_trait]
        impl<T: MirrorStore + ?Sized> MirrorStore for $ptr<T> {
            async fn apply_page(&self, page: MirrorPage) -> Result<ApplyCounts> {
                (**self).apply_page(page).await
            }
            async fn person(&self, marketo_id: i64) -> Result<Option<Person>> {
                (**self).person(marketo_id).await
            }
            async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
                (**self).people_by_ids(ids).await
            }
            async fn people_by_email(&self, email: &str) -> Result<Vec<Person>> {
                (**self).people_by_email(email).await
            }
            async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
                (**self).people_by_salesforce_id(id).await
            }
            async fn people_by_owner(
                &self,
                owner: &SalesforceId,
                after: Option<i64>,
                limit: u32,
            ) -> Result<Vec<Person>> {
                (**self).people_by_owner(owner, after, limit).await
            }
            async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
                (**self).list_people(after, limit).await
            }
            async fn count_people(&self) -> Result<u64> {
                (**self).count_people().await
            }
            async fn tombstone(&self, marketo_id: i64) -> Result<Option<Tombstone>> {
                (**self).tombstone(marketo_id).await
            }
            fn shadow(&self) -> Option<Arc<dyn ShadowStore>> {
                (**self).shadow()
            }
        }

        #[async_trait]
        impl<T: CheckpointStore + ?Sized> CheckpointStore for $ptr<T> {
            async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
                (**self).checkpoint(stream).await
            }
            async fn put_checkpoint(&self, checkpoint: Checkpoint) -> Result<()> {
                (**self).put_checkpoint(checkpoint).await
            }
        }

        #[async_trait]
        impl<T: OutboxStore + ?Sized> OutboxStore for $ptr<T> {
            async fn record(&self, recording: Recording) -> Result<Vec<i64>> {
                (**self).record(recording).await
            }
            async fn claim(
                &self,
                target: Target,
                limit: u32,
                worker: &str,
                lease: Duration,
                now: DateTime<Utc>,
            ) -> Result<Vec<OutboxItem>> {
                (**self).claim(target, limit, worker, lease, now).await
            }
            async fn finish(&self, finished: Vec<Finished>, now: DateTime<Utc>) -> Result<()> {
                (**self).finish(finished, now).await
            }
            async fn outbox_item(&self, id: i64) -> Result<Option<OutboxItem>> {
                (**self).outbox_item(id).await
            }
            async fn outbox_items(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxItem>> {
                (**self).outbox_items(state, limit).await
            }
            async fn outbox_counts(&self) -> Result<OutboxCounts> {
                (**self).outbox_counts().await
            }
            async fn requeue(&self, ids: &[i64], now: DateTime<Utc>) -> Result<u64> {
                (**self).requeue(ids, now).await
            }
        }

        #[async_trait]
        impl<T: ReminderStore + ?Sized> ReminderStore for $ptr<T> {
            async fn reminder(&self, id: &str) -> Result<Option<ReminderTask>> {
                (**self).reminder(id).await
            }
            async fn reminder_by_salesforce_id(&self, task_id: &SalesforceId) -> Result<Option<ReminderTask>> {
                (**self).reminder_by_salesforce_id(task_id).await
            }
            async fn reminders_for(&self, marketo_id: i64) -> Result<Vec<ReminderTask>> {
                (**self).reminders_for(marketo_id).await
            }
            async fn put_reminder(&self, task: ReminderTask) -> Result<()> {
                (**self).put_reminder(task).await
            }
            async fn set_reminder_task_id(&self, id: &str, task_id: &SalesforceId) -> Result<bool> {
                (**self).set_reminder_task_id(id, task_id).await
            }
        }

        #[async_trait]
        impl<T: InboundStore + ?Sized> InboundStore for $ptr<T> {
            async fn unsubscribe(&self, marketo_id: i64) -> Result<Option<UnsubscribeState>> {
                (**self).unsubscribe(marketo_id).await
            }
            async fn apply_inbound(&self, batch: InboundBatch) -> Result<()> {
                (**self).apply_inbound(batch).await
            }
        }

        #[async_trait]
        impl<T: SettingsStore + ?Sized> SettingsStore for $ptr<T> {
            async fn settings(&self) -> Result<AdminSettings> {
                (**self).settings().await
            }
            async fn put_settings(&self, settings: AdminSettings) -> Result<()> {
                (**self).put_settings(settings).await
            }
        }

        #[async_trait]
        impl<T: LeaseStore + ?Sized> LeaseStore for $ptr<T> {
            async fn try_lease(&self, name: &str, holder: &str, ttl: Duration, now: DateTime<Utc>) -> Result<bool> {
                (**self).try_lease(name, holder, ttl, now).await
            }
            async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
                (**self).release_lease(name, holder).await
            }
        }
    };
}

forward_through!(Arc);
forward_through!(Box);

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

    /// Asks for a generic store, as a host's code or a decorator does.
    async fn count_through<S: Store>(store: S) -> u64 {
        store.count_people().await.unwrap()
    }

    /// An `Arc<dyn Store>` (and a `Box<dyn Store>`, an `Arc` of a concrete store) is itself a
    /// store: it passes where a generic `S: Store` is asked, and forwards every call, the
    /// shadow included.
    #[tokio::test]
    async fn smart_pointers_to_a_store_are_stores() {
        let mut mock = MockStore::new();
        mock.expect_count_people().times(1).returning(|| Ok(7));
        mock.expect_shadow().times(1).returning(|| None);
        let store: Arc<dyn Store> = Arc::new(mock);
        assert!(store.clone().shadow().is_none());
        assert_eq!(count_through(store).await, 7);

        let mut mock = MockStore::new();
        mock.expect_count_people().times(1).returning(|| Ok(4));
        assert_eq!(count_through(Arc::new(mock)).await, 4);

        let mut mock = MockStore::new();
        mock.expect_try_lease().times(1).returning(|_, holder, _, _| Ok(holder == "me"));
        let boxed: Box<dyn Store> = Box::new(mock);
        let leases: Box<dyn LeaseStore> = Box::new(boxed);
        assert!(leases.try_lease("pull", "me", Duration::from_secs(1), Utc::now()).await.unwrap());
    }

    fn someone(id: i64, owner: &SalesforceId) -> Person {
        Person {
            marketo_id: id,
            first_name: None,
            last_name: None,
            salesforce_contact_id: None,
            salesforce_lead_id: None,
            salesforce_account_id: None,
            salesforce_opportunity: crate::person::OpportunityRef::Unresolved,
            company: None,
            title: None,
            email: None,
            phone: None,
            linkedin_url: None,
            source: None,
            salesforce_type: crate::person::SalesforceType::Lead,
            owner_id: owner.clone(),
            marketo_updated_at: None,
            mirror_updated_at: Utc::now(),
        }
    }

    /// `all_people` pages the whole mirror through `list_people`, each page after the last id
    /// of the one before, until an empty page; `people_pages` walks one owner's people.
    #[tokio::test]
    async fn all_people_pages_the_whole_mirror() {
        let owner = SalesforceId::parse("0055g00000AbCdE").unwrap();
        let ids: Vec<i64> = (1..=2 * i64::from(PEOPLE_PAGE) + 5).collect();
        let mut mock = MockStore::new();
        let (all, o) = (ids.clone(), owner.clone());
        mock.expect_list_people().times(4).returning(move |after, limit| {
            assert_eq!(limit, PEOPLE_PAGE);
            let from = after.map_or(0, |a| a as usize);
            Ok(all.iter().skip(from).take(limit as usize).map(|i| someone(*i, &o)).collect())
        });
        let o = owner.clone();
        mock.expect_people_by_owner().times(3).returning(move |who, after, limit| {
            assert_eq!(who, &o);
            Ok(match after {
                None => vec![someone(3, &o), someone(9, &o)],
                Some(9) => vec![someone(12, &o)],
                _ => vec![],
            }
            .into_iter()
            .take(limit as usize)
            .collect())
        });
        let people = mock.all_people().await.unwrap();
        assert_eq!(people.iter().map(|p| p.marketo_id).collect::<Vec<_>>(), ids);

        let mut pages = mock.people_pages(Some(&owner), 2);
        let mut seen = Vec::new();
        while let Some(page) = pages.next_page().await.unwrap() {
            seen.push(page.iter().map(|p| p.marketo_id).collect::<Vec<_>>());
        }
        assert_eq!(seen, vec![vec![3, 9], vec![12]]);
        assert!(pages.next_page().await.unwrap().is_none(), "over for good");
    }

    fn backend(what: &str) -> crate::Error {
        crate::Error::Backend { backend: "mock", source: what.to_string().into() }
    }

    /// `with_lease` runs the work only under the lease, always releases it, and says which of
    /// the lease or the work failed.
    #[tokio::test]
    async fn with_lease_runs_the_work_under_the_lease() {
        let ttl = Duration::from_secs(60);
        let mut mock = MockStore::new();
        mock.expect_try_lease().times(1).returning(|_, _, _, _| Ok(false));
        mock.expect_release_lease().never();
        let busy = mock.with_lease("poll", "me", ttl, Utc::now(), async { panic!("ran without the lease") }).await;
        assert!(matches!(busy, Ok(None::<Result<()>>)));

        let mut mock = MockStore::new();
        mock.expect_try_lease().times(1).returning(|name, holder, _, _| Ok(name == "poll" && holder == "me"));
        mock.expect_release_lease()
            .withf(|name, holder| name == "poll" && holder == "me")
            .times(1)
            .returning(|_, _| Ok(()));
        let done = mock.with_lease("poll", "me", ttl, Utc::now(), async { Ok(5) }).await.unwrap();
        assert!(matches!(done, Some(Ok(5))));

        // The work failed: its error is the answer, a failed release is dropped.
        let mut mock = MockStore::new();
        mock.expect_try_lease().times(1).returning(|_, _, _, _| Ok(true));
        mock.expect_release_lease().times(1).returning(|_, _| Err(backend("release")));
        let failed = mock.with_lease("poll", "me", ttl, Utc::now(), async { Err::<(), _>(backend("work")) }).await;
        assert!(
            matches!(failed, Ok(Some(Err(crate::Error::Backend { ref source, .. }))) if source.to_string() == "work")
        );

        // The work succeeded, the release failed: the release's error.
        let mut mock = MockStore::new();
        mock.expect_try_lease().times(1).returning(|_, _, _, _| Ok(true));
        mock.expect_release_lease().times(1).returning(|_, _| Err(backend("release")));
        let unreleased = mock.with_lease("poll", "me", ttl, Utc::now(), async { Ok(()) }).await;
        assert!(matches!(unreleased, Err(crate::Error::Backend { ref source, .. }) if source.to_string() == "release"));

        // Taking the lease failed: the work never ran.
        let mut mock = MockStore::new();
        mock.expect_try_lease().times(1).returning(|_, _, _, _| Err(backend("take")));
        mock.expect_release_lease().never();
        let untaken = mock.with_lease("poll", "me", ttl, Utc::now(), async { panic!("ran without the lease") }).await;
        assert!(matches!(untaken, Err::<Option<Result<()>>, _>(crate::Error::Backend { .. })));
    }

    /// `BindOnce` binds on the first call only, and tries again after a failed bind.
    #[tokio::test]
    async fn bind_once_binds_on_first_use() {
        let mut mock = MockStore::new();
        let mut calls = 0;
        mock.expect_bind_instance().times(2).returning(move |instance| {
            calls += 1;
            assert_eq!(instance, "123-ABC-456");
            if calls == 1 { Err(backend("down")) } else { Ok(()) }
        });
        let once = BindOnce::new();
        assert!(once.bind(&mock, "123-ABC-456").await.is_err());
        once.bind(&mock, "123-ABC-456").await.unwrap();
        once.bind(&mock, "123-ABC-456").await.unwrap();
    }
}
