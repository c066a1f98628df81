//! The engine: builder, passes, the pass context and its helpers (counted, retried, cancellable
//! port calls; page application with change notifications).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use salesync_core::mapping::requested_fields;
use salesync_core::mirror::{Decision, Incoming, decide};
use salesync_core::ports::marketo::{ActivityType, MarketoApi, RateBudget};
use salesync_core::ports::salesforce::SalesforceApi;
use salesync_core::ports::store::{ApplyCounts, BindOnce, Checkpoint, MirrorPage, ShadowStore, StreamId};
use salesync_core::sfid::SalesforceId;
use salesync_core::{
    error::{RecordError, Service},
    mapping::Qualification,
    person::Person,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{self, InitialState, InitialStatus};
use crate::events::{MirrorChange, Phase, SyncEvent};
use crate::incremental::Incremental;
use crate::initial::InitialSync;
use crate::mirror_reader::MirrorReader;
use crate::opportunity::OpportunityFill;
use crate::report::{InitialPath, SyncReport};
use crate::settings::{EngineSettings, InitialMode};
use crate::store::EngineStore;
use crate::{Error, Result};

/// Builds a [`SyncEngine`].
#[derive(Default)]
pub struct SyncEngineBuilder {
    marketo: Option<Arc<dyn MarketoApi>>,
    salesforce: Option<Arc<dyn SalesforceApi>>,
    store: Option<Arc<dyn EngineStore>>,
    settings: Option<EngineSettings>,
}

impl std::fmt::Debug for SyncEngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngineBuilder")
            .field("marketo", &self.marketo.is_some())
            .field("salesforce", &self.salesforce.is_some())
            .field("store", &self.store.is_some())
            .field("settings", &self.settings)
            .finish()
    }
}

impl SyncEngineBuilder {
    /// The Marketo connector (required).
    pub fn marketo(mut self, marketo: Arc<dyn MarketoApi>) -> Self {
        self.marketo = Some(marketo);
        self
    }

    /// The Salesforce connector (required; used for opportunity fill).
    pub fn salesforce(mut self, salesforce: Arc<dyn SalesforceApi>) -> Self {
        self.salesforce = Some(salesforce);
        self
    }

    /// The store holding the mirror and checkpoints (required): any [`EngineStore`], such as
    /// a host's `Arc<dyn Store>` or an `Arc<MemoryStore>`.
    pub fn store<S: EngineStore>(mut self, store: S) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Settings (required: at least `instance_id`).
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Validates and builds. The store is bound to `settings.instance_id` on the first pass.
    pub fn build(self) -> Result<SyncEngine> {
        let missing = |field: &'static str| Error::Config { field, reason: "is required".into() };
        let marketo = self.marketo.ok_or_else(|| missing("marketo"))?;
        let salesforce = self.salesforce.ok_or_else(|| missing("salesforce"))?;
        let store = self.store.ok_or_else(|| missing("store"))?;
        let settings = self.settings.ok_or_else(|| missing("settings"))?;
        settings.validate()?;
        let (events, _) = broadcast::channel(settings.channel_capacity);
        let (changes, _) = broadcast::channel(settings.channel_capacity);
        Ok(SyncEngine {
            inner: Arc::new(Inner {
                marketo,
                salesforce,
                store,
                settings,
                events,
                changes,
                run_lock: tokio::sync::Mutex::new(()),
                lease: Mutex::new(None),
                run_loops: AtomicUsize::new(0),
                bound: BindOnce::new(),
                fields: Mutex::new(None),
                activity_types: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

/// The store lease that elects the one process pulling from Marketo (see [`SyncEngine`]).
pub const MARKETO_PULL_LEASE: &str = "marketo-pull";

/// The inbound sync engine: mirrors qualified Marketo people into the store and keeps them
/// current. Cheap to clone (shared state); `Send + Sync`.
///
/// Passes never overlap: `sync_once` and `run` take a lock for the length of a pass.
///
/// # One puller per store: the leader lease
///
/// Several processes may share one store (each with its own engine and dispatcher), but only
/// one pulls from Marketo at a time: a pass first takes (or renews) the store's named lease
/// [`MARKETO_PULL_LEASE`] for [`EngineSettings::worker_id`] until now +
/// [`EngineSettings::leader_lease_ttl`]. Another holder's valid lease makes
/// [`sync_once`](Self::sync_once) fail fast with [`Error::NotLeader`] (nothing pulled), while
/// [`run`](Self::run) keeps trying every [`EngineSettings::leader_poll`].
///
/// The leader renews the lease once a third of its TTL has passed, checked before every store
/// write (page or checkpoint), before every port call and while waiting. A leader that finds
/// its lease lapsed (not renewed within the TTL, e.g. the process was paused) or taken stops
/// before committing another page, with [`Error::NotLeader`]. The store cannot check the lease
/// inside the page's transaction, so one window remains: a write starts with at least two
/// thirds of the TTL left, and must finish (or hang) within them; keep the TTL well above the
/// store's worst write latency. Lease times come from [`EngineSettings::clock`]: processes
/// sharing a store need clocks that agree to well within the TTL.
///
/// `sync_once` and [`resolve_opportunities`](Self::resolve_opportunities) release the lease when
/// they finish (unless `run` is running on this engine); `run` keeps it between passes and
/// releases it when cancelled. A crashed leader's lease expires after the TTL.
#[derive(Debug, Clone)]
pub struct SyncEngine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub marketo: Arc<dyn MarketoApi>,
    pub salesforce: Arc<dyn SalesforceApi>,
    pub store: Arc<dyn EngineStore>,
    pub settings: EngineSettings,
    pub events: broadcast::Sender<SyncEvent>,
    pub changes: broadcast::Sender<MirrorChange>,
    run_lock: tokio::sync::Mutex<()>,
    /// When the leader lease was last taken or renewed (engine clock); `None`: not held.
    lease: Mutex<Option<DateTime<Utc>>>,
    /// `run` loops in progress on this engine (one-shot passes leave the lease to them).
    run_loops: AtomicUsize,
    bound: BindOnce,
    fields: Mutex<Option<Vec<String>>>,
    pub activity_types: tokio::sync::Mutex<Option<Vec<ActivityType>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Inner {
    pub fn now(&self) -> DateTime<Utc> {
        self.settings.clock.now()
    }
}

impl SyncEngine {
    /// A builder.
    pub fn builder() -> SyncEngineBuilder {
        SyncEngineBuilder::default()
    }

    /// The settings in force.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Sync events (phases, pages, backoffs, record failures, finished passes).
    ///
    /// The channel is bounded: a subscriber that lags behind by more than
    /// `channel_capacity` events gets `RecvError::Lagged` and loses the oldest events; the sync
    /// never blocks on subscribers.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncEvent> {
        self.inner.events.subscribe()
    }

    /// Mirror changes, published after the store committed them.
    ///
    /// Bounded like [`subscribe`](Self::subscribe): a lagging subscriber gets
    /// `RecvError::Lagged` (and should re-read the mirror), and never slows the sync down.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<MirrorChange> {
        self.inner.changes.subscribe()
    }

    /// Read-only access to the mirror.
    pub fn mirror(&self) -> MirrorReader {
        MirrorReader::new(self.inner.store.clone())
    }

    /// One pass: runs or resumes the initial sync when it is not done, then one incremental pass
    /// (lead changes, deleted leads, merges), with a reconciling resync when a stream's position
    /// is too old.
    pub async fn sync_once(&self) -> Result<SyncReport> {
        self.sync_once_with(&CancellationToken::new()).await
    }

    /// [`sync_once`](Self::sync_once) that stops between pages when `cancel` fires (returning
    /// [`Error::Cancelled`]); every applied page is consistent with its checkpoint, so the next
    /// pass resumes where this one stopped.
    ///
    /// Takes the leader lease first and fails with [`Error::NotLeader`] (pulling nothing) while
    /// another process holds it; releases it when done unless [`run`](Self::run) is running on
    /// this engine.
    pub async fn sync_once_with(&self, cancel: &CancellationToken) -> Result<SyncReport> {
        self.sync_once_inner(cancel, false).await
    }

    /// [`sync_once_with`](Self::sync_once_with); `strict_rebuild`: a failing rebuild slice fails
    /// the pass (instead of a warning).
    async fn sync_once_inner(&self, cancel: &CancellationToken, strict_rebuild: bool) -> Result<SyncReport> {
        // Released under the pass lock, so a concurrent call's pass never loses it midway.
        let _guard = self.inner.run_lock.lock().await;
        let result = self.leading_pass(cancel, strict_rebuild).await;
        self.release_unless_running().await;
        result
    }

    /// One pass under the leader lease (taken or renewed first), which it leaves held. The
    /// caller holds the pass lock.
    async fn leading_pass(&self, cancel: &CancellationToken, strict_rebuild: bool) -> Result<SyncReport> {
        let started = tokio::time::Instant::now();
        let inner = &*self.inner;
        self.ensure_bound().await?;
        if !inner.try_lead().await? {
            tracing::debug!(holder = %inner.settings.worker_id, "another process holds the Marketo pull lease");
            return Err(inner.not_leader());
        }
        let mut pass = Pass::new(inner, cancel);
        pass.strict_rebuild = strict_rebuild;
        let result = pass.run().await;
        pass.report.duration = started.elapsed();
        pass.report.rate_budget = self.inner.marketo.rate_budget();
        pass.set_phase(Phase::Idle);
        match result {
            Ok(()) => {
                let report = pass.report;
                pass.eng.emit(SyncEvent::Finished { report: Box::new(report.clone()) });
                tracing::info!(
                    inserted = report.inserted,
                    updated = report.updated,
                    removed = report.removed.total(),
                    pages = report.pages,
                    "sync pass finished"
                );
                Ok(report)
            }
            Err(e) => {
                tracing::warn!(error = %e, "sync pass stopped");
                Err(e)
            }
        }
    }

    /// Releases the leader lease after a one-shot call, unless a `run` loop keeps it.
    async fn release_unless_running(&self) {
        if self.inner.run_loops.load(Ordering::SeqCst) == 0 {
            self.inner.release_lead().await;
        }
    }

    /// Binds the store to the instance once per engine (it refuses a store of another instance).
    async fn ensure_bound(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.bound.bind(&*inner.store, &inner.settings.instance_id).await?;
        Ok(())
    }

    /// Looks up the opportunity of every mirror person whose link is still unresolved (e.g.
    /// after a failed lookup, reported as a warning), contacts and leads with a Salesforce id
    /// only. Returns a report whose `opportunities_resolved` counts the fills.
    ///
    /// It writes the mirror, so it takes the leader lease like [`sync_once`](Self::sync_once)
    /// (failing with [`Error::NotLeader`] while another process holds it).
    pub async fn resolve_opportunities(&self) -> Result<SyncReport> {
        Ok(self.one_shot(OneShot::FillUnresolved).await?.0)
    }

    /// Puts one person's mirror row right from a live read of Marketo and Salesforce, whatever
    /// the streams have seen: inserted, updated (its opportunity looked up again) or removed as
    /// `Vanished` when Marketo no longer has the id, in one atomic write that touches no
    /// checkpoint; the report counts what was written and the change is published like any
    /// other. A person that does not qualify is removed (with the reason) or not inserted.
    ///
    /// It writes the mirror, so it takes the leader lease like [`sync_once`](Self::sync_once)
    /// (failing with [`Error::NotLeader`] while another process holds it); on an engine whose
    /// [`run`](Self::run) loop leads, it waits for the current pass to end.
    pub async fn resync_person(&self, marketo_id: i64) -> Result<SyncReport> {
        Ok(self.one_shot(OneShot::Resync(marketo_id)).await?.0)
    }

    /// Starts a rebuild without downtime unless one is in progress (true when started): a
    /// full initial sync into the store's shadow copy, carried on by every following pass
    /// ([`sync_once`](Self::sync_once) or [`run`](Self::run)) after its live stages, for at most
    /// [`EngineSettings::rebuild_slice`] each. Hosts keep reading the live mirror, which the live
    /// streams keep current meanwhile. Once the shadow has caught up, the pass compares the two
    /// copies and replaces the live mirror's difference in one transaction, with the shadow's
    /// stream positions (so nothing that changed during the rebuild is lost); the difference is
    /// published as mirror changes and counted in [`SyncReport::rebuild`]. A crash or cancel
    /// leaves the live mirror untouched and the rebuild resumable, or discardable with
    /// [`discard_rebuild`](Self::discard_rebuild).
    ///
    /// Fails with [`Error::Config`] when the store keeps no shadow copy
    /// ([`MirrorStore::shadow`](salesync_core::ports::store::MirrorStore::shadow)); takes the leader lease like
    /// [`sync_once`](Self::sync_once).
    pub async fn start_rebuild(&self) -> Result<bool> {
        Ok(self.one_shot(OneShot::StartRebuild).await?.1)
    }

    /// Drops a rebuild in progress and its shadow copy (the live mirror stays as it is); true
    /// when there was one. Takes the leader lease like [`sync_once`](Self::sync_once).
    pub async fn discard_rebuild(&self) -> Result<bool> {
        Ok(self.one_shot(OneShot::DiscardRebuild).await?.1)
    }

    /// When a rebuild is in progress, the time it was started (`None` also when the store keeps
    /// no shadow copy). Reads only.
    pub async fn rebuild_started_at(&self) -> Result<Option<DateTime<Utc>>> {
        match self.inner.store.shadow() {
            Some(shadow) => crate::rebuild::in_progress(shadow.as_ref()).await,
            None => Ok(None),
        }
    }

    /// Starts a rebuild (or resumes the one in progress) and runs passes until it is promoted:
    /// [`start_rebuild`](Self::start_rebuild), then [`sync_once`](Self::sync_once) until a report's
    /// [`rebuild`](SyncReport::rebuild) says `promoted`. Returns that report, its calls,
    /// pages and warnings summed over the passes.
    pub async fn rebuild(&self) -> Result<SyncReport> {
        self.rebuild_with(&CancellationToken::new()).await
    }

    /// [`rebuild`](Self::rebuild) that stops between pages when `cancel` fires ([`Error::Cancelled`];
    /// the rebuild stays in progress, resumable).
    pub async fn rebuild_with(&self, cancel: &CancellationToken) -> Result<SyncReport> {
        self.start_rebuild().await?;
        let mut total = SyncReport::default();
        loop {
            let report = self.sync_once_inner(cancel, true).await?;
            let promoted = report.rebuild.as_ref().is_some_and(|r| r.promoted);
            let in_progress = report.rebuild.is_some();
            total.pages += report.pages;
            total.api_calls.marketo += report.api_calls.marketo;
            total.api_calls.salesforce += report.api_calls.salesforce;
            total.warnings.extend(report.warnings.iter().cloned());
            if promoted || !in_progress {
                let (pages, calls, warnings) = (total.pages, total.api_calls, total.warnings);
                return Ok(SyncReport { pages, api_calls: calls, warnings, ..report });
            }
        }
    }

    /// A repair outside the passes, under the pass lock and the leader lease (released after
    /// unless `run` keeps it); the flag says whether a rebuild was started or discarded.
    async fn one_shot(&self, job: OneShot) -> Result<(SyncReport, bool)> {
        let _guard = self.inner.run_lock.lock().await;
        let result = async {
            self.ensure_bound().await?;
            if !self.inner.try_lead().await? {
                return Err(self.inner.not_leader());
            }
            let started = tokio::time::Instant::now();
            let cancel = CancellationToken::new();
            let mut pass = Pass::new(&self.inner, &cancel);
            let mut flag = false;
            match job {
                OneShot::FillUnresolved => {
                    pass.set_phase(Phase::Opportunities);
                    OpportunityFill::new(&mut pass).fill_unresolved(None).await?;
                }
                OneShot::Resync(id) => {
                    pass.set_phase(Phase::Reconcile);
                    crate::resync::resync_person(&mut pass, id).await?;
                }
                OneShot::StartRebuild => flag = crate::rebuild::start(&pass).await?,
                OneShot::DiscardRebuild => flag = crate::rebuild::discard(&pass).await?,
            }
            pass.report.duration = started.elapsed();
            pass.report.rate_budget = self.inner.marketo.rate_budget();
            pass.set_phase(Phase::Idle);
            Ok((pass.report, flag))
        }
        .await;
        self.release_unless_running().await;
        result
    }

    /// Runs [`sync_once`](Self::sync_once), then an incremental pass every `poll_interval`, until
    /// `cancel` fires (then returns `Ok(())`). A failed pass is logged, reported as a
    /// [`SyncEvent::Backoff`] and retried at the next interval; configuration and checkpoint
    /// errors, and credentials a connector could not renew (an operator must reconnect), end
    /// the loop with the error.
    ///
    /// Leader election: while another process holds the leader lease, this loop pulls nothing
    /// and tries to take the lease every `leader_poll`; once leader, it renews the lease during
    /// passes and between them (every `leader_lease_ttl / 3`), and goes back to polling when it
    /// loses it ([`SyncEvent::LeaderAcquired`] / [`SyncEvent::LeaderLost`]). It releases the
    /// lease when it returns, so another process takes over at once after a clean shutdown.
    ///
    /// This is the only place the engine waits between passes; it spawns no tasks itself (the
    /// host decides where `run` runs).
    pub async fn run(&self, cancel: CancellationToken) -> Result<()> {
        self.inner.run_loops.fetch_add(1, Ordering::SeqCst);
        let result = self.run_loop(&cancel).await;
        if self.inner.run_loops.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.release_lead().await;
        }
        result
    }

    async fn run_loop(&self, cancel: &CancellationToken) -> Result<()> {
        let settings = &self.inner.settings;
        loop {
            let pass = {
                let _guard = self.inner.run_lock.lock().await;
                self.leading_pass(cancel, false).await
            };
            let wait = match pass {
                Ok(_) => settings.poll_interval,
                Err(Error::Cancelled) => return Ok(()),
                Err(Error::NotLeader { .. }) => settings.leader_poll,
                // A store bound to another Marketo instance will not change its mind.
                Err(
                    e @ (Error::Config { .. }
                    | Error::Checkpoint { .. }
                    | Error::Port(salesync_core::Error::Unauthenticated { .. })
                    | Error::Port(salesync_core::Error::Conflict { what: "store instance", .. })),
                ) => return Err(e),
                // A daily quota comes back at its reset, not at the next poll: asking earlier
                // only spends calls that are refused (or, on Salesforce, counted).
                Err(e @ Error::Port(salesync_core::Error::QuotaExhausted { resets_at, .. })) => {
                    let delay = quota_wait(resets_at, settings.clock.now(), settings.poll_interval);
                    tracing::warn!(error = %e, wait_secs = delay.as_secs(), "daily API quota exhausted; the people sync waits for its reset");
                    self.inner.emit(SyncEvent::Backoff { reason: format!("pass stopped: {e}"), delay });
                    delay
                }
                Err(e) => {
                    self.inner.emit(SyncEvent::Backoff {
                        reason: format!("pass failed: {e}"),
                        delay: settings.poll_interval,
                    });
                    settings.poll_interval
                }
            };
            if self.idle(cancel, wait).await {
                return Ok(());
            }
        }
    }

    /// Waits `total` between passes, renewing a held lease every third of its TTL; true when
    /// cancelled. Returns early when the lease is lost, so the loop falls back to polling for it.
    async fn idle(&self, cancel: &CancellationToken, total: Duration) -> bool {
        let inner = &*self.inner;
        let deadline = tokio::time::Instant::now() + total;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let held = inner.holds_lead();
            let step = if held { left.min(inner.renew_every()) } else { left };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return true,
                _ = tokio::time::sleep(step) => {}
            }
            if held && step < left {
                match inner.keep_lead(true).await {
                    Ok(()) => {}
                    Err(Error::NotLeader { .. }) => return false,
                    Err(e) => tracing::warn!(error = %e, "renewing the leader lease failed; retrying"),
                }
            }
        }
    }
}

/// How long the run loop waits after a quota error: until the reset Marketo/Salesforce named
/// (plus a minute of slack for clock skew), at least one poll interval; one hour when no reset
/// time is known; never more than a day.
fn quota_wait(resets_at: Option<DateTime<Utc>>, now: DateTime<Utc>, poll: Duration) -> Duration {
    const SLACK: Duration = Duration::from_secs(60);
    const UNKNOWN: Duration = Duration::from_secs(3600);
    const MAX: Duration = Duration::from_secs(24 * 3600);
    let until_reset = match resets_at {
        Some(at) => (at - now).to_std().unwrap_or(Duration::ZERO) + SLACK,
        None => UNKNOWN,
    };
    until_reset.clamp(poll, MAX.max(poll))
}

impl Inner {
    pub fn emit(&self, event: SyncEvent) {
        // No subscribers is fine; a full channel drops the oldest event for laggards.
        let _ = self.events.send(event);
    }

    pub fn not_leader(&self) -> Error {
        Error::NotLeader { lease: MARKETO_PULL_LEASE, holder: self.settings.worker_id.clone() }
    }

    fn holds_lead(&self) -> bool {
        lock(&self.lease).is_some()
    }

    /// How often a held lease is renewed: a third of its TTL.
    pub fn renew_every(&self) -> Duration {
        self.settings.leader_lease_ttl / 3
    }

    /// Takes or renews the leader lease; true while held. Announces a change of leadership.
    pub async fn try_lead(&self) -> Result<bool> {
        let now = self.now();
        let holder = &self.settings.worker_id;
        let held = self.store.try_lease(MARKETO_PULL_LEASE, holder, self.settings.leader_lease_ttl, now).await?;
        let was = std::mem::replace(&mut *lock(&self.lease), held.then_some(now)).is_some();
        match (was, held) {
            (false, true) => {
                tracing::info!(%holder, ttl = ?self.settings.leader_lease_ttl, "leader lease acquired: pulling from Marketo");
                self.emit(SyncEvent::LeaderAcquired { holder: holder.clone() });
            }
            (true, false) => self.announce_lost("another process took the lease"),
            _ => {}
        }
        Ok(held)
    }

    fn announce_lost(&self, reason: &str) {
        let holder = &self.settings.worker_id;
        tracing::warn!(%holder, reason, "leader lease lost: no longer pulling from Marketo");
        self.emit(SyncEvent::LeaderLost { holder: holder.clone(), reason: reason.to_string() });
    }

    /// Checks that the leader lease is still held with at least two thirds of its TTL left,
    /// renewing it once a third has passed (always when `force`). Fails with
    /// [`Error::NotLeader`] when it is not held, lapsed before renewal, or was taken.
    pub async fn keep_lead(&self, force: bool) -> Result<()> {
        let due = self.check_lead()?;
        if (force || due) && !self.try_lead().await? {
            return Err(self.not_leader());
        }
        Ok(())
    }

    /// The lease check of [`keep_lead`](Self::keep_lead) without the renewal, which touches
    /// no store: for work that may be dropped midway (a read ahead), where a store call must
    /// not be cut off. True when a renewal is due.
    pub fn check_lead(&self) -> Result<bool> {
        let Some(renewed) = *lock(&self.lease) else { return Err(self.not_leader()) };
        let ttl = self.settings.leader_lease_ttl;
        // A clock that went back since the renewal cannot tell how long ago it was: renew now
        // (the store then holds an expiry in the clock's new terms).
        let (elapsed, went_back) = match (self.now() - renewed).to_std() {
            Ok(d) => (d, false),
            Err(_) => (Duration::ZERO, true),
        };
        if elapsed >= ttl {
            // Another process may have taken it and released it since: whatever this pass
            // holds in memory may be stale, so it stops even if the lease is free again.
            if lock(&self.lease).take().is_some() {
                self.announce_lost("the lease lapsed before it was renewed");
            }
            return Err(self.not_leader());
        }
        Ok(went_back || elapsed >= self.renew_every())
    }

    /// Releases the leader lease if held (a failure is logged: the lease then expires).
    pub async fn release_lead(&self) {
        if lock(&self.lease).take().is_none() {
            return;
        }
        let holder = &self.settings.worker_id;
        if let Err(e) = self.store.release_lease(MARKETO_PULL_LEASE, holder).await {
            tracing::warn!(error = %e, %holder, "releasing the leader lease failed; it expires after its TTL");
        }
        tracing::info!(%holder, "leader lease released");
        self.emit(SyncEvent::LeaderLost { holder: holder.clone(), reason: "released".into() });
    }
}

/// Decisions of one page, keyed by Marketo id (a later record of the same id replaces an
/// earlier one, judged against the store's state before the page).
#[derive(Debug)]
pub(crate) struct PageBuilder {
    current: HashMap<i64, Person>,
    entries: Vec<(Decision, bool)>,
    slot: HashMap<i64, usize>,
    errors: Vec<RecordError>,
    now: DateTime<Utc>,
}

impl PageBuilder {
    pub fn new(current: Vec<Person>, now: DateTime<Utc>) -> Self {
        Self {
            current: current.into_iter().map(|p| (p.marketo_id, p)).collect(),
            entries: Vec::new(),
            slot: HashMap::new(),
            errors: Vec::new(),
            now,
        }
    }

    pub fn push(&mut self, incoming: Incoming) {
        let unqualified = matches!(incoming, Incoming::Lead(Qualification::Unqualified { .. }));
        let id = incoming.marketo_id();
        let d = decide(self.current.get(&id), incoming, self.now);
        self.set(d, unqualified);
    }

    pub fn push_decision(&mut self, d: Decision) {
        self.set(d, false);
    }

    fn set(&mut self, d: Decision, unqualified: bool) {
        let id = d.marketo_id();
        match self.slot.get(&id) {
            Some(&i) => self.entries[i] = (d, unqualified),
            None => {
                self.slot.insert(id, self.entries.len());
                self.entries.push((d, unqualified));
            }
        }
    }

    pub fn error(&mut self, e: RecordError) {
        self.errors.push(e);
    }

    /// The decisions so far, to amend before the page is committed.
    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut (Decision, bool)> {
        self.entries.iter_mut()
    }

    /// The people to insert or update whose opportunity link is unresolved.
    pub fn unresolved(&self) -> Vec<Person> {
        self.entries
            .iter()
            .filter_map(|(d, _)| match d {
                Decision::Insert { person } | Decision::Update { person, .. }
                    if person.salesforce_opportunity.needs_lookup() =>
                {
                    Some(person.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Sets the opportunity of every inserted or updated person whose link is unresolved, where
    /// `resolve` knows it, so the row is written once, complete. An update's changed fields are
    /// compared again with the store's row: one left without a change becomes unchanged.
    pub fn resolve_opportunities(&mut self, resolve: impl Fn(&Person) -> Option<Option<SalesforceId>>) {
        for (d, _) in self.entries.iter_mut() {
            match d {
                Decision::Insert { person } if person.salesforce_opportunity.needs_lookup() => {
                    if let Some(opp) = resolve(person) {
                        person.salesforce_opportunity = salesync_core::person::OpportunityRef::Salesforce(opp);
                    }
                }
                Decision::Update { person, changed } if person.salesforce_opportunity.needs_lookup() => {
                    let Some(opp) = resolve(person) else { continue };
                    person.salesforce_opportunity = salesync_core::person::OpportunityRef::Salesforce(opp);
                    match self.current.get(&person.marketo_id) {
                        Some(cur) => {
                            *changed = salesync_core::mirror::changed_fields(cur, person);
                            if changed.is_empty() {
                                *d = Decision::Unchanged { marketo_id: cur.marketo_id };
                            }
                        }
                        None if !changed.contains(&salesync_core::mapping::LeadField::SalesforceOpportunityId) => {
                            changed.push(salesync_core::mapping::LeadField::SalesforceOpportunityId)
                        }
                        None => {}
                    }
                }
                _ => {}
            }
        }
    }
}

/// The repairs [`SyncEngine`] runs outside its passes.
#[derive(Debug, Clone, Copy)]
enum OneShot {
    /// Fill every unresolved opportunity.
    FillUnresolved,
    /// Put one person right.
    Resync(i64),
    /// Start a rebuild unless one is in progress.
    StartRebuild,
    /// Drop a rebuild in progress.
    DiscardRebuild,
}

/// What kind of page is applied (for counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyKind {
    Sync,
    OpportunityFill,
}

/// Which copy of the mirror a pass reads and writes: the live one hosts read, or the shadow a
/// rebuild fills (see the `rebuild` module). Every stage goes through the pass's accessors, so
/// the same stages build either.
#[derive(Clone)]
pub(crate) enum Mirror {
    Live,
    Shadow(Arc<dyn ShadowStore>),
}

/// The state of one pass and what every stage of it shares: counted, retried port calls, page
/// writes with their checkpoint, events. The stages wrap it, each in its own module:
/// [`InitialSync`], [`Incremental`] and [`OpportunityFill`](crate::opportunity::OpportunityFill).
pub(crate) struct Pass<'a> {
    pub eng: &'a Inner,
    pub cancel: &'a CancellationToken,
    pub report: SyncReport,
    pub phase: Phase,
    /// During an initial sync: the opportunity fill deferred off the pull's path.
    pub deferral: Option<crate::opportunity::Deferral>,
    /// The Marketo share last announced.
    budget_seen: Option<RateBudget>,
    /// While a reconciling resync runs: what its pages write is drift (see [`DriftCounts`]).
    ///
    /// [`DriftCounts`]: crate::report::DriftCounts
    pub counting_drift: bool,
    /// The copy of the mirror this pass builds.
    pub mirror: Mirror,
    /// A failing rebuild slice fails the pass (a foreground rebuild) instead of a warning.
    pub strict_rebuild: bool,
    /// Whether this pass renews the leader lease (a store write) when due. Passes that read
    /// ahead and may be dropped midway only check it: their owner renews it while it waits.
    pub renews_lease: bool,
    /// A rebuild slice's end: past it, the pass stops with `Cancelled` after the page it is
    /// writing, or instead of waiting (so every slice makes progress, and none holds the live
    /// streams up for long).
    pub deadline: Option<tokio::time::Instant>,
}

impl<'a> Pass<'a> {
    /// A pass over the live mirror.
    pub fn new(eng: &'a Inner, cancel: &'a CancellationToken) -> Self {
        Self::on(eng, cancel, Mirror::Live)
    }

    /// A pass over the given copy of the mirror.
    pub fn on(eng: &'a Inner, cancel: &'a CancellationToken, mirror: Mirror) -> Self {
        Self {
            eng,
            cancel,
            report: SyncReport::default(),
            phase: Phase::Idle,
            deferral: None,
            budget_seen: None,
            counting_drift: false,
            mirror,
            strict_rebuild: false,
            renews_lease: true,
            deadline: None,
        }
    }

    /// A pass beside this one (same engine, cancellation and mirror copy), for work that runs
    /// concurrently with it; its report is [`absorb`](Self::absorb)ed afterwards.
    pub fn helper(&self) -> Pass<'a> {
        Self::on(self.eng, self.cancel, self.mirror.clone())
    }

    /// Whether this pass builds a rebuild's shadow copy (its pages publish no mirror change).
    pub fn is_shadow(&self) -> bool {
        matches!(self.mirror, Mirror::Shadow(_))
    }

    /// People of this pass's mirror copy by Marketo ids.
    pub async fn people_by_ids(&self, ids: &[i64]) -> Result<Vec<Person>> {
        Ok(match &self.mirror {
            Mirror::Live => self.eng.store.people_by_ids(ids).await?,
            Mirror::Shadow(s) => s.shadow_people_by_ids(ids).await?,
        })
    }

    /// A page of this pass's mirror copy, by Marketo id after `after`.
    pub async fn list_people(&self, after: Option<i64>, limit: u32) -> Result<Vec<Person>> {
        Ok(match &self.mirror {
            Mirror::Live => self.eng.store.list_people(after, limit).await?,
            Mirror::Shadow(s) => s.list_shadow_people(after, limit).await?,
        })
    }

    /// People of this pass's mirror copy with the Salesforce lead or contact id `id`.
    pub async fn people_by_salesforce_id(&self, id: &SalesforceId) -> Result<Vec<Person>> {
        Ok(match &self.mirror {
            Mirror::Live => self.eng.store.people_by_salesforce_id(id).await?,
            Mirror::Shadow(s) => s.shadow_people_by_salesforce_id(id).await?,
        })
    }

    /// A checkpoint of this pass's mirror copy.
    pub async fn checkpoint(&self, stream: StreamId) -> Result<Option<Checkpoint>> {
        Ok(match &self.mirror {
            Mirror::Live => self.eng.store.checkpoint(stream).await?,
            Mirror::Shadow(s) => s.shadow_checkpoint(stream).await?,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.eng.now()
    }

    pub fn set_phase(&mut self, phase: Phase) {
        // A shadow pass is all one stage to the host: the rebuild.
        let phase = if self.is_shadow() { Phase::Rebuild } else { phase };
        if self.phase != phase {
            self.phase = phase;
            self.eng.emit(SyncEvent::PhaseChanged { phase });
        }
    }

    /// Takes in what a helper pass beside this one spent and noticed (its calls and warnings).
    pub fn absorb(&mut self, other: SyncReport) {
        self.report.api_calls.marketo += other.api_calls.marketo;
        self.report.api_calls.salesforce += other.api_calls.salesforce;
        self.report.warnings.extend(other.warnings);
    }

    /// Fails with `Cancelled` when the pass was cancelled (checked between pages).
    pub fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }

    /// Fails with `Cancelled` once a rebuild slice's deadline has passed (checked after each
    /// page and before each wait).
    fn check_deadline(&self) -> Result<()> {
        match self.deadline {
            Some(end) if tokio::time::Instant::now() >= end => Err(Error::Cancelled),
            _ => Ok(()),
        }
    }

    /// Checks the leader lease, renewing it when due unless this pass only checks it (see
    /// [`renews_lease`](Self::renews_lease)).
    pub async fn keep_lead(&self) -> Result<()> {
        if self.renews_lease { self.eng.keep_lead(false).await } else { self.eng.check_lead().map(|_| ()) }
    }

    /// Sleeps, waking early with `Cancelled`; renews the leader lease while it waits (failing
    /// with `NotLeader` when it is lost).
    pub async fn sleep(&self, delay: Duration) -> Result<()> {
        self.check_deadline()?;
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let step = left.min(self.eng.renew_every());
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                _ = tokio::time::sleep(step) => {}
            }
            self.keep_lead().await?;
        }
    }

    /// Waits out `delay`, announcing it as a backoff.
    pub async fn backoff(&self, reason: String, delay: Duration) -> Result<()> {
        tracing::debug!(%reason, ?delay, "backing off");
        self.eng.emit(SyncEvent::Backoff { reason, delay });
        self.sleep(delay).await
    }

    /// A Marketo call: counted, cancellable, transient errors retried with backoff.
    pub async fn marketo<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = salesync_core::Result<T>>,
    {
        self.call(Service::Marketo, what, f).await
    }

    /// A Salesforce call: counted, cancellable, transient errors retried with backoff.
    pub async fn salesforce<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = salesync_core::Result<T>>,
    {
        self.call(Service::Salesforce, what, f).await
    }

    /// A Salesforce call that may run longer than the leader lease (an org-wide read): the lease
    /// is renewed while it runs, and the call stops with `NotLeader` if it is lost.
    pub async fn salesforce_long<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = salesync_core::Result<T>>,
    {
        let eng = self.eng;
        let renews = self.renews_lease;
        let call = self.salesforce(what, f);
        tokio::pin!(call);
        loop {
            tokio::select! {
                r = &mut call => return r,
                // Renewed here, in the branch, never in a future the call's end would drop.
                _ = tokio::time::sleep(eng.renew_every()) => {
                    if renews {
                        eng.keep_lead(false).await?;
                    } else {
                        eng.check_lead()?;
                    }
                }
            }
        }
    }

    /// A Marketo call like [`marketo`](Self::marketo), except that a rate limit (e.g. bulk 1029
    /// "too many jobs in queue") is returned at once instead of retried.
    pub async fn marketo_no_wait<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = salesync_core::Result<T>>,
    {
        self.call_with(Service::Marketo, what, f, false).await
    }

    async fn call<T, F, Fut>(&mut self, service: Service, what: &str, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = salesync_core::Result<T>>,
    {
        self.call_with(service, what, f, true).await
    }

    async fn call_with<T, F, Fut>(&mut self, service: Service, what: &str, mut f: F, wait_rate: bool) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = salesync_core::Result<T>>,
    {
        let retry = self.eng.settings.retry;
        let mut attempt: u32 = 0;
        loop {
            self.check_cancel()?;
            self.keep_lead().await?;
            attempt += 1;
            match service {
                Service::Salesforce => self.report.api_calls.salesforce += 1,
                _ => self.report.api_calls.marketo += 1,
            }
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(Error::Cancelled),
                r = f() => r,
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.is_retryable()
                        && !e.retries_spent()
                        && attempt < retry.max_attempts
                        && (wait_rate || !matches!(e, salesync_core::Error::RateLimited { .. })) =>
                {
                    let delay = match &e {
                        salesync_core::Error::RateLimited { retry_after: Some(d), .. } => *d,
                        _ => retry.base_delay.saturating_mul(1u32 << (attempt - 1).min(16)),
                    }
                    .min(retry.max_delay);
                    self.backoff(format!("{service} {what}: {e}"), delay).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The Marketo fields to request (the mapping table filtered by the instance's describe),
    /// cached for the engine's lifetime.
    pub async fn fields(&mut self) -> Result<Vec<String>> {
        if let Some(f) = lock(&self.eng.fields).clone() {
            return Ok(f);
        }
        let m = self.eng.marketo.as_ref();
        let schema = self.marketo("describe", || m.lead_schema()).await?;
        let fields: Vec<String> = requested_fields(|n| schema.has(n)).into_iter().map(String::from).collect();
        *lock(&self.eng.fields) = Some(fields.clone());
        Ok(fields)
    }

    /// A page builder holding the store's current records of `ids`.
    pub async fn page_for(&self, ids: &[i64]) -> Result<PageBuilder> {
        let current = if ids.is_empty() { Vec::new() } else { self.people_by_ids(ids).await? };
        Ok(PageBuilder::new(current, self.now()))
    }

    /// Applies a page with its checkpoint in one store call, then reports, notifies and fills
    /// opportunities (see the `opportunity` module). Nothing is counted or published when the
    /// store fails.
    pub async fn apply(&mut self, mut page: PageBuilder, checkpoint: Option<Checkpoint>) -> Result<ApplyCounts> {
        if !self.eng.settings.opportunity_lookup {
            return Ok(self.commit(page, checkpoint, ApplyKind::Sync).await?.0);
        }
        // Rows are written once, with their opportunity: joined from the org's links during an
        // initial sync that read them, else (incremental pages, where it costs no speed) looked
        // up before the write. What stays unresolved is filled after it.
        let mut tried = std::collections::HashSet::new();
        match (&self.deferral, self.deferral.as_ref().and_then(|d| d.links())) {
            (_, Some(links)) => page.join_opportunities(&links),
            (None, None) => tried = OpportunityFill::new(self).resolve_before_write(&mut page).await?,
            (Some(_), None) => {}
        }
        let (counts, mut written) = self.commit(page, checkpoint, ApplyKind::Sync).await?;
        written.retain(|p| !tried.contains(&p.marketo_id));
        OpportunityFill::new(self).after_write(written).await?;
        Ok(counts)
    }

    /// Applies a page and its checkpoint; returns the store's counts and the people written.
    ///
    /// Only while the leader lease is held: it is checked (and renewed when due) first, so the
    /// write starts with at least two thirds of the TTL left (see [`SyncEngine`]).
    pub async fn commit(
        &mut self,
        page: PageBuilder,
        checkpoint: Option<Checkpoint>,
        kind: ApplyKind,
    ) -> Result<(ApplyCounts, Vec<Person>)> {
        let PageBuilder { entries, errors, now, .. } = page;
        // Unchanged and Skip write nothing: they never reach the store.
        let decisions: Vec<Decision> = entries
            .iter()
            .filter(|(d, _)| !matches!(d, Decision::Unchanged { .. } | Decision::Skip { .. }))
            .map(|(d, _)| d.clone())
            .collect();
        self.eng.keep_lead(false).await?;
        let page = MirrorPage { decisions, checkpoint, at: now };
        let counts = match &self.mirror {
            Mirror::Live => self.eng.store.apply_page(page).await?,
            Mirror::Shadow(s) => s.apply_shadow_page(page).await?,
        };
        self.report.pages += 1;
        let mut changes = Vec::new();
        let mut written = Vec::new();
        for (d, unqualified) in entries {
            if self.counting_drift {
                let drift = &mut self.report.drift;
                match &d {
                    Decision::Insert { .. } => drift.missing += 1,
                    Decision::Remove { .. } => drift.extra += 1,
                    Decision::Update { changed, .. } => {
                        for f in changed {
                            *drift.stale.entry(f.rest_name().to_string()).or_default() += 1;
                        }
                    }
                    Decision::Unchanged { .. } | Decision::Skip { .. } => {}
                }
            }
            match d {
                Decision::Insert { person } => {
                    self.report.inserted += 1;
                    changes.push(MirrorChange::Inserted { id: person.marketo_id });
                    written.push(person);
                }
                Decision::Update { person, changed } => {
                    match kind {
                        ApplyKind::Sync => self.report.updated += 1,
                        ApplyKind::OpportunityFill => self.report.opportunities_resolved += 1,
                    }
                    changes.push(MirrorChange::Updated { id: person.marketo_id, changed });
                    written.push(person);
                }
                Decision::Unchanged { .. } => self.report.unchanged += 1,
                Decision::Remove { marketo_id, reason } => {
                    self.report.removed.add(&reason);
                    changes.push(MirrorChange::Removed { id: marketo_id, reason });
                }
                Decision::Skip { .. } if unqualified => self.report.skipped_unqualified += 1,
                Decision::Skip { .. } => self.report.skipped_not_in_mirror += 1,
            }
        }
        for error in errors {
            // One pass can read the same bad record twice (e.g. the initial sweep, then its New
            // Lead activity): report each record's problem once per pass.
            if self.report.record_errors.contains(&error) {
                continue;
            }
            tracing::warn!(%error, "Marketo record skipped");
            self.eng.emit(SyncEvent::RecordFailed { error: error.clone() });
            self.report.record_errors.push(error);
        }
        let phase = if kind == ApplyKind::OpportunityFill { Phase::Opportunities } else { self.phase };
        self.eng.emit(SyncEvent::PageApplied { counts, phase });
        if let Some(budget) = self.eng.marketo.rate_budget() {
            let shares = |b: &RateBudget| (b.calls_per_window, b.in_flight_limit);
            if self.budget_seen.as_ref().map(shares) != Some(shares(&budget)) {
                self.budget_seen = Some(budget);
                self.eng.emit(SyncEvent::RateBudget { budget });
            }
        }
        // Hosts never see the shadow: its difference is published when it is promoted.
        if !self.is_shadow() {
            for c in changes {
                // No subscriber is fine; laggards see `Lagged`.
                let _ = self.eng.changes.send(c);
            }
        }
        self.check_deadline()?;
        Ok((counts, written))
    }

    /// Reads the initial-sync checkpoint.
    pub async fn load_initial(&self) -> Result<Option<InitialState>> {
        match self.checkpoint(StreamId::InitialSync).await? {
            Some(cp) => Ok(Some(checkpoint::decode(&cp)?)),
            None => Ok(None),
        }
    }

    /// Writes a checkpoint on its own (positions that carry no data, e.g. a new export job id).
    pub async fn put<T: serde::Serialize>(&self, stream: StreamId, pos: &T) -> Result<()> {
        let cp = checkpoint::encode(stream, pos, self.now())?;
        self.eng.keep_lead(false).await?;
        match &self.mirror {
            Mirror::Live => self.eng.store.put_checkpoint(cp).await?,
            Mirror::Shadow(s) => s.put_shadow_checkpoint(cp).await?,
        }
        Ok(())
    }

    /// The whole pass: the stages on the live mirror, then a slice of a rebuild in progress.
    async fn run(&mut self) -> Result<()> {
        self.run_stages().await?;
        // The live mirror is current: a rebuild in progress gets the rest of the pass.
        match crate::rebuild::step(self).await {
            Ok(()) => Ok(()),
            Err(e @ (Error::Cancelled | Error::NotLeader { .. })) => Err(e),
            Err(e) if self.strict_rebuild => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "rebuild paused until the next pass");
                self.report.warnings.push(format!("rebuild paused: {e}"));
                Ok(())
            }
        }
    }

    /// The stages of a pass on this pass's copy of the mirror: the initial sync (or a
    /// reconcile) when due, the Marketo streams, the Salesforce opportunity stream.
    pub async fn run_stages(&mut self) -> Result<()> {
        let state = match self.load_initial().await? {
            Some(s) if s.status == InitialStatus::Done && self.reconcile_due(&s) && self.reconcile_fits(&s).await? => {
                tracing::info!(last_full_read = %s.started_at, "drift repair due: reconciling resync");
                self.reconcile().await?
            }
            Some(s) if s.status == InitialStatus::Done => s,
            Some(s) => InitialSync::new(self).run_initial(s, true).await?,
            None => {
                let started_at = self.now();
                let s = match self.eng.settings.initial_mode {
                    InitialMode::Bulk => InitialState::new(InitialPath::Bulk, started_at, false),
                    InitialMode::Rest => InitialState::new(InitialPath::Rest, started_at, false),
                    InitialMode::Auto => InitialSync::new(self).choose_initial_path(started_at).await?,
                };
                InitialSync::new(self).run_initial(s, false).await?
            }
        };
        let mut state = state;
        // A rebuild slice bounds the initial sync only: once the shadow's initial sync is done,
        // its streams run to their end in the same slice, so a caught-up shadow pass completes
        // (and is promoted) however short the slice.
        self.deadline = None;
        if Incremental::new(self).run(&state).await? == crate::incremental::Flow::Reconcile {
            state = self.reconcile().await?;
            if Incremental::new(self).run(&state).await? == crate::incremental::Flow::Reconcile {
                self.report.warnings.push("incremental position still too old after a reconciling resync".into());
            }
        }
        let settings = &self.eng.settings;
        if settings.opportunity_lookup && settings.streams.salesforce_opportunities {
            // Salesforce trouble pauses this stream only: the Marketo streams above are done.
            match OpportunityFill::new(self).follow_salesforce(state.started_at).await {
                Ok(()) => {}
                Err(e @ (Error::Cancelled | Error::NotLeader { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "Salesforce opportunity stream paused until the next pass");
                    self.report.warnings.push(format!("Salesforce opportunity stream paused: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Whether the scheduled drift repair is due: the last full read started
    /// `reconcile_every` ago or longer.
    fn reconcile_due(&self, state: &InitialState) -> bool {
        let Some(every) = self.eng.settings.reconcile_every else { return false };
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        self.now() - state.started_at >= every
    }

    /// Whether a due drift repair fits the quota guard
    /// ([`EngineSettings::reconcile_max_daily_usage`]): Marketo's calls today plus the sweep's
    /// estimate (one call per `page_size` ids up to the highest id seen, the empty chunks that end
    /// it, a few probes). When it does not, the pass warns and the repair waits for a later one.
    /// An instance that cannot tell its usage is not held back.
    async fn reconcile_fits(&mut self, state: &InitialState) -> Result<bool> {
        let settings = &self.eng.settings;
        if settings.reconcile_max_daily_usage >= 1.0 {
            return Ok(true);
        }
        let m = self.eng.marketo.as_ref();
        let Some(used) = self.marketo("usage today", || m.usage_today()).await? else { return Ok(true) };
        let highest = match state.rest.highest_seen.max(state.rest.probed_max.unwrap_or(0)) {
            0 => i64::try_from(self.eng.store.count_people().await?).unwrap_or(i64::MAX),
            n => n,
        };
        let estimate = u64::try_from(highest).unwrap_or(0) / u64::from(settings.page_size.max(1))
            + u64::from(settings.rest_empty_chunks_to_stop)
            + 10;
        let limit = (settings.marketo_daily_quota as f64 * settings.reconcile_max_daily_usage) as u64;
        if used + estimate <= limit {
            return Ok(true);
        }
        let why = format!(
            "drift repair deferred: Marketo calls today ({used}) plus its estimated {estimate} would pass {limit} ({:.0} % of the {}-call daily quota); a later pass tries again",
            settings.reconcile_max_daily_usage * 100.0,
            settings.marketo_daily_quota
        );
        tracing::warn!("{why}");
        self.report.warnings.push(why);
        Ok(false)
    }

    /// Starts a reconciling resync and runs it.
    async fn reconcile(&mut self) -> Result<InitialState> {
        let state = InitialState::new(InitialPath::Rest, self.now(), true);
        self.put(StreamId::InitialSync, &state).await?;
        InitialSync::new(self).run_initial(state, false).await
    }
}

impl InitialState {
    pub(crate) fn new(path: InitialPath, started_at: DateTime<Utc>, reconcile: bool) -> Self {
        Self {
            status: InitialStatus::Running,
            started_at,
            path,
            reconcile,
            rest: Default::default(),
            bulk: Default::default(),
            bulk_quota_action: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod quota_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn quota_waits_until_the_named_reset_within_bounds() {
        let now = Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap();
        let poll = Duration::from_secs(30);
        let at = |h: i64| Some(now + chrono::Duration::hours(h));
        assert_eq!(quota_wait(at(3), now, poll), Duration::from_secs(3 * 3600 + 60));
        assert_eq!(quota_wait(None, now, poll), Duration::from_secs(3600));
        // A reset already past (clock skew) still waits one poll interval, never zero.
        assert_eq!(quota_wait(at(-1), now, poll), Duration::from_secs(60));
        assert_eq!(quota_wait(at(-1), now, Duration::from_secs(600)), Duration::from_secs(600));
        assert_eq!(quota_wait(at(72), now, poll), Duration::from_secs(24 * 3600));
    }
}
